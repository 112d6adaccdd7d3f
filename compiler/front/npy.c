/* npy.c — NumPy .npy reader and writer (format versions 1.0, 2.0, 3.0).
 * Reads little-endian C-order arrays of the dtypes circc knows; anything else
 * (big-endian, Fortran order, object/structured dtypes, payload size not
 * matching the shape) is an error that says what was expected and found.
 * Large files are mmapped and the tensor points into the mapping when the
 * payload is aligned for its dtype. Writes v1.0 byte-identical to numpy.save. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include "outfile.h"
#include "tensor.h"

enum { MMAP_MIN = 64 * 1024 };   /* smaller files are read into memory */

/* descr codes without the byte-order character, and the descr numpy writes for each */
static const struct { const char *code; DType dt; const char *descr; } CODES[] = {
    {"f4", DT_F32, "<f4"}, {"f8", DT_F64, "<f8"}, {"f2", DT_F16, "<f2"},  {"i8", DT_I64, "<i8"},
    {"i4", DT_I32, "<i4"}, {"i2", DT_I16, "<i2"}, {"i1", DT_I8, "|i1"},   {"u1", DT_U8, "|u1"},
    {"b1", DT_BOOL, "|b1"},
};
#define SUPPORTED "<f4 <f8 <f2 <i8 <i4 <i2 |i1 |u1 |b1"

typedef struct Header {
  DType dtype;
  Shape shape;
  char descr[24];            /* as written in the file, for messages */
  size_t data_off;           /* payload start */
} Header;

/* State of the header-dict parser; errors are prefixed with `what`. */
typedef struct Dict {
  Comp *c;
  Loc loc;
  const char *what;
  const char *s;
  size_t n, pos, base;       /* base: file offset of s[0], for messages */
} Dict;

static void shape_str(const Shape *s, char *buf, size_t cap) {
  size_t k = (size_t)snprintf(buf, cap, "(");
  for (int i = 0; i < s->rank && k < cap; i++)
    k += (size_t)snprintf(buf + k, cap - k, i ? ", %lld" : "%lld", (long long)s->dim[i]);
  if (k < cap) snprintf(buf + k, cap - k, s->rank == 1 ? ",)" : ")");
}

/* Printable rendering of up to n raw bytes (for "found ..." in messages). */
static void escape_bytes(const uint8_t *b, size_t n, char *buf, size_t cap) {
  size_t k = 0;
  for (size_t i = 0; i < n && k + 5 < cap; i++)
    k += (size_t)snprintf(buf + k, cap - k, b[i] >= 0x20 && b[i] < 0x7f && b[i] != '\\' ? "%c" : "\\x%02x", b[i]);
  buf[k] = 0;
}

static const char *dict_found(Dict *d, char buf[16]) {
  if (d->pos >= d->n) return "end of header";
  unsigned char ch = (unsigned char)d->s[d->pos];
  if (ch >= 0x20 && ch < 0x7f) snprintf(buf, 16, "'%c'", ch);
  else snprintf(buf, 16, "byte 0x%02x", ch);
  return buf;
}

static bool dict_fail(Dict *d, const char *expected) {
  char b[16];
  diag_error(d->c, d->loc, "%s: malformed .npy header at byte %zu: expected %s, found %s", d->what,
             d->base + d->pos, expected, dict_found(d, b));
  return false;
}

static void dict_ws(Dict *d) {
  while (d->pos < d->n && (d->s[d->pos] == ' ' || d->s[d->pos] == '\t' || d->s[d->pos] == '\n' || d->s[d->pos] == '\r'))
    d->pos++;
}

static bool dict_eat(Dict *d, char ch) {
  dict_ws(d);
  if (d->pos < d->n && d->s[d->pos] == ch) {
    d->pos++;
    return true;
  }
  return false;
}

/* A Python string literal without escapes ('descr' or "descr"). */
static bool dict_string(Dict *d, const char **s, size_t *len) {
  dict_ws(d);
  if (d->pos >= d->n || (d->s[d->pos] != '\'' && d->s[d->pos] != '"')) return dict_fail(d, "a quoted string");
  char q = d->s[d->pos++];
  size_t start = d->pos;
  while (d->pos < d->n && d->s[d->pos] != q && d->s[d->pos] != '\\' && d->s[d->pos] != '\n') d->pos++;
  if (d->pos >= d->n || d->s[d->pos] != q) return dict_fail(d, "the closing quote of a string");
  *s = d->s + start;
  *len = d->pos++ - start;
  return true;
}

static bool dict_bool(Dict *d, bool *out) {
  dict_ws(d);
  if (d->n - d->pos >= 4 && memcmp(d->s + d->pos, "True", 4) == 0) { *out = true; d->pos += 4; return true; }
  if (d->n - d->pos >= 5 && memcmp(d->s + d->pos, "False", 5) == 0) { *out = false; d->pos += 5; return true; }
  return dict_fail(d, "True or False");
}

/* A tuple of non-negative ints: (), (5,), (2, 3) — trailing comma allowed, and
 * Python 2's 3L suffix. A 1-tuple needs its comma: (5) is an int, not a shape. */
static bool dict_shape(Dict *d, Shape *s) {
  s->rank = 0;
  if (!dict_eat(d, '(')) return dict_fail(d, "a shape tuple '('");
  bool comma = false;
  while (!dict_eat(d, ')')) {
    if (s->rank && !comma) return dict_fail(d, "',' or ')' in the shape tuple");
    dict_ws(d);
    if (d->pos >= d->n || d->s[d->pos] < '0' || d->s[d->pos] > '9') return dict_fail(d, "a non-negative dimension");
    if (s->rank == MAX_RANK) {
      diag_error(d->c, d->loc, "%s: bad .npy shape: expected at most %d dimensions, found more", d->what, MAX_RANK);
      return false;
    }
    if (d->s[d->pos] == '0' && d->pos + 1 < d->n && d->s[d->pos + 1] >= '0' && d->s[d->pos + 1] <= '9')
      return dict_fail(d, "a dimension without leading zeros");
    int64_t v = 0;
    while (d->pos < d->n && d->s[d->pos] >= '0' && d->s[d->pos] <= '9') {
      int digit = d->s[d->pos] - '0';
      if (v > (INT64_MAX - digit) / 10) return dict_fail(d, "a dimension below 2^63");
      v = v * 10 + digit;
      d->pos++;
    }
    if (d->pos < d->n && d->s[d->pos] == 'L') d->pos++;
    s->dim[s->rank++] = v;
    comma = dict_eat(d, ',');
  }
  if (s->rank == 1 && !comma) {
    d->pos--;
    return dict_fail(d, "',' after the only dimension (a 1-tuple is written (n,))");
  }
  return true;
}

static bool parse_descr(Dict *d, const char *s, size_t len, Header *h) {
  if (len >= sizeof h->descr) {
    diag_error(d->c, d->loc, "%s: unsupported dtype: expected one of " SUPPORTED ", found '%.*s'", d->what,
               (int)(len > 40 ? 40 : len), s);
    return false;
  }
  memcpy(h->descr, s, len);
  h->descr[len] = 0;
  char order = h->descr[0] && strchr("<>|=", h->descr[0]) ? h->descr[0] : 0;
  const char *code = h->descr + (order != 0);
  for (size_t i = 0; i < sizeof CODES / sizeof CODES[0]; i++) {
    if (strcmp(code, CODES[i].code) != 0) continue;
    h->dtype = CODES[i].dt;
    if (dtype_size(h->dtype) == 1 || order == '<') return true;   /* byte order is moot for 1-byte types */
    diag_error(d->c, d->loc, "%s: unsupported byte order: expected little-endian '<%s', found %s '%s'", d->what,
               code, order == '>' ? "big-endian" : "unspecified", h->descr);
    return false;
  }
  diag_error(d->c, d->loc, "%s: unsupported dtype: expected one of " SUPPORTED ", found %s'%s'", d->what,
             code[0] == 'O' ? "object dtype " : "", h->descr);
  return false;
}

/* The header dict: {'descr': ..., 'fortran_order': ..., 'shape': ...} in any
 * order, each key exactly once, nothing else. */
static bool parse_dict(Dict *d, Header *h) {
  enum { DESCR = 1, FORTRAN = 2, SHAPE = 4 };
  int seen = 0;
  bool fortran = false;
  if (!dict_eat(d, '{')) return dict_fail(d, "'{' starting the header dict");
  while (!dict_eat(d, '}')) {
    const char *key;
    size_t klen;
    if (!dict_string(d, &key, &klen)) return false;
    int which = klen == 5 && memcmp(key, "descr", 5) == 0           ? DESCR
                : klen == 13 && memcmp(key, "fortran_order", 13) == 0 ? FORTRAN
                : klen == 5 && memcmp(key, "shape", 5) == 0           ? SHAPE
                                                                      : 0;
    if (!which || (seen & which)) {
      diag_error(d->c, d->loc,
                 "%s: bad .npy header: expected the keys 'descr', 'fortran_order' and 'shape' once each, found %s "
                 "key '%.*s'",
                 d->what, which ? "a duplicate" : "an unexpected", (int)(klen > 40 ? 40 : klen), key);
      return false;
    }
    seen |= which;
    if (!dict_eat(d, ':')) return dict_fail(d, "':' after a key");
    if (which == DESCR) {
      const char *s;
      size_t len;
      dict_ws(d);
      if (d->pos < d->n && d->s[d->pos] == '[') {
        diag_error(d->c, d->loc, "%s: unsupported dtype: expected one of " SUPPORTED ", found a structured dtype",
                   d->what);
        return false;
      }
      if (!dict_string(d, &s, &len) || !parse_descr(d, s, len, h)) return false;
    } else if (which == FORTRAN) {
      if (!dict_bool(d, &fortran)) return false;
    } else if (!dict_shape(d, &h->shape)) {
      return false;
    }
    if (!dict_eat(d, ',')) {
      if (!dict_eat(d, '}')) return dict_fail(d, "',' or '}' in the header dict");
      break;
    }
  }
  dict_ws(d);
  if (d->pos < d->n) return dict_fail(d, "only padding after the header dict");
  if (seen != (DESCR | FORTRAN | SHAPE)) {
    diag_error(d->c, d->loc,
               "%s: bad .npy header: expected the keys 'descr', 'fortran_order' and 'shape', found no '%s'",
               d->what, !(seen & DESCR) ? "descr" : !(seen & FORTRAN) ? "fortran_order" : "shape");
    return false;
  }
  if (fortran) {
    diag_error(d->c, d->loc,
               "%s: unsupported layout: expected fortran_order False (C order), found True; "
               "re-save with np.ascontiguousarray", d->what);
    return false;
  }
  return true;
}

/* Validates magic, version, header and payload size of a whole .npy image. */
static bool parse_npy(Comp *c, const uint8_t *b, size_t len, const char *what, Loc loc, Header *h) {
  char buf[256];
  if (len < 6 || memcmp(b, "\x93NUMPY", 6) != 0) {
    escape_bytes(b, len < 6 ? len : 6, buf, sizeof buf);
    diag_error(c, loc, "%s: not a .npy file: expected magic \"\\x93NUMPY\", found \"%s\"", what, buf);
    return false;
  }
  if (len < 8 || !(b[6] >= 1 && b[6] <= 3 && b[7] == 0)) {
    if (len < 8) diag_error(c, loc, "%s: truncated .npy file: expected at least 10 bytes, found %zu", what, len);
    else diag_error(c, loc, "%s: unsupported .npy version: expected 1.0, 2.0 or 3.0, found %u.%u", what, b[6], b[7]);
    return false;
  }
  size_t prefix = b[6] == 1 ? 10 : 12;
  if (len < prefix) {
    diag_error(c, loc, "%s: truncated .npy file: expected at least %zu bytes, found %zu", what, prefix, len);
    return false;
  }
  size_t hlen = b[8] | (size_t)b[9] << 8;
  if (prefix == 12) hlen |= (size_t)b[10] << 16 | (size_t)b[11] << 24;
  if (hlen > len - prefix) {
    diag_error(c, loc, "%s: truncated .npy header: expected %zu bytes, found %zu", what, prefix + hlen, len);
    return false;
  }
  Dict d = {c, loc, what, (const char *)b + prefix, hlen, 0, prefix};
  if (!parse_dict(&d, h)) return false;
  h->data_off = prefix + hlen;
  /* the non-zero dims must multiply without overflow too, so every later
   * shape_numel() on this tensor is safe */
  uint64_t prod = 1, size = dtype_size(h->dtype), have = len - h->data_off;
  bool too_big = false, zero = false;
  for (int i = 0; i < h->shape.rank; i++) {
    uint64_t dim = (uint64_t)h->shape.dim[i];
    if (!dim) zero = true;
    else if (prod > (uint64_t)INT64_MAX / dim) too_big = true;
    else prod *= dim;
  }
  too_big |= !zero && prod > (uint64_t)INT64_MAX / size;
  shape_str(&h->shape, buf, sizeof buf);
  if (too_big) {
    diag_error(c, loc, "%s: shape %s of dtype '%s' is too large: expected at most 2^63 bytes of data, found %llu",
               what, buf, h->descr, (unsigned long long)have);
    return false;
  }
  uint64_t want = zero ? 0 : prod * size;
  if (want != have) {
    diag_error(c, loc, "%s: shape %s of dtype '%s': expected %llu bytes of data, found %llu", what, buf, h->descr,
               (unsigned long long)want, (unsigned long long)have);
    return false;
  }
  return true;
}

/* A tensor over file bytes: a view into the mapping when aligned, else a copy
 * (and the mapping, if any, is released). */
static Tensor *make_tensor(Comp *c, const Header *h, uint8_t *bytes, size_t len, void *map) {
  size_t nbytes = len - h->data_off;
  if (map && nbytes && h->data_off % dtype_size(h->dtype) == 0) {
    Tensor *t = ARENA_NEW(&c->arena, Tensor);
    t->dtype = h->dtype;
    t->shape = h->shape;
    t->data = bytes + h->data_off;
    t->nbytes = nbytes;
    t->map_base = map;
    t->map_len = len;
    t->next = c->tensors;
    c->tensors = t;
    return t;
  }
  Tensor *t = tensor_new(c, h->dtype, &h->shape);
  if (nbytes) memcpy(t->data, bytes + h->data_off, nbytes);
  if (map) munmap(map, len);
  return t;
}

Tensor *npy_load_bytes(Comp *c, const uint8_t *bytes, size_t len, const char *what, Loc loc) {
  Header h = {0};
  if (!parse_npy(c, bytes, len, what, loc, &h)) return NULL;
  return make_tensor(c, &h, (uint8_t *)bytes, len, NULL);
}

Tensor *npy_load(Comp *c, const char *path, Loc loc) {
  int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);   /* a FIFO must not hang us */
  struct stat st;
  if (fd < 0 || fstat(fd, &st) != 0) {
    diag_error_class(c, DIAG_IO, loc, "cannot open %s: %s", path, strerror(errno));
    if (fd >= 0) close(fd);
    return NULL;
  }
  if (!S_ISREG(st.st_mode)) {
    diag_error_class(c, DIAG_IO, loc, "cannot read %s: not a regular file", path);
    close(fd);
    return NULL;
  }
  size_t len = (size_t)st.st_size;
  uint8_t *bytes = NULL;
  void *map = NULL;
  if (len >= MMAP_MIN) {
    /* private + writable: callers may scribble on the tensor without touching the file */
    map = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    if (map == MAP_FAILED) {
      diag_error_class(c, DIAG_IO, loc, "cannot map %s: %s", path, strerror(errno));
      close(fd);
      return NULL;
    }
    bytes = map;
  } else {
    bytes = malloc(len ? len : 1);
    if (!bytes) ICE("out of memory reading %s", path);
    size_t got = 0;
    while (got < len) {
      ssize_t r = read(fd, bytes + got, len - got);
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) {
        diag_error_class(c, DIAG_IO, loc, "cannot read %s: %s", path,
                         r ? strerror(errno) : "file shrank while reading");
        free(bytes);
        close(fd);
        return NULL;
      }
      got += (size_t)r;
    }
  }
  close(fd);
  Header h = {0};
  Tensor *t = NULL;
  if (parse_npy(c, bytes, len, path, loc, &h)) t = make_tensor(c, &h, bytes, len, map);
  else if (map) munmap(map, len);
  if (!map) free(bytes);
  return t;
}

static bool write_all(int fd, const void *buf, size_t n) {
  const char *p = buf;
  while (n) {
    ssize_t w = write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    p += w;
    n -= (size_t)w;
  }
  return true;
}

bool npy_write_staged(Comp *c, const Tensor *t, const OutFile *of) {
  const char *path = of->path;
  const char *descr = NULL;
  for (size_t i = 0; i < sizeof CODES / sizeof CODES[0]; i++)
    if (CODES[i].dt == t->dtype) descr = CODES[i].descr;
  if (!descr) {
    diag_error_class(c, DIAG_IO, NO_LOC, "cannot write %s: .npy has no %s dtype (convert to float32 first)", path,
                     dtype_name(t->dtype));
    return false;
  }
  CHECK(t->nbytes == (size_t)shape_numel(&t->shape) * dtype_size(t->dtype));
  /* numpy's layout: dict, spare spaces so shape[0] can grow to 21 digits,
   * then spaces and '\n' up to a multiple of 64 bytes (numpy/lib/format.py) */
  char shape[MAX_RANK * 22 + 8], hdr[MAX_RANK * 22 + 256];
  shape_str(&t->shape, shape, sizeof shape);
  int n = snprintf(hdr, sizeof hdr, "{'descr': '%s', 'fortran_order': False, 'shape': %s, }", descr, shape);
  if (t->shape.rank > 0) {
    int digits = snprintf(NULL, 0, "%lld", (long long)t->shape.dim[0]);
    n += snprintf(hdr + n, sizeof hdr - (size_t)n, "%*s", 21 - digits, "");
  }
  int pad = 64 - (10 + n + 1) % 64;
  n += snprintf(hdr + n, sizeof hdr - (size_t)n, "%*s\n", pad, "");
  CHECK((size_t)n < sizeof hdr && (10 + n) % 64 == 0);
  uint8_t prefix[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, (uint8_t)(n & 0xff), (uint8_t)(n >> 8)};

  int fd = open(of->write_to, of->through ? O_WRONLY | O_CLOEXEC : O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
  bool ok = fd >= 0 && write_all(fd, prefix, sizeof prefix) && write_all(fd, hdr, (size_t)n) &&
            write_all(fd, t->data, t->nbytes);
  int err = errno;
  if (fd >= 0 && close(fd) != 0 && ok) {
    ok = false;
    err = errno;
  }
  if (!ok) {
    if (fd >= 0) outfile_abort(of);
    diag_error_class(c, DIAG_IO, NO_LOC, "cannot write %s: %s", path, strerror(err));
  }
  return ok;
}

bool npy_save(Comp *c, const Tensor *t, const char *path) {
  OutFile of = outfile_begin(c, path);
  if (!npy_write_staged(c, t, &of)) return false;
  if (outfile_commit(&of, NULL)) return true;
  diag_error_class(c, DIAG_IO, NO_LOC, "cannot write %s: %s", path, strerror(errno));
  return false;
}
