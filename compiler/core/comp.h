/* comp.h — the compilation context: owns the IR arena, the diagnostics state
 * and the options every stage reads. One Comp per circc run (or per test). */
#ifndef CIRCC_COMP_H
#define CIRCC_COMP_H
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include "arena.h"
#include "diag.h"

/* --precision: fp32 (the default: every value fp32), bf16 (weights that are
 * a GEMM operand stored as bf16 and the GEMM's other operand rounded to bf16
 * as it is packed; accumulation and everything else fp32) or int8 (those
 * weights quantised to int8 with one fp16 scale per 32; everything else fp32). */
typedef enum Precision { PRECISION_FP32, PRECISION_BF16, PRECISION_INT8 } Precision;

typedef struct SourceFile {
  const char *name;
  const char *text;
  size_t len;
} SourceFile;

/* -D NAME=N: binds a symbolic size. NAME is either `Ks` (e.g. 1s) or one of
 * the library's size names (HIDDEN, SEQ, ...); sizes.c checks and applies it. */
typedef struct SizeDefine {
  const char *name;
  int64_t value;
} SizeDefine;

struct Comp {
  Arena arena;                 /* IR nodes, shapes, strings */
  FILE *err;                   /* diagnostics stream (stderr unless a test redirects it) */
  bool color;
  int nerrors, nwarnings;
  int worst_class;             /* DiagClass of the worst error so far, 0 if none */
  int max_errors;              /* stop printing after this many (0 = unlimited) */
  int muted;                   /* > 0: diagnostics are neither printed nor counted (verify.c re-derives nodes) */
  SourceFile *sources;
  int nsources, cap_sources;

  /* options */
  const char *tensor_dir;      /* store root; NULL = $TENSORS_CACHE_DIR or ~/tensors_by_hash_cache */
  bool tensors_as_random;      /* every Array becomes N(0,1) of its declared shape (rust_circuit's tensors_as_random) */
  uint64_t rng_state;          /* for `Array rand`, tensors_as_random and `Symbol rand`; seeded deterministically */
  bool check_all_inputs_used;  /* module args must occur free in the spec (parser default: true) */
  const char *const *streamed; /* --stream: Arrays of these names are a DiscreteVar's rows that the program */
  int nstreamed;               /* reads at run time (--data): never loaded, never linked in */
  SizeDefine *defines;
  int ndefines;
  struct UserOps *ops;         /* --ops: the C GeneralFunctions (ops.c), NULL if none */
  Precision precision;         /* --precision: how compiled programs store GEMM weights (lower_gemm.c, emit.c) */
  int next_node_id;
  struct Tensor *tensors;       /* every tensor loaded/created, released by comp_free */
};

void comp_init(Comp *c);       /* defaults: stderr, check_all_inputs_used, seed 0x5eed */
void comp_free(Comp *c);       /* frees the arena and every loaded tensor mapping */
/* The Comp's random numbers (rng_state): splitmix64 draws; comp_rng_normal is N(0,1) by
 * Box–Muller from exactly two draws, so a consumer can reserve n normals with
 * comp_rng_skip(state, 2n) now and draw them later from a copy of the state. */
uint64_t comp_rng_u64(uint64_t *state);
void comp_rng_skip(uint64_t *state, uint64_t draws);
double comp_rng_normal(uint64_t *state);
#endif
