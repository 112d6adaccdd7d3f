/* test_lib_c.c — the C API of circc --emit lib, as a C user sees it: two
 * libraries (tests/data/lib/lib_a.circ and lib_b.circ) linked into one
 * program through their generated headers, two contexts of one of them, the
 * descriptors, errors (code and message) and the thread count. Built and run
 * by test_lib.sh; exits 1 after printing the first failed check. */
#include <omp.h>
#include <stdio.h>
#include <string.h>
#include "lib_a.h"
#include "lib_b.h"

static int failures;
#define EXPECT(cond)                                                    \
  do {                                                                  \
    if (!(cond)) {                                                      \
      fprintf(stderr, "test_lib_c.c:%d: failed: %s\n", __LINE__, #cond); \
      failures++;                                                       \
    }                                                                   \
  } while (0)

/* lib_a: y = 2x + 1, g = [10, 20, 30][ids] (hand-computed) */
static void check_a(circc_ctx *ctx, float base) {
  float x[6], y[6], g[4];
  int64_t ids[4] = {2, 0, 1, 1};
  for (int i = 0; i < 6; i++) x[i] = base + (float)i;
  const void *in[] = {x, ids};
  void *out[] = {y, g};
  EXPECT(lib_a_run(ctx, in, out, NULL) == CIRCC_OK);
  EXPECT(!strcmp(lib_a_error(ctx), ""));
  for (int i = 0; i < 6; i++) EXPECT(y[i] == 2 * (base + (float)i) + 1);
  EXPECT(g[0] == 30 && g[1] == 10 && g[2] == 20 && g[3] == 20);
}

int main(void) {
  circc_ctx *a1 = lib_a_init(), *a2 = lib_a_init(), *b = lib_b_init();
  EXPECT(a1 && a2 && b && a1 != a2);

  /* descriptors */
  circc_info info;
  lib_a_info(&info);
  EXPECT(info.ninputs == 2 && info.noutputs == 2 && info.ntaps == 0 && info.npatches == 0);
  EXPECT(!strcmp(info.name, "lib_a.so") && strstr(info.command_line, "--emit lib"));
  circc_tensor t;
  EXPECT(lib_a_tensor(CIRCC_INPUT, 0, &t) == CIRCC_OK && !strcmp(t.name, "x") && t.dtype == CIRCC_F32 &&
         t.rank == 2 && t.shape[0] == 2 && t.shape[1] == 3 && t.numel == 6);
  EXPECT(lib_a_tensor(CIRCC_INPUT, 1, &t) == CIRCC_OK && !strcmp(t.name, "ids") && t.dtype == CIRCC_I64 &&
         t.rank == 1 && t.shape[0] == 4);
  EXPECT(lib_a_tensor(CIRCC_OUTPUT, 1, &t) == CIRCC_OK && !strcmp(t.name, "g") && t.dtype == CIRCC_F32);
  EXPECT(lib_b_tensor(CIRCC_OUTPUT, 0, &t) == CIRCC_OK && !strcmp(t.name, "s") && t.rank == 0 && t.numel == 1);
  EXPECT(lib_a_tensor(CIRCC_INPUT, 2, &t) == CIRCC_EUSAGE);
  EXPECT(lib_a_tensor(CIRCC_PATCH, 0, &t) == CIRCC_EUSAGE);
  EXPECT(lib_a_tensor(7, 0, &t) == CIRCC_EUSAGE);

  /* two contexts, interleaved, with their own thread counts; the calling
   * thread's OpenMP setting is put back after each run */
  omp_set_num_threads(3);
  EXPECT(lib_a_set_threads(a1, 1) == CIRCC_OK && lib_a_threads(a1) == 1);
  EXPECT(lib_a_threads(a2) == 3);   /* 0: the caller's setting */
  check_a(a1, 0);
  check_a(a2, 10);
  check_a(a1, -5);
  EXPECT(omp_get_max_threads() == 3);
  EXPECT(lib_a_set_threads(a2, -1) == CIRCC_EUSAGE && strstr(lib_a_error(a2), "found -1"));
  EXPECT(lib_a_threads(a2) == 3);
  check_a(a2, 2);   /* a success clears the message */

  /* the other model: s = sum(v * v) */
  float v[4] = {1, 2, 3, 4}, s = 0;
  const void *bin[] = {v};
  void *bout[] = {&s};
  EXPECT(lib_b_run(b, bin, bout, NULL) == CIRCC_OK && s == 30);

  /* errors: a bad value (code 3 with the model's message), then the context works again */
  float x[6] = {0}, y[6], g[4];
  int64_t bad[4] = {0, 1, 2, 3};
  const void *in[] = {x, bad};
  void *out[] = {y, g};
  EXPECT(lib_a_run(a1, in, out, NULL) == CIRCC_EINPUT);
  EXPECT(!strcmp(lib_a_error(a1), "'g': index 3 is out of range for an axis of size 3"));
  EXPECT(!strcmp(lib_a_error(a2), ""));   /* the other context is untouched */
  check_a(a1, 1);
  /* bad calls (code 2): a NULL input, another model's context, no context */
  const void *missing[] = {x, NULL};
  EXPECT(lib_a_run(a1, missing, out, NULL) == CIRCC_EUSAGE && !strcmp(lib_a_error(a1), "input 1 ('ids') is NULL"));
  EXPECT(lib_b_run(a1, bin, bout, NULL) == CIRCC_EUSAGE && strstr(lib_a_error(a1), "another model ('lib_a.so'"));
  EXPECT(lib_a_run(NULL, in, out, NULL) == CIRCC_EUSAGE && strstr(lib_a_error(NULL), "no context"));

  lib_a_free(a1);
  lib_a_free(a2);
  lib_b_free(b);
  lib_a_free(NULL);
  if (!failures) printf("test_lib_c: ok\n");
  return failures ? 1 : 0;
}
