/* diag.h — the one diagnostics path. Every user-facing problem goes through
 * diag_error()/diag_warn()/diag_note() with a source location, printed as
 * `file:line:col: error: message` plus the source line and a caret. Errors are
 * recorded and compilation continues, so one run reports every problem; stages
 * check diag_error_count() before running. Internal bugs use ICE()/CHECK(),
 * which exit 70. */
#ifndef CIRCC_DIAG_H
#define CIRCC_DIAG_H
#include <stdio.h>

typedef struct Comp Comp;

/* A position in an input file. file == NULL means "no location" (the message
 * is prefixed with "circc:" instead). line and col are 1-based; col counts
 * Unicode scalars. */
typedef struct Loc {
  const char *file;
  int line, col;
} Loc;

/* Exit codes of circc (design.md §5). An error's class decides the exit code
 * of the run: the highest-priority class seen wins (internal > io > usage > circuit). */
typedef enum DiagClass {
  DIAG_CIRCUIT = 1, /* bad circuit: parse error, shape conflict, missing tensor, unbound symbol */
  DIAG_USAGE = 2,   /* bad command line */
  DIAG_IO = 3,      /* cannot read an input / write an output */
  DIAG_CC = 4,      /* the C compiler failed */
  DIAG_INTERNAL = 70,
} DiagClass;

void diag_error(Comp *c, Loc loc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void diag_error_class(Comp *c, DiagClass cls, Loc loc, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
void diag_warn(Comp *c, Loc loc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void diag_note(Comp *c, Loc loc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
int diag_error_count(const Comp *c);
int diag_exit_code(const Comp *c); /* 0 if no errors, else the class of the worst error */

/* Registers a source buffer so diagnostics can quote the offending line. */
void diag_add_source(Comp *c, const char *file, const char *text, size_t len);

_Noreturn void diag_ice(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
#define ICE(...) diag_ice(__FILE__, __LINE__, __VA_ARGS__)
/* Memory the circuit needs that the machine does not give: a message and
 * exit 3 (as programs do), not an internal error. */
_Noreturn void diag_out_of_memory(size_t bytes);
#define CHECK(x) ((x) ? (void)0 : diag_ice(__FILE__, __LINE__, "check failed: %s", #x))

static const Loc NO_LOC = {0, 0, 0};
#endif
