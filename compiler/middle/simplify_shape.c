/* simplify_shape.c — Rearrange, Index, Concat, Tag and SetSymbolicShape rules
 * of the simplifier (rust_circuit_format.md §6.1): identity elimination,
 * shape changes of Scalars, and fusing Rearrange∘Rearrange and Index∘Index
 * into one node. Each rule returns a node of the same shape, or NULL. */
#include <stdlib.h>
#include <string.h>
#include "simplify.h"

/* ------------------------------------------------------------- Rearrange */

/* Appends to seq the ids of a side's groups, in order, skipping size-1 ids. */
static int flat_ids(const RearrangeSpec *r, bool out, int *seq) {
  int n = 0, ng = out ? r->nout : r->nin;
  for (int g = 0; g < ng; g++) {
    int len = out ? r->out_len[g] : r->in_len[g];
    const int *ids = out ? r->out_ids[g] : r->in_ids[g];
    for (int j = 0; j < len; j++)
      if (r->size[ids[j]] != 1) seq[n++] = ids[j];
  }
  return n;
}

/* Rearrange(x; a b -> a b) -> x   (also (a b) -> (a b), a () -> a (), a b:1 -> b:1 a:
 * same shape and the same non-trivial ids in the same order, no repeat axes) */
Node *rule_rearrange_elim_identity(Simp *s, Node *n) {
  const RearrangeSpec *r = &n->u.rearrange;
  if (!shape_eq(&n->shape, &n->child[0]->shape)) return NULL;
  int *a = malloc(sizeof(int) * (size_t)(r->nids + 1)), *b = malloc(sizeof(int) * (size_t)(r->nids + 1));
  if (!a || !b) ICE("out of memory");
  int na = flat_ids(r, false, a), nb = flat_ids(r, true, b);
  bool same = na == nb && (na == 0 || memcmp(a, b, sizeof(int) * (size_t)na) == 0);
  free(a);
  free(b);
  return same ? n->child[0] : NULL;
}

/* Rearrange(Scalar v; a -> a 3) -> Scalar v of the new shape */
Node *rule_rearrange_merge_scalar(Simp *s, Node *n) {
  Node *c = n->child[0];
  return c->kind == NK_Scalar ? simp_scalar(s, n, c->u.scalar.value, &n->shape) : NULL;
}

/* The ids of one side of a rearrange, as "atoms": every id is a run of atoms
 * (most significant first) in a common refinement of both specs' factorings of
 * the middle tensor. */
typedef struct Atoms {
  int *first, *count;   /* per id of the spec: its atoms are first..first+count-1 */
} Atoms;

/* Refines middle axis k, of length len, factored as ids A by the inner spec
 * and as ids B by the outer one, into atoms (sizes appended to atom_size).
 * The factorings have a common refinement iff their strides form a chain
 * under divisibility; false if not. */
static bool refine_axis(const RearrangeSpec *ra, const int *A, int na, const RearrangeSpec *rb, const int *B, int nb,
                        int64_t len, Atoms *aa, Atoms *ab, int64_t *atom_size, int *natoms) {
  /* cut points: the stride of every id, plus len; sorted descending, unique */
  int64_t cut[2 * MAX_RANK * 4 + 2];
  int ncut = 0;
  if (na + nb + 1 > (int)(sizeof cut / sizeof *cut)) return false;
  cut[ncut++] = len;
  int64_t st = 1;
  for (int j = na - 1; j >= 0; j--) cut[ncut++] = st, st *= ra->size[A[j]];
  st = 1;
  for (int j = nb - 1; j >= 0; j--) cut[ncut++] = st, st *= rb->size[B[j]];
  cut[ncut++] = 1;
  for (int i = 1; i < ncut; i++) /* insertion sort, descending */
    for (int j = i; j > 0 && cut[j] > cut[j - 1]; j--) {
      int64_t t = cut[j];
      cut[j] = cut[j - 1], cut[j - 1] = t;
    }
  int u = 0;
  for (int i = 0; i < ncut; i++)
    if (u == 0 || cut[i] != cut[u - 1]) cut[u++] = cut[i];
  for (int i = 0; i + 1 < u; i++)
    if (cut[i + 1] == 0 || cut[i] % cut[i + 1] != 0) return false;
  /* atom i (0 = most significant) spans strides [cut[i+1], cut[i]) */
  int base = *natoms;
  for (int i = 0; i + 1 < u; i++) atom_size[(*natoms)++] = cut[i] / cut[i + 1];
  for (int side = 0; side < 2; side++) {
    const RearrangeSpec *r = side ? rb : ra;
    const int *ids = side ? B : A;
    int nid = side ? nb : na;
    Atoms *at = side ? ab : aa;
    int64_t stride = 1;
    for (int j = nid - 1; j >= 0; j--) {
      int64_t hi = stride * r->size[ids[j]]; /* the id spans strides [stride, hi) */
      int first = -1, count = 0;
      for (int i = 0; i + 1 < u; i++)
        if (cut[i + 1] >= stride && cut[i] <= hi) {
          if (first < 0) first = base + i;
          count++;
        }
      at->first[ids[j]] = first < 0 ? 0 : first;
      at->count[ids[j]] = count;
      stride = hi;
    }
  }
  return true;
}

/* Appends the atoms of the ids of one group to out; returns the new length. */
static int group_atoms(const int *ids, int len, const Atoms *at, int *out, int n) {
  for (int j = 0; j < len; j++)
    for (int k = 0; k < at->count[ids[j]]; k++) out[n++] = at->first[ids[j]] + k;
  return n;
}

/* Rearrange(Rearrange(x; a b c -> (a b) c); p q -> q p) -> Rearrange(x; a b c -> c (a b))
 * Both specs are rewritten over a common refinement of the middle tensor's
 * axes ("atoms"); skipped when the two factorings of a middle axis are not
 * compatible (e.g. (2 3) then (3 2)) or a size is 0. */
Node *rule_rearrange_fuse(Simp *s, Node *n) {
  Node *inner = n->child[0];
  if (inner->kind != NK_Rearrange) return NULL;
  const RearrangeSpec *ri = &inner->u.rearrange, *ro = &n->u.rearrange;
  Arena *ar = &simp_comp(s)->arena;
  if (shape_numel(&n->shape) == 0 || shape_numel(&inner->shape) == 0 || shape_numel(&inner->child[0]->shape) == 0)
    return NULL;
  int maxatoms = ri->nids + ro->nids + 2 * inner->shape.rank + 1;
  Atoms ai = {ARENA_ARRAY(ar, int, ri->nids + 1), ARENA_ARRAY(ar, int, ri->nids + 1)};
  Atoms ao = {ARENA_ARRAY(ar, int, ro->nids + 1), ARENA_ARRAY(ar, int, ro->nids + 1)};
  int64_t *size = ARENA_ARRAY(ar, int64_t, maxatoms + ro->nids + 1);
  int natoms = 0;
  for (int k = 0; k < ri->nout; k++)
    if (!refine_axis(ri, ri->out_ids[k], ri->out_len[k], ro, ro->in_ids[k], ro->in_len[k], inner->shape.dim[k], &ai,
                     &ao, size, &natoms))
      return NULL;
  /* output-only ids of the outer spec stay repeat axes, numbered after the atoms */
  bool *in_outer_input = ARENA_ARRAY(ar, bool, ro->nids + 1);
  for (int g = 0; g < ro->nin; g++)
    for (int j = 0; j < ro->in_len[g]; j++) in_outer_input[ro->in_ids[g][j]] = true;
  int nids = natoms;
  for (int id = 0; id < ro->nids; id++)
    if (!in_outer_input[id]) {
      ao.first[id] = nids, ao.count[id] = 1;
      size[nids++] = ro->size[id];
    }
  Node p = {.kind = NK_Rearrange, .name = n->name, .nchild = 1, .child = &inner->child[0]};
  RearrangeSpec *r = &p.u.rearrange;
  r->nids = nids;
  r->size = size;
  r->nin = ri->nin, r->nout = ro->nout;
  r->in_len = ARENA_ARRAY(ar, int, r->nin + 1);
  r->in_ids = ARENA_ARRAY(ar, int *, r->nin + 1);
  r->out_len = ARENA_ARRAY(ar, int, r->nout + 1);
  r->out_ids = ARENA_ARRAY(ar, int *, r->nout + 1);
  for (int g = 0; g < r->nin; g++) {
    r->in_ids[g] = ARENA_ARRAY(ar, int, nids + 1);
    r->in_len[g] = group_atoms(ri->in_ids[g], ri->in_len[g], &ai, r->in_ids[g], 0);
  }
  for (int g = 0; g < r->nout; g++) {
    r->out_ids[g] = ARENA_ARRAY(ar, int, nids + 1);
    r->out_len[g] = group_atoms(ro->out_ids[g], ro->out_len[g], &ao, r->out_ids[g], 0);
  }
  return simp_make(s, n, p);
}

/* ----------------------------------------------------------------- Index */

/* Index(x; [:, 0:n]) -> x   (every entry a slice over the whole axis) */
Node *rule_index_elim_identity(Simp *s, Node *n) {
  const Shape *cs = &n->child[0]->shape;
  for (int k = 0; k < n->u.index.n; k++) {
    const IndexEntry *e = &n->u.index.e[k];
    int64_t a, b;
    if (e->kind != IDX_SLICE || !index_entry_bounds(e, cs->dim[k], &a, &b) || a != 0 || b != cs->dim[k]) return NULL;
  }
  return n->child[0];
}

/* Value j of an index tensor normalised against an axis of length len
 * (negative values wrap); -1 if out of range. */
static int64_t tensor_pos(const Tensor *t, int64_t j, int64_t len) {
  double v = tensor_get_f64(t, j);
  if (!(v > -0x1p62 && v < 0x1p62)) return -1;
  int64_t p = (int64_t)v;
  if (p < 0) p += len;
  return p >= 0 && p < len ? p : -1;
}

static bool tensor_in_range(const Tensor *t, int64_t len) {
  for (int64_t j = 0; j < t->shape.dim[0]; j++)
    if (tensor_pos(t, j, len) < 0) return false;
  return true;
}

/* Index(Scalar v; [0, 1:3]) -> Scalar v of the indexed shape */
Node *rule_index_merge_scalar(Simp *s, Node *n) {
  Node *c = n->child[0];
  if (c->kind != NK_Scalar) return NULL;
  for (int k = 0; k < n->u.index.n; k++)
    if (n->u.index.e[k].kind == IDX_TENSOR && !tensor_in_range(n->u.index.e[k].tensor, c->shape.dim[k]))
      return NULL; /* leave the out-of-range error to evaluation */
  return simp_scalar(s, n, c->u.scalar.value, &n->shape);
}

/* One child-axis entry after composing: a position, a range, or a position list. */
static IndexEntry pos_entry(int64_t p) { return (IndexEntry){.kind = IDX_INT, .i = p}; }

static IndexEntry range_entry(int64_t a, int64_t b) {
  return (IndexEntry){.kind = IDX_SLICE, .has_start = true, .has_stop = true, .start = a, .stop = b};
}

/* Index(Index(x; [1:5, t]); [0, 2:4]) -> Index(x; [1, t[2:4]])
 * Per axis of x: the inner entry maps the outer entry's positions to x's.
 * Index tensors that have to be composed become new tensors; out-of-range
 * index values (an evaluation error) stop the rule. */
Node *rule_index_fuse(Simp *s, Node *n) {
  Node *inner = n->child[0];
  if (inner->kind != NK_Index) return NULL;
  const Shape *xs = &inner->child[0]->shape, *ms = &inner->shape;
  const IndexSpec *ii = &inner->u.index, *oi = &n->u.index;
  IndexEntry *e = ARENA_ARRAY(&simp_comp(s)->arena, IndexEntry, xs->rank + 1);
  int j = 0; /* axis of the middle tensor */
  for (int k = 0; k < xs->rank; k++) {
    const IndexEntry *x = &ii->e[k];
    int64_t len = xs->dim[k], a, b;
    if (x->kind == IDX_INT) {
      CHECK(index_entry_bounds(x, len, &a, &b));
      e[k] = pos_entry(a);
      continue;
    }
    const IndexEntry *y = &oi->e[j];
    int64_t mlen = ms->dim[j++], c, d;
    if (y->kind != IDX_TENSOR) CHECK(index_entry_bounds(y, mlen, &c, &d));
    else if (!tensor_in_range(y->tensor, mlen)) return NULL;
    if (x->kind == IDX_SLICE) {
      CHECK(index_entry_bounds(x, len, &a, &b));
      if (y->kind == IDX_INT) e[k] = pos_entry(a + c);
      else if (y->kind == IDX_SLICE) e[k] = range_entry(a + c, a + d);
      else {
        int64_t m = y->tensor->shape.dim[0];
        Tensor *t = simp_index_tensor(s, m);
        for (int64_t q = 0; q < m; q++) ((int64_t *)t->data)[q] = a + tensor_pos(y->tensor, q, mlen);
        simp_seal(t);
        e[k] = (IndexEntry){.kind = IDX_TENSOR, .tensor = t};
      }
      continue;
    }
    /* x is a tensor: middle position q is x position t[q] */
    if (!tensor_in_range(x->tensor, len)) return NULL;
    if (y->kind == IDX_INT) {
      e[k] = pos_entry(tensor_pos(x->tensor, c, len));
      continue;
    }
    int64_t m = y->kind == IDX_SLICE ? d - c : y->tensor->shape.dim[0];
    Tensor *t = simp_index_tensor(s, m);
    for (int64_t q = 0; q < m; q++) {
      int64_t mid = y->kind == IDX_SLICE ? c + q : tensor_pos(y->tensor, q, mlen);
      ((int64_t *)t->data)[q] = tensor_pos(x->tensor, mid, len);
    }
    simp_seal(t);
    e[k] = (IndexEntry){.kind = IDX_TENSOR, .tensor = t};
  }
  Node p = {.kind = NK_Index, .name = n->name, .nchild = 1, .child = &inner->child[0]};
  p.u.index = (IndexSpec){.n = xs->rank, .e = e};
  return simp_make(s, n, p);
}

/* ------------------------------------------------------- identities */

/* Concat(x; axis) -> x */
Node *rule_concat_elim_identity(Simp *s, Node *n) { return n->nchild == 1 ? n->child[0] : NULL; }

/* Tag(x; uuid) -> x   (tags only keep otherwise-equal nodes apart) */
Node *rule_tag_elim(Simp *s, Node *n) { return n->child[0]; }

/* SetSymbolicShape(x; [shape of x]) -> x */
Node *rule_set_symbolic_shape_elim(Simp *s, Node *n) {
  return shape_eq(&n->shape, &n->child[0]->shape) ? n->child[0] : NULL;
}
