/* fuzz_safetensors.c — libFuzzer target for the safetensors reader. The input
 * is written to a temp file and opened as a checkpoint (and, if it looks like
 * JSON, as a sharded index); every listed tensor is fetched and read in full.
 * Any input must give tensors that match their shapes, or diagnostics. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "tensor.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void write_file(const char *path, const uint8_t *data, size_t size) {
  FILE *f = fopen(path, "wb");
  if (!f || fwrite(data, 1, size, f) != size) abort();
  fclose(f);
}

static void read_all(Comp *c, TensorFile *f) {
  for (int i = 0; i < safetensors_count(f); i++) {
    Tensor *t = safetensors_get(c, f, safetensors_name(f, i), NO_LOC);
    if (!t) continue;
    if (t->nbytes != (size_t)shape_numel(&t->shape) * dtype_size(t->dtype)) abort();
    double sum = 0;
    for (int64_t k = 0; k < shape_numel(&t->shape); k++) sum += tensor_get_f64(t, k);
    (void)sum;
  }
  if (safetensors_get(c, f, "no such tensor", NO_LOC)) abort();
}

static char dir[] = "/tmp/fuzz_st_XXXXXX";
static void remove_dir(void) { rmdir(dir); }   /* its files are unlinked after each input */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  /* a private directory, so shard names in a fuzzed index resolve to nothing else */
  static char path[64], index[64];
  if (!path[0]) {
    if (!mkdtemp(dir)) abort();
    atexit(remove_dir);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    snprintf(index, sizeof index, "%s/model.safetensors.index.json", dir);
  }
  Comp c;
  comp_init(&c);
  c.err = fopen("/dev/null", "w");
  write_file(path, data, size);
  TensorFile *f = safetensors_open(&c, path, NO_LOC);
  if (f) read_all(&c, f);
  else if (diag_error_count(&c) == 0) abort();
  if (size && data[0] == '{') {
    write_file(index, data, size);
    f = safetensors_open(&c, index, NO_LOC);
    if (f) read_all(&c, f);
    unlink(index);
  }
  unlink(path);
  fclose(c.err);
  comp_free(&c);
  return 0;
}
