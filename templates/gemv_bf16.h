/* gemv_bf16.h — templates/gemm_f32.h's two decode kernels with B stored as
 * bf16 (uint16_t, the top half of an fp32): circc --precision bf16 and int8
 * keep a float32 input that only these kernels read (a decode program's past
 * keys and values) as bf16, so each run reads half its bytes. Include after
 * gemm_f32.h (it uses that header's vectors, blocks and reductions).
 *
 * bf16 -> fp32 is exact (a 16-bit shift), and each B element is converted in
 * registers right where the fp32 kernel loads it, in the same summation
 * order: the result is bit for bit the fp32 kernel's on the fp32 values of B
 * (that is, on B rounded to bf16). So:
 *  - circc_gemv_bf16b is circc_gemv_f32 (circc_gemv_dot's order, the column
 *    mask) with bf16 columns;
 *  - circc_gemm_bf16b_rows is circc_gemm_f32_rows for at most 4 rows with
 *    unit-stride B rows (the streaming path, which skips the B rows whose one
 *    coefficient is 0); in portable builds, the packed path with the panels
 *    converted to fp32, the same micro-kernel and so the same bits.
 * AVX-512 and AVX2 give the same bits, as gemm_f32.h's do. */
#ifndef CIRCC_GEMV_BF16_H
#define CIRCC_GEMV_BF16_H
#include <stdint.h>
#include <string.h>
#include "gemm_f32.h"

static inline float circc_b16f(uint16_t h) {
  uint32_t u = (uint32_t)h << 16;
  float x;
  memcpy(&x, &u, 4);
  return x;
}

#if CIRCC_GEMM_VL == 16
/* n (clamped to 0..16) bf16 values at p as fp32 lanes, the rest 0; only the
 * n values are read. */
static inline __m512 circc_b16_load(const uint16_t *p) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)p)), 16));
}
static inline __m512 circc_b16_loadn(const uint16_t *p, int n) {
  if (n >= 16) return circc_b16_load(p);
  uint16_t t[16] = {0};
  if (n > 0) memcpy(t, p, (size_t)n * 2);
  return circc_b16_load(t);
}
#elif CIRCC_GEMM_VL == 8
static inline __m256 circc_b16_load(const uint16_t *p) {
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p)), 16));
}
static inline __m256 circc_b16_loadn(const uint16_t *p, int n) {
  if (n >= 8) return circc_b16_load(p);
  uint16_t t[8] = {0};
  if (n > 0) memcpy(t, p, (size_t)n * 2);
  return circc_b16_load(t);
}
#endif

/* ------------------------------------------------------- matrix-vector */

/* circc_gemv_dot with b in bf16: the same lanes, chains and pairwise sums. */
#if CIRCC_GEMM_VL == 16
static inline float circc_gemv_dot_b16(const float *a, const uint16_t *b, int64_t K) {
  __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
  int64_t k = 0;
  for (; k + 32 <= K; k += 32) {
    s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + k), circc_b16_load(b + k), s0);
    s1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + k + 16), circc_b16_load(b + k + 16), s1);
  }
  if (k < K) {
    int r = (int)(K - k);
    s0 = _mm512_fmadd_ps(circc_gemm_vloadn(a + k, r), circc_b16_loadn(b + k, r), s0);
    s1 = _mm512_fmadd_ps(circc_gemm_vloadn(a + k + 16, r - 16), circc_b16_loadn(b + k + 16, r - 16), s1);
  }
  return circc_gemv_sum(s0, s1);
}

static inline void circc_gemv_dot4_b16(const float *a, const uint16_t *b, int64_t b_n, int64_t K, float *y,
                                       int64_t c_n) {
  __m512 s[8];
  for (int j = 0; j < 8; j++) s[j] = _mm512_setzero_ps();
  int64_t k = 0;
  for (; k + 32 <= K; k += 32) {
    const __m512 a0 = _mm512_loadu_ps(a + k), a1 = _mm512_loadu_ps(a + k + 16);
    for (int j = 0; j < 4; j++) {
      s[2 * j] = _mm512_fmadd_ps(a0, circc_b16_load(b + j * b_n + k), s[2 * j]);
      s[2 * j + 1] = _mm512_fmadd_ps(a1, circc_b16_load(b + j * b_n + k + 16), s[2 * j + 1]);
    }
  }
  if (k < K) {
    int r = (int)(K - k);
    const __m512 a0 = circc_gemm_vloadn(a + k, r), a1 = circc_gemm_vloadn(a + k + 16, r - 16);
    for (int j = 0; j < 4; j++) {
      s[2 * j] = _mm512_fmadd_ps(a0, circc_b16_loadn(b + j * b_n + k, r), s[2 * j]);
      s[2 * j + 1] = _mm512_fmadd_ps(a1, circc_b16_loadn(b + j * b_n + k + 16, r - 16), s[2 * j + 1]);
    }
  }
  for (int j = 0; j < 4; j++) y[j * c_n] = circc_gemv_sum(s[2 * j], s[2 * j + 1]);
}
#elif CIRCC_GEMM_VL == 8
static inline float circc_gemv_dot_b16(const float *a, const uint16_t *b, int64_t K) {
  __m256 s[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
  int64_t k = 0;
  for (; k + 32 <= K; k += 32)
    for (int g = 0; g < 4; g++) s[g] = _mm256_fmadd_ps(_mm256_loadu_ps(a + k + 8 * g), circc_b16_load(b + k + 8 * g), s[g]);
  if (k < K) {
    int r = (int)(K - k);
    for (int g = 0; g < 4; g++)
      s[g] = _mm256_fmadd_ps(circc_gemm_vloadn(a + k + 8 * g, r - 8 * g), circc_b16_loadn(b + k + 8 * g, r - 8 * g), s[g]);
  }
  __m256 h = _mm256_add_ps(_mm256_add_ps(s[0], s[2]), _mm256_add_ps(s[1], s[3]));
  __m128 q = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
  q = _mm_add_ps(q, _mm_movehl_ps(q, q));
  return _mm_cvtss_f32(_mm_add_ss(q, _mm_movehdup_ps(q)));
}
#else
static inline float circc_gemv_dot_b16(const float *a, const uint16_t *b, int64_t K) {
  float s[32] = {0};
  int64_t k = 0;
  for (; k + 32 <= K; k += 32)
    for (int j = 0; j < 32; j++) s[j] += a[k + j] * circc_b16f(b[k + j]);
  for (int j = 0; k + j < K; j++) s[j] += a[k + j] * circc_b16f(b[k + j]);
  for (int w = 16; w >= 1; w /= 2)
    for (int j = 0; j < w; j++) s[j] += s[j + w];
  return s[0];
}
#endif
#if CIRCC_GEMM_VL != 16
static inline void circc_gemv_dot4_b16(const float *a, const uint16_t *b, int64_t b_n, int64_t K, float *y,
                                       int64_t c_n) {
  for (int j = 0; j < 4; j++) y[j * c_n] = circc_gemv_dot_b16(a, b + j * b_n, K);
}
#endif

/* circc_gemv_f32 with B's columns in bf16 (column n at B + n*b_n, K
 * contiguous values): the same columns skipped by the mask, the same sums. */
CIRCC_GEMM_API void circc_gemv_bf16b(int64_t N, int64_t K, const float *a, const uint16_t *B, int64_t b_n, float *y,
                                     int64_t c_n, const float *mask, int64_t mask_n) {
  for (int64_t n0 = 0; n0 < N; n0 += 16) {
    const int64_t n1 = n0 + 16 < N ? n0 + 16 : N;
    int off = mask && n1 - n0 == 16;
    for (int j = 0; off && j < 16; j++) off = mask[(n0 + j) * mask_n] == 0.0f;
    for (int64_t n = n0; n < n1;) {
      int live4 = !off && n + 4 <= n1;
      for (int j = 0; mask && live4 && j < 4; j++) live4 = mask[(n + j) * mask_n] != 0.0f;
      if (live4) {
        circc_gemv_dot4_b16(a, B + n * b_n, b_n, K, y + n * c_n, c_n);
        n += 4;
      } else {
        y[n * c_n] = off || (mask && mask[n * mask_n] == 0.0f) ? 0.0f : circc_gemv_dot_b16(a, B + n * b_n, K);
        n++;
      }
    }
  }
}

/* ------------------------------------------------------- few rows, B rows */

#if CIRCC_GEMM_VL > 0
/* circc_gemm_stream_k with b in bf16. */
static inline void circc_gemm_stream_k_b16(int rows, int64_t m0, int64_t nn, const float *a, int64_t a_m,
                                           const uint16_t *b, float *acc) {
  int64_t nv = nn / CIRCC_GEMM_VL * CIRCC_GEMM_VL;
  int tail = (int)(nn - nv);
  for (int r = 0; r < rows; r++) {
    circc_gemm_v a0 = circc_gemm_vset1(a[(m0 + r) * a_m]);
    for (int64_t j = 0; j < nn; j += CIRCC_GEMM_VL) {
      circc_gemm_v v0 = j < nv ? circc_b16_load(b + j) : circc_b16_loadn(b + j, tail);
      float *s = acc + r * CIRCC_GEMM_NS + j;
      circc_gemm_vstore(s, circc_gemm_vfma(a0, v0, circc_gemm_vload(s)));
    }
  }
}

/* circc_gemm_stream (rows <= SR, a literal at each call) with B in bf16:
 * the same k order, skips and block sums. */
static inline void circc_gemm_stream_b16(int rows, int64_t m0, int64_t N, int64_t K, const float *A, int64_t a_m,
                                         int64_t a_k, const uint16_t *B, int64_t b_k, float *C, int64_t c_m,
                                         int64_t c_n, float *acc) {
  for (int64_t n0 = 0; n0 < N; n0 += CIRCC_GEMM_NS) {
    int64_t nn = circc_gemm_min(CIRCC_GEMM_NS, N - n0);
    int64_t nv = nn / CIRCC_GEMM_VL * CIRCC_GEMM_VL;
    int tail = (int)(nn - nv);
    for (int64_t pc = 0; pc < K; pc += CIRCC_GEMM_KC) {
      int64_t kb = circc_gemm_min(CIRCC_GEMM_KC, K - pc);
      for (int r = 0; r < rows; r++)
        for (int64_t j = 0; j < nn; j += CIRCC_GEMM_VL) circc_gemm_vstore(acc + r * CIRCC_GEMM_NS + j, circc_gemm_vzero());
      for (int64_t k = 0; k < kb;) {
        if (rows == 1 && A[m0 * a_m + (pc + k) * a_k] == 0.0f) {
          k++;
          continue;
        }
        if (k + 4 > kb || (rows == 1 && circc_gemm_has_zero4(A + m0 * a_m + (pc + k) * a_k, a_k))) {
          if (rows > 1 || A[m0 * a_m + (pc + k) * a_k] != 0.0f)
            circc_gemm_stream_k_b16(rows, m0, nn, A + (pc + k) * a_k, a_m, B + (pc + k) * b_k + n0, acc);
          k++;
          continue;
        }
        const uint16_t *b0 = B + (pc + k) * b_k + n0, *b1 = b0 + b_k, *b2 = b1 + b_k, *b3 = b2 + b_k;
        circc_gemm_v a[CIRCC_GEMM_SR][4];
        for (int r = 0; r < CIRCC_GEMM_SR; r++) {
          if (r >= rows) break;
          for (int q = 0; q < 4; q++) a[r][q] = circc_gemm_vset1(A[(m0 + r) * a_m + (pc + k + q) * a_k]);
        }
        for (int64_t j = 0; j < nn; j += CIRCC_GEMM_VL) {
          circc_gemm_v v0, v1, v2, v3;
          if (j < nv) {
            v0 = circc_b16_load(b0 + j), v1 = circc_b16_load(b1 + j);
            v2 = circc_b16_load(b2 + j), v3 = circc_b16_load(b3 + j);
          } else {
            v0 = circc_b16_loadn(b0 + j, tail), v1 = circc_b16_loadn(b1 + j, tail);
            v2 = circc_b16_loadn(b2 + j, tail), v3 = circc_b16_loadn(b3 + j, tail);
          }
          for (int r = 0; r < CIRCC_GEMM_SR; r++) {
            if (r >= rows) break;
            float *s = acc + r * CIRCC_GEMM_NS + j;
            circc_gemm_v x = circc_gemm_vload(s);
            x = circc_gemm_vfma(a[r][0], v0, x);
            x = circc_gemm_vfma(a[r][1], v1, x);
            x = circc_gemm_vfma(a[r][2], v2, x);
            x = circc_gemm_vfma(a[r][3], v3, x);
            circc_gemm_vstore(s, x);
          }
        }
        k += 4;
      }
      int first = pc == 0;
      for (int r = 0; r < rows; r++) {
        float *c = C + (m0 + r) * c_m + n0 * c_n;
        const float *s = acc + r * CIRCC_GEMM_NS;
        if (c_n == 1) {
          for (int64_t j = 0; j < nv; j += CIRCC_GEMM_VL)
            circc_gemm_vstoreu(c + j, first ? circc_gemm_vload(s + j)
                                            : circc_gemm_vadd(circc_gemm_vloadu(c + j), circc_gemm_vload(s + j)));
          if (tail)
            circc_gemm_vstoren(c + nv, first ? circc_gemm_vload(s + nv)
                                             : circc_gemm_vadd(circc_gemm_vloadn(c + nv, tail), circc_gemm_vload(s + nv)),
                               tail);
        } else {
          for (int64_t j = 0; j < nn; j++) c[j * c_n] = first ? s[j] : c[j * c_n] + s[j];
        }
      }
    }
  }
}
#else
/* Portable: circc_gemm_packed's loop with each B panel converted to fp32 as
 * it is packed, through the same micro-kernel (so the same contraction of
 * a*b+c, the same bits). */
static inline void circc_gemm_packed_b16(int64_t m0, int64_t m1, int64_t N, int64_t K, const float *A, int64_t a_m,
                                         int64_t a_k, const uint16_t *B, int64_t b_k, float *C, int64_t c_m,
                                         int64_t c_n, float *scratch) {
  int64_t kcmax = (circc_gemm_min(K, CIRCC_GEMM_KC) + 15) / 16 * 16;
  float *Ap = scratch, *Bp = scratch + CIRCC_GEMM_MCP * kcmax;
  for (int64_t pc = 0; pc < K; pc += CIRCC_GEMM_KC) {
    int64_t kb = circc_gemm_min(CIRCC_GEMM_KC, K - pc);
    int first = pc == 0;
    circc_gemm_pack(Ap, CIRCC_GEMM_MR, A + m0 * a_m + pc * a_k, a_m, a_k, (int)(m1 - m0), kb);
    for (int64_t jc = 0; jc < N; jc += CIRCC_GEMM_NR) {
      int cols = (int)circc_gemm_min(CIRCC_GEMM_NR, N - jc);
      for (int64_t k = 0; k < kb; k++)
        for (int j = 0; j < CIRCC_GEMM_NR; j++)
          Bp[k * CIRCC_GEMM_NR + j] = j < cols ? circc_b16f(B[(pc + k) * b_k + jc + j]) : 0.0f;
      circc_gemm_kernel((int)(m1 - m0), kb, Ap, Bp, C + jc * c_n + m0 * c_m, c_m, c_n, cols, first);
    }
  }
}
#endif

/* circc_gemm_f32_rows for rows [m0,m1) (at most CIRCC_GEMM_SR = 4 of them),
 * with B's rows (row k at B + k*b_k, N unit-stride bf16 values) in bf16: C
 * [m*c_m + n*c_n] = sum_k A[m*a_m + k*a_k] * B[k*b_k + n], overwritten.
 * scratch: circc_gemm_scratch_floats(N, K) floats, 64-byte aligned, private
 * to the calling thread. */
CIRCC_GEMM_API void circc_gemm_bf16b_rows(int64_t m0, int64_t m1, int64_t N, int64_t K, const float *A, int64_t a_m,
                                          int64_t a_k, const uint16_t *B, int64_t b_k, float *C, int64_t c_m,
                                          int64_t c_n, float *scratch) {
  if (m1 <= m0 || N <= 0) return;
  if (K <= 0) {
    for (int64_t m = m0; m < m1; m++)
      for (int64_t n = 0; n < N; n++) C[m * c_m + n * c_n] = 0.0f;
    return;
  }
#if CIRCC_GEMM_VL > 0
  switch (m1 - m0) {
  case 1: circc_gemm_stream_b16(1, m0, N, K, A, a_m, a_k, B, b_k, C, c_m, c_n, scratch); return;
  case 2: circc_gemm_stream_b16(2, m0, N, K, A, a_m, a_k, B, b_k, C, c_m, c_n, scratch); return;
  case 3: circc_gemm_stream_b16(3, m0, N, K, A, a_m, a_k, B, b_k, C, c_m, c_n, scratch); return;
  default: circc_gemm_stream_b16(4, m0, N, K, A, a_m, a_k, B, b_k, C, c_m, c_n, scratch); return;
  }
#else
  circc_gemm_packed_b16(m0, m1, N, K, A, a_m, a_k, B, b_k, C, c_m, c_n, scratch);
#endif
}

#endif /* CIRCC_GEMV_BF16_H */
