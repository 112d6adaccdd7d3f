/* ir.c — node construction and shape inference for every kind
 * (rust_circuit_format.md §2.5, §4). ir_make() is the only way to build a
 * node: it validates the parameters against the children, computes shape,
 * dtype and structural hash, and reports problems at the node's location.
 * Symbolic sizes are plain integers here (the prime trick, §2.4). */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "ir.h"

/* ---------------------------------------------------------------- tables */

static const struct { const char *name; } KINDS[NK_COUNT] = {
#define KIND(name) {#name},
#include "nodes.def"
#undef KIND
};

static const struct { const char *spec; GenFnClass cls; } GENFNS[GF_COUNT] = {
#define GENFN(e, spec, cls) {spec, cls},
#include "genfns.def"
#undef GENFN
};

const char *kind_name(NodeKind k) { return k < NK_COUNT ? KINDS[k].name : "?"; }
const char *genfn_name(GenFnKind f) { return f < GF_COUNT ? GENFNS[f].spec : "?"; }
GenFnClass genfn_class(GenFnKind f) { return GENFNS[f].cls; }

int kind_from_name(const char *s, size_t len) {
  for (int k = 0; k < NK_COUNT; k++)
    if (strlen(KINDS[k].name) == len && memcmp(KINDS[k].name, s, len) == 0) return k;
  return -1;
}

/* ------------------------------------------------------- symbolic sizes */

/* The 256 consecutive primes starting at 10007 (rr_util/primes.bin). */
static const int64_t *primes(void) {
  static int64_t table[NUM_SYMBOLIC_SIZES];
  if (!table[0]) {
    int n = 0;
    for (int64_t v = 10007; n < NUM_SYMBOLIC_SIZES; v++) {
      bool prime = true;
      for (int64_t d = 2; d * d <= v; d++)
        if (v % d == 0) { prime = false; break; }
      if (prime) table[n++] = v;
    }
  }
  return table;
}

int64_t symbolic_prime(int k) { return k >= 0 && k < NUM_SYMBOLIC_SIZES ? primes()[k] : -1; }

bool size_is_symbolic(int64_t v) {
  if (v < 10007) return false;
  const int64_t *p = primes();
  for (int k = 0; k < NUM_SYMBOLIC_SIZES && p[k] <= v; k++)
    if (v % p[k] == 0) return true;
  return false;
}

char *size_format(int64_t v, char *buf, size_t cap) {
  if (v < 10007) {
    snprintf(buf, cap, "%lld", (long long)v);
    return buf;
  }
  const int64_t *p = primes();
  int64_t rest = v;
  int idx[64], n = 0;
  for (int k = 0; k < NUM_SYMBOLIC_SIZES && rest >= p[k] && n < 64; k++)
    while (rest % p[k] == 0 && n < 64) { idx[n++] = k; rest /= p[k]; }
  if (n == 0) {
    snprintf(buf, cap, "%lld", (long long)v);
    return buf;
  }
  size_t len = 0;
  if (rest != 1) len += (size_t)snprintf(buf, cap, "%lld*", (long long)rest);
  for (int i = 0; i < n && len < cap; i++)
    len += (size_t)snprintf(buf + len, cap - len, "%s%ds", i ? "*" : "", idx[i]);
  return buf;
}

/* ------------------------------------------------------ general functions */

static bool parse_int(const char **p, int *out) {
  char *end;
  long v = strtol(*p, &end, 10);
  if (end == *p || v < -1000000 || v > 1000000) return false;
  *out = (int)v;
  *p = end;
  return true;
}

static bool starts(const char *s, const char *prefix) { return strncmp(s, prefix, strlen(prefix)) == 0; }

static int dtype_from_torch(const char *s, size_t n) {
  static const struct { const char *name; DType t; } T[] = {
      {"float32", DT_F32}, {"float", DT_F32}, {"float64", DT_F64}, {"double", DT_F64},
      {"float16", DT_F16}, {"half", DT_F16}, {"bfloat16", DT_BF16}, {"int64", DT_I64},
      {"long", DT_I64}, {"int32", DT_I32}, {"int", DT_I32}, {"int16", DT_I16},
      {"int8", DT_I8}, {"uint8", DT_U8}, {"bool", DT_BOOL}, {"None", DT_UNKNOWN}};
  if (n > 6 && memcmp(s, "torch.", 6) == 0) s += 6, n -= 6;
  for (size_t i = 0; i < sizeof T / sizeof *T; i++)
    if (strlen(T[i].name) == n && memcmp(T[i].name, s, n) == 0) return T[i].t;
  return -2;
}

/* One `{device:D,dtype:T}` group of a cast spec. */
static bool parse_cast_group(const char **p, DType *dt) {
  const char *s = *p;
  if (*s != '{') return false;
  const char *close = strchr(s, '}');
  const char *dtype = strstr(s, "dtype:");
  if (!close || !dtype || dtype > close || !strstr(s, "device:")) return false;
  dtype += 6;
  int t = dtype_from_torch(dtype, (size_t)(close - dtype));
  if (t == -2) return false;
  *dt = (DType)t;
  *p = close + 1;
  return true;
}

bool genfn_parse(const char *text, GenFnSpec *out) {
  memset(out, 0, sizeof *out);
  out->text = text;
  out->cast_from = out->cast_to = DT_UNKNOWN;
  const char *at = strstr(text, " at ");
  if (at) {
    out->fn = GF_USER;
    out->python = true;
    out->user_name_len = (int)(at - text);
    return true;
  }
  for (int f = 0; f < GF_COUNT; f++)
    if (GENFNS[f].cls != GF_SPECIAL && strcmp(text, GENFNS[f].spec) == 0) {
      out->fn = (GenFnKind)f;
      return true;
    }
  if (strcmp(text, "pow") == 0) { out->fn = GF_POW; return true; }
  const char *p = text;
  if (starts(p, "gen_index_at_")) {
    p += strlen("gen_index_at_");
    out->fn = GF_GEN_INDEX;
    out->batch_index = true;
    if (!parse_int(&p, &out->dim)) return false;
    if (starts(p, "_batch_x")) { out->batch_x = true; p += 8; }
    if (starts(p, "_no_batch_index")) { out->batch_index = false; p += 15; }
    if (starts(p, "_c")) { out->check_int = true; p += 2; }
    return *p == 0;
  }
  if (starts(p, "explicit_index_at_")) {
    p += strlen("explicit_index_at_");
    out->fn = GF_EXPLICIT_INDEX;
    if (!parse_int(&p, &out->dim) || !starts(p, "_x_non_b_")) return false;
    p += strlen("_x_non_b_");
    if (!parse_int(&p, &out->non_b) || out->non_b < 0) return false;
    if (starts(p, "_c")) { out->check_int = true; p += 2; }
    return *p == 0;
  }
  if (starts(p, "cast_from_")) {
    p += strlen("cast_from_");
    out->fn = GF_CAST;
    if (!parse_cast_group(&p, &out->cast_from) || !starts(p, "_to_")) return false;
    p += 4;
    return parse_cast_group(&p, &out->cast_to) && *p == 0;
  }
  if (starts(p, "multinomial")) { out->fn = GF_MULTINOMIAL; return true; }
  bool simple = *p && !(*p >= '0' && *p <= '9');
  for (const char *q = p; *q; q++) simple &= *q == '_' || (*q >= '0' && *q <= '9') || ((*q | 32) >= 'a' && (*q | 32) <= 'z');
  if (simple) {
    out->fn = GF_USER;
    out->user_name_len = (int)strlen(text);
  }
  return simple;
}

const UserOp *user_op_find(const UserOps *ops, const char *name, size_t len) {
  for (int i = 0; ops && i < ops->nops; i++)
    if (strlen(ops->op[i].name) == len && !memcmp(ops->op[i].name, name, len)) return &ops->op[i];
  return NULL;
}

/* --------------------------------------------------------------- helpers */

void nodelist_push(Comp *c, NodeList *l, Node *n) {
  if (l->n == l->cap) {
    int cap = l->cap ? 2 * l->cap : 8;
    Node **a = ARENA_ARRAY(&c->arena, Node *, cap);
    if (l->n) memcpy(a, l->node, sizeof(Node *) * (size_t)l->n);
    l->node = a;
    l->cap = cap;
  }
  l->node[l->n++] = n;
}

const char *shape_str(Comp *c, const Shape *s) {
  char buf[MAX_RANK * 24 + 4], one[32];
  size_t len = 0;
  buf[len++] = '[';
  for (int i = 0; i < s->rank; i++) {
    if (i) buf[len++] = ',';
    size_format(s->dim[i], one, sizeof one);
    size_t n = strlen(one);
    memcpy(buf + len, one, n);
    len += n;
  }
  buf[len++] = ']';
  return arena_strndup(&c->arena, buf, len);
}

const char *node_label(Comp *c, const Node *n) {
  if (n->name) return arena_printf(&c->arena, "'%s'", n->name);
  return arena_printf(&c->arena, "unnamed %s", kind_name(n->kind));
}

bool index_entry_bounds(const IndexEntry *e, int64_t len, int64_t *start, int64_t *stop) {
  switch (e->kind) {
  case IDX_INT: {
    int64_t i = e->i < 0 ? e->i + len : e->i;
    if (i < 0 || i >= len) return false;
    *start = i, *stop = i + 1;
    return true;
  }
  case IDX_SLICE: {
    int64_t a = e->has_start ? e->start : 0, b = e->has_stop ? e->stop : len;
    if (a < -len || a > len || b < -len || b > len) return false;
    if (a < 0) a += len;
    if (b < 0) b += len;
    if (a > b) return false;
    *start = a, *stop = b;
    return true;
  }
  case IDX_TENSOR:
    *start = 0, *stop = len;
    return true;
  }
  return false;
}

/* ---------------------------------------------------------------- hashing */

static uint64_t mix(uint64_t h, uint64_t v) {
  h ^= v + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
  h *= 0xff51afd7ed558ccdull;
  return h ^ (h >> 33);
}

static uint64_t mix_str(uint64_t h, const char *s) {
  if (!s) return mix(h, 0xdeadull);
  uint64_t f = 0xcbf29ce484222325ull;
  for (; *s; s++) f = (f ^ (unsigned char)*s) * 0x100000001b3ull;
  return mix(h, f);
}

static uint64_t mix_ints(uint64_t h, const int *v, int n) {
  h = mix(h, (uint64_t)n);
  for (int i = 0; i < n; i++) h = mix(h, (uint64_t)(int64_t)v[i]);
  return h;
}

static uint64_t node_hash(const Node *n) {
  uint64_t h = mix(0x51ed270b27f4d1c3ull, (uint64_t)n->kind);
  h = mix_str(h, n->name);
  for (int i = 0; i < n->shape.rank; i++) h = mix(h, (uint64_t)n->shape.dim[i]);
  for (int i = 0; i < n->nchild; i++) h = mix(h, n->child[i]->hash);
  switch (n->kind) {
  case NK_Einsum:
    for (int i = 0; i < n->nchild; i++) h = mix_ints(h, n->u.einsum.in[i], n->u.einsum.in_rank[i]);
    h = mix_ints(h, n->u.einsum.out, n->u.einsum.out_rank);
    break;
  case NK_Array:
    /* identity of the tensor: its hash when known, else its address; before
     * loading, where it comes from (its RNG seed or its hash prefix) */
    if (!n->u.array.tensor)
      h = n->u.array.random ? mix(h, n->u.array.rng_seed) : mix_str(h, n->u.array.hash_prefix);
    else if (n->u.array.tensor->hash_hex[0])
      h = mix_str(h, n->u.array.tensor->hash_hex);
    else
      h = mix(h, (uint64_t)(uintptr_t)n->u.array.tensor);
    break;
  case NK_Symbol: h = mix_str(h, n->u.symbol.uuid); break;
  case NK_Scalar: {
    uint64_t bits;
    memcpy(&bits, &n->u.scalar.value, 8);
    h = mix(h, bits);
    break;
  }
  case NK_Rearrange: {
    const RearrangeSpec *r = &n->u.rearrange;
    for (int i = 0; i < r->nin; i++) h = mix_ints(h, r->in_ids[i], r->in_len[i]);
    for (int i = 0; i < r->nout; i++) h = mix_ints(h, r->out_ids[i], r->out_len[i]);
    for (int i = 0; i < r->nids; i++) h = mix(h, (uint64_t)r->size[i]);
    break;
  }
  case NK_Index:
  case NK_Scatter:
    for (int i = 0; i < n->u.index.n; i++) {
      const IndexEntry *e = &n->u.index.e[i];
      h = mix(h, (uint64_t)e->kind);
      h = mix(h, (uint64_t)e->i);
      h = mix(h, (uint64_t)(e->has_start ? e->start : INT64_MIN));
      h = mix(h, (uint64_t)(e->has_stop ? e->stop : INT64_MIN));
      h = e->tensor || !e->prefix ? mix(h, (uint64_t)(uintptr_t)e->tensor) : mix_str(h, e->prefix);
    }
    break;
  case NK_GeneralFunction: h = mix_str(h, n->u.gf.text); break;
  case NK_Concat: h = mix(h, (uint64_t)n->u.concat.axis); break;
  case NK_Module:
    for (int i = 0; i < module_nargs(n); i++) {
      const ModuleArg *a = &n->u.module.arg[i];
      h = mix(h, a->symbol ? a->symbol->hash : 0);
      h = mix(h, (uint64_t)(a->batchable | a->expandable << 1 | a->ban_non_symbolic_size_expand << 2));
    }
    break;
  case NK_Tag: h = mix_str(h, n->u.tag.uuid); break;
  case NK_StoredCumulantVar:
    h = mix_ints(h, n->u.stored_cumulant.orders, n->u.stored_cumulant.norders);
    h = mix_str(h, n->u.stored_cumulant.uuid);
    break;
  default: break;
  }
  return h;
}

/* ------------------------------------------------------ shape inference */

typedef struct Make {
  Comp *c;
  Node *n;          /* the node being built (arena copy of the prototype) */
  const char *what; /* label for messages */
} Make;

#define FAIL(m, ...) (diag_error((m)->c, (m)->n->loc, __VA_ARGS__), false)

static const char *sz(Make *m, int64_t v) {
  char buf[64];
  return arena_strdup(&m->c->arena, size_format(v, buf, sizeof buf));
}

static const char *shp(Make *m, const Shape *s) { return shape_str(m->c, s); }

static bool want_children(Make *m, int lo, int hi) {
  if (m->n->nchild < lo || (hi >= 0 && m->n->nchild > hi)) {
    if (lo == hi) return FAIL(m, "%s %s needs %d child%s, found %d", kind_name(m->n->kind), m->what, lo,
                              lo == 1 ? "" : "ren", m->n->nchild);
    return FAIL(m, "%s %s needs at least %d children, found %d", kind_name(m->n->kind), m->what, lo,
                m->n->nchild);
  }
  return true;
}

/* NumPy broadcasting of all children's shapes (Add, pow): right-aligned, sizes
 * equal or one of them 1 (a 1 does not broadcast against 0, as in rust_circuit). */
static bool broadcast(Make *m, Shape *out) {
  Node *n = m->n;
  bool set[MAX_RANK] = {0};
  int rank = 0;
  for (int i = 0; i < n->nchild; i++)
    if (n->child[i]->shape.rank > rank) rank = n->child[i]->shape.rank;
  out->rank = rank;
  for (int k = 0; k < rank; k++) out->dim[k] = 1;
  for (int i = 0; i < n->nchild; i++) {
    const Shape *s = &n->child[i]->shape;
    for (int k = 0; k < s->rank; k++) {
      int pos = rank - s->rank + k;
      int64_t *o = &out->dim[pos], v = s->dim[k];
      if (!set[pos] || *o == v) {
        *o = v;
      } else if (v == 1 && *o != 0) {
        continue;
      } else if (*o == 1 && v != 0) {
        *o = v;
      } else {
        return FAIL(m, "%s %s: cannot broadcast child %d of shape %s at axis %d (size %s vs %s)",
                    kind_name(n->kind), m->what, i, shp(m, s), k, sz(m, v), sz(m, *o));
      }
      set[pos] = true;
    }
  }
  return true;
}

static bool make_einsum(Make *m) {
  Node *n = m->n;
  EinsumSpec *e = &n->u.einsum;
  int64_t size[256];
  bool seen[256] = {0};
  for (int i = 0; i < n->nchild; i++) {
    const Shape *s = &n->child[i]->shape;
    if (e->in_rank[i] != s->rank)
      return FAIL(m, "Einsum %s: operand %d has %d axes in the spec but the child %s has rank %d (shape %s)",
                  m->what, i, e->in_rank[i], node_label(m->c, n->child[i]), s->rank, shp(m, s));
    for (int k = 0; k < s->rank; k++) {
      int id = e->in[i][k];
      if (id < 0 || id >= 256) return FAIL(m, "Einsum %s: axis id %d out of range", m->what, id);
      if (!seen[id]) {
        seen[id] = true;
        size[id] = s->dim[k];
      } else if (size[id] != s->dim[k]) {
        return FAIL(m, "Einsum %s: axis %d of operand %d is %s but the same letter is %s elsewhere "
                       "(einsum does not broadcast)",
                    m->what, k, i, sz(m, s->dim[k]), sz(m, size[id]));
      }
    }
  }
  n->shape.rank = e->out_rank;
  if (e->out_rank > MAX_RANK) return FAIL(m, "Einsum %s: output rank %d exceeds %d", m->what, e->out_rank, MAX_RANK);
  for (int k = 0; k < e->out_rank; k++) {
    int id = e->out[k];
    if (id < 0 || id >= 256 || !seen[id])
      return FAIL(m, "Einsum %s: output axis %d does not appear in any operand", m->what, k);
    n->shape.dim[k] = size[id];
  }
  return true;
}

/* Conforms a Rearrange spec to the child's shape: infers each input group's
 * unknown size (at most one per group) and checks the product. */
static bool make_rearrange(Make *m) {
  Node *n = m->n;
  RearrangeSpec in = n->u.rearrange, r = in;
  const Shape *s = &n->child[0]->shape;
  Arena *a = &m->c->arena;
  if (!in.written_size) {
    r.written_size = ARENA_ARRAY(a, int64_t, in.nids);
    if (in.nids) memcpy(r.written_size, in.size, sizeof(int64_t) * (size_t)in.nids);
  }
  r.size = ARENA_ARRAY(a, int64_t, in.nids);
  if (in.nids) memcpy(r.size, r.written_size, sizeof(int64_t) * (size_t)in.nids);
  if (r.nin != s->rank)
    return FAIL(m, "Rearrange %s: spec has %d input axes but the child has rank %d (shape %s)", m->what, r.nin,
                s->rank, shp(m, s));
  int *count_in = ARENA_ARRAY(a, int, r.nids + 1), *count_out = ARENA_ARRAY(a, int, r.nids + 1);
  for (int g = 0; g < r.nin; g++) {
    int unknown = -1;
    int64_t prod = 1;
    for (int j = 0; j < r.in_len[g]; j++) {
      int id = r.in_ids[g][j];
      if (id < 0 || id >= r.nids) return FAIL(m, "Rearrange %s: bad axis id", m->what);
      if (count_in[id]++) return FAIL(m, "Rearrange %s: an axis appears twice on the input side", m->what);
      if (r.size[id] < 0) {
        if (unknown >= 0) return FAIL(m, "Rearrange %s: input axis %d has two axes of unknown size", m->what, g);
        unknown = id;
      } else if (__builtin_mul_overflow(prod, r.size[id], &prod)) {
        return FAIL(m, "Rearrange %s: size overflow", m->what);
      }
    }
    if (unknown >= 0) {
      if (prod == 0 || s->dim[g] % prod != 0)
        return FAIL(m, "Rearrange %s: input axis %d has size %s, not divisible by %s", m->what, g,
                    sz(m, s->dim[g]), sz(m, prod));
      r.size[unknown] = s->dim[g] / prod;
    } else if (prod != s->dim[g]) {
      return FAIL(m, "Rearrange %s: input axis %d has size %s but the spec says %s", m->what, g, sz(m, s->dim[g]),
                  sz(m, prod));
    }
  }
  if (r.nout > MAX_RANK) return FAIL(m, "Rearrange %s: output rank %d exceeds %d", m->what, r.nout, MAX_RANK);
  n->shape.rank = r.nout;
  for (int g = 0; g < r.nout; g++) {
    int64_t prod = 1;
    for (int j = 0; j < r.out_len[g]; j++) {
      int id = r.out_ids[g][j];
      if (id < 0 || id >= r.nids) return FAIL(m, "Rearrange %s: bad axis id", m->what);
      if (count_out[id]++) return FAIL(m, "Rearrange %s: an axis appears twice on the output side", m->what);
      if (r.size[id] < 0)
        return FAIL(m, "Rearrange %s: output-only axis needs a size (write it as name:N or a number)", m->what);
      if (__builtin_mul_overflow(prod, r.size[id], &prod)) return FAIL(m, "Rearrange %s: size overflow", m->what);
    }
    n->shape.dim[g] = prod;
  }
  for (int id = 0; id < r.nids; id++)
    if (count_in[id] && !count_out[id])
      return FAIL(m, "Rearrange %s: input axis is missing from the output (Rearrange cannot reduce)", m->what);
  n->u.rearrange = r;
  return true;
}

/* Index and Scatter entries: pads to the child's rank with ':' and checks bounds. */
static bool check_index(Make *m, const Shape *src, bool slices_only, Shape *out) {
  Node *n = m->n;
  IndexSpec *ix = &n->u.index;
  if (ix->n > src->rank)
    return FAIL(m, "%s %s: %d index entries for a child of rank %d (shape %s)", kind_name(n->kind), m->what,
                ix->n, src->rank, shp(m, src));
  if (ix->n < src->rank) {
    IndexEntry *e = ARENA_ARRAY(&m->c->arena, IndexEntry, src->rank);
    if (ix->n) memcpy(e, ix->e, sizeof(IndexEntry) * (size_t)ix->n);
    for (int k = ix->n; k < src->rank; k++) e[k].kind = IDX_SLICE;
    ix->e = e;
    ix->n = src->rank;
  }
  out->rank = 0;
  for (int k = 0; k < ix->n; k++) {
    const IndexEntry *e = &ix->e[k];
    int64_t a, b, len = src->dim[k];
    if (slices_only && e->kind != IDX_SLICE)
      return FAIL(m, "Scatter %s: entry %d must be a slice", m->what, k);
    if (e->kind == IDX_TENSOR) {
      const Tensor *t = e->tensor;
      if (!t && e->prefix && e->len >= 0) { /* not loaded yet */
        out->dim[out->rank++] = e->len;
        continue;
      }
      if (!t || t->shape.rank != 1 || (t->dtype != DT_I64 && t->dtype != DT_I32))
        return FAIL(m, "Index %s: index tensor at entry %d must be 1-D int64", m->what, k);
      out->dim[out->rank++] = t->shape.dim[0];
      continue;
    }
    if (!index_entry_bounds(e, len, &a, &b)) {   /* rust_circuit never clamps (§4.6) */
      const char *of = n->nchild ? node_label(m->c, n->child[0]) : "its child";
      if (e->kind == IDX_INT)
        return FAIL(m, "%s %s: index %lld is out of range for axis %d of %s %s (size %s)", kind_name(n->kind),
                    m->what, (long long)e->i, k, of, shp(m, src), sz(m, len));
      return FAIL(m, "%s %s: slice %lld:%lld is out of range for axis %d of %s %s (size %s)", kind_name(n->kind),
                  m->what, (long long)(e->has_start ? e->start : 0), (long long)(e->has_stop ? e->stop : len), k,
                  of, shp(m, src), sz(m, len));
    }
    if (e->kind == IDX_SLICE) out->dim[out->rank++] = b - a;
  }
  return true;
}

/* Binds the symbolic primes of `sym` dims from `actual` dims: d = c * p1^e1 * ...;
 * a dim with exactly one unbound prime (exponent 1) is solved by division. */
bool ir_bind_symbolic(int64_t sym, int64_t actual, int64_t *map) {
  const int64_t *p = primes();
  int64_t known = 1, rest = sym;
  int unknown = -1, nunknown = 0;
  for (int k = 0; k < NUM_SYMBOLIC_SIZES && rest >= p[k]; k++)
    while (rest % p[k] == 0) {
      rest /= p[k];
      if (map[k] >= 0) known *= map[k];
      else { unknown = k; nunknown++; }
    }
  known *= rest;
  if (nunknown == 0) return known == actual;
  if (nunknown > 1 || known == 0 || actual % known != 0) return false;
  map[unknown] = actual / known;
  return true;
}

int64_t ir_apply_size_map(int64_t v, const int64_t *map) {
  if (v < 10007) return v;
  const int64_t *p = primes();
  int64_t rest = v, out = 1;
  for (int k = 0; k < NUM_SYMBOLIC_SIZES && rest >= p[k]; k++)
    while (rest % p[k] == 0) {
      rest /= p[k];
      out *= map[k] >= 0 ? map[k] : p[k];
    }
  return out * rest;
}

/* Module shape (§5.2): B = right-aligned union of the args' batch shapes,
 * output = B ++ spec shape with this call's symbolic sizes substituted. */
static bool make_module(Make *m) {
  Node *n = m->n;
  int64_t map[NUM_SYMBOLIC_SIZES];
  for (int k = 0; k < NUM_SYMBOLIC_SIZES; k++) map[k] = -1;
  Shape batch = {0};
  for (int i = 0; i < module_nargs(n); i++) {
    const ModuleArg *a = &n->u.module.arg[i];
    const Node *v = n->child[i + 1], *s = a->symbol;
    if (!s || s->kind != NK_Symbol)
      return FAIL(m, "Module %s: argument %d must be bound to a Symbol", m->what, i + 1);
    int extra = v->shape.rank - s->shape.rank;
    if (extra < 0 || (!a->batchable && extra > 0))
      return FAIL(m, "Module %s: argument %s of shape %s cannot bind symbol '%s' of shape %s%s", m->what,
                  node_label(m->c, v), shp(m, &v->shape), s->name ? s->name : "", shp(m, &s->shape),
                  extra < 0 ? " (argument has lower rank)" : " (symbol is not batchable)");
    for (int k = 0; k < s->shape.rank; k++) {
      int64_t want = s->shape.dim[k], got = v->shape.dim[extra + k];
      bool sym = size_is_symbolic(want);
      if (want == got) continue;
      if (!sym && a->expandable && !a->ban_non_symbolic_size_expand)
        /* allowed by rust_circuit, but the result shape then depends on the whole
         * body, which only substitution knows; circc asks for a symbolic size instead */
        return FAIL(m, "Module %s: argument %s changes the non-symbolic size %s of symbol '%s' to %s; circc "
                       "supports this only for symbolic sizes (write the symbol's size as e.g. 0s)",
                    m->what, node_label(m->c, v), sz(m, want), s->name ? s->name : "", sz(m, got));
      if (!a->expandable || !sym || !ir_bind_symbolic(want, got, map))
        return FAIL(m, "Module %s: argument %s has size %s at axis %d but symbol '%s' needs %s%s", m->what,
                    node_label(m->c, v), sz(m, got), extra + k, s->name ? s->name : "", sz(m, want),
                    sym ? " (conflicts with another binding of the same symbolic size)" : "");
    }
    /* right-aligned union of batch shapes, exact equality */
    for (int k = 0; k < extra; k++) {
      int pos_from_right = extra - k; /* 1 = innermost batch dim */
      if (pos_from_right > batch.rank) {
        int grow = pos_from_right - batch.rank;
        if (batch.rank + grow > MAX_RANK) return FAIL(m, "Module %s: batch rank too large", m->what);
        memmove(batch.dim + grow, batch.dim, sizeof(int64_t) * (size_t)batch.rank);
        for (int j = 0; j < grow; j++) batch.dim[j] = v->shape.dim[k + j];
        batch.rank += grow;
      }
      int64_t *b = &batch.dim[batch.rank - pos_from_right];
      if (*b != v->shape.dim[k])
        return FAIL(m, "Module %s: batch dimensions of the arguments disagree (%s vs %s; module batching "
                       "needs exact equality, no broadcasting)",
                    m->what, sz(m, *b), sz(m, v->shape.dim[k]));
    }
  }
  const Shape *body = &n->child[0]->shape;
  if (batch.rank + body->rank > MAX_RANK) return FAIL(m, "Module %s: rank too large", m->what);
  n->shape = batch;
  for (int k = 0; k < body->rank; k++) n->shape.dim[n->shape.rank++] = ir_apply_size_map(body->dim[k], map);
  return true;
}

/* A GeneralFunction implemented by --ops function op: its form's arity and shape. */
static bool make_user_op(Make *m, const UserOp *op) {
  Node *n = m->n;
  switch (op->form) {
  case OP_UNARY:
    if (!want_children(m, 1, 1)) return false;
    n->shape = n->child[0]->shape;
    return true;
  case OP_BINARY: return want_children(m, 2, 2) && broadcast(m, &n->shape);
  case OP_ROW:
    if (!want_children(m, 1, 1)) return false;
    n->shape = n->child[0]->shape;
    if (n->shape.rank < 1)
      return FAIL(m, "GeneralFunction %s: the row function %s needs an input of rank >= 1, found shape []", m->what,
                  op->function);
    return true;
  case OP_GENERAL: break;
  }
  const UserShapeRule *r = &op->shape;
  if (!want_children(m, r->nin, -1)) return false;
  if (r->rank < 0) {
    n->shape = n->child[r->in[0]]->shape;
    return true;
  }
  Shape out = {.rank = r->rank};
  for (int d = 0; d < r->rank; d++) {
    if (r->in[d] < 0) {
      out.dim[d] = r->size[d];
      continue;
    }
    const Shape *in = &n->child[r->in[d]]->shape;
    int a = r->axis[d] < 0 ? r->axis[d] + in->rank : r->axis[d];
    if (a < 0 || a >= in->rank)
      return FAIL(m, "GeneralFunction %s: the shape rule '%s' of %s reads axis %d of child %d, which has shape %s",
                  m->what, op->rule_text, op->function, r->axis[d], r->in[d], shp(m, in));
    out.dim[d] = in->dim[a];
  }
  n->shape = out;
  return true;
}

/* Whether s has a size 0 (no elements; symbolic sizes never are, and their
 * products may overflow, so no numel). */
static bool shape_is_empty(const Shape *s) {
  for (int k = 0; k < s->rank; k++)
    if (s->dim[k] == 0) return true;
  return false;
}

static bool make_genfn(Make *m) {
  Node *n = m->n;
  GenFnSpec *g = &n->u.gf;
  switch (genfn_class(g->fn)) {
  case GF_ELEMENTWISE:
    if (!want_children(m, 1, 1)) return false;
    n->shape = n->child[0]->shape;
    return true;
  case GF_LAST_AXIS:
  case GF_REDUCE_LAST:
    if (!want_children(m, 1, 1)) return false;
    n->shape = n->child[0]->shape;
    if (n->shape.rank < 1)
      return FAIL(m, "GeneralFunction %s: %s needs an input of rank >= 1, found shape []", m->what, g->text);
    if (genfn_class(g->fn) == GF_REDUCE_LAST) n->shape.rank--;
    return true;
  case GF_SPECIAL: break;
  }
  switch (g->fn) {
  case GF_POW:
    return want_children(m, 2, 2) && broadcast(m, &n->shape);
  case GF_CAST:
  case GF_PATCH:
    if (!want_children(m, 1, 1)) return false;
    n->shape = n->child[0]->shape;
    return true;
  case GF_GEN_INDEX: {
    if (!want_children(m, 2, 2)) return false;
    const Shape *x = &n->child[0]->shape, *idx = &n->child[1]->shape;
    Shape out = {0};
    int axis; /* the axis of x the index picks along */
    if (g->batch_index && g->batch_x) {
      if (idx->rank >= x->rank)
        return FAIL(m, "GeneralFunction %s: %s needs x of higher rank than the index (x %s, index %s)", m->what,
                    g->text, shp(m, x), shp(m, idx));
      for (int k = 0; k < idx->rank; k++)
        if (x->dim[k] != idx->dim[k])
          return FAIL(m, "GeneralFunction %s: %s needs the index shape %s to equal the leading dims of x %s",
                      m->what, g->text, shp(m, idx), shp(m, x));
      int suffix = x->rank - idx->rank, d = g->dim < 0 ? g->dim + suffix : g->dim;
      if (d < 0 || d >= suffix)
        return FAIL(m, "GeneralFunction %s: axis %d out of range for the %d non-batch dims of x", m->what, g->dim,
                    suffix);
      axis = idx->rank + d;
      for (int k = 0; k < x->rank; k++)
        if (k != axis) out.dim[out.rank++] = x->dim[k];
    } else {
      int d = g->dim < 0 ? g->dim + x->rank : g->dim;
      axis = d;
      if (d < 0 || d >= x->rank)
        return FAIL(m, "GeneralFunction %s: axis %d out of range for x of shape %s", m->what, g->dim, shp(m, x));
      if (!g->batch_index && g->batch_x && g->dim >= 0)
        return FAIL(m, "GeneralFunction %s: %s with _batch_x and _no_batch_index needs a negative axis", m->what,
                    g->text);
      if (x->rank - 1 + idx->rank > MAX_RANK) return FAIL(m, "GeneralFunction %s: rank too large", m->what);
      if (g->batch_index) {
        for (int k = 0; k < idx->rank; k++) out.dim[out.rank++] = idx->dim[k];
        for (int k = 0; k < x->rank; k++)
          if (k != d) out.dim[out.rank++] = x->dim[k];
      } else {
        for (int k = 0; k < d; k++) out.dim[out.rank++] = x->dim[k];
        for (int k = 0; k < idx->rank; k++) out.dim[out.rank++] = idx->dim[k];
        for (int k = d + 1; k < x->rank; k++) out.dim[out.rank++] = x->dim[k];
      }
    }
    if (x->dim[axis] == 0 && !shape_is_empty(&out))
      return FAIL(m, "GeneralFunction %s: %s picks along axis %d of x %s, which has size 0: no index is in range",
                  m->what, g->text, axis, shp(m, x));
    n->shape = out;
    return true;
  }
  case GF_EXPLICIT_INDEX: {
    if (!want_children(m, 2, 2)) return false;
    const Shape *x = &n->child[0]->shape, *idx = &n->child[1]->shape;
    int nb = x->rank - g->non_b, d = g->dim < 0 ? g->dim + g->non_b : g->dim;
    if (nb < 0 || idx->rank < nb || d < 0 || d >= g->non_b)
      return FAIL(m, "GeneralFunction %s: %s does not fit x %s and index %s", m->what, g->text, shp(m, x),
                  shp(m, idx));
    for (int k = 0; k < nb; k++)
      if (x->dim[k] != idx->dim[k])
        return FAIL(m, "GeneralFunction %s: batch dims of x %s and index %s differ", m->what, shp(m, x),
                    shp(m, idx));
    Shape out = *idx;
    for (int k = 0; k < g->non_b; k++)
      if (k != d) {
        if (out.rank >= MAX_RANK) return FAIL(m, "GeneralFunction %s: rank too large", m->what);
        out.dim[out.rank++] = x->dim[nb + k];
      }
    if (x->dim[nb + d] == 0 && !shape_is_empty(&out))
      return FAIL(m, "GeneralFunction %s: %s picks along axis %d of x %s, which has size 0: no index is in range",
                  m->what, g->text, nb + d, shp(m, x));
    n->shape = out;
    return true;
  }
  case GF_USER:
    if (g->user) return make_user_op(m, g->user);
    /* no implementation (resolve reports it if the node is used) */
    /* fall through */
  case GF_MULTINOMIAL:
    /* not evaluable; keep the first child's shape so the circuit still parses */
    if (!want_children(m, 1, -1)) return false;
    n->shape = n->child[0]->shape;
    return true;
  default: ICE("unhandled general function %d", (int)g->fn);
  }
}

static bool make_shape(Make *m) {
  Node *n = m->n;
  switch (n->kind) {
  case NK_Einsum: return make_einsum(m);
  case NK_Array: {
    if (!want_children(m, 0, 0)) return false;
    const Tensor *t = n->u.array.tensor;
    if (t) n->shape = t->shape; /* else not loaded yet: the declared shape */
    for (int k = 0; k < n->shape.rank; k++)
      if (size_is_symbolic(n->shape.dim[k]))
        return FAIL(m, "Array %s: arrays cannot have symbolic sizes (shape %s)", m->what, shp(m, &n->shape));
    return true;
  }
  case NK_Symbol:
  case NK_Scalar: return want_children(m, 0, 0);
  case NK_Add: return broadcast(m, &n->shape);
  case NK_Rearrange: return want_children(m, 1, 1) && make_rearrange(m);
  case NK_Index: return want_children(m, 1, 1) && check_index(m, &n->child[0]->shape, false, &n->shape);
  case NK_Scatter: {
    Shape slices;
    if (!want_children(m, 1, 1) || !check_index(m, &n->shape, true, &slices)) return false;
    if (!shape_eq(&slices, &n->child[0]->shape))
      return FAIL(m, "Scatter %s: child shape %s does not match the slice sizes %s", m->what,
                  shp(m, &n->child[0]->shape), shp(m, &slices));
    return true;
  }
  case NK_GeneralFunction: return make_genfn(m);
  case NK_Concat: {
    if (!want_children(m, 1, -1)) return false;
    const Shape *s0 = &n->child[0]->shape;
    int axis = n->u.concat.axis < 0 ? n->u.concat.axis + s0->rank : n->u.concat.axis;
    if (axis < 0 || axis >= s0->rank)
      return FAIL(m, "Concat %s: axis %d out of range for rank %d", m->what, n->u.concat.axis, s0->rank);
    n->u.concat.axis = axis;
    n->shape = *s0;
    for (int i = 1; i < n->nchild; i++) {
      const Shape *s = &n->child[i]->shape;
      bool ok = s->rank == s0->rank;
      for (int k = 0; ok && k < s->rank; k++)
        if (k != axis && s->dim[k] != s0->dim[k]) ok = false;
      if (!ok)
        return FAIL(m, "Concat %s: child %d has shape %s, incompatible with %s on axis %d", m->what, i,
                    shp(m, s), shp(m, s0), axis);
      if (__builtin_add_overflow(n->shape.dim[axis], s->dim[axis], &n->shape.dim[axis]))
        return FAIL(m, "Concat %s: size overflow", m->what);
    }
    return true;
  }
  case NK_Module: return want_children(m, 1, -1) && make_module(m);
  case NK_SetSymbolicShape: {
    if (!want_children(m, 1, 1)) return false;
    const Shape *s = &n->child[0]->shape;
    bool ok = s->rank == n->shape.rank;
    for (int k = 0; ok && k < s->rank; k++)
      if (s->dim[k] != n->shape.dim[k] && !size_is_symbolic(s->dim[k]) && !size_is_symbolic(n->shape.dim[k]))
        ok = false;
    if (!ok)
      return FAIL(m, "SetSymbolicShape %s: shape %s is incompatible with the child's %s", m->what,
                  shp(m, &n->shape), shp(m, s));
    return true;
  }
  case NK_Tag:
    if (!want_children(m, 1, 1)) return false;
    n->shape = n->child[0]->shape;
    return true;
  case NK_DiscreteVar: {
    if (!want_children(m, 2, 2)) return false;
    const Shape *v = &n->child[0]->shape, *p = &n->child[1]->shape;
    if (v->rank < 1 || p->rank != 1 || p->dim[0] != v->dim[0])
      return FAIL(m, "DiscreteVar %s: needs values [S,...] and probs [S], found %s and %s", m->what, shp(m, v),
                  shp(m, p));
    n->shape.rank = v->rank - 1;
    memcpy(n->shape.dim, v->dim + 1, sizeof(int64_t) * (size_t)(v->rank - 1));
    return true;
  }
  case NK_StoredCumulantVar: {
    int k = n->u.stored_cumulant.norders;
    if (!want_children(m, k, k) || k == 0) return k ? false : FAIL(m, "StoredCumulantVar %s: no orders", m->what);
    int o0 = n->u.stored_cumulant.orders[0];
    const Shape *s0 = &n->child[0]->shape;
    if (o0 <= 0 || s0->rank % o0) return FAIL(m, "StoredCumulantVar %s: bad order %d", m->what, o0);
    n->shape.rank = s0->rank / o0;
    memcpy(n->shape.dim, s0->dim, sizeof(int64_t) * (size_t)n->shape.rank);
    return true;
  }
  case NK_Cumulant:
    n->shape.rank = 0;
    for (int i = 0; i < n->nchild; i++) {
      const Shape *s = &n->child[i]->shape;
      if (n->shape.rank + s->rank > MAX_RANK) return FAIL(m, "Cumulant %s: rank too large", m->what);
      for (int k = 0; k < s->rank; k++) n->shape.dim[n->shape.rank++] = s->dim[k];
    }
    return true;
  case NK_Conv: return FAIL(m, "Conv %s: Conv nodes cannot be read from text (rust_circuit's parser does not "
                               "implement them)", m->what);
  case NK_COUNT: break;
  }
  ICE("unknown node kind %d", (int)n->kind);
}

static DType derive_dtype(const Node *n) {
  switch (n->kind) {
  case NK_Array: return n->u.array.tensor ? n->u.array.tensor->dtype : DT_F32;
  case NK_Scalar: return DT_F64;
  case NK_Symbol: return DT_UNKNOWN;
  case NK_GeneralFunction:
    if (n->u.gf.fn == GF_CAST) return n->u.gf.cast_to == DT_UNKNOWN ? n->child[0]->dtype : n->u.gf.cast_to;
    if (n->u.gf.fn == GF_GEN_INDEX || n->u.gf.fn == GF_EXPLICIT_INDEX) return n->child[0]->dtype;
    break;
  case NK_Module: return n->child[0]->dtype;
  default: break;
  }
  /* first child dtype that is neither f64 (Scalars are "weak") nor unknown */
  DType any = DT_UNKNOWN;
  for (int i = 0; i < n->nchild; i++) {
    DType t = n->child[i]->dtype;
    if (t != DT_F64 && t != DT_UNKNOWN) return t;
    if (t == DT_F64) any = DT_F64;
  }
  return any;
}

/* Validates n (a copy of its prototype) and computes its shape, dtype and hash. */
static bool make(Comp *c, Node *n) {
  Make m = {c, n, n->name ? arena_printf(&c->arena, "'%s'", n->name) : "(unnamed)"};
  if (n->kind >= NK_COUNT) ICE("bad node kind %d", (int)n->kind);
  if (!make_shape(&m)) return false;
  int64_t span = 1; /* the product of the sizes, 0 counted as 1: what strides reach */
  for (int k = 0; k < n->shape.rank; k++) {
    if (n->shape.dim[k] < 0) {
      diag_error(c, n->loc, "%s %s: negative size in shape %s", kind_name(n->kind), m.what, shp(&m, &n->shape));
      return false;
    }
    /* symbolic sizes are large primes whose products may overflow; only real shapes must fit */
    int64_t d = n->shape.dim[k] ? n->shape.dim[k] : 1;
    if (!size_is_symbolic(d) && __builtin_mul_overflow(span, d, &span)) {
      diag_error(c, n->loc, "%s %s: shape %s spans more than 2^63 elements (a size 0 counted as 1)",
                 kind_name(n->kind), m.what, shp(&m, &n->shape));
      return false;
    }
  }
  n->dtype = derive_dtype(n);
  n->hash = node_hash(n);
  return true;
}

Node *ir_make(Comp *c, const Node *proto) {
  for (int i = 0; i < proto->nchild; i++)
    if (!proto->child[i]) return NULL;
  Node *n = ARENA_NEW(&c->arena, Node);
  *n = *proto;
  n->id = c->next_node_id++;
  if (n->nchild) {
    n->child = ARENA_ARRAY(&c->arena, Node *, n->nchild);
    memcpy(n->child, proto->child, sizeof(Node *) * (size_t)n->nchild);
  }
  return make(c, n) ? n : NULL;
}

bool ir_remake(Comp *c, Node *n) {
  Node m = *n;
  if (!make(c, &m)) return false;
  *n = m;
  return true;
}

Node *ir_with_children(Comp *c, const Node *n, Node **child, int nchild) {
  Node proto = *n;
  proto.child = child;
  proto.nchild = nchild;
  if (n->kind == NK_Rearrange) proto.u.rearrange.size = n->u.rearrange.written_size;
  return ir_make(c, &proto);
}

bool symbol_same_id(const Node *a, const Node *b) {
  return a == b || (!strcmp(a->u.symbol.uuid, b->u.symbol.uuid) &&
                    ((!a->name && !b->name) || (a->name && b->name && !strcmp(a->name, b->name))));
}

bool symbol_same(const Node *a, const Node *b) { return symbol_same_id(a, b) && shape_eq(&a->shape, &b->shape); }

typedef struct NamePos {
  const char *name;
  int pos;
} NamePos;

static int name_cmp(const char *a, const char *b) { return !a || !b ? (b != NULL) - (a != NULL) : strcmp(a, b); }

static int namepos_cmp(const void *x, const void *y) {
  const NamePos *a = x, *b = y;
  int c = name_cmp(a->name, b->name);
  return c ? c : (a->pos > b->pos) - (a->pos < b->pos);
}

int *ir_order_by_name(Node *const *a, int n) {
  NamePos *np = malloc(sizeof *np * (size_t)(n + 1));
  int *order = malloc(sizeof *order * (size_t)(n + 1));
  if (!np || !order) ICE("out of memory");
  for (int i = 0; i < n; i++) np[i] = (NamePos){a[i]->name, i};
  qsort(np, (size_t)n, sizeof *np, namepos_cmp);
  for (int i = 0; i < n; i++) order[i] = np[i].pos;
  free(np);
  return order;
}

int ir_find_name(Node *const *a, const int *order, int n, const char *name) {
  int lo = 0, hi = n;   /* the first position in order whose name is >= name */
  while (lo < hi) {
    int mid = lo + (hi - lo) / 2;
    if (name_cmp(a[order[mid]]->name, name) < 0) lo = mid + 1;
    else hi = mid;
  }
  return lo < n && name_cmp(a[order[lo]]->name, name) == 0 ? order[lo] : -1;
}

bool ir_walk(const Node *root, IrVisit *enter, IrVisit *leave, void *arg) {
  typedef struct Frame {
    Node *n;
    int next; /* the child to walk next */
  } Frame;
  Frame local[64], *stack = local; /* shallow walks (most nested ones) need no heap */
  size_t cap = sizeof local / sizeof *local, top = 0;
  bool ok = true;
  Node *r = (Node *)root; /* the walk edits nothing; callbacks get nodes as children are: Node * */
  if (enter(r, arg)) stack[top++] = (Frame){r, 0};
  while (top) {
    Frame *f = &stack[top - 1];
    if (f->next < f->n->nchild) {
      Node *ch = f->n->child[f->next++];
      if (!enter(ch, arg)) continue;
      if (top == cap) {
        Frame *grown = malloc(2 * cap * sizeof *grown);
        if (!grown) ICE("out of memory");
        memcpy(grown, stack, top * sizeof *stack);
        if (stack != local) free(stack);
        stack = grown, cap *= 2;
      }
      stack[top++] = (Frame){ch, 0};
      continue;
    }
    top--;
    if (leave && !leave(f->n, arg)) {
      ok = false;
      break;
    }
  }
  if (stack != local) free(stack);
  return ok;
}

typedef struct Depths {
  int64_t *depth; /* by node id: 0 not reached, -1 being walked, else 1 + the deepest child's */
  int64_t best;
  const Node *deepest;
} Depths;

static bool depth_enter(Node *n, void *arg) {
  Depths *d = arg;
  if (d->depth[n->id]) return false;
  d->depth[n->id] = -1;
  return true;
}

static bool depth_leave(Node *n, void *arg) {
  Depths *d = arg;
  int64_t v = 1;
  for (int i = 0; i < n->nchild; i++)
    if (d->depth[n->child[i]->id] + 1 > v) v = d->depth[n->child[i]->id] + 1;
  d->depth[n->id] = v;
  if (v > d->best) d->best = v, d->deepest = n;
  return true;
}

int64_t ir_depth(Comp *c, Node *const *roots, int n, const Node **deepest) {
  Depths d = {.depth = calloc((size_t)c->next_node_id + 1, sizeof(int64_t))};
  if (!d.depth) ICE("out of memory");
  for (int r = 0; r < n; r++) ir_walk(roots[r], depth_enter, depth_leave, &d);
  free(d.depth);
  *deepest = d.deepest;
  return d.best;
}
