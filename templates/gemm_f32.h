/* gemm_f32.h — fp32 GEMM template for circc-generated programs (naive twin:
 * gemm_f32_ref.h):
 *     C[m*c_m + n*c_n] = sum_k A[m*a_m + k*a_k] * B[k*b_k + n*b_n]
 * for rows m in [m0,m1), all n in [0,N); C is overwritten. Strides are in
 * elements and arbitrary (row-major, transposed, gapped). Everything is
 * `static inline`, so calls whose arguments are literals get specialised.
 *
 * Determinism: an element of C is the same fp32 sum whatever m0, m1, N, the
 * strides or the path taken: K is cut into blocks of CIRCC_GEMM_KC from k = 0;
 * inside a block the products are added by a chain of fused multiply-adds from
 * +0 in increasing k; block sums are added to C in block order (the first one
 * stored). So callers may split rows or columns across threads and get
 * bit-identical results. The AVX-512 and AVX2 paths give the same bits; the
 * portable path (CIRCC_GEMM_PORTABLE, or no FMA) computes a*b+c as the
 * compiler contracts it, the same way for every tile.
 *
 * Paths (SIMD builds):
 *  - packed: per MC rows and KC block, A is packed into MR-row micro-panels
 *    and each NR columns of B into a KC x NR panel, and an MR x NR micro-kernel
 *    (AVX-512: 8 x 48, 24 zmm accumulators; AVX2: 6 x 16) updates C. Row-major
 *    B is packed by the panel's first micro-tile while it computes, so the
 *    strided reads overlap with the FMAs; transposed operands go through 8x8
 *    register transposes.
 *  - streaming: at most 4 rows (matrix-vector) with unit-stride rows or
 *    columns of B: B is read once, straight from memory, no packing.
 *  - N < NR with more rows than columns: computes C^T = B^T A^T instead.
 *  - pre-packed B (circc_gemm_f32_packed_rows): B already in the packed
 *    layout below (circc stores weights that way in the blob), read in order
 *    by the same micro-kernels: no packing, no strided reads; same bits. A is
 *    packed for several KC blocks at once and each column panel runs all of
 *    them, so C stays in cache across its block sums; a block's panel runs in
 *    KH-row slices that stay in L1, the tile's chain carried through scratch
 *    between slices (a stored float reloads exactly: same bits).
 * circc_gemv_f32 is a separate entry for one row against B stored by columns
 * (decode steps), with its own summation order (see there).
 * Needs C11; <immintrin.h> only when AVX2+FMA or AVX-512F+FMA are enabled.
 * Threads: each needs its own scratch. For M <= 4 (decode) split columns, not
 * rows, so that every thread streams part of B.
 * CIRCC_GEMM_F32_LAYOUT_ONLY: only the pre-packed B layout (the compiler
 * includes it that way). */
#ifndef CIRCC_GEMM_F32_H
#define CIRCC_GEMM_F32_H
#include <stddef.h>
#include <stdint.h>

/* Entry points: `unused` keeps clang quiet when this text is pasted into a .c
 * file that calls only some of them. */
#if defined(__GNUC__)
#define CIRCC_GEMM_API static inline __attribute__((unused))
#else
#define CIRCC_GEMM_API static inline
#endif

/* Summation block; part of the numerical contract above (all paths use it). */
#define CIRCC_GEMM_KC 256

/* Pre-packed B (K x N, circc_gemm_packed_b_floats(N, K) floats): for each
 * KC block of k from k = 0 (kb = min(KC, K - pc) rows), the columns in panels
 * of 16 (the last one zero-padded), each panel kb x 16 floats, row after row.
 * Every micro-kernel width (48, 16 and 32 columns) is a run of whole panels,
 * so one layout serves every ISA the generated program may be compiled for,
 * and a tile's 16-column panels lie next to each other in memory. */
CIRCC_GEMM_API int64_t circc_gemm_packed_np(int64_t N) { return (N + 15) / 16 * 16; }
CIRCC_GEMM_API int64_t circc_gemm_packed_b_floats(int64_t N, int64_t K) { return K * circc_gemm_packed_np(N); }
/* Where element (k, n) of B goes. */
CIRCC_GEMM_API int64_t circc_gemm_packed_b_index(int64_t N, int64_t K, int64_t k, int64_t n) {
  int64_t pc = k / CIRCC_GEMM_KC * CIRCC_GEMM_KC, kb = K - pc < CIRCC_GEMM_KC ? K - pc : CIRCC_GEMM_KC;
  return pc * circc_gemm_packed_np(N) + n / 16 * 16 * kb + (k - pc) * 16 + n % 16;
}

#ifndef CIRCC_GEMM_F32_LAYOUT_ONLY

#if !defined(CIRCC_GEMM_PORTABLE) && defined(__AVX512F__) && defined(__FMA__)
#include <immintrin.h>
#define CIRCC_GEMM_ISA "avx512"
#define CIRCC_GEMM_VL 16 /* floats per vector */
#define CIRCC_GEMM_MR 8  /* micro-tile rows: 8 x 3 zmm accumulators of 32 */
#define CIRCC_GEMM_NR 48 /* micro-tile columns */
#define CIRCC_GEMM_KH 128 /* pre-packed path: k per slice, so a 48-column panel slice (24 KiB) stays in L1 */
typedef __m512 circc_gemm_v;
static inline __m512 circc_gemm_vzero(void) { return _mm512_setzero_ps(); }
static inline __m512 circc_gemm_vset1(float x) { return _mm512_set1_ps(x); }
static inline __m512 circc_gemm_vload(const float *p) { return _mm512_load_ps(p); }
static inline __m512 circc_gemm_vloadu(const float *p) { return _mm512_loadu_ps(p); }
static inline void circc_gemm_vstore(float *p, __m512 v) { _mm512_store_ps(p, v); }
static inline void circc_gemm_vstoreu(float *p, __m512 v) { _mm512_storeu_ps(p, v); }
static inline __m512 circc_gemm_vfma(__m512 a, __m512 b, __m512 c) { return _mm512_fmadd_ps(a, b, c); }
static inline __m512 circc_gemm_vadd(__m512 a, __m512 b) { return _mm512_add_ps(a, b); }
/* First n lanes (0 <= n <= 16); masked-off lanes are neither read nor written. */
static inline __mmask16 circc_gemm_mask(int n) {
  return (__mmask16)(n >= 16 ? 0xFFFFu : (1u << (n > 0 ? n : 0)) - 1u);
}
static inline __m512 circc_gemm_vloadn(const float *p, int n) {
  return _mm512_maskz_loadu_ps(circc_gemm_mask(n), p);
}
static inline void circc_gemm_vstoren(float *p, __m512 v, int n) {
  _mm512_mask_storeu_ps(p, circc_gemm_mask(n), v);
}
#elif !defined(CIRCC_GEMM_PORTABLE) && defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define CIRCC_GEMM_ISA "avx2"
#define CIRCC_GEMM_VL 8
#define CIRCC_GEMM_MR 6  /* 6 x 2 ymm accumulators of 16 */
#define CIRCC_GEMM_NR 16
#define CIRCC_GEMM_KH 256 /* a whole 16-column panel (16 KiB) stays in L1 */
typedef __m256 circc_gemm_v;
static inline __m256 circc_gemm_vzero(void) { return _mm256_setzero_ps(); }
static inline __m256 circc_gemm_vset1(float x) { return _mm256_set1_ps(x); }
static inline __m256 circc_gemm_vload(const float *p) { return _mm256_load_ps(p); }
static inline __m256 circc_gemm_vloadu(const float *p) { return _mm256_loadu_ps(p); }
static inline void circc_gemm_vstore(float *p, __m256 v) { _mm256_store_ps(p, v); }
static inline void circc_gemm_vstoreu(float *p, __m256 v) { _mm256_storeu_ps(p, v); }
static inline __m256 circc_gemm_vfma(__m256 a, __m256 b, __m256 c) { return _mm256_fmadd_ps(a, b, c); }
static inline __m256 circc_gemm_vadd(__m256 a, __m256 b) { return _mm256_add_ps(a, b); }
static inline __m256i circc_gemm_mask(int n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
static inline __m256 circc_gemm_vloadn(const float *p, int n) {
  return _mm256_maskload_ps(p, circc_gemm_mask(n));
}
static inline void circc_gemm_vstoren(float *p, __m256 v, int n) {
  _mm256_maskstore_ps(p, circc_gemm_mask(n), v);
}
#else
#define CIRCC_GEMM_ISA "portable"
#define CIRCC_GEMM_VL 0  /* no intrinsics: plain C that the compiler vectorises */
#define CIRCC_GEMM_MR 4
#define CIRCC_GEMM_NR 32 /* (16 makes gcc 12 vectorise the wrong loop) */
#endif

#define CIRCC_GEMM_MC 256 /* rows of A packed at once: MC x KC floats = 256 KiB, in L2 */
/* the packed A block: MC rows rounded up to whole MR-row micro-panels */
#define CIRCC_GEMM_MCP ((CIRCC_GEMM_MC + CIRCC_GEMM_MR - 1) / CIRCC_GEMM_MR * CIRCC_GEMM_MR)
#define CIRCC_GEMM_NS 2048 /* streaming path: columns per accumulator strip (8 KiB a row) */
#define CIRCC_GEMM_SR 4   /* streaming path: at most this many rows, B read once for all */

static inline int64_t circc_gemm_min(int64_t a, int64_t b) { return a < b ? a : b; }

/* Bytes of packed A the pre-packed path may hold for several KC blocks of a
 * row block (see circc_gemm_packed_w): about half of the L2, leaving room for
 * the C panel and the streaming B panels. circc's -march=native builds pass
 * half of the host's L2 (compiler/back/build.c; 512 KiB on a 1 MiB Zen 4/5
 * L2); the default suits a 2 MiB one. Any value gives the same bits. */
#ifndef CIRCC_GEMM_A_BYTES
#define CIRCC_GEMM_A_BYTES (1 << 20)
#endif

/* Floats of packed A (a multiple of 16): one MC x KC block, or up to
 * CIRCC_GEMM_A_BYTES for several when K has more than one block. */
static inline int64_t circc_gemm_a_floats(int64_t K) {
  int64_t kc = (circc_gemm_min(K, CIRCC_GEMM_KC) + 15) / 16 * 16, one = CIRCC_GEMM_MCP * kc;
  int64_t group = CIRCC_GEMM_A_BYTES / 4 / 16 * 16;
  return K > CIRCC_GEMM_KC && group > one ? group : one;
}

/* Floats of scratch circc_gemm_f32_rows and circc_gemm_f32_packed_rows need
 * (N is accepted for future use). The pieces start at multiples of 16
 * floats, so a 64-byte aligned scratch keeps the packed B panel aligned. */
CIRCC_GEMM_API int64_t circc_gemm_scratch_floats(int64_t N, int64_t K) {
  (void)N;
  int64_t kc = (circc_gemm_min(K, CIRCC_GEMM_KC) + 15) / 16 * 16;
  int64_t packed = circc_gemm_a_floats(K) + (kc > CIRCC_GEMM_MCP ? kc : CIRCC_GEMM_MCP) * CIRCC_GEMM_NR + 64;
  int64_t stream = CIRCC_GEMM_SR * CIRCC_GEMM_NS;
  return packed > stream ? packed : stream;
}

/* ----------------------------------------------------------------- packing */

#if CIRCC_GEMM_VL > 0
/* In-register 8x8 transpose: r[j] becomes column j of the rows r[0..7]. */
static inline void circc_gemm_tr8r(__m256 r[8]) {
  /* pairs of rows interleaved, then 4-row columns per 128-bit lane, then lanes swapped */
  __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
  __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
  __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
  __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
  __m256 s0 = _mm256_shuffle_ps(t0, t2, 0x44), s1 = _mm256_shuffle_ps(t0, t2, 0xEE);
  __m256 s2 = _mm256_shuffle_ps(t1, t3, 0x44), s3 = _mm256_shuffle_ps(t1, t3, 0xEE);
  __m256 s4 = _mm256_shuffle_ps(t4, t6, 0x44), s5 = _mm256_shuffle_ps(t4, t6, 0xEE);
  __m256 s6 = _mm256_shuffle_ps(t5, t7, 0x44), s7 = _mm256_shuffle_ps(t5, t7, 0xEE);
  r[0] = _mm256_permute2f128_ps(s0, s4, 0x20), r[1] = _mm256_permute2f128_ps(s1, s5, 0x20);
  r[2] = _mm256_permute2f128_ps(s2, s6, 0x20), r[3] = _mm256_permute2f128_ps(s3, s7, 0x20);
  r[4] = _mm256_permute2f128_ps(s0, s4, 0x31), r[5] = _mm256_permute2f128_ps(s1, s5, 0x31);
  r[6] = _mm256_permute2f128_ps(s2, s6, 0x31), r[7] = _mm256_permute2f128_ps(s3, s7, 0x31);
}

/* 8x8 transpose through memory: out[j*os + i] = in[i*is + j] (unaligned). */
static inline void circc_gemm_tr8(const float *in, int64_t is, float *out, int64_t os) {
  __m256 r[8];
  for (int i = 0; i < 8; i++) r[i] = _mm256_loadu_ps(in + i * is);
  circc_gemm_tr8r(r);
  for (int j = 0; j < 8; j++) _mm256_storeu_ps(out + j * os, r[j]);
}
#endif

/* Packs an r x kb block of X (X[i*s_i + k*s_k]) as dst[k*w + i], i < w, rows
 * r..w-1 zero. Used for A micro-panels (w = MR) and, with the roles of the
 * strides swapped, for B panels (w = NR, i = column). */
static inline void circc_gemm_pack(float *restrict dst, int64_t w, const float *restrict X, int64_t s_i,
                                   int64_t s_k, int64_t r, int64_t kb) {
  if (s_i == 1) { /* each k: r contiguous floats */
    for (int64_t k = 0; k < kb; k++) {
      const float *src = X + k * s_k;
      float *d = dst + k * w;
      if (r == w) {
        for (int64_t i = 0; i < w; i++) d[i] = src[i];
      } else {
        for (int64_t i = 0; i < r; i++) d[i] = src[i];
        for (int64_t i = r; i < w; i++) d[i] = 0.0f;
      }
    }
    return;
  }
  int64_t i0 = 0;
#if CIRCC_GEMM_VL > 0
  if (s_k == 1 && w % 8 == 0) { /* each row contiguous in k: transpose 8x8 tiles */
    int64_t k8 = kb / 8 * 8;
    for (; i0 + 8 <= r; i0 += 8) {
      for (int64_t k = 0; k < k8; k += 8) circc_gemm_tr8(X + i0 * s_i + k, s_i, dst + k * w + i0, w);
      for (int64_t k = k8; k < kb; k++)
        for (int64_t i = i0; i < i0 + 8; i++) dst[k * w + i] = X[i * s_i + k];
    }
  }
#endif
  for (int64_t k = 0; k < kb; k++) {
    float *d = dst + k * w;
    for (int64_t i = i0; i < r; i++) d[i] = X[i * s_i + k * s_k];
    for (int64_t i = r; i < w; i++) d[i] = 0.0f;
  }
}

#if CIRCC_GEMM_VL > 0
/* 16 columns x 8 k of B from B^T (column j contiguous at Bt + j*ld), turned
 * into vectors along the columns: t[q*T + g] holds columns g*VL.. at k = q
 * (T = 16/VL vectors a row). Columns j >= nn are zero; k >= kn is not read. */
#define CIRCC_GEMM_T (16 / CIRCC_GEMM_VL)
#if CIRCC_GEMM_VL == 16
/* Two 8x8 transposes side by side: r[j] = [X0 row j | X1 row j] becomes
 * [X0 column j | X1 column j]; the last step picks 128-bit lanes of two sources. */
static inline void circc_gemm_tr8x2(__m512 r[8]) {
  __m512 t0 = _mm512_unpacklo_ps(r[0], r[1]), t1 = _mm512_unpackhi_ps(r[0], r[1]);
  __m512 t2 = _mm512_unpacklo_ps(r[2], r[3]), t3 = _mm512_unpackhi_ps(r[2], r[3]);
  __m512 t4 = _mm512_unpacklo_ps(r[4], r[5]), t5 = _mm512_unpackhi_ps(r[4], r[5]);
  __m512 t6 = _mm512_unpacklo_ps(r[6], r[7]), t7 = _mm512_unpackhi_ps(r[6], r[7]);
  __m512 s0 = _mm512_shuffle_ps(t0, t2, 0x44), s1 = _mm512_shuffle_ps(t0, t2, 0xEE);
  __m512 s2 = _mm512_shuffle_ps(t1, t3, 0x44), s3 = _mm512_shuffle_ps(t1, t3, 0xEE);
  __m512 s4 = _mm512_shuffle_ps(t4, t6, 0x44), s5 = _mm512_shuffle_ps(t4, t6, 0xEE);
  __m512 s6 = _mm512_shuffle_ps(t5, t7, 0x44), s7 = _mm512_shuffle_ps(t5, t7, 0xEE);
  const __m512i lo = _mm512_setr_epi32(0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27);
  const __m512i hi = _mm512_setr_epi32(4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31);
  r[0] = _mm512_permutex2var_ps(s0, lo, s4), r[1] = _mm512_permutex2var_ps(s1, lo, s5);
  r[2] = _mm512_permutex2var_ps(s2, lo, s6), r[3] = _mm512_permutex2var_ps(s3, lo, s7);
  r[4] = _mm512_permutex2var_ps(s0, hi, s4), r[5] = _mm512_permutex2var_ps(s1, hi, s5);
  r[6] = _mm512_permutex2var_ps(s2, hi, s6), r[7] = _mm512_permutex2var_ps(s3, hi, s7);
}

static inline __m512 circc_gemm_join(__m256 lo, __m256 hi) {
  return _mm512_castpd_ps(_mm512_insertf64x4(_mm512_castpd256_pd512(_mm256_castps_pd(lo)), _mm256_castps_pd(hi), 1));
}

static inline void circc_gemm_t16(const float *Bt, int64_t ld, int nn, int kn, __m512 t[8]) {
  if (nn == 16 && kn == 8) {
    for (int j = 0; j < 8; j++) t[j] = circc_gemm_join(_mm256_loadu_ps(Bt + j * ld), _mm256_loadu_ps(Bt + (j + 8) * ld));
  } else {
    __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(kn), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    for (int j = 0; j < 8; j++)
      t[j] = circc_gemm_join(j < nn ? _mm256_maskload_ps(Bt + j * ld, mask) : _mm256_setzero_ps(),
                             j + 8 < nn ? _mm256_maskload_ps(Bt + (j + 8) * ld, mask) : _mm256_setzero_ps());
  }
  circc_gemm_tr8x2(t);
}
#else
static inline void circc_gemm_t16(const float *Bt, int64_t ld, int nn, int kn, __m256 t[16]) {
  __m256 r[2][8];
  if (nn == 16 && kn == 8) {
    for (int j = 0; j < 8; j++) r[0][j] = _mm256_loadu_ps(Bt + j * ld), r[1][j] = _mm256_loadu_ps(Bt + (j + 8) * ld);
  } else {
    __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(kn), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    for (int j = 0; j < 16; j++) r[j / 8][j % 8] = j < nn ? _mm256_maskload_ps(Bt + j * ld, mask) : _mm256_setzero_ps();
  }
  circc_gemm_tr8r(r[0]);
  circc_gemm_tr8r(r[1]);
  for (int q = 0; q < 8; q++) t[2 * q] = r[0][q], t[2 * q + 1] = r[1][q];
}
#endif

/* A kb x NR panel of B from B^T: Bp[k*NR + j] = Bt[j*ld + k], zero for j >= cols. */
static inline void circc_gemm_packt(float *restrict Bp, const float *restrict Bt, int64_t ld, int cols, int64_t kb) {
  for (int j0 = 0; j0 < CIRCC_GEMM_NR; j0 += 16) {
    int nn = cols - j0 < 16 ? cols - j0 : 16;
    const float *p = Bt + j0 * ld;
    float *d = Bp + j0;
    circc_gemm_v t[8 * CIRCC_GEMM_T];
    int64_t k0 = 0;
    if (nn == 16) /* whole 16 x 8 blocks: fixed trip counts, no branches */
      for (; k0 + 8 <= kb; k0 += 8) {
        circc_gemm_t16(p + k0, ld, 16, 8, t);
        for (int q = 0; q < 8; q++)
          for (int g = 0; g < CIRCC_GEMM_T; g++)
            circc_gemm_vstore(d + (k0 + q) * CIRCC_GEMM_NR + g * CIRCC_GEMM_VL, t[q * CIRCC_GEMM_T + g]);
      }
    for (; k0 < kb; k0 += 8) {
      int kn = (int)circc_gemm_min(8, kb - k0);
      if (nn > 0) {
        circc_gemm_t16(p + k0, ld, nn, kn, t);
      } else {
        for (int q = 0; q < 8 * CIRCC_GEMM_T; q++) t[q] = circc_gemm_vzero();
      }
      for (int q = 0; q < kn; q++)
        for (int g = 0; g < CIRCC_GEMM_T; g++)
          circc_gemm_vstore(d + (k0 + q) * CIRCC_GEMM_NR + g * CIRCC_GEMM_VL, t[q * CIRCC_GEMM_T + g]);
    }
  }
}
#endif

/* ------------------------------------------------------------ micro-kernel */

#if CIRCC_GEMM_VL > 0
#define CIRCC_GEMM_NV (CIRCC_GEMM_NR / CIRCC_GEMM_VL)
/* Software prefetch spread over a micro-kernel's k loop: `left` runs of `len`
 * bytes, `ld` bytes apart, one 64-byte line a step (addresses stay inside the
 * runs). It fetches the next B panel while all tiles compute: short strided
 * rows or columns are streams the hardware prefetcher does not follow. */
typedef struct circc_gemm_pf {
  const char *p;              /* start of the current run */
  int64_t ld, len, off, left; /* off: bytes from the 64-byte line holding p */
} circc_gemm_pf;

static inline void circc_gemm_pf_step(circc_gemm_pf *f) {
  if (f->left <= 0) return;
  int64_t mis = (int64_t)((uintptr_t)f->p & 63);
  _mm_prefetch(f->off == 0 ? f->p : f->p - mis + f->off, _MM_HINT_T0);
  f->off += 64;
  if (f->off > mis + f->len - 1) {
    f->off = 0;
    if (--f->left > 0) f->p += f->ld;
  }
}

/* Fetches the lines of n floats at p for writing. */
static inline void circc_gemm_prefetchw(const float *p, int n) {
  const char *a = (const char *)((uintptr_t)p & ~(uintptr_t)63), *e = (const char *)(p + n);
  for (; a < e; a += 64) __builtin_prefetch(a, 1, 3);
}

/* One k step: acc[i][v] += a[i] * b[v]. */
static inline void circc_gemm_fmas(int rows, circc_gemm_v acc[CIRCC_GEMM_MR][CIRCC_GEMM_NV], const circc_gemm_v *b,
                                   const float *a) {
  for (int i = 0; i < CIRCC_GEMM_MR; i++) {
    if (i >= rows) break;
    circc_gemm_v x = circc_gemm_vset1(a[i]);
    for (int v = 0; v < CIRCC_GEMM_NV; v++) acc[i][v] = circc_gemm_vfma(x, b[v], acc[i][v]);
  }
}

/* C tile (rows x cols of C at C, strides c_m, c_n) = (first ? 0 : C) + the sum
 * over k < kb of Ap[k*MR + i] * Bp[k*NR + j]. Ap and Bp are packed (Bp 64-byte
 * aligned). If Bsrc is not NULL the B panel is read from there instead
 * (row-major: Bsrc[k*b_k + j], j < cols) and packed into Bp on the way: the
 * first tile of a panel packs it while computing, so the strided reads of B
 * overlap with arithmetic. If Bw is not NULL, B is pre-packed (the layout of
 * circc_gemm_packed_b_index): column j at k is Bw[j/16*bq + k*16 + j%16],
 * zero-padded to whole 16-column panels; panels past cols are not read. With
 * Pin, the sums start from Pin's MR x NR tile (row i at Pin + i*NR) instead
 * of 0; with Pout, they are stored there and C is left alone: a block's chain
 * split over calls (pre-packed slices). With Bw, Cw (or NULL) is a C tile whose
 * lines a later call stores or loads: fetched for writing on the way. `rows` is a literal at every call, so the row loops
 * unroll and only live accumulators remain: always inlined, because an
 * out-of-line clone (which gcc makes once the program has grown) may keep all
 * MR rows of accumulators and spill them; pf prefetches for the next panel. */
static inline __attribute__((always_inline)) void circc_gemm_kernel(int rows, int64_t kb, const float *restrict Ap,
                                                                    float *restrict Bp, const float *Bsrc,
                                                                    int64_t b_k, const float *Bw, int64_t bq,
                                                                    float *C, int64_t c_m, int64_t c_n, int cols,
                                                                    int first, circc_gemm_pf pf, const float *Pin,
                                                                    float *Pout, const float *Cw) {
  circc_gemm_v acc[CIRCC_GEMM_MR][CIRCC_GEMM_NV], b[CIRCC_GEMM_NV];
  for (int i = 0; i < CIRCC_GEMM_MR; i++)
    for (int v = 0; v < CIRCC_GEMM_NV; v++)
      acc[i][v] = Pin ? circc_gemm_vload(Pin + i * CIRCC_GEMM_NR + v * CIRCC_GEMM_VL) : circc_gemm_vzero();
  if (Bw) {
    /* pre-packed B: the next panel is one contiguous run (pf.ld = 0, pf.left <= 1),
     * so two pointers prefetch it and the loop keeps its operands in registers;
     * into L2 (T1): in L1 it would evict the slice the tiles are reading */
    const char *pp = pf.left > 0 ? pf.p : NULL, *pe = pf.left > 0 ? pf.p + pf.len : NULL;
    const float *q = Bw;
    /* Cw: a C tile (rows x cols at stride c_m) that a later call stores; its
     * lines are fetched for writing, a row every 8 k, so that store does not
     * wait for memory (C's rows of a wide N lie pages apart: no hardware
     * prefetcher follows them). */
    int64_t cwk = Cw ? 8 * rows : 0;
    if (cols == CIRCC_GEMM_NR) {
      for (int64_t k = 0; k < kb; k++, q += 16) {
        for (int v = 0; v < CIRCC_GEMM_NV; v++) b[v] = circc_gemm_vloadu(q + v * CIRCC_GEMM_VL / 16 * bq + v * CIRCC_GEMM_VL % 16);
        if (pp < pe) _mm_prefetch(pp, _MM_HINT_T1), pp += 64;
        if (k < cwk && (k & 7) == 0) circc_gemm_prefetchw(Cw + k / 8 * c_m, cols);
        circc_gemm_fmas(rows, acc, b, Ap + k * CIRCC_GEMM_MR);
      }
    } else {
      for (int64_t k = 0; k < kb; k++, q += 16) {
        for (int v = 0; v < CIRCC_GEMM_NV; v++)
          b[v] = v * CIRCC_GEMM_VL < cols ? circc_gemm_vloadu(q + v * CIRCC_GEMM_VL / 16 * bq + v * CIRCC_GEMM_VL % 16)
                                          : circc_gemm_vzero();
        if (pp < pe) _mm_prefetch(pp, _MM_HINT_T1), pp += 64;
        if (k < cwk && (k & 7) == 0) circc_gemm_prefetchw(Cw + k / 8 * c_m, cols);
        circc_gemm_fmas(rows, acc, b, Ap + k * CIRCC_GEMM_MR);
      }
    }
  } else if (!Bsrc) {
    for (int64_t k = 0; k < kb; k++) {
      for (int v = 0; v < CIRCC_GEMM_NV; v++) b[v] = circc_gemm_vload(Bp + k * CIRCC_GEMM_NR + v * CIRCC_GEMM_VL);
      circc_gemm_pf_step(&pf);
      circc_gemm_fmas(rows, acc, b, Ap + k * CIRCC_GEMM_MR);
    }
  } else if (cols == CIRCC_GEMM_NR) {
    for (int64_t k = 0; k < kb; k++) {
      for (int v = 0; v < CIRCC_GEMM_NV; v++) {
        b[v] = circc_gemm_vloadu(Bsrc + k * b_k + v * CIRCC_GEMM_VL);
        circc_gemm_vstore(Bp + k * CIRCC_GEMM_NR + v * CIRCC_GEMM_VL, b[v]);
      }
      circc_gemm_pf_step(&pf);
      circc_gemm_fmas(rows, acc, b, Ap + k * CIRCC_GEMM_MR);
    }
  } else { /* edge panel: masked loads, zeros past the last column */
    for (int64_t k = 0; k < kb; k++) {
      for (int v = 0; v < CIRCC_GEMM_NV; v++) {
        b[v] = circc_gemm_vloadn(Bsrc + k * b_k + v * CIRCC_GEMM_VL, cols - v * CIRCC_GEMM_VL);
        circc_gemm_vstore(Bp + k * CIRCC_GEMM_NR + v * CIRCC_GEMM_VL, b[v]);
      }
      circc_gemm_pf_step(&pf);
      circc_gemm_fmas(rows, acc, b, Ap + k * CIRCC_GEMM_MR);
    }
  }
  if (Pout) { /* a partial block sum: the chain goes on from here in the next call */
    for (int i = 0; i < CIRCC_GEMM_MR; i++) {
      if (i >= rows) break;
      for (int v = 0; v < CIRCC_GEMM_NV; v++) circc_gemm_vstore(Pout + i * CIRCC_GEMM_NR + v * CIRCC_GEMM_VL, acc[i][v]);
    }
    return;
  }
  if (c_n == 1) {
    for (int i = 0; i < CIRCC_GEMM_MR; i++) {
      if (i >= rows) break;
      float *c = C + i * c_m;
      if (cols == CIRCC_GEMM_NR) {
        for (int v = 0; v < CIRCC_GEMM_NV; v++) {
          float *p = c + v * CIRCC_GEMM_VL;
          circc_gemm_vstoreu(p, first ? acc[i][v] : circc_gemm_vadd(circc_gemm_vloadu(p), acc[i][v]));
        }
      } else {
        for (int v = 0; v < CIRCC_GEMM_NV; v++) {
          int n = cols - v * CIRCC_GEMM_VL;
          float *p = c + v * CIRCC_GEMM_VL;
          if (n <= 0) break;
          circc_gemm_vstoren(p, first ? acc[i][v] : circc_gemm_vadd(circc_gemm_vloadn(p, n), acc[i][v]), n);
        }
      }
    }
  } else { /* strided C (e.g. transposed): through a tile on the stack */
    float t[CIRCC_GEMM_MR * CIRCC_GEMM_NR];
    for (int i = 0; i < CIRCC_GEMM_MR; i++) {
      if (i >= rows) break;
      for (int v = 0; v < CIRCC_GEMM_NV; v++) circc_gemm_vstoreu(t + i * CIRCC_GEMM_NR + v * CIRCC_GEMM_VL, acc[i][v]);
    }
    for (int j = 0; j < cols; j++)
      for (int i = 0; i < rows; i++) {
        float *p = C + i * c_m + j * c_n;
        *p = first ? t[i * CIRCC_GEMM_NR + j] : *p + t[i * CIRCC_GEMM_NR + j];
      }
  }
}
#else
/* Portable: plain loops that gcc and clang vectorise along j. The row loop
 * runs to `rows`, not to MR: with a constant bound gcc unrolls the tile into
 * MR*NR scalars and then vectorises across k, keeping the order, very slowly.
 * Never inlined: one body for every caller (the packed and the pre-packed
 * driver), so the compiler's contraction of a*b+c is the same for all. */
static __attribute__((noinline)) void circc_gemm_kernel(int rows, int64_t kb, const float *restrict Ap, const float *restrict Bp,
                                     float *C, int64_t c_m, int64_t c_n, int cols, int first) {
  float acc[CIRCC_GEMM_MR][CIRCC_GEMM_NR];
  for (int i = 0; i < rows; i++)
    for (int j = 0; j < CIRCC_GEMM_NR; j++) acc[i][j] = 0.0f;
  for (int64_t k = 0; k < kb; k++) {
    const float *b = Bp + k * CIRCC_GEMM_NR;
    for (int i = 0; i < rows; i++) {
      float ai = Ap[k * CIRCC_GEMM_MR + i];
      for (int j = 0; j < CIRCC_GEMM_NR; j++) acc[i][j] += ai * b[j];
    }
  }
  for (int i = 0; i < rows; i++)
    for (int j = 0; j < cols; j++) {
      float *p = C + i * c_m + j * c_n;
      *p = first ? acc[i][j] : *p + acc[i][j];
    }
}
#endif

/* --------------------------------------------------------- packed driver */

/* The general path: rows [m0,m1), any strides. */
static inline void circc_gemm_packed(int64_t m0, int64_t m1, int64_t N, int64_t K, const float *A, int64_t a_m,
                                     int64_t a_k, const float *B, int64_t b_k, int64_t b_n, float *C, int64_t c_m,
                                     int64_t c_n, float *scratch) {
  int64_t kcmax = (circc_gemm_min(K, CIRCC_GEMM_KC) + 15) / 16 * 16;
  float *Ap = scratch, *Bp = scratch + CIRCC_GEMM_MCP * kcmax;
  for (int64_t ic = m0; ic < m1; ic += CIRCC_GEMM_MC) {
    int64_t mb = circc_gemm_min(CIRCC_GEMM_MC, m1 - ic);
    for (int64_t pc = 0; pc < K; pc += CIRCC_GEMM_KC) {
      int64_t kb = circc_gemm_min(CIRCC_GEMM_KC, K - pc);
      int first = pc == 0;
      for (int64_t ir = 0; ir < mb; ir += CIRCC_GEMM_MR)
        circc_gemm_pack(Ap + ir * kb, CIRCC_GEMM_MR, A + (ic + ir) * a_m + pc * a_k, a_m, a_k,
                        circc_gemm_min(CIRCC_GEMM_MR, mb - ir), kb);
      for (int64_t jc = 0; jc < N; jc += CIRCC_GEMM_NR) {
        int cols = (int)circc_gemm_min(CIRCC_GEMM_NR, N - jc);
        float *Cj = C + jc * c_n;
#if CIRCC_GEMM_VL > 0
        /* Row-major B is packed by the panel's first tile (see the kernel);
         * transposed B by 8x8 register transposes, other layouts by a gather. */
        const float *Bsrc = B + pc * b_k + jc * b_n;
        if (b_n != 1 && b_k == 1) {
          circc_gemm_packt(Bp, Bsrc, b_n, cols, kb);
          Bsrc = NULL;
        } else if (b_n != 1) {
          circc_gemm_pack(Bp, CIRCC_GEMM_NR, Bsrc, b_n, b_k, cols, kb);
          Bsrc = NULL;
        }
        int64_t tiles = (mb + CIRCC_GEMM_MR - 1) / CIRCC_GEMM_MR, next = jc + CIRCC_GEMM_NR;
        for (int64_t ir = 0; ir < mb; ir += CIRCC_GEMM_MR) {
          const float *a = Ap + ir * kb, *src = ir == 0 ? Bsrc : NULL;
          /* Each tile prefetches its share of the next panel: B streams from
           * memory while all tiles compute, not just while the first packs. */
          circc_gemm_pf pf = {NULL, 0, 0, 0, 0};
          int64_t t = ir / CIRCC_GEMM_MR;
          if (next < N && b_n == 1) { /* rows of the next panel */
            int64_t k0 = kb * t / tiles, k1 = kb * (t + 1) / tiles;
            pf = (circc_gemm_pf){(const char *)(B + (pc + k0) * b_k + next), b_k * 4,
                                 circc_gemm_min(CIRCC_GEMM_NR, N - next) * 4, 0, k1 - k0};
          } else if (next < N && b_k == 1) { /* columns of the next panel */
            int64_t c0 = next + CIRCC_GEMM_NR * t / tiles;
            int64_t c1 = circc_gemm_min(N, next + CIRCC_GEMM_NR * (t + 1) / tiles);
            pf = (circc_gemm_pf){(const char *)(B + pc + c0 * b_n), b_n * 4, kb * 4, 0, c1 - c0};
          }
          float *c = Cj + (ic + ir) * c_m;
          switch (circc_gemm_min(CIRCC_GEMM_MR, mb - ir)) { /* one specialised kernel per row count */
          case 1: circc_gemm_kernel(1, kb, a, Bp, src, b_k, NULL, 0, c, c_m, c_n, cols, first, pf, NULL, NULL, NULL); break;
          case 2: circc_gemm_kernel(2, kb, a, Bp, src, b_k, NULL, 0, c, c_m, c_n, cols, first, pf, NULL, NULL, NULL); break;
          case 3: circc_gemm_kernel(3, kb, a, Bp, src, b_k, NULL, 0, c, c_m, c_n, cols, first, pf, NULL, NULL, NULL); break;
          case 4: circc_gemm_kernel(4, kb, a, Bp, src, b_k, NULL, 0, c, c_m, c_n, cols, first, pf, NULL, NULL, NULL); break;
          case 5: circc_gemm_kernel(5, kb, a, Bp, src, b_k, NULL, 0, c, c_m, c_n, cols, first, pf, NULL, NULL, NULL); break;
#if CIRCC_GEMM_MR > 6
          case 6: circc_gemm_kernel(6, kb, a, Bp, src, b_k, NULL, 0, c, c_m, c_n, cols, first, pf, NULL, NULL, NULL); break;
          case 7: circc_gemm_kernel(7, kb, a, Bp, src, b_k, NULL, 0, c, c_m, c_n, cols, first, pf, NULL, NULL, NULL); break;
#endif
          default: circc_gemm_kernel(CIRCC_GEMM_MR, kb, a, Bp, src, b_k, NULL, 0, c, c_m, c_n, cols, first, pf, NULL, NULL, NULL); break;
          }
        }
#else
        circc_gemm_pack(Bp, CIRCC_GEMM_NR, B + pc * b_k + jc * b_n, b_n, b_k, cols, kb);
        /* one call site for every tile, so the compiler's contraction of
         * a*b+c cannot differ between full and edge tiles */
        for (int64_t ir = 0; ir < mb; ir += CIRCC_GEMM_MR)
          circc_gemm_kernel((int)circc_gemm_min(CIRCC_GEMM_MR, mb - ir), kb, Ap + ir * kb, Bp, Cj + (ic + ir) * c_m,
                            c_m, c_n, cols, first);
#endif
      }
    }
  }
}

/* ------------------------------------------------- pre-packed B driver */

/* Rows [m0,m1) and columns [n0,n1) of C (n0 a multiple of 16) with B
 * pre-packed at W (N columns in all). A row block's A is packed for a group
 * of KC blocks at once (as many as fit in CIRCC_GEMM_A_BYTES, all of K for
 * the GPT-2 shapes), and each 48-column panel runs every block of the group
 * before the next panel: the panel's C (at most MC x 48 floats) stays in the
 * caches while its block sums are added, instead of C (larger than L2 for a
 * wide N) going to memory and back once per KC block. Each B panel is read
 * where it lies, in order, while the next one (the panel's next block, else
 * the next panel's first) is prefetched. The sums and their order are the
 * packed path's, whatever the grouping. */
static inline void circc_gemm_packed_w(int64_t m0, int64_t m1, int64_t n0, int64_t n1, int64_t N, int64_t K,
                                       const float *A, int64_t a_m, int64_t a_k, const float *W, float *C,
                                       int64_t c_m, int64_t c_n, float *scratch) {
  int64_t Np = circc_gemm_packed_np(N);
  float *Ap = scratch, *Bp = scratch + circc_gemm_a_floats(K);
  for (int64_t ic = m0; ic < m1; ic += CIRCC_GEMM_MC) {
    int64_t mb = circc_gemm_min(CIRCC_GEMM_MC, m1 - ic), mbp = (mb + CIRCC_GEMM_MR - 1) / CIRCC_GEMM_MR * CIRCC_GEMM_MR;
    int64_t group = CIRCC_GEMM_A_BYTES / 4 / (mbp * CIRCC_GEMM_KC); /* KC blocks of A packed at once */
    group = group < 1 ? CIRCC_GEMM_KC : group * CIRCC_GEMM_KC;
    for (int64_t g0 = 0; g0 < K; g0 += group) {
      int64_t g1 = circc_gemm_min(K, g0 + group);
      for (int64_t pc = g0; pc < g1; pc += CIRCC_GEMM_KC) { /* block pc's A at Ap + (pc - g0) * mbp */
        int64_t kb = circc_gemm_min(CIRCC_GEMM_KC, K - pc);
        for (int64_t ir = 0; ir < mb; ir += CIRCC_GEMM_MR)
          circc_gemm_pack(Ap + (pc - g0) * mbp + ir * kb, CIRCC_GEMM_MR, A + (ic + ir) * a_m + pc * a_k, a_m, a_k,
                          circc_gemm_min(CIRCC_GEMM_MR, mb - ir), kb);
      }
      for (int64_t jc = n0; jc < n1; jc += CIRCC_GEMM_NR) {
        int cols = (int)circc_gemm_min(CIRCC_GEMM_NR, n1 - jc);
        float *Cj = C + jc * c_n;
        for (int64_t pc = g0; pc < g1; pc += CIRCC_GEMM_KC) {
          int64_t kb = circc_gemm_min(CIRCC_GEMM_KC, K - pc);
          int first = pc == 0;
          const float *w = W + pc * Np + jc * kb, *Apc = Ap + (pc - g0) * mbp; /* column j's panel at w + j/16*16*kb */
#if CIRCC_GEMM_VL > 0
          /* the next panel is one contiguous run; each call prefetches its
           * share. A block longer than KH runs as KH-row slices of the panel
           * (which then stay in L1), the tiles' partial sums kept in Bp. */
          int64_t npc = pc + CIRCC_GEMM_KC < g1 ? pc + CIRCC_GEMM_KC : g0, njc = npc == g0 ? jc + CIRCC_GEMM_NR : jc;
          int64_t nkb = circc_gemm_min(CIRCC_GEMM_KC, K - npc), tiles = (mb + CIRCC_GEMM_MR - 1) / CIRCC_GEMM_MR;
          int64_t run = njc < n1 ? (circc_gemm_min(CIRCC_GEMM_NR, n1 - njc) + 15) / 16 * 16 * nkb * 4 : 0;
          int64_t slices = (kb + CIRCC_GEMM_KH - 1) / CIRCC_GEMM_KH, calls = slices * tiles;
          const char *next = (const char *)(W + npc * Np + njc * nkb);
          for (int64_t h0 = 0, u = 0; h0 < kb; h0 += CIRCC_GEMM_KH) {
            int64_t hl = circc_gemm_min(CIRCC_GEMM_KH, kb - h0);
            const float *wh = w + h0 * 16;
            for (int64_t ir = 0; ir < mb; ir += CIRCC_GEMM_MR, u++) {
              int64_t b0 = run * u / calls / 64 * 64, b1 = run * (u + 1) / calls / 64 * 64;
              circc_gemm_pf pf = {next + b0, 0, b1 - b0, 0, b1 > b0};
              const float *a = Apc + ir * kb + h0 * CIRCC_GEMM_MR, *pin = h0 > 0 ? Bp + ir * CIRCC_GEMM_NR : NULL;
              float *c = Cj + (ic + ir) * c_m, *pout = h0 + hl < kb ? Bp + ir * CIRCC_GEMM_NR : NULL;
              /* the group's first block fetches C for its store or load: the
               * tile's own in its first slice, else the next tile's (if as tall) */
              const float *cw = NULL;
              if (pc == g0 && h0 == 0 && c_n == 1)
                cw = slices > 1 ? c : ir + 2 * CIRCC_GEMM_MR <= mb ? c + CIRCC_GEMM_MR * c_m : NULL;
              switch (circc_gemm_min(CIRCC_GEMM_MR, mb - ir)) { /* one specialised kernel per row count */
              case 1: circc_gemm_kernel(1, hl, a, Bp, NULL, 0, wh, 16 * kb, c, c_m, c_n, cols, first, pf, pin, pout, cw); break;
              case 2: circc_gemm_kernel(2, hl, a, Bp, NULL, 0, wh, 16 * kb, c, c_m, c_n, cols, first, pf, pin, pout, cw); break;
              case 3: circc_gemm_kernel(3, hl, a, Bp, NULL, 0, wh, 16 * kb, c, c_m, c_n, cols, first, pf, pin, pout, cw); break;
              case 4: circc_gemm_kernel(4, hl, a, Bp, NULL, 0, wh, 16 * kb, c, c_m, c_n, cols, first, pf, pin, pout, cw); break;
              case 5: circc_gemm_kernel(5, hl, a, Bp, NULL, 0, wh, 16 * kb, c, c_m, c_n, cols, first, pf, pin, pout, cw); break;
#if CIRCC_GEMM_MR > 6
              case 6: circc_gemm_kernel(6, hl, a, Bp, NULL, 0, wh, 16 * kb, c, c_m, c_n, cols, first, pf, pin, pout, cw); break;
              case 7: circc_gemm_kernel(7, hl, a, Bp, NULL, 0, wh, 16 * kb, c, c_m, c_n, cols, first, pf, pin, pout, cw); break;
#endif
              default:
                circc_gemm_kernel(CIRCC_GEMM_MR, hl, a, Bp, NULL, 0, wh, 16 * kb, c, c_m, c_n, cols, first, pf, pin, pout, cw);
                break;
              }
            }
          }
#else
          /* the portable kernel reads one NR-wide panel: copied from the 16-column ones */
          for (int64_t k = 0; k < kb; k++)
            for (int j = 0; j < CIRCC_GEMM_NR; j++)
              Bp[k * CIRCC_GEMM_NR + j] = j < cols ? w[j / 16 * 16 * kb + k * 16 + j % 16] : 0.0f;
          for (int64_t ir = 0; ir < mb; ir += CIRCC_GEMM_MR)
            circc_gemm_kernel((int)circc_gemm_min(CIRCC_GEMM_MR, mb - ir), kb, Apc + ir * kb, Bp, Cj + (ic + ir) * c_m,
                              c_m, c_n, cols, first);
#endif
        }
      }
    }
  }
}

/* ------------------------------------------------------- streaming driver */

/* The streaming and matrix-vector kernels below read B as fp32 or as bf16
 * (uint16_t, the top half of an fp32: templates/gemv_bf16.h's entries, for a
 * decode program's key/value cache under --precision bf16/int8). `bt`, B's
 * element type, is a literal at every call, as `rows` is, so each caller
 * compiles to one kind of load. bf16 -> fp32 is exact (a 16-bit shift) and an
 * element is converted in registers where it is loaded, so a bf16 B gives bit
 * for bit the fp32 result on B's fp32 values. */
enum { CIRCC_B_F32, CIRCC_B_BF16 };

/* Where element i of B is. */
static inline const void *circc_gemm_bat(int bt, const void *B, int64_t i) {
  return bt == CIRCC_B_BF16 ? (const void *)((const uint16_t *)B + i) : (const void *)((const float *)B + i);
}

/* How many of a[0], a[stride], ... a[(n-1)*stride] in a row are 0 (or -0)
 * from the start: a decode step's masked keys are long runs of them, which
 * contiguous data tests a vector at a time. */
static inline int64_t circc_zeros_run(const float *a, int64_t stride, int64_t n) {
  int64_t i = 0;
#if CIRCC_GEMM_VL == 16
  if (stride == 1)
    while (i + 16 <= n && !_mm512_cmpneq_ps_mask(_mm512_loadu_ps(a + i), _mm512_setzero_ps())) i += 16;
#elif CIRCC_GEMM_VL == 8
  if (stride == 1)
    while (i + 8 <= n && !_mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(a + i), _mm256_setzero_ps(), _CMP_NEQ_UQ)))
      i += 8;
#endif
  while (i < n && a[i * stride] == 0.0f) i++;
  return i;
}

#if CIRCC_GEMM_VL > 0
/* VL bf16 values at p as fp32 lanes; with n (clamped to 0..VL), only the
 * first n are read and the other lanes are 0. */
#if CIRCC_GEMM_VL == 16
static inline __m512 circc_b16_load(const uint16_t *p) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)p)), 16));
}
#else
static inline __m256 circc_b16_load(const uint16_t *p) {
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p)), 16));
}
#endif
static inline circc_gemm_v circc_b16_loadn(const uint16_t *p, int n) {
  if (n >= CIRCC_GEMM_VL) return circc_b16_load(p);
  uint16_t t[CIRCC_GEMM_VL] = {0};
  for (int i = 0; i < n; i++) t[i] = p[i];
  return circc_b16_load(t);
}

/* VL elements of B from element i, as fp32 (unaligned); with n, the first n
 * (n <= 0: none), the other lanes 0 and not read. */
static inline circc_gemm_v circc_gemm_bload(int bt, const void *B, int64_t i) {
  return bt == CIRCC_B_BF16 ? circc_b16_load((const uint16_t *)B + i) : circc_gemm_vloadu((const float *)B + i);
}
static inline circc_gemm_v circc_gemm_bloadn(int bt, const void *B, int64_t i, int n) {
  return bt == CIRCC_B_BF16 ? circc_b16_loadn((const uint16_t *)B + i, n) : circc_gemm_vloadn((const float *)B + i, n);
}

/* Is one of the four A elements at a, a + a_k, ... 0? */
static inline int circc_gemm_has_zero4(const float *a, int64_t a_k) {
  return a[0] == 0.0f || a[a_k] == 0.0f || a[2 * a_k] == 0.0f || a[3 * a_k] == 0.0f;
}

/* The streaming path's update for one k: acc row r += a[r*a_m] * b (nn elements). */
static inline __attribute__((always_inline)) void circc_gemm_stream_k(int rows, int bt, int64_t m0, int64_t nn, const float *a, int64_t a_m,
                                       const void *b, float *acc) {
  int64_t nv = nn / CIRCC_GEMM_VL * CIRCC_GEMM_VL;
  int tail = (int)(nn - nv);
  for (int r = 0; r < rows; r++) {
    circc_gemm_v a0 = circc_gemm_vset1(a[(m0 + r) * a_m]);
    for (int64_t j = 0; j < nn; j += CIRCC_GEMM_VL) {
      circc_gemm_v v0 = j < nv ? circc_gemm_bload(bt, b, j) : circc_gemm_bloadn(bt, b, j, tail);
      float *s = acc + r * CIRCC_GEMM_NS + j;
      circc_gemm_vstore(s, circc_gemm_vfma(a0, v0, circc_gemm_vload(s)));
    }
  }
}

/* How far ahead (bytes) the decode kernels prefetch the B they stream: one
 * core alone keeps too few lines in flight to read at the memory's
 * bandwidth, and short streams (a head's keys, 256 B per key) leave the
 * hardware prefetcher little to learn from. */
#define CIRCC_GEMV_AHEAD 4096

/* rows (<= SR, a literal at each call) rows of C with unit-stride B rows of
 * type bt: B is read once, row after row, and the block sums live in `acc`
 * (scratch, rows x NS floats, L1-resident); the rows about CIRCC_GEMV_AHEAD
 * bytes on are prefetched. Four k per pass keep the chain order. With one
 * row, the rows of B whose coefficient is 0 are not read: attention
 * probabilities of masked keys are exactly 0, so a decode step reads only
 * the values it attends to. The bits do not change for finite B
 * (x + 0 = x, and no partial sum is -0); an inf or NaN in a skipped row counts
 * as 0 (IEEE would give NaN). */
static inline __attribute__((always_inline)) void circc_gemm_stream_bt(int rows, int bt, int64_t m0, int64_t N, int64_t K, const float *A,
                                        int64_t a_m, int64_t a_k, const void *B, int64_t b_k, float *C, int64_t c_m,
                                        int64_t c_n, float *acc) {
  /* rows of B prefetched ahead: about CIRCC_GEMV_AHEAD bytes of B */
  const int64_t row_bytes = b_k * (bt == CIRCC_B_BF16 ? 2 : 4),
                pf_rows = row_bytes >= CIRCC_GEMV_AHEAD / 4 ? 4 : CIRCC_GEMV_AHEAD / row_bytes;
  for (int64_t n0 = 0; n0 < N; n0 += CIRCC_GEMM_NS) {
    int64_t nn = circc_gemm_min(CIRCC_GEMM_NS, N - n0);
    int64_t nv = nn / CIRCC_GEMM_VL * CIRCC_GEMM_VL;
    int tail = (int)(nn - nv);
    for (int64_t pc = 0; pc < K; pc += CIRCC_GEMM_KC) {
      int64_t kb = circc_gemm_min(CIRCC_GEMM_KC, K - pc);
      for (int r = 0; r < rows; r++)
        for (int64_t j = 0; j < nn; j += CIRCC_GEMM_VL) circc_gemm_vstore(acc + r * CIRCC_GEMM_NS + j, circc_gemm_vzero());
      for (int64_t k = 0; k < kb;) {
        if (rows == 1 && A[m0 * a_m + (pc + k) * a_k] == 0.0f) { /* a run of masked keys */
          k += circc_zeros_run(A + m0 * a_m + (pc + k) * a_k, a_k, kb - k);
          continue;
        }
        if (k + 4 > kb || (rows == 1 && circc_gemm_has_zero4(A + m0 * a_m + (pc + k) * a_k, a_k))) {
          if (rows > 1 || A[m0 * a_m + (pc + k) * a_k] != 0.0f)
            circc_gemm_stream_k(rows, bt, m0, nn, A + (pc + k) * a_k, a_m, circc_gemm_bat(bt, B, (pc + k) * b_k + n0),
                                acc);
          k++;
          continue;
        }
        const void *b0 = circc_gemm_bat(bt, B, (pc + k) * b_k + n0), *b1 = circc_gemm_bat(bt, b0, b_k),
                   *b2 = circc_gemm_bat(bt, b1, b_k), *b3 = circc_gemm_bat(bt, b2, b_k);
        for (int q = 0; q < 4; q++) {
          const char *ahead = (const char *)circc_gemm_bat(bt, b0, (pf_rows + q) * b_k);
          for (int64_t l = 0; l < nn * (bt == CIRCC_B_BF16 ? 2 : 4); l += 64) _mm_prefetch(ahead + l, _MM_HINT_T0);
        }
        circc_gemm_v a[CIRCC_GEMM_SR][4];
        for (int r = 0; r < CIRCC_GEMM_SR; r++) {
          if (r >= rows) break;
          for (int q = 0; q < 4; q++) a[r][q] = circc_gemm_vset1(A[(m0 + r) * a_m + (pc + k + q) * a_k]);
        }
        for (int64_t j = 0; j < nn; j += CIRCC_GEMM_VL) {
          circc_gemm_v v0, v1, v2, v3;
          if (j < nv) {
            v0 = circc_gemm_bload(bt, b0, j), v1 = circc_gemm_bload(bt, b1, j);
            v2 = circc_gemm_bload(bt, b2, j), v3 = circc_gemm_bload(bt, b3, j);
          } else {
            v0 = circc_gemm_bloadn(bt, b0, j, tail), v1 = circc_gemm_bloadn(bt, b1, j, tail);
            v2 = circc_gemm_bloadn(bt, b2, j, tail), v3 = circc_gemm_bloadn(bt, b3, j, tail);
          }
          for (int r = 0; r < CIRCC_GEMM_SR; r++) {
            if (r >= rows) break;
            float *s = acc + r * CIRCC_GEMM_NS + j;
            circc_gemm_v x = circc_gemm_vload(s);
            x = circc_gemm_vfma(a[r][0], v0, x);
            x = circc_gemm_vfma(a[r][1], v1, x);
            x = circc_gemm_vfma(a[r][2], v2, x);
            x = circc_gemm_vfma(a[r][3], v3, x);
            circc_gemm_vstore(s, x);
          }
        }
        k += 4;
      }
      int first = pc == 0;
      for (int r = 0; r < rows; r++) {
        float *c = C + (m0 + r) * c_m + n0 * c_n;
        const float *s = acc + r * CIRCC_GEMM_NS;
        if (c_n == 1) {
          for (int64_t j = 0; j < nv; j += CIRCC_GEMM_VL)
            circc_gemm_vstoreu(c + j, first ? circc_gemm_vload(s + j)
                                            : circc_gemm_vadd(circc_gemm_vloadu(c + j), circc_gemm_vload(s + j)));
          if (tail)
            circc_gemm_vstoren(c + nv, first ? circc_gemm_vload(s + nv)
                                             : circc_gemm_vadd(circc_gemm_vloadn(c + nv, tail), circc_gemm_vload(s + nv)),
                               tail);
        } else {
          for (int64_t j = 0; j < nn; j++) c[j * c_n] = first ? s[j] : c[j * c_n] + s[j];
        }
      }
    }
  }
}

/* circc_gemm_stream_bt with fp32 B. */
static inline void circc_gemm_stream(int rows, int64_t m0, int64_t N, int64_t K, const float *A, int64_t a_m,
                                     int64_t a_k, const float *B, int64_t b_k, float *C, int64_t c_m, int64_t c_n,
                                     float *acc) {
  circc_gemm_stream_bt(rows, CIRCC_B_F32, m0, N, K, A, a_m, a_k, B, b_k, C, c_m, c_n, acc);
}

/* The same for B given transposed (column n contiguous at Bt + n*ld): 16
 * columns at a time, read as 8x8 blocks and transposed in registers, so B^T
 * streams with no packing. */
static inline void circc_gemm_stream_t(int rows, int64_t m0, int64_t N, int64_t K, const float *A, int64_t a_m,
                                       int64_t a_k, const float *Bt, int64_t ld, float *C, int64_t c_m, int64_t c_n) {
  for (int64_t n0 = 0; n0 < N; n0 += 16) {
    int nn = (int)circc_gemm_min(16, N - n0);
    for (int64_t pc = 0; pc < K; pc += CIRCC_GEMM_KC) {
      int64_t kb = circc_gemm_min(CIRCC_GEMM_KC, K - pc);
      circc_gemm_v acc[CIRCC_GEMM_SR][CIRCC_GEMM_T];
      for (int r = 0; r < CIRCC_GEMM_SR; r++)
        for (int g = 0; g < CIRCC_GEMM_T; g++) acc[r][g] = circc_gemm_vzero();
      for (int64_t k0 = 0; k0 < kb; k0 += 8) {
        int kn = (int)circc_gemm_min(8, kb - k0);
        const float *p = Bt + n0 * ld + pc + k0;
        circc_gemm_v t[8 * CIRCC_GEMM_T];
        circc_gemm_t16(p, ld, nn, kn, t);
        if ((k0 & 8) == 0 && n0 + 32 <= N) /* the next 16 columns: 16 streams defeat the hardware prefetcher */
          for (int j = 16; j < 32; j++) _mm_prefetch((const char *)(p + j * ld), _MM_HINT_T0);
        for (int q = 0; q < kn; q++)
          for (int r = 0; r < CIRCC_GEMM_SR; r++) {
            if (r >= rows) break;
            circc_gemm_v a = circc_gemm_vset1(A[(m0 + r) * a_m + (pc + k0 + q) * a_k]);
            for (int g = 0; g < CIRCC_GEMM_T; g++) acc[r][g] = circc_gemm_vfma(a, t[q * CIRCC_GEMM_T + g], acc[r][g]);
          }
      }
      int first = pc == 0;
      for (int r = 0; r < rows; r++) {
        float sum[16], *c = C + (m0 + r) * c_m + n0 * c_n;
        for (int g = 0; g < CIRCC_GEMM_T; g++) circc_gemm_vstoreu(sum + g * CIRCC_GEMM_VL, acc[r][g]);
        for (int j = 0; j < nn; j++) c[j * c_n] = first ? sum[j] : c[j * c_n] + sum[j];
      }
    }
  }
}
#endif

/* ------------------------------------------------------- matrix-vector */

/* Dot product of K contiguous floats of a and elements of b (type bt) in the
 * GEMV order: 32 partial sums, lane j taking k = j (mod 32) by a chain of
 * fused multiply-adds from +0 in increasing k (lanes past K add 0), then added
 * pairwise as (j, j+16), (j, j+8), (j, j+4), (j, j+2), (j, j+1). */
#if CIRCC_GEMM_VL == 16
/* the lanes of s0 (k = 0..15 mod 32) and s1 (16..31) added in that order */
static inline float circc_gemv_sum(__m512 s0, __m512 s1) {
  __m512 t = _mm512_add_ps(s0, s1);
  __m256 h = _mm256_add_ps(_mm512_castps512_ps256(t), _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(t), 1)));
  __m128 q = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
  q = _mm_add_ps(q, _mm_movehl_ps(q, q));
  return _mm_cvtss_f32(_mm_add_ss(q, _mm_movehdup_ps(q)));
}

static inline __attribute__((always_inline)) float circc_gemv_dot(int bt, const float *a, const void *b, int64_t K) {
  __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
  int64_t k = 0;
  for (; k + 32 <= K; k += 32) {
    s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + k), circc_gemm_bload(bt, b, k), s0);
    s1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + k + 16), circc_gemm_bload(bt, b, k + 16), s1);
  }
  if (k < K) {
    int r = (int)(K - k);
    s0 = _mm512_fmadd_ps(circc_gemm_vloadn(a + k, r), circc_gemm_bloadn(bt, b, k, r), s0);
    s1 = _mm512_fmadd_ps(circc_gemm_vloadn(a + k + 16, r - 16), circc_gemm_bloadn(bt, b, k + 16, r - 16), s1);
  }
  return circc_gemv_sum(s0, s1);
}

/* circc_gemv_dot of four columns (column j from element j*b_n of b) at once,
 * written to y[j*c_n]: the same operations per column (same bits); four
 * independent chains keep more loads in flight than one, and each line read
 * is prefetched CIRCC_GEMV_AHEAD bytes on (adjacent columns are one stream):
 * on Zen 5, 64-float columns (a decode step's keys) went from 0.65 to 0.81 of
 * the read bandwidth, 768- and 3072-float ones (weights) gained a little. */
static inline __attribute__((always_inline)) void circc_gemv_dot4(int bt, const float *a, const void *b, int64_t b_n, int64_t K, float *y,
                                   int64_t c_n) {
  __m512 s[8];
  for (int j = 0; j < 8; j++) s[j] = _mm512_setzero_ps();
  int64_t k = 0;
  for (; k + 32 <= K; k += 32) {
    const __m512 a0 = _mm512_loadu_ps(a + k), a1 = _mm512_loadu_ps(a + k + 16);
    for (int j = 0; j < 4; j++)
      for (int l = 0; l < 32 * (bt == CIRCC_B_BF16 ? 2 : 4); l += 64)
        _mm_prefetch((const char *)circc_gemm_bat(bt, b, j * b_n + k) + CIRCC_GEMV_AHEAD + l, _MM_HINT_T0);
    for (int j = 0; j < 4; j++) {
      s[2 * j] = _mm512_fmadd_ps(a0, circc_gemm_bload(bt, b, j * b_n + k), s[2 * j]);
      s[2 * j + 1] = _mm512_fmadd_ps(a1, circc_gemm_bload(bt, b, j * b_n + k + 16), s[2 * j + 1]);
    }
  }
  if (k < K) {
    int r = (int)(K - k);
    const __m512 a0 = circc_gemm_vloadn(a + k, r), a1 = circc_gemm_vloadn(a + k + 16, r - 16);
    for (int j = 0; j < 4; j++) {
      s[2 * j] = _mm512_fmadd_ps(a0, circc_gemm_bloadn(bt, b, j * b_n + k, r), s[2 * j]);
      s[2 * j + 1] = _mm512_fmadd_ps(a1, circc_gemm_bloadn(bt, b, j * b_n + k + 16, r - 16), s[2 * j + 1]);
    }
  }
  for (int j = 0; j < 4; j++) y[j * c_n] = circc_gemv_sum(s[2 * j], s[2 * j + 1]);
}
#elif CIRCC_GEMM_VL == 8
static inline __attribute__((always_inline)) float circc_gemv_dot(int bt, const float *a, const void *b, int64_t K) {
  __m256 s[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
  int64_t k = 0;
  for (; k + 32 <= K; k += 32)
    for (int g = 0; g < 4; g++) s[g] = _mm256_fmadd_ps(_mm256_loadu_ps(a + k + 8 * g), circc_gemm_bload(bt, b, k + 8 * g), s[g]);
  if (k < K) {
    int r = (int)(K - k);
    for (int g = 0; g < 4; g++)
      s[g] = _mm256_fmadd_ps(circc_gemm_vloadn(a + k + 8 * g, r - 8 * g), circc_gemm_bloadn(bt, b, k + 8 * g, r - 8 * g), s[g]);
  }
  __m256 h = _mm256_add_ps(_mm256_add_ps(s[0], s[2]), _mm256_add_ps(s[1], s[3]));
  __m128 q = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
  q = _mm_add_ps(q, _mm_movehl_ps(q, q));
  return _mm_cvtss_f32(_mm_add_ss(q, _mm_movehdup_ps(q)));
}
#else
static inline float circc_b16f(uint16_t h) {
  union { uint32_t u; float f; } x = {(uint32_t)h << 16};
  return x.f;
}

/* Element i of B as fp32. */
static inline float circc_gemm_bget(int bt, const void *B, int64_t i) {
  return bt == CIRCC_B_BF16 ? circc_b16f(((const uint16_t *)B)[i]) : ((const float *)B)[i];
}

static inline __attribute__((always_inline)) float circc_gemv_dot(int bt, const float *a, const void *b, int64_t K) {
  float s[32] = {0};
  int64_t k = 0;
  for (; k + 32 <= K; k += 32)
    for (int j = 0; j < 32; j++) s[j] += a[k + j] * circc_gemm_bget(bt, b, k + j);
  for (int j = 0; k + j < K; j++) s[j] += a[k + j] * circc_gemm_bget(bt, b, k + j);
  for (int w = 16; w >= 1; w /= 2)
    for (int j = 0; j < w; j++) s[j] += s[j + w];
  return s[0];
}
#endif
#if CIRCC_GEMM_VL != 16
static inline __attribute__((always_inline)) void circc_gemv_dot4(int bt, const float *a, const void *b, int64_t b_n, int64_t K, float *y,
                                   int64_t c_n) {
  for (int j = 0; j < 4; j++) y[j * c_n] = circc_gemv_dot(bt, a, circc_gemm_bat(bt, b, j * b_n), K);
}
#endif

/* circc_gemv_f32 with B's elements of type bt. */
static inline __attribute__((always_inline)) void circc_gemv_bt(int bt, int64_t N, int64_t K, const float *a, const void *B, int64_t b_n, float *y,
                                 int64_t c_n, const float *mask, int64_t mask_n) {
  for (int64_t n = 0; n < N;) {
    if (mask) { /* a decode cache is mostly masked: its runs are skipped a vector at a time */
      const int64_t z = circc_zeros_run(mask + n * mask_n, mask_n, N - n);
      for (int64_t j = n; j < n + z; j++) y[j * c_n] = 0.0f;
      if ((n += z) == N) break;
    }
    int live4 = n + 4 <= N;
    for (int j = 1; mask && live4 && j < 4; j++) live4 = mask[(n + j) * mask_n] != 0.0f;
    if (live4) {
      circc_gemv_dot4(bt, a, circc_gemm_bat(bt, B, n * b_n), b_n, K, y + n * c_n, c_n);
      n += 4;
    } else {
      y[n * c_n] = circc_gemv_dot(bt, a, circc_gemm_bat(bt, B, n * b_n), K);
      n++;
    }
  }
}

/* One row of A times B given by columns: y[n*c_n] = sum_k a[k] * B[n*b_n + k]
 * for n in [0,N), with a and every column of B contiguous (b_k = 1). A range
 * of columns is one contiguous block of B, so threads that split the columns
 * each stream their own block: decode steps, whose weights are laid out this
 * way at compile time, read them at memory bandwidth. mask (NULL: none): a
 * column whose mask[n*mask_n] is 0 is written 0 and not read, because its
 * value is multiplied by that 0 afterwards (0·x = 0 for finite x; an inf or
 * NaN in such a column counts as 0, where IEEE would give NaN). Sums follow
 * circc_gemv_dot, not the GEMM's order: the AVX-512 and AVX2 builds agree bit
 * for bit, and no column depends on how columns are split. */
CIRCC_GEMM_API void circc_gemv_f32(int64_t N, int64_t K, const float *a, const float *B, int64_t b_n, float *y,
                                   int64_t c_n, const float *mask, int64_t mask_n) {
  circc_gemv_bt(CIRCC_B_F32, N, K, a, B, b_n, y, c_n, mask, mask_n);
}

/* ------------------------------------------------------------------- entry */

/* Rows [m0,m1) with K > 0, N > 0: picks the streaming or the packed path. */
static inline void circc_gemm_run(int64_t m0, int64_t m1, int64_t N, int64_t K, const float *A, int64_t a_m,
                                  int64_t a_k, const float *B, int64_t b_k, int64_t b_n, float *C, int64_t c_m,
                                  int64_t c_n, float *scratch) {
#if CIRCC_GEMM_VL > 0
  /* Few rows, contiguous B rows: stream B once instead of packing it. */
  if (b_n == 1 && m1 - m0 <= CIRCC_GEMM_SR) {
    switch (m1 - m0) {
    case 1: circc_gemm_stream(1, m0, N, K, A, a_m, a_k, B, b_k, C, c_m, c_n, scratch); return;
    case 2: circc_gemm_stream(2, m0, N, K, A, a_m, a_k, B, b_k, C, c_m, c_n, scratch); return;
    case 3: circc_gemm_stream(3, m0, N, K, A, a_m, a_k, B, b_k, C, c_m, c_n, scratch); return;
    default: circc_gemm_stream(4, m0, N, K, A, a_m, a_k, B, b_k, C, c_m, c_n, scratch); return;
    }
  }
  if (b_k == 1 && m1 - m0 <= CIRCC_GEMM_SR) {
    switch (m1 - m0) {
    case 1: circc_gemm_stream_t(1, m0, N, K, A, a_m, a_k, B, b_n, C, c_m, c_n); return;
    case 2: circc_gemm_stream_t(2, m0, N, K, A, a_m, a_k, B, b_n, C, c_m, c_n); return;
    case 3: circc_gemm_stream_t(3, m0, N, K, A, a_m, a_k, B, b_n, C, c_m, c_n); return;
    default: circc_gemm_stream_t(4, m0, N, K, A, a_m, a_k, B, b_n, C, c_m, c_n); return;
    }
  }
#endif
  circc_gemm_packed(m0, m1, N, K, A, a_m, a_k, B, b_k, b_n, C, c_m, c_n, scratch);
}

/* B (B[k*b_k + n*b_n], K x N) in the pre-packed layout at W
 * (circc_gemm_packed_b_floats(N, K) floats, padding 0): what circc writes
 * into the blob for a weight, here for tests and benchmarks. */
CIRCC_GEMM_API void circc_gemm_pack_b(const float *B, int64_t b_k, int64_t b_n, int64_t N, int64_t K, float *W) {
  int64_t Np = circc_gemm_packed_np(N);
  for (int64_t k = 0; k < K; k++)
    for (int64_t n = 0; n < Np; n++) W[circc_gemm_packed_b_index(N, K, k, n)] = n < N ? B[k * b_k + n * b_n] : 0.0f;
}

/* Columns [n0,n1) of circc_gemm_f32_rows's product for rows [m0,m1), with B
 * pre-packed at W (N columns in all, circc_gemm_pack_b's layout): the same
 * bits, whatever the split. C points at column 0; n0 must be a multiple of
 * 16. scratch: circc_gemm_scratch_floats(N, K) floats, 64-byte aligned,
 * private to the calling thread. */
CIRCC_GEMM_API void circc_gemm_f32_packed_rows(int64_t m0, int64_t m1, int64_t n0, int64_t n1, int64_t N, int64_t K,
                                               const float *A, int64_t a_m, int64_t a_k, const float *W, float *C,
                                               int64_t c_m, int64_t c_n, float *scratch) {
  if (m1 <= m0 || n1 <= n0) return;
  if (K <= 0) {
    for (int64_t m = m0; m < m1; m++)
      for (int64_t n = n0; n < n1; n++) C[m * c_m + n * c_n] = 0.0f;
    return;
  }
  circc_gemm_packed_w(m0, m1, n0, n1, N, K, A, a_m, a_k, W, C, c_m, c_n, scratch);
}

/* C[m*c_m + n*c_n] = sum_k A[m*a_m + k*a_k] * B[k*b_k + n*b_n] for m in [m0,m1),
 * n in [0,N); overwrites C. scratch: circc_gemm_scratch_floats(N, K) floats,
 * 64-byte aligned, private to the calling thread. Reads only the A rows, B and
 * C elements addressed by the formula. */
CIRCC_GEMM_API void circc_gemm_f32_rows(int64_t m0, int64_t m1, int64_t N, int64_t K, const float *A, int64_t a_m,
                                        int64_t a_k, const float *B, int64_t b_k, int64_t b_n, float *C, int64_t c_m,
                                        int64_t c_n, float *scratch) {
  int64_t rows = m1 - m0;
  if (rows <= 0 || N <= 0) return;
  if (K <= 0) {
    for (int64_t m = m0; m < m1; m++)
      for (int64_t n = 0; n < N; n++) C[m * c_m + n * c_n] = 0.0f;
    return;
  }
#if CIRCC_GEMM_VL > 0
  /* Fewer columns than a micro-tile and more rows: compute C^T = B^T A^T so the
   * long side runs along the tile's columns (same products, order and bits). */
  if (N < CIRCC_GEMM_NR && rows > N) {
    circc_gemm_run(0, N, rows, K, B, b_n, b_k, A + m0 * a_m, a_k, a_m, C + m0 * c_m, c_n, c_m, scratch);
    return;
  }
#endif
  circc_gemm_run(m0, m1, N, K, A, a_m, a_k, B, b_k, b_n, C, c_m, c_n, scratch);
}

#endif /* CIRCC_GEMM_F32_LAYOUT_ONLY */
#endif /* CIRCC_GEMM_F32_H */
