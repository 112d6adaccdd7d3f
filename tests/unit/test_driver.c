/* test_driver.c — the pipeline itself (driver.c): stage names, --dump after
 * every stage, running in pieces, stopping at a failed stage; and the
 * invariants --verify-each checks (verify.c), each broken on purpose. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "testutil.h"

/* A small circuit with a GEMM, a bias (an epilogue after fuse), a temporary
 * and a softmax, so every stage has something to show. */
static const char *const MLP =
    "'y' GeneralFunction softmax\n"
    "  'h' Add\n"
    "    'mm' Einsum ij,jk->ik\n"
    "      'x' [64,128] Symbol 11111111-1111-4111-8111-111111111111\n"
    "      'w' [128,96] Array rand\n"
    "    'b' [96] Array rand\n";

Test(driver, stage_names_round_trip) {
  for (int s = 0; s < STAGE_COUNT; s++) cr_assert_eq(stage_from_name(stage_name((Stage)s)), s, "stage %d", s);
  cr_assert_eq(stage_from_name("lowr"), -1);
  cr_assert_eq(stage_from_name(""), -1);
}

/* Runs MLP with --dump of one stage and returns what was printed. */
static char *dump_after(Stage s) {
  Comp *c = tu_comp();
  c->tensors_as_random = true;
  char *out = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&out, &len);
  DriverOptions o = {.text = MLP, .text_len = strlen(MLP), .text_name = "mlp.circ", .last = s, .dump = 1u << s,
                     .dump_to = f, .verify_each = true, .emit = {.name = "mlp", .command_line = "test"}};
  Compilation cm = {0};
  cr_assert(driver_run(c, &o, &cm), "%s: %s", stage_name(s), tu_diags(c));
  fclose(f);
  tu_free(c);
  return out;
}

Test(driver, dump_after_every_stage) {
  for (int s = 0; s < STAGE_COUNT; s++) {
    char *d = dump_after((Stage)s);
    cr_assert(d && *d, "--dump %s printed nothing", stage_name((Stage)s));
    if (s == STAGE_LOAD) {
      cr_assert_str_eq(d, MLP);
    } else if (s == STAGE_LIBRARY) { /* not a model file: a comment saying so */
      cr_assert(strstr(d, "no model library"), "%s", d);
    } else if (s <= STAGE_PLAN) { /* rust_circuit text that parses back to a circuit named y */
      Comp *c = tu_comp();
      c->tensors_as_random = true;
      Compilation cm = {0};
      cr_assert(tu_run(c, d, STAGE_RESOLVE, &cm), "--dump %s does not re-parse: %s\n%s", stage_name((Stage)s),
                tu_diags(c), d);
      cr_assert_str_eq(cm.program.output_names[0], "y");
      cr_assert_eq(cm.program.outputs.node[0]->shape.dim[1], 96);
      tu_free(c);
    } else if (s <= STAGE_MEMPLAN) { /* the kernel listing; arena offsets only once planned */
      cr_assert(strstr(d, "plan: "), "%s", d);
      cr_assert(strstr(d, " gemm "), "%s", d);
      cr_assert(strstr(d, " reads "), "the listing says what steps read: %s", d);
      cr_assert_eq(strstr(d, "@arena+") != NULL, s == STAGE_MEMPLAN, "%s", d);
      cr_assert_eq(strstr(d, "memplan: arena") != NULL, s == STAGE_MEMPLAN, "%s", d);
      cr_assert_eq(strstr(d, ", epilogue 'h'") != NULL, s >= STAGE_FUSE, "%s: %s", stage_name((Stage)s), d);
    } else {
      cr_assert(strstr(d, "rt_main("), "--dump emit is not the program: %.200s", d);
    }
    free(d);
  }
}

Test(driver, runs_in_pieces_like_in_one_go) {
  Comp *a = tu_comp(), *b = tu_comp();
  a->tensors_as_random = b->tensors_as_random = true;
  Compilation whole = {0}, pieces = {0};
  cr_assert(tu_run(a, MLP, STAGE_MEMPLAN, &whole), "%s", tu_diags(a));
  for (int s = STAGE_LOAD; s <= STAGE_MEMPLAN; s++) {
    cr_assert(tu_run(b, MLP, (Stage)s, &pieces), "%s", tu_diags(b));
    cr_assert_eq(pieces.next, s + 1);
  }
  cr_assert_eq(pieces.kernels.nstep, whole.kernels.nstep);
  cr_assert_eq(pieces.kernels.arena_bytes, whole.kernels.arena_bytes);
  tu_free(a), tu_free(b);
}

/* The circuit file must be a regular file: a device would be read until
 * memory runs out, a FIFO would block; both, and a directory, are I/O errors. */
static void load_fails(const char *path, const char *want) {
  Comp *c = tu_comp();
  DriverOptions o = {.path = path, .last = STAGE_LOAD};
  Compilation cm = {0};
  cr_assert_not(driver_run(c, &o, &cm), "%s loaded", path);
  cr_assert_eq(diag_exit_code(c), DIAG_IO, "%s", tu_diags(c));
  cr_assert(strstr(tu_diags(c), want), "%s: want '%s' in %s", path, want, tu_diags(c));
  tu_free(c);
}

Test(driver, reads_only_regular_files) {
  load_fails("/dev/zero", "/dev/zero: error: cannot read circuit file: not a regular file");
  load_fails("/tmp", "cannot read circuit file: a directory");
  char dir[] = "/tmp/circc_fifo_XXXXXX";
  cr_assert(mkdtemp(dir));
  char fifo[64];
  snprintf(fifo, sizeof fifo, "%s/c.circ", dir);
  cr_assert_eq(mkfifo(fifo, 0600), 0);
  load_fails(fifo, "cannot read circuit file: not a regular file (a device, FIFO or socket)");
  unlink(fifo);
  rmdir(dir);
}

Test(driver, stops_at_the_failing_stage) {
  Comp *c = tu_comp();
  Compilation cm = {0};
  /* parses, but the Symbol's size is never bound: resolve fails */
  cr_assert_not(tu_run(c, "'y' Einsum ab->a\n  'x' [1s,4] Symbol\n", STAGE_EMIT, &cm));
  cr_assert_eq(cm.next, STAGE_RESOLVE, "stopped before %s", stage_name(cm.next));
  cr_assert(strstr(tu_diags(c), "bind it with -D SEQ=N"), "%s", tu_diags(c));
  cr_assert_eq(diag_exit_code(c), DIAG_CIRCUIT);
  tu_free(c);
}

/* ------------------------------------------------ verify: circuits */

static Comp *resolved(Compilation *cm) {
  Comp *c = tu_comp();
  c->tensors_as_random = true;
  cr_assert(tu_run(c, MLP, STAGE_RESOLVE, cm), "%s", tu_diags(c));
  return c;
}

static void expect_broken(Comp *c, bool ok, const char *what) {
  cr_assert_not(ok, "verify accepted %s", what);
  cr_assert_eq(diag_exit_code(c), DIAG_INTERNAL, "%s: exit %d", what, diag_exit_code(c));
  cr_assert(strstr(tu_diags(c), "after stage 'test'"), "%s: %s", what, tu_diags(c));
  cr_assert(strstr(tu_diags(c), what), "want '%s' in: %s", what, tu_diags(c));
}

Test(verify, accepts_what_the_stages_make) {
  Compilation cm = {0};
  Comp *c = resolved(&cm);
  cr_assert(verify_circuits(c, cm.program.outputs.node, cm.program.outputs.n, true, "test"), "%s", tu_diags(c));
  tu_free(c);
}

Test(verify, shape_that_its_children_do_not_give) {
  Compilation cm = {0};
  Comp *c = resolved(&cm);
  Node *h = cm.program.outputs.node[0]->child[0]; /* the Add */
  h->shape.dim[1] = 97;
  expect_broken(c, verify_circuits(c, cm.program.outputs.node, 1, true, "test"), "its children give [64,96]");
  tu_free(c);
}

Test(verify, stale_hash) {
  Compilation cm = {0};
  Comp *c = resolved(&cm);
  cm.program.outputs.node[0]->child[0]->hash ^= 1;
  expect_broken(c, verify_circuits(c, cm.program.outputs.node, 1, true, "test"), "stale structural hash");
  tu_free(c);
}

/* ir_make refuses the node as its children now stand: one internal error, and
 * ir_make's own diagnostic (muted while verify re-derives) is not printed. */
Test(verify, node_that_ir_make_rejects) {
  Compilation cm = {0};
  Comp *c = resolved(&cm);
  Node *mm = cm.program.outputs.node[0]->child[0]->child[0]; /* the Einsum ij,jk->ik */
  cr_assert_eq(mm->kind, NK_Einsum);
  mm->child[0] = cm.program.outputs.node[0]->child[0]->child[1]; /* the bias [96]: rank 1 where ij needs 2 */
  bool ok = verify_circuits(c, cm.program.outputs.node, 1, true, "test");
  expect_broken(c, ok, "rejected by ir_make");
  cr_assert_eq(diag_error_count(c), 1, "%s", tu_diags(c));
  tu_free(c);
}

Test(verify, two_nodes_with_one_id) {
  Compilation cm = {0};
  Comp *c = resolved(&cm);
  Node *h = cm.program.outputs.node[0]->child[0];
  h->child[1]->id = h->child[0]->id;
  expect_broken(c, verify_circuits(c, cm.program.outputs.node, 1, true, "test"), "share id");
  tu_free(c);
}

Test(verify, cycle) {
  Compilation cm = {0};
  Comp *c = resolved(&cm);
  Node *y = cm.program.outputs.node[0];
  y->child[0]->child[0] = y;
  expect_broken(c, verify_circuits(c, cm.program.outputs.node, 1, true, "test"), "a cycle");
  tu_free(c);
}

Test(verify, null_child) {
  Compilation cm = {0};
  Comp *c = resolved(&cm);
  cm.program.outputs.node[0]->child[0]->child[1] = NULL;
  expect_broken(c, verify_circuits(c, cm.program.outputs.node, 1, true, "test"), "child 1 of 'h' is NULL");
  tu_free(c);
}

Test(verify, array_without_its_tensor) {
  Compilation cm = {0};
  Comp *c = resolved(&cm);
  Node *b = cm.program.outputs.node[0]->child[0]->child[1];
  cr_assert_eq(b->kind, NK_Array);
  b->u.array.tensor = NULL;
  expect_broken(c, verify_circuits(c, cm.program.outputs.node, 1, true, "test"), "has no tensor");
  tu_free(c);
}

/* ------------------------------------------------ verify: kernels */

static Comp *planned(Compilation *cm) {
  Comp *c = tu_comp();
  c->tensors_as_random = true;
  /* two temporaries: the GEMM's result feeds a softmax that is the output */
  cr_assert(tu_run(c,
                   "'y' GeneralFunction softmax\n"
                   "  'e' GeneralFunction exp\n"
                   "    'mm' Einsum ij,jk->ik\n"
                   "      'x' [8,16] Symbol 11111111-1111-4111-8111-111111111111\n"
                   "      'w' [16,12] Array rand\n"
                   "'z' GeneralFunction tanh\n"
                   "  'y'\n",
                   STAGE_MEMPLAN, cm),
            "%s", tu_diags(c));
  cr_assert(verify_kernels(c, &cm->kernels, true, "test"), "%s", tu_diags(c));
  return c;
}

/* The first step that writes a temporary. */
static Step *temp_writer(Kernels *k) {
  for (int i = 0; i < k->nstep; i++)
    if (k->step[i]->out.buf->kind == BUF_TEMP) return k->step[i];
  cr_assert_fail("no temporary");
  return NULL;
}

Test(verify, view_outside_its_buffer) {
  Compilation cm = {0};
  Comp *c = planned(&cm);
  temp_writer(&cm.kernels)->out.offset += 1;
  expect_broken(c, verify_kernels(c, &cm.kernels, true, "test"), "outside its");
  tu_free(c);
}

Test(verify, read_before_write) {
  Compilation cm = {0};
  Comp *c = planned(&cm);
  Buf *t = temp_writer(&cm.kernels)->out.buf;
  t->def_step = cm.kernels.nstep; /* as if written after every reader */
  expect_broken(c, verify_kernels(c, &cm.kernels, false, "test"), "before any step writes it");
  tu_free(c);
}

Test(verify, write_to_a_weight) {
  Compilation cm = {0};
  Comp *c = planned(&cm);
  Buf *t = temp_writer(&cm.kernels)->out.buf;
  t->kind = BUF_WEIGHT;
  expect_broken(c, verify_kernels(c, &cm.kernels, false, "test"), "writes read-only buffer");
  tu_free(c);
}

Test(verify, live_temporaries_that_overlap) {
  Compilation cm = {0};
  Comp *c = planned(&cm);
  Kernels *k = &cm.kernels;
  Buf *a = NULL, *b = NULL;
  for (int i = 0; i < k->nbuf; i++)
    if (k->buf[i]->kind == BUF_TEMP && k->buf[i]->def_step >= 0) {
      if (!a) a = k->buf[i];
      else if (!b && a->def_step <= k->buf[i]->last_use && k->buf[i]->def_step <= a->last_use) b = k->buf[i];
    }
  cr_assert(a && b, "no two temporaries live together");
  cr_assert(verify_kernels(c, k, true, "test"), "%s", tu_diags(c));
  b->offset = a->offset;
  expect_broken(c, verify_kernels(c, k, true, "test"), "overlap in the arena");
  tu_free(c);
}

Test(verify, output_no_step_writes) {
  Comp *c = tu_comp();
  c->tensors_as_random = true;
  Compilation cm = {0};
  cr_assert(tu_run(c, MLP, STAGE_MEMPLAN, &cm), "%s", tu_diags(c));
  cm.kernels.output[0]->def_step = -1;
  expect_broken(c, verify_kernels(c, &cm.kernels, true, "test"), "no step writes output 0");
  tu_free(c);
}

Test(verify, unplanned_temporary) {
  Compilation cm = {0};
  Comp *c = planned(&cm);
  temp_writer(&cm.kernels)->out.buf->offset = cm.kernels.arena_bytes;
  expect_broken(c, verify_kernels(c, &cm.kernels, true, "test"), "is not an aligned slot");
  tu_free(c);
}

/* ------------------------------------------------ circc eval */

/* The --input arrays' shapes bind the free Symbols' symbolic sizes: no -D. */
Test(driver, eval_takes_sizes_from_the_input_arrays) {
  Comp *c = tu_comp();
  char dir[] = "/tmp/circc-eval-XXXXXX";
  cr_assert(mkdtemp(dir));
  char *out = arena_printf(&c->arena, "%s/y.npy", dir);
  const char *text = "'y' Einsum ab->a\n  'x' [1s,4] Symbol 5e8d6a1e-0f8e-4c50-9d46-0f1f1c3e6a10\n";
  Binding in = {"x", tu_data("npy/iota_3x4.npy")}, dest = {"y", out};
  const char *outputs[] = {"y"};
  DriverOptions o = {.text = text, .text_len = strlen(text), .text_name = "sum.circ", .last = STAGE_RESOLVE,
                     .verify_each = true, .evaluate = true, .eval_inputs = &in, .neval_inputs = 1,
                     .eval_outputs = &dest, .neval_outputs = 1, .outputs = outputs, .noutputs = 1};
  Compilation cm = {0};
  cr_assert(driver_run(c, &o, &cm), "%s", tu_diags(c));
  Tensor *y = npy_load(c, out, NO_LOC);
  cr_assert(y && y->shape.rank == 1 && y->shape.dim[0] == 3, "%s", tu_diags(c));
  const double want[] = {6, 22, 38}; /* row sums of 0..11 */
  for (int i = 0; i < 3; i++) cr_assert_eq(tensor_get_f64(y, i), want[i], "y[%d] = %g", i, tensor_get_f64(y, i));
  cr_assert(system(arena_printf(&c->arena, "rm -rf %s", dir)) == 0);
  tu_free(c);
}
