/* test_schedule.c — schedule.c's phases on hand-built kernel graphs (steps
 * that do not depend on each other share a phase; a read after a write, a
 * write after a read and writes of the same elements start a new one, writes
 * of disjoint parts of one buffer do not; dependent serial steps form one
 * group on one thread, independent ones spread), memplan.c's offsets (no
 * two buffers used in one phase share bytes, buffers of different phases
 * may), and the barriers of a generated program (one per phase). Values of
 * programs with independent branches on 1, 2 and 3 threads: test_codegen.c
 * (independent_branches) and test_regions.c (errors inside a phase). */
#include <criterion/criterion.h>
#include <string.h>
#include "circc.h"
#include "driver.h"
#include "kernel.h"
#include "testutil.h"

enum { BIG = 40000, SMALL = 100 }; /* elements: over and under emit's PARALLEL_MIN_WORK */

typedef struct Graph {
  Kernels k;
  Buf bufs[16];
  Buf *bufp[16];
  Step steps[16];
  Step *stepp[16];
  Expr load[16];
  Expr *loadp[16];
} Graph;

static Buf *buf(Graph *g, BufKind kind, int64_t numel) {
  int i = g->k.nbuf++;
  g->bufs[i] = (Buf){.id = i, .kind = kind, .dtype = DT_F32, .numel = numel, .def_step = -1, .last_use = -1};
  g->bufp[i] = &g->bufs[i];
  g->k.buf = g->bufp;
  return &g->bufs[i];
}

/* A rank-2 view [rows, cols] of b at offset with row stride `row`. */
static View view2(Buf *b, int64_t offset, int64_t rows, int64_t cols, int64_t row) {
  return (View){.buf = b, .offset = offset, .rank = 2, .dim = {rows, cols}, .stride = {row, 1}};
}

static View whole(Buf *b) { return view2(b, 0, 1, b->numel, b->numel); }

/* out = in (elementwise copy over out's shape; in may be absent: a fill) */
static Step *copy(Graph *g, View out, const View *in) {
  int i = g->k.nstep++;
  Step *s = &g->steps[i];
  *s = (Step){.id = i, .out = out, .ndim = 2, .dim = {out.dim[0], out.dim[1]}};
  if (in) {
    g->load[i] = (Expr){.kind = EX_LOAD, .view = *in};
    s->kind = STEP_ELEMENTWISE;
    s->u.elementwise.expr = &g->load[i];
  } else {
    s->kind = STEP_FILL;
  }
  if (out.buf->def_step < 0) out.buf->def_step = i;
  g->stepp[i] = s;
  g->k.step = g->stepp;
  return s;
}

static void init(Graph *g) { memset(g, 0, sizeof *g); }

/* Phase of the step that was program step `orig` (steps are renumbered). */
static int phase_of(const Graph *g, int orig) { return g->steps[orig].phase; }

Test(schedule, independent_steps_share_a_phase) {
  Graph g;
  init(&g);
  Buf *x = buf(&g, BUF_INPUT, BIG), *a = buf(&g, BUF_TEMP, BIG), *b = buf(&g, BUF_TEMP, BIG), *c = buf(&g, BUF_TEMP, BIG);
  View vx = whole(x);
  copy(&g, whole(a), &vx);
  copy(&g, whole(b), &vx);
  copy(&g, whole(c), &vx);
  schedule_phases(&g.k);
  cr_assert_eq(g.k.nphase, 1);
  for (int i = 0; i < 3; i++) cr_assert_eq(phase_of(&g, i), 0);
  /* the arena: all three at once, none shares bytes */
  memplan_assign(&g.k);
  cr_assert_eq(g.k.arena_bytes, 3 * BIG * 4);
  cr_assert(a->offset != b->offset && b->offset != c->offset && a->offset != c->offset);
}

Test(schedule, read_after_write_starts_a_phase_and_memory_is_reused_across_phases) {
  Graph g;
  init(&g);
  Buf *x = buf(&g, BUF_INPUT, BIG), *a = buf(&g, BUF_TEMP, BIG), *b = buf(&g, BUF_TEMP, BIG),
      *c = buf(&g, BUF_TEMP, BIG), *o = buf(&g, BUF_OUTPUT, BIG);
  View vx = whole(x), va = whole(a), vb = whole(b), vc = whole(c);
  copy(&g, whole(a), &vx); /* phase 0 */
  copy(&g, whole(b), &va); /* phase 1: reads a */
  copy(&g, whole(c), &vb); /* phase 2: reads b; a is dead, c may take its place */
  copy(&g, whole(o), &vc); /* phase 3 */
  schedule_phases(&g.k);
  cr_assert_eq(g.k.nphase, 4);
  for (int i = 0; i < 4; i++) cr_assert_eq(phase_of(&g, i), i);
  memplan_assign(&g.k);
  cr_assert_neq(a->offset, b->offset, "a is read in the phase that writes b");
  cr_assert_neq(b->offset, c->offset);
  cr_assert_eq(c->offset, a->offset, "a's last reader was a phase before c's writer");
  cr_assert_eq(g.k.arena_bytes, 2 * BIG * 4);
}

Test(schedule, a_buffer_read_in_a_phase_never_shares_bytes_with_one_written_in_it) {
  /* step 2 reads a last, step 3 then writes e: step by step, e would take
   * a's bytes; in one phase the two run at the same time */
  Graph g;
  init(&g);
  Buf *x = buf(&g, BUF_INPUT, BIG), *a = buf(&g, BUF_TEMP, BIG), *d = buf(&g, BUF_TEMP, BIG),
      *e = buf(&g, BUF_TEMP, BIG), *o = buf(&g, BUF_OUTPUT, BIG), *p = buf(&g, BUF_OUTPUT, BIG);
  View vx = whole(x), va = whole(a), vd = whole(d), ve = whole(e);
  copy(&g, whole(a), &vx); /* phase 0 */
  copy(&g, whole(o), &va); /* phase 1 */
  copy(&g, whole(d), &vx); /* phase 0: only reads x */
  copy(&g, whole(e), &vd); /* phase 1 */
  copy(&g, whole(p), &ve); /* phase 2 */
  schedule_phases(&g.k);
  cr_assert_eq(g.k.nphase, 3);
  int want[] = {0, 1, 0, 1, 2};
  for (int i = 0; i < 5; i++) cr_assert_eq(phase_of(&g, i), want[i], "step %d", i);
  /* sorted by phase, program order among ties */
  int id[] = {0, 2, 1, 3, 4};
  for (int i = 0; i < 5; i++) cr_assert_eq(g.steps[i].id, id[i], "step %d", i);
  cr_assert(g.k.step[1] == &g.steps[2] && g.k.step[2] == &g.steps[1]);
  cr_assert_eq(d->def_step, 1);
  cr_assert_eq(e->def_step, 3);
  memplan_assign(&g.k);
  Buf *used[] = {a, d, e};
  for (int i = 0; i < 3; i++)
    for (int j = i + 1; j < 3; j++)
      cr_assert(used[i]->offset + BIG * 4 <= used[j]->offset || used[j]->offset + BIG * 4 <= used[i]->offset,
                "buffers %d and %d overlap", used[i]->id, used[j]->id);
}

Test(schedule, write_after_read_starts_a_phase) {
  Graph g;
  init(&g);
  Buf *x = buf(&g, BUF_INPUT, BIG), *y = buf(&g, BUF_INPUT, BIG), *t = buf(&g, BUF_OUTPUT, BIG),
      *u = buf(&g, BUF_OUTPUT, BIG);
  View vx = whole(x), vy = whole(y), vt = whole(t);
  copy(&g, whole(t), &vx); /* phase 0 */
  copy(&g, whole(u), &vt); /* phase 1: reads t */
  copy(&g, whole(t), &vy); /* phase 2: overwrites t after step 1 read it */
  schedule_phases(&g.k);
  cr_assert_eq(g.k.nphase, 3);
  cr_assert_eq(phase_of(&g, 2), 2);
}

Test(schedule, writes_of_the_same_elements_keep_their_order_disjoint_parts_do_not) {
  Graph g;
  init(&g);
  /* o is [2000, 100]: rows 0-999 and 1000-1999 (a Concat along axis 0); q is
   * [5000, 20]: columns 0-9 and 10-19 of every row (along axis 1); then
   * parts again */
  Buf *x = buf(&g, BUF_INPUT, 100000), *o = buf(&g, BUF_OUTPUT, 200000), *q = buf(&g, BUF_OUTPUT, 100000);
  View rows = view2(x, 0, 1000, 100, 100), cols = view2(x, 0, 5000, 10, 20), two = view2(x, 0, 5000, 2, 20);
  copy(&g, view2(o, 0, 1000, 100, 100), &rows);      /* 0 */
  copy(&g, view2(o, 100000, 1000, 100, 100), &rows); /* 0: the other rows */
  copy(&g, view2(q, 0, 5000, 10, 20), &cols);        /* 0 */
  copy(&g, view2(q, 10, 5000, 10, 20), &cols);       /* 0: the other columns */
  copy(&g, view2(q, 9, 5000, 2, 20), &two);          /* 1: columns 9-10 meet both */
  copy(&g, view2(o, 100, 1, 100, 100), &rows);       /* 1: row 1 again */
  copy(&g, view2(o, 1, 40000, 1, 5), NULL);          /* 2: every 5th element from 1: row 1 has some */
  schedule_phases(&g.k);
  int want[] = {0, 0, 0, 0, 1, 1, 2};
  for (int i = 0; i < 7; i++) cr_assert_eq(phase_of(&g, i), want[i], "step %d", i);
  cr_assert_eq(g.k.nphase, 3);
  /* o and q are outputs: no arena */
  memplan_assign(&g.k);
  cr_assert_eq(g.k.arena_bytes, 0);
}

Test(schedule, dependent_serial_steps_form_one_group_independent_ones_spread) {
  Graph g;
  init(&g);
  Buf *x = buf(&g, BUF_INPUT, SMALL), *a = buf(&g, BUF_TEMP, SMALL), *o = buf(&g, BUF_OUTPUT, SMALL),
      *p = buf(&g, BUF_OUTPUT, SMALL), *q = buf(&g, BUF_OUTPUT, BIG);
  View vx = whole(x), va = whole(a);
  copy(&g, whole(a), &vx); /* serial, group A */
  copy(&g, whole(o), &va); /* serial, reads a: group A, same phase */
  copy(&g, whole(p), &vx); /* serial, group B */
  copy(&g, whole(q), NULL); /* parallel fill: same phase */
  /* a parallel step after a serial one it reads: a new phase */
  Buf *r = buf(&g, BUF_OUTPUT, BIG);
  View big_p = view2(p, 0, BIG / SMALL, SMALL, 0);
  copy(&g, view2(r, 0, BIG / SMALL, SMALL, SMALL), &big_p);
  schedule_phases(&g.k);
  cr_assert(!step_parallel(&g.steps[0]) && !step_parallel(&g.steps[2]) && step_parallel(&g.steps[3]) &&
            step_parallel(&g.steps[4]));
  cr_assert_eq(g.k.nphase, 2);
  for (int i = 0; i < 4; i++) cr_assert_eq(phase_of(&g, i), 0, "step %d", i);
  cr_assert_eq(phase_of(&g, 4), 1);
  cr_assert_eq(g.steps[0].place, g.steps[1].place, "one thread runs a then o");
  /* group A costs about twice B: A sits in the first third, B in the last */
  cr_assert_lt(g.steps[0].place, 32768);
  cr_assert_gt(g.steps[2].place, 32768);
  cr_assert_eq(g.steps[0].place * 2 >> 16, 0, "2 threads: A on thread 0");
  cr_assert_eq(g.steps[2].place * 2 >> 16, 1, "2 threads: B on thread 1");
  cr_assert_eq(g.steps[2].place * 1 >> 16, 0, "1 thread: all on thread 0");
  memplan_assign(&g.k);
  cr_assert_eq(a->offset, 0);
}

static int count(const char *text, const char *what) {
  int n = 0;
  for (const char *p = strstr(text, what); p; p = strstr(p + 1, what)) n++;
  return n;
}

/* Three products of one input, then their sum: the sum runs as the last
 * GEMM's epilogue (fuse.c), so that GEMM waits for the other two, which share
 * the first phase. */
static const char THREE_PRODUCTS[] = "'sum' Add\n"
                                     "  'p1' Einsum ij,jk->ik\n"
                                     "    'x' [128,64] Symbol\n"
                                     "    'w1' [64,96] Array rand\n"
                                     "  'p2' Einsum ij,jk->ik\n"
                                     "    'x'\n"
                                     "    'w2' [64,96] Array rand\n"
                                     "  'p3' Einsum ij,jk->ik\n"
                                     "    'x'\n"
                                     "    'w3' [64,96] Array rand\n";

Test(schedule, a_program_has_one_barrier_per_phase) {
  char *dir = tu_temp_dir("schedule_c");
  Comp *c = tu_comp();
  c->tensors_as_random = true;
  DriverOptions o = {.text = THREE_PRODUCTS, .text_len = strlen(THREE_PRODUCTS), .text_name = "t.circ",
                     .last = STAGE_EMIT, .emit = {.name = "prog", .command_line = "test"},
                     .build = {.output = arena_printf(&c->arena, "%s/prog.d", dir), .emit_c_only = true}};
  Compilation cm = {0};
  cr_assert(driver_run(c, &o, &cm), "%s", tu_diags(c));
  cr_assert_eq(cm.kernels.nstep, 3, "three GEMMs, the sum in the last one");
  cr_assert_eq(cm.kernels.nphase, 2);
  char *text = tu_read_file(arena_printf(&c->arena, "%s/prog.d/model.c", dir), NULL);
  cr_assert(text);
  cr_assert(strstr(text, "static const int phase_start[3] = {0, 2, 3};"), "%s", strstr(text, "phase_start"));
  cr_assert_eq(count(text, "#pragma omp barrier"), 0, "no OpenMP barrier: the team waits at rt_barrier_wait");
  cr_assert_eq(count(text, "rt_barrier_wait("), 1, "the one barrier, in run_steps' loop over the phases");
  free(text);
  tu_free(c);
  tu_sh("rm -rf %s", dir);
  free(dir);
}
