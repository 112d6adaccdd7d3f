/* lower_internal.h — what lower.c, lower_gemm.c and the idiom_*.c recognisers
 * share, and no other stage sees: the lowering context, a node's value, and
 * the helpers that make buffers, steps, views and expressions. */
#ifndef CIRCC_LOWER_INTERNAL_H
#define CIRCC_LOWER_INTERNAL_H
#include "circc.h"
#include "kernel.h"
#include "ptrmap.h"

/* A node's value during lowering: a materialised view or a lazy expression
 * whose leaves are views over the node's own axes. */
typedef struct Value {
  bool lazy;
  View view;
  Expr *expr;
} Value;

typedef struct Lower {
  Comp *c;
  Kernels *k;
  Value **memo;        /* by node id */
  int *uses;           /* by node id: number of consumers */
  int nids;
  Buf **weight_of;     /* weight buffer per Array node id */
  PtrMap tensor_reads;   /* per tensor of an Array node (num): the number of edges into Array nodes holding it */
  struct AttnMask *attn; /* idiom_attention.c: F and B of the attentions so far */
  bool batch_invariant;  /* Program.batch_invariant */
  const Node *too_big;   /* the last node whose buffer exceeded the limit (reported once) */
  Node *const *input_node; /* the program's inputs (Symbols), and */
  int *input_order;        /* their positions by name (ir_order_by_name) */
  int64_t total_bytes;   /* every buffer so far: bounded so that memplan's sums cannot overflow */
} Lower;

/* lower.c */
Value *lower_value(Lower *L, const Node *n);       /* n's value, lowered once */
View child_view(Lower *L, const Node *n, int i);   /* child i's value in memory */
View float_view(Lower *L, const Node *n);          /* n's value in memory as floats */
Value *viewed(Lower *L, View view);                /* a value held in memory */
Buf *new_buf(Lower *L, BufKind kind, DType dt, int64_t numel, const Node *n);
Step *new_step(Lower *L, StepKind kind, const Node *n); /* appended to the program */
View contiguous(Buf *b, const Shape *s);           /* row-major, size-1 dims stride 0 */
Expr *expr_new(Lower *L, ExprKind kind, int nargs);
Expr *expr_load(Lower *L, View v);
int expr_size(const Expr *e);
/* e over a child's axes as an expression over the consumer's `rank` axes of
 * sizes dim: child axis a becomes consumer axis map[a] */
Expr *expr_remap(Lower *L, const Expr *e, int rank, const int64_t *dim, const int *map);
bool einsum_is_product(const Node *n);             /* every id kept, none repeated */

/* lower_gemm.c */
/* Rearranges the operands ops[0..1] of binary einsum n (copied or permuted)
 * so that it runs as one GEMM; true: lay the output out in the axis order
 * out_axes, false: row-major. */
bool gemm_layouts(Lower *L, const Node *n, View ops[2], int *out_axes);
/* a CONTRACT step becomes a GEMM if it is one (and, unless batch_invariant,
 * if it is large enough to pay for the template) */
void classify_gemm(Step *s, bool batch_invariant);
void gemv_column_mask(Lower *L, const Node *n);    /* n, a product, may mask a GEMV it reads */
/* every GEMM step whose B is a weight reads a packed copy: pre-packed fp32 (not
 * decode's GEMVs), or bf16 / int8 under --precision */
void gemm_packed_weights(Lower *L);

/* idiom_*.c — recognisers: n's value computed by one step for the whole
 * pattern, or NULL when n does not match (n is then lowered as usual; children
 * lowered while matching stay lowered). Listed in lower.c's IDIOMS[]. */
Value *idiom_layernorm(Lower *L, const Node *n);
Value *idiom_attention(Lower *L, const Node *n);
#endif
