/* testutil.c — see testutil.h */
#define _GNU_SOURCE /* vasprintf */
#include "testutil.h"
#include "tensor.h"
#include <criterion/criterion.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

typedef struct { Comp c; char *buf; size_t len; } TestComp;

Comp *tu_comp(void) {
  TestComp *t = calloc(1, sizeof *t);
  comp_init(&t->c);
  t->c.err = open_memstream(&t->buf, &t->len);
  return &t->c;
}

const char *tu_diags(Comp *c) {
  TestComp *t = (TestComp *)c;
  fflush(c->err);
  return t->buf ? t->buf : "";
}

void tu_free(Comp *c) {
  TestComp *t = (TestComp *)c;
  fclose(c->err);
  free(t->buf);
  comp_free(c);
  free(t);
}

static const char *joined(const char *dir, const char *rel) {
  static char buf[4][1024];
  static int k;
  k = (k + 1) % 4;
  snprintf(buf[k], sizeof buf[k], "%s/%s", dir, rel);
  return buf[k];
}

const char *tu_data(const char *rel) { return joined(CIRCC_TEST_DATA, rel); }

const char *tu_model(const char *rel) { return joined(CIRCC_MODELS_DIR, rel); }

bool tu_run(Comp *c, const char *text, Stage last, Compilation *cm) {
  return tu_run_named(c, "test.circ", text, last, cm);
}

bool tu_run_named(Comp *c, const char *name, const char *text, Stage last, Compilation *cm) {
  DriverOptions o = {.text = text, .text_len = strlen(text), .text_name = name, .last = last, .verify_each = true};
  return driver_run(c, &o, cm);
}

bool tu_run_file(Comp *c, const char *path, const char *output, Stage last, Compilation *cm) {
  DriverOptions o = {.path = path, .outputs = &output, .noutputs = output != NULL, .last = last, .verify_each = true};
  return driver_run(c, &o, cm);
}

void tu_build(const char *text, const char *prog, const char *opt) {
  Comp *c = tu_comp();
  DriverOptions o = {.text = text, .text_len = strlen(text), .text_name = "test.circ", .last = STAGE_EMIT,
                     .emit = {.name = "prog", .command_line = "test"}, .build = {.output = prog, .opt = opt}};
  Compilation cm = {0};
  cr_assert(driver_run(c, &o, &cm), "%s", tu_diags(c));
  tu_free(c);
}

void tu_build_precision(const char *text, Precision p, const char *dir, const char *name, bool emit_c, bool native) {
  char *out;
  cr_assert(asprintf(&out, "%s/%s", dir, name) > 0);
  Comp *c = tu_comp();
  c->precision = p;
  DriverOptions o = {.text = text, .text_len = strlen(text), .text_name = "p.circ", .last = STAGE_EMIT,
                     .verify_each = true,
                     .emit = {.name = name, .command_line = "test"},
                     .build = {.output = out, .opt = "-O2", .emit_c_only = emit_c, .native = native}};
  Compilation cm = {0};
  cr_assert(driver_run(c, &o, &cm), "%s", tu_diags(c));
  tu_free(c);
  free(out);
}

Tensor *tu_load_f32(Comp *c, const char *dir, const char *file) {
  char *path;
  cr_assert(asprintf(&path, "%s/%s", dir, file) > 0);
  Tensor *t = npy_load(c, path, NO_LOC);
  cr_assert(t && t->dtype == DT_F32, "%s: %s", path, tu_diags(c));
  free(path);
  return t;
}

void tu_save_npy(Comp *c, const Tensor *t, const char *dir, const char *file) {
  char *path;
  cr_assert(asprintf(&path, "%s/%s", dir, file) > 0);
  cr_assert(npy_save(c, t, path), "%s: %s", path, tu_diags(c));
  free(path);
}

int tu_sh(const char *fmt, ...) {
  char *cmd;
  va_list ap;
  va_start(ap, fmt);
  cr_assert(vasprintf(&cmd, fmt, ap) > 0);
  va_end(ap);
  int st = system(cmd);
  free(cmd);
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

char *tu_temp_dir(const char *tag) {
  char *d;
  cr_assert(asprintf(&d, "/tmp/circc_%s_XXXXXX", tag) > 0);
  cr_assert(mkdtemp(d), "cannot create %s", d);
  return d;
}

char *tu_read_file(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  cr_assert_not_null(f, "cannot open %s", path);
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *b = malloc((size_t)n + 1);
  cr_assert_eq(fread(b, 1, (size_t)n, f), (size_t)n, "cannot read %s", path);
  b[n] = 0;
  fclose(f);
  if (len) *len = (size_t)n;
  return b;
}

static uint64_t rng = 88172645463325252ull;

void tu_seed(uint64_t seed) { rng = seed; }

uint64_t tu_rand64(void) {
  rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
  return rng;
}

float tu_frand(void) { return (float)((double)(tu_rand64() >> 40) / (double)(1ull << 24) * 2.0 - 1.0); }

TuGemm tu_gemm_new(TuGemmCase cs) {
  TuGemm d = {.cs = cs};
  int64_t M = cs.M, N = cs.N, K = cs.K;
  d.A = malloc(sizeof(float) * (size_t)(M * K + 1));
  for (int64_t i = 0; i < M * K; i++) d.A[i] = tu_frand() * 4.0f;
  d.a_m = cs.a_t ? 1 : K, d.a_k = cs.a_t ? M : 1;
  d.c_m = cs.c_t ? 1 : N, d.c_n = cs.c_t ? M : 1;
  d.clen = M * N + 64;
  d.C = malloc(sizeof(float) * (size_t)d.clen);
  return d;
}

void tu_gemm_reference(TuGemm *d, double (*a)(float), const double *W) {
  int64_t M = d->cs.M, N = d->cs.N, K = d->cs.K;
  d->ref = calloc((size_t)(M * N + 1), sizeof(double));
  d->bound = calloc((size_t)(M * N + 1), sizeof(double));
  double u = ldexp(1.0, -24) * (double)((K + 31) / 32 * 32 + 1);
  for (int64_t m = 0; m < M; m++)
    for (int64_t n = 0; n < N; n++) {
      double s = 0, sa = 0;
      for (int64_t k = 0; k < K; k++) {
        float x = d->A[m * d->a_m + k * d->a_k];
        double p = (a ? a(x) : (double)x) * W[k * N + n];
        s += p, sa += fabs(p);
      }
      d->ref[m * N + n] = s;
      d->bound[m * N + n] = u * sa + 1e-30;
    }
}

void tu_gemm_free(TuGemm *d) {
  free(d->A), free(d->C), free(d->B), free(d->scratch), free(d->ref), free(d->bound);
}

void tu_gemm_fill_nan(TuGemm *d) {
  for (int64_t i = 0; i < d->clen; i++) d->C[i] = NAN;
}

void tu_gemm_check_close(const char *name, const TuGemm *d) {
  const TuGemmCase *c = &d->cs;
  for (int64_t m = 0; m < c->M; m++)
    for (int64_t n = 0; n < c->N; n++) {
      double got = d->C[m * d->c_m + n * d->c_n], want = d->ref[m * c->N + n];
      cr_assert(fabs(got - want) <= d->bound[m * c->N + n],
                "%s M=%lld N=%lld K=%lld a_t=%d c_t=%d: C[%lld,%lld] = %.9g, want %.9g (bound %.3g)", name,
                (long long)c->M, (long long)c->N, (long long)c->K, c->a_t, c->c_t, (long long)m, (long long)n, got, want,
                d->bound[m * c->N + n]);
    }
  for (int64_t i = c->M * c->N; i < d->clen; i++) cr_assert(isnan(d->C[i]), "%s wrote past C", name);
}

void tu_gemm_check_block(const char *name, const TuGemm *d, int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
  int64_t N = d->cs.N;
  for (int64_t m = 0; m < d->cs.M; m++)
    for (int64_t n = 0; n < N; n++) {
      bool in = m >= m0 && m < m1 && n >= n0 && n < n1;
      float got = d->C[m * d->c_m + n * d->c_n];
      cr_assert(in ? fabs(got - d->ref[m * N + n]) <= d->bound[m * N + n] : isnan(got), "%s: C[%lld,%lld]", name,
                (long long)m, (long long)n);
    }
}

char *tu_product_circuit(int64_t M, int64_t K, int64_t N, bool w_input) {
  char *text;
  cr_assert(asprintf(&text,
                     "'y' Add\n"
                     "  'xw' Einsum ab,bc->ac\n"
                     "    'x' [%lld,%lld] Symbol 11111111-1111-4111-8111-111111111111\n"
                     "    'w' [%lld,%lld] %s\n"
                     "  'bias' [%lld] %s\n"
                     "'w'\n"
                     "'bias'\n",
                     (long long)M, (long long)K, (long long)K, (long long)N,
                     w_input ? "Symbol 22222222-2222-4222-8222-222222222222" : "Array rand", (long long)N,
                     w_input ? "Symbol 33333333-3333-4333-8333-333333333333" : "Array rand") > 0);
  return text;
}

void tu_run_1_and_2_threads(const char *dir, const char *args, const char *out, const char *what) {
  for (int t = 1; t <= 2; t++)
    cr_assert_eq(tu_sh("cd %s && ./prog --threads %d %s --output %s=@%s%d.npy", dir, t, args, out, out, t), 0,
                 "%s: --threads %d", what, t);
  cr_assert_eq(tu_sh("cmp -s %s/%s1.npy %s/%s2.npy", dir, out, dir, out), 0, "%s: 1 and 2 threads differ", what);
}

Tensor *tu_run_product(Comp *c, const char *dir, Precision p, int64_t M, int64_t K, int64_t N, const char *info) {
  char *text = tu_product_circuit(M, K, N, false);
  tu_build_precision(text, p, dir, "prog", false, false);
  Tensor *x = tensor_new(c, DT_F32, &(Shape){.rank = 2, .dim = {M, K}});
  for (int64_t i = 0; i < M * K; i++) ((float *)x->data)[i] = (float)(sin((double)i * 1.7) * (1 + i % 5));
  tu_save_npy(c, x, dir, "x.npy");
  tu_run_1_and_2_threads(dir, "--input x=@x.npy --output w=@w.npy --output bias=@b.npy", "y",
                         arena_printf(&c->arena, "M=%lld", (long long)M));
  cr_assert_eq(tu_sh("%s/prog --info | grep -q '%s'", dir, info), 0, "--info: no line '%s'", info);
  free(text);
  return x;
}

void tu_check_product(int64_t M, int64_t K, int64_t N, const double *xe, const double *we, const float *x,
                      const float *w, const float *b, const float *y) {
  double u = ldexp(1.0, -24) * (double)((K + 31) / 32 * 32 + 1), worst_fp32 = 0;
  for (int64_t m = 0; m < M; m++)
    for (int64_t n = 0; n < N; n++) {
      double ref = 0, mag = 0, exact = 0;
      for (int64_t k = 0; k < K; k++) {
        double p = xe[m * K + k] * we[k * N + n];
        ref += p, mag += fabs(p), exact += (double)x[m * K + k] * w[k * N + n];
      }
      double got = y[m * N + n], want = ref + b[n];
      double bound = u * mag + ldexp(fabs(want), -23);
      cr_assert(fabs(got - want) <= bound, "M=%lld y[%lld,%lld] = %.9g, want %.9g (bound %.3g)", (long long)M,
                (long long)m, (long long)n, got, want, bound);
      worst_fp32 = fmax(worst_fp32, fabs(got - (exact + b[n])));
    }
  cr_assert_gt(worst_fp32, 1e-3, "M=%lld: the product looks fp32 (max diff %.3g)", (long long)M, worst_fp32);
}

void tu_check_expectation_precision(Precision p, const char *pname, double tol) {
  char tag[64];
  snprintf(tag, sizeof tag, "precision_%s_expect", pname);
  char *dir = tu_temp_dir(tag);
  const char *text = "'e' Cumulant\n"
                     "  'y' Einsum ab,bc->ac\n"
                     "    'dv' DiscreteVar\n"
                     "      'rows' [40,16,64] Array rand\n"
                     "      'p' [40] Scalar 0.025\n"
                     "    'w' [64,64] Array rand\n";
  tu_build_precision(text, PRECISION_FP32, dir, "f32", false, false);
  tu_build_precision(text, p, dir, pname, false, false);
  cr_assert_eq(tu_sh("cd %s && ./f32 --all --output e=@f.npy >/dev/null && ./%s --all --threads 1 --output e=@b1.npy "
                     ">/dev/null && ./%s --all --threads 2 --output e=@b2.npy >/dev/null",
                     dir, pname, pname),
               0);
  cr_assert_eq(tu_sh("cmp -s %s/b1.npy %s/b2.npy", dir, dir), 0, "1 and 2 threads differ");
  cr_assert_eq(tu_sh("%s/%s --info | grep -q '^precision:    %s (GEMMs: '", dir, pname, pname), 0);
  Comp *c = tu_comp();
  const Tensor *f = tu_load_f32(c, dir, "f.npy"), *b = tu_load_f32(c, dir, "b1.npy");
  double big = 0, worst = 0;
  for (int64_t i = 0; i < 16 * 64; i++) {
    double x = ((const float *)f->data)[i], y = ((const float *)b->data)[i];
    big = fmax(big, fabs(x)), worst = fmax(worst, fabs(x - y));
  }
  cr_assert(worst > 0 && worst <= tol * big, "%s vs fp32: max diff %.3g of values up to %.3g", pname, worst, big);
  tu_free(c);
  tu_sh("rm -rf %s", dir);
  free(dir);
}
