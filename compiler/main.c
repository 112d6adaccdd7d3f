/* main.c — the circc command line: parses the arguments into driver options,
 * hands them to the driver (driver.c runs the pipeline), and maps the
 * diagnostics to exit codes (0 ok, 1 circuit error, 2 usage, 3 I/O, 4 C
 * compiler or no mpicc for --mpi, 70 internal). */
#include <pthread.h>
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
    "  -D NAME=N              bind a symbolic size: NAME is Ks (e.g. 1s) or SEQ, HIDDEN, ...\n"
    "  --tensors DIR          tensor store root (default $TENSORS_CACHE_DIR,\n"
    "                         else ~/tensors_by_hash_cache)\n"
    "  --random-tensors       every Array is N(0,1) of its declared shape (rust_circuit's\n"
    "                         tensors_as_random); seeded, so runs are reproducible\n"
    "  --seed N               seed for random tensors (default 24301)\n"
    "  --allow-unused-inputs  do not require module arguments to occur in the spec\n"
    "  --dump STAGE[,STAGE]   print the IR after each STAGE (repeatable): load (the text), library\n"
    "                         (a model file's module library), parse, tensors, resolve, rv,\n"
    "                         simplify, plan (rust_circuit text), lower, fuse, memplan (the kernel\n"
    "                         graph), emit (the generated C)\n"
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
    "  -o PATH                output executable (or directory with --emit c)\n"
    "  --emit exe|c           an executable (default) or a directory with model.c, the runtime,\n"
    "                         the weights blob and a Makefile\n"
    "  --output NAME          compile only the top-level circuit NAME (repeatable)\n"
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
    "  --save-temps           keep the generated sources (their directory is printed)\n"
    "  --vocab CHARS          character vocabulary (id i = CHARS[i], '.' ends a name): the\n"
    "                         program gets --sample N --seed S\n"
    "  --lm gpt2-bpe:DIR|chars:FILE.json   tokenizer of a language model (DIR: GPT-2's\n"
    "                         encoder.json and vocab.bpe; FILE.json: a character list, id =\n"
    "                         index), linked into the program: with a decode circuit\n"
    "                         (gpt2_import --decode) or --bind-tokens it gets --text,\n"
    "                         --generate, --top, ...\n"
    "  -h, --help             this help;  --version   print the version\n"
    "eval options:\n"
    "  --input NAME=@FILE.npy   value of the free symbol NAME (repeatable)\n"
    "  --output NAME=@FILE.npy  write output circuit NAME to FILE.npy (repeatable)\n"
    "  --print                  print every output's values (default without --output)\n"
    "  --all                    exact expectations: each Cumulant of DiscreteVars enumerates every\n"
    "                           combination of rows of the groups it uses, weighted by their\n"
    "                           probabilities (without --all a DiscreteVar is an error)\n"
    "  --patch NAME=@FILE.npy   use FILE's value for the node with name path NAME (repeatable)\n"
    "  --max-all N              refuse a Cumulant with more than N combinations (default 1000000)\n"
    "\n"
    "exit codes: 0 ok, 1 circuit error (parse, shape, missing tensor, unbound symbol),\n"
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

static void usage_error(Comp *c, const char *fmt, const char *arg) {
  char msg[512];
  snprintf(msg, sizeof msg, fmt, arg);
  diag_error_class(c, DIAG_USAGE, NO_LOC, "%s (see circc --help)", msg);
}

/* NAME=@PATH (the @ is optional) */
static bool parse_binding(Comp *c, const char *flag, const char *arg, Binding *b) {
  const char *eq = strchr(arg, '=');
  if (!eq || eq == arg || !eq[1]) {
    char msg[256];
    snprintf(msg, sizeof msg, "%s expects NAME=@FILE.npy, found '%%s'", flag);
    usage_error(c, msg, arg);
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
                     "fuse, memplan, emit; found '%s'", name);
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

static bool parse_args(Comp *c, int argc, char **argv, Options *o) {
  DriverOptions *d = &o->driver;
  BuildOptions *b = &d->build;
  o->inputs = ARENA_ARRAY(&c->arena, Binding, argc);
  o->eval_outputs = ARENA_ARRAY(&c->arena, Binding, argc);
  o->outputs = ARENA_ARRAY(&c->arena, const char *, argc);
  o->streams = ARENA_ARRAY(&c->arena, const char *, argc);
  o->taps = ARENA_ARRAY(&c->arena, const char *, argc);
  o->patches = ARENA_ARRAY(&c->arena, const char *, argc);
  o->eval_patches = ARENA_ARRAY(&c->arena, Binding, argc);
  c->streamed = o->streams;
  c->defines = ARENA_ARRAY(&c->arena, SizeDefine, argc);
  const char *color = getenv("NO_COLOR") ? "never" : "auto";
  int i = 1;
  o->files = ARENA_ARRAY(&c->arena, const char *, argc);
  if (i < argc && strcmp(argv[i], "eval") == 0) o->eval = true, i++;
  else if (i < argc && strcmp(argv[i], "store") == 0) o->store = true, i++;
  for (; i < argc; i++) {
    const char *a = argv[i];
    const char *val = i + 1 < argc ? argv[i + 1] : NULL;
#define NEEDS_VALUE() \
  do { if (!val) { usage_error(c, "option %s needs a value", a); return false; } i++; } while (0)
    if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
      fputs(USAGE, stdout);
      exit(0);
    } else if (!strcmp(a, "--version")) {
      printf("circc %s\n", CIRCC_VERSION);
      exit(0);
    } else if (!strcmp(a, "-D") || (!strncmp(a, "-D", 2) && a[2])) {
      const char *def = a[2] ? a + 2 : val;
      if (!a[2]) NEEDS_VALUE();
      const char *eq = strchr(def, '=');
      char *end;
      long long v = eq ? strtoll(eq + 1, &end, 10) : 0;
      if (!eq || eq == def || !eq[1] || *end) {
        usage_error(c, "-D expects NAME=N, found '%s'", def);
        return false;
      }
      c->defines[c->ndefines++] = (SizeDefine){arena_strndup(&c->arena, def, (size_t)(eq - def)), v};
    } else if (!strcmp(a, "--tensors")) {
      NEEDS_VALUE();
      c->tensor_dir = val;
    } else if (!strcmp(a, "--random-tensors")) {
      c->tensors_as_random = true;
    } else if (!strcmp(a, "--seed")) {
      NEEDS_VALUE();
      c->rng_state = strtoull(val, NULL, 10);
    } else if (!strcmp(a, "--allow-unused-inputs")) {
      c->check_all_inputs_used = false;
    } else if (!strcmp(a, "--dump")) {
      NEEDS_VALUE();
      if (!parse_dump(c, val, &d->dump)) return false;
    } else if (!strcmp(a, "--info-model")) {
      o->info_model = true;
    } else if (!strcmp(a, "--bind-tokens")) {
      d->bind_tokens = true;
    } else if (!strcmp(a, "--ops")) {
      NEEDS_VALUE();
      const char **files = ARENA_ARRAY(&c->arena, const char *, d->nops_files + 1);
      if (d->nops_files) memcpy(files, d->ops_files, sizeof *files * (size_t)d->nops_files);
      files[d->nops_files++] = val;
      d->ops_files = files;
    } else if (!strcmp(a, "--verify-each")) {
      d->verify_each = true;
    } else if (!strcmp(a, "--color")) {
      NEEDS_VALUE();
      color = val;
    } else if (!strcmp(a, "-o")) {
      NEEDS_VALUE();
      b->output = val;
    } else if (!o->eval && !strcmp(a, "--output")) {
      NEEDS_VALUE();
      o->outputs[d->noutputs++] = val;
    } else if (!strcmp(a, "--tap")) {
      NEEDS_VALUE();
      o->taps[d->ntaps++] = val;
    } else if (!o->eval && !strcmp(a, "--patch")) {
      NEEDS_VALUE();
      o->patches[d->npatches++] = val;
    } else if (o->eval && !strcmp(a, "--patch")) {
      NEEDS_VALUE();
      if (!parse_binding(c, a, val, &o->eval_patches[d->neval_patches++])) return false;
    } else if (!strcmp(a, "--stream")) {
      NEEDS_VALUE();
      o->streams[c->nstreamed++] = val;
    } else if (!strcmp(a, "--sample-batch")) {
      NEEDS_VALUE();
      char *end;
      long v = strtol(val, &end, 10);
      if (*end || end == val || v < 1 || v > 1 << 20) {
        usage_error(c, "--sample-batch expects a whole number from 1 to 1048576, found '%s'", val);
        return false;
      }
      d->sample_batch = (int)v;
    } else if (!strcmp(a, "--emit")) {
      NEEDS_VALUE();
      if (strcmp(val, "exe") && strcmp(val, "c")) {
        usage_error(c, "--emit expects exe or c, found '%s'", val);
        return false;
      }
      b->emit_c_only = !strcmp(val, "c");
    } else if (!strcmp(a, "--vocab")) {
      NEEDS_VALUE();
      d->emit.vocab = val;
    } else if (!strcmp(a, "--lm")) {
      NEEDS_VALUE();
      d->lm = val;
    } else if (!strcmp(a, "--report")) {
      d->report = stdout;
    } else if (!strcmp(a, "--cc")) {
      NEEDS_VALUE();
      b->cc = val;
    } else if (!strcmp(a, "--cflags")) {
      NEEDS_VALUE();
      b->cflags = b->cflags ? arena_printf(&c->arena, "%s %s", b->cflags, val) : val;
    } else if (!strcmp(a, "-O0") || !strcmp(a, "-O1") || !strcmp(a, "-O2") || !strcmp(a, "-O3")) {
      b->opt = a;
    } else if (!strcmp(a, "-g")) {
      b->cflags = b->cflags ? arena_printf(&c->arena, "%s -g", b->cflags) : "-g";
    } else if (!strcmp(a, "--march")) {
      NEEDS_VALUE();
      if (strcmp(val, "native") && strcmp(val, "portable")) {
        usage_error(c, "--march expects native or portable, found '%s'", val);
        return false;
      }
      b->native = !strcmp(val, "native");
    } else if (!strcmp(a, "--mpi")) {
      b->mpi = true;
    } else if (!strcmp(a, "--save-temps")) {
      b->keep_temps = true;
    } else if (o->eval && !strcmp(a, "--input")) {
      NEEDS_VALUE();
      if (!parse_binding(c, a, val, &o->inputs[d->neval_inputs++])) return false;
    } else if (o->eval && !strcmp(a, "--output")) {
      NEEDS_VALUE();
      if (!parse_binding(c, a, val, &o->eval_outputs[d->neval_outputs])) return false;
      o->outputs[d->noutputs++] = o->eval_outputs[d->neval_outputs++].name;
    } else if (o->eval && !strcmp(a, "--print")) {
      d->eval_print = true;
    } else if (o->eval && !strcmp(a, "--all")) {
      d->eval_all = true;
    } else if (o->eval && !strcmp(a, "--max-all")) {
      NEEDS_VALUE();
      char *end;
      long long v = strtoll(val, &end, 10);
      if (*end || end == val || v < 1) {
        usage_error(c, "--max-all expects a positive whole number, found '%s'", val);
        return false;
      }
      d->eval_max_all = v;
    } else if (a[0] == '-' && a[1]) {
      usage_error(c, "unknown option '%s'", a);
      return false;
    } else if (o->store) {
      o->files[o->nfiles++] = a;
    } else if (o->input) {
      usage_error(c, "more than one input file ('%s')", a);
      return false;
    } else {
      o->input = a;
    }
#undef NEEDS_VALUE
  }
  if (!strcmp(color, "always")) c->color = true;
  else if (!strcmp(color, "auto")) c->color = isatty(2);
  else if (strcmp(color, "never")) {
    usage_error(c, "--color expects auto, always or never, found '%s'", color);
    return false;
  }
  if (o->store ? !o->nfiles : !o->input) {
    usage_error(c, "no input file%s", "");
    return false;
  }
  const char *verify = getenv("CIRCC_VERIFY_EACH");
  if (verify && !strcmp(verify, "1")) d->verify_each = true;
  if (o->eval && c->nstreamed) {
    usage_error(c, "--stream is a compile option; circc eval reads every Array (%s)", c->streamed[0]);
    return false;
  }
  if (d->eval_max_all && !d->eval_all) {
    usage_error(c, "--max-all needs --all%s", "");
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

/* The stages after parse recurse once per level of the circuit (up to
 * IR_MAX_DEPTH, which the driver checks): circc runs on a thread whose stack
 * holds that many. Only the pages a deep circuit touches are used. */
enum { STACK_GIB = 2 };
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
  if (pthread_attr_init(&attr) == 0 && pthread_attr_setstacksize(&attr, (size_t)STACK_GIB << 30) == 0 &&
      pthread_create(&t, &attr, main_thread, &a) == 0) {
    pthread_join(t, NULL);
    return a.code;
  }
  return circc_main(argc, argv); /* no such thread: the process stack, deep circuits may not fit */
}
