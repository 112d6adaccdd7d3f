/* test_outfile.c — circc's own output files (outfile.h): a symlink keeps
 * pointing where it did and its target gets the result, a FIFO (like a device)
 * is written through and never replaced, a failure leaves no file and no
 * temporary, circc eval's --output files are all or none, and the executable
 * of -o follows the same rules. */
#define _GNU_SOURCE /* asprintf */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "outfile.h"
#include "testutil.h"

static Tensor *small(Comp *c) {
  Tensor *t = tensor_new(c, DT_F32, &(Shape){.rank = 1, .dim = {3}});
  for (int i = 0; i < 3; i++) tensor_set_f64(t, i, i + 0.5);
  return t;
}

static char *at(const char *dir, const char *name) {
  char *p;
  cr_assert(asprintf(&p, "%s/%s", dir, name) > 0);
  return p;
}

/* Waits (at most 10 s: a FIFO that was replaced never gets its writer) for the
 * background `cat FIFO` whose pid is in dir/reader, then stops it. */
static void reader_done(const char *dir) {
  tu_sh("p=$(cat %s/reader); for i in $(seq 200); do kill -0 $p 2>/dev/null || break; sleep 0.05; done; kill $p 2>/dev/null",
        dir);
}

static bool is_link(const char *p) {
  struct stat st;
  return lstat(p, &st) == 0 && S_ISLNK(st.st_mode);
}

Test(outfile, a_symlink_keeps_pointing_at_its_target_which_gets_the_file) {
  char *dir = tu_temp_dir("outfile_link");
  char *link = at(dir, "link.npy"), *target = at(dir, "target.npy");
  cr_assert_eq(symlink("target.npy", link), 0); /* dangling: the target is created */
  Comp *c = tu_comp();
  cr_assert(npy_save(c, small(c), link), "%s", tu_diags(c));
  cr_assert(is_link(link));
  Tensor *back = npy_load(c, target, NO_LOC);
  cr_assert(back && tensor_get_f64(back, 2) == 2.5, "%s", tu_diags(c));
  cr_assert(npy_save(c, small(c), link), "%s", tu_diags(c)); /* and again, over the existing target */
  cr_assert(is_link(link));
  cr_assert_eq(tu_sh("ls %s | grep -q tmp", dir), 1); /* grep found nothing: no temporary left */
  tu_free(c);
  tu_sh("rm -rf %s", dir);
  free(link), free(target), free(dir);
}

Test(outfile, a_fifo_is_written_through_never_replaced) {
  char *dir = tu_temp_dir("outfile_fifo");
  char *fifo = at(dir, "fifo"), *copy = at(dir, "copy.npy");
  cr_assert_eq(mkfifo(fifo, 0600), 0);
  cr_assert_eq(tu_sh("cat %s > %s & echo $! > %s/reader", fifo, copy, dir), 0);
  Comp *c = tu_comp();
  cr_assert(npy_save(c, small(c), fifo), "%s", tu_diags(c));
  reader_done(dir);
  struct stat st;
  cr_assert(stat(fifo, &st) == 0 && S_ISFIFO(st.st_mode));
  Tensor *back = npy_load(c, copy, NO_LOC);
  cr_assert(back && tensor_get_f64(back, 1) == 1.5, "%s", tu_diags(c));
  tu_free(c);
  tu_sh("rm -rf %s", dir);
  free(fifo), free(copy), free(dir);
}

Test(outfile, eval_outputs_are_all_or_none) {
  char *dir = tu_temp_dir("outfile_eval");
  char *a = at(dir, "a.npy"), *b = at(dir, "missing/b.npy");
  Binding outs[] = {{"x", a}, {"y", b}};
  const char *names[] = {"x", "y"};
  const char *text = "'x' [2] Scalar 1\n'y' [2] Scalar 2\n";
  Comp *c = tu_comp();
  DriverOptions o = {.text = text, .text_len = strlen(text), .text_name = "o.circ", .last = STAGE_RESOLVE,
                     .evaluate = true, .eval_outputs = outs, .neval_outputs = 2, .outputs = names, .noutputs = 2};
  Compilation cm = {0};
  cr_assert_not(driver_run(c, &o, &cm));
  cr_assert(strstr(tu_diags(c), "cannot write"), "%s", tu_diags(c));
  cr_assert(strstr(tu_diags(c), "missing/b.npy"), "%s", tu_diags(c));
  cr_assert_eq(diag_exit_code(c), 3);
  cr_assert_eq(tu_sh("test -z \"$(ls %s)\"", dir), 0); /* neither a.npy nor a temporary */
  tu_free(c);
  tu_sh("rm -rf %s", dir);
  free(a), free(b), free(dir);
}

Test(outfile, the_executable_follows_links_and_writes_through_fifos) {
  char *dir = tu_temp_dir("outfile_exe");
  char *link = at(dir, "prog"), *target = at(dir, "real_prog"), *fifo = at(dir, "fifo"), *copy = at(dir, "copy");
  cr_assert_eq(symlink("real_prog", link), 0);
  cr_assert_eq(mkfifo(fifo, 0600), 0);
  const char *text = "'y' [2] Scalar 3\n";
  for (int k = 0; k < 2; k++) {
    if (k == 1) cr_assert_eq(tu_sh("cat %s > %s & echo $! > %s/reader", fifo, copy, dir), 0);
    Comp *c = tu_comp();
    DriverOptions o = {.text = text, .text_len = strlen(text), .text_name = "e.circ", .last = STAGE_EMIT,
                       .emit = {.name = "prog", .command_line = "test"}, .build = {.output = k ? fifo : link, .opt = "-O0"}};
    Compilation cm = {0};
    cr_assert(driver_run(c, &o, &cm), "%s", tu_diags(c));
    tu_free(c);
  }
  cr_assert(is_link(link));
  cr_assert_eq(tu_sh("%s | grep -q '^y \\[2\\] float32'", link), 0);
  reader_done(dir);
  cr_assert_eq(tu_sh("cmp -s %s %s", copy, target), 0);
  struct stat st;
  cr_assert(stat(fifo, &st) == 0 && S_ISFIFO(st.st_mode));
  tu_sh("rm -rf %s", dir);
  free(link), free(target), free(fifo), free(copy), free(dir);
}

Test(outfile, a_compiler_that_finds_the_disk_full_is_an_io_error) {
  /* a stand-in compiler that fails as gcc does on a full disk: exit 3, not 4 */
  char *dir = tu_temp_dir("outfile_full");
  char *prog = at(dir, "prog");
  const char *text = "'y' [2] Scalar 3\n";
  const char *full = "sh -c 'echo \"cc1: fatal error: error writing to /tmp/ccX.s: No space left on device\" >&2; exit 1' cc";
  const char *broken = "sh -c 'echo \"error: expected ;\" >&2; exit 1' cc";
  for (int k = 0; k < 2; k++) {
    Comp *c = tu_comp();
    DriverOptions o = {.text = text, .text_len = strlen(text), .text_name = "f.circ", .last = STAGE_EMIT,
                       .emit = {.name = "prog", .command_line = "test"},
                       .build = {.output = prog, .opt = "-O0", .cc = k ? broken : full}};
    Compilation cm = {0};
    cr_assert_not(driver_run(c, &o, &cm));
    cr_assert_eq(diag_exit_code(c), k ? 4 : 3, "%s", tu_diags(c));
    tu_free(c);
  }
  cr_assert_eq(tu_sh("test -z \"$(ls %s)\"", dir), 0);
  tu_sh("rm -rf %s", dir);
  free(prog), free(dir);
}

Test(outfile, a_killed_build_leaves_nothing_and_stops_its_compiler) {
  /* SIGTERM while the C compiler runs (a stand-in that sleeps): circc dies of
   * it, the compiler's process group is killed, the temporary directory and
   * the output's temporary are removed */
  char *dir = tu_temp_dir("outfile_kill");
  FILE *f = fopen(at(dir, "k.circ"), "w");
  cr_assert(f);
  fputs("'y' [2] Scalar 3\n", f);
  fclose(f);
  cr_assert_eq(tu_sh("mkdir %s/tmp %s/out", dir, dir), 0);
  int rc = tu_sh("cd %s && TMPDIR=%s/tmp " CIRCC_BIN " k.circ --cc \"sh -c 'sleep 37.25' cc\" -o out/prog "
                 "2>/dev/null & pid=$!; sleep 1; kill -TERM $pid; wait $pid; exit $?", dir, dir);
  cr_assert_eq(rc, 128 + 15, "exit %d", rc);
  cr_assert_eq(tu_sh("sleep 0.2; ! grep -qs '3[7][.]25' /proc/[0-9]*/cmdline"), 0, "the compiler still runs");
  cr_assert_eq(tu_sh("test -z \"$(ls %s/tmp)\" && test -z \"$(ls %s/out)\"", dir, dir), 0);
  tu_sh("rm -rf %s", dir);
  free(dir);
}
