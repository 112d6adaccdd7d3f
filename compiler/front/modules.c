/* modules.c — Module substitution (rust_circuit_format.md §5).
 *
 * Modules are substituted innermost first: a Module's spec and arguments are
 * made module-free, then the spec is rebuilt with each bound Symbol replaced by
 * its argument. Arguments may carry extra leading "batch" dims; every node
 * above them is rebuilt by the expand rules of §5.4 so the result is the vmap
 * of the body over those dims (§5.2). Innermost-first gives lexical scoping
 * for free: an inner module's symbols are gone before an outer module that
 * binds the same symbol is substituted. Symbolic sizes (§5.5) are resolved per
 * module call from the argument shapes; a free Symbol whose size this call
 * resolves is wrapped in SetSymbolicShape, keeping its identity for outer binders. */
#include <stdlib.h>
#include <string.h>
#include "circc.h"
#include "ptrmap.h"

/* ------------------------------------------------------- one module call */

/* A node of the rebuilt body: its value and how many leading batch dims it gained. */
typedef struct Val {
  Node *node;
  int batch;
} Val;

typedef struct Call {
  Comp *c;
  const Node *module;          /* the Module being substituted; NULL for a -D size pass */
  int nargs;
  Node **sym, **val;           /* arg i binds sym[i] to val[i] (module-free) */
  int *val_batch;              /* leading batch dims of val[i] */
  bool *used;
  int64_t map[NUM_SYMBOLIC_SIZES];
  Shape batch;                 /* the module's batch shape B */
  bool rewrite_free_symbols;   /* -D pass: give free Symbols their concrete shape */
  PtrMap memo;
} Call;

static const Val FAILED = {NULL, 0};

static Shape map_shape(const Call *k, const Shape *s) {
  Shape out = *s;
  for (int i = 0; i < s->rank; i++) out.dim[i] = ir_apply_size_map(s->dim[i], k->map);
  return out;
}

static Node *make_from(Comp *c, const Node *like, Node proto) {
  proto.loc = like->loc;
  return ir_make(c, &proto);
}

/* Rearrange that gives v (with r batch dims) `want` batch dims by repeating it
 * over the missing leading dims of B, and inserts `ones` size-1 axes right
 * after the batch dims (§5.4 Add/Concat/GeneralFunction broadcasting). */
static Node *broadcast_batch(Call *k, Node *v, int r, int want, int ones, const char *why) {
  if (r == want && ones == 0) return v;
  Comp *c = k->c;
  int rank = v->shape.rank, add = want - r, nids = rank + add;
  if (want + ones + rank - r > MAX_RANK) {
    diag_error(c, v->loc, "batching %s exceeds the maximum rank %d", node_label(c, v), MAX_RANK);
    return NULL;
  }
  Node p = {.kind = NK_Rearrange, .nchild = 1, .child = &v};
  p.name = v->name ? arena_printf(&c->arena, "%s %s", v->name, why) : NULL;
  RearrangeSpec *s = &p.u.rearrange;
  s->nids = nids;
  s->size = ARENA_ARRAY(&c->arena, int64_t, nids);
  s->nin = rank;
  s->in_len = ARENA_ARRAY(&c->arena, int, rank);
  s->in_ids = ARENA_ARRAY(&c->arena, int *, rank);
  for (int i = 0; i < rank; i++) {
    s->in_len[i] = 1;
    s->in_ids[i] = ARENA_NEW(&c->arena, int);
    s->in_ids[i][0] = i;
    s->size[i] = v->shape.dim[i];
  }
  s->nout = add + ones + rank;
  s->out_len = ARENA_ARRAY(&c->arena, int, s->nout);
  s->out_ids = ARENA_ARRAY(&c->arena, int *, s->nout);
  int o = 0;
  for (int j = 0; j < add; j++, o++) { /* new repeat axes: the leading dims of B's suffix */
    s->out_len[o] = 1;
    s->out_ids[o] = ARENA_NEW(&c->arena, int);
    s->out_ids[o][0] = rank + j;
    s->size[rank + j] = k->batch.dim[k->batch.rank - want + j];
  }
  for (int i = 0; i < rank; i++) {
    if (i == r)
      for (int j = 0; j < ones; j++) s->out_len[o++] = 0; /* () → size-1 axis */
    s->out_len[o] = 1;
    s->out_ids[o] = ARENA_NEW(&c->arena, int);
    s->out_ids[o++][0] = i;
  }
  if (r == rank)
    for (int j = 0; j < ones; j++) s->out_len[o++] = 0;
  return make_from(c, v, p);
}

/* Index of the argument that binds symbol x (the right-most binding wins), or -1. */
static int bound_arg(Call *k, const Node *x) {
  for (int i = k->nargs - 1; i >= 0; i--) {
    const Node *s = k->sym[i];
    if (symbol_same(s, x)) return i;
    if (symbol_same_id(s, x)) {
      diag_error(k->c, x->loc, "symbol %s has shape %s here but %s where module %s binds it", node_label(k->c, x),
                 shape_str(k->c, &x->shape), shape_str(k->c, &s->shape), node_label(k->c, k->module));
      return -2;
    }
  }
  return -1;
}

/* Leaves: bound symbols become their argument; sizes this call resolves are substituted. */
static Val walk_leaf(Call *k, Node *x) {
  Comp *c = k->c;
  if (x->kind == NK_Symbol) {
    int i = bound_arg(k, x);
    if (i == -2) return FAILED;
    if (i >= 0) {
      k->used[i] = true;
      return (Val){k->val[i], k->val_batch[i]};
    }
  }
  if (x->kind != NK_Symbol && x->kind != NK_Scalar) return (Val){x, 0};
  Shape s = map_shape(k, &x->shape);
  if (shape_eq(&s, &x->shape)) return (Val){x, 0};
  Node p = *x;
  p.shape = s;
  if (x->kind == NK_Scalar || k->rewrite_free_symbols) return (Val){make_from(c, x, p), 0};
  /* A free symbol keeps its identity (an outer module may bind it); its size is pinned here. */
  Node q = {.kind = NK_SetSymbolicShape, .shape = s, .nchild = 1, .child = &x};
  return (Val){make_from(c, x, q), 0};
}

/* Einsum (§5.4): fresh ids for the batch dims, prepended to the output; each
 * operand with r batch dims gets the last r of them. */
static Node *expand_einsum(Call *k, Node *x, Node **ch, const int *r, int br) {
  Comp *c = k->c;
  const EinsumSpec *e = &x->u.einsum;
  int fresh = 0;
  for (int i = 0; i < x->nchild; i++)
    for (int j = 0; j < e->in_rank[i]; j++)
      if (e->in[i][j] >= fresh) fresh = e->in[i][j] + 1;
  Node p = *x;
  p.child = ch;
  EinsumSpec *n = &p.u.einsum;
  n->in = ARENA_ARRAY(&c->arena, int *, x->nchild);
  n->in_rank = ARENA_ARRAY(&c->arena, int, x->nchild);
  for (int i = 0; i < x->nchild; i++) {
    n->in_rank[i] = e->in_rank[i] + r[i];
    n->in[i] = ARENA_ARRAY(&c->arena, int, n->in_rank[i]);
    for (int j = 0; j < r[i]; j++) n->in[i][j] = fresh + br - r[i] + j;
    memcpy(n->in[i] + r[i], e->in[i], sizeof(int) * (size_t)e->in_rank[i]);
  }
  n->out_rank = e->out_rank + br;
  n->out = ARENA_ARRAY(&c->arena, int, n->out_rank);
  for (int j = 0; j < br; j++) n->out[j] = fresh + j;
  memcpy(n->out + br, e->out, sizeof(int) * (size_t)e->out_rank);
  return make_from(c, x, p);
}

/* Rearrange: the batch dims become new leading ids on both sides. */
static Node *expand_rearrange(Call *k, Node *x, Node *child, int br) {
  Comp *c = k->c;
  const RearrangeSpec *s = &x->u.rearrange;
  Node p = *x;
  p.child = &child;
  RearrangeSpec *n = &p.u.rearrange;
  n->nids = s->nids + br;
  n->size = ARENA_ARRAY(&c->arena, int64_t, n->nids);
  n->written_size = NULL;
  for (int i = 0; i < s->nids; i++)
    n->size[i] = s->written_size[i] < 0 ? -1 : ir_apply_size_map(s->written_size[i], k->map);
  n->nin = s->nin + br;
  n->nout = s->nout + br;
  n->in_len = ARENA_ARRAY(&c->arena, int, n->nin);
  n->in_ids = ARENA_ARRAY(&c->arena, int *, n->nin);
  n->out_len = ARENA_ARRAY(&c->arena, int, n->nout);
  n->out_ids = ARENA_ARRAY(&c->arena, int *, n->nout);
  for (int j = 0; j < br; j++) {
    int id = s->nids + j;
    n->size[id] = child->shape.dim[j];
    n->in_len[j] = n->out_len[j] = 1;
    n->in_ids[j] = n->out_ids[j] = ARENA_NEW(&c->arena, int);
    n->in_ids[j][0] = id;
  }
  memcpy(n->in_len + br, s->in_len, sizeof(int) * (size_t)s->nin);
  memcpy(n->in_ids + br, s->in_ids, sizeof(int *) * (size_t)s->nin);
  memcpy(n->out_len + br, s->out_len, sizeof(int) * (size_t)s->nout);
  memcpy(n->out_ids + br, s->out_ids, sizeof(int *) * (size_t)s->nout);
  return make_from(c, x, p);
}

/* Index / Scatter: a full slice for each batch dim (Scatter's shape gains them too). */
static Node *expand_index(Call *k, Node *x, Node *child, int br) {
  Comp *c = k->c;
  Node p = *x;
  p.child = &child;
  p.u.index.n = x->u.index.n + br;
  p.u.index.e = ARENA_ARRAY(&c->arena, IndexEntry, p.u.index.n);
  for (int j = 0; j < br; j++) p.u.index.e[j].kind = IDX_SLICE;
  memcpy(p.u.index.e + br, x->u.index.e, sizeof(IndexEntry) * (size_t)x->u.index.n);
  if (x->kind == NK_Scatter) {
    Shape s = map_shape(k, &x->shape);
    p.shape.rank = br + s.rank;
    memcpy(p.shape.dim, child->shape.dim, sizeof(int64_t) * (size_t)br);
    memcpy(p.shape.dim + br, s.dim, sizeof(int64_t) * (size_t)s.rank);
  }
  return make_from(c, x, p);
}

/* Rebuilds node x whose children became ch (with batch ranks r), per §5.4. */
static Node *expand(Call *k, Node *x, Node **ch, int *r, int br) {
  Comp *c = k->c;
  Node p = *x;
  p.child = ch;
  switch (x->kind) {
  case NK_Einsum: return br ? expand_einsum(k, x, ch, r, br) : make_from(c, x, p);
  case NK_Rearrange:
    if (br) return expand_rearrange(k, x, ch[0], br);
    p.u.rearrange.size = ARENA_ARRAY(&c->arena, int64_t, x->u.rearrange.nids);
    for (int i = 0; i < x->u.rearrange.nids; i++) {
      int64_t w = x->u.rearrange.written_size[i];
      p.u.rearrange.size[i] = w < 0 ? -1 : ir_apply_size_map(w, k->map);
    }
    p.u.rearrange.written_size = NULL;
    return make_from(c, x, p);
  case NK_Index:
  case NK_Scatter:
    if (br) return expand_index(k, x, ch[0], br);
    if (x->kind == NK_Scatter) p.shape = map_shape(k, &x->shape);
    return make_from(c, x, p);
  case NK_Add:
    /* batched operands of lower rank get size-1 axes after their batch dims, so
     * broadcasting lines batch dims up with batch dims */
    for (int i = 0; i < x->nchild; i++) {
      int nonbatch = ch[i]->shape.rank - r[i];
      if (r[i] > 0 && nonbatch < x->shape.rank)
        if (!(ch[i] = broadcast_batch(k, ch[i], r[i], r[i], x->shape.rank - nonbatch, "unsq_b_add"))) return NULL;
    }
    return make_from(c, x, p);
  case NK_Concat:
    for (int i = 0; i < x->nchild; i++)
      if (!(ch[i] = broadcast_batch(k, ch[i], r[i], br, 0, "rep_for_batch"))) return NULL;
    p.u.concat.axis = x->u.concat.axis + br;
    return make_from(c, x, p);
  case NK_SetSymbolicShape: {
    Shape s = map_shape(k, &x->shape);
    p.shape.rank = br + s.rank;
    memcpy(p.shape.dim, ch[0]->shape.dim, sizeof(int64_t) * (size_t)br);
    memcpy(p.shape.dim + br, s.dim, sizeof(int64_t) * (size_t)s.rank);
    return make_from(c, x, p);
  }
  case NK_Tag: return make_from(c, x, p);
  case NK_GeneralFunction: {
    const GenFnSpec *g = &x->u.gf;
    if (br == 0 || genfn_class(g->fn) != GF_SPECIAL || g->fn == GF_CAST) return make_from(c, x, p);
    /* --ops functions act per element or per row, so batch dims pass through;
     * a general one of one child with its child's shape takes leading batch
     * dims (as rust_circuit's batchable GeneralFunctions do, e.g. rotary) */
    const UserOp *u = g->fn == GF_USER ? g->user : NULL;
    if (u && (u->form == OP_UNARY || u->form == OP_ROW || (u->form == OP_GENERAL && x->nchild == 1 && u->shape.rank < 0)))
      return make_from(c, x, p);
    if (g->fn == GF_POW || (u && u->form == OP_BINARY)) {
      for (int i = 0; i < 2; i++) {
        int nonbatch = ch[i]->shape.rank - r[i];
        if (r[i] > 0 && nonbatch < x->shape.rank)
          if (!(ch[i] = broadcast_batch(k, ch[i], r[i], r[i], x->shape.rank - nonbatch, "unsq_b_pow"))) return NULL;
      }
      return make_from(c, x, p);
    }
    bool x_batchable = g->fn == GF_EXPLICIT_INDEX || g->batch_x;
    bool idx_batchable = g->fn == GF_EXPLICIT_INDEX || g->batch_index;
    if (g->fn == GF_GEN_INDEX || g->fn == GF_EXPLICIT_INDEX) {
      if ((r[0] && !x_batchable) || (r[1] && !idx_batchable)) {
        diag_error(c, x->loc, "GeneralFunction %s (%s): its %s cannot be batched by a module (argument of %s)",
                   node_label(c, x), g->text, r[0] && !x_batchable ? "input x" : "index", node_label(c, k->module));
        return NULL;
      }
      /* when both are batched they share the batch dims: broadcast both to the full batch */
      if (x_batchable && idx_batchable)
        for (int i = 0; i < 2; i++)
          if (!(ch[i] = broadcast_batch(k, ch[i], r[i], br, 0, "rep_for_batch"))) return NULL;
      return make_from(c, x, p);
    }
    diag_error(c, x->loc, "GeneralFunction %s (%s) cannot be batched by module %s", node_label(c, x), g->text,
               node_label(c, k->module));
    return NULL;
  }
  default:
    if (br == 0) return make_from(c, x, p);
    diag_error(c, x->loc, "%s %s cannot be batched by module %s", kind_name(x->kind), node_label(c, x),
               node_label(c, k->module));
    return NULL;
  }
}

static bool params_change(const Call *k, const Node *x) {
  if (x->kind == NK_Rearrange) {
    for (int i = 0; i < x->u.rearrange.nids; i++) {
      int64_t w = x->u.rearrange.written_size[i];
      if (w >= 0 && ir_apply_size_map(w, k->map) != w) return true;
    }
  }
  if (x->kind == NK_Scatter || x->kind == NK_SetSymbolicShape) {
    Shape s = map_shape(k, &x->shape);
    return !shape_eq(&s, &x->shape);
  }
  return false;
}

static bool walk_enter(Node *x, void *arg) {
  Call *k = arg;
  if (ptrmap_find(&k->memo, x)) return false;
  if (x->kind == NK_Module) ICE("module substitution met a Module inside a module-free body");
  return true;
}

/* x in the call, from its children's (ir_walk's leave): memoised; false on failure. */
static bool walk_node(Node *x, void *arg) {
  Call *k = arg;
  Val out;
  if (x->nchild == 0) {
    out = walk_leaf(k, x);
  } else {
    Node **ch = ARENA_ARRAY(&k->c->arena, Node *, x->nchild);
    int *r = ARENA_ARRAY(&k->c->arena, int, x->nchild), br = 0;
    bool changed = params_change(k, x);
    for (int i = 0; i < x->nchild; i++) {
      const PtrMapEntry *m = ptrmap_find(&k->memo, x->child[i]);
      ch[i] = m->ptr;
      r[i] = m->num;
      if (r[i] > br) br = r[i];
      if (ch[i] != x->child[i]) changed = true;
    }
    int first_new = k->c->next_node_id;
    out = (Val){changed ? expand(k, x, ch, r, br) : x, changed ? br : 0};
    if (out.node && out.node->id >= first_new && x->name && k->module && k->module->name)
      /* the copy of a named node in this call: its path gains the call's name (§5.7; taps.c) */
      out.node->path = arena_printf(&k->c->arena, "%s/%s", k->module->name, x->path ? x->path : x->name);
  }
  if (!out.node) return false;
  PtrMapEntry *put = ptrmap_get(&k->memo, x);
  put->ptr = out.node;
  put->num = out.batch;
  return true;
}

/* x rewritten by the call (FAILED after an error). */
static Val walk(Call *k, Node *x) {
  if (!ir_walk(x, walk_enter, walk_node, k)) return FAILED;
  const PtrMapEntry *m = ptrmap_find(&k->memo, x);
  return (Val){m->ptr, m->num};
}

/* ---------------------------------------------------------- substitution */

typedef struct Subst {
  Comp *c;
  PtrMap done; /* original node -> module-free node */
} Subst;

/* Substitutes module M whose spec and args are already module-free. */
static Node *substitute_module(Subst *s, Node *mod, Node *spec, Node **args) {
  Comp *c = s->c;
  int nargs = module_nargs(mod);
  Call k = {.c = c, .module = mod, .nargs = nargs};
  k.sym = ARENA_ARRAY(&c->arena, Node *, nargs);
  k.val = args;
  k.val_batch = ARENA_ARRAY(&c->arena, int, nargs);
  k.used = ARENA_ARRAY(&c->arena, bool, nargs);
  for (int i = 0; i < NUM_SYMBOLIC_SIZES; i++) k.map[i] = -1;
  /* the Module node was validated by ir_make; bindings and B follow from it */
  for (int i = 0; i < nargs; i++) {
    Node *sym = mod->u.module.arg[i].symbol, *v = args[i];
    k.sym[i] = sym;
    k.val_batch[i] = v->shape.rank - sym->shape.rank;
    for (int d = 0; d < sym->shape.rank; d++)
      if (size_is_symbolic(sym->shape.dim[d]) && !ir_bind_symbolic(sym->shape.dim[d], v->shape.dim[k.val_batch[i] + d], k.map)) {
        diag_error(c, mod->u.module.arg[i].loc, "module %s: argument %s of shape %s conflicts with symbol %s %s",
                   node_label(c, mod), node_label(c, v), shape_str(c, &v->shape), node_label(c, sym),
                   shape_str(c, &sym->shape));
        return NULL;
      }
    for (int d = 0; d < k.val_batch[i]; d++) {
      int from_right = k.val_batch[i] - d;
      if (from_right > k.batch.rank) {
        int grow = from_right - k.batch.rank;
        memmove(k.batch.dim + grow, k.batch.dim, sizeof(int64_t) * (size_t)k.batch.rank);
        k.batch.rank += grow;
      }
      k.batch.dim[k.batch.rank - from_right] = v->shape.dim[d];
    }
  }
  Val body = walk(&k, spec);
  ptrmap_free(&k.memo);
  if (!body.node) return NULL;
  if (c->check_all_inputs_used)
    for (int i = 0; i < nargs; i++)
      if (!k.used[i]) {
        diag_error(c, mod->u.module.arg[i].loc, "module %s binds symbol %s, which does not occur in its spec %s",
                   node_label(c, mod), node_label(c, k.sym[i]), node_label(c, mod->child[0]));
        return NULL;
      }
  /* an unused or partially used batch: broadcast the body to B ++ body */
  Node *out = broadcast_batch(&k, body.node, body.batch, k.batch.rank, 0, "rep_batch");
  if (!out) return NULL;
  if (out->kind != NK_Symbol) { /* the result takes the Module's name (§5.7) */
    Node p = *out;
    p.name = mod->name;
    p.path = NULL; /* the module's value: named by the call */
    if (p.kind == NK_Rearrange) p.u.rearrange.size = out->u.rearrange.written_size;
    if (!(out = make_from(c, out, p))) return NULL;
  }
  if (!shape_eq(&out->shape, &mod->shape)) {
    diag_error_class(c, DIAG_INTERNAL, mod->loc, "substituting module %s gave shape %s, but the module has shape %s",
                     node_label(c, mod), shape_str(c, &out->shape), shape_str(c, &mod->shape));
    return NULL;
  }
  return out;
}

static bool subst_enter(Node *x, void *arg) { return !ptrmap_find(&((Subst *)arg)->done, x); }

/* x without Modules, from its children's (ir_walk's leave); false on failure. */
static bool subst_node(Node *x, void *arg) {
  Subst *s = arg;
  Node **ch = x->nchild ? ARENA_ARRAY(&s->c->arena, Node *, x->nchild) : NULL;
  bool changed = false;
  for (int i = 0; i < x->nchild; i++) {
    ch[i] = ptrmap_find(&s->done, x->child[i])->ptr;
    changed |= ch[i] != x->child[i];
  }
  Node *out = x;
  if (x->kind == NK_Module) out = substitute_module(s, x, ch[0], ch + 1);
  else if (changed) out = ir_with_children(s->c, x, ch, x->nchild);
  if (!out) return false;
  ptrmap_get(&s->done, x)->ptr = out;
  return true;
}

static Node *subst(Subst *s, Node *x) {
  return ir_walk(x, subst_enter, subst_node, s) ? ptrmap_find(&s->done, x)->ptr : NULL;
}

bool modules_substitute_all(Comp *c, Node **roots, int n) {
  Subst s = {c, {0}};
  bool ok = true;
  for (int i = 0; i < n; i++) {
    Node *r = subst(&s, roots[i]);
    if (r) roots[i] = r;
    else ok = false;
  }
  ptrmap_free(&s.done);
  return ok;
}

bool modules_bind_sizes(Comp *c, Node **roots, int n, const int64_t *map) {
  Call k = {.c = c, .rewrite_free_symbols = true};
  memcpy(k.map, map, sizeof k.map);
  bool ok = true;
  for (int i = 0; i < n; i++) {
    Val v = walk(&k, roots[i]);
    if (v.node) roots[i] = v.node;
    else ok = false;
  }
  ptrmap_free(&k.memo);
  return ok;
}
