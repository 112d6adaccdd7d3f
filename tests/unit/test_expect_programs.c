/* test_expect_programs.c — expectation programs compiled from the example
 * circuits of tests/data/rv (random_variables.md §5): `./prog --all` against
 * the exact values of expected.json (computed by its generator, independently
 * of circc) and against `circc eval --all`; `./prog --samples` within 5
 * standard deviations of the mean (K1) or equal to the plug-in cumulant of
 * the rows --dump-indices names (cumulant2's K2, recomputed here); the same
 * bits for 1 and 2 threads and for --sample-batch 3 and the default; and
 * --stream/--data: the same bits as the dataset linked in, a wrong file
 * refused with nothing written. */
#define _GNU_SOURCE /* asprintf */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "json.h"
#include "testutil.h"

/* Compiles text to dir/name with --sample-batch batch (0: default) and the streamed names. */
static void compile(const char *text, const char *dir, const char *name, int batch, const char *const *streams,
                    int nstreams, const char *store) {
  Comp *c = tu_comp();
  c->streamed = streams, c->nstreamed = nstreams;
  if (store) c->tensor_dir = store;
  char *prog;
  cr_assert(asprintf(&prog, "%s/%s", dir, name) > 0);
  DriverOptions o = {.text = text, .text_len = strlen(text), .text_name = "case.circ", .last = STAGE_EMIT,
                     .verify_each = true, .sample_batch = batch, .emit = {.name = name, .command_line = "test"},
                     .build = {.output = prog, .opt = "-O1"}};
  Compilation cm = {0};
  cr_assert(driver_run(c, &o, &cm), "%s", tu_diags(c));
  free(prog);
  tu_free(c);
}

static double *load_values(const char *dir, const char *file, int64_t *n) {
  Comp *c = tu_comp();
  char *path;
  cr_assert(asprintf(&path, "%s/%s", dir, file) > 0);
  Tensor *t = npy_load(c, path, NO_LOC);
  cr_assert(t, "%s", tu_diags(c));
  *n = shape_numel(&t->shape);
  double *v = malloc(sizeof(double) * (size_t)(*n + 1));
  for (int64_t i = 0; i < *n; i++) v[i] = tensor_get_f64(t, i);
  free(path);
  tu_free(c);
  return v;
}

/* `circc eval --all`'s values of every output of text, flattened, in output order. */
static double *eval_all(const char *text, int *nout, int64_t **sizes) {
  Comp *c = tu_comp();
  DriverOptions o = {.text = text, .text_len = strlen(text), .text_name = "case.circ", .last = STAGE_RESOLVE,
                     .verify_each = true};
  Compilation cm = {0};
  cr_assert(driver_run(c, &o, &cm), "%s", tu_diags(c));
  RvGroups g;
  cr_assert(rv_groups(c, cm.program.outputs.node, cm.program.outputs.n, &g), "%s", tu_diags(c));
  Eval *e = eval_new(c);
  eval_expectations(e, &g, 1000000);
  *nout = cm.program.outputs.n;
  *sizes = calloc((size_t)*nout, sizeof(int64_t));
  double *all = malloc(sizeof(double) * 4096);
  int64_t at = 0;
  for (int i = 0; i < *nout; i++) {
    Tensor *t = eval_node(e, cm.program.outputs.node[i]);
    cr_assert(t, "%s", tu_diags(c));
    (*sizes)[i] = shape_numel(&t->shape);
    for (int64_t k = 0; k < (*sizes)[i]; k++) all[at++] = tensor_get_f64(t, k);
  }
  eval_free(e);
  tu_free(c);
  return all;
}

/* The expected.json entry of a case's output: its values (flattened) and per-sample sd (NULL if none). */
static int json_values(const Json *v, double *out) {
  if (json_num(v, out)) return 1;
  int n = 0;
  for (size_t i = 0; i < json_len(v); i++) n += json_values(json_at(v, i), out + n);
  return n;
}

typedef struct Case {
  const char *name;
  const char *outputs[4];
} Case;

static const Case CASES[] = {
    {"dice_shared", {"E[d1*d2]"}},
    {"dice_independent", {"E[d1*d3]"}},
    {"dataset_loss", {"expected_loss", "expected_loss_by_seq"}},
    {"cumulant2", {"K2(x,y)", "K2(y,e)", "K2(y,y+e)"}},
    {"scrub_pattern", {"E[f(x_ref,x_scrub)]", "K2(x_ref,x_scrub)", "K3(u,u,u)", "K4(u,u,u,u)"}},
};

static const Json *member(const Json *o, const char *key) {
  const Json *v = json_get(o, key);
  cr_assert(v, "expected.json has no '%s'", key);
  return v;
}

/* The shell arguments writing every output of cs to PREFIX<i>.npy. */
static char *output_args(const Case *cs, const char *prefix) {
  char *s = strdup("");
  for (int i = 0; i < 4 && cs->outputs[i]; i++) {
    char *t;
    cr_assert(asprintf(&t, "%s --output '%s=@%s%d.npy'", s, cs->outputs[i], prefix, i) > 0);
    free(s);
    s = t;
  }
  return s;
}

Test(expect_programs, examples_all_and_samples) {
  Comp *jc = tu_comp();
  char *json_text = tu_read_file(tu_data("rv/expected.json"), NULL);
  JsonError err;
  const Json *root = json_parse(&jc->arena, json_text, strlen(json_text), &err);
  cr_assert(root, "expected.json: %s", err.msg);
  const Json *cases = member(root, "cases");
  for (size_t k = 0; k < sizeof CASES / sizeof *CASES; k++) {
    const Case *cs = &CASES[k];
    char *rel, *dir = tu_temp_dir("expect");
    cr_assert(asprintf(&rel, "rv/%s.circ", cs->name) > 0);
    char *text = tu_read_file(tu_data(rel), NULL);
    compile(text, dir, "prog", 0, NULL, 0, NULL);
    compile(text, dir, "prog3", 3, NULL, 0, NULL);
    int nout;
    int64_t *sizes;
    double *oracle = eval_all(text, &nout, &sizes);
    char *all_args = output_args(cs, "all"), *t1 = output_args(cs, "r1_"), *t2 = output_args(cs, "r2_"),
         *t3 = output_args(cs, "r3_");
    cr_assert_eq(tu_sh("cd '%s' && ./prog --all %s > all.txt", dir, all_args), 0, "%s", cs->name);
    enum { N = 4096 };
    cr_assert_eq(tu_sh("cd '%s' && ./prog --samples %d --seed 7 --threads 1 --dump-indices idx.npy %s > r1.txt", dir, N, t1), 0);
    cr_assert_eq(tu_sh("cd '%s' && ./prog --samples %d --seed 7 --threads 2 %s > r2.txt", dir, N, t2), 0);
    cr_assert_eq(tu_sh("cd '%s' && ./prog3 --samples %d --seed 7 %s > r3.txt", dir, N, t3), 0);
    const Json *outs = member(member(cases, cs->name), "outputs");
    int64_t at = 0;
    for (int i = 0; i < nout; i++) {
      const Json *o = member(outs, cs->outputs[i]);
      double exact[64], sd[64];
      int n = json_values(member(o, "value"), exact);
      cr_assert_eq(n, sizes[i], "%s %s", cs->name, cs->outputs[i]);
      const Json *sdv = json_get(o, "per_sample_sd");
      if (sdv) json_values(sdv, sd);
      char file[64];
      int64_t m;
      snprintf(file, sizeof file, "all%d.npy", i);
      double *all = load_values(dir, file, &m);
      snprintf(file, sizeof file, "r1_%d.npy", i);
      double *r1 = load_values(dir, file, &m);
      for (int e = 0; e < n; e++) {
        double tol = 2e-6 * (1 + fabs(exact[e]));
        cr_expect(fabs(all[e] - exact[e]) < tol, "%s %s[%d] --all: %.9g, expected.json %.9g", cs->name,
                  cs->outputs[i], e, all[e], exact[e]);
        cr_expect(fabs(oracle[at + e] - exact[e]) < 1e-12 * (1 + fabs(exact[e])), "%s: eval --all %.17g vs %.17g",
                  cs->name, oracle[at + e], exact[e]);
        if (sdv)
          cr_expect(fabs(r1[e] - exact[e]) < 5 * sd[e] / sqrt(N), "%s %s[%d]: estimate %g, exact %g, sd %g", cs->name,
                    cs->outputs[i], e, r1[e], exact[e], sd[e]);
      }
      snprintf(file, sizeof file, "r1_%d.npy", i);
      char other[64];
      snprintf(other, sizeof other, "r2_%d.npy", i);
      cr_expect_eq(tu_sh("cmp -s '%s/%s' '%s/%s'", dir, file, dir, other), 0, "%s: 1 and 2 threads differ", cs->name);
      snprintf(other, sizeof other, "r3_%d.npy", i);
      cr_expect_eq(tu_sh("cmp -s '%s/%s' '%s/%s'", dir, file, dir, other), 0, "%s: --sample-batch 3 differs", cs->name);
      at += n;
      free(all), free(r1);
    }
    if (!strncmp(cs->name, "dice_", 5)) {
      /* the mean of d1*d2 (one group: the same row twice) or d1*d3 (two groups) over the drawn rows */
      int64_t m;
      double *idx = load_values(dir, "idx.npy", &m), *r1 = load_values(dir, "r1_0.npy", &m);
      bool shared = !strcmp(cs->name, "dice_shared");
      cr_assert_eq(m, 1);
      long double sum = 0;
      for (int s = 0; s < N; s++) sum += (idx[shared ? s : 2 * s] + 1) * (idx[shared ? s : 2 * s + 1] + 1);
      cr_expect(fabs(r1[0] - (double)(sum / N)) < 1e-5 * (double)(sum / N), "%s: %.9g, the drawn rows give %.9Lg",
                cs->name, r1[0], sum / N);
      free(idx), free(r1);
    }
    if (!strcmp(cs->name, "cumulant2")) {
      /* the plug-in K2(x,y) = [Cov(v, v), Cov(v^2, v)] of the drawn rows of L (column 0) */
      int64_t m;
      double *idx = load_values(dir, "idx.npy", &m), *r1 = load_values(dir, "r1_0.npy", &m);
      long double s1 = 0, s2 = 0, s11 = 0, s21 = 0;
      for (int s = 0; s < N; s++) {
        long double v = idx[2 * s] + 1;
        s1 += v, s2 += v * v, s11 += v * v, s21 += v * v * v;
      }
      double cov_vv = (double)(s11 / N - (s1 / N) * (s1 / N)), cov_v2v = (double)(s21 / N - (s2 / N) * (s1 / N));
      cr_expect(fabs(r1[0] - cov_vv) < 1e-5 * (1 + fabs(cov_vv)), "K2(x,y)[0] %.9g, drawn rows give %.9g", r1[0], cov_vv);
      cr_expect(fabs(r1[1] - cov_v2v) < 1e-5 * (1 + fabs(cov_v2v)), "K2(x,y)[1] %.9g, drawn rows give %.9g", r1[1],
                cov_v2v);
      free(idx), free(r1);
    }
    cr_assert_eq(tu_sh("rm -rf '%s'", dir), 0);
    free(dir), free(rel), free(text), free(oracle), free(sizes), free(all_args), free(t1), free(t2), free(t3);
  }
  free(json_text);
  tu_free(jc);
}

/* Nested Cumulants compile into two passes: Cumulant((x - Cumulant(x))^2)
 * is the variance (the mean of pass 0 is an input of pass 1), over a
 * non-uniform group; --all gives the exact value, --samples the plug-in
 * variance of the drawn rows (the same samples in both passes). */
Test(expect_programs, nested_cumulants) {
  char *dir = tu_temp_dir("expect");
  const char *text = "'var' Cumulant\n"
                     "  'sq' Einsum ,->\n"
                     "    'centred' Add\n"
                     "      'x' DiscreteVar\n"
                     "        'v' Concat 0\n"
                     "          'v0' [1] Scalar 1\n"
                     "          'v1' [1] Scalar 4\n"
                     "          'v2' [1] Scalar 10\n"
                     "        'p' Concat 0\n"
                     "          'p0' [1] Scalar 0.5\n"
                     "          'p1' [1] Scalar 0.3\n"
                     "          'p2' [1] Scalar 0.2\n"
                     "      'neg' Einsum ,->\n"
                     "        'mean' Cumulant\n"
                     "          'x'\n"
                     "        'm1' [] Scalar -1\n"
                     "    'centred'\n";
  compile(text, dir, "prog", 0, NULL, 0, NULL);
  cr_assert_eq(tu_sh("cd '%s' && ./prog --all --output var=@all.npy > all.txt", dir), 0);
  cr_assert_eq(tu_sh("cd '%s' && ./prog --samples 1000 --seed 2 --dump-indices idx.npy --output var=@est.npy > est.txt", dir), 0);
  int64_t n;
  double *all = load_values(dir, "all.npy", &n), *est = load_values(dir, "est.npy", &n),
         *idx = load_values(dir, "idx.npy", &n);
  /* E x = 0.5 + 1.2 + 2 = 3.7; E x^2 = 0.5 + 4.8 + 20 = 25.3; Var = 25.3 - 13.69 = 11.61 */
  cr_expect(fabs(all[0] - 11.61) < 1e-5, "--all %.9g, want 11.61", all[0]);
  static const double V[3] = {1, 4, 10};
  long double s1 = 0, s2 = 0;
  for (int s = 0; s < 1000; s++) s1 += V[(int)idx[s]], s2 += V[(int)idx[s]] * V[(int)idx[s]];
  double var = (double)(s2 / 1000 - (s1 / 1000) * (s1 / 1000));
  cr_expect(fabs(est[0] - var) < 1e-4 * var, "--samples %.9g, the drawn rows' plug-in variance %.9g", est[0], var);
  int nout;
  int64_t *sizes;
  double *oracle = eval_all(text, &nout, &sizes);
  cr_expect(fabs(oracle[0] - 11.61) < 1e-12, "eval --all %.17g", oracle[0]);
  free(all), free(est), free(idx), free(oracle), free(sizes);
  cr_assert_eq(tu_sh("rm -rf '%s'", dir), 0);
  free(dir);
}

/* Outputs never replace what they should write through: a symlink keeps
 * pointing at its file (which gets the result), a FIFO stays a FIFO (a
 * reader gets the bytes) — for expectation programs and ordinary ones alike
 * (both write through runtime/rt_core.c's rt_write_files). */
Test(expect_programs, outputs_keep_links_and_fifos) {
  char *dir = tu_temp_dir("expect"), *text = tu_read_file(tu_data("rv/dice_shared.circ"), NULL);
  compile(text, dir, "prog", 0, NULL, 0, NULL);
  compile("'y' [2] Scalar 3\n", dir, "det", 0, NULL, 0, NULL);
  for (int k = 0; k < 2; k++) {
    const char *run = k ? "./det --output y=@link.npy" : "./prog --all --output 'E[d1*d2]=@link.npy'";
    cr_assert_eq(tu_sh("cd '%s' && rm -f real.npy link.npy && echo junk > real.npy && ln -s real.npy link.npy && %s > /dev/null",
                    dir, run), 0, "%s", run);
    cr_expect_eq(tu_sh("test -L '%s/link.npy'", dir), 0, "%s replaced the symlink", run);
    int64_t n;
    double *v = load_values(dir, "real.npy", &n);
    cr_expect(k ? n == 2 && v[0] == 3 : fabs(v[0] - 91.0 / 6) < 1e-5, "%s: the linked file holds %g", run, v[0]);
    free(v);
    /* the reader is waited for (got.npy is complete), and gives up if the FIFO was replaced */
    cr_assert_eq(tu_sh("cd '%s' && rm -f fifo && mkfifo fifo && { timeout 20 cat fifo > got.npy & %s > /dev/null; s=$?; wait; exit $s; }",
                       dir, k ? "./det --output y=@fifo" : "./prog --all --output 'E[d1*d2]=@fifo'"), 0);
    cr_expect_eq(tu_sh("test -p '%s/fifo'", dir), 0, "the FIFO was replaced");
    cr_expect_eq(tu_sh("cd '%s' && head -c 6 got.npy | tail -c 5 | grep -q NUMPY", dir), 0, "the reader got no .npy");
  }
  free(text);
  cr_assert_eq(tu_sh("rm -rf '%s'", dir), 0);
  free(dir);
}

/* --all skips combinations of probability 0, as circc eval --all does: an
 * infinite value there does not make the expectation NaN. */
Test(expect_programs, all_skips_impossible_rows) {
  char *dir = tu_temp_dir("expect");
  const char *text = "'E' Cumulant\n"
                     "  'x' DiscreteVar\n"
                     "    'v' Concat 0\n"
                     "      'v0' [1] Scalar 1\n"
                     "      'v1' [1] Scalar 2\n"
                     "      'v2' [1] Scalar inf\n"
                     "    'p' Concat 0\n"
                     "      'p01' [2] Scalar 0.5\n"
                     "      'p2' [1] Scalar 0\n";
  compile(text, dir, "prog", 0, NULL, 0, NULL);
  cr_assert_eq(tu_sh("cd '%s' && ./prog --all --output E=@e.npy > out.txt", dir), 0);
  int64_t n;
  double *v = load_values(dir, "e.npy", &n);
  int nout;
  int64_t *sizes;
  double *oracle = eval_all(text, &nout, &sizes);
  cr_expect(v[0] == 1.5 && oracle[0] == 1.5, "--all %g, eval --all %g, want 1.5", v[0], oracle[0]);
  free(v), free(oracle), free(sizes);
  cr_assert_eq(tu_sh("rm -rf '%s'", dir), 0);
  free(dir);
}

/* --stream: a dataset read at run time gives the bits of the one linked in;
 * a file of the wrong shape or a missing --data is refused, nothing written. */
Test(expect_programs, streamed_dataset) {
  char *dir = tu_temp_dir("expect"), *store = tu_temp_dir("expect");
  Comp *c = tu_comp();
  c->tensor_dir = store;
  Shape s = {2, {5, 3}};
  Tensor *rows = tensor_new(c, DT_F32, &s);
  for (int i = 0; i < 15; i++) tensor_set_f64(rows, i, (i * 7 % 11) - 3.5);
  const char *hash = store_write(c, rows);
  char *path;
  cr_assert(asprintf(&path, "%s/rows.npy", dir) > 0);
  cr_assert(npy_save(c, rows, path));
  free(path);
  Shape s2 = {2, {4, 3}};
  cr_assert(asprintf(&path, "%s/short.npy", dir) > 0);
  cr_assert(npy_save(c, tensor_new(c, DT_F32, &s2), path));
  free(path);
  char *text;
  cr_assert(asprintf(&text,
                     "'E' Cumulant\n"
                     "  'sq' Einsum a,a->\n"
                     "    'x' DiscreteVar\n"
                     "      'rows' [5,3] Array %.24s\n"
                     "      'p' Concat 0\n"
                     "        'p0' [2] Scalar 0.1\n"
                     "        'p1' [3] Scalar 0.8\n"
                     "    'x'\n",
                     hash) > 0);
  const char *streams[] = {"rows"};
  compile(text, dir, "linked", 0, NULL, 0, store);
  compile(text, dir, "streamed", 0, streams, 1, "/nonexistent-store");
  cr_assert_eq(tu_sh("cd '%s' && ./linked --samples 500 --seed 3 --output E=@a.npy > a.txt", dir), 0);
  cr_assert_eq(tu_sh("cd '%s' && ./streamed --samples 500 --seed 3 --data rows=@rows.npy --output E=@b.npy > b.txt", dir), 0);
  cr_expect_eq(tu_sh("cmp -s '%s/a.npy' '%s/b.npy'", dir, dir), 0, "streamed and linked-in rows differ");
  cr_expect_eq(tu_sh("cd '%s' && ./streamed --all --data rows=@rows.npy --output E=@c.npy > c.txt", dir), 0);
  cr_expect_eq(tu_sh("cd '%s' && ./streamed --all --data rows=@short.npy --output E=@d.npy 2> err.txt", dir), 3);
  cr_expect_eq(tu_sh("grep -q 'wrong shape: expected \\[5,3\\], found \\[4,3\\]' '%s/err.txt'", dir), 0);
  cr_expect_eq(tu_sh("cd '%s' && ./streamed --all --output E=@d.npy 2> err2.txt", dir), 2);
  cr_expect_eq(tu_sh("grep -q \"give --data rows=@FILE.npy\" '%s/err2.txt'", dir), 0);
  cr_expect_eq(tu_sh("test -e '%s/d.npy'", dir), 1, "a failed run left an output file");
  /* a name the program does not stream, or no file, is a usage error that lists the datasets */
  cr_expect_eq(tu_sh("cd '%s' && ./streamed --all --data nope=@rows.npy --output E=@d.npy 2> err3.txt", dir), 2);
  cr_expect_eq(tu_sh("grep -q \"no streamed dataset named 'nope'\" '%s/err3.txt' && grep -q 'rows \\[5,3\\] float32' '%s/err3.txt'",
                     dir, dir), 0);
  cr_expect_eq(tu_sh("cd '%s' && ./streamed --all --data rows=@ --output E=@d.npy 2> err4.txt", dir), 2);
  cr_expect_eq(tu_sh("grep -q 'expects NAME=@FILE.npy' '%s/err4.txt'", dir), 0);
  cr_expect_eq(tu_sh("cd '%s' && ./linked --all --data rows=@rows.npy 2> err5.txt", dir), 2);
  cr_expect_eq(tu_sh("grep -q 'streams no dataset' '%s/err5.txt'", dir), 0);
  /* the exact value: Σ_i p_i |rows_i|² / Σ p */
  int64_t n;
  double *v = load_values(dir, "c.npy", &n), num = 0, den = 0;
  for (int i = 0; i < 5; i++) {
    double p = i < 2 ? 0.1 : 0.8, sq = 0;
    for (int j = 0; j < 3; j++) sq += tensor_get_f64(rows, i * 3 + j) * tensor_get_f64(rows, i * 3 + j);
    num += p * sq, den += p;
  }
  cr_expect(fabs(v[0] - num / den) < 1e-5 * num / den, "--all with --data: %g, want %g", v[0], num / den);
  free(v), free(text);
  tu_free(c);
  cr_assert_eq(tu_sh("rm -rf '%s' '%s'", dir, store), 0);
  free(dir), free(store);
}
