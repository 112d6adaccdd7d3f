/* attention_f32.h — fused attention for circc-generated programs: for query
 * rows q in [q0,q1) of one batch element,
 *     s[q,k] = (Σ_c Q[q,c] K[k,c]) · F[q,k] + B[q,k]
 *     O[q,d] = Σ_k softmax_k(s[q,·])[k] · V[k,d]
 * without materialising s. F and B are [Tq,Tk], row-major: constants, or
 * computed at run time from a mask the program gets as input. F = NULL means
 * 1 on the keys processed and 0 on those skipped; B = NULL means 0. b_all:
 * B applies to every key; 0: B is 0 on the processed keys (lowering found so
 * for a constant causal mask), so with F = NULL the main loop reads neither.
 * Per row, keys k >= kend[q] are skipped: F = 0 there and B finite
 * (circc_attn_row_end; the compiler applies the same rule to constant masks),
 * so their score is B and skip[q] = max of those B. After the row's max m
 * over the processed keys is known, skip[q] - m < -87.3 means every skipped
 * key's fn_exp is exactly 0
 * (elementwise_f32.h flushes there), so skipping changes nothing; otherwise
 * (e.g. a fully masked row, or very negative scores) the row is recomputed
 * over all keys by the two-pass reference path. (Non-finite q·k at a skipped
 * key would make the score NaN; the skip ignores it.)
 *
 * Main loop: flash-style online softmax over blocks of CIRCC_ATTN_KB keys:
 * per block, s for CIRCC_ATTN_R rows at once (K packed transposed), the new
 * row max, p = fn_exp(s - max), the running sum and output rescaled by
 * fn_exp(old max - new max), then O += p·V (V block packed). Determinism:
 * every row's arithmetic depends only on its own data and the fixed key
 * blocks (from k = 0), never on q0/q1, the row grouping or threads; dot
 * products are FMA chains in increasing c, sums are per-lane partial sums
 * combined in a fixed order. Needs gemm_f32.h (vector helpers, CIRCC_GEMM_VL)
 * and elementwise_f32.h (fn_exp). Each thread needs its own scratch of
 * circc_attn_scratch_floats(Tk, C, D) floats, 64-byte aligned.
 * circc --precision bf16 programs run attention_bf16.h instead (the same
 * function with Q·Kᵀ and P·V on bf16 operands); it reuses the block sizes,
 * circc_attn_row_end and the skip rule from here. */
#ifndef CIRCC_ATTENTION_F32_H
#define CIRCC_ATTENTION_F32_H
#include <math.h>
#include <stdint.h>
#include "elementwise_f32.h"
#include "gemm_f32.h"

#if defined(__GNUC__)
#define CIRCC_ATTN_API static inline __attribute__((unused))
#else
#define CIRCC_ATTN_API static inline
#endif

#define CIRCC_ATTN_QB 64 /* query rows per call (the caller's task size) */
#define CIRCC_ATTN_KB 64 /* keys per block */
#define CIRCC_ATTN_LANES 16 /* partial sums / maxima per row (fixed: part of the summation order) */
#if CIRCC_GEMM_VL == 16
#define CIRCC_ATTN_R 4 /* rows per micro-tile: 4 x 4 zmm accumulators */
#define CIRCC_ATTN_DC 64 /* output columns per pass: 4 zmm */
#elif CIRCC_GEMM_VL == 8
#define CIRCC_ATTN_R 1 /* 8 ymm accumulators */
#define CIRCC_ATTN_DC 64
#else
#define CIRCC_ATTN_R 4
#define CIRCC_ATTN_DC 16
#endif

static inline int64_t circc_attn_round(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

/* Pieces of the scratch, each a multiple of 16 floats. */
typedef struct circc_attn_scratch {
  float *qp, *kt, *vp, *s, *o, *m, *l, *alpha, *row;
} circc_attn_scratch;

static inline circc_attn_scratch circc_attn_split(float *w, int64_t Tk, int64_t C, int64_t D) {
  const int64_t dp = circc_attn_round(D, CIRCC_ATTN_DC), cp = circc_attn_round(C, 16);
  circc_attn_scratch s;
  s.qp = w, w += CIRCC_ATTN_QB * cp;
  s.kt = w, w += cp * CIRCC_ATTN_KB;
  s.vp = w, w += CIRCC_ATTN_KB * dp;
  s.s = w, w += CIRCC_ATTN_QB * CIRCC_ATTN_KB;
  s.o = w, w += CIRCC_ATTN_QB * dp;
  s.m = w, w += CIRCC_ATTN_QB;
  s.l = w, w += CIRCC_ATTN_QB * CIRCC_ATTN_LANES;
  s.alpha = w, w += CIRCC_ATTN_QB;
  s.row = w;
  (void)Tk;
  return s;
}

CIRCC_ATTN_API int64_t circc_attn_scratch_floats(int64_t Tk, int64_t C, int64_t D) {
  const int64_t dp = circc_attn_round(D, CIRCC_ATTN_DC), cp = circc_attn_round(C, 16);
  return CIRCC_ATTN_QB * cp + cp * CIRCC_ATTN_KB + CIRCC_ATTN_KB * dp + CIRCC_ATTN_QB * CIRCC_ATTN_KB +
         CIRCC_ATTN_QB * dp + (2 + CIRCC_ATTN_LANES) * CIRCC_ATTN_QB + circc_attn_round(Tk, 16);
}

/* s[r][j] = Σ_c qp[r][c] kt[c][j] for R rows (row stride cp) and all KB keys. */
static inline void circc_attn_qk(const float *restrict qp, int64_t cp, int64_t C, const float *restrict kt,
                                 float *restrict s) {
#if CIRCC_GEMM_VL > 0
  enum { NV = CIRCC_ATTN_KB / CIRCC_GEMM_VL };
  circc_gemm_v acc[CIRCC_ATTN_R][NV];
  for (int r = 0; r < CIRCC_ATTN_R; r++)
    for (int t = 0; t < NV; t++) acc[r][t] = circc_gemm_vzero();
  for (int64_t c = 0; c < C; c++) {
    circc_gemm_v k[NV];
    for (int t = 0; t < NV; t++) k[t] = circc_gemm_vload(kt + c * CIRCC_ATTN_KB + t * CIRCC_GEMM_VL);
    for (int r = 0; r < CIRCC_ATTN_R; r++) {
      const circc_gemm_v a = circc_gemm_vset1(qp[r * cp + c]);
      for (int t = 0; t < NV; t++) acc[r][t] = circc_gemm_vfma(a, k[t], acc[r][t]);
    }
  }
  for (int r = 0; r < CIRCC_ATTN_R; r++)
    for (int t = 0; t < NV; t++) circc_gemm_vstore(s + r * CIRCC_ATTN_KB + t * CIRCC_GEMM_VL, acc[r][t]);
#else
  for (int r = 0; r < CIRCC_ATTN_R; r++) {
    float *restrict sr = s + r * CIRCC_ATTN_KB;
    for (int j = 0; j < CIRCC_ATTN_KB; j++) sr[j] = 0.0f;
    for (int64_t c = 0; c < C; c++) {
      const float a = qp[r * cp + c];
      for (int j = 0; j < CIRCC_ATTN_KB; j++) sr[j] += a * kt[c * CIRCC_ATTN_KB + j];
    }
  }
#endif
}

/* o[r][:] += Σ_{j<nk} p[r][j] vp[j][:] for R rows (row stride dp). */
static inline void circc_attn_pv(const float *restrict p, int64_t nk, const float *restrict vp, int64_t dp,
                                 float *restrict o) {
  for (int64_t dc = 0; dc < dp; dc += CIRCC_ATTN_DC) {
#if CIRCC_GEMM_VL > 0
    enum { NV = CIRCC_ATTN_DC / CIRCC_GEMM_VL };
    circc_gemm_v acc[CIRCC_ATTN_R][NV];
    for (int r = 0; r < CIRCC_ATTN_R; r++)
      for (int t = 0; t < NV; t++) acc[r][t] = circc_gemm_vload(o + r * dp + dc + t * CIRCC_GEMM_VL);
    for (int64_t j = 0; j < nk; j++) {
      circc_gemm_v v[NV];
      for (int t = 0; t < NV; t++) v[t] = circc_gemm_vload(vp + j * dp + dc + t * CIRCC_GEMM_VL);
      for (int r = 0; r < CIRCC_ATTN_R; r++) {
        const circc_gemm_v a = circc_gemm_vset1(p[r * CIRCC_ATTN_KB + j]);
        for (int t = 0; t < NV; t++) acc[r][t] = circc_gemm_vfma(a, v[t], acc[r][t]);
      }
    }
    for (int r = 0; r < CIRCC_ATTN_R; r++)
      for (int t = 0; t < NV; t++) circc_gemm_vstore(o + r * dp + dc + t * CIRCC_GEMM_VL, acc[r][t]);
#else
    for (int r = 0; r < CIRCC_ATTN_R; r++) {
      float *restrict orow = o + r * dp + dc;
      for (int64_t j = 0; j < nk; j++) {
        const float a = p[r * CIRCC_ATTN_KB + j];
        for (int t = 0; t < CIRCC_ATTN_DC; t++) orow[t] += a * vp[j * dp + dc + t];
      }
    }
#endif
  }
}

/* kt[c][j] = K[j*k_k + c*k_c] for j < nk, 0 for nk <= j < KB: by 8x8
 * register transposes when rows are contiguous and C is a multiple of 8. */
static inline void circc_attn_pack_kt(float *restrict kt, const float *K, int64_t k_k, int64_t k_c, int64_t nk,
                                      int64_t C) {
  int64_t j0 = 0;
#if CIRCC_GEMM_VL > 0
  if (k_c == 1 && C % 8 == 0)
    for (; j0 + 8 <= nk; j0 += 8)
      for (int64_t c = 0; c < C; c += 8)
        circc_gemm_tr8(K + j0 * k_k + c, k_k, kt + c * CIRCC_ATTN_KB + j0, CIRCC_ATTN_KB);
#endif
  for (int64_t j = j0; j < nk; j++)
    for (int64_t c = 0; c < C; c++) kt[c * CIRCC_ATTN_KB + j] = K[j * k_k + c * k_c];
  for (int64_t c = 0; c < C; c++)
    for (int64_t j = nk; j < CIRCC_ATTN_KB; j++) kt[c * CIRCC_ATTN_KB + j] = 0.0f;
}

/* Where row q's skipped keys start, from its rows f and b of F and B (NULL:
 * F = 1, B = 0): the keys from there on have F = 0 and a finite B below -100
 * (the excluded tail of a mask), so their score is B whatever Q·K is; *skip is
 * their largest B (-inf: none). */
CIRCC_ATTN_API int64_t circc_attn_row_end(const float *f, const float *b, int64_t Tk, float *skip) {
  int64_t e = Tk;
  if (f && b)
    while (e > 0 && f[e - 1] == 0.0f && b[e - 1] < -100.0f && b[e - 1] > -INFINITY) e--;
  float m = -INFINITY;
  for (int64_t k = e; k < Tk; k++) m = b[k] > m ? b[k] : m;
  *skip = m;
  return e;
}

/* One row over all Tk keys, two passes (the semantics of the unfused
 * program): scores, max, fn_exp, double sum, then the weighted sum of V. */
static inline void circc_attn_full_row(int64_t q, int64_t Tk, int64_t C, int64_t D, const float *Q, int64_t q_q,
                                       int64_t q_c, const float *K, int64_t k_k, int64_t k_c, const float *V,
                                       int64_t v_k, int64_t v_d, float *O, int64_t o_q, int64_t o_d,
                                       const float *F, const float *B, const int64_t *kend, float *restrict row) {
  float mx = -INFINITY;
  for (int64_t k = 0; k < Tk; k++) {
    float dot = 0.0f;
    for (int64_t c = 0; c < C; c++) dot += Q[q * q_q + c * q_c] * K[k * k_k + c * k_c];
    row[k] = dot * (F ? F[q * Tk + k] : k < kend[q] ? 1.0f : 0.0f) + (B ? B[q * Tk + k] : 0.0f);
    mx = row[k] > mx ? row[k] : mx;
  }
  double sum = 0.0;
  for (int64_t k = 0; k < Tk; k++) sum += row[k] = fn_exp(row[k] - mx);
  const float inv = (float)(1.0 / sum);
  for (int64_t k = 0; k < Tk; k++) row[k] *= inv;
  for (int64_t d = 0; d < D; d++) {
    float acc = 0.0f;
    for (int64_t k = 0; k < Tk; k++) acc += row[k] * V[k * v_k + d * v_d];
    O[q * o_q + d * o_d] = acc;
  }
}

/* Rows q0..q1 (q1 - q0 <= CIRCC_ATTN_QB) of one batch element; Q, K, V, O
 * point at that element, strides in elements. */
CIRCC_ATTN_API void circc_attn_f32_rows(int64_t q0, int64_t q1, int64_t Tk, int64_t C, int64_t D, const float *Q,
                                        int64_t q_q, int64_t q_c, const float *K, int64_t k_k, int64_t k_c,
                                        const float *V, int64_t v_k, int64_t v_d, float *O, int64_t o_q,
                                        int64_t o_d, const float *F, const float *B, int b_all,
                                        const int64_t *kend, const float *skip, float *scratch) {
  const int64_t n = q1 - q0, dp = circc_attn_round(D, CIRCC_ATTN_DC), cp = circc_attn_round(C, 16);
  const int64_t ng = circc_attn_round(n, CIRCC_ATTN_R); /* rows incl. the last group's padding */
  circc_attn_scratch w = circc_attn_split(scratch, Tk, C, D);
  int64_t kmax = 0;
  for (int64_t i = 0; i < n; i++) kmax = kend[q0 + i] > kmax ? kend[q0 + i] : kmax;
  for (int64_t i = 0; i < ng; i++) {
    for (int64_t c = 0; c < cp; c++) w.qp[i * cp + c] = i < n && c < C ? Q[(q0 + i) * q_q + c * q_c] : 0.0f;
    for (int64_t d = 0; d < dp; d++) w.o[i * dp + d] = 0.0f;
    w.m[i] = -INFINITY;
    for (int t = 0; t < CIRCC_ATTN_LANES; t++) w.l[i * CIRCC_ATTN_LANES + t] = 0.0f;
  }
  for (int64_t kb = 0; kb < kmax; kb += CIRCC_ATTN_KB) {
    const int64_t nk = kmax - kb < CIRCC_ATTN_KB ? kmax - kb : CIRCC_ATTN_KB;
    circc_attn_pack_kt(w.kt, K + kb * k_k, k_k, k_c, nk, C);
    for (int64_t j = 0; j < nk; j++)
      for (int64_t d = 0; d < dp; d++) w.vp[j * dp + d] = d < D ? V[(kb + j) * v_k + d * v_d] : 0.0f;
    for (int64_t g = 0; g < ng; g += CIRCC_ATTN_R) {
      float *s = w.s + g * CIRCC_ATTN_KB;
      circc_attn_qk(w.qp + g * cp, cp, C, w.kt, s);
      for (int64_t i = g; i < g + CIRCC_ATTN_R; i++) {
        float *restrict sr = w.s + i * CIRCC_ATTN_KB;
        int64_t lim = i < n ? kend[q0 + i] - kb : 0;
        lim = lim < 0 ? 0 : lim > nk ? nk : lim;
        if (lim == 0) { /* no keys of this block: p = 0, nothing changes */
          for (int64_t j = 0; j < CIRCC_ATTN_KB; j++) sr[j] = 0.0f;
          w.alpha[i] = 1.0f;
          continue;
        }
        const int64_t at = (q0 + i) * Tk + kb;
        if (F && b_all)
          for (int64_t j = 0; j < lim; j++) sr[j] = sr[j] * F[at + j] + B[at + j];
        else if (F)
          for (int64_t j = 0; j < lim; j++) sr[j] *= F[at + j];
        else if (b_all)
          for (int64_t j = 0; j < lim; j++) sr[j] += B[at + j];
        /* max and sum: per-lane partials, then a fixed halving tree */
        float part[CIRCC_ATTN_LANES];
        for (int64_t j = lim; j < CIRCC_ATTN_KB; j++) sr[j] = -INFINITY;
        for (int t = 0; t < CIRCC_ATTN_LANES; t++) part[t] = sr[t];
        for (int64_t j0 = CIRCC_ATTN_LANES; j0 < CIRCC_ATTN_KB; j0 += CIRCC_ATTN_LANES)
          for (int t = 0; t < CIRCC_ATTN_LANES; t++) part[t] = sr[j0 + t] > part[t] ? sr[j0 + t] : part[t];
        for (int h = CIRCC_ATTN_LANES / 2; h > 0; h /= 2)
          for (int t = 0; t < h; t++) part[t] = part[t + h] > part[t] ? part[t + h] : part[t];
        const float mx = part[0] > w.m[i] ? part[0] : w.m[i];
        for (int64_t j = 0; j < CIRCC_ATTN_KB; j++) sr[j] = j < lim ? fn_exp(sr[j] - mx) : 0.0f;
        /* the first block of a row: no old max, nothing to rescale; an
         * unchanged max: fn_exp(0) = 1 */
        const float alpha = w.m[i] == -INFINITY ? 0.0f : w.m[i] == mx ? 1.0f : fn_exp(w.m[i] - mx);
        float *restrict l = w.l + i * CIRCC_ATTN_LANES; /* the row sum, still per lane */
        for (int t = 0; t < CIRCC_ATTN_LANES; t++) l[t] *= alpha;
        for (int64_t j0 = 0; j0 < CIRCC_ATTN_KB; j0 += CIRCC_ATTN_LANES)
          for (int t = 0; t < CIRCC_ATTN_LANES; t++) l[t] += sr[j0 + t];
        w.alpha[i] = alpha;
        w.m[i] = mx;
      }
      for (int64_t i = g; i < g + CIRCC_ATTN_R; i++)
        if (w.alpha[i] != 1.0f)
          for (int64_t d = 0; d < dp; d++) w.o[i * dp + d] *= w.alpha[i];
      circc_attn_pv(s, nk, w.vp, dp, w.o + g * dp);
    }
  }
  for (int64_t i = 0; i < n; i++) {
    const int64_t q = q0 + i;
    if (skip[q] != -INFINITY && !(skip[q] - w.m[i] < -87.3f)) {
      circc_attn_full_row(q, Tk, C, D, Q, q_q, q_c, K, k_k, k_c, V, v_k, v_d, O, o_q, o_d, F, B, kend, w.row);
      continue;
    }
    float *restrict l = w.l + i * CIRCC_ATTN_LANES;
    for (int h = CIRCC_ATTN_LANES / 2; h > 0; h /= 2)
      for (int t = 0; t < h; t++) l[t] += l[t + h];
    const float inv = 1.0f / l[0];
    for (int64_t d = 0; d < D; d++) O[q * o_q + d * o_d] = w.o[i * dp + d] * inv;
  }
}
#endif
