/* rt_core.h — the bottom layer of the runtime, which every mode (rt_modes.h)
 * builds on and which calls nothing above it: messages and exit codes, option
 * scanning and number parsing, the one random-number generator, 64-byte-aligned
 * allocation, timing and threads, tensor descriptions, and .npy reading and
 * writing. Messages go to stderr as "PROG: error: ..." where PROG is the
 * program's name (rt_prog). */
#ifndef RT_CORE_H
#define RT_CORE_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include "circc_rt.h"

/* Every mode's exit codes. */
enum { RT_EXIT_OK = 0, RT_EXIT_MISMATCH = 1, RT_EXIT_USAGE = 2, RT_EXIT_BAD_INPUT = 3 };
enum { RT_ALIGN = 64, RT_MAX_RANK = 32, RT_MAX_THREADS = 4096 };

/* ---- messages ---- */

/* The program's name for messages: the model's, else argv[0], else "model". */
const char *rt_prog(const rt_model *m, int argc, char **argv);
/* Prints "PROG: error: MESSAGE\n" to stderr. */
void rt_error(const char *prog, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Prints "PROG: error: MESSAGE (see PROG --help)" and returns RT_EXIT_USAGE. */
int rt_usage_error(const char *prog, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ---- the command line ---- */

typedef struct rt_option {
  const char *name;             /* "--text", "-v" */
  bool takes_value;
} rt_option;
/* Reads the option at argv[*i] with getopt_long (--name=value is the same as
 * --name value, -xVALUE as -x VALUE), moving *i past its value. Returns its
 * index in opts with *val its value (NULL for an option without one), or -1
 * after a usage error; an unknown option's message ends with unknown_hint
 * (e.g. " (generation takes ...)"). Long options are written in full (an
 * abbreviation is an error naming the option), so adding an option never
 * changes what an existing command line means. */
int rt_next_option(const char *prog, const rt_option *opts, int nopts, const char *unknown_hint, int argc,
                   char **argv, int *i, const char **val);
/* Whether argv holds one of the options names[0..n) (as --name or --name=value). */
bool rt_has_option(int argc, char **argv, const char *const *names, int n);
/* An option's NAME=@FILE argument: its NAME must be one of d[0..n) (the
 * longest that fits, as names may contain '='; the @ is optional). Returns
 * that index with *path the file, or -1 after a usage error (flag, found
 * text, and the list of the model's `what`s when the name is unknown). */
int rt_parse_binding(const char *prog, const char *flag, const char *arg, const rt_tensor_desc *d, int n,
                     const char *what, const char **path);
/* The file of a binding's right-hand side ("@f.npy" or "f.npy"), NULL if empty. */
const char *rt_binding_path(const char *p);
/* A whole decimal argument s in [lo, hi]. */
bool rt_parse_long(const char *s, long lo, long hi, long *out);
/* A whole finite decimal number. */
bool rt_parse_double(const char *s, double *out);
/* --seed's argument: an integer from 0 to 2^64-1. */
bool rt_parse_seed(const char *s, uint64_t *out);

/* ---- random numbers (--sample, --generate) ----
 * xoshiro256** (Blackman & Vigna 2018) seeded with the first four outputs of
 * splitmix64 started at the seed; a uniform double in [0,1) is
 * (next() >> 11) * 2^-53. Portable: the same seed gives the same stream
 * everywhere. */
typedef struct rt_rng {
  uint64_t s[4];
} rt_rng;
void rt_rng_seed(rt_rng *r, uint64_t seed);
double rt_rng_uniform(rt_rng *r);

/* ---- memory, time, threads ---- */

/* bytes rounded up to a multiple of 64 (at least 64), 64-byte aligned; NULL if out of memory. */
void *rt_alloc_aligned(size_t bytes);
/* The same, zeroed. */
void *rt_alloc_zeroed(size_t bytes);
/* n elements of size bytes, 64-byte aligned; NULL after a message naming `what`. */
void *rt_alloc_array(const char *prog, size_t n, size_t size, const char *what);
/* Allocates a zeroed buffer for every input (in[i]) and output (out[i]) of m
 * (and NULL patch slots in[ninputs + k])
 * and the arena; false if out of memory. rt_free_buffers frees what was allocated. */
bool rt_alloc_buffers(const rt_model *m, void ***in, void ***out, void **arena);
void rt_free_buffers(const rt_model *m, void **in, void **out, void *arena);
/* Monotonic milliseconds. */
double rt_now_ms(void);
/* Sets the OpenMP thread count: requested, else a leading positive number in
 * OMP_NUM_THREADS (read now, so a changed environment counts), else every
 * core, and starts the threads: if they cannot be created, prog says so and
 * exits 3. Returns the count (1 without OpenMP). */
int rt_set_threads(const char *prog, int requested);
/* The thread count a parallel region gets now. */
int rt_threads(void);

/* ---- tensor descriptions ---- */

const char *rt_dtype_name(rt_dtype t);   /* "float32", "int64" */
size_t rt_dtype_size(rt_dtype t);
/* Is input i held as bf16 (rt_model.input_bf16)? */
bool rt_input_bf16(const rt_model *m, int i);
/* Bytes of one element of input i inside the program: 2 if held as bf16, else its dtype's size. */
size_t rt_input_elem_size(const rt_model *m, int i);
/* dst[i] = x[i] rounded to bf16, to nearest even (NaN stays a quiet NaN, values
 * beyond bf16's range become inf): how circc rounds bf16 weights. */
void rt_bf16_round(const float *x, uint16_t *dst, int64_t n);
/* [2,3] (as circc prints shapes) */
void rt_shape_str(int rank, const int64_t *shape, char *buf, size_t cap);
/* "  NAME [2,3] float32\n" */
void rt_desc_line(FILE *f, const rt_tensor_desc *d);
/* Input i's line: "  past_k [12,12,1024,64] float32 (stored as bf16)\n" when held as bf16. */
void rt_input_line(FILE *f, const rt_model *m, int i);
/* --info: the program's provenance, inputs, outputs, arena, FLOPs and threads. */
void rt_print_info(const rt_model *m, const char *prog, int threads);
/* --info's `precision:` line (circc --precision; with bf16 the GEMM path this CPU takes). */
void rt_print_precision(const rt_model *m);

/* ---- .npy files ---- */

#define RT_NPY_FLOAT_DESCRS "<f4, <f8 or <f2"
#define RT_NPY_INT_DESCRS "<i8, <i4, <i2, |i1 or |u1"
/* Reads path (.npy v1-v3, little-endian, C order) as the tensor want
 * describes: its shape must be want's up to leading 1s ([1,T,V] for [T,V] and
 * the other way round: the same elements), and its dtype one of
 * RT_NPY_FLOAT_DESCRS for float32, RT_NPY_INT_DESCRS for int64. Returns the
 * values converted to want's dtype in a 64-byte-aligned buffer (free() it),
 * or NULL after a message starting with `what`. */
void *rt_npy_read(const char *prog, const char *what, const char *path, const rt_tensor_desc *want);
/* The same for input i of m: rounded to bf16 (2 bytes each) if it is held so. */
void *rt_npy_read_input(const char *prog, const char *what, const char *path, const rt_model *m, int i);
/* The same for a golden: any of those dtypes, as doubles (malloc'd). */
double *rt_npy_read_doubles(const char *prog, const char *what, const char *path, const rt_tensor_desc *want);
/* The files one run writes (--output and the like), all or none: each is
 * written by write(i, path, arg) to a temporary file beside its target and
 * the temporaries are renamed over the targets only after every write
 * succeeded. A target that is a symlink keeps the link (the file it names is
 * replaced); one that is a device or FIFO (/dev/null, /dev/stdout) is written
 * through, never replaced. labels[i] names file i in messages (e.g.
 * "--output y"). false after a message, with no temporary left; a SIGINT,
 * SIGTERM or SIGHUP while it runs removes the temporaries too. */
typedef bool (*rt_file_writer)(int i, const char *path, void *arg);
bool rt_write_files(const char *prog, int n, const char *const *paths, const char *const *labels, rt_file_writer write,
                    void *arg);

/* A large .npy as want describes, used in place: mapped read-only when its
 * dtype is exactly want's (<f4 for float32, <i8 for int64), else read and
 * converted as rt_npy_read does. false after a message; rt_npy_unmap releases it. */
typedef struct rt_npy_map {
  const void *data;            /* want->numel elements of want->dtype */
  void *base;                  /* the mapping (len bytes), or NULL: data was allocated */
  size_t len;
} rt_npy_map;
bool rt_npy_map_open(const char *prog, const char *what, const char *path, const rt_tensor_desc *want, rt_npy_map *m);
void rt_npy_unmap(rt_npy_map *m);
/* Writes data (rank, shape, dtype; float32 as <f4, int64 as <i8) to path as
 * numpy.save would: a v1.0 header padded with spaces (with room for shape[0] to
 * grow to 21 digits) to a multiple of 64 bytes. False with errno set if the
 * file cannot be written. */
bool rt_npy_write(const char *path, rt_dtype dtype, int rank, const int64_t *shape, const void *data);
/* The same for float64 data (<f8). */
bool rt_npy_write_f64(const char *path, int rank, const int64_t *shape, const double *data);
#endif
