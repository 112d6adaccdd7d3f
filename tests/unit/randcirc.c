/* randcirc.c — see randcirc.h. A pool of nodes with known shapes and value
 * bounds grows by one random operation at a time (elementwise functions, row
 * functions, broadcasting Add, Einsum with 1–4 operands, Rearrange, Index,
 * Concat, Scatter, gen_index, explicit_index, pow, casts of leaves, Tag,
 * SetSymbolicShape), creating leaves (`Array rand`, Scalars, input
 * Symbols) when an operation needs a partner of a particular shape. The value
 * bounds keep every function inside its well-conditioned domain (exp of
 * bounded values, log/rsqrt/reciprocal of values >= 0.01, ...), so float32
 * code and the double-precision evaluator agree to ~1e-6 relative. */
#include "randcirc.h"
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAXN 64        /* nodes per circuit (the generator stops at 20 + a few leaves) */
#define MAXR 5         /* rank of any node */
#define MAX_ABS 1e4    /* bound on |value| of any node */

typedef struct RShape {
  int rank;
  int64_t dim[2 * MAXR]; /* room for a shape built before its rank is checked against MAXR */
} RShape;

typedef struct RNode {
  char name[64];
  const char *kind;
  char extra[400];
  int nchild, child[6];
  RShape s;
  double lo, hi; /* bounds of the values (for `Array rand`: ±4.5, a practical bound for N(0,1)) */
  bool leaf;
  bool index;    /* int64 index Symbol: only ever the second child of a gen_index */
  int uses;
  bool printed;
} RNode;

typedef struct Gen {
  uint64_t state;
  const char *prefix;
  RNode n[MAXN];
  int nn;
  int nsym, nidx; /* float / index Symbols so far */
  int serial;     /* for names */
  bool large;     /* axes up to 48 (OpenMP-sized steps) instead of 1..5 */
  int64_t max_numel; /* elements of any node */
  double max_work;   /* iterations of any einsum */
} Gen;

/* ---------------------------------------------------------------- random */

static uint64_t next_u64(Gen *g) {
  uint64_t z = (g->state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

static int rnd(Gen *g, int n) { return n <= 1 ? 0 : (int)(next_u64(g) % (uint64_t)n); }
static bool chance(Gen *g, int k) { return rnd(g, k) == 0; } /* probability 1/k */

static void shuffle(Gen *g, int *a, int n) {
  for (int i = n - 1; i > 0; i--) {
    int j = rnd(g, i + 1), t = a[i];
    a[i] = a[j];
    a[j] = t;
  }
}

/* ---------------------------------------------------------------- shapes */

static int64_t rs_numel(const RShape *s) {
  int64_t n = 1;
  for (int i = 0; i < s->rank; i++) n *= s->dim[i];
  return n;
}

static bool rs_eq(const RShape *a, const RShape *b) {
  if (a->rank != b->rank) return false;
  for (int i = 0; i < a->rank; i++)
    if (a->dim[i] != b->dim[i]) return false;
  return true;
}

static int64_t rand_dim(Gen *g) {
  static const int64_t LARGE[] = {1, 2, 3, 16, 31, 48, 64, 96};
  return g->large ? LARGE[rnd(g, 8)] : 1 + rnd(g, 5);
}

static RShape rand_shape(Gen *g, int max_rank) {
  RShape s = {rnd(g, max_rank + 1), {0}};
  for (int i = 0; i < s.rank; i++) s.dim[i] = rand_dim(g);
  return s;
}

/* NumPy broadcast of a and b into *out; false if incompatible or too big. */
static bool rs_broadcast(const Gen *g, const RShape *a, const RShape *b, RShape *out) {
  int r = a->rank > b->rank ? a->rank : b->rank;
  if (r > MAXR) return false;
  RShape o = {r, {0}}; /* out may alias a or b */
  for (int i = 0; i < r; i++) {
    int ia = a->rank - r + i, ib = b->rank - r + i;
    int64_t da = ia >= 0 ? a->dim[ia] : 1, db = ib >= 0 ? b->dim[ib] : 1;
    if (da != db && da != 1 && db != 1) return false;
    o.dim[i] = da > db ? da : db;
  }
  if (rs_numel(&o) > g->max_numel) return false;
  *out = o;
  return true;
}

static void format_shape(const RShape *s, char *buf, size_t cap) {
  size_t len = (size_t)snprintf(buf, cap, "[");
  for (int i = 0; i < s->rank && len < cap; i++)
    len += (size_t)snprintf(buf + len, cap - len, "%s%lld", i ? "," : "", (long long)s->dim[i]);
  if (len < cap) snprintf(buf + len, cap - len, "]");
}

/* ---------------------------------------------------------------- nodes */

static double maxabs(const RNode *n) { return fmax(fabs(n->lo), fabs(n->hi)); }

static int new_node(Gen *g, const char *kind, const RShape *s, const char *stem) {
  if (g->nn >= MAXN) abort(); /* the op budget makes this impossible */
  RNode *n = &g->n[g->nn];
  memset(n, 0, sizeof *n);
  snprintf(n->name, sizeof n->name, "%s%s%d", g->prefix, stem, g->serial++);
  n->kind = kind;
  n->s = *s;
  return g->nn++;
}

static void add_child(Gen *g, int parent, int child) {
  RNode *p = &g->n[parent];
  p->child[p->nchild++] = child;
  g->n[child].uses++;
}

static void uuid(Gen *g, char *buf, size_t cap) {
  uint64_t a = next_u64(g), b = next_u64(g);
  snprintf(buf, cap, "%08x-%04x-4%03x-%04x-%012llx", (unsigned)(a >> 32), (unsigned)(a >> 16) & 0xffff,
           (unsigned)a & 0xfff, (unsigned)(b >> 48) | 0x8000, (unsigned long long)(b & 0xffffffffffffull));
}

static int leaf_array(Gen *g, const RShape *s) {
  int i = new_node(g, "Array", s, "a");
  strcpy(g->n[i].extra, "rand");
  g->n[i].lo = -4.5, g->n[i].hi = 4.5, g->n[i].leaf = true;
  return i;
}

static const double SCALARS[] = {0.5, -1.25, 2, 0.3, -0.7, 1.5, -2, 0.125};

static int leaf_scalar(Gen *g, const RShape *s, double v) {
  int i = new_node(g, "Scalar", s, "c");
  snprintf(g->n[i].extra, sizeof g->n[i].extra, "%g", v);
  g->n[i].lo = g->n[i].hi = v, g->n[i].leaf = true;
  return i;
}

static int leaf_symbol(Gen *g, const RShape *s) {
  int i = new_node(g, "Symbol", s, "in");
  uuid(g, g->n[i].extra, sizeof g->n[i].extra);
  g->n[i].lo = -RANDCIRC_INPUT_BOUND, g->n[i].hi = RANDCIRC_INPUT_BOUND, g->n[i].leaf = true;
  g->nsym++;
  return i;
}

static int index_symbol(Gen *g, const RShape *s) {
  int i = new_node(g, "Symbol", s, "idx");
  uuid(g, g->n[i].extra, sizeof g->n[i].extra);
  g->n[i].leaf = g->n[i].index = true;
  g->nidx++;
  return i;
}

/* A new leaf of shape s: an input Symbol (at most 2), a Scalar or an `Array rand`. */
static int random_leaf(Gen *g, const RShape *s) {
  if (g->nsym < 2 && chance(g, 4)) return leaf_symbol(g, s);
  if (chance(g, 4)) return leaf_scalar(g, s, SCALARS[rnd(g, 8)]);
  return leaf_array(g, s);
}

/* Requirements on an operand. */
typedef struct Want {
  int min_rank, max_rank;
  double max_abs; /* bound on |values| */
  double min_lo;  /* lower bound of the values must be >= this */
  double max_hi;
} Want;

static bool wants(const RNode *n, const Want *w) {
  return !n->index && n->s.rank >= w->min_rank && n->s.rank <= w->max_rank && maxabs(n) <= w->max_abs &&
         n->lo >= w->min_lo && n->hi <= w->max_hi;
}

static Want any_node(void) { return (Want){0, MAXR, MAX_ABS, -INFINITY, INFINITY}; }

/* A random node meeting w, preferring unused computed nodes (so circuits get deep); -1 if none. */
static int pick(Gen *g, const Want *w) {
  int cand[MAXN], nc = 0, fresh[MAXN], nf = 0;
  for (int i = 0; i < g->nn; i++)
    if (wants(&g->n[i], w)) {
      cand[nc++] = i;
      if (!g->n[i].leaf && g->n[i].uses == 0) fresh[nf++] = i;
    }
  if (g->large && nc && chance(g, 2)) { /* keep large circuits large */
    int best = cand[0];
    for (int k = 1; k < nc; k++)
      if (rs_numel(&g->n[cand[k]].s) > rs_numel(&g->n[best].s)) best = cand[k];
    return best;
  }
  if (nf && !chance(g, 3)) return fresh[rnd(g, nf)];
  return nc ? cand[rnd(g, nc)] : -1;
}

static int finish(Gen *g, int i, double lo, double hi) {
  g->n[i].lo = lo, g->n[i].hi = hi;
  return i;
}

/* ---------------------------------------------------------------- operations */

static double sigmoid(double x) { return 1 / (1 + exp(-x)); }
static double softplus(double x) { return x > 0 ? x + log1p(exp(-x)) : log1p(exp(x)); }

static bool op_elementwise(Gen *g) {
  Want w = any_node();
  w.max_abs = 50;
  int x = -1;
  if (chance(g, 2)) { /* log, rsqrt, reciprocal and logit need positive inputs: prefer those */
    Want wp = w;
    wp.min_lo = 0.01;
    x = pick(g, &wp);
  }
  if (x < 0) x = pick(g, &w);
  if (x < 0) return false;
  double lo = g->n[x].lo, hi = g->n[x].hi, m = maxabs(&g->n[x]);
  const char *fns[16];
  int nf = 0;
  fns[nf++] = "tanh", fns[nf++] = "sigmoid", fns[nf++] = "relu", fns[nf++] = "gelu", fns[nf++] = "gelu_new";
  fns[nf++] = "abs", fns[nf++] = "gaussian_pdf", fns[nf++] = "gaussian_cdf", fns[nf++] = "log_exp_p_1";
  if (m <= 20) fns[nf++] = "sin", fns[nf++] = "cos";
  if (hi <= 6) fns[nf++] = "exp", fns[nf++] = "exp";
  if (lo >= 0.01) nf = 0, fns[nf++] = "log", fns[nf++] = "rsqrt", fns[nf++] = "reciprocal", fns[nf++] = "tanh";
  if (lo >= 0.02 && hi <= 0.98) fns[nf++] = "logit", fns[nf++] = "logit";
  const char *f = fns[rnd(g, nf)];
  double nlo, nhi;
  if (!strcmp(f, "tanh")) nlo = tanh(lo), nhi = tanh(hi);
  else if (!strcmp(f, "sigmoid")) nlo = sigmoid(lo), nhi = sigmoid(hi);
  else if (!strcmp(f, "relu")) nlo = fmax(lo, 0), nhi = fmax(hi, 0);
  else if (!strcmp(f, "gelu") || !strcmp(f, "gelu_new")) nlo = lo < 0 ? -0.2 : 0, nhi = fmax(hi, 0);
  else if (!strcmp(f, "abs")) nlo = lo > 0 ? lo : hi < 0 ? -hi : 0, nhi = m;
  else if (!strcmp(f, "gaussian_pdf")) nlo = exp(-m * m / 2) / 2.5066282746310002 /* sqrt(2 pi) */, nhi = 0.4;
  else if (!strcmp(f, "gaussian_cdf")) nlo = 0.5 * erfc(-lo / sqrt(2)), nhi = 0.5 * erfc(-hi / sqrt(2));
  else if (!strcmp(f, "log_exp_p_1")) nlo = lo > -10 ? softplus(lo) : 0, nhi = softplus(hi);
  else if (!strcmp(f, "sin") || !strcmp(f, "cos")) nlo = -1, nhi = 1;
  else if (!strcmp(f, "exp")) nlo = exp(lo), nhi = exp(hi);
  else if (!strcmp(f, "log")) nlo = log(lo), nhi = log(hi);
  else if (!strcmp(f, "rsqrt")) nlo = 1 / sqrt(hi), nhi = 1 / sqrt(lo);
  else if (!strcmp(f, "reciprocal")) nlo = 1 / hi, nhi = 1 / lo;
  else nlo = log(lo / (1 - lo)), nhi = log(hi / (1 - hi)); /* logit */
  int i = new_node(g, "GeneralFunction", &g->n[x].s, "n");
  snprintf(g->n[i].extra, sizeof g->n[i].extra, "%s", f);
  add_child(g, i, x);
  finish(g, i, nlo, nhi);
  return true;
}

static bool op_row(Gen *g) {
  Want w = any_node();
  w.min_rank = 1, w.max_abs = 50;
  int x = pick(g, &w);
  if (x < 0) return false;
  static const char *const FNS[] = {"softmax", "log_softmax", "min", "max", "softmax", "last_dim_size"};
  const char *f = FNS[rnd(g, 6)];
  RShape s = g->n[x].s;
  double lo = g->n[x].lo, hi = g->n[x].hi, nlo = lo, nhi = hi, len = (double)s.dim[s.rank - 1];
  if (!strcmp(f, "softmax")) nlo = exp(lo - hi) / len, nhi = 1;
  else if (!strcmp(f, "log_softmax")) nlo = lo - hi - log(len), nhi = 0;
  else if (!strcmp(f, "last_dim_size")) nlo = nhi = len, s.rank--;
  else s.rank--;
  int i = new_node(g, "GeneralFunction", &s, "n");
  snprintf(g->n[i].extra, sizeof g->n[i].extra, "%s", f);
  add_child(g, i, x);
  finish(g, i, nlo, nhi);
  return true;
}

/* Add of 2–3 operands with NumPy broadcasting; partners come from the pool or
 * are new leaves of a broadcast-compatible shape. */
static bool op_add(Gen *g) {
  Want w = any_node();
  w.max_abs = MAX_ABS / 4;
  int x = pick(g, &w);
  if (x < 0) return false;
  RShape out = g->n[x].s;
  int ops[3] = {x}, nops = 1, nextra = chance(g, 3) ? 2 : 1;
  RShape leaf_shape[3];
  bool is_leaf[3] = {false};
  for (int j = 0; j < nextra; j++) {
    int cand[MAXN], nc = 0;
    RShape b;
    if (chance(g, 2))
      for (int i = 0; i < g->nn; i++)
        if (wants(&g->n[i], &w) && rs_broadcast(g, &out, &g->n[i].s, &b)) cand[nc++] = i;
    if (nc) {
      ops[nops] = cand[rnd(g, nc)];
      rs_broadcast(g, &out, &g->n[ops[nops]].s, &out);
    } else {
      RShape s = {0, {0}};
      int drop = rnd(g, out.rank + 1);
      for (int d = drop; d < out.rank; d++) s.dim[s.rank++] = chance(g, 3) ? 1 : out.dim[d];
      if (s.rank < MAXR && chance(g, 5)) { /* a new leading axis: x broadcasts too */
        memmove(s.dim + 1, s.dim, sizeof(int64_t) * (size_t)s.rank);
        s.dim[0] = 1 + rnd(g, 3);
        s.rank++;
      }
      if (!rs_broadcast(g, &out, &s, &out)) return false;
      leaf_shape[nops] = s;
      is_leaf[nops] = true;
    }
    nops++;
  }
  for (int j = 1; j < nops; j++)
    if (is_leaf[j]) ops[j] = random_leaf(g, &leaf_shape[j]);
  int i = new_node(g, "Add", &out, "n");
  double lo = 0, hi = 0;
  for (int j = 0; j < nops; j++) {
    add_child(g, i, ops[j]);
    lo += g->n[ops[j]].lo, hi += g->n[ops[j]].hi;
  }
  finish(g, i, lo, hi);
  return true;
}

/* Einsum with 1–4 operands (plus sometimes a rank-0 scale), ids reused across
 * operands where sizes agree, occasionally repeated inside an operand
 * (diagonal) or in the output (output diagonal); a random subset of ids is
 * summed and the output is permuted. */
static bool op_einsum(Gen *g) {
  int nops = 1 + rnd(g, 4), ops[5];
  Want w = any_node();
  w.max_abs = 100;
  for (int k = 0; k < nops; k++) {
    w.min_rank = chance(g, 4) ? 0 : 1; /* rank-0 operands are common enough anyway */
    if ((ops[k] = pick(g, &w)) < 0) {
      w.min_rank = 0;
      if ((ops[k] = pick(g, &w)) < 0) return false;
    }
  }
  bool scale = nops < 4 && chance(g, 4);
  int ids[5][MAXR], nid = 0;
  int64_t size[26];
  for (int k = 0; k < nops; k++) {
    const RShape *s = &g->n[ops[k]].s;
    for (int a = 0; a < s->rank; a++) {
      int cand[26], nc = 0;
      bool allow_repeat = chance(g, 6);
      for (int t = 0; t < nid; t++) {
        bool in_this = false;
        for (int b = 0; b < a; b++) in_this |= ids[k][b] == t;
        if (size[t] == s->dim[a] && (!in_this || allow_repeat)) cand[nc++] = t;
      }
      if (nc && rnd(g, 3)) ids[k][a] = cand[rnd(g, nc)];
      else {
        if (nid == 26) return false;
        size[nid] = s->dim[a];
        ids[k][a] = nid++;
      }
    }
  }
  int out[MAXR + 1], nout = 0, all[26];
  for (int t = 0; t < nid; t++) all[t] = t;
  shuffle(g, all, nid);
  for (int t = 0; t < nid && nout < 4; t++)
    if (chance(g, 2)) out[nout++] = all[t];
  bool diag_out = nout > 0 && nout < 4 && chance(g, 8);
  if (diag_out) {
    int pos = rnd(g, nout + 1), id = out[rnd(g, nout)];
    memmove(out + pos + 1, out + pos, sizeof(int) * (size_t)(nout - pos));
    out[pos] = id;
    nout++;
  }
  RShape s = {nout, {0}};
  for (int j = 0; j < nout; j++) s.dim[j] = size[out[j]];
  double work = 1, summed = 1;
  for (int t = 0; t < nid; t++) {
    bool kept = false;
    for (int j = 0; j < nout; j++) kept |= out[j] == t;
    work *= (double)size[t];
    if (!kept) summed *= (double)size[t];
  }
  if (rs_numel(&s) > g->max_numel || work > g->max_work) return false;
  double scale_v = scale ? SCALARS[rnd(g, 8)] : 1;
  double m = summed * fabs(scale_v), lo_prod = summed * scale_v;
  bool positive = scale_v > 0 && !diag_out, nonneg = scale_v >= 0;
  for (int k = 0; k < nops; k++) {
    const RNode *o = &g->n[ops[k]];
    m *= maxabs(o);
    positive &= o->lo > 0;
    nonneg &= o->lo >= 0;
    lo_prod *= o->lo;
  }
  if (m > MAX_ABS) return false;
  char spec[256];
  size_t len = 0;
  for (int k = 0; k < nops; k++) {
    if (k) spec[len++] = ',';
    for (int a = 0; a < g->n[ops[k]].s.rank; a++) spec[len++] = (char)('a' + ids[k][a]);
  }
  if (scale) spec[len++] = ',';
  spec[len++] = '-', spec[len++] = '>';
  for (int j = 0; j < nout; j++) spec[len++] = (char)('a' + out[j]);
  spec[len] = 0;
  int sc = scale ? leaf_scalar(g, &(RShape){0, {0}}, scale_v) : -1;
  int i = new_node(g, "Einsum", &s, "n");
  snprintf(g->n[i].extra, sizeof g->n[i].extra, "%s", spec);
  for (int k = 0; k < nops; k++) add_child(g, i, ops[k]);
  if (scale) add_child(g, i, sc);
  finish(g, i, positive ? lo_prod : nonneg ? 0 : -m, m);
  return true;
}

/* Rearrange: `()` for size-1 axes, splits `(a:2 b)` of even axes, a permutation,
 * merges of neighbouring (after permuting: often non-contiguous) ids, repeat
 * axes (alone or inside a group) and new `()` axes. */
static bool op_rearrange(Gen *g) {
  Want w = any_node();
  w.min_rank = 1;
  int x = pick(g, &w);
  if (x < 0) return false;
  const RShape *in = &g->n[x].s;
  char lhs[160] = "", rhs[160] = "";
  size_t ll = 0, rl = 0;
  int ids[2 * MAXR], nid = 0;
  int64_t size[2 * MAXR];
  for (int a = 0; a < in->rank; a++) {
    int64_t d = in->dim[a];
    if (a) lhs[ll++] = ' ';
    if (d == 1 && chance(g, 3)) {
      ll += (size_t)snprintf(lhs + ll, sizeof lhs - ll, "()");
    } else if (d % 2 == 0 && chance(g, 3)) {
      size[nid] = 2, ids[nid] = nid, nid++;
      size[nid] = d / 2, ids[nid] = nid, nid++;
      ll += (size_t)snprintf(lhs + ll, sizeof lhs - ll, "(%c:2 %c)", 'a' + nid - 2, 'a' + nid - 1);
    } else {
      size[nid] = d, ids[nid] = nid, nid++;
      ll += (size_t)snprintf(lhs + ll, sizeof lhs - ll, "%c", 'a' + nid - 1);
    }
  }
  if (!chance(g, 3)) shuffle(g, ids, nid);
  /* output groups: items are ids (>= 0) or repeat sizes (< 0) */
  int group[2 * MAXR + 3][4], glen[2 * MAXR + 3], ng = 0;
  for (int t = 0; t < nid; t++) {
    if (ng && glen[ng - 1] < 3 && chance(g, 3)) group[ng - 1][glen[ng - 1]++] = ids[t];
    else group[ng][0] = ids[t], glen[ng++] = 1;
  }
  if (chance(g, 4)) { /* a repeat axis of its own */
    int pos = rnd(g, ng + 1);
    memmove(group + pos + 1, group + pos, sizeof group[0] * (size_t)(ng - pos));
    memmove(glen + pos + 1, glen + pos, sizeof glen[0] * (size_t)(ng - pos));
    group[pos][0] = -(2 + rnd(g, 2)), glen[pos] = 1, ng++;
  }
  if (ng && chance(g, 6)) { /* a repeat inside a group */
    int k = rnd(g, ng);
    if (glen[k] < 4) {
      int pos = rnd(g, glen[k] + 1);
      memmove(group[k] + pos + 1, group[k] + pos, sizeof(int) * (size_t)(glen[k] - pos));
      group[k][pos] = -2, glen[k]++;
    }
  }
  if (chance(g, 5)) { /* a new size-1 axis */
    int pos = rnd(g, ng + 1);
    memmove(group + pos + 1, group + pos, sizeof group[0] * (size_t)(ng - pos));
    memmove(glen + pos + 1, glen + pos, sizeof glen[0] * (size_t)(ng - pos));
    glen[pos] = 0, ng++;
  }
  if (ng == 0) glen[ng++] = 0; /* a rank-0 result still needs one axis: `()` */
  if (ng > MAXR) return false;
  RShape s = {ng, {0}};
  for (int k = 0; k < ng; k++) {
    if (k) rhs[rl++] = ' ';
    s.dim[k] = 1;
    if (glen[k] != 1) rhs[rl++] = '(';
    for (int j = 0; j < glen[k]; j++) {
      int it = group[k][j];
      s.dim[k] *= it >= 0 ? size[it] : -it;
      if (j) rhs[rl++] = ' ';
      if (it >= 0) rhs[rl++] = (char)('a' + it);
      else rl += (size_t)snprintf(rhs + rl, sizeof rhs - rl, "%d", -it);
    }
    if (glen[k] != 1) rhs[rl++] = ')';
  }
  rhs[rl] = 0;
  if (rs_numel(&s) > g->max_numel) return false;
  int i = new_node(g, "Rearrange", &s, "n");
  snprintf(g->n[i].extra, sizeof g->n[i].extra, "%s -> %s", lhs, rhs);
  add_child(g, i, x);
  finish(g, i, g->n[x].lo, g->n[x].hi);
  return true;
}

/* Index with integers (possibly negative) and slices (bounds omitted, negative
 * or explicit); trailing entries are sometimes left out. */
static bool op_index(Gen *g) {
  Want w = any_node();
  w.min_rank = 1;
  int x = pick(g, &w);
  if (x < 0) return false;
  const RShape *in = &g->n[x].s;
  int nent = chance(g, 4) ? rnd(g, in->rank + 1) : in->rank;
  if (nent == 0) nent = 1;
  char spec[200] = "[";
  size_t len = 1;
  RShape s = {0, {0}};
  for (int a = 0; a < in->rank; a++) {
    int64_t L = in->dim[a];
    if (a >= nent) {
      s.dim[s.rank++] = L;
      continue;
    }
    if (a) spec[len++] = ',';
    int kind = rnd(g, 3);
    if (kind == 0) {
      int64_t i = rnd(g, (int)(2 * L)) - L;
      len += (size_t)snprintf(spec + len, sizeof spec - len, "%lld", (long long)i);
    } else if (kind == 1) {
      int64_t st = rnd(g, (int)L), sp = st + 1 + rnd(g, (int)(L - st));
      char a1[24] = "", a2[24] = "";
      if (st || chance(g, 2)) snprintf(a1, sizeof a1, "%lld", (long long)(st && chance(g, 3) ? st - L : st));
      if (sp != L || chance(g, 2)) snprintf(a2, sizeof a2, "%lld", (long long)(sp < L && chance(g, 3) ? sp - L : sp));
      len += (size_t)snprintf(spec + len, sizeof spec - len, "%s:%s", a1, a2);
      s.dim[s.rank++] = sp - st;
    } else {
      spec[len++] = ':';
      s.dim[s.rank++] = L;
    }
  }
  spec[len++] = ']';
  spec[len] = 0;
  int i = new_node(g, "Index", &s, "n");
  snprintf(g->n[i].extra, sizeof g->n[i].extra, "%s", spec);
  add_child(g, i, x);
  finish(g, i, g->n[x].lo, g->n[x].hi);
  return true;
}

/* Concat of 2–3 operands along a random (sometimes negative) axis. */
static bool op_concat(Gen *g) {
  Want w = any_node();
  w.min_rank = 1;
  int x = pick(g, &w);
  if (x < 0) return false;
  RShape s = g->n[x].s;
  int axis = rnd(g, s.rank), nops = 2 + (chance(g, 3) ? 1 : 0), ops[3] = {x};
  RShape leaf[3];
  bool is_leaf[3] = {false};
  for (int j = 1; j < nops; j++) {
    int cand[MAXN], nc = 0;
    for (int i = 0; i < g->nn; i++) {
      const RNode *o = &g->n[i];
      bool ok = !o->index && o->s.rank == s.rank;
      for (int d = 0; d < s.rank && ok; d++) ok = d == axis || o->s.dim[d] == s.dim[d];
      if (ok) cand[nc++] = i;
    }
    if (nc && chance(g, 2)) {
      ops[j] = cand[rnd(g, nc)];
      s.dim[axis] += g->n[ops[j]].s.dim[axis];
    } else {
      leaf[j] = g->n[x].s;
      leaf[j].dim[axis] = 1 + rnd(g, 3);
      s.dim[axis] += leaf[j].dim[axis];
      is_leaf[j] = true;
    }
  }
  if (rs_numel(&s) > g->max_numel) return false;
  for (int j = 1; j < nops; j++)
    if (is_leaf[j]) ops[j] = random_leaf(g, &leaf[j]);
  int i = new_node(g, "Concat", &s, "n");
  snprintf(g->n[i].extra, sizeof g->n[i].extra, "%d", chance(g, 3) ? axis - s.rank : axis);
  double lo = INFINITY, hi = -INFINITY;
  for (int j = 0; j < nops; j++) {
    add_child(g, i, ops[j]);
    lo = fmin(lo, g->n[ops[j]].lo), hi = fmax(hi, g->n[ops[j]].hi);
  }
  finish(g, i, lo, hi);
  return true;
}

/* gen_index_at_<d>[_batch_x][_no_batch_index][_c] with an int64 index Symbol. */
static bool op_gen_index(Gen *g) {
  Want w = any_node();
  w.min_rank = 1;
  int x = pick(g, &w);
  if (x < 0) return false;
  const RShape *xs = &g->n[x].s;
  int r = xs->rank, variant = rnd(g, 4);
  if (variant == 2 && r < 2) variant = rnd(g, 2);
  RShape is = {0, {0}}, s = {0, {0}};
  int d;
  char spec[96];
  const char *c = chance(g, 2) ? "_c" : "";
  if (variant == 0 || variant == 1 || variant == 3) {
    d = rnd(g, r);
    int dn = chance(g, 3) || variant == 3 ? d - r : d; /* as written */
    is = rand_shape(g, 2);
    for (int k = 0; k < is.rank; k++) is.dim[k] = 1 + rnd(g, 4);
    if (variant == 0) {
      s = is;
      for (int k = 0; k < r; k++)
        if (k != d) s.dim[s.rank++] = xs->dim[k];
      snprintf(spec, sizeof spec, "gen_index_at_%d%s", dn, c);
    } else {
      for (int k = 0; k < d; k++) s.dim[s.rank++] = xs->dim[k];
      for (int k = 0; k < is.rank; k++) s.dim[s.rank++] = is.dim[k];
      for (int k = d + 1; k < r; k++) s.dim[s.rank++] = xs->dim[k];
      snprintf(spec, sizeof spec, "gen_index_at_%d%s_no_batch_index%s", dn, variant == 3 ? "_batch_x" : "", c);
    }
  } else { /* _batch_x: the index has the leading dims of x */
    int kb = 1 + rnd(g, r - 1), suffix = r - kb;
    d = rnd(g, suffix);
    int dn = chance(g, 3) ? d - suffix : d;
    is.rank = kb;
    for (int k = 0; k < kb; k++) is.dim[k] = xs->dim[k];
    for (int k = 0; k < r; k++)
      if (k != kb + d) s.dim[s.rank++] = xs->dim[k];
    snprintf(spec, sizeof spec, "gen_index_at_%d_batch_x%s", dn, c);
  }
  if (s.rank > MAXR || rs_numel(&s) > g->max_numel) return false;
  int idx = -1;
  for (int i = 0; i < g->nn && idx < 0; i++)
    if (g->n[i].index && rs_eq(&g->n[i].s, &is) && chance(g, 2)) idx = i;
  if (idx < 0) {
    if (g->nidx >= 2) return false;
    idx = index_symbol(g, &is);
  }
  int i = new_node(g, "GeneralFunction", &s, "n");
  snprintf(g->n[i].extra, sizeof g->n[i].extra, "%s", spec);
  add_child(g, i, x);
  add_child(g, i, idx);
  finish(g, i, g->n[x].lo, g->n[x].hi);
  return true;
}

/* pow(base, exponent): base in [0.2, 10], exponent a Scalar or a bounded node. */
static bool op_pow(Gen *g) {
  Want w = any_node();
  w.min_lo = 0.2, w.max_hi = 10;
  int b = pick(g, &w);
  if (b < 0) return false;
  RShape s = g->n[b].s;
  int e = -1;
  static const double EXPS[] = {2, 0.5, -1, 1.5, 3, -0.5};
  double ev = EXPS[rnd(g, 6)];
  if (chance(g, 2)) {
    Want we = any_node();
    we.max_abs = 2;
    int cand[MAXN], nc = 0;
    RShape o;
    for (int i = 0; i < g->nn; i++)
      if (wants(&g->n[i], &we) && rs_broadcast(g, &s, &g->n[i].s, &o)) cand[nc++] = i;
    if (nc) e = cand[rnd(g, nc)];
  }
  double blo = g->n[b].lo, bhi = g->n[b].hi, elo = e >= 0 ? g->n[e].lo : ev, ehi = e >= 0 ? g->n[e].hi : ev;
  double lo = INFINITY, hi = -INFINITY;
  double corners[4] = {pow(blo, elo), pow(blo, ehi), pow(bhi, elo), pow(bhi, ehi)};
  for (int k = 0; k < 4; k++) lo = fmin(lo, corners[k]), hi = fmax(hi, corners[k]);
  if (hi > MAX_ABS) return false;
  if (e >= 0) rs_broadcast(g, &s, &g->n[e].s, &s);
  else e = leaf_scalar(g, &(RShape){0, {0}}, ev);
  int i = new_node(g, "GeneralFunction", &s, "n");
  strcpy(g->n[i].extra, "pow");
  add_child(g, i, b);
  add_child(g, i, e);
  finish(g, i, lo, hi);
  return true;
}

static bool op_tag(Gen *g) {
  Want w = any_node();
  int x = pick(g, &w);
  if (x < 0) return false;
  int i = new_node(g, "Tag", &g->n[x].s, "n");
  uuid(g, g->n[i].extra, sizeof g->n[i].extra);
  add_child(g, i, x);
  finish(g, i, g->n[x].lo, g->n[x].hi);
  return true;
}

/* SetSymbolicShape with the (concrete) shape of its child: an identity. */
static bool op_set_symbolic_shape(Gen *g) {
  Want w = any_node();
  int x = pick(g, &w);
  if (x < 0) return false;
  int i = new_node(g, "SetSymbolicShape", &g->n[x].s, "n");
  add_child(g, i, x);
  finish(g, i, g->n[x].lo, g->n[x].hi);
  return true;
}

/* Scatter of x into zeros of a larger shape, at a random offset per axis. */
static bool op_scatter(Gen *g) {
  Want w = any_node();
  w.min_rank = 1;
  int x = pick(g, &w);
  if (x < 0) return false;
  RShape s = g->n[x].s;
  char spec[200] = "[";
  size_t len = 1;
  for (int a = 0; a < s.rank; a++) {
    int64_t before = rnd(g, 3), after = rnd(g, 3), d = s.dim[a];
    s.dim[a] = before + d + after;
    len += (size_t)snprintf(spec + len, sizeof spec - len, "%s%lld:%lld", a ? "," : "", (long long)before,
                            (long long)(before + d));
  }
  snprintf(spec + len, sizeof spec - len, "]");
  if (rs_numel(&s) > g->max_numel) return false;
  int i = new_node(g, "Scatter", &s, "n");
  snprintf(g->n[i].extra, sizeof g->n[i].extra, "%s", spec);
  add_child(g, i, x);
  finish(g, i, fmin(g->n[x].lo, 0), fmax(g->n[x].hi, 0));
  return true;
}

/* explicit_index_at_<d>_x_non_b_<n>[_c]: the leading x.rank-n dims of x are
 * batch dims shared with the index, which may have one more dim. */
static bool op_explicit_index(Gen *g) {
  Want w = any_node();
  w.min_rank = 1;
  int x = pick(g, &w);
  if (x < 0) return false;
  const RShape *xs = &g->n[x].s;
  int nonb = 1 + rnd(g, xs->rank), nb = xs->rank - nonb, d = rnd(g, nonb);
  RShape is = {nb, {0}}, s;
  for (int k = 0; k < nb; k++) is.dim[k] = xs->dim[k];
  if (chance(g, 2) || nb == 0) is.dim[is.rank++] = 1 + rnd(g, 4);
  s = is;
  for (int k = 0; k < nonb; k++)
    if (k != d) {
      if (s.rank == MAXR) return false;
      s.dim[s.rank++] = xs->dim[nb + k];
    }
  if (rs_numel(&s) > g->max_numel) return false;
  int idx = -1;
  for (int i = 0; i < g->nn && idx < 0; i++)
    if (g->n[i].index && rs_eq(&g->n[i].s, &is) && chance(g, 2)) idx = i;
  if (idx < 0) {
    if (g->nidx >= 2) return false;
    idx = index_symbol(g, &is);
  }
  int i = new_node(g, "GeneralFunction", &s, "n");
  snprintf(g->n[i].extra, sizeof g->n[i].extra, "explicit_index_at_%d_x_non_b_%d%s", chance(g, 3) ? d - nonb : d, nonb,
           chance(g, 2) ? "_c" : "");
  add_child(g, i, x);
  add_child(g, i, idx);
  finish(g, i, g->n[x].lo, g->n[x].hi);
  return true;
}

/* A cast of a leaf (exact float32 values, so truncation agrees with eval). */
static bool op_cast(Gen *g) {
  int cand[MAXN], nc = 0;
  for (int i = 0; i < g->nn; i++)
    if (g->n[i].leaf && !g->n[i].index) cand[nc++] = i;
  if (!nc) return false;
  int x = cand[rnd(g, nc)];
  static const char *const TO[] = {"int64", "int8", "float32", "int32"};
  const char *to = TO[rnd(g, 4)];
  int i = new_node(g, "GeneralFunction", &g->n[x].s, "n");
  snprintf(g->n[i].extra, sizeof g->n[i].extra, "cast_from_{device:None,dtype:None}_to_{device:None,dtype:%s}", to);
  add_child(g, i, x);
  bool integer = strcmp(to, "float32") != 0;
  finish(g, i, integer ? trunc(g->n[x].lo) : g->n[x].lo, integer ? trunc(g->n[x].hi) : g->n[x].hi);
  return true;
}

/* ---------------------------------------------------------------- printing */

static void print_node(Gen *g, FILE *f, int i, int depth) {
  RNode *n = &g->n[i];
  fprintf(f, "%*s'%s'", 2 * depth, "", n->name);
  if (n->printed) {
    fputc('\n', f);
    return;
  }
  n->printed = true;
  char shape[96];
  format_shape(&n->s, shape, sizeof shape);
  fprintf(f, " %s %s%s%s\n", shape, n->kind, n->extra[0] ? " " : "", n->extra);
  for (int k = 0; k < n->nchild; k++) print_node(g, f, n->child[k], depth + 1);
}

void randcirc_generate(uint64_t seed, const char *prefix, bool large, RandCirc *out) {
  Gen *g = calloc(1, sizeof *g);
  if (!g) abort();
  g->state = seed * 0x2545f4914f6cdd1dull + 0x1234567 + (large ? 0x9e37 : 0);
  g->prefix = prefix;
  g->large = large;
  g->max_numel = large ? 200000 : 1000;
  g->max_work = large ? 4e6 : 20000;
  int target = 8 + rnd(g, 13);
  int nleaves = 1 + rnd(g, 3);
  for (int k = 0; k < nleaves; k++) {
    RShape s = rand_shape(g, 3);
    while (large && s.rank < 2) s = rand_shape(g, 3);
    random_leaf(g, &s);
  }
  typedef bool (*Op)(Gen *);
  static const struct { Op op; int weight; } OPS[] = {
      {op_einsum, 8}, {op_elementwise, 6}, {op_add, 6},   {op_rearrange, 6}, {op_index, 4},
      {op_concat, 3}, {op_row, 4},         {op_gen_index, 3}, {op_pow, 2},   {op_tag, 1},
      {op_set_symbolic_shape, 1}, {op_scatter, 2}, {op_explicit_index, 2}, {op_cast, 1}};
  int total = 0;
  for (size_t k = 0; k < sizeof OPS / sizeof *OPS; k++) total += OPS[k].weight;
  for (int tries = 0; g->nn < target && tries < 500; tries++) {
    int r = rnd(g, total);
    size_t k = 0;
    while (r >= OPS[k].weight) r -= OPS[k].weight, k++;
    OPS[k].op(g);
  }
  /* outputs: unused computed nodes first, then any computed node, rarely a leaf */
  int cand[MAXN], nc = 0, outs[RANDCIRC_MAX_OUTPUTS], no = 0, want = 1 + rnd(g, 3);
  for (int pass = 0; pass < 3 && no < want; pass++) {
    nc = 0;
    for (int i = 0; i < g->nn; i++) {
      const RNode *n = &g->n[i];
      bool taken = false;
      for (int j = 0; j < no; j++) taken |= outs[j] == i;
      if (taken || n->index) continue;
      if (pass == 0 ? !n->leaf && n->uses == 0 : pass == 1 ? !n->leaf : chance(g, 4)) cand[nc++] = i;
    }
    shuffle(g, cand, nc);
    for (int j = 0; j < nc && no < want; j++) outs[no++] = cand[j];
  }
  if (no == 0) outs[no++] = 0;
  char *buf = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&buf, &len);
  out->noutputs = no;
  for (int j = 0; j < no; j++) {
    print_node(g, f, outs[j], 0);
    snprintf(out->output[j], sizeof out->output[j], "%s", g->n[outs[j]].name);
  }
  fclose(f);
  out->text = buf;
  out->nnodes = g->nn;
  free(g);
}

void randcirc_free(RandCirc *r) {
  free(r->text);
  r->text = NULL;
}
