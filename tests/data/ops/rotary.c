/* An --ops general function: rust_circuit's rotary position embedding
 * (GeneralFunction `apply_rotary_pos_emb at
 * rust_circuit.generalfuncs.rotary_pos_emb:ApplyRotaryPosEmb`, the one
 * rust_circuit's module library uses with use_rope). Written for circc's tests
 * from its semantics: x has shape [..., seq, 2, half]; the last two axes are
 * one vector of d = 2*half values v, which at position s (the seq index)
 * becomes v*cos + rot(v)*sin with rot(v)[2k] = -v[2k+1], rot(v)[2k+1] = v[2k],
 * and cos, sin of angle s * 10000^(-2*(c/2)/d) for value c. */
#include <math.h>
#include <stdint.h>
#include "circc_op.h"

CIRCC_OP_SHAPE("apply_rotary_pos_emb", "in0")
void apply_rotary_pos_emb(const float *const *in, const int64_t *const *shapes, int n_in, float *out) {
  (void)n_in; /* one child */
  const int64_t rank = shapes[0][0], *dim = shapes[0] + 1;
  const int64_t seq = dim[rank - 3], d = 2 * dim[rank - 1];
  int64_t batch = 1;
  for (int64_t a = 0; a < rank - 3; a++) batch *= dim[a];
  for (int64_t b = 0; b < batch; b++)
    for (int64_t s = 0; s < seq; s++) {
      const float *v = in[0] + (b * seq + s) * d;
      float *y = out + (b * seq + s) * d;
      for (int64_t c = 0; c < d; c++) {
        float inv_freq = 1.0f / powf(10000.0f, (float)(2 * (c / 2)) / (float)d);
        float angle = (float)s * inv_freq;
        float rot = c % 2 ? v[c - 1] : -v[c + 1];
        y[c] = v[c] * cosf(angle) + rot * sinf(angle);
      }
    }
}
