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
#include "kernels/cpu/ops_avx512_math.h"

#define MR 12

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
    const __m512i *bp = bpv;
    __m512 accf[MR][2];
    __m512i acci[MR][2];
#pragma GCC unroll 12
    for (int i = 0; i < R; i++) {
        accf[i][0] = accf[i][1] = _mm512_setzero_ps();
        acci[i][0] = acci[i][1] = _mm512_setzero_si512();
    }
    for (int g = 0; g < ng; g++) {
        __m512i b0 = _mm512_load_si512(bp), b1 = _mm512_load_si512(bp + 1);
#pragma GCC unroll 12
        for (int i = 0; i < R; i++) {
            __m512i av = _mm512_set1_epi32((int)ap[i]);
            if (int8) {
                acci[i][0] = _mm512_dpbusd_epi32(acci[i][0], av, b0);
                acci[i][1] = _mm512_dpbusd_epi32(acci[i][1], av, b1);
            } else {
                accf[i][0] = _mm512_dpbf16_ps(accf[i][0], (__m512bh)av, (__m512bh)b0);
                accf[i][1] = _mm512_dpbf16_ps(accf[i][1], (__m512bh)av, (__m512bh)b1);
            }
        }
        ap += MR;
        bp += 2;
    }
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
        __m512 v0 = accf[i][0], v1 = accf[i][1];
        if (int8) {
            __m512i a0 = acci[i][0], a1 = acci[i][1];
            if (first) {
                __m512i zi = _mm512_set1_epi32(z[i]);
                a0 = _mm512_sub_epi32(a0, _mm512_mullo_epi32(zi, sum0));
                a1 = _mm512_sub_epi32(a1, _mm512_mullo_epi32(zi, sum1));
            }
            __m512 ti = _mm512_set1_ps(t[i]);
            v0 = _mm512_mul_ps(_mm512_cvtepi32_ps(a0), _mm512_mul_ps(ti, s0));
            v1 = _mm512_mul_ps(_mm512_cvtepi32_ps(a1), _mm512_mul_ps(ti, s1));
        }
        if (first) {
            v0 = _mm512_add_ps(v0, bias0);
            v1 = _mm512_add_ps(v1, bias1);
            if (res) {
                v0 = _mm512_add_ps(v0, _mm512_maskz_loadu_ps(m0, res + (size_t)i * ldres));
                v1 = _mm512_add_ps(v1, _mm512_maskz_loadu_ps(m1, res + (size_t)i * ldres + 16));
            }
        } else {
            v0 = _mm512_add_ps(v0, _mm512_maskz_loadu_ps(m0, ci));
            v1 = _mm512_add_ps(v1, _mm512_maskz_loadu_ps(m1, ci + 16));
        }
        if (gelu) {
            v0 = gelu16(v0);
            v1 = gelu16(v1);
        }
        _mm512_mask_storeu_ps(ci, m0, v0);
        _mm512_mask_storeu_ps(ci + 16, m1, v1);
    }
}

static inline __attribute__((always_inline)) void gemm_lowp(const int int8, float *c, int ldc, const float *a,
                                                            int lda, const void *wp, int m, int n, int k,
                                                            const GemmEpilogue *ep, float *work)
{
    const float *bias = ep ? ep->bias : NULL, *res = ep ? ep->res : NULL;
    int ldres = ep ? ep->ldres : 0, gelu = ep && ep->gelu;
    const int per = int8 ? 4 : 2;                       /* k values in a 32-bit group */
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
            gemm_pack_a((float *)packed, (const float *)rowmajor, ng, mc, ng, MR);
            for (int j0 = 0; j0 < n; j0 += GEMM_NR) {
                int cols = n - j0 < GEMM_NR ? n - j0 : GEMM_NR;
                __mmask16 m0 = cols >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << cols) - 1);
                __mmask16 m1 = cols >= 32 ? (__mmask16)0xffff : cols <= 16 ? 0 : (__mmask16)((1u << (cols - 16)) - 1);
                /* a panel is ngk groups of 128 bytes; this k block starts at group k0 / per */
                const char *bp = (const char *)wp + ((size_t)(j0 / GEMM_NR) * ngk + (size_t)k0 / per) * 128;
                const float *bj = bias ? bias + j0 : NULL;
                for (int r0 = 0; r0 < mc; r0 += MR) {
                    int rows = mc - r0 < MR ? mc - r0 : MR;
                    float *ct = c + (size_t)(i0 + r0) * ldc + j0;
                    const float *rt = res ? res + (size_t)(i0 + r0) * ldres + j0 : NULL;
                    const uint32_t *at = packed + (size_t)r0 * ng;
                    const float *ti = t + r0, *wsj = int8 ? wscale + j0 : NULL;
                    const int32_t *zi = z + r0, *wsumj = int8 ? wsum + j0 : NULL;
                    if (rows > 8)
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
