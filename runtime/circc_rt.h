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

typedef struct rt_model {
  const char *name;              /* program name for messages */
  const char *circc_version;
  const char *command_line;      /* the circc command that produced it */
  const char *source_hash;       /* BLAKE3 of the circuit file's text (not of the weights), hex */
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
  /* Tokenizer table (rt_bpe.c; written by circc's compiler/back/tokenizer.c) for
   * text programs, or NULL (tokenizer_len 0) when there is none. */
  const void *tokenizer;
  size_t tokenizer_len;
} rt_model;

/* The program's main: runs the mode argv asks for (rt_modes.h), by default
 * loading inputs, running, and writing/checking outputs. Exit codes: 0 ok,
 * 1 --check mismatch, 2 usage, 3 bad input (file, shape, dtype, values). */
int rt_main(const rt_model *m, int argc, char **argv);

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
