/* quant_ref.c: plain-C reference for every supported GGUF tensor type: type facts, fp16/bf16
 * conversion, dequantisation, activation quantisation (Q8_0/Q8_1/Q8_K) and row dot products.
 * These functions are the specification the SIMD variants are tested against; keep them
 * obvious rather than fast. No allocation, no I/O. */
#include "kernels/quant.h"

#include <math.h>
#include <string.h>

const char *quant_type_name(int type) {
    switch (type) {
    case QT_F32: return "F32";
    case QT_F16: return "F16";
    case QT_Q4_0: return "Q4_0";
    case QT_Q4_1: return "Q4_1";
    case 6: return "Q5_0";
    case 7: return "Q5_1";
    case QT_Q8_0: return "Q8_0";
    case QT_Q8_1: return "Q8_1";
    case 10: return "Q2_K";
    case 11: return "Q3_K";
    case QT_Q4_K: return "Q4_K";
    case QT_Q5_K: return "Q5_K";
    case QT_Q6_K: return "Q6_K";
    case QT_Q8_K: return "Q8_K";
    case QT_BF16: return "BF16";
    default: return "?";
    }
}

int quant_type_supported(int type) {
    switch (type) {
    case QT_F32: case QT_F16: case QT_BF16: case QT_Q4_0: case QT_Q4_1: case QT_Q8_0:
    case QT_Q4_K: case QT_Q5_K: case QT_Q6_K:
        return 1;
    default:
        return 0;
    }
}

int quant_block_elems(int type) {
    switch (type) {
    case QT_F32: case QT_F16: case QT_BF16: return 1;
    case QT_Q4_0: case QT_Q4_1: case QT_Q8_0: case QT_Q8_1: return QK_32;
    case QT_Q4_K: case QT_Q5_K: case QT_Q6_K: case QT_Q8_K: return QK_K;
    default: return 0;
    }
}

size_t quant_block_bytes(int type) {
    switch (type) {
    case QT_F32: return 4;
    case QT_F16: case QT_BF16: return 2;
    case QT_Q4_0: return sizeof(BlockQ4_0);
    case QT_Q4_1: return sizeof(BlockQ4_1);
    case QT_Q8_0: return sizeof(BlockQ8_0);
    case QT_Q8_1: return sizeof(BlockQ8_1);
    case QT_Q4_K: return sizeof(BlockQ4_K);
    case QT_Q5_K: return sizeof(BlockQ5_K);
    case QT_Q6_K: return sizeof(BlockQ6_K);
    case QT_Q8_K: return sizeof(BlockQ8_K);
    default: return 0;
    }
}

size_t quant_row_bytes(int type, int64_t n) {
    int be = quant_block_elems(type);
    if (be <= 0 || n < 0 || n % be) return 0;
    return (size_t)(n / be) * quant_block_bytes(type);
}

QuantType quant_act_type(int wtype) {
    switch (wtype) {
    case QT_Q4_0: case QT_Q8_0: return QT_Q8_0;
    case QT_Q4_1: return QT_Q8_1;
    case QT_Q4_K: case QT_Q5_K: case QT_Q6_K: return QT_Q8_K;
    case QT_BF16: return QT_BF16; /* activations rounded to bf16, as llama.cpp does */
    default: return QT_F32;
    }
}

float quant_fp16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t e = (h >> 10) & 0x1f, m = h & 0x3ff, x;
    if (e == 0) {
        float v = (float)m * (1.0f / 16777216.0f); /* subnormal: m * 2^-24 */
        memcpy(&x, &v, 4);
        x |= sign;
    } else if (e == 31) {
        x = sign | 0x7f800000u | (m << 13);
    } else {
        x = sign | ((e + 112) << 23) | (m << 13);
    }
    float f;
    memcpy(&f, &x, 4);
    return f;
}

uint16_t quant_f32_to_fp16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000;
    uint32_t ax = x & 0x7fffffffu;
    if (ax >= 0x7f800000u) return (uint16_t)(sign | 0x7c00 | (ax > 0x7f800000u ? 0x200 : 0));
    if (ax >= 0x477ff000u) return (uint16_t)(sign | 0x7c00); /* >= 65520 rounds to inf */
    if (ax < 0x38800000u) {                                   /* below 2^-14: subnormal half */
        float v;
        memcpy(&v, &ax, 4);
        return (uint16_t)(sign | (uint32_t)lrintf(v * 16777216.0f));
    }
    uint32_t h = ((((ax >> 23) - 112) << 10) | ((ax & 0x7fffff) >> 13));
    uint32_t rem = ax & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (h & 1))) h++;
    return (uint16_t)(sign | h);
}

uint16_t quant_f32_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 64); /* quiet NaN */
    return (uint16_t)((u + (0x7fffu + ((u >> 16) & 1))) >> 16);
}

float quant_bf16_to_f32(uint16_t h) {
    uint32_t x = (uint32_t)h << 16;
    float f;
    memcpy(&f, &x, 4);
    return f;
}

#define H2F(h) quant_fp16_to_f32(h)

static void k4_scale_min(int j, const uint8_t *q, int *sc, int *mn) {
    if (j < 4) {
        *sc = q[j] & 63;
        *mn = q[j + 4] & 63;
    } else {
        *sc = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
        *mn = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
}

void quant_dequant_row(int type, const void *src, float *y, int64_t n) {
    switch (type) {
    case QT_F32:
        memcpy(y, src, (size_t)n * 4);
        return;
    case QT_F16: {
        const uint16_t *s = src;
        for (int64_t i = 0; i < n; i++) y[i] = H2F(s[i]);
        return;
    }
    case QT_BF16: {
        const uint16_t *s = src;
        for (int64_t i = 0; i < n; i++) y[i] = quant_bf16_to_f32(s[i]);
        return;
    }
    case QT_Q4_0: {
        const BlockQ4_0 *b = src;
        for (int64_t i = 0; i < n / 32; i++, y += 32) {
            float d = H2F(b[i].d);
            for (int j = 0; j < 16; j++) {
                y[j] = ((b[i].qs[j] & 0xF) - 8) * d;
                y[j + 16] = ((b[i].qs[j] >> 4) - 8) * d;
            }
        }
        return;
    }
    case QT_Q4_1: {
        const BlockQ4_1 *b = src;
        for (int64_t i = 0; i < n / 32; i++, y += 32) {
            float d = H2F(b[i].d), m = H2F(b[i].m);
            for (int j = 0; j < 16; j++) {
                y[j] = (b[i].qs[j] & 0xF) * d + m;
                y[j + 16] = (b[i].qs[j] >> 4) * d + m;
            }
        }
        return;
    }
    case QT_Q8_0: {
        const BlockQ8_0 *b = src;
        for (int64_t i = 0; i < n / 32; i++, y += 32) {
            float d = H2F(b[i].d);
            for (int j = 0; j < 32; j++) y[j] = b[i].qs[j] * d;
        }
        return;
    }
    case QT_Q4_K: {
        const BlockQ4_K *b = src;
        for (int64_t i = 0; i < n / QK_K; i++) {
            float d = H2F(b[i].d), dmin = H2F(b[i].dmin);
            const uint8_t *q = b[i].qs;
            for (int c = 0; c < 4; c++, q += 32) {
                int sc1, m1, sc2, m2;
                k4_scale_min(2 * c, b[i].scales, &sc1, &m1);
                k4_scale_min(2 * c + 1, b[i].scales, &sc2, &m2);
                for (int l = 0; l < 32; l++) *y++ = d * sc1 * (q[l] & 0xF) - dmin * m1;
                for (int l = 0; l < 32; l++) *y++ = d * sc2 * (q[l] >> 4) - dmin * m2;
            }
        }
        return;
    }
    case QT_Q5_K: {
        const BlockQ5_K *b = src;
        for (int64_t i = 0; i < n / QK_K; i++) {
            float d = H2F(b[i].d), dmin = H2F(b[i].dmin);
            const uint8_t *q = b[i].qs, *qh = b[i].qh;
            for (int c = 0; c < 4; c++, q += 32) {
                int sc1, m1, sc2, m2;
                uint8_t u1 = (uint8_t)(1u << (2 * c)), u2 = (uint8_t)(2u << (2 * c));
                k4_scale_min(2 * c, b[i].scales, &sc1, &m1);
                k4_scale_min(2 * c + 1, b[i].scales, &sc2, &m2);
                for (int l = 0; l < 32; l++) *y++ = d * sc1 * ((q[l] & 0xF) + (qh[l] & u1 ? 16 : 0)) - dmin * m1;
                for (int l = 0; l < 32; l++) *y++ = d * sc2 * ((q[l] >> 4) + (qh[l] & u2 ? 16 : 0)) - dmin * m2;
            }
        }
        return;
    }
    case QT_Q6_K: {
        const BlockQ6_K *b = src;
        for (int64_t i = 0; i < n / QK_K; i++) {
            float d = H2F(b[i].d);
            for (int h = 0; h < 2; h++, y += 128) {
                const uint8_t *ql = b[i].ql + 64 * h, *qh = b[i].qh + 32 * h;
                const int8_t *sc = b[i].scales + 8 * h;
                for (int l = 0; l < 32; l++) {
                    int is = l / 16;
                    int q1 = ((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
                    int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
                    int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                    int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                    y[l] = d * sc[is] * q1;
                    y[l + 32] = d * sc[is + 2] * q2;
                    y[l + 64] = d * sc[is + 4] * q3;
                    y[l + 96] = d * sc[is + 6] * q4;
                }
            }
        }
        return;
    }
    default:
        memset(y, 0, (size_t)n * sizeof *y);
        return;
    }
}

void quant_quantize_act_ref(QuantType act, const float *x, void *dst, int n) {
    if (act == QT_Q8_0 || act == QT_Q8_1) {
        for (int i = 0; i < n / 32; i++, x += 32) {
            float amax = 0.0f;
            for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(x[j]));
            /* id = 127/amax (not 1/d): the rounding llama.cpp's x86 path uses. */
            float d = amax / 127.0f, id = amax != 0.0f ? 127.0f / amax : 0.0f;
            int8_t *qs;
            if (act == QT_Q8_0) {
                BlockQ8_0 *b = (BlockQ8_0 *)dst + i;
                b->d = quant_f32_to_fp16(d);
                qs = b->qs;
            } else {
                BlockQ8_1 *b = (BlockQ8_1 *)dst + i;
                b->d = quant_f32_to_fp16(d);
                qs = b->qs;
            }
            int sum = 0;
            for (int j = 0; j < 32; j++) {
                qs[j] = (int8_t)nearbyintf(x[j] * id);
                sum += qs[j];
            }
            if (act == QT_Q8_1) ((BlockQ8_1 *)dst + i)->s = quant_f32_to_fp16((float)sum * d);
        }
    } else if (act == QT_Q8_K) {
        for (int i = 0; i < n / QK_K; i++, x += QK_K) {
            BlockQ8_K *b = (BlockQ8_K *)dst + i;
            float amax = 0.0f, max = 0.0f;
            for (int j = 0; j < QK_K; j++) {
                float ax = fabsf(x[j]);
                if (ax > amax) { amax = ax; max = x[j]; }
            }
            if (amax == 0.0f) {
                memset(b, 0, sizeof *b);
                continue;
            }
            float iscale = -127.0f / max;
            for (int j = 0; j < QK_K; j++) {
                int v = (int)nearbyintf(iscale * x[j]);
                b->qs[j] = (int8_t)(v > 127 ? 127 : v);
            }
            for (int j = 0; j < 16; j++) {
                int s = 0;
                for (int l = 0; l < 16; l++) s += b->qs[16 * j + l];
                b->bsums[j] = (int16_t)s;
            }
            b->d = 1.0f / iscale;
        }
    } else if (act == QT_BF16) {
        uint16_t *o = dst;
        for (int i = 0; i < n; i++) o[i] = quant_f32_to_bf16(x[i]);
    } else {
        memcpy(dst, x, (size_t)n * sizeof *x);
    }
}

/* The dots below fix their order of operations so that the SIMD kernels reproduce them bit for
 * bit (and so llama.cpp's AVX2 kernels for Q4_0/Q4_1/Q8_0): integer sums per block in 8 lanes
 * (lane j takes elements 4j..4j+3 of each 32-element group), one fused multiply-add per lane and
 * block by the block's scale, lanes reduced as hsum8 at the end. */
static float hsum8_ref(const float *a) {
    float c[4];
    for (int l = 0; l < 4; l++) c[l] = a[l] + a[l + 4];
    return (c[0] + c[2]) + (c[1] + c[3]);
}

float quant_dot_f32_ref(const void *w, const void *a, int n) {
    const float *x = w, *y = a;
    float acc[16] = {0};
    int i = 0;
    for (; i + 16 <= n; i += 16)
        for (int l = 0; l < 16; l++) acc[l] = fmaf(x[i + l], y[i + l], acc[l]);
    for (; i + 8 <= n; i += 8)
        for (int l = 0; l < 8; l++) acc[l] = fmaf(x[i + l], y[i + l], acc[l]);
    for (int l = 0; l < 8; l++) acc[l] += acc[l + 8];
    float s = hsum8_ref(acc);
    for (; i < n; i++) s += x[i] * y[i];
    return s;
}

float quant_dot_f16_ref(const void *w, const void *a, int n) {
    const uint16_t *x = w;
    const float *y = a;
    float acc[16] = {0};
    int i = 0;
    for (; i + 16 <= n; i += 16)
        for (int l = 0; l < 16; l++) acc[l] = fmaf(H2F(x[i + l]), y[i + l], acc[l]);
    for (int l = 0; l < 8; l++) acc[l] += acc[l + 8];
    float s = hsum8_ref(acc);
    for (; i < n; i++) s += H2F(x[i]) * y[i];
    return s;
}

float quant_dot_bf16_ref(const void *w, const void *a, int n) {
    const uint16_t *x = w, *y = a;
    float acc[8] = {0};
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int l = 0; l < 8; l++) acc[l] = fmaf(quant_bf16_to_f32(x[i + l]), quant_bf16_to_f32(y[i + l]), acc[l]);
    float s = hsum8_ref(acc);
    for (; i < n; i++) s += quant_bf16_to_f32(x[i]) * quant_bf16_to_f32(y[i]);
    return s;
}

static void lanes_fma(float *acc, float d, const int *lane) {
    for (int l = 0; l < 8; l++) acc[l] = fmaf(d, (float)lane[l], acc[l]);
}

float quant_dot_q4_0_ref(const void *w, const void *a, int n) {
    const BlockQ4_0 *x = w;
    const BlockQ8_0 *y = a;
    float acc[8] = {0};
    for (int i = 0; i < n / 32; i++) {
        int lane[8] = {0};
        for (int j = 0; j < 16; j++) {
            lane[j / 4] += ((x[i].qs[j] & 0xF) - 8) * y[i].qs[j];
            lane[4 + j / 4] += ((x[i].qs[j] >> 4) - 8) * y[i].qs[j + 16];
        }
        lanes_fma(acc, H2F(x[i].d) * H2F(y[i].d), lane);
    }
    return hsum8_ref(acc);
}

float quant_dot_q4_1_ref(const void *w, const void *a, int n) {
    const BlockQ4_1 *x = w;
    const BlockQ8_1 *y = a;
    float acc[8] = {0}, summ = 0.0f;
    for (int i = 0; i < n / 32; i++) {
        int lane[8] = {0};
        summ += H2F(x[i].m) * H2F(y[i].s); /* exact product of two halves */
        for (int j = 0; j < 16; j++) {
            lane[j / 4] += (x[i].qs[j] & 0xF) * y[i].qs[j];
            lane[4 + j / 4] += (x[i].qs[j] >> 4) * y[i].qs[j + 16];
        }
        lanes_fma(acc, H2F(x[i].d) * H2F(y[i].d), lane);
    }
    return hsum8_ref(acc) + summ;
}

float quant_dot_q8_0_ref(const void *w, const void *a, int n) {
    const BlockQ8_0 *x = w;
    const BlockQ8_0 *y = a;
    float acc[8] = {0};
    for (int i = 0; i < n / 32; i++) {
        int lane[8] = {0};
        for (int j = 0; j < 32; j++) lane[j / 4] += x[i].qs[j] * y[i].qs[j];
        lanes_fma(acc, H2F(x[i].d) * H2F(y[i].d), lane);
    }
    return hsum8_ref(acc);
}

/* Q4_K and Q5_K share the layout of scales and mins; hbit(l, c) is Q5_K's fifth bit. */
static float dot_k45(const BlockQ4_K *x4, const BlockQ5_K *x5, const BlockQ8_K *y, int n) {
    float acc[8] = {0}, summf = 0.0f;
    for (int i = 0; i < n / QK_K; i++) {
        const uint8_t *scales = x4 ? x4[i].scales : x5[i].scales;
        const uint8_t *q = x4 ? x4[i].qs : x5[i].qs;
        const int8_t *p = y[i].qs;
        int lane[8] = {0}, summ = 0;
        for (int c = 0; c < 4; c++, q += 32, p += 64) {
            int sc1, m1, sc2, m2;
            k4_scale_min(2 * c, scales, &sc1, &m1);
            k4_scale_min(2 * c + 1, scales, &sc2, &m2);
            summ += m1 * (y[i].bsums[4 * c] + y[i].bsums[4 * c + 1]) + m2 * (y[i].bsums[4 * c + 2] + y[i].bsums[4 * c + 3]);
            for (int l = 0; l < 32; l++) {
                int lo = q[l] & 0xF, hi = q[l] >> 4;
                if (x5) {
                    lo += x5[i].qh[l] & (1u << (2 * c)) ? 16 : 0;
                    hi += x5[i].qh[l] & (2u << (2 * c)) ? 16 : 0;
                }
                lane[l / 4] += sc1 * lo * p[l] + sc2 * hi * p[l + 32];
            }
        }
        float d = x4 ? H2F(x4[i].d) : H2F(x5[i].d), dmin = x4 ? H2F(x4[i].dmin) : H2F(x5[i].dmin);
        lanes_fma(acc, d * y[i].d, lane);
        summf += dmin * y[i].d * (float)summ;
    }
    return hsum8_ref(acc) - summf;
}

float quant_dot_q4_k_ref(const void *w, const void *a, int n) { return dot_k45(w, NULL, a, n); }
float quant_dot_q5_k_ref(const void *w, const void *a, int n) { return dot_k45(NULL, w, a, n); }

float quant_dot_q6_k_ref(const void *w, const void *a, int n) {
    const BlockQ6_K *x = w;
    const BlockQ8_K *y = a;
    float acc[8] = {0};
    for (int i = 0; i < n / QK_K; i++) {
        int lane[8] = {0}, off = 0;
        for (int g = 0; g < 16; g++) off += x[i].scales[g] * y[i].bsums[g];
        for (int h = 0; h < 2; h++) {
            const uint8_t *ql = x[i].ql + 64 * h, *qh = x[i].qh + 32 * h;
            const int8_t *sc = x[i].scales + 8 * h, *p = y[i].qs + 128 * h;
            for (int l = 0; l < 32; l++) {
                int q[4] = {(ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4), (ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4),
                            (ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4), (ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)};
                for (int k = 0; k < 4; k++) lane[l / 4] += sc[2 * k + l / 16] * q[k] * p[32 * k + l];
            }
        }
        lane[0] -= 32 * off; /* the -32 offset of every quant, through the block sums */
        lanes_fma(acc, H2F(x[i].d) * y[i].d, lane);
    }
    return hsum8_ref(acc);
}

void quant_matmul_rows(float *out, size_t ldo, const void *W, int wtype, int ncols, int r0, int r1,
                       const void *act, size_t act_stride, int ntok, QuantDotFn dot) {
    size_t rb = quant_row_bytes(wtype, ncols);
    const uint8_t *w = W, *x = act;
    /* Tokens in tiles so the activation tile stays in cache while the weight rows stream. */
    enum { TT = 32 };
    for (int t0 = 0; t0 < ntok; t0 += TT) {
        int t1 = t0 + TT < ntok ? t0 + TT : ntok;
        for (int r = r0; r < r1; r++) {
            const uint8_t *wr = w + (size_t)r * rb;
            for (int t = t0; t < t1; t++) out[(size_t)t * ldo + r] = dot(wr, x + (size_t)t * act_stride, ncols);
        }
    }
}

/* ---- llama.cpp-order numerics (see quant.h) ---- */

float quant_vexpf_ref(float x) {
    const float shift = 0x1.8p23f;
    float z = fmaf(x, 0x1.715476p+0f, shift); /* n = round(x / ln2) in the low mantissa bits */
    float n = z - shift;
    float b = fmaf(-n, 0x1.7f7d1cp-20f, fmaf(-n, 0x1.62e4p-1f, x)); /* x - n*ln2, in two parts */
    float u = b * b;
    float j = fmaf(fmaf(fmaf(0x1.0e4020p-7f, b, 0x1.573e2ep-5f), u, fmaf(0x1.555e66p-3f, b, 0x1.fffdb6p-2f)), u,
                   fmaf(0x1.ffffecp-1f, b, 1.0f));
    if (fabsf(n) > 192.0f) return n <= 0.0f ? 0.0f : INFINITY;
    return ldexpf(j, (int)n); /* j * 2^n, one rounding (the vector code's scalef) */
}

/* The 16-lane tree: l + l+8, then + 4, then (0+2) + (1+3). */
static float reduce16(const float *a) {
    float b[8], c[4];
    for (int l = 0; l < 8; l++) b[l] = a[l] + a[l + 8];
    for (int l = 0; l < 4; l++) c[l] = b[l] + b[l + 4];
    return (c[0] + c[2]) + (c[1] + c[3]);
}

double quant_softmax_exp_row_ref(float *y, const float *x, float max, int n) {
    double sum = 0.0;
    for (int i0 = 0; i0 < n; i0 += 16) {
        float lane[16] = {0};
        for (int l = 0; l < 16 && i0 + l < n; l++) lane[l] = y[i0 + l] = quant_vexpf_ref(x[i0 + l] - max);
        sum += (double)reduce16(lane);
    }
    return sum;
}

void quant_swiglu_row_ref(float *y, const float *gate, const float *up, int n) {
    int nv = n & ~15, i = 0;
    for (; i < nv; i++) y[i] = gate[i] / (1.0f + quant_vexpf_ref(0.0f - gate[i])) * up[i];
    for (; i < n; i++) y[i] = gate[i] / (1.0f + expf(-gate[i])) * up[i];
}

float quant_dot_f16_order_ref(const uint16_t *x, const uint16_t *y, int n, int gemv) {
    float acc[4][16] = {{0}};
    if (!gemv && n % 16 == 0) {
        for (int i = 0; i < n; i++) acc[0][i % 16] = fmaf(H2F(x[i]), H2F(y[i]), acc[0][i % 16]);
        return reduce16(acc[0]);
    }
    int np = n & ~63;
    for (int i = 0; i < np; i++) acc[(i / 16) % 4][i % 16] = fmaf(H2F(x[i]), H2F(y[i]), acc[(i / 16) % 4][i % 16]);
    for (int l = 0; l < 16; l++) acc[0][l] = (acc[0][l] + acc[2][l]) + (acc[1][l] + acc[3][l]);
    double s = (double)reduce16(acc[0]);
    for (int i = np; i < n; i++) s += (double)(H2F(x[i]) * H2F(y[i]));
    return (float)s;
}

void quant_attn_pv_ref(float *out, float *acc, const uint16_t *p16, const uint16_t *const *blk, size_t ld, int n, int hd,
                       int gemv) {
    int nacc = gemv ? 4 : 1;
    memset(acc, 0, (size_t)nacc * 16 * (size_t)hd * sizeof *acc);
    for (int p = 0; p < n; p++) {
        float w = H2F(p16[p]);
        const uint16_t *v = quant_kv_row(blk, p, ld);
        float *a = acc + ((size_t)((p / 16) % nacc) * 16 + (size_t)(p % 16)) * (size_t)hd;
        for (int d = 0; d < hd; d++) a[d] = fmaf(H2F(v[d]), w, a[d]);
    }
    for (int d = 0; d < hd; d++) {
        float lane[16];
        for (int l = 0; l < 16; l++) {
            const float *a = acc + (size_t)l * hd + d;
            size_t bs = (size_t)16 * hd;
            lane[l] = gemv ? (a[0] + a[2 * bs]) + (a[bs] + a[3 * bs]) : a[0];
        }
        out[d] = reduce16(lane);
    }
}

void quant_attn_scores_ref(float *s, const uint16_t *q, const uint16_t *const *blk, size_t ld, int n, int hd, int gemv,
                           float scale) {
    for (int p = 0; p < n; p++) s[p] = quant_dot_f16_order_ref(q, quant_kv_row(blk, p, ld), hd, gemv) * scale;
}
