/* test_cli.c — circc's command line (compiler/main.c, getopt_long) run as a
 * user runs it: --name=value and --name value (and -DNAME=N, -D NAME=N, -O1,
 * -O 1) mean the same, checked on what they change (the resolved circuit, the
 * Makefile of --emit c, eval's output); abbreviations, values given to flags,
 * missing values and eval-only options are usage errors (exit 2); after --
 * every argument is a file; -v prints each stage's time, and on a terminal a
 * long stage is announced. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "testutil.h"

static char *dir;

/* a circuit with a symbolic size: -D SEQ=N binds it */
static const char CIRC[] = "'y' Einsum ab->a\n"
                           "  'x' [1s,4] Symbol 5e8d6a1e-0f8e-4c50-9d46-0f1f1c3e6a10\n"
                           "'z' Einsum ab->b\n"
                           "  'x'\n";

static void setup(void) {
  dir = tu_temp_dir("cli");
  char path[600];
  snprintf(path, sizeof path, "%s/t.circ", dir);
  FILE *f = fopen(path, "w");
  cr_assert_not_null(f);
  fputs(CIRC, f);
  fclose(f);
}
static void teardown(void) {
  tu_sh("rm -rf '%s'", dir);
  free(dir);
}
TestSuite(cli, .init = setup, .fini = teardown);

/* circc ARGS in dir, stdout to NAME.out and stderr to NAME.err; its exit code */
static int circc(const char *name, const char *args) {
  return tu_sh("cd '%s' && NO_COLOR=1 %s %s > %s.out 2> %s.err", dir, CIRCC_BIN, args, name, name);
}

static char *file(const char *name) {
  char path[600];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  return tu_read_file(path, NULL);
}

#define SAME_FILES(a, b)                                                                      \
  do {                                                                                        \
    char *fa = file(a), *fb = file(b);                                                        \
    cr_expect_str_eq(fa, fb, "%s and %s differ", a, b);                                       \
    free(fa);                                                                                 \
    free(fb);                                                                                 \
  } while (0)

#define ERR_HAS(name, text)                                                                   \
  do {                                                                                        \
    char *e = file(name ".err");                                                              \
    cr_expect(strstr(e, text), "%s.err lacks \"%s\":\n%s", name, text, e);                    \
    free(e);                                                                                  \
  } while (0)

Test(cli, both_forms_of_long_options) {
  cr_assert_eq(circc("a", "t.circ --output y -D SEQ=3 --dump resolve"), 0);
  cr_assert_eq(circc("b", "t.circ --output=y -DSEQ=3 --dump=resolve"), 0);
  cr_assert_eq(circc("c", "--dump=resolve -D SEQ=3 t.circ --output=y"), 0);   /* the file anywhere */
  SAME_FILES("a.out", "b.out");
  SAME_FILES("a.out", "c.out");
  char *a = file("a.out");
  cr_expect(strstr(a, "'y' [3] Einsum ab->a\n  'x' [3,4] Symbol"), "SEQ=3 and --output y not applied:\n%s", a);
  cr_expect_null(strstr(a, "'z'"), "--output y kept z:\n%s", a);
  free(a);
}

Test(cli, both_forms_reach_the_build) {
  cr_assert_eq(tu_sh("mkdir '%s/a' '%s/b'", dir, dir), 0);
  cr_assert_eq(circc("a", "t.circ -D SEQ=2 --emit c -O1 --march portable --cflags -DFOO -o a/m.d"), 0);
  cr_assert_eq(circc("b", "t.circ -DSEQ=2 --emit=c -O 1 --march=portable --cflags=-DFOO -o b/m.d"), 0);
  char *mk = file("b/m.d/Makefile");
  cr_expect(strstr(mk, "CFLAGS ?= -O1 ") && strstr(mk, " -DFOO") && !strstr(mk, "-march=native") &&
                !strstr(mk, "CIRCC_GEMM_A_BYTES"),
            "flags not applied:\n%s", mk);
  free(mk);
  SAME_FILES("a/m.d/Makefile", "b/m.d/Makefile");
}

/* A native build sizes the fp32 GEMM's packed A from this host's L2: half of
 * cpu0's level-2 cache as sysfs gives it (e.g. 2048K -> 1048576), or, where
 * sysfs has no cache directory (some virtual machines), as getconf (glibc's
 * CPUID reading) gives it. */
Test(cli, native_build_takes_half_the_l2) {
  cr_assert_eq(tu_sh("mkdir '%s/n'", dir), 0);
  cr_assert_eq(circc("n", "t.circ -D SEQ=2 --emit c -o n/m.d"), 0);
  char *mk = file("n/m.d/Makefile");
  FILE *f = fopen("/sys/devices/system/cpu/cpu0/cache/index2/size", "r");
  long kib = 0;
  if (f) {
    if (fscanf(f, "%ldK", &kib) != 1) kib = 0;
    fclose(f);
  } else if ((f = popen("getconf LEVEL2_CACHE_SIZE 2>/dev/null", "r"))) {
    long bytes = 0;
    if (fscanf(f, "%ld", &bytes) == 1) kib = bytes / 1024;
    pclose(f);
  }
  if (kib >= 256 && kib <= 65536) {
    char want[64];
    snprintf(want, sizeof want, " -DCIRCC_GEMM_A_BYTES=%ld\n", kib * 512);
    cr_expect(strstr(mk, want), "no%s in:\n%s", want, mk);
  } else {
    cr_expect_null(strstr(mk, "CIRCC_GEMM_A_BYTES"), "an L2 size this host does not report:\n%s", mk);
  }
  free(mk);
}

Test(cli, both_forms_in_eval) {
  /* x = tests/data/npy/iota_3x4.npy: 0..11 in a [3,4] float32 */
  cr_assert_eq(tu_sh("cp '%s' '%s/x.npy'", tu_data("npy/iota_3x4.npy"), dir), 0);
  cr_assert_eq(circc("a", "eval t.circ --input x=@x.npy --output y"), 0);
  cr_assert_eq(circc("b", "eval --input=x=@x.npy --output=y t.circ"), 0);
  SAME_FILES("a.out", "b.out");
  char *a = file("a.out");
  cr_expect_str_eq(a, "y [3] float32\n[6, 22, 38]\n");
  free(a);
  /* --output NAME=@FILE writes instead of printing; --print prints it too */
  cr_assert_eq(circc("c", "eval t.circ --input=x=@x.npy --output=z=@z.npy"), 0);
  char *c = file("c.out");
  cr_expect_str_eq(c, "");
  free(c);
  cr_assert_eq(circc("d", "eval t.circ --input x=@x.npy --output z=@z.npy --print"), 0);
  char *d = file("d.out");
  cr_expect_str_eq(d, "z [4] float32\n[12, 15, 18, 21]\n");
  free(d);
}

Test(cli, usage_errors) {
  static const struct { const char *args, *msg; } CASES[] = {
      {"t.circ --outp y", "circc: error: unknown option '--outp' (did you mean --output?) (see circc --help)\n"},
      {"t.circ --report=yes", "option --report takes no value, found '--report=yes'"},
      {"t.circ --dump", "option --dump needs a value"},
      {"t.circ --dum", "option --dump needs a value"},
      {"t.circ -D", "option -D needs a value"},
      {"t.circ -DSEQ", "-D expects NAME=N, found 'SEQ'"},
      {"t.circ -Ofast", "-O expects 0, 1, 2 or 3 (-O0 .. -O3), found 'fast'"},
      {"t.circ -x", "unknown option '-x'"},
      {"t.circ -gx", "unknown option '-x'"},
      {"t.circ --frobnicate=1", "unknown option '--frobnicate=1'"},
      {"t.circ --input x=@x.npy", "--input is an option of circc eval"},
      {"t.circ --print", "--print is an option of circc eval"},
      {"t.circ t.circ", "more than one input file ('t.circ')"},
      {"--emit=so t.circ", "--emit expects exe, c or lib, found 'so'"},
      {"eval t.circ --output=y=@", "--output expects NAME=@FILE.npy, found 'y=@'"},
  };
  for (size_t i = 0; i < sizeof CASES / sizeof *CASES; i++) {
    int code = circc("u", CASES[i].args);
    char *e = file("u.err");
    cr_expect_eq(code, 2, "circc %s: exit %d\n%s", CASES[i].args, code, e);
    cr_expect(strstr(e, CASES[i].msg), "circc %s: expected \"%s\", got:\n%s", CASES[i].args, CASES[i].msg, e);
    free(e);
  }
}

/* after --, an argument that looks like an option is the input file */
Test(cli, double_dash_ends_options) {
  cr_assert_eq(tu_sh("cd '%s' && cp t.circ ./-t.circ", dir), 0);
  cr_assert_eq(circc("a", "-D SEQ=2 --dump resolve -- -t.circ"), 0);
  cr_assert_eq(circc("b", "-D SEQ=2 --dump resolve t.circ"), 0);
  char *a = file("a.out"), *b = file("b.out");
  cr_expect_str_eq(a, b);
  free(a), free(b);
  cr_assert_eq(circc("c", "-D SEQ=2 --dump resolve -t.circ"), 2);
  ERR_HAS("c", "unknown option '-t'");
}

/* -v: one line per stage in pipeline order, `circc: STAGE SECONDS s`, with the
 * C compiler's run (cc) inside emit; nothing without -v when stderr is a file */
Test(cli, verbose_progress) {
  cr_assert_eq(circc("v", "-v -D SEQ=2 -O0 t.circ -o prog"), 0);
  char *e = file("v.err");
  static const char *const STAGES[] = {"load", "library", "parse", "tensors", "resolve", "rv", "simplify",
                                       "plan", "lower", "fuse", "schedule", "memplan", "cc", "emit"};
  const char *p = e;
  for (size_t i = 0; i < sizeof STAGES / sizeof *STAGES; i++) {
    char stage[64];
    double t;
    int used = 0;
    cr_assert(sscanf(p, "circc: %63s %lf s\n%n", stage, &t, &used) == 2 && used > 0,
              "line %zu of -v is not `circc: STAGE SECONDS s`:\n%s", i, e);
    cr_expect_str_eq(stage, STAGES[i], "line %zu:\n%s", i, e);
    cr_expect(t >= 0 && t < 600, "line %zu: %g s", i, t);
    p += used;
  }
  cr_expect_str_eq(p, "", "more than the stages:\n%s", e);
  free(e);
  cr_assert_eq(circc("q", "-D SEQ=2 -O0 t.circ -o prog2"), 0);
  char *q = file("q.err");
  cr_expect_str_eq(q, "");
  free(q);
}

/* On a terminal (script(1) gives one) a stage running for 2 s is announced,
 * then timed; a C compiler made slow by a sleep is that stage. */
Test(cli, long_stage_on_a_terminal) {
  if (tu_sh("command -v script > /dev/null") != 0) cr_skip_test("script(1) is not installed");
  int code = tu_sh("cd '%s' && NO_COLOR=1 script -qec \"%s -D SEQ=2 -O0 --cc 'sleep 2.5 && gcc' t.circ -o slow\" "
                   "/dev/null > tty.out", dir, CIRCC_BIN);
  cr_assert_eq(code, 0);
  char *t = file("tty.out");
  cr_expect(strstr(t, "circc: cc ...\r\n"), "no announcement:\n%s", t);
  const char *line = strstr(t, "circc: cc ") ? strstr(strstr(t, "circc: cc ") + 1, "circc: cc ") : NULL;
  double secs = 0;
  cr_expect(line && sscanf(line, "circc: cc %lf s", &secs) == 1 && secs >= 2.5, "no time for cc:\n%s", t);
  cr_expect_null(strstr(t, "circc: parse"), "short stages are not reported:\n%s", t);
  free(t);
}
