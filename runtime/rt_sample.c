/* rt_sample.c — `--sample N --seed S` for character models compiled with
 * `circc --vocab CHARS` (the bigram and MLP name models): prints N names, one
 * per line, each drawn character by character from the model.
 *
 * The model's first int64 input of shape [B] or [B,C] is the context: row 0
 * holds the last C token ids (initially all '.', the end token), every other
 * row and every other input is zero. The next-character distribution is row 0
 * of the output named "log_probs" or "logits" (else the first output whose last
 * dim is strlen(vocab)), passed through a softmax — which leaves log-probs
 * unchanged, so either works. A name ends at '.' or after MAX_NAME characters.
 *
 * RNG (portable, so a seed gives the same names everywhere): xoshiro256**
 * (Blackman & Vigna 2018) whose four state words are the first four outputs of
 * splitmix64 started at S; a uniform double in [0,1) is (next() >> 11) · 2⁻⁵³.
 * Token i is chosen for the uniform u when cum(i-1) <= u · Σp < cum(i), with
 * p and its running sum cum in double precision, in token order.
 * Returns 0 ok, 2 usage (no vocabulary, no context input or distribution
 * output, bad N), 3 bad input (the model rejected a run, non-finite or empty
 * distribution, out of memory, stdout failed). */
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "circc_rt.h"

enum { RC_OK = 0, RC_USAGE = 2, RC_BAD_INPUT = 3, MAX_NAME = 50, ALIGN = 64 };


static void sample_error(const rt_model *m, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sample_error(const rt_model *m, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "%s: error: ", m->name ? m->name : "model");
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
}

/* The first int64 input of rank 1 or 2 with a non-empty row, or -1. */
static int context_input(const rt_model *m) {
  for (int i = 0; i < m->ninputs; i++) {
    const rt_tensor_desc *d = &m->inputs[i];
    if (d->dtype == RT_I64 && (d->rank == 1 || d->rank == 2) && d->shape[0] > 0 && (d->rank == 1 || d->shape[1] > 0))
      return i;
  }
  return -1;
}

/* The output holding next-character scores: float32, last dim = nvocab. */
static int distribution_output(const rt_model *m, int64_t nvocab) {
  int by_dim = -1;
  for (int i = 0; i < m->noutputs; i++) {
    const rt_tensor_desc *d = &m->outputs[i];
    if (d->dtype != RT_F32 || d->rank < 1 || d->shape[d->rank - 1] != nvocab) continue;
    if (!strcmp(d->name, "log_probs") || !strcmp(d->name, "logits")) return i;
    if (by_dim < 0) by_dim = i;
  }
  return by_dim;
}

/* 64-byte aligned, zeroed, at least one alignment unit. */
static void *alloc_zeroed(size_t bytes) {
  size_t n = (bytes + ALIGN - 1) / ALIGN * ALIGN;
  void *p = aligned_alloc(ALIGN, n ? n : ALIGN);
  if (p) memset(p, 0, n ? n : ALIGN);
  return p;
}

/* Draws a token from scores x[0..n) (softmax); -1 if no finite maximum. */
static int draw(const float *x, int n, rt_rng *rng) {
  double max = -INFINITY, sum = 0, cum = 0;
  for (int i = 0; i < n; i++) {
    if (isnan(x[i]) || x[i] == INFINITY) return -1;
    if (x[i] > max) max = x[i];
  }
  if (max == -INFINITY) return -1;
  for (int i = 0; i < n; i++) sum += exp((double)x[i] - max);
  double target = rt_rng_uniform(rng) * sum;
  int last = 0;
  for (int i = 0; i < n; i++) {
    double p = exp((double)x[i] - max);
    if (p > 0) last = i;
    cum += p;
    if (target < cum) return i;
  }
  return last;   /* rounding left target at the very top */
}

int rt_sample(const rt_model *m, int count, uint64_t seed) {
  if (!m->vocab || strlen(m->vocab) < 2) {
    sample_error(m, "--sample needs a program compiled with a character vocabulary (circc --vocab CHARS)");
    return RC_USAGE;
  }
  if (count < 0) {
    sample_error(m, "--sample expects a non-negative number of names");
    return RC_USAGE;
  }
  int nvocab = (int)strlen(m->vocab);
  int ci = context_input(m), oi = distribution_output(m, nvocab);
  if (ci < 0) {
    sample_error(m, "--sample: the program has no int64 input of shape [B] or [B,C] to hold the context");
    return RC_USAGE;
  }
  if (oi < 0) {
    sample_error(m, "--sample: no float32 output 'log_probs' or 'logits' whose last dim is the vocabulary size (%s)",
                 m->vocab);
    return RC_USAGE;
  }
  const char *dot = strchr(m->vocab, '.');
  int64_t end = dot ? dot - m->vocab : 0;
  int64_t nctx = m->inputs[ci].rank == 2 ? m->inputs[ci].shape[1] : 1;

  void **in = calloc((size_t)m->ninputs + 1, sizeof *in), **out = calloc((size_t)m->noutputs + 1, sizeof *out);
  void *arena = alloc_zeroed(m->arena_bytes);
  bool ok = in && out && arena;
  for (int i = 0; ok && i < m->ninputs; i++)
    ok = (in[i] = alloc_zeroed((size_t)m->inputs[i].numel * (m->inputs[i].dtype == RT_F32 ? 4 : 8))) != NULL;
  for (int i = 0; ok && i < m->noutputs; i++)
    ok = (out[i] = alloc_zeroed((size_t)m->outputs[i].numel * (m->outputs[i].dtype == RT_F32 ? 4 : 8))) != NULL;
  int code = ok ? RC_OK : RC_BAD_INPUT;
  if (!ok) sample_error(m, "--sample: out of memory");

  rt_rng rng;
  rt_rng_seed(&rng, seed);
  int64_t *ctx = ok ? in[ci] : NULL;
  const float *row = ok ? out[oi] : NULL;
  for (int n = 0; code == RC_OK && n < count; n++) {
    char name[MAX_NAME + 1];
    int len = 0;
    for (int64_t k = 0; k < nctx; k++) ctx[k] = end;
    while (len < MAX_NAME) {
      const char *msg = m->run((const void *const *)in, out, arena);
      if (msg) {
        sample_error(m, "%s", msg);
        code = RC_BAD_INPUT;
        break;
      }
      int t = draw(row, nvocab, &rng);
      if (t < 0) {
        sample_error(m, "--sample: output '%s' row 0 has no finite maximum (NaN, +inf or all -inf)",
                     m->outputs[oi].name);
        code = RC_BAD_INPUT;
        break;
      }
      if (t == end) break;
      name[len++] = m->vocab[t];
      memmove(ctx, ctx + 1, (size_t)(nctx - 1) * sizeof *ctx);
      ctx[nctx - 1] = t;
    }
    if (code == RC_OK) printf("%.*s\n", len, name);
  }
  if (fflush(stdout) != 0 && code == RC_OK) {
    sample_error(m, "--sample: cannot write to standard output");
    code = RC_BAD_INPUT;
  }
  for (int i = 0; in && i < m->ninputs; i++) free(in[i]);
  for (int i = 0; out && i < m->noutputs; i++) free(out[i]);
  free(in);
  free(out);
  free(arena);
  return code;
}
