/* main.c — the circc command line: parses the arguments into driver options,
 * hands them to the driver (driver.c runs the pipeline), and maps the
 * diagnostics to exit codes (0 ok, 1 circuit error, 2 usage, 3 I/O, 4 C
 * compiler or no mpicc for --mpi, 70 internal). */
#include <getopt.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "driver.h"

static const char USAGE[] =
    "usage: circc [options] INPUT.circ -o OUTPUT     compile a circuit to a standalone program\n"
    "       circc eval [options] INPUT.circ           evaluate it with the reference evaluator\n"
    "       circc eval --all [options] INPUT.circ     exact expectations of its Cumulants of DiscreteVars\n"
    "       circc store [--tensors DIR] FILE.npy...  add tensors to the tensor store, print their hashes\n"
    "       circc --info-model FILE.circ              what a rust_circuit model file (`# info:` line) holds\n"
    "\n"
    "Reads circuits in rust_circuit's text format, loads their tensors, substitutes\n"
    "modules, checks every shape, and compiles them to a C program with every shape\n"
    "baked in (OpenMP-parallel, weights linked in). A circuit with DiscreteVars and\n"
    "Cumulants becomes an expectation program (./prog --samples N, --all, --info).\n"
    "Without -o it only checks (runs the pipeline to rv, or as far as --report or the\n"
    "latest --dump stage needs).\n"
    "\n"
    "options:\n"
    "  -D NAME=N              bind a symbolic size: NAME is Ks (e.g. 1s) or SEQ, HIDDEN, ...; a\n"
    "                         length beyond a position table the circuit's pos/positions input\n"
    "                         indexes is an error naming the table\n"
    "  --tensors DIR          tensor store root (default $TENSORS_CACHE_DIR,\n"
    "                         else ~/tensors_by_hash_cache)\n"
    "  --random-tensors       every Array is N(0,1) of its declared shape (rust_circuit's\n"
    "                         tensors_as_random); seeded, so runs are reproducible\n"
    "  --seed N               seed for random tensors (default 24301)\n"
    "  --allow-unused-inputs  do not require module arguments to occur in the spec\n"
    "  --dump STAGE[,STAGE]   print the IR after each STAGE (repeatable): load (the text), library\n"
    "                         (a model file's module library), parse, tensors, resolve, rv,\n"
    "                         simplify, plan (rust_circuit text), lower, fuse, schedule, memplan\n"
    "                         (the kernel graph), emit (the generated C)\n"
    "  --ops FILE.c           C implementations of GeneralFunctions circc does not know (Python-class\n"
    "                         specs, unknown names), marked with circc_op.h (repeatable; README:\n"
    "                         Custom functions); compiled into the program and run by circc eval\n"
    "  --verify-each          check the IR's invariants after every stage (an error is exit 70)\n"
    "  --color auto|always|never   colored diagnostics (default auto; NO_COLOR respected)\n"
    "  --info-model           print a model file's info, params (every option), layer count,\n"
    "                         sizes and the free symbols of t.bind_w with their meaning; a file\n"
    "                         whose first line is `# info:{json}` gets rust_circuit's module\n"
    "                         library (t.logits, final.ln.w.bias, ...) as reference circuits\n"
    "  --bind-tokens          with a model file and -D SEQ=N: bind t.bind_w to token ids as REMIX\n"
    "                         does (embeddings by gen_index, positions per pos_enc_type, a causal\n"
    "                         or all-ones mask): the only input is `tokens` [SEQ] int64, the\n"
    "                         only output `logits` [SEQ, VOCAB] (--lm: --top, --text, --generate)\n"
    "compile options:\n"
    "  -o PATH                output executable (directory with --emit c, library with --emit lib)\n"
    "  --emit exe|c|lib       an executable (default), a directory with model.c, the runtime,\n"
    "                         the weights blob and a Makefile, or a shared library PATH.so with\n"
    "                         its C header PATH.h (README \"From Python\": the C API, circc.py)\n"
    "  --output NAME          compile only the top-level circuit NAME (repeatable; a name no\n"
    "                         top-level circuit has is an error, exit 1, listing them)\n"
    "  --tap PATTERN          make every inner node PATTERN matches an extra output (repeatable):\n"
    "                         a node name, a name path (b0.call/a.attn_probs) or /REGEX/ over\n"
    "                         name paths; works with circc eval too\n"
    "  --patch PATTERN        let the program replace matching nodes at run time\n"
    "                         (./prog --patch PATH=@value.npy); without it they compute as usual\n"
    "  --sample-batch B       circuits with DiscreteVars (expectation programs): samples per run\n"
    "                         of the compiled batch circuits (default 32)\n"
    "  --stream NAME          leave the DiscreteVar values Array NAME out of the program: it reads\n"
    "                         the rows at run time (./prog --data NAME=@rows.npy), so a large\n"
    "                         dataset is neither needed at compile time nor linked in\n"
    "  --mpi                  expectation programs: build with mpicc ($MPICC) for mpirun/srun; the\n"
    "                         ranks share the samples and give the same bits as one process\n"
    "                         (needs Open MPI: Debian libopenmpi-dev, openmpi-bin; else exit 4)\n"
    "  --report               print the plan: simplifications, contraction paths, steps, arena size\n"
    "  --cc CMD               C compiler (default $CC, else gcc);  --cflags \"...\"  extra flags\n"
    "  -O0..-O3, -g           optimisation / debug info for the C compiler (default -O3)\n"
    "  --march native|portable   -march=native (default) or generic code\n"
    "  --precision fp32|bf16|int8   fp32 (default): every value fp32. bf16: weights that GEMMs\n"
    "                         read are stored as bf16 (half the bytes) and the GEMMs' activations\n"
    "                         rounded to bf16, as are the attention's Q, K, V and softmax weights\n"
    "                         for its two products; products accumulate in fp32, everything else\n"
    "                         stays fp32. They run on AMX tiles, else AVX-512 BF16, else plain C.\n"
    "                         int8: those weights stored as int8 with one fp16 scale per 32 along\n"
    "                         K (1.06 bytes a weight), activations and everything else fp32; for\n"
    "                         decode (GEMMs of 1-4 rows: AVX-512, else AVX2, else plain C).\n"
    "                         Both hold a float32 input that only decode GEMMs read as B (a\n"
    "                         key/value cache) as bf16; it stays float32 to the user (not with\n"
    "                         --emit lib, whose caller passes float32 buffers each call)\n"
    "  --save-temps           keep the generated sources (their directory is printed)\n"
    "  --vocab CHARS          character vocabulary (id i = CHARS[i], '.' ends a name): the\n"
    "                         program gets --sample N --seed S; the circuit needs an int64\n"
    "                         context input and a float32 output whose last dim is CHARS' length\n"
    "  --lm gpt2-bpe:DIR|chars:FILE.json   tokenizer of a language model (DIR: GPT-2's\n"
    "                         encoder.json and vocab.bpe; FILE.json: a character list, id =\n"
    "                         index), linked into the program: with a decode circuit\n"
    "                         (gpt2_import --decode) or --bind-tokens it gets --text,\n"
    "                         --generate, --top, ...; the logits' last dim must be the\n"
    "                         tokenizer's vocabulary size (or it padded to a multiple of 64 or 128)\n"
    "  -v, --verbose          each stage's time on stderr as it ends: `circc: STAGE SECONDS s`\n"
    "                         (cc: the C compiler's run, inside emit); without -v, a stage still\n"
    "                         running after 2 s is announced (`circc: STAGE ...`) and timed when\n"
    "                         stderr is a terminal\n"
    "  -h, --help             this help;  --version   print the version\n"
    "eval options:\n"
    "  --input NAME=@FILE.npy   value of the free symbol NAME (repeatable)\n"
    "  --output NAME[=@FILE.npy]  evaluate only the top-level circuit NAME (repeatable): write it to\n"
    "                           FILE.npy, or print it\n"
    "  --print                  print every output's values (also those written to files)\n"
    "  --all                    exact expectations: each Cumulant of DiscreteVars enumerates every\n"
    "                           combination of rows of the groups it uses, weighted by their\n"
    "                           probabilities (without --all a DiscreteVar is an error)\n"
    "  --patch NAME=@FILE.npy   use FILE's value for the node with name path NAME (repeatable)\n"
    "  --max-all N              refuse a Cumulant with more than N combinations (default 1000000)\n"
    "\n"
    "Options are read by getopt_long: --name=value is the same as --name value, -DNAME=N as\n"
    "-D NAME=N; long options are written in full; after --, every argument is a file.\n"
    "\n"
    "exit codes: 0 ok, 1 circuit error (parse, shape, missing tensor, unbound symbol, no such\n"
    "            --output circuit),\n"
    "            2 usage error, 3 I/O error, 4 the C compiler failed (or --mpi without mpicc),\n"
    "            70 internal error\n"
    "environment: TENSORS_CACHE_DIR, CC, MPICC, NO_COLOR, CIRCC_VERIFY_EACH (1: as --verify-each; the tests set it)\n";

typedef struct Options {
  bool eval, store, info_model;
  DriverOptions driver;
  const char *input;
  const char **files;   /* circc store */
  int nfiles;
  const char **outputs; /* --output NAME, or the NAMEs of eval's --output NAME=@FILE */
  const char **streams; /* --stream NAME */
  const char **taps, **patches; /* --tap PATTERN, --patch PATTERN */
  Binding *eval_patches;        /* eval's --patch NAME=@FILE */
  Binding *inputs, *eval_outputs;
} Options;

static void usage_error(Comp *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void usage_error(Comp *c, const char *fmt, ...) {
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  diag_error_class(c, DIAG_USAGE, NO_LOC, "%s (see circc --help)", msg);
}

/* NAME=@PATH (the @ is optional) */
static bool parse_binding(Comp *c, const char *flag, const char *arg, Binding *b) {
  const char *eq = strchr(arg, '=');
  if (!eq || eq == arg || !eq[eq[1] == '@' ? 2 : 1]) {
    usage_error(c, "%s expects NAME=@FILE.npy, found '%s'", flag, arg);
    return false;
  }
  b->name = arena_strndup(&c->arena, arg, (size_t)(eq - arg));
  b->path = eq[1] == '@' ? eq + 2 : eq + 1;
  return true;
}

/* --dump STAGE[,STAGE...] */
static bool parse_dump(Comp *c, const char *arg, unsigned *mask) {
  const char *p = arg;
  while (*p) {
    size_t len = strcspn(p, ",");
    char *name = arena_strndup(&c->arena, p, len);
    int s = stage_from_name(name);
    if (s < 0) {
      usage_error(c, "--dump expects stages among load, library, parse, tensors, resolve, rv, simplify, plan, lower, "
                     "fuse, schedule, memplan, emit; found '%s'", name);
      return false;
    }
    *mask |= 1u << s;
    p += len + (p[len] == ',');
  }
  return true;
}

/* The last stage --dump names, -1 if none. */
static int latest_dump(unsigned mask) {
  int last = -1;
  for (int s = 0; s < STAGE_COUNT; s++)
    if (mask & 1u << s) last = s;
  return last;
}

/* Long options without a short form: getopt_long returns these codes. */
enum {
  OPT_VERSION = 256, OPT_TENSORS, OPT_RANDOM_TENSORS, OPT_SEED, OPT_ALLOW_UNUSED, OPT_DUMP, OPT_INFO_MODEL,
  OPT_BIND_TOKENS, OPT_VERIFY_EACH, OPT_COLOR, OPT_OUTPUT, OPT_TAP, OPT_PATCH, OPT_STREAM, OPT_SAMPLE_BATCH,
  OPT_EMIT, OPT_VOCAB, OPT_LM, OPT_REPORT, OPT_CC, OPT_CFLAGS, OPT_MARCH, OPT_MPI, OPT_SAVE_TEMPS, OPT_INPUT,
  OPT_PRINT, OPT_ALL, OPT_MAX_ALL, OPT_OPS, OPT_PRECISION,
};
static const struct option LONG_OPTIONS[] = {
    {"help", no_argument, NULL, 'h'},
    {"version", no_argument, NULL, OPT_VERSION},
    {"verbose", no_argument, NULL, 'v'},
    {"tensors", required_argument, NULL, OPT_TENSORS},
    {"random-tensors", no_argument, NULL, OPT_RANDOM_TENSORS},
    {"seed", required_argument, NULL, OPT_SEED},
    {"allow-unused-inputs", no_argument, NULL, OPT_ALLOW_UNUSED},
    {"dump", required_argument, NULL, OPT_DUMP},
    {"info-model", no_argument, NULL, OPT_INFO_MODEL},
    {"bind-tokens", no_argument, NULL, OPT_BIND_TOKENS},
    {"verify-each", no_argument, NULL, OPT_VERIFY_EACH},
    {"color", required_argument, NULL, OPT_COLOR},
    {"output", required_argument, NULL, OPT_OUTPUT},
    {"tap", required_argument, NULL, OPT_TAP},
    {"patch", required_argument, NULL, OPT_PATCH},
    {"stream", required_argument, NULL, OPT_STREAM},
    {"sample-batch", required_argument, NULL, OPT_SAMPLE_BATCH},
    {"emit", required_argument, NULL, OPT_EMIT},
    {"vocab", required_argument, NULL, OPT_VOCAB},
    {"lm", required_argument, NULL, OPT_LM},
    {"report", no_argument, NULL, OPT_REPORT},
    {"cc", required_argument, NULL, OPT_CC},
    {"cflags", required_argument, NULL, OPT_CFLAGS},
    {"march", required_argument, NULL, OPT_MARCH},
    {"mpi", no_argument, NULL, OPT_MPI},
    {"save-temps", no_argument, NULL, OPT_SAVE_TEMPS},
    {"input", required_argument, NULL, OPT_INPUT},
    {"print", no_argument, NULL, OPT_PRINT},
    {"all", no_argument, NULL, OPT_ALL},
    {"max-all", required_argument, NULL, OPT_MAX_ALL},
    {"ops", required_argument, NULL, OPT_OPS},
    {"precision", required_argument, NULL, OPT_PRECISION},
    {NULL, 0, NULL, 0},
};
/* '-': arguments that are not options come back in order as code 1 (so the
 * input file may stand anywhere and argv is not reordered); ':': a missing
 * value is ':'. */
static const char SHORT_OPTIONS[] = "-:hvD:o:O:g";

/* The long option arg names exactly ("--name" or "--name=value"), NULL if none. */
static const struct option *long_option(const char *arg) {
  if (strncmp(arg, "--", 2) != 0) return NULL;
  size_t len = strcspn(arg + 2, "=");
  for (const struct option *lo = LONG_OPTIONS; lo->name; lo++)
    if (strlen(lo->name) == len && !strncmp(arg + 2, lo->name, len)) return lo;
  return NULL;
}

/* The long option getopt_long returns as code. */
static const struct option *long_option_of(int code) {
  for (const struct option *lo = LONG_OPTIONS; lo->name; lo++)
    if (lo->val == code) return lo;
  ICE("option code %d has no long option", code);
}

/* Options of one subcommand only (eval's --input, --print, --all, --max-all). */
static bool eval_only(int code) { return code == OPT_INPUT || code == OPT_PRINT || code == OPT_ALL || code == OPT_MAX_ALL; }

/* A positional argument: the input file (store: the files). */
static bool take_operand(Comp *c, Options *o, const char *a) {
  if (o->store) {
    o->files[o->nfiles++] = a;
  } else if (o->input) {
    usage_error(c, "more than one input file ('%s')", a);
    return false;
  } else {
    o->input = a;
  }
  return true;
}

/* One option's effect; false after a usage error. */
static bool take_option(Comp *c, Options *o, int code, const char *flag, const char *val, const char **color) {
  DriverOptions *d = &o->driver;
  BuildOptions *b = &d->build;
  char *end;
  switch (code) {
  case 'h': fputs(USAGE, stdout); exit(0);
  case OPT_VERSION: printf("circc %s\n", CIRCC_VERSION); exit(0);
  case 'v': d->verbose = true; return true;
  case 'D': {
    const char *eq = strchr(val, '=');
    long long v = eq ? strtoll(eq + 1, &end, 10) : 0;
    if (!eq || eq == val || !eq[1] || *end) {
      usage_error(c, "-D expects NAME=N, found '%s'", val);
      return false;
    }
    c->defines[c->ndefines++] = (SizeDefine){arena_strndup(&c->arena, val, (size_t)(eq - val)), v};
    return true;
  }
  case OPT_TENSORS: c->tensor_dir = val; return true;
  case OPT_RANDOM_TENSORS: c->tensors_as_random = true; return true;
  case OPT_SEED: c->rng_state = strtoull(val, NULL, 10); return true;
  case OPT_ALLOW_UNUSED: c->check_all_inputs_used = false; return true;
  case OPT_DUMP: return parse_dump(c, val, &d->dump);
  case OPT_INFO_MODEL: o->info_model = true; return true;
  case OPT_BIND_TOKENS: d->bind_tokens = true; return true;
  case OPT_OPS: {
    const char **files = ARENA_ARRAY(&c->arena, const char *, d->nops_files + 1);
    if (d->nops_files) memcpy(files, d->ops_files, sizeof *files * (size_t)d->nops_files);
    files[d->nops_files++] = val;
    d->ops_files = files;
    return true;
  }
  case OPT_VERIFY_EACH: d->verify_each = true; return true;
  case OPT_COLOR: *color = val; return true;
  case 'o': b->output = val; return true;
  case OPT_OUTPUT:
    if (!o->eval) {
      o->outputs[d->noutputs++] = val;
    } else if (!strchr(val, '=')) {   /* eval --output NAME: evaluate (and print) only NAME */
      o->outputs[d->noutputs++] = val;
    } else {
      if (!parse_binding(c, flag, val, &o->eval_outputs[d->neval_outputs])) return false;
      o->outputs[d->noutputs++] = o->eval_outputs[d->neval_outputs++].name;
    }
    return true;
  case OPT_TAP: o->taps[d->ntaps++] = val; return true;
  case OPT_PATCH:
    if (o->eval) return parse_binding(c, flag, val, &o->eval_patches[d->neval_patches++]);
    o->patches[d->npatches++] = val;
    return true;
  case OPT_STREAM: o->streams[c->nstreamed++] = val; return true;
  case OPT_SAMPLE_BATCH: {
    long v = strtol(val, &end, 10);
    if (*end || end == val || v < 1 || v > 1 << 20) {
      usage_error(c, "--sample-batch expects a whole number from 1 to 1048576, found '%s'", val);
      return false;
    }
    d->sample_batch = (int)v;
    return true;
  }
  case OPT_EMIT:
    if (strcmp(val, "exe") && strcmp(val, "c") && strcmp(val, "lib")) {
      usage_error(c, "--emit expects exe, c or lib, found '%s'", val);
      return false;
    }
    b->emit_c_only = !strcmp(val, "c");
    b->emit_lib = !strcmp(val, "lib");
    return true;
  case OPT_VOCAB: d->emit.vocab = val; return true;
  case OPT_LM: d->lm = val; return true;
  case OPT_REPORT: d->report = stdout; return true;
  case OPT_CC: b->cc = val; return true;
  case OPT_CFLAGS: b->cflags = b->cflags ? arena_printf(&c->arena, "%s %s", b->cflags, val) : val; return true;
  case 'O':
    if (strlen(val) != 1 || val[0] < '0' || val[0] > '3') {
      usage_error(c, "-O expects 0, 1, 2 or 3 (-O0 .. -O3), found '%s'", val);
      return false;
    }
    b->opt = arena_printf(&c->arena, "-O%s", val);
    return true;
  case 'g': b->cflags = b->cflags ? arena_printf(&c->arena, "%s -g", b->cflags) : "-g"; return true;
  case OPT_MARCH:
    if (strcmp(val, "native") && strcmp(val, "portable")) {
      usage_error(c, "--march expects native or portable, found '%s'", val);
      return false;
    }
    b->native = !strcmp(val, "native");
    return true;
  case OPT_PRECISION:
    if (strcmp(val, "fp32") && strcmp(val, "bf16") && strcmp(val, "int8")) {
      usage_error(c, "--precision expects fp32, bf16 or int8, found '%s'", val);
      return false;
    }
    c->precision = !strcmp(val, "bf16") ? PRECISION_BF16 : !strcmp(val, "int8") ? PRECISION_INT8 : PRECISION_FP32;
    return true;
  case OPT_MPI: b->mpi = true; return true;
  case OPT_SAVE_TEMPS: b->keep_temps = true; return true;
  case OPT_INPUT: return parse_binding(c, flag, val, &o->inputs[d->neval_inputs++]);
  case OPT_PRINT: d->eval_print = true; return true;
  case OPT_ALL: d->eval_all = true; return true;
  case OPT_MAX_ALL: {
    long long v = strtoll(val, &end, 10);
    if (*end || end == val || v < 1) {
      usage_error(c, "--max-all expects a positive whole number, found '%s'", val);
      return false;
    }
    d->eval_max_all = v;
    return true;
  }
  default: ICE("option code %d has no case", code);
  }
}

/* The command line, read with getopt_long: --name=value is the same as
 * --name value, -DNAME=N as -D NAME=N, -O3 as -O 3; long options are written
 * in full (an abbreviation is an error naming the option). */
static bool parse_args(Comp *c, int argc, char **argv, Options *o) {
  DriverOptions *d = &o->driver;
  o->inputs = ARENA_ARRAY(&c->arena, Binding, argc);
  o->eval_outputs = ARENA_ARRAY(&c->arena, Binding, argc);
  o->outputs = ARENA_ARRAY(&c->arena, const char *, argc);
  o->streams = ARENA_ARRAY(&c->arena, const char *, argc);
  o->taps = ARENA_ARRAY(&c->arena, const char *, argc);
  o->patches = ARENA_ARRAY(&c->arena, const char *, argc);
  o->eval_patches = ARENA_ARRAY(&c->arena, Binding, argc);
  o->files = ARENA_ARRAY(&c->arena, const char *, argc);
  c->streamed = o->streams;
  c->defines = ARENA_ARRAY(&c->arena, SizeDefine, argc);
  const char *color = getenv("NO_COLOR") ? "never" : "auto";
  /* a subcommand is the first argument; getopt_long then reads the rest, the
   * subcommand standing in for the program name */
  int first = 0;
  if (argc > 1 && strcmp(argv[1], "eval") == 0) o->eval = true, first = 1;
  else if (argc > 1 && strcmp(argv[1], "store") == 0) o->store = true, first = 1;
  int gargc = argc - first;
  char **gargv = argv + first;
  opterr = 0;
  for (;;) {
    int at = optind;   /* the argument getopt_long reads now */
    int code = getopt_long(gargc, gargv, SHORT_OPTIONS, LONG_OPTIONS, NULL);
    if (code == -1) break;   /* "--": the rest are files */
    if (code == 1) {
      if (!take_operand(c, o, optarg)) return false;
      continue;
    }
    const char *a = gargv[at];
    const struct option *lo = long_option(a);
    if (code == ':') {
      const char *flag = optopt >= OPT_VERSION ? arena_printf(&c->arena, "--%s", long_option_of(optopt)->name)
                                               : arena_printf(&c->arena, "-%c", optopt);
      usage_error(c, "option %s needs a value", flag);
      return false;
    }
    if (code == '?' && lo) {
      usage_error(c, "option --%s takes no value, found '%s'", lo->name, a);
      return false;
    }
    if (code == '?') {
      usage_error(c, "unknown option '%s'", optopt && a[1] != '-' ? arena_printf(&c->arena, "-%c", optopt) : a);
      return false;
    }
    if (a[0] == '-' && a[1] == '-' && !lo) {   /* getopt_long took an abbreviation */
      usage_error(c, "unknown option '%s' (did you mean --%s?)", a, long_option_of(code)->name);
      return false;
    }
    const char *flag = lo ? arena_printf(&c->arena, "--%s", lo->name) : arena_printf(&c->arena, "-%c", code);
    if (!o->eval && eval_only(code)) {
      usage_error(c, "%s is an option of circc eval", flag);
      return false;
    }
    if (!take_option(c, o, code, flag, optarg, &color)) return false;
  }
  for (int i = optind; i < gargc; i++)
    if (!take_operand(c, o, gargv[i])) return false;
  if (!strcmp(color, "always")) c->color = true;
  else if (!strcmp(color, "auto")) c->color = isatty(2);
  else if (strcmp(color, "never")) {
    usage_error(c, "--color expects auto, always or never, found '%s'", color);
    return false;
  }
  if (o->store ? !o->nfiles : !o->input) {
    usage_error(c, "no input file");
    return false;
  }
  const char *verify = getenv("CIRCC_VERIFY_EACH");
  if (verify && !strcmp(verify, "1")) d->verify_each = true;
  if (o->eval && c->nstreamed) {
    usage_error(c, "--stream is a compile option; circc eval reads every Array (%s)", c->streamed[0]);
    return false;
  }
  if (o->eval && c->precision != PRECISION_FP32) {
    usage_error(c, "--precision is a compile option; circc eval computes in double");
    return false;
  }
  if (d->eval_max_all && !d->eval_all) {
    usage_error(c, "--max-all needs --all");
    return false;
  }
  if (o->eval && latest_dump(d->dump) > STAGE_RESOLVE) {
    usage_error(c, "circc eval runs the pipeline up to resolve: --dump %s needs a compile",
                stage_name((Stage)latest_dump(d->dump)));
    return false;
  }
  d->path = o->input;
  d->outputs = o->outputs;
  d->evaluate = o->eval;
  d->eval_inputs = o->inputs;
  d->eval_outputs = o->eval_outputs;
  d->eval_patches = o->eval_patches;
  d->taps = o->taps;
  d->patches = o->patches;
  return true;
}

/* How far the pipeline runs: a build with -o, the kernel plan for --report,
 * else as far as the latest --dump stage, at least rv (every shape and every
 * random variable checked). */
static Stage last_stage(const Options *o) {
  if (o->driver.build.output) return STAGE_EMIT;
  int last = o->driver.report ? STAGE_MEMPLAN : STAGE_RV;
  return (Stage)(latest_dump(o->driver.dump) > last ? latest_dump(o->driver.dump) : last);
}

static int circc_main(int argc, char **argv) {
  Comp comp;
  Comp *c = &comp;
  comp_init(c);
  c->rng_state = 24301;
  c->max_errors = 50; /* the count is still reported */
  Options o = {.driver = {.build = {.native = true}}};
  int code;
  if (!parse_args(c, argc, argv, &o)) {
    code = diag_exit_code(c);
    comp_free(c);
    return code;
  }
  if (o.store) {
    driver_store(c, o.files, o.nfiles);
  } else {
    /* the command line goes into the program's header and --info */
    char *cmd = arena_strdup(&c->arena, "circc");
    for (int i = 1; i < argc; i++) cmd = arena_printf(&c->arena, "%s %s", cmd, argv[i]);
    const char *out = o.driver.build.output;
    o.driver.emit = (EmitOptions){.name = out ? (strrchr(out, '/') ? strrchr(out, '/') + 1 : out) : "model",
                                  .command_line = cmd,
                                  .vocab = o.driver.emit.vocab};
    o.driver.last = last_stage(&o);
    Compilation cm = {0};
    if (o.info_model) o.driver.last = STAGE_PARSE, o.driver.bind_tokens = false; /* the file as written */
    if (driver_run(c, &o.driver, &cm) && o.info_model)
      model_info_print(c, cm.source, &cm.library, &cm.tops, stdout);
  }
  code = diag_exit_code(c);
  if (diag_error_count(c) > 1) fprintf(stderr, "circc: error: %d errors; nothing written\n", diag_error_count(c));
  comp_free(c);
  return code;
}

/* No stage recurses once per level of the circuit (they walk it with
 * ir_walk); what recursion is left is bounded otherwise (lowering: 256
 * levels, expressions: about 50, JSON: 256, tensor rank). circc runs on a
 * thread with a stack of STACK_MIB, several times what that takes even
 * under the sanitizers, whose frames are larger; only touched pages are used. */
enum { STACK_MIB = 64 };
typedef struct MainArgs {
  int argc;
  char **argv;
  int code;
} MainArgs;

static void *main_thread(void *p) {
  MainArgs *a = p;
  a->code = circc_main(a->argc, a->argv);
  return NULL;
}

int main(int argc, char **argv) {
  MainArgs a = {argc, argv, 70};
  pthread_attr_t attr;
  pthread_t t;
  if (pthread_attr_init(&attr) == 0 && pthread_attr_setstacksize(&attr, (size_t)STACK_MIB << 20) == 0 &&
      pthread_create(&t, &attr, main_thread, &a) == 0) {
    pthread_join(t, NULL);
    return a.code;
  }
  return circc_main(argc, argv); /* no such thread: the process stack (8 MiB by default) */
}
