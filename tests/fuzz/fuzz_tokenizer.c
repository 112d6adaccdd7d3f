/* fuzz_tokenizer.c — libFuzzer target for runtime/rt_bpe.c. The first input
 * byte picks a mode (the rest is `d`):
 *   0  d is a tokenizer table: rt_tokenizer_open must not crash; a table it
 *      accepts must encode and decode without crashing;
 *   1  the same with the header's length and checksum fixed up, so the
 *      structural checks behind the checksum are reached;
 *   2  the real GPT-2 table damaged at the (offset, byte) pairs of d, checksum
 *      fixed: open fails with a message or gives a working tokenizer;
 *   3  d is text for the real GPT-2 table: ids in range, the count the same
 *      without room, decode(encode(d)) == d; and for the character table:
 *      an error or the same round trip.
 * The real tables are built from tests/data (gpt2_bpe, text/vocab_chars.json)
 * with compiler/back/tokenizer.c on the first call. Build: tests/CMakeLists.txt (CIRCC_FUZZ).
 * Mode 2 re-checks the whole GPT-2 table on every input (~20 ms), so it takes
 * one first byte in 16 (data[0] % 16 == 2; the other bytes with data[0] % 4 == 2
 * are mode 3): ~10^3 inputs a second instead of ~50. */
#include <stdlib.h>
#include <string.h>
#include "circc.h"
#include "circc_rt.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint8_t *GPT2, *CHARS;
static size_t GPT2_LEN, CHARS_LEN;
static const rt_tokenizer *GPT2_T, *CHARS_T;

static void load(const char *spec, uint8_t **blob, size_t *len, const rt_tokenizer **t) {
  Comp c;
  comp_init(&c);
  void *b;
  if (!tokenizer_build(&c, spec, &b, len)) abort();
  *blob = malloc(*len);
  memcpy(*blob, b, *len);
  comp_free(&c);
  if (!(*t = rt_tokenizer_open(*blob, *len))) abort();
}

static void fix_header(uint8_t *b, size_t len) {
  if (len < 80) return;
  for (int i = 0; i < 4; i++) b[16 + i] = (uint8_t)(len >> 8 * i);
  uint32_t h = 2166136261u;
  for (size_t i = 0; i < len; i++) h = (h ^ (i / 4 == 5 ? 0 : b[i])) * 16777619u;
  for (int i = 0; i < 4; i++) b[20 + i] = (uint8_t)(h >> 8 * i);
}

/* Encodes s with t and checks ids and the round trip (ok == false: an error is allowed). */
static void round_trip(const rt_tokenizer *t, const uint8_t *s, size_t n, bool must_encode) {
  int64_t *ids = malloc((n + 1) * sizeof *ids);
  int64_t k = rt_encode(t, (const char *)s, n, ids, (int64_t)n);
  if (k < 0) {
    if (must_encode || !rt_tokenizer_error()[0]) abort();
    free(ids);
    return;
  }
  if (k > (int64_t)n || rt_encode(t, (const char *)s, n, NULL, 0) != k) abort();
  for (int64_t i = 0; i < k; i++)
    if (ids[i] < 0 || ids[i] >= rt_tokenizer_vocab_size(t)) abort();
  char *back = malloc(n + 1);
  if (rt_decode(t, ids, k, back, n) != n || memcmp(back, s, n) != 0) abort();
  free(back);
  free(ids);
}

/* Exercises a table that opened, on a fixed text and on the fuzz bytes. */
static void use(rt_tokenizer *t, const uint8_t *d, size_t n) {
  static const char TEXT[] = "Hello world's 123 \xe6\x97\xa5\xff  <|endoftext|>\n\n";
  int64_t ids[64];
  int64_t k = rt_encode(t, TEXT, sizeof TEXT - 1, ids, 64);
  if (k > 0) {
    char out[256];
    if (rt_decode(t, ids, k < 64 ? k : 64, out, sizeof out) == RT_DECODE_ERROR) abort();
  }
  k = rt_encode(t, (const char *)d, n < 256 ? n : 256, ids, 64);
  for (int64_t i = 0; i < k && i < 64; i++)
    if (ids[i] < 0 || ids[i] >= rt_tokenizer_vocab_size(t)) abort();
  rt_tokenizer_free(t);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (!GPT2) {
    load("gpt2-bpe:" CIRCC_TEST_DATA "/gpt2_bpe", &GPT2, &GPT2_LEN, &GPT2_T);
    load("chars:" CIRCC_TEST_DATA "/text/vocab_chars.json", &CHARS, &CHARS_LEN, &CHARS_T);
  }
  if (size == 0) return 0;
  const uint8_t *d = data + 1;
  size_t n = size - 1;
  int mode = data[0] % 16 == 2 ? 2 : data[0] % 4 == 2 ? 3 : data[0] % 4;
  switch (mode) {
  case 0:
  case 1: {
    uint8_t *b = malloc(n + 1);
    memcpy(b, d, n);
    if (mode == 1) fix_header(b, n);
    rt_tokenizer *t = rt_tokenizer_open(b, n);
    if (t) use(t, d, n);
    else if (!rt_tokenizer_error()[0]) abort();
    free(b);
    break;
  }
  case 2: {
    uint8_t *b = malloc(GPT2_LEN);
    memcpy(b, GPT2, GPT2_LEN);
    for (size_t i = 0; i + 4 <= n; i += 4) {
      size_t at = ((size_t)d[i] | (size_t)d[i + 1] << 8 | (size_t)d[i + 2] << 16) % GPT2_LEN;
      /* half the damage goes to the header and the first token offsets */
      if (d[i + 3] & 0x80) at %= 1024;
      b[at] ^= (uint8_t)(d[i + 3] | 1);
    }
    fix_header(b, GPT2_LEN);
    rt_tokenizer *t = rt_tokenizer_open(b, GPT2_LEN);
    if (t) use(t, d, n);
    else if (!rt_tokenizer_error()[0]) abort();
    free(b);
    break;
  }
  default:
    round_trip(GPT2_T, d, n, true);
    round_trip(CHARS_T, d, n, false);
    break;
  }
  return 0;
}
