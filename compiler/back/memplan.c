/* memplan.c — places every temporary buffer in one arena. A buffer lives from
 * the phase (schedule.c) of the step that first writes it to the phase of the
 * last step that reads or writes it: the steps of a phase run at the same
 * time, so a buffer one of them uses never shares memory with one another
 * writes. Buffers whose lifetimes do not overlap share memory. Offsets are
 * 64-byte aligned and chosen best-fit among the gaps between live buffers, in
 * step order, so the plan (and the generated code) is deterministic. Weight buffers get their
 * offsets in the weights blob here too. */
#include <stdlib.h>
#include <string.h>
#include "circc.h"
#include "kernel.h"

static void note_read(const View *v, int step) {
  if (v->buf && v->buf->last_use < step) v->buf->last_use = step;
}

static void note_read_at(const View *v, void *step) { note_read(v, *(const int *)step); }

static int64_t align64(int64_t v) { return (v + 63) & ~(int64_t)63; }

void memplan_assign(Kernels *k) {
  if (k->nstep && !k->nphase) ICE("memplan before schedule");
  for (int i = 0; i < k->nstep; i++) {
    const Step *s = k->step[i], *e = step_epilogue(s);
    step_each_read(s, note_read_at, &i);
    /* a buffer written by several steps (Concat, Scatter) lives through all of
     * them; an epilogue writes inside step i */
    note_read(&s->out, i);
    if (e) note_read(&e->out, i);
  }
  /* live temporaries sorted by offset: [off, off+size) */
  int cap = k->nbuf + 1, nlive = 0;
  Buf **live = calloc((size_t)cap, sizeof(Buf *));
  if (!live) ICE("out of memory");
  int64_t peak = 0;
  for (int i = 0; i < k->nstep; i++) {
    /* allocate the temporaries first written by step i */
    for (int b = 0; b < k->nbuf; b++) {
      Buf *t = k->buf[b];
      if (t->kind != BUF_TEMP || t->def_step != i) continue;
      int64_t size = align64(t->numel * (int64_t)dtype_size(t->dtype)), best = -1, best_gap = INT64_MAX, prev_end = 0;
      int best_pos = nlive;
      for (int j = 0; j <= nlive; j++) {
        int64_t next = j < nlive ? live[j]->offset : INT64_MAX, gap = next - prev_end;
        if (gap >= size && (best < 0 || gap < best_gap)) best = prev_end, best_gap = gap, best_pos = j;
        if (j < nlive) prev_end = align64(live[j]->offset + live[j]->numel * (int64_t)dtype_size(live[j]->dtype));
      }
      CHECK(best >= 0);
      t->offset = best;
      memmove(live + best_pos + 1, live + best_pos, sizeof(Buf *) * (size_t)(nlive - best_pos));
      live[best_pos] = t;
      nlive++;
      if (best + size > peak) peak = best + size;
    }
    /* at the end of a phase, free the temporaries whose last reader is in it */
    const int phase = k->step[i]->phase;
    if (i + 1 < k->nstep && k->step[i + 1]->phase == phase) continue;
    int kept = 0;
    for (int j = 0; j < nlive; j++)
      if (k->step[live[j]->last_use]->phase > phase) live[kept++] = live[j];
    nlive = kept;
  }
  free(live);
  k->arena_bytes = peak;
  /* weights: consecutive in the blob, 64-byte aligned; a weight no step reads
   * (one that lowering replaced by a relaid-out copy) is left out */
  int64_t at = 0;
  for (int b = 0; b < k->nbuf; b++) {
    Buf *w = k->buf[b];
    if (w->kind != BUF_WEIGHT) continue;
    if (w->last_use < 0) {
      w->offset = -1;
      continue;
    }
    w->offset = align64(at);
    at = w->offset + w->numel * (int64_t)dtype_size(w->dtype);
  }
  k->weights_bytes = at;
}
