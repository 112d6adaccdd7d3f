/* kernel.h — the kernel graph that lower builds and fuse, memplan and emit
 * read: buffers, strided views into them, and the steps of the generated
 * program in execution order. Buffers and steps point at the circuit nodes
 * they hold or compute, for comments and run-time messages, the shapes of
 * inputs and outputs, and lowering's own bookkeeping; they never modify the
 * circuit. */
#ifndef CIRCC_KERNEL_H
#define CIRCC_KERNEL_H
#include "ir.h"

typedef enum BufKind {
  BUF_WEIGHT, /* in the weights blob, read-only */
  BUF_INPUT,  /* program input `index` */
  BUF_OUTPUT, /* program output `index` */
  BUF_TEMP,   /* in the arena at `offset` (memplan) */
} BufKind;

/* How a weight copy holds a GEMM's B, the view Buf.packed_of over the GEMM's
 * loop dims [batch..., M, N, K] of `tensor`: one matrix per batch index where
 * the view's batch stride is not 0, in the layout its template reads. */
typedef enum Packing {
  PACK_NONE, /* a plain weight: `tensor` as it is */
  PACK_F32,  /* fp32 pre-packed panels (templates/gemm_f32.h, circc_gemm_packed_b_index); numel counts floats */
  PACK_BF16, /* --precision bf16: rounded to bf16, VNNI panels (templates/gemm_bf16.h); numel counts 4-byte words */
  PACK_INT8, /* --precision int8: circc_int8_quantize, circc_int8_block (templates/gemm_int8.h); 4-byte words */
} Packing;

typedef struct Buf {
  int id;
  BufKind kind;
  DType dtype;        /* DT_F32 or DT_I64 */
  int64_t numel;
  int64_t offset;     /* bytes: blob offset (weights) or arena offset (temps) */
  int index;          /* input/output index */
  int def_step;       /* step that writes it (-1: weights and inputs) */
  int last_use;       /* last step that reads it (memplan) */
  const Node *node;   /* the node it holds: comments; inputs and outputs: their shape (and a Symbol's identity) */
  const Tensor *tensor; /* BUF_WEIGHT: the data (converted to dtype in the blob) */
  Packing packing;    /* BUF_WEIGHT: PACK_NONE, or a GEMM's B packed (packed_of) */
  const struct View *packed_of;
  /* BUF_INPUT: a float32 input the program holds as bf16 (lower_bf16_inputs;
   * only GEMMs with a bf16-B kernel read it) */
  bool stored_bf16;
} Buf;

/* A strided view of a buffer over `rank` loop dims (elements, not bytes). */
typedef struct View {
  Buf *buf;
  int64_t offset;
  int rank;
  int64_t dim[MAX_RANK];
  int64_t stride[MAX_RANK];
} View;

/* Do a and b address the same elements (strides of size-1 dims aside)? */
static inline bool view_eq(const View *a, const View *b) {
  if (a->buf != b->buf || a->offset != b->offset || a->rank != b->rank) return false;
  for (int d = 0; d < a->rank; d++)
    if (a->dim[d] != b->dim[d] || (a->dim[d] != 1 && a->stride[d] != b->stride[d])) return false;
  return true;
}

/* Orders dims ids[0..n) by decreasing stride in view v (outer first), the
 * row-major order in which they could merge. */
static inline void sort_by_stride(int *ids, int n, const View *v) {
  for (int i = 1; i < n; i++)
    for (int j = i; j > 0 && v->stride[ids[j]] > v->stride[ids[j - 1]]; j--) {
      int t = ids[j];
      ids[j] = ids[j - 1];
      ids[j - 1] = t;
    }
}

typedef enum ExprKind {
  EX_LOAD,    /* view[leaf] at the loop coordinates */
  EX_CONST,   /* value */
  EX_ADD,     /* sum of args */
  EX_MUL,     /* product of args */
  EX_FN,      /* elementwise GeneralFunction `fn` of arg 0 */
  EX_POW,     /* arg0 ^ arg1 */
  EX_CAST,    /* cast of arg 0 to `cast_to` (rounding/truncation), result as float */
  EX_USER,    /* an --ops elementwise function `user` of args 0 (and 1) */
} ExprKind;

typedef struct Expr {
  ExprKind kind;
  int nargs;
  struct Expr **arg;
  View view;          /* EX_LOAD: over the step's loop dims */
  double value;       /* EX_CONST */
  GenFnKind fn;       /* EX_FN */
  DType cast_to;      /* EX_CAST */
  const UserOp *user; /* EX_USER */
} Expr;

typedef enum StepKind {
  STEP_ELEMENTWISE, /* u.elementwise: out[loop] = expr over `ndim` loop dims */
  STEP_CONTRACT,    /* u.contract: out[out ids] (+)= Π operands over all ids; sum over ids not in out */
  STEP_ROW,         /* u.row: softmax / log_softmax (or one element of it) / min / max over the last axis */
  STEP_GATHER,      /* u.gather: out[loop] = x[base(loop) + Σ_k stride_k * wrap(index_k[loop])] */
  STEP_FILL,        /* u.fill: out = value (zero-init before a Scatter / repeated-id einsum) */
  STEP_GEMM,        /* u.gemm: batched GEMM (templates/gemm_f32.h): loop dims [batch..., M, N, K] */
  STEP_LAYERNORM,   /* u.layernorm: (x - mean) * rsqrt(var + eps) * scale + bias over the last axis (row_f32.h) */
  STEP_ATTENTION,   /* u.attn: fused softmax(Q·Kᵀ·F + B)·V (templates/attention_f32.h, _bf16.h) */
  STEP_GENERAL,     /* u.general: an --ops general function over whole tensors, out contiguous */
  STEP_PATCH,       /* u.patch: out (contiguous) = the run-time patch value if given, else in */
} StepKind;

#define MAX_GATHER 8

/* One step of the program: what every kind has, then its own payload in the
 * union member named after its kind. A view whose buf is NULL is absent. */
typedef struct Step {
  StepKind kind;
  int id;
  const Node *node;       /* circuit node computed (comments, run-time messages) */
  View out;               /* over the loop dims (ROW, LAYERNORM: the node's shape; ATTENTION: see attn) */
  int ndim;               /* loop dims (ROW, LAYERNORM: none; their rows are in's) */
  int64_t dim[MAX_RANK * 2];
  double flops;
  /* schedule.c: the phase the step runs in (steps are sorted by phase; no
   * barrier between the steps of one phase) and, for a serial step, where its
   * group of serial steps sits in the team: thread place * nthreads >> 16 */
  int phase;
  int place;
  union {
    struct {
      Expr *expr;
    } elementwise;
    /* loop dims 0..nout-1 are output ids, the rest are summed; op[0..nops)
     * are over all ndim dims (stride 0 where an id is absent) */
    struct {
      int nout, nops;
      View op[2];
    } contract;
    struct {
      GenFnKind fn;
      View in;            /* over (rows..., len) */
      /* log_softmax only: absent (buf NULL), or an index over (rows...): the
       * step writes one element per row, log_softmax(row)[index] (a loss's
       * label gather fused in, so the row is never written) */
      View pick;
      bool pick_check_int; /* a float index must be integral (gen_index's _c) */
      const UserOp *user;  /* fn GF_USER: the --ops row function (in has unit stride on the last axis) */
    } row;
    /* x viewed over the loop dims (stride 0 on gathered dims); index k is
     * read through idx[k] (over the loop dims) and scaled by idx_stride[k];
     * idx_len[k] is the size of the indexed axis (range check, negative wrap) */
    struct {
      View x;
      int nidx;
      View idx[MAX_GATHER];
      int64_t idx_stride[MAX_GATHER], idx_len[MAX_GATHER];
      bool check_int;     /* index read from a float buffer must be integral */
    } gather;
    struct {
      double value;
    } fill;
    /* ndim = nbatch + 3, loop dims [batch..., M, N, K]; out is C (no K stride) */
    struct {
      int nbatch;
      View a;             /* A: no N stride */
      View b;             /* B: no M stride */
      /* only on a step_is_gemv step: a column mask over [batch..., N] that the
       * consumer multiplies C by, so columns where it is 0 are written 0
       * without being computed */
      View mask;
      /* an elementwise step that reads C and left the program (fuse.c), or
       * NULL; each task runs it over the block of C it wrote. Its loop dim d
       * is (GEMM loop index epi_src[d] / epi_div[d]) % its size (epi_src -1:
       * size 1). */
      struct Step *epilogue;
      int epi_src[MAX_RANK * 2];
      int64_t epi_div[MAX_RANK * 2];
      bool no_gemv;       /* never the one-row kernel (Program.batch_invariant) */
      /* PACK_NONE, or b is a packed weight (Buf.packing, the same) whose view
       * strides count whole packed matrices: its template's GEMM runs */
      Packing packing;
    } gemm;
    /* scale and bias are rows of len elements (rank 1) */
    struct {
      View in;            /* over (rows..., len) */
      View scale, bias;
      double eps;
    } layernorm;
    /* ndim = nbatch + 4, loop dims [batch..., Tq, Tk, C, D]; out over (batch..., q, d) */
    struct {
      int nbatch;
      View q;             /* over (batch..., q, c) */
      View k;             /* over (batch..., k, c) */
      View v;             /* over (batch..., k, d) */
      /* kend [Tq] (int64) and skip [Tq]: the kept keys of each query row,
       * weights, or buf NULL: found at run time from factor and bias (a
       * run-time mask); bias B [Tq,Tk] (buf NULL: 0) and factor F [Tq,Tk]
       * (buf NULL: 1 on the kept keys) */
      View kend, skip, bias, factor;
      /* --precision bf16: Q·Kᵀ and P·V on bf16 operands (templates/attention_bf16.h) */
      bool bf16;
    } attn;
    /* in[i]: child i, contiguous row-major floats (over its own shape) */
    struct {
      const UserOp *op;
      int nin;
      View *in;
    } general;
    /* --patch: value is patch `index`'s pointer (a BUF_INPUT after the inputs,
     * NULL at run time when not given) */
    struct {
      View in;            /* over the node's shape */
      Buf *value;
    } patch;
  } u;
} Step;

/* Work below which a step runs on one thread (OpenMP start-up costs more). */
#define PARALLEL_MIN_WORK 32768.0

static inline double loop_work(const int64_t *dim, int n) {
  double w = 1;
  for (int i = 0; i < n; i++) w *= (double)dim[i];
  return w;
}

/* Does step s split its work over the team of the program's run() (else one
 * thread runs it alone)? A parallel step's code is called by every thread and
 * shares its work out with `omp for` or by omp_get_thread_num(); a serial
 * step's code has no OpenMP construct, so one thread can run it while the
 * others do something else (schedule.c, emit.c). */
static inline bool step_parallel(const Step *s) {
  switch (s->kind) {
  case STEP_ELEMENTWISE:
  case STEP_FILL:
  case STEP_GATHER:
  case STEP_PATCH: return s->ndim > 0 && loop_work(s->dim, s->ndim) >= PARALLEL_MIN_WORK;
  case STEP_CONTRACT: return s->u.contract.nout > 0 && s->flops >= PARALLEL_MIN_WORK;
  case STEP_ROW:
  case STEP_LAYERNORM: {
    const View *in = s->kind == STEP_LAYERNORM ? &s->u.layernorm.in : &s->u.row.in;
    return in->rank > 1 && loop_work(in->dim, in->rank) * 4 >= PARALLEL_MIN_WORK;
  }
  case STEP_GEMM:
  case STEP_ATTENTION: return s->flops >= PARALLEL_MIN_WORK;
  case STEP_GENERAL: return false;
  }
  return false;
}

/* An fp32 GEMM step with one row whose A and B are contiguous along K runs as the
 * matrix-vector kernel circc_gemv_f32 (emit.c; lower_gemm.c lays decode
 * weights out for it and may give it a column mask). */
static inline bool step_is_gemv(const Step *s) {
  if (s->kind != STEP_GEMM || s->u.gemm.no_gemv || s->u.gemm.packing != PACK_NONE) return false;
  int nb = s->u.gemm.nbatch;
  return s->dim[nb] == 1 &&
         (s->dim[nb + 2] == 1 || (s->u.gemm.a.stride[nb + 2] == 1 && s->u.gemm.b.stride[nb + 2] == 1));
}

/* The epilogue GEMM step s runs, or NULL (every other kind). */
static inline const Step *step_epilogue(const Step *s) {
  return s->kind == STEP_GEMM ? s->u.gemm.epilogue : NULL;
}

/* Calls f(v, arg) for every view step s reads: its expression's loads, its
 * operands, index and row views, its epilogue's loads (absent views are
 * skipped). Memory planning and epilogue fusion both ask what a step reads;
 * this is the one answer. */
typedef void ViewFn(const View *v, void *arg);

static inline void expr_each_load(const Expr *e, ViewFn *f, void *arg) {
  if (e->kind == EX_LOAD) f(&e->view, arg);
  for (int i = 0; i < e->nargs; i++) expr_each_load(e->arg[i], f, arg);
}

/* f(v, arg) unless v is absent. */
static inline void view_read(const View *v, ViewFn *f, void *arg) {
  if (v->buf) f(v, arg);
}

static inline void step_each_read(const Step *s, ViewFn *f, void *arg) {
  switch (s->kind) {
  case STEP_ELEMENTWISE: expr_each_load(s->u.elementwise.expr, f, arg); break;
  case STEP_CONTRACT:
    for (int j = 0; j < s->u.contract.nops; j++) view_read(&s->u.contract.op[j], f, arg);
    break;
  case STEP_ROW:
    view_read(&s->u.row.in, f, arg);
    view_read(&s->u.row.pick, f, arg);
    break;
  case STEP_GATHER:
    view_read(&s->u.gather.x, f, arg);
    for (int j = 0; j < s->u.gather.nidx; j++) view_read(&s->u.gather.idx[j], f, arg);
    break;
  case STEP_FILL: break;
  case STEP_GEMM:
    view_read(&s->u.gemm.a, f, arg);
    view_read(&s->u.gemm.b, f, arg);
    view_read(&s->u.gemm.mask, f, arg);
    if (s->u.gemm.epilogue) expr_each_load(s->u.gemm.epilogue->u.elementwise.expr, f, arg);
    break;
  case STEP_LAYERNORM:
    view_read(&s->u.layernorm.in, f, arg);
    view_read(&s->u.layernorm.scale, f, arg);
    view_read(&s->u.layernorm.bias, f, arg);
    break;
  case STEP_PATCH: view_read(&s->u.patch.in, f, arg); break;
  case STEP_ATTENTION: {
    const View *v[7] = {&s->u.attn.q,    &s->u.attn.k,    &s->u.attn.v,     &s->u.attn.kend,
                        &s->u.attn.skip, &s->u.attn.bias, &s->u.attn.factor};
    for (int j = 0; j < 7; j++) view_read(v[j], f, arg);
    break;
  }
  case STEP_GENERAL:
    for (int j = 0; j < s->u.general.nin; j++) view_read(&s->u.general.in[j], f, arg);
    break;
  }
}

/* The lowered program: steps in execution order over buffers. */
typedef struct Kernels {
  Buf **buf;
  int nbuf, cap_buf;
  Step **step;
  int nstep, cap_step;
  int ninputs, noutputs;
  Buf **input;            /* by input index */
  Buf **output;           /* by output index */
  const char **input_name, **output_name;
  int ntaps;              /* the last ntaps outputs are taps (Program.ntaps) */
  int npatches;
  Buf **patch;            /* patch k's value: BUF_INPUT with index ninputs + k */
  const char **patch_name;
  int64_t weights_bytes;  /* blob size */
  int64_t arena_bytes;    /* memplan */
  int nphase;             /* schedule: phases, each a run of steps; one barrier after each */
  double flops;
  int nfused;             /* elementwise nodes fused into another step (report) */
} Kernels;
#endif
