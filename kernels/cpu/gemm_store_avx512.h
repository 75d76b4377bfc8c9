/* gemm_store_avx512.h: the epilogue of one 32-column tile row, shared by the AVX-512 GEMMs
 * (gemm_avx512.c, gemm_lowp_avx512.c). Included by those files alone, under their AVX-512 flags. */
#ifndef WEAVER_GEMM_STORE_AVX512_H
#define WEAVER_GEMM_STORE_AVX512_H

#include <immintrin.h>
#include <stddef.h>

#include "kernels/cpu/ops_avx512_math.h"

/* Stores v0 | v1 (columns m0 | m1) into ci: on the first k block ci = v + bias + res (resi may be
 * NULL), on later ones ci += v; then GELU when gelu (only on the last k block). */
static inline __attribute__((always_inline)) void gemm_store_row(float *ci, __m512 v0, __m512 v1, __mmask16 m0,
                                                                 __mmask16 m1, int first, __m512 bias0,
                                                                 __m512 bias1, const float *resi, int gelu)
{
    if (first) {
        v0 = _mm512_add_ps(v0, bias0);
        v1 = _mm512_add_ps(v1, bias1);
        if (resi) {
            v0 = _mm512_add_ps(v0, _mm512_maskz_loadu_ps(m0, resi));
            v1 = _mm512_add_ps(v1, _mm512_maskz_loadu_ps(m1, resi + 16));
        }
    } else {
        v0 = _mm512_add_ps(v0, _mm512_maskz_loadu_ps(m0, ci));
        v1 = _mm512_add_ps(v1, _mm512_maskz_loadu_ps(m1, ci + 16));
    }
    if (gelu) {
        v0 = gelu16(v0);
        v1 = gelu16(v1);
    }
    _mm512_mask_storeu_ps(ci, m0, v0);
    _mm512_mask_storeu_ps(ci + 16, m1, v1);
}

#endif
