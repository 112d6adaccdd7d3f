/* lower.c — from the resolved, simplified circuit to the kernel graph
 * (kernel.h). Arrays become weight buffers and free Symbols input buffers.
 * Elementwise nodes (Add, Scalar, elementwise GeneralFunctions, pow, casts and
 * einsums that only multiply) stay lazy expressions and are fused into their
 * consumer; Index / Rearrange / Tag become strided views where the strides
 * allow; everything else becomes one step: contractions (einsums with one or
 * two operands, see plan_einsum.c), row kernels (softmax, log_softmax, min,
 * max, and the layernorm pattern as a whole), gathers (gen_index,
 * explicit_index, Index with tensors) and copies. A node with several
 * consumers is materialised once. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "circc.h"
#include "kernel.h"

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
  const Tensor **tensor; /* every tensor of an Array node, and */
  int *tensor_reads;      /* the number of edges into Array nodes holding it */
  int ntensors;
  struct AttnMask *attn; /* F and B of fused attentions (lower_attention) */
  int nattn;
} Lower;

static void push_buf(Lower *L, Buf *b) {
  Kernels *k = L->k;
  if (k->nbuf == k->cap_buf) {
    k->cap_buf = k->cap_buf ? 2 * k->cap_buf : 64;
    Buf **a = ARENA_ARRAY(&L->c->arena, Buf *, k->cap_buf);
    if (k->nbuf) memcpy(a, k->buf, sizeof(Buf *) * (size_t)k->nbuf);
    k->buf = a;
  }
  b->id = k->nbuf;
  k->buf[k->nbuf++] = b;
}

static Buf *new_buf(Lower *L, BufKind kind, DType dt, int64_t numel, const Node *n) {
  Buf *b = ARENA_NEW(&L->c->arena, Buf);
  b->kind = kind;
  b->dtype = dt;
  b->numel = numel;
  b->node = n;
  b->def_step = -1;
  b->last_use = -1;
  push_buf(L, b);
  return b;
}

static Step *new_step(Lower *L, StepKind kind, const Node *n) {
  Kernels *k = L->k;
  if (k->nstep == k->cap_step) {
    k->cap_step = k->cap_step ? 2 * k->cap_step : 64;
    Step **a = ARENA_ARRAY(&L->c->arena, Step *, k->cap_step);
    if (k->nstep) memcpy(a, k->step, sizeof(Step *) * (size_t)k->nstep);
    k->step = a;
  }
  Step *s = ARENA_NEW(&L->c->arena, Step);
  s->kind = kind;
  s->node = n;
  s->id = k->nstep;
  k->step[k->nstep++] = s;
  return s;
}

static View contiguous(Buf *b, const Shape *s) {
  View v = {.buf = b, .rank = s->rank};
  int64_t stride = 1;
  for (int d = s->rank - 1; d >= 0; d--) {
    v.dim[d] = s->dim[d];
    v.stride[d] = s->dim[d] == 1 ? 0 : stride;
    stride *= s->dim[d];
  }
  return v;
}

static bool view_eq(const View *a, const View *b) {
  if (a->buf != b->buf || a->offset != b->offset || a->rank != b->rank) return false;
  for (int d = 0; d < a->rank; d++)
    if (a->dim[d] != b->dim[d] || (a->dim[d] != 1 && a->stride[d] != b->stride[d])) return false;
  return true;
}

/* ------------------------------------------------------------ expressions */

static Expr *expr_new(Lower *L, ExprKind kind, int nargs) {
  Expr *e = ARENA_NEW(&L->c->arena, Expr);
  e->kind = kind;
  e->nargs = nargs;
  if (nargs) e->arg = ARENA_ARRAY(&L->c->arena, Expr *, nargs);
  return e;
}

static Expr *expr_const(Lower *L, double v) {
  Expr *e = expr_new(L, EX_CONST, 0);
  e->value = v;
  return e;
}

static Expr *expr_load(Lower *L, View v) {
  Expr *e = expr_new(L, EX_LOAD, 0);
  e->view = v;
  return e;
}

static int expr_size(const Expr *e) {
  int n = 1;
  for (int i = 0; i < e->nargs; i++) n += expr_size(e->arg[i]);
  return n;
}

static bool expr_has_load(const Expr *e) {
  if (e->kind == EX_LOAD) return true;
  for (int i = 0; i < e->nargs; i++)
    if (expr_has_load(e->arg[i])) return true;
  return false;
}

/* Re-expresses a view over a child's axes as a view over the consumer's axes:
 * child axis a becomes consumer axis map[a]; size-1 child axes broadcast (stride 0). */
static View view_remap(const View *v, int rank, const int64_t *dim, const int *map) {
  View out = {.buf = v->buf, .offset = v->offset, .rank = rank};
  for (int j = 0; j < rank; j++) out.dim[j] = dim[j];
  for (int a = 0; a < v->rank; a++)
    if (v->dim[a] != 1) out.stride[map[a]] += v->stride[a];
  return out;
}

static Expr *expr_remap(Lower *L, const Expr *e, int rank, const int64_t *dim, const int *map) {
  Expr *r = expr_new(L, e->kind, e->nargs);
  Expr **args = r->arg;
  *r = *e;
  r->arg = args;
  if (e->kind == EX_LOAD) r->view = view_remap(&e->view, rank, dim, map);
  for (int i = 0; i < e->nargs; i++) r->arg[i] = expr_remap(L, e->arg[i], rank, dim, map);
  return r;
}

/* ------------------------------------------------------------ lowering */

static Value *lower(Lower *L, const Node *n);

/* Writes value v (over shape s) into buffer `b` through view `out`; returns the step. */
static Step *emit_copy(Lower *L, const Node *n, const Value *v, View out) {
  Step *s = new_step(L, STEP_ELEMENTWISE, n);
  s->out = out;
  s->ndim = out.rank;
  memcpy(s->dim, out.dim, sizeof(int64_t) * (size_t)out.rank);
  s->expr = v->lazy ? v->expr : expr_load(L, v->view);
  s->flops = (double)shape_numel(&n->shape) * (v->lazy ? expr_size(v->expr) - 1 : 0);
  return s;
}

/* The value of n as a view of memory: materialises lazy values. */
static View materialize(Lower *L, const Node *n, Value *v) {
  if (!v->lazy) return v->view;
  Buf *b = new_buf(L, BUF_TEMP, DT_F32, shape_numel(&n->shape), n);
  View out = contiguous(b, &n->shape);
  Step *s = emit_copy(L, n, v, out);
  if (b->def_step < 0) b->def_step = s->id;
  *v = (Value){.lazy = false, .view = out};
  return out;
}

static View child_view(Lower *L, const Node *n, int i) {
  Value *v = lower(L, n->child[i]);
  return materialize(L, n->child[i], v);
}

/* Child i of n as an expression over n's axes, broadcast NumPy-style. */
static Expr *child_expr_broadcast(Lower *L, const Node *n, int i) {
  const Node *ch = n->child[i];
  Value *v = lower(L, ch);
  Expr *e = v->lazy ? v->expr : expr_load(L, v->view);
  int map[MAX_RANK];
  for (int a = 0; a < ch->shape.rank; a++) map[a] = a + n->shape.rank - ch->shape.rank;
  return expr_remap(L, e, n->shape.rank, n->shape.dim, map);
}

static Value *lazy(Lower *L, Expr *e) {
  Value *v = ARENA_NEW(&L->c->arena, Value);
  v->lazy = true;
  v->expr = e;
  return v;
}

static Value *viewed(Lower *L, View view) {
  Value *v = ARENA_NEW(&L->c->arena, Value);
  v->view = view;
  return v;
}

/* An Einsum in which every operand id appears in the output and no id repeats
 * is a broadcast product: no step of its own. */
static bool einsum_is_product(const Node *n) {
  const EinsumSpec *e = &n->u.einsum;
  for (int j = 0; j < e->out_rank; j++)
    for (int k = j + 1; k < e->out_rank; k++)
      if (e->out[j] == e->out[k]) return false;
  for (int i = 0; i < n->nchild; i++)
    for (int a = 0; a < e->in_rank[i]; a++) {
      bool found = false;
      for (int j = 0; j < e->out_rank; j++) found |= e->out[j] == e->in[i][a];
      for (int b = a + 1; b < e->in_rank[i]; b++)
        if (e->in[i][a] == e->in[i][b]) return false;
      if (!found) return false;
    }
  return true;
}

/* Merges loop dims ids[0..n) (ordered outer to inner) into one dim of every
 * view in v[0..nv): possible when each view's strides compose row-major. */
static bool mergeable(const Step *s, const int *ids, int n, View *const *v, int nv) {
  for (int j = 0; j + 1 < n; j++)
    for (int q = 0; q < nv; q++)
      if (v[q]->stride[ids[j]] != v[q]->stride[ids[j + 1]] * s->dim[ids[j + 1]]) return false;
  return true;
}

/* Orders dims by decreasing stride in view v (outer first), the row-major order
 * in which they could merge. */
static void sort_by_stride(int *ids, int n, const View *v) {
  for (int i = 1; i < n; i++)
    for (int j = i; j > 0 && v->stride[ids[j]] > v->stride[ids[j - 1]]; j--) {
      int t = ids[j];
      ids[j] = ids[j - 1];
      ids[j - 1] = t;
    }
}

/* A binary contraction whose ids are batch (in both operands and the output),
 * M (first operand and output), N (second operand and output) and K (both
 * operands, summed) is a batched GEMM: turn the step into STEP_GEMM with loop
 * dims [batch..., M, N, K], merging several M (N, K) ids into one when their
 * strides allow and treating unmergeable M/N ids as batch. Ids of size 1 are
 * dropped; an id summed in one operand only keeps the loop nest. */
static void classify_gemm(Step *s) {
  if (s->nops != 2 || s->op[0].buf->dtype != DT_F32 || s->op[1].buf->dtype != DT_F32) return;
  int batch[MAX_RANK * 2], m[MAX_RANK * 2], nn[MAX_RANK * 2], k[MAX_RANK * 2], nb = 0, nm = 0, nN = 0, nk = 0;
  for (int t = 0; t < s->ndim; t++) {
    if (s->dim[t] == 1) continue;
    bool a = s->op[0].stride[t] != 0, b = s->op[1].stride[t] != 0;
    if (t < s->nout) {
      if (a && b) batch[nb++] = t;
      else if (a) m[nm++] = t;
      else if (b) nn[nN++] = t;
      else batch[nb++] = t; /* a repeat of both operands: a batch loop reading the same data */
    } else {
      if (!(a && b)) return;
      k[nk++] = t;
    }
  }
  if (nk == 0 || s->flops < 8192) return;
  View *A = &s->op[0], *B = &s->op[1], *C = &s->out;
  sort_by_stride(k, nk, A);
  View *ab[2] = {A, B};
  if (!mergeable(s, k, nk, ab, 2)) return;
  /* M: merge what composes in A and C; leftovers become batch loops */
  View *ac[2] = {A, C}, *bc[2] = {B, C};
  sort_by_stride(m, nm, C);
  while (nm > 1 && !mergeable(s, m, nm, ac, 2)) batch[nb++] = m[0], memmove(m, m + 1, sizeof(int) * (size_t)--nm);
  sort_by_stride(nn, nN, C);
  while (nN > 1 && !mergeable(s, nn, nN, bc, 2)) batch[nb++] = nn[0], memmove(nn, nn + 1, sizeof(int) * (size_t)--nN);
  if (nb > MAX_RANK) return;
  /* rebuild the loop dims as [batch..., M, N, K] */
  Step g = *s;
  g.kind = STEP_GEMM;
  g.nbatch = nb;
  g.ndim = nb + 3;
  View *gv[3] = {&g.op[0], &g.op[1], &g.out};
  const View *sv[3] = {A, B, C};
  for (int q = 0; q < 3; q++) {
    gv[q]->rank = g.ndim;
    memset(gv[q]->stride, 0, sizeof gv[q]->stride);
    for (int i = 0; i < nb; i++) gv[q]->stride[i] = sv[q]->stride[batch[i]];
  }
  for (int i = 0; i < nb; i++) g.dim[i] = s->dim[batch[i]];
  const int *groups[3] = {m, nn, k};
  int counts[3] = {nm, nN, nk};
  for (int j = 0; j < 3; j++) {
    int64_t size = 1;
    for (int i = 0; i < counts[j]; i++) size *= s->dim[groups[j][i]];
    g.dim[nb + j] = size;
    for (int q = 0; q < 3; q++) gv[q]->stride[nb + j] = counts[j] ? sv[q]->stride[groups[j][counts[j] - 1]] : 0;
  }
  for (int q = 0; q < 3; q++)
    for (int i = 0; i < g.ndim; i++) gv[q]->dim[i] = g.dim[i];
  *s = g;
}

/* ------------------------------------------------- GEMM-friendly layouts */

/* A binary contraction becomes one GEMM only if its summed ids (K) merge into
 * one dimension in both operands, and runs fastest when B is row-major
 * ([K, N]) and the output's M and N ids merge too. gemm_layouts arranges
 * that before the step is built: an operand whose K ids do not merge is
 * copied into a layout where they do (weights are permuted at compile time,
 * other operands by a copy step), weights used as a transposed B are
 * transposed at compile time (with one row, M = 1, weights go the other way:
 * stored by columns, [N, K], which circc_gemv_f32 streams), and the output
 * gets the layout [batch, M, N].
 * The arithmetic is unchanged: only where values live. */

enum { ROLE_BATCH, ROLE_M, ROLE_N, ROLE_K, ROLE_OTHER };

static bool tensor_shared(const Lower *L, const Tensor *t);

typedef struct Layout {
  int nids;
  int id[MAX_RANK * 2];
  int role[MAX_RANK * 2];
} Layout;

static int layout_find(const Layout *g, int id) {
  for (int t = 0; t < g->nids; t++)
    if (g->id[t] == id) return t;
  return -1;
}

/* Axes of operand i (of einsum n) in the order given by their ids `order`
 * (every axis's id must be listed once). */
static void axes_in_order(const EinsumSpec *e, int i, const int *order, int norder, int *axes) {
  int na = 0;
  for (int j = 0; j < norder; j++)
    for (int a = 0; a < e->in_rank[i]; a++)
      if (e->in[i][a] == order[j]) axes[na++] = a;
}

/* Do axes[0..n) of v (outer to inner) compose row-major (sizes 1 ignored)? */
static bool axes_merge(const View *v, const int *axes, int n) {
  int64_t expect = -1;
  for (int j = n - 1; j >= 0; j--) {
    int a = axes[j];
    if (v->dim[a] == 1) continue;
    if (expect >= 0 && v->stride[a] != expect) return false;
    expect = v->stride[a] * v->dim[a];
  }
  return true;
}

/* Is v the contiguous layout of its dims taken in the order `axes`? */
static bool view_is_layout(const View *v, const int *axes, int n) {
  int64_t stride = 1;
  for (int j = n - 1; j >= 0; j--) {
    int a = axes[j];
    if (v->dim[a] != 1 && v->stride[a] != stride) return false;
    stride *= v->dim[a];
  }
  return true;
}

/* A copy of operand view v laid out contiguously with its axes in the order
 * `axes` (outer to inner), returned as a view over v's own axes. Weights are
 * permuted now, at compile time; anything else by a copy step. */
static View relayout(Lower *L, const Node *n, const Node *child, const View *v, const int *axes) {
  int rank = v->rank;
  int64_t numel = 1;
  for (int a = 0; a < rank; a++) numel *= v->dim[a];
  View out = {.rank = rank};
  int64_t stride = 1;
  for (int j = rank - 1; j >= 0; j--) {
    int a = axes[j];
    out.dim[a] = v->dim[a];
    out.stride[a] = v->dim[a] == 1 ? 0 : stride;
    stride *= v->dim[a];
  }
  if (v->buf->kind == BUF_WEIGHT) {
    const Tensor *src = v->buf->tensor;
    Shape shape = {.rank = rank};
    for (int j = 0; j < rank; j++) shape.dim[j] = v->dim[axes[j]];
    Tensor *t = tensor_new(L->c, DT_F32, &shape);
    float *dst = t->data;
    int64_t idx[MAX_RANK] = {0};
    for (int64_t e = 0; e < numel; e++) { /* e walks the new layout; idx = coordinates in it */
      int64_t at = v->offset;
      for (int j = 0; j < rank; j++) at += idx[j] * v->stride[axes[j]];
      dst[e] = src->dtype == DT_F32 ? ((const float *)src->data)[at] : (float)tensor_get_f64(src, at);
      for (int j = rank - 1; j >= 0 && ++idx[j] == shape.dim[j]; j--) idx[j] = 0;
    }
    out.buf = new_buf(L, BUF_WEIGHT, DT_F32, numel, child);
    out.buf->tensor = t;
    return out;
  }
  out.buf = new_buf(L, BUF_TEMP, v->buf->dtype, numel, child);
  /* loop dims in the new layout's order, so the copy writes contiguously */
  Step *s = new_step(L, STEP_ELEMENTWISE, n);
  View dst = {.buf = out.buf, .rank = rank}, src = {.buf = v->buf, .offset = v->offset, .rank = rank};
  for (int j = 0; j < rank; j++) {
    s->dim[j] = dst.dim[j] = src.dim[j] = v->dim[axes[j]];
    dst.stride[j] = out.stride[axes[j]];
    src.stride[j] = v->stride[axes[j]];
  }
  s->ndim = rank;
  s->out = dst;
  s->expr = expr_load(L, src);
  out.buf->def_step = s->id;
  return out;
}

/* Rearranges ops[0..1] of binary einsum n for GEMM (see above) and returns
 * the output layout as an axis order in out_axes; false: leave everything. */
static bool gemm_layouts(Lower *L, const Node *n, View ops[2], int *out_axes) {
  const EinsumSpec *e = &n->u.einsum;
  if (n->nchild != 2 || ops[0].buf->dtype != DT_F32 || ops[1].buf->dtype != DT_F32) return false;
  Layout g = {0};
  for (int i = 0; i < 2; i++)
    for (int a = 0; a < e->in_rank[i]; a++) {
      int id = e->in[i][a];
      for (int b = a + 1; b < e->in_rank[i]; b++)
        if (e->in[i][b] == id) return false; /* a diagonal: the loop nest handles it */
      if (layout_find(&g, id) < 0) g.id[g.nids++] = id;
    }
  for (int j = 0; j < e->out_rank; j++) {
    for (int k = j + 1; k < e->out_rank; k++)
      if (e->out[j] == e->out[k]) return false;
    if (layout_find(&g, e->out[j]) < 0) return false; /* an output-only id: a broadcast */
  }
  double work = 2;
  int nk = 0;
  int64_t rows = 1; /* M */
  for (int t = 0; t < g.nids; t++) {
    bool in0 = false, in1 = false, out = false;
    int64_t size = 1;
    for (int a = 0; a < e->in_rank[0]; a++)
      if (e->in[0][a] == g.id[t]) in0 = true, size = ops[0].dim[a];
    for (int a = 0; a < e->in_rank[1]; a++)
      if (e->in[1][a] == g.id[t]) in1 = true, size = ops[1].dim[a];
    for (int j = 0; j < e->out_rank; j++) out |= e->out[j] == g.id[t];
    work *= (double)size;
    g.role[t] = out ? (in0 && in1 ? ROLE_BATCH : in0 ? ROLE_M : ROLE_N) : (in0 && in1 ? ROLE_K : ROLE_OTHER);
    if (g.role[t] == ROLE_OTHER) return false; /* summed in one operand only */
    if (g.role[t] == ROLE_M) rows *= size;
    nk += g.role[t] == ROLE_K;
  }
  if (nk == 0 || work < 8192) return false;

  /* the K order: as it merges in B if it does (weights keep their order), else in A, else A's axis order */
  int kaxes[2][MAX_RANK], korder[MAX_RANK], nko = 0;
  bool kmerge[2];
  for (int i = 0; i < 2; i++) {
    int na = 0;
    for (int a = 0; a < e->in_rank[i]; a++)
      if (g.role[layout_find(&g, e->in[i][a])] == ROLE_K) kaxes[i][na++] = a;
    sort_by_stride(kaxes[i], na, &ops[i]);
    kmerge[i] = axes_merge(&ops[i], kaxes[i], na);
  }
  int from = kmerge[1] ? 1 : 0;
  for (int j = 0; j < nk; j++) korder[nko++] = e->in[from][kaxes[from][j]];

  for (int i = 0; i < 2; i++) {
    /* target: A = [other ids by stride, K]; B = [batch, K, N by stride] when it
     * is a weight (row-major B), else [other ids by stride, K] */
    int axes[MAX_RANK], na = 0, rest[MAX_RANK], nr = 0;
    for (int a = 0; a < e->in_rank[i]; a++)
      if (g.role[layout_find(&g, e->in[i][a])] != ROLE_K) rest[nr++] = a;
    sort_by_stride(rest, nr, &ops[i]);
    int kin[MAX_RANK];
    axes_in_order(e, i, korder, nko, kin);
    /* a weight read elsewhere too (a tied embedding) keeps its layout rather
     * than exist twice; with one row (decode) B is stored by columns instead,
     * for circc_gemv_f32 */
    bool weight_b = i == 1 && ops[1].buf->kind == BUF_WEIGHT && !tensor_shared(L, ops[1].buf->tensor);
    bool row_major_b = weight_b && rows > 1;
    if (row_major_b) {
      for (int r = 0; r < nr; r++)
        if (g.role[layout_find(&g, e->in[i][rest[r]])] == ROLE_BATCH) axes[na++] = rest[r];
      for (int j = 0; j < nk; j++) axes[na++] = kin[j];
      for (int r = 0; r < nr; r++)
        if (g.role[layout_find(&g, e->in[i][rest[r]])] != ROLE_BATCH) axes[na++] = rest[r];
    } else {
      for (int r = 0; r < nr; r++) axes[na++] = rest[r];
      for (int j = 0; j < nk; j++) axes[na++] = kin[j];
    }
    bool k_ok = axes_merge(&ops[i], kin, nk);
    if (weight_b ? !view_is_layout(&ops[i], axes, na) : !k_ok) ops[i] = relayout(L, n, n->child[i], &ops[i], axes);
  }

  /* the output: [batch, M (as in A), N (as in B)], unless the plain
   * row-major layout already merges M and N */
  View plain = contiguous(NULL, &n->shape);
  bool merges = true;
  int nout = 0;
  for (int role = ROLE_BATCH; role <= ROLE_N; role++) {
    int src = role == ROLE_N ? 1 : 0, axes[MAX_RANK], na = 0, oaxes[MAX_RANK];
    for (int a = 0; a < e->in_rank[src]; a++)
      if (g.role[layout_find(&g, e->in[src][a])] == role) axes[na++] = a;
    sort_by_stride(axes, na, &ops[src]);
    for (int j = 0; j < na; j++)
      for (int k = 0; k < e->out_rank; k++)
        if (e->out[k] == e->in[src][axes[j]]) oaxes[j] = out_axes[nout++] = k;
    if (role != ROLE_BATCH) {
      sort_by_stride(oaxes, na, &plain);
      merges &= axes_merge(&plain, oaxes, na);
    }
  }
  return nout == e->out_rank && !merges;
}

/* ------------------------------------------------------------ attention */

/* Einsum(softmax(S), V) with S = Σ bias + Π factors · (Q·Kᵀ), every bias and
 * factor varying over the query and key axes only (the product and the sum
 * optional), becomes one STEP_ATTENTION (templates/attention_f32.h) that
 * never materialises S. Accepted exactly:
 *  - n: a binary Einsum of P and V, no repeated ids; P's last axis (the key)
 *    is summed with V; P's batch axes (all but query and key) appear in V and
 *    the output; V has one more id (the value dim); the output is batch, query
 *    and value dim;
 *  - P = softmax(S), S = Add(biases..., Y) with Y of S's shape, or S = Y;
 *  - Y = product Einsum (factors..., R), or Y = R;
 *  - R = binary Einsum: batch ids in both operands, the query id in one, the
 *    key id in the other, exactly one summed id (the head dim), in both;
 *    Y is the one term of S that is R or such a product with R;
 *  - P, S, Y, R have no other consumer (their values are not needed elsewhere).
 * Anything else keeps the ordinary lowering. When the biases and factors are
 * all constants (Arrays and Scalars) they are evaluated at compile time into F
 * (product) and B (sum) over [query, key]; per query row, the trailing keys
 * with F = 0 and a finite B below -100 (a causal mask's upper triangle) are
 * skipped, with the exactness check of the template. Otherwise (a mask made
 * from run-time positions, or an input) one elementwise step computes F and
 * B, shared by every attention with the same terms, and the attention step
 * finds each row's skipped keys at run time by the same rule. */

typedef struct AttnMask {
  int64_t tq, tk;
  const Node *term[16];  /* the terms they came from (cf. AttnMatch) */
  int cmap[16][MAX_RANK], nfac, nterm, qa, ka;
  float *f, *b;       /* constant terms: malloc'd copies to compare against */
  Buf *bkend, *bskip, *bb, *bf; /* constant terms: bf NULL: F is 1 on the kept keys,
                                 * B 0 there; bb NULL too: no key is ever skipped.
                                 * run-time terms: bkend, bskip NULL; bf, bb NULL
                                 * when there is no factor, no bias */
} AttnMask;

typedef struct AttnMatch {
  const Node *p, *v, *y, *r;
  int qa, ka;                  /* S axes of the query and key */
  const Node *term[16];        /* terms: factors first, then biases */
  int cmap[16][MAX_RANK];      /* per term axis: the S axis, or -1 (size 1) */
  int nfac, nterm;
  bool runtime;                /* some term is not a constant */
} AttnMatch;

/* A constant: Arrays and Scalars combined by elementwise nodes (planned
 * einsums of a mask and a scale are not folded); shallow, so this stays cheap
 * when it meets the rest of the model. */
static bool attn_is_const(const Node *n, int depth) {
  switch (n->kind) {
  case NK_Scalar: return true;
  case NK_Array: return n->u.array.tensor != NULL;
  case NK_Einsum:
  case NK_Add:
  case NK_Rearrange:
  case NK_Tag: break;
  case NK_GeneralFunction:
    if (genfn_class(n->u.gf.fn) != GF_ELEMENTWISE) return false;
    break;
  default: return false;
  }
  if (depth == 0 || shape_numel(&n->shape) > ((int64_t)1 << 26)) return false;
  for (int i = 0; i < n->nchild; i++)
    if (!attn_is_const(n->child[i], depth - 1)) return false;
  return true;
}

/* Records term c with its axis map if it varies over query/key axes only. */
static bool attn_add_term(AttnMatch *m, const Node *c, const int *map) {
  if (m->nterm == 16) return false;
  m->runtime |= !attn_is_const(c, 4);
  for (int a = 0; a < c->shape.rank; a++) {
    if (c->shape.dim[a] == 1) m->cmap[m->nterm][a] = -1;
    else if (map[a] == m->qa || map[a] == m->ka) m->cmap[m->nterm][a] = map[a];
    else return false;
  }
  m->term[m->nterm++] = c;
  return true;
}

static int einsum_id_pos(const int *ids, int rank, int id) {
  int at = -1;
  for (int a = 0; a < rank; a++)
    if (ids[a] == id) {
      if (at >= 0) return -2; /* repeated */
      at = a;
    }
  return at;
}

/* R: a binary Einsum with a summed id, of the given rank (checked in full below). */
static bool attn_is_qk(const Node *n, int rank) {
  return n->kind == NK_Einsum && n->nchild == 2 && n->shape.rank == rank && !einsum_is_product(n);
}

/* Y: R, or a product Einsum with exactly one R among its operands. */
static bool attn_is_scores(const Node *n, int rank) {
  if (attn_is_qk(n, rank)) return true;
  if (n->kind != NK_Einsum || !einsum_is_product(n)) return false;
  int nr = 0;
  for (int i = 0; i < n->nchild; i++) nr += attn_is_qk(n->child[i], rank);
  return nr == 1;
}

/* Does n (a binary Einsum) match the pattern above? Fills m; no side effects. */
static bool attn_match(const Lower *L, const Node *n, AttnMatch *m) {
  const EinsumSpec *e = &n->u.einsum;
  memset(m, 0, sizeof *m);
  int pi = -1;
  for (int i = 0; i < 2; i++)
    if (n->child[i]->kind == NK_GeneralFunction && n->child[i]->u.gf.fn == GF_SOFTMAX) pi = i;
  if (pi < 0) return false;
  const Node *p = n->child[pi], *v = n->child[1 - pi], *s = p->child[0];
  int rank = p->shape.rank;
  if (rank < 2 || L->uses[p->id] != 1 || L->uses[s->id] != 1 || n->child[0] == n->child[1]) return false;
  const int *pid = e->in[pi], *vid = e->in[1 - pi];
  int qid = -1, nq = 0;
  for (int a = 0; a < rank; a++) {
    if (einsum_id_pos(pid, rank, pid[a]) != a) return false;
    int in_v = einsum_id_pos(vid, e->in_rank[1 - pi], pid[a]), in_out = einsum_id_pos(e->out, e->out_rank, pid[a]);
    if (in_v == -2 || in_out == -2) return false;
    if (a == rank - 1) {
      if (in_v < 0 || in_out >= 0) return false;
    } else if (in_v < 0) {
      if (in_out < 0) return false;
      qid = pid[a], m->qa = a, nq++;
    } else if (in_out < 0) return false; /* a batch id summed away */
  }
  m->ka = rank - 1;
  if (nq != 1 || e->in_rank[1 - pi] != rank || e->out_rank != rank) return false;
  int did = -1;
  for (int a = 0; a < rank; a++)
    if (einsum_id_pos(pid, rank, vid[a]) < 0) {
      if (did >= 0 || einsum_id_pos(vid, rank, vid[a]) != a || einsum_id_pos(e->out, rank, vid[a]) < 0) return false;
      did = vid[a];
    }
  if (did < 0 || einsum_id_pos(e->out, rank, qid) < 0) return false;
  /* S = Add(biases..., Y) or Y */
  const Node *y = s;
  if (s->kind == NK_Add) {
    y = NULL;
    for (int i = 0; i < s->nchild; i++) {
      const Node *ch = s->child[i];
      if (attn_is_scores(ch, rank) && shape_eq(&ch->shape, &s->shape)) {
        if (y) return false;
        y = ch;
      }
    }
    if (!y || L->uses[y->id] != 1) return false;
  }
  /* Y = product Einsum (factors..., R) or R; factors are recorded first */
  const Node *r = y;
  int rmap[MAX_RANK]; /* R axis -> S axis */
  for (int a = 0; a < rank; a++) rmap[a] = a;
  if (!attn_is_scores(y, rank)) return false;
  if (!attn_is_qk(y, rank)) {
    const EinsumSpec *ye = &y->u.einsum;
    r = NULL;
    for (int i = 0; i < y->nchild; i++) {
      const Node *ch = y->child[i];
      int map[MAX_RANK];
      for (int a = 0; a < ye->in_rank[i]; a++) map[a] = einsum_id_pos(ye->out, ye->out_rank, ye->in[i][a]);
      if (!attn_is_qk(ch, rank)) {
        if (!attn_add_term(m, ch, map)) return false;
      } else {
        r = ch;
        memcpy(rmap, map, sizeof map);
      }
    }
    if (L->uses[r->id] != 1) return false;
  }
  m->nfac = m->nterm;
  if (s->kind == NK_Add)
    for (int i = 0; i < s->nchild; i++) {
      const Node *ch = s->child[i];
      int map[MAX_RANK];
      for (int a = 0; a < ch->shape.rank; a++) map[a] = a + rank - ch->shape.rank;
      if (ch != y && !attn_add_term(m, ch, map)) return false;
    }
  /* R: Q·Kᵀ over one summed id */
  if (r->kind != NK_Einsum || r->nchild != 2 || einsum_is_product(r)) return false;
  const EinsumSpec *re = &r->u.einsum;
  int rq = -1, rk = -1;
  for (int a = 0; a < rank; a++) {
    if (rmap[a] == m->qa) rq = re->out[a];
    if (rmap[a] == m->ka) rk = re->out[a];
    if (einsum_id_pos(re->out, rank, re->out[a]) != a) return false;
  }
  int nsum = 0;
  for (int i = 0; i < 2; i++) {
    if (re->in_rank[i] != rank) return false; /* batch..., query or key, head dim */
    for (int a = 0; a < rank; a++) {
      int id = re->in[i][a], o = einsum_id_pos(re->out, rank, id);
      if (einsum_id_pos(re->in[i], rank, id) != a) return false;
      if (o < 0) {
        if (einsum_id_pos(re->in[1 - i], rank, id) < 0) return false;
        nsum += i == 0;
      } else if (id != rq && id != rk && einsum_id_pos(re->in[1 - i], rank, id) < 0) return false;
    }
  }
  bool q0 = einsum_id_pos(re->in[0], rank, rq) >= 0, k0 = einsum_id_pos(re->in[0], rank, rk) >= 0;
  bool q1 = einsum_id_pos(re->in[1], rank, rq) >= 0, k1 = einsum_id_pos(re->in[1], rank, rk) >= 0;
  if (nsum != 1 || q0 == q1 || k0 == k1 || q0 == k0) return false;
  if (p->shape.dim[m->qa] == 0 || p->shape.dim[m->ka] == 0) return false;
  m->p = p, m->v = v, m->y = y, m->r = r;
  return true;
}

/* F and B at (q, k): the product and sum of the constants' values t[i]. */
static void attn_eval(const AttnMatch *m, Tensor *const *t, int64_t q, int64_t k, double *f, double *b) {
  *f = 1, *b = 0;
  for (int i = 0; i < m->nterm; i++) {
    const Node *c = m->term[i];
    int64_t at = 0;
    for (int a = 0; a < c->shape.rank; a++)
      at = at * c->shape.dim[a] + (m->cmap[i][a] == m->qa ? q : m->cmap[i][a] == m->ka ? k : 0);
    const double x = ((const double *)t[i]->data)[at];
    if (i < m->nfac) *f *= x;
    else *b += x;
  }
}

static AttnMask *attn_new(Lower *L, const AttnMatch *m, int64_t tq, int64_t tk) {
  if (L->nattn % 8 == 0) {
    L->attn = realloc(L->attn, sizeof *L->attn * (size_t)(L->nattn + 8));
    if (!L->attn) ICE("out of memory");
  }
  AttnMask *a = &L->attn[L->nattn++];
  *a = (AttnMask){.tq = tq, .tk = tk, .nfac = m->nfac, .nterm = m->nterm, .qa = m->qa, .ka = m->ka};
  memcpy(a->term, m->term, sizeof(const Node *) * (size_t)m->nterm);
  memcpy(a->cmap, m->cmap, sizeof a->cmap[0] * (size_t)m->nterm);
  return a;
}

/* A [tq, tk] buffer holding the product (terms [i0, i1) are factors) or the
 * sum of terms i0..i1-1, computed by one elementwise step; NULL if there are
 * none. */
static Buf *attn_term_buf(Lower *L, const AttnMatch *m, int i0, int i1, ExprKind op, int64_t tq, int64_t tk) {
  if (i0 == i1) return NULL;
  const int64_t dim[2] = {tq, tk};
  Expr *x = expr_new(L, op, i1 - i0);
  for (int i = i0; i < i1; i++) {
    const Node *c = m->term[i];
    Value *v = lower(L, c);
    int map[MAX_RANK];
    for (int a = 0; a < c->shape.rank; a++) map[a] = m->cmap[i][a] == m->ka ? 1 : 0; /* size-1 axes: unused */
    x->arg[i - i0] = expr_remap(L, v->lazy ? v->expr : expr_load(L, v->view), 2, dim, map);
  }
  if (i1 - i0 == 1) x = x->arg[0];
  const View *w = &x->view; /* one term already in memory as [tq, tk]: read it there */
  if (x->kind == EX_LOAD && w->buf->dtype == DT_F32 && w->offset == 0 && w->stride[0] == tk && w->stride[1] == 1)
    return w->buf;
  Shape sh = {2, {tq, tk}};
  Buf *b = new_buf(L, BUF_TEMP, DT_F32, tq * tk, m->p);
  Step *s = new_step(L, STEP_ELEMENTWISE, m->term[i0]);
  s->out = contiguous(b, &sh);
  s->ndim = 2;
  memcpy(s->dim, dim, sizeof dim);
  s->expr = x;
  s->flops = (double)(tq * tk) * (expr_size(x) - 1);
  b->def_step = s->id;
  return b;
}

/* The F and B buffers of a match: constants evaluated and analysed per row,
 * or computed by steps from run-time terms; shared with an earlier attention
 * that has the same terms (every layer of a model). */
static AttnMask *attn_mask(Lower *L, const AttnMatch *m) {
  int64_t tq = m->p->shape.dim[m->qa], tk = m->p->shape.dim[m->ka];
  /* the same term nodes (after CSE: every layer of a model) give the same
   * F and B: no evaluation, which at T = 1024 holds [T,T] doubles per layer */
  for (int i = 0; i < L->nattn; i++) {
    AttnMask *a = &L->attn[i];
    if (a->tq == tq && a->tk == tk && a->nterm == m->nterm && a->nfac == m->nfac && a->qa == m->qa &&
        a->ka == m->ka && !memcmp(a->term, m->term, sizeof(const Node *) * (size_t)m->nterm) &&
        !memcmp(a->cmap, m->cmap, sizeof a->cmap[0] * (size_t)m->nterm))
      return a;
  }
  if (m->runtime) {
    Buf *bf = attn_term_buf(L, m, 0, m->nfac, EX_MUL, tq, tk), *bb = attn_term_buf(L, m, m->nfac, m->nterm, EX_ADD, tq, tk);
    AttnMask *a = attn_new(L, m, tq, tk);
    a->bf = bf, a->bb = bb;
    return a;
  }
  float *f = malloc(sizeof(float) * (size_t)(tq * tk)), *b = malloc(sizeof(float) * (size_t)(tq * tk));
  if (!f || !b) ICE("out of memory");
  Eval *ev = eval_new(L->c);
  Tensor *cv[16];
  for (int i = 0; i < m->nterm; i++)
    if (!(cv[i] = eval_node(ev, m->term[i]))) ICE("constant %s does not evaluate", node_label(L->c, m->term[i]));
  for (int64_t q = 0; q < tq; q++)
    for (int64_t k = 0; k < tk; k++) {
      double fv, bv;
      attn_eval(m, cv, q, k, &fv, &bv);
      f[q * tk + k] = (float)fv, b[q * tk + k] = (float)bv;
    }
  eval_free(ev);
  for (int i = 0; i < L->nattn; i++) {
    AttnMask *a = &L->attn[i];
    if (a->f && a->tq == tq && a->tk == tk && !memcmp(a->f, f, sizeof(float) * (size_t)(tq * tk)) &&
        !memcmp(a->b, b, sizeof(float) * (size_t)(tq * tk))) {
      free(f), free(b);
      return a;
    }
  }
  AttnMask *a = attn_new(L, m, tq, tk);
  a->f = f, a->b = b;
  bool plain = true, skips = false;
  Shape s2 = {2, {tq, tk}}, s1 = {1, {tq}};
  Tensor *tb = tensor_new(L->c, DT_F32, &s2);
  Tensor *tkend = tensor_new(L->c, DT_I64, &s1), *tskip = tensor_new(L->c, DT_F32, &s1);
  memcpy(tb->data, b, sizeof(float) * (size_t)(tq * tk));
  for (int64_t q = 0; q < tq; q++) {
    const float *fr = f + q * tk, *br = b + q * tk;
    int64_t e = tk;
    while (e > 0 && fr[e - 1] == 0.0f && isfinite(br[e - 1]) && br[e - 1] < -100.0f) e--; /* circc_attn_row_end's rule */
    float skip = -INFINITY;
    for (int64_t k = e; k < tk; k++) skip = br[k] > skip ? br[k] : skip;
    for (int64_t k = 0; k < e; k++) plain &= fr[k] == 1.0f && br[k] == 0.0f;
    skips |= e < tk;
    ((int64_t *)tkend->data)[q] = e;
    ((float *)tskip->data)[q] = skip;
  }
  Tensor *tf = plain ? NULL : tensor_new(L->c, DT_F32, &s2);
  if (tf) memcpy(tf->data, f, sizeof(float) * (size_t)(tq * tk));
  Tensor *t[4] = {tkend, tskip, tb, tf};
  Buf **bufs[4] = {&a->bkend, &a->bskip, &a->bb, &a->bf};
  for (int i = 0; i < (!plain ? 4 : skips ? 3 : 2); i++) {
    *bufs[i] = new_buf(L, BUF_WEIGHT, t[i]->dtype == DT_I64 ? DT_I64 : DT_F32, shape_numel(&t[i]->shape), m->p);
    (*bufs[i])->tensor = t[i];
  }
  return a;
}

/* A view of an operand over [batch..., row id, last id] given the ids of each. */
static View attn_view(const View *v, const int *ids, int rank, const int *want, int nwant) {
  View r = {.buf = v->buf, .offset = v->offset, .rank = nwant};
  for (int j = 0; j < nwant; j++) {
    int a = einsum_id_pos(ids, rank, want[j]);
    r.dim[j] = v->dim[a];
    r.stride[j] = v->dim[a] == 1 ? 0 : v->stride[a];
  }
  return r;
}

/* Lowers n to a STEP_ATTENTION if it matches; NULL: use the ordinary lowering. */
static Value *lower_attention(Lower *L, const Node *n) {
  AttnMatch m;
  if (!attn_match(L, n, &m)) return NULL;
  const EinsumSpec *e = &n->u.einsum, *re = &m.r->u.einsum;
  int pi = n->child[0] == m.p ? 0 : 1, rank = m.p->shape.rank, nb = rank - 2;
  const int *pid = e->in[pi], *vid = e->in[1 - pi];
  /* ids in the order [batch..., q, k] for n, and the same axes' ids in R */
  int nids[MAX_RANK], rids[MAX_RANK], nbat = 0;
  for (int a = 0; a < rank; a++)
    if (a != m.qa && a != m.ka) nids[nbat++] = pid[a];
  nids[nb] = pid[m.qa], nids[nb + 1] = pid[m.ka];
  /* R's axes are S's axes permuted; find each S axis's id in R via its shape position */
  const Node *y = m.y;
  int s2r[MAX_RANK] = {0};
  for (int a = 0; a < rank; a++) s2r[a] = a;
  if (y != m.r) {
    const EinsumSpec *ye = &y->u.einsum;
    int ri = 0;
    for (int i = 0; i < y->nchild; i++)
      if (y->child[i] == m.r) ri = i;
    for (int a = 0; a < rank; a++) s2r[einsum_id_pos(ye->out, rank, ye->in[ri][a])] = a;
  }
  int sb = 0;
  for (int a = 0; a < rank; a++)
    if (a != m.qa && a != m.ka) rids[sb++] = re->out[s2r[a]];
  int rq = re->out[s2r[m.qa]], rk = re->out[s2r[m.ka]], qop = einsum_id_pos(re->in[0], rank, rq) >= 0 ? 0 : 1;
  int cid = -1;
  for (int a = 0; a < rank; a++)
    if (einsum_id_pos(re->out, rank, re->in[0][a]) < 0) cid = re->in[0][a];
  int did = -1;
  for (int a = 0; a < rank; a++)
    if (einsum_id_pos(pid, rank, vid[a]) < 0) did = vid[a];
  View qv = child_view(L, m.r, qop), kv = child_view(L, m.r, 1 - qop), vv = child_view(L, n, 1 - pi);
  if (qv.buf->dtype != DT_F32 || kv.buf->dtype != DT_F32 || vv.buf->dtype != DT_F32) return NULL;
  AttnMask *ac = attn_mask(L, &m);
  int want[MAX_RANK];
  memcpy(want, rids, sizeof(int) * (size_t)nb);
  Step *s = new_step(L, STEP_ATTENTION, n);
  s->nbatch = nb;
  s->ndim = nb + 4;
  for (int j = 0; j < nb; j++) s->dim[j] = m.p->shape.dim[einsum_id_pos(pid, rank, nids[j])];
  int64_t tq = ac->tq, tk = ac->tk;
  s->dim[nb] = tq, s->dim[nb + 1] = tk;
  want[nb] = rq, want[nb + 1] = cid;
  s->op[0] = attn_view(&qv, re->in[qop], rank, want, nb + 2);
  want[nb] = rk;
  s->op[1] = attn_view(&kv, re->in[1 - qop], rank, want, nb + 2);
  memcpy(want, nids, sizeof(int) * (size_t)nb);
  want[nb] = nids[nb + 1], want[nb + 1] = did;
  s->x = attn_view(&vv, vid, rank, want, nb + 2);
  s->nops = 2;
  s->dim[nb + 2] = s->op[0].dim[nb + 1];
  s->dim[nb + 3] = s->x.dim[nb + 1];
  /* the output laid out [q, batch..., d] (the step's dims are [batch..., q, d]):
   * heads of one position are adjacent, so merging them for the output
   * projection needs no copy; n's view of it follows n's axis order */
  Buf *b = new_buf(L, BUF_TEMP, DT_F32, shape_numel(&n->shape), n);
  s->out = (View){.buf = b, .rank = nb + 2};
  int order[MAX_RANK], oid[MAX_RANK]; /* layout position -> step dim, and its id */
  order[0] = nb, oid[0] = nids[nb];
  for (int j = 0; j < nb; j++) order[j + 1] = j, oid[j + 1] = nids[j];
  order[nb + 1] = nb + 1, oid[nb + 1] = did;
  int64_t stride = 1;
  View outv = {.buf = b, .rank = e->out_rank};
  for (int j = nb + 1; j >= 0; j--) {
    int a = einsum_id_pos(e->out, e->out_rank, oid[j]);
    s->out.dim[order[j]] = outv.dim[a] = n->shape.dim[a];
    s->out.stride[order[j]] = outv.stride[a] = n->shape.dim[a] == 1 ? 0 : stride;
    stride *= n->shape.dim[a];
  }
  Buf *cb[4] = {ac->bkend, ac->bskip, ac->bb, ac->bf};
  s->nidx = 4;
  for (int i = 0; i < 4; i++)
    if (cb[i]) s->idx[i] = (View){.buf = cb[i], .rank = 1, .dim = {cb[i]->numel}, .stride = {1}};
  double keys = (double)tq * (double)tk; /* run-time masks: at most */
  if (ac->bkend) {
    const int64_t *kend = ac->bkend->tensor->data;
    for (int64_t q = 0; q < tq; q++) keys -= (double)(tk - kend[q]);
  }
  double batch = 1;
  for (int j = 0; j < nb; j++) batch *= (double)s->dim[j];
  s->flops = batch * keys * (2.0 * (double)(s->dim[nb + 2] + s->dim[nb + 3]) + 5.0);
  b->def_step = s->id;
  return viewed(L, outv);
}

/* A product (n) of a one-row GEMM's result that nothing else reads and a
 * vector along that GEMM's columns (a run-time mask such as a decode step's
 * kv_mask) lets the GEMM skip the columns where the vector is 0: it writes 0
 * there, and this product is 0 there as it is for every finite value the GEMM
 * would have computed. Only a vector over the one id that forms the GEMM's N,
 * computed before the GEMM runs. */
static void gemv_column_mask(Lower *L, const Node *n) {
  const EinsumSpec *e = &n->u.einsum;
  for (int i = 0; i < n->nchild; i++) {
    const Value *gv = lower(L, n->child[i]);
    Buf *cb = gv->lazy ? NULL : gv->view.buf;
    if (!cb || cb->def_step < 0 || L->uses[n->child[i]->id] != 1) continue;
    Step *g = L->k->step[cb->def_step];
    if (!step_is_gemv(g) || g->x.buf || g->node != n->child[i]) continue;
    int nb = g->nbatch;
    for (int j = 0; j < n->nchild; j++) {
      const Value *mv = lower(L, n->child[j]);
      if (j == i || mv->lazy || mv->view.buf->dtype != DT_F32) continue;
      const Buf *mb = mv->view.buf;
      if (mb->kind != BUF_INPUT && mb->kind != BUF_WEIGHT && (mb->def_step < 0 || mb->def_step >= g->id)) continue;
      int axis = -1, naxes = 0;
      for (int a = 0; a < e->in_rank[j]; a++)
        if (n->child[j]->shape.dim[a] != 1) axis = a, naxes++;
      if (naxes != 1) continue;
      int ga = -1; /* the GEMM result's axis with the mask's id */
      for (int a = 0; a < e->in_rank[i]; a++)
        if (e->in[i][a] == e->in[j][axis]) ga = a;
      if (ga < 0 || g->dim[nb + 1] != n->child[i]->shape.dim[ga] || g->out.stride[nb + 1] != gv->view.stride[ga])
        continue;
      View m = {.buf = mv->view.buf, .offset = mv->view.offset, .rank = g->ndim};
      memcpy(m.dim, g->dim, sizeof(int64_t) * (size_t)g->ndim);
      m.stride[nb + 1] = mv->view.stride[axis];
      g->x = m;
      return;
    }
  }
}

static Value *lower_einsum(Lower *L, const Node *n) {
  const EinsumSpec *e = &n->u.einsum;
  if (n->nchild == 0) return lazy(L, expr_const(L, 1.0));
  if (einsum_is_product(n)) {
    gemv_column_mask(L, n);
    Expr *prod = expr_new(L, EX_MUL, n->nchild);
    for (int i = 0; i < n->nchild; i++) {
      Value *v = lower(L, n->child[i]);
      Expr *ce = v->lazy ? v->expr : expr_load(L, v->view);
      int map[MAX_RANK];
      for (int a = 0; a < e->in_rank[i]; a++)
        for (int j = 0; j < e->out_rank; j++)
          if (e->out[j] == e->in[i][a]) map[a] = j;
      prod->arg[i] = expr_remap(L, ce, n->shape.rank, n->shape.dim, map);
    }
    return lazy(L, n->nchild == 1 ? prod->arg[0] : prod);
  }
  if (n->nchild > 2) ICE("einsum with %d operands reached lowering (plan_einsums runs first)", n->nchild);
  if (n->nchild == 2) {
    Value *attn = lower_attention(L, n);
    if (attn) return attn;
  }
  /* loop dims: the output's distinct ids, then the summed ids */
  int ids[MAX_RANK * 2], nids = 0;
  int64_t size[MAX_RANK * 2];
  for (int j = 0; j < e->out_rank; j++) {
    bool seen = false;
    for (int t = 0; t < nids; t++) seen |= ids[t] == e->out[j];
    if (!seen) ids[nids] = e->out[j], size[nids++] = n->shape.dim[j];
  }
  int nout = nids;
  for (int i = 0; i < n->nchild; i++)
    for (int a = 0; a < e->in_rank[i]; a++) {
      bool seen = false;
      for (int t = 0; t < nids; t++) seen |= ids[t] == e->in[i][a];
      if (!seen) {
        if (nids >= MAX_RANK * 2) ICE("too many einsum ids");
        ids[nids] = e->in[i][a], size[nids++] = n->child[i]->shape.dim[a];
      }
    }
  Step *s;
  View ops[2];
  for (int i = 0; i < n->nchild; i++) ops[i] = child_view(L, n, i);
  int out_axes[MAX_RANK];
  bool gemm_out = gemm_layouts(L, n, ops, out_axes);
  Buf *b = new_buf(L, BUF_TEMP, DT_F32, shape_numel(&n->shape), n);
  View outv = contiguous(b, &n->shape);
  if (gemm_out) {
    int64_t stride = 1;
    for (int j = e->out_rank - 1; j >= 0; j--) {
      int a = out_axes[j];
      outv.stride[a] = outv.dim[a] == 1 ? 0 : stride;
      stride *= outv.dim[a];
    }
  }
  bool diag_out = false;
  for (int j = 0; j < e->out_rank; j++)
    for (int t = j + 1; t < e->out_rank; t++) diag_out |= e->out[j] == e->out[t];
  if (diag_out) { /* off-diagonal entries are 0 (§4.4) */
    Step *f = new_step(L, STEP_FILL, n);
    f->out = outv;
    f->ndim = outv.rank;
    memcpy(f->dim, outv.dim, sizeof(int64_t) * (size_t)outv.rank);
    b->def_step = f->id;
  }
  s = new_step(L, STEP_CONTRACT, n);
  s->ndim = nids;
  s->nout = nout;
  memcpy(s->dim, size, sizeof(int64_t) * (size_t)nids);
  s->out = (View){.buf = b, .rank = nids};
  memcpy(s->out.dim, size, sizeof(int64_t) * (size_t)nids);
  for (int j = 0; j < e->out_rank; j++)
    for (int t = 0; t < nids; t++)
      if (ids[t] == e->out[j]) s->out.stride[t] += outv.stride[j] ? outv.stride[j] : 0;
  s->nops = n->nchild;
  for (int i = 0; i < n->nchild; i++) {
    View *v = &s->op[i];
    *v = (View){.buf = ops[i].buf, .offset = ops[i].offset, .rank = nids};
    memcpy(v->dim, size, sizeof(int64_t) * (size_t)nids);
    for (int a = 0; a < e->in_rank[i]; a++)
      for (int t = 0; t < nids; t++)
        if (ids[t] == e->in[i][a]) v->stride[t] += ops[i].stride[a];
  }
  double work = 1;
  for (int t = 0; t < nids; t++) work *= (double)size[t];
  s->flops = work * (n->nchild == 2 ? 2 : 1);
  if (b->def_step < 0) b->def_step = s->id;
  if (!diag_out) classify_gemm(s);
  return viewed(L, outv);
}

/* Rearrange as a view: each input axis splits into its ids (row-major), each
 * output axis merges its ids, which works when the merged strides are contiguous. */
static bool rearrange_view(const Node *n, const View *in, View *out) {
  const RearrangeSpec *r = &n->u.rearrange;
  int64_t stride[512];
  bool present[512] = {0};
  if (r->nids > 512) return false;
  for (int g = 0; g < r->nin; g++) {
    int64_t s = in->stride[g];
    for (int j = r->in_len[g] - 1; j >= 0; j--) {
      int id = r->in_ids[g][j];
      stride[id] = r->size[id] == 1 ? 0 : s;
      present[id] = true;
      s *= r->size[id];
    }
  }
  *out = (View){.buf = in->buf, .offset = in->offset, .rank = r->nout};
  for (int g = 0; g < r->nout; g++) {
    out->dim[g] = n->shape.dim[g];
    int64_t expect = -1, st = 0;
    for (int j = r->out_len[g] - 1; j >= 0; j--) {
      int id = r->out_ids[g][j];
      int64_t s = present[id] ? stride[id] : 0; /* output-only id: a repeat */
      if (r->size[id] == 1) continue;
      if (expect < 0) st = s;
      else if (s != expect) return false;
      expect = s * r->size[id];
    }
    out->stride[g] = out->dim[g] == 1 ? 0 : st;
  }
  return true;
}

/* Rearrange that is not a view: copy over its ids as loop dims. */
static Value *rearrange_copy(Lower *L, const Node *n, const View *in) {
  const RearrangeSpec *r = &n->u.rearrange;
  if (r->nids > MAX_RANK) {
    diag_error(L->c, n->loc, "Rearrange %s has %d axis ids; circc supports at most %d", node_label(L->c, n), r->nids,
               MAX_RANK);
    return NULL;
  }
  Buf *b = new_buf(L, BUF_TEMP, DT_F32, shape_numel(&n->shape), n);
  View outv = contiguous(b, &n->shape);
  /* loop dims = ids in output order (output-only ids are repeats) */
  int order[MAX_RANK], nd = 0;
  int64_t out_stride[MAX_RANK] = {0}, in_stride[MAX_RANK] = {0}, dim[MAX_RANK];
  for (int g = 0; g < r->nout; g++) {
    int64_t s = outv.stride[g] ? outv.stride[g] : 0;
    int64_t acc = 1;
    for (int j = r->out_len[g] - 1; j >= 0; j--) {
      int id = r->out_ids[g][j];
      out_stride[nd] = s * acc;
      acc *= r->size[id];
      dim[nd] = r->size[id];
      order[nd++] = id;
    }
  }
  for (int g = 0; g < r->nin; g++) {
    int64_t s = in->stride[g];
    for (int j = r->in_len[g] - 1; j >= 0; j--) {
      int id = r->in_ids[g][j];
      for (int t = 0; t < nd; t++)
        if (order[t] == id) in_stride[t] = r->size[id] == 1 ? 0 : s;
      s *= r->size[id];
    }
  }
  Step *s = new_step(L, STEP_ELEMENTWISE, n);
  s->ndim = nd;
  memcpy(s->dim, dim, sizeof(int64_t) * (size_t)nd);
  s->out = (View){.buf = b, .rank = nd};
  View src = {.buf = in->buf, .offset = in->offset, .rank = nd};
  for (int t = 0; t < nd; t++) {
    s->out.dim[t] = src.dim[t] = dim[t];
    s->out.stride[t] = dim[t] == 1 ? 0 : out_stride[t];
    src.stride[t] = in_stride[t];
  }
  s->expr = expr_load(L, src);
  b->def_step = s->id;
  return viewed(L, outv);
}

static Value *lower_index(Lower *L, const Node *n) {
  const IndexSpec *ix = &n->u.index;
  View in = child_view(L, n, 0);
  bool gather = false;
  for (int a = 0; a < ix->n; a++) gather |= ix->e[a].kind == IDX_TENSOR;
  View v = {.buf = in.buf, .offset = in.offset};
  Step *s = NULL;
  if (gather) {
    s = new_step(L, STEP_GATHER, n);
    s->nidx = 0;
  }
  for (int a = 0; a < ix->n; a++) {
    int64_t start, stop;
    const IndexEntry *e = &ix->e[a];
    if (e->kind == IDX_TENSOR) {
      if (s->nidx == MAX_GATHER) {
        diag_error(L->c, n->loc, "Index %s has more than %d tensor entries", node_label(L->c, n), MAX_GATHER);
        return NULL;
      }
      const Tensor *t = e->tensor;
      Buf *ib = new_buf(L, BUF_WEIGHT, DT_I64, shape_numel(&t->shape), n);
      ib->tensor = t;
      View iv = {.buf = ib, .rank = v.rank + 1};
      iv.stride[v.rank] = 1;
      s->idx[s->nidx] = iv;
      s->idx_stride[s->nidx] = in.stride[a];
      s->idx_len[s->nidx++] = in.dim[a];
      v.dim[v.rank] = t->shape.dim[0];
      v.stride[v.rank++] = 0;
      continue;
    }
    CHECK(index_entry_bounds(e, in.dim[a], &start, &stop));
    v.offset += start * in.stride[a];
    if (e->kind == IDX_SLICE) {
      v.dim[v.rank] = stop - start;
      v.stride[v.rank++] = stop - start == 1 ? 0 : in.stride[a];
    }
  }
  if (!gather) return viewed(L, v);
  /* index views were built with the rank known so far; widen to all loop dims */
  for (int k = 0; k < s->nidx; k++) {
    View *iv = &s->idx[k];
    int axis = iv->rank - 1;
    iv->rank = v.rank;
    for (int d = 0; d < v.rank; d++) iv->dim[d] = v.dim[d];
    int64_t st = iv->stride[axis];
    memset(iv->stride, 0, sizeof iv->stride);
    iv->stride[axis] = st;
  }
  Buf *b = new_buf(L, BUF_TEMP, DT_F32, shape_numel(&n->shape), n);
  s->x = v;
  s->ndim = v.rank;
  memcpy(s->dim, v.dim, sizeof(int64_t) * (size_t)v.rank);
  s->out = contiguous(b, &n->shape);
  b->def_step = s->id;
  return viewed(L, contiguous(b, &n->shape));
}

/* gen_index_at_* and explicit_index_at_* as one gather (§4.10). */
static Value *lower_gen_index(Lower *L, const Node *n) {
  const GenFnSpec *g = &n->u.gf;
  View x = child_view(L, n, 0), idx = child_view(L, n, 1);
  const Shape *xs = &n->child[0]->shape, *is = &n->child[1]->shape;
  Step *s = new_step(L, STEP_GATHER, n);
  s->nidx = 1;
  s->check_int = g->check_int;
  int rank = n->shape.rank;
  View xv = {.buf = x.buf, .offset = x.offset, .rank = rank}, iv = {.buf = idx.buf, .offset = idx.offset, .rank = rank};
  for (int d = 0; d < rank; d++) xv.dim[d] = iv.dim[d] = n->shape.dim[d];
  int d_axis;
  if (g->fn == GF_EXPLICIT_INDEX) {
    int nb = xs->rank - g->non_b, d = g->dim < 0 ? g->dim + g->non_b : g->dim;
    for (int a = 0; a < is->rank; a++) iv.stride[a] = idx.stride[a];
    for (int a = 0; a < nb; a++) xv.stride[a] = x.stride[a];
    int o = is->rank;
    for (int a = 0; a < g->non_b; a++)
      if (a != d) xv.stride[o++] = x.stride[nb + a];
    d_axis = nb + d;
  } else if (g->batch_index && g->batch_x) {
    int nb = is->rank, d = g->dim < 0 ? g->dim + (xs->rank - nb) : g->dim;
    d_axis = nb + d;
    for (int a = 0; a < nb; a++) iv.stride[a] = idx.stride[a];
    int o = 0;
    for (int a = 0; a < xs->rank; a++)
      if (a != d_axis) xv.stride[o++] = x.stride[a];
  } else {
    int d = g->dim < 0 ? g->dim + xs->rank : g->dim;
    d_axis = d;
    int lead = g->batch_index ? 0 : d; /* where the index dims sit in the output */
    for (int a = 0; a < is->rank; a++) iv.stride[lead + a] = idx.stride[a];
    int o = 0;
    for (int a = 0; a < xs->rank; a++) {
      if (a == d) continue;
      if (o == lead) o += is->rank;
      xv.stride[o++] = x.stride[a];
    }
  }
  s->x = xv;
  s->idx[0] = iv;
  s->idx_stride[0] = x.stride[d_axis];
  s->idx_len[0] = xs->dim[d_axis];
  Buf *b = new_buf(L, BUF_TEMP, DT_F32, shape_numel(&n->shape), n);
  s->ndim = rank;
  memcpy(s->dim, n->shape.dim, sizeof(int64_t) * (size_t)rank);
  s->out = contiguous(b, &n->shape);
  b->def_step = s->id;
  return viewed(L, s->out);
}

/* n's value as a float view for a row kernel (int64 data copied once). */
static View float_view(Lower *L, const Node *n) {
  View v = materialize(L, n, lower(L, n));
  if (v.buf->dtype != DT_F32) {
    Value copy = {.lazy = true, .expr = expr_load(L, v)};
    v = materialize(L, n, &copy);
  }
  return v;
}

static Value *lower_row(Lower *L, const Node *n) {
  View in = float_view(L, n->child[0]);
  Buf *b = new_buf(L, BUF_TEMP, DT_F32, shape_numel(&n->shape), n);
  Step *s = new_step(L, STEP_ROW, n);
  s->fn = n->u.gf.fn;
  s->in = in;
  s->out = contiguous(b, &n->shape);
  s->flops = 5.0 * (double)shape_numel(&n->child[0]->shape);
  b->def_step = s->id;
  return viewed(L, s->out);
}

static Value *lower_concat(Lower *L, const Node *n) {
  Buf *b = new_buf(L, BUF_TEMP, DT_F32, shape_numel(&n->shape), n);
  View out = contiguous(b, &n->shape);
  int axis = n->u.concat.axis;
  int64_t at = 0;
  for (int i = 0; i < n->nchild; i++) {
    const Node *ch = n->child[i];
    Value *v = lower(L, ch);
    View part = out;
    part.offset += at * out.stride[axis];
    part.dim[axis] = ch->shape.dim[axis];
    if (part.dim[axis] == 1) part.stride[axis] = 0;
    at += ch->shape.dim[axis];
    if (shape_numel(&ch->shape) == 0) continue;
    Step *s = emit_copy(L, ch, v, part);
    s->node = n;
    if (b->def_step < 0) b->def_step = s->id;
  }
  return viewed(L, out);
}

static Value *lower_scatter(Lower *L, const Node *n) {
  Buf *b = new_buf(L, BUF_TEMP, DT_F32, shape_numel(&n->shape), n);
  View out = contiguous(b, &n->shape);
  Step *f = new_step(L, STEP_FILL, n);
  f->out = out;
  f->ndim = out.rank;
  memcpy(f->dim, out.dim, sizeof(int64_t) * (size_t)out.rank);
  b->def_step = f->id;
  View part = out;
  for (int a = 0; a < n->u.index.n; a++) {
    int64_t start, stop;
    CHECK(index_entry_bounds(&n->u.index.e[a], n->shape.dim[a], &start, &stop));
    part.offset += start * out.stride[a];
    part.dim[a] = stop - start;
    if (part.dim[a] == 1) part.stride[a] = 0;
  }
  Value *v = lower(L, n->child[0]);
  Step *s = emit_copy(L, n->child[0], v, part);
  s->node = n;
  return viewed(L, out);
}

/* ------------------------------------------------------------ layernorm */

/* The value of a constant node: a Scalar, or a product of constants (what
 * plan_einsum makes of the Scalars of an einsum). */
static bool const_value(const Node *n, double *v) {
  if (n->kind == NK_Scalar) {
    *v = n->u.scalar.value;
    return true;
  }
  if (n->kind != NK_Einsum || !einsum_is_product(n)) return false;
  double p = 1.0;
  for (int i = 0; i < n->nchild; i++) {
    double c;
    if (!const_value(n->child[i], &c)) return false;
    p *= c;
  }
  *v = p;
  return true;
}

/* ids[0..n) without the ids whose size is 1. */
static int squeeze_ids(const int *ids, const int64_t *size, int n, int *out) {
  int k = 0;
  for (int a = 0; a < n; a++)
    if (size[a] != 1) out[k++] = ids[a];
  return k;
}

static bool ids_eq(const int *a, int na, const int *b, int nb) {
  return na == nb && (na == 0 || !memcmp(a, b, sizeof(int) * (size_t)na));
}

/* n = scale * Σ_h Π src[rows..., h]: an einsum whose non-constant operands
 * (at most 2) carry the same distinct ids, the rows then h, h summed and the
 * rows kept in order (size-1 axes aside); or a product of such a node with
 * constants. Fills src, *nsrc and multiplies *scale. */
static bool row_sum(const Node *n, const Node **src, int *nsrc, double *scale) {
  if (n->kind != NK_Einsum) return false;
  const EinsumSpec *e = &n->u.einsum;
  int var = -1, nvar = 0, vars[2];
  double k = 1.0;
  for (int i = 0; i < n->nchild; i++) {
    double c;
    if (const_value(n->child[i], &c)) k *= c;
    else if (nvar == 2) return false;
    else vars[nvar++] = var = i;
  }
  if (nvar == 0) return false;
  int out[MAX_RANK], nout = squeeze_ids(e->out, n->shape.dim, e->out_rank, out);
  if (nvar == 1 && einsum_is_product(n)) { /* a scaled row sum: recurse */
    const Node *ch = n->child[var];
    int in[MAX_RANK], nin = squeeze_ids(e->in[var], ch->shape.dim, e->in_rank[var], in);
    if (!ids_eq(in, nin, out, nout)) return false;
    *scale *= k;
    return row_sum(ch, src, nsrc, scale);
  }
  const Node *x = n->child[vars[0]];
  int r = x->shape.rank;
  if (r < 1 || x->shape.dim[r - 1] < 1) return false;
  const int *ids = e->in[vars[0]];
  int h = ids[r - 1];
  for (int i = 0; i < nvar; i++) {
    const Node *ch = n->child[vars[i]];
    if (e->in_rank[vars[i]] != r || memcmp(e->in[vars[i]], ids, sizeof(int) * (size_t)r) ||
        !shape_eq(&ch->shape, &x->shape))
      return false;
    src[i] = ch;
  }
  for (int a = 0; a < r; a++)
    for (int b = a + 1; b < r; b++)
      if (ids[a] == ids[b]) return false;
  for (int j = 0; j < e->out_rank; j++)
    if (e->out[j] == h) return false;
  /* constants may only carry output ids (they multiply, never sum) */
  for (int i = 0; i < n->nchild; i++)
    for (int a = 0; a < e->in_rank[i]; a++) {
      bool kept = false;
      for (int j = 0; j < e->out_rank; j++) kept |= e->out[j] == e->in[i][a];
      if (!kept && e->in[i][a] != h) return false;
      if (!kept && i != vars[0] && (nvar < 2 || i != vars[1])) return false;
    }
  int rows[MAX_RANK], nrows = squeeze_ids(ids, x->shape.dim, r - 1, rows);
  if (!ids_eq(rows, nrows, out, nout)) return false;
  *nsrc = nvar;
  *scale *= k;
  return true;
}

static bool is_reciprocal_of(double v, int64_t len) { return fabs(v * (double)len - 1.0) <= 1e-9; }

/* Size of axis a of shape s broadcast (right-aligned) to rank r. */
static int64_t broadcast_dim(const Shape *s, int r, int a) {
  int k = a - (r - s->rank);
  return k < 0 ? 1 : s->dim[k];
}

/* m broadcast to x's shape is [rows of x..., 1]: one value per row. */
static bool is_row_column(const Shape *m, const Shape *x) {
  int r = x->rank;
  if (m->rank > r || broadcast_dim(m, r, r - 1) != 1) return false;
  for (int a = 0; a + 1 < r; a++)
    if (broadcast_dim(m, r, a) != x->dim[a]) return false;
  return true;
}

/* b broadcast to shape s varies along the last axis only. */
static bool is_last_axis_vector(const Shape *b, const Shape *s) {
  if (b->rank > s->rank) return false;
  for (int a = 0; a + 1 < b->rank; a++)
    if (b->dim[a] != 1) return false;
  return true;
}

typedef struct LayerNorm {
  const Node *x, *scale, *bias; /* scale, bias: NULL when absent */
  int scale_axis;               /* the scale's axis along the row (-1: none) */
  double eps;
} LayerNorm;

/* A factor of a product: a node and its axes' ids in the product's output. */
typedef struct Factor {
  const Node *node;
  int ids[MAX_RANK];
} Factor;

#define MAX_FACTORS 8

/* The factors of product einsum n whose output axis j has id map[j], nested
 * products flattened (plan_einsum splits a product of three into two). */
static bool product_factors(const Node *n, const int *map, Factor *f, int *nf) {
  const EinsumSpec *e = &n->u.einsum;
  for (int i = 0; i < n->nchild; i++) {
    const Node *ch = n->child[i];
    int ids[MAX_RANK];
    for (int a = 0; a < e->in_rank[i]; a++)
      for (int j = 0; j < e->out_rank; j++)
        if (e->out[j] == e->in[i][a]) ids[a] = map[j];
    if (ch->kind == NK_Einsum && ch->nchild > 0 && einsum_is_product(ch)) {
      if (!product_factors(ch, ids, f, nf)) return false;
      continue;
    }
    if (*nf == MAX_FACTORS) return false;
    f[*nf].node = ch;
    memcpy(f[*nf].ids, ids, sizeof(int) * (size_t)e->in_rank[i]);
    ++*nf;
  }
  return true;
}

/* The layernorm product of rust_circuit_format.md §7.2 as simplify and
 * plan_einsum leave it: y = Einsum product of c = Add(x, m), r = rsqrt(Add(eps,
 * v)) over the rows of y and at most one scale over its last axis, where
 * m = -1/H Σ_h x[rows..., h] (broadcast as [rows..., 1]), v = 1/H Σ_h c c and
 * H is the size of the last axis. Anything else (another axis, eps elsewhere,
 * an unbiased variance, more factors) does not match. */
static bool match_layernorm_product(const Node *y, LayerNorm *ln) {
  *ln = (LayerNorm){.scale_axis = -1};
  if (y->kind != NK_Einsum || y->nchild == 0 || !einsum_is_product(y) || y->shape.rank < 1) return false;
  const EinsumSpec *e = &y->u.einsum;
  int r = y->shape.rank, h = e->out[r - 1];
  int64_t len = y->shape.dim[r - 1];
  int rows[MAX_RANK], nrows = squeeze_ids(e->out, y->shape.dim, r - 1, rows);
  Factor f[MAX_FACTORS];
  int nf = 0;
  if (!product_factors(y, e->out, f, &nf)) return false;
  const Node *c = NULL, *rs = NULL;
  for (int i = 0; i < nf; i++) {
    const Node *ch = f[i].node;
    int ids[MAX_RANK], n = squeeze_ids(f[i].ids, ch->shape.dim, ch->shape.rank, ids);
    if (!c && ch->kind == NK_Add && ch->shape.rank == r && !memcmp(f[i].ids, e->out, sizeof(int) * (size_t)r))
      c = ch;
    else if (!rs && ch->kind == NK_GeneralFunction && ch->u.gf.fn == GF_RSQRT && ids_eq(ids, n, rows, nrows))
      rs = ch;
    else if (!ln->scale && (n == 0 || (n == 1 && ids[0] == h))) {
      ln->scale = ch;
      for (int a = 0; a < ch->shape.rank; a++)
        if (f[i].ids[a] == h) ln->scale_axis = a;
    } else return false;
  }
  if (!c || !rs || len < 1 || c->nchild != 2) return false;
  /* c = x + m, m = -mean(x) over the rows (broadcast as [rows..., 1]) */
  for (int i = 0; i < 2 && !ln->x; i++) {
    const Node *x = c->child[i], *m = c->child[1 - i], *src[2];
    int nsrc = 0;
    double scale = 1.0;
    if (shape_eq(&x->shape, &c->shape) && is_row_column(&m->shape, &x->shape) && row_sum(m, src, &nsrc, &scale) &&
        nsrc == 1 && src[0] == x && is_reciprocal_of(-scale, len))
      ln->x = x;
  }
  if (!ln->x) return false;
  /* rs = rsqrt(eps + v), v = mean(c * c) */
  const Node *a = rs->child[0];
  if (a->kind != NK_Add || a->nchild != 2) return false;
  for (int i = 0; i < 2; i++) {
    const Node *v = a->child[1 - i], *src[2];
    int nsrc = 0;
    double scale = 1.0;
    if (shape_numel(&a->child[i]->shape) == 1 && const_value(a->child[i], &ln->eps) && row_sum(v, src, &nsrc, &scale) &&
        nsrc == 2 && src[0] == c && src[1] == c && is_reciprocal_of(scale, len))
      return true;
  }
  return false;
}

/* A scale or bias as a row of len elements: its axis `axis` (-1: none) runs along the row. */
static View row_operand(Lower *L, const Node *n, int axis, int64_t len) {
  View v = float_view(L, n);
  View r = {.buf = v.buf, .offset = v.offset, .rank = 1, .dim = {len}};
  if (axis >= 0 && n->shape.dim[axis] != 1) r.stride[0] = v.stride[axis];
  return r;
}

/* Add(bias, y) or y, y a layernorm product: one row step that reads each row
 * of x in cache (mean, variance, output) instead of two reductions and
 * elementwise passes. NULL when n is not a layernorm. */
static Value *lower_layernorm(Lower *L, const Node *n) {
  LayerNorm ln = {0};
  if (n->kind == NK_Add && n->nchild == 2) {
    for (int i = 0; i < 2 && !ln.bias; i++)
      if (shape_eq(&n->child[i]->shape, &n->shape) && is_last_axis_vector(&n->child[1 - i]->shape, &n->shape) &&
          match_layernorm_product(n->child[i], &ln))
        ln.bias = n->child[1 - i];
    if (!ln.bias) return NULL;
  } else if (!match_layernorm_product(n, &ln)) return NULL;
  int r = n->shape.rank;
  int64_t len = n->shape.dim[r - 1];
  View x = float_view(L, ln.x), scale = {0}, bias = {0};
  if (ln.scale) scale = row_operand(L, ln.scale, ln.scale_axis, len);
  if (ln.bias) bias = row_operand(L, ln.bias, ln.bias->shape.rank - 1, len);
  Step *s = new_step(L, STEP_LAYERNORM, n);
  s->in = x;
  s->nops = 2;
  s->op[0] = scale;
  s->op[1] = bias;
  s->value = ln.eps;
  Buf *b = new_buf(L, BUF_TEMP, DT_F32, shape_numel(&n->shape), n);
  s->out = contiguous(b, &n->shape);
  s->flops = 8.0 * (double)shape_numel(&n->shape);
  b->def_step = s->id;
  return viewed(L, s->out);
}

static Value *lower_node(Lower *L, const Node *n) {
  Comp *c = L->c;
  Value *ln = lower_layernorm(L, n);
  if (ln) return ln;
  switch (n->kind) {
  case NK_Array: {
    Buf *b = L->weight_of[n->id];
    if (!b) {
      const Tensor *t = n->u.array.tensor;
      bool integer = t->dtype == DT_I64 || t->dtype == DT_I32 || t->dtype == DT_I16 || t->dtype == DT_I8 ||
                     t->dtype == DT_U8 || t->dtype == DT_BOOL;
      /* share one blob entry between Array nodes of the same tensor */
      DType dt = integer ? DT_I64 : DT_F32;
      for (int i = 0; i < L->k->nbuf && !b; i++) {
        Buf *o = L->k->buf[i];
        if (o->kind == BUF_WEIGHT && o->tensor == t && o->dtype == dt) b = o;
      }
      if (!b) {
        b = new_buf(L, BUF_WEIGHT, dt, shape_numel(&t->shape), n);
        b->tensor = t;
      }
      L->weight_of[n->id] = b;
    }
    return viewed(L, contiguous(b, &n->shape));
  }
  case NK_Symbol: {
    /* the same symbol may be written twice: uuid, name and shape identify it (§5.1) */
    for (int i = 0; i < L->k->ninputs; i++) {
      const Node *s = L->k->input[i]->node;
      if (s == n || (!strcmp(s->u.symbol.uuid, n->u.symbol.uuid) && shape_eq(&s->shape, &n->shape) &&
                     ((!s->name && !n->name) || (s->name && n->name && !strcmp(s->name, n->name)))))
        return viewed(L, contiguous(L->k->input[i], &n->shape));
    }
    ICE("symbol %s is not a program input", node_label(c, n));
  }
  case NK_Scalar: return lazy(L, expr_const(L, n->u.scalar.value));
  case NK_Add: {
    if (n->nchild == 0) return lazy(L, expr_const(L, 0.0));
    Expr *e = expr_new(L, EX_ADD, n->nchild);
    for (int i = 0; i < n->nchild; i++) e->arg[i] = child_expr_broadcast(L, n, i);
    return lazy(L, n->nchild == 1 ? e->arg[0] : e);
  }
  case NK_Einsum: return lower_einsum(L, n);
  case NK_Rearrange: {
    View in = child_view(L, n, 0), out;
    if (rearrange_view(n, &in, &out)) return viewed(L, out);
    return rearrange_copy(L, n, &in);
  }
  case NK_Index: return lower_index(L, n);
  case NK_Scatter: return lower_scatter(L, n);
  case NK_Concat: return lower_concat(L, n);
  case NK_Tag:
  case NK_SetSymbolicShape: return lower(L, n->child[0]);
  case NK_Cumulant:
    if (n->nchild == 0) return lazy(L, expr_const(L, 1.0));
    if (n->nchild == 1) return lower(L, n->child[0]);
    return lazy(L, expr_const(L, 0.0));
  case NK_GeneralFunction: {
    const GenFnSpec *g = &n->u.gf;
    switch (genfn_class(g->fn)) {
    case GF_ELEMENTWISE: {
      Expr *e = expr_new(L, EX_FN, 1);
      e->fn = g->fn;
      e->arg[0] = child_expr_broadcast(L, n, 0);
      return lazy(L, e);
    }
    case GF_LAST_AXIS: return lower_row(L, n);
    case GF_REDUCE_LAST:
      if (g->fn == GF_LAST_DIM_SIZE) {
        const Shape *s = &n->child[0]->shape;
        return lazy(L, expr_const(L, (double)s->dim[s->rank - 1]));
      }
      return lower_row(L, n);
    case GF_SPECIAL: break;
    }
    if (g->fn == GF_POW) {
      Expr *e = expr_new(L, EX_POW, 2);
      for (int i = 0; i < 2; i++) e->arg[i] = child_expr_broadcast(L, n, i);
      return lazy(L, e);
    }
    if (g->fn == GF_CAST) {
      Expr *e = expr_new(L, EX_CAST, 1);
      e->cast_to = g->cast_to;
      e->arg[0] = child_expr_broadcast(L, n, 0);
      return lazy(L, e);
    }
    if (g->fn == GF_GEN_INDEX || g->fn == GF_EXPLICIT_INDEX) return lower_gen_index(L, n);
    break;
  }
  default: break;
  }
  diag_error(c, n->loc, "%s (%s) cannot be compiled", node_label(c, n), kind_name(n->kind));
  return NULL;
}

/* Lowers n once; lazy values with several consumers (or too large to inline)
 * are materialised so their work is done once. */
static Value *lower(Lower *L, const Node *n) {
  Value *v = L->memo[n->id];
  if (v) return v;
  v = lower_node(L, n);
  if (!v) return lazy(L, expr_const(L, 0.0)); /* error reported; keep lowering to find more */
  if (v->lazy && expr_has_load(v->expr) && (L->uses[n->id] > 1 || expr_size(v->expr) > 48)) materialize(L, n, v);
  else if (v->lazy && n->kind != NK_Scalar && n->kind != NK_Tag) L->k->nfused++;
  L->memo[n->id] = v;
  return v;
}

/* ------------------------------------------------------------ epilogues */

/* A GEMM result that exactly one elementwise step reads (a bias, a residual
 * add, an activation, a copy into another layout: any expression) is finished
 * inside the GEMM: each GEMM task runs that step's expression over the block
 * of C it has just written, while the block is in cache, and the step leaves
 * the program (Step.epilogue). Each element of the step's loop space must read
 * a different element of C, so its dims regroup into the GEMM's [batch..., M,
 * N] (several may make up one merged GEMM dim); its other operands must be
 * ready before the GEMM runs, and it must be the only writer of its output.
 * Arithmetic and order are unchanged. */

typedef struct BufSearch {
  const Buf *buf;
  bool found;
} BufSearch;

static void find_buf(const View *v, void *arg) {
  BufSearch *q = arg;
  q->found |= v->buf == q->buf;
}

static bool expr_reads(const Expr *x, const Buf *b) {
  BufSearch q = {b, false};
  expr_each_load(x, find_buf, &q);
  return q.found;
}

static bool step_reads(const Step *s, const Buf *b) {
  BufSearch q = {b, false};
  step_each_read(s, find_buf, &q);
  return q.found;
}

static bool step_writes(const Step *s, const Buf *b) {
  return s->out.buf == b || (s->epilogue && s->epilogue->out.buf == b);
}

/* Where step e's loop dims come from when it reads C through view c: both
 * sides sorted by C's strides, e's dims are taken in order until their sizes
 * multiply to the GEMM dim's and must compose into its stride; e's dim d is
 * then (GEMM index epi_src[d] / epi_div[d]) % e->dim[d]. */
static bool epi_map(Step *g, const Step *e, const View *c) {
  int ed[MAX_RANK * 2], ne = 0, gd[MAX_RANK * 2], ng = 0;
  for (int i = 0; i < e->ndim; i++) {
    g->epi_src[i] = -1; /* size 1: always 0 */
    if (e->dim[i] == 1) continue;
    if (c->stride[i] == 0) return false; /* e repeats C's elements */
    ed[ne++] = i;
  }
  for (int j = 0; j < g->nbatch + 2; j++)
    if (g->dim[j] != 1) gd[ng++] = j;
  sort_by_stride(ed, ne, c);
  sort_by_stride(gd, ng, &g->out);
  int p = 0;
  for (int q = 0; q < ng; q++) {
    int j = gd[q], first = p;
    int64_t size = 1;
    while (size < g->dim[j] && p < ne) size *= e->dim[ed[p++]];
    if (size != g->dim[j] || c->stride[ed[p - 1]] != g->out.stride[j]) return false;
    int64_t div = 1;
    for (int t = p - 1; t >= first; t--) {
      if (t > first && c->stride[ed[t - 1]] != c->stride[ed[t]] * e->dim[ed[t]]) return false;
      g->epi_src[ed[t]] = j, g->epi_div[ed[t]] = div;
      div *= e->dim[ed[t]];
    }
  }
  return p == ne;
}

/* Are e's loads of C all one view (returned), and its other operands ready
 * before step gi and not written again until e (step ei)? */
static bool epi_operands(const Kernels *k, const Expr *x, const Buf *c, int gi, int ei, const View **cv) {
  if (x->kind == EX_LOAD) {
    const Buf *b = x->view.buf;
    if (b == c) {
      if (*cv && !view_eq(*cv, &x->view)) return false;
      *cv = &x->view;
    } else if (b->kind == BUF_TEMP || b->kind == BUF_OUTPUT) {
      if (b->def_step < 0 || b->def_step >= gi) return false;
      for (int i = gi + 1; i < ei; i++)
        if (step_writes(k->step[i], b)) return false;
    }
  }
  for (int i = 0; i < x->nargs; i++)
    if (!epi_operands(k, x->arg[i], c, gi, ei, cv)) return false;
  return true;
}

/* Makes step ei GEMM gi's epilogue if it can. */
static bool fuse_epilogue(Kernels *k, int gi, int ei) {
  Step *g = k->step[gi], *e = k->step[ei];
  const Buf *c = g->out.buf;
  Buf *o = e->out.buf;
  const View *cv = NULL;
  if (e->kind != STEP_ELEMENTWISE || o == c || expr_reads(e->expr, o) || !epi_operands(k, e->expr, c, gi, ei, &cv) ||
      !cv)
    return false;
  for (int i = 0; i < k->nstep; i++)
    if (i != ei && step_writes(k->step[i], o)) return false;
  if (!epi_map(g, e, cv)) return false;
  g->epilogue = e;
  g->flops += e->flops;
  o->def_step = gi;
  return true;
}

/* Fuses epilogues into GEMMs, then drops the fused steps and renumbers. */
static void fuse_epilogues(Kernels *k) {
  bool *gone = calloc((size_t)k->nstep + 1, sizeof(bool));
  int *new_id = calloc((size_t)k->nstep + 1, sizeof(int));
  if (!gone || !new_id) ICE("out of memory");
  for (int gi = 0; gi < k->nstep; gi++) {
    Step *g = k->step[gi];
    if (g->kind != STEP_GEMM || g->out.buf->kind != BUF_TEMP) continue;
    int reader = -1, readers = 0;
    bool other_writer = false;
    for (int i = 0; i < k->nstep; i++) {
      if (gone[i] || i == gi) continue;
      if (step_reads(k->step[i], g->out.buf)) readers++, reader = i;
      other_writer |= step_writes(k->step[i], g->out.buf);
    }
    if (readers == 1 && !other_writer && reader > gi && fuse_epilogue(k, gi, reader)) gone[reader] = true;
  }
  int n = 0;
  for (int i = 0; i < k->nstep; i++) {
    new_id[i] = n;
    if (!gone[i]) k->step[n] = k->step[i], k->step[n]->id = n, n++;
  }
  for (int b = 0; b < k->nbuf; b++) {
    Buf *t = k->buf[b];
    if (t->def_step < 0) continue;
    if (gone[t->def_step]) ICE("a buffer written by a fused step");
    t->def_step = new_id[t->def_step];
  }
  k->nstep = n;
  free(gone), free(new_id);
}

/* Counts consumers per node, and per tensor the edges into Array nodes holding it. */
static void count_uses(Lower *L, const Node *n, bool *visited) {
  if (visited[n->id]) return;
  visited[n->id] = true;
  for (int i = 0; i < n->nchild; i++) {
    const Node *ch = n->child[i];
    L->uses[ch->id]++;
    if (ch->kind == NK_Array) {
      int t = 0;
      while (t < L->ntensors && L->tensor[t] != ch->u.array.tensor) t++;
      if (t == L->ntensors) {
        if (t % 64 == 0) {
          L->tensor = realloc(L->tensor, sizeof *L->tensor * (size_t)(t + 64));
          L->tensor_reads = realloc(L->tensor_reads, sizeof *L->tensor_reads * (size_t)(t + 64));
          if (!L->tensor || !L->tensor_reads) ICE("out of memory");
        }
        L->tensor[t] = ch->u.array.tensor;
        L->tensor_reads[L->ntensors++] = 0;
      }
      L->tensor_reads[t]++;
    }
    count_uses(L, ch, visited);
  }
}

/* Does anything besides one consumer read tensor t? */
static bool tensor_shared(const Lower *L, const Tensor *t) {
  for (int i = 0; i < L->ntensors; i++)
    if (L->tensor[i] == t) return L->tensor_reads[i] > 1;
  return true;
}

bool lower_program(Comp *c, const Program *p, Kernels *k) {
  memset(k, 0, sizeof *k);
  Lower L = {.c = c, .k = k, .nids = c->next_node_id};
  L.memo = calloc((size_t)L.nids + 1, sizeof(Value *));
  L.uses = calloc((size_t)L.nids + 1, sizeof(int));
  L.weight_of = calloc((size_t)L.nids + 1, sizeof(Buf *));
  bool *visited = calloc((size_t)L.nids + 1, sizeof(bool));
  if (!L.memo || !L.uses || !L.weight_of || !visited) ICE("out of memory");
  for (int i = 0; i < p->outputs.n; i++) {
    L.uses[p->outputs.node[i]->id]++;
    count_uses(&L, p->outputs.node[i], visited);
  }
  int errors = diag_error_count(c);
  k->ninputs = p->inputs.n;
  k->input = ARENA_ARRAY(&c->arena, Buf *, k->ninputs + 1);
  k->input_name = ARENA_ARRAY(&c->arena, const char *, k->ninputs + 1);
  for (int i = 0; i < p->inputs.n; i++) {
    const Node *s = p->inputs.node[i];
    if (!s->name) diag_error(c, s->loc, "unnamed free symbol %s: inputs need names", shape_str(c, &s->shape));
    k->input[i] = new_buf(&L, BUF_INPUT, p->input_is_index[i] ? DT_I64 : DT_F32, shape_numel(&s->shape), s);
    k->input[i]->index = i;
    k->input_name[i] = s->name ? s->name : "";
  }
  k->noutputs = p->outputs.n;
  k->output = ARENA_ARRAY(&c->arena, Buf *, k->noutputs + 1);
  k->output_name = p->output_names;
  for (int i = 0; i < p->outputs.n && diag_error_count(c) == errors; i++) {
    const Node *n = p->outputs.node[i];
    Value *v = lower(&L, n);
    Buf *t = v->lazy ? NULL : v->view.buf;
    View whole = t ? contiguous(t, &n->shape) : (View){0};
    if (t && t->kind == BUF_TEMP && L.uses[n->id] == 1 && t->numel == shape_numel(&n->shape) &&
        view_eq(&whole, &v->view)) {
      /* the step that computes this output writes straight into the output buffer */
      t->kind = BUF_OUTPUT;
      t->index = i;
      t->node = n; /* the output's shape (t may hold a child that this output views) */
      k->output[i] = t;
      continue;
    }
    Buf *b = new_buf(&L, BUF_OUTPUT, DT_F32, shape_numel(&n->shape), n);
    b->index = i;
    k->output[i] = b;
    Step *s = emit_copy(&L, n, v, contiguous(b, &n->shape));
    b->def_step = s->id;
  }
  fuse_epilogues(k);
  for (int i = 0; i < k->nstep; i++) k->flops += k->step[i]->flops;
  for (int i = 0; i < L.nattn; i++) free(L.attn[i].f), free(L.attn[i].b);
  free(L.memo), free(L.uses), free(L.weight_of), free(L.tensor), free(L.tensor_reads), free(L.attn), free(visited);
  return diag_error_count(c) == errors;
}
