/* tensor_store.c — rust_circuit's tensor store (rust_circuit_format.md §3):
 * hash-prefix lookup, the torch.save reader (zip central directory + a tiny
 * pickle interpreter), the writer, and the §3.2 tensor hash.
 * Assumes nothing about its input files: every offset and length read from a
 * file is bounds-checked (overflow-safe) before use, and any other content is
 * rejected with a diag_error naming the file. Files are mmapped; a contiguous,
 * aligned payload stays a view of the mapping, anything else is gathered. */
#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include "tensor.h"

/* A broadcast view (stride 0) can describe far more bytes than its file holds;
 * materialising one larger than its storage is refused beyond this size. */
#define MAX_EXPANDED_BYTES ((uint64_t)1 << 28)

/* ------------------------------------------------------------------------ */
/* Small helpers                                                             */

static uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static uint32_t rd32(const uint8_t *p) { return (uint32_t)rd16(p) | (uint32_t)rd16(p + 2) << 16; }
static uint64_t rd64(const uint8_t *p) { return (uint64_t)rd32(p) | (uint64_t)rd32(p + 4) << 32; }

/* Returns p (an array of elem-byte items with capacity *cap) grown to hold
 * need items. Sizes here are bounded by the input length, so running out of
 * memory is fatal. */
static void *grow(void *p, size_t *cap, size_t need, size_t elem) {
  if (need <= *cap) return p;
  size_t n = *cap ? *cap : 16;
  while (n < need) n *= 2;
  void *q = realloc(p, n * elem);
  if (!q) ICE("out of memory (%zu bytes)", n * elem);
  *cap = n;
  return q;
}

/* The file being read: errors are reported once, prefixed with its name. */
typedef struct Reader {
  Comp *c;
  Loc loc;
  const char *what;            /* file name (or caller's description) for messages */
  const uint8_t *b;            /* the whole file */
  size_t len;
} Reader;

__attribute__((format(printf, 2, 3))) static bool fail(Reader *r, const char *fmt, ...) {
  char msg[600];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  diag_error(r->c, r->loc, "'%s': %s", r->what, msg);
  return false;
}

/* ------------------------------------------------------------------------ */
/* ZIP: the central directory is the only source of truth (§3.3–3.4).        */

typedef struct ZipEntry {
  const uint8_t *name;
  size_t name_len;
  uint16_t flags, method;
  uint64_t csize, usize, offset; /* offset = local header position */
} ZipEntry;

typedef struct Zip {
  ZipEntry *e;
  size_t n;
} Zip;

/* Reads the zip64 extra field (id 1) of a central entry: each saturated value,
 * in the order usize, csize, offset, is replaced by the next 8-byte field. */
static bool zip64_extra(Reader *r, ZipEntry *e, const uint8_t *x, size_t xlen) {
  for (size_t i = 0; xlen - i >= 4;) {
    size_t id = rd16(x + i), sz = rd16(x + i + 2);
    if (sz > xlen - i - 4) return fail(r, "malformed zip extra field in entry '%.*s'", (int)e->name_len, e->name);
    if (id == 1) {
      const uint8_t *f = x + i + 4, *end = f + sz;
      uint64_t *vals[3] = {&e->usize, &e->csize, &e->offset};
      for (int k = 0; k < 3; k++) {
        if (*vals[k] != 0xFFFFFFFF) continue;
        if (end - f < 8) return fail(r, "zip64 extra field of entry '%.*s' is too short", (int)e->name_len, e->name);
        *vals[k] = rd64(f);
        f += 8;
      }
      return true;
    }
    i += 4 + sz;
  }
  return fail(r, "zip entry '%.*s' has saturated sizes but no zip64 extra field", (int)e->name_len, e->name);
}

static bool zip_read(Reader *r, Zip *z) {
  const uint8_t *b = r->b;
  size_t len = r->len, eocd = SIZE_MAX;
  z->e = NULL, z->n = 0;
  /* The end record sits within the last 22 + 65535 (max comment) bytes. */
  size_t lo = len > 22 + 0xFFFF ? len - 22 - 0xFFFF : 0;
  for (size_t p = len >= 22 ? len - 22 + 1 : 0; p-- > lo;)
    if (memcmp(b + p, "PK\5\6", 4) == 0 && rd16(b + p + 20) <= len - 22 - p) { eocd = p; break; }
  if (eocd == SIZE_MAX)
    return len >= 4 && memcmp(b, "PK\3\4", 4) == 0
               ? fail(r, "truncated: the zip archive has no end-of-central-directory record")
               : fail(r, "not a torch.save file (no zip end-of-central-directory record)");
  uint64_t n = rd16(b + eocd + 10), cd_size = rd32(b + eocd + 12), cd_off = rd32(b + eocd + 16);
  if (n == 0xFFFF || cd_size == 0xFFFFFFFF || cd_off == 0xFFFFFFFF) {
    if (eocd < 20 || memcmp(b + eocd - 20, "PK\6\7", 4) != 0)
      return fail(r, "zip end record has saturated fields but no zip64 locator");
    uint64_t z64 = rd64(b + eocd - 20 + 8);
    if (len < 56 || z64 > len - 56 || memcmp(b + z64, "PK\6\6", 4) != 0)
      return fail(r, "no zip64 end-of-central-directory record at offset %llu (file has %zu bytes)",
                  (unsigned long long)z64, len);
    n = rd64(b + z64 + 32), cd_size = rd64(b + z64 + 40), cd_off = rd64(b + z64 + 48);
  }
  if (cd_off > len || cd_size > len - cd_off)
    return fail(r, "truncated: the zip central directory (%llu bytes at offset %llu) extends past the end of the file (%zu bytes)",
                (unsigned long long)cd_size, (unsigned long long)cd_off, len);
  if (n > cd_size / 46)
    return fail(r, "zip central directory claims %llu entries but holds at most %llu",
                (unsigned long long)n, (unsigned long long)(cd_size / 46));
  z->e = malloc((size_t)n * sizeof *z->e + 1);
  if (!z->e) ICE("out of memory");
  const uint8_t *p = b + cd_off, *end = p + cd_size;
  for (; z->n < n; z->n++) {
    ZipEntry *e = &z->e[z->n];
    if (end - p < 46 || memcmp(p, "PK\1\2", 4) != 0)
      return fail(r, "malformed zip central directory: entry %zu at offset %zu has no 'PK\\1\\2' signature",
                  z->n, (size_t)(p - b));
    size_t nl = rd16(p + 28), xl = rd16(p + 30), cl = rd16(p + 32);
    if ((size_t)(end - p) - 46 < nl + xl + cl)
      return fail(r, "truncated zip central directory entry %zu", z->n);
    *e = (ZipEntry){.name = p + 46, .name_len = nl, .flags = rd16(p + 8), .method = rd16(p + 10),
                    .csize = rd32(p + 20), .usize = rd32(p + 24), .offset = rd32(p + 42)};
    if ((e->usize == 0xFFFFFFFF || e->csize == 0xFFFFFFFF || e->offset == 0xFFFFFFFF) &&
        !zip64_extra(r, e, p + 46 + nl, xl))
      return false;
    p += 46 + nl + xl + cl;
  }
  return true;
}

static const ZipEntry *zip_find(const Zip *z, const uint8_t *prefix, size_t plen, const char *suffix) {
  size_t slen = strlen(suffix);
  for (size_t i = 0; i < z->n; i++) {
    const ZipEntry *e = &z->e[i];
    if (e->name_len == plen + slen && memcmp(e->name, prefix, plen) == 0 &&
        memcmp(e->name + plen, suffix, slen) == 0)
      return e;
  }
  return NULL;
}

/* The bytes of a STORED entry; the local header is only used for its name and
 * extra lengths (torch writes zero sizes there). */
static const uint8_t *zip_data(Reader *r, const ZipEntry *e) {
  int nl = (int)e->name_len;
  if (e->flags & 1) return fail(r, "zip entry '%.*s' is encrypted", nl, e->name), NULL;
  if (e->method != 0)
    return fail(r, "zip entry '%.*s' is compressed (method %u); torch.save stores entries uncompressed (method 0)",
                nl, e->name, e->method), NULL;
  if (e->csize != e->usize)
    return fail(r, "stored zip entry '%.*s' has compressed size %llu but size %llu", nl, e->name,
                (unsigned long long)e->csize, (unsigned long long)e->usize), NULL;
  if (e->offset > r->len || r->len - e->offset < 30 || memcmp(r->b + e->offset, "PK\3\4", 4) != 0)
    return fail(r, "zip entry '%.*s': no local header at offset %llu (file has %zu bytes)", nl, e->name,
                (unsigned long long)e->offset, r->len), NULL;
  const uint8_t *h = r->b + e->offset;
  uint64_t data = e->offset + 30 + rd16(h + 26) + rd16(h + 28);
  if (data > r->len || e->csize > r->len - data)
    return fail(r, "truncated: zip entry '%.*s' needs %llu bytes at offset %llu but the file has %zu bytes",
                nl, e->name, (unsigned long long)e->csize, (unsigned long long)data, r->len), NULL;
  return r->b + data;
}

/* ------------------------------------------------------------------------ */
/* Pickle: just enough of protocol 2–5 for `_rebuild_tensor_v2` (§3.4).      */

typedef enum VKind { V_NONE, V_BOOL, V_INT, V_STR, V_TUPLE, V_LIST, V_DICT, V_GLOBAL, V_STORAGE, V_TENSOR } VKind;
typedef enum Global { G_REBUILD_TENSOR, G_ORDERED_DICT, G_STORAGE } Global;

typedef struct Val {
  VKind kind;
  int64_t i;          /* V_INT/V_BOOL value; V_GLOBAL: Global; V_STORAGE: numel */
  const uint8_t *s;   /* V_STR bytes; V_STORAGE key */
  size_t n;           /* V_STR/V_STORAGE key length; V_TUPLE item count */
  size_t first;       /* V_TUPLE: first item in Pickle.items; V_TENSOR: its args tuple */
  DType dt;           /* V_GLOBAL G_STORAGE, V_STORAGE */
} Val;

typedef struct Pickle {
  Reader *r;
  const uint8_t *p, *end, *start;
  Val *vals;          /* every value created; everything else holds indices */
  size_t nvals, cap_vals;
  size_t *items;      /* tuple contents */
  size_t nitems, cap_items;
  size_t *stack, sp, cap_stack;
  size_t *marks, nmarks, cap_marks;  /* stack heights at each MARK */
  size_t *memo, cap_memo;            /* value index + 1; 0 = unset */
  size_t memo_count, memo_limit;     /* slots set (Python's len(memo)); max index + 1 */
} Pickle;

/* A decoded _rebuild_tensor_v2 call. */
typedef struct Desc {
  DType dt;
  const uint8_t *key;
  size_t key_len;
  int64_t storage_numel, offset;
  Shape shape;
  int64_t stride[MAX_RANK];
} Desc;

static const struct { const char *cls; DType dt; } STORAGES[] = {
    {"FloatStorage", DT_F32}, {"DoubleStorage", DT_F64}, {"HalfStorage", DT_F16},
    {"BFloat16Storage", DT_BF16}, {"LongStorage", DT_I64}, {"IntStorage", DT_I32},
    {"ShortStorage", DT_I16}, {"CharStorage", DT_I8}, {"ByteStorage", DT_U8}, {"BoolStorage", DT_BOOL},
};

__attribute__((format(printf, 2, 3))) static bool pfail(Pickle *k, const char *fmt, ...) {
  char msg[400];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  return fail(k->r, "data.pkl: %s (at byte %zu)", msg, (size_t)(k->p - k->start));
}

static bool need(Pickle *k, size_t n) {
  return (size_t)(k->end - k->p) >= n || pfail(k, "truncated pickle (needs %zu more bytes)", n);
}

static size_t new_val(Pickle *k, Val v) {
  k->vals = grow(k->vals, &k->cap_vals, k->nvals + 1, sizeof *k->vals);
  k->vals[k->nvals] = v;
  return k->nvals++;
}

static void push_idx(Pickle *k, size_t v) {
  k->stack = grow(k->stack, &k->cap_stack, k->sp + 1, sizeof *k->stack);
  k->stack[k->sp++] = v;
}

static void push(Pickle *k, Val v) { push_idx(k, new_val(k, v)); }

/* Pops one value; the stack below the innermost MARK is out of reach. */
static bool pop(Pickle *k, Val **out) {
  *out = NULL; /* outputs are set on every path (keeps gcc -O3 sure of it) */
  size_t base = k->nmarks ? k->marks[k->nmarks - 1] : 0;
  if (k->sp <= base) return pfail(k, "pickle stack underflow");
  *out = &k->vals[k->stack[--k->sp]];
  return true;
}

static bool top(Pickle *k, Val **out) {
  *out = NULL;
  size_t base = k->nmarks ? k->marks[k->nmarks - 1] : 0;
  if (k->sp <= base) return pfail(k, "pickle stack underflow");
  *out = &k->vals[k->stack[k->sp - 1]];
  return true;
}

/* Pops the values pushed since the last MARK and the MARK itself. */
static bool pop_mark(Pickle *k, size_t *from, size_t *count) {
  *from = *count = 0;
  if (!k->nmarks) return pfail(k, "pickle has no MARK to pop to");
  *from = k->marks[--k->nmarks];
  *count = k->sp - *from;
  k->sp = *from;
  return true;
}

/* Builds a tuple of the n stack values starting at stack[from] (already popped). */
static void push_tuple(Pickle *k, size_t from, size_t n) {
  k->items = grow(k->items, &k->cap_items, k->nitems + n, sizeof *k->items);
  if (n) memcpy(k->items + k->nitems, k->stack + from, n * sizeof *k->items);
  push(k, (Val){.kind = V_TUPLE, .first = k->nitems, .n = n});
  k->nitems += n;
}

static Val *item(Pickle *k, const Val *tuple, size_t i) { return &k->vals[k->items[tuple->first + i]]; }

static bool str_is(const Val *v, const char *s) {
  return v->kind == V_STR && v->n == strlen(s) && memcmp(v->s, s, v->n) == 0;
}

static bool resolve_global(Pickle *k, const uint8_t *mod, size_t ml, const uint8_t *name, size_t nl) {
  Val v = {.kind = V_GLOBAL};
  Val m = {.kind = V_STR, .s = mod, .n = ml}, nm = {.kind = V_STR, .s = name, .n = nl};
  if (str_is(&m, "torch._utils") && str_is(&nm, "_rebuild_tensor_v2")) {
    v.i = G_REBUILD_TENSOR;
  } else if (str_is(&m, "collections") && str_is(&nm, "OrderedDict")) {
    v.i = G_ORDERED_DICT;
  } else {
    size_t i = 0, count = sizeof STORAGES / sizeof *STORAGES;
    while (i < count && !(str_is(&m, "torch") && str_is(&nm, STORAGES[i].cls))) i++;
    if (i == count)
      return pfail(k, "unsupported pickle global '%.*s.%.*s' (circc reads plain tensors saved with torch.save)",
                   (int)(ml > 100 ? 100 : ml), mod, (int)(nl > 100 ? 100 : nl), name);
    v.i = G_STORAGE, v.dt = STORAGES[i].dt;
  }
  push(k, v);
  return true;
}

/* persistent_load(("storage", <Storage class>, key, location, numel)) */
static bool persistent_load(Pickle *k, const Val *pid) {
  if (pid->kind != V_TUPLE || pid->n != 5 || !str_is(item(k, pid, 0), "storage"))
    return pfail(k, "persistent id is not a ('storage', class, key, location, numel) tuple");
  const Val *cls = item(k, pid, 1), *key = item(k, pid, 2), *loc = item(k, pid, 3), *numel = item(k, pid, 4);
  if (cls->kind != V_GLOBAL || cls->i != G_STORAGE) return pfail(k, "persistent id names no torch storage class");
  if (key->kind != V_STR || loc->kind != V_STR) return pfail(k, "storage key and location must be strings");
  if (numel->kind != V_INT || numel->i < 0) return pfail(k, "storage size must be a non-negative integer");
  push(k, (Val){.kind = V_STORAGE, .dt = cls->dt, .s = key->s, .n = key->n, .i = numel->i});
  return true;
}

/* Reads a tuple of non-negative ints (size or stride) into out[0..rank). */
static bool int_tuple(Pickle *k, const Val *t, const char *what, int64_t *out, int *rank) {
  if (t->kind != V_TUPLE) return pfail(k, "tensor %s is not a tuple", what);
  if (t->n > MAX_RANK) return pfail(k, "tensor rank %zu exceeds circc's maximum %d", t->n, MAX_RANK);
  for (size_t i = 0; i < t->n; i++) {
    const Val *v = item(k, t, i);
    if (v->kind != V_INT || v->i < 0) return pfail(k, "tensor %s entry %zu is not a non-negative integer", what, i);
    out[i] = v->i;
  }
  *rank = (int)t->n;
  return true;
}

/* _rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks[, metadata]) */
static bool decode_tensor(Pickle *k, const Val *args, Desc *d) {
  if (args->kind != V_TUPLE || (args->n != 6 && args->n != 7))
    return pfail(k, "_rebuild_tensor_v2 expects 6 or 7 arguments");
  const Val *st = item(k, args, 0), *off = item(k, args, 1);
  if (st->kind != V_STORAGE) return pfail(k, "_rebuild_tensor_v2 argument 1 is not a storage");
  if (off->kind != V_INT || off->i < 0) return pfail(k, "tensor storage offset is not a non-negative integer");
  if (item(k, args, 4)->kind != V_BOOL) return pfail(k, "tensor requires_grad is not a bool");
  if (item(k, args, 5)->kind != V_DICT || (args->n == 7 && item(k, args, 6)->kind != V_DICT))
    return pfail(k, "tensor backward hooks / metadata are not dicts");
  *d = (Desc){.dt = st->dt, .key = st->s, .key_len = st->n, .storage_numel = st->i, .offset = off->i};
  int srank = 0;
  if (!int_tuple(k, item(k, args, 2), "size", d->shape.dim, &d->shape.rank) ||
      !int_tuple(k, item(k, args, 3), "stride", d->stride, &srank))
    return false;
  if (srank != d->shape.rank) return pfail(k, "tensor has %d sizes but %d strides", d->shape.rank, srank);
  return true;
}

static bool memo_put(Pickle *k, uint64_t i) {
  /* torch numbers memo slots 0, 1, 2, ...; fewer slots than pickle bytes. */
  if (i >= k->memo_limit) return pfail(k, "memo index %llu out of range", (unsigned long long)i);
  if (k->sp == 0) return pfail(k, "pickle stack underflow");
  size_t old = k->cap_memo;
  k->memo = grow(k->memo, &k->cap_memo, (size_t)i + 1, sizeof *k->memo);
  if (k->cap_memo > old) memset(k->memo + old, 0, (k->cap_memo - old) * sizeof *k->memo);
  k->memo_count += !k->memo[i];
  k->memo[i] = k->stack[k->sp - 1] + 1;
  return true;
}

static bool memo_get(Pickle *k, uint64_t i) {
  if (i >= k->cap_memo || !k->memo[i]) return pfail(k, "memo index %llu was never stored", (unsigned long long)i);
  push_idx(k, k->memo[i] - 1);
  return true;
}

static bool read_line(Pickle *k, const uint8_t **s, size_t *n) {
  *s = NULL, *n = 0;
  const uint8_t *nl = memchr(k->p, '\n', (size_t)(k->end - k->p));
  if (!nl) return pfail(k, "truncated pickle (unterminated GLOBAL)");
  *s = k->p, *n = (size_t)(nl - k->p);
  k->p = nl + 1;
  return true;
}

static bool push_str(Pickle *k, size_t lenbytes) {
  if (!need(k, lenbytes)) return false;
  uint64_t n = lenbytes == 1 ? k->p[0] : rd32(k->p);
  k->p += lenbytes;
  if (!need(k, n)) return false;
  push(k, (Val){.kind = V_STR, .s = k->p, .n = n});
  k->p += n;
  return true;
}

static bool push_int(Pickle *k, int64_t v) {
  push(k, (Val){.kind = V_INT, .i = v});
  return true;
}

/* REDUCE: OrderedDict() is an empty dict, _rebuild_tensor_v2 a tensor. */
static bool reduce(Pickle *k) {
  Val *args, *fn;
  if (!pop(k, &args) || !pop(k, &fn)) return false;
  if (fn->kind == V_GLOBAL && fn->i == G_ORDERED_DICT) {
    if (args->kind != V_TUPLE || args->n != 0) return pfail(k, "OrderedDict called with arguments");
    push(k, (Val){.kind = V_DICT});
    return true;
  }
  if (fn->kind == V_GLOBAL && fn->i == G_REBUILD_TENSOR) {
    Desc d;
    if (!decode_tensor(k, args, &d)) return false;
    push(k, (Val){.kind = V_TENSOR, .first = (size_t)(args - k->vals)});
    return true;
  }
  return pfail(k, "REDUCE of something that is not _rebuild_tensor_v2 or OrderedDict");
}

/* Executes one opcode. */
static bool step(Pickle *k, bool *stop) {
  uint8_t op = *k->p++;
  Val *a, *b;
  size_t from, n;
  switch (op) {
  case 0x80: /* PROTO */
    if (!need(k, 1)) return false;
    if (k->p[0] < 2 || k->p[0] > 5) return pfail(k, "unsupported pickle protocol %u", k->p[0]);
    k->p++;
    return true;
  case 0x95: /* FRAME: a length hint only */
    if (!need(k, 8)) return false;
    k->p += 8;
    return true;
  case 'c': { /* GLOBAL module\nname\n */
    const uint8_t *m, *nm;
    size_t ml, nl;
    return read_line(k, &m, &ml) && read_line(k, &nm, &nl) && resolve_global(k, m, ml, nm, nl);
  }
  case 0x93: /* STACK_GLOBAL */
    if (!pop(k, &b) || !pop(k, &a)) return false;
    if (a->kind != V_STR || b->kind != V_STR) return pfail(k, "STACK_GLOBAL needs two strings");
    return resolve_global(k, a->s, a->n, b->s, b->n);
  case '(': /* MARK */
    k->marks = grow(k->marks, &k->cap_marks, k->nmarks + 1, sizeof *k->marks);
    k->marks[k->nmarks++] = k->sp;
    return true;
  case ')': push_tuple(k, k->sp, 0); return true;           /* EMPTY_TUPLE */
  case 't': /* TUPLE */
    if (!pop_mark(k, &from, &n)) return false;
    push_tuple(k, from, n);
    return true;
  case 0x85: case 0x86: case 0x87: { /* TUPLE1..3 */
    size_t base = k->nmarks ? k->marks[k->nmarks - 1] : 0;
    n = (size_t)(op - 0x84);
    if (k->sp - base < n) return pfail(k, "pickle stack underflow");
    k->sp -= n;
    push_tuple(k, k->sp, n);
    return true;
  }
  case 'X': return push_str(k, 4);                          /* BINUNICODE */
  case 0x8c: return push_str(k, 1);                         /* SHORT_BINUNICODE */
  case 'J': /* BININT: signed 32-bit */
    if (!need(k, 4)) return false;
    k->p += 4;
    return push_int(k, (int32_t)rd32(k->p - 4));
  case 'K': if (!need(k, 1)) return false; k->p += 1; return push_int(k, k->p[-1]);         /* BININT1 */
  case 'M': if (!need(k, 2)) return false; k->p += 2; return push_int(k, rd16(k->p - 2));   /* BININT2 */
  case 0x8a: { /* LONG1: n-byte little-endian two's complement */
    if (!need(k, 1)) return false;
    n = *k->p++;
    if (n > 8) return pfail(k, "integer of %zu bytes does not fit in 64 bits", n);
    if (!need(k, n)) return false;
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) v |= (uint64_t)k->p[i] << (8 * i);
    if (n && n < 8 && (k->p[n - 1] & 0x80)) v |= ~(uint64_t)0 << (8 * n); /* sign-extend */
    k->p += n;
    return push_int(k, (int64_t)v);
  }
  case 'N': push(k, (Val){.kind = V_NONE}); return true;
  case 0x88: case 0x89: push(k, (Val){.kind = V_BOOL, .i = op == 0x88}); return true;
  case 'q': if (!need(k, 1)) return false; k->p += 1; return memo_put(k, k->p[-1]);         /* BINPUT */
  case 'r': if (!need(k, 4)) return false; k->p += 4; return memo_put(k, rd32(k->p - 4));   /* LONG_BINPUT */
  case 0x94: return memo_put(k, k->memo_count);           /* MEMOIZE */
  case 'h': if (!need(k, 1)) return false; k->p += 1; return memo_get(k, k->p[-1]);         /* BINGET */
  case 'j': if (!need(k, 4)) return false; k->p += 4; return memo_get(k, rd32(k->p - 4));   /* LONG_BINGET */
  case 'Q': return pop(k, &a) && persistent_load(k, a);     /* BINPERSID */
  case 'R': return reduce(k);
  case '}': push(k, (Val){.kind = V_DICT}); return true;    /* EMPTY_DICT */
  case ']': push(k, (Val){.kind = V_LIST}); return true;    /* EMPTY_LIST */
  case 's': /* SETITEM: contents are never needed, only the dict's existence */
    if (!pop(k, &a) || !pop(k, &b) || !top(k, &a)) return false;
    return a->kind == V_DICT || pfail(k, "SETITEM on something that is not a dict");
  case 'u': /* SETITEMS */
    if (!pop_mark(k, &from, &n) || !top(k, &a)) return false;
    if (n % 2) return pfail(k, "SETITEMS with an odd number of values");
    return a->kind == V_DICT || pfail(k, "SETITEMS on something that is not a dict");
  case 'a': /* APPEND */
    if (!pop(k, &b) || !top(k, &a)) return false;
    return a->kind == V_LIST || pfail(k, "APPEND to something that is not a list");
  case 'e': /* APPENDS */
    if (!pop_mark(k, &from, &n) || !top(k, &a)) return false;
    return a->kind == V_LIST || pfail(k, "APPENDS to something that is not a list");
  case '.': *stop = true; return true;                      /* STOP */
  default:
    k->p--;
    return pfail(k, "unsupported pickle opcode 0x%02x (circc reads plain tensors saved with torch.save)", op);
  }
}

/* Runs data.pkl; the result must be one tensor. */
static bool run_pickle(Reader *r, const uint8_t *pkl, size_t len, Desc *d) {
  Pickle k = {.r = r, .p = pkl, .start = pkl, .end = pkl + len, .memo_limit = len};
  bool ok = true, stop = false;
  while (ok && !stop) ok = need(&k, 1) && step(&k, &stop);
  if (ok) {
    Val *v;
    if (k.sp != 1 || k.nmarks || !top(&k, &v) || v->kind != V_TENSOR)
      ok = pfail(&k, "the pickle does not hold exactly one tensor");
    else
      ok = decode_tensor(&k, &k.vals[v->first], d);
  }
  free(k.vals), free(k.items), free(k.stack), free(k.marks), free(k.memo);
  return ok;
}

/* ------------------------------------------------------------------------ */
/* torch.save reader                                                         */

static Tensor *new_view(Comp *c, DType dt, const Shape *s, void *data, size_t nbytes) {
  Tensor *t = ARENA_NEW(&c->arena, Tensor);
  t->dtype = dt, t->shape = *s, t->data = data, t->nbytes = nbytes;
  t->next = c->tensors;
  c->tensors = t;
  return t;
}

/* dst[...] = src[offset + Σ idx_k·stride_k] in row-major order of idx; numel > 0 and
 * every index was bounds-checked by the caller. */
static void gather(uint8_t *dst, const uint8_t *src, const Desc *d, size_t isz) {
  int rank = d->shape.rank;
  if (rank == 0) { memcpy(dst, src + (size_t)d->offset * isz, isz); return; }
  int64_t idx[MAX_RANK] = {0}, pos = d->offset, inner = d->shape.dim[rank - 1], istride = d->stride[rank - 1];
  for (;;) {
    if (istride == 1) {
      memcpy(dst, src + (size_t)pos * isz, (size_t)inner * isz);
      dst += (size_t)inner * isz;
    } else {
      for (int64_t j = 0; j < inner; j++, dst += isz) memcpy(dst, src + (size_t)(pos + j * istride) * isz, isz);
    }
    int k = rank - 2;
    for (; k >= 0; k--) {
      pos += d->stride[k];
      if (++idx[k] < d->shape.dim[k]) break;
      pos -= d->stride[k] * d->shape.dim[k];
      idx[k] = 0;
    }
    if (k < 0) return;
  }
}

/* Checks the descriptor against its storage and makes the tensor: a view of
 * the file bytes when contiguous and aligned (*view = true), else a gather. */
static Tensor *make_tensor(Reader *r, Desc *d, const uint8_t *storage, bool *view) {
  size_t isz = dtype_size(d->dt);
  int64_t numel = 1, last = d->offset, expect = 1;
  bool contiguous = true;
  for (int i = d->shape.rank - 1; i >= 0; i--) {
    int64_t dim = d->shape.dim[i];
    if (dim == 1) d->stride[i] = 0; /* any stride is valid for a size-1 dim; 0 keeps the arithmetic small */
    if (dim > 1 && d->stride[i] != expect) contiguous = false;
    if (dim > 1) expect = expect > INT64_MAX / dim ? INT64_MAX : expect * dim;
    if (dim && numel > INT64_MAX / dim) return fail(r, "tensor has more than 2^63 elements"), NULL;
    numel *= dim;
  }
  if (numel > 0) {
    /* last = index of the last element read; must lie inside the storage */
    for (int i = 0; i < d->shape.rank; i++) {
      int64_t dim = d->shape.dim[i], s = d->stride[i];
      if (s && (dim - 1 > (INT64_MAX - last) / s)) return fail(r, "tensor strides overflow"), NULL;
      last += (dim - 1) * s;
    }
    if (last >= d->storage_numel)
      return fail(r, "tensor (offset %lld, %d dims) reads element %lld of a storage of %lld elements",
                  (long long)d->offset, d->shape.rank, (long long)last, (long long)d->storage_numel), NULL;
  }
  if ((uint64_t)numel > SIZE_MAX / isz) return fail(r, "tensor too large"), NULL;
  size_t nbytes = (size_t)numel * isz, sbytes = (size_t)d->storage_numel * isz;
  if (nbytes > sbytes && nbytes > MAX_EXPANDED_BYTES)
    return fail(r, "tensor is a broadcast view of %zu bytes over a %zu-byte storage; circc materialises such views only up to %llu bytes",
                nbytes, sbytes, (unsigned long long)MAX_EXPANDED_BYTES), NULL;
  if (numel == 0) return tensor_new(r->c, d->dt, &d->shape);
  const uint8_t *src = storage + (size_t)d->offset * isz;
  if (contiguous && (uintptr_t)src % isz == 0) {
    *view = true;
    return new_view(r->c, d->dt, &d->shape, (void *)(uintptr_t)src, nbytes);
  }
  Tensor *t = tensor_new(r->c, d->dt, &d->shape);
  gather(t->data, storage, d, isz);
  return t;
}

static Tensor *load_pt(Reader *r, bool *view) {
  Zip z;
  Tensor *t = NULL;
  if (!zip_read(r, &z)) goto out;
  const ZipEntry *pkl = NULL;
  for (size_t i = 0; i < z.n && !pkl; i++)
    if (z.e[i].name_len >= 9 && memcmp(z.e[i].name + z.e[i].name_len - 9, "/data.pkl", 9) == 0) pkl = &z.e[i];
  if (!pkl) { fail(r, "not a torch.save file (no '<name>/data.pkl' entry in the zip)"); goto out; }
  const uint8_t *prefix = pkl->name;
  size_t plen = pkl->name_len - 8; /* keeps the '/' */
  const uint8_t *pkl_bytes = zip_data(r, pkl);
  if (!pkl_bytes) goto out;
  const ZipEntry *bo = zip_find(&z, prefix, plen, "byteorder");
  if (bo) {
    const uint8_t *s = zip_data(r, bo);
    if (!s) goto out;
    if (bo->csize != 6 || memcmp(s, "little", 6) != 0) {
      fail(r, "tensor is not stored little-endian (byteorder entry is not 'little')");
      goto out;
    }
  }
  Desc d;
  if (!run_pickle(r, pkl_bytes, (size_t)pkl->csize, &d)) goto out;
  /* The storage lives in <prefix>data/<key>. */
  const ZipEntry *se = NULL;
  for (size_t i = 0; i < z.n && !se; i++) {
    const ZipEntry *e = &z.e[i];
    if (e->name_len == plen + 5 + d.key_len && memcmp(e->name, prefix, plen) == 0 &&
        memcmp(e->name + plen, "data/", 5) == 0 && memcmp(e->name + plen + 5, d.key, d.key_len) == 0)
      se = e;
  }
  if (!se) {
    fail(r, "storage '%.*sdata/%.*s' named in data.pkl is missing from the zip", (int)plen, prefix,
         (int)(d.key_len > 100 ? 100 : d.key_len), d.key);
    goto out;
  }
  const uint8_t *storage = zip_data(r, se);
  if (!storage) goto out;
  size_t isz = dtype_size(d.dt);
  if ((uint64_t)d.storage_numel > UINT64_MAX / isz || se->csize != (uint64_t)d.storage_numel * isz) {
    fail(r, "storage '%.*s' holds %llu bytes but data.pkl declares %lld %s elements (%llu bytes)",
         (int)se->name_len, se->name, (unsigned long long)se->csize, (long long)d.storage_numel,
         dtype_name(d.dt), (unsigned long long)d.storage_numel * isz);
    goto out;
  }
  t = make_tensor(r, &d, storage, view);
out:
  free(z.e);
  return t;
}

Tensor *torch_load_bytes(Comp *c, const uint8_t *bytes, size_t len, const char *what, Loc loc) {
  Reader r = {c, loc, what, bytes, len};
  bool view = false;
  return load_pt(&r, &view);
}

Tensor *torch_load(Comp *c, const char *path, Loc loc) {
  int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK); /* a FIFO in the store must not block the open */
  if (fd < 0) {
    diag_error_class(c, DIAG_IO, loc, "cannot open '%s': %s", path, strerror(errno));
    return NULL;
  }
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    diag_error_class(c, DIAG_IO, loc, "'%s': not a regular file", path);
    close(fd);
    return NULL;
  }
  if (st.st_size == 0 || (uint64_t)st.st_size > SIZE_MAX) {
    diag_error(c, loc, "'%s': not a torch.save file (%s)", path, st.st_size ? "too large" : "empty");
    close(fd);
    return NULL;
  }
  size_t len = (size_t)st.st_size;
  /* Private writable mapping: copy-on-write protects the file if a caller
   * ever writes into a tensor. */
  void *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
  int err = errno;
  close(fd);
  if (m == MAP_FAILED) {
    diag_error_class(c, DIAG_IO, loc, "cannot map '%s': %s", path, strerror(err));
    return NULL;
  }
  Reader r = {c, loc, path, m, len};
  bool view = false;
  Tensor *t = load_pt(&r, &view);
  if (t && view) t->map_base = m, t->map_len = len;
  else munmap(m, len);
  return t;
}

/* ------------------------------------------------------------------------ */
/* The tensor hash (§3.2)                                                    */

void tensor_hash_hex(const Tensor *t, char out[65]) {
  /* 7-byte dtype tags; bfloat16 has none, so its hash is "" (not hashable). */
  static const char *const TAGS[DT_COUNT] = {
      [DT_F32] = "float32", [DT_F64] = "float64", [DT_F16] = "float16", [DT_BOOL] = "bool---",
      [DT_I8] = "int8---",  [DT_I16] = "int16--", [DT_I32] = "int32--", [DT_I64] = "int64--",
      [DT_U8] = "uint8--",
  };
  out[0] = '\0';
  if (t->dtype < 0 || t->dtype >= DT_COUNT || !TAGS[t->dtype]) return;
  Blake3 h;
  blake3_init(&h);
  blake3_update(&h, "c3c5ce3e-7d06-4939-8340-2a7e6b2984b4", 36);
  for (int i = 0; i < t->shape.rank; i++) {
    uint8_t be[8];
    for (int j = 0; j < 8; j++) be[j] = (uint8_t)((uint64_t)t->shape.dim[i] >> (56 - 8 * j));
    blake3_update(&h, be, 8);
  }
  blake3_update(&h, "fb782993-5fe7-43ac-acc2-d57fb429c2fc", 36);
  blake3_update(&h, TAGS[t->dtype], 7);
  blake3_update(&h, "cpu", 3);
  blake3_update(&h, "9430f5c7-3c58-4339-b863-5449a4d74ee6", 36);
  blake3_update(&h, t->data, t->nbytes);
  uint8_t d[32];
  blake3_final(&h, d);
  for (int i = 0; i < 32; i++) snprintf(out + 2 * i, 3, "%02x", d[i]);
}

/* ------------------------------------------------------------------------ */
/* torch.save writer                                                         */

typedef struct Buf {
  uint8_t d[2048];             /* data.pkl of a rank-32 tensor needs < 1 KB */
  size_t n;
} Buf;

static void put(Buf *b, const void *p, size_t n) {
  CHECK(n <= sizeof b->d - b->n);
  memcpy(b->d + b->n, p, n);
  b->n += n;
}
static void put8(Buf *b, unsigned v) { uint8_t x = (uint8_t)v; put(b, &x, 1); }
static void put16(Buf *b, unsigned v) { put8(b, v & 0xff), put8(b, (v >> 8) & 0xff); }
static void put32(Buf *b, uint32_t v) { put16(b, v & 0xffff), put16(b, v >> 16); }
static void put_str(Buf *b, const char *s) { put8(b, 'X'), put32(b, (uint32_t)strlen(s)), put(b, s, strlen(s)); }

/* Python's pickler ints: BININT1, BININT2, BININT, else minimal LONG1. */
static void put_int(Buf *b, int64_t v) {
  if (v >= 0 && v < 256) { put8(b, 'K'), put8(b, (unsigned)v); return; }
  if (v >= 0 && v < 65536) { put8(b, 'M'), put16(b, (unsigned)v); return; }
  if (v >= INT32_MIN && v <= INT32_MAX) { put8(b, 'J'), put32(b, (uint32_t)v); return; }
  uint8_t bytes[8];
  int n = 0;
  for (int i = 0; i < 8; i++) bytes[i] = (uint8_t)((uint64_t)v >> (8 * i));
  for (n = 8; n > 1; n--) /* drop bytes that are pure sign extension */
    if (!((bytes[n - 1] == 0 && !(bytes[n - 2] & 0x80)) || (bytes[n - 1] == 0xff && (bytes[n - 2] & 0x80)))) break;
  put8(b, 0x8a), put8(b, (unsigned)n), put(b, bytes, (size_t)n);
}

/* A size/stride tuple the way Python pickles it; memoised unless empty. */
static void put_tuple(Buf *b, const int64_t *v, int n, unsigned *memo) {
  if (n == 0) { put8(b, ')'); return; }
  if (n > 3) put8(b, '(');
  for (int i = 0; i < n; i++) put_int(b, v[i]);
  put8(b, n > 3 ? 't' : 0x84 + (unsigned)n);
  put8(b, 'q'), put8(b, (*memo)++);
}

/* data.pkl for a contiguous tensor: the protocol-2 pattern of §3.3. */
static void build_pickle(Buf *b, const Tensor *t, const char *storage_class) {
  int64_t stride[MAX_RANK], s = 1;
  for (int i = t->shape.rank - 1; i >= 0; i--) { /* torch's contiguous strides treat 0-size dims as 1 */
    stride[i] = s;
    s *= t->shape.dim[i] > 1 ? t->shape.dim[i] : 1;
  }
  unsigned memo = 0;
  put8(b, 0x80), put8(b, 2);
  put(b, "ctorch._utils\n_rebuild_tensor_v2\n", 33), put8(b, 'q'), put8(b, memo++);
  put8(b, '('), put8(b, '(');
  put_str(b, "storage"), put8(b, 'q'), put8(b, memo++);
  put(b, "ctorch\n", 7), put(b, storage_class, strlen(storage_class)), put8(b, '\n');
  put8(b, 'q'), put8(b, memo++);
  put_str(b, "0"), put8(b, 'q'), put8(b, memo++);
  put_str(b, "cpu"), put8(b, 'q'), put8(b, memo++);
  put_int(b, shape_numel(&t->shape));
  put8(b, 't'), put8(b, 'q'), put8(b, memo++);
  put8(b, 'Q');
  put_int(b, 0);
  put_tuple(b, t->shape.dim, t->shape.rank, &memo);
  put_tuple(b, stride, t->shape.rank, &memo);
  put8(b, 0x89);
  put(b, "ccollections\nOrderedDict\n", 25), put8(b, 'q'), put8(b, memo++);
  put8(b, ')'), put8(b, 'R'), put8(b, 'q'), put8(b, memo++);
  put8(b, 't'), put8(b, 'q'), put8(b, memo++);
  put8(b, 'R'), put8(b, 'q'), put8(b, memo++);
  put8(b, '.');
}

static uint32_t crc32(const uint32_t table[256], const void *data, size_t n) {
  const uint8_t *p = data;
  uint32_t c = 0xFFFFFFFF;
  for (size_t i = 0; i < n; i++) c = table[(c ^ p[i]) & 0xff] ^ (c >> 8);
  return c ^ 0xFFFFFFFF;
}

typedef struct OutEntry {
  char name[300];
  const void *data;
  size_t len;
  uint32_t crc;
  uint32_t offset;
} OutEntry;

/* Writes the stored zip: local headers with real sizes and an 'FB' padding
 * extra field so each entry's data starts at a multiple of 64 (mmap-friendly). */
static bool write_zip(FILE *f, OutEntry *e, int n) {
  Buf h;
  uint32_t off = 0;
  for (int i = 0; i < n; i++) {
    size_t nl = strlen(e[i].name), pad = (64 - (off + 30 + nl) % 64) % 64;
    if (pad < 4) pad += 64;
    h.n = 0;
    put32(&h, 0x04034b50), put16(&h, 20), put16(&h, 0x0800), put16(&h, 0), put16(&h, 0), put16(&h, 0);
    put32(&h, e[i].crc), put32(&h, (uint32_t)e[i].len), put32(&h, (uint32_t)e[i].len);
    put16(&h, (unsigned)nl), put16(&h, (unsigned)pad), put(&h, e[i].name, nl);
    put16(&h, 0x4246), put16(&h, (unsigned)(pad - 4));
    while (h.n < 30 + nl + pad) put8(&h, 'Z');
    e[i].offset = off;
    if (fwrite(h.d, 1, h.n, f) != h.n || fwrite(e[i].data, 1, e[i].len, f) != e[i].len) return false;
    off += (uint32_t)(h.n + e[i].len);
  }
  uint32_t cd_off = off;
  for (int i = 0; i < n; i++) {
    size_t nl = strlen(e[i].name);
    h.n = 0;
    put32(&h, 0x02014b50), put16(&h, 20), put16(&h, 20), put16(&h, 0x0800), put16(&h, 0);
    put16(&h, 0), put16(&h, 0), put32(&h, e[i].crc), put32(&h, (uint32_t)e[i].len), put32(&h, (uint32_t)e[i].len);
    put16(&h, (unsigned)nl), put16(&h, 0), put16(&h, 0), put16(&h, 0), put16(&h, 0), put32(&h, 0);
    put32(&h, e[i].offset), put(&h, e[i].name, nl);
    if (fwrite(h.d, 1, h.n, f) != h.n) return false;
    off += (uint32_t)h.n;
  }
  h.n = 0;
  put32(&h, 0x06054b50), put16(&h, 0), put16(&h, 0), put16(&h, (unsigned)n), put16(&h, (unsigned)n);
  put32(&h, off - cd_off), put32(&h, cd_off), put16(&h, 0);
  return fwrite(h.d, 1, h.n, f) == h.n;
}

bool torch_save(Comp *c, const Tensor *t, const char *path) {
  const char *cls = NULL;
  for (size_t i = 0; i < sizeof STORAGES / sizeof *STORAGES; i++)
    if (STORAGES[i].dt == t->dtype) cls = STORAGES[i].cls;
  if (!cls) {
    diag_error(c, NO_LOC, "cannot save '%s': tensors of dtype %s have no torch storage", path, dtype_name(t->dtype));
    return false;
  }
  if (t->nbytes > 0xFFFFFFFFu - 4096) { /* a plain zip's 32-bit offsets */
    diag_error_class(c, DIAG_IO, NO_LOC, "cannot save '%s': %zu bytes needs zip64, which circc's writer does not emit",
                     path, t->nbytes);
    return false;
  }
  /* Archive prefix = basename without extension (what torch.save uses). */
  const char *slash = strrchr(path, '/'), *base = slash ? slash + 1 : path, *dot = strrchr(base, '.');
  size_t blen = dot && dot != base ? (size_t)(dot - base) : strlen(base);
  if (blen == 0) base = "archive", blen = 7;
  if (blen > 200) blen = 200;
  Buf pkl = {.n = 0};
  build_pickle(&pkl, t, cls);
  OutEntry e[4] = {{.data = pkl.d, .len = pkl.n}, {.data = "little", .len = 6},
                   {.data = t->data, .len = t->nbytes}, {.data = "3\n", .len = 2}};
  const char *names[4] = {"data.pkl", "byteorder", "data/0", "version"};
  uint32_t table[256];
  for (uint32_t i = 0; i < 256; i++) {
    uint32_t v = i;
    for (int k = 0; k < 8; k++) v = v & 1 ? 0xEDB88320 ^ (v >> 1) : v >> 1;
    table[i] = v;
  }
  for (int i = 0; i < 4; i++) {
    snprintf(e[i].name, sizeof e[i].name, "%.*s/%s", (int)blen, base, names[i]);
    e[i].crc = crc32(table, e[i].data, e[i].len);
  }
  /* Atomic: write a hidden temp file in the same directory, then rename. */
  char *tmp = arena_printf(&c->arena, "%.*s.%s.tmp.XXXXXX", (int)(base - path), path, base);
  int fd = mkstemp(tmp);
  if (fd < 0) {
    diag_error_class(c, DIAG_IO, NO_LOC, "cannot create '%s': %s", tmp, strerror(errno));
    return false;
  }
  fchmod(fd, 0644);
  FILE *f = fdopen(fd, "wb");
  bool ok = f && write_zip(f, e, 4) && fflush(f) == 0;
  int err = errno;
  if (!f) close(fd);
  else if (fclose(f) != 0 && ok) ok = false, err = errno;
  if (ok && rename(tmp, path) != 0) ok = false, err = errno;
  if (!ok) {
    diag_error_class(c, DIAG_IO, NO_LOC, "cannot write '%s': %s", path, strerror(err));
    unlink(tmp);
  }
  return ok;
}

/* ------------------------------------------------------------------------ */
/* The store (§3.1)                                                          */

const char *store_root(Comp *c) {
  if (c->tensor_dir) return c->tensor_dir;
  const char *env = getenv("TENSORS_CACHE_DIR"), *home = getenv("HOME");
  if (env && *env) return env;
  return arena_printf(&c->arena, "%s/tensors_by_hash_cache", home && *home ? home : ".");
}

/* Non-hidden entries of dir whose names start with want (sorted; names only,
 * in the arena). glob(3) rather than <dirent.h>, whose DT_UNKNOWN clashes with
 * tensor.h's DType. */
static int list_matches(Comp *c, const char *dir, const char *want, char ***out) {
  size_t dl = strlen(dir), k = 0;
  char *pat = arena_alloc(&c->arena, 2 * dl + strlen(want) + 3);
  for (size_t i = 0; i < dl; i++) {
    if (strchr("\\*?[", dir[i])) pat[k++] = '\\';
    pat[k++] = dir[i];
  }
  snprintf(pat + k, strlen(want) + 3, "/%s*", want);
  glob_t g;
  int n = 0;
  *out = NULL;
  if (glob(pat, 0, NULL, &g) == 0) {
    *out = arena_alloc(&c->arena, g.gl_pathc * sizeof **out);
    for (; (size_t)n < g.gl_pathc; n++) (*out)[n] = arena_strdup(&c->arena, g.gl_pathv[n] + dl + 1);
  }
  globfree(&g);
  return n;
}

/* Walks root/P[0:4]/P[4:8]/..., matching the rest of the prefix, then
 * descends through directories that hold exactly one entry. */
Tensor *store_load(Comp *c, const char *prefix, Loc loc) {
  size_t plen = strlen(prefix);
  if (plen == 0 || plen > 64 || strspn(prefix, "0123456789abcdef") != plen) {
    diag_error(c, loc, "invalid tensor hash prefix '%s': expected 1 to 64 lowercase hex digits", prefix);
    return NULL;
  }
  const char *root = store_root(c);
  size_t groups = (plen < 8 ? plen : 8) / 4;
  char hash[256];
  snprintf(hash, sizeof hash, "%.*s", (int)(4 * groups), prefix);
  const char *path = root;
  for (size_t g = 0; g < groups; g++) path = arena_printf(&c->arena, "%s/%.4s", path, prefix + 4 * g);
  const char *want = prefix + 4 * groups;
  for (;;) {
    char **names;
    int n = list_matches(c, path, want, &names);
    if (n <= 0) {
      diag_error(c, loc, "no tensor with hash prefix '%s' in the tensor store '%s' (choose the store with --tensors DIR or $TENSORS_CACHE_DIR)",
                 prefix, root);
      return NULL;
    }
    if (n > 1) {
      char list[700] = "";
      for (int i = 0; i < n && i < 8; i++)
        snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s%s%s", i ? ", " : "", hash, names[i],
                 strlen(hash) + strlen(names[i]) < 64 ? "..." : "");
      diag_error(c, loc, "ambiguous tensor hash prefix '%s': %d entries match (%s%s)", prefix, n, list,
                 n > 8 ? ", ..." : "");
      return NULL;
    }
    size_t hl = strlen(hash);
    snprintf(hash + hl, sizeof hash - hl, "%s", names[0]);
    path = arena_printf(&c->arena, "%s/%s", path, names[0]);
    struct stat st;
    if (stat(path, &st) != 0) {
      diag_error_class(c, DIAG_IO, loc, "cannot read '%s': %s", path, strerror(errno));
      return NULL;
    }
    if (!S_ISDIR(st.st_mode)) break;
    if (strlen(hash) >= 64) { /* deeper than any hash: not a store layout */
      diag_error(c, loc, "'%s': unexpected directory in the tensor store", path);
      return NULL;
    }
    want = "";
  }
  Tensor *t = torch_load(c, path, loc);
  if (t && strlen(hash) == 64 && strspn(hash, "0123456789abcdef") == 64) memcpy(t->hash_hex, hash, 65);
  return t;
}

/* mkdir -p */
static bool make_dirs(Comp *c, const char *dir) {
  char *p = arena_strdup(&c->arena, dir);
  for (char *s = p + 1;; s++) {
    if (*s != '/' && *s != '\0') continue;
    char saved = *s;
    *s = '\0';
    struct stat st;
    if (mkdir(p, 0777) != 0 && (errno != EEXIST || stat(p, &st) != 0 || !S_ISDIR(st.st_mode))) {
      diag_error_class(c, DIAG_IO, NO_LOC, "cannot create directory '%s': %s", p,
                       errno == EEXIST ? "a file is in the way" : strerror(errno));
      return false;
    }
    if (saved == '\0') return true;
    *s = saved;
  }
}

const char *store_write(Comp *c, const Tensor *t) {
  char h[65];
  tensor_hash_hex(t, h);
  if (!h[0]) {
    diag_error(c, NO_LOC, "cannot store a %s tensor: rust_circuit's tensor hash has no tag for it",
               dtype_name(t->dtype));
    return NULL;
  }
  const char *dir = arena_printf(&c->arena, "%s/%.4s/%.4s", store_root(c), h, h + 4);
  if (!make_dirs(c, dir)) return NULL;
  const char *path = arena_printf(&c->arena, "%s/%s", dir, h + 8);
  struct stat st;
  if (stat(path, &st) != 0 && !torch_save(c, t, path)) return NULL; /* keep an existing entry */
  return arena_strdup(&c->arena, h);
}
