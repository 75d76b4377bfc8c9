/* quant_math.h: the GGUF block arithmetic shared by the CUDA decoder kernels (kernels/cuda/) and
 * the host, written once as __host__ __device__ inline functions so that the CPU tests check
 * exactly what the GPU computes against the plain-C reference (kernels/cpu/quant_ref.c):
 * fp16/bf16 conversion, per-block dequantisation, activation quantisation (Q8_0, Q8_1, Q8_K) and
 * the integer part of every quantised dot product, lane by lane.
 *
 * A "lane" is the reference's unit of integer accumulation: lane l of a block holds the products
 * of the block's elements 4l..4l+3 of each 32-element group, summed exactly in int. Every lane
 * is a handful of 4-way int8 dot products (qm_dp4a: __dp4a on the device, the same sums in C on
 * the host), so a kernel can hand lanes to threads and the integers stay exact whatever the
 * order. The reference rounds once per lane and block (fmaf(scale, lane, acc)); the serial row
 * forms at the end replay its order and must give its bits exactly (tests/unit/
 * test_kernels_quant_math.c); a parallel kernel sums the same per-block values in another order.
 *
 * Plain C11 when not compiled by nvcc. Must not include a CUDA header, allocate or keep state.
 * Loads go through qm_ld32_a2/a4 so the device never reads weights byte by byte. */
#ifndef WEAVER_QUANT_MATH_H
#define WEAVER_QUANT_MATH_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "kernels/quant.h"

#ifdef __CUDACC__
#define QM_HD __host__ __device__ __forceinline__
#else
#define QM_HD static inline
#endif
#ifdef __CUDA_ARCH__ /* the device pass only: the host compiler knows no such pragma */
#define QM_UNROLL _Pragma("unroll")
#else
#define QM_UNROLL
#endif

/* ---- scalar conversions (bit for bit quant_fp16_to_f32 & co.) ---- */

QM_HD float qm_u2f(uint32_t x)
{
    float f;
    memcpy(&f, &x, 4);
    return f;
}

QM_HD uint32_t qm_f2u(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    return x;
}

QM_HD float qm_h2f(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, e = (h >> 10) & 0x1f, m = h & 0x3ff;
    if (e == 0) return qm_u2f(qm_f2u((float)m * (1.0f / 16777216.0f)) | sign); /* m * 2^-24, exact */
    if (e == 31) return qm_u2f(sign | 0x7f800000u | (m << 13));
    return qm_u2f(sign | ((e + 112) << 23) | (m << 13));
}

/* F32 -> F16, round to nearest even; >= 65520 becomes inf, NaN stays a quiet NaN. */
QM_HD uint16_t qm_f2h(float f)
{
    uint32_t x = qm_f2u(f), sign = (x >> 16) & 0x8000, ax = x & 0x7fffffffu;
    if (ax >= 0x7f800000u) return (uint16_t)(sign | 0x7c00 | (ax > 0x7f800000u ? 0x200 : 0));
    if (ax >= 0x477ff000u) return (uint16_t)(sign | 0x7c00);
    if (ax < 0x38800000u) return (uint16_t)(sign | (uint32_t)rintf(qm_u2f(ax) * 16777216.0f)); /* subnormal */
    uint32_t h = (((ax >> 23) - 112) << 10) | ((ax & 0x7fffff) >> 13), rem = ax & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (h & 1))) h++;
    return (uint16_t)(sign | h);
}

QM_HD float qm_bf2f(uint16_t h) { return qm_u2f((uint32_t)h << 16); }

QM_HD uint16_t qm_f2bf(float f)
{
    uint32_t u = qm_f2u(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 64);
    return (uint16_t)((u + (0x7fffu + ((u >> 16) & 1))) >> 16);
}

/* ---- loads and the 4-way int8 dot ---- */

/* 4 bytes at p, p 4-byte aligned / only 2-byte aligned (Q4_0, Q8_0, Q6_K blocks). */
QM_HD int32_t qm_ld32_a4(const void *p)
{
#ifdef __CUDA_ARCH__
    return *(const int32_t *)p;
#else
    int32_t v;
    memcpy(&v, p, 4);
    return v;
#endif
}

QM_HD int32_t qm_ld32_a2(const void *p)
{
#ifdef __CUDA_ARCH__
    const uint16_t *h = (const uint16_t *)p;
    return (int32_t)((uint32_t)h[0] | ((uint32_t)h[1] << 16));
#else
    int32_t v;
    memcpy(&v, p, 4);
    return v;
#endif
}

/* c + sum of the four signed byte products of a and b. */
QM_HD int qm_dp4a(int32_t a, int32_t b, int c)
{
#ifdef __CUDA_ARCH__
    return __dp4a(a, b, c);
#else
    for (int i = 0; i < 4; i++) c += (int)(int8_t)(a >> (8 * i)) * (int)(int8_t)(b >> (8 * i));
    return c;
#endif
}

/* ---- Q4_0 / Q4_1 / Q8_0 (32-element blocks, activations Q8_0 / Q8_1 / Q8_0) ---- */

/* Lane l (0..7) of a Q4_0 x Q8_0 block: ((nibble - 8) * act) over elements 4l..4l+3 (lanes 0-3:
 * low nibbles of qs[4l..], elements 0..15; lanes 4-7: high nibbles, elements 16..31). */
QM_HD int qm_lane_q4_0(const BlockQ4_0 *x, const BlockQ8_0 *y, int l)
{
    int32_t q = qm_ld32_a2(x->qs + 4 * (l & 3)), a = qm_ld32_a2(y->qs + 4 * l);
    int32_t v = l < 4 ? (q & 0x0f0f0f0f) : ((q >> 4) & 0x0f0f0f0f);
    return qm_dp4a(v, a, 0) - 8 * qm_dp4a(0x01010101, a, 0);
}

QM_HD int qm_lane_q4_1(const BlockQ4_1 *x, const BlockQ8_1 *y, int l)
{
    int32_t q = qm_ld32_a4(x->qs + 4 * (l & 3)), a = qm_ld32_a4(y->qs + 4 * l);
    return qm_dp4a(l < 4 ? (q & 0x0f0f0f0f) : ((q >> 4) & 0x0f0f0f0f), a, 0);
}

QM_HD int qm_lane_q8_0(const BlockQ8_0 *x, const BlockQ8_0 *y, int l)
{
    return qm_dp4a(qm_ld32_a2(x->qs + 4 * l), qm_ld32_a2(y->qs + 4 * l), 0);
}

/* The float factor of a block's lanes, and Q4_1's min term (an exact product of two halves). */
QM_HD float qm_scale_q4_0(const BlockQ4_0 *x, const BlockQ8_0 *y) { return qm_h2f(x->d) * qm_h2f(y->d); }
QM_HD float qm_scale_q4_1(const BlockQ4_1 *x, const BlockQ8_1 *y) { return qm_h2f(x->d) * qm_h2f(y->d); }
QM_HD float qm_min_q4_1(const BlockQ4_1 *x, const BlockQ8_1 *y) { return qm_h2f(x->m) * qm_h2f(y->s); }
QM_HD float qm_scale_q8_0(const BlockQ8_0 *x, const BlockQ8_0 *y) { return qm_h2f(x->d) * qm_h2f(y->d); }

/* ---- Q4_K / Q5_K / Q6_K (256-element blocks, activations Q8_K) ---- */

/* Scale and min of sub-block j (0..7) from the 12 packed 6-bit bytes. */
QM_HD void qm_k4_scale_min(int j, const uint8_t *q, int *sc, int *mn)
{
    if (j < 4) {
        *sc = q[j] & 63;
        *mn = q[j + 4] & 63;
    } else {
        *sc = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
        *mn = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
}

/* Lane l (0..7) of a Q4_K or Q5_K block (qh NULL for Q4_K): over the four 64-element chunks c,
 * sc(2c) * lo-nibble . act[64c + 4l..] + sc(2c+1) * hi-nibble . act[64c + 32 + 4l..]. */
QM_HD int qm_lane_k45(const uint8_t *scales, const uint8_t *qs, const uint8_t *qh, const BlockQ8_K *y, int l)
{
    int lane = 0;
    int32_t h = qh ? qm_ld32_a4(qh + 4 * l) : 0;
    for (int c = 0; c < 4; c++) {
        int sc1, m1, sc2, m2;
        qm_k4_scale_min(2 * c, scales, &sc1, &m1);
        qm_k4_scale_min(2 * c + 1, scales, &sc2, &m2);
        int32_t q = qm_ld32_a4(qs + 32 * c + 4 * l);
        int32_t lo = q & 0x0f0f0f0f, hi = (q >> 4) & 0x0f0f0f0f;
        if (qh) {
            lo |= ((h >> (2 * c)) & 0x01010101) << 4;
            hi |= ((h >> (2 * c + 1)) & 0x01010101) << 4;
        }
        lane += sc1 * qm_dp4a(lo, qm_ld32_a4(y->qs + 64 * c + 4 * l), 0) +
                sc2 * qm_dp4a(hi, qm_ld32_a4(y->qs + 64 * c + 32 + 4 * l), 0);
    }
    return lane;
}

/* The min term's integer of a Q4_K/Q5_K block: sum over sub-blocks of min * (its act sum). */
QM_HD int qm_mins_k45(const uint8_t *scales, const BlockQ8_K *y)
{
    int summ = 0;
    for (int c = 0; c < 4; c++) {
        int sc1, m1, sc2, m2;
        qm_k4_scale_min(2 * c, scales, &sc1, &m1);
        qm_k4_scale_min(2 * c + 1, scales, &sc2, &m2);
        summ += m1 * (y->bsums[4 * c] + y->bsums[4 * c + 1]) + m2 * (y->bsums[4 * c + 2] + y->bsums[4 * c + 3]);
    }
    return summ;
}

QM_HD int qm_lane_q4_k(const BlockQ4_K *x, const BlockQ8_K *y, int l) { return qm_lane_k45(x->scales, x->qs, 0, y, l); }
QM_HD int qm_lane_q5_k(const BlockQ5_K *x, const BlockQ8_K *y, int l)
{
    return qm_lane_k45(x->scales, x->qs, x->qh, y, l);
}

/* Lane l of a Q6_K block, with the -32 offset of every quant left out (qm_off_q6_k). */
QM_HD int qm_lane_q6_k(const BlockQ6_K *x, const BlockQ8_K *y, int l)
{
    int lane = 0;
    for (int hh = 0; hh < 2; hh++) {
        const uint8_t *ql = x->ql + 64 * hh, *qh = x->qh + 32 * hh;
        const int8_t *sc = x->scales + 8 * hh, *p = y->qs + 128 * hh;
        int32_t l0 = qm_ld32_a2(ql + 4 * l), l1 = qm_ld32_a2(ql + 32 + 4 * l), h = qm_ld32_a2(qh + 4 * l);
        int32_t q[4] = {(l0 & 0x0f0f0f0f) | ((h & 0x03030303) << 4), (l1 & 0x0f0f0f0f) | (((h >> 2) & 0x03030303) << 4),
                        ((l0 >> 4) & 0x0f0f0f0f) | (((h >> 4) & 0x03030303) << 4),
                        ((l1 >> 4) & 0x0f0f0f0f) | (((h >> 6) & 0x03030303) << 4)};
        for (int k = 0; k < 4; k++) lane += sc[2 * k + l / 4] * qm_dp4a(q[k], qm_ld32_a4(p + 32 * k + 4 * l), 0);
    }
    return lane;
}

/* -32 * sum over the 16 groups of scale * (the group's act sum): add it to lane 0. */
QM_HD int qm_off_q6_k(const BlockQ6_K *x, const BlockQ8_K *y)
{
    int off = 0;
    for (int g = 0; g < 16; g++) off += x->scales[g] * y->bsums[g];
    return -32 * off;
}

QM_HD float qm_scale_q4_k(const BlockQ4_K *x, const BlockQ8_K *y) { return qm_h2f(x->d) * y->d; }
QM_HD float qm_dmin_q4_k(const BlockQ4_K *x, const BlockQ8_K *y) { return qm_h2f(x->dmin) * y->d; }
QM_HD float qm_scale_q5_k(const BlockQ5_K *x, const BlockQ8_K *y) { return qm_h2f(x->d) * y->d; }
QM_HD float qm_dmin_q5_k(const BlockQ5_K *x, const BlockQ8_K *y) { return qm_h2f(x->dmin) * y->d; }
QM_HD float qm_scale_q6_k(const BlockQ6_K *x, const BlockQ8_K *y) { return qm_h2f(x->d) * y->d; }

/* ---- dequantisation of one block into y (32 or 256 floats, the reference's expressions) ---- */

QM_HD void qm_dequant_q4_0(const BlockQ4_0 *b, float *y)
{
    float d = qm_h2f(b->d);
    for (int j = 0; j < 16; j++) {
        y[j] = ((b->qs[j] & 0xF) - 8) * d;
        y[j + 16] = ((b->qs[j] >> 4) - 8) * d;
    }
}

QM_HD void qm_dequant_q4_1(const BlockQ4_1 *b, float *y)
{
    float d = qm_h2f(b->d), m = qm_h2f(b->m);
    for (int j = 0; j < 16; j++) {
        y[j] = (b->qs[j] & 0xF) * d + m;
        y[j + 16] = (b->qs[j] >> 4) * d + m;
    }
}

QM_HD void qm_dequant_q8_0(const BlockQ8_0 *b, float *y)
{
    float d = qm_h2f(b->d);
    for (int j = 0; j < 32; j++) y[j] = b->qs[j] * d;
}

QM_HD void qm_dequant_k45(const uint8_t *scales, const uint8_t *qs, const uint8_t *qh, uint16_t dh, uint16_t dminh,
                          float *y)
{
    float d = qm_h2f(dh), dmin = qm_h2f(dminh);
    for (int c = 0; c < 4; c++, qs += 32) {
        int sc1, m1, sc2, m2;
        qm_k4_scale_min(2 * c, scales, &sc1, &m1);
        qm_k4_scale_min(2 * c + 1, scales, &sc2, &m2);
        for (int l = 0; l < 32; l++) {
            int b1 = qh && (qh[l] & (1u << (2 * c))) ? 16 : 0, b2 = qh && (qh[l] & (2u << (2 * c))) ? 16 : 0;
            y[64 * c + l] = d * sc1 * ((qs[l] & 0xF) + b1) - dmin * m1;
            y[64 * c + 32 + l] = d * sc2 * ((qs[l] >> 4) + b2) - dmin * m2;
        }
    }
}

QM_HD void qm_dequant_q4_k(const BlockQ4_K *b, float *y) { qm_dequant_k45(b->scales, b->qs, 0, b->d, b->dmin, y); }
QM_HD void qm_dequant_q5_k(const BlockQ5_K *b, float *y) { qm_dequant_k45(b->scales, b->qs, b->qh, b->d, b->dmin, y); }

QM_HD void qm_dequant_q6_k(const BlockQ6_K *b, float *y)
{
    float d = qm_h2f(b->d);
    for (int h = 0; h < 2; h++, y += 128) {
        const uint8_t *ql = b->ql + 64 * h, *qh = b->qh + 32 * h;
        const int8_t *sc = b->scales + 8 * h;
        for (int l = 0; l < 32; l++) {
            int is = l / 16;
            y[l] = d * sc[is] * (((ql[l] & 0xF) | ((qh[l] & 3) << 4)) - 32);
            y[l + 32] = d * sc[is + 2] * (((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32);
            y[l + 64] = d * sc[is + 4] * (((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32);
            y[l + 96] = d * sc[is + 6] * (((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32);
        }
    }
}

/* Elements and bytes of a block of type t (quant_block_elems/bytes, callable on the device). */
QM_HD int qm_block_elems(int t)
{
    return t == QT_F32 || t == QT_F16 || t == QT_BF16 ? 1 : t == QT_Q4_0 || t == QT_Q4_1 || t == QT_Q8_0 ? 32 : 256;
}

QM_HD int qm_block_bytes(int t)
{
    switch (t) {
    case QT_F32: return 4;
    case QT_F16: case QT_BF16: return 2;
    case QT_Q4_0: return (int)sizeof(BlockQ4_0);
    case QT_Q4_1: return (int)sizeof(BlockQ4_1);
    case QT_Q8_0: return (int)sizeof(BlockQ8_0);
    case QT_Q4_K: return (int)sizeof(BlockQ4_K);
    case QT_Q5_K: return (int)sizeof(BlockQ5_K);
    default: return (int)sizeof(BlockQ6_K);
    }
}

/* Element i of a block b of type t alone (one thread per element): the block functions' value. */
QM_HD float qm_dequant_elem(int t, const void *b, int i)
{
    switch (t) {
    case QT_F32: return *(const float *)b;
    case QT_F16: return qm_h2f(*(const uint16_t *)b);
    case QT_BF16: return qm_bf2f(*(const uint16_t *)b);
    case QT_Q4_0: {
        const BlockQ4_0 *x = (const BlockQ4_0 *)b;
        return ((i < 16 ? x->qs[i] & 0xF : x->qs[i - 16] >> 4) - 8) * qm_h2f(x->d);
    }
    case QT_Q4_1: {
        const BlockQ4_1 *x = (const BlockQ4_1 *)b;
        return (i < 16 ? x->qs[i] & 0xF : x->qs[i - 16] >> 4) * qm_h2f(x->d) + qm_h2f(x->m);
    }
    case QT_Q8_0: {
        const BlockQ8_0 *x = (const BlockQ8_0 *)b;
        return x->qs[i] * qm_h2f(x->d);
    }
    case QT_Q4_K: case QT_Q5_K: {
        const BlockQ4_K *x4 = (const BlockQ4_K *)b;
        const BlockQ5_K *x5 = (const BlockQ5_K *)b;
        const uint8_t *scales = t == QT_Q4_K ? x4->scales : x5->scales, *qs = t == QT_Q4_K ? x4->qs : x5->qs;
        int c = i / 64, hi = (i % 64) >= 32, l = i % 32, sc, mn;
        qm_k4_scale_min(2 * c + hi, scales, &sc, &mn);
        int q = hi ? qs[32 * c + l] >> 4 : qs[32 * c + l] & 0xF;
        if (t == QT_Q5_K && (x5->qh[l] & ((hi ? 2u : 1u) << (2 * c)))) q += 16;
        return qm_h2f(x4->d) * sc * q - qm_h2f(x4->dmin) * mn;
    }
    default: {
        const BlockQ6_K *x = (const BlockQ6_K *)b;
        int h = i / 128, k = (i % 128) / 32, l = i % 32;
        const uint8_t *ql = x->ql + 64 * h + (k & 1) * 32, *qh = x->qh + 32 * h;
        int q = ((k < 2 ? ql[l] & 0xF : ql[l] >> 4) | (((qh[l] >> (2 * k)) & 3) << 4)) - 32;
        return qm_h2f(x->d) * x->scales[8 * h + l / 16 + 2 * k] * q;
    }
    }
}

/* Element i of an F32/F16/BF16 row, and dequantisation of n elements of any type into y (for the
 * dequantise-then-GEMM prefill path and the tests). */
QM_HD void qm_dequant_row(int type, const void *src, float *y, int64_t n)
{
    const uint8_t *s = (const uint8_t *)src;
    switch (type) {
    case QT_F32: for (int64_t i = 0; i < n; i++) y[i] = ((const float *)src)[i]; return;
    case QT_F16: for (int64_t i = 0; i < n; i++) y[i] = qm_h2f(((const uint16_t *)src)[i]); return;
    case QT_BF16: for (int64_t i = 0; i < n; i++) y[i] = qm_bf2f(((const uint16_t *)src)[i]); return;
    case QT_Q4_0: for (int64_t i = 0; i < n / 32; i++) qm_dequant_q4_0((const BlockQ4_0 *)s + i, y + 32 * i); return;
    case QT_Q4_1: for (int64_t i = 0; i < n / 32; i++) qm_dequant_q4_1((const BlockQ4_1 *)s + i, y + 32 * i); return;
    case QT_Q8_0: for (int64_t i = 0; i < n / 32; i++) qm_dequant_q8_0((const BlockQ8_0 *)s + i, y + 32 * i); return;
    case QT_Q4_K: for (int64_t i = 0; i < n / 256; i++) qm_dequant_q4_k((const BlockQ4_K *)s + i, y + 256 * i); return;
    case QT_Q5_K: for (int64_t i = 0; i < n / 256; i++) qm_dequant_q5_k((const BlockQ5_K *)s + i, y + 256 * i); return;
    case QT_Q6_K: for (int64_t i = 0; i < n / 256; i++) qm_dequant_q6_k((const BlockQ6_K *)s + i, y + 256 * i); return;
    default: for (int64_t i = 0; i < n; i++) y[i] = 0.0f; return;
    }
}

/* ---- activation quantisation, one block ---- */

/* Q8_0 / Q8_1 from 32 floats whose absolute maximum is amax (the caller may reduce it in
 * parallel: a maximum is exact in any order). s (Q8_1 only, may be NULL) gets d * sum(qs). */
QM_HD void qm_quantize_q8_32(const float *x, float amax, uint16_t *d_out, int8_t *qs, uint16_t *s_out)
{
    /* id = 127/amax (not 1/d): the rounding llama.cpp's x86 path uses. */
    float d = amax / 127.0f, id = amax != 0.0f ? 127.0f / amax : 0.0f;
    int sum = 0;
    for (int j = 0; j < 32; j++) {
        qs[j] = (int8_t)rintf(x[j] * id);
        sum += qs[j];
    }
    *d_out = qm_f2h(d);
    if (s_out) *s_out = qm_f2h((float)sum * d);
}

QM_HD float qm_amax32(const float *x)
{
    float amax = 0.0f;
    for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(x[j]));
    return amax;
}

QM_HD void qm_quantize_q8_0(const float *x, BlockQ8_0 *b) { qm_quantize_q8_32(x, qm_amax32(x), &b->d, b->qs, 0); }
QM_HD void qm_quantize_q8_1(const float *x, BlockQ8_1 *b) { qm_quantize_q8_32(x, qm_amax32(x), &b->d, b->qs, &b->s); }

/* Q8_K from 256 floats; max is the element of largest magnitude (the first such, as the
 * reference scans: a parallel reduction must break ties towards the lower index). */
QM_HD void qm_quantize_q8_k_with(const float *x, float max, BlockQ8_K *b)
{
    if (max == 0.0f) {
        b->d = 0.0f;
        for (int j = 0; j < 256; j++) b->qs[j] = 0;
        for (int j = 0; j < 16; j++) b->bsums[j] = 0;
        return;
    }
    float iscale = -127.0f / max;
    for (int j = 0; j < 256; j++) {
        int v = (int)rintf(iscale * x[j]);
        b->qs[j] = (int8_t)(v > 127 ? 127 : v);
    }
    for (int j = 0; j < 16; j++) {
        int s = 0;
        for (int l = 0; l < 16; l++) s += b->qs[16 * j + l];
        b->bsums[j] = (int16_t)s;
    }
    b->d = 1.0f / iscale;
}

QM_HD void qm_quantize_q8_k(const float *x, BlockQ8_K *b)
{
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < 256; j++) {
        float ax = fabsf(x[j]);
        if (ax > amax) {
            amax = ax;
            max = x[j];
        }
    }
    qm_quantize_q8_k_with(x, max, b);
}

/* ---- row dots in the reference's order ---- */
QM_HD float qm_hsum8(const float *a)
{
    float c[4];
    for (int l = 0; l < 4; l++) c[l] = a[l] + a[l + 4];
    return (c[0] + c[2]) + (c[1] + c[3]);
}

/* The row dot of wtype against its activation format, block by block through the lane functions
 * above; NaN for a type without one. Bit for bit quant_dot_<type>_ref. (The device runs it for the
 * float types, one thread per row; the quantised types split the lanes over threads.) */
QM_HD float qm_dot_row(int wtype, const void *w, const void *a, int n)
{
    float acc[16] = {0}, extra = 0.0f;
    switch (wtype) {
    case QT_Q4_0: case QT_Q4_1: case QT_Q8_0:
        for (int i = 0; i < n / 32; i++) {
            float d;
            int lane[8];
            for (int l = 0; l < 8; l++) {
                if (wtype == QT_Q4_0) lane[l] = qm_lane_q4_0((const BlockQ4_0 *)w + i, (const BlockQ8_0 *)a + i, l);
                else if (wtype == QT_Q4_1) lane[l] = qm_lane_q4_1((const BlockQ4_1 *)w + i, (const BlockQ8_1 *)a + i, l);
                else lane[l] = qm_lane_q8_0((const BlockQ8_0 *)w + i, (const BlockQ8_0 *)a + i, l);
            }
            if (wtype == QT_Q4_0) d = qm_scale_q4_0((const BlockQ4_0 *)w + i, (const BlockQ8_0 *)a + i);
            else if (wtype == QT_Q4_1) d = qm_scale_q4_1((const BlockQ4_1 *)w + i, (const BlockQ8_1 *)a + i);
            else d = qm_scale_q8_0((const BlockQ8_0 *)w + i, (const BlockQ8_0 *)a + i);
            if (wtype == QT_Q4_1) extra += qm_min_q4_1((const BlockQ4_1 *)w + i, (const BlockQ8_1 *)a + i);
            for (int l = 0; l < 8; l++) acc[l] = fmaf(d, (float)lane[l], acc[l]);
        }
        return qm_hsum8(acc) + extra;
    case QT_Q4_K:
    case QT_Q5_K:
        for (int i = 0; i < n / 256; i++) {
            const BlockQ8_K *y = (const BlockQ8_K *)a + i;
            const BlockQ4_K *x4 = (const BlockQ4_K *)w + i;
            const BlockQ5_K *x5 = (const BlockQ5_K *)w + i;
            const uint8_t *scales = wtype == QT_Q4_K ? x4->scales : x5->scales;
            float d = wtype == QT_Q4_K ? qm_scale_q4_k(x4, y) : qm_scale_q5_k(x5, y);
            float dmin = wtype == QT_Q4_K ? qm_dmin_q4_k(x4, y) : qm_dmin_q5_k(x5, y);
            for (int l = 0; l < 8; l++)
                acc[l] = fmaf(d, (float)(wtype == QT_Q4_K ? qm_lane_q4_k(x4, y, l) : qm_lane_q5_k(x5, y, l)), acc[l]);
            extra += dmin * (float)qm_mins_k45(scales, y);
        }
        return qm_hsum8(acc) - extra;
    case QT_Q6_K:
        for (int i = 0; i < n / 256; i++) {
            const BlockQ6_K *x = (const BlockQ6_K *)w + i;
            const BlockQ8_K *y = (const BlockQ8_K *)a + i;
            float d = qm_scale_q6_k(x, y);
            for (int l = 0; l < 8; l++) acc[l] = fmaf(d, (float)(qm_lane_q6_k(x, y, l) + (l ? 0 : qm_off_q6_k(x, y))), acc[l]);
        }
        return qm_hsum8(acc);
    case QT_F32: case QT_F16: {
        /* 16 fused lanes, then (F32 only) 8 more, folded to 8 and summed as hsum8; a tail alone. */
        int i = 0;
        const float *y = (const float *)a;
#define QM_W(k) (wtype == QT_F32 ? ((const float *)w)[k] : qm_h2f(((const uint16_t *)w)[k]))
        for (; i + 16 <= n; i += 16)
            for (int l = 0; l < 16; l++) acc[l] = fmaf(QM_W(i + l), y[i + l], acc[l]);
        if (wtype == QT_F32)
            for (; i + 8 <= n; i += 8)
                for (int l = 0; l < 8; l++) acc[l] = fmaf(QM_W(i + l), y[i + l], acc[l]);
        for (int l = 0; l < 8; l++) acc[l] += acc[l + 8];
        float s = qm_hsum8(acc);
        for (; i < n; i++) s += QM_W(i) * y[i];
#undef QM_W
        return s;
    }
    case QT_BF16: {
        const uint16_t *x = (const uint16_t *)w, *y = (const uint16_t *)a;
        int i = 0;
        for (; i + 8 <= n; i += 8)
            for (int l = 0; l < 8; l++) acc[l] = fmaf(qm_bf2f(x[i + l]), qm_bf2f(y[i + l]), acc[l]);
        float s = qm_hsum8(acc);
        for (; i < n; i++) s += qm_bf2f(x[i]) * qm_bf2f(y[i]);
        return s;
    }
    default:
        return NAN;
    }
}

/* An activation row of n floats in act_type through the block functions above (F32: a copy). */
QM_HD void qm_quantize_row(QuantType act, const float *x, void *dst, int n)
{
    if (act == QT_Q8_0) for (int i = 0; i < n / 32; i++) qm_quantize_q8_0(x + 32 * i, (BlockQ8_0 *)dst + i);
    else if (act == QT_Q8_1) for (int i = 0; i < n / 32; i++) qm_quantize_q8_1(x + 32 * i, (BlockQ8_1 *)dst + i);
    else if (act == QT_Q8_K) for (int i = 0; i < n / 256; i++) qm_quantize_q8_k(x + 256 * i, (BlockQ8_K *)dst + i);
    else if (act == QT_BF16) for (int i = 0; i < n; i++) ((uint16_t *)dst)[i] = qm_f2bf(x[i]);
    else for (int i = 0; i < n; i++) ((float *)dst)[i] = x[i];
}

#endif
