/* decoder_math.h: the decoder layer's scalar math shared by the CUDA decoder kernels and the host
 * (__host__ __device__), in llama.cpp's order as the CPU model computes it (kernels/quant.h,
 * engine/decode/model.c): the vector exp used for softmax and SiLU, SwiGLU's element, RoPE's
 * rotation of one pair, RMSNorm's scale. Tested against the plain-C references in
 * tests/unit/test_kernels_quant_math.c. Plain C11 when not compiled by nvcc; no state. */
#ifndef WEAVER_DECODER_MATH_H
#define WEAVER_DECODER_MATH_H

#include <math.h>

#include "kernels/quant_math.h"

/* llama.cpp's vector exp (quant_vexpf_ref): round-to-nearest n = x*log2(e), two-part ln2
 * reduction, degree-5 polynomial, exact scaling by 2^n. */
QM_HD float qm_vexpf(float x)
{
    const float shift = 0x1.8p23f;
    float z = fmaf(x, 0x1.715476p+0f, shift);
    float n = z - shift;
    float b = fmaf(-n, 0x1.7f7d1cp-20f, fmaf(-n, 0x1.62e4p-1f, x));
    float u = b * b;
    float j = fmaf(fmaf(fmaf(0x1.0e4020p-7f, b, 0x1.573e2ep-5f), u, fmaf(0x1.555e66p-3f, b, 0x1.fffdb6p-2f)), u,
                   fmaf(0x1.ffffecp-1f, b, 1.0f));
    if (fabsf(n) > 192.0f) return n <= 0.0f ? 0.0f : INFINITY;
    return ldexpf(j, (int)n);
}

/* SwiGLU's element in the vector part of a row (quant_swiglu_row's first n & ~15 elements). */
QM_HD float qm_swiglu(float gate, float up) { return gate / (1.0f + qm_vexpf(0.0f - gate)) * up; }

/* RoPE on the pair (x0, x1) with cos c and sin s, fused as the CPU model (llama.cpp's build)
 * rounds: one rounding for x0*c, one for x1*s. Needs --fmad=false in CUDA files that use it. */
QM_HD void qm_rope_pair(float *x0, float *x1, float c, float s)
{
    float a = *x0, b = *x1;
    *x0 = fmaf(a, c, -(b * s));
    *x1 = fmaf(s, a, b * c);
}

/* RMSNorm's scale from the sum of squares (squared in float, summed in double). */
QM_HD float qm_rms_scale(double sumsq, int n, float eps) { return 1.0f / sqrtf((float)(sumsq / n) + eps); }

#endif
