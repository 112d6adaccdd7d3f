/* ir.h — the circuit IR: a DAG of immutable nodes (rust_circuit_format.md §0).
 *
 * A Node is a tagged struct: common header + per-kind union field named after
 * the kind. Nodes are built only by ir_make(), which validates parameters
 * against the children, computes shape, dtype and structural hash, and reports
 * problems through diag_error at the node's Loc (returning NULL). Rewrites
 * build new nodes and never edit old ones. All memory is in the Comp's arena.
 *
 * Sizes are int64. Symbolic sizes are the 256 primes above 10000 (§2.4,
 * "the prime trick"): shape arithmetic treats them as ordinary integers and
 * module substitution replaces them by real sizes. */
#ifndef CIRCC_IR_H
#define CIRCC_IR_H
#include <stdbool.h>
#include <stdint.h>
#include "comp.h"
#include "tensor.h"

typedef enum NodeKind {
#define KIND(name) NK_##name,
#include "nodes.def"
#undef KIND
  NK_COUNT
} NodeKind;

typedef enum GenFnKind {
#define GENFN(e, spec, cls) GF_##e,
#include "genfns.def"
#undef GENFN
  GF_COUNT
} GenFnKind;

typedef enum GenFnClass { GF_ELEMENTWISE, GF_LAST_AXIS, GF_REDUCE_LAST, GF_SPECIAL } GenFnClass;

/* ---- symbolic sizes ---- */
#define NUM_SYMBOLIC_SIZES 256
int64_t symbolic_prime(int k);            /* k-th symbolic size: 0 -> 10007, 255 -> 12437 */
bool size_is_symbolic(int64_t v);         /* v has a symbolic prime factor */
/* Prints a size as rust_circuit does: 768, 0s, 2*1s, 0s*1s. Returns buf. */
char *size_format(int64_t v, char *buf, size_t cap);
/* A module call's symbolic-size map: map[k] = real size of the k-th prime, -1 unbound.
 * ir_bind_symbolic solves `sym` (c * p1 * p2 ...) = actual for its one unbound prime,
 * false on conflict; ir_apply_size_map substitutes the bound primes of v. */
bool ir_bind_symbolic(int64_t sym, int64_t actual, int64_t *map);
int64_t ir_apply_size_map(int64_t v, const int64_t *map);

/* ---- per-kind parameters ---- */

/* Einsum: child i has axis ids in[i][0..in_rank[i]), output ids out[0..out_rank).
 * Ids are small non-negative ints (the alphabet a..z A..Z α..ψ maps to 0..75). */
typedef struct EinsumSpec {
  int **in;
  int *in_rank;
  int *out;
  int out_rank;
} EinsumSpec;

/* Rearrange (einops repeat): each side is a list of axes, each axis a group of ids
 * (an empty group is `()`). size[id] is the id's size or -1 if it must be
 * inferred from the child. ir_make stores the spec conformed to the child (all sizes known). */
typedef struct RearrangeSpec {
  int nin, nout;
  int *in_len, *out_len;
  int **in_ids, **out_ids;
  int nids;
  int64_t *size;             /* conformed sizes (after ir_make) */
  int64_t *written_size;     /* sizes as written, -1 = inferred; set by ir_make, used to re-conform */
} RearrangeSpec;

typedef enum IndexEntryKind { IDX_INT, IDX_SLICE, IDX_TENSOR } IndexEntryKind;
typedef struct IndexEntry {
  IndexEntryKind kind;
  int64_t i;                 /* IDX_INT; negative counts from the end */
  bool has_start, has_stop;  /* IDX_SLICE; absent bound = 0 / end */
  int64_t start, stop;       /* may be negative (from the end) */
  Tensor *tensor;            /* IDX_TENSOR: 1-D int64; NULL until load_tensors fills it */
  const char *prefix;        /* IDX_TENSOR: hash prefix as written (t<hex>) */
  int64_t len;               /* IDX_TENSOR: length as written ([len]), the entry's size until loaded */
  Loc loc;                   /* IDX_TENSOR: where t<hex> is written, for load errors */
} IndexEntry;

typedef struct IndexSpec {   /* Index and Scatter */
  int n;                     /* entries as written; missing trailing entries mean ':' */
  IndexEntry *e;
} IndexSpec;

/* A C implementation of a GeneralFunction given by `circc --ops FILE.c`
 * (compiler/front/ops.c finds and checks them; include/circc_op.h marks them).
 * The form is the function's signature: */
typedef enum UserOpForm {
  OP_UNARY,    /* float f(float): elementwise */
  OP_BINARY,   /* float f(float, float): elementwise over two children broadcast like pow */
  OP_ROW,      /* void f(const float *x, float *y, int64_t n): per row of the last axis, shape kept */
  OP_GENERAL,  /* void f(const float *const *in, const int64_t *const *shapes, int n_in, float *out): whole
                  tensors; the output shape from the marker's shape rule */
} UserOpForm;
/* The shape rule of an OP_GENERAL function: `inK` (rank -1: child K's shape)
 * or a list of sizes, each child in[d]'s size on axis[d] (negative: from the
 * end) or, when in[d] is -1, the number size[d]. */
typedef struct UserShapeRule {
  int rank;                  /* -1: the shape of child in[0] */
  int in[MAX_RANK], axis[MAX_RANK];
  int64_t size[MAX_RANK];
  int nin;                   /* the children it needs: 1 + the largest child index it names */
} UserShapeRule;
typedef struct UserOp {
  const char *name;          /* the GeneralFunction name it implements (before ` at ` for a Python class) */
  const char *function;      /* the C function */
  UserOpForm form;
  UserShapeRule shape;       /* OP_GENERAL */
  const char *rule_text;     /* OP_GENERAL: the rule as written */
  int file;                  /* index into UserOps.files */
  Loc loc;                   /* the function's name in its file */
} UserOp;
typedef struct UserOps {
  const char **files;        /* --ops files, in command-line order */
  int nfiles;
  UserOp *op;
  int nops;
  void *dl;                  /* circc eval: the files compiled to a shared object (ops_function) */
  bool dl_failed;            /* ... which could not be built (reported once) */
} UserOps;
/* The op implementing GeneralFunction `name` (a simple name, or the name part of
 * `NAME at module:Class`), NULL if none; ops may be NULL. */
const UserOp *user_op_find(const UserOps *ops, const char *name, size_t len);

typedef struct GenFnSpec {
  GenFnKind fn;
  const char *text;          /* the spec string as written */
  int dim;                   /* gen_index / explicit_index axis (may be negative) */
  bool batch_x, batch_index, check_int; /* gen_index flags: _batch_x, !_no_batch_index, _c */
  int non_b;                 /* explicit_index: number of non-batch dims of x */
  DType cast_from, cast_to;  /* cast: DT_UNKNOWN for None */
  int user_name_len;         /* GF_USER: the name is text[0..user_name_len) (all of it, or the part before ` at `) */
  bool python;               /* GF_USER: a Python class spec (`NAME at module:Class`) */
  const UserOp *user;        /* GF_USER: its --ops implementation (the parser sets it), NULL if none */
} GenFnSpec;

typedef struct ModuleArg {
  struct Node *symbol;       /* the Symbol this argument binds (child i+1 is the value) */
  bool batchable, expandable, ban_non_symbolic_size_expand; /* §5.3; default all true */
  Loc loc;                   /* location of the `!` binding */
} ModuleArg;

typedef struct Node Node;
struct Node {
  NodeKind kind;
  int id;                    /* creation order, unique within a Comp */
  Loc loc;                   /* where the node was defined (or the node it was derived from) */
  const char *name;          /* NULL = unnamed (distinct from "") */
  /* The name path of a named node that module substitution rebuilt: the names
   * of the Module calls it was substituted through, outermost first, then its
   * name, '/'-separated (b0.call/b0/a.attn_probs); NULL = just its name. Not
   * part of the hash: --tap and --patch read it (taps.c). */
  const char *path;
  bool autoname_disabled;    /* ` AD` */
  Shape shape;               /* computed (leaves: declared) */
  DType dtype;               /* Array: its tensor's; Scalar: DT_F64 ("weak"); Symbol: DT_UNKNOWN; ops: first non-f64 child dtype */
  int nchild;
  Node **child;
  uint64_t hash;             /* structural hash: kind, params, children hashes, name */
  union {
    EinsumSpec einsum;
    /* The parser records where an Array's tensor comes from and load_tensors
     * (load.c) fills `tensor`; until then shape is the declared one, dtype float32. */
    struct {
      Tensor *tensor;
      const char *hash_prefix;   /* store key as written; NULL for rand */
      bool random;               /* `rand` or tensors_as_random: N(0,1) float32 */
      uint64_t rng_seed;         /* random: the Comp's RNG state where the parser met it (file order) */
      Loc prefix_loc, shape_loc; /* where the prefix and the declared shape are written */
      const char *label;         /* the identifier as written, for load errors */
    } array;
    struct { char uuid[37]; } symbol;       /* lowercase hyphenated; "" = nil uuid */
    struct { double value; } scalar;
    RearrangeSpec rearrange;
    IndexSpec index;                        /* Index and Scatter */
    GenFnSpec gf;
    struct { int axis; } concat;            /* normalised to [0, rank) */
    struct { ModuleArg *arg; } module;      /* nchild - 1 args; child[0] is the spec */
    struct { char uuid[37]; } tag;
    struct { int *orders; int norders; char uuid[37]; } stored_cumulant;
  } u;
};

typedef struct NodeList {
  int n, cap;
  Node **node;
} NodeList;
void nodelist_push(Comp *c, NodeList *l, Node *n);

/* Builds a node from a prototype: proto->kind, loc, name, autoname_disabled,
 * child/nchild and the kind's union field must be set; proto->shape is used as
 * the declared shape for kinds that need one (Scalar, Symbol, Scatter,
 * SetSymbolicShape, and Array without a tensor) and ignored otherwise.
 * Validates everything §2.5 and §4 require, computes shape/dtype/hash.
 * Returns NULL after diag_error() if invalid, or if any child is NULL (then silently:
 * the child's error was already reported). Arrays and index tensors not yet
 * loaded count with their declared shape / length. */
Node *ir_make(Comp *c, const Node *proto);
/* Re-derives n's shape, dtype and hash in place (same id, same address) after
 * load_tensors filled its tensors or its children's: the one sanctioned edit of
 * a built node, made before any later stage sees it. false after diag_error. */
bool ir_remake(Comp *c, Node *n);

/* A copy of n with new children (same params), re-validated: used by rewrites. */
Node *ir_with_children(Comp *c, const Node *n, Node **child, int nchild);

const char *kind_name(NodeKind k);        /* "Einsum", ... */
int kind_from_name(const char *s, size_t len); /* -1 if not one of the 17 */
const char *genfn_name(GenFnKind f);
GenFnClass genfn_class(GenFnKind f);
/* Parses a GeneralFunction spec string (§2.5.4). false if unknown (no
 * diagnostic). A Python class spec and a simple name circc does not know
 * (letters, digits, `_`) are GF_USER (user_name_len set, user NULL). */
bool genfn_parse(const char *text, GenFnSpec *out);

/* Normalised bounds of index entry `axis` of an Index/Scatter node against a dim
 * of size len: IDX_INT → [i, i+1); IDX_SLICE → [start, stop); false if out of range. */
bool index_entry_bounds(const IndexEntry *e, int64_t len, int64_t *start, int64_t *stop);

/* ---- walking a circuit ----
 * ir_walk makes the walk of the recursive post-order
 *   bool walk(n) { if (!enter(n, arg)) return true;
 *                  for (int i = 0; i < n->nchild; i++) if (!walk(n->child[i])) return false;
 *                  return leave(n, arg); }
 * from root (the same calls in the same order) with its stack on the heap, so
 * no stage's C stack grows with the depth of the circuit. enter says whether to
 * walk n (false: it is done already, e.g. in the stage's memo, or enter did all
 * of it); leave (NULL: none) computes n after its children were walked, and
 * false from it stops the walk: ir_walk returns false. Callbacks may call
 * ir_walk again (a nested walk has its own stack). */
typedef bool IrVisit(Node *n, void *arg);
bool ir_walk(const Node *root, IrVisit *enter, IrVisit *leave, void *arg);

/* The number of nodes on the longest path from a root down to a leaf (the
 * roots' depth); *deepest is the root or node where it starts. The driver
 * refuses circuits deeper than IR_MAX_DEPTH after parse and after module
 * substitution: every stage walks them without recursion (ir_walk), so the
 * limit is about time and memory, not the stack. */
int64_t ir_depth(Comp *c, Node *const *roots, int n, const Node **deepest);
#define IR_MAX_DEPTH 200000 /* a 2*10^5-deep chain compiles in seconds (tests/unit/test_deep.c) */

/* A short, human-readable description for diagnostics: 'name' or `Kind #id`. */
const char *node_label(Comp *c, const Node *n);
/* Shape as rust_circuit prints it: [2,0s,3]. Arena string. */
const char *shape_str(Comp *c, const Shape *s);

/* One symbol may be written twice (§5.1): uuid and name identify it
 * (symbol_same_id); symbol_same also requires the same shape. */
bool symbol_same_id(const Node *a, const Node *b);
bool symbol_same(const Node *a, const Node *b);

/* Many Symbols by name in O(n log n), not O(n^2): ir_order_by_name gives the
 * positions of a[0..n) sorted by name (unnamed first), ties by position
 * (malloc'd); ir_find_name the first of them named name, or -1. */
int *ir_order_by_name(Node *const *a, int n);
int ir_find_name(Node *const *a, const int *order, int n, const char *name);

/* Symbols bound by a Module node: arg i binds u.module.arg[i].symbol to child[i+1]. */
static inline int module_nargs(const Node *m) { return m->nchild - 1; }
#endif
