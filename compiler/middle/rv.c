/* rv.c — the rv stage (design.md §1, random_variables.md): the one place that
 * knows about random variables. A resolved program whose circuits contain
 * DiscreteVars becomes an expectation program:
 *
 *  - groups: DiscreteVars whose probs_and_group children are structurally
 *    identical (circc's hash covers kind, parameters, children and name, the
 *    same equivalence as rust_circuit's) share one row index per sample;
 *    groups are numbered by first appearance in a pre-order walk of the
 *    outputs; probabilities are evaluated and checked here;
 *  - passes: a Cumulant whose arguments contain a DiscreteVar (outside nested
 *    Cumulants) is estimated from samples. Pass j computes, for B samples at a
 *    time, the arguments of the Cumulants nested j deep; earlier passes'
 *    estimates are its inputs. Each pass is an ordinary batch circuit: every
 *    DiscreteVar becomes a Symbol bound, through a Module, to the gather
 *    values[idx] of its group's row-index input idx [B]; module substitution
 *    (modules.c) then vmaps the body over the sample axis;
 *  - post: the program's outputs with every estimated Cumulant replaced by an
 *    input holding its estimate.
 *
 * The runtime (rt_expect.c) draws the indices, runs the passes, reduces the
 * per-sample values into cumulants and runs the post circuit. A program with
 * no DiscreteVar is left exactly as it was. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "circc.h"
#include "ptrmap.h"

/* ---------------------------------------------------------------- groups */

static uint64_t mix64(uint64_t z) {
  z ^= z >> 30;
  z *= 0xbf58476d1ce4e5b9ULL;
  z ^= z >> 27;
  z *= 0x94d049bb133111ebULL;
  return z ^ z >> 31;
}

/* random_variables.md §4.4: key = mix64(hi ^ mix64(lo)), hi and lo the UUID's
 * bytes 0..7 and 8..15 read big-endian (its hex digits in order). */
uint64_t rv_uuid_key(const char *uuid) {
  uint64_t half[2] = {0, 0};
  int digits = 0;
  for (const char *p = uuid; *p && digits < 32; p++) {
    int v = *p >= '0' && *p <= '9' ? *p - '0' : *p >= 'a' && *p <= 'f' ? *p - 'a' + 10 : *p >= 'A' && *p <= 'F' ? *p - 'A' + 10 : -1;
    if (v < 0) continue;
    half[digits / 16] = half[digits / 16] << 4 | (uint64_t)v;
    digits++;
  }
  return mix64(half[0] ^ mix64(half[1]));
}

typedef struct Walk {
  Comp *c;
  RvGroups *g;
  PtrMap seen;
  bool ok;
} Walk;

static bool unfixed(const Node *n) {
  return n->kind == NK_DiscreteVar || n->kind == NK_Symbol || n->kind == NK_StoredCumulantVar;
}

static bool unfixed_enter(Node *n, void *seen) {
  PtrMapEntry *e = ptrmap_get(seen, n);
  if (e->flag) return false;
  e->flag = true;
  if (!unfixed(n)) return true;
  e->ptr = n;
  return false;
}

static bool unfixed_leave(Node *n, void *seen) {
  const void *found = NULL;
  for (int i = 0; i < n->nchild && !found; i++) found = ptrmap_find(seen, n->child[i])->ptr;
  ptrmap_get(seen, n)->ptr = (void *)found;
  return true;
}

/* The first random variable or free Symbol below n (itself, or its children's first in order), or NULL. */
static const Node *first_unfixed(PtrMap *seen, Node *n) {
  ir_walk(n, unfixed_enter, unfixed_leave, seen);
  return ptrmap_find(seen, n)->ptr;
}

/* values and probs are constants: no random variable or free Symbol below them. */
static bool check_constant(Walk *w, const Node *var, Node *x, const char *what) {
  PtrMap seen = {0};
  const Node *bad = first_unfixed(&seen, x);
  ptrmap_free(&seen);
  if (!bad) return true;
  diag_error(w->c, bad->loc, "%s is below the %s of DiscreteVar %s; a DiscreteVar's values and probabilities must be constants",
             node_label(w->c, bad), what, node_label(w->c, var));
  return false;
}

/* Evaluates a group's probabilities and checks them: finite, >= 0, sum > 0. */
static bool group_probs(Walk *w, RvGroup *g) {
  Comp *c = w->c;
  const Node *p = g->node;
  Eval *e = eval_new(c);
  Tensor *t = eval_node(e, p);
  bool ok = t != NULL;
  if (ok) {
    g->size = p->shape.dim[0];
    g->probs = ARENA_ARRAY(&c->arena, double, g->size ? g->size : 1);
    double sum = 0;
    g->uniform = true;
    for (int64_t i = 0; i < g->size && ok; i++) {
      double v = tensor_get_f64(t, i);
      g->probs[i] = v;
      if (!isfinite(v) || v < 0) {
        diag_error(c, p->loc, "probability %lld of group %s is %g; probabilities must be finite and >= 0", (long long)i,
                   node_label(c, p), v);
        ok = false;
      }
      sum += v;
      g->uniform &= memcmp(&g->probs[i], &g->probs[0], sizeof(double)) == 0;
    }
    if (ok && !(sum > 0)) {
      diag_error(c, p->loc, "the probabilities of group %s sum to %g; at least one must be positive", node_label(c, p), sum);
      ok = false;
    }
  }
  eval_free(e);
  return ok;
}

static int group_index(const RvGroups *g, const Node *probs) {
  for (int i = 0; i < g->n; i++)
    if (g->g[i].node == probs || g->g[i].node->hash == probs->hash) return i;
  return -1;
}

static void add_var(Walk *w, Node *var) {
  Comp *c = w->c;
  Node *probs = var->child[1];
  int gi = group_index(w->g, probs);
  if (gi < 0) {
    bool values_ok = check_constant(w, var, var->child[0], "values"); /* both reported */
    bool probs_ok = check_constant(w, var, probs, "probabilities");
    if (!values_ok || !probs_ok) {
      w->ok = false;
      return;
    }
    RvGroups *gs = w->g;
    if (gs->n == gs->cap) {
      gs->cap = gs->cap ? 2 * gs->cap : 4;
      RvGroup *grown = ARENA_ARRAY(&c->arena, RvGroup, gs->cap);
      if (gs->n) memcpy(grown, gs->g, sizeof(RvGroup) * (size_t)gs->n);
      gs->g = grown;
    }
    RvGroup *g = &gs->g[gs->n];
    *g = (RvGroup){.node = probs, .name = probs->name, .tagged = probs->kind == NK_Tag};
    g->key = g->tagged ? rv_uuid_key(probs->u.tag.uuid) : probs->hash;
    if (!group_probs(w, g)) {
      w->ok = false;
      return;
    }
    gi = gs->n++;
  } else if (!check_constant(w, var, var->child[0], "values")) {
    w->ok = false;
    return;
  }
  nodelist_push(c, &w->g->g[gi].vars, var);
}

/* Pre-order (ir_walk's enter): a node before its children, children in order;
 * a DiscreteVar's own children are data, not part of the walk. */
static bool walk_vars(Node *n, void *arg) {
  Walk *w = arg;
  PtrMapEntry *e = ptrmap_get(&w->seen, n);
  if (e->flag) return false;
  e->flag = true;
  if (n->kind != NK_DiscreteVar) return true;
  add_var(w, n);
  return false;
}

bool rv_groups(Comp *c, Node *const *roots, int n, RvGroups *out) {
  memset(out, 0, sizeof *out);
  Walk w = {.c = c, .g = out, .ok = true};
  for (int i = 0; i < n; i++) ir_walk(roots[i], walk_vars, NULL, &w);
  ptrmap_free(&w.seen);
  return w.ok;
}

int rv_group_of(const RvGroups *g, const Node *var) { return group_index(g, var->child[1]); }

/* ---------------------------------------------------------------- passes */

/* The highest order the runtime estimates (runtime/rt_moments.h RT_MAX_ORDER:
 * it accumulates every centred moment of the arguments' subsets, 2^k of them). */
enum { RV_MAX_ORDER = 10 };

typedef struct Rv {
  Comp *c;
  Expectation *x;
  int nids;            /* node ids below this were analysed */
  signed char *random; /* by node id: 1 = a DiscreteVar is below it outside any Cumulant, 0 = not, -1 = unknown */
  int *level;          /* by node id: how deep estimated Cumulants nest below it (0: none) */
  Node **var_symbol;   /* by node id of a DiscreteVar: the Symbol standing for its sample */
  Node **idx_symbol;   /* by group: its row indices [B] */
  Node **estimate;     /* by cumulant: the Symbol holding its estimate */
  int nsym;            /* symbols made, for fresh UUIDs */
} Rv;

static int cumulant_index(const Rv *r, const Node *n) {
  for (int i = 0; i < r->x->ncumulants; i++)
    if (r->x->cumulant[i].node == n) return i;
  return -1;
}

static bool analyse_enter(Node *n, void *arg) {
  Rv *r = arg;
  if (r->random[n->id] >= 0) return false;
  if (n->kind != NK_DiscreteVar) return true;
  r->random[n->id] = 1;
  r->level[n->id] = 0;
  return false;
}

/* Fills random/level for n from its children's (ir_walk's leave); lists each
 * estimated Cumulant after the ones nested in it. */
static bool analyse(Node *n, void *arg) {
  Rv *r = arg;
  bool rnd = false, args_random = false;
  int level = 0;
  for (int i = 0; i < n->nchild; i++) {
    args_random |= r->random[n->child[i]->id] == 1;
    if (r->level[n->child[i]->id] > level) level = r->level[n->child[i]->id];
  }
  if (n->kind == NK_Cumulant) {
    if (args_random && n->nchild > RV_MAX_ORDER)
      diag_error(r->c, n->loc, "%s is a cumulant of order %d; expectation programs estimate orders up to %d",
                 node_label(r->c, n), n->nchild, RV_MAX_ORDER);
    if (args_random) {
      Expectation *x = r->x;
      x->cumulant = realloc(x->cumulant, sizeof(RvCumulant) * (size_t)(x->ncumulants + 1));
      if (!x->cumulant) ICE("out of memory");
      x->cumulant[x->ncumulants++] = (RvCumulant){.node = n, .order = n->nchild, .pass = level};
      level++;
    }
  } else {
    rnd |= args_random;
  }
  r->random[n->id] = rnd;
  r->level[n->id] = level;
  return true;
}

static Node *new_symbol(Rv *r, const char *name, const Shape *shape, Loc loc) {
  Node p = {.kind = NK_Symbol, .loc = loc, .name = name, .shape = *shape};
  snprintf(p.u.symbol.uuid, sizeof p.u.symbol.uuid, "00000000-0000-4000-8000-%012x", ++r->nsym);
  return ir_make(r->c, &p);
}

typedef struct Rewrite {
  Rv *r;
  PtrMap *memo; /* one rewrite per node */
} Rewrite;

/* Whether rewriting leaves n as it is: nothing random and no estimated Cumulant below it. */
static bool rewrite_keeps(const Rv *r, const Node *n) {
  return n->id >= r->nids || (r->random[n->id] != 1 && r->level[n->id] == 0);
}

/* DiscreteVars and estimated Cumulants are rewritten whole; other nodes after their children. */
static bool rewrite_enter(Node *n, void *arg) {
  Rewrite *w = arg;
  Rv *r = w->r;
  if (rewrite_keeps(r, n) || ptrmap_find(w->memo, n)) return false;
  int ci = n->kind == NK_Cumulant ? cumulant_index(r, n) : -1;
  if (n->kind == NK_DiscreteVar) ptrmap_get(w->memo, n)->ptr = r->var_symbol[n->id];
  else if (ci >= 0) ptrmap_get(w->memo, n)->ptr = r->estimate[ci];
  else return true;
  return false;
}

static Node *rewritten(const Rewrite *w, Node *n) {
  return rewrite_keeps(w->r, n) ? n : ptrmap_find(w->memo, n)->ptr;
}

static bool rewrite_leave(Node *n, void *arg) {
  Rewrite *w = arg;
  Node **ch = ARENA_ARRAY(&w->r->c->arena, Node *, n->nchild);
  for (int i = 0; i < n->nchild; i++) ch[i] = rewritten(w, n->child[i]);
  ptrmap_get(w->memo, n)->ptr = ir_with_children(w->r->c, n, ch, n->nchild);
  return true;
}

/* n with every DiscreteVar replaced by its sample Symbol and every estimated
 * Cumulant by its estimate's Symbol (memo: one rewrite per node). */
static Node *rewrite(Rv *r, PtrMap *memo, Node *n) {
  Rewrite w = {r, memo};
  ir_walk(n, rewrite_enter, rewrite_leave, &w);
  return rewritten(&w, n);
}

/* The pass input standing for a streamed values Array (the Array itself if
 * it is not streamed). */
static Node *stream_symbol(Rv *r, Node *values) {
  if (!load_is_streamed(r->c, values)) return values;
  Expectation *x = r->x;
  for (int i = 0; i < x->ndata; i++)
    if (x->data[i].array == values) return x->data[i].symbol;
  RvData *grown = ARENA_ARRAY(&r->c->arena, RvData, x->ndata + 1);
  if (x->ndata) memcpy(grown, x->data, sizeof(RvData) * (size_t)x->ndata);
  x->data = grown;
  x->data[x->ndata] = (RvData){values, new_symbol(r, values->name, &values->shape, values->loc)};
  return x->data[x->ndata++].symbol;
}

/* The batch circuit of one argument: the rewritten argument as a Module
 * binding every DiscreteVar's Symbol to values[idx of its group], so module
 * substitution vmaps it over the sample axis (an argument that uses no
 * variable is broadcast to it). */
static Node *batch_module(Rv *r, Node *spec) {
  Comp *c = r->c;
  const RvGroups *gs = &r->x->groups;
  int nargs = 0;
  for (int g = 0; g < gs->n; g++) nargs += gs->g[g].vars.n;
  Node **child = ARENA_ARRAY(&c->arena, Node *, nargs + 1);
  ModuleArg *arg = ARENA_ARRAY(&c->arena, ModuleArg, nargs);
  child[0] = spec;
  int a = 0;
  for (int g = 0; g < gs->n; g++)
    for (int v = 0; v < gs->g[g].vars.n; v++, a++) {
      Node *var = gs->g[g].vars.node[v];
      Node *gather[2] = {stream_symbol(r, var->child[0]), r->idx_symbol[g]};
      Node gp = {.kind = NK_GeneralFunction, .loc = var->loc, .nchild = 2, .child = gather,
                 .name = var->name ? arena_printf(&c->arena, "%s sampled", var->name) : NULL};
      if (!genfn_parse("gen_index_at_0_c", &gp.u.gf)) ICE("gen_index spec");
      gp.u.gf.text = "gen_index_at_0_c";
      child[a + 1] = ir_make(c, &gp);
      arg[a] = (ModuleArg){.symbol = r->var_symbol[var->id], .batchable = true, .expandable = true,
                           .ban_non_symbolic_size_expand = true, .loc = var->loc};
    }
  Node mp = {.kind = NK_Module, .loc = spec->loc, .name = spec->name, .nchild = nargs + 1, .child = child};
  mp.u.module.arg = arg;
  return ir_make(c, &mp);
}

/* resolve_program on circuits built here, with the names they answer to. */
static bool resolve_built(Rv *r, NodeList *tops, Program *out) {
  Comp *c = r->c;
  bool check = c->check_all_inputs_used;
  c->check_all_inputs_used = false; /* a batch module binds every variable; unused ones broadcast */
  bool ok = resolve_program(c, tops, out);
  c->check_all_inputs_used = check;
  return ok;
}

/* Which group, cumulant or streamed data each input of a built program stands for. */
static void map_inputs(Rv *r, Program *p, int **group, int **cumulant, int **data) {
  Comp *c = r->c;
  *group = ARENA_ARRAY(&c->arena, int, p->inputs.n + 1);
  *cumulant = ARENA_ARRAY(&c->arena, int, p->inputs.n + 1);
  *data = ARENA_ARRAY(&c->arena, int, p->inputs.n + 1);
  for (int i = 0; i < p->inputs.n; i++) {
    const Node *s = p->inputs.node[i];
    (*group)[i] = (*cumulant)[i] = (*data)[i] = -1;
    for (int g = 0; g < r->x->groups.n; g++)
      if (symbol_same(s, r->idx_symbol[g])) (*group)[i] = g;
    for (int k = 0; k < r->x->ncumulants; k++)
      if (symbol_same(s, r->estimate[k])) (*cumulant)[i] = k;
    for (int d = 0; d < r->x->ndata; d++)
      if (symbol_same(s, r->x->data[d].symbol)) (*data)[i] = d;
    if ((*group)[i] < 0 && (*cumulant)[i] < 0 && (*data)[i] < 0)
      ICE("input '%s' of a pass is neither rows, an estimate nor data", s->name);
    if ((*group)[i] >= 0) p->input_is_index[i] = true;
  }
}

static bool build_pass(Rv *r, int pass) {
  Comp *c = r->c;
  Expectation *x = r->x;
  RvPass *ps = &x->pass[pass];
  NodeList tops = {0}, args = {0};
  PtrMap memo = {0};
  for (int k = 0; k < x->ncumulants; k++) {
    RvCumulant *cu = &x->cumulant[k];
    if (cu->pass != pass) continue;
    cu->arg = ARENA_ARRAY(&c->arena, int, cu->order + 1);
    for (int i = 0; i < cu->order; i++) {
      Node *a = cu->node->child[i];
      int at = -1;
      for (int j = 0; j < args.n && at < 0; j++)
        if (args.node[j] == a) at = j;
      if (at < 0) {
        at = args.n;
        nodelist_push(c, &args, a);
        nodelist_push(c, &tops, batch_module(r, rewrite(r, &memo, a)));
      }
      cu->arg[i] = at;
    }
  }
  ptrmap_free(&memo);
  if (!resolve_built(r, &tops, &ps->program)) return false;
  ps->program.batch_invariant = true;
  for (int j = 0; j < args.n; j++) {
    const Node *a = args.node[j];
    ps->program.output_names[j] = a->name ? arena_printf(&c->arena, "%s sampled", a->name) : arena_printf(&c->arena, "argument%d", j);
  }
  map_inputs(r, &ps->program, &ps->input_group, &ps->input_cumulant, &ps->input_data);
  return true;
}

/* A DiscreteVar below n outside any Cumulant (n is random). */
static const Node *random_source(const Rv *r, const Node *n) {
  while (n->kind != NK_DiscreteVar) {
    const Node *next = NULL;
    for (int i = 0; i < n->nchild && !next; i++)
      if (r->random[n->child[i]->id] == 1) next = n->child[i];
    if (!next) ICE("random node without a random child");
    n = next;
  }
  return n;
}

/* The post circuit: the program's outputs with estimates in place of the
 * estimated Cumulants. An output with a DiscreteVar outside every Cumulant
 * would be a per-sample output, which circc does not compile yet. */
static bool build_post(Rv *r, Program *p) {
  Comp *c = r->c;
  NodeList tops = {0};
  PtrMap memo = {0};
  bool ok = true;
  for (int i = 0; i < p->outputs.n; i++) {
    Node *o = p->outputs.node[i];
    if (r->random[o->id] == 1) {
      const Node *v = random_source(r, o);
      diag_error(c, o->loc, "output %s is random: DiscreteVar %s reaches it outside any Cumulant; wrap it in a "
                 "Cumulant for its expectation (per-sample outputs are not supported yet)", node_label(c, o),
                 node_label(c, v));
      diag_note(c, v->loc, "the DiscreteVar %s", node_label(c, v));
      ok = false;
      continue;
    }
    nodelist_push(c, &tops, rewrite(r, &memo, o));
  }
  ptrmap_free(&memo);
  if (!ok) return false;
  const char **names = p->output_names;
  Program post;
  if (!resolve_built(r, &tops, &post)) return false;
  post.output_names = names;
  *p = post;
  map_inputs(r, p, &r->x->post_input_group, &r->x->post_input_cumulant, &r->x->post_input_data);
  return true;
}

static const char *cumulant_name(Comp *c, const RvCumulant *cu, int k) {
  return cu->node->name ? cu->node->name : arena_printf(&c->arena, "cumulant%d", k);
}

static int by_pass(const void *a, const void *b) {
  const RvCumulant *x = a, *y = b;
  if (x->pass != y->pass) return x->pass < y->pass ? -1 : 1;
  return x->node->id < y->node->id ? -1 : x->node->id > y->node->id;
}

typedef struct StreamUses {
  Comp *c;
  PtrMap seen;
  int *uses;      /* by streamed name: DiscreteVar uses */
  /* the nodes being walked, root first, and the child of each met next: the
   * last is the parent of the node met */
  struct { const Node *n; int next; } *path;
  int depth, cap;
} StreamUses;

/* A streamed Array may only be a DiscreteVar's values: everything else would
 * need its tensor at compile time. Reports every other use, each where the
 * use is met (ir_walk's enter); counts the DiscreteVar uses of each name. */
static bool check_stream_use(Node *k, void *arg) {
  StreamUses *u = arg;
  Comp *c = u->c;
  if (u->depth) { /* k is child i of n */
    const Node *n = u->path[u->depth - 1].n;
    int i = u->path[u->depth - 1].next++;
    bool streamed = load_is_streamed(c, k);
    if (streamed && n->kind == NK_DiscreteVar && i == 0) {
      for (int s = 0; s < c->nstreamed; s++) u->uses[s] += !strcmp(c->streamed[s], k->name);
    } else if (streamed) {
      diag_error(c, n->loc, "--stream %s: %s uses the streamed Array '%s', but only a DiscreteVar's values can be "
                 "streamed (read at run time)", k->name, node_label(c, n), k->name);
    }
  }
  PtrMapEntry *e = ptrmap_get(&u->seen, k);
  if (e->flag) return false;
  e->flag = true;
  if (u->depth == u->cap) {
    u->cap = u->cap ? 2 * u->cap : 64;
    if (!(u->path = realloc(u->path, sizeof *u->path * (size_t)u->cap))) ICE("out of memory");
  }
  u->path[u->depth].n = k;
  u->path[u->depth++].next = 0;
  return true;
}

static bool stream_leave(Node *n, void *arg) {
  ((StreamUses *)arg)->depth--;
  return true;
}

static bool check_streams(Comp *c, const Program *p) {
  if (!c->nstreamed) return true;
  int errors = diag_error_count(c);
  StreamUses u = {.c = c, .uses = calloc((size_t)c->nstreamed, sizeof(int))};
  if (!u.uses) ICE("out of memory");
  for (int i = 0; i < p->outputs.n; i++) ir_walk(p->outputs.node[i], check_stream_use, stream_leave, &u);
  ptrmap_free(&u.seen);
  free(u.path);
  for (int s = 0; s < c->nstreamed; s++)
    if (!u.uses[s])
      diag_error_class(c, DIAG_USAGE, NO_LOC, "--stream %s: no DiscreteVar's values is an Array named '%s'",
                       c->streamed[s], c->streamed[s]);
  free(u.uses);
  return diag_error_count(c) == errors;
}

bool rv_lower(Comp *c, Program *p, int batch, Expectation *x) {
  memset(x, 0, sizeof *x);
  if (!check_streams(c, p) || !rv_groups(c, p->outputs.node, p->outputs.n, &x->groups)) return false;
  if (x->groups.n == 0) return true;
  x->present = true;
  x->batch = batch;
  for (int i = 0; i < p->inputs.n; i++)
    diag_error(c, p->inputs.node[i]->loc, "free symbol %s: an expectation program (one with DiscreteVars) takes no "
               "inputs; bind it with a module or make it an Array", node_label(c, p->inputs.node[i]));
  if (diag_error_count(c)) return false;

  Rv r = {.c = c, .x = x, .nids = c->next_node_id};
  r.random = malloc((size_t)r.nids);
  r.level = calloc((size_t)r.nids, sizeof(int));
  r.var_symbol = calloc((size_t)r.nids, sizeof(Node *));
  if (!r.random || !r.level || !r.var_symbol) ICE("out of memory");
  memset(r.random, -1, (size_t)r.nids);
  for (int i = 0; i < p->outputs.n; i++) ir_walk(p->outputs.node[i], analyse_enter, analyse, &r);
  if (diag_error_count(c)) {
    free(r.random), free(r.level), free(r.var_symbol), free(x->cumulant);
    x->cumulant = NULL, x->ncumulants = 0;
    return false;
  }
  /* each cumulant's pass: how deep estimated cumulants nest in its arguments */
  if (x->ncumulants) qsort(x->cumulant, (size_t)x->ncumulants, sizeof(RvCumulant), by_pass);
  for (int k = 0; k < x->ncumulants; k++) {
    RvCumulant *cu = &x->cumulant[k];
    cu->name = cumulant_name(c, cu, k);
    if (cu->pass + 1 > x->npasses) x->npasses = cu->pass + 1;
  }
  RvCumulant *kept = ARENA_ARRAY(&c->arena, RvCumulant, x->ncumulants + 1);
  if (x->ncumulants) memcpy(kept, x->cumulant, sizeof(RvCumulant) * (size_t)x->ncumulants);
  free(x->cumulant);
  x->cumulant = kept;

  Shape rows = {.rank = 1, .dim = {batch}};
  r.idx_symbol = ARENA_ARRAY(&c->arena, Node *, x->groups.n);
  for (int g = 0; g < x->groups.n; g++) {
    RvGroup *gr = &x->groups.g[g];
    r.idx_symbol[g] = new_symbol(&r, arena_printf(&c->arena, "rows of group %d", g), &rows, gr->node->loc);
    for (int v = 0; v < gr->vars.n; v++) {
      Node *var = gr->vars.node[v];
      r.var_symbol[var->id] = new_symbol(&r, var->name ? var->name : arena_printf(&c->arena, "variable%d", var->id),
                                         &var->shape, var->loc);
    }
  }
  r.estimate = ARENA_ARRAY(&c->arena, Node *, x->ncumulants + 1);
  for (int k = 0; k < x->ncumulants; k++) {
    const RvCumulant *cu = &x->cumulant[k];
    r.estimate[k] = new_symbol(&r, arena_printf(&c->arena, "estimate of %s", cu->name), &cu->node->shape, cu->node->loc);
  }
  x->pass = ARENA_ARRAY(&c->arena, RvPass, x->npasses + 1);
  bool ok = true;
  for (int j = 0; j < x->npasses && ok; j++) ok = build_pass(&r, j);
  ok = ok && build_post(&r, p);
  free(r.random);
  free(r.level);
  free(r.var_symbol);
  return ok && !diag_error_count(c);
}
