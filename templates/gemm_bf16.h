/* gemm_bf16.h — bf16 GEMM template for circc --precision bf16:
 *     C[m*c_m + n*c_n] = sum_k bf16(A[m*a_m + k*a_k]) * Bw[k][n]
 * for rows m in [m0,m1) and columns n in [n0,n1) (n0 a multiple of 32); C is
 * overwritten. A is fp32 (an activation, any strides) and is rounded to bf16
 * while it is packed; Bw is a weight that circc rounded to bf16 and packed at
 * compile time (circc_bf16_b_index below is the layout, shared with the
 * compiler's emit.c, which writes it into the weights blob). Products of two
 * bf16 values are exact in fp32; they are accumulated in fp32; the result is
 * fp32.
 *
 * Rounding: fp32 -> bf16 is round-to-nearest-even on the top 16 bits (NaN
 * stays a quiet NaN, overflow gives inf), circc_bf16_round, the same in the
 * compiler and here.
 *
 * Summation (the numerical contract): each C element is one fp32 accumulator
 * that starts at +0 and takes K in increasing order (padded to a multiple of 32
 * with zeros), never split into blocks that are added later; which rows or
 * columns a call computes, and how many threads split them, does not change a
 * bit. The order inside one hardware step depends on the path:
 *  - amx: TDPBF16PS on 16x32 A tiles and 32x16 B tiles, C in a 2x2 block of
 *    16x16 fp32 tiles; 32 k per step, in the hardware's order (denormal inputs
 *    and results are flushed to 0, rounding is to nearest even).
 *  - avx512bf16: VDPBF16PS, two k (a pair) per step, 8 rows x 32 columns of
 *    accumulators (same flushing). Used where the compiler has no AMX, where
 *    the kernel refuses AMX (arch_prctl), and always for M <= 4 rows (decode:
 *    the caller passes amx = 0, so B streams from memory at its bf16 width).
 *  - portable: plain C, acc + a*b per k in increasing order (exact products,
 *    so contraction into an FMA does not change the bits).
 * The paths may differ from each other in the last bits (the error bound is
 * the same: |C - exact| <= K * 2^-24 * sum_k |a_k b_k| for the rounded
 * operands, plus the flushed denormals); a program picks one path for every
 * step that is not a small-M one before any thread runs, so results never
 * depend on the thread count.
 *
 * Paths are chosen at compile time from the ISA macros (__AMX_TILE__ and
 * __AMX_BF16__ (clang: __AMXTILE__, __AMXBF16__), __AVX512BF16__), which -march=native sets on a CPU that has
 * them; CIRCC_GEMM_BF16_NO_AMX or CIRCC_GEMM_BF16_PORTABLE turn paths off (the
 * tests build every variant). With AMX compiled in, circc_gemm_bf16_amx() asks
 * Linux once for the tile data permission (arch_prctl ARCH_REQ_XCOMP_PERM);
 * if it is refused, the AVX-512 BF16 (or portable) path runs instead.
 * CIRCC_GEMM_BF16_LAYOUT_ONLY: only the rounding and the packed layout (the
 * compiler includes it that way). attention_bf16.h (the attention of bf16
 * programs) runs its two products on the blocks and paths defined here. */
#ifndef CIRCC_GEMM_BF16_H
#define CIRCC_GEMM_BF16_H
#include <stdint.h>
#include <string.h>

#if defined(__GNUC__)
#define CIRCC_BF16_API static inline __attribute__((unused))
#else
#define CIRCC_BF16_API static inline
#endif

/* ------------------------------------------------------ rounding, layout */

/* fp32 -> bf16, round to nearest even; NaN stays NaN (quiet). */
CIRCC_BF16_API uint16_t circc_bf16_round(float x) {
  uint32_t u;
  memcpy(&u, &x, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return (uint16_t)(u >> 16);
}

CIRCC_BF16_API float circc_bf16_float(uint16_t h) {
  uint32_t u = (uint32_t)h << 16;
  float x;
  memcpy(&x, &u, 4);
  return x;
}

/* Packed K: a multiple of 32 (one AMX tile row); packed N: of 32 (two panels). */
CIRCC_BF16_API int64_t circc_bf16_kp(int64_t K) { return (K + 31) / 32 * 32; }
CIRCC_BF16_API int64_t circc_bf16_np(int64_t N) { return (N + 31) / 32 * 32; }

/* Packed B (bf16 elements: circc_bf16_np(N) * circc_bf16_kp(K)): panels of 16
 * columns one after the other; in a panel, k pairs (2p, 2p+1) in increasing p,
 * each 16 columns x 2 values (the VNNI layout AMX and VDPBF16PS read): element
 * (k, n) is at circc_bf16_b_index(k, n, Kp). Padding is 0. */
CIRCC_BF16_API int64_t circc_bf16_b_index(int64_t k, int64_t n, int64_t Kp) {
  return ((n / 16) * (Kp / 2) + k / 2) * 32 + (n % 16) * 2 + (k & 1);
}

#ifndef CIRCC_GEMM_BF16_LAYOUT_ONLY

/* B packed from fp32 B[k*b_k + n*b_n] (tests; circc packs weights itself). */
CIRCC_BF16_API void circc_bf16_pack_b(const float *B, int64_t b_k, int64_t b_n, int64_t N, int64_t K, uint16_t *dst) {
  int64_t Kp = circc_bf16_kp(K), Np = circc_bf16_np(N);
  for (int64_t n = 0; n < Np; n++)
    for (int64_t k = 0; k < Kp; k++)
      dst[circc_bf16_b_index(k, n, Kp)] = n < N && k < K ? circc_bf16_round(B[k * b_k + n * b_n]) : 0;
}

/* (gcc spells the AMX macros __AMX_TILE__/__AMX_BF16__, clang __AMXTILE__/__AMXBF16__) */
#if !defined(CIRCC_GEMM_BF16_PORTABLE) && !defined(CIRCC_GEMM_BF16_NO_AMX) &&                  \
    (defined(__AMX_TILE__) || defined(__AMXTILE__)) && (defined(__AMX_BF16__) || defined(__AMXBF16__)) && \
    defined(__linux__) && defined(__x86_64__)
#define CIRCC_BF16_HAS_AMX 1
#else
#define CIRCC_BF16_HAS_AMX 0
#endif
#if !defined(CIRCC_GEMM_BF16_PORTABLE) && defined(__AVX512BF16__) && defined(__AVX512F__)
#define CIRCC_BF16_HAS_AVX512 1
#else
#define CIRCC_BF16_HAS_AVX512 0
#endif
#if CIRCC_BF16_HAS_AMX || CIRCC_BF16_HAS_AVX512
#include <immintrin.h>
#endif
#if CIRCC_BF16_HAS_AMX
#include <sys/syscall.h>
#endif

/* The path a call with amx = 0 takes. */
#define CIRCC_BF16_VECTOR_ISA (CIRCC_BF16_HAS_AVX512 ? "avx512bf16" : "portable")

/* 1 if the AMX path runs here: compiled in and the tile data permission
 * granted (asked once per process; a race only asks twice, with one answer). */
CIRCC_BF16_API int circc_gemm_bf16_amx(void) {
#if CIRCC_BF16_HAS_AMX
  static int state; /* 0 not asked, 1 granted, 2 refused */
  int s = __atomic_load_n(&state, __ATOMIC_ACQUIRE);
  if (!s) {
    /* arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA), as a raw system call:
     * glibc declares syscall() only for _DEFAULT_SOURCE, programs are -std=c11 */
    long ret;
    __asm__ volatile("syscall" : "=a"(ret) : "a"((long)SYS_arch_prctl), "D"(0x1023L), "S"(18L) : "rcx", "r11", "memory");
    s = ret == 0 ? 1 : 2;
    __atomic_store_n(&state, s, __ATOMIC_RELEASE);
  }
  return s == 1;
#else
  return 0;
#endif
}

/* The paths a program's GEMMs take here, for --info. */
CIRCC_BF16_API const char *circc_gemm_bf16_path(void) {
  return circc_gemm_bf16_amx() ? (CIRCC_BF16_HAS_AVX512 ? "amx; 1-4 rows: avx512bf16" : "amx; 1-4 rows: portable")
                               : CIRCC_BF16_VECTOR_ISA;
}

/* Bytes of scratch circc_gemm_bf16_rows needs for `rows` rows: the packed A
 * (rows rounded up to 32) and a 32x32 fp32 block. */
CIRCC_BF16_API int64_t circc_gemm_bf16_scratch_bytes(int64_t rows, int64_t K) {
  return (rows + 31) / 32 * 32 * circc_bf16_kp(K) * 2 + 32 * 32 * 4;
}

/* Packs rows [m0,m1) of A, rounded to bf16, as 16-row tiles: row m0 + 16t + r,
 * k = 32kt + j at Ap[((t*KT + kt)*16 + r)*32 + j] (KT = Kp/32); rows up to a
 * multiple of 32 and k up to Kp are 0. Tile (t, kt) is one AMX A tile, and
 * its row r holds the k pairs VDPBF16PS broadcasts. */
static inline void circc_bf16_pack_a(const float *A, int64_t a_m, int64_t a_k, int64_t m0, int64_t m1, int64_t K,
                                     uint16_t *restrict Ap) {
  int64_t Kp = circc_bf16_kp(K), KT = Kp / 32, rows = (m1 - m0 + 31) / 32 * 32;
  for (int64_t i = 0; i < rows; i++) {
    uint16_t *d = Ap + (i / 16) * KT * 512 + (i % 16) * 32;
    if (m0 + i >= m1) {
      for (int64_t kt = 0; kt < KT; kt++) memset(d + kt * 512, 0, 64);
      continue;
    }
    const float *src = A + (m0 + i) * a_m;
    for (int64_t kt = 0; kt < KT; kt++) {
      int64_t kn = K - kt * 32 < 32 ? K - kt * 32 : 32;
      uint16_t *t = d + kt * 512;
      if (a_k == 1)
        for (int64_t j = 0; j < kn; j++) t[j] = circc_bf16_round(src[kt * 32 + j]);
      else
        for (int64_t j = 0; j < kn; j++) t[j] = circc_bf16_round(src[(kt * 32 + j) * a_k]);
      for (int64_t j = kn; j < 32; j++) t[j] = 0;
    }
  }
}

/* ------------------------------------------------------------- blocks */
/* Each computes a 32-row x 32-column block of C into out (ld 32) from the A
 * tiles At (32 rows: two 16-row tile sets) and the two B panels B0, B1 over
 * KT k tiles; `rows` (<= 32) says how many of the rows are wanted (the
 * vector paths skip the rest; their values are then unspecified). */

#if CIRCC_BF16_HAS_AMX
typedef struct circc_bf16_tilecfg {
  uint8_t palette, start_row, reserved[14];
  uint16_t colsb[16];
  uint8_t rows[16];
} circc_bf16_tilecfg;

/* Tiles 0-3: C (2x2 of 16x16 fp32), 4-5: A (16 rows x 32 bf16), 6-7: B (16
 * pairs x 16 columns); every one 16 rows of 64 bytes. */
static inline void circc_bf16_amx_begin(void) {
  circc_bf16_tilecfg cfg;
  memset(&cfg, 0, sizeof cfg);
  cfg.palette = 1;
  for (int t = 0; t < 8; t++) cfg.colsb[t] = 64, cfg.rows[t] = 16;
  _tile_loadconfig(&cfg);
}

static inline void circc_bf16_amx_block(const uint16_t *At, int64_t KT, const uint16_t *B0, const uint16_t *B1,
                                        float *out) {
  const uint16_t *At1 = At + KT * 512;
  _tile_zero(0);
  _tile_zero(1);
  _tile_zero(2);
  _tile_zero(3);
  for (int64_t kt = 0; kt < KT; kt++) {
    _tile_loadd(4, At + kt * 512, 64);
    _tile_loadd(5, At1 + kt * 512, 64);
    _tile_loadd(6, B0 + kt * 512, 64);
    _tile_loadd(7, B1 + kt * 512, 64);
    _tile_dpbf16ps(0, 4, 6);
    _tile_dpbf16ps(1, 4, 7);
    _tile_dpbf16ps(2, 5, 6);
    _tile_dpbf16ps(3, 5, 7);
  }
  _tile_stored(0, out, 128);
  _tile_stored(1, out + 16, 128);
  _tile_stored(2, out + 512, 128);
  _tile_stored(3, out + 528, 128);
}
#endif

#if CIRCC_BF16_HAS_AVX512
/* R (<= 8, a literal at each call) rows of the 16-row tile set At (row r at
 * At + r*32 in each k tile) x 32 columns: one VDPBF16PS chain per 16 columns
 * and row, k pairs in increasing order. */
static inline void circc_bf16_vec_rows(int R, const uint16_t *At, int64_t KT, const uint16_t *B0, const uint16_t *B1,
                                       float *out) {
  __m512 acc[8][2];
  for (int r = 0; r < 8; r++) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
  for (int64_t kt = 0; kt < KT; kt++) {
    const uint16_t *a = At + kt * 512, *b0 = B0 + kt * 512, *b1 = B1 + kt * 512;
    for (int q = 0; q < 16; q++) {
      __m512bh v0 = (__m512bh)_mm512_loadu_si512(b0 + q * 32), v1 = (__m512bh)_mm512_loadu_si512(b1 + q * 32);
      for (int r = 0; r < 8; r++) {
        if (r >= R) break;
        int32_t pair;
        memcpy(&pair, a + r * 32 + 2 * q, 4);
        __m512bh x = (__m512bh)_mm512_set1_epi32(pair);
        acc[r][0] = _mm512_dpbf16_ps(acc[r][0], x, v0);
        acc[r][1] = _mm512_dpbf16_ps(acc[r][1], x, v1);
      }
    }
  }
  for (int r = 0; r < R; r++) {
    _mm512_storeu_ps(out + r * 32, acc[r][0]);
    _mm512_storeu_ps(out + r * 32 + 16, acc[r][1]);
  }
}
#else
/* The same in plain C: per row and column, acc + a*b for k = 0, 1, 2, ... */
static inline void circc_bf16_vec_rows(int R, const uint16_t *At, int64_t KT, const uint16_t *B0, const uint16_t *B1,
                                       float *out) {
  float acc[8][32];
  memset(acc, 0, sizeof acc);
  for (int64_t kt = 0; kt < KT; kt++) {
    const uint16_t *a = At + kt * 512, *b0 = B0 + kt * 512, *b1 = B1 + kt * 512;
    for (int q = 0; q < 16; q++) {
      float w[2][32];
      for (int j = 0; j < 32; j++) {
        const uint16_t *b = (j < 16 ? b0 : b1) + q * 32 + (j % 16) * 2;
        w[0][j] = circc_bf16_float(b[0]);
        w[1][j] = circc_bf16_float(b[1]);
      }
      for (int r = 0; r < R; r++) {
        float x0 = circc_bf16_float(a[r * 32 + 2 * q]), x1 = circc_bf16_float(a[r * 32 + 2 * q + 1]);
        for (int j = 0; j < 32; j++) acc[r][j] = acc[r][j] + x0 * w[0][j];
        for (int j = 0; j < 32; j++) acc[r][j] = acc[r][j] + x1 * w[1][j];
      }
    }
  }
  for (int r = 0; r < R; r++) memcpy(out + r * 32, acc[r], sizeof acc[r]);
}
#endif

/* The vector block: rows in groups of 8 (4 for the last group with 1-4 rows). */
static inline void circc_bf16_vec_block(int rows, const uint16_t *At, int64_t KT, const uint16_t *B0,
                                        const uint16_t *B1, float *out) {
  for (int r0 = 0; r0 < rows; r0 += 8) {
    const uint16_t *a = At + (r0 / 16) * KT * 512 + (r0 % 16) * 32;
    switch (rows - r0 < 8 ? rows - r0 : 8) {
    case 1: circc_bf16_vec_rows(1, a, KT, B0, B1, out + r0 * 32); break;
    case 2: circc_bf16_vec_rows(2, a, KT, B0, B1, out + r0 * 32); break;
    case 3: circc_bf16_vec_rows(3, a, KT, B0, B1, out + r0 * 32); break;
    case 4: circc_bf16_vec_rows(4, a, KT, B0, B1, out + r0 * 32); break;
    default: circc_bf16_vec_rows(8, a, KT, B0, B1, out + r0 * 32); break;
    }
  }
}

/* ------------------------------------------------------------------ entry */

/* C rows [m0,m1), columns [n0,n1) (n0 % 32 == 0) of A times the packed B
 * (circc_bf16_b_index, K rows); overwrites C. amx: 1 to use the AMX path
 * (only if circc_gemm_bf16_amx() said so), 0 for the vector path. scratch:
 * circc_gemm_bf16_scratch_bytes(m1 - m0, K) bytes, 64-byte aligned, private
 * to the calling thread. */
CIRCC_BF16_API void circc_gemm_bf16_rows(int amx, int64_t m0, int64_t m1, int64_t n0, int64_t n1, int64_t K,
                                         const float *A, int64_t a_m, int64_t a_k, const uint16_t *Bp, float *C,
                                         int64_t c_m, int64_t c_n, void *scratch) {
  int64_t rows = m1 - m0;
  if (rows <= 0 || n1 <= n0) return;
  if (K <= 0) {
    for (int64_t m = m0; m < m1; m++)
      for (int64_t n = n0; n < n1; n++) C[m * c_m + n * c_n] = 0.0f;
    return;
  }
  int64_t Kp = circc_bf16_kp(K), KT = Kp / 32, rows32 = (rows + 31) / 32 * 32;
  uint16_t *Ap = (uint16_t *)scratch;
  float *out = (float *)(Ap + rows32 * Kp);
  circc_bf16_pack_a(A, a_m, a_k, m0, m1, K, Ap);
#if CIRCC_BF16_HAS_AMX
  if (amx) circc_bf16_amx_begin();
#else
  (void)amx;
#endif
  /* column blocks whose B (cw x Kp bf16) stays in L2 next to the packed A;
   * in one, 32-row blocks, then 32-column strips: C is written a few rows at
   * a time (long strided columns of C would miss the TLB on every row) */
  int64_t cw = (1 << 19) / (Kp * 2) / 32 * 32;
  if (cw < 32) cw = 32;
  for (int64_t c0 = n0; c0 < n1; c0 += cw) {
    int64_t c1 = c0 + cw < n1 ? c0 + cw : n1;
    for (int64_t t = 0; t < rows32; t += 32) {
      int r = (int)(rows - t < 32 ? rows - t : 32);
      const uint16_t *At = Ap + (t / 16) * KT * 512;
      for (int64_t s = c0; s < c1; s += 32) {
        const uint16_t *B0 = Bp + (s / 16) * Kp * 16, *B1 = B0 + Kp * 16;
        int cols = (int)(c1 - s < 32 ? c1 - s : 32);
#if CIRCC_BF16_HAS_AMX
        if (amx) circc_bf16_amx_block(At, KT, B0, B1, out);
        else
#endif
          circc_bf16_vec_block(r, At, KT, B0, B1, out);
        for (int i = 0; i < r; i++) {
          float *c = C + (m0 + t + i) * c_m + s * c_n;
          if (c_n == 1) memcpy(c, out + i * 32, sizeof(float) * (size_t)cols);
          else
            for (int j = 0; j < cols; j++) c[j * c_n] = out[i * 32 + j];
        }
      }
    }
  }
#if CIRCC_BF16_HAS_AMX
  if (amx) _tile_release();
#endif
}

#endif /* CIRCC_GEMM_BF16_LAYOUT_ONLY */
#endif /* CIRCC_GEMM_BF16_H */
