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

/* ---- Reduced precision (embedder.precision = bf16 | int8 on the cpu) ------------------------
 * Same contract as sgemm (C = A W^T, then the epilogue; A and C F32), with W packed at load by
 * gemm_lowp_pack into a byte blob of gemm_lowp_packed_bytes(). The plain-C reference
 * (gemm_lowp_ref) is the specification; the AVX-512 variant is tested against it.
 * - bf16: W and A rounded to bf16 (nearest even), products summed in F32. Panel p holds, for each
 *   pair q < ceil(k/2), the 32 pairs (W[p*NR + j][2q], W[p*NR + j][2q + 1]) (the operand of
 *   vdpbf16ps), zero past n and k.
 * - int8: W per row (output feature) symmetric, q = round(W / s_j) in [-127, 127],
 *   s_j = max|W_j| / 127; A per row (token) asymmetric u8, a = round(A / t_i) + z_i in [0, 255].
 *   Asymmetric, not symmetric-offset-by-128: it spends all 256 levels on the row's actual range
 *   (post-GELU rows are nearly one-sided) and vpdpbusd wants u8 x s8 anyway; the zero point comes
 *   out as one correction per output, z_i * sum_k q_jk (the per-row sums stored with the weights).
 *   Panel p holds, for each quad q < ceil(k/4), the 32 quads W[p*NR + j][4q .. 4q + 3] (the
 *   operand of vpdpbusd), then the n_pad scales (F32) and the n_pad sums (int32). */
typedef enum GemmPrecision { GEMM_FP32 = 0, GEMM_BF16, GEMM_INT8 } GemmPrecision;

typedef void (*GemmLowpFn)(float *c, int ldc, const float *a, int lda, const void *wpacked, int m, int n, int k,
                           const GemmEpilogue *ep, float *work);

typedef struct GemmLowpOps {
    const char *isa; /* "ref", "avx512" */
    GemmPrecision prec;
    GemmLowpFn gemm; /* work: gemm_work_floats() floats, 64-byte aligned */
} GemmLowpOps;

const char *gemm_precision_name(GemmPrecision p); /* "fp32", "bf16", "int8" */
size_t gemm_lowp_packed_bytes(GemmPrecision p, int n, int k);
/* Packs w[n][k] (row stride ldw) into dst (gemm_lowp_packed_bytes bytes, 64-byte aligned). */
void gemm_lowp_pack(GemmPrecision p, void *dst, const float *w, int ldw, int n, int k);
/* The reference, for any p other than GEMM_FP32 (NULL for that). */
const GemmLowpOps *gemm_lowp_ref(GemmPrecision p);
/* The AVX-512 variant when this CPU has AVX-512 BF16 (bf16) or AVX-512 VNNI (int8) and
 * $WEAVER_CPU_ISA does not cap it below avx512; else NULL (the caller falls back to fp32). */
const GemmLowpOps *gemm_lowp_ops(GemmPrecision p);

#endif
