/* test_precision.c — circc --precision bf16 on whole programs: a product with a
 * bias (a GEMM with an epilogue) for M = 1 and 3 rows (the vector path of
 * decode steps) and M = 40 (AMX where the machine has it) against a double
 * reference of the bf16-rounded operands, within the fp32 accumulation bound
 * of templates/gemm_bf16.h (|y - ref| <= (Kp + 1) 2^-24 sum_k |x_k w_k| plus
 * the bias add's rounding); the same bits with 1 and 2 threads; the weight
 * that is also an output (read by a non-GEMM step) keeps its fp32 values;
 * --info names the precision; the blob holds the weight at half its bytes;
 * without --precision the generated C knows nothing of bf16; expectation
 * programs take bf16 weights with the same guarantees. */
#define _GNU_SOURCE /* asprintf */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "testutil.h"
#define CIRCC_GEMM_BF16_LAYOUT_ONLY
#include "../../templates/gemm_bf16.h"

enum { K = 300, N = 70 };

static double bf(float x) { return (double)circc_bf16_float(circc_bf16_round(x)); }

Test(precision, bf16_programs_within_the_accumulation_bound_and_thread_count_invariant) {
  const int64_t rows[] = {1, 3, 40};
  for (int r = 0; r < 3; r++) {
    int64_t M = rows[r];
    char *dir = tu_temp_dir("precision");
    Comp *c = tu_comp();
    const float *xv = tu_run_product(c, dir, PRECISION_BF16, M, K, N, "^precision:    bf16 (GEMMs: ")->data;
    const float *y = tu_load_f32(c, dir, "y1.npy")->data, *w = tu_load_f32(c, dir, "w.npy")->data, *b = tu_load_f32(c, dir, "b.npy")->data;
    int bf16_values = 0; /* weights that bf16 cannot hold: the output kept fp32 */
    for (int64_t i = 0; i < K * N; i++) bf16_values += bf(w[i]) != (double)w[i];
    cr_assert_gt(bf16_values, K * N / 2, "the weight output lost its fp32 bits");
    double *xe = malloc(sizeof(double) * (size_t)(M * K)), *we = malloc(sizeof(double) * K * N);
    for (int64_t i = 0; i < M * K; i++) xe[i] = bf(xv[i]);
    for (int64_t i = 0; i < K * N; i++) we[i] = bf(w[i]);
    tu_check_product(M, K, N, xe, we, xv, w, b, y);
    free(xe), free(we);
    tu_free(c);
    tu_sh("rm -rf %s", dir);
    free(dir);
  }
}

/* The blob: bf16 holds the weight in half the bytes (no other step reads it,
 * so its fp32 copy is gone), once for the two GEMMs that read it the same
 * way; fp32 programs do not include the bf16 template. */
Test(precision, bf16_halves_the_weights_and_fp32_is_untouched) {
  char *dir = tu_temp_dir("precision_blob");
  const char *text = "'y' Einsum ab,bc->ac\n"
                     "  'x' [8,256] Symbol 11111111-1111-4111-8111-111111111111\n"
                     "  'w' [256,512] Array rand\n"
                     "'z' Einsum ab,bc->ac\n"
                     "  'x2' [8,256] Symbol 22222222-2222-4222-8222-222222222222\n"
                     "  'w'\n";
  tu_build_precision(text, PRECISION_FP32, dir, "f32.d", true, false);
  tu_build_precision(text, PRECISION_BF16, dir, "bf16.d", true, false);
  size_t n32, n16;
  char *p32, *p16;
  cr_assert(asprintf(&p32, "%s/f32.d/weights.bin", dir) > 0 && asprintf(&p16, "%s/bf16.d/weights.bin", dir) > 0);
  free(tu_read_file(p32, &n32));
  free(tu_read_file(p16, &n16));
  cr_assert_eq(n32, (size_t)256 * 512 * 4);
  cr_assert_eq(n16, (size_t)256 * 512 * 2);
  cr_assert_neq(tu_sh("grep -q bf16 %s/f32.d/model.c", dir), 0, "an fp32 program mentions bf16");
  cr_assert_eq(tu_sh("grep -q 'circc_gemm_bf16_rows' %s/bf16.d/model.c", dir), 0);
  tu_sh("rm -rf %s", dir);
  free(dir), free(p32), free(p16);
}

/* An expectation program (batch-invariant GEMMs): its GEMM reads bf16 weights
 * too, gives the same bits with 1 and 2 threads, differs from the fp32
 * program but by at most 5% of the largest |value| (each operand is rounded
 * by up to 2^-9 relative; sums of N(0,1) products cancel, so small elements
 * are measured against the largest); --info says bf16. */
Test(precision, bf16_expectation_programs) { tu_check_expectation_precision(PRECISION_BF16, "bf16", 0.05); }

/* A weight written as the first operand (y = w x): with one column of x the
 * GEMM has the weight as A and is turned around (y^T = x^T w^T: one row, the
 * vector path); with 40 columns lowering already makes the weight B (40 rows,
 * AMX where there is AMX). Both read it as bf16, within the same bound, and
 * give the same bits with 1 and 2 threads. */
Test(precision, bf16_weight_as_first_operand) {
  const int64_t cols[] = {1, 40};
  for (int r = 0; r < 2; r++) {
    int64_t n = cols[r], R = 20;
    char *dir = tu_temp_dir("precision_wa"), *text;
    cr_assert(asprintf(&text,
                       "'y' Einsum ab,bc->ac\n"
                       "  'w' [%lld,%d] Array rand\n"
                       "  'x' [%d,%lld] Symbol 11111111-1111-4111-8111-111111111111\n"
                       "'w'\n",
                       (long long)R, K, K, (long long)n) > 0);
    tu_build_precision(text, PRECISION_BF16, dir, "prog", false, false);
    Comp *c = tu_comp();
    Tensor *x = tensor_new(c, DT_F32, &(Shape){.rank = 2, .dim = {K, n}});
    for (int64_t i = 0; i < K * n; i++) ((float *)x->data)[i] = (float)cos((double)i * 0.37) * 3;
    tu_save_npy(c, x, dir, "x.npy");
    tu_run_1_and_2_threads(dir, "--input x=@x.npy --output w=@w.npy", "y",
                           arena_printf(&c->arena, "n=%lld", (long long)n));
    const float *y = tu_load_f32(c, dir, "y1.npy")->data, *w = tu_load_f32(c, dir, "w.npy")->data, *xv = x->data;
    double u = ldexp(1.0, -24) * (double)(circc_bf16_kp(K) + 1), worst_fp32 = 0;
    for (int64_t a = 0; a < R; a++)
      for (int64_t b = 0; b < n; b++) {
        double ref = 0, mag = 0, exact = 0;
        for (int64_t k = 0; k < K; k++) {
          double p = bf(w[a * K + k]) * bf(xv[k * n + b]);
          ref += p, mag += fabs(p), exact += (double)w[a * K + k] * xv[k * n + b];
        }
        cr_assert(fabs(y[a * n + b] - ref) <= u * mag, "n=%lld y[%lld,%lld] = %.9g, want %.9g", (long long)n,
                  (long long)a, (long long)b, y[a * n + b], ref);
        worst_fp32 = fmax(worst_fp32, fabs(y[a * n + b] - exact));
      }
    cr_assert_gt(worst_fp32, 1e-3, "n=%lld: the product looks fp32", (long long)n);
    tu_free(c);
    tu_sh("rm -rf %s", dir);
    free(dir), free(text);
  }
}

/* Attention (a fused attention step: scores, scale, softmax, values) in a
 * bf16 program: 130 query rows (three 64-row tasks per head, AMX where the
 * machine has it) and 1 query row (the vector path of decode); the same bits
 * with 1 and 2 threads; within the bound test_attention_bf16 derives of a
 * double reference from the bf16-rounded q, k, v (the weights' relative
 * error: 2 (2^-8 + the scores' fp32 error) / (1 - that), plus the sums'
 * (Tk + 8) 2^-24) times Σ w |v|; and visibly not the fp32 result. */
Test(precision, bf16_attention_programs) {
  enum { H = 2, TK = 130, C = 24 };
  const int64_t tqs[] = {130, 1};
  for (int r = 0; r < 2; r++) {
    const int64_t TQ = tqs[r];
    char *dir = tu_temp_dir("precision_attn"), *text;
    cr_assert(asprintf(&text,
                       "'o' Einsum hqk,hkd->hqd\n"
                       "  'p' GeneralFunction softmax\n"
                       "    'r' Einsum hqc,hkc,->hqk\n"
                       "      'q' [%d,%lld,%d] Symbol 11111111-1111-4111-8111-111111111111\n"
                       "      'k' [%d,%d,%d] Symbol 22222222-2222-4222-8222-222222222222\n"
                       "      'scale' [] Scalar 0.25\n"
                       "  'v' [%d,%d,%d] Symbol 33333333-3333-4333-8333-333333333333\n",
                       H, (long long)TQ, C, H, TK, C, H, TK, C) > 0);
    tu_build_precision(text, PRECISION_BF16, dir, "prog", false, false);
    Comp *c = tu_comp();
    const char *names[3] = {"q", "k", "v"};
    const int64_t rows[3] = {TQ, TK, TK};
    float *in[3];
    for (int i = 0; i < 3; i++) {
      Tensor *t = tensor_new(c, DT_F32, &(Shape){.rank = 3, .dim = {H, rows[i], C}});
      in[i] = t->data;
      for (int64_t j = 0; j < H * rows[i] * C; j++) in[i][j] = (float)(sin((double)j * (1.3 + i)) * (1 + j % 3));
      tu_save_npy(c, t, dir, arena_printf(&c->arena, "%s.npy", names[i]));
    }
    tu_run_1_and_2_threads(dir, "--input q=@q.npy --input k=@k.npy --input v=@v.npy", "o",
                           arena_printf(&c->arena, "Tq=%lld", (long long)TQ));
    const float *o = tu_load_f32(c, dir, "o1.npy")->data;
    const double u = ldexp(1.0, -24);
    double worst_fp32 = 0, s[TK], s32[TK];
    for (int64_t h = 0; h < H; h++)
      for (int64_t q = 0; q < TQ; q++) {
        double mx = -INFINITY, mx32 = -INFINITY, sum = 0, sum32 = 0, emax = 0;
        for (int64_t k = 0; k < TK; k++) {
          double dot = 0, mag = 0, dot32 = 0;
          for (int64_t j = 0; j < C; j++) {
            double a = in[0][(h * TQ + q) * C + j], b = in[1][(h * TK + k) * C + j];
            dot += bf((float)a) * bf((float)b), mag += fabs(bf((float)a) * bf((float)b)), dot32 += a * b;
          }
          s[k] = dot * 0.25, s32[k] = dot32 * 0.25;
          emax = fmax(emax, (double)(circc_bf16_kp(C) + 3) * u * mag * 0.25);
          mx = fmax(mx, s[k]), mx32 = fmax(mx32, s32[k]);
        }
        for (int64_t k = 0; k < TK; k++) sum += s[k] = exp(s[k] - mx), sum32 += s32[k] = exp(s32[k] - mx32);
        const double eps = 2 * emax + 88 * u + ldexp(1.0, -22) + ldexp(1.0, -8);
        const double rel = 2 * eps / (1 - eps) + (double)(TK + 8) * u;
        for (int64_t d = 0; d < C; d++) {
          double want = 0, mag = 0, exact = 0;
          for (int64_t k = 0; k < TK; k++) {
            double v = in[2][(h * TK + k) * C + d];
            want += s[k] / sum * bf((float)v), mag += s[k] / sum * fabs(bf((float)v)), exact += s32[k] / sum32 * v;
          }
          double got = o[(h * TQ + q) * C + d];
          cr_assert(fabs(got - want) <= rel * mag + 1e-6, "Tq=%lld o[%lld,%lld,%lld] = %.9g, want %.9g", (long long)TQ,
                    (long long)h, (long long)q, (long long)d, got, want);
          worst_fp32 = fmax(worst_fp32, fabs(got - exact));
        }
      }
    cr_assert_gt(worst_fp32, 1e-3, "Tq=%lld: the attention looks fp32", (long long)TQ);
    tu_free(c);
    tu_sh("rm -rf %s", dir);
    free(dir), free(text);
  }
}
