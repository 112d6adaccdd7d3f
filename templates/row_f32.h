/* row_f32.h — kernels over the last axis of a tensor (rust_circuit_format.md
 * §4.9: softmax, log_softmax, min, max) for one row of `len` elements read
 * with stride `xs` and written with stride `ys`. Sums are in double, the max
 * is subtracted first; the order of operations is fixed, so results do not
 * depend on how rows are spread over threads. Needs elementwise_f32.h (fn_exp). */
#ifndef CIRCC_ROW_F32_H
#define CIRCC_ROW_F32_H
#include <math.h>
#include <stdint.h>

static inline __attribute__((unused)) float circc_row_max_of(const float *x, int64_t xs, int64_t len) {
  float m = -INFINITY;
  for (int64_t j = 0; j < len; j++) {
    const float v = x[j * xs];
    m = v > m ? v : m;
  }
  return m;
}

static inline __attribute__((unused)) void circc_softmax_row(const float *restrict x, int64_t xs, float *restrict y,
                                                             int64_t ys, int64_t len) {
  const float m = circc_row_max_of(x, xs, len);
  double sum = 0.0;
  for (int64_t j = 0; j < len; j++) sum += y[j * ys] = fn_exp(x[j * xs] - m);
  const float inv = (float)(1.0 / sum);
  for (int64_t j = 0; j < len; j++) y[j * ys] *= inv;
}

static inline __attribute__((unused)) void circc_log_softmax_row(const float *restrict x, int64_t xs,
                                                                 float *restrict y, int64_t ys, int64_t len) {
  const float m = circc_row_max_of(x, xs, len);
  double sum = 0.0;
  for (int64_t j = 0; j < len; j++) sum += fn_exp(x[j * xs] - m);
  const float lse = m + (float)log(sum);
  for (int64_t j = 0; j < len; j++) y[j * ys] = x[j * xs] - lse;
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
#endif
