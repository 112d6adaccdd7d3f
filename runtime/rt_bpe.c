/* rt_bpe.c — text <-> token ids for programs compiled with a tokenizer:
 * GPT-2's byte-level BPE and character vocabularies (API and semantics in
 * circc_rt.h). libc only.
 *
 * The table ("blob") is written by circc (compiler/back/tokenizer.c) and used in
 * place. Every integer is an unsigned 32-bit little-endian word; every offset
 * counts bytes from the start of the blob; NONE = 0xFFFFFFFF.
 *
 *   header, 20 words (80 bytes):
 *     0-1  magic "CIRCCTOK"      2 version (1)        3 kind: 1 GPT-2 BPE, 2 characters
 *     4    total length          5 checksum: FNV-1a (32-bit) of the whole blob with this word zero
 *     6    ntokens (ids 0..ntokens-1)                 7 id of <|endoftext|> or NONE
 *     8    offset of the token offsets: ntokens+1 words, off[0] = 0, non-decreasing;
 *          token i is the bytes [off[i], off[i+1]) of the string section, never empty
 *     9    offset of the string section     10 its length (= off[ntokens])
 *     11   nmerges (BPE: the merge lines of vocab.bpe)
 *     12   offset of the merges: nmerges entries {left id, right id, result id}; entry r
 *          has rank r; {NONE, NONE, NONE} for a line that can never apply (a part
 *          that is not a token, or a pair repeated later: the later rank wins, as in
 *          GPT-2's dict); otherwise bytes(result) = bytes(left) bytes(right)
 *     13-14 offset and capacity (a power of two, or 0) of the pair table: slots
 *          holding rank + 1 or 0 (empty), linear probing from pair_hash(left, right)
 *     15-16 offset and capacity (a power of two) of the token table: slots holding
 *          id + 1 or 0, linear probing from bytes_hash(token bytes)
 *     17   offset of the byte table (BPE): 256 words, the id of each one-byte token
 *     18-19 zero
 *   then the sections, each 4-byte aligned, in the order above.
 *
 * GPT-2 tokens are stored as raw bytes: circc undoes GPT-2's byte <-> Unicode
 * mapping (bytes_to_unicode) of encoder.json and vocab.bpe. Encoding is then
 * GPT-2's: the text is split into pre-tokens by GPT-2's regex, implemented
 * here by hand (pretoken_end), each pre-token starts as its bytes' one-byte
 * tokens and the lowest-ranked adjacent pair is merged, every occurrence left
 * to right, until no pair has a rank (bpe_small; bpe_long gives the same result
 * in O(n log n) for long pre-tokens). Character classes: \p{L}, \p{N} and \s
 * (White_Space) of Unicode 14.0 (rt_unicode_tables.h); each byte that does not
 * belong to a well-formed UTF-8 character is a character of its own of class
 * "other" (neither letter, number nor space), exactly as if the text had been
 * decoded with Python's errors="surrogateescape". No cache of pre-token
 * results: about 50 MB/s on tiny shakespeare without one. rt_tokenizer_open
 * validates everything the encoder and decoder rely on, so a corrupt blob
 * cannot make them read out of bounds or loop. */
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "circc_rt.h"
#include "rt_unicode_tables.h"

#define NONE 0xFFFFFFFFu
#define MAX_TEXT 0x7FFFFFFFu          /* longest text rt_encode accepts */
enum { HEADER_BYTES = 80, KIND_BPE = 1, KIND_CHARS = 2, VERSION = 1, SMALL = 48 };
enum { H_MAGIC0, H_MAGIC1, H_VERSION, H_KIND, H_TOTAL, H_CHECKSUM, H_NTOKENS, H_EOT, H_TOKOFF, H_STR, H_STRLEN,
       H_NMERGES, H_MERGES, H_PAIRS, H_PAIRCAP, H_VOCAB, H_VOCABCAP, H_BYTES, H_ZERO1, H_ZERO2 };

struct rt_tokenizer {
  int kind;
  uint32_t ntokens, eot, nmerges, pair_mask, vocab_mask;
  const uint8_t *off, *str, *merges, *pairs, *vocab;
  uint32_t byte_id[256];
};

static _Thread_local char last_error[256];

const char *rt_tokenizer_error(void) { return last_error; }

static __attribute__((format(printf, 1, 2))) void fail(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(last_error, sizeof last_error, fmt, ap);
  va_end(ap);
}

static uint32_t ld32(const uint8_t *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* The hashes of the two tables; compiler/back/tokenizer.c computes the same. */
static uint32_t mix32(uint32_t x) {
  x ^= x >> 16;
  x *= 0x7feb352du;
  x ^= x >> 15;
  x *= 0x846ca68bu;
  return x ^ (x >> 16);
}
static uint32_t pair_hash(uint32_t a, uint32_t b) { return mix32(a * 0x9e3779b1u + b + 1); }
static uint32_t bytes_hash(const uint8_t *s, size_t n) {
  uint32_t h = 2166136261u;
  for (size_t i = 0; i < n; i++) h = (h ^ s[i]) * 16777619u;
  return mix32(h);
}

/* ---- table access ---- */

static const uint8_t *tok(const rt_tokenizer *t, uint32_t id, size_t *len) {
  uint32_t a = ld32(t->off + 4 * (size_t)id), b = ld32(t->off + 4 * (size_t)id + 4);
  *len = b - a;
  return t->str + a;
}

/* Rank of the merge of the pair (a, b), or NONE. Probes at most the whole table. */
static uint32_t pair_rank(const rt_tokenizer *t, uint32_t a, uint32_t b) {
  if (!t->pairs) return NONE;
  for (uint32_t h = pair_hash(a, b), k = 0; k <= t->pair_mask; k++, h++) {
    uint32_t v = ld32(t->pairs + 4 * (size_t)(h & t->pair_mask));
    if (v == 0) return NONE;
    const uint8_t *m = t->merges + 12 * (size_t)(v - 1);
    if (ld32(m) == a && ld32(m + 4) == b) return v - 1;
  }
  return NONE;
}

static uint32_t merge_result(const rt_tokenizer *t, uint32_t rank) { return ld32(t->merges + 12 * (size_t)rank + 8); }

static uint32_t vocab_find(const rt_tokenizer *t, const uint8_t *s, size_t n) {
  for (uint32_t h = bytes_hash(s, n), k = 0; k <= t->vocab_mask; k++, h++) {
    uint32_t v = ld32(t->vocab + 4 * (size_t)(h & t->vocab_mask));
    if (v == 0) return NONE;
    size_t len;
    const uint8_t *p = tok(t, v - 1, &len);
    if (len == n && memcmp(p, s, n) == 0) return v - 1;
  }
  return NONE;
}

/* ---- UTF-8 and character classes ---- */

/* Length of the well-formed UTF-8 character at s[0..n) (n >= 1; Unicode table
 * 3-7: no overlong forms, surrogates or code points above U+10FFFF) with its
 * code point in *cp, or 1 with *cp = -1 for a byte that starts none. */
static int utf8_char(const uint8_t *s, size_t n, int32_t *cp) {
  uint8_t b = s[0];
  *cp = -1;
  if (b < 0x80) {
    *cp = b;
    return 1;
  }
  int len;
  uint8_t lo = 0x80, hi = 0xBF;        /* allowed range of the second byte */
  if (b >= 0xC2 && b <= 0xDF) len = 2;
  else if (b >= 0xE0 && b <= 0xEF) {
    len = 3;
    if (b == 0xE0) lo = 0xA0;
    if (b == 0xED) hi = 0x9F;
  } else if (b >= 0xF0 && b <= 0xF4) {
    len = 4;
    if (b == 0xF0) lo = 0x90;
    if (b == 0xF4) hi = 0x8F;
  } else return 1;
  if (n < (size_t)len || s[1] < lo || s[1] > hi) return 1;
  int32_t c = b & (0x7F >> len);
  for (int i = 1; i < len; i++) {
    if (i > 1 && (s[i] & 0xC0) != 0x80) return 1;
    c = c << 6 | (s[i] & 0x3F);
  }
  *cp = c;
  return len;
}

enum { C_OTHER, C_LETTER, C_NUMBER, C_SPACE };

/* GPT-2's classes: \p{L}, \p{N}, \s (White_Space) or other; -1 (ill-formed) is other. */
static int char_class(int32_t cp) {
  if (cp < 0x80) {
    if (cp < 0) return C_OTHER;
    if ((unsigned)((cp | 32) - 'a') < 26) return C_LETTER;
    if ((unsigned)(cp - '0') < 10) return C_NUMBER;
    return cp == ' ' || (cp >= 9 && cp <= 13) ? C_SPACE : C_OTHER;
  }
  size_t lo = 0, hi = sizeof rt_uni_ranges / sizeof *rt_uni_ranges;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    if ((uint32_t)cp > rt_uni_ranges[mid].hi) lo = mid + 1;
    else if ((uint32_t)cp < rt_uni_ranges[mid].lo) hi = mid;
    else return rt_uni_ranges[mid].cls == 'L' ? C_LETTER : rt_uni_ranges[mid].cls == 'N' ? C_NUMBER : C_SPACE;
  }
  return C_OTHER;
}

/* Class and byte length of the character at s[i] (i < e). */
static int class_at(const uint8_t *s, size_t i, size_t e, int *len) {
  if (s[i] < 0x80) {
    *len = 1;
    return char_class(s[i]);
  }
  int32_t cp;
  *len = utf8_char(s + i, e - i, &cp);
  return char_class(cp);
}

/* End of the pre-token that starts at s[i] (i < e): the match of GPT-2's
 *   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 * at i, alternatives tried in order as Python's regex module does. */
static size_t pretoken_end(const uint8_t *s, size_t i, size_t e) {
  if (s[i] == '\'' && i + 1 < e) {   /* contractions, case-sensitive */
    uint8_t a = s[i + 1], b = i + 2 < e ? s[i + 2] : 0;
    if (a == 's' || a == 't' || a == 'm' || a == 'd') return i + 2;
    if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return i + 3;
  }
  int len, cls = class_at(s, i, e, &len);
  size_t j = i + (size_t)len;
  if (s[i] == ' ' && j < e) {        /* " ?": a space joins a following run */
    int len2, cls2 = class_at(s, j, e, &len2);
    if (cls2 != C_SPACE) {
      cls = cls2;
      j += (size_t)len2;
    }
  }
  if (cls != C_SPACE) {              /* \p{L}+, \p{N}+ or [^\s\p{L}\p{N}]+ */
    while (j < e && class_at(s, j, e, &len) == cls) j += (size_t)len;
    return j;
  }
  size_t last = i;                   /* start of the run's last character */
  while (j < e && class_at(s, j, e, &len) == C_SPACE) {
    last = j;
    j += (size_t)len;
  }
  /* \s+(?!\S): the whole run at the end of the text, else all but its last
   * character (which then joins what follows); \s+: a lone character */
  return j == e || last == i ? j : last;
}

/* ---- BPE ---- */

typedef struct Out {
  int64_t *ids;
  int64_t cap, n;
} Out;

static void emit(Out *o, uint32_t id) {
  if (o->n < o->cap) o->ids[o->n] = id;
  o->n++;
}

/* GPT-2's bpe() on n <= SMALL symbols: find the lowest rank among adjacent
 * pairs, merge every occurrence of that pair left to right, repeat. */
static void bpe_small(const rt_tokenizer *t, const uint8_t *s, size_t n, Out *o) {
  uint32_t sym[SMALL], rank[SMALL];
  for (size_t k = 0; k < n; k++) sym[k] = t->byte_id[s[k]];
  for (size_t k = 0; k + 1 < n; k++) rank[k] = pair_rank(t, sym[k], sym[k + 1]);
  while (n > 1) {
    uint32_t r = NONE;
    for (size_t k = 0; k + 1 < n; k++)
      if (rank[k] < r) r = rank[k];
    if (r == NONE) break;
    uint32_t merged = merge_result(t, r);
    size_t w = 0;
    for (size_t k = 0; k < n; w++) {
      if (k + 1 < n && rank[k] == r) {
        sym[w] = merged;
        k += 2;
      } else sym[w] = sym[k++];
    }
    n = w;
    for (size_t k = 0; k + 1 < n; k++) rank[k] = pair_rank(t, sym[k], sym[k + 1]);
  }
  for (size_t k = 0; k < n; k++) emit(o, sym[k]);
}

/* A pair waiting to be merged: (rank, pos) orders the heap; left/right are
 * the ids it was made of, so an entry whose symbols have changed is skipped. */
typedef struct Cand {
  uint32_t rank, pos, left, right;
} Cand;

static bool cand_less(const Cand *a, const Cand *b) {
  return a->rank < b->rank || (a->rank == b->rank && a->pos < b->pos);
}

static void heap_push(Cand *h, size_t *n, Cand c) {
  size_t i = (*n)++;
  while (i > 0 && cand_less(&c, &h[(i - 1) / 2])) {
    h[i] = h[(i - 1) / 2];
    i = (i - 1) / 2;
  }
  h[i] = c;
}

static Cand heap_pop(Cand *h, size_t *n) {
  Cand top = h[0], last = h[--*n];
  size_t i = 0;
  for (;;) {
    size_t c = 2 * i + 1;
    if (c >= *n) break;
    if (c + 1 < *n && cand_less(&h[c + 1], &h[c])) c++;
    if (!cand_less(&h[c], &last)) break;
    h[i] = h[c];
    i = c;
  }
  if (*n) h[i] = last;
  return top;
}

/* The same result as bpe_small for any n, in O(n log n): symbols form a linked
 * list indexed by their first byte; candidate pairs sit in a heap by (rank,
 * position). All pairs of the lowest rank r are merged in position order (as
 * GPT-2's left-to-right pass does); pairs those merges create wait in `fresh`
 * until rank r is done, because GPT-2 looks for the next lowest rank only then.
 * False if out of memory. */
static bool bpe_long(const rt_tokenizer *t, const uint8_t *s, size_t n, Out *o) {
  /* The heap holds at most the n-1 initial pairs plus one per merge (a merge
   * pops one entry and adds two); one rank's merges are disjoint pairs, so at
   * most n/2 of them, adding at most n fresh pairs. */
  if (n > SIZE_MAX / (3 * sizeof(Cand))) return false;
  uint32_t *id = malloc(n * sizeof *id), *next = malloc(n * sizeof *next), *prev = malloc(n * sizeof *prev);
  Cand *heap = malloc(3 * n * sizeof *heap), *fresh = heap + 2 * n;
  bool ok = id && next && prev && heap;
  if (ok) {
    size_t nh = 0;
    for (size_t k = 0; k < n; k++) {
      id[k] = t->byte_id[s[k]];
      next[k] = k + 1 < n ? (uint32_t)(k + 1) : NONE;
      prev[k] = k ? (uint32_t)(k - 1) : NONE;
    }
    for (size_t k = 0; k + 1 < n; k++) {
      uint32_t r = pair_rank(t, id[k], id[k + 1]);
      if (r != NONE) heap_push(heap, &nh, (Cand){r, (uint32_t)k, id[k], id[k + 1]});
    }
    while (nh) {
      uint32_t r = heap[0].rank;
      size_t nf = 0;
      while (nh && heap[0].rank == r) {
        Cand c = heap_pop(heap, &nh);
        uint32_t p = c.pos, q = next[p];
        if (id[p] != c.left || q == NONE || id[q] != c.right) continue;   /* stale */
        id[p] = merge_result(t, r);
        id[q] = NONE;
        next[p] = next[q];
        if (next[q] != NONE) prev[next[q]] = p;
        uint32_t a = prev[p], b = next[p], ra, rb;
        if (a != NONE && (ra = pair_rank(t, id[a], id[p])) != NONE) fresh[nf++] = (Cand){ra, a, id[a], id[p]};
        if (b != NONE && (rb = pair_rank(t, id[p], id[b])) != NONE) fresh[nf++] = (Cand){rb, p, id[p], id[b]};
      }
      for (size_t k = 0; k < nf; k++) heap_push(heap, &nh, fresh[k]);
    }
    for (uint32_t p = 0; p != NONE; p = next[p]) emit(o, id[p]);
  }
  free(id);
  free(next);
  free(prev);
  free(heap);
  return ok;
}

/* Pre-tokenizes and encodes s[0..n), which holds no special token. */
static bool encode_ordinary(const rt_tokenizer *t, const uint8_t *s, size_t n, Out *o) {
  for (size_t i = 0; i < n;) {
    size_t j = pretoken_end(s, i, n);
    if (j - i == 1) emit(o, t->byte_id[s[i]]);
    else if (j - i <= SMALL) bpe_small(t, s + i, j - i, o);
    else if (!bpe_long(t, s + i, j - i, o)) return false;
    i = j;
  }
  return true;
}

int64_t rt_encode(const rt_tokenizer *t, const char *utf8, size_t len, int64_t *ids, int64_t cap) {
  if (!t || (!utf8 && len) || cap < 0 || (!ids && cap)) {
    fail("rt_encode: bad arguments");
    return -1;
  }
  if (len > MAX_TEXT) {
    fail("text too long: %zu bytes (at most %u)", len, MAX_TEXT);
    return -1;
  }
  const uint8_t *s = (const uint8_t *)utf8;
  Out o = {ids, cap, 0};
  if (t->kind == KIND_CHARS) {
    for (size_t i = 0; i < len;) {
      int32_t cp;
      int n = utf8_char(s + i, len - i, &cp);
      if (cp < 0) {
        fail("ill-formed UTF-8 at byte %zu (0x%02X)", i, s[i]);
        return -1;
      }
      uint32_t id = vocab_find(t, s + i, (size_t)n);
      if (id == NONE) {
        if (cp >= 0x20 && cp != 0x7F)
          fail("character '%.*s' (U+%04X) at byte %zu is not in the vocabulary", n, utf8 + i, (unsigned)cp, i);
        else fail("character U+%04X at byte %zu is not in the vocabulary", (unsigned)cp, i);
        return -1;
      }
      emit(&o, id);
      i += (size_t)n;
    }
    return o.n;
  }
  size_t elen = 0;
  const uint8_t *eot = t->eot == NONE ? NULL : tok(t, t->eot, &elen);
  size_t start = 0;
  for (size_t i = 0; eot && i + elen <= len; i++) {
    const uint8_t *p = memchr(s + i, eot[0], len - elen + 1 - i);
    if (!p) break;
    i = (size_t)(p - s);
    if (memcmp(p, eot, elen) != 0) continue;
    if (!encode_ordinary(t, s + start, i - start, &o)) goto oom;
    emit(&o, t->eot);
    start = i + elen;
    i = start - 1;
  }
  if (!encode_ordinary(t, s + start, len - start, &o)) goto oom;
  return o.n;
oom:
  fail("out of memory encoding %zu bytes", len);
  return -1;
}

size_t rt_decode(const rt_tokenizer *t, const int64_t *ids, int64_t n, char *out, size_t cap) {
  if (!t || n < 0 || (!ids && n) || (!out && cap)) {
    fail("rt_decode: bad arguments");
    return RT_DECODE_ERROR;
  }
  size_t total = 0;
  for (int64_t k = 0; k < n; k++) {
    if (ids[k] < 0 || ids[k] >= t->ntokens) {
      fail("token id %lld at position %lld is out of range [0, %u)", (long long)ids[k], (long long)k, t->ntokens);
      return RT_DECODE_ERROR;
    }
    size_t len;
    const uint8_t *p = tok(t, (uint32_t)ids[k], &len);
    if (total < cap) memcpy(out + total, p, cap - total < len ? cap - total : len);
    total += len;
  }
  return total;
}

const char *rt_token_bytes(const rt_tokenizer *t, int64_t id, size_t *len) {
  if (!t || id < 0 || id >= t->ntokens) return NULL;
  size_t n;
  const uint8_t *p = tok(t, (uint32_t)id, &n);
  if (len) *len = n;
  return (const char *)p;
}

int64_t rt_token_id(const rt_tokenizer *t, const char *s, size_t len) {
  if (!t || (!s && len)) return -1;
  uint32_t id = vocab_find(t, (const uint8_t *)s, len);
  return id == NONE ? -1 : (int64_t)id;
}

int64_t rt_tokenizer_vocab_size(const rt_tokenizer *t) { return t ? t->ntokens : 0; }
int64_t rt_tokenizer_eot(const rt_tokenizer *t) { return t && t->eot != NONE ? (int64_t)t->eot : -1; }

void rt_tokenizer_free(rt_tokenizer *t) { free(t); }

/* ---- validation ---- */

/* Whether [off, off + count*size) lies inside the blob, off 4-byte aligned. */
static bool section_ok(uint64_t total, uint32_t off, uint64_t count, uint64_t size) {
  return off % 4 == 0 && off >= HEADER_BYTES && off <= total && count * size <= total - off;
}

static bool utf8_one_char(const uint8_t *s, size_t n) {
  int32_t cp;
  return n && (size_t)utf8_char(s, n, &cp) == n && cp >= 0;
}

rt_tokenizer *rt_tokenizer_open(const void *blob, size_t len) {
  const uint8_t *b = blob;
  if (!b || len < HEADER_BYTES || memcmp(b, "CIRCCTOK", 8) != 0) {
    fail("not a circc tokenizer table (%zu bytes, bad magic)", len);
    return NULL;
  }
  uint32_t h[HEADER_BYTES / 4];
  for (int i = 0; i < HEADER_BYTES / 4; i++) h[i] = ld32(b + 4 * i);
  if (h[H_VERSION] != VERSION) {
    fail("tokenizer table version %u, this runtime reads version %d", h[H_VERSION], VERSION);
    return NULL;
  }
  if (h[H_TOTAL] != len) {
    fail("tokenizer table truncated or padded: header says %u bytes, found %zu", h[H_TOTAL], len);
    return NULL;
  }
  uint32_t sum = 2166136261u;
  for (size_t i = 0; i < len; i++) sum = (sum ^ (i / 4 == H_CHECKSUM ? 0 : b[i])) * 16777619u;
  if (sum != h[H_CHECKSUM]) {
    fail("tokenizer table corrupt: checksum 0x%08X, expected 0x%08X", sum, h[H_CHECKSUM]);
    return NULL;
  }
  rt_tokenizer *t = calloc(1, sizeof *t);
  if (!t) {
    fail("out of memory");
    return NULL;
  }
  const char *why = NULL;
  uint64_t n = h[H_NTOKENS], nm = h[H_NMERGES], total = len;
  t->kind = (int)h[H_KIND];
  t->ntokens = h[H_NTOKENS];
  t->eot = h[H_EOT];
  t->nmerges = h[H_NMERGES];
  t->pair_mask = h[H_PAIRCAP] - 1;
  t->vocab_mask = h[H_VOCABCAP] - 1;
  bool bpe = t->kind == KIND_BPE;
  uint32_t pcap = h[H_PAIRCAP], vcap = h[H_VOCABCAP];
  if (t->kind != KIND_BPE && t->kind != KIND_CHARS) why = "unknown kind";
  else if (h[H_ZERO1] || h[H_ZERO2]) why = "reserved header words are not zero";
  else if (n == 0 || n >= 0x7FFFFFFF) why = "bad token count";
  else if (!section_ok(total, h[H_TOKOFF], n + 1, 4) || !section_ok(total, h[H_STR], h[H_STRLEN], 1))
    why = "tokens out of bounds";
  else if (vcap < 2 * n || (vcap & (vcap - 1)) || !section_ok(total, h[H_VOCAB], vcap, 4)) why = "bad token table";
  else if (bpe ? t->eot >= n : t->eot != NONE) why = "bad <|endoftext|> id";
  else if (bpe ? !section_ok(total, h[H_BYTES], 256, 4) : h[H_BYTES] != 0) why = "bad byte table";
  else if (!bpe && (nm || pcap || h[H_MERGES] || h[H_PAIRS])) why = "merges in a character table";
  else if (bpe && (!section_ok(total, h[H_MERGES], nm, 12) || (nm && (pcap < 2 * nm || (pcap & (pcap - 1)))) ||
                   (!nm && pcap) || !section_ok(total, h[H_PAIRS], pcap, 4)))
    why = "bad merge table";
  if (why) goto bad;
  t->off = b + h[H_TOKOFF];
  t->str = b + h[H_STR];
  t->vocab = b + h[H_VOCAB];
  t->merges = bpe ? b + h[H_MERGES] : NULL;
  t->pairs = bpe && pcap ? b + h[H_PAIRS] : NULL;
  if (ld32(t->off) != 0 || ld32(t->off + 4 * n) != h[H_STRLEN]) {
    why = "bad token offsets";
    goto bad;
  }
  for (uint32_t i = 0; i < n; i++)
    if (ld32(t->off + 4 * (size_t)i + 4) <= ld32(t->off + 4 * (size_t)i)) {
      why = "a token is empty or token offsets decrease";
      goto bad;
    }
  /* every table slot names a real entry, and every entry is found where it should be */
  for (uint32_t i = 0; i <= t->vocab_mask; i++)
    if (ld32(t->vocab + 4 * (size_t)i) > n) {
      why = "token table slot out of range";
      goto bad;
    }
  for (uint32_t i = 0; i < n; i++) {
    size_t tl;
    const uint8_t *p = tok(t, i, &tl);
    if (vocab_find(t, p, tl) != i) {
      why = "token table does not find every token (or tokens repeat)";
      goto bad;
    }
    if (!bpe && !utf8_one_char(p, tl)) {
      why = "a character token is not one UTF-8 character";
      goto bad;
    }
  }
  if (bpe) {
    for (int c = 0; c < 256; c++) {
      uint32_t id = ld32(b + h[H_BYTES] + 4 * c);
      size_t tl;
      if (id >= n || *tok(t, id, &tl) != c || tl != 1) {
        why = "byte table entry is not the one-byte token";
        goto bad;
      }
      t->byte_id[c] = id;
    }
    for (uint32_t i = 0; i < pcap; i++) {
      uint32_t v = ld32(t->pairs + 4 * (size_t)i);
      if (v > nm || (v && ld32(t->merges + 12 * (size_t)(v - 1)) == NONE)) {
        why = "pair table slot out of range";
        goto bad;
      }
    }
    for (uint32_t r = 0; r < nm; r++) {
      const uint8_t *m = t->merges + 12 * (size_t)r;
      uint32_t l = ld32(m), rr = ld32(m + 4), res = ld32(m + 8);
      if (l == NONE && rr == NONE && res == NONE) continue;
      size_t ll, rl, sl;
      const uint8_t *lp, *rp, *sp;
      if (l >= n || rr >= n || res >= n) why = "merge names a token out of range";
      else if (lp = tok(t, l, &ll), rp = tok(t, rr, &rl), sp = tok(t, res, &sl),
               sl != ll + rl || memcmp(sp, lp, ll) != 0 || memcmp(sp + ll, rp, rl) != 0)
        why = "merge result is not the concatenation of its parts";
      else if (pair_rank(t, l, rr) != r) why = "pair table does not find every merge (or pairs repeat)";
      if (why) goto bad;
    }
  }
  return t;
bad:
  fail("tokenizer table corrupt: %s", why);
  free(t);
  return NULL;
}
