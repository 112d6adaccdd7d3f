/* safetensors.c — Hugging Face safetensors checkpoints: one file, or a sharded
 * checkpoint described by model.safetensors.index.json. A file is an 8-byte
 * little-endian header length, a JSON header {name: {dtype, shape,
 * data_offsets}} and the data section. Opening validates every entry (dtype,
 * in-range non-overlapping offsets, size = numel * itemsize); shards are opened
 * lazily on first use. Big tensors are mmapped, small ones read; F16/BF16 stay
 * in their stored dtype. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include "json.h"
#include "tensor.h"

enum { MMAP_MIN = 64 * 1024 };                       /* smaller tensors are read, not mapped */
#define MAX_HEADER 100000000ull                      /* the reference implementation's limit */

static const struct { const char *name; DType dt; } DTYPES[] = {
    {"F32", DT_F32}, {"F16", DT_F16}, {"BF16", DT_BF16}, {"F64", DT_F64}, {"I64", DT_I64},
    {"I32", DT_I32}, {"I16", DT_I16}, {"I8", DT_I8},     {"U8", DT_U8},   {"BOOL", DT_BOOL},
};
#define SUPPORTED "F32 F16 BF16 F64 I64 I32 I16 I8 U8 BOOL"

typedef struct StTensor {
  const char *name;
  DType dtype;
  Shape shape;
  uint64_t begin, end;         /* data_offsets, relative to the data section */
} StTensor;

typedef struct Shard {
  const char *path;
  uint64_t file_size, data_start;   /* data section = [data_start, file_size) */
  StTensor *tensors;           /* sorted by name */
  int n;
  bool loaded, failed;         /* header parsed / parse failed (reported once) */
} Shard;

typedef struct Entry {
  const char *name;
  int shard;
} Entry;

struct TensorFile {
  const char *path;            /* the file or index, for messages */
  Entry *names;                /* sorted by name */
  int n;
  Shard *shards;
  int nshards;
};

static int cmp_tensor_name(const void *a, const void *b) {
  return strcmp(((const StTensor *)a)->name, ((const StTensor *)b)->name);
}
static int cmp_entry_name(const void *a, const void *b) {
  return strcmp(((const Entry *)a)->name, ((const Entry *)b)->name);
}
static int cmp_tensor_begin(const void *a, const void *b) {
  const StTensor *x = *(const StTensor *const *)a, *y = *(const StTensor *const *)b;
  return x->begin < y->begin ? -1 : x->begin > y->begin;
}

static void shape_str(const Shape *s, char *buf, size_t cap) {
  size_t k = (size_t)snprintf(buf, cap, "[");
  for (int i = 0; i < s->rank && k < cap; i++)
    k += (size_t)snprintf(buf + k, cap - k, i ? ", %lld" : "%lld", (long long)s->dim[i]);
  if (k < cap) snprintf(buf + k, cap - k, "]");
}

static bool read_at(int fd, void *buf, size_t n, uint64_t off) {
  char *p = buf;
  while (n) {
    ssize_t r = pread(fd, p, n, (off_t)off);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) {
      if (r == 0) errno = EIO;   /* file shorter than promised */
      return false;
    }
    p += r;
    n -= (size_t)r;
    off += (uint64_t)r;
  }
  return true;
}

/* Opens path as a regular file; reports and returns -1 on failure. */
static int open_file(Comp *c, const char *path, Loc loc, uint64_t *size) {
  int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);   /* a FIFO must not hang us */
  struct stat st;
  if (fd < 0 || fstat(fd, &st) != 0) {
    diag_error_class(c, DIAG_IO, loc, "cannot open %s: %s", path, strerror(errno));
    if (fd >= 0) close(fd);
    return -1;
  }
  if (!S_ISREG(st.st_mode)) {
    diag_error_class(c, DIAG_IO, loc, "cannot read %s: not a regular file", path);
    close(fd);
    return -1;
  }
  *size = (uint64_t)st.st_size;
  return fd;
}

/* Validates one header entry into *t. */
static bool parse_entry(Comp *c, Loc loc, const Shard *s, const char *name, const Json *v, uint64_t data_len,
                        StTensor *t) {
  const char *path = s->path;
  if (v->type != JSON_OBJECT) {
    diag_error(c, loc, "%s: tensor '%s': expected an object {dtype, shape, data_offsets}, found %s", path, name,
               json_type_name(v->type));
    return false;
  }
  const Json *dtype = json_get(v, "dtype");
  const char *dt = json_str(dtype);
  if (!dt) {
    diag_error(c, loc, "%s: tensor '%s': expected a string \"dtype\", found %s", path, name,
               dtype ? json_type_name(dtype->type) : "none");
    return false;
  }
  t->dtype = DT_UNKNOWN;
  for (size_t i = 0; i < sizeof DTYPES / sizeof DTYPES[0]; i++)
    if (strcmp(dt, DTYPES[i].name) == 0) t->dtype = DTYPES[i].dt;
  if (t->dtype == DT_UNKNOWN) {
    diag_error(c, loc, "%s: tensor '%s': unsupported dtype: expected one of " SUPPORTED ", found '%.40s'", path, name,
               dt);
    return false;
  }
  const Json *shape = json_get(v, "shape");
  const char *bad = !shape                        ? "none"
                    : shape->type != JSON_ARRAY   ? json_type_name(shape->type)
                    : json_len(shape) > MAX_RANK  ? "too many dimensions"
                                                  : NULL;
  /* the non-zero dims must multiply without overflow too, so every later
   * shape_numel() on this tensor is safe */
  uint64_t prod = 1;
  bool too_big = false, zero = false;
  for (size_t i = 0; !bad && i < json_len(shape); i++) {
    int64_t d;
    if (!json_int(json_at(shape, i), &d) || d < 0) {
      bad = "an element that is not a non-negative integer";
      break;
    }
    t->shape.dim[i] = d;
    if (!d) zero = true;
    else if (prod > (uint64_t)INT64_MAX / (uint64_t)d) too_big = true;
    else prod *= (uint64_t)d;
  }
  if (bad) {
    diag_error(c, loc,
               "%s: tensor '%s': expected \"shape\" to be an array of at most %d non-negative integers, "
               "found %s",
               path, name, MAX_RANK, bad);
    return false;
  }
  t->shape.rank = (int)json_len(shape);
  const Json *offs = json_get(v, "data_offsets");
  int64_t b = 0, e = 0;
  bool pair = offs && offs->type == JSON_ARRAY && json_len(offs) == 2 && json_int(json_at(offs, 0), &b) &&
              json_int(json_at(offs, 1), &e);
  if (!pair || b < 0 || e < b) {
    char found[64];
    if (pair) snprintf(found, sizeof found, "[%lld, %lld]", (long long)b, (long long)e);
    else snprintf(found, sizeof found, "%s", offs ? json_type_name(offs->type) : "none");
    diag_error(c, loc, "%s: tensor '%s': expected \"data_offsets\" to be [begin, end] with 0 <= begin <= end, found %s",
               path, name, found);
    return false;
  }
  t->begin = (uint64_t)b;
  t->end = (uint64_t)e;
  if (t->end > data_len) {
    diag_error(c, loc,
               "%s: tensor '%s': data_offsets out of range: expected end <= %llu (the data section), "
               "found [%llu, %llu]",
               path, name, (unsigned long long)data_len, (unsigned long long)b, (unsigned long long)e);
    return false;
  }
  uint64_t size = dtype_size(t->dtype), have = t->end - t->begin;
  too_big |= !zero && prod > (uint64_t)INT64_MAX / size;
  if (too_big || (zero ? 0 : prod * size) != have) {
    char sh[256];
    shape_str(&t->shape, sh, sizeof sh);
    if (too_big)
      diag_error(c, loc, "%s: tensor '%s' (%s, shape %s) is too large: expected at most 2^63 bytes of data, found %llu",
                 path, name, dt, sh, (unsigned long long)have);
    else
      diag_error(c, loc,
                 "%s: tensor '%s' (%s, shape %s): expected %llu bytes of data, found %llu "
                 "(data_offsets [%llu, %llu])",
                 path, name, dt, sh, (unsigned long long)(zero ? 0 : prod * size), (unsigned long long)have,
                 (unsigned long long)b, (unsigned long long)e);
    return false;
  }
  t->name = arena_strdup(&c->arena, name);
  return true;
}

/* Reads and validates a shard's header (once). */
static bool load_shard(Comp *c, Shard *s, Loc loc) {
  if (s->loaded || s->failed) return s->loaded;
  s->failed = true;
  uint64_t size;
  int fd = open_file(c, s->path, loc, &size);
  if (fd < 0) return false;
  uint8_t len8[8];
  if (size < 8) {
    diag_error(c, loc, "%s: not a safetensors file: expected at least 8 bytes, found %llu", s->path,
               (unsigned long long)size);
    close(fd);
    return false;
  }
  if (!read_at(fd, len8, 8, 0)) {
    diag_error_class(c, DIAG_IO, loc, "cannot read %s: %s", s->path, strerror(errno));
    close(fd);
    return false;
  }
  uint64_t hlen = 0;
  for (int i = 7; i >= 0; i--) hlen = hlen << 8 | len8[i];
  if (hlen > size - 8 || hlen > MAX_HEADER) {
    diag_error(c, loc, "%s: not a safetensors file: expected a header length of at most %llu bytes, found %llu",
               s->path, (unsigned long long)(size - 8 < MAX_HEADER ? size - 8 : MAX_HEADER), (unsigned long long)hlen);
    close(fd);
    return false;
  }
  char *text = malloc(hlen ? hlen : 1);
  if (!text) ICE("out of memory reading %s", s->path);
  bool read_ok = read_at(fd, text, hlen, 8);
  int read_errno = errno;
  close(fd);
  if (!read_ok) {
    diag_error_class(c, DIAG_IO, loc, "cannot read %s: %s", s->path, strerror(read_errno));
    free(text);
    return false;
  }
  Arena scratch = {0};                                 /* the JSON tree is dropped after validation */
  JsonError jerr;
  Json *root = json_parse(&scratch, text, hlen, &jerr);
  bool ok = root != NULL;
  if (!root)
    diag_error(c, loc, "%s: malformed safetensors header at byte %llu: %s", s->path,
               (unsigned long long)(jerr.offset + 8), jerr.msg);
  else if (root->type != JSON_OBJECT) {
    diag_error(c, loc, "%s: bad safetensors header: expected a JSON object, found %s", s->path,
               json_type_name(root->type));
    ok = false;
  }
  s->file_size = size;
  s->data_start = 8 + hlen;
  if (ok) {
    s->tensors = ARENA_ARRAY(&c->arena, StTensor, json_len(root));
    for (size_t i = 0; ok && i < json_len(root); i++) {
      const char *name = json_key(root, i);
      if (strcmp(name, "__metadata__") == 0) continue;
      if (strlen(name) != root->members[i].key_len) {
        diag_error(c, loc, "%s: expected tensor names without NUL bytes, found '%s\\u0000...'", s->path, name);
        ok = false;
        break;
      }
      ok = parse_entry(c, loc, s, name, json_at(root, i), size - s->data_start, &s->tensors[s->n]);
      s->n++;
    }
  }
  arena_free_all(&scratch);
  free(text);
  if (!ok) return false;
  /* overlap check over the non-empty ranges in file order */
  StTensor **by_begin = malloc(sizeof *by_begin * (size_t)(s->n ? s->n : 1));
  if (!by_begin) ICE("out of memory");
  int m = 0;
  for (int i = 0; i < s->n; i++)
    if (s->tensors[i].end > s->tensors[i].begin) by_begin[m++] = &s->tensors[i];
  qsort(by_begin, (size_t)m, sizeof *by_begin, cmp_tensor_begin);
  for (int i = 1; ok && i < m; i++)
    if (by_begin[i - 1]->end > by_begin[i]->begin) {
      const StTensor *a = by_begin[i - 1], *b = by_begin[i];
      diag_error(c, loc,
                 "%s: expected disjoint data_offsets, found overlapping tensors '%s' [%llu, %llu) and "
                 "'%s' [%llu, %llu)",
                 s->path, a->name, (unsigned long long)a->begin, (unsigned long long)a->end, b->name,
                 (unsigned long long)b->begin, (unsigned long long)b->end);
      ok = false;
    }
  free(by_begin);
  if (!ok) return false;
  qsort(s->tensors, (size_t)s->n, sizeof *s->tensors, cmp_tensor_name);
  s->loaded = true;
  s->failed = false;
  return true;
}

static TensorFile *open_single(Comp *c, const char *path, Loc loc) {
  TensorFile *f = ARENA_NEW(&c->arena, TensorFile);
  f->path = arena_strdup(&c->arena, path);
  f->shards = ARENA_NEW(&c->arena, Shard);
  f->nshards = 1;
  f->shards->path = f->path;
  if (!load_shard(c, f->shards, loc)) return NULL;
  f->n = f->shards->n;
  f->names = ARENA_ARRAY(&c->arena, Entry, f->n);
  for (int i = 0; i < f->n; i++) f->names[i] = (Entry){f->shards->tensors[i].name, 0};
  return f;
}

/* model.safetensors.index.json: {"weight_map": {tensor name: shard file name}};
 * shard files live beside the index. */
static TensorFile *open_index(Comp *c, const char *path, Loc loc) {
  uint64_t size;
  int fd = open_file(c, path, loc, &size);
  if (fd < 0) return NULL;
  if (size > MAX_HEADER) {
    diag_error(c, loc, "%s: index too large: expected at most %llu bytes, found %llu", path, MAX_HEADER,
               (unsigned long long)size);
    close(fd);
    return NULL;
  }
  char *text = malloc(size ? size : 1);
  if (!text) ICE("out of memory reading %s", path);
  bool read_ok = read_at(fd, text, size, 0);
  int read_errno = errno;
  close(fd);
  if (!read_ok) {
    diag_error_class(c, DIAG_IO, loc, "cannot read %s: %s", path, strerror(read_errno));
    free(text);
    return NULL;
  }
  Arena scratch = {0};
  JsonError jerr;
  const Json *root = json_parse(&scratch, text, size, &jerr);
  free(text);
  const Json *map = json_get(root, "weight_map");
  TensorFile *f = NULL;
  if (!root) {
    diag_error(c, loc, "%s: malformed JSON at byte %zu: %s", path, jerr.offset, jerr.msg);
  } else if (!map || map->type != JSON_OBJECT) {
    diag_error(c, loc, "%s: expected a \"weight_map\" object mapping tensor names to shard files, found %s", path,
               map ? json_type_name(map->type) : "none");
  } else {
    f = ARENA_NEW(&c->arena, TensorFile);
    f->path = arena_strdup(&c->arena, path);
    f->n = (int)json_len(map);
    f->names = ARENA_ARRAY(&c->arena, Entry, f->n);
    f->shards = ARENA_ARRAY(&c->arena, Shard, f->n);
    const char *slash = strrchr(path, '/');
    int dirlen = slash ? (int)(slash - path) : 1;
    const char *dir = slash ? path : ".";
    for (int i = 0; f && i < f->n; i++) {
      const char *file = json_str(json_at(map, (size_t)i));
      if (!file || !*file || strchr(file, '/')) {
        const char *found = file ? (*file ? "a path" : "\"\"") : json_type_name(json_at(map, (size_t)i)->type);
        diag_error(c, loc, "%s: weight_map entry for '%s': expected the file name of a shard beside the index, "
                   "found %s", path, json_key(map, (size_t)i), found);
        f = NULL;
        break;
      }
      if (strlen(json_key(map, (size_t)i)) != map->members[i].key_len) {
        diag_error(c, loc, "%s: expected tensor names without NUL bytes, found '%s\\u0000...'", path,
                   json_key(map, (size_t)i));
        f = NULL;
        break;
      }
      char *shard_path = arena_printf(&c->arena, "%.*s/%s", dirlen, dir, file);
      int k = 0;
      while (k < f->nshards && strcmp(f->shards[k].path, shard_path) != 0) k++;
      if (k == f->nshards) f->shards[f->nshards++].path = shard_path;
      f->names[i] = (Entry){arena_strdup(&c->arena, json_key(map, (size_t)i)), k};
    }
    if (f) qsort(f->names, (size_t)f->n, sizeof *f->names, cmp_entry_name);
  }
  arena_free_all(&scratch);
  return f;
}

static bool is_file(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

TensorFile *safetensors_open(Comp *c, const char *path, Loc loc) {
  struct stat st;
  if (stat(path, &st) != 0) {
    diag_error_class(c, DIAG_IO, loc, "cannot open %s: %s", path, strerror(errno));
    return NULL;
  }
  if (S_ISDIR(st.st_mode)) {
    int n = (int)strlen(path);
    while (n > 1 && path[n - 1] == '/') n--;   /* "dir/" names the same files as "dir" */
    const char *single = arena_printf(&c->arena, "%.*s/model.safetensors", n, path);
    const char *index = arena_printf(&c->arena, "%.*s/model.safetensors.index.json", n, path);
    if (is_file(single)) return open_single(c, single, loc);
    if (is_file(index)) return open_index(c, index, loc);
    diag_error_class(c, DIAG_IO, loc,
                     "%s: expected model.safetensors or model.safetensors.index.json in this directory, found neither",
                     path);
    return NULL;
  }
  size_t n = strlen(path);
  if (n >= 5 && strcmp(path + n - 5, ".json") == 0) return open_index(c, path, loc);
  return open_single(c, path, loc);
}

int safetensors_count(const TensorFile *f) { return f->n; }

const char *safetensors_name(const TensorFile *f, int i) { return i >= 0 && i < f->n ? f->names[i].name : NULL; }

/* Levenshtein distance, for "did you mean"; long names are compared by their first 128 bytes. */
static int edit_distance(const char *a, const char *b) {
  int row[129];
  int na = (int)strnlen(a, 128), nb = (int)strnlen(b, 128);
  for (int j = 0; j <= nb; j++) row[j] = j;
  for (int i = 1; i <= na; i++) {
    int diag = row[0];
    row[0] = i;
    for (int j = 1; j <= nb; j++) {
      int up = row[j], best = diag + (a[i - 1] != b[j - 1]);
      if (up + 1 < best) best = up + 1;
      if (row[j - 1] + 1 < best) best = row[j - 1] + 1;
      diag = up;
      row[j] = best;
    }
  }
  return row[nb];
}

/* "no tensor named X; did you mean A, B, C?" — the three nearest names. */
static void report_missing(Comp *c, const TensorFile *f, const char *name, Loc loc) {
  int best[3] = {-1, -1, -1}, dist[3] = {0};
  for (int i = 0; i < f->n; i++) {
    int d = edit_distance(name, f->names[i].name);
    for (int k = 0; k < 3; k++)
      if (best[k] < 0 || d < dist[k]) {
        for (int m = 2; m > k; m--) { best[m] = best[m - 1]; dist[m] = dist[m - 1]; }
        best[k] = i;
        dist[k] = d;
        break;
      }
  }
  char hint[512] = "";
  size_t k = 0;
  for (int i = 0; i < 3 && best[i] >= 0 && k < sizeof hint; i++)
    k += (size_t)snprintf(hint + k, sizeof hint - k, "%s'%.100s'", i ? ", " : "; did you mean ",
                          f->names[best[i]].name);
  diag_error(c, loc, "%s: no tensor named '%s' (%d tensors)%s%s", f->path, name, f->n, hint, k ? "?" : "");
}

static Tensor *read_tensor(Comp *c, const Shard *s, const StTensor *st, Loc loc) {
  uint64_t size;
  int fd = open_file(c, s->path, loc, &size);
  if (fd < 0) return NULL;
  if (size != s->file_size) {
    diag_error_class(c, DIAG_IO, loc, "%s changed since it was opened: expected %llu bytes, found %llu", s->path,
                     (unsigned long long)s->file_size, (unsigned long long)size);
    close(fd);
    return NULL;
  }
  uint64_t off = s->data_start + st->begin, nbytes = st->end - st->begin;
  Tensor *t = NULL;
  if (nbytes >= MMAP_MIN) {
    uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE), start = off / page * page;
    size_t map_len = (size_t)(off - start + nbytes);
    /* private + writable: callers may scribble on the tensor without touching the file */
    uint8_t *map = mmap(NULL, map_len, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, (off_t)start);
    if (map == MAP_FAILED) {
      diag_error_class(c, DIAG_IO, loc, "cannot map %s: %s", s->path, strerror(errno));
    } else if (off % dtype_size(st->dtype) == 0) {
      t = ARENA_NEW(&c->arena, Tensor);
      t->dtype = st->dtype;
      t->shape = st->shape;
      t->data = map + (off - start);
      t->nbytes = (size_t)nbytes;
      t->map_base = map;
      t->map_len = map_len;
      t->next = c->tensors;
      c->tensors = t;
    } else {                                           /* misaligned for its dtype: copy */
      t = tensor_new(c, st->dtype, &st->shape);
      memcpy(t->data, map + (off - start), (size_t)nbytes);
      munmap(map, map_len);
    }
  } else {
    t = tensor_new(c, st->dtype, &st->shape);
    if (!read_at(fd, t->data, (size_t)nbytes, off)) {
      diag_error_class(c, DIAG_IO, loc, "cannot read %s: %s", s->path, strerror(errno));
      t = NULL;
    }
  }
  close(fd);
  return t;
}

Tensor *safetensors_get(Comp *c, TensorFile *f, const char *name, Loc loc) {
  Entry key = {name, 0};
  const Entry *e = bsearch(&key, f->names, (size_t)f->n, sizeof *f->names, cmp_entry_name);
  if (!e) {
    report_missing(c, f, name, loc);
    return NULL;
  }
  Shard *s = &f->shards[e->shard];
  if (!s->loaded) {
    if (s->failed) {
      diag_error(c, loc, "%s: tensor '%s' is in %s, which could not be loaded", f->path, name, s->path);
      return NULL;
    }
    if (!load_shard(c, s, loc)) return NULL;
  }
  StTensor skey = {.name = name};
  const StTensor *st = bsearch(&skey, s->tensors, (size_t)s->n, sizeof *s->tensors, cmp_tensor_name);
  if (!st) {
    diag_error(c, loc, "%s: expected tensor '%s' (listed by %s), found no such tensor", s->path, name, f->path);
    return NULL;
  }
  return read_tensor(c, s, st, loc);
}
