/* test_team.c — runtime/rt_team.c, the barrier between the phases of a run:
 * no thread leaves before every thread arrived, and each sees what the others
 * wrote before it, under each wait policy (spinning, sleeping at once, a
 * user's spin count) and with more threads than CPUs (threads preempted
 * while they wait: the contended path). Criterion runs each test in its own
 * process, so each sets its policy's environment before the first wait. */
#include <criterion/criterion.h>
#include <omp.h>
#include <stdlib.h>
#include <time.h>
#include "circc_rt.h"

enum { MAX_THREADS = 8, ROUNDS = 3000 };

/* Each round every thread writes its slot, waits, reads all slots (they must
 * hold this round), waits again (so no one writes the next round while
 * another still reads). Thread 0 is slow now and then, so the others wait in
 * every way: spinning, then sleeping. Returns the rounds that went wrong. */
static int rounds_with_a_team(int nthreads) {
  static volatile int slot[MAX_THREADS];
  rt_barrier barrier = {0, 0, 0};
  int bad = 0;
  #pragma omp parallel num_threads(nthreads) reduction(+ : bad)
  {
    const int me = omp_get_thread_num(), nt = omp_get_num_threads();
    for (int r = 1; r <= ROUNDS; r++) {
      if (me == 0 && r % 500 == 0) {
        struct timespec pause = {0, 2 * 1000 * 1000}; /* 2 ms: past the spin */
        nanosleep(&pause, NULL);
      }
      slot[me] = r;
      rt_barrier_wait(&barrier, nt);
      for (int t = 0; t < nt; t++) bad += slot[t] != r;
      rt_barrier_wait(&barrier, nt);
    }
  }
  cr_assert_eq(barrier.arrived, 0u, "no thread is left counted as arrived");
  cr_assert_eq(barrier.generation, (unsigned)(2 * ROUNDS * (nthreads > 1)), "one generation per barrier");
  return bad;
}

Test(team, the_default_policy_holds_every_thread) {
  unsetenv("OMP_WAIT_POLICY");
  unsetenv("GOMP_SPINCOUNT");
  cr_assert_eq(rounds_with_a_team(2), 0);
  cr_assert_eq(rounds_with_a_team(1), 0, "a team of one does not wait");
}

Test(team, more_threads_than_cpus) {
  unsetenv("OMP_WAIT_POLICY");
  unsetenv("GOMP_SPINCOUNT");
  cr_assert_eq(rounds_with_a_team(MAX_THREADS), 0);
}

Test(team, passive_sleeps_at_once) {
  setenv("OMP_WAIT_POLICY", "passive", 1);
  cr_assert_eq(rounds_with_a_team(4), 0);
}

Test(team, active_only_spins) {
  setenv("OMP_WAIT_POLICY", "ACTIVE", 1);
  cr_assert_eq(rounds_with_a_team(2), 0);
}

Test(team, a_users_spin_count) {
  unsetenv("OMP_WAIT_POLICY");
  setenv("GOMP_SPINCOUNT", "10", 1);
  cr_assert_eq(rounds_with_a_team(3), 0);
}
