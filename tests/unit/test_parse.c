/* test_parse.c — the text format reader and the bijection printer: every
 * example of rust_circuit_format.md §9, every rule of §2.1–2.6, diagnostics
 * (exact line:col and message) and the dump → parse round trip. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "testutil.h"

/* ------------------------------------------------------------------ helpers */

static Comp *comp_random(void) {
  Comp *c = tu_comp();
  c->tensors_as_random = true;
  return c;
}

/* Parses `text` (named t.circ) and loads its tensors. */
static NodeList parse_ok(Comp *c, const char *text) {
  Compilation cm = {0};
  bool ok = tu_run_named(c, "t.circ", text, STAGE_TENSORS, &cm);
  cr_assert(ok, "parse failed:\n%s\ninput:\n%s", tu_diags(c), text);
  cr_assert_eq(diag_error_count(c), 0, "%s", tu_diags(c));
  return cm.tops;
}

/* Parses `text` with c and requires an error at `loc` ("line:col") whose
 * message contains `msg`. */
static void expect_error_in(Comp *c, const char *text, const char *loc, const char *msg) {
  Compilation cm = {0};
  bool ok = tu_run_named(c, "t.circ", text, STAGE_TENSORS, &cm);
  const char *d = tu_diags(c);
  cr_assert(!ok, "expected an error for:\n%s", text);
  char want[128];
  snprintf(want, sizeof want, "t.circ:%s: error: ", loc);
  bool hit = false;
  for (const char *line = d; *line && !hit;) {
    const char *eol = strchr(line, '\n');
    size_t n = eol ? (size_t)(eol - line) : strlen(line);
    if (n >= strlen(want) && strncmp(line, want, strlen(want)) == 0) {
      char *copy = strndup(line, n);
      hit = strstr(copy, msg) != NULL;
      free(copy);
    }
    line += n + (eol ? 1 : 0);
  }
  cr_assert(hit, "expected \"%s...%s\" in diagnostics:\n%s", want, msg, d);
}

/* Parses `text` (random tensors) and requires an error at `loc` ("line:col")
 * whose message contains `msg`. Returns the number of errors. */
static int expect_error(const char *text, const char *loc, const char *msg) {
  Comp *c = comp_random();
  expect_error_in(c, text, loc, msg);
  int n = diag_error_count(c);
  tu_free(c);
  return n;
}

static Node *find_rec(Node *n, const char *name, int depth) {
  if (depth > 64) return NULL;
  if (n->name && strcmp(n->name, name) == 0) return n;
  for (int i = 0; i < n->nchild; i++) {
    Node *r = find_rec(n->child[i], name, depth + 1);
    if (r) return r;
  }
  if (n->kind == NK_Module)
    for (int i = 0; i < module_nargs(n); i++)
      if (n->u.module.arg[i].symbol && strcmp(n->u.module.arg[i].symbol->name, name) == 0)
        return n->u.module.arg[i].symbol;
  return NULL;
}

static Node *find(const NodeList *l, const char *name) {
  for (int i = 0; i < l->n; i++) {
    Node *r = find_rec(l->node[i], name, 0);
    if (r) return r;
  }
  cr_assert_fail("no node named '%s'", name);
  return NULL;
}

static void assert_shape(const Node *n, int rank, const int64_t *dims) {
  cr_assert_eq(n->shape.rank, rank, "%s: rank %d, want %d", n->name ? n->name : "?", n->shape.rank, rank);
  for (int k = 0; k < rank; k++)
    cr_assert_eq(n->shape.dim[k], dims[k], "%s: dim %d is %lld, want %lld", n->name ? n->name : "?", k,
                 (long long)n->shape.dim[k], (long long)dims[k]);
}
#define SHAPE(n, ...) assert_shape((n), (int)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t)), (int64_t[]){__VA_ARGS__})

static void assert_ids(const int *ids, int n, const char *want) {
  cr_assert_eq(n, (int)strlen(want), "rank %d, want %zu (%s)", n, strlen(want), want);
  for (int i = 0; i < n; i++) cr_assert_eq(ids[i], want[i] - 'a', "id %d is %d, want %c", i, ids[i], want[i]);
}

static char *dump_str(Comp *c, const NodeList *l) {
  char *buf = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&buf, &len);
  dump_circuits(c, f, l->node, l->n);
  fclose(f);
  return buf;
}

/* Structural equality; random Arrays compare by shape only. */
static bool same(Comp *c, const Node *a, const Node *b) {
  if (a == b) return true;
  if (a->kind != b->kind || a->autoname_disabled != b->autoname_disabled || !shape_eq(&a->shape, &b->shape) ||
      a->nchild != b->nchild || (!a->name) != (!b->name) || (a->name && strcmp(a->name, b->name)))
    return false;
  for (int i = 0; i < a->nchild; i++)
    if (!same(c, a->child[i], b->child[i])) return false;
  switch (a->kind) {
  case NK_Array:
    if (a->u.array.random != b->u.array.random) return false;
    return a->u.array.random || strcmp(a->u.array.tensor->hash_hex, b->u.array.tensor->hash_hex) == 0;
  case NK_Module:
    for (int i = 0; i < module_nargs(a); i++) {
      const ModuleArg *x = &a->u.module.arg[i], *y = &b->u.module.arg[i];
      if (x->batchable != y->batchable || x->expandable != y->expandable ||
          x->ban_non_symbolic_size_expand != y->ban_non_symbolic_size_expand || !same(c, x->symbol, y->symbol))
        return false;
    }
    return true;
  case NK_Index:
  case NK_Scatter:
    if (a->u.index.n != b->u.index.n) return false;
    for (int i = 0; i < a->u.index.n; i++) {
      const IndexEntry *x = &a->u.index.e[i], *y = &b->u.index.e[i];
      if (x->kind != y->kind || x->i != y->i || x->has_start != y->has_start || x->has_stop != y->has_stop ||
          (x->has_start && x->start != y->start) || (x->has_stop && x->stop != y->stop))
        return false;
      if (x->kind == IDX_TENSOR && strcmp(x->tensor->hash_hex, y->tensor->hash_hex)) return false;
    }
    return true;
  default: {
    /* parameters are in the hash: rebuild b over a's children and compare */
    Node *bb = ir_with_children(c, b, a->child, a->nchild);
    return bb && bb->hash == a->hash;
  }
  }
}

static bool has_array(const Node *n) {
  if (n->kind == NK_Array || n->kind == NK_Index) return true;
  for (int i = 0; i < n->nchild; i++)
    if (has_array(n->child[i])) return true;
  return false;
}

/* parse → dump → parse gives the same circuits, and dumping again gives the same text. */
static void round_trip(Comp *c, const char *text) {
  NodeList a = parse_ok(c, text);
  char *d1 = dump_str(c, &a);
  Compilation cm = {0};
  bool ok = tu_run_named(c, "dump.circ", d1, STAGE_TENSORS, &cm);
  cr_assert(ok, "dump does not re-parse:\n%s\n%s", d1, tu_diags(c));
  NodeList b = cm.tops;
  cr_assert_eq(a.n, b.n, "%d top-level circuits became %d:\n%s", a.n, b.n, d1);
  for (int i = 0; i < a.n; i++) {
    cr_assert(same(c, a.node[i], b.node[i]), "circuit %d differs after the round trip:\n%s", i, d1);
    if (!has_array(a.node[i])) cr_assert_eq(a.node[i]->hash, b.node[i]->hash, "hash of circuit %d:\n%s", i, d1);
  }
  char *d2 = dump_str(c, &b);
  cr_assert_str_eq(d1, d2, "dump is not a fixpoint:\n%s\n---\n%s", d1, d2);
  free(d1);
  free(d2);
}

/* A tensor store in a fresh temporary directory. */
typedef struct Store {
  char dir[64];
  const char *f32_hash, *i64_hash;
} Store;

static void store_make(Comp *c, Store *s) {
  strcpy(s->dir, "/tmp/circc_parse_XXXXXX");
  cr_assert(mkdtemp(s->dir));
  c->tensor_dir = s->dir;
  Tensor *a = tensor_new(c, DT_F32, &(Shape){1, {5}});
  for (int i = 0; i < 5; i++) ((float *)a->data)[i] = (float)i + 0.5f;
  s->f32_hash = store_write(c, a);
  Tensor *ix = tensor_new(c, DT_I64, &(Shape){1, {6}});
  int64_t v[6] = {0, 1, 2, 3, 4, 9};
  memcpy(ix->data, v, sizeof v);
  s->i64_hash = store_write(c, ix);
  cr_assert(s->f32_hash && s->i64_hash, "store_write failed: %s", tu_diags(c));
}

static void store_remove(Store *s) {
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", s->dir);
  cr_assert_eq(system(cmd), 0);
}

/* ---------------------------------------------------------- §9 examples */

Test(parse, e1_sharing_scatter_concat) {
  Comp *c = comp_random();
  char *text = tu_read_file(tu_data("circ/e1_sharing.circ"), NULL);
  NodeList l = parse_ok(c, text);
  cr_assert_eq(l.n, 3);
  Node *s0 = l.node[0], *s1 = l.node[1], *add = l.node[2];
  cr_assert_eq(s0->kind, NK_Scalar);
  cr_assert_str_eq(s0->name, "0");
  cr_assert_eq(s0->u.scalar.value, 7.0);
  SHAPE(s0, 1, 3, 6);
  cr_assert_eq(s1->kind, NK_Scatter);
  SHAPE(s1, 5, 3, 6);
  cr_assert_eq(s1->u.index.n, 3);
  cr_assert(s1->u.index.e[0].kind == IDX_SLICE && s1->u.index.e[0].stop == 5);
  Node *cat = s1->child[0];
  cr_assert_eq(cat->kind, NK_Concat);
  cr_assert_null(cat->name);
  cr_assert_eq(cat->u.concat.axis, 0);
  SHAPE(cat, 5, 3, 3);
  cr_assert_eq(add->kind, NK_Add);
  cr_assert_null(add->name);
  cr_assert_eq(add->nchild, 5);
  /* one ident = one node: the references are the same objects */
  cr_assert_eq(add->child[1], s0);
  cr_assert_eq(add->child[2], s1);
  cr_assert_eq(add->child[4], s0);
  Node *ein = add->child[3];
  cr_assert_str_eq(ein->name, "ein");
  cr_assert_eq(ein->child[0], s1);
  assert_ids(ein->u.einsum.in[0], ein->u.einsum.in_rank[0], "abc");
  assert_ids(ein->u.einsum.out, ein->u.einsum.out_rank, "abc");
  SHAPE(add->child[0], 3, 1);
  SHAPE(add, 5, 3, 6);
  free(text);
  tu_free(c);
}

Test(parse, e2_array_hash_and_tensor_index) {
  Comp *c = tu_comp();
  Store st;
  store_make(c, &st);
  char text[512];
  snprintf(text, sizeof text,
           "0 Add # int8\n"
           "  1 [5] Array %.24s # int8\n"
           "  1 Array # int8\n"
           "2 [6] Index [t%.10s [6],0]\n"
           "  3 [10,10] Scalar 1\n",
           st.f32_hash, st.i64_hash);
  NodeList l = parse_ok(c, text);
  cr_assert_eq(l.n, 2);
  Node *add = l.node[0];
  cr_assert_eq(add->nchild, 2);
  cr_assert_eq(add->child[0], add->child[1]);
  Node *arr = add->child[0];
  cr_assert_eq(arr->kind, NK_Array);
  cr_assert_not(arr->u.array.random);
  cr_assert_eq(arr->u.array.tensor->dtype, DT_F32);
  cr_assert_eq(((float *)arr->u.array.tensor->data)[4], 4.5f);
  cr_assert_eq(strncmp(arr->u.array.hash_prefix, st.f32_hash, 24), 0);
  SHAPE(arr, 5);
  Node *ix = l.node[1];
  cr_assert_eq(ix->kind, NK_Index);
  cr_assert_eq(ix->u.index.e[0].kind, IDX_TENSOR);
  cr_assert_eq(((int64_t *)ix->u.index.e[0].tensor->data)[5], 9);
  cr_assert_eq(ix->u.index.e[1].kind, IDX_INT);
  SHAPE(ix, 6);
  round_trip(c, text);
  /* a declared shape that disagrees with the stored tensor */
  char bad[256];
  snprintf(bad, sizeof bad, "'a' [4] Array %.24s\n", st.f32_hash);
  Compilation cm2 = {0};
  cr_assert_not(tu_run_named(c, "t.circ", bad, STAGE_TENSORS, &cm2));
  cr_assert(strstr(tu_diags(c), "t.circ:1:5: error: Array 'a': declared shape [4] but computed [5]"), "%s",
            tu_diags(c));
  /* an index tensor's written length sizes the Index before loading: it must be the tensor's
   * (a fresh Comp on the same store: the driver runs no stage after an error) */
  Comp *c3 = tu_comp();
  c3->tensor_dir = st.dir;
  snprintf(bad, sizeof bad, "'i' Index [t%.10s [5]]\n  'x' [10] Scalar 1\n", st.i64_hash);
  Compilation cm3 = {0};
  cr_assert(tu_run_named(c3, "t.circ", bad, STAGE_PARSE, &cm3), "%s", tu_diags(c3));
  cr_assert_not(tu_run_named(c3, "t.circ", bad, STAGE_TENSORS, &cm3));
  cr_assert(strstr(tu_diags(c3), "t.circ:1:12: error: index tensor t"), "%s", tu_diags(c3));
  cr_assert(strstr(tu_diags(c3), " has 6 entries but is written as [5]"), "%s", tu_diags(c3));
  store_remove(&st);
  tu_free(c3);
  tu_free(c);
}

Test(parse, e3_tag_cumulant_discretevar_storedcumulantvar) {
  Comp *c = comp_random();
  char *text = tu_read_file(tu_data("circ/e3_cumulants.circ"), NULL);
  NodeList l = parse_ok(c, text);
  cr_assert_eq(l.n, 3);
  cr_assert_eq(l.node[0]->kind, NK_Cumulant);
  Node *tag = l.node[0]->child[1];
  cr_assert_eq(tag->kind, NK_Tag);
  cr_assert_str_eq(tag->u.tag.uuid, "1a280c74-fa9f-4dd9-94f4-5cca4a0cf243");
  cr_assert_eq(l.node[0]->child[0]->u.scalar.value, 1.0);
  cr_assert_eq(l.node[1]->kind, NK_DiscreteVar);
  Node *scv = l.node[2];
  cr_assert_eq(scv->kind, NK_StoredCumulantVar);
  cr_assert_eq(scv->u.stored_cumulant.norders, 2);
  cr_assert_eq(scv->u.stored_cumulant.orders[0], 1);
  cr_assert_eq(scv->u.stored_cumulant.orders[1], 2);
  cr_assert_str_eq(scv->u.stored_cumulant.uuid, "1a280c74-fa9f-4dd9-94f4-5cca4a0cf243");
  round_trip(c, text);
  free(text);
  tu_free(c);
}

Test(parse, e4_nested_modules_symbolic_sizes_flags) {
  Comp *c = comp_random();
  char *text = tu_read_file(tu_data("circ/e4_modules.circ"), NULL);
  NodeList l = parse_ok(c, text);
  cr_assert_eq(l.n, 1);
  Node *outer = l.node[0];
  cr_assert_eq(outer->kind, NK_Module);
  SHAPE(outer, 3, 5, 7, 20);
  cr_assert_eq(module_nargs(outer), 3);
  const ModuleArg *a = outer->u.module.arg;
  cr_assert_str_eq(a[0].symbol->name, "bilinear_mlp.input");
  cr_assert(a[0].batchable && a[0].expandable && a[0].ban_non_symbolic_size_expand);
  cr_assert_str_eq(a[1].symbol->name, "bilinear_mlp.w.proj_in");
  cr_assert(!a[1].batchable && a[1].expandable && a[1].ban_non_symbolic_size_expand);
  cr_assert_eq(a[1].loc.line, 16);
  cr_assert_eq(a[1].loc.col, 37);
  Node *inner = outer->child[1];
  cr_assert_str_eq(inner->name, "b.bilinear_mlp");
  cr_assert_eq(inner->child[0], outer->child[0]); /* the spec is shared */
  SHAPE(inner, 3, 5, 7, 13);
  Node *in = find(&l, "bilinear_mlp.input");
  cr_assert_eq(in->kind, NK_Symbol);
  cr_assert_eq(a[0].symbol, in);
  SHAPE(in, 10007);
  cr_assert_str_eq(in->u.symbol.uuid, "873a937e-2bb9-4f7f-b55e-a100db3dde52");
  SHAPE(find(&l, "bilinear_mlp.w.proj_in"), 2 * 10009, 10007);
  SHAPE(find(&l, "bilinear_mlp.w.proj_out"), 10037, 10009);
  Node *fold = find(&l, "bilinear_mlp.fold_pre");
  const RearrangeSpec *r = &fold->u.rearrange;
  cr_assert_eq(r->nin, 1);
  cr_assert_eq(r->in_len[0], 2);
  cr_assert_eq(r->nout, 2);
  cr_assert_eq(r->out_len[0], 1);
  cr_assert_eq(r->out_len[1], 1);
  cr_assert_eq(r->nids, 2);
  cr_assert_eq(r->written_size[0], 2);
  cr_assert_eq(r->written_size[1], -1);
  cr_assert_eq(r->size[1], 10009);
  SHAPE(fold, 2, 10009);
  Node *pre1 = find(&l, "bilinear_mlp.pre1");
  cr_assert_eq(pre1->child[0], fold);
  cr_assert_eq(pre1->u.index.e[0].kind, IDX_INT);
  cr_assert_eq(pre1->u.index.e[0].i, 1);
  round_trip(c, text);
  free(text);
  tu_free(c);
}

Test(parse, e5_lexical_scoping) {
  Comp *c = tu_comp(); /* `Array rand` works without tensors_as_random */
  char *text = tu_read_file(tu_data("circ/e5_scoping.circ"), NULL);
  NodeList l = parse_ok(c, text);
  cr_assert_eq(l.n, 1);
  Node *b = l.node[0]->child[0];
  cr_assert_str_eq(b->name, "b");
  Node *nested = find(&l, "my_nested");
  cr_assert_eq(b->child[2], nested); /* `'my_nested' ! 'b_sym'` is a reference */
  cr_assert_str_eq(b->u.module.arg[1].symbol->name, "b_sym");
  cr_assert_eq(nested->nchild, 1);
  cr_assert_eq(nested->u.einsum.out_rank, 0);
  Node *val = find(&l, "a_val");
  cr_assert(val->u.array.random);
  cr_assert_null(val->u.array.hash_prefix);
  SHAPE(val, 4, 1, 1);
  round_trip(c, text);
  free(text);
  tu_free(c);
}

Test(parse, e6_inline_symbol_definition) {
  Comp *c = comp_random();
  char *text = tu_read_file(tu_data("circ/e6_inline_symbol.circ"), NULL);
  NodeList l = parse_ok(c, text);
  cr_assert_eq(l.n, 2);
  Node *m = l.node[1];
  cr_assert_str_eq(m->name, "a");
  cr_assert_eq(m->child[0], l.node[0]);
  Node *sym = m->u.module.arg[0].symbol;
  cr_assert_eq(sym->kind, NK_Symbol);
  cr_assert_str_eq(sym->name, "a.inp");
  cr_assert_str_eq(sym->u.symbol.uuid, "90e7ce1a-0d52-4845-b42e-82411d6cbf56");
  SHAPE(sym);
  round_trip(c, text);
  free(text);
  tu_free(c);
}

Test(parse, e7_every_node_info_format) {
  Comp *c = comp_random();
  char *text = tu_read_file(tu_data("circ/e7_formats.circ"), NULL);
  NodeList l = parse_ok(c, text);
  cr_assert_eq(l.n, 9);
  Node *e = find(&l, "einsum"), *f = find(&l, "einsum fancy string");
  for (int k = 0; k < 2; k++) {
    Node *n = k ? f : e;
    cr_assert_eq(n->nchild, 3);
    assert_ids(n->u.einsum.in[0], n->u.einsum.in_rank[0], "a");
    assert_ids(n->u.einsum.in[1], n->u.einsum.in_rank[1], "ab");
    assert_ids(n->u.einsum.in[2], n->u.einsum.in_rank[2], "");
    assert_ids(n->u.einsum.out, n->u.einsum.out_rank, "b");
  }
  Node *r = find(&l, "rearrange");
  SHAPE(r, 3, 2, 1);
  cr_assert_eq(r->u.rearrange.nout, 3);
  cr_assert_eq(r->u.rearrange.out_len[2], 0);
  Node *ix = find(&l, "index");
  cr_assert_eq(ix->u.index.e[0].kind, IDX_SLICE);
  cr_assert_eq(ix->u.index.e[0].start, 0);
  cr_assert_eq(ix->u.index.e[0].stop, 1);
  cr_assert_eq(ix->u.index.e[1].kind, IDX_INT);
  SHAPE(ix, 1);
  Node *arr = find(&l, "_2");
  cr_assert(arr->u.array.random); /* tensors_as_random: not looked up */
  cr_assert_str_eq(arr->u.array.hash_prefix, "2f97b0bb06d4adba46cd8756");
  SHAPE(find(&l, "cumulant"), 2);
  round_trip(c, text);
  free(text);
  tu_free(c);
}

Test(parse, e8_layernorm_multiple_toplevel) {
  Comp *c = comp_random();
  char *text = tu_read_file(tu_data("circ/e8_layernorm.circ"), NULL);
  NodeList l = parse_ok(c, text);
  cr_assert_eq(l.n, 3);
  Node *in = find(&l, "ln.input");
  cr_assert_eq(l.node[1], in); /* a repeated reference at top level is appended again */
  cr_assert_eq(find(&l, "ln.c.eps")->u.scalar.value, 1e-5);
  cr_assert_eq(find(&l, "ln.neg")->u.scalar.value, -1.0);
  Node *var = find(&l, "ln.var");
  cr_assert_eq(var->child[0], var->child[1]);
  cr_assert_eq(var->child[0], find(&l, "ln.mean_subbed"));
  SHAPE(find(&l, "ln.neg_mean"), 1);
  SHAPE(l.node[2], 10007);
  round_trip(c, text);
  free(text);
  tu_free(c);
}

Test(parse, e9_gen_index) {
  Comp *c = comp_random();
  char *text = tu_read_file(tu_data("circ/e9_loglik.circ"), NULL);
  NodeList l = parse_ok(c, text);
  cr_assert_eq(l.n, 2);
  Node *ll = l.node[0];
  cr_assert_eq(ll->u.gf.fn, GF_GEN_INDEX);
  cr_assert(ll->u.gf.batch_x && ll->u.gf.check_int);
  SHAPE(find(&l, "ll.input"), 10093);
  cr_assert_eq(l.node[1]->nchild, 2);
  round_trip(c, text);
  free(text);
  tu_free(c);
}

Test(parse, e10_rearrange_corners_and_empty_names) {
  Comp *c = comp_random();
  char *text = tu_read_file(tu_data("circ/e10_rearrange.circ"), NULL);
  NodeList l = parse_ok(c, text);
  Node *add = l.node[0];
  cr_assert_str_eq(add->name, "pgqlrflg");
  Node *r = add->child[0];
  cr_assert_str_eq(r->name, ""); /* '' is a name, distinct from none */
  const RearrangeSpec *s = &r->u.rearrange;
  cr_assert_eq(s->nin, 2);
  cr_assert_eq(s->in_len[0], 0);
  cr_assert_eq(s->nout, 2);
  cr_assert_eq(s->out_len[1], 2);
  cr_assert_eq(s->nids, 3);
  cr_assert_eq(s->size[1], 4);
  cr_assert_eq(s->size[2], 2);
  SHAPE(r, 4, 4);
  cr_assert_eq(r->child[0]->u.scalar.value, -10.842327468923694);
  Node *empty = add->child[3];
  cr_assert_eq(empty->kind, NK_Einsum);
  cr_assert_eq(empty->nchild, 0);
  SHAPE(empty);
  round_trip(c, text);
  free(text);
  tu_free(c);
}

Test(parse, all_sample_files_round_trip) {
  const char *files[] = {"e1_sharing", "e3_cumulants", "e4_modules", "e5_scoping", "e6_inline_symbol",
                         "e7_formats", "e8_layernorm", "e9_loglik", "e10_rearrange", "features"};
  for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
    Comp *c = comp_random();
    char path[64];
    snprintf(path, sizeof path, "circ/%s.circ", files[i]);
    Compilation cm = {0};
    cr_assert(tu_run_file(c, tu_data(path), NULL, STAGE_TENSORS, &cm), "%s: %s", path, tu_diags(c));
    char *text = tu_read_file(tu_data(path), NULL);
    round_trip(c, text);
    free(text);
    tu_free(c);
  }
}

Test(parse, features_file) {
  Comp *c = comp_random();
  Compilation cm = {0};
  cr_assert(tu_run_file(c, tu_data("circ/features.circ"), NULL, STAGE_TENSORS, &cm), "%s", tu_diags(c));
  NodeList l = cm.tops;
  cr_assert_eq(l.n, 3);
  Node *root = l.node[0];
  cr_assert(root->autoname_disabled);
  cr_assert_eq(root->nchild, 11);
  cr_assert_eq(l.node[1], root);
  cr_assert_eq(l.node[2], find(&l, "x"));
  Node *r = find(&l, "r");
  cr_assert_str_eq(r->child[0]->name, "z"); /* the ▼ marker: 'z' is r's only child */
  cr_assert_str_eq(root->child[3]->name, "it's \\ #4");
  cr_assert_eq(find(&l, "cat")->child[1], find(&l, "x")); /* a reference restating everything */
  Node *m = find(&l, "m");
  cr_assert_eq(m->u.module.arg[1].symbol->kind, NK_Symbol);
  cr_assert_str_eq(m->u.module.arg[1].symbol->name, "other");
  cr_assert(!m->u.module.arg[1].batchable && m->u.module.arg[1].expandable &&
            !m->u.module.arg[1].ban_non_symbolic_size_expand);
  SHAPE(find(&l, "q"), 2, 2 * 10007);
  Node *c2 = find(&l, "c2");
  cr_assert_eq(c2->child[0], c2->child[1]);
  cr_assert_null(c2->child[0]->name);
  tu_free(c);
}

/* ------------------------------------------------------- §2.1 lines */

Test(parse, comments_and_names_with_hash) {
  Comp *c = comp_random();
  NodeList l = parse_ok(c, "# a full-line comment\n"
                           "\n"
                           "'# my name' Add # trailing # comment\n"
                           "     # indented comment, any indentation\n"
                           "  'x#y' [2] Scalar 1.5 #c\n"
                           "  3 'name stuff  ' [2] Scalar 2\n");
  cr_assert_eq(l.n, 1);
  cr_assert_str_eq(l.node[0]->name, "# my name");
  cr_assert_str_eq(l.node[0]->child[0]->name, "x#y");
  cr_assert_eq(l.node[0]->child[0]->u.scalar.value, 1.5);
  cr_assert_str_eq(l.node[0]->child[1]->name, "name stuff  ");
  tu_free(c);
}

Test(parse, base_indentation_and_crlf) {
  Comp *c = comp_random();
  NodeList l = parse_ok(c, "    'a' Add\r\n      'b' [2] Scalar 1\r\n    'c' [] Scalar 2\r\n");
  cr_assert_eq(l.n, 2);
  cr_assert_eq(l.node[0]->nchild, 1);
  cr_assert_str_eq(l.node[0]->child[0]->name, "b");
  tu_free(c);
  expect_error("    'a' Add\n  'b' [2] Scalar 1\n", "2:3", "indented by 2, less than the first node line (4)");
  expect_error("'a' Add\n   'b' [2] Scalar 1\n", "2:4", "steps of 2");
  expect_error("'a' Add\n    'b' [2] Scalar 1\n", "2:5", "1 level deeper than its parent");
}

Test(parse, arrow_glyphs_are_indentation) {
  Comp *c = comp_random();
  NodeList l = parse_ok(c, "'a' Add\n"
                           "├‣'b' [2] Scalar 1\n"
                           "└‣'d' Add\n"
                           "  ├‣'c' [2] Scalar 2\n"
                           "  └‣'b'  \u2500 # trailing glyphs and a comment\n");
  cr_assert_eq(l.n, 1);
  cr_assert_eq(l.node[0]->nchild, 2);
  cr_assert_eq(l.node[0]->child[1]->nchild, 2);
  cr_assert_eq(l.node[0]->child[1]->child[1], l.node[0]->child[0]);
  tu_free(c);
  /* 'c' is at depth 2 under 'b' (a Scalar, but parsing does not care until building) */
  expect_error("'a' Add\n├‣'b' [2] Scalar 1\n│ ├‣'c' [2] Scalar 2\n", "2:3", "Scalar 'b' needs 0 children, found 1");
}

Test(parse, only_child_marker) {
  Comp *c = comp_random();
  NodeList l = parse_ok(c, "'a' Rearrange a -> a ()\n"
                           "▼\n"
                           "'b' Rearrange a -> (a)\n"
                           "|/ # a comment\n"
                           "'c' [3] Scalar 1\n"
                           "'d' [] Scalar 2\n");
  cr_assert_eq(l.n, 2);
  Node *a = l.node[0];
  cr_assert_str_eq(a->child[0]->name, "b");
  cr_assert_str_eq(a->child[0]->child[0]->name, "c");
  SHAPE(a, 3, 1);
  cr_assert_str_eq(l.node[1]->name, "d");
  tu_free(c);
}

/* ------------------------------------------------------- §2.2 node lines */

Test(parse, ident_forms_and_name_escapes) {
  Comp *c = comp_random();
  NodeList l = parse_ok(c, "'x' 'y' Add\n"
                           "  3 [2] Scalar 1\n"
                           "  4 'four' [2] Scalar 2\n"
                           "  'a\\'b\\\\c' [2] Scalar 3\n"
                           "'x'\n"
                           "3 Scalar\n"
                           "4 'four'\n"
                           "'x' 'y' Add\n");
  cr_assert_eq(l.n, 5);
  Node *x = l.node[0];
  cr_assert_str_eq(x->name, "y");
  cr_assert_null(x->child[0]->name);
  cr_assert_str_eq(x->child[1]->name, "four");
  cr_assert_str_eq(x->child[2]->name, "a'b\\c");
  cr_assert_eq(l.node[1], x);
  cr_assert_eq(l.node[2], x->child[0]);
  cr_assert_eq(l.node[3], x->child[1]);
  cr_assert_eq(l.node[4], x);
  tu_free(c);
}

Test(parse, autoname_disabled) {
  Comp *c = comp_random();
  NodeList l = parse_ok(c, "'x' AD [2] Scalar 1\n3 AD Add\n  'x' AD\n");
  cr_assert(l.node[0]->autoname_disabled);
  cr_assert(l.node[1]->autoname_disabled);
  cr_assert_not(l.node[1]->child[0] == NULL);
  tu_free(c);
  expect_error("'x' [2] Scalar 1\n'x' AD\n", "2:5", "'x' restates AD but was defined without it (line 1)");
}

Test(parse, shapes_sizes_and_named_axes) {
  Comp *c = comp_random();
  NodeList l = parse_ok(c, "'a' [] Scalar 1\n"
                           "'b' [2,3,] Scalar 1\n"
                           "'c' [ 1_000 , 0s, 2*1s,  2 * 1s , 3s*2 ] Scalar 1\n"
                           "'d' [large:3,small : 1] Scalar 1\n"
                           "'e' [ ] Scalar 1\n"
                           "'f' [10007] Symbol\n");
  SHAPE(l.node[0]);
  SHAPE(l.node[1], 2, 3);
  SHAPE(l.node[2], 1000, 10007, 2 * 10009, 2 * 10009, 2 * 10039);
  SHAPE(l.node[3], 3, 1);
  SHAPE(l.node[4]);
  SHAPE(l.node[5], 10007);
  cr_assert_eq(symbolic_prime(255), 12437);
  tu_free(c);
  expect_error("'a' [2,,3] Scalar 1\n", "1:8", "expected a size");
  expect_error("'a' [2 Scalar 1\n", "1:8", "expected ',' or ']' in the shape, found 'Scalar'");
  expect_error("'a' [2\n", "1:5", "unclosed '['");
  expect_error("'a' [3x] Scalar 1\n", "1:7", "expected ',' or ']' in the shape, found 'x]'");
  expect_error("'a' [99999999999999999999] Scalar 1\n", "1:6", "does not fit in 64 bits");
  expect_error("'a' [256s] Scalar 1\n", "1:6", "symbolic size '256s' is out of range");
  expect_error("'a' [4294967296,4294967296*4294967296] Scalar 1\n", "1:17", "overflows 64 bits");
  expect_error("'a'[2] Scalar 1\n", "1:4", "expected whitespace after the identifier 'a', found '[2]'");
}

Test(parse, kinds_and_definitions) {
  expect_error("'a' [2] Scalr 1\n", "1:9", "unknown node kind 'Scalr' (expected one of Einsum, Array");
  expect_error("'a' [2]\n", "1:1", "'a' is not defined: the first line that mentions an identifier must define it");
  expect_error("'a' Add\n  'b'\n", "2:3", "'b' is not defined");
  expect_error("3 tok_embeds\n", "1:3", "expected a node kind after 3, found 'tok_embeds' (old-style unquoted");
  expect_error("'a' Scalar 1\n", "1:5", "Scalar needs a shape: write it before the kind");
  expect_error("'a' Symbol\n", "1:5", "Symbol needs a shape");
  expect_error("'a' Scatter [0:1]\n  'b' [1] Scalar 1\n", "1:5", "Scatter needs a shape");
  expect_error("'a' [2] Array\n'b' Array rand\n", "2:5", "random Array needs a shape");
  expect_error("'a' Conv\n", "1:5", "Conv nodes cannot be read from text");
  expect_error("'a' Add 3\n", "1:9", "Add takes no parameters, found '3'");
}

/* -------------------------------------------- §2.3 identity and references */

Test(parse, repeats_that_match) {
  Comp *c = comp_random();
  NodeList l = parse_ok(c, "'s' [2,3] Symbol 93aa0db1-2435-4fa6-8675-711543cab705\n"
                           "3 'e' [3,2] Einsum ab->ba\n"
                           "  's' [2,3] Symbol 93aa0db1-2435-4fa6-8675-711543cab705\n"
                           "3 'e' [3,2] Einsum ab->ba\n"
                           "3\n"
                           "4 [3] Add\n"
                           "  5 [3] Scalar 1\n"
                           "4 [3]\n");
  cr_assert_eq(l.n, 6);
  cr_assert_eq(l.node[1], l.node[2]);
  cr_assert_eq(l.node[2], l.node[3]);
  cr_assert_eq(l.node[1]->child[0], l.node[0]);
  cr_assert_eq(l.node[4]->kind, NK_Add);
  cr_assert_eq(l.node[5], l.node[4]);
  tu_free(c);
}

Test(parse, repeats_that_mismatch) {
  expect_error("'s' [2] Scalar 1\n's' [3]\n", "2:5", "'s' restates shape [3] but was declared [2] (line 1)");
  expect_error("'s' [2] Scalar 1\n's' Symbol\n", "2:5", "'s' restates kind Symbol but was defined as Scalar (line 1)");
  expect_error("'s' [2] Scalar 1\n's' Scalar 2\n", "2:12", "'s' restates '2' but was defined with '1' (line 1)");
  expect_error("3 'n' [2] Scalar 1\n3 'm'\n", "2:3", "3 restates name 'm' but was defined with name 'n' (line 1)");
  expect_error("3 [2] Scalar 1\n3 'm'\n", "2:3", "3 restates name 'm' but was defined without a name");
  /* old files: an unquoted name after the number */
  expect_error("8 'tok_embeds' [2] Scalar 1\n'a' Add\n  8 tok_embeds\n", "3:5",
               "8 restates 'tok_embeds' but was defined with '1' (line 1); old-style unquoted names");
  /* a restated shape on a node that declared none is checked against the computed one */
  expect_error("'e' Einsum a->a\n  'x' [2] Scalar 1\n'e' [3]\n", "3:5", "'e' restates shape [3] but its shape is [2]");
}

Test(parse, references_cycles_and_children) {
  expect_error("'a' Add\n  'b' Add\n    'a'\n", "3:5", "cycle: 'a' contains itself ('a' > 'b' > 'a')");
  expect_error("'a' Add\n  'a'\n", "2:3", "cycle: 'a' contains itself ('a' > 'a')");
  expect_error("'x' [2] Scalar 1\n'a' Add\n  'x'\n    'y' [2] Scalar 2\n", "4:5",
               "'x' repeats the node defined at line 1, so it cannot have children");
  expect_error("'a' Add\n  'b'\n  'b' [2] Scalar 1\n", "2:3", "'b' is not defined");
}

Test(parse, declared_shape_checked_against_computed) {
  expect_error("'e' [3] Einsum ab->ab\n  'x' [2,3] Scalar 1\n", "1:5", "Einsum 'e': declared shape [3] but computed [2,3]");
  expect_error("'i' [1s] Index [0]\n  'x' [2,3] Scalar 1\n", "1:5", "declared shape [1s] but computed [3]");
}

Test(parse, errors_continue_and_skip_children) {
  const char *text = "'a' Add\n"
                     "  'b' Einsum ab->\n"       /* wrong einsum: operand rank (built: reported by ir_make) */
                     "    'x' [2] Scalar 1\n"
                     "  'c' [2,] Bogus\n"         /* unknown kind */
                     "    'd' [2] Scalar 1\n"     /* child of a bad line: still read */
                     "   'e' [2] Scalar 1\n"      /* odd indentation: skipped with its children */
                     "      'f' Frob\n"           /* skipped: no second error */
                     "'g' [2] Scalr 1\n"          /* unknown kind */
                     "'c'\n"                      /* reference to a failed node: silent */
                     "'d'\n";                     /* defined under a bad parent: fine */
  int n = expect_error(text, "4:12", "unknown node kind 'Bogus'");
  expect_error(text, "6:4", "steps of 2");
  expect_error(text, "8:9", "unknown node kind 'Scalr'");
  expect_error(text, "2:3", "operand 0 has 2 axes in the spec but the child 'x' has rank 1");
  cr_assert_eq(n, 4);
}

/* ------------------------------------------------------- §2.5 extras */

Test(parse, einsum_strings) {
  Comp *c = comp_random();
  NodeList l = parse_ok(c, "'x' [2,3] Scalar 1\n"
                           "'y' [3] Scalar 2\n"
                           "'e' Einsum a b , b -> a\n"
                           "  'x'\n"
                           "  'y'\n"
                           "'f' Einsum fancy: first second, second -> first\n"
                           "  'x'\n"
                           "  'y'\n"
                           "'g' Einsum αZ->Zα\n"
                           "  'x'\n"
                           "'h' Einsum ,->\n"
                           "  'z' [] Scalar 1\n"
                           "  'z'\n");
  Node *e = l.node[2], *f = l.node[3], *g = l.node[4];
  assert_ids(e->u.einsum.in[0], e->u.einsum.in_rank[0], "ab");
  assert_ids(e->u.einsum.out, e->u.einsum.out_rank, "a");
  assert_ids(f->u.einsum.in[0], f->u.einsum.in_rank[0], "ab");
  assert_ids(f->u.einsum.in[1], f->u.einsum.in_rank[1], "b");
  assert_ids(f->u.einsum.out, f->u.einsum.out_rank, "a");
  cr_assert_eq(g->u.einsum.in[0][0], 52);
  cr_assert_eq(g->u.einsum.in[0][1], 51);
  SHAPE(g, 3, 2);
  cr_assert_eq(l.node[5]->nchild, 2);
  tu_free(c);
  /* ψ (U+03C8) is the last letter: id 75 */
  Comp *c2 = comp_random();
  NodeList l2 = parse_ok(c2, "'g' Einsum ψ->ψ\n  'x' [2] Scalar 1\n");
  cr_assert_eq(l2.node[0]->u.einsum.in[0][0], 75);
  tu_free(c2);
  expect_error("'e' Einsum a1->a\n  'x' [2,3] Scalar 1\n", "1:13", "expected an einsum axis letter (a-z, A-Z or α-ψ), found '1'");
  expect_error("'e' Einsum ab\n  'x' [2,3] Scalar 1\n", "1:12", "expected '->' in the einsum spec");
  expect_error("'e' Einsum a->b->c\n  'x' [2] Scalar 1\n", "1:16", "second '->'");
  expect_error("'e' Einsum a->a,b\n  'x' [2] Scalar 1\n", "1:16", "unexpected ','");
  expect_error("'e' Einsum ω->ω\n  'x' [2] Scalar 1\n", "1:12", "found 'ω'");
  expect_error("'e' Einsum a,b->a\n  'x' [2] Scalar 1\n", "1:12",
               "Einsum 'e': the spec 'a,b->a' has 2 operands but the node has 1 child");
}

Test(parse, rearrange_specs) {
  Comp *c = comp_random();
  NodeList l = parse_ok(c, "'x' [6,4] Scalar 1\n"
                           "'r' Rearrange (a b:2) c -> c 5 (b a) ()\n"
                           "  'x'\n"
                           "'s' Rearrange a b -> (a b)\n"
                           "  'x'\n"
                           "'t' Rearrange a:2 * 3 b -> b a\n"
                           "  'x'\n");
  Node *r = l.node[1];
  SHAPE(r, 4, 5, 6, 1);
  cr_assert_eq(r->u.rearrange.nids, 4);
  cr_assert_eq(r->u.rearrange.size[0], 3);
  cr_assert_eq(r->u.rearrange.size[3], 5);
  SHAPE(l.node[2], 24);
  SHAPE(l.node[3], 4, 6);
  tu_free(c);
  expect_error("'r' Rearrange a b\n  'x' [2,3] Scalar 1\n", "1:15", "expected '->' in the rearrange spec");
  expect_error("'r' Rearrange a, b -> a\n  'x' [2,3] Scalar 1\n", "1:16", "expected whitespace between rearrange axes");
  expect_error("'r' Rearrange (a b -> a\n  'x' [2,3] Scalar 1\n", "1:15", "unclosed '('");
  expect_error("'r' Rearrange a:2 b -> a:3 b\n  'x' [2,3] Scalar 1\n", "1:26", "axis 'a' is given size 3 here but 2 before");
  expect_error("'r' Rearrange a b -> a\n  'x' [2,3] Scalar 1\n", "1:1", "input axis is missing from the output");
}

Test(parse, index_lists) {
  Comp *c = comp_random();
  NodeList l = parse_ok(c, "'x' [5,6,7] Scalar 1\n"
                           "'i' Index [ -1 , -3: , :-2 ]\n"
                           "  'x'\n"
                           "'j' Index [1_0:]\n"
                           "  'y' [20] Scalar 1\n"
                           "'k' Index []\n"
                           "  'x'\n");
  const IndexSpec *ix = &l.node[1]->u.index;
  cr_assert_eq(ix->e[0].kind, IDX_INT);
  cr_assert_eq(ix->e[0].i, -1);
  cr_assert(ix->e[1].kind == IDX_SLICE && ix->e[1].has_start && !ix->e[1].has_stop && ix->e[1].start == -3);
  cr_assert(ix->e[2].kind == IDX_SLICE && !ix->e[2].has_start && ix->e[2].stop == -2);
  SHAPE(l.node[1], 3, 5);
  SHAPE(l.node[2], 10);
  SHAPE(l.node[3], 5, 6, 7);
  tu_free(c);
  expect_error("'i' Index 0,1\n  'x' [2] Scalar 1\n", "1:11", "expected an index list like [0:2,1,:]");
  expect_error("'i' Index [0:1:2]\n  'x' [2] Scalar 1\n", "1:15", "index slices take no step");
  expect_error("'i' Index [a]\n  'x' [2] Scalar 1\n", "1:12", "expected an integer, a slice start:stop or a tensor");
  expect_error("'i' Index [0:b]\n  'x' [2] Scalar 1\n", "1:14", "expected an integer slice bound, found 'b'");
  expect_error("'i' Index [tzz]\n  'x' [2] Scalar 1\n", "1:13", "expected an index tensor hash prefix");
  expect_error("'s' [4] Scatter [1]\n  'x' [2] Scalar 1\n", "1:18", "Scatter index entries must be slices");
  expect_error("'i' Index [5]\n  'x' [2] Scalar 1\n", "1:1", "index 5 is out of range");
}

Test(parse, scalar_values) {
  Comp *c = comp_random();
  NodeList l = parse_ok(c, "'a' [] Scalar 1e-5\n'b' [] Scalar 1.\n'c' [] Scalar -10_000.0\n'd' [] Scalar inf\n"
                           "'e' [] Scalar -inf\n'f' [] Scalar NaN\n'g' [] Scalar 0.17677669529663687\n"
                           "'h' [] Scalar -0\n");
  cr_assert_eq(l.node[0]->u.scalar.value, 1e-5);
  cr_assert_eq(l.node[1]->u.scalar.value, 1.0);
  cr_assert_eq(l.node[2]->u.scalar.value, -10000.0);
  cr_assert(isinf(l.node[3]->u.scalar.value) && l.node[3]->u.scalar.value > 0);
  cr_assert(isinf(l.node[4]->u.scalar.value) && l.node[4]->u.scalar.value < 0);
  cr_assert(isnan(l.node[5]->u.scalar.value));
  cr_assert_eq(l.node[6]->u.scalar.value, 0.17677669529663687);
  cr_assert(signbit(l.node[7]->u.scalar.value));
  char *d = dump_str(c, &l);
  cr_assert(strstr(d, "'a' [] Scalar 0.00001\n"), "%s", d);
  cr_assert(strstr(d, "'b' [] Scalar 1\n"), "%s", d);
  cr_assert(strstr(d, "'c' [] Scalar -10000\n"), "%s", d);
  cr_assert(strstr(d, "'d' [] Scalar inf\n'e' [] Scalar -inf\n'f' [] Scalar NaN\n"), "%s", d);
  cr_assert(strstr(d, "'g' [] Scalar 0.17677669529663687\n"), "%s", d);
  cr_assert(strstr(d, "'h' [] Scalar -0\n"), "%s", d);
  free(d);
  tu_free(c);
  expect_error("'a' [] Scalar 1.2.3\n", "1:15", "expected a number for the Scalar value");
  expect_error("'a' [] Scalar 0x10\n", "1:15", "found '0x10'");
  expect_error("'a' [] Scalar nan(1)\n", "1:15", "expected a number");
  expect_error("'a' [] Scalar\n", "1:14", "Scalar needs a value");
}

Test(parse, scalar_printing_is_shortest_round_trip_without_exponent) {
  double vals[] = {0.1, 1e21, 1.5e-7, 123456789012345678.0, 5e-324, 1.7976931348623157e308, -2.5, 1e-5, 100};
  const char *want[] = {"0.1", "1000000000000000000000", "0.00000015", "123456789012345680", NULL, NULL, "-2.5",
                        "0.00001", "100"};
  for (size_t i = 0; i < sizeof vals / sizeof *vals; i++) {
    Comp *c = comp_random();
    NodeList l = {0};
    Node proto = {.kind = NK_Scalar, .name = "v", .u.scalar.value = vals[i]};
    nodelist_push(c, &l, ir_make(c, &proto));
    char *d = dump_str(c, &l), want_line[64];
    cr_assert_eq(strncmp(d, "'v' [] Scalar ", 14), 0, "%s", d);
    if (want[i]) {
      snprintf(want_line, sizeof want_line, "'v' [] Scalar %s\n", want[i]);
      cr_assert_str_eq(d, want_line);
    }
    cr_assert_null(strchr(d + 14, 'e'), "%s", d);
    NodeList back = parse_ok(c, d);
    cr_assert_eq(back.node[0]->u.scalar.value, vals[i], "%s", d);
    free(d);
    tu_free(c);
  }
}

Test(parse, symbols_tags_uuids) {
  Comp *c = comp_random();
  NodeList l = parse_ok(c, "'a' [2] Symbol\n"
                           "'b' [2] Symbol rand\n"
                           "'c' [2] Symbol 00000000-0000-0000-0000-000000000000\n"
                           "'d' [2] Symbol 0FA341C3-34B3-4699-847F-08674808B28A\n"
                           "'e' [2] Symbol 0fa341c334b34699847f08674808b28a\n"
                           "'t' Tag 1A280C74-fa9f-4dd9-94f4-5cca4a0cf243\n"
                           "  'a'\n");
  cr_assert_str_eq(l.node[0]->u.symbol.uuid, "");
  const char *r = l.node[1]->u.symbol.uuid;
  cr_assert_eq(strlen(r), 36);
  cr_assert(r[8] == '-' && r[14] == '4', "%s", r);
  cr_assert_str_eq(l.node[2]->u.symbol.uuid, "");
  cr_assert_str_eq(l.node[3]->u.symbol.uuid, "0fa341c3-34b3-4699-847f-08674808b28a");
  cr_assert_str_eq(l.node[4]->u.symbol.uuid, "0fa341c3-34b3-4699-847f-08674808b28a");
  cr_assert_str_eq(l.node[5]->u.tag.uuid, "1a280c74-fa9f-4dd9-94f4-5cca4a0cf243");
  tu_free(c);
  expect_error("'a' [2] Symbol 1234\n", "1:16", "expected a UUID like");
  expect_error("'t' Tag\n  'a' [2] Scalar 1\n", "1:8", "expected a UUID like");
  expect_error("'s' StoredCumulantVar 1,2\n", "1:23", "expected 'orders|uuid'");
  expect_error("'s' StoredCumulantVar 1,x|1a280c74-fa9f-4dd9-94f4-5cca4a0cf243\n", "1:25", "expected a cumulant order");
}

Test(parse, concat_generalfunction_array) {
  Comp *c = comp_random();
  NodeList l = parse_ok(c, "'c' Concat -1\n"
                           "  'x' [2,3] Scalar 1\n"
                           "  'y' [2,4] Scalar 2\n"
                           "'g' GeneralFunction gelu_new\n"
                           "  'x'\n"
                           "'h' GeneralFunction apply_rotary_pos_emb at rust_circuit.generalfuncs.rotary_pos_emb:ApplyRotaryPosEmb\n"
                           "  'x'\n"
                           "'r' [2,2] Array rand\n");
  cr_assert_eq(l.node[0]->u.concat.axis, 1);
  SHAPE(l.node[0], 2, 7);
  cr_assert_eq(l.node[1]->u.gf.fn, GF_GELU_NEW);
  cr_assert_eq(l.node[2]->u.gf.fn, GF_USER);
  cr_assert_eq(l.node[3]->u.array.tensor->dtype, DT_F32);
  cr_assert(l.node[3]->u.array.random);
  tu_free(c);
  expect_error("'g' GeneralFunction gelux\n  'x' [2] Scalar 1\n", "1:21", "unknown GeneralFunction 'gelux'");
  expect_error("'c' Concat x\n  'x' [2] Scalar 1\n", "1:12", "expected a Concat axis");
  expect_error("'a' Array xyz\n", "1:11", "expected a tensor hash prefix or 'rand'");
  expect_error("'a' [0s] Array rand\n", "1:5", "symbolic size");
  expect_error("'a' [100000,100000,100000] Array rand\n", "1:5", "too large");
  /* without a store the lookup fails with a located error */
  Comp *c2 = tu_comp();
  c2->tensor_dir = "/nonexistent/circc";
  Compilation cm2 = {0};
  const char *arr = "'a' [2] Array 50dba7b000ecd7c013961b6c\n";
  cr_assert(tu_run_named(c2, "t.circ", arr, STAGE_PARSE, &cm2), "%s", tu_diags(c2)); /* no I/O */
  cr_assert_not(tu_run_named(c2, "t.circ", arr, STAGE_TENSORS, &cm2));
  cr_assert(strstr(tu_diags(c2), "t.circ:1:15: error: "), "%s", tu_diags(c2));
  tu_free(c2);
  /* the parser reads no tensor, so a stored Array needs its shape written, an index tensor its length */
  Comp *c3 = tu_comp();
  expect_error_in(c3, "'a' Array 50dba7b000ecd7c013961b6c\n", "1:5", "Array needs a shape");
  tu_free(c3);
  expect_error("'i' Index [t0123456789]\n  'x' [2] Scalar 1\n", "1:23", "index tensor t0123456789 needs its length");
}

/* ------------------------------------------------------- §2.6 modules */

Test(parse, module_binding_rules) {
  const char *spec = "'s' [2] Symbol 93aa0db1-2435-4fa6-8675-711543cab705\n"
                     "'f' GeneralFunction sin\n  's'\n";
  char buf[512];
  snprintf(buf, sizeof buf, "%s'm' Module\n  'f'\n  'v' [2] Scalar 1\n", spec);
  expect_error(buf, "6:3", "argument 1 of Module 'm' needs a binding: append ' ! <symbol>'");
  snprintf(buf, sizeof buf, "%s'm' Module\n  'f' ! 's'\n  'v' [2] Scalar 1 ! 's'\n", spec);
  expect_error(buf, "5:7", "child 0 of Module 'm' is its spec circuit and takes no '!' binding");
  snprintf(buf, sizeof buf, "%s'a' Add\n  'v' [2] Scalar 1 ! 's'\n", spec);
  expect_error(buf, "5:20", "'!' binds a Module argument, but the parent 'a' is an Add");
  snprintf(buf, sizeof buf, "%s'v' [2] Scalar 1 ! 's'\n", spec);
  expect_error(buf, "4:18", "'!' binds a Module argument, but 'v' is a top-level circuit");
  snprintf(buf, sizeof buf, "%s'm' Module\n  'f'\n  'v' [2] Scalar 1 ! 'f'\n", spec);
  expect_error(buf, "6:22", "'!' must name a Symbol, but 'f' is a GeneralFunction (line 2)");
  snprintf(buf, sizeof buf, "%s'm' Module\n  'f'\n  'v' [2] Scalar 1 ! 'nope'\n", spec);
  expect_error(buf, "6:22", "'nope' is not defined");
  snprintf(buf, sizeof buf, "%s'm' Module\n  'f'\n  'v' [2] Scalar 1 !\n", spec);
  expect_error(buf, "6:20", "expected a Symbol after '!'");
  snprintf(buf, sizeof buf, "%s'm' Module\n  'f'\n  'v' [2] Scalar 1 ! 's' tfx\n", spec);
  expect_error(buf, "6:26", "unknown node kind 'tfx'");
  /* flags and inline definition */
  Comp *c = comp_random();
  snprintf(buf, sizeof buf,
           "%s'm' Module\n  'f'\n  'v' [2] Scalar 1 ! 's' fft\n  'w' [] Scalar 1 ! 'q' [] Symbol ttf\n", spec);
  NodeList l = parse_ok(c, buf);
  Node *m = l.node[2];
  cr_assert_eq(module_nargs(m), 2);
  cr_assert(!m->u.module.arg[0].batchable && !m->u.module.arg[0].expandable &&
            m->u.module.arg[0].ban_non_symbolic_size_expand);
  cr_assert_str_eq(m->u.module.arg[1].symbol->name, "q");
  cr_assert_str_eq(m->u.module.arg[1].symbol->u.symbol.uuid, "");
  cr_assert(m->u.module.arg[1].batchable && !m->u.module.arg[1].ban_non_symbolic_size_expand);
  round_trip(c, buf);
  tu_free(c);
}

/* ------------------------------------------------------- dump */

Test(parse, dump_format_and_ambiguous_names) {
  Comp *c = comp_random();
  const char *text = "'x' Add\n"
                     "  'dup' [2] Scalar 1\n"
                     "  3 'dup' [2] Scalar 2\n"
                     "  4 [2] Scalar 3\n"
                     "  4 Scalar\n"
                     "  'p' AD [2] Rearrange a -> a\n"
                     "    4\n"
                     "  'dup'\n";
  NodeList l = parse_ok(c, text);
  char *d = dump_str(c, &l);
  cr_assert_str_eq(d, "'x' [2] Add\n"
                      "  0 'dup' [2] Scalar 1\n"
                      "  1 'dup' [2] Scalar 2\n"
                      "  2 [2] Scalar 3\n"
                      "  2 Scalar\n"
                      "  'p' AD [2] Rearrange a -> a\n"
                      "    2 Scalar\n"
                      "  0 'dup'\n");
  free(d);
  round_trip(c, text);
  tu_free(c);
}

Test(parse, dump_tricky_names_and_specs_round_trip) {
  Comp *c = comp_random();
  round_trip(c, "'it\\'s a \\\\ #name' Cumulant\n"
                "  'e' Einsum αβ,βψ->αψ\n"
                "    'x' [2,3] Scalar 1\n"
                "    'y' [3,4] Scalar 1\n"
                "  'r' Rearrange (a b:2) c -> c 5 (b a)\n"
                "    'z' [4,3] Scalar 0.5\n"
                "  's' [2,4] Scatter [0:2,1:]\n"
                "    'w' [2,3] Scalar -3\n"
                "  'i' [2,4] Index [:,-4:,2]\n"
                "    'v' [2,4,5] Scalar 1e300\n");
  tu_free(c);
}

Test(parse, dump_binding_to_symbol_named_with_hash) {
  /* `! 'a#b'` would end at the '#': the dump numbers such a Symbol instead */
  Comp *c = comp_random();
  const char *text = "5 'a#b' [] Symbol\n'm' Module\n  'body' Einsum ->\n    5\n  'v' [] Scalar 1 ! 5\n";
  NodeList l = parse_ok(c, text);
  char *d = dump_str(c, &l);
  cr_assert_str_eq(d, "0 'a#b' [] Symbol\n'm' [] Module\n  'body' [] Einsum ->\n    0 'a#b'\n  'v' [] Scalar 1 ! 0\n");
  free(d);
  round_trip(c, text);
  tu_free(c);
}

/* The parser reserves a random Array's draws where it meets it, load_tensors
 * draws them later: the values are those of drawing in file order (a `Symbol
 * rand` between them takes its two draws in between). */
Test(parse, random_arrays_draw_in_file_order) {
  Comp *c = tu_comp();
  NodeList l = parse_ok(c, "'a' [2] Array rand\n's' [] Symbol rand\n'b' [3] Array rand\n");
  uint64_t state = 0x5eed; /* comp_init's seed */
  float want[5];
  for (int i = 0; i < 2; i++) want[i] = (float)comp_rng_normal(&state);
  comp_rng_u64(&state); /* the Symbol's UUID */
  comp_rng_u64(&state);
  for (int i = 2; i < 5; i++) want[i] = (float)comp_rng_normal(&state);
  const float *a = l.node[0]->u.array.tensor->data, *b = l.node[2]->u.array.tensor->data;
  for (int i = 0; i < 5; i++) cr_assert_eq(i < 2 ? a[i] : b[i - 2], want[i], "element %d", i);
  tu_free(c);
}

/* ------------------------------------------------ reference circuits */

/* A library as rust_circuit's Parser(reference_circuits=…) gets it: 'ln.input'
 * (a Symbol) and 'ln' (a spec over it), parsed on their own. */
static RefCircuits library(Comp *c) {
  static const char *names[] = {"ln.input", "ln"};
  const char *text = "'ln' GeneralFunction gelu\n"
                     "  'ln.input' [0s] Symbol 981b4d2a-711b-4a9d-a11c-d859c311e80c\n"
                     "'ln.input'\n";
  NodeList l = parse_ok(c, text);
  cr_assert_eq(l.n, 2);
  Node **node = ARENA_ARRAY(&c->arena, Node *, 2);
  node[0] = l.node[1];
  node[1] = l.node[0];
  return (RefCircuits){names, node, 2};
}

Test(parse, reference_circuit_by_bare_name) {
  Comp *c = comp_random();
  RefCircuits refs = library(c);
  const char *text = "'y' Add\n  'ln'\n  'x' [0s] Scalar 1\n'ln'\n";
  NodeList l = {0};
  cr_assert(parse_text(c, "t.circ", text, strlen(text), &refs, &l), "%s", tu_diags(c));
  cr_assert_eq(l.n, 2); /* the library is not an output; a top-level mention is */
  cr_assert_eq(l.node[0]->child[0], refs.node[1]);
  cr_assert_eq(l.node[1], refs.node[1]);
  tu_free(c);
}

Test(parse, reference_circuit_in_a_module) {
  Comp *c = comp_random();
  RefCircuits refs = library(c);
  const char *text = "'call' Module\n  'ln'\n  'v' [3] Scalar 2 ! 'ln.input'\n";
  NodeList l = {0};
  cr_assert(parse_text(c, "t.circ", text, strlen(text), &refs, &l), "%s", tu_diags(c));
  cr_assert_eq(l.n, 1);
  Node *m = l.node[0];
  cr_assert_eq(m->child[0], refs.node[1]);
  cr_assert_eq(m->u.module.arg[0].symbol, refs.node[0]);
  SHAPE(m, 3);
  /* inside a spec the file defines */
  const char *text2 = "'call2' Module\n  'spec' Add\n    'ln'\n    'ln.input'\n  'w' [4] Scalar 2 ! 'ln.input'\n";
  NodeList l2 = {0};
  cr_assert(parse_text(c, "t2.circ", text2, strlen(text2), &refs, &l2), "%s", tu_diags(c));
  Node *spec = l2.node[0]->child[0];
  cr_assert_eq(spec->child[0], refs.node[1]);
  cr_assert_eq(spec->child[1], refs.node[0]);
  SHAPE(l2.node[0], 4);
  tu_free(c);
}

Test(parse, reference_circuit_errors) {
  Comp *c = comp_random();
  RefCircuits refs = library(c);
  const char *cases[][2] = {
      {"'t' Add\n  'nope'\n", "t.circ:2:3: error: 'nope' is not defined"},
      {"'t' Add\n  'ln' [0s]\n", "t.circ:2:8: error: 'ln' is a reference circuit: a line naming it takes no other"},
      {"'ln'\n  'x' [2] Scalar 1\n", "t.circ:2:3: error: 'ln' is a reference circuit, so it cannot have children"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    NodeList l = {0};
    cr_assert_not(parse_text(c, "t.circ", cases[i][0], strlen(cases[i][0]), &refs, &l));
    cr_assert(strstr(tu_diags(c), cases[i][1]), "%s", tu_diags(c));
  }
  tu_free(c);
  /* without references (NULL) a library name is undefined, as before */
  Comp *c2 = comp_random();
  NodeList l = {0};
  const char *text = "'t' Add\n  'ln'\n";
  cr_assert_not(parse_text(c2, "t.circ", text, strlen(text), NULL, &l));
  cr_assert(strstr(tu_diags(c2), "t.circ:2:3: error: 'ln' is not defined: the first line that mentions an "
                                 "identifier must define it with a kind"), "%s", tu_diags(c2));
  tu_free(c2);
}

/* ------------------------------------------------------- files */

Test(parse, parse_file_missing_is_io_error) {
  Comp *c = tu_comp();
  Compilation cm = {0};
  cr_assert_not(tu_run_file(c, "/nonexistent/x.circ", NULL, STAGE_TENSORS, &cm));
  cr_assert_eq(diag_exit_code(c), DIAG_IO);
  cr_assert(strstr(tu_diags(c), "/nonexistent/x.circ: error: cannot read circuit file: No such file"), "%s",
            tu_diags(c));
  tu_free(c);
}

Test(parse, diagnostics_quote_the_line_with_a_caret) {
  Comp *c = comp_random();
  Compilation cm = {0};
  const char *text = "'a' Add\n  'b' [2] Scalar zz\n";
  cr_assert_not(tu_run_named(c, "t.circ", text, STAGE_TENSORS, &cm));
  cr_assert(strstr(tu_diags(c), "t.circ:2:18: error: expected a number for the Scalar value"), "%s", tu_diags(c));
  char want[128];
  snprintf(want, sizeof want, "    'b' [2] Scalar zz\n  %17s^\n", "");
  cr_assert(strstr(tu_diags(c), want), "%s", tu_diags(c));
  tu_free(c);
}
