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
  /* Tokenizer table (rt_bpe.c; written by circc's compiler/tokenizer.c) for
   * text programs, or NULL (tokenizer_len 0) when there is none. */
  const void *tokenizer;
  size_t tokenizer_len;
} rt_model;

/* The program's main: parses argv, loads inputs, runs, writes/checks outputs.
 * Exit codes: 0 ok, 1 --check mismatch, 2 usage, 3 bad input (file, shape, dtype, values). */
int rt_main(const rt_model *m, int argc, char **argv);

/* rt_sample.c — --sample N --seed S: prints `count` names (one per line) drawn
 * character by character from a model compiled with --vocab (xoshiro256**
 * seeded through splitmix64 from `seed`). Returns 0 ok, 2 usage (no vocab,
 * no context input or distribution output), 3 bad input (run failed). */
int rt_sample(const rt_model *m, int count, uint64_t seed);

/* rt_generate.c — text generation with a key/value cache for programs built
 * from a decode circuit (inputs token, pos, kv_mask, past_k, past_v;
 * outputs logits, new_k, new_v: gpt2_import --decode) and, for text,
 * a tokenizer (circc --lm). Semantics, sampling rule and RNG: rt_generate.c. */
typedef struct rt_gen_options {
  const char *text;              /* --text: the prompt as text, or NULL */
  const int64_t *tokens;         /* --tokens: the prompt as ids (ntokens of them) */
  int64_t ntokens;
  long generate;                 /* --generate N: tokens to generate */
  int greedy;                    /* --greedy: argmax instead of sampling */
  double temperature;            /* --temperature (1; 0 = greedy) */
  long top_k;                    /* --top-k (0: off) */
  double top_p;                  /* --top-p (1: off) */
  uint64_t seed;                 /* --seed */
  long top;                      /* --top K: print the K most likely next tokens (0: off) */
  int print_ids;                 /* --print-ids */
  int verbose;                   /* -v: ms per token on stderr */
  int threads;                   /* --threads (0: OpenMP's default) */
  const char *dump_logits;       /* --dump-logits FILE.npy: the prompt positions' logits, or NULL */
} rt_gen_options;
/* Runs the prompt through the program one position at a time, then generates.
 * Returns 0 ok, 2 usage (not a decode program, --text without a tokenizer),
 * 3 bad input (token out of range, too long for the cache, a failed run). */
int rt_generate(const rt_model *m, const rt_gen_options *o);
/* Whether argv holds an option only generation has (--text, --tokens,
 * --generate, --top, --greedy, ...): rt_main then calls rt_generate_main,
 * which parses the language-model options. */
int rt_generate_requested(int argc, char **argv);
int rt_generate_main(const rt_model *m, int argc, char **argv);
/* Prints the language-model options to stdout (for --help) if m has the decode interface. */
void rt_generate_help(const rt_model *m);

/* The runtime's random numbers (--sample, --generate): xoshiro256** seeded with
 * the first four outputs of splitmix64 started at the seed; a uniform double
 * in [0,1) is (next() >> 11) * 2^-53. Portable: the same seed gives the same
 * stream everywhere. */
typedef struct rt_rng {
  uint64_t s[4];
} rt_rng;
void rt_rng_seed(rt_rng *r, uint64_t seed);
double rt_rng_uniform(rt_rng *r);

/* Formats an error message for run() to return (a static per-thread buffer). */
const char *rt_errorf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* A whole decimal argument s in [lo, hi] (command-line parsing). */
_Bool rt_parse_long(const char *s, long lo, long hi, long *out);

/* rt_bpe.c — text <-> token ids: GPT-2's byte-level BPE or a character
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
