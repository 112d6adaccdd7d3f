/* test_rv.c — the rv stage (compiler/middle/rv.c): groups, keys, passes and
 * the post circuit, and every located error. Values of expectations are
 * checked end to end (the compiled programs against circc eval --all and the
 * exact values of tests/data/rv/expected.json) elsewhere; here the structure. */
#include <criterion/criterion.h>
#include <string.h>
#include "testutil.h"

static Comp *C;
static void setup(void) { C = tu_comp(); }
static void teardown(void) { tu_free(C); }
TestSuite(rv, .init = setup, .fini = teardown);

static const Expectation *rv_file(const char *rel, Compilation *cm) {
  cr_assert(tu_run_file(C, tu_data(rel), NULL, STAGE_RV, cm), "%s", tu_diags(C));
  cr_assert(cm->expect.present);
  return &cm->expect;
}

static const Expectation *rv_text(const char *text, Compilation *cm) {
  cr_assert(tu_run(C, text, STAGE_RV, cm), "%s", tu_diags(C));
  return &cm->expect;
}

static void rv_fails(const char *text, const char *where, const char *message) {
  Compilation cm = {0};
  cr_assert(!tu_run(C, text, STAGE_RV, &cm), "accepted:\n%s", text);
  cr_assert(strstr(tu_diags(C), where), "want '%s' in:\n%s", where, tu_diags(C));
  cr_assert(strstr(tu_diags(C), message), "want '%s' in:\n%s", message, tu_diags(C));
}

/* random_variables.md §4.4's test vectors (tests/data/rv/expected.json). */
Test(rv, group_keys_from_tag_uuids) {
  cr_assert_eq(rv_uuid_key("0b9c1a52-3d2e-4f6a-9e57-1c2d3e4f5a61"), 0x6d622a1578d18057ULL);
  cr_assert_eq(rv_uuid_key("5e0f7d21-8a4b-4c3d-b2e1-6f7a8b9c0d12"), 0x82ec687dcf81463ULL);
  cr_assert_eq(rv_uuid_key("9d8c7b6a-5f4e-4d3c-a2b1-0f1e2d3c4b5a"), 0xa84d495e045485a5ULL);
}

Test(rv, one_tag_group_two_variables) {
  Compilation cm = {0};
  const Expectation *x = rv_file("rv/dice_shared.circ", &cm);
  cr_assert_eq(x->groups.n, 1);
  const RvGroup *g = &x->groups.g[0];
  cr_assert_str_eq(g->name, "g1");
  cr_assert(g->tagged && g->uniform);
  cr_assert_eq(g->size, 6);
  cr_assert_eq(g->key, 0x6d622a1578d18057ULL);
  cr_assert_eq(g->vars.n, 2);
  cr_assert_str_eq(g->vars.node[0]->name, "d1");
  cr_assert_str_eq(g->vars.node[1]->name, "d2");
  for (int i = 0; i < 6; i++) cr_assert_eq(g->probs[i], 0.16666666666666666);
  cr_assert_eq(x->ncumulants, 1);
  cr_assert_eq(x->npasses, 1);
}

Test(rv, two_tags_over_one_probs_node_are_independent) {
  Compilation cm = {0};
  const Expectation *x = rv_file("rv/dice_independent.circ", &cm);
  cr_assert_eq(x->groups.n, 2);
  cr_assert_str_eq(x->groups.g[0].name, "g1");
  cr_assert_str_eq(x->groups.g[1].name, "g3");
  cr_assert_eq(x->groups.g[1].key, 0x82ec687dcf81463ULL);
  /* the pass takes both groups' rows: two int64 [32] inputs */
  const RvPass *p = &x->pass[0];
  cr_assert_eq(p->program.inputs.n, 2);
  for (int i = 0; i < 2; i++) {
    cr_assert(p->program.input_is_index[i]);
    cr_assert_eq(p->input_cumulant[i], -1);
    cr_assert_eq(p->program.inputs.node[i]->shape.rank, 1);
    cr_assert_eq(p->program.inputs.node[i]->shape.dim[0], 32);
  }
  cr_assert_eq(p->input_group[0] + p->input_group[1], 1);
}

Test(rv, non_uniform_probabilities_are_kept_as_written) {
  Compilation cm = {0};
  const Expectation *x = rv_file("rv/cumulant2.circ", &cm);
  cr_assert_eq(x->groups.n, 2);
  const RvGroup *g = &x->groups.g[0];
  cr_assert_str_eq(g->name, "L");
  cr_assert(!g->uniform);
  const double want[6] = {0.1, 0.1, 0.1, 0.1, 0.2, 0.4};
  for (int i = 0; i < 6; i++) cr_assert_eq(g->probs[i], want[i]);
  cr_assert_eq(x->groups.g[1].vars.n, 1);
  cr_assert_str_eq(x->groups.g[1].vars.node[0]->name, "e");
}

/* Two untagged probs nodes that print alike are one node: one group (§1.2.4);
 * renaming one makes a second group (§1.2.5). */
static const char *two_dice(const char *probs2_name) {
  static char buf[1024];
  snprintf(buf, sizeof buf,
           "'E' Cumulant\n"
           "  'prod' Einsum ,->\n"
           "    'a' DiscreteVar\n"
           "      'v' [6] Scalar 2\n"
           "      'p' [6] Scalar 0.5\n"
           "    'b' DiscreteVar\n"
           "      'v'\n"
           "      '%s' [6] Scalar 0.5\n",
           probs2_name);
  return buf;
}

Test(rv, identical_untagged_probs_are_one_group) {
  Compilation cm = {0};
  cr_assert_eq(rv_text(two_dice("p"), &cm)->groups.n, 1);
}

Test(rv, renamed_probs_are_another_group) {
  Compilation cm = {0};
  const Expectation *x = rv_text(two_dice("q"), &cm);
  cr_assert_eq(x->groups.n, 2);
  cr_assert(!x->groups.g[0].tagged);
  cr_assert_neq(x->groups.g[0].key, x->groups.g[1].key);
}

/* A Tag around a DiscreteVar is an identity: the variable stays in its group. */
Test(rv, a_tag_on_a_variable_makes_no_group) {
  Compilation cm = {0};
  const Expectation *x = rv_text("'E' Cumulant\n"
                                 "  'prod' Einsum ,->\n"
                                 "    'a' DiscreteVar\n"
                                 "      'v' [6] Scalar 2\n"
                                 "      'p' [6] Scalar 0.5\n"
                                 "    't' Tag 11111111-2222-4333-8444-555555555555\n"
                                 "      'a'\n",
                                 &cm);
  cr_assert_eq(x->groups.n, 1);
  cr_assert_eq(x->groups.g[0].vars.n, 1);
}

/* scrub_pattern: one group, K1..K4; K3(u,u,u) computes u once. */
Test(rv, cumulant_orders_and_repeated_arguments) {
  Compilation cm = {0};
  const Expectation *x = rv_file("rv/scrub_pattern.circ", &cm);
  cr_assert_eq(x->groups.n, 1);
  cr_assert_eq(x->groups.g[0].vars.n, 2);
  cr_assert_eq(x->npasses, 1);
  cr_assert_eq(x->ncumulants, 4);
  int orders = 0;
  for (int k = 0; k < 4; k++) {
    const RvCumulant *cu = &x->cumulant[k];
    orders |= 1 << cu->order;
    for (int i = 1; i < cu->order && cu->order >= 3; i++) cr_assert_eq(cu->arg[i], cu->arg[0], "%s", cu->name);
    if (!strcmp(cu->name, "K2(x_ref,x_scrub)")) cr_assert_neq(cu->arg[0], cu->arg[1]);
  }
  cr_assert_eq(orders, 1 << 1 | 1 << 2 | 1 << 3 | 1 << 4);
  /* every pass output has the sample axis first */
  const Program *p = &x->pass[0].program;
  for (int j = 0; j < p->outputs.n; j++) cr_assert_eq(p->outputs.node[j]->shape.dim[0], 32);
  /* the post circuit takes the four estimates, in the outputs' order */
  cr_assert_eq(cm.program.inputs.n, 4);
  cr_assert_eq(cm.program.outputs.n, 4);
  for (int i = 0; i < 4; i++) cr_assert_geq(x->post_input_cumulant[i], 0);
}

/* Cumulant(x − Cumulant(x)): the inner mean is pass 0, the outer pass 1
 * takes it as an input; --sample-batch sets the sample axis. */
Test(rv, nested_cumulants_are_two_passes) {
  Compilation cm = {0};
  const char *text = "'outer' Cumulant\n"
                     "  'centred' Add\n"
                     "    'x' DiscreteVar\n"
                     "      'v' [3] Scalar 2\n"
                     "      'p' [3] Scalar 0.5\n"
                     "    'neg' Einsum ,->\n"
                     "      'inner' Cumulant\n"
                     "        'x'\n"
                     "      'm1' [] Scalar -1\n";
  Comp *c = C;
  DriverOptions o = {.text = text, .text_len = strlen(text), .text_name = "test.circ", .last = STAGE_RV,
                     .verify_each = true, .sample_batch = 5};
  cr_assert(driver_run(c, &o, &cm), "%s", tu_diags(c));
  const Expectation *x = &cm.expect;
  cr_assert_eq(x->npasses, 2);
  cr_assert_eq(x->ncumulants, 2);
  cr_assert_str_eq(x->cumulant[0].name, "inner");
  cr_assert_eq(x->cumulant[0].pass, 0);
  cr_assert_str_eq(x->cumulant[1].name, "outer");
  cr_assert_eq(x->cumulant[1].pass, 1);
  const RvPass *p1 = &x->pass[1];
  cr_assert_eq(p1->program.inputs.n, 2);
  bool rows = false, estimate = false;
  for (int i = 0; i < 2; i++) {
    rows |= p1->input_group[i] == 0;
    estimate |= p1->input_cumulant[i] == 0;
  }
  cr_assert(rows && estimate);
  cr_assert_eq(p1->program.outputs.node[0]->shape.dim[0], 5);
  /* the post circuit needs only the outer estimate */
  cr_assert_eq(cm.program.inputs.n, 1);
  cr_assert_eq(x->post_input_cumulant[0], 1);
}

/* A Cumulant argument that uses no variable is broadcast over the samples. */
Test(rv, a_constant_argument_gets_the_sample_axis) {
  Compilation cm = {0};
  const Expectation *x = rv_text("'K' Cumulant\n"
                                 "  'x' DiscreteVar\n"
                                 "    'v' [3] Scalar 2\n"
                                 "    'p' [3] Scalar 0.5\n"
                                 "  'c' [2] Scalar 7\n",
                                 &cm);
  const Program *p = &x->pass[0].program;
  cr_assert_eq(p->outputs.n, 2);
  cr_assert_eq(p->outputs.node[1]->shape.rank, 2);
  cr_assert_eq(p->outputs.node[1]->shape.dim[0], 32);
  cr_assert_eq(p->outputs.node[1]->shape.dim[1], 2);
}

Test(rv, a_deterministic_program_is_untouched) {
  Compilation cm = {0};
  const char *text = "'y' Add\n  'a' [2] Scalar 1\n  'k' Cumulant\n    'b' [2] Scalar 2\n";
  cr_assert(tu_run(C, text, STAGE_RESOLVE, &cm));
  Node *before = cm.program.outputs.node[0];
  cr_assert(tu_run(C, text, STAGE_RV, &cm), "%s", tu_diags(C));
  cr_assert(!cm.expect.present);
  cr_assert_eq(cm.program.outputs.node[0], before);
}

/* ---- errors, each at the offending node */

Test(rv, negative_probability) {
  rv_fails("'K' Cumulant\n"
           "  'x' DiscreteVar\n"
           "    'v' [2] Scalar 2\n"
           "    'p' Concat 0\n"
           "      'p0' [1] Scalar 0.5\n"
           "      'p1' [1] Scalar -0.5\n",
           "test.circ:4:5: error:", "probability 1 of group 'p' is -0.5; probabilities must be finite and >= 0");
}

Test(rv, probabilities_all_zero) {
  rv_fails("'K' Cumulant\n  'x' DiscreteVar\n    'v' [2] Scalar 2\n    'p' [2] Scalar 0\n", "test.circ:4:5: error:",
           "sum to 0; at least one must be positive");
}

Test(rv, a_variable_below_the_probabilities) {
  rv_fails("'K' Cumulant\n"
           "  'x' DiscreteVar\n"
           "    'v' [2] Scalar 2\n"
           "    'pp' Rearrange a -> a\n"
           "      'y' DiscreteVar\n"
           "        'yv' [2,2] Scalar 0.5\n"
           "        'yp' [2] Scalar 0.5\n",
           "test.circ:5:7: error: 'y' is below the probabilities of DiscreteVar 'x'", "must be constants");
}

Test(rv, a_free_symbol_below_the_values) {
  rv_fails("'K' Cumulant\n"
           "  'x' DiscreteVar\n"
           "    's' [2] Symbol 11111111-2222-4333-8444-555555555555\n"
           "    'p' [2] Scalar 0.5\n",
           "test.circ:3:5: error: 's' is below the values of DiscreteVar 'x'", "must be constants");
}

Test(rv, a_random_output) {
  rv_fails("'y' Add\n  'x' DiscreteVar\n    'v' [2] Scalar 2\n    'p' [2] Scalar 0.5\n  'k' Cumulant\n    'x'\n",
           "test.circ:1:1: error: output 'y' is random", "wrap it in a Cumulant");
}

Test(rv, an_expectation_program_takes_no_inputs) {
  rv_fails("'y' Add\n"
           "  'k' Cumulant\n"
           "    'x' DiscreteVar\n"
           "      'v' [2] Scalar 2\n"
           "      'p' [2] Scalar 0.5\n"
           "  's' [] Symbol 11111111-2222-4333-8444-555555555555\n",
           "test.circ:6:3: error: free symbol 's'", "takes no inputs");
}

Test(rv, a_stored_cumulant_var_is_refused_at_resolve) {
  Compilation cm = {0};
  cr_assert(!tu_run(C, "'s' StoredCumulantVar 1,2|11111111-2222-4333-8444-555555555555\n  'k1' [3] Scalar 0\n  'k2' [3,3] Scalar 1\n",
                    STAGE_RESOLVE, &cm));
  cr_assert(strstr(tu_diags(C), "test.circ:1:1: error: 's' is a StoredCumulantVar"), "%s", tu_diags(C));
}

/* ---- --stream: a DiscreteVar's values read at run time */

static const char STREAMED[] = "'E' Cumulant\n"
                               "  'sum' Einsum a->\n"
                               "    'x' DiscreteVar\n"
                               "      'rows' [4,3] Array 0123456789abcdef01234567\n"
                               "      'p' [4] Scalar 0.25\n"
                               "'F' Cumulant\n"
                               "  'emb' GeneralFunction gen_index_at_0_c\n"
                               "    'table' [5,2] Scalar 1.5\n"
                               "    'tok' Index [0]\n"
                               "      'y' DiscreteVar\n"
                               "        'toks' [4,3] Array 0123456789abcdef01234568\n"
                               "        'p'\n";

/* Neither Array is in any store: streamed ones are never loaded. The rows
 * feed floats, the tokens an index (int64, through the sample gather). */
Test(rv, streamed_values_become_pass_inputs) {
  const char *names[] = {"toks", "rows"};
  C->streamed = names, C->nstreamed = 2;
  C->tensor_dir = "/nonexistent-store";
  Compilation cm = {0};
  const Expectation *x = rv_text(STREAMED, &cm);
  cr_assert_eq(x->ndata, 2);
  const Program *p = &x->pass[0].program;
  int found = 0;
  for (int i = 0; i < p->inputs.n; i++) {
    int d = x->pass[0].input_data[i];
    if (d < 0) continue;
    found++;
    const char *name = x->data[d].array->name;
    cr_assert_eq(p->input_is_index[i], !strcmp(name, "toks"), "%s", name);
    cr_assert_eq(p->inputs.node[i]->shape.rank, 2);
    cr_assert_eq(p->inputs.node[i]->shape.dim[0], 4);
  }
  cr_assert_eq(found, 2);
}

Test(rv, a_stream_that_names_no_values) {
  const char *names[] = {"rows", "toks", "table"};
  C->streamed = names, C->nstreamed = 3;
  C->tensor_dir = "/nonexistent-store";
  rv_fails(STREAMED, "error: --stream table", "no DiscreteVar's values is an Array named 'table'");
}

Test(rv, a_streamed_array_used_elsewhere) {
  const char *names[] = {"rows"};
  C->streamed = names, C->nstreamed = 1;
  C->tensor_dir = "/nonexistent-store";
  rv_fails("'E' Cumulant\n"
           "  'x' DiscreteVar\n"
           "    'rows' [4,3] Array 0123456789abcdef01234567\n"
           "    'p' [4] Scalar 0.25\n"
           "'G' Einsum ab->\n"
           "  'rows'\n",
           "test.circ:5:1: error: --stream rows: 'G' uses the streamed Array 'rows'", "only a DiscreteVar's values");
}

/* The default batch shrinks (powers of two) until every pass's arena fits
 * 1 GiB; --sample-batch is taken as given. Each sample's log_softmax over a
 * [4096,4096] outer product takes 64 MiB of arena. */
static const char BIG_PASS[] = "'K' Cumulant\n"
                               "  'r' Einsum ab->\n"
                               "    'l' GeneralFunction log_softmax\n"
                               "      'o' Einsum a,b->ab\n"
                               "        'x' DiscreteVar\n"
                               "          'v' [2,4096] Scalar 0.5\n"
                               "          'p' [2] Scalar 0.5\n"
                               "        'x'\n";

Test(rv, the_default_batch_fits_the_arena_budget) {
  Compilation cm = {0};
  cr_assert(tu_run(C, BIG_PASS, STAGE_MEMPLAN, &cm), "%s", tu_diags(C));
  cr_assert_lt(cm.sample_batch, 32);
  cr_assert_eq(cm.expect.batch, cm.sample_batch);
  cr_assert_leq(cm.pass_kernels[0].arena_bytes, (int64_t)1 << 30);
  cr_assert_gt(cm.pass_kernels[0].arena_bytes * 2, (int64_t)1 << 30, "not the largest batch that fits");
  cr_assert_eq(cm.expect.pass[0].program.outputs.node[0]->shape.dim[0], cm.sample_batch);
}

Test(rv, an_explicit_batch_is_kept) {
  DriverOptions o = {.text = BIG_PASS, .text_len = strlen(BIG_PASS), .text_name = "test.circ", .last = STAGE_MEMPLAN,
                     .verify_each = true, .sample_batch = 32};
  Compilation cm = {0};
  cr_assert(driver_run(C, &o, &cm), "%s", tu_diags(C));
  cr_assert_eq(cm.expect.batch, 32);
}

Test(rv, an_order_above_ten) {
  char text[1024] = "'K' Cumulant\n  'x' DiscreteVar\n    'v' [2] Scalar 2\n    'p' [2] Scalar 0.5\n";
  for (int i = 0; i < 10; i++) strcat(text, "  'x'\n");
  rv_fails(text, "test.circ:1:1: error: 'K' is a cumulant of order 11", "orders up to 10");
}
