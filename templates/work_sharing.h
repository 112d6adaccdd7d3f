/* work_sharing.h — how a step of a generated program shares its units of work
 * out over the team, with stealing (the steps that stream their weights once:
 * GEMMs of 1 to 4 rows, i.e. decode).
 *
 * A step's units [0, total) start as one contiguous range per thread, as in a
 * static schedule: thread v owns [total*v/nt, total*(v+1)/nt). A thread takes
 * chunks from the front of its own range (a quarter of what is left there, at
 * least `grain` units) and, once that is empty, half of what is left at the
 * back of another thread's range. So a thread the host slows down (a core
 * shared with another process, a sibling vCPU) hands its tail to the others
 * instead of holding the team at the phase's barrier, while on a quiet machine
 * each thread still streams its own contiguous part of the weights. A unit
 * computes the same thing whichever thread takes it: the bits never depend on
 * the split.
 *
 * claims[v * stride + slot] is thread v's word for the step numbered `slot`:
 * the units taken from the front of v's range (low 32 bits) and from its back
 * (high 32 bits). The caller zeroes the words before the step runs, once per
 * step. The words need only be atomic, not ordered: the barrier after the
 * step orders the units' writes. total must be below 2^32. */
#ifndef CIRCC_WORK_SHARING_H
#define CIRCC_WORK_SHARING_H
#include <stdint.h>

/* Thread `me` of `nt` takes its next chunk of the step's units: sets
 * [*u0, *u1) and returns 1, or returns 0 when no unit is left to take. */
static inline __attribute__((unused)) int circc_take_units(uint64_t *claims, int64_t stride, int64_t slot, int64_t me,
                                                           int64_t nt, int64_t total, int64_t grain, int64_t *u0,
                                                           int64_t *u1) {
  for (int64_t k = 0; k < nt; k++) {
    const int64_t v = (me + k) % nt, lo = total * v / nt, len = total * (v + 1) / nt - lo;
    uint64_t *const word = &claims[v * stride + slot];
    uint64_t old = __atomic_load_n(word, __ATOMIC_RELAXED);
    for (;;) {
      const int64_t front = (int64_t)(old & 0xffffffffu), back = (int64_t)(old >> 32), left = len - front - back;
      if (left <= 0) break;
      int64_t n = k ? (left + 1) / 2 : (left + 3) / 4;
      n = n < grain ? grain : n;
      n = n > left ? left : n;
      const uint64_t taken = k ? (uint64_t)n << 32 : (uint64_t)n;
      if (__atomic_compare_exchange_n(word, &old, old + taken, 1, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
        *u0 = k ? lo + len - back - n : lo + front;
        *u1 = *u0 + n;
        return 1;
      }
    }
  }
  return 0;
}

#endif
