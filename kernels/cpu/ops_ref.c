/* ops_ref.c: plain-C reference kernels: the specification the SIMD variants are tested against.
 * Written for clarity, in double where it costs nothing; must not use intrinsics. */
#include "kernels/cpu_ops.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

static void layernorm_ref(float *out, const float *x, const float *w, const float *b,
                          int rows, int cols, float eps)
{
    for (int r = 0; r < rows; r++) {
        const float *xr = x + (size_t)r * cols;
        float *o = out + (size_t)r * cols;
        double mean = 0.0, var = 0.0;
        for (int c = 0; c < cols; c++) mean += xr[c];
        mean /= cols;
        for (int c = 0; c < cols; c++) {
            double d = xr[c] - mean;
            var += d * d;
        }
        var /= cols;
        float rstd = (float)(1.0 / sqrt(var + eps));
        for (int c = 0; c < cols; c++) o[c] = ((float)(xr[c] - mean)) * rstd * w[c] + b[c];
    }
}

static void gelu_ref(float *x, size_t n)
{
    for (size_t i = 0; i < n; i++) x[i] = 0.5f * x[i] * (1.0f + erff(x[i] * 0.70710678118654752f));
}

static void softmax_ref(float *x, int rows, int cols, int ld)
{
    for (int r = 0; r < rows; r++) {
        float *xr = x + (size_t)r * ld;
        float mx = -INFINITY;
        for (int c = 0; c < cols; c++) mx = xr[c] > mx ? xr[c] : mx;
        double sum = 0.0;
        for (int c = 0; c < cols; c++) {
            xr[c] = expf(xr[c] - mx);
            sum += xr[c];
        }
        float inv = (float)(1.0 / sum);
        for (int c = 0; c < cols; c++) xr[c] *= inv;
    }
}

static void add_bias_ref(float *out, const float *a, const float *bias, const float *res,
                         int rows, int cols)
{
    for (int r = 0; r < rows; r++) {
        size_t o = (size_t)r * cols;
        for (int c = 0; c < cols; c++)
            out[o + c] = a[o + c] + bias[c] + (res ? res[o + c] : 0.0f);
    }
}

static void attention_ref(float *ctx, int ldc, const float *q, const float *k, const float *v, int ld,
                          int n, int d, float scale, float *scratch)
{
    float *p = scratch; /* n x n probabilities */
    for (int i = 0; i < n; i++) {
        for (int j = 0; j < n; j++) {
            double dot = 0.0;
            for (int e = 0; e < d; e++) dot += (double)q[(size_t)i * ld + e] * k[(size_t)j * ld + e];
            p[(size_t)i * n + j] = (float)(dot * scale);
        }
    }
    softmax_ref(p, n, n, n);
    for (int i = 0; i < n; i++) {
        for (int e = 0; e < d; e++) {
            double acc = 0.0;
            for (int j = 0; j < n; j++) acc += (double)p[(size_t)i * n + j] * v[(size_t)j * ld + e];
            ctx[(size_t)i * ldc + e] = (float)acc;
        }
    }
}

/* Shared with the SIMD tables for head sizes their kernels do not cover. */
void cpu_attention_ref(float *ctx, int ldc, const float *q, const float *k, const float *v, int ld, int n, int d,
                       float scale, float *scratch)
{
    attention_ref(ctx, ldc, q, k, v, ld, n, d, scale, scratch);
}

static const CpuOps ops_ref = {
    .isa = "ref",
    .layernorm = layernorm_ref,
    .gelu = gelu_ref,
    .softmax = softmax_ref,
    .add_bias = add_bias_ref,
    .attention = attention_ref,
};

const CpuOps *cpu_ops_ref(void) { return &ops_ref; }

float cpu_f16_to_f32(unsigned short h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ffu, bits;
    if (exp == 0) {
        if (man == 0) {
            bits = sign;
        } else { /* subnormal: renormalise */
            int e = -1;
            do { e++; man <<= 1; } while (!(man & 0x400u));
            bits = sign | ((uint32_t)(127 - 15 - e) << 23) | ((man & 0x3ffu) << 13);
        }
    } else if (exp == 31) {
        bits = sign | 0x7f800000u | (man << 13);
    } else {
        bits = sign | ((exp + 127 - 15) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

unsigned short cpu_f32_to_f16(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000u;
    uint32_t ax = x & 0x7fffffffu;
    if (ax >= 0x7f800000u) /* inf or nan */
        return (unsigned short)(sign | 0x7c00u | (ax > 0x7f800000u ? 0x200u : 0));
    if (ax >= 0x477ff000u) /* rounds to >= 65520: overflow to inf */
        return (unsigned short)(sign | 0x7c00u);
    if (ax < 0x38800000u) { /* subnormal half (or zero) */
        if (ax < 0x33000000u) return (unsigned short)sign; /* < 2^-25: rounds to 0 */
        uint32_t man = (ax & 0x7fffffu) | 0x800000u;
        int shift = 126 - (int)(ax >> 23); /* 14..24 */
        uint32_t half = man >> shift, rem = man & ((1u << shift) - 1), mid = 1u << (shift - 1);
        if (rem > mid || (rem == mid && (half & 1))) half++;
        return (unsigned short)(sign | half);
    }
    uint32_t half = ((ax >> 13) - ((127 - 15) << 10));
    uint32_t rem = ax & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (half & 1))) half++;
    return (unsigned short)(sign | half);
}

float cpu_bf16_to_f32(unsigned short h)
{
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}
