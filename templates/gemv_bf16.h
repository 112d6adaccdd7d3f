/* gemv_bf16.h — templates/gemm_f32.h's two decode kernels with B stored as
 * bf16 (uint16_t, the top half of an fp32): circc --precision bf16 and int8
 * keep a float32 input that only these kernels read (a decode program's past
 * keys and values) as bf16, so each run reads half its bytes. Include after
 * gemm_f32.h: the kernels are that header's, with B's element type a literal
 * (CIRCC_B_BF16) where the fp32 entries pass CIRCC_B_F32, so a bf16 B gives
 * bit for bit the fp32 result on the fp32 values of B (that is, on B rounded
 * to bf16):
 *  - circc_gemv_bf16b is circc_gemv_f32 (circc_gemv_dot's order, the column
 *    mask) with bf16 columns;
 *  - circc_gemm_bf16b_rows is circc_gemm_f32_rows for at most 4 rows with
 *    unit-stride B rows (the streaming path, which skips the B rows whose one
 *    coefficient is 0); in portable builds, the packed path with the panels
 *    converted to fp32, the same micro-kernel and so the same bits.
 * AVX-512 and AVX2 give the same bits, as gemm_f32.h's do. */
#ifndef CIRCC_GEMV_BF16_H
#define CIRCC_GEMV_BF16_H
#include <stdint.h>
#include "gemm_f32.h"

/* circc_gemv_f32 with B's columns in bf16 (column n at B + n*b_n, K
 * contiguous values): the same columns skipped by the mask, the same sums. */
CIRCC_GEMM_API void circc_gemv_bf16b(int64_t N, int64_t K, const float *a, const uint16_t *B, int64_t b_n, float *y,
                                     int64_t c_n, const float *mask, int64_t mask_n) {
  circc_gemv_bt(CIRCC_B_BF16, N, K, a, B, b_n, y, c_n, mask, mask_n);
}

#if CIRCC_GEMM_VL == 0
/* Portable: circc_gemm_packed's loop with each B panel converted to fp32 as
 * it is packed, through the same micro-kernel (so the same contraction of
 * a*b+c, the same bits). */
static inline void circc_gemm_packed_b16(int64_t m0, int64_t m1, int64_t N, int64_t K, const float *A, int64_t a_m,
                                         int64_t a_k, const uint16_t *B, int64_t b_k, float *C, int64_t c_m,
                                         int64_t c_n, float *scratch) {
  int64_t kcmax = (circc_gemm_min(K, CIRCC_GEMM_KC) + 15) / 16 * 16;
  float *Ap = scratch, *Bp = scratch + CIRCC_GEMM_MCP * kcmax;
  for (int64_t pc = 0; pc < K; pc += CIRCC_GEMM_KC) {
    int64_t kb = circc_gemm_min(CIRCC_GEMM_KC, K - pc);
    int first = pc == 0;
    circc_gemm_pack(Ap, CIRCC_GEMM_MR, A + m0 * a_m + pc * a_k, a_m, a_k, (int)(m1 - m0), kb);
    for (int64_t jc = 0; jc < N; jc += CIRCC_GEMM_NR) {
      int cols = (int)circc_gemm_min(CIRCC_GEMM_NR, N - jc);
      for (int64_t k = 0; k < kb; k++)
        for (int j = 0; j < CIRCC_GEMM_NR; j++)
          Bp[k * CIRCC_GEMM_NR + j] = j < cols ? circc_b16f(B[(pc + k) * b_k + jc + j]) : 0.0f;
      circc_gemm_kernel((int)(m1 - m0), kb, Ap, Bp, C + jc * c_n + m0 * c_m, c_m, c_n, cols, first);
    }
  }
}
#endif

/* circc_gemm_f32_rows for rows [m0,m1) (at most CIRCC_GEMM_SR = 4 of them),
 * with B's rows (row k at B + k*b_k, N unit-stride bf16 values) in bf16: C
 * [m*c_m + n*c_n] = sum_k A[m*a_m + k*a_k] * B[k*b_k + n], overwritten.
 * scratch: circc_gemm_scratch_floats(N, K) floats, 64-byte aligned, private
 * to the calling thread. */
CIRCC_GEMM_API void circc_gemm_bf16b_rows(int64_t m0, int64_t m1, int64_t N, int64_t K, const float *A, int64_t a_m,
                                          int64_t a_k, const uint16_t *B, int64_t b_k, float *C, int64_t c_m,
                                          int64_t c_n, float *scratch) {
  if (m1 <= m0 || N <= 0) return;
  if (K <= 0) {
    for (int64_t m = m0; m < m1; m++)
      for (int64_t n = 0; n < N; n++) C[m * c_m + n * c_n] = 0.0f;
    return;
  }
#if CIRCC_GEMM_VL > 0
  switch (m1 - m0) {
  case 1: circc_gemm_stream_bt(1, CIRCC_B_BF16, m0, N, K, A, a_m, a_k, B, b_k, C, c_m, c_n, scratch); return;
  case 2: circc_gemm_stream_bt(2, CIRCC_B_BF16, m0, N, K, A, a_m, a_k, B, b_k, C, c_m, c_n, scratch); return;
  case 3: circc_gemm_stream_bt(3, CIRCC_B_BF16, m0, N, K, A, a_m, a_k, B, b_k, C, c_m, c_n, scratch); return;
  default: circc_gemm_stream_bt(4, CIRCC_B_BF16, m0, N, K, A, a_m, a_k, B, b_k, C, c_m, c_n, scratch); return;
  }
#else
  circc_gemm_packed_b16(m0, m1, N, K, A, a_m, a_k, B, b_k, C, c_m, c_n, scratch);
#endif
}

#endif /* CIRCC_GEMV_BF16_H */
