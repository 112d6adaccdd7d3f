/* simplify_einsum.c — Einsum rules of the simplifier (rust_circuit_format.md
 * §6.1): zero and identity elimination, folding Einsums of Scalars, merging
 * and dropping rank-0 Scalar factors, flattening nested Einsums into one
 * n-ary contraction for the planner, dropping summed ids of size 1, and
 * absorbing pure permutations on either side. Each rule returns a node of the same shape, or NULL. */
#include <string.h>
#include "simplify.h"

/* An Einsum node with the given operands; the id lists are copied to the arena. */
static Node *make_einsum(Simp *s, const Node *like, Node **ch, int n, int *const *in, const int *in_rank,
                         const int *out, int out_rank) {
  Arena *a = &simp_comp(s)->arena;
  Node p = {.kind = NK_Einsum, .name = like->name, .nchild = n, .child = ch};
  EinsumSpec *e = &p.u.einsum;
  e->in = ARENA_ARRAY(a, int *, n + 1);
  e->in_rank = ARENA_ARRAY(a, int, n + 1);
  for (int i = 0; i < n; i++) {
    e->in_rank[i] = in_rank[i];
    e->in[i] = ARENA_ARRAY(a, int, in_rank[i] + 1);
    if (in_rank[i]) memcpy(e->in[i], in[i], sizeof(int) * (size_t)in_rank[i]);
  }
  e->out_rank = out_rank;
  e->out = ARENA_ARRAY(a, int, out_rank + 1);
  if (out_rank) memcpy(e->out, out, sizeof(int) * (size_t)out_rank);
  return simp_make(s, like, p);
}

/* n's operands without those where drop[i] is set, operand `at` (if >= 0) replaced by `with`. */
static Node *einsum_select(Simp *s, Node *n, const bool *drop, int at, Node *with) {
  const EinsumSpec *e = &n->u.einsum;
  Arena *a = &simp_comp(s)->arena;
  Node **ch = ARENA_ARRAY(a, Node *, n->nchild + 1);
  int **in = ARENA_ARRAY(a, int *, n->nchild + 1), *rank = ARENA_ARRAY(a, int, n->nchild + 1), k = 0;
  for (int i = 0; i < n->nchild; i++)
    if (!drop[i]) ch[k] = i == at ? with : n->child[i], in[k] = e->in[i], rank[k++] = e->in_rank[i];
  return make_einsum(s, n, ch, k, in, rank, e->out, e->out_rank);
}

static bool is_rank0_scalar(const Node *n) { return n->kind == NK_Scalar && n->shape.rank == 0; }

/* Einsum(.., Scalar 0, ..) -> Scalar 0 of the output shape */
Node *rule_einsum_elim_zero(Simp *s, Node *n) {
  for (int i = 0; i < n->nchild; i++)
    if (is_scalar_value(n->child[i], 0.0)) return simp_scalar(s, n, 0.0, &n->shape);
  return NULL;
}

/* Einsum(x; ab->ab) -> x   (one operand, output = its axes, no repeated id) */
Node *rule_einsum_elim_identity(Simp *s, Node *n) {
  const EinsumSpec *e = &n->u.einsum;
  if (n->nchild != 1 || e->out_rank != e->in_rank[0] || ids_have_repeats(e->out, e->out_rank)) return NULL;
  for (int k = 0; k < e->out_rank; k++)
    if (e->out[k] != e->in[0][k]) return NULL;
  return n->child[0];
}

/* Einsum(Scalar v1, Scalar v2, ...) -> Scalar (v1·v2·… × number of summed elements)
 * (also the empty einsum `->` = 1; not when output ids repeat: that is a diagonal) */
Node *rule_einsum_of_scalars(Simp *s, Node *n) {
  const EinsumSpec *e = &n->u.einsum;
  if (ids_have_repeats(e->out, e->out_rank)) return NULL;
  double v = 1;
  int64_t size[256];
  bool in_out[256] = {0}, seen[256] = {0};
  for (int k = 0; k < e->out_rank; k++) in_out[e->out[k]] = true;
  for (int i = 0; i < n->nchild; i++) {
    if (n->child[i]->kind != NK_Scalar) return NULL;
    v *= n->child[i]->u.scalar.value;
    for (int k = 0; k < e->in_rank[i]; k++) {
      int id = e->in[i][k];
      if (!seen[id]) seen[id] = true, size[id] = n->child[i]->shape.dim[k];
    }
  }
  for (int id = 0; id < 256; id++)
    if (seen[id] && !in_out[id]) v *= (double)size[id];
  return simp_scalar(s, n, v, &n->shape);
}

/* Einsum(x, Scalar[2,3] v; ab,ab->a) -> Einsum(x, Scalar[] v; ab,->a)
 * (a Scalar operand whose ids all occur in other operands only scales; an id
 * only it has is summed out, a factor of its size; not when such an id is
 * in the output, since the Scalar is then what gives the output that axis) */
Node *rule_einsum_scalar_to_rank0(Simp *s, Node *n) {
  const EinsumSpec *e = &n->u.einsum;
  Arena *a = &simp_comp(s)->arena;
  Node **ch = NULL;
  int **in = NULL, *rank = NULL;
  for (int i = 0; i < n->nchild; i++) {
    Node *c = n->child[i];
    if (c->kind != NK_Scalar || c->shape.rank == 0) continue;
    double factor = 1;
    bool ok = true;
    for (int k = 0; k < e->in_rank[i] && ok; k++) {
      int id = e->in[i][k];
      bool first = true, elsewhere = false, in_out = false;
      for (int q = 0; q < k; q++) first &= e->in[i][q] != id;
      for (int j = 0; j < n->nchild && !elsewhere; j++)
        for (int q = 0; j != i && q < e->in_rank[j]; q++) elsewhere |= e->in[j][q] == id;
      for (int q = 0; q < e->out_rank; q++) in_out |= e->out[q] == id;
      if (!first || elsewhere) continue;
      if (in_out) ok = false;
      else factor *= (double)c->shape.dim[k];
    }
    if (!ok) continue;
    if (!ch) {
      ch = ARENA_ARRAY(a, Node *, n->nchild + 1);
      in = ARENA_ARRAY(a, int *, n->nchild + 1);
      rank = ARENA_ARRAY(a, int, n->nchild + 1);
      memcpy(ch, n->child, sizeof(Node *) * (size_t)n->nchild);
      memcpy(in, e->in, sizeof(int *) * (size_t)n->nchild);
      memcpy(rank, e->in_rank, sizeof(int) * (size_t)n->nchild);
    }
    Shape rank0 = {0};
    ch[i] = simp_scalar(s, c, c->u.scalar.value * factor, &rank0);
    rank[i] = 0;
    break; /* one per application: `elsewhere` above is stale once an operand loses its ids */
  }
  return ch ? make_einsum(s, n, ch, n->nchild, in, rank, e->out, e->out_rank) : NULL;
}

/* Einsum(.., Einsum(x,y; ij,jk->ik), ..; ab,bc->ac) -> Einsum(.., x, y, ..)
 * with the inner ids renamed into the outer einsum (its output ids become the
 * outer operand's ids, summed ids get fresh ones). Only inner Einsums with a
 * single use (else their work is duplicated) and no repeated output id (a
 * diagonal embedding has zeros off the diagonal). */
Node *rule_einsum_flatten(Simp *s, Node *n) {
  const EinsumSpec *e = &n->u.einsum;
  Arena *a = &simp_comp(s)->arena;
  int nops = 0, fresh = 0;
  bool any = false, *inline_it = ARENA_ARRAY(a, bool, n->nchild + 1);
  for (int i = 0; i < n->nchild; i++) {
    const Node *c = n->child[i];
    bool ok = inline_it[i] = c->kind == NK_Einsum && simp_single_use(s, c) &&
                             !ids_have_repeats(c->u.einsum.out, c->u.einsum.out_rank);
    nops += ok ? c->nchild : 1;
    any |= ok;
    for (int k = 0; k < e->in_rank[i]; k++)
      if (e->in[i][k] >= fresh) fresh = e->in[i][k] + 1;
  }
  if (!any) return NULL;
  Node **ch = ARENA_ARRAY(a, Node *, nops + 1);
  int **in = ARENA_ARRAY(a, int *, nops + 1), *rank = ARENA_ARRAY(a, int, nops + 1), m = 0;
  for (int i = 0; i < n->nchild; i++) {
    Node *c = n->child[i];
    if (!inline_it[i]) {
      ch[m] = c, in[m] = e->in[i], rank[m++] = e->in_rank[i];
      continue;
    }
    const EinsumSpec *ce = &c->u.einsum;
    int map[256];
    for (int id = 0; id < 256; id++) map[id] = -1;
    for (int k = 0; k < ce->out_rank; k++) map[ce->out[k]] = e->in[i][k];
    for (int j = 0; j < c->nchild; j++) {
      ch[m] = c->child[j];
      rank[m] = ce->in_rank[j];
      in[m] = ARENA_ARRAY(a, int, rank[m] + 1);
      for (int k = 0; k < rank[m]; k++) {
        int id = ce->in[j][k];
        if (map[id] < 0) map[id] = fresh++;
        in[m][k] = map[id];
      }
      m++;
    }
  }
  /* renumber ids in order of first appearance so they stay below ir's limit of 256 */
  int *renum = ARENA_ARRAY(a, int, fresh + 1), next = 0;
  for (int id = 0; id < fresh; id++) renum[id] = -1;
  for (int j = 0; j < m; j++)
    for (int k = 0; k < rank[j]; k++) {
      int id = in[j][k];
      if (renum[id] < 0) renum[id] = next++;
    }
  if (next > 256) return NULL;
  for (int j = 0; j < m; j++) {
    int *ids = ARENA_ARRAY(a, int, rank[j] + 1);
    for (int k = 0; k < rank[j]; k++) ids[k] = renum[in[j][k]];
    in[j] = ids;
  }
  int *out = ARENA_ARRAY(a, int, e->out_rank + 1);
  for (int k = 0; k < e->out_rank; k++) out[k] = renum[e->out[k]];
  for (int i = 0; i < n->nchild; i++)
    if (inline_it[i]) simp_claim(s, n->child[i]);
  return make_einsum(s, n, ch, m, in, rank, out, e->out_rank);
}

/* Einsum(.., Rearrange(x; a b c -> c a b), ..; ijk) -> Einsum(.., x, ..; jki) */
Node *rule_einsum_of_permute_merge(Simp *s, Node *n) {
  const EinsumSpec *e = &n->u.einsum;
  Arena *a = &simp_comp(s)->arena;
  int perm[MAX_RANK];
  bool any = false;
  for (int i = 0; i < n->nchild && !any; i++) any = rearrange_perm(n->child[i], perm);
  if (!any) return NULL;
  Node **ch = ARENA_ARRAY(a, Node *, n->nchild + 1);
  int **in = ARENA_ARRAY(a, int *, n->nchild + 1);
  for (int i = 0; i < n->nchild; i++) {
    ch[i] = n->child[i], in[i] = e->in[i];
    if (!rearrange_perm(n->child[i], perm)) continue;
    ch[i] = n->child[i]->child[0];
    in[i] = ARENA_ARRAY(a, int, e->in_rank[i] + 1);
    for (int k = 0; k < e->in_rank[i]; k++) in[i][perm[k]] = e->in[i][k];
  }
  return make_einsum(s, n, ch, n->nchild, in, e->in_rank, e->out, e->out_rank);
}

/* Einsum(.., Scalar[] v, .., Scalar[] w, ..) -> Einsum(.., Scalar[] v·w, ..) */
Node *rule_einsum_merge_scalars(Simp *s, Node *n) {
  int first = -1, count = 0;
  double v = 1;
  bool *drop = ARENA_ARRAY(&simp_comp(s)->arena, bool, n->nchild + 1);
  for (int i = 0; i < n->nchild; i++)
    if (is_rank0_scalar(n->child[i])) {
      v *= n->child[i]->u.scalar.value;
      count++;
      if (first < 0) first = i;
      else drop[i] = true;
    }
  if (count < 2) return NULL;
  Shape rank0 = {0};
  return einsum_select(s, n, drop, first, simp_scalar(s, n->child[first], v, &rank0));
}

/* Einsum(x, y; sa,sb->ab) with |s| = 1 -> Einsum(Rearrange(x; s a -> a), Rearrange(y; s b -> b); a,b->ab)
 * (a summed id of size 1 sums nothing: without it the einsum is a plain
 * product, which lowering fuses; the Rearranges are views. Scalars just lose
 * the axis.) */
Node *rule_einsum_drop_size1_sum(Simp *s, Node *n) {
  const EinsumSpec *e = &n->u.einsum;
  Arena *a = &simp_comp(s)->arena;
  bool drop_id[256] = {0}, in_out[256] = {0}, any = false;
  for (int k = 0; k < e->out_rank; k++) in_out[e->out[k]] = true;
  for (int i = 0; i < n->nchild; i++)
    for (int k = 0; k < e->in_rank[i]; k++)
      if (!in_out[e->in[i][k]] && n->child[i]->shape.dim[k] == 1) drop_id[e->in[i][k]] = any = true;
  if (!any) return NULL;
  Node **ch = ARENA_ARRAY(a, Node *, n->nchild + 1);
  int **in = ARENA_ARRAY(a, int *, n->nchild + 1), *rank = ARENA_ARRAY(a, int, n->nchild + 1);
  for (int i = 0; i < n->nchild; i++) {
    Node *c = n->child[i];
    ch[i] = c, in[i] = e->in[i], rank[i] = e->in_rank[i];
    Shape kept = {0};
    int *ids = ARENA_ARRAY(a, int, e->in_rank[i] + 1);
    for (int k = 0; k < e->in_rank[i]; k++)
      if (!drop_id[e->in[i][k]]) ids[kept.rank] = e->in[i][k], kept.dim[kept.rank++] = c->shape.dim[k];
    if (kept.rank == e->in_rank[i]) continue;
    in[i] = ids, rank[i] = kept.rank;
    if (c->kind == NK_Scalar) {
      ch[i] = simp_scalar(s, c, c->u.scalar.value, &kept);
      continue;
    }
    /* Rearrange(c; a:1 b -> b): the dropped axes become () groups */
    Node p = {.kind = NK_Rearrange, .nchild = 1, .child = &ch[i]};
    RearrangeSpec *r = &p.u.rearrange;
    r->nids = r->nin = c->shape.rank, r->nout = kept.rank;
    r->size = ARENA_ARRAY(a, int64_t, r->nids + 1);
    r->in_len = ARENA_ARRAY(a, int, r->nin + 1);
    r->in_ids = ARENA_ARRAY(a, int *, r->nin + 1);
    r->out_len = ARENA_ARRAY(a, int, r->nout + 1);
    r->out_ids = ARENA_ARRAY(a, int *, r->nout + 1);
    for (int k = 0, o = 0; k < c->shape.rank; k++) { /* id k is input axis k */
      r->size[k] = c->shape.dim[k];
      r->in_ids[k] = ARENA_NEW(a, int);
      r->in_ids[k][0] = k;
      r->in_len[k] = !drop_id[e->in[i][k]];
      if (r->in_len[k]) r->out_len[o] = 1, r->out_ids[o++] = r->in_ids[k];
    }
    ch[i] = simp_make(s, c, p);
  }
  return make_einsum(s, n, ch, n->nchild, in, rank, e->out, e->out_rank);
}

/* Einsum(x, Scalar[] 1; ab,->ab) -> Einsum(x; ab->ab) */
Node *rule_einsum_remove_one(Simp *s, Node *n) {
  bool *drop = ARENA_ARRAY(&simp_comp(s)->arena, bool, n->nchild + 1), any = false, other = false;
  for (int i = 0; i < n->nchild; i++) {
    drop[i] = is_rank0_scalar(n->child[i]) && n->child[i]->u.scalar.value == 1.0;
    any |= drop[i];
    other |= !drop[i];
  }
  if (!any || !other) return NULL;
  return einsum_select(s, n, drop, -1, NULL);
}

/* Rearrange(Einsum(x,y; ij,jk->ik); a b -> b a) -> Einsum(x,y; ij,jk->ki)
 * (only if the Einsum has no other use, else it would be computed twice) */
Node *rule_permute_of_einsum_merge(Simp *s, Node *n) {
  int perm[MAX_RANK];
  Node *c = n->child[0];
  if (c->kind != NK_Einsum || !rearrange_perm(n, perm) || !simp_single_use(s, c)) return NULL;
  const EinsumSpec *e = &c->u.einsum;
  int out[MAX_RANK];
  for (int k = 0; k < e->out_rank; k++) out[k] = e->out[perm[k]];
  simp_claim(s, c);
  return make_einsum(s, n, c->child, c->nchild, e->in, e->in_rank, out, e->out_rank);
}
