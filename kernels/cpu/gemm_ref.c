/* gemm_ref.c: weight packing, the plain-C reference SGEMM (the specification the SIMD variants
 * are tested against) and the run-time choice of variant. Compiled without ISA flags: it must not
 * execute any SIMD variant code itself. Written for clarity; must not use intrinsics. */
#include "kernels/gemm.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

size_t gemm_packed_floats(int n, int k)
{
    size_t panels = ((size_t)n + GEMM_NR - 1) / GEMM_NR;
    return panels * (size_t)k * GEMM_NR;
}

void gemm_pack(float *dst, const float *w, int ldw, int n, int k)
{
    for (int p = 0; p * GEMM_NR < n; p++) {
        float *d = dst + (size_t)p * k * GEMM_NR;
        for (int kk = 0; kk < k; kk++)
            for (int j = 0; j < GEMM_NR; j++) {
                int row = p * GEMM_NR + j;
                d[(size_t)kk * GEMM_NR + j] = row < n ? w[(size_t)row * ldw + kk] : 0.0f;
            }
    }
}

size_t gemm_work_floats(void) { return (size_t)GEMM_MC * GEMM_KC; }

static void sgemm_ref(float *c, int ldc, const float *a, int lda, const float *wp, int m, int n, int k,
                      const GemmEpilogue *ep, float *work)
{
    (void)work;
    for (int i = 0; i < m; i++) {
        for (int j = 0; j < n; j++) {
            const float *panel = wp + (size_t)(j / GEMM_NR) * k * GEMM_NR + j % GEMM_NR;
            double acc = 0.0;
            for (int kk = 0; kk < k; kk++) acc += (double)a[(size_t)i * lda + kk] * panel[(size_t)kk * GEMM_NR];
            float v = (float)acc;
            if (ep && ep->bias) v += ep->bias[j];
            if (ep && ep->res) v += ep->res[(size_t)i * ep->ldres + j];
            if (ep && ep->gelu) v = 0.5f * v * (1.0f + erff(v * 0.70710678118654752f));
            c[(size_t)i * ldc + j] = v;
        }
    }
}

static const GemmOps gemm_ref = {.isa = "ref", .sgemm = sgemm_ref};

const GemmOps *gemm_ops_ref(void) { return &gemm_ref; }

const GemmOps *gemm_avx2_table(void);
const GemmOps *gemm_avx512_table(void);

const GemmOps *gemm_ops_avx2(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return gemm_avx2_table();
#endif
    return NULL;
}

const GemmOps *gemm_ops_avx512(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
        __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        return gemm_avx512_table();
#endif
    return NULL;
}

const GemmOps *gemm_ops(void)
{
    static const GemmOps *chosen; /* benign race: every thread computes the same answer */
    if (chosen) return chosen;
    const char *force = getenv("WEAVER_CPU_ISA");
    const GemmOps *pick = NULL;
    if (!force || strcmp(force, "avx512") == 0) pick = gemm_ops_avx512();
    if (!pick && (!force || strcmp(force, "avx512") == 0 || strcmp(force, "avx2") == 0)) pick = gemm_ops_avx2();
    if (!pick) pick = gemm_ops_ref();
    chosen = pick;
    return chosen;
}
