/* diag.c — diagnostics: `file:line:col: error: msg`, the source line and a
 * caret; counts errors so a run reports all of them (see diag.h). */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include "comp.h"

static const SourceFile *find_source(const Comp *c, const char *file) {
  for (int i = 0; i < c->nsources; i++)
    if (c->sources[i].name == file || strcmp(c->sources[i].name, file) == 0) return &c->sources[i];
  return NULL;
}

/* Prints the source line of loc and a caret under its column (col counts
 * Unicode scalars, so count UTF-8 lead bytes to place the caret). */
static void print_caret(const Comp *c, Loc loc) {
  const SourceFile *src = loc.file ? find_source(c, loc.file) : NULL;
  if (!src || loc.line <= 0) return;
  const char *p = src->text, *end = src->text + src->len;
  for (int line = 1; line < loc.line && p < end; p++)
    if (*p == '\n') line++;
  const char *eol = p;
  while (eol < end && *eol != '\n' && *eol != '\r') eol++;
  fprintf(c->err, "  %.*s\n  ", (int)(eol - p), p);
  int col = 1;
  for (const char *q = p; q < eol && col < loc.col; q++) {
    if (((unsigned char)*q & 0xC0) == 0x80) continue;
    fputc(*q == '\t' ? '\t' : ' ', c->err);
    col++;
  }
  fputs("^\n", c->err);
}

static void vreport(Comp *c, const char *what, const char *color, Loc loc, const char *fmt, va_list ap) {
  if (loc.file) {
    if (loc.line > 0)
      fprintf(c->err, "%s:%d:%d: ", loc.file, loc.line, loc.col);
    else
      fprintf(c->err, "%s: ", loc.file);
  } else {
    fputs("circc: ", c->err);
  }
  if (c->color) fprintf(c->err, "\033[1;%sm%s:\033[0m ", color, what);
  else fprintf(c->err, "%s: ", what);
  vfprintf(c->err, fmt, ap);
  fputc('\n', c->err);
  if (strcmp(what, "note") != 0) print_caret(c, loc);
}

static void record_error(Comp *c, DiagClass cls) {
  c->nerrors++;
  /* priority: internal > io > cc > usage > circuit */
  static const int rank[71] = {[DIAG_CIRCUIT] = 1, [DIAG_USAGE] = 2, [DIAG_CC] = 3, [DIAG_IO] = 4, [DIAG_INTERNAL] = 5};
  if (rank[cls] > rank[c->worst_class]) c->worst_class = cls;
}

static void verror(Comp *c, DiagClass cls, Loc loc, const char *fmt, va_list ap) {
  if (c->muted) return;
  record_error(c, cls);
  if (c->max_errors && c->nerrors > c->max_errors) return;
  vreport(c, "error", "31", loc, fmt, ap);
}

void diag_error(Comp *c, Loc loc, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  verror(c, DIAG_CIRCUIT, loc, fmt, ap);
  va_end(ap);
}

void diag_error_class(Comp *c, DiagClass cls, Loc loc, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  verror(c, cls, loc, fmt, ap);
  va_end(ap);
}

void diag_warn(Comp *c, Loc loc, const char *fmt, ...) {
  if (c->muted) return;
  c->nwarnings++;
  va_list ap;
  va_start(ap, fmt);
  vreport(c, "warning", "35", loc, fmt, ap);
  va_end(ap);
}

void diag_note(Comp *c, Loc loc, const char *fmt, ...) {
  if (c->muted || (c->max_errors && c->nerrors > c->max_errors)) return;
  va_list ap;
  va_start(ap, fmt);
  vreport(c, "note", "36", loc, fmt, ap);
  va_end(ap);
}

int diag_error_count(const Comp *c) { return c->nerrors; }
int diag_exit_code(const Comp *c) { return c->nerrors ? c->worst_class : 0; }

void diag_add_source(Comp *c, const char *file, const char *text, size_t len) {
  if (c->nsources == c->cap_sources) {
    int cap = c->cap_sources ? 2 * c->cap_sources : 8;
    SourceFile *s = ARENA_ARRAY(&c->arena, SourceFile, cap);
    if (c->nsources) memcpy(s, c->sources, sizeof(SourceFile) * (size_t)c->nsources);
    c->sources = s;
    c->cap_sources = cap;
  }
  c->sources[c->nsources++] = (SourceFile){file, text, len};
}

void diag_ice(const char *file, int line, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "circc: internal error at %s:%d: ", file, line);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
  exit(DIAG_INTERNAL);
}

void diag_out_of_memory(size_t bytes) {
  fprintf(stderr, "circc: error: out of memory allocating %zu bytes (%.3g GiB)\n", bytes, (double)bytes / (1 << 30));
  exit(DIAG_IO);
}
