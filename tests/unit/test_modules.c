/* test_modules.c — module substitution and resolve (rust_circuit_format.md §5):
 * the spec's module examples E4–E6 against hand-computed values, batching
 * rules checked against the definitional vmap semantics (§5.2) by slicing
 * arguments, flag checks, symbolic sizes and -D, and a GPT-2-style block in
 * module form (§7.2) against an independent plain-C forward pass. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "testutil.h"

/* The driver up to STAGE_TENSORS on text; cm (zeroed) may go on from there. */
static NodeList parse_in(Comp *c, const char *text, Compilation *cm) {
  cr_assert(tu_run(c, text, STAGE_TENSORS, cm), "parse failed:\n%s", tu_diags(c));
  return cm->tops;
}

static NodeList parse_ok(Comp *c, const char *text) {
  Compilation cm = {0};
  return parse_in(c, text, &cm);
}

static Node *top(NodeList l, const char *name) {
  for (int i = 0; i < l.n; i++)
    if (l.node[i]->name && !strcmp(l.node[i]->name, name)) return l.node[i];
  cr_assert_fail("no top-level circuit '%s'", name);
  return NULL;
}

static Node *find_rec(Node *n, const char *name, int depth) {
  if (n->name && !strcmp(n->name, name)) return n;
  if (depth > 200) return NULL;
  for (int i = 0; i < n->nchild; i++) {
    Node *r = find_rec(n->child[i], name, depth + 1);
    if (r) return r;
  }
  if (n->kind == NK_Module)
    for (int i = 0; i < module_nargs(n); i++)
      if (n->u.module.arg[i].symbol->name && !strcmp(n->u.module.arg[i].symbol->name, name))
        return n->u.module.arg[i].symbol;
  return NULL;
}

static Node *find(Node *root, const char *name) {
  Node *n = find_rec(root, name, 0);
  cr_assert(n, "no node '%s'", name);
  return n;
}

static Node *substitute(Comp *c, Node *n) {
  bool ok = modules_substitute_all(c, &n, 1);
  cr_assert(ok, "substitution failed:\n%s", tu_diags(c));
  return n;
}

static Tensor *eval1(Comp *c, Node *n) {
  Eval *e = eval_new(c);
  Tensor *t = eval_node(e, n);
  cr_assert(t, "eval failed:\n%s", tu_diags(c));
  eval_free(e);
  return t;
}

static bool has_module(Node *n, int depth) {
  if (n->kind == NK_Module) return true;
  for (int i = 0; i < n->nchild && depth < 500; i++)
    if (has_module(n->child[i], depth + 1)) return true;
  return false;
}

/* The definitional semantics (§5.2): for every index b of the module's batch
 * shape, substitute the spec with each argument sliced at b (args with fewer
 * batch dims broadcast) and compare with the batched result at b. This checks
 * all of §5.4's expand rules without trusting them. */
static void check_vmap(Comp *c, Node *mod, const Tensor *batched) {
  int nargs = module_nargs(mod);
  Tensor **argv = calloc((size_t)nargs, sizeof *argv);
  int batch_rank = mod->shape.rank - mod->child[0]->shape.rank;
  for (int i = 0; i < nargs; i++) argv[i] = eval1(c, substitute(c, mod->child[i + 1]));
  Shape B = {batch_rank, {0}};
  memcpy(B.dim, mod->shape.dim, sizeof(int64_t) * (size_t)batch_rank);
  int64_t nb = shape_numel(&B), inner = shape_numel(&mod->shape) / (nb ? nb : 1);
  for (int64_t b = 0; b < nb; b++) {
    int64_t idx[MAX_RANK], rem = b;
    for (int d = batch_rank - 1; d >= 0; d--) idx[d] = rem % B.dim[d], rem /= B.dim[d];
    Node proto = *mod;
    proto.child = calloc((size_t)mod->nchild, sizeof(Node *));
    proto.child[0] = mod->child[0];
    for (int i = 0; i < nargs; i++) {
      const Tensor *a = argv[i];
      int sym_rank = mod->u.module.arg[i].symbol->shape.rank, r = a->shape.rank - sym_rank;
      Shape s = {sym_rank, {0}};
      memcpy(s.dim, a->shape.dim + r, sizeof(int64_t) * (size_t)sym_rank);
      int64_t off = 0, n = shape_numel(&s);
      for (int d = 0; d < r; d++) off = off * a->shape.dim[d] + idx[batch_rank - r + d];
      Tensor *slice = tensor_new(c, DT_F64, &s);
      memcpy(slice->data, (double *)a->data + off * n, sizeof(double) * (size_t)n);
      Node arr = {.kind = NK_Array, .loc = mod->loc, .u.array.tensor = slice};
      proto.child[i + 1] = ir_make(c, &arr);
      cr_assert(proto.child[i + 1]);
    }
    Node *one = ir_make(c, &proto);
    cr_assert(one, "%s", tu_diags(c));
    const Tensor *v = eval1(c, substitute(c, one));
    cr_assert_eq(shape_numel(&v->shape), inner);
    for (int64_t j = 0; j < inner; j++) {
      double want = ((double *)v->data)[j], got = ((double *)batched->data)[b * inner + j];
      cr_assert(fabs(want - got) <= 1e-9 * (1 + fabs(want)), "batch %lld elem %lld: vmap %.17g, substituted %.17g",
                (long long)b, (long long)j, want, got);
    }
    free(proto.child);
  }
  free(argv);
}

/* ------------------------------------------------------------------ E4 */

static const char *E4 =
    "'outer_b.bilinear_mlp' Module\n"
    "  'bilinear_mlp' Einsum h,h,oh->o\n"
    "    'bilinear_mlp.pre0' Index [0,:]\n"
    "      'bilinear_mlp.fold_pre' Rearrange (a:2 b) -> a:2 b\n"
    "        'bilinear_mlp.pre' Einsum i,hi->h\n"
    "          'bilinear_mlp.input' [0s] Symbol 873a937e-2bb9-4f7f-b55e-a100db3dde52\n"
    "          'bilinear_mlp.w.proj_in' [2*1s,0s] Symbol c171d519-8793-4a8b-ac5e-d550347f30a6\n"
    "    'bilinear_mlp.pre1' Index [1,:]\n"
    "      'bilinear_mlp.fold_pre'\n"
    "    'bilinear_mlp.w.proj_out' [2s,1s] Symbol e61637eb-9f17-4325-b2c2-5eb2518026cf\n"
    "  'b.bilinear_mlp' Module ! 'bilinear_mlp.input'\n"
    "    'bilinear_mlp'\n"
    "    'b.input' [3,5,7,17] Scalar 7 ! 'bilinear_mlp.input'\n"
    "    'b.proj_in' [22,17] Scalar 8 ! 'bilinear_mlp.w.proj_in' ftt\n"
    "    'b.proj_out' [13,11] Scalar 9 ! 'bilinear_mlp.w.proj_out' ftt\n"
    "  'b_new.proj_in' [22,13] Scalar 10 ! 'bilinear_mlp.w.proj_in' ftt\n"
    "  'b_new.proj_out' [20,11] Scalar 11 ! 'bilinear_mlp.w.proj_out' ftt\n";

Test(modules, e4_nested_bilinear_mlp) {
  Comp *c = tu_comp();
  Node *m = top(parse_ok(c, E4), "outer_b.bilinear_mlp");
  cr_assert_str_eq(shape_str(c, &m->shape), "[3,5,7,20]");
  Node *s = substitute(c, m);
  cr_assert(!has_module(s, 0));
  cr_assert_str_eq(shape_str(c, &s->shape), "[3,5,7,20]");
  cr_assert_str_eq(s->name, "outer_b.bilinear_mlp");
  const Tensor *t = eval1(c, s);
  /* inner: pre = 17*7*8 per unit, out = 11 * pre^2 * 9; outer: pre = 13*inner*10, out = 11 * pre^2 * 11 */
  double inner = 11.0 * (17 * 7 * 8.0) * (17 * 7 * 8.0) * 9, pre = 13 * inner * 10, want = 11.0 * pre * pre * 11;
  for (int64_t i = 0; i < shape_numel(&t->shape); i++)
    cr_assert(fabs(((double *)t->data)[i] - want) <= 1e-12 * want, "elem %lld = %.17g, want %.17g", (long long)i,
              ((double *)t->data)[i], want);
  check_vmap(c, m, t);
  check_vmap(c, find(m, "b.bilinear_mlp"), eval1(c, substitute(c, find(m, "b.bilinear_mlp"))));
  tu_free(c);
}

/* ------------------------------------------------------------------ E5 */

static const char *E5 =
    "'a' Module\n"
    "  'b' Module\n"
    "    'wrap' Add\n"
    "      'inner_a' Module\n"
    "        'inner_b' Module\n"
    "          'add' Add\n"
    "            'b_sym' [] Symbol d8d42e00-53bb-44df-8fe5-ce833805cc3e\n"
    "            'b_other' [] Symbol 49ca8b31-7c1b-468c-a33e-c6a07a31e224\n"
    "          'my_nested' Einsum -> ! 'b_sym'\n"
    "            'a_sym' [] Symbol 43161ffc-dcf1-4163-a08b-54c6174472d3\n"
    "        'a_val'  [4, 1, 1] Array rand ! 'a_sym'\n"
    "      'b_sym'\n"
    "    'b_other_val' [2] Array rand ! 'b_other'\n"
    "    'my_nested' ! 'b_sym'\n"
    "  'a_val2' [3, 1] Array rand ! 'a_sym'\n";

static double at(const Tensor *t, int64_t i) { return tensor_get_f64(t, i); }

Test(modules, e5_lexical_scoping) {
  Comp *c = tu_comp();
  Node *a = top(parse_ok(c, E5), "a");
  cr_assert_str_eq(shape_str(c, &a->shape), "[3,1,2,4,1,1]");
  Node *s = substitute(c, a);
  cr_assert(!has_module(s, 0));
  const Tensor *t = eval1(c, s);
  const Tensor *a_val = find(a, "a_val")->u.array.tensor, *b_other = find(a, "b_other_val")->u.array.tensor,
               *a_val2 = find(a, "a_val2")->u.array.tensor;
  /* a[p,0,x,i,0,0] = a_val[i] (inner_a shadows a_sym) + b_other_val[x] + a_val2[p] (a_sym via b's arg) */
  for (int p = 0; p < 3; p++)
    for (int x = 0; x < 2; x++)
      for (int i = 0; i < 4; i++) {
        double want = at(a_val, i) + at(b_other, x) + at(a_val2, p);
        double got = ((double *)t->data)[(p * 2 + x) * 4 + i];
        cr_assert(fabs(want - got) < 1e-12, "[%d,%d,%d]: %.17g vs %.17g", p, x, i, got, want);
      }
  check_vmap(c, a, t);
  tu_free(c);
}

/* Substituting the inner modules first by hand (another order) gives the same values. */
Test(modules, e5_inner_modules_first_same_values) {
  Comp *c = tu_comp();
  NodeList l = parse_ok(c, E5);
  Node *a = top(l, "a");
  const Tensor *direct = eval1(c, substitute(c, a));
  /* rebuild 'a' with its spec 'b' already substituted (b's own inner modules resolved) */
  Node *b = substitute(c, find(a, "b"));
  cr_assert(!has_module(b, 0));
  Node proto = *a;
  Node *ch[2] = {b, a->child[1]};
  proto.child = ch;
  Node *a2 = ir_make(c, &proto);
  cr_assert(a2, "%s", tu_diags(c));
  /* b's free symbol a_sym is still there for a to bind */
  const Tensor *other = eval1(c, substitute(c, a2));
  cr_assert(shape_eq(&direct->shape, &other->shape));
  cr_assert_eq(memcmp(direct->data, other->data, direct->nbytes), 0);
  tu_free(c);
}

/* ------------------------------------------------------------------ E6 */

static const char *E6 =
    "'inside' [] Scalar 4\n"
    "1 'a' Module\n"
    "  'inside'\n"
    "  'a.bound' [2, 3] Scalar 3 ! 'a.inp' [] Symbol 90e7ce1a-0d52-4845-b42e-82411d6cbf56\n";

Test(modules, e6_unused_input_is_an_error_by_default) {
  Comp *c = tu_comp();
  Node *a = top(parse_ok(c, E6), "a");
  cr_assert(!modules_substitute_all(c, &a, 1));
  cr_assert(strstr(tu_diags(c), "test.circ:4:"), "%s", tu_diags(c));
  cr_assert(strstr(tu_diags(c), "does not occur in its spec"), "%s", tu_diags(c));
  tu_free(c);
}

Test(modules, e6_unused_input_allowed_broadcasts) {
  Comp *c = tu_comp();
  c->check_all_inputs_used = false;
  Node *a = substitute(c, top(parse_ok(c, E6), "a"));
  cr_assert_str_eq(shape_str(c, &a->shape), "[2,3]");
  const Tensor *t = eval1(c, a);
  for (int i = 0; i < 6; i++) cr_assert_eq(((double *)t->data)[i], 4.0);
  tu_free(c);
}

/* ---------------------------------------------------- batching rules */

/* Every kind in a batched body: Rearrange, Index, Concat, gen_index, softmax,
 * Add with size-1 padding, Scatter, pow, Tag, SetSymbolicShape, nested module. */
static const char *BODY =
    "'m' Module\n"
    "  'body' Add\n"
    "    'r' Rearrange (a:2 b) c -> c (b a)\n"
    "      'x' [6,5] Symbol 11111111-1111-4111-8111-111111111111\n"
    "    'sm' GeneralFunction softmax\n"
    "      'cat' Concat -2\n"
    "        'ix' Index [1:3,:]\n"
    "          'r'\n"
    "        'emb' GeneralFunction gen_index_at_0_c\n"
    "          'tab' [4,6] Array rand\n"
    "          'ids' [3] Symbol 22222222-2222-4222-8222-222222222222\n"
    "    'p' GeneralFunction pow\n"
    "      'tg' Tag 33333333-3333-4333-8333-333333333333\n"
    "        'sc' [1,6] Scatter [0:1,1:6]\n"
    "          'ix2' Index [0:1,0:5]\n"
    "            'r'\n"
    "      'two' [] Scalar 2\n"
    "    'row' Index [-2]\n"
    "      'r'\n"
    "    'col' Einsum ab->b\n"
    "      'r'\n"
    "  'xs' [2,3,6,5] Array rand ! 'x'\n"
    "  'idv' [3,3] Array rand ! 'ids'\n";

Test(modules, every_kind_batches_like_vmap) {
  Comp *c = tu_comp();
  /* ids must be integral and < 4: make the random index array so */
  Node *m = top(parse_ok(c, BODY), "m");
  Tensor *ids = find(m, "idv")->u.array.tensor;
  for (int i = 0; i < 9; i++) tensor_set_f64(ids, i, (i * 7) % 4);
  cr_assert_str_eq(shape_str(c, &m->shape), "[2,3,5,6]");
  Node *s = substitute(c, m);
  cr_assert(!has_module(s, 0));
  check_vmap(c, m, eval1(c, s));
  tu_free(c);
}

Test(modules, non_batchable_arg_is_rejected) {
  Comp *c = tu_comp();
  Compilation cm = {0};
  const char *t = "'m' Module\n"
                  "  'e' Einsum a->a\n"
                  "    'x' [3] Symbol 11111111-1111-4111-8111-111111111111\n"
                  "  'v' [2,3] Scalar 1 ! 'x' ftt\n";
  cr_assert(!tu_run(c, t, STAGE_TENSORS, &cm));
  cr_assert(strstr(tu_diags(c), "not batchable"), "%s", tu_diags(c));
  tu_free(c);
}

Test(modules, non_symbolic_size_cannot_expand) {
  Comp *c = tu_comp();
  Compilation cm = {0};
  const char *t = "'m' Module\n"
                  "  'e' Einsum a->a\n"
                  "    'x' [3] Symbol 11111111-1111-4111-8111-111111111111\n"
                  "  'v' [4] Scalar 1 ! 'x'\n";
  cr_assert(!tu_run(c, t, STAGE_TENSORS, &cm));
  cr_assert(strstr(tu_diags(c), "test.circ:1:"), "%s", tu_diags(c));
  cr_assert(strstr(tu_diags(c), "size 4 at axis 0 but symbol 'x' needs 3"), "%s", tu_diags(c));
  /* with ban_non_symbolic_size_expand off rust_circuit lets the size change;
   * circc reports that it needs a symbolic size there (documented limitation) */
  Comp *c2 = tu_comp();
  const char *t2 = "'m' Module\n"
                   "  'e' Einsum a->a\n"
                   "    'x' [3] Symbol 11111111-1111-4111-8111-111111111111\n"
                   "  'v' [4] Scalar 1 ! 'x' ttf\n";
  Compilation cm2 = {0};
  cr_assert(!tu_run(c2, t2, STAGE_TENSORS, &cm2));
  cr_assert(strstr(tu_diags(c2), "supports this only for symbolic sizes"), "%s", tu_diags(c2));
  tu_free(c2);
  tu_free(c);
}

Test(modules, batch_shapes_must_match_exactly) {
  Comp *c = tu_comp();
  Compilation cm = {0};
  const char *t = "'m' Module\n"
                  "  'e' Einsum a,a->a\n"
                  "    'x' [0s] Symbol 11111111-1111-4111-8111-111111111111\n"
                  "    'y' [0s] Symbol 21111111-1111-4111-8111-111111111111\n"
                  "  'v' [2,3] Scalar 1 ! 'x'\n"
                  "  'w' [1,3] Scalar 1 ! 'y'\n";
  cr_assert(!tu_run(c, t, STAGE_TENSORS, &cm));
  cr_assert(strstr(tu_diags(c), "no broadcasting"), "%s", tu_diags(c));
  tu_free(c);
}

Test(modules, near_miss_symbol_is_an_error) {
  Comp *c = tu_comp();
  const char *t = "'m' Module\n"
                  "  'e' Add\n"
                  "    'x' [3] Symbol 11111111-1111-4111-8111-111111111111\n"
                  "    2 'x' [1] Symbol 11111111-1111-4111-8111-111111111111\n"
                  "  'v' [3] Scalar 1 ! 'x'\n";
  Node *m = top(parse_ok(c, t), "m");
  cr_assert(!modules_substitute_all(c, &m, 1));
  cr_assert(strstr(tu_diags(c), "has shape [1] here but [3]"), "%s", tu_diags(c));
  tu_free(c);
}

/* ------------------------------------------------ resolve: sizes, inputs */

static const char *FREE_SEQ =
    "'f' Module\n"
    "  'f.y' Einsum sh,h->s\n"
    "    'f.x' [1s,0s] Symbol 11111111-1111-4111-8111-111111111111\n"
    "    'f.w' [0s] Symbol 21111111-1111-4111-8111-111111111111\n"
    "  'w' [4] Scalar 0.5 ! 'f.w'\n";

Test(resolve, unbound_symbolic_size_suggests_define) {
  Comp *c = tu_comp();
  Compilation cm = {0};
  parse_in(c, FREE_SEQ, &cm);
  cr_assert(!tu_run(c, FREE_SEQ, STAGE_RESOLVE, &cm));
  cr_assert(strstr(tu_diags(c), "symbolic size 1s (SEQ) is not bound"), "%s", tu_diags(c));
  cr_assert(strstr(tu_diags(c), "-D SEQ=N"), "%s", tu_diags(c));
  tu_free(c);
}

Test(resolve, define_binds_size_and_free_symbol_becomes_input) {
  Comp *c = tu_comp();
  SizeDefine d = {"SEQ", 3};
  c->defines = &d;
  c->ndefines = 1;
  Compilation cm = {0};
  parse_in(c, FREE_SEQ, &cm);
  cr_assert(tu_run(c, FREE_SEQ, STAGE_RESOLVE, &cm), "%s", tu_diags(c));
  const Program p = cm.program;
  cr_assert_eq(p.inputs.n, 1);
  cr_assert_str_eq(p.inputs.node[0]->name, "f.x");
  cr_assert_str_eq(shape_str(c, &p.inputs.node[0]->shape), "[3,4]");
  cr_assert_str_eq(shape_str(c, &p.outputs.node[0]->shape), "[3]");
  Tensor *x = tensor_new(c, DT_F32, &p.inputs.node[0]->shape);
  for (int i = 0; i < 12; i++) tensor_set_f64(x, i, i);
  Eval *e = eval_new(c);
  eval_bind(e, p.inputs.node[0], x);
  const Tensor *y = eval_node(e, p.outputs.node[0]);
  cr_assert(y, "%s", tu_diags(c));
  for (int s = 0; s < 3; s++) cr_assert_eq(((double *)y->data)[s], 0.5 * (4 * s * 4 + 6));
  eval_free(e);
  tu_free(c);
}

Test(resolve, a_random_output_is_rejected_by_rv) {
  Comp *c = tu_comp();
  const char *t = "0 DiscreteVar\n  2 [10,11] Scalar 2.2\n  1 [10] Scalar 0.1\n";
  Compilation cm = {0};
  parse_in(c, t, &cm);
  cr_assert(tu_run(c, t, STAGE_RESOLVE, &cm), "%s", tu_diags(c));
  cr_assert(!tu_run(c, t, STAGE_RV, &cm));
  cr_assert(strstr(tu_diags(c), "test.circ:1:1: error: output"), "%s", tu_diags(c));
  cr_assert(strstr(tu_diags(c), "wrap it in a Cumulant"), "%s", tu_diags(c));
  tu_free(c);
}

/* ------------------------------------------- GPT-2 style block (§7.2) */

static double *vals(Node *root, const char *name) {
  const Tensor *t = find(root, name)->u.array.tensor;
  int64_t n = shape_numel(&t->shape);
  double *v = malloc(sizeof(double) * (size_t)n);
  for (int64_t i = 0; i < n; i++) v[i] = tensor_get_f64(t, i);
  return v;
}

enum { NB = 2, T = 5, H = 8, NH = 2, D = 4, P = 16 };

static void layernorm(const double *x, const double *scale, const double *bias, double *y) {
  double mean = 0, var = 0;
  for (int i = 0; i < H; i++) mean += x[i] / H;
  for (int i = 0; i < H; i++) var += (x[i] - mean) * (x[i] - mean) / H;
  for (int i = 0; i < H; i++) y[i] = (x[i] - mean) / sqrt(var + 1e-5) * scale[i] + bias[i];
}

/* out[b,t,:] for the pre-norm block: x + attn(ln1(x)), then + mlp(ln2(.)) */
static void block_reference(Node *r, const double *mask, double *out) {
  double *x = vals(r, "b0.input"), *wq = vals(r, "b0.a.w.q"), *bq = vals(r, "b0.a.w.q_bias"),
         *wk = vals(r, "b0.a.w.k"), *bk = vals(r, "b0.a.w.k_bias"), *wv = vals(r, "b0.a.w.v"),
         *bv = vals(r, "b0.a.w.v_bias"), *wo = vals(r, "b0.a.w.o"), *bo = vals(r, "b0.a.w.o_bias"),
         *s1 = vals(r, "b0.a.ln.w.scale"), *b1 = vals(r, "b0.a.ln.w.bias"), *win = vals(r, "b0.m.w.proj_in"),
         *bin = vals(r, "b0.m.w.in_bias"), *wout = vals(r, "b0.m.w.proj_out"), *bout = vals(r, "b0.m.w.out_bias"),
         *s2 = vals(r, "b0.m.ln.w.scale"), *b2 = vals(r, "b0.m.ln.w.bias");
  for (int b = 0; b < NB; b++) {
    double ln[T][H], q[NH][T][D], k[NH][T][D], v[NH][T][D], resid[T][H];
    for (int t = 0; t < T; t++) layernorm(&x[(b * T + t) * H], s1, b1, ln[t]);
    for (int h = 0; h < NH; h++)
      for (int t = 0; t < T; t++)
        for (int d = 0; d < D; d++) {
          q[h][t][d] = bq[h * D + d], k[h][t][d] = bk[h * D + d], v[h][t][d] = bv[h * D + d];
          for (int i = 0; i < H; i++) {
            q[h][t][d] += wq[(h * D + d) * H + i] * ln[t][i];
            k[h][t][d] += wk[(h * D + d) * H + i] * ln[t][i];
            v[h][t][d] += wv[(h * D + d) * H + i] * ln[t][i];
          }
        }
    for (int t = 0; t < T; t++)
      for (int i = 0; i < H; i++) resid[t][i] = x[(b * T + t) * H + i] + bo[i];
    for (int h = 0; h < NH; h++)
      for (int t = 0; t < T; t++) {
        double score[T], mx = -INFINITY, sum = 0;
        for (int u = 0; u < T; u++) {
          double dot = 0;
          for (int d = 0; d < D; d++) dot += q[h][t][d] * k[h][u][d];
          score[u] = dot / sqrt((double)D) * mask[t * T + u] + (1 - mask[t * T + u]) * -10000.0;
          if (score[u] > mx) mx = score[u];
        }
        for (int u = 0; u < T; u++) sum += score[u] = exp(score[u] - mx);
        for (int i = 0; i < H; i++)
          for (int d = 0; d < D; d++) {
            double z = 0;
            for (int u = 0; u < T; u++) z += score[u] / sum * v[h][u][d];
            resid[t][i] += wo[(h * H + i) * D + d] * z;
          }
      }
    for (int t = 0; t < T; t++) {
      double ln2[H], act[P];
      layernorm(resid[t], s2, b2, ln2);
      for (int j = 0; j < P; j++) {
        double z = bin[j];
        for (int i = 0; i < H; i++) z += win[j * H + i] * ln2[i];
        act[j] = 0.5 * z * (1 + tanh(sqrt(2 / M_PI) * (z + 0.044715 * z * z * z)));
      }
      for (int i = 0; i < H; i++) {
        double z = bout[i] + resid[t][i];
        for (int j = 0; j < P; j++) z += wout[i * P + j] * act[j];
        out[(b * T + t) * H + i] = z;
      }
    }
  }
  free(x), free(wq), free(bq), free(wk), free(bk), free(wv), free(bv), free(wo), free(bo);
  free(s1), free(b1), free(win), free(bin), free(wout), free(bout), free(s2), free(b2);
}

Test(modules, gpt2_style_block_in_module_form) {
  Comp *c = tu_comp();
  const char *path = tu_data("circ/gpt2_block_module.circ");
  Compilation cm = {0};
  cr_assert(tu_run_file(c, path, "b0", STAGE_TENSORS, &cm), "%s", tu_diags(c));
  cr_assert_eq(cm.tops.n, 1);
  Node *b0 = top(cm.tops, "b0");
  cr_assert_str_eq(shape_str(c, &b0->shape), "[2,5,8]");
  cr_assert(tu_run_file(c, path, "b0", STAGE_RESOLVE, &cm), "%s", tu_diags(c));
  const Program p = cm.program;
  cr_assert_eq(p.inputs.n, 1, "inputs: %d", p.inputs.n);
  cr_assert_str_eq(p.inputs.node[0]->name, "t.mask");
  Tensor *mask = tensor_new(c, DT_F32, &p.inputs.node[0]->shape);
  double maskv[T * T];
  for (int i = 0; i < T; i++)
    for (int j = 0; j < T; j++) tensor_set_f64(mask, i * T + j, maskv[i * T + j] = j <= i);
  Eval *e = eval_new(c);
  eval_bind(e, p.inputs.node[0], mask);
  const Tensor *y = eval_node(e, p.outputs.node[0]);
  cr_assert(y, "%s", tu_diags(c));
  double want[NB * T * H];
  block_reference(b0, maskv, want);
  for (int i = 0; i < NB * T * H; i++)
    cr_assert(fabs(((double *)y->data)[i] - want[i]) < 1e-9 * (1 + fabs(want[i])), "elem %d: %.17g vs %.17g", i,
              ((double *)y->data)[i], want[i]);
  eval_free(e);
  tu_free(c);
}
