/* test_attention_bf16.c — templates/attention_bf16.h (the attention of circc
 * --precision bf16) against a double reference computed from the
 * bf16-rounded Q, K and V. Every path the machine has: AMX (skipped, with a
 * message, where the CPU or the kernel does not give it), AVX-512 BF16 (amx =
 * 0) and portable C; the header is compiled three times like test_gemm_bf16:
 * natively (-march=native), with CIRCC_GEMM_BF16_NO_AMX (asking for AMX falls
 * back) and with CIRCC_GEMM_BF16_PORTABLE (tests/CMakeLists.txt).
 *
 * Tolerance (check): the reference is O = Σ_k w_k ṽ_k with w = softmax(s),
 * s_k = (q̃·k̃_k) F + B in double from the rounded operands. The kernel's
 * differences, to first order, with u = 2^-24 (fp32) and Cp = C padded to 32:
 *  - each score: fp32 sum of Cp exact products in some order, then ·F and +B:
 *    |δs_k| <= (Cp + 3) u (|F| Σ_c |q̃_c k̃_kc| + |B|) =: e_k; s - max and
 *    fn_exp (about 1 ulp) add u |s_k - max| + 2^-22 relative to e^(s_k - max);
 *    so each unnormalised weight is off by a factor 1 + ε_k, |ε_k| <=
 *    2 max e + 88 u + 2^-22 =: εs (the max itself moves by at most max e);
 *  - p rounded to bf16: another factor 1 + η_k, |η_k| <= 2^-8 (8-bit
 *    significand, round to nearest);
 *  - weights normalised by the sum of the same rounded p: relative weight
 *    errors at most 2 (2^-8 + εs) / (1 - 2^-8 - εs), hence
 *    |ΔO| <= that · Σ_k w_k |ṽ_k| (mag);
 *  - the fp32 sums of p·ṽ (exact products) and of p, with a rescale per key
 *    block: (Tk + 2 Tk/64 + 4) u · mag;
 * plus 1e-6 absolute for values near 0. The rounding itself is checked exactly
 * by rounding_of_every_operand (a tolerance this wide would also pass fp32). */
#include <stdint.h>

typedef void AttnBf16Fn(int amx, int64_t q0, int64_t q1, int64_t Tk, int64_t C, int64_t D, const float *Q,
                        int64_t q_q, int64_t q_c, const float *K, int64_t k_k, int64_t k_c, const float *V,
                        int64_t v_k, int64_t v_d, float *O, int64_t o_q, int64_t o_d, const float *F,
                        const float *B, int b_all, const int64_t *kend, const float *skip, float *scratch);
typedef int64_t AttnBf16ScratchFn(int64_t Tk, int64_t C, int64_t D);
typedef int AttnBf16AmxFn(void);
typedef const char *AttnBf16IsaFn(void);
#define ATTN_BF16_DECLARE(v)                                                                                         \
  AttnBf16Fn attn_bf16_rows_##v;                                                                                     \
  AttnBf16ScratchFn attn_bf16_scratch_##v;                                                                           \
  AttnBf16AmxFn attn_bf16_amx_##v;                                                                                   \
  AttnBf16IsaFn attn_bf16_isa_##v;
#define ATTN_BF16_DEFINE(v)                                                                                          \
  void attn_bf16_rows_##v(int amx, int64_t q0, int64_t q1, int64_t Tk, int64_t C, int64_t D, const float *Q,       \
                          int64_t q_q, int64_t q_c, const float *K, int64_t k_k, int64_t k_c, const float *V,      \
                          int64_t v_k, int64_t v_d, float *O, int64_t o_q, int64_t o_d, const float *F,            \
                          const float *B, int b_all, const int64_t *kend, const float *skip, float *scratch) {     \
    circc_attn_bf16_rows(amx, q0, q1, Tk, C, D, Q, q_q, q_c, K, k_k, k_c, V, v_k, v_d, O, o_q, o_d, F, B, b_all,  \
                         kend, skip, scratch);                                                                     \
  }                                                                                                                  \
  int64_t attn_bf16_scratch_##v(int64_t Tk, int64_t C, int64_t D) { return circc_attn_bf16_scratch_floats(Tk, C, D); } \
  int attn_bf16_amx_##v(void) { return circc_gemm_bf16_amx(); }                                                      \
  const char *attn_bf16_isa_##v(void) { return CIRCC_BF16_VECTOR_ISA; }
ATTN_BF16_DECLARE(native)
ATTN_BF16_DECLARE(no_amx)
ATTN_BF16_DECLARE(portable)

#ifdef ATTN_BF16_TEST_VARIANT
/* ------------------------------------------------ a variant translation unit */
#include "attention_bf16.h"
#define ATTN_BF16_DEFINE_(v) ATTN_BF16_DEFINE(v)
ATTN_BF16_DEFINE_(ATTN_BF16_TEST_VARIANT)
#else
/* ------------------------------------------------------------ the test suite */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "testutil.h"
#include "attention_bf16.h"

ATTN_BF16_DEFINE(native)
TestSuite(attention_bf16);

typedef struct Path {
  const char *name;
  AttnBf16Fn *rows;
  AttnBf16ScratchFn *scratch;
  int amx;
} Path;

/* The paths this machine runs; AMX only when the CPU and the kernel give it. */
static int paths(Path *p) {
  int n = 0;
  if (attn_bf16_amx_native()) p[n++] = (Path){"amx", attn_bf16_rows_native, attn_bf16_scratch_native, 1};
  else fprintf(stderr, "test_attention_bf16: SKIP the AMX path: %s\n",
               CIRCC_BF16_HAS_AMX ? "the kernel refused the tile permission (arch_prctl)"
                                  : "not compiled in (no __AMX_TILE__/__AMX_BF16__ with -march=native)");
  p[n++] = (Path){attn_bf16_isa_native(), attn_bf16_rows_native, attn_bf16_scratch_native, 0};
  p[n++] = (Path){"no-amx build", attn_bf16_rows_no_amx, attn_bf16_scratch_no_amx, 1}; /* AMX not compiled in */
  p[n++] = (Path){"portable", attn_bf16_rows_portable, attn_bf16_scratch_portable, 1};
  return n;
}

static double r16(float x) { return (double)circc_bf16_float(circc_bf16_round(x)); }

enum { CAUSAL, FULL, RUNTIME_MASK, EMPTY_ROWS, VERY_NEGATIVE };
static const char *MASK_NAME[] = {"causal", "full", "run-time mask", "fully masked rows", "very negative"};

/* F and B of a mask kind ([Tq,Tk]); excluded keys F = 0, B = -10000. */
static void make_mask(int kind, int64_t Tq, int64_t Tk, float *F, float *B) {
  for (int64_t q = 0; q < Tq; q++)
    for (int64_t k = 0; k < Tk; k++) {
      int keep = 1;
      float f = 1.0f, b = 0.0f;
      switch (kind) {
      case CAUSAL: keep = k <= q; break;
      case FULL: break;
      case RUNTIME_MASK: keep = (q * 7 + k * 3) % 5 != 0 || k == 0, f = 0.125f * (float)(1 + k % 3), b = 0.25f * (float)(q % 4); break;
      case EMPTY_ROWS: keep = k <= q && q % 4 != 2; break;
      case VERY_NEGATIVE: keep = k <= q, b = -20000.0f; break;
      }
      F[q * Tk + k] = keep ? f : 0.0f;
      B[q * Tk + k] = keep ? b : -10000.0f;
    }
}

typedef struct Case {
  int kind;
  int64_t Tq, Tk, C, D;
} Case;

typedef struct Data {
  Case cs;
  float *Q, *K, *V, *F, *B, *skip, *O;
  const float *f, *b; /* what the kernel gets */
  int b_all;
  int64_t *kend;
  float *scratch;
} Data;

/* Layouts exercise strides: Q transposed (Q[q,c] at c*Tq + q), K rows gapped
 * (K[k,c] at k*(C+3) + c), V row-major, O row-major. The constant causal
 * mask reaches the kernel reduced as lowering does (F = NULL, B only where
 * skipped keys exist, b_all = 0); the others as F and B (very-negative: its B
 * is not 0 on the kept keys, so lowering keeps it too). */
static Data make(const Path *p, Case cs) {
  Data d = {.cs = cs};
  int64_t Tq = cs.Tq, Tk = cs.Tk, C = cs.C, D = cs.D;
  d.Q = malloc(sizeof(float) * (size_t)(Tq * C));
  d.K = malloc(sizeof(float) * (size_t)(Tk * (C + 3)));
  d.V = malloc(sizeof(float) * (size_t)(Tk * D));
  d.F = malloc(sizeof(float) * (size_t)(Tq * Tk));
  d.B = malloc(sizeof(float) * (size_t)(Tq * Tk));
  d.skip = malloc(sizeof(float) * (size_t)Tq);
  d.kend = malloc(sizeof(int64_t) * (size_t)Tq);
  d.O = malloc(sizeof(float) * (size_t)(Tq * D));
  d.scratch = aligned_alloc(64, (size_t)((p->scratch(Tk, C, D) * 4 + 63) / 64 * 64));
  for (int64_t i = 0; i < Tq * C; i++) d.Q[i] = 2.0f * tu_frand();
  for (int64_t i = 0; i < Tk * (C + 3); i++) d.K[i] = 2.0f * tu_frand();
  for (int64_t i = 0; i < Tk * D; i++) d.V[i] = tu_frand();
  make_mask(cs.kind, Tq, Tk, d.F, d.B);
  int runtime = cs.kind == FULL || cs.kind == RUNTIME_MASK || cs.kind == EMPTY_ROWS, skips = 0, plain = 1;
  for (int64_t q = 0; q < Tq; q++) {
    d.kend[q] = circc_attn_row_end(d.F + q * Tk, d.B + q * Tk, Tk, &d.skip[q]);
    skips |= d.kend[q] < Tk;
    for (int64_t k = 0; k < d.kend[q]; k++) plain &= d.F[q * Tk + k] == 1.0f && d.B[q * Tk + k] == 0.0f;
  }
  runtime |= !plain; /* lowering reduces only masks with F = 1, B = 0 on the kept keys */
  d.f = runtime ? d.F : NULL;
  d.b = runtime || skips ? d.B : NULL;
  d.b_all = runtime;
  return d;
}

static void release(Data *d) {
  free(d->Q), free(d->K), free(d->V), free(d->F), free(d->B), free(d->skip), free(d->kend), free(d->O);
  free(d->scratch);
}

/* Rows [q0,q1) in calls of at most `rows` rows. */
static void run(const Path *p, Data *d, int64_t q0, int64_t q1, int64_t rows) {
  const Case *c = &d->cs;
  for (int64_t a = q0; a < q1; a += rows)
    p->rows(p->amx, a, a + rows < q1 ? a + rows : q1, c->Tk, c->C, c->D, d->Q, 1, c->Tq, d->K, c->C + 3, 1, d->V,
            c->D, 1, d->O, c->D, 1, d->f, d->b, d->b_all, d->kend, d->skip, d->scratch);
}

static void check_close(const Path *p, const Data *d) {
  const Case *c = &d->cs;
  const int64_t Tq = c->Tq, Tk = c->Tk, C = c->C, D = c->D, Cp = (C + 31) / 32 * 32;
  const double u = ldexp(1.0, -24);
  double *s = malloc(sizeof(double) * (size_t)Tk);
  for (int64_t q = 0; q < Tq; q++) {
    double mx = -INFINITY, sum = 0, emax = 0;
    for (int64_t k = 0; k < Tk; k++) {
      double dot = 0, mag = 0;
      for (int64_t c2 = 0; c2 < C; c2++) {
        double pr = r16(d->Q[c2 * Tq + q]) * r16(d->K[k * (C + 3) + c2]);
        dot += pr, mag += fabs(pr);
      }
      double f = d->F[q * Tk + k], b = d->B[q * Tk + k];
      s[k] = dot * f + b;
      emax = fmax(emax, (double)(Cp + 3) * u * (mag * fabs(f) + fabs(b)));
      mx = fmax(mx, s[k]);
    }
    for (int64_t k = 0; k < Tk; k++) sum += s[k] = exp(s[k] - mx);
    const double eps = 2 * emax + 88 * u + ldexp(1.0, -22) + ldexp(1.0, -8);
    const double rel = 2 * eps / (1 - eps) + (double)(Tk + 2 * Tk / 64 + 4) * u;
    for (int64_t dd = 0; dd < D; dd++) {
      double want = 0, mag = 0;
      for (int64_t k = 0; k < Tk; k++) {
        double v = r16(d->V[k * D + dd]);
        want += s[k] / sum * v, mag += s[k] / sum * fabs(v);
      }
      double got = d->O[q * D + dd];
      cr_assert(fabs(got - want) <= rel * mag + 1e-6,
                "%s %s Tq=%lld Tk=%lld C=%lld D=%lld: O[%lld,%lld] = %.9g, want %.9g (bound %.3g)", p->name,
                MASK_NAME[c->kind], (long long)Tq, (long long)Tk, (long long)C, (long long)D, (long long)q,
                (long long)dd, got, want, rel * mag + 1e-6);
    }
  }
  free(s);
}

static const int64_t TS[] = {1, 5, 64, 65, 130};
static const int64_t CD[][2] = {{64, 64}, {24, 80}, {5, 3}};

Test(attention_bf16, every_path_within_the_derived_bound) {
  Path p[4];
  int np = paths(p);
  for (int j = 0; j < np; j++)
    for (int kind = CAUSAL; kind <= VERY_NEGATIVE; kind++)
      for (size_t t = 0; t < sizeof TS / sizeof *TS; t++)
        for (size_t h = 0; h < sizeof CD / sizeof *CD; h++)
          for (int more = 0; more < (kind == FULL || kind == RUNTIME_MASK ? 2 : 1); more++) {
            Case cs = {kind, TS[t], TS[t] + 7 * more, CD[h][0], CD[h][1]};
            Data d = make(&p[j], cs);
            run(&p[j], &d, 0, cs.Tq, CIRCC_ATTN_QB);
            check_close(&p[j], &d);
            release(&d);
          }
}

/* Rows are independent: calls of 64 rows, of 3 rows, of 1 row, and the rows
 * split between two "threads" at an odd row (each with its own scratch) give
 * the same bits. */
Test(attention_bf16, any_split_gives_the_same_bits) {
  Path p[4];
  int np = paths(p);
  static const Case CASES[] = {{CAUSAL, 130, 130, 64, 64}, {RUNTIME_MASK, 65, 72, 24, 80}, {EMPTY_ROWS, 70, 70, 5, 3}};
  for (int j = 0; j < np; j++)
    for (size_t i = 0; i < sizeof CASES / sizeof *CASES; i++) {
      Data d = make(&p[j], CASES[i]);
      const int64_t Tq = CASES[i].Tq, n = Tq * CASES[i].D;
      float *first = malloc(sizeof(float) * (size_t)n);
      run(&p[j], &d, 0, Tq, CIRCC_ATTN_QB);
      memcpy(first, d.O, sizeof(float) * (size_t)n);
      static const int64_t ROWS[] = {3, 1, 64};
      for (int r = 0; r < 3; r++) {
        memset(d.O, 0xff, sizeof(float) * (size_t)n);
        if (ROWS[r] == 64) { /* two workers: rows [0,37) and [37,Tq), scratch garbage between calls */
          run(&p[j], &d, 37, Tq, CIRCC_ATTN_QB);
          memset(d.scratch, 0x7f, sizeof(float) * (size_t)p[j].scratch(CASES[i].Tk, CASES[i].C, CASES[i].D));
          run(&p[j], &d, 0, 37, CIRCC_ATTN_QB);
        } else
          run(&p[j], &d, 0, Tq, ROWS[r]);
        cr_assert(!memcmp(first, d.O, sizeof(float) * (size_t)n), "%s %s: rows per call %lld change the bits",
                  p[j].name, MASK_NAME[CASES[i].kind], (long long)ROWS[r]);
      }
      free(first);
      release(&d);
    }
}

/* Q, K, p and V are each rounded to bf16 (nearest even), exactly: one query
 * row, two keys, C = D = 1. q = 1 + 2^-8 (a tie: rounds to 1), k = (0, 2 +
 * 3·2^-8) (rounds up to 2 + 2^-6, the nearer), so the scores are 0 and
 * 2 + 2^-6; p = (bf16(e^-(2+2^-6)), 1); v = (3 + 2^-7, -(1 + 2^-9)) round to
 * 3 (tie to even) and -1. O = (3 p0 - 1) / (p0 + 1), here exact in fp32 up to
 * the division (two roundings). Leaving out any one rounding moves O by more
 * than 5e-4 (checked below in double), so each is seen. */
static double rounding_case(int rq, int rk, int rp, int rv) {
  const float q = 1.0f + 0x1p-8f, k = 2.0f + 3 * 0x1p-8f, v0 = 3.0f + 0x1p-7f, v1 = -(1.0f + 0x1p-9f);
  const double s = (rq ? r16(q) : q) * (rk ? r16(k) : k), e = exp(-s), p0 = rp ? r16((float)e) : e;
  return (p0 * (rv ? r16(v0) : v0) + (rv ? r16(v1) : v1)) / (p0 + 1.0);
}

Test(attention_bf16, rounding_of_every_operand) {
  Path p[4];
  int np = paths(p);
  const float Q[1] = {1.0f + 0x1p-8f}, K[2] = {0.0f, 2.0f + 3 * 0x1p-8f}, V[2] = {3.0f + 0x1p-7f, -(1.0f + 0x1p-9f)};
  const int64_t kend[1] = {2};
  const float skip[1] = {-INFINITY};
  const float p0 = circc_bf16_float(circc_bf16_round(fn_exp(-(2.0f + 0x1p-6f))));
  const double want = (3.0 * p0 - 1.0) / (p0 + 1.0);
  cr_assert(fabs(rounding_case(1, 1, 1, 1) - want) < 1e-6);
  for (int i = 0; i < 4; i++)
    cr_assert(fabs(rounding_case(i != 0, i != 1, i != 2, i != 3) - want) > 5e-4, "rounding %d is not visible", i);
  for (int j = 0; j < np; j++) {
    float *scratch = aligned_alloc(64, (size_t)((p[j].scratch(2, 1, 1) * 4 + 63) / 64 * 64));
    float O = NAN;
    p[j].rows(p[j].amx, 0, 1, 2, 1, 1, Q, 1, 1, K, 1, 1, V, 1, 1, &O, 1, 1, NULL, NULL, 0, kend, skip, scratch);
    cr_assert(fabs(O - want) <= 4 * 0x1p-24 * fabs(want), "%s: O = %.9g, want %.9g", p[j].name, O, want);
    free(scratch);
  }
}

/* Rows past kend see only their kept keys: a causal row's result does not
 * depend on the values of later keys (NaN there). */
Test(attention_bf16, skipped_keys_are_not_read) {
  Path p[4];
  int np = paths(p);
  for (int j = 0; j < np; j++) {
    Data d = make(&p[j], (Case){CAUSAL, 100, 100, 24, 24});
    run(&p[j], &d, 0, 100, CIRCC_ATTN_QB);
    float *first = malloc(sizeof(float) * 100 * 24);
    memcpy(first, d.O, sizeof(float) * 100 * 24);
    for (int64_t k = 50; k < 100; k++)
      for (int64_t c = 0; c < 24; c++) d.K[k * 27 + c] = NAN, d.V[k * 24 + c] = NAN;
    run(&p[j], &d, 0, 50, CIRCC_ATTN_QB);
    cr_assert(!memcmp(first, d.O, sizeof(float) * 50 * 24), "%s: a row read keys after its own", p[j].name);
    free(first);
    release(&d);
  }
}
#endif
