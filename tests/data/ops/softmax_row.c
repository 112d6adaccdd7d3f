/* An --ops row function: softmax over the last axis, for test_ops.c (it must
 * equal circc's built-in softmax). Written for circc's tests. */
#include <math.h>
#include <stdint.h>
#include "circc_op.h"

CIRCC_OP("my_softmax") void my_softmax(const float *x, float *y, int64_t n) {
  float max = -INFINITY;
  for (int64_t i = 0; i < n; i++) max = x[i] > max ? x[i] : max;
  double sum = 0;
  for (int64_t i = 0; i < n; i++) sum += (y[i] = expf(x[i] - max));
  for (int64_t i = 0; i < n; i++) y[i] = (float)(y[i] / sum);
}
