/* randcirc.h — a seeded generator of random, valid rust_circuit circuits as
 * TEXT (rust_circuit_format.md §2), for differential tests: the same seed
 * always gives the same text, so a failing circuit can be printed and replayed.
 * Every node name starts with the given prefix, so circuits generated with
 * distinct prefixes can be concatenated into one file (one program). */
#ifndef CIRCC_RANDCIRC_H
#define CIRCC_RANDCIRC_H
#include <stdbool.h>
#include <stdint.h>

/* Float input Symbols are meant to be fed values in [-RANDCIRC_INPUT_BOUND,
 * RANDCIRC_INPUT_BOUND]; the generator's value bounds (which decide where exp,
 * log, rsqrt, ... are safe) assume that. Index Symbols (int64) feed only
 * gen_index_at_* nodes directly, so their valid range follows from the circuit. */
#define RANDCIRC_INPUT_BOUND 2.0
#define RANDCIRC_MAX_OUTPUTS 3

typedef struct RandCirc {
  char *text;                              /* malloc'd; top-level lines of every output */
  int noutputs;                            /* 1..3 */
  char output[RANDCIRC_MAX_OUTPUTS][64];   /* names of the top-level circuits */
  int nnodes;                              /* nodes generated (8..20, leaves included) */
} RandCirc;

/* Generates one circuit from `seed`; every name starts with `prefix` (e.g. "r17.").
 * Axes have sizes 1..5, or with `large` sizes up to 96 (nodes up to 200000
 * elements), so that steps are big enough to run on several threads. */
void randcirc_generate(uint64_t seed, const char *prefix, bool large, RandCirc *out);
void randcirc_free(RandCirc *r);
#endif
