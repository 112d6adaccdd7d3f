/* gemm_int8.h — GEMM over int8 weights for circc --precision int8:
 *     C[m*c_m + n*c_n] = sum_k A[m*a_m + k*a_k] * W'[k][n]
 * for rows m in [m0,m1) and columns n in [n0,n1) (n0 a multiple of 16); C is
 * overwritten. A is fp32 (an activation, any strides); W' is a weight that
 * circc quantised at compile time (weight-only quantisation, aimed at decode):
 *
 * Format: for each column n and each group of 32 consecutive k (the last group
 * of a short K is padded with 0), one scale s = fp16(max|w| / 127) and
 * q = clamp(round-to-nearest-even(w / s), -127, 127) as int8 (scale 0, and
 * every q 0, when the group's max is 0 or the scale rounds to 0 in fp16):
 * 32 bytes of q and 2 of scale, 1.0625 bytes per weight. The weight the GEMM
 * multiplies is W' = q * s, which is exact in fp32 (a 7-bit integer times an
 * 11-bit significand), so dequantising and then multiplying in fp32 computes
 * exactly the fp32 GEMM of W'. circc_int8_quantize is the rounding, shared
 * with the compiler's emit.c, which writes the blob; circc_int8_block is the
 * layout: panels of 16 columns one after the other; in a panel, the groups in
 * increasing k, each a block of 544 bytes: the 16 columns' fp16 scales, then
 * 32 rows (k) of 16 int8 (columns). A decode step reads each panel as one
 * sequential stream at 1.0625 bytes per weight.
 *
 * Summation (the numerical contract), chosen by the caller per GEMM step, so
 * that which rows or columns a call computes, and how many threads split
 * them, never changes a bit:
 *  - decode (steps of 1-4 rows): for each C element and each group g of 32
 *    k (in increasing g), t = a chain of fp32 fused multiply-adds from +0 over
 *    the group's k in increasing order of A's element times q (an int8 as
 *    fp32, exact), then c = fma(t, s, c), from c = +0: one scaling per group,
 *    not per weight, so the kernel does one FMA per weight and row and its
 *    int8-to-fp32 conversion. The AVX-512, AVX2 and portable (fmaf) paths
 *    give the same bits.
 *  - prefill (more rows, and batch-invariant steps): blocks of columns of W'
 *    are dequantised into fp32 scratch and multiplied by circc_gemm_f32_rows
 *    (templates/gemm_f32.h), whose contract then holds: the bits are those of
 *    the fp32 template on W'.
 * Both are within (K + 1) * 2^-24 * sum_k |a_k w'_k| of the exact product
 * of A and W' (K padded to a multiple of 32; decode: at most 32 roundings in
 * a group's t, which the scaling does not add to, and one per group in c).
 *
 * Paths are chosen at compile time from the ISA macros: AVX-512F (with FMA),
 * else AVX2 with FMA (fp16 scales converted with F16C where it is enabled),
 * else plain C; CIRCC_GEMM_PORTABLE turns the vector paths off, as in
 * gemm_f32.h. CIRCC_GEMM_INT8_LAYOUT_ONLY: only the fp16 conversions, the
 * quantisation and the layout (the compiler includes it that way). */
#ifndef CIRCC_GEMM_INT8_H
#define CIRCC_GEMM_INT8_H
#include <math.h>
#include <stdint.h>
#include <string.h>

#if defined(__GNUC__)
#define CIRCC_INT8_API static inline __attribute__((unused))
#else
#define CIRCC_INT8_API static inline
#endif

/* ------------------------------------------- fp16, quantisation, layout */

#define CIRCC_INT8_GROUP 32   /* k per scale */
#define CIRCC_INT8_PANEL 16   /* columns per panel */
#define CIRCC_INT8_BLOCK 544  /* bytes of one (panel, group) block: 16 fp16 scales + 32 x 16 int8 */

/* A value >= 0 (a double) rounded to the nearest fp16, ties to even; 0x7c00
 * (inf) from 65520 up. */
CIRCC_INT8_API uint16_t circc_f16_round(double x) {
  if (!(x > 0)) return 0;
  if (x >= 65520.0) return 0x7c00;
  int e;
  frexp(x, &e);                           /* x = f * 2^e, f in [0.5, 1) */
  int E = e - 1 < -14 ? -14 : e - 1;      /* the binade (subnormals share -14's quantum) */
  double q = nearbyint(ldexp(x, 10 - E)); /* significand in units of 2^(E-10), to nearest even */
  /* normal: exponent field E+15 and the 10 fraction bits; q = 2048 carries into the exponent */
  return (uint16_t)(x < 0x1p-14 ? (int)q : ((E + 15) << 10) + (int)q - 1024);
}

/* fp16 (finite or inf; circc writes no NaN) to float, exactly. */
CIRCC_INT8_API float circc_f16_float(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exp = (h >> 10) & 31u, frac = h & 0x3ffu, u;
  if (exp == 0) {
    float x = (float)frac * 0x1p-24f;
    return h & 0x8000u ? -x : x;
  }
  u = sign | (exp == 31 ? 0x7f800000u | (frac << 13) : ((exp + 112u) << 23) | (frac << 13));
  float x;
  memcpy(&x, &u, 4);
  return x;
}

/* Quantises one group: w[0..kn) (kn <= 32) into q[0..kn); returns the
 * scale's fp16 bits, or 0x7c00 (inf, every q 0) when a value is not finite or
 * max|w| is too large for an fp16 scale (>= 65520 * 127): the caller refuses
 * such weights. */
CIRCC_INT8_API uint16_t circc_int8_quantize(const float *w, int kn, int8_t *q) {
  double mx = 0;
  for (int i = 0; i < kn; i++) {
    double x = fabs((double)w[i]);
    if (!(x <= 1e300)) mx = INFINITY;
    else if (x > mx) mx = x;
  }
  uint16_t s = circc_f16_round(mx / 127.0);
  double sv = circc_f16_float(s);
  for (int i = 0; i < kn; i++) {
    double r = s == 0 || s == 0x7c00 ? 0 : nearbyint((double)w[i] / sv);
    q[i] = (int8_t)(r > 127 ? 127 : r < -127 ? -127 : r);
  }
  return s;
}

/* Groups of a K, columns padded to whole panels, bytes of one packed matrix. */
CIRCC_INT8_API int64_t circc_int8_groups(int64_t K) { return (K + CIRCC_INT8_GROUP - 1) / CIRCC_INT8_GROUP; }
CIRCC_INT8_API int64_t circc_int8_np(int64_t N) { return (N + CIRCC_INT8_PANEL - 1) / CIRCC_INT8_PANEL * CIRCC_INT8_PANEL; }
CIRCC_INT8_API int64_t circc_int8_bytes(int64_t N, int64_t K) {
  return circc_int8_np(N) / CIRCC_INT8_PANEL * circc_int8_groups(K) * CIRCC_INT8_BLOCK;
}

/* Byte offset of the block holding (k, n): its scale of column n is the fp16
 * at +2*(n%16), its q at +32 + 16*(k%32) + n%16. */
CIRCC_INT8_API int64_t circc_int8_block(int64_t k, int64_t n, int64_t K) {
  return ((n / CIRCC_INT8_PANEL) * circc_int8_groups(K) + k / CIRCC_INT8_GROUP) * CIRCC_INT8_BLOCK;
}

#ifndef CIRCC_GEMM_INT8_LAYOUT_ONLY
#include "gemm_f32.h"

/* B quantised and packed from fp32 B[k*b_k + n*b_n] (tests; circc packs
 * weights itself). Returns 0, or -1 if a group's scale overflowed. */
CIRCC_INT8_API int circc_int8_pack_b(const float *B, int64_t b_k, int64_t b_n, int64_t N, int64_t K, uint8_t *dst) {
  int64_t G = circc_int8_groups(K);
  int bad = 0;
  memset(dst, 0, (size_t)circc_int8_bytes(N, K));
  for (int64_t n = 0; n < N; n++)
    for (int64_t g = 0; g < G; g++) {
      float w[CIRCC_INT8_GROUP];
      int8_t q[CIRCC_INT8_GROUP];
      int kn = (int)(K - g * 32 < 32 ? K - g * 32 : 32);
      for (int j = 0; j < kn; j++) w[j] = B[(g * 32 + j) * b_k + n * b_n];
      uint16_t s = circc_int8_quantize(w, kn, q);
      bad |= s == 0x7c00;
      uint8_t *blk = dst + circc_int8_block(g * 32, n, K);
      memcpy(blk + 2 * (n % 16), &s, 2);
      for (int j = 0; j < kn; j++) blk[32 + 16 * j + n % 16] = (uint8_t)q[j];
    }
  return bad ? -1 : 0;
}

#if !defined(CIRCC_GEMM_PORTABLE) && defined(__AVX512F__) && defined(__FMA__)
#define CIRCC_INT8_ISA "avx512"
#define CIRCC_INT8_VL 16
#include <immintrin.h>
#elif !defined(CIRCC_GEMM_PORTABLE) && defined(__AVX2__) && defined(__FMA__)
#define CIRCC_INT8_ISA "avx2"
#define CIRCC_INT8_VL 8
#include <immintrin.h>
#else
#define CIRCC_INT8_ISA "portable"
#define CIRCC_INT8_VL 0
#endif

/* The path a program's int8 GEMMs take here, for --info. */
CIRCC_INT8_API const char *circc_gemm_int8_path(void) {
  return CIRCC_INT8_ISA "; weights int8, one fp16 scale per 32; 1-4 rows in registers, scaled once per 32, "
                        "more through the fp32 GEMM";
}

/* Columns of W' one prefill call dequantises at once: whole panels, and
 * whole micro-tiles of the fp32 template (48), about 512 KiB of fp32. */
CIRCC_INT8_API int64_t circc_gemm_int8_chunk(int64_t K) {
  int64_t cw = (1 << 17) / (K > 0 ? K : 1) / 48 * 48;
  return cw < 48 ? 48 : cw > 1536 ? 1536 : cw;
}

/* Floats of scratch circc_gemm_int8_rows needs: none for decode; the
 * dequantised block and the fp32 template's scratch otherwise. */
CIRCC_INT8_API int64_t circc_gemm_int8_scratch_floats(int decode, int64_t K) {
  if (decode) return 16;
  int64_t cw = circc_gemm_int8_chunk(K);
  return cw * K + circc_gemm_scratch_floats(cw, K);
}

/* ------------------------------------------------------ decode kernels */
/* R rows (a literal at each call) of A from row pointer a (row stride a_m)
 * times P panels (literal) whose blocks start at blk[0..P), K deep, into
 * out[r][p*16 + j], in the decode order (above). The vector paths prefetch
 * each panel's block CIRCC_INT8_AHEAD groups on at the start of a group: one
 * core alone keeps too few lines in flight to stream at the memory's
 * bandwidth. Near a panel's end they prefetch the start of the panel the
 * next pass reads in its place (P panels on: passes take consecutive panels),
 * so that a pass does not start cold (a stream of ~13 KB at K = 768; the
 * cold start cost ~15% of a decode GEMM's bandwidth on Zen 5). */
#define CIRCC_INT8_AHEAD 4

#if CIRCC_INT8_VL == 16
static inline __attribute__((always_inline)) void circc_int8_panels(int R, int P, const float *a, int64_t a_m,
                                                                      int64_t a_k, const uint8_t *const *blk,
                                                                      int64_t K, float out[4][64]) {
  __m512 acc[4][4];
  for (int r = 0; r < R; r++)
    for (int p = 0; p < P; p++) acc[r][p] = _mm512_setzero_ps();
  const int64_t G = circc_int8_groups(K), next_pass = (int64_t)(P - 1) * G * CIRCC_INT8_BLOCK;
  for (int64_t g = 0, k0 = 0; k0 < K; g++, k0 += 32) {
    __m512 t[4][4];
    const uint8_t *b[4];
    int64_t ahead = CIRCC_INT8_AHEAD * CIRCC_INT8_BLOCK + (g + CIRCC_INT8_AHEAD < G ? 0 : next_pass);
    for (int p = 0; p < P; p++) {
      b[p] = blk[p] + g * CIRCC_INT8_BLOCK;
      for (int l = 0; l < CIRCC_INT8_BLOCK; l += 64)
        _mm_prefetch((const char *)b[p] + ahead + l, _MM_HINT_T0);
      for (int r = 0; r < R; r++) t[r][p] = _mm512_setzero_ps();
    }
    int kn = (int)(K - k0 < 32 ? K - k0 : 32);
    for (int j = 0; j < kn; j++) {
      __m512 w[4];
      for (int p = 0; p < P; p++)
        w[p] = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(b[p] + 32 + 16 * j))));
      for (int r = 0; r < R; r++) {
        __m512 x = _mm512_set1_ps(a[r * a_m + (k0 + j) * a_k]);
        for (int p = 0; p < P; p++) t[r][p] = _mm512_fmadd_ps(x, w[p], t[r][p]);
      }
    }
    for (int p = 0; p < P; p++) {
      __m512 sc = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)b[p]));
      for (int r = 0; r < R; r++) acc[r][p] = _mm512_fmadd_ps(t[r][p], sc, acc[r][p]);
    }
  }
  for (int r = 0; r < R; r++)
    for (int p = 0; p < P; p++) _mm512_storeu_ps(out[r] + 16 * p, acc[r][p]);
}
#elif CIRCC_INT8_VL == 8
/* 16 fp16 scales at s as two vectors of 8 floats */
static inline void circc_int8_scales(const uint8_t *s, __m256 *lo, __m256 *hi) {
#ifdef __F16C__
  *lo = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)s));
  *hi = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(s + 16)));
#else
  float f[16];
  for (int j = 0; j < 16; j++) {
    uint16_t h;
    memcpy(&h, s + 2 * j, 2);
    f[j] = circc_f16_float(h);
  }
  *lo = _mm256_loadu_ps(f), *hi = _mm256_loadu_ps(f + 8);
#endif
}

static inline __m256 circc_int8_load8(const uint8_t *q) {
  return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)q)));
}

static inline __attribute__((always_inline)) void circc_int8_panels(int R, int P, const float *a, int64_t a_m,
                                                                      int64_t a_k, const uint8_t *const *blk,
                                                                      int64_t K, float out[4][64]) {
  __m256 acc[4][2][2];
  for (int r = 0; r < R; r++)
    for (int p = 0; p < P; p++) acc[r][p][0] = acc[r][p][1] = _mm256_setzero_ps();
  const int64_t G = circc_int8_groups(K), next_pass = (int64_t)(P - 1) * G * CIRCC_INT8_BLOCK;
  for (int64_t g = 0, k0 = 0; k0 < K; g++, k0 += 32) {
    __m256 t[4][2][2];
    const uint8_t *b[2];
    int64_t ahead = CIRCC_INT8_AHEAD * CIRCC_INT8_BLOCK + (g + CIRCC_INT8_AHEAD < G ? 0 : next_pass);
    for (int p = 0; p < P; p++) {
      b[p] = blk[p] + g * CIRCC_INT8_BLOCK;
      for (int l = 0; l < CIRCC_INT8_BLOCK; l += 64)
        _mm_prefetch((const char *)b[p] + ahead + l, _MM_HINT_T0);
      for (int r = 0; r < R; r++) t[r][p][0] = t[r][p][1] = _mm256_setzero_ps();
    }
    int kn = (int)(K - k0 < 32 ? K - k0 : 32);
    for (int j = 0; j < kn; j++) {
      __m256 w[2][2];
      for (int p = 0; p < P; p++) {
        w[p][0] = circc_int8_load8(b[p] + 32 + 16 * j);
        w[p][1] = circc_int8_load8(b[p] + 40 + 16 * j);
      }
      for (int r = 0; r < R; r++) {
        __m256 x = _mm256_set1_ps(a[r * a_m + (k0 + j) * a_k]);
        for (int p = 0; p < P; p++) {
          t[r][p][0] = _mm256_fmadd_ps(x, w[p][0], t[r][p][0]);
          t[r][p][1] = _mm256_fmadd_ps(x, w[p][1], t[r][p][1]);
        }
      }
    }
    for (int p = 0; p < P; p++) {
      __m256 sc[2];
      circc_int8_scales(b[p], &sc[0], &sc[1]);
      for (int r = 0; r < R; r++) {
        acc[r][p][0] = _mm256_fmadd_ps(t[r][p][0], sc[0], acc[r][p][0]);
        acc[r][p][1] = _mm256_fmadd_ps(t[r][p][1], sc[1], acc[r][p][1]);
      }
    }
  }
  for (int r = 0; r < R; r++)
    for (int p = 0; p < P; p++) {
      _mm256_storeu_ps(out[r] + 16 * p, acc[r][p][0]);
      _mm256_storeu_ps(out[r] + 16 * p + 8, acc[r][p][1]);
    }
}
#else
/* plain C: fmaf, so the bits are the vector paths' */
static inline void circc_int8_panels(int R, int P, const float *a, int64_t a_m, int64_t a_k,
                                     const uint8_t *const *blk, int64_t K, float out[4][64]) {
  for (int r = 0; r < R; r++)
    for (int p = 0; p < P; p++)
      for (int j = 0; j < 16; j++) {
        float acc = 0.0f;
        for (int64_t k0 = 0; k0 < K; k0 += 32) {
          const uint8_t *b = blk[p] + (k0 / 32) * CIRCC_INT8_BLOCK;
          float t = 0.0f;
          for (int64_t k = k0; k < K && k < k0 + 32; k++)
            t = fmaf(a[r * a_m + k * a_k], (float)(int8_t)b[32 + 16 * (k - k0) + j], t);
          uint16_t h;
          memcpy(&h, b + 2 * j, 2);
          acc = fmaf(t, circc_f16_float(h), acc);
        }
        out[r][16 * p + j] = acc;
      }
}
#endif

/* Panels per pass and the specialisations: more panels at once for fewer
 * rows (registers: a row and panel takes two accumulators, c and t; AVX-512
 * holds 2 x 4 pairs, AVX2 1 x 2). */
#if CIRCC_INT8_VL == 8
#define CIRCC_INT8_PMAX(R) ((R) == 1 ? 2 : 1)
#else
#define CIRCC_INT8_PMAX(R) ((R) <= 2 ? 4 : 2)
#endif

static inline void circc_int8_pass(int R, int P, const float *a, int64_t a_m, int64_t a_k, const uint8_t *const *blk,
                                   int64_t K, float out[4][64]) {
#define CIRCC_INT8_CASE(r, p)                                                                                        \
  if (R == r && P == p) {                                                                                            \
    circc_int8_panels(r, p, a, a_m, a_k, blk, K, out);                                                               \
    return;                                                                                                          \
  }
  CIRCC_INT8_CASE(1, 1) CIRCC_INT8_CASE(2, 1) CIRCC_INT8_CASE(3, 1) CIRCC_INT8_CASE(4, 1)
  CIRCC_INT8_CASE(1, 2)
#if CIRCC_INT8_VL != 8
  CIRCC_INT8_CASE(2, 2) CIRCC_INT8_CASE(3, 2) CIRCC_INT8_CASE(4, 2)
  CIRCC_INT8_CASE(1, 3) CIRCC_INT8_CASE(2, 3)
  CIRCC_INT8_CASE(1, 4) CIRCC_INT8_CASE(2, 4)
#endif
#undef CIRCC_INT8_CASE
}

static inline void circc_int8_decode(int64_t m0, int64_t m1, int64_t n0, int64_t n1, int64_t K, const float *A,
                                     int64_t a_m, int64_t a_k, const uint8_t *Bq, float *C, int64_t c_m,
                                     int64_t c_n) {
  int64_t pstride = circc_int8_groups(K) * CIRCC_INT8_BLOCK;
  float out[4][64];
  for (int64_t r0 = m0; r0 < m1; r0 += 4) {
    int R = (int)(m1 - r0 < 4 ? m1 - r0 : 4), P = CIRCC_INT8_PMAX(R);
    for (int64_t c0 = n0; c0 < n1; c0 += 16 * P) {
      int np = (int)((n1 - c0 + 15) / 16 < P ? (n1 - c0 + 15) / 16 : P);
      const uint8_t *blk[4];
      for (int p = 0; p < np; p++) blk[p] = Bq + (c0 / 16 + p) * pstride;
      circc_int8_pass(R, np, A + r0 * a_m, a_m, a_k, blk, K, out);
      int cols = (int)(n1 - c0 < 16 * np ? n1 - c0 : 16 * np);
      for (int r = 0; r < R; r++) {
        float *c = C + (r0 + r) * c_m + c0 * c_n;
        if (c_n == 1) memcpy(c, out[r], sizeof(float) * (size_t)cols);
        else
          for (int j = 0; j < cols; j++) c[j * c_n] = out[r][j];
      }
    }
  }
}

/* ------------------------------------------------------------- prefill */

/* Columns [c0, c0 + cw) (c0 % 16 == 0) of W' as fp32 rows: Bf[k*cw + n - c0]. */
static inline void circc_int8_dequantize(const uint8_t *Bq, int64_t K, int64_t c0, int64_t cw, float *restrict Bf) {
  int64_t pstride = circc_int8_groups(K) * CIRCC_INT8_BLOCK;
  for (int64_t p = 0; p < cw; p += 16) {
    const uint8_t *panel = Bq + (c0 + p) / 16 * pstride;
    int cols = (int)(cw - p < 16 ? cw - p : 16);
    for (int64_t k0 = 0; k0 < K; k0 += 32) {
      const uint8_t *b = panel + k0 / 32 * CIRCC_INT8_BLOCK;
      float s[16];
      for (int j = 0; j < 16; j++) {
        uint16_t h;
        memcpy(&h, b + 2 * j, 2);
        s[j] = circc_f16_float(h);
      }
      int kn = (int)(K - k0 < 32 ? K - k0 : 32);
      for (int i = 0; i < kn; i++) {
        const int8_t *q = (const int8_t *)(b + 32 + 16 * i);
        float *d = Bf + (k0 + i) * cw + p;
        if (cols == 16)
          for (int j = 0; j < 16; j++) d[j] = (float)q[j] * s[j];
        else
          for (int j = 0; j < cols; j++) d[j] = (float)q[j] * s[j];
      }
    }
  }
}

static inline void circc_int8_prefill(int64_t m0, int64_t m1, int64_t n0, int64_t n1, int64_t K, const float *A,
                                      int64_t a_m, int64_t a_k, const uint8_t *Bq, float *C, int64_t c_m,
                                      int64_t c_n, float *scratch) {
  int64_t cwmax = circc_gemm_int8_chunk(K);
  float *Bf = scratch, *rest = scratch + cwmax * K;
  for (int64_t c0 = n0; c0 < n1; c0 += cwmax) {
    int64_t cw = n1 - c0 < cwmax ? n1 - c0 : cwmax;
    circc_int8_dequantize(Bq, K, c0, cw, Bf);
    circc_gemm_f32_rows(m0, m1, cw, K, A, a_m, a_k, Bf, cw, 1, C + c0 * c_n, c_m, c_n, rest);
  }
}

/* ------------------------------------------------------------------ entry */

/* C rows [m0,m1), columns [n0,n1) (n0 % 16 == 0) of A times W' (the packed
 * Bq, circc_int8_block, K rows); overwrites C. decode: 1 for the decode
 * summation (the caller's step has 1-4 rows), 0 for the prefill one (see the
 * contract above). scratch: circc_gemm_int8_scratch_floats(decode, K)
 * floats, 64-byte aligned, private to the calling thread. */
CIRCC_INT8_API void circc_gemm_int8_rows(int decode, int64_t m0, int64_t m1, int64_t n0, int64_t n1, int64_t K,
                                         const float *A, int64_t a_m, int64_t a_k, const uint8_t *Bq, float *C,
                                         int64_t c_m, int64_t c_n, float *scratch) {
  if (m1 <= m0 || n1 <= n0) return;
  if (K <= 0) {
    for (int64_t m = m0; m < m1; m++)
      for (int64_t n = n0; n < n1; n++) C[m * c_m + n * c_n] = 0.0f;
    return;
  }
  if (decode) circc_int8_decode(m0, m1, n0, n1, K, A, a_m, a_k, Bq, C, c_m, c_n);
  else circc_int8_prefill(m0, m1, n0, n1, K, A, a_m, a_k, Bq, C, c_m, c_n, scratch);
}

#endif /* CIRCC_GEMM_INT8_LAYOUT_ONLY */
#endif /* CIRCC_GEMM_INT8_H */
