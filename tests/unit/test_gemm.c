/* test_gemm.c — templates/gemm_f32.h against its naive twin gemm_f32_ref.h:
 * sampled and GPT-2 shapes under every stride layout (row-major, transposed,
 * gapped, general) with an error bound of 1e-5·sqrt(K)·Σ|a||b|, untouched
 * memory outside the addressed C elements, bit-identical results for any split
 * of rows or columns, and K = 0; circc_gemv_f32 (one row against B stored by
 * columns) the same way, plus its column mask, the zero-coefficient rows the
 * one-row streaming path skips, and the pre-packed B path (its layout, and the
 * same bits as the unpacked path). The header is compiled three times: this
 * file natively (-march=native), and again as variant translation units with
 * GEMM_TEST_VARIANT defined (tests/CMakeLists.txt): `avx2` (-mavx2 -mfma) and
 * `portable` (CIRCC_GEMM_PORTABLE, the plain-C micro-kernel). */
#include <stdint.h>

/* Each translation unit exports its build of the kernel under these names. */
typedef void GemmFn(int64_t m0, int64_t m1, int64_t N, int64_t K, const float *A, int64_t a_m, int64_t a_k,
                    const float *B, int64_t b_k, int64_t b_n, float *C, int64_t c_m, int64_t c_n, float *scratch);
typedef int64_t GemmScratchFn(int64_t N, int64_t K);
typedef const char *GemmIsaFn(void);
typedef void GemvFn(int64_t N, int64_t K, const float *a, const float *B, int64_t b_n, float *y, int64_t c_n,
                    const float *mask, int64_t mask_n);
typedef void GemmPackedFn(int64_t m0, int64_t m1, int64_t n0, int64_t n1, int64_t N, int64_t K, const float *A,
                          int64_t a_m, int64_t a_k, const float *W, float *C, int64_t c_m, int64_t c_n, float *scratch);
#define GEMM_DECLARE(v)                                                                                              \
  GemmFn gemm_rows_##v;                                                                                              \
  GemmScratchFn gemm_scratch_##v;                                                                                    \
  GemmIsaFn gemm_isa_##v;                                                                                            \
  GemvFn gemv_##v;                                                                                                   \
  GemmPackedFn gemm_packed_##v;
#define GEMM_DEFINE(v)                                                                                               \
  void gemm_packed_##v(int64_t m0, int64_t m1, int64_t n0, int64_t n1, int64_t N, int64_t K, const float *A,       \
                       int64_t a_m, int64_t a_k, const float *W, float *C, int64_t c_m, int64_t c_n, float *scratch) { \
    circc_gemm_f32_packed_rows(m0, m1, n0, n1, N, K, A, a_m, a_k, W, C, c_m, c_n, scratch);                          \
  }                                                                                                                  \
  void gemm_rows_##v(int64_t m0, int64_t m1, int64_t N, int64_t K, const float *A, int64_t a_m, int64_t a_k,       \
                     const float *B, int64_t b_k, int64_t b_n, float *C, int64_t c_m, int64_t c_n, float *scratch) { \
    circc_gemm_f32_rows(m0, m1, N, K, A, a_m, a_k, B, b_k, b_n, C, c_m, c_n, scratch);                               \
  }                                                                                                                  \
  int64_t gemm_scratch_##v(int64_t N, int64_t K) { return circc_gemm_scratch_floats(N, K); }                         \
  const char *gemm_isa_##v(void) { return CIRCC_GEMM_ISA; }                                                          \
  void gemv_##v(int64_t N, int64_t K, const float *a, const float *B, int64_t b_n, float *y, int64_t c_n,          \
                const float *mask, int64_t mask_n) {                                                                 \
    circc_gemv_f32(N, K, a, B, b_n, y, c_n, mask, mask_n);                                                           \
  }
GEMM_DECLARE(native)
GEMM_DECLARE(avx2)
GEMM_DECLARE(portable)

#ifdef GEMM_TEST_VARIANT
/* ------------------------------------------------ a variant translation unit */
#include "gemm_f32.h"
#define GEMM_DEFINE_(v) GEMM_DEFINE(v)
GEMM_DEFINE_(GEMM_TEST_VARIANT)
#else
/* ------------------------------------------------------------ the test suite */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "testutil.h"
#include "gemm_f32.h"
#include "gemm_f32_ref.h"

GEMM_DEFINE(native)
TestSuite(gemm);

typedef struct Variant {
  const char *name;
  GemmFn *rows;
  GemmScratchFn *scratch;
  GemmIsaFn *isa;
  GemvFn *gemv;
  GemmPackedFn *packed;
} Variant;

static const Variant NATIVE = {"native", gemm_rows_native, gemm_scratch_native, gemm_isa_native, gemv_native,
                               gemm_packed_native};
static const Variant AVX2 = {"avx2", gemm_rows_avx2, gemm_scratch_avx2, gemm_isa_avx2, gemv_avx2, gemm_packed_avx2};
static const Variant PORTABLE = {"portable", gemm_rows_portable, gemm_scratch_portable, gemm_isa_portable,
                                 gemv_portable, gemm_packed_portable};

static int have_avx2(void) {
#if defined(__x86_64__) || defined(__i386__)
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
  return 0;
#endif
}

/* Operand layouts: how a (rows x cols) matrix sits in memory. */
enum { ROW, TRANS, GAP, GENERAL, NLAYOUT };
static const char *LAYOUT[] = {"row", "trans", "gap", "general"};

typedef struct Mat {
  float *p;
  int64_t s_r, s_c; /* strides of the row and column index */
  int64_t extent;   /* floats allocated (exactly what the strides reach) */
} Mat;

static Mat mat_new(int64_t rows, int64_t cols, int layout) {
  Mat m = {0};
  switch (layout) {
  case ROW: m.s_r = cols, m.s_c = 1; break;
  case TRANS: m.s_r = 1, m.s_c = rows; break;
  case GAP: m.s_r = cols + 5, m.s_c = 1; break;
  default: m.s_r = 3, m.s_c = 3 * rows + 1; break; /* neither stride 1 */
  }
  m.extent = rows > 0 && cols > 0 ? (rows - 1) * m.s_r + (cols - 1) * m.s_c + 1 : 0;
  /* exact size, so ASan builds catch any read or write past the last element */
  m.p = malloc((size_t)(m.extent > 0 ? m.extent : 1) * sizeof(float));
  cr_assert(m.p);
  return m;
}

static void mat_fill(Mat *m, int64_t rows, int64_t cols) {
  for (int64_t i = 0; i < m->extent; i++) m->p[i] = 1e30f; /* gaps: would poison a sum */
  for (int64_t r = 0; r < rows; r++)
    for (int64_t c = 0; c < cols; c++) m->p[r * m->s_r + c * m->s_c] = tu_frand();
}

static float *scratch_new(const Variant *v, int64_t N, int64_t K) {
  void *p = NULL;
  int64_t n = v->scratch(N, K);
  cr_assert(n >= 0);
  cr_assert_eq(posix_memalign(&p, 64, (size_t)(n > 0 ? n : 1) * sizeof(float)), 0);
  return p;
}

static const float SENTINEL = -12345.5f;

/* Runs rows [m0,m1) of an M x N x K product with the given layouts and checks
 * them against the reference: error within 1e-5·sqrt(K)·Σ|a||b| (exactly 0
 * for K = 0), every other C element untouched. If ncheck > 0 about that many
 * columns a row are compared, at offsets that shift from row to row, plus the
 * last column (large shapes). On failure prints the max-abs and max-rel error
 * and the worst index. */
static void check_case(const Variant *v, int64_t M, int64_t N, int64_t K, int la, int lb, int lc, int64_t m0,
                       int64_t m1, int64_t ncheck) {
  Mat A = mat_new(M, K, la), B = mat_new(K, N, lb), C = mat_new(M, N, lc);
  mat_fill(&A, M, K), mat_fill(&B, K, N);
  for (int64_t i = 0; i < C.extent; i++) C.p[i] = SENTINEL;
  float *scratch = scratch_new(v, N, K);
  v->rows(m0, m1, N, K, A.p, A.s_r, A.s_c, B.p, B.s_r, B.s_c, C.p, C.s_r, C.s_c, scratch);

  int64_t step = ncheck > 0 && N > ncheck ? N / ncheck : 1;
  double max_abs = 0, max_rel = 0, worst_ratio = 0;
  int64_t worst_m = -1, worst_n = -1;
  float worst_got = 0, worst_want = 0;
  char *addressed = calloc((size_t)(C.extent > 0 ? C.extent : 1), 1);
  cr_assert(addressed);
  for (int64_t m = m0; m < m1; m++)
    for (int64_t n = 0; n < N; n++) {
      float *c = &C.p[m * C.s_r + n * C.s_c];
      addressed[m * C.s_r + n * C.s_c] = 1;
      if ((n + 5 * m) % step != 0 && n != N - 1) continue; /* sampled: every residue over the rows */
      float want;
      circc_gemm_f32_ref(0, 1, 1, K, A.p + m * A.s_r, A.s_r, A.s_c, B.p + n * B.s_c, B.s_r, B.s_c, &want, 1, 1);
      double absdot = 0;
      for (int64_t k = 0; k < K; k++) absdot += fabs((double)A.p[m * A.s_r + k * A.s_c] * (double)B.p[k * B.s_r + n * B.s_c]);
      double err = fabs((double)*c - (double)want), tol = 1e-5 * sqrt((double)(K > 0 ? K : 1)) * absdot;
      double ratio = err == 0 ? 0 : tol > 0 ? err / tol : INFINITY;
      if (err != err) ratio = INFINITY; /* NaN */
      if (err > max_abs) max_abs = err;
      if (want != 0 && err / fabs((double)want) > max_rel) max_rel = err / fabs((double)want);
      if (ratio > worst_ratio || (ratio != ratio)) worst_ratio = ratio, worst_m = m, worst_n = n, worst_got = *c, worst_want = want;
    }
  cr_expect(worst_ratio <= 1.0,
            "%s %lldx%lldx%lld A=%s B=%s C=%s rows [%lld,%lld): max-abs %.3g max-rel %.3g, worst C[%lld,%lld] = %.9g, "
            "want %.9g (%.3g x the bound)",
            v->name, (long long)M, (long long)N, (long long)K, LAYOUT[la], LAYOUT[lb], LAYOUT[lc], (long long)m0,
            (long long)m1, max_abs, max_rel, (long long)worst_m, (long long)worst_n, worst_got, worst_want, worst_ratio);
  int64_t stray = -1;
  for (int64_t i = 0; i < C.extent && stray < 0; i++)
    if (!addressed[i] && memcmp(&C.p[i], &SENTINEL, sizeof(float)) != 0) stray = i;
  cr_expect(stray < 0, "%s %lldx%lldx%lld A=%s B=%s C=%s rows [%lld,%lld): wrote C.p[%lld], which it does not own",
            v->name, (long long)M, (long long)N, (long long)K, LAYOUT[la], LAYOUT[lb], LAYOUT[lc], (long long)m0,
            (long long)m1, (long long)stray);
  free(addressed), free(scratch), free(A.p), free(B.p), free(C.p);
}

static const int64_t SIZES[] = {0, 1, 2, 3, 7, 8, 15, 16, 17, 31, 33, 63, 64, 65, 100, 127, 129, 257, 768};
enum { NSIZES = sizeof SIZES / sizeof SIZES[0], NSMALL = 14 /* sizes up to 65 */ };

/* Every combination of the small sizes (layouts rotating), then random
 * combinations of all sizes with random layouts and row ranges, capped in work. */
static void shapes(const Variant *v) {
  tu_seed(12345);
  int i = 0;
  for (int a = 0; a < NSMALL; a++)
    for (int b = 0; b < NSMALL; b++)
      for (int c = 0; c < NSMALL; c++, i++)
        check_case(v, SIZES[a], SIZES[b], SIZES[c], i % NLAYOUT, i / NLAYOUT % NLAYOUT, i / 16 % NLAYOUT, 0, SIZES[a], 0);
  for (int done = 0; done < 150;) {
    int64_t M = SIZES[tu_rand64() % NSIZES], N = SIZES[tu_rand64() % NSIZES], K = SIZES[tu_rand64() % NSIZES];
    if ((double)M * (double)N * (double)K > 3e7) continue;
    int64_t m0 = M ? (int64_t)(tu_rand64() % (uint64_t)M) : 0, m1 = m0 + (M - m0 ? (int64_t)(tu_rand64() % (uint64_t)(M - m0 + 1)) : 0);
    if (done % 3 == 0) m0 = 0, m1 = M;
    check_case(v, M, N, K, (int)(tu_rand64() % NLAYOUT), (int)(tu_rand64() % NLAYOUT), (int)(tu_rand64() % NLAYOUT), m0, m1, 0);
    done++;
  }
}

/* GPT-2 small's projections (row-major and transposed weights) and the
 * unembedding, each checked on a sample of its columns. */
static void gpt2(const Variant *v) {
  tu_seed(777);
  static const int64_t shp[][3] = {{64, 768, 768}, {64, 2304, 768}, {64, 768, 3072}, {256, 768, 768}};
  for (size_t s = 0; s < sizeof shp / sizeof shp[0]; s++)
    for (int lb = ROW; lb <= TRANS; lb++) check_case(v, shp[s][0], shp[s][1], shp[s][2], ROW, lb, ROW, 0, shp[s][0], 128);
  for (int lb = ROW; lb <= TRANS; lb++) check_case(v, 1, 50257, 768, ROW, lb, ROW, 0, 1, 300);
  check_case(v, 5, 50257, 768, ROW, TRANS, ROW, 0, 5, 200);
}

/* Split invariance: rows [0,M) at once, then as [0,a)+[a,b)+[b,M), then the
 * columns as three calls; every variant must give bit-identical C. */
static void split_one(const Variant *v, int64_t M, int64_t N, int64_t K, int la, int lb, int lc) {
  Mat A = mat_new(M, K, la), B = mat_new(K, N, lb), C0 = mat_new(M, N, lc), C1 = mat_new(M, N, lc);
  mat_fill(&A, M, K), mat_fill(&B, K, N);
  float *scratch = scratch_new(v, N, K);
  for (int64_t i = 0; i < C0.extent; i++) C0.p[i] = C1.p[i] = SENTINEL;
  v->rows(0, M, N, K, A.p, A.s_r, A.s_c, B.p, B.s_r, B.s_c, C0.p, C0.s_r, C0.s_c, scratch);
  for (int trial = 0; trial < 6; trial++) {
    int64_t a = (int64_t)(tu_rand64() % (uint64_t)(M + 1)), b = (int64_t)(tu_rand64() % (uint64_t)(M + 1));
    if (a > b) { int64_t t = a; a = b; b = t; }
    if (trial == 0) a = 1, b = M > 1 ? M - 1 : M; /* single rows at both ends */
    for (int64_t i = 0; i < C1.extent; i++) C1.p[i] = SENTINEL;
    v->rows(0, a, N, K, A.p, A.s_r, A.s_c, B.p, B.s_r, B.s_c, C1.p, C1.s_r, C1.s_c, scratch);
    v->rows(a, b, N, K, A.p, A.s_r, A.s_c, B.p, B.s_r, B.s_c, C1.p, C1.s_r, C1.s_c, scratch);
    v->rows(b, M, N, K, A.p, A.s_r, A.s_c, B.p, B.s_r, B.s_c, C1.p, C1.s_r, C1.s_c, scratch);
    cr_expect(memcmp(C0.p, C1.p, (size_t)C0.extent * sizeof(float)) == 0,
              "%s %lldx%lldx%lld A=%s B=%s C=%s: rows split at %lld, %lld differ from one call", v->name,
              (long long)M, (long long)N, (long long)K, LAYOUT[la], LAYOUT[lb], LAYOUT[lc], (long long)a, (long long)b);
    int64_t c = (int64_t)(tu_rand64() % (uint64_t)(N + 1)), d = (int64_t)(tu_rand64() % (uint64_t)(N + 1));
    if (c > d) { int64_t t = c; c = d; d = t; }
    for (int64_t i = 0; i < C1.extent; i++) C1.p[i] = SENTINEL;
    int64_t cut[4] = {0, c, d, N};
    for (int p = 0; p < 3; p++)
      v->rows(0, M, cut[p + 1] - cut[p], K, A.p, A.s_r, A.s_c, B.p + cut[p] * B.s_c, B.s_r, B.s_c,
              C1.p + cut[p] * C1.s_c, C1.s_r, C1.s_c, scratch);
    cr_expect(memcmp(C0.p, C1.p, (size_t)C0.extent * sizeof(float)) == 0,
              "%s %lldx%lldx%lld A=%s B=%s C=%s: columns split at %lld, %lld differ from one call", v->name,
              (long long)M, (long long)N, (long long)K, LAYOUT[la], LAYOUT[lb], LAYOUT[lc], (long long)c, (long long)d);
  }
  free(scratch), free(A.p), free(B.p), free(C0.p), free(C1.p);
}

static void split(const Variant *v) {
  tu_seed(4242);
  static const int64_t shp[][3] = {{37, 100, 600}, {9, 50, 513},  {130, 7, 300}, {6, 2000, 257}, {3, 3, 3},
                                   {200, 1, 520},  {1, 300, 700}, {23, 129, 1},  {100, 40, 300}};
  for (size_t s = 0; s < sizeof shp / sizeof shp[0]; s++)
    for (int la = 0; la < NLAYOUT; la++)
      for (int lb = 0; lb < NLAYOUT; lb++) split_one(v, shp[s][0], shp[s][1], shp[s][2], la, lb, (la + lb) % NLAYOUT);
  for (int lb = ROW; lb <= TRANS; lb++) split_one(v, 64, 768, 768, ROW, lb, ROW); /* a GPT-2 shape */
}

/* ------------------------------------------------------------ circc_gemv_f32 */

/* y = a·B for B stored by columns (column n at B + n*b_n, b_n = K + gap), y
 * with stride c_n, and a mask that zeroes (0 or -0) every third column and
 * runs of them (columns 16..39 and the last 300: a decode cache) when `masked`; the
 * masked columns and the gaps hold NaN, which must not reach y. Checks
 * every column against the reference (same bound as check_case; masked ones
 * exactly 0), y's gaps untouched, and that splitting the columns into three
 * calls gives the same bits. */
static void gemv_case(const Variant *v, int64_t N, int64_t K, int64_t gap, bool masked) {
  int64_t b_n = K + gap, c_n = 2;
  float *a = malloc((size_t)(K > 0 ? K : 1) * sizeof(float));
  float *B = malloc((size_t)(N * b_n > 0 ? N * b_n : 1) * sizeof(float));
  float *mask = malloc((size_t)(N > 0 ? N : 1) * sizeof(float));
  float *y = malloc((size_t)(N > 0 ? N * c_n : 1) * sizeof(float)), *y2 = malloc((size_t)(N > 0 ? N * c_n : 1) * sizeof(float));
  cr_assert(a && B && mask && y && y2);
  for (int64_t k = 0; k < K; k++) a[k] = tu_frand();
  for (int64_t n = 0; n < N; n++) {
    mask[n] = masked && (n % 3 == 1 || (n >= 16 && n < 40) || n >= N - 300) ? (n % 2 ? -0.0f : 0.0f) : tu_frand();
    for (int64_t k = 0; k < b_n; k++) B[n * b_n + k] = k < K && mask[n] != 0.0f ? tu_frand() : NAN;
  }
  for (int64_t i = 0; i < N * c_n; i++) y[i] = y2[i] = SENTINEL;
  v->gemv(N, K, a, B, b_n, y, c_n, masked ? mask : NULL, 1);
  for (int64_t n = 0; n < N; n++) {
    cr_expect(memcmp(&y[n * c_n + 1], &SENTINEL, sizeof(float)) == 0, "%s gemv %lldx%lld: wrote a gap", v->name,
              (long long)N, (long long)K);
    if (mask[n] == 0.0f) {
      cr_expect(y[n * c_n] == 0.0f, "%s gemv %lldx%lld: masked column %lld = %g", v->name, (long long)N, (long long)K,
                (long long)n, y[n * c_n]);
      continue;
    }
    float want;
    circc_gemm_f32_ref(0, 1, 1, K, a, 0, 1, B + n * b_n, 1, 0, &want, 1, 1);
    double absdot = 0;
    for (int64_t k = 0; k < K; k++) absdot += fabs((double)a[k] * (double)B[n * b_n + k]);
    double err = fabs((double)y[n * c_n] - (double)want), tol = 1e-5 * sqrt((double)(K > 0 ? K : 1)) * absdot;
    cr_expect(err <= tol, "%s gemv %lldx%lld column %lld: got %.9g want %.9g", v->name, (long long)N, (long long)K,
              (long long)n, y[n * c_n], want);
  }
  int64_t c = N / 3, d = N - N / 4;
  int64_t cut[4] = {0, c, d, N};
  for (int p = 0; p < 3; p++)
    v->gemv(cut[p + 1] - cut[p], K, a, B + cut[p] * b_n, b_n, y2 + cut[p] * c_n, c_n, masked ? mask + cut[p] : NULL, 1);
  cr_expect(memcmp(y, y2, (size_t)(N * c_n) * sizeof(float)) == 0, "%s gemv %lldx%lld: a column split changes bits",
            v->name, (long long)N, (long long)K);
  free(a), free(B), free(mask), free(y), free(y2);
}

static void gemv_shapes(const Variant *v) {
  tu_seed(2024);
  static const int64_t K[] = {0, 1, 5, 15, 16, 17, 31, 32, 33, 47, 64, 100, 768, 3072};
  for (size_t i = 0; i < sizeof K / sizeof K[0]; i++)
    for (int masked = 0; masked < 2; masked++) gemv_case(v, 37, K[i], (int64_t)(i % 3), masked);
  gemv_case(v, 2304, 768, 0, false); /* GPT-2 shapes */
  gemv_case(v, 1024, 64, 0, true);
}

Test(gemm, gemv_native) { gemv_shapes(&NATIVE); }
Test(gemm, gemv_portable) { gemv_shapes(&PORTABLE); }
Test(gemm, gemv_avx2) {
  if (!have_avx2()) cr_skip_test("no AVX2+FMA");
  gemv_shapes(&AVX2);
}

/* The GEMV order is fixed by lanes of 32, so the AVX-512 and AVX2 builds agree. */
Test(gemm, gemv_simd_paths_agree) {
  if (!have_avx2() || strcmp(gemm_isa_native(), "portable") == 0) cr_skip_test("one SIMD path only");
  tu_seed(5);
  static const int64_t K[] = {1, 17, 33, 64, 100, 768, 3071};
  for (size_t i = 0; i < sizeof K / sizeof K[0]; i++) {
    int64_t N = 40;
    float *a = malloc((size_t)K[i] * sizeof(float)), *B = malloc((size_t)(N * K[i]) * sizeof(float));
    float y0[40], y1[40];
    cr_assert(a && B);
    for (int64_t k = 0; k < K[i]; k++) a[k] = tu_frand();
    for (int64_t j = 0; j < N * K[i]; j++) B[j] = tu_frand();
    gemv_native(N, K[i], a, B, K[i], y0, 1, NULL, 0);
    gemv_avx2(N, K[i], a, B, K[i], y1, 1, NULL, 0);
    cr_expect(memcmp(y0, y1, sizeof y0) == 0, "K = %lld: %s and avx2 differ", (long long)K[i], gemm_isa_native());
    free(a), free(B);
  }
}

/* One row with row-major B (the decode step's probabilities times values): rows
 * of B whose coefficient is 0 are not read, NaN there does not reach C, and C
 * has the bits it has when those rows hold finite values. */
static void zero_rows(const Variant *v) {
  tu_seed(31);
  static const int64_t shp[][2] = {{64, 1024}, {100, 37}, {5, 300}};
  for (size_t s = 0; s < sizeof shp / sizeof shp[0]; s++) {
    int64_t N = shp[s][0], K = shp[s][1];
    float *A = malloc((size_t)K * sizeof(float)), *B = malloc((size_t)(K * N) * sizeof(float));
    float *C0 = malloc((size_t)N * sizeof(float)), *C1 = malloc((size_t)N * sizeof(float));
    float *scratch = scratch_new(v, N, K);
    cr_assert(A && B && C0 && C1);
    for (int64_t k = 0; k < K; k++) /* scattered, a run inside and a tail; -0 counts as 0 */
      A[k] = k % 5 == 2 || (k >= 3 && k < 23) || k >= K / 2 ? (k % 2 ? -0.0f : 0.0f) : tu_frand();
    for (int64_t i = 0; i < K * N; i++) B[i] = tu_frand();
    v->rows(0, 1, N, K, A, K, 1, B, N, 1, C0, N, 1, scratch);
    for (int64_t k = 0; k < K; k++)
      if (A[k] == 0.0f)
        for (int64_t n = 0; n < N; n++) B[k * N + n] = NAN;
    v->rows(0, 1, N, K, A, K, 1, B, N, 1, C1, N, 1, scratch);
    if (strcmp(v->isa(), "portable") != 0)
      cr_expect(memcmp(C0, C1, (size_t)N * sizeof(float)) == 0, "%s %lldx%lld: skipped rows change C", v->name,
                (long long)N, (long long)K);
    else /* the plain-C path keeps IEEE: NaN rows reach C */
      cr_expect(C1[0] != C1[0], "portable: NaN rows should reach C");
    free(A), free(B), free(C0), free(C1), free(scratch);
  }
}

Test(gemm, one_row_skips_zero_coefficients_native) { zero_rows(&NATIVE); }
Test(gemm, one_row_skips_zero_coefficients_avx2) {
  if (!have_avx2()) cr_skip_test("no AVX2+FMA");
  zero_rows(&AVX2);
}

Test(gemm, isa_names) {
  cr_log_info("native: %s, avx2 variant: %s, portable: %s", gemm_isa_native(), gemm_isa_avx2(), gemm_isa_portable());
  cr_expect_str_eq(gemm_isa_portable(), "portable");
  if (have_avx2()) cr_expect_str_eq(gemm_isa_avx2(), "avx2");
}

Test(gemm, k_zero_gives_zeros) {
  static const Variant *vs[] = {&NATIVE, &PORTABLE};
  for (int i = 0; i < 2; i++) {
    float C[6] = {1, 2, 3, 4, 5, 6}, A[1] = {1}, B[1] = {1}, scratch[64] __attribute__((aligned(64)));
    vs[i]->rows(0, 2, 3, 0, A, 0, 0, B, 0, 0, C, 3, 1, scratch);
    for (int j = 0; j < 6; j++) cr_expect(C[j] == 0.0f, "%s: C[%d] = %g after K = 0", vs[i]->name, j, C[j]);
  }
}

Test(gemm, scratch_is_bounded) {
  /* the streaming and packed paths share the scratch; its size depends on K
   * only: one MC x KC block of packed A and one KC x NR panel of B, or, when K
   * has several KC blocks, up to CIRCC_GEMM_A_BYTES (1 MiB) of packed A */
  cr_expect_eq(gemm_scratch_native(1, 5), gemm_scratch_native(100000, 5));
  cr_expect_leq(gemm_scratch_native(50257, 256), (256 + 8) * 256 + 256 * 48 + 64);
  cr_expect_leq(gemm_scratch_native(50257, 3072), (1 << 18) + 256 * 48 + 64);
}

Test(gemm, shapes_native) { shapes(&NATIVE); }
Test(gemm, shapes_portable) { shapes(&PORTABLE); }
Test(gemm, shapes_avx2) {
  if (!have_avx2()) cr_skip_test("no AVX2+FMA");
  shapes(&AVX2);
}
Test(gemm, gpt2_native) { gpt2(&NATIVE); }
Test(gemm, gpt2_portable) { gpt2(&PORTABLE); }
Test(gemm, gpt2_avx2) {
  if (!have_avx2()) cr_skip_test("no AVX2+FMA");
  gpt2(&AVX2);
}
Test(gemm, split_native) { split(&NATIVE); }
Test(gemm, split_portable) { split(&PORTABLE); }
Test(gemm, split_avx2) {
  if (!have_avx2()) cr_skip_test("no AVX2+FMA");
  split(&AVX2);
}

/* ------------------------------------------------- pre-packed B (weights) */

/* The layout, at hand-computed places: N = 50 (Np = 64), K = 300 (blocks of
 * 256 and 44 rows). */
Test(gemm, packed_layout) {
  cr_expect_eq(circc_gemm_packed_np(50), 64);
  cr_expect_eq(circc_gemm_packed_b_floats(50, 300), 300 * 64);
  cr_expect_eq(circc_gemm_packed_b_index(50, 300, 0, 0), 0);
  cr_expect_eq(circc_gemm_packed_b_index(50, 300, 0, 15), 15);
  cr_expect_eq(circc_gemm_packed_b_index(50, 300, 1, 0), 16, "the next k: one 16-float row on");
  cr_expect_eq(circc_gemm_packed_b_index(50, 300, 0, 16), 256 * 16, "the second panel after 256 rows of the first");
  cr_expect_eq(circc_gemm_packed_b_index(50, 300, 255, 49), 3 * 256 * 16 + 255 * 16 + 1);
  cr_expect_eq(circc_gemm_packed_b_index(50, 300, 256, 0), 256 * 64, "the second K block after the first");
  cr_expect_eq(circc_gemm_packed_b_index(50, 300, 257, 33), 256 * 64 + 2 * 16 * 44 + 16 + 1);
  /* circc_gemm_pack_b puts each element there and zeros in the padding */
  int64_t N = 50, K = 300;
  float *B = malloc((size_t)(N * K) * sizeof(float)), *W = malloc((size_t)(K * 64) * sizeof(float));
  cr_assert(B && W);
  for (int64_t i = 0; i < N * K; i++) B[i] = (float)(i + 1);
  for (int64_t i = 0; i < K * 64; i++) W[i] = -1.0f;
  circc_gemm_pack_b(B, 1, K, N, K, W); /* B given transposed: element (k, n) at n*K + k */
  for (int64_t k = 0; k < K; k++)
    for (int64_t n = 0; n < 64; n++) {
      float want = n < N ? (float)(n * K + k + 1) : 0.0f, got = W[circc_gemm_packed_b_index(N, K, k, n)];
      cr_expect(got == want, "(k %lld, n %lld): %g, want %g", (long long)k, (long long)n, got, want);
    }
  for (int64_t i = 0; i < K * 64; i++) cr_expect(W[i] != -1.0f, "W[%lld] not written", (long long)i);
  free(B), free(W);
}

/* The pre-packed path on an M x N x K product (B packed from layout lb, C in
 * layout lc): every column against a double reference (check_case's bound),
 * C outside the product untouched, and the same bits as the unpacked path,
 * whether rows or columns (at multiples of 16) are split over calls. */
static void packed_case(const Variant *v, int64_t M, int64_t N, int64_t K, int lb, int lc) {
  Mat A = mat_new(M, K, ROW), B = mat_new(K, N, lb), C0 = mat_new(M, N, lc), C1 = mat_new(M, N, lc);
  mat_fill(&A, M, K), mat_fill(&B, K, N);
  float *W = malloc((size_t)circc_gemm_packed_b_floats(N, K) * sizeof(float)), *scratch = scratch_new(v, N, K);
  cr_assert(W);
  circc_gemm_pack_b(B.p, B.s_r, B.s_c, N, K, W);
  for (int64_t i = 0; i < C0.extent; i++) C0.p[i] = C1.p[i] = SENTINEL;
  v->rows(0, M, N, K, A.p, A.s_r, A.s_c, B.p, B.s_r, B.s_c, C0.p, C0.s_r, C0.s_c, scratch);
  v->packed(0, M, 0, N, N, K, A.p, A.s_r, A.s_c, W, C1.p, C1.s_r, C1.s_c, scratch);
  double worst = 0;
  int64_t wm = -1, wn = -1;
  for (int64_t m = 0; m < M; m++)
    for (int64_t n = 0; n < N; n++) {
      double want = 0, absdot = 0;
      for (int64_t k = 0; k < K; k++) {
        double p = (double)A.p[m * A.s_r + k * A.s_c] * (double)B.p[k * B.s_r + n * B.s_c];
        want += p, absdot += fabs(p);
      }
      double err = fabs((double)C1.p[m * C1.s_r + n * C1.s_c] - want), tol = 1e-5 * sqrt((double)K) * absdot;
      double ratio = err == 0 ? 0 : tol > 0 ? err / tol : INFINITY;
      if (!(ratio <= worst)) worst = ratio, wm = m, wn = n;
    }
  cr_expect(worst <= 1.0, "%s packed %lldx%lldx%lld B=%s C=%s: C[%lld,%lld] is %.3g x the bound off", v->name,
            (long long)M, (long long)N, (long long)K, LAYOUT[lb], LAYOUT[lc], (long long)wm, (long long)wn, worst);
  cr_expect(memcmp(C0.p, C1.p, (size_t)C0.extent * sizeof(float)) == 0,
            "%s packed %lldx%lldx%lld B=%s C=%s: not the unpacked path's bits (or wrote outside C)", v->name,
            (long long)M, (long long)N, (long long)K, LAYOUT[lb], LAYOUT[lc]);
  int64_t a = M / 3, p16 = (N + 15) / 16, c = p16 / 3 * 16, d = p16 * 2 / 3 * 16;
  int64_t rows[4] = {0, a, a + (M - a) / 2, M}, cols[4] = {0, c, d < N ? d : N, N};
  for (int64_t i = 0; i < C1.extent; i++) C1.p[i] = SENTINEL;
  for (int r = 0; r < 3; r++)
    for (int q = 0; q < 3; q++)
      v->packed(rows[r], rows[r + 1], cols[q], cols[q + 1], N, K, A.p, A.s_r, A.s_c, W, C1.p, C1.s_r, C1.s_c, scratch);
  cr_expect(memcmp(C0.p, C1.p, (size_t)C0.extent * sizeof(float)) == 0,
            "%s packed %lldx%lldx%lld B=%s C=%s: split at rows %lld, %lld and columns %lld, %lld changes bits", v->name,
            (long long)M, (long long)N, (long long)K, LAYOUT[lb], LAYOUT[lc], (long long)rows[1], (long long)rows[2],
            (long long)cols[1], (long long)cols[2]);
  free(W), free(scratch), free(A.p), free(B.p), free(C0.p), free(C1.p);
}

static void packed_shapes(const Variant *v) {
  tu_seed(606);
  static const int64_t Ms[] = {1, 3, 8, 9, 64, 70}, Ns[] = {1, 17, 50, 96, 145}, Ks[] = {1, 255, 256, 257, 1100};
  int i = 0;
  for (size_t a = 0; a < sizeof Ms / sizeof Ms[0]; a++)
    for (size_t b = 0; b < sizeof Ns / sizeof Ns[0]; b++)
      for (size_t c = 0; c < sizeof Ks / sizeof Ks[0]; c++, i++)
        packed_case(v, Ms[a], Ns[b], Ks[c], i % 2 ? TRANS : i % 3 ? ROW : GENERAL, i % 5 ? ROW : TRANS);
  packed_case(v, 9, 50257, 257, TRANS, ROW); /* an unembedding's edge panel (50257 = 1047 x 48 + 1) */
  /* one slice per block (K < KH): each tile fetches the next one's C, the
   * last (6-row) tile's excepted */
  packed_case(v, 70, 145, 100, ROW, ROW);
  /* A packed for several KC blocks at once: 256 rows hold 4 blocks in 1 MiB
   * (AVX2's 258-row block 3), so the 5 blocks of K = 1100 make two groups,
   * while the 44-row block holds them all; C in both layouts */
  packed_case(v, 300, 145, 1100, ROW, ROW);
  packed_case(v, 300, 145, 1100, TRANS, TRANS);
}

Test(gemm, packed_native) { packed_shapes(&NATIVE); }
Test(gemm, packed_portable) { packed_shapes(&PORTABLE); }
Test(gemm, packed_avx2) {
  if (!have_avx2()) cr_skip_test("no AVX2+FMA");
  packed_shapes(&AVX2);
}

/* The SIMD builds share the summation order, so AVX-512 and AVX2 agree bit for bit. */
Test(gemm, simd_paths_agree) {
  if (!have_avx2() || strcmp(gemm_isa_native(), "portable") == 0) cr_skip_test("one SIMD path only");
  tu_seed(99);
  static const int64_t shp[][3] = {{64, 768, 768}, {37, 100, 600}, {1, 2304, 768}, {300, 5, 520}, {3, 50, 1000}};
  for (size_t s = 0; s < sizeof shp / sizeof shp[0]; s++)
    for (int lb = 0; lb < NLAYOUT; lb++) {
      int64_t M = shp[s][0], N = shp[s][1], K = shp[s][2];
      Mat A = mat_new(M, K, ROW), B = mat_new(K, N, lb), C0 = mat_new(M, N, ROW), C1 = mat_new(M, N, ROW);
      mat_fill(&A, M, K), mat_fill(&B, K, N);
      float *s0 = scratch_new(&NATIVE, N, K), *s1 = scratch_new(&AVX2, N, K);
      gemm_rows_native(0, M, N, K, A.p, A.s_r, A.s_c, B.p, B.s_r, B.s_c, C0.p, C0.s_r, C0.s_c, s0);
      gemm_rows_avx2(0, M, N, K, A.p, A.s_r, A.s_c, B.p, B.s_r, B.s_c, C1.p, C1.s_r, C1.s_c, s1);
      cr_expect(memcmp(C0.p, C1.p, (size_t)C0.extent * sizeof(float)) == 0, "%lldx%lldx%lld B=%s: %s and avx2 differ",
                (long long)M, (long long)N, (long long)K, LAYOUT[lb], gemm_isa_native());
      free(s0), free(s1), free(A.p), free(B.p), free(C0.p), free(C1.p);
    }
}
#endif
