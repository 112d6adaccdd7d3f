/* test_packed.c — fp32 programs whose GEMMs read weights pre-packed in the blob
 * (lower_gemm.c's gemm_packed_weights, templates/gemm_f32.h's
 * circc_gemm_f32_packed_rows): the same circuit with the weights given as
 * inputs instead (so its GEMMs pack B as they run, or stream it) must give
 * the same bits, with 1 and 2 threads each. The shapes cover two K blocks
 * (K = 300), a last panel of 6 columns (N = 70), a per-head weight (a batch
 * stride over packed matrices) and a weight that is also an output (kept
 * plain for that, packed for the GEMM); rows M = 3 (the streaming path when B
 * is an input) and M = 40. */
#define _GNU_SOURCE /* asprintf */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>
#include "testutil.h"

enum { K = 300, N = 70 };

/* y = x w + bias and z[h] = x2[h] wh[h]; w, bias and wh are weights
 * (`Array rand`, also outputs: their values) or, with inputs, Symbols. */
static char *circuit(int64_t M, bool inputs) {
  char *text;
  const char *w = inputs ? "Symbol 33333333-3333-4333-8333-333333333333" : "Array rand";
  const char *bias = inputs ? "Symbol 44444444-4444-4444-8444-444444444444" : "Array rand";
  const char *wh = inputs ? "Symbol 55555555-5555-4555-8555-555555555555" : "Array rand";
  cr_assert(asprintf(&text,
                     "'y' Add\n"
                     "  'xw' Einsum ab,bc->ac\n"
                     "    'x' [%lld,%d] Symbol 11111111-1111-4111-8111-111111111111\n"
                     "    'w' [%d,%d] %s\n"
                     "  'bias' [%d] %s\n"
                     "'z' Einsum hab,hbc->hac\n"
                     "  'x2' [2,%lld,%d] Symbol 22222222-2222-4222-8222-222222222222\n"
                     "  'wh' [2,%d,%d] %s\n"
                     "'w'\n"
                     "'bias'\n"
                     "'wh'\n",
                     (long long)M, K, K, N, w, N, bias, (long long)M, K, K, N, wh) > 0);
  return text;
}

/* dir/name.npy: n floats of both signs over a few binades. */
static void save_input(const char *dir, const char *name, Shape shape) {
  Comp *c = tu_comp();
  Tensor *t = tensor_new(c, DT_F32, &shape);
  for (int64_t i = 0; i < shape_numel(&shape); i++) ((float *)t->data)[i] = (float)((i * 37 % 101 - 50) * (1 + i % 7)) / 64;
  char *path;
  cr_assert(asprintf(&path, "%s/%s.npy", dir, name) > 0);
  cr_assert(npy_save(c, t, path), "%s", tu_diags(c));
  free(path);
  tu_free(c);
}

Test(packed, pre_packed_weights_give_the_bits_of_weights_as_inputs) {
  const int64_t rows[] = {3, 40};
  for (int r = 0; r < 2; r++) {
    int64_t M = rows[r];
    char *dir = tu_temp_dir("packed"), *packed = circuit(M, false), *plain = circuit(M, true);
    tu_build_precision(packed, PRECISION_FP32, dir, "packed", false, false);
    tu_build_precision(plain, PRECISION_FP32, dir, "plain", false, false);
    save_input(dir, "x", (Shape){.rank = 2, .dim = {M, K}});
    save_input(dir, "x2", (Shape){.rank = 3, .dim = {2, M, K}});
    for (int t = 1; t <= 2; t++) {
      cr_assert_eq(tu_sh("cd %s && ./packed --threads %d --input x=@x.npy --input x2=@x2.npy --output y=@y%d.npy "
                         "--output z=@z%d.npy --output w=@w.npy --output bias=@bias.npy --output wh=@wh.npy",
                         dir, t, t, t),
                   0);
      cr_assert_eq(tu_sh("cd %s && ./plain --threads %d --input x=@x.npy --input x2=@x2.npy --input w=@w.npy "
                         "--input bias=@bias.npy --input wh=@wh.npy --output y=@py%d.npy --output z=@pz%d.npy",
                         dir, t, t, t),
                   0);
      cr_assert_eq(tu_sh("cmp -s %s/y%d.npy %s/py%d.npy", dir, t, dir, t), 0, "M=%lld, %d threads: y differs",
                   (long long)M, t);
      cr_assert_eq(tu_sh("cmp -s %s/z%d.npy %s/pz%d.npy", dir, t, dir, t), 0, "M=%lld, %d threads: z differs",
                   (long long)M, t);
    }
    cr_assert_eq(tu_sh("cmp -s %s/y1.npy %s/y2.npy && cmp -s %s/z1.npy %s/z2.npy", dir, dir, dir, dir), 0,
                 "M=%lld: 1 and 2 threads differ", (long long)M);
    tu_sh("rm -rf %s", dir);
    free(dir), free(packed), free(plain);
  }
}

/* The generated C: the weight GEMMs call the pre-packed entry, the plain
 * circuit's do not; the blob holds w padded to 80 columns (besides its plain
 * copy, an output) and wh's two matrices packed only (its plain values, an
 * output too, stay: 2 x 300 x 70 floats). */
Test(packed, weight_gemms_call_the_pre_packed_entry) {
  char *dir = tu_temp_dir("packed_c"), *packed = circuit(40, false), *plain = circuit(40, true);
  tu_build_precision(packed, PRECISION_FP32, dir, "packed.d", true, false);
  tu_build_precision(plain, PRECISION_FP32, dir, "plain.d", true, false);
  cr_assert_eq(tu_sh("test $(grep -c 'circc_gemm_f32_packed_rows(m0' %s/packed.d/model.c) -eq 2", dir), 0);
  cr_assert_neq(tu_sh("grep -q 'circc_gemm_f32_packed_rows(m0' %s/plain.d/model.c", dir), 0);
  char *path;
  size_t n;
  cr_assert(asprintf(&path, "%s/packed.d/weights.bin", dir) > 0);
  free(tu_read_file(path, &n));
  size_t floats = (size_t)K * 80 + (size_t)K * N + N + 2 * ((size_t)K * 80 + (size_t)K * N);
  cr_assert_leq(floats * 4, n, "blob %zu bytes", n);
  cr_assert_leq(n, floats * 4 + 5 * 64, "blob %zu bytes (64-byte alignment aside)", n);
  tu_sh("rm -rf %s", dir);
  free(dir), free(packed), free(plain), free(path);
}
