/* rt_reduce_mpi.c — the MPI transport of rt_reduce.h, compiled only into
 * programs built with circc --mpi (mpicc, -DCIRCC_MPI). Only the main thread
 * calls MPI (MPI_THREAD_FUNNELED); OpenMP threads work inside each rank.
 * Collectives move doubles and integers only; every sum of doubles is done by
 * rt_reduce.c in the single-process order, never by MPI_Allreduce. */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L   /* dup, dup2 */
#endif
#include <fcntl.h>
#include <limits.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "rt_core.h"
#include "rt_reduce.h"

static int rank, size = 1, saved_stderr = -1;

/* FNV-1a over s and its terminating zero. */
static uint64_t hash_str(uint64_t h, const char *s) {
  do h = (h ^ (unsigned char)*s) * 0x100000001b3ull;
  while (*s++);
  return h;
}

/* The program and its arguments; argv[0] is left out (the path may differ between hosts). */
static uint64_t run_hash(const rt_model *m, int argc, char **argv) {
  uint64_t h = hash_str(hash_str(hash_str(0xcbf29ce484222325ull, m->circc_version), m->command_line), m->source_hash);
  for (int i = 1; i < argc; i++) h = hash_str(h, argv[i]);
  return h;
}

int rt_reduce_start(const rt_model *m, const char *prog, int argc, char **argv) {
  int provided;
  MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  if (rank > 0) {   /* rank 0 alone prints; the others' usage errors would be copies of its own */
    int null = open("/dev/null", O_WRONLY);
    if (!freopen("/dev/null", "w", stdout)) fclose(stdout);
    if (null >= 0) saved_stderr = dup(2), dup2(null, 2), close(null);
  }
  uint64_t mine = run_hash(m, argc, argv);
  uint64_t *all = malloc((size_t)size * sizeof *all);
  if (!all) {
    rt_error(prog, "out of memory");
    MPI_Abort(MPI_COMM_WORLD, RT_EXIT_BAD_INPUT);
  }
  MPI_Allgather(&mine, 1, MPI_UINT64_T, all, 1, MPI_UINT64_T, MPI_COMM_WORLD);
  int other = 0;
  for (int r = size - 1; r > 0; r--)
    if (all[r] != all[0]) other = r;
  if (other)
    rt_error(prog, "rank %d of %d runs another program or other arguments than rank 0 (hash 0x%016llx, rank 0: "
             "0x%016llx): every rank must run the same program with the same arguments", other, size,
             (unsigned long long)all[other], (unsigned long long)all[0]);
  free(all);
  return other ? RT_EXIT_USAGE : RT_EXIT_OK;
}

void rt_reduce_speak(void) {
  if (saved_stderr >= 0) dup2(saved_stderr, 2), close(saved_stderr), saved_stderr = -1;
}

int rt_reduce_rank(void) { return rank; }
int rt_reduce_size(void) { return size; }

void rt_reduce_fail(const char *prog, int code) {
  rt_reduce_speak();
  fprintf(stderr, "%s: rank %d of %d failed (see above); stopping every rank\n", prog, rank, size);
  MPI_Abort(MPI_COMM_WORLD, code);
}

int rt_reduce_finish(int code) {
  MPI_Bcast(&code, 1, MPI_INT, 0, MPI_COMM_WORLD);
  MPI_Finalize();
  return code;
}

int64_t rt_reduce_sum(int64_t x) {
  int64_t sum;
  MPI_Allreduce(&x, &sum, 1, MPI_INT64_T, MPI_SUM, MPI_COMM_WORLD);
  return sum;
}

bool rt_reduce_gather(const char *prog, const double *mine, int64_t n, bool everyone, double **all, int64_t *total) {
  int64_t *counts = malloc((size_t)size * sizeof *counts);
  int *count = malloc((size_t)size * sizeof *count), *displ = malloc((size_t)size * sizeof *displ);
  bool ok = counts && count && displ;
  if (!ok) rt_error(prog, "out of memory combining the sums");
  else MPI_Allgather(&n, 1, MPI_INT64_T, counts, 1, MPI_INT64_T, MPI_COMM_WORLD);
  int64_t sum = 0;
  for (int r = 0; ok && r < size; r++) {
    ok = sum <= INT_MAX - counts[r];   /* MPI counts and displacements are int */
    count[r] = (int)counts[r], displ[r] = (int)sum, sum += counts[r];
  }
  if (counts && count && displ && !ok)
    rt_error(prog, "the sums to combine exceed one MPI message (%d doubles)", INT_MAX);
  bool receive = everyone || rank == 0;
  *all = NULL, *total = 0;
  if (ok && receive && !(*all = malloc((size_t)sum * sizeof **all + 1))) {
    rt_error(prog, "out of memory combining the sums");
    ok = false;
  }
  /* a rank that cannot take part stops them all, so none waits for it */
  if (!ok) rt_reduce_fail(prog, RT_EXIT_BAD_INPUT);
  if (everyone) MPI_Allgatherv(mine, (int)n, MPI_DOUBLE, *all, count, displ, MPI_DOUBLE, MPI_COMM_WORLD);
  else MPI_Gatherv(mine, (int)n, MPI_DOUBLE, *all, count, displ, MPI_DOUBLE, 0, MPI_COMM_WORLD);
  if (receive) *total = sum;
  free(counts), free(count), free(displ);
  return true;
}
