/* test_codegen.c — differential tests of the whole compiler (design.md §6):
 * a circuit is compiled exactly like `circc` does (resolve → simplify → plan →
 * lower → memplan → build), the program runs on random inputs (valid ids for
 * index inputs) with --threads 1, 2 and 3 (more threads than a small machine's
 * cores, and an uneven split), the runs must be bytewise identical, and every output must match the reference evaluator
 * (double precision, on the unsimplified circuit) within
 * |got-want| <= 1e-4|want| + 1e-4 max|want| + 1e-6. Cases: the evaluable
 * examples of rust_circuit_format.md §9, the GPT-2 block in module form,
 * focused circuits per node kind, large cases that cross the OpenMP threshold
 * (-O1 and -O3 -march=native), 250 small seeded random circuits (randcirc.c)
 * in 10 programs and 20 large ones in 2. Each check runs in a forked child, so
 * a crash or ICE becomes a report; a failing random program is narrowed down to
 * its failing circuits, printed with their seeds.
 * Environment: CIRCC_RANDCIRC_BASE=N shifts the random seeds (soak runs),
 * CIRCC_RANDCIRC_SEED=N [CIRCC_RANDCIRC_LARGE=1] replays one random circuit,
 * CIRCC_CODEGEN_FILE=PATH checks a reproducer file, CIRCC_KEEP_TEMPS keeps files. */
#define _XOPEN_SOURCE 700 /* nftw */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <ftw.h>
#include <math.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include "circc.h"
#include "kernel.h"
#include "randcirc.h"
#include "testutil.h"


extern char **environ;

/* ------------------------------------------------------------------ options */

typedef struct Fixed { const char *name, *path; } Fixed;  /* an input read from a .npy file */
/* Values of input `name`: uniform in [lo, hi), integral if `integral` (float inputs too). */
typedef struct Range { const char *name; double lo, hi; bool integral; } Range;

typedef struct Opts {
  const char *text;          /* circuit text, or */
  const char *file;          /* a file under tests/data */
  const char *only[8];       /* compile only these top-level circuits (like circc --output) */
  SizeDefine defines[4];     /* -D */
  bool random_tensors;       /* --random-tensors */
  bool allow_unused;         /* --allow-unused-inputs */
  const char *tensor_dir;    /* --tensors */
  Fixed fixed[4];
  Range range[4];
  bool negative_ids;         /* index inputs also take negative values (Python-style wrap) */
  const char *opt;           /* C optimisation level; default -O1 to keep compile time low */
  bool native;               /* -march=native */
  uint64_t seed;             /* random tensors and inputs */
  bool count_layernorms;     /* the kernel graph must have exactly `layernorms` layernorm row steps */
  int layernorms;
} Opts;

typedef enum Status { ST_OK, ST_MISMATCH, ST_ERROR, ST_CRASH } Status;

typedef struct Report {
  Status status;
  char *msg;                 /* what went wrong (malloc'd) */
  char **bad;                /* names of the outputs that differ */
  int nbad;
} Report;

/* ------------------------------------------------------------------ helpers */

static uint64_t rng_next(uint64_t *s) {
  uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

static double rng_uniform(uint64_t *s) { return (double)(rng_next(s) >> 11) * 0x1p-53; }

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) { return remove(path); }

static void remove_tree(const char *dir) { nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS); }

/* a followed by b (malloc'd) */
static char *concat(const char *a, const char *b) {
  size_t la = strlen(a), lb = strlen(b);
  char *r = malloc(la + lb + 1);
  memcpy(r, a, la);
  memcpy(r + la, b, lb + 1);
  return r;
}

static char *read_text(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  char *buf = NULL;
  size_t len = 0;
  FILE *m = open_memstream(&buf, &len);
  int ch;
  while ((ch = fgetc(f)) != EOF) fputc(ch, m);
  fclose(m);
  fclose(f);
  return buf;
}

/* Size of the axis that gen_index / explicit_index node g indexes (§4.10). */
static int64_t indexed_len(const Node *g) {
  const GenFnSpec *s = &g->u.gf;
  const Shape *x = &g->child[0]->shape, *ix = &g->child[1]->shape;
  int axis;
  if (s->fn == GF_EXPLICIT_INDEX) axis = x->rank - s->non_b + (s->dim < 0 ? s->dim + s->non_b : s->dim);
  else if (s->batch_x && s->batch_index) axis = ix->rank + (s->dim < 0 ? s->dim + x->rank - ix->rank : s->dim);
  else axis = s->dim < 0 ? s->dim + x->rank : s->dim;
  return x->dim[axis];
}

/* A node whose values are a subset of its (first) child's: views and casts. */
static bool passes_values(const Node *n) {
  switch (n->kind) {
  case NK_Tag: case NK_SetSymbolicShape: case NK_Rearrange: return true;
  case NK_Index:
    for (int a = 0; a < n->u.index.n; a++)
      if (n->u.index.e[a].kind == IDX_TENSOR) return false;
    return true;
  case NK_GeneralFunction: return n->u.gf.fn == GF_CAST;
  default: return false;
  }
}

/* The smallest axis any index-valued GeneralFunction indexes with values of
 * symbol `sym` (directly or through views); *len stays unchanged if none. */
static void find_index_len(const Node *n, const Node *sym, bool *seen, int64_t *len) {
  if (seen[n->id]) return;
  seen[n->id] = true;
  if (n->kind == NK_GeneralFunction && (n->u.gf.fn == GF_GEN_INDEX || n->u.gf.fn == GF_EXPLICIT_INDEX)) {
    const Node *i = n->child[1];
    while (i != sym && passes_values(i)) i = i->child[0];
    if (i == sym) {
      int64_t l = indexed_len(n);
      if (*len < 0 || l < *len) *len = l;
    }
  }
  for (int k = 0; k < n->nchild; k++) find_index_len(n->child[k], sym, seen, len);
}

static void shape_coords(const Shape *s, int64_t flat, char *buf, size_t cap) {
  int64_t idx[MAX_RANK];
  for (int d = s->rank - 1; d >= 0; d--) {
    idx[d] = s->dim[d] ? flat % s->dim[d] : 0;
    flat = s->dim[d] ? flat / s->dim[d] : 0;
  }
  size_t len = (size_t)snprintf(buf, cap, "[");
  for (int d = 0; d < s->rank && len < cap; d++)
    len += (size_t)snprintf(buf + len, cap - len, "%s%lld", d ? "," : "", (long long)idx[d]);
  if (len < cap) snprintf(buf + len, cap - len, "]");
}

/* Runs argv with stdout and stderr appended to `log`; the exit status or -1. */
static int run_program(char *const *argv, const char *log) {
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, log, O_WRONLY | O_CREAT | O_APPEND, 0644);
  posix_spawn_file_actions_adddup2(&fa, 1, 2);
  pid_t pid;
  int rc = posix_spawn(&pid, argv[0], &fa, NULL, argv, environ);
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) return -1;
  int status;
  if (waitpid(pid, &status, 0) < 0) return -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
}

/* ------------------------------------------------------------------ the check (child process) */

typedef struct Child {
  Comp *c;
  FILE *rep;
  const char *dir;  /* made and removed by the parent */
} Child;

static int child_fail(Child *ch, const char *stage) {
  fprintf(ch->rep, "%s failed:\n%s", stage, tu_diags(ch->c));
  return ST_ERROR;
}

/* Compares one output of the runs (run[r]: with r + 1 threads) with each
 * other and the evaluator; true if it matches. */
static bool compare_output(Child *ch, const char *name, const Node *root, const Tensor *want, Tensor *const *run,
                           int nruns) {
  FILE *rep = ch->rep;
  for (int r = 0; r < nruns; r++) {
    if (!run[r]) {
      fprintf(rep, "output '%s': the program wrote no readable .npy\n%s@bad %s\n", name, tu_diags(ch->c), name);
      return false;
    }
    if (!shape_eq(&run[r]->shape, &root->shape)) {
      fprintf(rep, "output '%s': shape %s, expected %s\n@bad %s\n", name, shape_str(ch->c, &run[r]->shape),
              shape_str(ch->c, &root->shape), name);
      return false;
    }
  }
  const Tensor *t1 = run[0];
  bool ok = true;
  int64_t n = shape_numel(&root->shape);
  for (int r = 1; r < nruns; r++) {
    const Tensor *t2 = run[r];
    if (t1->dtype != t2->dtype || t1->nbytes != t2->nbytes || memcmp(t1->data, t2->data, t1->nbytes) != 0) {
      int64_t at = 0;
      size_t es = dtype_size(t1->dtype);
      while (at < n && t1->dtype == t2->dtype && !memcmp((char *)t1->data + at * es, (char *)t2->data + at * es, es)) at++;
      char co[128];
      shape_coords(&root->shape, at < n ? at : 0, co, sizeof co);
      fprintf(rep, "output '%s': --threads 1 and --threads %d differ, first at %s: %.9g vs %.9g\n", name, r + 1, co,
              at < n ? tensor_get_f64(t1, at) : 0.0, at < n ? tensor_get_f64(t2, at) : 0.0);
      ok = false;
    }
  }
  double maxw = 0, worst_ratio = -1, max_err = 0;
  int64_t worst = -1, nbad = 0;
  for (int64_t i = 0; i < n; i++)
    if (isfinite(tensor_get_f64(want, i))) maxw = fmax(maxw, fabs(tensor_get_f64(want, i)));
  for (int64_t i = 0; i < n; i++) {
    double g = tensor_get_f64(t1, i), w = tensor_get_f64(want, i);
    double tol = 1e-4 * fabs(w) + 1e-4 * maxw + 1e-6, err = fabs(g - w);
    bool same = (isnan(g) && isnan(w)) || g == w;
    if (!same && !isnan(err) && err > max_err) max_err = err;
    if (same || err <= tol) continue;
    nbad++;
    double ratio = isnan(err) ? INFINITY : err / tol;
    if (ratio > worst_ratio) worst_ratio = ratio, worst = i;
  }
  if (nbad) {
    char co[128];
    shape_coords(&root->shape, worst, co, sizeof co);
    double g = tensor_get_f64(t1, worst), w = tensor_get_f64(want, worst);
    fprintf(rep,
            "output '%s' %s: %lld of %lld elements differ from eval; worst at %s: got %.9g, want %.9g "
            "(|diff| %.3g, tol %.3g); max|want| %.6g, max abs err %.3g\n",
            name, shape_str(ch->c, &root->shape), (long long)nbad, (long long)n, co, g, w, fabs(g - w),
            1e-4 * fabs(w) + 1e-4 * maxw + 1e-6, maxw, max_err);
    ok = false;
  }
  if (!ok) fprintf(rep, "@bad %s\n", name);
  return ok;
}

static int diff_child(const Opts *o, FILE *rep, const char *dir) {
  Child chv = {.c = tu_comp(), .rep = rep, .dir = dir};
  Child *ch = &chv;
  Comp *c = ch->c;
  c->rng_state = o->seed ? o->seed : 24301;
  c->tensors_as_random = o->random_tensors;
  c->check_all_inputs_used = !o->allow_unused;
  if (o->tensor_dir) c->tensor_dir = o->tensor_dir;
  c->defines = (SizeDefine *)o->defines;
  while (c->ndefines < 4 && o->defines[c->ndefines].name) c->ndefines++;

  /* the pipeline users run (driver.c): up to resolve, where the evaluator takes
   * its copy of the outputs (it sees the unsimplified circuit), then on to the build */
  char *prog = arena_printf(&c->arena, "%s/prog", ch->dir);
  int nonly = 0;
  while (nonly < 8 && o->only[nonly]) nonly++;
  DriverOptions d = {.path = o->file ? tu_data(o->file) : NULL, .text = o->text, .text_len = o->text ? strlen(o->text) : 0,
                     .text_name = "test.circ", .outputs = o->only, .noutputs = nonly, .last = STAGE_RESOLVE,
                     .verify_each = true,
                     .emit = {.name = "prog", .command_line = "test_codegen"},
                     .build = {.output = prog, .opt = o->opt ? o->opt : "-O1", .native = o->native}};
#if defined(__SANITIZE_ADDRESS__)
  /* a sanitizer build of the tests checks the generated programs too */
  d.build.cflags = "-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer";
#endif
  Compilation cm = {0};
  if (!driver_run(c, &d, &cm)) return child_fail(ch, stage_name(cm.next));
  Program p = cm.program;
  int nout = p.outputs.n;
  Node **orig = calloc((size_t)nout + 1, sizeof *orig);
  memcpy(orig, p.outputs.node, sizeof *orig * (size_t)nout);
  d.last = STAGE_MEMPLAN;
  if (!driver_run(c, &d, &cm)) return child_fail(ch, stage_name(cm.next));
  Kernels k = cm.kernels;
  int nln = 0;
  for (int i = 0; i < k.nstep; i++) nln += k.step[i]->kind == STEP_LAYERNORM;
  if (o->count_layernorms && nln != o->layernorms) {
    fprintf(rep, "%d layernorm steps, want %d\n", nln, o->layernorms);
    return ST_ERROR;
  }
  d.last = STAGE_EMIT;
  if (!driver_run(c, &d, &cm)) return child_fail(ch, stage_name(cm.next));

  /* inputs: random values of each input's dtype (valid ids for index inputs), or files */
  uint64_t rs = (o->seed ? o->seed : 24301) ^ 0xc0dec0de;
  Eval *e = eval_new(c);
  char **args = calloc((size_t)(2 * (k.ninputs + nout) + 8), sizeof *args);
  int na = 0;
  args[na++] = prog;
  args[na++] = "--threads";
  int threads_arg = na++;
  bool *seen = calloc((size_t)c->next_node_id + 1, 1);
  for (int i = 0; i < k.ninputs; i++) {
    const Node *sym = k.input[i]->node;
    const char *name = k.input_name[i], *path = NULL;
    Tensor *t = NULL;
    for (int j = 0; j < 4 && o->fixed[j].name; j++)
      if (!strcmp(o->fixed[j].name, name)) path = tu_data(o->fixed[j].path);
    if (path) {
      if (!(t = npy_load(c, path, NO_LOC))) return child_fail(ch, "loading a fixed input");
    } else {
      const Range *r = NULL;
      for (int j = 0; j < 4 && o->range[j].name; j++)
        if (!strcmp(o->range[j].name, name)) r = &o->range[j];
      double lo = -RANDCIRC_INPUT_BOUND, hi = RANDCIRC_INPUT_BOUND;
      bool integral = k.input[i]->dtype == DT_I64;
      int64_t len = -1; /* an index input (of the unsimplified circuit, which eval sees) */
      memset(seen, 0, (size_t)c->next_node_id + 1);
      for (int j = 0; j < nout; j++) find_index_len(orig[j], sym, seen, &len);
      if (r) lo = r->lo, hi = r->hi, integral |= r->integral;
      else if (integral || len >= 0) {
        if (len < 0) len = 1;
        lo = o->negative_ids ? (double)-len : 0, hi = (double)len;
        integral = true;
      }
      t = tensor_new(c, k.input[i]->dtype == DT_I64 ? DT_I64 : DT_F32, &sym->shape);
      int64_t n = shape_numel(&sym->shape);
      for (int64_t j = 0; j < n; j++) {
        double v = lo + (hi - lo) * rng_uniform(&rs);
        tensor_set_f64(t, j, integral ? floor(v) : v);
      }
      path = arena_printf(&c->arena, "%s/in%d.npy", ch->dir, i);
      if (!npy_save(c, t, path)) return child_fail(ch, "writing an input");
    }
    eval_bind(e, sym, t);
    args[na++] = "--input";
    args[na++] = arena_printf(&c->arena, "%s=@%s", name, path);
  }
  free(seen);
  Tensor **want = calloc((size_t)nout + 1, sizeof *want);
  for (int j = 0; j < nout; j++)
    if (!(want[j] = eval_node(e, orig[j]))) return child_fail(ch, "eval");
  int first_out = na;
  for (int j = 0; j < nout; j++) args[na++] = "--output", args[na++] = NULL;

  /* run with 1, 2 and 3 threads */
  Tensor **got[3];
  const char *log = arena_printf(&c->arena, "%s/run.log", ch->dir);
  for (int r = 0; r < 3; r++) {
    args[threads_arg] = arena_printf(&c->arena, "%d", r + 1);
    for (int j = 0; j < nout; j++)
      args[first_out + 2 * j + 1] = arena_printf(&c->arena, "%s=@%s/out%d_%d.npy", k.output_name[j], ch->dir, r, j);
    int code = run_program(args, log);
    if (code != 0) {
      char *text = read_text(log);
      fprintf(rep, "the program (--threads %d) exited with status %d:\n%s\n", r + 1, code, text ? text : "");
      free(text);
      return ST_ERROR;
    }
    got[r] = calloc((size_t)nout + 1, sizeof *got[r]);
    for (int j = 0; j < nout; j++)
      got[r][j] = npy_load(c, arena_printf(&c->arena, "%s/out%d_%d.npy", ch->dir, r, j), NO_LOC);
  }
  int bad = 0;
  for (int j = 0; j < nout; j++) {
    Tensor *run[3] = {got[0][j], got[1][j], got[2][j]};
    bad += !compare_output(ch, k.output_name[j], orig[j], want[j], run, 3);
  }
  eval_free(e);
  return bad ? ST_MISMATCH : ST_OK;
}

/* Runs the check in a child process and collects its report. */
static Report diff_check(const Opts *o) {
  Report r = {0};
  int fds[2];
  char dir[] = "/tmp/circc-cg-XXXXXX"; /* every file of the check lives here */
  cr_assert(mkdtemp(dir));
  cr_assert(pipe(fds) == 0);
  fflush(stdout), fflush(stderr);
  pid_t pid = fork();
  cr_assert(pid >= 0);
  if (pid == 0) {
    close(fds[0]);
    dup2(fds[1], 2); /* an ICE's message goes into the report too */
    FILE *rep = fdopen(fds[1], "w");
    setvbuf(rep, NULL, _IONBF, 0);
    int code = diff_child(o, rep, dir);
    fflush(rep);
    _exit(code);
  }
  close(fds[1]);
  char *buf = NULL;
  size_t len = 0;
  FILE *m = open_memstream(&buf, &len);
  char chunk[4096];
  ssize_t got;
  while ((got = read(fds[0], chunk, sizeof chunk)) > 0) fwrite(chunk, 1, (size_t)got, m);
  close(fds[0]);
  int status;
  waitpid(pid, &status, 0);
  if (getenv("CIRCC_KEEP_TEMPS")) fprintf(m, "(files kept in %s)\n", dir);
  else remove_tree(dir);
  if (WIFEXITED(status) && WEXITSTATUS(status) <= ST_ERROR) r.status = (Status)WEXITSTATUS(status);
  else {
    r.status = ST_CRASH;
    if (WIFSIGNALED(status)) fprintf(m, "(the check crashed with signal %d)\n", WTERMSIG(status));
    else fprintf(m, "(the check exited with status %d)\n", WEXITSTATUS(status));
  }
  fclose(m);
  r.msg = buf;
  for (char *line = buf; line && *line;) {
    char *end = strchr(line, '\n');
    if (!strncmp(line, "@bad ", 5)) {
      r.bad = realloc(r.bad, sizeof *r.bad * (size_t)(r.nbad + 1));
      r.bad[r.nbad++] = strndup(line + 5, end ? (size_t)(end - line - 5) : strlen(line + 5));
    }
    line = end ? end + 1 : NULL;
  }
  return r;
}

static void report_free(Report *r) {
  for (int i = 0; i < r->nbad; i++) free(r->bad[i]);
  free(r->bad);
  free(r->msg);
}

static void expect_match(const Opts *o) {
  Report r = diff_check(o);
  Status st = r.status;
  cr_assert_eq(st, ST_OK, "compiled program differs from eval (status %d):\n%s", st, r.msg);
  report_free(&r);
}

#define DIFF(...) expect_match(&(Opts){__VA_ARGS__})


/* ------------------------------------------------------------------ §9 examples */

Test(codegen, spec_e1_sharing_scatter_concat) { DIFF(.file = "circ/e1_sharing.circ"); }

/* E2 with a store made here: an int8 Array added to itself, and a tensor index
 * (the printed form `t<10 hex> [6]`) into a Scalar and into an input. */
Test(codegen, spec_e2_array_hash_and_tensor_index) {
  char store[] = "/tmp/circc-cg-store-XXXXXX";
  cr_assert(mkdtemp(store));
  Comp *c = tu_comp();
  c->tensor_dir = store;
  Shape s5 = {1, {5}}, s6 = {1, {6}}, s4 = {1, {4}};
  Tensor *i8 = tensor_new(c, DT_I8, &s5), *ix = tensor_new(c, DT_I64, &s6), *iy = tensor_new(c, DT_I64, &s4);
  const double v8[] = {1, -2, 3, 100, -128}, vx[] = {0, 9, 3, 3, -1, 5}, vy[] = {2, 0, -3, 1};
  for (int i = 0; i < 5; i++) tensor_set_f64(i8, i, v8[i]);
  for (int i = 0; i < 6; i++) tensor_set_f64(ix, i, vx[i]);
  for (int i = 0; i < 4; i++) tensor_set_f64(iy, i, vy[i]);
  const char *h8 = store_write(c, i8), *hx = store_write(c, ix), *hy = store_write(c, iy);
  cr_assert(h8 && hx && hy, "%s", tu_diags(c));
  char text[2048];
  snprintf(text, sizeof text,
           "0 Add # int8\n"
           "  1 [5] Array %.24s # int8\n"
           "  1 Array # int8\n"
           "2 [6] Index [t%.10s [6],0]\n"
           "  3 [10,10] Scalar 1\n"
           "'outer' [6,3,4] Index [t%.10s [6],:,t%.10s [4]]\n"
           "  'x' [10,3,5] Symbol\n"
           "'one_axis' [2,4] Index [1:3,t%.10s [4]]\n"
           "  'y' [5,6] Symbol\n"
           "'of_view' [4,5] Index [t%.10s [4]]\n"
           "  'yt' Rearrange a b -> b a\n"
           "    'y'\n",
           h8, hx, hx, hy, hy, hy);
  DIFF(.text = text, .tensor_dir = store);
  tu_free(c);
  remove_tree(store);
}

Test(codegen, spec_e3_cumulant_of_scalar_and_tag) {
  DIFF(.text = "0 Cumulant\n"
               "  1 [2, 3, 3] Scalar 1.0\n"
               "  3 Tag 1a280c74-fa9f-4dd9-94f4-5cca4a0cf243\n"
               "    2 [3, 3, 3] Scalar 1.2\n"
               "'one' Cumulant\n"
               "  3\n");
}

Test(codegen, spec_e4_nested_modules) { DIFF(.file = "circ/e4_modules.circ", .random_tensors = true); }
Test(codegen, spec_e5_lexical_scoping) { DIFF(.file = "circ/e5_scoping.circ"); }
Test(codegen, spec_e6_unused_module_input) { DIFF(.file = "circ/e6_inline_symbol.circ", .allow_unused = true); }
Test(codegen, spec_e7_every_node_info_format) { DIFF(.file = "circ/e7_formats.circ", .random_tensors = true); }

Test(codegen, spec_e8_layernorm_bound_by_define) {
  DIFF(.file = "circ/e8_layernorm.circ", .defines = {{"HIDDEN", 7}}, .count_layernorms = true, .layernorms = 2);
}

/* E8 bound by a module call that batches it over [3,4] */
Test(codegen, spec_e8_layernorm_bound_by_module) {
  char *text = read_text(tu_data("circ/e8_layernorm.circ"));
  cr_assert(text);
  char *full = concat(text,
                      "\n'ln_call' Module\n"
                      "  'ln'\n"
                      "  'xs' [3,4,6] Symbol ! 'ln.input'\n"
                      "  'scale' [6] Array rand ! 'ln.w.scale'\n"
                      "  'bias' [6] Symbol ! 'ln.w.bias'\n");
  DIFF(.text = full, .only = {"ln_call"}, .count_layernorms = true, .layernorms = 1);
  free(full);
  free(text);
}

Test(codegen, spec_e9_log_likelihood) {
  DIFF(.file = "circ/e9_loglik.circ", .defines = {{"LOG_LIKELYHOOD_CLASSES", 11}});
}

/* E9 batched by a module: log-probs [3,4,7], labels [3,4] */
Test(codegen, spec_e9_log_likelihood_batched) {
  char *text = read_text(tu_data("circ/e9_loglik.circ"));
  cr_assert(text);
  char *full = concat(text,
                      "\n'nll_b' Module\n"
                      "  'nll'\n"
                      "  'logits' [3,4,7] Symbol ! 'll.input'\n"
                      "  'labels' [3,4] Symbol ! 'll.label'\n");
  DIFF(.text = full, .only = {"nll_b"}, .range = {{"labels", 0, 7, true}});
  free(full);
  free(text);
}

Test(codegen, spec_e10_rearrange_corner_cases) { DIFF(.file = "circ/e10_rearrange.circ"); }

Test(codegen, gpt2_block_module) {
  /* the attention's layernorm folds into constants (its input is an Array) */
  DIFF(.file = "circ/gpt2_block_module.circ", .only = {"b0"}, .fixed = {{"t.mask", "circ/causal_mask5.npy"}},
       .count_layernorms = true, .layernorms = 1);
}

/* ------------------------------------------------------------------ fused attention (idiom_attention.c) */

enum { ATT_CAUSAL, ATT_RANDOM, ATT_EMPTY_ROW, ATT_NEGATIVE };

/* A store with the constant mask M [T,T] (1 = keep) of `kind` and the bias
 * (1 - M)·(-10000); their hash prefixes go to mh, bh. ATT_NEGATIVE keeps
 * k < q with bias -10050 there, so the masked keys dominate every row and all
 * rows fall back to all keys (the result is the mean of V over k >= q). */
static void attention_store(char *store, int kind, int64_t T, char mh[32], char bh[32]) {
  cr_assert(mkdtemp(store));
  Comp *c = tu_comp();
  c->tensor_dir = store;
  Shape s = {2, {T, T}};
  Tensor *m = tensor_new(c, DT_F32, &s), *b = tensor_new(c, DT_F32, &s);
  for (int64_t q = 0; q < T; q++)
    for (int64_t k = 0; k < T; k++) {
      bool keep = k <= q;
      if (kind == ATT_RANDOM) keep = (q * 5 + k * 3) % 7 != 0 && k <= q + 9;
      if (kind == ATT_EMPTY_ROW && q == 4) keep = false;
      if (kind == ATT_NEGATIVE) keep = k < q;
      tensor_set_f64(m, q * T + k, keep);
      tensor_set_f64(b, q * T + k, keep ? (kind == ATT_NEGATIVE ? -10050 : 0) : -10000);
    }
  const char *hm = store_write(c, m), *hb = store_write(c, b);
  cr_assert(hm && hb, "%s", tu_diags(c));
  snprintf(mh, 32, "%.24s", hm);
  snprintf(bh, 32, "%.24s", hb);
  tu_free(c);
}

/* GPT-2's attention (module form after substitution): scores, constant mask
 * and bias, softmax, the value einsum fused with the output projection. */
static void attention_case(int kind, int64_t T) {
  char store[] = "/tmp/circc-cg-store-XXXXXX", mh[32], bh[32], text[2048];
  attention_store(store, kind, T, mh, bh);
  snprintf(text, sizeof text,
           "'a' Einsum abc,acd,aed->be\n"
           "  'probs' GeneralFunction softmax\n"
           "    'scores' Add\n"
           "      'raw' Einsum rqc,rkc,,qk->rqk\n"
           "        'q' [3,%lld,5] Symbol\n"
           "        'k' [3,%lld,5] Symbol\n"
           "        'scale' [] Scalar 0.4472135955\n"
           "        'mask' [%lld,%lld] Array %s\n"
           "      'bias' [%lld,%lld] Array %s\n"
           "  'v' [3,%lld,4] Symbol\n"
           "  'wo' [3,6,4] Symbol\n",
           (long long)T, (long long)T, (long long)T, (long long)T, mh, (long long)T, (long long)T, bh, (long long)T);
  DIFF(.text = text, .tensor_dir = store);
  remove_tree(store);
}

Test(codegen, attention_causal_constant_mask) { attention_case(ATT_CAUSAL, 70); }
Test(codegen, attention_arbitrary_constant_mask) { attention_case(ATT_RANDOM, 37); }
Test(codegen, attention_fully_masked_row) { attention_case(ATT_EMPTY_ROW, 9); }
Test(codegen, attention_very_negative_scores_fall_back) { attention_case(ATT_NEGATIVE, 66); }

/* Batch and head axes, keys before queries in the score einsum, the output in
 * another axis order, a mask given as a product with a scalar, a mask and a
 * bias that are inputs (computed F and B, random values), and forms that
 * must not fuse (no mask, probabilities used twice). */
Test(codegen, attention_batched_heads_and_other_forms) {
  char store[] = "/tmp/circc-cg-store-XXXXXX", mh[32], bh[32], text[4096];
  attention_store(store, ATT_CAUSAL, 67, mh, bh);
  snprintf(text, sizeof text,
           "'batched' Einsum bhqk,bhkd->qbhd\n"
           "  'p' GeneralFunction softmax\n"
           "    'sc' Add\n"
           "      'bias' [67,67] Array %s\n"
           "      'r' Einsum bhkc,bhqc,qk,->bhqk\n"
           "        'k' [2,3,67,16] Symbol\n"
           "        'q' [2,3,67,16] Symbol\n"
           "        'mask' [67,67] Array %s\n"
           "        'scale' [] Scalar 0.25\n"
           "  'v' [2,3,67,8] Symbol\n"
           "'no_mask' Einsum qk,kd->qd\n"
           "  'p2' GeneralFunction softmax\n"
           "    'r2' Einsum qc,kc->qk\n"
           "      'q2' [20,7] Symbol\n"
           "      'k2' [31,7] Symbol\n"
           "  'v2' [31,5] Symbol\n"
           "'shared_probs' Einsum qk,kd->qd\n"
           "  'p3' GeneralFunction softmax\n"
           "    'r3' Einsum qc,kc->qk\n"
           "      'q2'\n"
           "      'k2'\n"
           "  'v2'\n"
           "'p3_out' Einsum qk->qk\n"
           "  'p3'\n"
           "'input_mask' Einsum qk,kd->qd\n"
           "  'p4' GeneralFunction softmax\n"
           "    's4' Add\n"
           "      'r4' Einsum qc,kc,qk->qk\n"
           "        'q2'\n"
           "        'k2'\n"
           "        'm' [20,31] Symbol\n"
           "      'b' [20,31] Symbol\n"
           "  'v2'\n",
           bh, mh);
  DIFF(.text = text, .tensor_dir = store);
  remove_tree(store);
}

/* Masks computed at run time: GPT-2's causal mask from a `positions` input
 * (random positions: arbitrary masked tails, several query blocks), the same
 * with kept scores far below the masked ones (every row falls back to all
 * keys), and the bias alone (no factor: nothing is skipped). */
Test(codegen, attention_run_time_masks) {
  DIFF(.range = {{"positions", 0, 70, true}},
       .text = "'causal' Einsum hqk,hkd->qhd\n"
               "  'p' GeneralFunction softmax\n"
               "    's' Add\n"
               "      'y' Einsum hqk,,qk->hqk\n"
               "        'r' Einsum hqc,hkc->hqk\n"
               "          'q' [3,70,5] Symbol\n"
               "          'k' [3,70,5] Symbol\n"
               "        'scale' [] Scalar 0.4472135955\n"
               "        'mask' GeneralFunction step\n"
               "          'diff' Add\n"
               "            'pq' Rearrange q -> q 1\n"
               "              'positions' [70] Symbol\n"
               "            'nk' Einsum k,->k\n"
               "              'positions'\n"
               "              'neg' [] Scalar -1\n"
               "            'half' [] Scalar 0.5\n"
               "      'bias' Einsum qk,->qk\n"
               "        'not' Add\n"
               "          'one' [] Scalar 1\n"
               "          'negm' Einsum qk,->qk\n"
               "            'mask'\n"
               "            'neg'\n"
               "        'big' [] Scalar -10000\n"
               "  'v' [3,70,4] Symbol\n"
               "'fallback' Einsum hqk,hkd->qhd\n"
               "  'p2' GeneralFunction softmax\n"
               "    's2' Add\n"
               "      'y2' Einsum hqk,,qk->hqk\n"
               "        'r2' Einsum hqc,hkc->hqk\n"
               "          'q2' [3,70,5] Symbol\n"
               "          'k2' [3,70,5] Symbol\n"
               "        'scale'\n"
               "        'mask'\n"
               "      'bias'\n"
               "      'kept_low' Einsum qk,->qk\n"
               "        'mask'\n"
               "        'low' [] Scalar -10050\n"
               "  'v'\n"
               "'bias_only' Einsum hqk,hkd->qhd\n"
               "  'p3' GeneralFunction softmax\n"
               "    's3' Add\n"
               "      'r3' Einsum hqc,hkc->hqk\n"
               "        'q3' [3,70,5] Symbol\n"
               "        'k3' [3,70,5] Symbol\n"
               "      'bias'\n"
               "  'v'\n");
}

/* ------------------------------------------------------------------ focused: Einsum */

Test(codegen, einsum_matmul_batched_transpose) {
  DIFF(.text = "'mm' Einsum ij,jk->ik\n"
               "  'x' [5,7] Symbol\n"
               "  'y' [7,3] Symbol\n"
               "'bmm' Einsum bij,bjk->bik\n"
               "  'p' [2,3,4] Symbol\n"
               "  'q' [2,4,5] Symbol\n"
               "'tr' Einsum abc->cab\n"
               "  'p'\n"
               "'outer' Einsum a,b->ab\n"
               "  'v' [4] Symbol\n"
               "  'w' [6] Symbol\n"
               "'mv' Einsum ij,j->i\n"
               "  'x'\n"
               "  'u' [7] Symbol\n"
               "'mmT' Einsum ij,kj->ki\n"
               "  'x'\n"
               "  'z' [3,7] Symbol\n"
               "'sum_all' Einsum bij->\n"
               "  'p'\n"
               "'sum_mid' Einsum bij->bj\n"
               "  'p'\n"
               "'batch_outer' Einsum bi,bj->bji\n"
               "  'x'\n"
               "  'x'\n"
               "'mm_of_views' Einsum ij,jk->ki\n"
               "  'xs' Index [1:4, 2:]\n"
               "    'x'\n"
               "  'yt' Rearrange a b -> b a\n"
               "    'z2' [3,5] Symbol\n");
}

/* Few-row products against a B that is not a weight, with at least 8 batch
 * indices (a decode step's attention values): a unit is a whole batch index
 * (emit.c, all N columns at once), here with N = 64 and 70, 1 and 2 rows. */
Test(codegen, einsum_few_rows_whole_batch_units) {
  DIFF(.text = "'pv' Einsum hk,hkv->hv\n"
               "  'p' [10,40] Symbol\n"
               "  'v' [10,40,64] Symbol\n"
               "'pv2' Einsum hmk,hkv->hmv\n"
               "  'p2' [9,2,33] Symbol\n"
               "  'v2' [9,33,70] Symbol\n");
}

/* Contractions that need a relayout to become one GEMM (lower_gemm.c gemm_layouts):
 * summed ids that merge in neither operand (an attention output projection),
 * weights used transposed, outputs whose N ids only merge in another layout. */
Test(codegen, einsum_gemm_relayouts) {
  DIFF(.random_tensors = true,
       .text = "'out_proj_weight' Einsum htd,hod->to\n"
               "  'z' [3,9,8] Symbol\n"
               "  'wo' [3,20,8] Array rand\n"
               "'out_proj_symbols' Einsum htd,hod->to\n"
               "  'z'\n"
               "  'wo_in' [3,20,8] Symbol\n"
               "'transposed_weight' Einsum td,od->to\n"
               "  'x' [16,16] Symbol\n"
               "  'w' [20,16] Array rand\n"
               "'heads_out' Einsum td,hcd->htc\n"
               "  'x'\n"
               "  'wq' [4,10,16] Array rand\n"
               "'f16_like_slice' Einsum td,od->ot\n"
               "  'x'\n"
               "  'ws' Index [2:18, :]\n"
               "    'w2' [24,16] Array rand\n");
}

/* One-row contractions (decode steps) run as circc_gemv_f32: weights stored by
 * columns, and a run-time 0/1 mask over the keys (random here) lets the
 * scores skip masked keys and the value product skip their zero
 * probabilities (with -march=native: the SIMD paths); a mask that is also a
 * plain value; an all-zero constant mask. */
Test(codegen, decode_one_row_products) {
  DIFF(.random_tensors = true, .range = {{"kv_mask", 0, 2, true}}, .native = true,
       .text = "'proj' Einsum sd,do->so\n"
               "  'x' [1,256] Symbol\n"
               "  'w' [256,300] Array rand\n"
               "'attn' Einsum hk,hkv->hv\n"
               "  'probs' GeneralFunction softmax\n"
               "    'scores' Add\n"
               "      'raw' Einsum hc,hkc,,k->hk\n"
               "        'q' [4,64] Symbol\n"
               "        'past_k' [4,300,64] Symbol\n"
               "        'scale' [] Scalar 0.125\n"
               "        'kv_mask' [300] Symbol\n"
               "      'bias' Einsum k,->k\n"
               "        'not_mask' Add\n"
               "          'one' [] Scalar 1\n"
               "          'neg_mask' Einsum k,->k\n"
               "            'kv_mask'\n"
               "            'neg_one' [] Scalar -1\n"
               "        'big' [] Scalar -10000\n"
               "  'past_v' [4,300,64] Symbol\n"
               "'masked_sum' Einsum k->\n"
               "  'kv_mask'\n"
               "'all_masked' Einsum hc,hkc,k->hk\n"
               "  'q'\n"
               "  'past_k'\n"
               "  'zeros' [300] Scalar 0\n"
               "'heads' Add\n" /* epilogues of one-row GEMMs: bias into another layout, gelu, residual */
               "  'hq' Einsum sd,hcd->hsc\n"
               "    'x'\n"
               "    'wq' [4,24,256] Array rand\n"
               "  'bq' [4,1,24] Array rand\n"
               "'mlp_out' Add\n"
               "  'down' Einsum sh,oh->so\n"
               "    'act' GeneralFunction gelu_new\n"
               "      'pre' Add\n"
               "        'up' Einsum sd,hd->sh\n"
               "          'x'\n"
               "          'w_in' [1000,256] Array rand\n"
               "        'b_in' [1000] Array rand\n"
               "    'w_out' [256,1000] Array rand\n"
               "  'x'\n");
}

/* GEMM epilogues (fuse.c fuse_epilogues): bias and activation, a residual
 * into an output, an output written in another layout (N split over two of
 * its axes), a batched GEMM (also over two batch dims and two row blocks),
 * an epilogue reading an earlier GEMM's result, and a GEMM whose result is
 * an output itself (no epilogue); with the SIMD paths and across the OpenMP
 * threshold. */
Test(codegen, gemm_epilogues) {
  DIFF(.random_tensors = true, .native = true,
       .text = "'mlp_out' Add\n"
               "  'down' Einsum sh,oh->so\n"
               "    'act' GeneralFunction gelu\n"
               "      'pre' Add\n"
               "        'up' Einsum si,hi->sh\n"
               "          'x' [70,64] Symbol\n"
               "          'w_in' [200,64] Array rand\n"
               "        'b_in' [200] Array rand\n"
               "    'w_out' [64,200] Array rand\n"
               "  'x'\n"
               "'heads' Add\n"
               "  'q' Einsum sd,hcd->hsc\n"
               "    'x'\n"
               "    'wq' [4,24,64] Array rand\n"
               "  'bq' [4,1,24] Array rand\n"
               "'batched' GeneralFunction tanh\n"
               "  'bmm' Einsum bij,bjk->bik\n"
               "    'p' [3,50,40] Symbol\n"
               "    'r' [3,40,60] Symbol\n"
               "'chained' Einsum sh,sh->sh\n"
               "  'up2' Einsum si,hi->sh\n"
               "    'x'\n"
               "    'w2' [200,64] Array rand\n"
               "  'act'\n"
               "'plain' Einsum si,hi->sh\n"
               "  'x'\n"
               "  'w3' [90,64] Array rand\n"
               "'two_batch_dims' GeneralFunction relu\n" /* work units over 2 batch dims and 2 row blocks */
               "  'bmm2' Einsum abij,abjk->abik\n"
               "    'p2' [2,3,300,20] Symbol\n"
               "    'r2' [2,3,20,50] Symbol\n");
}

/* Steps that do not depend on each other share a phase (schedule.c): two
 * GEMMs of one input, the two column halves of 'cols' written into one
 * output at the same time, a serial softmax then exp (one thread, in order)
 * next to another serial row step; the halves of 'cat' the next phase. */
Test(codegen, independent_branches) {
  DIFF(.random_tensors = true,
       .text = "'cat' Concat 0\n"
               "  'ga' GeneralFunction tanh\n"
               "    'pa' Einsum ij,jk->ik\n"
               "      'x' [600,64] Symbol\n"
               "      'wa' [64,200] Array rand\n"
               "  'gb' GeneralFunction sigmoid\n"
               "    'pb' Einsum ij,jk->ik\n"
               "      'x'\n"
               "      'wb' [64,200] Array rand\n"
               "'cols' Concat 1\n"
               "  'e1' GeneralFunction exp\n"
               "    'x'\n"
               "  'e2' GeneralFunction tanh\n"
               "    'x'\n"
               "'chain' Add\n"
               "  'smc' GeneralFunction exp\n"
               "    'small' GeneralFunction softmax\n"
               "      'u' [3,5] Symbol\n"
               "  'u'\n"
               "'other' GeneralFunction log_softmax\n"
               "  'v' [4,7] Symbol\n");
}

Test(codegen, einsum_diagonals_and_traces) {
  DIFF(.text = "'trace' Einsum aa->\n"
               "  'sq' [4,4] Symbol\n"
               "'diag' Einsum aa->a\n"
               "  'sq'\n"
               "'diag_inner' Einsum abca->bc\n"
               "  'd4' [3,2,5,3] Symbol\n"
               "'diag_prod' Einsum ab,bb->ab\n"
               "  'x2' [3,4] Symbol\n"
               "  'sq'\n"
               "'diag3' Einsum aab->ba\n"
               "  't3' [3,3,2] Symbol\n"
               "'outdiag' Einsum a->aa\n"
               "  'v' [4] Symbol\n"
               "'outdiag2' Einsum ab,bc->aa\n"
               "  'sq'\n"
               "  'r' [4,2] Symbol\n"
               "'outdiag3' Einsum ab->aba\n"
               "  'x2'\n"
               "'diag_to_diag' Einsum aa->aa\n"
               "  'sq'\n");
}

Test(codegen, einsum_rank0_operands) {
  DIFF(.text = "'scaled' Einsum h,->h\n"
               "  'v' [5] Symbol\n"
               "  's' [] Symbol\n"
               "'dot' Einsum h,h->\n"
               "  'v'\n"
               "  'v'\n"
               "'ss' Einsum ,->\n"
               "  's'\n"
               "  'c2' [] Scalar 2.5\n"
               "'empty' Einsum ->\n"
               "'one_rank0' Einsum ->\n"
               "  's'\n"
               "'sum' Einsum h->\n"
               "  'v'\n"
               "'const' Einsum h,->h\n"
               "  'cv' [5] Scalar 3\n"
               "  'c2'\n"
               "'outer_scalar' Einsum ,h->h\n"
               "  's'\n"
               "  'v'\n");
}

Test(codegen, einsum_attention_and_4_operands) {
  DIFF(.text = "'scores' Einsum qc,kc,,qk->qk\n"
               "  'q' [5,4] Symbol\n"
               "  'k' [6,4] Symbol\n"
               "  'scale' [] Scalar 0.5\n"
               "  'mask' [5,6] Symbol\n"
               "'attn' Einsum qk,kv->qv\n"
               "  'probs' GeneralFunction softmax\n"
               "    'scores'\n"
               "  'v' [6,3] Symbol\n"
               "'heads' Einsum hqc,hkc,,qk->hqk\n"
               "  'hq' [2,5,4] Symbol\n"
               "  'hk' [2,6,4] Symbol\n"
               "  'scale'\n"
               "  'mask'\n"
               "'ring' Einsum ab,bc,cd,da->\n"
               "  'A' [3,4] Symbol\n"
               "  'B' [4,2] Symbol\n"
               "  'C' [2,5] Symbol\n"
               "  'D' [5,3] Symbol\n"
               "'chain' Einsum ab,bc,cd,de->ea\n"
               "  'A'\n"
               "  'B'\n"
               "  'C'\n"
               "  'E' [5,6] Symbol\n"
               "'bilinear' Einsum h,h,oh->o\n"
               "  'h1' [4] Symbol\n"
               "  'h2' [4] Symbol\n"
               "  'W' [3,4] Symbol\n");
}

/* ------------------------------------------------------------------ focused: Add, Rearrange, Index, Scatter, Concat */

Test(codegen, add_broadcasting) {
  DIFF(.text = "'b1' Add\n"
               "  'x' [3,1,5] Symbol\n"
               "  'y' [4,1] Symbol\n"
               "  's' [] Symbol\n"
               "  'z' [5] Symbol\n"
               "'b2' Add\n"
               "  'x'\n"
               "  'half' [1,1,1] Scalar 0.5\n"
               "'b3' Add\n"
               "'b4' Add\n"
               "  'y'\n"
               "'b5' Add\n"
               "  'x'\n"
               "  'x'\n"
               "'b6' Add\n"
               "  'y'\n"
               "  'yt' Einsum ab->ba\n"
               "    'y'\n"
               "'b7' Add\n"
               "  'xv' Rearrange a b c -> c a b\n"
               "    'x'\n"
               "  'col' [5,1,1] Scalar -2\n");
}

Test(codegen, rearrange_views) {
  DIFF(.text = "'perm' Rearrange a b c -> c a b\n"
               "  'x' [2,3,4] Symbol\n"
               "'split' Rearrange (a:2 b) c -> a b c\n"
               "  'x2' [6,5] Symbol\n"
               "'merge' Rearrange a b c -> (a b) c\n"
               "  'x'\n"
               "'merge_all' Rearrange a b c -> (a b c)\n"
               "  'x'\n"
               "'unit' Rearrange a b -> a () b\n"
               "  'x2'\n"
               "'drop_unit' Rearrange a () b -> a b\n"
               "  'x3' [2,1,3] Symbol\n"
               "'perm_then_use' Einsum ab,bc->ac\n"
               "  'xt' Rearrange a b -> b a\n"
               "    'x2'\n"
               "  'w' [6,2] Symbol\n"
               "'split_last' Rearrange a (b c:2) -> a b c\n"
               "  'x4' [3,8] Symbol\n");
}

Test(codegen, rearrange_copies_and_repeats) {
  DIFF(.text = "'nc_merge' Rearrange a b c -> (c a) b\n"
               "  'x' [2,3,4] Symbol\n"
               "'nc_merge2' Rearrange a b c -> b (c a)\n"
               "  'x'\n"
               "'repeat' Rearrange a b -> a 3 b\n"
               "  'y' [2,5] Symbol\n"
               "'repeat_in' Rearrange a -> (a 2)\n"
               "  'v' [3] Symbol\n"
               "'repeat_front' Rearrange a -> (2 a)\n"
               "  'v'\n"
               "'e10_like' Rearrange () a -> 4 (a 2)\n"
               "  'u' [1,2] Symbol\n"
               "'split_perm' Rearrange (a:2 b) c -> c b a\n"
               "  'x2' [6,5] Symbol\n"
               "'split_merge' Rearrange (a:3 b) c -> (b c) a\n"
               "  'x2'\n"
               "'repeat_then_sum' Einsum abc->b\n"
               "  'rep' Rearrange a b -> a b 4\n"
               "    'y'\n"
               "'softmax_of_copy' GeneralFunction softmax\n"
               "  'nc_merge'\n"
               "'merge_of_slice' Rearrange a b -> (a b)\n"
               "  'sl' Index [:, 1:4]\n"
               "    'y'\n"
               "'view_of_view' Rearrange a b c -> (b a) c\n"
               "  'pv' Rearrange a b c -> c b a\n"
               "    'x'\n");
}

Test(codegen, index_slices_ints_negative) {
  DIFF(.text = "'sl' Index [1:3, :, -2:]\n"
               "  'x' [4,3,5] Symbol\n"
               "'ints' Index [0, 2]\n"
               "  'x'\n"
               "'neg' Index [-1, -3:-1, 1]\n"
               "  'x'\n"
               "'omitted' Index [2:]\n"
               "  'x'\n"
               "'nested' Index [1]\n"
               "  'inner' Index [:, 1:]\n"
               "    'x'\n"
               "'unit' Index [0:1, 0:1]\n"
               "  'x'\n"
               "'idx_einsum' Einsum ab,b->a\n"
               "  'sl2' Index [:, 1:4]\n"
               "    'y' [3,6] Symbol\n"
               "  'w' [3] Symbol\n"
               "'scalar_pick' Index [1, 2, 3]\n"
               "  'x'\n"
               "'of_transpose' Index [1:3, -1]\n"
               "  'yt' Rearrange a b -> b a\n"
               "    'y'\n"
               "'of_computed' Index [:, 0]\n"
               "  'th' GeneralFunction tanh\n"
               "    'y'\n");
}

Test(codegen, scatter) {
  DIFF(.text = "'sc' [5,6] Scatter [1:3,2:5]\n"
               "  'x' [2,3] Symbol\n"
               "'sc2' [4,3] Scatter [1:3,0:3]\n"
               "  'sm' GeneralFunction tanh\n"
               "    'y' [2,3] Symbol\n"
               "'sc_full' [2,3] Scatter [0:2,0:3]\n"
               "  'x'\n"
               "'sc_add' Add\n"
               "  'sc'\n"
               "  'z' [5,6] Symbol\n"
               "'sc_view' [3,4,2] Scatter [0:3,1:3,0:2]\n"
               "  'pv' Rearrange a b c -> c b a\n"
               "    'p' [2,2,3] Symbol\n");
}

Test(codegen, concat) {
  DIFF(.text = "'c0' Concat 0\n"
               "  'x' [2,3] Symbol\n"
               "  'y' [4,3] Symbol\n"
               "'c1' Concat -1\n"
               "  'x'\n"
               "  'z' [2,1] Symbol\n"
               "  'x'\n"
               "'cmid' Concat 1\n"
               "  'p' [2,3,4] Symbol\n"
               "  'q' [2,2,4] Symbol\n"
               "'cview' Concat 0\n"
               "  'xt' Rearrange a b -> b a\n"
               "    'x'\n"
               "  'w' [1,2] Symbol\n"
               "'cconst' Concat 0\n"
               "  'x'\n"
               "  'k' [1,3] Scalar 7\n"
               "'cfused' Concat 1\n"
               "  'e1' GeneralFunction exp\n"
               "    'x'\n"
               "  'e2' Add\n"
               "    'x'\n"
               "    'z'\n"
               "'cone' Concat 0\n"
               "  'x'\n");
}

/* ------------------------------------------------------------------ focused: GeneralFunctions */

Test(codegen, elementwise_every_function) {
  DIFF(.text = "'f.sin' GeneralFunction sin\n"
               "  'x' [3,4] Symbol\n"
               "'f.cos' GeneralFunction cos\n"
               "  'x'\n"
               "'f.sigmoid' GeneralFunction sigmoid\n"
               "  'x'\n"
               "'f.tanh' GeneralFunction tanh\n"
               "  'x'\n"
               "'f.gelu' GeneralFunction gelu\n"
               "  'x'\n"
               "'f.gelu_new' GeneralFunction gelu_new\n"
               "  'x'\n"
               "'f.relu' GeneralFunction relu\n"
               "  'x'\n"
               "'f.step' GeneralFunction step\n"
               "  'x'\n"
               "'f.abs' GeneralFunction abs\n"
               "  'x'\n"
               "'f.exp' GeneralFunction exp\n"
               "  'x'\n"
               "'f.gaussian_pdf' GeneralFunction gaussian_pdf\n"
               "  'x'\n"
               "'f.gaussian_cdf' GeneralFunction gaussian_cdf\n"
               "  'x'\n"
               "'f.log_exp_p_1' GeneralFunction log_exp_p_1\n"
               "  'x'\n"
               "'f.log_exp_p_1_big' GeneralFunction log_exp_p_1\n"
               "  'big' Einsum ab,->ab\n"
               "    'x'\n"
               "    'thirty' [] Scalar 30\n"
               "'f.rsqrt' GeneralFunction rsqrt\n"
               "  'pos' Add\n"
               "    'f.abs'\n"
               "    'half' [] Scalar 0.5\n"
               "'f.reciprocal' GeneralFunction reciprocal\n"
               "  'pos'\n"
               "'f.log' GeneralFunction log\n"
               "  'pos'\n"
               "'f.logit' GeneralFunction logit\n"
               "  'f.sigmoid'\n"
               "'f.chain' GeneralFunction gelu_new\n"
               "  'f.chain2' GeneralFunction sin\n"
               "    'f.chain3' GeneralFunction sigmoid\n"
               "      'xt' Rearrange a b -> b a\n"
               "        'x'\n"
               "'f.const' GeneralFunction exp\n"
               "  'c' [2] Scalar 0.5\n");
}

Test(codegen, row_functions_on_strided_inputs) {
  DIFF(.text = "'sm' GeneralFunction softmax\n"
               "  'xt' Rearrange a b -> b a\n"
               "    'x' [4,6] Symbol\n"
               "'lsm' GeneralFunction log_softmax\n"
               "  'xt'\n"
               "'mn' GeneralFunction min\n"
               "  'xt'\n"
               "'mx' GeneralFunction max\n"
               "  'xs' Index [:, 1:5]\n"
               "    'x'\n"
               "'sm3' GeneralFunction softmax\n"
               "  'p3' Rearrange a b c -> c a b\n"
               "    'y' [2,3,5] Symbol\n"
               "'sm1' GeneralFunction softmax\n"
               "  'v' [7] Symbol\n"
               "'mx1' GeneralFunction max\n"
               "  'v'\n"
               "'smrep' GeneralFunction softmax\n"
               "  'rep' Rearrange a -> a 3\n"
               "    'v'\n"
               "'mnrep' GeneralFunction min\n"
               "  'rep2' Rearrange a -> 3 a\n"
               "    'v'\n"
               "'sm_big' GeneralFunction softmax\n"
               "  'big' Einsum ab,->ab\n"
               "    'x'\n"
               "    'fifty' [] Scalar 50\n"
               "'lsm_big' GeneralFunction log_softmax\n"
               "  'big'\n"
               "'sm_fused' GeneralFunction softmax\n"
               "  'pre' Add\n"
               "    'x'\n"
               "    'bias' [6] Symbol\n"
               "'sm_single' GeneralFunction log_softmax\n"
               "  'col' Rearrange a b -> a b ()\n"
               "    'x'\n");
}

/* A loss's label gather from a log_softmax nothing else reads is one row step
 * (the log-probabilities never written): a transposed input, a 3-d one with
 * negative labels, a float label vector (gen_index's _c check), and a
 * log_softmax that is also an output (not fused). Values as eval's; the
 * fused steps are there. */
static const char LOSS_PICKS[] =
    "'ll' GeneralFunction gen_index_at_-1_batch_x_c\n"
    "  'lp' GeneralFunction log_softmax\n"
    "    'xt' Rearrange a b -> b a\n"
    "      'x' [6,4] Symbol\n"
    "  'lab' [4] Symbol\n"
    "'ll2' GeneralFunction gen_index_at_0_batch_x_c\n"
    "  'lp2' GeneralFunction log_softmax\n"
    "    'y' [2,3,5] Symbol\n"
    "  'lab2' [2,3] Symbol\n"
    "'ll3' GeneralFunction gen_index_at_-1_batch_x_c\n"
    "  'lp3' GeneralFunction log_softmax\n"
    "    'x2' [3,7] Symbol\n"
    "  'lab3' [3] Symbol\n"
    "'lp3'\n"
    "'llf' GeneralFunction gen_index_at_-1_batch_x_c\n"
    "  'lp4' GeneralFunction log_softmax\n"
    "    'x'\n"
    "  'flab' Concat 0\n"
    "    'f0' [2] Scalar 3\n"
    "    'f1' [3] Scalar -1\n"
    "    'f2' [1] Scalar 0\n";

Test(codegen, log_softmax_label_picks) {
  DIFF(.text = LOSS_PICKS, .negative_ids = true);
  Comp *c = tu_comp();
  Compilation cm = {0};
  cr_assert(tu_run(c, LOSS_PICKS, STAGE_LOWER, &cm), "%s", tu_diags(c));
  int picks = 0, gathers = 0;
  for (int i = 0; i < cm.kernels.nstep; i++) {
    const Step *s = cm.kernels.step[i];
    picks += s->kind == STEP_ROW && s->u.row.pick.buf;
    gathers += s->kind == STEP_GATHER;
  }
  cr_expect_eq(picks, 3, "fused label gathers");
  cr_expect_eq(gathers, 1, "only the gather of an output log_softmax stays");
  tu_free(c);
}

Test(codegen, pow_broadcasting) {
  DIFF(.text = "'p1' GeneralFunction pow\n"
               "  'base' Add\n"
               "    'ab' GeneralFunction abs\n"
               "      'x' [3,4] Symbol\n"
               "    'h' [] Scalar 0.5\n"
               "  'e' [4] Symbol\n"
               "'p2' GeneralFunction pow\n"
               "  'base'\n"
               "  'two' [] Scalar 2\n"
               "'p3' GeneralFunction pow\n"
               "  'two'\n"
               "  'e'\n"
               "'p4' GeneralFunction pow\n"
               "  'col' [3,1] Scalar 1.5\n"
               "  'e'\n");
}

Test(codegen, cast) {
  DIFF(.text = "'to_i64' GeneralFunction cast_from_{device:None,dtype:float32}_to_{device:None,dtype:int64}\n"
               "  'x' [3,4] Symbol\n"
               "'to_i8' GeneralFunction cast_from_{device:None,dtype:float32}_to_{device:None,dtype:int8}\n"
               "  'x'\n"
               "'to_u8' GeneralFunction cast_from_{device:None,dtype:None}_to_{device:cpu,dtype:uint8}\n"
               "  'x'\n"
               "'back' GeneralFunction cast_from_{device:None,dtype:int64}_to_{device:None,dtype:float32}\n"
               "  'to_i64'\n"
               "'to_f32' GeneralFunction cast_from_{device:None,dtype:None}_to_{device:None,dtype:float32}\n"
               "  'x'\n"
               "'cast_idx' GeneralFunction gen_index_at_0_c\n"
               "  'emb' [6,3] Symbol\n"
               "  'ci' GeneralFunction cast_from_{device:None,dtype:float32}_to_{device:None,dtype:int64}\n"
               "    'fi' [4] Symbol\n",
       .range = {{"x", -300, 300, false}, {"fi", 0, 6, true}});
}

static const char GEN_INDEX_TEXT[] =
    "'emb' GeneralFunction gen_index_at_0_c\n"
    "  'E' [7,4] Symbol\n"
    "  'tok' [2,3] Symbol\n"
    "'last' GeneralFunction gen_index_at_-1_c\n"
    "  'E'\n"
    "  'j' [5] Symbol\n"
    "'mid' GeneralFunction gen_index_at_1\n"
    "  'X3' [3,4,5] Symbol\n"
    "  'm' [2] Symbol\n"
    "'take' GeneralFunction gen_index_at_1_no_batch_index_c\n"
    "  'X3'\n"
    "  'm'\n"
    "'take_neg' GeneralFunction gen_index_at_-2_batch_x_no_batch_index_c\n"
    "  'X3'\n"
    "  'm2' [2,2] Symbol\n"
    "'bx' GeneralFunction gen_index_at_0_batch_x_c\n"
    "  'L' [2,3,6] Symbol\n"
    "  'lab' [2,3] Symbol\n"
    "'bx_neg' GeneralFunction gen_index_at_-1_batch_x_c\n"
    "  'L'\n"
    "  'lab'\n"
    "'bx2' GeneralFunction gen_index_at_0_batch_x_c\n"
    "  'L'\n"
    "  'lb1' [2] Symbol\n"
    "'bx2b' GeneralFunction gen_index_at_1_batch_x\n"
    "  'L'\n"
    "  'lb1'\n"
    "'scalar_idx' GeneralFunction gen_index_at_0_c\n"
    "  'E'\n"
    "  'k0' [] Symbol\n"
    "'strided_x' GeneralFunction gen_index_at_0_c\n"
    "  'Et' Rearrange a b -> b a\n"
    "    'E'\n"
    "  'tok2' [3] Symbol\n"
    "'ex1' GeneralFunction explicit_index_at_0_x_non_b_1_c\n"
    "  'L'\n"
    "  'ei' [2,3,4] Symbol\n"
    "'ex2' GeneralFunction explicit_index_at_1_x_non_b_2\n"
    "  'L'\n"
    "  'ei2' [2,5] Symbol\n"
    "'ex3' GeneralFunction explicit_index_at_-1_x_non_b_2_c\n"
    "  'L'\n"
    "  'ei2'\n"
    "'float_idx' GeneralFunction gen_index_at_0_c\n"
    "  'E'\n"
    "  'fidx' Einsum a,->a\n"
    "    'fi' [3] Symbol\n"
    "    'one' [] Scalar 1\n"
    "'of_computed' GeneralFunction gen_index_at_1_c\n"
    "  'sm' GeneralFunction softmax\n"
    "    'X3'\n"
    "  'tok'\n";

Test(codegen, gen_index_and_explicit_index) { DIFF(.text = GEN_INDEX_TEXT, .range = {{"fi", 0, 7, true}}); }

Test(codegen, gen_index_negative_ids_wrap) {
  DIFF(.text = GEN_INDEX_TEXT, .negative_ids = true, .range = {{"fi", -7, 7, true}}, .seed = 99);
}

Test(codegen, last_dim_size_cumulant_tag_set_symbolic_shape) {
  DIFF(.text = "'lds' GeneralFunction last_dim_size\n"
               "  'x' [3,4] Symbol\n"
               "'mean' Einsum ab,a->a\n"
               "  'x'\n"
               "  'rl' GeneralFunction reciprocal\n"
               "    'lds'\n"
               "'lds1' GeneralFunction last_dim_size\n"
               "  'y' [2] Symbol\n"
               "'cum0' Cumulant\n"
               "'cum1' Cumulant\n"
               "  'x'\n"
               "'cum2' Cumulant\n"
               "  'x'\n"
               "  'y'\n"
               "'tag' Tag 1a280c74-fa9f-4dd9-94f4-5cca4a0cf243\n"
               "  'x'\n"
               "'tagged_use' Einsum ab->b\n"
               "  'tag'\n"
               "'sss' [3,4] SetSymbolicShape\n"
               "  'x'\n"
               "'sss_use' GeneralFunction tanh\n"
               "  'sss'\n");
}

/* outputs that are views of each other, of inputs, of weights and of one shared temp */
Test(codegen, outputs_sharing_buffers) {
  DIFF(.text = "'flat' Rearrange a b -> (a b)\n"
               "  'th' GeneralFunction tanh\n"
               "    'x' [3,4] Symbol\n"
               "'th'\n"
               "'cols' Rearrange a b -> b a\n"
               "  'th'\n"
               "'flat2' Rearrange a b -> (a b) ()\n"
               "  'th'\n"
               "'x'\n"
               "'x_view' Rearrange a b -> b a\n"
               "  'x'\n"
               "'w' [2,3] Array rand\n"
               "'w_slice' Index [1]\n"
               "  'w'\n"
               "'mm' Einsum ab,bc->ac\n"
               "  'w'\n"
               "  'x'\n"
               "'mm_row' Index [0]\n"
               "  'mm'\n");
}

/* an index input that is also read as a value */
Test(codegen, index_input_also_used_as_value) {
  DIFF(.text = "'g' GeneralFunction gen_index_at_0_c\n"
               "  'E' [5,3] Symbol\n"
               "  'i' [4] Symbol\n"
               "'f' Einsum a,->a\n"
               "  'i'\n"
               "  'h' [] Scalar 0.5\n"
               "'both' Einsum ab,a->ab\n"
               "  'g'\n"
               "  'i'\n");
}

/* empty slices give zero-size axes (§4.6 allows start == stop) */
Test(codegen, zero_size_tensors) {
  DIFF(.text = "'empty' Index [1:1, :]\n"
               "  'x' [3,4] Symbol\n"
               "'sum_empty' Einsum ab->b\n"
               "  'empty'\n"
               "'cat_empty' Concat 0\n"
               "  'x'\n"
               "  'empty'\n"
               "'tanh_empty' GeneralFunction tanh\n"
               "  'empty'\n"
               "'sm_empty' GeneralFunction softmax\n"
               "  'et' Rearrange a b -> b a\n"
               "    'empty'\n");
}

/* infinities from Scalars and from functions at the edge of their domain */
Test(codegen, nonfinite_values) {
  DIFF(.text = "'plus_inf' Add\n"
               "  'x' [3] Symbol\n"
               "  'inf' [] Scalar inf\n"
               "'log0' GeneralFunction log\n"
               "  'z' [2] Scalar 0\n"
               "'masked' GeneralFunction softmax\n"
               "  'm' Add\n"
               "    'x'\n"
               "    'mask' [3] Scalar -10000\n"
               "'rsqrt0' GeneralFunction rsqrt\n"
               "  'z'\n"
               "'max_inf' GeneralFunction max\n"
               "  'plus_inf'\n");
}

/* ------------------------------------------------------------------ focused: layernorm */

/* Layernorms in the forms idiom_layernorm.c turns into one row step
 * (rust_circuit_format.md §7.2): with and without scale and bias, operands in
 * another order, batched rows, x an expression; 'ln_rowbias' adds a bias over
 * the rows, so only its product is a layernorm step. */
static const char LN_TEXT[] =
    "'ln_full' Add\n"
    "  'b' [7] Symbol\n"
    "  'y' Einsum ab,a,b->ab\n"
    "    'c' Add\n"
    "      'x' [5,7] Symbol\n"
    "      'nm' Einsum ab,z,->az\n"
    "        'x'\n"
    "        'neg' [1] Scalar -1\n"
    "        'r' [] Scalar 0.14285714285714285\n"
    "    'rs' GeneralFunction rsqrt\n"
    "      'vpe' Add\n"
    "        'eps' [] Scalar 1e-5\n"
    "        'var' Einsum ab,ab,->a\n"
    "          'c'\n"
    "          'c'\n"
    "          'r'\n"
    "    'w' [7] Symbol\n"
    "'ln_noscale' Add\n"
    "  'b2' [1,7] Symbol\n"
    "  'y2' Einsum ab,a->ab\n"
    "    'c'\n"
    "    'rs'\n"
    "'ln_nobias' Einsum b,ab,a->ab\n"
    "  'w'\n"
    "  'c'\n"
    "  'rs'\n"
    "'ln_rowbias' Add\n"
    "  'y2'\n"
    "  'rb' [5,1] Symbol\n"
    "'ln_batched' Add\n"
    "  'y3' Einsum abh,ab,h->abh\n"
    "    'c3' Add\n"
    "      'x3' [2,3,6] Symbol\n"
    "      'nm3' Einsum abh,z,->abz\n"
    "        'x3'\n"
    "        'neg'\n"
    "        'r6' [] Scalar 0.16666666666666666\n"
    "    'rs3' GeneralFunction rsqrt\n"
    "      'vpe3' Add\n"
    "        'var3' Einsum abh,abh,->ab\n"
    "          'c3'\n"
    "          'c3'\n"
    "          'r6'\n"
    "        'eps3' [] Scalar 0.001\n"
    "    'w3' [6] Symbol\n"
    "  'b3' [1,1,6] Symbol\n"
    "'ln_of_sum' Einsum ab,a->ab\n"
    "  'c4' Add\n"
    "    'x4' Add\n"
    "      'p' [4,9] Symbol\n"
    "      'q' [9] Symbol\n"
    "    'nm4' Einsum ab,z,->az\n"
    "      'x4'\n"
    "      'neg'\n"
    "      'r9' [] Scalar 0.1111111111111111\n"
    "  'rs4' GeneralFunction rsqrt\n"
    "    'vpe4' Add\n"
    "      'eps'\n"
    "      'var4' Einsum ab,ab,->a\n"
    "        'c4'\n"
    "        'c4'\n"
    "        'r9'\n";

Test(codegen, layernorm_forms_become_row_steps) { DIFF(.text = LN_TEXT, .count_layernorms = true, .layernorms = 6); }

/* Near misses: each differs from a layernorm in one place and keeps today's
 * lowering (no layernorm step), with the same values as eval. */
Test(codegen, layernorm_near_misses_fall_back) {
  DIFF(.text = "'mean_over_rows' Einsum ab,a->ab\n"
               "  'c' Add\n"
               "    'x' [5,7] Symbol\n"
               "    'nm' Einsum ab,z,->zb\n"
               "      'x'\n"
               "      'neg' [1] Scalar -1\n"
               "      'r5' [] Scalar 0.2\n"
               "  'rs' GeneralFunction rsqrt\n"
               "    'vpe' Add\n"
               "      'eps' [] Scalar 1e-5\n"
               "      'var' Einsum ab,ab,->a\n"
               "        'c'\n"
               "        'c'\n"
               "        'r7' [] Scalar 0.14285714285714285\n"
               "'eps_outside' Einsum ab,a->ab\n"
               "  'c2' Add\n"
               "    'x'\n"
               "    'nm2' Einsum ab,z,->az\n"
               "      'x'\n"
               "      'neg'\n"
               "      'r7'\n"
               "  'rs_eps' Add\n"
               "    'eps'\n"
               "    'rs2' GeneralFunction rsqrt\n"
               "      'var2' Einsum ab,ab,->a\n"
               "        'c2'\n"
               "        'c2'\n"
               "        'r7'\n"
               "'unbiased' Einsum ab,a->ab\n"
               "  'c2'\n"
               "  'rs3' GeneralFunction rsqrt\n"
               "    'vpe3' Add\n"
               "      'eps'\n"
               "      'var3' Einsum ab,ab,->a\n"
               "        'c2'\n"
               "        'c2'\n"
               "        'r6' [] Scalar 0.16666666666666666\n"
               "'var_of_x' Einsum ab,a->ab\n"
               "  'c2'\n"
               "  'rs4' GeneralFunction rsqrt\n"
               "    'vpe4' Add\n"
               "      'eps'\n"
               "      'var4' Einsum ab,ab,->a\n"
               "        'x'\n"
               "        'x'\n"
               "        'r7'\n"
               "'scale_over_rows' Einsum ab,a,a->ab\n"
               "  'c2'\n"
               "  'rs5' GeneralFunction rsqrt\n"
               "    'vpe5' Add\n"
               "      'eps'\n"
               "      'var2'\n"
               "  'w5' [5] Symbol\n"
               "'eps_per_row' Einsum ab,a->ab\n"
               "  'c2'\n"
               "  'rs6' GeneralFunction rsqrt\n"
               "    'vpe6' Add\n"
               "      'e5' [5] Symbol\n"
               "      'var2'\n"
               "'mean_of_other' Einsum ab,a->ab\n"
               "  'c7' Add\n"
               "    'x'\n"
               "    'nm7' Einsum ab,z,->az\n"
               "      'x7' [5,7] Symbol\n"
               "      'neg'\n"
               "      'r7'\n"
               "  'rs7' GeneralFunction rsqrt\n"
               "    'vpe7' Add\n"
               "      'eps'\n"
               "      'var7' Einsum ab,ab,->a\n"
               "        'c7'\n"
               "        'c7'\n"
               "        'r7'\n"
               "'mean_wrong_scale' Einsum ab,a->ab\n"
               "  'c8' Add\n"
               "    'x'\n"
               "    'nm8' Einsum ab,z,->az\n"
               "      'x'\n"
               "      'neg'\n"
               "      'r6'\n"
               "  'rs8' GeneralFunction rsqrt\n"
               "    'vpe8' Add\n"
               "      'eps'\n"
               "      'var8' Einsum ab,ab,->a\n"
               "        'c8'\n"
               "        'c8'\n"
               "        'r7'\n",
       .range = {{"e5", 0.5, 1, false}}, .count_layernorms = true, .layernorms = 0);
}

/* ------------------------------------------------------------------ thread-parallel sizes */

/* Steps large enough for OpenMP (emit.c's PARALLEL_MIN_WORK): 1 vs 2 threads
 * must give the same bits. */
static const char LARGE_TEXT[] =
    "'mm' Einsum ij,jk->ik\n"
    "  'a' [256,64] Symbol\n"
    "  'b' [64,160] Symbol\n"
    "'act' GeneralFunction gelu_new\n"
    "  'pre' Add\n"
    "    'mm'\n"
    "    'bias' [160] Symbol\n"
    "'sm' GeneralFunction softmax\n"
    "  'act'\n"
    "'lsm_t' GeneralFunction log_softmax\n"
    "  'actT' Rearrange a b -> b a\n"
    "    'act'\n"
    "'mx' GeneralFunction max\n"
    "  'mm'\n"
    "'red' Einsum ij->j\n"
    "  'mm'\n"
    "'emb' GeneralFunction gen_index_at_0_c\n"
    "  'E' [500,64] Array rand\n"
    "  'tok' [8,80] Symbol\n"
    "'tr' Rearrange a b c -> (c a) b\n"
    "  'X' [40,30,40] Symbol\n"
    "'bmm' Einsum bij,bjk->bik\n"
    "  'P' [4,64,48] Symbol\n"
    "  'Q' [4,48,64] Symbol\n"
    "'scores' Einsum qc,kc,,qk->qk\n"
    "  'q' [128,64] Symbol\n"
    "  'k' [128,64] Symbol\n"
    "  'scale' [] Scalar 0.125\n"
    "  'mask' [128,128] Symbol\n"
    "'cat' Concat 1\n"
    "  'mm'\n"
    "  'act'\n"
    "'ln_big' Add\n"
    "  'lnb' [160] Symbol\n"
    "  'ln_y' Einsum ab,a,b->ab\n"
    "    'ln_c' Add\n"
    "      'act'\n"
    "      'ln_nm' Einsum ab,z,->az\n"
    "        'act'\n"
    "        'ln_neg' [1] Scalar -1\n"
    "        'ln_r' [] Scalar 0.00625\n"
    "    'ln_rs' GeneralFunction rsqrt\n"
    "      'ln_vpe' Add\n"
    "        'ln_eps' [] Scalar 1e-5\n"
    "        'ln_var' Einsum ab,ab,->a\n"
    "          'ln_c'\n"
    "          'ln_c'\n"
    "          'ln_r'\n"
    "    'lnw' [160] Symbol\n";

Test(codegen, large_parallel_O1) { DIFF(.text = LARGE_TEXT, .count_layernorms = true, .layernorms = 1); }
Test(codegen, large_parallel_O3_native) {
  DIFF(.text = LARGE_TEXT, .opt = "-O3", .native = true, .seed = 5, .count_layernorms = true, .layernorms = 1);
}

/* ------------------------------------------------------------------ random circuits */

enum { RANDOM_PER_PROGRAM = 25 }; /* circuits per program; 10 programs */

/* The circuit (of n) whose outputs include `name`, or -1. */
static int owner(const RandCirc *rc, int n, const char *name) {
  for (int j = 0; j < n; j++)
    for (int k = 0; k < rc[j].noutputs; k++)
      if (!strcmp(rc[j].output[k], name)) return j;
  return -1;
}

/* Compiles `n` random circuits (seeds first..first+n-1) as one program; on a
 * failure names the seeds and prints the failing circuits' text. */
static void random_program(uint64_t first, int n, bool large) {
  RandCirc *rc = calloc((size_t)n, sizeof *rc);
  char *text = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&text, &len);
  for (int j = 0; j < n; j++) {
    char prefix[32];
    snprintf(prefix, sizeof prefix, "%s%llu.", large ? "R" : "r", (unsigned long long)(first + (uint64_t)j));
    randcirc_generate(first + (uint64_t)j, prefix, large, &rc[j]);
    fputs(rc[j].text, f);
  }
  fclose(f);
  Report r = diff_check(&(Opts){.text = text, .seed = first});
  if (r.status == ST_OK) {
    report_free(&r);
  } else {
    char *msg = NULL;
    size_t mlen = 0;
    FILE *m = open_memstream(&msg, &mlen);
    fprintf(m, "random circuits %llu..%llu (status %d):\n%s\n", (unsigned long long)first,
            (unsigned long long)(first + (uint64_t)n - 1), r.status, r.msg);
    bool *failing = calloc((size_t)n, 1);
    if (r.status == ST_MISMATCH) {
      for (int b = 0; b < r.nbad; b++) {
        int j = owner(rc, n, r.bad[b]);
        if (j >= 0) failing[j] = true;
      }
    } else { /* the program as a whole failed: find the circuits that fail alone */
      for (int j = 0; j < n; j++) {
        Report one = diff_check(&(Opts){.text = rc[j].text, .seed = first});
        if (one.status != ST_OK) {
          failing[j] = true;
          fprintf(m, "alone, seed %llu gives status %d:\n%s\n", (unsigned long long)(first + (uint64_t)j), one.status,
                  one.msg);
        }
        report_free(&one);
      }
    }
    for (int j = 0; j < n; j++)
      if (failing[j]) {
        unsigned long long seed = first + (uint64_t)j;
        fprintf(m, "--- seed %llu (randcirc_generate(%llu, \"%s%llu.\", %s)):\n%s", seed, seed, large ? "R" : "r", seed,
                large ? "true" : "false", rc[j].text);
      }
    fclose(m);
    report_free(&r);
    cr_assert_fail("%s", msg);
  }
  for (int j = 0; j < n; j++) randcirc_free(&rc[j]);
  free(rc);
  free(text);
}

/* Seeds 1000..1249; CIRCC_RANDCIRC_BASE=N shifts them (for longer soak runs). */
static uint64_t random_base(void) {
  const char *s = getenv("CIRCC_RANDCIRC_BASE");
  return s ? strtoull(s, NULL, 10) : 1000;
}

#define RANDOM_TEST(i)                                                                        \
  Test(codegen, random_circuits_##i) {                                                        \
    random_program(random_base() + (uint64_t)(i) * RANDOM_PER_PROGRAM, RANDOM_PER_PROGRAM, false); \
  }
RANDOM_TEST(0)
RANDOM_TEST(1)
RANDOM_TEST(2)
RANDOM_TEST(3)
RANDOM_TEST(4)
RANDOM_TEST(5)
RANDOM_TEST(6)
RANDOM_TEST(7)
RANDOM_TEST(8)
RANDOM_TEST(9)

/* Random circuits with axes up to 96, so their steps run on both threads. */
Test(codegen, random_large_circuits_0) { random_program(random_base(), 10, true); }
Test(codegen, random_large_circuits_1) { random_program(random_base() + 10, 10, true); }

/* CIRCC_CODEGEN_FILE=PATH checks the circuits in PATH (e.g. a reproducer). */
Test(codegen, file_replay) {
  const char *path = getenv("CIRCC_CODEGEN_FILE");
  if (!path) cr_skip_test("set CIRCC_CODEGEN_FILE=PATH to check the circuits in PATH");
  char *text = read_text(path);
  cr_assert(text, "cannot read %s", path);
  DIFF(.text = text, .random_tensors = true);
  free(text);
}

/* CIRCC_RANDCIRC_SEED=N replays one random circuit on its own (a large one
 * if CIRCC_RANDCIRC_LARGE is set). */
Test(codegen, random_circuit_replay) {
  const char *s = getenv("CIRCC_RANDCIRC_SEED");
  if (!s) cr_skip_test("set CIRCC_RANDCIRC_SEED=N to replay random circuit N");
  random_program(strtoull(s, NULL, 10), 1, getenv("CIRCC_RANDCIRC_LARGE") != NULL);
}
