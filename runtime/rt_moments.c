/* rt_moments.c — fixed-order sums over samples and plug-in cumulants from
 * centred moments (see rt_moments.h). Plain C and libc. */
#include "rt_moments.h"
#include <stdlib.h>
#include <string.h>

bool rt_sums_init(rt_sums *s, int64_t len, int64_t nsamples, int ngroups) {
  memset(s, 0, sizeof *s);
  s->len = len;
  s->nchunks = (nsamples + RT_CHUNK - 1) / RT_CHUNK;
  s->ngroups = ngroups < s->nchunks ? ngroups : (int)s->nchunks;
  while (((int64_t)1 << s->levels) < s->nchunks) s->levels++;
  size_t n = len > 0 ? (size_t)len : 1;
  s->partial = calloc(n, sizeof *s->partial);
  s->stack = calloc(n * (size_t)(s->levels + 1), sizeof *s->stack);
  s->groups = s->ngroups ? calloc(n * (size_t)s->ngroups, sizeof *s->groups) : NULL;
  return s->partial && s->stack && (s->groups || !s->ngroups);
}

void rt_sums_end_chunk(rt_sums *s) {
  int64_t len = s->len;
  if (s->ngroups) {
    while ((int64_t)(s->group + 1) * s->nchunks / s->ngroups <= s->chunk) s->group++;
    double *g = s->groups + (size_t)s->group * (size_t)len;
    for (int64_t e = 0; e < len; e++) g[e] += s->partial[e];
  }
  /* push a leaf; merge equal levels as a binary counter does (left + right) */
  double *right = s->partial;
  int level = 0;
  while (s->depth && s->level[s->depth - 1] == level) {
    double *left = s->stack + (size_t)(s->depth - 1) * (size_t)len;
    for (int64_t e = 0; e < len; e++) left[e] += right[e];
    right = left;
    s->depth--;
    level++;
  }
  double *top = s->stack + (size_t)s->depth * (size_t)len;
  if (right != top) memcpy(top, right, (size_t)len * sizeof *top);
  s->level[s->depth++] = level;
  memset(s->partial, 0, (size_t)len * sizeof *s->partial);
  s->chunk++;
}

void rt_sums_total(rt_sums *s, double *out) {
  int64_t len = s->len;
  memset(out, 0, (size_t)len * sizeof *out);
  if (!s->depth) return;
  memcpy(out, s->stack + (size_t)(s->depth - 1) * (size_t)len, (size_t)len * sizeof *out);
  int level = s->level[--s->depth];
  /* climb to the root: a missing right sibling is a subtree of empty chunks, +0.0 */
  for (; level < s->levels; level++) {
    if (s->depth && s->level[s->depth - 1] == level) {
      const double *left = s->stack + (size_t)(s->depth - 1) * (size_t)len;
      for (int64_t e = 0; e < len; e++) out[e] = left[e] + out[e];
      s->depth--;
    } else {
      for (int64_t e = 0; e < len; e++) out[e] = out[e] + 0.0;
    }
  }
}

void rt_sums_free(rt_sums *s) {
  free(s->partial);
  free(s->stack);
  free(s->groups);
  memset(s, 0, sizeof *s);
}

static int popcount(uint32_t x) {
  int n = 0;
  for (; x; x &= x - 1) n++;
  return n;
}

int rt_moment_subsets(int order, uint32_t *masks) {
  int n = 0;
  uint32_t all = ((uint32_t)1 << order) - 1;
  for (uint32_t b = 1; b <= all; b++)
    if (popcount(b) >= 2 && popcount(all & ~b) != 1) masks[n++] = b;
  return n;
}

/* The flat index into M_B of the element whose argument indices are a[]. */
static int64_t block_index(uint32_t mask, int order, const int64_t *numel, const int64_t *a) {
  int64_t k = 0;
  for (int i = 0; i < order; i++)
    if (mask >> i & 1) k = k * numel[i] + a[i];
  return k;
}

/* Advances the odometer a[] over the positions of mask (last fastest); false when it wraps. */
static bool next_index(uint32_t mask, int order, const int64_t *numel, int64_t *a) {
  for (int i = order - 1; i >= 0; i--) {
    if (!(mask >> i & 1)) continue;
    if (++a[i] < numel[i]) return true;
    a[i] = 0;
  }
  return false;
}

static bool empty(uint32_t mask, int order, const int64_t *numel) {
  for (int i = 0; i < order; i++)
    if ((mask >> i & 1) && numel[i] == 0) return true;
  return false;
}

void rt_moment_add(uint32_t mask, int order, const int64_t *numel, const double *const *d, double w, double *acc) {
  int64_t a[RT_MAX_ORDER] = {0};
  if (empty(mask, order, numel)) return;
  int64_t e = 0;
  do {
    double p = w;
    for (int i = 0; i < order; i++)
      if (mask >> i & 1) p *= d[i][a[i]];
    acc[e++] += p;
  } while (next_index(mask, order, numel, a));
}

/* One singleton-free partition: its blocks' moment indices, by increasing first element. */
typedef struct Partition {
  int nblocks;
  int moment[RT_MAX_ORDER];
  double coef;
} Partition;

/* The partition of restricted growth string rgs[0..order), or false if it has a singleton. */
static bool partition_of(const int *rgs, int order, int nmasks, const uint32_t *masks, Partition *p) {
  uint32_t block[RT_MAX_ORDER] = {0};
  int nblocks = 0;
  for (int i = 0; i < order; i++) {
    block[rgs[i]] |= (uint32_t)1 << i;
    if (rgs[i] + 1 > nblocks) nblocks = rgs[i] + 1;
  }
  p->nblocks = nblocks;
  p->coef = 1;
  for (int b = 1; b < nblocks; b++) p->coef *= -(double)b;   /* (-1)^(m-1) (m-1)! */
  for (int b = 0; b < nblocks; b++) {
    if (popcount(block[b]) < 2) return false;
    int t = 0;
    while (t < nmasks && masks[t] != block[b]) t++;
    p->moment[b] = t;
  }
  return true;
}

/* The next restricted growth string (lexicographic order); false after the last. */
static bool next_rgs(int *rgs, int order) {
  for (int i = order - 1; i > 0; i--) {
    int max = 0;
    for (int j = 0; j < i; j++)
      if (rgs[j] > max) max = rgs[j];
    if (rgs[i] <= max) {
      rgs[i]++;
      for (int j = i + 1; j < order; j++) rgs[j] = 0;
      return true;
    }
  }
  return false;
}

void rt_cumulant_from_moments(int order, const int64_t *numel, int nmasks, const uint32_t *masks,
                              const double *const *moment, double *out) {
  uint32_t all = ((uint32_t)1 << order) - 1;
  int64_t total = 1;
  for (int i = 0; i < order; i++) total *= numel[i];
  int rgs[RT_MAX_ORDER] = {0};
  bool first = true;
  do {
    Partition p;
    if (!partition_of(rgs, order, nmasks, masks, &p)) continue;
    int64_t a[RT_MAX_ORDER] = {0};
    for (int64_t e = 0; e < total; e++) {
      double term = p.coef;
      for (int b = 0; b < p.nblocks; b++) {
        uint32_t mask = masks[p.moment[b]];
        term *= moment[p.moment[b]][block_index(mask, order, numel, a)];
      }
      out[e] = first ? term : out[e] + term;
      next_index(all, order, numel, a);
    }
    first = false;
  } while (next_rgs(rgs, order));
}
