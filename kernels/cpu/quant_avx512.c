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

/* Q4_1 weights come packed (quant_pack_rows): row r's block b is in group r / 8 at
 * g + b * 160, its d at 2k, m at 16 + 2k and quants at 32 + 16k for k = r % 8. */
enum { P41_BLOCK = 8 * sizeof(BlockQ4_1) };

/* The packed group holding row r (any packed type: a group is the bytes of its eight rows). */
static inline const uint8_t *pack_group(const void *W, size_t rb, int r) {
    return (const uint8_t *)W + (size_t)(r / 8) * 8 * rb;
}

static inline uint16_t ld16(const uint8_t *p) {
    uint16_t v;
    memcpy(&v, p, 2);
    return v;
}

/* The weights stream from memory once per step, and the hardware prefetcher alone left the tile
 * kernels waiting on them; prefetching changes no arithmetic. Row r's eighth of the next group
 * (its bytes: one row's worth, rb), one hint per block while the row runs, so the group after
 * this one arrives spread over this group's eight rows. Past
 * the chunk's last row too: the next chunk (whichever thread takes it) or the next matrix is
 * what streams next, and a prefetch never faults. */
static inline const char *tile_prefetch(const void *W, size_t rb, int r) {
    return (const char *)pack_group(W, rb, r + 8) + (size_t)(r % 8) * rb;
}

VNNI static ALWAYS_INLINE void q41_rows(float *out, size_t ldo, const void *W, size_t rb, int nb, int r0, int r1,
                                        const uint8_t *qs, const float *dp, const float *sy, int t0, int nt, const int NP) {
    const __m512i m4 = _mm512_set1_epi8(0x0F);
    for (int r = r0; r < r1; r++) {
        const uint8_t *g = pack_group(W, rb, r);
        int k = r % 8;
        __m512 acc[PAIRS];
#pragma GCC unroll 8
        for (int p = 0; p < NP; p++) acc[p] = _mm512_setzero_ps();
        __m512 summ = _mm512_setzero_ps();
        const char *pf = tile_prefetch(W, rb, r);
        for (int b = 0; b < nb; b++) {
            const uint8_t *xb = g + (size_t)b * P41_BLOCK;
            if ((size_t)b * 64 < rb) _mm_prefetch(pf + (size_t)b * 64, _MM_HINT_T0);
            __m128i t = _mm_loadu_si128((const __m128i *)(xb + 32 + 16 * k));
            __m512i w = _mm512_and_si512(_mm512_broadcast_i64x4(_mm256_set_m128i(_mm_srli_epi16(t, 4), t)), m4);
            __m512 dw = _mm512_set1_ps(h2f(ld16(xb + 2 * k)));
            summ = _mm512_add_ps(summ, _mm512_mul_ps(_mm512_set1_ps(h2f(ld16(xb + 16 + 2 * k))), _mm512_loadu_ps(sy + (size_t)b * MT)));
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

/* Q8_0 weights come packed too: group r / 8 at g + b * 272, row k's d at 2k, quants at 16 + 32k. */
enum { P80_BLOCK = 8 * sizeof(BlockQ8_0) };

VNNI static ALWAYS_INLINE void q80_rows(float *out, size_t ldo, const void *W, size_t rb, int nb, int r0, int r1,
                                        const uint8_t *qs, const float *dp, const int32_t *nc, int t0, int nt,
                                        const int NP) {
    const __m512i bias = _mm512_set1_epi8((char)0x80);
    for (int r = r0; r < r1; r++) {
        const uint8_t *g = pack_group(W, rb, r);
        int k = r % 8;
        __m512 acc[PAIRS];
#pragma GCC unroll 8
        for (int p = 0; p < NP; p++) acc[p] = _mm512_setzero_ps();
        const char *pf = tile_prefetch(W, rb, r);
        for (int b = 0; b < nb; b++) {
            const uint8_t *xb = g + (size_t)b * P80_BLOCK;
            if ((size_t)b * 64 < rb) _mm_prefetch(pf + (size_t)b * 64, _MM_HINT_T0);
            /* w + 128 as unsigned; the per-lane correction -128 * sum(a) restores w * a exactly */
            __m512i w = _mm512_xor_si512(_mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(xb + 16 + 32 * k))), bias);
            __m512 dw = _mm512_set1_ps(h2f(ld16(xb + 2 * k)));
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

/* ---- Single-token matvec: eight weight rows against one activation row ----
 * A decode step has one activation row, so the tiles above would leave half of every dpbusd
 * empty, and the per-row dot (quant_avx2.c) is bound by its own fma chain. Here each 512-bit
 * register holds two rows, four registers carry eight rows, so the weight stream is the limit.
 * Every row keeps the per-row dot's float operations: its 8 integer lane sums (4 products
 * each), one fma per lane and block with d_w * d_a, hsum8's tree, then + the Q4_1 block-sum
 * term summed in block order. */

/* Prepared activation, per block: 64 quant bytes as the kernel multiplies them, 16 scale floats,
 * then (Q8_0) 16 correction lanes. */
size_t quant_matvec_bytes(int ncols) {
    size_t nb = (size_t)(ncols > 0 ? ncols : 0) / 32;
    return nb * 3 * 64 + 64;
}

static inline uint8_t *mv_base(void *vec) { return (uint8_t *)(((uintptr_t)vec + 63) & ~(uintptr_t)63); }

VNNI void quant_matvec_prep_vnni(int wtype, void *vec, const void *act, int ncols) {
    int nb = ncols / 32;
    uint8_t *qs = mv_base(vec);
    float *sc = (float *)(qs + (size_t)nb * 64);
    int32_t *nc = (int32_t *)(qs + (size_t)nb * 128);
    for (int b = 0; b < nb; b++) {
        uint8_t *q = qs + (size_t)b * 64;
        float *s = sc + (size_t)b * 16;
        if (wtype == QT_Q4_1) {
            /* the 32 quants (the kernel broadcasts each half to the four rows of a register);
             * scales [d x8, s x8] against the packed [d0..d7, m0..m7] */
            const BlockQ8_1 *y = (const BlockQ8_1 *)act + b;
            memcpy(q, y->qs, 32);
            memset(q + 32, 0, 32);
            for (int k = 0; k < 8; k++) {
                s[k] = h2f(y->d);
                s[8 + k] = h2f(y->s);
            }
        } else {
            /* Q8_0 rows come as [A, B] (32 bytes each), +128 as unsigned; the correction lanes
             * -128 * (sum of each lane's 4 activation bytes) restore w * a exactly. */
            const BlockQ8_0 *y = (const BlockQ8_0 *)act + b;
            memcpy(q, y->qs, 32);
            memcpy(q + 32, y->qs, 32);
            for (int k = 0; k < 16; k++) s[k] = h2f(y->d);
            __m512i c = _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_set1_epi8((char)0x80), _mm512_loadu_si512(q));
            _mm512_storeu_si512(nc + (size_t)b * 16, _mm512_sub_epi32(_mm512_setzero_si512(), c));
        }
    }
}

/* Prefetch distance in row groups: the next groups' bytes are hinted a few lines per block. */
#ifndef MV_PF_GROUPS
#define MV_PF_GROUPS 2
#endif

/* Hints one group's worth of lines of the stream at pf, spread over the nb blocks. */
static ALWAYS_INLINE void mv_prefetch(const char *pf, int b, int per_block) {
    for (int j = 0; j < per_block; j++) {
        const char *p = pf + ((size_t)b * per_block + j) * 64;
        _mm_prefetch(p, _MM_HINT_T0);
    }
}

/* Four rows' sums reduced as hsum8 does: lo holds each row's lanes 0..3 in its 128-bit quarter,
 * hi its lanes 4..7; row k's sum ends in lane 4k. */
VNNI static inline __m512 hsum8_quads(__m512 lo, __m512 hi) {
    __m512 v = _mm512_add_ps(lo, hi);
    v = _mm512_add_ps(v, _mm512_permute_ps(v, _MM_SHUFFLE(1, 0, 3, 2)));
    return _mm512_add_ps(v, _mm512_movehdup_ps(v));
}

VNNI void quant_matvec_q4_1_vnni(float *out, const void *W, size_t rb, int ncols, int r0, int r1, const void *vec) {
    int nb = ncols / 32;
    const uint8_t *qs = mv_base((void *)vec);
    const float *sc = (const float *)(qs + (size_t)nb * 64);
    const __m512i m4 = _mm512_set1_epi8(0x0F);
    /* rows 0..3 (4..7) of the group: each row's d product in its own 128-bit quarter */
    const __m512i i03 = _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3);
    const __m512i i47 = _mm512_add_epi32(i03, _mm512_set1_epi32(4));
    for (int r = r0 & ~7; r < r1; r += 8) {
        const uint8_t *g = pack_group(W, rb, r);
        const char *pf = (const char *)g + (size_t)MV_PF_GROUPS * 8 * rb;
        __m512 l0 = _mm512_setzero_ps(), h0 = l0, l1 = l0, h1 = l0, summ = l0;
        for (int b = 0; b < nb; b++) {
            const uint8_t *xb = g + (size_t)b * P41_BLOCK;
            mv_prefetch(pf, b, (int)(P41_BLOCK / 64) + 1);
            /* [d_k * d_a for k < 8, m_k * s_a for k < 8]; the m products add up per row in block
             * order, as the dot's summ */
            __m512 p = _mm512_mul_ps(_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)xb)),
                                     _mm512_load_ps(sc + (size_t)b * 16));
            summ = _mm512_add_ps(summ, p);
            __m512i alo = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)(qs + (size_t)b * 64)));
            __m512i ahi = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)(qs + (size_t)b * 64 + 16)));
            __m512i z0 = _mm512_loadu_si512(xb + 32), z1 = _mm512_loadu_si512(xb + 96);
            __m512 d0 = _mm512_permutexvar_ps(i03, p), d1 = _mm512_permutexvar_ps(i47, p);
            __m512i lo0 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_and_si512(z0, m4), alo);
            __m512i hi0 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_and_si512(_mm512_srli_epi16(z0, 4), m4), ahi);
            __m512i lo1 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_and_si512(z1, m4), alo);
            __m512i hi1 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_and_si512(_mm512_srli_epi16(z1, 4), m4), ahi);
            l0 = _mm512_fmadd_ps(d0, _mm512_cvtepi32_ps(lo0), l0);
            h0 = _mm512_fmadd_ps(d0, _mm512_cvtepi32_ps(hi0), h0);
            l1 = _mm512_fmadd_ps(d1, _mm512_cvtepi32_ps(lo1), l1);
            h1 = _mm512_fmadd_ps(d1, _mm512_cvtepi32_ps(hi1), h1);
        }
        float s0[16], s1[16], sm[16];
        _mm512_storeu_ps(s0, hsum8_quads(l0, h0));
        _mm512_storeu_ps(s1, hsum8_quads(l1, h1));
        _mm512_storeu_ps(sm, summ);
        for (int k = 0; k < 8; k++)
            if (r + k >= r0 && r + k < r1) out[r + k] = (k < 4 ? s0[4 * k] : s1[4 * (k - 4)]) + sm[8 + k];
    }
}

/* Packed rows: the same bytes as the eight rows of a group, one stream for the kernels above.
 * The last group is padded with zero rows. */
size_t quant_pack_bytes(int wtype, int rows, int ncols) {
    if ((wtype != QT_Q4_1 && wtype != QT_Q8_0) || !quant_matvec_fn(wtype, QUANT_ISA_BEST) || ncols % 32 || rows < 1)
        return 0;
    return (size_t)((rows + 7) / 8) * 8 * quant_row_bytes(wtype, ncols);
}

/* Per group of eight rows and block: the rows' fp16 scales (Q4_1: d x8 then m x8; Q8_0: d x8),
 * then their quants row after row. */
void quant_pack_rows(int wtype, void *dst, const void *src, int rows, int ncols) {
    size_t rb = quant_row_bytes(wtype, ncols), bb = quant_block_bytes(wtype), nh = wtype == QT_Q4_1 ? 2 : 1;
    size_t nq = bb - 2 * nh; /* quant bytes per block */
    int nb = ncols / 32;
    for (int g = 0; g < (rows + 7) / 8; g++)
        for (int b = 0; b < nb; b++) {
            uint8_t *o = (uint8_t *)dst + (size_t)g * 8 * rb + (size_t)b * 8 * bb;
            memset(o, 0, 8 * bb);
            for (int k = 0; k < 8 && g * 8 + k < rows; k++) {
                const uint8_t *x = (const uint8_t *)src + (size_t)(g * 8 + k) * rb + (size_t)b * bb;
                for (size_t h = 0; h < nh; h++) memcpy(o + 16 * h + 2 * k, x + 2 * h, 2);
                memcpy(o + 16 * nh + nq * k, x + 2 * nh, nq);
            }
        }
}

VNNI void quant_matvec_q8_0_vnni(float *out, const void *W, size_t rb, int ncols, int r0, int r1, const void *vec) {
    int nb = ncols / 32;
    const uint8_t *qs = mv_base((void *)vec);
    const float *sc = (const float *)(qs + (size_t)nb * 64);
    const int32_t *nc = (const int32_t *)(qs + (size_t)nb * 128);
    const __m512i bias = _mm512_set1_epi8((char)0x80);
    __m512i didx[4]; /* pair k: row 2k's d in lanes 0..7, row 2k+1's in 8..15 */
    for (int k = 0; k < 4; k++)
        didx[k] = _mm512_inserti64x4(_mm512_set1_epi32(2 * k), _mm256_set1_epi32(2 * k + 1), 1);
    for (int r = r0 & ~7; r < r1; r += 8) {
        const uint8_t *g = pack_group(W, rb, r);
        const char *pf = (const char *)g + (size_t)MV_PF_GROUPS * 8 * rb;
        __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
        for (int b = 0; b < nb; b++) {
            const uint8_t *xb = g + (size_t)b * P80_BLOCK;
            mv_prefetch(pf, b, (int)(P80_BLOCK / 64) + 1);
            __m512 d = _mm512_castps256_ps512(
                _mm256_mul_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)xb)), _mm256_load_ps(sc + (size_t)b * 16)));
            __m512i a = _mm512_load_si512(qs + (size_t)b * 64), c = _mm512_load_si512(nc + (size_t)b * 16);
#pragma GCC unroll 4
            for (int k = 0; k < 4; k++) {
                __m512i w = _mm512_xor_si512(_mm512_loadu_si512(xb + 16 + 64 * k), bias);
                __m512i i = _mm512_dpbusd_epi32(c, w, a);
                acc[k] = _mm512_fmadd_ps(_mm512_permutexvar_ps(didx[k], d), _mm512_cvtepi32_ps(i), acc[k]);
            }
        }
        for (int k = 0; k < 4; k++) {
            float a, b;
            hsum8_pair(acc[k], &a, &b);
            if (r + 2 * k >= r0 && r + 2 * k < r1) out[r + 2 * k] = a;
            if (r + 2 * k + 1 >= r0 && r + 2 * k + 1 < r1) out[r + 2 * k + 1] = b;
        }
    }
}
