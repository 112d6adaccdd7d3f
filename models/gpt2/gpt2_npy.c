/* gpt2_npy.c — reshapes the Hugging Face goldens for the GPT-2 e2e tests:
 *   gpt2_npy squeeze IN.npy OUT.npy   drops the leading size-1 axis
 *                                     ([1,T,V] logits → [T,V], [1,T] ids → [T])
 *   gpt2_npy next IN.npy OUT.npy      drops the first position of the last axis
 *                                     (ids [...,T] → the next tokens [...,T-1],
 *                                     the `targets` of a circuit built with --loss)
 *   gpt2_npy shape IN.npy             prints the shape, e.g. "1 16"
 * Values and dtype are unchanged. Exit codes: 0 ok, 1 a shape that does not
 * fit, 2 usage, 3 I/O. */
#include <stdio.h>
#include <string.h>
#include "modeltool.h"

static const char USAGE[] = "usage: gpt2_npy squeeze|next IN.npy OUT.npy | gpt2_npy shape IN.npy\n"
                            "  squeeze  drop the leading size-1 axis\n"
                            "  next     drop the first element of the last axis (ids -> next tokens)\n"
                            "  shape    print the shape, axes separated by spaces\n";

int main(int argc, char **argv) {
  tool_name = "gpt2_npy";
  bool squeeze = argc == 4 && !strcmp(argv[1], "squeeze"), next = argc == 4 && !strcmp(argv[1], "next");
  bool shape = argc == 3 && !strcmp(argv[1], "shape");
  if (!squeeze && !next && !shape) {
    fputs(USAGE, stderr);
    return TOOL_USAGE;
  }
  Comp c;
  comp_init(&c);
  Loc loc = {argv[2], 0, 0};
  Tensor *t = npy_load(&c, argv[2], loc);
  int rc = t ? TOOL_OK : TOOL_IO;
  int r = t ? t->shape.rank : 0;
  if (t && shape) {
    for (int i = 0; i < r; i++) printf(i ? " %lld" : "%lld", (long long)t->shape.dim[i]);
    putchar('\n');
  } else if (t && squeeze && (r == 0 || t->shape.dim[0] != 1)) {
    tool_error("%s: expected a leading axis of size 1, found %s", argv[2], r ? "a larger one" : "a rank-0 array");
    rc = 1;
  } else if (t && next && (r == 0 || t->shape.dim[r - 1] < 2)) {
    tool_error("%s: expected at least 2 elements along the last axis", argv[2]);
    rc = 1;
  }
  if (rc == TOOL_OK && shape) {
    /* printed above */
  } else if (rc == TOOL_OK && squeeze) {
    t->shape.rank--;
    memmove(t->shape.dim, t->shape.dim + 1, (size_t)t->shape.rank * sizeof t->shape.dim[0]);
    if (!npy_save(&c, t, argv[3])) rc = TOOL_IO;
  } else if (rc == TOOL_OK) {
    Shape s = t->shape;
    int64_t n = s.dim[r - 1]--, rows = shape_numel(&t->shape) / n;
    Tensor *o = tensor_new(&c, t->dtype, &s);
    size_t el = dtype_size(t->dtype);
    for (int64_t i = 0; i < rows; i++)
      memcpy((char *)o->data + (size_t)(i * (n - 1)) * el, (const char *)t->data + (size_t)(i * n + 1) * el,
             (size_t)(n - 1) * el);
    if (!npy_save(&c, o, argv[3])) rc = TOOL_IO;
  }
  comp_free(&c);
  return rc;
}
