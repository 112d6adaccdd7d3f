/* test_reduce.c — runtime/rt_reduce.c without MPI: the split of C chunks
 * between R ranks, and the combination of the ranks' shares (simulated here
 * rank by rank, their packed contributions concatenated as the gathers do)
 * against rt_moments.h's rt_sums over all chunks in one process: the same
 * bits for the tree's total and the jackknife groups, for every C up to 70
 * and more, every R up to 9 and R > C, with values whose sum depends on the
 * order of the additions. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "rt_reduce.h"

enum { LEN = 3 };

/* Chunk c's partials: magnitudes from 2^-20 to 2^40 and both signs, so that
 * a different bracketing changes the rounding. */
static void chunk_values(int64_t c, double *v) {
  uint64_t h = (uint64_t)c * 0x9e3779b97f4a7c15ull + 12345;
  for (int e = 0; e < LEN; e++) {
    h ^= h >> 29, h *= 0xbf58476d1ce4e5b9ull, h ^= h >> 32;
    double u = (double)(h >> 11) * 0x1.0p-53 - 0.5;
    v[e] = ldexp(u, (int)(h % 61) - 20);
  }
}

/* The single process: rt_sums over every chunk. */
static void reference(int64_t nsamples, int ngroups, double *total, double *groups, int *kept) {
  rt_sums s;
  cr_assert(rt_sums_init(&s, LEN, nsamples, ngroups));
  for (int64_t c = 0; c < s.nchunks; c++) {
    chunk_values(c, s.partial);
    rt_sums_end_chunk(&s);
  }
  rt_sums_total(&s, total);
  *kept = s.ngroups;
  if (s.ngroups) memcpy(groups, s.groups, sizeof(double) * LEN * (size_t)s.ngroups);
  rt_sums_free(&s);
}

/* R simulated ranks, their contributions concatenated in rank order, combined. */
static void ranks(int64_t nsamples, int ngroups, int size, double *total, double *groups) {
  double *nodes = NULL, *jk = NULL;
  int64_t nn = 0, nj = 0, next = 0;
  int kept = 0;
  for (int r = 0; r < size; r++) {
    rt_share s;
    cr_assert(rt_share_init(&s, LEN, nsamples, ngroups, r, size));
    cr_assert_eq(s.first, next, "ranks' ranges must tile the chunks");
    cr_assert(s.end >= s.first && (r > 0 || s.end > s.first), "rank 0 has at least one chunk");
    next = s.end;
    for (int64_t c = s.first; c < s.end; c++) {
      chunk_values(c, s.partial);
      cr_assert(rt_share_end_chunk(&s));
    }
    nodes = realloc(nodes, sizeof(double) * (size_t)(nn + s.nnodes + 1));
    jk = realloc(jk, sizeof(double) * (size_t)(nj + s.njk + 1));
    if (s.nnodes) memcpy(nodes + nn, s.nodes, sizeof(double) * (size_t)s.nnodes);
    if (s.njk) memcpy(jk + nj, s.jk, sizeof(double) * (size_t)s.njk);
    nn += s.nnodes, nj += s.njk, kept = s.ngroups;
    rt_share_free(&s);
  }
  int64_t nchunks = (nsamples + RT_CHUNK - 1) / RT_CHUNK;
  cr_assert_eq(next, nchunks);
  cr_assert(rt_share_combine_tree(LEN, nchunks, nodes, nn, total), "C=%lld R=%d", (long long)nchunks, size);
  if (kept) cr_assert(rt_share_combine_groups(LEN, nchunks, kept, jk, nj, groups), "C=%lld R=%d", (long long)nchunks, size);
  free(nodes), free(jk);
}

Test(reduce, ranks_give_the_single_process_bits) {
  static const int64_t MORE[] = {100, 127, 128, 129, 255, 1000};
  for (int k = 0; k < 70 + (int)(sizeof MORE / sizeof *MORE); k++) {
    int64_t nchunks = k < 70 ? k + 1 : MORE[k - 70], nsamples = nchunks * RT_CHUNK - (nchunks % 3) * 7;
    for (int g = 0; g < 3; g++) {
      int ngroups = (int[]){0, RT_MAX_JACKKNIFE, 3}[g], kept;
      double want[LEN], want_groups[RT_MAX_JACKKNIFE * LEN];
      reference(nsamples, ngroups, want, want_groups, &kept);
      for (int size = 1; size <= 10; size++) {
        int r = size == 10 ? (int)nchunks + 3 : size;   /* more ranks than chunks */
        double got[LEN], got_groups[RT_MAX_JACKKNIFE * LEN];
        ranks(nsamples, ngroups, r, got, got_groups);
        cr_assert(!memcmp(got, want, sizeof want), "C=%lld R=%d: total %a, one process %a", (long long)nchunks, r,
                  got[0], want[0]);
        cr_assert(!kept || !memcmp(got_groups, want_groups, sizeof(double) * LEN * (size_t)kept),
                  "C=%lld R=%d G=%d: jackknife groups differ", (long long)nchunks, r, kept);
      }
    }
  }
}

/* The values are order-sensitive: summing the chunks left to right gives
 * other bits than the tree for some C, so the test above can fail. */
Test(reduce, the_values_depend_on_the_order) {
  int differ = 0;
  for (int64_t nchunks = 3; nchunks <= 70; nchunks++) {
    double tree[LEN], g[1], left[LEN] = {0}, v[LEN];
    int kept;
    reference(nchunks * RT_CHUNK, 0, tree, g, &kept);
    for (int64_t c = 0; c < nchunks; c++) {
      chunk_values(c, v);
      for (int e = 0; e < LEN; e++) left[e] += v[e];
    }
    differ += memcmp(tree, left, sizeof tree) != 0;
  }
  cr_assert_gt(differ, 10);
}

/* ceil(r*C/R): 16 chunks over 3 ranks are 6, 5, 5; over 20 ranks rank 0 has one and the last ones none. */
Test(reduce, share_range) {
  int64_t first, end;
  rt_share_range(1000, 1, 3, &first, &end);
  cr_expect(first == 6 && end == 11, "[%lld, %lld)", (long long)first, (long long)end);
  rt_share_range(1000, 2, 3, &first, &end);
  cr_expect(first == 11 && end == 16);
  rt_share_range(1000, 0, 20, &first, &end);
  cr_expect(first == 0 && end == 1);
  rt_share_range(1000, 19, 20, &first, &end);
  cr_expect(first == 16 && end == 16);
  /* no overflow at the largest sample count */
  rt_share_range(INT64_MAX, 99999, 100000, &first, &end);
  cr_expect(end == INT64_MAX / RT_CHUNK + 1 && first < end);
}
