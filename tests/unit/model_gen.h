/* model_gen.h — rust_circuit model files generated for the tests
 * (test_model_file.c, test_bind_tokens.c): the weights a TransformerParams
 * calls for (model_files.md §6), decided here independently of circc's
 * builder, seeded N(0,1) and written to a tensor store; the file in the
 * format rust_circuit's dump_model_string writes (§1); and an independent
 * plain-C forward pass of t.bind_w (§4). */
#ifndef CIRCC_MODEL_GEN_H
#define CIRCC_MODEL_GEN_H
#include "testutil.h"

/* Sizes of the generated models: all different, so a swapped axis fails. */
enum { H = 8, HEADS = 2, QK = 3, VD = 4, MLP = 6, BIL = 5, V = 7, P = 6, S = 4 };

typedef struct Weight {
  char name[48];
  Tensor *t;
  char hash[65];
  bool library_key;   /* final.* and t.w.*: the file names the library symbol; others are restated */
  bool top_level;     /* t.w.tok_embeds, t.w.pos_embeds: Arrays of their own before t.bind_w */
} Weight;

typedef struct Model {
  ModelParams p;
  bool embeddings;    /* also t.w.tok_embeds [V,H] and t.w.pos_embeds [P,H] (for --bind-tokens) */
  Weight w[128];
  int nw;
  uint64_t rng;       /* seeds the weights */
  char store[64];     /* tensor store directory (the Comp's tensor_dir) */
} Model;

/* Every weight m->p calls for, in m->w, written to c's tensor store. */
void make_weights(Comp *c, Model *m);
/* The weight named by the printf-style fmt (a test failure if absent). */
const Tensor *find_weight(const Model *m, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The `# info:` line as dump_model_string writes it (use_parallel_residual only
 * when true, as the REMIX files omit it; pos_enc_type shortformer when attn_pos). */
char *info_line(const ModelParams *p);
/* The library text circc's library stage builds for p (malloc'd). */
char *library_text(const ModelParams *p);
/* The model file (malloc'd): the info line, the embeddings if any, t.bind_w
 * binding every weight (per-layer Symbols restated with the library's UUIDs). */
char *model_file(const Model *m);
/* logits[S][V] of t.bind_w for params p (which may differ from m's: an option
 * ignored) given t.input `in`, a.mask `mask` and a.pos_input `pos` (used when
 * p->attn_pos). With use_parallel_residual, x += attn(p(x)) + mlp(p(x)). */
void forward(const Model *m, const ModelParams *p, const double in[S][H], const double mask[S][S],
             const double pos[S][H], double logits[S][V]);
/* Largest difference relative to the largest magnitude of b (bilinear models
 * without a final norm reach ~1e5). */
double max_diff(const double a[S][V], const double b[S][V]);
/* A fresh temporary store directory (static buffer), and its removal. */
char *store_dir(void);
void rm_store(const char *dir);
#endif
