/* test_wait_policy.c — how a program's threads behave (rt_wait_policy,
 * rt_barrier_policy, rt_set_threads): without OMP_WAIT_POLICY or
 * GOMP_SPINCOUNT the program runs with GOMP_SPINCOUNT=1000 (RT_SPIN_COUNT; it
 * re-executes itself once, arguments kept) and its phases' barrier adapts; a
 * user's setting is left alone and the barrier follows it. Threads that cannot be
 * started are exit 3 with a message, not libgomp's exit 1. */
#define _GNU_SOURCE /* asprintf */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>
#include "testutil.h"

Test(wait_policy, a_program_spins_briefly_unless_the_user_says_otherwise) {
  char *dir = tu_temp_dir("wait_policy"), *prog;
  cr_assert(asprintf(&prog, "%s/prog", dir) > 0);
  tu_build("'y' [2] Scalar 3\n", prog, "-O0");
  cr_assert_eq(tu_sh("env -u OMP_WAIT_POLICY -u GOMP_SPINCOUNT %s --threads 2 --info | grep -qx 'waiting:      "
                     "GOMP_SPINCOUNT=1000'", prog), 0);
  cr_assert_eq(tu_sh("env -u GOMP_SPINCOUNT OMP_WAIT_POLICY=passive %s --info | grep -qx 'waiting:      "
                     "OMP_WAIT_POLICY=passive'", prog), 0);
  cr_assert_eq(tu_sh("env -u OMP_WAIT_POLICY GOMP_SPINCOUNT=7 %s --info | grep -qx 'waiting:      GOMP_SPINCOUNT=7'",
                     prog), 0);
  /* the phases' barrier (rt_team.c) follows the same settings */
  cr_assert_eq(tu_sh("env -u OMP_WAIT_POLICY -u GOMP_SPINCOUNT %s --info | grep -qx 'barriers:     spin up to 100 us, "
                     "or 2 us while the thread.s CPU is contended, then sleep'", prog), 0);
  cr_assert_eq(tu_sh("env -u GOMP_SPINCOUNT OMP_WAIT_POLICY=passive %s --info | grep -qx 'barriers:     sleep at once "
                     "(OMP_WAIT_POLICY)'", prog), 0);
  cr_assert_eq(tu_sh("env -u GOMP_SPINCOUNT OMP_WAIT_POLICY=active %s --info | grep -qx 'barriers:     spin "
                     "(OMP_WAIT_POLICY)'", prog), 0);
  cr_assert_eq(tu_sh("env -u OMP_WAIT_POLICY GOMP_SPINCOUNT=7 %s --info | grep -qx 'barriers:     spin 7 times, then "
                     "sleep (GOMP_SPINCOUNT)'", prog), 0);
  /* the arguments survive the re-execution */
  cr_assert_eq(tu_sh("env -u OMP_WAIT_POLICY -u GOMP_SPINCOUNT %s --threads 1 | head -2 | tail -1 | grep -qx '\\[3, 3\\]'",
                     prog), 0);
  tu_sh("rm -rf %s", dir);
  free(prog), free(dir);
}

Test(wait_policy, threads_that_cannot_start_are_exit_3_not_libgomps_1) {
  char *dir = tu_temp_dir("thread_start"), *prog;
  cr_assert(asprintf(&prog, "%s/prog", dir) > 0);
  /* circc's -O3: the team start must survive it */
  tu_build("'y' Einsum i,i->i\n  'x' [4] Symbol\n  'z' [4] Symbol\n", prog, NULL);
  /* a 2 GiB thread stack in a 1 GiB address space: the second thread cannot start */
  const char *starve = "ulimit -v 1048576; OMP_STACKSIZE=2G";
  cr_assert_eq(tu_sh("%s %s --threads 2 --info >/dev/null 2>%s/err", starve, prog, dir), 3);
  cr_assert_eq(tu_sh("grep -q 'prog: error: cannot start 2 threads' %s/err || { cat %s/err >&2; false; }", dir, dir), 0);
  /* one thread needs no other stack; without the limit two start */
  cr_assert_eq(tu_sh("%s %s --threads 1 --info >/dev/null 2>&1", starve, prog), 0);
  cr_assert_eq(tu_sh("OMP_STACKSIZE=2G %s --threads 2 --info >/dev/null 2>&1", prog), 0);
  tu_sh("rm -rf %s", dir);
  free(prog), free(dir);
}
