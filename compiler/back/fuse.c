/* fuse.c — GEMM epilogue fusion, a pass over the kernel graph after lower:
 * an elementwise step that is a GEMM result's only reader runs inside the
 * GEMM, on each block of C while it is in cache, and leaves the program.
 * Steps are renumbered; the program's total FLOPs are unchanged. */
#include "circc.h"
#include "kernel.h"

/* A GEMM result that exactly one elementwise step reads (a bias, a residual
 * add, an activation, a copy into another layout: any expression) is finished
 * inside the GEMM: each GEMM task runs that step's expression over the block
 * of C it has just written, while the block is in cache, and the step leaves
 * the program (Step.u.gemm.epilogue). Each element of the step's loop space
 * must read a different element of C, so its dims regroup into the GEMM's
 * [batch..., M, N] (several may make up one merged GEMM dim); its other
 * operands must be ready before the GEMM runs, and it must be the only writer
 * of its output. Arithmetic and order are unchanged. */

typedef struct BufSearch {
  const Buf *buf;
  bool found;
} BufSearch;

static void find_buf(const View *v, void *arg) {
  BufSearch *q = arg;
  q->found |= v->buf == q->buf;
}

static bool expr_reads(const Expr *x, const Buf *b) {
  BufSearch q = {b, false};
  expr_each_load(x, find_buf, &q);
  return q.found;
}

static bool step_reads(const Step *s, const Buf *b) {
  BufSearch q = {b, false};
  step_each_read(s, find_buf, &q);
  return q.found;
}

static bool step_writes(const Step *s, const Buf *b) {
  const Step *e = step_epilogue(s);
  return s->out.buf == b || (e && e->out.buf == b);
}

/* Where step e's loop dims come from when it reads C through view c: both
 * sides sorted by C's strides, e's dims are taken in order until their sizes
 * multiply to the GEMM dim's and must compose into its stride; e's dim d is
 * then (GEMM index epi_src[d] / epi_div[d]) % e->dim[d]. */
static bool epi_map(Step *g, const Step *e, const View *c) {
  int ed[MAX_RANK * 2], ne = 0, gd[MAX_RANK * 2], ng = 0;
  for (int i = 0; i < e->ndim; i++) {
    g->u.gemm.epi_src[i] = -1; /* size 1: always 0 */
    if (e->dim[i] == 1) continue;
    if (c->stride[i] == 0) return false; /* e repeats C's elements */
    ed[ne++] = i;
  }
  for (int j = 0; j < g->u.gemm.nbatch + 2; j++)
    if (g->dim[j] != 1) gd[ng++] = j;
  sort_by_stride(ed, ne, c);
  sort_by_stride(gd, ng, &g->out);
  int p = 0;
  for (int q = 0; q < ng; q++) {
    int j = gd[q], first = p;
    int64_t size = 1;
    while (size < g->dim[j] && p < ne) size *= e->dim[ed[p++]];
    if (size != g->dim[j] || c->stride[ed[p - 1]] != g->out.stride[j]) return false;
    int64_t div = 1;
    for (int t = p - 1; t >= first; t--) {
      if (t > first && c->stride[ed[t - 1]] != c->stride[ed[t]] * e->dim[ed[t]]) return false;
      g->u.gemm.epi_src[ed[t]] = j, g->u.gemm.epi_div[ed[t]] = div;
      div *= e->dim[ed[t]];
    }
  }
  return p == ne;
}

/* Are e's loads of C all one view (returned), and its other operands ready
 * before step gi and not written again until e (step ei)? */
static bool epi_operands(const Kernels *k, const Expr *x, const Buf *c, int gi, int ei, const View **cv) {
  if (x->kind == EX_LOAD) {
    const Buf *b = x->view.buf;
    if (b == c) {
      if (*cv && !view_eq(*cv, &x->view)) return false;
      *cv = &x->view;
    } else if (b->kind == BUF_TEMP || b->kind == BUF_OUTPUT) {
      if (b->def_step < 0 || b->def_step >= gi) return false;
      for (int i = gi + 1; i < ei; i++)
        if (step_writes(k->step[i], b)) return false;
    }
  }
  for (int i = 0; i < x->nargs; i++)
    if (!epi_operands(k, x->arg[i], c, gi, ei, cv)) return false;
  return true;
}

/* Makes step ei GEMM gi's epilogue if it can. */
static bool fuse_epilogue(Kernels *k, int gi, int ei) {
  Step *g = k->step[gi], *e = k->step[ei];
  const Buf *c = g->out.buf;
  Buf *o = e->out.buf;
  const View *cv = NULL;
  if (e->kind != STEP_ELEMENTWISE) return false;
  const Expr *x = e->u.elementwise.expr;
  if (o == c || expr_reads(x, o) || !epi_operands(k, x, c, gi, ei, &cv) || !cv) return false;
  for (int i = 0; i < k->nstep; i++)
    if (i != ei && step_writes(k->step[i], o)) return false;
  if (!epi_map(g, e, cv)) return false;
  g->u.gemm.epilogue = e;
  g->flops += e->flops;
  o->def_step = gi;
  return true;
}

/* Fuses epilogues into GEMMs, then drops the fused steps and renumbers. */
bool fuse_epilogues(Comp *c, Kernels *k) {
  bool *gone = ARENA_ARRAY(&c->arena, bool, k->nstep + 1);
  int *new_id = ARENA_ARRAY(&c->arena, int, k->nstep + 1);
  for (int gi = 0; gi < k->nstep; gi++) {
    Step *g = k->step[gi];
    if (g->kind != STEP_GEMM || g->out.buf->kind != BUF_TEMP) continue;
    int reader = -1, readers = 0;
    bool other_writer = false;
    for (int i = 0; i < k->nstep; i++) {
      if (gone[i] || i == gi) continue;
      if (step_reads(k->step[i], g->out.buf)) readers++, reader = i;
      other_writer |= step_writes(k->step[i], g->out.buf);
    }
    if (readers == 1 && !other_writer && reader > gi && fuse_epilogue(k, gi, reader)) gone[reader] = true;
  }
  int n = 0;
  for (int i = 0; i < k->nstep; i++) {
    new_id[i] = n;
    if (!gone[i]) k->step[n] = k->step[i], k->step[n]->id = n, n++;
  }
  for (int b = 0; b < k->nbuf; b++) {
    Buf *t = k->buf[b];
    if (t->def_step < 0) continue;
    if (gone[t->def_step]) ICE("a buffer written by a fused step");
    t->def_step = new_id[t->def_step];
  }
  k->nstep = n;
  return true;
}
