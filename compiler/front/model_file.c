/* model_file.c — the library stage: a rust_circuit model file (its first line
 * `# info:{json}`, TransformerInfo) refers by bare name to circuits that
 * rust_circuit's module_library builds from those params. This file reads the
 * params, builds that library as circuit text (model_files.md §3, §6) with
 * library.h's text graph, and parses it into the reference circuits the file
 * is parsed with. */
#include <stdlib.h>
#include <string.h>
#include "json.h"
#include "library.h"
#include "ptrmap.h"

/* ------------------------------------------------------------ the params */

static const char INFO_PREFIX[] = "# info:";

typedef struct Info {
  Comp *c;
  const char *file;
  const char *json;      /* the JSON text (line 1 after the prefix) */
} Info;

/* Column of JSON offset off on line 1: columns count Unicode scalars. */
static Loc info_at(const Info *r, size_t off) {
  int col = (int)sizeof INFO_PREFIX;
  for (size_t i = 0; i < off; i++)
    if (((unsigned char)r->json[i] & 0xC0) != 0x80) col++;
  return (Loc){r->file, 1, col};
}

static bool read_bool(Info *r, const Json *obj, const char *key, bool *out) {
  const Json *v = json_get(obj, key);
  if (!v) return true;
  if (json_bool(v, out)) return true;
  diag_error(r->c, info_at(r, v->offset), "# info: '%s' must be true or false, found %s", key, json_type_name(v->type));
  return false;
}

/* A string among choices (NULL-terminated); null allowed if nullable (→ NULL). */
static bool read_choice(Info *r, const Json *obj, const char *key, const char *const *choices, bool nullable,
                        const char **out) {
  const Json *v = json_get(obj, key);
  if (!v) return true;
  if (nullable && json_is_null(v)) {
    *out = NULL;
    return true;
  }
  const char *s = json_str(v);
  for (int i = 0; s && choices[i]; i++)
    if (!strcmp(s, choices[i])) {
      *out = choices[i];
      return true;
    }
  char list[160] = "";
  for (int i = 0; choices[i]; i++)
    snprintf(list + strlen(list), sizeof list - strlen(list), "%s\"%s\"", i ? ", " : "", choices[i]);
  if (s)
    diag_error(r->c, info_at(r, v->offset), "# info: unknown %s \"%s\" (expected %s%s)", key, s, list,
               nullable ? " or null" : "");
  else
    diag_error(r->c, info_at(r, v->offset), "# info: '%s' must be a string (%s%s), found %s", key, list,
               nullable ? " or null" : "", json_type_name(v->type));
  return false;
}

/* Members rust_circuit's classes do not have: cattrs ignores them; a typo deserves a warning. */
static void warn_unknown(Info *r, const Json *obj, const char *const *known) {
  for (size_t i = 0; i < json_len(obj); i++) {
    const char *k = json_key(obj, i);
    bool ok = false;
    for (int j = 0; known[j]; j++) ok |= !strcmp(k, known[j]);
    if (!ok) diag_warn(r->c, info_at(r, json_at(obj, i)->offset), "# info: unknown member '%s' ignored", k);
  }
}

static bool need_object(Info *r, const Json *v, const char *what) {
  if (v && v->type == JSON_OBJECT) return true;
  diag_error(r->c, info_at(r, v ? v->offset : 0), "# info: %s must be an object, found %s", what,
             v ? json_type_name(v->type) : "nothing");
  return false;
}

/* An option circc cannot build: true in the file is an error naming it. */
static bool unsupported(Info *r, const Json *obj, const char *key, bool value, const char *why) {
  if (!value) return true;
  diag_error(r->c, info_at(r, json_get(obj, key)->offset), "# info: %s true is not supported: %s", key, why);
  return false;
}

static const char *const NORM_TYPES[] = {"ln", "bn", NULL};
static const char *const ACT_TYPES[] = {"gelu", "gelu_new", "relu", "bilinear", NULL};
static const char *const POS_ENC_TYPES[] = {"gpt", "shortformer", "none", NULL};

/* TransformerInfo with rust_circuit's defaults for absent members (model_files.md §1). */
static bool read_info(Info *r, const Json *root, ModelParams *p) {
  *p = (ModelParams){.norm_type = "ln", .use_mlp = true, .mlp_act_type = "gelu", .num_layers = 2,
                     .use_norm_output = true, .model_class = "GPTBeginEndToks", .pos_enc_type = "gpt",
                     .causal_mask = 1};
  if (!need_object(r, root, "the info")) return false;
  const Json *params = json_get(root, "params");
  if (!params) {
    diag_error(r->c, info_at(r, root->offset), "# info: missing 'params' (TransformerParams)");
    return false;
  }
  if (!need_object(r, params, "'params'")) return false;
  const Json *block = json_get(params, "block_params");
  if (block && !need_object(r, block, "'block_params'")) return false;
  static const char *const INFO_KEYS[] = {"params", "model_class", "pos_enc_type", "causal_mask", "extra", NULL};
  static const char *const PARAM_KEYS[] = {"block_params", "num_layers", "use_norm_output", "output_bias", NULL};
  static const char *const BLOCK_KEYS[] = {"norm_type", "attn_bias", "attn_pos", "use_mlp", "mlp_act_type",
                                           "mlp_output_bias", "use_parallel_residual", "use_rope", NULL};
  warn_unknown(r, root, INFO_KEYS);
  warn_unknown(r, params, PARAM_KEYS);
  if (block) warn_unknown(r, block, BLOCK_KEYS);
  bool ok = read_choice(r, block, "norm_type", NORM_TYPES, true, &p->norm_type);
  ok &= read_bool(r, block, "attn_bias", &p->attn_bias);
  ok &= read_bool(r, block, "attn_pos", &p->attn_pos);
  ok &= read_bool(r, block, "use_mlp", &p->use_mlp);
  ok &= read_choice(r, block, "mlp_act_type", ACT_TYPES, false, &p->mlp_act_type);
  ok &= read_bool(r, block, "mlp_output_bias", &p->mlp_output_bias);
  ok &= read_bool(r, block, "use_parallel_residual", &p->use_parallel_residual);
  ok &= read_bool(r, block, "use_rope", &p->use_rope);
  const Json *layers = json_get(params, "num_layers");
  int64_t nl = p->num_layers;
  if (layers && (!json_int(layers, &nl) || nl < 0 || nl > 100000)) {
    diag_error(r->c, info_at(r, layers->offset), "# info: 'num_layers' must be an integer from 0 to 100000");
    ok = false;
  }
  p->num_layers = (int)nl;
  ok &= read_bool(r, params, "use_norm_output", &p->use_norm_output);
  ok &= read_bool(r, params, "output_bias", &p->output_bias);
  const Json *mc = json_get(root, "model_class");
  if (mc && !json_str(mc)) {
    diag_error(r->c, info_at(r, mc->offset), "# info: 'model_class' must be a string, found %s",
               json_type_name(mc->type));
    ok = false;
  } else if (mc) {
    p->model_class = json_str(mc);
  }
  ok &= read_choice(r, root, "pos_enc_type", POS_ENC_TYPES, true, &p->pos_enc_type);
  const Json *cm = json_get(root, "causal_mask");
  bool causal;
  if (cm && json_is_null(cm)) p->causal_mask = -1;
  else if (cm && !json_bool(cm, &causal)) {
    diag_error(r->c, info_at(r, cm->offset), "# info: 'causal_mask' must be true, false or null, found %s",
               json_type_name(cm->type));
    ok = false;
  } else if (cm) {
    p->causal_mask = causal;
  }
  if (!ok) return false;
  /* module_library asserts this when it builds the block, i.e. only with layers */
  if (p->use_parallel_residual && p->num_layers && (!p->use_mlp || !p->norm_type)) {
    diag_error(r->c, info_at(r, json_get(block, "use_parallel_residual")->offset),
               "# info: use_parallel_residual true needs use_mlp true and a norm_type (rust_circuit's "
               "module_library asserts both)");
    return false;
  }
  return unsupported(r, block, "use_rope", p->use_rope,
                     "rotary embeddings are rust_circuit's Python GeneralFunction apply_rotary_pos_emb, "
                     "which circc cannot evaluate or compile");
}

/* ------------------------------------------------------------ MT19937 as CPython seeds it */

typedef struct Mt {
  uint32_t s[624];
  int i;
} Mt;

/* random.Random(seed) for 0 <= seed < 2^32: init_by_array on the key [seed]. */
static void mt_seed(Mt *m, uint32_t seed) {
  m->s[0] = 19650218u;
  for (int i = 1; i < 624; i++) m->s[i] = 1812433253u * (m->s[i - 1] ^ (m->s[i - 1] >> 30)) + (uint32_t)i;
  int i = 1;
  for (int k = 624; k; k--) {  /* key length 1: j is always 0 */
    m->s[i] = (m->s[i] ^ ((m->s[i - 1] ^ (m->s[i - 1] >> 30)) * 1664525u)) + seed;
    if (++i >= 624) m->s[0] = m->s[623], i = 1;
  }
  for (int k = 623; k; k--) {
    m->s[i] = (m->s[i] ^ ((m->s[i - 1] ^ (m->s[i - 1] >> 30)) * 1566083941u)) - (uint32_t)i;
    if (++i >= 624) m->s[0] = m->s[623], i = 1;
  }
  m->s[0] = 0x80000000u;
  m->i = 624;
}

static uint32_t mt_next(Mt *m) {
  if (m->i >= 624) {
    for (int k = 0; k < 624; k++) {
      uint32_t y = (m->s[k] & 0x80000000u) | (m->s[(k + 1) % 624] & 0x7fffffffu);
      m->s[k] = m->s[(k + 397) % 624] ^ (y >> 1) ^ (y & 1 ? 0x9908b0dfu : 0);
    }
    m->i = 0;
  }
  uint32_t y = m->s[m->i++];
  y ^= y >> 11;
  y ^= (y << 7) & 0x9d2c5680u;
  y ^= (y << 15) & 0xefc60000u;
  return y ^ (y >> 18);
}

/* UUID(int=getrandbits(128)): four outputs, the first least significant. */
static void mt_uuid(Mt *m, char out[37]) {
  uint32_t w[4];
  for (int k = 0; k < 4; k++) w[k] = mt_next(m);
  char hex[33];
  snprintf(hex, sizeof hex, "%08x%08x%08x%08x", w[3], w[2], w[1], w[0]);
  snprintf(out, 37, "%.8s-%.4s-%.4s-%.4s-%.12s", hex, hex + 8, hex + 12, hex + 16, hex + 20);
}

/* ------------------------------------------------------------ the library */

enum { MAX_WEIGHTS = 24 };

typedef struct Builder {
  Library l;
  const ModelParams *p;
  LibNode **key;                 /* the dict, in rust_circuit's order (§3.1) */
  int nkey, capkey;
  LibNode *weight[MAX_WEIGHTS];  /* the block's weight symbols (§3.7), any order */
  const char *weight_shape[MAX_WEIGHTS];
  int nweight;
  bool norm_built;               /* norm_spec ran */
  Library apart;                 /* the parallel block's 'b.a' (parallel_block) */
  int own_text;                  /* keys from here on are a text of their own (0: none) */
} Builder;

static void key(Builder *b, LibNode *n) {
  for (int i = 0; i < b->nkey; i++)
    if (!strcmp(lib_name(b->key[i]), lib_name(n))) return;
  if (b->nkey == b->capkey) {
    b->capkey = b->capkey ? 2 * b->capkey : 128;
    LibNode **k = ARENA_ARRAY(&b->l.c->arena, LibNode *, b->capkey);
    if (b->nkey) memcpy(k, b->key, (size_t)b->nkey * sizeof *k);
    b->key = k;
  }
  b->key[b->nkey++] = n;
}

static void keys(Builder *b, const char *const *names) {
  for (int i = 0; names[i]; i++) key(b, lib_find(&b->l, names[i]));
}

static LibNode *sym(Builder *b, const char *name, const char *shape, const char *uuid) {
  return lib_node(&b->l, name, lib_fmt(&b->l, "[%s] Symbol %s", shape, uuid), NULL);
}

/* A weight symbol of the block: an argument of every b{i}. */
static LibNode *wsym(Builder *b, const char *name, const char *shape, const char *uuid) {
  if (b->nweight == MAX_WEIGHTS) ICE("too many block weights");
  b->weight_shape[b->nweight] = shape;
  return b->weight[b->nweight++] = sym(b, name, shape, uuid);
}

/* A name from a pattern with one %s (the prefix or the norm type). */
static const char *fmt(Builder *b, const char *pattern, const char *s) { return lib_fmt(&b->l, pattern, s); }

/* Only lib_ln_spec asks for UUIDs, and library.c overrides this with the fixed ln.* ones. */
static void no_uuid(const char *name, char out[37]) {
  (void)name;
  out[0] = 0;
}

/* The norm-binding UUID lists [u0..u4] (§2): input u4, bn mean u3, var u2, bias u1, scale u0.
 * The parallel block's norm p uses a's list (module_library's p_ln_bind). */
static const char *const *norm_uuids(const char *p) {
  static const char *const M[5] = {"fe330d51-0164-4b49-a504-81769d550bb1", "771e2d50-3414-459e-87ff-879f83d4a15c",
                                   "bf7ea689-c481-4ad4-89d0-0a59cd476739", "cf2adbd9-b04f-42af-86d7-cc5c8890607b",
                                   "f63f8838-9d69-4da2-a902-8eaf325f07a7"};
  static const char *const A[5] = {"c564149d-e226-4e3d-8e47-7d6e2ceea99e", "2c737289-2702-404c-a22e-ad37c2652620",
                                   "33774cb3-f047-4a1e-ac0c-e6f8c93d2bb2", "981982a3-253b-4c0d-8789-c0bc9dcd229b",
                                   "6a622698-fd68-4d25-aeee-e8d38e68049e"};
  static const char *const F[5] = {"2110aef7-70d5-4f77-a929-044e40c31cbd", "10652dc2-e9a8-4f1e-8bad-99d46804c7b3",
                                   "6cfcb4e6-7081-4d2d-bef9-1e9db52d4444", "94e8bc7f-1689-429f-bfec-67d33965aef5",
                                   "0851aebd-0d39-4f65-89f9-8a8afaed631a"};
  return *p == 'm' ? M : *p == 'f' ? F : A;
}

/* The norm spec `ln` or `bn` and its dict entries. */
static void norm_spec(Builder *b) {
  Library *l = &b->l;
  if (b->norm_built) return;
  b->norm_built = true;
  if (!strcmp(b->p->norm_type, "ln")) {
    lib_ln_spec(l, 1e-5);
    keys(b, (const char *const[]){"ln.y", "ln.input", "ln", "ln.w.bias", "ln.w.scale", NULL});
    return;
  }
  LibNode *ms = lib_node(l, "bn.mean_subbed", "Add", sym(b, "bn.input", "0s", "cfe0aa25-1214-4d3e-ad53-417fedbb9b7b"),
                         lib_node(l, "bn.neg_mean", "Einsum h,->h",
                                  sym(b, "bn.mean", "0s", "217403c9-03b6-4444-8f72-de03b95229d0"),
                                  lib_scalar(l, "bn.neg", "", -1), NULL),
                         NULL);
  LibNode *rsqrt = lib_node(l, "bn.rsqrt", "GeneralFunction rsqrt",
                            lib_node(l, "bn.var_p_eps", "Add", lib_scalar(l, "bn.c.eps", "", 1e-5),
                                     sym(b, "bn.var", "0s", "c4e41ca7-e3ab-429e-81b6-25bb14423fb4"), NULL),
                            NULL);
  LibNode *y = lib_node(l, "bn.y", "Einsum h,h->h", ms, rsqrt, NULL);
  lib_node(l, "bn", "Add", sym(b, "bn.w.bias", "0s", "3e861c08-9a74-4348-87df-3752a8557aea"),
           lib_node(l, "bn.y_scaled", "Einsum h,h->h", y,
                    sym(b, "bn.w.scale", "0s", "ccbac7e0-c931-422b-9724-1e24ab6e9c63"), NULL),
           NULL);
  keys(b, (const char *const[]){"bn.y", "bn.input", "bn.mean", "bn.var", "bn", "bn.w.bias", "bn.w.scale", NULL});
}

/* `{p}.norm` (get_norm_bind): the norm of the free `{p}.norm.input`; its
 * weights are block weights (arguments of every b{i}) if `block_weights`:
 * those of the norms the block `b` uses. */
static void norm_bind(Builder *b, const char *p, bool block_weights) {
  Library *l = &b->l;
  const char *nt = b->p->norm_type;
  const char *const *u = norm_uuids(p);
  LibNode *(*mk)(Builder *, const char *, const char *, const char *) = block_weights ? wsym : sym;
  LibNode *norm = lib_module(l, fmt(b, "%s.norm", p), lib_find(l, nt));
  LibNode *in = sym(b, fmt(b, "%s.norm.input", p), "1s,0s", u[4]);
  lib_arg(l, norm, in, lib_find(l, fmt(b, "%s.input", nt)));
  key(b, norm), key(b, in);
  static const char *const W[4] = {"mean", "var", "w.bias", "w.scale"};
  for (int i = strcmp(nt, "bn") ? 2 : 0; i < 4; i++) {
    LibNode *s = mk(b, lib_fmt(l, "%s.%s.%s", p, nt, W[i]), "0s", u[3 - i]);
    lib_arg(l, norm, s, lib_find(l, lib_fmt(l, "%s.%s", nt, W[i])));
    key(b, s);
  }
}

/* `{p}.norm_call`: body applied to `{p}.norm` (get_norm_call). */
static LibNode *norm_call(Builder *b, const char *p, LibNode *body) {
  LibNode *call = lib_module(&b->l, fmt(b, "%s.norm_call", p), body);
  lib_arg(&b->l, call, lib_find(&b->l, fmt(b, "%s.norm", p)), lib_find(&b->l, fmt(b, "%s.input", p)));
  key(b, call);
  return call;
}

/* The MLP (§3.5, §6 bilinear); out bias zeroed (§3.2) unless mlp_output_bias. */
static LibNode *mlp_spec(Builder *b) {
  Library *l = &b->l;
  bool bilinear = !strcmp(b->p->mlp_act_type, "bilinear");
  LibNode *in = sym(b, "m.input", "0s", "13ec4cdc-5f25-4969-870b-0bfa2300187b");
  key(b, in);
  LibNode *m, *proj_in, *in_bias, *proj_out;
  if (bilinear) {
    proj_in = wsym(b, "m.w.proj_in", "6s*2,0s", "c171d519-8793-4a8b-ac5e-d550347f30a6");
    in_bias = wsym(b, "m.w.in_bias", "6s*2", "886b5425-cd19-4db4-871a-c46cb1a23114");
    LibNode *fold = lib_node(l, "m.fold_pre", "Rearrange (a:2 b) -> a:2 b",
                             lib_node(l, "m.pre_p_bias", "Add",
                                      lib_node(l, "m.pre", "Einsum i,hi->h", in, proj_in, NULL), in_bias, NULL),
                             NULL);
    proj_out = wsym(b, "m.w.proj_out", "0s,6s", "e61637eb-9f17-4325-b2c2-5eb2518026cf");
    m = lib_node(l, "m", "Einsum h,h,oh->o", lib_node(l, "m.pre0", "Index [0,:]", fold, NULL),
                 lib_node(l, "m.pre1", "Index [1,:]", fold, NULL), proj_out, NULL);
  } else {
    proj_in = wsym(b, "m.w.proj_in", "5s,0s", "5217f963-0cdb-460e-bb1f-f82f7fbb3cd9");
    in_bias = wsym(b, "m.w.in_bias", "5s", "c870ec00-8c6f-4080-907c-703ea85dde48");
    LibNode *pre =
        lib_node(l, "m.pre", "Add", lib_node(l, "m.pre_mul", "Einsum i,hi->h", in, proj_in, NULL), in_bias, NULL);
    proj_out = wsym(b, "m.w.proj_out", "0s,5s", "fdefa9af-a7d6-4a38-a7ed-5ce816c6efe7");
    m = lib_node(l, "m", "Einsum h,oh->o",
                 lib_node(l, "m.act", lib_fmt(l, "GeneralFunction %s", b->p->mlp_act_type), pre, NULL), proj_out,
                 NULL);
  }
  LibNode *out = m, *out_bias = NULL;
  if (b->p->mlp_output_bias) {
    out_bias = wsym(b, "m.w.out_bias", "0s",
                    bilinear ? "7efddf2e-20af-492c-a94e-1d19468f333f" : "113c30ba-fa88-4f34-a301-ea7912e03064");
    out = lib_node(l, "m.p_bias", "Add", m, out_bias, NULL);
  }
  key(b, out), key(b, proj_in), key(b, in_bias), key(b, proj_out);
  if (out_bias) key(b, out_bias);
  return out;
}

/* `x` + `bias` as `name`, or x alone when biases are zeroed (§3.2). */
static LibNode *plus_bias(Builder *b, const char *name, LibNode *x, LibNode *bias) {
  return bias ? lib_node(&b->l, name, "Add", x, bias, NULL) : x;
}

/* Attention (§3.4): biases and positions zeroed unless attn_bias / attn_pos. */
static LibNode *attn_spec(Builder *b) {
  Library *l = &b->l;
  bool bias = b->p->attn_bias;
  LibNode *nm_in = sym(b, "not_mask.input", "", "b46f6370-11e1-4535-aabc-94554c234673");
  LibNode *not_mask = lib_node(l, "not_mask", "Add", lib_scalar(l, "one", "", 1),
                               lib_node(l, "not_mask.neg_mask", "Einsum ,->", nm_in,
                                        lib_scalar(l, "neg_one", "", -1), NULL),
                               NULL);
  key(b, not_mask), key(b, nm_in);
  LibNode *q_in = sym(b, "a.q.input", "2s,0s", "4f80d1a1-86a4-4e44-94f7-909ec7089061");
  LibNode *wq = sym(b, "a.w.q_h", "7s,0s", "665efa60-d86c-40d5-92b2-b96d11686a8b");
  LibNode *qb = bias ? sym(b, "a.w.q_bias_h", "7s", "7d531f53-6cce-4bf3-82db-5fe8b2eef974") : NULL;
  LibNode *q = plus_bias(b, "a.q_p_bias", lib_node(l, "a.q", "Einsum qd,cd->qc", q_in, wq, NULL), qb);
  LibNode *k_in = sym(b, "a.k.input", "3s,0s", "664bddee-28ca-47e7-9fb7-9a718de06619");
  LibNode *wk = sym(b, "a.w.k_h", "7s,0s", "41177709-446d-4588-b9e5-c2bbf59d53a0");
  LibNode *kb = bias ? sym(b, "a.w.k_bias_h", "7s", "a891aae4-3c24-4713-afc7-8b954c6fc1b5") : NULL;
  LibNode *k = plus_bias(b, "a.k_p_bias", lib_node(l, "a.k", "Einsum kd,cd->kc", k_in, wk, NULL), kb);
  LibNode *div = lib_node(l, "a.c.div_head_size", "GeneralFunction rsqrt",
                          lib_node(l, "a.c.head_size", "GeneralFunction last_dim_size",
                                   lib_node(l, "a.c.bias_for_head_size", "Einsum jk->j", wk, NULL), NULL),
                          NULL);
  LibNode *mask = sym(b, "a.mask", "2s,3s", "ccfe5bc9-b402-42dd-a5e1-191e6fb7c268");
  LibNode *raw = lib_node(l, "a.attn_scores_raw", "Einsum qc,kc,,qk->qk", q, k, div, mask, NULL);
  LibNode *a_not_mask = lib_module(l, "a.not_mask", not_mask);
  lib_arg(l, a_not_mask, mask, nm_in);
  LibNode *neg = lib_node(l, "a.score_neg_inf_bias", "Einsum qk,->qk", a_not_mask,
                          lib_scalar(l, "a.neg_inf", "", -10000), NULL);
  LibNode *probs = lib_node(l, "a.attn_probs", "GeneralFunction softmax",
                            lib_node(l, "a.attn_scores", "Add", raw, neg, NULL), NULL);
  LibNode *v_in = sym(b, "a.v.input", "3s,0s", "8fd4c632-7f28-49ee-84cc-3dde997e0693");
  LibNode *wv = sym(b, "a.w.v_h", "8s,0s", "79b6ebff-f9d0-411a-bcdc-530cc13e1524");
  LibNode *vb = bias ? sym(b, "a.w.v_bias_h", "8s", "dfb2c4ec-9378-40ee-a360-7d58f2b96954") : NULL;
  LibNode *v = plus_bias(b, "a.v_p_bias", lib_node(l, "a.v", "Einsum kd,Vd->kV", v_in, wv, NULL), vb);
  LibNode *wo = sym(b, "a.w.o_h", "0s,8s", "11a116cb-2168-4725-a06f-1b61a8ca6797");
  LibNode *head = lib_node(l, "a.head", "Einsum sV,dV->sd",
                           lib_node(l, "a.comb_v", "Einsum qk,kV->qV", probs, v, NULL), wo, NULL);
  key(b, head), key(b, q_in), key(b, k_in), key(b, v_in), key(b, mask), key(b, wq);
  if (bias) key(b, qb);
  key(b, wk);
  if (bias) key(b, kb);
  key(b, wv);
  if (bias) key(b, vb);
  key(b, wo);

  LibNode *on_inp = lib_module(l, "a.head.on_inp", head);
  LibNode *a_in = sym(b, "a.input", "1s,0s", "f9eabd07-e2ab-4ed4-8b4a-c9c039d61835");
  LibNode *pos = b->p->attn_pos ? sym(b, "a.pos_input", "1s,0s", "eab8313e-d910-4174-8dbe-c612954eec34") : NULL;
  LibNode *qk_in = pos ? lib_node(l, "a.qk_input", "Add", a_in, pos, NULL) : a_in;
  lib_arg(l, on_inp, qk_in, q_in);
  lib_arg(l, on_inp, qk_in, k_in);
  lib_arg(l, on_inp, a_in, v_in);
  key(b, on_inp), key(b, a_in);
  if (pos) key(b, pos);

  /* a.heads binds each per-head symbol to its HEADS-batched block weight */
  static const char *const W[][4] = {
      {"a.w.q", "4s,7s,0s", "cf8f9c58-1875-45b0-8007-66b66b8a405a", "a.w.q_h"},
      {"a.w.q_bias", "4s,7s", "e896a43e-ba35-43d5-97e7-e189caf3278b", "a.w.q_bias_h"},
      {"a.w.k", "4s,7s,0s", "c342f1cd-71e6-4848-86b4-1c3ffdd46753", "a.w.k_h"},
      {"a.w.k_bias", "4s,7s", "13465b29-c28a-4d55-8a27-22c26cc01c69", "a.w.k_bias_h"},
      {"a.w.v", "4s,8s,0s", "a90db69c-f4ad-47d6-8b76-faa4b107dacd", "a.w.v_h"},
      {"a.w.v_bias", "4s,8s", "ea64ee26-2438-4aa9-b777-0ef4f5f70e74", "a.w.v_bias_h"},
      {"a.w.o", "4s,0s,8s", "24e0e5cf-8b68-4bf2-b198-17237523b237", "a.w.o_h"},
  };
  LibNode *heads = lib_module(l, "a.heads", on_inp), *hw[8];
  int nhw = 0;
  for (size_t i = 0; i < sizeof W / sizeof *W; i++) {
    if (!bias && strstr(W[i][0], "_bias")) continue;
    hw[nhw] = wsym(b, W[i][0], W[i][1], W[i][2]);
    lib_arg(l, heads, hw[nhw++], lib_find(l, W[i][3]));
  }
  LibNode *a = lib_node(l, "a", "Einsum hsd->sd", heads, NULL), *out = a;
  if (bias) {
    hw[nhw++] = wsym(b, "a.w.o_bias", "0s", "61d54061-63e2-4a5d-9c7a-15c1ecc53b95");
    out = lib_node(l, "a.p_bias", "Add", a, hw[nhw - 1], NULL);
  }
  key(b, out);
  for (int i = 0; i < nhw; i++) key(b, hw[i]);
  return out;
}

/* The parallel residual block (use_parallel_residual, which implies an MLP
 * and a norm): one shared norm `p` feeds the attention and the MLP, whose sum
 * is added to the residual stream:
 *   'b.add' Add('b.a' Module(attn; 'p.input' ! a.input), 'b.m' Module(mlp; p.input ! m.input))
 *   'p.norm_call' Module(b.add; p.norm ! p.input)
 *   'b.resid.p' Add('b.p' Module(p.norm_call; b.input ! p.norm.input), b.input), renamed 'b'.
 * module_library parses b.add as a text of its own, after b.resid.a, whose
 * own 'b.a' (the normed attention call) is not a dict entry: two different
 * circuits share the name. So b.add starts a second library text
 * (model_library), and its 'b.a' lives in b->apart to keep b->l's names unique. */
static LibNode *parallel_block(Builder *b, LibNode *attn, LibNode *mlp, LibNode *b_in) {
  Library *l = &b->l;
  LibNode *p_in = sym(b, "p.input", "1s,0s", "e76c1fd7-a230-4295-9199-17dc8dad79d0");
  LibNode *ba = lib_module(&b->apart, "b.a", attn);
  lib_arg(l, ba, p_in, lib_find(l, "a.input"));
  LibNode *bm = lib_module(l, "b.m", mlp);
  lib_arg(l, bm, p_in, lib_find(l, "m.input"));
  LibNode *add = lib_node(l, "b.add", "Add", ba, bm, NULL);
  b->own_text = b->nkey;
  key(b, add), key(b, p_in);
  LibNode *bp = lib_module(l, "b.p", norm_call(b, "p", add));
  lib_arg(l, bp, b_in, lib_find(l, "p.norm.input"));
  key(b, lib_node(l, "b.resid.p", "Add", bp, b_in, NULL));
  return lib_node(l, "b", "Add", bp, b_in, NULL);
}

/* The block `b` (TransformerBlockParams.get, §3.6): pre-norm, sequential
 * residual, or parallel_block's. */
static LibNode *block_spec(Builder *b) {
  Library *l = &b->l;
  bool norm = b->p->norm_type != NULL, parallel = b->p->use_parallel_residual;
  LibNode *mlp = NULL, *mlp_call = NULL;
  if (b->p->use_mlp) {
    mlp = mlp_spec(b);
    if (norm) {
      norm_spec(b);
      norm_bind(b, "m", !parallel);
      mlp_call = norm_call(b, "m", mlp);
    }
  }
  if (parallel) norm_bind(b, "p", true);
  LibNode *attn = attn_spec(b), *attn_call = attn;
  if (norm) {
    norm_spec(b);
    norm_bind(b, "a", !parallel);
    attn_call = norm_call(b, "a", attn);
  }
  LibNode *b_in = sym(b, "b.input", "1s,0s", "5837c4fd-f5ac-4bff-8456-abf3e95bcf36");
  key(b, b_in);
  LibNode *ba = lib_module(l, "b.a", attn_call);
  lib_arg(l, ba, b_in, lib_find(l, norm ? "a.norm.input" : "a.input"));
  LibNode *resid = lib_node(l, "b.resid.a", "Add", ba, b_in, NULL), *blk;
  key(b, resid);
  if (parallel) {
    blk = parallel_block(b, attn, mlp, b_in);
  } else {
    LibNode *last = ba;
    if (b->p->use_mlp) {
      last = lib_module(l, "b.m", norm ? mlp_call : mlp);
      lib_arg(l, last, resid, lib_find(l, norm ? "m.norm.input" : "m.input"));
      key(b, lib_node(l, "b.resid.m", "Add", last, resid, NULL));
    }
    /* `b` is the last residual Add renamed */
    blk = lib_node(l, "b", "Add", last, b->p->use_mlp ? resid : b_in, NULL);
  }
  key(b, blk);
  return blk;
}

/* Layer i's copy of a block symbol: the number after the first component. */
static const char *numbered(Builder *b, const char *name, int i) {
  const char *dot = strchr(name, '.');
  return lib_fmt(&b->l, "%.*s%d%s", (int)(dot - name), name, i, dot);
}

/* b{i} (get_rebound_weighty): the block's weights, in dict order, bound to
 * new symbols whose UUIDs Python's random.Random(i) draws. */
static LibNode *rebound_block(Builder *b, LibNode *blk, int i) {
  Mt mt;
  mt_seed(&mt, (uint32_t)i);
  LibNode *bi = lib_module(&b->l, lib_fmt(&b->l, "b%d", i), blk);
  for (int k = 0; k < b->nkey; k++)
    for (int w = 0; w < b->nweight; w++) {
      if (b->weight[w] != b->key[k]) continue;
      char uuid[37];
      mt_uuid(&mt, uuid);
      lib_arg(&b->l, bi, sym(b, numbered(b, lib_name(b->weight[w]), i), b->weight_shape[w], uuid), b->weight[w]);
    }
  return bi;
}

/* TransformerParams.get (§3.8): the dict of every entry, in order. */
static void build(Builder *b) {
  Library *l = &b->l;
  const ModelParams *p = b->p;
  int L = p->num_layers;
  LibNode **bi = ARENA_ARRAY(&l->c->arena, LibNode *, L ? L : 1);
  if (L) {
    LibNode *blk = block_spec(b);
    for (int i = 0; i < L; i++) key(b, bi[i] = rebound_block(b, blk, i));
  }
  LibNode *out = sym(b, "t.input", "1s,0s", "ece2bb5d-c6d6-4b7a-93a5-32b5ac264888");
  key(b, out);
  for (int i = 0; i < L; i++) {
    LibNode *call = lib_module(l, lib_fmt(l, "b%d.call", i), bi[i]);
    lib_arg(l, call, out, lib_find(l, "b.input"));
    key(b, out = call);
  }
  if (p->norm_type && p->use_norm_output) {
    norm_spec(b);
    norm_bind(b, "final", false);
    LibNode *call = lib_module(l, "final.call", lib_find(l, "final.norm"));
    lib_arg(l, call, out, lib_find(l, "final.norm.input"));
    key(b, out = call);
  }
  LibNode *unembed = sym(b, "t.w.unembed", "10s,0s", "85d5a05a-ef9e-4910-a967-3f27951f67cf");
  LibNode *logits = lib_node(l, "t.logits", "Einsum sh,vh->sv", out, unembed, NULL);
  key(b, logits);
  LibNode *ub = NULL;
  if (p->output_bias) {
    ub = sym(b, "t.w.unembed_bias", "10s", "62d9f91a-5df2-4eb8-af75-5bdfb15eb974");
    key(b, lib_node(l, "t.logits_p_bias", "Add", logits, ub, NULL));
  }
  key(b, unembed);
  if (ub) key(b, ub);
}

/* ------------------------------------------------------------ the stage */

/* Keys [from, to) printed as one text (also to `all`), parsed against refs;
 * its top-level circuits join refs: the dict, the first of a name kept (§3.1). */
static void library_text(Comp *c, const char *name, Builder *b, int from, int to, FILE *all, RefCircuits *refs) {
  char *text = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&text, &len);
  if (!f) ICE("open_memstream failed");
  for (int i = from; i < to; i++) lib_print(f, b->key[i]);
  fclose(f);
  fwrite(text, 1, len, all);
  NodeList tops = {0};
  if (!parse_text(c, name, arena_strndup(&c->arena, text, len), len, refs->n ? refs : NULL, &tops))
    ICE("the model library text does not parse");
  free(text);
  for (int i = 0; i < tops.n; i++) {
    bool seen = false;
    for (int j = 0; j < refs->n; j++) seen |= !strcmp(refs->name[j], tops.node[i]->name);
    if (seen) continue;
    refs->name[refs->n] = tops.node[i]->name;
    refs->node[refs->n++] = tops.node[i];
  }
}

bool model_library(Comp *c, const SourceFile *src, ModelLibrary *lib) {
  *lib = (ModelLibrary){0};
  size_t np = sizeof INFO_PREFIX - 1;
  if (src->len < np || memcmp(src->text, INFO_PREFIX, np)) return true;
  lib->present = true;
  const char *json = src->text + np, *eol = memchr(json, '\n', src->len - np);
  size_t jlen = eol ? (size_t)(eol - json) : src->len - np;
  if (jlen && json[jlen - 1] == '\r') jlen--;
  Info r = {c, src->name, json};
  JsonError err;
  Json *root = json_parse(&c->arena, json, jlen, &err);
  if (!root) {
    diag_error(c, info_at(&r, err.offset), "# info: malformed JSON: %s", err.msg);
    return false;
  }
  if (!read_info(&r, root, &lib->params)) return false;

  Builder b = {.l = {.c = c, .uuid = no_uuid}, .p = &lib->params, .apart = {.c = c, .uuid = no_uuid}};
  build(&b);
  lib_check_unique_names(&b.l);
  lib->refs.name = ARENA_ARRAY(&c->arena, const char *, b.nkey);
  lib->refs.node = ARENA_ARRAY(&c->arena, Node *, b.nkey);
  char *text = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&text, &len);
  if (!f) ICE("open_memstream failed");
  const char *name = arena_printf(&c->arena, "%s (model library)", src->name);
  int end = b.own_text ? b.own_text : b.nkey;
  library_text(c, name, &b, 0, end, f, &lib->refs);
  if (b.own_text) {
    fputs("\n# parsed as a text of its own, the circuits above its references: its 'b.a' is not b.resid.a's\n", f);
    library_text(c, name, &b, end, b.nkey, f, &lib->refs);
  }
  fclose(f);
  lib->text = arena_strndup(&c->arena, text, len);
  lib->len = len;
  free(text);
  lib->first_file_node = c->next_node_id;
  return true;
}

/* ------------------------------------------------------------ restated symbols */

typedef struct SymbolList {
  PtrMap seen;
  NodeList sym;
} SymbolList;

typedef struct SymbolWalk {
  Comp *c;
  SymbolList *s;
  int from;
} SymbolWalk;

/* Lists n if it is a Symbol met the first time; nodes with ids below `from` are not entered. */
static bool symbol_enter(Node *n, void *arg) {
  SymbolWalk *w = arg;
  if (n->id < w->from) return false;
  PtrMapEntry *e = ptrmap_get(&w->s->seen, n);
  if (e->flag) return false;
  e->flag = true;
  if (n->kind == NK_Symbol) nodelist_push(w->c, &w->s->sym, n);
  return true;
}

/* A Module's argument Symbols (leaves) after its children. */
static bool symbol_leave(Node *n, void *arg) {
  if (n->kind == NK_Module)
    for (int i = 0; i + 1 < n->nchild; i++) symbol_enter(n->u.module.arg[i].symbol, arg);
  return true;
}

/* Every Symbol reachable from n; nodes with ids below `from` are not entered. */
static void collect_symbols(Comp *c, SymbolList *s, const Node *n, int from) {
  SymbolWalk w = {c, s, from};
  ir_walk(n, symbol_enter, symbol_leave, &w);
}

bool model_library_check(Comp *c, const ModelLibrary *lib, const NodeList *tops) {
  if (!lib->present) return true;
  SymbolList mine = {0}, theirs = {0};
  for (int i = 0; i < lib->refs.n; i++) collect_symbols(c, &theirs, lib->refs.node[i], 0);
  for (int i = 0; i < tops->n; i++) collect_symbols(c, &mine, tops->node[i], lib->first_file_node);
  bool ok = true;
  for (int i = 0; i < mine.sym.n; i++) {
    const Node *s = mine.sym.node[i];
    for (int j = 0; s->name && j < theirs.sym.n; j++) {
      const Node *t = theirs.sym.node[j];
      if (!t->name || strcmp(s->name, t->name)) continue;
      if (strcmp(s->u.symbol.uuid, t->u.symbol.uuid))
        diag_error(c, s->loc, "Symbol '%s' has UUID %s but the model library's '%s' has %s", s->name,
                   s->u.symbol.uuid, t->name, t->u.symbol.uuid);
      else if (!shape_eq(&s->shape, &t->shape))
        diag_error(c, s->loc, "Symbol '%s' has shape %s but the model library's has %s", s->name,
                   shape_str(c, &s->shape), shape_str(c, &t->shape));
      else
        continue;
      ok = false;
      break;
    }
  }
  ptrmap_free(&mine.seen), ptrmap_free(&theirs.seen);
  return ok;
}

/* ------------------------------------------------------------ --info-model */

static const Node *top_named(const NodeList *tops, const char *name) {
  for (int i = 0; i < tops->n; i++)
    if (tops->node[i]->name && !strcmp(tops->node[i]->name, name)) return tops->node[i];
  return NULL;
}

/* size[k] for every k-th symbolic size a t.bind_w argument pins (-1: unknown). */
static void bound_sizes(const Node *bind_w, int64_t *size, int nsize) {
  for (int k = 0; k < nsize; k++) size[k] = -1;
  if (!bind_w || bind_w->kind != NK_Module) return;
  for (int i = 0; i + 1 < bind_w->nchild; i++) {
    const Shape *sym = &bind_w->u.module.arg[i].symbol->shape, *val = &bind_w->child[i + 1]->shape;
    for (int d = 0; d < sym->rank && sym->rank == val->rank; d++)
      for (int k = 0; k < nsize; k++)
        if (sym->dim[d] == symbolic_prime(k) && !size_is_symbolic(val->dim[d])) size[k] = val->dim[d];
  }
}

static void print_size(FILE *f, const char *what, int64_t v) {
  if (v >= 0) fprintf(f, "  %-22s %lld\n", what, (long long)v);
  else fprintf(f, "  %-22s unknown\n", what);
}

bool model_info_print(Comp *c, const SourceFile *src, const ModelLibrary *lib, const NodeList *tops, FILE *f) {
  if (!lib->present) {
    diag_error(c, (Loc){src->name, 1, 1}, "not a rust_circuit model file: the first line is not '# info:{json}'");
    return false;
  }
  const ModelParams *p = &lib->params;
  fprintf(f, "model_class:  %s\npos_enc_type: %s\ncausal_mask:  %s\n", p->model_class,
          p->pos_enc_type ? p->pos_enc_type : "null", p->causal_mask < 0 ? "null" : p->causal_mask ? "true" : "false");
  fprintf(f, "params:\n  norm_type              %s\n", p->norm_type ? p->norm_type : "null");
  const struct { const char *name; bool v; } B[] = {
      {"attn_bias", p->attn_bias}, {"attn_pos", p->attn_pos}, {"use_mlp", p->use_mlp},
  };
  for (size_t i = 0; i < sizeof B / sizeof *B; i++) fprintf(f, "  %-22s %s\n", B[i].name, B[i].v ? "true" : "false");
  fprintf(f, "  %-22s %s\n", "mlp_act_type", p->mlp_act_type);
  const struct { const char *name; bool v; } B2[] = {
      {"mlp_output_bias", p->mlp_output_bias}, {"use_parallel_residual", p->use_parallel_residual},
      {"use_rope", p->use_rope},
  };
  for (size_t i = 0; i < sizeof B2 / sizeof *B2; i++) fprintf(f, "  %-22s %s\n", B2[i].name, B2[i].v ? "true" : "false");
  fprintf(f, "  %-22s %d\n  %-22s %s\n  %-22s %s\n", "num_layers", p->num_layers, "use_norm_output",
          p->use_norm_output ? "true" : "false", "output_bias", p->output_bias ? "true" : "false");
  fprintf(f, "layers: %d\n", p->num_layers);

  enum { NSIZE = 12 };
  int64_t size[NSIZE];
  const Node *bind_w = top_named(tops, "t.bind_w");
  bound_sizes(bind_w, size, NSIZE);
  const Node *tok = top_named(tops, "t.w.tok_embeds"), *pos = top_named(tops, "t.w.pos_embeds");
  if (size[0] < 0 && tok && tok->shape.rank == 2) size[0] = tok->shape.dim[1];
  fprintf(f, "sizes (from the file's Arrays):\n");
  print_size(f, "hidden (HIDDEN)", size[0]);
  print_size(f, "heads (HEADS)", size[4]);
  print_size(f, "head dim (QK_DIM)", size[7]);
  print_size(f, "value dim (V_DIM)", size[8]);
  if (p->use_mlp) print_size(f, !strcmp(p->mlp_act_type, "bilinear") ? "MLP (BILINEAR_MLP_PROJ)" : "MLP (MLP_PROJ)",
                             size[!strcmp(p->mlp_act_type, "bilinear") ? 6 : 5]);
  print_size(f, "vocab (VOCAB_SIZE)", size[10]);
  print_size(f, "token embeddings", tok && tok->shape.rank == 2 ? tok->shape.dim[0] : -1);
  print_size(f, "positions", pos && pos->shape.rank == 2 ? pos->shape.dim[0] : -1);

  char hidden[32] = "HIDDEN";
  if (size[0] >= 0) snprintf(hidden, sizeof hidden, "%lld", (long long)size[0]);
  fprintf(f, "free symbols of t.bind_w (bind them with --input; circc eval takes SEQ, SEQ_Q and SEQ_K from\n"
             "their shapes, a compile needs -D SEQ=N -D SEQ_Q=N -D SEQ_K=N):\n");
  fprintf(f, "  t.input     [SEQ, %s]  the residual-stream input: token embeddings%s\n", hidden,
          p->pos_enc_type && !strcmp(p->pos_enc_type, "gpt") ? " + position embeddings" : "");
  if (p->num_layers == 0) return true; /* no attention: the final norm and unembedding only */
  fprintf(f, "  a.mask      [SEQ_Q, SEQ_K]  attention mask, 1 = may attend (%s)\n",
          p->causal_mask == 1 ? "causal: 1 where q >= k" : "all ones: no causal mask");
  if (p->attn_pos)
    fprintf(f, "  a.pos_input [SEQ, %s]  position embeddings added to the queries' and keys' input (shortformer)\n",
            hidden);
  return true;
}
