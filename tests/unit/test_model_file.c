/* test_model_file.c — the library stage (front/model_file.c): rust_circuit
 * model files (`# info:{json}` + references to module_library's circuits).
 * The files are generated (model_gen.c) in the REMIX files' format
 * (model_files.md §1) for every option combination, their weights seeded
 * random tensors in a tensor store under their hash prefixes; t.bind_w
 * evaluated through the driver must equal model_gen.c's independent forward
 * pass (§4). Also:
 * every option changes the value, the per-layer Symbol UUIDs (Python's
 * random.Random(i)), the library's names, and the located errors. */
#define _GNU_SOURCE /* asprintf */
#include <criterion/criterion.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "model_gen.h"

/* ------------------------------------------------------------ circc on the file */

static Tensor *tensor_of(Comp *c, int rows, int cols, const double *v) {
  Shape s = {2, {rows, cols}};
  Tensor *t = tensor_new(c, DT_F64, &s);
  for (int i = 0; i < rows * cols; i++) tensor_set_f64(t, i, v[i]);
  return t;
}

/* t.bind_w of the file through the driver (load … resolve) and the evaluator,
 * with t.input, a.mask [, a.pos_input] bound and -D SEQ/SEQ_Q/SEQ_K. */
static void circc_logits(const Model *m, const char *text, const double in[S][H], const double mask[S][S],
                         const double pos[S][H], double logits[S][V]) {
  Comp *c = tu_comp();
  c->tensor_dir = m->store;
  SizeDefine defs[] = {{"SEQ", S}, {"SEQ_Q", S}, {"SEQ_K", S}};
  c->defines = defs, c->ndefines = 3;
  const char *out = "t.bind_w";
  DriverOptions o = {.text = text, .text_len = strlen(text), .text_name = "model.circ", .outputs = &out,
                     .noutputs = 1, .last = STAGE_RESOLVE, .verify_each = true};
  Compilation cm = {0};
  cr_assert(driver_run(c, &o, &cm), "%s\n%s", tu_diags(c), text);
  Eval *e = eval_new(c);
  int bound = 0;
  for (int i = 0; i < cm.program.inputs.n; i++) {
    const Node *sym = cm.program.inputs.node[i];
    const char *n = sym->name;
    if (!strcmp(n, "t.input")) eval_bind(e, sym, tensor_of(c, S, H, &in[0][0])), bound++;
    else if (!strcmp(n, "a.mask")) eval_bind(e, sym, tensor_of(c, S, S, &mask[0][0])), bound++;
    else if (!strcmp(n, "a.pos_input") && m->p.attn_pos) eval_bind(e, sym, tensor_of(c, S, H, &pos[0][0])), bound++;
    else cr_assert_fail("unexpected free symbol %s", n);
  }
  cr_assert_eq(bound, 2 + m->p.attn_pos, "t.bind_w's free symbols are t.input, a.mask [, a.pos_input]");
  Tensor *v = eval_node(e, cm.program.outputs.node[0]);
  cr_assert(v, "%s", tu_diags(c));
  cr_assert(v->shape.rank == 2 && v->shape.dim[0] == S && v->shape.dim[1] == V);
  for (int i = 0; i < S * V; i++) logits[i / V][i % V] = tensor_get_f64(v, i);
  eval_free(e);
  tu_free(c);
}

/* Builds the model for p (weights seeded by seed), checks circc against the
 * reference and returns circc's logits and the inputs used. */
typedef struct Run {
  Comp *c;            /* owns the weights; run_free */
  Model m;
  double in[S][H], mask[S][S], pos[S][H], got[S][V];
} Run;

static void run_model(Run *r, const ModelParams *p, const char *store, uint64_t seed) {
  memset(r, 0, sizeof *r);
  r->m.p = *p;
  r->m.rng = seed;
  snprintf(r->m.store, sizeof r->m.store, "%s", store);
  Comp *c = r->c = tu_comp();
  c->tensor_dir = store;
  make_weights(c, &r->m);
  for (int s = 0; s < S; s++)
    for (int d = 0; d < H; d++) r->in[s][d] = comp_rng_normal(&r->m.rng), r->pos[s][d] = comp_rng_normal(&r->m.rng);
  for (int q = 0; q < S; q++)
    for (int k = 0; k < S; k++) r->mask[q][k] = q >= k;
  char *text = model_file(&r->m);
  circc_logits(&r->m, text, r->in, r->mask, r->pos, r->got);
  double want[S][V];
  forward(&r->m, p, r->in, r->mask, r->pos, want);
  cr_assert(max_diff(r->got, want) < 1e-9, "circc and the reference differ by %g (relative)\n%s", max_diff(r->got, want), text);
  free(text);
}

static void run_free(Run *r) { tu_free(r->c); }

static ModelParams params(const char *norm_type, bool attn_bias, bool attn_pos, bool use_mlp, const char *act,
                          bool mlp_output_bias, int layers, bool use_norm_output, bool output_bias) {
  return (ModelParams){.norm_type = norm_type, .attn_bias = attn_bias, .attn_pos = attn_pos, .use_mlp = use_mlp,
                       .mlp_act_type = act, .mlp_output_bias = mlp_output_bias, .num_layers = layers,
                       .use_norm_output = use_norm_output, .output_bias = output_bias, .model_class = "GPT",
                       .pos_enc_type = "gpt", .causal_mask = 1};
}

/* ------------------------------------------------------------ values */

static const char *const NORMS[] = {"ln", "bn", NULL};
static const char *const ACTS[] = {"gelu", "gelu_new", "relu", "bilinear"};

/* Every combination of the library's options (§6; the MLP ones only with an
 * MLP; the parallel residual only with an MLP and a norm, as module_library asserts). */
Test(model_file, every_option_combination_matches_the_reference) {
  char *store = store_dir();
  static Run r;
  int cases = 0;
  for (int n = 0; n < 3; n++)
    for (int bits = 0; bits < 64; bits++)
      for (int a = 0; a < 4; a++)
        for (int ob = 0; ob < 2; ob++) {
          bool mlp = bits & 4, parallel = bits & 32;
          if (!mlp && (a || ob)) continue;
          if (parallel && (!mlp || !NORMS[n])) continue;
          ModelParams p = params(NORMS[n], bits & 1, bits & 2, mlp, ACTS[a], ob, 2, bits & 8, bits & 16);
          p.use_parallel_residual = parallel;
          run_model(&r, &p, store, 1000 + (uint64_t)cases);
          run_free(&r);
          cases++;
        }
  cr_assert_eq(cases, 3 * 8 * (1 + 8) * 2 + 2 * 16 * 8);
  rm_store(store);
}

Test(model_file, layer_counts) {
  char *store = store_dir();
  static Run r;
  for (int layers = 1; layers <= 4; layers++) {
    ModelParams p = params("ln", true, false, true, "gelu", true, layers, true, false);
    run_model(&r, &p, store, 7 + (uint64_t)layers);
    run_free(&r);
  }
  rm_store(store);
}

/* Each option changes the value: circc's logits (which match the reference
 * for the option as set to 1e-9) are far from the reference with the option
 * ignored (gelu and gelu_new differ by ~1e-3 at most). */
Test(model_file, every_option_changes_the_value) {
  char *store = store_dir();
  static Run r;
  typedef struct { ModelParams set, ignored; const char *what; } Flip;
  ModelParams base = params("ln", true, true, true, "gelu", true, 2, true, true);
  Flip flips[16];
  int n = 0;
#define FLIP(field, on, off)                                             \
  flips[n] = (Flip){base, base, #field " " #on};                         \
  flips[n].set.field = on, flips[n].ignored.field = off, n++
  FLIP(norm_type, "ln", NULL);
  FLIP(norm_type, "bn", NULL);
  FLIP(attn_bias, true, false);
  FLIP(attn_pos, true, false);
  FLIP(use_mlp, true, false);
  FLIP(mlp_act_type, "gelu", "relu");
  FLIP(mlp_act_type, "gelu_new", "gelu");
  FLIP(mlp_act_type, "relu", "gelu_new");
  FLIP(mlp_output_bias, true, false);
  FLIP(use_norm_output, true, false);
  FLIP(output_bias, true, false);
  FLIP(num_layers, 2, 1);
  FLIP(use_parallel_residual, true, false);
#undef FLIP
  for (int i = 0; i < n; i++) {
    run_model(&r, &flips[i].set, store, 77);
    double ignored[S][V];
    forward(&r.m, &flips[i].ignored, r.in, r.mask, r.pos, ignored);
    cr_expect(max_diff(r.got, ignored) > 1e-6, "%s: the value does not depend on it", flips[i].what);
    run_free(&r);
  }
  rm_store(store);
}

/* ------------------------------------------------------------ the library */

/* §3.7's check values: UUID(int=random.Random(i).getrandbits(128)), one draw per weight in dict order. */
Test(model_file, per_layer_uuids_are_pythons_random) {
  ModelParams p = params("ln", true, false, true, "gelu", true, 12, true, false);
  char *lib = library_text(&p);
  const char *want[] = {
      "'m0.w.proj_in' [5s,0s] Symbol e3e70682-c209-4cac-629f-6fbed82c07cd ! 'm.w.proj_in'",
      "'m0.w.in_bias' [5s] Symbol f728b4fa-4248-5e3a-0a5d-2f346baa9455 ! 'm.w.in_bias'",
      "'m1.w.proj_in' [5s,0s] Symbol cd613e30-d8f1-6adf-91b7-584a2265b1f5 ! 'm.w.proj_in'",
      "'m11.w.proj_in' [5s,0s] Symbol db5b5fab-8f4d-3e27-dda1-494c73cf256d ! 'm.w.proj_in'",
      "'a0.ln.w.bias' [0s] Symbol 8d723104-f773-83c1-3458-a748e9bb17bc ! 'a.ln.w.bias'",
      "'a11.w.o_bias' [0s] Symbol 5387f613-76c4-68ae-c732-1cc007b37e14 ! 'a.w.o_bias'",
  };
  for (size_t i = 0; i < sizeof want / sizeof *want; i++) cr_expect(strstr(lib, want[i]), "no %s", want[i]);
  free(lib);
  /* attention only, no biases: the first draw goes to a0.w.q (the order of attention_only_2) */
  p = params("ln", false, true, false, "gelu", true, 2, true, false);
  lib = library_text(&p);
  cr_expect(strstr(lib, "'a0.w.q' [4s,7s,0s] Symbol e3e70682-c209-4cac-629f-6fbed82c07cd ! 'a.w.q'"), "%s", lib);
  cr_expect(strstr(lib, "'a1.ln.w.scale' [0s] Symbol 9b810e76-6ec9-d286-63ca-828dd5f4b3b2"), "%s", lib);
  free(lib);
}

/* The dict keys (§3.9): zeroed inputs are gone, outputs renamed; positions as shortformer writes them. */
Test(model_file, library_names) {
  ModelParams p = params("ln", false, true, false, "gelu", false, 2, true, false);
  char *lib = library_text(&p);
  cr_expect(strstr(lib, "'a.head.on_inp' Module\n  'a.head'\n  'a.qk_input' Add ! 'a.q.input'\n"
                        "    'a.input' [1s,0s] Symbol f9eabd07-e2ab-4ed4-8b4a-c9c039d61835\n"
                        "    'a.pos_input' [1s,0s] Symbol eab8313e-d910-4174-8dbe-c612954eec34\n"
                        "  'a.qk_input' ! 'a.k.input'\n  'a.input' ! 'a.v.input'\n"),
            "%s", lib);
  cr_expect(strstr(lib, "'a.norm_call' Module\n  'a'\n"), "%s", lib);
  cr_expect(strstr(lib, "'b' Add\n  'b.a'\n  'b.input'\n"), "%s", lib);
  cr_expect_null(strstr(lib, "bias_h"));
  cr_expect_null(strstr(lib, "'m."));
  cr_expect_null(strstr(lib, "t.logits_p_bias"));
  free(lib);
  p = params("bn", true, false, true, "bilinear", true, 1, true, true);
  lib = library_text(&p);
  cr_expect(strstr(lib, "'m.w.proj_in' [6s*2,0s] Symbol c171d519-8793-4a8b-ac5e-d550347f30a6"), "%s", lib);
  cr_expect(strstr(lib, "'final.bn.mean' [0s] Symbol 94e8bc7f-1689-429f-bfec-67d33965aef5 ! 'bn.mean'"), "%s", lib);
  cr_expect(strstr(lib, "'t.logits_p_bias' Add\n  't.logits'\n"), "%s", lib);
  free(lib);
  /* no norm: the block binds the attention directly, no final norm */
  p = params(NULL, true, false, true, "relu", false, 1, true, false);
  lib = library_text(&p);
  cr_expect(strstr(lib, "'b.a' Module\n    'a.p_bias'\n    'b.input' ! 'a.input'\n"), "%s", lib);
  cr_expect(strstr(lib, "'b.m' Module\n    'm'\n    'b.resid.a' ! 'm.input'\n"), "%s", lib);
  cr_expect_null(strstr(lib, "final"));
  free(lib);
  /* no layers: the final norm of t.input, no block at all */
  p = params("ln", true, false, true, "gelu", true, 0, true, false);
  lib = library_text(&p);
  cr_expect(strstr(lib, "'final.call' Module\n  'final.norm'\n  't.input' ! 'final.norm.input'\n"), "%s", lib);
  cr_expect_null(strstr(lib, "'b"));
  cr_expect_null(strstr(lib, "'a."));
  free(lib);
}

/* use_parallel_residual: the shared norm p (a's UUIDs), b.add parsed as a
 * text of its own with its own 'b.a', b{i}'s arguments in dict order: the
 * MLP's, p's, the attention's (no a.ln, m.ln: b does not use them). */
Test(model_file, parallel_residual_library) {
  ModelParams p = params("ln", true, false, true, "gelu", true, 1, true, false);
  p.use_parallel_residual = true;
  char *lib = library_text(&p);
  const char *want[] = {
      "'p.norm' Module\n  'ln'\n  'p.norm.input' [1s,0s] Symbol 6a622698-fd68-4d25-aeee-e8d38e68049e ! 'ln.input'\n"
      "  'p.ln.w.bias' [0s] Symbol 2c737289-2702-404c-a22e-ad37c2652620 ! 'ln.w.bias'\n"
      "  'p.ln.w.scale' [0s] Symbol c564149d-e226-4e3d-8e47-7d6e2ceea99e ! 'ln.w.scale'\n",
      "'b.resid.a' Add\n  'b.a' Module\n    'a.norm_call'\n    'b.input' ! 'a.norm.input'\n  'b.input'\n",
      "'b.add' Add\n  'b.a' Module\n    'a.p_bias'\n"
      "    'p.input' [1s,0s] Symbol e76c1fd7-a230-4295-9199-17dc8dad79d0 ! 'a.input'\n"
      "  'b.m' Module\n    'm.p_bias'\n    'p.input' ! 'm.input'\n'p.input'\n"
      "'p.norm_call' Module\n  'b.add'\n  'p.norm' ! 'p.input'\n"
      "'b.resid.p' Add\n  'b.p' Module\n    'p.norm_call'\n    'b.input' ! 'p.norm.input'\n  'b.input'\n"
      "'b' Add\n  'b.p'\n  'b.input'\n",
      "  'm0.w.out_bias' [0s] Symbol f7c1bd87-4da5-e709-d471-3d60c8a70639 ! 'm.w.out_bias'\n"
      "  'p0.ln.w.bias' [0s] Symbol e443df78-9558-867f-5ba9-1faf7a024204 ! 'p.ln.w.bias'\n"
      "  'p0.ln.w.scale' [0s] Symbol 23a7711a-8133-2876-37eb-dcd9e87a1613 ! 'p.ln.w.scale'\n"
      "  'a0.w.q' [4s,7s,0s] Symbol 1846d424-c17c-6279-23c6-612f48268673 ! 'a.w.q'\n",
      "  'a0.w.o_bias' [0s] Symbol a3f2c9bf-9c63-16b9-50f2-44556f25e2a2 ! 'a.w.o_bias'\n't.input'",
  };
  for (size_t i = 0; i < sizeof want / sizeof *want; i++) cr_expect(strstr(lib, want[i]), "no\n%s\nin\n%s", want[i], lib);
  cr_expect_null(strstr(lib, "'a0.ln"), "%s", lib);
  cr_expect_null(strstr(lib, "'m0.ln"), "%s", lib);
  cr_expect_null(strstr(lib, "b.resid.m"), "%s", lib);
  free(lib);
}

/* References are not outputs; the file's own top-level circuits are, and only they. */
Test(model_file, references_are_not_outputs) {
  ModelParams p = params("ln", true, false, true, "gelu", true, 1, true, false);
  char *info = info_line(&p);
  char *text;
  cr_assert(asprintf(&text, "%s'x' [2] Scalar 1\n't.w.unembed'\n", info) > 0);
  Comp *c = tu_comp();
  Compilation cm = {0};
  cr_assert(tu_run(c, text, STAGE_PARSE, &cm), "%s", tu_diags(c));
  cr_assert(cm.library.present);
  cr_assert_eq(cm.tops.n, 2);
  cr_assert_str_eq(cm.tops.node[0]->name, "x");
  cr_assert_str_eq(cm.tops.node[1]->name, "t.w.unembed");
  cr_assert_eq(cm.tops.node[1]->kind, NK_Symbol);
  tu_free(c);
  free(text), free(info);
}

/* --dump library prints the text the references come from. */
Test(model_file, dump_library) {
  ModelParams p = params("ln", true, false, true, "relu", true, 3, true, true);
  char *info = info_line(&p), *out = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&out, &len);
  Comp *c = tu_comp();
  DriverOptions o = {.text = info, .text_len = strlen(info), .text_name = "m.circ", .last = STAGE_LIBRARY,
                     .dump = 1u << STAGE_LIBRARY, .dump_to = f};
  Compilation cm = {0};
  cr_assert(driver_run(c, &o, &cm), "%s", tu_diags(c));
  fclose(f);
  char *lib = library_text(&p);
  cr_assert_str_eq(out, lib);
  cr_assert(strstr(out, "'b2.call' Module\n  'b2'\n  'b1.call' ! 'b.input'\n"), "%s", out);
  free(lib), free(out), free(info);
  tu_free(c);
}

/* ------------------------------------------------------------ errors */

/* Runs text (named m.circ) through parse; expects exit 1 and `want` in the diagnostics. */
static void expect_error(const char *text, const char *want) {
  Comp *c = tu_comp();
  Compilation cm = {0};
  cr_assert_not(tu_run_named(c, "m.circ", text, STAGE_PARSE, &cm), "no error for\n%s", text);
  cr_expect(strstr(tu_diags(c), want), "expected '%s' in:\n%s", want, tu_diags(c));
  cr_expect_eq(diag_exit_code(c), 1);
  tu_free(c);
}

Test(model_file, bad_info) {
  expect_error("# info:{\"params\": {\"num_layers\": 2,\n", "m.circ:1:36: error: # info: malformed JSON");
  expect_error("# info:\n", "m.circ:1:8: error: # info: malformed JSON");
  expect_error("# info:{\"model_class\": \"GPT\"}\n", "m.circ:1:8: error: # info: missing 'params'");
  expect_error("# info:[1]\n", "m.circ:1:8: error: # info: the info must be an object, found array");
  expect_error("# info:{\"params\": {\"block_params\": {\"norm_type\": \"rms\"}}}\n",
               "m.circ:1:50: error: # info: unknown norm_type \"rms\" (expected \"ln\", \"bn\" or null)");
  expect_error("# info:{\"params\": {\"block_params\": {\"mlp_act_type\": \"swish\"}}}\n",
               "error: # info: unknown mlp_act_type \"swish\" (expected \"gelu\", \"gelu_new\", \"relu\", \"bilinear\")");
  expect_error("# info:{\"params\": {}, \"pos_enc_type\": \"rope\"}\n", "m.circ:1:39: error: # info: unknown pos_enc_type");
  expect_error("# info:{\"params\": {\"block_params\": {\"attn_bias\": \"yes\"}}}\n",
               "m.circ:1:50: error: # info: 'attn_bias' must be true or false, found string");
  expect_error("# info:{\"params\": {\"num_layers\": 2.5}}\n", "m.circ:1:34: error: # info: 'num_layers' must be an integer");
  expect_error("# info:{\"params\": {\"block_params\": {\"use_rope\": true}}}\n",
               "m.circ:1:49: error: # info: use_rope true is not supported");
  expect_error("# info:{\"params\": {\"block_params\": {\"use_parallel_residual\": true, \"use_mlp\": false}}}\n",
               "m.circ:1:62: error: # info: use_parallel_residual true needs use_mlp true and a norm_type");
  expect_error("# info:{\"params\": {\"block_params\": {\"use_parallel_residual\": true, \"norm_type\": null}}}\n",
               "m.circ:1:62: error: # info: use_parallel_residual true needs use_mlp true and a norm_type");
  /* without layers module_library never builds the block, so never asserts */
  Comp *c = tu_comp();
  Compilation cm = {0};
  cr_expect(tu_run_named(c, "m.circ",
                         "# info:{\"params\": {\"block_params\": {\"use_parallel_residual\": true, \"use_mlp\": "
                         "false}, \"num_layers\": 0}}\n",
                         STAGE_PARSE, &cm),
            "%s", tu_diags(c));
  tu_free(c);
}

Test(model_file, unknown_member_is_a_warning) {
  Comp *c = tu_comp();
  Compilation cm = {0};
  cr_assert(tu_run_named(c, "m.circ", "# info:{\"params\": {\"block_params\": {\"attn_bais\": true}}}\n", STAGE_PARSE,
                         &cm),
            "%s", tu_diags(c));
  cr_expect(strstr(tu_diags(c), "m.circ:1:50: warning: # info: unknown member 'attn_bais' ignored"), "%s", tu_diags(c));
  tu_free(c);
}

/* A name the library does not build (a.attn_probs is inside a.head, not a dict entry). */
Test(model_file, unknown_reference) {
  ModelParams p = params("ln", true, false, true, "gelu", true, 1, true, false);
  char *info = info_line(&p), *text;
  cr_assert(asprintf(&text, "%s'x' Add\n  't.logits'\n  'a.attn_probs'\n", info) > 0);
  expect_error(text, "m.circ:4:3: error: 'a.attn_probs' is not defined");
  free(text);
  cr_assert(asprintf(&text, "%s't.bind_w' Module\n  't.logits_p_bias'\n", info) > 0);
  expect_error(text, "m.circ:3:3: error: 't.logits_p_bias' is not defined"); /* only with output_bias */
  free(text), free(info);
}

/* A restated per-layer Symbol must be the library's: same UUID and shape. */
Test(model_file, restated_symbol_must_match) {
  ModelParams p = params("ln", false, false, false, "gelu", false, 1, true, false);
  char *info = info_line(&p), *text;
  const char *line = "%s't.bind_w' Module\n  't.logits'\n  'q' [%s] Array rand ! 'a0.w.q' [%s] Symbol %s\n";
  cr_assert(asprintf(&text, line, info, "2,3,8", "4s,7s,0s", "e3e70682-c209-4cac-629f-6fbed82c07cd") > 0);
  Comp *c = tu_comp();
  Compilation cm = {0};
  cr_assert(tu_run_named(c, "m.circ", text, STAGE_PARSE, &cm), "the right one: %s", tu_diags(c));
  tu_free(c);
  free(text);
  cr_assert(asprintf(&text, line, info, "2,3,8", "4s,7s,0s", "e3e70682-c209-4cac-629f-6fbed82c07ce") > 0);
  expect_error(text, "m.circ:4:28: error: Symbol 'a0.w.q' has UUID e3e70682-c209-4cac-629f-6fbed82c07ce but the "
                     "model library's 'a0.w.q' has e3e70682-c209-4cac-629f-6fbed82c07cd");
  free(text);
  cr_assert(asprintf(&text, line, info, "2,8,3", "4s,0s,7s", "e3e70682-c209-4cac-629f-6fbed82c07cd") > 0);
  expect_error(text, "m.circ:4:28: error: Symbol 'a0.w.q' has shape [4s,0s,7s] but the model library's has "
                     "[4s,7s,0s]");
  free(text), free(info);
}

/* ------------------------------------------------------------ round trip, --info-model */

/* --dump parse of a model file is a self-contained circuit file (the library
 * inlined, no `# info`) that evaluates to the same logits. */
static void dump_parse_round_trip(const ModelParams *p) {
  char *store = store_dir();
  static Run r;
  run_model(&r, p, store, 5);
  char *text = model_file(&r.m), *dumped = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&dumped, &len);
  Comp *c = tu_comp();
  c->tensor_dir = store;
  DriverOptions o = {.text = text, .text_len = strlen(text), .text_name = "m.circ", .last = STAGE_PARSE,
                     .dump = 1u << STAGE_PARSE, .dump_to = f, .verify_each = true};
  Compilation cm = {0};
  cr_assert(driver_run(c, &o, &cm), "%s", tu_diags(c));
  fclose(f);
  cr_assert(strncmp(dumped, "# info:", 7), "the dump is no model file");
  double again[S][V];
  circc_logits(&r.m, dumped, r.in, r.mask, r.pos, again);
  cr_assert(max_diff(again, r.got) == 0, "differs by %g", max_diff(again, r.got));
  free(text), free(dumped);
  tu_free(c);
  run_free(&r);
  rm_store(store);
}

Test(model_file, dump_parse_round_trips) {
  ModelParams p = params("ln", true, true, true, "gelu_new", true, 2, true, true);
  dump_parse_round_trip(&p);
  p.use_parallel_residual = true; /* a library with two circuits named b.a */
  dump_parse_round_trip(&p);
}

Test(model_file, info_model) {
  char *store = store_dir();
  static Run r;
  ModelParams p = params("bn", true, true, true, "bilinear", false, 3, true, true);
  run_model(&r, &p, store, 9);
  char *text = model_file(&r.m), *out = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&out, &len);
  Comp *c = tu_comp();
  Compilation cm = {0};
  cr_assert(tu_run_named(c, "m.circ", text, STAGE_PARSE, &cm), "%s", tu_diags(c));
  cr_assert(model_info_print(c, cm.source, &cm.library, &cm.tops, f));
  fclose(f);
  const char *want[] = {
      "model_class:  GPT\n", "pos_enc_type: shortformer\n", "causal_mask:  true\n", "  norm_type              bn\n",
      "  attn_bias              true\n", "  attn_pos               true\n", "  mlp_act_type           bilinear\n",
      "  mlp_output_bias        false\n", "  use_rope               false\n", "  num_layers             3\n",
      "  output_bias            true\n", "layers: 3\n", "  hidden (HIDDEN)        8\n", "  heads (HEADS)          2\n",
      "  head dim (QK_DIM)      3\n", "  value dim (V_DIM)      4\n", "  MLP (BILINEAR_MLP_PROJ) 5\n",
      "  vocab (VOCAB_SIZE)     7\n", "  t.input     [SEQ, 8]", "  a.mask      [SEQ_Q, SEQ_K]", "  a.pos_input [SEQ, 8]",
  };
  for (size_t i = 0; i < sizeof want / sizeof *want; i++) cr_expect(strstr(out, want[i]), "no '%s' in\n%s", want[i], out);
  free(text), free(out);
  tu_free(c);
  /* a file without the line is no model file */
  c = tu_comp();
  cm = (Compilation){0};
  cr_assert(tu_run_named(c, "x.circ", "'x' [2] Scalar 1\n", STAGE_PARSE, &cm));
  f = fopen("/dev/null", "w");
  cr_assert_not(model_info_print(c, cm.source, &cm.library, &cm.tops, f));
  fclose(f);
  cr_expect(strstr(tu_diags(c), "x.circ:1:1: error: not a rust_circuit model file"), "%s", tu_diags(c));
  tu_free(c);
  run_free(&r);
  rm_store(store);
}

/* circc eval as a user runs it on a model file: the --input arrays' shapes
 * give SEQ, SEQ_Q and SEQ_K (no -D), and the logits are the reference's. */
Test(model_file, eval_takes_sizes_from_the_inputs) {
  char *store = store_dir();
  static Run r;
  ModelParams p = params("ln", true, true, true, "gelu", true, 2, true, true);
  run_model(&r, &p, store, 77);
  Comp *c = r.c;
  const char *names[] = {"t.input", "a.mask", "a.pos_input"};
  const double *vals[] = {&r.in[0][0], &r.mask[0][0], &r.pos[0][0]};
  const int cols[] = {H, S, H};
  Binding in[3];
  for (int i = 0; i < 3; i++) {
    in[i] = (Binding){names[i], arena_printf(&c->arena, "%s/in%d.npy", store, i)};
    cr_assert(npy_save(c, tensor_of(c, S, cols[i], vals[i]), in[i].path), "%s", tu_diags(c));
  }
  Binding out = {"t.bind_w", arena_printf(&c->arena, "%s/logits.npy", store)};
  char *text = model_file(&r.m);
  const char *chosen = "t.bind_w";
  DriverOptions o = {.text = text, .text_len = strlen(text), .text_name = "model.circ", .outputs = &chosen,
                     .noutputs = 1, .last = STAGE_RESOLVE, .verify_each = true, .evaluate = true,
                     .eval_inputs = in, .neval_inputs = 3, .eval_outputs = &out, .neval_outputs = 1};
  Compilation cm = {0};
  cr_assert(driver_run(c, &o, &cm), "%s", tu_diags(c));
  Tensor *got = npy_load(c, out.path, NO_LOC);
  cr_assert(got && got->shape.rank == 2 && got->shape.dim[0] == S && got->shape.dim[1] == V, "%s", tu_diags(c));
  double want[S][V], g[S][V];
  forward(&r.m, &p, r.in, r.mask, r.pos, want);
  for (int i = 0; i < S * V; i++) g[i / V][i % V] = tensor_get_f64(got, i);
  cr_assert(max_diff(g, want) < 1e-6, "differs by %g (relative)", max_diff(g, want));
  free(text);
  run_free(&r);
  rm_store(store);
}

/* Compiling t.bind_w needs the sizes of its free symbols: a missing one is
 * named with the -D that binds it. */
Test(model_file, unbound_size_names_its_define) {
  char *store = store_dir();
  static Run r;
  ModelParams p = params("ln", true, false, true, "gelu", true, 1, true, false);
  run_model(&r, &p, store, 78);
  char *text = model_file(&r.m);
  const char *chosen = "t.bind_w";
  Comp *c = tu_comp();
  c->tensor_dir = store;
  SizeDefine defs[] = {{"SEQ", S}};
  c->defines = defs, c->ndefines = 1;
  Compilation cm = {0};
  DriverOptions o = {.text = text, .text_len = strlen(text), .text_name = "model.circ", .outputs = &chosen,
                     .noutputs = 1, .last = STAGE_RESOLVE, .verify_each = true};
  cr_assert_not(driver_run(c, &o, &cm));
  const char *d = tu_diags(c);
  cr_assert(strstr(d, "'a.mask' has shape [2s,3s]: symbolic size 2s (SEQ_Q) is not bound by any module; bind it "
                      "with -D SEQ_Q=N"), "%s", d);
  cr_assert(strstr(d, "bind it with -D SEQ_K=N"), "%s", d);
  cr_assert_null(strstr(d, "SetSymbolicShape"), "an internal node in the message: %s", d);
  cr_assert_eq(diag_error_count(c), 2, "%s", d);
  tu_free(c);
  free(text);
  run_free(&r);
  rm_store(store);
}
