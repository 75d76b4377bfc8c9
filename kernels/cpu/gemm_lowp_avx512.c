/* gemm_lowp_avx512.c: AVX-512 variants of the reduced-precision GEMMs (compiled with
 * -mavx512bf16 -mavx512vnni etc. by CMake; only reached after gemm_lowp_ops() checked the CPU).
 * Same blocking as gemm_avx512.c: a kc-deep slice of up to GEMM_MC rows of A is converted (bf16
 * pairs, or u8 quads) into the work buffer, row-major, then packed as micro-panels of MR rows of
 * 32-bit groups ([q][MR], gemm_pack_a moves 32-bit values whatever they hold); each W panel
 * (32 columns) is swept over them by a 12x32 register tile, one vdpbf16ps (2 products per lane) or
 * vpdpbusd (4 products per lane) per accumulator per group. Must agree with gemm_lowp_ref.c
 * within the kernel tests' tolerance; the int8 sums are exact, so only the F32 epilogue rounds. */
#include "kernels/gemm.h"

#include <immintrin.h>
#include <stdint.h>

#include "kernels/cpu/gemm_lowp.h"
#include "kernels/cpu/gemm_pack.h"
#include "kernels/cpu/gemm_store_avx512.h"

/* Register tile heights: 12 rows x 32 columns for bf16 (24 accumulators, as gemm_avx512.c), 8 for
 * int8, where GCC 12 keeps 24 vpdpbusd accumulators in registers only with copies between them
 * (measured: the 8-row tile runs about 2x the 12-row one). */
#define MR 12
#define MR_INT8 8

/* Work buffer layout (floats): packed groups, then the row-major groups, then (int8) the rows'
 * steps and zero points. Both group areas hold GEMM_MC x GEMM_KC/2 32-bit values at most. */
#define WORK_ROWMAJOR ((size_t)GEMM_MC * GEMM_KC / 2)
#define WORK_PARAMS ((size_t)GEMM_MC * GEMM_KC)

/* Rows r < mc of a[:, 0:kc] as bf16 pairs, dst[r][q] (q < ceil(kc/2)), padded with zeros. */
static void rows_to_bf16(uint32_t *dst, const float *a, int lda, int mc, int kc)
{
    int kp = (kc + 1) / 2;
    for (int r = 0; r < mc; r++) {
        const float *s = a + (size_t)r * lda;
        uint32_t *d = dst + (size_t)r * kp;
        for (int kk = 0; kk < kc; kk += 32) {
            int left = kc - kk;
            __mmask16 lo = left >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1);
            __mmask16 hi = left >= 32 ? (__mmask16)0xffff : left <= 16 ? 0 : (__mmask16)((1u << (left - 16)) - 1);
            __m512bh v = _mm512_cvtne2ps_pbh(_mm512_maskz_loadu_ps(hi, s + kk + 16), _mm512_maskz_loadu_ps(lo, s + kk));
            int pairs = (left + 1) / 2;
            __mmask16 pm = pairs >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << pairs) - 1);
            _mm512_mask_storeu_epi32(d + kk / 2, pm, (__m512i)v);
        }
    }
}

/* Rows r < mc of a[:, 0:kc] as u8 quads with row r's step t[r] and zero point z[r],
 * dst[r][q] (q < ceil(kc/4)), padded with z (the padding meets zero weights). */
static void rows_to_u8(uint32_t *dst, const float *a, int lda, int mc, int kc, const float *t, const int32_t *z)
{
    int kq = (kc + 3) / 4;
    for (int r = 0; r < mc; r++) {
        const float *s = a + (size_t)r * lda;
        uint8_t *d = (uint8_t *)(dst + (size_t)r * kq);
        const __m512 inv = _mm512_set1_ps(1.0f / t[r]);
        const __m512i zv = _mm512_set1_epi32(z[r]), lo = _mm512_setzero_si512(), hi = _mm512_set1_epi32(255);
        for (int kk = 0; kk < kq * 4; kk += 16) {
            int left = kc - kk;
            __mmask16 m = left >= 16 ? (__mmask16)0xffff : left <= 0 ? 0 : (__mmask16)((1u << left) - 1);
            __m512 v = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, s + kk), inv);
            __m512i q = _mm512_add_epi32(_mm512_cvt_roundps_epi32(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC), zv);
            q = _mm512_min_epi32(_mm512_max_epi32(q, lo), hi);
            int store = kq * 4 - kk < 16 ? kq * 4 - kk : 16;
            _mm_mask_storeu_epi8(d + kk, (__mmask16)((1u << store) - 1), _mm512_cvtepi32_epi8(q));
        }
    }
}

/* Rows' quantisation parameters over the whole of k (SIMD min/max, then the shared formula). */
static void rows_q8_params(const float *a, int lda, int mc, int k, float *t, int32_t *z)
{
    for (int r = 0; r < mc; r++) {
        const float *s = a + (size_t)r * lda;
        __m512 mn = _mm512_setzero_ps(), mx = _mm512_setzero_ps();
        for (int kk = 0; kk < k; kk += 16) {
            int left = k - kk;
            __mmask16 m = left >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1);
            __m512 v = _mm512_maskz_loadu_ps(m, s + kk); /* masked lanes read 0, inside the range */
            mn = _mm512_min_ps(mn, v);
            mx = _mm512_max_ps(mx, v);
        }
        gemm_q8_range_params(_mm512_reduce_min_ps(mn), _mm512_reduce_max_ps(mx), &t[r], &z[r]);
    }
}

/* bf16: the 12 x 32 tile's F32 sums over ng pairs of k, into acc[i][0..1] (i < R). */
static inline __attribute__((always_inline)) void sum_bf16(const int R, int ng, const uint32_t *ap,
                                                           const __m512i *bp, __m512i acc[MR][2])
{
    __m512 s[MR][2];
#pragma GCC unroll 12
    for (int i = 0; i < R; i++) s[i][0] = s[i][1] = _mm512_setzero_ps();
    for (int g = 0; g < ng; g++) {
        __m512bh b0 = (__m512bh)_mm512_load_si512(bp), b1 = (__m512bh)_mm512_load_si512(bp + 1);
#pragma GCC unroll 12
        for (int i = 0; i < R; i++) {
            __m512bh av = (__m512bh)_mm512_set1_epi32((int)ap[i]);
            s[i][0] = _mm512_dpbf16_ps(s[i][0], av, b0);
            s[i][1] = _mm512_dpbf16_ps(s[i][1], av, b1);
        }
        ap += MR;
        bp += 2;
    }
#pragma GCC unroll 12
    for (int i = 0; i < R; i++) {
        acc[i][0] = _mm512_castps_si512(s[i][0]);
        acc[i][1] = _mm512_castps_si512(s[i][1]);
    }
}

/* x += u8 quads of a times s8 quads of b. Inline asm on named variables, not the intrinsic on an
 * array: GCC 12 copied every accumulator around each _mm512_dpbusd_epi32 call (and spilled),
 * which made int8 slower than bf16. */
#define DPBUSD(x, a, b) __asm__("vpdpbusd %2, %1, %0" : "+v"(x) : "v"(a), "v"(b))

/* int8: the 8 x 32 tile's int32 sums over ng quads of k, into acc[i][0..1] (i < R). */
static inline __attribute__((always_inline)) void sum_int8(const int R, int ng, const uint32_t *ap,
                                                           const __m512i *bp, __m512i acc[MR][2])
{
    __m512i c00 = _mm512_setzero_si512(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00,
            c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00, c60 = c00, c61 = c00, c70 = c00, c71 = c00;
    for (int g = 0; g < ng; g++) {
        const __m512i b0 = _mm512_load_si512(bp), b1 = _mm512_load_si512(bp + 1);
        __m512i av;
#define ROW(i, x0, x1)                                                                                       \
    if (R > i) {                                                                                             \
        av = _mm512_set1_epi32((int)ap[i]);                                                                  \
        DPBUSD(x0, av, b0);                                                                                  \
        DPBUSD(x1, av, b1);                                                                                  \
    }
        ROW(0, c00, c01) ROW(1, c10, c11) ROW(2, c20, c21) ROW(3, c30, c31)
        ROW(4, c40, c41) ROW(5, c50, c51) ROW(6, c60, c61) ROW(7, c70, c71)
#undef ROW
        ap += MR_INT8;
        bp += 2;
    }
    const __m512i c[MR_INT8][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31},
                                   {c40, c41}, {c50, c51}, {c60, c61}, {c70, c71}};
#pragma GCC unroll 8
    for (int i = 0; i < R && i < MR_INT8; i++) {
        acc[i][0] = c[i][0];
        acc[i][1] = c[i][1];
    }
}

/* One tile of R (<= MR) rows x 32 columns over ng groups, then the store. int8: the integer sums
 * become F32 as (acc - z_i sum_j) t_i s_j on the first k block (the zero point's whole correction
 * at once), acc t_i s_j on later ones. first: c = v + bias + res; else c += v. gelu (last k block
 * only): GELU in registers before the store. */
static inline __attribute__((always_inline)) void tile(const int int8, const int R, int ng, const uint32_t *ap,
                                                       const void *bpv, float *c, int ldc, int rows, __mmask16 m0,
                                                       __mmask16 m1, int first, int gelu, const float *bias,
                                                       const float *res, int ldres, const float *t, const int32_t *z,
                                                       const float *ws, const int32_t *wsum)
{
    __m512i acc[MR][2]; /* int32 sums (int8) or F32 bits (bf16) */
    if (int8)
        sum_int8(R, ng, ap, bpv, acc);
    else
        sum_bf16(R, ng, ap, bpv, acc);
    __m512 bias0 = _mm512_setzero_ps(), bias1 = _mm512_setzero_ps(), s0 = bias0, s1 = bias0;
    __m512i sum0 = _mm512_setzero_si512(), sum1 = sum0;
    if (first && bias) {
        bias0 = _mm512_maskz_loadu_ps(m0, bias);
        bias1 = _mm512_maskz_loadu_ps(m1, bias + 16);
    }
    if (int8) {
        s0 = _mm512_maskz_loadu_ps(m0, ws);
        s1 = _mm512_maskz_loadu_ps(m1, ws + 16);
        sum0 = _mm512_maskz_loadu_epi32(m0, wsum);
        sum1 = _mm512_maskz_loadu_epi32(m1, wsum + 16);
    }
#pragma GCC unroll 12
    for (int i = 0; i < R; i++) {
        if (i >= rows) break;
        float *ci = c + (size_t)i * ldc;
        __m512 v0 = _mm512_castsi512_ps(acc[i][0]), v1 = _mm512_castsi512_ps(acc[i][1]);
        if (int8) {
            __m512i a0 = acc[i][0], a1 = acc[i][1];
            if (first) {
                __m512i zi = _mm512_set1_epi32(z[i]);
                a0 = _mm512_sub_epi32(a0, _mm512_mullo_epi32(zi, sum0));
                a1 = _mm512_sub_epi32(a1, _mm512_mullo_epi32(zi, sum1));
            }
            __m512 ti = _mm512_set1_ps(t[i]);
            v0 = _mm512_mul_ps(_mm512_cvtepi32_ps(a0), _mm512_mul_ps(ti, s0));
            v1 = _mm512_mul_ps(_mm512_cvtepi32_ps(a1), _mm512_mul_ps(ti, s1));
        }
        gemm_store_row(ci, v0, v1, m0, m1, first, bias0, bias1, res ? res + (size_t)i * ldres : NULL, gelu);
    }
}

static inline __attribute__((always_inline)) void gemm_lowp(const int int8, float *c, int ldc, const float *a,
                                                            int lda, const void *wp, int m, int n, int k,
                                                            const GemmEpilogue *ep, float *work)
{
    const float *bias = ep ? ep->bias : NULL, *res = ep ? ep->res : NULL;
    int ldres = ep ? ep->ldres : 0, gelu = ep && ep->gelu;
    const int per = int8 ? 4 : 2;                       /* k values in a 32-bit group */
    const int mr = int8 ? MR_INT8 : MR;
    const size_t ngk = ((size_t)k + per - 1) / per;     /* groups in a packed W row */
    const float *wscale = int8 ? (const float *)((const char *)wp + GEMM_Q8_DATA_BYTES(n, k)) : NULL;
    const int32_t *wsum = int8 ? (const int32_t *)(wscale + ((size_t)n + GEMM_NR - 1) / GEMM_NR * GEMM_NR) : NULL;
    uint32_t *packed = (uint32_t *)work, *rowmajor = (uint32_t *)(work + WORK_ROWMAJOR);
    float *t = work + WORK_PARAMS - 2 * GEMM_MC;
    int32_t *z = (int32_t *)(work + WORK_PARAMS - GEMM_MC);
    for (int i0 = 0; i0 < m; i0 += GEMM_MC) {
        int mc = m - i0 < GEMM_MC ? m - i0 : GEMM_MC;
        if (int8) rows_q8_params(a + (size_t)i0 * lda, lda, mc, k, t, z);
        for (int k0 = 0; k0 < k; k0 += GEMM_KC) {
            int kc = k - k0 < GEMM_KC ? k - k0 : GEMM_KC, ng = (kc + per - 1) / per;
            int first = k0 == 0, g = gelu && k0 + kc >= k;
            if (int8)
                rows_to_u8(rowmajor, a + (size_t)i0 * lda + k0, lda, mc, kc, t, z);
            else
                rows_to_bf16(rowmajor, a + (size_t)i0 * lda + k0, lda, mc, kc);
            gemm_pack_a((float *)packed, (const float *)rowmajor, ng, mc, ng, mr);
            for (int j0 = 0; j0 < n; j0 += GEMM_NR) {
                int cols = n - j0 < GEMM_NR ? n - j0 : GEMM_NR;
                __mmask16 m0 = cols >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << cols) - 1);
                __mmask16 m1 = cols >= 32 ? (__mmask16)0xffff : cols <= 16 ? 0 : (__mmask16)((1u << (cols - 16)) - 1);
                /* a panel is ngk groups of 128 bytes; this k block starts at group k0 / per */
                const char *bp = (const char *)wp + ((size_t)(j0 / GEMM_NR) * ngk + (size_t)k0 / per) * 128;
                const float *bj = bias ? bias + j0 : NULL;
                for (int r0 = 0; r0 < mc; r0 += mr) {
                    int rows = mc - r0 < mr ? mc - r0 : mr;
                    float *ct = c + (size_t)(i0 + r0) * ldc + j0;
                    const float *rt = res ? res + (size_t)(i0 + r0) * ldres + j0 : NULL;
                    const uint32_t *at = packed + (size_t)r0 * ng;
                    const float *ti = t + r0, *wsj = int8 ? wscale + j0 : NULL;
                    const int32_t *zi = z + r0, *wsumj = int8 ? wsum + j0 : NULL;
                    if (!int8 && rows > 8)
                        tile(int8, 12, ng, at, bp, ct, ldc, rows, m0, m1, first, g, bj, rt, ldres, ti, zi, wsj, wsumj);
                    else if (rows > 4)
                        tile(int8, 8, ng, at, bp, ct, ldc, rows, m0, m1, first, g, bj, rt, ldres, ti, zi, wsj, wsumj);
                    else
                        tile(int8, 4, ng, at, bp, ct, ldc, rows, m0, m1, first, g, bj, rt, ldres, ti, zi, wsj, wsumj);
                }
            }
        }
    }
}

static void gemm_bf16_avx512(float *c, int ldc, const float *a, int lda, const void *wp, int m, int n, int k,
                             const GemmEpilogue *ep, float *work)
{
    gemm_lowp(0, c, ldc, a, lda, wp, m, n, k, ep, work);
}

static void gemm_int8_avx512(float *c, int ldc, const float *a, int lda, const void *wp, int m, int n, int k,
                             const GemmEpilogue *ep, float *work)
{
    gemm_lowp(1, c, ldc, a, lda, wp, m, n, k, ep, work);
}

static const GemmLowpOps lowp_avx512[] = {
    {.isa = "avx512", .prec = GEMM_BF16, .gemm = gemm_bf16_avx512},
    {.isa = "avx512", .prec = GEMM_INT8, .gemm = gemm_int8_avx512},
};

const GemmLowpOps *gemm_lowp_avx512_table(GemmPrecision p) { return &lowp_avx512[p == GEMM_INT8]; }
