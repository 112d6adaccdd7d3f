/* An --ops file Clang rejects (tests/errors/ops_clang_error). */
#include "circc_op.h"

CIRCC_OP("twice") float twice(float x) { return x * factor; }
