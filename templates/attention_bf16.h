/* attention_bf16.h — the fused attention of attention_f32.h for circc
 * --precision bf16: the same function of Q, K, V, F, B (see there), with the
 * two matrix products on bf16 operands, as PyTorch's bf16 autocast does:
 *  - s = q·k from Q and K rounded to bf16 (circc_bf16_round: nearest even),
 *    products exact in fp32, accumulated in fp32;
 *  - the scale, mask and bias (F, B), the row max, fn_exp, the rescaling and
 *    the row sums stay fp32, as in attention_f32.h;
 *  - O += p·V from p = fn_exp(s - max) rounded to bf16 (the row sum adds the
 *    rounded p, so O is a weighted mean of the rounded V with weights that
 *    sum to 1 up to fp32) and V rounded to bf16, accumulated in fp32.
 * Structure and masking rules are those of attention_f32.h: 64 query rows per
 * call, blocks of CIRCC_ATTN_KB = 64 keys from k = 0, the kept keys kend[q]
 * and the skip test, and the two-pass full-row fallback (here on the rounded
 * operands too).
 *
 * The products run on gemm_bf16.h's blocks (32 rows x 32 columns, fp32
 * accumulation from 0 over the 64 keys of a block or the C of a row, padded
 * with zeros): AMX tiles when the caller passes amx = 1 (only if
 * circc_gemm_bf16_amx() granted them), else VDPBF16PS where compiled in, else
 * plain C — the same paths, macros and permission logic as gemm_bf16.h. Each
 * block's product is added to the row's fp32 output as o = o·alpha + p·V.
 * Determinism: a row's arithmetic depends only on its own data, the fixed key
 * blocks and the path, never on q0/q1 or threads; the caller picks the path
 * once per step (emit.c: AMX for steps of more than 4 query rows).
 * Each thread needs its own scratch of circc_attn_bf16_scratch_floats(Tk, C, D)
 * floats, 64-byte aligned. Needs attention_f32.h (kend/skip rule, fn_exp) and
 * gemm_bf16.h. */
#ifndef CIRCC_ATTENTION_BF16_H
#define CIRCC_ATTENTION_BF16_H
#include "attention_f32.h"
#include "gemm_bf16.h"

/* Pieces of the scratch (all 64-byte multiples): bf16 Q rows as A tiles
 * (circc_bf16_pack_a), the key block's K and V as packed B (circc_bf16_b_index:
 * K with n = key, k = c; V with n = d, k = key), p as A tiles (64 rows x 64
 * keys); fp32 scores and output in 32-column slabs ([slab][row][32], so a
 * 32x32 block of a product is contiguous), a 32x32 product block, the row
 * state and the fallback's row. */
typedef struct circc_attn_bf16_scratch {
  uint16_t *qa, *kt, *kb, *vb, *pa;
  float *s, *blk, *o, *m, *l, *alpha, *row;
} circc_attn_bf16_scratch;

static inline circc_attn_bf16_scratch circc_attn_bf16_split(float *w, int64_t C, int64_t D) {
  const int64_t cp = circc_bf16_kp(C), dp = circc_bf16_np(D);
  circc_attn_bf16_scratch s;
  uint16_t *h = (uint16_t *)w;
  s.qa = h, h += CIRCC_ATTN_QB * cp;
  s.kt = h, h += CIRCC_ATTN_KB * cp;
  s.kb = h, h += CIRCC_ATTN_KB * cp;
  s.vb = h, h += dp * CIRCC_ATTN_KB;
  s.pa = h, h += CIRCC_ATTN_QB * CIRCC_ATTN_KB;
  w = (float *)h;
  s.s = w, w += CIRCC_ATTN_QB * CIRCC_ATTN_KB;
  s.blk = w, w += 32 * 32;
  s.o = w, w += CIRCC_ATTN_QB * dp;
  s.m = w, w += CIRCC_ATTN_QB;
  s.l = w, w += CIRCC_ATTN_QB * CIRCC_ATTN_LANES;
  s.alpha = w, w += CIRCC_ATTN_QB;
  s.row = w;
  return s;
}

CIRCC_ATTN_API int64_t circc_attn_bf16_scratch_floats(int64_t Tk, int64_t C, int64_t D) {
  const int64_t cp = circc_bf16_kp(C), dp = circc_bf16_np(D);
  return (CIRCC_ATTN_QB * cp + 2 * CIRCC_ATTN_KB * cp + dp * CIRCC_ATTN_KB + CIRCC_ATTN_QB * CIRCC_ATTN_KB) / 2 +
         CIRCC_ATTN_QB * CIRCC_ATTN_KB + 32 * 32 + CIRCC_ATTN_QB * dp + (2 + CIRCC_ATTN_LANES) * CIRCC_ATTN_QB +
         circc_attn_round(Tk, 16);
}

/* circc_bf16_round of 16 floats (their bits u), in the low halves of 32-bit lanes. */
#if CIRCC_BF16_HAS_AVX512
static inline __m512i circc_attn_bf16_round16(__m512i u) {
  const __mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(u, _mm512_set1_epi32(0x7fffffff)),
                                                 _mm512_set1_epi32(0x7f800000));
  const __m512i odd = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
  const __m512i r = _mm512_srli_epi32(_mm512_add_epi32(_mm512_add_epi32(u, _mm512_set1_epi32(0x7fff)), odd), 16);
  return _mm512_mask_blend_epi32(nan, r, _mm512_or_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(0x40)));
}
#endif

/* 32 weights p rounded to bf16 (circc_bf16_round, in a form compilers
 * vectorise): the bf16 values into pr, their fp32 values back into p. */
static inline void circc_attn_bf16_round_p(float *restrict p, uint16_t *restrict pr) {
  uint32_t u[32];
  memcpy(u, p, sizeof u);
  for (int j = 0; j < 32; j++) {
    const uint32_t r = (u[j] & 0x7fffffffu) > 0x7f800000u ? (u[j] >> 16) | 0x40u : (u[j] + 0x7fffu + ((u[j] >> 16) & 1u)) >> 16;
    pr[j] = (uint16_t)r;
    u[j] = r << 16;
  }
  memcpy(p, u, sizeof u);
}

/* dst[i] = circc_bf16_round(src[i * stride]) for i < n, 0 for n <= i < len. */
static inline void circc_attn_bf16_round_row(const float *src, int64_t stride, int64_t n, int64_t len,
                                             uint16_t *restrict dst) {
  int64_t i = 0;
#if CIRCC_BF16_HAS_AVX512
  if (stride == 1)
    for (; i + 16 <= n; i += 16) _mm256_storeu_si256((__m256i *)(dst + i), _mm512_cvtepi32_epi16(circc_attn_bf16_round16(_mm512_loadu_si512(src + i))));
#endif
  for (; i < n; i++) dst[i] = circc_bf16_round(src[i * stride]);
  for (; i < len; i++) dst[i] = 0;
}

/* A key block as the B operand of s = q·k (circc_bf16_b_index with n = key,
 * k = c; cp = circc_bf16_kp(C)): keys j < nk of K (row j at K + j*k_k), the
 * rest 0. Rounded row by row into tmp (KB x cp), then each key's c pairs
 * moved into its panel column. */
static inline void circc_attn_bf16_pack_k(const float *K, int64_t k_k, int64_t k_c, int64_t nk, int64_t C,
                                          uint16_t *restrict tmp, uint16_t *restrict kb) {
  const int64_t cp = circc_bf16_kp(C);
  for (int64_t j = 0; j < nk; j++) circc_attn_bf16_round_row(K + j * k_k, k_c, C, cp, tmp + j * cp);
  if (nk < CIRCC_ATTN_KB) memset(tmp + nk * cp, 0, sizeof(uint16_t) * (size_t)((CIRCC_ATTN_KB - nk) * cp));
  for (int64_t j = 0; j < CIRCC_ATTN_KB; j++) {
    uint16_t *d = kb + (j / 16) * cp * 16 + (j % 16) * 2;
    for (int64_t p = 0; p < cp / 2; p++) memcpy(d + p * 32, tmp + j * cp + 2 * p, 4);
  }
}

/* A key block of V as the B operand of p·V (circc_bf16_b_index with n = d,
 * k = key, Kp = KB): keys j < nk (row j at V + j*v_k), d < D, the rest 0. A
 * panel row holds the key pair (2p, 2p+1) interleaved over 16 columns. */
static inline void circc_attn_bf16_pack_v(const float *V, int64_t v_k, int64_t v_d, int64_t nk, int64_t D,
                                          uint16_t *restrict vb) {
  const int64_t dp = circc_bf16_np(D);
  for (int64_t p = 0; p < CIRCC_ATTN_KB / 2; p++) {
    const float *a = 2 * p < nk ? V + 2 * p * v_k : NULL, *b = 2 * p + 1 < nk ? V + (2 * p + 1) * v_k : NULL;
    for (int64_t d0 = 0; d0 < dp; d0 += 16) {
      uint16_t *dst = vb + ((d0 / 16) * (CIRCC_ATTN_KB / 2) + p) * 32;
#if CIRCC_BF16_HAS_AVX512
      if (a && b && v_d == 1 && d0 + 16 <= D) {
        const __m512i lo = circc_attn_bf16_round16(_mm512_loadu_si512(a + d0)),
                      hi = circc_attn_bf16_round16(_mm512_loadu_si512(b + d0));
        _mm512_storeu_si512(dst, _mm512_or_si512(lo, _mm512_slli_epi32(hi, 16)));
        continue;
      }
#endif
      for (int64_t t = 0; t < 16; t++) {
        const int64_t d = d0 + t;
        dst[2 * t] = a && d < D ? circc_bf16_round(a[d * v_d]) : 0;
        dst[2 * t + 1] = b && d < D ? circc_bf16_round(b[d * v_d]) : 0;
      }
    }
  }
}

/* One row's step of the online softmax over a key block: the scores of keys
 * j < lim (j < 32 at s0[j], the rest at s1[j - 32]) times F[j] plus B[j]
 * (F NULL: 1; B only with b_all), the new row max *m, p = fn_exp(s - max)
 * rounded to bf16 into pr (key j at pr[(j / 32) * 512 + j % 32], 0 past lim),
 * the 16 lane sums l rescaled and the rounded p added (key j to lane j % 16,
 * j in increasing order); returns the rescale factor of the row's old sums
 * and output. The AVX-512 version does the same operations in the same order
 * (fn_exp's exactly, without contraction) on 16-key vectors. */
#if CIRCC_BF16_HAS_AVX512
static inline __m512 circc_attn_bf16_exp16(__m512 x) { /* fn_exp, 16 lanes */
  const __m512 c0 = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(x, x, _CMP_ORD_Q), _mm512_setzero_ps(), x);
  const __m512 c = _mm512_max_ps(_mm512_set1_ps(-87.3f), _mm512_min_ps(_mm512_set1_ps(88.72f), c0));
  const __m512 big = _mm512_set1_ps(12582912.0f);
  const __m512 n = _mm512_sub_ps(_mm512_add_ps(_mm512_mul_ps(c, _mm512_set1_ps(1.44269504f)), big), big);
  const __m512 r = _mm512_sub_ps(_mm512_sub_ps(c, _mm512_mul_ps(n, _mm512_set1_ps(0.693145752f))),
                                 _mm512_mul_ps(n, _mm512_set1_ps(1.42860677e-6f)));
  __m512 p = _mm512_add_ps(_mm512_set1_ps(0.00833333333f), _mm512_mul_ps(r, _mm512_set1_ps(0.00138888889f)));
  p = _mm512_add_ps(_mm512_set1_ps(0.0416666667f), _mm512_mul_ps(r, p));
  p = _mm512_add_ps(_mm512_set1_ps(0.166666667f), _mm512_mul_ps(r, p));
  p = _mm512_add_ps(_mm512_set1_ps(0.5f), _mm512_mul_ps(r, p));
  p = _mm512_add_ps(_mm512_set1_ps(1.0f), _mm512_mul_ps(r, p));
  p = _mm512_add_ps(_mm512_set1_ps(1.0f), _mm512_mul_ps(r, p));
  const __m512i ni = _mm512_cvttps_epi32(n), h = _mm512_srai_epi32(ni, 1), e = _mm512_set1_epi32(127);
  const __m512 s1 = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(h, e), 23));
  const __m512 s2 = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(_mm512_sub_epi32(ni, h), e), 23));
  __m512 z = _mm512_mul_ps(_mm512_mul_ps(p, s1), s2);
  z = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(x, _mm512_set1_ps(88.72f), _CMP_GT_OQ), z, _mm512_set1_ps(INFINITY));
  z = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(x, _mm512_set1_ps(-87.3f), _CMP_LT_OQ), z, _mm512_setzero_ps());
  return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q), z, x);
}

static inline float circc_attn_bf16_softmax_row(const float *s0, const float *s1, const float *F, const float *B,
                                                int b_all, int64_t lim, float *m, float *l, uint16_t *pr) {
  __m512 x[4];
  __mmask16 k[4];
  for (int q = 0; q < 4; q++) {
    const int64_t left = lim - 16 * q;
    k[q] = left >= 16 ? (__mmask16)0xffff : left <= 0 ? (__mmask16)0 : (__mmask16)((1u << left) - 1);
    x[q] = _mm512_loadu_ps(q < 2 ? s0 + 16 * q : s1 + 16 * (q - 2));
    if (F) x[q] = _mm512_mul_ps(x[q], _mm512_maskz_loadu_ps(k[q], F + 16 * q));
    if (b_all) x[q] = _mm512_add_ps(x[q], _mm512_maskz_loadu_ps(k[q], B + 16 * q));
    x[q] = _mm512_mask_blend_ps(k[q], _mm512_set1_ps(-INFINITY), x[q]);
  }
  __m512 part = x[0];
  for (int q = 1; q < 4; q++) part = _mm512_max_ps(x[q], part); /* x > part ? x : part */
  __m256 p8 = _mm256_max_ps(_mm512_extractf32x8_ps(part, 1), _mm512_castps512_ps256(part));
  __m128 p4 = _mm_max_ps(_mm256_extractf128_ps(p8, 1), _mm256_castps256_ps128(p8));
  p4 = _mm_max_ps(_mm_movehl_ps(p4, p4), p4);
  p4 = _mm_max_ss(_mm_shuffle_ps(p4, p4, 1), p4);
  const float pm = _mm_cvtss_f32(p4), mx = pm > *m ? pm : *m;
  const float alpha = *m == -INFINITY ? 0.0f : *m == mx ? 1.0f : fn_exp(*m - mx);
  __m512 lv = _mm512_mul_ps(_mm512_loadu_ps(l), _mm512_set1_ps(alpha));
  for (int q = 0; q < 4; q++) {
    const __m512 e = _mm512_maskz_mov_ps(k[q], circc_attn_bf16_exp16(_mm512_sub_ps(x[q], _mm512_set1_ps(mx))));
    const __m512i r = circc_attn_bf16_round16(_mm512_castps_si512(e));
    _mm256_storeu_si256((__m256i *)(pr + (q / 2) * 512 + (q % 2) * 16), _mm512_cvtepi32_epi16(r));
    lv = _mm512_add_ps(lv, _mm512_castsi512_ps(_mm512_slli_epi32(r, 16)));
  }
  _mm512_storeu_ps(l, lv);
  *m = mx;
  return alpha;
}
#else
static inline float circc_attn_bf16_softmax_row(const float *s0, const float *s1, const float *F, const float *B,
                                                int b_all, int64_t lim, float *m, float *l, uint16_t *pr) {
  enum { KB = CIRCC_ATTN_KB, LANES = CIRCC_ATTN_LANES };
  float sr[KB];
  for (int j = 0; j < 32; j++) sr[j] = s0[j], sr[32 + j] = s1[j];
  /* whole-row loops (masked loads past lim): partial scalar stores before
   * the vector loads below would stall store forwarding */
  if (F && b_all)
    for (int64_t j = 0; j < KB; j++) sr[j] = j < lim ? sr[j] * F[j] + B[j] : -INFINITY;
  else if (F)
    for (int64_t j = 0; j < KB; j++) sr[j] = j < lim ? sr[j] * F[j] : -INFINITY;
  else if (b_all)
    for (int64_t j = 0; j < KB; j++) sr[j] = j < lim ? sr[j] + B[j] : -INFINITY;
  else
    for (int64_t j = 0; j < KB; j++) sr[j] = j < lim ? sr[j] : -INFINITY;
  /* max and sum: per-lane partials, then a fixed halving tree (as attention_f32.h) */
  float part[LANES];
  for (int t = 0; t < LANES; t++) part[t] = sr[t];
  for (int64_t j0 = LANES; j0 < KB; j0 += LANES)
    for (int t = 0; t < LANES; t++) part[t] = sr[j0 + t] > part[t] ? sr[j0 + t] : part[t];
  for (int hh = LANES / 2; hh > 0; hh /= 2)
    for (int t = 0; t < hh; t++) part[t] = part[t + hh] > part[t] ? part[t + hh] : part[t];
  const float mx = part[0] > *m ? part[0] : *m;
  for (int64_t j = 0; j < KB; j++) sr[j] = j < lim ? fn_exp(sr[j] - mx) : 0.0f;
  circc_attn_bf16_round_p(sr, pr);
  circc_attn_bf16_round_p(sr + 32, pr + 512);
  const float alpha = *m == -INFINITY ? 0.0f : *m == mx ? 1.0f : fn_exp(*m - mx);
  for (int t = 0; t < LANES; t++) l[t] *= alpha;
  for (int64_t j0 = 0; j0 < KB; j0 += LANES)
    for (int t = 0; t < LANES; t++) l[t] += sr[j0 + t];
  *m = mx;
  return alpha;
}
#endif

/* One 32x32 product block into out (ld 32): rows of the A tile pair At, the
 * B panels B0, B1, KT k tiles; `rows` of them wanted (the vector paths skip
 * the rest). */
static inline void circc_attn_bf16_block(int amx, int rows, const uint16_t *At, int64_t KT, const uint16_t *B0,
                                         const uint16_t *B1, float *out) {
#if CIRCC_BF16_HAS_AMX
  if (amx) {
    circc_bf16_amx_block(At, KT, B0, B1, out);
    return;
  }
#else
  (void)amx;
#endif
  circc_bf16_vec_block(rows, At, KT, B0, B1, out);
}

/* One row over all Tk keys, two passes (attention_f32.h's full row on the
 * rounded operands): s from bf16 q and k (fp32 sum in increasing c), max,
 * p = bf16(fn_exp(s - max)), the double sum of p, then Σ p·bf16(v) in fp32,
 * in increasing k, divided by the sum. */
static inline void circc_attn_bf16_full_row(int64_t q, int64_t Tk, int64_t C, int64_t D, const float *Q,
                                            int64_t q_q, int64_t q_c, const float *K, int64_t k_k, int64_t k_c,
                                            const float *V, int64_t v_k, int64_t v_d, float *O, int64_t o_q,
                                            int64_t o_d, const float *F, const float *B, const int64_t *kend,
                                            float *restrict row) {
  float mx = -INFINITY;
  for (int64_t k = 0; k < Tk; k++) {
    float dot = 0.0f;
    for (int64_t c = 0; c < C; c++)
      dot += circc_bf16_float(circc_bf16_round(Q[q * q_q + c * q_c])) *
             circc_bf16_float(circc_bf16_round(K[k * k_k + c * k_c]));
    row[k] = dot * (F ? F[q * Tk + k] : k < kend[q] ? 1.0f : 0.0f) + (B ? B[q * Tk + k] : 0.0f);
    mx = row[k] > mx ? row[k] : mx;
  }
  double sum = 0.0;
  for (int64_t k = 0; k < Tk; k++) sum += row[k] = circc_bf16_float(circc_bf16_round(fn_exp(row[k] - mx)));
  const float inv = (float)(1.0 / sum);
  for (int64_t d = 0; d < D; d++) {
    float acc = 0.0f;
    for (int64_t k = 0; k < Tk; k++) acc += row[k] * circc_bf16_float(circc_bf16_round(V[k * v_k + d * v_d]));
    O[q * o_q + d * o_d] = acc * inv;
  }
}

/* Rows q0..q1 (q1 - q0 <= CIRCC_ATTN_QB) of one batch element; Q, K, V, O
 * point at that element, strides in elements; the other arguments as in
 * circc_attn_f32_rows. amx: 1 for the AMX path (only where
 * circc_gemm_bf16_amx() says so), 0 for the vector path. */
CIRCC_ATTN_API void circc_attn_bf16_rows(int amx, int64_t q0, int64_t q1, int64_t Tk, int64_t C, int64_t D,
                                         const float *Q, int64_t q_q, int64_t q_c, const float *K, int64_t k_k,
                                         int64_t k_c, const float *V, int64_t v_k, int64_t v_d, float *O,
                                         int64_t o_q, int64_t o_d, const float *F, const float *B, int b_all,
                                         const int64_t *kend, const float *skip, float *scratch) {
  enum { KB = CIRCC_ATTN_KB, QB = CIRCC_ATTN_QB, LANES = CIRCC_ATTN_LANES };
  const int64_t n = q1 - q0, cp = circc_bf16_kp(C), ct = cp / 32, dp = circc_bf16_np(D);
  const int64_t rows32 = (n + 31) / 32 * 32;
  circc_attn_bf16_scratch w = circc_attn_bf16_split(scratch, C, D);
  unsigned char live[QB]; /* the row has keys in this block */
  int64_t kmax = 0;
  for (int64_t i = 0; i < n; i++) kmax = kend[q0 + i] > kmax ? kend[q0 + i] : kmax;
  circc_bf16_pack_a(Q, q_q, q_c, q0, q1, C, w.qa);
  memset(w.pa, 0, sizeof(uint16_t) * QB * KB); /* padding rows stay 0 */
  memset(w.o, 0, sizeof(float) * (size_t)(QB * dp));
  memset(w.s, 0, sizeof(float) * QB * KB); /* rows read whole slabs (keys past nk: never used) */
  for (int64_t i = 0; i < n; i++) {
    w.m[i] = -INFINITY;
    for (int t = 0; t < LANES; t++) w.l[i * LANES + t] = 0.0f;
  }
#if CIRCC_BF16_HAS_AMX
  if (amx) circc_bf16_amx_begin();
#endif
  for (int64_t kb = 0; kb < kmax; kb += KB) {
    const int64_t nk = kmax - kb < KB ? kmax - kb : KB;
    circc_attn_bf16_pack_k(K + kb * k_k, k_k, k_c, nk, C, w.kt, w.kb);
    circc_attn_bf16_pack_v(V + kb * v_k, v_k, v_d, nk, D, w.vb);
    /* scores of the rows x the block's keys, in two 32-key slabs */
    for (int64_t t = 0; t < rows32; t += 32) {
      const int r = (int)(n - t < 32 ? n - t : 32);
      for (int64_t h = 0; h * 32 < nk; h++) {
        const uint16_t *B0 = w.kb + 2 * h * cp * 16;
        circc_attn_bf16_block(amx, r, w.qa + (t / 16) * ct * 512, ct, B0, B0 + cp * 16, w.s + h * QB * 32 + t * 32);
      }
    }
    for (int64_t i = 0; i < n; i++) {
      int64_t lim = kend[q0 + i] - kb;
      lim = lim < 0 ? 0 : lim > nk ? nk : lim;
      uint16_t *pr = w.pa + ((i / 16) * 2 * 16 + i % 16) * 32; /* key j at pr[(j / 32) * 512 + j % 32] */
      if (lim == 0) { /* no keys of this block: the row does not change */
        live[i] = 0;
        continue;
      }
      const int64_t at = (q0 + i) * Tk + kb;
      w.alpha[i] = circc_attn_bf16_softmax_row(w.s + i * 32, w.s + QB * 32 + i * 32, F ? F + at : NULL,
                                               B ? B + at : NULL, b_all, lim, &w.m[i], w.l + i * LANES, pr);
      live[i] = 1;
    }
    /* o = o·alpha + p·V, 32 rows x 32 columns at a time (rows without keys here: unchanged) */
    for (int64_t t = 0; t < rows32; t += 32) {
      const int r = (int)(n - t < 32 ? n - t : 32);
      for (int64_t dd = 0; dd < dp; dd += 32) {
        const uint16_t *B0 = w.vb + (dd / 16) * KB * 16;
        circc_attn_bf16_block(amx, r, w.pa + (t / 16) * 2 * 512, 2, B0, B0 + KB * 16, w.blk);
        float *o = w.o + dd * QB + t * 32;
        for (int i = 0; i < r; i++) {
          if (!live[t + i]) continue;
          const float a = w.alpha[t + i];
          for (int j = 0; j < 32; j++) o[i * 32 + j] = o[i * 32 + j] * a + w.blk[i * 32 + j];
        }
      }
    }
  }
#if CIRCC_BF16_HAS_AMX
  if (amx) _tile_release();
#endif
  for (int64_t i = 0; i < n; i++) {
    const int64_t q = q0 + i;
    if (skip[q] != -INFINITY && !(skip[q] - w.m[i] < -87.3f)) {
      circc_attn_bf16_full_row(q, Tk, C, D, Q, q_q, q_c, K, k_k, k_c, V, v_k, v_d, O, o_q, o_d, F, B, kend, w.row);
      continue;
    }
    float *restrict l = w.l + i * LANES;
    for (int hh = LANES / 2; hh > 0; hh /= 2)
      for (int t = 0; t < hh; t++) l[t] += l[t + hh];
    const float inv = 1.0f / l[0];
    for (int64_t dd = 0; dd < D; dd += 32) {
      const float *o = w.o + dd * QB + i * 32;
      const int64_t nd = D - dd < 32 ? D - dd : 32;
      for (int64_t j = 0; j < nd; j++) O[q * o_q + (dd + j) * o_d] = o[j] * inv;
    }
  }
}
#endif
