/* gemm_lowp_ref.c: weight packing for the reduced-precision GEMMs (bf16, int8), the activation
 * quantiser they share, the plain-C reference GEMMs (the specification the AVX-512 variant is
 * tested against) and the run-time choice of variant. Compiled without ISA flags: it must not
 * execute SIMD variant code itself. Written for clarity; must not use intrinsics. */
#include "kernels/gemm.h"
#include "kernels/cpu/gemm_lowp.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/quant.h"

const char *gemm_precision_name(GemmPrecision p)
{
    return p == GEMM_BF16 ? "bf16" : p == GEMM_INT8 ? "int8" : "fp32";
}

static size_t panels(int n) { return ((size_t)n + GEMM_NR - 1) / GEMM_NR; }

size_t gemm_lowp_packed_bytes(GemmPrecision p, int n, int k)
{
    if (p == GEMM_BF16) return panels(n) * GEMM_LOWP_PAIRS(k) * GEMM_NR * 2 * sizeof(uint16_t);
    if (p == GEMM_INT8) return GEMM_Q8_DATA_BYTES(n, k) + panels(n) * GEMM_NR * (sizeof(float) + sizeof(int32_t));
    return gemm_packed_floats(n, k) * sizeof(float);
}

void gemm_lowp_pack(GemmPrecision p, void *dst, const float *w, int ldw, int n, int k)
{
    if (p == GEMM_FP32) {
        gemm_pack(dst, w, ldw, n, k);
        return;
    }
    if (p == GEMM_BF16) {
        size_t kp = GEMM_LOWP_PAIRS(k);
        for (size_t pn = 0; pn < panels(n); pn++) {
            uint16_t *d = (uint16_t *)dst + pn * kp * GEMM_NR * 2;
            for (size_t q = 0; q < kp; q++)
                for (int j = 0; j < GEMM_NR; j++)
                    for (int e = 0; e < 2; e++) {
                        int row = (int)pn * GEMM_NR + j, kk = (int)q * 2 + e;
                        float v = row < n && kk < k ? w[(size_t)row * ldw + kk] : 0.0f;
                        d[(q * GEMM_NR + j) * 2 + e] = quant_f32_to_bf16(v);
                    }
        }
        return;
    }
    size_t kq = GEMM_LOWP_QUADS(k);
    float *scale = (float *)((char *)dst + GEMM_Q8_DATA_BYTES(n, k));
    int32_t *sum = (int32_t *)(scale + panels(n) * GEMM_NR);
    for (size_t row = 0; row < panels(n) * GEMM_NR; row++) {
        const float *wr = (int)row < n ? w + row * ldw : NULL;
        float mx = 0.0f;
        for (int kk = 0; wr && kk < k; kk++) mx = fmaxf(mx, fabsf(wr[kk]));
        float s = mx > 0.0f ? mx / 127.0f : 1.0f, inv = 1.0f / s;
        int8_t *d = (int8_t *)dst + (row / GEMM_NR) * kq * GEMM_NR * 4 + (row % GEMM_NR) * 4;
        int32_t total = 0;
        for (size_t kk = 0; kk < kq * 4; kk++) {
            float v = wr && (int)kk < k ? nearbyintf(wr[kk] * inv) : 0.0f;
            int q = v > 127.0f ? 127 : v < -127.0f ? -127 : (int)v;
            d[(kk / 4) * GEMM_NR * 4 + kk % 4] = (int8_t)q;
            total += q;
        }
        scale[row] = s;
        sum[row] = total;
    }
}

void gemm_q8_range_params(float mn, float mx, float *t, int32_t *z)
{
    mn = fminf(mn, 0.0f); /* 0 stays exactly representable (it is z) */
    mx = fmaxf(mx, 0.0f);
    float step = mx > mn ? (mx - mn) / 255.0f : 1.0f;
    float zf = nearbyintf(-mn * (1.0f / step));
    *t = step;
    *z = zf < 0.0f ? 0 : zf > 255.0f ? 255 : (int32_t)zf;
}

void gemm_q8_row_params(const float *a, int k, float *t, int32_t *z)
{
    float mn = 0.0f, mx = 0.0f;
    for (int kk = 0; kk < k; kk++) {
        mn = fminf(mn, a[kk]);
        mx = fmaxf(mx, a[kk]);
    }
    gemm_q8_range_params(mn, mx, t, z);
}

uint8_t gemm_q8_quantize(float v, float inv, int32_t z)
{
    float q = nearbyintf(v * inv) + (float)z;
    return (uint8_t)(q < 0.0f ? 0.0f : q > 255.0f ? 255.0f : q);
}

/* The epilogue on one output value, shared by both references. */
static float epilogue(float v, int i, int j, const GemmEpilogue *ep)
{
    if (ep && ep->bias) v += ep->bias[j];
    if (ep && ep->res) v += ep->res[(size_t)i * ep->ldres + j];
    if (ep && ep->gelu) v = 0.5f * v * (1.0f + erff(v * 0.70710678118654752f));
    return v;
}

static void gemm_bf16_ref(float *c, int ldc, const float *a, int lda, const void *wp, int m, int n, int k,
                          const GemmEpilogue *ep, float *work)
{
    (void)work;
    const uint16_t *w = wp;
    size_t kp = GEMM_LOWP_PAIRS(k);
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            const uint16_t *panel = w + (size_t)(j / GEMM_NR) * kp * GEMM_NR * 2 + (size_t)(j % GEMM_NR) * 2;
            double acc = 0.0; /* bf16 x bf16 is exact in F32; only the sum rounds */
            for (int kk = 0; kk < k; kk++) {
                float x = quant_bf16_to_f32(quant_f32_to_bf16(a[(size_t)i * lda + kk]));
                acc += (double)x * quant_bf16_to_f32(panel[(size_t)(kk / 2) * GEMM_NR * 2 + kk % 2]);
            }
            c[(size_t)i * ldc + j] = epilogue((float)acc, i, j, ep);
        }
}

static void gemm_int8_ref(float *c, int ldc, const float *a, int lda, const void *wp, int m, int n, int k,
                          const GemmEpilogue *ep, float *work)
{
    (void)work;
    size_t kq = GEMM_LOWP_QUADS(k);
    const int8_t *w = wp;
    const float *scale = (const float *)((const char *)wp + GEMM_Q8_DATA_BYTES(n, k));
    const int32_t *sum = (const int32_t *)(scale + panels(n) * GEMM_NR);
    for (int i = 0; i < m; i++) {
        const float *ar = a + (size_t)i * lda;
        float t;
        int32_t z;
        gemm_q8_row_params(ar, k, &t, &z);
        for (int j = 0; j < n; j++) {
            const int8_t *panel = w + (size_t)(j / GEMM_NR) * kq * GEMM_NR * 4 + (size_t)(j % GEMM_NR) * 4;
            int64_t acc = 0;
            for (int kk = 0; kk < k; kk++)
                acc += (int64_t)gemm_q8_quantize(ar[kk], 1.0f / t, z) * panel[(size_t)(kk / 4) * GEMM_NR * 4 + kk % 4];
            float v = (float)(acc - (int64_t)z * sum[j]) * (t * scale[j]);
            c[(size_t)i * ldc + j] = epilogue(v, i, j, ep);
        }
    }
}

static const GemmLowpOps lowp_ref[] = {
    {.isa = "ref", .prec = GEMM_BF16, .gemm = gemm_bf16_ref},
    {.isa = "ref", .prec = GEMM_INT8, .gemm = gemm_int8_ref},
};

const GemmLowpOps *gemm_lowp_ref(GemmPrecision p)
{
    return p == GEMM_BF16 ? &lowp_ref[0] : p == GEMM_INT8 ? &lowp_ref[1] : NULL;
}

const GemmLowpOps *gemm_lowp_avx512_table(GemmPrecision p);

const GemmLowpOps *gemm_lowp_ops(GemmPrecision p)
{
    const char *force = getenv("WEAVER_CPU_ISA");
    if (p == GEMM_FP32 || (force && strcmp(force, "avx512") != 0) || !gemm_ops_avx512()) return NULL;
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("avx512bw") || !__builtin_cpu_supports("avx512vl")) return NULL;
    if (p == GEMM_BF16 && __builtin_cpu_supports("avx512bf16")) return gemm_lowp_avx512_table(p);
    if (p == GEMM_INT8 && __builtin_cpu_supports("avx512vnni")) return gemm_lowp_avx512_table(p);
#endif
    return NULL;
}
