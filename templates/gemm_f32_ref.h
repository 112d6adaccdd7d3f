/* gemm_f32_ref.h — the naive twin of gemm_f32.h that tests compare against:
 * the same contract (rows [m0,m1), all N columns, any strides, C overwritten),
 * computed by a plain triple loop accumulating in double, rounded once. */
#ifndef CIRCC_GEMM_F32_REF_H
#define CIRCC_GEMM_F32_REF_H
#include <stdint.h>

#if defined(__GNUC__)
__attribute__((unused)) /* clang warns on unused static inline functions in a .c file */
#endif
static inline void circc_gemm_f32_ref(int64_t m0, int64_t m1, int64_t N, int64_t K, const float *A, int64_t a_m,
                                      int64_t a_k, const float *B, int64_t b_k, int64_t b_n, float *C, int64_t c_m,
                                      int64_t c_n) {
  for (int64_t m = m0; m < m1; m++)
    for (int64_t n = 0; n < N; n++) {
      double s = 0.0;
      for (int64_t k = 0; k < K; k++) s += (double)A[m * a_m + k * a_k] * (double)B[k * b_k + n * b_n];
      C[m * c_m + n * c_n] = (float)s;
    }
}

#endif /* CIRCC_GEMM_F32_REF_H */
