/* verify.c — the IR's invariants, checked between stages by --verify-each
 * (always on in tests). A stage that breaks one has a bug, so a failure is an
 * internal error (exit 70) that names the stage after which it was found. */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include "circc.h"
#include "kernel.h"

static bool broken(Comp *c, const char *stage, Loc loc, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static bool broken(Comp *c, const char *stage, Loc loc, const char *fmt, ...) {
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  diag_error_class(c, DIAG_INTERNAL, loc, "IR invariant broken after stage '%s' (--verify-each): %s", stage, msg);
  return false;
}

/* ------------------------------------------------------------ circuits */

enum { WHITE, GRAY, BLACK };

typedef struct Walk {
  Comp *c;
  const char *stage;
  bool tensors_loaded;
  int nids;
  const Node **owner;   /* by node id: the node that has it (two nodes with one id = corruption) */
  unsigned char *color;
  bool ok;
} Walk;

/* What ir_make derives from n's children and parameters must be what n holds:
 * a stage that edits a node in place, or builds one by hand, shows up here.
 * ir_make's own diagnostics are muted; a rejection is reported as broken. */
static void check_node(Walk *w, const Node *n) {
  Comp *c = w->c;
  if (n->kind == NK_Array && w->tensors_loaded) {
    const Tensor *t = n->u.array.tensor;
    if (!t && load_is_streamed(c, n)) return; /* --stream: the program reads it */
    if (!t) {
      w->ok = broken(c, w->stage, n->loc, "Array %s has no tensor", node_label(c, n));
      return;
    }
    if (!shape_eq(&t->shape, &n->shape)) {
      w->ok = broken(c, w->stage, n->loc, "Array %s is declared %s but its tensor is %s", node_label(c, n),
                     shape_str(c, &n->shape), shape_str(c, &t->shape));
      return;
    }
  }
  if (n->kind == NK_Array && !n->u.array.tensor) return; /* before load: only the declared shape exists */
  int next_id = c->next_node_id;
  c->muted++;
  const Node *m = ir_with_children(c, n, n->child, n->nchild);
  c->muted--;
  c->next_node_id = next_id; /* the copy is garbage; ids (and so the generated code) stay as without --verify-each */
  if (!m) {
    w->ok = broken(c, w->stage, n->loc, "%s %s is rejected by ir_make given its children", kind_name(n->kind),
                   node_label(c, n));
  } else if (!shape_eq(&m->shape, &n->shape) || m->dtype != n->dtype) {
    w->ok = broken(c, w->stage, n->loc, "%s %s has shape %s %s, its children give %s %s", kind_name(n->kind),
                   node_label(c, n), shape_str(c, &n->shape), dtype_name(n->dtype), shape_str(c, &m->shape),
                   dtype_name(m->dtype));
  } else if (m->hash != n->hash) {
    w->ok = broken(c, w->stage, n->loc, "%s %s has a stale structural hash", kind_name(n->kind), node_label(c, n));
  }
}

/* Depth-first, iteratively (circuits can be thousands of nodes deep). */
static void walk(Walk *w, const Node *root) {
  typedef struct Frame {
    const Node *n;
    int next_child;
  } Frame;
  int cap = 64, sp = 0;
  Frame *stack = malloc(sizeof(Frame) * (size_t)cap);
  if (!stack) ICE("out of memory");
  stack[sp++] = (Frame){root, 0};
  while (sp && w->ok) {
    Frame *f = &stack[sp - 1];
    const Node *n = f->n;
    if (f->next_child == 0) {
      if (n->kind >= NK_COUNT || n->nchild < 0 || (n->nchild > 0 && !n->child) || n->id < 0 || n->id >= w->nids) {
        w->ok = broken(w->c, w->stage, n->loc, "node %s is corrupt (kind %d, %d children, id %d)",
                       node_label(w->c, n), (int)n->kind, n->nchild, n->id);
        break;
      }
      if (w->owner[n->id] && w->owner[n->id] != n) {
        w->ok = broken(w->c, w->stage, n->loc, "nodes %s and %s share id %d", node_label(w->c, n),
                       node_label(w->c, w->owner[n->id]), n->id);
        break;
      }
      w->owner[n->id] = n;
      w->color[n->id] = GRAY;
    }
    if (f->next_child < n->nchild) {
      const Node *k = n->child[f->next_child++];
      if (!k) {
        w->ok = broken(w->c, w->stage, n->loc, "child %d of %s is NULL", f->next_child - 1, node_label(w->c, n));
      } else if (k->id >= 0 && k->id < w->nids && w->owner[k->id] == k && w->color[k->id] == GRAY) {
        w->ok = broken(w->c, w->stage, n->loc, "%s is its own descendant (a cycle)", node_label(w->c, k));
      } else if (k->id < 0 || k->id >= w->nids || w->owner[k->id] != k || w->color[k->id] != BLACK) {
        if (sp == cap) {
          cap *= 2;
          stack = realloc(stack, sizeof(Frame) * (size_t)cap);
          if (!stack) ICE("out of memory");
        }
        stack[sp++] = (Frame){k, 0};
      }
      continue;
    }
    check_node(w, n);
    w->color[n->id] = BLACK;
    sp--;
  }
  free(stack);
}

bool verify_circuits(Comp *c, Node *const *roots, int n, bool tensors_loaded, const char *stage) {
  Walk w = {c, stage, tensors_loaded, c->next_node_id, NULL, NULL, true};
  w.owner = calloc((size_t)w.nids + 1, sizeof *w.owner);
  w.color = calloc((size_t)w.nids + 1, 1);
  if (!w.owner || !w.color) ICE("out of memory");
  for (int i = 0; i < n && w.ok; i++) {
    if (!roots[i]) w.ok = broken(c, stage, NO_LOC, "output %d is NULL", i);
    else walk(&w, roots[i]);
  }
  free(w.owner);
  free(w.color);
  return w.ok;
}

/* ------------------------------------------------------------ kernels */

typedef struct ViewCheck {
  Comp *c;
  const Kernels *k;
  const char *stage;
  int step;
  bool ok;
} ViewCheck;

static bool buf_known(const Kernels *k, const Buf *b) { return b->id >= 0 && b->id < k->nbuf && k->buf[b->id] == b; }

/* Every element a view can address lies inside its buffer. */
static bool view_inside(const View *v) {
  int64_t lo = v->offset, hi = v->offset;
  for (int d = 0; d < v->rank; d++) {
    if (v->dim[d] <= 0) return true; /* empty: addresses nothing */
    int64_t span = (v->dim[d] - 1) * v->stride[d];
    if (span < 0) lo += span;
    else hi += span;
  }
  return lo >= 0 && hi < v->buf->numel;
}

static void check_view(const View *v, ViewCheck *vc, bool read) {
  if (!v->buf || !vc->ok) return;
  const Step *s = vc->k->step[vc->step];
  Loc loc = s->node ? s->node->loc : NO_LOC;
  if (!buf_known(vc->k, v->buf)) {
    vc->ok = broken(vc->c, vc->stage, loc, "step %d uses a buffer that is not in the kernel graph", vc->step);
  } else if (v->rank < 0 || v->rank > 2 * MAX_RANK) {
    vc->ok = broken(vc->c, vc->stage, loc, "step %d has a view of rank %d", vc->step, v->rank);
  } else if (!view_inside(v)) {
    vc->ok = broken(vc->c, vc->stage, loc, "step %d %s buffer %d outside its %lld elements", vc->step,
                    read ? "reads" : "writes", v->buf->id, (long long)v->buf->numel);
  } else if (read && (v->buf->kind == BUF_TEMP || v->buf->kind == BUF_OUTPUT) &&
             (v->buf->def_step < 0 || v->buf->def_step > vc->step)) {
    vc->ok = broken(vc->c, vc->stage, loc, "step %d reads buffer %d before any step writes it", vc->step, v->buf->id);
  } else if (!read && (v->buf->kind == BUF_WEIGHT || v->buf->kind == BUF_INPUT)) {
    vc->ok = broken(vc->c, vc->stage, loc, "step %d writes read-only buffer %d", vc->step, v->buf->id);
  }
}

static void check_read(const View *v, void *arg) { check_view(v, arg, true); }

static int64_t buf_bytes(const Buf *b) { return b->numel * (int64_t)dtype_size(b->dtype); }

/* After memplan: temporaries sit inside the arena, aligned, and two that are
 * live at the same step never share bytes; used weights sit inside the blob. */
static bool check_plan(Comp *c, const Kernels *k, const char *stage) {
  for (int i = 0; i < k->nbuf; i++) {
    const Buf *a = k->buf[i];
    if (a->kind == BUF_WEIGHT && a->last_use >= 0 &&
        (a->offset < 0 || a->offset % 64 || a->offset + buf_bytes(a) > k->weights_bytes))
      return broken(c, stage, NO_LOC, "weight buffer %d is not inside the weights blob", a->id);
    if (a->kind != BUF_TEMP || a->def_step < 0) continue;
    if (a->offset < 0 || a->offset % 64 || a->offset + buf_bytes(a) > k->arena_bytes)
      return broken(c, stage, NO_LOC, "buffer %d [%lld, +%lld) is not an aligned slot of the %lld-byte arena", a->id,
                    (long long)a->offset, (long long)buf_bytes(a), (long long)k->arena_bytes);
    for (int j = i + 1; j < k->nbuf; j++) {
      const Buf *b = k->buf[j];
      if (b->kind != BUF_TEMP || b->def_step < 0) continue;
      bool live_together = a->def_step <= b->last_use && b->def_step <= a->last_use;
      bool share_bytes = a->offset < b->offset + buf_bytes(b) && b->offset < a->offset + buf_bytes(a);
      if (live_together && share_bytes)
        return broken(c, stage, NO_LOC, "buffers %d and %d are live together (steps %d-%d, %d-%d) but overlap in the arena",
                      a->id, b->id, a->def_step, a->last_use, b->def_step, b->last_use);
    }
  }
  return true;
}

bool verify_kernels(Comp *c, const Kernels *k, bool planned, const char *stage) {
  for (int i = 0; i < k->nbuf; i++)
    if (!k->buf[i] || k->buf[i]->id != i) return broken(c, stage, NO_LOC, "buffer %d is missing or misnumbered", i);
  for (int i = 0; i < k->ninputs; i++)
    if (!k->input[i] || k->input[i]->kind != BUF_INPUT || k->input[i]->index != i || !buf_known(k, k->input[i]))
      return broken(c, stage, NO_LOC, "input %d has no input buffer", i);
  for (int i = 0; i < k->noutputs; i++)
    if (!k->output[i] || k->output[i]->kind != BUF_OUTPUT || k->output[i]->index != i || !buf_known(k, k->output[i]))
      return broken(c, stage, NO_LOC, "output %d has no output buffer", i);
  ViewCheck vc = {c, k, stage, 0, true};
  for (int i = 0; i < k->nstep && vc.ok; i++) {
    const Step *s = k->step[i];
    vc.step = i;
    if (!s || !s->out.buf) return broken(c, stage, NO_LOC, "step %d has no output", i);
    check_view(&s->out, &vc, false);
    if (step_epilogue(s)) check_view(&step_epilogue(s)->out, &vc, false);
    step_each_read(s, check_read, &vc);
  }
  if (!vc.ok) return false;
  for (int i = 0; i < k->noutputs; i++)
    if (k->output[i]->def_step < 0) return broken(c, stage, NO_LOC, "no step writes output %d", i);
  return !planned || check_plan(c, k, stage);
}
