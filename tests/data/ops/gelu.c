/* An --ops elementwise function: gelu (exact erf form) as a user op, for
 * test_ops.c (it must equal circc's built-in gelu). Written for circc's tests. */
#include <math.h>
#include "circc_op.h"

CIRCC_OP("my_gelu") float my_gelu(float x) { return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f)); }

/* two arguments, broadcast like pow */
CIRCC_OP("scaled_diff") static inline float scaled_diff(float x, float y) { return 2.0f * x - y; }
