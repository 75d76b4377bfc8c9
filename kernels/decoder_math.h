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

/* ---- attention in the CPU model's order (kernels/quant.h: llama.cpp's "gemm" order for a token
 * of a multi-token chunk of its sequence, "gemv" for a sequence's lone token) ---- */

/* The 16-lane tree: l + l+8, then + 4, then (0+2) + (1+3). */
QM_HD float qm_reduce16(const float *a)
{
    float b[8], c[4];
    for (int l = 0; l < 8; l++) b[l] = a[l] + a[l + 8];
    for (int l = 0; l < 4; l++) c[l] = b[l] + b[l + 4];
    return (c[0] + c[2]) + (c[1] + c[3]);
}

/* Dot of two fp16 rows in the gemm (gemv = 0, n % 16 == 0) or gemv order (quant_dot_f16_order):
 * one thread per key row on the device. Each accumulator's chain runs over its elements in
 * increasing order, as the reference's; the loops are shaped so the indices are constants. */
QM_HD float qm_dot_f16_order(const uint16_t *x, const uint16_t *y, int n, int gemv)
{
    float acc[4][16];
QM_UNROLL
    for (int a = 0; a < 4; a++)
QM_UNROLL
        for (int l = 0; l < 16; l++) acc[a][l] = 0.0f;
    if (!gemv && n % 16 == 0) {
        for (int i0 = 0; i0 < n; i0 += 16)
QM_UNROLL
            for (int l = 0; l < 16; l++) acc[0][l] = fmaf(qm_h2f(x[i0 + l]), qm_h2f(y[i0 + l]), acc[0][l]);
        return qm_reduce16(acc[0]);
    }
    int np = n & ~63;
    for (int i0 = 0; i0 < np; i0 += 64)
QM_UNROLL
        for (int a = 0; a < 4; a++)
QM_UNROLL
            for (int l = 0; l < 16; l++) acc[a][l] = fmaf(qm_h2f(x[i0 + 16 * a + l]), qm_h2f(y[i0 + 16 * a + l]), acc[a][l]);
QM_UNROLL
    for (int l = 0; l < 16; l++) acc[0][l] = (acc[0][l] + acc[2][l]) + (acc[1][l] + acc[3][l]);
    double s = (double)qm_reduce16(acc[0]);
    for (int i = np; i < n; i++) s += (double)(qm_h2f(x[i]) * qm_h2f(y[i]));
    return (float)s;
}

/* The softmax's exp of one 16-position chunk (positions i0.. i0+15 below n, the rest padding):
 * y = vexpf(x - max), returns the chunk's tree sum (quant_softmax_exp_row adds them in double). */
QM_HD float qm_softmax_chunk(float *y, const float *x, float max, int i0, int n)
{
    float lane[16];
    for (int l = 0; l < 16; l++) lane[l] = i0 + l < n ? (y[i0 + l] = qm_vexpf(x[i0 + l] - max)) : 0.0f;
    return qm_reduce16(lane);
}

/* Lane l (0..15) of output dimension d of P.V (quant_attn_pv): the fused chain over positions
 * p = l (mod 16), in 4 accumulators by (p / 16) % 4 (gemv) or 1, folded as the reference folds
 * them. VROW(p) is V's row of position p, PROB(p) its probability (an fp16 value, as float). */
#define QM_PV_LANE(out, l, d, n, gemv, PROB, VROW)                                                  \
    do {                                                                                            \
        float a_[4] = {0.0f, 0.0f, 0.0f, 0.0f};                                                     \
        for (int p0_ = 0; p0_ < (n); p0_ += 64) {                                                   \
            QM_UNROLL for (int k_ = 0; k_ < 4; k_++) {                                      \
                int p_ = p0_ + 16 * k_ + (l);                                                       \
                if (p_ < (n)) {                                                                     \
                    float v_ = qm_h2f((VROW(p_))[d]);                                               \
                    if (gemv) a_[k_] = fmaf(v_, PROB(p_), a_[k_]);                                  \
                    else a_[0] = fmaf(v_, PROB(p_), a_[0]);                                         \
                }                                                                                   \
            }                                                                                       \
        }                                                                                           \
        (out) = (gemv) ? (a_[0] + a_[2]) + (a_[1] + a_[3]) : a_[0];                                 \
    } while (0)

#endif
