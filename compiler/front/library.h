/* library.h — rust_circuit's module library (module_library.py;
 * rust_circuit_format.md §7.1–7.2, model_files.md §3) built as circuit text:
 * the layer norm, attention, MLP and block specs and what binds them. Shared by
 * models/gpt2/gpt2_import and the model-file loader, which parses the text as
 * reference circuits (parse_text's RefCircuits).
 *
 * The circuit is a small graph of text nodes, printed in rust_circuit's
 * bijection format: a node's first occurrence (pre-order) is its definition,
 * later ones are references by name. All memory is in the Comp's arena. */
#ifndef CIRCC_LIBRARY_H
#define CIRCC_LIBRARY_H
#include <stdio.h>
#include "circc.h"

typedef struct LibNode LibNode;

typedef struct Library {
  Comp *c;
  /* The UUID of a Symbol whose UUID the library does not fix (it fixes those
   * of ln.*, ll.*: §9 E8, E9); out gets a lowercase hyphenated UUID. */
  void (*uuid)(const char *name, char out[37]);
  LibNode **all;                /* every node, in creation order */
  int n, cap;
} Library;

/* ---- the text graph ---- */
/* A node `name` with head "[shape] Kind extra" (or "Kind extra") and the
 * NULL-terminated children that follow. Names must be unique in the file
 * (lib_check_unique_names). */
LibNode *lib_node(Library *l, const char *name, const char *head, ...);
LibNode *lib_module(Library *l, const char *name, LibNode *spec); /* arguments: lib_arg */
void lib_add_child(Library *l, LibNode *parent, LibNode *child);
void lib_arg(Library *l, LibNode *module, LibNode *value, const LibNode *symbol);
LibNode *lib_symbol(Library *l, const char *name, const char *shape); /* shape: "1s,0s" */
LibNode *lib_scalar(Library *l, const char *name, const char *shape, double v);
LibNode *lib_find(Library *l, const char *name); /* the latest node of that name; ICE if none */
const char *lib_name(const LibNode *n);
const char *lib_fmt(Library *l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* v as rust_circuit prints a Scalar: shortest round-trip decimal, no exponent. */
void lib_scalar_text(double v, char *buf, size_t cap);
void lib_check_unique_names(Library *l); /* ICE on a duplicate */
/* Prints the circuit rooted at n at indentation 0 (nodes printed before are references). */
void lib_print(FILE *f, LibNode *n);

/* ---- the specs (module_library.py) ---- */
/* The block's 16 weight symbols in rust_circuit's order (§7.6): attention
 * q, q bias, k, k bias, v, v bias, o, o bias, its layer norm's scale and bias,
 * then the MLP's in, in bias, out, out bias, its layer norm's scale and bias. */
enum { LIB_BLOCK_WEIGHTS = 16 };
typedef struct LibSymbol {
  const char *name;    /* the block's symbol; layer i's has i after the first component */
  const char *shape;   /* its symbolic shape */
} LibSymbol;
extern const LibSymbol LIB_BLOCK_WEIGHT[LIB_BLOCK_WEIGHTS];

/* Layer norm `ln` (§7.2, §9 E8) over ln.input with ln.w.{bias,scale}. */
LibNode *lib_ln_spec(Library *l, double eps);
/* `{p}.norm` (get_norm_bind): ln of the free `{p}.norm.input` with `{p}.ln.w.*`. */
LibNode *lib_norm_bind(Library *l, LibNode *ln, const char *p);
/* Attention `a.p_bias` (§7.2): one head `a.head`, `a.head.on_inp`, `a.heads`
 * batching it over heads, `a` summing them. Free: a.input, a.mask, a.w.*. */
LibNode *lib_attn_spec(Library *l);
/* Pointwise MLP `m.p_bias` with activation `act` (a GeneralFunction). Free: m.input, m.w.*. */
LibNode *lib_mlp_spec(Library *l, const char *act);
/* `{p}.norm_call`: body (free `{p}.input`) applied to `{p}.norm`. */
LibNode *lib_norm_call(Library *l, LibNode *ln, const char *p, LibNode *body);
/* The block `b` (pre-norm, sequential residual). Free: b.input, a.mask, the block's weights. */
LibNode *lib_block_spec(Library *l, LibNode *ln, const char *act);
#endif
