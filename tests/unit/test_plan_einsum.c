/* test_plan_einsum.c — contraction planning (plan_einsum.c): the paths chosen
 * for the spec's example einsums, optimality against a brute force over all
 * binary trees (n <= 5) and the matrix-chain DP (n = 10), and value
 * preservation under the reference evaluator on fixed and random einsums
 * (diagonals, repeated output ids, rank-0 operands, disconnected components). */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "testutil.h"

static Comp *C;
static void setup(void) { C = tu_comp(); }
static void teardown(void) { tu_free(C); }
TestSuite(plan_einsum, .init = setup, .fini = teardown);

/* ------------------------------------------------------------- builders */

/* The einsum `spec` (letters a..z) over `Array rand` leaves whose sizes come
 * from size['x' - 'a']; named `name`, or unnamed if name is NULL. */
static Node *einsum(Comp *c, const char *name, const char *spec, const int64_t *size) {
  char text[8192];
  int len = name ? snprintf(text, sizeof text, "'%s' Einsum %s\n", name, spec)
                 : snprintf(text, sizeof text, "0 Einsum %s\n", spec);
  const char *arrow = strstr(spec, "->");
  cr_assert(arrow);
  int k = 0;
  for (const char *p = spec; p <= arrow; k++) {
    const char *q = p;
    while (*q != ',' && q != arrow) q++;
    len += snprintf(text + len, sizeof text - (size_t)len, "  %d [", 1000 + k);
    for (const char *l = p; l < q; l++)
      len += snprintf(text + len, sizeof text - (size_t)len, "%s%lld", l > p ? "," : "", (long long)size[*l - 'a']);
    len += snprintf(text + len, sizeof text - (size_t)len, "] Array rand\n");
    p = q == arrow ? arrow + 1 : q + 1;
  }
  Compilation cm = {0};
  cr_assert(tu_run(c, text, STAGE_TENSORS, &cm), "parse failed: %s\n%s", tu_diags(c), text);
  cr_assert_eq(cm.tops.n, 1);
  return cm.tops.node[0];
}

/* Sizes by letter from a string like "a=10 b=100 c=5". */
static const int64_t *sizes(const char *s) {
  static int64_t size[4][26];
  static int which;
  int64_t *z = size[which = (which + 1) % 4];
  for (int i = 0; i < 26; i++) z[i] = 2;
  for (const char *p = s; *p;) {
    if (*p >= 'a' && *p <= 'z' && p[1] == '=') {
      z[*p - 'a'] = strtoll(p + 2, (char **)&p, 10);
    } else {
      p++;
    }
  }
  return z;
}

typedef struct Planned {
  Node *orig, *plan;
  char report[4096];
} Planned;

static Planned plan(Comp *c, Node *e) {
  Planned r = {.orig = e, .plan = e};
  char *buf = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&buf, &len);
  cr_assert(plan_einsums(c, &r.plan, 1, f), "plan failed: %s", tu_diags(c));
  fclose(f);
  snprintf(r.report, sizeof r.report, "%s", buf);
  free(buf);
  return r;
}

/* ------------------------------------------------------------- checkers */

typedef struct TreeStats {
  double flops;     /* Σ einsum_flops over the distinct Einsum nodes */
  double cost;      /* Σ (multiply-adds + intermediate size) over binary steps: the planner's cost model */
  int nbinary, nunary;
} TreeStats;

static void walk(const Node *n, const Node **seen, int *nseen, TreeStats *st) {
  for (int i = 0; i < *nseen; i++)
    if (seen[i] == n) return;
  cr_assert_lt(*nseen, 4096);
  seen[(*nseen)++] = n;
  for (int i = 0; i < n->nchild; i++) walk(n->child[i], seen, nseen, st);
  if (n->kind != NK_Einsum) return;
  cr_assert_leq(n->nchild, 2, "an einsum with %d operands survived", n->nchild);
  double f = einsum_flops(n);
  st->flops += f;
  if (n->nchild == 2) st->nbinary++, st->cost += f / 2 + (double)shape_numel(&n->shape);
  else if (n->nchild == 1) st->nunary++, st->cost += f / 2 + (f > 0 ? (double)shape_numel(&n->shape) : 0);
}

static TreeStats tree_stats(const Node *root) {
  static const Node *seen[4096];
  int nseen = 0;
  TreeStats st = {0};
  walk(root, seen, &nseen, &st);
  return st;
}

/* Same value under the reference evaluator, to 1e-9 of the largest magnitude. */
static void expect_same_value(Comp *c, const Node *a, const Node *b, const char *what) {
  Eval *e = eval_new(c);
  Tensor *x = eval_node(e, a), *y = eval_node(e, b);
  cr_assert(x && y, "eval failed: %s", tu_diags(c));
  cr_assert(shape_eq(&x->shape, &y->shape), "%s: shapes differ", what);
  int64_t n = shape_numel(&x->shape);
  double scale = 1e-300;
  for (int64_t i = 0; i < n; i++) scale = fmax(scale, fabs(tensor_get_f64(x, i)));
  for (int64_t i = 0; i < n; i++) {
    double u = tensor_get_f64(x, i), v = tensor_get_f64(y, i);
    cr_assert_leq(fabs(u - v), 1e-9 * scale, "%s: element %lld: %.17g vs %.17g", what, (long long)i, u, v);
  }
  eval_free(e);
}

/* flops and naive flops as printed on the report line */
static void report_flops(const Planned *p, double *flops, double *naive) {
  const char *s = strstr(p->report, "; flops ");
  cr_assert(s, "no flops in report '%s'", p->report);
  cr_assert_eq(sscanf(s, "; flops %lf (naive %lf)", flops, naive), 2, "report '%s'", p->report);
}

/* Everything every planned einsum must satisfy. */
static TreeStats check_planned(Comp *c, const Planned *p, const char *what) {
  TreeStats st = tree_stats(p->plan);
  expect_same_value(c, p->orig, p->plan, what);
  double flops, naive;
  report_flops(p, &flops, &naive);
  cr_assert_eq(flops, st.flops, "%s: report says %g flops, tree has %g", what, flops, st.flops);
  cr_assert_eq(naive, einsum_flops(p->orig), "%s", what);
  cr_assert_leq(flops, naive, "%s: planned %g > naive %g", what, flops, naive);
  cr_assert_eq(st.nbinary, p->orig->nchild - 1, "%s: %d binary steps", what, st.nbinary);
  return st;
}

static void expect_report(const Planned *p, const char *want) {
  cr_expect_str_eq(p->report, want);
}

/* --------------------------------------------------- brute force (n <= 5) */

typedef struct Brute {
  unsigned ids[8]; /* id bitmask per operand (letters) */
  unsigned out;
  const int64_t *size;
  int n;
} Brute;

static unsigned brute_union(const Brute *b, unsigned s) {
  unsigned u = 0;
  for (int i = 0; i < b->n; i++)
    if (s >> i & 1) u |= b->ids[i];
  return u;
}

static double numel_of(const Brute *b, unsigned ids) {
  double n = 1;
  for (int k = 0; k < 26; k++)
    if (ids >> k & 1) n *= (double)b->size[k];
  return n;
}

/* ids of the result of contracting operand subset s */
static unsigned brute_kept(const Brute *b, unsigned s) {
  return brute_union(b, s) & (b->out | brute_union(b, ((1u << b->n) - 1) & ~s));
}

/* min over all binary trees on subset s of Σ multiply-adds (+ intermediate
 * sizes if with_interm); an original operand may first be reduced to the ids
 * it shares (a unary step summing out the ids only it has). */
static double brute_min(const Brute *b, unsigned s, bool with_interm) {
  if (!(s & (s - 1))) return 0;
  double best = INFINITY;
  for (unsigned a = (s - 1) & s; a; a = (a - 1) & s) {
    unsigned r = s & ~a;
    if (a < r) continue; /* each split once */
    double sub = brute_min(b, a, with_interm) + brute_min(b, r, with_interm);
    if (with_interm) sub += numel_of(b, brute_kept(b, s));
    for (int v = 0; v < 4; v++) {
      unsigned x = brute_kept(b, a), y = brute_kept(b, r);
      double c = sub;
      if (!(a & (a - 1))) {
        if (v & 1) c += numel_of(b, brute_union(b, a)) + (with_interm ? numel_of(b, x) : 0);
        else x = brute_union(b, a);
      }
      if (!(r & (r - 1))) {
        if (v & 2) c += numel_of(b, brute_union(b, r)) + (with_interm ? numel_of(b, y) : 0);
        else y = brute_union(b, r);
      }
      best = fmin(best, c + numel_of(b, x | y));
    }
  }
  return best;
}

static Brute brute_of(const char *spec, const int64_t *size) {
  Brute b = {.size = size};
  const char *p = spec;
  for (; *p != '-'; p++) {
    if (*p == ',') b.n++;
    else b.ids[b.n] |= 1u << (*p - 'a');
  }
  b.n++;
  for (p += 2; *p; p++) b.out |= 1u << (*p - 'a');
  return b;
}

/* ------------------------------------------------------- spec examples */

Test(plan_einsum, matrix_chain_left_first) {
  Node *e = einsum(C, "E", "ab,bc,cd->ad", sizes("a=10 b=100 c=5 d=50"));
  Planned p = plan(C, e);
  expect_report(&p, "einsum 'E' ab,bc,cd->ad: path (0,1) (0,1); flops 15000 (naive 1000000)\n");
  check_planned(C, &p, "chain");
  /* names: the result keeps the einsum's name, the intermediate is `E step 0` */
  cr_assert_str_eq(p.plan->name, "E");
  cr_assert_eq(p.plan->loc.line, e->loc.line);
  Node *inner = p.plan->child[0]->kind == NK_Einsum ? p.plan->child[0] : p.plan->child[1];
  cr_assert_str_eq(inner->name, "E step 0");
}

Test(plan_einsum, matrix_chain_right_first) {
  Node *e = einsum(C, NULL, "ab,bc,cd->ad", sizes("a=50 b=5 c=100 d=10"));
  Planned p = plan(C, e);
  char want[200];
  snprintf(want, sizeof want, "einsum #%d ab,bc,cd->ad: path (1,2) (0,1); flops 15000 (naive 1000000)\n", e->id);
  expect_report(&p, want);
  check_planned(C, &p, "chain");
  cr_assert_null(p.plan->name);
  cr_assert_null(p.plan->child[1]->name);
}

/* Chains of 3–5 matrices with random sizes: the planned tree minimises the
 * cost model, and for these sizes also the flops, over all binary trees. */
Test(plan_einsum, chain_optimal_by_brute_force) {
  static const char *specs[] = {"ab,bc,cd->ad", "ab,bc,cd,de->ae", "ab,bc,cd,de,ef->af", "ab,bc,cd,de,ef->"};
  uint64_t rng = 12345;
  int flops_optimal = 0, cases = 0;
  double worst = 1;
  for (int t = 0; t < 60; t++) {
    const char *spec = specs[t % 4];
    int64_t size[26];
    for (int k = 0; k < 26; k++) {
      rng = rng * 6364136223846793005ull + 1442695040888963407ull;
      size[k] = 2 + (int64_t)(rng >> 33) % 40;
    }
    Node *e = einsum(C, "E", spec, size);
    Planned p = plan(C, e);
    TreeStats st = tree_stats(p.plan);
    Brute b = brute_of(spec, size);
    unsigned all = (1u << b.n) - 1;
    double opt = brute_min(&b, all, true);
    if (t % 4 == 3) { /* ab ⊆ bc and ef ⊆ de once a and f are summed: subset pre-contraction is a heuristic */
      cr_assert_leq(st.cost, 1.25 * opt, "%s case %d: cost %g, brute force %g", spec, t, st.cost, opt);
      worst = fmax(worst, st.cost / opt);
      continue;
    }
    cr_assert_eq(st.cost, opt, "%s case %d: cost %g, brute force %g", spec, t, st.cost, opt);
    cr_assert_geq(st.flops, 2 * brute_min(&b, all, false));
    flops_optimal += st.flops == 2 * brute_min(&b, all, false);
    cases++;
  }
  /* the cost model also counts intermediates, so a rare tie may differ in flops */
  cr_assert_geq(flops_optimal, cases * 9 / 10, "%d of %d flops-optimal", flops_optimal, cases);
  fprintf(stderr, "chain_optimal_by_brute_force: %d/%d flops-optimal; full contractions within %.3fx\n",
          flops_optimal, cases, worst);
}

/* Hand-picked chains whose flops optimum is also the cost optimum. */
Test(plan_einsum, chain_flops_minimal) {
  static const struct {
    const char *spec, *size;
  } cases[] = {
      {"ab,bc,cd,de->ae", "a=30 b=35 c=15 d=5 e=10"},
      {"ab,bc,cd,de,ef->af", "a=10 b=20 c=3 d=10 e=6 f=8"},
      {"ab,bc,cd,de,ef->af", "a=5 b=10 c=3 d=12 e=5 f=50"},
  };
  for (size_t t = 0; t < sizeof cases / sizeof *cases; t++) {
    const int64_t *size = sizes(cases[t].size);
    Planned p = plan(C, einsum(C, "E", cases[t].spec, size));
    Brute b = brute_of(cases[t].spec, size);
    TreeStats st = tree_stats(p.plan);
    cr_assert_eq(st.flops, 2 * brute_min(&b, (1u << b.n) - 1, false), "case %zu", t);
    check_planned(C, &p, cases[t].spec);
  }
}

Test(plan_einsum, attention_score) {
  Planned p = plan(C, einsum(C, "E", "qc,kc,,qk->qk", sizes("q=8 k=6 c=16")));
  /* the scalar goes into the smallest superset (the mask), then q·k is a GEMM */
  expect_report(&p, "einsum 'E' qc,kc,,qk->qk: path (2,3) (0,1) (0,1); flops 1728 (naive 4608)\n");
  check_planned(C, &p, "attention");
}

Test(plan_einsum, subset_chain) {
  Planned p = plan(C, einsum(C, "E", "abc,ab,a->a", sizes("a=3 b=4 c=5")));
  expect_report(&p, "einsum 'E' abc,ab,a->a: path (0,1) (0,1); flops 126 (naive 240)\n");
  check_planned(C, &p, "abc,ab,a->a");
}

Test(plan_einsum, outer_product_smallest_first) {
  Planned p = plan(C, einsum(C, "E", "c,b,a->abc", sizes("a=2 b=3 c=4")));
  expect_report(&p, "einsum 'E' c,b,a->abc: path (1,2) (0,1); flops 60 (naive 96)\n");
  check_planned(C, &p, "outer");
}

Test(plan_einsum, disconnected_components) {
  /* {ab,bc} -> a and {de,ef} -> d are contracted first (c and f are lone: bc is
   * reduced first, ef fused), then the outer products, smallest first: d·g, then a */
  Planned p = plan(C, einsum(C, "E", "ab,bc,de,ef,g->adg", sizes("a=3 b=4 c=5 d=2 e=6 f=3 g=2")));
  expect_report(&p, "einsum 'E' ab,bc,de,ef,g->adg: path (1) (0,4) (0,1) (0,2) (0,1); flops 168 (naive 34560)\n");
  TreeStats st = check_planned(C, &p, "components");
  cr_assert_eq(st.nunary, 1);
}

Test(plan_einsum, lone_ids_summed_first) {
  /* `a` only lives in the first operand: it is summed out by a unary step first */
  Planned p = plan(C, einsum(C, "E", "ab,bc,cd->d", sizes("a=50 b=2 c=3 d=4")));
  expect_report(&p, "einsum 'E' ab,bc,cd->d: path (0) (0,2) (0,1); flops 236 (naive 4800)\n");
  TreeStats st = check_planned(C, &p, "lone ids");
  cr_assert_eq(st.nunary, 1);
  /* fused into the first step when that is cheaper: abc's c is lone, ab ⊆ abc */
  Planned q = plan(C, einsum(C, "E", "abc,ab,b->b", sizes("a=3 b=4 c=5")));
  st = check_planned(C, &q, "lone ids fused");
  cr_assert_eq(st.nunary, 0);
}

Test(plan_einsum, repeated_ids) {
  static const char *specs[] = {
      "aa,ab,bc->c", "ab,bc,cd->aa", "ab,ab,ab->", "aab,bc,c->aa", "abca,bc,a->aaa", "aa,aa,aa->a",
      "ab,bc,ca->", "aa,ab,b->bb",   "ab,b,b->abba", "aab,b,cc,c->",
  };
  for (size_t t = 0; t < sizeof specs / sizeof *specs; t++) {
    Planned p = plan(C, einsum(C, "E", specs[t], sizes("a=3 b=4 c=2 d=5")));
    check_planned(C, &p, specs[t]);
    cr_assert_str_eq(p.plan->name, "E");
  }
}

Test(plan_einsum, unary_and_binary_unchanged) {
  static const char *specs[] = {"aa,ab->b", "ab,bc->aa", "h,->h", "ab->ba", "aa->a", "->"};
  for (size_t t = 0; t < sizeof specs / sizeof *specs; t++) {
    Node *e = einsum(C, "E", specs[t], sizes("a=3 b=4 h=5"));
    Planned p = plan(C, e);
    cr_assert_eq(p.plan, e, "%s was rewritten", specs[t]);
    cr_assert_str_eq(p.report, "");
  }
}

Test(plan_einsum, rank0_operands) {
  static const char *specs[] = {"h,,->h", ",h,->h", ",,->", ",,h->", "h,,h->h", ",,,->"};
  for (size_t t = 0; t < sizeof specs / sizeof *specs; t++) {
    Planned p = plan(C, einsum(C, "E", specs[t], sizes("h=5")));
    check_planned(C, &p, specs[t]);
  }
}

/* Shared subgraphs stay shared: one planned node per original einsum. */
Test(plan_einsum, sharing_preserved) {
  const char *text = "'sum' Add\n"
                     "  'E' Einsum ab,bc,cd->ad\n"
                     "    'x' [3,4] Array rand\n"
                     "    'y' [4,5] Array rand\n"
                     "    'z' [5,2] Array rand\n"
                     "  'E'\n"
                     "  'F' Einsum ad,da,->ad\n"
                     "    'E'\n"
                     "    'w' [2,3] Array rand\n"
                     "    's' [] Array rand\n"
                     "'E'\n";
  Compilation cm = {0};
  cr_assert(tu_run(C, text, STAGE_TENSORS, &cm), "%s", tu_diags(C));
  NodeList l = cm.tops;
  cr_assert_eq(l.n, 2);
  Node *orig[2] = {l.node[0], l.node[1]}, *roots[2] = {l.node[0], l.node[1]};
  cr_assert(plan_einsums(C, roots, 2, NULL));
  Node *sum = roots[0], *e = roots[1];
  cr_assert_neq(e, orig[1]);
  cr_assert_eq(sum->child[0], e);
  cr_assert_eq(sum->child[1], e);
  cr_assert_str_eq(sum->child[2]->name, "F");
  TreeStats st = tree_stats(sum);
  cr_assert_eq(st.nbinary, 2 + 2, "%d binary einsums: E must be planned once", st.nbinary);
  expect_same_value(C, orig[0], sum, "shared");
}

/* ---------------------------------------------------------- long chains */

static uint64_t next(uint64_t *s) {
  *s ^= *s << 13, *s ^= *s >> 7, *s ^= *s << 17;
  return *s;
}

/* "ab,bc,...->a<last>" over n matrices */
static void chain_spec(char *buf, int n) {
  int len = 0;
  for (int i = 0; i < n; i++) len += sprintf(buf + len, "%s%c%c", i ? "," : "", 'a' + i, 'a' + i + 1);
  sprintf(buf + len, "->a%c", 'a' + n);
}

/* Classic matrix-chain DP under the planner's cost (multiply-adds + result size). */
static double chain_dp(const int64_t *d, int n) {
  double m[16][16];
  for (int i = 0; i < n; i++) m[i][i] = 0;
  for (int len = 2; len <= n; len++)
    for (int i = 0; i + len - 1 < n; i++) {
      int j = i + len - 1;
      m[i][j] = INFINITY;
      for (int k = i; k < j; k++)
        m[i][j] = fmin(m[i][j], m[i][k] + m[k + 1][j] + (double)(d[i] * d[k + 1] * d[j + 1]) + (double)(d[i] * d[j + 1]));
    }
  return m[0][n - 1];
}

Test(plan_einsum, chain10_dp_optimal) {
  uint64_t rng = 99;
  for (int t = 0; t < 20; t++) {
    int64_t d[26];
    for (int k = 0; k < 26; k++) d[k] = 2 + (int64_t)(next(&rng) % 40);
    char spec[128];
    chain_spec(spec, 10);
    Planned p = plan(C, einsum(C, "E", spec, d));
    TreeStats st = tree_stats(p.plan);
    cr_assert_eq(st.cost, chain_dp(d, 10), "case %d: %g vs DP %g", t, st.cost, chain_dp(d, 10));
    cr_assert_eq(st.nbinary, 9);
  }
}

Test(plan_einsum, chain10_value) {
  uint64_t rng = 7;
  int64_t d[26];
  for (int k = 0; k < 26; k++) d[k] = 1 + (int64_t)(next(&rng) % 3);
  char spec[128];
  chain_spec(spec, 10);
  Planned p = plan(C, einsum(C, "E", spec, d));
  check_planned(C, &p, spec);
}

/* A ring of 12 matrices (the largest DP), with a batch id on every operand. */
Test(plan_einsum, ring12_dp) {
  const char *spec = "zab,zbc,zcd,zde,zef,zfg,zgh,zhi,zij,zjk,zkl,zla->z";
  int64_t d[26];
  uint64_t rng = 5;
  for (int k = 0; k < 26; k++) d[k] = 1 + (int64_t)(next(&rng) % 2);
  Planned p = plan(C, einsum(C, "E", spec, d));
  check_planned(C, &p, spec);
}

/* More than DP_MAX_OPS operands: the greedy path. */
Test(plan_einsum, chain16_greedy) {
  uint64_t rng = 3;
  int64_t d[26];
  for (int k = 0; k < 26; k++) d[k] = 1 + (int64_t)(next(&rng) % 2);
  d[5] = 3, d[9] = 3;
  char spec[128];
  chain_spec(spec, 16);
  Planned p = plan(C, einsum(C, "E", spec, d));
  check_planned(C, &p, spec);
  /* a big chain without evaluation: the greedy result is far below naive */
  for (int k = 0; k < 26; k++) d[k] = 2 + (int64_t)(next(&rng) % 60);
  chain_spec(spec, 20);
  p = plan(C, einsum(C, "E", spec, d));
  TreeStats st = tree_stats(p.plan);
  double flops, naive;
  report_flops(&p, &flops, &naive);
  cr_assert_eq(st.nbinary, 19);
  cr_assert_lt(flops * 1e6, naive);
}

/* ---------------------------------------------------- random einsums */

Test(plan_einsum, random_einsums) {
  uint64_t rng = 0x9e3779b97f4a7c15ull;
  int unary = 0;
  for (int t = 0; t < 300; t++) {
    int nops = 3 + (int)(next(&rng) % 5), nletters = 1 + (int)(next(&rng) % 6);
    int64_t size[26];
    for (int k = 0; k < 26; k++) size[k] = 1 + (int64_t)(next(&rng) % 5);
    char spec[128];
    int len = 0;
    bool used[26] = {0};
    for (int i = 0; i < nops; i++) {
      int rank = (int)(next(&rng) % 5);
      if (rank == 4) rank = 0; /* rank 0 is common */
      if (i) spec[len++] = ',';
      for (int k = 0; k < rank; k++) {
        int l = (int)(next(&rng) % (uint64_t)nletters);
        used[l] = true;
        spec[len++] = (char)('a' + l);
      }
    }
    spec[len++] = '-', spec[len++] = '>';
    int out0 = len;
    for (int l = 0; l < nletters; l++)
      if (used[l] && next(&rng) % 2) spec[len++] = (char)('a' + l);
    for (int k = out0; k + 1 < len; k++) { /* shuffle the output */
      int j = k + (int)(next(&rng) % (uint64_t)(len - k));
      char x = spec[k];
      spec[k] = spec[j], spec[j] = x;
    }
    if (len > out0 && next(&rng) % 6 == 0) spec[len] = spec[out0], len++; /* a repeated output id */
    spec[len] = 0;
    Planned p = plan(C, einsum(C, t % 2 ? "E" : NULL, spec, size));
    TreeStats st = check_planned(C, &p, spec);
    unary += st.nunary > 0;
  }
  fprintf(stderr, "random_einsums: %d of 300 plans have unary steps\n", unary);
}

/* Intermediates may not exceed MAX_RANK (32) axes: X·Y would have 40, so the
 * plan pairs X with Z (or W) instead. All sizes are 1. */
Test(plan_einsum, wide_intermediates_avoided) {
  const char *x = "abcdefghijklmnopqrst", *y = "uvwxyzABCDEFGHIJKLMN", *z = "abcdefghijuvwxyzABCD",
             *w = "klmnopqrstEFGHIJKLMN";
  char text[1024];
  const char *ones = "[1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1]";
  snprintf(text, sizeof text, "'E' Einsum %s,%s,%s,%s->\n  1 %s Array rand\n  2 %s Array rand\n"
           "  3 %s Array rand\n  4 %s Array rand\n", x, y, z, w, ones, ones, ones, ones);
  Compilation cm = {0};
  cr_assert(tu_run(C, text, STAGE_TENSORS, &cm), "%s", tu_diags(C));
  Planned p = plan(C, cm.tops.node[0]);
  check_planned(C, &p, "wide");
}

/* --------------------------------------------------------- einsum_flops */

Test(plan_einsum, einsum_flops_counts) {
  Node *e = einsum(C, "E", "ab,bc->ac", sizes("a=3 b=4 c=5"));
  cr_assert_eq(einsum_flops(e), 120);
  cr_assert_eq(einsum_flops(einsum(C, "E", "ab->a", sizes("a=3 b=4"))), 24);
  cr_assert_eq(einsum_flops(einsum(C, "E", "ab->ba", sizes("a=3 b=4"))), 0);
  cr_assert_eq(einsum_flops(einsum(C, "E", "a->aa", sizes("a=3"))), 0);
  cr_assert_eq(einsum_flops(einsum(C, "E", "ab,bc,cd->ad", sizes("a=1 b=2 c=3 d=4"))), 2 * 24 * 2);
  cr_assert_eq(einsum_flops(e->child[0]), 0); /* not an einsum */
}

/* Sizes near int64 range: costs saturate instead of overflowing. */
Test(plan_einsum, huge_sizes_saturate) {
  /* planning only needs shapes: build leaves as Symbols of huge sizes */
  const char *text = "'E' Einsum ab,bc,cd,de->ae\n"
                     "  'x' [3000000000,3000000000] Symbol\n"
                     "  'y' [3000000000,3000000000] Symbol\n"
                     "  'z' [3000000000,3000000000] Symbol\n"
                     "  'w' [3000000000,2] Symbol\n";
  Compilation cm = {0};
  cr_assert(tu_run(C, text, STAGE_TENSORS, &cm), "%s", tu_diags(C));
  Planned p = plan(C, cm.tops.node[0]);
  cr_assert(strstr(p.report, "(naive 9223372036854775807)"), "%s", p.report);
  TreeStats st = tree_stats(p.plan);
  cr_assert_eq(st.nbinary, 3);
}
