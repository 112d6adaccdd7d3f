/* test_scratch_oom.c — a generated program whose per-thread GEMM scratch
 * cannot be allocated (emit.c's run(): each thread of the one parallel region
 * allocates its scratch, and a failure is the step -1 of the run) reports
 * "out of memory for the GEMM scratch of 'NAME'", exits 3 and writes no output
 * file, on 1, 2 and 3 threads, whether every thread's allocation fails or only
 * one's. The program is the ordinary one: an LD_PRELOAD shim, built here with
 * the C compiler circc uses, makes aligned_alloc fail inside a parallel region
 * (only the scratch is allocated there; the arena, inputs and outputs are
 * allocated before it) for blocks of at least 16 KiB (every GEMM scratch is
 * bigger: gemm_f32.h's streaming strips alone are 32 KiB), after the first
 * $SHIM_SKIP such calls. With $SHIM_OUTSIDE_SKIP it fails instead every call
 * outside a parallel region after that many: run()'s work counters
 * (take_units' words) are the last of those, so that a failure there is
 * reported the same way. The program is not sanitized, so this runs in the
 * ASan build too. */
#define _GNU_SOURCE /* asprintf */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include "circc.h"
#include "testutil.h"

static const char SHIM[] =
    "#include <errno.h>\n"
    "#include <stdlib.h>\n"
    "int omp_get_level(void) __attribute__((weak));\n"
    "static int seen;\n"
    "static int seen_outside;\n"
    "void *aligned_alloc(size_t align, size_t size) {\n"
    "  const char *skip = getenv(\"SHIM_SKIP\"), *outside = getenv(\"SHIM_OUTSIDE_SKIP\");\n"
    "  if (outside && omp_get_level && omp_get_level() == 0 &&\n"
    "      __atomic_fetch_add(&seen_outside, 1, __ATOMIC_SEQ_CST) >= atoi(outside)) {\n"
    "    errno = ENOMEM;\n"
    "    return NULL;\n"
    "  }\n"
    "  if (size >= 16384 && omp_get_level && omp_get_level() > 0 &&\n"
    "      __atomic_fetch_add(&seen, 1, __ATOMIC_SEQ_CST) >= (skip ? atoi(skip) : 0)) {\n"
    "    errno = ENOMEM;\n"
    "    return NULL;\n"
    "  }\n"
    "  void *p;\n"
    "  return posix_memalign(&p, align, size) ? NULL : p;\n"
    "}\n";

/* A GEMM big enough to run on every thread (emit.c's PARALLEL_MIN_WORK), so
 * the region has as many threads as --threads asks for. */
static const char GEMM[] =
    "'mm' Einsum ij,jk->ik\n"
    "  'a' [256,64] Symbol\n"
    "  'b' [64,160] Symbol\n";

static double wave(int64_t i) { return sin(0.37 * (double)i) * 1.5; }

static void write_input(Comp *c, const char *dir, const char *name, Shape shape) {
  Tensor *t = tensor_new(c, DT_F32, &shape);
  for (int64_t i = 0; i < shape_numel(&shape); i++) tensor_set_f64(t, i, wave(i));
  cr_assert(npy_save(c, t, arena_printf(&c->arena, "%s/%s.npy", dir, name)), "%s", tu_diags(c));
}

/* dir/prog on dir's inputs with `threads` threads, under the shim with
 * SHIM_SKIP=skip (skip < 0: without it), output to dir/out.npy, stderr to
 * dir/err; the exit code. */
static int run_with(const char *dir, int threads, const char *var, int skip) {
  char pre[4200] = "";
  if (skip >= 0) snprintf(pre, sizeof pre, "%s=%d LD_PRELOAD=%s/shim.so ", var, skip, dir);
  return tu_sh("rm -f %s/out.npy; %s%s/prog --threads %d --input a=@%s/a.npy --input b=@%s/b.npy "
               "--output mm=@%s/out.npy 2>%s/err",
               dir, pre, dir, threads, dir, dir, dir, dir);
}

/* dir/prog (the GEMM), its inputs and dir/shim.so. */
static void build_with_shim(Comp *c, const char *dir) {
  tu_build(GEMM, arena_printf(&c->arena, "%s/prog", dir), "-O1");
  write_input(c, dir, "a", (Shape){2, {256, 64}});
  write_input(c, dir, "b", (Shape){2, {64, 160}});
  FILE *f = fopen(arena_printf(&c->arena, "%s/shim.c", dir), "w");
  cr_assert(f && fputs(SHIM, f) >= 0 && fclose(f) == 0);
  const char *cc = getenv("CC") && *getenv("CC") ? getenv("CC") : "gcc";
  cr_assert_eq(tu_sh("%s -shared -fPIC -O1 -o %s/shim.so %s/shim.c", cc, dir, dir), 0, "cannot build the shim");
}

static int run(const char *dir, int threads, int skip) { return run_with(dir, threads, "SHIM_SKIP", skip); }

Test(scratch_oom, a_failed_scratch_allocation_is_reported_with_exit_3_and_no_output) {
  char *dir = tu_temp_dir("scratch_oom");
  Comp *c = tu_comp();
  build_with_shim(c, dir);

  /* the shim lets allocations through until SHIM_SKIP is used up: with every
   * allocation let through, the program runs as without it */
  cr_assert_eq(run(dir, 3, -1), 0, "without the shim");
  cr_assert_eq(tu_sh("mv %s/out.npy %s/want.npy", dir, dir), 0);
  cr_assert_eq(run(dir, 3, 3), 0, "three allocations let through");
  cr_assert_eq(tu_sh("cmp -s %s/out.npy %s/want.npy", dir, dir), 0, "the shim changed the result");

  for (int t = 1; t <= 3; t++)
    for (int skip = 0; skip < t; skip++) { /* t - skip of the t threads fail */
      cr_assert_eq(run(dir, t, skip), 3, "--threads %d, %d of them failing", t, t - skip);
      cr_assert_eq(tu_sh("test \"$(cat %s/err)\" = \"prog: error: out of memory for the GEMM scratch of 'mm'\" "
                         "|| { cat %s/err >&2; false; }", dir, dir),
                   0, "--threads %d, %d of them failing", t, t - skip);
      cr_assert_eq(tu_sh("test -e %s/out.npy", dir), 1, "--threads %d: an output file was left", t);
    }
  tu_free(c);
  tu_sh("rm -rf %s", dir);
  free(dir);
}

/* run()'s work counters, allocated before its parallel region after the
 * program's other allocations: the last outside-region allocation to fail
 * gives their message, exit 3 and no output. */
Test(scratch_oom, a_failed_work_counter_allocation_is_reported_with_exit_3_and_no_output) {
  char *dir = tu_temp_dir("claims_oom");
  Comp *c = tu_comp();
  build_with_shim(c, dir);
  int found = 0;
  for (int skip = 0; skip < 16 && !found; skip++) {
    int code = run_with(dir, 2, "SHIM_OUTSIDE_SKIP", skip);
    if (code == 0) break; /* every allocation let through: the counters come before this skip */
    cr_assert_eq(code, 3, "skip %d", skip);
    cr_assert_eq(tu_sh("test -e %s/out.npy", dir), 1, "skip %d: an output file was left", skip);
    found = tu_sh("test \"$(cat %s/err)\" = \"prog: error: out of memory for the steps' work counters\"", dir) == 0;
  }
  cr_assert(found, "no outside-region allocation gave the work counters' message");
  tu_free(c);
  tu_sh("rm -rf %s", dir);
  free(dir);
}
