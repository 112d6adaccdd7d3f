/* test_regions.c — the threads of a generated program (emit.c's run() and
 * run_steps): one parallel region per run whose threads walk the steps
 * together, each with one scratch for the run; serial and parallel steps
 * mixed give the same bits on 1, 2 and 3 threads (3: more threads than a small
 * machine's cores, and an uneven split); a step's error, from a parallel or a
 * serial step, is reported once with its message and exit 3 (the earlier
 * step's when two steps of one phase fail), and every thread leaves (a hang
 * would be a barrier some thread missed). MIXED's four steps are one phase
 * (schedule.c), its two serial steps on different threads. */
#define _GNU_SOURCE /* asprintf */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "circc.h"
#include "driver.h"
#include "testutil.h"

/* A GEMM with scratch and a gather big enough to run on every thread
 * (emit.c's PARALLEL_MIN_WORK), a softmax and a gather small enough to run
 * on one. */
static const char MIXED[] =
    "'mm' Einsum ij,jk->ik\n"
    "  'a' [256,64] Symbol\n"
    "  'b' [64,160] Symbol\n"
    "'sm' GeneralFunction softmax\n"
    "  'small' [3,5] Symbol\n"
    "'emb' GeneralFunction gen_index_at_0_c\n"
    "  'E' [500,64] Symbol\n"
    "  'tok' [8,80] Symbol\n"
    "'pick' GeneralFunction gen_index_at_0_c\n"
    "  'E'\n"
    "  'one' [2] Symbol\n";

static int count(const char *text, const char *what) {
  int n = 0;
  for (const char *p = strstr(text, what); p; p = strstr(p + 1, what)) n++;
  return n;
}

Test(regions, the_program_opens_one_parallel_region_and_allocates_scratch_once) {
  char *dir = tu_temp_dir("regions_c");
  Comp *c = tu_comp();
  DriverOptions o = {.text = MIXED, .text_len = strlen(MIXED), .text_name = "test.circ", .last = STAGE_EMIT,
                     .emit = {.name = "prog", .command_line = "test"},
                     .build = {.output = arena_printf(&c->arena, "%s/prog.d", dir), .emit_c_only = true}};
  Compilation cm = {0};
  cr_assert(driver_run(c, &o, &cm), "%s", tu_diags(c));
  char *text = tu_read_file(arena_printf(&c->arena, "%s/prog.d/model.c", dir), NULL);
  cr_assert(text);
  cr_assert_eq(count(text, "#pragma omp parallel"), 1, "one parallel region, in run()");
  cr_assert_eq(count(text, "aligned_alloc("), 2, "one scratch allocation and one of the work counters, in run()");
  cr_assert_eq(count(text, "float *scratch = (float *)aligned_alloc("), 1);
  cr_assert_eq(count(text, "uint64_t *const claims = (uint64_t *)aligned_alloc("), 1);
  cr_assert_eq(count(text, "run_steps(steps, parallel_steps,"), 1);
  /* the four outputs do not depend on each other: one phase, one barrier */
  cr_assert(strstr(text, "static const int phase_start[2] = {0, 4};"), "%s", strstr(text, "phase_start"));
  /* both kinds of step are there: the table has a 0 and a 1 */
  const char *table = strstr(text, "parallel_steps[");
  cr_assert(table);
  const char *end = strchr(table, ';');
  cr_assert(end && memchr(table, '0', (size_t)(end - table)) && memchr(table, '1', (size_t)(end - table)), "%.*s",
            (int)(end - table), table);
  free(text);
  tu_free(c);
  tu_sh("rm -rf %s", dir);
  free(dir);
}

/* Writes input `name` of `shape` (and dtype dt) to dir/name.npy: value i is f(i). */
static void write_input(Comp *c, const char *dir, const char *name, DType dt, Shape shape, double (*f)(int64_t)) {
  Tensor *t = tensor_new(c, dt, &shape);
  for (int64_t i = 0; i < shape_numel(&shape); i++) tensor_set_f64(t, i, f(i));
  cr_assert(npy_save(c, t, arena_printf(&c->arena, "%s/%s.npy", dir, name)), "%s", tu_diags(c));
}

static double wave(int64_t i) { return sin(0.37 * (double)i) * 1.5; }
static double token(int64_t i) { return (double)((i * 131 + 7) % 500); }
static double bad_token(int64_t i) { return i == 300 ? 500 : token(i); }
static double two_ids(int64_t i) { return i ? 499 : 3; }
static double bad_ids(int64_t i) { return i ? -501 : 3; }

static const char *OUTPUTS[] = {"mm", "sm", "emb", "pick"};

/* Runs prog on dir's inputs (`tok` and `one` from tok.npy / one.npy) with
 * `threads` threads; outputs to dir/<threads>_<name>.npy; the exit code. */
static int run(const char *prog, const char *dir, int threads, const char *tok, const char *one) {
  return tu_sh("%s --threads %d --input a=@%s/a.npy --input b=@%s/b.npy --input small=@%s/small.npy "
               "--input E=@%s/E.npy --input tok=@%s/%s.npy --input one=@%s/%s.npy --output mm=@%s/%d_mm.npy "
               "--output sm=@%s/%d_sm.npy --output emb=@%s/%d_emb.npy --output pick=@%s/%d_pick.npy 2>%s/err",
               prog, threads, dir, dir, dir, dir, dir, tok, dir, one, dir, threads, dir, threads, dir, threads, dir,
               threads, dir);
}

/* MIXED's inputs, with valid indices, in dir */
static void write_inputs(Comp *c, const char *dir) {
  write_input(c, dir, "a", DT_F32, (Shape){2, {256, 64}}, wave);
  write_input(c, dir, "b", DT_F32, (Shape){2, {64, 160}}, wave);
  write_input(c, dir, "small", DT_F32, (Shape){2, {3, 5}}, wave);
  write_input(c, dir, "E", DT_F32, (Shape){2, {500, 64}}, wave);
  write_input(c, dir, "tok", DT_I64, (Shape){2, {8, 80}}, token);
  write_input(c, dir, "one", DT_I64, (Shape){1, {2}}, two_ids);
}

/* MIXED built as dir/prog, with its inputs in dir; the program's path. */
static const char *build_mixed(Comp *c, const char *dir) {
  const char *prog = arena_printf(&c->arena, "%s/prog", dir);
  tu_build(MIXED, prog, "-O1");
  write_inputs(c, dir);
  return prog;
}

Test(regions, serial_and_parallel_steps_give_the_same_bits_on_1_2_and_3_threads) {
  char *dir = tu_temp_dir("regions_run");
  Comp *c = tu_comp();
  const char *prog = build_mixed(c, dir);
  for (int t = 1; t <= 3; t++) cr_assert_eq(run(prog, dir, t, "tok", "one"), 0, "--threads %d", t);
  for (int t = 2; t <= 3; t++)
    for (size_t j = 0; j < sizeof OUTPUTS / sizeof *OUTPUTS; j++)
      cr_assert_eq(tu_sh("cmp -s %s/1_%s.npy %s/%d_%s.npy", dir, OUTPUTS[j], dir, t, OUTPUTS[j]), 0,
                   "%s: --threads 1 and %d differ", OUTPUTS[j], t);
  /* the gathers copy rows of E exactly (the values themselves: test_codegen) */
  Tensor *emb = npy_load(c, arena_printf(&c->arena, "%s/3_emb.npy", dir), NO_LOC);
  Tensor *pick = npy_load(c, arena_printf(&c->arena, "%s/2_pick.npy", dir), NO_LOC);
  cr_assert(emb && pick, "%s", tu_diags(c));
  for (int64_t i = 0; i < 8 * 80 * 64; i++)
    cr_assert_eq(tensor_get_f64(emb, i), (double)(float)wave((int64_t)token(i / 64) * 64 + i % 64), "emb[%lld]",
                 (long long)i);
  for (int64_t i = 0; i < 2 * 64; i++)
    cr_assert_eq(tensor_get_f64(pick, i), (double)(float)wave((int64_t)two_ids(i / 64) * 64 + i % 64));
  tu_free(c);
  tu_sh("rm -rf %s", dir);
  free(dir);
}

Test(regions, a_steps_error_comes_out_once_and_every_thread_leaves) {
  char *dir = tu_temp_dir("regions_err");
  Comp *c = tu_comp();
  const char *prog = build_mixed(c, dir);
  write_input(c, dir, "bad_tok", DT_I64, (Shape){2, {8, 80}}, bad_token);
  write_input(c, dir, "bad_one", DT_I64, (Shape){1, {2}}, bad_ids);
  for (int t = 1; t <= 3; t++) {
    /* in a parallel step (every thread finds it) and in a serial one */
    cr_assert_eq(run(prog, dir, t, "bad_tok", "one"), 3, "--threads %d", t);
    cr_assert_eq(tu_sh("test \"$(cat %s/err)\" = \"prog: error: 'emb': index 500 is out of range for an axis of size 500\" "
                       "|| { cat %s/err >&2; false; }", dir, dir), 0, "--threads %d", t);
    cr_assert_eq(run(prog, dir, t, "tok", "bad_one"), 3, "--threads %d", t);
    cr_assert_eq(tu_sh("test \"$(cat %s/err)\" = \"prog: error: 'pick': index -501 is out of range for an axis of size 500\" "
                       "|| { cat %s/err >&2; false; }", dir, dir), 0, "--threads %d", t);
    /* both fail in the one phase, on different threads: the earlier step's error */
    cr_assert_eq(run(prog, dir, t, "bad_tok", "bad_one"), 3, "--threads %d", t);
    cr_assert_eq(tu_sh("test \"$(cat %s/err)\" = \"prog: error: 'emb': index 500 is out of range for an axis of size 500\" "
                       "|| { cat %s/err >&2; false; }", dir, dir), 0, "--threads %d", t);
  }
  tu_free(c);
  tu_sh("rm -rf %s", dir);
  free(dir);
}
