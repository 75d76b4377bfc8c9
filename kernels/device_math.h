/* device_math.h: scalar math shared by the CUDA kernels (kernels/cuda/) and the host, written
 * once as __host__ __device__ functions so the CPU tests check exactly what the GPU computes
 * against the plain-C references (kernels/cpu/ops_ref.c). Plain C11 when not compiled by nvcc.
 * Must not include a CUDA header, allocate or keep state. */
#ifndef WEAVER_DEVICE_MATH_H
#define WEAVER_DEVICE_MATH_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#ifdef __CUDACC__
#define DEVM_HD __host__ __device__ __forceinline__
#else
#define DEVM_HD static inline
#endif

/* GELU, erf form, exactly as the model (and gelu_ref) computes it: 0.5 x (1 + erf(x / sqrt 2)). */
DEVM_HD float devm_gelu(float x)
{
    return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f));
}

/* LayerNorm's per-element step once mean and 1 / sqrt(var + eps) of the row are known. */
DEVM_HD float devm_layernorm_apply(float x, float mean, float rstd, float w, float b)
{
    return (x - mean) * rstd * w + b;
}

DEVM_HD float devm_rstd(float var, float eps)
{
    return 1.0f / sqrtf(var + eps);
}

/* Online softmax: a running maximum m and sum l of exp(s - m) over the scores seen so far. A new
 * block with maximum m2 and sum l2 (taken against m2) merges in; the caller rescales its running
 * weighted sum of values by the returned factor exp(m_old - m_new). */
DEVM_HD float devm_softmax_merge(float *m, float *l, float m2, float l2)
{
    float mn = fmaxf(*m, m2);
    float a = expf(*m - mn), c = expf(m2 - mn);
    *l = *l * a + l2 * c;
    *m = mn;
    return a;
}

/* F32 -> BF16, round to nearest even (NaN stays NaN). */
DEVM_HD uint16_t devm_f32_to_bf16(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40u);
    x += 0x7fffu + ((x >> 16) & 1u);
    return (uint16_t)(x >> 16);
}

/* Host-side serial forms of the kernels' row algorithms (float accumulation, the kernels' order
 * of operations up to the parallel reduction's association), for the tests. */
#ifndef __CUDACC__
/* out = LayerNorm(x + res) * w + b over one row, two passes in float, as the kernel does. */
static inline void devm_layernorm_row(float *out, const float *x, const float *res, const float *w, const float *b,
                                      int cols, float eps)
{
    float sum = 0.0f;
    for (int c = 0; c < cols; c++) sum += x[c] + (res ? res[c] : 0.0f);
    float mean = sum / (float)cols, var = 0.0f;
    for (int c = 0; c < cols; c++) {
        float d = x[c] + (res ? res[c] : 0.0f) - mean;
        var += d * d;
    }
    float rstd = devm_rstd(var / (float)cols, eps);
    for (int c = 0; c < cols; c++) out[c] = devm_layernorm_apply(x[c] + (res ? res[c] : 0.0f), mean, rstd, w[c], b[c]);
}

/* One query row of attention over n keys in blocks of `block` keys, as the kernel walks them:
 * per block the scores' maximum and sum, merged into the running state with devm_softmax_merge. */
static inline void devm_attention_row(float *ctx, const float *q, const float *k, const float *v, int ld, int n, int d,
                                      float scale, int block)
{
    float m = -INFINITY, l = 0.0f, acc[128] = {0};
    for (int j0 = 0; j0 < n; j0 += block) {
        int j1 = j0 + block < n ? j0 + block : n;
        float s[64], m2 = -INFINITY, l2 = 0.0f;
        for (int j = j0; j < j1; j++) {
            float dot = 0.0f;
            for (int e = 0; e < d; e++) dot += q[e] * k[(size_t)j * ld + e];
            s[j - j0] = dot * scale;
            m2 = fmaxf(m2, s[j - j0]);
        }
        for (int j = j0; j < j1; j++) {
            s[j - j0] = expf(s[j - j0] - m2);
            l2 += s[j - j0];
        }
        float keep = devm_softmax_merge(&m, &l, m2, l2), c = expf(m2 - m);
        for (int e = 0; e < d; e++) {
            float add = 0.0f;
            for (int j = j0; j < j1; j++) add += s[j - j0] * v[(size_t)j * ld + e];
            acc[e] = acc[e] * keep + add * c;
        }
    }
    for (int e = 0; e < d; e++) ctx[e] = acc[e] / l;
}
#endif

#endif
