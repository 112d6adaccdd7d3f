/* lower.c — from the resolved, simplified circuit to the kernel graph
 * (kernel.h). Arrays become weight buffers and free Symbols input buffers.
 * Elementwise nodes (Add, Scalar, elementwise GeneralFunctions, pow, casts and
 * einsums that only multiply) stay lazy expressions and are fused into their
 * consumer; Index / Rearrange / Tag become strided views where the strides
 * allow; everything else becomes one step: contractions (einsums with one or
 * two operands, see plan_einsum.c; GEMMs in lower_gemm.c), row kernels
 * (softmax, log_softmax, min, max), gathers (gen_index, explicit_index, Index
 * with tensors) and copies. Before that, each node is offered to the idioms
 * (IDIOMS[]: layernorm, attention), which lower a whole pattern as one step.
 * A node with several consumers is materialised once. */
#include <stdlib.h>
#include <string.h>
#include "lower_internal.h"

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

/* The largest buffer a program may have, and the most all its buffers may
 * take together: memplan's offsets and sums (each buffer rounded up to 64
 * bytes) stay far from int64 overflow. */
#define MAX_BUFFER_BYTES ((int64_t)1 << 40)
#define MAX_PROGRAM_BYTES ((int64_t)1 << 56)

/* The product of n's sizes with 0 counted as 1 (ir_make keeps it below
 * 2^63): a shape with a size 0 has no elements, but its loops and strides
 * still reach this far. */
static int64_t shape_span(const Shape *s) {
  int64_t span = 1;
  for (int k = 0; k < s->rank; k++) span *= s->dim[k] ? s->dim[k] : 1;
  return span;
}

Buf *new_buf(Lower *L, BufKind kind, DType dt, int64_t numel, const Node *n) {
  int64_t reach = n && numel == 0 ? shape_span(&n->shape) : numel;
  bool too_big = reach < 0 || reach > MAX_BUFFER_BYTES / (int64_t)dtype_size(dt);
  if (too_big && n && n == L->too_big) {
    numel = 0; /* this node's other buffers: said once */
  } else if (too_big) {
    L->too_big = n;
    diag_error(L->c, n ? n->loc : NO_LOC, "%s needs a buffer of %lld elements%s of %zu bytes, more than circc's limit "
               "of 2^40 bytes per tensor", n ? node_label(L->c, n) : "a value", (long long)reach,
               numel ? "" : " (a size 0 counted as 1: the loops still run)", dtype_size(dt));
    numel = 0; /* lowering goes on to report more; nothing is emitted */
  }
  int64_t bytes = numel * (int64_t)dtype_size(dt) + 64;
  if (L->total_bytes <= MAX_PROGRAM_BYTES && (L->total_bytes += bytes) > MAX_PROGRAM_BYTES)
    diag_error(L->c, n ? n->loc : NO_LOC, "the program's buffers need more than 2^56 bytes in all (at %s)",
               n ? node_label(L->c, n) : "a value");
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

Step *new_step(Lower *L, StepKind kind, const Node *n) {
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

View contiguous(Buf *b, const Shape *s) {
  View v = {.buf = b, .rank = s->rank};
  int64_t stride = 1;
  for (int d = s->rank - 1; d >= 0; d--) {
    v.dim[d] = s->dim[d];
    v.stride[d] = s->dim[d] == 1 ? 0 : stride;
    stride *= s->dim[d];
  }
  return v;
}

/* ------------------------------------------------------------ expressions */

Expr *expr_new(Lower *L, ExprKind kind, int nargs) {
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

Expr *expr_load(Lower *L, View v) {
  Expr *e = expr_new(L, EX_LOAD, 0);
  e->view = v;
  return e;
}

int expr_size(const Expr *e) {
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

Expr *expr_remap(Lower *L, const Expr *e, int rank, const int64_t *dim, const int *map) {
  Expr *r = expr_new(L, e->kind, e->nargs);
  Expr **args = r->arg;
  *r = *e;
  r->arg = args;
  if (e->kind == EX_LOAD) r->view = view_remap(&e->view, rank, dim, map);
  for (int i = 0; i < e->nargs; i++) r->arg[i] = expr_remap(L, e->arg[i], rank, dim, map);
  return r;
}

/* ------------------------------------------------------------ lowering */

/* A step that writes value v (of node n) through view `out`. */
static Step *copy_step(Lower *L, const Node *n, const Value *v, View out) {
  Step *s = new_step(L, STEP_ELEMENTWISE, n);
  s->out = out;
  s->ndim = out.rank;
  memcpy(s->dim, out.dim, sizeof(int64_t) * (size_t)out.rank);
  s->u.elementwise.expr = v->lazy ? v->expr : expr_load(L, v->view);
  s->flops = (double)shape_numel(&n->shape) * (v->lazy ? expr_size(v->expr) - 1 : 0);
  return s;
}

/* The value of n as a view of memory: materialises lazy values. */
static View materialize(Lower *L, const Node *n, Value *v) {
  if (!v->lazy) return v->view;
  Buf *b = new_buf(L, BUF_TEMP, DT_F32, shape_numel(&n->shape), n);
  View out = contiguous(b, &n->shape);
  Step *s = copy_step(L, n, v, out);
  if (b->def_step < 0) b->def_step = s->id;
  *v = (Value){.lazy = false, .view = out};
  return out;
}

View child_view(Lower *L, const Node *n, int i) {
  Value *v = lower_value(L, n->child[i]);
  return materialize(L, n->child[i], v);
}

/* Child i of n as an expression over n's axes, broadcast NumPy-style. */
static Expr *child_expr_broadcast(Lower *L, const Node *n, int i) {
  const Node *ch = n->child[i];
  Value *v = lower_value(L, ch);
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

Value *viewed(Lower *L, View view) {
  Value *v = ARENA_NEW(&L->c->arena, Value);
  v->view = view;
  return v;
}

/* An Einsum in which every operand id appears in the output and no id repeats
 * is a broadcast product: no step of its own. */
bool einsum_is_product(const Node *n) {
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

static Value *lower_einsum(Lower *L, const Node *n) {
  const EinsumSpec *e = &n->u.einsum;
  if (n->nchild == 0) return lazy(L, expr_const(L, 1.0));
  if (einsum_is_product(n)) {
    gemv_column_mask(L, n);
    Expr *prod = expr_new(L, EX_MUL, n->nchild);
    for (int i = 0; i < n->nchild; i++) {
      Value *v = lower_value(L, n->child[i]);
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
  s->u.contract.nout = nout;
  memcpy(s->dim, size, sizeof(int64_t) * (size_t)nids);
  s->out = (View){.buf = b, .rank = nids};
  memcpy(s->out.dim, size, sizeof(int64_t) * (size_t)nids);
  for (int j = 0; j < e->out_rank; j++)
    for (int t = 0; t < nids; t++)
      if (ids[t] == e->out[j]) s->out.stride[t] += outv.stride[j] ? outv.stride[j] : 0;
  s->u.contract.nops = n->nchild;
  for (int i = 0; i < n->nchild; i++) {
    View *v = &s->u.contract.op[i];
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
  if (!diag_out) classify_gemm(s, L->batch_invariant);
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
  s->u.elementwise.expr = expr_load(L, src);
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
  }
  for (int a = 0; a < ix->n; a++) {
    int64_t start, stop;
    const IndexEntry *e = &ix->e[a];
    if (e->kind == IDX_TENSOR) {
      if (s->u.gather.nidx == MAX_GATHER) {
        diag_error(L->c, n->loc, "Index %s has more than %d tensor entries", node_label(L->c, n), MAX_GATHER);
        return NULL;
      }
      const Tensor *t = e->tensor;
      Buf *ib = new_buf(L, BUF_WEIGHT, DT_I64, shape_numel(&t->shape), n);
      ib->tensor = t;
      View iv = {.buf = ib, .rank = v.rank + 1};
      iv.stride[v.rank] = 1;
      int k = s->u.gather.nidx++;
      s->u.gather.idx[k] = iv;
      s->u.gather.idx_stride[k] = in.stride[a];
      s->u.gather.idx_len[k] = in.dim[a];
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
  for (int k = 0; k < s->u.gather.nidx; k++) {
    View *iv = &s->u.gather.idx[k];
    int axis = iv->rank - 1;
    iv->rank = v.rank;
    for (int d = 0; d < v.rank; d++) iv->dim[d] = v.dim[d];
    int64_t st = iv->stride[axis];
    memset(iv->stride, 0, sizeof iv->stride);
    iv->stride[axis] = st;
  }
  Buf *b = new_buf(L, BUF_TEMP, DT_F32, shape_numel(&n->shape), n);
  s->u.gather.x = v;
  s->ndim = v.rank;
  memcpy(s->dim, v.dim, sizeof(int64_t) * (size_t)v.rank);
  s->out = contiguous(b, &n->shape);
  b->def_step = s->id;
  return viewed(L, contiguous(b, &n->shape));
}

/* A loss's label gather, gen_index_at_-1_batch_x (one element of each row's
 * last axis) of a log_softmax nothing else reads, is one row step that picks
 * the element: the log-probabilities are never written. The same sums, the
 * same bits as the two steps. */
static bool picks_from_log_softmax(const Lower *L, const Node *n) {
  const GenFnSpec *g = &n->u.gf;
  const Node *x = n->child[0];
  int suffix = x->shape.rank - n->child[1]->shape.rank;
  return g->fn == GF_GEN_INDEX && g->batch_x && g->batch_index && suffix == 1 && (g->dim == 0 || g->dim == -1) &&
         x->kind == NK_GeneralFunction && x->u.gf.fn == GF_LOG_SOFTMAX && L->uses[x->id] == 1 && !L->memo[x->id];
}

static Value *lower_log_softmax_pick(Lower *L, const Node *n) {
  const Node *ls = n->child[0];
  View in = float_view(L, ls->child[0]), idx = child_view(L, n, 1);
  Buf *b = new_buf(L, BUF_TEMP, DT_F32, shape_numel(&n->shape), n);
  Step *s = new_step(L, STEP_ROW, n);
  s->u.row.fn = GF_LOG_SOFTMAX;
  s->u.row.in = in;
  s->u.row.pick = idx;
  s->u.row.pick_check_int = n->u.gf.check_int;
  s->out = contiguous(b, &n->shape);
  s->flops = 5.0 * (double)shape_numel(&ls->shape);
  b->def_step = s->id;
  return viewed(L, s->out);
}

/* gen_index_at_* and explicit_index_at_* as one gather (§4.10). */
static Value *lower_gen_index(Lower *L, const Node *n) {
  const GenFnSpec *g = &n->u.gf;
  if (picks_from_log_softmax(L, n)) return lower_log_softmax_pick(L, n);
  View x = child_view(L, n, 0), idx = child_view(L, n, 1);
  const Shape *xs = &n->child[0]->shape, *is = &n->child[1]->shape;
  Step *s = new_step(L, STEP_GATHER, n);
  s->u.gather.nidx = 1;
  s->u.gather.check_int = g->check_int;
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
  s->u.gather.x = xv;
  s->u.gather.idx[0] = iv;
  s->u.gather.idx_stride[0] = x.stride[d_axis];
  s->u.gather.idx_len[0] = xs->dim[d_axis];
  Buf *b = new_buf(L, BUF_TEMP, DT_F32, shape_numel(&n->shape), n);
  s->ndim = rank;
  memcpy(s->dim, n->shape.dim, sizeof(int64_t) * (size_t)rank);
  s->out = contiguous(b, &n->shape);
  b->def_step = s->id;
  return viewed(L, s->out);
}

/* n's value as a float view for a row kernel (int64 data copied once). */
View float_view(Lower *L, const Node *n) {
  View v = materialize(L, n, lower_value(L, n));
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
  s->u.row.fn = n->u.gf.fn;
  s->u.row.in = in;
  s->out = contiguous(b, &n->shape);
  s->flops = 5.0 * (double)shape_numel(&n->child[0]->shape);
  b->def_step = s->id;
  return viewed(L, s->out);
}

/* n's value as row-major contiguous floats (rows == false) or with unit
 * stride on the last axis (rows == true), copied once if it is not laid out so:
 * what --ops row and general functions read. */
static View packed_float_view(Lower *L, const Node *n, bool rows) {
  View v = float_view(L, n);
  int64_t want = 1;
  bool packed = true;
  for (int d = v.rank - 1; d >= 0 && packed; d--) {
    packed = v.dim[d] == 1 || v.stride[d] == want;
    want *= v.dim[d];
    if (rows) break;
  }
  if (packed) return v;
  Value copy = {.lazy = true, .expr = expr_load(L, v)};
  return materialize(L, n, &copy);
}

/* --ops functions: elementwise ones stay lazy expressions, fused into their
 * consumer's loop (and inlined there: the files are part of model.c); a row
 * function is a row step; a general function one step over whole tensors. */
static Value *lower_user_op(Lower *L, const Node *n) {
  const UserOp *op = n->u.gf.user;
  if (op->form == OP_UNARY || op->form == OP_BINARY) {
    Expr *e = expr_new(L, EX_USER, n->nchild);
    e->user = op;
    for (int i = 0; i < n->nchild; i++) e->arg[i] = child_expr_broadcast(L, n, i);
    return lazy(L, e);
  }
  Buf *b = new_buf(L, BUF_TEMP, DT_F32, shape_numel(&n->shape), n);
  Step *s;
  if (op->form == OP_ROW) {
    View in = packed_float_view(L, n->child[0], true);
    s = new_step(L, STEP_ROW, n);
    s->u.row.fn = GF_USER;
    s->u.row.user = op;
    s->u.row.in = in;
  } else {
    View *in = ARENA_ARRAY(&L->c->arena, View, n->nchild);
    for (int i = 0; i < n->nchild; i++) in[i] = packed_float_view(L, n->child[i], false);
    s = new_step(L, STEP_GENERAL, n);
    s->u.general.op = op;
    s->u.general.nin = n->nchild;
    s->u.general.in = in;
  }
  s->out = contiguous(b, &n->shape);
  s->flops = (double)shape_numel(&n->shape);
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
    Value *v = lower_value(L, ch);
    View part = out;
    part.offset += at * out.stride[axis];
    part.dim[axis] = ch->shape.dim[axis];
    if (part.dim[axis] == 1) part.stride[axis] = 0;
    at += ch->shape.dim[axis];
    if (shape_numel(&ch->shape) == 0) continue;
    Step *s = copy_step(L, ch, v, part);
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
  Value *v = lower_value(L, n->child[0]);
  Step *s = copy_step(L, n->child[0], v, part);
  s->node = n;
  return viewed(L, out);
}

/* circc_patch (--patch): a contiguous copy of the child that the run-time
 * value replaces when given; consumers read the copy, so nothing downstream
 * sees the child's own value then. */
static Value *lower_patch(Lower *L, const Node *n) {
  View in = child_view(L, n, 0);
  Buf *b = new_buf(L, BUF_TEMP, in.buf->dtype, shape_numel(&n->shape), n);
  Step *s = new_step(L, STEP_PATCH, n);
  s->out = contiguous(b, &n->shape);
  s->ndim = n->shape.rank;
  memcpy(s->dim, n->shape.dim, sizeof(int64_t) * (size_t)n->shape.rank);
  s->u.patch.in = in;
  s->u.patch.value = L->k->patch[n->u.gf.dim];
  s->u.patch.value->dtype = in.buf->dtype;
  b->def_step = s->id;
  return viewed(L, s->out);
}

/* Idioms: patterns lowered as a whole, offered every node in this order
 * before its ordinary lowering. */
static const struct {
  const char *name;
  Value *(*lower)(Lower *L, const Node *n);
} IDIOMS[] = {
    {"layernorm", idiom_layernorm},
    {"attention", idiom_attention},
};

static Value *lower_node(Lower *L, const Node *n) {
  Comp *c = L->c;
  for (size_t i = 0; i < sizeof IDIOMS / sizeof *IDIOMS; i++) {
    Value *v = IDIOMS[i].lower(L, n);
    if (v) return v;
  }
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
    int i = n->name ? ir_find_name(L->input_node, L->input_order, L->k->ninputs, n->name) : -1;
    for (int j = 0; i < 0 && j < L->k->ninputs; j++)   /* unnamed: an error was reported */
      if (symbol_same(L->input_node[j], n)) i = j;
    if (i < 0 || !symbol_same(L->input_node[i], n)) ICE("symbol %s is not a program input", node_label(c, n));
    return viewed(L, contiguous(L->k->input[i], &n->shape));
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
  case NK_SetSymbolicShape: return lower_value(L, n->child[0]);
  case NK_Cumulant:
    if (n->nchild == 0) return lazy(L, expr_const(L, 1.0));
    if (n->nchild == 1) return lower_value(L, n->child[0]);
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
    if (g->fn == GF_USER && g->user) return lower_user_op(L, n);
    if (g->fn == GF_PATCH) return lower_patch(L, n);
    break;
  }
  default: break;
  }
  diag_error(c, n->loc, "%s (%s) cannot be compiled", node_label(c, n), kind_name(n->kind));
  return NULL;
}

/* Lowers n once; lazy values with several consumers (or too large to inline)
 * are materialised so their work is done once. */
Value *lower_value(Lower *L, const Node *n) {
  Value *v = L->memo[n->id];
  if (v) return v;
  v = lower_node(L, n);
  if (!v) return lazy(L, expr_const(L, 0.0)); /* error reported; keep lowering to find more */
  /* more than 48 nodes, loads or not, is materialised: expressions stay under
   * 50 levels deep, so the passes over them (expr_size, emit) may recurse */
  if (v->lazy && ((expr_has_load(v->expr) && L->uses[n->id] > 1) || expr_size(v->expr) > 48)) materialize(L, n, v);
  else if (v->lazy && n->kind != NK_Scalar && n->kind != NK_Tag) L->k->nfused++;
  L->memo[n->id] = v;
  return v;
}

typedef struct UseCount {
  Lower *L;
  bool *visited; /* by node id */
  bool at_root;  /* the next node met is a root, not reached by an edge */
} UseCount;

/* Counts consumers per node, and per tensor the edges into Array nodes
 * holding it, at every edge ir_walk follows; a node's edges once. */
static bool count_uses(Node *ch, void *arg) {
  UseCount *u = arg;
  Lower *L = u->L;
  L->uses[ch->id]++;
  if (ch->kind == NK_Array && !u->at_root) ptrmap_get(&L->tensor_reads, ch->u.array.tensor)->num++;
  u->at_root = false;
  if (u->visited[ch->id]) return false;
  u->visited[ch->id] = true;
  return true;
}

/* lower_value recurses from a node into the children it needs until it meets
 * lowered ones. So that it recurses at most LOWER_MAX_RECURSION levels
 * whatever the circuit's depth, a node that many levels above the nearest
 * lowered nodes (or leaves) is lowered first, children first; circuits less
 * deep than that are lowered on demand only, in the order consumers ask. */
enum { LOWER_MAX_RECURSION = 256 };

typedef struct Deep {
  Lower *L;
  int *levels; /* by node id: the longest path down from it through nodes not lowered yet (0: not reached) */
} Deep;

static bool deep_enter(Node *n, void *arg) {
  const Deep *d = arg;
  return !d->L->memo[n->id] && !d->levels[n->id];
}

static bool deep_leave(Node *n, void *arg) {
  Deep *d = arg;
  int levels = 1;
  for (int i = 0; i < n->nchild; i++) {
    const Node *ch = n->child[i];
    if (!d->L->memo[ch->id] && d->levels[ch->id] + 1 > levels) levels = d->levels[ch->id] + 1;
  }
  d->levels[n->id] = levels;
  if (levels >= LOWER_MAX_RECURSION) lower_value(d->L, n);
  return true;
}

bool lower_program(Comp *c, const Program *p, Kernels *k) {
  memset(k, 0, sizeof *k);
  Lower L = {.c = c, .k = k, .nids = c->next_node_id, .batch_invariant = p->batch_invariant};
  L.memo = calloc((size_t)L.nids + 1, sizeof(Value *));
  L.uses = calloc((size_t)L.nids + 1, sizeof(int));
  L.weight_of = calloc((size_t)L.nids + 1, sizeof(Buf *));
  UseCount u = {&L, calloc((size_t)L.nids + 1, sizeof(bool)), false};
  Deep deep = {&L, calloc((size_t)L.nids + 1, sizeof(int))};
  if (!L.memo || !L.uses || !L.weight_of || !u.visited || !deep.levels) ICE("out of memory");
  for (int i = 0; i < p->outputs.n; i++) {
    u.at_root = true;
    ir_walk(p->outputs.node[i], count_uses, NULL, &u);
  }
  int errors = diag_error_count(c);
  k->ninputs = p->inputs.n;
  k->input = ARENA_ARRAY(&c->arena, Buf *, k->ninputs + 1);
  k->input_name = ARENA_ARRAY(&c->arena, const char *, k->ninputs + 1);
  L.input_node = p->inputs.node;
  L.input_order = ir_order_by_name(p->inputs.node, p->inputs.n);
  for (int i = 0; i < p->inputs.n; i++) {
    const Node *s = p->inputs.node[i];
    if (!s->name) diag_error(c, s->loc, "unnamed free symbol %s: inputs need names", shape_str(c, &s->shape));
    k->input[i] = new_buf(&L, BUF_INPUT, p->input_is_index[i] ? DT_I64 : DT_F32, shape_numel(&s->shape), s);
    k->input[i]->index = i;
    k->input_name[i] = s->name ? s->name : "";
  }
  /* patch values (lower_patch gives each the dtype of the value it replaces) */
  k->npatches = p->npatches;
  k->patch = ARENA_ARRAY(&c->arena, Buf *, k->npatches + 1);
  k->patch_name = p->patch_names;
  for (int i = 0; i < p->npatches; i++) {
    const Node *n = p->patch_nodes[i];
    k->patch[i] = new_buf(&L, BUF_INPUT, DT_F32, shape_numel(&n->shape), n);
    k->patch[i]->index = k->ninputs + i;
  }
  k->noutputs = p->outputs.n;
  k->ntaps = p->ntaps;
  k->output = ARENA_ARRAY(&c->arena, Buf *, k->noutputs + 1);
  k->output_name = p->output_names;
  for (int i = 0; i < p->outputs.n && diag_error_count(c) == errors; i++) {
    const Node *n = p->outputs.node[i];
    ir_walk(n, deep_enter, deep_leave, &deep);
    Value *v = lower_value(&L, n);
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
    Step *s = copy_step(&L, n, v, contiguous(b, &n->shape));
    b->def_step = s->id;
  }
  gemm_packed_weights(&L);
  for (int i = 0; i < k->nstep; i++) k->flops += k->step[i]->flops;
  free(L.memo), free(L.uses), free(L.weight_of), ptrmap_free(&L.tensor_reads), free(L.input_order), free(u.visited);
  free(deep.levels);
  return diag_error_count(c) == errors;
}

