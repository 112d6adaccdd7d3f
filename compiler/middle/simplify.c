/* simplify.c — the simplifier's driver: runs the rewrite rules of
 * rust_circuit_format.md §6.1 (the rule files simplify_einsum.c,
 * simplify_add.c, simplify_shape.c, and the folding rules below) to a fixpoint
 * over a resolved program, then merges structurally equal nodes (CSE).
 *
 * Input: module-free circuits with concrete shapes (after resolve); free
 * Symbols are inputs. Output: the same values (up to float rounding of folded
 * constants), every node of the same shape as the one it replaced. A pass
 * rebuilds the DAG bottom-up (memoised by node pointer): a node's children are
 * simplified first, then its rules are tried in table order until none fires;
 * a rule's replacement is simplified in turn. Passes repeat until none fires. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "simplify.h"
#include "ptrmap.h"

enum {
  MAX_REWRITES_PER_NODE = 64,    /* more means two rules undo each other: an ICE */
  MAX_PASSES = 100,              /* each pass that fires enables the next; a safety net */
  MAX_ROUNDS = 16,               /* {passes, CSE} rounds */
  FOLD_MAX_NUMEL = 1 << 16,      /* constant folding: largest result materialised */
};
static const double FOLD_MAX_COST = (double)(1 << 24); /* element-steps the evaluator may spend on one fold */

/* ------------------------------------------------------------ the state */

typedef struct Rule {
  const char *name;
  int kind;          /* NodeKind it applies to; -1 = every kind */
  RuleFn fn;         /* NULL: not a node rule (the CSE count) */
} Rule;

struct Simp {
  Comp *c;
  PtrMap memo;       /* this pass: original node -> simplified (results map to themselves) */
  PtrMap uses;       /* this pass: reference counts of the starting DAG */
  PtrMap cost;       /* whole run: constant-subgraph costs (nodes are immutable) */
  int *fired;        /* per rule */
  long fired_pass;   /* rules fired this pass */
};

Comp *simp_comp(Simp *s) { return s->c; }

bool simp_single_use(Simp *s, const Node *n) {
  const PtrMapEntry *u = ptrmap_find(&s->uses, n);
  return u && u->num == 1 && !u->flag;
}

void simp_claim(Simp *s, const Node *n) { ptrmap_get(&s->uses, n)->flag = true; }

Node *simp_make(Simp *s, const Node *like, Node proto) {
  proto.loc = like->loc;
  Node *n = ir_make(s->c, &proto);
  if (!n) ICE("simplify: a rule built an invalid %s node from %s", kind_name(proto.kind), node_label(s->c, like));
  return n;
}

Node *simp_scalar(Simp *s, const Node *like, double value, const Shape *shape) {
  return simp_make(s, like, (Node){.kind = NK_Scalar, .name = like->name, .shape = *shape, .u.scalar.value = value});
}

Node *simp_broadcast_to(Simp *s, const Node *like, Node *x, const Shape *shape, const char *name) {
  if (shape_eq(&x->shape, shape)) return x;
  Arena *a = &s->c->arena;
  int off = shape->rank - x->shape.rank;
  CHECK(off >= 0);
  Node p = {.kind = NK_Rearrange, .name = name, .nchild = 1, .child = &x};
  RearrangeSpec *r = &p.u.rearrange;
  r->nids = shape->rank, r->nin = x->shape.rank, r->nout = shape->rank;
  r->size = ARENA_ARRAY(a, int64_t, r->nids + 1);
  r->in_len = ARENA_ARRAY(a, int, r->nin + 1);
  r->in_ids = ARENA_ARRAY(a, int *, r->nin + 1);
  r->out_len = ARENA_ARRAY(a, int, r->nout + 1);
  r->out_ids = ARENA_ARRAY(a, int *, r->nout + 1);
  for (int j = 0; j < shape->rank; j++) { /* id j is output axis j */
    r->size[j] = shape->dim[j];
    r->out_len[j] = 1;
    r->out_ids[j] = ARENA_NEW(a, int);
    r->out_ids[j][0] = j;
  }
  for (int k = 0; k < x->shape.rank; k++) { /* input axis k: id off+k, or () if it is broadcast */
    r->in_ids[k] = ARENA_NEW(a, int);
    r->in_ids[k][0] = off + k;
    r->in_len[k] = x->shape.dim[k] == shape->dim[off + k];
    CHECK(r->in_len[k] || x->shape.dim[k] == 1);
  }
  return simp_make(s, like, p);
}

Tensor *simp_index_tensor(Simp *s, int64_t m) {
  Shape sh = {.rank = 1, .dim = {m}};
  return tensor_new(s->c, DT_I64, &sh);
}

void simp_seal(Tensor *t) { tensor_hash_hex(t, t->hash_hex); }

/* ------------------------------------------------------ shared predicates */

bool is_scalar_value(const Node *n, double v) { return n->kind == NK_Scalar && n->u.scalar.value == v; }

bool ids_have_repeats(const int *ids, int n) {
  for (int i = 0; i < n; i++)
    for (int j = 0; j < i; j++)
      if (ids[i] == ids[j]) return true;
  return false;
}

bool rearrange_perm(const Node *n, int *perm) {
  if (n->kind != NK_Rearrange) return false;
  const RearrangeSpec *r = &n->u.rearrange;
  if (r->nin != r->nout) return false;
  for (int k = 0; k < r->nin; k++)
    if (r->in_len[k] != 1 || r->out_len[k] != 1) return false;
  for (int k = 0; k < r->nout; k++) {
    perm[k] = -1;
    for (int i = 0; i < r->nin; i++)
      if (r->in_ids[i][0] == r->out_ids[k][0]) perm[k] = i;
    if (perm[k] < 0) return false; /* a repeat axis */
  }
  return true;
}

bool broadcast_shapes(Node *const *nodes, int n, Shape *out) {
  int rank = 0;
  bool set[MAX_RANK] = {0};
  for (int i = 0; i < n; i++)
    if (nodes[i]->shape.rank > rank) rank = nodes[i]->shape.rank;
  out->rank = rank;
  for (int k = 0; k < rank; k++) out->dim[k] = 1;
  for (int i = 0; i < n; i++) {
    const Shape *s = &nodes[i]->shape;
    for (int k = 0; k < s->rank; k++) {
      int64_t *o = &out->dim[rank - s->rank + k], v = s->dim[k];
      bool *st = &set[rank - s->rank + k];
      if (!*st || *o == v) *o = v;
      else if (v == 1 && *o != 0) continue;
      else if (*o == 1 && v != 0) *o = v;
      else return false;
      *st = true;
    }
  }
  return true;
}

/* ------------------------------------------------------------- folding */

/* A throwaway compilation context for speculative evaluation: its tensors
 * (every intermediate value) are freed right after, and its diagnostics are
 * discarded (a constant that fails to evaluate is simply not folded; the error
 * surfaces where the program is really evaluated). */
typedef struct Scratch {
  Comp c;
  char *buf;
  size_t len;
  Eval *e;
} Scratch;

static void scratch_open(Scratch *k) {
  comp_init(&k->c);
  k->buf = NULL, k->len = 0;
  k->c.err = open_memstream(&k->buf, &k->len);
  if (!k->c.err) ICE("open_memstream failed");
  k->e = eval_new(&k->c);
}

static void scratch_close(Scratch *k) {
  eval_free(k->e);
  fclose(k->c.err);
  free(k->buf);
  comp_free(&k->c);
}

/* The single value of GeneralFunction n applied to Scalar children (n's output
 * is uniform): evaluated on the smallest inputs that give it, a rank-0 value
 * or one row, with the evaluator's own math. */
static bool uniform_genfn_value(const Node *n, double *out) {
  Scratch k;
  scratch_open(&k);
  Node *ch[2];
  Shape sh = {0};
  if (genfn_class(n->u.gf.fn) != GF_ELEMENTWISE && genfn_class(n->u.gf.fn) != GF_SPECIAL)
    sh = (Shape){.rank = 1, .dim = {n->child[0]->shape.dim[n->child[0]->shape.rank - 1]}};
  for (int i = 0; i < n->nchild; i++)
    ch[i] = ir_make(&k.c, &(Node){.kind = NK_Scalar, .shape = sh, .u.scalar.value = n->child[i]->u.scalar.value});
  Node p = *n;
  p.name = NULL, p.child = ch;
  Node *proxy = ir_make(&k.c, &p);
  Tensor *v = proxy ? eval_node(k.e, proxy) : NULL;
  bool ok = v && shape_numel(&v->shape) > 0;
  if (ok) *out = ((double *)v->data)[0];
  scratch_close(&k);
  return ok;
}

/* GeneralFunction last_dim_size(x) -> Scalar[x.shape[:-1]] x.shape[-1] */
static Node *rule_last_dim_size(Simp *s, Node *n) {
  if (n->u.gf.fn != GF_LAST_DIM_SIZE) return NULL;
  const Shape *x = &n->child[0]->shape;
  return simp_scalar(s, n, (double)x->dim[x->rank - 1], &n->shape);
}

/* GeneralFunction f(Scalar v) -> Scalar f(v)   (elementwise f, softmax/log_softmax/min/max
 * over a uniform row, pow of two Scalars) */
static Node *rule_genfn_of_scalar(Simp *s, Node *n) {
  const GenFnSpec *g = &n->u.gf;
  switch (genfn_class(g->fn)) {
  case GF_ELEMENTWISE: break;
  case GF_LAST_AXIS:
  case GF_REDUCE_LAST: {
    /* the value comes from evaluating one row: bounded like any fold */
    int64_t len = n->child[0]->shape.dim[n->child[0]->shape.rank - 1];
    if (len == 0 || len > FOLD_MAX_NUMEL) return NULL;
    break;
  }
  case GF_SPECIAL:
    if (g->fn != GF_POW) return NULL;
    break;
  }
  for (int i = 0; i < n->nchild; i++)
    if (n->child[i]->kind != NK_Scalar) return NULL;
  double v;
  return uniform_genfn_value(n, &v) ? simp_scalar(s, n, v, &n->shape) : NULL;
}

/* n's own work in const_cost, or -1 if n makes its subgraph's -1. */
static double own_cost(const Node *n) {
  double cost = (double)shape_numel(&n->shape);
  switch (n->kind) {
  case NK_Symbol: case NK_Module: case NK_DiscreteVar: case NK_StoredCumulantVar: case NK_Conv:
    return -1;
  case NK_GeneralFunction:
    if (n->u.gf.fn == GF_MULTINOMIAL || n->u.gf.fn == GF_USER || n->u.gf.fn == GF_PATCH) return -1;
    break;
  case NK_Einsum: { /* the evaluator loops over every assignment of every id */
    bool seen[256] = {0};
    double steps = 1;
    for (int i = 0; i < n->nchild; i++)
      for (int k = 0; k < n->u.einsum.in_rank[i]; k++)
        if (!seen[n->u.einsum.in[i][k]]) {
          seen[n->u.einsum.in[i][k]] = true;
          steps *= (double)n->child[i]->shape.dim[k];
        }
    cost += steps * (n->nchild + 1);
    break;
  }
  default: break;
  }
  return cost;
}

/* A -1 node's subgraph is not walked: its cost is known. */
static bool cost_enter(Node *n, void *arg) {
  Simp *s = arg;
  if (ptrmap_find(&s->cost, n)) return false;
  if (own_cost(n) >= 0) return true;
  ptrmap_get(&s->cost, n)->real = -1;
  return false;
}

static bool cost_leave(Node *n, void *arg) {
  Simp *s = arg;
  double cost = own_cost(n);
  for (int i = 0; i < n->nchild && cost >= 0; i++) {
    double c = ptrmap_find(&s->cost, n->child[i])->real;
    cost = c < 0 ? -1 : cost + c;
  }
  ptrmap_get(&s->cost, n)->real = cost;
  return true;
}

/* Work to evaluate n's subgraph (element steps, shared nodes counted per use),
 * or -1 if it depends on a Symbol or contains a kind the evaluator rejects. */
static double const_cost(Simp *s, Node *n) {
  ir_walk(n, cost_enter, cost_leave, s);
  return ptrmap_find(&s->cost, n)->real;
}

/* v as a float, with out-of-range values becoming ±inf (a plain cast would be undefined). */
static float to_f32(double v) {
  if (isfinite(v) && fabs(v) >= 0x1.ffffffp127) return (float)copysign(INFINITY, v);
  return (float)v;
}

/* node (weights only, small result) -> Array holding its value
 * (f32 nodes give an f32 Array; f64 ones, i.e. Scalars only, a Scalar if uniform) */
static Node *rule_fold_constants(Simp *s, Node *n) {
  if (n->kind == NK_Array || n->kind == NK_Scalar || n->kind == NK_Symbol) return NULL;
  if (n->dtype != DT_F32 && n->dtype != DT_F64) return NULL;
  int64_t numel = shape_numel(&n->shape);
  double cost = const_cost(s, n);
  if (numel > FOLD_MAX_NUMEL || cost < 0 || cost > FOLD_MAX_COST) return NULL;
  Scratch k;
  scratch_open(&k);
  Tensor *v = eval_node(k.e, n), *t = NULL;
  Node *out = NULL;
  if (v) {
    const double *x = v->data;
    bool uniform = numel > 0;
    for (int64_t i = 1; i < numel && uniform; i++) uniform = memcmp(&x[i], &x[0], sizeof *x) == 0;
    if (n->dtype == DT_F64 && uniform) {
      out = simp_scalar(s, n, x[0], &n->shape);
    } else {
      t = tensor_new(s->c, n->dtype, &n->shape);
      for (int64_t i = 0; i < numel; i++) {
        if (n->dtype == DT_F32) ((float *)t->data)[i] = to_f32(x[i]);
        else ((double *)t->data)[i] = x[i];
      }
    }
  }
  scratch_close(&k);
  if (t) {
    simp_seal(t);
    out = simp_make(s, n, (Node){.kind = NK_Array, .name = n->name, .u.array.tensor = t});
  }
  return out;
}

/* ---------------------------------------------------------- rule table */

static const Rule RULES[] = {
    {"add_elim_identity", NK_Add, rule_add_elim_identity},
    {"add_flatten", NK_Add, rule_add_flatten},
    {"add_elim_zeros", NK_Add, rule_add_elim_zeros},
    {"add_collapse_scalar_inputs", NK_Add, rule_add_collapse_scalars},
    {"einsum_elim_zero", NK_Einsum, rule_einsum_elim_zero},
    {"einsum_elim_identity", NK_Einsum, rule_einsum_elim_identity},
    {"einsum_of_scalars", NK_Einsum, rule_einsum_of_scalars},
    {"einsum_scalar_to_rank0", NK_Einsum, rule_einsum_scalar_to_rank0},
    {"einsum_merge_scalars", NK_Einsum, rule_einsum_merge_scalars},
    {"einsum_remove_one", NK_Einsum, rule_einsum_remove_one},
    {"einsum_of_permute_merge", NK_Einsum, rule_einsum_of_permute_merge},
    {"einsum_flatten", NK_Einsum, rule_einsum_flatten},
    {"einsum_drop_size1_sum", NK_Einsum, rule_einsum_drop_size1_sum},
    {"rearrange_elim_identity", NK_Rearrange, rule_rearrange_elim_identity},
    {"rearrange_merge_scalar", NK_Rearrange, rule_rearrange_merge_scalar},
    {"rearrange_fuse", NK_Rearrange, rule_rearrange_fuse},
    {"permute_of_einsum_merge", NK_Rearrange, rule_permute_of_einsum_merge},
    {"index_elim_identity", NK_Index, rule_index_elim_identity},
    {"index_merge_scalar", NK_Index, rule_index_merge_scalar},
    {"index_fuse", NK_Index, rule_index_fuse},
    {"concat_elim_identity", NK_Concat, rule_concat_elim_identity},
    {"tag_elim", NK_Tag, rule_tag_elim},
    {"set_symbolic_shape_elim", NK_SetSymbolicShape, rule_set_symbolic_shape_elim},
    {"last_dim_size_fold", NK_GeneralFunction, rule_last_dim_size},
    {"generalfunction_of_scalar", NK_GeneralFunction, rule_genfn_of_scalar},
    {"fold_constants", -1, rule_fold_constants},
    {"cse", -1, NULL}, /* counts nodes merged by CSE */
};
enum { NRULES = sizeof RULES / sizeof *RULES, CSE_RULE = NRULES - 1 };

/* ---------------------------------------------------------------- driver */

static Node *simp_node(Simp *s, Node *x);

static Node *rebuild(Comp *c, const Node *x, Node **ch) {
  Node *n = ir_with_children(c, x, ch, x->nchild);
  if (!n) ICE("simplify: rebuilding %s with simplified children failed", node_label(c, x));
  return n;
}

/* x with its children simplified (a new node only if one changed). */
static Node *with_simplified_children(Simp *s, Node *x) {
  Node **ch = NULL;
  for (int i = 0; i < x->nchild; i++) {
    Node *c = simp_node(s, x->child[i]);
    if (c == x->child[i]) continue;
    if (!ch) {
      ch = ARENA_ARRAY(&s->c->arena, Node *, x->nchild);
      memcpy(ch, x->child, sizeof(Node *) * (size_t)x->nchild);
    }
    ch[i] = c;
  }
  return ch ? rebuild(s->c, x, ch) : x;
}

static bool simp_enter(Node *x, void *arg) { return !ptrmap_find(&((Simp *)arg)->memo, x); }

/* x simplified, its children first (ir_walk's leave): memoised for x and the result. */
static bool simp_leave(Node *x, void *arg) {
  Simp *s = arg;
  Node *n = with_simplified_children(s, x);
  for (int iter = 0;; iter++) {
    Node *r = NULL;
    int k = 0;
    for (; k < NRULES && !r; k++)
      if (RULES[k].fn && (RULES[k].kind < 0 || RULES[k].kind == (int)n->kind)) r = RULES[k].fn(s, n);
    if (!r) break;
    const char *rule = RULES[k - 1].name;
    if (!shape_eq(&r->shape, &n->shape))
      ICE("simplify: rule %s turned %s of shape %s into shape %s", rule, node_label(s->c, n),
          shape_str(s->c, &n->shape), shape_str(s->c, &r->shape));
    if (iter >= MAX_REWRITES_PER_NODE) ICE("simplify: rules keep rewriting %s (last: %s)", node_label(s->c, x), rule);
    s->fired[k - 1]++;
    s->fired_pass++;
    /* a rule's new nodes stand on simplified ones: this walk is as deep as the rule's output */
    n = with_simplified_children(s, r);
  }
  ptrmap_get(&s->memo, x)->ptr = n;
  ptrmap_get(&s->memo, n)->ptr = n;
  if (n != x) { /* the result inherits x's users (conservatively, if it had users of its own) */
    const PtrMapEntry *u = ptrmap_find(&s->uses, x);
    if (u) {
      int uses = u->num;
      ptrmap_get(&s->uses, n)->num += uses;
    }
  }
  return true;
}

static Node *simp_node(Simp *s, Node *x) {
  ir_walk(x, simp_enter, simp_leave, s);
  return ptrmap_find(&s->memo, x)->ptr;
}

/* Counts each node's users; a node's children once, when it is first met. */
static bool count_uses(Node *n, void *arg) { return ptrmap_get(&((Simp *)arg)->uses, n)->num++ == 0; }

/* Simplification passes until one fires no rule; the number of rules fired. */
static long run_passes(Simp *s, Node **roots, int n) {
  long total = 0;
  for (int pass = 0; pass < MAX_PASSES; pass++) {
    ptrmap_free(&s->memo);
    ptrmap_free(&s->uses);
    for (int i = 0; i < n; i++) ir_walk(roots[i], count_uses, NULL, s);
    s->fired_pass = 0;
    for (int i = 0; i < n; i++) roots[i] = simp_node(s, roots[i]);
    total += s->fired_pass;
    if (!s->fired_pass) break;
  }
  return total;
}

/* ------------------------------------------------------------------- CSE */

/* Structural identity ignoring names: same kind, shape, parameters and (already
 * canonical) children. Symbols keep their names (name, uuid and shape identify
 * an input); Arrays are equal if they hold the same data. */

static uint64_t mix(uint64_t h, uint64_t v) {
  h ^= v + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
  h *= 0xff51afd7ed558ccdull;
  return h ^ (h >> 33);
}

static uint64_t mix_bytes(uint64_t h, const void *p, size_t n) {
  const unsigned char *b = p;
  uint64_t f = 0xcbf29ce484222325ull;
  for (size_t i = 0; i < n; i++) f = (f ^ b[i]) * 0x100000001b3ull;
  return mix(h, f);
}

static uint64_t mix_str(uint64_t h, const char *s) { return s ? mix_bytes(h, s, strlen(s)) : mix(h, 0xdead); }

/* dtype, shape and the first and last 64 bytes: equal tensors hash equal, cheaply. */
static uint64_t tensor_digest(uint64_t h, const Tensor *t) {
  h = mix(h, (uint64_t)t->dtype);
  for (int k = 0; k < t->shape.rank; k++) h = mix(h, (uint64_t)t->shape.dim[k]);
  size_t n = t->nbytes < 64 ? t->nbytes : 64;
  h = mix_bytes(h, t->data, n);
  return mix_bytes(h, (const char *)t->data + t->nbytes - n, n);
}

static bool tensor_same(const Tensor *a, const Tensor *b) {
  if (a == b) return true;
  if (a->hash_hex[0] && b->hash_hex[0]) return strcmp(a->hash_hex, b->hash_hex) == 0;
  return a->dtype == b->dtype && shape_eq(&a->shape, &b->shape) && a->nbytes == b->nbytes &&
         memcmp(a->data, b->data, a->nbytes) == 0;
}

/* Index/Scatter entry k normalised against the axis it indexes. */
static IndexEntry norm_entry(const Node *n, int k) {
  IndexEntry e = n->u.index.e[k];
  int64_t len = n->kind == NK_Scatter ? n->shape.dim[k] : n->child[0]->shape.dim[k], a = 0, b = 0;
  if (e.kind != IDX_TENSOR) index_entry_bounds(&e, len, &a, &b);
  return (IndexEntry){.kind = e.kind, .start = a, .stop = b, .tensor = e.tensor};
}

static bool ints_eq(const int *a, const int *b, int n) { return n == 0 || memcmp(a, b, sizeof(int) * (size_t)n) == 0; }

static uint64_t cse_hash(const Node *n) {
  uint64_t h = mix(0x51ed270b27f4d1c3ull, (uint64_t)n->kind);
  h = mix(h, (uint64_t)(int64_t)n->dtype);
  for (int k = 0; k < n->shape.rank; k++) h = mix(h, (uint64_t)n->shape.dim[k]);
  h = mix(h, (uint64_t)n->nchild);
  for (int i = 0; i < n->nchild; i++) h = mix(h, (uint64_t)(uintptr_t)n->child[i]);
  switch (n->kind) {
  case NK_Einsum:
    for (int i = 0; i < n->nchild; i++) h = mix_bytes(h, n->u.einsum.in[i], sizeof(int) * (size_t)n->u.einsum.in_rank[i]);
    h = mix_bytes(h, n->u.einsum.out, sizeof(int) * (size_t)n->u.einsum.out_rank);
    break;
  case NK_Array: h = tensor_digest(h, n->u.array.tensor); break;
  case NK_Symbol: h = mix_str(mix_str(h, n->u.symbol.uuid), n->name); break;
  case NK_Scalar: h = mix_bytes(h, &n->u.scalar.value, sizeof(double)); break;
  case NK_Rearrange: {
    const RearrangeSpec *r = &n->u.rearrange;
    for (int g = 0; g < r->nin; g++) h = mix_bytes(mix(h, (uint64_t)r->in_len[g]), r->in_ids[g], sizeof(int) * (size_t)r->in_len[g]);
    for (int g = 0; g < r->nout; g++) h = mix_bytes(mix(h, (uint64_t)r->out_len[g]), r->out_ids[g], sizeof(int) * (size_t)r->out_len[g]);
    h = mix_bytes(h, r->size, sizeof(int64_t) * (size_t)r->nids);
    break;
  }
  case NK_Index:
  case NK_Scatter:
    for (int k = 0; k < n->u.index.n; k++) {
      IndexEntry e = norm_entry(n, k);
      h = mix(mix(mix(h, (uint64_t)e.kind), (uint64_t)e.start), (uint64_t)e.stop);
      if (e.kind == IDX_TENSOR) h = tensor_digest(h, e.tensor);
    }
    break;
  case NK_GeneralFunction: h = mix_str(h, n->u.gf.text); break;
  case NK_Concat: h = mix(h, (uint64_t)n->u.concat.axis); break;
  case NK_Tag: h = mix_str(h, n->u.tag.uuid); break;
  case NK_Module: case NK_DiscreteVar: case NK_StoredCumulantVar: case NK_Conv:
    h = mix(h, (uint64_t)(uintptr_t)n); /* never merged */
    break;
  default: break;
  }
  return h;
}

static bool cse_equal(const Node *a, const Node *b) {
  if (a == b) return true;
  if (a->kind != b->kind || a->dtype != b->dtype || !shape_eq(&a->shape, &b->shape) || a->nchild != b->nchild)
    return false;
  for (int i = 0; i < a->nchild; i++)
    if (a->child[i] != b->child[i]) return false;
  switch (a->kind) {
  case NK_Einsum: {
    const EinsumSpec *x = &a->u.einsum, *y = &b->u.einsum;
    for (int i = 0; i < a->nchild; i++)
      if (x->in_rank[i] != y->in_rank[i] || !ints_eq(x->in[i], y->in[i], x->in_rank[i])) return false;
    return x->out_rank == y->out_rank && ints_eq(x->out, y->out, x->out_rank);
  }
  case NK_Array: return tensor_same(a->u.array.tensor, b->u.array.tensor);
  case NK_Symbol:
    return strcmp(a->u.symbol.uuid, b->u.symbol.uuid) == 0 &&
           ((!a->name && !b->name) || (a->name && b->name && strcmp(a->name, b->name) == 0));
  case NK_Scalar: return memcmp(&a->u.scalar.value, &b->u.scalar.value, sizeof(double)) == 0;
  case NK_Rearrange: {
    const RearrangeSpec *x = &a->u.rearrange, *y = &b->u.rearrange;
    if (x->nin != y->nin || x->nout != y->nout || x->nids != y->nids) return false;
    for (int g = 0; g < x->nin; g++)
      if (x->in_len[g] != y->in_len[g] || !ints_eq(x->in_ids[g], y->in_ids[g], x->in_len[g])) return false;
    for (int g = 0; g < x->nout; g++)
      if (x->out_len[g] != y->out_len[g] || !ints_eq(x->out_ids[g], y->out_ids[g], x->out_len[g])) return false;
    return x->nids == 0 || memcmp(x->size, y->size, sizeof(int64_t) * (size_t)x->nids) == 0;
  }
  case NK_Index:
  case NK_Scatter:
    if (a->u.index.n != b->u.index.n) return false;
    for (int k = 0; k < a->u.index.n; k++) {
      IndexEntry x = norm_entry(a, k), y = norm_entry(b, k);
      if (x.kind != y.kind || x.start != y.start || x.stop != y.stop) return false;
      if (x.kind == IDX_TENSOR && !tensor_same(x.tensor, y.tensor)) return false;
    }
    return true;
  case NK_GeneralFunction: return strcmp(a->u.gf.text, b->u.gf.text) == 0;
  case NK_Concat: return a->u.concat.axis == b->u.concat.axis;
  case NK_Tag: return strcmp(a->u.tag.uuid, b->u.tag.uuid) == 0;
  case NK_Module: case NK_DiscreteVar: case NK_StoredCumulantVar: case NK_Conv: return false;
  default: return true;
  }
}

typedef struct CseEntry {
  uint64_t hash;
  Node *node;        /* NULL = empty */
} CseEntry;

typedef struct Cse {
  Comp *c;
  PtrMap done;       /* node -> canonical node */
  CseEntry *tab;
  size_t cap, count;
  int merged;
} Cse;

static Node *cse_insert(Cse *k, Node *n) {
  if (2 * (k->count + 1) > k->cap) {
    size_t cap = k->cap ? 2 * k->cap : 256;
    CseEntry *t = calloc(cap, sizeof *t);
    if (!t) ICE("out of memory");
    for (size_t i = 0; i < k->cap; i++)
      if (k->tab[i].node) {
        size_t j = k->tab[i].hash & (cap - 1);
        while (t[j].node) j = (j + 1) & (cap - 1);
        t[j] = k->tab[i];
      }
    free(k->tab);
    k->tab = t, k->cap = cap;
  }
  uint64_t h = cse_hash(n);
  size_t i = h & (k->cap - 1);
  for (; k->tab[i].node; i = (i + 1) & (k->cap - 1))
    if (k->tab[i].hash == h && cse_equal(k->tab[i].node, n)) return k->tab[i].node;
  k->tab[i] = (CseEntry){h, n};
  k->count++;
  return n;
}

static bool cse_enter(Node *x, void *arg) { return !ptrmap_find(&((Cse *)arg)->done, x); }

/* x's canonical node, its children's first (ir_walk's leave). */
static bool cse_node(Node *x, void *arg) {
  Cse *k = arg;
  Node **ch = NULL;
  for (int i = 0; i < x->nchild; i++) {
    Node *c = ptrmap_find(&k->done, x->child[i])->ptr;
    if (c == x->child[i]) continue;
    if (!ch) {
      ch = ARENA_ARRAY(&k->c->arena, Node *, x->nchild);
      memcpy(ch, x->child, sizeof(Node *) * (size_t)x->nchild);
    }
    ch[i] = c;
  }
  Node *n = ch ? rebuild(k->c, x, ch) : x;
  Node *canon = cse_insert(k, n);
  if (canon != n) k->merged++;
  ptrmap_get(&k->done, x)->ptr = canon;
  return true;
}

/* Merges structurally equal nodes (the first one seen wins); the number merged. */
static int cse_run(Comp *c, Node **roots, int n) {
  Cse k = {.c = c};
  for (int i = 0; i < n; i++) {
    ir_walk(roots[i], cse_enter, cse_node, &k);
    roots[i] = ptrmap_find(&k.done, roots[i])->ptr;
  }
  ptrmap_free(&k.done);
  free(k.tab);
  return k.merged;
}

/* --------------------------------------------------------------- entry */

bool simplify_run(Comp *c, Node **roots, int n, SimplifyStats *stats) {
  int errors = diag_error_count(c);
  Simp s = {.c = c};
  s.fired = ARENA_ARRAY(&c->arena, int, NRULES);
  s.fired[CSE_RULE] += cse_run(c, roots, n); /* shared work first, so rules see true use counts */
  for (int round = 0; round < MAX_ROUNDS; round++) {
    run_passes(&s, roots, n);
    int merged = cse_run(c, roots, n);
    s.fired[CSE_RULE] += merged;
    if (!merged) break;
  }
  ptrmap_free(&s.memo);
  ptrmap_free(&s.uses);
  ptrmap_free(&s.cost);
  if (stats) {
    stats->nrules = NRULES;
    stats->rule_name = ARENA_ARRAY(&c->arena, const char *, NRULES);
    for (int k = 0; k < NRULES; k++) stats->rule_name[k] = RULES[k].name;
    stats->fired = s.fired;
  }
  return diag_error_count(c) == errors;
}
