/* rt_reduce.c — the split of an expectation program's chunks between ranks
 * and the combination of their sums in the single-process order (see
 * rt_reduce.h), and the one-process transport. Plain C and libc: MPI is
 * rt_reduce_mpi.c's, compiled only by circc --mpi. */
#include "rt_reduce.h"
#include <stdlib.h>
#include <string.h>
#include "rt_core.h"

/* Packed contributions start with two int64 bit patterns (never arithmetic,
 * so any chunk index survives a transport of doubles). */
static double word(int64_t v) {
  double d;
  memcpy(&d, &v, sizeof d);
  return d;
}

static int64_t int_of(double d) {
  int64_t v;
  memcpy(&v, &d, sizeof v);
  return v;
}

enum { JK_HEAD = 0, JK_CHUNK = 1 };   /* a group's sum from its first chunk on; one chunk of a group begun earlier */

void rt_share_range(int64_t nsamples, int rank, int size, int64_t *first, int64_t *end) {
  int64_t c = nsamples / RT_CHUNK + (nsamples % RT_CHUNK != 0), q = c / size, m = c % size;
  /* ceil(r*C/R) without overflow: r*q + ceil(r*m/R), r*m < R^2 */
  *first = rank * q + ((int64_t)rank * m + size - 1) / size;
  *end = (rank + 1) * q + ((int64_t)(rank + 1) * m + size - 1) / size;
}

/* Appends [a, b, v[0..len)] (v NULL: zeros) to a packed buffer. */
static bool append(double **buf, int64_t *n, int64_t *cap, int64_t a, int64_t b, const double *v, int64_t len) {
  if (*n + 2 + len > *cap) {
    int64_t want = *cap * 2 > *n + 2 + len ? *cap * 2 : *n + 2 + len;
    double *grown = realloc(*buf, (size_t)want * sizeof **buf);
    if (!grown) return false;
    *buf = grown, *cap = want;
  }
  double *at = *buf + *n;
  at[0] = word(a), at[1] = word(b);
  if (v) memcpy(at + 2, v, (size_t)len * sizeof *at);
  else memset(at + 2, 0, (size_t)len * sizeof *at);
  *n += 2 + len;
  return true;
}

/* Opens the largest aligned subtree that starts at the next chunk and ends within the range. */
static bool open_node(rt_share *s) {
  int64_t size = 1;
  while (s->chunk % (size * 2) == 0 && s->chunk + size * 2 <= s->end) size *= 2;
  s->node_end = s->chunk + size;
  if (!rt_sums_init(&s->node, s->len, size * RT_CHUNK, 0)) return false;
  s->partial = s->node.partial;
  return true;
}

bool rt_share_init(rt_share *s, int64_t len, int64_t nsamples, int ngroups, int rank, int size) {
  memset(s, 0, sizeof *s);
  s->len = len;
  s->nchunks = (nsamples + RT_CHUNK - 1) / RT_CHUNK;
  s->ngroups = ngroups < s->nchunks ? ngroups : (int)s->nchunks;
  rt_share_range(nsamples, rank, size, &s->first, &s->end);
  s->chunk = s->first;
  while (s->ngroups && (int64_t)(s->group + 1) * s->nchunks / s->ngroups <= s->chunk) s->group++;
  return s->first == s->end || open_node(s);
}

bool rt_share_end_chunk(rt_share *s) {
  int64_t len = s->len;
  if (s->ngroups) {
    while ((int64_t)(s->group + 1) * s->nchunks / s->ngroups <= s->chunk) s->group++;
    int64_t start = (int64_t)s->group * s->nchunks / s->ngroups;
    if (start < s->first) {
      if (!append(&s->jk, &s->njk, &s->cap_jk, JK_CHUNK, s->chunk, s->partial, len)) return false;
    } else {
      /* the group's sum from +0.0 in chunk order, as rt_sums keeps it */
      if (s->chunk == start && !append(&s->jk, &s->njk, &s->cap_jk, JK_HEAD, s->group, NULL, len)) return false;
      double *g = s->jk + s->njk - len;
      for (int64_t e = 0; e < len; e++) g[e] += s->partial[e];
    }
  }
  rt_sums_end_chunk(&s->node);
  s->chunk++;
  if (s->chunk < s->node_end) return true;
  bool ok = append(&s->nodes, &s->nnodes, &s->cap_nodes, s->node_end - (s->node.nchunks), s->node_end, NULL, len);
  if (ok) rt_sums_total(&s->node, s->nodes + s->nnodes - len);
  rt_sums_free(&s->node);
  s->partial = NULL;
  return ok && (s->chunk == s->end || open_node(s));
}

void rt_share_free(rt_share *s) {
  rt_sums_free(&s->node);
  free(s->nodes);
  free(s->jk);
  memset(s, 0, sizeof *s);
}

/* The packed subtrees, read left to right while the tree is walked. */
typedef struct Cursor {
  const double *at, *end;
  int64_t len, nchunks;
} Cursor;

/* tree(lo, hi) into out; tmp holds a len-vector per level below. */
static bool subtree(Cursor *c, int64_t lo, int64_t hi, double *out, double *tmp) {
  int64_t len = c->len;
  if (lo >= c->nchunks) {   /* empty chunks only: +0.0 */
    memset(out, 0, (size_t)len * sizeof *out);
    return true;
  }
  if (c->end - c->at >= 2 + len && int_of(c->at[0]) == lo && int_of(c->at[1]) == hi) {
    memcpy(out, c->at + 2, (size_t)len * sizeof *out);
    c->at += 2 + len;
    return true;
  }
  if (hi - lo == 1) return false;
  int64_t mid = lo + (hi - lo) / 2;
  if (!subtree(c, lo, mid, out, tmp) || !subtree(c, mid, hi, tmp, tmp + len)) return false;
  for (int64_t e = 0; e < len; e++) out[e] = out[e] + tmp[e];
  return true;
}

bool rt_share_combine_tree(int64_t len, int64_t nchunks, const double *nodes, int64_t n, double *out) {
  int levels = 0;
  while (((int64_t)1 << levels) < nchunks) levels++;
  double *tmp = malloc((size_t)(levels + 1) * (size_t)(len > 0 ? len : 1) * sizeof *tmp);
  Cursor c = {nodes, nodes + n, len, nchunks};
  bool ok = tmp && subtree(&c, 0, (int64_t)1 << levels, out, tmp) && c.at == c.end;
  free(tmp);
  return ok;
}

bool rt_share_combine_groups(int64_t len, int64_t nchunks, int ngroups, const double *items, int64_t n, double *groups) {
  memset(groups, 0, (size_t)ngroups * (size_t)len * sizeof *groups);
  int g = 0;
  bool *begun = calloc((size_t)ngroups + 1, sizeof *begun);
  bool ok = begun != NULL;
  for (const double *at = items; ok && at < items + n; at += 2 + len) {
    int64_t kind = int_of(at[0]), index = int_of(at[1]);
    if (kind == JK_HEAD) {
      ok = index >= g && index < ngroups && !begun[index];
      if (ok) g = (int)index, begun[g] = true, memcpy(groups + (size_t)g * (size_t)len, at + 2, (size_t)len * sizeof *at);
    } else {
      while (g + 1 < ngroups && (int64_t)(g + 1) * nchunks / ngroups <= index) g++;
      ok = kind == JK_CHUNK && index < nchunks && begun[g];   /* chunks in order, after their group's head */
      double *sum = groups + (size_t)g * (size_t)len;
      for (int64_t e = 0; ok && e < len; e++) sum[e] += at[2 + e];
    }
  }
  for (int j = 0; ok && j < ngroups; j++) ok = begun[j];
  free(begun);
  return ok;
}

bool rt_share_total(rt_share *s, const char *prog, double *out, double *groups) {
  double *all = NULL;
  int64_t n = 0;
  bool ok = rt_reduce_gather(prog, s->nodes, s->nnodes, true, &all, &n);
  if (ok && !rt_share_combine_tree(s->len, s->nchunks, all, n, out)) {
    rt_error(prog, "internal error: the ranks' sums do not cover the %lld chunks", (long long)s->nchunks);
    ok = false;
  }
  free(all);
  all = NULL;
  ok = ok && (!s->ngroups || rt_reduce_gather(prog, s->jk, s->njk, false, &all, &n));
  if (ok && s->ngroups && groups && !rt_share_combine_groups(s->len, s->nchunks, s->ngroups, all, n, groups)) {
    rt_error(prog, "internal error: the ranks' jackknife sums do not cover the %d groups", s->ngroups);
    ok = false;
  }
  free(all);
  return ok;
}

#ifndef CIRCC_MPI
/* One process: the transport is the identity. Started as several copies by
 * mpirun (Open MPI, or a PMI launcher), each would compute and write
 * everything: refused. */
int rt_reduce_start(const rt_model *m, const char *prog, int argc, char **argv) {
  (void)m, (void)argc, (void)argv;
  const char *launched = getenv("OMPI_COMM_WORLD_SIZE") ? getenv("OMPI_COMM_WORLD_SIZE") : getenv("PMI_SIZE");
  if (launched && atol(launched) > 1)
    return rt_usage_error(prog, "this program was built without circc --mpi, so %s copies of it would each do the "
                          "whole run; rebuild it with circc --mpi, or run it once", launched);
  return RT_EXIT_OK;
}
void rt_reduce_speak(void) {}
int rt_reduce_rank(void) { return 0; }
int rt_reduce_size(void) { return 1; }
void rt_reduce_fail(const char *prog, int code) { (void)prog, (void)code; }
int rt_reduce_finish(int code) { return code; }
int64_t rt_reduce_sum(int64_t x) { return x; }

bool rt_reduce_gather(const char *prog, const double *mine, int64_t n, bool everyone, double **all, int64_t *total) {
  (void)everyone;
  *all = malloc((size_t)n * sizeof **all + 1);
  *total = n;
  if (!*all) rt_error(prog, "out of memory combining the sums");
  else if (n) memcpy(*all, mine, (size_t)n * sizeof **all);
  return *all != NULL;
}
#endif
