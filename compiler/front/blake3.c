/* blake3.c — BLAKE3 hash mode with the default 32-byte output, written from
 * the public specification (portable C, one thread, no SIMD). The input is
 * split into 1024-byte chunks of 64-byte blocks; chunk chaining values are
 * merged into a binary tree with a stack, lazily, so the last chunk and the
 * root are only finalised in blake3_final. Verified against b3sum in tests. */
#include <string.h>
#include "tensor.h"

enum { CHUNK_START = 1, CHUNK_END = 2, PARENT = 4, ROOT = 8 };
enum { BLOCK_LEN = 64, CHUNK_BLOCKS = 16 };

static const uint32_t IV[8] = {0x6A09E667, 0xBB67AE85, 0x3C6EF372, 0xA54FF53A,
                               0x510E527F, 0x9B05688C, 0x1F83D9AB, 0x5BE0CD19};
static const uint8_t PERM[16] = {2, 6, 3, 10, 7, 0, 4, 13, 1, 11, 12, 5, 9, 14, 15, 8};

static uint32_t rotr(uint32_t x, int n) { return x >> n | x << (32 - n); }

static uint32_t load32(const uint8_t *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void store32(uint8_t *p, uint32_t x) {
  p[0] = (uint8_t)x, p[1] = (uint8_t)(x >> 8), p[2] = (uint8_t)(x >> 16), p[3] = (uint8_t)(x >> 24);
}

/* The quarter-round mixing function G. */
static void g(uint32_t v[16], int a, int b, int c, int d, uint32_t x, uint32_t y) {
  v[a] += v[b] + x; v[d] = rotr(v[d] ^ v[a], 16);
  v[c] += v[d];     v[b] = rotr(v[b] ^ v[c], 12);
  v[a] += v[b] + y; v[d] = rotr(v[d] ^ v[a], 8);
  v[c] += v[d];     v[b] = rotr(v[b] ^ v[c], 7);
}

/* Compresses one block; out = the first 8 output words (a chaining value, or
 * the 32-byte hash when flags has ROOT). */
static void compress(const uint32_t cv[8], const uint8_t block[BLOCK_LEN], uint64_t counter,
                     uint32_t len, uint32_t flags, uint32_t out[8]) {
  uint32_t m[16], v[16], t[16];
  for (int i = 0; i < 16; i++) m[i] = load32(block + 4 * i);
  memcpy(v, cv, 8 * sizeof *v);
  memcpy(v + 8, IV, 4 * sizeof *v);
  v[12] = (uint32_t)counter, v[13] = (uint32_t)(counter >> 32), v[14] = len, v[15] = flags;
  for (int r = 0; r < 7; r++) {
    g(v, 0, 4, 8, 12, m[0], m[1]);   /* columns */
    g(v, 1, 5, 9, 13, m[2], m[3]);
    g(v, 2, 6, 10, 14, m[4], m[5]);
    g(v, 3, 7, 11, 15, m[6], m[7]);
    g(v, 0, 5, 10, 15, m[8], m[9]);  /* diagonals */
    g(v, 1, 6, 11, 12, m[10], m[11]);
    g(v, 2, 7, 8, 13, m[12], m[13]);
    g(v, 3, 4, 9, 14, m[14], m[15]);
    for (int i = 0; i < 16; i++) t[i] = m[PERM[i]];
    memcpy(m, t, sizeof m);
  }
  for (int i = 0; i < 8; i++) out[i] = v[i] ^ v[i + 8];
}

static void parent_block(const uint32_t left[8], const uint32_t right[8], uint8_t block[BLOCK_LEN]) {
  for (int i = 0; i < 8; i++) store32(block + 4 * i, left[i]), store32(block + 32 + 4 * i, right[i]);
}

void blake3_init(Blake3 *h) {
  memset(h, 0, sizeof *h);
  memcpy(h->cv, IV, sizeof IV);
}

/* Pushes the CV of a completed chunk; merges every subtree it completes
 * (one merge per trailing zero bit of the completed-chunk count). */
static void push_chunk_cv(Blake3 *h, uint32_t cv[8]) {
  uint8_t block[BLOCK_LEN];
  for (uint64_t total = h->chunk + 1; (total & 1) == 0; total >>= 1) {
    parent_block(h->stack[--h->depth], cv, block);
    compress(IV, block, 0, BLOCK_LEN, PARENT, cv);
  }
  memcpy(h->stack[h->depth++], cv, 8 * sizeof *cv);
}

void blake3_update(Blake3 *h, const void *data, size_t len) {
  const uint8_t *p = data;
  while (len > 0) {
    /* A full buffer is compressed only now that more input is known to follow,
     * so the final block (which needs CHUNK_END/ROOT) is never compressed early. */
    if (h->buf_len == BLOCK_LEN) {
      uint32_t flags = h->blocks_done == 0 ? CHUNK_START : 0;
      if (h->blocks_done == CHUNK_BLOCKS - 1) {
        uint32_t cv[8];
        compress(h->cv, h->buf, h->chunk, BLOCK_LEN, flags | CHUNK_END, cv);
        push_chunk_cv(h, cv);
        h->chunk++;
        h->blocks_done = 0;
        memcpy(h->cv, IV, sizeof IV);
      } else {
        compress(h->cv, h->buf, h->chunk, BLOCK_LEN, flags, h->cv);
        h->blocks_done++;
      }
      h->buf_len = 0;
    }
    size_t room = (size_t)(BLOCK_LEN - h->buf_len), n = room < len ? room : len;
    memcpy(h->buf + h->buf_len, p, n);
    h->buf_len = (uint8_t)(h->buf_len + n);
    p += n, len -= n;
  }
}

void blake3_final(const Blake3 *h, uint8_t out[32]) {
  /* The pending output node starts as the current chunk's last block and
   * climbs the stack; the topmost node is compressed with ROOT. */
  uint32_t cv[8], words[8];
  uint8_t block[BLOCK_LEN] = {0};
  memcpy(cv, h->cv, sizeof cv);
  memcpy(block, h->buf, h->buf_len);
  uint64_t counter = h->chunk;
  uint32_t len = h->buf_len, flags = CHUNK_END | (h->blocks_done == 0 ? CHUNK_START : 0);
  for (int i = h->depth - 1; i >= 0; i--) {
    compress(cv, block, counter, len, flags, words);
    parent_block(h->stack[i], words, block);
    memcpy(cv, IV, sizeof cv);
    counter = 0, len = BLOCK_LEN, flags = PARENT;
  }
  compress(cv, block, counter, len, flags | ROOT, words);
  for (int i = 0; i < 8; i++) store32(out + 4 * i, words[i]);
}

void blake3_hash(const void *data, size_t len, uint8_t out[32]) {
  Blake3 h;
  blake3_init(&h);
  blake3_update(&h, data, len);
  blake3_final(&h, out);
}
