/* test_weights.c — where a program reads its weights from (rt_weights): a
 * blob of at least RT_WEIGHTS_COPY_MIN bytes is copied to memory on 2 MiB
 * pages before the first run, CIRCC_WEIGHTS=mapped keeps it where the program
 * file maps it, and a small blob stays there too; -v says which. The copy is
 * read from the program file, or from the mapping when the file is gone; the
 * size model.c gives the blob is weights.bin's. The results
 * are the same bits either way, with 1 and 2 threads, and the product is
 * right against a double-precision reference of the weights the program
 * writes out. */
#define _GNU_SOURCE /* asprintf */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "testutil.h"

/* w is 1024 x 1100 fp32 (4.3 MiB, over RT_WEIGHTS_COPY_MIN's 4 MiB) */
enum { M = 2, K = 1024, N = 1100 };

Test(weights, a_large_blob_is_copied_a_mapped_one_gives_the_same_bits) {
  char *dir = tu_temp_dir("weights");
  Comp *c = tu_comp();
  const float *x = tu_run_product(c, dir, PRECISION_FP32, M, K, N, "^threads:")->data;
  const float *y = tu_load_f32(c, dir, "y1.npy")->data, *w = tu_load_f32(c, dir, "w.npy")->data,
              *b = tu_load_f32(c, dir, "b.npy")->data;
  for (int64_t i = 0; i < M; i++)
    for (int64_t j = 0; j < N; j++) {
      double ref = b[j], mag = fabs(b[j]);
      for (int64_t k = 0; k < K; k++) ref += (double)x[i * K + k] * w[k * N + j], mag += fabs((double)x[i * K + k] * w[k * N + j]);
      cr_assert_leq(fabs(y[i * N + j] - ref), (K + 2) * 0x1p-24 * mag, "y[%lld,%lld] = %.9g, want %.9g", (long long)i,
                    (long long)j, y[i * N + j], ref);
    }
  const char *args = "--input x=@x.npy --output w=@wm.npy --output bias=@bm.npy --output y=@ym.npy";
  cr_assert_eq(tu_sh("cd %s && env -u CIRCC_WEIGHTS ./prog -v --threads 2 --input x=@x.npy --output y=@yc.npy 2>err_copy",
                     dir), 0);
  cr_assert_eq(tu_sh("grep -qx 'prog: weights copied to memory \\(on 2 MiB pages\\|(the kernel refused 2 MiB pages)\\)' "
                     "%s/err_copy || { cat %s/err_copy >&2; false; }", dir, dir), 0, "-v does not say the weights were copied");
  cr_assert_eq(tu_sh("cd %s && CIRCC_WEIGHTS=mapped ./prog -v --threads 2 %s 2>err_mapped", dir, args), 0);
  cr_assert_eq(tu_sh("grep -qx 'prog: weights mapped from the program file (CIRCC_WEIGHTS=mapped)' %s/err_mapped || "
                     "cat %s/err_mapped >&2", dir, dir), 0, "-v does not say the weights stayed mapped");
  /* a program whose file is gone (deleted while it runs, or rebuilt) copies
   * from its mapping instead of reading the file */
  cr_assert_eq(tu_sh("cd %s && cp prog gone && exec 3<gone && rm gone && /proc/self/fd/3 -v --threads 2 --input x=@x.npy "
                     "--output y=@yg.npy 2>err_gone", dir), 0);
  cr_assert_eq(tu_sh("grep -q 'weights copied to memory .*, from the mapping (the program file is gone or was replaced)$' "
                     "%s/err_gone || { cat %s/err_gone >&2; false; }", dir, dir), 0, "-v does not say the copy came from the mapping");
  cr_assert_eq(tu_sh("cd %s && cmp -s y1.npy yc.npy && cmp -s y1.npy ym.npy && cmp -s y1.npy yg.npy && cmp -s w.npy wm.npy "
                     "&& cmp -s b.npy bm.npy", dir), 0, "copied and mapped weights give different results");
  tu_free(c);
  tu_sh("rm -rf %s", dir);
  free(dir);
}

Test(weights, a_small_blob_stays_mapped) {
  char *dir = tu_temp_dir("weights_small"), *prog;
  cr_assert(asprintf(&prog, "%s/prog", dir) > 0);
  tu_build("'y' Einsum ab,bc->ac\n  'x' [2,16] Symbol 11111111-1111-4111-8111-111111111111\n  'w' [16,8] Array rand\n",
           prog, "-O0");
  Comp *c = tu_comp();
  Tensor *x = tensor_new(c, DT_F32, &(Shape){.rank = 2, .dim = {2, 16}});
  for (int i = 0; i < 32; i++) ((float *)x->data)[i] = (float)i;
  tu_save_npy(c, x, dir, "x.npy");
  cr_assert_eq(tu_sh("env -u CIRCC_WEIGHTS %s -v --input x=@%s/x.npy >/dev/null 2>%s/err && grep -qx 'prog: weights mapped "
                     "from the program file' %s/err || { cat %s/err >&2; false; }", prog, dir, dir, dir, dir), 0);
  tu_free(c);
  tu_sh("rm -rf %s", dir);
  free(prog), free(dir);
}

/* run() hands rt_weights circc_weights_bytes, the size --emit c writes into
 * model.c: it must be weights.bin's, the blob the program links, in every
 * precision (each lays the blob out its own way). */
Test(weights, model_c_states_the_blob_s_size) {
  char *dir = tu_temp_dir("weights_size");
  const char *circ = "'y' Einsum ab,bc->ac\n  'x' [2,64] Symbol 11111111-1111-4111-8111-111111111111\n"
                     "  'w' [64,40] Array rand\n";
  const Precision ps[] = {PRECISION_FP32, PRECISION_BF16, PRECISION_INT8};
  const char *names[] = {"fp32.d", "bf16.d", "int8.d"};
  for (int i = 0; i < 3; i++) {
    tu_build_precision(circ, ps[i], dir, names[i], true, false);
    cr_assert_eq(tu_sh("cd %s/%s && n=$(sed -n 's/^static const size_t circc_weights_bytes = \\([0-9]*\\);.*/\\1/p' "
                       "model.c) && test -n \"$n\" && test \"$n\" -gt 0 && test \"$n\" = \"$(stat -c %%s weights.bin)\" || "
                       "{ grep circc_weights_bytes model.c; ls -l weights.bin; false; } >&2", dir, names[i]), 0,
                 "%s: circc_weights_bytes is not weights.bin's size", names[i]);
  }
  tu_sh("rm -rf %s", dir);
  free(dir);
}
