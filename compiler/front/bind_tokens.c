/* bind_tokens.c — --bind-tokens: the binding REMIX writes by hand around a
 * model file's t.bind_w (model_files.md §5), so that the program's only input
 * is `tokens` [SEQ] int64 and its only output `logits` [SEQ, V].
 *
 * A step of the parse stage, not a stage of its own: the binding is more
 * circuit text, parsed with the file's top-level circuits and the model
 * library as reference circuits (as rust_circuit code builds it over the
 * loaded dict), and its one top-level circuit replaces the file's. What the
 * later stages see is an ordinary parsed circuit. */
#include <stdlib.h>
#include <string.h>
#include "circc.h"

/* The Symbol of the tokens: a UUID of circc's own (REMIX's token Symbols are
 * made in Python, each with a fresh one). */
static const char TOKENS_UUID[] = "6f8e5c0a-3b1d-4e2f-9a7c-0d5b1e2f3a4c";

static const char *const FILE_CIRCUITS[] = {"t.w.tok_embeds", "t.w.pos_embeds", "t.bind_w"};
enum { TOK_EMBEDS, POS_EMBEDS, BIND_W, NFILE };

static Node *top_named(const NodeList *tops, const char *name) {
  for (int i = 0; i < tops->n; i++)
    if (tops->node[i]->name && !strcmp(tops->node[i]->name, name)) return tops->node[i];
  return NULL;
}

static bool library_has(const ModelLibrary *lib, const char *name) {
  for (int i = 0; i < lib->refs.n; i++)
    if (!strcmp(lib->refs.name[i], name)) return true;
  return false;
}

/* The attention mask a.mask is bound to: REMIX's t.a.c.causal_mask, an Array
 * [seq,seq] float32 with 1 where query >= key. Built in memory (no tensor
 * store); its hash is the tensor's, so the node is an ordinary loaded Array. */
static Node *causal_mask(Comp *c, int64_t seq, Loc loc) {
  Shape s = {2, {seq, seq}};
  Tensor *t = tensor_new(c, DT_F32, &s);
  float *v = t->data;
  for (int64_t q = 0; q < seq; q++)
    for (int64_t k = 0; k < seq; k++) v[q * seq + k] = q >= k;
  tensor_hash_hex(t, t->hash_hex);
  Node proto = {.kind = NK_Array, .loc = loc, .name = "t.a.c.causal_mask", .shape = s};
  proto.u.array.tensor = t;
  proto.u.array.shape_loc = proto.u.array.prefix_loc = loc;
  proto.u.array.label = proto.name;
  return ir_make(c, &proto);
}

bool bind_tokens(Comp *c, const SourceFile *src, const ModelLibrary *lib, NodeList *tops) {
  Loc at = {src->name, 1, 1};
  if (!lib->present) {
    diag_error(c, at, "--bind-tokens needs a rust_circuit model file: the first line is not '# info:{json}'");
    return false;
  }
  const ModelParams *p = &lib->params;
  const char *pos_enc = p->pos_enc_type ? p->pos_enc_type : "none"; /* null: rust_circuit adds no positions */
  bool gpt = !strcmp(pos_enc, "gpt"), shortformer = !strcmp(pos_enc, "shortformer");
  Node *file[NFILE];
  bool ok = true;
  for (int i = 0; i < NFILE; i++) {
    file[i] = top_named(tops, FILE_CIRCUITS[i]);
    if (!file[i] && (i != POS_EMBEDS || gpt || shortformer)) {
      diag_error(c, at, "--bind-tokens: the model file defines no top-level '%s' (it needs t.w.tok_embeds, %st.bind_w)",
                 FILE_CIRCUITS[i], gpt || shortformer ? "t.w.pos_embeds and " : "");
      ok = false;
    }
  }
  if (!ok) return false;
  if (shortformer != library_has(lib, "a.pos_input")) {
    diag_error(c, at, "--bind-tokens: pos_enc_type %s with attn_pos %s: %s", pos_enc, p->attn_pos ? "true" : "false",
               shortformer ? "shortformer positions need a.pos_input, which only attn_pos true builds"
                           : "a.pos_input would stay unbound (only shortformer binds it)");
    return false;
  }

  int64_t size[NUM_SYMBOLIC_SIZES];
  if (!sizes_from_defines(c, size)) return false;
  int64_t seq = size[1];
  if (seq < 0) {
    diag_error_class(c, DIAG_USAGE, NO_LOC, "--bind-tokens needs the sequence length: give -D SEQ=N");
    return false;
  }
  const Node *tok = file[TOK_EMBEDS], *pos = file[POS_EMBEDS];
  if (tok->shape.rank != 2) {
    diag_error(c, tok->loc, "--bind-tokens: t.w.tok_embeds has shape %s; it must be [VOCAB, HIDDEN]",
               shape_str(c, &tok->shape));
    return false;
  }
  if ((gpt || shortformer) && (pos->shape.rank != 2 || pos->shape.dim[0] < seq)) {
    diag_error(c, pos->loc, "--bind-tokens -D SEQ=%lld: t.w.pos_embeds has shape %s, %s", (long long)seq,
               shape_str(c, &pos->shape),
               pos->shape.rank != 2 ? "not [POSITIONS, HIDDEN]" : "fewer positions than the sequence is long");
    return false;
  }

  /* the reference circuits: the mask, the file's top-level circuits, then the
   * library's (a name the file defines is the file's) */
  Node *mask = p->causal_mask == 1 ? causal_mask(c, seq, at) : NULL;
  if (p->causal_mask == 1 && !mask) return false;
  int cap = 1 + tops->n + lib->refs.n;
  RefCircuits refs = {ARENA_ARRAY(&c->arena, const char *, cap), ARENA_ARRAY(&c->arena, Node *, cap), 0};
  if (mask) refs.name[refs.n] = mask->name, refs.node[refs.n++] = mask;
  for (int i = 0; i < tops->n; i++)
    if (tops->node[i]->name) refs.name[refs.n] = tops->node[i]->name, refs.node[refs.n++] = tops->node[i];
  for (int i = 0; i < lib->refs.n; i++)
    if (!top_named(tops, lib->refs.name[i]))
      refs.name[refs.n] = lib->refs.name[i], refs.node[refs.n++] = lib->refs.node[i];

  /* the binding (model_files.md §5): TransformerInfo.bind_to_input's names */
  char *text = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&text, &len);
  if (!f) ICE("open_memstream failed");
  long long n = (long long)seq;
  const char *in = gpt ? "    " : "  "; /* gpt: the embeddings are the children of t.inp_tok_pos */
  fprintf(f, "'logits' Module\n  't.bind_w'\n");
  if (gpt) fprintf(f, "  't.inp_tok_pos' Add ! 't.input'\n");
  fprintf(f, "%s'tok_embeds' GeneralFunction gen_index_at_0_c%s\n", in, gpt ? "" : " ! 't.input'");
  fprintf(f, "%s  't.w.tok_embeds'\n%s  'tokens' [%lld] Symbol %s\n", in, in, n, TOKENS_UUID);
  if (gpt || shortformer)
    fprintf(f, "%s't.w.pos_embeds_idxed' Index [0:%lld,:]%s\n%s  't.w.pos_embeds'\n", in, n,
            shortformer ? " ! 'a.pos_input'" : "", in);
  if (mask) fprintf(f, "  't.a.c.causal_mask' ! 'a.mask'\n");
  else fprintf(f, "  't.a.c.full_mask' [%lld,%lld] Scalar 1 ! 'a.mask'\n", n, n);
  fclose(f);
  const char *name = arena_printf(&c->arena, "%s (--bind-tokens)", src->name);
  const char *kept = arena_strndup(&c->arena, text, len);
  free(text);
  NodeList bound = {0};
  if (!parse_text(c, name, kept, len, &refs, &bound)) return false;
  *tops = bound;
  return true;
}
