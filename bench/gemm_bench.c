/* gemm_bench.c — GFLOP/s of templates/gemm_f32.h on the GPT-2 small shapes
 * (M x N x K, A row-major M x K, B row-major K x N, or given as B^T: b=trans,
 * as for a tied unembedding; or --shape MxNxK[t], repeatable, instead), with
 * 1 thread and with all OpenMP threads, each computing a contiguous range of
 * rows, then of columns (both are splits a generated program may make), then
 * the same with B pre-packed (b=packed: circc_gemm_f32_packed_rows, as
 * programs run their weight GEMMs). B is hot in the caches, or with --cold
 * MIB one of enough distinct copies (MIB in all) that each product reads its
 * B from memory, as a model whose weights exceed the caches does. Built with -DCIRCC_BENCH_OPENBLAS (CMake does
 * so when it finds OpenBLAS) it also times OpenBLAS's cblas_sgemm on the same
 * operands with 1 and all threads, right after circc's runs of each shape.
 * --cpu times by process CPU time (for one thread on a busy machine).
 * Not a test; build with `cmake --build BUILD --target gemm_bench`. Prints one
 * line per shape and run (best of --reps R):
 *   gemm M=.. N=.. K=.. b=row|trans threads=T split=rows|cols ms=.. gflops=..
 *   sgemm M=.. N=.. K=.. b=row|trans threads=T ms=.. gflops=..   (OpenBLAS) */
#define _POSIX_C_SOURCE 200809L /* nanosleep */
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "gemm_f32.h"
#ifdef CIRCC_BENCH_OPENBLAS
#include <cblas.h>
#endif

typedef struct Shape {
  int64_t M, N, K;
  int btrans; /* B given as N x K (b_k = 1), e.g. a tied unembedding */
} Shape;

/* --cpu: the process's CPU time instead of wall time, which a shared machine's
 * other work inflates (meaningful with one thread: OMP_NUM_THREADS=1). */
static int cpu_time;
static double now(void) {
  if (!cpu_time) return omp_get_wtime();
  struct timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static float *alloc_floats(int64_t n) {
  float *p = aligned_alloc(64, (size_t)((n * 4 + 63) / 64 * 64));
  if (!p) {
    fprintf(stderr, "out of memory\n");
    exit(1);
  }
  return p;
}

/* One product with `threads` threads, each computing a contiguous range of
 * rows (whole 8-row tiles) or, with by_cols, of columns (whole 48-column
 * panels), as a generated program may split it; results are bit-identical. */
static void run(const Shape *s, int threads, int by_cols, int packed, const float *A, const float *B, float *C,
                float **scratch) {
  int64_t b_k = s->btrans ? 1 : s->N, b_n = s->btrans ? s->K : 1;
#pragma omp parallel num_threads(threads)
  {
    int t = omp_get_thread_num(), nt = omp_get_num_threads();
    int64_t m0 = 0, m1 = s->M, n0 = 0, n1 = s->N;
    if (!by_cols) {
      int64_t tiles = (s->M + 7) / 8;
      m0 = tiles * t / nt * 8, m1 = tiles * (t + 1) / nt * 8;
      if (m1 > s->M) m1 = s->M;
    } else {
      int64_t panels = (s->N + 47) / 48;
      n0 = panels * t / nt * 48, n1 = panels * (t + 1) / nt * 48;
      if (n1 > s->N) n1 = s->N;
    }
    if (m0 < m1 && n0 < n1) {
      if (packed)
        circc_gemm_f32_packed_rows(m0, m1, n0, n1, s->N, s->K, A, s->K, 1, B, C, s->N, 1, scratch[t]);
      else
        circc_gemm_f32_rows(m0, m1, n1 - n0, s->K, A, s->K, 1, B + n0 * b_n, b_k, b_n, C + n0, s->N, 1, scratch[t]);
    }
  }
}

/* Best seconds per product over `reps` measurements of f(s, ctx), each
 * repeating it until it takes ~0.05 s. */
typedef void (*Product)(const Shape *s, void *ctx);
static double measure(Product f, const Shape *s, void *ctx, int reps) {
  int inner = 1;
  for (;;) {
    double t0 = now();
    for (int r = 0; r < inner; r++) f(s, ctx);
    if (now() - t0 > 0.05 || inner > (1 << 20)) break;
    inner *= 2;
  }
  double best = 1e30;
  for (int r = 0; r < reps; r++) {
    double t0 = now();
    for (int q = 0; q < inner; q++) f(s, ctx);
    double dt = (now() - t0) / inner;
    if (dt < best) best = dt;
  }
  return best;
}

/* B is Bs[next % nb]: one matrix (hot caches) or, with --cold, so many
 * distinct copies that each product reads its B from memory, as a program
 * whose weights exceed the caches does. */
typedef struct Operands {
  const float *A, *const *Bs;
  float *C, **scratch;
  int threads, by_cols, nb, next, packed; /* packed: Bs are pre-packed (circc_gemm_pack_b) */
} Operands;

static void run_circc(const Shape *s, void *ctx) {
  Operands *o = ctx;
  run(s, o->threads, o->by_cols, o->packed, o->A, o->Bs[o->next++ % o->nb], o->C, o->scratch);
}

#ifdef CIRCC_BENCH_OPENBLAS
static void run_openblas(const Shape *s, void *ctx) {
  Operands *o = ctx;
  cblas_sgemm(CblasRowMajor, CblasNoTrans, s->btrans ? CblasTrans : CblasNoTrans, (int)s->M, (int)s->N, (int)s->K,
              1.0f, o->A, (int)s->K, o->Bs[o->next++ % o->nb], s->btrans ? (int)s->K : (int)s->N, 0.0f, o->C, (int)s->N);
}

/* Lets the idle workers of the other thread pool (OpenMP's, OpenBLAS's) stop
 * spinning before the next measurement. */
static void settle(void) {
  struct timespec ts = {0, 100 * 1000 * 1000};
  nanosleep(&ts, NULL);
}
#endif

int main(int argc, char **argv) {
  int reps = 20, maxt = omp_get_max_threads();
  double cold_bytes = 0; /* --cold: the B copies together take at least this many bytes */
  Shape only[16];        /* --shape: these instead of the GPT-2 list */
  int nonly = 0;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--reps") && i + 1 < argc) {
      reps = atoi(argv[++i]);
    } else if (!strcmp(argv[i], "--cpu")) {
      cpu_time = 1;
    } else if (!strcmp(argv[i], "--cold") && i + 1 < argc) {
      cold_bytes = atof(argv[++i]) * (1 << 20);
    } else if (!strcmp(argv[i], "--shape") && i + 1 < argc && nonly < 16) {
      long long m, n, k;
      char t = 'r';
      if (sscanf(argv[++i], "%lldx%lldx%lld%c", &m, &n, &k, &t) < 3 || m < 1 || n < 1 || k < 1) {
        fprintf(stderr, "%s: --shape MxNxK or MxNxKt (B transposed), not '%s'\n", argv[0], argv[i]);
        return 2;
      }
      only[nonly++] = (Shape){m, n, k, t == 't'};
    } else {
      fprintf(stderr, "usage: %s [--reps R] [--cpu] [--cold MIB] [--shape MxNxK[t]]...\n", argv[0]);
      return 2;
    }
  }
  static const Shape all[] = {
      {64, 768, 768, 0},  {64, 2304, 768, 0},  {64, 3072, 768, 0},  {64, 768, 3072, 0},
      {256, 768, 768, 0}, {256, 2304, 768, 0}, {256, 768, 3072, 0}, {1024, 768, 768, 0},
      {64, 768, 768, 1},  {1, 2304, 768, 0},   {1, 768, 3072, 0},   {1, 50257, 768, 1},
      {1, 50257, 768, 0}, {64, 50257, 768, 1},
  };
  printf("isa=%s mr=%d nr=%d kc=%d threads=%d b=%s\n", CIRCC_GEMM_ISA, CIRCC_GEMM_MR, CIRCC_GEMM_NR, CIRCC_GEMM_KC, maxt,
         cold_bytes > 0 ? "cold" : "hot");
#ifdef CIRCC_BENCH_OPENBLAS
  /* openblas_get_parallel: 0 sequential, 1 pthreads, 2 OpenMP */
  static const char *const variants[] = {"sequential", "pthread", "openmp"};
  int par = openblas_get_parallel();
  printf("openblas config=\"%s\" core=%s variant=%s\n", openblas_get_config(), openblas_get_corename(),
         par >= 0 && par <= 2 ? variants[par] : "unknown");
#endif
  const Shape *shapes = nonly ? only : all;
  size_t nshapes = nonly ? (size_t)nonly : sizeof all / sizeof all[0];
  for (size_t si = 0; si < nshapes; si++) {
    const Shape *s = &shapes[si];
    float *A = alloc_floats(s->M * s->K), *C = alloc_floats(s->M * s->N);
    for (int64_t i = 0; i < s->M * s->K; i++) A[i] = (float)((i * 7 % 13) - 6) * 0.01f;
    int nb = (int)(cold_bytes / (4.0 * (double)(s->K * s->N))) + 1;
    float **Bs = malloc(sizeof(float *) * (size_t)nb * 2), **Ws = Bs + nb;
    int64_t b_k = s->btrans ? 1 : s->N, b_n = s->btrans ? s->K : 1;
    for (int c = 0; c < nb; c++) {
      Bs[c] = alloc_floats(s->K * s->N);
      for (int64_t i = 0; i < s->K * s->N; i++) Bs[c][i] = (float)((i * 5 % 11) - 5) * 0.01f;
      Ws[c] = alloc_floats(circc_gemm_packed_b_floats(s->N, s->K));
      circc_gemm_pack_b(Bs[c], b_k, b_n, s->N, s->K, Ws[c]);
    }
    float *scratch[64];
    for (int t = 0; t < maxt && t < 64; t++) scratch[t] = alloc_floats(circc_gemm_scratch_floats(s->N, s->K));
    double flops = 2.0 * (double)s->M * (double)s->N * (double)s->K;
    const char *bname = s->btrans ? "trans" : "row";
    /* 1 thread, then all threads splitting rows, then columns */
    int nt = maxt < 64 ? maxt : 64, runs = nt > 1 ? 3 : 1;
    for (int ri = 0; ri < runs * 2; ri++) {
      int packed = ri >= runs, r = ri % runs;
      Operands o = {A, (const float *const *)(packed ? Ws : Bs), C, scratch, r == 0 ? 1 : nt, r == 2, nb, 0, packed};
      double best = measure(run_circc, s, &o, reps);
      printf("gemm M=%lld N=%lld K=%lld b=%s threads=%d split=%s ms=%.4f gflops=%.1f\n", (long long)s->M,
             (long long)s->N, (long long)s->K, packed ? "packed" : bname, o.threads, o.by_cols ? "cols" : "rows",
             best * 1e3, flops / best * 1e-9);
      fflush(stdout);
    }
#ifdef CIRCC_BENCH_OPENBLAS
    for (int ri = 0; ri < (nt > 1 ? 2 : 1); ri++) {
      Operands o = {A, (const float *const *)Bs, C, scratch, ri == 0 ? 1 : nt, 0, nb, 0, 0};
      openblas_set_num_threads(o.threads);
      settle();
      double best = measure(run_openblas, s, &o, reps);
      printf("sgemm M=%lld N=%lld K=%lld b=%s threads=%d ms=%.4f gflops=%.1f\n", (long long)s->M, (long long)s->N,
             (long long)s->K, bname, o.threads, best * 1e3, flops / best * 1e-9);
      fflush(stdout);
    }
    settle();
#endif
    for (int t = 0; t < maxt && t < 64; t++) free(scratch[t]);
    for (int c = 0; c < nb; c++) free(Bs[c]), free(Ws[c]);
    free(Bs), free(A), free(C);
  }
  return 0;
}
