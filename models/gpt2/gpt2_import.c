/* gpt2_import.c — imports a Hugging Face GPT-2 checkpoint (GPT2LMHeadModel:
 * config.json + model.safetensors, or a sharded model.safetensors.index.json;
 * F32/F16/BF16) as a rust_circuit circuit for circc.
 *
 * Weights are split and reshaped as rust_circuit_format.md §7.6 prescribes
 * (Conv1D weights are stored [in,out]) and written as float32 into the tensor
 * store OUT/store. The circuit OUT/<name>.circ follows the library's naming
 * and structure (§7.1–7.2): in module form the specs `ln`, `a.head` (batched
 * over heads by `a.heads`), `m`, `b`, per-layer bindings `b{i}`, `final.norm`,
 * `t.bind_w` and a top-level call binding `t.input` and `a.mask`; with --flat
 * the equivalent module-free circuit (batched per-head einsums). T is --seq T,
 * or else the library's symbolic size SEQ (1s), which circc -D SEQ=N binds;
 * then the positions are an input (see causal_mask). Outputs:
 *   logits   [T,V]   (the library's t.call; [B,T,V] with --batch B)
 *   hidden0..hidden{L} [T,C]  hidden0 = wte+wpe embeddings, hidden{i} = residual
 *            stream after block i (1-based), hidden{L} = after the final layer
 *            norm — the hidden_states Hugging Face returns
 *   loss     []      with --loss: mean cross-entropy of targets given
 *            logits[...,:-1], i.e. of the next tokens
 * Inputs: tokens [T] (or [B,T]) int64; without --seq also positions [SEQ]
 * int64; with --loss (needs --seq) also targets [T-1] (or [B,T-1]) int64,
 * targets[s] = the token after position s (tokens[1:] for a text).
 * With --decode also OUT/<name>_decode.circ, the module-free decode circuit
 * for generation with a key/value cache (see decode_form): one new position
 * per run, the keys/values of the earlier ones as inputs.
 * With --model-file OUT/<name>.circ is instead a rust_circuit model file
 * (`# info` + the library's weight symbols bound to Arrays: write_model_file),
 * for circc --bind-tokens.
 * With --random-config CONFIG.json no checkpoint is read: every weight is
 * deterministic pseudo-random (see random_tensor), for a model of any size
 * (e.g. gpt2_small_config.json, GPT-2 small 124M) without its download.
 * Exit codes: 0 ok, 1 bad checkpoint content or unsupported config, 2 usage,
 * 3 I/O (unreadable checkpoint, unwritable OUT). */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include "json.h"
#include "library.h"
#include "modeltool.h"

static const char USAGE[] =
    "usage: gpt2_import [options] HF_DIR OUT_DIR\n"
    "       gpt2_import [options] --random-config CONFIG.json OUT_DIR\n"
    "Imports a Hugging Face GPT-2 checkpoint (HF_DIR/config.json and model.safetensors or\n"
    "model.safetensors.index.json) as OUT_DIR/NAME.circ plus the tensor store OUT_DIR/store.\n"
    "  --seq T      a fixed sequence length T (at most n_positions and 1024; its constant causal\n"
    "               mask lets the compiler skip masked work). Without --seq the length is the\n"
    "               symbolic size SEQ, chosen when compiling: circc -D SEQ=N (N <= n_positions);\n"
    "               NAME.circ then also takes positions [SEQ] int64 (each token's position:\n"
    "               0..N-1 for a text), which give the position embeddings and the causal mask\n"
    "  --batch B    add a leading batch dimension B to tokens and every output\n"
    "  --loss       add the input targets [T-1] (the token after each position, i.e.\n"
    "               tokens[1:] of a text) and the output loss: mean cross-entropy of\n"
    "               targets given logits[...,:-1] (needs --seq)\n"
    "  --flat       write the module-free circuit instead of the module form\n"
    "  --name NAME  circuit file name (default gpt2, gpt2_flat with --flat, gpt2_model with\n"
    "               --model-file)\n"
    "  --decode     also write OUT_DIR/NAME_decode.circ: the model at one new position with a\n"
    "               key/value cache of T positions (--seq T, else SEQ), for generation (circc --lm):\n"
    "               inputs token [1], pos [1] int64, kv_mask [T] (1 for j < pos), past_k, past_v\n"
    "               [L,H,T,D]; outputs logits [V], new_k, new_v [L,H,D] (module-free form; --batch,\n"
    "               --loss and --flat apply to NAME.circ only)\n"
    "  --model-file write OUT_DIR/NAME.circ as a rust_circuit model file instead (as rust_circuit's\n"
    "               TransformerInfo.dump_model_string writes it: `# info` params, t.w.tok_embeds,\n"
    "               t.w.pos_embeds and t.bind_w binding every library weight; layer norm eps 1e-5):\n"
    "               compile with circc --bind-tokens -D SEQ=N --tensors OUT_DIR/store OUT_DIR/NAME.circ\n"
    "               (not with --seq, --batch, --loss, --flat or --decode)\n"
    "  --random-config CONFIG.json  no checkpoint: the model of this config.json with\n"
    "               deterministic pseudo-random weights (layer norm scale 1, bias 0; every\n"
    "               other tensor uniform with mean 0, std 0.02 from splitmix64 seeded by its name)\n"
    "Inputs: tokens [T] int64 (and positions [T] without --seq); outputs: logits [T,V],\n"
    "hidden0..hidden<L> [T,C] (as Hugging Face's hidden_states), loss [] with --loss.\n"
    "Compile with: circc -D SEQ=N --tensors OUT_DIR/store OUT_DIR/NAME.circ -o gpt2\n"
    "(-D SEQ=N picks the length; not needed for a circuit imported with --seq)\n"
    "exit codes: 0 ok, 1 bad or unsupported checkpoint, 2 usage, 3 I/O\n";

enum { TOOL_BAD = 1, MAX_SEQ = 1024 };

/* ------------------------------------------------------------ options, config */

typedef struct Options {
  const char *hf_dir, *out_dir, *name;
  const char *random_cfg;   /* --random-config: config.json path, no checkpoint */
  int64_t seq, batch;       /* seq 0: default; batch 0: no batch dimension */
  bool flat, loss, decode;
  bool model_file;          /* --model-file: write a rust_circuit model file instead */
} Options;

typedef struct Config {
  int64_t layers, hidden, heads, head_dim, mlp, vocab, n_pos;
  double eps;
  const char *act;          /* rust_circuit function name: gelu_new, gelu or relu */
  bool tied;
} Config;

/* Which kind of error the run has seen: decides the exit code. */
static int g_exit = TOOL_OK;

static void fail(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void fail(int code, const char *fmt, ...) {
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  tool_error("%s", msg);
  if (g_exit != TOOL_IO) g_exit = code;
}

static char *read_text(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    fail(TOOL_IO, "cannot open %s: %s", path, strerror(errno));
    return NULL;
  }
  size_t cap = 1 << 16, n = 0;
  char *buf = malloc(cap);
  for (size_t got; buf && (got = fread(buf + n, 1, cap - n, f)) > 0;) {
    n += got;
    if (n == cap) {
      char *nb = realloc(buf, cap *= 2);
      if (!nb) free(buf);
      buf = nb;
    }
  }
  bool err = ferror(f);
  fclose(f);
  if (!buf || err) {
    fail(TOOL_IO, "cannot read %s: %s", path, buf ? strerror(errno) : "out of memory");
    free(buf);
    return NULL;
  }
  *len = n;
  return buf;
}

/* config value `key` as a positive integer; `dflt` < 0 means required. */
static bool cfg_int(const char *path, const Json *root, const char *key, int64_t dflt, int64_t *out) {
  const Json *v = json_get(root, key);
  if ((!v || json_is_null(v)) && dflt >= 0) {
    *out = dflt;
    return true;
  }
  if (!v) {
    fail(TOOL_BAD, "%s: missing \"%s\"", path, key);
    return false;
  }
  if (!json_int(v, out) || *out < 1 || *out > ((int64_t)1 << 31)) {
    fail(TOOL_BAD, "%s: \"%s\" must be a positive integer", path, key);
    return false;
  }
  return true;
}

/* a boolean setting that must have the value `want` (HF default `dflt`) */
static bool cfg_flag(const char *path, const Json *root, const char *key, bool dflt, bool want, const char *why) {
  const Json *v = json_get(root, key);
  bool b = dflt;
  if (v && !json_is_null(v) && !json_bool(v, &b)) {
    fail(TOOL_BAD, "%s: \"%s\" must be true or false", path, key);
    return false;
  }
  if (b != want) {
    fail(TOOL_BAD, "%s: unsupported config: \"%s\": %s (%s)", path, key, b ? "true" : "false", why);
    return false;
  }
  return true;
}

static bool read_config(const char *path, Config *cf) {
  size_t len;
  char *text = read_text(path, &len);
  if (!text) return false;
  Arena a = {0};
  JsonError jerr;
  Json *root = json_parse(&a, text, len, &jerr);
  bool ok = root != NULL;
  if (!root) fail(TOOL_BAD, "%s: malformed JSON at byte %zu: %s", path, jerr.offset, jerr.msg);
  else if (root->type != JSON_OBJECT) ok = false, fail(TOOL_BAD, "%s: expected a JSON object", path);
  const char *mt = ok ? json_str(json_get(root, "model_type")) : NULL;
  if (ok && mt && strcmp(mt, "gpt2") != 0) {
    fail(TOOL_BAD, "%s: unsupported model_type \"%s\": expected \"gpt2\"", path, mt);
    ok = false;
  }
  int64_t n_pos = 0;
  ok = ok && cfg_int(path, root, "n_layer", -1, &cf->layers) && cfg_int(path, root, "n_embd", -1, &cf->hidden) &&
       cfg_int(path, root, "n_head", -1, &cf->heads) && cfg_int(path, root, "vocab_size", -1, &cf->vocab);
  if (ok) {
    const Json *np = json_get(root, "n_positions");
    ok = cfg_int(path, root, np ? "n_positions" : "n_ctx", -1, &n_pos);
  }
  ok = ok && cfg_int(path, root, "n_inner", 4 * cf->hidden, &cf->mlp);
  if (ok && cf->hidden % cf->heads) {
    fail(TOOL_BAD, "%s: n_embd %lld is not a multiple of n_head %lld", path, (long long)cf->hidden,
         (long long)cf->heads);
    ok = false;
  }
  cf->n_pos = n_pos;
  cf->head_dim = ok ? cf->hidden / cf->heads : 0;
  cf->eps = 1e-5;
  const Json *eps = ok ? json_get(root, "layer_norm_epsilon") : NULL;
  if (eps && (!json_num(eps, &cf->eps) || !(cf->eps > 0) || !isfinite(cf->eps))) {
    fail(TOOL_BAD, "%s: \"layer_norm_epsilon\" must be a positive number", path);
    ok = false;
  }
  const Json *act = ok ? json_get(root, "activation_function") : NULL;
  const char *an = act ? json_str(act) : "gelu_new";
  if (ok && !an) {
    fail(TOOL_BAD, "%s: \"activation_function\" must be a string", path);
    ok = false;
  } else if (ok) {
    /* HF names → rust_circuit GeneralFunctions (gelu_new and gelu_pytorch_tanh are the tanh form) */
    if (!strcmp(an, "gelu_new") || !strcmp(an, "gelu_pytorch_tanh")) cf->act = "gelu_new";
    else if (!strcmp(an, "gelu")) cf->act = "gelu";
    else if (!strcmp(an, "relu")) cf->act = "relu";
    else {
      fail(TOOL_BAD, "%s: unsupported activation_function \"%s\": expected gelu_new, gelu_pytorch_tanh, gelu or relu",
           path, an);
      ok = false;
    }
  }
  ok = ok && cfg_flag(path, root, "scale_attn_weights", true, true, "scores are always scaled by 1/sqrt(head_dim)") &&
       cfg_flag(path, root, "scale_attn_by_inverse_layer_idx", false, false, "not implemented") &&
       cfg_flag(path, root, "add_cross_attention", false, false, "encoder-decoder models are not supported");
  bool tied = true;
  const Json *tie = ok ? json_get(root, "tie_word_embeddings") : NULL;
  if (tie && !json_is_null(tie) && !json_bool(tie, &tied)) {
    fail(TOOL_BAD, "%s: \"tie_word_embeddings\" must be true or false", path);
    ok = false;
  }
  cf->tied = tied;
  arena_free_all(&a);
  free(text);
  return ok;
}

/* ------------------------------------------------------------ weights */

/* The 16 per-layer weights, in the order of the library's block weight
 * symbols (LIB_BLOCK_WEIGHT) and rust_circuit's layout (§7.6). */
enum {
  W_Q, W_QB, W_K, W_KB, W_V, W_VB, W_O, W_OB, W_ALN_S, W_ALN_B,
  W_IN, W_INB, W_OUT, W_OUTB, W_MLN_S, W_MLN_B, NW
};
_Static_assert((int)NW == (int)LIB_BLOCK_WEIGHTS, "one imported tensor per block weight symbol");

/* Where each imported tensor lives: its store hash prefix and concrete shape. */
typedef struct Stored {
  const char *hash;    /* 24 hex chars */
  Shape shape;
} Stored;

typedef struct Model {
  Config cf;
  Stored *layer;       /* [layers * NW] */
  Stored lnf_scale, lnf_bias, wte, wpe, unembed, mask;
  bool has_unembed;    /* untied: a separate lm_head */
} Model;

typedef struct Reader {
  Comp *c;
  TensorFile *f;       /* NULL: --random-config */
  const char *path;
  const char *prefix;  /* "transformer." or "" */
} Reader;

/* splitmix64 (Steele, Lea, Flood 2014): the 64-bit generator state += golden gamma, then mixed. */
static uint64_t splitmix64(uint64_t *state) {
  uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

/* --random-config: the tensor `name` (Hugging Face name without "transformer.",
 * e.g. "h.0.attn.c_attn.weight", in its checkpoint shape) with deterministic
 * values. Layer norm scales (ln_*.weight) are 1, layer norm biases 0; every
 * other element i (row-major) is 0.02*sqrt(3)*(2u-1), u = (x >> 11) * 2^-53
 * with x the (i+1)-th splitmix64 output from the state FNV-1a-64(name): uniform
 * with mean 0 and std 0.02 (GPT-2's init std), exact IEEE arithmetic, so the
 * same on every platform. */
static const Tensor *random_tensor(Comp *c, const char *name, Shape shape) {
  Tensor *t = tensor_new(c, DT_F32, &shape);
  float *d = t->data;
  int64_t n = shape_numel(&shape);
  bool ln = !strncmp(name, "ln_", 3) || strstr(name, ".ln_");
  if (ln) {
    float v = strstr(name, ".weight") ? 1.0f : 0.0f;
    for (int64_t i = 0; i < n; i++) d[i] = v;
    return t;
  }
  uint64_t state = 0xcbf29ce484222325ull;
  for (const char *p = name; *p; p++) state = (state ^ (unsigned char)*p) * 0x100000001b3ull;
  double a = 0.02 * sqrt(3.0);
  for (int64_t i = 0; i < n; i++) {
    double u = (double)(splitmix64(&state) >> 11) * 0x1p-53;
    d[i] = (float)(a * (2.0 * u - 1.0));
  }
  return t;
}

static const char *shape_text(char *buf, size_t cap, const Shape *s) {
  size_t n = 0;
  buf[0] = '\0';
  for (int i = 0; i < s->rank && n < cap; i++)
    n += (size_t)snprintf(buf + n, cap - n, "%s%lld", i ? "," : "", (long long)s->dim[i]);
  return buf;
}

static Shape mkshape(int rank, int64_t a, int64_t b, int64_t c) {
  Shape s = {rank, {a, b, c}};
  return s;
}

/* The checkpoint tensor `name` (with the model prefix), checked against `want`. */
static const Tensor *get(Reader *r, const char *name, Shape want) {
  if (!r->f) return random_tensor(r->c, name, want);
  const char *full = arena_printf(&r->c->arena, "%s%s", r->prefix, name);
  Loc loc = {r->path, 0, 0};
  const Tensor *t = safetensors_get(r->c, r->f, full, loc);
  if (!t) return NULL;
  if (t->dtype != DT_F32 && t->dtype != DT_F16 && t->dtype != DT_BF16 && t->dtype != DT_F64) {
    fail(TOOL_BAD, "%s: tensor '%s' has dtype %s, expected F32, F16, BF16 or F64", r->path, full,
         dtype_name(t->dtype));
    return NULL;
  }
  if (!shape_eq(&t->shape, &want)) {
    char got[256], exp[256];
    fail(TOOL_BAD, "%s: tensor '%s' has shape [%s], expected [%s] (from config.json)", r->path, full,
         shape_text(got, sizeof got, &t->shape), shape_text(exp, sizeof exp, &want));
    return NULL;
  }
  return t;
}

/* Writes a float32 tensor of `shape` whose element i is src[map(i)] to the store. */
typedef int64_t (*IndexMap)(int64_t i, const int64_t *p);
static bool store_mapped(Comp *c, const Tensor *src, Shape shape, IndexMap map, const int64_t *p, Stored *out) {
  int64_t n = shape_numel(&shape);
  float *data = malloc((size_t)(n ? n : 1) * sizeof(float));
  if (!data) {
    fail(TOOL_IO, "out of memory");
    return false;
  }
  for (int64_t i = 0; i < n; i++) data[i] = (float)tensor_get_f64(src, map ? map(i, p) : i);
  Tensor t = {.dtype = DT_F32, .shape = shape, .data = data, .nbytes = (size_t)n * sizeof(float)};
  const char *hash = tool_store(c, &t);
  free(data);
  if (!hash) {
    g_exit = TOOL_IO;
    return false;
  }
  out->hash = hash;
  out->shape = shape;
  return true;
}

/* p = {H, D, C, part}: out[h,d,c] = W[c, part*C + h*D + d] (c_attn [C,3C] → q/k/v [H,D,C]) */
static int64_t map_qkv(int64_t i, const int64_t *p) {
  int64_t D = p[1], C = p[2];
  int64_t c = i % C, d = i / C % D, h = i / (C * D);
  return c * 3 * C + p[3] * C + h * D + d;
}
/* p = {C, part}: out[j] = b[part*C + j] (c_attn bias [3C] → [H,D]) */
static int64_t map_part(int64_t i, const int64_t *p) { return p[1] * p[0] + i; }
/* p = {H, D, C}: out[h,d,v] = W[h*D + v, d] (c_proj [C,C] → o [H,C,D]) */
static int64_t map_o(int64_t i, const int64_t *p) {
  int64_t D = p[1], C = p[2];
  int64_t v = i % D, d = i / D % C, h = i / (D * C);
  return (h * D + v) * C + d;
}
/* p = {rows, cols} of the output: out[r,c] = W[c,r] (transpose) */
static int64_t map_t(int64_t i, const int64_t *p) { return (i % p[1]) * p[0] + i / p[1]; }

static bool import_layer(Reader *r, const Config *cf, int i, Stored *w) {
  int64_t C = cf->hidden, H = cf->heads, D = cf->head_dim, P = cf->mlp;
  char n[128];
#define T(suffix, shape) (snprintf(n, sizeof n, "h.%d.%s", i, suffix), get(r, n, shape))
  const Tensor *attn_w = T("attn.c_attn.weight", mkshape(2, C, 3 * C, 0));
  const Tensor *attn_b = T("attn.c_attn.bias", mkshape(1, 3 * C, 0, 0));
  const Tensor *proj_w = T("attn.c_proj.weight", mkshape(2, C, C, 0));
  const Tensor *proj_b = T("attn.c_proj.bias", mkshape(1, C, 0, 0));
  const Tensor *ln1_w = T("ln_1.weight", mkshape(1, C, 0, 0)), *ln1_b = T("ln_1.bias", mkshape(1, C, 0, 0));
  const Tensor *ln2_w = T("ln_2.weight", mkshape(1, C, 0, 0)), *ln2_b = T("ln_2.bias", mkshape(1, C, 0, 0));
  const Tensor *fc_w = T("mlp.c_fc.weight", mkshape(2, C, P, 0));
  const Tensor *fc_b = T("mlp.c_fc.bias", mkshape(1, P, 0, 0));
  const Tensor *out_w = T("mlp.c_proj.weight", mkshape(2, P, C, 0));
  const Tensor *out_b = T("mlp.c_proj.bias", mkshape(1, C, 0, 0));
#undef T
  if (!attn_w || !attn_b || !proj_w || !proj_b || !ln1_w || !ln1_b || !ln2_w || !ln2_b || !fc_w || !fc_b ||
      !out_w || !out_b)
    return false;
  Comp *c = r->c;
  bool ok = true;
  for (int64_t part = 0; part < 3 && ok; part++) {
    int64_t pw[4] = {H, D, C, part}, pb[2] = {C, part};
    ok = store_mapped(c, attn_w, mkshape(3, H, D, C), map_qkv, pw, &w[W_Q + 2 * part]) &&
         store_mapped(c, attn_b, mkshape(2, H, D, 0), map_part, pb, &w[W_QB + 2 * part]);
  }
  int64_t po[3] = {H, D, C}, pin[2] = {P, C}, pout[2] = {C, P};
  return ok && store_mapped(c, proj_w, mkshape(3, H, C, D), map_o, po, &w[W_O]) &&
         store_mapped(c, proj_b, proj_b->shape, NULL, NULL, &w[W_OB]) &&
         store_mapped(c, ln1_w, ln1_w->shape, NULL, NULL, &w[W_ALN_S]) &&
         store_mapped(c, ln1_b, ln1_b->shape, NULL, NULL, &w[W_ALN_B]) &&
         store_mapped(c, fc_w, mkshape(2, P, C, 0), map_t, pin, &w[W_IN]) &&
         store_mapped(c, fc_b, fc_b->shape, NULL, NULL, &w[W_INB]) &&
         store_mapped(c, out_w, mkshape(2, C, P, 0), map_t, pout, &w[W_OUT]) &&
         store_mapped(c, out_b, out_b->shape, NULL, NULL, &w[W_OUTB]) &&
         store_mapped(c, ln2_w, ln2_w->shape, NULL, NULL, &w[W_MLN_S]) &&
         store_mapped(c, ln2_b, ln2_b->shape, NULL, NULL, &w[W_MLN_B]);
}

static bool has_tensor(const TensorFile *f, const char *name) {
  for (int i = 0; i < safetensors_count(f); i++)
    if (!strcmp(safetensors_name(f, i), name)) return true;
  return false;
}

/* Reads the checkpoint and writes every weight (and the causal mask) to the store. */
static bool import_weights(Comp *c, const Options *o, Model *m) {
  Loc loc = {o->hf_dir, 0, 0};
  Reader r = {c, NULL, o->random_cfg, ""};
  if (!o->random_cfg) r = (Reader){c, safetensors_open(c, o->hf_dir, loc), o->hf_dir, ""};
  if (o->random_cfg) {
    /* no checkpoint: get() makes every tensor */
  } else if (!r.f) {
    g_exit = diag_exit_code(c) == TOOL_IO ? TOOL_IO : TOOL_BAD;
    return false;
  }
  if (o->random_cfg) {
    /* no checkpoint */
  } else if (has_tensor(r.f, "transformer.wte.weight")) r.prefix = "transformer.";
  else if (!has_tensor(r.f, "wte.weight")) {
    fail(TOOL_BAD, "%s: not a GPT-2 checkpoint: no tensor 'transformer.wte.weight' or 'wte.weight' (%d tensors)",
         o->hf_dir, safetensors_count(r.f));
    return false;
  }
  const Config *cf = &m->cf;
  int64_t C = cf->hidden;
  m->layer = ARENA_ARRAY(&c->arena, Stored, cf->layers * NW);
  for (int i = 0; i < cf->layers; i++)
    if (!import_layer(&r, cf, i, m->layer + (size_t)i * NW)) goto failed;
  const Tensor *wte = get(&r, "wte.weight", mkshape(2, cf->vocab, C, 0));
  const Tensor *wpe = get(&r, "wpe.weight", mkshape(2, cf->n_pos, C, 0));
  const Tensor *lnf_w = get(&r, "ln_f.weight", mkshape(1, C, 0, 0)), *lnf_b = get(&r, "ln_f.bias", mkshape(1, C, 0, 0));
  if (!wte || !wpe || !lnf_w || !lnf_b) goto failed;
  if (!store_mapped(c, wte, wte->shape, NULL, NULL, &m->wte) ||
      !store_mapped(c, wpe, wpe->shape, NULL, NULL, &m->wpe) ||
      !store_mapped(c, lnf_w, lnf_w->shape, NULL, NULL, &m->lnf_scale) ||
      !store_mapped(c, lnf_b, lnf_b->shape, NULL, NULL, &m->lnf_bias))
    goto failed;
  if (!cf->tied) {   /* as HF: with tie_word_embeddings (the default) a stored lm_head is ignored */
    Reader head = r;
    head.prefix = "";
    const Tensor *lm = get(&head, "lm_head.weight", mkshape(2, cf->vocab, C, 0));
    if (!lm || !store_mapped(c, lm, lm->shape, NULL, NULL, &m->unembed)) goto failed;
    m->has_unembed = true;
  }
  /* causal mask [T,T]: 1 where query q may attend to key k (q >= k); a
   * symbolic length computes it from the positions instead (causal_mask) */
  int64_t T = o->seq;
  if (!T) return true;
  Tensor *mask = tensor_new(c, DT_F32, &(Shape){2, {T, T}});
  for (int64_t q = 0; q < T; q++)
    for (int64_t k = 0; k <= q; k++) ((float *)mask->data)[q * T + k] = 1.0f;
  if (!store_mapped(c, mask, mask->shape, NULL, NULL, &m->mask)) goto failed;
  return true;
failed:
  if (g_exit == TOOL_OK) g_exit = diag_exit_code(c) == TOOL_IO ? TOOL_IO : TOOL_BAD;
  return false;
}

/* ------------------------------------------------------------ circuit graph */

/* The circuit is built with the library's text graph (compiler/front/library.h). */
typedef struct G {
  Library lib;
  const Options *o;
  const Model *m;
  const char *B;      /* einsum/rearrange axis of the batch dimension: "B" or "" */
  LibNode *positions; /* symbolic length: the free input `positions`, once made */
} G;

static LibNode *array(G *g, const char *name, const Stored *s) {
  char sh[256];
  return lib_node(&g->lib, name, lib_fmt(&g->lib, "[%s] Array %s", shape_text(sh, sizeof sh, &s->shape), s->hash),
                  NULL);
}

/* layer i's name for the block symbol `s`: the index after the first component
 * (a.w.q → a3.w.q, m.ln.w.scale → m3.ln.w.scale) */
static const char *numbered(G *g, const char *s, int i) {
  const char *dot = strchr(s, '.');
  return lib_fmt(&g->lib, "%.*s%d%s", (int)(dot - s), s, i, dot);
}

/* "<batch axis><axes>": einsum and rearrange axes with the optional batch axis in front */
static const char *bx(G *g, const char *axes) { return lib_fmt(&g->lib, "%s%s", g->B, axes); }

/* The model's outputs. */
typedef struct Outs {
  LibNode *logits, **hidden, *loss;   /* hidden[0..L]; loss NULL without --loss */
} Outs;

/* The sequence length in shapes: T with --seq T, else the library's symbolic
 * size SEQ (1s), which circc -D SEQ=N binds. */
static const char *seq_size(G *g) { return g->o->seq ? lib_fmt(&g->lib, "%lld", (long long)g->o->seq) : "1s"; }

/* Symbolic length: the free input `positions` [SEQ] int64, each token's
 * position. A causal mask or an arange of a symbolic length cannot be built
 * from constants (every node is equivariant under permuting a symbolic axis),
 * so the positions come in as an input. */
static LibNode *positions(G *g) {
  if (!g->positions) g->positions = lib_symbol(&g->lib, "positions", "1s");
  return g->positions;
}

/* The causal mask `t.a.c.causal_mask` [T,T]: 1 where query q may attend to key
 * k. With --seq T the constant q >= k (which the compiler exploits); with a
 * symbolic length step(positions[q] - positions[k] + 0.5), exact for integer
 * positions, which also serves left-padded or offset positions. */
static LibNode *causal_mask(G *g) {
  if (g->o->seq) return array(g, "t.a.c.causal_mask", &g->m->mask);
  LibNode *p = positions(g);
  return lib_node(&g->lib, "t.a.c.causal_mask", "GeneralFunction step",
                  lib_node(&g->lib, "causal_mask.diff", "Add",
                           lib_node(&g->lib, "causal_mask.q", "Rearrange q -> q 1", p, NULL),
                           lib_node(&g->lib, "causal_mask.neg_k", "Einsum k,->k", p,
                                    lib_scalar(&g->lib, "causal_mask.neg", "", -1), NULL),
                           lib_scalar(&g->lib, "causal_mask.half", "", 0.5), NULL),
                  NULL);
}

/* Token + position embeddings `t.inp_tok_pos` [B?,T,C] of the free input
 * `tokens`: wpe's first T rows with --seq T, else wpe gathered by `positions`. */
static LibNode *embeddings(G *g, LibNode *wte) {
  long long Bt = g->o->batch;
  const char *T = seq_size(g);
  LibNode *tokens = lib_symbol(&g->lib, "tokens", Bt ? lib_fmt(&g->lib, "%lld,%s", Bt, T) : T);
  LibNode *tok = lib_node(&g->lib, "tok_embeds", "GeneralFunction gen_index_at_0_c", wte, tokens, NULL);
  LibNode *wpe = array(g, "t.w.pos_embeds", &g->m->wpe);
  LibNode *pos = g->o->seq ? lib_node(&g->lib, "t.w.pos_embeds_idxed", lib_fmt(&g->lib, "Index [0:%s]", T), wpe, NULL)
                         : lib_node(&g->lib, "pos_embeds", "GeneralFunction gen_index_at_0_c", wpe, positions(g), NULL);
  return lib_node(&g->lib, "t.inp_tok_pos", "Add", tok, pos, NULL);
}

/* `hidden{i}`: an identity over x, so the output carries that name. */
static LibNode *identity(G *g, const char *name, LibNode *x) {
  const char *ax = g->o->batch ? "b s h" : "s h";
  return lib_node(&g->lib, name, lib_fmt(&g->lib, "Rearrange %s -> %s", ax, ax), x, NULL);
}

/* --loss: `loss` = -mean over positions s < T-1 of log_softmax(logits[s])[targets[s]]
 * (targets[s] = the token after position s, i.e. tokens[1:] for a text), via the
 * library's log-likelihood `ll` (§9 E9) batched over [B?,T-1]. */
static LibNode *loss_output(G *g, LibNode *logits) {
  long long T = g->o->seq, Bt = g->o->batch;
  LibNode *targets =
      lib_symbol(&g->lib, "targets", Bt ? lib_fmt(&g->lib, "%lld,%lld", Bt, T - 1) : lib_fmt(&g->lib, "%lld", T - 1));
  LibNode *lg =
      lib_node(&g->lib, "loss.logits", lib_fmt(&g->lib, "Index [%s0:%lld]", Bt ? ":," : "", T - 1), logits, NULL);
  LibNode *ll;
  if (g->o->flat) {
    ll = lib_node(&g->lib, "ll", "GeneralFunction gen_index_at_0_batch_x_c",
            lib_node(&g->lib, "log_probs", "GeneralFunction log_softmax", lg, NULL), targets, NULL);
  } else {
    LibNode *in = lib_symbol(&g->lib, "ll.input", "9s"), *label = lib_symbol(&g->lib, "ll.label", "");
    LibNode *spec = lib_node(&g->lib, "ll", "GeneralFunction gen_index_at_0_batch_x_c",
                     lib_node(&g->lib, "log_probs", "GeneralFunction log_softmax", in, NULL), label, NULL);
    ll = lib_module(&g->lib, "ll.call", spec);
    lib_arg(&g->lib, ll, lg, in);
    lib_arg(&g->lib, ll, targets, label);
  }
  return lib_node(&g->lib, "loss", lib_fmt(&g->lib, "Einsum %s,->", Bt ? "ab" : "a"), ll,
            lib_scalar(&g->lib, "loss.c.neg_recip_n", "", -1.0 / (double)((Bt ? Bt : 1) * (T - 1))), NULL);
}

/* ------------------------------------------------------------ module form */

static void module_form(G *g, Outs *out) {
  const Model *m = g->m;
  int L = (int)m->cf.layers;
  LibNode *ln = lib_ln_spec(&g->lib, m->cf.eps);
  LibNode *b = lib_block_spec(&g->lib, ln, m->cf.act), *b_input = lib_find(&g->lib, "b.input");
  /* b{i} binds the block's weight symbols to layer i's; b{i}.call binds b.input */
  LibNode *t_input = lib_symbol(&g->lib, "t.input", "1s,0s");
  LibNode **wsym = ARENA_ARRAY(&g->lib.c->arena, LibNode *, (size_t)L * NW);
  LibNode **calls = ARENA_ARRAY(&g->lib.c->arena, LibNode *, (size_t)L);
  LibNode *prev = t_input;
  for (int i = 0; i < L; i++) {
    LibNode *bi = lib_module(&g->lib, lib_fmt(&g->lib, "b%d", i), b);
    for (int w = 0; w < NW; w++) {
      wsym[i * NW + w] = lib_symbol(&g->lib, numbered(g, LIB_BLOCK_WEIGHT[w].name, i), LIB_BLOCK_WEIGHT[w].shape);
      lib_arg(&g->lib, bi, wsym[i * NW + w], lib_find(&g->lib, LIB_BLOCK_WEIGHT[w].name));
    }
    calls[i] = lib_module(&g->lib, lib_fmt(&g->lib, "b%d.call", i), bi);
    lib_arg(&g->lib, calls[i], prev, b_input);
    prev = calls[i];
  }
  LibNode *final_call = lib_module(&g->lib, "final.call", lib_norm_bind(&g->lib, ln, "final"));
  lib_arg(&g->lib, final_call, prev, lib_find(&g->lib, "final.norm.input"));
  LibNode *unembed = lib_symbol(&g->lib, "t.w.unembed", "10s,0s");
  LibNode *t_logits = lib_node(&g->lib, "t.logits", "Einsum sh,vh->sv", final_call, unembed, NULL);
  /* weight Arrays: t.bind_w binds all of them, hidden{i}.bind_w those its spec uses */
  LibNode **warr = ARENA_ARRAY(&g->lib.c->arena, LibNode *, (size_t)L * NW);
  for (int i = 0; i < L * NW; i++) warr[i] = array(g, lib_fmt(&g->lib, "%s_arr", lib_name(wsym[i])), &m->layer[i]);
  LibNode *fln_s = array(g, "final.ln.w.scale_arr", &m->lnf_scale),
          *fln_b = array(g, "final.ln.w.bias_arr", &m->lnf_bias);
  LibNode *wte = array(g, "t.w.tok_embeds", &m->wte);
  LibNode *bind_w = lib_module(&g->lib, "t.bind_w", t_logits);
  for (int i = 0; i < L * NW; i++) lib_arg(&g->lib, bind_w, warr[i], wsym[i]);
  lib_arg(&g->lib, bind_w, fln_s, lib_find(&g->lib, "final.ln.w.scale"));
  lib_arg(&g->lib, bind_w, fln_b, lib_find(&g->lib, "final.ln.w.bias"));
  /* tied: the embedding matrix itself is the unembedding */
  lib_arg(&g->lib, bind_w, m->has_unembed ? array(g, "t.w.unembed_arr", &m->unembed) : wte, unembed);
  LibNode *inp = embeddings(g, wte);
  LibNode *mask = causal_mask(g), *a_mask = lib_find(&g->lib, "a.mask");
  out->logits = lib_module(&g->lib, "logits", bind_w);   /* the library's t.call */
  lib_arg(&g->lib, out->logits, inp, t_input);
  lib_arg(&g->lib, out->logits, mask, a_mask);
  out->hidden = ARENA_ARRAY(&g->lib.c->arena, LibNode *, (size_t)L + 1);
  out->hidden[0] = identity(g, "hidden0", inp);
  for (int i = 1; i <= L; i++) {
    LibNode *bw = lib_module(&g->lib, lib_fmt(&g->lib, "hidden%d.bind_w", i), i < L ? calls[i - 1] : final_call);
    for (int k = 0; k < i * NW; k++) lib_arg(&g->lib, bw, warr[k], wsym[k]);
    if (i == L) {
      lib_arg(&g->lib, bw, fln_s, lib_find(&g->lib, "final.ln.w.scale"));
      lib_arg(&g->lib, bw, fln_b, lib_find(&g->lib, "final.ln.w.bias"));
    }
    out->hidden[i] = lib_module(&g->lib, lib_fmt(&g->lib, "hidden%d", i), bw);
    lib_arg(&g->lib, out->hidden[i], inp, t_input);
    lib_arg(&g->lib, out->hidden[i], mask, a_mask);
  }
}

/* ------------------------------------------------------------ flat form */

/* Layer norm of x [B?,T,C], named `{p}.norm` as after substitution; the
 * constants are shared by every layer norm. */
static LibNode *flat_ln(G *g, const char *p, LibNode *x, const Stored *scale, const Stored *bias) {
  LibNode *neg = lib_find(&g->lib, "ln.neg"), *recip = lib_find(&g->lib, "ln.c.recip_hidden_size");
  LibNode *ms = lib_node(&g->lib, lib_fmt(&g->lib, "%s.ln.mean_subbed", p), "Add", x,
                         lib_node(&g->lib, lib_fmt(&g->lib, "%s.ln.neg_mean", p),
                                  lib_fmt(&g->lib, "Einsum %s,z,->%s", bx(g, "sh"), bx(g, "sz")), x, neg, recip, NULL),
                         NULL);
  LibNode *var =
      lib_node(&g->lib, lib_fmt(&g->lib, "%s.ln.var", p),
               lib_fmt(&g->lib, "Einsum %s,%s,->%s", bx(g, "sh"), bx(g, "sh"), bx(g, "s")), ms, ms, recip, NULL);
  LibNode *rsqrt = lib_node(
      &g->lib, lib_fmt(&g->lib, "%s.ln.rsqrt", p), "GeneralFunction rsqrt",
      lib_node(&g->lib, lib_fmt(&g->lib, "%s.ln.var_p_eps", p), "Add", lib_find(&g->lib, "ln.c.eps"), var, NULL), NULL);
  LibNode *y = lib_node(&g->lib, lib_fmt(&g->lib, "%s.ln.y", p),
                        lib_fmt(&g->lib, "Einsum %s,%s->%s", bx(g, "sh"), bx(g, "s"), bx(g, "sh")), ms, rsqrt, NULL);
  LibNode *ys = lib_node(&g->lib, lib_fmt(&g->lib, "%s.ln.y_scaled", p),
                         lib_fmt(&g->lib, "Einsum %s,h->%s", bx(g, "sh"), bx(g, "sh")), y,
                         array(g, lib_fmt(&g->lib, "%s.ln.w.scale", p), scale), NULL);
  return lib_node(&g->lib, lib_fmt(&g->lib, "%s.norm", p), "Add", array(g, lib_fmt(&g->lib, "%s.ln.w.bias", p), bias),
                  ys, NULL);
}

/* Attention of layer i of the flat circuit on the normalized input n [B?,T,C]
 * (weights W): causal self-attention with the mask t.a.c.causal_mask. */
static LibNode *flat_attn(G *g, int i, LibNode *n, LibNode *const *W) {
  const char *a = lib_fmt(&g->lib, "a%d", i);
  const char *proj = lib_fmt(&g->lib, "Einsum %s,hcd->%s", bx(g, "sd"), bx(g, "shc"));
  LibNode *q = lib_node(&g->lib, lib_fmt(&g->lib, "%s.q_p_bias", a), "Add",
                        lib_node(&g->lib, lib_fmt(&g->lib, "%s.q", a), proj, n, W[W_Q], NULL), W[W_QB], NULL);
  LibNode *k = lib_node(&g->lib, lib_fmt(&g->lib, "%s.k_p_bias", a), "Add",
                        lib_node(&g->lib, lib_fmt(&g->lib, "%s.k", a), proj, n, W[W_K], NULL), W[W_KB], NULL);
  LibNode *raw = lib_node(&g->lib, lib_fmt(&g->lib, "%s.attn_scores_raw", a),
                  lib_fmt(&g->lib, "Einsum %s,%s,,qk->%s", bx(g, "qhc"), bx(g, "khc"), bx(g, "hqk")), q, k,
                  lib_find(&g->lib, "a.c.div_head_size"), lib_find(&g->lib, "t.a.c.causal_mask"), NULL);
  LibNode *probs = lib_node(&g->lib, lib_fmt(&g->lib, "%s.attn_probs", a), "GeneralFunction softmax",
                            lib_node(&g->lib, lib_fmt(&g->lib, "%s.attn_scores", a), "Add", raw,
                                     lib_find(&g->lib, "a.score_neg_inf_bias"), NULL),
                            NULL);
  LibNode *v = lib_node(&g->lib, lib_fmt(&g->lib, "%s.v_p_bias", a), "Add",
                        lib_node(&g->lib, lib_fmt(&g->lib, "%s.v", a),
                                 lib_fmt(&g->lib, "Einsum %s,hVd->%s", bx(g, "sd"), bx(g, "shV")), n, W[W_V], NULL),
                        W[W_VB], NULL);
  LibNode *comb =
      lib_node(&g->lib, lib_fmt(&g->lib, "%s.comb_v", a),
               lib_fmt(&g->lib, "Einsum %s,%s->%s", bx(g, "hqk"), bx(g, "khV"), bx(g, "hqV")), probs, v, NULL);
  LibNode *heads = lib_node(&g->lib, lib_fmt(&g->lib, "%s.heads", a),
                            lib_fmt(&g->lib, "Einsum %s,hdV->%s", bx(g, "hsV"), bx(g, "hsd")), comb, W[W_O], NULL);
  return lib_node(&g->lib, lib_fmt(&g->lib, "%s.p_bias", a), "Add",
                  lib_node(&g->lib, a, lib_fmt(&g->lib, "Einsum %s->%s", bx(g, "hsd"), bx(g, "sd")), heads, NULL),
                  W[W_OB], NULL);
}

/* Attention of layer i of the decode circuit at one new position (n [1,C]):
 * this position's keys and values k_new, v_new [1,H,D] (returned through
 * k_out, v_out) are not written into the cache: the scores of the cached keys
 * (past_k[i] [H,T,D], kv_mask 1 for j < pos, the −10000 convention) and the
 * new key's score are joined by Concat into [H,T+1], one softmax, then the
 * values are probs[:, :T]·past_v[i] + probs[:, T]·v_new. So no [H,T,D] tensor
 * is built, and the result is row `pos` of the full causal attention of
 * flat_attn (the masked cache rows get probability exactly 0 there too). */
static LibNode *decode_attn(G *g, int i, LibNode *n, LibNode *const *W, LibNode **k_out, LibNode **v_out) {
  const char *a = lib_fmt(&g->lib, "a%d", i);
  LibNode *div = lib_find(&g->lib, "a.c.div_head_size");
  LibNode *q =
      lib_node(&g->lib, lib_fmt(&g->lib, "%s.q_p_bias", a), "Add",
               lib_node(&g->lib, lib_fmt(&g->lib, "%s.q", a), "Einsum sd,hcd->shc", n, W[W_Q], NULL), W[W_QB], NULL);
  LibNode *k =
      lib_node(&g->lib, lib_fmt(&g->lib, "%s.k_p_bias", a), "Add",
               lib_node(&g->lib, lib_fmt(&g->lib, "%s.k", a), "Einsum sd,hcd->shc", n, W[W_K], NULL), W[W_KB], NULL);
  LibNode *v =
      lib_node(&g->lib, lib_fmt(&g->lib, "%s.v_p_bias", a), "Add",
               lib_node(&g->lib, lib_fmt(&g->lib, "%s.v", a), "Einsum sd,hVd->shV", n, W[W_V], NULL), W[W_VB], NULL);
  LibNode *past_k = lib_node(&g->lib, lib_fmt(&g->lib, "%s.past_k", a), lib_fmt(&g->lib, "Index [%d]", i),
                             lib_find(&g->lib, "past_k"), NULL);
  LibNode *past_v = lib_node(&g->lib, lib_fmt(&g->lib, "%s.past_v", a), lib_fmt(&g->lib, "Index [%d]", i),
                             lib_find(&g->lib, "past_v"), NULL);
  LibNode *past_raw = lib_node(&g->lib, lib_fmt(&g->lib, "%s.past_scores_raw", a), "Einsum shc,hkc,,k->hk", q, past_k,
                               div, lib_find(&g->lib, "kv_mask"), NULL);
  LibNode *past = lib_node(&g->lib, lib_fmt(&g->lib, "%s.past_scores", a), "Add", past_raw,
                           lib_find(&g->lib, "a.score_neg_inf_bias"), NULL);
  LibNode *own = lib_node(&g->lib, lib_fmt(&g->lib, "%s.new_score", a), "Einsum shc,shc,->hs", q, k, div, NULL);
  LibNode *probs = lib_node(&g->lib, lib_fmt(&g->lib, "%s.attn_probs", a), "GeneralFunction softmax",
                    lib_node(&g->lib, lib_fmt(&g->lib, "%s.attn_scores", a), "Concat 1", past, own, NULL), NULL);
  LibNode *p_past = lib_node(&g->lib, lib_fmt(&g->lib, "%s.past_probs", a), "Index [:,:-1]", probs, NULL);
  LibNode *p_new = lib_node(&g->lib, lib_fmt(&g->lib, "%s.new_prob", a), "Index [:,-1]", probs, NULL);
  LibNode *comb =
      lib_node(&g->lib, lib_fmt(&g->lib, "%s.comb_v", a), "Add",
               lib_node(&g->lib, lib_fmt(&g->lib, "%s.past_comb_v", a), "Einsum hk,hkV->hV", p_past, past_v, NULL),
               lib_node(&g->lib, lib_fmt(&g->lib, "%s.new_comb_v", a), "Einsum h,shV->shV", p_new, v, NULL), NULL);
  LibNode *heads = lib_node(&g->lib, lib_fmt(&g->lib, "%s.heads", a), "Einsum shV,hdV->shd", comb, W[W_O], NULL);
  *k_out = k, *v_out = v;
  return lib_node(&g->lib, lib_fmt(&g->lib, "%s.p_bias", a), "Add", lib_node(&g->lib, a, "Einsum shd->sd", heads, NULL),
                  W[W_OB], NULL);
}

/* Block i of the flat circuit on the residual stream x; returns `b{i}`. With
 * k_new (the decode circuit) its attention is decode_attn's. */
static LibNode *flat_block(G *g, int i, LibNode *x, LibNode **k_new, LibNode **v_new) {
  const Stored *w = g->m->layer + (size_t)i * NW;
  LibNode *W[NW] = {0};
  for (int k = 0; k < NW; k++)
    if (k != W_ALN_S && k != W_ALN_B && k != W_MLN_S && k != W_MLN_B)
      W[k] = array(g, numbered(g, LIB_BLOCK_WEIGHT[k].name, i), &w[k]);
  const char *a = lib_fmt(&g->lib, "a%d", i), *m = lib_fmt(&g->lib, "m%d", i);
  LibNode *n = flat_ln(g, a, x, &w[W_ALN_S], &w[W_ALN_B]);
  LibNode *attn = k_new ? decode_attn(g, i, n, W, k_new, v_new) : flat_attn(g, i, n, W);
  LibNode *resid_a = lib_node(&g->lib, lib_fmt(&g->lib, "b%d.resid.a", i), "Add", attn, x, NULL);
  LibNode *mn = flat_ln(g, m, resid_a, &w[W_MLN_S], &w[W_MLN_B]);
  LibNode *pre = lib_node(&g->lib, lib_fmt(&g->lib, "%s.pre", m), "Add",
                          lib_node(&g->lib, lib_fmt(&g->lib, "%s.pre_mul", m),
                                   lib_fmt(&g->lib, "Einsum %s,hi->%s", bx(g, "si"), bx(g, "sh")), mn, W[W_IN], NULL),
                          W[W_INB], NULL);
  LibNode *act =
      lib_node(&g->lib, lib_fmt(&g->lib, "%s.act", m), lib_fmt(&g->lib, "GeneralFunction %s", g->m->cf.act), pre, NULL);
  LibNode *mlp = lib_node(
      &g->lib, lib_fmt(&g->lib, "%s.p_bias", m), "Add",
      lib_node(&g->lib, m, lib_fmt(&g->lib, "Einsum %s,oh->%s", bx(g, "sh"), bx(g, "so")), act, W[W_OUT], NULL),
      W[W_OUTB], NULL);
  return lib_node(&g->lib, lib_fmt(&g->lib, "b%d", i), "Add", mlp, resid_a, NULL);
}

static void flat_form(G *g, Outs *out) {
  const Model *m = g->m;
  int L = (int)m->cf.layers;
  /* constants shared by all layers */
  lib_scalar(&g->lib, "ln.neg", "1", -1);
  lib_scalar(&g->lib, "ln.c.recip_hidden_size", "", 1.0 / (double)m->cf.hidden);
  lib_scalar(&g->lib, "ln.c.eps", "", m->cf.eps);
  lib_scalar(&g->lib, "a.c.div_head_size", "", 1.0 / sqrt((double)m->cf.head_dim));
  LibNode *mask = causal_mask(g);
  LibNode *not_mask = lib_node(
      &g->lib, "a.not_mask", "Add", lib_scalar(&g->lib, "one", "", 1),
      lib_node(&g->lib, "not_mask.neg", "Einsum qk,->qk", mask, lib_scalar(&g->lib, "neg_one", "", -1), NULL), NULL);
  lib_node(&g->lib, "a.score_neg_inf_bias", "Einsum qk,->qk", not_mask,
           lib_node(&g->lib, "a.neg_inf", "[] Scalar -10_000.0", NULL), NULL);
  LibNode *wte = array(g, "t.w.tok_embeds", &m->wte);
  LibNode *x = embeddings(g, wte);
  out->hidden = ARENA_ARRAY(&g->lib.c->arena, LibNode *, (size_t)L + 1);
  out->hidden[0] = identity(g, "hidden0", x);
  for (int i = 0; i < L; i++) {
    x = flat_block(g, i, x, NULL, NULL);
    if (i + 1 < L) out->hidden[i + 1] = identity(g, lib_fmt(&g->lib, "hidden%d", i + 1), x);
  }
  LibNode *fin = flat_ln(g, "final", x, &m->lnf_scale, &m->lnf_bias);
  out->hidden[L] = identity(g, lib_fmt(&g->lib, "hidden%d", L), fin);
  LibNode *unembed = m->has_unembed ? array(g, "t.w.unembed", &m->unembed) : wte;
  out->logits =
      lib_node(&g->lib, "logits", lib_fmt(&g->lib, "Einsum %s,vh->%s", bx(g, "sh"), bx(g, "sv")), fin, unembed, NULL);
}

/* ------------------------------------------------------------ decode form */

/* The decode circuit (--decode, module-free form): the model at one new
 * position `pos` given the keys and values of the earlier positions, for
 * generation without recomputing the prefix. Free inputs: token [1] int64 (the
 * new token), pos [1] int64 (its position), kv_mask [T] (1 for j < pos),
 * past_k and past_v [L,H,T,D] (the cache; rows j >= pos are ignored); T is the
 * --seq length or the symbolic SEQ. Outputs: logits [V]
 * at pos, new_k and new_v [L,H,D] (this position's keys and values, to store
 * at row pos of the cache). Per-layer names are the flat form's (a{i}.q,
 * b{i}.resid.a, m{i}.act, ...). */
static void decode_form(G *g, LibNode **logits, LibNode **new_k, LibNode **new_v) {
  const Model *m = g->m;
  int L = (int)m->cf.layers;
  long long H = m->cf.heads, D = m->cf.head_dim;
  const char *T = seq_size(g);
  lib_scalar(&g->lib, "ln.neg", "1", -1);
  lib_scalar(&g->lib, "ln.c.recip_hidden_size", "", 1.0 / (double)m->cf.hidden);
  lib_scalar(&g->lib, "ln.c.eps", "", m->cf.eps);
  lib_scalar(&g->lib, "a.c.div_head_size", "", 1.0 / sqrt((double)m->cf.head_dim));
  LibNode *token = lib_symbol(&g->lib, "token", "1"), *pos = lib_symbol(&g->lib, "pos", "1");
  LibNode *mask = lib_symbol(&g->lib, "kv_mask", T);
  const char *cache = lib_fmt(&g->lib, "%d,%lld,%s,%lld", L, H, T, D);
  lib_symbol(&g->lib, "past_k", cache);
  lib_symbol(&g->lib, "past_v", cache);
  LibNode *not_mask = lib_node(
      &g->lib, "a.not_mask", "Add", lib_scalar(&g->lib, "one", "", 1),
      lib_node(&g->lib, "not_mask.neg", "Einsum k,->k", mask, lib_scalar(&g->lib, "neg_one", "", -1), NULL), NULL);
  lib_node(&g->lib, "a.score_neg_inf_bias", "Einsum k,->k", not_mask,
           lib_node(&g->lib, "a.neg_inf", "[] Scalar -10_000.0", NULL), NULL);
  LibNode *wte = array(g, "t.w.tok_embeds", &m->wte);
  /* with a symbolic T the whole table: a T beyond n_positions fails (index out
   * of range) at the first position past the table */
  LibNode *pos_table = array(g, "t.w.pos_embeds", &m->wpe);
  if (g->o->seq)
    pos_table = lib_node(&g->lib, "t.w.pos_embeds_idxed", lib_fmt(&g->lib, "Index [0:%s]", T), pos_table, NULL);
  LibNode *x =
      lib_node(&g->lib, "t.inp_tok_pos", "Add",
               lib_node(&g->lib, "tok_embeds", "GeneralFunction gen_index_at_0_c", wte, token, NULL),
               lib_node(&g->lib, "pos_embeds", "GeneralFunction gen_index_at_0_c", pos_table, pos, NULL), NULL);
  *new_k = lib_node(&g->lib, "new_k", "Concat 0", NULL);
  *new_v = lib_node(&g->lib, "new_v", "Concat 0", NULL);
  for (int i = 0; i < L; i++) {
    LibNode *k, *v;
    x = flat_block(g, i, x, &k, &v);
    lib_add_child(&g->lib, *new_k, k);
    lib_add_child(&g->lib, *new_v, v);
  }
  LibNode *fin = flat_ln(g, "final", x, &m->lnf_scale, &m->lnf_bias);
  LibNode *unembed = m->has_unembed ? array(g, "t.w.unembed", &m->unembed) : wte;
  *logits = lib_node(&g->lib, "logits", "Einsum sh,vh->v", fin, unembed, NULL);
}

/* Closes the memstream f (open_memstream(text, len): both are set by the
 * close) and writes the text to path; false (exit code set) on failure. */
static bool finish_circuit(FILE *f, char **text, const size_t *len, const char *path) {
  if (fclose(f) != 0 || !*text) {
    free(*text);
    fail(TOOL_IO, "out of memory");
    return false;
  }
  bool ok = tool_write_file(path, *text, *len);
  free(*text);
  if (!ok) g_exit = TOOL_IO;
  return ok;
}

/* Writes OUT/<name>_decode.circ (see decode_form). */
static bool write_decode_circuit(Comp *c, const Options *o, const Model *m) {
  Options plain = *o;
  plain.batch = 0;
  G g = {.lib = {.c = c, .uuid = tool_uuid}, .o = &plain, .m = m, .B = ""};
  LibNode *logits, *new_k, *new_v;
  decode_form(&g, &logits, &new_k, &new_v);
  lib_check_unique_names(&g.lib);
  const Config *cf = &m->cf;
  long long L = cf->layers, H = cf->heads, D = cf->head_dim, V = cf->vocab;
  const char *T = o->seq ? seq_size(&g) : "SEQ";
  char *text = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&text, &len);
  if (!f) {
    fail(TOOL_IO, "out of memory");
    return false;
  }
  fprintf(f, "# GPT-2 (Hugging Face GPT2LMHeadModel) at one new position, with a key/value cache: the decode\n"
             "# circuit of %s.circ in rust_circuit's module-free form; generated by gpt2_import --decode\n", o->name);
  fprintf(f,
          "# layers %lld, hidden %lld, heads %lld x %lld, mlp %lld, vocab %lld, n_positions %lld, max length %s, %s, "
          "layer norm eps %g, %s unembedding\n",
          L, (long long)cf->hidden, H, D, (long long)cf->mlp, V, (long long)cf->n_pos,
          o->seq ? T : "SEQ (symbolic size 1s: circc -D SEQ=N, N <= n_positions)", cf->act, cf->eps,
          m->has_unembed ? "untied" : "tied");
  fprintf(f, "# inputs:  token [1] int64 (the new token), pos [1] int64 (its position), kv_mask [%s] (1 for\n"
             "#          j < pos), past_k and past_v [%lld,%lld,%s,%lld] (keys/values of the earlier positions per\n"
             "#          layer and head; rows >= pos are ignored)\n", T, L, H, T, D);
  fprintf(f, "# outputs: logits [%lld] at pos (= row pos of the full circuit's logits), new_k and new_v\n"
             "#          [%lld,%lld,%lld] (this position's keys/values: store them at row pos of the cache)\n", V, L, H,
          D);
  lib_print(f, logits);
  lib_print(f, new_k);
  lib_print(f, new_v);
  const char *path = arena_printf(&c->arena, "%s/%s_decode.circ", o->out_dir, o->name);
  bool ok = finish_circuit(f, &text, &len, path);
  if (ok)
    printf("gpt2_import: decode circuit (one position, key/value cache of %s positions%s): wrote %s\n", T,
           o->seq ? "" : ": compile with circc -D SEQ=N", path);
  return ok;
}

/* ------------------------------------------------------------ writing */

static bool write_circuit(Comp *c, const Options *o, const Model *m) {
  G g = {.lib = {.c = c, .uuid = tool_uuid}, .o = o, .m = m, .B = o->batch ? "B" : ""};
  Outs out = {0};
  if (o->flat) flat_form(&g, &out);
  else module_form(&g, &out);
  if (o->loss) out.loss = loss_output(&g, out.logits);
  lib_check_unique_names(&g.lib);
  const Config *cf = &m->cf;
  char *text = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&text, &len);
  if (!f) {
    fail(TOOL_IO, "out of memory");
    return false;
  }
  long long L = cf->layers, C = cf->hidden, V = cf->vocab;
  const char *bd = o->batch ? lib_fmt(&g.lib, "%lld,", (long long)o->batch) : "";
  const char *T = o->seq ? seq_size(&g) : "SEQ";
  fprintf(f, "# GPT-2 (Hugging Face GPT2LMHeadModel) in rust_circuit's %s; generated by gpt2_import\n",
          o->flat ? "module-free form" : "module form (rust_circuit_format.md §7.1-7.2)");
  fprintf(f, "# layers %lld, hidden %lld, heads %lld x %lld, mlp %lld, vocab %lld, n_positions %lld, %s, "
          "layer norm eps %g, %s unembedding\n", L, C, (long long)cf->heads, (long long)cf->head_dim,
          (long long)cf->mlp, V, (long long)cf->n_pos, cf->act, cf->eps, m->has_unembed ? "untied" : "tied");
  if (!o->seq)
    fprintf(f, "# sequence length SEQ: symbolic size 1s, bound by circc -D SEQ=N (N <= n_positions)\n");
  fprintf(f, "# inputs:  tokens [%s%s] int64%s%s\n", bd, T,
          o->seq ? "" : ", positions [SEQ] int64 (0..SEQ-1 for a text; they set the causal mask)",
          o->loss ? lib_fmt(&g.lib, ", targets [%s%lld] int64 (targets[s] = the token after position s)", bd,
                        (long long)o->seq - 1) : "");
  fprintf(f, "# outputs: logits [%s%s,%lld]; hidden0..hidden%lld [%s%s,%lld] (Hugging Face's hidden_states: "
          "embeddings, residual stream after each block, after the final layer norm)\n", bd, T, V, L, bd, T, C);
  if (o->loss)
    fprintf(f, "#          loss [] = mean cross-entropy of targets given logits[...,:-1]\n");
  lib_print(f, out.logits);
  for (int i = 0; i <= L; i++) lib_print(f, out.hidden[i]);
  if (out.loss) lib_print(f, out.loss);
  const char *path = arena_printf(&c->arena, "%s/%s.circ", o->out_dir, o->name);
  bool ok = finish_circuit(f, &text, &len, path);
  if (ok)
    printf("gpt2_import: %lld layers, hidden %lld, %lld heads, vocab %lld, T=%s%s%s: wrote %s\n", L, C,
           (long long)cf->heads, V, T, o->batch ? lib_fmt(&g.lib, ", batch %lld", (long long)o->batch) : "",
           o->loss ? ", loss" : "", path);
  return ok;
}

/* ------------------------------------------------------------ model file */

/* --model-file: the checkpoint as the model file rust_circuit's
 * TransformerInfo.dump_model_string writes (model_files.md §1): the `# info`
 * line, t.w.tok_embeds, t.w.pos_embeds and t.bind_w binding every weight
 * symbol of the library those params make to an `_arr` Array. The per-layer
 * symbols are restated with the UUIDs of circc's own library builder
 * (model_library), which is what a reader checks them against. */

/* The `# info` JSON of GPT-2: pre-norm blocks with attention and MLP biases,
 * learned absolute positions added to the input, causal, tied or untied
 * unembedding without a bias. */
static const char *model_info(Comp *c, const Config *cf) {
  return arena_printf(&c->arena,
                      "{\"params\": {\"block_params\": {\"norm_type\": \"ln\", \"attn_bias\": true, "
                      "\"attn_pos\": false, \"use_mlp\": true, \"mlp_act_type\": \"%s\", \"mlp_output_bias\": true}, "
                      "\"num_layers\": %lld, \"use_norm_output\": true, \"output_bias\": false}, "
                      "\"model_class\": \"GPT\", \"pos_enc_type\": \"gpt\", \"causal_mask\": true, \"extra\": null}",
                      cf->act, (long long)cf->layers);
}

/* A layer's weights in the order dump_model_string writes them (REMIX's
 * gelu_12_tied.circ): attention norm, attention, MLP norm, MLP. */
static const char *const FILE_WEIGHT_ORDER[LIB_BLOCK_WEIGHTS] = {
    "a.ln.w.bias", "a.ln.w.scale", "a.w.q", "a.w.k", "a.w.v", "a.w.o", "a.w.q_bias", "a.w.k_bias",
    "a.w.v_bias", "a.w.o_bias", "m.ln.w.bias", "m.ln.w.scale", "m.w.proj_in", "m.w.in_bias", "m.w.proj_out",
    "m.w.out_bias",
};

/* Layer i's Symbol for the block weight `name`: the value the library's b{i} binds to it. */
static const Node *layer_symbol(const ModelLibrary *lib, int i, const char *name) {
  char block[32];
  snprintf(block, sizeof block, "b%d", i);
  for (int r = 0; r < lib->refs.n; r++) {
    const Node *b = lib->refs.node[r];
    if (strcmp(lib->refs.name[r], block) || b->kind != NK_Module) continue;
    for (int k = 0; k < module_nargs(b); k++)
      if (!strcmp(b->u.module.arg[k].symbol->name, name)) return b->child[k + 1];
  }
  ICE("the model library has no '%s' bound by 'b%d'", name, i);
}

static void print_weight(FILE *f, const char *name, const Stored *s) {
  char sh[256];
  fprintf(f, "  '%s_arr' [%s] Array %s ! '%s'", name, shape_text(sh, sizeof sh, &s->shape), s->hash, name);
}

static bool write_model_file(Comp *c, const Options *o, const Model *m) {
  const Config *cf = &m->cf;
  if (cf->eps != 1e-5) {
    fail(TOOL_BAD, "--model-file: layer_norm_epsilon %g is not supported: rust_circuit's library layer norm has "
         "eps 1e-5", cf->eps);
    return false;
  }
  const char *info = arena_printf(&c->arena, "# info:%s\n", model_info(c, cf));
  SourceFile src = {arena_printf(&c->arena, "%s (# info)", o->name), info, strlen(info)};
  ModelLibrary lib;
  if (!model_library(c, &src, &lib)) ICE("the library of gpt2_import's own # info does not build");
  char *text = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&text, &len);
  if (!f) {
    fail(TOOL_IO, "out of memory");
    return false;
  }
  char sh[256];
  fputs(info, f);
  fprintf(f, "'t.w.tok_embeds' [%s] Array %s\n", shape_text(sh, sizeof sh, &m->wte.shape), m->wte.hash);
  fprintf(f, "'t.w.pos_embeds' [%s] Array %s\n", shape_text(sh, sizeof sh, &m->wpe.shape), m->wpe.hash);
  fputs("'t.bind_w' Module\n  't.logits'\n", f);
  for (int i = 0; i < cf->layers; i++)
    for (int k = 0; k < LIB_BLOCK_WEIGHTS; k++) {
      int w = 0;
      while (strcmp(LIB_BLOCK_WEIGHT[w].name, FILE_WEIGHT_ORDER[k])) w++;
      const Node *sym = layer_symbol(&lib, i, FILE_WEIGHT_ORDER[k]);
      print_weight(f, sym->name, &m->layer[(size_t)i * NW + (size_t)w]);
      fprintf(f, " %s Symbol %s\n", shape_str(c, &sym->shape), sym->u.symbol.uuid);
    }
  /* library symbols (dict entries): by name */
  print_weight(f, "final.ln.w.bias", &m->lnf_bias);
  fputc('\n', f);
  print_weight(f, "final.ln.w.scale", &m->lnf_scale);
  fputc('\n', f);
  print_weight(f, "t.w.unembed", m->has_unembed ? &m->unembed : &m->wte);
  fprintf(f, "\n\n# originally %s (Hugging Face GPT-2, written by gpt2_import --model-file)\n", o->hf_dir);
  const char *path = arena_printf(&c->arena, "%s/%s.circ", o->out_dir, o->name);
  bool ok = finish_circuit(f, &text, &len, path);
  if (ok)
    printf("gpt2_import: %lld layers, hidden %lld, %lld heads, vocab %lld, %s unembedding: wrote the model file %s\n",
           (long long)cf->layers, (long long)cf->hidden, (long long)cf->heads, (long long)cf->vocab,
           m->has_unembed ? "untied" : "tied", path);
  return ok;
}

/* ------------------------------------------------------------ main */

static bool parse_count(const char *flag, const char *s, int64_t max, int64_t *out) {
  char *end = NULL;
  errno = 0;
  long long v = s ? strtoll(s, &end, 10) : 0;
  if (!s || v < 1 || v > max || errno || *end) {
    tool_error("%s expects a number from 1 to %lld, found '%s'", flag, (long long)max, s ? s : "nothing");
    return false;
  }
  *out = v;
  return true;
}

static int parse_args(int argc, char **argv, Options *o) {
  const char *files[2];
  int nfiles = 0;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
      fputs(USAGE, stdout);
      exit(TOOL_OK);
    } else if (!strcmp(a, "--seq")) {
      if (!parse_count(a, i + 1 < argc ? argv[++i] : NULL, MAX_SEQ, &o->seq)) return TOOL_USAGE;
    } else if (!strcmp(a, "--batch")) {
      if (!parse_count(a, i + 1 < argc ? argv[++i] : NULL, 1 << 20, &o->batch)) return TOOL_USAGE;
    } else if (!strcmp(a, "--name")) {
      o->name = i + 1 < argc ? argv[++i] : NULL;
      if (!o->name || !*o->name || strchr(o->name, '/')) {
        tool_error("--name expects a file name without '/'");
        return TOOL_USAGE;
      }
    } else if (!strcmp(a, "--flat")) {
      o->flat = true;
    } else if (!strcmp(a, "--loss")) {
      o->loss = true;
    } else if (!strcmp(a, "--decode")) {
      o->decode = true;
    } else if (!strcmp(a, "--model-file")) {
      o->model_file = true;
    } else if (!strcmp(a, "--random-config")) {
      o->random_cfg = i + 1 < argc ? argv[++i] : NULL;
      if (!o->random_cfg || !*o->random_cfg) {
        tool_error("--random-config expects a config.json path");
        return TOOL_USAGE;
      }
    } else if (a[0] == '-' && a[1]) {
      tool_error("unknown option '%s'", a);
      return TOOL_USAGE;
    } else if (nfiles == 2) {
      tool_error("unexpected argument '%s'", a);
      return TOOL_USAGE;
    } else {
      files[nfiles++] = a;
    }
  }
  if (o->random_cfg && nfiles != 1) {
    tool_error("with --random-config, expected only OUT_DIR");
    return TOOL_USAGE;
  }
  if (!o->random_cfg && nfiles != 2) {
    tool_error("expected HF_DIR and OUT_DIR");
    return TOOL_USAGE;
  }
  if (o->random_cfg) o->hf_dir = o->random_cfg, o->out_dir = files[0];
  else o->hf_dir = files[0], o->out_dir = files[1];
  if (o->model_file && (o->seq || o->batch || o->loss || o->flat || o->decode)) {
    tool_error("--model-file writes only the model file: --seq, --batch, --loss, --flat and --decode do not apply");
    return TOOL_USAGE;
  }
  if (!o->name) o->name = o->model_file ? "gpt2_model" : o->flat ? "gpt2_flat" : "gpt2";
  return TOOL_OK;
}

int main(int argc, char **argv) {
  tool_name = "gpt2_import";
  Options o = {0};
  int rc = parse_args(argc, argv, &o);
  if (rc != TOOL_OK) {
    fputs(USAGE, stderr);
    return rc;
  }
  struct stat st;
  if (o.random_cfg) {
    /* read_config reports an unreadable CONFIG.json */
  } else if (stat(o.hf_dir, &st) != 0) {
    tool_error("cannot open %s: %s", o.hf_dir, strerror(errno));
    return TOOL_IO;
  } else if (!S_ISDIR(st.st_mode)) {
    tool_error("%s: not a directory: expected a Hugging Face checkpoint directory (config.json, model.safetensors)",
               o.hf_dir);
    return TOOL_IO;
  }
  Model m = {0};
  char cfg_path[4200];
  snprintf(cfg_path, sizeof cfg_path, "%s%s", o.hf_dir, o.random_cfg ? "" : "/config.json");
  if (!read_config(cfg_path, &m.cf)) return g_exit;
  if (o.seq > m.cf.n_pos) {
    tool_error("--seq %lld exceeds the model's n_positions %lld", (long long)o.seq, (long long)m.cf.n_pos);
    return TOOL_USAGE;
  }
  if (o.loss && o.seq < 2) {
    tool_error("--loss needs --seq 2 or more (the loss predicts token s+1 from position s, at a fixed length)");
    return TOOL_USAGE;
  }
  Comp comp;
  comp_init(&comp);
  comp.tensor_dir = arena_printf(&comp.arena, "%s/store", o.out_dir);
  bool ok = tool_mkdirs(o.out_dir);
  if (!ok) g_exit = TOOL_IO;
  ok = ok && import_weights(&comp, &o, &m) &&
       (o.model_file ? write_model_file(&comp, &o, &m)
                     : write_circuit(&comp, &o, &m) && (!o.decode || write_decode_circuit(&comp, &o, &m)));
  if (!ok && g_exit == TOOL_OK) g_exit = diag_exit_code(&comp) == TOOL_IO ? TOOL_IO : TOOL_BAD;
  comp_free(&comp);
  return ok ? TOOL_OK : g_exit;
}
