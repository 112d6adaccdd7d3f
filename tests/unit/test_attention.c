/* test_attention.c — templates/attention_f32.h against a naive reference in
 * double: causal, full, banded and arbitrary masks, as constants (reduced as
 * lowering does) and as run-time F and B (factor and bias, or bias only), a
 * fully masked row and very negative scores (the two-pass fallback), odd sizes (T not a
 * multiple of the key block, head dims not a multiple of the vector width),
 * strided operands; results must not depend on how rows are split into calls.
 * Built like test_gemm.c: natively, and as `avx2` and `portable` variant
 * translation units (ATTN_TEST_VARIANT, tests/CMakeLists.txt). */
#include <stdint.h>

typedef void AttnFn(int64_t q0, int64_t q1, int64_t Tk, int64_t C, int64_t D, const float *Q, int64_t q_q,
                    int64_t q_c, const float *K, int64_t k_k, int64_t k_c, const float *V, int64_t v_k, int64_t v_d,
                    float *O, int64_t o_q, int64_t o_d, const float *F, const float *B, int b_all,
                    const int64_t *kend, const float *skip, float *scratch);
typedef int64_t AttnScratchFn(int64_t Tk, int64_t C, int64_t D);
#define ATTN_DECLARE(v)                                                                                              \
  AttnFn attn_rows_##v;                                                                                              \
  AttnScratchFn attn_scratch_##v;
#define ATTN_DEFINE(v)                                                                                               \
  void attn_rows_##v(int64_t q0, int64_t q1, int64_t Tk, int64_t C, int64_t D, const float *Q, int64_t q_q,        \
                     int64_t q_c, const float *K, int64_t k_k, int64_t k_c, const float *V, int64_t v_k,           \
                     int64_t v_d, float *O, int64_t o_q, int64_t o_d, const float *F, const float *B,   \
                     int b_all, const int64_t *kend, const float *skip, float *scratch) {                          \
    circc_attn_f32_rows(q0, q1, Tk, C, D, Q, q_q, q_c, K, k_k, k_c, V, v_k, v_d, O, o_q, o_d, F, B, b_all,        \
                        kend, skip, scratch);                                                                      \
  }                                                                                                                  \
  int64_t attn_scratch_##v(int64_t Tk, int64_t C, int64_t D) { return circc_attn_scratch_floats(Tk, C, D); }
ATTN_DECLARE(native)
ATTN_DECLARE(avx2)
ATTN_DECLARE(portable)

#ifdef ATTN_TEST_VARIANT
#include "attention_f32.h"
#define ATTN_DEFINE_(v) ATTN_DEFINE(v)
ATTN_DEFINE_(ATTN_TEST_VARIANT)
#else
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "testutil.h"
#include "attention_f32.h"

ATTN_DEFINE(native)
TestSuite(attention);

typedef struct Variant {
  const char *name;
  AttnFn *rows;
  AttnScratchFn *scratch;
} Variant;

static const Variant VARIANTS[] = {{"native", attn_rows_native, attn_scratch_native},
                                   {"avx2", attn_rows_avx2, attn_scratch_avx2},
                                   {"portable", attn_rows_portable, attn_scratch_portable}};

static int have(const Variant *v) {
#if defined(__x86_64__) || defined(__i386__)
  if (!strcmp(v->name, "avx2")) return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#endif
  return 1;
}

enum { CAUSAL, FULL, BAND, RANDOM_MASK, EMPTY_ROW, VERY_NEGATIVE };
static const char *MASK_NAME[] = {"causal", "full", "band", "random", "empty-row", "very-negative"};

/* Per row, where the skipped keys start and their largest B
 * (circc_attn_row_end, the rule lowering applies to constant masks); plain:
 * F = 1 and B = 0 on every kept key. */
static void analyse(int64_t Tq, int64_t Tk, const float *F, const float *B, int64_t *kend, float *skip, int *plain) {
  *plain = 1;
  for (int64_t q = 0; q < Tq; q++) {
    kend[q] = circc_attn_row_end(F ? F + q * Tk : NULL, B + q * Tk, Tk, &skip[q]);
    for (int64_t k = 0; k < kend[q]; k++) *plain &= (!F || F[q * Tk + k] == 1.0f) && B[q * Tk + k] == 0.0f;
  }
}

static void make_mask(int kind, int64_t Tq, int64_t Tk, float *F, float *B) {
  for (int64_t q = 0; q < Tq; q++)
    for (int64_t k = 0; k < Tk; k++) {
      int keep = 1;
      float f = 1.0f, b = 0.0f;
      switch (kind) {
      case CAUSAL: keep = k <= q; break;
      case FULL: break;
      case BAND: keep = k <= q && k + 5 > q; break;
      case RANDOM_MASK: keep = (q * 7 + k * 3) % 5 != 0 || k == 0, f = 0.5f + (float)(k % 3), b = 0.25f * (float)(q % 4); break;
      case EMPTY_ROW: keep = k <= q && q != 2; break;
      case VERY_NEGATIVE: keep = k <= q, b = -20000.0f; break;
      }
      F[q * Tk + k] = keep ? f : 0.0f;
      B[q * Tk + k] = keep ? b : -10000.0f;
    }
}

/* How F and B reach the kernel: constants reduced as lowering does (F and B
 * dropped when plain), run-time F and B as they are, or a run-time bias alone
 * (F = NULL: the reference's F is 1 everywhere). */
enum { AS_CONST, AS_RUNTIME, AS_BIAS };

/* One case: layouts are transposed (Q, V) or gapped (K) to exercise strides. */
static void check(const Variant *v, int kind, int how, int64_t Tq, int64_t Tk, int64_t C, int64_t D) {
  float *Q = malloc(sizeof(float) * (size_t)(Tq * C + 1)), *K = malloc(sizeof(float) * (size_t)(Tk * (C + 3) + 1));
  float *V = malloc(sizeof(float) * (size_t)(Tk * D + 1)), *F = malloc(sizeof(float) * (size_t)(Tq * Tk + 1));
  float *B = malloc(sizeof(float) * (size_t)(Tq * Tk + 1)), *skip = malloc(sizeof(float) * (size_t)(Tq + 1));
  float *O1 = malloc(sizeof(float) * (size_t)(Tq * D + 1)), *O2 = malloc(sizeof(float) * (size_t)(Tq * D + 1));
  int64_t *kend = malloc(sizeof(int64_t) * (size_t)(Tq + 1));
  float *scratch = aligned_alloc(64, (size_t)((v->scratch(Tk, C, D) * 4 + 63) / 64 * 64));
  double *s = malloc(sizeof(double) * (size_t)(Tk + 1));
  for (int64_t i = 0; i < Tq * C; i++) Q[i] = 2.0f * tu_frand();
  for (int64_t i = 0; i < Tk * (C + 3); i++) K[i] = 2.0f * tu_frand();
  for (int64_t i = 0; i < Tk * D; i++) V[i] = tu_frand();
  make_mask(kind, Tq, Tk, F, B);
  if (how == AS_BIAS)
    for (int64_t i = 0; i < Tq * Tk; i++) F[i] = 1.0f;
  int plain, skips = 0;
  analyse(Tq, Tk, how == AS_BIAS ? NULL : F, B, kend, skip, &plain);
  for (int64_t q = 0; q < Tq; q++) skips |= kend[q] < Tk;
  const float *f = F, *b = B; /* what lowering passes */
  int b_all = 1;
  if (how == AS_CONST && plain) f = NULL, b = skips ? B : NULL, b_all = 0;
  if (how == AS_BIAS) f = NULL;
  /* Q[q,c] at c*Tq + q (transposed), K[k,c] at k*(C+3) + c, V[k,d] at d*Tk + k, O row-major */
  for (int64_t q0 = 0; q0 < Tq; q0 += CIRCC_ATTN_QB) {
    int64_t q1 = q0 + CIRCC_ATTN_QB < Tq ? q0 + CIRCC_ATTN_QB : Tq;
    v->rows(q0, q1, Tk, C, D, Q, 1, Tq, K, C + 3, 1, V, 1, Tk, O1, D, 1, f, b, b_all, kend, skip, scratch);
  }
  for (int64_t q = 0; q < Tq; q += 3) /* another split: 3 rows per call */
    v->rows(q, q + 3 < Tq ? q + 3 : Tq, Tk, C, D, Q, 1, Tq, K, C + 3, 1, V, 1, Tk, O2, D, 1, f, b, b_all, kend,
            skip, scratch);
  cr_assert(!memcmp(O1, O2, sizeof(float) * (size_t)(Tq * D)), "%s %s/%d Tq=%lld Tk=%lld C=%lld D=%lld: split changes bits",
            v->name, MASK_NAME[kind], how, (long long)Tq, (long long)Tk, (long long)C, (long long)D);
  for (int64_t q = 0; q < Tq; q++) {
    double mx = -INFINITY, sum = 0, serr = 0; /* serr: fp32 rounding of the scores, about eps·magnitude */
    for (int64_t k = 0; k < Tk; k++) {
      double dot = 0, mag = 0;
      for (int64_t c = 0; c < C; c++)
        dot += (double)Q[c * Tq + q] * K[k * (C + 3) + c], mag += fabs((double)Q[c * Tq + q] * K[k * (C + 3) + c]);
      s[k] = dot * F[q * Tk + k] + B[q * Tk + k];
      serr = fmax(serr, 2.4e-7 * (mag * fabs(F[q * Tk + k]) + fabs(B[q * Tk + k])));
      mx = fmax(mx, s[k]);
    }
    for (int64_t k = 0; k < Tk; k++) sum += s[k] = exp(s[k] - mx);
    for (int64_t d = 0; d < D; d++) {
      double want = 0, mag = 0;
      for (int64_t k = 0; k < Tk; k++) want += s[k] / sum * V[d * Tk + k], mag += s[k] / sum * fabs(V[d * Tk + k]);
      double got = O1[q * D + d];
      cr_assert(fabs(got - want) <= (2 * serr + 1e-5) * mag + 1e-6, "%s %s/%d Tq=%lld Tk=%lld C=%lld D=%lld: O[%lld,%lld] = %.9g, want %.9g",
                v->name, MASK_NAME[kind], how, (long long)Tq, (long long)Tk, (long long)C, (long long)D, (long long)q,
                (long long)d, got, want);
    }
  }
  free(Q), free(K), free(V), free(F), free(B), free(skip), free(O1), free(O2), free(kend), free(scratch), free(s);
}

/* One mask kind on one variant; a variant the CPU cannot run is a skipped
 * test (reported by Criterion), not a silent pass. */
static void sweep(int kind, const Variant *v) {
  static const int64_t T[] = {1, 2, 5, 63, 64, 65, 130};
  static const int64_t HD[][2] = {{1, 1}, {3, 5}, {8, 8}, {17, 33}, {64, 64}};
  if (!have(v)) cr_skip_test("variant %s: this CPU lacks AVX2+FMA", v->name);
  for (int how = AS_CONST; how <= AS_BIAS; how++)
    for (size_t t = 0; t < sizeof T / sizeof *T; t++)
      for (size_t h = 0; h < sizeof HD / sizeof *HD; h++) {
        check(v, kind, how, T[t], T[t], HD[h][0], HD[h][1]);
        if (kind == FULL || kind == RANDOM_MASK) check(v, kind, how, T[t], T[t] + 7, HD[h][0], HD[h][1]);
      }
}

#define SWEEP(name, kind)                                           \
  Test(attention, name##_native) { sweep(kind, &VARIANTS[0]); }     \
  Test(attention, name##_avx2) { sweep(kind, &VARIANTS[1]); }       \
  Test(attention, name##_portable) { sweep(kind, &VARIANTS[2]); }
SWEEP(causal, CAUSAL)
SWEEP(full_mask_and_more_keys_than_queries, FULL)
SWEEP(band_mask, BAND)
SWEEP(arbitrary_constant_mask_and_scale, RANDOM_MASK)
SWEEP(fully_masked_row_falls_back, EMPTY_ROW)
SWEEP(very_negative_scores_fall_back, VERY_NEGATIVE)

/* The skip is only taken when it is exact: here it must be (causal, small scores). */
Test(attention, causal_skip_is_bit_identical_to_all_keys) {
  const int64_t T = 100, C = 16, D = 16;
  int64_t kend[100], all[100];
  float skip[100], none[100];
  float *Q = malloc(sizeof(float) * T * C), *K = malloc(sizeof(float) * T * C), *V = malloc(sizeof(float) * T * D);
  float *F = malloc(sizeof(float) * T * T), *B = malloc(sizeof(float) * T * T);
  float *O1 = malloc(sizeof(float) * T * D), *O2 = malloc(sizeof(float) * T * D);
  float *scratch = aligned_alloc(64, (size_t)((circc_attn_scratch_floats(T, C, D) * 4 + 63) / 64 * 64));
  for (int64_t i = 0; i < T * C; i++) Q[i] = tu_frand(), K[i] = tu_frand();
  for (int64_t i = 0; i < T * D; i++) V[i] = tu_frand();
  make_mask(CAUSAL, T, T, F, B);
  int plain;
  analyse(T, T, F, B, kend, skip, &plain);
  cr_assert(plain);
  for (int64_t q = 0; q < T; q++) all[q] = T, none[q] = -INFINITY;
  for (int64_t q0 = 0; q0 < T; q0 += CIRCC_ATTN_QB) {
    int64_t q1 = q0 + CIRCC_ATTN_QB < T ? q0 + CIRCC_ATTN_QB : T;
    circc_attn_f32_rows(q0, q1, T, C, D, Q, C, 1, K, C, 1, V, D, 1, O1, D, 1, NULL, B, 0, kend, skip, scratch);
    circc_attn_f32_rows(q0, q1, T, C, D, Q, C, 1, K, C, 1, V, D, 1, O2, D, 1, F, B, 1, all, none, scratch);
  }
  cr_assert(!memcmp(O1, O2, sizeof(float) * T * D));
  free(Q), free(K), free(V), free(F), free(B), free(O1), free(O2), free(scratch);
}
#endif
