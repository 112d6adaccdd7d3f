/* test_bind_tokens.c — --bind-tokens (front/bind_tokens.c): a model file's
 * t.bind_w bound to token ids as REMIX binds it by hand (model_files.md §5).
 * Model files are generated here in the REMIX files' format (as
 * test_model_file.c does, reduced to one block shape: ln, attention without
 * biases, a relu MLP, a final norm) for each pos_enc_type and causal_mask,
 * their weights seeded float32 tensors in a tensor store. The binding's
 * logits — evaluated, and compiled and run with 1 and 2 threads — must equal
 * an independent forward pass (§4 after §5's embeddings, positions and mask)
 * and `circc eval` of the hand-written REMIX-style binding; the forward with
 * positions ignored, a non-causal mask or shortformer positions added at the
 * input must not. Also: the generated program's language-model options on the
 * full-sequence program (runtime/rt_generate.c), and the errors. */
#define _GNU_SOURCE /* asprintf */
#include <criterion/criterion.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "testutil.h"

/* Sizes of the generated models: all different, so a swapped axis fails. */
enum { H = 8, HEADS = 2, QK = 3, VD = 4, MLP = 6, V = 7, P = 6, S = 4, LAYERS = 2 };

typedef enum { POS_GPT, POS_SHORTFORMER, POS_NONE } PosEnc;
static const char *const POS_NAME[] = {"gpt", "shortformer", "none"};

typedef struct Weight {
  char name[48];
  Tensor *t;
  char hash[65];
  bool restated;      /* a per-layer symbol: the file restates it after `!` */
} Weight;

typedef struct Model {
  PosEnc pos;
  bool causal;
  Weight w[40];
  int nw;
  uint64_t rng;
  char store[64];
} Model;

/* ------------------------------------------------------------ weights */

static const Weight *add_weight(Comp *c, Model *m, bool restated, const char *name, int rank, ...) {
  cr_assert(m->nw < 40);
  Weight *w = &m->w[m->nw++];
  snprintf(w->name, sizeof w->name, "%s", name);
  w->restated = restated;
  Shape s = {rank, {0}};
  va_list ap;
  va_start(ap, rank);
  for (int i = 0; i < rank; i++) s.dim[i] = va_arg(ap, int);
  va_end(ap);
  w->t = tensor_new(c, DT_F32, &s);
  for (int64_t i = 0; i < shape_numel(&s); i++) tensor_set_f64(w->t, i, comp_rng_normal(&m->rng));
  const char *h = store_write(c, w->t);
  cr_assert(h, "%s", tu_diags(c));
  snprintf(w->hash, sizeof w->hash, "%s", h);
  return w;
}

static const Tensor *weight(const Model *m, const char *fmt, ...) {
  char name[64];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(name, sizeof name, fmt, ap);
  va_end(ap);
  for (int i = 0; i < m->nw; i++)
    if (!strcmp(m->w[i].name, name)) return m->w[i].t;
  cr_assert_fail("no weight %s", name);
  return NULL;
}

static void make_weights(Comp *c, Model *m) {
  char n[64];
  add_weight(c, m, false, "t.w.tok_embeds", 2, V, H);
  add_weight(c, m, false, "t.w.pos_embeds", 2, P, H);
  for (int i = 0; i < LAYERS; i++) {
    snprintf(n, sizeof n, "a%d.ln.w.bias", i), add_weight(c, m, true, n, 1, H);
    snprintf(n, sizeof n, "a%d.ln.w.scale", i), add_weight(c, m, true, n, 1, H);
    snprintf(n, sizeof n, "a%d.w.q", i), add_weight(c, m, true, n, 3, HEADS, QK, H);
    snprintf(n, sizeof n, "a%d.w.k", i), add_weight(c, m, true, n, 3, HEADS, QK, H);
    snprintf(n, sizeof n, "a%d.w.v", i), add_weight(c, m, true, n, 3, HEADS, VD, H);
    snprintf(n, sizeof n, "a%d.w.o", i), add_weight(c, m, true, n, 3, HEADS, H, VD);
    snprintf(n, sizeof n, "m%d.ln.w.bias", i), add_weight(c, m, true, n, 1, H);
    snprintf(n, sizeof n, "m%d.ln.w.scale", i), add_weight(c, m, true, n, 1, H);
    snprintf(n, sizeof n, "m%d.w.proj_in", i), add_weight(c, m, true, n, 2, MLP, H);
    snprintf(n, sizeof n, "m%d.w.in_bias", i), add_weight(c, m, true, n, 1, MLP);
    snprintf(n, sizeof n, "m%d.w.proj_out", i), add_weight(c, m, true, n, 2, H, MLP);
  }
  add_weight(c, m, false, "final.ln.w.bias", 1, H);
  add_weight(c, m, false, "final.ln.w.scale", 1, H);
  add_weight(c, m, false, "t.w.unembed", 2, V, H);
}

/* ------------------------------------------------------------ the model file */

static char *info_line(const Model *m) {
  char *s;
  cr_assert(asprintf(&s,
                     "# info:{\"params\": {\"block_params\": {\"norm_type\": \"ln\", \"attn_bias\": false, "
                     "\"attn_pos\": %s, \"use_mlp\": true, \"mlp_act_type\": \"relu\", \"mlp_output_bias\": false}, "
                     "\"num_layers\": %d, \"use_norm_output\": true, \"output_bias\": false}, \"model_class\": "
                     "\"GPT\", \"pos_enc_type\": \"%s\", \"causal_mask\": %s, \"extra\": null}\n",
                     m->pos == POS_SHORTFORMER ? "true" : "false", LAYERS, POS_NAME[m->pos],
                     m->causal ? "true" : "false") > 0);
  return s;
}

/* "[shape] Symbol uuid" of the library's symbol `name` (the restated per-layer weights). */
static char *library_symbol(const char *info, const char *name) {
  Comp *c = tu_comp();
  SourceFile src = {"lib.circ", info, strlen(info)};
  ModelLibrary lib;
  cr_assert(model_library(c, &src, &lib), "%s", tu_diags(c));
  char key[80];
  snprintf(key, sizeof key, "'%s' [", name);
  const char *at = strstr(lib.text, key);
  cr_assert(at, "the library has no symbol '%s'", name);
  at += strlen(key) - 1;
  char *s = strndup(at, strcspn(at, "!\n") - 1);
  tu_free(c);
  return s;
}

/* The model file (model_files.md §1): embeddings, then t.bind_w binding every weight. */
static char *model_file(const Model *m) {
  char *text = NULL, *info = info_line(m);
  size_t len = 0;
  FILE *f = open_memstream(&text, &len);
  fputs(info, f);
  for (int i = 0; i < 2; i++) fprintf(f, "'%s' [%d,%d] Array %.24s\n", m->w[i].name, i ? P : V, H, m->w[i].hash);
  fputs("'t.bind_w' Module\n  't.logits'\n", f);
  for (int i = 2; i < m->nw; i++) {
    const Weight *w = &m->w[i];
    fprintf(f, "  '%s_arr' [", w->name);
    for (int d = 0; d < w->t->shape.rank; d++) fprintf(f, "%s%lld", d ? "," : "", (long long)w->t->shape.dim[d]);
    fprintf(f, "] Array %.24s ! '%s'", w->hash, w->name);
    if (w->restated) {
      char *s = library_symbol(info, w->name);
      fprintf(f, " %s", s);
      free(s);
    }
    fputc('\n', f);
  }
  fputs("# originally generated by test_bind_tokens\n", f);
  fclose(f);
  free(info);
  return text;
}

/* The binding as REMIX writes it by hand (§5; day 4's one-hot tokens, the
 * causal mask an Array in the store), appended to the file as 'ref'. */
static char *remix_binding(Comp *c, const Model *m, const char *file) {
  char mask[400] = "'t.a.c.full_mask' [4,4] Scalar 1 ! 'a.mask'";
  if (m->causal) {
    Shape s = {2, {S, S}};
    Tensor *t = tensor_new(c, DT_F32, &s);
    for (int q = 0; q < S; q++)
      for (int k = 0; k < S; k++) tensor_set_f64(t, q * S + k, q >= k);
    const char *h = store_write(c, t);
    cr_assert(h);
    snprintf(mask, sizeof mask, "'t.a.c.causal_mask' [4,4] Array %.24s ! 'a.mask'", h);
  }
  const char *tok = "'tok_embeds' Einsum ab,bc->ac%s\n%s  'onehot' [4,7] Symbol ce34280e-169f-40bd-b78e-8adeb4274aba\n"
                    "%s  't.w.tok_embeds'\n";
  char *text = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&text, &len);
  fprintf(f, "%s'ref' Module\n  't.bind_w'\n", file);
  if (m->pos == POS_GPT) {
    fputs("  't.inp_tok_pos' Add ! 't.input'\n    ", f);
    fprintf(f, tok, "", "    ", "    ");
    fputs("    't.w.pos_embeds_idxed' Index [0:4]\n      't.w.pos_embeds'\n", f);
  } else {
    fputs("  ", f);
    fprintf(f, tok, " ! 't.input'", "  ", "  ");
  }
  if (m->pos == POS_SHORTFORMER) fputs("  't.w.pos_embeds_idxed' Index [0:4] ! 'a.pos_input'\n    't.w.pos_embeds'\n", f);
  fprintf(f, "  %s\n", mask);
  fclose(f);
  return text;
}

/* ------------------------------------------------------------ the reference forward (§4, §5) */

static double at1(const Tensor *t, int i) { return tensor_get_f64(t, i); }
static double at2(const Tensor *t, int i, int j) { return tensor_get_f64(t, (int64_t)i * t->shape.dim[1] + j); }
static double at3(const Tensor *t, int i, int j, int k) {
  return tensor_get_f64(t, ((int64_t)i * t->shape.dim[1] + j) * t->shape.dim[2] + k);
}

static void layer_norm(const Model *m, const char *pre, double x[S][H], double y[S][H]) {
  const Tensor *bias = weight(m, "%s.ln.w.bias", pre), *scale = weight(m, "%s.ln.w.scale", pre);
  for (int s = 0; s < S; s++) {
    double mean = 0, var = 0;
    for (int h = 0; h < H; h++) mean += x[s][h] / H;
    for (int h = 0; h < H; h++) var += (x[s][h] - mean) * (x[s][h] - mean) / H;
    for (int h = 0; h < H; h++) y[s][h] = at1(bias, h) + at1(scale, h) * (x[s][h] - mean) / sqrt(var + 1e-5);
  }
}

/* How the reference binds (the right way, or one of the mistakes a test must catch). */
typedef struct RefBinding {
  bool positions_at_input, positions_at_qk, causal;
} RefBinding;

static RefBinding right_ref_binding(const Model *m) {
  return (RefBinding){m->pos == POS_GPT, m->pos == POS_SHORTFORMER, m->causal};
}

/* logits[S][V] for token ids tok[S]. */
static void forward(const Model *m, RefBinding b, const int64_t tok[S], double logits[S][V]) {
  double x[S][H], h[S][H], pos[S][H], mask[S][S];
  for (int s = 0; s < S; s++) {
    for (int d = 0; d < H; d++) {
      pos[s][d] = at2(weight(m, "t.w.pos_embeds"), s, d);
      x[s][d] = at2(weight(m, "t.w.tok_embeds"), (int)tok[s], d) + (b.positions_at_input ? pos[s][d] : 0);
    }
    for (int k = 0; k < S; k++) mask[s][k] = !b.causal || s >= k;
  }
  for (int i = 0; i < LAYERS; i++) {
    char pre[16];
    snprintf(pre, sizeof pre, "a%d", i);
    layer_norm(m, pre, x, h);
    double out[S][H] = {{0}};
    for (int hd = 0; hd < HEADS; hd++) {
      double q[S][QK], k[S][QK], v[S][VD], pr[S][S];
      for (int s = 0; s < S; s++) {
        for (int c = 0; c < QK; c++) {
          q[s][c] = k[s][c] = 0;
          for (int d = 0; d < H; d++) {
            double qk_in = h[s][d] + (b.positions_at_qk ? pos[s][d] : 0);
            q[s][c] += qk_in * at3(weight(m, "a%d.w.q", i), hd, c, d);
            k[s][c] += qk_in * at3(weight(m, "a%d.w.k", i), hd, c, d);
          }
        }
        for (int c = 0; c < VD; c++) {
          v[s][c] = 0;
          for (int d = 0; d < H; d++) v[s][c] += h[s][d] * at3(weight(m, "a%d.w.v", i), hd, c, d);
        }
      }
      for (int a = 0; a < S; a++) {
        double mx = -INFINITY, sum = 0;
        for (int c = 0; c < S; c++) {
          double dot = 0;
          for (int e = 0; e < QK; e++) dot += q[a][e] * k[c][e];
          pr[a][c] = dot / sqrt(QK) * mask[a][c] + (1 - mask[a][c]) * -10000;
          mx = fmax(mx, pr[a][c]);
        }
        for (int c = 0; c < S; c++) sum += pr[a][c] = exp(pr[a][c] - mx);
        for (int c = 0; c < S; c++) pr[a][c] /= sum;
      }
      for (int s = 0; s < S; s++)
        for (int e = 0; e < VD; e++) {
          double cv = 0;
          for (int c = 0; c < S; c++) cv += pr[s][c] * v[c][e];
          for (int d = 0; d < H; d++) out[s][d] += cv * at3(weight(m, "a%d.w.o", i), hd, d, e);
        }
    }
    for (int s = 0; s < S; s++)
      for (int d = 0; d < H; d++) x[s][d] += out[s][d];
    snprintf(pre, sizeof pre, "m%d", i);
    layer_norm(m, pre, x, h);
    for (int s = 0; s < S; s++) {
      double a[MLP];
      for (int o = 0; o < MLP; o++) {
        a[o] = at1(weight(m, "m%d.w.in_bias", i), o);
        for (int d = 0; d < H; d++) a[o] += at2(weight(m, "m%d.w.proj_in", i), o, d) * h[s][d];
        a[o] = a[o] > 0 ? a[o] : 0;
      }
      for (int d = 0; d < H; d++)
        for (int o = 0; o < MLP; o++) x[s][d] += at2(weight(m, "m%d.w.proj_out", i), d, o) * a[o];
    }
  }
  layer_norm(m, "final", x, h);
  for (int s = 0; s < S; s++)
    for (int t = 0; t < V; t++) {
      logits[s][t] = 0;
      for (int d = 0; d < H; d++) logits[s][t] += h[s][d] * at2(weight(m, "t.w.unembed"), t, d);
    }
}

/* ------------------------------------------------------------ circc */

static const int64_t TOKENS[S] = {3, 0, 6, 3};

static Tensor *ids_tensor(Comp *c, const int64_t *ids) {
  Shape s = {1, {S}};
  Tensor *t = tensor_new(c, DT_I64, &s);
  for (int i = 0; i < S; i++) tensor_set_f64(t, i, (double)ids[i]);
  return t;
}

/* Largest difference relative to the largest magnitude. */
static double max_diff(const double a[S][V], const double b[S][V]) {
  double d = 0, scale = 1;
  for (int s = 0; s < S; s++)
    for (int t = 0; t < V; t++) d = fmax(d, fabs(a[s][t] - b[s][t])), scale = fmax(scale, fabs(b[s][t]));
  return d / scale;
}

static Comp *model_comp(const Model *m) {
  Comp *c = tu_comp();
  c->tensor_dir = m->store;
  static SizeDefine seq[] = {{"SEQ", S}};
  c->defines = seq, c->ndefines = 1;
  return c;
}

/* The one output of `text` through the driver and the evaluator, with the one
 * free Symbol `input` bound to value. */
static void circc_eval(const Model *m, const char *text, bool bind, const char *output, const char *input,
                       Tensor *(*value)(Comp *), double logits[S][V]) {
  Comp *c = model_comp(m);
  DriverOptions o = {.text = text, .text_len = strlen(text), .text_name = "model.circ", .outputs = &output,
                     .noutputs = 1, .bind_tokens = bind, .last = STAGE_RESOLVE, .verify_each = true};
  Compilation cm = {0};
  cr_assert(driver_run(c, &o, &cm), "%s\n%s", tu_diags(c), text);
  cr_assert_eq(cm.program.inputs.n, 1, "one free symbol");
  cr_assert_str_eq(cm.program.inputs.node[0]->name, input);
  cr_assert_eq(cm.program.input_is_index[0], bind, "tokens are an index (int64)");
  Eval *e = eval_new(c);
  eval_bind(e, cm.program.inputs.node[0], value(c));
  Tensor *v = eval_node(e, cm.program.outputs.node[0]);
  cr_assert(v, "%s", tu_diags(c));
  cr_assert(v->shape.rank == 2 && v->shape.dim[0] == S && v->shape.dim[1] == V);
  for (int i = 0; i < S * V; i++) logits[i / V][i % V] = tensor_get_f64(v, i);
  eval_free(e);
  tu_free(c);
}

static Tensor *token_ids(Comp *c) { return ids_tensor(c, TOKENS); }

static Tensor *one_hot(Comp *c) {
  Shape s = {2, {S, V}};
  Tensor *t = tensor_new(c, DT_F32, &s);
  for (int i = 0; i < S; i++) tensor_set_f64(t, i * V + TOKENS[i], 1);
  return t;
}

/* Compiles the --bind-tokens program of `text` (with tokenizer spec lm, may be NULL) to dir/prog. */
static void compile(const Model *m, const char *text, const char *dir, const char *lm) {
  Comp *c = model_comp(m);
  char *prog;
  cr_assert(asprintf(&prog, "%s/prog", dir) > 0);
  DriverOptions o = {.text = text, .text_len = strlen(text), .text_name = "model.circ", .bind_tokens = true,
                     .last = STAGE_EMIT, .verify_each = true, .lm = lm,
                     .emit = {.name = "prog", .command_line = "test_bind_tokens"},
                     .build = {.output = prog, .opt = "-O1"}};
  Compilation cm = {0};
  cr_assert(driver_run(c, &o, &cm), "%s", tu_diags(c));
  free(prog);
  tu_free(c);
}

/* Runs a shell command; its exit status. */
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

/* The compiled program's logits for TOKENS with --threads n. */
static void run_compiled(const char *dir, int threads, double logits[S][V]) {
  Comp *c = tu_comp();
  char *path;
  cr_assert(asprintf(&path, "%s/ids.npy", dir) > 0);
  cr_assert(npy_save(c, ids_tensor(c, TOKENS), path));
  free(path);
  cr_assert_eq(sh("cd '%s' && ./prog --threads %d --input tokens=@ids.npy --output logits=@out.npy", dir, threads), 0);
  cr_assert(asprintf(&path, "%s/out.npy", dir) > 0);
  Tensor *t = npy_load(c, path, NO_LOC);
  cr_assert(t, "%s", tu_diags(c));
  cr_assert(t->dtype == DT_F32 && t->shape.rank == 2 && t->shape.dim[0] == S && t->shape.dim[1] == V);
  for (int i = 0; i < S * V; i++) logits[i / V][i % V] = tensor_get_f64(t, i);
  free(path);
  tu_free(c);
}

static char *temp_dir(void) {
  char *d = strdup("/tmp/circc_bind_XXXXXX");
  cr_assert(mkdtemp(d));
  return d;
}

static void new_model(Comp *c, Model *m, PosEnc pos, bool causal, const char *store, uint64_t seed) {
  memset(m, 0, sizeof *m);
  m->pos = pos, m->causal = causal, m->rng = seed;
  snprintf(m->store, sizeof m->store, "%s", store);
  c->tensor_dir = m->store;
  make_weights(c, m);
}

/* ------------------------------------------------------------ values */

/* Every pos_enc_type × causal_mask: evaluated and compiled (1 and 2 threads)
 * logits equal the reference forward and the hand-written REMIX binding; the
 * reference with the binding done wrong differs. */
Test(bind_tokens, every_pos_enc_type_and_mask) {
  char *store = temp_dir();
  for (int pos = 0; pos < 3; pos++)
    for (int causal = 0; causal < 2; causal++) {
      Comp *c = tu_comp();
      Model m;
      new_model(c, &m, (PosEnc)pos, causal, store, 100 + (uint64_t)(2 * pos + causal));
      char *file = model_file(&m), *remix = remix_binding(c, &m, file);
      double want[S][V], got[S][V], ref[S][V], run[S][V], wrong[S][V];
      forward(&m, right_ref_binding(&m), TOKENS, want);
      circc_eval(&m, file, true, "logits", "tokens", token_ids, got);
      cr_expect(max_diff(got, want) < 1e-9, "%s causal %d: circc eval differs from the reference by %g", POS_NAME[pos],
                causal, max_diff(got, want));
      circc_eval(&m, remix, false, "ref", "onehot", one_hot, ref);
      cr_expect(max_diff(got, ref) < 1e-12, "%s causal %d: --bind-tokens and the REMIX binding differ by %g",
                POS_NAME[pos], causal, max_diff(got, ref));

      /* the tests notice a binding done wrong */
      RefBinding b = right_ref_binding(&m);
      b.causal = !b.causal;
      forward(&m, b, TOKENS, wrong);
      cr_expect(max_diff(got, wrong) > 1e-6, "the value does not depend on the mask");
      if (pos != POS_NONE) {
        b = right_ref_binding(&m);
        b.positions_at_input = b.positions_at_qk = false;
        forward(&m, b, TOKENS, wrong);
        cr_expect(max_diff(got, wrong) > 1e-6, "%s: the value does not depend on the positions", POS_NAME[pos]);
        b = right_ref_binding(&m);
        b.positions_at_input = !b.positions_at_input, b.positions_at_qk = !b.positions_at_qk;
        forward(&m, b, TOKENS, wrong);
        cr_expect(max_diff(got, wrong) > 1e-6, "%s: positions at the input and at q/k give the same value",
                  POS_NAME[pos]);
      }

      char *dir = temp_dir();
      compile(&m, file, dir, NULL);
      for (int threads = 1; threads <= 2; threads++) {
        run_compiled(dir, threads, run);
        cr_expect(max_diff(run, want) < 1e-4, "%s causal %d, %d threads: the program differs by %g", POS_NAME[pos],
                  causal, threads, max_diff(run, want));
      }
      cr_assert_eq(sh("rm -rf '%s'", dir), 0);
      free(dir), free(file), free(remix);
      tu_free(c);
    }
  cr_assert_eq(sh("rm -rf '%s'", store), 0);
  free(store);
}

/* The full-sequence program with a tokenizer: --dump-logits gives the
 * reference's rows for the prompt (the rest of the sequence is padding, which
 * a causal model never sees), greedy generation its argmax; a model without a
 * causal mask refuses a prompt shorter than SEQ and answers one of SEQ tokens. */
Test(bind_tokens, language_model_options) {
  char *store = temp_dir(), *dir = temp_dir();
  cr_assert_eq(sh("printf '%%s' '[\"a\",\"b\",\"c\",\"d\",\"e\",\"f\",\"g\"]' > '%s/chars.json'", dir), 0);
  char *lm;
  cr_assert(asprintf(&lm, "chars:%s/chars.json", dir) > 0);
  Comp *c = tu_comp();
  Model m;
  new_model(c, &m, POS_GPT, true, store, 5);
  char *file = model_file(&m);
  compile(&m, file, dir, lm);
  double want[S][V];
  forward(&m, right_ref_binding(&m), TOKENS, want);
  cr_assert_eq(sh("cd '%s' && ./prog --tokens 3,0,6 --dump-logits d.npy --generate 1 --greedy --print-ids > out.txt",
                  dir), 0);
  char *path;
  cr_assert(asprintf(&path, "%s/d.npy", dir) > 0);
  Tensor *d = npy_load(c, path, NO_LOC);
  free(path);
  cr_assert(d && d->shape.rank == 2 && d->shape.dim[0] == 3 && d->shape.dim[1] == V, "%s", tu_diags(c));
  int best = 0;
  for (int t = 0; t < V; t++) {
    for (int s = 0; s < 3; s++)
      cr_expect(fabs(tensor_get_f64(d, s * V + t) - want[s][t]) < 1e-4 * (1 + fabs(want[s][t])), "row %d id %d", s, t);
    if (want[2][t] > want[2][best]) best = t;
  }
  char expect[64];
  snprintf(expect, sizeof expect, "dag%c\n3,0,6,%d\n", "abcdefg"[best], best);
  cr_assert(asprintf(&path, "%s/out.txt", dir) > 0);
  FILE *f = fopen(path, "r");
  char out[128] = "";
  cr_assert(f && fread(out, 1, sizeof out - 1, f) > 0);
  fclose(f), free(path);
  cr_expect_str_eq(out, expect);
  cr_expect_eq(sh("cd '%s' && ./prog --text dag --top 3 > top.txt", dir), 0);
  free(file);

  /* no causal mask: the next-token distribution needs all SEQ positions */
  new_model(c, &m, POS_GPT, false, store, 6);
  file = model_file(&m);
  compile(&m, file, dir, lm);
  cr_expect_eq(sh("cd '%s' && ./prog --tokens 3,0,6 --top 2 2> err.txt >/dev/null", dir), 3);
  cr_expect_eq(sh("grep -q 'positions see later ones' '%s/err.txt'", dir), 0);
  cr_expect_eq(sh("cd '%s' && ./prog --tokens 3,0,6,3 --top 2 >/dev/null", dir), 0);
  free(file), free(lm);
  tu_free(c);
  cr_assert_eq(sh("rm -rf '%s' '%s'", dir, store), 0);
  free(dir), free(store);
}

/* ------------------------------------------------------------ errors */

/* Runs text (named m.circ) through parse with --bind-tokens and -D SEQ=seq (0: none). */
static void expect_error(const char *text, int64_t seq, int code, const char *want) {
  Comp *c = tu_comp();
  c->tensors_as_random = true;
  SizeDefine d[] = {{"SEQ", seq}};
  c->defines = d, c->ndefines = seq > 0;
  DriverOptions o = {.text = text, .text_len = strlen(text), .text_name = "m.circ", .bind_tokens = true,
                     .last = STAGE_RESOLVE, .verify_each = true};
  Compilation cm = {0};
  cr_assert_not(driver_run(c, &o, &cm), "no error for\n%s", text);
  cr_expect(strstr(tu_diags(c), want), "expected '%s' in:\n%s", want, tu_diags(c));
  cr_expect_eq(diag_exit_code(c), code, "%s", tu_diags(c));
  tu_free(c);
}

Test(bind_tokens, errors) {
  expect_error("'t.bind_w' [2] Scalar 1\n", S, 1,
               "m.circ:1:1: error: --bind-tokens needs a rust_circuit model file: the first line is not '# info:{json}'");
  Model m = {.pos = POS_GPT, .causal = true};
  char *info = info_line(&m), *text;
  cr_assert(asprintf(&text, "%s't.w.pos_embeds' [6,8] Array rand\n't.bind_w' Module\n  't.logits'\n", info) > 0);
  expect_error(text, S, 1, "m.circ:1:1: error: --bind-tokens: the model file defines no top-level 't.w.tok_embeds'");
  free(text);
  cr_assert(asprintf(&text, "%s't.w.tok_embeds' [7,8] Array rand\n't.w.pos_embeds' [6,8] Array rand\n", info) > 0);
  expect_error(text, S, 1, "no top-level 't.bind_w'");
  free(text);
  cr_assert(asprintf(&text, "%s't.w.tok_embeds' [7,8] Array rand\n't.w.pos_embeds' [6,8] Array rand\n"
                            "'t.bind_w' Module\n  't.logits'\n", info) > 0);
  expect_error(text, 0, 2, "--bind-tokens needs the sequence length: give -D SEQ=N");
  expect_error(text, P + 1, 1, "m.circ:3:1: error: --bind-tokens -D SEQ=7: t.w.pos_embeds has shape [6,8], fewer "
                               "positions than the sequence is long");
  free(text), free(info);
  /* shortformer positions need the library's a.pos_input (attn_pos true) */
  info = strdup("# info:{\"params\": {\"block_params\": {\"attn_pos\": false}}, \"pos_enc_type\": \"shortformer\"}\n");
  cr_assert(asprintf(&text, "%s't.w.tok_embeds' [7,8] Array rand\n't.w.pos_embeds' [6,8] Array rand\n"
                            "'t.bind_w' Module\n  't.logits'\n", info) > 0);
  expect_error(text, S, 1, "m.circ:1:1: error: --bind-tokens: pos_enc_type shortformer with attn_pos false");
  free(text), free(info);
}
