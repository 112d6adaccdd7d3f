/* rt_modes.h — what a generated program can do with its model, one mode per
 * file, side by side above rt_core: rt_main (circc_rt.c) runs the first mode
 * of its table whose `requested` says yes, so a new mode is one more row. A
 * mode calls only rt_core and its own helpers, never another mode. */
#ifndef RT_MODES_H
#define RT_MODES_H
#include "circc_rt.h"

typedef struct rt_mode {
  const char *name;
  /* Whether argv asks for this mode (the last mode of the table says always yes). */
  int (*requested)(int argc, char **argv);
  /* Does what argv asks; returns the exit code (rt_core.h), or RT_MODE_HELP
   * for -h / --help, after which rt_main prints every mode's help. */
  int (*main)(const rt_model *m, int argc, char **argv);
  /* Prints the mode's part of --help to stdout (nothing if m cannot use the mode). */
  void (*help)(const rt_model *m, const char *prog);
} rt_mode;
enum { RT_MODE_HELP = -1 };

/* rt_run.c — run, check, bench, info: inputs from .npy files, outputs written,
 * compared with goldens, timed or printed. Always requested (the default). */
extern const rt_mode rt_mode_run;

/* rt_sample.c — --sample N --seed S: names drawn character by character from a
 * model compiled with circc --vocab. */
extern const rt_mode rt_mode_sample;
/* Prints `count` names (one per line) drawn from m with the rt_rng stream of
 * `seed`. Returns 0 ok, 2 usage (no vocab, no context input or distribution
 * output), 3 bad input (run failed). */
int rt_sample(const rt_model *m, int count, uint64_t seed);

/* rt_generate.c — --text / --tokens, --generate, --top: text generation with a
 * key/value cache for programs built from a decode circuit (and rt_bpe.c's
 * tokenizer for text). */
extern const rt_mode rt_mode_generate;

/* rt_expect.c — expectation programs (m->expect): --info, --all (exact
 * enumeration) and --samples N (Monte Carlo with standard errors), streaming
 * samples through the batch graphs with sums in a fixed order (rt_moments.h)
 * and samples drawn by rt_sampler.h. rt_main runs it whenever m->expect is set
 * (a table of its own in circc_rt.c): such programs have no other mode. */
extern const rt_mode rt_mode_expect;
#endif
