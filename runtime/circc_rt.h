/* circc_rt.h — the runtime every circc-generated program links (its files:
 * runtime/MANIFEST): the program's command line, in modes (rt_modes.h: run,
 * check, bench and info; --sample; text generation) over a common core
 * (rt_core.h: messages, .npy I/O, random numbers, memory, timing, threads).
 * The generated model code fills an rt_model and calls rt_main. Only the rt_
 * prefix is public. Needs libc, libm, OpenMP. */
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

/* ---- expectation programs (circuits with DiscreteVars and Cumulants;
 * random_variables.md §4). circc's rv stage turns such a circuit into batch
 * graphs that compute the Cumulants' arguments for B samples at a time, and a
 * post graph that turns the estimates into the program's outputs; the runtime
 * (rt_expect.c) draws the samples, runs the graphs and reduces. */

/* One compiled graph: like rt_model's run, for B samples or for the post step. */
typedef struct rt_graph {
  int ninputs, noutputs;
  const rt_tensor_desc *inputs, *outputs;
  size_t arena_bytes;
  double flops;
  const char *(*run)(const void *const *in, void *const *out, void *arena);
  /* Per input: the group whose row indices it takes (int64 [B]; batch graphs),
   * or -1; the cumulant whose estimate it takes (float32, the cumulant's
   * shape), or -1; and (input_data may be NULL: none) the streamed dataset it
   * is (rt_expect.data, read with --data), or -1. Exactly one is >= 0. */
  const int *input_group, *input_cumulant, *input_data;
} rt_graph;

/* A group: the DiscreteVars sampled with one row index (one probs node). */
typedef struct rt_group {
  const char *name;        /* the group node's name, or NULL when it has none */
  const char *vars;        /* its DiscreteVars' names, ", "-separated */
  int64_t size;            /* S: rows of every member's values */
  const double *probs;     /* S probabilities as written (circc checked: finite, >= 0, sum > 0) */
  int uniform;             /* all S probabilities bitwise equal */
  int tagged;              /* the group node is a Tag: key comes from its UUID */
  uint64_t key;            /* random_variables.md §4.4 key(g) (circc's structural hash if untagged) */
} rt_group;

/* A Cumulant of random arguments: its arguments' per-sample values are
 * outputs of one batch graph. */
typedef struct rt_cumulant {
  const char *name;        /* the Cumulant node's name, or "cumulant<i>" */
  int order;               /* k >= 1 (order 0 is the constant 1, folded by circc) */
  int pass;                /* the batch graph (index into rt_expect.passes) that computes its arguments */
  const int *arg;          /* k output indices of that graph: argument i's values, [B, arg shape] */
  int rank;                /* the estimate: the arguments' shapes concatenated (rust_circuit) */
  const int64_t *shape;
  int64_t numel;
} rt_cumulant;

typedef struct rt_expect {
  int batch;                           /* B: samples per run of a batch graph (circc --sample-batch) */
  int ngroups;
  const rt_group *groups;              /* in --info order: first appearance in the circuit */
  int npasses;
  const rt_graph *passes;              /* batch graphs; pass j takes estimates of cumulants of passes < j */
  int ncumulants;
  const rt_cumulant *cumulants;        /* ordered by pass */
  const rt_graph *post;                /* takes every cumulant's estimate, gives the program's outputs */
  int ndata;                           /* circc --stream: values the program reads at run time */
  const rt_tensor_desc *data;          /* (--data NAME=@rows.npy: name, dtype and shape required) */
} rt_expect;

typedef struct rt_model {
  const char *name;              /* program name for messages */
  const char *circc_version;
  const char *command_line;      /* the circc command that produced it */
  const char *source_hash;       /* BLAKE3 of the circuit file's text (not of the weights), hex */
  int ninputs, noutputs;
  const rt_tensor_desc *inputs, *outputs;
  int ntaps;                     /* circc --tap: the last ntaps outputs are inner nodes (named by path) */
  /* circc --patch: nodes whose value a caller may replace (rust_circuit's
   * circuit.update(name, lambda _: Array(value))). run's `in` then holds
   * ninputs + npatches pointers: in[ninputs + k] is patch k's value, or NULL
   * to compute the node as usual. */
  int npatches;
  const rt_tensor_desc *patches;
  size_t arena_bytes;            /* scratch memory for one run (64-byte aligned) */
  double flops;                  /* floating-point operations per run */
  /* Runs the model once. in[i] holds input i (numel elements of its dtype),
   * out[i] receives output i, arena has arena_bytes. Returns NULL on success or
   * a message for bad input (e.g. a token id out of range): rt_main exits 3. */
  const char *(*run)(const void *const *in, void *const *out, void *arena);
  /* Character vocabulary for --sample (token id i is vocab[i]; "." ends a
   * name), or NULL when the program was compiled without --vocab. */
  const char *vocab;
  /* Tokenizer table (rt_bpe.c; written by circc's compiler/back/tokenizer.c) for
   * text programs, or NULL (tokenizer_len 0) when there is none. */
  const void *tokenizer;
  size_t tokenizer_len;
  /* Expectation programs: the groups, batch graphs and cumulants (rt_expect.c's
   * mode); NULL otherwise. Then inputs/outputs/run above are expect->post's. */
  const rt_expect *expect;
  /* circc --precision: "bf16" (GEMM weights stored as bf16, templates/gemm_bf16.h),
   * "int8" (int8 with fp16 scales, templates/gemm_int8.h) or NULL (fp32);
   * gemm_path then names the path those GEMMs take on this CPU ("amx",
   * "avx512bf16", "avx512; weights int8, ...", ...). */
  const char *precision;
  const char *(*gemm_path)(void);
  /* Per input, or NULL (none): 1 for a float32 input that the program holds
   * as bf16 (circc --precision bf16/int8: a decode program's key/value cache,
   * read only by GEMMs with a bf16 B). The interface stays float32: the
   * runtime rounds the values to nearest even as it loads or stores them and
   * hands run() 2 bytes an element (rt_input_bf16). */
  const unsigned char *input_bf16;
  /* The weights blob as linked (circc_weights) and its size: run() reads
   * rt_weights(weights, weights_bytes), which rt_main asks for before the
   * first run. */
  const unsigned char *weights;
  size_t weights_bytes;
} rt_model;

/* The program's main: runs the mode argv asks for (rt_modes.h), by default
 * loading inputs, running, and writing/checking outputs. Exit codes: 0 ok,
 * 1 --check mismatch, 2 usage, 3 bad input (file, shape, dtype, values). */
int rt_main(const rt_model *m, int argc, char **argv);

/* How threads behave in libgomp's own waits (the end of a run, between runs;
 * the phases' barrier is rt_barrier_wait), called by a program's main before
 * rt_main: unless the user set OMP_WAIT_POLICY or GOMP_SPINCOUNT, a waiting
 * thread spins RT_SPIN_COUNT times before it sleeps, instead of libgomp's
 * 300000: on a machine whose other cores are busy, spinning threads took the
 * cores their siblings needed (README "Waiting"). Linux (it re-executes the
 * program once with GOMP_SPINCOUNT set); not in MPI programs, whose launcher
 * tracks the process. */
#define RT_SPIN_COUNT "1000"
void rt_wait_policy(char **argv);

/* The barrier a run's team waits at after each phase of steps (rt_team.c;
 * run_steps in the generated model.c). A waiting thread spins for up to
 * RT_BARRIER_SPIN_NS, then sleeps (Linux futex) — but sleeps after
 * RT_BARRIER_QUICK_NS while its own CPU is contended (another task preempted
 * it lately: getrusage's involuntary context switches), because spinning
 * there burns the share of the CPU its next phase needs and the scheduler
 * then runs it late; the whole team waited for it at every barrier (README
 * "Waiting"). The user's
 * OMP_WAIT_POLICY (passive: sleep at once; active: spin only) or
 * GOMP_SPINCOUNT (that many pauses, then sleep; RT_SPIN_COUNT, which
 * rt_wait_policy sets, counts as unset) decides instead when set.
 * Zero-initialised, shared by the team, nthreads the team's size; elsewhere
 * than on Linux an OpenMP barrier. */
typedef struct rt_barrier {
  unsigned arrived, generation, sleepers;
} rt_barrier;
#define RT_BARRIER_SPIN_NS 100000
#define RT_BARRIER_QUICK_NS 2000 /* the spin while the CPU is contended */
void rt_barrier_wait(rt_barrier *b, int nthreads);
/* What rt_barrier_wait does here, for --info. */
const char *rt_barrier_policy(void);

/* A run's team (rt_team.c; run() in the generated model.c): as many threads
 * as OpenMP allows (--threads), or fewer for a while after two runs in a row
 * in which threads of the team waited for a CPU, while they could run, more
 * than 1/RT_TEAM_WAIT_SHARE of the run (the kernel's run-queue wait,
 * /proc/thread-self/schedstat, from rt_team_enter to rt_team_leave). On a
 * machine whose other work takes some of the CPUs, such a thread held the
 * whole team at every barrier until the scheduler ran it again; a team that
 * leaves out one thread per waiting one keeps the CPUs that are free (README
 * "The team's size"). The team shrinks for RT_TEAM_SHORT_MIN runs, then tries its
 * full size again; each time the full team waits again at once, the next
 * shrink lasts twice as long, up to RT_TEAM_SHORT_MAX runs. The bits of the
 * results do not depend on the team's size. Only under the default wait
 * policy (with OMP_WAIT_POLICY or GOMP_SPINCOUNT set by the user the team
 * keeps its size) and on Linux. */
typedef struct rt_team {
  int threads;        /* the team's size for this run */
  int full;           /* the size it would have had (max_threads) */
  int ran;            /* threads that ran (rt_team_leave) */
  int waited;         /* threads that waited for a CPU over 1/RT_TEAM_WAIT_SHARE of the run */
  int watch;          /* whether threads measure their waits (full teams only) */
  long long start_ns; /* when the run began */
} rt_team;
enum { RT_TEAM_SHORT_MIN = 8, RT_TEAM_SHORT_MAX = 256, RT_TEAM_WAIT_SHARE = 8 };
rt_team rt_team_begin(int max_threads);
long long rt_team_enter(const rt_team *t);         /* each thread, first: what rt_team_leave needs */
void rt_team_leave(rt_team *t, long long entered); /* each thread, last */
void rt_team_end(const rt_team *t);                /* after the team's region */
/* Runs of this process so far in which fewer threads ran than the full
 * team, for --bench; and what the team does here, for --info. */
long rt_team_short_runs(void);
const char *rt_team_policy(void);

/* The weights blob a run reads: `linked` (circc_weights, `bytes` long, mapped
 * from the program file) or, the first time it is asked for a blob of at
 * least RT_WEIGHTS_COPY_MIN bytes, a copy of it in anonymous memory on 2 MiB
 * pages where the kernel grants them (Linux transparent huge pages, asked
 * for with madvise). Page-cache pages of a large file can lie scattered in
 * memory; on a virtual machine every TLB miss on them walks two page tables,
 * and GPT-2's 2-thread prefill ran 1.5x slower from them than from the copy
 * (README "Weights"). The copy is made once, under a lock, and is read-only
 * after. It is read from the program file (a fifth of the time that faulting
 * the mapping in takes), or where that file is gone copied from the mapping,
 * whose pages are dropped as they are copied: either way the resident size
 * stays one blob. CIRCC_WEIGHTS=mapped keeps the blob where it is linked; so
 * does a failure to allocate the copy (the same bytes either way, so the
 * same results). */
#define RT_WEIGHTS_COPY_MIN ((size_t)4 << 20)
const unsigned char *rt_weights(const unsigned char *linked, size_t bytes);
/* What rt_weights did, for -v: "mapped from the program file", ... */
const char *rt_weights_how(void);

/* Formats an error message for run() to return (a static per-thread buffer). */
const char *rt_errorf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* rt_bpe.c (the generate mode's tokenizer; public for the tests and fuzzer that
 * use it) — text <-> token ids: GPT-2's byte-level BPE or a character
 * vocabulary, from a binary table (format: rt_bpe.c) that is used in place,
 * never copied: the blob must outlive the tokenizer. An rt_tokenizer is
 * read-only after open, so threads may share it. Every failure returns
 * NULL / -1 / RT_DECODE_ERROR and leaves a message for rt_tokenizer_error().
 *
 * GPT-2 mode is GPT-2's encoder.py exactly (regex pre-tokenization, then BPE by
 * merge rank) over the input bytes, with two documented additions: the text
 * "<|endoftext|>" anywhere in the input is the special token (its id), and the
 * text between occurrences is encoded on its own (as Hugging Face tokenizers
 * do); and bytes that are not well-formed UTF-8 each count as one character of
 * class "other" (like Python's surrogateescape), so any bytes round-trip:
 * decode(encode(s)) == s. Character mode maps each UTF-8 character to its id;
 * a character outside the vocabulary or ill-formed UTF-8 is an error. */
typedef struct rt_tokenizer rt_tokenizer;
#define RT_DECODE_ERROR ((size_t)-1)
/* Checks the whole table (bounds, checksum, that every lookup finds what it
 * should); NULL with a message if it is corrupt or allocation fails. */
rt_tokenizer *rt_tokenizer_open(const void *blob, size_t len);
void rt_tokenizer_free(rt_tokenizer *t);
/* The message of this thread's last failed rt_tokenizer_open/rt_encode/rt_decode. */
const char *rt_tokenizer_error(void);
int64_t rt_tokenizer_vocab_size(const rt_tokenizer *t);
int64_t rt_tokenizer_eot(const rt_tokenizer *t);   /* id of <|endoftext|>, or -1 (character mode) */
/* Encodes len bytes of text. Returns the number of tokens n and stores the
 * first min(n, cap) ids (like snprintf: n > cap means ids was too small;
 * cap >= len never is, every token being at least one byte), or -1 on error:
 * character mode and a character not in the vocabulary or ill-formed UTF-8,
 * len > 2^31 - 1, bad arguments, out of memory. */
int64_t rt_encode(const rt_tokenizer *t, const char *utf8, size_t len, int64_t *ids, int64_t cap);
/* Decodes n ids to their bytes (raw bytes: a character split across tokens
 * stays split; no NUL is added). Returns the full length and stores its first
 * min(length, cap) bytes, or RT_DECODE_ERROR for an id out of range. */
size_t rt_decode(const rt_tokenizer *t, const int64_t *ids, int64_t n, char *out, size_t cap);
/* One token's bytes, for streaming output (a pointer into the table, len
 * bytes, not NUL-terminated), or NULL if id is out of range. */
const char *rt_token_bytes(const rt_tokenizer *t, int64_t id, size_t *len);
/* The id of the token whose bytes are exactly s[0..len), or -1. */
int64_t rt_token_id(const rt_tokenizer *t, const char *s, size_t len);
#endif
