/* test_precision_kvcache.c — circc --precision bf16 and int8 store a float32
 * input as bf16 when only GEMMs with a bf16-B kernel read it (lower_bf16_inputs,
 * templates/gemv_bf16.h): a decode step's past keys (the scores'
 * matrix-vector product, which skips masked columns) and past values (the
 * probabilities-times-values product, 1 row, streaming).
 *  - By hand: keys and values that bf16 cannot hold give the result of their
 *    bf16 roundings, exactly.
 *  - Against the fp32 program: the bf16-cache program equals, bit for bit, the
 *    same circuit compiled in fp32 fed the inputs rounded to bf16 by this test
 *    (bf16 -> fp32 is exact and the kernels sum in the fp32 order); with 1 and
 *    2 threads, with masked keys, built with -march=native (the SIMD kernels)
 *    and without (generic x86-64: the portable ones).
 *  - The interface stays float32: --help and --info say "(stored as bf16)";
 *    --bench zero-fills the input.
 *  - Not stored as bf16: an input another step reads too, an fp32 program's,
 *    a library's (--emit lib: the caller's float32 buffers are passed each
 *    call; see README, Precision). */
#define _GNU_SOURCE /* asprintf */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "kernel.h"
#include "testutil.h"

enum { H = 3, T = 300, D = 40, KEPT = 200 };

/* One attention step of a decode program, without the softmax: scores of the
 * query against every past key, masked, times the past values. */
static const char CIRCUIT[] = "'out' Einsum ht,htd->hd\n"
                              "  'p' Einsum ht,t->ht\n"
                              "    'scores' Einsum hd,htd->ht\n"
                              "      'q' [3,40] Symbol 11111111-1111-4111-8111-111111111111\n"
                              "      'past_k' [3,300,40] Symbol 22222222-2222-4222-8222-222222222222\n"
                              "    'kv_mask' [300] Symbol 33333333-3333-4333-8333-333333333333\n"
                              "  'past_v' [3,300,40] Symbol 44444444-4444-4444-8444-444444444444\n";

/* Which inputs lowering stores as bf16 (by input index, as a string of 0/1). */
static void stored(const char *text, Precision p, bool lib, char *got) {
  Comp *c = tu_comp();
  c->precision = p;
  DriverOptions o = {.text = text, .text_len = strlen(text), .text_name = "kv.circ", .last = STAGE_MEMPLAN,
                     .verify_each = true, .build = {.emit_lib = lib}};
  Compilation cm = {0};
  cr_assert(driver_run(c, &o, &cm), "%s", tu_diags(c));
  for (int i = 0; i < cm.kernels.ninputs; i++) got[i] = cm.kernels.input[i]->stored_bf16 ? '1' : '0';
  got[cm.kernels.ninputs] = 0;
  tu_free(c);
}

static float bf16(float x) { /* round to nearest even, the test's own (finite x) */
  uint32_t u;
  memcpy(&u, &x, 4);
  u = (u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u;
  memcpy(&x, &u, 4);
  return x;
}

static void save(Comp *c, const char *dir, const char *name, const float *v, Shape s) {
  Tensor *t = tensor_new(c, DT_F32, &s);
  memcpy(t->data, v, sizeof(float) * (size_t)shape_numel(&s));
  tu_save_npy(c, t, dir, arena_printf(&c->arena, "%s.npy", name));
}

typedef struct Inputs {
  float q[H * D], k[H * T * D], mask[T], v[H * T * D];
} Inputs;

/* Writes in (and, with a suffix, its keys and values rounded to bf16) to dir. */
static void save_inputs(const char *dir, const Inputs *in, bool rounded) {
  static float k[H * T * D], v[H * T * D];
  for (int i = 0; i < H * T * D; i++) k[i] = rounded ? bf16(in->k[i]) : in->k[i], v[i] = rounded ? bf16(in->v[i]) : in->v[i];
  Comp *c = tu_comp();
  save(c, dir, "q", in->q, (Shape){.rank = 2, .dim = {H, D}});
  save(c, dir, "kv_mask", in->mask, (Shape){.rank = 1, .dim = {T}});
  save(c, dir, rounded ? "past_k_r" : "past_k", k, (Shape){.rank = 3, .dim = {H, T, D}});
  save(c, dir, rounded ? "past_v_r" : "past_v", v, (Shape){.rank = 3, .dim = {H, T, D}});
  tu_free(c);
}

static int run(const char *dir, const char *prog, int threads, bool rounded, const char *outfile) {
  const char *r = rounded ? "_r" : "";
  return tu_sh("cd %s && ./%s --threads %d --input q=@q.npy --input kv_mask=@kv_mask.npy --input past_k=@past_k%s.npy "
               "--input past_v=@past_v%s.npy --output out=@%s",
               dir, prog, threads, r, r, outfile);
}

/* q picks feature 0 of each key; keys' feature 0 is 1 + 2^-8 at even t (a
 * tie: bf16 rounds it to 1) and 1 + 3 * 2^-8 at odd t (to 1 + 2^-6), every
 * value 1 + 2^-8 (to 1); the first KEPT keys are unmasked. So each output is
 * 100 * 1 + 100 * (1 + 2^-6) = 201.5625, exactly (the fp32 values would give
 * 100 (1 + 2^-8)^2 + 100 (1 + 3 2^-8)(1 + 2^-8) = 202.35...). */
Test(precision_kvcache, by_hand) {
  static Inputs in;
  for (int h = 0; h < H; h++) {
    in.q[h * D] = 1;
    for (int t = 0; t < T; t++)
      for (int d = 0; d < D; d++) {
        in.k[(h * T + t) * D + d] = d ? 0.5f : t % 2 ? 1 + 3 * 0x1p-8f : 1 + 0x1p-8f;
        in.v[(h * T + t) * D + d] = 1 + 0x1p-8f;
      }
  }
  for (int t = 0; t < T; t++) in.mask[t] = t < KEPT;
  const Precision prec[2] = {PRECISION_BF16, PRECISION_INT8};
  for (int p = 0; p < 2; p++) {
    char *dir = tu_temp_dir("kvcache");
    tu_build_precision(CIRCUIT, prec[p], dir, "prog", false, true);
    save_inputs(dir, &in, false);
    cr_assert_eq(run(dir, "prog", 2, false, "out.npy"), 0);
    Comp *c = tu_comp();
    const float *out = tu_load_f32(c, dir, "out.npy")->data;
    for (int i = 0; i < H * D; i++) cr_assert(out[i] == 201.5625f, "out[%d] = %.9g, want 201.5625", i, (double)out[i]);
    tu_free(c);
    tu_sh("rm -rf %s", dir);
    free(dir);
  }
}

Test(precision_kvcache, the_fp32_programs_bits_on_rounded_inputs) {
  static Inputs in;
  uint64_t r = 0x2545f4914f6cdd1dull;
  float *all[3] = {in.q, in.k, in.v};
  int n[3] = {H * D, H * T * D, H * T * D};
  for (int a = 0; a < 3; a++)
    for (int i = 0; i < n[a]; i++) {
      r ^= r << 13, r ^= r >> 7, r ^= r << 17;
      all[a][i] = (float)((double)(r >> 11) * 0x1p-51 - 1.0) * (float)(1 + i % 7);
    }
  for (int t = 0; t < T; t++) in.mask[t] = t < KEPT && t % 9 != 4; /* runs and single masked keys */
  char *dir = tu_temp_dir("kvcache");
  save_inputs(dir, &in, false);
  save_inputs(dir, &in, true);
  /* natively and generic (the portable kernels), each against the fp32 program built the same way */
  for (int native = 1; native >= 0; native--) {
    tu_build_precision(CIRCUIT, PRECISION_FP32, dir, "fp32", false, native);
    cr_assert_eq(run(dir, "fp32", 2, true, "want.npy"), 0);
    cr_assert_eq(run(dir, "fp32", 2, false, "unrounded.npy"), 0);
    for (int p = 0; p < 2; p++) {
      tu_build_precision(CIRCUIT, p ? PRECISION_INT8 : PRECISION_BF16, dir, "low", false, native);
      for (int t = 1; t <= 2; t++) {
        char out[32];
        snprintf(out, sizeof out, "got%d.npy", t);
        cr_assert_eq(run(dir, "low", t, false, out), 0);
        cr_assert_eq(tu_sh("cmp -s %s/%s %s/want.npy", dir, out, dir), 0,
                     "%s, %s, %d threads: not the fp32 program's bits", p ? "int8" : "bf16",
                     native ? "native" : "generic", t);
      }
      /* the rounding shows: the fp32 program on the unrounded inputs differs */
      cr_assert_neq(tu_sh("cmp -s %s/got1.npy %s/unrounded.npy", dir, dir), 0);
      if (!native) continue;
      cr_assert_eq(tu_sh("cd %s && ./low --help | grep -qx '  past_k \\[3,300,40\\] float32 (stored as bf16)'", dir), 0);
      cr_assert_eq(tu_sh("cd %s && ./low --info | grep -qx '  past_v \\[3,300,40\\] float32 (stored as bf16)'", dir), 0);
      cr_assert_eq(tu_sh("cd %s && ./low --info | grep -qx '  q \\[3,40\\] float32'", dir), 0);
      cr_assert_eq(tu_sh("cd %s && ./low --bench 2 > /dev/null", dir), 0, "--bench's zero fill");
    }
  }
  cr_assert_eq(tu_sh("cd %s && ./fp32 --info | grep -q 'stored as bf16'", dir), 1, "fp32 programs store fp32");
  tu_sh("rm -rf %s", dir);
  free(dir);
}

/* Only past_k and past_v qualify (q is A, kv_mask the mask and an elementwise
 * operand); not when another step reads them, not in fp32, not in a library. */
Test(precision_kvcache, which_inputs) {
  char got[8];
  stored(CIRCUIT, PRECISION_BF16, false, got);
  cr_assert_str_eq(got, "0101"); /* inputs in first-use order: q, past_k, kv_mask, past_v */
  stored(CIRCUIT, PRECISION_INT8, false, got);
  cr_assert_str_eq(got, "0101");
  stored(CIRCUIT, PRECISION_FP32, false, got);
  cr_assert_str_eq(got, "0000");
  stored(CIRCUIT, PRECISION_BF16, true, got);
  cr_assert_str_eq(got, "0000");
  char *also;
  cr_assert(asprintf(&also, "%s'v_sum' Einsum htd->\n  'past_v'\n", CIRCUIT) > 0);
  stored(also, PRECISION_BF16, false, got);
  cr_assert_str_eq(got, "0100");
  free(also);
}
