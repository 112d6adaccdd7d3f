/* idiom_attention.c — recognises softmax(Q·Kᵀ·F + B)·V in the circuit and
 * lowers it to one STEP_ATTENTION; every other node is left to the ordinary
 * lowering. Masks made of constants are evaluated at compile time; equal
 * masks (every layer of a model) are computed or stored once. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "lower_internal.h"

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

/* The F and B of one or more attentions; Lower.attn lists them in creation order. */
typedef struct AttnMask {
  int64_t tq, tk;
  const Node *term[16];  /* the terms they came from (cf. AttnMatch) */
  int cmap[16][MAX_RANK], nfac, nterm, qa, ka;
  const float *f, *b;    /* constant terms: copies (in tensors of the Comp) to compare against */
  Buf *bkend, *bskip, *bb, *bf; /* constant terms: bf NULL: F is 1 on the kept keys,
                                 * B 0 there; bb NULL too: no key is ever skipped.
                                 * run-time terms: bkend, bskip NULL; bf, bb NULL
                                 * when there is no factor, no bias */
  struct AttnMask *next;
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
  AttnMask *a = ARENA_NEW(&L->c->arena, AttnMask), **at = &L->attn;
  while (*at) at = &(*at)->next;
  *at = a;
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
    Value *v = lower_value(L, c);
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
  s->u.elementwise.expr = x;
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
  for (AttnMask *a = L->attn; a; a = a->next) {
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
  for (AttnMask *a = L->attn; a; a = a->next) {
    if (a->f && a->tq == tq && a->tk == tk && !memcmp(a->f, f, sizeof(float) * (size_t)(tq * tk)) &&
        !memcmp(a->b, b, sizeof(float) * (size_t)(tq * tk))) {
      free(f), free(b);
      return a;
    }
  }
  AttnMask *a = attn_new(L, m, tq, tk);
  Shape s2 = {2, {tq, tk}}, s1 = {1, {tq}};
  Tensor *kf = tensor_new(L->c, DT_F32, &s2), *kb = tensor_new(L->c, DT_F32, &s2);
  memcpy(kf->data, f, sizeof(float) * (size_t)(tq * tk));
  memcpy(kb->data, b, sizeof(float) * (size_t)(tq * tk));
  a->f = kf->data, a->b = kb->data;
  bool plain = true, skips = false;
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
  free(f), free(b);
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
Value *idiom_attention(Lower *L, const Node *n) {
  AttnMatch m;
  if (n->kind != NK_Einsum || n->nchild != 2 || einsum_is_product(n) || !attn_match(L, n, &m)) return NULL;
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
  s->u.attn.nbatch = nb;
  s->u.attn.bf16 = L->c->precision == PRECISION_BF16;
  s->ndim = nb + 4;
  for (int j = 0; j < nb; j++) s->dim[j] = m.p->shape.dim[einsum_id_pos(pid, rank, nids[j])];
  int64_t tq = ac->tq, tk = ac->tk;
  s->dim[nb] = tq, s->dim[nb + 1] = tk;
  want[nb] = rq, want[nb + 1] = cid;
  s->u.attn.q = attn_view(&qv, re->in[qop], rank, want, nb + 2);
  want[nb] = rk;
  s->u.attn.k = attn_view(&kv, re->in[1 - qop], rank, want, nb + 2);
  memcpy(want, nids, sizeof(int) * (size_t)nb);
  want[nb] = nids[nb + 1], want[nb + 1] = did;
  s->u.attn.v = attn_view(&vv, vid, rank, want, nb + 2);
  s->dim[nb + 2] = s->u.attn.q.dim[nb + 1];
  s->dim[nb + 3] = s->u.attn.v.dim[nb + 1];
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
  View *cv[4] = {&s->u.attn.kend, &s->u.attn.skip, &s->u.attn.bias, &s->u.attn.factor};
  for (int i = 0; i < 4; i++)
    if (cb[i]) *cv[i] = (View){.buf = cb[i], .rank = 1, .dim = {cb[i]->numel}, .stride = {1}};
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
