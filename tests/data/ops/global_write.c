/* An --ops function that writes global state (tests/errors/ops_global_write: a warning). */
#include "circc_op.h"

static long calls;
float last[4];

CIRCC_OP("counted") float counted(float x) {
  calls++;
  last[0] = x;
  float local = x;
  local += 1;
  return local;
}
