/* quant_avx512.c: multi-token matmul tiles for Q4_1 and Q8_0 weights with AVX-512 VNNI.
 * A tile is one weight row against 16 tokens: the row's block is unpacked once, and each
 * 512-bit dpbusd multiplies it with the blocks of two tokens (lanes 0-7 and 8-15). Every
 * (row, token) keeps exactly the single-token kernel's float operations (8 lanes of integer
 * block sums, one fused multiply-add per lane and block, hsum8 at the end), so the output is
 * bit-identical to quant_dot_*_ref / _avx2; the tests check that.
 * The activation is prepared once per matmul (quant_matmul_prep), then shared by all row chunks.
 * Compiled with AVX-512 flags by file name; VNNI comes from a target attribute. Call only after
 * quant_matmul_fn() has checked the CPU. */
#include "kernels/quant.h"

#include <immintrin.h>
#include <string.h>

#define VNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")))

enum { MT = 16 };               /* tokens per tile */
enum { PAIRS = MT / 2 };

/* A prepared activation: per 16-token tile and 32-column block, the tokens' quants side by side
 * [MT][32], the pair scale vectors [PAIRS][16], Q4_1's block sums [MT] and Q8_0's corrections
 * [PAIRS][16]. */
enum { BLK_QS = MT * 32, BLK_DP = PAIRS * 64, BLK_SY = MT * 4, BLK_NC = PAIRS * 64 };
enum { BLK_BYTES = BLK_QS + BLK_DP + BLK_SY + BLK_NC };

size_t quant_matmul_tile_bytes(int ncols, int ntok) {
    size_t nb = (size_t)(ncols > 0 ? ncols : 0) / 32, tiles = (size_t)(ntok > 0 ? ntok + MT - 1 : 0) / MT;
    return tiles * nb * BLK_BYTES + 64;
}

static inline uint8_t *tile_base(void *tile, int nb, int t0) {
    uint8_t *b = (uint8_t *)(((uintptr_t)tile + 63) & ~(uintptr_t)63);
    return b + (size_t)(t0 / MT) * (size_t)nb * BLK_BYTES;
}

static inline float h2f(uint16_t h) { return _cvtsh_ss(h); }

/* Reduces the two 8-lane halves of v as hsum8 does (l + l+4, then (0+2) + (1+3)). */
VNNI static inline void hsum8_pair(__m512 v, float *lo, float *hi) {
    v = _mm512_add_ps(v, _mm512_shuffle_f32x4(v, v, _MM_SHUFFLE(2, 3, 0, 1)));
    v = _mm512_add_ps(v, _mm512_permute_ps(v, _MM_SHUFFLE(1, 0, 3, 2)));
    v = _mm512_add_ps(v, _mm512_movehdup_ps(v));
    *lo = _mm512_cvtss_f32(v);
    *hi = _mm_cvtss_f32(_mm512_extractf32x4_ps(v, 2));
}

/* Copies one tile's activation quants and builds its scale vectors; absent tokens are 0. */
VNNI static void prep_tile(uint8_t *base, const uint8_t *act, size_t as, int t0, int nt, int nb, int q81) {
    uint8_t *qs = base;
    float *dp = (float *)(base + (size_t)nb * BLK_QS), *sy = (float *)(base + (size_t)nb * (BLK_QS + BLK_DP));
    int32_t *negcorr = (int32_t *)(base + (size_t)nb * (BLK_QS + BLK_DP + BLK_SY));
    for (int b = 0; b < nb; b++) {
        float dy[MT] = {0};
        for (int t = 0; t < MT; t++) {
            uint8_t *dst = qs + ((size_t)b * MT + t) * 32;
            if (t < nt) {
                const uint8_t *blk = act + (size_t)(t0 + t) * as + (size_t)b * (q81 ? sizeof(BlockQ8_1) : sizeof(BlockQ8_0));
                if (q81) {
                    const BlockQ8_1 *y = (const BlockQ8_1 *)blk;
                    memcpy(dst, y->qs, 32);
                    dy[t] = h2f(y->d);
                    sy[(size_t)b * MT + t] = h2f(y->s);
                } else {
                    const BlockQ8_0 *y = (const BlockQ8_0 *)blk;
                    memcpy(dst, y->qs, 32);
                    dy[t] = h2f(y->d);
                }
            } else {
                memset(dst, 0, 32);
                if (q81) sy[(size_t)b * MT + t] = 0.0f;
            }
        }
        for (int p = 0; p < PAIRS; p++) {
            __m512 v = _mm512_insertf32x8(_mm512_castps256_ps512(_mm256_set1_ps(dy[2 * p])), _mm256_set1_ps(dy[2 * p + 1]), 1);
            _mm512_storeu_ps(dp + ((size_t)b * PAIRS + p) * 16, v);
            if (!q81) { /* -128 * (sum of each lane's 4 activation bytes): undoes the +128 on the weights */
                __m512i a = _mm512_loadu_si512(qs + ((size_t)b * MT + 2 * p) * 32);
                __m512i c = _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_set1_epi8((char)0x80), a);
                _mm512_storeu_si512(negcorr + ((size_t)b * PAIRS + p) * 16, _mm512_sub_epi32(_mm512_setzero_si512(), c));
            }
        }
    }
}

VNNI void quant_matmul_prep_vnni(int wtype, void *tile, const void *act, size_t act_stride, int ntok, int ncols) {
    int nb = ncols / 32;
    for (int t0 = 0; t0 < ntok; t0 += MT)
        prep_tile(tile_base(tile, nb, t0), act, act_stride, t0, ntok - t0 < MT ? ntok - t0 : MT, nb, wtype == QT_Q4_1);
}

/* The row loops take the pair count as a constant (ALWAYS_INLINE + a switch below), so the
 * accumulators stay in registers. */
#define ALWAYS_INLINE inline __attribute__((always_inline))

/* The weight rows stream from memory once per step: each row loop prefetches the row PF_ROWS
 * ahead (one hint per block, so every cache line of it), which the hardware prefetcher alone
 * does not keep up with. Prefetching changes no arithmetic. */
#ifndef PF_ROWS
#define PF_ROWS 4
#endif

VNNI static ALWAYS_INLINE void q41_rows(float *out, size_t ldo, const void *W, size_t rb, int nb, int r0, int r1,
                                        const uint8_t *qs, const float *dp, const float *sy, int t0, int nt, const int NP) {
    const __m512i m4 = _mm512_set1_epi8(0x0F);
    for (int r = r0; r < r1; r++) {
        const BlockQ4_1 *x = (const BlockQ4_1 *)((const uint8_t *)W + (size_t)r * rb);
        __m512 acc[PAIRS];
#pragma GCC unroll 8
        for (int p = 0; p < NP; p++) acc[p] = _mm512_setzero_ps();
        __m512 summ = _mm512_setzero_ps();
        const char *pf = r + PF_ROWS < r1 ? (const char *)W + (size_t)(r + PF_ROWS) * rb : NULL;
        for (int b = 0; b < nb; b++) {
            if (pf) _mm_prefetch(pf + (size_t)b * sizeof(BlockQ4_1), _MM_HINT_T0);
            __m128i t = _mm_loadu_si128((const __m128i *)x[b].qs);
            __m512i w = _mm512_and_si512(_mm512_broadcast_i64x4(_mm256_set_m128i(_mm_srli_epi16(t, 4), t)), m4);
            __m512 dw = _mm512_set1_ps(h2f(x[b].d));
            summ = _mm512_add_ps(summ, _mm512_mul_ps(_mm512_set1_ps(h2f(x[b].m)), _mm512_loadu_ps(sy + (size_t)b * MT)));
            const uint8_t *qb = qs + (size_t)b * MT * 32;
            const float *db = dp + (size_t)b * PAIRS * 16;
#pragma GCC unroll 8
            for (int p = 0; p < NP; p++) {
                __m512i i = _mm512_dpbusd_epi32(_mm512_setzero_si512(), w, _mm512_loadu_si512(qb + 64 * p));
                __m512 d = _mm512_mul_ps(dw, _mm512_loadu_ps(db + 16 * p));
                acc[p] = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(i), acc[p]);
            }
        }
        float sm[MT];
        _mm512_storeu_ps(sm, summ);
#pragma GCC unroll 8
        for (int p = 0; p < NP; p++) {
            float lo, hi;
            hsum8_pair(acc[p], &lo, &hi);
            out[(size_t)(t0 + 2 * p) * ldo + r] = lo + sm[2 * p];
            if (2 * p + 1 < nt) out[(size_t)(t0 + 2 * p + 1) * ldo + r] = hi + sm[2 * p + 1];
        }
    }
}

VNNI static ALWAYS_INLINE void q80_rows(float *out, size_t ldo, const void *W, size_t rb, int nb, int r0, int r1,
                                        const uint8_t *qs, const float *dp, const int32_t *nc, int t0, int nt,
                                        const int NP) {
    const __m512i bias = _mm512_set1_epi8((char)0x80);
    for (int r = r0; r < r1; r++) {
        const BlockQ8_0 *x = (const BlockQ8_0 *)((const uint8_t *)W + (size_t)r * rb);
        __m512 acc[PAIRS];
#pragma GCC unroll 8
        for (int p = 0; p < NP; p++) acc[p] = _mm512_setzero_ps();
        const char *pf = r + PF_ROWS < r1 ? (const char *)W + (size_t)(r + PF_ROWS) * rb : NULL;
        for (int b = 0; b < nb; b++) {
            if (pf) _mm_prefetch(pf + (size_t)b * sizeof(BlockQ8_0), _MM_HINT_T0);
            /* w + 128 as unsigned; the per-lane correction -128 * sum(a) restores w * a exactly */
            __m512i w = _mm512_xor_si512(_mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)x[b].qs)), bias);
            __m512 dw = _mm512_set1_ps(h2f(x[b].d));
            const uint8_t *qb = qs + (size_t)b * MT * 32;
            const float *db = dp + (size_t)b * PAIRS * 16;
            const int32_t *cb = nc + (size_t)b * PAIRS * 16;
#pragma GCC unroll 8
            for (int p = 0; p < NP; p++) {
                __m512i i = _mm512_dpbusd_epi32(_mm512_loadu_si512(cb + 16 * p), w, _mm512_loadu_si512(qb + 64 * p));
                __m512 d = _mm512_mul_ps(dw, _mm512_loadu_ps(db + 16 * p));
                acc[p] = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(i), acc[p]);
            }
        }
#pragma GCC unroll 8
        for (int p = 0; p < NP; p++) {
            float lo, hi;
            hsum8_pair(acc[p], &lo, &hi);
            out[(size_t)(t0 + 2 * p) * ldo + r] = lo;
            if (2 * p + 1 < nt) out[(size_t)(t0 + 2 * p + 1) * ldo + r] = hi;
        }
    }
}

#define NP_SWITCH(call)                                                                                                \
    switch (np) {                                                                                                      \
    case 1: call(1); break;                                                                                            \
    case 2: call(2); break;                                                                                            \
    case 3: call(3); break;                                                                                            \
    case 4: call(4); break;                                                                                            \
    case 5: call(5); break;                                                                                            \
    case 6: call(6); break;                                                                                            \
    case 7: call(7); break;                                                                                            \
    default: call(8); break;                                                                                           \
    }

VNNI void quant_matmul_q4_1_vnni(float *out, size_t ldo, const void *W, size_t rb, int ncols, int r0, int r1,
                                 const void *tile, int ntok) {
    int nb = ncols / 32;
    for (int t0 = 0; t0 < ntok; t0 += MT) {
        int nt = ntok - t0 < MT ? ntok - t0 : MT, np = (nt + 1) / 2;
        const uint8_t *qs = tile_base((void *)tile, nb, t0);
        const float *dp = (const float *)(qs + (size_t)nb * BLK_QS), *sy = (const float *)(qs + (size_t)nb * (BLK_QS + BLK_DP));
#define Q41(N) q41_rows(out, ldo, W, rb, nb, r0, r1, qs, dp, sy, t0, nt, N)
        NP_SWITCH(Q41)
#undef Q41
    }
}

VNNI void quant_matmul_q8_0_vnni(float *out, size_t ldo, const void *W, size_t rb, int ncols, int r0, int r1,
                                 const void *tile, int ntok) {
    int nb = ncols / 32;
    for (int t0 = 0; t0 < ntok; t0 += MT) {
        int nt = ntok - t0 < MT ? ntok - t0 : MT, np = (nt + 1) / 2;
        const uint8_t *qs = tile_base((void *)tile, nb, t0);
        const float *dp = (const float *)(qs + (size_t)nb * BLK_QS);
        const int32_t *nc = (const int32_t *)(qs + (size_t)nb * (BLK_QS + BLK_DP + BLK_SY));
#define Q80(N) q80_rows(out, ldo, W, rb, nb, r0, r1, qs, dp, nc, t0, nt, N)
        NP_SWITCH(Q80)
#undef Q80
    }
}
