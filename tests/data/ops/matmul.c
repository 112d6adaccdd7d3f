/* An --ops general function of two children with a list shape rule: the
 * product of an [n,k] and a [k,m] matrix, for test_ops.c. Written for circc's tests. */
#include <stdint.h>
#include "circc_op.h"

CIRCC_OP_SHAPE("matmul", "[in0[0], in1[-1]]")
void matmul(const float *const *in, const int64_t *const *shapes, int n_in, float *out) {
  (void)n_in; /* two children */
  const int64_t n = shapes[0][1], k = shapes[0][2], m = shapes[1][2];
  for (int64_t i = 0; i < n; i++)
    for (int64_t j = 0; j < m; j++) {
      float acc = 0;
      for (int64_t t = 0; t < k; t++) acc += in[0][i * k + t] * in[1][t * m + j];
      out[i * m + j] = acc;
    }
}
