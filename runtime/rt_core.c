/* rt_core.c — the bottom layer of the runtime (see rt_core.h). It calls only
 * libc, libm and OpenMP. */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L   /* clock_gettime, open flags */
#endif
#ifndef _XOPEN_SOURCE
#define _XOPEN_SOURCE 700         /* realpath */
#endif
#ifndef _DEFAULT_SOURCE
#define _DEFAULT_SOURCE           /* MADV_HUGEPAGE */
#endif
#include "rt_core.h"
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#endif

enum { MAX_HEADER = 1 << 20, OPT_BASE = 256 /* getopt_long's code of option k: OPT_BASE + k */ };

/* ---- messages ---- */

const char *rt_prog(const rt_model *m, int argc, char **argv) {
  return m->name ? m->name : argc > 0 ? argv[0] : "model";
}

static void verror(const char *prog, const char *fmt, va_list ap) {
  fprintf(stderr, "%s: error: ", prog);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
}

void rt_error(const char *prog, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  verror(prog, fmt, ap);
  va_end(ap);
}

int rt_usage_error(const char *prog, const char *fmt, ...) {
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  rt_error(prog, "%s (see %s --help)", msg, prog);
  return RT_EXIT_USAGE;
}

const char *rt_errorf(const char *fmt, ...) {
  static _Thread_local char buf[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  return buf;
}

/* ---- the command line ---- */

/* One option on getopt_long, stateless: getopt is reset (optind = 0) and sees
 * only argv[*i] and the element after it, so modes may scan argv in any order
 * and a test may call rt_main again. Grouped short options (-vh) are not
 * taken apart, and a long option must be written in full. */
int rt_next_option(const char *prog, const rt_option *opts, int nopts, const char *unknown_hint, int argc,
                   char **argv, int *i, const char **val) {
  const char *a = argv[*i];
  if (a[0] != '-') return rt_usage_error(prog, "unexpected argument '%s'", a), -1;
  if (!a[1] || !strcmp(a, "--")) return rt_usage_error(prog, "unknown option '%s'%s", a, unknown_hint), -1;
  struct option *lo = calloc((size_t)nopts + 1, sizeof *lo);
  char *shorts = malloc(2 * (size_t)nopts + 3);
  if (!lo || !shorts) {
    free(lo), free(shorts);
    rt_error(prog, "out of memory reading the options");
    return -1;
  }
  size_t ns = 0, nl = 0;
  shorts[ns++] = '+';   /* stop at the first non-option: no reordering */
  shorts[ns++] = ':';   /* a missing value is ':', not '?' */
  for (int k = 0; k < nopts; k++) {
    const char *name = opts[k].name;
    if (name[1] == '-') {
      lo[nl++] = (struct option){name + 2, opts[k].takes_value ? required_argument : no_argument, NULL, OPT_BASE + k};
    } else {
      shorts[ns++] = name[1];
      if (opts[k].takes_value) shorts[ns++] = ':';
    }
  }
  shorts[ns] = '\0';
  char *sub[4] = {argv[0], argv[*i], *i + 1 < argc ? argv[*i + 1] : NULL, NULL};
  int subc = sub[2] ? 3 : 2;
  optind = 0;   /* a full reset (glibc, musl and the BSDs) */
  opterr = 0;
  int got = getopt_long(subc, sub, shorts, lo, NULL);
  int used = optind, code = got >= OPT_BASE ? got - OPT_BASE : -1, bad = optopt;
  const char *value = optarg;
  free(lo), free(shorts);
  for (int k = 0; code < 0 && got > 0 && got < OPT_BASE && k < nopts; k++)
    if (opts[k].name[1] == got && !opts[k].name[2]) code = k;
  int named = got == ':' || got == '?' ? (bad >= OPT_BASE ? bad - OPT_BASE : -1) : code;
  for (int k = 0; named < 0 && bad > 0 && bad < OPT_BASE && k < nopts; k++)
    if (opts[k].name[1] == bad && !opts[k].name[2]) named = k;
  if (got == ':') return rt_usage_error(prog, "option %s needs a value", opts[named].name), -1;
  if (got == '?' && named >= 0 && opts[named].name[1] == '-')
    return rt_usage_error(prog, "option %s takes no value, found '%s'", opts[named].name, a), -1;
  if (got == '?' || code < 0) return rt_usage_error(prog, "unknown option '%s'%s", a, unknown_hint), -1;
  const char *name = opts[code].name;
  if (name[1] == '-' && strncmp(a, name, strlen(name)) != 0)   /* getopt_long took an abbreviation */
    return rt_usage_error(prog, "unknown option '%s' (did you mean %s?)", a, name), -1;
  if (used == 1)   /* a short option followed by more letters, as in -vh */
    return rt_usage_error(prog, "option %s takes no value, found '%s'", name, a), -1;
  *i += used - 2;
  *val = opts[code].takes_value ? value : NULL;
  return code;
}

bool rt_has_option(int argc, char **argv, const char *const *names, int n) {
  for (int i = 1; i < argc; i++)
    for (int k = 0; k < n; k++) {
      size_t len = strlen(names[k]);
      if (!strncmp(argv[i], names[k], len) && (argv[i][len] == '\0' || argv[i][len] == '=')) return true;
    }
  return false;
}

const char *rt_binding_path(const char *p) {
  if (*p == '@') p++;
  return *p ? p : NULL;
}

int rt_parse_binding(const char *prog, const char *flag, const char *arg, const rt_tensor_desc *d, int n,
                     const char *what, const char **path) {
  int best = -1;
  size_t best_len = 0;
  for (int i = 0; i < n; i++) {
    size_t len = strlen(d[i].name);
    if (strncmp(arg, d[i].name, len) == 0 && arg[len] == '=' && rt_binding_path(arg + len + 1) &&
        (best < 0 || len > best_len))
      best = i, best_len = len;
  }
  if (best >= 0) {
    *path = rt_binding_path(arg + best_len + 1);
    return best;
  }
  const char *eq = strchr(arg, '=');
  if (!eq || eq == arg || !rt_binding_path(eq + 1))
    return rt_usage_error(prog, "%s expects NAME=@FILE.npy, found '%s'", flag, arg), -1;
  rt_usage_error(prog, "%s: the program has no %s named '%.*s'", flag, what, (int)(eq - arg), arg);
  fprintf(stderr, "%s: note: its %ss are:\n", prog, what);
  for (int i = 0; i < n; i++) rt_desc_line(stderr, &d[i]);
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

bool rt_parse_double(const char *s, double *out) {
  char *end;
  errno = 0;
  double v = strtod(s, &end);
  if (end == s || *end || errno || !isfinite(v)) return false;
  *out = v;
  return true;
}

bool rt_parse_seed(const char *s, uint64_t *out) {
  char *end;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 10);
  if (end == s || *end || errno || s[0] == '-') return false;
  *out = (uint64_t)v;
  return true;
}

/* ---- random numbers ---- */

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

/* ---- memory, time, threads ---- */

void *rt_alloc_aligned(size_t bytes) {
  size_t n = (bytes + RT_ALIGN - 1) / RT_ALIGN * RT_ALIGN;   /* aligned_alloc wants a multiple */
  return aligned_alloc(RT_ALIGN, n ? n : RT_ALIGN);
}

void *rt_alloc_zeroed(size_t bytes) {
  size_t n = (bytes + RT_ALIGN - 1) / RT_ALIGN * RT_ALIGN;
  void *p = rt_alloc_aligned(n);
  if (p) memset(p, 0, n ? n : RT_ALIGN);
  return p;
}

void *rt_alloc_array(const char *prog, size_t n, size_t size, const char *what) {
  if (n > (SIZE_MAX - RT_ALIGN) / size) {
    rt_error(prog, "%s: cannot allocate %zu elements of %zu bytes", what, n, size);
    return NULL;
  }
  size_t bytes = (n * size + RT_ALIGN - 1) / RT_ALIGN * RT_ALIGN;
  void *p = rt_alloc_aligned(bytes);
  if (!p) rt_error(prog, "%s: cannot allocate %zu bytes", what, bytes);
  return p;
}

bool rt_alloc_buffers(const rt_model *m, void ***in, void ***out, void **arena) {
  *in = calloc((size_t)(m->ninputs + m->npatches) + 1, sizeof **in); /* patches: NULL, not given */
  *out = calloc((size_t)m->noutputs + 1, sizeof **out);
  *arena = rt_alloc_zeroed(m->arena_bytes);
  bool ok = *in && *out && *arena;
  for (int i = 0; ok && i < m->ninputs; i++)
    ok = ((*in)[i] = rt_alloc_zeroed((size_t)m->inputs[i].numel * rt_input_elem_size(m, i))) != NULL;
  for (int i = 0; ok && i < m->noutputs; i++)
    ok = ((*out)[i] = rt_alloc_zeroed((size_t)m->outputs[i].numel * rt_dtype_size(m->outputs[i].dtype))) != NULL;
  return ok;
}

void rt_free_buffers(const rt_model *m, void **in, void **out, void *arena) {
  for (int i = 0; in && i < m->ninputs + m->npatches; i++) free(in[i]);
  for (int i = 0; out && i < m->noutputs; i++) free(out[i]);
  free(in);
  free(out);
  free(arena);
}

/* ---- the weights blob (circc_rt.h) ---- */

static pthread_mutex_t weights_lock = PTHREAD_MUTEX_INITIALIZER;
static const unsigned char *weights_linked, *weights_used;
static const char *weights_how = "mapped from the program file";

#if defined(__linux__) && defined(MADV_HUGEPAGE)
/* The file the loader mapped the `bytes` at p from, open, and their offset in
 * it (/proc/self/maps), or -1: reading the file costs a fifth of faulting the
 * mapping in page by page. The file must still be the one mapped (same
 * device and inode): a program rebuilt while it runs has a new one. */
static int weights_file(const void *p, size_t bytes, off_t *off) {
  FILE *f = fopen("/proc/self/maps", "re");
  char line[4352], path[4096];
  int fd = -1;
  while (f && fgets(line, sizeof line, f)) {
    unsigned long long lo, hi, at, inode;
    unsigned major, minor;
    uintptr_t a = (uintptr_t)p;
    if (sscanf(line, "%llx-%llx %*s %llx %x:%x %llu %4095[^\n]", &lo, &hi, &at, &major, &minor, &inode, path) != 7 ||
        a < lo || a >= hi)
      continue;
    struct stat st;
    if (path[0] == '/' && a + bytes <= hi && (fd = open(path, O_RDONLY | O_CLOEXEC)) >= 0 &&
        (fstat(fd, &st) != 0 || (unsigned long long)st.st_ino != inode || major(st.st_dev) != major ||
         minor(st.st_dev) != minor)) {
      close(fd);
      fd = -1;
    }
    *off = (off_t)(at + (a - lo));
    break;
  }
  if (f) fclose(f);
  return fd;
}

/* The `bytes` at linked, read from their file into w, or false. */
static bool read_weights(unsigned char *w, const unsigned char *linked, size_t bytes) {
  off_t off;
  int fd = weights_file(linked, bytes, &off);
  size_t at = 0;
  while (fd >= 0 && at < bytes) {
    ssize_t n = pread(fd, w + at, bytes - at < ((size_t)1 << 26) ? bytes - at : (size_t)1 << 26, off + (off_t)at);
    if (n == 0 || (n < 0 && errno != EINTR)) break; /* 0: the file is shorter than its mapping says */
    if (n > 0) at += (size_t)n;
  }
  if (fd >= 0) close(fd);
  return at == bytes;
}
#endif

static const unsigned char *copy_weights(const unsigned char *linked, size_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  const char *env = getenv("CIRCC_WEIGHTS");
  if (bytes < RT_WEIGHTS_COPY_MIN) return linked;
  if (env && !strcmp(env, "mapped")) {
    weights_how = "mapped from the program file (CIRCC_WEIGHTS=mapped)";
    return linked;
  }
  const size_t huge = (size_t)2 << 20, len = (bytes + huge - 1) / huge * huge;
  unsigned char *p = mmap(NULL, len + huge, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) {
    weights_how = "mapped from the program file (no memory for a copy)";
    return linked;
  }
  /* a 2 MiB-aligned start, so that every huge page of the copy can be one */
  unsigned char *w = (unsigned char *)(((uintptr_t)p + huge - 1) & ~(uintptr_t)(huge - 1));
  if (w > p) munmap(p, (size_t)(w - p));
  if (w + len < p + len + huge) munmap(w + len, (size_t)(p + len + huge - (w + len)));
  bool huge_ok = madvise(w, len, MADV_HUGEPAGE) == 0, from_file = read_weights(w, linked, bytes);
  if (!from_file) {
    /* from the mapping, in 64 MiB pieces, each piece's whole pages unmapped
     * after it is copied (they refault from the page cache if read again),
     * so that the resident size stays one blob */
    const size_t piece = (size_t)64 << 20, page = (size_t)sysconf(_SC_PAGESIZE);
    for (size_t at = 0; at < bytes; at += piece) {
      size_t n = bytes - at < piece ? bytes - at : piece;
      memcpy(w + at, linked + at, n);
      uintptr_t lo = ((uintptr_t)linked + at + page - 1) / page * page, hi = ((uintptr_t)linked + at + n) / page * page;
      if (hi > lo) madvise((void *)lo, hi - lo, MADV_DONTNEED);
    }
  }
  mprotect(w, len, PROT_READ);
  static char how[160];
  snprintf(how, sizeof how, "copied to memory %s%s", huge_ok ? "on 2 MiB pages" : "(the kernel refused 2 MiB pages)",
           from_file ? "" : ", from the mapping (the program file is gone or was replaced)");
  weights_how = how;
  return w;
#else
  (void)bytes;
  return linked;
#endif
}

const unsigned char *rt_weights(const unsigned char *linked, size_t bytes) {
  pthread_mutex_lock(&weights_lock);
  if (!weights_used) {
    weights_linked = linked;
    weights_used = copy_weights(linked, bytes);
  }
  const unsigned char *w = weights_linked == linked ? weights_used : linked;
  pthread_mutex_unlock(&weights_lock);
  return w;
}

const char *rt_weights_how(void) {
  pthread_mutex_lock(&weights_lock);
  const char *how = weights_how;
  pthread_mutex_unlock(&weights_lock);
  return how;
}

double rt_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

void rt_wait_policy(char **argv) {
#if defined(_OPENMP) && defined(__linux__) && !defined(CIRCC_MPI)
  /* libgomp reads GOMP_SPINCOUNT when the program starts, so setting it takes
   * one exec of the program itself; if that fails, the default stays */
  if (getenv("OMP_WAIT_POLICY") || getenv("GOMP_SPINCOUNT")) return;
  if (setenv("GOMP_SPINCOUNT", RT_SPIN_COUNT, 1) != 0) return;
  execv("/proc/self/exe", argv);
  unsetenv("GOMP_SPINCOUNT");
#else
  (void)argv;
#endif
}

#ifdef _OPENMP
/* libgomp exits with status 1 (a program's --check mismatch code) when it
 * cannot create a thread. rt_set_threads starts the team itself, once, with
 * this handler armed: the failure becomes a message and exit 3. */
static const char *g_team_prog;
static int g_team_size;

static void team_failed(void) {
  if (!g_team_prog) return;
  rt_error(g_team_prog, "cannot start %d threads (libgomp's reason above); try --threads 1 or a smaller "
           "OMP_STACKSIZE", g_team_size);
  _exit(RT_EXIT_BAD_INPUT);
}
#endif

int rt_set_threads(const char *prog, int requested) {
#ifdef _OPENMP
  int n = requested;
  const char *env = getenv("OMP_NUM_THREADS");
  long v;
  char head[32];
  if (!n && env) {
    size_t len = strcspn(env, ",");
    snprintf(head, sizeof head, "%.*s", (int)(len < sizeof head ? len : sizeof head - 1), env);
    if (rt_parse_long(head, 1, RT_MAX_THREADS, &v)) n = (int)v;
  }
  if (!n) n = omp_get_num_procs();
  omp_set_num_threads(n);
  static bool armed;
  if (!armed) armed = atexit(team_failed) == 0;
  g_team_prog = prog, g_team_size = n;
  static volatile int started;   /* a region with an empty body is optimised away */
#pragma omp parallel num_threads(n)
  started = 1;   /* later regions of n threads reuse this team */
  (void)started;
  g_team_prog = NULL;
  return n;
#else
  (void)prog, (void)requested;   /* built without OpenMP: always one thread */
  return 1;
#endif
}

int rt_threads(void) {
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

/* ---- tensor descriptions ---- */

const char *rt_dtype_name(rt_dtype t) { return t == RT_F32 ? "float32" : "int64"; }
size_t rt_dtype_size(rt_dtype t) { return t == RT_F32 ? 4 : 8; }
bool rt_input_bf16(const rt_model *m, int i) { return m->input_bf16 && m->input_bf16[i]; }
size_t rt_input_elem_size(const rt_model *m, int i) {
  return rt_input_bf16(m, i) ? 2 : rt_dtype_size(m->inputs[i].dtype);
}

void rt_bf16_round(const float *x, uint16_t *dst, int64_t n) {
  for (int64_t i = 0; i < n; i++) {
    uint32_t u;
    memcpy(&u, &x[i], 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) dst[i] = (uint16_t)((u >> 16) | 0x40u);
    else dst[i] = (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
  }
}

void rt_shape_str(int rank, const int64_t *shape, char *buf, size_t cap) {
  size_t k = (size_t)snprintf(buf, cap, "[");
  for (int i = 0; i < rank && k < cap; i++)
    k += (size_t)snprintf(buf + k, cap - k, i ? ",%lld" : "%lld", (long long)shape[i]);
  if (k < cap) snprintf(buf + k, cap - k, "]");
}

void rt_desc_line(FILE *f, const rt_tensor_desc *d) {
  char s[RT_MAX_RANK * 24];
  rt_shape_str(d->rank, d->shape, s, sizeof s);
  fprintf(f, "  %s %s %s\n", d->name, s, rt_dtype_name(d->dtype));
}

void rt_input_line(FILE *f, const rt_model *m, int i) {
  const rt_tensor_desc *d = &m->inputs[i];
  char s[RT_MAX_RANK * 24];
  rt_shape_str(d->rank, d->shape, s, sizeof s);
  fprintf(f, "  %s %s %s%s\n", d->name, s, rt_dtype_name(d->dtype), rt_input_bf16(m, i) ? " (stored as bf16)" : "");
}

void rt_print_precision(const rt_model *m) {
  if (m->precision) printf("precision:    %s (GEMMs: %s)\n", m->precision, m->gemm_path ? m->gemm_path() : "?");
  else puts("precision:    fp32");
}

void rt_print_info(const rt_model *m, const char *prog, int threads) {
  printf("program:      %s\ncircc:        %s\ncommand line: %s\nsource hash:  %s\ninputs:\n", prog,
         m->circc_version, m->command_line, m->source_hash);
  for (int i = 0; i < m->ninputs; i++) rt_input_line(stdout, m, i);
  puts("outputs:");
  for (int i = 0; i < m->noutputs - m->ntaps; i++) rt_desc_line(stdout, &m->outputs[i]);
  if (m->ntaps) puts("taps (outputs, circc --tap):");
  for (int i = m->noutputs - m->ntaps; i < m->noutputs; i++) rt_desc_line(stdout, &m->outputs[i]);
  if (m->npatches) puts("patches (--patch NAME=@FILE.npy, circc --patch):");
  for (int i = 0; i < m->npatches; i++) rt_desc_line(stdout, &m->patches[i]);
  printf("arena bytes:  %zu\nflops/run:    %.0f\nthreads:      %d\n", m->arena_bytes, m->flops, threads);
  rt_print_precision(m);
  const char *policy = getenv("OMP_WAIT_POLICY"), *spin = getenv("GOMP_SPINCOUNT");
  if (policy || spin) printf("waiting:      %s%s%s%s\n", policy ? "OMP_WAIT_POLICY=" : "", policy ? policy : "",
                             spin ? (policy ? " GOMP_SPINCOUNT=" : "GOMP_SPINCOUNT=") : "", spin ? spin : "");
  else puts("waiting:      the OpenMP runtime's default");
  printf("barriers:     %s\n", rt_barrier_policy());
  printf("team:         %s\n", rt_team_policy());
}

/* ---- .npy reading ---- */

/* .npy dtypes the runtime reads, by descr without its byte-order character */
typedef enum NpyType { NPY_F4, NPY_F8, NPY_F2, NPY_I8, NPY_I4, NPY_I2, NPY_I1, NPY_U1, NPY_COUNT } NpyType;
static const struct { const char *code; unsigned size; bool is_float; } NPY[NPY_COUNT] = {
    [NPY_F4] = {"f4", 4, true}, [NPY_F8] = {"f8", 8, true}, [NPY_F2] = {"f2", 2, true},
    [NPY_I8] = {"i8", 8, false}, [NPY_I4] = {"i4", 4, false}, [NPY_I2] = {"i2", 2, false},
    [NPY_I1] = {"i1", 1, false}, [NPY_U1] = {"u1", 1, false},
};

/* An open .npy file whose header has been parsed. */
typedef struct Npy {
  int fd;
  NpyType type;
  char descr[112];             /* as written (made printable), for messages */
  int rank;
  int64_t shape[RT_MAX_RANK];
  uint64_t payload;            /* bytes after the header */
} Npy;

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
  const char *prog;
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
  rt_error(d->prog, "%s: malformed .npy header: expected %s, found %s", d->what, expected, found);
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
    if (f->rank == RT_MAX_RANK) return dict_fail(d, "at most 32 dimensions");
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
    rt_error(d->prog, "%s: unsupported byte order: expected little-endian '<%s', found '%s'", d->what, NPY[t].code,
           f->descr);
    return false;
  }
  rt_error(d->prog, "%s: unsupported dtype: expected one of <f4 <f8 <f2 <i8 <i4 <i2 |i1 |u1, found '%s'", d->what,
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
      rt_error(d->prog, "%s: malformed .npy header: expected the keys 'descr', 'fortran_order' and 'shape' once each, "
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
    rt_error(d->prog, "%s: malformed .npy header: expected the keys 'descr', 'fortran_order' and 'shape', found no '%s'",
           d->what, !(seen & DESCR) ? "descr" : !(seen & FORTRAN) ? "fortran_order" : "shape");
    return false;
  }
  if (fortran) {
    rt_error(d->prog, "%s: unsupported layout: expected fortran_order False (C order), found True; "
           "re-save it with numpy.ascontiguousarray", d->what);
    return false;
  }
  return true;
}

/* Whether two shapes are equal once leading 1s are dropped ([1,T,V] and [T,V]):
 * the same elements in the same C order. */
static bool same_but_leading_ones(int ra, const int64_t *a, int rb, const int64_t *b) {
  while (ra > 0 && a[0] == 1) a++, ra--;
  while (rb > 0 && b[0] == 1) b++, rb--;
  if (ra != rb) return false;
  for (int i = 0; i < ra; i++)
    if (a[i] != b[i]) return false;
  return true;
}

/* Opens path, parses its header and checks it against want's shape (up to
 * leading 1s) and the payload size. On success f->fd is open at the payload. */
static bool npy_open(const char *prog, const char *what, const char *path, const rt_tensor_desc *want, Npy *f) {
  struct stat st;
  f->fd = open(path, O_RDONLY | O_NONBLOCK);   /* a FIFO must not hang us */
  if (f->fd < 0 || fstat(f->fd, &st) != 0) {
    rt_error(prog, "%s: cannot open %s: %s", what, path, strerror(errno));
    return false;
  }
  if (!S_ISREG(st.st_mode)) {
    rt_error(prog, "%s: cannot read %s: not a regular file", what, path);
    return false;
  }
  unsigned char pre[12];
  size_t got = read_full(f->fd, pre, 10);
  if (got < 6 || memcmp(pre, "\x93NUMPY", 6) != 0) {
    rt_error(prog, "%s: %s is not a .npy file: expected it to start with \"\\x93NUMPY\"", what, path);
    return false;
  }
  if (got < 10) {
    rt_error(prog, "%s: %s: truncated .npy file: expected at least 10 bytes, found %zu", what, path, got);
    return false;
  }
  if (pre[6] < 1 || pre[6] > 3 || pre[7] != 0) {
    rt_error(prog, "%s: %s: unsupported .npy version: expected 1.0, 2.0 or 3.0, found %u.%u", what, path, pre[6], pre[7]);
    return false;
  }
  size_t prefix = pre[6] == 1 ? 10 : 12;
  if (prefix == 12 && read_full(f->fd, pre + 10, 2) < 2) {
    rt_error(prog, "%s: %s: truncated .npy file: expected at least 12 bytes", what, path);
    return false;
  }
  size_t hlen = pre[8] | (size_t)pre[9] << 8;
  if (prefix == 12) hlen |= (size_t)pre[10] << 16 | (size_t)pre[11] << 24;
  uint64_t size = (uint64_t)st.st_size;
  if (hlen > MAX_HEADER) {
    rt_error(prog, "%s: %s: oversized .npy header: expected at most %d bytes, found %zu", what, path, MAX_HEADER, hlen);
    return false;
  }
  if (prefix + hlen > size) {
    rt_error(prog, "%s: %s: truncated .npy header: expected %zu bytes, found %llu", what, path, hlen,
           (unsigned long long)(size - prefix));
    return false;
  }
  char *hdr = malloc(hlen ? hlen : 1);
  if (!hdr) {
    rt_error(prog, "%s: out of memory reading %s", what, path);
    return false;
  }
  char where[1024];
  snprintf(where, sizeof where, "%s: %s", what, path);
  Dict d = {prog, where, hdr, hlen, 0};
  errno = 0;
  bool ok = read_full(f->fd, hdr, hlen) == hlen;
  if (!ok) rt_error(prog, "%s: cannot read the header: %s", where, errno ? strerror(errno) : "file shrank");
  ok = ok && parse_dict(&d, f);
  free(hdr);
  if (!ok) return false;
  char s_want[RT_MAX_RANK * 24], s_found[RT_MAX_RANK * 24];
  if (!same_but_leading_ones(f->rank, f->shape, want->rank, want->shape)) {
    rt_shape_str(want->rank, want->shape, s_want, sizeof s_want);
    rt_shape_str(f->rank, f->shape, s_found, sizeof s_found);
    rt_error(prog, "%s: wrong shape: expected %s, found %s", where, s_want, s_found);
    return false;
  }
  /* the shape equals the model's, so numel * size cannot overflow */
  f->payload = size - prefix - hlen;
  uint64_t need = (uint64_t)want->numel * NPY[f->type].size;
  if (f->payload != need) {
    rt_error(prog, "%s: %s: expected %llu bytes of %s data, found %llu", where,
           f->payload < need ? "truncated .npy file" : "trailing bytes in .npy file", (unsigned long long)need,
           f->descr, (unsigned long long)f->payload);
    return false;
  }
  return true;
}

/* Reads the payload of an opened file into a new buffer (caller frees). */
static unsigned char *npy_payload(const char *prog, const char *what, const char *path, Npy *f) {
  unsigned char *raw = malloc(f->payload ? f->payload : 1);
  errno = 0;
  if (!raw) rt_error(prog, "%s: out of memory reading %llu bytes of %s", what, (unsigned long long)f->payload, path);
  else if (read_full(f->fd, raw, f->payload) != f->payload) {
    rt_error(prog, "%s: cannot read %s: %s", what, path, errno ? strerror(errno) : "file shrank while reading");
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

/* rt_npy_read, rounding the values to bf16 if bf16 */
static void *npy_read(const char *prog, const char *what, const char *path, const rt_tensor_desc *want, bool bf16) {
  Npy f = {.fd = -1};
  unsigned char *raw = NULL;
  void *values = NULL;
  bool ok = npy_open(prog, what, path, want, &f);
  if (ok && NPY[f.type].is_float != (want->dtype == RT_F32)) {
    rt_error(prog, "%s: %s: unsupported dtype for %s input: expected %s, found '%s'", what, path,
             want->dtype == RT_F32 ? "a float32" : "an int64",
             want->dtype == RT_F32 ? RT_NPY_FLOAT_DESCRS : RT_NPY_INT_DESCRS, f.descr);
    ok = false;
  }
  ok = ok && (raw = npy_payload(prog, what, path, &f)) &&
       (values = rt_alloc_array(prog, (size_t)want->numel, bf16 ? 2 : rt_dtype_size(want->dtype), what));
  if (ok) {
    unsigned size = NPY[f.type].size;
    for (int64_t k = 0; k < want->numel; k++) {
      if (bf16) {
        float x = (float)npy_get(f.type, raw + k * size);
        rt_bf16_round(&x, (uint16_t *)values + k, 1);
      } else if (want->dtype == RT_F32) {
        ((float *)values)[k] = (float)npy_get(f.type, raw + k * size);
      } else {
        ((int64_t *)values)[k] = npy_get_int(f.type, raw + k * size);
      }
    }
  }
  free(raw);
  if (f.fd >= 0) close(f.fd);
  return values;
}

void *rt_npy_read(const char *prog, const char *what, const char *path, const rt_tensor_desc *want) {
  return npy_read(prog, what, path, want, false);
}

void *rt_npy_read_input(const char *prog, const char *what, const char *path, const rt_model *m, int i) {
  return npy_read(prog, what, path, &m->inputs[i], rt_input_bf16(m, i));
}

double *rt_npy_read_doubles(const char *prog, const char *what, const char *path, const rt_tensor_desc *want) {
  Npy f = {.fd = -1};
  unsigned char *raw = NULL;
  double *values = NULL;
  bool ok = npy_open(prog, what, path, want, &f) && (raw = npy_payload(prog, what, path, &f)) &&
            (values = malloc((size_t)(want->numel ? want->numel : 1) * sizeof(double)));
  if (raw && !values) rt_error(prog, "%s: out of memory", what);
  for (int64_t k = 0; ok && k < want->numel; k++) values[k] = npy_get(f.type, raw + k * NPY[f.type].size);
  free(raw);
  if (f.fd >= 0) close(f.fd);
  return values;
}

/* Whether path exists and is not a regular file (a device, a FIFO): written through. */
static bool write_through(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 && !S_ISREG(st.st_mode);
}

/* A temporary name beside the real target (a symlink followed), or NULL if out of memory. */
static char *staging_path(const char *path, int i) {
  char *real = realpath(path, NULL);   /* NULL: the file does not exist yet */
  const char *target = real ? real : path;
  size_t len = strlen(target) + 48;
  char *tmp = malloc(len);
  if (tmp) snprintf(tmp, len, "%s.tmp.%ld.%d", target, (long)getpid(), i);
  free(real);
  return tmp;
}

/* The temporaries of the rt_write_files in progress: a SIGINT, SIGTERM or
 * SIGHUP meanwhile removes them, then takes its default action. */
static char **volatile staged;
static volatile int nstaged;
static const int STAGE_SIGNALS[] = {SIGINT, SIGTERM, SIGHUP};

static void unstage(int sig) {
  for (int i = 0; i < nstaged; i++)
    if (staged[i]) unlink(staged[i]);
  signal(sig, SIG_DFL);
  raise(sig);
}

bool rt_write_files(const char *prog, int n, const char *const *paths, const char *const *labels, rt_file_writer write,
                    void *arg) {
  char **tmp = calloc((size_t)n + 1, sizeof *tmp);
  bool ok = tmp != NULL;
  if (!ok) rt_error(prog, "out of memory writing files");
  struct sigaction on = {.sa_handler = unstage}, before[3];
  sigemptyset(&on.sa_mask);
  staged = tmp, nstaged = ok ? n : 0;
  for (int s = 0; s < 3; s++) sigaction(STAGE_SIGNALS[s], &on, &before[s]);
  for (int i = 0; ok && i < n; i++) {
    bool through = write_through(paths[i]);
    if (!through && !(tmp[i] = staging_path(paths[i], i))) {
      rt_error(prog, "out of memory writing files");
      ok = false;
      break;
    }
    errno = 0;
    if (!write(i, through ? paths[i] : tmp[i], arg)) {
      rt_error(prog, "%s: cannot write %s: %s", labels[i], paths[i], errno ? strerror(errno) : "write failed");
      ok = false;
    }
  }
  for (int i = 0; ok && i < n; i++) {
    if (!tmp[i]) continue;
    char *real = realpath(paths[i], NULL);
    if (rename(tmp[i], real ? real : paths[i]) != 0) {
      rt_error(prog, "%s: cannot write %s: %s", labels[i], paths[i], strerror(errno));
      ok = false;
    } else {
      char *done = tmp[i];
      tmp[i] = NULL;   /* before the free: the handler may look */
      free(done);
    }
    free(real);
  }
  for (int i = 0; tmp && i < n; i++)
    if (tmp[i]) unlink(tmp[i]);
  nstaged = 0;
  for (int s = 0; s < 3; s++) sigaction(STAGE_SIGNALS[s], &before[s], NULL);
  for (int i = 0; tmp && i < n; i++) free(tmp[i]);
  free(tmp);
  return ok;
}

bool rt_npy_map_open(const char *prog, const char *what, const char *path, const rt_tensor_desc *want, rt_npy_map *m) {
  *m = (rt_npy_map){0};
  Npy f = {.fd = -1};
  bool ok = npy_open(prog, what, path, want, &f);
  off_t at = ok ? lseek(f.fd, 0, SEEK_CUR) : -1;
  bool exact = ok && at >= 0 && at % 8 == 0 && f.type == (want->dtype == RT_F32 ? NPY_F4 : NPY_I8);
  if (exact) {
    m->len = (size_t)at + (size_t)f.payload;
    void *base = mmap(NULL, m->len ? m->len : 1, PROT_READ, MAP_PRIVATE, f.fd, 0);
    if (base != MAP_FAILED) m->base = base, m->data = (const unsigned char *)base + at;
  }
  if (f.fd >= 0) close(f.fd);
  if (!ok) return false;
  if (!m->base) m->data = rt_npy_read(prog, what, path, want);   /* converted (or mmap refused) */
  return m->data != NULL;
}

void rt_npy_unmap(rt_npy_map *m) {
  if (m->base) munmap(m->base, m->len ? m->len : 1);
  else free((void *)m->data);
  *m = (rt_npy_map){0};
}

/* ---- .npy writing ---- */

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

/* descr "<f4" (4-byte elements) or "<i8" / "<f8" (8-byte elements) */
static bool npy_write(const char *path, const char *descr, size_t size, int rank, const int64_t *shape,
                      const void *data) {
  char hdr[RT_MAX_RANK * 24 + 256];
  int n = snprintf(hdr, sizeof hdr, "{'descr': '%s', 'fortran_order': False, 'shape': (", descr);
  int64_t numel = 1;
  for (int i = 0; i < rank; i++) {
    n += snprintf(hdr + n, sizeof hdr - (size_t)n, i ? ", %lld" : "%lld", (long long)shape[i]);
    numel *= shape[i];
  }
  n += snprintf(hdr + n, sizeof hdr - (size_t)n, "%s), }", rank == 1 ? "," : "");
  if (rank > 0) {
    int digits = snprintf(NULL, 0, "%lld", (long long)shape[0]);
    n += snprintf(hdr + n, sizeof hdr - (size_t)n, "%*s", 21 - digits, "");
  }
  n += snprintf(hdr + n, sizeof hdr - (size_t)n, "%*s\n", 64 - (10 + n + 1) % 64, "");
  unsigned char pre[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, (unsigned char)(n & 0xff), (unsigned char)(n >> 8)};
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0666);
  bool ok = fd >= 0 && write_full(fd, pre, sizeof pre) && write_full(fd, hdr, (size_t)n);
  /* little-endian bytes whatever the host, a chunk at a time */
  unsigned char chunk[4096];
  size_t used = 0;
  for (int64_t k = 0; ok && k < numel; k++) {
    uint64_t bits = 0;
    if (size == 4) {
      uint32_t u;
      memcpy(&u, (const char *)data + 4 * k, 4);
      bits = u;
    } else {
      memcpy(&bits, (const char *)data + 8 * k, 8);
    }
    for (size_t i = 0; i < size; i++) chunk[used++] = (unsigned char)(bits >> (8 * i));
    if (used == sizeof chunk || k + 1 == numel) {
      ok = write_full(fd, chunk, used);
      used = 0;
    }
  }
  int err = errno;
  if (fd >= 0 && close(fd) != 0 && ok) ok = false, err = errno;
  errno = err;
  return ok;
}

bool rt_npy_write(const char *path, rt_dtype dtype, int rank, const int64_t *shape, const void *data) {
  return npy_write(path, dtype == RT_F32 ? "<f4" : "<i8", rt_dtype_size(dtype), rank, shape, data);
}

bool rt_npy_write_f64(const char *path, int rank, const int64_t *shape, const double *data) {
  return npy_write(path, "<f8", 8, rank, shape, data);
}
