/* peak.c — measures this machine's limits for the circc benchmark (bench/run_bench.sh):
 * peak fp32 FLOP/s with 1 thread and with N threads (OpenMP), from independent FMA
 * chains on vector registers (AVX-512, else AVX2+FMA, else scalar), and the DRAM read
 * bandwidth of N threads streaming a 512 MiB array. Each measurement is calibrated to
 * run about --seconds S (default 0.2) and the best of --reps R (default 5) is kept.
 * Build: cc -O3 -march=native -fopenmp peak.c -o peak.
 * Output, one measurement per line (run_bench.sh parses the key=value fields):
 *   fma threads=T gflops=G isa=NAME
 *   read threads=T gbs=B mib=512 */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
#include <immintrin.h>
#endif

/* One vector of fp32 lanes and the four operations the kernels need. */
#if defined(__AVX512F__)
#define ISA "avx512"
enum { VLEN = 16, NACC = 16 };            /* 16 of 32 zmm registers hold accumulators */
typedef __m512 vec;
#define vset1(x) _mm512_set1_ps(x)
#define vfma(a, b, c) _mm512_fmadd_ps(a, b, c)
#define vadd(a, b) _mm512_add_ps(a, b)
#define vload(p) _mm512_load_ps(p)
static float vsum(vec v) { return _mm512_reduce_add_ps(v); }
#elif defined(__AVX2__) && defined(__FMA__)
#define ISA "avx2+fma"
enum { VLEN = 8, NACC = 12 };             /* 12 of 16 ymm registers */
typedef __m256 vec;
#define vset1(x) _mm256_set1_ps(x)
#define vfma(a, b, c) _mm256_fmadd_ps(a, b, c)
#define vadd(a, b) _mm256_add_ps(a, b)
#define vload(p) _mm256_load_ps(p)
static float vsum(vec v) {
  float t[8];
  _mm256_storeu_ps(t, v);
  return t[0] + t[1] + t[2] + t[3] + t[4] + t[5] + t[6] + t[7];
}
#else
#define ISA "scalar"
enum { VLEN = 1, NACC = 12 };
typedef float vec;
#define vset1(x) (x)
#define vfma(a, b, c) ((a) * (b) + (c))
#define vadd(a, b) ((a) + (b))
#define vload(p) (*(p))
static float vsum(vec v) { return v; }
#endif

enum { ALIGN = 64, READ_ACC = 4 };
static const size_t READ_BYTES = (size_t)512 << 20;

/* Inputs read through volatiles so the compiler cannot fold the chains; results
 * written to sink so it cannot drop them. */
static volatile float mul_in = 0.9999f, add_in = 1e-3f;
static volatile float sink;

/* iters steps of NACC independent chains acc = acc * m + a (they converge to
 * a / (1 - m) = 10: no overflow, no denormals). */
static float fma_chains(long iters) {
  const vec m = vset1(mul_in), a = vset1(add_in);
  vec acc[NACC];
  for (int k = 0; k < NACC; k++) acc[k] = vset1((float)k);
  for (long i = 0; i < iters; i++)
    for (int k = 0; k < NACC; k++) acc[k] = vfma(acc[k], m, a);
  vec s = acc[0];
  for (int k = 1; k < NACC; k++) s = vadd(s, acc[k]);
  return vsum(s);
}

/* Seconds for `threads` threads each running fma_chains(iters), timed from the
 * barrier where all have started to the one where all have finished. */
static double time_fma(int threads, long iters) {
  double t0 = 0, t1 = 0;
#pragma omp parallel num_threads(threads)
  {
#pragma omp barrier
#pragma omp master
    t0 = omp_get_wtime();
    float r = fma_chains(iters);
#pragma omp barrier
#pragma omp master
    t1 = omp_get_wtime();
#pragma omp critical
    sink = sink + r;
  }
  return t1 - t0;
}

/* Sum of the floats [lo, hi) of p (lo, hi multiples of VLEN * READ_ACC). */
static float read_range(const float *p, size_t lo, size_t hi) {
  vec acc[READ_ACC];
  for (int k = 0; k < READ_ACC; k++) acc[k] = vset1(0.0f);
  for (size_t i = lo; i < hi; i += VLEN * READ_ACC)
    for (int k = 0; k < READ_ACC; k++) acc[k] = vadd(acc[k], vload(p + i + (size_t)k * VLEN));
  vec s = acc[0];
  for (int k = 1; k < READ_ACC; k++) s = vadd(s, acc[k]);
  return vsum(s);
}

/* The part [lo, hi) of n floats thread t of nt reads (and first touches). */
static void chunk(size_t n, int t, int nt, size_t *lo, size_t *hi) {
  size_t step = VLEN * READ_ACC, blocks = n / step;
  *lo = blocks * (size_t)t / (size_t)nt * step;
  *hi = blocks * (size_t)(t + 1) / (size_t)nt * step;
}

/* Seconds for `threads` threads reading all n floats of p once. */
static double time_read(const float *p, size_t n, int threads) {
  double t0 = 0, t1 = 0;
#pragma omp parallel num_threads(threads)
  {
    size_t lo, hi;
    chunk(n, omp_get_thread_num(), omp_get_num_threads(), &lo, &hi);
#pragma omp barrier
#pragma omp master
    t0 = omp_get_wtime();
    float r = read_range(p, lo, hi);
#pragma omp barrier
#pragma omp master
    t1 = omp_get_wtime();
#pragma omp critical
    sink = sink + r;
  }
  return t1 - t0;
}

/* The team size OpenMP actually gives for num_threads(threads). */
static int team_size(int threads) {
  int n = 1;
#pragma omp parallel num_threads(threads)
#pragma omp master
  n = omp_get_num_threads();
  return n;
}

/* Best GFLOP/s of `threads` threads over reps runs of about seconds each. */
static double peak_gflops(int threads, double seconds, int reps) {
  long iters = 1 << 12;
  double t;
  while ((t = time_fma(threads, iters)) < 0.02) iters *= 2;   /* also warms up the clock */
  iters = (long)((double)iters * seconds / t) + 1;
  double best = 0;
  for (int r = 0; r < reps; r++) {
    t = time_fma(threads, iters);
    double g = 2.0 * VLEN * NACC * (double)iters * threads / t / 1e9;
    if (g > best) best = g;
  }
  return best;
}

/* Best GB/s of `threads` threads reading p (n floats), over reps runs. */
static double read_gbs(const float *p, size_t n, int threads, int reps) {
  double best = 0;
  time_read(p, n, threads);   /* warm-up */
  for (int r = 0; r < reps; r++) {
    double g = (double)(n * sizeof *p) / time_read(p, n, threads) / 1e9;
    if (g > best) best = g;
  }
  return best;
}

static int usage(const char *prog, FILE *f, int code) {
  fprintf(f,
          "usage: %s [--threads N] [--seconds S] [--reps R]\n"
          "Measures peak fp32 FMA GFLOP/s with 1 and N threads (default: OpenMP's, i.e.\n"
          "$OMP_NUM_THREADS or all cores) and the N-thread read bandwidth of a 512 MiB array.\n"
          "Each FMA measurement runs about S seconds (default 0.2); the best of R (default 5) counts.\n",
          prog);
  return code;
}

int main(int argc, char **argv) {
  int threads = omp_get_max_threads(), reps = 5;
  double seconds = 0.2;
  for (int i = 1; i < argc; i++) {
    char *end = NULL;
    if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) return usage(argv[0], stdout, 0);
    if (i + 1 >= argc) return usage(argv[0], stderr, 2);
    const char *flag = argv[i], *val = argv[++i];
    if (!strcmp(flag, "--threads")) {
      long n = strtol(val, &end, 10);
      if (*end || n < 1 || n > 4096) return usage(argv[0], stderr, 2);
      threads = (int)n;
    } else if (!strcmp(flag, "--seconds")) {
      seconds = strtod(val, &end);
      if (*end || !(seconds > 0 && seconds <= 60)) return usage(argv[0], stderr, 2);
    } else if (!strcmp(flag, "--reps")) {
      long n = strtol(val, &end, 10);
      if (*end || n < 1 || n > 1000) return usage(argv[0], stderr, 2);
      reps = (int)n;
    } else {
      return usage(argv[0], stderr, 2);
    }
  }
  threads = team_size(threads);

  printf("fma threads=1 gflops=%.1f isa=%s\n", peak_gflops(1, seconds, reps), ISA);
  if (threads > 1) printf("fma threads=%d gflops=%.1f isa=%s\n", threads, peak_gflops(threads, seconds, reps), ISA);
  fflush(stdout);

  size_t n = READ_BYTES / sizeof(float);
  float *p = aligned_alloc(ALIGN, READ_BYTES);
  if (!p) {
    fprintf(stderr, "%s: cannot allocate %zu MiB\n", argv[0], READ_BYTES >> 20);
    return 1;
  }
#pragma omp parallel num_threads(threads)
  {
    size_t lo, hi;   /* first touch by the thread that reads it */
    chunk(n, omp_get_thread_num(), omp_get_num_threads(), &lo, &hi);
    for (size_t i = lo; i < hi; i++) p[i] = (float)(i & 7);
  }
  printf("read threads=%d gbs=%.1f mib=%zu\n", threads, read_gbs(p, n, threads, reps), READ_BYTES >> 20);
  free(p);
  return 0;
}
