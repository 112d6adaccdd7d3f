/* positions.c — the position tables of language-model programs, checked after
 * resolve. A program's `pos` input (a decode circuit: inputs token, pos,
 * kv_mask, past_k, past_v) takes the positions 0..T-1 of its cache of length
 * T (kv_mask's), and a `positions` input [..., N] the positions 0..N-1 of its
 * sequence (README, GPT-2): rt_generate and the documented calls feed them so.
 * A table such an input indexes (gen_index_at_<d>) with fewer than T (N) rows
 * along d would fail at run time once a position reaches its end, so it is a
 * compile-time error naming the table, its size and the -D that set the length. */
#include <stdlib.h>
#include <string.h>
#include "circc.h"
#include "ptrmap.h"

static const Node *input_named(const Program *p, const char *name) {
  for (int i = 0; i < p->inputs.n; i++)
    if (p->inputs.node[i]->name && !strcmp(p->inputs.node[i]->name, name)) return p->inputs.node[i];
  return NULL;
}

/* The -D that gave the length, if one did. */
static const SizeDefine *define_of(Comp *c, int64_t len) {
  for (int i = 0; i < c->ndefines; i++)
    if (c->defines[i].value == len) return &c->defines[i];
  return NULL;
}

/* One gen_index of table x by the position input pos, whose values run to len - 1. */
static bool check_lookup(Comp *c, const Node *g, const Node *pos, int64_t len) {
  const Node *x = g->child[0];
  int d = g->u.gf.dim < 0 ? g->u.gf.dim + x->shape.rank : g->u.gf.dim;
  if (d < 0 || d >= x->shape.rank || x->shape.dim[d] >= len) return true;
  const SizeDefine *def = define_of(c, len);
  const char *fix = def ? arena_printf(&c->arena, "-D %s=%lld: bind %s to at most %lld", def->name, (long long)len,
                                       def->name, (long long)x->shape.dim[d])
                        : arena_printf(&c->arena, "compile a length of at most %lld", (long long)x->shape.dim[d]);
  diag_error(c, x->loc, "%s %s has %lld positions along axis %d, but input '%s' takes the positions 0..%lld of a "
             "sequence of %lld; %s", node_label(c, x), shape_str(c, &x->shape), (long long)x->shape.dim[d], d,
             pos->name, (long long)len - 1, (long long)len, fix);
  diag_note(c, g->loc, "%s indexes it by '%s' here", node_label(c, g), pos->name);
  return false;
}

bool positions_check(Comp *c, const Program *p) {
  const Node *pos = NULL;
  int64_t len = 0;
  const Node *mask = input_named(p, "kv_mask");
  if (input_named(p, "token") && input_named(p, "past_k") && input_named(p, "past_v") && mask &&
      mask->shape.rank == 1 && (pos = input_named(p, "pos"))) {
    len = mask->shape.dim[0];
  } else if ((pos = input_named(p, "positions")) && pos->shape.rank >= 1) {
    len = pos->shape.dim[pos->shape.rank - 1];
  } else {
    return true;
  }
  bool ok = true;
  PtrMap seen = {0};
  int cap = p->outputs.n + 64, n = 0;
  const Node **stack = malloc((size_t)cap * sizeof *stack);
  CHECK(stack);
  for (int i = 0; i < p->outputs.n; i++) stack[n++] = p->outputs.node[i];
  while (n) {
    const Node *x = stack[--n];
    PtrMapEntry *e = ptrmap_get(&seen, x);
    if (e->flag) continue;
    e->flag = true;
    if (x->kind == NK_GeneralFunction && x->u.gf.fn == GF_GEN_INDEX && x->u.gf.batch_index && !x->u.gf.batch_x &&
        x->nchild == 2 && x->child[1] == pos)
      ok &= check_lookup(c, x, pos, len);
    if (n + x->nchild > cap) {
      cap = 2 * (n + x->nchild);
      CHECK((stack = realloc(stack, (size_t)cap * sizeof *stack)));
    }
    for (int k = 0; k < x->nchild; k++) stack[n++] = x->child[k];
  }
  free(stack);
  ptrmap_free(&seen);
  return ok;
}
