/* test_templates.c — the elementwise and row kernel templates generated
 * programs include (templates/elementwise_f32.h, templates/row_f32.h), each
 * against its reference in double (libm). GEMM has its own test_gemm.c. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "elementwise_f32.h"
#include "row_f32.h"

static void near(double got, double want, double rel, double abs_tol, const char *what, double x) {
  cr_assert(fabs(got - want) <= abs_tol + rel * fabs(want), "%s(%.9g) = %.9g, want %.9g", what, x, got, want);
}

Test(templates, exp_matches_libm_over_its_range) {
  for (double x = -87.0; x <= 88.7; x += 0.0137) near(fn_exp((float)x), exp((float)x), 3e-7, 0, "fn_exp", x);
  for (double x = -1; x <= 1; x += 1e-4) near(fn_exp((float)x), exp((float)x), 3e-7, 0, "fn_exp", x);
  cr_assert_eq(fn_exp(0.0f), 1.0f);
  cr_assert(isnan(fn_exp(NAN)));
  cr_assert(isinf(fn_exp(INFINITY)) && fn_exp(INFINITY) > 0);
  cr_assert(isinf(fn_exp(89.0f)));
  cr_assert_eq(fn_exp(-INFINITY), 0.0f);
  cr_assert_eq(fn_exp(-100.0f), 0.0f); /* below e^-87.3 flushes to 0 */
}

Test(templates, tanh_matches_libm) {
  for (double x = -12; x <= 12; x += 0.00713) near(fn_tanh((float)x), tanh((float)x), 1e-6, 1e-7, "fn_tanh", x);
  for (double x = -0.6; x <= 0.6; x += 1e-5) near(fn_tanh((float)x), tanh((float)x), 1e-6, 1e-9, "fn_tanh", x);
  cr_assert_eq(fn_tanh(0.0f), 0.0f);
  cr_assert_eq(fn_tanh(INFINITY), 1.0f);
  cr_assert_eq(fn_tanh(-INFINITY), -1.0f);
  cr_assert(isnan(fn_tanh(NAN)));
}

Test(templates, activations_match_their_definitions) {
  for (double x = -10; x <= 10; x += 0.0131) {
    float f = (float)x;
    near(fn_sigmoid(f), 1 / (1 + exp(-(double)f)), 1e-6, 1e-7, "sigmoid", x);
    near(fn_gelu(f), 0.5 * f * (1 + erf(f / sqrt(2.0))), 1e-6, 1e-7, "gelu", x);
    near(fn_gelu_new(f), 0.5 * f * (1 + tanh(sqrt(2 / M_PI) * (f + 0.044715 * (double)f * f * f))), 1e-6, 1e-6,
         "gelu_new", x);
    near(fn_log_exp_p_1(f), log1p(exp((double)f)), 1e-6, 1e-7, "log_exp_p_1", x);
    near(fn_gaussian_pdf(f), exp(-0.5 * (double)f * f) / sqrt(2 * M_PI), 1e-6, 1e-8, "gaussian_pdf", x);
    near(fn_gaussian_cdf(f), 0.5 * erfc(-(double)f / sqrt(2.0)), 1e-6, 1e-8, "gaussian_cdf", x);
    near(fn_relu(f), f > 0 ? f : 0, 0, 0, "relu", x);
    near(fn_step(f), f > 0 ? 1 : 0, 0, 0, "step", x);
  }
  near(fn_gelu(1.0f), 0.8413447460685429, 1e-7, 0, "gelu", 1);
  near(fn_gelu_new(1.0f), 0.8411919906082768, 1e-7, 0, "gelu_new", 1);
  near(fn_logit(0.25f), log(0.25 / 0.75), 1e-7, 0, "logit", 0.25);
  near(fn_rsqrt(4.0f), 0.5, 0, 0, "rsqrt", 4);
}

Test(templates, casts_round_like_the_target_type) {
  cr_assert_eq(cast_i64(-2.7f), -2.0f);
  cr_assert_eq(cast_i8(200.0f), -56.0f);
  cr_assert_eq(cast_u8(300.0f), 44.0f);
  cr_assert_eq(cast_bool(-0.5f), 1.0f);
  cr_assert_eq(cast_f16(1.0f + 1.0f / 4096), 1.0f);          /* below half an f16 ulp: rounds down */
  cr_assert_eq(cast_f16(1.0f + 3.0f / 2048), 1.0f + 2.0f / 1024); /* tie to even */
  cr_assert(isinf(cast_f16(70000.0f)));
  cr_assert_eq(cast_bf16(1.0f + 1.0f / 256), 1.0f); /* tie: even */
  cr_assert_eq(cast_bf16(1.0f + 3.0f / 256), 1.0f + 1.0f / 64);
}

Test(templates, row_kernels_match_the_reference) {
  float x[3 * 7], y[3 * 7];
  for (int i = 0; i < 21; i++) x[i] = (float)sin(i * 1.7) * 5;
  /* a strided row: every third element */
  circc_softmax_row(x, 3, y, 1, 7);
  double m = -INFINITY, sum = 0;
  for (int j = 0; j < 7; j++) m = fmax(m, x[3 * j]);
  for (int j = 0; j < 7; j++) sum += exp(x[3 * j] - m);
  for (int j = 0; j < 7; j++) near(y[j], exp(x[3 * j] - m) / sum, 1e-6, 0, "softmax", j);
  circc_log_softmax_row(x, 3, y, 2, 7);
  for (int j = 0; j < 7; j++) near(y[2 * j], x[3 * j] - m - log(sum), 1e-6, 1e-6, "log_softmax", j);
  cr_assert_eq(circc_max_row(x, 3, 7), (float)m);
  float mn = x[0];
  for (int j = 1; j < 7; j++) mn = fminf(mn, x[3 * j]);
  cr_assert_eq(circc_min_row(x, 3, 7), mn);
  x[6] = NAN;
  cr_assert(isnan(circc_max_row(x, 3, 7)));
  /* large-magnitude logits: no overflow */
  float big[4] = {1000, 1001, -1000, 1000}, p[4];
  circc_softmax_row(big, 1, p, 1, 4);
  near(p[1], exp(1.0) / (2 + exp(1.0)), 1e-6, 0, "softmax", 1);
  cr_assert_eq(p[2], 0.0f);
}

/* circc_row_max_of as built with AVX-512, with AVX2 and portably
 * (row_max_builds.c); the portable build is the scalar path */
float row_max_avx512(const float *x, int64_t xs, int64_t len);
float row_max_avx2(const float *x, int64_t xs, int64_t len);
float row_max_portable(const float *x, int64_t xs, int64_t len);

static int cpu_has_avx512f(void) {
#if defined(ROW_MAX_X86) && defined(__GNUC__)
  return __builtin_cpu_supports("avx512f");
#else
  return 0;
#endif
}

/* The row maximum's vector paths (unit stride) against the scalar one (the
 * portable build, and the same row at stride 2) and against the largest
 * non-NaN element: NaNs ignored, an all-NaN row -inf, ties of +0 and -0 kept
 * as the lanes meet them, every tail length. The AVX-512 build runs where
 * the CPU has it (skipped visibly otherwise). */
Test(templates, row_max_vector_paths_match_the_scalar_one) {
  enum { MAXLEN = 70 };
  float x[MAXLEN], x2[2 * MAXLEN];
  unsigned seed = 7;
  for (int len = 1; len <= MAXLEN; len++)
    for (int trial = 0; trial < 20; trial++) {
      float want = -INFINITY;
      for (int j = 0; j < len; j++) {
        seed = seed * 1103515245u + 12345u;
        unsigned r = seed >> 16;
        x[j] = r % 7 == 0 ? NAN : r % 7 == 1 ? 0.0f : r % 7 == 2 ? -0.0f : trial % 4 == 0 ? -INFINITY
                                                                       : (float)((int)(r % 2001) - 1000) / 8.0f;
        if (trial % 5 == 1) x[j] = NAN;
        x2[2 * j] = x[j], x2[2 * j + 1] = 12345.0f;
        if (!isnan(x[j]) && x[j] > want) want = x[j];
      }
      const float scalar = row_max_portable(x, 1, len), strided = row_max_avx2(x2, 2, len);
      cr_assert(scalar == want, "len %d trial %d: %a, want %a", len, trial, scalar, want);
      cr_assert(memcmp(&strided, &scalar, 4) == 0, "len %d trial %d: stride 2 %a, unit stride %a", len, trial,
                strided, scalar);
      const float avx2 = row_max_avx2(x, 1, len);
      cr_assert(memcmp(&avx2, &scalar, 4) == 0, "len %d trial %d: AVX2 %a, scalar %a", len, trial, avx2, scalar);
      if (cpu_has_avx512f()) {
        const float avx512 = row_max_avx512(x, 1, len);
        cr_assert(memcmp(&avx512, &scalar, 4) == 0, "len %d trial %d: AVX-512 %a, scalar %a", len, trial, avx512,
                  scalar);
      }
    }
  if (!cpu_has_avx512f()) cr_skip_test("this CPU has no AVX-512: its build of the row maximum was not run");
}

/* softmax writes 0 without an exp for blocks of 16 far below the row's max
 * (masked keys): the bits are those of fn_exp on every element, including
 * values just above fn_exp's cut-off (-87.3) and a NaN in a masked block */
Test(templates, softmax_skips_masked_blocks_with_the_same_bits) {
  enum { LEN = 16 * 9 + 5 };
  float x[LEN], y[LEN], want[LEN];
  for (int nan_at = -1; nan_at < LEN; nan_at += 37) {
    for (int j = 0; j < LEN; j++) x[j] = j < 20 ? (float)sin(j * 0.9) : j < 60 ? -10000.0f : -86.0f - (float)(j % 5);
    if (nan_at >= 0) x[nan_at] = NAN;
    circc_softmax_row(x, 1, y, 1, LEN);
    const float m = circc_row_max_of(x, 1, LEN);
    for (int j = 0; j < LEN; j++) want[j] = fn_exp(x[j] - m);
    const float inv = (float)(1.0 / circc_row_sum_f64(want, 1, LEN, 0.0, 1));
    for (int j = 0; j < LEN; j++) {
      want[j] *= inv;
      cr_assert(memcmp(&y[j], &want[j], 4) == 0, "element %d (NaN at %d): %a, want %a", j, nan_at, y[j], want[j]);
    }
    if (nan_at < 0) cr_assert_eq(y[30], 0.0f, "a masked key's probability is 0");
    cr_assert(nan_at < 0 || isnan(y[0]), "a NaN reaches every probability");
  }
}

/* layernorm of one row against the double formula; rows far from 0 (a large
 * mean with a small spread) keep their digits; w and b are optional */
Test(templates, layernorm_row_matches_the_reference) {
  enum { LEN = 37 };
  float x[2 * LEN], y[3 * LEN], w[LEN], b[2 * LEN];
  for (int j = 0; j < LEN; j++) {
    x[2 * j] = 1000.0f + (float)sin(j * 1.3) * 0.01f;
    x[2 * j + 1] = 7.0f;
    w[j] = (float)cos(j * 0.7);
    b[2 * j] = (float)j * 0.1f;
  }
  for (int variant = 0; variant < 4; variant++) {
    const float *wp = variant & 1 ? w : NULL, *bp = variant & 2 ? b : NULL;
    circc_layernorm_row(x, 2, y, 3, LEN, 1e-5, wp, 1, bp, 2);
    double mean = 0, var = 0;
    for (int j = 0; j < LEN; j++) mean += x[2 * j];
    mean /= LEN;
    for (int j = 0; j < LEN; j++) var += (x[2 * j] - mean) * (x[2 * j] - mean);
    var /= LEN;
    for (int j = 0; j < LEN; j++) {
      double want = (x[2 * j] - mean) / sqrt(var + 1e-5) * (wp ? w[j] : 1) + (bp ? b[2 * j] : 0);
      near(y[3 * j], want, 1e-5, 1e-5, "layernorm", j);
    }
  }
  /* a constant row: 0 (the variance is eps), then the bias */
  circc_layernorm_row(x + 1, 2, y, 1, LEN, 1e-5, w, 1, b, 2);
  for (int j = 0; j < LEN; j++) cr_assert_eq(y[j], b[2 * j]);
}

/* The point of fn_exp / fn_tanh is that loops over them vectorise (gcc 12
 * once stopped doing so for tanh and gelu_new when the clamps were nested
 * ternaries): compile one loop per function with AVX2 and the flags circc
 * gives programs (build.c), and read gcc's report. */
Test(templates, elementwise_loops_vectorise_with_gcc) {
  if (system("command -v gcc >/dev/null 2>&1") != 0) {
    cr_log_warn("gcc not installed; skipped");
    return;
  }
  char dir[] = "/tmp/circc-vec-XXXXXX";
  cr_assert(mkdtemp(dir));
  static const char *const fns[] = {"fn_exp", "fn_tanh", "fn_sigmoid", "fn_gelu_new"};
  char path[256];
  snprintf(path, sizeof path, "%s/loops.c", dir);
  FILE *f = fopen(path, "w");
  cr_assert(f);
  fprintf(f, "#include \"%s/elementwise_f32.h\"\n", CIRCC_TEMPLATE_DIR);
  for (size_t i = 0; i < sizeof fns / sizeof *fns; i++) /* function i's loop is on line i + 2 */
    fprintf(f, "void loop%zu(float *restrict y, const float *restrict x, const float *restrict b, long n) { for (long i = 0; i < n; i++) y[i] = %s(x[i] + b[i]); }\n",
            i, fns[i]);
  fclose(f);
  char cmd[512];
  snprintf(cmd, sizeof cmd, "cd %s && gcc -std=c11 -O3 -mavx2 -mfma -fno-trapping-math -c loops.c -fopt-info-vec-optimized 2>report.txt", dir);
  cr_assert(system(cmd) == 0, "%s failed", cmd);
  snprintf(path, sizeof path, "%s/report.txt", dir);
  f = fopen(path, "r");
  cr_assert(f);
  bool vectorised[sizeof fns / sizeof *fns] = {0};
  char line[1024];
  while (fgets(line, sizeof line, f)) {
    int ln;
    if (sscanf(line, "loops.c:%d:", &ln) == 1 && strstr(line, "loop vectorized") && ln >= 2 && ln < 2 + (int)(sizeof fns / sizeof *fns))
      vectorised[ln - 2] = true;
  }
  fclose(f);
  for (size_t i = 0; i < sizeof fns / sizeof *fns; i++) cr_expect(vectorised[i], "gcc did not vectorise a loop over %s", fns[i]);
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  cr_assert(system(cmd) == 0);
}
