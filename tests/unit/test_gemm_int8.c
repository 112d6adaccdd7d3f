/* test_gemm_int8.c — templates/gemm_int8.h (circc --precision int8): the
 * quantisation against hand-computed scales and q, and both summations
 * (decode, prefill) against a double reference of the dequantised weights
 * W' = q * s, which the test computes itself (its own fp16 rounding:
 * _Float16), and decode's documented summation order bit for bit. Every
 * path the machine has: the header is compiled natively (-march=native: AVX-512 here), as an AVX2+FMA object without AVX-512 (and
 * without F16C: the scalar scale conversion) and as a portable object
 * (CIRCC_GEMM_PORTABLE; tests/CMakeLists.txt, template_test_variants).
 *
 * Tolerance: W' is exact in fp32 (7-bit q times an 11-bit scale) and its
 * products with fp32 activations are exact in double, so the only error is
 * the fp32 accumulation of the K products: every FMA (decode: at most 32 in
 * a group's sum of a_k q_k, exact when scaled, plus one per group) or FMA and
 * block sum (prefill, the fp32 template) rounds once, at most K + 1 roundings
 * on any partial sum, so |C - ref| <= (Kp + 1) * 2^-24 * sum_k |a_k w'_k|
 * (Kp: K padded to a multiple of 32, which covers the 1/(1 - K u) factor of
 * the classical bound); the tests use that. */
#include <stdint.h>

typedef void Int8RowsFn(int decode, int64_t m0, int64_t m1, int64_t n0, int64_t n1, int64_t K, const float *A,
                        int64_t a_m, int64_t a_k, const uint8_t *Bq, float *C, int64_t c_m, int64_t c_n,
                        float *scratch);
typedef const char *Int8IsaFn(void);
#define INT8_DECLARE(v)                                                                                              \
  Int8RowsFn int8_rows_##v;                                                                                          \
  Int8IsaFn int8_isa_##v;
#define INT8_DEFINE(v)                                                                                               \
  void int8_rows_##v(int decode, int64_t m0, int64_t m1, int64_t n0, int64_t n1, int64_t K, const float *A,        \
                     int64_t a_m, int64_t a_k, const uint8_t *Bq, float *C, int64_t c_m, int64_t c_n,               \
                     float *scratch) {                                                                               \
    circc_gemm_int8_rows(decode, m0, m1, n0, n1, K, A, a_m, a_k, Bq, C, c_m, c_n, scratch);                          \
  }                                                                                                                  \
  const char *int8_isa_##v(void) { return CIRCC_INT8_ISA; }
INT8_DECLARE(native)
INT8_DECLARE(avx2)
INT8_DECLARE(portable)

#ifdef INT8_TEST_VARIANT
/* ------------------------------------------------ a variant translation unit */
#include "gemm_int8.h"
#define INT8_DEFINE_(v) INT8_DEFINE(v)
INT8_DEFINE_(INT8_TEST_VARIANT)
#else
/* ------------------------------------------------------------ the test suite */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "gemm_int8.h"
#include "testutil.h"

INT8_DEFINE(native)
TestSuite(gemm_int8);

typedef struct Path {
  const char *name;
  Int8RowsFn *rows;
  int decode;
} Path;

/* Every path, both summations: native (whatever -march=native gives), the
 * AVX2 object and the portable one. */
static int paths(Path *p) {
  int n = 0;
  Int8RowsFn *fn[3] = {int8_rows_native, int8_rows_avx2, int8_rows_portable};
  const char *isa[3] = {int8_isa_native(), int8_isa_avx2(), int8_isa_portable()};
  static char names[6][64];
  for (int i = 0; i < 3; i++)
    for (int d = 1; d >= 0; d--) {
      snprintf(names[n], sizeof names[n], "%s %s (%s object)", isa[i], d ? "decode" : "prefill",
               i == 0 ? "native" : i == 1 ? "avx2" : "portable");
      p[n] = (Path){names[n], fn[i], d};
      n++;
    }
  return n;
}

/* ------------------------------------------------------ quantisation */

static void quantize(const float *w, int kn, uint16_t *s, int8_t *q) { *s = circc_int8_quantize(w, kn, q); }

Test(gemm_int8, fp16_rounding_by_hand) {
  cr_assert_eq(circc_f16_round(1.0), 0x3c00);
  cr_assert_eq(circc_f16_round(1.0 + 0x1p-11), 0x3c00);      /* tie, 0x3c00 is even */
  cr_assert_eq(circc_f16_round(1.0 + 3 * 0x1p-11), 0x3c02);  /* tie, up to even */
  cr_assert_eq(circc_f16_round(1.0 / 127), 0x2008);          /* 1032 * 2^-17 */
  cr_assert_eq(circc_f16_round(65504), 0x7bff);
  cr_assert_eq(circc_f16_round(65519.99), 0x7bff);
  cr_assert_eq(circc_f16_round(65520), 0x7c00);              /* the tie above 65504 goes to inf */
  cr_assert_eq(circc_f16_round(0x1p-14), 0x0400);            /* smallest normal */
  cr_assert_eq(circc_f16_round(2047 * 0x1p-25), 0x0400);     /* largest subnormal rounds up into it */
  cr_assert_eq(circc_f16_round(0x1p-24), 0x0001);
  cr_assert_eq(circc_f16_round(0x1p-25), 0x0000);            /* tie, to 0 (even) */
  cr_assert_eq(circc_f16_round(1.5 * 0x1p-24), 0x0002);      /* tie, to 2 (even) */
  cr_assert_eq(circc_f16_round(0), 0);
  cr_assert_eq(circc_f16_float(0x2008), 0.00787353515625f);
  cr_assert_eq(circc_f16_float(0x0001), 0x1p-24f);
  cr_assert_eq(circc_f16_float(0x7bff), 65504.0f);
  cr_assert_eq(circc_f16_float(0x3a4d), 0.78759765625f);
  cr_assert(isinf(circc_f16_float(0x7c00)));
}

/* Scale 1 (max 127): ties go to even, +-max are +-127. */
Test(gemm_int8, quantise_ties_and_max) {
  const float w[8] = {127, 2.5f, 3.5f, -2.5f, -127, 0, 1, 126.5f};
  const int8_t want[8] = {127, 2, 4, -2, -127, 0, 1, 126};
  uint16_t s;
  int8_t q[8];
  quantize(w, 8, &s, q);
  cr_assert_eq(s, 0x3c00);
  for (int i = 0; i < 8; i++) cr_assert_eq(q[i], want[i], "q[%d] = %d, want %d", i, q[i], want[i]);
}

/* max 1: s = fp16(1/127) = 1032 * 2^-17 (0x2008), below 1/127, so 1 / s =
 * 127.0078 -> 127; 0.5 / s = 63.504 -> 64; 0.25 / s = 31.75 -> 32; 1/3 -> 42. */
Test(gemm_int8, quantise_a_rounded_scale) {
  const float w[5] = {1, -1, 0.5f, 0.25f, 1.0f / 3};
  const int8_t want[5] = {127, -127, 64, 32, 42};
  uint16_t s;
  int8_t q[5];
  quantize(w, 5, &s, q);
  cr_assert_eq(s, 0x2008);
  for (int i = 0; i < 5; i++) cr_assert_eq(q[i], want[i], "q[%d] = %d, want %d", i, q[i], want[i]);
}

/* A subnormal scale: max = 178 * 2^-24, max/127 = 1.40 * 2^-24 rounds to
 * 2^-24, so max / s = 178 is clamped to 127 (and -max to -127). */
Test(gemm_int8, quantise_clamps_at_127) {
  const float w[5] = {178 * 0x1p-24f, -178 * 0x1p-24f, 3 * 0x1p-24f, 2.5f * 0x1p-24f, 3.5f * 0x1p-24f};
  const int8_t want[5] = {127, -127, 3, 2, 4};
  uint16_t s;
  int8_t q[5];
  quantize(w, 5, &s, q);
  cr_assert_eq(s, 0x0001);
  for (int i = 0; i < 5; i++) cr_assert_eq(q[i], want[i], "q[%d] = %d, want %d", i, q[i], want[i]);
}

Test(gemm_int8, quantise_zero_tiny_and_bad_groups) {
  float w[32] = {0};
  uint16_t s;
  int8_t q[32];
  memset(q, 99, sizeof q);
  quantize(w, 32, &s, q);
  cr_assert_eq(s, 0);
  for (int i = 0; i < 32; i++) cr_assert_eq(q[i], 0);
  w[3] = 0x1p-20f; /* max/127 < 2^-25: the scale rounds to 0, so does q */
  w[4] = -0x1p-21f;
  quantize(w, 32, &s, q);
  cr_assert_eq(s, 0);
  cr_assert(q[3] == 0 && q[4] == 0);
  w[5] = NAN;
  quantize(w, 32, &s, q);
  cr_assert_eq(s, 0x7c00, "NaN: refused");
  w[5] = 1e7f; /* 1e7/127 > 65504 */
  quantize(w, 32, &s, q);
  cr_assert_eq(s, 0x7c00, "too large: refused");
  w[5] = INFINITY;
  quantize(w, 32, &s, q);
  cr_assert_eq(s, 0x7c00, "inf: refused");
}

/* K = 33: the second group holds k = 32 only (max 0.75: s = 0x1e0c, q -127),
 * the rest of it is 0; 17 columns: a second panel, columns 1-15 of it 0;
 * values at the offsets circc_int8_block gives. */
Test(gemm_int8, packed_layout_and_short_group) {
  const int64_t K = 33, N = 17;
  float B[33 * 17];
  for (int i = 0; i < 33 * 17; i++) B[i] = 0;
  B[0 * N + 0] = 127;       /* group 0 of column 0: scale 1 */
  B[5 * N + 0] = -3;        /* q -3 at k 5 */
  B[32 * N + 0] = -0.75f;   /* group 1 of column 0 */
  B[31 * N + 16] = 0.5f;    /* column 16 (panel 1), group 0: max 0.5, s = fp16(0.5/127) */
  int64_t bytes = circc_int8_bytes(N, K);
  cr_assert_eq(bytes, 2 * 2 * 544); /* 2 panels x 2 groups */
  cr_assert_eq(circc_int8_block(32, 0, K), 544);
  cr_assert_eq(circc_int8_block(0, 16, K), 2 * 544);
  cr_assert_eq(circc_int8_block(40, 20, K), 3 * 544);
  uint8_t *P = malloc((size_t)bytes);
  cr_assert_eq(circc_int8_pack_b(B, N, 1, N, K, P), 0);
  uint16_t s;
  memcpy(&s, P + 0, 2);
  cr_assert_eq(s, 0x3c00);
  cr_assert_eq((int8_t)P[32 + 0], 127);
  cr_assert_eq((int8_t)P[32 + 16 * 5], -3);
  memcpy(&s, P + 544, 2);
  cr_assert_eq(s, 0x1e0c);
  cr_assert_eq((int8_t)P[544 + 32], -127);
  for (int k = 1; k < 32; k++) cr_assert_eq(P[544 + 32 + 16 * k], 0, "padding k %d", 33 + k - 1);
  memcpy(&s, P + 2 * 544, 2);
  cr_assert_eq(s, 0x1c08);   /* fp16(0.5/127) */
  cr_assert_eq((int8_t)P[2 * 544 + 32 + 16 * 31], 127);
  for (int j = 1; j < 16; j++) {
    memcpy(&s, P + 2 * 544 + 2 * j, 2);
    cr_assert_eq(s, 0, "padding column %d", 16 + j);
  }
  free(P);
}

/* ------------------------------------------------------------ kernels */

/* The test's own quantisation of B[k*N + n]: the scale by _Float16's
 * rounding (one rounding from double), q by rint, clamped; a zero scale
 * zeroes the group. Returns q, sets *scale. */
static double quantized(const float *B, int64_t N, int64_t K, int64_t k, int64_t n, double *scale) {
  int64_t g0 = k / 32 * 32, g1 = g0 + 32 < K ? g0 + 32 : K;
  double mx = 0;
  for (int64_t j = g0; j < g1; j++) mx = fmax(mx, fabs((double)B[j * N + n]));
  double s = (double)(_Float16)(mx / 127.0);
  *scale = s;
  return s == 0 ? 0 : fmin(127, fmax(-127, rint((double)B[k * N + n] / s)));
}

/* The test's own W' = q * s. */
static double dequantized(const float *B, int64_t N, int64_t K, int64_t k, int64_t n) {
  double s, q = quantized(B, N, K, k, n, &s);
  return q * s;
}

/* d's operands: B random in [-1, 1) with every 7th value 100 times smaller
 * (mixed magnitudes in a group), drawn after A, packed; the reference on the
 * test's W'. */
static TuGemm make(TuGemmCase cs) {
  TuGemm d = tu_gemm_new(cs);
  int64_t N = cs.N, K = cs.K;
  float *B = malloc(sizeof(float) * (size_t)(K * N + 1));
  for (int64_t i = 0; i < K * N; i++) B[i] = tu_frand() * (i % 7 == 3 ? 0.01f : 1.0f);
  d.B = malloc((size_t)circc_int8_bytes(N, K));
  cr_assert_eq(circc_int8_pack_b(B, N, 1, N, K, d.B), 0);
  double *W = malloc(sizeof(double) * (size_t)(K * N + 1));
  for (int64_t k = 0; k < K; k++)
    for (int64_t n = 0; n < N; n++) W[k * N + n] = dequantized(B, N, K, k, n);
  tu_gemm_reference(&d, NULL, W);
  free(B), free(W);
  int64_t sf = circc_gemm_int8_scratch_floats(0, K);
  d.scratch = aligned_alloc(64, (size_t)((sf * 4 + 63) / 64 * 64));
  return d;
}

static void run(const Path *p, TuGemm *d, int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
  p->rows(p->decode, m0, m1, n0, n1, d->cs.K, d->A, d->a_m, d->a_k, d->B, d->C, d->c_m, d->c_n, d->scratch);
}

Test(gemm_int8, every_path_within_the_fp32_accumulation_bound) {
  Path p[6];
  int np = paths(p);
  const int64_t Ns[] = {1, 17, 50}, Ks[] = {1, 31, 32, 33, 1100};
  for (int64_t M = 1; M <= 8; M++)
    for (size_t i = 0; i < 3; i++)
      for (size_t j = 0; j < 5; j++) {
        TuGemm d = make((TuGemmCase){M, Ns[i], Ks[j], M == 3, M == 5});
        for (int q = 0; q < np; q++) {
          tu_gemm_fill_nan(&d);
          run(&p[q], &d, 0, M, 0, d.cs.N);
          tu_gemm_check_close(p[q].name, &d);
        }
        tu_gemm_free(&d);
      }
}

/* The decode summation (a chain of FMAs per group of 32, then one FMA by the
 * group's scale) is the same on every path: the three give the same bits. */
Test(gemm_int8, decode_paths_agree_bit_for_bit) {
  Path p[6];
  int np = paths(p);
  TuGemm d = make((TuGemmCase){4, 50, 1100, 0, 0});
  float *first = malloc(sizeof(float) * (size_t)d.clen);
  tu_gemm_fill_nan(&d);
  run(&p[0], &d, 0, 4, 0, 50);
  memcpy(first, d.C, sizeof(float) * (size_t)d.clen);
  for (int q = 1; q < np; q++) {
    if (!p[q].decode) continue;
    tu_gemm_fill_nan(&d);
    run(&p[q], &d, 0, 4, 0, 50);
    cr_assert(!memcmp(first, d.C, sizeof(float) * 4 * 50), "%s differs from %s", p[q].name, p[0].name);
  }
  free(first);
  tu_gemm_free(&d);
}

/* The decode summation's exact bits, computed here from the contract and the
 * test's own q and s (not the kernel's): per group of 32 k, t = fmaf chain of
 * a*q from +0, then c = fmaf(t, s, c). A path that scaled every weight, or
 * summed in another order, differs in the last bits. */
Test(gemm_int8, decode_follows_the_documented_order) {
  Path p[6];
  int np = paths(p);
  const int64_t M = 3, N = 50, K = 1100; /* a short last group (1100 = 34 * 32 + 12) */
  TuGemm d = tu_gemm_new((TuGemmCase){M, N, K, 0, 0});
  float *B = malloc(sizeof(float) * (size_t)(K * N));
  for (int64_t i = 0; i < K * N; i++) B[i] = tu_frand() * (i % 7 == 3 ? 0.01f : 1.0f);
  d.B = malloc((size_t)circc_int8_bytes(N, K));
  cr_assert_eq(circc_int8_pack_b(B, N, 1, N, K, d.B), 0);
  float *want = malloc(sizeof(float) * (size_t)(M * N));
  for (int64_t m = 0; m < M; m++)
    for (int64_t n = 0; n < N; n++) {
      float c = 0.0f;
      for (int64_t k0 = 0; k0 < K; k0 += 32) {
        float t = 0.0f;
        double s = 0;
        for (int64_t k = k0; k < K && k < k0 + 32; k++)
          t = fmaf(d.A[m * d.a_m + k * d.a_k], (float)quantized(B, N, K, k, n, &s), t);
        c = fmaf(t, (float)s, c);
      }
      want[m * N + n] = c;
    }
  int checked = 0;
  for (int q = 0; q < np; q++) {
    if (!p[q].decode) continue;
    tu_gemm_fill_nan(&d);
    run(&p[q], &d, 0, M, 0, N);
    for (int64_t i = 0; i < M * N; i++)
      cr_assert(!memcmp(&want[i], &d.C[i / N * d.c_m + i % N * d.c_n], sizeof(float)), "%s: C[%lld] = %a, want %a",
                p[q].name, (long long)i, d.C[i / N * d.c_m + i % N * d.c_n], want[i]);
    checked++;
  }
  cr_assert_eq(checked, 3, "the three decode paths");
  free(B), free(want);
  tu_gemm_free(&d);
}

/* Rows and columns split into pieces (as threads split them: columns at
 * multiples of 16) give the same bits as one call, on every path. */
Test(gemm_int8, any_split_gives_the_same_bits) {
  Path p[6];
  int np = paths(p);
  const TuGemmCase cs[] = {{4, 100, 300, 0, 0}, {8, 65, 40, 1, 1}, {1, 200, 1100, 0, 0}, {6, 300, 64, 0, 0}};
  for (size_t i = 0; i < sizeof cs / sizeof cs[0]; i++) {
    TuGemm d = make(cs[i]);
    int64_t M = d.cs.M, N = d.cs.N;
    float *whole = malloc(sizeof(float) * (size_t)d.clen);
    for (int j = 0; j < np; j++) {
      tu_gemm_fill_nan(&d);
      run(&p[j], &d, 0, M, 0, N);
      memcpy(whole, d.C, sizeof(float) * (size_t)d.clen);
      const int64_t widths[3] = {16, 48, 80};
      for (int s = 0; s < 3; s++) {
        const int64_t mcut = M > 1 ? (s + 1) * M / 4 : 1, mcuts[3] = {0, mcut, M};
        tu_gemm_fill_nan(&d);
        for (int q = 0; q < 2; q++)
          for (int64_t n0 = 0; n0 < N; n0 += widths[s])
            run(&p[j], &d, mcuts[q], mcuts[q + 1], n0, n0 + widths[s] < N ? n0 + widths[s] : N);
        cr_assert(!memcmp(whole, d.C, sizeof(float) * (size_t)(M * N)), "%s: split %d changed bits (M=%lld N=%lld)",
                  p[j].name, s, (long long)M, (long long)N);
      }
    }
    free(whole);
    tu_gemm_free(&d);
  }
}

/* Columns [n0,n1) of rows [m0,m1) only: the others are untouched. */
Test(gemm_int8, writes_only_its_block) {
  Path p[6];
  int np = paths(p);
  TuGemm d = make((TuGemmCase){9, 100, 50, 0, 0});
  for (int j = 0; j < np; j++) {
    tu_gemm_fill_nan(&d);
    run(&p[j], &d, 2, 7, 32, 70);
    tu_gemm_check_block(p[j].name, &d, 2, 7, 32, 70);
  }
  tu_gemm_free(&d);
}

Test(gemm_int8, k_zero_writes_zeros) {
  Path p[6];
  int np = paths(p);
  float C[6];
  for (int j = 0; j < np; j++) {
    for (int i = 0; i < 6; i++) C[i] = NAN;
    p[j].rows(p[j].decode, 0, 2, 0, 3, 0, NULL, 0, 0, NULL, C, 3, 1, NULL);
    for (int i = 0; i < 6; i++) cr_assert(C[i] == 0.0f && !signbit(C[i]), "%s", p[j].name);
  }
}
#endif
