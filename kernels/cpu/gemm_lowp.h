/* gemm_lowp.h: what the reduced-precision GEMMs' reference (gemm_lowp_ref.c) and AVX-512 variant
 * (gemm_lowp_avx512.c) share: the packed layout's sizes and the int8 activation quantiser, which
 * both must apply identically. Included by those two files alone. */
#ifndef WEAVER_GEMM_LOWP_H
#define WEAVER_GEMM_LOWP_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/gemm.h"

#define GEMM_LOWP_PAIRS(k) (((size_t)(k) + 1) / 2) /* bf16: k in pairs, zero-padded */
#define GEMM_LOWP_QUADS(k) (((size_t)(k) + 3) / 4) /* int8: k in quads, zero-padded */
/* int8: bytes of the quads before the per-row scales and sums */
#define GEMM_Q8_DATA_BYTES(n, k) ((((size_t)(n) + GEMM_NR - 1) / GEMM_NR) * GEMM_LOWP_QUADS(k) * GEMM_NR * 4)

/* A row's asymmetric u8 quantisation: step t (> 0) and zero point z (the code of 0.0), over a
 * range that always includes 0. */
void gemm_q8_row_params(const float *a, int k, float *t, int32_t *z);
/* The same from the row's min and max (a SIMD variant finds those itself). */
void gemm_q8_range_params(float mn, float mx, float *t, int32_t *z);
/* One value's code: round-to-nearest-even(v * inv) + z, clamped to [0, 255]; inv = 1 / t. */
uint8_t gemm_q8_quantize(float v, float inv, int32_t z);

#endif
