/* fuzz_json.c — libFuzzer target for json_parse: any input either fails with
 * a message and an in-range offset, or gives a tree whose lookups agree with
 * its member lists. Build: see tests/CMakeLists.txt (CIRCC_FUZZ). */
#include <stdlib.h>
#include <string.h>
#include "json.h"
#include "tensor.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Walks v checking invariants; aborts (a fuzzer finding) on violation. */
static void walk(const Json *v, int depth) {
  if (depth > JSON_MAX_DEPTH + 1) abort();
  switch (v->type) {
  case JSON_STRING:
    if (v->str[v->len] != 0) abort();
    break;
  case JSON_ARRAY:
    for (size_t i = 0; i < json_len(v); i++) walk(json_at(v, i), depth + 1);
    break;
  case JSON_OBJECT:
    for (size_t i = 0; i < json_len(v); i++) {
      const JsonMember *m = &v->members[i];
      /* keys with an embedded NUL cannot be looked up by C string */
      if (strlen(m->key) == m->key_len && json_get(v, m->key) != m->value) abort();
      walk(m->value, depth + 1);
    }
    break;
  default:
    break;
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  Comp c;
  comp_init(&c);
  c.err = fopen("/dev/null", "w");
  JsonError err;
  const Json *v = json_parse(&c.arena, (const char *)data, size, &err);
  if (v) walk(v, 0);
  else if (err.offset > size || !err.msg[0]) abort();
  fclose(c.err);
  comp_free(&c);
  return 0;
}
