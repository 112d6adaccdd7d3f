/* json.h — a small strict JSON (RFC 8259) parser into an arena-allocated tree.
 * Used for safetensors headers, Hugging Face config.json and GPT-2's
 * encoder.json. Strings are decoded to UTF-8; numbers keep both a double and,
 * when integral, an exact int64. Objects with many members get a hash index at
 * parse time, so json_get is O(1) on big objects (50k-key vocabularies). */
#ifndef CIRCC_JSON_H
#define CIRCC_JSON_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "arena.h"

#define JSON_MAX_DEPTH 256     /* deeper nesting is a parse error (bounds recursion) */

typedef enum JsonType { JSON_NULL, JSON_BOOL, JSON_NUMBER, JSON_STRING, JSON_ARRAY, JSON_OBJECT } JsonType;

typedef struct Json Json;
typedef struct JsonMember {
  const char *key;             /* decoded UTF-8, NUL-terminated (may also contain \u0000) */
  size_t key_len;
  Json *value;
} JsonMember;

struct Json {
  JsonType type;
  size_t offset;               /* byte offset of the value in the input */
  size_t len;                  /* STRING: bytes (excluding NUL); ARRAY/OBJECT: element count */
  union {                      /* by type */
    bool boolean;              /* JSON_BOOL */
    struct {                   /* JSON_NUMBER */
      double num;              /* nearest double */
      int64_t i64;             /* valid if is_int */
      bool is_int;             /* integral and exactly representable as int64 */
    };
    const char *str;           /* JSON_STRING: decoded UTF-8, NUL-terminated */
    Json **items;              /* JSON_ARRAY: len elements */
    struct {                   /* JSON_OBJECT */
      JsonMember *members;     /* len members in input order; keys are unique */
      uint32_t *index;         /* objects with many members: hash slots (member index + 1) */
      uint32_t index_mask;
    };
  };
};

typedef struct JsonError {
  size_t offset;               /* byte offset where parsing stopped */
  char msg[160];               /* e.g. "expected ',' or '}' after object member, found 'x'" */
} JsonError;

/* Parses exactly one JSON value (surrounding whitespace and a leading UTF-8
 * BOM allowed). Rejects invalid UTF-8, lone surrogates, raw control
 * characters, duplicate object keys, numbers that overflow a double and
 * nesting deeper than JSON_MAX_DEPTH. Returns NULL and fills *err (if non-NULL)
 * on error; the tree lives in `a`. */
Json *json_parse(Arena *a, const char *text, size_t len, JsonError *err);

/* Accessors. All accept NULL (and a value of the wrong type) and then return
 * NULL / 0 / false, so lookups chain: json_int(json_get(json_get(r, "a"), "b"), &x). */
const Json *json_get(const Json *obj, const char *key);   /* member value, or NULL */
size_t json_len(const Json *v);                           /* array/object element count, else 0 */
const Json *json_at(const Json *v, size_t i);             /* array element / object member value i */
const char *json_key(const Json *obj, size_t i);          /* object member key i */
const char *json_str(const Json *v);                      /* string contents, or NULL */
bool json_int(const Json *v, int64_t *out);               /* integral number fitting int64 */
bool json_num(const Json *v, double *out);                /* any number */
bool json_bool(const Json *v, bool *out);
bool json_is_null(const Json *v);
const char *json_type_name(JsonType t);                   /* "object", "string", ... for messages */
#endif
