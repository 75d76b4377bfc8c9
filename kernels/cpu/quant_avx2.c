/* quant_avx2.c: AVX2+FMA+F16C row dot products for the GGUF tensor types; same contracts as
 * the *_ref functions in quant_ref.c, tested against them. Compiled with -mavx2 -mfma -mf16c
 * (CMake adds the flags by file name); only called after a run-time CPU check. */
#include "kernels/quant.h"

#include <immintrin.h>
#include <math.h>
#include <string.h>

static inline float hsum8(__m256 v) {
    __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
    lo = _mm_add_ps(lo, hi);
    lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
    lo = _mm_add_ss(lo, _mm_movehdup_ps(lo));
    return _mm_cvtss_f32(lo);
}

static inline float h2f(uint16_t h) { return _cvtsh_ss(h); }

/* Sum of products of signed int8 x and y as 8 int32 lanes. */
static inline __m256i dot_i8(__m256i x, __m256i y) {
    __m256i ax = _mm256_sign_epi8(x, x), sy = _mm256_sign_epi8(y, x);
    return _mm256_madd_epi16(_mm256_maddubs_epi16(ax, sy), _mm256_set1_epi16(1));
}

/* Sum of products of unsigned int8 u (< 128) and signed y as 8 int32 lanes. */
static inline __m256i dot_u8(__m256i u, __m256i y) {
    return _mm256_madd_epi16(_mm256_maddubs_epi16(u, y), _mm256_set1_epi16(1));
}

static inline __m256i nibbles32(const uint8_t *qs) {
    __m128i t = _mm_loadu_si128((const __m128i *)qs);
    __m256i v = _mm256_set_m128i(_mm_srli_epi16(t, 4), t);
    return _mm256_and_si256(v, _mm256_set1_epi8(0x0F));
}

float quant_dot_f32_avx2(const void *w, const void *a, int n) {
    const float *x = w, *y = a;
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 8), _mm256_loadu_ps(y + i + 8), s1);
    }
    for (; i + 8 <= n; i += 8) s0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i), s0);
    float s = hsum8(_mm256_add_ps(s0, s1));
    for (; i < n; i++) s += x[i] * y[i];
    return s;
}

float quant_dot_f16_avx2(const void *w, const void *a, int n) {
    const uint16_t *x = w;
    const float *y = a;
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256 x0 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(x + i)));
        __m256 x1 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(x + i + 8)));
        s0 = _mm256_fmadd_ps(x0, _mm256_loadu_ps(y + i), s0);
        s1 = _mm256_fmadd_ps(x1, _mm256_loadu_ps(y + i + 8), s1);
    }
    float s = hsum8(_mm256_add_ps(s0, s1));
    for (; i < n; i++) s += h2f(x[i]) * y[i];
    return s;
}

float quant_dot_bf16_avx2(const void *w, const void *a, int n) {
    const uint16_t *x = w, *y = a;
    __m256 s0 = _mm256_setzero_ps();
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(x + i)));
        __m256i u = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(y + i)));
        s0 = _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_slli_epi32(v, 16)), _mm256_castsi256_ps(_mm256_slli_epi32(u, 16)), s0);
    }
    float s = hsum8(s0);
    for (; i < n; i++) s += quant_bf16_to_f32(x[i]) * quant_bf16_to_f32(y[i]);
    return s;
}

float quant_dot_q4_0_avx2(const void *w, const void *a, int n) {
    const BlockQ4_0 *x = w;
    const BlockQ8_0 *y = a;
    __m256 acc = _mm256_setzero_ps();
    for (int i = 0; i < n / 32; i++) {
        __m256i q = _mm256_sub_epi8(nibbles32(x[i].qs), _mm256_set1_epi8(8));
        __m256i p = dot_i8(q, _mm256_loadu_si256((const __m256i *)y[i].qs));
        acc = _mm256_fmadd_ps(_mm256_set1_ps(h2f(x[i].d) * h2f(y[i].d)), _mm256_cvtepi32_ps(p), acc);
    }
    return hsum8(acc);
}

float quant_dot_q4_1_avx2(const void *w, const void *a, int n) {
    const BlockQ4_1 *x = w;
    const BlockQ8_1 *y = a;
    __m256 acc = _mm256_setzero_ps();
    float summ = 0.0f;
    for (int i = 0; i < n / 32; i++) {
        summ += h2f(x[i].m) * h2f(y[i].s);
        __m256i p = dot_u8(nibbles32(x[i].qs), _mm256_loadu_si256((const __m256i *)y[i].qs));
        acc = _mm256_fmadd_ps(_mm256_set1_ps(h2f(x[i].d) * h2f(y[i].d)), _mm256_cvtepi32_ps(p), acc);
    }
    return hsum8(acc) + summ;
}

float quant_dot_q8_0_avx2(const void *w, const void *a, int n) {
    const BlockQ8_0 *x = w;
    const BlockQ8_0 *y = a;
    __m256 acc = _mm256_setzero_ps();
    for (int i = 0; i < n / 32; i++) {
        __m256i p = dot_i8(_mm256_loadu_si256((const __m256i *)x[i].qs), _mm256_loadu_si256((const __m256i *)y[i].qs));
        acc = _mm256_fmadd_ps(_mm256_set1_ps(h2f(x[i].d) * h2f(y[i].d)), _mm256_cvtepi32_ps(p), acc);
    }
    return hsum8(acc);
}

static inline void k4_unpack(const uint8_t *q, uint8_t sc[8], uint8_t mn[8]) {
    for (int j = 0; j < 4; j++) {
        sc[j] = q[j] & 63;
        mn[j] = q[j + 4] & 63;
    }
    for (int j = 4; j < 8; j++) {
        sc[j] = (uint8_t)((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
        mn[j] = (uint8_t)((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }
}

float quant_dot_q4_k_avx2(const void *w, const void *a, int n) {
    const BlockQ4_K *x = w;
    const BlockQ8_K *y = a;
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    __m256 acc = _mm256_setzero_ps();
    float summf = 0.0f;
    for (int i = 0; i < n / QK_K; i++) {
        uint8_t sc[8], mn[8];
        k4_unpack(x[i].scales, sc, mn);
        int summ = 0;
        for (int j = 0; j < 8; j++) summ += mn[j] * (y[i].bsums[2 * j] + y[i].bsums[2 * j + 1]);
        const uint8_t *q = x[i].qs;
        const int8_t *p = y[i].qs;
        __m256i sumi = _mm256_setzero_si256();
        for (int c = 0; c < 4; c++, q += 32, p += 64) {
            __m256i qb = _mm256_loadu_si256((const __m256i *)q);
            __m256i lo = _mm256_and_si256(qb, m4), hi = _mm256_and_si256(_mm256_srli_epi16(qb, 4), m4);
            __m256i p1 = _mm256_maddubs_epi16(lo, _mm256_loadu_si256((const __m256i *)p));
            __m256i p2 = _mm256_maddubs_epi16(hi, _mm256_loadu_si256((const __m256i *)(p + 32)));
            sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(p1, _mm256_set1_epi16(sc[2 * c])));
            sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(p2, _mm256_set1_epi16(sc[2 * c + 1])));
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(h2f(x[i].d) * y[i].d), _mm256_cvtepi32_ps(sumi), acc);
        summf += h2f(x[i].dmin) * y[i].d * (float)summ;
    }
    return hsum8(acc) - summf;
}

float quant_dot_q5_k_avx2(const void *w, const void *a, int n) {
    const BlockQ5_K *x = w;
    const BlockQ8_K *y = a;
    const __m256i m4 = _mm256_set1_epi8(0x0F), one = _mm256_set1_epi8(1);
    __m256 acc = _mm256_setzero_ps();
    float summf = 0.0f;
    for (int i = 0; i < n / QK_K; i++) {
        uint8_t sc[8], mn[8];
        k4_unpack(x[i].scales, sc, mn);
        int summ = 0;
        for (int j = 0; j < 8; j++) summ += mn[j] * (y[i].bsums[2 * j] + y[i].bsums[2 * j + 1]);
        const uint8_t *q = x[i].qs;
        const int8_t *p = y[i].qs;
        __m256i hb = _mm256_loadu_si256((const __m256i *)x[i].qh);
        __m256i sumi = _mm256_setzero_si256();
        for (int c = 0; c < 4; c++, q += 32, p += 64) {
            __m256i qb = _mm256_loadu_si256((const __m256i *)q);
            __m256i h1 = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 2 * c), one), 4);
            __m256i h2 = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 2 * c + 1), one), 4);
            __m256i lo = _mm256_or_si256(_mm256_and_si256(qb, m4), h1);
            __m256i hi = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(qb, 4), m4), h2);
            __m256i p1 = _mm256_maddubs_epi16(lo, _mm256_loadu_si256((const __m256i *)p));
            __m256i p2 = _mm256_maddubs_epi16(hi, _mm256_loadu_si256((const __m256i *)(p + 32)));
            sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(p1, _mm256_set1_epi16(sc[2 * c])));
            sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(p2, _mm256_set1_epi16(sc[2 * c + 1])));
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(h2f(x[i].d) * y[i].d), _mm256_cvtepi32_ps(sumi), acc);
        summf += h2f(x[i].dmin) * y[i].d * (float)summ;
    }
    return hsum8(acc) - summf;
}

float quant_dot_q6_k_avx2(const void *w, const void *a, int n) {
    const BlockQ6_K *x = w;
    const BlockQ8_K *y = a;
    const __m256i m4 = _mm256_set1_epi8(0x0F), m3 = _mm256_set1_epi8(3);
    __m256 acc = _mm256_setzero_ps();
    for (int i = 0; i < n / QK_K; i++) {
        const int8_t *sc = x[i].scales;
        int off = 0;
        for (int g = 0; g < 16; g++) off += sc[g] * y[i].bsums[g];
        __m256i sumi = _mm256_setzero_si256();
        for (int h = 0; h < 2; h++) {
            const uint8_t *ql = x[i].ql + 64 * h, *qh = x[i].qh + 32 * h;
            const int8_t *s = sc + 8 * h, *p = y[i].qs + 128 * h;
            __m256i l0 = _mm256_loadu_si256((const __m256i *)ql);
            __m256i l1 = _mm256_loadu_si256((const __m256i *)(ql + 32));
            __m256i hb = _mm256_loadu_si256((const __m256i *)qh);
            __m256i q1 = _mm256_or_si256(_mm256_and_si256(l0, m4), _mm256_slli_epi16(_mm256_and_si256(hb, m3), 4));
            __m256i q2 = _mm256_or_si256(_mm256_and_si256(l1, m4),
                                         _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 2), m3), 4));
            __m256i q3 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4),
                                         _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 4), m3), 4));
            __m256i q4 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4),
                                         _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 6), m3), 4));
            __m256i qs[4] = {q1, q2, q3, q4};
            for (int k = 0; k < 4; k++) {
                __m256i pr = _mm256_maddubs_epi16(qs[k], _mm256_loadu_si256((const __m256i *)(p + 32 * k)));
                __m256i scv = _mm256_set_m128i(_mm_set1_epi16(s[2 * k + 1]), _mm_set1_epi16(s[2 * k]));
                sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(pr, scv));
            }
        }
        sumi = _mm256_sub_epi32(sumi, _mm256_setr_epi32(32 * off, 0, 0, 0, 0, 0, 0, 0));
        acc = _mm256_fmadd_ps(_mm256_set1_ps(h2f(x[i].d) * y[i].d), _mm256_cvtepi32_ps(sumi), acc);
    }
    return hsum8(acc);
}

float quant_dot_f16f16_avx2(const uint16_t *x, const uint16_t *y, int n) {
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        s0 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(x + i))),
                             _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(y + i))), s0);
        s1 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(x + i + 8))),
                             _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(y + i + 8))), s1);
    }
    float s = hsum8(_mm256_add_ps(s0, s1));
    for (; i < n; i++) s += h2f(x[i]) * h2f(y[i]);
    return s;
}

void quant_axpy_f16_avx2(float *y, float a, const uint16_t *x, int n) {
    __m256 av = _mm256_set1_ps(a);
    int i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_fmadd_ps(av, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(x + i))),
                                                _mm256_loadu_ps(y + i)));
    for (; i < n; i++) y[i] += a * h2f(x[i]);
}

void quant_f32_to_fp16_row_avx2(uint16_t *dst, const float *src, int n) {
    int i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(dst + i), _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
    for (; i < n; i++) dst[i] = _cvtss_sh(src[i], _MM_FROUND_TO_NEAREST_INT);
}

/* ---- llama.cpp-order numerics (see quant.h); bit-identical to the *_ref versions ---- */

/* The vector exp. Lanes whose n = round(x*log2 e) is beyond +-126 (2^n not a normal float)
 * are redone by the reference; elsewhere j * 2^n is one rounding, like the scalef it mirrors. */
static inline __m256 vexp8(__m256 x) {
    const __m256 shift = _mm256_set1_ps(0x1.8p23f);
    __m256 z = _mm256_fmadd_ps(x, _mm256_set1_ps(0x1.715476p+0f), shift);
    __m256 n = _mm256_sub_ps(z, shift);
    __m256 b = _mm256_fnmadd_ps(n, _mm256_set1_ps(0x1.7f7d1cp-20f), _mm256_fnmadd_ps(n, _mm256_set1_ps(0x1.62e4p-1f), x));
    __m256 u = _mm256_mul_ps(b, b);
    __m256 j = _mm256_fmadd_ps(
        _mm256_fmadd_ps(_mm256_fmadd_ps(_mm256_set1_ps(0x1.0e4020p-7f), b, _mm256_set1_ps(0x1.573e2ep-5f)), u,
                        _mm256_fmadd_ps(_mm256_set1_ps(0x1.555e66p-3f), b, _mm256_set1_ps(0x1.fffdb6p-2f))),
        u, _mm256_fmadd_ps(_mm256_set1_ps(0x1.ffffecp-1f), b, _mm256_set1_ps(1.0f)));
    __m256 an = _mm256_andnot_ps(_mm256_set1_ps(-0.0f), n);
    /* NaN lanes compare false and fall through to the fast path, like the vector code */
    int slow = _mm256_movemask_ps(_mm256_cmp_ps(an, _mm256_set1_ps(126.0f), _CMP_GT_OQ));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    __m256 res = _mm256_mul_ps(j, _mm256_castsi256_ps(e));
    if (slow) {
        float xs[8], rs[8];
        _mm256_storeu_ps(xs, x);
        _mm256_storeu_ps(rs, res);
        for (int l = 0; l < 8; l++)
            if (slow & (1 << l)) rs[l] = quant_vexpf_ref(xs[l]);
        res = _mm256_loadu_ps(rs);
    }
    return res;
}

double quant_softmax_exp_row_avx2(float *y, const float *x, float max, int n) {
    const __m256 mx = _mm256_set1_ps(max);
    double sum = 0.0;
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256 lo = vexp8(_mm256_sub_ps(_mm256_loadu_ps(x + i), mx));
        __m256 hi = vexp8(_mm256_sub_ps(_mm256_loadu_ps(x + i + 8), mx));
        _mm256_storeu_ps(y + i, lo);
        _mm256_storeu_ps(y + i + 8, hi);
        sum += (double)hsum8(_mm256_add_ps(lo, hi)); /* = the 16-lane tree */
    }
    if (i < n) {
        float t[16];
        for (int l = 0; l < 16; l++) t[l] = i + l < n ? x[i + l] : max;
        __m256 lo = vexp8(_mm256_sub_ps(_mm256_loadu_ps(t), mx));
        __m256 hi = vexp8(_mm256_sub_ps(_mm256_loadu_ps(t + 8), mx));
        _mm256_storeu_ps(t, lo);
        _mm256_storeu_ps(t + 8, hi);
        for (int l = 0; l < 16; l++) {
            if (i + l < n) y[i + l] = t[l];
            else t[l] = 0.0f; /* padding: exp(-inf) */
        }
        sum += (double)hsum8(_mm256_add_ps(_mm256_loadu_ps(t), _mm256_loadu_ps(t + 8)));
    }
    return sum;
}

void quant_swiglu_row_avx2(float *y, const float *gate, const float *up, int n) {
    int nv = n & ~15, i = 0;
    const __m256 one = _mm256_set1_ps(1.0f), zero = _mm256_setzero_ps();
    for (; i < nv; i += 8) {
        __m256 g = _mm256_loadu_ps(gate + i);
        __m256 e = vexp8(_mm256_sub_ps(zero, g));
        _mm256_storeu_ps(y + i, _mm256_mul_ps(_mm256_div_ps(g, _mm256_add_ps(one, e)), _mm256_loadu_ps(up + i)));
    }
    for (; i < n; i++) y[i] = gate[i] / (1.0f + expf(-gate[i])) * up[i];
}

static inline __m256 ld_h8(const uint16_t *p) { return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p)); }

float quant_dot_f16_order_avx2(const uint16_t *x, const uint16_t *y, int n, int gemv) {
    if (!gemv && n % 16 == 0) {
        __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
        for (int i = 0; i < n; i += 16) {
            s0 = _mm256_fmadd_ps(ld_h8(x + i), ld_h8(y + i), s0);
            s1 = _mm256_fmadd_ps(ld_h8(x + i + 8), ld_h8(y + i + 8), s1);
        }
        return hsum8(_mm256_add_ps(s0, s1));
    }
    __m256 a[8];
    for (int k = 0; k < 8; k++) a[k] = _mm256_setzero_ps();
    int np = n & ~63;
    for (int i = 0; i < np; i += 64)
        for (int k = 0; k < 8; k++) a[k] = _mm256_fmadd_ps(ld_h8(x + i + 8 * k), ld_h8(y + i + 8 * k), a[k]);
    /* accumulator j is a[2j] (lanes 0-7) and a[2j+1] (lanes 8-15) */
    __m256 lo = _mm256_add_ps(_mm256_add_ps(a[0], a[4]), _mm256_add_ps(a[2], a[6]));
    __m256 hi = _mm256_add_ps(_mm256_add_ps(a[1], a[5]), _mm256_add_ps(a[3], a[7]));
    double s = (double)hsum8(_mm256_add_ps(lo, hi));
    for (int i = np; i < n; i++) s += (double)(h2f(x[i]) * h2f(y[i]));
    return (float)s;
}

/* The V rows are read in accumulator-row order (positions r, r + 64, ... for gemv), which the
 * hardware prefetcher cannot follow, and at long contexts they come from memory (the weights
 * stream through the caches every step): each position hints the row PV_AHEAD positions on,
 * which an accumulator row PV_AHEAD later reads. Hints change no arithmetic. Measured on
 * tg64@d512 (2026-12-03, 10 alternating rounds each): PV 2 / K 8 +4.7%, 4 / 16 +2.6% more,
 * 8 / 32 -2.7%. */
#ifndef PV_AHEAD
#define PV_AHEAD 4
#endif
/* Scores read K rows in order but across pages that need not be adjacent: hint K_AHEAD on. */
#ifndef K_AHEAD
#define K_AHEAD 16
#endif

/* Accumulator row r of the reference (positions r, r + stride, r + 2 stride, ...: the same
 * additions in the same order) over outputs [d0, d0 + 8 NV), kept in registers, so no
 * accumulator is cleared, loaded or stored per position. */
static inline __attribute__((always_inline)) void pv_cols(float *a, const uint16_t *p16, const uint16_t *const *blk,
                                                          size_t ld, int n, int d0, int r, int stride, const int NV) {
    __m256 s[8];
    for (int k = 0; k < NV; k++) s[k] = _mm256_setzero_ps();
    for (int p = r; p < n; p += stride) {
        __m256 w = _mm256_set1_ps(h2f(p16[p]));
        const uint16_t *v = quant_kv_row(blk, p, ld) + d0;
        if (p + PV_AHEAD < n) /* the row a later accumulator row reads here: see PV_AHEAD */
            for (int k = 0; k < NV; k += 4)
                _mm_prefetch((const char *)(quant_kv_row(blk, p + PV_AHEAD, ld) + d0 + 8 * k), _MM_HINT_T0);
        for (int k = 0; k < NV; k++) s[k] = _mm256_fmadd_ps(ld_h8(v + 8 * k), w, s[k]);
    }
    for (int k = 0; k < NV; k++) _mm256_storeu_ps(a + d0 + 8 * k, s[k]);
}

/* 64 outputs per pass over the V rows while they last (each row read once per pass), then 32. */
static void pv_row(float *a, const uint16_t *p16, const uint16_t *const *blk, size_t ld, int n, int hd, int r,
                   int stride) {
    int d0 = 0;
    for (; d0 + 64 <= hd; d0 += 64) pv_cols(a, p16, blk, ld, n, d0, r, stride, 8);
    for (; d0 < hd; d0 += 32) pv_cols(a, p16, blk, ld, n, d0, r, stride, 4);
}

void quant_attn_pv_avx2(float *out, float *acc, const uint16_t *p16, const uint16_t *const *blk, size_t ld, int n, int hd,
                        int gemv) {
    if (hd % 32) {
        quant_attn_pv_ref(out, acc, p16, blk, ld, n, hd, gemv);
        return;
    }
    /* the reference's accumulator rows: position p goes to row (p / 16) % nacc * 16 + p % 16 */
    int nacc = gemv ? 4 : 1, rows = 16 * nacc;
    size_t bs = (size_t)16 * hd;
    for (int j = 0; j < nacc; j++)
        for (int l = 0; l < 16; l++) pv_row(acc + (size_t)j * bs + (size_t)l * hd, p16, blk, ld, n, hd, 16 * j + l, rows);
    for (int d = 0; d < hd; d += 8) {
        __m256 L[16];
        for (int l = 0; l < 16; l++) {
            const float *a = acc + (size_t)l * hd + d;
            L[l] = gemv ? _mm256_add_ps(_mm256_add_ps(_mm256_loadu_ps(a), _mm256_loadu_ps(a + 2 * bs)),
                                        _mm256_add_ps(_mm256_loadu_ps(a + bs), _mm256_loadu_ps(a + 3 * bs)))
                        : _mm256_loadu_ps(a);
        }
        for (int l = 0; l < 8; l++) L[l] = _mm256_add_ps(L[l], L[l + 8]);
        for (int l = 0; l < 4; l++) L[l] = _mm256_add_ps(L[l], L[l + 4]);
        _mm256_storeu_ps(out + d, _mm256_add_ps(_mm256_add_ps(L[0], L[2]), _mm256_add_ps(L[1], L[3])));
    }
}

/* Q8_0 / Q8_1 activation rows, as quant_quantize_act_ref; other formats go to the reference. */
void quant_quantize_act_avx2(QuantType act, const float *x, void *dst, int n) {
    if (act != QT_Q8_0 && act != QT_Q8_1) {
        quant_quantize_act_ref(act, x, dst, n);
        return;
    }
    const __m256 sign = _mm256_set1_ps(-0.0f);
    const __m256i perm = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (int i = 0; i < n / 32; i++, x += 32) {
        __m256 v[4], mx = _mm256_setzero_ps();
        for (int k = 0; k < 4; k++) {
            v[k] = _mm256_loadu_ps(x + 8 * k);
            mx = _mm256_max_ps(mx, _mm256_andnot_ps(sign, v[k]));
        }
        __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(mx), _mm256_extractf128_ps(mx, 1));
        m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
        float amax = _mm_cvtss_f32(m4);
        float d = amax / 127.0f, id = amax != 0.0f ? 127.0f / amax : 0.0f;
        __m256 idv = _mm256_set1_ps(id);
        __m256i q[4];
        for (int k = 0; k < 4; k++) q[k] = _mm256_cvtps_epi32(_mm256_mul_ps(v[k], idv)); /* round to nearest even */
        __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
        p = _mm256_permutevar8x32_epi32(p, perm);
        int8_t *qs;
        if (act == QT_Q8_0) {
            BlockQ8_0 *b = (BlockQ8_0 *)dst + i;
            b->d = quant_f32_to_fp16(d);
            qs = b->qs;
        } else {
            BlockQ8_1 *b = (BlockQ8_1 *)dst + i;
            b->d = quant_f32_to_fp16(d);
            qs = b->qs;
            __m256i s = _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
            __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
            s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4E));
            s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0xB1));
            b->s = quant_f32_to_fp16((float)_mm_cvtsi128_si32(s4) * d);
        }
        _mm256_storeu_si256((__m256i *)qs, p);
    }
}

/* Scores for all positions with q converted once; the common head sizes (multiples of 64) stay
 * in registers, anything else goes through the row dot. */
void quant_attn_scores_avx2(float *s, const uint16_t *q, const uint16_t *const *blk, size_t ld, int n, int hd, int gemv,
                            float scale) {
    if (hd != 64) {
        for (int p = 0; p < n; p++) s[p] = quant_dot_f16_order_avx2(q, quant_kv_row(blk, p, ld), hd, gemv) * scale;
        return;
    }
    __m256 qv[8];
    for (int k = 0; k < 8; k++) qv[k] = ld_h8(q + 8 * k);
    for (int p = 0; p < n; p++) {
        const uint16_t *kr = quant_kv_row(blk, p, ld);
        if (p + K_AHEAD < n) {
            const char *kn = (const char *)quant_kv_row(blk, p + K_AHEAD, ld);
            _mm_prefetch(kn, _MM_HINT_T0);
            _mm_prefetch(kn + 64, _MM_HINT_T0);
        }
        __m256 a[8];
        for (int k = 0; k < 8; k++) a[k] = _mm256_fmadd_ps(qv[k], ld_h8(kr + 8 * k), _mm256_setzero_ps());
        float r;
        if (gemv) { /* four 16-lane products, (0+2)+(1+3), then the tree */
            __m256 lo = _mm256_add_ps(_mm256_add_ps(a[0], a[4]), _mm256_add_ps(a[2], a[6]));
            __m256 hi = _mm256_add_ps(_mm256_add_ps(a[1], a[5]), _mm256_add_ps(a[3], a[7]));
            r = hsum8(_mm256_add_ps(lo, hi));
        } else { /* one 16-lane fused multiply-add chain over the four steps */
            __m256 lo = a[0], hi = a[1];
            for (int k = 1; k < 4; k++) {
                lo = _mm256_fmadd_ps(qv[2 * k], ld_h8(kr + 16 * k), lo);
                hi = _mm256_fmadd_ps(qv[2 * k + 1], ld_h8(kr + 16 * k + 8), hi);
            }
            r = hsum8(_mm256_add_ps(lo, hi));
        }
        s[p] = r * scale;
    }
}

/* ---- expf as glibc computes it (sysdeps/ieee754/flt-32/e_expf.c, glibc >= 2.27), 4 lanes in
 * double: k = round(x * 32/ln2), r = x * 32/ln2 - k, 2^(k/32) from a 32-entry table,
 * s * (C0 r^3 + C1 r^2 + C2 r + 1) with the fused multiply-adds of its FMA build, rounded to
 * float once. Only for |x| < 88 (glibc's fast path); other lanes go to expf itself. */
static const uint64_t EXPF_TAB[32] = {
    0x3ff0000000000000ull, 0x3fefd9b0d3158574ull, 0x3fefb5586cf9890full, 0x3fef9301d0125b51ull,
    0x3fef72b83c7d517bull, 0x3fef54873168b9aaull, 0x3fef387a6e756238ull, 0x3fef1e9df51fdee1ull,
    0x3fef06fe0a31b715ull, 0x3feef1a7373aa9cbull, 0x3feedea64c123422ull, 0x3feece086061892dull,
    0x3feebfdad5362a27ull, 0x3feeb42b569d4f82ull, 0x3feeab07dd485429ull, 0x3feea47eb03a5585ull,
    0x3feea09e667f3bcdull, 0x3fee9f75e8ec5f74ull, 0x3feea11473eb0187ull, 0x3feea589994cce13ull,
    0x3feeace5422aa0dbull, 0x3feeb737b0cdc5e5ull, 0x3feec49182a3f090ull, 0x3feed503b23e255dull,
    0x3feee89f995ad3adull, 0x3feeff76f2fb5e47ull, 0x3fef199bdd85529cull, 0x3fef3720dcef9069ull,
    0x3fef5818dcfba487ull, 0x3fef7c97337b9b5full, 0x3fefa4afa2a490daull, 0x3fefd0765b6e4540ull
};

void quant_expf_row_avx2(float *y, const float *x, int n) {
    const __m256d invln2n = _mm256_set1_pd(0x1.71547652b82fep+0 * 32), shift = _mm256_set1_pd(0x1.8p+52);
    const __m256d c0 = _mm256_set1_pd(0x1.c6af84b912394p-5 / 32 / 32 / 32), c1 = _mm256_set1_pd(0x1.ebfce50fac4f3p-3 / 32 / 32),
                  c2 = _mm256_set1_pd(0x1.62e42ff0c52d6p-1 / 32), one = _mm256_set1_pd(1.0);
    const __m128 lim = _mm_set1_ps(88.0f), absmask = _mm_castsi128_ps(_mm_set1_epi32(0x7fffffff));
    int i = 0;
    for (; i + 4 <= n; i += 4) {
        __m128 xf = _mm_loadu_ps(x + i);
        /* not |x| < 88 (large, NaN): glibc's slow path, so expf itself */
        if (_mm_movemask_ps(_mm_cmp_ps(_mm_and_ps(xf, absmask), lim, _CMP_NLT_UQ))) {
            for (int k = 0; k < 4; k++) y[i + k] = expf(x[i + k]);
            continue;
        }
        __m256d xd = _mm256_cvtps_pd(xf);
        __m256d z = _mm256_mul_pd(invln2n, xd);
        __m256d kd = _mm256_add_pd(z, shift);
        __m256i ki = _mm256_castpd_si256(kd);
        kd = _mm256_sub_pd(kd, shift);
        __m256d r = _mm256_sub_pd(z, kd);
        __m256i t = _mm256_i64gather_epi64((const long long *)EXPF_TAB, _mm256_and_si256(ki, _mm256_set1_epi64x(31)), 8);
        t = _mm256_add_epi64(t, _mm256_slli_epi64(ki, 52 - 5));
        __m256d s = _mm256_castsi256_pd(t);
        __m256d p = _mm256_fmadd_pd(c0, r, c1);
        __m256d r2 = _mm256_mul_pd(r, r);
        __m256d q = _mm256_fmadd_pd(c2, r, one);
        q = _mm256_fmadd_pd(p, r2, q);
        _mm_storeu_ps(y + i, _mm256_cvtpd_ps(_mm256_mul_pd(q, s)));
    }
    for (; i < n; i++) y[i] = expf(x[i]);
}
