/* comp.c — the compilation context (see comp.h). */
#include <math.h>
#include <string.h>
#include "comp.h"
#include "tensor.h"

void comp_init(Comp *c) {
  memset(c, 0, sizeof *c);
  c->err = stderr;
  c->check_all_inputs_used = true;
  c->rng_state = 0x5eed;
}

void comp_free(Comp *c) {
  tensor_free_all(c);
  arena_free_all(&c->arena);
}

#define SPLITMIX_STEP 0x9e3779b97f4a7c15ull

/* splitmix64: tiny, portable, good enough for test tensors. */
uint64_t comp_rng_u64(uint64_t *state) {
  uint64_t z = (*state += SPLITMIX_STEP);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

void comp_rng_skip(uint64_t *state, uint64_t draws) { *state += draws * SPLITMIX_STEP; }

double comp_rng_normal(uint64_t *state) {
  /* Box–Muller; u1 in (0,1] so log is finite */
  double u1 = ((double)(comp_rng_u64(state) >> 11) + 1.0) / 9007199254740992.0;
  double u2 = (double)(comp_rng_u64(state) >> 11) / 9007199254740992.0;
  return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}
