/* test_expect_runtime.c — the expectation mode (runtime/rt_expect.c, with
 * rt_moments.c and rt_sampler.h) driven through rt_main with hand-written
 * rt_models whose graphs look rows up in small tables. Expected values are
 * computed here independently: exact fractions, or long-double loops over every
 * combination (--all) or over the indices the program dumped (--samples), with
 * the cumulants written out by their textbook formulas. Also: the sampler's
 * published test vectors, the fixed summation tree, the jackknife, bits equal
 * for 1 and 2 threads and for batch sizes 8 and 3, and bad inputs (exit 2 or 3,
 * no file left behind). */
#define _XOPEN_SOURCE 700   /* nftw */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <ftw.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "circc_rt.h"
#include "rt_moments.h"
#include "rt_sampler.h"
#include "testutil.h"

enum { B = 8 };

/* ---- tables ---- */

static const double UNIFORM6[6] = {1.0 / 6, 1.0 / 6, 1.0 / 6, 1.0 / 6, 1.0 / 6, 1.0 / 6};
static const double LOADED[6] = {0.1, 0.1, 0.1, 0.1, 0.2, 0.4};
static const double TWOS6[6] = {2, 2, 2, 2, 2, 2};   /* unnormalised: the runtime must divide */
static const double UNIFORM10[10] = {0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1};
static double big_probs[104091];   /* uniform, filled by setup */

/* Group keys of the sampler test vectors (random_variables.md §4.4), from
 * examples/random_variables/expected.json's proposed_sampler_test_vectors. */
#define UUID_G1 "0b9c1a52-3d2e-4f6a-9e57-1c2d3e4f5a61"
#define UUID_G3 "5e0f7d21-8a4b-4c3d-b2e1-6f7a8b9c0d12"
#define UUID_L "9d8c7b6a-5f4e-4d3c-a2b1-0f1e2d3c4b5a"
#define KEY_G1 0x6d622a1578d18057ull
#define KEY_G3 0x082ec687dcf81463ull
#define KEY_L 0xa84d495e045485a5ull

static const rt_group G_SHARED[] = {{"g1", "d1, d2", 6, UNIFORM6, 1, 1, KEY_G1}};
static const rt_group G_INDEP[] = {{"g1", "d1", 6, UNIFORM6, 1, 1, KEY_G1}, {"g3", "d3", 6, UNIFORM6, 1, 1, KEY_G3}};
static const rt_group G_CUM2[] = {{"L", "x, y", 6, LOADED, 0, 1, KEY_L}, {NULL, "e", 6, TWOS6, 1, 0, 0x1234}};
static const rt_group G_RATIO[] = {{"R", "a, b", 10, UNIFORM10, 1, 0, 0x5678}};
static rt_group g_big[] = {{"big", "v", 104091, big_probs, 1, 0, 77}};

static const int64_t SHAPE_B[] = {B}, SHAPE_B2[] = {B, 2}, SHAPE_2[] = {2}, SHAPE_22[] = {2, 2};
static const int NO_GROUP[] = {-1, -1, -1, -1, -1, -1, -1, -1};
static const int ROWS0[] = {0}, ROWS01[] = {0, 1}, CUM_0_1[] = {0, 1}, CUM_ALL[] = {0, 1, 2, 3, 4, 5, 6};
static const int ARG0[] = {0};

static int g_calls, g_fail_at;    /* graph runs so far; fail at this run (0: never) */
static int64_t g_last_rows[B];    /* the rows of the last pass-0 run */

static const char *count_call(const int64_t *rows, int64_t size) {
  memcpy(g_last_rows, rows, sizeof g_last_rows);
  if (++g_calls == g_fail_at) return rt_errorf("graph failed at run %d", g_calls);
  for (int l = 0; l < B; l++)
    if (rows[l] < 0 || rows[l] >= size) return rt_errorf("row %lld out of range", (long long)rows[l]);
  return NULL;
}

/* post graphs: every output is its input */
static const char *run_copy(const void *const *in, void *const *out, void *arena) {
  memcpy(out[0], in[0], sizeof(float));
  return NULL;
}

/* ---- dice_shared: prod = d[i] * d[i], one group ---- */

static const char *run_shared(const void *const *in, void *const *out, void *arena) {
  const int64_t *rows = in[0];
  float *prod = out[0];
  const char *msg = count_call(rows, 6);
  if (msg) return msg;
  for (int l = 0; l < B; l++) prod[l] = (float)((rows[l] + 1) * (rows[l] + 1));
  return NULL;
}

static const rt_tensor_desc SHARED_IN[] = {{"rows_g1", RT_I64, 1, SHAPE_B, B}};
static const rt_tensor_desc SHARED_OUT[] = {{"prod", RT_F32, 1, SHAPE_B, B}};
static const rt_tensor_desc E_DICE[] = {{"E[d1*d2]", RT_F32, 0, NULL, 1}};
static const rt_graph SHARED_PASS[] = {{1, 1, SHARED_IN, SHARED_OUT, 0, 8, run_shared, ROWS0, NO_GROUP, NULL}};
static const rt_cumulant SHARED_K[] = {{"E[d1*d2]", 1, 0, ARG0, 0, NULL, 1}};
static const rt_graph DICE_POST = {1, 1, E_DICE, E_DICE, 0, 0, run_copy, NO_GROUP, ARG0, NULL};
static const rt_expect SHARED_X = {B, 1, G_SHARED, 1, SHARED_PASS, 1, SHARED_K, &DICE_POST, 0, NULL};

/* The model of an expectation program: its inputs, outputs and run are the post graph's. */
#define MODEL(var, nm, X, nin, nout, ins, outs, post_run)                                                      \
  static const rt_model var = {.name = nm, .circc_version = "9.9.9", .command_line = "circc " nm ".circ",      \
                               .source_hash = "abc", .ninputs = nin, .noutputs = nout, .inputs = ins,          \
                               .outputs = outs, .run = post_run, .expect = &(X)}
MODEL(SHARED, "shared", SHARED_X, 1, 1, E_DICE, E_DICE, run_copy);

/* ---- dice_independent: prod = d[i0] * d[i1], two groups ---- */

static const char *run_indep(const void *const *in, void *const *out, void *arena) {
  const int64_t *r0 = in[0], *r1 = in[1];
  float *prod = out[0];
  const char *msg = count_call(r0, 6);
  if (msg) return msg;
  for (int l = 0; l < B; l++) prod[l] = (float)((r0[l] + 1) * (r1[l] + 1));
  return NULL;
}

static const rt_tensor_desc INDEP_IN[] = {{"rows_g1", RT_I64, 1, SHAPE_B, B}, {"rows_g3", RT_I64, 1, SHAPE_B, B}};
static const rt_graph INDEP_PASS[] = {{2, 1, INDEP_IN, SHARED_OUT, 0, 8, run_indep, ROWS01, NO_GROUP, NULL}};
static const rt_expect INDEP_X = {B, 2, G_INDEP, 1, INDEP_PASS, 1, SHARED_K, &DICE_POST, 0, NULL};
MODEL(INDEP, "indep", INDEP_X, 1, 1, E_DICE, E_DICE, run_copy);

/* ---- cumulant2 and higher orders: loaded die v (group L), fair die e ----
 * x = [v, v^2], y = v, e, ype = v + e */

static const char *run_cum2(const void *const *in, void *const *out, void *arena) {
  const int64_t *rl = in[0], *re = in[1];
  float *x = out[0], *y = out[1], *e = out[2], *ype = out[3];
  const char *msg = count_call(rl, 6);
  if (msg) return msg;
  for (int l = 0; l < B; l++) {
    float v = (float)(rl[l] + 1), d = (float)(re[l] + 1);
    x[2 * l] = v, x[2 * l + 1] = v * v, y[l] = v, e[l] = d, ype[l] = v + d;
  }
  return NULL;
}

static const char *run_copy_all(const void *const *in, void *const *out, void *arena) {
  static const int64_t numel[] = {2, 1, 1, 4, 2, 1, 1};
  for (int i = 0; i < 7; i++) memcpy(out[i], in[i], (size_t)numel[i] * sizeof(float));
  return NULL;
}

static const rt_tensor_desc CUM2_IN[] = {{"rows_L", RT_I64, 1, SHAPE_B, B}, {"rows_e", RT_I64, 1, SHAPE_B, B}};
static const rt_tensor_desc CUM2_OUT[] = {{"x", RT_F32, 2, SHAPE_B2, 2 * B}, {"y", RT_F32, 1, SHAPE_B, B},
                                          {"e", RT_F32, 1, SHAPE_B, B}, {"ype", RT_F32, 1, SHAPE_B, B}};
static const int A_XY[] = {0, 1}, A_YE[] = {1, 2}, A_YYPE[] = {1, 3}, A_XYX[] = {0, 1, 0}, A_XYEYPE[] = {0, 1, 2, 3},
                 A_Y5[] = {1, 1, 1, 1, 1}, A_Y[] = {1};
static const rt_cumulant CUM2_K[] = {
    {"K2(x,y)", 2, 0, A_XY, 1, SHAPE_2, 2},        {"K2(y,e)", 2, 0, A_YE, 0, NULL, 1},
    {"K2(y,y+e)", 2, 0, A_YYPE, 0, NULL, 1},      {"K3(x,y,x)", 3, 0, A_XYX, 2, SHAPE_22, 4},
    {"K4(x,y,e,y+e)", 4, 0, A_XYEYPE, 1, SHAPE_2, 2}, {"K5(y,y,y,y,y)", 5, 0, A_Y5, 0, NULL, 1},
    {"E[y]", 1, 0, A_Y, 0, NULL, 1}};
static const rt_tensor_desc CUM2_EST[] = {{"K2(x,y)", RT_F32, 1, SHAPE_2, 2}, {"K2(y,e)", RT_F32, 0, NULL, 1},
                                          {"K2(y,y+e)", RT_F32, 0, NULL, 1}, {"K3(x,y,x)", RT_F32, 2, SHAPE_22, 4},
                                          {"K4(x,y,e,y+e)", RT_F32, 1, SHAPE_2, 2},
                                          {"K5(y,y,y,y,y)", RT_F32, 0, NULL, 1},
                                          {"E[y]", RT_F32, 0, NULL, 1}};
static const rt_graph CUM2_PASS[] = {{2, 4, CUM2_IN, CUM2_OUT, 0, 40, run_cum2, ROWS01, NO_GROUP, NULL}};
static const rt_graph CUM2_POST = {7, 7, CUM2_EST, CUM2_EST, 0, 0, run_copy_all, NO_GROUP, CUM_ALL, NULL};
static const rt_expect CUM2_X = {B, 2, G_CUM2, 1, CUM2_PASS, 7, CUM2_K, &CUM2_POST, 0, NULL};
MODEL(CUM2, "cum2", CUM2_X, 7, 7, CUM2_EST, CUM2_EST, run_copy_all);

/* ---- nested: m = E[v] in pass 0, then E[(v - m)^2] in pass 1 ---- */

static const char *run_nested0(const void *const *in, void *const *out, void *arena) {
  const int64_t *rows = in[0];
  const char *msg = count_call(rows, 6);
  if (msg) return msg;
  for (int l = 0; l < B; l++) ((float *)out[0])[l] = (float)(rows[l] + 1);
  return NULL;
}

static const char *run_nested1(const void *const *in, void *const *out, void *arena) {
  const float *m = in[0];
  const int64_t *rows = in[1];
  for (int l = 0; l < B; l++) {
    float d = (float)(rows[l] + 1) - m[0];
    ((float *)out[0])[l] = d * d;
  }
  return NULL;
}

static const rt_tensor_desc NESTED0_OUT[] = {{"v", RT_F32, 1, SHAPE_B, B}};
static const rt_tensor_desc NESTED1_IN[] = {{"m", RT_F32, 0, NULL, 1}, {"rows_L", RT_I64, 1, SHAPE_B, B}};
static const rt_tensor_desc NESTED1_OUT[] = {{"sq", RT_F32, 1, SHAPE_B, B}};
static const int N1_GROUP[] = {-1, 0}, N1_CUM[] = {0, -1}, ONE[] = {1};
static const rt_graph NESTED_PASSES[] = {{1, 1, CUM2_IN, NESTED0_OUT, 0, 8, run_nested0, ROWS0, NO_GROUP, NULL},
                                         {2, 1, NESTED1_IN, NESTED1_OUT, 0, 24, run_nested1, N1_GROUP, N1_CUM, NULL}};
static const rt_cumulant NESTED_K[] = {{"m", 1, 0, ARG0, 0, NULL, 1}, {"var", 1, 1, ARG0, 0, NULL, 1}};
static const rt_tensor_desc VAR_OUT[] = {{"var", RT_F32, 0, NULL, 1}};
static const rt_graph NESTED_POST = {1, 1, VAR_OUT, VAR_OUT, 0, 0, run_copy, NO_GROUP, ONE, NULL};
static const rt_expect NESTED_X = {B, 1, G_CUM2, 2, NESTED_PASSES, 2, NESTED_K, &NESTED_POST, 0, NULL};
MODEL(NESTED, "nested", NESTED_X, 1, 1, VAR_OUT, VAR_OUT, run_copy);

/* ---- ratio: a = i + 1, b = i % 3 + 1 over one group of 10; post: Ea / Eb and
 * [Ea, Eb]. Built for two batch sizes (the same estimates, bit for bit). ---- */

static float A_OF(int64_t i) { return (float)(i + 1); }
static float B_OF(int64_t i) { return (float)(i % 3 + 1); }

static const char *run_ratio_post(const void *const *in, void *const *out, void *arena) {
  const float *ea = in[0], *eb = in[1];
  ((float *)out[0])[0] = ea[0] / eb[0];
  ((float *)out[1])[0] = ea[0], ((float *)out[1])[1] = eb[0];
  return NULL;
}

static const rt_tensor_desc RATIO_EST[] = {{"Ea", RT_F32, 0, NULL, 1}, {"Eb", RT_F32, 0, NULL, 1}};
static const rt_tensor_desc RATIO_OUT[] = {{"ratio", RT_F32, 0, NULL, 1}, {"both", RT_F32, 1, SHAPE_2, 2}};
static const rt_cumulant RATIO_K[] = {{"Ea", 1, 0, ARG0, 0, NULL, 1}, {"Eb", 1, 0, ONE, 0, NULL, 1}};
static const rt_graph RATIO_POST = {2, 2, RATIO_EST, RATIO_OUT, 0, 0, run_ratio_post, NO_GROUP, CUM_0_1, NULL};

#define RATIO_MODEL(var, batch)                                                                                \
  static const int64_t var##_SHAPE[] = {batch};                                                               \
  static const char *var##_run(const void *const *in, void *const *out, void *arena) {                       \
    const int64_t *rows = in[0];                                                                              \
    float *a = out[0], *b = out[1];                                                                           \
    if (++g_calls == g_fail_at) return "ratio failed";                                                        \
    _Pragma("omp parallel for") for (int l = 0; l < (batch); l++) a[l] = A_OF(rows[l]), b[l] = B_OF(rows[l]); \
    return NULL;                                                                                              \
  }                                                                                                           \
  static const rt_tensor_desc var##_IN[] = {{"rows_R", RT_I64, 1, var##_SHAPE, batch}};                       \
  static const rt_tensor_desc var##_OUT[] = {{"a", RT_F32, 1, var##_SHAPE, batch},                            \
                                             {"b", RT_F32, 1, var##_SHAPE, batch}};                           \
  static const rt_graph var##_PASS[] = {{1, 2, var##_IN, var##_OUT, 0, 2 * (batch), var##_run, ROWS0, NO_GROUP, NULL}}; \
  static const rt_expect var##_X = {batch, 1, G_RATIO, 1, var##_PASS, 2, RATIO_K, &RATIO_POST, 0, NULL};             \
  MODEL(var, "ratio", var##_X, 2, 2, RATIO_EST, RATIO_OUT, run_ratio_post)
RATIO_MODEL(RATIO8, 8);
RATIO_MODEL(RATIO3, 3);

/* ---- big: one uniform group of 104091 rows (the --group-seed test vector) ---- */

static const char *run_big(const void *const *in, void *const *out, void *arena) {
  const int64_t *rows = in[0];
  for (int l = 0; l < B; l++) ((float *)out[0])[l] = (float)rows[l];
  return NULL;
}

static const rt_tensor_desc BIG_OUT[] = {{"v", RT_F32, 1, SHAPE_B, B}};
static const rt_graph BIG_PASS[] = {{1, 1, SHARED_IN, BIG_OUT, 0, 8, run_big, ROWS0, NO_GROUP, NULL}};
static const rt_cumulant BIG_K[] = {{"Ev", 1, 0, ARG0, 0, NULL, 1}};
static const rt_tensor_desc EV[] = {{"Ev", RT_F32, 0, NULL, 1}};
static const rt_graph BIG_POST = {1, 1, EV, EV, 0, 0, run_copy, NO_GROUP, ARG0, NULL};
static const rt_expect BIG_X = {B, 1, g_big, 1, BIG_PASS, 1, BIG_K, &BIG_POST, 0, NULL};
MODEL(BIG, "big", BIG_X, 1, 1, EV, EV, run_copy);

/* ---- non-finite: prod = inf for row 2 ---- */

static const char *run_inf(const void *const *in, void *const *out, void *arena) {
  const int64_t *rows = in[0];
  for (int l = 0; l < B; l++) ((float *)out[0])[l] = rows[l] == 2 ? INFINITY : 1.0f;
  return NULL;
}

static const rt_graph INF_PASS[] = {{1, 1, SHARED_IN, SHARED_OUT, 0, 8, run_inf, ROWS0, NO_GROUP, NULL}};
static const rt_expect INF_X = {B, 1, G_SHARED, 1, INF_PASS, 1, SHARED_K, &DICE_POST, 0, NULL};
MODEL(INF, "inf", INF_X, 1, 1, E_DICE, E_DICE, run_copy);

/* ---- files and running rt_main (as test_runtime.c) ---- */

static char dir[] = "/tmp/circc_expect_XXXXXX";

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) { return remove(path); }

static const char *in_dir(const char *name) {
  static char buf[8][512];
  static int k;
  k = (k + 1) % 8;
  snprintf(buf[k], sizeof buf[k], "%s/%s", dir, name);
  return buf[k];
}

/* "NAME=@DIR/FILE" */
static const char *bind(const char *name, const char *file) {
  static char buf[16][600];
  static int k;
  k = (k + 1) % 16;
  snprintf(buf[k], sizeof buf[k], "%s=@%s/%s", name, dir, file);
  return buf[k];
}

static int count_entries(void) {
  char cmd[600];
  snprintf(cmd, sizeof cmd, "ls -A %s | wc -l", dir);
  FILE *p = popen(cmd, "r");
  int n = -1;
  cr_assert_eq(fscanf(p, "%d", &n), 1);
  pclose(p);
  return n;
}

static void setup(void) {
  cr_assert_not_null(mkdtemp(dir));
  for (int i = 0; i < 104091; i++) big_probs[i] = 1.0 / 104091;
  unsetenv("OMP_NUM_THREADS");
  g_calls = g_fail_at = 0;
}
static void teardown(void) { nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS); }
TestSuite(expect, .init = setup, .fini = teardown);

static const rt_model *model;
static char *out, *err;

static char *capture_end(int saved, int fd, const char *file) {
  fflush(fd == 1 ? stdout : stderr);
  dup2(saved, fd);
  close(saved);
  size_t len;
  char *s = (char *)(uint8_t *)tu_read_file(file, &len);
  unlink(file);
  return s;
}

/* rt_main(model, {"prog", args..., NULL}) */
static int run(const char *arg, ...) {
  char *argv[64] = {"prog"};
  int argc = 1;
  va_list ap;
  va_start(ap, arg);
  for (const char *a = arg; a; a = va_arg(ap, const char *)) argv[argc++] = (char *)a;
  va_end(ap);
  char of[600], ef[600];
  snprintf(of, sizeof of, "%s/.stdout", dir);
  snprintf(ef, sizeof ef, "%s/.stderr", dir);
  fflush(stdout);
  fflush(stderr);
  int so = dup(1), se = dup(2);
  int fo = open(of, O_WRONLY | O_CREAT | O_TRUNC, 0644), fe = open(ef, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  dup2(fo, 1);
  dup2(fe, 2);
  close(fo);
  close(fe);
  int code = rt_main(model, argc, argv);
  free(out);
  free(err);
  out = capture_end(so, 1, of);
  err = capture_end(se, 2, ef);
  return code;
}

#define RUN(...) run(__VA_ARGS__, NULL)
#define HAS(text, s) cr_assert(strstr(text, s), "expected \"%s\" in:\n%s", s, text)
#define EXPECT(run_expr, want, stream, s)                          \
  do {                                                             \
    int code_ = (run_expr);                                        \
    cr_assert_eq(code_, want, "exit %d, stderr:\n%s", code_, err); \
    HAS(stream, s);                                                \
  } while (0)

/* A .npy the program wrote, as long doubles (float32, float64 or int64). */
static long double *load(const char *file, int64_t *n) {
  Comp *c = tu_comp();
  Tensor *t = npy_load(c, in_dir(file), NO_LOC);
  cr_assert_not_null(t, "%s", tu_diags(c));
  *n = shape_numel(&t->shape);
  long double *v = malloc((size_t)(*n + 1) * sizeof *v);
  for (int64_t k = 0; k < *n; k++)
    v[k] = t->dtype == DT_F32   ? ((const float *)t->data)[k]
           : t->dtype == DT_F64 ? ((const double *)t->data)[k]
                                : (long double)((const int64_t *)t->data)[k];
  cr_assert(t->dtype == DT_F32 || t->dtype == DT_F64 || t->dtype == DT_I64);
  tu_free(c);
  return v;
}

static void assert_close(long double got, long double want, long double tol, const char *what) {
  cr_assert(fabsl(got - want) <= tol * (1 + fabsl(want)), "%s: got %.12Lg, want %.12Lg", what, got, want);
}

/* ---- plug-in cumulants, written out (random_variables.md §1.4) ---- */

typedef struct Samples {
  int n;
  long double w[4096];          /* normalised weights */
  long double v[5][4096];       /* v, v^2 (x), e, v + e, and a spare */
} Samples;

static long double mean_of(const Samples *s, const long double *x) {
  long double m = 0;
  for (int i = 0; i < s->n; i++) m += s->w[i] * x[i];
  return m;
}

/* E[prod (x_i - E x_i)] over k series */
static long double central(const Samples *s, int k, const long double *const *x) {
  long double m[8], r = 0;
  for (int i = 0; i < k; i++) m[i] = mean_of(s, x[i]);
  for (int t = 0; t < s->n; t++) {
    long double p = s->w[t];
    for (int i = 0; i < k; i++) p *= x[i][t] - m[i];
    r += p;
  }
  return r;
}

static long double k2(const Samples *s, const long double *a, const long double *b) {
  return central(s, 2, (const long double *[]){a, b});
}
static long double k3(const Samples *s, const long double *a, const long double *b, const long double *c) {
  return central(s, 3, (const long double *[]){a, b, c});
}
static long double k4(const Samples *s, const long double *a, const long double *b, const long double *c,
                      const long double *d) {
  return central(s, 4, (const long double *[]){a, b, c, d}) - k2(s, a, b) * k2(s, c, d) - k2(s, a, c) * k2(s, b, d) -
         k2(s, a, d) * k2(s, b, c);
}
static long double k5_same(const Samples *s, const long double *a) {   /* m5 - 10 m2 m3 */
  return central(s, 5, (const long double *[]){a, a, a, a, a}) - 10 * k2(s, a, a) * k3(s, a, a, a);
}

/* Rows (il, ie) of samples into the series of the cum2 model. */
static void cum2_series(Samples *s, int t, int64_t il, int64_t ie, long double w) {
  long double v = (long double)(il + 1), e = (long double)(ie + 1);
  s->w[t] = w;
  s->v[0][t] = v, s->v[1][t] = v * v, s->v[2][t] = e, s->v[3][t] = v + e;
}

/* Checks the cum2 model's --output files against the plug-in cumulants of s. */
static void check_cum2(const Samples *s, long double tol) {
  const long double *v = s->v[0], *x[2] = {s->v[0], s->v[1]}, *e = s->v[2], *ype = s->v[3];
  int64_t n;
  long double *got = load("k2xy.npy", &n);
  cr_assert_eq(n, 2);
  for (int a = 0; a < 2; a++) assert_close(got[a], k2(s, x[a], v), tol, "K2(x,y)");
  free(got);
  got = load("k2ye.npy", &n);
  assert_close(got[0], k2(s, v, e), tol, "K2(y,e)");
  free(got);
  got = load("k2yype.npy", &n);
  assert_close(got[0], k2(s, v, ype), tol, "K2(y,y+e)");
  free(got);
  got = load("k3.npy", &n);
  cr_assert_eq(n, 4);
  for (int a = 0; a < 2; a++)
    for (int c = 0; c < 2; c++) assert_close(got[2 * a + c], k3(s, x[a], v, x[c]), tol, "K3(x,y,x)");
  free(got);
  got = load("k4.npy", &n);
  for (int a = 0; a < 2; a++) assert_close(got[a], k4(s, x[a], v, e, ype), tol, "K4(x,y,e,y+e)");
  free(got);
  got = load("k5.npy", &n);
  assert_close(got[0], k5_same(s, v), tol, "K5(y,y,y,y,y)");
  free(got);
  got = load("ey.npy", &n);
  assert_close(got[0], mean_of(s, v), tol, "E[y]");
  free(got);
}

#define CUM2_OUTPUTS                                                                                   \
  "--output", bind("K2(x,y)", "k2xy.npy"), "--output", bind("K2(y,e)", "k2ye.npy"), "--output",       \
      bind("K2(y,y+e)", "k2yype.npy"), "--output", bind("K3(x,y,x)", "k3.npy"), "--output",           \
      bind("K4(x,y,e,y+e)", "k4.npy"), "--output", bind("K5(y,y,y,y,y)", "k5.npy"), "--output",       \
      bind("E[y]", "ey.npy")

/* ---- the sampler ---- */

Test(expect, sampler_test_vectors) {
  /* keys, stream keys and first indices from expected.json (seed 11) */
  static const struct { const char *uuid; uint64_t key, stream; int64_t rows[8]; } V[] = {
      {UUID_G1, KEY_G1, 0x6be3022437b74781ull, {2, 1, 0, 0, 2, 5, 3, 3}},
      {UUID_G3, KEY_G3, 0x18baeede95873083ull, {1, 3, 2, 0, 1, 3, 5, 4}},
      {UUID_L, KEY_L, 0xb1660c5a82db4914ull, {4, 2, 5, 2, 5, 5, 5, 2}},
  };
  double cdf[6], c = 0;
  for (int j = 0; j < 6; j++) cdf[j] = c += LOADED[j];
  for (int i = 0; i < 3; i++) {
    uint64_t key;
    cr_assert(rt_uuid_key(V[i].uuid, &key));
    cr_assert_eq(key, V[i].key, "%s: key %#llx", V[i].uuid, (unsigned long long)key);
    uint64_t stream = rt_stream_key(11, key);
    cr_assert_eq(stream, V[i].stream);
    for (int s = 0; s < 8; s++) {
      uint64_t h = rt_sample_bits(stream, (uint64_t)s);
      int64_t row = i < 2 ? rt_uniform_row(h, 6) : rt_weighted_row(h, cdf, 6, 5);
      cr_assert_eq(row, V[i].rows[s], "%s sample %d", V[i].uuid, s);
    }
  }
  /* --group-seed NAME=22 with S = 104091 */
  static const int64_t BIG_ROWS[8] = {65132, 64575, 29390, 31025, 73020, 79184, 2268, 92876};
  cr_assert_eq(rt_mix64(22), 0xfd95fa4db404dd7bull);
  for (int s = 0; s < 8; s++)
    cr_assert_eq(rt_uniform_row(rt_sample_bits(rt_mix64(22), (uint64_t)s), 104091), BIG_ROWS[s]);
  /* hyphens are optional, case does not matter, anything else is refused */
  uint64_t key;
  cr_assert(rt_uuid_key("0B9C1A523D2E4F6A9E571C2D3E4F5A61", &key) && key == KEY_G1);
  cr_assert(!rt_uuid_key("0b9c1a52-3d2e-4f6a-9e57-1c2d3e4f5a6", &key));
  cr_assert(!rt_uuid_key("0b9c1a52-3d2e-4f6a-9e57-1c2d3e4f5a611", &key));
  cr_assert(!rt_uuid_key("0b9c1a52-3d2e-4f6a-9e57-1c2d3e4f5a6g", &key));
}

/* The program draws exactly those rows: --dump-indices columns in group order. */
Test(expect, dumped_indices_are_the_test_vectors) {
  model = &INDEP;
  int code = RUN("--samples", "8", "--seed", "11", "--dump-indices", in_dir("idx.npy"));
  cr_assert_eq(code, 0, "%s", err);
  int64_t n;
  long double *idx = load("idx.npy", &n);
  static const int R1[8] = {2, 1, 0, 0, 2, 5, 3, 3}, R3[8] = {1, 3, 2, 0, 1, 3, 5, 4};
  cr_assert_eq(n, 16);
  for (int s = 0; s < 8; s++) cr_assert(idx[2 * s] == R1[s] && idx[2 * s + 1] == R3[s], "sample %d", s);
  free(idx);
  model = &CUM2;   /* weighted group L */
  code = RUN("--samples", "8", "--seed", "11", "--dump-indices", in_dir("idx.npy"));
  cr_assert_eq(code, 0, "%s", err);
  idx = load("idx.npy", &n);
  static const int RL[8] = {4, 2, 5, 2, 5, 5, 5, 2};
  for (int s = 0; s < 8; s++) cr_assert_eq(idx[2 * s], RL[s], "sample %d", s);
  free(idx);
  model = &BIG;    /* --group-seed by name and by g<index> */
  static const int64_t BIG_ROWS[8] = {65132, 64575, 29390, 31025, 73020, 79184, 2268, 92876};
  const char *names[] = {"big=22", "g0=22"};
  for (int k = 0; k < 2; k++) {
    code = RUN("--samples", "8", "--group-seed", names[k], "--dump-indices", in_dir("idx.npy"), "--output",
               bind("Ev", "ev.npy"));
    cr_assert_eq(code, 0, "%s", err);
    idx = load("idx.npy", &n);
    long double sum = 0;
    for (int s = 0; s < 8; s++) {
      cr_assert_eq(idx[s], BIG_ROWS[s]);
      sum += BIG_ROWS[s];
    }
    free(idx);
    long double *ev = load("ev.npy", &n);
    assert_close(ev[0], sum / 8, 1e-7L, "mean row");
    free(ev);
    HAS(out, "# g0 'big'  S=104091 uniform  key 0x000000000000004d  vars: v  group-seed 22\n");
  }
}

/* ---- --all: exact expectations ---- */

Test(expect, all_shared_group_is_91_over_6) {
  model = &SHARED;
  int code = RUN("--all", "--output", bind("E[d1*d2]", "e.npy"));
  cr_assert_eq(code, 0, "%s", err);
  cr_assert_str_eq(out, "# 6 samples, all combinations (exact); 1 group; 1 chunk of 64\n"
                        "# g0 'g1'  S=6 uniform  key 0x6d622a1578d18057  vars: d1, d2\n"
                        "E[d1*d2] []  15.16666698  exact\n"
                        "non-finite per-sample values: 0\n");
  int64_t n;
  long double *e = load("e.npy", &n);
  cr_assert_eq((float)e[0], (float)(91.0L / 6));
  free(e);
}

Test(expect, all_independent_groups_is_49_over_4) {
  model = &INDEP;
  int code = RUN("--all", "--output", bind("E[d1*d2]", "e.npy"), "--dump-indices", in_dir("idx.npy"),
                 "--dump-weights", in_dir("w.npy"));
  cr_assert_eq(code, 0, "%s", err);
  HAS(out, "# 36 samples, all combinations (exact); 2 groups; 1 chunk of 64\n");
  HAS(out, "E[d1*d2] []  12.25  exact\n");
  int64_t n;
  long double *e = load("e.npy", &n), *idx = load("idx.npy", &n), *w = load("w.npy", &n);
  cr_assert_eq(e[0], 12.25L);
  cr_assert_eq(n, 36);
  for (int s = 0; s < 36; s++) {   /* row-major, first group slowest; weights (1/6 * 1/6) / (sum * sum) */
    cr_assert(idx[2 * s] == s / 6 && idx[2 * s + 1] == s % 6, "sample %d", s);
    double sum = 0;
    for (int i = 0; i < 6; i++) sum += UNIFORM6[i];
    cr_assert_eq((double)w[s], UNIFORM6[0] * UNIFORM6[0] / (sum * sum));
  }
  free(e), free(idx), free(w);
}

/* Orders 1 to 5, repeated and mixed arguments, outer products in argument
 * order, against the textbook formulas over the 36 weighted outcomes. */
Test(expect, all_cumulants_match_direct_computation) {
  model = &CUM2;
  int code = RUN("--all", CUM2_OUTPUTS);
  cr_assert_eq(code, 0, "%s", err);
  static Samples s;
  s.n = 36;
  for (int il = 0; il < 6; il++)
    for (int ie = 0; ie < 6; ie++) cum2_series(&s, il * 6 + ie, il, ie, (long double)LOADED[il] / 6);
  check_cum2(&s, 2e-7L);
  /* the published exact values */
  int64_t n;
  long double *k = load("k2xy.npy", &n);
  assert_close(k[0], 3.04L, 1e-6L, "K2(x,y)[0]");
  assert_close(k[1], 22.84L, 1e-6L, "K2(x,y)[1]");
  free(k);
  k = load("k2yype.npy", &n);
  assert_close(k[0], 3.04L, 1e-6L, "K2(y,y+e)");
  free(k);
  HAS(out, "K2(x,y) [2]  [3.039999962, 22.84000015]  exact  (2 elements; use --output)\n");   /* float32 values */
  HAS(out, "# g1 (unnamed)  S=6 uniform  key 0x0000000000001234  vars: e\n");
}

/* scrub_pattern's u = [1, 3, 0, 5] (uniform): K3 = 63/32, K4 = -2483/128. */
Test(expect, scrub_pattern_third_and_fourth_cumulants) {
  uint32_t masks[16];
  int nm = rt_moment_subsets(4, masks);
  cr_assert_eq(nm, 7, "K4 needs the six pairs and the whole set, got %d subsets", nm);
  static const double U[4] = {1, 3, 0, 5};
  double m = (1 + 3 + 0 + 5) / 4.0, d[4];
  for (int i = 0; i < 4; i++) d[i] = U[i] - m;
  /* moments through rt_moment_add, as rt_expect.c accumulates them */
  const int64_t numel[4] = {1, 1, 1, 1};
  double acc[7] = {0}, k3v, k4v;
  for (int t = 0; t < nm; t++)
    for (int i = 0; i < 4; i++) {
      const double *dd[4] = {&d[i], &d[i], &d[i], &d[i]};
      rt_moment_add(masks[t], 4, numel, dd, 0.25, acc + t);
    }
  const double *mom[7] = {acc, acc + 1, acc + 2, acc + 3, acc + 4, acc + 5, acc + 6};
  rt_cumulant_from_moments(4, numel, nm, masks, mom, &k4v);
  cr_assert_eq(k4v, -2483.0 / 128);
  uint32_t m3[8];
  cr_assert_eq(rt_moment_subsets(3, m3), 1);
  double acc3 = 0;
  for (int i = 0; i < 4; i++) rt_moment_add(m3[0], 3, numel, (const double *[]){&d[i], &d[i], &d[i]}, 0.25, &acc3);
  rt_cumulant_from_moments(3, numel, 1, m3, (const double *[]){&acc3}, &k3v);
  cr_assert_eq(k3v, 63.0 / 32);
}

Test(expect, nested_cumulant_takes_the_earlier_estimate) {
  model = &NESTED;
  int code = RUN("--all", "--output", bind("var", "var.npy"));
  cr_assert_eq(code, 0, "%s", err);
  float m = 0;   /* pass 0's estimate, as float32 */
  double md = 0;
  for (int i = 0; i < 6; i++) md += LOADED[i] / 1.0 * (i + 1);
  m = (float)md;
  long double want = 0;
  for (int i = 0; i < 6; i++) {
    float dv = (float)(i + 1) - m;
    want += (long double)LOADED[i] * (dv * dv);
  }
  int64_t n;
  long double *v = load("var.npy", &n);
  assert_close(v[0], want, 2e-7L, "var");
  assert_close(v[0], 3.04L, 1e-6L, "var");
  free(v);
  /* random mode: standard errors are not available for nested passes */
  code = RUN("--samples", "100", "--output-se", bind("var", "se.npy"));
  cr_assert_eq(code, 0, "%s", err);
  HAS(out, "var []  ");
  HAS(out, "  se n/a\n");
  v = load("se.npy", &n);
  cr_assert(isnan((double)v[0]));
  free(v);
}

Test(expect, non_finite_values_are_counted) {
  model = &INF;
  int code = RUN("--all");
  cr_assert_eq(code, 0, "%s", err);
  HAS(out, "E[d1*d2] []  inf  exact\n");
  HAS(out, "non-finite per-sample values: 1\n");
}

/* ---- random mode ---- */

/* The estimate recomputed from the dumped indices, N a multiple of neither B nor 64. */
Test(expect, random_estimates_match_the_dumped_indices) {
  model = &CUM2;
  const char *counts[] = {"1001", "5"};
  for (int k = 0; k < 2; k++) {
    int code = RUN("--samples", counts[k], "--seed", "3", "--dump-indices", in_dir("idx.npy"), "--dump-weights",
                   in_dir("w.npy"), CUM2_OUTPUTS);
    cr_assert_eq(code, 0, "%s", err);
    int64_t n;
    long double *idx = load("idx.npy", &n), *w = load("w.npy", &n);
    static Samples s;
    s.n = (int)n;
    cr_assert_eq(n, atoi(counts[k]));
    for (int t = 0; t < s.n; t++) {
      cr_assert_eq(w[t], (long double)(1.0 / (double)n));
      cum2_series(&s, t, (int64_t)idx[2 * t], (int64_t)idx[2 * t + 1], 1.0L / s.n);
    }
    check_cum2(&s, 2e-6L);
    free(idx), free(w);
  }
  /* with N = 5 < B the padded lanes repeat the batch's first sample */
  for (int l = 5; l < B; l++) cr_assert_eq(g_last_rows[l], g_last_rows[0]);
}

/* Recomputes Ea, Eb and their jackknife from the indices as the spec says. */
static void check_ratio(int n, long double *se_ratio) {
  int64_t m;
  long double *idx = load("idx.npy", &m);
  cr_assert_eq(m, n);
  long double sa = 0, sb = 0;
  for (int s = 0; s < n; s++) sa += A_OF((int64_t)idx[s]), sb += B_OF((int64_t)idx[s]);
  long double *ratio = load("ratio.npy", &m), *both = load("both.npy", &m), *se = load("se.npy", &m);
  float ea = (float)(sa / n), eb = (float)(sb / n);
  cr_assert_eq((float)both[0], ea);
  cr_assert_eq((float)both[1], eb);
  cr_assert_eq((float)ratio[0], ea / eb);
  int chunks = (n + 63) / 64, G = chunks < 32 ? chunks : 32;
  long double theta[32], mean = 0, ss = 0;
  for (int j = 0; j < G; j++) {
    int lo = j * chunks / G * 64, hi = (j + 1) * chunks / G * 64;
    hi = hi < n ? hi : n;
    long double pa = 0, pb = 0;
    for (int s = lo; s < hi; s++) pa += A_OF((int64_t)idx[s]), pb += B_OF((int64_t)idx[s]);
    float ra = (float)((sa - pa) / (n - (hi - lo))), rb = (float)((sb - pb) / (n - (hi - lo)));
    theta[j] = ra / rb;
    mean += theta[j];
  }
  mean /= G;
  for (int j = 0; j < G; j++) ss += (theta[j] - mean) * (theta[j] - mean);
  *se_ratio = sqrtl((long double)(G - 1) / G * ss);
  assert_close(se[0], *se_ratio, 1e-5L, "se(ratio)");
  free(idx), free(ratio), free(both), free(se);
}

Test(expect, jackknife_standard_errors_and_coverage) {
  model = &RATIO8;
  int code = RUN("--samples", "1001", "--seed", "5", "--dump-indices", in_dir("idx.npy"), "--output",
                 bind("ratio", "ratio.npy"), "--output", bind("both", "both.npy"), "--output-se",
                 bind("ratio", "se.npy"));
  cr_assert_eq(code, 0, "%s", err);
  long double se;
  check_ratio(1001, &se);
  HAS(out, "# 1001 samples, random with replacement, seed 5; 1 group; 16 chunks of 64\n");
  HAS(out, "# g0 'R'  S=10 uniform  key 0x0000000000005678  vars: a, b\n");
  HAS(out, " (jackknife, 16 groups)\n");
  HAS(out, "  (2 elements; use --output)\n");
  /* the printed value is the written one; within 5 standard errors of 5.5 / 1.9 */
  const char *line = strstr(out, "ratio []  ");
  cr_assert_not_null(line);
  char *end;
  double printed = strtod(line + strlen("ratio []  "), &end);
  double printed_se = strtod(strstr(end, "se ") + 3, NULL);
  int64_t n;
  long double *ratio = load("ratio.npy", &n);
  cr_assert_eq((float)printed, (float)ratio[0]);
  assert_close(printed_se, se, 1e-5L, "printed se");
  cr_assert(fabsl(ratio[0] - 5.5L / 1.9L) < 5 * se, "ratio %Lg, se %Lg", ratio[0], se);
  free(ratio);
  /* dice_shared: 91/6 within 5 standard errors */
  model = &SHARED;
  code = RUN("--samples", "2000", "--seed", "9", "--output", bind("E[d1*d2]", "e.npy"), "--output-se",
             bind("E[d1*d2]", "se.npy"));
  cr_assert_eq(code, 0, "%s", err);
  long double *e = load("e.npy", &n), *s = load("se.npy", &n);
  cr_assert(s[0] > 0.1L && s[0] < 0.5L, "se %Lg (sigma/sqrt(N) = 0.27)", s[0]);
  cr_assert(fabsl(e[0] - 91.0L / 6) < 5 * s[0], "estimate %Lg, se %Lg", e[0], s[0]);
  free(e), free(s);
}

/* Same bits for 1 and 2 threads and for batch sizes 8 and 3. */
Test(expect, bits_do_not_depend_on_threads_or_batch) {
  const rt_model *models[] = {&RATIO8, &RATIO8, &RATIO3};
  const char *threads[] = {"1", "2", "2"};
  uint8_t *first[3] = {0};
  size_t first_len[3];
  for (int k = 0; k < 3; k++) {
    model = models[k];
    int code = RUN("--samples", "3000", "--seed", "1", "--threads", threads[k], "--output", bind("ratio", "r.npy"),
                   "--output", bind("both", "b.npy"), "--output-se", bind("both", "s.npy"));
    cr_assert_eq(code, 0, "%s", err);
    const char *files[3] = {"r.npy", "b.npy", "s.npy"};
    for (int f = 0; f < 3; f++) {
      size_t len;
      uint8_t *bytes = (uint8_t *)tu_read_file(in_dir(files[f]), &len);
      if (!k) {
        first[f] = bytes, first_len[f] = len;
        continue;
      }
      cr_assert(len == first_len[f] && !memcmp(bytes, first[f], len), "%s differs (run %d)", files[f], k);
      free(bytes);
    }
  }
  for (int f = 0; f < 3; f++) free(first[f]);
}

/* The fixed tree: chunk partials summed in sample order, combined pairwise over
 * the chunk count padded to a power of two; group partials in chunk order. */
static double tree(const double *leaf, int64_t lo, int64_t hi, int64_t count) {
  if (hi - lo == 1) return lo < count ? leaf[lo] : 0.0;
  int64_t mid = lo + (hi - lo) / 2;
  double left = tree(leaf, lo, mid, count);
  return left + tree(leaf, mid, hi, count);
}

Test(expect, sums_follow_the_fixed_tree) {
  enum { N = 300 * 64 - 5, C = 300 };
  static double x[N], leaf[C];
  uint64_t st = 1;
  for (int s = 0; s < N; s++) {
    st = rt_mix64(st + s);
    x[s] = ldexp((double)(st >> 11), (int)(st % 60) - 80) * ((st & 1) ? -1 : 1);   /* wide magnitudes: order matters */
    leaf[s / 64] += x[s];
  }
  rt_sums sums;
  cr_assert(rt_sums_init(&sums, 1, N, 32));
  for (int s = 0; s < N; s++) {
    sums.partial[0] += x[s];
    if ((s + 1) % 64 == 0 || s + 1 == N) rt_sums_end_chunk(&sums);
  }
  double total;
  rt_sums_total(&sums, &total);
  cr_assert_eq(total, tree(leaf, 0, 512, C));
  for (int j = 0; j < 32; j++) {
    double g = 0;
    for (int c = j * C / 32; c < (j + 1) * C / 32; c++) g += leaf[c];
    cr_assert_eq(sums.groups[j], g, "group %d", j);
  }
  double naive = 0;
  for (int s = 0; s < N; s++) naive += x[s];
  cr_assert_neq(total, naive, "the data should tell the orders apart");
  rt_sums_free(&sums);
}

/* ---- --info, --help, progress ---- */

Test(expect, info_lists_groups_passes_and_cumulants) {
  model = &CUM2;
  int code = RUN("--info");
  cr_assert_eq(code, 0, "%s", err);
  cr_assert_eq(g_calls, 0, "--info alone runs nothing");
  HAS(out, "program:      cum2\ncircc:        9.9.9\ncommand line: circc cum2.circ\nsource hash:  abc\nthreads:");
  HAS(out, "outputs:\n  K2(x,y) [2] float32\n  K2(y,e) [] float32\n");
  cr_assert_null(strstr(out, "inputs:"), "the post graph's inputs are not the program's");
  HAS(out, "expectation program: batch 8, 2 groups, 1 pass, 7 cumulants\ngroups:\n");
  HAS(out, "  g0 'L'  S=6 weighted  key 0xa84d495e045485a5  vars: x, y\n");
  HAS(out, "passes:\n  pass 0: arena 0 bytes, 40 flops/run\n    input  rows_L [8] int64  (rows of g0)\n");
  HAS(out, "    output  x [8,2] float32\n");
  HAS(out, "  post: arena 0 bytes, 0 flops/run\n    input  K2(x,y) [2] float32  (estimate of K2(x,y))\n");
  HAS(out, "cumulants:\n  K2(x,y) order 2 [2] pass 0  arguments: x y\n");
  HAS(out, "  K4(x,y,e,y+e) order 4 [2] pass 0  arguments: x y e ype\n");
  model = &NESTED;
  code = RUN("--info", "--all");
  cr_assert_eq(code, 0, "%s", err);
  HAS(out, "  pass 1: arena 0 bytes, 24 flops/run\n    input  m [] float32  (estimate of m)\n");
  HAS(out, "# 6 samples, all combinations (exact); 1 group; 1 chunk of 64\n");
}

Test(expect, help_and_progress) {
  model = &SHARED;
  EXPECT(RUN("-h"), 0, out, "--samples N");
  HAS(out, "--dump-weights FILE.npy");
  cr_assert_null(strstr(out, "--input NAME"), "the generic mode's help does not apply");
  EXPECT(RUN("--samples", "500", "--progress"), 0, err, "/500 samples, ");
  HAS(err, " samples/s, ETA ");
  cr_assert_eq(err[strlen(err) - 1], '\r', "the progress line is cleared at the end");
}

/* ---- bad input ---- */

Test(expect, usage_errors) {
  model = &INDEP;
  EXPECT(RUN("--samples", "0"), 2, err, "--samples expects a positive number of samples up to 2^53, found '0'");
  EXPECT(RUN("--samples", "-3"), 2, err, "--samples expects a positive number");
  /* counts stay exact in double and the chunk arithmetic cannot overflow (2^63-1 was an internal error) */
  EXPECT(RUN("--samples", "9223372036854775807"), 2, err, "--samples expects a positive number of samples up to "
                                                         "2^53, found '9223372036854775807'");
  EXPECT(RUN("--samples", "9007199254740993"), 2, err, "up to 2^53");
  EXPECT(RUN("--all", "--max-all", "9007199254740993"), 2, err, "--max-all expects a positive number of "
                                                               "combinations up to 2^53");
  EXPECT(run(NULL), 2, err, "give --samples N (random samples) or --all (every combination of rows)");
  EXPECT(RUN("--all", "--max-all", "10"), 2, err, "--all would enumerate 36 combinations (the product of the group "
                                                 "sizes), more than --max-all 10");
  EXPECT(RUN("--all", "--seed", "3"), 2, err, "--all enumerates every sample: it cannot be combined with --seed");
  EXPECT(RUN("--all", "--samples", "3"), 2, err, "cannot be combined with --samples");
  EXPECT(RUN("--all", "--output-se", bind("E[d1*d2]", "se.npy")), 2, err, "cannot be combined with --output-se");
  EXPECT(RUN("--all", "--output", bind("nope", "x.npy")), 2, err, "--output: the program has no output named 'nope'");
  HAS(err, "note: its outputs are:\n  E[d1*d2] [] float32\n");
  EXPECT(RUN("--samples", "4", "--group-seed", "g7=1"), 2, err, "no group named 'g7'");
  EXPECT(RUN("--samples", "4", "--input", "x=@y"), 2, err, "--input does not apply to expectation programs");
  EXPECT(RUN("--samples", "4", "--bogus"), 2, err, "unknown option '--bogus'");
  cr_assert_eq(count_entries(), 0, "no file is written on a usage error");
}

/* A graph that fails on the last batch: exit 3 with its message, no file
 * written, an existing file left as it was, no temporary left behind. */
Test(expect, failed_run_leaves_no_file) {
  model = &RATIO8;
  FILE *f = fopen(in_dir("old.npy"), "w");
  fputs("old", f);
  fclose(f);
  g_fail_at = 13;   /* 100 samples = 13 batches of 8 */
  EXPECT(RUN("--samples", "100", "--output", bind("ratio", "old.npy"), "--output", bind("both", "new.npy"),
             "--dump-indices", in_dir("idx.npy")),
         3, err, "ratio: error: ratio failed\n");
  cr_assert_eq(g_calls, 13);
  cr_assert_str_eq(out, "");
  size_t len;
  uint8_t *old = (uint8_t *)tu_read_file(in_dir("old.npy"), &len);
  cr_assert(len == 3 && !memcmp(old, "old", 3));
  free(old);
  cr_assert_eq(count_entries(), 1, "only old.npy");
}
