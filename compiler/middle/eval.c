/* eval.c — the reference evaluator (rust_circuit_format.md §4), the oracle every
 * optimisation is tested against. Each node's value is a DT_F64 tensor of
 * node->shape, computed once per node pointer (with exact expectations, a
 * node a DiscreteVar reaches: once per combination of rows; see "exact
 * expectations" below). Deliberately naive: row-major
 * odometer loops over output coordinates and double accumulation, so that each
 * kind's code reads like its definition; only Einsum, the bulk of a model's
 * work, is summed pair by pair as batched matrix products (still in double).
 * Assumes nodes come from ir_make (parameters validated, shapes computed);
 * data-dependent problems are diag_errors. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "circc.h"
#include "ptrmap.h"

typedef struct Binding {
  const Node *symbol;
  const Tensor *value;   /* any dtype; converted to double when the Symbol is evaluated */
} Binding;

struct Eval {
  Comp *c;               /* diagnostics */
  Comp *store;           /* owns the values: c, or a combination's scratch Comp (freed with it) */
  PtrMap memo;           /* node → its value (ptr; NULL if evaluating it failed, reported once) */
  Binding *bind;
  int nbind, cap_bind;
  /* exact expectations (eval_expectations) */
  const RvGroups *groups; /* NULL: a DiscreteVar is an error */
  int64_t max_combinations;
  PtrMap deps;           /* root: node → the groups its value depends on (ptr: sorted ints, num: count) */
  PtrMap nested;         /* root: nodes whose nested expectations were evaluated (flag; evaluate_nested) */
  Eval *root;            /* a combination's Eval: the root Eval, which holds every variable-free value */
  const int64_t *row;    /* a combination's Eval: the row of every group */
};

Eval *eval_new(Comp *c) {
  Eval *e = calloc(1, sizeof *e);
  if (!e) ICE("out of memory");
  e->c = e->store = c;
  return e;
}

void eval_expectations(Eval *e, const RvGroups *groups, int64_t max_combinations) {
  CHECK(!e->root && max_combinations > 0);
  e->groups = groups;
  e->max_combinations = max_combinations;
}

void eval_free(Eval *e) {
  if (!e) return;
  ptrmap_free(&e->memo);
  ptrmap_free(&e->deps);
  ptrmap_free(&e->nested);
  free(e->bind);
  free(e);
}

void eval_bind(Eval *e, const Node *symbol, const Tensor *value) {
  CHECK(symbol->kind == NK_Symbol || (symbol->kind == NK_GeneralFunction && symbol->u.gf.fn == GF_PATCH));
  for (int i = 0; i < e->nbind; i++)
    if (e->bind[i].symbol == symbol) {
      e->bind[i].value = value;
      return;
    }
  if (e->nbind == e->cap_bind) {
    e->cap_bind = e->cap_bind ? 2 * e->cap_bind : 8;
    e->bind = realloc(e->bind, sizeof(Binding) * (size_t)e->cap_bind);
    if (!e->bind) ICE("out of memory");
  }
  e->bind[e->nbind++] = (Binding){symbol, value};
}

/* ---- row-major coordinates ---- */

/* Advances coord to the next row-major position of s; false after the last. */
static bool next_coord(const Shape *s, int64_t *coord) {
  for (int i = s->rank - 1; i >= 0; i--) {
    if (++coord[i] < s->dim[i]) return true;
    coord[i] = 0;
  }
  return false;
}

/* Flat offset of coord in a row-major array of shape s. */
static int64_t offset_of(const Shape *s, const int64_t *coord) {
  int64_t off = 0;
  for (int i = 0; i < s->rank; i++) off = off * s->dim[i] + coord[i];
  return off;
}

/* Offset in `in` of the element broadcast (NumPy rules, right-aligned) to
 * position coord of shape out. */
static int64_t broadcast_offset(const Shape *in, const Shape *out, const int64_t *coord) {
  int skip = out->rank - in->rank;
  CHECK(skip >= 0);
  int64_t off = 0;
  for (int i = 0; i < in->rank; i++) {
    CHECK(in->dim[i] == 1 || in->dim[i] == out->dim[skip + i]);
    off = off * in->dim[i] + (in->dim[i] == 1 ? 0 : coord[skip + i]);
  }
  return off;
}

static double *f64(const Tensor *t) {
  CHECK(t->dtype == DT_F64);
  return (double *)t->data;
}

static Tensor *new_value(Eval *e, const Node *n) { return tensor_new(e->store, DT_F64, &n->shape); }

/* Any-dtype tensor → a double tensor of n's shape (exact for ints below 2^53). */
static Tensor *convert(Eval *e, const Node *n, const Tensor *t) {
  CHECK(shape_numel(&t->shape) == shape_numel(&n->shape));
  Tensor *out = new_value(e, n);
  double *o = f64(out);
  for (int64_t i = 0; i < shape_numel(&n->shape); i++) o[i] = tensor_get_f64(t, i);
  return out;
}

/* ---- leaves ---- */

static Tensor *eval_symbol(Eval *e, const Node *n) {
  const char *shape = shape_str(e->c, &n->shape);
  const Binding *b = NULL;
  /* a Symbol is identified by uuid, name and shape (§5.1): the same symbol written
   * twice with different idents is one input */
  for (int i = 0; i < e->nbind && !b; i++) {
    const Node *s = e->bind[i].symbol;
    if (s->kind == NK_Symbol && symbol_same(s, n)) b = &e->bind[i];
  }
  if (!b && n->name) {
    diag_error(e->c, n->loc, "symbol '%s' %s is not bound; pass it with --input %s=@file.npy", n->name, shape,
               n->name);
    return NULL;
  }
  if (!b) {
    diag_error(e->c, n->loc, "unnamed symbol %s (uuid '%s') is not bound; name it to pass it with --input", shape,
               n->u.symbol.uuid);
    return NULL;
  }
  if (!shape_eq(&b->value->shape, &n->shape)) {
    diag_error(e->c, n->loc, "symbol %s has shape %s but its value has shape %s", node_label(e->c, n), shape,
               shape_str(e->c, &b->value->shape));
    return NULL;
  }
  return convert(e, n, b->value);
}

static Tensor *eval_scalar(Eval *e, const Node *n) {
  Tensor *out = new_value(e, n);
  double *o = f64(out);
  for (int64_t i = 0; i < shape_numel(&n->shape); i++) o[i] = n->u.scalar.value;
  return out;
}

/* ---- Add, pow: broadcasting ---- */

static Tensor *eval_add(Eval *e, const Node *n, Tensor **in) {
  Tensor *out = new_value(e, n);
  double *o = f64(out);
  int64_t coord[MAX_RANK] = {0};
  if (shape_numel(&n->shape) == 0) return out;
  do {
    double sum = 0;
    for (int i = 0; i < n->nchild; i++) sum += f64(in[i])[broadcast_offset(&in[i]->shape, &n->shape, coord)];
    o[offset_of(&n->shape, coord)] = sum;
  } while (next_coord(&n->shape, coord));
  return out;
}

static Tensor *eval_pow(Eval *e, const Node *n, Tensor **in) {
  CHECK(n->nchild == 2);
  Tensor *out = new_value(e, n);
  double *o = f64(out);
  int64_t coord[MAX_RANK] = {0};
  if (shape_numel(&n->shape) == 0) return out;
  do {
    double base = f64(in[0])[broadcast_offset(&in[0]->shape, &n->shape, coord)];
    double exponent = f64(in[1])[broadcast_offset(&in[1]->shape, &n->shape, coord)];
    o[offset_of(&n->shape, coord)] = pow(base, exponent);
  } while (next_coord(&n->shape, coord));
  return out;
}

/* ---- Einsum ---- */

/* An operand of the einsum odometer: data and the stride of every id in it
 * (0 for ids it does not have; a repeated id's strides add up, which selects
 * the diagonal). */
typedef struct EinOp {
  const double *p;
  int64_t *stride; /* by id */
} EinOp;

static int64_t *id_strides(int nids, const int *ids, int rank, const int64_t *dim) {
  int64_t *st = calloc((size_t)nids + 1, sizeof(int64_t)), step = 1;
  if (!st) ICE("out of memory");
  for (int p = rank - 1; p >= 0; p--) st[ids[p]] += step, step *= dim[p];
  return st;
}

/* The offsets, by strides st, of every assignment of values to ids[0..n)
 * (the first id slowest): count = the product of their sizes. */
static int64_t *ein_offsets(const int *ids, int n, const int64_t *size, const int64_t *st, int64_t count) {
  int64_t *off = malloc(sizeof(int64_t) * (size_t)(count > 0 ? count : 1));
  if (!off) ICE("out of memory");
  off[0] = 0;
  int64_t len = 1;
  for (int j = 0; j < n; j++) { /* expand in place, from the back */
    int64_t sz = size[ids[j]], stride = st[ids[j]];
    for (int64_t e = len - 1; e >= 0; e--)
      for (int64_t v = sz - 1; v >= 0; v--) off[e * sz + v] = off[e] + v * stride;
    len *= sz;
  }
  return off;
}

/* Two operands as a batched matrix product: every id is a batch id (kept, in
 * both), a row id (kept, first operand only), a column id (kept, second only)
 * or summed (K: in either or both; one without it is constant along it). The
 * operands are copied into dense [batch, rows, K] and [batch, K, cols] arrays
 * (a repeated id's strides add up, so diagonals come out right) and summed in
 * increasing K by a loop that walks the columns with unit stride. */
static void ein_gemm(const EinOp *op, double *out, const int64_t *out_stride, const int *loop, int nloop,
                     const int64_t *size) {
  int *role = malloc(sizeof(int) * (size_t)(4 * nloop + 4)), *aid = role + nloop + 1, *bid = aid + nloop + 1;
  int *cid = bid + nloop + 1, na = 0, nbb = 0, nc = 0;
  if (!role) ICE("out of memory");
  int64_t len[4] = {1, 1, 1, 1}; /* batch, rows, cols, K */
  for (int l = 0; l < nloop; l++) {
    int id = loop[l];
    role[l] = out_stride[id] == 0 ? 3 : op[0].stride[id] && op[1].stride[id] ? 0 : op[0].stride[id] ? 1 : 2;
    len[role[l]] *= size[id];
  }
  static const int A_ORDER[] = {0, 1, 3}, B_ORDER[] = {0, 3, 2}, C_ORDER[] = {0, 1, 2};
  for (int j = 0; j < 3; j++)
    for (int l = 0; l < nloop; l++) {
      if (role[l] == A_ORDER[j]) aid[na++] = loop[l];
      if (role[l] == B_ORDER[j]) bid[nbb++] = loop[l];
      if (role[l] == C_ORDER[j]) cid[nc++] = loop[l];
    }
  const int64_t B = len[0], M = len[1], N = len[2], K = len[3];
  int64_t *ao = ein_offsets(aid, na, size, op[0].stride, B * M * K), *bo = ein_offsets(bid, nbb, size, op[1].stride, B * K * N);
  int64_t *co = ein_offsets(cid, nc, size, out_stride, B * M * N);
  free(role); /* aid, bid and cid live in it */
  double *a = malloc(sizeof(double) * (size_t)(B * M * K + 1)), *b = malloc(sizeof(double) * (size_t)(B * K * N + 1));
  double *c = calloc((size_t)(B * M * N + 1), sizeof(double));
  if (!a || !b || !c) ICE("out of memory");
  for (int64_t e = 0; e < B * M * K; e++) a[e] = op[0].p[ao[e]];
  for (int64_t e = 0; e < B * K * N; e++) b[e] = op[1].p[bo[e]];
  for (int64_t bi = 0; bi < B; bi++)
    for (int64_t m = 0; m < M; m++) {
      double *restrict cr = c + (bi * M + m) * N;
      for (int64_t k = 0; k < K; k++) {
        const double x = a[(bi * M + m) * K + k], *restrict br = b + (bi * K + k) * N;
        for (int64_t j = 0; j < N; j++) cr[j] += x * br[j];
      }
    }
  for (int64_t e = 0; e < B * M * N; e++) out[co[e]] += c[e];
  free(ao), free(bo), free(co), free(a), free(b), free(c);
}

/* For every assignment of values to the ids loop[0..nloop), add the selected
 * element of the operand to the element of `out` its strides select (one
 * operand: two go to ein_gemm): an odometer over all ids but one, and a plain
 * loop over that one, chosen to walk `out` and the operand by unit strides
 * where it can (an output id first, so that the loop is not a reduction). */
static void ein_sum(const EinOp *op, double *out, const int64_t *out_stride, int *loop, int nloop,
                    const int64_t *size) {
  if (nloop == 0) {
    out[0] += op->p[0];
    return;
  }
  int best = nloop - 1, best_score = -1;
  for (int l = 0; l < nloop; l++) {
    int id = loop[l], score = (out_stride[id] != 0) * 8 + (out_stride[id] == 1) * 4 + (op->stride[id] == 1) * 2;
    if (score > best_score) best = l, best_score = score;
  }
  int inner = loop[best];
  for (int l = best; l + 1 < nloop; l++) loop[l] = loop[l + 1];
  loop[--nloop] = inner;
  const int64_t n = size[inner], so = out_stride[inner], sp = op->stride[inner];
  const double *restrict p = op->p;
  double *restrict po = out; /* a fresh buffer: the operand does not alias it */
  int64_t *val = calloc((size_t)nloop + 1, sizeof(int64_t)), off = 0, o = 0;
  if (!val) ICE("out of memory");
  for (;;) {
    for (int64_t v = 0; v < n; v++) po[o + v * so] += p[off + v * sp];
    int l = nloop - 1;
    for (; l >= 0; l--) {
      int id = loop[l];
      off += op->stride[id];
      o += out_stride[id];
      if (++val[l] < size[id]) break;
      off -= op->stride[id] * size[id];
      o -= out_stride[id] * size[id];
      val[l] = 0;
    }
    if (l < 0) break;
  }
  free(val);
}

/* Einsum as the spec defines it: Σ over all ids not in the output of the
 * product of the operands (a repeated operand id selects a diagonal, a
 * repeated output id writes only the diagonal and leaves the rest 0). With
 * more than two operands the sum is taken pairwise, left to right, each step
 * summing out the ids that neither a later operand nor the output has: the
 * same sum associated differently (in double), and the three-operand einsums
 * of a GPT-2 block cost a matrix product each instead of their full product of
 * sizes. Each pair is summed as a batched matrix product (ein_gemm). */
static Tensor *eval_einsum(Eval *e, const Node *n, Tensor **in) {
  const EinsumSpec *s = &n->u.einsum;
  int nids = 0;
  for (int i = 0; i < n->nchild; i++)
    for (int p = 0; p < s->in_rank[i]; p++)
      if (s->in[i][p] >= nids) nids = s->in[i][p] + 1;
  int64_t *size = malloc(sizeof(int64_t) * (size_t)(nids + 1));
  int *loop = malloc(sizeof(int) * (size_t)(nids + 1)), *keep = malloc(sizeof(int) * (size_t)(nids + 1));
  int64_t *keep_dim = malloc(sizeof(int64_t) * (size_t)(nids + 1));
  bool *used = malloc((size_t)nids + 1);
  if (!size || !loop || !keep || !keep_dim || !used) ICE("out of memory");
  for (int id = 0; id < nids; id++) size[id] = -1;
  for (int i = 0; i < n->nchild; i++) {
    CHECK(s->in_rank[i] == in[i]->shape.rank);
    for (int p = 0; p < s->in_rank[i]; p++) {
      int id = s->in[i][p];
      CHECK(size[id] < 0 || size[id] == in[i]->shape.dim[p]);
      size[id] = in[i]->shape.dim[p];
    }
  }
  CHECK(s->out_rank == n->shape.rank);
  for (int q = 0; q < s->out_rank; q++) CHECK(s->out[q] < nids && size[s->out[q]] == n->shape.dim[q]);

  Tensor *out = new_value(e, n);
  if (n->nchild == 0) { /* the empty product */
    f64(out)[0] = 1;
  } else {
    /* acc: the product of operands 0..i-1 with the ids not needed later summed out */
    EinOp acc = {f64(in[0]), id_strides(nids, s->in[0], s->in_rank[0], in[0]->shape.dim)};
    double *owned = NULL;
    memset(used, 0, (size_t)nids + 1);
    for (int p = 0; p < s->in_rank[0]; p++) used[s->in[0][p]] = true;
    for (int i = n->nchild > 1 ? 1 : 0; i < n->nchild; i++) {
      bool last = i == n->nchild - 1;
      EinOp op[2] = {acc, {0}};
      int nops = 1;
      if (i > 0) {
        op[nops++] = (EinOp){f64(in[i]), id_strides(nids, s->in[i], s->in_rank[i], in[i]->shape.dim)};
        for (int p = 0; p < s->in_rank[i]; p++) used[s->in[i][p]] = true;
      }
      int nloop = 0, nkeep = 0;
      for (int id = 0; id < nids; id++)
        if (used[id]) loop[nloop++] = id;
      double *dst;
      int64_t *dst_stride;
      if (last) {
        dst = f64(out);
        dst_stride = id_strides(nids, s->out, s->out_rank, n->shape.dim);
      } else { /* keep the ids the output or a later operand has */
        int64_t numel = 1;
        for (int l = 0; l < nloop; l++) {
          bool need = false;
          for (int q = 0; q < s->out_rank; q++) need |= s->out[q] == loop[l];
          for (int j = i + 1; j < n->nchild; j++)
            for (int p = 0; p < s->in_rank[j]; p++) need |= s->in[j][p] == loop[l];
          if (need) keep[nkeep] = loop[l], keep_dim[nkeep++] = size[loop[l]], numel *= size[loop[l]];
          else used[loop[l]] = false;
        }
        dst = calloc((size_t)(numel > 0 ? numel : 1), sizeof(double));
        if (!dst) ICE("out of memory");
        dst_stride = id_strides(nids, keep, nkeep, keep_dim);
      }
      bool empty = false; /* an id of size 0: nothing to add */
      for (int l = 0; l < nloop; l++) empty |= size[loop[l]] == 0;
      if (!empty && nops == 2) ein_gemm(op, dst, dst_stride, loop, nloop, size);
      else if (!empty) ein_sum(&op[0], dst, dst_stride, loop, nloop, size);
      free(acc.stride), free(owned);
      if (i > 0) free(op[1].stride);
      acc = (EinOp){dst, dst_stride};
      owned = last ? NULL : dst;
    }
    free(acc.stride);
  }
  free(size), free(loop), free(keep), free(keep_dim), free(used);
  return out;
}

/* ---- Rearrange ---- */

/* Output element = input element at the coordinates obtained by splitting each
 * output index into its group's ids (first id most significant) and merging
 * each input group's ids back; ids only in the output (repeats) are ignored. */
static Tensor *eval_rearrange(Eval *e, const Node *n, Tensor **in) {
  const RearrangeSpec *r = &n->u.rearrange;
  const Shape *is = &in[0]->shape;
  CHECK(r->nin == is->rank && r->nout == n->shape.rank);
  for (int k = 0; k < r->nin; k++) {
    int64_t prod = 1;
    for (int j = 0; j < r->in_len[k]; j++) prod *= r->size[r->in_ids[k][j]];
    CHECK(prod == is->dim[k]);
  }
  for (int k = 0; k < r->nout; k++) {
    int64_t prod = 1;
    for (int j = 0; j < r->out_len[k]; j++) prod *= r->size[r->out_ids[k][j]];
    CHECK(prod == n->shape.dim[k]);
  }
  int64_t *val = calloc((size_t)r->nids + 1, sizeof(int64_t));
  if (!val) ICE("out of memory");
  Tensor *out = new_value(e, n);
  double *o = f64(out);
  int64_t coord[MAX_RANK] = {0}, icoord[MAX_RANK];
  if (shape_numel(&n->shape) > 0) do {
    for (int k = 0; k < r->nout; k++) {
      int64_t x = coord[k];
      for (int j = r->out_len[k] - 1; j >= 0; j--) {
        int id = r->out_ids[k][j];
        val[id] = x % r->size[id];
        x /= r->size[id];
      }
    }
    for (int k = 0; k < r->nin; k++) {
      icoord[k] = 0;
      for (int j = 0; j < r->in_len[k]; j++) {
        int id = r->in_ids[k][j];
        icoord[k] = icoord[k] * r->size[id] + val[id];
      }
    }
    o[offset_of(&n->shape, coord)] = f64(in[0])[offset_of(is, icoord)];
  } while (next_coord(&n->shape, coord));
  free(val);
  return out;
}

/* ---- Index, Scatter ---- */

/* Index entry of axis a (missing trailing entries are ':'). */
static const IndexEntry *entry_at(const IndexSpec *s, int a, IndexEntry *full) {
  *full = (IndexEntry){.kind = IDX_SLICE};
  return a < s->n ? &s->e[a] : full;
}

/* Outer indexing: each child axis maps its own output axis (or, for an
 * integer entry, nothing) to child positions through pos[a]. */
static Tensor *eval_index(Eval *e, const Node *n, Tensor **in) {
  const Shape *is = &in[0]->shape;
  int64_t *pos[MAX_RANK];
  int out_axis[MAX_RANK], nout = 0;
  bool ok = true;
  for (int a = 0; a < is->rank; a++) {
    IndexEntry full;
    const IndexEntry *x = entry_at(&n->u.index, a, &full);
    int64_t len = is->dim[a], m; /* m = number of positions the entry selects */
    if (x->kind == IDX_TENSOR) {
      const Tensor *t = x->tensor;
      CHECK(t->shape.rank == 1);
      m = t->shape.dim[0];
      pos[a] = malloc(sizeof(int64_t) * (size_t)(m + 1));
      if (!pos[a]) ICE("out of memory");
      for (int64_t j = 0; j < m; j++) {
        double v = tensor_get_f64(t, j);
        int64_t p = fabs(v) < 0x1p62 ? (int64_t)v : INT64_MAX;
        if (p < 0) p += len; /* negative values wrap, Python-style */
        if (ok && (p < 0 || p >= len)) {
          diag_error(e->c, n->loc, "%s: index tensor %s holds %.17g at position %lld, "
                     "out of range for axis %d of size %lld",
                     node_label(e->c, n), x->prefix ? x->prefix : "", v, (long long)j, a, (long long)len);
          ok = false;
        }
        pos[a][j] = p;
      }
    } else {
      int64_t start, stop;
      CHECK(index_entry_bounds(x, len, &start, &stop));
      m = stop - start;
      pos[a] = malloc(sizeof(int64_t) * (size_t)(m + 1));
      if (!pos[a]) ICE("out of memory");
      for (int64_t j = 0; j < m; j++) pos[a][j] = start + j;
    }
    out_axis[a] = x->kind == IDX_INT ? -1 : nout++;
    if (out_axis[a] >= 0) CHECK(nout <= n->shape.rank && n->shape.dim[out_axis[a]] == m);
  }
  CHECK(nout == n->shape.rank);
  Tensor *out = ok ? new_value(e, n) : NULL;
  int64_t coord[MAX_RANK] = {0}, icoord[MAX_RANK];
  if (out && shape_numel(&n->shape) > 0) do {
    for (int a = 0; a < is->rank; a++) icoord[a] = pos[a][out_axis[a] < 0 ? 0 : coord[out_axis[a]]];
    f64(out)[offset_of(&n->shape, coord)] = f64(in[0])[offset_of(is, icoord)];
  } while (next_coord(&n->shape, coord));
  for (int a = 0; a < is->rank; a++) free(pos[a]);
  return out;
}

/* zeros(shape); out[slices] = child */
static Tensor *eval_scatter(Eval *e, const Node *n, Tensor **in) {
  const Shape *cs = &in[0]->shape;
  int64_t start[MAX_RANK];
  CHECK(cs->rank == n->shape.rank);
  for (int a = 0; a < cs->rank; a++) {
    IndexEntry full;
    const IndexEntry *x = entry_at(&n->u.index, a, &full);
    int64_t stop;
    CHECK(x->kind == IDX_SLICE && index_entry_bounds(x, n->shape.dim[a], &start[a], &stop));
    CHECK(stop - start[a] == cs->dim[a]);
  }
  Tensor *out = new_value(e, n);
  int64_t coord[MAX_RANK] = {0}, ocoord[MAX_RANK];
  if (shape_numel(cs) > 0) do {
    for (int a = 0; a < cs->rank; a++) ocoord[a] = start[a] + coord[a];
    f64(out)[offset_of(&n->shape, ocoord)] = f64(in[0])[offset_of(cs, coord)];
  } while (next_coord(cs, coord));
  return out;
}

/* ---- Concat, identities, Cumulant ---- */

/* Viewing each operand as [outer, len_i, inner] around the axis, the output is
 * [outer, sum len_i, inner] with operand i at offset sum_{k<i} len_k. */
static Tensor *eval_concat(Eval *e, const Node *n, Tensor **in) {
  int axis = n->u.concat.axis;
  CHECK(axis >= 0 && axis < n->shape.rank);
  int64_t outer = 1, inner = 1, at = 0;
  for (int a = 0; a < axis; a++) outer *= n->shape.dim[a];
  for (int a = axis + 1; a < n->shape.rank; a++) inner *= n->shape.dim[a];
  Tensor *out = new_value(e, n);
  for (int i = 0; i < n->nchild; i++) {
    int64_t len = in[i]->shape.dim[axis];
    CHECK(shape_numel(&in[i]->shape) == outer * len * inner);
    for (int64_t o = 0; o < outer; o++)
      for (int64_t k = 0; k < len; k++)
        for (int64_t j = 0; j < inner; j++)
          f64(out)[(o * n->shape.dim[axis] + at + k) * inner + j] = f64(in[i])[(o * len + k) * inner + j];
    at += len;
  }
  CHECK(at == n->shape.dim[axis]);
  return out;
}

static Tensor *copy_value(Eval *e, const Node *n, const Tensor *x) {
  CHECK(shape_eq(&x->shape, &n->shape));
  Tensor *out = new_value(e, n);
  memcpy(out->data, x->data, out->nbytes);
  return out;
}

/* Cumulants of constants: κ() = 1, κ(x) = x, κ(x, y, ...) = 0. */
static Tensor *eval_cumulant(Eval *e, const Node *n, Tensor **in) {
  if (n->nchild == 1) return copy_value(e, n, in[0]);
  Tensor *out = new_value(e, n);
  if (n->nchild == 0) {
    CHECK(n->shape.rank == 0);
    f64(out)[0] = 1.0;
  }
  return out;
}

/* ---- exact expectations (random_variables.md §2.3–2.6) ----
 *
 * With eval_expectations, a Cumulant whose arguments depend on DiscreteVars
 * is the joint cumulant of its arguments under every combination of rows of
 * the groups they use, weighted by the product of the groups' normalised
 * probabilities. Each combination is evaluated by its own Eval: it computes
 * the nodes that depend on a variable (a DiscreteVar is values[row] of its
 * group) into a scratch Comp freed after the combination, and asks the root
 * for everything else — constants and nested Cumulants — which is therefore
 * computed once. The cumulant comes from raw moments (the partition formula),
 * in long double: a different method from the runtime's centred moments, so
 * that the two check each other. */

static Tensor *value(Eval *e, const Node *n);
static void evaluate_nested(Eval *root, const Node *n);

enum { MAX_EXACT_ORDER = 12 }; /* every one of the 2^k argument subsets keeps a moment */

/* A DiscreteVar's group; a Cumulant's none (nested Cumulants are constants):
 * their children are not walked. */
static bool deps_enter(Node *n, void *arg) {
  Eval *e = arg;
  if (ptrmap_find(&e->deps, n)) return false;
  if (n->kind != NK_DiscreteVar && n->kind != NK_Cumulant) return true;
  int *list = ARENA_ARRAY(&e->c->arena, int, 1), nd = 0;
  if (n->kind == NK_DiscreteVar) {
    int g = rv_group_of(e->groups, n);
    if (g < 0) ICE("DiscreteVar %s is in none of the groups given to eval_expectations", node_label(e->c, n));
    list[nd++] = g;
  }
  PtrMapEntry *entry = ptrmap_get(&e->deps, n);
  entry->ptr = list;
  entry->num = nd;
  return false;
}

/* The union of n's children's groups (ir_walk's leave). */
static bool deps_leave(Node *n, void *arg) {
  Eval *e = arg;
  const RvGroups *gs = e->groups;
  bool *use = calloc((size_t)gs->n + 1, 1);
  if (!use) ICE("out of memory");
  for (int i = 0; i < n->nchild; i++) {
    const PtrMapEntry *m = ptrmap_find(&e->deps, n->child[i]);
    const int *cg = m->ptr;
    for (int j = 0; j < m->num; j++) use[cg[j]] = true;
  }
  int nd = 0;
  for (int g = 0; g < gs->n; g++) nd += use[g];
  int *list = ARENA_ARRAY(&e->c->arena, int, nd + 1);
  nd = 0;
  for (int g = 0; g < gs->n; g++)
    if (use[g]) list[nd++] = g;
  free(use);
  PtrMapEntry *entry = ptrmap_get(&e->deps, n);
  entry->ptr = list;
  entry->num = nd;
  return true;
}

/* The groups whose rows n's value depends on (outside nested Cumulants, which
 * are constants), ascending; memoised on the root. */
static const int *deps(Eval *e, const Node *n, int *count) {
  if (e->root) e = e->root;
  ir_walk(n, deps_enter, deps_leave, e);
  const PtrMapEntry *m = ptrmap_find(&e->deps, n);
  *count = m->num;
  return m->ptr;
}

static bool is_random(Eval *e, const Node *n) {
  int nd;
  deps(e, n, &nd);
  return nd > 0;
}

/* A DiscreteVar that makes n random (n random). */
static const Node *random_leaf(Eval *e, const Node *n) {
  while (n->kind != NK_DiscreteVar) {
    int i = 0;
    while (!is_random(e, n->child[i])) i++;
    n = n->child[i];
  }
  return n;
}

/* A top-level value that depends on a variable has no single value. */
static void report_random_output(Eval *e, const Node *n) {
  const Node *var = random_leaf(e, n);
  diag_error(e->c, n->loc, "output %s is random: DiscreteVar %s reaches it outside any Cumulant; wrap it in a "
             "Cumulant for its expectation", node_label(e->c, n), node_label(e->c, var));
  if (var != n) diag_note(e->c, var->loc, "the DiscreteVar %s", node_label(e->c, var));
}

/* values[row] for the row of the variable's group in this combination. */
static Tensor *eval_discrete_var(Eval *e, const Node *n) {
  if (!e->row) {
    diag_error(e->c, n->loc, "%s is a DiscreteVar outside any Cumulant; wrap it in a Cumulant for its expectation",
               node_label(e->c, n));
    return NULL;
  }
  const Tensor *values = value(e->root, n->child[0]);
  if (!values) return NULL;
  int64_t numel = shape_numel(&n->shape), row = e->row[rv_group_of(e->groups, n)];
  Tensor *out = new_value(e, n);
  memcpy(out->data, f64(values) + row * numel, sizeof(double) * (size_t)numel);
  return out;
}

/* "'g1' (6 rows) × group 1 (4 rows)": the groups a Cumulant enumerates. */
static const char *groups_str(Eval *e, const int *group, int ng) {
  const char *s = "";
  for (int j = 0; j < ng; j++) {
    const RvGroup *g = &e->groups->g[group[j]];
    const char *name = g->name ? arena_printf(&e->c->arena, "'%s'", g->name) : arena_printf(&e->c->arena, "group %d", group[j]);
    s = arena_printf(&e->c->arena, "%s%s%s (%lld rows)", s, j ? " x " : "", name, (long long)g->size);
  }
  return s;
}

/* "'g1' row 2, group 1 row 0": one combination. */
static const char *rows_str(Eval *e, const int *group, int ng, const int64_t *row) {
  const char *s = "";
  for (int j = 0; j < ng; j++) {
    const RvGroup *g = &e->groups->g[group[j]];
    s = g->name ? arena_printf(&e->c->arena, "%s%s'%s' row %lld", s, j ? ", " : "", g->name, (long long)row[group[j]])
                : arena_printf(&e->c->arena, "%s%sgroup %d row %lld", s, j ? ", " : "", group[j], (long long)row[group[j]]);
  }
  return s;
}

/* acc[f] += w · Π_a x_{member[a]}[j_a] over every tuple j of the members'
 * elements, f its row-major offset (the first member slowest). */
static void add_moment(long double *acc, int m, const int *member, Tensor *const *x, const int64_t *numel, long double w) {
  int64_t j[MAX_EXACT_ORDER] = {0}, total = 1;
  for (int a = 0; a < m; a++) total *= numel[member[a]];
  for (int64_t f = 0; f < total; f++) {
    long double p = w;
    for (int a = 0; a < m; a++) p *= f64(x[member[a]])[j[a]];
    acc[f] += p;
    for (int a = m - 1; a >= 0 && ++j[a] == numel[member[a]]; a--) j[a] = 0;
  }
}

/* κ(x_1..x_k) = Σ_π (|π|−1)! (−1)^{|π|−1} Π_{B∈π} E[Π_{i∈B} x_i] over the set
 * partitions π of the arguments (restricted growth strings), element-wise
 * over the output: element (j_1..j_k) takes E[Π_{i∈B} x_i[j_i]] from moment[B]. */
static void cumulant_from_moments(int k, long double *const *moment, const int64_t *numel, long double *out, int64_t nout) {
  int block[MAX_EXACT_ORDER] = {0};
  for (;;) {
    int nb = 0;
    unsigned mask[MAX_EXACT_ORDER] = {0};
    for (int i = 0; i < k; i++) {
      mask[block[i]] |= 1u << i;
      if (block[i] + 1 > nb) nb = block[i] + 1;
    }
    long double coef = nb % 2 ? 1 : -1;
    for (int f = 2; f < nb; f++) coef *= f;
    int64_t j[MAX_EXACT_ORDER] = {0};
    for (int64_t o = 0; o < nout; o++) {
      long double term = coef;
      for (int b = 0; b < nb; b++) {
        int64_t off = 0;
        for (int i = 0; i < k; i++)
          if (mask[b] >> i & 1) off = off * numel[i] + j[i];
        term *= moment[mask[b]][off];
      }
      out[o] += term;
      for (int i = k - 1; i >= 0 && ++j[i] == numel[i]; i--) j[i] = 0;
    }
    /* the next restricted growth string: raise the last entry that may grow */
    int i = k - 1;
    for (; i > 0; i--) {
      int prefix_max = 0;
      for (int q = 0; q < i; q++) prefix_max = block[q] > prefix_max ? block[q] : prefix_max;
      if (block[i] <= prefix_max) break;
    }
    if (i == 0) return;
    block[i]++;
    for (int q = i + 1; q < k; q++) block[q] = 0;
  }
}

/* The exact joint cumulant of a Cumulant's arguments over the combinations of
 * rows of `group` (row-major, the first group slowest); e is the root. */
static Tensor *eval_expectation(Eval *e, const Node *n, const int *group, int ng) {
  Comp *c = e->c;
  const RvGroups *gs = e->groups;
  const int k = n->nchild;
  if (k > MAX_EXACT_ORDER) {
    diag_error(c, n->loc, "%s: exact cumulants of order %d are beyond the reference evaluator (at most %d)",
               node_label(c, n), k, (int)MAX_EXACT_ORDER);
    return NULL;
  }
  long double combinations = 1;
  for (int j = 0; j < ng; j++) combinations *= gs->g[group[j]].size;
  if (combinations > e->max_combinations) {
    diag_error(c, n->loc, "%s: its exact expectation enumerates %.0Lf combinations of rows of %s, more than the "
               "limit of %lld (circc eval --max-all N raises it)",
               node_label(c, n), combinations, groups_str(e, group, ng), (long long)e->max_combinations);
    return NULL;
  }
  int64_t numel[MAX_EXACT_ORDER];
  for (int i = 0; i < k; i++) numel[i] = shape_numel(&n->child[i]->shape);
  const unsigned nsub = 1u << k;
  long double **moment = calloc(nsub, sizeof *moment);
  long double *norm = calloc((size_t)ng + 1, sizeof *norm);
  int64_t *row = calloc((size_t)gs->n + 1, sizeof *row);
  Tensor **x = calloc((size_t)k, sizeof *x);
  if (!moment || !norm || !row || !x) ICE("out of memory");
  for (unsigned b = 1; b < nsub; b++) {
    int64_t size = 1;
    for (int i = 0; i < k; i++)
      if (b >> i & 1) size *= numel[i];
    if (!(moment[b] = calloc((size_t)size + 1, sizeof(long double)))) ICE("out of memory");
  }
  for (int j = 0; j < ng; j++)
    for (int64_t r = 0; r < gs->g[group[j]].size; r++) norm[j] += gs->g[group[j]].probs[r];

  evaluate_nested(e, n);
  long double total = 0;
  bool ok = true;
  for (bool more = true; more && ok;) {
    long double w = 1;
    for (int j = 0; j < ng; j++) w *= gs->g[group[j]].probs[row[group[j]]] / norm[j];
    if (w > 0) { /* rows of probability 0 are never drawn (and 0 · inf would be NaN) */
      Comp scratch;
      comp_init(&scratch);
      Eval comb = {.c = c, .store = &scratch, .groups = gs, .root = e, .row = row};
      for (int i = 0; i < k; i++) ok &= (x[i] = value(&comb, n->child[i])) != NULL;
      if (ok) {
        int member[MAX_EXACT_ORDER];
        for (unsigned b = 1; b < nsub; b++) {
          int m = 0;
          for (int i = 0; i < k; i++)
            if (b >> i & 1) member[m++] = i;
          add_moment(moment[b], m, member, x, numel, w);
        }
        total += w;
      } else {
        diag_note(c, n->loc, "while evaluating the arguments of %s for %s", node_label(c, n), rows_str(e, group, ng, row));
      }
      ptrmap_free(&comb.memo);
      comp_free(&scratch);
    }
    int j = ng - 1;
    for (; j >= 0 && ++row[group[j]] == gs->g[group[j]].size; j--) row[group[j]] = 0;
    more = j >= 0;
  }

  Tensor *out = NULL;
  if (ok) { /* moments: sums over the total weight (1 up to rounding), as the programs' --all divides */
    int64_t nout = shape_numel(&n->shape);
    long double *kappa = calloc((size_t)nout + 1, sizeof *kappa);
    if (!kappa) ICE("out of memory");
    for (unsigned b = 1; b < nsub; b++) {
      int64_t size = 1;
      for (int i = 0; i < k; i++)
        if (b >> i & 1) size *= numel[i];
      for (int64_t f = 0; f < size; f++) moment[b][f] /= total;
    }
    cumulant_from_moments(k, moment, numel, kappa, nout);
    out = new_value(e, n);
    for (int64_t o = 0; o < nout; o++) f64(out)[o] = (double)kappa[o];
    free(kappa);
  }
  for (unsigned b = 1; b < nsub; b++) free(moment[b]);
  free(moment), free(norm), free(row), free(x);
  return out;
}

/* A Cumulant with an argument that depends on a variable: enumerate the
 * groups its arguments use. NULL *handled: an ordinary Cumulant. */
static Tensor *eval_random_cumulant(Eval *e, const Node *n, bool *handled) {
  const RvGroups *gs = e->groups;
  bool *use = calloc((size_t)gs->n + 1, 1);
  if (!use) ICE("out of memory");
  for (int i = 0; i < n->nchild; i++) {
    int nc;
    const int *cg = deps(e, n->child[i], &nc);
    for (int j = 0; j < nc; j++) use[cg[j]] = true;
  }
  int *group = calloc((size_t)gs->n + 1, sizeof(int)), ng = 0;
  if (!group) ICE("out of memory");
  for (int g = 0; g < gs->n; g++)
    if (use[g]) group[ng++] = g;
  free(use);
  *handled = ng > 0;
  Tensor *out = ng ? eval_expectation(e, n, group, ng) : NULL;
  free(group);
  return out;
}

/* ---- GeneralFunction ---- */

static double elementwise(GenFnKind f, double x) {
  switch (f) {
  case GF_SIN: return sin(x);
  case GF_COS: return cos(x);
  case GF_SIGMOID: return 1.0 / (1.0 + exp(-x));
  case GF_TANH: return tanh(x);
  case GF_RSQRT: return 1.0 / sqrt(x);
  case GF_GELU: return 0.5 * x * (1.0 + erf(x / sqrt(2.0)));
  case GF_GELU_NEW: return 0.5 * x * (1.0 + tanh(sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x)));
  case GF_RELU: return x < 0 ? 0.0 : x;
  case GF_STEP: return x > 0 ? 1.0 : 0.0;
  case GF_RECIPROCAL: return 1.0 / x;
  case GF_LOG_EXP_P_1: return x < 0 ? log1p(exp(x)) : log1p(exp(-x)) + x; /* never overflows */
  case GF_GAUSSIAN_PDF: return exp(-0.5 * x * x) / sqrt(2.0 * M_PI);
  case GF_GAUSSIAN_CDF: return 0.5 * erfc(-x / sqrt(2.0)); /* = 0.5(1+erf(x/√2)), accurate in the left tail */
  case GF_ABS: return fabs(x);
  case GF_EXP: return exp(x);
  case GF_LOG: return log(x);
  case GF_LOGIT: return log(x / (1.0 - x));
  default: ICE("%s is not elementwise", genfn_name(f));
  }
}

/* softmax / log_softmax over the last axis, max-subtracted. */
static void softmax_rows(GenFnKind f, const double *x, double *o, int64_t rows, int64_t len) {
  for (int64_t r = 0; r < rows; r++) {
    const double *xr = x + r * len;
    double *orow = o + r * len, m = -INFINITY, sum = 0;
    for (int64_t j = 0; j < len; j++) m = fmax(m, xr[j]);
    for (int64_t j = 0; j < len; j++) sum += exp(xr[j] - m);
    for (int64_t j = 0; j < len; j++)
      orow[j] = f == GF_SOFTMAX ? exp(xr[j] - m) / sum : xr[j] - m - log(sum);
  }
}

/* min / max over the last axis; NaN propagates as in torch. */
static void reduce_rows(GenFnKind f, const double *x, double *o, int64_t rows, int64_t len) {
  for (int64_t r = 0; r < rows; r++) {
    double best = x[r * len];
    for (int64_t j = 1; j < len; j++) {
      double v = x[r * len + j];
      if (isnan(v) || (f == GF_MAX ? v > best : v < best)) best = isnan(best) ? best : v;
    }
    o[r] = best;
  }
}

/* v as a float; beyond FLT_MAX + half an ulp the C conversion is undefined, IEEE gives inf. */
static float to_float(double v) {
  return isfinite(v) && fabs(v) >= 0x1.ffffffp127 ? copysign(INFINITY, v) : (float)v;
}

/* Rounds to IEEE binary16, ties to even, via float as torch does. */
static double round_f16(float f) {
  double v = f;
  if (!isfinite(v) || v == 0) return v;
  int e2;
  frexp(v, &e2);
  int lead = e2 - 1 < -14 ? -14 : e2 - 1; /* subnormals share the quantum 2^-24 */
  double q = ldexp(1.0, lead - 10);
  double r = nearbyint(v / q) * q;
  return fabs(r) > 65504 ? copysign(INFINITY, v) : r;
}

static double round_bf16(float f) {
  if (isnan(f)) return f;
  uint32_t bits;
  memcpy(&bits, &f, 4);
  bits = (bits + 0x7fffu + ((bits >> 16) & 1u)) & 0xffff0000u;
  memcpy(&f, &bits, 4);
  return f;
}

/* The value v converted to dtype `to` and back: floats round, integers
 * truncate toward zero and wrap to their width. false if v has no int64 value. */
static bool cast_value(DType to, double v, double *out) {
  int bits = 64;
  switch (to) {
  case DT_UNKNOWN: case DT_F64: *out = v; return true;
  case DT_F32: *out = to_float(v); return true;
  case DT_F16: *out = round_f16(to_float(v)); return true;
  case DT_BF16: *out = round_bf16(to_float(v)); return true;
  case DT_BOOL: *out = v != 0; return true;
  case DT_I64: bits = 64; break;
  case DT_I32: bits = 32; break;
  case DT_I16: bits = 16; break;
  case DT_I8: case DT_U8: bits = 8; break;
  default: ICE("cast to %s", dtype_name(to));
  }
  if (!(v >= -0x1p63 && v < 0x1p63)) return false;
  int64_t i = (int64_t)trunc(v);
  if (bits < 64) { /* two's complement wrap, spelled out (signed narrowing is implementation-defined) */
    uint64_t u = (uint64_t)i & ((1ull << bits) - 1);
    i = to != DT_U8 && (u >> (bits - 1)) ? (int64_t)u - (int64_t)(1ull << bits) : (int64_t)u;
  }
  *out = (double)i;
  return true;
}

static Tensor *eval_cast(Eval *e, const Node *n, const Tensor *x) {
  Tensor *out = new_value(e, n);
  for (int64_t i = 0; i < shape_numel(&n->shape); i++) {
    double v = f64(x)[i];
    if (!cast_value(n->u.gf.cast_to, v, &f64(out)[i])) {
      diag_error(e->c, n->loc, "%s: cannot cast %.17g to %s", node_label(e->c, n), v, dtype_name(n->u.gf.cast_to));
      return NULL;
    }
  }
  return out;
}

/* The index values of a gen_index/explicit_index as positions in an axis of
 * size len: _c requires integral values, others truncate (like .long());
 * negative values wrap. NULL after an error naming the first bad value. */
static int64_t *index_positions(Eval *e, const Node *n, const Tensor *idx, int64_t len) {
  int64_t count = shape_numel(&idx->shape);
  int64_t *pos = malloc(sizeof(int64_t) * (size_t)(count + 1));
  if (!pos) ICE("out of memory");
  for (int64_t i = 0; i < count; i++) {
    double v = f64(idx)[i];
    if (n->u.gf.check_int && v != trunc(v)) {
      diag_error(e->c, n->loc, "%s: GeneralFunction '%s' needs integral index values, got %.17g at position %lld",
                 node_label(e->c, n), n->u.gf.text, v, (long long)i);
      free(pos);
      return NULL;
    }
    int64_t p = fabs(v) < 0x1p62 ? (int64_t)v : INT64_MAX; /* truncates, like .long() */
    if (p < 0) p += len;
    if (p < 0 || p >= len) {
      diag_error(e->c, n->loc, "%s: GeneralFunction '%s': index value %.17g at position %lld "
                 "is out of range for an axis of size %lld",
                 node_label(e->c, n), n->u.gf.text, v, (long long)i, (long long)len);
      free(pos);
      return NULL;
    }
    pos[i] = p;
  }
  return pos;
}

/* out = idx.shape ++ x.shape[nb:d] ++ x.shape[d+1:], where idx's leading nb
 * dims are x's batch dims: out[i..., r...] = x[i[:nb]..., r with idx[i...] at d].
 * This is explicit_index, gen_index with batch_x+batch_index (nb = idx.ndim)
 * and the default embedding lookup (nb = 0). d is absolute in x. */
static Tensor *pick(Eval *e, const Node *n, const Tensor *x, const Tensor *idx, int nb, int d) {
  const Shape *xs = &x->shape, *is = &idx->shape;
  CHECK(nb >= 0 && nb <= is->rank && nb <= d && d < xs->rank);
  CHECK(n->shape.rank == is->rank + xs->rank - nb - 1);
  for (int a = 0; a < nb; a++) CHECK(xs->dim[a] == is->dim[a]);
  int64_t *pos = index_positions(e, n, idx, xs->dim[d]);
  if (!pos) return NULL;
  Tensor *out = new_value(e, n);
  int64_t coord[MAX_RANK] = {0}, xc[MAX_RANK];
  if (shape_numel(&n->shape) > 0) do {
    for (int a = 0; a < nb; a++) xc[a] = coord[a];
    for (int a = nb; a < d; a++) xc[a] = coord[is->rank + a - nb];
    xc[d] = pos[offset_of(is, coord)];
    for (int a = d + 1; a < xs->rank; a++) xc[a] = coord[is->rank + a - nb - 1];
    f64(out)[offset_of(&n->shape, coord)] = f64(x)[offset_of(xs, xc)];
  } while (next_coord(&n->shape, coord));
  free(pos);
  return out;
}

/* NumPy take along axis d: out = x.shape[:d] ++ idx.shape ++ x.shape[d+1:]. */
static Tensor *take(Eval *e, const Node *n, const Tensor *x, const Tensor *idx, int d) {
  const Shape *xs = &x->shape, *is = &idx->shape;
  CHECK(d >= 0 && d < xs->rank && n->shape.rank == xs->rank - 1 + is->rank);
  int64_t *pos = index_positions(e, n, idx, xs->dim[d]);
  if (!pos) return NULL;
  Tensor *out = new_value(e, n);
  int64_t coord[MAX_RANK] = {0}, xc[MAX_RANK];
  if (shape_numel(&n->shape) > 0) do {
    for (int a = 0; a < d; a++) xc[a] = coord[a];
    xc[d] = pos[offset_of(is, coord + d)];
    for (int a = d + 1; a < xs->rank; a++) xc[a] = coord[a + is->rank - 1];
    f64(out)[offset_of(&n->shape, coord)] = f64(x)[offset_of(xs, xc)];
  } while (next_coord(&n->shape, coord));
  free(pos);
  return out;
}

/* ---- --ops functions: the float function the program calls, on the values
 * rounded to float (so eval checks the user's code itself, and the program
 * agrees with it up to the program's own float arithmetic elsewhere) */

static float *to_floats(const Tensor *t) {
  int64_t len = shape_numel(&t->shape);
  float *v = malloc(sizeof(float) * (size_t)(len ? len : 1));
  if (!v) ICE("out of memory");
  for (int64_t i = 0; i < len; i++) v[i] = (float)f64(t)[i];
  return v;
}

static Tensor *eval_user_op(Eval *e, const Node *n, Tensor **in) {
  const UserOp *op = n->u.gf.user;
  if (!op) {
    user_op_missing(e->c, n);
    return NULL;
  }
  UserOpFn fn = ops_function(e->c, op);
  if (!fn) return NULL;
  Tensor *out = new_value(e, n);
  double *o = f64(out);
  int64_t numel = shape_numel(&n->shape);
  switch (op->form) {
  case OP_UNARY: {
    float (*f)(float) = (float (*)(float))fn;
    for (int64_t i = 0; i < numel; i++) o[i] = f((float)f64(in[0])[i]);
    return out;
  }
  case OP_BINARY: {
    float (*f)(float, float) = (float (*)(float, float))fn;
    int64_t coord[MAX_RANK] = {0};
    if (numel == 0) return out;
    do {
      float x = (float)f64(in[0])[broadcast_offset(&in[0]->shape, &n->shape, coord)];
      float y = (float)f64(in[1])[broadcast_offset(&in[1]->shape, &n->shape, coord)];
      o[offset_of(&n->shape, coord)] = f(x, y);
    } while (next_coord(&n->shape, coord));
    return out;
  }
  case OP_ROW: {
    void (*f)(const float *, float *, int64_t) = (void (*)(const float *, float *, int64_t))fn;
    int64_t len = n->shape.dim[n->shape.rank - 1];
    float *x = to_floats(in[0]), *y = calloc((size_t)(numel ? numel : 1), sizeof(float));
    if (!y) ICE("out of memory");
    for (int64_t r = 0; len > 0 && r < numel / len; r++) f(x + r * len, y + r * len, len);
    for (int64_t i = 0; i < numel; i++) o[i] = y[i];
    free(x), free(y);
    return out;
  }
  case OP_GENERAL: {
    void (*f)(const float *const *, const int64_t *const *, int, float *) =
        (void (*)(const float *const *, const int64_t *const *, int, float *))fn;
    int nin = n->nchild;
    float **x = calloc((size_t)nin, sizeof *x);
    int64_t **shape = calloc((size_t)nin, sizeof *shape);
    float *y = calloc((size_t)(numel ? numel : 1), sizeof(float));
    if (!x || !shape || !y) ICE("out of memory");
    for (int i = 0; i < nin; i++) {
      x[i] = to_floats(in[i]);
      shape[i] = malloc(sizeof(int64_t) * (size_t)(in[i]->shape.rank + 1));
      if (!shape[i]) ICE("out of memory");
      shape[i][0] = in[i]->shape.rank;
      memcpy(shape[i] + 1, in[i]->shape.dim, sizeof(int64_t) * (size_t)in[i]->shape.rank);
    }
    f((const float *const *)x, (const int64_t *const *)shape, nin, y);
    for (int64_t i = 0; i < numel; i++) o[i] = y[i];
    for (int i = 0; i < nin; i++) free(x[i]), free(shape[i]);
    free(x), free(shape), free(y);
    return out;
  }
  }
  ICE("unhandled --ops form %d", (int)op->form);
}

static Tensor *eval_general_function(Eval *e, const Node *n, Tensor **in) {
  const GenFnSpec *g = &n->u.gf;
  switch (genfn_class(g->fn)) {
  case GF_ELEMENTWISE: {
    CHECK(shape_eq(&in[0]->shape, &n->shape));
    Tensor *out = new_value(e, n);
    for (int64_t i = 0; i < shape_numel(&n->shape); i++) f64(out)[i] = elementwise(g->fn, f64(in[0])[i]);
    return out;
  }
  case GF_LAST_AXIS: {
    CHECK(shape_eq(&in[0]->shape, &n->shape) && n->shape.rank >= 1);
    int64_t len = n->shape.dim[n->shape.rank - 1];
    Tensor *out = new_value(e, n);
    if (len > 0) softmax_rows(g->fn, f64(in[0]), f64(out), shape_numel(&n->shape) / len, len);
    return out;
  }
  case GF_REDUCE_LAST: {
    const Shape *xs = &in[0]->shape;
    CHECK(xs->rank == n->shape.rank + 1);
    int64_t len = xs->dim[xs->rank - 1], rows = shape_numel(&n->shape);
    Tensor *out = new_value(e, n);
    if (g->fn == GF_LAST_DIM_SIZE) {
      for (int64_t r = 0; r < rows; r++) f64(out)[r] = (double)len;
    } else if (len == 0 && rows > 0) {
      diag_error(e->c, n->loc, "%s: %s over an empty last axis", node_label(e->c, n), genfn_name(g->fn));
      return NULL;
    } else {
      reduce_rows(g->fn, f64(in[0]), f64(out), rows, len);
    }
    return out;
  }
  case GF_SPECIAL:
    break;
  }
  switch (g->fn) {
  case GF_POW: return eval_pow(e, n, in);
  case GF_CAST: return eval_cast(e, n, in[0]);
  case GF_GEN_INDEX: {
    int xr = in[0]->shape.rank, ir = in[1]->shape.rank;
    if (g->batch_x && g->batch_index) /* idx is a prefix of x; d counts in the suffix */
      return pick(e, n, in[0], in[1], ir, (g->dim < 0 ? g->dim + xr - ir : g->dim) + ir);
    int d = g->dim < 0 ? g->dim + xr : g->dim;
    return g->batch_index ? pick(e, n, in[0], in[1], 0, d) : take(e, n, in[0], in[1], d);
  }
  case GF_EXPLICIT_INDEX: {
    int nb = in[0]->shape.rank - g->non_b;
    return pick(e, n, in[0], in[1], nb, (g->dim < 0 ? g->dim + g->non_b : g->dim) + nb);
  }
  case GF_PATCH: /* the bound value, or the node's own */
    for (int i = 0; i < e->nbind; i++)
      if (e->bind[i].symbol == n) {
        if (shape_eq(&e->bind[i].value->shape, &n->shape)) return convert(e, n, e->bind[i].value);
        diag_error(e->c, n->loc, "--patch %s: the value has shape %s but the node has shape %s", node_label(e->c, n),
                   shape_str(e->c, &e->bind[i].value->shape), shape_str(e->c, &n->shape));
        return NULL;
      }
    return convert(e, n, in[0]);
  case GF_MULTINOMIAL:
    diag_error(e->c, n->loc, "%s: GeneralFunction '%s' cannot be evaluated by circc (it samples at random)",
               node_label(e->c, n), g->text);
    return NULL;
  case GF_USER: return eval_user_op(e, n, in);
  default: ICE("unhandled GeneralFunction %s", genfn_name(g->fn));
  }
}

/* ---- dispatch ---- */

/* Why n's kind has no value of its own, or NULL. */
static const char *no_value(const Node *n) {
  switch (n->kind) {
  case NK_Module: return "is a Module; substitute modules first";
  case NK_DiscreteVar: return "is a DiscreteVar, which has no single value; circc eval --all computes exact expectations";
  case NK_StoredCumulantVar: return "is a StoredCumulantVar, which has no deterministic value";
  case NK_Conv: return "is a Conv, which circc does not support";
  default: return NULL;
  }
}

/* Kinds that have no value of their own; reported without evaluating children. */
static bool reject(Eval *e, const Node *n) {
  const char *why = no_value(n);
  if (why) diag_error(e->c, n->loc, "%s %s", node_label(e->c, n), why);
  return why != NULL;
}

enum { EVAL_MAX_SHIFT = 40 };
#define EVAL_MAX_BYTES ((int64_t)1 << EVAL_MAX_SHIFT)

/* evaluate_nested walks where evaluation does (not into a DiscreteVar's
 * rows, a kind without a value or a value past the limit), each node once per root. */
static bool nested_enter(Node *m, void *arg) {
  Eval *root = arg;
  PtrMapEntry *r = ptrmap_get(&root->nested, m);
  if (r->flag) return false;
  r->flag = true;
  return m->kind != NK_DiscreteVar && !no_value(m) && shape_numel(&m->shape) <= EVAL_MAX_BYTES / 8;
}

/* An estimated Cumulant (one with an argument that depends on a variable), innermost first. */
static bool nested_leave(Node *m, void *arg) {
  Eval *root = arg;
  if (m->kind != NK_Cumulant || ptrmap_find(&root->memo, m)) return true;
  for (int i = 0; i < m->nchild; i++)
    if (is_random(root, m->child[i])) {
      value(root, m);
      break;
    }
  return true;
}

/* The expectations nested in the arguments of n (being evaluated in the
 * root), innermost first, before n enumerates its combinations: then no
 * expectation recurses into another once per level of nesting. */
static void evaluate_nested(Eval *root, const Node *n) {
  for (int i = 0; i < n->nchild; i++) ir_walk(n->child[i], nested_enter, nested_leave, root);
}

/* What compute does before n's children, which it then need not walk: a
 * variable or an expectation, a rejected kind or size, a leaf. false: n's value
 * is computed from its children's (compute). */
static bool computed_whole(Eval *e, const Node *n, Tensor **v) {
  if (e->groups && n->kind == NK_DiscreteVar) {
    *v = eval_discrete_var(e, n);
    return true;
  }
  if (e->groups && n->kind == NK_Cumulant) {
    bool random;
    *v = eval_random_cumulant(e, n, &random);
    if (random) return true;
  }
  *v = NULL;
  if (reject(e, n)) return true;
  /* values are doubles, every one materialised: the same per-tensor limit as programs */
  if (shape_numel(&n->shape) > EVAL_MAX_BYTES / 8) {
    diag_error(e->c, n->loc, "%s: its value needs %lld doubles, more than circc eval's limit of 2^40 bytes per tensor",
               node_label(e->c, n), (long long)shape_numel(&n->shape));
    return true;
  }
  switch (n->kind) {
  case NK_Array:
    CHECK(n->u.array.tensor && shape_eq(&n->u.array.tensor->shape, &n->shape));
    *v = convert(e, n, n->u.array.tensor);
    return true;
  case NK_Scalar: *v = eval_scalar(e, n); return true;
  case NK_Symbol: *v = eval_symbol(e, n); return true;
  default: return false;
  }
}

/* n's value from its children's, which are evaluated (memoised, NULL after an error). */
static Tensor *compute(Eval *e, const Node *n) {
  /* evaluate every child even after a failure, so one run reports every error */
  Tensor **in = calloc((size_t)n->nchild + 1, sizeof *in);
  if (!in) ICE("out of memory");
  bool ok = true;
  for (int i = 0; i < n->nchild; i++) ok &= (in[i] = value(e, n->child[i])) != NULL;
  Tensor *out = NULL;
  if (ok) switch (n->kind) {
    case NK_Add: out = eval_add(e, n, in); break;
    case NK_Einsum: out = eval_einsum(e, n, in); break;
    case NK_Rearrange: out = eval_rearrange(e, n, in); break;
    case NK_Index: out = eval_index(e, n, in); break;
    case NK_Scatter: out = eval_scatter(e, n, in); break;
    case NK_Concat: out = eval_concat(e, n, in); break;
    case NK_GeneralFunction: out = eval_general_function(e, n, in); break;
    case NK_Tag: out = copy_value(e, n, in[0]); break;
    case NK_Cumulant: out = eval_cumulant(e, n, in); break;
    case NK_SetSymbolicShape:
      if (shape_eq(&in[0]->shape, &n->shape)) {
        out = copy_value(e, n, in[0]);
      } else {
        diag_error(e->c, n->loc, "%s: SetSymbolicShape %s does not match its child's shape %s; "
                   "resolve symbolic sizes first",
                   node_label(e->c, n), shape_str(e->c, &n->shape), shape_str(e->c, &in[0]->shape));
      }
      break;
    default: ICE("eval of %s", kind_name(n->kind));
    }
  free(in);
  return out;
}

static void memoise(Eval *e, const Node *n, Tensor *v) {
  CHECK(!v || (v->dtype == DT_F64 && shape_eq(&v->shape, &n->shape)));
  ptrmap_get(&e->memo, n)->ptr = v;
}

/* A combination's Eval leaves what no variable reaches to the root (a walk of
 * its own there); the rest is walked unless memoised or computed whole. */
static bool value_enter(Node *n, void *arg) {
  Eval *e = arg;
  if (e->root && !is_random(e->root, n)) {
    value(e->root, n);
    return false;
  }
  if (ptrmap_find(&e->memo, n)) return false;
  Tensor *v;
  if (!computed_whole(e, n, &v)) return true;
  memoise(e, n, v);
  return false;
}

static bool value_leave(Node *n, void *arg) {
  Eval *e = arg;
  memoise(e, n, compute(e, n));
  return true;
}

/* n's value in e; a combination's Eval leaves what no variable reaches to the root. */
static Tensor *value(Eval *e, const Node *n) {
  if (e->root && !is_random(e->root, n)) return value(e->root, n);
  ir_walk(n, value_enter, value_leave, e);
  return ptrmap_find(&e->memo, n)->ptr;
}

Tensor *eval_node(Eval *e, const Node *n) {
  CHECK(!e->root);
  if (e->groups && !ptrmap_find(&e->memo, n) && is_random(e, n)) {
    report_random_output(e, n);
    ptrmap_get(&e->memo, n)->ptr = NULL;
    return NULL;
  }
  return value(e, n);
}
