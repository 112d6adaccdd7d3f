/* test_deep.c — circuits that are deep or large (issue 18): no stage
 * recurses once per level (they walk with ir_walk), and circc runs on a
 * 64 MiB stack, so chains 10^5 levels deep and at the depth limit
 * (IR_MAX_DEPTH) go through every stage — parse, module substitution,
 * resolve, taps and patches, rv (expectation programs), simplify, plan,
 * lower, fuse, memplan, emit and --dump of the kernel stages — and through
 * circc eval (with --tap, --patch and --all); 10^4 nested modules and a
 * 10^6-node circuit compile and evaluate; a circuit deeper than IR_MAX_DEPTH
 * is a located error instead of a crash. Values are hand-computed: the Add
 * chain is x, a relu chain relu(x) (relu of the patch past a patched level),
 * the nested modules x + 1, the wide sum 1000 x, the expectation of a relu
 * chain over a DiscreteVar 0.5 relu(1) + 0.3 relu(-4) + 0.2 relu(10) = 2.5,
 * 60000 nested expectations of x + the one inside (E x = -1.5) -90000.
 * Runs the circc binary (label slow: the big circuits take seconds, their
 * programs tens of seconds to build). */
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

/* A [4] float32 .npy of v in dir. */
static void write_vec(const char *dir, const char *name, const double *v) {
  Comp *c = tu_comp();
  Tensor *t = tensor_new(c, DT_F32, &(Shape){.rank = 1, .dim = {4}});
  for (int i = 0; i < 4; i++) tensor_set_f64(t, i, v[i]);
  char *p = path_in(dir, name);
  cr_assert(npy_save(c, t, p), "%s", tu_diags(c));
  free(p);
  tu_free(c);
}

static void write_x(const char *dir) { write_vec(dir, "x.npy", X); }

/* The file dir/name holds want[0..n). */
static void expect_values(const char *dir, const char *name, const double *want, int64_t n) {
  Comp *c = tu_comp();
  char *p = path_in(dir, name);
  Tensor *t = npy_load(c, p, NO_LOC);
  cr_assert(t && shape_numel(&t->shape) == n, "%s: %s", p, tu_diags(c));
  for (int64_t i = 0; i < n; i++)
    cr_assert_float_eq(tensor_get_f64(t, i), want[i], 1e-5, "%s element %lld", p, (long long)i);
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

static void add_chain(int adds) {
  char *dir = tu_temp_dir("deep_chain");
  write_x(dir);
  write_chain(dir, "chain.circ", adds);
  char top[32];
  snprintf(top, sizeof top, "a%d", adds - 1);
  check(dir, "chain.circ", top, "x", 1, 0, true);
  tu_sh("rm -rf %s", dir);
  free(dir);
}

Test(deep, a_chain_of_100000_levels_compiles_and_evaluates) { add_chain(100000); }

Test(deep, a_chain_at_the_depth_limit_compiles_and_evaluates) { add_chain(IR_MAX_DEPTH - 1); }

/* A chain of n relus over x, r0 .. r<n-1>, which simplify keeps: every stage
 * after it sees the whole depth. With `variable`, x is a DiscreteVar of the
 * values 1, -4, 10 with probabilities 0.5, 0.3, 0.2 and the last line 'k' its
 * expectation: Cumulant of r<n-1>. */
static void write_relu_chain(const char *dir, const char *name, int n, bool variable) {
  char *p = path_in(dir, name);
  FILE *f = fopen(p, "w");
  cr_assert(f);
  if (variable)
    fputs("'x' DiscreteVar\n  'v' Concat 0\n    'v0' [1] Scalar 1\n    'v1' [1] Scalar -4\n    'v2' [1] Scalar 10\n"
          "  'p' Concat 0\n    'p0' [1] Scalar 0.5\n    'p1' [1] Scalar 0.3\n    'p2' [1] Scalar 0.2\n", f);
  else
    fputs("'x' [4] Symbol 00000000-0000-0000-0000-000000000001\n", f);
  fputs("'r0' GeneralFunction relu\n  'x'\n", f);
  for (int i = 1; i < n; i++) fprintf(f, "'r%d' GeneralFunction relu\n  'r%d'\n", i, i - 1);
  if (variable) fprintf(f, "'k' Cumulant\n  'r%d'\n", n - 1);
  cr_assert_eq(fclose(f), 0);
  free(p);
}

static const double RELU_X[4] = {1.5, 0, 0.25, 3};

Test(deep, a_relu_chain_of_100000_levels_compiles_and_evaluates) {
  char *dir = tu_temp_dir("deep_relu");
  write_x(dir);
  write_relu_chain(dir, "relu.circ", 100000, false);
  cr_assert_eq(tu_sh("cd %s && " CIRCC_BIN " eval relu.circ --input x=@x.npy --output r99999=@eval.npy", dir), 0);
  expect_values(dir, "eval.npy", RELU_X, 4);
  cr_assert_eq(tu_sh("cd %s && " CIRCC_BIN " -O0 relu.circ --output r99999 -o prog && ./prog --input x=@x.npy "
                     "--output r99999=@prog.npy", dir), 0);
  expect_values(dir, "prog.npy", RELU_X, 4);
  tu_sh("rm -rf %s", dir);
  free(dir);
}

/* At the depth limit: a tap halfway down and the top as outputs, the kernel
 * stages dumped; circc eval taps and patches there (past the patch, the
 * chain is relu of the patch's value). */
Test(deep, a_relu_chain_at_the_depth_limit_taps_patches_and_dumps) {
  char *dir = tu_temp_dir("deep_relu_limit");
  const int n = IR_MAX_DEPTH - 1, mid = n / 2;
  static const double Z[4] = {-1, 2, -3, 4}, RELU_Z[4] = {0, 2, 0, 4};
  write_x(dir);
  write_vec(dir, "z.npy", Z);
  write_relu_chain(dir, "relu.circ", n, false);
  cr_assert_eq(tu_sh("cd %s && " CIRCC_BIN " eval relu.circ --tap r%d --input x=@x.npy --output r%d=@top.npy "
                     "--output r%d=@tap.npy", dir, mid, n - 1, mid), 0);
  expect_values(dir, "top.npy", RELU_X, 4);
  expect_values(dir, "tap.npy", RELU_X, 4);
  cr_assert_eq(tu_sh("cd %s && " CIRCC_BIN " eval relu.circ --patch r%d=@z.npy --input x=@x.npy "
                     "--output r%d=@patched.npy", dir, mid, n - 1), 0);
  expect_values(dir, "patched.npy", RELU_Z, 4);
  cr_assert_eq(tu_sh("cd %s && " CIRCC_BIN " -O0 relu.circ --output r%d --tap r%d --dump lower,fuse,memplan "
                     "-o prog > dump.txt", dir, n - 1, mid), 0);
  /* relu expressions are materialised every 48 levels: thousands of steps */
  cr_assert_eq(tu_sh("cd %s && grep -c '^  step [0-9]* elementwise' dump.txt | awk '$1 > %d / 100 { ok = 1 } END "
                     "{ exit !ok }'", dir, n), 0);
  cr_assert_eq(tu_sh("cd %s && ./prog --input x=@x.npy --output r%d=@ptop.npy --output r%d=@ptap.npy", dir, n - 1,
                     mid), 0);
  expect_values(dir, "ptop.npy", RELU_X, 4);
  expect_values(dir, "ptap.npy", RELU_X, 4);
  tu_sh("rm -rf %s", dir);
  free(dir);
}

/* The expectation of a deep relu chain over a DiscreteVar: an expectation
 * program 10^5 levels deep (rv's walks, the batch module's substitution)
 * and circc eval --all at the depth limit. */
Test(deep, an_expectation_of_a_deep_chain) {
  char *dir = tu_temp_dir("deep_rv");
  static const double K[1] = {2.5};
  write_relu_chain(dir, "rv.circ", 100000, true);
  cr_assert_eq(tu_sh("cd %s && " CIRCC_BIN " -O0 rv.circ --output k -o prog && ./prog --all --output k=@all.npy "
                     "> all.txt", dir), 0);
  expect_values(dir, "all.npy", K, 1);
  /* x, v, v0 and k: 4 levels besides the relus */
  write_relu_chain(dir, "rv_limit.circ", IR_MAX_DEPTH - 4, true);
  cr_assert_eq(tu_sh("cd %s && " CIRCC_BIN " eval --all rv_limit.circ --output k=@eval.npy", dir), 0);
  expect_values(dir, "eval.npy", K, 1);
  tu_sh("rm -rf %s", dir);
  free(dir);
}

/* 60000 expectations nested in each other, k<i> = E[x + k<i-1>] with x 1 or
 * -4 (probability 1/2 each), evaluated by circc eval --all: each nesting
 * level is an expectation of its own, evaluated innermost first rather than
 * by recursion; k<i> = -1.5 (i + 1). */
Test(deep, sixty_thousand_nested_expectations_evaluate) {
  char *dir = tu_temp_dir("deep_nested_rv");
  enum { LEVELS = 60000 };
  char *p = path_in(dir, "nested.circ");
  FILE *f = fopen(p, "w");
  cr_assert(f);
  fputs("'x' DiscreteVar\n  'v' Concat 0\n    'v0' [1] Scalar 1\n    'v1' [1] Scalar -4\n"
        "  'p' Concat 0\n    'p0' [1] Scalar 0.5\n    'p1' [1] Scalar 0.5\n'k0' Cumulant\n  'x'\n", f);
  for (int i = 1; i < LEVELS; i++) fprintf(f, "'a%d' Add\n  'x'\n  'k%d'\n'k%d' Cumulant\n  'a%d'\n", i, i - 1, i, i);
  cr_assert_eq(fclose(f), 0);
  cr_assert_eq(tu_sh("cd %s && " CIRCC_BIN " eval --all nested.circ --output k%d=@eval.npy", dir, LEVELS - 1), 0);
  const double want[1] = {-1.5 * LEVELS};
  expect_values(dir, "eval.npy", want, 1);
  tu_sh("rm -rf %s", dir);
  free(p), free(dir);
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
#ifdef __SANITIZE_ADDRESS__
  cr_skip_test("AddressSanitizer reserves more address space than the limit leaves");
#endif
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
