/* test_tensor_store.c — BLAKE3 against b3sum's answers, the torch.save reader
 * on PyTorch-written fixtures (tests/data/pt, checked against their
 * .expected.npy), hand-made zips (strides, zip64, bad inputs), the writer round
 * trip, the §3.2 hash and the store's prefix lookup. Expected hashes were
 * computed once with b3sum (and python3's struct for the tensor-hash input). */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "testutil.h"

/* ---- helpers ---- */

static uint8_t *slurp(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  cr_assert(f, "cannot open %s", path);
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  uint8_t *b = malloc((size_t)n + 1);
  cr_assert(fread(b, 1, (size_t)n, f) == (size_t)n);
  fclose(f);
  *len = (size_t)n;
  return b;
}

static void spit(const char *path, const void *data, size_t len) {
  FILE *f = fopen(path, "wb");
  cr_assert(f, "cannot create %s", path);
  cr_assert(fwrite(data, 1, len, f) == len);
  fclose(f);
}

/* memmem without _GNU_SOURCE */
static uint8_t *find(const uint8_t *hay, size_t n, const void *needle, size_t k) {
  for (size_t i = 0; k <= n && i <= n - k; i++)
    if (memcmp(hay + i, needle, k) == 0) return (uint8_t *)hay + i;
  return NULL;
}

static char *tmpdir(void) {
  static char buf[64];
  strcpy(buf, "/tmp/circc_store_XXXXXX");
  cr_assert(mkdtemp(buf));
  return buf;
}

static void hex(const uint8_t *d, size_t n, char *out) {
  for (size_t i = 0; i < n; i++) sprintf(out + 2 * i, "%02x", d[i]);
}

/* A tiny .npy reader (v1/v2, little-endian, C order) so these tests do not
 * depend on compiler/front/npy.c. */
typedef struct Npy {
  DType dt;
  Shape shape;
  const uint8_t *data;
  size_t nbytes;
  uint8_t *file;
} Npy;

static Npy npy_read(const char *path) {
  static const struct { const char *descr; DType dt; } DESCRS[] = {
      {"<f4", DT_F32}, {"<f8", DT_F64}, {"<f2", DT_F16}, {"<i8", DT_I64}, {"<i4", DT_I32},
      {"<i2", DT_I16}, {"|i1", DT_I8},  {"|u1", DT_U8},  {"|b1", DT_BOOL},
  };
  Npy n = {.dt = DT_UNKNOWN};
  size_t len;
  n.file = slurp(path, &len);
  cr_assert(len >= 10 && memcmp(n.file, "\x93NUMPY", 6) == 0, "%s: not .npy", path);
  size_t hl = n.file[6] == 1 ? (size_t)(n.file[8] | n.file[9] << 8) : 0, start = 10;
  if (n.file[6] >= 2) hl = n.file[8] | n.file[9] << 8 | (size_t)n.file[10] << 16 | (size_t)n.file[11] << 24, start = 12;
  cr_assert(start + hl <= len);
  char *h = strndup((const char *)n.file + start, hl);
  const char *d = strstr(h, "'descr': '"), *s = strstr(h, "'shape': (");
  cr_assert(d && s && strstr(h, "'fortran_order': False"), "%s: bad header %s", path, h);
  for (size_t i = 0; i < sizeof DESCRS / sizeof *DESCRS; i++)
    if (strncmp(d + 10, DESCRS[i].descr, 3) == 0) n.dt = DESCRS[i].dt;
  cr_assert(n.dt != DT_UNKNOWN, "%s: unknown descr", path);
  for (char *p = (char *)s + 10; *p != ')';) {
    char *e;
    long v = strtol(p, &e, 10);
    if (e == p) break;
    n.shape.dim[n.shape.rank++] = v;
    p = e + (*e == ',');
    while (*p == ' ') p++;
  }
  free(h);
  n.data = n.file + start + hl;
  n.nbytes = len - start - hl;
  cr_assert(n.nbytes == (size_t)shape_numel(&n.shape) * dtype_size(n.dt), "%s: bad size", path);
  return n;
}

static void assert_same(const Tensor *t, DType dt, const Shape *s, const void *data, size_t nbytes, const char *what) {
  cr_assert(t, "%s: not loaded", what);
  cr_assert_eq(t->dtype, dt, "%s: dtype %s, expected %s", what, dtype_name(t->dtype), dtype_name(dt));
  cr_assert(shape_eq(&t->shape, s), "%s: shape differs", what);
  cr_assert_eq(t->nbytes, nbytes, "%s: %zu bytes, expected %zu", what, t->nbytes, nbytes);
  cr_assert(nbytes == 0 || memcmp(t->data, data, nbytes) == 0, "%s: data differs", what);
}

static const char *const FIXTURES[] = {"f32_2x3", "f32_rank0", "f32_rank4", "f32_slice_of_10", "f64_3",
                                       "f16_4", "i64_5", "u8_3", "bool_3"};
#define NFIXTURES (sizeof FIXTURES / sizeof *FIXTURES)

static const char *fixture(const char *name, const char *ext) {
  static char buf[256];
  snprintf(buf, sizeof buf, "pt/%s%s", name, ext);
  return tu_data(buf);
}

/* ---- BLAKE3 ---- */

/* b3sum of the official test input (byte i = i % 251) of each length. */
static const struct { size_t len; const char *hash; } B3[] = {
    {0, "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"},
    {1, "2d3adedff11b61f14c886e35afa036736dcd87a74d27b5c1510225d0f592e213"},
    {63, "e9bc37a594daad83be9470df7f7b3798297c3d834ce80ba85d6e207627b7db7b"},
    {64, "4eed7141ea4a5cd4b788606bd23f46e212af9cacebacdc7d1f4c6dc7f2511b98"},
    {65, "de1e5fa0be70df6d2be8fffd0e99ceaa8eb6e8c93a63f2d8d1c30ecb6b263dee"},
    {1023, "10108970eeda3eb932baac1428c7a2163b0e924c9a9e25b35bba72b28f70bd11"},
    {1024, "42214739f095a406f3fc83deb889744ac00df831c10daa55189b5d121c855af7"},
    {1025, "d00278ae47eb27b34faecf67b4fe263f82d5412916c1ffd97c8cb7fb814b8444"},
    {2048, "e776b6028c7cd22a4d0ba182a8bf62205d2ef576467e838ed6f2529b85fba24a"},
    {2049, "5f4d72f40d7a5f82b15ca2b2e44b1de3c2ef86c426c95c1af0b6879522563030"},
    {3072, "b98cb0ff3623be03326b373de6b9095218513e64f1ee2edd2525c7ad1e5cffd2"},
    {3073, "7124b49501012f81cc7f11ca069ec9226cecb8a2c850cfe644e327d22d3e1cd3"},
    {4096, "015094013f57a5277b59d8475c0501042c0b642e531b0a1c8f58d2163229e969"},
    {4097, "9b4052b38f1c5fc8b1f9ff7ac7b27cd242487b3d890d15c96a1c25b8aa0fb995"},
    {5120, "9cadc15fed8b5d854562b26a9536d9707cadeda9b143978f319ab34230535833"},
    {5121, "628bd2cb2004694adaab7bbd778a25df25c47b9d4155a55f8fbd79f2fe154cff"},
    {6144, "3e2e5b74e048f3add6d21faab3f83aa44d3b2278afb83b80b3c35164ebeca205"},
    {6145, "f1323a8631446cc50536a9f705ee5cb619424d46887f3c376c695b70e0f0507f"},
    {7168, "61da957ec2499a95d6b8023e2b0e604ec7f6b50e80a9678b89d2628e99ada77a"},
    {7169, "a003fc7a51754a9b3c7fae0367ab3d782dccf28855a03d435f8cfe74605e7817"},
    {8192, "aae792484c8efe4f19e2ca7d371d8c467ffb10748d8a5a1ae579948f718a2a63"},
    {8193, "bab6c09cb8ce8cf459261398d2e7aef35700bf488116ceb94a36d0f5f1b7bc3b"},
    {16384, "f875d6646de28985646f34ee13be9a576fd515f76b5b0a26bb324735041ddde4"},
    {31744, "62b6960e1a44bcc1eb1a611a8d6235b6b4b78f32e7abc4fb4c6cdcce94895c47"},
    {102400, "bc3e3d41a1146b069abffad3c0d44860cf664390afce4d9661f7902e7943e085"},
};

Test(tensor_store, blake3_official_vectors) {
  uint8_t *in = malloc(102400), out[32];
  char h[65];
  for (size_t i = 0; i < 102400; i++) in[i] = (uint8_t)(i % 251);
  for (size_t v = 0; v < sizeof B3 / sizeof *B3; v++) {
    blake3_hash(in, B3[v].len, out);
    hex(out, 32, h);
    cr_expect_str_eq(h, B3[v].hash, "one-shot, length %zu", B3[v].len);
    /* the same through update() in odd and block/chunk-sized pieces */
    static const size_t STEPS[] = {1, 7, 64, 1024, 1500};
    for (size_t s = 0; s < sizeof STEPS / sizeof *STEPS; s++) {
      if (STEPS[s] == 1 && B3[v].len > 9000) continue;
      Blake3 b;
      blake3_init(&b);
      for (size_t o = 0; o < B3[v].len; o += STEPS[s])
        blake3_update(&b, in + o, B3[v].len - o < STEPS[s] ? B3[v].len - o : STEPS[s]);
      blake3_final(&b, out);
      hex(out, 32, h);
      cr_expect_str_eq(h, B3[v].hash, "length %zu in pieces of %zu", B3[v].len, STEPS[s]);
    }
  }
  free(in);
}

/* ---- the fixtures ---- */

Test(tensor_store, fixtures_load_to_expected_npy) {
  for (size_t i = 0; i < NFIXTURES; i++) {
    Comp *c = tu_comp();
    Npy n = npy_read(fixture(FIXTURES[i], ".expected.npy"));
    Tensor *t = torch_load(c, fixture(FIXTURES[i], ".pt"), NO_LOC);
    assert_same(t, n.dt, &n.shape, n.data, n.nbytes, FIXTURES[i]);
    /* contiguous aligned payloads are views of the mapping, not copies */
    cr_expect(t->map_base && !t->data_owned, "%s: expected an mmapped view", FIXTURES[i]);
    cr_expect_eq(diag_error_count(c), 0, "%s: %s", FIXTURES[i], tu_diags(c));
    free(n.file);
    tu_free(c);
  }
}

Test(tensor_store, unaligned_bytes_are_copied) {
  for (size_t i = 0; i < NFIXTURES; i++) {
    Comp *c = tu_comp();
    size_t len;
    uint8_t *b = slurp(fixture(FIXTURES[i], ".pt"), &len), *shifted = malloc(len + 1);
    memcpy(shifted + 1, b, len);
    Npy n = npy_read(fixture(FIXTURES[i], ".expected.npy"));
    Tensor *t = torch_load_bytes(c, shifted + 1, len, FIXTURES[i], NO_LOC);
    assert_same(t, n.dt, &n.shape, n.data, n.nbytes, FIXTURES[i]);
    if (dtype_size(n.dt) > 1) cr_expect(t->data_owned, "%s: unaligned data must be gathered", FIXTURES[i]);
    free(n.file), free(b), free(shifted);
    tu_free(c);
  }
}

/* Independently computed (python3 struct + b3sum) from the .expected.npy data. */
static const struct { const char *name, *hash; } HASHES[] = {
    {"f32_2x3", "9754250c7bdeb32c2b921901724167f5f2726ab83a6d01d6026075a8a2f60a3b"},
    {"i64_5", "f9858ba3a2277462654c87118f0b598faa20244ae1f27581ed994e2bb537ae8e"},
    {"f32_rank0", "64830ef5c592839fc1866652bdb5dfc372e4d1596afb37fbad35d6ff89cf5924"},
    {"bool_3", "85fa6daf63b3905d265770df828d0ab0c44d3d32e95298b8e794b3f219d6fd2c"},
};

Test(tensor_store, tensor_hash_matches_reference) {
  for (size_t i = 0; i < sizeof HASHES / sizeof *HASHES; i++) {
    Comp *c = tu_comp();
    Tensor *t = torch_load(c, fixture(HASHES[i].name, ".pt"), NO_LOC);
    cr_assert(t);
    char h[65];
    tensor_hash_hex(t, h);
    cr_expect_str_eq(h, HASHES[i].hash, "%s", HASHES[i].name);
    tu_free(c);
  }
}

Test(tensor_store, bf16_is_not_hashable) {
  Comp *c = tu_comp();
  Shape s = {1, {4}};
  Tensor *t = tensor_new(c, DT_BF16, &s);
  char h[65] = "x";
  tensor_hash_hex(t, h);
  cr_expect_str_eq(h, "");
  cr_expect_null(store_write(c, t));
  cr_expect(strstr(tu_diags(c), "bfloat16"), "%s", tu_diags(c));
  tu_free(c);
}

/* ---- hand-made torch.save files ---- */

typedef struct Bytes {
  uint8_t d[4096];
  size_t n;
} Bytes;

static void add(Bytes *b, const void *p, size_t n) {
  cr_assert(b->n + n <= sizeof b->d);
  memcpy(b->d + b->n, p, n);
  b->n += n;
}
#define ADD(b, lit) add((b), (lit), sizeof(lit) - 1)
static void add16(Bytes *b, unsigned v) { uint8_t x[2] = {(uint8_t)v, (uint8_t)(v >> 8)}; add(b, x, 2); }
static void add32(Bytes *b, uint32_t v) { add16(b, v & 0xffff), add16(b, v >> 16); }
static void add64(Bytes *b, uint64_t v) { add32(b, (uint32_t)v), add32(b, (uint32_t)(v >> 32)); }

/* data.pkl calling _rebuild_tensor_v2 with storage (cls, numel) and `args`:
 * the pickled offset, size and stride (no memo, like a minimal pickler). */
static Bytes pkl(const char *cls, uint8_t numel, const char *args, size_t alen) {
  Bytes b = {.n = 0};
  ADD(&b, "\x80\x02" "ctorch._utils\n_rebuild_tensor_v2\n" "((" "X\x07\0\0\0storage" "ctorch\n");
  add(&b, cls, strlen(cls));
  ADD(&b, "\nX\x01\0\0\0" "0" "X\x03\0\0\0" "cpuK");
  add(&b, &numel, 1);
  ADD(&b, "tQ");
  add(&b, args, alen);
  ADD(&b, "\x89" "ccollections\nOrderedDict\n)RtR.");
  return b;
}
#define PKL(cls, numel, args) pkl((cls), (numel), (args), sizeof(args) - 1)

typedef struct Entry {
  const char *name;
  const void *data;
  size_t len;
} Entry;

/* A stored zip (CRCs left 0: the reader does not check them). With zip64, the
 * end record is saturated and every central entry uses the zip64 extra field. */
static Bytes zip(const Entry *e, int n, bool zip64, unsigned method) {
  Bytes b = {.n = 0};
  uint32_t off[8];
  for (int i = 0; i < n; i++) {
    off[i] = (uint32_t)b.n;
    add32(&b, 0x04034b50), add16(&b, 20), add16(&b, 0), add16(&b, method), add32(&b, 0), add32(&b, 0);
    add32(&b, 0), add32(&b, 0), add16(&b, (unsigned)strlen(e[i].name)), add16(&b, 0);
    add(&b, e[i].name, strlen(e[i].name));
    add(&b, e[i].data, e[i].len);
  }
  size_t cd = b.n;
  for (int i = 0; i < n; i++) {
    uint32_t sz = zip64 ? 0xFFFFFFFF : (uint32_t)e[i].len;
    add32(&b, 0x02014b50), add16(&b, 45), add16(&b, 45), add16(&b, 0), add16(&b, method), add32(&b, 0);
    add32(&b, 0), add32(&b, sz), add32(&b, sz), add16(&b, (unsigned)strlen(e[i].name));
    add16(&b, zip64 ? 28 : 0), add16(&b, 0), add16(&b, 0), add16(&b, 0), add32(&b, 0);
    add32(&b, zip64 ? 0xFFFFFFFF : off[i]);
    add(&b, e[i].name, strlen(e[i].name));
    if (zip64) add16(&b, 1), add16(&b, 24), add64(&b, e[i].len), add64(&b, e[i].len), add64(&b, off[i]);
  }
  size_t cd_size = b.n - cd, z64 = b.n;
  if (zip64) {
    add32(&b, 0x06064b50), add64(&b, 44), add16(&b, 45), add16(&b, 45), add32(&b, 0), add32(&b, 0);
    add64(&b, (uint64_t)n), add64(&b, (uint64_t)n), add64(&b, cd_size), add64(&b, cd);
    add32(&b, 0x07064b50), add32(&b, 0), add64(&b, z64), add32(&b, 1);
  }
  add32(&b, 0x06054b50), add16(&b, 0), add16(&b, 0);
  add16(&b, zip64 ? 0xFFFF : (unsigned)n), add16(&b, zip64 ? 0xFFFF : (unsigned)n);
  add32(&b, zip64 ? 0xFFFFFFFF : (uint32_t)cd_size), add32(&b, zip64 ? 0xFFFFFFFF : (uint32_t)cd), add16(&b, 0);
  return b;
}

static const float STORAGE12[12] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11};

static Tensor *load_made(Comp *c, const Bytes *p, const void *storage, size_t slen, bool zip64, unsigned method) {
  Entry e[] = {{"t/data.pkl", p->d, p->n}, {"t/byteorder", "little", 6}, {"t/data/0", storage, slen},
               {"t/version", "3\n", 2}};
  Bytes z = zip(e, 4, zip64, method);
  static Bytes keep; /* the bytes must outlive a view */
  keep = z;
  return torch_load_bytes(c, keep.d, keep.n, "made.pt", NO_LOC);
}

Test(tensor_store, transposed_view_is_gathered) {
  /* size (4,3), stride (1,4): element [i][j] = storage[i + 4j] */
  Bytes p = PKL("FloatStorage", 12, "K\x00K\x04K\x03\x86K\x01K\x04\x86");
  Comp *c = tu_comp();
  Tensor *t = load_made(c, &p, STORAGE12, sizeof STORAGE12, false, 0);
  cr_assert(t, "%s", tu_diags(c));
  cr_assert(t->shape.rank == 2 && t->shape.dim[0] == 4 && t->shape.dim[1] == 3);
  for (int i = 0; i < 4; i++)
    for (int j = 0; j < 3; j++) cr_expect_eq(((float *)t->data)[3 * i + j], (float)(i + 4 * j));
  cr_expect(t->data_owned);
  tu_free(c);
}

Test(tensor_store, offset_and_stride_slice_with_wide_ints) {
  /* offset 1 as LONG1, size (2,2) via BININT2/BININT, stride (6, 2): rows 1,3 / 7,9 */
  Bytes p = PKL("FloatStorage", 12, "\x8a\x01\x01" "(M\x02\x00J\x02\x00\x00\x00t" "(K\x06K\x02t");
  Comp *c = tu_comp();
  Tensor *t = load_made(c, &p, STORAGE12, sizeof STORAGE12, false, 0);
  cr_assert(t, "%s", tu_diags(c));
  float want[4] = {1, 3, 7, 9};
  cr_expect(memcmp(t->data, want, sizeof want) == 0);
  tu_free(c);
}

Test(tensor_store, broadcast_view_and_empty_tensor) {
  Comp *c = tu_comp();
  Bytes p = PKL("FloatStorage", 12, "K\x05K\x03K\x02\x86K\x00K\x01\x86"); /* (3,2) stride (0,1) */
  Tensor *t = load_made(c, &p, STORAGE12, sizeof STORAGE12, false, 0);
  cr_assert(t, "%s", tu_diags(c));
  float want[6] = {5, 6, 5, 6, 5, 6};
  cr_expect(memcmp(t->data, want, sizeof want) == 0);
  Bytes p0 = PKL("FloatStorage", 0, "K\x00K\x00K\x03\x86K\x03K\x01\x86"); /* (0,3) */
  t = load_made(c, &p0, "", 0, false, 0);
  cr_assert(t, "%s", tu_diags(c));
  cr_expect(t->nbytes == 0 && t->shape.rank == 2 && t->shape.dim[1] == 3);
  tu_free(c);
}

Test(tensor_store, zip64_records_and_extra_fields) {
  Bytes p = PKL("FloatStorage", 12, "K\x00K\x0c\x85K\x01\x85");
  Comp *c = tu_comp();
  Tensor *t = load_made(c, &p, STORAGE12, sizeof STORAGE12, true, 0);
  cr_assert(t, "%s", tu_diags(c));
  cr_expect(t->nbytes == sizeof STORAGE12 && memcmp(t->data, STORAGE12, sizeof STORAGE12) == 0);
  tu_free(c);
}

/* Each malformed case must fail with a message containing `want`. */
static void expect_error(const Bytes *p, const void *storage, size_t slen, unsigned method, const char *want) {
  Comp *c = tu_comp();
  cr_expect_null(load_made(c, p, storage, slen, false, method), "accepted; wanted '%s'", want);
  cr_expect_eq(diag_error_count(c), 1, "%s", tu_diags(c));
  cr_expect(strstr(tu_diags(c), want), "wanted '%s' in: %s", want, tu_diags(c));
  cr_expect(strstr(tu_diags(c), "'made.pt'"), "message does not name the file: %s", tu_diags(c));
  tu_free(c);
}

Test(tensor_store, malformed_inputs_are_rejected) {
  Bytes ok = PKL("FloatStorage", 12, "K\x00K\x0c\x85K\x01\x85");
  expect_error(&ok, STORAGE12, sizeof STORAGE12, 8, "compressed");
  expect_error(&ok, STORAGE12, 40, 0, "holds 40 bytes");
  Bytes oob = PKL("FloatStorage", 12, "K\x01K\x0c\x85K\x01\x85");
  expect_error(&oob, STORAGE12, sizeof STORAGE12, 0, "reads element 12");
  Bytes huge = PKL("FloatStorage", 12, "K\x00K\x03\x85\x8a\x08\xff\xff\xff\xff\xff\xff\xff\x7f\x85");
  expect_error(&huge, STORAGE12, sizeof STORAGE12, 0, "overflow");
  Bytes neg = PKL("FloatStorage", 12, "J\xff\xff\xff\xffK\x0c\x85K\x01\x85");
  expect_error(&neg, STORAGE12, sizeof STORAGE12, 0, "offset");
  Bytes cls = PKL("ComplexFloatStorage", 12, "K\x00K\x0c\x85K\x01\x85");
  expect_error(&cls, STORAGE12, sizeof STORAGE12, 0, "torch.ComplexFloatStorage");
  Bytes param = {.n = 0};
  ADD(&param, "\x80\x02" "ctorch._utils\n_rebuild_parameter\n");
  expect_error(&param, STORAGE12, sizeof STORAGE12, 0, "unsupported pickle global 'torch._utils._rebuild_parameter'");
  Bytes op = {.n = 0};
  ADD(&op, "\x80\x02" "S'x'\n.");
  expect_error(&op, STORAGE12, sizeof STORAGE12, 0, "unsupported pickle opcode 0x53");
  Bytes trunc = {.n = 0};
  ADD(&trunc, "\x80\x02X\xff\x00\x00\x00" "abc");
  expect_error(&trunc, STORAGE12, sizeof STORAGE12, 0, "truncated pickle");
  Bytes notensor = {.n = 0};
  ADD(&notensor, "\x80\x02K\x01.");
  expect_error(&notensor, STORAGE12, sizeof STORAGE12, 0, "exactly one tensor");
  Bytes memo = {.n = 0};
  ADD(&memo, "\x80\x02h\x05.");
  expect_error(&memo, STORAGE12, sizeof STORAGE12, 0, "memo index 5");
  Bytes under = {.n = 0};
  ADD(&under, "\x80\x02(\x85.");
  expect_error(&under, STORAGE12, sizeof STORAGE12, 0, "underflow");
  Bytes key = PKL("FloatStorage", 12, "K\x00K\x0c\x85K\x01\x85");
  find(key.d, key.n, "X\x01\0\0\0" "0", 6)[5] = '7'; /* storage key "7": no t/data/7 */
  expect_error(&key, STORAGE12, sizeof STORAGE12, 0, "missing");
}

Test(tensor_store, big_endian_and_missing_pickle) {
  Bytes p = PKL("FloatStorage", 12, "K\x00K\x0c\x85K\x01\x85");
  Comp *c = tu_comp();
  Entry be[] = {{"t/data.pkl", p.d, p.n}, {"t/byteorder", "big", 3}, {"t/data/0", STORAGE12, 48}};
  Bytes z = zip(be, 3, false, 0);
  cr_expect_null(torch_load_bytes(c, z.d, z.n, "be.pt", NO_LOC));
  cr_expect(strstr(tu_diags(c), "little-endian"), "%s", tu_diags(c));
  Entry nopkl[] = {{"t/data/0", STORAGE12, 48}};
  z = zip(nopkl, 1, false, 0);
  cr_expect_null(torch_load_bytes(c, z.d, z.n, "nopkl.pt", NO_LOC));
  cr_expect(strstr(tu_diags(c), "no '<name>/data.pkl' entry"), "%s", tu_diags(c));
  tu_free(c);
}

Test(tensor_store, truncated_files_fail_cleanly) {
  size_t len;
  uint8_t *b = slurp(fixture("f32_rank4", ".pt"), &len);
  for (size_t cut = 0; cut < len; cut++) {
    Comp *c = tu_comp();
    uint8_t *copy = malloc(cut + 1); /* exact size, so ASan sees any overread */
    memcpy(copy, b, cut);
    cr_expect_null(torch_load_bytes(c, copy, cut, "cut.pt", NO_LOC), "cut at %zu accepted", cut);
    cr_expect_eq(diag_error_count(c), 1, "cut at %zu: %s", cut, tu_diags(c));
    if (cut > 4) cr_expect(strstr(tu_diags(c), "truncated"), "cut at %zu: %s", cut, tu_diags(c));
    free(copy);
    tu_free(c);
  }
  /* and through the file path */
  char *dir = tmpdir(), path[128];
  snprintf(path, sizeof path, "%s/cut.pt", dir);
  size_t cuts[] = {0, 10, 700, len - 23, len - 1};
  for (size_t i = 0; i < sizeof cuts / sizeof *cuts; i++) {
    Comp *c = tu_comp();
    spit(path, b, cuts[i]);
    cr_expect_null(torch_load(c, path, NO_LOC));
    cr_expect(strstr(tu_diags(c), path), "%s", tu_diags(c));
    tu_free(c);
  }
  unlink(path), rmdir(dir);
  free(b);
}

Test(tensor_store, corrupted_bytes_never_crash) {
  size_t len;
  uint8_t *b = slurp(fixture("f32_2x3", ".pt"), &len), *copy = malloc(len);
  uint64_t rng = 12345;
  for (int iter = 0; iter < 3000; iter++) {
    memcpy(copy, b, len);
    for (int k = 0; k < 1 + iter % 4; k++) {
      rng = rng * 6364136223846793005ull + 1442695040888963407ull;
      copy[(rng >> 33) % len] = (uint8_t)(rng >> 20);
    }
    Comp *c = tu_comp();
    Tensor *t = torch_load_bytes(c, copy, len, "fuzz.pt", NO_LOC);
    cr_expect(t || diag_error_count(c) == 1);
    tu_free(c);
  }
  free(b), free(copy);
}

Test(tensor_store, not_a_zip) {
  Comp *c = tu_comp();
  cr_expect_null(torch_load(c, fixture("f32_2x3", ".expected.npy"), NO_LOC));
  cr_expect(strstr(tu_diags(c), "not a torch.save file (no zip end-of-central-directory record)"), "%s", tu_diags(c));
  cr_expect_null(torch_load(c, tu_data("pt/no_such_file.pt"), NO_LOC));
  cr_expect(strstr(tu_diags(c), "cannot open"), "%s", tu_diags(c));
  cr_expect_null(torch_load_bytes(c, (const uint8_t *)"hello", 5, "hello", NO_LOC));
  cr_expect_eq(diag_error_count(c), 3);
  tu_free(c);
}

/* ---- writer ---- */

static Tensor *patterned(Comp *c, DType dt, const Shape *s) {
  Tensor *t = tensor_new(c, dt, s);
  for (size_t i = 0; i < t->nbytes; i++)
    ((uint8_t *)t->data)[i] = dt == DT_BOOL ? (uint8_t)(i % 3 == 1) : (uint8_t)(i * 37 + 11);
  return t;
}

Test(tensor_store, save_load_round_trip) {
  static const struct { DType dt; Shape s; } CASES[] = {
      {DT_F32, {2, {2, 3}}},         {DT_F64, {0, {0}}},
      {DT_I64, {1, {300}}},          {DT_U8, {1, {70000}}},
      {DT_BOOL, {5, {2, 1, 3, 2, 2}}}, {DT_F16, {4, {1, 2, 3, 4}}},
      {DT_BF16, {1, {5}}},           {DT_I32, {3, {4, 1, 2}}},
      {DT_I16, {2, {0, 3}}},         {DT_I8, {6, {1, 1, 1, 1, 1, 7}}},
  };
  char *dir = tmpdir(), path[128];
  for (size_t i = 0; i < sizeof CASES / sizeof *CASES; i++) {
    Comp *c = tu_comp();
    Tensor *t = patterned(c, CASES[i].dt, &CASES[i].s);
    snprintf(path, sizeof path, "%s/case%zu.pt", dir, i);
    cr_assert(torch_save(c, t, path), "%s", tu_diags(c));
    Tensor *u = torch_load(c, path, NO_LOC);
    assert_same(u, t->dtype, &t->shape, t->data, t->nbytes, dtype_name(t->dtype));
    /* the archive prefix is the basename without extension */
    size_t len;
    uint8_t *b = slurp(path, &len);
    char name[64];
    snprintf(name, sizeof name, "case%zu/data.pkl", i);
    cr_expect(find(b, len, name, strlen(name)), "no %s entry", name);
    free(b);
    unlink(path);
    tu_free(c);
  }
  rmdir(dir);
}

/* For contiguous tensors our data.pkl must be byte-identical to PyTorch's. */
Test(tensor_store, saved_pickle_matches_pytorch) {
  const char *names[] = {"f32_2x3", "f32_rank0", "f32_rank4", "i64_5", "bool_3", "f16_4"};
  char *dir = tmpdir(), path[128];
  for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
    Comp *c = tu_comp();
    Tensor *t = torch_load(c, fixture(names[i], ".pt"), NO_LOC);
    cr_assert(t);
    snprintf(path, sizeof path, "%s/%s.pt", dir, names[i]);
    cr_assert(torch_save(c, t, path));
    size_t la, lb;
    uint8_t *a = slurp(fixture(names[i], ".pt"), &la), *b = slurp(path, &lb);
    /* both writers put data.pkl at byte 64; its size is in the local/central header */
    const uint8_t *end = find(a + 64, la - 64, "PK\x07\x08", 4);
    cr_assert(end);
    size_t n = (size_t)(end - a) - 64;
    cr_expect(lb > 64 + n && memcmp(a + 64, b + 64, n) == 0, "%s: data.pkl differs", names[i]);
    free(a), free(b);
    unlink(path);
    tu_free(c);
  }
  rmdir(dir);
}

/* ---- the store ---- */

static void rm_rf(const char *dir) {
  char cmd[256];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  cr_assert(system(cmd) == 0);
}

Test(tensor_store, write_then_load_by_prefix) {
  Comp *c = tu_comp();
  c->tensor_dir = tmpdir();
  Shape s = {3, {2, 3, 4}};
  Tensor *t = patterned(c, DT_F32, &s);
  const char *h = store_write(c, t);
  cr_assert(h, "%s", tu_diags(c));
  char want[65], path[512];
  tensor_hash_hex(t, want);
  cr_assert_str_eq(h, want);
  snprintf(path, sizeof path, "%s/%.4s/%.4s/%s", c->tensor_dir, h, h + 4, h + 8);
  struct stat st;
  cr_assert(stat(path, &st) == 0 && S_ISREG(st.st_mode), "no %s", path);
  static const size_t LENS[] = {24, 10, 64, 8, 6, 4, 1};
  for (size_t i = 0; i < sizeof LENS / sizeof *LENS; i++) {
    char prefix[65];
    snprintf(prefix, sizeof prefix, "%.*s", (int)LENS[i], h);
    Tensor *u = store_load(c, prefix, NO_LOC);
    cr_assert(u, "%s", tu_diags(c));
    assert_same(u, DT_F32, &s, t->data, t->nbytes, prefix);
    cr_expect_str_eq(u->hash_hex, h);
  }
  /* an existing entry is kept, not rewritten */
  FILE *f = fopen(path, "ab");
  fputs("marker", f);
  fclose(f);
  off_t size = st.st_size + 6;
  cr_expect_str_eq(store_write(c, t), h);
  cr_expect(stat(path, &st) == 0 && st.st_size == size);
  cr_expect_eq(diag_error_count(c), 0, "%s", tu_diags(c));
  rm_rf(c->tensor_dir);
  tu_free(c);
}

Test(tensor_store, ambiguous_and_missing_prefixes) {
  Comp *c = tu_comp();
  c->tensor_dir = tmpdir();
  char dir[256], path[512];
  size_t len;
  uint8_t *b = slurp(fixture("f32_2x3", ".pt"), &len);
  snprintf(dir, sizeof dir, "%s/abcd/ef01", c->tensor_dir);
  snprintf(path, sizeof path, "mkdir -p '%s' '%s/abcd/ef02'", dir, c->tensor_dir);
  cr_assert(system(path) == 0);
  const char *tails[] = {"0123456789abcdef0123456789abcdef0123456789abcdef01234567",
                         "0124456789abcdef0123456789abcdef0123456789abcdef01234567"};
  for (int i = 0; i < 2; i++) {
    snprintf(path, sizeof path, "%s/%s", dir, tails[i]);
    spit(path, b, len);
  }
  Tensor *t = store_load(c, "abcdef010123", NO_LOC);
  cr_expect(t && diag_error_count(c) == 0, "%s", tu_diags(c));
  cr_expect_str_eq(t->hash_hex, "abcdef010123456789abcdef0123456789abcdef0123456789abcdef01234567");
  cr_expect_null(store_load(c, "abcdef01012", NO_LOC));
  const char *d = tu_diags(c);
  cr_expect(strstr(d, "ambiguous") && strstr(d, "abcdef010123456789") && strstr(d, "abcdef010124456789"), "%s", d);
  cr_expect_null(store_load(c, "abcdef01", NO_LOC)); /* both files of abcd/ef01 */
  cr_expect_null(store_load(c, "abcde", NO_LOC));    /* directories ef01 and ef02 both match 'e' */
  cr_expect(strstr(tu_diags(c), "'abcde': 2 entries match (abcdef01..., abcdef02...)"), "%s", tu_diags(c));
  int before = diag_error_count(c);
  cr_expect_null(store_load(c, "abcdef0199", NO_LOC));
  cr_expect_null(store_load(c, "abcdef02", NO_LOC)); /* an empty directory */
  cr_expect_null(store_load(c, "ffff0000aaaa", NO_LOC));
  cr_expect_eq(diag_error_count(c), before + 3);
  cr_expect(strstr(tu_diags(c), "no tensor with hash prefix 'ffff0000aaaa'"), "%s", tu_diags(c));
  cr_expect_null(store_load(c, "ABCDEF", NO_LOC));
  cr_expect_null(store_load(c, "abcdeg", NO_LOC));
  cr_expect_null(store_load(c, "", NO_LOC));
  cr_expect(strstr(tu_diags(c), "invalid tensor hash prefix 'abcdeg'"), "%s", tu_diags(c));
  free(b);
  rm_rf(c->tensor_dir);
  tu_free(c);
}

Test(tensor_store, store_root_defaults) {
  Comp *c = tu_comp();
  setenv("TENSORS_CACHE_DIR", "/some/where", 1);
  cr_expect_str_eq(store_root(c), "/some/where");
  unsetenv("TENSORS_CACHE_DIR");
  setenv("HOME", "/home/x", 1);
  cr_expect_str_eq(store_root(c), "/home/x/tensors_by_hash_cache");
  c->tensor_dir = "/explicit";
  cr_expect_str_eq(store_root(c), "/explicit");
  tu_free(c);
}
