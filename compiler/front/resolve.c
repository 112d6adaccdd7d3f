/* resolve.c — from parsed circuits to a concrete program: substitute every
 * Module, bind the remaining symbolic sizes from -D, then check that no
 * symbolic size and no non-evaluable kind remains. The free Symbols that are
 * left become the program's named inputs. Guarantees on success: every node
 * has a concrete shape and is evaluable, or is a DiscreteVar or a Cumulant of
 * one, which the rv stage turns into arithmetic. */
#include <stdlib.h>
#include <string.h>
#include "circc.h"

typedef struct Resolve {
  Comp *c;
  bool *seen;          /* by node id */
  int nseen;
  bool reported[NUM_SYMBOLIC_SIZES];
  bool *index_use;     /* by node id: a Symbol used as a gen_index/explicit_index index */
  Program *prog;
} Resolve;

static void report_symbolic(Resolve *r, const Node *n) {
  for (int d = 0; d < n->shape.rank; d++) {
    int64_t v = n->shape.dim[d];
    if (!size_is_symbolic(v)) continue;
    for (int k = 0; k < NUM_SYMBOLIC_SIZES; k++) {
      int64_t p = symbolic_prime(k);
      if (p > v) break;
      if (v % p || r->reported[k]) continue;
      r->reported[k] = true;
      if (size_name(k))
        diag_error(r->c, n->loc, "%s has shape %s: symbolic size %ds (%s) is not bound by any module; bind it with -D %s=N",
                   node_label(r->c, n), shape_str(r->c, &n->shape), k, size_name(k), size_name(k));
      else
        diag_error(r->c, n->loc, "%s has shape %s: symbolic size %ds is not bound by any module; bind it with -D %ds=N",
                   node_label(r->c, n), shape_str(r->c, &n->shape), k, k);
    }
  }
}

static bool check_enter(Node *n, void *arg) {
  Resolve *r = arg;
  if (n->id < r->nseen && r->seen[n->id]) return false;
  if (n->id < r->nseen) r->seen[n->id] = true;
  return true;
}

/* A node of a resolved circuit, after its children (ir_walk's leave). */
static bool check_node(Node *n, void *arg) {
  Resolve *r = arg;
  Comp *c = r->c;
  report_symbolic(r, n);
  switch (n->kind) {
  case NK_Symbol:
    nodelist_push(c, &r->prog->inputs, n);
    break;
  case NK_StoredCumulantVar:
    diag_error(c, n->loc, "%s is a StoredCumulantVar (a table of cumulants for cumulant-propagation rewrites); "
               "circc estimates Cumulants of DiscreteVars only", node_label(c, n));
    break;
  case NK_Conv:
    diag_error(c, n->loc, "%s is a %s, which circc cannot evaluate", node_label(c, n), kind_name(n->kind));
    break;
  case NK_GeneralFunction:
    if (n->u.gf.fn == GF_GEN_INDEX || n->u.gf.fn == GF_EXPLICIT_INDEX) {
      /* the index may reach the Symbol through views (targets[1:], a reshape, a
       * tag) and gathers (rows of a table of indices, e.g. a streamed dataset's) */
      const Node *ix = n->child[1];
      while (ix->kind == NK_Index || ix->kind == NK_Rearrange || ix->kind == NK_Tag ||
             ix->kind == NK_SetSymbolicShape || (ix->kind == NK_GeneralFunction && ix->u.gf.fn == GF_GEN_INDEX))
        ix = ix->child[0];
      if (ix->kind == NK_Symbol && ix->id < r->nseen) r->index_use[ix->id] = true;
    }
    if (n->u.gf.fn == GF_USER && !n->u.gf.user)
      user_op_missing(c, n);
    else if (n->u.gf.fn == GF_MULTINOMIAL)
      diag_error(c, n->loc, "%s samples ('%s'); circc compiles deterministic circuits only", node_label(c, n),
                 n->u.gf.text);
    break;
  case NK_SetSymbolicShape: {
    /* an input size still symbolic was reported above with the -D that binds it */
    bool unbound = false;
    for (int d = 0; d < n->child[0]->shape.rank; d++) unbound |= size_is_symbolic(n->child[0]->shape.dim[d]);
    if (!unbound && !shape_eq(&n->shape, &n->child[0]->shape))
      diag_error(c, n->loc, "%s requires shape %s but its input has shape %s", node_label(c, n),
                 shape_str(c, &n->shape), shape_str(c, &n->child[0]->shape));
    break;
  }
  case NK_Module: ICE("module survived substitution");
  default: break;
  }
  return true;
}

bool resolve_program(Comp *c, const NodeList *tops, Program *out) {
  memset(out, 0, sizeof *out);
  int errors = diag_error_count(c);
  int n = tops->n;
  Node **roots = ARENA_ARRAY(&c->arena, Node *, n ? n : 1);
  if (n) memcpy(roots, tops->node, sizeof(Node *) * (size_t)n);
  int64_t map[NUM_SYMBOLIC_SIZES];
  if (!sizes_from_defines(c, map) || !modules_substitute_all(c, roots, n) || !sizes_bind(c, roots, n, map))
    return false;

  Resolve r = {.c = c, .prog = out, .nseen = c->next_node_id};
  r.seen = calloc((size_t)r.nseen + 1, 1);
  r.index_use = calloc((size_t)r.nseen + 1, 1);
  if (!r.seen || !r.index_use) ICE("out of memory");
  out->output_names = ARENA_ARRAY(&c->arena, const char *, n ? n : 1);
  for (int i = 0; i < n; i++) {
    ir_walk(roots[i], check_enter, check_node, &r);
    nodelist_push(c, &out->outputs, roots[i]);
    out->output_names[i] = tops->node[i]->name ? tops->node[i]->name : arena_printf(&c->arena, "output%d", i);
  }
  free(r.seen);
  /* A Symbol written twice (same uuid, name and shape) is one input; two
   * different free symbols with one name would make --input ambiguous. The
   * program's input dtypes are fixed here, before simplification may drop uses. */
  int n_in = out->inputs.n, kept = 0;
  out->input_is_index = ARENA_ARRAY(&c->arena, bool, n_in + 1);
  int *order = ir_order_by_name(out->inputs.node, n_in), *kept_at = malloc(sizeof(int) * (size_t)(n_in + 1));
  if (!kept_at) ICE("out of memory");
  Node **first = ARENA_ARRAY(&c->arena, Node *, n_in + 1);   /* the inputs before compaction */
  if (n_in) memcpy(first, out->inputs.node, sizeof(Node *) * (size_t)n_in);
  for (int i = 0; i < n_in; i++) {
    Node *a = first[i];
    int f = a->name ? ir_find_name(first, order, n_in, a->name) : i;   /* the first of this name */
    if (f == i) kept_at[i] = kept, out->inputs.node[kept++] = a;
    else if (!symbol_same(a, first[f]))
      diag_error(c, a->loc, "two different free symbols are named '%s' (shapes %s and %s); inputs need unique names",
                 a->name, shape_str(c, &a->shape), shape_str(c, &first[f]->shape));
    out->input_is_index[kept_at[f]] |= r.index_use[a->id];
  }
  out->inputs.n = kept;
  free(order), free(kept_at);
  free(r.index_use);
  return diag_error_count(c) == errors;
}
