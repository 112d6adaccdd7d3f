/* json.c — strict RFC 8259 parser (see json.h). Recursive descent bounded by
 * JSON_MAX_DEPTH; container children collect on one scratch stack and are
 * copied to the arena when the container closes, so the tree is compact.
 * Input need not be NUL-terminated; every read is bounds-checked. The first
 * error stops the parse and is reported with its byte offset. */
#include "json.h"
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "diag.h"

enum { INDEX_MIN = 9 };   /* objects with at least this many members get a hash index */

typedef struct Parser {
  Arena *a;
  const unsigned char *s;
  size_t len, pos;
  int depth;
  JsonMember *stack;       /* children of the open containers, innermost last */
  size_t nstack, cap;
  JsonError *err;
} Parser;

static void fail(Parser *p, size_t at, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void fail(Parser *p, size_t at, const char *fmt, ...) {
  p->err->offset = at;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(p->err->msg, sizeof p->err->msg, fmt, ap);
  va_end(ap);
}

/* Describes the byte at p->pos for "found ..." messages. */
static const char *found(Parser *p, char buf[16]) {
  if (p->pos >= p->len) return "end of input";
  unsigned ch = p->s[p->pos];
  if (ch >= 0x20 && ch < 0x7f) snprintf(buf, 16, "'%c'", (char)ch);
  else snprintf(buf, 16, "byte 0x%02x", ch);
  return buf;
}

static void skip_ws(Parser *p) {
  while (p->pos < p->len) {
    unsigned char ch = p->s[p->pos];
    if (ch != ' ' && ch != '\t' && ch != '\n' && ch != '\r') break;
    p->pos++;
  }
}

static Json *new_value(Parser *p, JsonType t, size_t at) {
  Json *v = ARENA_NEW(p->a, Json);
  v->type = t;
  v->offset = at;
  return v;
}

static void push(Parser *p, const char *key, size_t key_len, Json *v) {
  if (p->nstack == p->cap) {
    p->cap = p->cap ? 2 * p->cap : 64;
    p->stack = realloc(p->stack, p->cap * sizeof *p->stack);
    if (!p->stack) ICE("out of memory parsing JSON");
  }
  p->stack[p->nstack++] = (JsonMember){key, key_len, v};
}

static uint32_t hash_key(const char *k, size_t n) {
  uint32_t h = 2166136261u;                    /* FNV-1a */
  for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)k[i]) * 16777619u;
  return h;
}

static int hex_digit(unsigned char ch) {
  if (ch >= '0' && ch <= '9') return ch - '0';
  if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
  if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
  return -1;
}

/* Reads the 4 hex digits of a \u escape whose 'u' is at p->pos - 1. */
static long read_hex4(Parser *p) {
  long cp = 0;
  for (int i = 0; i < 4; i++) {
    int d = p->pos < p->len ? hex_digit(p->s[p->pos]) : -1;
    if (d < 0) {
      char b[16];
      fail(p, p->pos, "expected 4 hex digits after \\u, found %s", found(p, b));
      return -1;
    }
    cp = cp * 16 + d;
    p->pos++;
  }
  return cp;
}

static size_t put_utf8(char *o, long cp) {
  if (cp < 0x80) { o[0] = (char)cp; return 1; }
  if (cp < 0x800) {
    o[0] = (char)(0xC0 | (cp >> 6));
    o[1] = (char)(0x80 | (cp & 0x3F));
    return 2;
  }
  if (cp < 0x10000) {
    o[0] = (char)(0xE0 | (cp >> 12));
    o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
    o[2] = (char)(0x80 | (cp & 0x3F));
    return 3;
  }
  o[0] = (char)(0xF0 | (cp >> 18));
  o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
  o[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
  o[3] = (char)(0x80 | (cp & 0x3F));
  return 4;
}

/* Length of the well-formed UTF-8 sequence at s[0..n) (RFC 3629: no
 * overlongs, no surrogates, nothing above U+10FFFF), or 0 if malformed. */
static size_t utf8_seq_len(const unsigned char *s, size_t n) {
  unsigned char c0 = s[0];
  size_t len;
  unsigned char lo = 0x80, hi = 0xBF;          /* allowed range of the second byte */
  if (c0 >= 0xC2 && c0 <= 0xDF) len = 2;
  else if (c0 >= 0xE0 && c0 <= 0xEF) {
    len = 3;
    if (c0 == 0xE0) lo = 0xA0;
    if (c0 == 0xED) hi = 0x9F;
  } else if (c0 >= 0xF0 && c0 <= 0xF4) {
    len = 4;
    if (c0 == 0xF0) lo = 0x90;
    if (c0 == 0xF4) hi = 0x8F;
  } else {
    return 0;
  }
  if (n < len || s[1] < lo || s[1] > hi) return 0;
  for (size_t i = 2; i < len; i++)
    if ((s[i] & 0xC0) != 0x80) return 0;
  return len;
}

/* Parses the string whose opening quote is at p->pos. Decoding never grows
 * the text, so the raw span's length bounds the output. */
static bool parse_string(Parser *p, const char **out, size_t *out_len) {
  size_t start = ++p->pos, end = start;
  while (end < p->len && p->s[end] != '"') end += p->s[end] == '\\' ? 2 : 1;
  if (end >= p->len) {
    fail(p, start - 1, "unterminated string");
    return false;
  }
  char *buf = arena_alloc(p->a, end - start + 1), *o = buf;
  while (p->pos < end) {
    unsigned char ch = p->s[p->pos];
    if (ch < 0x20) {
      fail(p, p->pos, "control character 0x%02x in string must be escaped", ch);
      return false;
    }
    if (ch >= 0x80) {
      size_t n = utf8_seq_len(p->s + p->pos, end - p->pos);
      if (!n) {
        fail(p, p->pos, "invalid UTF-8 byte 0x%02x in string", ch);
        return false;
      }
      memcpy(o, p->s + p->pos, n);
      o += n;
      p->pos += n;
      continue;
    }
    p->pos++;
    if (ch != '\\') {
      *o++ = (char)ch;
      continue;
    }
    unsigned char e = p->s[p->pos++];
    switch (e) {
    case '"': case '\\': case '/': *o++ = (char)e; break;
    case 'b': *o++ = '\b'; break;
    case 'f': *o++ = '\f'; break;
    case 'n': *o++ = '\n'; break;
    case 'r': *o++ = '\r'; break;
    case 't': *o++ = '\t'; break;
    case 'u': {
      size_t at = p->pos - 2;
      long cp = read_hex4(p);
      if (cp < 0) return false;
      if (cp >= 0xDC00 && cp <= 0xDFFF) {
        fail(p, at, "unpaired low surrogate \\u%04lX", cp);
        return false;
      }
      if (cp >= 0xD800 && cp <= 0xDBFF) {
        if (p->pos + 1 >= end || p->s[p->pos] != '\\' || p->s[p->pos + 1] != 'u') {
          fail(p, at, "high surrogate \\u%04lX not followed by a \\u low surrogate", cp);
          return false;
        }
        p->pos += 2;
        long lo = read_hex4(p);
        if (lo < 0) return false;
        if (lo < 0xDC00 || lo > 0xDFFF) {
          fail(p, at, "high surrogate \\u%04lX followed by \\u%04lX, expected a low surrogate", cp, lo);
          return false;
        }
        cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
      }
      o += put_utf8(o, cp);
      break;
    }
    default:
      fail(p, p->pos - 2, (e >= 0x20 && e < 0x7f) ? "invalid escape '\\%c'" : "invalid escape byte 0x%02x",
           e);
      return false;
    }
  }
  p->pos = end + 1;
  *o = 0;
  *out = buf;
  *out_len = (size_t)(o - buf);
  return true;
}

static bool is_digit(Parser *p) { return p->pos < p->len && p->s[p->pos] >= '0' && p->s[p->pos] <= '9'; }

static bool expect_digits(Parser *p, const char *after) {
  if (!is_digit(p)) {
    char b[16];
    fail(p, p->pos, "expected a digit %s, found %s", after, found(p, b));
    return false;
  }
  while (is_digit(p)) p->pos++;
  return true;
}

static Json *parse_number(Parser *p) {
  size_t start = p->pos;
  bool neg = p->s[p->pos] == '-', integral = true;
  if (neg) p->pos++;
  size_t digits = p->pos;
  if (!expect_digits(p, neg ? "after '-'" : "")) return NULL;
  if (p->s[digits] == '0' && p->pos - digits > 1) {
    fail(p, digits, "leading zeros are not allowed in numbers");
    return NULL;
  }
  size_t digits_end = p->pos;
  if (p->pos < p->len && p->s[p->pos] == '.') {
    integral = false;
    p->pos++;
    if (!expect_digits(p, "after '.'")) return NULL;
  }
  if (p->pos < p->len && (p->s[p->pos] == 'e' || p->s[p->pos] == 'E')) {
    integral = false;
    p->pos++;
    if (p->pos < p->len && (p->s[p->pos] == '+' || p->s[p->pos] == '-')) p->pos++;
    if (!expect_digits(p, "in exponent")) return NULL;
  }
  /* strtod needs a NUL-terminated copy */
  size_t n = p->pos - start;
  char small[64];
  char *text = n < sizeof small ? small : arena_alloc(p->a, n + 1);
  memcpy(text, p->s + start, n);
  text[n] = 0;
  Json *v = new_value(p, JSON_NUMBER, start);
  v->num = strtod(text, NULL);
  if (isinf(v->num)) {
    fail(p, start, "number %.40s%s is out of range for a double", text, n > 40 ? "..." : "");
    return NULL;
  }
  if (integral) {
    /* exact int64 from the digits; magnitudes up to 2^63 (for INT64_MIN) */
    uint64_t mag = 0, limit = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
    bool fits = true;
    for (size_t i = digits; i < digits_end && fits; i++) {
      unsigned d = (unsigned)(p->s[i] - '0');
      if (mag > (limit - d) / 10) fits = false;
      else mag = mag * 10 + d;
    }
    if (fits) {
      v->is_int = true;
      v->i64 = neg ? (int64_t)(0 - mag) : (int64_t)mag;
    }
  } else if (v->num == floor(v->num) && fabs(v->num) <= 9007199254740992.0) {
    /* 2.0 or 1e3: integral and exact as a double */
    v->is_int = true;
    v->i64 = (int64_t)v->num;
  }
  return v;
}

static Json *parse_value(Parser *p);

static bool enter(Parser *p) {
  if (++p->depth > JSON_MAX_DEPTH) {
    fail(p, p->pos, "nesting deeper than %d levels", JSON_MAX_DEPTH);
    return false;
  }
  return true;
}

static Json *parse_array(Parser *p) {
  Json *v = new_value(p, JSON_ARRAY, p->pos);
  if (!enter(p)) return NULL;
  size_t base = p->nstack;
  p->pos++;
  skip_ws(p);
  if (p->pos < p->len && p->s[p->pos] == ']') {
    p->pos++;
  } else {
    for (;;) {
      Json *item = parse_value(p);
      if (!item) return NULL;
      push(p, NULL, 0, item);
      skip_ws(p);
      if (p->pos < p->len && p->s[p->pos] == ',') { p->pos++; continue; }
      if (p->pos < p->len && p->s[p->pos] == ']') { p->pos++; break; }
      char b[16];
      fail(p, p->pos, "expected ',' or ']' in array, found %s", found(p, b));
      return NULL;
    }
  }
  v->len = p->nstack - base;
  v->items = ARENA_ARRAY(p->a, Json *, v->len);
  for (size_t i = 0; i < v->len; i++) v->items[i] = p->stack[base + i].value;
  p->nstack = base;
  p->depth--;
  return v;
}

/* Rejects duplicate keys; big objects get an open-addressing index. */
static bool index_object(Parser *p, Json *v) {
  JsonMember *m = v->members;
  if (v->len < INDEX_MIN) {
    for (size_t i = 1; i < v->len; i++)
      for (size_t j = 0; j < i; j++)
        if (m[i].key_len == m[j].key_len && memcmp(m[i].key, m[j].key, m[i].key_len) == 0) {
          fail(p, m[i].value->offset, "duplicate key \"%.60s\"", m[i].key);
          return false;
        }
    return true;
  }
  if (v->len > UINT32_MAX / 4) {
    fail(p, v->offset, "object has too many members");
    return false;
  }
  uint32_t cap = 16;
  while (cap < 2 * v->len) cap *= 2;
  v->index = ARENA_ARRAY(p->a, uint32_t, cap);
  v->index_mask = cap - 1;
  for (size_t i = 0; i < v->len; i++) {
    uint32_t s = hash_key(m[i].key, m[i].key_len) & v->index_mask;
    for (; v->index[s]; s = (s + 1) & v->index_mask) {
      const JsonMember *o = &m[v->index[s] - 1];
      if (o->key_len == m[i].key_len && memcmp(o->key, m[i].key, o->key_len) == 0) {
        fail(p, m[i].value->offset, "duplicate key \"%.60s\"", m[i].key);
        return false;
      }
    }
    v->index[s] = (uint32_t)i + 1;
  }
  return true;
}

static Json *parse_object(Parser *p) {
  Json *v = new_value(p, JSON_OBJECT, p->pos);
  if (!enter(p)) return NULL;
  size_t base = p->nstack;
  char b[16];
  p->pos++;
  skip_ws(p);
  if (p->pos < p->len && p->s[p->pos] == '}') {
    p->pos++;
  } else {
    for (;;) {
      skip_ws(p);
      if (p->pos >= p->len || p->s[p->pos] != '"') {
        fail(p, p->pos, "expected a string key in object, found %s", found(p, b));
        return NULL;
      }
      const char *key;
      size_t key_len;
      if (!parse_string(p, &key, &key_len)) return NULL;
      skip_ws(p);
      if (p->pos >= p->len || p->s[p->pos] != ':') {
        fail(p, p->pos, "expected ':' after object key, found %s", found(p, b));
        return NULL;
      }
      p->pos++;
      Json *val = parse_value(p);
      if (!val) return NULL;
      push(p, key, key_len, val);
      skip_ws(p);
      if (p->pos < p->len && p->s[p->pos] == ',') { p->pos++; continue; }
      if (p->pos < p->len && p->s[p->pos] == '}') { p->pos++; break; }
      fail(p, p->pos, "expected ',' or '}' in object, found %s", found(p, b));
      return NULL;
    }
  }
  v->len = p->nstack - base;
  v->members = ARENA_ARRAY(p->a, JsonMember, v->len);
  if (v->len) memcpy(v->members, p->stack + base, v->len * sizeof *v->members);
  p->nstack = base;
  p->depth--;
  return index_object(p, v) ? v : NULL;
}

static Json *parse_literal(Parser *p) {
  static const struct { const char *word; JsonType type; bool value; } LITS[] = {
      {"true", JSON_BOOL, true}, {"false", JSON_BOOL, false}, {"null", JSON_NULL, false}};
  for (size_t i = 0; i < sizeof LITS / sizeof LITS[0]; i++) {
    size_t n = strlen(LITS[i].word);
    if (p->len - p->pos >= n && memcmp(p->s + p->pos, LITS[i].word, n) == 0) {
      Json *v = new_value(p, LITS[i].type, p->pos);
      v->boolean = LITS[i].value;
      p->pos += n;
      return v;
    }
  }
  char b[16];
  fail(p, p->pos, "expected a value, found %s", found(p, b));
  return NULL;
}

static Json *parse_value(Parser *p) {
  skip_ws(p);
  char b[16];
  if (p->pos >= p->len) {
    fail(p, p->pos, "expected a value, found end of input");
    return NULL;
  }
  unsigned char ch = p->s[p->pos];
  if (ch == '{') return parse_object(p);
  if (ch == '[') return parse_array(p);
  if (ch == '-' || (ch >= '0' && ch <= '9')) return parse_number(p);
  if (ch == '"') {
    Json *v = new_value(p, JSON_STRING, p->pos);
    return parse_string(p, &v->str, &v->len) ? v : NULL;
  }
  if (ch == 't' || ch == 'f' || ch == 'n') return parse_literal(p);
  fail(p, p->pos, "expected a value, found %s", found(p, b));
  return NULL;
}

Json *json_parse(Arena *a, const char *text, size_t len, JsonError *err) {
  JsonError local;
  Parser p = {.a = a, .s = (const unsigned char *)text, .len = len, .err = err ? err : &local};
  p.err->offset = 0;
  p.err->msg[0] = 0;
  if (len >= 3 && memcmp(text, "\xEF\xBB\xBF", 3) == 0) p.pos = 3;   /* RFC 8259 §8.1 permits ignoring a BOM */
  Json *v = parse_value(&p);
  if (v) {
    skip_ws(&p);
    if (p.pos < p.len) {
      char b[16];
      fail(&p, p.pos, "unexpected %s after the JSON value", found(&p, b));
      v = NULL;
    }
  }
  free(p.stack);
  return v;
}

const Json *json_get(const Json *obj, const char *key) {
  if (!obj || obj->type != JSON_OBJECT) return NULL;
  size_t n = strlen(key);
  if (obj->index) {
    for (uint32_t s = hash_key(key, n) & obj->index_mask; obj->index[s]; s = (s + 1) & obj->index_mask) {
      const JsonMember *m = &obj->members[obj->index[s] - 1];
      if (m->key_len == n && memcmp(m->key, key, n) == 0) return m->value;
    }
    return NULL;
  }
  for (size_t i = 0; i < obj->len; i++)
    if (obj->members[i].key_len == n && memcmp(obj->members[i].key, key, n) == 0) return obj->members[i].value;
  return NULL;
}

size_t json_len(const Json *v) {
  return v && (v->type == JSON_ARRAY || v->type == JSON_OBJECT) ? v->len : 0;
}

const Json *json_at(const Json *v, size_t i) {
  if (!v || i >= json_len(v)) return NULL;
  return v->type == JSON_ARRAY ? v->items[i] : v->members[i].value;
}

const char *json_key(const Json *obj, size_t i) {
  return obj && obj->type == JSON_OBJECT && i < obj->len ? obj->members[i].key : NULL;
}

const char *json_str(const Json *v) { return v && v->type == JSON_STRING ? v->str : NULL; }

bool json_int(const Json *v, int64_t *out) {
  if (!v || v->type != JSON_NUMBER || !v->is_int) return false;
  *out = v->i64;
  return true;
}

bool json_num(const Json *v, double *out) {
  if (!v || v->type != JSON_NUMBER) return false;
  *out = v->num;
  return true;
}

bool json_bool(const Json *v, bool *out) {
  if (!v || v->type != JSON_BOOL) return false;
  *out = v->boolean;
  return true;
}

bool json_is_null(const Json *v) { return v && v->type == JSON_NULL; }

const char *json_type_name(JsonType t) {
  static const char *const NAMES[] = {"null", "boolean", "number", "string", "array", "object"};
  return t >= JSON_NULL && t <= JSON_OBJECT ? NAMES[t] : "?";
}
