/* scrub_gen.c — the causal-scrubbing pattern of test_scrub (see scrub_gen.h). */
#define _GNU_SOURCE /* asprintf */
#include "scrub_gen.h"
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const int64_t SCRUB_DATA[SCRUB_ROWS][S + 1] = {{3, 0, 6, 3, 1}, {1, 1, 2, 5, 4}, {6, 5, 4, 3, 2}, {0, 2, 0, 2, 0}, {4, 6, 1, 0, 5}};
const int SCRUB_CANDIDATE[V] = {1, 0, 1, 1, 0, 1, 0};

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
char *scrub_file(Comp *c, const Model *m) {
  double data[SCRUB_ROWS * (S + 1)], eye[V * V] = {0}, mask[S * S], cand[V];
  for (int i = 0; i < SCRUB_ROWS * (S + 1); i++) data[i] = (double)SCRUB_DATA[i / (S + 1)][i % (S + 1)];
  for (int i = 0; i < V; i++) eye[i * V + i] = 1, cand[i] = SCRUB_CANDIDATE[i];
  for (int q = 0; q < S; q++)
    for (int k = 0; k < S; k++) mask[q * S + k] = q >= k;
  const char *hd = store_tensor(c, DT_I64, 2, (int64_t[]){SCRUB_ROWS, S + 1}, data);
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
                     file, S, SCRUB_ROWS, S + 1, hd, SCRUB_ROWS, S, S, S, hm, V, V, he, S + 1, V, hc) > 0);
  free(file);
  return text;
}

Comp *scrub_comp(Model *m, const char *store, uint64_t seed) {
  Comp *c = tu_comp();
  memset(m, 0, sizeof *m);
  m->p = (ModelParams){.norm_type = "ln", .use_mlp = true, .mlp_act_type = "relu", .num_layers = SCRUB_LAYERS,
                       .use_norm_output = true, .model_class = "GPT", .pos_enc_type = "gpt", .causal_mask = 1};
  m->embeddings = true, m->rng = seed;
  snprintf(m->store, sizeof m->store, "%s", store);
  c->tensor_dir = m->store;
  make_weights(c, m);
  return c;
}

const char *const SCRUB_OUTPUTS[2] = {"expected_loss_by_pos", "expected_loss"};

