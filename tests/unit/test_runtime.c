/* test_runtime.c — the generated programs' runtime (runtime/MANIFEST) driven
 * through rt_main with a hand-written model: y = 2*x + B[ids] over [2,3] f32,
 * arg = argmax of each row of y (i64), big = 100 values. Covers every flag,
 * every bad-input case (exit 3 with expected vs found), usage errors (exit 2),
 * --check pass and mismatch (exit 1), atomic outputs byte-identical to numpy. */
#define _XOPEN_SOURCE 700   /* nftw */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <ftw.h>
#include <math.h>
#include <omp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include "circc_rt.h"
#include "rt_core.h"
#include "testutil.h"

/* ---- the model ---- */

static const float B[4][3] = {{0, 1, 2}, {10, 11, 12}, {20, 21, 22}, {30, 31, 32}};
static int nruns;   /* how often run() was called */

static const char *model_run(const void *const *in, void *const *out, void *arena) {
  const float *x = in[0];
  const int64_t *ids = in[1];
  float *y = out[0], *big = out[2], *tmp = arena;
  int64_t *arg = out[1];
  nruns++;
  for (int i = 0; i < 2; i++)
    if ((uintptr_t)in[i] % 64) return rt_errorf("input %d is not 64-byte aligned", i);
  for (int i = 0; i < 3; i++)
    if ((uintptr_t)out[i] % 64) return rt_errorf("output %d is not 64-byte aligned", i);
  if ((uintptr_t)arena % 64) return rt_errorf("arena is not 64-byte aligned");
  for (int i = 0; i < 2; i++)
    if (ids[i] < 0 || ids[i] >= 4) return rt_errorf("ids[%d] = %lld is out of range [0, 4)", i, (long long)ids[i]);
#pragma omp parallel for
  for (int k = 0; k < 6; k++) tmp[k] = 2 * x[k];
  for (int i = 0; i < 2; i++) {
    arg[i] = 0;
    for (int j = 0; j < 3; j++) {
      y[i * 3 + j] = tmp[i * 3 + j] + B[ids[i]][j];
      if (y[i * 3 + j] > y[i * 3 + arg[i]]) arg[i] = j;
    }
  }
#pragma omp parallel for
  for (int k = 0; k < 100; k++) big[k] = (float)(k + ids[0]);
  return NULL;
}

static const int64_t SHAPE_X[] = {2, 3}, SHAPE_IDS[] = {2}, SHAPE_BIG[] = {10, 10};
static const rt_tensor_desc INPUTS[] = {{"x", RT_F32, 2, SHAPE_X, 6}, {"ids", RT_I64, 1, SHAPE_IDS, 2}};
static const rt_tensor_desc OUTPUTS[] = {
    {"y", RT_F32, 2, SHAPE_X, 6}, {"arg", RT_I64, 1, SHAPE_IDS, 2}, {"big", RT_F32, 2, SHAPE_BIG, 100}};
static const rt_model MODEL = {
    .name = "prog", .circc_version = "9.9.9", .command_line = "circc test.circ -o prog",
    .source_hash = "abc123", .ninputs = 2, .noutputs = 3, .inputs = INPUTS, .outputs = OUTPUTS,
    .arena_bytes = 24, .flops = 12, .run = model_run};

static const float X[6] = {1, 2, 3, 4, 5, 6};
static const int64_t IDS[2] = {1, 3};
static const float Y[6] = {12, 15, 18, 38, 41, 44};   /* 2*X + B[IDS] */

/* ---- files ---- */

static char dir[] = "/tmp/circc_rt_XXXXXX";

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) { return remove(path); }

static const char *in_dir(const char *name) {
  static char buf[8][512];
  static int k;
  k = (k + 1) % 8;
  snprintf(buf[k], sizeof buf[k], "%s/%s", dir, name);
  return buf[k];
}

/* "NAME=@DIR/FILE" */
static const char *bind(const char *name, const char *file) {
  static char buf[16][600];
  static int k;
  k = (k + 1) % 16;
  snprintf(buf[k], sizeof buf[k], "%s=@%s/%s", name, dir, file);
  return buf[k];
}

static void write_all(const char *path, const void *b, size_t n) {
  FILE *f = fopen(path, "wb");
  cr_assert_not_null(f);
  cr_assert_eq(fwrite(b, 1, n, f), n);
  fclose(f);
}

static bool exists(const char *path) { return access(path, F_OK) == 0; }

static int count_entries(void) {
  char cmd[600];
  snprintf(cmd, sizeof cmd, "ls -A %s | wc -l", dir);
  FILE *p = popen(cmd, "r");
  int n = -1;
  cr_assert_eq(fscanf(p, "%d", &n), 1);
  pclose(p);
  return n;
}

/* A .npy file in dir: magic, version major.0, the dict verbatim + '\n', then the payload. */
static void npy_image(const char *file, int major, const char *dict, const void *data, size_t n) {
  uint8_t out[1024];
  size_t dl = strlen(dict) + 1, prefix = major == 1 ? 10 : 12;
  cr_assert_lt(prefix + dl + n, sizeof out);
  memcpy(out, "\x93NUMPY", 6);
  out[6] = (uint8_t)major;
  out[7] = 0;
  for (size_t i = 0; i < prefix - 8; i++) out[8 + i] = (uint8_t)(dl >> (8 * i));
  memcpy(out + prefix, dict, dl - 1);
  out[prefix + dl - 1] = '\n';
  if (n) memcpy(out + prefix + dl, data, n);
  write_all(in_dir(file), out, prefix + dl + n);
}

/* A v1.0 .npy in dir with descr and shape given as Python text, e.g. "<f4", "(2, 3)". */
static void npy_write(const char *file, const char *descr, const char *shape, const void *data, size_t n) {
  char dict[256];
  snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': False, 'shape': %s, }", descr, shape);
  npy_image(file, 1, dict, data, n);
}

static void setup(void) {
  cr_assert_not_null(mkdtemp(dir));
  npy_write("x.npy", "<f4", "(2, 3)", X, sizeof X);
  npy_write("ids.npy", "<i8", "(2,)", IDS, sizeof IDS);
  npy_write("y.gold.npy", "<f4", "(2, 3)", Y, sizeof Y);
  unsetenv("OMP_NUM_THREADS");
}
static void teardown(void) { nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS); }
TestSuite(runtime, .init = setup, .fini = teardown);

/* ---- running rt_main with captured stdout/stderr ---- */

static const rt_model *model = &MODEL;   /* what run() runs */
static char *out, *err;                  /* of the last run() */

static char *capture_end(int saved, int fd, const char *file) {
  fflush(fd == 1 ? stdout : stderr);
  dup2(saved, fd);
  close(saved);
  size_t len;
  return (char *)(uint8_t *)tu_read_file(file, &len);
}

/* rt_main(model, {"prog", args..., NULL}) */
static int run(const char *arg, ...) {
  char *argv[64] = {"prog"};
  int argc = 1;
  va_list ap;
  va_start(ap, arg);
  for (const char *a = arg; a; a = va_arg(ap, const char *)) argv[argc++] = (char *)a;
  va_end(ap);
  argv[argc] = NULL;
  char of[600], ef[600];
  snprintf(of, sizeof of, "%s/.stdout", dir);
  snprintf(ef, sizeof ef, "%s/.stderr", dir);
  fflush(stdout);
  fflush(stderr);
  int so = dup(1), se = dup(2);
  int fo = open(of, O_WRONLY | O_CREAT | O_TRUNC, 0644), fe = open(ef, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  dup2(fo, 1);
  dup2(fe, 2);
  close(fo);
  close(fe);
  int code = rt_main(model, argc, argv);
  free(out);
  free(err);
  out = capture_end(so, 1, of);
  err = capture_end(se, 2, ef);
  unlink(of);
  unlink(ef);
  return code;
}

#define RUN(...) run(__VA_ARGS__, NULL)
#define X_IN "--input", bind("x", "x.npy")
#define IDS_IN "--input", bind("ids", "ids.npy")
#define HAS(text, s) cr_assert(strstr(text, s), "expected \"%s\" in:\n%s", s, text)
/* the exit code of a run, then text in its stdout or stderr */
#define EXPECT(run_expr, want, stream, s)                                  \
  do {                                                                     \
    int code_ = (run_expr);                                                \
    cr_assert_eq(code_, want, "exit %d, stderr:\n%s", code_, err);         \
    HAS(stream, s);                                                        \
  } while (0)

static Tensor *load(Comp *c, const char *file) {
  Tensor *t = npy_load(c, in_dir(file), NO_LOC);
  cr_assert_not_null(t, "%s", tu_diags(c));
  return t;
}

/* ---- tests ---- */

Test(runtime, prints_every_output) {
  int code = RUN(X_IN, IDS_IN);
  cr_assert_eq(code, 0, "%s", err);
  cr_assert_str_eq(out, "y [2,3] float32\n[[12, 15, 18],\n [38, 41, 44]]\n"
                        "arg [2] int64\n[2, 2]\n"
                        "big [10,10] float32\n[1, 2, 3, 4, 5, 6, 7, 8, ...] (100 elements)\n");
  cr_assert_str_eq(err, "");
  cr_assert_eq(nruns, 1);
}

Test(runtime, outputs_are_byte_identical_to_numpy) {
  char big_flag[600];   /* the --flag=value spelling */
  snprintf(big_flag, sizeof big_flag, "--output=%s", bind("big", "big.npy"));
  int code = RUN(X_IN, IDS_IN, "--output", bind("y", "y.npy"), "--output", bind("arg", "arg.npy"), big_flag);
  cr_assert_eq(code, 0, "%s", err);
  cr_assert_str_eq(out, "", "outputs are not printed when written");
  Comp *c = tu_comp();
  const char *files[] = {"y.npy", "arg.npy", "big.npy"};
  for (int i = 0; i < 3; i++) {
    Tensor *t = load(c, files[i]);
    cr_assert_eq(t->dtype, i == 1 ? DT_I64 : DT_F32);
    cr_assert_eq(t->shape.rank, OUTPUTS[i].rank);
    for (int k = 0; k < t->shape.rank; k++) cr_assert_eq(t->shape.dim[k], OUTPUTS[i].shape[k]);
    /* npy_save writes what numpy.save writes (test_npy checks that) */
    cr_assert(npy_save(c, t, in_dir("ref.npy")));
    size_t la, lb;
    uint8_t *a = (uint8_t *)tu_read_file(in_dir(files[i]), &la), *b = (uint8_t *)tu_read_file(in_dir("ref.npy"), &lb);
    cr_assert_eq(la, lb, "%s", files[i]);
    cr_assert_eq(memcmp(a, b, la), 0, "%s differs from numpy's layout", files[i]);
    cr_assert_eq((la - (size_t)t->nbytes) % 64, 0);
    free(a);
    free(b);
  }
  cr_assert_eq(memcmp(load(c, "y.npy")->data, Y, sizeof Y), 0);
  const int64_t *arg = load(c, "arg.npy")->data;
  cr_assert(arg[0] == 2 && arg[1] == 2);
  tu_free(c);
  /* the files seen: x, ids, y.gold, y, arg, big, ref; no temporaries left */
  cr_assert_eq(count_entries(), 7);
}

Test(runtime, output_replaces_an_existing_file) {
  write_all(in_dir("y.npy"), "junk", 4);
  int code = RUN(X_IN, IDS_IN, "--output", bind("y", "y.npy"));
  cr_assert_eq(code, 0, "%s", err);
  Comp *c = tu_comp();
  cr_assert_eq(memcmp(load(c, "y.npy")->data, Y, sizeof Y), 0);
  tu_free(c);
}

Test(runtime, converts_input_dtypes_and_versions) {
  const double x8[6] = {1, 2, 3, 4, 5, 6};
  const uint16_t x2[6] = {0x3C00, 0x4000, 0x4200, 0x4400, 0x4500, 0x4600};   /* 1..6 in float16 */
  const int32_t i4[2] = {1, 3};
  const int16_t i2[2] = {1, 3};
  const int8_t i1[2] = {1, 3};
  const uint8_t u1[2] = {1, 3};
  npy_write("x8.npy", "<f8", "(2, 3)", x8, sizeof x8);
  npy_write("x2.npy", "<f2", "(2L, 3L)", x2, sizeof x2);
  npy_image("xv2.npy", 2, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3)}", X, sizeof X);
  npy_image("xv3.npy", 3, "{\"shape\": (2,3,), \"descr\": \"<f4\", \"fortran_order\": False}  ", X, sizeof X);
  npy_write("i4.npy", "<i4", "(2,)", i4, sizeof i4);
  npy_write("i2.npy", "<i2", "(2,)", i2, sizeof i2);
  npy_write("i1.npy", "|i1", "(2,)", i1, sizeof i1);
  npy_write("u1.npy", "|u1", "(2,)", u1, sizeof u1);
  npy_image("i8v2.npy", 2, "{'descr': '<i8', 'fortran_order': False, 'shape': (2,), }", IDS, sizeof IDS);
  const char *xs[] = {"x8.npy", "x2.npy", "xv2.npy", "xv3.npy", "x.npy", "x.npy", "x.npy", "x.npy", "x.npy"};
  const char *ids[] = {"ids.npy", "ids.npy", "ids.npy", "ids.npy", "i4.npy", "i2.npy", "i1.npy", "u1.npy", "i8v2.npy"};
  for (int i = 0; i < 9; i++) {
    int code = RUN("--input", bind("x", xs[i]), "--input", bind("ids", ids[i]), "--check", bind("y", "y.gold.npy"));
    cr_assert_eq(code, 0, "%s + %s: %s%s", xs[i], ids[i], out, err);
    HAS(out, "-> ok");
  }
}

Test(runtime, converts_float16_and_signed_ints_exactly) {
  /* -0.5, 2^-24 (smallest subnormal), 65504 (largest finite), -inf, 1, 2 */
  const uint16_t x2[6] = {0xB800, 0x0001, 0x7BFF, 0xFC00, 0x3C00, 0x4000};
  npy_write("x2.npy", "<f2", "(2, 3)", x2, sizeof x2);
  int code = RUN("--input", bind("x", "x2.npy"), IDS_IN, "--output", bind("y", "y.npy"));
  cr_assert_eq(code, 0, "%s", err);
  Comp *c = tu_comp();
  const float *y = load(c, "y.npy")->data;
  cr_assert_eq(y[0], -1 + 10.0f);
  cr_assert_eq(y[1], 0x1p-23f + 11.0f);
  cr_assert_eq(y[2], 131008 + 12.0f);
  cr_assert(isinf(y[3]) && y[3] < 0);
  cr_assert_eq(y[4], 2 + 31.0f);
  tu_free(c);
  /* sign extension: the model sees -1 and -300 */
  const int8_t i1[2] = {-1, 0};
  const int16_t i2[2] = {0, -300};
  npy_write("i1.npy", "|i1", "(2,)", i1, sizeof i1);
  npy_write("i2.npy", "<i2", "(2,)", i2, sizeof i2);
  EXPECT(RUN(X_IN, "--input", bind("ids", "i1.npy")), 3, err, "prog: error: ids[0] = -1 is out of range [0, 4)\n");
  EXPECT(RUN(X_IN, "--input", bind("ids", "i2.npy")), 3, err, "prog: error: ids[1] = -300 is out of range");
}

/* Each bad file for x: exit 3 with a message that says what was expected. */
Test(runtime, rejects_bad_input_files) {
  static const float six[6] = {0}, five[5] = {0}, seven[7] = {0};
  static const int64_t i6[6] = {0};
  static const struct { const char *dict; const void *data; size_t n; const char *msg; } CASES[] = {
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (3, 2), }", six, sizeof six,
       "input 'x': DIR/bad.npy: wrong shape: expected [2,3], found [3,2]"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (6,), }", six, sizeof six, "expected [2,3], found [6]"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3, 1), }", six, sizeof six,
       "expected [2,3], found [2,3,1]"},
      {"{'descr': '<i8', 'fortran_order': False, 'shape': (2, 3), }", i6, sizeof i6,
       "unsupported dtype for a float32 input: expected <f4, <f8 or <f2, found '<i8'"},
      {"{'descr': '|b1', 'fortran_order': False, 'shape': (2, 3), }", six, 6,
       "unsupported dtype: expected one of <f4 <f8 <f2 <i8 <i4 <i2 |i1 |u1, found '|b1'"},
      {"{'descr': '<c8', 'fortran_order': False, 'shape': (2, 3), }", six, sizeof six, "found '<c8'"},
      {"{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (2, 3), }", six, sizeof six,
       "expected a quoted string, found '['"},
      {"{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }", six, sizeof six,
       "expected fortran_order False (C order), found True"},
      {"{'descr': '>f4', 'fortran_order': False, 'shape': (2, 3), }", six, sizeof six,
       "unsupported byte order: expected little-endian '<f4', found '>f4'"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", five, sizeof five,
       "truncated .npy file: expected 24 bytes of <f4 data, found 20"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", seven, sizeof seven,
       "trailing bytes in .npy file: expected 24 bytes of <f4 data, found 28"},
      {"{'descr': '<f8', 'fortran_order': False, 'shape': (2, 3), }", six, sizeof six,
       "expected 48 bytes of <f8 data, found 24"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (2 3), }", six, sizeof six,
       "malformed .npy header: expected ',' or ')' in the shape tuple, found '3'"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (6), }", six, sizeof six,
       "expected ',' after the only dimension"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (-2, 3), }", six, sizeof six,
       "expected a non-negative dimension, found '-'"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999, 3), }", six, sizeof six,
       "expected a dimension below 2^63"},
      {"{'descr': '<f4', 'fortran_order': False, }", six, sizeof six, "found no 'shape'"},
      {"{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", six, sizeof six,
       "found a repeated key 'descr'"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), 'extra': 1}", six, sizeof six,
       "found an unexpected key 'extra'"},
      {"{'descr': '<f4', 'fortran_order': Nope, 'shape': (2, 3), }", six, sizeof six, "expected True or False"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), } x", six, sizeof six,
       "expected only padding after the header dict, found 'x'"},
      {"['descr']", six, sizeof six, "expected '{' starting the header dict, found '['"},
      {"{'descr' '<f4'}", six, sizeof six, "expected ':' after a key, found '\''"},
      {"{'descr': '<f4", six, 0, "expected the closing quote of a string"},
  };
  for (size_t i = 0; i < sizeof CASES / sizeof CASES[0]; i++) {
    npy_image("bad.npy", 1, CASES[i].dict, CASES[i].data, CASES[i].n);
    int code = RUN("--input", bind("x", "bad.npy"), IDS_IN, "--output", bind("y", "y.npy"));
    char want[512];
    const char *dirref = strstr(CASES[i].msg, "DIR");
    if (dirref) snprintf(want, sizeof want, "%.*s%s%s", (int)(dirref - CASES[i].msg), CASES[i].msg, dir, dirref + 3);
    else snprintf(want, sizeof want, "%s", CASES[i].msg);
    cr_assert_eq(code, 3, "case %zu: exit %d, stderr: %s", i, code, err);
    cr_assert(strncmp(err, "prog: error: input 'x': ", 24) == 0, "case %zu: %s", i, err);
    HAS(err, want);
    cr_assert_not(exists(in_dir("y.npy")), "case %zu wrote an output", i);
    cr_assert_eq(nruns, 0);
  }
}

Test(runtime, rejects_bad_id_files) {
  const float f[2] = {1, 3};
  npy_write("f.npy", "<f4", "(2,)", f, sizeof f);
  EXPECT(RUN(X_IN, "--input", bind("ids", "f.npy")), 3, err,
         "prog: error: input 'ids': ");
  HAS(err, "f.npy: unsupported dtype for an int64 input: expected <i8, <i4, <i2, |i1 or |u1, found '<f4'");
  const int32_t big[2] = {1, 3};
  npy_write("big.npy", ">i4", "(2,)", big, sizeof big);
  EXPECT(RUN(X_IN, "--input", bind("ids", "big.npy")), 3, err, "expected little-endian '<i4', found '>i4'");
}

Test(runtime, rejects_unreadable_files) {
  static const struct { const char *bytes; size_t n; const char *msg; } CASES[] = {
      {"", 0, "is not a .npy file: expected it to start with \"\\x93NUMPY\""},
      {"hello world, not numpy", 22, "is not a .npy file"},
      {"\x93NUMPY\x01\x00", 8, "truncated .npy file: expected at least 10 bytes, found 8"},
      {"\x93NUMPY\x02\x00\x10\x00", 10, "truncated .npy file: expected at least 12 bytes"},
      {"\x93NUMPY\x04\x00\x10\x00", 10, "unsupported .npy version: expected 1.0, 2.0 or 3.0, found 4.0"},
      {"\x93NUMPY\x01\x00\x76\x00{'descr'", 17, "truncated .npy header: expected 118 bytes, found 7"},
      {"\x93NUMPY\x02\x00\x00\x00\x00\x01{}", 14,
       "oversized .npy header: expected at most 1048576 bytes, found 16777216"},
  };
  for (size_t i = 0; i < sizeof CASES / sizeof CASES[0]; i++) {
    write_all(in_dir("bad.npy"), CASES[i].bytes, CASES[i].n);
    EXPECT(RUN("--input", bind("x", "bad.npy"), IDS_IN), 3, err, CASES[i].msg);
  }
  EXPECT(RUN("--input", bind("x", "missing.npy"), IDS_IN), 3, err, "input 'x': cannot open ");
  HAS(err, "missing.npy: No such file or directory");
  mkdir(in_dir("sub"), 0755);
  EXPECT(RUN("--input", bind("x", "sub"), IDS_IN), 3, err, "sub: not a regular file");
  /* every bad input is reported, not just the first */
  EXPECT(RUN("--input", bind("x", "missing.npy"), "--input", bind("ids", "sub")), 3, err, "input 'x'");
  HAS(err, "input 'ids'");
  cr_assert_eq(nruns, 0);
}

Test(runtime, usage_errors) {
  static const struct { const char *args[4]; const char *msg; } CASES[] = {
      {{"--input", "z=@x.npy"}, "prog: error: --input: the program has no input named 'z' (see prog --help)\n"
                                "prog: note: its inputs are:\n  x [2,3] float32\n  ids [2] int64\n"},
      {{"--output", "w=@w.npy"}, "--output: the program has no output named 'w'"},
      {{"--check", "w=@w.npy"}, "its outputs are:\n  y [2,3] float32\n  arg [2] int64\n  big [10,10] float32\n"},
      {{"--input", "x.npy"}, "--input expects NAME=@FILE.npy, found 'x.npy'"},
      {{"--input", "x=@"}, "--input expects NAME=@FILE.npy, found 'x=@'"},
      {{"--input", "=@x.npy"}, "expects NAME=@FILE.npy"},
      {{"--input"}, "option --input needs a value"},
      {{"--frobnicate"}, "unknown option '--frobnicate'"},
      {{"--frobnicate=1"}, "unknown option '--frobnicate=1'"},
      {{"-x"}, "unknown option '-x'"},
      {{"stray"}, "unexpected argument 'stray'"},
      {{"--info=yes"}, "option --info takes no value, found '--info=yes'"},
      {{"--bench"}, "option --bench needs a value"},
      {{"--bench", "0"}, "--bench expects a number of runs from 1 to 1000000, found '0'"},
      {{"--bench", "3x"}, "found '3x'"},
      {{"--bench=99999999999999999999"}, "found '99999999999999999999'"},
      {{"--threads", "0"}, "--threads expects a number from 1 to 4096, found '0'"},
      {{"--threads", "-2"}, "found '-2'"},
      {{"--rtol", "-1"}, "--rtol expects a non-negative number, found '-1'"},
      {{"--atol", "nan"}, "--atol expects a non-negative number, found 'nan'"},
      {{"--atol", "inf"}, "found 'inf'"},
  };
  for (size_t i = 0; i < sizeof CASES / sizeof CASES[0]; i++) {
    const char *const *a = CASES[i].args;
    int code = run(X_IN, IDS_IN, a[0], a[1], a[2], a[3]);
    cr_assert_eq(code, 2, "case %zu: exit %d, %s", i, code, err);
    HAS(err, CASES[i].msg);
  }
  EXPECT(RUN(X_IN, X_IN, IDS_IN), 2, err, "--input x is given twice");
  EXPECT(RUN(X_IN), 2, err, "prog: error: missing --input ids=@FILE.npy ([2] int64)\n"
                         "prog: note: every input is required (see prog --help)\n");
  EXPECT(RUN("--output", bind("y", "y.npy")), 2, err, "missing --input x=@FILE.npy");
  HAS(err, "missing --input ids=@FILE.npy");
  cr_assert_eq(nruns, 0);
  cr_assert_not(exists(in_dir("y.npy")));
}

Test(runtime, check_passes) {
  int code = RUN(X_IN, IDS_IN, "--check", bind("y", "y.gold.npy"));
  cr_assert_eq(code, 0, "%s", err);
  cr_assert_str_eq(out, "check y: max_abs_err=0 max_rel_err=0 worst index [0,0] got 12 want 12 -> ok\n");
  /* goldens in float64 and int64; within the default tolerances */
  const double y8[6] = {12, 15.001, 18, 38, 41, 44};
  const int64_t arg[2] = {2, 2};
  npy_write("y8.npy", "<f8", "(2, 3)", y8, sizeof y8);
  npy_write("arg.npy", "<i8", "(2,)", arg, sizeof arg);
  code = RUN(X_IN, IDS_IN, "--check", bind("y", "y8.npy"), "--check", bind("arg", "arg.npy"));
  cr_assert_eq(code, 0, "%s%s", out, err);
  HAS(out, "check y: max_abs_err=0.001 max_rel_err=6.67e-05 worst index [0,1] got 15 want 15.001 -> ok\n");
  HAS(out, "check arg: max_abs_err=0 max_rel_err=0 worst index [0] got 2 want 2 -> ok\n");
  /* an int64 golden for a float32 output */
  const int64_t y_int[6] = {12, 15, 18, 38, 41, 44};
  npy_write("yi.npy", "<i8", "(2, 3)", y_int, sizeof y_int);
  EXPECT(RUN(X_IN, IDS_IN, "--check", bind("y", "yi.npy")), 0, out, "check y: max_abs_err=0 ");
}

/* A golden or an input whose shape differs only by leading 1s holds the same
 * elements in the same order: accepted both ways; other differences are not. */
Test(runtime, leading_ones_in_shapes) {
  npy_write("y1.npy", "<f4", "(1, 2, 3)", Y, sizeof Y);
  npy_write("x1.npy", "<f4", "(1, 1, 2, 3)", X, sizeof X);
  npy_write("ids1.npy", "<i8", "(1, 2)", IDS, sizeof IDS);
  const int64_t arg[2] = {2, 2};
  npy_write("arg1.npy", "<i8", "(1, 1, 2)", arg, sizeof arg);
  int code = RUN("--input", bind("x", "x1.npy"), "--input", bind("ids", "ids1.npy"), "--check", bind("y", "y1.npy"),
                 "--check", bind("arg", "arg1.npy"));
  cr_assert_eq(code, 0, "%s%s", out, err);
  cr_assert_str_eq(out, "check y: max_abs_err=0 max_rel_err=0 worst index [0,0] got 12 want 12 -> ok\n"
                        "check arg: max_abs_err=0 max_rel_err=0 worst index [0] got 2 want 2 -> ok\n");
  /* the model's [2,3] against a golden [1,2,3] whose values differ: the index is the model's */
  const float off[6] = {12, 15, 18, 38, 41, 45};
  npy_write("off.npy", "<f4", "(1, 2, 3)", off, sizeof off);
  EXPECT(RUN(X_IN, IDS_IN, "--check", bind("y", "off.npy")), 1, out, "worst index [1,2] got 44 want 45");
  /* trailing 1s and other shapes of six elements are still wrong */
  npy_write("y61.npy", "<f4", "(2, 3, 1)", Y, sizeof Y);
  EXPECT(RUN(X_IN, IDS_IN, "--check", bind("y", "y61.npy")), 3, err, "wrong shape: expected [2,3], found [2,3,1]");
  npy_write("y16.npy", "<f4", "(1, 6)", Y, sizeof Y);
  EXPECT(RUN(X_IN, IDS_IN, "--check", bind("y", "y16.npy")), 3, err, "wrong shape: expected [2,3], found [1,6]");
}

/* getopt_long: --opt=value and --opt value alike, -xVALUE short forms; an
 * abbreviation names the option; grouped short options are refused. */
Test(runtime, option_forms) {
  char in_x[600], in_ids[600], chk[600];
  snprintf(in_x, sizeof in_x, "--input=%s", bind("x", "x.npy"));
  snprintf(in_ids, sizeof in_ids, "--input=%s", bind("ids", "ids.npy"));
  snprintf(chk, sizeof chk, "--check=%s", bind("y", "y.gold.npy"));
  EXPECT(RUN(in_x, in_ids, chk, "--rtol=0", "--atol", "0", "--threads=1"), 0, out,
         "check y: max_abs_err=0 max_rel_err=0 worst index [0,0] got 12 want 12 -> ok\n");
  EXPECT(RUN(X_IN, in_ids, "--check", bind("y", "y.gold.npy"), "--threads", "1", "-v"), 0, err, "prog: 1 thread\n");
  /* a value that looks like an option is still the value */
  EXPECT(RUN(X_IN, IDS_IN, "--bench", "--info"), 2, err, "--bench expects a number of runs from 1 to 1000000, found '--info'");
  EXPECT(RUN(X_IN, IDS_IN, "--ben", "3"), 2, err, "unknown option '--ben' (did you mean --bench?)");
  EXPECT(RUN(X_IN, IDS_IN, "--inf"), 2, err, "unknown option '--inf' (did you mean --info?)");
  EXPECT(RUN(X_IN, IDS_IN, "-vh"), 2, err, "option -v takes no value, found '-vh'");
  EXPECT(RUN(X_IN, IDS_IN, "--"), 2, err, "unknown option '--'");
  EXPECT(RUN(X_IN, IDS_IN, "--check="), 2, err, "--check expects NAME=@FILE.npy, found ''");
  cr_assert_eq(nruns, 2);
}

Test(runtime, check_mismatch_names_the_worst_index) {
  const double y8[6] = {12, 15.001, 18, 38, 41, 44.5};
  npy_write("y8.npy", "<f8", "(2, 3)", y8, sizeof y8);
  int code = RUN(X_IN, IDS_IN, "--check", bind("y", "y8.npy"), "--output", bind("y", "y.npy"));
  cr_assert_eq(code, 1, "%s", err);
  cr_assert_str_eq(out, "check y: max_abs_err=0.5 max_rel_err=0.0112 worst index [1,2] got 44 want 44.5 "
                        "-> MISMATCH (1 of 6 elements)\n");
  cr_assert(exists(in_dir("y.npy")), "outputs are written even when a check fails");
  /* tolerances apply to every check */
  EXPECT(RUN(X_IN, IDS_IN, "--check", bind("y", "y8.npy"), "--atol", "0.5"), 0, out, "-> ok");
  EXPECT(RUN(X_IN, IDS_IN, "--check", bind("y", "y8.npy"), "--rtol", "0.02"), 0, out, "-> ok");
  EXPECT(RUN(X_IN, IDS_IN, "--rtol=0", "--atol=0", "--check", bind("y", "y8.npy")), 1, out,
         "-> MISMATCH (2 of 6 elements)");
  /* an int64 golden against an int64 output */
  const int64_t arg[2] = {2, 1};
  npy_write("arg.npy", "<i8", "(2,)", arg, sizeof arg);
  EXPECT(RUN(X_IN, IDS_IN, "--check", bind("y", "y.gold.npy"), "--check", bind("arg", "arg.npy")), 1, out,
         "check y: max_abs_err=0 max_rel_err=0 worst index [0,0] got 12 want 12 -> ok\n"
         "check arg: max_abs_err=1 max_rel_err=1 worst index [1] got 2 want 1 -> MISMATCH (1 of 2 elements)\n");
}

Test(runtime, check_nan_matches_only_nan) {
  const float xn[6] = {NAN, 2, 3, 4, 5, INFINITY};
  const float yn[6] = {NAN, 15, 18, 38, 41, INFINITY};
  const float y1[6] = {12, 15, 18, 38, 41, INFINITY};
  const float y2[6] = {NAN, 15, 18, 38, 41, 1e30f};
  npy_write("xn.npy", "<f4", "(2, 3)", xn, sizeof xn);
  npy_write("yn.npy", "<f4", "(2, 3)", yn, sizeof yn);
  npy_write("y1.npy", "<f4", "(2, 3)", y1, sizeof y1);
  npy_write("y2.npy", "<f4", "(2, 3)", y2, sizeof y2);
  EXPECT(RUN("--input", bind("x", "xn.npy"), IDS_IN, "--check", bind("y", "yn.npy")), 0, out, "-> ok");
  EXPECT(RUN("--input", bind("x", "xn.npy"), IDS_IN, "--check", bind("y", "y1.npy"), "--atol", "1e30"), 1, out,
         "check y: max_abs_err=nan max_rel_err=nan worst index [0,0] got nan want 12 -> MISMATCH (1 of 6 elements)");
  EXPECT(RUN("--input", bind("x", "xn.npy"), IDS_IN, "--check", bind("y", "y2.npy"), "--rtol", "1e9"), 1, out,
         "max_abs_err=inf max_rel_err=inf worst index [1,2] got inf want 1.00000002e+30 -> MISMATCH (1 of 6");
}

Test(runtime, bad_golden_is_bad_input) {
  EXPECT(RUN(X_IN, IDS_IN, "--check", bind("y", "ids.npy")), 3, err,
         "prog: error: --check y: ");
  HAS(err, "ids.npy: wrong shape: expected [2,3], found [2]");
  EXPECT(RUN(X_IN, IDS_IN, "--check", bind("y", "nope.npy")), 3, err, "--check y: cannot open");
  cr_assert_eq(nruns, 0, "nothing runs before every file is read");
}

Test(runtime, run_error_writes_nothing) {
  const int64_t bad[2] = {1, 4};
  npy_write("bad.npy", "<i8", "(2,)", bad, sizeof bad);
  int before = count_entries();
  int code = RUN(X_IN, "--input", bind("ids", "bad.npy"), "--output", bind("y", "y.npy"), "--output",
                 bind("arg", "arg.npy"), "--check", bind("y", "y.gold.npy"));
  cr_assert_eq(code, 3);
  cr_assert_str_eq(err, "prog: error: ids[1] = 4 is out of range [0, 4)\n");
  cr_assert_str_eq(out, "");
  cr_assert_eq(count_entries(), before, "an output or temporary was left behind");
  EXPECT(RUN(X_IN, "--input", bind("ids", "bad.npy"), "--bench", "3"), 3, err, "out of range");
  cr_assert_eq(nruns, 2, "the warm-up fails, nothing is timed");
}

Test(runtime, unwritable_output_writes_no_other) {
  int before = count_entries();
  int code = RUN(X_IN, IDS_IN, "--output", bind("arg", "arg.npy"), "--output", bind("y", "nodir/y.npy"));
  cr_assert_eq(code, 3);
  HAS(err, "prog: error: --output y: cannot write ");
  HAS(err, "nodir/y.npy: No such file or directory");
  cr_assert_eq(count_entries(), before, "arg.npy or a temporary was left behind");
}

Test(runtime, bench) {
  int code = RUN(X_IN, IDS_IN, "--bench", "5", "--threads", "2");
  cr_assert_eq(code, 0, "%s", err);
  cr_assert_eq(nruns, 6, "1 warm-up + 5 timed runs");
  int runs, threads;
  double med, p10, p90, gflops;
  int got = sscanf(out,
                   "bench: %d runs after 1 warm-up, %d threads: median %lf ms, p10 %lf ms, p90 %lf ms, %lf GFLOP/s\n",
                   &runs, &threads, &med, &p10, &p90, &gflops);
  cr_assert_eq(got, 6, "%s", out);
  cr_assert(runs == 5 && threads == 2);
  cr_assert(p10 <= med && med <= p90 && p10 > 0, "%s", out);
  cr_assert_float_eq(gflops, 12 / (med * 1e-3) / 1e9, gflops * 1e-3);
  cr_assert_eq(strchr(out, '\n'), out + strlen(out) - 1, "one line: %s", out);
  /* inputs may be left out: they are zero-filled */
  EXPECT(RUN("--bench", "1", "--threads", "1"), 0, out, "bench: 1 runs after 1 warm-up, 1 thread: median ");
  /* ... but not when the outputs are wanted */
  EXPECT(RUN("--bench", "1", "--check", bind("y", "y.gold.npy")), 2, err, "missing --input x");
}

Test(runtime, info) {
  int code = RUN("--info", "--threads", "3");
  cr_assert_eq(code, 0, "%s", err);
  cr_assert_str_eq(out, "program:      prog\n"
                        "circc:        9.9.9\n"
                        "command line: circc test.circ -o prog\n"
                        "source hash:  abc123\n"
                        "inputs:\n  x [2,3] float32\n  ids [2] int64\n"
                        "outputs:\n  y [2,3] float32\n  arg [2] int64\n  big [10,10] float32\n"
                        "arena bytes:  24\n"
                        "flops/run:    12\n"
                        "threads:      3\n"
                        "precision:    fp32\n"
                        "waiting:      the OpenMP runtime's default\n"
                        "barriers:     spin up to 100 us, or 2 us while the thread's CPU is contended, then sleep\n"
                        "team:         one thread fewer per thread that waited for a CPU over 1/8 of the run, in "
                        "two runs in a row, for 8 to 256 runs\n");
  cr_assert_eq(nruns, 0, "--info alone does not run the model");
  /* with an action it runs too */
  EXPECT(RUN("--info", X_IN, IDS_IN, "--check", bind("y", "y.gold.npy")), 0, out, "threads:");
  HAS(out, "check y: ");
}

Test(runtime, threads) {
  EXPECT(RUN(X_IN, IDS_IN, "--threads", "3", "-v"), 0, err, "prog: 3 threads\n");
  cr_assert_eq(omp_get_max_threads(), 3);
  setenv("OMP_NUM_THREADS", "2,1", 1);
  EXPECT(RUN(X_IN, IDS_IN, "-v"), 0, err, "prog: 2 threads\n");
  EXPECT(RUN(X_IN, IDS_IN, "-v", "--threads=1"), 0, err, "prog: 1 thread\n");
  unsetenv("OMP_NUM_THREADS");
  char want[64];
  int procs = omp_get_num_procs();
  snprintf(want, sizeof want, "prog: %d thread%s\n", procs, procs == 1 ? "" : "s");
  EXPECT(RUN(X_IN, IDS_IN, "-v"), 0, err, want);
}

Test(runtime, help) {
  const char *flags[] = {"-h", "--help"};
  for (int i = 0; i < 2; i++) {
    EXPECT(RUN(flags[i]), 0, out, "usage: prog --input NAME=@FILE.npy");
    HAS(out, "inputs (every one is required):\n  x [2,3] float32\n  ids [2] int64\n");
    HAS(out, "--check NAME=@FILE.npy");
    HAS(out, "--bench N");
    HAS(out, "--threads N");
    HAS(out, "exit codes: 0 ok, 1 --check mismatch, 2 usage error,\n            3 bad input");
    HAS(out, "\nsampling:\n  --sample N");   /* every mode's help */
    cr_assert_str_eq(err, "");
  }
  cr_assert_eq(nruns, 0);
}

Test(runtime, errorf_formats) {
  cr_assert_str_eq(rt_errorf("token %d of %s", 7, "prompt"), "token 7 of prompt");
  char longer[2000];
  memset(longer, 'a', sizeof longer - 1);
  longer[sizeof longer - 1] = 0;
  cr_assert_gt(strlen(rt_errorf("%s", longer)), 500, "long messages are truncated, not overrun");
}

Test(runtime, bad_descriptor_is_reported) {
  static const int64_t shape[] = {2, 3};
  static const rt_tensor_desc bad[] = {{"x", RT_F32, 2, shape, 7}};
  rt_model m = MODEL;
  m.inputs = bad;
  m.ninputs = 1;
  model = &m;
  EXPECT(RUN("--info"), 3, err, "prog: error: internal error: bad descriptor of tensor 0 ('x')\n");
  cr_assert_str_eq(out, "");
}

/* Writes part of file i; a SIGTERM arrives while the second is written. */
static bool write_then_die(int i, const char *path, void *arg) {
  (void)arg;
  FILE *f = fopen(path, "w");
  if (!f) return false;
  fputs("partial", f);
  fclose(f);
  if (i == 1) raise(SIGTERM);
  return true;
}

Test(runtime, a_signal_while_writing_leaves_no_temporary) {
  char *where = tu_temp_dir("rt_signal"), a[512], b[512];
  snprintf(a, sizeof a, "%s/a.npy", where);
  snprintf(b, sizeof b, "%s/b.npy", where);
  pid_t pid = fork();
  cr_assert(pid >= 0);
  if (pid == 0) {
    const char *paths[] = {a, b}, *labels[] = {"--output a", "--output b"};
    rt_write_files("prog", 2, paths, labels, write_then_die, NULL);
    _exit(0);
  }
  int status;
  cr_assert_eq(waitpid(pid, &status, 0), pid);
  cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGTERM, "status %d", status);
  cr_assert_eq(tu_sh("test -z \"$(ls %s)\"", where), 0, "a temporary was left in %s", where);
  tu_sh("rm -rf %s", where);
  free(where);
}

/* ---- a decode model whose cache is held as bf16 (rt_model.input_bf16) ---- */

/* L = H = 1, T = 4, D = 2, V = 3. Each run's new_k and new_v at position pos
 * are values bf16 cannot hold (kv_value); the run checks that every cache row
 * j < pos holds what generation stored there (rounded to bf16 to nearest
 * even by this test's own arithmetic when the cache is bf16, exact
 * otherwise) and rows >= pos are 0 (the warm-up run's row was cleared), and
 * counts the values that do not in kv_bad. Generation's first run is a
 * warm-up at its last position with an empty cache (kv_runs 0: rows < pos
 * are 0 then). Logits pick token pos + 1. */
enum { KV_T = 4, KV_D = 2, KV_V = 3 };
static int kv_bad, kv_runs;

static float kv_value(int64_t pos, int d, int v) { return 1.0f + (float)(pos + 1) / 3.0f + (float)d / 7.0f + (float)v / 11.0f; }

static uint16_t kv_round(float x) { /* to nearest even: ties go to the even bf16 */
  uint32_t u;
  memcpy(&u, &x, 4);
  uint32_t lo = u & 0xffffu, hi = u >> 16;
  if (lo > 0x8000u || (lo == 0x8000u && (hi & 1u))) hi++;
  return (uint16_t)hi;
}

static const unsigned char KV_BF16[5] = {0, 0, 0, 1, 1};

static const char *kv_run(const void *const *in, void *const *o, void *arena, bool bf16) {
  (void)arena;
  int64_t pos = *(const int64_t *)in[1];
  for (int v = 0; v < 2; v++)
    for (int64_t j = 0; j < KV_T; j++)
      for (int d = 0; d < KV_D; d++) {
        bool ok;
        if (bf16) {
          uint16_t got = ((const uint16_t *)in[3 + v])[j * KV_D + d];
          ok = got == (j < pos && kv_runs ? kv_round(kv_value(j, d, v)) : 0);
        } else {
          float got = ((const float *)in[3 + v])[j * KV_D + d];
          ok = got == (j < pos && kv_runs ? kv_value(j, d, v) : 0.0f);
        }
        kv_bad += !ok;
      }
  kv_runs++;
  for (int d = 0; d < KV_D; d++) ((float *)o[1])[d] = kv_value(pos, d, 0), ((float *)o[2])[d] = kv_value(pos, d, 1);
  for (int i = 0; i < KV_V; i++) ((float *)o[0])[i] = i == (pos + 1) % KV_V;
  return NULL;
}
static const char *kv_run_bf16(const void *const *in, void *const *o, void *arena) { return kv_run(in, o, arena, true); }
static const char *kv_run_f32(const void *const *in, void *const *o, void *arena) { return kv_run(in, o, arena, false); }

static const int64_t KV_ONE[] = {1}, KV_MASK[] = {KV_T}, KV_CACHE[] = {1, 1, KV_T, KV_D}, KV_NEW[] = {1, 1, KV_D},
                     KV_LOGITS[] = {KV_V};
static const rt_tensor_desc KV_IN[] = {{"token", RT_I64, 1, KV_ONE, 1},
                                       {"pos", RT_I64, 1, KV_ONE, 1},
                                       {"kv_mask", RT_F32, 1, KV_MASK, KV_T},
                                       {"past_k", RT_F32, 4, KV_CACHE, KV_T * KV_D},
                                       {"past_v", RT_F32, 4, KV_CACHE, KV_T * KV_D}};
static const rt_tensor_desc KV_OUT[] = {{"logits", RT_F32, 1, KV_LOGITS, KV_V},
                                        {"new_k", RT_F32, 3, KV_NEW, KV_D},
                                        {"new_v", RT_F32, 3, KV_NEW, KV_D}};

Test(runtime, generation_stores_bf16_cache_rows_rounded) {
  const rt_model bf16 = {.name = "dec", .circc_version = "9.9.9", .command_line = "circc", .source_hash = "abc",
                         .ninputs = 5, .noutputs = 3, .inputs = KV_IN, .outputs = KV_OUT, .run = kv_run_bf16,
                         .precision = "bf16", .input_bf16 = KV_BF16};
  rt_model f32 = bf16;
  f32.run = kv_run_f32, f32.precision = NULL, f32.input_bf16 = NULL;
  const rt_model *models[2] = {&bf16, &f32};
  for (int i = 0; i < 2; i++) {
    model = models[i];
    kv_bad = kv_runs = 0;
    EXPECT(RUN("--tokens", "0", "--generate", "3", "--greedy", "--print-ids"), 0, out, "0,1,2,0");
    cr_assert_eq(kv_runs, 4, "a warm-up, then positions 0, 1, 2");
    cr_assert_eq(kv_bad, 0, "%s cache: %d values not as stored", i ? "fp32" : "bf16", kv_bad);
  }
  model = &bf16;
  EXPECT(RUN("--info"), 0, out, "  past_k [1,1,4,2] float32 (stored as bf16)\n  past_v [1,1,4,2] float32 (stored as bf16)\n");
  HAS(out, "  kv_mask [4] float32\n");
  /* --input rounds too: row 0 of a file holding the values generation would
   * store, read at pos 1, is what the check wants */
  float k[KV_T * KV_D] = {0}, v[KV_T * KV_D] = {0};
  for (int d = 0; d < KV_D; d++) k[d] = kv_value(0, d, 0), v[d] = kv_value(0, d, 1);
  npy_write("k.npy", "<f4", "(1, 1, 4, 2)", k, sizeof k);
  npy_write("v.npy", "<f4", "(1, 1, 4, 2)", v, sizeof v);
  int64_t one = 1;
  float mask[KV_T] = {1, 0, 0, 0};
  npy_write("tok.npy", "<i8", "(1,)", &one, 8);
  npy_write("mask.npy", "<f4", "(4,)", mask, sizeof mask);
  kv_bad = 0, kv_runs = 1;
  int code = RUN("--input", bind("token", "tok.npy"), "--input", bind("pos", "tok.npy"), "--input",
                 bind("kv_mask", "mask.npy"), "--input", bind("past_k", "k.npy"), "--input", bind("past_v", "v.npy"));
  cr_assert_eq(code, 0, "%s", err);
  cr_assert_eq(kv_bad, 0, "--input: %d cache values not rounded to bf16", kv_bad);
  model = &MODEL;
}
