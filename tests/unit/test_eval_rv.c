/* test_eval_rv.c — the reference evaluator's exact expectations
 * (eval_expectations, `circc eval --all`): the five example circuits of
 * tests/data/rv against expected.json (computed by make_cases.py, independently
 * of circc), and small circuits against values worked out by hand in the
 * comments or by explicit loops here. Circuits go through the pipeline to
 * resolve, as `circc eval` runs it. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "json.h"
#include "testutil.h"

static Comp *C;
static void setup(void) { C = tu_comp(); }
static void teardown(void) { tu_free(C); }
TestSuite(eval_rv, .init = setup, .fini = teardown);

/* The program of a circuit (text, or a file under tests/data when path), its
 * groups, and an Eval with exact expectations (at most max combinations). */
typedef struct Exact {
  Compilation cm;
  RvGroups groups;
  Eval *e;
} Exact;

static bool exact_open(Exact *x, const char *text, const char *path, int64_t max) {
  memset(x, 0, sizeof *x);
  bool ok = path ? tu_run_file(C, tu_data(path), NULL, STAGE_RESOLVE, &x->cm)
                 : tu_run_named(C, "t.circ", text, STAGE_RESOLVE, &x->cm);
  if (!ok || !rv_groups(C, x->cm.program.outputs.node, x->cm.program.outputs.n, &x->groups)) return false;
  x->e = eval_new(C);
  eval_expectations(x->e, &x->groups, max);
  return true;
}

static const Node *output(const Exact *x, const char *name) {
  const Program *p = &x->cm.program;
  for (int i = 0; i < p->outputs.n; i++)
    if (!strcmp(p->output_names[i], name)) return p->outputs.node[i];
  cr_assert_fail("no output '%s'", name);
  return NULL;
}

/* The value of output `name`, which must evaluate. */
static const double *value(Exact *x, const char *name, Shape *shape) {
  Tensor *t = eval_node(x->e, output(x, name));
  cr_assert(t, "eval of '%s' failed: %s", name, tu_diags(C));
  if (shape) *shape = t->shape;
  return t->data;
}

/* The scalar output `name` of circuit text. */
static double scalar_of(const char *text, const char *name) {
  Exact x;
  cr_assert(exact_open(&x, text, NULL, 1000000), "%s", tu_diags(C));
  Shape s;
  double v = value(&x, name, &s)[0];
  cr_assert_eq(s.rank, 0, "'%s' is not a scalar", name);
  eval_free(x.e);
  return v;
}

/* The diagnostics of a circuit that must fail: to resolve, in rv_groups or in
 * eval_node of its first output. */
static const char *failure(const char *text, int64_t max) {
  Exact x;
  if (exact_open(&x, text, NULL, max)) {
    cr_assert_null(eval_node(x.e, x.cm.program.outputs.node[0]), "eval should fail");
    eval_free(x.e);
  }
  cr_assert_gt(diag_error_count(C), 0);
  return tu_diags(C);
}

#define ASSERT_HAS(d, s) cr_assert(strstr((d), (s)), "expected \"%s\" in:\n%s", (s), (d))

static void assert_near(double got, double want, const char *what) {
  cr_assert(fabs(got - want) <= 1e-12 * fmax(1, fabs(want)), "%s: got %.17g, want %.17g", what, got, want);
}

/* ------------------------------------------------ the example circuits */

static char *slurp(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  cr_assert(f, "cannot open %s", path);
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *s = malloc((size_t)n + 1);
  cr_assert(s && fread(s, 1, (size_t)n, f) == (size_t)n);
  fclose(f);
  *len = (size_t)n;
  return s;
}

/* expected.json's number: "exact" as a fraction "p/q" where given, else "value". */
static double expected_number(const Json *exact, const Json *value) {
  const char *s = json_str(exact);
  if (s) {
    long long p, q = 1;
    int got = sscanf(s, "%lld/%lld", &p, &q);
    cr_assert(got >= 1, "bad fraction '%s'", s);
    return (double)p / (double)q;
  }
  double v;
  cr_assert(json_num(value, &v));
  return v;
}

/* Flattens an output's expected values (nested arrays, row-major) into want. */
static void expected_values(const Json *exact, const Json *value, double *want, int64_t *n) {
  cr_assert(value);
  if (value->type != JSON_ARRAY) {
    want[(*n)++] = expected_number(exact, value);
    return;
  }
  for (size_t i = 0; i < json_len(value); i++) expected_values(json_at(exact, i), json_at(value, i), want, n);
}

/* Every output of case `name` of expected.json against the evaluator. */
static void check_case(const char *name) {
  size_t len;
  char *text = slurp(tu_data("rv/expected.json"), &len);
  JsonError err;
  const Json *root = json_parse(&C->arena, text, len, &err);
  cr_assert(root, "expected.json: %s", err.msg);
  const Json *cs = json_get(json_get(root, "cases"), name);
  cr_assert(cs, "expected.json has no case %s", name);
  Exact x;
  cr_assert(exact_open(&x, NULL, arena_printf(&C->arena, "rv/%s", json_str(json_get(cs, "file"))), 1000000), "%s",
            tu_diags(C));
  const Json *outs = json_get(cs, "outputs");
  cr_assert_eq(json_len(outs), (size_t)x.cm.program.outputs.n);
  for (size_t o = 0; o < json_len(outs); o++) {
    const char *out = json_key(outs, o);
    const Json *want_json = json_at(outs, o);
    double want[64];
    int64_t n = 0;
    expected_values(json_get(want_json, "exact"), json_get(want_json, "value"), want, &n);
    Shape s;
    const double *got = value(&x, out, &s);
    cr_assert_eq(shape_numel(&s), n, "%s: %lld values, expected.json has %lld", out, (long long)shape_numel(&s),
                 (long long)n);
    const Json *dims = json_get(want_json, "shape");
    cr_assert_eq((size_t)s.rank, json_len(dims), "%s: rank", out);
    for (int a = 0; a < s.rank; a++) {
      int64_t d;
      cr_assert(json_int(json_at(dims, (size_t)a), &d) && d == s.dim[a], "%s: axis %d", out, a);
    }
    for (int64_t i = 0; i < n; i++) assert_near(got[i], want[i], arena_printf(&C->arena, "%s[%lld]", out, (long long)i));
  }
  cr_assert_eq(diag_error_count(C), 0, "%s", tu_diags(C));
  eval_free(x.e);
  free(text);
}

/* d1 and d2 share group g1: E[d1·d2] = Σ i²/6 = 91/6 (not 49/4) */
Test(eval_rv, dice_shared) { check_case("dice_shared"); }
/* the same probs node under two Tag UUIDs: 36 pairs, E = 3.5² = 49/4 */
Test(eval_rv, dice_independent) { check_case("dice_independent"); }
/* expected_loss_by_seq = [1.3513939857, 1.5589324808], expected_loss = 1.4551632333 */
Test(eval_rv, dataset_loss) { check_case("dataset_loss"); }
/* K2(x,y) = [76/25, 571/25], K2(y,e) = 0, K2(y,y+e) = 76/25 */
Test(eval_rv, cumulant2) { check_case("cumulant2"); }
/* E[f] = 3/2, K2 = [[-57/16, 1/4], [1/4, -1]], K3 = 63/32, K4 = -2483/128 */
Test(eval_rv, scrub_pattern) { check_case("scrub_pattern"); }

/* ------------------------------------------------------------ groups */

/* the rows of a Concat at depth 3 (circuit text indents by 2 per level) */
#define DICE "        1 [1] Scalar 1\n        2 [1] Scalar 2\n        3 [1] Scalar 3\n" \
             "        4 [1] Scalar 4\n        5 [1] Scalar 5\n        6 [1] Scalar 6\n"
#define ECID "        11 [1] Scalar 6\n        12 [1] Scalar 5\n        13 [1] Scalar 4\n" \
             "        14 [1] Scalar 3\n        15 [1] Scalar 2\n        16 [1] Scalar 1\n"

Test(eval_rv, untagged_identical_probs_are_one_group) {
  /* two unnamed [6] Scalars that print alike are one node, hence one group:
   * a = i, b = 7 − i on the same row: E[a·b] = Σ i(7−i)/6 = 56/6 */
  const char *text = "'E' Cumulant\n"
                     "  'ab' Einsum ,->\n"
                     "    'a' DiscreteVar\n"
                     "      'dice' Concat 0\n" DICE
                     "      7 [6] Scalar 0.16666666666666666\n"
                     "    'b' DiscreteVar\n"
                     "      'ecid' Concat 0\n" ECID
                     "      8 [6] Scalar 0.16666666666666666\n";
  assert_near(scalar_of(text, "E"), 56.0 / 6, "E[a·b], one group");
}

Test(eval_rv, tags_with_different_uuids_are_independent_groups) {
  /* the same probs node under two Tags: independent, E[a·b] = 3.5 · 3.5 */
  const char *text = "'E' Cumulant\n"
                     "  'ab' Einsum ,->\n"
                     "    'a' DiscreteVar\n"
                     "      'dice' Concat 0\n" DICE
                     "      'g1' Tag 0b9c1a52-3d2e-4f6a-9e57-1c2d3e4f5a61\n"
                     "        'p' [6] Scalar 0.16666666666666666\n"
                     "    'b' DiscreteVar\n"
                     "      'ecid' Concat 0\n" ECID
                     "      'g2' Tag 5e0f7d21-8a4b-4c3d-b2e1-6f7a8b9c0d12\n"
                     "        'p'\n";
  assert_near(scalar_of(text, "E"), 12.25, "E[a·b], two groups");
}

Test(eval_rv, a_tag_on_a_variable_is_the_same_variable) {
  /* Tag(a) · a: one group, E[a²] = 91/6 */
  const char *text = "'E' Cumulant\n"
                     "  'aa' Einsum ,->\n"
                     "    'a' DiscreteVar\n"
                     "      'dice' Concat 0\n" DICE
                     "      'p' [6] Scalar 0.16666666666666666\n"
                     "    't' Tag 1f2e3d4c-5b6a-4798-8a7b-6c5d4e3f2a10\n"
                     "      'a'\n";
  assert_near(scalar_of(text, "E"), 91.0 / 6, "E[Tag(a)·a]");
}

/* ---------------------------------------------------------- cumulants */

/* x ∈ {1, 2, 4} with probabilities [2, 1, 1] (normalised: .5, .25, .25):
 * E[x] = 2, Var(x) = .5·1 + .25·0 + .25·4 = 1.5 */
#define X124 "  'x' DiscreteVar\n" \
             "    'xv' Concat 0\n      1 [1] Scalar 1\n      2 [1] Scalar 2\n      3 [1] Scalar 4\n" \
             "    'xp' Concat 0\n      4 [1] Scalar 2\n      5 [1] Scalar 1\n      6 [1] Scalar 1\n"

Test(eval_rv, nested_cumulants_are_constants) {
  const char *text = "'Kx' Cumulant\n" X124
                     "'K(x-K(x))' Cumulant\n"
                     "  'c' Add\n"
                     "    'x'\n"
                     "    'neg' Einsum ,->\n"
                     "      'Kx'\n"
                     "      'm1' [] Scalar -1\n"
                     "'K((x-K(x))^2)' Cumulant\n"
                     "  'sq' Einsum ,,->\n    'c'\n    'c'\n    9 [] Scalar 1\n"
                     "'K2(x,x)' Cumulant\n  'x'\n  'x'\n";
  Exact x;
  cr_assert(exact_open(&x, text, NULL, 1000000), "%s", tu_diags(C));
  assert_near(value(&x, "Kx", NULL)[0], 2, "E[x]");
  assert_near(value(&x, "K(x-K(x))", NULL)[0], 0, "E[x − E x]");
  assert_near(value(&x, "K((x-K(x))^2)", NULL)[0], 1.5, "E[(x − E x)²]");
  assert_near(value(&x, "K2(x,x)", NULL)[0], 1.5, "K2(x,x)");
  eval_free(x.e);
}

Test(eval_rv, order_three_on_a_non_uniform_group) {
  /* x ∈ {0, 1, 3} and y = x² ∈ {0, 1, 9} on one group, probabilities
   * [2, 1, 1]: E x = 1, E y = 2.5;
   * κ3(x) = E[(x−1)³] = .5·(−1) + .25·0 + .25·8 = 1.5;
   * κ(x,x,y) = E[(x−1)²(y−2.5)] = .5·1·(−2.5) + .25·0 + .25·4·6.5 = 5.25 */
  const char *text = "'K3(x,x,x)' Cumulant\n"
                     "  'x' DiscreteVar\n"
                     "    'xv' Concat 0\n      1 [1] Scalar 0\n      2 [1] Scalar 1\n      3 [1] Scalar 3\n"
                     "    'g' Tag 77aa55cc-1234-4abc-9def-0123456789ab\n"
                     "      'gp' Concat 0\n        4 [1] Scalar 2\n        5 [1] Scalar 1\n        6 [1] Scalar 1\n"
                     "  'x'\n  'x'\n"
                     "'K3(x,x,y)' Cumulant\n  'x'\n  'x'\n"
                     "  'y' DiscreteVar\n"
                     "    'yv' Concat 0\n      7 [1] Scalar 0\n      8 [1] Scalar 1\n      9 [1] Scalar 9\n"
                     "    'g'\n";
  Exact x;
  cr_assert(exact_open(&x, text, NULL, 1000000), "%s", tu_diags(C));
  assert_near(value(&x, "K3(x,x,x)", NULL)[0], 1.5, "K3(x,x,x)");
  assert_near(value(&x, "K3(x,x,y)", NULL)[0], 5.25, "K3(x,x,y)");
  eval_free(x.e);
}

Test(eval_rv, output_axes_follow_child_order) {
  /* K2(u:[2], v:[3]) on one group of 3 rows with probabilities [1, 2, 3]:
   * element [i, j] = Σ_r p_r (u_r[i] − ū[i]) (v_r[j] − v̄[j]), computed here by
   * loops; and K2(v, u) is its transpose. */
  static const double u[3][2] = {{1, -2}, {0, 5}, {3, 1}}, v[3][3] = {{2, 0, 1}, {-1, 4, 2}, {7, 3, -3}};
  static const double p[3] = {1.0 / 6, 2.0 / 6, 3.0 / 6};
  double ub[2] = {0}, vb[3] = {0}, want[2][3] = {{0}};
  for (int r = 0; r < 3; r++) {
    for (int i = 0; i < 2; i++) ub[i] += p[r] * u[r][i];
    for (int j = 0; j < 3; j++) vb[j] += p[r] * v[r][j];
  }
  for (int r = 0; r < 3; r++)
    for (int i = 0; i < 2; i++)
      for (int j = 0; j < 3; j++) want[i][j] += p[r] * (u[r][i] - ub[i]) * (v[r][j] - vb[j]);
  const char *text = "'K2(u,v)' Cumulant\n"
                     "  'u' DiscreteVar\n"
                     "    'uv' Rearrange (a:3 b) -> a b\n"
                     "      'uf' Concat 0\n        1 [1] Scalar 1\n        2 [1] Scalar -2\n        3 [1] Scalar 0\n"
                     "        4 [1] Scalar 5\n        5 [1] Scalar 3\n        6 [1] Scalar 1\n"
                     "    'g' Concat 0\n      7 [1] Scalar 1\n      8 [1] Scalar 2\n      9 [1] Scalar 3\n"
                     "  'v' DiscreteVar\n"
                     "    'vv' Rearrange (a:3 b) -> a b\n"
                     "      'vf' Concat 0\n        11 [1] Scalar 2\n        12 [1] Scalar 0\n        13 [1] Scalar 1\n"
                     "        14 [1] Scalar -1\n        15 [1] Scalar 4\n        16 [1] Scalar 2\n"
                     "        17 [1] Scalar 7\n        18 [1] Scalar 3\n        19 [1] Scalar -3\n"
                     "    'g'\n"
                     "'K2(v,u)' Cumulant\n  'v'\n  'u'\n";
  Exact x;
  cr_assert(exact_open(&x, text, NULL, 1000000), "%s", tu_diags(C));
  Shape s, t;
  const double *uv = value(&x, "K2(u,v)", &s), *vu = value(&x, "K2(v,u)", &t);
  cr_assert(s.rank == 2 && s.dim[0] == 2 && s.dim[1] == 3 && t.rank == 2 && t.dim[0] == 3 && t.dim[1] == 2);
  for (int i = 0; i < 2; i++)
    for (int j = 0; j < 3; j++) {
      assert_near(uv[i * 3 + j], want[i][j], "K2(u,v)");
      assert_near(vu[j * 2 + i], want[i][j], "K2(v,u)");
    }
  eval_free(x.e);
}

Test(eval_rv, constants_inside_a_random_cumulant_and_order_zero) {
  /* κ(c, x) = 0 for a constant c; κ(x + c) = E x + c; K() = 1 */
  const char *text = "'K2(c,x)' Cumulant\n"
                     "  'c' [] Scalar 7\n" X124
                     "'K(x+c)' Cumulant\n  'xc' Add\n    'x'\n    'c'\n"
                     "'K()' Cumulant\n";
  Exact x;
  cr_assert(exact_open(&x, text, NULL, 1000000), "%s", tu_diags(C));
  assert_near(value(&x, "K2(c,x)", NULL)[0], 0, "K2(c,x)");
  assert_near(value(&x, "K(x+c)", NULL)[0], 9, "E[x + 7]");
  assert_near(value(&x, "K()", NULL)[0], 1, "K()");
  eval_free(x.e);
}

Test(eval_rv, rows_of_probability_zero_are_never_evaluated) {
  /* values [1, −inf] (log 0) with probabilities [1, 0]: E = 1, not NaN */
  const char *text = "'E' Cumulant\n"
                     "  'x' DiscreteVar\n"
                     "    'xv' Concat 0\n      1 [1] Scalar 1\n      'l' GeneralFunction log\n        2 [1] Scalar 0\n"
                     "    'xp' Concat 0\n      3 [1] Scalar 1\n      4 [1] Scalar 0\n";
  assert_near(scalar_of(text, "E"), 1, "E over the positive rows");
}

Test(eval_rv, a_deterministic_output_beside_a_random_one) {
  /* values used both as a constant and through the variable */
  const char *text = "'E' Cumulant\n" X124 "'sum' Einsum a->\n  'xv'\n";
  Exact x;
  cr_assert(exact_open(&x, text, NULL, 1000000), "%s", tu_diags(C));
  assert_near(value(&x, "sum", NULL)[0], 7, "Σ values");
  assert_near(value(&x, "E", NULL)[0], 2, "E x");
  eval_free(x.e);
}

/* ------------------------------------------------------------- errors */

Test(eval_rv, too_many_combinations) {
  /* two independent groups of 6: 36 combinations > 35 */
  const char *text = "'E' Cumulant\n"
                     "  'ab' Einsum ,->\n"
                     "    'a' DiscreteVar\n"
                     "      'dice' Concat 0\n" DICE
                     "      'g1' Tag 0b9c1a52-3d2e-4f6a-9e57-1c2d3e4f5a61\n"
                     "        'p' [6] Scalar 1\n"
                     "    'b' DiscreteVar\n"
                     "      'dice'\n"
                     "      15 Tag 5e0f7d21-8a4b-4c3d-b2e1-6f7a8b9c0d12\n"
                     "        'p'\n";
  const char *d = failure(text, 35);
  ASSERT_HAS(d, "t.circ:1:1: error: 'E': its exact expectation enumerates 36 combinations of rows of "
                "'g1' (6 rows) x group 1 (6 rows), more than the limit of 35");
  cr_assert_eq(diag_error_count(C), 1);
  tu_free(C);
  C = tu_comp();
  assert_near(scalar_of(text, "E"), 12.25, "E[a·b] at the limit");
}

Test(eval_rv, a_random_output_is_an_error) {
  const char *d = failure("'y' Einsum ,->\n" X124 "  'two' [] Scalar 2\n", 1000);
  ASSERT_HAS(d, "t.circ:1:1: error: output 'y' is random: DiscreteVar 'x' reaches it outside any Cumulant; wrap it in "
                "a Cumulant for its expectation");
  ASSERT_HAS(d, "t.circ:2:3: note: the DiscreteVar 'x'");
}

Test(eval_rv, without_expectations_a_discrete_var_suggests_all) {
  Compilation cm = {0};
  cr_assert(tu_run_named(C, "t.circ", "'E' Cumulant\n" X124, STAGE_RESOLVE, &cm), "%s", tu_diags(C));
  Eval *e = eval_new(C);
  cr_assert_null(eval_node(e, cm.program.outputs.node[0]));
  eval_free(e);
  ASSERT_HAS(tu_diags(C), "t.circ:2:3: error: 'x' is a DiscreteVar, which has no single value; circc eval --all "
                          "computes exact expectations");
}

Test(eval_rv, an_error_in_one_combination_names_its_rows) {
  /* row 1's index 5 is out of range for the 3-row table */
  const char *text = "'E' Cumulant\n"
                     "  'pick' GeneralFunction gen_index_at_0_c\n"
                     "    'table' [3] Scalar 1\n"
                     "    'i' DiscreteVar\n"
                     "      'iv' Concat 0\n        1 [1] Scalar 0\n        2 [1] Scalar 5\n"
                     "      'ip' [2] Scalar 1\n";
  const char *d = failure(text, 1000);
  ASSERT_HAS(d, "index value 5 at position 0 is out of range for an axis of size 3");
  ASSERT_HAS(d, "t.circ:1:1: note: while evaluating the arguments of 'E' for 'ip' row 1");
}

Test(eval_rv, order_above_twelve_is_refused) {
  const char *text = "'K13' Cumulant\n" X124
                     "  'x'\n  'x'\n  'x'\n  'x'\n  'x'\n  'x'\n  'x'\n  'x'\n  'x'\n  'x'\n  'x'\n  'x'\n";
  ASSERT_HAS(failure(text, 1000), "t.circ:1:1: error: 'K13': exact cumulants of order 13 are beyond the reference "
                                  "evaluator (at most 12)");
}

Test(eval_rv, order_twelve_of_a_coin) {
  /* a fair ±1 coin: κ_2n = 2^2n (2^2n − 1) B_2n / 2n (log cosh t), so
   * κ12 = 4096 · 4095 · (−691/2730) / 12 = −353792 (and κ4 = 1 − 3 = −2) */
  const char *text = "'K12' Cumulant\n"
                     "  'x' DiscreteVar\n"
                     "    'xv' Concat 0\n      1 [1] Scalar 1\n      2 [1] Scalar -1\n"
                     "    'xp' [2] Scalar 0.5\n"
                     "  'x'\n  'x'\n  'x'\n  'x'\n  'x'\n  'x'\n  'x'\n  'x'\n  'x'\n  'x'\n  'x'\n";
  double k12 = scalar_of(text, "K12");
  cr_assert(fabs(k12 + 353792) < 1e-6, "κ12 = %.17g", k12);
}

/* Bad probabilities are rv_groups' located errors. */
static const char *bad_probs(const char *probs) {
  return failure(arena_printf(&C->arena, "'E' Cumulant\n  'x' DiscreteVar\n    'v' [3] Scalar 2\n%s", probs), 1000);
}

Test(eval_rv, negative_nan_and_all_zero_probabilities) {
  ASSERT_HAS(bad_probs("    'p' Concat 0\n      1 [1] Scalar 1\n      2 [2] Scalar -0.5\n"),
             "t.circ:4:5: error: probability 1 of group 'p' is -0.5; probabilities must be finite and >= 0");
  tu_free(C);
  C = tu_comp();
  ASSERT_HAS(bad_probs("    'p' GeneralFunction log\n      'm' [3] Scalar -1\n"), "t.circ:4:5: error: probability 0 of group 'p' is ");
  ASSERT_HAS(tu_diags(C), "nan; probabilities must be finite and >= 0");
  tu_free(C);
  C = tu_comp();
  ASSERT_HAS(bad_probs("    'p' [3] Scalar 0\n"), "t.circ:4:5: error: the probabilities of group 'p' sum to 0; at least "
                                                 "one must be positive");
}

Test(eval_rv, probabilities_of_the_wrong_length) {
  ASSERT_HAS(bad_probs("    'p' [4] Scalar 1\n"), "t.circ:2:3: error: DiscreteVar 'x': needs values [S,...] and probs [S], "
                                                 "found [3] and [4]");
}

Test(eval_rv, a_discrete_var_below_probabilities) {
  ASSERT_HAS(bad_probs("    'p' Add\n      'q' [3] Scalar 1\n      'y' DiscreteVar\n        'yv' [3] Scalar 1\n        'q'\n"),
             "t.circ:6:7: error: 'y' is below the probabilities of DiscreteVar 'x'; a DiscreteVar's values and "
             "probabilities must be constants");
}
