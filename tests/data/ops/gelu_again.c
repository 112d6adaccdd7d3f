/* A second implementation of my_gelu (tests/errors/ops_duplicate). */
#include "circc_op.h"

CIRCC_OP("my_gelu") float gelu_again(float x) { return x; }
