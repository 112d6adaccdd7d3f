/* rt_generate.c — text generation for language-model programs: the decode
 * circuit of a causal model (gpt2_import --decode) compiled with a tokenizer
 * (circc --lm gpt2-bpe:DIR | chars:FILE.json), so that
 *   ./gpt2 --text "ROMEO:" --generate 100 --top-k 40 --seed 7
 *   ./gpt2 --tokens 464,3290 --generate 18 --greedy --print-ids
 *   ./gpt2 --text "Paris is the capital of" --top 10
 * work. rt_main hands the command line here when it holds one of the options
 * only generation has (rt_generate_requested).
 *
 * The program computes one new position per run, with a key/value cache:
 * inputs token [1] (or []) and pos [1] (or []) int64, kv_mask [T] (1 for
 * j < pos), past_k and past_v [L,H,T,D] float32; outputs logits [V] (or
 * [1,V]), new_k and new_v [L,H,D]. T is the longest sequence the program
 * handles. Every token — prompt tokens one at a time, then each
 * generated one — is one run at the next position; its new_k/new_v are then
 * stored at row pos of the cache (past_k/past_v are the cache itself), so no
 * prefix is ever recomputed. The logits after the last prompt token give the
 * first generated token, and so on. Prompt + generated tokens must fit in T
 * (which the program's input shapes give: circc -D SEQ=N for gpt2_import's
 * symbolic decode circuit).
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
 * RNG (portable: the same --seed gives the same text everywhere), as
 * rt_sample.c: xoshiro256** (Blackman & Vigna 2018) whose four state words are
 * the first four outputs of splitmix64 started at the seed; u = (next() >> 11)
 * · 2⁻⁵³, one u per sampled token.
 *
 * Output (stdout): the prompt's text, then each generated token's bytes as
 * soon as it is chosen (flushed), then a newline; --print-ids adds a line with
 * every id (prompt and generated), comma-separated; --top K prints K lines
 * "prob id 'token'" (the model's next-token distribution after the prompt,
 * temperature 1) before any text. Without a tokenizer only ids are printed.
 * -v prints ms per token (prompt and generation) on stderr.
 * Exit codes: 0 ok, 2 usage, 3 bad input (unknown character, token id out of
 * range, prompt + generated tokens longer than T, a failed run). */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L   /* clock_gettime */
#endif
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "circc_rt.h"
#ifdef _OPENMP
#include <omp.h>
#endif

enum { RC_OK = 0, RC_USAGE = 2, RC_BAD_INPUT = 3, ALIGN = 64, MAX_THREADS = 4096 };

/* ---- errors ---- */

static const char *g_prog = "model";

static void gen_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void gen_error(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "%s: error: ", g_prog);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
}

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int usage_error(const char *fmt, ...) {
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  gen_error("%s (see %s --help)", msg, g_prog);
  return RC_USAGE;
}

/* ---- the program's decode interface ---- */

enum { IN_TOKEN, IN_POS, IN_MASK, IN_PAST_K, IN_PAST_V, NIN };
enum { OUT_LOGITS, OUT_K, OUT_V, NOUT };
static const char *const IN_NAME[NIN] = {"token", "pos", "kv_mask", "past_k", "past_v"};
static const char *const OUT_NAME[NOUT] = {"logits", "new_k", "new_v"};

/* Where the decode tensors are and their sizes. */
typedef struct Iface {
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

/* ---- options ---- */

/* the options only generation has (--seed, --threads and -v are shared with rt_main's) */
static const char *const REQUESTING[] = {"--text",  "--tokens", "--generate",  "--top",      "--greedy",
                                         "--top-k", "--top-p",  "--temperature", "--print-ids", "--dump-logits"};

int rt_generate_requested(int argc, char **argv) {
  for (int i = 1; i < argc; i++)
    for (size_t k = 0; k < sizeof REQUESTING / sizeof *REQUESTING; k++) {
      size_t n = strlen(REQUESTING[k]);
      if (!strncmp(argv[i], REQUESTING[k], n) && (argv[i][n] == '\0' || argv[i][n] == '=')) return 1;
    }
  return 0;
}

void rt_generate_help(const rt_model *m) {
  Iface f;
  if (decode_iface(m, &f)) return;
  printf("\nlanguage model (max length T = %lld tokens, vocabulary %lld%s):\n", (long long)f.T, (long long)f.V,
         m->tokenizer_len ? "" : ", no tokenizer: ids only");
  fputs("  --text STR               the prompt as text (needs a tokenizer: circc --lm)\n"
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
        "  prompt + generated tokens must fit in T (exit 3 otherwise)\n",
        stdout);
}

static bool parse_double(const char *s, double *out) {
  char *end;
  errno = 0;
  double v = strtod(s, &end);
  if (end == s || *end || errno || !isfinite(v)) return false;
  *out = v;
  return true;
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

int rt_generate_main(const rt_model *m, int argc, char **argv) {
  static const struct { const char *name; bool takes_value; } FLAGS[] = {
      {"--text", true},   {"--tokens", true},    {"--generate", true}, {"--greedy", false}, {"--temperature", true},
      {"--top-k", true},  {"--top-p", true},     {"--seed", true},     {"--top", true},     {"--print-ids", false},
      {"--threads", true}, {"--dump-logits", true}, {"-v", false},     {"-h", false},       {"--help", false},
  };
  g_prog = m->name ? m->name : argc > 0 ? argv[0] : "model";
  rt_gen_options o = {.temperature = 1, .top_p = 1};
  bool sampling_opt = false, has_seed = false;
  int64_t *ids = NULL;
  int code = -1;
  for (int i = 1; i < argc && code < 0; i++) {
    const char *a = argv[i], *val = NULL;
    size_t len = strncmp(a, "--", 2) == 0 ? strcspn(a, "=") : strlen(a);
    int f = -1;
    for (int k = 0; k < (int)(sizeof FLAGS / sizeof FLAGS[0]); k++)
      if (strlen(FLAGS[k].name) == len && strncmp(a, FLAGS[k].name, len) == 0) f = k;
    if (f < 0) {
      code = usage_error(a[0] == '-' ? "unknown option '%s' (generation takes only the language-model "
                                       "options)" : "unexpected argument '%s'", a);
      break;
    }
    const char *flag = FLAGS[f].name;
    if (a[len]) val = a + len + 1;
    if (FLAGS[f].takes_value && !val) {
      if (i + 1 >= argc) {
        code = usage_error("option %s needs a value", flag);
        break;
      }
      val = argv[++i];
    } else if (!FLAGS[f].takes_value && val) {
      code = usage_error("option %s takes no value, found '%s'", flag, a);
      break;
    }
    long n = 0;
    if (!strcmp(flag, "-h") || !strcmp(flag, "--help")) {
      printf("usage: %s (--text STR | --tokens ID,...) [--generate N] [--greedy | --temperature F --top-k K\n"
             "       --top-p P --seed S] [--top K] [--print-ids] [--threads N] [-v]\n",
             g_prog);
      rt_generate_help(m);
      code = RC_OK;
    } else if (!strcmp(flag, "--text")) {
      if (o.text || ids) code = usage_error("give one prompt: --text or --tokens, once");
      o.text = val;
    } else if (!strcmp(flag, "--tokens")) {
      if (o.text || ids) code = usage_error("give one prompt: --text or --tokens, once");
      else if ((o.ntokens = parse_ids(val, &ids)) < 0)
        code = usage_error("--tokens expects comma-separated non-negative ids like 464,3290, found '%s'", val);
      o.tokens = ids;
    } else if (!strcmp(flag, "--generate")) {
      if (!rt_parse_long(val, 0, 1L << 30, &n)) code = usage_error("--generate expects a number of tokens, found '%s'", val);
      o.generate = n;
    } else if (!strcmp(flag, "--greedy")) {
      o.greedy = 1;
    } else if (!strcmp(flag, "--temperature")) {
      sampling_opt = true;
      if (!parse_double(val, &o.temperature) || o.temperature < 0)
        code = usage_error("--temperature expects a number >= 0, found '%s'", val);
    } else if (!strcmp(flag, "--top-k")) {
      sampling_opt = true;
      if (!rt_parse_long(val, 1, 1L << 30, &n)) code = usage_error("--top-k expects a number >= 1, found '%s'", val);
      o.top_k = n;
    } else if (!strcmp(flag, "--top-p")) {
      sampling_opt = true;
      if (!parse_double(val, &o.top_p) || !(o.top_p > 0 && o.top_p <= 1))
        code = usage_error("--top-p expects a number in (0, 1], found '%s'", val);
    } else if (!strcmp(flag, "--seed")) {
      char *end;
      errno = 0;
      unsigned long long s = strtoull(val, &end, 10);
      if (end == val || *end || errno || val[0] == '-')
        code = usage_error("--seed expects an integer from 0 to 2^64-1, found '%s'", val);
      o.seed = (uint64_t)s, has_seed = true;
    } else if (!strcmp(flag, "--top")) {
      if (!rt_parse_long(val, 1, 1L << 30, &n)) code = usage_error("--top expects a number >= 1, found '%s'", val);
      o.top = n;
    } else if (!strcmp(flag, "--print-ids")) {
      o.print_ids = 1;
    } else if (!strcmp(flag, "--threads")) {
      if (!rt_parse_long(val, 1, MAX_THREADS, &n))
        code = usage_error("--threads expects a number from 1 to %d, found '%s'", MAX_THREADS, val);
      o.threads = (int)n;
    } else if (!strcmp(flag, "--dump-logits")) {
      o.dump_logits = val;
    } else {
      o.verbose = 1;   /* -v */
    }
  }
  if (code < 0 && !o.text && !ids) code = usage_error("no prompt: give --text STR or --tokens ID,ID,...");
  else if (code < 0 && !o.generate && !o.top && !o.dump_logits)
    code = usage_error("nothing to do: give --generate N or --top K");
  else if (code < 0 && o.greedy && (sampling_opt || has_seed))
    code = usage_error("--greedy cannot be combined with --temperature, --top-k, --top-p or --seed");
  if (code < 0) code = rt_generate(m, &o);
  free(ids);
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
static int64_t choose(const rt_gen_options *o, const float *x, int64_t n, Cand *c, rt_rng *rng) {
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
static bool print_top(const rt_gen_options *o, const rt_tokenizer *tok, const float *x, int64_t n, Cand *c) {
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

/* Writes rows [n,V] float32 as a version 1.0 .npy (little-endian). */
static bool write_logits(const char *path, const float *rows, int64_t n, int64_t V) {
  char hdr[128];
  int len = snprintf(hdr, sizeof hdr, "{'descr': '<f4', 'fortran_order': False, 'shape': (%lld, %lld), }",
                     (long long)n, (long long)V);
  len += snprintf(hdr + len, sizeof hdr - (size_t)len, "%*s\n", 63 - (10 + len) % 64, "");
  unsigned char pre[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, (unsigned char)(len & 0xff), (unsigned char)(len >> 8)};
  FILE *f = fopen(path, "wb");
  bool ok = f && fwrite(pre, 1, sizeof pre, f) == sizeof pre && fwrite(hdr, 1, (size_t)len, f) == (size_t)len;
  for (int64_t i = 0; ok && i < n * V; i++) {
    uint32_t u;
    memcpy(&u, &rows[i], 4);
    unsigned char b[4] = {(unsigned char)u, (unsigned char)(u >> 8), (unsigned char)(u >> 16), (unsigned char)(u >> 24)};
    ok = fwrite(b, 1, 4, f) == 4;
  }
  if (f && fclose(f) != 0) ok = false;
  if (!ok) gen_error("--dump-logits: cannot write %s: %s", path, strerror(errno));
  return ok;
}

/* ---- the decode loop ---- */

typedef struct Gen {
  const rt_model *m;
  Iface f;
  void **in, **out;
  void *arena;
  double run_ms;                /* time inside step(), summed */
} Gen;

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

static void *alloc_zeroed(size_t bytes) {
  size_t n = (bytes + ALIGN - 1) / ALIGN * ALIGN;
  void *p = aligned_alloc(ALIGN, n ? n : ALIGN);
  if (p) memset(p, 0, n ? n : ALIGN);
  return p;
}

/* Runs the program for `token` at position pos and stores its keys and values
 * at row pos of the cache. The logits are then in g->out[logits]. */
static bool step(Gen *g, int64_t pos, int64_t token) {
  const Iface *f = &g->f;
  double t0 = now_ms();
  *(int64_t *)g->in[f->in[IN_TOKEN]] = token;
  *(int64_t *)g->in[f->in[IN_POS]] = pos;
  float *mask = g->in[f->in[IN_MASK]];
  for (int64_t j = 0; j < f->T; j++) mask[j] = j < pos;
  const char *msg = g->m->run((const void *const *)g->in, g->out, g->arena);
  if (msg) {
    gen_error("the run at position %lld failed: %s", (long long)pos, msg);
    return false;
  }
  for (int kv = 0; kv < 2; kv++) {
    float *cache = g->in[f->in[kv ? IN_PAST_V : IN_PAST_K]];
    const float *row = g->out[f->out[kv ? OUT_V : OUT_K]];
    for (int64_t lh = 0; lh < f->L * f->H; lh++)
      memcpy(cache + (lh * f->T + pos) * f->D, row + lh * f->D, (size_t)f->D * sizeof(float));
  }
  g->run_ms += now_ms() - t0;
  return true;
}

static size_t dtype_bytes(rt_dtype t) { return t == RT_F32 ? 4 : 8; }

static int generate(Gen *g, const rt_gen_options *o, rt_tokenizer *tok, int64_t *seq, int64_t P, Cand *cand) {
  const Iface *f = &g->f;
  const float *logits = g->out[f->out[OUT_LOGITS]];
  /* ids the tokenizer cannot decode (a padded vocabulary) are never chosen */
  int64_t nchoice = tok && rt_tokenizer_vocab_size(tok) < f->V ? rt_tokenizer_vocab_size(tok) : f->V;
  float *dump = o->dump_logits ? malloc((size_t)(P * f->V) * sizeof *dump) : NULL;
  if (o->dump_logits && !dump) {
    gen_error("out of memory");
    return RC_BAD_INPUT;
  }
  /* One untimed run first, at the last position this generation runs: it
   * starts the threads (-v's timings exclude it) and fails before any output if
   * the program cannot run that far (e.g. compiled with a cache longer than the
   * model's position table: circc -D SEQ=N beyond n_positions). Its cache row is
   * cleared again, so every result is as without it. */
  int64_t last = o->generate > 1 ? P + o->generate - 2 : P - 1;
  if (!step(g, last, seq[0])) {
    free(dump);
    return RC_BAD_INPUT;
  }
  for (int kv = 0; kv < 2; kv++) {
    float *cache = g->in[f->in[kv ? IN_PAST_V : IN_PAST_K]];
    for (int64_t lh = 0; lh < f->L * f->H; lh++)
      memset(cache + (lh * f->T + last) * f->D, 0, (size_t)f->D * sizeof(float));
  }
  g->run_ms = 0;
  double t0 = now_ms();
  for (int64_t i = 0; i < P; i++) {
    if (!step(g, i, seq[i])) {
      free(dump);
      return RC_BAD_INPUT;
    }
    if (dump) memcpy(dump + i * f->V, logits, (size_t)f->V * sizeof *dump);
  }
  double prompt_ms = now_ms() - t0;
  bool ok = !dump || write_logits(o->dump_logits, dump, P, f->V);
  free(dump);
  if (!ok) return RC_BAD_INPUT;
  if (o->top && !print_top(o, tok, logits, nchoice, cand)) {
    gen_error("the logits after the prompt have no finite maximum (NaN, +inf or all -inf)");
    return RC_BAD_INPUT;
  }
  if (tok && o->generate) {   /* the prompt's text */
    size_t len = rt_decode(tok, seq, P, NULL, 0);
    char *text = len == RT_DECODE_ERROR ? NULL : malloc(len + 1);
    if (!text || rt_decode(tok, seq, P, text, len + 1) != len) {
      free(text);
      gen_error("cannot decode the prompt: %s", len == RT_DECODE_ERROR ? rt_tokenizer_error() : "out of memory");
      return RC_BAD_INPUT;
    }
    fwrite(text, 1, len, stdout);
    fflush(stdout);
    free(text);
  }
  rt_rng rng;
  uint64_t seed = o->seed;
  rt_rng_seed(&rng, seed);
  double gen_run0 = g->run_ms;
  t0 = now_ms();
  for (int64_t n = 0; n < o->generate; n++) {
    int64_t id = choose(o, logits, nchoice, cand, &rng);
    if (id < 0) {
      gen_error("the logits at position %lld have no finite maximum (NaN, +inf or all -inf)", (long long)(P + n - 1));
      return RC_BAD_INPUT;
    }
    seq[P + n] = id;
    size_t len;
    const char *s = tok ? rt_token_bytes(tok, id, &len) : NULL;
    if (s) {
      fwrite(s, 1, len, stdout);
      fflush(stdout);
    }
    if (n + 1 < o->generate && !step(g, P + n, id)) return RC_BAD_INPUT;
  }
  double gen_ms = now_ms() - t0;
  if (tok && o->generate) putchar('\n');
  if (o->print_ids || (!tok && o->generate)) print_ids(seq, P + o->generate);
  if (o->verbose) {
    int threads = 1;
#ifdef _OPENMP
    threads = omp_get_max_threads();
#endif
    fprintf(stderr, "%s: %d thread%s; prompt: %lld token%s in %.3f ms (%.4g ms/token)", g_prog, threads,
            threads == 1 ? "" : "s", (long long)P, P == 1 ? "" : "s", prompt_ms, prompt_ms / (double)P);
    if (o->generate)
      fprintf(stderr, "; generation: %ld token%s in %.3f ms (%.4g ms/token, %.4g ms/token in the model)", o->generate,
              o->generate == 1 ? "" : "s", gen_ms, gen_ms / (double)o->generate,
              o->generate > 1 ? (g->run_ms - gen_run0) / (double)(o->generate - 1) : 0.0);
    fputc('\n', stderr);
  }
  return RC_OK;
}

int rt_generate(const rt_model *m, const rt_gen_options *o) {
  g_prog = m->name ? m->name : g_prog;
  Gen g = {.m = m};
  const char *why = decode_iface(m, &g.f);
  if (why) {
    gen_error("this program cannot generate text: %s; it needs the decode circuit of a language model "
              "(gpt2_import --decode, then circc --lm gpt2-bpe:DIR or chars:FILE.json)", why);
    return RC_USAGE;
  }
  const Iface *f = &g.f;
  rt_tokenizer *tok = NULL;
  if (m->tokenizer && m->tokenizer_len && !(tok = rt_tokenizer_open(m->tokenizer, m->tokenizer_len))) {
    gen_error("the program's tokenizer table is unusable: %s", rt_tokenizer_error());
    return RC_BAD_INPUT;
  }
  if (o->text && !tok) {
    gen_error("--text needs a tokenizer, and this program has none (compile it with circc --lm); use --tokens");
    return RC_USAGE;
  }
  if (o->top_k > f->V) {
    gen_error("--top-k %ld exceeds the vocabulary size %lld", o->top_k, (long long)f->V);
    rt_tokenizer_free(tok);
    return RC_USAGE;
  }
  if (o->threads > 0) {
#ifdef _OPENMP
    omp_set_num_threads(o->threads);
#endif
  }
  /* the prompt: the text's tokens (<|endoftext|> for an empty text, as GPT-2
   * starts unconditional samples), or the ids */
  const int64_t *prompt = o->tokens;
  int64_t P = o->ntokens, *encoded = NULL;
  if (o->text) {
    size_t len = strlen(o->text);
    encoded = malloc((len + 1) * sizeof *encoded);
    P = encoded ? rt_encode(tok, o->text, len, encoded, (int64_t)len + 1) : -1;
    if (P < 0) gen_error("--text: %s", encoded ? rt_tokenizer_error() : "out of memory");
    else if (P == 0 && (encoded[0] = rt_tokenizer_eot(tok)) >= 0) P = 1;
    else if (P == 0) {
      gen_error("--text: the prompt is empty (give at least one character)");
      P = -1;
    }
    prompt = encoded;
  }
  if (P < 0) {
    free(encoded);
    rt_tokenizer_free(tok);
    return RC_BAD_INPUT;
  }
  if (P > f->T || o->generate > f->T - P) {
    gen_error("the prompt (%lld token%s) and --generate %ld need %lld positions, but the program holds at most %lld "
              "(T); compile it with a larger circc -D SEQ=N (or gpt2_import --seq; at most the model's n_positions)",
              (long long)P, P == 1 ? "" : "s", o->generate, (long long)P + o->generate, (long long)f->T);
    free(encoded);
    rt_tokenizer_free(tok);
    return RC_BAD_INPUT;
  }
  int64_t *seq = malloc((size_t)(P + o->generate) * sizeof *seq);
  Cand *cand = malloc((size_t)f->V * sizeof *cand);
  g.in = calloc((size_t)m->ninputs + 1, sizeof *g.in);
  g.out = calloc((size_t)m->noutputs + 1, sizeof *g.out);
  g.arena = alloc_zeroed(m->arena_bytes);
  bool ok = seq && cand && g.in && g.out && g.arena;
  for (int i = 0; ok && i < m->ninputs; i++)
    ok = (g.in[i] = alloc_zeroed((size_t)m->inputs[i].numel * dtype_bytes(m->inputs[i].dtype))) != NULL;
  for (int i = 0; ok && i < m->noutputs; i++)
    ok = (g.out[i] = alloc_zeroed((size_t)m->outputs[i].numel * dtype_bytes(m->outputs[i].dtype))) != NULL;
  int code = RC_OK;
  if (!ok) {
    gen_error("out of memory");
    code = RC_BAD_INPUT;
  } else {
    memcpy(seq, prompt, (size_t)P * sizeof *seq);
  }
  free(encoded);
  int64_t ntok = tok ? rt_tokenizer_vocab_size(tok) : f->V;
  for (int64_t i = 0; code == RC_OK && i < P; i++)
    if (seq[i] < 0 || seq[i] >= f->V || seq[i] >= ntok) {
      gen_error("token id %lld (prompt position %lld) is out of range: the vocabulary has %lld ids",
                (long long)seq[i], (long long)i, (long long)(f->V < ntok ? f->V : ntok));
      code = RC_BAD_INPUT;
    }
  if (code == RC_OK) code = generate(&g, o, tok, seq, P, cand);
  if (fflush(stdout) != 0 && code == RC_OK) {
    gen_error("cannot write to standard output");
    code = RC_BAD_INPUT;
  }
  for (int i = 0; g.in && i < m->ninputs; i++) free(g.in[i]);
  for (int i = 0; g.out && i < m->noutputs; i++) free(g.out[i]);
  free(g.in);
  free(g.out);
  free(g.arena);
  free(seq);
  free(cand);
  rt_tokenizer_free(tok);
  return code;
}
