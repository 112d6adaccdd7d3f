/* rt_reduce.h — how an expectation program (rt_expect.c) shares its samples
 * between processes and combines their sums into the bits one process
 * computes (random_variables.md §4.5, §4.8).
 *
 * The split: of the C = ceil(N / 64) chunks of rt_moments.h, rank r of R sums
 * chunks [ceil(r*C/R), ceil((r+1)*C/R)) of the same sample stream (rank 0
 * always has one; ranks past C have none). A rank's range is cut into the
 * maximal aligned subtrees of rt_moments.h's tree (at most 2 log2 C of them),
 * each summed with an rt_sums of its own, so each is the value the single
 * process computes for that subtree; the combination then evaluates the top of
 * the tree over the subtrees of every rank, an empty subtree being +0.0, in
 * the single-process order. Jackknife groups (a chunk-order sum from +0.0)
 * continue across ranks: a rank sends the running sum of each group that
 * starts in its range and the single chunk partials of a group that started
 * earlier; rank 0 adds them in chunk order. So every rank count gives the same
 * bits as one process.
 *
 * The transport (the rt_reduce_* functions) is rt_reduce_mpi.c when the
 * program is built with circc --mpi (CIRCC_MPI), else the one-process version
 * at the end of rt_reduce.c; nothing else in the runtime knows which. */
#ifndef RT_REDUCE_H
#define RT_REDUCE_H
#include <stdbool.h>
#include <stdint.h>
#include "circc_rt.h"
#include "rt_moments.h"

/* ---- the transport ---- */

/* Joins the run (MPI_Init; ranks other than 0 print nothing on stdout, and
 * nothing on stderr until rt_reduce_speak) and checks that every rank runs
 * the same program (version, command line, source hash) with the same
 * arguments (argv[1..], compared as a 64-bit hash). Returns RT_EXIT_OK, or
 * RT_EXIT_USAGE on every rank after rank 0 named a rank that differs. The
 * one-process build refuses (RT_EXIT_USAGE) to run as one of several copies
 * that mpirun started. */
int rt_reduce_start(const rt_model *m, const char *prog, int argc, char **argv);
/* From here on every rank's messages are shown (its faults may be its own). */
void rt_reduce_speak(void);
int rt_reduce_rank(void);
int rt_reduce_size(void);
/* A rank failed after printing why: with MPI, says which rank and stops every
 * rank (MPI_Abort with `code`); with one process, returns. */
void rt_reduce_fail(const char *prog, int code);
/* The end of the run: every rank returns rank 0's code (MPI_Finalize). */
int rt_reduce_finish(int code);
/* Concatenates every rank's n doubles in rank order into *all (malloc'd,
 * *total doubles) on every rank (everyone) or on rank 0 (others get NULL, 0).
 * False after a message (out of memory, too large for one MPI message). */
bool rt_reduce_gather(const char *prog, const double *mine, int64_t n, bool everyone, double **all, int64_t *total);
/* The sum of every rank's x (exact: integers). */
int64_t rt_reduce_sum(int64_t x);

/* ---- the split and the combination (rt_reduce.c, no MPI) ---- */

/* Rank `rank` of `size`'s chunks of nsamples samples: [*first, *end). */
void rt_share_range(int64_t nsamples, int rank, int size, int64_t *first, int64_t *end);

/* One rank's part of a vector of `len` sums over the samples (rt_sums for a
 * range of chunks). Callers add each sample's contributions to `partial`, in
 * sample order, and call rt_share_end_chunk after each chunk's last sample. */
typedef struct rt_share {
  int64_t len, nchunks;       /* sums per sample; C */
  int64_t first, end, chunk;  /* this rank's chunks and the next one to fold */
  int ngroups, group;         /* jackknife groups (0: none) and the group of the next chunk */
  double *partial;            /* [len] the chunk being filled (moves after rt_share_end_chunk) */
  rt_sums node;               /* the subtree being summed */
  int64_t node_end;           /* its last chunk + 1 */
  double *nodes, *jk;         /* packed contributions: [lo, hi, len sums]..., [kind, index, len sums]... */
  int64_t nnodes, njk, cap_nodes, cap_jk;   /* doubles used and allocated */
} rt_share;

/* For N >= 1 samples, ngroups jackknife groups (0: none; else min(ngroups, C)
 * as rt_sums keeps). False if out of memory (then rt_share_free). */
bool rt_share_init(rt_share *s, int64_t len, int64_t nsamples, int ngroups, int rank, int size);
/* Folds `partial` (then zeroed) into its subtree and its jackknife group. */
bool rt_share_end_chunk(rt_share *s);
/* Gathers every rank's share: out[len] on every rank gets the tree's total
 * (rt_sums_total's bits); groups ([ngroups][len], rank 0, may be NULL
 * elsewhere) the jackknife group sums. Collective; false after a message. */
bool rt_share_total(rt_share *s, const char *prog, double *out, double *groups);
void rt_share_free(rt_share *s);

/* The combination, for the packed contributions of every rank concatenated
 * in rank order (rt_share_total after its gathers; tests simulate ranks):
 * the tree's total, and the jackknife groups. False if the contributions do
 * not tile the chunks (an internal error). */
bool rt_share_combine_tree(int64_t len, int64_t nchunks, const double *nodes, int64_t n, double *out);
bool rt_share_combine_groups(int64_t len, int64_t nchunks, int ngroups, const double *items, int64_t n, double *groups);
#endif
