/* schedule.c — orders the steps into phases, a pass over the kernel graph
 * between fuse and memplan. The generated program's threads wait at a barrier
 * only after each phase (emit.c, run_steps), so steps of one phase must not
 * depend on each other unless one thread runs them in order: a step goes into
 * the first phase after every step it depends on (read after write, write
 * after read, write after write — two writes of one buffer only where their
 * elements can meet, so the parts of a Concat or of an output are
 * independent), and a serial step may join the phase of the serial steps it
 * depends on: those form a group that one thread runs in program order.
 * Steps are then sorted by phase (program order among ties, so the result is
 * deterministic) and renumbered; each serial group gets a place in the team,
 * groups spread by estimated cost. */
#include <stdlib.h>
#include <string.h>
#include "circc.h"
#include "kernel.h"

/* One buffer a step reads or writes. */
typedef struct Access {
  int step;
  const View *view; /* a write's view (its elements); a read counts as the whole buffer */
  bool write;
} Access;

typedef struct Accesses {
  Access *a;
  int n, cap;
  int step;
} Accesses;

static void push(Accesses *x, const View *v, bool write) {
  /* weights and inputs are never written: no order between their readers */
  if (!v->buf || v->buf->kind == BUF_WEIGHT || v->buf->kind == BUF_INPUT) return;
  if (x->n == x->cap) {
    x->cap = x->cap ? 2 * x->cap : 256;
    x->a = realloc(x->a, sizeof(Access) * (size_t)x->cap);
    if (!x->a) ICE("out of memory");
  }
  x->a[x->n++] = (Access){x->step, v, write};
}

static void push_read(const View *v, void *arg) { push(arg, v, false); }

/* The lowest and highest element v addresses; false if it addresses none. */
static bool view_span(const View *v, int64_t *lo, int64_t *hi) {
  *lo = *hi = v->offset;
  for (int d = 0; d < v->rank; d++) {
    if (v->dim[d] <= 0) return false;
    int64_t span = (v->dim[d] - 1) * v->stride[d];
    if (span < 0) *lo += span;
    else *hi += span;
  }
  return true;
}

/* Can views a and b of one buffer address a common element? Disjoint spans
 * cannot; otherwise, when the strides of both nest (each divides the next
 * larger one, every offset a multiple of the smallest), each view is a box of
 * digits in that mixed radix, and boxes that miss each other in one digit
 * are disjoint (a Concat's parts along an inner axis). Anything else may meet. */
static bool views_may_overlap(const View *a, const View *b) {
  int64_t alo, ahi, blo, bhi;
  if (!view_span(a, &alo, &ahi) || !view_span(b, &blo, &bhi)) return false;
  if (ahi < blo || bhi < alo) return false;
  const View *v[2] = {a, b};
  int64_t radix_stride[4 * MAX_RANK];
  int ns = 0;
  for (int q = 0; q < 2; q++)
    for (int d = 0; d < v[q]->rank; d++) {
      int64_t s = v[q]->stride[d];
      if (v[q]->dim[d] == 1 || s == 0) continue;
      if (s < 0) return true;
      int t = 0;
      while (t < ns && radix_stride[t] > s) t++;
      if (t < ns && radix_stride[t] == s) continue;
      memmove(radix_stride + t + 1, radix_stride + t, sizeof(int64_t) * (size_t)(ns - t));
      radix_stride[t] = s, ns++;
    }
  if (ns == 0) return true; /* single elements at overlapping spans: the same one */
  for (int t = 1; t < ns; t++)
    if (radix_stride[t - 1] % radix_stride[t]) return true;
  int64_t lo[2][4 * MAX_RANK], len[2][4 * MAX_RANK];
  for (int q = 0; q < 2; q++) {
    if (v[q]->offset % radix_stride[ns - 1]) return true;
    for (int t = 0; t < ns; t++) len[q][t] = 1;
    for (int d = 0; d < v[q]->rank; d++) {
      if (v[q]->dim[d] == 1 || v[q]->stride[d] == 0) continue;
      int t = 0;
      while (radix_stride[t] != v[q]->stride[d]) t++;
      if (len[q][t] != 1) return true; /* two dims of one stride */
      len[q][t] = v[q]->dim[d];
    }
    int64_t r = v[q]->offset;
    for (int t = 0; t < ns; t++) {
      lo[q][t] = r / radix_stride[t], r %= radix_stride[t];
      if (t > 0 && lo[q][t] + len[q][t] > radix_stride[t - 1] / radix_stride[t]) return true; /* a digit carries */
    }
  }
  for (int t = 0; t < ns; t++)
    if (lo[0][t] + len[0][t] <= lo[1][t] || lo[1][t] + len[1][t] <= lo[0][t]) return false;
  return true;
}

/* Must the access x (of an earlier step) happen before y? */
static bool hazard(const Access *x, const Access *y) {
  if (x->view->buf != y->view->buf || x->step == y->step || (!x->write && !y->write)) return false;
  return !(x->write && y->write) || views_may_overlap(x->view, y->view);
}

static int by_buffer(const void *p, const void *q) {
  const Access *x = p, *y = q;
  if (x->view->buf->id != y->view->buf->id) return x->view->buf->id < y->view->buf->id ? -1 : 1;
  return x->step < y->step ? -1 : x->step > y->step;
}

static int find(int *parent, int i) {
  while (parent[i] != i) i = parent[i] = parent[parent[i]];
  return i;
}

/* A step's work for balancing serial groups: its FLOPs and the elements it writes. */
static double step_cost(const Step *s) {
  double n = 1;
  for (int d = 0; d < s->out.rank; d++)
    if (s->out.stride[d]) n *= (double)s->out.dim[d];
  return 1 + s->flops + n;
}

typedef struct Edge {
  int from, to;
} Edge;

void schedule_phases(Kernels *k) {
  const int n = k->nstep;
  k->nphase = 0;
  if (n <= 0) return;
  Accesses acc = {0};
  for (int i = 0; i < n; i++) {
    const Step *s = k->step[i], *e = step_epilogue(s);
    acc.step = i;
    step_each_read(s, push_read, &acc);
    push(&acc, &s->out, true);
    if (e) push(&acc, &e->out, true);
  }
  /* the dependences: pairs of accesses of one buffer, in program order. A
   * read is only checked against the earlier writes (reads do not order each
   * other), so a buffer read by many steps costs reads x writes, not reads^2. */
  qsort(acc.a, (size_t)acc.n, sizeof(Access), by_buffer);
  Edge *edge = NULL;
  int nedge = 0, cap = 0, seg = 0, nwrite = 0, *write_at = malloc(sizeof(int) * ((size_t)acc.n + 1));
  if (!write_at) ICE("out of memory");
  for (int y = 0; y < acc.n; y++) {
    if (acc.a[y].view->buf != acc.a[seg].view->buf) seg = y, nwrite = 0; /* the next buffer's accesses */
    const bool w = acc.a[y].write;
    for (int t = 0, nx = w ? y - seg : nwrite; t < nx; t++) {
      const int x = w ? seg + t : write_at[t];
      if (!hazard(&acc.a[x], &acc.a[y])) continue;
      if (nedge == cap) {
        cap = cap ? 2 * cap : 256;
        if (!(edge = realloc(edge, sizeof(Edge) * (size_t)cap))) ICE("out of memory");
      }
      edge[nedge++] = (Edge){acc.a[x].step, acc.a[y].step};
    }
    if (w) write_at[nwrite++] = y;
  }
  free(write_at);
  free(acc.a);
  /* phases in program order: each edge into step i is final once i is reached */
  int *phase = calloc((size_t)n, sizeof(int)), *parent = malloc(sizeof(int) * (size_t)n);
  bool *serial = malloc(sizeof(bool) * (size_t)n);
  int *into = calloc((size_t)n + 1, sizeof(int)), *from = malloc(sizeof(int) * ((size_t)nedge + 1));
  if (!phase || !parent || !serial || !into || !from) ICE("out of memory");
  for (int j = 0; j < nedge; j++) into[edge[j].to + 1]++;
  for (int i = 0; i < n; i++) into[i + 1] += into[i];
  int *fill = malloc(sizeof(int) * (size_t)n);
  if (!fill) ICE("out of memory");
  memcpy(fill, into, sizeof(int) * (size_t)n);
  for (int j = 0; j < nedge; j++) from[fill[edge[j].to]++] = edge[j].from;
  free(fill);
  free(edge);
  for (int i = 0; i < n; i++) serial[i] = !step_parallel(k->step[i]), parent[i] = i;
  for (int i = 0; i < n; i++)
    for (int j = into[i]; j < into[i + 1]; j++) {
      int p = phase[from[j]] + !(serial[from[j]] && serial[i]);
      if (p > phase[i]) phase[i] = p;
    }
  /* serial steps of one phase that depend on each other: one group */
  for (int i = 0; i < n; i++)
    for (int j = into[i]; j < into[i + 1]; j++)
      if (serial[i] && serial[from[j]] && phase[from[j]] == phase[i]) parent[find(parent, from[j])] = find(parent, i);
  free(into), free(from);
  /* sort by phase, program order among ties (counting sort) */
  int nphase = 0;
  for (int i = 0; i < n; i++)
    if (phase[i] + 1 > nphase) nphase = phase[i] + 1;
  int *start = calloc((size_t)nphase + 1, sizeof(int)), *new_id = malloc(sizeof(int) * (size_t)n);
  Step **old = malloc(sizeof(Step *) * (size_t)n);
  if (!start || !new_id || !old) ICE("out of memory");
  for (int i = 0; i < n; i++) start[phase[i] + 1]++;
  for (int p = 0; p < nphase; p++) start[p + 1] += start[p];
  for (int i = 0; i < n; i++) new_id[i] = start[phase[i]]++;
  memcpy(old, k->step, sizeof(Step *) * (size_t)n);
  for (int i = 0; i < n; i++) {
    Step *s = old[i];
    s->id = new_id[i], s->phase = phase[i], s->place = 0;
    k->step[new_id[i]] = s;
  }
  /* each serial group's place: the middle of its share of its phase's serial
   * cost, groups in order of their first step */
  double *cost = calloc((size_t)n, sizeof(double)), *total = calloc((size_t)nphase, sizeof(double)),
         *before = calloc((size_t)nphase, sizeof(double));
  int *place = malloc(sizeof(int) * (size_t)n);
  if (!cost || !total || !before || !place) ICE("out of memory");
  for (int i = 0; i < n; i++)
    if (serial[i]) cost[find(parent, i)] += step_cost(old[i]), total[phase[i]] += step_cost(old[i]);
  for (int i = 0; i < n; i++) {
    if (!serial[i]) continue;
    int r = find(parent, i);
    if (cost[r] > 0) { /* the group's first step (cost 0 once placed) */
      double mid = (before[phase[i]] + cost[r] / 2) / total[phase[i]];
      before[phase[i]] += cost[r];
      cost[r] = 0;
      place[r] = mid * 65536 < 65535 ? (int)(mid * 65536) : 65535;
    }
    old[i]->place = place[r];
  }
  free(cost), free(total), free(before), free(place);
  /* a buffer is first written by its earliest writer in the new order */
  for (int b = 0; b < k->nbuf; b++)
    if (k->buf[b]->def_step >= 0) k->buf[b]->def_step = n;
  for (int i = 0; i < n; i++) {
    const Step *s = k->step[i], *e = step_epilogue(s);
    Buf *w[2] = {s->out.buf, e ? e->out.buf : NULL};
    for (int q = 0; q < 2; q++)
      if (w[q] && w[q]->def_step > i) w[q]->def_step = i;
  }
  k->nphase = nphase;
  free(phase), free(parent), free(serial), free(start), free(new_id), free(old);
}
