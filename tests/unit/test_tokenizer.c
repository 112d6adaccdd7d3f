/* test_tokenizer.c — compiler/back/tokenizer.c (the table writer) with
 * runtime/rt_bpe.c (encode/decode): GPT-2 encodings of tests/data/gpt2_bpe
 * against ids computed independently at development time (OpenAI's
 * encoder.py logic with Python's regex module, the policies of circc_rt.h for
 * <|endoftext|> and ill-formed UTF-8; the cases whose text npm
 * gpt-3-encoder@1.1.4 can encode agree with it too), tiny shakespeare
 * (count, first ids, a hash of all ids, exact round trip), 2000 random byte
 * strings and 2000 random Unicode strings (round trip), the snprintf-style
 * capacities, the table's validation (checksum, truncation, structural damage
 * with a fixed-up checksum), determinism, character vocabularies and the
 * writer's error messages. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "circc_rt.h"
#include "testutil.h"

static Comp *C;
static void *BLOB;
static size_t BLOB_LEN;
static rt_tokenizer *T;

static const char *gpt2_spec(void) {
  static char spec[1100];
  snprintf(spec, sizeof spec, "gpt2-bpe:%s", tu_data("gpt2_bpe"));
  return spec;
}

static void setup(void) {
  C = tu_comp();
  cr_assert(tokenizer_build(C, gpt2_spec(), &BLOB, &BLOB_LEN), "%s", tu_diags(C));
  T = rt_tokenizer_open(BLOB, BLOB_LEN);
  cr_assert_not_null(T, "%s", rt_tokenizer_error());
}

static void teardown(void) {
  rt_tokenizer_free(T);
  tu_free(C);
}

TestSuite(tokenizer, .init = setup, .fini = teardown);

static char *read_data(const char *rel, size_t *len) {
  FILE *f = fopen(tu_data(rel), "rb");
  cr_assert_not_null(f, "cannot open %s", tu_data(rel));
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  rewind(f);
  char *s = malloc((size_t)n + 1);
  cr_assert_eq(fread(s, 1, (size_t)n, f), (size_t)n);
  fclose(f);
  s[n] = 0;
  *len = (size_t)n;
  return s;
}

/* Encodes, checks the count against a second call without room, decodes back. */
static int64_t *encode_checked(const rt_tokenizer *t, const char *s, size_t len, int64_t *n) {
  int64_t *ids = malloc((len + 1) * sizeof *ids);
  *n = rt_encode(t, s, len, ids, (int64_t)len);
  cr_assert_geq(*n, 0, "%s", rt_tokenizer_error());
  cr_assert_eq(rt_encode(t, s, len, NULL, 0), *n);
  return ids;
}

static void assert_round_trip(const rt_tokenizer *t, const char *s, size_t len) {
  int64_t n;
  int64_t *ids = encode_checked(t, s, len, &n);
  char *back = malloc(len + 1);
  size_t m = rt_decode(t, ids, n, back, len);
  cr_assert_eq(m, len, "decoded %zu bytes, expected %zu", m, len);
  cr_assert(memcmp(back, s, len) == 0, "round trip differs");
  free(back);
  free(ids);
}

/* Expected GPT-2 ids (see the file comment). */
static const struct {
  const char *name, *text;
  size_t len;
  int n;
  int ids[180];
} KNOWN[] = {
  {"story", "This is a story about Quomatarus.", 33, 10,
   {1212, 318, 257, 1621, 546, 2264, 296, 9459, 385, 13}},
  {"contractions", "I'm sure you'll see they've done what we'd said it's DON'T stop, he's 'tis o"
   "'clock", 82, 27,
   {40, 1101, 1654, 345, 1183, 766, 484, 1053, 1760, 644, 356, 1549, 531, 340, 338, 23917, 6, 51, 2245, 11, 339,
    338, 705, 48010, 267, 6, 15750}},
  {"contraction_edges", "'s 'S ' s ''s x's 'll'LL 're've'm'd't", 37, 19,
   {338, 705, 50, 705, 264, 10148, 82, 2124, 338, 705, 297, 6, 3069, 705, 260, 1053, 1101, 1549, 470}},
  {"numbers", "In 2023, 3.14159 and 1,000,000 pounds; 12345678901 x2 4th", 57, 25,
   {818, 1160, 1954, 11, 513, 13, 1415, 19707, 290, 352, 11, 830, 11, 830, 8059, 26, 17031, 2231, 3134, 4531,
    486, 2124, 17, 604, 400}},
  {"punctuation", "Wait... what?!?! --- (yes) [no] {maybe} ::= \"quoted\" #tag @user $5 100%", 71, 29,
   {21321, 986, 644, 12248, 12248, 11420, 357, 8505, 8, 685, 3919, 60, 1391, 25991, 92, 7904, 28, 366, 421,
    5191, 1, 1303, 12985, 2488, 7220, 720, 20, 1802, 4}},
  {"spaces", "a  b   c    d     e", 19, 15,
   {64, 220, 275, 220, 220, 269, 220, 220, 220, 288, 220, 220, 220, 220, 304}},
  {"newlines", "line one\nline two\n\nline four\n\n\n   \nend", 38, 16,
   {1370, 530, 198, 1370, 734, 198, 198, 1370, 1440, 628, 198, 220, 220, 220, 198, 437}},
  {"tabs", "\tindented\t\ttwice \t mixed\t", 25, 11,
   {197, 521, 4714, 197, 197, 4246, 501, 220, 197, 7668, 197}},
  {"trailing", "trailing spaces   ", 18, 6,
   {9535, 4386, 9029, 220, 220, 220}},
  {"leading", "   leading and trailing\n", 24, 6,
   {220, 220, 3756, 290, 25462, 198}},
  {"crlf", "dos\r\nline\r\n", 11, 6,
   {37427, 201, 198, 1370, 201, 198}},
  {"non_ascii", "caf\xc3\xa9 na\xc3\xafve \xc3\xbc""ber \xc3\x84rger \xd0\x96\xd0\xb8\xd0\xb7"
   "\xd0\xbd\xd1\x8c \xd0\xbf\xd1\x80\xd0\xb5\xd0\xba\xd1\x80\xd0\xb0\xd1\x81"
   "\xd0\xbd\xd0\xb0 \xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e\xe3\x81\xae\xe3\x83"
   "\x86\xe3\x82\xad\xe3\x82\xb9\xe3\x83\x88 \xc2\xaa""b \xc2\xb5s \xc2\xba""1 "
   "\xc7\x85ungla \xca\xb0x", 104, 56,
   {66, 1878, 2634, 41492, 6184, 120, 527, 6184, 226, 81, 1362, 12466, 244, 18849, 140, 115, 22177, 45367,
    12466, 123, 21169, 16843, 31583, 21169, 16142, 21727, 22177, 16142, 10545, 245, 98, 17312, 105, 45739, 252,
    5641, 24336, 25084, 43302, 1587, 103, 65, 31324, 82, 1587, 118, 16, 220, 131, 227, 2150, 5031, 220, 134,
    108, 87}},
  {"emoji", "I \xe2\x9d\xa4\xef\xb8\x8f emoji \xf0\x9f\x98\x80\xf0\x9f\x91\x8d\xf0\x9f"
   "\x8f\xbd!! \xf0\x9f\x87\xab\xf0\x9f\x87\xb7", 38, 19,
   {40, 43074, 97, 37929, 44805, 30325, 222, 41840, 235, 8582, 237, 121, 3228, 12520, 229, 104, 8582, 229,
    115}},
  {"numbers_unicode", "\xc2\xbd x\xc2\xb2 \xe2\x85\xab \xd9\xa3\xd9\xa4 \xef\xbc\x97\xef\xbc\x98", 22, 16,
   {23141, 2124, 31185, 2343, 227, 104, 18923, 96, 149, 97, 27332, 120, 245, 171, 120, 246}},
  {"unicode_spaces", "a\xc2\xa0""b\xe3\x80\x80""c\xe2\x80\xa8""d\xc2\x85""e\xe2\x80\xaf f\x1cg\n\n"
   "\xc2\x85", 26, 20,
   {64, 1849, 65, 5099, 222, 66, 447, 101, 67, 126, 227, 68, 447, 107, 277, 216, 70, 628, 126, 227}},
  {"endoftext", "Hello<|endoftext|> world<|endoftext|><|endoftext|>x <|endoftext|>\n<|endoftext", 77, 14,
   {15496, 50256, 995, 50256, 50256, 87, 220, 50256, 198, 27, 91, 437, 1659, 5239}},
  {"invalid_utf8", "abc\xff\xfe""def \x80x \xe6\x97\xa5\xe6\x97 \xed\xa0\x80 \xc0\xaf!\xf4\x90"
   "\x80\x80 x\xc1\x81y 7\xe0\x80\xb1""7\n\n\xc0\xa0 \xc3", 46, 37,
   {39305, 187, 186, 4299, 220, 222, 87, 10545, 245, 98, 33768, 220, 169, 254, 222, 220, 124, 107, 0, 176, 238,
    222, 222, 2124, 125, 223, 88, 767, 156, 222, 109, 22, 198, 198, 124, 254, 6184}},
  {"control", "nul\x00""byte del\x7f bell\x07 esc\x1b[0m !\x1c?\x1d\x1e \x1f\n\n\x1c", 38, 23,
   {77, 377, 188, 26327, 1619, 221, 8966, 195, 3671, 215, 58, 15, 76, 5145, 216, 30, 217, 218, 220, 219, 198,
    198, 216}},
  {"empty", "", 0, 0,
   {0}},
  {"long_word", " meacflcsdthnqevkpuoyshjsrmxvgelomswrhaoijawjkwqgqphrzthewteslehkalosmzwhiaa"
   "hsqcdflnhsorwulsvdjrfdjskyguzkrtvcodcjzstqkhrsccvlhkchrqbufvvqpnwpklstanhdny"
   "tcekxzwpcxzhsjraoiyhaydpbxyabilhhsaetggskykfqzrsixouiroffocvokjulldajbfvtssd"
   "ycltbwdqbxjffdobibtlqnzmkcnlcgwwrdqduuaxabhyfwmhsoiajkhwgotogsizprkwnrhdw", 301, 176,
   {502, 330, 2704, 6359, 67, 400, 77, 80, 1990, 74, 19944, 726, 1477, 8457, 26224, 87, 85, 25280, 296, 2032,
    81, 23778, 2926, 707, 73, 46265, 80, 70, 80, 746, 81, 89, 1169, 86, 4879, 293, 71, 74, 41823, 76, 89, 1929,
    544, 993, 31166, 10210, 2704, 77, 11994, 273, 86, 5753, 20306, 73, 81, 16344, 8457, 2584, 5162, 89, 38584,
    14981, 19815, 66, 73, 89, 301, 80, 14636, 3808, 535, 19279, 71, 74, 354, 81, 80, 29325, 25093, 80, 21999,
    24142, 41582, 14192, 31298, 3281, 83, 344, 74, 87, 89, 86, 14751, 87, 89, 11994, 73, 430, 78, 7745, 71, 323,
    26059, 65, 5431, 14991, 12337, 11400, 316, 1130, 15688, 74, 69, 80, 89, 3808, 844, 280, 7058, 487, 420, 85,
    482, 73, 724, 67, 1228, 19881, 36540, 824, 9892, 565, 83, 65, 16993, 80, 65, 87, 73, 487, 67, 672, 571,
    28781, 80, 27305, 28015, 66, 21283, 66, 70, 1383, 4372, 80, 646, 84, 897, 397, 12114, 69, 26377, 71, 568,
    544, 73, 14636, 86, 23442, 18463, 528, 1050, 74, 675, 17179, 67, 86}},
};

/* The long_word case's letters, from the generator its expected ids were computed with. */
static void lcg_word(char *out, int n, uint32_t seed) {
  for (int i = 0; i < n; i++) {
    seed = (seed * 1103515245u + 12345u) & 0x7fffffffu;
    out[i] = (char)('a' + (seed >> 16) % 26);
  }
}

Test(tokenizer, known_encodings) {
  for (size_t k = 0; k < sizeof KNOWN / sizeof *KNOWN; k++) {
    int64_t n, *ids = encode_checked(T, KNOWN[k].text, KNOWN[k].len, &n);
    cr_assert_eq(n, KNOWN[k].n, "%s: %lld tokens, expected %d", KNOWN[k].name, (long long)n, KNOWN[k].n);
    for (int i = 0; i < n; i++)
      cr_assert_eq(ids[i], KNOWN[k].ids[i], "%s: token %d is %lld, expected %d", KNOWN[k].name, i, (long long)ids[i],
                   KNOWN[k].ids[i]);
    assert_round_trip(T, KNOWN[k].text, KNOWN[k].len);
    free(ids);
  }
  char word[301];
  word[0] = ' ';
  lcg_word(word + 1, 300, 7);
  cr_assert(memcmp(word, KNOWN[sizeof KNOWN / sizeof *KNOWN - 1].text, sizeof word) == 0);
}

/* Long pre-tokens take the O(n log n) merge path: 1000 'a' are 250 "aaaa". */
Test(tokenizer, long_pretokens) {
  enum { N = 1000 };
  char s[N];
  memset(s, 'a', N);
  int64_t n, *ids = encode_checked(T, s, N, &n);
  cr_assert_eq(n, N / 4);
  for (int i = 0; i < n; i++) cr_assert_eq(ids[i], 24794);   /* "aaaa" */
  free(ids);
  memset(s, ' ', N);   /* a whitespace run at the end stays one pre-token: 1000 x " " */
  ids = encode_checked(T, s, N, &n);
  cr_assert_eq(n, N);
  free(ids);
}

Test(tokenizer, shakespeare) {
  size_t len;
  char *text = read_data("text/tinyshakespeare.txt", &len);
  cr_assert_eq(len, 1115394);
  int64_t n, *ids = encode_checked(T, text, len, &n);
  cr_assert_eq(n, 338025);   /* nanoGPT's shakespeare prepare.py: 301,966 train + 36,059 val */
  static const int FIRST[] = {5962, 22307, 25,  198, 8421, 356, 5120, 597, 2252, 11,
                              3285, 502,   2740, 13,  198,  198, 3237, 25,  198,  5248};
  for (int i = 0; i < 20; i++) cr_assert_eq(ids[i], FIRST[i]);
  uint32_t h = 2166136261u;  /* FNV-1a over the ids, as computed by the reference */
  for (int64_t i = 0; i < n; i++) h = (h ^ (uint32_t)ids[i]) * 16777619u;
  cr_assert_eq(h, 0xdb2f566eu, "hash of the ids 0x%08x", h);
  free(ids);
  assert_round_trip(T, text, len);
  free(text);
}

static uint64_t rng_next(uint64_t *s) {   /* xorshift64* */
  *s ^= *s >> 12;
  *s ^= *s << 25;
  *s ^= *s >> 27;
  return *s * 2685821657736338717ull;
}

Test(tokenizer, random_bytes_round_trip) {
  uint64_t s = 42;
  char buf[300];
  for (int k = 0; k < 2000; k++) {
    size_t len = rng_next(&s) % sizeof buf;
    int mode = k % 3;   /* any byte; bytes >= 0x80 (mostly ill-formed); whitespace, quotes, letters and high bytes */
    for (size_t i = 0; i < len; i++) {
      uint64_t r = rng_next(&s);
      buf[i] = mode == 0 ? (char)r : mode == 1 ? (char)(0x80 | r) : " \t\n\r's  ab1\x80\xc3\xa9\xe6\x97"[r % 17];
    }
    assert_round_trip(T, buf, len);
  }
}

/* Appends the UTF-8 of cp. */
static size_t put_utf8(char *o, uint32_t cp) {
  if (cp < 0x80) return o[0] = (char)cp, 1;
  if (cp < 0x800) return o[0] = (char)(0xC0 | cp >> 6), o[1] = (char)(0x80 | (cp & 0x3F)), 2;
  if (cp < 0x10000)
    return o[0] = (char)(0xE0 | cp >> 12), o[1] = (char)(0x80 | (cp >> 6 & 0x3F)), o[2] = (char)(0x80 | (cp & 0x3F)), 3;
  o[0] = (char)(0xF0 | cp >> 18), o[1] = (char)(0x80 | (cp >> 12 & 0x3F)), o[2] = (char)(0x80 | (cp >> 6 & 0x3F));
  o[3] = (char)(0x80 | (cp & 0x3F));
  return 4;
}

Test(tokenizer, random_unicode_round_trip) {
  uint64_t s = 7;
  char buf[4 * 80];
  for (int k = 0; k < 2000; k++) {
    size_t len = 0, nch = rng_next(&s) % 80;
    for (size_t i = 0; i < nch; i++) {
      uint64_t r = rng_next(&s);
      uint32_t cp = r % 4 == 0 ? (uint32_t)(r >> 8) % 0x80 : r % 4 == 1 ? 0x80 + (uint32_t)(r >> 8) % 0x780
                    : r % 4 == 2 ? 0x800 + (uint32_t)(r >> 8) % 0xF800 : 0x10000 + (uint32_t)(r >> 8) % 0x100000;
      if (cp >= 0xD800 && cp < 0xE000) cp = ' ';
      len += put_utf8(buf + len, cp);
    }
    assert_round_trip(T, buf, len);
  }
}

Test(tokenizer, capacities_and_lookups) {
  const char *s = "Hello world<|endoftext|>";
  int64_t ids[8] = {-1, -1, -1, -1, -1, -1, -1, -1};
  cr_assert_eq(rt_encode(T, s, strlen(s), ids, 2), 3);   /* n > cap: only cap ids written */
  cr_assert(ids[0] == 15496 && ids[1] == 995 && ids[2] == -1);
  cr_assert_eq(rt_encode(T, s, strlen(s), ids, 8), 3);
  cr_assert_eq(ids[2], 50256);
  cr_assert_eq(rt_encode(T, "", 0, NULL, 0), 0);
  cr_assert_eq(rt_encode(T, s, strlen(s), ids, -1), -1);
  cr_assert_eq(rt_encode(T, NULL, 3, ids, 8), -1);
  cr_assert_str_eq(rt_tokenizer_error(), "rt_encode: bad arguments");

  char out[32];
  memset(out, '#', sizeof out);
  cr_assert_eq(rt_decode(T, ids, 3, out, 4), 24);          /* full length, first 4 bytes stored */
  cr_assert(memcmp(out, "Hell#", 5) == 0);
  cr_assert_eq(rt_decode(T, ids, 3, NULL, 0), 24);
  cr_assert_eq(rt_decode(T, ids, 3, out, sizeof out), 24);
  cr_assert(memcmp(out, s, 24) == 0);
  int64_t bad[] = {13, 50257};
  cr_assert_eq(rt_decode(T, bad, 2, out, sizeof out), RT_DECODE_ERROR);
  cr_assert_str_eq(rt_tokenizer_error(), "token id 50257 at position 1 is out of range [0, 50257)");
  bad[1] = -1;
  cr_assert_eq(rt_decode(T, bad, 2, out, sizeof out), RT_DECODE_ERROR);

  size_t len;
  const char *p = rt_token_bytes(T, 995, &len);
  cr_assert(p && len == 6 && memcmp(p, " world", 6) == 0);
  p = rt_token_bytes(T, 50256, &len);
  cr_assert(p && len == 13 && memcmp(p, "<|endoftext|>", 13) == 0);
  cr_assert_null(rt_token_bytes(T, 50257, &len));
  cr_assert_null(rt_token_bytes(T, -1, &len));
  p = rt_token_bytes(T, 197, &len);                         /* "\t": GPT-2 spells it "ĉ" */
  cr_assert(p && len == 1 && *p == '\t');
  cr_assert_eq(rt_token_id(T, " world", 6), 995);
  cr_assert_eq(rt_token_id(T, "\n\n", 2), 628);
  cr_assert_eq(rt_token_id(T, "\xff", 1), 187);
  cr_assert_eq(rt_token_id(T, "no such token!", 14), -1);
  cr_assert_eq(rt_tokenizer_vocab_size(T), 50257);
  cr_assert_eq(rt_tokenizer_eot(T), 50256);
}

/* A streaming decoder that prints token by token gives the same bytes. */
Test(tokenizer, streaming_decode) {
  const char *s = "日本語 😀 ok";
  int64_t n, *ids = encode_checked(T, s, strlen(s), &n);
  char out[64];
  size_t at = 0;
  for (int64_t i = 0; i < n; i++) {
    size_t len;
    const char *p = rt_token_bytes(T, ids[i], &len);
    cr_assert(p && at + len <= sizeof out);
    memcpy(out + at, p, len);
    at += len;
  }
  cr_assert(at == strlen(s) && memcmp(out, s, at) == 0);
  free(ids);
}

Test(tokenizer, deterministic) {
  void *b2;
  size_t len2;
  cr_assert(tokenizer_build(C, gpt2_spec(), &b2, &len2));
  cr_assert_eq(len2, BLOB_LEN);
  cr_assert(memcmp(b2, BLOB, len2) == 0);
  cr_assert_lt(BLOB_LEN, 2300000, "table grew to %zu bytes", BLOB_LEN);
}

static uint32_t ld32(const uint8_t *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static void st32(uint8_t *p, uint32_t x) {
  for (int i = 0; i < 4; i++) p[i] = (uint8_t)(x >> 8 * i);
}
static void fix_checksum(uint8_t *b, size_t len) {
  uint32_t h = 2166136261u;
  for (size_t i = 0; i < len; i++) h = (h ^ (i / 4 == 5 ? 0 : b[i])) * 16777619u;
  st32(b + 20, h);
}

/* Opens a damaged copy of the table; expects failure with msg in the message. */
static void expect_corrupt(const uint8_t *b, size_t len, const char *msg) {
  rt_tokenizer *t = rt_tokenizer_open(b, len);
  cr_assert_null(t, "a damaged table opened (expected \"%s\")", msg);
  cr_assert(strstr(rt_tokenizer_error(), msg), "message \"%s\", expected \"%s\"", rt_tokenizer_error(), msg);
}

Test(tokenizer, validation) {
  uint8_t *b = malloc(BLOB_LEN);
  memcpy(b, BLOB, BLOB_LEN);
  expect_corrupt(b, 10, "bad magic");
  expect_corrupt(b, BLOB_LEN - 1, "truncated");
  b[BLOB_LEN / 2] ^= 1;
  expect_corrupt(b, BLOB_LEN, "checksum");
  b[BLOB_LEN / 2] ^= 1;
  b[0] = 'X';
  expect_corrupt(b, BLOB_LEN, "bad magic");
  b[0] = 'C';
  rt_tokenizer *t = rt_tokenizer_open(b, BLOB_LEN);
  cr_assert_not_null(t, "%s", rt_tokenizer_error());
  rt_tokenizer_free(t);
  /* structural damage behind a correct checksum */
  static const struct { int word; uint32_t value; const char *msg; } HEADER[] = {
      {2, 2, "version 2"},
      {3, 3, "unknown kind"},
      {6, 0, "bad token count"},
      {6, 600000, "out of bounds"},
      {7, 50257, "endoftext"},
      {8, 0xFFFFFFF0u, "out of bounds"},
      {10, 0, "token offsets"},
      {12, 3, "bad merge table"},
      {14, 1000, "bad merge table"},
      {16, 4096, "bad token table"},
      {17, 0, "bad byte table"},
      {19, 1, "reserved"},
  };
  for (size_t k = 0; k < sizeof HEADER / sizeof *HEADER; k++) {
    uint8_t save[4];
    uint8_t *w = b + 4 * HEADER[k].word;
    memcpy(save, w, 4);
    st32(w, HEADER[k].value);
    fix_checksum(b, BLOB_LEN);
    expect_corrupt(b, BLOB_LEN, HEADER[k].msg);
    memcpy(w, save, 4);
  }
  uint32_t tokoff = ld32(b + 32), str = ld32(b + 36), merges = ld32(b + 48), pairs = ld32(b + 52),
           vocab = ld32(b + 60), bytes = ld32(b + 68);
  uint8_t *copy = malloc(BLOB_LEN);
  struct { uint32_t at, value; const char *msg; } BODY[] = {
      {tokoff + 4 * 100, 0, "token offsets decrease"},
      {str + 200, 'Q', "does not find every token"},
      {merges + 8, 0, "concatenation"},
      {merges + 12 * 7 + 4, 99999, "out of range"},
      {pairs + 4 * ld32(b + 56) - 4, 50001, "slot out of range"},
      {vocab + 4, 50258, "slot out of range"},
      {bytes + 4 * 'a', 'b' - '!', "byte table"},
  };
  for (size_t k = 0; k < sizeof BODY / sizeof *BODY; k++) {
    memcpy(copy, b, BLOB_LEN);
    st32(copy + BODY[k].at, BODY[k].value);
    fix_checksum(copy, BLOB_LEN);
    expect_corrupt(copy, BLOB_LEN, BODY[k].msg);
  }
  /* a merge entry emptied: its pair slot now names nothing */
  memcpy(copy, b, BLOB_LEN);
  for (int i = 0; i < 3; i++) st32(copy + merges + 4 * i, 0xFFFFFFFFu);
  fix_checksum(copy, BLOB_LEN);
  expect_corrupt(copy, BLOB_LEN, "pair table slot");
  /* a pair slot cleared: its merge cannot be found */
  memcpy(copy, b, BLOB_LEN);
  for (uint32_t i = 0;; i++)
    if (ld32(copy + pairs + 4 * i)) {
      st32(copy + pairs + 4 * i, 0);
      break;
    }
  fix_checksum(copy, BLOB_LEN);
  expect_corrupt(copy, BLOB_LEN, "does not find every merge");
  free(copy);
  free(b);
}

static rt_tokenizer *open_chars(Comp *c, const char *spec, void **blob) {
  size_t len;
  cr_assert(tokenizer_build(c, spec, blob, &len), "%s", tu_diags(c));
  rt_tokenizer *t = rt_tokenizer_open(*blob, len);
  cr_assert_not_null(t, "%s", rt_tokenizer_error());
  return t;
}

Test(tokenizer, chars) {
  char spec[1100];
  snprintf(spec, sizeof spec, "chars:%s", tu_data("text/vocab_chars.json"));
  void *blob;
  rt_tokenizer *t = open_chars(C, spec, &blob);
  cr_assert_eq(rt_tokenizer_vocab_size(t), 65);
  cr_assert_eq(rt_tokenizer_eot(t), -1);
  int64_t ids[16];
  cr_assert_eq(rt_encode(t, "ROMEO:\nHi", 9, ids, 16), 9);
  static const int64_t WANT[] = {30, 27, 25, 17, 27, 10, 0, 20, 47};   /* id = index in the list */
  for (int i = 0; i < 9; i++) cr_assert_eq(ids[i], WANT[i]);
  cr_assert_eq(rt_encode(t, "ROMEO:\nHi", 9, ids, 4), 9);
  cr_assert_eq(rt_encode(t, "caf\xc3\xa9", 5, ids, 16), -1);
  cr_assert_str_eq(rt_tokenizer_error(), "character '\xc3\xa9' (U+00E9) at byte 3 is not in the vocabulary");
  cr_assert_eq(rt_encode(t, "a\tb", 3, ids, 16), -1);
  cr_assert_str_eq(rt_tokenizer_error(), "character U+0009 at byte 1 is not in the vocabulary");
  cr_assert_eq(rt_encode(t, "ab\xff", 3, ids, 16), -1);
  cr_assert_str_eq(rt_tokenizer_error(), "ill-formed UTF-8 at byte 2 (0xFF)");
  size_t len;
  char *text = read_data("text/tinyshakespeare.txt", &len);
  assert_round_trip(t, text, len);
  int64_t n;
  int64_t *all = encode_checked(t, text, len, &n);
  cr_assert_eq(n, (int64_t)len);
  cr_assert_eq(all[0], 18);   /* 'F' */
  free(all);
  free(text);
  rt_tokenizer_free(t);
}

/* The other spellings of a character vocabulary: a list, and one string, with non-ASCII characters. */
Test(tokenizer, chars_list_and_string) {
  char path[64], spec[80];
  snprintf(path, sizeof path, "/tmp/circc_test_chars_%d.json", (int)getpid());
  snprintf(spec, sizeof spec, "chars:%s", path);
  static const char *const FILES[] = {"[\"\\n\", \"a\", \"\\u00e9\", \"\xe6\x97\xa5\", \"\xf0\x9f\x98\x80\"]",
                                      "\"\\na\xc3\xa9\xe6\x97\xa5\xf0\x9f\x98\x80\""};
  for (int k = 0; k < 2; k++) {
    FILE *f = fopen(path, "w");
    fputs(FILES[k], f);
    fclose(f);
    void *blob;
    rt_tokenizer *t = open_chars(C, spec, &blob);
    cr_assert_eq(rt_tokenizer_vocab_size(t), 5);
    const char *s = "\xf0\x9f\x98\x80\xe6\x97\xa5\xc3\xa9" "a\n";
    int64_t ids[8];
    cr_assert_eq(rt_encode(t, s, strlen(s), ids, 8), 5);
    for (int i = 0; i < 5; i++) cr_assert_eq(ids[i], 4 - i);
    char out[16];
    cr_assert_eq(rt_decode(t, ids, 5, out, sizeof out), strlen(s));
    cr_assert(memcmp(out, s, strlen(s)) == 0);
    rt_tokenizer_free(t);
  }
  unlink(path);
}

/* Writes text to a temporary file (or, with dir, DIR/name) and returns its path. */
static const char *temp_file(const char *dir, const char *name, const char *text) {
  static char path[4][256];
  static int k;
  k = (k + 1) % 4;
  snprintf(path[k], sizeof path[k], "%s/%s", dir, name);
  FILE *f = fopen(path[k], "w");
  cr_assert_not_null(f);
  fputs(text, f);
  fclose(f);
  return path[k];
}

static void expect_build_error(const char *spec, int cls, const char *msg) {
  Comp *c = tu_comp();
  void *blob;
  size_t len;
  cr_assert_not(tokenizer_build(c, spec, &blob, &len), "%s built", spec);
  cr_assert_eq(diag_exit_code(c), cls, "%s: exit class %d, diagnostics: %s", spec, diag_exit_code(c), tu_diags(c));
  cr_assert(strstr(tu_diags(c), msg), "%s: diagnostics \"%s\", expected \"%s\"", spec, tu_diags(c), msg);
  tu_free(c);
}

/* Writes the start of an encoder.json: the 256 byte tokens, id = byte; returns the end. */
static char *byte_tokens(char *o) {
  o += sprintf(o, "{");
  for (int b = 0, extra = 0; b < 256; b++) {
    bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    int cp = printable ? b : 256 + extra++;
    char u[5] = {0};
    put_utf8(u, (uint32_t)cp);
    o += sprintf(o, "%s\"%s\": %d", b ? ", " : "", cp == '"' ? "\\\"" : cp == '\\' ? "\\\\" : u, b);
  }
  return o;
}

/* A tokenizer of the 256 byte tokens, <|endoftext|> (256), `extra` tokens and `merges`, in dir. */
static rt_tokenizer *small_bpe(const char *dir, const char *extra, const char *merges) {
  char spec[128], *enc = malloc(8192);
  sprintf(byte_tokens(enc), ", \"<|endoftext|>\": 256%s}", extra);
  temp_file(dir, "encoder.json", enc);
  temp_file(dir, "vocab.bpe", merges);
  free(enc);
  snprintf(spec, sizeof spec, "gpt2-bpe:%s", dir);
  void *blob;
  size_t len;
  cr_assert(tokenizer_build(C, spec, &blob, &len), "%s", tu_diags(C));
  rt_tokenizer *t = rt_tokenizer_open(blob, len);
  cr_assert_not_null(t, "%s", rt_tokenizer_error());
  return t;
}

/* Encodes text and compares with the ids in want (n of them). */
static void expect_ids(const rt_tokenizer *t, const char *text, const int64_t *want, int64_t n) {
  int64_t ids[128];
  cr_assert_eq(rt_encode(t, text, strlen(text), ids, 128), n, "\"%s\": %lld tokens", text,
               (long long)rt_encode(t, text, strlen(text), NULL, 0));
  for (int64_t i = 0; i < n; i++) cr_assert_eq(ids[i], want[i], "\"%s\": token %lld", text, (long long)i);
}

/* Merges apply in GPT-2's order even when the file is not in training order
 * (a merge ranked before the merges that make its parts): all pairs of the
 * lowest rank, left to right, and only then the pairs those merges created,
 * even if of lower rank. Expected results from GPT-2's encoder.py with the same
 * ranks; short pre-tokens and long ones (> 48 bytes) take different paths. */
Test(tokenizer, merge_order) {
  char dir[] = "/tmp/circc_test_tok_XXXXXX";
  cr_assert_not_null(mkdtemp(dir));
  char abab[121] = {0}, babab[122] = "b";
  for (int i = 0; i < 120; i += 2) memcpy(abab + i, "ab", 2);
  memcpy(babab + 1, abab, 120);
  int64_t want[64];
  /* ranks: "ab a" 0, "a b" 1. "abab": "ab" "ab", not "aba" "b" */
  rt_tokenizer *t = small_bpe(dir, ", \"ab\": 257, \"aba\": 258", "#version: 0.2\nab a\na b\n");
  for (int i = 0; i < 60; i++) want[i] = 257;
  expect_ids(t, "abab", want, 2);
  expect_ids(t, abab, want, 60);
  expect_ids(t, "abaab", (const int64_t[]){258, 257}, 2);
  rt_tokenizer_free(t);
  /* ranks: "ab ab" 0, "b ab" 1, "a b" 2. "babab": "b" "abab", not "bab" "ab" */
  t = small_bpe(dir, ", \"ab\": 257, \"abab\": 258, \"bab\": 259", "#version: 0.2\nab ab\nb ab\na b\n");
  want[0] = 'b';
  for (int i = 1; i < 31; i++) want[i] = 258;
  expect_ids(t, "babab", want, 2);
  expect_ids(t, babab, want, 31);
  rt_tokenizer_free(t);
  unlink(temp_file(dir, "encoder.json", ""));
  unlink(temp_file(dir, "vocab.bpe", ""));
  rmdir(dir);
}

Test(tokenizer, build_errors) {
  char dir[] = "/tmp/circc_test_tok_XXXXXX";
  cr_assert_not_null(mkdtemp(dir));
  char spec[128];
  expect_build_error("sentencepiece:x", DIAG_USAGE, "unknown tokenizer 'sentencepiece:x'");
  snprintf(spec, sizeof spec, "gpt2-bpe:%s/none", dir);
  expect_build_error(spec, DIAG_IO, "none/encoder.json: error: cannot read tokenizer file: No such file");
  /* a device would be read forever, a FIFO would block: both refused at once */
  expect_build_error("chars:/dev/zero", DIAG_IO, "cannot read tokenizer file: not a regular file");
  char fifo[64];
  snprintf(fifo, sizeof fifo, "%s/fifo.json", dir);
  cr_assert_eq(mkfifo(fifo, 0600), 0);
  snprintf(spec, sizeof spec, "chars:%.64s", fifo);
  expect_build_error(spec, DIAG_IO, "cannot read tokenizer file: not a regular file (a device, FIFO or socket)");
  unlink(fifo);
  snprintf(spec, sizeof spec, "gpt2-bpe:%s", dir);
  /* a minimal valid vocabulary: the 256 byte characters, <|endoftext|> and one merge */
  char *enc = malloc(8192), *o = byte_tokens(enc);
  sprintf(o, ", \"<|endoftext|>\": 256, \"ab\": 257}");
  temp_file(dir, "encoder.json", enc);
  temp_file(dir, "vocab.bpe", "#version: 0.2\na b\n");
  void *blob;
  size_t len;
  cr_assert(tokenizer_build(C, spec, &blob, &len), "%s", tu_diags(C));
  rt_tokenizer *t = rt_tokenizer_open(blob, len);
  cr_assert_not_null(t, "%s", rt_tokenizer_error());
  int64_t ids[4];
  cr_assert_eq(rt_encode(t, "abc", 3, ids, 4), 2);
  cr_assert(ids[0] == 257 && ids[1] == 'c');
  rt_tokenizer_free(t);

  temp_file(dir, "vocab.bpe", "#version: 0.2\na  b\n");
  expect_build_error(spec, DIAG_IO, "vocab.bpe:2: expected a merge");
  temp_file(dir, "vocab.bpe", "#version: 0.2\nb c\n");
  expect_build_error(spec, DIAG_IO, "vocab.bpe:2: the merge of \"b\" and \"c\" is not a token");
  /* "éé" is not a token: the merge can never apply, and is kept as an empty entry */
  temp_file(dir, "vocab.bpe", "#version: 0.2\nx \xc3\xa9\xc3\xa9\n");
  cr_assert(tokenizer_build(C, spec, &blob, &len), "%s", tu_diags(C));
  /* a pair listed twice keeps its later rank (GPT-2's dict); the earlier entry is emptied */
  temp_file(dir, "vocab.bpe", "#version: 0.2\r\na b\r\nb c\r\na b\r\n");
  strcpy(o, ", \"<|endoftext|>\": 256, \"ab\": 257, \"bc\": 258}");
  temp_file(dir, "encoder.json", enc);
  cr_assert(tokenizer_build(C, spec, &blob, &len), "%s", tu_diags(C));
  t = rt_tokenizer_open(blob, len);
  cr_assert_not_null(t, "%s", rt_tokenizer_error());
  cr_assert_eq(ld32((const uint8_t *)blob + ld32((const uint8_t *)blob + 48)), 0xFFFFFFFFu);
  cr_assert_eq(rt_encode(t, "abc", 3, ids, 4), 2);   /* "b c" (rank 1) now comes before "a b" (rank 2) */
  cr_assert(ids[0] == 'a' && ids[1] == 258);
  rt_tokenizer_free(t);
  strcpy(o, ", \"<|endoftext|>\": 256, \"ab\": 258}");
  temp_file(dir, "encoder.json", enc);
  expect_build_error(spec, DIAG_IO, "token \"ab\": expected a distinct integer id in [0, 258)");
  strcpy(o, ", \"<|endoftext|>\": 256, \"a b\": 257}");
  temp_file(dir, "encoder.json", enc);
  expect_build_error(spec, DIAG_IO, "token \"a b\" (id 257) is not spelled with GPT-2's 256 byte characters");
  strcpy(o, ", \"<|endoftext|>\": 256, \"ab\": 257");
  temp_file(dir, "encoder.json", enc);
  expect_build_error(spec, DIAG_IO, "malformed JSON");
  strcpy(o, ", \"ab\": 256}");
  temp_file(dir, "encoder.json", enc);
  expect_build_error(spec, DIAG_IO, "no \"<|endoftext|>\" token");
  free(enc);

  snprintf(spec, sizeof spec, "chars:%s", temp_file(dir, "v.json", "[\"a\", \"bc\"]"));
  expect_build_error(spec, DIAG_IO, "vocabulary entry 1 is not a single character");
  snprintf(spec, sizeof spec, "chars:%s", temp_file(dir, "v.json", "\"abca\""));
  expect_build_error(spec, DIAG_IO, "character 3 (\"a\") appears twice");
  snprintf(spec, sizeof spec, "chars:%s", temp_file(dir, "v.json", "{\"vocab\": []}"));
  expect_build_error(spec, DIAG_IO, "expected a list of characters");
  snprintf(spec, sizeof spec, "chars:%s", temp_file(dir, "v.json", "[]"));
  expect_build_error(spec, DIAG_IO, "empty");
  static const char *const NAMES[] = {"encoder.json", "vocab.bpe", "v.json"};
  for (int i = 0; i < 3; i++) unlink(temp_file(dir, NAMES[i], ""));
  rmdir(dir);
}
