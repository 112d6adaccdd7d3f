/* test_gemv_bf16.c — templates/gemv_bf16.h (a decode program's key/value
 * cache held as bf16 under circc --precision bf16/int8): the bf16-B twins of
 * gemm_f32.h's matrix-vector kernel and few-row streaming GEMM. On every path
 * the machine has (native, an AVX2+FMA object, a portable object:
 * tests/CMakeLists.txt, template_test_variants):
 *  - a hand-computed case;
 *  - bit for bit the fp32 kernel of the same object on the fp32 values of the
 *    bf16 B (bf16 -> fp32 is exact and the summation order is the fp32 one);
 *  - within the fp32 accumulation bound of a double reference: every FMA, add
 *    or block sum rounds once, at most K + 6 roundings on any partial sum
 *    (32 lane chains of ceil(K/32) FMAs then 5 pairwise adds for the GEMV;
 *    chains per KC block plus the block sums for the streaming GEMM), so
 *    |C - ref| <= (K + 6) * 2^-24 * sum_k |a_k b_k| (the products are exact
 *    in double);
 *  - masked GEMV columns never read, nor (SIMD paths) the B rows of the
 *    streaming path's zero coefficients in one-row calls: NaN there does not
 *    reach C;
 *  - the AVX-512 and AVX2 objects agree bit for bit. */
#include <stdint.h>

typedef void GemvB16Fn(int64_t N, int64_t K, const float *a, const uint16_t *B, int64_t b_n, float *y, int64_t c_n,
                       const float *mask, int64_t mask_n);
typedef void GemvF32Fn(int64_t N, int64_t K, const float *a, const float *B, int64_t b_n, float *y, int64_t c_n,
                       const float *mask, int64_t mask_n);
typedef void RowsB16Fn(int64_t m0, int64_t m1, int64_t N, int64_t K, const float *A, int64_t a_m, int64_t a_k,
                       const uint16_t *B, int64_t b_k, float *C, int64_t c_m, int64_t c_n, float *scratch);
typedef void RowsF32Fn(int64_t m0, int64_t m1, int64_t N, int64_t K, const float *A, int64_t a_m, int64_t a_k,
                       const float *B, int64_t b_k, int64_t b_n, float *C, int64_t c_m, int64_t c_n, float *scratch);
typedef const char *IsaFn(void);
typedef int64_t ScratchFn(int64_t N, int64_t K);
#define GEMVB_DECLARE(v)                                                                                             \
  GemvB16Fn gemv_b16_##v;                                                                                            \
  GemvF32Fn gemv_f32_##v;                                                                                            \
  RowsB16Fn rows_b16_##v;                                                                                            \
  RowsF32Fn rows_f32_##v;                                                                                            \
  ScratchFn scratch_##v;                                                                                             \
  IsaFn isa_##v;
#define GEMVB_DEFINE(v)                                                                                              \
  void gemv_b16_##v(int64_t N, int64_t K, const float *a, const uint16_t *B, int64_t b_n, float *y, int64_t c_n,     \
                    const float *mask, int64_t mask_n) {                                                             \
    circc_gemv_bf16b(N, K, a, B, b_n, y, c_n, mask, mask_n);                                                         \
  }                                                                                                                  \
  void gemv_f32_##v(int64_t N, int64_t K, const float *a, const float *B, int64_t b_n, float *y, int64_t c_n,        \
                    const float *mask, int64_t mask_n) {                                                             \
    circc_gemv_f32(N, K, a, B, b_n, y, c_n, mask, mask_n);                                                           \
  }                                                                                                                  \
  void rows_b16_##v(int64_t m0, int64_t m1, int64_t N, int64_t K, const float *A, int64_t a_m, int64_t a_k,          \
                    const uint16_t *B, int64_t b_k, float *C, int64_t c_m, int64_t c_n, float *scratch) {            \
    circc_gemm_bf16b_rows(m0, m1, N, K, A, a_m, a_k, B, b_k, C, c_m, c_n, scratch);                                  \
  }                                                                                                                  \
  void rows_f32_##v(int64_t m0, int64_t m1, int64_t N, int64_t K, const float *A, int64_t a_m, int64_t a_k,          \
                    const float *B, int64_t b_k, int64_t b_n, float *C, int64_t c_m, int64_t c_n, float *scratch) {  \
    circc_gemm_f32_rows(m0, m1, N, K, A, a_m, a_k, B, b_k, b_n, C, c_m, c_n, scratch);                               \
  }                                                                                                                  \
  int64_t scratch_##v(int64_t N, int64_t K) { return circc_gemm_scratch_floats(N, K); }                              \
  const char *isa_##v(void) { return CIRCC_GEMM_ISA; }
GEMVB_DECLARE(native)
GEMVB_DECLARE(avx2)
GEMVB_DECLARE(portable)

#ifdef GEMVB_TEST_VARIANT
/* ------------------------------------------------ a variant translation unit */
#include "gemv_bf16.h"
#define GEMVB_DEFINE_(v) GEMVB_DEFINE(v)
GEMVB_DEFINE_(GEMVB_TEST_VARIANT)
#else
/* ------------------------------------------------------------ the test suite */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "gemv_bf16.h"
#include "testutil.h"

GEMVB_DEFINE(native)
TestSuite(gemv_bf16);

typedef struct Variant {
  const char *name;
  GemvB16Fn *gemv_b16;
  GemvF32Fn *gemv_f32;
  RowsB16Fn *rows_b16;
  RowsF32Fn *rows_f32;
  ScratchFn *scratch;
} Variant;

static int variants(Variant *v) {
  static char names[3][64];
  snprintf(names[0], 64, "%s (native object)", isa_native());
  snprintf(names[1], 64, "%s (avx2 object)", isa_avx2());
  snprintf(names[2], 64, "%s (portable object)", isa_portable());
  v[0] = (Variant){names[0], gemv_b16_native, gemv_f32_native, rows_b16_native, rows_f32_native, scratch_native};
  v[1] = (Variant){names[1], gemv_b16_avx2, gemv_f32_avx2, rows_b16_avx2, rows_f32_avx2, scratch_avx2};
  v[2] = (Variant){names[2], gemv_b16_portable, gemv_f32_portable, rows_b16_portable, rows_f32_portable,
                   scratch_portable};
  return 3;
}

/* Round to nearest even (the test's own, for finite values). */
static uint16_t to_bf16(float x) {
  uint32_t u;
  memcpy(&u, &x, 4);
  u += 0x7fffu + ((u >> 16) & 1u);
  return (uint16_t)(u >> 16);
}

static float from_bf16(uint16_t h) {
  uint32_t u = (uint32_t)h << 16;
  float x;
  memcpy(&x, &u, 4);
  return x;
}

static float *scratch_for(const Variant *v, int64_t N, int64_t K) {
  int64_t f = v->scratch(N, K);
  return aligned_alloc(64, (size_t)((f * 4 + 63) / 64 * 64));
}

/* ---------------------------------------------------------- by hand */

/* a = (1, 2, 0.5); B's columns (1.5, -2, 4) and (0.25, 3, 8): 1.5 - 4 + 2 =
 * -0.5 and 0.25 + 6 + 4 = 10.25; a column stored as 1 + 2^-8 (not a bf16)
 * would round to 1, but the caller stores bf16, so only exact values here. */
Test(gemv_bf16, hand_computed) {
  Variant v[3];
  int nv = variants(v);
  const float a[3] = {1, 2, 0.5f};
  const float cols[2][3] = {{1.5f, -2, 4}, {0.25f, 3, 8}};
  uint16_t Bc[6], Br[6]; /* by columns (GEMV) and by rows (streaming) */
  for (int n = 0; n < 2; n++)
    for (int k = 0; k < 3; k++) Bc[n * 3 + k] = Br[k * 2 + n] = to_bf16(cols[n][k]);
  for (int q = 0; q < nv; q++) {
    float y[2] = {NAN, NAN};
    v[q].gemv_b16(2, 3, a, Bc, 3, y, 1, NULL, 0);
    cr_assert(y[0] == -0.5f && y[1] == 10.25f, "%s gemv: %g %g", v[q].name, y[0], y[1]);
    const float mask[2] = {0, 1};
    v[q].gemv_b16(2, 3, a, Bc, 3, y, 1, mask, 1);
    cr_assert(y[0] == 0.0f && y[1] == 10.25f, "%s masked gemv: %g %g", v[q].name, y[0], y[1]);
    float *s = scratch_for(&v[q], 2, 3), c[2] = {NAN, NAN};
    v[q].rows_b16(0, 1, 2, 3, a, 0, 1, Br, 2, c, 0, 1, s);
    cr_assert(c[0] == -0.5f && c[1] == 10.25f, "%s rows: %g %g", v[q].name, c[0], c[1]);
    free(s);
  }
}

/* ---------------------------------------------------------- the GEMV */

static void check_gemv(const Variant *v, int64_t N, int64_t K, int masked) {
  int64_t b_n = K + 3; /* columns apart, as a cache slice of a wider tensor */
  float *a = malloc(sizeof(float) * (size_t)K), *Bf = malloc(sizeof(float) * (size_t)(N * b_n));
  uint16_t *Bh = malloc(2 * (size_t)(N * b_n));
  float *mask = malloc(sizeof(float) * (size_t)N), *y = malloc(sizeof(float) * (size_t)(N + 8)),
        *want = malloc(sizeof(float) * (size_t)(N + 8));
  for (int64_t k = 0; k < K; k++) a[k] = tu_frand();
  for (int64_t n = 0; n < N; n++) {
    mask[n] = masked && (n % 7 == 3 || (n >= 16 && n < 32)) ? 0.0f : 1.0f;
    for (int64_t k = 0; k < b_n; k++) {
      Bh[n * b_n + k] = mask[n] == 0.0f ? 0x7fc0 /* NaN: must not be read */ : to_bf16(tu_frand() * 4);
      Bf[n * b_n + k] = from_bf16(Bh[n * b_n + k]);
    }
  }
  for (int64_t i = 0; i < N + 8; i++) y[i] = want[i] = NAN;
  v->gemv_f32(N, K, a, Bf, b_n, want, 1, masked ? mask : NULL, 1);
  v->gemv_b16(N, K, a, Bh, b_n, y, 1, masked ? mask : NULL, 1);
  cr_assert(!memcmp(y, want, sizeof(float) * (size_t)N), "%s N=%lld K=%lld masked=%d: not the fp32 kernel's bits",
            v->name, (long long)N, (long long)K, masked);
  for (int64_t i = N; i < N + 8; i++) cr_assert(isnan(y[i]), "%s wrote past y", v->name);
  for (int64_t n = 0; n < N; n++) {
    double s = 0, sa = 0;
    for (int64_t k = 0; k < K && mask[n] != 0.0f; k++) {
      double p = (double)a[k] * (double)Bf[n * b_n + k];
      s += p, sa += fabs(p);
    }
    double bound = ldexp(1.0, -24) * (double)(K + 6) * sa;
    cr_assert(fabs((double)y[n] - s) <= bound, "%s N=%lld K=%lld: y[%lld] = %.9g, want %.9g (bound %.3g)", v->name,
              (long long)N, (long long)K, (long long)n, (double)y[n], s, bound);
  }
  free(a), free(Bf), free(Bh), free(mask), free(y), free(want);
}

Test(gemv_bf16, gemv_is_the_fp32_kernel_on_rounded_values) {
  Variant v[3];
  int nv = variants(v);
  const int64_t Ns[] = {1, 3, 4, 17, 50}, Ks[] = {1, 5, 16, 31, 32, 33, 64, 100, 300};
  for (int q = 0; q < nv; q++)
    for (size_t i = 0; i < sizeof Ns / sizeof *Ns; i++)
      for (size_t j = 0; j < sizeof Ks / sizeof *Ks; j++)
        for (int masked = 0; masked < 2; masked++) check_gemv(&v[q], Ns[i], Ks[j], masked);
}

/* ---------------------------------------------------- the streaming GEMM */

/* rows m0..m1 of an M-row A (some coefficients 0, with NaN in the B rows
 * that only zeros read when M is 1) against bf16 B rows b_k apart. */
static void check_rows(const Variant *v, int64_t M, int64_t N, int64_t K, int zeros) {
  int64_t b_k = N + 5, a_m = K + 1, c_m = N + 2;
  float *A = malloc(sizeof(float) * (size_t)(M * a_m)), *Bf = malloc(sizeof(float) * (size_t)(K * b_k));
  uint16_t *Bh = malloc(2 * (size_t)(K * b_k));
  float *C = malloc(sizeof(float) * (size_t)(M * c_m + 8)), *want = malloc(sizeof(float) * (size_t)(M * c_m + 8));
  for (int64_t m = 0; m < M; m++)
    for (int64_t k = 0; k < a_m; k++) A[m * a_m + k] = zeros && k % 5 < 2 ? 0.0f : tu_frand();
  for (int64_t k = 0; k < K; k++)
    for (int64_t n = 0; n < b_k; n++) {
      /* masked keys of a decode step: the SIMD paths skip them (the portable
       * one, like gemm_f32.h's, reads every row) */
      int never = zeros && M == 1 && k % 5 < 2 && strstr(v->name, "portable ") != v->name;
      Bh[k * b_k + n] = never ? 0x7fc0 : to_bf16(tu_frand() * 4);
      Bf[k * b_k + n] = from_bf16(Bh[k * b_k + n]);
    }
  for (int64_t i = 0; i < M * c_m + 8; i++) C[i] = want[i] = NAN;
  float *s = scratch_for(v, N, K);
  v->rows_f32(0, M, N, K, A, a_m, 1, Bf, b_k, 1, want, c_m, 1, s);
  v->rows_b16(0, M, N, K, A, a_m, 1, Bh, b_k, C, c_m, 1, s);
  for (int64_t m = 0; m < M; m++)
    cr_assert(!memcmp(C + m * c_m, want + m * c_m, sizeof(float) * (size_t)N),
              "%s M=%lld N=%lld K=%lld zeros=%d: row %lld not the fp32 kernel's bits", v->name, (long long)M,
              (long long)N, (long long)K, zeros, (long long)m);
  cr_assert(isnan(C[(M - 1) * c_m + N]) && isnan(C[M * c_m + 7]), "%s wrote past C", v->name);
  for (int64_t m = 0; m < M; m++)
    for (int64_t n = 0; n < N; n++) {
      double r = 0, sa = 0;
      for (int64_t k = 0; k < K; k++) {
        if (A[m * a_m + k] == 0.0f) continue;
        double p = (double)A[m * a_m + k] * (double)Bf[k * b_k + n];
        r += p, sa += fabs(p);
      }
      double bound = ldexp(1.0, -24) * (double)(K + 6) * sa;
      cr_assert(fabs((double)C[m * c_m + n] - r) <= bound, "%s M=%lld N=%lld K=%lld: C[%lld,%lld] = %.9g, want %.9g",
                v->name, (long long)M, (long long)N, (long long)K, (long long)m, (long long)n, (double)C[m * c_m + n],
                r);
    }
  /* a split into row and column pieces, as threads split the work: the same bits */
  if (M > 1 && N > 16) {
    for (int64_t i = 0; i < M * c_m; i++) C[i] = NAN;
    v->rows_b16(0, 1, 16, K, A, a_m, 1, Bh, b_k, C, c_m, 1, s);
    v->rows_b16(0, 1, N - 16, K, A, a_m, 1, Bh + 16, b_k, C + 16, c_m, 1, s);
    v->rows_b16(1, M, N, K, A, a_m, 1, Bh, b_k, C, c_m, 1, s);
    for (int64_t m = 0; m < M; m++)
      cr_assert(!memcmp(C + m * c_m, want + m * c_m, sizeof(float) * (size_t)N), "%s: a split changed row %lld",
                v->name, (long long)m);
  }
  free(s), free(A), free(Bf), free(Bh), free(C), free(want);
}

Test(gemv_bf16, rows_are_the_fp32_kernel_on_rounded_values) {
  Variant v[3];
  int nv = variants(v);
  const int64_t Ns[] = {1, 2, 7, 16, 48, 64, 70}, Ks[] = {1, 3, 4, 9, 64, 257, 1024};
  for (int q = 0; q < nv; q++)
    for (int64_t M = 1; M <= 4; M++)
      for (size_t i = 0; i < sizeof Ns / sizeof *Ns; i++)
        for (size_t j = 0; j < sizeof Ks / sizeof *Ks; j++)
          for (int zeros = 0; zeros < 2; zeros++) check_rows(&v[q], M, Ns[i], Ks[j], zeros);
}

/* The AVX-512 and AVX2 objects (SIMD paths) give the same bits. */
Test(gemv_bf16, simd_objects_agree) {
  int64_t N = 70, K = 300;
  float *a = malloc(sizeof(float) * (size_t)K), y0[70], y1[70], c0[4 * 70], c1[4 * 70];
  uint16_t *B = malloc(2 * (size_t)(N * K));
  for (int64_t k = 0; k < K; k++) a[k] = tu_frand();
  for (int64_t i = 0; i < N * K; i++) B[i] = to_bf16(tu_frand());
  gemv_b16_native(N, K, a, B, K, y0, 1, NULL, 0);
  gemv_b16_avx2(N, K, a, B, K, y1, 1, NULL, 0);
  cr_assert(!memcmp(y0, y1, sizeof y0), "gemv: %s and %s differ", isa_native(), isa_avx2());
  float *A = malloc(sizeof(float) * 4 * (size_t)K), *s0 = aligned_alloc(64, 64 * (size_t)((scratch_native(N, K) * 4 + 63) / 64)),
        *s1 = aligned_alloc(64, 64 * (size_t)((scratch_avx2(N, K) * 4 + 63) / 64));
  for (int64_t i = 0; i < 4 * K; i++) A[i] = tu_frand();
  rows_b16_native(0, 4, N, K, A, K, 1, B, N, c0, N, 1, s0);
  rows_b16_avx2(0, 4, N, K, A, K, 1, B, N, c1, N, 1, s1);
  cr_assert(!memcmp(c0, c1, sizeof c0), "rows: %s and %s differ", isa_native(), isa_avx2());
  free(a), free(B), free(A), free(s0), free(s1);
}
#endif
