/* row_f32.h — kernels over the last axis of a tensor (rust_circuit_format.md
 * §4.9: softmax, log_softmax, min, max; and the layernorm pattern of §7.2) for one row of `len` elements read
 * with stride `xs` and written with stride `ys`. Sums are in double, the max
 * is subtracted first; the order of operations is fixed, so results do not
 * depend on how rows are spread over threads. Needs elementwise_f32.h (fn_exp). */
#ifndef CIRCC_ROW_F32_H
#define CIRCC_ROW_F32_H
#include <math.h>
#include <stdint.h>
#if defined(__AVX__)
#include <immintrin.h>
#endif

/* Σ_j (x[j * xs] - shift)^p for p = 1 or 2, in double: eight interleaved
 * partial sums added in a fixed order, so the loop vectorises and the result
 * does not depend on anything but the row. */
static inline __attribute__((unused)) double circc_row_sum_f64(const float *restrict x, int64_t xs, int64_t len,
                                                               double shift, int p) {
  double s[8] = {0};
  int64_t j = 0;
  for (; j + 8 <= len; j += 8)
    for (int k = 0; k < 8; k++) {
      const double d = (double)x[(j + k) * xs] - shift;
      s[k] += p == 2 ? d * d : d;
    }
  for (int k = 0; k < 8 && j < len; j++, k++) { /* fewer than 8 left; k < 8 tells gcc so */
    const double d = (double)x[j * xs] - shift;
    s[k] += p == 2 ? d * d : d;
  }
  return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
}

/* The largest element, NaN ignored (-inf when there is none), in 16 lanes
 * (lane k takes elements k mod 16, each kept if it is larger, which is what
 * MAXPS(v, m) does); the maximum does not depend on the order. gcc leaves the
 * plain loop scalar (compare and cmov), hence the intrinsics for unit
 * stride. */
static inline __attribute__((unused)) float circc_row_max_of(const float *x, int64_t xs, int64_t len) {
  float m[16];
  for (int k = 0; k < 16; k++) m[k] = -INFINITY;
  int64_t j = 0;
#if defined(__AVX512F__)
  if (xs == 1) {
    __m512 v = _mm512_loadu_ps(m);
    for (; j + 16 <= len; j += 16) v = _mm512_max_ps(_mm512_loadu_ps(x + j), v);
    _mm512_storeu_ps(m, v);
  }
#elif defined(__AVX__)
  if (xs == 1) {
    __m256 lo = _mm256_loadu_ps(m), hi = lo;
    for (; j + 16 <= len; j += 16)
      lo = _mm256_max_ps(_mm256_loadu_ps(x + j), lo), hi = _mm256_max_ps(_mm256_loadu_ps(x + j + 8), hi);
    _mm256_storeu_ps(m, lo);
    _mm256_storeu_ps(m + 8, hi);
  }
#endif
  for (; j + 16 <= len; j += 16)
    for (int k = 0; k < 16; k++) {
      const float v = x[(j + k) * xs];
      m[k] = v > m[k] ? v : m[k];
    }
  for (int k = 0; k < 16 && j < len; j++, k++) m[k] = x[j * xs] > m[k] ? x[j * xs] : m[k];
  for (int h = 8; h > 0; h /= 2)
    for (int k = 0; k < h; k++) m[k] = m[k + h] > m[k] ? m[k + h] : m[k];
  return m[0];
}

static inline __attribute__((unused)) void circc_softmax_row(const float *restrict x, int64_t xs, float *restrict y,
                                                             int64_t ys, int64_t len) {
  const float m = circc_row_max_of(x, xs, len);
  /* fn_exp is exactly 0 below -87.3: a block of 16 whose every x - m is
   * below (a decode step's masked keys, most of its cache) is written 0
   * without its exps; the same bits (a NaN fails the test) */
  int64_t j0 = 0;
  for (; j0 + 16 <= len; j0 += 16) {
    int dead = 1;
    for (int k = 0; k < 16; k++) dead &= x[(j0 + k) * xs] - m < -87.3f;
    if (dead)
      for (int k = 0; k < 16; k++) y[(j0 + k) * ys] = 0.0f;
    else
      for (int k = 0; k < 16; k++) y[(j0 + k) * ys] = fn_exp(x[(j0 + k) * xs] - m);
  }
  for (int64_t j = j0; j < len; j++) y[j * ys] = fn_exp(x[j * xs] - m);
  const float inv = (float)(1.0 / circc_row_sum_f64(y, ys, len, 0.0, 1));
  for (int64_t j = 0; j < len; j++) y[j * ys] *= inv;
}

static inline __attribute__((unused)) void circc_log_softmax_row(const float *restrict x, int64_t xs,
                                                                 float *restrict y, int64_t ys, int64_t len) {
  const float m = circc_row_max_of(x, xs, len);
  for (int64_t j = 0; j < len; j++) y[j * ys] = fn_exp(x[j * xs] - m); /* y holds the exps for a moment */
  const float lse = m + (float)log(circc_row_sum_f64(y, ys, len, 0.0, 1));
  for (int64_t j = 0; j < len; j++) y[j * ys] = x[j * xs] - lse;
}

/* log_softmax(x)[k] without writing the row: the same max, the same exps
 * summed in double in the same lanes and order as circc_log_softmax_row
 * (chunks of a multiple of 8 on the stack), so the same bits. */
static inline __attribute__((unused)) float circc_log_softmax_pick_row(const float *restrict x, int64_t xs,
                                                                       int64_t len, int64_t k) {
  enum { CHUNK = 1024 };
  const float m = circc_row_max_of(x, xs, len);
  float ex[CHUNK];
  double s[8] = {0};
  for (int64_t j0 = 0; j0 < len; j0 += CHUNK) {
    const int64_t n = len - j0 < CHUNK ? len - j0 : CHUNK;
    for (int64_t j = 0; j < n; j++) ex[j] = fn_exp(x[(j0 + j) * xs] - m);
    int64_t j = 0;
    for (; j + 8 <= n; j += 8)
      for (int q = 0; q < 8; q++) s[q] += (double)ex[j + q];
    for (int q = 0; q < 8 && j < n; j++, q++) s[q] += (double)ex[j];
  }
  const double sum = ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
  return x[k * xs] - (m + (float)log(sum));
}

/* min / max propagate NaN like torch.min/max */
static inline __attribute__((unused)) float circc_min_row(const float *x, int64_t xs, int64_t len) {
  float r = x[0];
  for (int64_t j = 1; j < len; j++) r = fn_min(r, x[j * xs]);
  return r;
}

static inline __attribute__((unused)) float circc_max_row(const float *x, int64_t xs, int64_t len) {
  float r = x[0];
  for (int64_t j = 1; j < len; j++) r = fn_max(r, x[j * xs]);
  return r;
}

/* y = (x - mean) * rsqrt(var + eps) * w + b with the biased variance; w and b
 * (strides ws, bs) may be NULL (absent). Mean and variance are two passes in
 * double over the row (in cache), so large offsets do not cancel digits. */
static inline __attribute__((unused)) void circc_layernorm_row(const float *restrict x, int64_t xs, float *restrict y,
                                                               int64_t ys, int64_t len, double eps,
                                                               const float *restrict w, int64_t ws,
                                                               const float *restrict b, int64_t bs) {
  const double mean = circc_row_sum_f64(x, xs, len, 0.0, 1) / (double)len;
  const double var = circc_row_sum_f64(x, xs, len, mean, 2) / (double)len;
  const float rs = (float)(1.0 / sqrt(var + eps));
  for (int64_t j = 0; j < len; j++) {
    float v = (float)((double)x[j * xs] - mean) * rs;
    if (w) v *= w[j * ws];
    if (b) v += b[j * bs];
    y[j * ys] = v;
  }
}
#endif
