/* mlp_build.c — writes makemore's MLP (Bengio et al. 2003 style) as a circuit.
 * Reads C [V,E], W1 [CTX·E,H], b1 [H], W2 [H,V], b2 [V] from a .safetensors
 * checkpoint (h = tanh(C[ctx].view(CTX·E) @ W1 + b1), logits = h @ W2 + b2) and
 * writes into OUT:
 *   store/…   the weights in rust_circuit's layout: t.w.tok_embeds = C,
 *             m.w.proj_in = W1ᵀ [H,CTX·E], m.w.in_bias = b1, m.w.proj_out = W2ᵀ [V,H],
 *             m.w.out_bias = b2
 *   mlp.circ  logits [N,V]: gen_index_at_0_c embedding of the free input
 *             contexts [N,CTX], flattened, through the library's pointwise MLP
 *             (rust_circuit_format.md §7.2, tanh) as a Module batched over N;
 *             loss []: mean NLL of the free input targets [N] through the
 *             log-likelihood module (§9 E9).
 * Exit codes: 0 ok, 2 usage, 3 I/O (unreadable or malformed checkpoint, unwritable OUT). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "modeltool.h"

static const char USAGE[] =
    "usage: mlp_build [-n N] MODEL.safetensors OUTDIR\n"
    "Writes OUTDIR/mlp.circ and the weights into the tensor store OUTDIR/store.\n"
    "The circuit takes contexts [N,CTX] and targets [N] (int64 token ids, 0 = '.',\n"
    "1..26 = a..z) and outputs logits [N,V] and loss [] (mean NLL of the targets).\n"
    "  -n N   batch size baked into the circuit (default 22655, the dev set)\n"
    "Compile with: circc --tensors OUTDIR/store OUTDIR/mlp.circ\n"
    "exit codes: 0 ok, 2 usage, 3 I/O\n";

enum { DEFAULT_N = 22655 };

/* The checkpoint's tensors as float32, with the sizes they imply. */
typedef struct Weights {
  Tensor *c, *w1, *b1, *w2, *b2;
  int64_t vocab, embed, ctx, hidden;
} Weights;

/* src (any float dtype) as a float32 tensor of shape `shape`; transposed
 * (src [a,b] → [b,a]) when `transpose`. */
static Tensor *to_f32(Comp *c, const Tensor *src, bool transpose) {
  Shape s = src->shape;
  if (transpose) s.dim[0] = src->shape.dim[1], s.dim[1] = src->shape.dim[0];
  Tensor *t = tensor_new(c, DT_F32, &s);
  int64_t n = shape_numel(&s);
  for (int64_t i = 0; i < n; i++) {
    int64_t j = transpose ? (i % s.dim[1]) * s.dim[0] + i / s.dim[1] : i;
    ((float *)t->data)[i] = (float)tensor_get_f64(src, j);
  }
  return t;
}

static bool check_shape(const char *path, const char *name, const Tensor *t, int rank, const int64_t *want) {
  bool ok = t->shape.rank == rank;
  for (int i = 0; ok && i < rank; i++) ok = t->shape.dim[i] == want[i];
  if (t->dtype != DT_F32 && t->dtype != DT_F64 && t->dtype != DT_F16 && t->dtype != DT_BF16) {
    tool_error("%s: tensor '%s' has dtype %s, expected a float dtype", path, name, dtype_name(t->dtype));
    return false;
  }
  if (!ok) {
    char got[256] = "", exp[256] = "";
    for (int i = 0; i < t->shape.rank; i++)
      snprintf(got + strlen(got), sizeof got - strlen(got), "%s%lld", i ? "," : "", (long long)t->shape.dim[i]);
    for (int i = 0; i < rank; i++)
      snprintf(exp + strlen(exp), sizeof exp - strlen(exp), "%s%lld", i ? "," : "", (long long)want[i]);
    tool_error("%s: tensor '%s' has shape [%s], expected [%s]", path, name, got, exp);
  }
  return ok;
}

/* Reads and checks the five tensors; sizes come from C and W1. */
static bool read_weights(Comp *c, const char *path, Weights *w) {
  Loc loc = {path, 0, 0};
  TensorFile *f = safetensors_open(c, path, loc);
  if (!f) return false;
  Tensor *C = safetensors_get(c, f, "C", loc), *W1 = safetensors_get(c, f, "W1", loc);
  Tensor *b1 = safetensors_get(c, f, "b1", loc), *W2 = safetensors_get(c, f, "W2", loc);
  Tensor *b2 = safetensors_get(c, f, "b2", loc);
  if (!C || !W1 || !b1 || !W2 || !b2) return false;
  if (C->shape.rank != 2 || W1->shape.rank != 2 || C->shape.dim[1] == 0 || W1->shape.dim[0] % C->shape.dim[1]) {
    tool_error("%s: C must be [V,E] and W1 [CTX*E,H]", path);
    return false;
  }
  w->vocab = C->shape.dim[0], w->embed = C->shape.dim[1];
  w->ctx = W1->shape.dim[0] / w->embed, w->hidden = W1->shape.dim[1];
  int64_t sc[] = {w->vocab, w->embed}, s1[] = {w->ctx * w->embed, w->hidden}, sb1[] = {w->hidden},
          s2[] = {w->hidden, w->vocab}, sb2[] = {w->vocab};
  if (!check_shape(path, "C", C, 2, sc) || !check_shape(path, "W1", W1, 2, s1) ||
      !check_shape(path, "b1", b1, 1, sb1) || !check_shape(path, "W2", W2, 2, s2) ||
      !check_shape(path, "b2", b2, 1, sb2))
    return false;
  w->c = to_f32(c, C, false);
  w->w1 = to_f32(c, W1, true);   /* m.w.proj_in [H, CTX*E] */
  w->b1 = to_f32(c, b1, false);
  w->w2 = to_f32(c, W2, true);   /* m.w.proj_out [V, H] */
  w->b2 = to_f32(c, b2, false);
  return true;
}

/* The circuit text. Spec sizes are symbolic as in the library: HIDDEN = 0s
 * (the flattened context), MLP_PROJ = 5s, and the output width VOCAB_SIZE =
 * 10s (the library's OUT_HIDDEN equals HIDDEN, which does not hold here). */
static char *circuit_text(const Weights *w, const char *const hash[5], int64_t n, size_t *len) {
  static const char *const SYMS[] = {"m.input", "m.w.proj_in", "m.w.in_bias", "m.w.proj_out", "m.w.out_bias",
                                     "contexts", "targets"};
  char uuid[7][37], neg_recip[64];
  for (int i = 0; i < 7; i++) tool_uuid(SYMS[i], uuid[i]);
  tool_scalar(-1.0 / (double)n, neg_recip, sizeof neg_recip);
  long long N = n, V = w->vocab, E = w->embed, X = w->ctx, H = w->hidden;
  char *text = NULL;
  FILE *f = open_memstream(&text, len);
  if (!f) return NULL;
  fprintf(f,
          "# makemore MLP: logits = tanh(C[contexts].view(%lld) @ W1 + b1) @ W2 + b2; generated by mlp_build.\n"
          "# inputs:  contexts [N,%lld] int64 (the previous %lld characters), targets [N] int64;\n"
          "#          token ids: 0 = '.', 1..26 = a..z\n"
          "# outputs: logits [N,%lld], loss [] = mean negative log-likelihood of targets\n"
          "'logits' Module\n"
          "  'm.p_bias' Add\n"
          "    'm' Einsum h,oh->o\n"
          "      'm.act' GeneralFunction tanh\n"
          "        'm.pre' Add\n"
          "          'm.pre_mul' Einsum i,hi->h\n"
          "            'm.input' [0s] Symbol %s\n"
          "            'm.w.proj_in' [5s,0s] Symbol %s\n"
          "          'm.w.in_bias' [5s] Symbol %s\n"
          "      'm.w.proj_out' [10s,5s] Symbol %s\n"
          "    'm.w.out_bias' [10s] Symbol %s\n"
          "  'emb.flat' Rearrange a b c -> a (b c) ! 'm.input'\n"
          "    'emb' GeneralFunction gen_index_at_0_c\n"
          "      't.w.tok_embeds' [%lld,%lld] Array %s\n"
          "      'contexts' [%lld,%lld] Symbol %s\n"
          "  'm.w.proj_in_arr' [%lld,%lld] Array %s ! 'm.w.proj_in'\n"
          "  'm.w.in_bias_arr' [%lld] Array %s ! 'm.w.in_bias'\n"
          "  'm.w.proj_out_arr' [%lld,%lld] Array %s ! 'm.w.proj_out'\n"
          "  'm.w.out_bias_arr' [%lld] Array %s ! 'm.w.out_bias'\n"
          "'loss' Einsum a,->\n"
          "  'll.call' Module\n"
          "    'll' GeneralFunction gen_index_at_0_batch_x_c\n"
          "      'log_probs' GeneralFunction log_softmax\n"
          "        'll.input' [9s] Symbol b9d111e5-b793-4f63-84a0-2f8590b9f39c\n"
          "      'll.label' [] Symbol 74c503b9-fe2c-4f8b-9350-7351a292c351\n"
          "    'logits' ! 'll.input'\n"
          "    'targets' [%lld] Symbol %s ! 'll.label'\n"
          "  'loss.c.neg_recip_n' [] Scalar %s\n",
          X * E, X, X, V, uuid[0], uuid[1], uuid[2], uuid[3], uuid[4], V, E, hash[0], N, X, uuid[5], H, X * E,
          hash[1], H, hash[2], V, H, hash[3], V, hash[4], N, uuid[6], neg_recip);
  return fclose(f) == 0 ? text : NULL;
}

static bool write_outputs(Comp *c, const Weights *w, int64_t n, const char *out) {
  if (!tool_mkdirs(out)) return false;
  const Tensor *t[5] = {w->c, w->w1, w->b1, w->w2, w->b2};
  const char *hash[5];
  for (int i = 0; i < 5; i++)
    if (!(hash[i] = tool_store(c, t[i]))) return false;
  size_t len;
  char *text = circuit_text(w, hash, n, &len);
  if (!text) {
    tool_error("out of memory");
    return false;
  }
  bool ok = tool_write_file(arena_printf(&c->arena, "%s/mlp.circ", out), text, len);
  free(text);
  if (ok)
    printf("mlp_build: V=%lld E=%lld CTX=%lld H=%lld, N=%lld, wrote %s/mlp.circ\n", (long long)w->vocab,
           (long long)w->embed, (long long)w->ctx, (long long)w->hidden, (long long)n, out);
  return ok;
}

int main(int argc, char **argv) {
  tool_name = "mlp_build";
  int64_t n = DEFAULT_N;
  const char *files[2];
  int nfiles = 0;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
      fputs(USAGE, stdout);
      return TOOL_OK;
    } else if (!strcmp(a, "-n")) {
      char *end = NULL;
      errno = 0;
      long long v = i + 1 < argc ? strtoll(argv[++i], &end, 10) : 0;
      if (v < 1 || errno || *end) {
        tool_error("-n expects a positive number of examples");
        fputs(USAGE, stderr);
        return TOOL_USAGE;
      }
      n = v;
    } else if (a[0] == '-' || nfiles == 2) {
      tool_error(a[0] == '-' ? "unknown option '%s'" : "unexpected argument '%s'", a);
      fputs(USAGE, stderr);
      return TOOL_USAGE;
    } else {
      files[nfiles++] = a;
    }
  }
  if (nfiles != 2) {
    fputs(USAGE, stderr);
    return TOOL_USAGE;
  }
  Comp comp;
  comp_init(&comp);
  comp.tensor_dir = arena_printf(&comp.arena, "%s/store", files[1]);
  Weights w = {0};
  bool ok = read_weights(&comp, files[0], &w) && write_outputs(&comp, &w, n, files[1]) && !diag_error_count(&comp);
  comp_free(&comp);
  return ok ? TOOL_OK : TOOL_IO;
}
