/* gemm_avx2.c: AVX2+FMA variant of the packed-weight SGEMM (compiled with -mavx2 -mfma by CMake;
 * only reached after gemm_ops() checked the CPU). Same blocking as gemm_avx512.c; the register
 * tile is 6 rows x 16 columns (12 ymm accumulators), run on each half of a 32-column W panel.
 * Must agree with gemm_ref.c within the kernel tests' tolerance. */
#include "kernels/gemm.h"

#include <immintrin.h>

#include "kernels/cpu/gemm_pack.h"

#include "kernels/cpu_ops.h"

#define MR 6

const CpuOps *cpu_ops_avx2_table(void);


static inline __m256i lane_mask(int cols) /* first cols (0..8) lanes set */
{
    const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(cols), idx);
}

/* One tile of MR rows x 16 columns (cols valid) over kc. first: c = acc + bias + res; else c += acc. */
static void tile(int kc, const float *ap, const float *bp, float *c, int ldc, int rows, int cols, int first,
                 const float *bias, const float *res, int ldres)
{
    __m256 acc[MR][2];
#pragma GCC unroll 6
    for (int i = 0; i < MR; i++) acc[i][0] = acc[i][1] = _mm256_setzero_ps();
    for (int kk = 0; kk < kc; kk++) {
        __m256 b0 = _mm256_load_ps(bp), b1 = _mm256_load_ps(bp + 8);
#pragma GCC unroll 6
        for (int i = 0; i < MR; i++) {
            __m256 av = _mm256_broadcast_ss(ap + i);
            acc[i][0] = _mm256_fmadd_ps(av, b0, acc[i][0]);
            acc[i][1] = _mm256_fmadd_ps(av, b1, acc[i][1]);
        }
        ap += MR;
        bp += GEMM_NR;
    }
    __m256i k0 = lane_mask(cols), k1 = lane_mask(cols - 8);
    __m256 bias0 = _mm256_setzero_ps(), bias1 = _mm256_setzero_ps();
    if (first && bias) {
        bias0 = _mm256_maskload_ps(bias, k0);
        bias1 = _mm256_maskload_ps(bias + 8, k1);
    }
    for (int i = 0; i < rows; i++) {
        float *ci = c + (size_t)i * ldc;
        __m256 v0 = acc[i][0], v1 = acc[i][1];
        if (first) {
            v0 = _mm256_add_ps(v0, bias0);
            v1 = _mm256_add_ps(v1, bias1);
            if (res) {
                v0 = _mm256_add_ps(v0, _mm256_maskload_ps(res + (size_t)i * ldres, k0));
                v1 = _mm256_add_ps(v1, _mm256_maskload_ps(res + (size_t)i * ldres + 8, k1));
            }
        } else {
            v0 = _mm256_add_ps(v0, _mm256_maskload_ps(ci, k0));
            v1 = _mm256_add_ps(v1, _mm256_maskload_ps(ci + 8, k1));
        }
        _mm256_maskstore_ps(ci, k0, v0);
        _mm256_maskstore_ps(ci + 8, k1, v1);
    }
}

static void sgemm_avx2(float *c, int ldc, const float *a, int lda, const float *wp, int m, int n, int k,
                       const GemmEpilogue *ep, float *work)
{
    const float *bias = ep ? ep->bias : NULL, *res = ep ? ep->res : NULL;
    int ldres = ep ? ep->ldres : 0, gelu = ep && ep->gelu;
    void (*gelu_fn)(float *, size_t) = gelu ? cpu_ops_avx2_table()->gelu : NULL;
    for (int i0 = 0; i0 < m; i0 += GEMM_MC) {
        int mc = m - i0 < GEMM_MC ? m - i0 : GEMM_MC;
        for (int k0 = 0; k0 < k; k0 += GEMM_KC) {
            int kc = k - k0 < GEMM_KC ? k - k0 : GEMM_KC;
            int first = k0 == 0, last = k0 + kc >= k;
            gemm_pack_a(work, a + (size_t)i0 * lda + k0, lda, mc, kc, MR);
            for (int j0 = 0; j0 < n; j0 += 16) {
                int cols = n - j0 < 16 ? n - j0 : 16;
                const float *bp = wp + (size_t)(j0 / GEMM_NR) * k * GEMM_NR + (size_t)k0 * GEMM_NR + j0 % GEMM_NR;
                const float *bj = bias ? bias + j0 : NULL;
                for (int r0 = 0; r0 < mc; r0 += MR) {
                    int rows = mc - r0 < MR ? mc - r0 : MR;
                    float *ct = c + (size_t)(i0 + r0) * ldc + j0;
                    const float *rt = res ? res + (size_t)(i0 + r0) * ldres + j0 : NULL;
                    tile(kc, work + (size_t)r0 * kc, bp, ct, ldc, rows, cols, first, bj, rt, ldres);
                    if (last && gelu_fn)
                        for (int i = 0; i < rows; i++) gelu_fn(ct + (size_t)i * ldc, (size_t)cols);
                }
            }
        }
    }
}

static const GemmOps gemm_avx2 = {.isa = "avx2", .sgemm = sgemm_avx2};

const GemmOps *gemm_avx2_table(void) { return &gemm_avx2; }
