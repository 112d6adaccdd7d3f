/* test_lower.c — what lowering makes of a circuit: which steps, in which
 * layouts (values are checked against the reference evaluator in
 * test_codegen.c). */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>
#include "kernel.h"
#include "testutil.h"

/* The pipeline (driver.c) on `text` with random tensors, up to stage `last`. */
static Comp *run_to(const char *text, Stage last, Kernels *k) {
  Comp *c = tu_comp();
  c->tensors_as_random = true;
  Compilation cm = {0};
  cr_assert(tu_run(c, text, last, &cm), "%s", tu_diags(c));
  *k = cm.kernels;
  return c;
}

/* The kernel graph of `text` as lower_program leaves it. */
static Comp *lower_unfused(const char *text, Kernels *k) { return run_to(text, STAGE_LOWER, k); }

/* ... and after epilogue fusion and memory planning, as emit sees it. */
static Comp *lower_text(const char *text, Kernels *k) { return run_to(text, STAGE_MEMPLAN, k); }

static int count_steps(const Kernels *k, StepKind kind) {
  int n = 0;
  for (int i = 0; i < k->nstep; i++) n += k->step[i]->kind == kind;
  return n;
}

/* The GEMM step computing the node named `name`. */
static const Step *gemm_of(Comp *c, const Kernels *k, const char *name) {
  for (int i = 0; i < k->nstep; i++) {
    const Step *s = k->step[i];
    if (s->kind == STEP_GEMM && s->node->name && !strcmp(s->node->name, name)) return s;
  }
  cr_assert_fail("no GEMM step for %s\n%s", name, tu_diags(c));
  return NULL;
}

/* B of GEMM g in the layout gemm_layouts chose: a weight that the blob holds
 * pre-packed (gemm_packed_weights) is read through the view it was packed from. */
static const View *b_layout(const Step *g) {
  return g->u.gemm.packing == PACK_F32 ? g->u.gemm.b.buf->packed_of : &g->u.gemm.b;
}

/* Lowers each circuit of cases[0..n) and hands its kernel graph to check. */
static void lower_each(const char *const *cases, size_t n, void (*check)(Comp *c, const Kernels *k, size_t i)) {
  for (size_t i = 0; i < n; i++) {
    Kernels k;
    Comp *c = lower_text(cases[i], &k);
    check(c, &k, i);
    tu_free(c);
  }
}

Test(lower, attention_output_projection_is_one_gemm) {
  /* K = (h, d) merges in neither operand: the weight is permuted at compile
   * time, z is copied into [t, h, d] */
  Kernels k;
  Comp *c = lower_text("'o' Einsum htd,hod->to\n"
                       "  'z' [3,9,8] Symbol\n"
                       "  'wo' [3,20,8] Array rand\n",
                       &k);
  cr_assert_eq(count_steps(&k, STEP_CONTRACT), 0);
  const Step *g = gemm_of(c, &k, "o");
  cr_assert_eq(g->u.gemm.nbatch, 0);
  cr_assert_eq(g->dim[0], 9);
  cr_assert_eq(g->dim[1], 20);
  cr_assert_eq(g->dim[2], 24);
  cr_assert_eq(g->u.gemm.b.buf->kind, BUF_WEIGHT);
  cr_assert_eq(b_layout(g)->stride[1], 1, "B is row-major [K, N]");
  cr_assert_eq(g->u.gemm.a.stride[2], 1);
  cr_assert_eq(count_steps(&k, STEP_ELEMENTWISE), 1, "one copy of z");
  tu_free(c);
}

Test(lower, transposed_weight_becomes_row_major) {
  Kernels k;
  Comp *c = lower_text("'y' Einsum td,od->to\n"
                       "  'x' [16,16] Symbol\n"
                       "  'w' [20,16] Array rand\n",
                       &k);
  const Step *g = gemm_of(c, &k, "y");
  cr_assert_eq(b_layout(g)->stride[1], 1);  /* b_n */
  cr_assert_eq(b_layout(g)->stride[2], 20); /* b_k */
  /* the permuted weight holds w transposed */
  const Tensor *t = g->u.gemm.b.buf->tensor;
  cr_assert_eq(t->shape.dim[0], 16);
  cr_assert_eq(t->shape.dim[1], 20);
  /* neither the original nor the permuted copy is read (the GEMM reads the
   * pre-packed one), so they stay out of the weights blob */
  for (int i = 0; i < k.nbuf; i++)
    if (k.buf[i]->kind == BUF_WEIGHT && k.buf[i] != g->u.gemm.b.buf) cr_assert_eq(k.buf[i]->offset, -1);
  cr_assert_eq(k.weights_bytes, 16 * 32 * 4, "K = 16 rows of 20 columns padded to 32");
  tu_free(c);
}

Test(lower, weight_gemms_read_pre_packed_copies) {
  /* two heads' projections share one weight read the same way: one packed
   * copy, one matrix per head (N = 20 padded to 32, K = 300 in blocks of 256
   * and 44); the GEMV of a one-row product keeps its by-column weight */
  Kernels k;
  Comp *c = lower_text("'y' Einsum htd,hdo->hto\n"
                       "  'x' [2,8,300] Symbol\n"
                       "  'w' [2,300,20] Array rand\n"
                       "'z' Einsum htd,hdo->hto\n"
                       "  'x2' [2,8,300] Symbol\n"
                       "  'w'\n"
                       "'v' Einsum sd,do->so\n"
                       "  'x1' [1,64] Symbol\n"
                       "  'w1' [64,300] Array rand\n",
                       &k);
  const Step *y = gemm_of(c, &k, "y"), *z = gemm_of(c, &k, "z"), *v = gemm_of(c, &k, "v");
  cr_assert(y->u.gemm.packing == PACK_F32 && z->u.gemm.packing == PACK_F32);
  cr_assert_eq(y->u.gemm.b.buf, z->u.gemm.b.buf, "one copy");
  cr_assert_eq(y->u.gemm.b.buf->numel, 2 * 300 * 32);
  cr_assert_eq(y->u.gemm.b.stride[0], 300 * 32, "the batch stride counts packed matrices");
  cr_assert_eq(b_layout(y)->stride[3], 20, "packed from row-major [K, N]: b_k = 20");
  cr_assert(v->u.gemm.packing == PACK_NONE && step_is_gemv(v));
  cr_assert_eq(k.weights_bytes, 2 * 300 * 32 * 4 + 64 * 300 * 4);
  tu_free(c);
}

Test(lower, output_layout_merges_heads_into_n) {
  /* out [h, t, c]: N = (h, c) merges only in the layout [t, h, c] */
  Kernels k;
  Comp *c = lower_text("'q' Einsum td,hcd->htc\n"
                       "  'x' [16,16] Symbol\n"
                       "  'wq' [4,10,16] Array rand\n",
                       &k);
  const Step *g = gemm_of(c, &k, "q");
  cr_assert_eq(g->u.gemm.nbatch, 0);
  cr_assert_eq(g->dim[1], 40);
  cr_assert_eq(g->out.stride[1], 1);
  cr_assert_eq(g->out.stride[0], 40);
  tu_free(c);
}

Test(lower, mergeable_contraction_keeps_its_layout) {
  Kernels k;
  Comp *c = lower_text("'y' Einsum tk,kn->tn\n"
                       "  'x' [16,16] Symbol\n"
                       "  'b' [16,20] Symbol\n",
                       &k);
  cr_assert_eq(k.nstep, 1);
  const Step *g = gemm_of(c, &k, "y");
  cr_assert_eq(g->u.gemm.b.buf->kind, BUF_INPUT);
  tu_free(c);
}

Test(lower, shared_weight_keeps_its_layout) {
  /* a tied embedding: the same tensor gathered and used as a transposed B is
   * not permuted into a second plain layout */
  Kernels k;
  Comp *c = lower_text("'logits' Einsum td,vd->tv\n"
                       "  'emb' GeneralFunction gen_index_at_0_c\n"
                       "    'wte' [40,16] Array rand\n"
                       "    'ids' [16] Symbol\n"
                       "  'wte'\n",
                       &k);
  const Step *g = gemm_of(c, &k, "logits");
  cr_assert_eq(b_layout(g)->stride[2], 1, "B stays transposed (b_k = 1)");
  /* the GEMM reads a pre-packed copy (K = 16, N = 40 padded to 48), the
   * gather the plain weight: no transposed copy besides */
  cr_assert_eq(k.weights_bytes, 40 * 16 * 4 + 16 * 48 * 4);
  tu_free(c);
}

/* GPT-2's attention as the importer writes it (module form, after module
 * substitution): scores with a constant mask and bias, softmax and the value
 * einsum fused with the output projection. */
static const char GPT2_ATTENTION[] = "'a' Einsum abc,acd,aed->be\n"
                                     "  'a.attn_probs' GeneralFunction softmax\n"
                                     "    'a.attn_scores' Add\n"
                                     "      'a.attn_scores_raw' Einsum rqc,rkc,,qk->rqk\n"
                                     "        'a.q' [4,70,8] Symbol\n"
                                     "        'a.k' [4,70,8] Symbol\n"
                                     "        'scale' [] Scalar 0.35355339059327373\n"
                                     "        'mask' [70,70] Array rand\n"
                                     "      'bias' [70,70] Array rand\n"
                                     "  'a.v' [4,70,8] Symbol\n"
                                     "  'wo' [4,32,8] Array rand\n";

Test(lower, gpt2_attention_is_one_step) {
  Kernels k;
  Comp *c = lower_text(GPT2_ATTENTION, &k);
  cr_assert_eq(count_steps(&k, STEP_ATTENTION), 1);
  cr_assert_eq(count_steps(&k, STEP_ROW), 0, "no softmax over a materialised score matrix");
  const Step *s = NULL;
  for (int i = 0; i < k.nstep; i++)
    if (k.step[i]->kind == STEP_ATTENTION) s = k.step[i];
  cr_assert_eq(s->u.attn.nbatch, 1);
  cr_assert_eq(s->dim[0], 4);
  cr_assert_eq(s->dim[1], 70);
  cr_assert_eq(s->dim[2], 70);
  cr_assert_eq(s->dim[3], 8);
  cr_assert_eq(s->dim[4], 8);
  cr_assert_not_null(s->u.attn.kend.buf, "a constant mask: kend is known");
  cr_assert_not_null(s->u.attn.factor.buf, "random mask values: F is needed");
  cr_assert_eq(s->out.stride[0], 8, "heads of one position adjacent: [q, h, d]");
  cr_assert_eq(s->out.stride[1], 32);
  cr_assert_eq(count_steps(&k, STEP_GEMM), 1, "the output projection; no copy before it");
  cr_assert_eq(count_steps(&k, STEP_ELEMENTWISE), 1, "q·scale only");
  tu_free(c);
}

static void plain_attention(Comp *c, const Kernels *k, size_t i) {
  (void)c;
  cr_assert_eq(count_steps(k, STEP_ATTENTION), 0, "case %zu", i);
  cr_assert_eq(count_steps(k, STEP_ROW), 1, "case %zu", i);
}

/* Forms that must keep the ordinary lowering. */
Test(lower, attention_needs_its_pattern) {
  static const char *const CASES[] = {
      /* the probabilities are an output too */
      "'o' Einsum qk,kd->qd\n  'p' GeneralFunction softmax\n    'r' Einsum qc,kc->qk\n      'q' [20,7] Symbol\n"
      "      'k' [31,7] Symbol\n  'v' [31,5] Symbol\n'p_out' Einsum qk->qk\n  'p'\n",
      /* a run-time bias that varies over heads */
      "'o' Einsum hqk,hkd->hqd\n  'p' GeneralFunction softmax\n    's' Add\n      'r' Einsum hqc,hkc->hqk\n"
      "        'q' [2,20,7] Symbol\n        'k' [2,31,7] Symbol\n      'b' [2,20,31] Symbol\n  'v' [2,31,5] Symbol\n",
      /* a bias that varies over heads */
      "'o' Einsum hqk,hkd->hqd\n  'p' GeneralFunction softmax\n    's' Add\n      'r' Einsum hqc,hkc->hqk\n"
      "        'q' [2,20,7] Symbol\n        'k' [2,31,7] Symbol\n      'b' [2,20,31] Array rand\n  'v' [2,31,5] Symbol\n",
      /* softmax over the query axis */
      "'o' Einsum kq,kd->qd\n  'p' GeneralFunction softmax\n    'r' Einsum qc,kc->kq\n      'q' [20,7] Symbol\n"
      "      'k' [31,7] Symbol\n  'v' [31,5] Symbol\n",
  };
  lower_each(CASES, sizeof CASES / sizeof *CASES, plain_attention);
}

Test(lower, attention_without_mask_is_plain) {
  Kernels k;
  Comp *c = lower_text("'o' Einsum qk,kd->qd\n  'p' GeneralFunction softmax\n    'r' Einsum qc,kc->qk\n"
                       "      'q' [20,7] Symbol\n      'k' [31,7] Symbol\n  'v' [31,5] Symbol\n",
                       &k);
  cr_assert_eq(count_steps(&k, STEP_ATTENTION), 1);
  const Step *s = k.step[k.nstep - 1];
  cr_assert_not_null(s->u.attn.kend.buf);
  cr_assert_null(s->u.attn.bias.buf, "no B");
  cr_assert_null(s->u.attn.factor.buf, "no F: nothing is ever skipped");
  tu_free(c);
}

/* GPT-2 with a symbolic length: the causal mask is made from the `positions`
 * input. Two layers' attentions share F (the mask's own buffer: the planner
 * moves the scale onto q) and B (one step); the skipped keys are found at run
 * time. */
Test(lower, run_time_mask_is_fused) {
  Kernels k;
  Comp *c = lower_text("'out' Add\n"
                       "  'l0' Einsum hqk,hkd->qhd\n"
                       "    'p0' GeneralFunction softmax\n"
                       "      's0' Add\n"
                       "        'y0' Einsum hqk,,qk->hqk\n"
                       "          'r0' Einsum hqc,hkc->hqk\n"
                       "            'q0' [2,20,8] Symbol\n"
                       "            'k0' [2,20,8] Symbol\n"
                       "          'scale' [] Scalar 0.35\n"
                       "          'mask' GeneralFunction step\n"
                       "            'diff' Add\n"
                       "              'pq' Rearrange q -> q 1\n"
                       "                'positions' [20] Symbol\n"
                       "              'nk' Einsum k,->k\n"
                       "                'positions'\n"
                       "                'neg' [] Scalar -1\n"
                       "              'half' [] Scalar 0.5\n"
                       "        'bias' Einsum qk,->qk\n"
                       "          'not' Add\n"
                       "            'one' [] Scalar 1\n"
                       "            'negm' Einsum qk,->qk\n"
                       "              'mask'\n"
                       "              'neg'\n"
                       "          'big' [] Scalar -10000\n"
                       "    'v0' [2,20,8] Symbol\n"
                       "  'l1' Einsum hqk,hkd->qhd\n"
                       "    'p1' GeneralFunction softmax\n"
                       "      's1' Add\n"
                       "        'y1' Einsum hqk,,qk->hqk\n"
                       "          'r1' Einsum hqc,hkc->hqk\n"
                       "            'q1' [2,20,8] Symbol\n"
                       "            'k1' [2,20,8] Symbol\n"
                       "          'scale'\n"
                       "          'mask'\n"
                       "        'bias'\n"
                       "    'v1' [2,20,8] Symbol\n",
                       &k);
  cr_assert_eq(count_steps(&k, STEP_ATTENTION), 2, "%s", tu_diags(c));
  cr_assert_eq(count_steps(&k, STEP_ROW), 0, "no softmax over a materialised score matrix");
  const Step *a[2];
  int n = 0;
  for (int i = 0; i < k.nstep; i++)
    if (k.step[i]->kind == STEP_ATTENTION) a[n++] = k.step[i];
  for (int j = 0; j < 2; j++) {
    cr_assert_null(a[j]->u.attn.kend.buf, "kend found at run time");
    cr_assert_null(a[j]->u.attn.skip.buf);
    cr_assert_not_null(a[j]->u.attn.bias.buf, "B");
    cr_assert_not_null(a[j]->u.attn.factor.buf, "F");
    cr_assert_eq(a[j]->u.attn.factor.buf->kind, BUF_TEMP);
  }
  cr_assert_eq(a[0]->u.attn.bias.buf, a[1]->u.attn.bias.buf, "one B for both layers");
  cr_assert_eq(a[0]->u.attn.factor.buf, a[1]->u.attn.factor.buf, "one F for both layers");
  tu_free(c);
}

Test(lower, input_mask_is_fused) {
  /* the mask an input, inside the scores einsum: F only */
  Kernels k;
  Comp *c = lower_text("'o' Einsum qk,kd->qd\n  'p' GeneralFunction softmax\n    'r' Einsum qc,kc,qk->qk\n"
                       "      'q' [20,7] Symbol\n      'k' [31,7] Symbol\n      'm' [20,31] Symbol\n  'v' [31,5] Symbol\n",
                       &k);
  cr_assert_eq(count_steps(&k, STEP_ATTENTION), 1, "%s", tu_diags(c));
  const Step *s = k.step[k.nstep - 1];
  cr_assert_null(s->u.attn.kend.buf);
  cr_assert_null(s->u.attn.bias.buf, "no B");
  cr_assert_not_null(s->u.attn.factor.buf, "F");
  tu_free(c);
}

/* ------------------------------------------------------------ one-row GEMMs */

static const Step *only_gemm(Comp *c, const Kernels *k) {
  cr_assert_eq(count_steps(k, STEP_GEMM), 1, "%s", tu_diags(c));
  for (int i = 0; i < k->nstep; i++)
    if (k->step[i]->kind == STEP_GEMM) return k->step[i];
  return NULL;
}

Test(lower, one_row_weight_is_stored_by_columns) {
  /* a decode step's projection: w [d, o] becomes [o, d], each column contiguous */
  Kernels k;
  Comp *c = lower_text("'y' Einsum sd,do->so\n"
                       "  'x' [1,64] Symbol\n"
                       "  'w' [64,300] Array rand\n",
                       &k);
  const Step *g = gemm_of(c, &k, "y");
  cr_assert(step_is_gemv(g));
  cr_assert_eq(g->u.gemm.b.stride[2], 1, "b_k = 1");
  cr_assert_eq(g->u.gemm.b.stride[1], 64, "b_n = K");
  cr_assert_eq(g->u.gemm.b.buf->tensor->shape.dim[0], 300);
  cr_assert_null(g->u.gemm.mask.buf, "no mask");
  cr_assert_eq(k.weights_bytes, 64 * 300 * 4, "the original layout is not stored too");
  tu_free(c);
}

Test(lower, decode_scores_take_the_mask) {
  /* q·Kᵀ times a run-time mask over the keys: the GEMV skips masked keys */
  Kernels k;
  Comp *c = lower_text("'s' Einsum hc,hkc,k->hk\n"
                       "  'q' [4,64] Symbol\n"
                       "  'past_k' [4,300,64] Symbol\n"
                       "  'kv_mask' [300] Symbol\n",
                       &k);
  const Step *g = only_gemm(c, &k);
  cr_assert(step_is_gemv(g));
  cr_assert_eq(g->u.gemm.nbatch, 1);
  cr_assert_not_null(g->u.gemm.mask.buf);
  cr_assert_eq(g->u.gemm.mask.buf->kind, BUF_INPUT);
  cr_assert_eq(g->u.gemm.mask.stride[0], 0, "one mask for every head");
  cr_assert_eq(g->u.gemm.mask.stride[2], 1, "along N, the keys");
  tu_free(c);
}

static void unmasked_gemv(Comp *c, const Kernels *k, size_t i) {
  const Step *g = only_gemm(c, k);
  cr_assert(step_is_gemv(g), "case %zu", i);
  cr_assert_null(g->u.gemm.mask.buf, "case %zu", i);
}

/* Where a zero in the vector does not make the GEMM's value irrelevant, or the
 * vector is not along N alone, the GEMV computes every column. */
Test(lower, column_mask_needs_its_pattern) {
  static const char *const CASES[] = {
      /* the unmasked scores are an output too */
      "'s' Einsum hk,k->hk\n  'r' Einsum hc,hkc->hk\n    'q' [4,64] Symbol\n    'past_k' [4,300,64] Symbol\n"
      "  'm' [300] Symbol\n'r_out' Einsum hk->hk\n  'r'\n",
      /* the vector varies over heads and keys */
      "'s' Einsum hc,hkc,hk->hk\n  'q' [4,64] Symbol\n  'past_k' [4,300,64] Symbol\n  'm' [4,300] Symbol\n",
      /* added, not multiplied */
      "'s' Add\n  'r' Einsum hc,hkc->hk\n    'q' [4,64] Symbol\n    'past_k' [4,300,64] Symbol\n  'm' [300] Symbol\n",
  };
  lower_each(CASES, sizeof CASES / sizeof *CASES, unmasked_gemv);
}

/* ------------------------------------------------------------ epilogues */

static int count_epilogues(const Kernels *k) {
  int n = 0;
  for (int i = 0; i < k->nstep; i++) n += step_epilogue(k->step[i]) != NULL;
  return n;
}

/* GPT-2's MLP on `rows` positions: (x·W_in + b_in) → gelu, then ·W_out + b_out + x */
static Comp *lower_mlp(int rows, const char *gelu, Kernels *k) {
  char text[512];
  snprintf(text, sizeof text,
           "'out' Add\n"
           "  'mlp' Add\n"
           "    'down' Einsum sh,oh->so\n"
           "      'act' GeneralFunction %s\n"
           "        'pre' Add\n"
           "          'up' Einsum si,hi->sh\n"
           "            'x' [%d,48] Symbol\n"
           "            'w_in' [96,48] Array rand\n"
           "          'b_in' [96] Array rand\n"
           "      'w_out' [48,96] Array rand\n"
           "    'b_out' [48] Array rand\n"
           "  'x'\n",
           gelu, rows);
  return lower_text(text, k);
}

Test(lower, mlp_bias_activation_and_residual_are_epilogues) {
  Kernels k;
  Comp *c = lower_mlp(32, "gelu", &k);
  cr_assert_eq(count_steps(&k, STEP_GEMM), 2);
  cr_assert_eq(count_steps(&k, STEP_ELEMENTWISE), 0, "%d steps", k.nstep);
  cr_assert_eq(count_epilogues(&k), 2);
  cr_assert_eq(step_epilogue(k.step[1])->out.buf->kind, BUF_OUTPUT, "the residual add writes the output");
  tu_free(c);
}

Test(lower, epilogue_into_another_layout) {
  /* q = x·W as [s, (h c)], its bias add writes [h, s, c]: N splits into h and c */
  Kernels k;
  Comp *c = lower_text("'q_b' Add\n"
                       "  'q' Einsum sd,hcd->hsc\n"
                       "    'x' [40,32] Symbol\n"
                       "    'w' [4,8,32] Array rand\n"
                       "  'b' [4,1,8] Array rand\n",
                       &k);
  cr_assert_eq(k.nstep, 1);
  const Step *g = k.step[0];
  cr_assert_not_null(g->u.gemm.epilogue);
  cr_assert_eq(g->u.gemm.nbatch, 0);
  int h = 0, s = 1, cc = 2; /* the fused step's loop dims are q_b's axes */
  cr_assert_eq(g->u.gemm.epi_src[h], 1);
  cr_assert_eq(g->u.gemm.epi_div[h], 8);
  cr_assert_eq(g->u.gemm.epi_src[s], 0);
  cr_assert_eq(g->u.gemm.epi_src[cc], 1);
  cr_assert_eq(g->u.gemm.epi_div[cc], 1);
  tu_free(c);
}

Test(lower, epilogues_are_fused_by_their_own_pass) {
  /* lower_program leaves the bias add a step of its own; fuse_epilogues moves
   * it into the GEMM, renumbers the steps and keeps the FLOPs */
  Kernels k;
  Comp *c = lower_unfused("'y_b' Add\n"
                          "  'y' Einsum sk,nk->sn\n"
                          "    'x' [32,48] Symbol\n"
                          "    'w' [64,48] Array rand\n"
                          "  'b' [64] Array rand\n",
                          &k);
  cr_assert_eq(k.nstep, 2);
  cr_assert_eq(count_steps(&k, STEP_GEMM), 1);
  cr_assert_eq(count_epilogues(&k), 0);
  double flops = k.flops, gemm_and_add = k.step[0]->flops + k.step[1]->flops;
  cr_assert(fuse_epilogues(c, &k));
  cr_assert_eq(k.nstep, 1);
  cr_assert_not_null(step_epilogue(k.step[0]));
  cr_assert_eq(k.step[0]->flops, gemm_and_add);
  cr_assert_eq(k.flops, flops);
  cr_assert_eq(k.output[0]->def_step, 0, "the output is written by the GEMM");
  tu_free(c);
}

Test(lower, one_row_gemms_take_epilogues_too) {
  /* a decode step's MLP: the GEMVs finish their columns with bias and gelu,
   * and with bias and residual into the output */
  Kernels k;
  Comp *c = lower_mlp(1, "gelu_new", &k);
  cr_assert_eq(k.nstep, 2, "%d steps", k.nstep);
  for (int i = 0; i < 2; i++) {
    cr_assert(step_is_gemv(k.step[i]), "step %d", i);
    cr_assert_not_null(step_epilogue(k.step[i]), "step %d", i);
  }
  cr_assert_eq(step_epilogue(k.step[1])->out.buf->kind, BUF_OUTPUT);
  tu_free(c);
}

static void no_epilogue(Comp *c, const Kernels *k, size_t i) {
  (void)c;
  cr_assert_eq(count_epilogues(k), 0, "case %zu", i);
  cr_assert_geq(count_steps(k, STEP_ELEMENTWISE), 1, "case %zu", i);
}

/* Elementwise steps that must stay steps of their own. */
Test(lower, epilogue_needs_a_sole_reader) {
  static const char *const CASES[] = {
      /* the GEMM result is an output too: two readers */
      "'y' Add\n  'p' Einsum ij,jk->ik\n    'a' [40,30] Symbol\n    'b' [30,50] Symbol\n  'c' [50] Symbol\n"
      "'p2' Einsum ik->ik\n  'p'\n",
      /* the elementwise step reads each GEMM element twice (a broadcast over a new axis) */
      "'y' Einsum ik,r->rik\n  'p' Einsum ij,jk->ik\n    'a' [40,30] Symbol\n    'b' [30,50] Symbol\n"
      "  'r' [3] Symbol\n",
  };
  lower_each(CASES, sizeof CASES / sizeof *CASES, no_epilogue);
}
