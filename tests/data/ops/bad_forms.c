/* Marked functions that fit no form of --ops functions (tests/errors/ops_bad_forms). */
#include <stdint.h>
#include "circc_op.h"

CIRCC_OP("halve") double halve(double x) { return x / 2; }
CIRCC_OP("gelu") float gelu(float x) { return x; }
CIRCC_OP("whole") void whole(const float *const *in, const int64_t *const *shapes, int n_in, float *out) {}
CIRCC_OP_SHAPE("shaped", "in0") float shaped(float x) { return x; }
CIRCC_OP_SHAPE("badrule", "in0[") void badrule(const float *const *in, const int64_t *const *shapes, int n, float *out) {}
