/* gemm.h: the encoder's linear layers, C[m][n] = A[m][k] W[n][k]^T + bias (+ res), optionally
 * followed by GELU (erf), with W packed once at load into the microkernels' panel layout.
 * The plain-C reference (gemm_ref) is the specification; the AVX2 and AVX-512 variants are
 * tested against it and picked at run time by gemm_ops(). Nothing here allocates, logs or exits:
 * the caller passes a work buffer of gemm_work_floats() floats (64-byte aligned). */
#ifndef WEAVER_GEMM_H
#define WEAVER_GEMM_H

#include <stddef.h>

/* Packed layout, shared by every variant: W's n rows (output features) are cut into panels of
 * GEMM_NR; panel p holds, for each kk < k, the GEMM_NR values W[p*NR + j][kk] (j < NR), zero
 * past n. So panel p starts at p * k * GEMM_NR floats. */
#define GEMM_NR 32
/* Cache blocking shared by the variants: a kc-deep slice of mc rows of A is packed into the work
 * buffer (mc * kc floats, about 400 KiB) and swept by every W panel. 264 rows cover a whole
 * 256-token encoder pack, so each weight panel streams from memory once per GEMM. */
#define GEMM_MC 264
#define GEMM_KC 384

/* Epilogue of one GEMM. bias may be NULL; res (row stride ldres) may be NULL and may alias
 * nothing that the GEMM reads; gelu applies 0.5 x (1 + erf(x / sqrt 2)) after bias and res. */
typedef struct GemmEpilogue {
    const float *bias;
    const float *res;
    int ldres;
    int gelu;
} GemmEpilogue;

typedef struct GemmOps {
    const char *isa; /* "ref", "avx2", "avx512" */
    /* c[m][n] (row stride ldc) = a[m][k] (row stride lda) times the packed W^T, then the
     * epilogue. c must not overlap a. work: gemm_work_floats() floats, 64-byte aligned. */
    void (*sgemm)(float *c, int ldc, const float *a, int lda, const float *wpacked, int m, int n, int k,
                  const GemmEpilogue *ep, float *work);
} GemmOps;

/* Floats the packed form of an [n][k] weight takes (n rounded up to GEMM_NR). */
size_t gemm_packed_floats(int n, int k);
/* Packs w[n][k] (row stride ldw) into dst (gemm_packed_floats(n, k) floats). */
void gemm_pack(float *dst, const float *w, int ldw, int n, int k);
/* Work buffer size for any variant's sgemm. */
size_t gemm_work_floats(void);

/* Best variant the CPU supports; $WEAVER_CPU_ISA = ref|avx2|avx512 forces a lower one. */
const GemmOps *gemm_ops(void);
/* A given variant, or NULL when this CPU (or build) lacks it. */
const GemmOps *gemm_ops_ref(void);
const GemmOps *gemm_ops_avx2(void);
const GemmOps *gemm_ops_avx512(void);

#endif
