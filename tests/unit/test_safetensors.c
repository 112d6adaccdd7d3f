/* test_safetensors.c — safetensors checkpoints written by the test (every
 * dtype incl. F16/BF16, mapped and copied payloads, a sharded 2-file
 * checkpoint with its index.json), every malformed header case, and the real
 * tiny-random-gpt2 checkpoint from Hugging Face. */
#define _XOPEN_SOURCE 700   /* nftw */
#include <criterion/criterion.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "testutil.h"

static char dir[] = "/tmp/circc_st_XXXXXX";

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) { return remove(path); }
static void setup(void) { cr_assert_not_null(mkdtemp(dir)); }
static void teardown(void) { nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS); }
TestSuite(safetensors, .init = setup, .fini = teardown);

static const char *in_dir(const char *name) {
  static char buf[4][512];
  static int k;
  k = (k + 1) % 4;
  snprintf(buf[k], sizeof buf[k], "%s/%s", dir, name);
  return buf[k];
}

static void write_bytes(const char *path, const void *b, size_t n) {
  FILE *f = fopen(path, "wb");
  cr_assert_not_null(f, "%s", path);
  cr_assert_eq(fwrite(b, 1, n, f), n);
  fclose(f);
}

static void write_text(const char *path, const char *text) { write_bytes(path, text, strlen(text)); }

/* A safetensors file under construction: JSON entries plus the data section. */
typedef struct Builder {
  char hdr[8192];
  size_t hl;
  uint8_t *data;
  size_t dl;
} Builder;

static Builder *builder(void) {
  Builder *b = calloc(1, sizeof *b);
  b->data = malloc(1 << 20);
  b->hl = (size_t)snprintf(b->hdr, sizeof b->hdr, "{\"__metadata__\": {\"format\": \"pt\"}");
  return b;
}

static void add(Builder *b, const char *name, const char *dtype, const char *shape, const void *bytes, size_t n) {
  b->hl += (size_t)snprintf(b->hdr + b->hl, sizeof b->hdr - b->hl,
                            ", \"%s\": {\"dtype\": \"%s\", \"shape\": %s, \"data_offsets\": [%zu, %zu]}", name, dtype,
                            shape, b->dl, b->dl + n);
  if (n) memcpy(b->data + b->dl, bytes, n);
  b->dl += n;
}

/* Writes the file with the header padded so the data section starts at an
 * offset ≡ align_rem (mod 8), then frees the builder. */
static void finish(Builder *b, const char *path, size_t align_rem) {
  b->hdr[b->hl++] = '}';
  while ((8 + b->hl) % 8 != align_rem) b->hdr[b->hl++] = ' ';
  uint8_t *out = malloc(8 + b->hl + b->dl);
  for (int i = 0; i < 8; i++) out[i] = (uint8_t)((uint64_t)b->hl >> (8 * i));
  memcpy(out + 8, b->hdr, b->hl);
  memcpy(out + 8 + b->hl, b->data, b->dl);
  write_bytes(path, out, 8 + b->hl + b->dl);
  free(out);
  free(b->data);
  free(b);
}

/* A file whose header is the given text (no data unless ndata > 0). */
static void raw_file(const char *path, const char *header, size_t ndata) {
  size_t hl = strlen(header);
  uint8_t *out = calloc(1, 8 + hl + ndata);
  for (int i = 0; i < 8; i++) out[i] = (uint8_t)((uint64_t)hl >> (8 * i));
  memcpy(out + 8, header, hl);
  write_bytes(path, out, 8 + hl + ndata);
  free(out);
}

static Tensor *get(Comp *c, TensorFile *f, const char *name, DType dt, const Shape *shape) {
  Tensor *t = safetensors_get(c, f, name, NO_LOC);
  cr_assert_not_null(t, "%s: %s", name, tu_diags(c));
  cr_assert_eq(t->dtype, dt, "%s: dtype %s", name, dtype_name(t->dtype));
  cr_assert(shape_eq(&t->shape, shape), "%s: shape", name);
  return t;
}

Test(safetensors, every_dtype) {
  Builder *b = builder();
  const float f32[4] = {1.5f, -2.0f, 3.25f, 0.0f};
  const uint16_t f16[3] = {0x3C00, 0xC000, 0x3555}, bf16[2] = {0x3F80, 0x4049};
  const double f64[1] = {2.5};
  const int64_t i64[2] = {-5, (int64_t)1 << 40};
  const int32_t i32[1] = {-7};
  const int16_t i16[1] = {300};
  const int8_t i8[2] = {-3, 4};
  const uint8_t u8[3] = {0, 200, 255}, bools[2] = {1, 0};
  const float scalar = 7.0f;
  add(b, "f32", "F32", "[2, 2]", f32, sizeof f32);
  add(b, "f16", "F16", "[3]", f16, sizeof f16);
  add(b, "bf16", "BF16", "[1, 2]", bf16, sizeof bf16);
  add(b, "f64", "F64", "[1]", f64, sizeof f64);
  add(b, "i64", "I64", "[2]", i64, sizeof i64);
  add(b, "i32", "I32", "[1, 1, 1]", i32, sizeof i32);
  add(b, "i16", "I16", "[1]", i16, sizeof i16);
  add(b, "i8", "I8", "[2]", i8, sizeof i8);
  add(b, "u8", "U8", "[3]", u8, sizeof u8);
  add(b, "bool", "BOOL", "[2]", bools, sizeof bools);
  add(b, "empty", "F32", "[0, 3]", NULL, 0);
  add(b, "scalar", "F32", "[]", &scalar, sizeof scalar);
  finish(b, in_dir("all.safetensors"), 0);

  Comp *c = tu_comp();
  TensorFile *f = safetensors_open(c, in_dir("all.safetensors"), NO_LOC);
  cr_assert_not_null(f, "%s", tu_diags(c));
  cr_assert_eq(safetensors_count(f), 12);
  cr_assert_str_eq(safetensors_name(f, 0), "bf16");   /* sorted by name; __metadata__ skipped */
  cr_assert_str_eq(safetensors_name(f, 11), "u8");
  cr_assert_null(safetensors_name(f, 12));

  Tensor *t = get(c, f, "f32", DT_F32, &(Shape){2, {2, 2}});
  cr_assert_eq(memcmp(t->data, f32, sizeof f32), 0);
  t = get(c, f, "f16", DT_F16, &(Shape){1, {3}});
  cr_assert_eq(tensor_get_f64(t, 0), 1.0);
  cr_assert_eq(tensor_get_f64(t, 1), -2.0);
  cr_assert_eq(tensor_get_f64(t, 2), 0.333251953125);
  t = get(c, f, "bf16", DT_BF16, &(Shape){2, {1, 2}});
  cr_assert_eq(tensor_get_f64(t, 0), 1.0);
  cr_assert_eq(tensor_get_f64(t, 1), 3.140625);
  cr_assert_eq(tensor_get_f64(get(c, f, "f64", DT_F64, &(Shape){1, {1}}), 0), 2.5);
  t = get(c, f, "i64", DT_I64, &(Shape){1, {2}});
  cr_assert_eq(((int64_t *)t->data)[1], (int64_t)1 << 40);
  cr_assert_eq(tensor_get_f64(get(c, f, "i32", DT_I32, &(Shape){3, {1, 1, 1}}), 0), -7);
  cr_assert_eq(tensor_get_f64(get(c, f, "i16", DT_I16, &(Shape){1, {1}}), 0), 300);
  cr_assert_eq(tensor_get_f64(get(c, f, "i8", DT_I8, &(Shape){1, {2}}), 0), -3);
  cr_assert_eq(tensor_get_f64(get(c, f, "u8", DT_U8, &(Shape){1, {3}}), 1), 200);
  cr_assert_eq(tensor_get_f64(get(c, f, "bool", DT_BOOL, &(Shape){1, {2}}), 0), 1);
  cr_assert_eq(get(c, f, "empty", DT_F32, &(Shape){2, {0, 3}})->nbytes, 0);
  cr_assert_eq(tensor_get_f64(get(c, f, "scalar", DT_F32, &(Shape){0, {0}}), 0), 7.0);
  cr_assert_eq(diag_error_count(c), 0);
  tu_free(c);
}

/* Big tensors are mapped; one misaligned for its dtype is copied instead. */
Test(safetensors, mapped_and_copied) {
  enum { N = 20000 };
  float *big = malloc(N * sizeof *big);
  for (int i = 0; i < N; i++) big[i] = (float)i * 0.25f;
  for (size_t rem = 0; rem < 8; rem += 2) {
    Builder *b = builder();
    add(b, "small", "I8", "[2]", "\x01\x02", 2);   /* shifts "big" by 2 bytes */
    add(b, "big", "F32", "[100, 200]", big, N * sizeof *big);
    finish(b, in_dir("big.safetensors"), rem);
    Comp *c = tu_comp();
    TensorFile *f = safetensors_open(c, in_dir("big.safetensors"), NO_LOC);
    cr_assert_not_null(f, "%s", tu_diags(c));
    Tensor *t = get(c, f, "big", DT_F32, &(Shape){2, {100, 200}});
    cr_assert_eq(memcmp(t->data, big, N * sizeof *big), 0, "rem %zu", rem);
    bool aligned = (rem + 2) % 4 == 0;
    cr_assert_eq(t->map_base != NULL, aligned, "rem %zu", rem);
    cr_assert_eq(t->data_owned, !aligned);
    tu_free(c);
  }
  free(big);
}

/* A shard holding F32 tensor `t1` = v1 and, if with_b, F16 tensor "b" = 3.0. */
static void shard(const char *name, const char *t1, float v1, bool with_b) {
  Builder *b = builder();
  add(b, t1, "F32", "[1]", &v1, 4);
  if (with_b) add(b, "b", "F16", "[1]", &(uint16_t){0x4200}, 2);
  finish(b, in_dir(name), 0);
}

Test(safetensors, sharded) {
  shard("model-00001-of-00002.safetensors", "a", 1.0f, true);
  shard("model-00002-of-00002.safetensors", "c", 2.0f, false);
  const char *index =
      "{\"metadata\": {\"total_size\": 10}, \"weight_map\": {"
      "\"c\": \"model-00002-of-00002.safetensors\", \"a\": \"model-00001-of-00002.safetensors\", "
      "\"b\": \"model-00001-of-00002.safetensors\", \"d\": \"model-00003-of-00003.safetensors\", "
      "\"e\": \"model-00001-of-00002.safetensors\"}}";
  write_text(in_dir("model.safetensors.index.json"), index);
  const char *paths[] = {dir, in_dir("model.safetensors.index.json")};
  for (int k = 0; k < 2; k++) {
    Comp *c = tu_comp();
    TensorFile *f = safetensors_open(c, paths[k], NO_LOC);
    cr_assert_not_null(f, "%s", tu_diags(c));
    cr_assert_eq(safetensors_count(f), 5);
    cr_assert_str_eq(safetensors_name(f, 2), "c");
    cr_assert_eq(tensor_get_f64(get(c, f, "c", DT_F32, &(Shape){1, {1}}), 0), 2.0);
    cr_assert_eq(tensor_get_f64(get(c, f, "a", DT_F32, &(Shape){1, {1}}), 0), 1.0);
    cr_assert_eq(tensor_get_f64(get(c, f, "b", DT_F16, &(Shape){1, {1}}), 0), 3.0);
    cr_assert_eq(diag_error_count(c), 0);
    /* a listed shard that does not exist fails when first used, then stays failed */
    cr_assert_null(safetensors_get(c, f, "d", NO_LOC));
    cr_assert(strstr(tu_diags(c), "cannot open") && strstr(tu_diags(c), "model-00003-of-00003.safetensors"), "%s",
              tu_diags(c));
    cr_assert_eq(diag_exit_code(c), DIAG_IO);
    cr_assert_null(safetensors_get(c, f, "d", NO_LOC));
    cr_assert(strstr(tu_diags(c), "which could not be loaded"), "%s", tu_diags(c));
    /* listed in the index but absent from its shard */
    cr_assert_null(safetensors_get(c, f, "e", NO_LOC));
    cr_assert(strstr(tu_diags(c), "expected tensor 'e' (listed by"), "%s", tu_diags(c));
    cr_assert_null(safetensors_get(c, f, "z", NO_LOC));
    cr_assert(strstr(tu_diags(c), "no tensor named 'z' (5 tensors)"), "%s", tu_diags(c));
    tu_free(c);
  }
  /* model.safetensors wins over the index */
  shard("model.safetensors", "only", 5.0f, false);
  Comp *c = tu_comp();
  TensorFile *f = safetensors_open(c, in_dir(""), NO_LOC);
  cr_assert_not_null(f, "%s", tu_diags(c));
  cr_assert_eq(safetensors_count(f), 1);
  cr_assert_str_eq(safetensors_name(f, 0), "only");
  tu_free(c);
}

/* Opens `path`, expecting failure with `msg` in the diagnostics. */
static void expect_open_error(const char *path, const char *msg) {
  Comp *c = tu_comp();
  cr_assert_null(safetensors_open(c, path, NO_LOC), "accepted: %s", msg);
  cr_assert(strstr(tu_diags(c), msg), "want \"%s\", got: %s", msg, tu_diags(c));
  cr_assert_eq(diag_error_count(c), 1, "%s", tu_diags(c));
  tu_free(c);
}

Test(safetensors, malformed) {
  static const struct { const char *header; size_t ndata; const char *msg; } CASES[] = {
      {"{\"a\": ", 0, "malformed safetensors header at byte 14: expected a value, found end of input"},
      {"[1]", 0, "expected a JSON object, found array"},
      {"{\"a\": 5}", 0, "tensor 'a': expected an object {dtype, shape, data_offsets}, found number"},
      {"{\"a\": {\"shape\": [1], \"data_offsets\": [0, 4]}}", 4, "tensor 'a': expected a string \"dtype\", found none"},
      {"{\"a\": {\"dtype\": 3, \"shape\": [1], \"data_offsets\": [0, 4]}}", 4, "expected a string \"dtype\", found number"},
      {"{\"a\": {\"dtype\": \"F8_E4M3\", \"shape\": [1], \"data_offsets\": [0, 1]}}", 1,
       "tensor 'a': unsupported dtype: expected one of F32 F16 BF16 F64 I64 I32 I16 I8 U8 BOOL, found 'F8_E4M3'"},
      {"{\"a\": {\"dtype\": \"U16\", \"shape\": [1], \"data_offsets\": [0, 2]}}", 2, "found 'U16'"},
      {"{\"a\": {\"dtype\": \"F32\", \"data_offsets\": [0, 4]}}", 4, "expected \"shape\" to be an array of at most 32 non-negative integers, found none"},
      {"{\"a\": {\"dtype\": \"F32\", \"shape\": 4, \"data_offsets\": [0, 4]}}", 4, "found number"},
      {"{\"a\": {\"dtype\": \"F32\", \"shape\": [-1], \"data_offsets\": [0, 4]}}", 4, "found an element that is not a non-negative integer"},
      {"{\"a\": {\"dtype\": \"F32\", \"shape\": [1.5], \"data_offsets\": [0, 4]}}", 4, "found an element that is not"},
      {"{\"a\": {\"dtype\": \"F32\", \"shape\": [1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1], \"data_offsets\": [0, 4]}}",
       4, "found too many dimensions"},
      {"{\"a\": {\"dtype\": \"F32\", \"shape\": [1]}}", 4, "expected \"data_offsets\" to be [begin, end] with 0 <= begin <= end, found none"},
      {"{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [4]}}", 4, "found array"},
      {"{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [4, 0]}}", 4, "0 <= begin <= end, found [4, 0]"},
      {"{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [-4, 0]}}", 4, "found [-4, 0]"},
      {"{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": \"0-4\"}}", 4, "found string"},
      {"{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [4, 8]}}", 4,
       "tensor 'a': data_offsets out of range: expected end <= 4 (the data section), found [4, 8]"},
      {"{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 4]}}", 4,
       "tensor 'a' (F32, shape [2]): expected 8 bytes of data, found 4 (data_offsets [0, 4])"},
      {"{\"a\": {\"dtype\": \"BF16\", \"shape\": [2, 3], \"data_offsets\": [0, 16]}}", 16, "expected 12 bytes of data, found 16"},
      {"{\"a\": {\"dtype\": \"F64\", \"shape\": [4294967296, 4294967296], \"data_offsets\": [0, 8]}}", 8,
       "(F64, shape [4294967296, 4294967296]) is too large: expected at most 2^63 bytes of data, found 8"},
      {"{\"a\": {\"dtype\": \"I8\", \"shape\": [1099511627776, 1099511627776, 0], \"data_offsets\": [0, 0]}}", 0,
       "is too large"},
      {"{\"a\": {\"dtype\": \"I8\", \"shape\": [0, 3], \"data_offsets\": [0, 1]}}", 1, "expected 0 bytes of data, found 1"},
      {"{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]}, "
       "\"b\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [4, 12]}}", 12,
       "expected disjoint data_offsets, found overlapping tensors 'a' [0, 8) and 'b' [4, 12)"},
      {"{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]}, "
       "\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [4, 8]}}", 8, "duplicate key \"a\""},
      {"{\"a\\u0000b\": {\"dtype\": \"I8\", \"shape\": [1], \"data_offsets\": [0, 1]}}", 1,
       "expected tensor names without NUL bytes, found 'a\\u0000...'"},
  };
  for (size_t k = 0; k < sizeof CASES / sizeof CASES[0]; k++) {
    raw_file(in_dir("bad.safetensors"), CASES[k].header, CASES[k].ndata);
    expect_open_error(in_dir("bad.safetensors"), CASES[k].msg);
  }
  /* framing */
  write_bytes(in_dir("short.safetensors"), "\x05\0\0\0\0", 5);
  expect_open_error(in_dir("short.safetensors"), "short.safetensors: not a safetensors file: expected at least 8 bytes, found 5");
  write_bytes(in_dir("long.safetensors"), "\xe8\x03\0\0\0\0\0\0{}          ", 20);
  expect_open_error(in_dir("long.safetensors"), "expected a header length of at most 12 bytes, found 1000");
  write_bytes(in_dir("huge.safetensors"), "\xff\xff\xff\xff\xff\xff\xff\xff{}", 10);
  expect_open_error(in_dir("huge.safetensors"), "expected a header length of at most 2 bytes, found 18446744073709551615");
  /* paths */
  expect_open_error(in_dir("missing.safetensors"), "cannot open");
  cr_assert_eq(mkdir(in_dir("empty"), 0755), 0);
  expect_open_error(in_dir("empty"), "expected model.safetensors or model.safetensors.index.json in this directory, found neither");
  /* index files */
  write_text(in_dir("a.index.json"), "{\"weight_map\": [");
  expect_open_error(in_dir("a.index.json"), "a.index.json: malformed JSON at byte 16: expected a value, found end of input");
  write_text(in_dir("b.index.json"), "{\"metadata\": {}}");
  expect_open_error(in_dir("b.index.json"), "expected a \"weight_map\" object mapping tensor names to shard files, found none");
  write_text(in_dir("c.index.json"), "{\"weight_map\": {\"x\": \"../x.safetensors\"}}");
  expect_open_error(in_dir("c.index.json"), "weight_map entry for 'x': expected the file name of a shard beside the index, found a path");
  write_text(in_dir("d.index.json"), "{\"weight_map\": {\"x\": 1}}");
  expect_open_error(in_dir("d.index.json"), "found number");
  write_text(in_dir("e.index.json"), "{\"weight_map\": {\"x\\u0000\": \"m.safetensors\"}}");
  expect_open_error(in_dir("e.index.json"), "expected tensor names without NUL bytes, found 'x\\u0000...'");
}

Test(safetensors, missing_tensor_suggestions) {
  Comp *c = tu_comp();
  TensorFile *f = safetensors_open(c, tu_model("gpt2/tiny_random_gpt2/model.safetensors"), NO_LOC);
  cr_assert_not_null(f, "%s", tu_diags(c));
  cr_assert_null(safetensors_get(c, f, "transformer.wte.weigth", NO_LOC));
  cr_assert(strstr(tu_diags(c), "no tensor named 'transformer.wte.weigth' (64 tensors); did you mean "
                                "'transformer.wte.weight', 'transformer.wpe.weight'"),
            "%s", tu_diags(c));
  cr_assert_eq(diag_exit_code(c), DIAG_CIRCUIT);
  tu_free(c);
}

/* hf-internal-testing/tiny-random-gpt2, values read with Python struct */
Test(safetensors, real_checkpoint) {
  Comp *c = tu_comp();
  TensorFile *f = safetensors_open(c, tu_model("gpt2/tiny_random_gpt2/model.safetensors"), NO_LOC);
  cr_assert_not_null(f, "%s", tu_diags(c));
  cr_assert_eq(safetensors_count(f), 64);
  cr_assert_str_eq(safetensors_name(f, 0), "transformer.h.0.attn.c_attn.bias");
  for (int i = 0; i < safetensors_count(f); i++) {
    cr_assert_str_neq(safetensors_name(f, i), "__metadata__");
    cr_assert_not_null(safetensors_get(c, f, safetensors_name(f, i), NO_LOC), "%s", tu_diags(c));
  }
  Tensor *wte = get(c, f, "transformer.wte.weight", DT_F32, &(Shape){2, {1000, 32}});
  cr_assert_not_null(wte->map_base);   /* 128000 bytes at an aligned offset: mapped */
  cr_assert_eq(((float *)wte->data)[0], -0x1.52379ap-6f);
  cr_assert_eq(((float *)wte->data)[1], 0x1.999dc2p-7f);
  Tensor *fc = get(c, f, "transformer.h.4.mlp.c_fc.weight", DT_F32, &(Shape){2, {32, 128}});
  cr_assert_eq(((float *)fc->data)[0], -0x1.c175eap-6f);
  cr_assert_eq(((float *)fc->data)[1], -0x1.c7d382p-7f);
  Tensor *lnf = get(c, f, "transformer.ln_f.bias", DT_F32, &(Shape){1, {32}});
  cr_assert_eq(((float *)lnf->data)[0], 0.0f);
  cr_assert_eq(diag_error_count(c), 0);
  tu_free(c);
}
