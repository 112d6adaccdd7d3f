/* test_gemm_bf16.c — templates/gemm_bf16.h (circc --precision bf16) against a
 * double reference computed from the bf16-rounded operands. Every path the
 * machine has: AMX (skipped, with a message, where the CPU or the kernel does
 * not give it), AVX-512 BF16 (the same translation unit with amx = 0, which
 * is also the decode path for M <= 4) and the portable C path; the header is
 * compiled three times: natively (-march=native), with CIRCC_GEMM_BF16_NO_AMX
 * (no AMX compiled in: asking for it falls back) and with
 * CIRCC_GEMM_BF16_PORTABLE (tests/CMakeLists.txt).
 *
 * Tolerance: the products of bf16 values are exact in fp32 (8-bit significands)
 * and exact in double, so the only error is the fp32 accumulation of K terms,
 * in any order: |C - ref| <= (Kp + 1) * 2^-24 * sum_k |a_k b_k| (Kp: K padded
 * to a multiple of 32, the zero terms included); the tests use that bound. */
#include <stdint.h>

typedef void Bf16RowsFn(int amx, int64_t m0, int64_t m1, int64_t n0, int64_t n1, int64_t K, const float *A,
                        int64_t a_m, int64_t a_k, const uint16_t *Bp, float *C, int64_t c_m, int64_t c_n,
                        void *scratch);
typedef int Bf16AmxFn(void);
typedef const char *Bf16IsaFn(void);
#define BF16_DECLARE(v)                                                                                              \
  Bf16RowsFn bf16_rows_##v;                                                                                          \
  Bf16AmxFn bf16_amx_##v;                                                                                            \
  Bf16IsaFn bf16_isa_##v;
#define BF16_DEFINE(v)                                                                                               \
  void bf16_rows_##v(int amx, int64_t m0, int64_t m1, int64_t n0, int64_t n1, int64_t K, const float *A,           \
                     int64_t a_m, int64_t a_k, const uint16_t *Bp, float *C, int64_t c_m, int64_t c_n,              \
                     void *scratch) {                                                                                \
    circc_gemm_bf16_rows(amx, m0, m1, n0, n1, K, A, a_m, a_k, Bp, C, c_m, c_n, scratch);                             \
  }                                                                                                                  \
  int bf16_amx_##v(void) { return circc_gemm_bf16_amx(); }                                                           \
  const char *bf16_isa_##v(void) { return CIRCC_BF16_VECTOR_ISA; }
BF16_DECLARE(native)
BF16_DECLARE(no_amx)
BF16_DECLARE(portable)

#ifdef BF16_TEST_VARIANT
/* ------------------------------------------------ a variant translation unit */
#include "gemm_bf16.h"
#define BF16_DEFINE_(v) BF16_DEFINE(v)
BF16_DEFINE_(BF16_TEST_VARIANT)
#else
/* ------------------------------------------------------------ the test suite */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "gemm_bf16.h"
#include "testutil.h"

BF16_DEFINE(native)
TestSuite(gemm_bf16);

typedef struct Path {
  const char *name;
  Bf16RowsFn *rows;
  int amx;
} Path;

/* The paths this machine runs; AMX only when the CPU and the kernel give it. */
static int paths(Path *p) {
  int n = 0;
  if (bf16_amx_native()) p[n++] = (Path){"amx", bf16_rows_native, 1};
  else fprintf(stderr, "test_gemm_bf16: SKIP the AMX path: %s\n",
               CIRCC_BF16_HAS_AMX ? "the kernel refused the tile permission (arch_prctl)"
                                  : "not compiled in (no __AMX_TILE__/__AMX_BF16__ with -march=native)");
  p[n++] = (Path){bf16_isa_native(), bf16_rows_native, 0};
  p[n++] = (Path){"no-amx build", bf16_rows_no_amx, 1}; /* asks for AMX, which is not compiled in */
  p[n++] = (Path){"portable", bf16_rows_portable, 1};
  return n;
}

/* d's operands: B random in [-1, 1) (drawn after A), packed; the reference
 * on the bf16-rounded A and B. */
static double bf(float x) { return (double)circc_bf16_float(circc_bf16_round(x)); }

static TuGemm make(TuGemmCase cs) {
  TuGemm d = tu_gemm_new(cs);
  int64_t M = cs.M, N = cs.N, K = cs.K;
  float *B = malloc(sizeof(float) * (size_t)(K * N + 1));
  for (int64_t i = 0; i < K * N; i++) B[i] = tu_frand();
  d.B = malloc(sizeof(uint16_t) * (size_t)circc_bf16_np(N) * (size_t)circc_bf16_kp(K) + 2);
  circc_bf16_pack_b(B, N, 1, N, K, d.B);
  double *W = malloc(sizeof(double) * (size_t)(K * N + 1));
  for (int64_t i = 0; i < K * N; i++) W[i] = bf(B[i]);
  tu_gemm_reference(&d, bf, W);
  free(B), free(W);
  d.scratch = aligned_alloc(64, (size_t)((circc_gemm_bf16_scratch_bytes(M, K) + 63) / 64 * 64));
  return d;
}

/* Runs p over rows [m0,m1) and columns [n0,n1) of d's C. */
static void run(const Path *p, TuGemm *d, int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
  p->rows(p->amx, m0, m1, n0, n1, d->cs.K, d->A, d->a_m, d->a_k, d->B, d->C, d->c_m, d->c_n, d->scratch);
}

static const TuGemmCase CASES[] = {
    {1, 1, 1, 0, 0},     {1, 17, 33, 0, 0},   {2, 50, 100, 1, 0},  {3, 1, 64, 0, 1},      {4, 33, 300, 0, 0},
    {5, 31, 31, 1, 1},   {17, 47, 65, 0, 0},  {33, 64, 32, 0, 1},  {40, 100, 513, 1, 0},  {64, 96, 768, 0, 0},
    {1, 200, 1100, 0, 0}, {70, 1, 40, 0, 0},  {31, 33, 97, 0, 0},  {16, 16, 16, 0, 0},
};

Test(gemm_bf16, every_path_within_the_fp32_accumulation_bound) {
  Path p[4];
  int np = paths(p);
  for (size_t i = 0; i < sizeof CASES / sizeof CASES[0]; i++) {
    TuGemm d = make(CASES[i]);
    for (int j = 0; j < np; j++) {
      tu_gemm_fill_nan(&d);
      run(&p[j], &d, 0, d.cs.M, 0, d.cs.N);
      tu_gemm_check_close(p[j].name, &d);
    }
    tu_gemm_free(&d);
  }
}

/* Rows and columns split into pieces (as threads split them) give the same
 * bits as one call, on every path. */
Test(gemm_bf16, any_split_gives_the_same_bits) {
  Path p[4];
  int np = paths(p);
  const TuGemmCase cs[] = {{70, 100, 300, 0, 0}, {45, 64, 40, 1, 1}, {6, 65, 2000, 0, 0}};
  for (size_t i = 0; i < sizeof cs / sizeof cs[0]; i++) {
    TuGemm d = make(cs[i]);
    int64_t M = d.cs.M, N = d.cs.N;
    float *whole = malloc(sizeof(float) * (size_t)d.clen);
    for (int j = 0; j < np; j++) {
      tu_gemm_fill_nan(&d);
      run(&p[j], &d, 0, M, 0, N);
      memcpy(whole, d.C, sizeof(float) * (size_t)d.clen);
      const int64_t cut[4] = {1, 5, 17, M - 1}; /* two pieces, split at cut[s] (below M) */
      for (int s = 0; s < 4; s++) {
        const int64_t mcuts[3] = {0, cut[s] < M ? cut[s] : M - 1, M};
        tu_gemm_fill_nan(&d);
        for (int q = 0; q < 2; q++)
          for (int64_t n0 = 0; n0 < N; n0 += 32) run(&p[j], &d, mcuts[q], mcuts[q + 1], n0, n0 + 32 < N ? n0 + 32 : N);
        cr_assert(!memcmp(whole, d.C, sizeof(float) * (size_t)(M * N)), "%s: split %d changed bits (M=%lld)", p[j].name,
                  s, (long long)M);
      }
    }
    free(whole);
    tu_gemm_free(&d);
  }
}

/* Columns [n0,n1) only: the others are untouched. */
Test(gemm_bf16, writes_only_its_block) {
  Path p[4];
  int np = paths(p);
  TuGemm d = make((TuGemmCase){9, 100, 50, 0, 0});
  for (int j = 0; j < np; j++) {
    tu_gemm_fill_nan(&d);
    run(&p[j], &d, 2, 7, 32, 70);
    tu_gemm_check_block(p[j].name, &d, 2, 7, 32, 70);
  }
  tu_gemm_free(&d);
}

Test(gemm_bf16, k_zero_writes_zeros) {
  Path p[4];
  int np = paths(p);
  float C[6];
  for (int j = 0; j < np; j++) {
    for (int i = 0; i < 6; i++) C[i] = NAN;
    p[j].rows(p[j].amx, 0, 2, 0, 3, 0, NULL, 0, 0, NULL, C, 3, 1, NULL);
    for (int i = 0; i < 6; i++) cr_assert(C[i] == 0.0f && !signbit(C[i]), "%s", p[j].name);
  }
}

/* Hand-computed roundings: nearest, ties to even, NaN, overflow to inf. */
Test(gemm_bf16, rounding_is_nearest_even) {
  cr_assert_eq(circc_bf16_round(1.0f), 0x3f80);
  cr_assert_eq(circc_bf16_round(1.0f + 0x1p-8f), 0x3f80);          /* tie, 0x3f80 is even */
  cr_assert_eq(circc_bf16_round(1.0f + 3 * 0x1p-8f), 0x3f82);      /* tie, up to even */
  cr_assert_eq(circc_bf16_round(1.0f + 0x1p-8f + 0x1p-20f), 0x3f81); /* above the tie */
  cr_assert_eq(circc_bf16_round(-2.0f), 0xc000);
  cr_assert_eq(circc_bf16_round(3.4028235e38f), 0x7f80);            /* FLT_MAX rounds to inf */
  cr_assert_eq(circc_bf16_round(INFINITY), 0x7f80);
  uint16_t q = circc_bf16_round(NAN);
  cr_assert((q & 0x7f80) == 0x7f80 && (q & 0x7f), "NaN stays NaN: %#x", q);
  cr_assert_eq(circc_bf16_float(0x3fc0), 1.5f);
}

/* The packed layout: (k, n) → panel n/16, pair k/2, column n%16, half k%2. */
Test(gemm_bf16, packed_layout) {
  cr_assert_eq(circc_bf16_b_index(0, 0, 64), 0);
  cr_assert_eq(circc_bf16_b_index(1, 0, 64), 1);
  cr_assert_eq(circc_bf16_b_index(0, 1, 64), 2);
  cr_assert_eq(circc_bf16_b_index(2, 0, 64), 32);
  cr_assert_eq(circc_bf16_b_index(0, 16, 64), 32 * 32);
  cr_assert_eq(circc_bf16_b_index(5, 17, 64), 32 * 32 + 2 * 32 + 2 + 1);
  cr_assert_eq(circc_bf16_kp(1), 32);
  cr_assert_eq(circc_bf16_kp(64), 64);
  cr_assert_eq(circc_bf16_np(33), 64);
}
#endif
