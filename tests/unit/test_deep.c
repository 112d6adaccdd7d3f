/* test_deep.c — circuits that are deep or large (issue 18): the stages after
 * parse recurse once per level, on circc's 2 GiB stack, so a 10^5-deep chain
 * and 10^4 nested modules compile and evaluate, a 10^6-node circuit compiles
 * and evaluates, and a circuit deeper than IR_MAX_DEPTH is a located error
 * instead of a crash. Values are hand-computed: the chain is x, the nested
 * modules x + 1, the wide sum 1000 x. Runs the circc binary (label slow: the
 * big circuits take seconds). */
#define _GNU_SOURCE /* asprintf */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "testutil.h"

static const double X[4] = {1.5, -2, 0.25, 3};

static char *path_in(const char *dir, const char *name) {
  char *p;
  cr_assert(asprintf(&p, "%s/%s", dir, name) > 0);
  return p;
}

static void write_x(const char *dir) {
  Comp *c = tu_comp();
  Tensor *t = tensor_new(c, DT_F32, &(Shape){.rank = 1, .dim = {4}});
  for (int i = 0; i < 4; i++) tensor_set_f64(t, i, X[i]);
  char *p = path_in(dir, "x.npy");
  cr_assert(npy_save(c, t, p), "%s", tu_diags(c));
  free(p);
  tu_free(c);
}

/* Evaluates with circc eval and with the compiled program (2 threads); both must give scale * x + offset. */
static void check(const char *dir, const char *circ, const char *out, const char *in, double scale, double offset,
                  bool compile) {
  cr_assert_eq(tu_sh("cd %s && " CIRCC_BIN " eval %s --input %s=@x.npy --output %s=@eval.npy", dir, circ, in, out), 0);
  if (compile)
    cr_assert_eq(tu_sh("cd %s && " CIRCC_BIN " -O0 %s --output %s -o prog && ./prog --threads 2 --input %s=@x.npy "
                       "--output %s=@prog.npy", dir, circ, out, in, out), 0);
  for (int k = 0; k < 1 + compile; k++) {
    Comp *c = tu_comp();
    char *p = path_in(dir, k ? "prog.npy" : "eval.npy");
    Tensor *t = npy_load(c, p, NO_LOC);
    cr_assert(t && shape_numel(&t->shape) == 4, "%s", tu_diags(c));
    for (int i = 0; i < 4; i++)
      cr_assert_float_eq(tensor_get_f64(t, i), scale * X[i] + offset, 1e-4 * (1 + scale), "%s element %d", p, i);
    free(p);
    tu_free(c);
  }
}

/* A chain of n one-child Adds over x; the last is a<n-1>. */
static void write_chain(const char *dir, const char *name, int n) {
  char *p = path_in(dir, name);
  FILE *f = fopen(p, "w");
  cr_assert(f);
  fprintf(f, "'x' [4] Symbol 00000000-0000-0000-0000-000000000001\n'a0' Add\n  'x'\n");
  for (int i = 1; i < n; i++) fprintf(f, "'a%d' Add\n  'a%d'\n", i, i - 1);
  cr_assert_eq(fclose(f), 0);
  free(p);
}

Test(deep, a_chain_of_100000_levels_compiles_and_evaluates) {
  char *dir = tu_temp_dir("deep_chain");
  write_x(dir);
  write_chain(dir, "chain.circ", 100000);
  check(dir, "chain.circ", "a99999", "x", 1, 0, true);
  tu_sh("rm -rf %s", dir);
  free(dir);
}

Test(deep, ten_thousand_nested_modules_substitute) {
  char *dir = tu_temp_dir("deep_modules");
  write_x(dir);
  char *p = path_in(dir, "nested.circ");
  FILE *f = fopen(p, "w");
  cr_assert(f);
  /* m0 = s0 + 1; m<k> binds s<k-1> to s<k> in the Module m<k-1> */
  fprintf(f, "'m0' Add\n  's0' [4] Symbol 00000000-0000-0000-0000-%012d\n  'one' [] Scalar 1\n", 0);
  for (int k = 1; k < 10000; k++)
    fprintf(f, "'m%d' Module\n  'm%d'\n  's%d' [4] Symbol 00000000-0000-0000-0000-%012d ! 's%d'\n", k, k - 1, k, k, k - 1);
  cr_assert_eq(fclose(f), 0);
  check(dir, "nested.circ", "m9999", "s9999", 1, 1, true);
  tu_sh("rm -rf %s", dir);
  free(p), free(dir);
}

Test(deep, a_circuit_of_a_million_nodes_compiles_and_evaluates) {
  char *dir = tu_temp_dir("deep_wide");
  write_x(dir);
  char *p = path_in(dir, "wide.circ");
  FILE *f = fopen(p, "w");
  cr_assert(f);
  /* 1000 chains of 1000 scalings by 1 (Einsums the simplifier merges), summed */
  fprintf(f, "'x' [4] Symbol 00000000-0000-0000-0000-000000000001\n'c' [] Scalar 1\n");
  for (int w = 0; w < 1000; w++) {
    fprintf(f, "'n%d_0' Einsum a,->a\n  'x'\n  'c'\n", w);
    for (int d = 1; d < 1000; d++) fprintf(f, "'n%d_%d' Einsum a,->a\n  'n%d_%d'\n  'c'\n", w, d, w, d - 1);
  }
  fprintf(f, "'total' Add\n");
  for (int w = 0; w < 1000; w++) fprintf(f, "  'n%d_999'\n", w);
  cr_assert_eq(fclose(f), 0);
  cr_assert_eq(tu_sh("cd %s && " CIRCC_BIN " wide.circ --output total --report >/dev/null", dir), 0);
  check(dir, "wide.circ", "total", "x", 1000, 0, false);
  tu_sh("rm -rf %s", dir);
  free(p), free(dir);
}

Test(deep, deeper_than_the_limit_is_a_located_error) {
  char *dir = tu_temp_dir("deep_limit");
  write_chain(dir, "too_deep.circ", IR_MAX_DEPTH);  /* x and IR_MAX_DEPTH Adds */
  cr_assert_eq(tu_sh("cd %s && " CIRCC_BIN " too_deep.circ --report > /dev/null 2> err.txt", dir), 1);
  cr_assert_eq(tu_sh("grep -q \"^too_deep.circ:[0-9]*:1: error: 'a%d' is %d levels deep; circc compiles circuits of "
                     "at most %d levels\" %s/err.txt",
                     IR_MAX_DEPTH - 1, IR_MAX_DEPTH + 1, IR_MAX_DEPTH, dir), 0);
  tu_sh("rm -rf %s", dir);
  free(dir);
}

Test(deep, memory_the_machine_does_not_give_is_exit_3) {
  /* a 32 GiB value under a 4 GB address-space limit: a message and exit 3, not an internal error */
  char *dir = tu_temp_dir("deep_oom");
  char *p = path_in(dir, "big.circ");
  FILE *f = fopen(p, "w");
  cr_assert(f);
  fprintf(f, "'s' GeneralFunction softmax\n  'x' [65536,65536] Scalar 1\n");
  cr_assert_eq(fclose(f), 0);
  cr_assert_eq(tu_sh("cd %s && ulimit -v 4000000 && " CIRCC_BIN " eval big.circ > /dev/null 2> err.txt", dir), 3);
  cr_assert_eq(tu_sh("grep -q '^circc: error: out of memory allocating 34359738368 bytes (32 GiB)$' %s/err.txt", dir), 0);
  tu_sh("rm -rf %s", dir);
  free(p), free(dir);
}
