/* gemm_bench.c — GFLOP/s of templates/gemm_f32.h on the GPT-2 small shapes
 * (M x N x K, A row-major M x K, B row-major K x N, or given as B^T: b=trans,
 * as for a tied unembedding), with 1 thread and with all OpenMP threads, each
 * computing a contiguous range of rows, then of columns (both are splits a
 * generated program may make). Built with -DCIRCC_BENCH_OPENBLAS (CMake does
 * so when it finds OpenBLAS) it also times OpenBLAS's cblas_sgemm on the same
 * operands with 1 and all threads, right after circc's runs of each shape.
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

static double now(void) { return omp_get_wtime(); }

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
static void run(const Shape *s, int threads, int by_cols, const float *A, const float *B, float *C, float **scratch) {
  int64_t b_k = s->btrans ? 1 : s->N, b_n = s->btrans ? s->K : 1;
#pragma omp parallel num_threads(threads)
  {
    int t = omp_get_thread_num(), nt = omp_get_num_threads();
    if (!by_cols) {
      int64_t tiles = (s->M + 7) / 8;
      int64_t m0 = tiles * t / nt * 8, m1 = tiles * (t + 1) / nt * 8;
      if (m1 > s->M) m1 = s->M;
      if (m0 < m1) circc_gemm_f32_rows(m0, m1, s->N, s->K, A, s->K, 1, B, b_k, b_n, C, s->N, 1, scratch[t]);
    } else {
      int64_t panels = (s->N + 47) / 48;
      int64_t n0 = panels * t / nt * 48, n1 = panels * (t + 1) / nt * 48;
      if (n1 > s->N) n1 = s->N;
      if (n0 < n1)
        circc_gemm_f32_rows(0, s->M, n1 - n0, s->K, A, s->K, 1, B + n0 * b_n, b_k, b_n, C + n0, s->N, 1, scratch[t]);
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

typedef struct Operands {
  const float *A, *B;
  float *C, **scratch;
  int threads, by_cols;
} Operands;

static void run_circc(const Shape *s, void *ctx) {
  Operands *o = ctx;
  run(s, o->threads, o->by_cols, o->A, o->B, o->C, o->scratch);
}

#ifdef CIRCC_BENCH_OPENBLAS
static void run_openblas(const Shape *s, void *ctx) {
  Operands *o = ctx;
  cblas_sgemm(CblasRowMajor, CblasNoTrans, s->btrans ? CblasTrans : CblasNoTrans, (int)s->M, (int)s->N, (int)s->K,
              1.0f, o->A, (int)s->K, o->B, s->btrans ? (int)s->K : (int)s->N, 0.0f, o->C, (int)s->N);
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
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--reps") && i + 1 < argc) {
      reps = atoi(argv[++i]);
    } else {
      fprintf(stderr, "usage: %s [--reps R]\n", argv[0]);
      return 2;
    }
  }
  static const Shape shapes[] = {
      {64, 768, 768, 0},  {64, 2304, 768, 0},  {64, 3072, 768, 0},  {64, 768, 3072, 0},
      {256, 768, 768, 0}, {256, 2304, 768, 0}, {256, 768, 3072, 0}, {1024, 768, 768, 0},
      {64, 768, 768, 1},  {1, 2304, 768, 0},   {1, 768, 3072, 0},   {1, 50257, 768, 1},
      {1, 50257, 768, 0}, {64, 50257, 768, 1},
  };
  printf("isa=%s mr=%d nr=%d kc=%d threads=%d\n", CIRCC_GEMM_ISA, CIRCC_GEMM_MR, CIRCC_GEMM_NR, CIRCC_GEMM_KC, maxt);
#ifdef CIRCC_BENCH_OPENBLAS
  /* openblas_get_parallel: 0 sequential, 1 pthreads, 2 OpenMP */
  static const char *const variants[] = {"sequential", "pthread", "openmp"};
  int par = openblas_get_parallel();
  printf("openblas config=\"%s\" core=%s variant=%s\n", openblas_get_config(), openblas_get_corename(),
         par >= 0 && par <= 2 ? variants[par] : "unknown");
#endif
  for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
    const Shape *s = &shapes[si];
    float *A = alloc_floats(s->M * s->K), *B = alloc_floats(s->K * s->N), *C = alloc_floats(s->M * s->N);
    for (int64_t i = 0; i < s->M * s->K; i++) A[i] = (float)((i * 7 % 13) - 6) * 0.01f;
    for (int64_t i = 0; i < s->K * s->N; i++) B[i] = (float)((i * 5 % 11) - 5) * 0.01f;
    float *scratch[64];
    for (int t = 0; t < maxt && t < 64; t++) scratch[t] = alloc_floats(circc_gemm_scratch_floats(s->N, s->K));
    double flops = 2.0 * (double)s->M * (double)s->N * (double)s->K;
    const char *bname = s->btrans ? "trans" : "row";
    /* 1 thread, then all threads splitting rows, then columns */
    int nt = maxt < 64 ? maxt : 64, runs = nt > 1 ? 3 : 1;
    for (int ri = 0; ri < runs; ri++) {
      Operands o = {A, B, C, scratch, ri == 0 ? 1 : nt, ri == 2};
      double best = measure(run_circc, s, &o, reps);
      printf("gemm M=%lld N=%lld K=%lld b=%s threads=%d split=%s ms=%.4f gflops=%.1f\n", (long long)s->M,
             (long long)s->N, (long long)s->K, bname, o.threads, o.by_cols ? "cols" : "rows", best * 1e3,
             flops / best * 1e-9);
      fflush(stdout);
    }
#ifdef CIRCC_BENCH_OPENBLAS
    for (int ri = 0; ri < (nt > 1 ? 2 : 1); ri++) {
      Operands o = {A, B, C, scratch, ri == 0 ? 1 : nt, 0};
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
    free(A), free(B), free(C);
  }
  return 0;
}
