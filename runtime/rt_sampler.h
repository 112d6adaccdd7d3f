/* rt_sampler.h — the counter-based sampler of expectation programs
 * (random_variables.md §4.4), header-only so that circc (group keys from Tag
 * UUIDs) and the runtime (rt_expect.c) compute the same bits. All arithmetic
 * is on uint64_t modulo 2^64; nothing depends on the platform or on threads.
 *
 *   key(Tag group)  = mix64(hi ^ mix64(lo))      hi, lo: UUID bytes 0..7, 8..15 big-endian
 *   stream(g)       = mix64(seed ^ key(g))       or mix64(N) with --group-seed g=N
 *   h(g, s)         = mix64(stream(g) + (s + 1) * GAMMA)
 *   uniform row     = (h * S) >> 64              (high half of the 128-bit product)
 *   weighted row    = smallest j with cdf[j] > (h >> 11) * 2^-53 * cdf[S-1],
 *                     else the last row of positive probability */
#ifndef RT_SAMPLER_H
#define RT_SAMPLER_H
#include <stdbool.h>
#include <stdint.h>

#define RT_GAMMA 0x9e3779b97f4a7c15ull

/* The SplitMix64 finaliser. */
static inline uint64_t rt_mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

/* key(g) of a Tag group from its UUID: 32 hex digits (either case), hyphens
 * anywhere ignored. False if uuid is not that. */
static inline bool rt_uuid_key(const char *uuid, uint64_t *key) {
  uint64_t half[2] = {0, 0};
  int digits = 0;
  for (const char *p = uuid; *p; p++) {
    int v = *p >= '0' && *p <= '9' ? *p - '0' : *p >= 'a' && *p <= 'f' ? *p - 'a' + 10
            : *p >= 'A' && *p <= 'F' ? *p - 'A' + 10 : *p == '-' ? -1 : -2;
    if (v == -2 || (v >= 0 && digits == 32)) return false;
    if (v >= 0) half[digits / 16] = half[digits / 16] << 4 | (uint64_t)v, digits++;
  }
  if (digits != 32) return false;
  *key = rt_mix64(half[0] ^ rt_mix64(half[1]));
  return true;
}

/* stream(g) for a run's --seed (a --group-seed N gives rt_mix64(N) instead). */
static inline uint64_t rt_stream_key(uint64_t seed, uint64_t key) { return rt_mix64(seed ^ key); }

/* h(g, s): the random bits of sample s (0-based) in a group's stream. */
static inline uint64_t rt_sample_bits(uint64_t stream, uint64_t s) { return rt_mix64(stream + (s + 1) * RT_GAMMA); }

/* Row of a uniform group of S rows: the high 64 bits of h * S. */
static inline int64_t rt_uniform_row(uint64_t h, int64_t size) {
  uint64_t s = (uint64_t)size, hl = h & 0xffffffffu, hh = h >> 32, sl = s & 0xffffffffu, sh = s >> 32;
  uint64_t ll = hl * sl, lh = hl * sh, hl2 = hh * sl, hh2 = hh * sh;
  uint64_t mid = (ll >> 32) + (lh & 0xffffffffu) + (hl2 & 0xffffffffu);
  return (int64_t)(hh2 + (lh >> 32) + (hl2 >> 32) + (mid >> 32));
}

/* Row of a non-uniform group: cdf[j] is the running double sum of the
 * probabilities 0..j (each converted to double first, summed in row order),
 * last_positive the last row whose probability is > 0 (for rounding at the top). */
static inline int64_t rt_weighted_row(uint64_t h, const double *cdf, int64_t size, int64_t last_positive) {
  double t = (double)(h >> 11) * 0x1.0p-53 * cdf[size - 1];
  int64_t lo = 0, hi = size;   /* cdf is non-decreasing: binary search for the first cdf[j] > t */
  while (lo < hi) {
    int64_t mid = lo + (hi - lo) / 2;
    if (cdf[mid] > t) hi = mid;
    else lo = mid + 1;
  }
  return lo < size ? lo : last_positive;
}
#endif
