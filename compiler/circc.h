/* circc.h — table of contents: every stage's entry point, in pipeline order.
 * Each stage knows nothing of the stages after it (design.md §1–2). */
#ifndef CIRCC_H
#define CIRCC_H
#include "comp.h"
#include "ir.h"
#include "tensor.h"

/* parse.c — text (rust_circuit_format.md §1–2) → DAG. Loads Array and index
 * tensors through the store (or random ones). Appends top-level circuits to
 * `out` in file order (a repeated reference at top level is appended again).
 * Returns false if any error was reported; `out` then holds what parsed. */
bool parse_file(Comp *c, const char *path, NodeList *out);
bool parse_text(Comp *c, const char *filename, const char *text, size_t len, NodeList *out);

/* dump.c — prints circuits in rust_circuit's bijection text format, parseable by parse_text. */
void dump_circuits(Comp *c, FILE *f, Node *const *nodes, int n);

/* modules.c — substitutes every Module (§5): vmap semantics via the expand
 * rules of §5.4, symbolic sizes resolved per module call (§5.5), lexical scoping.
 * Replaces each roots[i] by its module-free equivalent (shared subgraphs stay
 * shared). false after diag_error. */
bool modules_substitute_all(Comp *c, Node **roots, int n);
/* Substitutes symbolic sizes everywhere (map[k] = size of the k-th prime or -1),
 * giving free Symbols their concrete shapes. Used by resolve for -D. */
bool modules_bind_sizes(Comp *c, Node **roots, int n, const int64_t *map);

/* resolve.c — the concrete program: substitute modules, bind -D sizes, check
 * that no symbolic size remains, reject kinds that cannot be evaluated, and
 * collect the free Symbols that remain as named inputs. */
typedef struct Program {
  NodeList outputs;            /* resolved top-level circuits, in file order */
  const char **output_names;   /* output i's name (node name, or "output<i>") */
  NodeList inputs;             /* free Symbols, in first-use order */
} Program;
bool resolve_program(Comp *c, const NodeList *tops, Program *out);

/* eval.c — the reference evaluator (§4): simple, obviously correct, double
 * precision everywhere. The oracle every optimisation is tested against. */
typedef struct Eval Eval;
Eval *eval_new(Comp *c);
void eval_bind(Eval *e, const Node *symbol, const Tensor *value); /* value for a free Symbol */
/* The value of n as a DT_F64 tensor of shape n->shape, memoised per node.
 * NULL after diag_error (unbound Symbol, non-evaluable kind, index out of range). */
Tensor *eval_node(Eval *e, const Node *n);
void eval_free(Eval *e);
#endif
