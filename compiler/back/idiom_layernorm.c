/* idiom_layernorm.c — recognises the layernorm of rust_circuit_format.md
 * §7.2 (with its optional scale and bias) in the form simplify and
 * plan_einsum leave it, and lowers it to one STEP_LAYERNORM row step; every
 * other node is left to the ordinary lowering. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "lower_internal.h"

typedef struct ConstProduct {
  double local[32], *value; /* the values of the walked nodes whose parent is not done yet */
  int top, cap;
  bool ok;
} ConstProduct;

static void const_push(ConstProduct *p, double v) {
  if (p->top == p->cap) {
    double *grown = malloc(sizeof(double) * (size_t)p->cap * 2);
    if (!grown) ICE("out of memory");
    memcpy(grown, p->value, sizeof(double) * (size_t)p->top);
    if (p->value != p->local) free(p->value);
    p->value = grown, p->cap *= 2;
  }
  p->value[p->top++] = v;
}

/* A Scalar is a value; a product einsum is walked; anything else ends the walk. */
static bool const_enter(Node *n, void *arg) {
  ConstProduct *p = arg;
  if (n->kind == NK_Scalar) const_push(p, n->u.scalar.value);
  else if (n->kind == NK_Einsum && einsum_is_product(n)) return true;
  else p->ok = false;
  return false;
}

/* The product of a product einsum's children, in order. */
static bool const_leave(Node *n, void *arg) {
  ConstProduct *p = arg;
  if (!p->ok) return false;
  double v = 1.0;
  for (int i = 0; i < n->nchild; i++) v *= p->value[p->top - n->nchild + i];
  p->top -= n->nchild;
  const_push(p, v);
  return true;
}

/* The value of a constant node: a Scalar, or a product of constants (what
 * plan_einsum makes of the Scalars of an einsum), multiplied as nested. */
static bool const_value(const Node *n, double *v) {
  if (n->kind == NK_Scalar) {
    *v = n->u.scalar.value;
    return true;
  }
  if (n->kind != NK_Einsum || !einsum_is_product(n)) return false;
  ConstProduct p = {.top = 0, .cap = 32, .ok = true};
  p.value = p.local;
  bool ok = ir_walk(n, const_enter, const_leave, &p) && p.ok;
  if (ok) *v = p.value[0];
  if (p.value != p.local) free(p.value);
  return ok;
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
  for (;;) { /* down the scaled row sums */
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
    if (nvar == 1 && einsum_is_product(n)) { /* a scaled row sum: go on with it */
      const Node *ch = n->child[var];
      int in[MAX_RANK], nin = squeeze_ids(e->in[var], ch->shape.dim, e->in_rank[var], in);
      if (!ids_eq(in, nin, out, nout)) return false;
      *scale *= k;
      n = ch;
      continue;
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
static bool product_factors(const Node *n, const int *map, Factor *f, int *nf, int depth) {
  const EinsumSpec *e = &n->u.einsum;
  for (int i = 0; i < n->nchild; i++) {
    const Node *ch = n->child[i];
    int ids[MAX_RANK];
    for (int a = 0; a < e->in_rank[i]; a++)
      for (int j = 0; j < e->out_rank; j++)
        if (e->out[j] == e->in[i][a]) ids[a] = map[j];
    if (ch->kind == NK_Einsum && ch->nchild > 0 && einsum_is_product(ch)) {
      /* nested as deep as it has factors at most: the recursion stays shallow */
      if (depth == MAX_FACTORS || !product_factors(ch, ids, f, nf, depth + 1)) return false;
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
  if (!product_factors(y, e->out, f, &nf, 0)) return false;
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
Value *idiom_layernorm(Lower *L, const Node *n) {
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
  s->u.layernorm.in = x;
  s->u.layernorm.scale = scale;
  s->u.layernorm.bias = bias;
  s->u.layernorm.eps = ln.eps;
  Buf *b = new_buf(L, BUF_TEMP, DT_F32, shape_numel(&n->shape), n);
  s->out = contiguous(b, &n->shape);
  s->flops = 8.0 * (double)shape_numel(&n->shape);
  b->def_step = s->id;
  return viewed(L, s->out);
}
