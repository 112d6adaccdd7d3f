/* scrub_gen.h — the causal-scrubbing pattern of issue 13 for the tests that
 * run it (test_scrub, test_mpi): a generated rust_circuit model file
 * (model_gen.c: ln, attention, relu MLP, GPT positions, causal mask) with
 * REMIX's day-3 circuit appended — a dataset variable `toks` (group ds), the
 * model's input rewired to an independent variable `toks_other` over the same
 * rows (group other), the labels from the first, the per-position loss masked
 * to "candidate" input tokens, its expectation (a Cumulant [S]) and mean. */
#ifndef CIRCC_SCRUB_GEN_H
#define CIRCC_SCRUB_GEN_H
#include "model_gen.h"

enum { SCRUB_ROWS = 5, SCRUB_LAYERS = 2 };

/* The dataset: SCRUB_ROWS sequences of S + 1 tokens (input = [0:S], labels = [1:S+1]). */
extern const int64_t SCRUB_DATA[SCRUB_ROWS][S + 1];
/* The loss counts at positions whose input token is a candidate. */
extern const int SCRUB_CANDIDATE[V];
/* The circuit's outputs: expected_loss_by_pos [S] and expected_loss []. */
extern const char *const SCRUB_OUTPUTS[2];

/* A Comp whose tensor store (m->store = store) holds the model's weights, seeded by seed. */
Comp *scrub_comp(Model *m, const char *store, uint64_t seed);
/* The model file with the scrubbing circuit appended (its tensors in m's store; malloc'd). */
char *scrub_file(Comp *c, const Model *m);
#endif
