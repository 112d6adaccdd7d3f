/* fuzz_pt.c — libFuzzer target for the torch.save reader: any input must be
 * either loaded or rejected with a diagnostic, never crash, leak or read out
 * of bounds. Diagnostics go to /dev/null; each input gets a fresh Comp. */
#include <stdio.h>
#include "tensor.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static FILE *devnull;
  if (!devnull) devnull = fopen("/dev/null", "w");
  Comp c;
  comp_init(&c);
  c.err = devnull;
  torch_load_bytes(&c, data, size, "fuzz.pt", NO_LOC);
  comp_free(&c);
  return 0;
}
