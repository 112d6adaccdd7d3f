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
 * --sample-batch. */
#define _GNU_SOURCE /* asprintf */
#include <criterion/criterion.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "model_gen.h"

enum { ROWS = 5, LAYERS = 2 };

/* The dataset: ROWS sequences of S + 1 tokens (input = [0:S], labels = [1:S+1]). */
static const int64_t DATA[ROWS][S + 1] = {{3, 0, 6, 3, 1}, {1, 1, 2, 5, 4}, {6, 5, 4, 3, 2}, {0, 2, 0, 2, 0}, {4, 6, 1, 0, 5}};
/* The loss counts at positions whose input token is a candidate. */
static const int CANDIDATE[V] = {1, 0, 1, 1, 0, 1, 0};

static int sh(const char *fmt, ...) {
  char *cmd;
  va_list ap;
  va_start(ap, fmt);
  cr_assert(vasprintf(&cmd, fmt, ap) > 0);
  va_end(ap);
  int st = system(cmd);
  free(cmd);
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static char *temp_dir(void) {
  char *d = strdup("/tmp/circc_scrub_XXXXXX");
  cr_assert(mkdtemp(d));
  return d;
}

static const char *store_tensor(Comp *c, DType dt, int rank, const int64_t *dims, const double *v) {
  Shape s = {rank, {0}};
  for (int i = 0; i < rank; i++) s.dim[i] = dims[i];
  Tensor *t = tensor_new(c, dt, &s);
  for (int64_t i = 0; i < shape_numel(&s); i++) tensor_set_f64(t, i, v[i]);
  const char *h = store_write(c, t);
  cr_assert(h, "%s", tu_diags(c));
  return h;
}

/* The model file with the scrubbing circuit appended (tensors in m's store). */
static char *scrub_file(Comp *c, const Model *m) {
  double data[ROWS * (S + 1)], eye[V * V] = {0}, mask[S * S], cand[V];
  for (int i = 0; i < ROWS * (S + 1); i++) data[i] = (double)DATA[i / (S + 1)][i % (S + 1)];
  for (int i = 0; i < V; i++) eye[i * V + i] = 1, cand[i] = CANDIDATE[i];
  for (int q = 0; q < S; q++)
    for (int k = 0; k < S; k++) mask[q * S + k] = q >= k;
  const char *hd = store_tensor(c, DT_I64, 2, (int64_t[]){ROWS, S + 1}, data);
  const char *he = store_tensor(c, DT_F32, 2, (int64_t[]){V, V}, eye);
  const char *hm = store_tensor(c, DT_F32, 2, (int64_t[]){S, S}, mask);
  const char *hc = store_tensor(c, DT_F32, 1, (int64_t[]){V}, cand);
  char *file = model_file(m), *text;
  cr_assert(asprintf(&text,
                     "%s"
                     "'expected_loss_by_pos' Cumulant\n"
                     "  'loss_on_candidates' Einsum s,s->s\n"
                     "    'loss' Einsum sv,sv->s\n"
                     "      'log_probs' GeneralFunction log_softmax\n"
                     "        'logits' Module\n"
                     "          't.bind_w'\n"
                     "          't.inp_tok_pos' Add ! 't.input'\n"
                     "            'tok_embeds' GeneralFunction gen_index_at_0_c\n"
                     "              't.w.tok_embeds'\n"
                     "              'model_input' Index [0:%d]\n"
                     "                'toks_other' DiscreteVar\n"
                     "                  'dataset' [%d,%d] Array %.24s\n"
                     "                  'other.group' Tag 2b7e1f0a-9c3d-4e5f-8a6b-7c8d9e0f1a2b\n"
                     "                    'rows.probs' [%d] Scalar 0.2\n"
                     "            't.w.pos_embeds_idxed' Index [0:%d]\n"
                     "              't.w.pos_embeds'\n"
                     "          't.a.c.causal_mask' [%d,%d] Array %.24s ! 'a.mask'\n"
                     "      'neg_onehot' Einsum sv,->sv\n"
                     "        'onehot' GeneralFunction gen_index_at_0_c\n"
                     "          'eye' [%d,%d] Array %.24s\n"
                     "          'labels' Index [1:%d]\n"
                     "            'toks' DiscreteVar\n"
                     "              'dataset'\n"
                     "              'ds.group' Tag 5c4b3a29-1807-4f6e-9d5c-4b3a29180766\n"
                     "                'rows.probs'\n"
                     "        'm1' [] Scalar -1\n"
                     "    'candidate' GeneralFunction gen_index_at_0_c\n"
                     "      'is_candidate' [%d] Array %.24s\n"
                     "      'model_input'\n"
                     "'expected_loss' Einsum s,->\n"
                     "  'expected_loss_by_pos'\n"
                     "  'recip_seq' [] Scalar 0.25\n",
                     file, S, ROWS, S + 1, hd, ROWS, S, S, S, hm, V, V, he, S + 1, V, hc) > 0);
  free(file);
  return text;
}

/* loss[a][b][s]: the masked loss at position s with labels from row a and the
 * model's input from row b — model_gen.c's forward, log-softmax in double. */
static void pair_losses(const Model *m, double loss[ROWS][ROWS][S]) {
  const Tensor *te = find_weight(m, "t.w.tok_embeds"), *pe = find_weight(m, "t.w.pos_embeds");
  for (int b = 0; b < ROWS; b++) {
    double x[S][H], pos[S][H], mask[S][S], logits[S][V];
    for (int s = 0; s < S; s++) {
      for (int d = 0; d < H; d++) {
        pos[s][d] = tensor_get_f64(pe, (int64_t)s * H + d);
        x[s][d] = tensor_get_f64(te, DATA[b][s] * H + d) + pos[s][d];
      }
      for (int k = 0; k < S; k++) mask[s][k] = s >= k;
    }
    forward(m, &m->p, x, mask, pos, logits);
    for (int s = 0; s < S; s++) {
      double mx = logits[s][0], z = 0;
      for (int t = 1; t < V; t++) mx = fmax(mx, logits[s][t]);
      for (int t = 0; t < V; t++) z += exp(logits[s][t] - mx);
      for (int a = 0; a < ROWS; a++)
        loss[a][b][s] = CANDIDATE[DATA[b][s]] ? -(logits[s][DATA[a][s + 1]] - mx - log(z)) : 0;
    }
  }
}

static Comp *model_comp(Model *m, const char *store, uint64_t seed) {
  Comp *c = tu_comp();
  memset(m, 0, sizeof *m);
  m->p = (ModelParams){.norm_type = "ln", .use_mlp = true, .mlp_act_type = "relu", .num_layers = LAYERS,
                       .use_norm_output = true, .model_class = "GPT", .pos_enc_type = "gpt", .causal_mask = 1};
  m->embeddings = true, m->rng = seed;
  snprintf(m->store, sizeof m->store, "%s", store);
  c->tensor_dir = m->store;
  make_weights(c, m);
  return c;
}

static const char *const OUTPUTS[] = {"expected_loss_by_pos", "expected_loss"};

static void compile(Comp *c, const char *text, const char *prog, int batch) {
  DriverOptions o = {.text = text, .text_len = strlen(text), .text_name = "scrub.circ", .outputs = OUTPUTS,
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
  return sh("cmp -s '%s/%s' '%s/%s'", dir, a, dir, b) == 0;
}

Test(scrub, transformer_with_a_rewired_input) {
  char *store = temp_dir(), *dir = temp_dir();
  Model m;
  Comp *c = model_comp(&m, store, 77);
  char *text = scrub_file(c, &m);
  double loss[ROWS][ROWS][S], exact[S] = {0}, sq[S] = {0};
  pair_losses(&m, loss);
  for (int a = 0; a < ROWS; a++)
    for (int b = 0; b < ROWS; b++)
      for (int s = 0; s < S; s++) exact[s] += loss[a][b][s] / (ROWS * ROWS), sq[s] += loss[a][b][s] * loss[a][b][s] / (ROWS * ROWS);
  /* the rewiring matters: the unscrubbed pairs (a = b) alone give another value */
  double diag = 0, all = 0;
  for (int a = 0; a < ROWS; a++)
    for (int s = 0; s < S; s++) diag += loss[a][a][s] / ROWS;
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
    cr_assert_eq(sh("cd '%s' && ./scrub --all --threads %d --output expected_loss_by_pos=@all%d.npy "
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
    cr_assert_eq(sh("cd '%s' && ./scrub --samples %d --seed 5 --threads %d --dump-indices idx%d.npy "
                    "--output expected_loss_by_pos=@est%d.npy --output-se expected_loss_by_pos=@se%d.npy > out%d.txt",
                    dir, N, threads, threads, threads, threads, threads), 0);
  cr_assert_eq(sh("cd '%s' && ./scrub8 --samples %d --seed 5 --output expected_loss_by_pos=@est8.npy > out8.txt", dir, N), 0);
  cr_expect(same_file(dir, "est1.npy", "est2.npy") && same_file(dir, "idx1.npy", "idx2.npy"), "1 and 2 threads differ");
  cr_expect(same_file(dir, "est1.npy", "est8.npy"), "--sample-batch 8 and 32 differ");
  Tensor *idx = load(c, dir, "idx1.npy"), *est = load(c, dir, "est1.npy"), *se = load(c, dir, "se1.npy");
  cr_assert(idx->dtype == DT_I64 && idx->shape.rank == 2 && idx->shape.dim[0] == N && idx->shape.dim[1] == 2);
  double plug[S] = {0};
  for (int n = 0; n < N; n++) {
    int b = (int)tensor_get_f64(idx, 2 * n), a = (int)tensor_get_f64(idx, 2 * n + 1); /* columns: g0 other, g1 ds */
    cr_assert(a >= 0 && a < ROWS && b >= 0 && b < ROWS);
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
  if (getenv("KEEP")) fprintf(stderr, "kept %s %s\n", dir, store); else cr_assert_eq(sh("rm -rf '%s' '%s'", dir, store), 0);
  free(dir), free(store);
}
