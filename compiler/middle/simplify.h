/* simplify.h — internal interface between the simplifier's driver (simplify.c)
 * and its rule files (simplify_einsum.c, simplify_add.c, simplify_shape.c).
 *
 * A rule is `Node *rule(Simp *s, Node *n)`: it returns a replacement for n with
 * exactly n's shape (the driver checks), or NULL if it does not apply. Rules
 * never edit nodes; they build new ones through simp_make (which takes n's
 * location) and may return one of n's descendants unchanged. Every child of n
 * is already simplified when a rule sees n. Not part of circc.h: only the
 * simplifier's files include this. */
#ifndef CIRCC_SIMPLIFY_H
#define CIRCC_SIMPLIFY_H
#include "circc.h"

typedef struct Simp Simp;
typedef Node *(*RuleFn)(Simp *s, Node *n);

/* ---- services of the driver (simplify.c) ---- */
Comp *simp_comp(Simp *s);
/* n has exactly one reference (edges + roots) in the DAG this pass started
 * from, and no rule has spliced it yet this pass. Splicing a node with more
 * users would compute it twice. */
bool simp_single_use(Simp *s, const Node *n);
void simp_claim(Simp *s, const Node *n);   /* n's one use is being spliced into its parent */
/* ir_make(proto) at like's location; a rule that builds an invalid node is an ICE. */
Node *simp_make(Simp *s, const Node *like, Node proto);
Node *simp_scalar(Simp *s, const Node *like, double value, const Shape *shape); /* named like like */
/* Rearrange that broadcasts x (right-aligned, NumPy rules) to `shape`: new
 * leading axes and size-1 axes become repeat axes. x itself if shapes agree. */
Node *simp_broadcast_to(Simp *s, const Node *like, Node *x, const Shape *shape, const char *name);
/* A new 1-D int64 index tensor of length m (hash computed by the caller via simp_seal). */
Tensor *simp_index_tensor(Simp *s, int64_t m);
void simp_seal(Tensor *t);                 /* computes t->hash_hex (identity for dumps and CSE) */

/* ---- small predicates shared by the rules ---- */
bool is_scalar_value(const Node *n, double v);   /* a Scalar node holding exactly v (any shape) */
bool ids_have_repeats(const int *ids, int n);
/* A Rearrange that only permutes axes (each group one id, no repeat axes):
 * output axis k is input axis perm[k]. */
bool rearrange_perm(const Node *r, int *perm);
/* NumPy broadcast of n shapes; false if they do not broadcast (rust_circuit's rules). */
bool broadcast_shapes(Node *const *nodes, int n, Shape *out);

/* ---- rules: simplify_einsum.c ---- */
Node *rule_einsum_elim_zero(Simp *s, Node *n);
Node *rule_einsum_elim_identity(Simp *s, Node *n);
Node *rule_einsum_of_scalars(Simp *s, Node *n);
Node *rule_einsum_scalar_to_rank0(Simp *s, Node *n);
Node *rule_einsum_flatten(Simp *s, Node *n);
Node *rule_einsum_of_permute_merge(Simp *s, Node *n);
Node *rule_einsum_merge_scalars(Simp *s, Node *n);
Node *rule_einsum_remove_one(Simp *s, Node *n);
Node *rule_einsum_drop_size1_sum(Simp *s, Node *n);
Node *rule_permute_of_einsum_merge(Simp *s, Node *n);   /* a Rearrange rule */

/* ---- rules: simplify_add.c ---- */
Node *rule_add_elim_identity(Simp *s, Node *n);
Node *rule_add_flatten(Simp *s, Node *n);
Node *rule_add_elim_zeros(Simp *s, Node *n);
Node *rule_add_collapse_scalars(Simp *s, Node *n);

/* ---- rules: simplify_shape.c ---- */
Node *rule_rearrange_elim_identity(Simp *s, Node *n);
Node *rule_rearrange_merge_scalar(Simp *s, Node *n);
Node *rule_rearrange_fuse(Simp *s, Node *n);
Node *rule_index_elim_identity(Simp *s, Node *n);
Node *rule_index_merge_scalar(Simp *s, Node *n);
Node *rule_index_fuse(Simp *s, Node *n);
Node *rule_concat_elim_identity(Simp *s, Node *n);
Node *rule_tag_elim(Simp *s, Node *n);
Node *rule_set_symbolic_shape_elim(Simp *s, Node *n);
#endif
