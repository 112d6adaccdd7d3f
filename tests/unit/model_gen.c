/* model_gen.c — see model_gen.h. */
#define _GNU_SOURCE /* asprintf */
#include <criterion/criterion.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "model_gen.h"

/* ------------------------------------------------------------ weights */

/* A weight of the given shape, N(0,1) (or 0.5 + |N| for a variance), written to the store. */
static void weight(Comp *c, Model *m, bool key, const char *name, int rank, ...) {
  cr_assert(m->nw < 128);
  Weight *w = &m->w[m->nw++];
  snprintf(w->name, sizeof w->name, "%s", name);
  w->library_key = key;
  Shape s = {rank, {0}};
  va_list ap;
  va_start(ap, rank);
  for (int i = 0; i < rank; i++) s.dim[i] = va_arg(ap, int);
  va_end(ap);
  w->t = tensor_new(c, DT_F64, &s);
  bool var = strstr(name, ".var") != NULL;
  for (int64_t i = 0; i < shape_numel(&s); i++) {
    double x = comp_rng_normal(&m->rng);
    tensor_set_f64(w->t, i, var ? 0.5 + fabs(x) : x);
  }
  const char *h = store_write(c, w->t);
  cr_assert(h, "%s", tu_diags(c));
  snprintf(w->hash, sizeof w->hash, "%s", h);
}

const Tensor *find_weight(const Model *m, const char *fmt, ...) {
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

static void norm_weights(Comp *c, Model *m, const char *p, bool key) {
  const char *nt = m->p.norm_type;
  if (!nt) return;
  char n[64];
  if (!strcmp(nt, "bn")) {
    snprintf(n, sizeof n, "%s.bn.mean", p), weight(c, m, key, n, 1, H);
    snprintf(n, sizeof n, "%s.bn.var", p), weight(c, m, key, n, 1, H);
  }
  snprintf(n, sizeof n, "%s.%s.w.bias", p, nt), weight(c, m, key, n, 1, H);
  snprintf(n, sizeof n, "%s.%s.w.scale", p, nt), weight(c, m, key, n, 1, H);
}

void make_weights(Comp *c, Model *m) {
  const ModelParams *p = &m->p;
  char n[64], pre[16];
  if (m->embeddings) {
    weight(c, m, true, "t.w.tok_embeds", 2, V, H), m->w[m->nw - 1].top_level = true;
    weight(c, m, true, "t.w.pos_embeds", 2, P, H), m->w[m->nw - 1].top_level = true;
  }
  for (int i = 0; i < p->num_layers; i++) {
    snprintf(pre, sizeof pre, "%s%d", p->use_parallel_residual ? "p" : "a", i); /* p: the shared norm */
    norm_weights(c, m, pre, false);
    const char *aw[][2] = {{"q", "3"}, {"k", "3"}, {"v", "4"}};
    for (int k = 0; k < 3; k++) snprintf(n, sizeof n, "a%d.w.%s", i, aw[k][0]), weight(c, m, false, n, 3, HEADS, k < 2 ? QK : VD, H);
    snprintf(n, sizeof n, "a%d.w.o", i), weight(c, m, false, n, 3, HEADS, H, VD);
    if (p->attn_bias) {
      for (int k = 0; k < 3; k++) snprintf(n, sizeof n, "a%d.w.%s_bias", i, aw[k][0]), weight(c, m, false, n, 2, HEADS, k < 2 ? QK : VD);
      snprintf(n, sizeof n, "a%d.w.o_bias", i), weight(c, m, false, n, 1, H);
    }
    if (!p->use_mlp) continue;
    snprintf(pre, sizeof pre, "m%d", i);
    if (!p->use_parallel_residual) norm_weights(c, m, pre, false);
    bool bil = !strcmp(p->mlp_act_type, "bilinear");
    snprintf(n, sizeof n, "m%d.w.proj_in", i), weight(c, m, false, n, 2, bil ? 2 * BIL : MLP, H);
    snprintf(n, sizeof n, "m%d.w.in_bias", i), weight(c, m, false, n, 1, bil ? 2 * BIL : MLP);
    snprintf(n, sizeof n, "m%d.w.proj_out", i), weight(c, m, false, n, 2, H, bil ? BIL : MLP);
    if (p->mlp_output_bias) snprintf(n, sizeof n, "m%d.w.out_bias", i), weight(c, m, false, n, 1, H);
  }
  if (p->use_norm_output) norm_weights(c, m, "final", true);
  weight(c, m, true, "t.w.unembed", 2, V, H);
  if (p->output_bias) weight(c, m, true, "t.w.unembed_bias", 1, V);
}

/* ------------------------------------------------------------ the file */

static const char *b(bool v) { return v ? "true" : "false"; }

char *info_line(const ModelParams *p) {
  char *s;
  cr_assert(asprintf(&s,
                     "# info:{\"params\": {\"block_params\": {\"norm_type\": %s%s%s, \"attn_bias\": %s, "
                     "\"attn_pos\": %s, \"use_mlp\": %s, \"mlp_act_type\": \"%s\", \"mlp_output_bias\": %s%s}, "
                     "\"num_layers\": %d, \"use_norm_output\": %s, \"output_bias\": %s}, \"model_class\": \"GPT\", "
                     "\"pos_enc_type\": \"%s\", \"causal_mask\": %s, \"extra\": null}\n",
                     p->norm_type ? "\"" : "", p->norm_type ? p->norm_type : "null", p->norm_type ? "\"" : "",
                     b(p->attn_bias), b(p->attn_pos), b(p->use_mlp), p->mlp_act_type, b(p->mlp_output_bias),
                     p->use_parallel_residual ? ", \"use_parallel_residual\": true" : "", p->num_layers, b(p->use_norm_output), b(p->output_bias),
                     p->attn_pos ? "shortformer" : p->pos_enc_type, b(p->causal_mask == 1)) > 0);
  return s;
}

char *library_text(const ModelParams *p) {
  Comp *c = tu_comp();
  char *info = info_line(p);
  SourceFile src = {"lib.circ", info, strlen(info)};
  ModelLibrary lib;
  cr_assert(model_library(c, &src, &lib), "%s", tu_diags(c));
  char *text = strndup(lib.text, lib.len);
  free(info);
  tu_free(c);
  return text;
}

/* "[shape] Symbol uuid" of `name`'s definition in the library text. */
static char *symbol_of(const char *lib, const char *name) {
  char key[80];
  snprintf(key, sizeof key, "'%s' [", name);
  const char *at = strstr(lib, key);
  cr_assert(at, "the library has no symbol '%s'", name);
  at += strlen(key) - 1;
  return strndup(at, strcspn(at, "!\n") - 1);
}

char *model_file(const Model *m) {
  char *lib = library_text(&m->p);
  char *text = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&text, &len);
  char *info = info_line(&m->p);
  fputs(info, f);
  for (int i = 0; i < m->nw; i++)
    if (m->w[i].top_level)
      fprintf(f, "'%s' [%lld,%lld] Array %.24s\n", m->w[i].name, (long long)m->w[i].t->shape.dim[0],
              (long long)m->w[i].t->shape.dim[1], m->w[i].hash);
  fprintf(f, "'t.bind_w' Module\n  '%s'\n", m->p.output_bias ? "t.logits_p_bias" : "t.logits");
  for (int i = 0; i < m->nw; i++) {
    const Weight *w = &m->w[i];
    if (w->top_level) continue;
    fprintf(f, "  '%s_arr' [", w->name);
    for (int d = 0; d < w->t->shape.rank; d++) fprintf(f, "%s%lld", d ? "," : "", (long long)w->t->shape.dim[d]);
    fprintf(f, "] Array %.24s ! '%s'", w->hash, w->name);
    if (!w->library_key) {
      char *s = symbol_of(lib, w->name);
      fprintf(f, " %s", s);
      free(s);
    }
    fputc('\n', f);
  }
  fputs("\n# originally generated by circc's tests (model_gen.c)\n", f);
  fclose(f);
  free(info), free(lib);
  return text;
}

/* ------------------------------------------------------------ the reference forward (§4) */

static double at2(const Tensor *t, int i, int j) { return tensor_get_f64(t, (int64_t)i * t->shape.dim[1] + j); }
static double at3(const Tensor *t, int i, int j, int k) {
  return tensor_get_f64(t, ((int64_t)i * t->shape.dim[1] + j) * t->shape.dim[2] + k);
}
static double at1(const Tensor *t, int i) { return tensor_get_f64(t, i); }

/* The norm of prefix p over each row of x (in place into y). */
static void norm(const Model *m, const ModelParams *p, const char *pre, double x[S][H], double y[S][H]) {
  for (int s = 0; s < S; s++) {
    if (!p->norm_type) {
      memcpy(y[s], x[s], sizeof y[s]);
      continue;
    }
    bool ln = !strcmp(p->norm_type, "ln");
    const Tensor *bias = find_weight(m, "%s.%s.w.bias", pre, p->norm_type);
    const Tensor *scale = find_weight(m, "%s.%s.w.scale", pre, p->norm_type);
    double mean = 0, var = 0;
    for (int h = 0; h < H; h++) mean += x[s][h] / H;
    for (int h = 0; h < H; h++) var += (x[s][h] - mean) * (x[s][h] - mean) / H;
    for (int h = 0; h < H; h++) {
      double v = ln ? (x[s][h] - mean) / sqrt(var + 1e-5)
                    : (x[s][h] - at1(find_weight(m, "%s.bn.mean", pre), h)) /
                          sqrt(1e-5 + at1(find_weight(m, "%s.bn.var", pre), h));
      y[s][h] = at1(bias, h) + at1(scale, h) * v;
    }
  }
}

static double act(const char *a, double x) {
  if (!strcmp(a, "relu")) return x > 0 ? x : 0;
  if (!strcmp(a, "gelu")) return 0.5 * x * (1 + erf(x / sqrt(2)));
  return 0.5 * x * (1 + tanh(sqrt(2 / M_PI) * (x + 0.044715 * x * x * x))); /* gelu_new */
}

void forward(const Model *m, const ModelParams *p, const double in[S][H], const double mask[S][S],
                    const double pos[S][H], double logits[S][V]) {
  double x[S][H], h[S][H];
  memcpy(x, in, sizeof x);
  /* the norms' weights are m's: its shared p for both norms if it has the parallel block */
  const char *anorm = m->p.use_parallel_residual ? "p" : "a", *mnorm = m->p.use_parallel_residual ? "p" : "m";
  for (int i = 0; i < p->num_layers; i++) {
    char pre[16];
    snprintf(pre, sizeof pre, "%s%d", anorm, i);
    norm(m, p, pre, x, h);
    double out[S][H] = {{0}};
    for (int hd = 0; hd < HEADS; hd++) {
      double q[S][QK], k[S][QK], v[S][VD], pr[S][S];
      for (int s = 0; s < S; s++) {
        for (int c = 0; c < QK; c++) {
          q[s][c] = k[s][c] = 0;
          for (int d = 0; d < H; d++) {
            double qk_in = h[s][d] + (p->attn_pos ? pos[s][d] : 0);
            q[s][c] += qk_in * at3(find_weight(m, "a%d.w.q", i), hd, c, d);
            k[s][c] += qk_in * at3(find_weight(m, "a%d.w.k", i), hd, c, d);
          }
          if (p->attn_bias) q[s][c] += at2(find_weight(m, "a%d.w.q_bias", i), hd, c);
          if (p->attn_bias) k[s][c] += at2(find_weight(m, "a%d.w.k_bias", i), hd, c);
        }
        for (int c = 0; c < VD; c++) {
          v[s][c] = p->attn_bias ? at2(find_weight(m, "a%d.w.v_bias", i), hd, c) : 0;
          for (int d = 0; d < H; d++) v[s][c] += h[s][d] * at3(find_weight(m, "a%d.w.v", i), hd, c, d);
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
          for (int d = 0; d < H; d++) out[s][d] += cv * at3(find_weight(m, "a%d.w.o", i), hd, d, e);
        }
    }
    for (int s = 0; s < S; s++)
      for (int d = 0; d < H; d++) out[s][d] += p->attn_bias ? at1(find_weight(m, "a%d.w.o_bias", i), d) : 0;
    if (!p->use_parallel_residual)
      for (int s = 0; s < S; s++)
        for (int d = 0; d < H; d++) x[s][d] += out[s][d];
    if (!p->use_mlp) continue;
    snprintf(pre, sizeof pre, "%s%d", mnorm, i);
    if (!p->use_parallel_residual) norm(m, p, pre, x, h);
    bool bil = !strcmp(p->mlp_act_type, "bilinear");
    const Tensor *win = find_weight(m, "m%d.w.proj_in", i), *bin = find_weight(m, "m%d.w.in_bias", i);
    const Tensor *wout = find_weight(m, "m%d.w.proj_out", i);
    for (int s = 0; s < S; s++) {
      double pre_act[2 * MLP + 2 * BIL], a[MLP + BIL];
      int np = bil ? 2 * BIL : MLP;
      for (int o = 0; o < np; o++) {
        pre_act[o] = at1(bin, o);
        for (int d = 0; d < H; d++) pre_act[o] += at2(win, o, d) * h[s][d];
      }
      int na = bil ? BIL : MLP;
      for (int o = 0; o < na; o++) a[o] = bil ? pre_act[o] * pre_act[BIL + o] : act(p->mlp_act_type, pre_act[o]);
      for (int d = 0; d < H; d++) {
        double y = p->mlp_output_bias ? at1(find_weight(m, "m%d.w.out_bias", i), d) : 0;
        for (int o = 0; o < na; o++) y += at2(wout, d, o) * a[o];
        x[s][d] += y;
      }
    }
    if (p->use_parallel_residual)
      for (int s = 0; s < S; s++)
        for (int d = 0; d < H; d++) x[s][d] += out[s][d];
  }
  if (p->norm_type && p->use_norm_output) norm(m, p, "final", x, h);
  else memcpy(h, x, sizeof h);
  for (int s = 0; s < S; s++)
    for (int t = 0; t < V; t++) {
      logits[s][t] = p->output_bias ? at1(find_weight(m, "t.w.unembed_bias"), t) : 0;
      for (int d = 0; d < H; d++) logits[s][t] += h[s][d] * at2(find_weight(m, "t.w.unembed"), t, d);
    }
}

double max_diff(const double a[S][V], const double b[S][V]) {
  double d = 0, scale = 1;
  for (int s = 0; s < S; s++)
    for (int t = 0; t < V; t++) d = fmax(d, fabs(a[s][t] - b[s][t])), scale = fmax(scale, fabs(b[s][t]));
  return d / scale;
}

char *store_dir(void) {
  static char buf[64];
  strcpy(buf, "/tmp/circc_model_XXXXXX");
  cr_assert(mkdtemp(buf));
  return buf;
}

void rm_store(const char *dir) {
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  cr_assert_eq(system(cmd), 0);
}

