/* test_taps.c — --tap and --patch (taps.c) on a module called twice, with
 * hand-computed values: top = c0 + c1, each call m(x) = relu(x) + x, with
 * in0 = [-1, 2, -3] and in1 = [4, -5, 6], so c0 = [-1, 4, -3], c1 = [8, -5, 12]
 * and top = [7, -1, 9]. Tap names, regex taps, patches through circc eval and
 * through compiled programs (1 and 2 threads) — a patch of zeros equals the
 * circuit with the node replaced by 0 — and the errors. */
#define _GNU_SOURCE /* asprintf */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>
#include "testutil.h"

static const char CIRCUIT[] = "'top' Add\n"
                              "  'c0' Module\n"
                              "    'm.out' Add\n"
                              "      'm.y' GeneralFunction relu\n"
                              "        'm.x' [3] Symbol 00000000-0000-0000-0000-0000000000a1\n"
                              "      'm.x'\n"
                              "    'in0' [3] Symbol 00000000-0000-0000-0000-0000000000b1 ! 'm.x'\n"
                              "  'c1' Module\n"
                              "    'm.out'\n"
                              "    'in1' [3] Symbol 00000000-0000-0000-0000-0000000000b2 ! 'm.x'\n";

/* CIRCUIT with c1's copy of m.y replaced by 0 (what --patch c1/m.y with zeros means) */
static const char REPLACED[] = "'top' Add\n"
                               "  'c0' Module\n"
                               "    'm.out' Add\n"
                               "      'm.y' GeneralFunction relu\n"
                               "        'm.x' [3] Symbol 00000000-0000-0000-0000-0000000000a1\n"
                               "      'm.x'\n"
                               "    'in0' [3] Symbol 00000000-0000-0000-0000-0000000000b1 ! 'm.x'\n"
                               "  'c1' Add\n"
                               "    'zero' [3] Scalar 0\n"
                               "    'in1' [3] Symbol 00000000-0000-0000-0000-0000000000b2\n";

static const double IN0[3] = {-1, 2, -3}, IN1[3] = {4, -5, 6};

static bool run_to(Comp *c, const char *text, const char *const *taps, int ntaps, const char *const *patches,
                   int npatches, Stage last, const char *output, Compilation *cm) {
  DriverOptions o = {.text = text, .text_len = strlen(text), .text_name = "taps.circ", .last = last,
                     .verify_each = true, .taps = taps, .ntaps = ntaps, .patches = patches, .npatches = npatches,
                     .emit = {.name = "taps", .command_line = "test"}, .build = {.output = output, .opt = "-O1"}};
  return driver_run(c, &o, cm);
}

static Tensor *vec3(Comp *c, const double *v) {
  Tensor *t = tensor_new(c, DT_F32, &(Shape){.rank = 1, .dim = {3}});
  for (int i = 0; i < 3; i++) tensor_set_f64(t, i, v[i]);
  return t;
}

/* Evaluates output `name` of p with in0, in1 bound and patch k (if value) set. */
static void eval_output(Comp *c, const Program *p, const char *name, const double *patch_value, double out[3]) {
  Eval *e = eval_new(c);
  for (int i = 0; i < p->inputs.n; i++)
    eval_bind(e, p->inputs.node[i], vec3(c, !strcmp(p->inputs.node[i]->name, "in0") ? IN0 : IN1));
  if (patch_value) eval_bind(e, p->patch_nodes[0], vec3(c, patch_value));
  int j = 0;
  while (j < p->outputs.n && strcmp(p->output_names[j], name)) j++;
  cr_assert(j < p->outputs.n, "no output %s", name);
  Tensor *t = eval_node(e, p->outputs.node[j]);
  cr_assert(t, "%s", tu_diags(c));
  for (int i = 0; i < 3; i++) out[i] = tensor_get_f64(t, i);
  eval_free(e);
}

static void assert_vec(const double *got, double a, double b, double x) {
  cr_assert(got[0] == a && got[1] == b && got[2] == x, "got [%g, %g, %g], want [%g, %g, %g]", got[0], got[1], got[2],
            a, b, x);
}

Test(taps, each_copy_of_a_module_node_is_tapped_under_its_call) {
  Comp *c = tu_comp();
  Compilation cm = {0};
  const char *taps[] = {"m.y"};
  cr_assert(run_to(c, CIRCUIT, taps, 1, NULL, 0, STAGE_RESOLVE, NULL, &cm), "%s", tu_diags(c));
  const Program *p = &cm.program;
  cr_assert_eq(p->outputs.n, 3);
  cr_assert_eq(p->ntaps, 2);
  cr_assert_str_eq(p->output_names[0], "top");
  cr_assert_str_eq(p->output_names[1], "c0/m.y");
  cr_assert_str_eq(p->output_names[2], "c1/m.y");
  double v[3];
  eval_output(c, p, "c0/m.y", NULL, v);
  assert_vec(v, 0, 2, 0);
  eval_output(c, p, "c1/m.y", NULL, v);
  assert_vec(v, 4, 0, 6);
  eval_output(c, p, "top", NULL, v);
  assert_vec(v, 7, -1, 9);
  tu_free(c);
}

Test(taps, unique_names_stay_plain_and_regexes_search_name_paths) {
  Comp *c = tu_comp();
  Compilation cm = {0};
  const char *taps[] = {"/^c1/", "c0"};
  cr_assert(run_to(c, CIRCUIT, taps, 2, NULL, 0, STAGE_RESOLVE, NULL, &cm), "%s", tu_diags(c));
  const Program *p = &cm.program;
  /* /^c1/ finds c1's copy of m.y (path c1/m.y) and c1 itself; c0 is its own
   * name; taps come in node order, children first */
  cr_assert_eq(p->ntaps, 3);
  cr_assert_str_eq(p->output_names[1], "c0");
  cr_assert_str_eq(p->output_names[2], "c1/m.y");
  cr_assert_str_eq(p->output_names[3], "c1");
  double v[3];
  eval_output(c, p, "c1", NULL, v);
  assert_vec(v, 8, -5, 12);
  tu_free(c);
}

Test(taps, a_patch_replaces_the_node_in_eval) {
  Comp *c = tu_comp();
  Compilation cm = {0};
  const char *patches[] = {"c1/m.y"};
  cr_assert(run_to(c, CIRCUIT, NULL, 0, patches, 1, STAGE_RESOLVE, NULL, &cm), "%s", tu_diags(c));
  const Program *p = &cm.program;
  cr_assert_eq(p->npatches, 1);
  cr_assert_str_eq(p->patch_names[0], "c1/m.y");
  double v[3];
  eval_output(c, p, "top", NULL, v); /* not given: the node's own value */
  assert_vec(v, 7, -1, 9);
  eval_output(c, p, "top", (double[]){10, 20, 30}, v); /* c1 = [14, 15, 36] */
  assert_vec(v, 13, 19, 33);
  eval_output(c, p, "top", (double[]){0, 0, 0}, v);
  assert_vec(v, 3, -1, 3);
  /* the circuit with the node replaced by 0 */
  Comp *r = tu_comp();
  Compilation rm = {0};
  cr_assert(run_to(r, REPLACED, NULL, 0, NULL, 0, STAGE_RESOLVE, NULL, &rm), "%s", tu_diags(r));
  eval_output(r, &rm.program, "top", NULL, v);
  assert_vec(v, 3, -1, 3);
  tu_free(r);
  tu_free(c);
}

/* Writes a float32 [3] .npy. */
static void write_vec(const char *dir, const char *name, const double *v) {
  Comp *c = tu_comp();
  char *path;
  cr_assert(asprintf(&path, "%s/%s", dir, name) > 0);
  cr_assert(npy_save(c, vec3(c, v), path), "%s", tu_diags(c));
  free(path);
  tu_free(c);
}

static void read_vec(const char *dir, const char *name, double out[3]) {
  Comp *c = tu_comp();
  char *path;
  cr_assert(asprintf(&path, "%s/%s", dir, name) > 0);
  Tensor *t = npy_load(c, path, NO_LOC);
  cr_assert(t && shape_numel(&t->shape) == 3, "%s", tu_diags(c));
  for (int i = 0; i < 3; i++) out[i] = tensor_get_f64(t, i);
  free(path);
  tu_free(c);
}

Test(taps, compiled_programs_tap_and_patch_like_eval) {
  char *dir = tu_temp_dir("taps");
  char *prog;
  cr_assert(asprintf(&prog, "%s/prog", dir) > 0);
  Comp *c = tu_comp();
  Compilation cm = {0};
  const char *taps[] = {"m.y"}, *patches[] = {"c1/m.y"};
  cr_assert(run_to(c, CIRCUIT, taps, 1, patches, 1, STAGE_EMIT, prog, &cm), "%s", tu_diags(c));
  tu_free(c);
  write_vec(dir, "in0.npy", IN0);
  write_vec(dir, "in1.npy", IN1);
  write_vec(dir, "zeros.npy", (double[]){0, 0, 0});
  write_vec(dir, "p.npy", (double[]){10, 20, 30});
  cr_assert_eq(tu_sh("%s --info | grep -q '^taps' && %s --info | grep -q '^  c1/m.y \\[3\\] float32'", prog, prog), 0);
  for (int t = 1; t <= 2; t++) {
    const char *in = "--input in0=@%s/in0.npy --input in1=@%s/in1.npy";
    char *args;
    cr_assert(asprintf(&args, in, dir, dir) > 0);
    cr_assert_eq(tu_sh("%s --threads %d %s --output top=@%s/top.npy --output c0/m.y=@%s/c0y.npy "
                       "--output c1/m.y=@%s/c1y.npy", prog, t, args, dir, dir, dir), 0);
    double v[3];
    read_vec(dir, "top.npy", v);
    assert_vec(v, 7, -1, 9);
    read_vec(dir, "c0y.npy", v);
    assert_vec(v, 0, 2, 0);
    read_vec(dir, "c1y.npy", v);
    assert_vec(v, 4, 0, 6);
    cr_assert_eq(tu_sh("%s --threads %d %s --patch c1/m.y=@%s/p.npy --output top=@%s/top.npy --output "
                       "c1/m.y=@%s/c1y.npy", prog, t, args, dir, dir, dir), 0);
    read_vec(dir, "top.npy", v);
    assert_vec(v, 13, 19, 33);
    read_vec(dir, "c1y.npy", v); /* a tap of a patched node is the patched value */
    assert_vec(v, 10, 20, 30);
    cr_assert_eq(tu_sh("%s --threads %d %s --patch c1/m.y=@%s/zeros.npy --output top=@%s/top.npy", prog, t, args,
                       dir, dir), 0);
    read_vec(dir, "top.npy", v);
    assert_vec(v, 3, -1, 3);
    free(args);
  }
  /* a patch that is not the program's: usage (2), listing the patches; a wrong shape: bad input (3) */
  cr_assert_eq(tu_sh("%s --input in0=@%s/in0.npy --input in1=@%s/in1.npy --patch c0/m.y=@%s/p.npy 2>%s/err", prog, dir,
                     dir, dir, dir), 2);
  cr_assert_eq(tu_sh("grep -q 'no patch named .c0/m.y.' %s/err && grep -q 'c1/m.y \\[3\\]' %s/err", dir, dir), 0);
  cr_assert_eq(tu_sh("%s --input in0=@%s/in0.npy --input in1=@%s/in1.npy --patch c1/m.y=@%s/in0.npy "
                     "--output top=@%s/ok.npy >/dev/null", prog, dir, dir, dir, dir), 0);
  cr_assert_eq(tu_sh("printf '\\223NUMPY' > %s/bad.npy; %s --input in0=@%s/in0.npy --input in1=@%s/in1.npy "
                     "--patch c1/m.y=@%s/bad.npy --output top=@%s/none.npy 2>/dev/null", dir, prog, dir, dir, dir, dir), 3);
  cr_assert_eq(tu_sh("test ! -e %s/none.npy", dir), 0);
  tu_sh("rm -rf %s", dir);
  free(prog);
  free(dir);
}

Test(taps, without_taps_or_patches_the_c_is_unchanged) {
  /* a tap of a top-level circuit adds nothing: the same C as none */
  char *dump[2];
  size_t len[2];
  for (int k = 0; k < 2; k++) {
    Comp *c = tu_comp();
    FILE *f = open_memstream(&dump[k], &len[k]);
    const char *taps[] = {"top"};
    DriverOptions o = {.text = CIRCUIT, .text_len = strlen(CIRCUIT), .text_name = "taps.circ", .last = STAGE_EMIT,
                       .dump = 1u << STAGE_EMIT, .dump_to = f, .taps = taps, .ntaps = k,
                       .emit = {.name = "taps", .command_line = "test"}};
    Compilation cm = {0};
    cr_assert(driver_run(c, &o, &cm), "%s", tu_diags(c));
    fclose(f);
    tu_free(c);
  }
  cr_assert(len[0] == len[1] && !memcmp(dump[0], dump[1], len[0]));
  free(dump[0]), free(dump[1]);
}

Test(taps, patterns_that_match_nothing_name_the_nearest_names) {
  Comp *c = tu_comp();
  Compilation cm = {0};
  const char *taps[] = {"m.yy"};
  cr_assert_not(run_to(c, CIRCUIT, taps, 1, NULL, 0, STAGE_RESOLVE, NULL, &cm));
  cr_assert(strstr(tu_diags(c), "--tap m.yy matches no node of the circuit; near names: c0/m.y, c1/m.y"), "%s",
            tu_diags(c));
  cr_assert_eq(diag_exit_code(c), 1);
  tu_free(c);
  c = tu_comp();
  Compilation cm2 = {0};
  const char *patches[] = {"/(/"};
  cr_assert_not(run_to(c, CIRCUIT, NULL, 0, patches, 1, STAGE_RESOLVE, NULL, &cm2));
  cr_assert(strstr(tu_diags(c), "--patch /(/: not a regular expression"), "%s", tu_diags(c));
  cr_assert_eq(diag_exit_code(c), 2);
  tu_free(c);
}

Test(taps, eval_patches_of_the_wrong_shape_are_refused) {
  char *dir = tu_temp_dir("taps_eval");
  write_vec(dir, "v.npy", IN0);
  char *in0, *in1, *bad, *outp;
  cr_assert(asprintf(&in0, "%s/v.npy", dir) > 0 && asprintf(&bad, "%s/bad.npy", dir) > 0 &&
            asprintf(&outp, "%s/top.npy", dir) > 0);
  in1 = in0;
  Comp *w = tu_comp();
  cr_assert(npy_save(w, tensor_new(w, DT_F32, &(Shape){.rank = 2, .dim = {1, 3}}), bad));
  tu_free(w);
  Binding inputs[] = {{"in0", in0}, {"in1", in1}}, patches[] = {{"m.y", bad}}, outputs[] = {{"top", outp}};
  Comp *c = tu_comp();
  DriverOptions o = {.text = CIRCUIT, .text_len = strlen(CIRCUIT), .text_name = "taps.circ", .last = STAGE_RESOLVE,
                     .verify_each = true, .evaluate = true, .eval_inputs = inputs, .neval_inputs = 2,
                     .eval_patches = patches, .neval_patches = 1, .eval_outputs = outputs, .neval_outputs = 1,
                     .outputs = (const char *[]){"top"}, .noutputs = 1};
  Compilation cm = {0};
  cr_assert_not(driver_run(c, &o, &cm));
  /* the pattern m.y patches both copies: each is refused */
  cr_assert(strstr(tu_diags(c), "has shape [1,3] but node c0/m.y has shape [3]"), "%s", tu_diags(c));
  cr_assert(strstr(tu_diags(c), "has shape [1,3] but node c1/m.y has shape [3]"), "%s", tu_diags(c));
  cr_assert_eq(diag_exit_code(c), 3);
  cr_assert_eq(tu_sh("test ! -e %s", outp), 0);
  tu_free(c);
  tu_sh("rm -rf %s", dir);
  free(in0), free(bad), free(outp), free(dir);
}

Test(taps, eval_keeps_only_the_top_level_circuits_its_outputs_name) {
  /* a second top-level circuit with an unbound size would fail if kept */
  char *text;
  cr_assert(asprintf(&text, "%s'spec' [0s] Symbol 00000000-0000-0000-0000-0000000000c1\n", CIRCUIT) > 0);
  char *dir = tu_temp_dir("taps_eval_tops"), *in0, *in1;
  cr_assert(asprintf(&in0, "%s/in0.npy", dir) > 0 && asprintf(&in1, "%s/in1.npy", dir) > 0);
  write_vec(dir, "in0.npy", IN0);
  write_vec(dir, "in1.npy", IN1);
  Binding inputs[] = {{"in0", in0}, {"in1", in1}};
  const char *names[] = {"top", "c1/m.y"}, *taps[] = {"m.y"};
  for (int k = 0; k < 2; k++) {
    Comp *c = tu_comp();
    DriverOptions o = {.text = text, .text_len = strlen(text), .text_name = "taps.circ", .last = STAGE_RESOLVE,
                       .evaluate = true, .eval_inputs = inputs, .neval_inputs = 2, .taps = taps, .ntaps = 1,
                       .outputs = names, .noutputs = k ? 2 : 0};
    Compilation cm = {0};
    bool ok = driver_run(c, &o, &cm);
    if (k) cr_assert(ok, "%s", tu_diags(c));
    else cr_assert(!ok && strstr(tu_diags(c), "spec"), "%s", tu_diags(c)); /* every top-level circuit */
    tu_free(c);
  }
  tu_sh("rm -rf %s", dir);
  free(in0), free(in1), free(dir), free(text);
}
