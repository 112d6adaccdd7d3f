/* rt_run.c — the generic mode of every program (see rt_modes.h): reads each
 * input from a .npy file (converting its dtype into a 64-byte-aligned buffer),
 * runs the model, then writes outputs atomically, compares them with goldens,
 * benchmarks, or prints them; --info describes the program. Bad input never
 * crashes or leaks: it is a message and an exit code (0 ok, 1 mismatch,
 * 2 usage, 3 bad input). */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L   /* getpid */
#endif
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "rt_core.h"
#include "rt_modes.h"

enum { PRINT_ALL = 64, PRINT_HEAD = 8, MAX_BENCH = 1000000, GO_ON = -2 };

typedef struct Binding {
  int index;          /* into the model's outputs */
  const char *path;
} Binding;

/* Everything one run owns; free_run releases it all. */
typedef struct Run {
  const rt_model *m;
  const char *prog;            /* prefix of every message */
  const char **in_path;        /* [ninputs + npatches] NULL: not given (patches after the inputs) */
  Binding *outs, *checks;      /* [argc] each */
  int nouts, nchecks;
  double rtol, atol;
  long bench;                  /* timed runs; 0: no --bench */
  int threads;                 /* --threads; 0: from the environment */
  bool info, verbose;
  void **in, **out;            /* model buffers, 64-byte aligned */
  void *arena;
  double **gold;               /* [nchecks] golden values */
} Run;

static int run_requested(int argc, char **argv) {
  (void)argc, (void)argv;   /* the default mode */
  return 1;
}

static void run_help(const rt_model *m, const char *prog) {
  printf("usage: %s --input NAME=@FILE.npy... [--output NAME=@FILE.npy]... [--check NAME=@GOLDEN.npy]...\n"
         "       %s --bench N | --info | -h\n"
         "Runs the model compiled by circc %s. Without --output, --check, --bench or --info\n"
         "it prints every output.\n\ninputs (every one is required):\n",
         prog, prog, m->circc_version);
  for (int i = 0; i < m->ninputs; i++) rt_input_line(stdout, m, i);
  fputs("outputs:\n", stdout);
  for (int i = 0; i < m->noutputs; i++) rt_desc_line(stdout, &m->outputs[i]);
  if (m->npatches) fputs("patches (optional: the node's own value unless given):\n", stdout);
  for (int i = 0; i < m->npatches; i++) rt_desc_line(stdout, &m->patches[i]);
  fputs("\noptions:\n"
        "  --input NAME=@FILE.npy   value of input NAME: .npy v1-v3, little-endian, C order;\n"
        "                           float32 inputs take " RT_NPY_FLOAT_DESCRS ",\n"
        "                           int64 inputs take " RT_NPY_INT_DESCRS "\n"
        "  --output NAME=@FILE.npy  write output NAME (float32 as <f4, int64 as <i8); files are\n"
        "                           replaced atomically and none is written if the run fails\n"
        "  --patch NAME=@FILE.npy   use FILE's value for the node NAME (circc --patch): everything\n"
        "                           downstream of it is computed from that value\n"
        "  --check NAME=@FILE.npy   compare output NAME with a golden .npy (float32, float64 or\n"
        "                           int64): every element needs |got-want| <= atol + rtol*|want|\n"
        "  --rtol R, --atol A       tolerances of every --check (default 1e-4 and 1e-5)\n"
        "  --bench N                time N runs after 1 warm-up: median, p10, p90 ms, GFLOP/s and\n"
        "                           threads; inputs not given are zero-filled\n"
        "  --info                   print inputs, outputs, arena bytes, FLOPs per run, provenance\n"
        "  --threads N              OpenMP threads (default $OMP_NUM_THREADS, else all cores); runs\n"
        "                           take fewer while CPUs are busy (--info: team)\n"
        "  -v                       print the effective thread count and where the weights are read\n"
        "  -h, --help               this help\n"
        "A .npy of --input, --check or --patch may differ in shape by leading 1s ([1,T,V] for\n"
        "[T,V], or the other way round). --name=value is the same as --name value; long\n"
        "options are written in full.\n"
        "\nexit codes: 0 ok, 1 --check mismatch, 2 usage error,\n"
        "            3 bad input (unreadable or malformed .npy, wrong shape or dtype, bad values)\n"
        "environment: OMP_NUM_THREADS; CIRCC_WEIGHTS=mapped reads the weights where the program\n"
        "             file maps them instead of copying them to memory on 2 MiB pages\n",
        stdout);
}

/* Fills r from argv; returns GO_ON, else the exit code (RT_MODE_HELP for -h). */
static int parse_args(Run *r, int argc, char **argv) {
  static const rt_option OPTIONS[] = {
      {"--input", true}, {"--output", true}, {"--check", true},   {"--rtol", true}, {"--atol", true},
      {"--bench", true}, {"--threads", true}, {"--info", false}, {"-v", false},    {"-h", false},
      {"--help", false}, {"--seed", true},   {"--patch", true},
  };
  const rt_model *m = r->m;
  bool has_seed = false;
  for (int i = 1; i < argc; i++) {
    const char *val;
    int f = rt_next_option(r->prog, OPTIONS, (int)(sizeof OPTIONS / sizeof *OPTIONS), "", argc, argv, &i, &val);
    if (f < 0) return RT_EXIT_USAGE;
    const char *flag = OPTIONS[f].name;
    long n;
    uint64_t seed;
    if (!strcmp(flag, "-h") || !strcmp(flag, "--help")) {
      return RT_MODE_HELP;
    } else if (!strcmp(flag, "--input")) {
      const char *path;
      int k = rt_parse_binding(r->prog, flag, val, m->inputs, m->ninputs, "input", &path);
      if (k < 0) return RT_EXIT_USAGE;
      if (r->in_path[k]) return rt_usage_error(r->prog, "--input %s is given twice", m->inputs[k].name);
      r->in_path[k] = path;
    } else if (!strcmp(flag, "--patch")) {
      const char *path;
      if (!m->npatches) return rt_usage_error(r->prog, "--patch: this program has no patches (circc --patch PATTERN)");
      int k = rt_parse_binding(r->prog, flag, val, m->patches, m->npatches, "patch", &path);
      if (k < 0) return RT_EXIT_USAGE;
      if (r->in_path[m->ninputs + k]) return rt_usage_error(r->prog, "--patch %s is given twice", m->patches[k].name);
      r->in_path[m->ninputs + k] = path;
    } else if (!strcmp(flag, "--output") || !strcmp(flag, "--check")) {
      Binding b;
      b.index = rt_parse_binding(r->prog, flag, val, m->outputs, m->noutputs, "output", &b.path);
      if (b.index < 0) return RT_EXIT_USAGE;
      if (flag[2] == 'o') r->outs[r->nouts++] = b;
      else r->checks[r->nchecks++] = b;
    } else if (!strcmp(flag, "--rtol") || !strcmp(flag, "--atol")) {
      double *tol = flag[2] == 'r' ? &r->rtol : &r->atol;
      if (!rt_parse_double(val, tol) || !(*tol >= 0))
        return rt_usage_error(r->prog, "%s expects a non-negative number, found '%s'", flag, val);
    } else if (!strcmp(flag, "--bench")) {
      if (!rt_parse_long(val, 1, MAX_BENCH, &r->bench))
        return rt_usage_error(r->prog, "--bench expects a number of runs from 1 to %d, found '%s'", MAX_BENCH, val);
    } else if (!strcmp(flag, "--threads")) {
      if (!rt_parse_long(val, 1, RT_MAX_THREADS, &n))
        return rt_usage_error(r->prog, "--threads expects a number from 1 to %d, found '%s'", RT_MAX_THREADS, val);
      r->threads = (int)n;
    } else if (!strcmp(flag, "--seed")) {   /* known only to say where it belongs */
      if (!rt_parse_seed(val, &seed))
        return rt_usage_error(r->prog, "--seed expects an integer from 0 to 2^64-1, found '%s'", val);
      has_seed = true;
    } else if (!strcmp(flag, "--info")) {
      r->info = true;
    } else {
      r->verbose = true;   /* -v */
    }
  }
  if (has_seed) return rt_usage_error(r->prog, "--seed only applies to --sample");
  return GO_ON;
}

static double value_at(const rt_tensor_desc *d, const void *buf, int64_t k) {
  return d->dtype == RT_F32 ? (double)((const float *)buf)[k] : (double)((const int64_t *)buf)[k];
}

static void print_value(const rt_tensor_desc *d, const void *buf, int64_t k) {
  if (d->dtype == RT_F32) printf("%.9g", (double)((const float *)buf)[k]);
  else printf("%lld", (long long)((const int64_t *)buf)[k]);
}

/* numpy-like nesting, as `circc eval` prints */
static void print_nested(const rt_tensor_desc *d, const void *buf, int dim, int64_t *k) {
  if (dim == d->rank) {
    print_value(d, buf, (*k)++);
    return;
  }
  putchar('[');
  for (int64_t i = 0; i < d->shape[dim]; i++) {
    if (i) fputs(dim + 1 == d->rank ? ", " : ",\n ", stdout);
    print_nested(d, buf, dim + 1, k);
  }
  putchar(']');
}

static void print_output(const rt_tensor_desc *d, const void *buf) {
  char s[RT_MAX_RANK * 24];
  rt_shape_str(d->rank, d->shape, s, sizeof s);
  printf("%s %s %s\n", d->name, s, rt_dtype_name(d->dtype));
  if (d->numel <= PRINT_ALL) {
    int64_t k = 0;
    print_nested(d, buf, 0, &k);
  } else {
    putchar('[');
    for (int64_t k = 0; k < PRINT_HEAD; k++) {
      print_value(d, buf, k);
      fputs(", ", stdout);
    }
    printf("...] (%lld elements)", (long long)d->numel);
  }
  putchar('\n');
}

static bool write_output(int i, const char *path, void *arg) {
  const Run *r = arg;
  const rt_tensor_desc *d = &r->m->outputs[r->outs[i].index];
  return rt_npy_write(path, d->dtype, d->rank, d->shape, r->out[r->outs[i].index]);
}

/* Every --output, all or none (rt_write_files). */
static bool write_outputs(Run *r) {
  const char **paths = calloc((size_t)r->nouts + 1, sizeof *paths), **labels = calloc((size_t)r->nouts + 1, sizeof *labels);
  char *names = NULL;
  size_t cap = 0;
  bool ok = paths && labels;
  for (int i = 0; ok && i < r->nouts; i++) cap += strlen(r->m->outputs[r->outs[i].index].name) + 16;
  ok = ok && (names = malloc(cap + 1));
  for (size_t at = 0, i = 0; ok && i < (size_t)r->nouts; i++) {
    paths[i] = r->outs[i].path;
    labels[i] = names + at;
    at += (size_t)sprintf(names + at, "--output %s", r->m->outputs[r->outs[i].index].name) + 1;
  }
  if (!ok) rt_error(r->prog, "out of memory writing outputs");
  ok = ok && rt_write_files(r->prog, r->nouts, paths, labels, write_output, r);
  free(paths), free(labels), free(names);
  return ok;
}

/* Prints one --check line; returns whether every element is within tolerance.
 * The worst element is the one farthest outside (or least inside) its tolerance. */
static bool check_output(const Run *r, int c) {
  const rt_tensor_desc *d = &r->m->outputs[r->checks[c].index];
  const void *got_buf = r->out[r->checks[c].index];
  const double *want_buf = r->gold[c];
  double max_abs = 0, max_rel = 0, worst_ratio = -1;
  int64_t worst = 0, bad = 0;
  for (int64_t k = 0; k < d->numel; k++) {
    double got = value_at(d, got_buf, k), want = want_buf[k], diff = 0, rel = 0, ratio = 0;
    if (!(got == want || (isnan(got) && isnan(want)))) {
      /* a NaN or an infinity matches only itself, whatever the tolerance */
      bool nan = isnan(got) || isnan(want);
      diff = nan ? NAN : fabs(got - want);
      rel = nan ? NAN : isinf(diff) || want == 0 ? INFINITY : diff / fabs(want);
      double tol = r->atol + r->rtol * fabs(want);
      ratio = nan || isinf(diff) ? INFINITY : diff / tol;   /* tol 0: inf */
      bad += nan || isinf(diff) || !(diff <= tol);
    }
    if (!isnan(max_abs) && (isnan(diff) || diff > max_abs)) max_abs = diff;
    if (!isnan(max_rel) && (isnan(rel) || rel > max_rel)) max_rel = rel;
    if (ratio > worst_ratio) worst_ratio = ratio, worst = k;
  }
  printf("check %s: max_abs_err=%.3g max_rel_err=%.3g worst index ", d->name, max_abs, max_rel);
  if (d->numel == 0) {
    fputs("none", stdout);
  } else {
    /* unravel the flat index, last axis fastest */
    int64_t idx[RT_MAX_RANK], rest = worst;
    for (int i = d->rank - 1; i >= 0; i--) {
      idx[i] = d->shape[i] ? rest % d->shape[i] : 0;
      rest = d->shape[i] ? rest / d->shape[i] : 0;
    }
    putchar('[');
    for (int i = 0; i < d->rank; i++) printf(i ? ",%lld" : "%lld", (long long)idx[i]);
    printf("] got %.9g want %.9g", value_at(d, got_buf, worst), want_buf[worst]);
  }
  if (bad) printf(" -> MISMATCH (%lld of %lld elements)\n", (long long)bad, (long long)d->numel);
  else puts(" -> ok");
  return bad == 0;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* p-th quantile of sorted t[n], interpolating between neighbours */
static double quantile(const double *t, long n, double p) {
  double pos = p * (double)(n - 1);
  long lo = (long)pos;
  return lo + 1 < n ? t[lo] + (pos - (double)lo) * (t[lo + 1] - t[lo]) : t[lo];
}

static bool run_once(const Run *r) {
  const char *msg = r->m->run((const void *const *)r->in, r->out, r->arena);
  if (msg) rt_error(r->prog, "%s", msg);
  return msg == NULL;
}

/* r->bench timed runs after the warm-up run_all already did */
static bool bench(const Run *r, int threads) {
  double *t = malloc((size_t)r->bench * sizeof *t);
  if (!t) {
    rt_error(r->prog, "--bench: out of memory");
    return false;
  }
  const long short_before = rt_team_short_runs();
  for (long i = 0; i < r->bench; i++) {
    double t0 = rt_now_ms();
    if (!run_once(r)) {
      free(t);
      return false;
    }
    t[i] = rt_now_ms() - t0;
  }
  qsort(t, (size_t)r->bench, sizeof *t, cmp_double);
  double med = quantile(t, r->bench, 0.5);
  printf("bench: %ld runs after 1 warm-up, %d thread%s: median %.4g ms, p10 %.4g ms, p90 %.4g ms, ", r->bench,
         threads, threads == 1 ? "" : "s", med, quantile(t, r->bench, 0.1), quantile(t, r->bench, 0.9));
  if (med > 0) printf("%.4g GFLOP/s", r->m->flops / (med * 1e-3) / 1e9);
  else printf("GFLOP/s n/a (below the timer's resolution)");
  long short_runs = rt_team_short_runs() - short_before;
  if (short_runs) printf(", %ld with fewer threads (CPUs busy)", short_runs);
  putchar('\n');
  free(t);
  return true;
}

/* Loads, runs, then benchmarks, writes, checks or prints. */
static int run_all(Run *r, int threads) {
  const rt_model *m = r->m;
  bool zero_fill = r->bench && !r->nouts && !r->nchecks;
  int missing = 0;
  for (int i = 0; i < m->ninputs; i++) {
    if (r->in_path[i] || zero_fill) continue;
    char s[RT_MAX_RANK * 24];
    rt_shape_str(m->inputs[i].rank, m->inputs[i].shape, s, sizeof s);
    rt_error(r->prog, "missing --input %s=@FILE.npy (%s %s)", m->inputs[i].name, s, rt_dtype_name(m->inputs[i].dtype));
    missing++;
  }
  if (missing) {
    fprintf(stderr, "%s: note: every input is required (see %s --help)\n", r->prog, r->prog);
    return RT_EXIT_USAGE;
  }
  /* read every file before running, reporting each problem */
  bool ok = true;
  for (int i = 0; i < m->ninputs; i++) {
    if (r->in_path[i]) {
      char what[512];
      snprintf(what, sizeof what, "input '%s'", m->inputs[i].name);
      ok &= (r->in[i] = rt_npy_read_input(r->prog, what, r->in_path[i], m, i)) != NULL;
    } else if ((r->in[i] = rt_alloc_array(r->prog, (size_t)m->inputs[i].numel, rt_input_elem_size(m, i), "input"))) {
      memset(r->in[i], 0, (size_t)m->inputs[i].numel * rt_input_elem_size(m, i));
    } else {
      ok = false;
    }
  }
  for (int k = 0; k < m->npatches; k++) {
    char what[512];
    snprintf(what, sizeof what, "--patch %s", m->patches[k].name);
    if (r->in_path[m->ninputs + k])
      ok &= (r->in[m->ninputs + k] = rt_npy_read(r->prog, what, r->in_path[m->ninputs + k], &m->patches[k])) != NULL;
  }
  for (int c = 0; c < r->nchecks; c++) {
    const rt_tensor_desc *d = &m->outputs[r->checks[c].index];
    char what[512];
    snprintf(what, sizeof what, "--check %s", d->name);
    ok &= (r->gold[c] = rt_npy_read_doubles(r->prog, what, r->checks[c].path, d)) != NULL;
  }
  for (int i = 0; ok && i < m->noutputs; i++)
    ok = (r->out[i] = rt_alloc_array(r->prog, (size_t)m->outputs[i].numel, rt_dtype_size(m->outputs[i].dtype), "output")) != NULL;
  ok = ok && (r->arena = rt_alloc_array(r->prog, m->arena_bytes, 1, "arena"));
  if (!ok || !run_once(r) || (r->bench && !bench(r, threads))) return RT_EXIT_BAD_INPUT;
  if (r->nouts && !write_outputs(r)) return RT_EXIT_BAD_INPUT;
  bool match = true;
  for (int c = 0; c < r->nchecks; c++) match &= check_output(r, c);
  if (!r->nouts && !r->nchecks && !r->bench && !r->info)
    for (int i = 0; i < m->noutputs; i++) print_output(&m->outputs[i], r->out[i]);
  return match ? RT_EXIT_OK : RT_EXIT_MISMATCH;
}

static void free_run(Run *r) {
  for (int i = 0; r->in && i < r->m->ninputs + r->m->npatches; i++) free(r->in[i]);
  for (int i = 0; r->out && i < r->m->noutputs; i++) free(r->out[i]);
  for (int c = 0; r->gold && c < r->nchecks; c++) free(r->gold[c]);
  free(r->in);
  free(r->out);
  free(r->gold);
  free(r->arena);
  free(r->in_path);
  free(r->outs);
  free(r->checks);
}

static int run_main(const rt_model *m, int argc, char **argv) {
  Run r = {.m = m, .prog = rt_prog(m, argc, argv), .rtol = 1e-4, .atol = 1e-5};
  size_t nargs = argc > 0 ? (size_t)argc : 1;
  r.in_path = calloc((size_t)(m->ninputs + m->npatches) + 1, sizeof *r.in_path);
  r.in = calloc((size_t)(m->ninputs + m->npatches) + 1, sizeof *r.in);
  r.out = calloc((size_t)m->noutputs + 1, sizeof *r.out);
  r.outs = calloc(nargs, sizeof *r.outs);
  r.checks = calloc(nargs, sizeof *r.checks);
  r.gold = calloc(nargs, sizeof *r.gold);
  int code;
  if (!r.in_path || !r.in || !r.out || !r.outs || !r.checks || !r.gold) {
    rt_error(r.prog, "out of memory");
    code = RT_EXIT_BAD_INPUT;
  } else if ((code = parse_args(&r, argc, argv)) == GO_ON) {
    int threads = rt_set_threads(r.prog, r.threads);
    if (r.verbose) fprintf(stderr, "%s: %d thread%s\n", r.prog, threads, threads == 1 ? "" : "s");
    bool runs = !r.info || r.nouts || r.nchecks || r.bench;
    if (runs) {
      rt_weights(m->weights, m->weights_bytes); /* before the first run, so that --bench never times the copy */
      if (r.verbose) fprintf(stderr, "%s: weights %s\n", r.prog, rt_weights_how());
    }
    if (r.info) rt_print_info(m, r.prog, threads);
    code = runs ? run_all(&r, threads) : RT_EXIT_OK;
  }
  free_run(&r);
  return code;
}

const rt_mode rt_mode_run = {"run", run_requested, run_main, run_help};
