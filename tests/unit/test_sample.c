/* test_sample.c — rt_sample (runtime/rt_sample.c) against hand-written
 * rt_models whose run() returns fixed scores: context handling (shift, start
 * with '.', rank-1 and rank-2 context inputs, other rows and inputs zero),
 * choice of the distribution output, the end token and the 50-character limit,
 * the documented RNG (expected names computed by an independent reference of
 * xoshiro256** + splitmix64), the softmax, and the error exit codes. */
#include <criterion/criterion.h>
#include <criterion/redirect.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "rt_modes.h"

#define VOCAB ".abcdefghijklmnopqrstuvwxyz"
enum { V = 27, B = 4, C = 3 };

static const int64_t SHAPE_CTX[] = {B, C}, SHAPE_CTX1[] = {B}, SHAPE_OUT[] = {B, V}, SHAPE_F[] = {2},
                     SHAPE_OTHER[] = {5};

/* Runs rt_sample with stdout captured; returns what it printed (malloc'd). */
static char *capture(const rt_model *m, int count, uint64_t seed, int *code) {
  fflush(stdout);
  FILE *tmp = tmpfile();
  cr_assert_not_null(tmp);
  int saved = dup(1);
  cr_assert(saved >= 0 && dup2(fileno(tmp), 1) >= 0);
  *code = rt_sample(m, count, seed);
  fflush(stdout);
  dup2(saved, 1);
  close(saved);
  long n = ftell(tmp);
  char *s = calloc((size_t)n + 1, 1);
  rewind(tmp);
  cr_assert_eq(fread(s, 1, (size_t)n, tmp), (size_t)n);
  fclose(tmp);
  return s;
}

static void fill(float *row, float v) {
  for (int i = 0; i < V; i++) row[i] = v;
}

/* Every row but row 0 of a [B,C] context must stay zero. */
static bool other_rows_zero(const int64_t *ctx, int64_t rowlen) {
  for (int64_t i = rowlen; i < B * rowlen; i++)
    if (ctx[i]) return false;
  return true;
}

/* "chain": after token c comes c+1, and after 'e' the end; run() checks that
 * the context row is exactly the last three tokens (with '.' padding). */
static const char *run_chain(const void *const *in, void *const *out, void *arena) {
  const int64_t *ctx = in[0];
  int64_t c = ctx[2];
  for (int k = 0; k < C; k++) {
    int64_t want = c - (C - 1 - k);
    if (ctx[k] != (want > 0 ? want : 0)) return rt_errorf("bad context %lld %lld %lld", (long long)ctx[0],
                                                          (long long)ctx[1], (long long)ctx[2]);
  }
  if (!other_rows_zero(ctx, C)) return "rows other than 0 must be zero";
  float *lp = out[0];
  fill(lp, -INFINITY);
  lp[c < 5 ? c + 1 : 0] = 0.0f;
  return NULL;
}

static const rt_tensor_desc CHAIN_IN[] = {{"contexts", RT_I64, 2, SHAPE_CTX, B * C}};
static const rt_tensor_desc LP_OUT[] = {{"log_probs", RT_F32, 2, SHAPE_OUT, B * V}};
static const rt_model CHAIN = {.name = "chain", .ninputs = 1, .noutputs = 1, .inputs = CHAIN_IN,
                               .outputs = LP_OUT, .arena_bytes = 100, .run = run_chain, .vocab = VOCAB};

Test(sample, context_shifts_and_ends_at_dot) {
  int code;
  char *s = capture(&CHAIN, 3, 7, &code);
  cr_assert_eq(code, 0);
  cr_assert_str_eq(s, "abcde\nabcde\nabcde\n");
  free(s);
}

Test(sample, zero_names_print_nothing) {
  int code;
  char *s = capture(&CHAIN, 0, 7, &code);
  cr_assert_eq(code, 0);
  cr_assert_str_eq(s, "");
  free(s);
}

/* "uniform": every character equally likely, scores as logits (all 0); also
 * has a float input and a second int64 input that must be zero. */
static const char *run_uniform(const void *const *in, void *const *out, void *arena) {
  const float *f = in[0];
  const int64_t *ys = in[2];
  if (f[0] != 0 || f[1] != 0 || ys[0] || ys[3]) return "other inputs must be zero";
  fill(out[1], 0.0f);
  return NULL;
}

static const rt_tensor_desc UNIFORM_IN[] = {{"scale", RT_F32, 1, SHAPE_F, 2},
                                            {"xs", RT_I64, 1, SHAPE_CTX1, B},
                                            {"ys", RT_I64, 1, SHAPE_CTX1, B}};
static const rt_tensor_desc UNIFORM_OUT[] = {{"loss", RT_F32, 0, SHAPE_OUT, 1},
                                             {"logits", RT_F32, 2, SHAPE_OUT, B * V}};
static const rt_model UNIFORM = {.name = "uniform", .ninputs = 3, .noutputs = 2, .inputs = UNIFORM_IN,
                                 .outputs = UNIFORM_OUT, .arena_bytes = 0, .run = run_uniform, .vocab = VOCAB};

/* Expected names from a reference implementation of the documented RNG
 * (xoshiro256** seeded by splitmix64; token = floor(u * 27) for uniform scores). */
Test(sample, documented_rng_gives_reference_names) {
  int code;
  char *s = capture(&UNIFORM, 5, 42, &code);
  cr_assert_eq(code, 0);
  cr_assert_str_eq(s,
                   "bjrxztsvtorguhswpvssbdkphmjuqfkpwyutualznruvxconwv\n"
                   "nheq\n"
                   "iotmpyyeuadenldslsorhfabyjlqmionuboeskfzuviyaayxbd\n"
                   "oduc\n"
                   "upvqcloauveujax\n");
  free(s);
  s = capture(&UNIFORM, 2, 1, &code);
  cr_assert_eq(code, 0);
  cr_assert_str_eq(s, "rnojrcajwnyyyrpxbmaalmpijejwtz\nwkjqffvjlb\n");
  free(s);
}

Test(sample, same_seed_same_names) {
  int c1, c2;
  char *a = capture(&UNIFORM, 20, 123, &c1), *b = capture(&UNIFORM, 20, 123, &c2);
  cr_assert(c1 == 0 && c2 == 0);
  cr_assert_str_eq(a, b);
  free(b);
  b = capture(&UNIFORM, 20, 124, &c2);
  cr_assert_str_neq(a, b);
  free(a);
  free(b);
}

/* "bigram": rank-1 context; after '.', 'a' has probability 3/4 and '.' 1/4
 * (scores are logits 0 and log 3, so the softmax matters); the other entries
 * are -inf. Mean name length is 3 (geometric). The output is found by its
 * last dim: neither name is log_probs or logits. */
static const char *run_geometric(const void *const *in, void *const *out, void *arena) {
  const int64_t *ctx = in[0];
  if (!other_rows_zero(ctx, 1)) return "rows other than 0 must be zero";
  float *x = out[1];
  fill(x, -INFINITY);
  x[0] = 0.0f;
  x[1] = logf(3.0f);
  return NULL;
}

static const rt_tensor_desc GEO_IN[] = {{"xs", RT_I64, 1, SHAPE_CTX1, B}};
static const rt_tensor_desc GEO_OUT[] = {{"other", RT_F32, 1, SHAPE_OTHER, 5}, {"scores", RT_F32, 2, SHAPE_OUT, B * V}};
static const rt_model GEOMETRIC = {.name = "geo", .ninputs = 1, .noutputs = 2, .inputs = GEO_IN, .outputs = GEO_OUT,
                                   .arena_bytes = 64, .run = run_geometric, .vocab = VOCAB};

Test(sample, softmax_of_scores_is_the_distribution) {
  int code;
  enum { N = 4000 };
  char *s = capture(&GEOMETRIC, N, 5, &code);
  cr_assert_eq(code, 0);
  long a = 0, lines = 0;
  for (char *p = s; *p; p++) {
    if (*p == 'a') a++;
    else if (*p == '\n') lines++;
    else cr_assert_fail("unexpected character '%c'", *p);
  }
  cr_assert_eq(lines, N);
  double mean = (double)a / N;   /* 3 ± 0.055 (one standard error) */
  cr_assert(mean > 2.75 && mean < 3.25, "mean name length %g, expected 3", mean);
  free(s);
}

/* "always a": the end token never comes, so names stop at 50 characters. */
static const char *run_always_a(const void *const *in, void *const *out, void *arena) {
  float *lp = out[0];
  fill(lp, -INFINITY);
  lp[1] = 0.0f;
  return NULL;
}

static const rt_model ALWAYS_A = {.name = "always_a", .ninputs = 1, .noutputs = 1, .inputs = CHAIN_IN,
                                  .outputs = LP_OUT, .arena_bytes = 0, .run = run_always_a, .vocab = VOCAB};

Test(sample, names_stop_at_50_characters) {
  int code;
  char *s = capture(&ALWAYS_A, 2, 1, &code);
  cr_assert_eq(code, 0);
  char want[2 * 51 + 1];
  memset(want, 'a', sizeof want);
  want[50] = want[101] = '\n';
  want[102] = 0;
  cr_assert_str_eq(s, want);
  free(s);
}

/* ---- errors ---- */

Test(sample, without_vocab_is_a_usage_error, .init = cr_redirect_stderr) {
  rt_model m = CHAIN;
  m.vocab = NULL;
  int code;
  char *s = capture(&m, 1, 1, &code);
  cr_assert_eq(code, 2);
  cr_assert_str_eq(s, "");
  free(s);
  fflush(stderr);
  cr_assert_stderr_eq_str("chain: error: --sample needs a program compiled with a character vocabulary "
                          "(circc --vocab CHARS)\n");
}

Test(sample, needs_an_int64_context_input, .init = cr_redirect_stderr) {
  static const rt_tensor_desc in[] = {{"scale", RT_F32, 1, SHAPE_F, 2}};
  rt_model m = CHAIN;
  m.inputs = in;
  int code;
  free(capture(&m, 1, 1, &code));
  cr_assert_eq(code, 2);
}

Test(sample, needs_an_output_of_vocabulary_width, .init = cr_redirect_stderr) {
  rt_model m = CHAIN;
  m.vocab = ".ab";   /* 3 characters, the output has 27 */
  int code;
  free(capture(&m, 1, 1, &code));
  cr_assert_eq(code, 2);
}

static const char *run_fails(const void *const *in, void *const *out, void *arena) {
  return rt_errorf("token id %d out of range", 99);
}

Test(sample, run_error_is_bad_input, .init = cr_redirect_stderr) {
  rt_model m = CHAIN;
  m.run = run_fails;
  int code;
  char *s = capture(&m, 3, 1, &code);
  cr_assert_eq(code, 3);
  cr_assert_str_eq(s, "");
  free(s);
  fflush(stderr);
  cr_assert_stderr_eq_str("chain: error: token id 99 out of range\n");
}

static const char *run_nan(const void *const *in, void *const *out, void *arena) {
  fill(out[0], NAN);
  return NULL;
}

Test(sample, nan_scores_are_bad_input, .init = cr_redirect_stderr) {
  rt_model m = CHAIN;
  m.run = run_nan;
  int code;
  free(capture(&m, 1, 1, &code));
  cr_assert_eq(code, 3);
}
