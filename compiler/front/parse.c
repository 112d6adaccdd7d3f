/* parse.c — rust_circuit's text format (rust_circuit_format.md §1–2) → DAG.
 * No I/O: an Array records its hash prefix (or its share of the RNG for
 * `rand`) and its declared shape, an index tensor its prefix and length;
 * load.c reads the tensors afterwards.
 *
 * Two phases. (1) A line-by-line pass turns every node line into a PNode: its
 * identity, declared info and parsed parameters, plus child edges; nothing is
 * built yet, so a node's identity is global to the file. (2) A post-order walk
 * builds nodes bottom-up with ir_make and detects cycles. Every problem is
 * reported as file:line:col and parsing continues: a bad line is skipped with
 * its children, and nodes above a failed node are silently left unbuilt. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "circc.h"

/* Random Arrays are materialised by load_tensors; refuse absurd sizes here, where
 * the shape is written, instead of dying in calloc there. Fuzz builds use a small
 * limit so runs stay fast. */
#ifdef FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION
#define MAX_RANDOM_NUMEL ((int64_t)1 << 16)
#else
#define MAX_RANDOM_NUMEL ((int64_t)1 << 27)
#endif
#define MAX_REARRANGE_IDS 256 /* rust_circuit stores rearrange ids as u8 */

/* ------------------------------------------------------------ small helpers */

static void *xrealloc(void *p, size_t n) {
  void *q = realloc(p, n ? n : 1);
  if (!q) ICE("out of memory (%zu bytes)", n);
  return q;
}

#define GROW(arr, n, cap)                                              \
  do {                                                                 \
    if ((n) == (cap)) {                                                \
      (cap) = (cap) ? 2 * (cap) : 16;                                  \
      (arr) = xrealloc((arr), sizeof *(arr) * (size_t)(cap));          \
    }                                                                  \
  } while (0)

/* Decodes one UTF-8 scalar; returns its length, or 0 if the bytes are invalid. */
static int utf8_decode(const char *s, const char *e, uint32_t *cp) {
  const unsigned char *u = (const unsigned char *)s;
  if (u[0] < 0x80) { *cp = u[0]; return 1; }
  int n = u[0] >= 0xF8 ? 0 : u[0] >= 0xF0 ? 4 : u[0] >= 0xE0 ? 3 : u[0] >= 0xC0 ? 2 : 0;
  if (!n || e - s < n) return 0;
  uint32_t v = u[0] & (0x7Fu >> n);
  for (int i = 1; i < n; i++) {
    if ((u[i] & 0xC0) != 0x80) return 0;
    v = v << 6 | (u[i] & 0x3Fu);
  }
  *cp = v;
  return n;
}

/* Length of the Unicode whitespace character at s, 0 if there is none. */
static int space_len(const char *s, const char *e) {
  unsigned char c0 = (unsigned char)*s;
  if (c0 == ' ' || (c0 >= 0x09 && c0 <= 0x0d)) return 1;
  if (c0 < 0x80) return 0;
  uint32_t cp;
  int n = utf8_decode(s, e, &cp);
  if (n && (cp == 0x85 || cp == 0xA0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 ||
            cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000))
    return n;
  return 0;
}

/* Indent characters (§2.1): whitespace plus the glyphs │ └ ├ ‣ ─ of arrows=True output. */
static int indent_len(const char *s, const char *e) {
  int n = space_len(s, e);
  if (n || (unsigned char)*s < 0x80) return n;
  uint32_t cp;
  n = utf8_decode(s, e, &cp);
  return n && (cp == 0x2502 || cp == 0x2514 || cp == 0x251C || cp == 0x2023 || cp == 0x2500) ? n : 0;
}

static const char *skip_space(const char *s, const char *e) {
  for (int n; s < e && (n = space_len(s, e)) > 0;) s += n;
  return s;
}

/* Moves e back over trailing whitespace (or indent characters). The trailing
 * character is found by backing over UTF-8 continuation bytes. */
static const char *trim_back(const char *s, const char *e, bool indent_chars) {
  while (e > s) {
    const char *c = e - 1;
    while (c > s && ((unsigned char)*c & 0xC0) == 0x80) c--;
    int n = indent_chars ? indent_len(c, e) : space_len(c, e);
    if (n != e - c) break;
    e = c;
  }
  return e;
}

static bool is_digit(char ch) { return ch >= '0' && ch <= '9'; }
static bool is_alpha(char ch) { return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z'); }
static bool is_hex(char ch) { return is_digit(ch) || (ch >= 'a' && ch <= 'f') || (ch >= 'A' && ch <= 'F'); }
static char lower(char ch) { return ch >= 'A' && ch <= 'Z' ? (char)(ch - 'A' + 'a') : ch; }

static uint64_t hash_bytes(const char *s, size_t n) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 0x100000001b3ull;
  return h;
}

/* String → int map with open addressing (identifiers, fancy einsum words,
 * rearrange names). Keys are not copied: they must outlive the map. */
typedef struct MapEnt {
  const char *key;
  size_t len;
  int val;
} MapEnt;
typedef struct StrMap {
  MapEnt *e;
  size_t cap, n;
} StrMap;

static int map_get(const StrMap *m, const char *k, size_t n) {
  if (!m->cap) return -1;
  for (size_t i = hash_bytes(k, n) & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
    if (!m->e[i].key) return -1;
    if (m->e[i].len == n && memcmp(m->e[i].key, k, n) == 0) return m->e[i].val;
  }
}

static void map_put(StrMap *m, const char *k, size_t n, int val) {
  if ((m->n + 1) * 2 > m->cap) {
    StrMap g = {calloc(m->cap ? 2 * m->cap : 64, sizeof(MapEnt)), m->cap ? 2 * m->cap : 64, 0};
    if (!g.e) ICE("out of memory");
    for (size_t i = 0; i < m->cap; i++)
      if (m->e[i].key) map_put(&g, m->e[i].key, m->e[i].len, m->e[i].val);
    free(m->e);
    *m = g;
  }
  size_t i = hash_bytes(k, n) & (m->cap - 1);
  while (m->e[i].key) i = (i + 1) & (m->cap - 1);
  m->e[i] = (MapEnt){k, n, val};
  m->n++;
}

static void map_free(StrMap *m) {
  free(m->e);
  *m = (StrMap){0};
}

/* --------------------------------------------------------------- the state */

/* A node line as read, before building. One per identifier. */
typedef struct PNode {
  const char *label;     /* the identifier as written, for messages: 17 or 'a.b' */
  int line;              /* line of the defining line */
  int kind;              /* NodeKind, -1 if the defining line failed before the kind */
  bool bad;              /* definition invalid or a child line failed: never built */
  bool cyclic;           /* on a reported cycle */
  bool external;         /* a reference circuit (RefCircuits): built already, mentioned by bare name */
  bool has_shape;        /* a [shape] was declared */
  Loc shape_loc, extra_loc;
  const char *extra;     /* trimmed extra text, compared when a reference restates it */
  int nops;              /* Einsum: operands written */
  bool einsum_no_lhs;    /* Einsum "->..": zero operands if the node has no children */
  Node proto;            /* kind, loc, name, AD, declared shape, parameters */
  int first, nedge;      /* child edges (after parsing: a range of Parser.edge) */
  int state;             /* build walk: 0 new, 1 on the stack, 2 done */
  Node *built;
} PNode;

/* Parent → child, in file order. Module arguments carry their binding. */
typedef struct Edge {
  int parent, child;
  Loc loc;               /* the child's line */
  int sym;               /* Module argument: PNode of the bound Symbol, else -1 */
  bool flag[3];          /* batchable, expandable, ban_non_symbolic_size_expand */
  Loc bang;              /* the '!' */
} Edge;

/* One open line on the indentation stack. */
typedef struct Frame {
  int pn;                /* PNode, -1 if unknown */
  bool is_ref;           /* the line repeated an earlier node: no children allowed */
  bool dead;             /* the line failed: its children are read but attached to nothing */
  bool reported;         /* "cannot have children" already said for this line */
  int nkids;
} Frame;

/* A shape restated by a reference to a node that declared none: checked after building. */
typedef struct Restate {
  int pn;
  Shape shape;
  Loc loc;
} Restate;

typedef struct Parser {
  Comp *c;
  const char *file;
  const char *ls;        /* start of the current line: columns count from here */
  int lineno;
  PNode *pn;
  int npn, cappn;
  StrMap ids;            /* identifier key → PNode */
  const RefCircuits *refs;
  StrMap ref_names;      /* reference circuit name → index in refs */
  Edge *edge;
  int nedge, capedge;
  Frame *stk;
  int depth, capstk;
  int *top;
  int ntop, captop;
  Restate *rs;
  int nrs, caprs;
  int base;              /* indentation of the first node line, -1 before it */
  bool marker;           /* the previous line was an only-child marker (▼ or |/) */
  int skip;              /* skipping lines indented deeper than this; -1 = not skipping */
} Parser;

/* Location of s in the current line: col counts Unicode scalars (as diag.c does). */
static Loc at(const Parser *p, const char *s) {
  int col = 1;
  for (const char *q = p->ls; q < s; q++)
    if (((unsigned char)*q & 0xC0) != 0x80) col++;
  return (Loc){p->file, p->lineno, col};
}

#define ERR(p, s, ...) diag_error((p)->c, at((p), (s)), __VA_ARGS__)

/* The token at s for "found ..." in messages: up to the next whitespace, at most ~40 bytes. */
static const char *found(Parser *p, const char *s, const char *e) {
  if (s >= e) return "end of line";
  const char *q = s;
  while (q < e && !space_len(q, e) && q - s < 40) q++;
  while (q < e && q > s && ((unsigned char)*q & 0xC0) == 0x80) q--; /* don't cut a character */
  if (q == s) q = s + 1;
  return arena_printf(&p->c->arena, "'%.*s'%s", (int)(q - s), s, q < e && !space_len(q, e) ? "..." : "");
}

static const char *a_an(const char *word) { return strchr("AEIOU", word[0]) ? "an" : "a"; }

/* ------------------------------------------------------------------ numbers */

/* [+-]digit{digit|_}: 0 ok, 1 not an integer, 2 overflow. */
static int parse_i64(const char *s, const char *e, int64_t *out) {
  bool neg = false;
  if (s < e && (*s == '-' || *s == '+')) neg = *s++ == '-';
  if (s >= e || !is_digit(*s)) return 1;
  uint64_t v = 0, lim = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
  for (; s < e; s++) {
    if (*s == '_') continue;
    if (!is_digit(*s)) return 1;
    unsigned d = (unsigned)(*s - '0');
    if (v > (lim - d) / 10) return 2;
    v = v * 10 + d;
  }
  *out = neg ? (int64_t)(0 - v) : (int64_t)v;
  return 0;
}

static bool mul_ok(int64_t a, int64_t b, int64_t *out) {
  if (a != 0 && b > INT64_MAX / a) return false;
  *out = a * b;
  return true;
}

/* A size product (§2.4): item { ws* '*' ws* item }, item = digit {digit|_} [s].
 * Reads from *ps, stops before anything else (trailing spaces not consumed). */
static bool parse_sizeprod(Parser *p, const char **ps, const char *e, int64_t *out) {
  const char *s = *ps;
  int64_t prod = 1;
  for (;;) {
    const char *a = s;
    if (s >= e || !is_digit(*s)) {
      ERR(p, s, "expected a size (e.g. 768, 1_000, 0s, 2*1s), found %s", found(p, s, e));
      return false;
    }
    while (s < e && (is_digit(*s) || *s == '_')) s++;
    int64_t v;
    if (parse_i64(a, s, &v)) {
      ERR(p, a, "size '%.*s' does not fit in 64 bits", (int)(s - a), a);
      return false;
    }
    if (s < e && *s == 's') {
      s++;
      if (v >= NUM_SYMBOLIC_SIZES) {
        ERR(p, a, "symbolic size '%.*s' is out of range (expected 0s to %ds)", (int)(s - a), a,
            NUM_SYMBOLIC_SIZES - 1);
        return false;
      }
      v = symbolic_prime((int)v);
    }
    if (!mul_ok(prod, v, &prod)) {
      ERR(p, *ps, "size product '%.*s' overflows 64 bits", (int)(s - *ps), *ps);
      return false;
    }
    const char *t = skip_space(s, e);
    if (t >= e || *t != '*') break;
    s = skip_space(t + 1, e);
  }
  *out = prod;
  *ps = s;
  return true;
}

/* [axis, ...] with axis = [name:] sizeprod (§2.4); *ps points at '['. */
static bool parse_shape(Parser *p, const char **ps, const char *e, Shape *out) {
  const char *s = skip_space(*ps + 1, e);
  out->rank = 0;
  while (s < e && *s != ']') {
    /* an axis name runs to ':' (names are metadata: accepted and dropped) */
    const char *q = s;
    while (q < e && !space_len(q, e) && !strchr(":[],*", *q)) q++;
    const char *t = skip_space(q, e);
    if (t < e && *t == ':') s = skip_space(t + 1, e);
    int64_t v;
    if (!parse_sizeprod(p, &s, e, &v)) return false;
    if (out->rank == MAX_RANK) {
      ERR(p, *ps, "shape has more than %d axes", MAX_RANK);
      return false;
    }
    out->dim[out->rank++] = v;
    s = skip_space(s, e);
    if (s < e && *s == ',') {
      s = skip_space(s + 1, e);
    } else if (s < e && *s != ']') {
      ERR(p, s, "expected ',' or ']' in the shape, found %s", found(p, s, e));
      return false;
    }
  }
  if (s >= e) {
    ERR(p, *ps, "unclosed '[': expected ']' to end the shape");
    return false;
  }
  *ps = s + 1;
  return true;
}

/* ---------------------------------------------------------- per-kind extras */

/* Einsum axis letter at s: a..z=0..25, A..Z=26..51, α..ψ (U+03B1..U+03C8)=52..75. */
static int einsum_letter(const char *s, const char *e, int *len) {
  *len = 1;
  if (*s >= 'a' && *s <= 'z') return *s - 'a';
  if (*s >= 'A' && *s <= 'Z') return 26 + *s - 'A';
  uint32_t cp;
  int n = utf8_decode(s, e, &cp);
  if (n > 1) *len = n;
  if (n && cp >= 0x3B1 && cp <= 0x3C8) return 52 + (int)(cp - 0x3B1);
  return -1;
}

/* Finds the single "->" of an einsum or rearrange spec. */
static const char *find_arrow(Parser *p, const char *s, const char *e, const char *what) {
  const char *arrow = NULL;
  for (const char *q = s; q + 1 < e; q++)
    if (q[0] == '-' && q[1] == '>') {
      if (arrow) {
        ERR(p, q, "%s spec has a second '->' (expected exactly one)", what);
        return NULL;
      }
      arrow = q++;
    }
  if (!arrow) ERR(p, s, "expected '->' in the %s spec, found %s", what, found(p, s, e));
  return arrow;
}

/* Letters of one einsum operand (whitespace ignored) → ids. */
static bool einsum_axes(Parser *p, const char *s, const char *e, bool output, int **ids, int *rank) {
  int n = 0, len;
  for (const char *q = s; q < e; q += len) {
    int sp = space_len(q, e);
    if (sp) { len = sp; continue; }
    if (einsum_letter(q, e, &len) < 0) {
      if (output && *q == ',')
        ERR(p, q, "unexpected ',' after '->' (an einsum has one output)");
      else
        ERR(p, q, "expected an einsum axis letter (a-z, A-Z or α-ψ), found %s",
            found(p, q, q + (len > 0 ? len : 1)));
      return false;
    }
    n++;
  }
  *ids = ARENA_ARRAY(&p->c->arena, int, n);
  *rank = 0;
  for (const char *q = s; q < e; q += len) {
    int sp = space_len(q, e);
    if (sp) { len = sp; continue; }
    (*ids)[(*rank)++] = einsum_letter(q, e, &len);
  }
  return true;
}

/* Words of one fancy operand → ids by first appearance across the whole spec. */
static void fancy_axes(Parser *p, StrMap *words, const char *s, const char *e, int **ids, int *rank) {
  int n = 0;
  for (const char *q = skip_space(s, e); q < e; q = skip_space(q, e), n++)
    while (q < e && !space_len(q, e)) q++;
  *ids = ARENA_ARRAY(&p->c->arena, int, n);
  *rank = 0;
  for (const char *q = skip_space(s, e); q < e; q = skip_space(q, e)) {
    const char *w = q;
    while (q < e && !space_len(q, e)) q++;
    int id = map_get(words, w, (size_t)(q - w));
    if (id < 0) map_put(words, w, (size_t)(q - w), id = (int)words->n);
    (*ids)[(*rank)++] = id;
  }
}

/* "ab,bc->ac" or "fancy: first second, second -> first" (§2.5.1). The operand
 * count is checked against the children when the node is built. */
static bool parse_einsum(Parser *p, PNode *n, const char *s, const char *e) {
  bool fancy = e - s >= 6 && memcmp(s, "fancy:", 6) == 0;
  const char *body = fancy ? s + 6 : s;
  const char *arrow = find_arrow(p, body, e, "einsum");
  if (!arrow) return false;
  int nops = 1;
  for (const char *q = body; q < arrow; q++) nops += *q == ',';
  EinsumSpec *es = &n->proto.u.einsum;
  es->in = ARENA_ARRAY(&p->c->arena, int *, nops);
  es->in_rank = ARENA_ARRAY(&p->c->arena, int, nops);
  n->nops = nops;
  n->einsum_no_lhs = skip_space(body, arrow) == arrow;
  StrMap words = {0};
  bool ok = true;
  const char *a = body;
  for (int i = 0; i < nops && ok; i++) {
    const char *b = a;
    while (b < arrow && *b != ',') b++;
    if (fancy) fancy_axes(p, &words, a, b, &es->in[i], &es->in_rank[i]);
    else ok = einsum_axes(p, a, b, false, &es->in[i], &es->in_rank[i]);
    a = b + 1;
  }
  if (ok && fancy) {
    for (const char *q = arrow + 2; q < e && ok; q++)
      if (*q == ',') ok = (ERR(p, q, "unexpected ',' after '->' (an einsum has one output)"), false);
    if (ok) fancy_axes(p, &words, arrow + 2, e, &es->out, &es->out_rank);
  } else if (ok) {
    ok = einsum_axes(p, arrow + 2, e, true, &es->out, &es->out_rank);
  }
  map_free(&words);
  return ok;
}

/* Rearrange spec parsing state: names → ids, sizes per id. */
typedef struct RSpec {
  StrMap names;
  int64_t *size;
  int nids, cap;
} RSpec;

static int rspec_new_id(Parser *p, RSpec *r, const char *s, int64_t size) {
  if (r->nids == MAX_REARRANGE_IDS) {
    ERR(p, s, "rearrange spec has more than %d axes", MAX_REARRANGE_IDS);
    return -1;
  }
  GROW(r->size, r->nids, r->cap);
  r->size[r->nids] = size;
  return r->nids++;
}

/* One axis: name[:size] or a size product (a fresh anonymous axis). */
static int rspec_axis(Parser *p, RSpec *r, const char **ps, const char *e) {
  const char *s = *ps;
  if (is_digit(*s)) {
    int64_t v;
    if (!parse_sizeprod(p, ps, e, &v)) return -1;
    return rspec_new_id(p, r, s, v);
  }
  if (!is_alpha(*s)) {
    ERR(p, s, "expected an axis name, a size or '(' in the rearrange spec, found %s", found(p, s, e));
    return -1;
  }
  const char *q = s;
  while (q < e && (is_alpha(*q) || is_digit(*q) || *q == '_')) q++;
  int id = map_get(&r->names, s, (size_t)(q - s));
  if (id < 0) {
    if ((id = rspec_new_id(p, r, s, -1)) < 0) return -1;
    map_put(&r->names, s, (size_t)(q - s), id);
  }
  if (q < e && *q == ':') {
    const char *z = ++q;
    int64_t v;
    if (!parse_sizeprod(p, &q, e, &v)) return -1;
    if (r->size[id] >= 0 && r->size[id] != v) {
      ERR(p, z, "axis '%.*s' is given size %lld here but %lld before", (int)(z - 1 - s), s, (long long)v,
          (long long)r->size[id]);
      return -1;
    }
    r->size[id] = v;
  }
  *ps = q;
  return id;
}

/* One side of a rearrange spec: axes and parenthesised groups. */
static bool rspec_side(Parser *p, RSpec *r, const char *s, const char *e, int *ngroups, int **lens, int ***ids) {
  int cap = 0, n = 0, *len = NULL, **grp = NULL, *buf = NULL, bcap = 0;
  bool ok = true;
  for (s = skip_space(s, e); s < e && ok; s = skip_space(s, e)) {
    int k = 0;
    if (*s == '(') {
      const char *open = s;
      for (s = skip_space(s + 1, e); ok && (s >= e || *s != ')'); s = skip_space(s, e)) {
        if (s >= e) {
          ok = (ERR(p, open, "unclosed '(' in the rearrange spec"), false);
          break;
        }
        int id = rspec_axis(p, r, &s, e);
        if (id < 0) ok = false;
        GROW(buf, k, bcap);
        buf[k++] = id;
      }
      s++;
    } else {
      int id = rspec_axis(p, r, &s, e);
      if (id < 0) ok = false;
      GROW(buf, k, bcap);
      buf[k++] = id;
      if (ok && s < e && !space_len(s, e) && *s != '(') {
        ERR(p, s, "expected whitespace between rearrange axes, found %s", found(p, s, e));
        ok = false;
      }
    }
    if (!ok) break;
    GROW(grp, n, cap);
    len = xrealloc(len, sizeof *len * (size_t)cap);
    len[n] = k;
    grp[n] = ARENA_ARRAY(&p->c->arena, int, k);
    if (k) memcpy(grp[n], buf, sizeof(int) * (size_t)k);
    n++;
  }
  if (ok) {
    *ngroups = n;
    *lens = ARENA_ARRAY(&p->c->arena, int, n);
    *ids = ARENA_ARRAY(&p->c->arena, int *, n);
    if (n) {
      memcpy(*lens, len, sizeof(int) * (size_t)n);
      memcpy(*ids, grp, sizeof(int *) * (size_t)n);
    }
  }
  free(len);
  free(grp);
  free(buf);
  return ok;
}

/* "a (b c) -> (a b) 4 c" (§2.5.2): ids by first appearance, input side first;
 * size -1 = to be inferred by ir_make from the child. */
static bool parse_rearrange(Parser *p, PNode *n, const char *s, const char *e) {
  const char *arrow = find_arrow(p, s, e, "rearrange");
  if (!arrow) return false;
  RSpec r = {0};
  RearrangeSpec *rs = &n->proto.u.rearrange;
  bool ok = rspec_side(p, &r, s, arrow, &rs->nin, &rs->in_len, &rs->in_ids) &&
            rspec_side(p, &r, arrow + 2, e, &rs->nout, &rs->out_len, &rs->out_ids);
  if (ok) {
    rs->nids = r.nids;
    rs->size = ARENA_ARRAY(&p->c->arena, int64_t, r.nids);
    if (r.nids) memcpy(rs->size, r.size, sizeof(int64_t) * (size_t)r.nids);
  }
  map_free(&r.names);
  free(r.size);
  return ok;
}

static bool parse_hex_prefix(Parser *p, const char *s, const char *e, const char *what, const char **out) {
  const char *q = s;
  while (q < e && is_hex(*q)) q++;
  if (q == s || q != e || e - s > 64) {
    ERR(p, s, "expected %s (hex digits of a tensor hash), found %s", what, found(p, s, e));
    return false;
  }
  char *h = arena_strndup(&p->c->arena, s, (size_t)(e - s));
  for (char *c = h; *c; c++) *c = lower(*c);
  *out = h;
  return true;
}

/* "[0:2,1,:,t292d9fdb22 [6]]" (§2.5.3). Scatter takes slices only. */
static bool parse_index(Parser *p, PNode *n, const char *s, const char *e) {
  if (e - s < 2 || *s != '[' || e[-1] != ']') {
    ERR(p, s, "expected an index list like [0:2,1,:], found %s", found(p, s, e));
    return false;
  }
  bool scatter = n->kind == NK_Scatter;
  int cap = 1;
  for (const char *q = s + 1; q < e - 1; q++) cap += *q == ',';
  IndexSpec *ix = &n->proto.u.index;
  ix->e = ARENA_ARRAY(&p->c->arena, IndexEntry, cap);
  ix->n = 0;
  for (const char *a = s + 1; a < e - 1;) {
    const char *b = a;
    while (b < e - 1 && *b != ',') b++;
    const char *x = skip_space(a, b), *y = trim_back(x, b, false);
    a = b + 1;
    if (x == y) continue; /* empty entries are ignored, as in rust_circuit */
    IndexEntry *en = &ix->e[ix->n];
    const char *colon = memchr(x, ':', (size_t)(y - x));
    int rc = parse_i64(x, y, &en->i);
    if (rc == 2) {
      ERR(p, x, "index %s does not fit in 64 bits", found(p, x, y));
      return false;
    }
    if (rc == 0 || (*x == 't' && !colon)) {
      if (scatter) {
        ERR(p, x, "Scatter index entries must be slices (a:b), found %s", found(p, x, y));
        return false;
      }
      if (rc == 0) {
        en->kind = IDX_INT;
      } else {
        /* t<hex> [len]: the length gives the entry's size until load_tensors reads the tensor */
        const char *h = x + 1, *he = h;
        while (he < y && *he != '[' && !space_len(he, y)) he++;
        const char *rest = skip_space(he, y);
        if (rest < y && *rest != '[') {
          ERR(p, rest, "unexpected %s after the index tensor hash", found(p, rest, y));
          return false;
        }
        en->kind = IDX_TENSOR;
        en->loc = at(p, x);
        if (!parse_hex_prefix(p, h, he, "an index tensor hash prefix after 't'", &en->prefix)) return false;
        Shape len;
        const char *q = rest;
        if (rest == y) {
          ERR(p, he, "index tensor t%s needs its length, e.g. t%s [6]", en->prefix, en->prefix);
          return false;
        }
        if (!parse_shape(p, &q, y, &len)) return false;
        if (len.rank != 1 || size_is_symbolic(len.dim[0]) || skip_space(q, y) != y) {
          ERR(p, rest, "expected the index tensor's length like [6], found %s", found(p, rest, y));
          return false;
        }
        en->len = len.dim[0];
      }
    } else if (colon) {
      const char *c2 = memchr(colon + 1, ':', (size_t)(y - colon - 1));
      if (c2) {
        ERR(p, c2, "index slices take no step (expected start:stop), found %s", found(p, x, y));
        return false;
      }
      const char *bs[2][2] = {{x, trim_back(x, colon, false)}, {skip_space(colon + 1, y), y}};
      for (int k = 0; k < 2; k++) {
        if (bs[k][0] == bs[k][1]) continue;
        int64_t v;
        if (parse_i64(bs[k][0], bs[k][1], &v)) {
          ERR(p, bs[k][0], "expected an integer slice bound, found %s", found(p, bs[k][0], bs[k][1]));
          return false;
        }
        if (k == 0) en->has_start = true, en->start = v;
        else en->has_stop = true, en->stop = v;
      }
      en->kind = IDX_SLICE;
    } else {
      ERR(p, x, "expected an integer, a slice start:stop or a tensor t<hash> in the index list, found %s",
          found(p, x, y));
      return false;
    }
    ix->n++;
  }
  return true;
}

/* Scalar value: Rust f64 syntax plus underscores (1e-5, 1., -10_000.0, inf, NaN). */
static bool parse_scalar(Parser *p, PNode *n, const char *s, const char *e) {
  if (s == e) {
    ERR(p, s, "Scalar needs a value (e.g. 1.5), found end of line");
    return false;
  }
  char *buf = malloc((size_t)(e - s) + 1), *w = buf;
  if (!buf) ICE("out of memory");
  bool ok = true;
  for (const char *q = s; q < e; q++) {
    if (*q == '_') continue;
    /* strtod also takes hex floats, nan(...) and leading spaces; Rust does not */
    if (*q == 'x' || *q == 'X' || *q == '(' || *q == 'p' || *q == 'P' || space_len(q, e)) ok = false;
    *w++ = *q;
  }
  *w = 0;
  char *end = NULL;
  if (ok && w > buf) n->proto.u.scalar.value = strtod(buf, &end);
  ok = ok && w > buf && end == w;
  free(buf);
  if (!ok) ERR(p, s, "expected a number for the Scalar value (e.g. 1, -0.5, 1e-5, inf, NaN), found %s",
               found(p, s, e));
  return ok;
}

/* A UUID, hyphenated (8-4-4-4-12) or 32 plain hex digits, any case → lowercase
 * hyphenated. `nil_empty`: the nil UUID is stored as "" (Symbols print it so). */
static bool parse_uuid(Parser *p, const char *s, const char *e, char out[37], bool nil_empty) {
  char hex[32];
  int n = 0;
  bool ok = e - s == 36 || e - s == 32;
  for (const char *q = s; ok && q < e; q++) {
    long i = q - s;
    if (e - s == 36 && (i == 8 || i == 13 || i == 18 || i == 23)) ok = *q == '-';
    else if (is_hex(*q)) hex[n++] = lower(*q);
    else ok = false;
  }
  if (!ok || n != 32) {
    ERR(p, s, "expected a UUID like 1a280c74-fa9f-4dd9-94f4-5cca4a0cf243, found %s", found(p, s, e));
    return false;
  }
  bool nil = true;
  for (int i = 0; i < 32; i++) nil &= hex[i] == '0';
  if (nil && nil_empty) {
    out[0] = 0;
    return true;
  }
  snprintf(out, 37, "%.8s-%.4s-%.4s-%.4s-%.12s", hex, hex + 8, hex + 12, hex + 16, hex + 20);
  return true;
}

static void random_uuid(Comp *c, char out[37]) {
  uint8_t b[16];
  for (int i = 0; i < 16; i += 8) {
    uint64_t v = comp_rng_u64(&c->rng_state);
    memcpy(b + i, &v, 8);
  }
  b[6] = (uint8_t)((b[6] & 0x0f) | 0x40); /* version 4 */
  b[8] = (uint8_t)((b[8] & 0x3f) | 0x80); /* RFC 4122 variant */
  char hex[33];
  for (int i = 0; i < 16; i++) snprintf(hex + 2 * i, 3, "%02x", b[i]);
  snprintf(out, 37, "%.8s-%.4s-%.4s-%.4s-%.12s", hex, hex + 8, hex + 12, hex + 16, hex + 20);
}

/* Array: a hash prefix of a tensor in the store, or `rand` / tensors_as_random:
 * an N(0,1) float32 tensor of the declared shape. Records where load_tensors
 * gets the tensor; a random one reserves its draws now, so the values depend
 * on the file order as when the parser drew them itself. */
static bool parse_array(Parser *p, PNode *n, const char *s, const char *e, const char *kind_at) {
  bool rand = e - s == 4 && memcmp(s, "rand", 4) == 0;
  const char *prefix = NULL;
  if (!rand && s < e && !parse_hex_prefix(p, s, e, "a tensor hash prefix or 'rand'", &prefix)) return false;
  n->proto.u.array.prefix_loc = at(p, s);
  n->proto.u.array.shape_loc = n->shape_loc;
  n->proto.u.array.label = n->label;
  if (!rand && !p->c->tensors_as_random) {
    if (!prefix) {
      ERR(p, kind_at, "Array needs a tensor: a hash prefix like 50dba7b000ecd7c013961b6c, or 'rand' with a shape");
      return false;
    }
    if (!n->has_shape) {
      ERR(p, kind_at, "Array needs a shape: write it before the kind, e.g. [2,3] Array %s (the tensor is read "
                      "after parsing)", prefix);
      return false;
    }
    n->proto.u.array.hash_prefix = prefix;
    return true;
  }
  if (!n->has_shape) {
    ERR(p, kind_at, "a random Array needs a shape: write it before the kind, e.g. [2,3] Array rand");
    return false;
  }
  const Shape *sh = &n->proto.shape;
  int64_t numel = 1;
  for (int k = 0; k < sh->rank; k++) {
    if (size_is_symbolic(sh->dim[k])) {
      diag_error(p->c, n->shape_loc, "Array shape %s has a symbolic size; arrays need concrete sizes",
                 shape_str(p->c, sh));
      return false;
    }
    if (!mul_ok(numel, sh->dim[k], &numel) || numel > MAX_RANDOM_NUMEL) {
      diag_error(p->c, n->shape_loc, "random Array of shape %s is too large (at most %lld elements)",
                 shape_str(p->c, sh), (long long)MAX_RANDOM_NUMEL);
      return false;
    }
  }
  n->proto.u.array.rng_seed = p->c->rng_state;
  comp_rng_skip(&p->c->rng_state, 2 * (uint64_t)numel); /* comp_rng_normal takes two draws */
  n->proto.u.array.hash_prefix = prefix;
  n->proto.u.array.random = true;
  return true;
}

/* "1,2|<uuid>": cumulant orders and the variable's UUID. */
static bool parse_stored_cumulant(Parser *p, PNode *n, const char *s, const char *e) {
  const char *bar = memchr(s, '|', (size_t)(e - s));
  if (!bar || memchr(bar + 1, '|', (size_t)(e - bar - 1))) {
    ERR(p, bar ? bar : s, "expected 'orders|uuid' (e.g. 1,2|1a280c74-fa9f-4dd9-94f4-5cca4a0cf243), found %s",
        found(p, s, e));
    return false;
  }
  int cap = 1;
  for (const char *q = s; q < bar; q++) cap += *q == ',';
  int *orders = ARENA_ARRAY(&p->c->arena, int, cap), k = 0;
  for (const char *a = s; a <= bar && k < cap;) {
    const char *b = a;
    while (b < bar && *b != ',') b++;
    const char *x = skip_space(a, b), *y = trim_back(x, b, false);
    int64_t v;
    if (parse_i64(x, y, &v) || v < 0 || v > 1000000) {
      ERR(p, x, "expected a cumulant order (a non-negative integer), found %s", found(p, x, y));
      return false;
    }
    orders[k++] = (int)v;
    a = b + 1;
  }
  n->proto.u.stored_cumulant.orders = orders;
  n->proto.u.stored_cumulant.norders = k;
  const char *u = skip_space(bar + 1, e);
  return parse_uuid(p, u, trim_back(u, e, false), n->proto.u.stored_cumulant.uuid, false);
}

/* Parses the extra field of a new node of kind n->kind (§2.5) into n->proto. */
static bool parse_extra(Parser *p, PNode *n, const char *s, const char *e, const char *kind_at) {
  Node *pr = &n->proto;
  switch ((NodeKind)n->kind) {
  case NK_Conv:
    ERR(p, kind_at, "Conv nodes cannot be read from text (rust_circuit's parser does not implement them)");
    return false;
  case NK_Add:
  case NK_Cumulant:
  case NK_DiscreteVar:
  case NK_Module:
  case NK_SetSymbolicShape:
    if (s == e) return true;
    ERR(p, s, "%s takes no parameters, found %s", kind_name((NodeKind)n->kind), found(p, s, e));
    return false;
  case NK_Einsum: return parse_einsum(p, n, s, e);
  case NK_Rearrange: return parse_rearrange(p, n, s, e);
  case NK_Index:
  case NK_Scatter: return parse_index(p, n, s, e);
  case NK_Scalar: return parse_scalar(p, n, s, e);
  case NK_Array: return parse_array(p, n, s, e, kind_at);
  case NK_Symbol:
    if (e - s == 4 && memcmp(s, "rand", 4) == 0) {
      random_uuid(p->c, pr->u.symbol.uuid);
      return true;
    }
    return s == e || parse_uuid(p, s, e, pr->u.symbol.uuid, true);
  case NK_Tag: return parse_uuid(p, s, e, pr->u.tag.uuid, false);
  case NK_StoredCumulantVar: return parse_stored_cumulant(p, n, s, e);
  case NK_Concat: {
    int64_t v;
    if (parse_i64(s, e, &v) || v < -1000000 || v > 1000000) { /* range: checked by ir_make */
      ERR(p, s, "expected a Concat axis (an integer, negative counts from the end), found %s", found(p, s, e));
      return false;
    }
    pr->u.concat.axis = (int)v;
    return true;
  }
  case NK_GeneralFunction: {
    if (s == e) {
      ERR(p, kind_at, "GeneralFunction needs a function name (e.g. gelu, softmax, gen_index_at_0_c)");
      return false;
    }
    char *text = arena_strndup(&p->c->arena, s, (size_t)(e - s));
    GenFnSpec *g = &pr->u.gf;
    bool known = genfn_parse(text, g);
    if (known && g->fn == GF_USER) { /* --ops: a C function; a simple unknown name needs one */
      g->user = user_op_find(p->c->ops, text, (size_t)g->user_name_len);
      known = g->python || p->c->ops;
    }
    if (!known) {
      ERR(p, s, "unknown GeneralFunction '%s' (expected e.g. gelu, softmax, log_softmax, gen_index_at_0_c, "
                "cast_from_{device:None,dtype:None}_to_{device:None,dtype:float32}; see the README, "
                "\"GeneralFunction names\"; or a C function given with --ops FILE.c)", text);
      return false;
    }
    return true;
  }
  case NK_COUNT: break;
  }
  ICE("unknown kind %d", n->kind);
}

/* ------------------------------------------------------------- node lines */

/* A quoted name at *ps ('...' with \' and \\ escapes) → unescaped arena string. */
static bool lex_quoted(Parser *p, const char **ps, const char *e, char **out, size_t *len, bool quiet) {
  const char *s = *ps, *q = s + 1;
  for (; q < e && *q != '\''; q++)
    if (*q == '\\' && q + 1 < e && (q[1] == '\'' || q[1] == '\\')) q++;
  if (q >= e) {
    if (!quiet) ERR(p, s, "unterminated quoted name: expected a closing '");
    return false;
  }
  char *r = arena_alloc(&p->c->arena, (size_t)(q - s)), *w = r;
  for (const char *c = s + 1; c < q; c++) {
    if (*c == '\\' && c + 1 < q && (c[1] == '\'' || c[1] == '\\')) c++;
    *w++ = *c;
  }
  *w = 0;
  *out = r;
  *len = (size_t)(w - r);
  *ps = q + 1;
  return true;
}

typedef struct Ident {
  const char *key;       /* "#<number>" or "'<name>": numbers and names never collide */
  size_t keylen;
  const char *label;     /* as written */
  const char *str;       /* quoted: the unescaped string; NULL for numbers */
} Ident;

static bool lex_ident(Parser *p, const char **ps, const char *e, Ident *id, bool quiet) {
  const char *s = *ps;
  if (s < e && is_digit(*s)) {
    const char *q = s;
    while (q < e && is_digit(*q)) q++;
    int64_t v;
    if (parse_i64(s, q, &v)) {
      if (!quiet) ERR(p, s, "serial number %s does not fit in 64 bits", found(p, s, q));
      return false;
    }
    id->key = arena_printf(&p->c->arena, "#%lld", (long long)v);
    id->keylen = strlen(id->key);
    id->label = id->key + 1;
    id->str = NULL;
    *ps = q;
    return true;
  }
  if (s < e && *s == '\'') {
    char *str;
    size_t len;
    if (!lex_quoted(p, ps, e, &str, &len, quiet)) return false;
    char *key = arena_alloc(&p->c->arena, len + 2);
    key[0] = '\'';
    memcpy(key + 1, str, len);
    id->key = key;
    id->keylen = len + 1;
    id->label = arena_strndup(&p->c->arena, s, (size_t)(*ps - s));
    id->str = str;
    return true;
  }
  if (!quiet)
    ERR(p, s, "expected a node identifier (a serial number like 3 or a quoted name like 'a.b'), found %s",
        found(p, s, e));
  return false;
}

static bool sep_ok(const char *s, const char *e) { return s >= e || *s == '#' || space_len(s, e); }

static int new_pnode(Parser *p, const Ident *id, Loc loc) {
  GROW(p->pn, p->npn, p->cappn);
  PNode *n = &p->pn[p->npn];
  memset(n, 0, sizeof *n);
  n->label = id->label;
  n->line = p->lineno;
  n->kind = -1;
  n->proto.loc = loc;
  map_put(&p->ids, id->key, id->keylen, p->npn);
  return p->npn++;
}

/* The first mention of a quoted name that the file does not define but the
 * reference circuits do: a PNode built already. -1 if it is no reference. */
static int new_external(Parser *p, const Ident *id, Loc loc) {
  int k = map_get(&p->ref_names, id->str, id->keylen - 1);
  if (k < 0) return -1;
  int idx = new_pnode(p, id, loc);
  PNode *n = &p->pn[idx];
  n->external = true;
  n->built = p->refs->node[k];
  n->kind = (int)n->built->kind;
  n->state = 2;
  return idx;
}

/* The outcome of reading one node line. */
typedef struct NodeLine {
  int pn;                /* PNode, -1 if the line names none */
  bool ok;               /* false: the line failed (reported, or silently for a failed definition) */
  bool is_ref;           /* the identifier was defined before */
  const char *info, *info_end; /* after '!', trimmed; NULL if none */
  const char *bang;
} NodeLine;

static const char KIND_LIST[] =
    "Einsum, Array, Symbol, Scalar, Add, Rearrange, Index, GeneralFunction, Concat, Scatter, Module, "
    "SetSymbolicShape, Tag, DiscreteVar, StoredCumulantVar, Cumulant";

/* Checks what a reference restates against the definition (§2.3). */
static void check_restated(Parser *p, int idx, const char *name, const char *name_at, bool ad, const char *ad_at,
                           const Shape *shape, const char *shape_at, int kind, const char *kind_at,
                           const char *extra, const char *extra_end) {
  PNode *d = &p->pn[idx];
  const char *lbl = d->label;
  if (name && (!d->proto.name || strcmp(name, d->proto.name) != 0))
    ERR(p, name_at, "%s restates name '%s' but was defined %s%s%s (line %d)", lbl, name,
        d->proto.name ? "with name '" : "without a name", d->proto.name ? d->proto.name : "",
        d->proto.name ? "'" : "", d->line);
  if (ad && !d->proto.autoname_disabled)
    ERR(p, ad_at, "%s restates AD but was defined without it (line %d)", lbl, d->line);
  if (shape && d->has_shape && !shape_eq(shape, &d->proto.shape))
    ERR(p, shape_at, "%s restates shape %s but was declared %s (line %d)", lbl, shape_str(p->c, shape),
        shape_str(p->c, &d->proto.shape), d->line);
  else if (shape && !d->has_shape) {
    GROW(p->rs, p->nrs, p->caprs);
    p->rs[p->nrs++] = (Restate){idx, *shape, at(p, shape_at)};
  }
  if (kind >= 0 && kind != d->kind)
    ERR(p, kind_at, "%s restates kind %s but was defined as %s (line %d)", lbl, kind_name((NodeKind)kind),
        kind_name((NodeKind)d->kind), d->line);
  size_t elen = (size_t)(extra_end - extra);
  if (elen && (elen != strlen(d->extra) || memcmp(extra, d->extra, elen) != 0)) {
    bool word = !is_digit(*extra);
    for (const char *q = extra; q < extra_end; q++) word &= is_alpha(*q) || is_digit(*q) || *q == '_' || *q == '.';
    ERR(p, extra, "%s restates '%.*s' but was defined with '%s' (line %d)%s", lbl, (int)(extra_end - extra), extra,
        d->extra, d->line,
        word && kind < 0 ? "; old-style unquoted names are not supported, quote it as a name: "
                           "<ident> 'name'"
                         : "");
  }
}

/* Reads a node line from s (after the indentation) to e (end of line):
 * ident ['name'] [AD] [[shape]] [Kind] [extra] [! child-info] [# comment].
 * Registers a new definition or checks a reference. Also reads the symbol
 * text of a Module binding, a one-line document of its own (§2.6). */
static NodeLine parse_node_line(Parser *p, const char *s, const char *e) {
  NodeLine r = {-1, false, false, NULL, NULL, NULL};
  const char *q = s;
  Ident id;
  if (!lex_ident(p, &q, e, &id, false)) return r;
  Loc loc = at(p, s);
  if (!sep_ok(q, e)) {
    ERR(p, q, "expected whitespace after the identifier %s, found %s", id.label, found(p, q, e));
    return r;
  }
  int idx = map_get(&p->ids, id.key, id.keylen);
  if (idx < 0 && id.str) idx = new_external(p, &id, loc);
  bool is_new = idx < 0;
  /* Once the identifier is known, a failed line marks a new node as bad so that
   * later references to it fail silently instead of repeating the error. */
#define FAIL_LINE()                                                      \
  do {                                                                   \
    r.pn = is_new ? new_pnode(p, &id, loc) : idx;                        \
    if (is_new) p->pn[r.pn].bad = true;                                  \
    r.is_ref = !is_new;                                                  \
    return r;                                                            \
  } while (0)

  /* optional name */
  char *name = NULL;
  const char *name_at = NULL, *t = skip_space(q, e);
  if (t > q && t < e && *t == '\'') {
    size_t len;
    name_at = q = t;
    if (!lex_quoted(p, &q, e, &name, &len, false)) FAIL_LINE();
    if (!sep_ok(q, e)) {
      ERR(p, q, "expected whitespace after the name, found %s", found(p, q, e));
      FAIL_LINE();
    }
  }
  /* the comment starts at the first '#' after the names; trailing indent chars go too */
  const char *hash = memchr(q, '#', (size_t)(e - q));
  if (hash) e = hash;
  e = trim_back(q, e, true);

  bool ad = false;
  const char *ad_at = t = skip_space(q, e);
  if (e - t >= 2 && t[0] == 'A' && t[1] == 'D' && (t + 2 == e || space_len(t + 2, e))) {
    ad = true;
    q = t + 2;
  }
  Shape shape = {0};
  bool has_shape = false;
  const char *shape_at = t = skip_space(q, e);
  if (t < e && *t == '[') {
    q = t;
    if (!parse_shape(p, &q, e, &shape)) FAIL_LINE();
    if (!sep_ok(q, e)) {
      ERR(p, q, "expected whitespace after the shape, found %s", found(p, q, e));
      FAIL_LINE();
    }
    has_shape = true;
  }
  /* the rest: [Kind] [extra], then "! child-info" */
  t = skip_space(q, e);
  const char *bang = memchr(t, '!', (size_t)(e - t));
  const char *re = trim_back(t, bang ? bang : e, false);
  if (bang) {
    r.bang = bang;
    r.info = skip_space(bang + 1, e);
    r.info_end = e;
  }
  const char *w = t, *we = t;
  while (we < re && !space_len(we, re)) we++;
  bool letters = w < we;
  for (const char *c = w; c < we; c++) letters &= is_alpha(*c);
  int kind = -1;
  const char *kind_at = w, *extra = w, *extra_end = re;
  if (letters) {
    kind = kind_from_name(w, (size_t)(we - w));
    if (kind < 0) {
      ERR(p, w, "unknown node kind '%.*s' (expected one of %s)", (int)(we - w), w, KIND_LIST);
      FAIL_LINE();
    }
    extra = skip_space(we, re);
  }

  if (!is_new) {
    PNode *d = &p->pn[idx];
    r.pn = idx;
    r.is_ref = true;
    if (d->bad) return r; /* its definition failed and was reported */
    if (d->external) {
      const char *info = name ? name_at : ad ? ad_at : has_shape ? shape_at : kind >= 0 ? kind_at
                       : extra < extra_end ? extra : NULL;
      if (info) ERR(p, info, "%s is a reference circuit: a line naming it takes no other information", d->label);
      r.ok = !info;
      return r;
    }
    check_restated(p, idx, name, name_at, ad, ad_at, has_shape ? &shape : NULL, shape_at, kind, kind_at, extra,
                   extra_end);
    r.ok = true;
    return r;
  }
  if (kind < 0) {
    if (w < re)
      ERR(p, w, "expected a node kind after %s, found %s%s", id.label, found(p, w, re),
          id.str ? "" : " (old-style unquoted names are not supported; quote it: <number> 'name')");
    else if (p->refs)
      ERR(p, s, "%s is not defined: neither the file nor its reference circuits (the model library) define it",
          id.label);
    else
      ERR(p, s, "%s is not defined: the first line that mentions an identifier must define it with a kind "
                "(e.g. %s [2] Scalar 1)", id.label, id.label);
    return r;
  }
  idx = new_pnode(p, &id, loc);
  PNode *n = &p->pn[idx];
  r.pn = idx;
  n->kind = kind;
  n->proto.kind = (NodeKind)kind;
  n->proto.name = name ? name : id.str;
  n->proto.autoname_disabled = ad;
  n->proto.shape = shape;
  n->has_shape = has_shape;
  n->shape_loc = at(p, shape_at);
  n->extra_loc = at(p, extra);
  n->extra = arena_strndup(&p->c->arena, extra, (size_t)(extra_end - extra));
  bool needs_shape = kind == NK_Scalar || kind == NK_Symbol || kind == NK_Scatter || kind == NK_SetSymbolicShape;
  if (needs_shape && !has_shape) {
    ERR(p, kind_at, "%s needs a shape: write it before the kind, e.g. %s [2,3] %s", kind_name((NodeKind)kind),
        id.label, kind_name((NodeKind)kind));
    n->bad = true;
  } else if (!parse_extra(p, n, extra, extra_end, kind_at)) {
    n->bad = true;
  }
  r.ok = !n->bad;
  return r;
#undef FAIL_LINE
}

/* The text after '!' on an argument line of a Module: `<symbol-text> [flags]`. */
static bool parse_binding(Parser *p, const NodeLine *r, Edge *ed) {
  const char *s = r->info, *e = r->info_end;
  ed->flag[0] = ed->flag[1] = ed->flag[2] = true;
  ed->bang = at(p, r->bang);
  if (e - s >= 4 && e[-4] == ' ' && strchr("tf", e[-3]) && strchr("tf", e[-2]) && strchr("tf", e[-1])) {
    for (int k = 0; k < 3; k++) ed->flag[k] = e[k - 3] == 't';
    e = trim_back(s, e - 4, false);
  }
  if (s == e) {
    ERR(p, r->bang, "expected a Symbol after '!' (e.g. ! 'a.input' or ! 'a.input' [3] Symbol <uuid>)");
    return false;
  }
  NodeLine sr = parse_node_line(p, s, e);
  if (!sr.ok) return false;
  if (sr.info) {
    ERR(p, sr.bang, "unexpected second '!' in a Module binding");
    return false;
  }
  const PNode *sym = &p->pn[sr.pn];
  if (sym->kind != NK_Symbol) {
    ERR(p, s, "'!' must name a Symbol, but %s is %s %s (line %d)", sym->label, a_an(kind_name((NodeKind)sym->kind)),
        kind_name((NodeKind)sym->kind), sym->line);
    return false;
  }
  ed->sym = sr.pn;
  return true;
}

/* Makes the node of line r the next child of the stack top (or a top-level circuit). */
static void attach(Parser *p, const NodeLine *r, const char *s) {
  Loc loc = at(p, s);
  if (p->depth == 0) {
    if (!r->ok) return;
    if (r->info) ERR(p, r->bang, "'!' binds a Module argument, but %s is a top-level circuit", p->pn[r->pn].label);
    else if (r->ok) {
      GROW(p->top, p->ntop, p->captop);
      p->top[p->ntop++] = r->pn;
    }
    return;
  }
  Frame *f = &p->stk[p->depth - 1];
  if (f->dead) return;
  PNode *par = &p->pn[f->pn];
  if (f->is_ref) {
    if (!f->reported && par->external)
      ERR(p, s, "%s is a reference circuit, so it cannot have children", par->label);
    else if (!f->reported)
      ERR(p, s, "%s repeats the node defined at line %d, so it cannot have children (only the first line of "
                "a node may)", par->label, par->line);
    f->reported = true;
    return;
  }
  int k = f->nkids++;
  if (!r->ok || r->pn < 0) {
    p->pn[f->pn].bad = true; /* the child's error was reported */
    return;
  }
  Edge ed = {f->pn, r->pn, loc, -1, {true, true, true}, loc};
  const char *plabel = par->label;
  if (par->kind == NK_Module) {
    if (k == 0 && r->info) {
      ERR(p, r->bang, "child 0 of Module %s is its spec circuit and takes no '!' binding", plabel);
      p->pn[f->pn].bad = true;
    } else if (k > 0 && !r->info) {
      ERR(p, s, "argument %d of Module %s needs a binding: append ' ! <symbol>' naming the Symbol it replaces", k,
          plabel);
      p->pn[f->pn].bad = true;
    } else if (k > 0 && !parse_binding(p, r, &ed)) {
      p->pn[f->pn].bad = true;
    }
  } else if (r->info) {
    const char *kn = par->kind >= 0 ? kind_name((NodeKind)par->kind) : "?";
    ERR(p, r->bang, "'!' binds a Module argument, but the parent %s is %s %s", plabel, a_an(kn), kn);
    p->pn[f->pn].bad = true;
  }
  GROW(p->edge, p->nedge, p->capedge);
  p->edge[p->nedge++] = ed;
}

/* A line skipped with its bad parent: if it defines an identifier, register it
 * as failed so later references do not report a second, misleading error. */
static void note_skipped(Parser *p, const char *s, const char *e) {
  Ident id;
  const char *q = s;
  if (lex_ident(p, &q, e, &id, true) && map_get(&p->ids, id.key, id.keylen) < 0) {
    int k = new_pnode(p, &id, at(p, s)); /* may move p->pn */
    p->pn[k].bad = true;
  }
}

static void skip_line(Parser *p, int indent, const char *s, const char *e) {
  p->skip = indent;
  note_skipped(p, s, e);
}

static bool is_marker(const char *s, const char *e) {
  if (e - s >= 3 && memcmp(s, "\xe2\x96\xbc", 3) == 0) s += 3; /* ▼ */
  else if (e - s >= 2 && s[0] == '|' && s[1] == '/') s += 2;
  else return false;
  for (int n; s < e && (n = indent_len(s, e)) > 0;) s += n;
  return s == e || *s == '#';
}

static void parse_line(Parser *p, const char *ls, const char *le) {
  p->ls = ls;
  const char *s = ls;
  int indent = 0;
  for (int n; s < le && (n = indent_len(s, le)) > 0; s += n) indent++;
  if (s == le || *s == '#') return; /* blank line or comment */
  if (is_marker(s, le)) {
    p->marker = true;
    return;
  }
  bool marker = p->marker;
  p->marker = false;
  if (p->skip >= 0) {
    if (indent > p->skip) {
      note_skipped(p, s, le);
      return;
    }
    p->skip = -1;
  }
  const char *nul = memchr(s, 0, (size_t)(le - s));
  if (nul) {
    ERR(p, nul, "unexpected NUL byte");
    skip_line(p, indent, s, nul);
    return;
  }
  if (p->base < 0) p->base = indent;
  if (indent < p->base) {
    ERR(p, s, "line is indented by %d, less than the first node line (%d)", indent, p->base);
    skip_line(p, indent, s, le);
    return;
  }
  int rel = indent - p->base, level = rel / 2 + marker;
  if (rel % 2) {
    ERR(p, s, "indentation must grow in steps of 2, found %d more than the first node line", rel);
    skip_line(p, indent, s, le);
    return;
  }
  if (level > p->depth) {
    ERR(p, s, "line is indented %d level%s deeper than its parent (a child is indented by exactly 2 more%s)",
        level - p->depth, level - p->depth == 1 ? "" : "s", marker ? "; the ▼ marker already adds one" : "");
    skip_line(p, indent, s, le);
    return;
  }
  p->depth = level;
  NodeLine r = parse_node_line(p, s, le);
  attach(p, &r, s);
  if (marker) p->depth--; /* the only child takes its parent's place */
  GROW(p->stk, p->depth, p->capstk);
  p->stk[p->depth++] = (Frame){r.pn, r.is_ref, !r.ok || r.pn < 0, false, 0};
}

/* ----------------------------------------------------------------- building */

static void report_cycle(Parser *p, const int *stack, int sp, int target, Loc loc) {
  int from = sp - 1;
  while (from > 0 && stack[from] != target) from--;
  char buf[1024];
  size_t len = 0;
  for (int i = from; i <= sp && len < sizeof buf - 8; i++) {
    const char *lbl = p->pn[i < sp ? stack[i] : target].label;
    if (len + strlen(lbl) + 8 >= sizeof buf) {
      len += (size_t)snprintf(buf + len, sizeof buf - len, " > ...");
      break;
    }
    len += (size_t)snprintf(buf + len, sizeof buf - len, "%s%s", i > from ? " > " : "", lbl);
  }
  diag_error(p->c, loc, "cycle: %s contains itself (%s)", p->pn[target].label, buf);
  for (int i = from; i < sp; i++) p->pn[stack[i]].cyclic = true;
}

/* Builds node i from its built children (all done: post-order). */
static void build_one(Parser *p, int i) {
  PNode *n = &p->pn[i];
  if (n->bad || n->cyclic || n->kind < 0) return;
  Comp *c = p->c;
  Node proto = n->proto;
  proto.nchild = n->nedge;
  proto.child = ARENA_ARRAY(&c->arena, Node *, n->nedge);
  for (int k = 0; k < n->nedge; k++) {
    const Edge *ed = &p->edge[n->first + k];
    if (!(proto.child[k] = p->pn[ed->child].built)) return;
  }
  if (n->kind == NK_Einsum) {
    if (n->einsum_no_lhs && n->nops == 1 && n->nedge == 0) {
      proto.u.einsum.in = NULL; /* "->" with no children: no operands at all */
      proto.u.einsum.in_rank = NULL;
    } else if (n->nops != n->nedge) {
      diag_error(c, n->extra_loc, "Einsum %s: the spec '%s' has %d operand%s but the node has %d child%s", n->label,
                 n->extra, n->nops, n->nops == 1 ? "" : "s", n->nedge, n->nedge == 1 ? "" : "ren");
      return;
    }
  }
  if (n->kind == NK_Module && n->nedge > 1) {
    proto.u.module.arg = ARENA_ARRAY(&c->arena, ModuleArg, n->nedge - 1);
    for (int k = 1; k < n->nedge; k++) {
      const Edge *ed = &p->edge[n->first + k];
      ModuleArg *a = &proto.u.module.arg[k - 1];
      if (ed->sym < 0 || !(a->symbol = p->pn[ed->sym].built)) return;
      a->batchable = ed->flag[0];
      a->expandable = ed->flag[1];
      a->ban_non_symbolic_size_expand = ed->flag[2];
      a->loc = ed->bang;
    }
  }
  Node *b = ir_make(c, &proto);
  if (!b) return;
  if (n->has_shape && !shape_eq(&n->proto.shape, &b->shape)) {
    diag_error(c, n->shape_loc, "%s %s: declared shape %s but computed %s", kind_name(b->kind), n->label,
               shape_str(c, &n->proto.shape), shape_str(c, &b->shape));
    return;
  }
  n->built = b;
}

/* Post-order walk over children and bound Symbols with an explicit stack (deep
 * circuits must not overflow the C stack); a node met again while on the
 * stack closes a cycle. */
static void build_all(Parser *p) {
  /* group edges by parent, keeping file order */
  int *count = calloc((size_t)p->npn + 1, sizeof(int));
  Edge *sorted = malloc(sizeof(Edge) * ((size_t)p->nedge + 1));
  if (!count || !sorted) ICE("out of memory");
  for (int i = 0; i < p->nedge; i++) count[p->edge[i].parent + 1]++;
  for (int i = 0; i < p->npn; i++) {
    count[i + 1] += count[i];
    p->pn[i].first = count[i];
    p->pn[i].nedge = count[i + 1] - count[i];
  }
  for (int i = 0; i < p->nedge; i++) sorted[count[p->edge[i].parent]++] = p->edge[i];
  free(p->edge);
  free(count);
  p->edge = sorted;

  int *stack = malloc(sizeof(int) * ((size_t)p->npn + 1)), *next = calloc((size_t)p->npn + 1, sizeof(int));
  if (!stack || !next) ICE("out of memory");
  for (int root = 0; root < p->npn; root++) {
    if (p->pn[root].state) continue;
    int sp = 0;
    stack[sp++] = root;
    p->pn[root].state = 1;
    while (sp) {
      int i = stack[sp - 1];
      PNode *n = &p->pn[i];
      if (next[i] < 2 * n->nedge) {
        const Edge *ed = &p->edge[n->first + next[i] / 2];
        int d = next[i] & 1 ? ed->sym : ed->child;
        next[i]++;
        if (d < 0) continue;
        if (p->pn[d].state == 0) {
          p->pn[d].state = 1;
          stack[sp++] = d;
        } else if (p->pn[d].state == 1) {
          report_cycle(p, stack, sp, d, ed->loc);
        }
        continue;
      }
      sp--;
      n->state = 2;
      build_one(p, i);
    }
  }
  free(stack);
  free(next);
}

/* ------------------------------------------------------------- entry points */

bool parse_text(Comp *c, const char *filename, const char *text, size_t len, const RefCircuits *refs,
                NodeList *out) {
  const SourceFile *src = NULL;
  for (int i = 0; i < c->nsources && !src; i++)
    if (c->sources[i].text == text && c->sources[i].len == len) src = &c->sources[i];
  const char *file = src ? src->name : arena_strdup(&c->arena, filename ? filename : "<input>");
  if (!src) {
    char *copy = arena_strndup(&c->arena, text, len); /* diagnostics quote it later */
    diag_add_source(c, file, copy, len);
    text = copy;
  }
  int errors = diag_error_count(c);
  Parser p = {.c = c, .file = file, .base = -1, .skip = -1, .refs = refs};
  for (int i = 0; refs && i < refs->n; i++) map_put(&p.ref_names, refs->name[i], strlen(refs->name[i]), i);
  const char *s = text, *end = text + len;
  while (s < end) {
    const char *nl = memchr(s, '\n', (size_t)(end - s)), *le = nl ? nl : end;
    p.lineno++;
    parse_line(&p, s, le > s && le[-1] == '\r' ? le - 1 : le);
    s = nl ? nl + 1 : end;
  }
  build_all(&p);
  for (int i = 0; i < p.nrs; i++) {
    const Restate *r = &p.rs[i];
    const Node *b = p.pn[r->pn].built;
    if (b && !shape_eq(&r->shape, &b->shape))
      diag_error(c, r->loc, "%s restates shape %s but its shape is %s", p.pn[r->pn].label,
                 shape_str(c, &r->shape), shape_str(c, &b->shape));
  }
  for (int i = 0; i < p.ntop; i++)
    if (p.pn[p.top[i]].built) nodelist_push(c, out, p.pn[p.top[i]].built);
  map_free(&p.ids);
  map_free(&p.ref_names);
  free(p.pn);
  free(p.edge);
  free(p.stk);
  free(p.top);
  free(p.rs);
  return diag_error_count(c) == errors;
}
