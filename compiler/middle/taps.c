/* taps.c — --tap and --patch (README "Taps and patches"): after resolve,
 * nodes are chosen by their names and name paths, tapped nodes become extra
 * outputs and patched nodes are wrapped in circc_patch, whose value is the
 * node's unless the caller gives one at run time.
 *
 * Names. Module substitution keeps the names of a spec's nodes (rust_circuit
 * §5.7), so every layer's copy of `a.attn_probs` has that name; modules.c
 * records each copy's name path: the Module calls it was substituted through,
 * outermost first, then its name (t.bind_w/b0.call/b0/b.a/.../a.attn_probs).
 * A chosen node is called by its tap name: its name, preceded by the calls
 * of its path that tell it from the other nodes of that name, taken
 * innermost first and only when they rule some out: b0/a.attn_probs,
 * b2.call/a.norm/ln.var; just the name when it is unique; `#k` appended to
 * the k-th repeat when no call tells two nodes apart.
 * A pattern is a node name, a tap name, a name path, or /REGEX/ (POSIX
 * extended, searched in the name path and in the tap name). */
#include <regex.h>
#include <stdlib.h>
#include <string.h>
#include "circc.h"
#include "ptrmap.h"

typedef struct Named {
  Node *node;
  const char *path; /* name path (its name if substitution did not copy it) */
  const char *tap;  /* tap name */
} Named;

typedef struct Taps {
  Comp *c;
  Named *named;
  int n, cap;
  PtrMap seen;
} Taps;

static bool collect_enter(Node *n, void *arg) {
  PtrMapEntry *e = ptrmap_get(&((Taps *)arg)->seen, n);
  if (e->num) return false;
  e->num = 1;
  return true;
}

/* Every named node under the roots, in depth-first post-order (children first: ir_walk's leave). */
static bool collect(Node *n, void *arg) {
  Taps *t = arg;
  if (!n->name) return true;
  if (t->n == t->cap) {
    int cap = t->cap ? 2 * t->cap : 64;
    Named *a = ARENA_ARRAY(&t->c->arena, Named, cap);
    if (t->n) memcpy(a, t->named, sizeof(Named) * (size_t)t->n);
    t->named = a, t->cap = cap;
  }
  t->named[t->n++] = (Named){n, n->path ? n->path : n->name, NULL};
  return true;
}

/* Whether the '/'-separated path has the call comp (len bytes) before its
 * last component (the node's own name). */
static bool path_has_call(const char *path, const char *comp, size_t len) {
  const char *last = strrchr(path, '/');
  for (const char *p = path; last && p < last;) {
    size_t l = strcspn(p, "/");
    if (l == len && !memcmp(p, comp, len)) return true;
    p += l + 1;
  }
  return false;
}

static int by_name(const void *x, const void *y) {
  const Named *a = *(Named *const *)x, *b = *(Named *const *)y;
  int d = strcmp(a->node->name, b->node->name);
  return d ? d : (a > b) - (a < b); /* then in node order */
}

/* The tap names of the file comment for the nodes g[0..n) of one name: each
 * is the name preceded by the calls of its path (taken innermost first) that
 * tell it from the others, as few as that takes. */
static void name_group(Comp *c, Named **g, int n, bool *rival) {
  for (int i = 0; i < n; i++) {
    Named *x = g[i];
    int left = n - 1;
    for (int j = 0; j < n; j++) rival[j] = j != i;
    const char *tap = x->node->name;
    for (const char *end = strrchr(x->path, '/'); left && end && end > x->path;) {
      const char *start = end;
      while (start > x->path && start[-1] != '/') start--;
      size_t len = (size_t)(end - start);
      int drop = 0;
      for (int j = 0; j < n; j++) drop += rival[j] && !path_has_call(g[j]->path, start, len);
      if (drop) {
        for (int j = 0; j < n; j++)
          if (rival[j] && !path_has_call(g[j]->path, start, len)) rival[j] = false;
        left -= drop;
        tap = arena_printf(&c->arena, "%.*s/%s", (int)len, start, tap);
      }
      end = start - 1;
    }
    x->tap = tap;
  }
  /* nodes no call tells apart (two of one name in one call): number the later ones */
  for (int i = 0; i < n; i++) {
    int k = 0;
    for (int j = 0; j < i; j++) k += !strcmp(g[j]->tap, g[i]->tap);
    if (k) g[i]->tap = arena_printf(&c->arena, "%s#%d", g[i]->tap, k);
  }
}

/* Every node's tap name, name by name (the work grows with the copies of a
 * name, not with the circuit). */
static void name_taps(Taps *t) {
  Comp *c = t->c;
  Named **order = ARENA_ARRAY(&c->arena, Named *, t->n ? t->n : 1);
  bool *rival = ARENA_ARRAY(&c->arena, bool, t->n ? t->n : 1);
  for (int i = 0; i < t->n; i++) order[i] = &t->named[i];
  qsort(order, (size_t)t->n, sizeof *order, by_name);
  for (int i = 0, j; i < t->n; i = j) {
    for (j = i + 1; j < t->n && !strcmp(order[j]->node->name, order[i]->node->name);) j++;
    name_group(c, order + i, j - i, rival);
  }
}

/* Levenshtein distance, capped at cap (names are short). */
static int distance(const char *a, const char *b, int cap) {
  size_t la = strlen(a), lb = strlen(b);
  if (la > 200 || lb > 200) return cap;
  int row[201];
  for (size_t j = 0; j <= lb; j++) row[j] = (int)j;
  for (size_t i = 1; i <= la; i++) {
    int diag = row[0];
    row[0] = (int)i;
    for (size_t j = 1; j <= lb; j++) {
      int up = row[j];
      int best = diag + (a[i - 1] != b[j - 1]);
      if (up + 1 < best) best = up + 1;
      if (row[j - 1] + 1 < best) best = row[j - 1] + 1;
      row[j] = best;
      diag = up;
    }
  }
  return row[lb] < cap ? row[lb] : cap;
}

/* "; near names: x, y" for a pattern that matched nothing (the tap names
 * closest to it, or containing it), or "" if none is close. */
static const char *near_names(Taps *t, const char *pattern) {
  enum { MAX_NEAR = 6 };
  const char *pick[MAX_NEAR];
  int npick = 0;
  int cap = (int)strlen(pattern) / 3 + 2;
  for (int d = 0; d < cap && npick < MAX_NEAR; d++)
    for (int i = 0; i < t->n && npick < MAX_NEAR; i++) {
      const char *tap = t->named[i].tap;
      bool close = d == 0 ? strstr(tap, pattern) != NULL : distance(pattern, t->named[i].node->name, cap) == d ||
                                                                 distance(pattern, tap, cap) == d;
      for (int k = 0; k < npick && close; k++) close = strcmp(pick[k], tap) != 0;
      if (close) pick[npick++] = tap;
    }
  if (!npick) return "";
  const char *s = "; near names:";
  for (int k = 0; k < npick; k++) s = arena_printf(&t->c->arena, "%s%s %s", s, k ? "," : "", pick[k]);
  return s;
}

/* Marks (chosen[i] = true) the named nodes pattern matches; false after a
 * diagnostic (a bad regex, or nothing matched). */
static bool choose(Taps *t, const char *flag, const char *pattern, bool *chosen) {
  Comp *c = t->c;
  size_t len = strlen(pattern);
  bool is_regex = len >= 2 && pattern[0] == '/' && pattern[len - 1] == '/';
  regex_t re;
  if (is_regex) {
    char *body = arena_strndup(&c->arena, pattern + 1, len - 2);
    int err = regcomp(&re, body, REG_EXTENDED | REG_NOSUB);
    if (err) {
      char msg[256];
      regerror(err, &re, msg, sizeof msg);
      diag_error_class(c, DIAG_USAGE, NO_LOC, "%s %s: not a regular expression: %s", flag, pattern, msg);
      return false;
    }
  }
  int found = 0;
  for (int i = 0; i < t->n; i++) {
    const Named *x = &t->named[i];
    bool hit = is_regex ? !regexec(&re, x->path, 0, NULL, 0) || !regexec(&re, x->tap, 0, NULL, 0)
                        : !strcmp(pattern, x->node->name) || !strcmp(pattern, x->tap) || !strcmp(pattern, x->path);
    if (hit) chosen[i] = true, found++;
  }
  if (is_regex) regfree(&re);
  if (!found)
    diag_error(c, NO_LOC, "%s %s matches no node of the circuit%s", flag, pattern,
               is_regex ? "" : near_names(t, pattern));
  return found > 0;
}

typedef struct Rebuild {
  Taps *t;
  const int *patch;   /* named[i]'s patch number or -1 */
  PtrMap *memo;       /* old nodes to new */
  PtrMap *index;      /* named nodes to their index in named */
} Rebuild;

static bool rebuild_enter(Node *n, void *arg) { return !ptrmap_find(((Rebuild *)arg)->memo, n); }

/* The program with every patched node p wrapped: circc_patch(p') where p' is
 * p rebuilt over rebuilt children (renamed `NAME computed` unless it is a
 * leaf, whose name is its identity); the wrapper takes p's name and path.
 * ir_walk's leave: n's children are rebuilt; false on failure. */
static bool rebuild(Node *n, void *arg) {
  Rebuild *b = arg;
  Comp *c = b->t->c;
  Node **ch = n->nchild ? ARENA_ARRAY(&c->arena, Node *, n->nchild) : NULL;
  bool changed = false;
  for (int i = 0; i < n->nchild; i++) {
    ch[i] = ptrmap_find(b->memo, n->child[i])->ptr;
    changed |= ch[i] != n->child[i];
  }
  Node *out = changed ? ir_with_children(c, n, ch, n->nchild) : n;
  const PtrMapEntry *ix = ptrmap_find(b->index, n);
  if (out && ix && b->patch[ix->num] >= 0) {
    Node *computed = out;
    if (out->nchild) {
      Node inner = *out;
      inner.name = arena_printf(&c->arena, "%s computed", n->name);
      inner.path = NULL;
      if (inner.kind == NK_Rearrange) inner.u.rearrange.size = out->u.rearrange.written_size;
      computed = ir_make(c, &inner);
    }
    Node w = {.kind = NK_GeneralFunction, .loc = n->loc, .name = n->name, .path = n->path, .nchild = 1,
              .child = &computed};
    w.u.gf = (GenFnSpec){.fn = GF_PATCH, .text = "circc_patch", .dim = b->patch[ix->num],
                         .cast_from = DT_UNKNOWN, .cast_to = DT_UNKNOWN};
    out = computed ? ir_make(c, &w) : NULL;
  }
  if (!out) return false;
  ptrmap_get(b->memo, n)->ptr = out;
  return true;
}

bool taps_apply(Comp *c, Program *p, const char *const *taps, int ntaps, const char *const *patches, int npatches) {
  if (!ntaps && !npatches) return true;
  Taps t = {.c = c};
  for (int i = 0; i < p->outputs.n; i++) ir_walk(p->outputs.node[i], collect_enter, collect, &t);
  name_taps(&t);
  int cap = t.n ? t.n : 1;
  bool *tapped = ARENA_ARRAY(&c->arena, bool, cap);
  int *source = ARENA_ARRAY(&c->arena, int, cap); /* the first --patch pattern that chose it, or -1 */
  bool ok = true;
  for (int i = 0; i < ntaps; i++) ok &= choose(&t, "--tap", taps[i], tapped);
  bool *chosen = ARENA_ARRAY(&c->arena, bool, cap);
  for (int i = 0; i < t.n; i++) source[i] = -1;
  for (int j = 0; j < npatches; j++) {
    memset(chosen, 0, sizeof(bool) * (size_t)cap);
    ok &= choose(&t, "--patch", patches[j], chosen);
    for (int i = 0; i < t.n; i++)
      if (chosen[i] && source[i] < 0) source[i] = j;
  }
  if (!ok) {
    ptrmap_free(&t.seen);
    return false;
  }
  /* patches are numbered in node order (children first) */
  int *patch = ARENA_ARRAY(&c->arena, int, cap);
  p->patch_names = ARENA_ARRAY(&c->arena, const char *, cap);
  p->patch_nodes = ARENA_ARRAY(&c->arena, Node *, cap);
  p->patch_source = ARENA_ARRAY(&c->arena, int, cap);
  p->npatches = 0;
  PtrMap index = {0}, memo = {0};
  for (int i = 0; i < t.n; i++) {
    patch[i] = source[i] >= 0 ? p->npatches : -1;
    if (source[i] >= 0) p->patch_names[p->npatches] = t.named[i].tap, p->patch_source[p->npatches++] = source[i];
    ptrmap_get(&index, t.named[i].node)->num = i;
  }
  Rebuild b = {&t, patch, &memo, &index};
  for (int i = 0; i < p->outputs.n && ok; i++) {
    ok = ir_walk(p->outputs.node[i], rebuild_enter, rebuild, &b);
    if (ok) p->outputs.node[i] = ptrmap_find(&memo, p->outputs.node[i])->ptr;
  }
  for (int i = 0; i < t.n && ok; i++)
    if (patch[i] >= 0) p->patch_nodes[patch[i]] = ptrmap_find(&memo, t.named[i].node)->ptr;
  /* taps: extra outputs after the top-level ones (a top-level circuit is one already) */
  int ntop = p->outputs.n;
  for (int i = 0; i < t.n && ok; i++) {
    if (!tapped[i]) continue;
    Node *n = ptrmap_find(&memo, t.named[i].node)->ptr;
    bool top = false;
    for (int j = 0; j < ntop; j++) top |= p->outputs.node[j] == n;
    if (top) continue;
    nodelist_push(c, &p->outputs, n);
    const char **names = ARENA_ARRAY(&c->arena, const char *, p->outputs.n);
    memcpy(names, p->output_names, sizeof(char *) * (size_t)(p->outputs.n - 1));
    names[p->outputs.n - 1] = t.named[i].tap;
    p->output_names = names;
    p->ntaps++;
  }
  ptrmap_free(&index);
  ptrmap_free(&memo);
  ptrmap_free(&t.seen);
  return ok;
}
