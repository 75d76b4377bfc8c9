/* gemm_pack.h: packing of activation rows for the SIMD SGEMM kernels, shared by gemm_avx2.c and
 * gemm_avx512.c (SSE only, so it compiles under either's flags). Included by those two files
 * alone; each passes its register-tile height as the compile-time constant `mr`. */
#ifndef WEAVER_GEMM_PACK_H
#define WEAVER_GEMM_PACK_H

#include <immintrin.h>
#include <stddef.h>

/* ap[r0 / mr][kk][mr] = a[r0 + r][kk], rows past mc zero; 4 x 4 blocks are transposed in
 * registers, the ragged edges copied one value at a time. */
static inline __attribute__((always_inline)) void gemm_pack_a(float *ap, const float *a, int lda, int mc, int kc,
                                                              const int mr)
{
    for (int r0 = 0; r0 < mc; r0 += mr) {
        float *d = ap + (size_t)r0 * kc;
        int rows = mc - r0 < mr ? mc - r0 : mr, r = 0;
        for (; r + 4 <= rows; r += 4) {
            const float *s0 = a + (size_t)(r0 + r) * lda, *s1 = s0 + lda, *s2 = s1 + lda, *s3 = s2 + lda;
            int kk = 0;
            for (; kk + 4 <= kc; kk += 4) {
                __m128 x0 = _mm_loadu_ps(s0 + kk), x1 = _mm_loadu_ps(s1 + kk), x2 = _mm_loadu_ps(s2 + kk),
                       x3 = _mm_loadu_ps(s3 + kk);
                _MM_TRANSPOSE4_PS(x0, x1, x2, x3);
                _mm_storeu_ps(d + (size_t)kk * mr + r, x0);
                _mm_storeu_ps(d + (size_t)(kk + 1) * mr + r, x1);
                _mm_storeu_ps(d + (size_t)(kk + 2) * mr + r, x2);
                _mm_storeu_ps(d + (size_t)(kk + 3) * mr + r, x3);
            }
            for (; kk < kc; kk++) {
                d[(size_t)kk * mr + r] = s0[kk];
                d[(size_t)kk * mr + r + 1] = s1[kk];
                d[(size_t)kk * mr + r + 2] = s2[kk];
                d[(size_t)kk * mr + r + 3] = s3[kk];
            }
        }
        for (; r < rows; r++) {
            const float *s = a + (size_t)(r0 + r) * lda;
            for (int kk = 0; kk < kc; kk++) d[(size_t)kk * mr + r] = s[kk];
        }
        for (; r < mr; r++)
            for (int kk = 0; kk < kc; kk++) d[(size_t)kk * mr + r] = 0.0f;
    }
}

#endif
