/* plan_einsum.c — contraction ordering (rust_circuit_format.md §6.3).
 * Input: a resolved, module-free DAG. Output: the same DAG in which every
 * Einsum with more than two operands is a tree of unary/binary Einsums with
 * exactly its value (§4.4: diagonals, repeated output ids, rank-0 operands).
 * Path: subset pre-contraction, connected components, a DP over subsets per
 * component (greedy beyond DP_MAX_OPS operands or DP_BUDGET pair evaluations),
 * then outer products of the components, smallest first. Cost of a step =
 * multiply-adds + intermediate size; ties go to GEMM-shaped steps. Parents are
 * rebuilt bottom-up, memoised by node pointer, so sharing survives. */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include "circc.h"

enum {
  MAX_IDS = 256,      /* einsum axis ids are < 256 (ir.c) */
  DP_MAX_OPS = 12,    /* largest component planned by the subset DP */
  DP_BUDGET = 1 << 21 /* pair evaluations the DP may spend before falling back to greedy */
};
#define INF INT64_MAX

/* ---- id sets and saturating int64 arithmetic ---- */

typedef struct IdSet {
  uint64_t w[MAX_IDS / 64];
} IdSet;

static IdSet set_or(IdSet a, IdSet b) {
  for (int k = 0; k < MAX_IDS / 64; k++) a.w[k] |= b.w[k];
  return a;
}
static IdSet set_and(IdSet a, IdSet b) {
  for (int k = 0; k < MAX_IDS / 64; k++) a.w[k] &= b.w[k];
  return a;
}
static IdSet set_minus(IdSet a, IdSet b) {
  for (int k = 0; k < MAX_IDS / 64; k++) a.w[k] &= ~b.w[k];
  return a;
}
static IdSet set_xor(IdSet a, IdSet b) {
  for (int k = 0; k < MAX_IDS / 64; k++) a.w[k] ^= b.w[k];
  return a;
}
static bool set_empty(IdSet a) {
  for (int k = 0; k < MAX_IDS / 64; k++)
    if (a.w[k]) return false;
  return true;
}
static bool set_subset(IdSet a, IdSet b) { return set_empty(set_minus(a, b)); } /* a ⊆ b */
static bool set_eq(IdSet a, IdSet b) { return set_subset(a, b) && set_subset(b, a); }
static bool set_has(const IdSet *s, int id) { return s->w[id / 64] >> (id % 64) & 1; }
static void set_add(IdSet *s, int id) { s->w[id / 64] |= (uint64_t)1 << (id % 64); }
static void set_del(IdSet *s, int id) { s->w[id / 64] &= ~((uint64_t)1 << (id % 64)); }
static int set_count(IdSet a) {
  int n = 0;
  for (int k = 0; k < MAX_IDS / 64; k++) n += __builtin_popcountll(a.w[k]);
  return n;
}

static int64_t sat_mul(int64_t a, int64_t b) { /* a, b >= 0 */
  if (a == 0 || b == 0) return 0;
  return a > INF / b ? INF : a * b;
}
static int64_t sat_add(int64_t a, int64_t b) { return a > INF - b ? INF : a + b; }

/* ---- the state of planning one einsum ---- */

/* An operand of the einsum being planned: an original child or an intermediate. */
typedef struct Op {
  Node *node;
  const int *ids; /* its axis ids as written in the spec (a child may repeat one: diagonal) */
  int rank;
  IdSet raw;      /* distinct ids */
  IdSet keep;     /* raw minus the ids found nowhere else (not in the output, no other operand) */
  int first;      /* lowest original operand position inside: binary steps list it first */
} Op;

typedef struct Plan {
  Comp *c;
  const Node *ein;          /* the einsum being planned */
  int64_t size[MAX_IDS];    /* size of each id */
  IdSet out;                /* output ids */
  int out_ids[MAX_RANK];    /* output ids de-duplicated, in order */
  int out_rank;
  bool out_repeats;         /* the output repeats an id: finish with a unary diagonal step */
  Op *op;                   /* every operand ever made; capacity 3n (n leaves, n-1 pairs, n reductions) */
  int nop;
  int *live;                /* positions → operand, numpy-path style: a step appends its result */
  int nlive;
  int nsteps;               /* path entries so far (names intermediates `<name> step k`) */
  int64_t madds;            /* multiply-adds over all steps */
  FILE *path;               /* path text for the report, NULL without one */
  int failed;               /* errors reported for this einsum */
} Plan;

static int64_t set_numel(const Plan *P, IdSet s) {
  int64_t n = 1;
  for (int k = 0; k < MAX_IDS / 64; k++)
    for (uint64_t w = s.w[k]; w; w &= w - 1) n = sat_mul(n, P->size[k * 64 + __builtin_ctzll(w)]);
  return n;
}

/* A step looks like a GEMM: something is contracted, and each side keeps an id of its own. */
static bool gemm_shaped(IdSet x, IdSet y, IdSet res) {
  return !set_empty(set_minus(set_and(x, y), res)) && !set_empty(set_and(set_minus(x, y), res)) &&
         !set_empty(set_and(set_minus(y, x), res));
}

/* How to contract x and y into ids `res`: fused, or with x and/or y first
 * reduced to its kept ids by a unary step (only an original operand can have
 * ids of its own). */
typedef struct Choice {
  int64_t cost;
  int gemm;       /* 1 if the binary step is GEMM-shaped */
  bool pre[2];    /* reduce x / y by a unary step first */
} Choice;

static Choice choose_pair(const Plan *P, IdSet raw_x, IdSet keep_x, IdSet raw_y, IdSet keep_y, IdSet res) {
  Choice best = {INF, 0, {false, false}};
  int64_t res_numel = set_count(res) > MAX_RANK ? INF : set_numel(P, res);
  for (int v = 0; v < 4; v++) {
    bool px = v & 1, py = v >> 1 & 1;
    if ((px && set_eq(raw_x, keep_x)) || (py && set_eq(raw_y, keep_y))) continue;
    IdSet x = px ? keep_x : raw_x, y = py ? keep_y : raw_y;
    int64_t cost = sat_add(set_numel(P, set_or(x, y)), res_numel);
    if (px) cost = sat_add(cost, sat_add(set_numel(P, raw_x), set_numel(P, keep_x)));
    if (py) cost = sat_add(cost, sat_add(set_numel(P, raw_y), set_numel(P, keep_y)));
    int g = gemm_shaped(x, y, res);
    if (v == 0 || cost < best.cost || (cost == best.cost && g > best.gemm)) best = (Choice){cost, g, {px, py}};
  }
  return best;
}

/* ---- emitting steps ---- */

static int add_op(Plan *P, Node *node, const int *ids, int rank, int first) {
  Op *o = &P->op[P->nop];
  *o = (Op){.node = node, .ids = ids, .rank = rank, .first = first};
  for (int k = 0; k < rank; k++) set_add(&o->raw, ids[k]);
  o->keep = o->raw;
  P->live[P->nlive++] = P->nop;
  return P->nop++;
}

static int live_pos(const Plan *P, int x) {
  for (int p = 0; p < P->nlive; p++)
    if (P->live[p] == x) return p;
  ICE("operand %d is not live", x);
}

static void drop_live(Plan *P, int pos) {
  memmove(P->live + pos, P->live + pos + 1, sizeof(int) * (size_t)(P->nlive - pos - 1));
  P->nlive--;
}

/* An Einsum node at the planned einsum's loc; `final` gives it the einsum's name. */
static Node *make_step(Plan *P, Node **ch, const int *const *in, const int *in_rank, int nch, const int *out,
                       int out_rank, bool final) {
  Arena *a = &P->c->arena;
  Node p = {.kind = NK_Einsum, .loc = P->ein->loc, .nchild = nch, .child = ch};
  if (final) {
    p.name = P->ein->name;
    p.autoname_disabled = P->ein->autoname_disabled;
  } else if (P->ein->name) {
    p.name = arena_printf(a, "%s step %d", P->ein->name, P->nsteps);
  }
  EinsumSpec *e = &p.u.einsum;
  e->in = ARENA_ARRAY(a, int *, nch);
  e->in_rank = ARENA_ARRAY(a, int, nch);
  for (int i = 0; i < nch; i++) {
    e->in_rank[i] = in_rank[i];
    e->in[i] = ARENA_ARRAY(a, int, in_rank[i] + 1);
    memcpy(e->in[i], in[i], sizeof(int) * (size_t)in_rank[i]);
  }
  e->out_rank = out_rank;
  e->out = ARENA_ARRAY(a, int, out_rank + 1);
  memcpy(e->out, out, sizeof(int) * (size_t)out_rank);
  return ir_make(P->c, &p);
}

/* Appends to out[n..] the distinct ids of `ids` that are in `s` and not yet
 * in out, in order of first appearance (at most MAX_RANK in all). */
static int ids_in(const int *ids, int rank, IdSet s, int *out, int n) {
  for (int k = 0; k < n; k++) set_del(&s, out[k]);
  for (int k = 0; k < rank && n < MAX_RANK; k++)
    if (set_has(&s, ids[k])) {
      set_del(&s, ids[k]);
      out[n++] = ids[k];
    }
  return n;
}

/* Unary step: sums out the ids operand x has on its own (and takes its diagonals). */
static int emit_reduce(Plan *P, int x) {
  Op o = P->op[x];
  int ids[MAX_RANK], r = ids_in(o.ids, o.rank, o.keep, ids, 0);
  int pos = live_pos(P, x);
  if (P->path) fprintf(P->path, " (%d)", pos);
  P->madds = sat_add(P->madds, set_numel(P, o.raw));
  const int *in[1] = {o.ids};
  Node *n = make_step(P, &o.node, in, &o.rank, 1, ids, r, false);
  P->nsteps++;
  drop_live(P, pos);
  return add_op(P, n, n ? n->u.einsum.out : NULL, r, o.first);
}

/* The best way to contract live operands x and y; *res = the ids the result
 * keeps (those in the output or in another live operand). */
static Choice live_pair(const Plan *P, int x, int y, IdSet *res) {
  IdSet need = P->out;
  for (int p = 0; p < P->nlive; p++)
    if (P->live[p] != x && P->live[p] != y) need = set_or(need, P->op[P->live[p]].keep);
  *res = set_and(set_or(P->op[x].keep, P->op[y].keep), need);
  return choose_pair(P, P->op[x].raw, P->op[x].keep, P->op[y].raw, P->op[y].keep, *res);
}

/* Binary step on live operands x and y (after their unary reductions, if
 * cheaper). The last step writes the (de-duplicated) output order. */
static int emit_pair(Plan *P, int x, int y) {
  IdSet res;
  Choice ch = live_pair(P, x, y, &res);
  if (ch.pre[0]) x = emit_reduce(P, x);
  if (ch.pre[1]) y = emit_reduce(P, y);
  if (P->op[y].first < P->op[x].first) {
    int t = x;
    x = y, y = t;
  }
  Op a = P->op[x], b = P->op[y];
  bool final = P->nlive == 2;
  int ids[MAX_RANK], r;
  if (final) {
    r = P->out_rank;
    memcpy(ids, P->out_ids, sizeof(int) * (size_t)r);
  } else if (set_count(res) > MAX_RANK) { /* only when every path needs such a step */
    if (!P->failed++)
      diag_error(P->c, P->ein->loc, "Einsum %s: every contraction order needs an intermediate of rank > %d",
                 node_label(P->c, P->ein), MAX_RANK);
    r = 0;
    a.node = NULL;
  } else {
    r = ids_in(a.ids, a.rank, res, ids, 0);
    r = ids_in(b.ids, b.rank, res, ids, r);
  }
  int pa = live_pos(P, x), pb = live_pos(P, y);
  if (pa > pb) {
    int t = pa;
    pa = pb, pb = t;
  }
  if (P->path) fprintf(P->path, " (%d,%d)", pa, pb);
  P->madds = sat_add(P->madds, set_numel(P, set_or(a.raw, b.raw)));
  Node *kids[2] = {a.node, b.node};
  const int *in[2] = {a.ids, b.ids};
  int in_rank[2] = {a.rank, b.rank};
  Node *n = make_step(P, kids, in, in_rank, 2, ids, r, final && !P->out_repeats);
  P->nsteps++;
  drop_live(P, pb);
  drop_live(P, pa);
  return add_op(P, n, n ? n->u.einsum.out : NULL, r, a.first);
}

/* ---- path search ---- */

/* §6.3 step 1: while some operand's ids are a subset of another's, contract
 * such a pair, the one with the smallest superset first (then the one that
 * shrinks the operands most). */
static void plan_subsets(Plan *P) {
  while (P->nlive > 1) {
    int bi = -1, bj = -1;
    int64_t best = INF;
    double best_shrink = 0; /* size of the result minus the sizes of the pair: most negative first */
    /* ids kept by >= 1, 2, 3 live operands: a pair's result (live_pair's) in
     * O(1) set operations, not O(live) — wide Einsums have hundreds */
    IdSet once = {{0}}, twice = {{0}}, thrice = {{0}};
    for (int p = 0; p < P->nlive; p++) {
      IdSet k = P->op[P->live[p]].keep;
      thrice = set_or(thrice, set_and(twice, k));
      twice = set_or(twice, set_and(once, k));
      once = set_or(once, k);
    }
    for (int i = 0; i < P->nlive; i++)
      for (int j = 0; j < P->nlive; j++) {
        const Op *a = &P->op[P->live[i]], *b = &P->op[P->live[j]];
        if (i == j || !set_subset(a->keep, b->keep)) continue;
        int64_t s = set_numel(P, b->raw);
        if (bi >= 0 && s > best) continue;
        /* needed: in the output, or kept by a live operand other than a and b */
        IdSet both = set_and(a->keep, b->keep), either = set_or(a->keep, b->keep);
        IdSet need = set_or(set_or(P->out, thrice),
                            set_or(set_minus(twice, both), set_minus(once, either)));
        IdSet res = set_and(either, need);
        double shrink = (double)set_numel(P, res) - (double)set_numel(P, a->raw) - (double)s;
        if (bi < 0 || s < best || shrink < best_shrink) bi = i, bj = j, best = s, best_shrink = shrink;
      }
    if (bi < 0) return;
    emit_pair(P, P->live[bi], P->live[bj]);
  }
}

/* Emits the contraction tree the DP found for subset s of component ops[]. */
static int dp_emit(Plan *P, const int *ops, const unsigned *split, unsigned s) {
  if (!(s & (s - 1))) return ops[__builtin_ctz(s)];
  int x = dp_emit(P, ops, split, split[s]);
  int y = dp_emit(P, ops, split, s ^ split[s]);
  return emit_pair(P, x, y);
}

/* §6.3 step 3: the cheapest tree for the k operands of one component, by DP
 * over subsets (every split, outer products included). false (nothing
 * emitted) if the budget runs out. */
static bool plan_dp(Plan *P, const int *ops, int k) {
  unsigned full = (1u << k) - 1;
  size_t n = (size_t)full + 1;
  IdSet *uni = malloc(sizeof(IdSet) * n), *kept = malloc(sizeof(IdSet) * n);
  int64_t *cost = malloc(sizeof(int64_t) * n);
  int *gemm = malloc(sizeof(int) * n);
  unsigned *split = malloc(sizeof(unsigned) * n);
  if (!uni || !kept || !cost || !gemm || !split) ICE("out of memory");
  uni[0] = (IdSet){{0}};
  for (unsigned s = 1; s <= full; s++) uni[s] = set_or(uni[s & (s - 1)], P->op[ops[__builtin_ctz(s)]].keep);
  for (unsigned s = 1; s <= full; s++) kept[s] = set_and(uni[s], set_or(P->out, uni[full ^ s]));
  long evals = 0;
  bool ok = true;
  for (unsigned s = 1; s <= full && ok; s++) {
    cost[s] = 0, gemm[s] = 0, split[s] = 0;
    if (!(s & (s - 1))) continue;
    unsigned low = s & -s, rest = s ^ low;
    bool found = false;
    for (unsigned sub = rest;; sub = (sub - 1) & rest) {
      unsigned a = low | sub, b = s ^ a;
      if (b) {
        const Op *oa = a & (a - 1) ? NULL : &P->op[ops[__builtin_ctz(a)]];
        const Op *ob = b & (b - 1) ? NULL : &P->op[ops[__builtin_ctz(b)]];
        Choice ch = choose_pair(P, oa ? oa->raw : kept[a], oa ? oa->keep : kept[a], ob ? ob->raw : kept[b],
                                ob ? ob->keep : kept[b], kept[s]);
        int64_t c = sat_add(sat_add(cost[a], cost[b]), ch.cost);
        int g = gemm[a] + gemm[b] + ch.gemm;
        if (!found || c < cost[s] || (c == cost[s] && g > gemm[s])) cost[s] = c, gemm[s] = g, split[s] = a;
        found = true;
        if (++evals > DP_BUDGET) ok = false;
      }
      if (!sub) break;
    }
  }
  if (ok) dp_emit(P, ops, split, full);
  free(uni);
  free(kept);
  free(cost);
  free(gemm);
  free(split);
  return ok;
}

/* Greedy fallback: repeatedly contract the pair of the component with the smallest cost. */
static void plan_greedy(Plan *P, int *ops, int k) {
  while (k > 1) {
    IdSet once = {{0}}, twice = {{0}}, thrice = {{0}}; /* ids in >= 1, 2, 3 operands */
    for (int i = 0; i < k; i++) {
      IdSet s = P->op[ops[i]].keep;
      thrice = set_or(thrice, set_and(twice, s));
      twice = set_or(twice, set_and(once, s));
      once = set_or(once, s);
    }
    int bi = -1, bj = -1;
    Choice best = {INF, 0, {false, false}};
    for (int i = 0; i < k; i++)
      for (int j = i + 1; j < k; j++) {
        const Op *a = &P->op[ops[i]], *b = &P->op[ops[j]];
        IdSet res = set_or(set_and(set_and(a->keep, b->keep), set_or(P->out, thrice)),
                           set_and(set_xor(a->keep, b->keep), set_or(P->out, twice)));
        Choice ch = choose_pair(P, a->raw, a->keep, b->raw, b->keep, res);
        if (bi < 0 || ch.cost < best.cost || (ch.cost == best.cost && ch.gemm > best.gemm))
          bi = i, bj = j, best = ch;
      }
    ops[bi] = emit_pair(P, ops[bi], ops[bj]);
    ops[bj] = ops[--k];
  }
}

static int uf_find(int *parent, int i) {
  while (parent[i] != i) i = parent[i] = parent[parent[i]];
  return i;
}

/* §6.3 steps 2–4: components by shared ids, each contracted to one operand,
 * then combined by outer products, the two smallest first. */
static void plan_components(Plan *P) {
  int n = P->nlive;
  int *parent = malloc(sizeof(int) * (size_t)n), *ops = malloc(sizeof(int) * (size_t)n);
  if (!parent || !ops) ICE("out of memory");
  for (int i = 0; i < n; i++) parent[i] = i;
  for (int i = 0; i < n; i++)
    for (int j = i + 1; j < n; j++)
      if (!set_empty(set_and(P->op[P->live[i]].keep, P->op[P->live[j]].keep)))
        parent[uf_find(parent, i)] = uf_find(parent, j);
  int *start = malloc(sizeof(int) * (size_t)n); /* ops[] grouped by component */
  if (!start) ICE("out of memory");
  int m = 0, ncomp = 0;
  for (int r = 0; r < n; r++) {
    if (uf_find(parent, r) != r) continue;
    start[ncomp++] = m;
    for (int i = 0; i < n; i++)
      if (uf_find(parent, i) == r) ops[m++] = P->live[i];
  }
  for (int g = 0; g < ncomp; g++) {
    int *grp = ops + start[g], k = (g + 1 < ncomp ? start[g + 1] : n) - start[g];
    if (k < 2) continue;
    if (k > DP_MAX_OPS || !plan_dp(P, grp, k)) plan_greedy(P, grp, k);
  }
  while (P->nlive > 1) {
    int bi = -1, bj = -1;
    int64_t si = INF, sj = INF;
    for (int p = 0; p < P->nlive; p++) {
      int64_t s = set_numel(P, P->op[P->live[p]].keep);
      if (bi < 0 || s < si) bj = bi, sj = si, bi = p, si = s;
      else if (bj < 0 || s < sj) bj = p, sj = s;
    }
    emit_pair(P, P->live[bi], P->live[bj]);
  }
  free(parent);
  free(ops);
  free(start);
}

/* ---- one einsum ---- */

typedef struct Planner {
  Comp *c;
  FILE *report;
  const Node **key; /* memo: original node → planned node (open addressing by pointer) */
  Node **val;
  size_t cap, count;
} Planner;

/* Plans einsum e (more than two operands) whose children became ch[]. */
static Node *plan_one(Planner *pl, const Node *e, Node **ch) {
  int n = e->nchild;
  for (int i = 0; i < n; i++)
    if (!ch[i]) return NULL;
  const EinsumSpec *s = &e->u.einsum;
  Plan *P = calloc(1, sizeof *P);
  if (!P) ICE("out of memory");
  P->c = pl->c;
  P->ein = e;
  P->op = calloc((size_t)(3 * n), sizeof(Op));
  P->live = calloc((size_t)(3 * n), sizeof(int));
  if (!P->op || !P->live) ICE("out of memory");
  int count[MAX_IDS] = {0}; /* operands containing each id */
  for (int i = 0; i < n; i++) {
    add_op(P, ch[i], s->in[i], s->in_rank[i], i);
    for (int k = 0; k < s->in_rank[i]; k++) P->size[s->in[i][k]] = ch[i]->shape.dim[k];
    for (int id = 0; id < MAX_IDS; id++) count[id] += set_has(&P->op[i].raw, id);
  }
  for (int k = 0; k < s->out_rank; k++) set_add(&P->out, s->out[k]);
  P->out_rank = ids_in(s->out, s->out_rank, P->out, P->out_ids, 0);
  P->out_repeats = P->out_rank < s->out_rank;
  for (int i = 0; i < n; i++)
    for (int id = 0; id < MAX_IDS; id++)
      if (set_has(&P->op[i].raw, id) && count[id] == 1 && !set_has(&P->out, id)) set_del(&P->op[i].keep, id);

  char *path = NULL;
  size_t path_len = 0;
  if (pl->report) P->path = open_memstream(&path, &path_len);
  plan_subsets(P);
  if (P->nlive > 1) plan_components(P);
  CHECK(P->nlive == 1);
  Node *res = P->op[P->live[0]].node;
  if (P->out_repeats) { /* place the de-duplicated result on the diagonal */
    const int *in[1] = {P->out_ids};
    res = make_step(P, &res, in, &P->out_rank, 1, s->out, s->out_rank, true);
  }
  if (P->path) {
    fclose(P->path);
    int64_t naive = 2;
    IdSet all = {{0}};
    for (int i = 0; i < n; i++) all = set_or(all, P->op[i].raw);
    naive = sat_mul(sat_mul(naive, set_numel(P, all)), n - 1);
    if (e->name) fprintf(pl->report, "einsum '%s' ", e->name);
    else fprintf(pl->report, "einsum #%d ", e->id);
    dump_einsum_spec(pl->report, e);
    fprintf(pl->report, ": path%s; flops %" PRId64 " (naive %" PRId64 ")\n", path ? path : "",
            sat_mul(2, P->madds), naive);
    free(path);
  }
  free(P->op);
  free(P->live);
  free(P);
  return res;
}

/* ---- the DAG walk ---- */

static size_t memo_slot(const Planner *pl, const Node *n) {
  size_t h = (size_t)(((uintptr_t)n >> 4) * 0x9E3779B97F4A7C15ull);
  size_t i = h & (pl->cap - 1);
  while (pl->key[i] && pl->key[i] != n) i = (i + 1) & (pl->cap - 1);
  return i;
}

static bool memo_get(const Planner *pl, const Node *n, Node **out) {
  if (!pl->cap) return false;
  size_t i = memo_slot(pl, n);
  if (!pl->key[i]) return false;
  *out = pl->val[i];
  return true;
}

static void memo_put(Planner *pl, const Node *n, Node *v) {
  if (2 * (pl->count + 1) > pl->cap) {
    Planner old = *pl;
    pl->cap = old.cap ? 2 * old.cap : 256;
    pl->key = calloc(pl->cap, sizeof *pl->key);
    pl->val = calloc(pl->cap, sizeof *pl->val);
    if (!pl->key || !pl->val) ICE("out of memory");
    for (size_t i = 0; i < old.cap; i++)
      if (old.key[i]) {
        size_t j = memo_slot(pl, old.key[i]);
        pl->key[j] = old.key[i], pl->val[j] = old.val[i];
      }
    free(old.key);
    free(old.val);
  }
  size_t i = memo_slot(pl, n);
  if (!pl->key[i]) pl->count++;
  pl->key[i] = n, pl->val[i] = v;
}

/* n with its children replaced by their planned versions; n planned itself if it is a large einsum. */
static Node *rebuild(Planner *pl, Node *n) {
  Node **ch = malloc(sizeof(Node *) * (size_t)(n->nchild + 1));
  if (!ch) ICE("out of memory");
  bool changed = false;
  for (int i = 0; i < n->nchild; i++) {
    CHECK(memo_get(pl, n->child[i], &ch[i]));
    changed |= ch[i] != n->child[i];
  }
  Node *r = n;
  if (n->kind == NK_Einsum && n->nchild > 2) r = plan_one(pl, n, ch);
  else if (changed) r = ir_with_children(pl->c, n, ch, n->nchild);
  free(ch);
  return r;
}

/* Post-order walk with an explicit stack (circuits can be deep). */
static Node *plan_dag(Planner *pl, Node *root) {
  size_t cap = 64, sp = 0;
  Node **stack = malloc(sizeof(Node *) * cap), *got;
  if (!stack) ICE("out of memory");
  stack[sp++] = root;
  while (sp) {
    Node *n = stack[sp - 1];
    if (memo_get(pl, n, &got)) {
      sp--;
      continue;
    }
    bool ready = true;
    for (int i = n->nchild - 1; i >= 0; i--) {
      if (memo_get(pl, n->child[i], &got)) continue;
      if (sp == cap && !(stack = realloc(stack, sizeof(Node *) * (cap *= 2)))) ICE("out of memory");
      stack[sp++] = n->child[i];
      ready = false;
    }
    if (!ready) continue;
    sp--;
    memo_put(pl, n, rebuild(pl, n));
  }
  free(stack);
  CHECK(memo_get(pl, root, &got));
  return got;
}

bool plan_einsums(Comp *c, Node **roots, int n, FILE *report) {
  int errors = diag_error_count(c);
  Planner pl = {.c = c, .report = report};
  for (int i = 0; i < n; i++) {
    Node *r = plan_dag(&pl, roots[i]);
    if (r) roots[i] = r;
  }
  free(pl.key);
  free(pl.val);
  return diag_error_count(c) == errors;
}

double einsum_flops(const Node *n) {
  if (n->kind != NK_Einsum || n->nchild == 0) return 0;
  const EinsumSpec *e = &n->u.einsum;
  bool seen[MAX_IDS] = {0}, in_out[MAX_IDS] = {0}, sums = false;
  double numel = 1;
  for (int k = 0; k < e->out_rank; k++) in_out[e->out[k]] = true;
  for (int i = 0; i < n->nchild; i++)
    for (int k = 0; k < e->in_rank[i]; k++) {
      int id = e->in[i][k];
      sums |= !in_out[id];
      if (!seen[id]) numel *= (double)n->child[i]->shape.dim[k];
      seen[id] = true;
    }
  if (n->nchild == 1) return sums ? 2 * numel : 0;
  return 2 * numel * (n->nchild - 1);
}
