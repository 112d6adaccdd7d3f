/* test_npy.c — .npy reading and writing: save→load round trips for every dtype
 * and rank 0..4, byte-identical output to numpy, v2.0/v3.0 headers, header
 * spellings, mmapped and copied payloads, every malformed case (each message
 * says expected vs found), and atomic saves that leave no file on failure. */
#define _XOPEN_SOURCE 700   /* nftw */
#include <criterion/criterion.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "testutil.h"

static char dir[] = "/tmp/circc_npy_XXXXXX";

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) { return remove(path); }
static void setup(void) { cr_assert_not_null(mkdtemp(dir)); }
static void teardown(void) { nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS); }
TestSuite(npy, .init = setup, .fini = teardown);

static const char *in_dir(const char *name) {
  static char buf[4][512];
  static int k;
  k = (k + 1) % 4;
  snprintf(buf[k], sizeof buf[k], "%s/%s", dir, name);
  return buf[k];
}

static void write_all(const char *path, const void *b, size_t n) {
  FILE *f = fopen(path, "wb");
  cr_assert_not_null(f);
  cr_assert_eq(fwrite(b, 1, n, f), n);
  fclose(f);
}

/* A .npy image: magic, version major.0, the dict verbatim + '\n', then n payload bytes. */
static size_t image(uint8_t *out, int major, const char *dict, const void *data, size_t n) {
  size_t dl = strlen(dict) + 1, prefix = major == 1 ? 10 : 12;
  memcpy(out, "\x93NUMPY", 6);
  out[6] = (uint8_t)major;
  out[7] = 0;
  for (size_t i = 0; i < prefix - 8; i++) out[8 + i] = (uint8_t)(dl >> (8 * i));
  memcpy(out + prefix, dict, dl - 1);
  out[prefix + dl - 1] = '\n';
  if (n) memcpy(out + prefix + dl, data, n);
  return prefix + dl + n;
}

static int count_entries(const char *d) {
  char cmd[600];
  snprintf(cmd, sizeof cmd, "ls -A %s | wc -l", d);
  FILE *p = popen(cmd, "r");
  int n = -1;
  cr_assert_eq(fscanf(p, "%d", &n), 1);
  pclose(p);
  return n;
}

Test(npy, round_trip_every_dtype_and_rank) {
  static const DType DTS[] = {DT_F32, DT_F64, DT_F16, DT_I64, DT_I32, DT_I16, DT_I8, DT_U8, DT_BOOL};
  static const Shape SHAPES[] = {{0, {0}}, {1, {3}}, {2, {2, 3}}, {3, {2, 1, 3}}, {4, {2, 3, 1, 2}},
                                 {1, {0}}, {3, {2, 0, 3}}, {2, {12, 11}}};
  Comp *c = tu_comp();
  for (size_t d = 0; d < sizeof DTS / sizeof DTS[0]; d++)
    for (size_t s = 0; s < sizeof SHAPES / sizeof SHAPES[0]; s++) {
      Tensor *t = tensor_new(c, DTS[d], &SHAPES[s]);
      for (size_t i = 0; i < t->nbytes; i++)
        ((uint8_t *)t->data)[i] = DTS[d] == DT_BOOL ? i % 3 == 0 : (uint8_t)(i * 37 + 11 + d);
      const char *path = in_dir("rt.npy");
      cr_assert(npy_save(c, t, path), "%s", tu_diags(c));
      size_t len;
      uint8_t *bytes = (uint8_t *)tu_read_file(path, &len);
      cr_assert_eq((len - t->nbytes) % 64, 0, "header not padded to 64: %zu", len - t->nbytes);
      cr_assert_eq(bytes[6], 1);
      free(bytes);
      Tensor *u = npy_load(c, path, NO_LOC);
      cr_assert_not_null(u, "%s", tu_diags(c));
      cr_assert_eq(u->dtype, DTS[d]);
      cr_assert(shape_eq(&u->shape, &t->shape), "dtype %s rank %d", dtype_name(DTS[d]), t->shape.rank);
      cr_assert_eq(u->nbytes, t->nbytes);
      cr_assert_eq(memcmp(u->data, t->data, t->nbytes), 0);
      cr_assert_eq(count_entries(dir), 1, "temp file left behind");
    }
  cr_assert_eq(diag_error_count(c), 0);
  tu_free(c);
}

/* npy_save writes exactly what numpy.save wrote for the golden files. */
Test(npy, byte_identical_to_numpy) {
  const char *files[] = {"npy/dev_targets_first256.npy", "npy/dev_logits_first256.npy"};
  Comp *c = tu_comp();
  for (int i = 0; i < 2; i++) {
    Tensor *t = npy_load(c, tu_data(files[i]), NO_LOC);
    cr_assert_not_null(t, "%s", tu_diags(c));
    cr_assert(npy_save(c, t, in_dir("same.npy")));
    size_t la, lb;
    uint8_t *a = (uint8_t *)tu_read_file(tu_data(files[i]), &la), *b = (uint8_t *)tu_read_file(in_dir("same.npy"), &lb);
    cr_assert_eq(la, lb);
    cr_assert_eq(memcmp(a, b, la), 0, "%s differs", files[i]);
    free(a);
    free(b);
  }
  /* rank 0 and rank 3: the headers numpy 1.24 writes (checked with /usr/bin/python3) */
  static const struct { Shape shape; DType dt; const char *dict; } HEADERS[] = {
      {{0, {0}}, DT_F64, "{'descr': '<f8', 'fortran_order': False, 'shape': (), }"},
      {{3, {1000, 2, 3}}, DT_BOOL, "{'descr': '|b1', 'fortran_order': False, 'shape': (1000, 2, 3), }"},
  };
  for (int i = 0; i < 2; i++) {
    Tensor *t = tensor_new(c, HEADERS[i].dt, &HEADERS[i].shape);
    cr_assert(npy_save(c, t, in_dir("s.npy")));
    size_t len, dl = strlen(HEADERS[i].dict);
    uint8_t *b = (uint8_t *)tu_read_file(in_dir("s.npy"), &len);
    cr_assert_eq(len, 128 + t->nbytes);
    cr_assert_eq(b[8] | b[9] << 8, 118);
    cr_assert_eq(memcmp(b + 10, HEADERS[i].dict, dl), 0);
    for (size_t k = 10 + dl; k < 127; k++) cr_assert_eq(b[k], ' ');
    cr_assert_eq(b[127], '\n');
    free(b);
  }
  tu_free(c);
}

Test(npy, golden_values) {
  Comp *c = tu_comp();
  Tensor *t = npy_load(c, tu_data("npy/dev_targets_first256.npy"), NO_LOC);
  cr_assert_not_null(t, "%s", tu_diags(c));
  cr_assert_eq(t->dtype, DT_I64);
  cr_assert(shape_eq(&t->shape, &(Shape){1, {256}}));
  static const int64_t first[8] = {1, 13, 1, 25, 0, 1, 25, 20};
  int64_t sum = 0;
  for (int i = 0; i < 8; i++) cr_assert_eq(((int64_t *)t->data)[i], first[i]);
  for (int i = 0; i < 256; i++) sum += ((int64_t *)t->data)[i];
  cr_assert_eq(sum, 2210);
  cr_assert_eq(((int64_t *)t->data)[255], 1);

  Tensor *l = npy_load(c, tu_data("npy/dev_logits_first256.npy"), NO_LOC);
  cr_assert_not_null(l);
  cr_assert_eq(l->dtype, DT_F32);
  cr_assert(shape_eq(&l->shape, &(Shape){2, {256, 27}}));
  const float *v = l->data;
  cr_assert_eq(v[0], -0x1.6f2768p+3f);
  cr_assert_eq(v[1], -0x1.db99eap+0f);
  cr_assert_eq(v[2], -0x1.9552c4p+1f);
  cr_assert_eq(v[100 * 27 + 7], -0x1.4c43a4p+3f);
  cr_assert_eq(v[255 * 27 + 26], 0x1.544b7ep+2f);
  double s = 0;
  for (int i = 0; i < 256 * 27; i++) s += tensor_get_f64(l, i);
  cr_assert_float_eq(s, 0x1.5cdde5e9c2000p+12, 1e-6);

  size_t len;
  uint8_t *bytes = (uint8_t *)tu_read_file(tu_data("npy/dev_logits_first256.npy"), &len);
  Tensor *m = npy_load_bytes(c, bytes, len, "logits", NO_LOC);
  free(bytes);   /* npy_load_bytes copies */
  cr_assert_not_null(m);
  cr_assert_eq(memcmp(m->data, l->data, l->nbytes), 0);
  tu_free(c);
}

Test(npy, versions_2_and_3) {
  Comp *c = tu_comp();
  uint8_t buf[256];
  const int32_t data[3] = {7, -8, 9};
  for (int major = 2; major <= 3; major++) {
    size_t n = image(buf, major, "{'descr': '<i4', 'fortran_order': False, 'shape': (3,), }", data, sizeof data);
    Tensor *t = npy_load_bytes(c, buf, n, "v2", NO_LOC);
    cr_assert_not_null(t, "%s", tu_diags(c));
    cr_assert_eq(t->dtype, DT_I32);
    cr_assert_eq(memcmp(t->data, data, sizeof data), 0);
  }
  tu_free(c);
}

Test(npy, header_spellings) {
  static const struct { const char *dict; DType dt; } CASES[] = {
      {"{'shape': (2, 3), 'fortran_order': False, 'descr': '<f2'}", DT_F16},
      {"{\"descr\":\"<f2\",\"fortran_order\":False,\"shape\":(2,3)}", DT_F16},
      {"{ 'descr' : '<f2' ,\t'fortran_order' : False , 'shape' : ( 2 , 3 , ) , }  ", DT_F16},
      {"{'descr': '<f2', 'fortran_order': False, 'shape': (2L, 3L), }", DT_F16},
      {"{'descr': '<i2', 'fortran_order': False, 'shape': (6,)}", DT_I16},
      {"{'descr': '|u1', 'fortran_order': False, 'shape': (12,)}", DT_U8},
      {"{'descr': '<u1', 'fortran_order': False, 'shape': (12,)}", DT_U8},
      {"{'descr': '=u1', 'fortran_order': False, 'shape': (12,)}", DT_U8},
      {"{'descr': 'u1', 'fortran_order': False, 'shape': (3, 4)}", DT_U8},
      {"{'descr': '>i1', 'fortran_order': False, 'shape': (12,)}", DT_I8},
      {"{'descr': '|b1', 'fortran_order': False, 'shape': (2, 2, 3)}", DT_BOOL},
  };
  const uint8_t data[12] = {0, 1, 1, 0, 1, 1, 0, 0, 1, 0, 1, 0};
  uint8_t buf[256];
  Comp *c = tu_comp();
  for (size_t k = 0; k < sizeof CASES / sizeof CASES[0]; k++) {
    size_t n = image(buf, 1, CASES[k].dict, data, sizeof data);
    Tensor *t = npy_load_bytes(c, buf, n, "x", NO_LOC);
    cr_assert_not_null(t, "%s: %s", CASES[k].dict, tu_diags(c));
    cr_assert_eq(t->dtype, CASES[k].dt, "%s", CASES[k].dict);
    cr_assert_eq(shape_numel(&t->shape) * (int64_t)dtype_size(t->dtype), 12);
  }
  tu_free(c);
}

static void expect_error(const uint8_t *b, size_t n, const char *what) {
  Comp *c = tu_comp();
  cr_assert_null(npy_load_bytes(c, b, n, "bad.npy", NO_LOC), "accepted: %s", what);
  const char *d = tu_diags(c);
  cr_assert(strstr(d, what), "want \"%s\", got: %s", what, d);
  cr_assert(strstr(d, "expected") && strstr(d, "found"), "no expected/found in: %s", d);
  cr_assert_eq(diag_error_count(c), 1, "%s", d);
  tu_free(c);
}

Test(npy, malformed_headers) {
  static const struct { const char *dict; size_t nbytes; const char *msg; } CASES[] = {
      {"{'descr': '>f4', 'fortran_order': False, 'shape': (2,)}", 8,
       "expected little-endian '<f4', found big-endian '>f4'"},
      {"{'descr': '|f4', 'fortran_order': False, 'shape': (2,)}", 8, "found unspecified '|f4'"},
      {"{'descr': '=i8', 'fortran_order': False, 'shape': (1,)}", 8, "expected little-endian '<i8'"},
      {"{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3)}", 24,
       "expected fortran_order False (C order), found True"},
      {"{'descr': '|O', 'fortran_order': False, 'shape': (1,)}", 8, "found object dtype '|O'"},
      {"{'descr': '<c8', 'fortran_order': False, 'shape': (1,)}", 8, "expected one of <f4 <f8 <f2 <i8 <i4 <i2 |i1 |u1 |b1, found '<c8'"},
      {"{'descr': '<u4', 'fortran_order': False, 'shape': (1,)}", 4, "found '<u4'"},
      {"{'descr': '<U5', 'fortran_order': False, 'shape': (1,)}", 20, "found '<U5'"},
      {"{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (1,)}", 4, "found a structured dtype"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3)}", 20, "expected 24 bytes of data, found 20"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3)}", 28, "expected 24 bytes of data, found 28"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': ()}", 0, "expected 4 bytes of data, found 0"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (0, 5)}", 4, "expected 0 bytes of data, found 4"},
      {"{'descr': '<f8', 'fortran_order': False, 'shape': (4294967296, 4294967296)}", 8,
       "shape (4294967296, 4294967296) of dtype '<f8' is too large: expected at most 2^63 bytes of data, found 8"},
      {"{'descr': '<f8', 'fortran_order': False, 'shape': (1152921504606846976,)}", 8, "expected at most 2^63 bytes"},
      {"{'descr': '<f8', 'fortran_order': False, 'shape': (1099511627776, 1099511627776, 0)}", 0, "is too large"},
      {"{'descr': '<f8', 'fortran_order': False, 'shape': (99999999999999999999,)}", 8,
       "expected a dimension below 2^63, found '9'"},
      {"{'descr': '<f4', 'fortran_order': False}", 4, "found no 'shape'"},
      {"{'fortran_order': False, 'shape': (1,)}", 4, "found no 'descr'"},
      {"{'descr': '<f4', 'shape': (1,)}", 4, "found no 'fortran_order'"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (1,), 'extra': 1}", 4, "found an unexpected key 'extra'"},
      {"{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (1,)}", 4, "found a duplicate key 'descr'"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (1)}", 4, "expected ',' after the only dimension"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': [1]}", 4, "expected a shape tuple '(', found '['"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (-1,)}", 4, "expected a non-negative dimension, found '-'"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (01,)}", 4, "expected a dimension without leading zeros"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (1 2)}", 8, "expected ',' or ')' in the shape tuple, found '2'"},
      {"{'descr': '<f4', 'fortran_order': 0, 'shape': (1,)}", 4, "expected True or False, found '0'"},
      {"{'descr': '<f4, 'fortran_order': False, 'shape': (1,)}", 4, "found '<f4, '"},
      {"{'descr': '<f4' 'fortran_order': False, 'shape': (1,)}", 4, "at byte 26: expected ',' or '}' in the header dict, found '''"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (1,) x}", 4, "expected ',' or '}' in the header dict, found 'x'"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (1,)} x", 4, "expected only padding after the header dict"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (1,", 4, "found end of header"},
      {"{'descr", 4, "expected the closing quote of a string, found byte 0x0a"},
      {"{'descr': 'x234567890123456789012345678901234567890123456789'}", 0,   /* fuzzer finding: long descr */
       "found 'x234567890123456789012345678901234567890'"},
      {"hello", 0, "expected '{' starting the header dict, found 'h'"},
      {"", 0, "expected '{' starting the header dict, found end of header"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1)}",
       4, "expected at most 32 dimensions, found more"},
  };
  uint8_t buf[512] = {0}, zeros[32] = {0};
  for (size_t k = 0; k < sizeof CASES / sizeof CASES[0]; k++)
    expect_error(buf, image(buf, 1, CASES[k].dict, zeros, CASES[k].nbytes), CASES[k].msg);
}

Test(npy, malformed_files) {
  uint8_t buf[512];
  const char *dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }";
  size_t n = image(buf, 1, dict, (float[2]){1, 2}, 8);
  expect_error((const uint8_t *)"", 0, "expected magic \"\\x93NUMPY\", found \"\"");
  expect_error((const uint8_t *)"PK\x03\x04rest", 8, "expected magic \"\\x93NUMPY\", found \"PK\\x03\\x04re\"");
  expect_error(buf, 7, "expected at least 10 bytes, found 7");
  expect_error(buf, 9, "expected at least 10 bytes, found 9");
  buf[6] = 4;
  expect_error(buf, n, "expected 1.0, 2.0 or 3.0, found 4.0");
  buf[6] = 1;
  buf[7] = 1;
  expect_error(buf, n, "found 1.1");
  buf[7] = 0;
  expect_error(buf, 30, "truncated .npy header: expected 68 bytes, found 30");
  size_t n2 = image(buf, 2, dict, NULL, 0);
  expect_error(buf, 11, "expected at least 12 bytes, found 11");
  expect_error(buf, n2 - 1, "truncated .npy header: expected 70 bytes, found 69");
  buf[11] = 0x80;                      /* a 2 GiB header length */
  expect_error(buf, n2, "expected 2147483718 bytes, found 70");
  n = image(buf, 1, dict, (float[2]){1, 2}, 8);
  expect_error(buf, n - 3, "expected 8 bytes of data, found 5");

  /* the same through files: truncated payload, missing file, directory */
  Comp *c = tu_comp();
  size_t len;
  uint8_t *gold = (uint8_t *)tu_read_file(tu_data("npy/dev_targets_first256.npy"), &len);
  write_all(in_dir("cut.npy"), gold, 1000);
  free(gold);
  cr_assert_null(npy_load(c, in_dir("cut.npy"), NO_LOC));
  cr_assert(strstr(tu_diags(c), "cut.npy: shape (256,) of dtype '<i8': expected 2048 bytes of data, found 872"), "%s",
            tu_diags(c));
  cr_assert_eq(diag_exit_code(c), DIAG_CIRCUIT);
  tu_free(c);
  c = tu_comp();
  cr_assert_null(npy_load(c, in_dir("missing.npy"), NO_LOC));
  cr_assert(strstr(tu_diags(c), "cannot open") && strstr(tu_diags(c), "No such file"), "%s", tu_diags(c));
  cr_assert_eq(diag_exit_code(c), DIAG_IO);
  cr_assert_null(npy_load(c, dir, NO_LOC));
  cr_assert(strstr(tu_diags(c), "not a regular file"), "%s", tu_diags(c));
  tu_free(c);
}

/* Big files are mapped: aligned payloads become views, misaligned ones copies. */
Test(npy, mmapped_and_copied) {
  Comp *c = tu_comp();
  Tensor *t = tensor_new(c, DT_F32, &(Shape){2, {128, 256}});
  for (int64_t i = 0; i < 128 * 256; i++) tensor_set_f64(t, i, (double)i * 0.5);
  cr_assert(npy_save(c, t, in_dir("big.npy")));
  Tensor *u = npy_load(c, in_dir("big.npy"), NO_LOC);
  cr_assert_not_null(u);
  cr_assert_not_null(u->map_base);
  cr_assert_eq((char *)u->data, (char *)u->map_base + 128);
  cr_assert_not(u->data_owned);
  cr_assert_eq(memcmp(u->data, t->data, t->nbytes), 0);
  ((float *)u->data)[0] = 42;           /* private mapping: writable, file untouched */
  Tensor *w = npy_load(c, in_dir("big.npy"), NO_LOC);
  cr_assert_eq(((float *)w->data)[0], 0.0f);

  /* a header that leaves the f8 payload misaligned: copied out of the mapping */
  enum { N = 10000 };
  double *vals = malloc(N * sizeof *vals);
  for (int i = 0; i < N; i++) vals[i] = i - 0.25;
  uint8_t *buf = malloc(N * 8 + 256);
  char dict[128];
  snprintf(dict, sizeof dict, "{'descr': '<f8', 'fortran_order': False, 'shape': (%d,), }%*s", N, 42, "");
  size_t n = image(buf, 1, dict, vals, N * 8);
  cr_assert_neq((n - N * 8) % 8, 0, "header %zu is aligned", n - N * 8);
  write_all(in_dir("odd.npy"), buf, n);
  Tensor *o = npy_load(c, in_dir("odd.npy"), NO_LOC);
  cr_assert_not_null(o, "%s", tu_diags(c));
  cr_assert_null(o->map_base);
  cr_assert(o->data_owned);
  cr_assert_eq(memcmp(o->data, vals, N * 8), 0);
  free(vals);
  free(buf);
  tu_free(c);
}

Test(npy, atomic_save) {
  Comp *c = tu_comp();
  Tensor *t = tensor_new(c, DT_I32, &(Shape){1, {4}});
  /* the directory does not exist: nothing is created */
  cr_assert_not(npy_save(c, t, in_dir("nodir/x.npy")));
  cr_assert(strstr(tu_diags(c), "cannot write") && strstr(tu_diags(c), "nodir/x.npy"), "%s", tu_diags(c));
  cr_assert_eq(diag_exit_code(c), DIAG_IO);
  cr_assert_eq(count_entries(dir), 0);
  /* the rename fails (the target is a directory): the temp file is removed */
  cr_assert_eq(mkdir(in_dir("isdir.npy"), 0755), 0);
  cr_assert_not(npy_save(c, t, in_dir("isdir.npy")));
  cr_assert_eq(count_entries(dir), 1);
  /* overwriting replaces the old contents */
  cr_assert(npy_save(c, t, in_dir("x.npy")));
  ((int32_t *)t->data)[2] = 5;
  cr_assert(npy_save(c, t, in_dir("x.npy")));
  Tensor *u = npy_load(c, in_dir("x.npy"), NO_LOC);
  cr_assert_eq(((int32_t *)u->data)[2], 5);
  cr_assert_eq(count_entries(dir), 2);
  /* bfloat16 has no .npy dtype */
  Tensor *b = tensor_new(c, DT_BF16, &(Shape){1, {2}});
  cr_assert_not(npy_save(c, b, in_dir("bf.npy")));
  cr_assert(strstr(tu_diags(c), "no bfloat16 dtype"), "%s", tu_diags(c));
  cr_assert_eq(count_entries(dir), 2);
  tu_free(c);
}
