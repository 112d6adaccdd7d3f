/* test_json.c — the strict JSON parser: values, escapes and UTF-8, exact
 * integers, big-object lookup, every malformed case with its message and
 * offset, and a real Hugging Face config.json. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "json.h"
#include "testutil.h"

static Arena A;

static void teardown(void) { arena_free_all(&A); }
TestSuite(json, .fini = teardown);

static const Json *parse(const char *text) {
  JsonError err;
  const Json *v = json_parse(&A, text, strlen(text), &err);
  cr_assert(v, "parse of %s failed: %s at %zu", text, err.msg, err.offset);
  return v;
}

Test(json, scalars) {
  bool b = false;
  cr_assert(json_bool(parse("true"), &b) && b);
  cr_assert(json_bool(parse(" false\n"), &b) && !b);
  cr_assert(json_is_null(parse("null")));
  cr_assert_str_eq(json_str(parse("\"hi\"")), "hi");
  cr_assert_eq(parse("\"\"")->len, 0);
}

Test(json, numbers) {
  static const struct { const char *text; bool is_int; int64_t i; double d; } CASES[] = {
      {"0", true, 0, 0.0},
      {"-0", true, 0, -0.0},
      {"123", true, 123, 123.0},
      {"-42", true, -42, -42.0},
      {"9223372036854775807", true, INT64_MAX, 9223372036854775807.0},
      {"-9223372036854775808", true, INT64_MIN, -9223372036854775808.0},
      {"9223372036854775808", false, 0, 9223372036854775808.0},
      {"9007199254740993", true, 9007199254740993, 9007199254740992.0},  /* exact int, rounded double */
      {"1.5", false, 0, 1.5},
      {"2.0", true, 2, 2.0},
      {"1e3", true, 1000, 1000.0},
      {"1E+2", true, 100, 100.0},
      {"-2.5e-3", false, 0, -0.0025},
      {"1e-05", false, 0, 1e-05},
  };
  for (size_t k = 0; k < sizeof CASES / sizeof CASES[0]; k++) {
    const Json *v = parse(CASES[k].text);
    int64_t i = 0;
    double d = 0;
    cr_assert_eq(v->type, JSON_NUMBER);
    cr_assert(json_num(v, &d));
    cr_assert_eq(d, CASES[k].d, "%s: %g", CASES[k].text, d);
    cr_assert_eq(json_int(v, &i), CASES[k].is_int, "%s", CASES[k].text);
    if (CASES[k].is_int) cr_assert_eq(i, CASES[k].i, "%s: %lld", CASES[k].text, (long long)i);
  }
  cr_assert(signbit(parse("-0.0")->num));
  cr_assert_eq(parse("1e-400")->num, 0.0);   /* underflow rounds to zero */
}

Test(json, escapes_and_utf8) {
  const Json *v = parse("\"a\\\"b\\\\c\\/d\\be\\ff\\ng\\rh\\ti\"");
  cr_assert_str_eq(json_str(v), "a\"b\\c/d\be\ff\ng\rh\ti");
  cr_assert_str_eq(json_str(parse("\"\\u0041\\u00e9\\u20AC\"")), "A\xc3\xa9\xe2\x82\xac");
  cr_assert_str_eq(json_str(parse("\"\\ud83d\\ude00\"")), "\xf0\x9f\x98\x80");     /* U+1F600 */
  cr_assert_str_eq(json_str(parse("\"\\uDBFF\\uDFFF\"")), "\xf4\x8f\xbf\xbf");     /* U+10FFFF */
  cr_assert_str_eq(json_str(parse("\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\"")),
                   "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80");
  v = parse("\"a\\u0000b\"");
  cr_assert_eq(v->len, 3);
  cr_assert_eq(memcmp(v->str, "a\0b", 4), 0);
  /* GPT-2 byte-level tokens as Python writes them (ensure_ascii) */
  cr_assert_str_eq(json_str(parse("\"\\u0120the\"")), "\xc4\xa0the");
}

Test(json, containers) {
  const Json *v = parse(" { \"a\" : [1, 2, [3, {}], []], \"b\": {\"c\": \"d\"}, \"e\": null } ");
  cr_assert_eq(v->type, JSON_OBJECT);
  cr_assert_eq(json_len(v), 3);
  cr_assert_str_eq(json_key(v, 1), "b");
  const Json *a = json_get(v, "a");
  cr_assert_eq(json_len(a), 4);
  int64_t i;
  cr_assert(json_int(json_at(a, 1), &i) && i == 2);
  cr_assert(json_int(json_at(json_at(a, 2), 0), &i) && i == 3);
  cr_assert_eq(json_at(json_at(a, 2), 1)->type, JSON_OBJECT);
  cr_assert_eq(json_len(json_at(a, 3)), 0);
  cr_assert_str_eq(json_str(json_get(json_get(v, "b"), "c")), "d");
  cr_assert(json_is_null(json_get(v, "e")));
  cr_assert_null(json_get(v, "f"));
  cr_assert_eq(json_at(v, 1), json_get(v, "b"));
  cr_assert_eq(a->offset, 9);
  /* NULL-safe and type-safe accessors */
  cr_assert_null(json_get(NULL, "a"));
  cr_assert_null(json_get(a, "a"));
  cr_assert_null(json_at(a, 4));
  cr_assert_null(json_key(a, 0));
  cr_assert_null(json_str(a));
  cr_assert_not(json_int(json_get(v, "b"), &i));
  cr_assert_eq(json_len(NULL), 0);
  cr_assert_str_eq(json_type_name(JSON_ARRAY), "array");
}

Test(json, not_nul_terminated_and_bom) {
  const char buf[] = {'1', '2', '3', '4'};
  int64_t i;
  cr_assert(json_int(json_parse(&A, buf, 2, NULL), &i) && i == 12);
  const char bom[] = "\xEF\xBB\xBF[true]";
  cr_assert_eq(json_len(json_parse(&A, bom, strlen(bom), NULL)), 1);
}

/* 50257 keys, like GPT-2's encoder.json: hashed lookup of every key. */
Test(json, big_object) {
  enum { N = 50257 };
  size_t cap = (size_t)N * 32, k = 0;
  char *text = malloc(cap);
  k += (size_t)snprintf(text + k, cap - k, "{");
  for (int i = 0; i < N; i++) k += (size_t)snprintf(text + k, cap - k, "%s\"tok%d\\u0120\": %d", i ? ", " : "", i, i);
  k += (size_t)snprintf(text + k, cap - k, "}");
  JsonError err;
  const Json *v = json_parse(&A, text, k, &err);
  cr_assert(v, "%s", err.msg);
  cr_assert_eq(json_len(v), N);
  cr_assert_not_null(v->index);
  for (int i = 0; i < N; i++) {
    char key[32];
    int64_t x;
    snprintf(key, sizeof key, "tok%d\xc4\xa0", i);
    cr_assert(json_int(json_get(v, key), &x) && x == i, "key %s", key);
  }
  cr_assert_null(json_get(v, "tok1"));
  cr_assert_null(json_get(v, "tok50257\xc4\xa0"));
  /* a duplicate in a big object is found through the index */
  snprintf(text + k - 1, cap - k + 1, ", \"tok7\\u0120\": 0}");
  cr_assert_null(json_parse(&A, text, strlen(text), &err));
  cr_assert(strstr(err.msg, "duplicate key"), "%s", err.msg);
  free(text);
}

Test(json, depth_limit) {
  char buf[2 * (JSON_MAX_DEPTH + 1) + 1];
  for (int i = 0; i < JSON_MAX_DEPTH; i++) buf[i] = '[', buf[2 * JSON_MAX_DEPTH - 1 - i] = ']';
  cr_assert_not_null(json_parse(&A, buf, 2 * JSON_MAX_DEPTH, NULL));
  for (int i = 0; i <= JSON_MAX_DEPTH; i++) buf[i] = '[', buf[2 * JSON_MAX_DEPTH + 1 - i] = ']';
  JsonError err;
  cr_assert_null(json_parse(&A, buf, 2 * JSON_MAX_DEPTH + 2, &err));
  cr_assert(strstr(err.msg, "nesting deeper than 256"), "%s", err.msg);
  cr_assert_eq(err.offset, JSON_MAX_DEPTH);
}

Test(json, malformed) {
  static const struct { const char *text; const char *msg; size_t offset; } CASES[] = {
      {"", "expected a value, found end of input", 0},
      {"   ", "expected a value, found end of input", 3},
      {"[1,]", "expected a value, found ']'", 3},
      {"[1 2]", "expected ',' or ']' in array, found '2'", 3},
      {"[1", "expected ',' or ']' in array, found end of input", 2},
      {"{\"a\":1,}", "expected a string key in object, found '}'", 7},
      {"{'a':1}", "expected a string key in object, found '''", 1},
      {"{\"a\" 1}", "expected ':' after object key, found '1'", 5},
      {"{\"a\":1 \"b\":2}", "expected ',' or '}' in object, found '\"'", 7},
      {"{\"a\":1,\"a\":2}", "duplicate key \"a\"", 11},
      {"01", "leading zeros", 0},
      {"-", "expected a digit after '-', found end of input", 1},
      {"1.", "expected a digit after '.', found end of input", 2},
      {".5", "expected a value, found '.'", 0},
      {"1e", "expected a digit in exponent", 2},
      {"+1", "expected a value, found '+'", 0},
      {"1e400", "out of range", 0},
      {"NaN", "expected a value, found 'N'", 0},
      {"Infinity", "expected a value, found 'I'", 0},
      {"tru", "expected a value, found 't'", 0},
      {"nul", "expected a value, found 'n'", 0},
      {"\"abc", "unterminated string", 0},
      {"\"ab\\\"", "unterminated string", 0},
      {"\"\\x\"", "invalid escape '\\x'", 1},
      {"\"\\u12\"", "expected 4 hex digits after \\u, found '\"'", 5},
      {"\"\\ud800\"", "not followed by a \\u low surrogate", 1},
      {"\"\\ud800\\u0041\"", "expected a low surrogate", 1},
      {"\"\\udc00\"", "unpaired low surrogate", 1},
      {"\"a\tb\"", "control character 0x09", 2},
      {"\"\xc3\x28\"", "invalid UTF-8 byte 0xc3", 1},
      {"\"\xed\xa0\x80\"", "invalid UTF-8 byte 0xed", 1},   /* an encoded surrogate */
      {"\"\xc0\xaf\"", "invalid UTF-8 byte 0xc0", 1},       /* overlong */
      {"\"\xf4\x90\x80\x80\"", "invalid UTF-8 byte 0xf4", 1},  /* above U+10FFFF */
      {"\"\xe2\x82\"", "invalid UTF-8 byte 0xe2", 1},       /* truncated sequence */
      {"[] x", "unexpected 'x' after the JSON value", 3},
      {"{} {}", "unexpected '{' after the JSON value", 3},
      {"\x01", "expected a value, found byte 0x01", 0},
  };
  for (size_t k = 0; k < sizeof CASES / sizeof CASES[0]; k++) {
    JsonError err;
    cr_assert_null(json_parse(&A, CASES[k].text, strlen(CASES[k].text), &err), "%s parsed", CASES[k].text);
    cr_assert(strstr(err.msg, CASES[k].msg), "%s: got \"%s\"", CASES[k].text, err.msg);
    cr_assert_eq(err.offset, CASES[k].offset, "%s: offset %zu", CASES[k].text, err.offset);
  }
  /* an embedded NUL is not whitespace */
  JsonError err;
  cr_assert_null(json_parse(&A, "1\0", 2, &err));
  cr_assert(strstr(err.msg, "byte 0x00"), "%s", err.msg);
}

Test(json, hf_config) {
  FILE *f = fopen(tu_model("gpt2/tiny_random_gpt2/config.json"), "rb");
  cr_assert_not_null(f);
  char buf[4096];
  size_t n = fread(buf, 1, sizeof buf, f);
  fclose(f);
  JsonError err;
  const Json *cfg = json_parse(&A, buf, n, &err);
  cr_assert(cfg, "%s at %zu", err.msg, err.offset);
  cr_assert_eq(json_len(cfg), 36);
  int64_t i;
  double d;
  bool b;
  cr_assert(json_int(json_get(cfg, "n_embd"), &i) && i == 32);
  cr_assert(json_int(json_get(cfg, "n_layer"), &i) && i == 5);
  cr_assert(json_int(json_get(cfg, "vocab_size"), &i) && i == 1000);
  cr_assert(json_num(json_get(cfg, "layer_norm_epsilon"), &d) && d == 1e-05);
  cr_assert_not(json_int(json_get(cfg, "layer_norm_epsilon"), &i));
  cr_assert_str_eq(json_str(json_get(cfg, "activation_function")), "gelu_new");
  cr_assert_str_eq(json_str(json_at(json_get(cfg, "architectures"), 0)), "GPT2LMHeadModel");
  cr_assert(json_is_null(json_get(cfg, "n_inner")));
  cr_assert(json_bool(json_get(cfg, "use_cache"), &b) && b);
  cr_assert_str_eq(json_key(cfg, 35), "vocab_size");
}
