/* fuzz_parse.c — libFuzzer target for the circuit reader (parse.c) and the
 * printer (dump.c): parse_text on arbitrary bytes (it does no I/O, so no
 * tensor store and no tensors are needed) with diagnostics to /dev/null;
 * whatever parses must dump to text that parses again to the same number of
 * circuits and dumps to the same text.
 * Build: tests/CMakeLists.txt (cmake -DCIRCC_FUZZ=ON with clang); run (seeds: tests/data/circ):
 *   ./build-fuzz/tests/fuzz_parse -max_total_time=180 corpus/ tests/data/circ/ */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "circc.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char *dump_to_string(Comp *c, const NodeList *l, size_t *len) {
  char *buf = NULL;
  FILE *f = open_memstream(&buf, len);
  if (!f) abort();
  dump_circuits(c, f, l->node, l->n);
  fclose(f);
  return buf;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  Comp c;
  comp_init(&c);
  c.err = fopen("/dev/null", "w");
  if (!c.err) abort();
  NodeList l = {0};
  if (parse_text(&c, "fuzz.circ", (const char *)data, size, NULL, &l) && l.n) {
    size_t len1, len2;
    char *d1 = dump_to_string(&c, &l, &len1);
    NodeList l2 = {0};
    if (!parse_text(&c, "dump.circ", d1, len1, NULL, &l2) || l2.n != l.n) {
      fprintf(stderr, "dump does not re-parse:\n%s\n", d1);
      abort();
    }
    char *d2 = dump_to_string(&c, &l2, &len2);
    if (len1 != len2 || memcmp(d1, d2, len1) != 0) {
      fprintf(stderr, "dump is not a fixpoint:\n%s\n---\n%s\n", d1, d2);
      abort();
    }
    free(d1);
    free(d2);
  }
  fclose(c.err);
  comp_free(&c);
  return 0;
}
