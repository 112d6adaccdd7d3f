/* dump.c — prints circuits in rust_circuit's bijection text format
 * (rust_circuit_format.md §2.3): pre-order, each distinct node (by structural
 * hash) written once and referenced by its identifier afterwards, Module
 * arguments with `! symbol [flags]`. Unlike the reference printer it writes the
 * shape on every definition line, since circc dumps are for reading.
 * parse_text reads the output back to the same circuits (given the same store).
 * Also the kernel graph as a listing (dump_kernels), for --dump and --report. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "circc.h"
#include "kernel.h"

/* A distinct node: identity is the structural hash, as in rust_circuit. */
typedef struct DNode {
  const Node *n;
  int serial;            /* -1 until a number is handed out */
  bool printed;
  bool numbered;         /* a bound Symbol whose name has '#': `! 'a#b'` would end at the '#', so
                            it is numbered and bindings refer to it by number alone */
} DNode;

typedef struct NameEnt {
  const char *name;
  uint64_t hash;         /* first node seen with this name */
  bool ambiguous;        /* two different nodes carry it */
} NameEnt;

typedef struct Dumper {
  Comp *c;
  FILE *f;
  DNode *d;
  int nd, capd;
  int *slot;             /* hash → index into d, open addressing; -1 empty */
  size_t nslot;
  NameEnt *names;        /* open addressing by name */
  size_t nnames;
  int next_serial;
} Dumper;

static void *xcalloc(size_t n, size_t size) {
  void *p = calloc(n ? n : 1, size);
  if (!p) ICE("out of memory");
  return p;
}

static uint64_t str_hash(const char *s) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (; *s; s++) h = (h ^ (unsigned char)*s) * 0x100000001b3ull;
  return h;
}

static int find_node(const Dumper *d, uint64_t hash) {
  for (size_t i = hash & (d->nslot - 1);; i = (i + 1) & (d->nslot - 1)) {
    if (d->slot[i] < 0) return -(int)i - 1;
    if (d->d[d->slot[i]].n->hash == hash) return d->slot[i];
  }
}

static void grow_slots(Dumper *d) {
  free(d->slot);
  d->nslot *= 2;
  d->slot = malloc(sizeof(int) * d->nslot);
  if (!d->slot) ICE("out of memory");
  memset(d->slot, 0xff, sizeof(int) * d->nslot);
  for (int i = 0; i < d->nd; i++) d->slot[-find_node(d, d->d[i].n->hash) - 1] = i;
}

/* Records n if its hash is new; returns its index. */
static int add_node(Dumper *d, const Node *n, bool *added) {
  int k = find_node(d, n->hash);
  *added = k < 0;
  if (k >= 0) return k;
  if (d->nd == d->capd) {
    d->capd = d->capd ? 2 * d->capd : 64;
    d->d = realloc(d->d, sizeof(DNode) * (size_t)d->capd);
    if (!d->d) ICE("out of memory");
  }
  d->d[d->nd] = (DNode){n, -1, false, false};
  d->slot[-k - 1] = d->nd++;
  if ((size_t)d->nd * 2 > d->nslot) grow_slots(d);
  return d->nd - 1;
}

static NameEnt *name_slot(Dumper *d, const char *name) {
  for (size_t i = str_hash(name) & (d->nnames - 1);; i = (i + 1) & (d->nnames - 1))
    if (!d->names[i].name || strcmp(d->names[i].name, name) == 0) return &d->names[i];
}

/* Every distinct node reachable from the roots, including Module arg symbols,
 * and which names are ambiguous. Iterative: circuits may be deep. */
static void collect(Dumper *d, Node *const *roots, int nroots) {
  int cap = 64, sp = 0;
  const Node **stack = malloc(sizeof *stack * (size_t)cap);
  if (!stack) ICE("out of memory");
  for (int r = nroots - 1; r >= 0; r--) {
    stack[sp++] = roots[r];
    while (sp) {
      const Node *n = stack[--sp];
      bool added;
      add_node(d, n, &added);
      if (!added) continue;
      int need = sp + n->nchild + (n->kind == NK_Module ? n->nchild : 0);
      if (need > cap) {
        while (need > cap) cap *= 2;
        stack = realloc(stack, sizeof *stack * (size_t)cap);
        if (!stack) ICE("out of memory");
      }
      for (int i = 0; i < n->nchild; i++) stack[sp++] = n->child[i];
      if (n->kind == NK_Module)
        for (int i = 0; i < module_nargs(n); i++) {
          const Node *s = n->u.module.arg[i].symbol;
          if (!s) continue;
          stack[sp++] = s;
          if (s->name && strchr(s->name, '#')) d->d[add_node(d, s, &added)].numbered = true;
        }
    }
  }
  free(stack);
  d->nnames = 64;
  while (d->nnames < 2 * (size_t)d->nd) d->nnames *= 2;
  d->names = xcalloc(d->nnames, sizeof(NameEnt));
  for (int i = 0; i < d->nd; i++) {
    const Node *n = d->d[i].n;
    if (!n->name) continue;
    NameEnt *e = name_slot(d, n->name);
    if (!e->name) *e = (NameEnt){n->name, n->hash, false};
    else if (e->hash != n->hash) e->ambiguous = true;
  }
}

/* ------------------------------------------------------------------ extras */

static void put_name(FILE *f, const char *name) {
  fputc('\'', f);
  for (const char *s = name; *s; s++) {
    if (*s == '\\' || *s == '\'') fputc('\\', f);
    fputc(*s, f);
  }
  fputc('\'', f);
}

/* Einsum/rearrange letter for an axis id: a..z A..Z α..ψ (UTF-8). */
static void put_letter(FILE *f, int id) {
  if (id < 26) fputc('a' + id, f);
  else if (id < 52) fputc('A' + id - 26, f);
  else {
    unsigned cp = 0x3B1u + (unsigned)(id - 52);
    fputc((int)(0xC0 | cp >> 6), f);
    fputc((int)(0x80 | (cp & 0x3F)), f);
  }
}

void dump_einsum_spec(FILE *f, const Node *n) {
  const EinsumSpec *e = &n->u.einsum;
  bool fancy = false; /* ids past the alphabet need word names */
  for (int i = 0; i < n->nchild; i++)
    for (int k = 0; k < e->in_rank[i]; k++) fancy |= e->in[i][k] >= 76;
  for (int k = 0; k < e->out_rank; k++) fancy |= e->out[k] >= 76;
  if (fancy) fputs("fancy:", f);
  for (int i = 0; i <= n->nchild; i++) {
    const int *ids = i < n->nchild ? e->in[i] : e->out;
    int rank = i < n->nchild ? e->in_rank[i] : e->out_rank;
    if (i == n->nchild) fputs(fancy ? " ->" : "->", f);
    else if (i) fputc(',', f);
    for (int k = 0; k < rank; k++) {
      if (fancy) fprintf(f, " x%d", ids[k]);
      else put_letter(f, ids[k]);
    }
  }
}

static void put_size(FILE *f, int64_t v) {
  char buf[256];
  fputs(size_format(v, buf, sizeof buf), f);
}

static void put_axis_name(FILE *f, int id) {
  if (id < 76) put_letter(f, id);
  else fprintf(f, "x%d", id);
}

/* Rearrange ids print as letters, with :size where a size was written; an
 * output-only axis prints as its size. Groups of != 1 axis are parenthesised. */
static void put_rearrange(FILE *f, const Node *n) {
  const RearrangeSpec *r = &n->u.rearrange;
  const int64_t *written = r->written_size ? r->written_size : r->size;
  bool *in_input = xcalloc((size_t)r->nids + 1, sizeof(bool));
  for (int g = 0; g < r->nin; g++)
    for (int j = 0; j < r->in_len[g]; j++) in_input[r->in_ids[g][j]] = true;
  for (int side = 0; side < 2; side++) {
    int ng = side ? r->nout : r->nin;
    if (side) fputs(ng ? " -> " : " ->", f);
    for (int g = 0; g < ng; g++) {
      int len = side ? r->out_len[g] : r->in_len[g];
      const int *ids = side ? r->out_ids[g] : r->in_ids[g];
      if (g) fputc(' ', f);
      if (len != 1) fputc('(', f);
      for (int j = 0; j < len; j++) {
        int id = ids[j];
        if (j) fputc(' ', f);
        if (side && !in_input[id]) {
          put_size(f, r->size[id]);
          continue;
        }
        put_axis_name(f, id);
        if (!side && written[id] >= 0) {
          fputc(':', f);
          put_size(f, written[id]);
        }
      }
      if (len != 1) fputc(')', f);
    }
  }
  free(in_input);
}

static void put_index(FILE *f, const IndexSpec *ix) {
  fputc('[', f);
  for (int k = 0; k < ix->n; k++) {
    const IndexEntry *e = &ix->e[k];
    if (k) fputc(',', f);
    switch (e->kind) {
    case IDX_INT: fprintf(f, "%lld", (long long)e->i); break;
    case IDX_SLICE:
      if (e->has_start) fprintf(f, "%lld", (long long)e->start);
      fputc(':', f);
      if (e->has_stop) fprintf(f, "%lld", (long long)e->stop);
      break;
    case IDX_TENSOR:
      if (e->prefix) fprintf(f, "t%s", e->prefix);
      else fprintf(f, "t%.10s", e->tensor ? e->tensor->hash_hex : "");
      if (e->tensor && e->tensor->shape.rank == 1) fprintf(f, " [%lld]", (long long)e->tensor->shape.dim[0]);
      else if (!e->tensor) fprintf(f, " [%lld]", (long long)e->len); /* not loaded yet */
      break;
    }
  }
  fputc(']', f);
}

/* Rust's f64 Display: shortest digits that round-trip, never an exponent. */
static void put_scalar(FILE *f, double v) {
  if (isnan(v)) { fputs("NaN", f); return; }
  if (isinf(v)) { fputs(v > 0 ? "inf" : "-inf", f); return; }
  if (v == 0) { fputs(signbit(v) ? "-0" : "0", f); return; }
  char e[64];
  for (int prec = 0; prec < 17; prec++) {
    snprintf(e, sizeof e, "%.*e", prec, v);
    if (strtod(e, NULL) == v) break;
  }
  /* e = [-]d[.ddd]e[+-]XX → digits and decimal exponent */
  const char *q = e;
  if (*q == '-') fputc(*q++, f);
  char dig[32];
  int nd = 0;
  for (; *q && *q != 'e'; q++)
    if (*q != '.') dig[nd++] = *q;
  int point = atoi(q + 1) + 1; /* digits before the decimal point */
  while (nd > 1 && dig[nd - 1] == '0') nd--;
  if (point <= 0) {
    fputs("0.", f);
    for (int i = 0; i < -point; i++) fputc('0', f);
    fwrite(dig, 1, (size_t)nd, f);
  } else if (point >= nd) {
    fwrite(dig, 1, (size_t)nd, f);
    for (int i = nd; i < point; i++) fputc('0', f);
  } else {
    fwrite(dig, 1, (size_t)point, f);
    fputc('.', f);
    fwrite(dig + point, 1, (size_t)(nd - point), f);
  }
}

static void put_extra(FILE *f, const Node *n) {
  switch (n->kind) {
  case NK_Einsum: fputc(' ', f); dump_einsum_spec(f, n); break;
  case NK_Rearrange: fputc(' ', f); put_rearrange(f, n); break;
  case NK_Index:
  case NK_Scatter: fputc(' ', f); put_index(f, &n->u.index); break;
  case NK_Scalar: fputc(' ', f); put_scalar(f, n->u.scalar.value); break;
  case NK_Symbol: if (n->u.symbol.uuid[0]) fprintf(f, " %s", n->u.symbol.uuid); break;
  case NK_Tag: fprintf(f, " %s", n->u.tag.uuid); break;
  case NK_Concat: fprintf(f, " %d", n->u.concat.axis); break;
  case NK_GeneralFunction: fprintf(f, " %s", n->u.gf.text); break;
  case NK_Array: {
    const Tensor *t = n->u.array.tensor;
    if (n->u.array.hash_prefix) fprintf(f, " %s", n->u.array.hash_prefix);
    else if (t && t->hash_hex[0] && !n->u.array.random) fprintf(f, " %.24s", t->hash_hex);
    else fputs(" rand", f);
    break;
  }
  case NK_StoredCumulantVar:
    fputc(' ', f);
    for (int i = 0; i < n->u.stored_cumulant.norders; i++) fprintf(f, "%s%d", i ? "," : "", n->u.stored_cumulant.orders[i]);
    fprintf(f, "|%s", n->u.stored_cumulant.uuid);
    break;
  default: break;
  }
}

/* ------------------------------------------------------------------- lines */

/* The identifier of a node: 'name' if unambiguous, N 'name' or N otherwise.
 * `bare`: a reference inside a Module binding, where N alone is safest. */
static void put_ident(Dumper *d, DNode *dn, bool reference, bool bare) {
  const Node *n = dn->n;
  bool unique = n->name && !name_slot(d, n->name)->ambiguous && !dn->numbered;
  if (unique) {
    put_name(d->f, n->name);
    return;
  }
  if (dn->serial < 0) dn->serial = d->next_serial++;
  fprintf(d->f, "%d", dn->serial);
  if (reference && bare && dn->numbered) return;
  if (n->name) {
    fputc(' ', d->f);
    put_name(d->f, n->name);
  } else if (reference) {
    fprintf(d->f, " %s", kind_name(n->kind));
  }
}

/* A node's line content after the indentation (or after `! `: `binding`).
 * Returns true if it was a definition (its children follow). */
static bool put_node(Dumper *d, const Node *n, bool binding) {
  bool added;
  DNode *dn = &d->d[add_node(d, n, &added)];
  if (dn->printed) {
    put_ident(d, dn, true, binding);
    return false;
  }
  dn->printed = true;
  put_ident(d, dn, false, binding);
  if (n->autoname_disabled) fputs(" AD", d->f);
  fputs(" [", d->f);
  for (int k = 0; k < n->shape.rank; k++) {
    if (k) fputc(',', d->f);
    put_size(d->f, n->shape.dim[k]);
  }
  fprintf(d->f, "] %s", kind_name(n->kind));
  put_extra(d->f, n);
  return true;
}

typedef struct Item {
  const Node *n;
  int depth;
  const ModuleArg *arg;  /* the binding printed after the node, if a Module argument */
} Item;

void dump_circuits(Comp *c, FILE *f, Node *const *nodes, int n) {
  Dumper d = {.c = c, .f = f, .nslot = 64};
  d.slot = malloc(sizeof(int) * d.nslot);
  if (!d.slot) ICE("out of memory");
  memset(d.slot, 0xff, sizeof(int) * d.nslot);
  collect(&d, nodes, n);
  int cap = 64, sp = 0;
  Item *stack = malloc(sizeof(Item) * (size_t)cap);
  if (!stack) ICE("out of memory");
  for (int r = 0; r < n; r++) {
    stack[sp++] = (Item){nodes[r], 0, NULL};
    while (sp) {
      Item it = stack[--sp];
      for (int i = 0; i < it.depth; i++) fputs("  ", f);
      bool def = put_node(&d, it.n, false);
      if (it.arg) {
        fputs(" ! ", f);
        put_node(&d, it.arg->symbol, true); /* a reference, or the Symbol's definition inline */
        if (!it.arg->batchable || !it.arg->expandable || !it.arg->ban_non_symbolic_size_expand)
          fprintf(f, " %c%c%c", it.arg->batchable ? 't' : 'f', it.arg->expandable ? 't' : 'f',
                  it.arg->ban_non_symbolic_size_expand ? 't' : 'f');
      }
      fputc('\n', f);
      if (!def) continue;
      if (sp + it.n->nchild > cap) {
        while (sp + it.n->nchild > cap) cap *= 2;
        stack = realloc(stack, sizeof(Item) * (size_t)cap);
        if (!stack) ICE("out of memory");
      }
      for (int i = it.n->nchild - 1; i >= 0; i--)
        stack[sp++] = (Item){it.n->child[i], it.depth + 1,
                             it.n->kind == NK_Module && i > 0 ? &it.n->u.module.arg[i - 1] : NULL};
    }
  }
  free(stack);
  free(d.d);
  free(d.slot);
  free(d.names);
}

/* ------------------------------------------------------------ kernel graph */

static void put_buffer(FILE *f, const Buf *b, bool planned) {
  fprintf(f, "buffer %d", b->id);
  if (b->kind == BUF_TEMP && planned) fprintf(f, " @arena+%lld", (long long)b->offset);
  else if (b->kind == BUF_OUTPUT) fprintf(f, " (output %d)", b->index);
  else if (b->kind == BUF_INPUT) fprintf(f, " (input %d)", b->index);
  else if (b->kind == BUF_WEIGHT) fputs(" (weight)", f);
}

typedef struct Reads {
  int n, id[32];
  bool more;   /* more distinct buffers than id[] holds: the listing says "..." */
} Reads;

static void note_read(const View *v, void *arg) {
  Reads *r = arg;
  if (!v->buf) return;
  for (int i = 0; i < r->n; i++)
    if (r->id[i] == v->buf->id) return;
  if (r->n < 32) r->id[r->n++] = v->buf->id;
  else r->more = true;
}

void dump_kernels(Comp *c, FILE *f, const Kernels *k, bool planned) {
  static const char *const KIND[] = {
      [STEP_ELEMENTWISE] = "elementwise", [STEP_CONTRACT] = "contraction", [STEP_ROW] = "row",
      [STEP_GATHER] = "gather",           [STEP_FILL] = "fill",            [STEP_GEMM] = "gemm",
      [STEP_LAYERNORM] = "layernorm",     [STEP_ATTENTION] = "attention",  [STEP_GENERAL] = "general",
      [STEP_PATCH] = "patch"};
  fprintf(f, "plan: %d steps, %d elementwise nodes fused into other steps, %.0f FLOPs per run", k->nstep, k->nfused,
          k->flops);
  if (k->nphase) fprintf(f, ", %d phases (barriers)", k->nphase);
  fputc('\n', f);
  for (int i = 0; i < k->nstep; i++) {
    const Step *s = k->step[i];
    fprintf(f, "  step %3d ", i);
    if (k->nphase) fprintf(f, "phase %3d %s ", s->phase, step_parallel(s) ? "team  " : "serial");
    fprintf(f, "%-11s %s %s", KIND[s->kind], s->node ? node_label(c, s->node) : "",
            s->node ? shape_str(c, &s->node->shape) : "");
    Reads r = {0};
    step_each_read(s, note_read, &r);
    for (int j = 0; j < r.n; j++) fprintf(f, "%s%d", j ? ", " : " reads ", r.id[j]);
    if (r.more) fputs(", ...", f);
    fputs(" -> ", f);
    put_buffer(f, s->out.buf, planned);
    if (step_is_gemv(s)) fprintf(f, ", matrix-vector%s", s->u.gemm.mask.buf ? ", skips masked columns" : "");
    if (s->kind == STEP_GEMM && s->u.gemm.packing != PACK_NONE) {
      static const char *const what[] = {[PACK_F32] = "pre-packed", [PACK_BF16] = "bf16", [PACK_INT8] = "int8"};
      fprintf(f, ", %s weights", what[s->u.gemm.packing]);
    }
    if (s->kind == STEP_ATTENTION && !s->u.attn.kend.buf) fputs(", mask computed at run time", f);
    if (s->kind == STEP_ATTENTION && s->u.attn.bf16) fputs(", bf16 Q·Kᵀ and P·V", f);
    const Step *e = step_epilogue(s);
    if (e) {
      fprintf(f, ", epilogue %s -> ", e->node ? node_label(c, e->node) : "");
      put_buffer(f, e->out.buf, planned);
    }
    fputc('\n', f);
  }
  if (planned)
    fprintf(f, "memplan: arena %lld bytes, weights %lld bytes\n", (long long)k->arena_bytes, (long long)k->weights_bytes);
}
