/* rt_moments.h — the arithmetic of expectation programs' estimates
 * (random_variables.md §4.5–4.6), used by rt_expect.c: sums over samples in
 * an order fixed by the sample numbers alone, and plug-in cumulants from
 * centred moments. Everything is double; nothing depends on threads, on the
 * batch size or on how the samples were split into batches. */
#ifndef RT_MOMENTS_H
#define RT_MOMENTS_H
#include <stdbool.h>
#include <stdint.h>

enum {
  RT_CHUNK = 64,              /* samples per chunk: chunk c is samples [64c, 64c+64) */
  RT_MAX_JACKKNIFE = 32,      /* jackknife groups: min(32, chunks) */
  RT_MAX_ORDER = 10,          /* highest cumulant order: Bell(10) = 115975 partitions */
};

/* A vector of `len` sums over samples 0..N-1. Each sample's contributions are
 * added to `partial` (element by element, in sample order); after the last
 * sample of each chunk, rt_sums_end_chunk folds the chunk into a binary-counter
 * stack that evaluates the fixed balanced tree over the chunk count padded to a
 * power of two (empty chunks are +0.0; tree(lo,hi) = tree(lo,mid) + tree(mid,hi),
 * mid = lo + (hi-lo)/2), and into its jackknife group's partial: group j holds
 * chunks [j*C/G, (j+1)*C/G), summed in chunk order from +0.0. */
typedef struct rt_sums {
  int64_t len;                /* sums per sample */
  int64_t nchunks;            /* C = ceil(N / 64) */
  int64_t chunk;              /* chunks folded so far */
  int ngroups;                /* G jackknife groups, 0 for none */
  int group;                  /* the group of the next chunk */
  int depth, levels;          /* stack entries in use; log2 of C padded to a power of two */
  int level[65];              /* tree level of each stack entry */
  double *partial;            /* [len] the chunk being filled; callers add into it */
  double *stack;              /* [levels + 1][len] */
  double *groups;             /* [G][len] jackknife group partials, or NULL */
} rt_sums;

/* For N >= 1 samples with ngroups jackknife groups (0: none; else
 * min(ngroups, C) are kept). False if out of memory (then rt_sums_free). */
bool rt_sums_init(rt_sums *s, int64_t len, int64_t nsamples, int ngroups);
/* Folds `partial` (then zeroed) into the tree and its group. */
void rt_sums_end_chunk(rt_sums *s);
/* The tree's value after every chunk was folded, into out[len]. */
void rt_sums_total(rt_sums *s, double *out);
void rt_sums_free(rt_sums *s);

/* The argument subsets (bit i: argument position i) whose centred moments
 * M_B a cumulant of `order` >= 2 needs: the blocks of its singleton-free set
 * partitions, i.e. |B| >= 2 with a complement that is not a single argument.
 * Stores them in increasing mask order (masks needs 2^order entries) and
 * returns their count. */
int rt_moment_subsets(int order, uint32_t *masks);

/* Adds one sample's contribution to M_B: acc[e] += w * d[i1][a_i1] * d[i2][a_i2] ...
 * (left to right over B's positions in increasing order), for every element e
 * of the tensor whose axes are B's arguments' elements in position order
 * (last fastest). numel[i] and d[i] (the centred values x_i - m_i) are per
 * argument position. */
void rt_moment_add(uint32_t mask, int order, const int64_t *numel, const double *const *d, double w, double *acc);

/* The plug-in joint cumulant from centred moments (already divided by the
 * total weight): K[e] = sum over singleton-free partitions pi, in
 * restricted-growth-string order, of ((c_pi * M_B1[e_B1]) * M_B2[e_B2]) ...
 * with c_pi = (-1)^(|pi|-1) (|pi|-1)! and blocks by increasing first element;
 * e indexes the arguments' elements in position order (last fastest).
 * moment[t] is M_{masks[t]} for the nmasks subsets of rt_moment_subsets. */
void rt_cumulant_from_moments(int order, const int64_t *numel, int nmasks, const uint32_t *masks,
                              const double *const *moment, double *out);
#endif
