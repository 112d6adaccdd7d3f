/* library.c — rust_circuit's module library as circuit text (see library.h). */
#include "library.h"
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

typedef struct Edge {
  LibNode *node;
  const char *bind;   /* module argument: the symbol it binds ("! 'sym'"), else NULL */
} Edge;

struct LibNode {
  const char *name;   /* unique in the file */
  const char *head;   /* "[shape] Kind extra" or "Kind extra" */
  Edge *kid;
  int nkid, cap;
  bool printed;
};

const char *lib_fmt(Library *l, const char *f, ...) {
  va_list ap;
  va_start(ap, f);
  int n = vsnprintf(NULL, 0, f, ap);
  va_end(ap);
  char *s = arena_alloc(&l->c->arena, (size_t)n + 1);
  va_start(ap, f);
  vsnprintf(s, (size_t)n + 1, f, ap);
  va_end(ap);
  return s;
}

static void add_kid(Library *l, LibNode *t, LibNode *k, const char *bind) {
  if (t->nkid == t->cap) {
    t->cap = t->cap ? 2 * t->cap : 4;
    Edge *nk = ARENA_ARRAY(&l->c->arena, Edge, t->cap);
    if (t->nkid) memcpy(nk, t->kid, (size_t)t->nkid * sizeof *nk);
    t->kid = nk;
  }
  t->kid[t->nkid++] = (Edge){k, bind};
}

LibNode *lib_node(Library *l, const char *name, const char *head, ...) {
  LibNode *t = ARENA_NEW(&l->c->arena, LibNode);
  t->name = name, t->head = head;
  va_list ap;
  va_start(ap, head);
  for (LibNode *k; (k = va_arg(ap, LibNode *));) add_kid(l, t, k, NULL);
  va_end(ap);
  if (l->n == l->cap) {
    l->cap = l->cap ? 2 * l->cap : 256;
    LibNode **na = ARENA_ARRAY(&l->c->arena, LibNode *, l->cap);
    if (l->n) memcpy(na, l->all, (size_t)l->n * sizeof *na);
    l->all = na;
  }
  l->all[l->n++] = t;
  return t;
}

void lib_add_child(Library *l, LibNode *parent, LibNode *child) { add_kid(l, parent, child, NULL); }

LibNode *lib_module(Library *l, const char *name, LibNode *spec) { return lib_node(l, name, "Module", spec, NULL); }

void lib_arg(Library *l, LibNode *module, LibNode *value, const LibNode *symbol) {
  add_kid(l, module, value, symbol->name);
}

LibNode *lib_symbol(Library *l, const char *name, const char *shape) {
  static const char *const KNOWN[][2] = {
      {"ln.input", "981b4d2a-711b-4a9d-a11c-d859c311e80c"},  {"ln.w.bias", "621c7792-0177-45ab-87c5-7ff1c3bec487"},
      {"ln.w.scale", "0fa341c3-34b3-4699-847f-08674808b28a"}, {"ll.input", "b9d111e5-b793-4f63-84a0-2f8590b9f39c"},
      {"ll.label", "74c503b9-fe2c-4f8b-9350-7351a292c351"},
  };
  char uuid[37];
  l->uuid(name, uuid);
  const char *u = uuid;
  for (size_t i = 0; i < sizeof KNOWN / sizeof *KNOWN; i++)
    if (!strcmp(KNOWN[i][0], name)) u = KNOWN[i][1];
  return lib_node(l, name, lib_fmt(l, "[%s] Symbol %s", shape, u), NULL);
}

void lib_scalar_text(double v, char *buf, size_t cap) {
  char e[64];
  int p = 1;
  for (; p < 17; p++) {   /* fewest significant digits that read back as v */
    snprintf(e, sizeof e, "%.*e", p - 1, v);
    if (strtod(e, NULL) == v) break;
  }
  snprintf(e, sizeof e, "%.*e", p - 1, v);
  int exp10 = atoi(strchr(e, 'e') + 1);
  int decimals = p - 1 - exp10;
  snprintf(buf, cap, "%.*f", decimals > 0 ? decimals : 0, v);
}

LibNode *lib_scalar(Library *l, const char *name, const char *shape, double v) {
  char num[64];
  lib_scalar_text(v, num, sizeof num);
  return lib_node(l, name, lib_fmt(l, "[%s] Scalar %s", shape, num), NULL);
}

LibNode *lib_find(Library *l, const char *name) {
  for (int i = l->n - 1; i >= 0; i--)
    if (!strcmp(l->all[i]->name, name)) return l->all[i];
  ICE("no node named '%s'", name);
}

const char *lib_name(const LibNode *n) { return n->name; }

/* Writes n and, the first time, its subtree in pre-order, each node indented
 * by its depth; a stack on the heap holds the kids still to print. */
void lib_print(FILE *f, LibNode *n) {
  typedef struct Pending {
    LibNode *node;
    int depth;
    const char *bind;
  } Pending;
  size_t cap = 64, top = 0;
  Pending *stack = malloc(cap * sizeof *stack);
  if (!stack) ICE("out of memory");
  stack[top++] = (Pending){n, 0, NULL};
  while (top) {
    Pending p = stack[--top];
    LibNode *t = p.node;
    fprintf(f, "%*s'%s'", 2 * p.depth, "", t->name);
    if (!t->printed) fprintf(f, " %s", t->head);
    if (p.bind) fprintf(f, " ! '%s'", p.bind);
    fputc('\n', f);
    if (t->printed) continue;
    t->printed = true;
    if (top + (size_t)t->nkid > cap) {
      while (top + (size_t)t->nkid > cap) cap *= 2;
      if (!(stack = realloc(stack, cap * sizeof *stack))) ICE("out of memory");
    }
    for (int i = t->nkid - 1; i >= 0; i--) stack[top++] = (Pending){t->kid[i].node, p.depth + 1, t->kid[i].bind};
  }
  free(stack);
}

static int by_name(const void *a, const void *b) {
  return strcmp((*(LibNode *const *)a)->name, (*(LibNode *const *)b)->name);
}

/* Names are the identifiers of the text format: each must name one node. */
void lib_check_unique_names(Library *l) {
  LibNode **v = ARENA_ARRAY(&l->c->arena, LibNode *, l->n ? l->n : 1);
  if (l->n) memcpy(v, l->all, (size_t)l->n * sizeof *v);
  qsort(v, (size_t)l->n, sizeof *v, by_name);
  for (int i = 1; i < l->n; i++)
    if (!strcmp(v[i - 1]->name, v[i]->name)) ICE("duplicate circuit name '%s'", v[i]->name);
}

/* ------------------------------------------------------------ the specs */

const LibSymbol LIB_BLOCK_WEIGHT[LIB_BLOCK_WEIGHTS] = {
    {"a.w.q", "4s,7s,0s"},   {"a.w.q_bias", "4s,7s"},  {"a.w.k", "4s,7s,0s"},       {"a.w.k_bias", "4s,7s"},
    {"a.w.v", "4s,8s,0s"},   {"a.w.v_bias", "4s,8s"},  {"a.w.o", "4s,0s,8s"},       {"a.w.o_bias", "0s"},
    {"a.ln.w.scale", "0s"},  {"a.ln.w.bias", "0s"},    {"m.w.proj_in", "5s,0s"},    {"m.w.in_bias", "5s"},
    {"m.w.proj_out", "0s,5s"}, {"m.w.out_bias", "0s"}, {"m.ln.w.scale", "0s"},      {"m.ln.w.bias", "0s"},
};

LibNode *lib_ln_spec(Library *l, double eps) {
  LibNode *in = lib_symbol(l, "ln.input", "0s");
  LibNode *recip = lib_node(l, "ln.c.recip_hidden_size", "GeneralFunction reciprocal",
                            lib_node(l, "ln.c.hidden_size", "GeneralFunction last_dim_size", in, NULL), NULL);
  LibNode *neg_mean = lib_node(l, "ln.neg_mean", "Einsum h,z,->z", in, lib_scalar(l, "ln.neg", "1", -1), recip, NULL);
  LibNode *ms = lib_node(l, "ln.mean_subbed", "Add", in, neg_mean, NULL);
  LibNode *var = lib_node(l, "ln.var", "Einsum h,h,->", ms, ms, recip, NULL);
  LibNode *rsqrt = lib_node(l, "ln.rsqrt", "GeneralFunction rsqrt",
                            lib_node(l, "ln.var_p_eps", "Add", lib_scalar(l, "ln.c.eps", "", eps), var, NULL), NULL);
  LibNode *y = lib_node(l, "ln.y", "Einsum h,->h", ms, rsqrt, NULL);
  return lib_node(l, "ln", "Add", lib_symbol(l, "ln.w.bias", "0s"),
                  lib_node(l, "ln.y_scaled", "Einsum h,h->h", y, lib_symbol(l, "ln.w.scale", "0s"), NULL), NULL);
}

LibNode *lib_norm_bind(Library *l, LibNode *ln, const char *p) {
  LibNode *norm = lib_module(l, lib_fmt(l, "%s.norm", p), ln);
  lib_arg(l, norm, lib_symbol(l, lib_fmt(l, "%s.norm.input", p), "1s,0s"), lib_find(l, "ln.input"));
  lib_arg(l, norm, lib_symbol(l, lib_fmt(l, "%s.ln.w.bias", p), "0s"), lib_find(l, "ln.w.bias"));
  lib_arg(l, norm, lib_symbol(l, lib_fmt(l, "%s.ln.w.scale", p), "0s"), lib_find(l, "ln.w.scale"));
  return norm;
}

LibNode *lib_attn_spec(Library *l) {
  LibNode *q_in = lib_symbol(l, "a.q.input", "2s,0s"), *wq = lib_symbol(l, "a.w.q_h", "7s,0s");
  LibNode *qb = lib_symbol(l, "a.w.q_bias_h", "7s");
  LibNode *q = lib_node(l, "a.q_p_bias", "Add", lib_node(l, "a.q", "Einsum qd,cd->qc", q_in, wq, NULL), qb, NULL);
  LibNode *k_in = lib_symbol(l, "a.k.input", "3s,0s"), *wk = lib_symbol(l, "a.w.k_h", "7s,0s");
  LibNode *kb = lib_symbol(l, "a.w.k_bias_h", "7s");
  LibNode *k = lib_node(l, "a.k_p_bias", "Add", lib_node(l, "a.k", "Einsum kd,cd->kc", k_in, wk, NULL), kb, NULL);
  LibNode *div = lib_node(l, "a.c.div_head_size", "GeneralFunction rsqrt",
                          lib_node(l, "a.c.head_size", "GeneralFunction last_dim_size",
                                   lib_node(l, "a.c.w_k_sum", "Einsum jk->j", wk, NULL), NULL),
                          NULL);
  LibNode *mask = lib_symbol(l, "a.mask", "2s,3s");
  LibNode *raw = lib_node(l, "a.attn_scores_raw", "Einsum qc,kc,,qk->qk", q, k, div, mask, NULL);
  LibNode *nm_in = lib_symbol(l, "not_mask.input", "");
  LibNode *not_mask =
      lib_node(l, "not_mask", "Add", lib_scalar(l, "one", "", 1),
               lib_node(l, "not_mask.neg", "Einsum ,->", nm_in, lib_scalar(l, "neg_one", "", -1), NULL), NULL);
  LibNode *a_not_mask = lib_module(l, "a.not_mask", not_mask);
  lib_arg(l, a_not_mask, mask, nm_in);
  LibNode *neg_bias = lib_node(l, "a.score_neg_inf_bias", "Einsum qk,->qk", a_not_mask,
                               lib_node(l, "a.neg_inf", "[] Scalar -10_000.0", NULL), NULL);
  LibNode *probs = lib_node(l, "a.attn_probs", "GeneralFunction softmax",
                            lib_node(l, "a.attn_scores", "Add", raw, neg_bias, NULL), NULL);
  LibNode *v_in = lib_symbol(l, "a.v.input", "3s,0s"), *wv = lib_symbol(l, "a.w.v_h", "8s,0s");
  LibNode *vb = lib_symbol(l, "a.w.v_bias_h", "8s");
  LibNode *v = lib_node(l, "a.v_p_bias", "Add", lib_node(l, "a.v", "Einsum kd,Vd->kV", v_in, wv, NULL), vb, NULL);
  LibNode *wo = lib_symbol(l, "a.w.o_h", "0s,8s");
  LibNode *head = lib_node(l, "a.head", "Einsum sV,dV->sd",
                           lib_node(l, "a.comb_v", "Einsum qk,kV->qV", probs, v, NULL), wo, NULL);
  LibNode *on_inp = lib_module(l, "a.head.on_inp", head);
  LibNode *a_input = lib_symbol(l, "a.input", "1s,0s");
  lib_arg(l, on_inp, a_input, q_in);
  lib_arg(l, on_inp, a_input, k_in);
  lib_arg(l, on_inp, a_input, v_in);
  /* a.heads binds each per-head weight symbol to the [HEADS,...] one, the block weights q..o */
  LibNode *heads = lib_module(l, "a.heads", on_inp);
  LibNode *per_head[] = {wq, qb, wk, kb, wv, vb, wo};
  for (int w = 0; w < (int)(sizeof per_head / sizeof *per_head); w++)
    lib_arg(l, heads, lib_symbol(l, LIB_BLOCK_WEIGHT[w].name, LIB_BLOCK_WEIGHT[w].shape), per_head[w]);
  return lib_node(l, "a.p_bias", "Add", lib_node(l, "a", "Einsum hsd->sd", heads, NULL),
                  lib_symbol(l, "a.w.o_bias", "0s"), NULL);
}

LibNode *lib_mlp_spec(Library *l, const char *act) {
  LibNode *pre = lib_node(l, "m.pre", "Add",
                          lib_node(l, "m.pre_mul", "Einsum i,hi->h", lib_symbol(l, "m.input", "0s"),
                                   lib_symbol(l, "m.w.proj_in", "5s,0s"), NULL),
                          lib_symbol(l, "m.w.in_bias", "5s"), NULL);
  LibNode *m =
      lib_node(l, "m", "Einsum h,oh->o", lib_node(l, "m.act", lib_fmt(l, "GeneralFunction %s", act), pre, NULL),
               lib_symbol(l, "m.w.proj_out", "0s,5s"), NULL);
  return lib_node(l, "m.p_bias", "Add", m, lib_symbol(l, "m.w.out_bias", "0s"), NULL);
}

LibNode *lib_norm_call(Library *l, LibNode *ln, const char *p, LibNode *body) {
  LibNode *call = lib_module(l, lib_fmt(l, "%s.norm_call", p), body);
  lib_arg(l, call, lib_norm_bind(l, ln, p), lib_find(l, lib_fmt(l, "%s.input", p)));
  return call;
}

LibNode *lib_block_spec(Library *l, LibNode *ln, const char *act) {
  LibNode *a_call = lib_norm_call(l, ln, "a", lib_attn_spec(l));
  LibNode *m_call = lib_norm_call(l, ln, "m", lib_mlp_spec(l, act));
  LibNode *b_input = lib_symbol(l, "b.input", "1s,0s");
  LibNode *ba = lib_module(l, "b.a", a_call);
  lib_arg(l, ba, b_input, lib_find(l, "a.norm.input"));
  LibNode *resid_a = lib_node(l, "b.resid.a", "Add", ba, b_input, NULL);
  LibNode *bm = lib_module(l, "b.m", m_call);
  lib_arg(l, bm, resid_a, lib_find(l, "m.norm.input"));
  return lib_node(l, "b", "Add", bm, resid_a, NULL);
}
