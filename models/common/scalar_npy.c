/* scalar_npy.c — writes one number as a rank-0 float64 .npy, so end-to-end
 * tests can --check a program's scalar output (e.g. a mean loss) against a
 * published value without Python: `scalar_npy 2.454577 golden_loss.npy`.
 * Exit codes: 0 ok, 2 usage (not a finite number), 3 I/O. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "modeltool.h"

int main(int argc, char **argv) {
  tool_name = "scalar_npy";
  if (argc != 3) {
    fputs("usage: scalar_npy VALUE OUT.npy\nWrites VALUE as a rank-0 float64 .npy.\n", stderr);
    return TOOL_USAGE;
  }
  char *end;
  errno = 0;
  double v = strtod(argv[1], &end);
  if (end == argv[1] || *end || errno || !isfinite(v)) {
    tool_error("expected a finite number, found '%s'", argv[1]);
    return TOOL_USAGE;
  }
  Comp c;
  comp_init(&c);
  Shape s = {0, {0}};
  Tensor *t = tensor_new(&c, DT_F64, &s);
  memcpy(t->data, &v, sizeof v);
  bool ok = npy_save(&c, t, argv[2]);
  comp_free(&c);
  return ok ? TOOL_OK : TOOL_IO;
}
