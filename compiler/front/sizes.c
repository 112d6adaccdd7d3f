/* sizes.c — symbolic sizes by name (design.md §1 "sizes"): the library's size
 * names (HIDDEN = 0s, SEQ = 1s, ...; rust_circuit_format.md §7.1), `-D NAME=N`,
 * and binding the sizes that remain free after module substitution. */
#include <stdlib.h>
#include <string.h>
#include "circc.h"

static const char *const NAMES[] = {"HIDDEN", "SEQ", "SEQ_Q", "SEQ_K", "HEADS", "MLP_PROJ", "BILINEAR_MLP_PROJ",
                                    "QK_DIM", "V_DIM", "LOG_LIKELYHOOD_CLASSES", "VOCAB_SIZE", "HALF_ROTARY_DIM"};
#define NNAMES ((int)(sizeof NAMES / sizeof *NAMES))

const char *size_name(int k) { return k >= 0 && k < NNAMES ? NAMES[k] : NULL; }

/* A library name or `Ks`; -1 if neither. */
static int size_by_name(const char *name) {
  for (int i = 0; i < NNAMES; i++)
    if (strcmp(NAMES[i], name) == 0) return i;
  char *end;
  long v = strtol(name, &end, 10);
  return end != name && strcmp(end, "s") == 0 && v >= 0 && v < NUM_SYMBOLIC_SIZES ? (int)v : -1;
}

bool sizes_from_defines(Comp *c, int64_t *map) {
  bool ok = true;
  for (int k = 0; k < NUM_SYMBOLIC_SIZES; k++) map[k] = -1;
  for (int i = 0; i < c->ndefines; i++) {
    const SizeDefine *d = &c->defines[i];
    int k = size_by_name(d->name);
    if (k < 0) {
      diag_error_class(c, DIAG_USAGE, NO_LOC,
                       "-D %s: unknown symbolic size (use Ks for the K-th size, e.g. -D 1s=%lld, or a name "
                       "such as SEQ or HIDDEN)",
                       d->name, (long long)d->value);
      ok = false;
    } else if (d->value <= 0) {
      diag_error_class(c, DIAG_USAGE, NO_LOC, "-D %s=%lld: sizes must be positive", d->name, (long long)d->value);
      ok = false;
    } else {
      map[k] = d->value;
    }
  }
  return ok;
}

typedef struct Pins {
  Comp *c;
  bool *seen; /* by node id */
  int64_t *map;
} Pins;

static bool pins_enter(Node *n, void *arg) {
  Pins *p = arg;
  if (p->seen[n->id]) return false;
  p->seen[n->id] = true;
  return true;
}

/* SetSymbolicShape(x) with a concrete size where x's is symbolic binds that size (ir_walk's leave). */
static bool collect_pins(Node *n, void *arg) {
  Pins *p = arg;
  Comp *c = p->c;
  if (n->kind != NK_SetSymbolicShape) return true;
  const Shape *in = &n->child[0]->shape;
  for (int d = 0; d < in->rank; d++) {
    if (!size_is_symbolic(in->dim[d]) || size_is_symbolic(n->shape.dim[d])) continue;
    int64_t before[NUM_SYMBOLIC_SIZES];
    memcpy(before, p->map, sizeof before);
    if (!ir_bind_symbolic(in->dim[d], n->shape.dim[d], p->map)) {
      char a[64];
      diag_error(c, n->child[0]->loc, "%s: its size %s is %lld where a module binds it, but %lld elsewhere (or by -D)",
                 node_label(c, n->child[0]), size_format(in->dim[d], a, sizeof a), (long long)n->shape.dim[d],
                 (long long)ir_apply_size_map(in->dim[d], before));
      return true;
    }
  }
  return true;
}

bool sizes_bind(Comp *c, Node **roots, int n, int64_t *map) {
  int errors = diag_error_count(c);
  /* Module calls pinned the sizes of free symbols with SetSymbolicShape; those
   * pins and -D together give the sizes the free symbols take. */
  Pins p = {c, calloc((size_t)c->next_node_id + 1, 1), map};
  if (!p.seen) ICE("out of memory");
  for (int i = 0; i < n; i++) ir_walk(roots[i], pins_enter, collect_pins, &p);
  free(p.seen);
  if (diag_error_count(c) != errors) return false;
  bool any = false;
  for (int k = 0; k < NUM_SYMBOLIC_SIZES; k++) any |= map[k] >= 0;
  return !any || modules_bind_sizes(c, roots, n, map);
}

typedef struct SymbolSearch {
  const char *name;
  bool *seen;        /* by node id */
  const Node *found; /* the first in pre-order, NULL until found */
} SymbolSearch;

/* Looks at n before its children: the first Symbol named `name` ends the search. */
static bool find_symbol(Node *n, void *arg) {
  SymbolSearch *s = arg;
  if (s->found || s->seen[n->id]) return false;
  s->seen[n->id] = true;
  if (n->kind == NK_Symbol && n->name && !strcmp(n->name, s->name)) s->found = n;
  return !s->found;
}

bool sizes_from_input(Comp *c, Node *const *roots, int n, const char *name, const char *path, const Shape *shape) {
  SymbolSearch search = {.name = name, .seen = calloc((size_t)c->next_node_id + 1, 1)};
  if (!search.seen) ICE("out of memory");
  for (int i = 0; i < n && !search.found; i++) ir_walk(roots[i], find_symbol, NULL, &search);
  free(search.seen);
  const Node *sym = search.found;
  if (!sym) return true; /* not a free symbol of these circuits: evaluation says so */
  if (sym->shape.rank != shape->rank) {
    diag_error_class(c, DIAG_IO, NO_LOC, "--input %s: %s has shape %s but symbol '%s' needs %s", name, path,
                     shape_str(c, shape), name, shape_str(c, &sym->shape));
    return false;
  }
  int64_t map[NUM_SYMBOLIC_SIZES];
  for (int k = 0; k < NUM_SYMBOLIC_SIZES; k++) map[k] = -1;
  for (int i = 0; i < c->ndefines; i++) {
    int k = size_by_name(c->defines[i].name);
    if (k >= 0) map[k] = c->defines[i].value;
  }
  int64_t before[NUM_SYMBOLIC_SIZES];
  memcpy(before, map, sizeof before);
  for (int d = 0; d < shape->rank; d++) {
    if (!size_is_symbolic(sym->shape.dim[d])) continue; /* a fixed size is checked when the value is bound */
    int64_t known[NUM_SYMBOLIC_SIZES];
    memcpy(known, map, sizeof known);
    if (!ir_bind_symbolic(sym->shape.dim[d], shape->dim[d], map)) {
      char s[64];
      const char *named = size_format(sym->shape.dim[d], s, sizeof s);
      for (int k = 0; k < NNAMES; k++)
        if (symbolic_prime(k) == sym->shape.dim[d]) named = arena_printf(&c->arena, "%s (%s)", NAMES[k], s);
      diag_error_class(c, DIAG_IO, NO_LOC,
                       "--input %s: %s has shape %s, so %s = %lld in symbol '%s' %s, but -D or another --input "
                       "makes it %lld",
                       name, path, shape_str(c, shape), named,
                       (long long)shape->dim[d], name, shape_str(c, &sym->shape),
                       (long long)ir_apply_size_map(sym->shape.dim[d], known));
      return false;
    }
  }
  /* the sizes it bound become -D defines, so resolve binds them like any other */
  SizeDefine *defs = ARENA_ARRAY(&c->arena, SizeDefine, c->ndefines + NUM_SYMBOLIC_SIZES);
  if (c->ndefines) memcpy(defs, c->defines, sizeof *defs * (size_t)c->ndefines);
  c->defines = defs;
  for (int k = 0; k < NUM_SYMBOLIC_SIZES; k++)
    if (map[k] >= 0 && before[k] < 0) c->defines[c->ndefines++] = (SizeDefine){arena_printf(&c->arena, "%ds", k), map[k]};
  return true;
}
