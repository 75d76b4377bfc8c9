/* gemm_avx512.c: AVX-512F variant of the packed-weight SGEMM (compiled with -mavx512f etc. by
 * CMake; only reached after gemm_ops() checked the CPU). A kc-deep slice of up to GEMM_MC rows of
 * A is packed into the work buffer as micro-panels of MR rows ([kk][MR]); each W panel (32
 * columns, [kk][32]) is swept over them by a 12x32 register tile (24 zmm accumulators, one FMA
 * per accumulator per kk). Bias, residual and GELU are applied in registers when a tile is stored. Must agree
 * with gemm_ref.c within the kernel tests' tolerance. */
#include "kernels/gemm.h"

#include <immintrin.h>

#include "kernels/cpu/gemm_pack.h"

#include "kernels/cpu/gemm_store_avx512.h"

#define MR 12


/* One tile of R (<= MR) rows x 32 columns over kc. first: c = acc + bias + res; else c += acc.
 * gelu (only on the last k block): GELU in registers before the store. */
static inline __attribute__((always_inline)) void tile(const int R, int kc, const float *ap, const float *bp,
                                                       float *c, int ldc, int rows, __mmask16 m0, __mmask16 m1,
                                                       int first, int gelu, const float *bias, const float *res,
                                                       int ldres)
{
    __m512 acc[MR][2];
#pragma GCC unroll 12
    for (int i = 0; i < R; i++) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
    for (int kk = 0; kk < kc; kk++) {
        __m512 b0 = _mm512_load_ps(bp), b1 = _mm512_load_ps(bp + 16);
#pragma GCC unroll 12
        for (int i = 0; i < R; i++) {
            __m512 av = _mm512_set1_ps(ap[i]);
            acc[i][0] = _mm512_fmadd_ps(av, b0, acc[i][0]);
            acc[i][1] = _mm512_fmadd_ps(av, b1, acc[i][1]);
        }
        ap += MR;
        bp += GEMM_NR;
    }
    __m512 bias0 = _mm512_setzero_ps(), bias1 = _mm512_setzero_ps();
    if (first && bias) {
        bias0 = _mm512_maskz_loadu_ps(m0, bias);
        bias1 = _mm512_maskz_loadu_ps(m1, bias + 16);
    }
#pragma GCC unroll 12
    for (int i = 0; i < R; i++) {
        if (i >= rows) break;
        float *ci = c + (size_t)i * ldc;
        __m512 v0 = acc[i][0], v1 = acc[i][1];
        gemm_store_row(ci, v0, v1, m0, m1, first, bias0, bias1, res ? res + (size_t)i * ldres : NULL, gelu);
    }
}

static void sgemm_avx512(float *c, int ldc, const float *a, int lda, const float *wp, int m, int n, int k,
                         const GemmEpilogue *ep, float *work)
{
    const float *bias = ep ? ep->bias : NULL, *res = ep ? ep->res : NULL;
    int ldres = ep ? ep->ldres : 0, gelu = ep && ep->gelu;
    for (int i0 = 0; i0 < m; i0 += GEMM_MC) {
        int mc = m - i0 < GEMM_MC ? m - i0 : GEMM_MC;
        for (int k0 = 0; k0 < k; k0 += GEMM_KC) {
            int kc = k - k0 < GEMM_KC ? k - k0 : GEMM_KC;
            int first = k0 == 0, g = gelu && k0 + kc >= k;
            gemm_pack_a(work, a + (size_t)i0 * lda + k0, lda, mc, kc, MR);
            for (int j0 = 0; j0 < n; j0 += GEMM_NR) {
                int cols = n - j0 < GEMM_NR ? n - j0 : GEMM_NR;
                __mmask16 m0 = cols >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << cols) - 1);
                __mmask16 m1 = cols >= 32 ? (__mmask16)0xffff : cols <= 16 ? 0 : (__mmask16)((1u << (cols - 16)) - 1);
                const float *bp = wp + (size_t)(j0 / GEMM_NR) * k * GEMM_NR + (size_t)k0 * GEMM_NR;
                const float *bj = bias ? bias + j0 : NULL;
                /* prefetch the next W panel into L2, a slice per tile, so no tile waits on memory
                 * at a panel's start (weights are too big for the L3 and stream every GEMM) */
                const char *nb = (const char *)(bp + (size_t)k * GEMM_NR);
                const size_t nbytes = j0 + GEMM_NR < n ? (size_t)kc * GEMM_NR * sizeof(float) : 0;
                const size_t per = (nbytes / (size_t)((mc + MR - 1) / MR) + 63) & ~(size_t)63;
                for (int r0 = 0; r0 < mc; r0 += MR) {
                    int rows = mc - r0 < MR ? mc - r0 : MR;
                    for (size_t o = (size_t)(r0 / MR) * per; o < (size_t)(r0 / MR + 1) * per && o < nbytes; o += 64)
                        _mm_prefetch(nb + o, _MM_HINT_T1);
                    float *ct = c + (size_t)(i0 + r0) * ldc + j0;
                    const float *rt = res ? res + (size_t)(i0 + r0) * ldres + j0 : NULL;
                    const float *at = work + (size_t)r0 * kc;
                    if (rows > 8)
                        tile(12, kc, at, bp, ct, ldc, rows, m0, m1, first, g, bj, rt, ldres);
                    else if (rows > 4)
                        tile(8, kc, at, bp, ct, ldc, rows, m0, m1, first, g, bj, rt, ldres);
                    else
                        tile(4, kc, at, bp, ct, ldc, rows, m0, m1, first, g, bj, rt, ldres);
                }
            }
        }
    }
}

static const GemmOps gemm_avx512 = {.isa = "avx512", .sgemm = sgemm_avx512};

const GemmOps *gemm_avx512_table(void) { return &gemm_avx512; }
