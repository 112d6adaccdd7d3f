/* test_precision_int8.c — circc --precision int8 on whole programs: a product
 * with a bias (a GEMM with an epilogue) for M = 1 and 3 rows (the decode
 * summation) and M = 40 (the prefill one) against a double reference of the
 * weights dequantised by the test itself (per column and 32 k: s =
 * fp16(max|w|/127) by _Float16's rounding, q = rint(w/s) clamped to +-127),
 * within the fp32 accumulation bound of templates/gemm_int8.h
 * (|y - ref| <= (Kp + 1) 2^-24 sum_k |x_k w'_k| plus the bias add's
 * rounding); with M = 40, bit for bit the fp32 program of the same circuit
 * whose weight is an input given those dequantised values (the prefill path is
 * the fp32 template on W'); the same bits with 1 and 2 threads; the weight
 * that is also an output keeps its fp32 values; --info names the precision
 * and path; the blob holds the weight at 1.0625 bytes a value; expectation
 * programs (batch-invariant GEMMs) take int8 weights; batched weights are
 * quantised matrix by matrix; a weight fp16 scales cannot hold is refused with
 * a message. */
#define _GNU_SOURCE /* asprintf */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "model_gen.h"
#include "testutil.h"

enum { K = 300, N = 70 };

/* The test's own W' of w [Kw, Nw] (row-major). */
static float *dequantize(const float *w, int64_t Kw, int64_t Nw) {
  float *d = malloc(sizeof(float) * (size_t)(Kw * Nw));
  for (int64_t n = 0; n < Nw; n++)
    for (int64_t g = 0; g < Kw; g += 32) {
      int64_t e = g + 32 < Kw ? g + 32 : Kw;
      double mx = 0;
      for (int64_t k = g; k < e; k++) mx = fmax(mx, fabs((double)w[k * Nw + n]));
      double s = (double)(_Float16)(mx / 127.0);
      for (int64_t k = g; k < e; k++)
        d[k * Nw + n] = s == 0 ? 0.0f : (float)(fmin(127, fmax(-127, rint(w[k * Nw + n] / s))) * s);
    }
  return d;
}

Test(precision_int8, programs_within_the_accumulation_bound_thread_invariant_and_fp32_of_wprime) {
  const int64_t rows[] = {1, 3, 40};
  for (int r = 0; r < 3; r++) {
    int64_t M = rows[r];
    char *dir = tu_temp_dir("precision_int8"), *text_in = tu_product_circuit(M, K, N, true);
    Comp *c = tu_comp();
    const float *xv = tu_run_product(c, dir, PRECISION_INT8, M, K, N,
                                     "^precision:    int8 (GEMMs: [a-z0-9]*; weights int8, one fp16 scale per 32")
                          ->data;
    tu_build_precision(text_in, PRECISION_FP32, dir, "f32", false, false);
    const float *y = tu_load_f32(c, dir, "y1.npy")->data, *w = tu_load_f32(c, dir, "w.npy")->data, *b = tu_load_f32(c, dir, "b.npy")->data;
    float *wq = dequantize(w, K, N);
    int changed = 0; /* the weight output kept its fp32 values: quantisation moves nearly all */
    for (int64_t i = 0; i < K * N; i++) changed += wq[i] != w[i];
    cr_assert_gt(changed, K * N * 9 / 10, "the weight output lost its fp32 bits");
    double *xe = malloc(sizeof(double) * (size_t)(M * K)), *we = malloc(sizeof(double) * K * N);
    for (int64_t i = 0; i < M * K; i++) xe[i] = xv[i];
    for (int64_t i = 0; i < K * N; i++) we[i] = wq[i];
    tu_check_product(M, K, N, xe, we, xv, w, b, y);
    free(xe), free(we);
    if (M > 4) { /* prefill: the fp32 template on W' */
      Tensor *wt = tensor_new(c, DT_F32, &(Shape){.rank = 2, .dim = {K, N}});
      memcpy(wt->data, wq, sizeof(float) * K * N);
      tu_save_npy(c, wt, dir, "wq.npy");
      cr_assert_eq(
          tu_sh("cd %s && ./f32 --input x=@x.npy --input w=@wq.npy --input bias=@b.npy --output y=@yf.npy", dir), 0);
      cr_assert_eq(tu_sh("cmp -s %s/y1.npy %s/yf.npy", dir, dir), 0, "M=%lld: not the fp32 program's bits on W'",
                   (long long)M);
    }
    free(wq);
    tu_free(c);
    tu_sh("rm -rf %s", dir);
    free(dir), free(text_in);
  }
}

/* The blob: int8 holds the weight in 1.0625 bytes a value (no other step
 * reads it, so its fp32 copy is gone), once for the two GEMMs that read it
 * the same way; the program calls the int8 template. */
Test(precision_int8, blob_is_int8_with_fp16_scales) {
  char *dir = tu_temp_dir("precision_int8_blob");
  const char *text = "'y' Einsum ab,bc->ac\n"
                     "  'x' [8,256] Symbol 11111111-1111-4111-8111-111111111111\n"
                     "  'w' [256,512] Array rand\n"
                     "'z' Einsum ab,bc->ac\n"
                     "  'x2' [1,256] Symbol 22222222-2222-4222-8222-222222222222\n"
                     "  'w'\n";
  tu_build_precision(text, PRECISION_INT8, dir, "int8.d", true, false);
  size_t n8;
  char *p8;
  cr_assert(asprintf(&p8, "%s/int8.d/weights.bin", dir) > 0);
  free(tu_read_file(p8, &n8));
  cr_assert_eq(n8, (size_t)256 * 512 + 256 / 32 * 512 * 2);
  cr_assert_eq(tu_sh("grep -q 'circc_gemm_int8_rows(1, ' %s/int8.d/model.c", dir), 0, "the 1-row GEMM: decode");
  cr_assert_eq(tu_sh("grep -q 'circc_gemm_int8_rows(0, ' %s/int8.d/model.c", dir), 0, "the 8-row GEMM: prefill");
  tu_sh("rm -rf %s", dir);
  free(dir), free(p8);
}

/* An expectation program (batch-invariant GEMMs: the prefill summation
 * whatever the rows): int8 weights, the same bits with 1 and 2 threads,
 * within 2% of the largest |value| of the fp32 program (q * s is within
 * s/2 <= max|w|/254 of w, and sums of N(0,1) products partly cancel). */
Test(precision_int8, expectation_programs) { tu_check_expectation_precision(PRECISION_INT8, "int8", 0.02); }

/* A weight with a NaN, or one too large for an fp16 scale (|w| >= 65520 *
 * 127), cannot be quantised: circc says which and where, and writes nothing. */
Test(precision_int8, refuses_weights_fp16_scales_cannot_hold) {
  const float bad[2] = {NAN, 1e7f};
  for (int i = 0; i < 2; i++) {
    char *dir = tu_temp_dir("precision_int8_bad"), *out, *text;
    Comp *c = tu_comp();
    c->tensor_dir = store_dir();
    Tensor *w = tensor_new(c, DT_F32, &(Shape){.rank = 2, .dim = {64, 32}});
    for (int64_t j = 0; j < 64 * 32; j++) ((float *)w->data)[j] = (float)j / 100;
    ((float *)w->data)[100] = bad[i];
    const char *hash = store_write(c, w);
    cr_assert(hash);
    cr_assert(asprintf(&text,
                       "'y' Einsum ab,bc->ac\n"
                       "  'x' [2,64] Symbol 11111111-1111-4111-8111-111111111111\n"
                       "  'w' [64,32] Array %.24s\n",
                       hash) > 0);
    cr_assert(asprintf(&out, "%s/prog", dir) > 0);
    c->precision = PRECISION_INT8;
    DriverOptions o = {.text = text, .text_len = strlen(text), .text_name = "p.circ", .last = STAGE_EMIT,
                       .emit = {.name = "prog", .command_line = "test"}, .build = {.output = out, .opt = "-O0"}};
    Compilation cm = {0};
    cr_assert(!driver_run(c, &o, &cm), "compiled a weight holding %g", bad[i]);
    cr_assert(strstr(tu_diags(c), "p.circ:3:") && strstr(tu_diags(c), "--precision int8: weight 'w' holds"),
              "%s", tu_diags(c));
    cr_assert_neq(tu_sh("test -e %s", out), 0, "wrote %s", out);
    rm_store(c->tensor_dir);
    tu_free(c);
    tu_sh("rm -rf %s", dir);
    free(dir), free(out), free(text);
  }
}

/* A batched weight (one matrix per head, y[h] = x[h] w[h]): each matrix
 * quantised on its own, in the decode (M = 1) and prefill (M = 8) summations,
 * within the bound of the test's own W'. */
Test(precision_int8, batched_weights) {
  enum { HB = 4, KB = 64, NB = 40 };
  for (int64_t M = 1; M <= 8; M += 7) {
    char *dir = tu_temp_dir("precision_int8_batched"), *text;
    cr_assert(asprintf(&text,
                       "'y' Einsum hab,hbc->hac\n"
                       "  'x' [%d,%lld,%d] Symbol 11111111-1111-4111-8111-111111111111\n"
                       "  'w' [%d,%d,%d] Array rand\n"
                       "'w'\n",
                       HB, (long long)M, KB, HB, KB, NB) > 0);
    tu_build_precision(text, PRECISION_INT8, dir, "prog", false, false);
    Comp *c = tu_comp();
    Tensor *x = tensor_new(c, DT_F32, &(Shape){.rank = 3, .dim = {HB, M, KB}});
    for (int64_t i = 0; i < HB * M * KB; i++) ((float *)x->data)[i] = (float)cos((double)i * 0.91) * 2;
    tu_save_npy(c, x, dir, "x.npy");
    cr_assert_eq(tu_sh("cd %s && ./prog --threads 2 --input x=@x.npy --output y=@y.npy --output w=@w.npy", dir), 0);
    const float *y = tu_load_f32(c, dir, "y.npy")->data, *w = tu_load_f32(c, dir, "w.npy")->data, *xv = x->data;
    double u = ldexp(1.0, -24) * (KB + 1);
    for (int64_t h = 0; h < HB; h++) {
      float *wq = dequantize(w + h * KB * NB, KB, NB);
      for (int64_t m = 0; m < M; m++)
        for (int64_t n = 0; n < NB; n++) {
          double ref = 0, mag = 0;
          for (int64_t k = 0; k < KB; k++) {
            double p = (double)xv[(h * M + m) * KB + k] * wq[k * NB + n];
            ref += p, mag += fabs(p);
          }
          double got = y[(h * M + m) * NB + n];
          cr_assert(fabs(got - ref) <= u * mag, "M=%lld y[%lld,%lld,%lld] = %.9g, want %.9g", (long long)M,
                    (long long)h, (long long)m, (long long)n, got, ref);
        }
      free(wq);
    }
    tu_free(c);
    tu_sh("rm -rf %s", dir);
    free(dir), free(text);
  }
}
