/* simplify_add.c — Add rules of the simplifier (rust_circuit_format.md §6.1):
 * identity elimination, flattening nested single-use Adds, dropping Scalar-0
 * terms (re-broadcasting when a zero provided the output shape) and summing
 * Scalar terms. Each rule returns a node of the same shape, or NULL. */
#include "simplify.h"

static Node *make_add(Simp *s, const Node *like, Node **ch, int n, const char *name) {
  Node p = {.kind = NK_Add, .name = name, .nchild = n, .child = ch};
  return simp_make(s, like, p);
}

/* Add(x) -> x;  Add() -> Scalar[] 0 */
Node *rule_add_elim_identity(Simp *s, Node *n) {
  if (n->nchild == 1) return n->child[0];
  if (n->nchild == 0) return simp_scalar(s, n, 0.0, &n->shape);
  return NULL;
}

/* Add(Add(a,b),c) -> Add(a,b,c)   (inner Add with a single use; broadcasting is associative) */
Node *rule_add_flatten(Simp *s, Node *n) {
  int count = 0;
  bool any = false;
  for (int i = 0; i < n->nchild; i++) {
    const Node *c = n->child[i];
    bool splice = c->kind == NK_Add && simp_single_use(s, c);
    count += splice ? c->nchild : 1;
    any |= splice;
  }
  if (!any) return NULL;
  Node **ch = ARENA_ARRAY(&simp_comp(s)->arena, Node *, count + 1);
  int k = 0;
  for (int i = 0; i < n->nchild; i++) {
    Node *c = n->child[i];
    if (c->kind == NK_Add && simp_single_use(s, c)) {
      for (int j = 0; j < c->nchild; j++) ch[k++] = c->child[j];
    } else {
      ch[k++] = c;
    }
  }
  for (int i = 0; i < n->nchild; i++)
    if (n->child[i]->kind == NK_Add && simp_single_use(s, n->child[i])) simp_claim(s, n->child[i]);
  return make_add(s, n, ch, k, n->name);
}

/* Add(a, Scalar 0, b) -> Add(a, b)
 * (if the zero gave the Add its shape, the rest is broadcast back with a Rearrange) */
Node *rule_add_elim_zeros(Simp *s, Node *n) {
  Node **ch = ARENA_ARRAY(&simp_comp(s)->arena, Node *, n->nchild + 1);
  int k = 0;
  for (int i = 0; i < n->nchild; i++)
    if (!is_scalar_value(n->child[i], 0.0)) ch[k++] = n->child[i];
  if (k == n->nchild) return NULL;
  if (k == 0) return simp_scalar(s, n, 0.0, &n->shape);
  Shape b;
  if (!broadcast_shapes(ch, k, &b)) return NULL;
  bool same = shape_eq(&b, &n->shape);
  Node *sum = k == 1 ? ch[0] : make_add(s, n, ch, k, same ? n->name : NULL);
  return same ? sum : simp_broadcast_to(s, n, sum, &n->shape, n->name);
}

/* Add(Scalar v, a, Scalar w) -> Add(Scalar v+w, a)   (the sum has the scalars' broadcast shape) */
Node *rule_add_collapse_scalars(Simp *s, Node *n) {
  Arena *a = &simp_comp(s)->arena;
  Node **sc = ARENA_ARRAY(a, Node *, n->nchild + 1), **ch = ARENA_ARRAY(a, Node *, n->nchild + 1);
  int nsc = 0, k = 0, first = -1;
  double v = 0;
  for (int i = 0; i < n->nchild; i++)
    if (n->child[i]->kind == NK_Scalar) {
      sc[nsc++] = n->child[i];
      v += n->child[i]->u.scalar.value;
      if (first < 0) first = i;
    }
  if (nsc < 2) return NULL;
  Shape b;
  if (!broadcast_shapes(sc, nsc, &b)) return NULL;
  for (int i = 0; i < n->nchild; i++) {
    if (i == first) ch[k++] = simp_scalar(s, n->child[i], v, &b);
    else if (n->child[i]->kind != NK_Scalar) ch[k++] = n->child[i];
  }
  return make_add(s, n, ch, k, n->name);
}
