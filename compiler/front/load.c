/* load.c — the front end's I/O (design.md §1 "load"): circuit files in,
 * tensors of parsed circuits filled. The parser itself touches no file. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "circc.h"

bool load_text_file(Comp *c, const char *path, const char *what, char **text, size_t *len) {
  Loc at = {arena_strdup(&c->arena, path), 0, 0};
  int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK); /* a FIFO must not block the open */
  struct stat st;
  if (fd < 0 || fstat(fd, &st) != 0) {
    diag_error_class(c, DIAG_IO, at, "cannot read %s: %s", what, strerror(errno));
    if (fd >= 0) close(fd);
    return false;
  }
  if (!S_ISREG(st.st_mode) || st.st_size > MAX_TEXT_FILE) {
    diag_error_class(c, DIAG_IO, at, "cannot read %s: %s", what,
                     S_ISREG(st.st_mode) ? "larger than circc's limit of 1 GiB for text files"
                     : S_ISDIR(st.st_mode) ? "a directory" : "not a regular file (a device, FIFO or socket)");
    close(fd);
    return false;
  }
  size_t want = (size_t)st.st_size, got = 0;
  char *buf = malloc(want + 1);
  if (!buf) ICE("out of memory (%zu bytes for %s)", want, path);
  while (got < want) { /* a file that shrinks ends early; one that grows is read as it was */
    ssize_t n = read(fd, buf + got, want - got);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      if (n < 0) {
        diag_error_class(c, DIAG_IO, at, "cannot read %s: %s", what, strerror(errno));
        free(buf);
        close(fd);
        return false;
      }
      break;
    }
    got += (size_t)n;
  }
  close(fd);
  buf[got] = '\0';
  *text = buf;
  *len = got;
  return true;
}

SourceFile *load_source(Comp *c, const char *path) {
  const char *file = arena_strdup(&c->arena, path);
  char *text;
  size_t len;
  if (!load_text_file(c, path, "circuit file", &text, &len)) return NULL;
  SourceFile *src = ARENA_NEW(&c->arena, SourceFile);
  *src = (SourceFile){file, arena_strndup(&c->arena, text, len), len};
  free(text);
  diag_add_source(c, src->name, src->text, src->len);
  return src;
}

/* The tensor of an Array the parser left unloaded. */
static bool fill_array(Comp *c, Node *n) {
  Tensor *t;
  if (n->u.array.random) {
    t = tensor_new(c, DT_F32, &n->shape);
    uint64_t state = n->u.array.rng_seed;
    float *f = t->data;
    for (int64_t i = 0, numel = shape_numel(&n->shape); i < numel; i++) f[i] = (float)comp_rng_normal(&state);
  } else {
    t = store_load(c, n->u.array.hash_prefix, n->u.array.prefix_loc);
    if (!t) return false;
    if (!shape_eq(&t->shape, &n->shape)) {
      diag_error(c, n->u.array.shape_loc, "Array %s: declared shape %s but computed %s", n->u.array.label,
                 shape_str(c, &n->shape), shape_str(c, &t->shape));
      return false;
    }
  }
  n->u.array.tensor = t;
  return true;
}

/* The index tensors of an Index the parser left unloaded; *filled says whether there were any. */
static bool fill_index(Comp *c, Node *n, bool *filled) {
  for (int k = 0; k < n->u.index.n; k++) {
    IndexEntry *e = &n->u.index.e[k];
    if (e->kind != IDX_TENSOR || e->tensor || !e->prefix) continue;
    Tensor *t = store_load(c, e->prefix, e->loc);
    if (!t) return false;
    /* the parser sized the entry by its written length: it must be the tensor's */
    if (t->shape.rank == 1 && t->shape.dim[0] != e->len) {
      diag_error(c, e->loc, "index tensor t%s has %lld entries but is written as [%lld]", e->prefix,
                 (long long)t->shape.dim[0], (long long)e->len);
      return false;
    }
    e->tensor = t;
    *filled = true;
  }
  return true;
}

enum { UNSEEN, OPEN, SAME, CHANGED, FAILED };

/* Fills node n (its children are done) and re-derives it if anything below it changed. */
static int finish(Comp *c, Node *n, const unsigned char *state) {
  bool changed = false;
  for (int i = 0; i < n->nchild; i++) {
    if (state[n->child[i]->id] == FAILED) return FAILED; /* reported below */
    changed |= state[n->child[i]->id] == CHANGED;
  }
  if (n->kind == NK_Array && !n->u.array.tensor && !load_is_streamed(c, n)) {
    if (!fill_array(c, n)) return FAILED;
    changed = true;
  }
  if (n->kind == NK_Index && !fill_index(c, n, &changed)) return FAILED;
  if (!changed) return SAME;
  return ir_remake(c, n) ? CHANGED : FAILED;
}

bool load_is_streamed(const Comp *c, const Node *n) {
  if (n->kind != NK_Array || !n->name) return false;
  for (int i = 0; i < c->nstreamed; i++)
    if (!strcmp(c->streamed[i], n->name)) return true;
  return false;
}

bool load_tensors(Comp *c, Node *const *roots, int n) {
  int errors = diag_error_count(c);
  unsigned char *state = calloc((size_t)c->next_node_id + 1, 1);
  int *next = calloc((size_t)c->next_node_id + 1, sizeof(int));
  Node **stack = malloc(sizeof(Node *) * ((size_t)c->next_node_id + 1));
  if (!state || !next || !stack) ICE("out of memory");
  /* post-order with an explicit stack: deep circuits must not overflow the C stack */
  for (int r = 0; r < n; r++) {
    if (state[roots[r]->id]) continue;
    int sp = 0;
    stack[sp++] = roots[r];
    state[roots[r]->id] = OPEN;
    while (sp) {
      Node *x = stack[sp - 1];
      if (next[x->id] < x->nchild) {
        Node *k = x->child[next[x->id]++];
        if (state[k->id] == UNSEEN) {
          state[k->id] = OPEN;
          stack[sp++] = k;
        }
        continue;
      }
      sp--;
      state[x->id] = (unsigned char)finish(c, x, state);
    }
  }
  free(state);
  free(next);
  free(stack);
  return diag_error_count(c) == errors;
}
