/* emit.c — writes the generated program: one C function per step with every
 * size, stride and offset a literal, its outer loops shared out among the
 * threads of the run's one OpenMP parallel region (run_steps), and a comment
 * naming the circuit node each step computes; plus the weights blob, which the
 * build links with `.incbin` (weights never become C literals). Parallel loops
 * only split output elements, never a sum, so results are bit-identical for
 * any thread count. The output depends only on the kernel graph: same input,
 * same bytes. */
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include "circc.h"
#include "kernel.h"
#define CIRCC_GEMM_BF16_LAYOUT_ONLY
#include "../../templates/gemm_bf16.h"
#define CIRCC_GEMM_F32_LAYOUT_ONLY
#include "../../templates/gemm_f32.h"
#define CIRCC_GEMM_INT8_LAYOUT_ONLY
#include "../../templates/gemm_int8.h"

typedef struct Emit {
  Comp *c;
  const Kernels *k;
  FILE *f;
  const char *pfx;   /* prefix of the graph's C names: "" for the program, "pass<j>_" for a pass */
} Emit;

static void out(Emit *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void out(Emit *e, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vfprintf(e->f, fmt, ap);
  va_end(ap);
}

/* A C comment can't contain "*" "/"; names may contain anything. */
static const char *comment_safe(Comp *c, const char *s) {
  if (!s) return "(unnamed)";
  char *r = arena_strdup(&c->arena, s);
  for (char *p = r; *p; p++)
    if ((*p == '*' && p[1] == '/') || *p == '\n' || *p == '\r') *p = '_';
  return r;
}

/* s as the inside of a C string literal. */
static const char *c_escape(Comp *c, const char *s) {
  char *r = arena_alloc(&c->arena, 4 * strlen(s) + 1), *o = r;
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
    if (*p == '"' || *p == '\\' || *p == '?') *o++ = '\\', *o++ = (char)*p; /* '?': no trigraphs */
    else if (*p < 32 || *p == 127) o += sprintf(o, "\\%03o", *p);
    else *o++ = (char)*p;
  }
  *o = 0;
  return r;
}

static const char *ctype(DType t) { return t == DT_I64 ? "int64_t" : "float"; }

/* The C type of a buffer's elements (an input stored as bf16: its bits). */
static const char *buf_ctype(const Buf *b) { return b->stored_bf16 ? "uint16_t" : ctype(b->dtype); }

/* Pointer expression for a buffer's base. */
static void buf_base(Emit *e, const Buf *b, bool write) {
  const char *t = buf_ctype(b), *cq = write ? "" : "const ";
  switch (b->kind) {
  case BUF_WEIGHT: out(e, "(%s%s *)(ctx->w + %lld)", cq, t, (long long)b->offset); break;
  case BUF_INPUT: out(e, "(%s%s *)ctx->in[%d]", cq, t, b->index); break;
  case BUF_OUTPUT: out(e, "(%s *)ctx->out[%d]", t, b->index); break;
  case BUF_TEMP: out(e, "(%s%s *)(ctx->arena + %lld)", cq, t, (long long)b->offset); break;
  }
}

/* Declares `b<id>` for every buffer a step touches, once each, in the order
 * first touched: a fused Add of every head's output can read hundreds, so
 * repeats are merged by sorting, not by searching. */
typedef struct Decl {
  const Buf **buf;
  bool *write;
  int n, cap;
} Decl;

static void decl_add(Decl *d, const Buf *b, bool write) {
  if (d->n == d->cap) {
    d->cap = d->cap ? 2 * d->cap : 16;
    d->buf = realloc(d->buf, sizeof *d->buf * (size_t)d->cap);
    d->write = realloc(d->write, sizeof *d->write * (size_t)d->cap);
    if (!d->buf || !d->write) diag_out_of_memory(sizeof *d->buf * (size_t)d->cap);
  }
  d->buf[d->n] = b;
  d->write[d->n++] = write;
}

typedef struct DeclPos {
  int id, pos;
} DeclPos;

static int declpos_cmp(const void *x, const void *y) {
  const DeclPos *a = x, *b = y;
  return a->id != b->id ? (a->id > b->id) - (a->id < b->id) : (a->pos > b->pos) - (a->pos < b->pos);
}

static void decl_expr(Decl *d, const Expr *x) {
  if (x->kind == EX_LOAD) decl_add(d, x->view.buf, false);
  for (int i = 0; i < x->nargs; i++) decl_expr(d, x->arg[i]);
}

/* Emits the declarations and releases d. */
static void emit_decls(Emit *e, Decl *d) {
  DeclPos *by_id = malloc(sizeof *by_id * (size_t)(d->n + 1));
  if (!by_id) diag_out_of_memory(sizeof *by_id * (size_t)(d->n + 1));
  for (int i = 0; i < d->n; i++) by_id[i] = (DeclPos){d->buf[i]->id, i};
  qsort(by_id, (size_t)d->n, sizeof *by_id, declpos_cmp);
  for (int i = 1; i < d->n; i++)   /* a repeat: its first touch gets its write, it gets nothing */
    if (by_id[i].id == by_id[i - 1].id) {
      int first = by_id[i - 1].pos, rep = by_id[i].pos;
      by_id[i].pos = first;
      d->write[first] |= d->write[rep];
      d->buf[rep] = NULL;
    }
  free(by_id);
  for (int i = 0; i < d->n; i++) {
    const Buf *b = d->buf[i];
    if (!b) continue;
    out(e, "  %s%s *restrict b%d = ", d->write[i] ? "" : "const ", buf_ctype(b), b->id);
    buf_base(e, b, d->write[i]);
    out(e, ";\n");
  }
  free(d->buf);
  free(d->write);
  *d = (Decl){0};
}

/* `b7[12 + i0*40 + i2]` — the element of view v at the loop coordinates. */
static void emit_index(Emit *e, const View *v) {
  out(e, "b%d[%lld", v->buf->id, (long long)v->offset);
  for (int d = 0; d < v->rank; d++) {
    if (v->stride[d] == 0 || v->dim[d] == 1) continue;
    if (v->stride[d] == 1) out(e, " + i%d", d);
    else out(e, " + i%d * %lld", d, (long long)v->stride[d]);
  }
  out(e, "]");
}

static void emit_float(Emit *e, double v) {
  float f = (float)v;
  if (isnan(f)) out(e, "NAN");
  else if (isinf(f)) out(e, f > 0 ? "INFINITY" : "(-INFINITY)");
  else out(e, "%af", (double)f);
}

static const char *fn_c_name(GenFnKind f) {
  switch (f) {
  case GF_SIN: return "sinf";
  case GF_COS: return "cosf";
  case GF_TANH: return "fn_tanh";
  case GF_EXP: return "fn_exp";
  case GF_LOG: return "logf";
  case GF_ABS: return "fabsf";
  case GF_SIGMOID: return "fn_sigmoid";
  case GF_RSQRT: return "fn_rsqrt";
  case GF_GELU: return "fn_gelu";
  case GF_GELU_NEW: return "fn_gelu_new";
  case GF_RELU: return "fn_relu";
  case GF_STEP: return "fn_step";
  case GF_RECIPROCAL: return "fn_reciprocal";
  case GF_LOG_EXP_P_1: return "fn_log_exp_p_1";
  case GF_GAUSSIAN_PDF: return "fn_gaussian_pdf";
  case GF_GAUSSIAN_CDF: return "fn_gaussian_cdf";
  case GF_LOGIT: return "fn_logit";
  default: ICE("no C function for %s", genfn_name(f));
  }
}

static const char *cast_fn(DType t) {
  switch (t) {
  case DT_I64: return "cast_i64";
  case DT_I32: return "cast_i32";
  case DT_I16: return "cast_i16";
  case DT_I8: return "cast_i8";
  case DT_U8: return "cast_u8";
  case DT_BOOL: return "cast_bool";
  case DT_F16: return "cast_f16";
  case DT_BF16: return "cast_bf16";
  default: return "";
  }
}

static void emit_expr(Emit *e, const Expr *x) {
  switch (x->kind) {
  case EX_LOAD:
    if (x->view.buf->dtype == DT_I64) out(e, "(float)");
    emit_index(e, &x->view);
    return;
  case EX_CONST: emit_float(e, x->value); return;
  case EX_ADD:
  case EX_MUL:
    out(e, "(");
    for (int i = 0; i < x->nargs; i++) {
      if (i) out(e, x->kind == EX_ADD ? " + " : " * ");
      emit_expr(e, x->arg[i]);
    }
    out(e, ")");
    return;
  case EX_FN: out(e, "%s(", fn_c_name(x->fn)); emit_expr(e, x->arg[0]); out(e, ")"); return;
  case EX_POW: out(e, "powf("); emit_expr(e, x->arg[0]); out(e, ", "); emit_expr(e, x->arg[1]); out(e, ")"); return;
  case EX_CAST: out(e, "%s(", cast_fn(x->cast_to)); emit_expr(e, x->arg[0]); out(e, ")"); return;
  case EX_USER:
    out(e, "%s(", x->user->function);
    for (int i = 0; i < x->nargs; i++) {
      if (i) out(e, ", ");
      emit_expr(e, x->arg[i]);
    }
    out(e, ")");
    return;
  }
}

/* `for (int64_t iK = 0; iK < N; iK++)` for dims [from, to). */
static void open_loops(Emit *e, const int64_t *dim, int from, int to, int indent) {
  for (int d = from; d < to; d++) out(e, "%*sfor (int64_t i%d = 0; i%d < %lld; i%d++)\n", indent + 2 * (d - from), "", d, d, (long long)dim[d], d);
}

/* Shares the loop that follows (over dim[0..n)) among the team when s is a
 * parallel step. The loop ends the step, and run() holds the team at a
 * barrier after every parallel step, so the loop's own barrier would be a
 * second one: nowait. */
static void parallel_for(Emit *e, const Step *s, const int64_t *dim, int n, int indent) {
  if (!step_parallel(s)) return;
  int collapse = n >= 2 && dim[0] < 64 ? 2 : 1;
  if (collapse > 1) out(e, "%*s#pragma omp for collapse(2) schedule(static) nowait\n", indent, "");
  else out(e, "%*s#pragma omp for schedule(static) nowait\n", indent, "");
}

static void emit_elementwise(Emit *e, const Step *s) {
  Decl d = {0};
  decl_add(&d, s->out.buf, true);
  decl_expr(&d, s->u.elementwise.expr);
  emit_decls(e, &d);
  parallel_for(e, s, s->dim, s->ndim, 2);
  open_loops(e, s->dim, 0, s->ndim, 2);
  out(e, "%*s", 2 + 2 * s->ndim, "");
  emit_index(e, &s->out);
  out(e, " = ");
  emit_expr(e, s->u.elementwise.expr);
  out(e, ";\n");
}

static void emit_fill(Emit *e, const Step *s) {
  Decl d = {0};
  decl_add(&d, s->out.buf, true);
  emit_decls(e, &d);
  parallel_for(e, s, s->dim, s->ndim, 2);
  open_loops(e, s->dim, 0, s->ndim, 2);
  out(e, "%*s", 2 + 2 * s->ndim, "");
  emit_index(e, &s->out);
  out(e, " = ");
  emit_float(e, s->u.fill.value);
  out(e, ";\n");
}

/* `i1 * 40 + i2 * 8 + i3` — position of loop dims [from, to) in a dense block. */
static void emit_linear(Emit *e, const int64_t *dim, int from, int to) {
  int64_t stride = 1;
  bool first = true;
  for (int t = to - 1; t >= from; t--) {
    if (dim[t] != 1) {
      out(e, first ? "" : " + ");
      if (stride == 1) out(e, "i%d", t);
      else out(e, "i%d * %lld", t, (long long)stride);
      first = false;
    }
    stride *= dim[t];
  }
  if (first) out(e, "0");
}

/* Largest output slice (per value of the first output id) accumulated in a
 * local double array; larger slices accumulate in float in the output. */
#define MAX_DOUBLE_SLICE 4096

/* Contraction: parallel over the first output id; for each, accumulate over the
 * summed ids (outer) and the remaining output ids (inner, so it vectorises),
 * in double when the slice fits (long sums in float lose digits). Every output
 * element sums in the same order whatever the thread count. */
static void emit_contract(Emit *e, const Step *s) {
  const View *op = s->u.contract.op;
  int nops = s->u.contract.nops, nout = s->u.contract.nout;
  Decl d = {0};
  decl_add(&d, s->out.buf, true);
  for (int i = 0; i < nops; i++) decl_add(&d, op[i].buf, false);
  emit_decls(e, &d);
  if (nout == 0) {
    out(e, "  double acc = 0.0;\n");
    open_loops(e, s->dim, 0, s->ndim, 2);
    out(e, "%*sacc += (double)", 2 + 2 * s->ndim, "");
    emit_index(e, &op[0]);
    if (nops > 1) { out(e, " * (double)"); emit_index(e, &op[1]); }
    out(e, ";\n  ");
    emit_index(e, &s->out);
    out(e, " = (float)acc;\n");
    return;
  }
  double slice = loop_work(s->dim + 1, nout - 1);
  bool dbl = slice <= MAX_DOUBLE_SLICE;
  parallel_for(e, s, s->dim, 1, 2);
  open_loops(e, s->dim, 0, 1, 2);
  out(e, "  {\n");
  if (dbl) out(e, "    double acc[%lld] = {0};\n", (long long)slice);
  else {
    open_loops(e, s->dim, 1, nout, 4);
    out(e, "%*s", 4 + 2 * (nout - 1), "");
    emit_index(e, &s->out);
    out(e, " = 0.0f;\n");
  }
  /* summed ids outside, output ids 1.. inside */
  int depth = 0;
  for (int t = nout; t < s->ndim; t++, depth++)
    out(e, "%*sfor (int64_t i%d = 0; i%d < %lld; i%d++)\n", 4 + 2 * depth, "", t, t, (long long)s->dim[t], t);
  for (int t = 1; t < nout; t++, depth++)
    out(e, "%*sfor (int64_t i%d = 0; i%d < %lld; i%d++)\n", 4 + 2 * depth, "", t, t, (long long)s->dim[t], t);
  out(e, "%*s", 4 + 2 * depth, "");
  if (dbl) {
    out(e, "acc[");
    emit_linear(e, s->dim, 1, nout);
    out(e, "] += (double)");
  } else {
    emit_index(e, &s->out);
    out(e, " += %s", op[0].buf->dtype == DT_I64 ? "(float)" : "");
  }
  emit_index(e, &op[0]);
  if (nops > 1) {
    out(e, " * %s", dbl ? "(double)" : op[1].buf->dtype == DT_I64 ? "(float)" : "");
    emit_index(e, &op[1]);
  }
  out(e, ";\n");
  if (dbl) {
    open_loops(e, s->dim, 1, nout, 4);
    out(e, "%*s", 4 + 2 * (nout - 1), "");
    emit_index(e, &s->out);
    out(e, " = (float)acc[");
    emit_linear(e, s->dim, 1, nout);
    out(e, "];\n");
  }
  out(e, "  }\n");
}

/* `&b3[8], 1` — a layernorm scale or bias row and its stride, or `NULL, 0`. */
static void emit_row_operand(Emit *e, const View *v) {
  if (!v->buf) {
    out(e, "NULL, 0");
    return;
  }
  out(e, "&b%d[%lld], %lld", v->buf->id, (long long)v->offset, (long long)v->stride[0]);
}

/* Checks every value of index view iv (of an axis of size len) before a
 * step reads with it, outside its loop (every thread of a parallel step
 * checks them all and comes to the same verdict), so a bad index is an input
 * error (exit 3) and never a parallel loop's early exit. */
static void emit_index_check(Emit *e, const Step *s, const View *iv, bool check_int, int64_t len) {
  const char *what = c_escape(e->c, s->node && s->node->name ? s->node->name : "(unnamed)");
  /* loop only over the dims the index varies along */
  int64_t dims[MAX_RANK];
  for (int t = 0; t < iv->rank; t++) dims[t] = iv->stride[t] ? iv->dim[t] : 1;
  open_loops(e, dims, 0, iv->rank, 2);
  out(e, "%*s{\n", 2 + 2 * iv->rank, "");
  int ind = 4 + 2 * iv->rank;
  out(e, "%*sconst %s v = ", ind, "", iv->buf->dtype == DT_I64 ? "int64_t" : "float");
  emit_index(e, iv);
  out(e, ";\n");
  if (iv->buf->dtype != DT_I64 && check_int)
    out(e, "%*sif (v != floorf(v)) return rt_errorf(\"'%%s': index value %%g is not an integer\", \"%s\", (double)v);\n", ind, "", what);
  out(e, "%*sif (!(v >= -%lld && v < %lld)) return rt_errorf(\"'%%s': index %%lld is out of range for an axis of size %lld\", \"%s\", (long long)v);\n",
      ind, "", (long long)len, (long long)len, (long long)len, what);
  out(e, "%*s}\n", 2 + 2 * iv->rank, "");
}

/* Row kernels over the last axis (templates/row_f32.h), layernorm included:
 * rows are the leading dims of the input view. */
static void emit_row(Emit *e, const Step *s) {
  bool layernorm = s->kind == STEP_LAYERNORM;
  const View *in = layernorm ? &s->u.layernorm.in : &s->u.row.in;
  const View *pick = layernorm || !s->u.row.pick.buf ? NULL : &s->u.row.pick;
  Decl d = {0};
  decl_add(&d, s->out.buf, true);
  decl_add(&d, in->buf, false);
  if (layernorm && s->u.layernorm.scale.buf) decl_add(&d, s->u.layernorm.scale.buf, false);
  if (layernorm && s->u.layernorm.bias.buf) decl_add(&d, s->u.layernorm.bias.buf, false);
  if (pick) decl_add(&d, pick->buf, false);
  emit_decls(e, &d);
  int rows_rank = in->rank - 1;
  int64_t len = in->dim[in->rank - 1], istride = in->stride[in->rank - 1];
  if (pick) emit_index_check(e, s, pick, s->u.row.pick_check_int, len);
  int64_t ostride = s->out.rank > rows_rank ? s->out.stride[rows_rank] : 0;
  parallel_for(e, s, in->dim, rows_rank, 2);
  open_loops(e, in->dim, 0, rows_rank, 2);
  int ind = 2 + 2 * rows_rank;
  out(e, "%*s{\n", ind, "");
  /* row base offsets */
  out(e, "%*sconst float *restrict x = &", ind + 2, "");
  View base = *in;
  base.rank = rows_rank;
  emit_index(e, &base);
  out(e, ";\n%*sfloat *restrict y = &", ind + 2, "");
  View ob = s->out;
  ob.rank = rows_rank;
  emit_index(e, &ob);
  out(e, ";\n");
  if (layernorm) {
    out(e, "%*scircc_layernorm_row(x, %lld, y, %lld, %lld, %a, ", ind + 2, "", (long long)istride, (long long)ostride,
        (long long)len, s->u.layernorm.eps);
    emit_row_operand(e, &s->u.layernorm.scale);
    out(e, ", ");
    emit_row_operand(e, &s->u.layernorm.bias);
    out(e, ");\n%*s}\n", ind, "");
    return;
  }
  GenFnKind fn = s->u.row.fn;
  switch (fn) {
  case GF_LOG_SOFTMAX:
    if (pick) {
      out(e, "%*sint64_t j = (int64_t)", ind + 2, "");
      emit_index(e, pick);
      out(e, ";\n%*sif (j < 0) j += %lld;\n", ind + 2, "", (long long)len);
      out(e, "%*sy[0] = circc_log_softmax_pick_row(x, %lld, %lld, j);\n", ind + 2, "", (long long)istride, (long long)len);
      break;
    }
    /* fall through */
  case GF_SOFTMAX:
    out(e, "%*scircc_%s_row(x, %lld, y, %lld, %lld);\n", ind + 2, "", fn == GF_SOFTMAX ? "softmax" : "log_softmax",
        (long long)istride, (long long)ostride, (long long)len);
    break;
  case GF_MIN:
  case GF_MAX:
    out(e, "%*sy[0] = circc_%s_row(x, %lld, %lld);\n", ind + 2, "", fn == GF_MIN ? "min" : "max", (long long)istride,
        (long long)len);
    break;
  case GF_USER: /* an --ops row function: in and out have unit stride on the last axis */
    out(e, "%*s%s(x, y, %lld);\n", ind + 2, "", s->u.row.user->function, (long long)len);
    break;
  default: ICE("row kernel for %s", genfn_name(fn));
  }
  out(e, "%*s}\n", ind, "");
}

/* Gathers: check every index first (bad ids are input errors, exit 3), then copy. */
static void emit_gather(Emit *e, const Step *s) {
  const View *x = &s->u.gather.x, *idx = s->u.gather.idx;
  const int64_t *idx_len = s->u.gather.idx_len;
  int nidx = s->u.gather.nidx;
  Decl d = {0};
  decl_add(&d, s->out.buf, true);
  decl_add(&d, x->buf, false);
  for (int k = 0; k < nidx; k++) decl_add(&d, idx[k].buf, false);
  emit_decls(e, &d);
  for (int k = 0; k < nidx; k++) emit_index_check(e, s, &idx[k], s->u.gather.check_int, idx_len[k]);
  parallel_for(e, s, s->dim, s->ndim, 2);
  open_loops(e, s->dim, 0, s->ndim, 2);
  int ind = 2 + 2 * s->ndim;
  out(e, "%*s{\n", ind, "");
  for (int k = 0; k < nidx; k++) {
    out(e, "%*sint64_t j%d = (int64_t)", ind + 2, "", k);
    emit_index(e, &idx[k]);
    out(e, ";\n%*sif (j%d < 0) j%d += %lld;\n", ind + 2, "", k, k, (long long)idx_len[k]);
  }
  out(e, "%*s", ind + 2, "");
  emit_index(e, &s->out);
  out(e, " = %s", x->buf->dtype == DT_I64 ? "(float)" : "");
  /* x's element: its view offset plus the gathered positions */
  out(e, "b%d[%lld", x->buf->id, (long long)x->offset);
  for (int t = 0; t < x->rank; t++)
    if (x->stride[t] && x->dim[t] != 1) out(e, " + i%d * %lld", t, (long long)x->stride[t]);
  for (int k = 0; k < nidx; k++) out(e, " + j%d * %lld", k, (long long)s->u.gather.idx_stride[k]);
  out(e, "];\n%*s}\n", ind, "");
}

/* Opens the block of a step that uses this thread's scratch, which run()
 * allocates once per run (step_scratch says how much a step needs). It is
 * NULL when that allocation failed: the thread then skips its share, and
 * run() reports the failure after the step. */
static void emit_scratch_open(Emit *e) {
  out(e, "  {\n    float *const scratch = ctx->scratch;\n");
}

/* The address of view v's element at the batch loop indices (v's first nb
 * dims) plus n0 times `n_stride` when that is not 0. */
static void emit_base(Emit *e, const View *v, int nb, int64_t n_stride) {
  View base = *v;
  base.rank = nb;
  out(e, "&");
  emit_index(e, &base);
  if (n_stride) out(e, " + n0 * %lld", (long long)n_stride);
}

/* Is GEMM loop dim j (a batch dim) one that s's epilogue needs? */
static bool epi_uses(const Step *s, int j) {
  for (int d = 0; d < s->u.gemm.epilogue->ndim; d++)
    if (s->u.gemm.epi_src[d] == j) return true;
  return false;
}

/* `const int64_t i3 = g1 / 64 % 12;` — fused loop dim d from GEMM index g<j>. */
static void emit_epi_index(Emit *e, const Step *s, int d, int ind) {
  const Step *f = s->u.gemm.epilogue;
  int j = s->u.gemm.epi_src[d];
  out(e, "%*sconst int64_t i%d = g%d", ind, "", d, j);
  if (s->u.gemm.epi_div[d] != 1) out(e, " / %lld", (long long)s->u.gemm.epi_div[d]);
  if (s->u.gemm.epi_div[d] * f->dim[d] != s->dim[j]) out(e, " %% %lld", (long long)f->dim[d]);
  out(e, ";\n");
}

/* GEMM s's epilogue as a function of its own, which each task calls on the
 * block of C it wrote (rows [m0,m1), columns [n0,n1) of batch element
 * g0..): the fused step's loop indices i0.. are derived from the GEMM's. The
 * innermost fused dim of the columns is the inner loop, in runs that stay
 * inside its range, so the loop vectorises even when the columns split over
 * several fused dims. A separate function keeps the GEMM's own code as it is
 * without an epilogue. */
static void emit_epilogue(Emit *e, const Step *s) {
  const Step *f = s->u.gemm.epilogue;
  const Node *n = f->node;
  int nb = s->u.gemm.nbatch, gn = nb + 1, inner = -1;
  for (int d = 0; d < f->ndim; d++)
    if (s->u.gemm.epi_src[d] == gn && s->u.gemm.epi_div[d] == 1) inner = d;
  out(e, "\n/* step %d's epilogue: %s %s %s", s->id, comment_safe(e->c, n ? n->name : NULL), n ? kind_name(n->kind) : "",
      n ? shape_str(e->c, &n->shape) : "");
  if (n && n->kind == NK_GeneralFunction) out(e, " %s", comment_safe(e->c, n->u.gf.text));
  out(e, " */\n__attribute__((noinline)) static void %sstep_%d_epilogue(const Ctx *ctx, ", e->pfx, s->id);
  for (int j = 0; j < nb; j++)
    if (epi_uses(s, j)) out(e, "int64_t g%d, ", j);
  out(e, "int64_t m0, int64_t m1, int64_t n0, int64_t n1) {\n");
  Decl d = {0};
  decl_add(&d, f->out.buf, true);
  decl_expr(&d, f->u.elementwise.expr);
  emit_decls(e, &d);
  out(e, "  for (int64_t g%d = m0; g%d < m1; g%d++) {\n", nb, nb, nb);
  for (int k = 0; k < f->ndim; k++)
    if (s->u.gemm.epi_src[k] >= 0 && s->u.gemm.epi_src[k] < gn) emit_epi_index(e, s, k, 4);
  int body = 6;
  if (inner < 0 || f->dim[inner] == s->dim[gn]) { /* the columns are one fused dim (or none) */
    const char *var = arena_printf(&e->c->arena, inner < 0 ? "g%d" : "i%d", inner < 0 ? gn : inner);
    out(e, "    for (int64_t %s = n0; %s < n1; %s++) {\n", var, var, var);
  } else {
    long long len = (long long)f->dim[inner];
    out(e, "    for (int64_t g%d = n0; g%d < n1;) {\n", gn, gn);
    for (int k = 0; k < f->ndim; k++)
      if (s->u.gemm.epi_src[k] == gn && k != inner) emit_epi_index(e, s, k, 6);
    out(e, "      const int64_t lo = g%d %% %lld, hi = lo + (n1 - g%d) < %lld ? lo + (n1 - g%d) : %lld;\n", gn, len, gn,
        len, gn, len);
    out(e, "      g%d += hi - lo;\n", gn);
    out(e, "      for (int64_t i%d = lo; i%d < hi; i%d++) {\n", inner, inner, inner);
    body += 2;
  }
  out(e, "%*s", body, "");
  emit_index(e, &f->out);
  out(e, " = ");
  emit_expr(e, f->u.elementwise.expr);
  out(e, ";\n");
  for (int in = body - 2; in >= 2; in -= 2) out(e, "%*s}\n", in, "");
  out(e, "}\n");
}

/* The work loop the GEMM paths share: units are (batch index, block of mb
 * rows, `width`-column panel). In a parallel step of at most 4 rows, which
 * streams its weights once, threads take chunks of at least `grain` units
 * with stealing (take_units); bigger ones pack a block of A per call, so each
 * thread takes one contiguous range (a range in chunks packed A again per
 * chunk). Per row block of a chunk or range the loop gets the batch indices
 * i<d>, rows [m0, m1) and columns [n0, n1) — the caller emits the kernel
 * call, then emit_gemm_units_end the epilogue and the closing. */
static void emit_gemm_units(Emit *e, const Step *s, int64_t mb, int width, int64_t grain, bool parallel) {
  int nb = s->u.gemm.nbatch;
  int64_t M = s->dim[nb], N = s->dim[nb + 1];
  int64_t rblocks = (M + mb - 1) / mb, tasks = (int64_t)loop_work(s->dim, nb) * rblocks, panels = (N + width - 1) / width;
  if (parallel && M <= 4 && tasks * panels < INT32_MAX) {
    out(e, "    const int64_t total = %lld;\n", (long long)(tasks * panels));
    out(e, "    for (int64_t w = 0, end = 0; w < end || take_units(ctx, %d, total, %lld, &w, &end);) {\n", s->id,
        (long long)grain);
  } else {
    out(e, "    const int64_t total = %lld, t = %s, nt = %s;\n", (long long)(tasks * panels),
        parallel ? "omp_get_thread_num()" : "0", parallel ? "omp_get_num_threads()" : "1");
    out(e, "    for (int64_t w = total * t / nt, end = total * (t + 1) / nt; w < end;) {\n");
  }
  out(e, "      const int64_t task = w / %lld, p0 = w %% %lld, p1 = p0 + (end - w) < %lld ? p0 + (end - w) : %lld;\n",
      (long long)panels, (long long)panels, (long long)panels, (long long)panels);
  out(e, "      w += p1 - p0;\n");
  out(e, "      const int64_t mb = task %% %lld", (long long)rblocks);
  int64_t div = rblocks;
  for (int t = nb - 1; t >= 0; t--) {
    out(e, ", i%d = task / %lld %% %lld", t, (long long)div, (long long)s->dim[t]);
    div *= s->dim[t];
  }
  out(e, ";\n");
  out(e, "      const int64_t m0 = mb * %lld, m1 = m0 + %lld < %lld ? m0 + %lld : %lld;\n", (long long)mb, (long long)mb,
      (long long)M, (long long)mb, (long long)M);
  out(e, "      const int64_t n0 = p0 * %d, n1 = p1 * %d < %lld ? p1 * %d : %lld;\n", width, width, (long long)N, width,
      (long long)N);
}

static void emit_gemm_units_end(Emit *e, const Step *s) {
  if (s->u.gemm.epilogue) {
    out(e, "        %sstep_%d_epilogue(ctx, ", e->pfx, s->id);
    for (int j = 0; j < s->u.gemm.nbatch; j++)
      if (epi_uses(s, j)) out(e, "i%d, ", j);
    out(e, "m0, m1, n0, n1);\n");
  }
  out(e, "      }\n    }\n  }\n");
}

/* A one-row GEMM with A and B's columns contiguous along K (step_is_gemv):
 * units are (batch index, 16-column piece), each run of them in a chunk a
 * circc_gemv_f32 call that streams its own contiguous part of B (no
 * scratch), then the epilogue, if any, on those columns. Chunks shrink as
 * the step's units run out (work_sharing.h), so small units cost few claims
 * and shorten the wait at the phase's end: a thread that ran out waits for
 * at most one unit of the other (16 columns: half the barrier time of 48 in
 * GPT-2 decode on Zen 5). */
static void emit_gemv(Emit *e, const Step *s) {
  Decl d = {0};
  decl_add(&d, s->out.buf, true);
  decl_add(&d, s->u.gemm.a.buf, false);
  decl_add(&d, s->u.gemm.b.buf, false);
  if (s->u.gemm.mask.buf) decl_add(&d, s->u.gemm.mask.buf, false);
  emit_decls(e, &d);
  int nb = s->u.gemm.nbatch;
  int64_t K = s->dim[nb + 2];
  out(e, "  {\n");
  emit_gemm_units(e, s, 1, 16, 1, step_parallel(s));
  int64_t b_n = s->u.gemm.b.stride[nb + 1], c_n = s->out.stride[nb + 1];
  out(e, "      {\n        circc_gemv_%s(n1 - n0, %lld, ", s->u.gemm.b.buf->stored_bf16 ? "bf16b" : "f32", (long long)K);
  emit_base(e, &s->u.gemm.a, nb, 0);
  out(e, ", ");
  emit_base(e, &s->u.gemm.b, nb, b_n);
  out(e, ", %lld, ", (long long)b_n);
  emit_base(e, &s->out, nb, c_n);
  out(e, ", %lld, ", (long long)c_n);
  if (s->u.gemm.mask.buf) {
    emit_base(e, &s->u.gemm.mask, nb, s->u.gemm.mask.stride[nb + 1]);
    out(e, ", %lld);\n", (long long)s->u.gemm.mask.stride[nb + 1]);
  } else {
    out(e, "NULL, 0);\n");
  }
  emit_gemm_units_end(e, s);
}

/* Rows per block of a bf16 GEMM: its packed A within about 1 MiB (L2). */
static int64_t bf16_row_block(const Step *s) {
  int64_t M = s->dim[s->u.gemm.nbatch], K = s->dim[s->u.gemm.nbatch + 2];
  int64_t mb = (1 << 20) / (2 * circc_bf16_kp(K)) / 32 * 32;
  mb = mb < 32 ? 32 : mb > 512 ? 512 : mb;
  return mb > M ? M : mb;
}

/* --precision bf16: a GEMM whose B is a packed bf16 weight, through
 * templates/gemm_bf16.h. The work is a list of units (batch index, block of
 * rows, 32-column strip), shared out as emit_gemm_units says; the template
 * runs once per row block of a thread's range or chunk (A rounded and packed
 * once per call), then the epilogue, if any, on that block. A row block's
 * packed A stays within about 1 MiB (L2). Steps with more than 4 rows run on
 * AMX tiles when the process has them (each thread asks before its first
 * tile; Linux is asked once per process); 1 to 4 rows (decode) on the
 * vector path, which streams B at its bf16 width. The path never depends on
 * the split, so the bits do not. */
static void emit_gemm_bf16(Emit *e, const Step *s) {
  Decl d = {0};
  decl_add(&d, s->out.buf, true);
  decl_add(&d, s->u.gemm.a.buf, false);
  decl_add(&d, s->u.gemm.b.buf, false);
  emit_decls(e, &d);
  int nb = s->u.gemm.nbatch;
  int64_t M = s->dim[nb], K = s->dim[nb + 2];
  const View *A = &s->u.gemm.a, *B = &s->u.gemm.b, *C = &s->out;
  /* batch-invariant steps (expectation programs) must not depend on M */
  out(e, "  const int amx = %s;\n", M > 4 || s->u.gemm.no_gemv ? "circc_gemm_bf16_amx()" : "0");
  emit_scratch_open(e);
  emit_gemm_units(e, s, bf16_row_block(s), 32, 2, step_parallel(s));
  out(e, "      if (scratch) {\n        circc_gemm_bf16_rows(amx, m0, m1, n0, n1, %lld, ", (long long)K);
  emit_base(e, A, nb, 0);
  out(e, ", %lld, %lld, (const uint16_t *)", (long long)A->stride[nb], (long long)A->stride[nb + 2]);
  emit_base(e, B, nb, 0);
  out(e, ", ");
  emit_base(e, C, nb, 0);
  out(e, ", %lld, %lld, scratch);\n", (long long)C->stride[nb], (long long)C->stride[nb + 1]);
  emit_gemm_units_end(e, s);
}

/* The operands of a GEMM whose B is a packed weight, the end of its call:
 * "A, a_m, a_k, B, C, c_m, c_n, scratch);" (b_cast before B). */
static void emit_packed_gemm_operands(Emit *e, const Step *s, const char *b_cast) {
  int nb = s->u.gemm.nbatch;
  const View *A = &s->u.gemm.a, *B = &s->u.gemm.b, *C = &s->out;
  emit_base(e, A, nb, 0);
  out(e, ", %lld, %lld, %s", (long long)A->stride[nb], (long long)A->stride[nb + 2], b_cast);
  emit_base(e, B, nb, 0);
  out(e, ", ");
  emit_base(e, C, nb, 0);
  out(e, ", %lld, %lld, scratch);\n", (long long)C->stride[nb], (long long)C->stride[nb + 1]);
}

/* Does an int8 GEMM take the template's decode summation (see below)? */
static bool int8_decode(const Step *s) { return s->dim[s->u.gemm.nbatch] <= 4 && !s->u.gemm.no_gemv; }

/* --precision int8: a GEMM whose B is a packed int8 weight, through
 * templates/gemm_int8.h, in the same units as the fp32 GEMM. Steps of 1-4
 * rows (decode) take the template's decode summation in 16-column panels, so
 * threads split the columns and each streams its part of the int8 weights;
 * more rows (and batch-invariant steps, which must not depend on M) the
 * prefill one (blocks of B dequantised for the fp32 template). The summation
 * depends only on the step, never on the split. */
static void emit_gemm_int8(Emit *e, const Step *s) {
  Decl d = {0};
  decl_add(&d, s->out.buf, true);
  decl_add(&d, s->u.gemm.a.buf, false);
  decl_add(&d, s->u.gemm.b.buf, false);
  emit_decls(e, &d);
  int nb = s->u.gemm.nbatch;
  int64_t M = s->dim[nb], K = s->dim[nb + 2];
  bool decode = int8_decode(s);
  int64_t mb = M <= 256 ? M : 256;
  emit_scratch_open(e);
  emit_gemm_units(e, s, mb, decode ? 16 : 48, 4, step_parallel(s)); /* 4 panels: a pass of the decode kernel */
  out(e, "      if (scratch) {\n        circc_gemm_int8_rows(%d, m0, m1, n0, n1, %lld, ", decode, (long long)K);
  emit_packed_gemm_operands(e, s, "(const uint8_t *)");
  emit_gemm_units_end(e, s);
}

/* Batched GEMM through templates/gemm_f32.h. The work is a list of units
 * (batch index, block of up to 256 rows = the template's MC, 48-column
 * panel), shared out as emit_gemm_units says; the template runs once per row
 * block of a thread's range or chunk, over the panels it has there, then the
 * epilogue, if any, on that block. So a thread packs a block of A once (5 or
 * more rows), and threads balance to a panel (fixed column tasks packed A
 * once per task: 10-15% slower at T = 256). The template's sums do not depend
 * on the split. */
static void emit_gemm(Emit *e, const Step *s) {
  if (s->u.gemm.packing == PACK_BF16) {
    emit_gemm_bf16(e, s);
    return;
  }
  if (s->u.gemm.packing == PACK_INT8) {
    emit_gemm_int8(e, s);
    return;
  }
  if (step_is_gemv(s)) {
    emit_gemv(e, s);
    return;
  }
  Decl d = {0};
  decl_add(&d, s->out.buf, true);
  decl_add(&d, s->u.gemm.a.buf, false);
  decl_add(&d, s->u.gemm.b.buf, false);
  emit_decls(e, &d);
  int nb = s->u.gemm.nbatch;
  int64_t M = s->dim[nb], N = s->dim[nb + 1], K = s->dim[nb + 2];
  const View *A = &s->u.gemm.a, *B = &s->u.gemm.b, *C = &s->out;
  int64_t mb = M <= 256 ? M : 256; /* one block of A per task: the template's MC */
  /* A few rows against a B that is no packed weight (a decode step's
   * attention values, one head per batch index): a unit is a whole batch
   * index when there are enough of them, so each reads its rows of B whole
   * (48 + 16 of a head's 64 columns read the rows in strides: 0.6 of the read
   * bandwidth on Zen 5 where whole rows reach 0.9) */
  bool whole_rows = s->u.gemm.packing != PACK_F32 && M <= 4 && N <= 256 && loop_work(s->dim, nb) >= 8;
  emit_scratch_open(e);
  emit_gemm_units(e, s, mb, whole_rows ? (int)N : 48, 1, step_parallel(s));
  if (s->u.gemm.packing == PACK_F32) { /* B pre-packed in the blob: the template takes the whole matrix and the columns */
    out(e, "      if (scratch) {\n        circc_gemm_f32_packed_rows(m0, m1, n0, n1, %lld, %lld, ", (long long)N,
        (long long)K);
    emit_packed_gemm_operands(e, s, "");
    emit_gemm_units_end(e, s);
    return;
  }
  if (B->buf->stored_bf16) { /* a bf16 input: at most 4 rows, unit-stride B rows (lower_bf16_inputs) */
    out(e, "      if (scratch) {\n        circc_gemm_bf16b_rows(m0, m1, n1 - n0, %lld, ", (long long)K);
    emit_base(e, A, nb, 0);
    out(e, ", %lld, %lld, ", (long long)A->stride[nb], (long long)A->stride[nb + 2]);
    emit_base(e, B, nb, 1);
    out(e, ", %lld, ", (long long)B->stride[nb + 2]);
    emit_base(e, C, nb, C->stride[nb + 1]);
    out(e, ", %lld, %lld, scratch);\n", (long long)C->stride[nb], (long long)C->stride[nb + 1]);
    emit_gemm_units_end(e, s);
    return;
  }
  out(e, "      if (scratch) {\n        circc_gemm_f32_rows(m0, m1, n1 - n0, %lld, ", (long long)K);
  const View *v[3] = {A, B, C};
  const int64_t st[3][2] = {{A->stride[nb], A->stride[nb + 2]}, {B->stride[nb + 2], B->stride[nb + 1]},
                            {C->stride[nb], C->stride[nb + 1]}};
  for (int q = 0; q < 3; q++) {
    /* base of this batch element (plus the column block for B and C); the
     * template adds the row and K offsets */
    emit_base(e, v[q], nb, q > 0 ? st[q][1] : 0);
    out(e, ", %lld, %lld, ", (long long)st[q][0], (long long)st[q][1]);
  }
  out(e, "scratch);\n");
  emit_gemm_units_end(e, s);
}

/* Fused attention through templates/attention_f32.h (attention_bf16.h for
 * --precision bf16): tasks are (block of CIRCC_ATTN_QB query rows, batch
 * index), handed out one at a time, last blocks first: causal rows get longer
 * with q, so the longest tasks go first and the short ones fill in
 * (round-robin left one thread 50% more work). Each row's result does not
 * depend on the task split. With a run-time mask (no kend/skip buffers) each
 * row's skipped keys are found first, once for all batch elements. bf16: AMX
 * tiles (when the process has them, asked as the bf16 GEMMs ask) for
 * steps of more than 4 query rows, the vector path for 1-4 (decode), as the
 * bf16 GEMMs choose. */
static void emit_attention(Emit *e, const Step *s) {
  Decl d = {0};
  decl_add(&d, s->out.buf, true);
  decl_add(&d, s->u.attn.q.buf, false);
  decl_add(&d, s->u.attn.k.buf, false);
  decl_add(&d, s->u.attn.v.buf, false);
  const View *mask[4] = {&s->u.attn.kend, &s->u.attn.skip, &s->u.attn.bias, &s->u.attn.factor};
  for (int i = 0; i < 4; i++)
    if (mask[i]->buf) decl_add(&d, mask[i]->buf, false);
  emit_decls(e, &d);
  int nb = s->u.attn.nbatch;
  int64_t tq = s->dim[nb], tk = s->dim[nb + 1], C = s->dim[nb + 2], D = s->dim[nb + 3];
  const Buf *bb = s->u.attn.bias.buf, *bf = s->u.attn.factor.buf;
  const char *name = c_escape(e->c, s->node && s->node->name ? s->node->name : "an attention");
  bool runtime = !s->u.attn.kend.buf, parallel = step_parallel(s);
  const char *F = bf ? arena_printf(&e->c->arena, "b%d", bf->id) : "NULL";
  const char *B = bb ? arena_printf(&e->c->arena, "b%d", bb->id) : "NULL";
  if (runtime) { /* one mask for the team: one thread allocates it, the others get its pointers */
    out(e, "  int64_t *kend = NULL;\n  float *skip = NULL;\n");
    if (parallel) out(e, "  #pragma omp single copyprivate(kend, skip)\n");
    out(e, "  {\n    kend = (int64_t *)malloc(sizeof(int64_t) * %lld);\n", (long long)tq);
    out(e, "    skip = (float *)malloc(sizeof(float) * %lld);\n", (long long)tq);
    out(e, "    if (!kend || !skip) free(kend), free(skip), kend = NULL, skip = NULL;\n  }\n");
    out(e, "  if (!kend) return rt_errorf(\"out of memory for the attention mask of '%%s'\", \"%s\");\n", name);
  }
  const bool bf16 = s->u.attn.bf16;
  if (bf16) out(e, "  const int amx = %s;\n", tq > 4 ? "circc_gemm_bf16_amx()" : "0");
  emit_scratch_open(e);
  if (runtime) {
    if (parallel) out(e, "    #pragma omp for schedule(static) /* its barrier: every row's kend before the rows use them */\n");
    out(e, "    for (int64_t q = 0; q < %lld; q++)\n", (long long)tq);
    out(e, "      kend[q] = circc_attn_row_end(%s%s, %s%s, %lld, &skip[q]);\n", F,
        bf ? arena_printf(&e->c->arena, " + q * %lld", (long long)tk) : "", B,
        bb ? arena_printf(&e->c->arena, " + q * %lld", (long long)tk) : "", (long long)tk);
  }
  /* the mask is freed after the loop, when every thread is done with it: that needs the loop's barrier */
  if (parallel) out(e, "    #pragma omp for collapse(%d) schedule(dynamic, 1)%s\n", nb + 1, runtime ? "" : " nowait");
  out(e, "    for (int64_t qb = (%lld + CIRCC_ATTN_QB - 1) / CIRCC_ATTN_QB - 1; qb >= 0; qb--)\n", (long long)tq);
  for (int t = 0; t < nb; t++) out(e, "%*sfor (int64_t i%d = 0; i%d < %lld; i%d++)%s\n", 6 + 2 * t, "", t, t, (long long)s->dim[t], t, t == nb - 1 ? " {" : "");
  int ind = 4 + 2 * nb;
  if (nb == 0) out(e, "    {\n");
  out(e, "%*sconst int64_t q0 = qb * CIRCC_ATTN_QB, q1 = q0 + CIRCC_ATTN_QB < %lld ? q0 + CIRCC_ATTN_QB : %lld;\n", ind + 2, "",
      (long long)tq, (long long)tq);
  out(e, "%*sif (scratch)\n%*scircc_attn_%sq0, q1, %lld, %lld, %lld, ", ind + 2, "", ind + 4, "",
      bf16 ? "bf16_rows(amx, " : "f32_rows(", (long long)tk, (long long)C, (long long)D);
  const View *v[4] = {&s->u.attn.q, &s->u.attn.k, &s->u.attn.v, &s->out};
  for (int q = 0; q < 4; q++) {
    View base = *v[q];
    base.rank = nb;
    out(e, "&");
    emit_index(e, &base);
    out(e, ", %lld, %lld, ", (long long)v[q]->stride[nb], (long long)v[q]->stride[nb + 1]);
  }
  /* B applies to every key unless constant-mask lowering found it 0 on the kept ones (no F) */
  out(e, "%s, %s, %d, ", F, B, bb && (bf || runtime));
  if (runtime) out(e, "kend, skip, ");
  else out(e, "b%d, b%d, ", s->u.attn.kend.buf->id, s->u.attn.skip.buf->id);
  out(e, "scratch);\n%*s}\n  }\n", ind, "");
  if (runtime && parallel) out(e, "  #pragma omp single nowait\n");
  if (runtime) out(e, "  free(kend), free(skip);\n");
}

/* An --ops general function: one serial call over whole contiguous tensors,
 * each shape as {rank, sizes...}. */
static void emit_general(Emit *e, const Step *s) {
  const int nin = s->u.general.nin;
  Decl d = {0};
  decl_add(&d, s->out.buf, true);
  for (int i = 0; i < nin; i++) decl_add(&d, s->u.general.in[i].buf, false);
  emit_decls(e, &d);
  for (int i = 0; i < nin; i++) {
    const Shape *sh = &s->node->child[i]->shape;
    out(e, "  static const int64_t shape%d[] = {%d", i, sh->rank);
    for (int a = 0; a < sh->rank; a++) out(e, ", %lld", (long long)sh->dim[a]);
    out(e, "};\n");
  }
  out(e, "  const float *const in[] = {");
  for (int i = 0; i < nin; i++) out(e, "%s&b%d[%lld]", i ? ", " : "", s->u.general.in[i].buf->id, (long long)s->u.general.in[i].offset);
  out(e, "};\n  const int64_t *const shapes[] = {");
  for (int i = 0; i < nin; i++) out(e, "%sshape%d", i ? ", " : "", i);
  out(e, "};\n  %s(in, shapes, %d, &b%d[%lld]);\n", s->u.general.op->function, nin, s->out.buf->id, (long long)s->out.offset);
}

/* --patch: the run-time value if the caller gave one, else the node's own. */
static void emit_patch(Emit *e, const Step *s) {
  Decl d = {0};
  decl_add(&d, s->out.buf, true);
  decl_add(&d, s->u.patch.in.buf, false);
  emit_decls(e, &d);
  const Buf *v = s->u.patch.value;
  out(e, "  if (ctx->in[%d]) {\n    const %s *restrict given = (const %s *)ctx->in[%d];\n", v->index, ctype(v->dtype),
      ctype(v->dtype), v->index);
  if (step_parallel(s)) out(e, "    #pragma omp for schedule(static) nowait /* the step ends here: see parallel_for */\n");
  out(e, "    for (int64_t i = 0; i < %lld; i++) b%d[i] = given[i];\n    return NULL;\n  }\n", (long long)v->numel,
      s->out.buf->id);
  parallel_for(e, s, s->dim, s->ndim, 2);
  open_loops(e, s->dim, 0, s->ndim, 2);
  out(e, "%*s", 2 + 2 * s->ndim, "");
  emit_index(e, &s->out);
  out(e, " = ");
  emit_index(e, &s->u.patch.in);
  out(e, ";\n");
}

/* The scratch a thread needs for step s, in floats, as a C expression; NULL
 * for steps without (all but the attentions and the GEMMs that are not GEMVs). */
static const char *step_scratch(Emit *e, const Step *s) {
  Arena *a = &e->c->arena;
  if (s->kind == STEP_ATTENTION) {
    int nb = s->u.attn.nbatch;
    return arena_printf(a, "circc_attn_%sscratch_floats(%lld, %lld, %lld)", s->u.attn.bf16 ? "bf16_" : "",
                        (long long)s->dim[nb + 1], (long long)s->dim[nb + 2], (long long)s->dim[nb + 3]);
  }
  if (s->kind != STEP_GEMM) return NULL;
  int nb = s->u.gemm.nbatch;
  long long N = (long long)s->dim[nb + 1], K = (long long)s->dim[nb + 2];
  if (s->u.gemm.packing == PACK_BF16)
    return arena_printf(a, "circc_gemm_bf16_scratch_bytes(%lld, %lld) / 4", (long long)bf16_row_block(s), K);
  if (s->u.gemm.packing == PACK_INT8) return arena_printf(a, "circc_gemm_int8_scratch_floats(%d, %lld)", int8_decode(s), K);
  return step_is_gemv(s) ? NULL : arena_printf(a, "circc_gemm_scratch_floats(%lld, %lld)", N, K);
}

static const char *step_kind_name(StepKind k) {
  switch (k) {
  case STEP_ELEMENTWISE: return "elementwise";
  case STEP_CONTRACT: return "contraction";
  case STEP_ROW: return "row";
  case STEP_GATHER: return "gather";
  case STEP_FILL: return "fill";
  case STEP_GEMM: return "gemm";
  case STEP_LAYERNORM: return "layernorm";
  case STEP_ATTENTION: return "attention";
  case STEP_GENERAL: return "general";
  case STEP_PATCH: return "patch";
  }
  return "?";
}

static void emit_step(Emit *e, const Step *s) {
  const Node *n = s->node;
  if (step_epilogue(s)) emit_epilogue(e, s);
  out(e, "\n/* step %d (%s): %s %s %s", s->id, step_kind_name(s->kind), comment_safe(e->c, n ? n->name : NULL),
      n ? kind_name(n->kind) : "", n ? shape_str(e->c, &n->shape) : "");
  if (n && n->kind == NK_GeneralFunction) out(e, " %s", comment_safe(e->c, n->u.gf.text));
  out(e, " */\nstatic const char *%sstep_%d(const Ctx *ctx) {\n", e->pfx, s->id);
  switch (s->kind) {
  case STEP_ELEMENTWISE: emit_elementwise(e, s); break;
  case STEP_FILL: emit_fill(e, s); break;
  case STEP_CONTRACT: emit_contract(e, s); break;
  case STEP_ROW: emit_row(e, s); break;
  case STEP_GATHER: emit_gather(e, s); break;
  case STEP_GEMM: emit_gemm(e, s); break;
  case STEP_LAYERNORM: emit_row(e, s); break;
  case STEP_ATTENTION: emit_attention(e, s); break;
  case STEP_GENERAL: emit_general(e, s); break;
  case STEP_PATCH: emit_patch(e, s); break;
  }
  out(e, "  return NULL;\n}\n");
}

/* The --ops files (ops.c; build.c writes them next to model.c) come first,
 * before circc's own declarations: one translation unit with the program,
 * compiled with its flags, so the C compiler inlines their elementwise
 * functions into the fused loops. */
static void emit_ops_includes(Emit *e) {
  if (!e->c->ops) return;
  out(e, "\n/* --ops files: part of this translation unit, so their elementwise functions inline into the loops */\n");
  for (int i = 0; i < e->c->ops->nfiles; i++) out(e, "#include \"%s\"\n", c_escape(e->c, ops_program_file(e->c, i)));
}

static const char PRELUDE[] =
    "#include <math.h>\n"
    "#include <stdint.h>\n"
    "#include <stddef.h>\n"
    "#include <stdio.h>\n"
    "#include <stdlib.h>\n"
    "#include <string.h>\n"
    "#include <omp.h>\n"
    "#include \"circc_rt.h\"\n"
    "#include \"gemm_f32.h\"\n"
    "#include \"work_sharing.h\"\n"
    "\n"
    "extern const unsigned char circc_weights[]; /* weights.bin, linked by weights.S (.incbin) */\n"
    "\n"
    "typedef struct Ctx {\n"
    "  const unsigned char *w;  /* weights blob */\n"
    "  const void *const *in;   /* inputs */\n"
    "  void *const *out;        /* outputs */\n"
    "  unsigned char *arena;    /* temporaries (memplan offsets) */\n"
    "  float *scratch;          /* this thread's scratch for GEMMs and attentions, or NULL */\n"
    "  uint64_t *claims;        /* take_units' words, zeroed by run(): claim_stride per thread, one per step */\n"
    "  int64_t claim_stride;\n"
    "} Ctx;\n"
    "\n"
    "/* The first step of a run that failed (-1: a thread's scratch) and its message. */\n"
    "typedef struct Failure {\n"
    "  int step;\n"
    "  char msg[1024];\n"
    "} Failure;\n"
    "\n"
    "/* Records that `step` failed, unless an earlier step did. */\n"
    "static inline void step_failed(Failure *f, int step, const char *msg) {\n"
    "  #pragma omp critical(circc_step_failed)\n"
    "  if (step < f->step) {\n"
    "    snprintf(f->msg, sizeof f->msg, \"%s\", msg);\n"
    "    #pragma omp atomic write\n"
    "    f->step = step;\n"
    "  }\n"
    "}\n"
    "\n"
    "/* Every thread of run()'s team calls this. The steps come in phases\n"
    " * (phase p: steps start[p] to start[p + 1] - 1) whose steps do not depend on\n"
    " * each other, and the team waits at a barrier after each phase, since a\n"
    " * later step may read what another thread wrote (or overwrite what it still\n"
    " * reads). Every thread runs each parallel step (its share of it); a serial\n"
    " * step runs on thread place[step] * nthreads >> 16 alone, first: serial steps\n"
    " * of one place may depend on each other and run in order, and a thread\n"
    " * skips the rest of its serial steps of the phase after one fails. After a\n"
    " * failure every thread leaves at the same barrier, the next one. */\n"
    "static inline void run_steps(const char *(*const *steps)(const Ctx *), const unsigned char *parallel,\n"
    "                             const unsigned short *place, const int *start, int nphase, const Ctx *ctx,\n"
    "                             Failure *f, rt_barrier *barrier) {\n"
    "  const long me = omp_get_thread_num(), nt = omp_get_num_threads();\n"
    "  for (int p = 0; p < nphase; p++) {\n"
    "    for (int j = start[p]; j < start[p + 1]; j++)\n"
    "      if (!parallel[j] && (place[j] * nt >> 16) == me) {\n"
    "        const char *err = steps[j](ctx);\n"
    "        if (err) {\n"
    "          step_failed(f, j, err);\n"
    "          break;\n"
    "        }\n"
    "      }\n"
    "    for (int j = start[p]; j < start[p + 1]; j++) {\n"
    "      const char *err = parallel[j] ? steps[j](ctx) : NULL;\n"
    "      if (err) step_failed(f, j, err);\n"
    "    }\n"
    "    rt_barrier_wait(barrier, (int)nt); /* circc_rt.h: spins only while this thread's CPU is its own */\n"
    "    int failed_at; /* failures before this barrier are of steps before start[p + 1], later ones of later steps */\n"
    "    #pragma omp atomic read\n"
    "    failed_at = f->step;\n"
    "    if (failed_at < start[p + 1]) return;\n"
    "  }\n"
    "}\n"
    "\n"
    "/* This thread's next chunk of step `slot`'s units (work_sharing.h). */\n"
    "static inline __attribute__((unused)) int take_units(const Ctx *ctx, int slot, int64_t total, int64_t grain,\n"
    "                                                     int64_t *u0, int64_t *u1) {\n"
    "  return circc_take_units(ctx->claims, ctx->claim_stride, slot, omp_get_thread_num(), omp_get_num_threads(),\n"
    "                          total, grain, u0, u1);\n"
    "}\n"
    "\n"
    "#include \"elementwise_f32.h\"\n"
    "#include \"row_f32.h\"\n"
    "#include \"attention_f32.h\"\n";


static void emit_desc(Emit *e, const char *what, int n, Buf **bufs, const char **names) {
  for (int i = 0; i < n; i++) {
    const Node *nd = bufs[i]->node;
    out(e, "static const int64_t %s%s_shape_%d[] = {", e->pfx, what, i);
    for (int d = 0; d < nd->shape.rank; d++) out(e, "%s%lld", d ? ", " : "", (long long)nd->shape.dim[d]);
    out(e, "%s};\n", nd->shape.rank ? "" : "0");
  }
  out(e, "static const rt_tensor_desc %s%s[] = {\n", e->pfx, what);
  for (int i = 0; i < n; i++) {
    const Node *nd = bufs[i]->node;
    out(e, "  {\"%s\", %s, %d, %s%s_shape_%d, %lld},\n", c_escape(e->c, names[i]), bufs[i]->dtype == DT_I64 ? "RT_I64" : "RT_F32", nd->shape.rank,
        e->pfx, what, i, (long long)shape_numel(&nd->shape));
  }
  if (!n) out(e, "  {0},\n");
  out(e, "};\n");
}

static void emit_cstring(Emit *e, const char *s) { out(e, "\"%s\"", c_escape(e->c, s ? s : "")); }

/* What a packed weight's blob copy is made of: its tensor read through the
 * view packed_of over [batch..., M, N, K], one matrix per index of the batch
 * dims that move B (stride not 0), innermost fastest. */
typedef struct PackedSource {
  const View *v;
  const Tensor *t;
  const float *f32; /* t's data when it is fp32 */
  int nb;
  int64_t N, K, b_n, b_k;
  int64_t base; /* where the current matrix starts in t (packed_source_matrix) */
} PackedSource;

static PackedSource packed_source(const Buf *b) {
  const View *v = b->packed_of;
  int nb = v->rank - 3;
  return (PackedSource){v, b->tensor, b->tensor->dtype == DT_F32 ? b->tensor->data : NULL, nb, v->dim[nb + 1],
                        v->dim[nb + 2], v->stride[nb + 1], v->stride[nb + 2], v->offset};
}

static void packed_source_matrix(PackedSource *ps, int64_t m) {
  const View *v = ps->v;
  ps->base = v->offset;
  for (int d = ps->nb - 1; d >= 0; d--)
    if (v->stride[d] != 0 && v->dim[d] != 1) ps->base += m % v->dim[d] * v->stride[d], m /= v->dim[d];
}

/* Element (k, n) of the current matrix, as float. */
static float packed_value(const PackedSource *ps, int64_t k, int64_t n) {
  int64_t at = ps->base + k * ps->b_k + n * ps->b_n;
  return ps->f32 ? ps->f32[at] : (float)tensor_get_f64(ps->t, at);
}

/* A packed bf16 weight (PACK_BF16): each matrix of the view, rounded to
 * bf16, in the order of circc_bf16_b_index (padding 0). false if writing
 * failed. */
static bool write_bf16_weight(const Buf *b, FILE *w) {
  PackedSource ps = packed_source(b);
  int64_t N = ps.N, K = ps.K, Kp = circc_bf16_kp(K), elems = circc_bf16_np(N) * Kp;
  uint16_t chunk[4096];
  for (int64_t m = 0; m < b->numel * 2 / elems; m++) {
    packed_source_matrix(&ps, m);
    for (int64_t e0 = 0; e0 < elems; e0 += 4096) {
      int64_t n = elems - e0 < 4096 ? elems - e0 : 4096;
      for (int64_t j = 0; j < n; j++) {
        int64_t at = e0 + j, rem = at % (Kp * 16); /* panel at / (Kp*16); in it, pair, column, half */
        int64_t k = rem / 32 * 2 + rem % 2, col = at / (Kp * 16) * 16 + rem % 32 / 2;
        chunk[j] = k < K && col < N ? circc_bf16_round(packed_value(&ps, k, col)) : 0;
      }
      if (fwrite(chunk, 2, (size_t)n, w) != (size_t)n) return false;
    }
  }
  return true;
}

/* A pre-packed fp32 weight (PACK_F32): each matrix of the view in the
 * order of circc_gemm_packed_b_index (KC blocks of 16-column panels, padding
 * 0). false if writing failed. */
static bool write_packed_weight(const Buf *b, FILE *w) {
  PackedSource ps = packed_source(b);
  int64_t N = ps.N, K = ps.K, Np = circc_gemm_packed_np(N);
  float panel[16 * CIRCC_GEMM_KC];
  for (int64_t m = 0; m < b->numel / (K * Np); m++) {
    packed_source_matrix(&ps, m);
    for (int64_t pc = 0; pc < K; pc += CIRCC_GEMM_KC) {
      int64_t kb = K - pc < CIRCC_GEMM_KC ? K - pc : CIRCC_GEMM_KC;
      for (int64_t n0 = 0; n0 < Np; n0 += 16) { /* one kb x 16 panel */
        for (int64_t k = 0; k < kb; k++)
          for (int64_t j = 0; j < 16; j++) panel[k * 16 + j] = n0 + j >= N ? 0.0f : packed_value(&ps, pc + k, n0 + j);
        if (fwrite(panel, 4, (size_t)(kb * 16), w) != (size_t)(kb * 16)) return false;
      }
    }
  }
  return true;
}

/* A packed int8 weight (PACK_INT8): each matrix of the view quantised
 * (circc_int8_quantize: lower_gemm.c made sure every value can be) and laid
 * out as circc_int8_block says, one panel of 16 columns at a time (padding
 * 0). false if writing failed. */
static bool write_int8_weight(const Buf *b, FILE *w) {
  PackedSource ps = packed_source(b);
  int64_t N = ps.N, K = ps.K, G = circc_int8_groups(K), bytes = circc_int8_bytes(N, K);
  uint8_t *panel = malloc((size_t)(G * CIRCC_INT8_BLOCK));
  if (!panel) return false;
  bool ok = true;
  for (int64_t m = 0; ok && m < b->numel * 4 / bytes; m++) {
    packed_source_matrix(&ps, m);
    for (int64_t p0 = 0; ok && p0 < N; p0 += CIRCC_INT8_PANEL) {
      memset(panel, 0, (size_t)(G * CIRCC_INT8_BLOCK));
      for (int64_t n = p0; n < N && n < p0 + CIRCC_INT8_PANEL; n++)
        for (int64_t g = 0; g < G; g++) {
          float x[CIRCC_INT8_GROUP];
          int8_t q[CIRCC_INT8_GROUP];
          int kn = (int)(K - g * 32 < 32 ? K - g * 32 : 32);
          for (int j = 0; j < kn; j++) x[j] = packed_value(&ps, g * 32 + j, n);
          uint16_t sc = circc_int8_quantize(x, kn, q);
          uint8_t *blk = panel + g * CIRCC_INT8_BLOCK;
          memcpy(blk + 2 * (n % 16), &sc, 2);
          for (int j = 0; j < kn; j++) blk[32 + 16 * j + n % 16] = (uint8_t)q[j];
        }
      ok = fwrite(panel, 1, (size_t)(G * CIRCC_INT8_BLOCK), w) == (size_t)(G * CIRCC_INT8_BLOCK);
    }
  }
  free(panel);
  return ok;
}

/* The blob: every weight buffer, converted to its dtype, at its memplan
 * offset. Returns the bytes written, -1 if writing failed. */
static int64_t write_weights(const Kernels *k, FILE *w) {
  int64_t at = 0;
  static const unsigned char zeros[64];
  for (int i = 0; i < k->nbuf; i++) {
    const Buf *b = k->buf[i];
    if (b->kind != BUF_WEIGHT || b->offset < 0) continue;
    CHECK(b->offset >= at && b->offset - at < 64);
    if (b->offset > at && fwrite(zeros, 1, (size_t)(b->offset - at), w) != (size_t)(b->offset - at)) return -1;
    if (b->packing == PACK_BF16) {
      if (!write_bf16_weight(b, w)) return -1;
    } else if (b->packing == PACK_F32) {
      if (!write_packed_weight(b, w)) return -1;
    } else if (b->packing == PACK_INT8) {
      if (!write_int8_weight(b, w)) return -1;
    } else if (b->dtype == DT_F32 && b->tensor->dtype == DT_F32) {
      if (fwrite(b->tensor->data, 4, (size_t)b->numel, w) != (size_t)b->numel) return -1;
    } else { /* converted in chunks */
      union { int64_t i[1024]; float f[1024]; } chunk;
      for (int64_t j0 = 0; j0 < b->numel; j0 += 1024) {
        int64_t n = b->numel - j0 < 1024 ? b->numel - j0 : 1024;
        for (int64_t j = 0; j < n; j++) {
          double v = tensor_get_f64(b->tensor, j0 + j);
          if (b->dtype == DT_I64) chunk.i[j] = (int64_t)v;
          else chunk.f[j] = (float)v;
        }
        if (fwrite(&chunk, dtype_size(b->dtype), (size_t)n, w) != (size_t)n) return -1;
      }
    }
    at = b->offset + b->numel * (int64_t)dtype_size(b->dtype);
  }
  if (at == 0) { /* keep the symbol non-empty */
    if (fwrite(zeros, 1, 1, w) != 1) return -1;
    at = 1;
  }
  return at;
}

/* The body of a graph's run(): one parallel region whose threads walk the
 * steps together (run_steps), each with its own scratch, allocated once for
 * the run: the most any step needs. The team is rt_team_begin's (every
 * thread, or fewer while the team's threads keep waiting for their CPUs);
 * without a parallel step it is one thread, so that the steps' barriers
 * still belong to this run. */
static void emit_run_body(Emit *e, int64_t wbase) {
  const Kernels *k = e->k;
  const char *p = e->pfx;
  bool any_parallel = false;
  out(e, "  Failure failure = {%d, \"\"};\n", k->nstep);
  out(e, "  rt_barrier barrier = {0, 0, 0};\n");
  out(e, "  const unsigned char *const w = rt_weights(circc_weights, circc_weights_bytes);\n");
  for (int i = 0; i < k->nstep; i++) any_parallel |= step_parallel(k->step[i]);
  int64_t stride = (k->nstep + 7) / 8 * 8; /* a thread's words fill whole cache lines */
  if (any_parallel) {
    out(e, "  /* take_units' words, zero: every thread the region can have, %lld per thread */\n", (long long)stride);
    out(e, "  const size_t claim_bytes = (size_t)omp_get_max_threads() * %lld * 8;\n", (long long)stride);
    out(e, "  uint64_t *const claims = (uint64_t *)aligned_alloc(64, claim_bytes);\n");
    out(e, "  if (!claims) return rt_errorf(\"out of memory for the steps' work counters\");\n");
    out(e, "  memset(claims, 0, claim_bytes);\n");
  }
  if (any_parallel) {
    out(e, "  rt_team team = rt_team_begin(omp_get_max_threads()); /* fewer threads while CPUs are contended */\n");
    out(e, "  #pragma omp parallel num_threads(team.threads)\n  {\n");
    out(e, "    const long long entered = rt_team_enter(&team);\n");
  } else {
    out(e, "  #pragma omp parallel num_threads(1) /* every step is serial */\n  {\n");
  }
  /* the distinct scratch sizes, each named after the first step that needs it */
  const char **need = ARENA_ARRAY(&e->c->arena, const char *, k->nstep + 1);
  int nneed = 0;
  for (int i = 0; i < k->nstep; i++) {
    const Step *s = k->step[i];
    const char *x = step_scratch(e, s);
    bool seen = false;
    for (int j = 0; x && j < nneed; j++) seen |= strcmp(need[j], x) == 0;
    if (!x || seen) continue;
    if (!nneed) out(e, "    /* this thread's scratch, once per run: the most any step needs */\n    int64_t floats = 0, need;\n    const char *what = \"\";\n");
    need[nneed++] = x;
    const char *name = s->node && s->node->name ? s->node->name : s->kind == STEP_GEMM ? "a contraction" : "an attention";
    out(e, "    if ((need = %s) > floats) floats = need, what = \"the %s scratch of '%s'\";\n", x,
        s->kind == STEP_GEMM ? "GEMM" : "attention", c_escape(e->c, name));
  }
  if (nneed) {
    out(e, "    float *scratch = (float *)aligned_alloc(64, (size_t)((floats * 4 + 63) / 64 * 64));\n");
    out(e, "    if (!scratch) step_failed(&failure, -1, rt_errorf(\"out of memory for %%s\", what));\n");
  }
  out(e, "    const Ctx ctx = {w");
  if (wbase) out(e, " + %lld", (long long)wbase);
  out(e, ", in, out, (unsigned char *)arena, %s, %s, %lld};\n", nneed ? "scratch" : "NULL",
      any_parallel ? "claims" : "NULL", (long long)stride);
  out(e, "    run_steps(%ssteps, %sparallel_steps, %sserial_place, %sphase_start, %d, &ctx, &failure, &barrier);\n",
      p, p, p, p, k->nphase);
  if (nneed) out(e, "    free(scratch);\n");
  if (any_parallel) out(e, "    rt_team_leave(&team, entered);\n");
  out(e, "  }\n");
  if (any_parallel) out(e, "  rt_team_end(&team);\n  free(claims);\n");
  out(e, "  return failure.step < %d ? rt_errorf(\"%%s\", failure.msg) : NULL;\n", k->nstep);
}

/* One graph: its steps, the table that calls them, its run function and
 * its input and output descriptions, all named with e->pfx; its weights are
 * at wbase in the blob. */
static void emit_graph(Emit *e, int64_t wbase) {
  const Kernels *k = e->k;
  const char *p = e->pfx;
  for (int i = 0; i < k->nstep; i++) emit_step(e, k->step[i]);
  /* Steps are called through a table: in a chain of `if (err) return` calls,
   * gcc's static estimate makes each later step less likely to run, and it
   * compiled the loops of later steps as cold code (not vectorised). */
  if (k->nstep) {
    out(e, "\nstatic const char *(*const %ssteps[%d])(const Ctx *) = {", p, k->nstep);
    for (int i = 0; i < k->nstep; i++) out(e, "%s%sstep_%d", i == 0 ? "\n  " : i % 8 ? ", " : ",\n  ", p, i);
    out(e, "\n};\n");
    out(e, "\n/* 1: the step shares its work out over the team; 0: one thread runs it */\n");
    out(e, "static const unsigned char %sparallel_steps[%d] = {", p, k->nstep);
    for (int i = 0; i < k->nstep; i++) out(e, "%s%d", i == 0 ? "" : i % 32 ? ", " : ",\n  ", step_parallel(k->step[i]));
    out(e, "};\n");
    out(e, "\n/* a serial step's thread: place * nthreads >> 16 (schedule.c: serial steps spread by cost) */\n");
    out(e, "static const unsigned short %sserial_place[%d] = {", p, k->nstep);
    for (int i = 0; i < k->nstep; i++) out(e, "%s%d", i == 0 ? "" : i % 16 ? ", " : ",\n  ", k->step[i]->place);
    out(e, "};\n");
    out(e, "\n/* phase p: steps phase_start[p] to phase_start[p + 1] - 1, then a barrier */\n");
    out(e, "static const int %sphase_start[%d] = {0", p, k->nphase + 1);
    for (int i = 1, n = 1; i <= k->nstep; i++)
      if (i == k->nstep || k->step[i]->phase != k->step[i - 1]->phase) out(e, "%s%d", n++ % 16 ? ", " : ",\n  ", i);
    out(e, "};\n");
  }
  out(e, "\nstatic const char *%srun(const void *const *in, void *const *out, void *arena) {\n", p);
  if (k->nstep) emit_run_body(e, wbase);
  else out(e, "  (void)in, (void)out, (void)arena;\n  return NULL;\n");
  out(e, "}\n\n");
  emit_desc(e, "inputs", k->ninputs, k->input, k->input_name);
  emit_desc(e, "outputs", k->noutputs, k->output, k->output_name);
  if (k->npatches) emit_desc(e, "patches", k->npatches, k->patch, k->patch_name);
}

static void emit_ints(Emit *e, const char *name, const int *v, int n) {
  out(e, "static const int %s[] = {", name);
  for (int i = 0; i < n; i++) out(e, "%s%d", i ? ", " : "", v[i]);
  out(e, "%s};\n", n ? "" : "0");
}

/* The input map of a graph: which group's rows or which cumulant's estimate
 * each input takes, as the runtime's rt_graph wants it. */
static void emit_rt_graph(Emit *e, const Kernels *k, const int *group, const int *cumulant, const int *data) {
  const char *what[3] = {"group", "cumulant", "data"};
  const int *from[3] = {group, cumulant, data};
  for (int w = 0; w < 3; w++) {
    int *v = ARENA_ARRAY(&e->c->arena, int, k->ninputs + 1);
    for (int i = 0; i < k->ninputs; i++) v[i] = from[w][k->input[i]->index]; /* by the program's input index */
    emit_ints(e, arena_printf(&e->c->arena, "%sinput_%s", e->pfx, what[w]), v, k->ninputs);
  }
}

static void emit_graph_desc(Emit *e, const Kernels *k, const char *pfx) {
  out(e, "{%d, %d, %sinputs, %soutputs, %lld, %.0f, %srun, %sinput_group, %sinput_cumulant, %sinput_data}", k->ninputs,
      k->noutputs, pfx, pfx, (long long)k->arena_bytes, k->flops, pfx, pfx, pfx, pfx);
}

/* Whether streamed data d is read as int64 (a table of indices): its pass
 * inputs' dtype, which must agree across passes. */
static bool data_is_index(const Expectation *x, const Kernels *pass, int d) {
  int seen = -1;
  for (int j = 0; j < x->npasses; j++)
    for (int i = 0; i < pass[j].ninputs; i++)
      if (x->pass[j].input_data[pass[j].input[i]->index] == d) {
        int is = pass[j].input[i]->dtype == DT_I64;
        if (seen >= 0 && seen != is) ICE("streamed data %d is int64 in one pass and float32 in another", d);
        seen = is;
      }
  return seen == 1;
}

/* The expectation program's tables (circc_rt.h rt_expect): groups (their
 * probabilities in the blob at pbase), cumulants, passes and the post graph. */
static void emit_expect(Emit *e, const Expectation *x, const Kernels *pass, const int64_t *pbase) {
  Comp *c = e->c;
  out(e, "static const rt_group groups[] = {\n");
  for (int g = 0; g < x->groups.n; g++) {
    const RvGroup *gr = &x->groups.g[g];
    const char *vars = "";
    for (int v = 0; v < gr->vars.n; v++) {
      const Node *var = gr->vars.node[v];
      vars = arena_printf(&c->arena, "%s%s%s", vars, v ? ", " : "", var->name ? var->name : arena_printf(&c->arena, "(unnamed #%d)", var->id));
    }
    out(e, "  {");
    if (gr->name) emit_cstring(e, gr->name);
    else out(e, "NULL");
    out(e, ", ");
    emit_cstring(e, vars);
    out(e, ", %lld, (const double *)(circc_weights + %lld), %d, %d, 0x%016llxULL},\n", (long long)gr->size,
        (long long)pbase[g], gr->uniform, gr->tagged, (unsigned long long)gr->key);
  }
  out(e, "};\n");
  for (int i = 0; i < x->ncumulants; i++) {
    const RvCumulant *cu = &x->cumulant[i];
    emit_ints(e, arena_printf(&c->arena, "cumulant%d_arg", i), cu->arg, cu->order);
    out(e, "static const int64_t cumulant%d_shape[] = {", i);
    for (int d = 0; d < cu->node->shape.rank; d++) out(e, "%s%lld", d ? ", " : "", (long long)cu->node->shape.dim[d]);
    out(e, "%s};\n", cu->node->shape.rank ? "" : "0");
  }
  out(e, "static const rt_cumulant cumulants[] = {\n");
  for (int i = 0; i < x->ncumulants; i++) {
    const RvCumulant *cu = &x->cumulant[i];
    out(e, "  {");
    emit_cstring(e, cu->name);
    out(e, ", %d, %d, cumulant%d_arg, %d, cumulant%d_shape, %lld},\n", cu->order, cu->pass, i, cu->node->shape.rank, i,
        (long long)shape_numel(&cu->node->shape));
  }
  out(e, "};\nstatic const rt_graph passes[] = {\n");
  for (int j = 0; j < x->npasses; j++) {
    out(e, "  ");
    emit_graph_desc(e, &pass[j], arena_printf(&c->arena, "pass%d_", j));
    out(e, ",\n");
  }
  out(e, "};\nstatic const rt_graph post = ");
  emit_graph_desc(e, e->k, "");
  out(e, ";\n");
  /* streamed data: each takes the dtype of the pass input that reads it */
  for (int d = 0; d < x->ndata; d++) {
    const Shape *s = &x->data[d].array->shape;
    out(e, "static const int64_t data%d_shape[] = {", d);
    for (int a = 0; a < s->rank; a++) out(e, "%s%lld", a ? ", " : "", (long long)s->dim[a]);
    out(e, "};\n");
  }
  out(e, "static const rt_tensor_desc data[] = {\n");
  for (int d = 0; d < x->ndata; d++) {
    out(e, "  {");
    emit_cstring(e, x->data[d].array->name);
    out(e, ", %s, %d, data%d_shape, %lld},\n", data_is_index(x, pass, d) ? "RT_I64" : "RT_F32",
        x->data[d].array->shape.rank, d, (long long)shape_numel(&x->data[d].array->shape));
  }
  if (!x->ndata) out(e, "  {0},\n");
  out(e, "};\nstatic const rt_expect expect = {%d, %d, groups, %d, passes, %d, cumulants, &post, %d, data};\n",
      x->batch, x->groups.n, x->npasses, x->ncumulants, x->ndata);
}

/* Appends an expectation program's pass weights and group probabilities to
 * the blob after the program's `at` bytes, each 64-byte aligned; their
 * offsets go to wbase[j] and pbase[g]. False if writing failed. */
static bool write_expect_blob(const Expectation *x, const Kernels *pass, FILE *w, int64_t at, int64_t *wbase,
                              int64_t *pbase) {
  static const unsigned char zeros[64];
  for (int j = 0; j < x->npasses + x->groups.n; j++) {
    int64_t pad = (64 - at % 64) % 64;
    if (pad && fwrite(zeros, 1, (size_t)pad, w) != (size_t)pad) return false;
    at += pad;
    if (j < x->npasses) {
      int64_t n = write_weights(&pass[j], w);
      if (n < 0) return false;
      wbase[j] = at, at += n;
    } else {
      const RvGroup *g = &x->groups.g[j - x->npasses];
      if (fwrite(g->probs, sizeof(double), (size_t)g->size, w) != (size_t)g->size) return false;
      pbase[j - x->npasses] = at, at += g->size * (int64_t)sizeof(double);
    }
  }
  return true;
}

bool emit_program(Comp *c, const Kernels *k, const EmitOptions *o, FILE *model_c, FILE *weights) {
  Emit e = {c, k, model_c, ""};
  const Expectation *x = o->expect && o->expect->present ? o->expect : NULL;
  int64_t *wbase = x ? ARENA_ARRAY(&c->arena, int64_t, x->npasses + 1) : NULL;
  int64_t *pbase = x ? ARENA_ARRAY(&c->arena, int64_t, x->groups.n + 1) : NULL;
  int64_t at = write_weights(k, weights);
  long blob_bytes = -1;
  if (at < 0 || (x && !write_expect_blob(x, o->pass_kernels, weights, at, wbase, pbase)) ||
      (blob_bytes = ftell(weights)) < 0) {
    diag_error_class(c, DIAG_IO, NO_LOC, "cannot write the weights blob");
    return false;
  }
  out(&e, "/* %s.c — generated by circc %s from a rust_circuit circuit. Do not edit.\n", comment_safe(c, o->name), CIRCC_VERSION);
  out(&e, " * command: %s\n", comment_safe(c, o->command_line));
  out(&e, " * source hash: %s\n", comment_safe(c, o->source_hash));
  out(&e, " * %d steps, %.0f FLOPs per run, arena %lld bytes, weights %lld bytes. */\n", k->nstep, k->flops,
      (long long)k->arena_bytes, (long long)k->weights_bytes);
  emit_ops_includes(&e);
  out(&e, "%s", PRELUDE);
  out(&e, "static const size_t circc_weights_bytes = %ld; /* weights.bin's size */\n", blob_bytes);
  if (c->precision == PRECISION_BF16) out(&e, "#include \"gemm_bf16.h\"\n#include \"attention_bf16.h\"\n");
  if (c->precision == PRECISION_INT8) out(&e, "#include \"gemm_int8.h\"\n");
  bool bf16_inputs = false; /* lower_bf16_inputs */
  for (int i = 0; i < k->ninputs; i++) bf16_inputs |= k->input[i]->stored_bf16;
  if (bf16_inputs) out(&e, "#include \"gemv_bf16.h\"\n");
  emit_graph(&e, 0);
  if (x) {
    for (int j = 0; j < x->npasses; j++) {
      Emit pe = {c, &o->pass_kernels[j], model_c, arena_printf(&c->arena, "pass%d_", j)};
      out(&pe, "\n/* ---- pass %d: the arguments of the cumulants it estimates, for %d samples */\n", j, x->batch);
      emit_graph(&pe, wbase[j]);
      emit_rt_graph(&pe, pe.k, x->pass[j].input_group, x->pass[j].input_cumulant, x->pass[j].input_data);
    }
    out(&e, "\n/* ---- the expectation program: groups, cumulants, passes, post */\n");
    emit_rt_graph(&e, k, x->post_input_group, x->post_input_cumulant, x->post_input_data);
    emit_expect(&e, x, o->pass_kernels, pbase);
  }
  if (bf16_inputs) {
    out(&e, "\nstatic const unsigned char input_bf16[] = {");
    for (int i = 0; i < k->ninputs; i++) out(&e, "%s%d", i ? ", " : "", k->input[i]->stored_bf16);
    out(&e, "};\n");
  }
  if (o->tokenizer_len) out(&e, "\nextern const unsigned char circc_tokenizer[];   /* tokenizer.S: tokenizer.bin */\n");
  out(&e, "\nstatic const rt_model model = {\n  .name = ");
  emit_cstring(&e, o->name);
  out(&e, ",\n  .circc_version = \"%s\",\n  .command_line = ", CIRCC_VERSION);
  emit_cstring(&e, o->command_line);
  out(&e, ",\n  .source_hash = ");
  emit_cstring(&e, o->source_hash);
  out(&e, ",\n  .ninputs = %d,\n  .noutputs = %d,\n  .inputs = inputs,\n  .outputs = outputs,\n", k->ninputs, k->noutputs);
  if (k->ntaps) out(&e, "  .ntaps = %d,\n", k->ntaps);
  if (k->npatches) out(&e, "  .npatches = %d,\n  .patches = patches,\n", k->npatches);
  out(&e, "  .arena_bytes = %lld,\n  .flops = %.0f,\n  .run = run,\n", (long long)k->arena_bytes, k->flops);
  out(&e, "  .weights = circc_weights,\n  .weights_bytes = circc_weights_bytes,\n");
  if (o->vocab) {
    out(&e, "  .vocab = ");
    emit_cstring(&e, o->vocab);
    out(&e, ",\n");
  }
  if (o->tokenizer_len)
    out(&e, "  .tokenizer = circc_tokenizer,\n  .tokenizer_len = %zu,\n", o->tokenizer_len);
  if (x) out(&e, "  .expect = &expect,\n");
  if (c->precision == PRECISION_BF16) out(&e, "  .precision = \"bf16\",\n  .gemm_path = circc_gemm_bf16_path,\n");
  if (c->precision == PRECISION_INT8) out(&e, "  .precision = \"int8\",\n  .gemm_path = circc_gemm_int8_path,\n");
  if (bf16_inputs) out(&e, "  .input_bf16 = input_bf16,\n");
  out(&e, "};\n\n");
  out(&e, "#ifndef CIRCC_NO_MAIN\nint main(int argc, char **argv) {\n  rt_wait_policy(argv);\n"
            "  return rt_main(&model, argc, argv);\n}\n#endif\n");
  return !ferror(model_c);
}
