/* lower_gemm.c — binary contractions as GEMMs: the layouts that let a
 * contraction run as one GEMM (chosen before its step is built, by copying or
 * permuting an operand), the classification of a contraction step as a
 * batched GEMM with loop dims [batch..., M, N, K], the column mask a one-row
 * GEMM may take from its consumer, and weights stored as the GEMM reads them
 * (gemm_packed_weights, at the end). Where values live changes, the
 * arithmetic does not — except with --precision bf16 or int8, where the GEMMs
 * whose B is a weight read it rounded to bf16 or quantised to int8. */
#include <math.h>
#include <string.h>
#include "lower_internal.h"
#define CIRCC_GEMM_BF16_LAYOUT_ONLY
#include "../../templates/gemm_bf16.h"
#define CIRCC_GEMM_F32_LAYOUT_ONLY
#include "../../templates/gemm_f32.h"
#define CIRCC_GEMM_INT8_LAYOUT_ONLY
#include "../../templates/gemm_int8.h"

/* --------------------------------------------------- GEMM classification */

/* Merges loop dims ids[0..n) (ordered outer to inner) into one dim of every
 * view in v[0..nv): possible when each view's strides compose row-major. */
static bool mergeable(const Step *s, const int *ids, int n, View *const *v, int nv) {
  for (int j = 0; j + 1 < n; j++)
    for (int q = 0; q < nv; q++)
      if (v[q]->stride[ids[j]] != v[q]->stride[ids[j + 1]] * s->dim[ids[j + 1]]) return false;
  return true;
}

/* A binary contraction whose ids are batch (in both operands and the output),
 * M (first operand and output), N (second operand and output) and K (both
 * operands, summed) is a batched GEMM: turn the step into STEP_GEMM with loop
 * dims [batch..., M, N, K], merging several M (N, K) ids into one when their
 * strides allow and treating unmergeable M/N ids as batch. Ids of size 1 are
 * dropped; an id summed in one operand only keeps the loop nest. Small
 * contractions stay loops, unless the choice must not depend on sizes
 * (batch_invariant: the GEMM template's sums do not depend on M or N, the
 * loops' and the one-row kernel's differ from them). */
void classify_gemm(Step *s, bool batch_invariant) {
  View *A = &s->u.contract.op[0], *B = &s->u.contract.op[1], *C = &s->out;
  if (s->u.contract.nops != 2 || A->buf->dtype != DT_F32 || B->buf->dtype != DT_F32) return;
  int batch[MAX_RANK * 2], m[MAX_RANK * 2], nn[MAX_RANK * 2], k[MAX_RANK * 2], nb = 0, nm = 0, nN = 0, nk = 0;
  for (int t = 0; t < s->ndim; t++) {
    if (s->dim[t] == 1) continue;
    bool a = A->stride[t] != 0, b = B->stride[t] != 0;
    if (t < s->u.contract.nout) {
      if (a && b) batch[nb++] = t;
      else if (a) m[nm++] = t;
      else if (b) nn[nN++] = t;
      else batch[nb++] = t; /* a repeat of both operands: a batch loop reading the same data */
    } else {
      if (!(a && b)) return;
      k[nk++] = t;
    }
  }
  if (nk == 0 || (s->flops < 8192 && !batch_invariant)) return;
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
  /* rebuild the step as a GEMM with loop dims [batch..., M, N, K] */
  Step g = *s;
  g.kind = STEP_GEMM;
  memset(&g.u, 0, sizeof g.u);
  g.u.gemm.nbatch = nb;
  g.u.gemm.no_gemv = batch_invariant;
  g.u.gemm.a = *A;
  g.u.gemm.b = *B;
  g.ndim = nb + 3;
  View *gv[3] = {&g.u.gemm.a, &g.u.gemm.b, &g.out};
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

/* Does anything besides one consumer read tensor t? */
static bool tensor_shared(const Lower *L, const Tensor *t) {
  const PtrMapEntry *e = ptrmap_find(&L->tensor_reads, t);
  return !e || e->num > 1;
}

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
  s->u.elementwise.expr = expr_load(L, src);
  out.buf->def_step = s->id;
  return out;
}

/* Rearranges ops[0..1] of binary einsum n for GEMM (see above) and returns
 * the output layout as an axis order in out_axes; false: leave everything. */
bool gemm_layouts(Lower *L, const Node *n, View ops[2], int *out_axes) {
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

/* --------------------------------------------- one-row GEMM column masks */

/* A product (n) of a one-row GEMM's result that nothing else reads and a
 * vector along that GEMM's columns (a run-time mask such as a decode step's
 * kv_mask) lets the GEMM skip the columns where the vector is 0: it writes 0
 * there, and this product is 0 there as it is for every finite value the GEMM
 * would have computed. Only a vector over the one id that forms the GEMM's N,
 * computed before the GEMM runs. */
void gemv_column_mask(Lower *L, const Node *n) {
  const EinsumSpec *e = &n->u.einsum;
  for (int i = 0; i < n->nchild; i++) {
    const Value *gv = lower_value(L, n->child[i]);
    Buf *cb = gv->lazy ? NULL : gv->view.buf;
    if (!cb || cb->def_step < 0 || L->uses[n->child[i]->id] != 1) continue;
    Step *g = L->k->step[cb->def_step];
    if (!step_is_gemv(g) || g->u.gemm.mask.buf || g->node != n->child[i]) continue;
    int nb = g->u.gemm.nbatch;
    for (int j = 0; j < n->nchild; j++) {
      const Value *mv = lower_value(L, n->child[j]);
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
      g->u.gemm.mask = m;
      return;
    }
  }
}

/* ----------------------------------------------- --precision bf16, int8 */

/* GEMM s as C^T = B^T A^T: M and N trade places in the loop dims and every
 * view (A's new N stride and B's new M stride are 0). */
static void swap_operands(Step *s) {
  int nb = s->u.gemm.nbatch;
  View a = s->u.gemm.a, b = s->u.gemm.b;
  s->u.gemm.a = b, s->u.gemm.b = a;
  View *v[3] = {&s->u.gemm.a, &s->u.gemm.b, &s->out};
  for (int q = 0; q < 3; q++) {
    int64_t st = v[q]->stride[nb], d = v[q]->dim[nb];
    v[q]->stride[nb] = v[q]->stride[nb + 1], v[q]->dim[nb] = v[q]->dim[nb + 1];
    v[q]->stride[nb + 1] = st, v[q]->dim[nb + 1] = d;
  }
  int64_t d = s->dim[nb];
  s->dim[nb] = s->dim[nb + 1], s->dim[nb + 1] = d;
}

/* --precision int8: can every value of weight view v (over the GEMM's loop
 * dims) be quantised with fp16 scales? (finite, and max|w| / 127 within fp16;
 * circc_int8_quantize refuses the rest.) The first value that cannot, in *bad. */
static bool int8_representable(const View *v, const Tensor *t, double *bad) {
  int nb = v->rank - 3;
  int64_t N = v->dim[nb + 1], K = v->dim[nb + 2], count = N * K;
  for (int d = 0; d < nb; d++)
    if (v->stride[d] != 0) count *= v->dim[d];
  const float *f32 = t->dtype == DT_F32 ? t->data : NULL;
  for (int64_t e = 0; e < count; e++) {
    int64_t at = v->offset, r = e;
    at += r % K * v->stride[nb + 2], r /= K;
    at += r % N * v->stride[nb + 1], r /= N;
    for (int d = nb - 1; d >= 0; d--)
      if (v->stride[d] != 0) at += r % v->dim[d] * v->stride[d], r /= v->dim[d];
    double x = f32 ? (double)f32[at] : tensor_get_f64(t, at);
    if (!(fabs(x) < 65520.0 * 127.0)) {
      *bad = x;
      return false;
    }
  }
  return true;
}

/* Do GEMM B views a and b read the same matrices (dims along which a view
 * does not move, such as M, may differ)? Then one packed copy serves both. */
static bool same_matrices(const View *a, const View *b) {
  if (a->buf != b->buf || a->offset != b->offset || a->rank != b->rank) return false;
  for (int t = 0; t < a->rank; t++)
    if (a->stride[t] != b->stride[t] || (a->stride[t] != 0 && a->dim[t] != b->dim[t])) return false;
  return true;
}

/* Every GEMM step whose B is an fp32 weight reads a copy of it that the blob
 * holds in its template's layout (Packing; emit.c writes it): in fp32
 * programs the same values pre-packed into templates/gemm_f32.h's panels, so
 * the packed path reads B in order instead of packing it from strided rows or
 * columns as it runs (same sums, so the same bits; decode's matrix-vector
 * steps keep their weights stored by columns for circc_gemv_f32); with
 * --precision bf16 rounded to bf16 (templates/gemm_bf16.h, which rounds A as
 * it packs it); with --precision int8 quantised to int8 with one fp16 scale
 * per 32 k (templates/gemm_int8.h; A stays fp32). GEMMs reading the same
 * matrices share one copy. The plain buffer stays only if another step reads
 * it (GPT-2's tied wte: the embedding gather reads fp32 rows, exact and few,
 * while the unembedding GEMM streams the packed copy); memplan leaves a
 * weight nobody reads out of the blob. In bf16 and int8, a GEMM whose weight
 * is A (and B is not a weight: w x with one column) is turned around first,
 * C^T = B^T A^T (no epilogue is fused yet: this runs at the end of lowering). */
void gemm_packed_weights(Lower *L) {
  Precision p = L->c->precision;
  Packing want = p == PRECISION_BF16 ? PACK_BF16 : p == PRECISION_INT8 ? PACK_INT8 : PACK_F32;
  Kernels *k = L->k;
  for (int i = 0; i < k->nstep; i++) {
    Step *s = k->step[i];
    if (s->kind != STEP_GEMM || (want == PACK_F32 && step_is_gemv(s))) continue;
    int nb = s->u.gemm.nbatch;
    const Buf *a = s->u.gemm.a.buf;
    if (want != PACK_F32 && a->kind == BUF_WEIGHT && a->dtype == DT_F32 && s->u.gemm.b.buf->kind != BUF_WEIGHT &&
        s->dim[nb] > 0 && s->dim[nb + 2] > 0)
      swap_operands(s);
    View *B = &s->u.gemm.b;
    int64_t N = s->dim[nb + 1], K = s->dim[nb + 2];
    if (B->buf->kind != BUF_WEIGHT || B->buf->dtype != DT_F32 || B->buf->packing != PACK_NONE || N <= 0 || K <= 0)
      continue;
    View packed = {.rank = B->rank};
    memcpy(packed.dim, B->dim, sizeof packed.dim);
    int64_t count = want == PACK_F32    ? circc_gemm_packed_b_floats(N, K)
                    : want == PACK_BF16 ? circc_bf16_np(N) * circc_bf16_kp(K) / 2 /* 4-byte words */
                                        : circc_int8_bytes(N, K) / 4;
    for (int t = nb - 1; t >= 0; t--)
      if (B->stride[t] != 0 && B->dim[t] != 1) packed.stride[t] = count, count *= B->dim[t];
    Buf *copy = NULL;
    for (int j = 0; j < k->nbuf && !copy; j++) {
      const Buf *o = k->buf[j];
      if (o->packing == want && same_matrices(o->packed_of, B)) copy = k->buf[j];
    }
    if (!copy) {
      double bad;
      if (want == PACK_INT8 && !int8_representable(B, B->buf->tensor, &bad)) {
        const Node *n = B->buf->node;
        diag_error(L->c, n ? n->loc : NO_LOC,
                   "--precision int8: weight %s holds %g; int8 with fp16 scales needs finite values below "
                   "8321040 (65520 * 127) in magnitude (use --precision fp32 or bf16)",
                   n ? node_label(L->c, n) : "(unnamed)", bad);
        return;
      }
      View *src = ARENA_NEW(&L->c->arena, View);
      *src = *B;
      copy = new_buf(L, BUF_WEIGHT, DT_F32, count, B->buf->node);
      copy->tensor = B->buf->tensor;
      copy->packing = want;
      copy->packed_of = src;
    }
    packed.buf = copy;
    *B = packed;
    s->u.gemm.packing = want;
    s->u.gemm.mask = (View){0}; /* the column mask is the fp32 GEMV's (it only skips work) */
  }
}

/* Rows circc_gemm_bf16b_rows takes (templates/gemm_f32.h's CIRCC_GEMM_SR). */
#define BF16B_MAX_ROWS 4

/* Can GEMM step s read its B as bf16 (templates/gemv_bf16.h)? The one-row
 * kernel (step_is_gemv), or at most BF16B_MAX_ROWS rows with unit-stride B
 * rows (the fp32 template's streaming path); B is not also A. */
static bool bf16b_gemm(const Step *s) {
  if (s->kind != STEP_GEMM || s->u.gemm.packing != PACK_NONE || s->u.gemm.a.buf == s->u.gemm.b.buf) return false;
  int nb = s->u.gemm.nbatch;
  return step_is_gemv(s) || (s->dim[nb] <= BF16B_MAX_ROWS && s->u.gemm.b.stride[nb + 1] == 1);
}

typedef struct InputUse {
  const Kernels *k;
  const Step *s;
  bool *other;  /* by input index: read by something else than a bf16b_gemm's B */
  bool *as_b;   /* by input index: read as such a B */
} InputUse;

static void note_input_read(const View *v, void *arg) {
  InputUse *u = arg;
  const Buf *b = v->buf;
  if (b->kind != BUF_INPUT || b->index >= u->k->ninputs) return;
  if (v == &u->s->u.gemm.b && bf16b_gemm(u->s)) u->as_b[b->index] = true;
  else u->other[b->index] = true;
}

/* A decode program's key/value cache is read only as the B of its past-score
 * GEMVs and its probabilities-times-values GEMMs: stored as bf16 it is half
 * the bytes a run reads, as the weights are under these precisions. The
 * kernels convert bf16 to fp32 exactly and sum as the fp32 ones do, so the
 * program computes what the fp32 program would on the rounded values. */
void lower_bf16_inputs(Comp *c, Kernels *k) {
  if (c->precision == PRECISION_FP32 || k->ninputs == 0) return;
  InputUse u = {k, NULL, ARENA_ARRAY(&c->arena, bool, k->ninputs), ARENA_ARRAY(&c->arena, bool, k->ninputs)};
  for (int i = 0; i < k->ninputs; i++) u.other[i] = u.as_b[i] = false;
  for (int i = 0; i < k->nstep; i++) {
    u.s = k->step[i];
    step_each_read(u.s, note_input_read, &u);
  }
  for (int i = 0; i < k->ninputs; i++) {
    Buf *b = k->input[i];
    if (b->dtype == DT_F32 && b->numel > 0 && u.as_b[i] && !u.other[i]) b->stored_bf16 = true;
  }
}
