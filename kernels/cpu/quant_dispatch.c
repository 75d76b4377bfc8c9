/* quant_dispatch.c: picks the row dot product for a tensor type and ISA at run time
 * (__builtin_cpu_supports). WEAVER_QUANT_ISA=ref forces the plain-C reference, for checks. */
#include "kernels/quant.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

QuantIsa quant_best_isa(void) {
    static int cached = -2;
    if (cached == -2) {
        const char *env = getenv("WEAVER_QUANT_ISA");
        __builtin_cpu_init();
        if (env && strcmp(env, "ref") == 0)
            cached = QUANT_ISA_REF;
        else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
            cached = QUANT_ISA_AVX2;
        else
            cached = QUANT_ISA_REF;
    }
    return (QuantIsa)cached;
}

const char *quant_isa_name(QuantIsa isa) {
    switch (isa) {
    case QUANT_ISA_REF: return "ref";
    case QUANT_ISA_AVX2: return "avx2";
    case QUANT_ISA_AVX512: return "avx512";
    default: return "best";
    }
}

QuantDotFn quant_dot_fn(int wtype, QuantIsa isa) {
    if (isa == QUANT_ISA_BEST) isa = quant_best_isa();
    if (isa == QUANT_ISA_AVX512) return NULL; /* no AVX-512 variants yet */
    int avx2 = isa == QUANT_ISA_AVX2;
    switch (wtype) {
    case QT_F32: return avx2 ? quant_dot_f32_avx2 : quant_dot_f32_ref;
    case QT_F16: return avx2 ? quant_dot_f16_avx2 : quant_dot_f16_ref;
    case QT_BF16: return avx2 ? quant_dot_bf16_avx2 : quant_dot_bf16_ref;
    case QT_Q4_0: return avx2 ? quant_dot_q4_0_avx2 : quant_dot_q4_0_ref;
    case QT_Q4_1: return avx2 ? quant_dot_q4_1_avx2 : quant_dot_q4_1_ref;
    case QT_Q8_0: return avx2 ? quant_dot_q8_0_avx2 : quant_dot_q8_0_ref;
    case QT_Q4_K: return avx2 ? quant_dot_q4_k_avx2 : quant_dot_q4_k_ref;
    case QT_Q5_K: return avx2 ? quant_dot_q5_k_avx2 : quant_dot_q5_k_ref;
    case QT_Q6_K: return avx2 ? quant_dot_q6_k_avx2 : quant_dot_q6_k_ref;
    default: return NULL;
    }
}

static float dot_f16f16_ref(const uint16_t *x, const uint16_t *y, int n) {
    float s = 0.0f;
    for (int i = 0; i < n; i++) s += quant_fp16_to_f32(x[i]) * quant_fp16_to_f32(y[i]);
    return s;
}

float quant_dot_f16f16(const uint16_t *x, const uint16_t *y, int n) {
    return quant_best_isa() == QUANT_ISA_AVX2 ? quant_dot_f16f16_avx2(x, y, n) : dot_f16f16_ref(x, y, n);
}

void quant_axpy_f16(float *y, float a, const uint16_t *x, int n) {
    if (quant_best_isa() == QUANT_ISA_AVX2) {
        quant_axpy_f16_avx2(y, a, x, n);
        return;
    }
    for (int i = 0; i < n; i++) y[i] += a * quant_fp16_to_f32(x[i]);
}

void quant_f32_to_fp16_row(uint16_t *dst, const float *src, int n) {
    if (quant_best_isa() == QUANT_ISA_AVX2) {
        quant_f32_to_fp16_row_avx2(dst, src, n);
        return;
    }
    for (int i = 0; i < n; i++) dst[i] = quant_f32_to_fp16(src[i]);
}

float quant_vexpf(float x) { return quant_vexpf_ref(x); }

/* 1 when quant_expf_row_avx2 agrees with this libm's expf on a 1-in-4099 sample of the float
 * bit patterns in [-104, 104] (~140k arguments, ~1 ms), both edges included. Checked once;
 * tests/unit/test_kernels_quant.c checks a denser sample. */
static int expf_vec_ok(void) {
    static int ok = -1;
    if (ok >= 0) return ok;
    if (quant_best_isa() != QUANT_ISA_AVX2) return ok = 0;
    enum { B = 1024 };
    float x[B], y[B];
    int n = 0, good = 1;
    const uint32_t big = 0x42d00000u; /* 104.0f */
    for (uint32_t s = 0; s < 2 && good; s++)
        for (uint32_t u = 0; good && u <= big; u = u + 4099 > big && u < big ? big : u + 4099) {
            uint32_t v = u | (s << 31);
            memcpy(&x[n++], &v, 4);
            if (n == B || u == big) {
                quant_expf_row_avx2(y, x, n);
                for (int i = 0; i < n; i++) {
                    float e = expf(x[i]);
                    good &= memcmp(&y[i], &e, 4) == 0;
                }
                n = 0;
            }
        }
    return ok = good;
}

void quant_expf_row(float *y, const float *x, int n) {
    if (expf_vec_ok())
        quant_expf_row_avx2(y, x, n);
    else
        for (int i = 0; i < n; i++) y[i] = expf(x[i]);
}

double quant_softmax_exp_row(float *y, const float *x, float max, int n) {
    return quant_best_isa() == QUANT_ISA_AVX2 ? quant_softmax_exp_row_avx2(y, x, max, n)
                                              : quant_softmax_exp_row_ref(y, x, max, n);
}

void quant_swiglu_row(float *y, const float *gate, const float *up, int n) {
    if (quant_best_isa() == QUANT_ISA_AVX2)
        quant_swiglu_row_avx2(y, gate, up, n);
    else
        quant_swiglu_row_ref(y, gate, up, n);
}

float quant_dot_f16_order(const uint16_t *x, const uint16_t *y, int n, int gemv) {
    return quant_best_isa() == QUANT_ISA_AVX2 ? quant_dot_f16_order_avx2(x, y, n, gemv)
                                              : quant_dot_f16_order_ref(x, y, n, gemv);
}

void quant_attn_pv(float *out, float *acc, const uint16_t *p16, const uint16_t *const *blk, size_t ld, int n, int hd,
                   int gemv) {
    if (quant_best_isa() == QUANT_ISA_AVX2)
        quant_attn_pv_avx2(out, acc, p16, blk, ld, n, hd, gemv);
    else
        quant_attn_pv_ref(out, acc, p16, blk, ld, n, hd, gemv);
}

/* The tile kernels need AVX-512 F/BW/VL + VNNI; WEAVER_QUANT_ISA=ref or =avx2 turns them off. */
/* 1 when the AVX-512 VNNI kernels may run (not capped by WEAVER_QUANT_ISA=ref/avx2). */
static int vnni_ok(void) {
    static int vnni = -1;
    if (vnni < 0) {
        const char *env = getenv("WEAVER_QUANT_ISA");
        __builtin_cpu_init();
        vnni = (!env || (strcmp(env, "ref") != 0 && strcmp(env, "avx2") != 0)) && __builtin_cpu_supports("avx512f") &&
               __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
               __builtin_cpu_supports("avx512vnni");
    }
    return vnni;
}

/* 1 when isa (or the best one) runs the VNNI matvec and tile kernels, which exist for Q4_1 and Q8_0. */
static int vnni_kernels(int wtype, QuantIsa isa) {
    if (isa == QUANT_ISA_BEST) isa = vnni_ok() ? QUANT_ISA_AVX512 : quant_best_isa();
    return isa == QUANT_ISA_AVX512 && vnni_ok() && (wtype == QT_Q4_1 || wtype == QT_Q8_0);
}

QuantMatvecFn quant_matvec_fn(int wtype, QuantIsa isa) {
    if (!vnni_kernels(wtype, isa)) return NULL;
    return wtype == QT_Q4_1 ? quant_matvec_q4_1_vnni : quant_matvec_q8_0_vnni;
}

void quant_matvec_prep(int wtype, void *vec, const void *act, int ncols) {
    quant_matvec_prep_vnni(wtype, vec, act, ncols);
}

QuantMatmulFn quant_matmul_fn(int wtype, QuantIsa isa) {
    if (!vnni_kernels(wtype, isa)) return NULL;
    return wtype == QT_Q4_1 ? quant_matmul_q4_1_vnni : quant_matmul_q8_0_vnni;
}

void quant_quantize_act(QuantType act, const float *x, void *dst, int n) {
    if (quant_best_isa() == QUANT_ISA_AVX2)
        quant_quantize_act_avx2(act, x, dst, n);
    else
        quant_quantize_act_ref(act, x, dst, n);
}

void quant_matmul_prep(int wtype, void *tile, const void *act, size_t act_stride, int ntok, int ncols) {
    quant_matmul_prep_vnni(wtype, tile, act, act_stride, ntok, ncols);
}

void quant_attn_scores(float *s, const uint16_t *q, const uint16_t *const *blk, size_t ld, int n, int hd, int gemv,
                       float scale) {
    if (quant_best_isa() == QUANT_ISA_AVX2)
        quant_attn_scores_avx2(s, q, blk, ld, n, hd, gemv, scale);
    else
        quant_attn_scores_ref(s, q, blk, ld, n, hd, gemv, scale);
}
