/* driver.h — the pipeline (design.md §1): every stage in order, one call each,
 * with --dump after any stage and --verify-each between stages. main.c and every
 * test that runs more than one stage go through driver_run, so tests run the
 * pipeline users run. */
#ifndef CIRCC_DRIVER_H
#define CIRCC_DRIVER_H
#include "circc.h"
#include "kernel.h"

/* The stages, in pipeline order. */
typedef enum Stage {
  STAGE_LOAD,     /* read the circuit text */
  STAGE_LIBRARY,  /* a model file's `# info:` → rust_circuit's module library (reference circuits) */
  STAGE_PARSE,    /* text → DAG */
  STAGE_TENSORS,  /* fill Arrays from the tensor store (or random) */
  STAGE_RESOLVE,  /* substitute modules, bind sizes, check shapes, collect inputs */
  STAGE_RV,       /* random variables → batch circuits (passes) + post circuit */
  STAGE_SIMPLIFY, /* rewrite rules, CSE, constant folding */
  STAGE_PLAN,     /* einsum contraction order */
  STAGE_LOWER,    /* DAG → kernel graph (core lowering and the idioms) */
  STAGE_FUSE,     /* GEMM epilogues */
  STAGE_SCHEDULE, /* steps into phases (one barrier each) */
  STAGE_MEMPLAN,  /* arena offsets */
  STAGE_EMIT,     /* C program and weights; with BuildOptions.output also the build */
  STAGE_COUNT
} Stage;
const char *stage_name(Stage s);
int stage_from_name(const char *name); /* -1 if unknown */

/* `circc eval`'s NAME=@FILE.npy bindings. */
typedef struct Binding {
  const char *name, *path;
} Binding;

typedef struct DriverOptions {
  const char *path;             /* circuit file, or NULL: */
  const char *text;             /* ... the circuit text itself (tests), named text_name */
  size_t text_len;
  const char *text_name;
  const char *const *outputs;   /* keep only these top-level circuits (NULL/0: all) */
  int noutputs;
  const char *const *taps;      /* --tap PATTERN: matching inner nodes become extra outputs */
  int ntaps;
  const char *const *patches;   /* --patch PATTERN: matching nodes take an optional run-time value */
  int npatches;
  const char *const *ops_files; /* --ops FILE.c: C GeneralFunctions (ops.c), read with the source */
  int nops_files;
  bool bind_tokens;             /* --bind-tokens: parse ends with bind_tokens (tokens → logits) */
  Stage last;                   /* run up to and including this stage */
  unsigned dump;                /* bit 1u << s: print the IR after stage s */
  FILE *dump_to;                /* stdout if NULL */
  bool verify_each;             /* check IR invariants after every stage (verify.c) */
  bool verbose;                 /* -v: each stage's time on stderr (progress.h) */
  int sample_batch;             /* --sample-batch: samples per run of an expectation program's passes (0: the
                                   largest power of two up to 32 whose passes' arenas fit in 1 GiB) */
  FILE *report;                 /* --report: simplifications, contraction paths, steps (NULL: none) */
  /* STAGE_EMIT */
  EmitOptions emit;             /* name and command line; source hash and tokenizer filled by the driver */
  const char *lm;               /* --lm spec: tokenizer table linked into the program */
  BuildOptions build;           /* build.output NULL: emit only (for --dump emit) */
  /* `circc eval`: after resolve, evaluate instead of compiling */
  bool evaluate;
  const Binding *eval_inputs, *eval_outputs, *eval_patches; /* eval_patches: --patch NAME=@FILE.npy */
  int neval_inputs, neval_outputs, neval_patches;
  bool eval_print;              /* print every output's values */
  bool eval_all;                /* --all: exact expectations of Cumulants over DiscreteVars */
  int64_t eval_max_all;         /* --max-all: most combinations of rows per Cumulant (0: 10^6) */
} DriverOptions;

/* What the stages produced so far. Zero-initialise; driver_run continues from
 * `next`, so a test may stop after a stage, look (or keep a copy), and go on. */
typedef struct Compilation {
  Stage next;                   /* the first stage not yet run (STAGE_LOAD when zeroed) */
  const SourceFile *source;     /* after load */
  UserOps ops;                  /* after load: the --ops functions (c->ops points here) */
  ModelLibrary library;         /* after library (present false: not a model file) */
  NodeList tops;                /* parsed top-level circuits (those chosen by `outputs`) */
  Program program;              /* after resolve: outputs are rewritten in place by later DAG stages;
                                   after rv, an expectation program's post circuit */
  Expectation expect;           /* after rv: groups, cumulants and passes (present false: deterministic) */
  Program resolved;             /* the program as resolve left it (rv may run again with a smaller batch) */
  int sample_batch;             /* the batch rv used */
  SimplifyStats simplify;
  Kernels kernels;              /* the program's */
  Kernels *pass_kernels;        /* expect.npasses: each pass's */
  Tensor **eval_values;         /* circc eval: the --input arrays, read before resolve (their shapes bind sizes) */
} Compilation;

/* Runs the stages from cm->next up to o->last. false after a diagnostic
 * (diag_exit_code tells the class); stages after a failed one do not run. */
bool driver_run(Comp *c, const DriverOptions *o, Compilation *cm);

/* circc store: writes each .npy into the tensor store under its rust_circuit
 * hash and prints `hash  file`. false after a diagnostic. */
bool driver_store(Comp *c, const char *const *files, int n);

#endif
