/* test_work_sharing.c — templates/work_sharing.h: every unit of a step is taken
 * exactly once whatever order the threads come in, a thread takes its own
 * range front first in chunks of at least `grain`, and a thread whose work is
 * done takes the back of a late thread's range. Sequential schedules (one
 * caller standing in for each thread in turn) make the uneven cases exact; an
 * OpenMP team checks the atomics. */
#include <criterion/criterion.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "testutil.h"
#include "work_sharing.h"

enum { STRIDE = 8, SLOT = 3 };

/* Thread me's range [lo, hi) of total units among nt. */
static void range_of(int64_t me, int64_t nt, int64_t total, int64_t *lo, int64_t *hi) {
  *lo = total * me / nt;
  *hi = total * (me + 1) / nt;
}

/* Callers in the order tu_rand64 picks (thread `late` only once every other
 * is out of work, when late >= 0): every unit must be taken once, and each
 * chunk must be in bounds, at least grain long unless it ends a range, and
 * the front chunks of a thread's own range must come in order. */
static void check_schedule(int64_t nt, int64_t total, int64_t grain, int64_t late) {
  uint64_t claims[8 * STRIDE] = {0};
  int *seen = calloc((size_t)total + 1, sizeof *seen);
  int64_t next_front[8], done[8] = {0}, alive = nt;
  cr_assert(nt <= 8 && seen);
  for (int64_t t = 0; t < nt; t++) next_front[t] = total * t / nt;
  while (alive) {
    int64_t me = (int64_t)(tu_rand64() % (uint64_t)nt);
    if (done[me] || (me == late && alive > 1)) continue;
    int64_t u0, u1;
    if (!circc_take_units(claims, STRIDE, SLOT, me, nt, total, grain, &u0, &u1)) {
      done[me] = 1;
      alive--;
      continue;
    }
    cr_assert(0 <= u0 && u0 < u1 && u1 <= total, "chunk [%lld, %lld) of %lld", (long long)u0, (long long)u1,
              (long long)total);
    int64_t lo, hi, owner = -1;
    for (int64_t v = 0; v < nt; v++) {
      range_of(v, nt, total, &lo, &hi);
      if (lo <= u0 && u0 < hi) owner = v;
    }
    range_of(owner, nt, total, &lo, &hi);
    cr_assert(u1 <= hi, "a chunk crosses the end of thread %lld's range", (long long)owner);
    if (owner == me) {
      cr_assert_eq(u0, next_front[me], "thread %lld's own chunks come front first", (long long)me);
      next_front[me] = u1;
    }
    for (int64_t u = u0; u < u1; u++) seen[u]++;
    int64_t rest_after = 0; /* units of the range not yet taken after this chunk: none means it may be short */
    for (int64_t u = lo; u < hi; u++) rest_after += !seen[u];
    cr_assert(u1 - u0 >= grain || rest_after == 0, "a chunk of %lld < grain %lld with %lld units left",
              (long long)(u1 - u0), (long long)grain, (long long)rest_after);
  }
  for (int64_t u = 0; u < total; u++) cr_assert_eq(seen[u], 1, "unit %lld taken %d times", (long long)u, seen[u]);
  free(seen);
}

Test(work_sharing, every_unit_once_in_any_order) {
  tu_seed(7);
  const int64_t totals[] = {0, 1, 2, 3, 5, 16, 48, 97, 1048};
  for (int64_t nt = 1; nt <= 5; nt++)
    for (size_t i = 0; i < sizeof totals / sizeof *totals; i++)
      for (int64_t grain = 1; grain <= 6; grain += 2)
        for (int rep = 0; rep < 4; rep++) check_schedule(nt, totals[i], grain, rep % 2 ? nt - 1 : -1);
}

/* One thread never comes (descheduled for the whole step): thread 0 alone
 * takes its own range front first, then all of the others' from their backs. */
Test(work_sharing, a_thread_alone_takes_everything) {
  for (int64_t nt = 2; nt <= 4; nt++) {
    uint64_t claims[4 * STRIDE] = {0};
    const int64_t total = 100;
    int64_t u0, u1, at = 0, own_end = total / nt, chunks = 0;
    while (at < own_end && circc_take_units(claims, STRIDE, SLOT, 0, nt, total, 1, &u0, &u1)) {
      cr_assert_eq(u0, at);
      at = u1;
      chunks++;
    }
    cr_assert_eq(at, own_end);
    cr_assert_gt(chunks, 2, "the own range comes in several chunks (a quarter of the rest each), not at once");
    /* thread 1's range from its back: half of what is left, then half again */
    int64_t lo, hi;
    range_of(1, nt, total, &lo, &hi);
    cr_assert(circc_take_units(claims, STRIDE, SLOT, 0, nt, total, 1, &u0, &u1));
    cr_assert_eq(u1, hi, "a steal takes the back of the range");
    cr_assert_eq(u1 - u0, (hi - lo + 1) / 2, "a steal takes half of what is left");
    int64_t taken = u1 - u0;
    while (circc_take_units(claims, STRIDE, SLOT, 0, nt, total, 1, &u0, &u1)) taken += u1 - u0;
    cr_assert_eq(taken, total - own_end, "thread 0 took every other unit");
    /* the late thread then finds nothing, and neither does anyone else */
    for (int64_t t = 0; t < nt; t++) cr_assert_eq(circc_take_units(claims, STRIDE, SLOT, t, nt, total, 1, &u0, &u1), 0);
  }
}

/* Other slots' words are left alone: steps of one phase do not interfere. */
Test(work_sharing, slots_are_independent) {
  uint64_t claims[2 * STRIDE] = {0};
  int64_t u0, u1;
  while (circc_take_units(claims, STRIDE, SLOT, 0, 2, 40, 1, &u0, &u1)) {
  }
  for (int64_t s = 0; s < STRIDE; s++)
    for (int64_t t = 0; t < 2; t++) cr_assert_eq(claims[t * STRIDE + s] != 0, s == SLOT);
  cr_assert(circc_take_units(claims, STRIDE, SLOT + 1, 1, 2, 40, 1, &u0, &u1));
  cr_assert_eq(u0, 20);
}

/* A real team, thread 0 late: each unit is computed once, and the others
 * take thread 0's range (it arrives after the work is gone). */
Test(work_sharing, an_openmp_team_with_a_late_thread) {
  enum { TOTAL = 20000, NT = 4 };
  static int count[TOTAL];
  static uint64_t claims[NT * STRIDE];
  memset(count, 0, sizeof count);
  memset(claims, 0, sizeof claims);
  int64_t by_thread0 = -1;
  #pragma omp parallel num_threads(NT)
  {
    const int64_t me = omp_get_thread_num(), nt = omp_get_num_threads();
    if (me == 0) nanosleep(&(struct timespec){0, 200 * 1000 * 1000}, NULL);
    int64_t u0, u1, mine = 0;
    while (circc_take_units(claims, STRIDE, SLOT, me, nt, TOTAL, 4, &u0, &u1))
      for (int64_t u = u0; u < u1; u++) {
        #pragma omp atomic
        count[u]++;
        mine++;
      }
    if (me == 0) by_thread0 = mine;
  }
  for (int u = 0; u < TOTAL; u++) cr_assert_eq(count[u], 1, "unit %d computed %d times", u, count[u]);
  cr_assert_lt(by_thread0, TOTAL / NT, "the others took part of the late thread's range (it did %lld)",
               (long long)by_thread0);
}
