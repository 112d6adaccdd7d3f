/* fuzz_npy.c — libFuzzer target for the .npy reader: any input is either
 * rejected with a diagnostic or gives a tensor whose size matches its shape;
 * accepted tensors must survive npy_save → npy_load unchanged. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "tensor.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static char path[64];
  if (!path[0]) snprintf(path, sizeof path, "/tmp/fuzz_npy_%ld.npy", (long)getpid());
  Comp c;
  comp_init(&c);
  c.err = fopen("/dev/null", "w");
  Tensor *t = npy_load_bytes(&c, data, size, "fuzz", NO_LOC);
  if (!t && diag_error_count(&c) == 0) abort();
  if (t) {
    if (t->nbytes != (size_t)shape_numel(&t->shape) * dtype_size(t->dtype)) abort();
    double sum = 0;
    for (int64_t i = 0; i < shape_numel(&t->shape); i++) sum += tensor_get_f64(t, i);
    (void)sum;
    if (!npy_save(&c, t, path)) abort();
    Tensor *u = npy_load(&c, path, NO_LOC);
    if (!u || u->dtype != t->dtype || !shape_eq(&u->shape, &t->shape) || u->nbytes != t->nbytes ||
        memcmp(u->data, t->data, t->nbytes) != 0)
      abort();
    unlink(path);
  }
  fclose(c.err);
  comp_free(&c);
  return 0;
}
