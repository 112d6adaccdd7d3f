/* test_scrub.c — the causal-scrubbing pattern end to end (issue 13): a
 * generated rust_circuit model file (model_gen.c: ln, attention, relu MLP,
 * GPT positions, causal mask) with REMIX's day-3 circuit appended by hand: a
 * dataset variable `toks` (group ds), the model's input rewired to an
 * independent variable `toks_other` over the same rows (group other), the
 * labels from the first, the per-position loss masked to "candidate" input
 * tokens, its expectation (a Cumulant [S]) and mean. The reference is an
 * independent computation over all pairs of rows (model_gen.c's forward).
 * The compiled program's --all must give it; --samples must give the
 * plug-in mean of the pairs --dump-indices names, within 5 standard errors of
 * the exact value, the same bits for 1 and 2 threads and for every
 * --sample-batch. The model file and circuit come from scrub_gen.c. */
#define _GNU_SOURCE /* asprintf */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "scrub_gen.h"

/* loss[a][b][s]: the masked loss at position s with labels from row a and the
 * model's input from row b — model_gen.c's forward, log-softmax in double. */
static void pair_losses(const Model *m, double loss[SCRUB_ROWS][SCRUB_ROWS][S]) {
  const Tensor *te = find_weight(m, "t.w.tok_embeds"), *pe = find_weight(m, "t.w.pos_embeds");
  for (int b = 0; b < SCRUB_ROWS; b++) {
    double x[S][H], pos[S][H], mask[S][S], logits[S][V];
    for (int s = 0; s < S; s++) {
      for (int d = 0; d < H; d++) {
        pos[s][d] = tensor_get_f64(pe, (int64_t)s * H + d);
        x[s][d] = tensor_get_f64(te, SCRUB_DATA[b][s] * H + d) + pos[s][d];
      }
      for (int k = 0; k < S; k++) mask[s][k] = s >= k;
    }
    forward(m, &m->p, x, mask, pos, logits);
    for (int s = 0; s < S; s++) {
      double mx = logits[s][0], z = 0;
      for (int t = 1; t < V; t++) mx = fmax(mx, logits[s][t]);
      for (int t = 0; t < V; t++) z += exp(logits[s][t] - mx);
      for (int a = 0; a < SCRUB_ROWS; a++)
        loss[a][b][s] = SCRUB_CANDIDATE[SCRUB_DATA[b][s]] ? -(logits[s][SCRUB_DATA[a][s + 1]] - mx - log(z)) : 0;
    }
  }
}

static void compile(Comp *c, const char *text, const char *prog, int batch) {
  DriverOptions o = {.text = text, .text_len = strlen(text), .text_name = "scrub.circ", .outputs = SCRUB_OUTPUTS,
                     .noutputs = 2, .last = STAGE_EMIT, .verify_each = true, .sample_batch = batch,
                     .emit = {.name = "scrub", .command_line = "test_scrub"}, .build = {.output = prog, .opt = "-O1"}};
  Compilation cm = {0};
  cr_assert(driver_run(c, &o, &cm), "%s", tu_diags(c));
  cr_assert(cm.expect.present && cm.expect.groups.n == 2);
  cr_assert_str_eq(cm.expect.groups.g[0].name, "other.group");
  cr_assert_str_eq(cm.expect.groups.g[1].name, "ds.group");
}

static Tensor *load(Comp *c, const char *dir, const char *file) {
  char *path;
  cr_assert(asprintf(&path, "%s/%s", dir, file) > 0);
  Tensor *t = npy_load(c, path, NO_LOC);
  free(path);
  cr_assert(t, "%s", tu_diags(c));
  return t;
}

static bool same_file(const char *dir, const char *a, const char *b) {
  return tu_sh("cmp -s '%s/%s' '%s/%s'", dir, a, dir, b) == 0;
}

Test(scrub, transformer_with_a_rewired_input) {
  char *store = tu_temp_dir("scrub"), *dir = tu_temp_dir("scrub");
  Model m;
  Comp *c = scrub_comp(&m, store, 77);
  char *text = scrub_file(c, &m);
  double loss[SCRUB_ROWS][SCRUB_ROWS][S], exact[S] = {0}, sq[S] = {0};
  pair_losses(&m, loss);
  for (int a = 0; a < SCRUB_ROWS; a++)
    for (int b = 0; b < SCRUB_ROWS; b++)
      for (int s = 0; s < S; s++) exact[s] += loss[a][b][s] / (SCRUB_ROWS * SCRUB_ROWS), sq[s] += loss[a][b][s] * loss[a][b][s] / (SCRUB_ROWS * SCRUB_ROWS);
  /* the rewiring matters: the unscrubbed pairs (a = b) alone give another value */
  double diag = 0, all = 0;
  for (int a = 0; a < SCRUB_ROWS; a++)
    for (int s = 0; s < S; s++) diag += loss[a][a][s] / SCRUB_ROWS;
  for (int s = 0; s < S; s++) all += exact[s];
  cr_assert(fabs(diag - all) > 1e-3, "the test cannot tell scrubbed from unscrubbed");

  char *prog, *prog8;
  cr_assert(asprintf(&prog, "%s/scrub", dir) > 0 && asprintf(&prog8, "%s/scrub8", dir) > 0);
  compile(c, text, prog, 0);
  compile(c, text, prog8, 8);
  /* the circuit beside the programs, for circc --report when a check fails (KEEP=1 keeps the directory) */
  char *circ;
  cr_assert(asprintf(&circ, "%s/scrub.circ", dir) > 0);
  FILE *f = fopen(circ, "w");
  cr_assert(f && fputs(text, f) >= 0 && fclose(f) == 0);
  free(circ);

  /* --all: the exact expectation over the 25 pairs */
  for (int threads = 1; threads <= 2; threads++)
    cr_assert_eq(tu_sh("cd '%s' && ./scrub --all --threads %d --output expected_loss_by_pos=@all%d.npy "
                    "--output expected_loss=@mean%d.npy > all%d.txt",
                    dir, threads, threads, threads, threads), 0);
  cr_expect(same_file(dir, "all1.npy", "all2.npy"), "--all: 1 and 2 threads differ");
  Tensor *t = load(c, dir, "all1.npy"), *mean = load(c, dir, "mean1.npy");
  for (int s = 0; s < S; s++)
    cr_expect(fabs(tensor_get_f64(t, s) - exact[s]) < 1e-4 * (1 + fabs(exact[s])), "--all position %d: %g, want %g", s,
              tensor_get_f64(t, s), exact[s]);
  cr_expect(fabs(tensor_get_f64(mean, 0) - all / S) < 1e-4, "--all mean %g, want %g", tensor_get_f64(mean, 0), all / S);

  /* --samples: the plug-in mean over the drawn pairs; 1/2 threads and
   * --sample-batch 8/32 give the same bits */
  enum { N = 1000 };
  for (int threads = 1; threads <= 2; threads++)
    cr_assert_eq(tu_sh("cd '%s' && ./scrub --samples %d --seed 5 --threads %d --dump-indices idx%d.npy "
                    "--output expected_loss_by_pos=@est%d.npy --output-se expected_loss_by_pos=@se%d.npy > out%d.txt",
                    dir, N, threads, threads, threads, threads, threads), 0);
  cr_assert_eq(tu_sh("cd '%s' && ./scrub8 --samples %d --seed 5 --output expected_loss_by_pos=@est8.npy > out8.txt", dir, N), 0);
  cr_expect(same_file(dir, "est1.npy", "est2.npy") && same_file(dir, "idx1.npy", "idx2.npy"), "1 and 2 threads differ");
  cr_expect(same_file(dir, "est1.npy", "est8.npy"), "--sample-batch 8 and 32 differ");
  Tensor *idx = load(c, dir, "idx1.npy"), *est = load(c, dir, "est1.npy"), *se = load(c, dir, "se1.npy");
  cr_assert(idx->dtype == DT_I64 && idx->shape.rank == 2 && idx->shape.dim[0] == N && idx->shape.dim[1] == 2);
  double plug[S] = {0};
  for (int n = 0; n < N; n++) {
    int b = (int)tensor_get_f64(idx, 2 * n), a = (int)tensor_get_f64(idx, 2 * n + 1); /* columns: g0 other, g1 ds */
    cr_assert(a >= 0 && a < SCRUB_ROWS && b >= 0 && b < SCRUB_ROWS);
    for (int s = 0; s < S; s++) plug[s] += loss[a][b][s] / N;
  }
  for (int s = 0; s < S; s++) {
    double e = tensor_get_f64(est, s), sd = sqrt(fmax(sq[s] - exact[s] * exact[s], 0));
    cr_expect(fabs(e - plug[s]) < 1e-4 * (1 + fabs(plug[s])), "position %d: estimate %g, the drawn pairs give %g", s, e,
              plug[s]);
    cr_expect(fabs(e - exact[s]) < 5 * sd / sqrt(N) + 1e-6, "position %d: estimate %g, exact %g, sd %g", s, e, exact[s], sd);
    /* the jackknife standard error is close to the true one */
    double want_se = sd / sqrt(N), got_se = tensor_get_f64(se, s);
    cr_expect(want_se == 0 ? got_se < 1e-6 : got_se > 0.5 * want_se && got_se < 2 * want_se,
              "position %d: se %g, the per-sample sd gives %g", s, got_se, want_se);
  }
  free(prog), free(prog8), free(text);
  tu_free(c);
  if (getenv("KEEP")) fprintf(stderr, "kept %s %s\n", dir, store); else cr_assert_eq(tu_sh("rm -rf '%s' '%s'", dir, store), 0);
  free(dir), free(store);
}
