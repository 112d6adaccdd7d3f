/* circc_rt.h — the runtime every circc-generated program links: the program's
 * command line (--input/--output/--check/--bench/--info/--threads), .npy I/O,
 * timing and thread control. The generated model code fills an rt_model and
 * calls rt_main. Only the rt_ prefix is public. Needs libc, libm, OpenMP. */
#ifndef CIRCC_RT_H
#define CIRCC_RT_H
#include <stddef.h>
#include <stdint.h>

typedef enum rt_dtype { RT_F32, RT_I64 } rt_dtype;

/* One input or output of the program: a tensor of fixed shape and dtype. */
typedef struct rt_tensor_desc {
  const char *name;        /* circuit name: the free Symbol's or the output circuit's */
  rt_dtype dtype;
  int rank;
  const int64_t *shape;
  int64_t numel;
} rt_tensor_desc;

typedef struct rt_model {
  const char *name;              /* program name for messages */
  const char *circc_version;
  const char *command_line;      /* the circc command that produced it */
  const char *source_hash;       /* hash of the circuit text + weights */
  int ninputs, noutputs;
  const rt_tensor_desc *inputs, *outputs;
  size_t arena_bytes;            /* scratch memory for one run (64-byte aligned) */
  double flops;                  /* floating-point operations per run */
  /* Runs the model once. in[i] holds input i (numel elements of its dtype),
   * out[i] receives output i, arena has arena_bytes. Returns NULL on success or
   * a message for bad input (e.g. a token id out of range): rt_main exits 3. */
  const char *(*run)(const void *const *in, void *const *out, void *arena);
  /* Character vocabulary for --sample (token id i is vocab[i]; "." ends a
   * name), or NULL when the program was compiled without --vocab. */
  const char *vocab;
} rt_model;

/* The program's main: parses argv, loads inputs, runs, writes/checks outputs.
 * Exit codes: 0 ok, 1 --check mismatch, 2 usage, 3 bad input (file, shape, dtype, values). */
int rt_main(const rt_model *m, int argc, char **argv);

/* rt_sample.c — --sample N --seed S: prints `count` names (one per line) drawn
 * character by character from a model compiled with --vocab (xoshiro256**
 * seeded through splitmix64 from `seed`). Returns 0 ok, 2 usage (no vocab,
 * no context input or distribution output), 3 bad input (run failed). */
int rt_sample(const rt_model *m, int count, uint64_t seed);

/* Formats an error message for run() to return (a static per-thread buffer). */
const char *rt_errorf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
#endif
