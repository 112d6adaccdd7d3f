/* rt_lib.c — the C API of shared libraries (rt_lib.h, circc_lib.h): a
 * context owns one model's arena, the pointer array run() takes (inputs then
 * patches), a thread count and its last error. No global state, no printing,
 * no exit. Threads: OpenMP's nthreads-var is an ICV of the current task's data
 * environment (the spec's ICV table; omp_set_num_threads sets it for the
 * current task), so setting it before the run and putting the caller's value
 * back after it changes the thread count of this run only, never another
 * thread's. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#include "rt_core.h"
#include "rt_lib.h"

struct circc_ctx {
  const rt_model *model;
  void *arena;                 /* model->arena_bytes, reused by every run */
  const void **in;             /* ninputs + npatches: what model->run takes */
  int threads;                 /* 0: the calling thread's OpenMP setting */
  char error[1024];            /* "" or the last failed call's message */
};

static int fail(circc_ctx *ctx, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(circc_ctx *ctx, int code, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(ctx->error, sizeof ctx->error, fmt, ap);
  va_end(ap);
  return code;
}

circc_ctx *rt_lib_init(const rt_model *m) {
  circc_ctx *ctx = calloc(1, sizeof *ctx);
  if (!ctx) return NULL;
  ctx->model = m;
  ctx->arena = rt_alloc_zeroed(m->arena_bytes);
  ctx->in = calloc((size_t)m->ninputs + (size_t)m->npatches + 1, sizeof *ctx->in);
  if (!ctx->arena || !ctx->in) {
    rt_lib_free(ctx);
    return NULL;
  }
  return ctx;
}

void rt_lib_free(circc_ctx *ctx) {
  if (!ctx) return;
  free(ctx->arena);
  free(ctx->in);
  free(ctx);
}

const char *rt_lib_error(const circc_ctx *ctx) { return ctx ? ctx->error : "no context (its init failed: out of memory)"; }

int rt_lib_set_threads(circc_ctx *ctx, int n) {
  if (!ctx) return CIRCC_EUSAGE;
  if (n < 0 || n > RT_MAX_THREADS)
    return fail(ctx, CIRCC_EUSAGE, "the thread count must be from 1 to %d, or 0 for OpenMP's default; found %d",
                RT_MAX_THREADS, n);
  ctx->threads = n;
  ctx->error[0] = '\0';
  return CIRCC_OK;
}

int rt_lib_threads(const circc_ctx *ctx) { return ctx && ctx->threads ? ctx->threads : rt_threads(); }

int rt_lib_run(const rt_model *m, circc_ctx *ctx, const void *const *inputs, void *const *outputs,
               const void *const *patches) {
  if (!ctx) return CIRCC_EUSAGE;
  if (ctx->model != m)
    return fail(ctx, CIRCC_EUSAGE, "the context belongs to another model ('%s', not '%s')", ctx->model->name, m->name);
  if (!inputs && m->ninputs) return fail(ctx, CIRCC_EUSAGE, "the inputs array is NULL");
  if (!outputs && m->noutputs) return fail(ctx, CIRCC_EUSAGE, "the outputs array is NULL");
  for (int i = 0; i < m->ninputs; i++) {
    if (!inputs[i]) return fail(ctx, CIRCC_EUSAGE, "input %d ('%s') is NULL", i, m->inputs[i].name);
    ctx->in[i] = inputs[i];
  }
  for (int i = 0; i < m->noutputs; i++)
    if (!outputs[i]) return fail(ctx, CIRCC_EUSAGE, "output %d ('%s') is NULL", i, m->outputs[i].name);
  for (int k = 0; k < m->npatches; k++) ctx->in[m->ninputs + k] = patches ? patches[k] : NULL;
#ifdef _OPENMP
  int callers = omp_get_max_threads();
  if (ctx->threads) omp_set_num_threads(ctx->threads);
#endif
  const char *err = m->run(ctx->in, outputs, ctx->arena);
#ifdef _OPENMP
  if (ctx->threads) omp_set_num_threads(callers);
#endif
  if (err) return fail(ctx, CIRCC_EINPUT, "%s", err);
  ctx->error[0] = '\0';
  return CIRCC_OK;
}

void rt_lib_info(const rt_model *m, circc_info *info) {
  *info = (circc_info){m->name, m->circc_version, m->command_line, m->source_hash, m->ninputs, m->noutputs,
                       m->ntaps, m->npatches, m->arena_bytes, m->flops};
}

int rt_lib_tensor(const rt_model *m, int kind, int i, circc_tensor *t) {
  const rt_tensor_desc *d = kind == CIRCC_INPUT ? m->inputs : kind == CIRCC_OUTPUT ? m->outputs
                          : kind == CIRCC_PATCH ? m->patches : NULL;
  int n = kind == CIRCC_INPUT ? m->ninputs : kind == CIRCC_OUTPUT ? m->noutputs : kind == CIRCC_PATCH ? m->npatches : 0;
  if (!t || i < 0 || i >= n) return CIRCC_EUSAGE;
  d += i;
  *t = (circc_tensor){d->name, d->dtype == RT_I64 ? CIRCC_I64 : CIRCC_F32, d->rank, d->shape, d->numel};
  return CIRCC_OK;
}
