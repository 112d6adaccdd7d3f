/* circc_rt.c — the runtime of every circc-generated program (see circc_rt.h).
 * rt_main parses the command line, reads each input from a .npy file
 * (converting its dtype into a 64-byte-aligned buffer), runs the model, then
 * writes outputs atomically, compares them with goldens, benchmarks, or prints
 * them. Needs only libc, libm and OpenMP. Bad input never crashes or leaks: it
 * is a message and an exit code (0 ok, 1 mismatch, 2 usage, 3 bad input). */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L   /* clock_gettime, open flags, getpid */
#endif
#include "circc_rt.h"
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#endif

enum { RC_OK = 0, RC_MISMATCH = 1, RC_USAGE = 2, RC_BAD_INPUT = 3 };
enum { ALIGN = 64, MAX_RANK = 32, PRINT_ALL = 64, PRINT_HEAD = 8, MAX_HEADER = 1 << 20, MAX_BENCH = 1000000,
       MAX_THREADS = 4096, MAX_SAMPLE = 1000000 };

/* .npy dtypes the runtime reads, by descr without its byte-order character */
typedef enum NpyType { NPY_F4, NPY_F8, NPY_F2, NPY_I8, NPY_I4, NPY_I2, NPY_I1, NPY_U1, NPY_COUNT } NpyType;
static const struct { const char *code; unsigned size; bool is_float; } NPY[NPY_COUNT] = {
    [NPY_F4] = {"f4", 4, true}, [NPY_F8] = {"f8", 8, true}, [NPY_F2] = {"f2", 2, true},
    [NPY_I8] = {"i8", 8, false}, [NPY_I4] = {"i4", 4, false}, [NPY_I2] = {"i2", 2, false},
    [NPY_I1] = {"i1", 1, false}, [NPY_U1] = {"u1", 1, false},
};
#define FLOAT_DESCRS "<f4, <f8 or <f2"
#define INT_DESCRS "<i8, <i4, <i2, |i1 or |u1"

typedef struct Binding {
  int index;          /* into the model's outputs */
  const char *path;
} Binding;

/* Everything one rt_main call owns; free_run releases it all. */
typedef struct Run {
  const rt_model *m;
  const char *prog;            /* prefix of every message */
  const char **in_path;        /* [ninputs] NULL: not given */
  Binding *outs, *checks;      /* [argc] each */
  int nouts, nchecks;
  double rtol, atol;
  long bench;                  /* timed runs; 0: no --bench */
  int threads;                 /* --threads; 0: from the environment */
  bool info, verbose;
  long sample;                 /* --sample N: names to print; 0: no --sample */
  uint64_t seed;               /* --seed S (default 0) */
  bool has_seed;
  void **in, **out;            /* model buffers, 64-byte aligned */
  void *arena;
  double **gold;               /* [nchecks] golden values */
} Run;

/* An open .npy file whose header has been parsed. */
typedef struct Npy {
  int fd;
  NpyType type;
  char descr[112];             /* as written (made printable), for messages */
  int rank;
  int64_t shape[MAX_RANK];
  uint64_t payload;            /* bytes after the header */
} Npy;

static void errorf(const Run *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void errorf(const Run *r, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "%s: error: ", r->prog);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
}

const char *rt_errorf(const char *fmt, ...) {
  static _Thread_local char buf[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  return buf;
}

static const char *dtype_name(rt_dtype t) { return t == RT_F32 ? "float32" : "int64"; }
static size_t dtype_size(rt_dtype t) { return t == RT_F32 ? 4 : 8; }

/* [2,3] (as circc prints shapes) */
static void shape_str(int rank, const int64_t *shape, char *buf, size_t cap) {
  size_t k = (size_t)snprintf(buf, cap, "[");
  for (int i = 0; i < rank && k < cap; i++)
    k += (size_t)snprintf(buf + k, cap - k, i ? ",%lld" : "%lld", (long long)shape[i]);
  if (k < cap) snprintf(buf + k, cap - k, "]");
}

static void desc_line(FILE *f, const rt_tensor_desc *d) {
  char s[MAX_RANK * 24];
  shape_str(d->rank, d->shape, s, sizeof s);
  fprintf(f, "  %s %s %s\n", d->name, s, dtype_name(d->dtype));
}

static void usage(const Run *r, FILE *f) {
  fprintf(f,
          "usage: %s --input NAME=@FILE.npy... [--output NAME=@FILE.npy]... [--check NAME=@GOLDEN.npy]...\n"
          "       %s --bench N | --info | -h\n"
          "Runs the model compiled by circc %s. Without --output, --check, --bench or --info\n"
          "it prints every output.\n\ninputs (every one is required):\n",
          r->prog, r->prog, r->m->circc_version);
  for (int i = 0; i < r->m->ninputs; i++) desc_line(f, &r->m->inputs[i]);
  fputs("outputs:\n", f);
  for (int i = 0; i < r->m->noutputs; i++) desc_line(f, &r->m->outputs[i]);
  fputs("\noptions:\n"
        "  --input NAME=@FILE.npy   value of input NAME: .npy v1-v3, little-endian, C order;\n"
        "                           float32 inputs take " FLOAT_DESCRS ",\n"
        "                           int64 inputs take " INT_DESCRS "\n"
        "  --output NAME=@FILE.npy  write output NAME (float32 as <f4, int64 as <i8); files are\n"
        "                           replaced atomically and none is written if the run fails\n"
        "  --check NAME=@FILE.npy   compare output NAME with a golden .npy (float32, float64 or\n"
        "                           int64): every element needs |got-want| <= atol + rtol*|want|\n"
        "  --rtol R, --atol A       tolerances of every --check (default 1e-4 and 1e-5)\n"
        "  --bench N                time N runs after 1 warm-up: median, p10, p90 ms, GFLOP/s and\n"
        "                           threads; inputs not given are zero-filled\n"
        "  --info                   print inputs, outputs, arena bytes, FLOPs per run, provenance\n"
        "  --threads N              OpenMP threads (default $OMP_NUM_THREADS, else all cores)\n"
        "  --sample N               print N names sampled character by character (programs\n"
        "                           compiled with circc --vocab); no other input is needed\n"
        "  --seed S                 random stream of --sample (default 0; same S, same names)\n"
        "  -v                       print the effective thread count\n"
        "  -h, --help               this help\n"
        "\nexit codes: 0 ok, 1 --check mismatch, 2 usage error,\n"
        "            3 bad input (unreadable or malformed .npy, wrong shape or dtype, bad values)\n"
        "environment: OMP_NUM_THREADS\n",
        f);
  if (f == stdout) rt_generate_help(r->m);   /* language-model programs: --text, --generate, ... */
}

static int usage_error(const Run *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int usage_error(const Run *r, const char *fmt, ...) {
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  errorf(r, "%s (see %s --help)", msg, r->prog);
  return RC_USAGE;
}

/* The file part of "@PATH" or "PATH", or NULL if empty. */
static const char *binding_path(const char *p) {
  if (*p == '@') p++;
  return *p ? p : NULL;
}

/* NAME=@PATH or NAME=PATH. Names may contain '=', so known names are matched
 * first (longest wins). Returns the index into d, or -1 after a usage error
 * that lists the names (`what` is "input" or "output"). */
static int parse_binding(const Run *r, const char *flag, const char *arg, const rt_tensor_desc *d, int n,
                         const char *what, const char **path) {
  int best = -1;
  size_t best_len = 0;
  for (int i = 0; i < n; i++) {
    size_t len = strlen(d[i].name);
    if (strncmp(arg, d[i].name, len) == 0 && arg[len] == '=' && binding_path(arg + len + 1) &&
        (best < 0 || len > best_len))
      best = i, best_len = len;
  }
  if (best >= 0) {
    *path = binding_path(arg + best_len + 1);
    return best;
  }
  const char *eq = strchr(arg, '=');
  if (!eq || eq == arg || !binding_path(eq + 1))
    return usage_error(r, "%s expects NAME=@FILE.npy, found '%s'", flag, arg), -1;
  usage_error(r, "%s: the program has no %s named '%.*s'", flag, what, (int)(eq - arg), arg);
  fprintf(stderr, "%s: note: its %ss are:\n", r->prog, what);
  for (int i = 0; i < n; i++) desc_line(stderr, &d[i]);
  return -1;
}

bool rt_parse_long(const char *s, long lo, long hi, long *out) {
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (end == s || *end || errno || v < lo || v > hi) return false;
  *out = v;
  return true;
}

static bool parse_tol(const char *s, double *out) {
  char *end;
  errno = 0;
  double v = strtod(s, &end);
  if (end == s || *end || errno || !(v >= 0) || isinf(v)) return false;
  *out = v;
  return true;
}

/* Fills r from argv; returns -1 to go on, else the exit code (after -h or an error). */
static int parse_args(Run *r, int argc, char **argv) {
  static const struct { const char *name; bool takes_value; } FLAGS[] = {
      {"--input", true}, {"--output", true}, {"--check", true},   {"--rtol", true}, {"--atol", true},
      {"--bench", true}, {"--threads", true}, {"--info", false}, {"-v", false},    {"-h", false},
      {"--help", false}, {"--sample", true}, {"--seed", true},
  };
  const rt_model *m = r->m;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *val = NULL;
    /* --flag=value is the same as --flag value */
    size_t len = strncmp(a, "--", 2) == 0 ? strcspn(a, "=") : strlen(a);
    int f = -1;
    for (int k = 0; k < (int)(sizeof FLAGS / sizeof FLAGS[0]); k++)
      if (strlen(FLAGS[k].name) == len && strncmp(a, FLAGS[k].name, len) == 0) f = k;
    if (f < 0) return usage_error(r, a[0] == '-' ? "unknown option '%s'" : "unexpected argument '%s'", a);
    const char *flag = FLAGS[f].name;
    if (a[len]) val = a + len + 1;
    if (FLAGS[f].takes_value && !val) {
      if (i + 1 >= argc) return usage_error(r, "option %s needs a value", flag);
      val = argv[++i];
    } else if (!FLAGS[f].takes_value && val) {
      return usage_error(r, "option %s takes no value, found '%s'", flag, a);
    }
    long n;
    if (!strcmp(flag, "-h") || !strcmp(flag, "--help")) {
      usage(r, stdout);
      return RC_OK;
    } else if (!strcmp(flag, "--input")) {
      const char *path;
      int k = parse_binding(r, flag, val, m->inputs, m->ninputs, "input", &path);
      if (k < 0) return RC_USAGE;
      if (r->in_path[k]) return usage_error(r, "--input %s is given twice", m->inputs[k].name);
      r->in_path[k] = path;
    } else if (!strcmp(flag, "--output") || !strcmp(flag, "--check")) {
      Binding b;
      b.index = parse_binding(r, flag, val, m->outputs, m->noutputs, "output", &b.path);
      if (b.index < 0) return RC_USAGE;
      if (flag[2] == 'o') r->outs[r->nouts++] = b;
      else r->checks[r->nchecks++] = b;
    } else if (!strcmp(flag, "--rtol") || !strcmp(flag, "--atol")) {
      if (!parse_tol(val, flag[2] == 'r' ? &r->rtol : &r->atol))
        return usage_error(r, "%s expects a non-negative number, found '%s'", flag, val);
    } else if (!strcmp(flag, "--bench")) {
      if (!rt_parse_long(val, 1, MAX_BENCH, &r->bench))
        return usage_error(r, "--bench expects a number of runs from 1 to %d, found '%s'", MAX_BENCH, val);
    } else if (!strcmp(flag, "--threads")) {
      if (!rt_parse_long(val, 1, MAX_THREADS, &n))
        return usage_error(r, "--threads expects a number from 1 to %d, found '%s'", MAX_THREADS, val);
      r->threads = (int)n;
    } else if (!strcmp(flag, "--sample")) {
      if (!rt_parse_long(val, 1, MAX_SAMPLE, &r->sample))
        return usage_error(r, "--sample expects a number of names from 1 to %d, found '%s'", MAX_SAMPLE, val);
    } else if (!strcmp(flag, "--seed")) {
      char *end;
      errno = 0;
      unsigned long long s = strtoull(val, &end, 10);
      if (end == val || *end || errno || val[0] == '-')
        return usage_error(r, "--seed expects an integer from 0 to 2^64-1, found '%s'", val);
      r->seed = (uint64_t)s, r->has_seed = true;
    } else if (!strcmp(flag, "--info")) {
      r->info = true;
    } else {
      r->verbose = true;   /* -v */
    }
  }
  if (r->has_seed && !r->sample) return usage_error(r, "--seed only applies to --sample");
  if (r->sample && (r->nouts || r->nchecks || r->bench))
    return usage_error(r, "--sample cannot be combined with --output, --check or --bench");
  return -1;
}

/* --threads, else a leading positive number in OMP_NUM_THREADS (read here, not
 * at OpenMP start-up, so a changed environment counts), else every core. */
static int set_threads(int requested) {
#ifdef _OPENMP
  int n = requested;
  const char *env = getenv("OMP_NUM_THREADS");
  long v;
  char head[32];
  if (!n && env) {
    size_t len = strcspn(env, ",");
    snprintf(head, sizeof head, "%.*s", (int)(len < sizeof head ? len : sizeof head - 1), env);
    if (rt_parse_long(head, 1, MAX_THREADS, &v)) n = (int)v;
  }
  if (!n) n = omp_get_num_procs();
  omp_set_num_threads(n);
  return n;
#else
  (void)requested;   /* built without OpenMP: always one thread */
  return 1;
#endif
}

static void print_info(const Run *r, int threads) {
  const rt_model *m = r->m;
  printf("program:      %s\ncircc:        %s\ncommand line: %s\nsource hash:  %s\ninputs:\n", r->prog,
         m->circc_version, m->command_line, m->source_hash);
  for (int i = 0; i < m->ninputs; i++) desc_line(stdout, &m->inputs[i]);
  puts("outputs:");
  for (int i = 0; i < m->noutputs; i++) desc_line(stdout, &m->outputs[i]);
  printf("arena bytes:  %zu\nflops/run:    %.0f\nthreads:      %d\n", m->arena_bytes, m->flops, threads);
}

/* ---- .npy reading ---- */

/* Reads up to n bytes; returns how many (fewer only at end of file or on error). */
static size_t read_full(int fd, void *buf, size_t n) {
  size_t got = 0;
  while (got < n) {
    ssize_t k = read(fd, (char *)buf + got, n - got);
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) break;
    got += (size_t)k;
  }
  return got;
}

/* Header-dict parser state; errors name the file as `what`. */
typedef struct Dict {
  const Run *r;
  const char *what, *s;
  size_t n, pos;
} Dict;

/* Up to 24 bytes of header text with other than printable ASCII as \xNN,
 * so a corrupt file cannot garble the terminal. */
static void printable(const char *s, size_t n, char *buf, size_t cap) {
  size_t k = 0;
  for (size_t i = 0; i < n && i < 24 && k + 5 < cap; i++) {
    unsigned char ch = (unsigned char)s[i];
    k += (size_t)snprintf(buf + k, cap - k, ch >= 0x20 && ch < 0x7f && ch != '\\' ? "%c" : "\\x%02x", ch);
  }
  snprintf(buf + k, cap - k, "%s", n > 24 ? "..." : "");
}

static bool dict_fail(Dict *d, const char *expected) {
  char found[16];
  unsigned char ch = d->pos < d->n ? (unsigned char)d->s[d->pos] : 0;
  if (d->pos >= d->n) snprintf(found, sizeof found, "end of header");
  else if (ch >= 0x20 && ch < 0x7f) snprintf(found, sizeof found, "'%c'", ch);
  else snprintf(found, sizeof found, "byte 0x%02x", ch);
  errorf(d->r, "%s: malformed .npy header: expected %s, found %s", d->what, expected, found);
  return false;
}

static void dict_ws(Dict *d) {
  while (d->pos < d->n && (d->s[d->pos] == ' ' || d->s[d->pos] == '\t' || d->s[d->pos] == '\r' || d->s[d->pos] == '\n'))
    d->pos++;
}

static bool dict_eat(Dict *d, char ch) {
  dict_ws(d);
  if (d->pos < d->n && d->s[d->pos] == ch) return d->pos++, true;
  return false;
}

static bool dict_string(Dict *d, const char **s, size_t *len) {
  if (!dict_eat(d, '\'') && !dict_eat(d, '"')) return dict_fail(d, "a quoted string");
  char q = d->s[d->pos - 1];
  size_t start = d->pos;
  while (d->pos < d->n && d->s[d->pos] != q && d->s[d->pos] != '\n') d->pos++;
  if (d->pos >= d->n || d->s[d->pos] != q) return dict_fail(d, "the closing quote of a string");
  *s = d->s + start;
  *len = d->pos++ - start;
  return true;
}

/* (), (5,), (2, 3) with an optional trailing comma and Python 2's 3L suffix */
static bool dict_shape(Dict *d, Npy *f) {
  bool comma = false;
  f->rank = 0;
  if (!dict_eat(d, '(')) return dict_fail(d, "a shape tuple '('");
  while (!dict_eat(d, ')')) {
    if (f->rank && !comma) return dict_fail(d, "',' or ')' in the shape tuple");
    if (d->pos >= d->n || d->s[d->pos] < '0' || d->s[d->pos] > '9') return dict_fail(d, "a non-negative dimension");
    if (f->rank == MAX_RANK) return dict_fail(d, "at most 32 dimensions");
    int64_t v = 0;
    while (d->pos < d->n && d->s[d->pos] >= '0' && d->s[d->pos] <= '9') {
      if (v > (INT64_MAX - 9) / 10) return dict_fail(d, "a dimension below 2^63");
      v = v * 10 + (d->s[d->pos++] - '0');
    }
    if (d->pos < d->n && d->s[d->pos] == 'L') d->pos++;
    f->shape[f->rank++] = v;
    comma = dict_eat(d, ',');
  }
  if (f->rank == 1 && !comma) return d->pos--, dict_fail(d, "',' after the only dimension");
  return true;
}

static bool dict_descr(Dict *d, Npy *f) {
  const char *s;
  size_t len;
  if (!dict_string(d, &s, &len)) return false;
  printable(s, len, f->descr, sizeof f->descr);
  char order = len && strchr("<>|=", s[0]) ? s[0] : 0;
  size_t skip = order != 0;
  for (int t = 0; t < NPY_COUNT; t++) {
    if (len - skip != 2 || memcmp(s + skip, NPY[t].code, 2) != 0) continue;
    f->type = (NpyType)t;
    if (NPY[t].size == 1 || order == '<') return true;   /* byte order is moot for 1-byte types */
    errorf(d->r, "%s: unsupported byte order: expected little-endian '<%s', found '%s'", d->what, NPY[t].code,
           f->descr);
    return false;
  }
  errorf(d->r, "%s: unsupported dtype: expected one of <f4 <f8 <f2 <i8 <i4 <i2 |i1 |u1, found '%s'", d->what,
         f->descr);
  return false;
}

/* {'descr': ..., 'fortran_order': ..., 'shape': ...}: each key once, any order */
static bool parse_dict(Dict *d, Npy *f) {
  enum { DESCR = 1, FORTRAN = 2, SHAPE = 4 };
  int seen = 0;
  bool fortran = false;
  if (!dict_eat(d, '{')) return dict_fail(d, "'{' starting the header dict");
  while (!dict_eat(d, '}')) {
    const char *key;
    size_t klen;
    if (!dict_string(d, &key, &klen)) return false;
    int which = klen == 5 && !memcmp(key, "descr", 5)           ? DESCR
                : klen == 13 && !memcmp(key, "fortran_order", 13) ? FORTRAN
                : klen == 5 && !memcmp(key, "shape", 5)           ? SHAPE
                                                                  : 0;
    if (!which || (seen & which)) {
      char k[112];
      printable(key, klen, k, sizeof k);
      errorf(d->r, "%s: malformed .npy header: expected the keys 'descr', 'fortran_order' and 'shape' once each, "
             "found %s key '%s'", d->what, which ? "a repeated" : "an unexpected", k);
      return false;
    }
    seen |= which;
    if (!dict_eat(d, ':')) return dict_fail(d, "':' after a key");
    if (which == DESCR) {
      if (!dict_descr(d, f)) return false;
    } else if (which == FORTRAN) {
      if (dict_eat(d, 'T') && d->n - d->pos >= 3 && !memcmp(d->s + d->pos, "rue", 3)) fortran = true, d->pos += 3;
      else if (dict_eat(d, 'F') && d->n - d->pos >= 4 && !memcmp(d->s + d->pos, "alse", 4)) d->pos += 4;
      else return dict_fail(d, "True or False");
    } else if (!dict_shape(d, f)) {
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
    errorf(d->r, "%s: malformed .npy header: expected the keys 'descr', 'fortran_order' and 'shape', found no '%s'",
           d->what, !(seen & DESCR) ? "descr" : !(seen & FORTRAN) ? "fortran_order" : "shape");
    return false;
  }
  if (fortran) {
    errorf(d->r, "%s: unsupported layout: expected fortran_order False (C order), found True; "
           "re-save it with numpy.ascontiguousarray", d->what);
    return false;
  }
  return true;
}

/* Opens path, parses its header and checks it against want's shape and the
 * payload size. On success f->fd is open at the payload. */
static bool npy_open(const Run *r, const char *what, const char *path, const rt_tensor_desc *want, Npy *f) {
  struct stat st;
  f->fd = open(path, O_RDONLY | O_NONBLOCK);   /* a FIFO must not hang us */
  if (f->fd < 0 || fstat(f->fd, &st) != 0) {
    errorf(r, "%s: cannot open %s: %s", what, path, strerror(errno));
    return false;
  }
  if (!S_ISREG(st.st_mode)) {
    errorf(r, "%s: cannot read %s: not a regular file", what, path);
    return false;
  }
  unsigned char pre[12];
  size_t got = read_full(f->fd, pre, 10);
  if (got < 6 || memcmp(pre, "\x93NUMPY", 6) != 0) {
    errorf(r, "%s: %s is not a .npy file: expected it to start with \"\\x93NUMPY\"", what, path);
    return false;
  }
  if (got < 10) {
    errorf(r, "%s: %s: truncated .npy file: expected at least 10 bytes, found %zu", what, path, got);
    return false;
  }
  if (pre[6] < 1 || pre[6] > 3 || pre[7] != 0) {
    errorf(r, "%s: %s: unsupported .npy version: expected 1.0, 2.0 or 3.0, found %u.%u", what, path, pre[6], pre[7]);
    return false;
  }
  size_t prefix = pre[6] == 1 ? 10 : 12;
  if (prefix == 12 && read_full(f->fd, pre + 10, 2) < 2) {
    errorf(r, "%s: %s: truncated .npy file: expected at least 12 bytes", what, path);
    return false;
  }
  size_t hlen = pre[8] | (size_t)pre[9] << 8;
  if (prefix == 12) hlen |= (size_t)pre[10] << 16 | (size_t)pre[11] << 24;
  uint64_t size = (uint64_t)st.st_size;
  if (hlen > MAX_HEADER) {
    errorf(r, "%s: %s: oversized .npy header: expected at most %d bytes, found %zu", what, path, MAX_HEADER, hlen);
    return false;
  }
  if (prefix + hlen > size) {
    errorf(r, "%s: %s: truncated .npy header: expected %zu bytes, found %llu", what, path, hlen,
           (unsigned long long)(size - prefix));
    return false;
  }
  char *hdr = malloc(hlen ? hlen : 1);
  if (!hdr) {
    errorf(r, "%s: out of memory reading %s", what, path);
    return false;
  }
  char where[1024];
  snprintf(where, sizeof where, "%s: %s", what, path);
  Dict d = {r, where, hdr, hlen, 0};
  errno = 0;
  bool ok = read_full(f->fd, hdr, hlen) == hlen;
  if (!ok) errorf(r, "%s: cannot read the header: %s", where, errno ? strerror(errno) : "file shrank");
  ok = ok && parse_dict(&d, f);
  free(hdr);
  if (!ok) return false;
  char s_want[MAX_RANK * 24], s_found[MAX_RANK * 24];
  bool same = f->rank == want->rank;
  for (int i = 0; same && i < f->rank; i++) same = f->shape[i] == want->shape[i];
  if (!same) {
    shape_str(want->rank, want->shape, s_want, sizeof s_want);
    shape_str(f->rank, f->shape, s_found, sizeof s_found);
    errorf(r, "%s: wrong shape: expected %s, found %s", where, s_want, s_found);
    return false;
  }
  /* the shape equals the model's, so numel * size cannot overflow */
  f->payload = size - prefix - hlen;
  uint64_t need = (uint64_t)want->numel * NPY[f->type].size;
  if (f->payload != need) {
    errorf(r, "%s: %s: expected %llu bytes of %s data, found %llu", where,
           f->payload < need ? "truncated .npy file" : "trailing bytes in .npy file", (unsigned long long)need,
           f->descr, (unsigned long long)f->payload);
    return false;
  }
  return true;
}

/* Reads the payload of an opened file into a new buffer (caller frees). */
static unsigned char *npy_payload(const Run *r, const char *what, const char *path, Npy *f) {
  unsigned char *raw = malloc(f->payload ? f->payload : 1);
  errno = 0;
  if (!raw) errorf(r, "%s: out of memory reading %llu bytes of %s", what, (unsigned long long)f->payload, path);
  else if (read_full(f->fd, raw, f->payload) != f->payload) {
    errorf(r, "%s: cannot read %s: %s", what, path, errno ? strerror(errno) : "file shrank while reading");
    free(raw);
    raw = NULL;
  }
  return raw;
}

static uint64_t le_bits(const unsigned char *p, unsigned size) {
  uint64_t v = 0;
  for (unsigned i = 0; i < size; i++) v |= (uint64_t)p[i] << (8 * i);
  return v;
}

static float half_to_float(uint16_t h) {
  int e = h >> 10 & 31, frac = h & 1023;
  float v = e == 0    ? ldexpf((float)frac, -24)   /* subnormal */
            : e == 31 ? (frac ? NAN : INFINITY)
                      : ldexpf((float)(frac | 1024), e - 25);
  return h >> 15 ? -v : v;
}

/* Element p of type t as a double (exact for every type but i8 beyond 2^53). */
static double npy_get(NpyType t, const unsigned char *p) {
  uint64_t b = le_bits(p, NPY[t].size);
  float f;
  double d;
  switch (t) {
  case NPY_F4: { uint32_t u = (uint32_t)b; memcpy(&f, &u, 4); return f; }
  case NPY_F8: memcpy(&d, &b, 8); return d;
  case NPY_F2: return half_to_float((uint16_t)b);
  case NPY_I8: return (double)(int64_t)b;
  case NPY_I4: return (int32_t)(uint32_t)b;
  case NPY_I2: return (int16_t)(uint16_t)b;
  case NPY_I1: return (int8_t)(uint8_t)b;
  default: return (double)b;   /* NPY_U1 */
  }
}

/* Element p of integer type t, sign-extended */
static int64_t npy_get_int(NpyType t, const unsigned char *p) {
  unsigned size = NPY[t].size;
  uint64_t b = le_bits(p, size);
  if (t == NPY_U1 || size == 8) return (int64_t)b;
  uint64_t sign = (uint64_t)1 << (8 * size - 1);
  return (int64_t)((b ^ sign) - sign);
}

static void *alloc_aligned(const Run *r, size_t n, size_t size, const char *what) {
  if (n > (SIZE_MAX - ALIGN) / size) {
    errorf(r, "%s: cannot allocate %zu elements of %zu bytes", what, n, size);
    return NULL;
  }
  size_t bytes = (n * size + ALIGN - 1) / ALIGN * ALIGN;   /* aligned_alloc wants a multiple */
  void *p = aligned_alloc(ALIGN, bytes ? bytes : ALIGN);
  if (!p) errorf(r, "%s: cannot allocate %zu bytes", what, bytes);
  return p;
}

/* Loads input i from path into r->in[i], converting to the model's dtype. */
static bool load_input(Run *r, int i, const char *path) {
  const rt_tensor_desc *d = &r->m->inputs[i];
  char what[512];
  snprintf(what, sizeof what, "input '%s'", d->name);
  Npy f = {.fd = -1};
  unsigned char *raw = NULL;
  bool ok = npy_open(r, what, path, d, &f);
  if (ok && NPY[f.type].is_float != (d->dtype == RT_F32)) {
    errorf(r, "%s: %s: unsupported dtype for %s input: expected %s, found '%s'", what, path,
           d->dtype == RT_F32 ? "a float32" : "an int64",
           d->dtype == RT_F32 ? FLOAT_DESCRS : INT_DESCRS, f.descr);
    ok = false;
  }
  ok = ok && (raw = npy_payload(r, what, path, &f)) &&
       (r->in[i] = alloc_aligned(r, (size_t)d->numel, dtype_size(d->dtype), what));
  if (ok) {
    unsigned size = NPY[f.type].size;
    for (int64_t k = 0; k < d->numel; k++) {
      if (d->dtype == RT_F32) ((float *)r->in[i])[k] = (float)npy_get(f.type, raw + k * size);
      else ((int64_t *)r->in[i])[k] = npy_get_int(f.type, raw + k * size);
    }
  }
  free(raw);
  if (f.fd >= 0) close(f.fd);
  return ok;
}

/* Loads the golden of check c as doubles into r->gold[c]. */
static bool load_golden(Run *r, int c) {
  const Binding *b = &r->checks[c];
  const rt_tensor_desc *d = &r->m->outputs[b->index];
  char what[512];
  snprintf(what, sizeof what, "--check %s", d->name);
  Npy f = {.fd = -1};
  unsigned char *raw = NULL;
  bool ok = npy_open(r, what, b->path, d, &f) && (raw = npy_payload(r, what, b->path, &f)) &&
            (r->gold[c] = malloc((size_t)(d->numel ? d->numel : 1) * sizeof(double)));
  if (raw && !r->gold[c]) errorf(r, "%s: out of memory", what);
  for (int64_t k = 0; ok && k < d->numel; k++) r->gold[c][k] = npy_get(f.type, raw + k * NPY[f.type].size);
  free(raw);
  if (f.fd >= 0) close(f.fd);
  return ok;
}

/* ---- outputs ---- */

static double value_at(const rt_tensor_desc *d, const void *buf, int64_t k) {
  return d->dtype == RT_F32 ? (double)((const float *)buf)[k] : (double)((const int64_t *)buf)[k];
}

static void print_value(const rt_tensor_desc *d, const void *buf, int64_t k) {
  if (d->dtype == RT_F32) printf("%.9g", (double)((const float *)buf)[k]);
  else printf("%lld", (long long)((const int64_t *)buf)[k]);
}

/* numpy-like nesting, as `circc eval` prints */
static void print_nested(const rt_tensor_desc *d, const void *buf, int dim, int64_t *k) {
  if (dim == d->rank) {
    print_value(d, buf, (*k)++);
    return;
  }
  putchar('[');
  for (int64_t i = 0; i < d->shape[dim]; i++) {
    if (i) fputs(dim + 1 == d->rank ? ", " : ",\n ", stdout);
    print_nested(d, buf, dim + 1, k);
  }
  putchar(']');
}

static void print_output(const rt_tensor_desc *d, const void *buf) {
  char s[MAX_RANK * 24];
  shape_str(d->rank, d->shape, s, sizeof s);
  printf("%s %s %s\n", d->name, s, dtype_name(d->dtype));
  if (d->numel <= PRINT_ALL) {
    int64_t k = 0;
    print_nested(d, buf, 0, &k);
  } else {
    putchar('[');
    for (int64_t k = 0; k < PRINT_HEAD; k++) {
      print_value(d, buf, k);
      fputs(", ", stdout);
    }
    printf("...] (%lld elements)", (long long)d->numel);
  }
  putchar('\n');
}

static bool write_full(int fd, const void *buf, size_t n) {
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

/* Writes output d to tmp as numpy.save would: a v1.0 header padded with spaces
 * (with room for shape[0] to grow to 21 digits) to a multiple of 64 bytes. */
static bool write_npy(const rt_tensor_desc *d, const void *buf, const char *tmp) {
  char hdr[MAX_RANK * 24 + 256];
  int n = snprintf(hdr, sizeof hdr, "{'descr': '%s', 'fortran_order': False, 'shape': (",
                   d->dtype == RT_F32 ? "<f4" : "<i8");
  for (int i = 0; i < d->rank; i++)
    n += snprintf(hdr + n, sizeof hdr - (size_t)n, i ? ", %lld" : "%lld", (long long)d->shape[i]);
  n += snprintf(hdr + n, sizeof hdr - (size_t)n, "%s), }", d->rank == 1 ? "," : "");
  if (d->rank > 0) {
    int digits = snprintf(NULL, 0, "%lld", (long long)d->shape[0]);
    n += snprintf(hdr + n, sizeof hdr - (size_t)n, "%*s", 21 - digits, "");
  }
  n += snprintf(hdr + n, sizeof hdr - (size_t)n, "%*s\n", 64 - (10 + n + 1) % 64, "");
  unsigned char pre[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, (unsigned char)(n & 0xff), (unsigned char)(n >> 8)};
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0666);
  bool ok = fd >= 0 && write_full(fd, pre, sizeof pre) && write_full(fd, hdr, (size_t)n);
  /* little-endian bytes whatever the host, a chunk at a time */
  unsigned char chunk[4096];
  size_t size = dtype_size(d->dtype), used = 0;
  for (int64_t k = 0; ok && k < d->numel; k++) {
    uint64_t bits = 0;
    if (d->dtype == RT_F32) {
      uint32_t u;
      memcpy(&u, (const float *)buf + k, 4);
      bits = u;
    } else {
      memcpy(&bits, (const int64_t *)buf + k, 8);
    }
    for (size_t i = 0; i < size; i++) chunk[used++] = (unsigned char)(bits >> (8 * i));
    if (used == sizeof chunk || k + 1 == d->numel) {
      ok = write_full(fd, chunk, used);
      used = 0;
    }
  }
  int err = errno;
  if (fd >= 0 && close(fd) != 0 && ok) ok = false, err = errno;
  errno = err;
  return ok;
}

/* Writes every --output to a temporary file first and renames them only when
 * all were written, so a failure leaves no new or partial file. */
static bool write_outputs(Run *r) {
  char **tmp = calloc((size_t)r->nouts + 1, sizeof *tmp);
  bool ok = tmp != NULL;
  if (!ok) errorf(r, "out of memory writing outputs");
  for (int i = 0; ok && i < r->nouts; i++) {
    const Binding *b = &r->outs[i];
    size_t len = strlen(b->path) + 48;
    if (!(tmp[i] = malloc(len))) {
      errorf(r, "out of memory writing outputs");
      ok = false;
      break;
    }
    snprintf(tmp[i], len, "%s.tmp.%ld.%d", b->path, (long)getpid(), i);
    if (!write_npy(&r->m->outputs[b->index], r->out[b->index], tmp[i])) {
      errorf(r, "--output %s: cannot write %s: %s", r->m->outputs[b->index].name, b->path, strerror(errno));
      ok = false;
    }
  }
  for (int i = 0; ok && i < r->nouts; i++) {
    if (rename(tmp[i], r->outs[i].path) != 0) {
      errorf(r, "--output %s: cannot write %s: %s", r->m->outputs[r->outs[i].index].name, r->outs[i].path,
             strerror(errno));
      ok = false;
    } else {
      free(tmp[i]);
      tmp[i] = NULL;
    }
  }
  for (int i = 0; tmp && i < r->nouts; i++) {
    if (tmp[i]) unlink(tmp[i]);
    free(tmp[i]);
  }
  free(tmp);
  return ok;
}

/* Prints one --check line; returns whether every element is within tolerance.
 * The worst element is the one farthest outside (or least inside) its tolerance. */
static bool check_output(const Run *r, int c) {
  const rt_tensor_desc *d = &r->m->outputs[r->checks[c].index];
  const void *got_buf = r->out[r->checks[c].index];
  const double *want_buf = r->gold[c];
  double max_abs = 0, max_rel = 0, worst_ratio = -1;
  int64_t worst = 0, bad = 0;
  for (int64_t k = 0; k < d->numel; k++) {
    double got = value_at(d, got_buf, k), want = want_buf[k], diff = 0, rel = 0, ratio = 0;
    if (!(got == want || (isnan(got) && isnan(want)))) {
      /* a NaN or an infinity matches only itself, whatever the tolerance */
      bool nan = isnan(got) || isnan(want);
      diff = nan ? NAN : fabs(got - want);
      rel = nan ? NAN : isinf(diff) || want == 0 ? INFINITY : diff / fabs(want);
      double tol = r->atol + r->rtol * fabs(want);
      ratio = nan || isinf(diff) ? INFINITY : diff / tol;   /* tol 0: inf */
      bad += nan || isinf(diff) || !(diff <= tol);
    }
    if (!isnan(max_abs) && (isnan(diff) || diff > max_abs)) max_abs = diff;
    if (!isnan(max_rel) && (isnan(rel) || rel > max_rel)) max_rel = rel;
    if (ratio > worst_ratio) worst_ratio = ratio, worst = k;
  }
  printf("check %s: max_abs_err=%.3g max_rel_err=%.3g worst index ", d->name, max_abs, max_rel);
  if (d->numel == 0) {
    fputs("none", stdout);
  } else {
    /* unravel the flat index, last axis fastest */
    int64_t idx[MAX_RANK], rest = worst;
    for (int i = d->rank - 1; i >= 0; i--) {
      idx[i] = d->shape[i] ? rest % d->shape[i] : 0;
      rest = d->shape[i] ? rest / d->shape[i] : 0;
    }
    putchar('[');
    for (int i = 0; i < d->rank; i++) printf(i ? ",%lld" : "%lld", (long long)idx[i]);
    printf("] got %.9g want %.9g", value_at(d, got_buf, worst), want_buf[worst]);
  }
  if (bad) printf(" -> MISMATCH (%lld of %lld elements)\n", (long long)bad, (long long)d->numel);
  else puts(" -> ok");
  return bad == 0;
}

/* ---- running ---- */

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* p-th quantile of sorted t[n], interpolating between neighbours */
static double quantile(const double *t, long n, double p) {
  double pos = p * (double)(n - 1);
  long lo = (long)pos;
  return lo + 1 < n ? t[lo] + (pos - (double)lo) * (t[lo + 1] - t[lo]) : t[lo];
}

static bool run_once(const Run *r) {
  const char *msg = r->m->run((const void *const *)r->in, r->out, r->arena);
  if (msg) errorf(r, "%s", msg);
  return msg == NULL;
}

/* r->bench timed runs after the warm-up run_all already did */
static bool bench(const Run *r, int threads) {
  double *t = malloc((size_t)r->bench * sizeof *t);
  if (!t) {
    errorf(r, "--bench: out of memory");
    return false;
  }
  for (long i = 0; i < r->bench; i++) {
    double t0 = now_ms();
    if (!run_once(r)) {
      free(t);
      return false;
    }
    t[i] = now_ms() - t0;
  }
  qsort(t, (size_t)r->bench, sizeof *t, cmp_double);
  double med = quantile(t, r->bench, 0.5);
  printf("bench: %ld runs after 1 warm-up, %d thread%s: median %.4g ms, p10 %.4g ms, p90 %.4g ms, ", r->bench,
         threads, threads == 1 ? "" : "s", med, quantile(t, r->bench, 0.1), quantile(t, r->bench, 0.9));
  if (med > 0) printf("%.4g GFLOP/s\n", r->m->flops / (med * 1e-3) / 1e9);
  else puts("GFLOP/s n/a (below the timer's resolution)");
  free(t);
  return true;
}

/* Loads, runs, then benchmarks, writes, checks or prints. */
static int run_all(Run *r, int threads) {
  const rt_model *m = r->m;
  bool zero_fill = r->bench && !r->nouts && !r->nchecks;
  int missing = 0;
  for (int i = 0; i < m->ninputs; i++) {
    if (r->in_path[i] || zero_fill) continue;
    char s[MAX_RANK * 24];
    shape_str(m->inputs[i].rank, m->inputs[i].shape, s, sizeof s);
    errorf(r, "missing --input %s=@FILE.npy (%s %s)", m->inputs[i].name, s, dtype_name(m->inputs[i].dtype));
    missing++;
  }
  if (missing) {
    fprintf(stderr, "%s: note: every input is required (see %s --help)\n", r->prog, r->prog);
    return RC_USAGE;
  }
  /* read every file before running, reporting each problem */
  bool ok = true;
  for (int i = 0; i < m->ninputs; i++) {
    if (r->in_path[i]) {
      ok &= load_input(r, i, r->in_path[i]);
    } else if ((r->in[i] = alloc_aligned(r, (size_t)m->inputs[i].numel, dtype_size(m->inputs[i].dtype), "input"))) {
      memset(r->in[i], 0, (size_t)m->inputs[i].numel * dtype_size(m->inputs[i].dtype));
    } else {
      ok = false;
    }
  }
  for (int c = 0; c < r->nchecks; c++) ok &= load_golden(r, c);
  for (int i = 0; ok && i < m->noutputs; i++)
    ok = (r->out[i] = alloc_aligned(r, (size_t)m->outputs[i].numel, dtype_size(m->outputs[i].dtype), "output")) != NULL;
  ok = ok && (r->arena = alloc_aligned(r, m->arena_bytes, 1, "arena"));
  if (!ok || !run_once(r) || (r->bench && !bench(r, threads))) return RC_BAD_INPUT;
  if (r->nouts && !write_outputs(r)) return RC_BAD_INPUT;
  bool match = true;
  for (int c = 0; c < r->nchecks; c++) match &= check_output(r, c);
  if (!r->nouts && !r->nchecks && !r->bench && !r->info)
    for (int i = 0; i < m->noutputs; i++) print_output(&m->outputs[i], r->out[i]);
  return match ? RC_OK : RC_MISMATCH;
}

static void free_run(Run *r) {
  for (int i = 0; r->in && i < r->m->ninputs; i++) free(r->in[i]);
  for (int i = 0; r->out && i < r->m->noutputs; i++) free(r->out[i]);
  for (int c = 0; r->gold && c < r->nchecks; c++) free(r->gold[c]);
  free(r->in);
  free(r->out);
  free(r->gold);
  free(r->arena);
  free(r->in_path);
  free(r->outs);
  free(r->checks);
}

/* The generated model is trusted, but a bad descriptor must not overrun a buffer. */
static bool check_descs(const Run *r, const rt_tensor_desc *d, int n) {
  if (n < 0 || (n && !d)) {
    errorf(r, "internal error: bad tensor list");
    return false;
  }
  for (int i = 0; i < n; i++) {
    int64_t numel = 1;
    bool ok = d[i].name && d[i].rank >= 0 && d[i].rank <= MAX_RANK && (d[i].dtype == RT_F32 || d[i].dtype == RT_I64);
    for (int k = 0; ok && k < d[i].rank; k++) {
      ok = d[i].shape[k] >= 0 && (d[i].shape[k] == 0 || numel <= INT64_MAX / d[i].shape[k]);
      numel *= ok ? d[i].shape[k] : 1;
    }
    if (!ok || numel != d[i].numel) {
      errorf(r, "internal error: bad descriptor of tensor %d ('%s')", i, d[i].name ? d[i].name : "");
      return false;
    }
  }
  return true;
}

int rt_main(const rt_model *m, int argc, char **argv) {
  Run r = {.m = m, .prog = m->name ? m->name : argc > 0 ? argv[0] : "model", .rtol = 1e-4, .atol = 1e-5};
  size_t nargs = argc > 0 ? (size_t)argc : 1;
  r.in_path = calloc((size_t)m->ninputs + 1, sizeof *r.in_path);
  r.in = calloc((size_t)m->ninputs + 1, sizeof *r.in);
  r.out = calloc((size_t)m->noutputs + 1, sizeof *r.out);
  r.outs = calloc(nargs, sizeof *r.outs);
  r.checks = calloc(nargs, sizeof *r.checks);
  r.gold = calloc(nargs, sizeof *r.gold);
  int code;
  if (!r.in_path || !r.in || !r.out || !r.outs || !r.checks || !r.gold) {
    errorf(&r, "out of memory");
    code = RC_BAD_INPUT;
  } else if (!m->circc_version || !m->command_line || !m->source_hash || !m->run) {
    errorf(&r, "internal error: the model lacks its version, command line, hash or run function");
    code = RC_BAD_INPUT;
  } else if (!check_descs(&r, m->inputs, m->ninputs) || !check_descs(&r, m->outputs, m->noutputs)) {
    code = RC_BAD_INPUT;
  } else if (rt_generate_requested(argc, argv)) {
    code = rt_generate_main(m, argc, argv);   /* rt_generate.c */
  } else if ((code = parse_args(&r, argc, argv)) < 0) {
    int threads = set_threads(r.threads);
    if (r.verbose) fprintf(stderr, "%s: %d thread%s\n", r.prog, threads, threads == 1 ? "" : "s");
    if (r.info) print_info(&r, threads);
    if (r.sample) code = rt_sample(m, (int)r.sample, r.seed);
    else code = r.info && !r.nouts && !r.nchecks && !r.bench ? RC_OK : run_all(&r, threads);
  }
  free_run(&r);
  fflush(stdout);
  return code;
}

/* ---- random numbers (circc_rt.h) ---- */

static uint64_t splitmix64(uint64_t *x) {
  uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

void rt_rng_seed(rt_rng *r, uint64_t seed) {
  for (int k = 0; k < 4; k++) r->s[k] = splitmix64(&seed);
}

double rt_rng_uniform(rt_rng *r) {
  uint64_t *s = r->s, result = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
  s[2] ^= s[0];
  s[3] ^= s[1];
  s[1] ^= s[2];
  s[0] ^= s[3];
  s[2] ^= t;
  s[3] = rotl(s[3], 45);
  return (double)(result >> 11) * 0x1.0p-53;
}
