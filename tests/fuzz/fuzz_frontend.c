/* fuzz_frontend.c — libFuzzer target for the whole front and middle of the
 * compiler, no C compiler: circuit text → parse → tensors (random, no store)
 * → resolve → rv → simplify → plan → lower → fuse → memplan, with
 * --verify-each's invariant checks after every stage. Any input must end in
 * diagnostics or a plan, never a crash, a sanitizer report or an internal
 * error (exit class 70 aborts). Inputs whose Arrays would hold more than 2^20
 * elements in all, or deeper than 1000 levels (circc runs deep circuits on a
 * large stack, libFuzzer on the main thread's; test_deep covers depth), are
 * skipped: they are not bugs, only memory and stack.
 * Build: tests/CMakeLists.txt (cmake -DCIRCC_FUZZ=ON with clang); run (seeds:
 * tests/data/circ and tests/errors):
 *   ./build-fuzz/tests/fuzz_frontend -max_total_time=600 corpus/ tests/data/circ/ tests/errors/ */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "driver.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

enum { MAX_ARRAY_ELEMENTS = 1 << 20, MAX_DEPTH = 1000 };

/* Whether the parsed circuits are small enough to compile in a fuzzer. */
static bool small_enough(Comp *c, const uint8_t *data, size_t size) {
  NodeList l = {0};
  if (!parse_text(c, "fuzz.circ", (const char *)data, size, NULL, &l)) return false;
  const Node *deepest;
  if (ir_depth(c, l.node, l.n, &deepest) > MAX_DEPTH) return false;
  int64_t total = 0;
  /* every Array under the roots: a post-order over an explicit stack */
  Node **stack = malloc(sizeof(Node *) * (size_t)(c->next_node_id + l.n + 1));
  bool *seen = calloc((size_t)c->next_node_id + 1, 1);
  if (!stack || !seen) abort();
  int top = 0;
  for (int i = 0; i < l.n; i++) stack[top++] = l.node[i];
  while (top && total <= MAX_ARRAY_ELEMENTS) {
    Node *n = stack[--top];
    if (seen[n->id]) continue;
    seen[n->id] = true;
    if (n->kind == NK_Array) {
      int64_t numel = 1;
      for (int d = 0; d < n->shape.rank && numel <= MAX_ARRAY_ELEMENTS; d++) numel *= n->shape.dim[d] > 0 ? n->shape.dim[d] : 1;
      total += numel;
    }
    for (int i = 0; i < n->nchild; i++)
      if (!seen[n->child[i]->id]) stack[top++] = n->child[i];
  }
  free(stack);
  free(seen);
  return total <= MAX_ARRAY_ELEMENTS;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  Comp c;
  comp_init(&c);
  c.err = fopen("/dev/null", "w");
  if (!c.err) abort();
  if (small_enough(&c, data, size)) {
    Comp d;
    comp_init(&d);
    d.err = c.err;
    d.tensors_as_random = true;
    d.tensor_dir = "/nonexistent/circc-fuzz-store";
    DriverOptions o = {.text = (const char *)data, .text_len = size, .text_name = "fuzz.circ", .last = STAGE_MEMPLAN,
                       .verify_each = true};
    Compilation cm = {0};
    driver_run(&d, &o, &cm);
    if (diag_exit_code(&d) == 70) abort(); /* an internal error is a bug */
    comp_free(&d);
  }
  fclose(c.err);
  comp_free(&c);
  return 0;
}
