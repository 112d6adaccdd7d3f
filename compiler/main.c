/* main.c — the circc command line: parses arguments, runs the pipeline
 * stages in order (parse → resolve → eval / dump), and maps the diagnostics to
 * exit codes (0 ok, 1 circuit error, 2 usage, 3 I/O, 70 internal). */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "circc.h"
#include "kernel.h"

static const char USAGE[] =
    "usage: circc [options] INPUT.circ -o OUTPUT     compile a circuit to a standalone program\n"
    "       circc eval [options] INPUT.circ           evaluate it with the reference evaluator\n"
    "       circc store [--tensors DIR] FILE.npy...  add tensors to the tensor store, print their hashes\n"
    "\n"
    "Reads circuits in rust_circuit's text format, loads their tensors, substitutes\n"
    "modules, checks every shape, and compiles them to a C program with every shape\n"
    "baked in (OpenMP-parallel, weights linked in). Without -o it only checks.\n"
    "\n"
    "options:\n"
    "  -D NAME=N              bind a symbolic size: NAME is Ks (e.g. 1s) or SEQ, HIDDEN, ...\n"
    "  --tensors DIR          tensor store root (default $TENSORS_CACHE_DIR,\n"
    "                         else ~/tensors_by_hash_cache)\n"
    "  --random-tensors       every Array is N(0,1) of its declared shape (rust_circuit's\n"
    "                         tensors_as_random); seeded, so runs are reproducible\n"
    "  --seed N               seed for random tensors (default 24301)\n"
    "  --allow-unused-inputs  do not require module arguments to occur in the spec\n"
    "  --dump parse|resolve|simplify   print the circuits after that stage in rust_circuit text\n"
    "  --color auto|always|never   colored diagnostics (default auto; NO_COLOR respected)\n"
    "compile options:\n"
    "  -o PATH                output executable (or directory with --emit c)\n"
    "  --emit exe|c           an executable (default) or a directory with model.c, the runtime,\n"
    "                         the weights blob and a Makefile\n"
    "  --output NAME          compile only the top-level circuit NAME (repeatable)\n"
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
    "                         (gpt2_import --decode) it gets --text, --generate, --top, ...\n"
    "  -h, --help             this help;  --version   print the version\n"
    "eval options:\n"
    "  --input NAME=@FILE.npy   value of the free symbol NAME (repeatable)\n"
    "  --output NAME=@FILE.npy  write output circuit NAME to FILE.npy (repeatable)\n"
    "  --print                  print every output's values (default without --output)\n"
    "\n"
    "exit codes: 0 ok, 1 circuit error (parse, shape, missing tensor, unbound symbol),\n"
    "            2 usage error, 3 I/O error, 4 the C compiler failed, 70 internal error\n"
    "environment: TENSORS_CACHE_DIR, CC, NO_COLOR\n";

typedef struct Binding {
  const char *name, *path;
} Binding;

typedef struct Options {
  bool eval, store, print, report;
  BuildOptions build;
  const char *vocab;
  const char *lm;     /* --lm SPEC: tokenizer_build's spec */
  const char *emit;
  const char **files; /* circc store */
  int nfiles;
  const char *input, *output, *dump;
  Binding *inputs, *outputs;
  int ninputs, noutputs;
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

static bool parse_args(Comp *c, int argc, char **argv, Options *o) {
  o->inputs = ARENA_ARRAY(&c->arena, Binding, argc);
  o->outputs = ARENA_ARRAY(&c->arena, Binding, argc);
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
      if (strcmp(val, "parse") && strcmp(val, "resolve") && strcmp(val, "simplify")) {
        usage_error(c, "--dump expects parse, resolve or simplify, found '%s'", val);
        return false;
      }
      o->dump = val;
    } else if (!strcmp(a, "--color")) {
      NEEDS_VALUE();
      color = val;
    } else if (!strcmp(a, "-o")) {
      NEEDS_VALUE();
      o->output = val;
    } else if (!o->eval && !strcmp(a, "--output")) {
      NEEDS_VALUE();
      o->outputs[o->noutputs++] = (Binding){val, NULL};
    } else if (!strcmp(a, "--emit")) {
      NEEDS_VALUE();
      if (strcmp(val, "exe") && strcmp(val, "c")) {
        usage_error(c, "--emit expects exe or c, found '%s'", val);
        return false;
      }
      o->build.emit_c_only = !strcmp(val, "c");
    } else if (!strcmp(a, "--vocab")) {
      NEEDS_VALUE();
      o->vocab = val;
    } else if (!strcmp(a, "--lm")) {
      NEEDS_VALUE();
      o->lm = val;
    } else if (!strcmp(a, "--report")) {
      o->report = true;
    } else if (!strcmp(a, "--cc")) {
      NEEDS_VALUE();
      o->build.cc = val;
    } else if (!strcmp(a, "--cflags")) {
      NEEDS_VALUE();
      o->build.cflags = o->build.cflags ? arena_printf(&c->arena, "%s %s", o->build.cflags, val) : val;
    } else if (!strcmp(a, "-O0") || !strcmp(a, "-O1") || !strcmp(a, "-O2") || !strcmp(a, "-O3")) {
      o->build.opt = a;
    } else if (!strcmp(a, "-g")) {
      o->build.cflags = o->build.cflags ? arena_printf(&c->arena, "%s -g", o->build.cflags) : "-g";
    } else if (!strcmp(a, "--march")) {
      NEEDS_VALUE();
      if (strcmp(val, "native") && strcmp(val, "portable")) {
        usage_error(c, "--march expects native or portable, found '%s'", val);
        return false;
      }
      o->build.native = !strcmp(val, "native");
    } else if (!strcmp(a, "--save-temps")) {
      o->build.keep_temps = true;
    } else if (o->eval && !strcmp(a, "--input")) {
      NEEDS_VALUE();
      if (!parse_binding(c, a, val, &o->inputs[o->ninputs++])) return false;
    } else if (o->eval && !strcmp(a, "--output")) {
      NEEDS_VALUE();
      if (!parse_binding(c, a, val, &o->outputs[o->noutputs++])) return false;
    } else if (o->eval && !strcmp(a, "--print")) {
      o->print = true;
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
  return true;
}

/* Prints t (shape of node n) with numpy-like nesting. */
static void print_values(FILE *f, const Tensor *t, int dim, int64_t *offset) {
  if (dim == t->shape.rank) {
    fprintf(f, "%.9g", tensor_get_f64(t, (*offset)++));
    return;
  }
  fputc('[', f);
  for (int64_t i = 0; i < t->shape.dim[dim]; i++) {
    if (i) fputs(dim + 1 == t->shape.rank ? ", " : ",\n ", f);
    print_values(f, t, dim + 1, offset);
  }
  fputc(']', f);
}

/* Converts an evaluated (f64) value to the output node's dtype for saving. */
static Tensor *to_dtype(Comp *c, const Tensor *v, DType dt) {
  if (dt == DT_UNKNOWN || dt == DT_F16 || dt == DT_BF16) dt = DT_F32;
  Tensor *t = tensor_new(c, dt, &v->shape);
  int64_t n = shape_numel(&v->shape);
  for (int64_t i = 0; i < n; i++) tensor_set_f64(t, i, tensor_get_f64(v, i));
  return t;
}

static int run_eval(Comp *c, const Options *o, const Program *p) {
  Eval *e = eval_new(c);
  Loc cli = {"command line", 0, 0};
  for (int i = 0; i < o->ninputs; i++) {
    const Binding *b = &o->inputs[i];
    const Node *sym = NULL;
    for (int j = 0; j < p->inputs.n; j++)
      if (p->inputs.node[j]->name && !strcmp(p->inputs.node[j]->name, b->name)) sym = p->inputs.node[j];
    if (!sym && o->noutputs) {
      diag_warn(c, NO_LOC, "--input %s: not used by the selected outputs; ignored", b->name);
      continue;
    }
    if (!sym) {
      diag_error_class(c, DIAG_USAGE, NO_LOC, "--input %s: the circuit has no free symbol named '%s'", b->name, b->name);
      for (int j = 0; j < p->inputs.n; j++)
        diag_note(c, p->inputs.node[j]->loc, "free symbol %s %s", node_label(c, p->inputs.node[j]),
                  shape_str(c, &p->inputs.node[j]->shape));
      continue;
    }
    Tensor *t = npy_load(c, b->path, cli);
    if (!t) continue;
    if (!shape_eq(&t->shape, &sym->shape)) {
      diag_error_class(c, DIAG_IO, NO_LOC, "--input %s: %s has shape %s but symbol '%s' needs %s", b->name, b->path,
                       shape_str(c, &t->shape), b->name, shape_str(c, &sym->shape));
      continue;
    }
    eval_bind(e, sym, t);
  }
  for (int i = 0; i < o->noutputs; i++) {
    bool found = false;
    for (int j = 0; j < p->outputs.n; j++) found |= !strcmp(p->output_names[j], o->outputs[i].name);
    if (!found) diag_error_class(c, DIAG_USAGE, NO_LOC, "--output %s: no top-level circuit has that name", o->outputs[i].name);
  }
  if (diag_error_count(c)) {
    eval_free(e);
    return diag_exit_code(c);
  }
  /* evaluate everything first, so an error leaves no output file behind */
  Tensor **value = ARENA_ARRAY(&c->arena, Tensor *, p->outputs.n);
  const Binding **dest = ARENA_ARRAY(&c->arena, const Binding *, p->outputs.n);
  for (int j = 0; j < p->outputs.n; j++) {
    for (int i = 0; i < o->noutputs; i++)
      if (!strcmp(p->output_names[j], o->outputs[i].name)) dest[j] = &o->outputs[i];
    if (dest[j] || o->print || o->noutputs == 0) value[j] = eval_node(e, p->outputs.node[j]);
  }
  for (int j = 0; j < p->outputs.n && !diag_error_count(c); j++) {
    const Node *n = p->outputs.node[j];
    if (dest[j]) npy_save(c, to_dtype(c, value[j], n->dtype), dest[j]->path);
    if (value[j] && (o->print || o->noutputs == 0)) {
      printf("%s %s %s\n", p->output_names[j], shape_str(c, &n->shape), dtype_name(n->dtype == DT_UNKNOWN ? DT_F32 : n->dtype));
      int64_t off = 0;
      print_values(stdout, value[j], 0, &off);
      fputc('\n', stdout);
    }
  }
  eval_free(e);
  return diag_exit_code(c);
}

/* circc store: writes each .npy into the store under its rust_circuit hash, so a
 * circuit can refer to it as `Array <first 24 hex chars>`. */
static int run_store(Comp *c, const Options *o) {
  for (int i = 0; i < o->nfiles; i++) {
    Loc loc = {o->files[i], 0, 0};
    Tensor *t = npy_load(c, o->files[i], loc);
    const char *hash = t ? store_write(c, t) : NULL;
    if (hash) printf("%s  %s\n", hash, o->files[i]);
  }
  return diag_exit_code(c);
}

/* BLAKE3 of the circuit text, so --info can tell which circuit a program came from. */
static const char *source_hash(Comp *c, const char *path) {
  for (int i = 0; i < c->nsources; i++)
    if (!strcmp(c->sources[i].name, path)) {
      uint8_t h[32];
      blake3_hash(c->sources[i].text, c->sources[i].len, h);
      char *hex = arena_alloc(&c->arena, 65);
      for (int j = 0; j < 32; j++) snprintf(hex + 2 * j, 3, "%02x", h[j]);
      return hex;
    }
  return "";
}

/* ` -> buffer 7 @arena+64` or ` -> buffer 9 (output 0)` */
static void report_buffer(const Buf *b) {
  printf(" -> buffer %d", b->id);
  if (b->kind == BUF_TEMP) printf(" @arena+%lld", (long long)b->offset);
  else if (b->kind == BUF_OUTPUT) printf(" (output %d)", b->index);
}

static void report_kernels(Comp *c, const Kernels *k) {
  static const char *const KIND[] = {"elementwise", "contraction", "row", "gather", "fill", "gemm", "layernorm", "attention"};
  printf("plan: %d steps, %d elementwise nodes fused into other steps, %.0f FLOPs per run\n", k->nstep, k->nfused,
         k->flops);
  for (int i = 0; i < k->nstep; i++) {
    const Step *s = k->step[i];
    printf("  step %3d %-11s %s %s", i, KIND[s->kind], s->node ? node_label(c, s->node) : "",
           s->node ? shape_str(c, &s->node->shape) : "");
    report_buffer(s->out.buf);
    if (step_is_gemv(s)) printf(", matrix-vector%s", s->x.buf ? ", skips masked columns" : "");
    if (s->kind == STEP_ATTENTION && !s->idx[0].buf) printf(", mask computed at run time");
    if (s->epilogue) {
      printf(", epilogue %s", s->epilogue->node ? node_label(c, s->epilogue->node) : "");
      report_buffer(s->epilogue->out.buf);
    }
    printf("\n");
  }
  printf("memplan: arena %lld bytes, weights %lld bytes\n", (long long)k->arena_bytes, (long long)k->weights_bytes);
}

/* The compiler pipeline after resolve, one stage per line (style.md lesson 1). */
static void compile(Comp *c, const Options *o, Program *p, int argc, char **argv) {
  SimplifyStats stats = {0};
  Kernels k;
  if (!simplify_run(c, p->outputs.node, p->outputs.n, &stats)) return;
  if (o->dump && !strcmp(o->dump, "simplify")) dump_circuits(c, stdout, p->outputs.node, p->outputs.n);
  if (o->report)
    for (int i = 0; i < stats.nrules; i++)
      if (stats.fired[i]) printf("simplify: %-32s fired %d times\n", stats.rule_name[i], stats.fired[i]);
  if (!plan_einsums(c, p->outputs.node, p->outputs.n, o->report ? stdout : NULL)) return;
  if (!lower_program(c, p, &k)) return;
  memplan_assign(c, &k);
  if (o->report) report_kernels(c, &k);
  if (!o->output) return;
  /* the command line goes into the program's header and --info */
  char *cmd = arena_strdup(&c->arena, "circc");
  for (int i = 1; i < argc; i++) cmd = arena_printf(&c->arena, "%s %s", cmd, argv[i]);
  const char *base = strrchr(o->output, '/') ? strrchr(o->output, '/') + 1 : o->output;
  EmitOptions eo = {.name = base, .command_line = cmd, .source_hash = source_hash(c, o->input), .vocab = o->vocab};
  if (o->lm) {   /* the tokenizer table is linked into the program (tokenizer.bin) */
    void *blob;
    if (!tokenizer_build(c, o->lm, &blob, &eo.tokenizer_len)) return;
    eo.tokenizer = blob;
  }
  BuildOptions bo = o->build;
  bo.output = o->output;
  build_program(c, &k, &eo, &bo);
}

int main(int argc, char **argv) {
  Comp comp;
  Comp *c = &comp;
  comp_init(c);
  c->rng_state = 24301;
  c->max_errors = 50; /* the count is still reported */
  Options o = {.build = {.native = true}};
  int code;
  if (!parse_args(c, argc, argv, &o)) {
    code = diag_exit_code(c);
    comp_free(c);
    return code;
  }
  if (o.store) {
    code = run_store(c, &o);
    comp_free(c);
    return code;
  }
  NodeList tops = {0}, chosen = {0};
  Program prog;
  SourceFile *src = load_source(c, o.input);
  if (src && parse_text(c, src->name, src->text, src->len, NULL, &tops) && load_tensors(c, tops.node, tops.n) &&
      o.dump && !strcmp(o.dump, "parse"))
    dump_circuits(c, stdout, tops.node, tops.n);
  /* --output NAME restricts the program to those circuits (e.g. a file of library specs plus one model) */
  for (int i = 0; i < tops.n; i++) {
    bool want = o.noutputs == 0;
    for (int j = 0; j < o.noutputs; j++) want |= tops.node[i]->name && !strcmp(tops.node[i]->name, o.outputs[j].name);
    if (want) nodelist_push(c, &chosen, tops.node[i]);
  }
  if (!diag_error_count(c) && resolve_program(c, &chosen, &prog)) {
    if (o.dump && !strcmp(o.dump, "resolve")) dump_circuits(c, stdout, prog.outputs.node, prog.outputs.n);
    if (o.eval) run_eval(c, &o, &prog);
    else if (o.output || o.report || (o.dump && !strcmp(o.dump, "simplify"))) compile(c, &o, &prog, argc, argv);
  }
  code = diag_exit_code(c);
  if (diag_error_count(c) > 1) fprintf(stderr, "circc: error: %d errors; nothing written\n", diag_error_count(c));
  comp_free(c);
  return code;
}
