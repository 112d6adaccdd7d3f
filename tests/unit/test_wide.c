/* test_wide.c — circuits wide rather than deep: an Add of hundreds of inputs
 * (one fused step touching every input buffer), a hundred thousand inputs
 * (symbol lookups and buffer declarations by sorting, not quadratic
 * searches), and buffers that together exceed what a program may address. */
#define _GNU_SOURCE /* asprintf */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "testutil.h"

/* 'y' Add of n Symbols 'x0'..'x<n-1>' of shape [size] (malloc'd text). */
static char *wide_add(int n, const char *size) {
  size_t cap = 64 + (size_t)n * (32 + strlen(size)), len = 0;
  char *t = malloc(cap);
  cr_assert(t);
  len += (size_t)snprintf(t + len, cap - len, "'y' Add\n");
  for (int i = 0; i < n; i++) len += (size_t)snprintf(t + len, cap - len, "  'x%d' [%s] Symbol\n", i, size);
  return t;
}

/* A float32 .npy of shape [4], every element v. */
static void write_npy4(const char *path, float v) {
  char hdr[128];
  int n = snprintf(hdr, sizeof hdr, "{'descr': '<f4', 'fortran_order': False, 'shape': (4,), }");
  int pad = 64 - (10 + n + 1) % 64;
  FILE *f = fopen(path, "wb");
  cr_assert(f);
  unsigned short hlen = (unsigned short)(n + pad + 1);
  fwrite("\x93NUMPY\x01\x00", 1, 8, f);
  fputc(hlen & 0xff, f), fputc(hlen >> 8, f);
  fprintf(f, "%s%*s\n", hdr, pad, "");
  float x[4] = {v, v, v, v};
  fwrite(x, sizeof x, 1, f);
  fclose(f);
}

Test(wide, an_add_of_300_inputs_is_one_step_reading_300_buffers) {
  enum { N = 300 };
  char *dir = tu_temp_dir("wide"), *prog, *text = wide_add(N, "4");
  cr_assert(asprintf(&prog, "%s/prog", dir) > 0);
  tu_build(text, prog, "-O1");   /* was an internal error past 64 buffers */
  /* x_i = i: y = 0 + 1 + ... + 299 = 44850, exact in float32 */
  size_t cap = (size_t)N * 64, len = 0;
  char *args = malloc(cap);
  cr_assert(args);
  for (int i = 0; i < N; i++) {
    char *path;
    cr_assert(asprintf(&path, "%s/x%d.npy", dir, i) > 0);
    write_npy4(path, (float)i);
    len += (size_t)snprintf(args + len, cap - len, " --input x%d=@%s", i, path);
    free(path);
  }
  for (int threads = 1; threads <= 2; threads++)
    cr_assert_eq(tu_sh("%s --threads %d%s | tail -1 | grep -qx '\\[44850, 44850, 44850, 44850\\]'", prog, threads,
                       args), 0, "threads %d", threads);
  tu_sh("rm -rf %s", dir);
  free(args), free(prog), free(dir), free(text);
}

Test(wide, a_hundred_thousand_inputs_compile) {
  char *text = wide_add(100000, "4");
  Comp *c = tu_comp();
  Compilation cm = {0};
  cr_assert(tu_run(c, text, STAGE_MEMPLAN, &cm), "%s", tu_diags(c));
  cr_assert_eq(cm.kernels.ninputs, 100000);
  tu_free(c);
  free(text);
}

Test(wide, buffers_past_2_to_the_56_bytes_in_all_are_an_error) {
  /* 65 537 inputs of 2^38 floats (2^40 bytes each, the largest a tensor may be) */
  char *text = wide_add(65537, "274877906944");
  Comp *c = tu_comp();
  Compilation cm = {0};
  cr_assert(!tu_run(c, text, STAGE_MEMPLAN, &cm));
  cr_assert(strstr(tu_diags(c), "test.circ:65537:3: error: the program's buffers need more than 2^56 bytes in all "
                                "(at 'x65535')"), "%s", tu_diags(c));
  tu_free(c);
  free(text);
}
