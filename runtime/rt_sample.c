/* rt_sample.c — the sample mode (rt_modes.h): `--sample N --seed S` for
 * character models compiled with `circc --vocab CHARS` (the bigram and MLP
 * name models) prints N names, one per line, each drawn character by character
 * from the model.
 *
 * The model's first int64 input of shape [B] or [B,C] is the context: row 0
 * holds the last C token ids (initially all '.', the end token), every other
 * row and every other input is zero. The next-character distribution is row 0
 * of the output named "log_probs" or "logits" (else the first output whose last
 * dim is strlen(vocab)), passed through a softmax — which leaves log-probs
 * unchanged, so either works. A name ends at '.' or after MAX_NAME characters.
 *
 * RNG: rt_core's rt_rng (xoshiro256** seeded through splitmix64 from S; portable,
 * so a seed gives the same names everywhere), one uniform u per character.
 * Token i is chosen when cum(i-1) <= u · Σp < cum(i), with p and its running
 * sum cum in double precision, in token order.
 * Returns 0 ok, 2 usage (no vocabulary, no context input or distribution
 * output, bad N), 3 bad input (the model rejected a run, non-finite or empty
 * distribution, out of memory, stdout failed). */
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "rt_core.h"
#include "rt_modes.h"

enum { MAX_NAME = 50, MAX_SAMPLE = 1000000 };

static const char *prog_of(const rt_model *m) { return m->name ? m->name : "model"; }

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
    rt_error(prog_of(m), "--sample needs a program compiled with a character vocabulary (circc --vocab CHARS)");
    return RT_EXIT_USAGE;
  }
  if (count < 0) {
    rt_error(prog_of(m), "--sample expects a non-negative number of names");
    return RT_EXIT_USAGE;
  }
  int nvocab = (int)strlen(m->vocab);
  int ci = context_input(m), oi = distribution_output(m, nvocab);
  if (ci < 0) {
    rt_error(prog_of(m), "--sample: the program has no int64 input of shape [B] or [B,C] to hold the context");
    return RT_EXIT_USAGE;
  }
  if (oi < 0) {
    rt_error(prog_of(m), "--sample: no float32 output 'log_probs' or 'logits' whose last dim is the vocabulary size (%s)",
                 m->vocab);
    return RT_EXIT_USAGE;
  }
  const char *dot = strchr(m->vocab, '.');
  int64_t end = dot ? dot - m->vocab : 0;
  int64_t nctx = m->inputs[ci].rank == 2 ? m->inputs[ci].shape[1] : 1;

  void **in, **out, *arena;
  bool ok = rt_alloc_buffers(m, &in, &out, &arena);
  int code = ok ? RT_EXIT_OK : RT_EXIT_BAD_INPUT;
  if (!ok) rt_error(prog_of(m), "--sample: out of memory");

  rt_rng rng;
  rt_rng_seed(&rng, seed);
  int64_t *ctx = ok ? in[ci] : NULL;
  const float *row = ok ? out[oi] : NULL;
  for (int n = 0; code == RT_EXIT_OK && n < count; n++) {
    char name[MAX_NAME + 1];
    int len = 0;
    for (int64_t k = 0; k < nctx; k++) ctx[k] = end;
    while (len < MAX_NAME) {
      const char *msg = m->run((const void *const *)in, out, arena);
      if (msg) {
        rt_error(prog_of(m), "%s", msg);
        code = RT_EXIT_BAD_INPUT;
        break;
      }
      int t = draw(row, nvocab, &rng);
      if (t < 0) {
        rt_error(prog_of(m), "--sample: output '%s' row 0 has no finite maximum (NaN, +inf or all -inf)",
                     m->outputs[oi].name);
        code = RT_EXIT_BAD_INPUT;
        break;
      }
      if (t == end) break;
      name[len++] = m->vocab[t];
      memmove(ctx, ctx + 1, (size_t)(nctx - 1) * sizeof *ctx);
      ctx[nctx - 1] = t;
    }
    if (code == RT_EXIT_OK) printf("%.*s\n", len, name);
  }
  if (fflush(stdout) != 0 && code == RT_EXIT_OK) {
    rt_error(prog_of(m), "--sample: cannot write to standard output");
    code = RT_EXIT_BAD_INPUT;
  }
  rt_free_buffers(m, in, out, arena);
  return code;
}

static const char *const REQUESTING[] = {"--sample"};

static int sample_requested(int argc, char **argv) { return rt_has_option(argc, argv, REQUESTING, 1); }

static void sample_help(const rt_model *m, const char *prog) {
  (void)m, (void)prog;   /* the same for every program */
  fputs("\nsampling:\n"
        "  --sample N               print N names sampled character by character (programs\n"
        "                           compiled with circc --vocab); no other input is needed\n"
        "  --seed S                 random stream of --sample (default 0; same S, same names)\n",
        stdout);
}

/* --sample N [--seed S] [--threads N] [-v] [--info]. The generic mode's
 * options that act on inputs, outputs or timing make no sense here: a clear
 * usage error rather than a silently ignored value. */
static int sample_main(const rt_model *m, int argc, char **argv) {
  static const rt_option OPTIONS[] = {
      {"--sample", true}, {"--seed", true},  {"--threads", true}, {"--info", false},  {"-v", false},
      {"-h", false},      {"--help", false}, {"--input", true},   {"--rtol", true},   {"--atol", true},
      {"--output", true}, {"--check", true}, {"--bench", true},
  };
  const char *prog = rt_prog(m, argc, argv);
  long count = 0, n;
  uint64_t seed = 0;
  int threads = 0;
  bool info = false, verbose = false;
  const char *conflict = NULL;
  for (int i = 1; i < argc; i++) {
    const char *val;
    int f = rt_next_option(prog, OPTIONS, (int)(sizeof OPTIONS / sizeof *OPTIONS), "", argc, argv, &i, &val);
    if (f < 0) return RT_EXIT_USAGE;
    const char *flag = OPTIONS[f].name;
    if (!strcmp(flag, "-h") || !strcmp(flag, "--help")) {
      return RT_MODE_HELP;
    } else if (!strcmp(flag, "--sample")) {
      if (!rt_parse_long(val, 1, MAX_SAMPLE, &count))
        return rt_usage_error(prog, "--sample expects a number of names from 1 to %d, found '%s'", MAX_SAMPLE, val);
    } else if (!strcmp(flag, "--seed")) {
      if (!rt_parse_seed(val, &seed))
        return rt_usage_error(prog, "--seed expects an integer from 0 to 2^64-1, found '%s'", val);
    } else if (!strcmp(flag, "--threads")) {
      if (!rt_parse_long(val, 1, RT_MAX_THREADS, &n))
        return rt_usage_error(prog, "--threads expects a number from 1 to %d, found '%s'", RT_MAX_THREADS, val);
      threads = (int)n;
    } else if (!strcmp(flag, "--info")) {
      info = true;
    } else if (!strcmp(flag, "-v")) {
      verbose = true;
    } else {
      conflict = flag;
    }
  }
  if (conflict)
    return rt_usage_error(prog, "--sample cannot be combined with %s (nor with --input, --output, --check, "
                          "--rtol, --atol or --bench)", conflict);
  threads = rt_set_threads(prog, threads);
  if (verbose) fprintf(stderr, "%s: %d thread%s\n", prog, threads, threads == 1 ? "" : "s");
  if (info) rt_print_info(m, prog, threads);
  return rt_sample(m, (int)count, seed);
}

const rt_mode rt_mode_sample = {"sample", sample_requested, sample_main, sample_help};
