/* circc.h — table of contents: every stage's entry point, in pipeline order
 * (driver.h runs them). Each stage knows nothing of the stages after it
 * (design.md §1–2). */
#ifndef CIRCC_H
#define CIRCC_H
#include "comp.h"
#include "ir.h"
#include "tensor.h"

/* The front end, in order: load_source → model_library → parse_text →
 * load_tensors, then resolve_program (which runs module substitution and
 * sizes). model_library builds rust_circuit's module library for a model file
 * as circuit text (with library.h), parsed as reference circuits. */

/* load.c — the front end's I/O. load_source reads a circuit file and registers
 * its text for diagnostics (DIAG_IO error if unreadable; NULL then).
 * load_tensors fills every Array and index tensor reachable from roots that the
 * parser left unloaded: from the tensor store, or N(0,1) from the RNG draws the
 * parser reserved (so the values are those of the file order), checks them
 * against the declared shapes and re-derives the nodes above them in place.
 * false after diag_error (located at the hash prefix or declared shape). */
SourceFile *load_source(Comp *c, const char *path);
/* Reads a whole text file (malloc'd, NUL-terminated, *len bytes): regular
 * files only (a device, FIFO, socket or directory is a DIAG_IO error that
 * names `what`, and never blocks or reads forever), at most MAX_TEXT_FILE. */
#define MAX_TEXT_FILE ((int64_t)1 << 30)
bool load_text_file(Comp *c, const char *path, const char *what, char **text, size_t *len);
bool load_tensors(Comp *c, Node *const *roots, int n);
/* An Array named by --stream (c->streamed): load_tensors leaves it unloaded
 * (dtype float32 until the rv stage decides), the program reads its rows. */
bool load_is_streamed(const Comp *c, const Node *n);

/* parse.c — text (rust_circuit_format.md §1–2) → DAG, without I/O: Arrays
 * record their hash prefix (or `rand`) and declared shape, index tensors their
 * prefix and length; load_tensors fills the tensors. `refs` (may be NULL) are
 * reference circuits (rust_circuit's Parser(reference_circuits=…)): the text
 * may mention them by bare quoted name without defining them; a line naming one
 * takes no other information and no children. Appends top-level circuits to
 * `out` in file order (a repeated reference at top level is appended again).
 * Returns false if any error was reported; `out` then holds what parsed.
 * `text` is registered for diagnostics unless it is a loaded source's. */
typedef struct RefCircuits {
  const char **name;
  Node **node;
  int n;
} RefCircuits;
bool parse_text(Comp *c, const char *filename, const char *text, size_t len, const RefCircuits *refs,
                NodeList *out);

/* model_file.c — the library stage (model_files.md): a file whose first line
 * is `# info:{json}` (rust_circuit's TransformerInfo) refers to the circuits
 * module_library builds from those params. model_library reads the params
 * (rust_circuit's defaults for absent members), builds that library as text
 * (--dump library) and parses it into `refs` for parse_text: its top-level
 * circuits by name, the first of a name kept. A file without the line has no
 * library (present false, true returned). Malformed JSON, a wrong type, an
 * unknown option value, use_rope (circc cannot build it) or a combination
 * module_library rejects is a located error; false then. model_library_check: Symbols the
 * file restates (the per-layer weights after `!`) must equal the library's of
 * that name in UUID and shape; located errors, false. model_info_print prints
 * --info-model: the info, every param, the sizes the file's Arrays give and
 * the free symbols of t.bind_w; an error if the file has no library. */
typedef struct ModelParams {
  const char *norm_type;       /* "ln", "bn", NULL (None: no norms) */
  bool attn_bias, attn_pos, use_mlp;
  const char *mlp_act_type;    /* gelu, gelu_new, relu, bilinear */
  bool mlp_output_bias, use_parallel_residual, use_rope;
  int num_layers;
  bool use_norm_output, output_bias;
  const char *model_class;     /* picks the tokenizer only */
  const char *pos_enc_type;    /* gpt, shortformer, none, NULL: the binding only */
  int causal_mask;             /* 1, 0, -1 (null): the binding only */
} ModelParams;
typedef struct ModelLibrary {
  bool present;                /* the file begins with `# info:` */
  ModelParams params;
  const char *text;            /* the library text */
  size_t len;
  RefCircuits refs;
  int first_file_node;         /* nodes with smaller ids are the library's */
} ModelLibrary;
bool model_library(Comp *c, const SourceFile *src, ModelLibrary *lib);
bool model_library_check(Comp *c, const ModelLibrary *lib, const NodeList *tops);
bool model_info_print(Comp *c, const SourceFile *src, const ModelLibrary *lib, const NodeList *tops, FILE *f);

/* bind_tokens.c — --bind-tokens, a step of the parse stage: the binding REMIX
 * writes by hand (model_files.md §5) around the model file's t.bind_w. Replaces
 * *tops (the file's parsed top-level circuits) by one circuit `logits` [SEQ, V]
 * whose only free Symbol is `tokens` [SEQ] (an index: int64): token embeddings
 * gen_index'ed from t.w.tok_embeds; rows 0..SEQ-1 of t.w.pos_embeds added to
 * them (pos_enc_type gpt) or bound to a.pos_input (shortformer), none for
 * none/null; a.mask a causal [SEQ,SEQ] mask (causal_mask true) or all ones.
 * SEQ comes from -D SEQ=N (c->defines). Located errors (false): not a model
 * file, a missing file circuit, SEQ unbound (usage) or beyond the positions. */
bool bind_tokens(Comp *c, const SourceFile *src, const ModelLibrary *lib, NodeList *tops);

/* ops.c — `circc --ops FILE.c` (README, "Custom functions"): the C
 * GeneralFunctions in the files, marked with include/circc_op.h, found and
 * checked with libclang before the circuit is parsed. ops_load parses every
 * file (Clang's diagnostics become circc's, located in the file), checks each
 * marked function's form and shape rule, rejects a name implemented twice or
 * built into circc, and warns of writes to global variables; on success it
 * sets c->ops = out, which the parser reads. false after diag_error.
 * user_op_missing reports a used GF_USER node without an implementation
 * (resolve). ops_program_file is the name file i gets in a program directory
 * (build.c writes it there, emit.c includes it into model.c). ops_function
 * (circc eval) is op's function, from the files compiled once by $CC into a
 * shared object; NULL after diag_error (DIAG_CC). */
bool ops_load(Comp *c, const char *const *files, int n, UserOps *out);
void user_op_missing(Comp *c, const Node *n);
const char *ops_program_file(Comp *c, int i);
typedef void (*UserOpFn)(void);
UserOpFn ops_function(Comp *c, const UserOp *op);
/* The runtime files (runtime/MANIFEST), embedded by cmake/embed.cmake: each
 * is written into the program directory and each .c is compiled (an `mpi`
 * file only for --mpi); include/circc_op.h is one of them. */
struct RuntimeFile {
  const char *name;
  const unsigned char *data;
  size_t len;
  bool mpi, lib;              /* only for --mpi; only for --emit lib */
};
extern const struct RuntimeFile circc_runtime_files[];
extern const size_t circc_runtime_nfiles;

/* dump.c — prints circuits in rust_circuit's bijection text format, parseable by parse_text. */
void dump_circuits(Comp *c, FILE *f, Node *const *nodes, int n);
/* An Einsum's spec as the format writes it (`ab,bc->ac`, or `fancy:` ids past the alphabet). */
void dump_einsum_spec(FILE *f, const Node *n);

/* modules.c — substitutes every Module (§5): vmap semantics via the expand
 * rules of §5.4, symbolic sizes resolved per module call (§5.5), lexical scoping.
 * Replaces each roots[i] by its module-free equivalent (shared subgraphs stay
 * shared). false after diag_error. */
bool modules_substitute_all(Comp *c, Node **roots, int n);
/* Substitutes symbolic sizes everywhere (map[k] = size of the k-th prime or -1),
 * giving free Symbols their concrete shapes: the substitution sizes_bind uses. */
bool modules_bind_sizes(Comp *c, Node **roots, int n, const int64_t *map);

/* sizes.c — the one owner of symbolic-size names (the library's HIDDEN = 0s,
 * SEQ = 1s, ...; rust_circuit_format.md §7.1), of -D NAME=N and of binding the
 * sizes left after module substitution. resolve_program calls, in order:
 * sizes_from_defines (c->defines → map[k] = size of the k-th symbolic size or
 * -1; DIAG_USAGE errors for unknown names and non-positive sizes), module
 * substitution, then sizes_bind (adds the sizes module calls pinned on free
 * symbols to map and substitutes every bound size in roots, in place).
 * size_name(k) is the library's name of the k-th size, NULL if it has none. */
const char *size_name(int k);
bool sizes_from_defines(Comp *c, int64_t *map);
/* circc eval --input NAME=@PATH: the array's shape gives the symbolic sizes of
 * the free Symbol NAME under roots, appended to c->defines as -D would (a -D or
 * an earlier input that says otherwise is a DIAG_IO error naming both). */
bool sizes_from_input(Comp *c, Node *const *roots, int n, const char *name, const char *path, const Shape *shape);
bool sizes_bind(Comp *c, Node **roots, int n, int64_t *map);

/* resolve.c — the concrete program: substitute modules, bind -D sizes, check
 * that no symbolic size remains, reject kinds that cannot be evaluated, and
 * collect the free Symbols that remain as named inputs. */
typedef struct Program {
  NodeList outputs;            /* resolved top-level circuits, in file order */
  const char **output_names;   /* output i's name (node name, or "output<i>") */
  NodeList inputs;             /* free Symbols, in first-use order */
  bool *input_is_index;        /* input i feeds a gen_index/explicit_index as the index: int64 */
  /* rv's passes: lowering picks every kernel independently of sizes that
   * scale with the sample count (the GEMM threshold, the one-row kernel), so
   * a sample's values are the same bits for any --sample-batch */
  bool batch_invariant;
  int ntaps;                   /* --tap: the last ntaps outputs are inner nodes, named by tap name */
  int npatches;                /* --patch: circc_patch nodes with gf.dim 0..npatches-1 */
  const char **patch_names;    /* patch k's tap name */
  Node **patch_nodes;          /* patch k's circc_patch node (as taps_apply made it) */
  int *patch_source;           /* the --patch pattern (index) that chose patch k */
} Program;
bool resolve_program(Comp *c, const NodeList *tops, Program *out);
/* positions.c — after resolve, for compiled programs: a table that a
 * language model's `pos` (decode circuit) or `positions` input indexes must
 * have a row for every position the program's length allows (T of kv_mask,
 * N of positions [.., N]). false after an error naming the table. */
bool positions_check(Comp *c, const Program *p);

/* taps.c — --tap and --patch: every named node a pattern matches (its name,
 * tap name or name path, or /REGEX/) becomes an extra output, or is wrapped
 * in circc_patch (its value unless a run-time value is given). Names and
 * patterns: the file comment. false after a diagnostic (a pattern that
 * matches nothing names the nearest names). */
bool taps_apply(Comp *c, Program *p, const char *const *taps, int ntaps, const char *const *patches, int npatches);

/* simplify.c — the rewrite rules of rust_circuit_format.md §6.1 that matter for
 * generated code, run to a fixpoint over the resolved program (in place on
 * roots). Each rule is a small named function; `fired` (may be NULL) counts how
 * often each rule fired, for --report. Values are unchanged (up to float
 * rounding of folded constants). false after diag_error. */
typedef struct SimplifyStats {
  int nrules;
  const char **rule_name;
  int *fired;
} SimplifyStats;
bool simplify_run(Comp *c, Node **roots, int n, SimplifyStats *fired);

/* plan_einsum.c — rewrites every Einsum with more than two operands into a tree
 * of binary Einsums along the cheapest contraction path found (bounded DP with a
 * greedy fallback; cost = multiply-adds + intermediate size, GEMM-shaped steps
 * preferred). `report` (may be NULL) receives one line per planned einsum. */
bool plan_einsums(Comp *c, Node **roots, int n, FILE *report);
/* 2 × multiply-adds of one Einsum: 2·∏(sizes of its distinct ids) for a binary
 * one (× (n−1) for n > 2 operands: the naive count); a unary one counts the same
 * if it sums an id out, else 0 (transpose / diagonal). */
double einsum_flops(const Node *n);

/* lower.c — resolved circuit → kernel graph (kernel.h): buffers, views, fused
 * elementwise expressions and steps in execution order; idioms (layernorm,
 * attention) as one step each. false after diag_error. */
struct Kernels;
bool lower_program(Comp *c, const Program *p, struct Kernels *k);
/* lower_gemm.c — --precision bf16 or int8: the float32 inputs
 * of a deterministic program that only GEMMs with a bf16-B kernel read (a
 * decode program's past keys and values) are stored as bf16 (Buf.stored_bf16;
 * the runtime rounds them as it loads them). Call after lower_program. */
void lower_bf16_inputs(Comp *c, struct Kernels *k);

/* fuse.c — GEMM epilogues: an elementwise step that alone reads a GEMM's
 * result runs inside that GEMM and leaves the program; steps are renumbered,
 * the total FLOPs unchanged. Runs after lower_program, before memplan_assign.
 * Cannot fail (true). */
bool fuse_epilogues(Comp *c, struct Kernels *k);

/* schedule.c — orders the steps into phases (Step.phase, Kernels.nphase):
 * steps of one phase do not depend on each other, except serial steps of one
 * group (Step.place), which one thread runs in order; the generated program
 * has one barrier per phase. Steps are sorted by phase and renumbered
 * (Buf.def_step follows). Runs after fuse_epilogues, before memplan_assign. */
void schedule_phases(struct Kernels *k);

/* memplan.c — liveness of temporary buffers (by phase: see schedule_phases)
 * and their offsets in one 64-byte-aligned arena (best fit); sets
 * k->arena_bytes. */
void memplan_assign(struct Kernels *k);

/* emit.c — writes the generated C program for the kernel graph: the model
 * source (every size a literal, OpenMP on outer loops, comments naming the
 * circuit nodes) and the weights blob. Byte-identical for identical input. */
typedef struct EmitOptions {
  const char *name;          /* program name */
  const char *command_line;  /* recorded in the header comment and --info */
  const char *source_hash;
  const char *vocab;         /* --vocab: character vocabulary for --sample, or NULL */
  const void *tokenizer;     /* --lm: the tokenizer table (tokenizer_build), linked as tokenizer.bin */
  size_t tokenizer_len;      /* 0: none */
  /* An expectation program (rv.c; NULL or not present: deterministic): its
   * passes are emitted beside the program, with the groups and cumulants the
   * runtime's expectation mode needs. */
  const struct Expectation *expect;
  const struct Kernels *pass_kernels; /* expect->npasses */
} EmitOptions;
bool emit_program(Comp *c, const struct Kernels *k, const EmitOptions *o, FILE *model_c, FILE *weights);

/* build.c — writes the sources to a directory and runs the C compiler:
 * `$CC -O3 -march=native -fopenmp` (--mpi: `$MPICC`, default mpicc, with
 * -DCIRCC_MPI). The executable appears atomically at `output` (--emit lib: the
 * library and its header, `output` with its extension replaced by .h); on
 * failure prints the command and its stderr (exit 4; also when --mpi finds no
 * mpicc). */
typedef struct BuildOptions {
  const char *output;        /* executable path (or directory for --emit c) */
  bool emit_c_only;          /* --emit c: write sources + Makefile, do not compile */
  bool emit_lib;             /* --emit lib: a shared library (output) and its header (runtime/circc_lib.h) */
  const char *cc;            /* NULL: $CC, else gcc */
  const char *cflags;        /* extra flags */
  const char *opt;           /* -O level, default -O3 */
  bool native;               /* -march=native (default) vs portable */
  bool keep_temps;           /* --save-temps */
  bool mpi;                  /* --mpi: an expectation program built with $MPICC (default mpicc) and the MPI runtime */
} BuildOptions;
bool build_program(Comp *c, const struct Kernels *k, const EmitOptions *eo, const BuildOptions *bo);

/* tokenizer.c — the tokenizer table of text programs, in the binary format
 * runtime/rt_bpe.c reads in place. spec is `gpt2-bpe:DIR` (DIR holds GPT-2's
 * encoder.json and vocab.bpe) or `chars:FILE.json` (a character vocabulary: a
 * list of one-character strings, a string, or {"chars": either}; id = index).
 * *blob (in c->arena) and *len are set on success; identical input gives
 * identical bytes. false after diag_error (DIAG_IO: unreadable or malformed
 * files; DIAG_USAGE: unknown spec). */
bool tokenizer_build(Comp *c, const char *spec, void **blob, size_t *len);
/* Whether a program of kernels k can use --lm's table blob (as rt_generate.c
 * drives it): a decode circuit (inputs token, pos, kv_mask, past_k, past_v;
 * outputs logits [V], new_k, new_v) or a full-sequence one (only tokens [T]
 * int64 -> logits [T,V]), whose V is the tokenizer's vocabulary size n, or n
 * padded to a multiple of 64 or 128. false after an error naming spec. */
bool tokenizer_check_model(Comp *c, const char *spec, const void *blob, const struct Kernels *k);
/* Whether --vocab CHARS fits k as rt_sample.c needs: at least two characters,
 * an int64 context input [B] or [B,C], a float32 output whose last dim is
 * strlen(vocab). false after an error. */
bool vocab_check_model(Comp *c, const char *vocab, const struct Kernels *k);

/* rv.c — the rv stage (design.md §1, random_variables.md §4.2): between
 * resolve and simplify, the one place that knows about random variables.
 * rv_groups finds the DiscreteVars under roots and groups them (one group per
 * structurally distinct probs_and_group node, numbered by first appearance in
 * a pre-order walk), evaluating and checking each group's probabilities
 * (finite, >= 0, positive sum) and that values and probabilities are
 * constants; located errors, false. rv_lower turns a program with
 * DiscreteVars into an expectation program: batch circuits ("passes") that
 * compute the arguments of every estimated Cumulant for `batch` samples at a
 * time from per-group row-index inputs, and the post circuit (which replaces
 * *p) that computes the outputs from the estimates. Values Arrays named by
 * --stream (c->streamed) become inputs of the passes (x->data). A program
 * without DiscreteVars is untouched (x->present false). */
typedef struct RvGroup {
  Node *node;                  /* the probs_and_group child (the first one met) */
  const char *name;            /* its name, NULL if none */
  int64_t size;                /* S */
  double *probs;               /* S probabilities as written */
  bool uniform;                /* all bitwise equal */
  bool tagged;                 /* node is a Tag: key from its UUID */
  uint64_t key;                /* random_variables.md §4.4 key (structural hash when untagged) */
  NodeList vars;               /* its DiscreteVars, in walk order */
} RvGroup;
typedef struct RvGroups {
  int n, cap;
  RvGroup *g;
} RvGroups;
typedef struct RvCumulant {
  const Node *node;            /* the Cumulant of the resolved program */
  const char *name;            /* its name, or cumulant<i> */
  int order;
  int pass;                    /* the pass computing its arguments */
  int *arg;                    /* order indices into that pass's outputs (repeats share one) */
} RvCumulant;
typedef struct RvPass {
  Program program;             /* outputs [batch, arg shape]; inputs: rows (int64 [batch]), estimates, data */
  int *input_group, *input_cumulant, *input_data; /* per input: its group, cumulant or data; the others -1 */
} RvPass;
typedef struct RvData {        /* --stream: a DiscreteVar's values the program reads at run time */
  const Node *array;           /* the Array (unloaded) */
  Node *symbol;                /* the pass input that stands for it */
} RvData;
typedef struct Expectation {
  bool present;                /* the program has DiscreteVars */
  int batch;                   /* samples per run of a pass */
  RvGroups groups;
  int npasses;
  RvPass *pass;
  int ncumulants;
  RvCumulant *cumulant;        /* ordered by pass */
  int ndata;
  RvData *data;                /* streamed values, in order of first use */
  int *post_input_group, *post_input_cumulant, *post_input_data; /* per input of the post circuit */
} Expectation;
bool rv_groups(Comp *c, Node *const *roots, int n, RvGroups *out);
int rv_group_of(const RvGroups *g, const Node *var);
uint64_t rv_uuid_key(const char *uuid);
bool rv_lower(Comp *c, Program *p, int batch, Expectation *x);

/* eval.c — the reference evaluator (§4): simple, obviously correct, double
 * precision everywhere. The oracle every optimisation is tested against. */
typedef struct Eval Eval;
Eval *eval_new(Comp *c);
/* The value of a free Symbol, or of a circc_patch node (--patch: else the node's own). */
void eval_bind(Eval *e, const Node *symbol, const Tensor *value);
/* The value of n as a DT_F64 tensor of shape n->shape, memoised per node.
 * NULL after diag_error (unbound Symbol, non-evaluable kind, index out of range). */
Tensor *eval_node(Eval *e, const Node *n);
/* Exact expectations (random_variables.md §2.3–2.6; circc eval --all): from
 * now on a Cumulant whose arguments reach DiscreteVars (outside nested
 * Cumulants) is the joint cumulant of its arguments over every combination of
 * rows of the groups they use (row-major, groups in rv_groups' order, the
 * first slowest), weighted by Π p_g[i_g] / Π Σ p_g; rows of probability 0 are
 * skipped. `groups` is rv_groups' result for circuits containing every node
 * evaluated (it must outlive e). Located errors: a value reaching a
 * DiscreteVar outside any Cumulant (eval_node's node is "random"), more than
 * max_combinations (> 0) combinations, order above 12. */
void eval_expectations(Eval *e, const RvGroups *groups, int64_t max_combinations);
void eval_free(Eval *e);

/* Across stages (the driver calls them between stages; driver.h runs the pipeline). */

/* dump.c — also the kernel graph as a readable listing (--dump lower|fuse|memplan and
 * --report): one line per step with its kind, node, shape, output buffer and the
 * buffers it reads. `planned`: arena offsets are known (after memplan). */
void dump_kernels(Comp *c, FILE *f, const struct Kernels *k, bool planned);

/* verify.c — IR invariants, checked between stages by --verify-each. A broken
 * invariant is an internal error (exit 70) naming the stage after which it broke.
 * Circuits: no NULL or cyclic child reference, every node's shape, dtype and hash
 * what ir_make computes from its children and parameters, Arrays loaded
 * (`tensors_loaded`) with their declared shape. Kernels: every view inside its
 * buffer, temporaries written before they are read, inputs/outputs complete;
 * `planned`: every temporary has an aligned arena slot inside the arena, and no
 * two temporaries that are live at the same step overlap. */
bool verify_circuits(Comp *c, Node *const *roots, int n, bool tensors_loaded, const char *stage);
bool verify_kernels(Comp *c, const struct Kernels *k, bool planned, const char *stage);
#endif
