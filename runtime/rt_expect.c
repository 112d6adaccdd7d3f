/* rt_expect.c — the mode of expectation programs (m->expect; rt_modes.h,
 * random_variables.md §4.3–4.7): draws samples (--samples N: the counter-based
 * generator of rt_sampler.h; --all: every combination of rows, weighted by the
 * probabilities), streams them through the batch graphs B at a time, reduces
 * the Cumulants' arguments with rt_moments.c's fixed-order sums into plug-in
 * estimates, and runs the post graph on those to get the program's outputs.
 * Printed and written values are the same bits for any thread count, any
 * split of the samples into batches and any number of MPI ranks (rt_reduce.h:
 * each rank sums its own chunks; rank 0 alone prints and writes). Files are
 * written only after everything succeeded (temporary file + rename). Exit
 * codes: 0 ok, 2 usage, 3 bad input (a graph run failed, out of memory, a file
 * could not be written). */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L   /* getpid, isatty */
#endif
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "rt_core.h"
#include "rt_modes.h"
#include "rt_moments.h"
#include "rt_reduce.h"
#include "rt_sampler.h"

enum { GO_ON = -2, PRINT_HEAD = 8, PROGRESS_MS = 200 };
#define DEFAULT_MAX_ALL 1000000000L
/* The most samples (or --all combinations) a run takes: counts and weights
 * stay exact in double, and chunk arithmetic far from int64 overflow. */
#define MAX_SAMPLES (1L << 53)

typedef struct Binding {
  int index;                   /* into the post graph's outputs */
  const char *path;
} Binding;

/* The command line. */
typedef struct Opts {
  bool all, info, progress, verbose, has_samples, has_seed;
  long samples, max_all;
  uint64_t seed;
  int threads;                 /* 0: from the environment */
  uint64_t *group_seed;        /* [ngroups] --group-seed values */
  bool *has_group_seed;        /* [ngroups] */
  Binding *outs, *ses;         /* --output, --output-se: [argc] each */
  int nouts, nses;
  const char *dump_indices, *dump_weights;
  const char **data_path;      /* [ndata] --data NAME=@FILE.npy */
} Opts;

/* A cumulant of order >= 2: the centred moments it accumulates in its pass's second sweep. */
typedef struct Moments {
  int nmasks;
  uint32_t *masks;             /* rt_moment_subsets */
  int64_t *offset;             /* [nmasks] where M_mask starts in the sweep's sums */
  int64_t numel[RT_MAX_ORDER]; /* per argument position: elements per sample */
} Moments;

/* Everything one run owns; free_run releases it. */
typedef struct Run {
  const rt_model *m;
  const rt_expect *E;
  const char *prog;
  Opts o;
  int64_t n;                   /* samples */
  uint64_t *stream;            /* [ngroups] random mode */
  double **cdf;                /* [ngroups] running sums of non-uniform groups (random mode) */
  int64_t *last_positive;      /* [ngroups] */
  int64_t *stride;             /* [ngroups] --all: rows of the later groups */
  double z;                    /* --all: product over groups of the sum of probabilities */
  int64_t **slot;              /* [npasses][noutputs]: offset of an argument's values in sweep A, or -1 */
  int64_t *len_a, *len_b;      /* [npasses] sums per sample of sweeps A (1 + arguments) and B (moments) */
  Moments *mom;                /* [ncumulants] */
  double **mean;               /* [npasses] sweep A totals divided by the total weight */
  double *weight;              /* [npasses] the total weight W (N in random mode) */
  double *centred;             /* scratch: one lane's x - m for the largest pass */
  double **est;                /* [ncumulants] estimates */
  float **est32;               /* [ncumulants] the same as float32: what the graphs take */
  void **in, **out, *arena;    /* the running graph's buffers */
  bool *in_is_data;            /* [max_in] in[i] is streamed data (not owned) */
  rt_npy_map *data;            /* [ndata] the streamed datasets, mapped */
  int max_in, max_out;         /* entries of in and out: the most of any graph */
  void **post_out;             /* [post noutputs] the program's outputs */
  double **se;                 /* [post noutputs] standard errors (NaN: n/a) */
  int jk_groups;               /* G of the jackknife, 0 if none */
  double *jk_part;             /* [G][len_a[0]] pass 0 sweep A's group sums (rank 0), when G > 0 */
  double *jk_total;
  int64_t nonfinite;
  int rank, ranks;             /* this process's rank of rt_reduce_size() */
  int64_t first, end;          /* its samples [first, end): its chunks of rt_share_range */
  int64_t done, total, total_all;   /* progress: this rank's sample runs, and every rank's */
  double t0, shown;
  bool show_progress;
  int progress_len;
} Run;

/* ---- checking the generated description ---- */

static bool desc_ok(const rt_tensor_desc *d) {
  int64_t numel = 1;
  bool ok = d->name && d->rank >= 0 && d->rank <= RT_MAX_RANK && (d->dtype == RT_F32 || d->dtype == RT_I64) &&
            (d->rank == 0 || d->shape);
  for (int k = 0; ok && k < d->rank; k++) {
    ok = d->shape[k] >= 0 && (d->shape[k] == 0 || numel <= INT64_MAX / d->shape[k]);
    numel *= ok ? d->shape[k] : 1;
  }
  return ok && numel == d->numel;
}

/* A batch graph (pass >= 0) or the post graph (pass -1). */
static bool graph_ok(const Run *r, const rt_graph *g, int pass) {
  const rt_expect *E = r->E;
  if (!g->run || g->ninputs < 0 || g->noutputs < 0 ||
      (g->ninputs && (!g->inputs || !g->input_group || !g->input_cumulant)) ||
      (g->noutputs && !g->outputs))
    return false;
  for (int i = 0; i < g->noutputs; i++)
    if (!desc_ok(&g->outputs[i]) || (pass >= 0 && (g->outputs[i].rank < 1 || g->outputs[i].shape[0] != E->batch)))
      return false;
  for (int i = 0; i < g->ninputs; i++) {
    const rt_tensor_desc *d = &g->inputs[i];
    int grp = g->input_group[i], c = g->input_cumulant[i], data = g->input_data ? g->input_data[i] : -1;
    if (!desc_ok(d) || (grp >= 0) + (c >= 0) + (data >= 0) != 1) return false;
    if (data >= 0) {
      const rt_tensor_desc *want = data < E->ndata ? &E->data[data] : NULL;
      bool same = pass >= 0 && want && want->dtype == d->dtype && want->rank == d->rank;
      for (int k = 0; same && k < d->rank; k++) same = want->shape[k] == d->shape[k];
      if (!same) return false;
    }
    if (grp >= 0 && (pass < 0 || grp >= E->ngroups || d->dtype != RT_I64 || d->rank != 1 || d->numel != E->batch))
      return false;
    if (c >= 0 && (c >= E->ncumulants || d->dtype != RT_F32 || d->numel != E->cumulants[c].numel ||
                   (pass >= 0 && E->cumulants[c].pass >= pass)))
      return false;
  }
  return true;
}

static bool group_ok(const rt_group *g) {
  if (g->size < 1 || !g->probs || !g->vars) return false;
  double sum = 0;
  bool same = true;
  for (int64_t i = 0; i < g->size; i++) {
    if (!(g->probs[i] >= 0) || !isfinite(g->probs[i])) return false;
    sum += g->probs[i];
    same = same && memcmp(&g->probs[i], &g->probs[0], sizeof(double)) == 0;
  }
  return sum > 0 && !g->uniform == !same;
}

/* The estimate's shape is the arguments' per-sample shapes concatenated. */
static bool cumulant_ok(const Run *r, const rt_cumulant *c, int prev_pass) {
  const rt_expect *E = r->E;
  if (!c->name || c->order < 1 || c->order > RT_MAX_ORDER || c->pass < prev_pass || c->pass >= E->npasses || !c->arg ||
      c->rank < 0 || c->rank > RT_MAX_RANK || (c->rank && !c->shape))
    return false;
  const rt_graph *g = &E->passes[c->pass];
  int axis = 0;
  int64_t numel = 1;
  for (int i = 0; i < c->order; i++) {
    if (c->arg[i] < 0 || c->arg[i] >= g->noutputs) return false;
    const rt_tensor_desc *d = &g->outputs[c->arg[i]];
    for (int k = 1; k < d->rank; k++, axis++)
      if (axis >= c->rank || c->shape[axis] != d->shape[k]) return false;
    numel *= d->numel / E->batch;
  }
  return axis == c->rank && numel == c->numel;
}

static bool expect_ok(Run *r) {
  const rt_expect *E = r->E;
  bool ok = E->batch >= 1 && E->ngroups >= 0 && E->npasses >= 1 && E->ncumulants >= 0 && E->passes && E->post &&
            (!E->ngroups || E->groups) && (!E->ncumulants || E->cumulants) && E->ndata >= 0 && (!E->ndata || E->data);
  for (int d = 0; ok && d < E->ndata; d++) ok = desc_ok(&E->data[d]);
  for (int g = 0; ok && g < E->ngroups; g++) ok = group_ok(&E->groups[g]);
  for (int p = 0; ok && p < E->npasses; p++) ok = graph_ok(r, &E->passes[p], p);
  for (int c = 0; ok && c < E->ncumulants; c++) ok = cumulant_ok(r, &E->cumulants[c], c ? E->cumulants[c - 1].pass : 0);
  ok = ok && graph_ok(r, E->post, -1);
  if (!ok) rt_error(r->prog, "internal error: the program's expectation description (rt_expect) is inconsistent");
  return ok;
}

/* ---- help and --info ---- */

static int expect_requested(int argc, char **argv) {
  (void)argc, (void)argv;   /* rt_main asks only for expectation programs, which have no other mode */
  return 1;
}

static void expect_help(const rt_model *m, const char *prog) {
  printf("usage: %s --samples N [--seed S] [--group-seed NAME=S]... [options]\n"
         "       %s --all [--max-all M] [options]\n"
         "       %s --info | -h\n"
         "Estimates the expectations (Cumulants) of the circuit compiled by circc %s, over\n"
         "N random samples or exactly over every combination of the groups' rows.\n\noutputs:\n",
         prog, prog, prog, m->circc_version);
  for (int i = 0; i < m->expect->post->noutputs; i++) rt_desc_line(stdout, &m->expect->post->outputs[i]);
  if (m->expect->ndata) fputs("\nstreamed datasets (--data NAME=@FILE.npy):\n", stdout);
  for (int i = 0; i < m->expect->ndata; i++) rt_desc_line(stdout, &m->expect->data[i]);
  fputs("\noptions:\n"
        "  --samples N              random mode: N joint samples, each group drawn independently with\n"
        "                           replacement, proportionally to its probabilities\n"
        "  --seed S                 seed of every group's stream (default 0)\n"
        "  --group-seed NAME=S      group NAME (its name, or g<index>) draws from stream mix64(S)\n"
        "  --all                    exact mode: every combination of rows, first group slowest,\n"
        "                           weighted by the product of the normalised probabilities\n"
        "  --max-all M              refuse --all above M combinations (default 1000000000)\n"
        "  --data NAME=@FILE.npy    the rows of streamed dataset NAME (circc --stream), mapped in\n"
        "                           place when its dtype is the program's (required for each)\n"
        "  --output NAME=@FILE.npy  write output NAME's estimate (float32 as <f4, int64 as <i8)\n"
        "  --output-se NAME=@FILE.npy  write its standard errors (float32, NaN where n/a; not with --all)\n"
        "  --dump-indices FILE.npy  write the samples' row indices, int64 [N, groups]\n"
        "  --dump-weights FILE.npy  write the samples' normalised weights, float64 [N]\n"
        "  --progress               a progress line on stderr (also when stderr is a terminal)\n"
        "  --info                   print the groups, passes, cumulants and outputs\n"
        "  --threads N              OpenMP threads (default $OMP_NUM_THREADS, else all cores);\n"
        "                           the results are the same bits for any thread count, and runs\n"
        "                           take fewer while CPUs are busy (README: The team's size)\n"
        "  -v                       print the effective thread count\n"
        "  -h, --help               this help\n"
        "Estimates are plug-in cumulants of the weighted samples (order >= 2 divides by the total\n"
        "weight, N with --samples). Standard errors: a delete-a-group jackknife over min(32, chunks)\n"
        "groups of consecutive 64-sample chunks when every Cumulant is a mean of the first pass,\n"
        "else n/a. Files are replaced atomically and none is written if the run fails.\n"
        "A program built with circc --mpi runs under mpirun or srun: each rank sums its own\n"
        "chunks of the same samples, rank 0 prints and writes; the same bits for any rank count.\n"
        "\nexit codes: 0 ok, 2 usage error, 3 bad input (a run failed, out of memory, unwritable file)\n"
        "environment: OMP_NUM_THREADS; CIRCC_WEIGHTS=mapped reads the weights where the program\n"
        "             file maps them instead of copying them to memory on 2 MiB pages\n",
        stdout);
}

static void group_line(const Run *r, int g, const char *lead) {
  const rt_group *G = &r->E->groups[g];
  printf("%sg%d ", lead, g);
  if (G->name) printf("'%s'", G->name);
  else fputs("(unnamed)", stdout);
  printf("  S=%lld %s  key 0x%016llx  vars: %s", (long long)G->size, G->uniform ? "uniform" : "weighted",
         (unsigned long long)G->key, G->vars);
  if (r->o.group_seed && r->o.has_group_seed[g])
    printf("  group-seed %llu", (unsigned long long)r->o.group_seed[g]);
  putchar('\n');
}

static void graph_info(const rt_graph *g, const rt_expect *E) {
  for (int i = 0; i < g->ninputs; i++) {
    char s[RT_MAX_RANK * 24];
    const rt_tensor_desc *d = &g->inputs[i];
    rt_shape_str(d->rank, d->shape, s, sizeof s);
    printf("    input  %s %s %s", d->name, s, rt_dtype_name(d->dtype));
    if (g->input_group[i] >= 0) printf("  (rows of g%d)\n", g->input_group[i]);
    else if (g->input_cumulant[i] >= 0) printf("  (estimate of %s)\n", E->cumulants[g->input_cumulant[i]].name);
    else printf("  (--data %s)\n", E->data[g->input_data[i]].name);
  }
  for (int i = 0; i < g->noutputs; i++) {
    fputs("    output", stdout);
    rt_desc_line(stdout, &g->outputs[i]);
  }
}

static void print_info(const Run *r, int threads) {
  const rt_expect *E = r->E;
  /* rt_print_info's provenance; its inputs would be the post graph's, which the program computes itself */
  printf("program:      %s\ncircc:        %s\ncommand line: %s\nsource hash:  %s\nthreads:      %d\n", r->prog,
         r->m->circc_version, r->m->command_line, r->m->source_hash, threads);
  rt_print_precision(r->m);
  puts("outputs:");
  for (int o = 0; o < E->post->noutputs; o++) rt_desc_line(stdout, &E->post->outputs[o]);
  printf("expectation program: batch %d, %d group%s, %d pass%s, %d cumulant%s\ngroups:\n", E->batch, E->ngroups,
         E->ngroups == 1 ? "" : "s", E->npasses, E->npasses == 1 ? "" : "es", E->ncumulants,
         E->ncumulants == 1 ? "" : "s");
  for (int g = 0; g < E->ngroups; g++) group_line(r, g, "  ");
  puts("passes:");
  for (int p = 0; p < E->npasses; p++) {
    printf("  pass %d: arena %zu bytes, %.0f flops/run\n", p, E->passes[p].arena_bytes, E->passes[p].flops);
    graph_info(&E->passes[p], E);
  }
  printf("  post: arena %zu bytes, %.0f flops/run\n", E->post->arena_bytes, E->post->flops);
  graph_info(E->post, E);
  puts("cumulants:");
  for (int c = 0; c < E->ncumulants; c++) {
    const rt_cumulant *K = &E->cumulants[c];
    char s[RT_MAX_RANK * 24];
    rt_shape_str(K->rank, K->shape, s, sizeof s);
    printf("  %s order %d %s pass %d  arguments:", K->name, K->order, s, K->pass);
    for (int i = 0; i < K->order; i++) printf(" %s", E->passes[K->pass].outputs[K->arg[i]].name);
    putchar('\n');
  }
}

/* ---- the command line ---- */

/* The file part of "@PATH" or "PATH", or NULL if empty. */
/* NAME=@PATH for a post output (names may contain '=': the longest known name
 * wins). Returns its index, or -1 after a usage error listing the names. */
/* --group-seed NAME=S: NAME is a group's name (the longest that matches) or g<index>. */
static int parse_group_seed(Run *r, const char *arg) {
  const rt_expect *E = r->E;
  int best = -1;
  size_t best_len = 0;
  for (int g = 0; g < E->ngroups; g++) {
    const char *name = E->groups[g].name;
    size_t len = name ? strlen(name) : 0;
    if (name && !strncmp(arg, name, len) && arg[len] == '=' && (best < 0 || len > best_len)) best = g, best_len = len;
  }
  const char *eq = strchr(arg, '=');
  long index;
  char head[32];
  if (best < 0 && eq && eq - arg > 1 && eq - arg < (long)sizeof head && arg[0] == 'g') {
    snprintf(head, sizeof head, "%.*s", (int)(eq - arg - 1), arg + 1);
    if (rt_parse_long(head, 0, E->ngroups - 1L, &index)) best = (int)index, best_len = (size_t)(eq - arg);
  }
  if (best < 0) {
    if (!eq) return rt_usage_error(r->prog, "--group-seed expects NAME=SEED, found '%s'", arg);
    rt_usage_error(r->prog, "--group-seed: the program has no group named '%.*s'", (int)(eq - arg), arg);
    fprintf(stderr, "%s: note: its groups are:\n", r->prog);
    for (int g = 0; g < E->ngroups; g++)
      fprintf(stderr, "  g%d %s\n", g, E->groups[g].name ? E->groups[g].name : "(unnamed)");
    return RT_EXIT_USAGE;
  }
  if (!rt_parse_seed(arg + best_len + 1, &r->o.group_seed[best]))
    return rt_usage_error(r->prog, "--group-seed %.*s expects a seed from 0 to 2^64-1, found '%s'", (int)best_len, arg,
                          arg + best_len + 1);
  r->o.has_group_seed[best] = true;
  return GO_ON;
}

/* One option's value; GO_ON or an exit code. */
/* --data NAME=@FILE.npy: NAME is a streamed dataset. */
static int parse_data(Run *r, const char *arg) {
  const rt_expect *E = r->E;
  if (!E->ndata)
    return rt_usage_error(r->prog, "--data %s: this program streams no dataset (circc --stream NAME does)", arg);
  const char *path;
  int d = rt_parse_binding(r->prog, "--data", arg, E->data, E->ndata, "streamed dataset", &path);
  if (d < 0) return RT_EXIT_USAGE;
  r->o.data_path[d] = path;
  return GO_ON;
}

static int take_option(Run *r, const char *flag, const char *val) {
  Opts *o = &r->o;
  long n;
  if (!strcmp(flag, "--samples")) {
    if (!rt_parse_long(val, 1, MAX_SAMPLES, &o->samples))
      return rt_usage_error(r->prog, "--samples expects a positive number of samples up to 2^53, found '%s'", val);
    o->has_samples = true;
  } else if (!strcmp(flag, "--seed")) {
    if (!rt_parse_seed(val, &o->seed))
      return rt_usage_error(r->prog, "--seed expects an integer from 0 to 2^64-1, found '%s'", val);
    o->has_seed = true;
  } else if (!strcmp(flag, "--group-seed")) {
    return parse_group_seed(r, val);
  } else if (!strcmp(flag, "--max-all")) {
    if (!rt_parse_long(val, 1, MAX_SAMPLES, &o->max_all))
      return rt_usage_error(r->prog, "--max-all expects a positive number of combinations up to 2^53, found '%s'",
                            val);
  } else if (!strcmp(flag, "--output") || !strcmp(flag, "--output-se")) {
    Binding b;
    const rt_graph *post = r->E->post;
    b.index = rt_parse_binding(r->prog, flag, val, post->outputs, post->noutputs, "output", &b.path);
    if (b.index < 0) return RT_EXIT_USAGE;
    if (flag[8]) o->ses[o->nses++] = b;
    else o->outs[o->nouts++] = b;
  } else if (!strcmp(flag, "--data")) {
    return parse_data(r, val);
  } else if (!strcmp(flag, "--dump-indices") || !strcmp(flag, "--dump-weights")) {
    if (!*val) return rt_usage_error(r->prog, "%s expects a file name", flag);
    *(flag[7] == 'i' ? &o->dump_indices : &o->dump_weights) = val;
  } else if (!strcmp(flag, "--threads")) {
    if (!rt_parse_long(val, 1, RT_MAX_THREADS, &n))
      return rt_usage_error(r->prog, "--threads expects a number from 1 to %d, found '%s'", RT_MAX_THREADS, val);
    o->threads = (int)n;
  } else {
    return rt_usage_error(r->prog, "%s does not apply to expectation programs (they take --samples or --all)", flag);
  }
  return GO_ON;
}

static int parse_args(Run *r, int argc, char **argv) {
  static const rt_option OPTIONS[] = {
      {"--samples", true},  {"--seed", true},         {"--group-seed", true},  {"--all", false},
      {"--max-all", true},  {"--output", true},       {"--output-se", true},   {"--dump-indices", true},
      {"--dump-weights", true}, {"--progress", false}, {"--info", false},     {"--threads", true},
      {"-v", false},        {"-h", false},            {"--help", false},       {"--input", true},
      {"--check", true},    {"--bench", true},        {"--sample", true},      {"--rtol", true},
      {"--atol", true},     {"--data", true},
  };
  Opts *o = &r->o;
  for (int i = 1; i < argc; i++) {
    const char *val;
    int f = rt_next_option(r->prog, OPTIONS, (int)(sizeof OPTIONS / sizeof *OPTIONS),
                           " (expectation programs take --samples N or --all)", argc, argv, &i, &val);
    if (f < 0) return RT_EXIT_USAGE;
    const char *flag = OPTIONS[f].name;
    int code = GO_ON;
    if (!strcmp(flag, "-h") || !strcmp(flag, "--help")) return RT_MODE_HELP;
    else if (!strcmp(flag, "--all")) o->all = true;
    else if (!strcmp(flag, "--progress")) o->progress = true;
    else if (!strcmp(flag, "--info")) o->info = true;
    else if (!strcmp(flag, "-v")) o->verbose = true;
    else code = take_option(r, flag, val);
    if (code != GO_ON) return code;
  }
  bool group_seed = false;
  for (int g = 0; g < r->E->ngroups; g++) group_seed |= o->has_group_seed[g];
  if (o->all && (o->has_samples || o->has_seed || group_seed || o->nses))
    return rt_usage_error(r->prog, "--all enumerates every sample: it cannot be combined with %s",
                          o->has_samples ? "--samples" : o->has_seed ? "--seed" : group_seed ? "--group-seed"
                                                                                      : "--output-se");
  if (!o->all && !o->has_samples && !o->info)
    return rt_usage_error(r->prog, "give --samples N (random samples) or --all (every combination of rows)");
  if (!o->all && !o->has_samples && (o->has_seed || group_seed || o->nouts || o->nses || o->dump_indices ||
                                     o->dump_weights))
    return rt_usage_error(r->prog, "--info with other options needs --samples N or --all");
  for (int d = 0; (o->all || o->has_samples) && d < r->E->ndata; d++)
    if (!o->data_path[d])
      return rt_usage_error(r->prog, "dataset '%s' is streamed (circc --stream): give --data %s=@FILE.npy",
                            r->E->data[d].name, r->E->data[d].name);
  return GO_ON;
}

/* --all's sample count: the product of the group sizes, refused above --max-all. */
static int count_all(Run *r) {
  int64_t n = 1;
  bool over = false;
  for (int g = 0; g < r->E->ngroups; g++) {
    int64_t s = r->E->groups[g].size;
    over = over || n > INT64_MAX / s;
    n = over ? n : n * s;
  }
  if (over || n > r->o.max_all)
    return rt_usage_error(r->prog, "--all would enumerate %s%lld combinations (the product of the group sizes), "
                          "more than --max-all %ld; use --samples N", over ? "more than " : "",
                          over ? (long long)INT64_MAX : (long long)n, r->o.max_all);
  r->n = n;
  return GO_ON;
}

/* ---- samples ---- */

static bool prepare_sampler(Run *r) {
  const rt_expect *E = r->E;
  size_t ng = (size_t)E->ngroups + 1;
  if (!(r->stream = calloc(ng, sizeof *r->stream)) || !(r->cdf = calloc(ng, sizeof *r->cdf)) ||
      !(r->last_positive = calloc(ng, sizeof *r->last_positive)) || !(r->stride = calloc(ng, sizeof *r->stride)))
    return false;
  r->z = 1;
  for (int g = E->ngroups - 1; r->o.all && g >= 0; g--)   /* count_all checked that the product fits */
    r->stride[g] = g + 1 < E->ngroups ? r->stride[g + 1] * E->groups[g + 1].size : 1;
  for (int g = 0; g < E->ngroups; g++) {
    const rt_group *G = &E->groups[g];
    double sum = 0;
    for (int64_t i = 0; i < G->size; i++) sum += G->probs[i];
    r->z *= sum;
    r->stream[g] = r->o.has_group_seed[g] ? rt_mix64(r->o.group_seed[g]) : rt_stream_key(r->o.seed, G->key);
    if (r->o.all || G->uniform) continue;
    if (!(r->cdf[g] = malloc((size_t)G->size * sizeof(double)))) return false;
    double c = 0;
    for (int64_t i = 0; i < G->size; i++) {
      r->cdf[g][i] = c += G->probs[i];
      if (G->probs[i] > 0) r->last_positive[g] = i;
    }
  }
  return true;
}

/* Row of group g in sample s. */
static int64_t sample_row(const Run *r, int g, int64_t s) {
  const rt_group *G = &r->E->groups[g];
  if (r->o.all) return s / r->stride[g] % G->size;
  uint64_t h = rt_sample_bits(r->stream[g], (uint64_t)s);
  return G->uniform ? rt_uniform_row(h, G->size) : rt_weighted_row(h, r->cdf[g], G->size, r->last_positive[g]);
}

/* Normalised weight of sample s: 1 in random mode (the sums divide by N);
 * --all: (p_0[i_0] * p_1[i_1] * ...) / z. */
static double sample_weight(const Run *r, int64_t s) {
  if (!r->o.all) return 1.0;
  double w = 1.0;
  for (int g = 0; g < r->E->ngroups; g++) w *= r->E->groups[g].probs[sample_row(r, g, s)];
  return w / r->z;
}

/* ---- sweeps over the samples ---- */

static double value_at(const rt_tensor_desc *d, const void *buf, int64_t k) {
  return d->dtype == RT_F32 ? (double)((const float *)buf)[k] : (double)((const int64_t *)buf)[k];
}

/* Rank 0 shows every rank's progress as its own fraction of its share (the
 * shares differ by one chunk at most). */
static void progress(Run *r, int64_t n) {
  r->done += n;
  if (!r->show_progress) return;
  double now = rt_now_ms();
  if (now - r->shown < PROGRESS_MS && r->done < r->total) return;
  r->shown = now;
  int64_t done = r->total ? (int64_t)((double)r->done / (double)r->total * (double)r->total_all) : 0;
  double rate = (double)done / ((now - r->t0) * 1e-3 + 1e-9);
  int len = fprintf(stderr, "\r%s: %lld/%lld samples, %.0f samples/s, ETA %.0f s ", r->prog, (long long)done,
                    (long long)r->total_all, rate, (double)(r->total_all - done) / (rate > 0 ? rate : 1));
  r->progress_len = len > r->progress_len ? len : r->progress_len;
}

static void clear_progress(Run *r) {
  if (r->show_progress && r->progress_len) fprintf(stderr, "\r%*s\r", r->progress_len, "");
}

/* One lane's argument values: sweep A adds w and w*x for every argument of the pass. */
static void add_values(Run *r, const rt_graph *G, int64_t *slot, int lane, double w, double *acc) {
  acc[0] += w;
  for (int o = 0; o < G->noutputs; o++) {
    if (slot[o] < 0) continue;
    const rt_tensor_desc *d = &G->outputs[o];
    int64_t per = d->numel / r->E->batch;
    for (int64_t e = 0; e < per; e++) {
      double x = value_at(d, r->out[o], lane * per + e);
      r->nonfinite += !isfinite(x);
      acc[slot[o] + e] += w * x;
    }
  }
}

/* Sweep B: the centred values of every argument, then each order >= 2
 * cumulant's moment contributions. */
static void add_moments(Run *r, int pass, int lane, double w, double *acc) {
  const rt_expect *E = r->E;
  const rt_graph *G = &E->passes[pass];
  int64_t *slot = r->slot[pass];
  for (int o = 0; o < G->noutputs; o++) {
    if (slot[o] < 0) continue;
    int64_t per = G->outputs[o].numel / E->batch;
    for (int64_t e = 0; e < per; e++)
      r->centred[slot[o] + e] = value_at(&G->outputs[o], r->out[o], lane * per + e) - r->mean[pass][slot[o] + e];
  }
  for (int c = 0; c < E->ncumulants; c++) {
    const rt_cumulant *K = &E->cumulants[c];
    if (K->pass != pass || K->order < 2) continue;
    const double *d[RT_MAX_ORDER];
    for (int i = 0; i < K->order; i++) d[i] = r->centred + slot[K->arg[i]];
    for (int t = 0; t < r->mom[c].nmasks; t++)
      rt_moment_add(r->mom[c].masks[t], K->order, r->mom[c].numel, d, w, acc + r->mom[c].offset[t]);
  }
}

/* Fills the batch starting at sample s0 (n real lanes; the others copy s0). */
static void fill_rows(Run *r, const rt_graph *G, int64_t s0, int n) {
  for (int i = 0; i < G->ninputs; i++) {
    if (G->input_group[i] < 0) continue;
    int64_t *rows = r->in[i];
    for (int l = 0; l < r->E->batch; l++) rows[l] = sample_row(r, G->input_group[i], s0 + (l < n ? l : 0));
  }
}

static void fill_estimates(Run *r, const rt_graph *G, float *const *est) {
  for (int i = 0; i < G->ninputs; i++)
    if (G->input_cumulant[i] >= 0)
      memcpy(r->in[i], est[G->input_cumulant[i]], (size_t)G->inputs[i].numel * sizeof(float));
}

static bool run_graph(Run *r, const rt_graph *G) {
  const char *msg = G->run((const void *const *)r->in, r->out, r->arena);
  if (msg) {
    clear_progress(r);
    rt_error(r->prog, "%s", msg);
  }
  return msg == NULL;
}

/* Runs pass `pass` over this rank's samples, adding sweep A's or B's contributions to sums. */
static bool sweep(Run *r, int pass, bool moments, rt_share *sums) {
  const rt_graph *G = &r->E->passes[pass];
  int B = r->E->batch;
  fill_estimates(r, G, r->est32);
  for (int64_t s0 = r->first; s0 < r->end; s0 += B) {
    int n = r->end - s0 < B ? (int)(r->end - s0) : B;
    fill_rows(r, G, s0, n);
    if (!run_graph(r, G)) return false;
    for (int l = 0; l < n; l++) {
      int64_t s = s0 + l;
      double w = sample_weight(r, s);
      /* --all: a combination of probability 0 is not an outcome (0 * inf would be NaN) */
      if (w != 0 && moments) add_moments(r, pass, l, w, sums->partial);
      else if (w != 0) add_values(r, G, r->slot[pass], l, w, sums->partial);
      if (((s + 1) % RT_CHUNK == 0 || s + 1 == r->n) && !rt_share_end_chunk(sums)) {
        rt_error(r->prog, "out of memory for the sums of pass %d", pass);
        return false;
      }
    }
    progress(r, n);
  }
  return true;
}

/* Plans each pass's sums: sweep A = [W, every argument's values]; sweep B =
 * every order >= 2 cumulant's moments. */
static bool plan_sums(Run *r) {
  const rt_expect *E = r->E;
  size_t np = (size_t)E->npasses, nc = (size_t)E->ncumulants + 1;
  if (!(r->slot = calloc(np, sizeof *r->slot)) || !(r->len_a = calloc(np, sizeof *r->len_a)) ||
      !(r->len_b = calloc(np, sizeof *r->len_b)) || !(r->mean = calloc(np, sizeof *r->mean)) ||
      !(r->weight = calloc(np, sizeof *r->weight)) ||
      !(r->mom = calloc(nc, sizeof *r->mom)))
    return false;
  int64_t widest = 1;
  for (int p = 0; p < E->npasses; p++) {
    const rt_graph *G = &E->passes[p];
    if (!(r->slot[p] = malloc(((size_t)G->noutputs + 1) * sizeof **r->slot))) return false;
    for (int o = 0; o < G->noutputs; o++) r->slot[p][o] = -1;
    r->len_a[p] = 1;
    for (int c = 0; c < E->ncumulants; c++)
      for (int i = 0; E->cumulants[c].pass == p && i < E->cumulants[c].order; i++) {
        int o = E->cumulants[c].arg[i];
        if (r->slot[p][o] < 0) r->slot[p][o] = r->len_a[p], r->len_a[p] += G->outputs[o].numel / E->batch;
      }
    widest = r->len_a[p] > widest ? r->len_a[p] : widest;
  }
  for (int c = 0; c < E->ncumulants; c++) {
    const rt_cumulant *K = &E->cumulants[c];
    Moments *M = &r->mom[c];
    for (int i = 0; i < K->order; i++) M->numel[i] = E->passes[K->pass].outputs[K->arg[i]].numel / E->batch;
    if (K->order < 2) continue;
    if (!(M->masks = malloc(sizeof(uint32_t) << K->order)) || !(M->offset = malloc(sizeof(int64_t) << K->order)))
      return false;
    M->nmasks = rt_moment_subsets(K->order, M->masks);
    for (int t = 0; t < M->nmasks; t++) {
      int64_t size = 1;
      for (int i = 0; i < K->order; i++) size *= M->masks[t] >> i & 1 ? M->numel[i] : 1;
      M->offset[t] = r->len_b[K->pass];
      r->len_b[K->pass] += size;
    }
  }
  return (r->centred = malloc((size_t)widest * sizeof(double))) != NULL;
}

/* Sweep A of a pass: the means of its arguments, which are its order-1 estimates. */
static bool pass_means(Run *r, int pass) {
  const rt_expect *E = r->E;
  rt_share sums;
  int64_t len = r->len_a[pass];
  bool keep = pass == 0 && r->jk_groups > 0, groups = keep && r->rank == 0;
  bool ok = rt_share_init(&sums, len, r->n, keep ? r->jk_groups : 0, r->rank, r->ranks) &&
            (r->mean[pass] = malloc((size_t)len * sizeof(double))) &&
            (!groups || (r->jk_part = malloc((size_t)r->jk_groups * (size_t)len * sizeof(double))));
  if (!ok) rt_error(r->prog, "out of memory for the sums of pass %d", pass);
  ok = ok && sweep(r, pass, false, &sums) && rt_share_total(&sums, r->prog, r->mean[pass], r->jk_part);
  if (ok) {
    if (keep && (r->jk_total = malloc((size_t)len * sizeof(double))))
      memcpy(r->jk_total, r->mean[pass], (size_t)len * sizeof(double));
    else if (keep) ok = false, rt_error(r->prog, "out of memory for the jackknife");
    double W = r->weight[pass] = r->mean[pass][0];
    for (int64_t e = 0; e < len; e++) r->mean[pass][e] /= W;
    for (int c = 0; c < E->ncumulants; c++)
      if (E->cumulants[c].pass == pass && E->cumulants[c].order == 1)
        memcpy(r->est[c], r->mean[pass] + r->slot[pass][E->cumulants[c].arg[0]],
               (size_t)E->cumulants[c].numel * sizeof(double));
  }
  rt_share_free(&sums);
  return ok;
}

/* Sweep B of a pass with cumulants of order >= 2: centred moments divided by
 * the total weight, then each cumulant from its moments. */
static bool pass_moments(Run *r, int pass) {
  const rt_expect *E = r->E;
  rt_share sums;
  int64_t len = r->len_b[pass];
  double *total = NULL;
  bool ok = rt_share_init(&sums, len, r->n, 0, r->rank, r->ranks) && (total = malloc((size_t)len * sizeof(double)));
  if (!ok) rt_error(r->prog, "out of memory for the moments of pass %d", pass);
  ok = ok && sweep(r, pass, true, &sums) && rt_share_total(&sums, r->prog, total, NULL);
  if (ok) {
    for (int64_t e = 0; e < len; e++) total[e] /= r->weight[pass];
    for (int c = 0; c < E->ncumulants; c++) {
      const rt_cumulant *K = &E->cumulants[c];
      const Moments *M = &r->mom[c];
      if (K->pass != pass || K->order < 2) continue;
      const double *moment[1 << RT_MAX_ORDER];
      for (int t = 0; t < M->nmasks; t++) moment[t] = total + M->offset[t];
      rt_cumulant_from_moments(K->order, M->numel, M->nmasks, M->masks, moment, r->est[c]);
    }
  }
  rt_share_free(&sums);
  free(total);
  return ok;
}

/* Replaces the graph buffers by zeroed ones for G (64-byte aligned). */
static void free_graph(Run *r) {
  for (int i = 0; r->in && r->in_is_data && i < r->max_in; i++) {
    if (!r->in_is_data[i]) free(r->in[i]);
    r->in[i] = NULL, r->in_is_data[i] = false;
  }
  for (int i = 0; r->out && i < r->max_out; i++) free(r->out[i]), r->out[i] = NULL;
  free(r->arena);
  r->arena = NULL;
}

static bool alloc_graph(Run *r, const rt_graph *G) {
  free_graph(r);
  bool ok = (r->arena = rt_alloc_zeroed(G->arena_bytes)) != NULL;
  for (int i = 0; ok && i < G->ninputs; i++) {
    int d = G->input_data ? G->input_data[i] : -1;
    if (d >= 0) r->in[i] = (void *)r->data[d].data, r->in_is_data[i] = true;  /* the graph only reads it */
    else ok = (r->in[i] = rt_alloc_zeroed((size_t)G->inputs[i].numel * rt_dtype_size(G->inputs[i].dtype))) != NULL;
  }
  for (int i = 0; ok && i < G->noutputs; i++)
    ok = (r->out[i] = rt_alloc_zeroed((size_t)G->outputs[i].numel * rt_dtype_size(G->outputs[i].dtype))) != NULL;
  if (!ok) rt_error(r->prog, "out of memory for a graph's buffers");
  return ok;
}

static void to_float(const Run *r, int c) {
  for (int64_t e = 0; e < r->E->cumulants[c].numel; e++) r->est32[c][e] = (float)r->est[c][e];
}

/* Replicate j of the jackknife: (S - S_j) / (W - W_j) as every estimate, then
 * the post graph; its outputs go to rep[T] as doubles. */
static bool jackknife_replicate(Run *r, int j, float *const *est, double *rep) {
  const rt_expect *E = r->E;
  const rt_graph *P = E->post;
  const double *part = r->jk_part + (size_t)j * (size_t)r->len_a[0], *all = r->jk_total;
  for (int c = 0; c < E->ncumulants; c++) {
    int64_t at = r->slot[0][E->cumulants[c].arg[0]];
    for (int64_t e = 0; e < E->cumulants[c].numel; e++)
      est[c][e] = (float)((all[at + e] - part[at + e]) / (all[0] - part[0]));
  }
  fill_estimates(r, P, est);
  if (!run_graph(r, P)) return false;
  for (int o = 0; o < P->noutputs; o++)
    for (int64_t e = 0; e < P->outputs[o].numel; e++) *rep++ = value_at(&P->outputs[o], r->out[o], e);
  return true;
}

/* Delete-a-group jackknife (random mode, every cumulant of order 1 in pass 0):
 * se = sqrt((G-1)/G * sum_j (theta_j - mean)^2), every sum in j order. */
static bool jackknife(Run *r) {
  const rt_expect *E = r->E;
  const rt_graph *P = E->post;
  int G = r->jk_groups;
  size_t T = 0;
  for (int o = 0; o < P->noutputs; o++) T += (size_t)P->outputs[o].numel;
  double *rep = malloc(((size_t)G * T + 1) * sizeof *rep);
  float **est = calloc((size_t)E->ncumulants + 1, sizeof *est);
  bool ok = rep && est;
  for (int c = 0; ok && c < E->ncumulants; c++)
    ok = (est[c] = malloc((size_t)E->cumulants[c].numel * sizeof(float) + 1)) != NULL;
  if (!ok) rt_error(r->prog, "out of memory for the jackknife");
  for (int j = 0; ok && j < G; j++) ok = jackknife_replicate(r, j, est, rep + (size_t)j * T);
  for (int o = 0, k = 0; ok && o < P->noutputs; o++)
    for (int64_t e = 0; e < P->outputs[o].numel; e++, k++) {
      double mean = 0, ss = 0;
      for (int j = 0; j < G; j++) mean += rep[(size_t)j * T + (size_t)k];
      mean /= G;
      for (int j = 0; j < G; j++) {
        double d = rep[(size_t)j * T + (size_t)k] - mean;
        ss += d * d;
      }
      r->se[o][e] = sqrt((double)(G - 1) / G * ss);
    }
  for (int c = 0; est && c < E->ncumulants; c++) free(est[c]);
  free(est);
  free(rep);
  return ok;
}

/* ---- the report and the files ---- */

/* [v0, v1, ...] with at most PRINT_HEAD values */
static void print_list(const double *v, int64_t n) {
  putchar('[');
  for (int64_t k = 0; k < n && k < PRINT_HEAD; k++) printf(k ? ", %.10g" : "%.10g", v[k]);
  fputs(n > PRINT_HEAD ? ", ...]" : "]", stdout);
}

static void print_se(const Run *r, int o) {
  const rt_tensor_desc *d = &r->E->post->outputs[o];
  bool any = false;
  for (int64_t e = 0; e < d->numel; e++) any |= !isnan(r->se[o][e]);
  if (r->o.all) fputs("  exact", stdout);
  else if (!any) fputs("  se n/a", stdout);
  else if (d->rank == 0) printf("  se %.6g (jackknife, %d groups)", r->se[o][0], r->jk_groups);
  else fputs("  se ", stdout), print_list(r->se[o], d->numel), printf(" (jackknife, %d groups)", r->jk_groups);
}

static bool print_report(const Run *r) {
  const rt_expect *E = r->E;
  const rt_graph *P = E->post;
  int64_t chunks = (r->n + RT_CHUNK - 1) / RT_CHUNK;
  if (r->o.all) printf("# %lld samples, all combinations (exact)", (long long)r->n);
  else printf("# %lld samples, random with replacement, seed %llu", (long long)r->n, (unsigned long long)r->o.seed);
  printf("; %d group%s; %lld chunk%s of %d\n", E->ngroups, E->ngroups == 1 ? "" : "s", (long long)chunks,
         chunks == 1 ? "" : "s", RT_CHUNK);
  for (int g = 0; g < E->ngroups; g++) group_line(r, g, "# ");
  for (int o = 0; o < P->noutputs; o++) {
    const rt_tensor_desc *d = &P->outputs[o];
    char s[RT_MAX_RANK * 24];
    rt_shape_str(d->rank, d->shape, s, sizeof s);
    double head[PRINT_HEAD];
    for (int64_t e = 0; e < d->numel && e < PRINT_HEAD; e++) head[e] = value_at(d, r->post_out[o], e);
    printf("%s %s  ", d->name, s);
    if (d->rank == 0) printf("%.10g", head[0]);
    else print_list(head, d->numel);
    print_se(r, o);
    if (d->rank) printf("  (%lld elements; use --output)", (long long)d->numel);
    putchar('\n');
  }
  printf("non-finite per-sample values: %lld\n", (long long)r->nonfinite);
  if (fflush(stdout) == 0) return true;
  rt_error(r->prog, "cannot write to standard output");
  return false;
}

enum FileKind { FILE_OUTPUT, FILE_SE, FILE_INDICES, FILE_WEIGHTS };
typedef struct FileJob {
  enum FileKind kind;
  int index;                   /* post output of FILE_OUTPUT and FILE_SE */
  const char *path;
} FileJob;

static const char *job_flag(const FileJob *j) {
  static const char *const FLAGS[] = {"--output", "--output-se", "--dump-indices", "--dump-weights"};
  return FLAGS[j->kind];
}

/* Writes one file's contents to tmp; false after a message. */
static bool write_job(const Run *r, const FileJob *j, const char *tmp) {
  const rt_tensor_desc *d = j->kind <= FILE_SE ? &r->E->post->outputs[j->index] : NULL;
  int ng = r->E->ngroups;
  size_t count = d ? (size_t)d->numel : j->kind == FILE_INDICES ? (size_t)r->n * (size_t)ng : (size_t)r->n;
  bool ok;
  errno = 0;
  if (j->kind == FILE_OUTPUT) return rt_npy_write(tmp, d->dtype, d->rank, d->shape, r->post_out[j->index]);
  void *buf = count < SIZE_MAX / 8 ? malloc(count * 8 + 8) : NULL;
  if (!buf) {
    rt_error(r->prog, "%s: out of memory", job_flag(j));
    return false;
  }
  if (j->kind == FILE_SE) {
    for (size_t e = 0; e < count; e++) ((float *)buf)[e] = (float)r->se[j->index][e];
    ok = rt_npy_write(tmp, RT_F32, d->rank, d->shape, buf);
  } else if (j->kind == FILE_INDICES) {
    for (int64_t s = 0; s < r->n; s++)
      for (int g = 0; g < ng; g++) ((int64_t *)buf)[s * ng + g] = sample_row(r, g, s);
    ok = rt_npy_write(tmp, RT_I64, 2, (const int64_t[]){r->n, ng}, buf);
  } else {
    for (int64_t s = 0; s < r->n; s++) ((double *)buf)[s] = r->o.all ? sample_weight(r, s) : 1.0 / (double)r->n;
    ok = rt_npy_write_f64(tmp, 1, (const int64_t[]){r->n}, buf);
  }
  free(buf);
  return ok;
}

typedef struct Files {
  const Run *r;
  const FileJob *jobs;
} Files;

static bool write_one(int i, const char *path, void *arg) {
  const Files *f = arg;
  return write_job(f->r, &f->jobs[i], path);
}

/* Every file the run writes, all or none (rt_write_files). */
static bool write_files(const Run *r) {
  const Opts *o = &r->o;
  int n = 0, cap = o->nouts + o->nses + 2;
  FileJob *jobs = calloc((size_t)cap, sizeof *jobs);
  const char **paths = calloc((size_t)cap, sizeof *paths), **labels = calloc((size_t)cap, sizeof *labels);
  bool ok = jobs && paths && labels;
  if (!ok) rt_error(r->prog, "out of memory writing files");
  for (int i = 0; ok && i < o->nouts; i++) jobs[n++] = (FileJob){FILE_OUTPUT, o->outs[i].index, o->outs[i].path};
  for (int i = 0; ok && i < o->nses; i++) jobs[n++] = (FileJob){FILE_SE, o->ses[i].index, o->ses[i].path};
  if (ok && o->dump_indices) jobs[n++] = (FileJob){FILE_INDICES, -1, o->dump_indices};
  if (ok && o->dump_weights) jobs[n++] = (FileJob){FILE_WEIGHTS, -1, o->dump_weights};
  for (int i = 0; ok && i < n; i++) paths[i] = jobs[i].path, labels[i] = job_flag(&jobs[i]);
  Files f = {r, jobs};
  ok = ok && rt_write_files(r->prog, n, paths, labels, write_one, &f);
  free(jobs), free(paths), free(labels);
  return ok;
}

/* ---- the run ---- */

static bool alloc_run(Run *r) {
  const rt_expect *E = r->E;
  const rt_graph *P = E->post;
  r->max_in = P->ninputs, r->max_out = P->noutputs;
  for (int p = 0; p < E->npasses; p++) {
    r->max_in = E->passes[p].ninputs > r->max_in ? E->passes[p].ninputs : r->max_in;
    r->max_out = E->passes[p].noutputs > r->max_out ? E->passes[p].noutputs : r->max_out;
  }
  size_t nc = (size_t)E->ncumulants + 1, no = (size_t)P->noutputs + 1;
  bool ok = (r->in = calloc((size_t)r->max_in + 1, sizeof *r->in)) &&
            (r->in_is_data = calloc((size_t)r->max_in + 1, sizeof *r->in_is_data)) &&
            (r->data = calloc((size_t)E->ndata + 1, sizeof *r->data)) &&
            (r->out = calloc((size_t)r->max_out + 1, sizeof *r->out)) &&
            (r->est = calloc(nc, sizeof *r->est)) && (r->est32 = calloc(nc, sizeof *r->est32)) &&
            (r->post_out = calloc(no, sizeof *r->post_out)) && (r->se = calloc(no, sizeof *r->se));
  for (int c = 0; ok && c < E->ncumulants; c++)
    ok = (r->est[c] = calloc((size_t)E->cumulants[c].numel + 1, sizeof(double))) &&
         (r->est32[c] = calloc((size_t)E->cumulants[c].numel + 1, sizeof(float)));
  for (int o = 0; ok && o < P->noutputs; o++) {
    ok = (r->post_out[o] = malloc((size_t)P->outputs[o].numel * 8 + 8)) &&
         (r->se[o] = malloc((size_t)P->outputs[o].numel * sizeof(double) + 8));
    for (int64_t e = 0; ok && e < P->outputs[o].numel; e++) r->se[o][e] = NAN;
  }
  return ok && prepare_sampler(r) && plan_sums(r);
}

/* The jackknife needs every estimate to be a plain mean from pass 0. */
static int jackknife_groups(const Run *r) {
  int64_t chunks = (r->n + RT_CHUNK - 1) / RT_CHUNK;
  bool means = !r->o.all && chunks >= 2 && r->E->ncumulants > 0;
  for (int c = 0; c < r->E->ncumulants; c++) means &= r->E->cumulants[c].order == 1 && r->E->cumulants[c].pass == 0;
  return means ? (int)(chunks < RT_MAX_JACKKNIFE ? chunks : RT_MAX_JACKKNIFE) : 0;
}

static int run_all(Run *r) {
  const rt_expect *E = r->E;
  const rt_graph *P = E->post;
  if (!alloc_run(r)) {
    rt_error(r->prog, "out of memory");
    return RT_EXIT_BAD_INPUT;
  }
  for (int d = 0; d < E->ndata; d++) {
    char what[256];
    snprintf(what, sizeof what, "--data %s", E->data[d].name);
    if (!rt_npy_map_open(r->prog, what, r->o.data_path[d], &E->data[d], &r->data[d])) return RT_EXIT_BAD_INPUT;
  }
  r->jk_groups = jackknife_groups(r);
  int64_t first, end;
  rt_share_range(r->n, r->rank, r->ranks, &first, &end);
  r->first = first * RT_CHUNK < r->n ? first * RT_CHUNK : r->n;
  r->end = end * RT_CHUNK < r->n ? end * RT_CHUNK : r->n;
  for (int p = 0; p < E->npasses; p++) {
    int sweeps = (r->len_a[p] > 1) + (r->len_b[p] > 0);
    r->total += (r->end - r->first) * sweeps, r->total_all += r->n * sweeps;
  }
  r->show_progress = r->rank == 0 && (r->o.progress || isatty(2));
  r->t0 = r->shown = rt_now_ms();
  bool ok = true;
  for (int p = 0; ok && p < E->npasses; p++) {
    if (r->len_a[p] == 1) continue;   /* no cumulant takes this pass's outputs */
    ok = alloc_graph(r, &E->passes[p]) && pass_means(r, p) && (!r->len_b[p] || pass_moments(r, p));
    for (int c = 0; ok && c < E->ncumulants; c++)
      if (E->cumulants[c].pass == p) to_float(r, c);
  }
  clear_progress(r);
  if (!ok) return RT_EXIT_BAD_INPUT;
  r->nonfinite = rt_reduce_sum(r->nonfinite);
  if (r->rank) return RT_EXIT_OK;   /* every rank has the estimates; rank 0 finishes the run */
  ok = alloc_graph(r, P);
  if (ok) fill_estimates(r, P, r->est32);
  ok = ok && run_graph(r, P);
  for (int o = 0; ok && o < P->noutputs; o++)
    memcpy(r->post_out[o], r->out[o], (size_t)P->outputs[o].numel * rt_dtype_size(P->outputs[o].dtype));
  ok = ok && (!r->jk_groups || jackknife(r));
  ok = ok && write_files(r) && print_report(r);
  return ok ? RT_EXIT_OK : RT_EXIT_BAD_INPUT;
}

static void free_run(Run *r) {
  const rt_expect *E = r->E;
  free_graph(r);
  for (int d = 0; r->data && d < E->ndata; d++) rt_npy_unmap(&r->data[d]);
  free(r->in);
  free(r->in_is_data);
  free(r->data);
  free(r->out);
  for (int p = 0; p < E->npasses; p++) {
    if (r->slot) free(r->slot[p]);
    if (r->mean) free(r->mean[p]);
  }
  for (int c = 0; c < E->ncumulants; c++) {
    if (r->mom) free(r->mom[c].masks), free(r->mom[c].offset);
    if (r->est) free(r->est[c]);
    if (r->est32) free(r->est32[c]);
  }
  for (int o = 0; (r->post_out || r->se) && o < E->post->noutputs; o++) {
    if (r->post_out) free(r->post_out[o]);
    if (r->se) free(r->se[o]);
  }
  for (int g = 0; r->cdf && g < E->ngroups; g++) free(r->cdf[g]);
  void *blocks[] = {r->slot, r->mean, r->mom, r->est, r->est32, r->post_out, r->se, r->cdf, r->len_a, r->len_b,
                    r->weight, r->centred, r->stream, r->last_positive, r->stride, r->jk_part, r->jk_total,
                    r->o.group_seed, r->o.has_group_seed, r->o.outs, r->o.ses, r->o.data_path};
  for (size_t i = 0; i < sizeof blocks / sizeof *blocks; i++) free(blocks[i]);
}

/* Everything after the ranks agreed: checks, options, the run. */
static int expect_run(Run *r, int argc, char **argv) {
  const rt_expect *E = r->E;
  size_t ng = (size_t)(E->ngroups > 0 ? E->ngroups : 0) + 1, nargs = argc > 0 ? (size_t)argc : 1;
  if (!(r->o.group_seed = calloc(ng, sizeof *r->o.group_seed)) || !(r->o.has_group_seed = calloc(ng, sizeof(bool))) ||
      !(r->o.outs = calloc(nargs, sizeof *r->o.outs)) || !(r->o.ses = calloc(nargs, sizeof *r->o.ses)) ||
      !(r->o.data_path = calloc((size_t)(E->ndata > 0 ? E->ndata : 0) + 1, sizeof *r->o.data_path))) {
    rt_error(r->prog, "out of memory");
    return RT_EXIT_BAD_INPUT;
  }
  if (!expect_ok(r)) return RT_EXIT_BAD_INPUT;
  int code = parse_args(r, argc, argv);
  r->n = r->o.samples;
  if (code == GO_ON && r->o.all) code = count_all(r);
  if (code != GO_ON) return code;
  rt_reduce_speak();
  int threads = rt_set_threads(r->prog, r->o.threads);
  if (r->o.verbose && r->ranks > 1)
    fprintf(stderr, "%s: rank %d of %d, %d thread%s\n", r->prog, r->rank, r->ranks, threads, threads == 1 ? "" : "s");
  else if (r->o.verbose) fprintf(stderr, "%s: %d thread%s\n", r->prog, threads, threads == 1 ? "" : "s");
  if (r->o.info) print_info(r, threads);
  return r->o.all || r->o.has_samples ? run_all(r) : RT_EXIT_OK;
}

/* Under MPI every rank runs this with the same arguments (rt_reduce_start
 * checks, else every rank exits 2): usage errors are the same on every rank
 * (rank 0 prints them); a fault of the run itself stops every rank
 * (rt_reduce_fail). */
static int expect_main(const rt_model *m, int argc, char **argv) {
  Run r = {.m = m, .E = m->expect, .prog = rt_prog(m, argc, argv), .o.max_all = DEFAULT_MAX_ALL};
  int code = rt_reduce_start(m, r.prog, argc, argv);
  r.rank = rt_reduce_rank(), r.ranks = rt_reduce_size();
  if (code == RT_EXIT_OK) code = expect_run(&r, argc, argv);
  if (code == RT_EXIT_BAD_INPUT) rt_reduce_fail(r.prog, code);   /* a fault, maybe of this rank only */
  free_run(&r);
  return rt_reduce_finish(code);
}

const rt_mode rt_mode_expect = {"expect", expect_requested, expect_main, expect_help};
