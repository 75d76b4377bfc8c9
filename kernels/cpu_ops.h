/* cpu_ops.h: element-wise and row-wise CPU kernels of the encoder (layernorm, GELU, softmax,
 * bias add, residual) and the attention of one sequence and head. The plain-C reference versions (ops_*_ref) are the specification; the
 * AVX2 and AVX-512 versions are tested against them and picked at run time by cpu_ops().
 * GEMMs go through OpenBLAS, not here. Nothing here allocates, logs or exits. */
#ifndef WEAVER_CPU_OPS_H
#define WEAVER_CPU_OPS_H

#include <stddef.h>

typedef struct CpuOps {
    const char *isa; /* "ref", "avx2", "avx512" */
    /* out[r] = (x[r] - mean) / sqrt(var + eps) * w + b for each of rows rows of cols; out may be x. */
    void (*layernorm)(float *out, const float *x, const float *w, const float *b,
                      int rows, int cols, float eps);
    /* x = 0.5 x (1 + erf(x / sqrt 2)), in place. */
    void (*gelu)(float *x, size_t n);
    /* Each of rows rows (cols valid values, row stride ld) becomes softmax(row), in place. */
    void (*softmax)(float *x, int rows, int cols, int ld);
    /* out[r][c] = a[r][c] + bias[c] (+ res[r][c] when res != NULL). out may alias a. */
    void (*add_bias)(float *out, const float *a, const float *bias, const float *res,
                     int rows, int cols);
    /* Attention of one sequence and one head over its n tokens (no mask: every token sees every
     * token): ctx[i][:d] = sum_j softmax_j(scale * q[i] . k[j]) v[j], for i < n. q, k, v rows have
     * stride ld, ctx rows ldc. scratch: CPU_ATTN_SCRATCH(n, d) floats, 64-byte aligned. */
    void (*attention)(float *ctx, int ldc, const float *q, const float *k, const float *v, int ld,
                      int n, int d, float scale, float *scratch);
} CpuOps;

/* Floats of scratch an attention call over n tokens of head size d needs. */
#define CPU_ATTN_SCRATCH(n, d) ((size_t)((n) + (d)) * (size_t)(((n) + 15) & ~15))

/* Best variant the CPU supports; $WEAVER_CPU_ISA = ref|avx2|avx512 forces a lower one. */
const CpuOps *cpu_ops(void);
/* A given variant, or NULL when this CPU (or build) lacks it. */
const CpuOps *cpu_ops_ref(void);
const CpuOps *cpu_ops_avx2(void);
const CpuOps *cpu_ops_avx512(void);

/* Half-precision conversions (round to nearest even), used by loaders and the .npy writer. */
float cpu_f16_to_f32(unsigned short h);
unsigned short cpu_f32_to_f16(float f);
float cpu_bf16_to_f32(unsigned short h);

#endif
