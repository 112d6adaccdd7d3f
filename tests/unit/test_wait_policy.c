/* test_wait_policy.c — how a program's waiting threads behave (rt_wait_policy,
 * circc_rt.h): without OMP_WAIT_POLICY or GOMP_SPINCOUNT the program runs with
 * GOMP_SPINCOUNT=1000 (RT_SPIN_COUNT; it re-executes itself once, arguments kept);
 * a user's setting is left alone. */
#define _GNU_SOURCE /* asprintf */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>
#include "testutil.h"

Test(wait_policy, a_program_spins_briefly_unless_the_user_says_otherwise) {
  char *dir = tu_temp_dir("wait_policy"), *prog;
  cr_assert(asprintf(&prog, "%s/prog", dir) > 0);
  const char *text = "'y' [2] Scalar 3\n";
  Comp *c = tu_comp();
  DriverOptions o = {.text = text, .text_len = strlen(text), .text_name = "w.circ", .last = STAGE_EMIT,
                     .emit = {.name = "prog", .command_line = "test"}, .build = {.output = prog, .opt = "-O0"}};
  Compilation cm = {0};
  cr_assert(driver_run(c, &o, &cm), "%s", tu_diags(c));
  tu_free(c);
  cr_assert_eq(tu_sh("env -u OMP_WAIT_POLICY -u GOMP_SPINCOUNT %s --threads 2 --info | grep -qx 'waiting:      "
                     "GOMP_SPINCOUNT=1000'", prog), 0);
  cr_assert_eq(tu_sh("env -u GOMP_SPINCOUNT OMP_WAIT_POLICY=passive %s --info | grep -qx 'waiting:      "
                     "OMP_WAIT_POLICY=passive'", prog), 0);
  cr_assert_eq(tu_sh("env -u OMP_WAIT_POLICY GOMP_SPINCOUNT=7 %s --info | grep -qx 'waiting:      GOMP_SPINCOUNT=7'",
                     prog), 0);
  /* the arguments survive the re-execution */
  cr_assert_eq(tu_sh("env -u OMP_WAIT_POLICY -u GOMP_SPINCOUNT %s --threads 1 | head -2 | tail -1 | grep -qx '\\[3, 3\\]'",
                     prog), 0);
  tu_sh("rm -rf %s", dir);
  free(prog), free(dir);
}
