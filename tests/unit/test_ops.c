/* test_ops.c — `circc --ops FILE.c` (compiler/front/ops.c): C GeneralFunctions
 * found and checked with libclang, run by circc eval (a shared object) and by
 * compiled programs (the files are part of model.c). Each user op is checked
 * against circc's built-in equivalent or an independent implementation here,
 * through eval and through programs run with 1 and 2 threads (which must
 * agree bit for bit). The error messages are tests/errors/ops_*. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "testutil.h"

/* The circuit resolved with the given --ops files (tests/data/ops/NAME). */
static void resolve_ops(Comp *c, const char *text, const char *const *ops, int nops, Compilation *cm) {
  const char **paths = calloc((size_t)nops, sizeof *paths);
  for (int i = 0; i < nops; i++) paths[i] = tu_data(ops[i]);
  DriverOptions o = {.text = text, .text_len = strlen(text), .text_name = "test.circ", .last = STAGE_RESOLVE,
                     .verify_each = true, .ops_files = paths, .nops_files = nops};
  cr_assert(driver_run(c, &o, cm), "%s", tu_diags(c));
  free(paths);
}

static const Node *output_named(const Compilation *cm, const char *name) {
  for (int i = 0; i < cm->program.outputs.n; i++)
    if (cm->program.outputs.node[i]->name && !strcmp(cm->program.outputs.node[i]->name, name))
      return cm->program.outputs.node[i];
  cr_assert_fail("no output '%s'", name);
  return NULL;
}

/* Every output of the circuit as circc eval computes it (doubles), in file order. */
typedef struct Values {
  int n;
  const char *name[8];
  Tensor *t[8];
} Values;

static Values eval_all(Comp *c, const char *text, const char *const *ops, int nops) {
  Compilation cm = {0};
  resolve_ops(c, text, ops, nops, &cm);
  Values v = {0};
  Eval *e = eval_new(c);
  for (int i = 0; i < cm.program.outputs.n && i < 8; i++) {
    v.name[v.n] = cm.program.outputs.node[i]->name;
    v.t[v.n] = eval_node(e, cm.program.outputs.node[i]);
    cr_assert(v.t[v.n], "%s", tu_diags(c));
    v.n++;
  }
  eval_free(e);
  return v;
}

static const Tensor *value(const Values *v, const char *name) {
  for (int i = 0; i < v->n; i++)
    if (!strcmp(v->name[i], name)) return v->t[i];
  cr_assert_fail("no value '%s'", name);
  return NULL;
}

static void assert_close(const char *what, const Tensor *got, const Tensor *want, double tol) {
  cr_assert(shape_eq(&got->shape, &want->shape), "%s: shapes differ", what);
  for (int64_t i = 0; i < shape_numel(&got->shape); i++) {
    double g = tensor_get_f64(got, i), w = tensor_get_f64(want, i);
    cr_assert(fabs(g - w) <= tol * (1 + fabs(w)), "%s[%lld]: %.9g, want %.9g", what, (long long)i, g, w);
  }
}

/* The circuit compiled with the --ops files (-o DIR/prog) and run with 1 and
 * 2 threads; the outputs must be the same bits. Returns the 1-thread outputs
 * named in `outs` (loaded into c). */
static void compile_and_run(Comp *c, const char *text, const char *const *ops, int nops, const char *const *outs,
                            int nouts, Tensor **got) {
  char *dir = tu_temp_dir("ops");
  char circ[512], args[1024] = "";
  snprintf(circ, sizeof circ, "%s/t.circ", dir);
  FILE *f = fopen(circ, "w");
  cr_assert(f);
  fputs(text, f);
  fclose(f);
  for (int i = 0; i < nops; i++) {
    size_t len = strlen(args);
    snprintf(args + len, sizeof args - len, " --ops %s", tu_data(ops[i]));
  }
  cr_assert_eq(tu_sh("cd %s && %s%s t.circ -o prog 2>cc.err", dir, CIRCC_BIN, args), 0, "circc failed: %s",
               tu_read_file(arena_printf(&c->arena, "%s/cc.err", dir), NULL));
  for (int threads = 1; threads <= 2; threads++) {
    char outargs[1024] = "";
    for (int j = 0; j < nouts; j++) {
      size_t len = strlen(outargs);
      snprintf(outargs + len, sizeof outargs - len, " --output %s=@%s_%d.npy", outs[j], outs[j], threads);
    }
    cr_assert_eq(tu_sh("cd %s && ./prog --threads %d%s", dir, threads, outargs), 0);
  }
  for (int j = 0; j < nouts; j++) {
    size_t n1, n2;
    char *one = tu_read_file(arena_printf(&c->arena, "%s/%s_1.npy", dir, outs[j]), &n1);
    char *two = tu_read_file(arena_printf(&c->arena, "%s/%s_2.npy", dir, outs[j]), &n2);
    cr_assert(n1 == n2 && !memcmp(one, two, n1), "%s: 1 and 2 threads differ", outs[j]);
    free(one), free(two);
    got[j] = npy_load(c, arena_printf(&c->arena, "%s/%s_1.npy", dir, outs[j]), NO_LOC);
    cr_assert(got[j], "%s", tu_diags(c));
  }
  tu_sh("rm -rf %s", dir);
  free(dir);
}

/* ---- elementwise: a user gelu equals the built-in one */

static const char GELU_CIRCUIT[] =
    "'x' Einsum abc,->abc\n"
    "  'r' [3,7,5] Array rand\n"
    "  'spread' [] Scalar 2.5\n"
    "'user' Add\n"                       /* the call fuses into the Add's loop */
    "  'ug' GeneralFunction my_gelu\n"
    "    'x'\n"
    "  'one' [] Scalar 1\n"
    "'builtin' Add\n"
    "  'bg' GeneralFunction gelu\n"
    "    'x'\n"
    "  'one'\n"
    "'diff' GeneralFunction scaled_diff\n" /* 2x - y, y broadcast along the last axis */
    "  'x'\n"
    "  'y' [5] Array rand\n";

Test(ops, user_gelu_equals_builtin_gelu_in_eval) {
  Comp *c = tu_comp();
  const char *ops[] = {"ops/gelu.c"};
  Compilation cm = {0};
  resolve_ops(c, GELU_CIRCUIT, ops, 1, &cm);
  Eval *e = eval_new(c);
  const Tensor *user = eval_node(e, output_named(&cm, "user")), *builtin = eval_node(e, output_named(&cm, "builtin"));
  cr_assert(user && builtin, "%s", tu_diags(c));
  assert_close("user", user, builtin, 1e-6);
  /* scaled_diff against 2x - y computed here from the evaluated x and y (as floats) */
  const Node *diff = output_named(&cm, "diff");
  const Tensor *x = eval_node(e, diff->child[0]), *y = eval_node(e, diff->child[1]), *got = eval_node(e, diff);
  Tensor *want = tensor_new(c, DT_F64, &x->shape);
  for (int64_t i = 0; i < shape_numel(&x->shape); i++)
    ((double *)want->data)[i] = 2.0f * (float)tensor_get_f64(x, i) - (float)tensor_get_f64(y, i % 5);
  assert_close("diff", got, want, 1e-6);
  eval_free(e);
  tu_free(c);
}

Test(ops, user_gelu_equals_builtin_gelu_in_programs) {
  Comp *c = tu_comp();
  const char *ops[] = {"ops/gelu.c"}, *outs[] = {"user", "builtin", "diff"};
  Tensor *got[3];
  compile_and_run(c, GELU_CIRCUIT, ops, 1, outs, 3, got);
  assert_close("user", got[0], got[1], 1e-6);
  Values v = eval_all(c, GELU_CIRCUIT, ops, 1);
  assert_close("user vs eval", got[0], value(&v, "user"), 1e-6);
  assert_close("diff vs eval", got[2], value(&v, "diff"), 1e-6);
  tu_free(c);
}

/* --emit c: the file is copied next to model.c, included into it (so the call
 * is inlined into the fused loop), and the directory's Makefile builds it. */
Test(ops, emit_c_includes_the_files_and_builds) {
  Comp *c = tu_comp();
  char *dir = tu_temp_dir("ops_emit");
  FILE *f = fopen(arena_printf(&c->arena, "%s/t.circ", dir), "w");
  cr_assert(f);
  fputs(GELU_CIRCUIT, f);
  fclose(f);
  cr_assert_eq(tu_sh("cd %s && %s --ops %s t.circ --emit c -o out.d", dir, CIRCC_BIN, tu_data("ops/gelu.c")), 0);
  char *model = tu_read_file(arena_printf(&c->arena, "%s/out.d/model.c", dir), NULL);
  cr_assert(strstr(model, "#include \"ops0_gelu.c\""), "%s", model);
  bool fused = false; /* one loop line computes my_gelu(x) + 1 */
  char *save = NULL;
  for (char *line = strtok_r(model, "\n", &save); line; line = strtok_r(NULL, "\n", &save))
    fused |= strstr(line, " = ") && strstr(line, "my_gelu(") && strstr(line, " + ");
  cr_assert(fused, "my_gelu is not called inside the Add's loop");
  free(model);
  cr_assert_eq(tu_sh("cmp %s %s/out.d/ops0_gelu.c", tu_data("ops/gelu.c"), dir), 0);
  cr_assert_eq(tu_sh("test -f %s/out.d/circc_op.h", dir), 0);
  /* one object per source (make -j), then nothing left to do; touching the --ops file rebuilds */
  cr_assert_eq(tu_sh("cd %s/out.d && make -j2 -s >/dev/null 2>&1 && test -f model.o && make -q && ./out.d --info >/dev/null",
                     dir), 0);
  cr_assert_eq(tu_sh("cd %s/out.d && touch -d '+1 minute' ops0_gelu.c && ! make -q", dir), 0);
  tu_sh("rm -rf %s", dir);
  free(dir);
  tu_free(c);
}

/* ---- row: a user softmax equals the built-in one (also over a transposed view, which the step copies) */

static const char SOFTMAX_CIRCUIT[] =
    "'x' [4,6,9] Array rand\n"
    "'user' GeneralFunction my_softmax\n"
    "  'x'\n"
    "'builtin' GeneralFunction softmax\n"
    "  'x'\n"
    "'user_t' GeneralFunction my_softmax\n"
    "  'xt' Rearrange a b c -> a c b\n"
    "    'x'\n"
    "'builtin_t' GeneralFunction softmax\n"
    "  'xt'\n";

Test(ops, user_row_softmax_equals_builtin_softmax) {
  Comp *c = tu_comp();
  const char *ops[] = {"ops/softmax_row.c"}, *outs[] = {"user", "builtin", "user_t", "builtin_t"};
  Values v = eval_all(c, SOFTMAX_CIRCUIT, ops, 1);
  assert_close("eval user", value(&v, "user"), value(&v, "builtin"), 1e-6);
  assert_close("eval user_t", value(&v, "user_t"), value(&v, "builtin_t"), 1e-6);
  Tensor *got[4];
  compile_and_run(c, SOFTMAX_CIRCUIT, ops, 1, outs, 4, got);
  assert_close("program user", got[0], got[1], 1e-6);
  assert_close("program user_t", got[2], got[3], 1e-6);
  assert_close("program vs eval", got[0], value(&v, "user"), 1e-6);
  tu_free(c);
}

/* ---- general: rotary position embedding (rust_circuit's ApplyRotaryPosEmb) */

/* Independent of tests/data/ops/rotary.c: the (2, half) axes of each position
 * are d = 2*half values read as half complex numbers z_k = v[2k] + i v[2k+1],
 * each turned by the angle s * 10000^(-2k/d), in double. */
static void rotary_reference(const Tensor *x, double *y) {
  const Shape *s = &x->shape;
  int64_t seq = s->dim[s->rank - 3], d = 2 * s->dim[s->rank - 1], n = shape_numel(s);
  for (int64_t base = 0; base < n; base += d) {
    int64_t pos = base / d % seq;
    for (int64_t k = 0; k < d / 2; k++) {
      double a = tensor_get_f64(x, base + 2 * k), b = tensor_get_f64(x, base + 2 * k + 1);
      double angle = (double)pos * pow(10000.0, -2.0 * (double)k / (double)d);
      y[base + 2 * k] = a * cos(angle) - b * sin(angle);
      y[base + 2 * k + 1] = a * sin(angle) + b * cos(angle);
    }
  }
}

#define ROPE_SPEC "apply_rotary_pos_emb at rust_circuit.generalfuncs.rotary_pos_emb:ApplyRotaryPosEmb"
static const char ROPE_CIRCUIT[] =
    "'ones' GeneralFunction " ROPE_SPEC "\n"
    "  'one' [2,2,1] Scalar 1\n"
    "'q' GeneralFunction " ROPE_SPEC "\n"
    "  'qx' [3,5,2,4] Array rand\n";

Test(ops, rotary_embedding_by_hand) {
  /* seq 2, half 1 (d = 2), all ones: position 0 keeps (1, 1); position 1 turns
   * it by 1 radian: (cos 1 - sin 1, sin 1 + cos 1) */
  Comp *c = tu_comp();
  const char *ops[] = {"ops/rotary.c"};
  Values v = eval_all(c, ROPE_CIRCUIT, ops, 1);
  const Tensor *t = value(&v, "ones");
  const double want[4] = {1, 1, 0.5403023058681398 - 0.8414709848078965, 0.8414709848078965 + 0.5403023058681398};
  for (int i = 0; i < 4; i++)
    cr_assert(fabs(tensor_get_f64(t, i) - want[i]) < 1e-6, "[%d]: %.9g, want %.9g", i, tensor_get_f64(t, i), want[i]);
  tu_free(c);
}

Test(ops, rotary_embedding_matches_an_independent_implementation) {
  Comp *c = tu_comp();
  const char *ops[] = {"ops/rotary.c", "ops/gelu.c"}, *outs[] = {"q"};
  Compilation cm = {0};
  resolve_ops(c, ROPE_CIRCUIT, ops, 2, &cm);
  Eval *e = eval_new(c);
  const Node *q = output_named(&cm, "q");
  const Tensor *x = eval_node(e, q->child[0]), *got = eval_node(e, q);
  cr_assert(x && got, "%s", tu_diags(c));
  Tensor *want = tensor_new(c, DT_F64, &x->shape);
  rotary_reference(x, want->data);
  assert_close("eval", got, want, 1e-5);
  eval_free(e);
  Tensor *prog[1];
  compile_and_run(c, ROPE_CIRCUIT, ops, 2, outs, 1, prog);
  assert_close("program", prog[0], want, 1e-5);
  tu_free(c);
}

/* ---- a general function of two children with a list shape rule */

Test(ops, general_function_with_a_list_shape_rule) {
  Comp *c = tu_comp();
  const char *ops[] = {"ops/matmul.c"};
  const char *text = "'p' GeneralFunction matmul\n"
                     "  'a' [2,3] Scalar 2\n"
                     "  'b' [3,4] Scalar 0.5\n";
  Values v = eval_all(c, text, ops, 1);
  const Tensor *p = value(&v, "p");
  cr_assert(p->shape.rank == 2 && p->shape.dim[0] == 2 && p->shape.dim[1] == 4);
  for (int i = 0; i < 8; i++) cr_assert_eq(tensor_get_f64(p, i), 3.0); /* 3 * (2 * 0.5) */
  const char *outs[] = {"p"};
  Tensor *got[1];
  compile_and_run(c, text, ops, 1, outs, 1, got);
  assert_close("program", got[0], p, 0);
  tu_free(c);
  /* the rule's axis must exist */
  c = tu_comp();
  Compilation cm = {0};
  const char *path = tu_data("ops/matmul.c");
  const char *bad = "'p' GeneralFunction matmul\n  'a' [2,3] Scalar 2\n  'b' [] Scalar 1\n";
  DriverOptions o = {.text = bad, .text_len = strlen(bad), .text_name = "test.circ", .last = STAGE_RESOLVE,
                     .ops_files = &path, .nops_files = 1};
  cr_assert_not(driver_run(c, &o, &cm));
  cr_assert(strstr(tu_diags(c), "test.circ:1:1: error: GeneralFunction 'p': the shape rule '[in0[0], in1[-1]]' of "
                                "matmul reads axis -1 of child 1, which has shape []"), "%s", tu_diags(c));
  tu_free(c);
}

/* A module batching user ops (rust_circuit's library batches the rotary
 * embedding over heads): the same values as the op applied to the batch. */
Test(ops, modules_batch_user_ops) {
  Comp *c = tu_comp();
  const char *ops[] = {"ops/gelu.c", "ops/rotary.c", "ops/softmax_row.c"};
  const char *text = "'x' [3,4] Array rand\n"
                     "'g_batched' Module\n"
                     "  'g' GeneralFunction my_gelu\n"
                     "    'in' [4] Symbol\n"
                     "  'x' ! 'in'\n"
                     "'g_direct' GeneralFunction gelu\n"
                     "  'x'\n"
                     "'d_batched' Module\n"
                     "  'd' GeneralFunction scaled_diff\n"
                     "    'in'\n"
                     "    'half' [] Scalar 0.5\n"
                     "  'x' ! 'in'\n"
                     "'s_batched' Module\n"
                     "  's' GeneralFunction my_softmax\n"
                     "    'in'\n"
                     "  'x' ! 'in'\n"
                     "'s_direct' GeneralFunction softmax\n"
                     "  'x'\n"
                     "'qb' [3,5,2,4] Array rand\n"
                     "'r_batched' Module\n"
                     "  'r' GeneralFunction " ROPE_SPEC "\n"
                     "    'q.in' [5,2,4] Symbol\n"
                     "  'qb' ! 'q.in'\n"
                     "'r_direct' GeneralFunction " ROPE_SPEC "\n"
                     "  'qb'\n";
  Compilation cm = {0};
  resolve_ops(c, text, ops, 3, &cm);
  Eval *e = eval_new(c);
  const Tensor *x = eval_node(e, output_named(&cm, "x")), *d = eval_node(e, output_named(&cm, "d_batched"));
  assert_close("gelu", eval_node(e, output_named(&cm, "g_batched")), eval_node(e, output_named(&cm, "g_direct")), 1e-6);
  assert_close("softmax", eval_node(e, output_named(&cm, "s_batched")), eval_node(e, output_named(&cm, "s_direct")), 1e-6);
  assert_close("rotary", eval_node(e, output_named(&cm, "r_batched")), eval_node(e, output_named(&cm, "r_direct")), 0);
  for (int64_t i = 0; i < 12; i++)
    cr_assert_eq(tensor_get_f64(d, i), 2.0f * (float)tensor_get_f64(x, i) - 0.5f);
  eval_free(e);
  tu_free(c);
}

/* ops_load records each function's form and location */
Test(ops, forms_and_locations) {
  Comp *c = tu_comp();
  const char *files[] = {tu_data("ops/gelu.c"), tu_data("ops/softmax_row.c"), tu_data("ops/rotary.c")};
  UserOps ops;
  cr_assert(ops_load(c, files, 3, &ops), "%s", tu_diags(c));
  cr_assert_eq(ops.nops, 4);
  const UserOp *g = user_op_find(&ops, "my_gelu", 7), *d = user_op_find(&ops, "scaled_diff", 11),
               *s = user_op_find(&ops, "my_softmax", 10), *r = user_op_find(&ops, "apply_rotary_pos_emb", 20);
  cr_assert(g && d && s && r);
  cr_assert_eq(g->form, OP_UNARY);
  cr_assert_eq(d->form, OP_BINARY);
  cr_assert_eq(s->form, OP_ROW);
  cr_assert_eq(r->form, OP_GENERAL);
  cr_assert_eq(r->shape.rank, -1);
  cr_assert_eq(g->loc.line, 6);
  cr_assert_eq(g->loc.col, 27);
  cr_assert_eq(s->file, 1);
  cr_assert_eq(c->ops, &ops);
  cr_assert_null(user_op_find(&ops, "gelu", 4));
  tu_free(c);
}

/* circc eval builds the files with $CC: a compiler that fails is a DIAG_CC error (exit 4), reported once */
Test(ops, eval_reports_a_failing_compiler) {
  setenv("CC", "false", 1);
  Comp *c = tu_comp();
  const char *ops[] = {"ops/gelu.c"};
  Compilation cm = {0};
  resolve_ops(c, "'g' GeneralFunction my_gelu\n  'x' [2] Scalar 1\n'h' GeneralFunction my_gelu\n  'y' [3] Scalar 1\n",
              ops, 1, &cm);
  Eval *e = eval_new(c);
  cr_assert_null(eval_node(e, output_named(&cm, "g")));
  cr_assert_null(eval_node(e, output_named(&cm, "h")));
  const char *d = tu_diags(c), *msg = "circc: error: circc eval: the C compiler failed on the --ops files (exit status 1)";
  cr_assert(strstr(d, msg) && !strstr(strstr(d, msg) + 1, msg), "%s", d);
  cr_assert_eq(diag_exit_code(c), DIAG_CC);
  eval_free(e);
  tu_free(c);
}

/* --dump lower names the steps: a row step for a row function, a general step for a general one */
Test(ops, dump_names_the_steps) {
  Comp *c = tu_comp();
  const char *paths[] = {tu_data("ops/softmax_row.c"), tu_data("ops/rotary.c")};
  const char *text = "'s' GeneralFunction my_softmax\n  'x' [2,5] Symbol\n"
                     "'r' GeneralFunction " ROPE_SPEC "\n  'q' [3,2,2] Symbol\n";
  char *buf = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&buf, &len);
  DriverOptions o = {.text = text, .text_len = strlen(text), .text_name = "test.circ", .last = STAGE_LOWER,
                     .verify_each = true, .ops_files = paths, .nops_files = 2, .dump = 1u << STAGE_LOWER, .dump_to = f};
  Compilation cm = {0};
  cr_assert(driver_run(c, &o, &cm), "%s", tu_diags(c));
  fclose(f);
  cr_assert(strstr(buf, "row         's' [2,5] reads"), "%s", buf);
  cr_assert(strstr(buf, "general     'r' [3,2,2] reads"), "%s", buf);
  free(buf);
  tu_free(c);
}
