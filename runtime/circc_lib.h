/* circc_lib.h — the types of the C API of a shared library built by
 * `circc MODEL.circ --emit lib -o DIR/NAME.so`. circc writes DIR/NAME.h
 * beside it: this text, then the functions, whose prefix P is a C identifier
 * made from the output's file name up to its first '.' (each byte other than
 * an ASCII letter, digit or '_' becomes '_'; "m_" is put before a leading
 * digit; "model" if that is empty; "circc" is refused):
 *
 *   circc_ctx *P_init(void);
 *       A context: the model's arena (scratch memory, reused by every run),
 *       its own thread count and last error. NULL if out of memory.
 *   void P_free(circc_ctx *ctx);
 *   int P_run(circc_ctx *ctx, const void *const *inputs, void *const *outputs,
 *             const void *const *patches);
 *       Runs the model once: inputs[i] holds input i (numel values of its
 *       dtype, C order), outputs[i] receives output i; patches is NULL or holds
 *       npatches pointers, each a patch's value or NULL (not patched: the node
 *       is computed as usual). Returns CIRCC_OK or an error code, with a
 *       message from P_error. Outputs must not overlap inputs or each other.
 *   const char *P_error(const circc_ctx *ctx);
 *       The message of ctx's last failed call ("" after a success).
 *   int P_set_threads(circc_ctx *ctx, int n);
 *       The OpenMP threads of ctx's runs: n >= 1, or 0 (the default) for the
 *       calling thread's OpenMP setting (OMP_NUM_THREADS, else every core).
 *       Affects no other context and no other thread. CIRCC_OK or CIRCC_EUSAGE.
 *   int P_threads(const circc_ctx *ctx);
 *       The number of threads ctx's next run from this thread asks for.
 *   void P_info(circc_info *info);
 *   int P_tensor(int kind, int i, circc_tensor *t);
 *       Describes input, output or patch i (kind CIRCC_INPUT, CIRCC_OUTPUT,
 *       CIRCC_PATCH); CIRCC_EUSAGE if there is no such tensor. The strings and
 *       shapes are the library's, valid while it is loaded.
 *
 * No global mutable state: contexts are independent, and several models (each
 * with its own prefix) can be loaded into one process. A context must not be
 * used by two threads at once; two contexts may run concurrently. */
#ifndef CIRCC_LIB_TYPES
#define CIRCC_LIB_TYPES
#include <stddef.h>
#include <stdint.h>

typedef struct circc_ctx circc_ctx;

enum { CIRCC_F32 = 0, CIRCC_I64 = 1 };                       /* dtypes: float, int64_t */
enum { CIRCC_INPUT = 0, CIRCC_OUTPUT = 1, CIRCC_PATCH = 2 }; /* kinds of tensor */
/* Error codes, as the executables' exit codes: a bad call (NULL argument,
 * another model's context, a bad thread count or index), or a bad input value
 * the model found (e.g. a token id out of range) or memory it lacked. */
enum { CIRCC_OK = 0, CIRCC_EUSAGE = 2, CIRCC_EINPUT = 3 };

typedef struct circc_tensor {
  const char *name;          /* the circuit's name (a tap's is its name path) */
  int dtype;                 /* CIRCC_F32 or CIRCC_I64 */
  int rank;
  const int64_t *shape;      /* rank sizes */
  int64_t numel;
} circc_tensor;

typedef struct circc_info {
  const char *name;          /* the library's file name when circc built it */
  const char *circc_version;
  const char *command_line;  /* the circc command that built it */
  const char *source_hash;   /* BLAKE3 of the circuit file's text, hex */
  int ninputs, noutputs;
  int ntaps;                 /* circc --tap: the last ntaps outputs are inner nodes */
  int npatches;              /* circc --patch: nodes a run may replace */
  size_t arena_bytes;        /* each context's scratch memory */
  double flops;              /* floating-point operations per run */
} circc_info;
#endif
