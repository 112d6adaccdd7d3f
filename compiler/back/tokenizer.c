/* tokenizer.c — writes the tokenizer table of text programs: GPT-2's
 * encoder.json + vocab.bpe, or a character vocabulary, turned into the binary
 * format that runtime/rt_bpe.c reads in place (the format is documented
 * there; the hashes below must stay identical to its). GPT-2's files spell
 * every byte as a printable character (bytes_to_unicode in OpenAI's
 * encoder.py); the table holds the raw bytes instead. Same input, same bytes. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include "circc.h"
#include "json.h"
#include "kernel.h"

#define NONE 0xFFFFFFFFu
enum { HEADER_WORDS = 20, KIND_BPE = 1, KIND_CHARS = 2, VERSION = 1 };
enum { H_MAGIC0, H_MAGIC1, H_VERSION, H_KIND, H_TOTAL, H_CHECKSUM, H_NTOKENS, H_EOT, H_TOKOFF, H_STR, H_STRLEN,
       H_NMERGES, H_MERGES, H_PAIRS, H_PAIRCAP, H_VOCAB, H_VOCABCAP, H_BYTES };

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

typedef struct Bytes {
  const uint8_t *s;
  size_t len;
} Bytes;

typedef struct Vocab {
  uint32_t n;                  /* tokens; ids 0..n-1 */
  Bytes *tok;                  /* by id */
  uint32_t cap, *slot;         /* bytes -> id + 1, the blob's token table */
  uint32_t eot;
  uint32_t nmerges, *merges;   /* 3 per rank: left, right, result (or NONE x3) */
  uint32_t pcap, *pslot;       /* pair -> rank + 1, the blob's pair table */
} Vocab;

static uint32_t pow2_at_least(uint64_t n) {
  uint32_t c = 1;
  while (c < n) c *= 2;
  return c;
}

static uint32_t find_token(const Vocab *v, const uint8_t *s, size_t n) {
  for (uint32_t h = bytes_hash(s, n);; h++) {
    uint32_t x = v->slot[h & (v->cap - 1)];
    if (!x) return NONE;
    if (v->tok[x - 1].len == n && memcmp(v->tok[x - 1].s, s, n) == 0) return x - 1;
  }
}

/* Inserts ids 0..n-1 in order (deterministic); false if two tokens are equal (*dup = the later id). */
static bool index_tokens(Comp *c, Vocab *v, uint32_t *dup) {
  v->cap = pow2_at_least(2 * (uint64_t)v->n);
  v->slot = ARENA_ARRAY(&c->arena, uint32_t, v->cap);
  for (uint32_t i = 0; i < v->n; i++) {
    if (find_token(v, v->tok[i].s, v->tok[i].len) != NONE) {
      *dup = i;
      return false;
    }
    uint32_t h = bytes_hash(v->tok[i].s, v->tok[i].len);
    while (v->slot[h & (v->cap - 1)]) h++;
    v->slot[h & (v->cap - 1)] = i + 1;
  }
  return true;
}

static const Json *read_json(Comp *c, Arena *scratch, const char *path) {
  char *text;
  size_t len;
  if (!load_text_file(c, path, "tokenizer file", &text, &len)) return NULL;
  JsonError jerr;
  const Json *root = json_parse(scratch, text, len, &jerr);
  free(text);
  if (!root) diag_error_class(c, DIAG_IO, NO_LOC, "%s: malformed JSON at byte %zu: %s", path, jerr.offset, jerr.msg);
  return root;
}

/* Decodes one UTF-8 character of s[0..n) (already validated by the JSON parser
 * or checked by the caller): its length, code point in *cp, or 0 if ill-formed. */
static int utf8_decode(const uint8_t *s, size_t n, uint32_t *cp) {
  int len = s[0] < 0x80 ? 1 : s[0] >= 0xC2 && s[0] < 0xE0 ? 2 : s[0] >= 0xE0 && s[0] < 0xF0 ? 3
          : s[0] >= 0xF0 && s[0] < 0xF5 ? 4 : 0;
  if (!len || (size_t)len > n) return 0;
  uint32_t c = len == 1 ? s[0] : s[0] & (0x7Fu >> len);
  for (int i = 1; i < len; i++) {
    if ((s[i] & 0xC0) != 0x80) return 0;
    c = c << 6 | (s[i] & 0x3F);
  }
  static const uint32_t MIN[] = {0, 0, 0x80, 0x800, 0x10000};
  if (c < MIN[len] || c > 0x10FFFF || (c >= 0xD800 && c < 0xE000)) return 0;
  *cp = c;
  return len;
}

/* GPT-2's bytes_to_unicode, inverted: byte_of[code point] = byte + 1 (0: not a byte character). */
static void byte_decoder(uint16_t byte_of[324]) {
  memset(byte_of, 0, 324 * sizeof *byte_of);
  int extra = 0;
  for (int b = 0; b < 256; b++) {
    bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    byte_of[printable ? b : 256 + extra++] = (uint16_t)(b + 1);
  }
}

/* GPT-2 spelling (UTF-8 of byte characters) -> raw bytes in the arena; false if
 * some character is not one of the 256. */
static bool unmap(Comp *c, const uint16_t *byte_of, const char *s, size_t n, Bytes *out) {
  uint8_t *o = arena_alloc(&c->arena, n + 1);
  size_t k = 0;
  for (size_t i = 0; i < n;) {
    uint32_t cp;
    int len = utf8_decode((const uint8_t *)s + i, n - i, &cp);
    if (!len || cp >= 324 || !byte_of[cp]) return false;
    o[k++] = (uint8_t)(byte_of[cp] - 1);
    i += (size_t)len;
  }
  *out = (Bytes){o, k};
  return true;
}

static bool load_encoder(Comp *c, Arena *scratch, const char *path, const uint16_t *byte_of, Vocab *v) {
  const Json *root = read_json(c, scratch, path);
  if (!root) return false;
  if (root->type != JSON_OBJECT || json_len(root) == 0 || json_len(root) >= 0x7FFFFFFF) {
    diag_error_class(c, DIAG_IO, NO_LOC, "%s: expected a non-empty object {token: id}, found %s", path,
                     root->type == JSON_OBJECT ? "an empty object" : json_type_name(root->type));
    return false;
  }
  v->n = (uint32_t)json_len(root);
  v->tok = ARENA_ARRAY(&c->arena, Bytes, v->n);
  v->eot = NONE;
  bool *seen = ARENA_ARRAY(scratch, bool, v->n);
  for (uint32_t i = 0; i < v->n; i++) {
    const JsonMember *m = &root->members[i];
    int64_t id;
    if (!json_int(m->value, &id) || id < 0 || id >= v->n || seen[id]) {
      diag_error_class(c, DIAG_IO, NO_LOC,
                       "%s: token \"%s\": expected a distinct integer id in [0, %u) (ids must number the tokens "
                       "0, 1, ...)", path, m->key, v->n);
      return false;
    }
    seen[id] = true;
    if (m->key_len == 0 || !unmap(c, byte_of, m->key, m->key_len, &v->tok[id])) {
      diag_error_class(c, DIAG_IO, NO_LOC,
                       "%s: token \"%s\" (id %lld) is not spelled with GPT-2's 256 byte characters", path, m->key,
                       (long long)id);
      return false;
    }
    if (strcmp(m->key, "<|endoftext|>") == 0) v->eot = (uint32_t)id;
  }
  if (v->eot == NONE) {
    diag_error_class(c, DIAG_IO, NO_LOC, "%s: no \"<|endoftext|>\" token", path);
    return false;
  }
  uint32_t dup;
  if (!index_tokens(c, v, &dup)) {
    diag_error_class(c, DIAG_IO, NO_LOC, "%s: token id %u has the same bytes as an earlier token", path, dup);
    return false;
  }
  for (int b = 0; b < 256; b++) {
    uint8_t byte = (uint8_t)b;
    if (find_token(v, &byte, 1) == NONE) {
      diag_error_class(c, DIAG_IO, NO_LOC, "%s: no token for the byte 0x%02X (byte-level BPE needs all 256)", path, b);
      return false;
    }
  }
  return true;
}

static uint32_t find_pair(const Vocab *v, uint32_t a, uint32_t b) {
  for (uint32_t h = pair_hash(a, b);; h++) {
    uint32_t x = v->pslot[h & (v->pcap - 1)];
    if (!x) return NONE;
    if (v->merges[3 * (x - 1)] == a && v->merges[3 * (x - 1) + 1] == b) return x - 1;
  }
}

/* vocab.bpe: a "#version" line, then one merge "left right" per line; rank =
 * line number among the merges (as GPT-2 reads it). */
static bool load_merges(Comp *c, const char *path, const uint16_t *byte_of, Vocab *v) {
  char *text;
  size_t len;
  if (!load_text_file(c, path, "tokenizer file", &text, &len)) return false;
  bool ok = true;
  /* lines */
  uint32_t nlines = 0;
  for (size_t i = 0; i < len; i++) nlines += text[i] == '\n';
  v->merges = ARENA_ARRAY(&c->arena, uint32_t, 3 * ((size_t)nlines + 1));
  v->nmerges = 0;
  size_t pos = 0;
  int lineno = 0;
  while (ok && pos < len) {
    size_t end = pos;
    while (end < len && text[end] != '\n') end++;
    size_t e = end;
    if (e > pos && text[e - 1] == '\r') e--;
    lineno++;
    const char *line = text + pos;
    size_t ll = e - pos;
    pos = end + 1;
    if (lineno == 1 && ll && line[0] == '#') continue;   /* #version: 0.2 */
    if (ll == 0) continue;
    const char *sp = memchr(line, ' ', ll);
    Bytes l, r;
    if (!sp || sp == line || sp + 1 == line + ll || memchr(sp + 1, ' ', (size_t)(line + ll - sp - 1)) ||
        !unmap(c, byte_of, line, (size_t)(sp - line), &l) ||
        !unmap(c, byte_of, sp + 1, (size_t)(line + ll - sp - 1), &r)) {
      diag_error_class(c, DIAG_IO, NO_LOC,
                       "%s:%d: expected a merge: two tokens spelled with GPT-2's byte characters, separated by one "
                       "space", path, lineno);
      ok = false;
      break;
    }
    uint32_t *m = v->merges + 3 * (size_t)v->nmerges++;
    m[0] = m[1] = m[2] = NONE;
    uint32_t a = find_token(v, l.s, l.len), b = find_token(v, r.s, r.len);
    if (a == NONE || b == NONE) continue;                  /* can never apply: a part is not a token */
    uint8_t *cat = arena_alloc(&c->arena, l.len + r.len);
    memcpy(cat, l.s, l.len);
    memcpy(cat + l.len, r.s, r.len);
    uint32_t res = find_token(v, cat, l.len + r.len);
    if (res == NONE) {
      diag_error_class(c, DIAG_IO, NO_LOC, "%s:%d: the merge of \"%.*s\" and \"%.*s\" is not a token of encoder.json",
                       path, lineno, (int)(sp - line), line, (int)(line + ll - sp - 1), sp + 1);
      ok = false;
      break;
    }
    m[0] = a;
    m[1] = b;
    m[2] = res;
  }
  free(text);
  if (!ok) return false;
  /* pair table; a pair listed twice keeps its later rank (GPT-2's dict(zip(merges, ranks))) */
  v->pcap = v->nmerges ? pow2_at_least(2 * (uint64_t)v->nmerges) : 0;
  v->pslot = v->pcap ? ARENA_ARRAY(&c->arena, uint32_t, v->pcap) : NULL;
  for (uint32_t r = 0; r < v->nmerges; r++) {
    uint32_t *m = v->merges + 3 * (size_t)r;
    if (m[0] == NONE) continue;
    uint32_t h = pair_hash(m[0], m[1]), old = find_pair(v, m[0], m[1]);
    if (old != NONE) {
      while (v->pslot[h & (v->pcap - 1)] != old + 1) h++;
      v->merges[3 * (size_t)old] = v->merges[3 * (size_t)old + 1] = v->merges[3 * (size_t)old + 2] = NONE;
    } else {
      while (v->pslot[h & (v->pcap - 1)]) h++;
    }
    v->pslot[h & (v->pcap - 1)] = r + 1;
  }
  return true;
}

/* A character vocabulary: a JSON array of one-character strings, a string (each
 * character a token), or an object whose "chars" member is either; id = index. */
static bool load_chars(Comp *c, Arena *scratch, const char *path, Vocab *v) {
  const Json *root = read_json(c, scratch, path);
  if (!root) return false;
  const Json *chars = root->type == JSON_OBJECT ? json_get(root, "chars") : root;
  if (!chars || (chars->type != JSON_ARRAY && chars->type != JSON_STRING)) {
    diag_error_class(c, DIAG_IO, NO_LOC,
                     "%s: expected a list of characters, a string, or an object with a \"chars\" member", path);
    return false;
  }
  size_t n = 0;
  if (chars->type == JSON_ARRAY) n = json_len(chars);
  else {
    for (size_t i = 0; i < chars->len; n++) {
      uint32_t cp;
      int l = utf8_decode((const uint8_t *)chars->str + i, chars->len - i, &cp);
      i += l ? (size_t)l : 1;
    }
  }
  if (n == 0 || n >= 0x7FFFFFFF) {
    diag_error_class(c, DIAG_IO, NO_LOC, "%s: the character vocabulary is empty", path);
    return false;
  }
  v->n = (uint32_t)n;
  v->tok = ARENA_ARRAY(&c->arena, Bytes, n);
  v->eot = NONE;
  for (size_t i = 0, at = 0; i < n; i++) {
    const char *s;
    size_t len;
    uint32_t cp;
    if (chars->type == JSON_ARRAY) {
      const Json *e = json_at(chars, i);
      s = json_str(e);
      len = s ? e->len : 0;
    } else {
      s = chars->str + at;
      len = (size_t)utf8_decode((const uint8_t *)s, chars->len - at, &cp);
      at += len;
    }
    if (!s || !len || (size_t)utf8_decode((const uint8_t *)s, len, &cp) != len) {
      diag_error_class(c, DIAG_IO, NO_LOC, "%s: vocabulary entry %zu is not a single character", path, i);
      return false;
    }
    uint8_t *copy = arena_alloc(&c->arena, len);
    memcpy(copy, s, len);
    v->tok[i] = (Bytes){copy, len};
  }
  uint32_t dup;
  if (!index_tokens(c, v, &dup)) {
    diag_error_class(c, DIAG_IO, NO_LOC, "%s: character %u (\"%.*s\") appears twice", path, dup,
                     (int)v->tok[dup].len, (const char *)v->tok[dup].s);
    return false;
  }
  return true;
}

static void put32(uint8_t *p, uint32_t x) {
  p[0] = (uint8_t)x;
  p[1] = (uint8_t)(x >> 8);
  p[2] = (uint8_t)(x >> 16);
  p[3] = (uint8_t)(x >> 24);
}

static bool write_blob(Comp *c, const Vocab *v, int kind, void **blob, size_t *len) {
  uint64_t strlen_ = 0;
  for (uint32_t i = 0; i < v->n; i++) strlen_ += v->tok[i].len;
  bool bpe = kind == KIND_BPE;
  uint64_t h[HEADER_WORDS] = {0}, at = 4 * HEADER_WORDS;
#define SECTION(field, bytes) (h[field] = at, at += ((uint64_t)(bytes) + 3) / 4 * 4)
  SECTION(H_TOKOFF, 4 * ((uint64_t)v->n + 1));
  SECTION(H_STR, strlen_);
  if (bpe) SECTION(H_MERGES, 12 * (uint64_t)v->nmerges);
  if (bpe) SECTION(H_PAIRS, 4 * (uint64_t)v->pcap);
  SECTION(H_VOCAB, 4 * (uint64_t)v->cap);
  if (bpe) SECTION(H_BYTES, 4 * 256);
#undef SECTION
  if (at >= 0xFFFFFFFFu) {
    diag_error_class(c, DIAG_IO, NO_LOC, "tokenizer table too large (%llu bytes)", (unsigned long long)at);
    return false;
  }
  h[H_VERSION] = VERSION;
  h[H_KIND] = (uint32_t)kind;
  h[H_TOTAL] = at;
  h[H_NTOKENS] = v->n;
  h[H_EOT] = v->eot;
  h[H_STRLEN] = strlen_;
  h[H_NMERGES] = bpe ? v->nmerges : 0;
  h[H_PAIRCAP] = bpe ? v->pcap : 0;
  h[H_VOCABCAP] = v->cap;
  uint8_t *b = arena_alloc(&c->arena, at);
  for (int i = 0; i < HEADER_WORDS; i++) put32(b + 4 * i, (uint32_t)h[i]);
  memcpy(b, "CIRCCTOK", 8);
  uint32_t off = 0;
  for (uint32_t i = 0; i < v->n; i++) {
    put32(b + h[H_TOKOFF] + 4 * (size_t)i, off);
    memcpy(b + h[H_STR] + off, v->tok[i].s, v->tok[i].len);
    off += (uint32_t)v->tok[i].len;
  }
  put32(b + h[H_TOKOFF] + 4 * (size_t)v->n, off);
  for (uint32_t i = 0; i < v->cap; i++) put32(b + h[H_VOCAB] + 4 * (size_t)i, v->slot[i]);
  if (bpe) {
    for (size_t i = 0; i < 3 * (size_t)v->nmerges; i++) put32(b + h[H_MERGES] + 4 * i, v->merges[i]);
    for (uint32_t i = 0; i < v->pcap; i++) put32(b + h[H_PAIRS] + 4 * (size_t)i, v->pslot[i]);
    for (int x = 0; x < 256; x++) {
      uint8_t byte = (uint8_t)x;
      put32(b + h[H_BYTES] + 4 * x, find_token(v, &byte, 1));
    }
  }
  uint32_t sum = 2166136261u;   /* FNV-1a of the blob, checksum word as zero */
  for (size_t i = 0; i < at; i++) sum = (sum ^ b[i]) * 16777619u;
  put32(b + 4 * H_CHECKSUM, sum);
  *blob = b;
  *len = at;
  return true;
}

bool tokenizer_build(Comp *c, const char *spec, void **blob, size_t *len) {
  Arena scratch = {0};
  Vocab v = {0};
  bool ok;
  int kind;
  if (strncmp(spec, "gpt2-bpe:", 9) == 0) {
    kind = KIND_BPE;
    const char *dir = spec + 9;
    uint16_t byte_of[324];
    byte_decoder(byte_of);
    ok = load_encoder(c, &scratch, arena_printf(&c->arena, "%s/encoder.json", dir), byte_of, &v) &&
         load_merges(c, arena_printf(&c->arena, "%s/vocab.bpe", dir), byte_of, &v);
  } else if (strncmp(spec, "chars:", 6) == 0) {
    kind = KIND_CHARS;
    ok = load_chars(c, &scratch, spec + 6, &v);
  } else {
    diag_error_class(c, DIAG_USAGE, NO_LOC,
                     "unknown tokenizer '%s': expected gpt2-bpe:DIR (encoder.json + vocab.bpe) or chars:FILE.json",
                     spec);
    ok = false;
    kind = 0;
  }
  ok = ok && write_blob(c, &v, kind, blob, len);
  arena_free_all(&scratch);
  return ok;
}

/* ---- whether the program can use its tables (runtime/rt_generate.c, rt_sample.c) ---- */

static int io_find(const char *const *names, int n, const char *name) {
  for (int i = 0; i < n; i++)
    if (names[i] && !strcmp(names[i], name)) return i;
  return -1;
}

static const Shape *io_shape(const Buf *b) { return &b->node->shape; }

/* "token [] int64, pos [] int64, ..." */
static const char *io_list(Comp *c, Buf *const *buf, const char *const *names, int n) {
  const char *s = n ? "" : "none";
  for (int i = 0; i < n; i++)
    s = arena_printf(&c->arena, "%s%s%s %s %s", s, i ? ", " : "", names[i], shape_str(c, io_shape(buf[i])),
                     dtype_name(buf[i]->dtype));
  return s;
}

static void note_io(Comp *c, const Kernels *k) {
  diag_note(c, NO_LOC, "the circuit's inputs: %s", io_list(c, k->input, k->input_name, k->ninputs));
  diag_note(c, NO_LOC, "the circuit's outputs: %s", io_list(c, k->output, k->output_name, k->noutputs));
}

static int64_t round_up(int64_t n, int64_t m) { return (n + m - 1) / m * m; }

bool tokenizer_check_model(Comp *c, const char *spec, const void *blob, const Kernels *k) {
  static const char *const DECODE_IN[] = {"token", "pos", "kv_mask", "past_k", "past_v"};
  static const char *const DECODE_OUT[] = {"logits", "new_k", "new_v"};
  const uint8_t *b = blob;
  int64_t ntokens = b[4 * H_NTOKENS] | (int64_t)b[4 * H_NTOKENS + 1] << 8 | (int64_t)b[4 * H_NTOKENS + 2] << 16 |
                    (int64_t)b[4 * H_NTOKENS + 3] << 24;
  bool decode = true;
  for (int i = 0; i < 5; i++) decode &= io_find(k->input_name, k->ninputs, DECODE_IN[i]) >= 0;
  for (int i = 0; i < 3; i++) decode &= io_find(k->output_name, k->noutputs, DECODE_OUT[i]) >= 0;
  int tokens = io_find(k->input_name, k->ninputs, "tokens"), logits = io_find(k->output_name, k->noutputs, "logits");
  bool full = !decode && k->ninputs == 1 && tokens == 0 && k->noutputs == 1 && logits == 0;
  if (!decode && !full) {
    diag_error(c, NO_LOC, "--lm %s: the circuit is not a language model: a decode circuit (gpt2_import --decode) has "
               "the inputs token, pos, kv_mask, past_k, past_v and the outputs logits, new_k, new_v; a full-sequence "
               "one (circc --bind-tokens) has one input tokens [T] int64 and one output logits [T,V]", spec);
    note_io(c, k);
    return false;
  }
  const Shape *lg = io_shape(k->output[logits]);
  int64_t numel = 1;
  for (int d = 0; d < lg->rank; d++) numel *= lg->dim[d];
  int64_t V = lg->rank ? lg->dim[lg->rank - 1] : 0;
  bool shape_ok = decode ? lg->rank >= 1 && numel == V
                         : lg->rank == 2 && io_shape(k->input[tokens])->rank == 1 &&
                               io_shape(k->input[tokens])->dim[0] == lg->dim[0] && k->input[tokens]->dtype == DT_I64;
  if (!shape_ok || V < 1) {
    diag_error(c, NO_LOC, "--lm %s: the %s circuit's logits must be %s; they are %s", spec,
               decode ? "decode" : "full-sequence", decode ? "[V]" : "[T,V] for tokens [T] int64",
               shape_str(c, lg));
    note_io(c, k);
    return false;
  }
  if (V != ntokens && V != round_up(ntokens, 64) && V != round_up(ntokens, 128)) {
    diag_error(c, NO_LOC, "--lm %s: the tokenizer has %lld tokens but the circuit's logits score %lld (their last "
               "dim): a vocabulary of another model? (the logits may only pad the tokenizer's vocabulary to a "
               "multiple of 64 or 128)", spec, (long long)ntokens, (long long)V);
    return false;
  }
  return true;
}

bool vocab_check_model(Comp *c, const char *vocab, const Kernels *k) {
  int64_t n = (int64_t)strlen(vocab);
  if (n < 2) {
    diag_error_class(c, DIAG_USAGE, NO_LOC, "--vocab needs at least two characters, found '%s'", vocab);
    return false;
  }
  bool context = false, scores = false;
  for (int i = 0; i < k->ninputs; i++) {
    const Shape *s = io_shape(k->input[i]);
    context |= k->input[i]->dtype == DT_I64 && (s->rank == 1 || s->rank == 2) && s->dim[0] > 0 &&
               (s->rank == 1 || s->dim[1] > 0);
  }
  for (int i = 0; i < k->noutputs; i++) {
    const Shape *s = io_shape(k->output[i]);
    scores |= k->output[i]->dtype == DT_F32 && s->rank >= 1 && s->dim[s->rank - 1] == n;
  }
  if (!context)
    diag_error(c, NO_LOC, "--vocab: the circuit is not a character model: it has no int64 input of shape [B] or "
               "[B,C] to hold the context characters");
  else if (!scores)
    diag_error(c, NO_LOC, "--vocab: the vocabulary has %lld characters but no float32 output has a last dim of %lld "
               "(the next character's scores): the circuit is not a model of these characters", (long long)n,
               (long long)n);
  if (!context || !scores) note_io(c, k);
  return context && scores;
}
