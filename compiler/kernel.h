/* kernel.h — the kernel graph shared by lower, memplan and emit: buffers,
 * strided views into them, and the steps of the generated program in
 * execution order. Steps refer to circuit nodes only for comments and
 * diagnostics; they never modify the circuit. */
#ifndef CIRCC_KERNEL_H
#define CIRCC_KERNEL_H
#include "ir.h"

typedef enum BufKind {
  BUF_WEIGHT, /* in the weights blob, read-only */
  BUF_INPUT,  /* program input `index` */
  BUF_OUTPUT, /* program output `index` */
  BUF_TEMP,   /* in the arena at `offset` (memplan) */
} BufKind;

typedef struct Buf {
  int id;
  BufKind kind;
  DType dtype;        /* DT_F32 or DT_I64 */
  int64_t numel;
  int64_t offset;     /* bytes: blob offset (weights) or arena offset (temps) */
  int index;          /* input/output index */
  int def_step;       /* step that writes it (-1: weights and inputs) */
  int last_use;       /* last step that reads it (memplan) */
  const Node *node;   /* for comments */
  const Tensor *tensor; /* BUF_WEIGHT: the data (converted to dtype in the blob) */
} Buf;

/* A strided view of a buffer over `rank` loop dims (elements, not bytes). */
typedef struct View {
  Buf *buf;
  int64_t offset;
  int rank;
  int64_t dim[MAX_RANK];
  int64_t stride[MAX_RANK];
} View;

typedef enum ExprKind {
  EX_LOAD,    /* view[leaf] at the loop coordinates */
  EX_CONST,   /* value */
  EX_ADD,     /* sum of args */
  EX_MUL,     /* product of args */
  EX_FN,      /* elementwise GeneralFunction `fn` of arg 0 */
  EX_POW,     /* arg0 ^ arg1 */
  EX_CAST,    /* cast of arg 0 to `cast_to` (rounding/truncation), result as float */
} ExprKind;

typedef struct Expr {
  ExprKind kind;
  int nargs;
  struct Expr **arg;
  View view;          /* EX_LOAD: over the step's loop dims */
  double value;       /* EX_CONST */
  GenFnKind fn;       /* EX_FN */
  DType cast_to;      /* EX_CAST */
} Expr;

typedef enum StepKind {
  STEP_ELEMENTWISE, /* out[loop] = expr over `ndim` loop dims */
  STEP_CONTRACT,    /* out[out ids] (+)= Π operands over all ids; sum over ids not in out */
  STEP_ROW,         /* softmax / log_softmax / min / max over the last axis */
  STEP_GATHER,      /* out[loop] = x[base(loop) + Σ_k stride_k * wrap(index_k[loop])] */
  STEP_FILL,        /* out = value (zero-init before a Scatter / repeated-id einsum) */
  STEP_GEMM,        /* batched GEMM (templates/gemm_f32.h): loop dims [batch..., M, N, K] */
  STEP_LAYERNORM,   /* (x - mean) * rsqrt(var + eps) * scale + bias over the last axis (row_f32.h) */
  STEP_ATTENTION,   /* fused softmax(Q·Kᵀ·F + B)·V (templates/attention_f32.h) */
} StepKind;

#define MAX_GATHER 8

typedef struct Step {
  StepKind kind;
  int id;
  const Node *node;       /* circuit node computed (for comments) */
  View out;               /* over the loop dims */
  int ndim;               /* loop dims (ELEMENTWISE, GATHER: out.rank; CONTRACT: all ids) */
  int64_t dim[MAX_RANK * 2];
  Expr *expr;             /* ELEMENTWISE */
  /* CONTRACT: loop dims 0..nout-1 are output ids, the rest are summed;
   * operand views are over all ndim dims (stride 0 where an id is absent). */
  int nout;
  int nops;
  View op[2];
  /* GEMM: the same fields with ndim = nbatch + 3 and loop dims [batch..., M, N, K];
   * op[0] is A (no N stride), op[1] is B (no M stride), out is C (no K stride);
   * x (buf NULL: none), only on a step_is_gemv step: a column mask over
   * [batch..., N] that the consumer multiplies C by, so columns where it is 0
   * are written 0 without being computed. */
  int nbatch;
  /* GEMM (one-row ones too): epilogue (NULL: none), an elementwise step that
   * reads C and left the program; each task runs it over the block of C it wrote.
   * Its loop dim d is (GEMM loop index epi_src[d] / epi_div[d]) % its size
   * (epi_src -1: size 1). */
  struct Step *epilogue;
  int epi_src[MAX_RANK * 2];
  int64_t epi_div[MAX_RANK * 2];
  /* ROW */
  GenFnKind fn;
  View in;                /* over (rows..., len) */
  /* LAYERNORM: `in` as for ROW; op[0] the scale and op[1] the bias over the
   * last axis (rank 1, buf NULL when absent), nops = 2; value = eps */
  /* GATHER: x viewed over the loop dims (stride 0 on gathered dims); index k
   * is read through idx[k] (over the loop dims) and scaled by idx_stride[k];
   * idx_len[k] is the size of the indexed axis (range check, negative wrap). */
  View x;
  int nidx;
  View idx[MAX_GATHER];
  int64_t idx_stride[MAX_GATHER], idx_len[MAX_GATHER];
  bool check_int;         /* index read from a float buffer must be integral */
  double value;           /* FILL; LAYERNORM: eps */
  /* ATTENTION: dims [batch..., Tq, Tk, C, D]; op[0] = Q over (batch..., q, c),
   * op[1] = K over (batch..., k, c), x = V over (batch..., k, d), out over
   * (batch..., q, d); nidx = 4: idx[] are kend [Tq] (int64) and skip [Tq],
   * weights, or buf NULL: found at run time from F and B (a run-time mask);
   * then B [Tq,Tk] (buf NULL: 0) and F [Tq,Tk] (buf NULL: 1 on the kept keys) */
  double flops;
} Step;

/* A GEMM step with one row whose A and B are contiguous along K runs as the
 * matrix-vector kernel circc_gemv_f32 (emit.c; lower.c lays decode weights
 * out for it and may give it a column mask). */
static inline bool step_is_gemv(const Step *s) {
  int nb = s->nbatch;
  return s->kind == STEP_GEMM && s->dim[nb] == 1 &&
         (s->dim[nb + 2] == 1 || (s->op[0].stride[nb + 2] == 1 && s->op[1].stride[nb + 2] == 1));
}

/* Calls f(v, arg) for every view step s reads: its expression's loads, its
 * operands, index and row views, its epilogue's loads. Memory planning and
 * epilogue fusion both ask what a step reads; this is the one answer. */
typedef void ViewFn(const View *v, void *arg);

static inline void expr_each_load(const Expr *e, ViewFn *f, void *arg) {
  if (e->kind == EX_LOAD) f(&e->view, arg);
  for (int i = 0; i < e->nargs; i++) expr_each_load(e->arg[i], f, arg);
}

static inline void step_each_read(const Step *s, ViewFn *f, void *arg) {
  if (s->expr) expr_each_load(s->expr, f, arg);
  if (s->epilogue) expr_each_load(s->epilogue->expr, f, arg);
  for (int j = 0; j < s->nops; j++) f(&s->op[j], arg);
  for (int j = 0; j < s->nidx; j++) f(&s->idx[j], arg);
  f(&s->in, arg);
  f(&s->x, arg);
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
  int64_t weights_bytes;  /* blob size */
  int64_t arena_bytes;    /* memplan */
  double flops;
  int nfused;             /* elementwise nodes fused into another step (report) */
} Kernels;
#endif
