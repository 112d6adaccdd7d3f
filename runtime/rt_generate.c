/* rt_generate.c — text generation for language-model programs: the decode
 * circuit of a causal model (gpt2_import --decode) compiled with a tokenizer
 * (circc --lm gpt2-bpe:DIR | chars:FILE.json), so that
 *   ./gpt2 --text "ROMEO:" --generate 100 --top-k 40 --seed 7
 *   ./gpt2 --tokens 464,3290 --generate 18 --greedy --print-ids
 *   ./gpt2 --text "Paris is the capital of" --top 10
 * work. This is the generate mode (rt_modes.h): rt_main runs it when the
 * command line holds one of the options only generation has (REQUESTING).
 *
 * The program computes one new position per run, with a key/value cache:
 * inputs token [1] (or []) and pos [1] (or []) int64, kv_mask [T] (1 for
 * j < pos), past_k and past_v [L,H,T,D] float32 (which circc --precision
 * bf16/int8 programs hold as bf16: rows are rounded as they are stored); outputs logits [V] (or
 * [1,V]), new_k and new_v [L,H,D]. T is the longest sequence the program
 * handles. Every token — prompt tokens one at a time, then each
 * generated one — is one run at the next position; its new_k/new_v are then
 * stored at row pos of the cache (past_k/past_v are the cache itself), so no
 * prefix is ever recomputed. The logits after the last prompt token give the
 * first generated token, and so on. Prompt + generated tokens must fit in T
 * (which the program's input shapes give: circc -D SEQ=N for gpt2_import's
 * symbolic decode circuit).
 *
 * A full-sequence program (circc --bind-tokens on a model file) has instead
 * one input tokens [T] int64 and one output logits [T,V] float32, and no
 * cache: each run computes every position again, from the sequence so far
 * padded to T with one id; row pos is the distribution after position pos.
 * That is the model's only if a position never sees later ones (a causal
 * mask): the first run pads with another id than the rest, and if the
 * prompt's last row changes, a prompt shorter than T is refused (exit 3).
 *
 * Choosing a token from logits x (only ids < the tokenizer's vocabulary size
 * are candidates, in case the model pads its vocabulary):
 *   --greedy (or --temperature 0): the first id of largest x;
 *   else p_i = exp((x_i - max) / temperature) in double; --top-k K (< V) keeps
 *   the K largest, --top-p P (< 1) then the smallest prefix (by decreasing p)
 *   whose mass is at least P of what is left (at least one token). The draw
 *   walks the candidates — in id order without those two, else by decreasing
 *   logit (equal logits: lower id first) — and picks token i when
 *   cum(before i) <= u·Σp < cum(i), u uniform in [0,1).
 * RNG: rt_core's rt_rng (xoshiro256** seeded through splitmix64 from --seed;
 * portable: the same --seed gives the same text everywhere), one u per sampled
 * token.
 *
 * Output (stdout): the prompt's text, then each generated token's bytes as
 * soon as it is chosen (flushed), then a newline; --print-ids adds a line with
 * every id (prompt and generated), comma-separated; --top K prints K lines
 * "prob id 'token'" (the model's next-token distribution after the prompt,
 * temperature 1) before any text. Without a tokenizer only ids are printed.
 * -v prints ms per token (prompt and generation) on stderr.
 * Exit codes: 0 ok, 2 usage, 3 bad input (unknown character, token id out of
 * range, prompt + generated tokens longer than T, a failed run). */
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "rt_core.h"
#include "rt_modes.h"

static const char *g_prog = "model";   /* for messages */

/* What the command line asks for. */
typedef struct GenOptions {
  const char *text;              /* --text: the prompt as text, or NULL */
  const int64_t *tokens;         /* --tokens: the prompt as ids (ntokens of them) */
  int64_t ntokens;
  long generate;                 /* --generate N: tokens to generate */
  int greedy;                    /* --greedy: argmax instead of sampling */
  double temperature;            /* --temperature (1; 0 = greedy) */
  long top_k;                    /* --top-k (0: off) */
  double top_p;                  /* --top-p (1: off) */
  uint64_t seed;                 /* --seed */
  long top;                      /* --top K: print the K most likely next tokens (0: off) */
  int print_ids;                 /* --print-ids */
  int verbose;                   /* -v: ms per token on stderr */
  int threads;                   /* --threads (0: OpenMP's default) */
  const char *dump_logits;       /* --dump-logits FILE.npy: the prompt positions' logits, or NULL */
  const char **patch_path;       /* --patch NAME=@FILE: [npatches], NULL where not given */
} GenOptions;

/* ---- the program's decode interface ---- */

enum { IN_TOKEN, IN_POS, IN_MASK, IN_PAST_K, IN_PAST_V, NIN };
enum { OUT_LOGITS, OUT_K, OUT_V, NOUT };
static const char *const IN_NAME[NIN] = {"token", "pos", "kv_mask", "past_k", "past_v"};
static const char *const OUT_NAME[NOUT] = {"logits", "new_k", "new_v"};

/* Where the decode tensors are and their sizes. */
typedef struct Iface {
  bool full;                    /* a full-sequence program: in[IN_TOKEN] is tokens [T], out[OUT_LOGITS] logits [T,V] */
  int in[NIN], out[NOUT];       /* indices into the model's inputs / outputs */
  int64_t L, H, T, D, V;
} Iface;

static int find_desc(const rt_tensor_desc *d, int n, const char *name) {
  for (int i = 0; i < n; i++)
    if (d[i].name && !strcmp(d[i].name, name)) return i;
  return -1;
}

/* Fills f and returns NULL if m has the decode interface, else what is wrong. */
static const char *decode_iface(const rt_model *m, Iface *f) {
  static char why[256];
  for (int k = 0; k < NIN; k++)
    if ((f->in[k] = find_desc(m->inputs, m->ninputs, IN_NAME[k])) < 0)
      return snprintf(why, sizeof why, "no input '%s'", IN_NAME[k]), why;
  for (int k = 0; k < NOUT; k++)
    if ((f->out[k] = find_desc(m->outputs, m->noutputs, OUT_NAME[k])) < 0)
      return snprintf(why, sizeof why, "no output '%s'", OUT_NAME[k]), why;
  const rt_tensor_desc *tok = &m->inputs[f->in[IN_TOKEN]], *pos = &m->inputs[f->in[IN_POS]];
  const rt_tensor_desc *mask = &m->inputs[f->in[IN_MASK]];
  const rt_tensor_desc *pk = &m->inputs[f->in[IN_PAST_K]], *pv = &m->inputs[f->in[IN_PAST_V]];
  const rt_tensor_desc *lg = &m->outputs[f->out[OUT_LOGITS]];
  const rt_tensor_desc *nk = &m->outputs[f->out[OUT_K]], *nv = &m->outputs[f->out[OUT_V]];
  if (tok->dtype != RT_I64 || tok->numel != 1 || pos->dtype != RT_I64 || pos->numel != 1)
    return "token and pos must be int64 tensors of one element";
  if (pk->rank != 4 || pk->dtype != RT_F32) return "past_k must be float32 [L,H,T,D]";
  f->L = pk->shape[0], f->H = pk->shape[1], f->T = pk->shape[2], f->D = pk->shape[3];
  for (int k = 0; k < 4; k++)
    if (pv->rank != 4 || pv->dtype != RT_F32 || pv->shape[k] != pk->shape[k]) return "past_v must have past_k's shape";
  if (mask->rank != 1 || mask->shape[0] != f->T || mask->dtype != RT_F32)
    return "kv_mask must be float32 [T] (T = past_k's third dimension)";
  if (nk->dtype != RT_F32 || nk->numel != f->L * f->H * f->D || nv->dtype != RT_F32 || nv->numel != nk->numel)
    return "new_k and new_v must be float32 [L,H,D]";
  if (lg->dtype != RT_F32 || lg->rank < 1 || lg->numel != lg->shape[lg->rank - 1] || lg->numel < 1)
    return "logits must be float32 [V]";
  if (f->T < 1) return "the cache holds no position (T = 0)";
  f->V = lg->numel;
  return NULL;
}

/* Fills f and returns NULL if m is a full-sequence program (tokens [T] int64
 * → logits [T,V] float32, nothing else), else what is wrong. */
static const char *full_iface(const rt_model *m, Iface *f) {
  *f = (Iface){.full = true};
  f->in[IN_TOKEN] = find_desc(m->inputs, m->ninputs, "tokens");
  f->out[OUT_LOGITS] = find_desc(m->outputs, m->noutputs, "logits");
  if (m->ninputs != 1 || f->in[IN_TOKEN] < 0 || m->noutputs != 1 || f->out[OUT_LOGITS] < 0)
    return "it needs one input 'tokens' and one output 'logits'";
  const rt_tensor_desc *tok = &m->inputs[f->in[IN_TOKEN]], *lg = &m->outputs[f->out[OUT_LOGITS]];
  if (tok->dtype != RT_I64 || tok->rank != 1 || tok->shape[0] < 1) return "tokens must be int64 [T]";
  if (lg->dtype != RT_F32 || lg->rank != 2 || lg->shape[0] != tok->shape[0] || lg->shape[1] < 1)
    return "logits must be float32 [T,V] (T = the length of tokens)";
  f->T = tok->shape[0], f->V = lg->shape[1];
  return NULL;
}

/* The decode interface, else the full-sequence one; NULL or what is wrong with both. */
static const char *lm_iface(const rt_model *m, Iface *f) {
  static char why[600];
  const char *decode = decode_iface(m, f), *full;
  if (!decode || !(full = full_iface(m, f))) return NULL;
  snprintf(why, sizeof why, "%s; as a full-sequence program: %s", decode, full);
  return why;
}

/* ---- options ---- */

/* the options only generation has (--seed, --threads and -v are other modes' too) */
static const char *const REQUESTING[] = {"--text",  "--tokens", "--generate",  "--top",      "--greedy",
                                         "--top-k", "--top-p",  "--temperature", "--print-ids", "--dump-logits"};

static int generate_requested(int argc, char **argv) {
  return rt_has_option(argc, argv, REQUESTING, (int)(sizeof REQUESTING / sizeof *REQUESTING));
}

static void generate_help(const rt_model *m, const char *prog) {
  (void)prog;
  Iface f;
  if (lm_iface(m, &f)) return;
  printf("\nlanguage model (max length T = %lld tokens, vocabulary %lld%s):\n", (long long)f.T, (long long)f.V,
         m->tokenizer_len ? "" : ", no tokenizer: ids only");
  fputs("  --text STR               the prompt as text (needs a tokenizer: circc --lm); --text -\n"
        "                           reads it from stdin, every byte (echo's newline too)\n"
        "  --tokens ID,ID,...       the prompt as token ids\n"
        "  --generate N             generate N tokens, printing each as soon as it is chosen\n"
        "  --greedy                 always the most likely token (default: sample)\n"
        "  --temperature F          sampling temperature (default 1; 0 = greedy)\n"
        "  --top-k K, --top-p P     sample among the K most likely tokens / the smallest set of\n"
        "                           probability >= P (nucleus)\n"
        "  --seed S                 random stream (xoshiro256** seeded by splitmix64(S); default 0)\n"
        "  --top K                  print the K most likely next tokens after the prompt:\n"
        "                           \"prob id 'token'\"\n"
        "  --print-ids              print every id (prompt and generated), comma-separated\n"
        "  --dump-logits FILE.npy   write the logits after each prompt token, [P,V] float32\n"
        "  --threads N, -v          OpenMP threads; -v prints ms per token on stderr\n"
        "  --patch NAME=@FILE.npy   the node NAME's value at every step (programs built with circc --patch)\n"
        "  prompt + generated tokens must fit in T (exit 3 otherwise)\n",
        stdout);
}

/* "464,3290" (spaces allowed around ids) into a malloc'd array; -1 if malformed. */
static int64_t parse_ids(const char *s, int64_t **ids) {
  int64_t n = 1;
  for (const char *p = s; *p; p++) n += *p == ',';
  *ids = malloc((size_t)n * sizeof **ids);
  if (!*ids) return -1;
  const char *p = s;
  for (int64_t i = 0; i < n; i++) {
    while (*p == ' ') p++;
    char *end;
    errno = 0;
    long long v = strtoll(p, &end, 10);
    if (end == p || *p == '-' || *p == '+' || errno) return -1;
    p = end;
    while (*p == ' ') p++;
    if (*p != (i + 1 < n ? ',' : '\0')) return -1;
    p++;
    (*ids)[i] = v;
  }
  return n;
}

static int generate_text(const rt_model *m, const GenOptions *o);

/* --text -: every byte of stdin, as a string (malloc'd); NULL with *code set
 * (exit 3) if it cannot be read or holds a NUL byte. */
static char *read_stdin(int *code) {
  size_t len = 0, cap = 4096;
  char *s = malloc(cap);
  while (s) {
    len += fread(s + len, 1, cap - 1 - len, stdin);
    if (len < cap - 1) break;
    char *t = realloc(s, cap *= 2);
    if (!t) free(s);
    s = t;
  }
  const char *why = !s ? "out of memory" : ferror(stdin) ? "cannot read standard input"
                    : memchr(s, '\0', len)           ? "standard input holds a NUL byte, not text"
                                                      : NULL;
  if (why) {
    rt_error(g_prog, "--text -: %s", why);
    free(s);
    *code = RT_EXIT_BAD_INPUT;
    return NULL;
  }
  s[len] = '\0';
  return s;
}

static int generate_main(const rt_model *m, int argc, char **argv) {
  static const rt_option OPTIONS[] = {
      {"--text", true},   {"--tokens", true},    {"--generate", true}, {"--greedy", false}, {"--temperature", true},
      {"--top-k", true},  {"--top-p", true},     {"--seed", true},     {"--top", true},     {"--print-ids", false},
      {"--threads", true}, {"--dump-logits", true}, {"-v", false},     {"-h", false},       {"--help", false},
      {"--patch", true},
  };
  g_prog = rt_prog(m, argc, argv);
  GenOptions o = {.temperature = 1, .top_p = 1, .patch_path = calloc((size_t)m->npatches + 1, sizeof(char *))};
  if (!o.patch_path) return rt_error(g_prog, "out of memory"), RT_EXIT_BAD_INPUT;
  bool sampling_opt = false, has_seed = false;
  int64_t *ids = NULL;
  int code = -1;
  for (int i = 1; i < argc && code < 0; i++) {
    const char *val;
    int f = rt_next_option(g_prog, OPTIONS, (int)(sizeof OPTIONS / sizeof *OPTIONS),
                           " (generation takes only the language-model options)", argc, argv, &i, &val);
    if (f < 0) {
      code = RT_EXIT_USAGE;
      break;
    }
    const char *flag = OPTIONS[f].name;
    long n = 0;
    if (!strcmp(flag, "-h") || !strcmp(flag, "--help")) {
      printf("usage: %s (--text STR | --tokens ID,...) [--generate N] [--greedy | --temperature F --top-k K\n"
             "       --top-p P --seed S] [--top K] [--print-ids] [--threads N] [-v]\n",
             g_prog);
      generate_help(m, g_prog);
      code = RT_EXIT_OK;
    } else if (!strcmp(flag, "--text")) {
      if (o.text || ids) code = rt_usage_error(g_prog, "give one prompt: --text or --tokens, once");
      o.text = val;
    } else if (!strcmp(flag, "--tokens")) {
      if (o.text || ids) code = rt_usage_error(g_prog, "give one prompt: --text or --tokens, once");
      else if ((o.ntokens = parse_ids(val, &ids)) < 0)
        code = rt_usage_error(g_prog, "--tokens expects comma-separated non-negative ids like 464,3290, found '%s'", val);
      o.tokens = ids;
    } else if (!strcmp(flag, "--generate")) {
      if (!rt_parse_long(val, 0, 1L << 30, &n)) code = rt_usage_error(g_prog, "--generate expects a number of tokens, found '%s'", val);
      o.generate = n;
    } else if (!strcmp(flag, "--greedy")) {
      o.greedy = 1;
    } else if (!strcmp(flag, "--temperature")) {
      sampling_opt = true;
      if (!rt_parse_double(val, &o.temperature) || o.temperature < 0)
        code = rt_usage_error(g_prog, "--temperature expects a number >= 0, found '%s'", val);
    } else if (!strcmp(flag, "--top-k")) {
      sampling_opt = true;
      if (!rt_parse_long(val, 1, 1L << 30, &n)) code = rt_usage_error(g_prog, "--top-k expects a number >= 1, found '%s'", val);
      o.top_k = n;
    } else if (!strcmp(flag, "--top-p")) {
      sampling_opt = true;
      if (!rt_parse_double(val, &o.top_p) || !(o.top_p > 0 && o.top_p <= 1))
        code = rt_usage_error(g_prog, "--top-p expects a number in (0, 1], found '%s'", val);
    } else if (!strcmp(flag, "--seed")) {
      if (!rt_parse_seed(val, &o.seed))
        code = rt_usage_error(g_prog, "--seed expects an integer from 0 to 2^64-1, found '%s'", val);
      has_seed = true;
    } else if (!strcmp(flag, "--top")) {
      if (!rt_parse_long(val, 1, 1L << 30, &n)) code = rt_usage_error(g_prog, "--top expects a number >= 1, found '%s'", val);
      o.top = n;
    } else if (!strcmp(flag, "--print-ids")) {
      o.print_ids = 1;
    } else if (!strcmp(flag, "--threads")) {
      if (!rt_parse_long(val, 1, RT_MAX_THREADS, &n))
        code = rt_usage_error(g_prog, "--threads expects a number from 1 to %d, found '%s'", RT_MAX_THREADS, val);
      o.threads = (int)n;
    } else if (!strcmp(flag, "--dump-logits")) {
      o.dump_logits = val;
    } else if (!strcmp(flag, "--patch")) {
      const char *path;
      int k = m->npatches ? rt_parse_binding(g_prog, flag, val, m->patches, m->npatches, "patch", &path) : -1;
      if (!m->npatches) code = rt_usage_error(g_prog, "--patch: this program has no patches (circc --patch PATTERN)");
      else if (k < 0) code = RT_EXIT_USAGE;
      else o.patch_path[k] = path;
    } else {
      o.verbose = 1;   /* -v */
    }
  }
  if (code < 0 && !o.text && !ids) code = rt_usage_error(g_prog, "no prompt: give --text STR or --tokens ID,ID,...");
  else if (code < 0 && !o.generate && !o.top && !o.dump_logits)
    code = rt_usage_error(g_prog, "nothing to do: give --generate N or --top K");
  else if (code < 0 && o.greedy && (sampling_opt || has_seed))
    code = rt_usage_error(g_prog, "--greedy cannot be combined with --temperature, --top-k, --top-p or --seed");
  char *piped = NULL;   /* --text -: the prompt read from stdin */
  if (code < 0 && o.text && !strcmp(o.text, "-")) o.text = piped = read_stdin(&code);
  if (code < 0) code = generate_text(m, &o);
  free(piped);
  free(ids);
  free(o.patch_path);
  return code;
}


/* ---- choosing tokens ---- */

typedef struct Cand {
  double p;
  int64_t id;
} Cand;

/* a ranks before b: larger p, then lower id */
static bool cand_before(const Cand *a, const Cand *b) { return a->p > b->p || (a->p == b->p && a->id < b->id); }

static int cand_cmp(const void *x, const void *y) {
  const Cand *a = x, *b = y;
  return cand_before(a, b) ? -1 : cand_before(b, a) ? 1 : 0;
}

/* Moves the k best of c[0..n) to c[0..k), in rank order (a heap of the k best,
 * whose root is the worst of them, then a sort). */
static void best_k(Cand *c, int64_t n, int64_t k) {
  if (k >= n) {
    qsort(c, (size_t)n, sizeof *c, cand_cmp);
    return;
  }
  for (int64_t i = 0; i < n; i++) {
    int64_t at;
    if (i < k) {          /* sift up */
      at = i;
      Cand x = c[i];
      while (at > 0 && cand_before(&c[(at - 1) / 2], &x)) c[at] = c[(at - 1) / 2], at = (at - 1) / 2;
      c[at] = x;
      continue;
    }
    if (!cand_before(&c[i], &c[0])) continue;
    Cand x = c[i];        /* replace the root, sift down */
    at = 0;
    for (;;) {
      int64_t l = 2 * at + 1, r = l + 1, w = at;
      const Cand *wc = &x;
      if (l < k && cand_before(wc, &c[l])) w = l, wc = &c[l];
      if (r < k && cand_before(wc, &c[r])) w = r;
      if (w == at) break;
      c[at] = c[w];
      at = w;
    }
    c[at] = x;
  }
  qsort(c, (size_t)k, sizeof *c, cand_cmp);
}

/* The candidates {x_i, i} of logits x[0..n) into c and their maximum; false
 * if x has a NaN or +inf or no finite maximum. */
static bool logits_in(const float *x, int64_t n, Cand *c, double *max) {
  *max = -INFINITY;
  for (int64_t i = 0; i < n; i++) {
    if (isnan(x[i]) || x[i] == INFINITY) return false;
    if (x[i] > *max) *max = x[i];
    c[i] = (Cand){x[i], i};
  }
  return *max > -INFINITY;
}

/* The next token from logits x[0..n), or -1 for non-finite logits. Candidates
 * are ranked by logit (the same order as by p, exp being monotonic), so only
 * the kept ones need exp. */
static int64_t choose(const GenOptions *o, const float *x, int64_t n, Cand *c, rt_rng *rng) {
  if (o->greedy || o->temperature == 0) {
    int64_t best = -1;
    for (int64_t i = 0; i < n; i++) {
      if (isnan(x[i])) return -1;
      if (best < 0 || x[i] > x[best]) best = i;
    }
    return best >= 0 && isfinite(x[best]) ? best : -1;
  }
  double max;
  if (!logits_in(x, n, c, &max)) return -1;
  int64_t keep = n;
  if ((o->top_k > 0 && o->top_k < n) || o->top_p < 1) {
    keep = o->top_k > 0 && o->top_k < n ? o->top_k : n;
    best_k(c, n, keep);
  }
  double sum = 0, cum = 0;
  for (int64_t i = 0; i < keep; i++) sum += c[i].p = exp((c[i].p - max) / o->temperature);
  if (o->top_p < 1) {   /* the smallest prefix holding top_p of the mass */
    int64_t j = 0;
    while (j < keep && (cum += c[j].p) < o->top_p * sum) j++;
    keep = j < keep ? j + 1 : keep;
    sum = 0, cum = 0;
    for (int64_t i = 0; i < keep; i++) sum += c[i].p;
  }
  double target = rt_rng_uniform(rng) * sum;
  int64_t last = c[0].id;
  for (int64_t i = 0; i < keep; i++) {
    if (c[i].p > 0) last = c[i].id;
    cum += c[i].p;
    if (target < cum) return c[i].id;
  }
  return last;   /* rounding left target at the very top */
}

/* ---- output ---- */

/* Whether s[0..n) is well-formed UTF-8 (no overlongs, surrogates or > U+10FFFF). */
static bool utf8_ok(const unsigned char *s, size_t n) {
  for (size_t i = 0; i < n;) {
    unsigned c = s[i];
    size_t len = c < 0x80 ? 1 : (c & 0xe0) == 0xc0 ? 2 : (c & 0xf0) == 0xe0 ? 3 : (c & 0xf8) == 0xf0 ? 4 : 0;
    if (!len || i + len > n) return false;
    uint32_t cp = len == 1 ? c : c & (0x7f >> len);
    for (size_t k = 1; k < len; k++) {
      if ((s[i + k] & 0xc0) != 0x80) return false;
      cp = cp << 6 | (s[i + k] & 0x3f);
    }
    static const uint32_t MIN[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < MIN[len] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return false;
    i += len;
  }
  return true;
}

/* 'token' with quotes, backslashes and control bytes escaped (non-UTF-8 bytes as \xNN). */
static void print_quoted(const char *s, size_t n) {
  bool raw_high = utf8_ok((const unsigned char *)s, n);
  putchar('\'');
  for (size_t i = 0; i < n; i++) {
    unsigned char ch = (unsigned char)s[i];
    if (ch == '\'' || ch == '\\') printf("\\%c", ch);
    else if (ch == '\n') fputs("\\n", stdout);
    else if (ch == '\t') fputs("\\t", stdout);
    else if (ch == '\r') fputs("\\r", stdout);
    else if (ch < 0x20 || ch == 0x7f || (ch >= 0x80 && !raw_high)) printf("\\x%02x", ch);
    else putchar(ch);
  }
  putchar('\'');
}

/* --top K: the K most likely next tokens, "prob id 'token'". */
static bool print_top(const GenOptions *o, const rt_tokenizer *tok, const float *x, int64_t n, Cand *c) {
  double max, sum = 0;
  if (!logits_in(x, n, c, &max)) return false;
  for (int64_t i = 0; i < n; i++) sum += exp(c[i].p - max);
  int64_t k = o->top < n ? o->top : n;
  best_k(c, n, k);
  for (int64_t i = 0; i < k; i++) {
    printf("%.6f %lld", exp(c[i].p - max) / sum, (long long)c[i].id);
    size_t len;
    const char *s = tok ? rt_token_bytes(tok, c[i].id, &len) : NULL;
    if (s) {
      putchar(' ');
      print_quoted(s, len);
    }
    putchar('\n');
  }
  return true;
}

static void print_ids(const int64_t *ids, int64_t n) {
  for (int64_t i = 0; i < n; i++) printf(i ? ",%lld" : "%lld", (long long)ids[i]);
  putchar('\n');
}

/* Writes rows [n,V] float32 as a .npy file. */
static bool write_logits(const char *path, const float *rows, int64_t n, int64_t V) {
  const int64_t shape[2] = {n, V};
  bool ok = rt_npy_write(path, RT_F32, 2, shape, rows);
  if (!ok) rt_error(g_prog, "--dump-logits: cannot write %s: %s", path, strerror(errno));
  return ok;
}

/* ---- the decode loop ---- */

typedef struct Gen {
  const rt_model *m;
  Iface f;
  void **in, **out;
  void *arena;
  const float *logits;          /* after step(): the logits after its position */
  int64_t pad;                  /* full-sequence programs: the id after the sequence */
  double run_ms;                /* time inside step(), summed */
} Gen;

/* Runs the program for `token` at position pos and stores its keys and values
 * at row pos of the cache (a full-sequence program runs seq[0..pos], whose last
 * id is token, padded with g->pad). g->logits is then the distribution after pos. */
static bool step(Gen *g, int64_t pos, int64_t token, const int64_t *seq) {
  const Iface *f = &g->f;
  double t0 = rt_now_ms();
  int64_t *tokens = g->in[f->in[IN_TOKEN]];
  if (f->full) {
    for (int64_t j = 0; j < f->T; j++) tokens[j] = j <= pos ? seq[j] : g->pad;
  } else {
    *tokens = token;
    *(int64_t *)g->in[f->in[IN_POS]] = pos;
    float *mask = g->in[f->in[IN_MASK]];
    for (int64_t j = 0; j < f->T; j++) mask[j] = j < pos;
  }
  const char *msg = g->m->run((const void *const *)g->in, g->out, g->arena);
  if (msg) {
    rt_error(g_prog, "the run at position %lld failed: %s", (long long)pos, msg);
    return false;
  }
  g->logits = (const float *)g->out[f->out[OUT_LOGITS]] + (f->full ? pos * f->V : 0);
  for (int kv = 0; kv < 2 && !f->full; kv++) {
    int i = f->in[kv ? IN_PAST_V : IN_PAST_K];
    unsigned char *cache = g->in[i];
    const float *row = g->out[f->out[kv ? OUT_V : OUT_K]];
    size_t es = rt_input_elem_size(g->m, i);
    for (int64_t lh = 0; lh < f->L * f->H; lh++) {
      unsigned char *at = cache + (size_t)((lh * f->T + pos) * f->D) * es;
      if (rt_input_bf16(g->m, i)) rt_bf16_round(row + lh * f->D, (uint16_t *)at, f->D); /* as --input would */
      else memcpy(at, row + lh * f->D, (size_t)f->D * sizeof(float));
    }
  }
  g->run_ms += rt_now_ms() - t0;
  return true;
}

static int generate(Gen *g, const GenOptions *o, rt_tokenizer *tok, int64_t *seq, int64_t P, Cand *cand) {
  const Iface *f = &g->f;
  /* ids the tokenizer cannot decode (a padded vocabulary) are never chosen */
  int64_t nchoice = tok && rt_tokenizer_vocab_size(tok) < f->V ? rt_tokenizer_vocab_size(tok) : f->V;
  float *dump = o->dump_logits ? malloc((size_t)(P * f->V) * sizeof *dump) : NULL;
  if (o->dump_logits && !dump) {
    rt_error(g_prog, "out of memory");
    return RT_EXIT_BAD_INPUT;
  }
  /* One untimed run first, at the last position this generation runs: it
   * starts the threads (-v's timings exclude it) and fails before any output if
   * the program cannot run that far (e.g. compiled with a cache longer than the
   * model's position table: circc -D SEQ=N beyond n_positions). Its cache row is
   * cleared again, so every result is as without it. A full-sequence program
   * runs the prompt padded with id 1 here and with id 0 after: the prompt's
   * last row must not change (its positions must not see later ones). */
  int64_t last = f->full ? P - 1 : o->generate > 1 ? P + o->generate - 2 : P - 1;
  float *warm = f->full && P < f->T ? malloc((size_t)f->V * sizeof *warm) : NULL;
  g->pad = 1 % f->V;
  if ((f->full && P < f->T && !warm) || !step(g, last, seq[0], seq)) {
    if (f->full && P < f->T && !warm) rt_error(g_prog, "out of memory");
    free(dump);
    return RT_EXIT_BAD_INPUT;
  }
  if (warm) memcpy(warm, g->logits, (size_t)f->V * sizeof *warm);
  for (int kv = 0; kv < 2 && !f->full; kv++) {
    size_t es = rt_input_elem_size(g->m, f->in[kv ? IN_PAST_V : IN_PAST_K]);
    unsigned char *cache = g->in[f->in[kv ? IN_PAST_V : IN_PAST_K]];
    for (int64_t lh = 0; lh < f->L * f->H; lh++) memset(cache + (size_t)((lh * f->T + last) * f->D) * es, 0, (size_t)f->D * es);
  }
  g->pad = 0;
  g->run_ms = 0;
  double t0 = rt_now_ms();
  for (int64_t i = f->full ? P - 1 : 0; i < P; i++) {   /* a full-sequence program: one run */
    if (!step(g, i, seq[i], seq)) {
      free(dump), free(warm);
      return RT_EXIT_BAD_INPUT;
    }
    if (dump && f->full) memcpy(dump, g->out[f->out[OUT_LOGITS]], (size_t)(P * f->V) * sizeof *dump);
    else if (dump) memcpy(dump + i * f->V, g->logits, (size_t)f->V * sizeof *dump);
  }
  double prompt_ms = rt_now_ms() - t0;
  bool causal = true;
  for (int64_t j = 0; warm && j < f->V; j++) causal &= fabsf(warm[j] - g->logits[j]) <= 1e-5f * (1 + fabsf(g->logits[j]));
  free(warm);
  if (!causal) {
    rt_error(g_prog, "the program's positions see later ones (no causal mask), so a prompt shorter than T = %lld "
             "tokens has no next-token distribution: give exactly %lld", (long long)f->T, (long long)f->T);
    free(dump);
    return RT_EXIT_BAD_INPUT;
  }
  bool ok = !dump || write_logits(o->dump_logits, dump, P, f->V);
  free(dump);
  if (!ok) return RT_EXIT_BAD_INPUT;
  if (o->top && !print_top(o, tok, g->logits, nchoice, cand)) {
    rt_error(g_prog, "the logits after the prompt have no finite maximum (NaN, +inf or all -inf)");
    return RT_EXIT_BAD_INPUT;
  }
  if (tok && o->generate) {   /* the prompt's text */
    size_t len = rt_decode(tok, seq, P, NULL, 0);
    char *text = len == RT_DECODE_ERROR ? NULL : malloc(len + 1);
    if (!text || rt_decode(tok, seq, P, text, len + 1) != len) {
      free(text);
      rt_error(g_prog, "cannot decode the prompt: %s", len == RT_DECODE_ERROR ? rt_tokenizer_error() : "out of memory");
      return RT_EXIT_BAD_INPUT;
    }
    fwrite(text, 1, len, stdout);
    fflush(stdout);
    free(text);
  }
  rt_rng rng;
  uint64_t seed = o->seed;
  rt_rng_seed(&rng, seed);
  double gen_run0 = g->run_ms;
  t0 = rt_now_ms();
  for (int64_t n = 0; n < o->generate; n++) {
    int64_t id = choose(o, g->logits, nchoice, cand, &rng);
    if (id < 0) {
      rt_error(g_prog, "the logits at position %lld have no finite maximum (NaN, +inf or all -inf)", (long long)(P + n - 1));
      return RT_EXIT_BAD_INPUT;
    }
    seq[P + n] = id;
    size_t len;
    const char *s = tok ? rt_token_bytes(tok, id, &len) : NULL;
    if (s) {
      fwrite(s, 1, len, stdout);
      fflush(stdout);
    }
    if (n + 1 < o->generate && !step(g, P + n, id, seq)) return RT_EXIT_BAD_INPUT;
  }
  double gen_ms = rt_now_ms() - t0;
  if (tok && o->generate) putchar('\n');
  if (o->print_ids || (!tok && o->generate)) print_ids(seq, P + o->generate);
  if (o->verbose) {
    int threads = rt_threads();
    fprintf(stderr, "%s: %d thread%s; prompt: %lld token%s in %.3f ms (%.4g ms/token)", g_prog, threads,
            threads == 1 ? "" : "s", (long long)P, P == 1 ? "" : "s", prompt_ms, prompt_ms / (double)P);
    if (o->generate)
      fprintf(stderr, "; generation: %ld token%s in %.3f ms (%.4g ms/token, %.4g ms/token in the model)", o->generate,
              o->generate == 1 ? "" : "s", gen_ms, gen_ms / (double)o->generate,
              o->generate > 1 ? (g->run_ms - gen_run0) / (double)(o->generate - 1) : 0.0);
    fputc('\n', stderr);
  }
  return RT_EXIT_OK;
}

static int generate_text(const rt_model *m, const GenOptions *o) {
  Gen g = {.m = m};
  const char *why = lm_iface(m, &g.f);
  if (why) {
    rt_error(g_prog, "this program cannot generate text: %s; it needs the decode circuit of a language model "
              "(gpt2_import --decode, then circc --lm gpt2-bpe:DIR or chars:FILE.json) or a full-sequence one "
              "(circc --bind-tokens)", why);
    return RT_EXIT_USAGE;
  }
  const Iface *f = &g.f;
  rt_tokenizer *tok = NULL;
  if (m->tokenizer && m->tokenizer_len && !(tok = rt_tokenizer_open(m->tokenizer, m->tokenizer_len))) {
    rt_error(g_prog, "the program's tokenizer table is unusable: %s", rt_tokenizer_error());
    return RT_EXIT_BAD_INPUT;
  }
  if (o->text && !tok) {
    rt_error(g_prog, "--text needs a tokenizer, and this program has none (compile it with circc --lm); use --tokens");
    return RT_EXIT_USAGE;
  }
  if (o->top_k > f->V) {
    rt_error(g_prog, "--top-k %ld exceeds the vocabulary size %lld", o->top_k, (long long)f->V);
    rt_tokenizer_free(tok);
    return RT_EXIT_USAGE;
  }
  rt_set_threads(g_prog, o->threads);
  /* the prompt: the text's tokens (<|endoftext|> for an empty text, as GPT-2
   * starts unconditional samples), or the ids */
  const int64_t *prompt = o->tokens;
  int64_t P = o->ntokens, *encoded = NULL;
  if (o->text) {
    size_t len = strlen(o->text);
    encoded = malloc((len + 1) * sizeof *encoded);
    P = encoded ? rt_encode(tok, o->text, len, encoded, (int64_t)len + 1) : -1;
    if (P < 0) rt_error(g_prog, "--text: %s", encoded ? rt_tokenizer_error() : "out of memory");
    else if (P == 0 && (encoded[0] = rt_tokenizer_eot(tok)) >= 0) P = 1;
    else if (P == 0) {
      rt_error(g_prog, "--text: the prompt is empty (give at least one character)");
      P = -1;
    }
    prompt = encoded;
  }
  if (P < 0) {
    free(encoded);
    rt_tokenizer_free(tok);
    return RT_EXIT_BAD_INPUT;
  }
  if (P > f->T || o->generate > f->T - P) {
    rt_error(g_prog, "the prompt (%lld token%s) and --generate %ld need %lld positions, but the program holds at most %lld "
              "(T); compile it with a larger circc -D SEQ=N (or gpt2_import --seq; at most the model's n_positions)",
              (long long)P, P == 1 ? "" : "s", o->generate, (long long)P + o->generate, (long long)f->T);
    free(encoded);
    rt_tokenizer_free(tok);
    return RT_EXIT_BAD_INPUT;
  }
  int64_t *seq = malloc((size_t)(P + o->generate) * sizeof *seq);
  Cand *cand = malloc((size_t)f->V * sizeof *cand);
  bool ok = rt_alloc_buffers(m, &g.in, &g.out, &g.arena) && seq && cand;
  int code = RT_EXIT_OK;
  if (!ok) {
    rt_error(g_prog, "out of memory");
    code = RT_EXIT_BAD_INPUT;
  } else {
    memcpy(seq, prompt, (size_t)P * sizeof *seq);
  }
  /* patch values stay for every step (the decode circuit's node at each position) */
  for (int k = 0; k < m->npatches && code == RT_EXIT_OK; k++) {
    char what[512];
    snprintf(what, sizeof what, "--patch %s", m->patches[k].name);
    if (o->patch_path[k] && !(g.in[m->ninputs + k] = rt_npy_read(g_prog, what, o->patch_path[k], &m->patches[k])))
      code = RT_EXIT_BAD_INPUT;
  }
  free(encoded);
  /* a full-sequence program's logits need not be over its input ids (a
   * classifier): the program checks those itself (gen_index's bounds) */
  int64_t nid = tok ? rt_tokenizer_vocab_size(tok) : INT64_MAX;
  if (!f->full && f->V < nid) nid = f->V;
  for (int64_t i = 0; code == RT_EXIT_OK && i < P; i++)
    if (seq[i] < 0 || seq[i] >= nid) {
      rt_error(g_prog, "token id %lld (prompt position %lld) is out of range: the vocabulary has %lld ids",
                (long long)seq[i], (long long)i, (long long)nid);
      code = RT_EXIT_BAD_INPUT;
    }
  if (code == RT_EXIT_OK) code = generate(&g, o, tok, seq, P, cand);
  if (fflush(stdout) != 0 && code == RT_EXIT_OK) {
    rt_error(g_prog, "cannot write to standard output");
    code = RT_EXIT_BAD_INPUT;
  }
  rt_free_buffers(m, g.in, g.out, g.arena);
  free(seq);
  free(cand);
  rt_tokenizer_free(tok);
  return code;
}

const rt_mode rt_mode_generate = {"generate", generate_requested, generate_main, generate_help};
