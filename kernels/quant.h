/* quant.h: GGUF/GGML tensor types on the CPU: block layouts, dequantisation, quantisation of
 * activations, and row dot products (plain-C reference + AVX2 variants chosen at run time).
 * Plain C only; no allocation; nothing here knows about models or files. */
#ifndef WEAVER_QUANT_H
#define WEAVER_QUANT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" { /* the CUDA decoder kernels call the type facts */
#endif

/* Values are the GGML type ids stored in GGUF tensor infos. */
typedef enum QuantType {
    QT_F32 = 0,
    QT_F16 = 1,
    QT_Q4_0 = 2,
    QT_Q4_1 = 3,
    QT_Q8_0 = 8,
    QT_Q8_1 = 9,   /* activation format for Q4_1 */
    QT_Q4_K = 12,
    QT_Q5_K = 13,
    QT_Q6_K = 14,
    QT_Q8_K = 15,  /* activation format for the K-quants */
    QT_BF16 = 30,
} QuantType;

#define QK_32 32
#define QK_K 256

/* Block layouts (little-endian, packed exactly as in GGUF files). */
typedef struct { uint16_t d; uint8_t qs[16]; } BlockQ4_0;               /* 18 B / 32 */
typedef struct { uint16_t d, m; uint8_t qs[16]; } BlockQ4_1;            /* 20 B / 32 */
typedef struct { uint16_t d; int8_t qs[32]; } BlockQ8_0;                /* 34 B / 32 */
typedef struct { uint16_t d, s; int8_t qs[32]; } BlockQ8_1;             /* 36 B / 32, s = d*sum(qs) */
typedef struct { uint16_t d, dmin; uint8_t scales[12]; uint8_t qs[128]; } BlockQ4_K;        /* 144 B */
typedef struct { uint16_t d, dmin; uint8_t scales[12]; uint8_t qh[32]; uint8_t qs[128]; } BlockQ5_K; /* 176 B */
typedef struct { uint8_t ql[128]; uint8_t qh[64]; int8_t scales[16]; uint16_t d; } BlockQ6_K; /* 210 B */
typedef struct { float d; int8_t qs[256]; int16_t bsums[16]; } BlockQ8_K; /* 292 B */

/* Type facts. Unknown types: name "?", sizes 0, supported 0. */
const char *quant_type_name(int type);
int quant_type_supported(int type);      /* 1 when this build can dequantise and dot it */
int quant_block_elems(int type);         /* elements per block */
size_t quant_block_bytes(int type);      /* bytes per block */
/* Bytes of a row of n elements, 0 when n is not a multiple of the block size. */
size_t quant_row_bytes(int type, int64_t n);
/* The activation format a weight type is dotted against (Q8_0, Q8_1, Q8_K, BF16 or F32). */
QuantType quant_act_type(int wtype);

/* Scalar conversions. */
float quant_fp16_to_f32(uint16_t h);
uint16_t quant_f32_to_fp16(float f);     /* round to nearest even */
float quant_bf16_to_f32(uint16_t h);
uint16_t quant_f32_to_bf16(float f);   /* round to nearest even */

/* Dequantises n elements (n a multiple of the block size). */
void quant_dequant_row(int type, const void *src, float *dst, int64_t n);
/* Quantises an activation row of n floats into act_type (F32 = copy). */
void quant_quantize_act(QuantType act_type, const float *x, void *dst, int n);
void quant_quantize_act_ref(QuantType act_type, const float *x, void *dst, int n);
void quant_quantize_act_avx2(QuantType act_type, const float *x, void *dst, int n); /* same bits */

/* A row dot product: weight row of `wtype` against an activation row already in
 * quant_act_type(wtype). n is a multiple of the block size. */
typedef float (*QuantDotFn)(const void *w, const void *act, int n);

typedef enum QuantIsa { QUANT_ISA_REF = 0, QUANT_ISA_AVX2 = 1, QUANT_ISA_AVX512 = 2, QUANT_ISA_BEST = -1 } QuantIsa;
/* Dot function for a weight type and ISA (BEST = the fastest this CPU runs); NULL when none. */
QuantDotFn quant_dot_fn(int wtype, QuantIsa isa);
/* The ISA quant_dot_fn(.., BEST) picks here ("ref", "avx2"); WEAVER_QUANT_ISA=ref forces ref. */
QuantIsa quant_best_isa(void);
const char *quant_isa_name(QuantIsa isa);

/* Plain-C reference dots (the specification). */
float quant_dot_f32_ref(const void *w, const void *a, int n);
float quant_dot_f16_ref(const void *w, const void *a, int n);
float quant_dot_bf16_ref(const void *w, const void *a, int n);
float quant_dot_q4_0_ref(const void *w, const void *a, int n);
float quant_dot_q4_1_ref(const void *w, const void *a, int n);
float quant_dot_q8_0_ref(const void *w, const void *a, int n);
float quant_dot_q4_k_ref(const void *w, const void *a, int n);
float quant_dot_q5_k_ref(const void *w, const void *a, int n);
float quant_dot_q6_k_ref(const void *w, const void *a, int n);

/* AVX2 variants (kernels/cpu/quant_avx2.c); call only when the CPU has AVX2+FMA+F16C. */
float quant_dot_f32_avx2(const void *w, const void *a, int n);
float quant_dot_f16_avx2(const void *w, const void *a, int n);
float quant_dot_bf16_avx2(const void *w, const void *a, int n);
float quant_dot_q4_0_avx2(const void *w, const void *a, int n);
float quant_dot_q4_1_avx2(const void *w, const void *a, int n);
float quant_dot_q8_0_avx2(const void *w, const void *a, int n);
float quant_dot_q4_k_avx2(const void *w, const void *a, int n);
float quant_dot_q5_k_avx2(const void *w, const void *a, int n);
float quant_dot_q6_k_avx2(const void *w, const void *a, int n);

/* Attention helpers over fp16 KV rows: dot of two fp16 rows, and y += a * x (x fp16). */
float quant_dot_f16f16(const uint16_t *x, const uint16_t *y, int n);
void quant_axpy_f16(float *y, float a, const uint16_t *x, int n);
void quant_f32_to_fp16_row(uint16_t *dst, const float *src, int n);
float quant_dot_f16f16_avx2(const uint16_t *x, const uint16_t *y, int n);
void quant_axpy_f16_avx2(float *y, float a, const uint16_t *x, int n);
void quant_f32_to_fp16_row_avx2(uint16_t *dst, const float *src, int n);

/* ---- llama.cpp-order numerics for attention and SwiGLU ----
 * llama.cpp's CPU backend (built for AVX-512, the build our fixtures are recorded from) fixes an
 * order of operations, and small llama models amplify a one-ulp difference in attention into
 * logit differences of ~0.5 (each matmul re-quantises its input to int8). These functions
 * reproduce that order exactly, and give the same bits on every CPU (reference and AVX2 agree):
 * - exp: the vector exp llama.cpp uses for softmax and SiLU (round-to-nearest n = x*log2(e),
 *   two-part ln2 reduction, degree-5 polynomial, exact scaling by 2^n), not libm's expf;
 * - 16-lane sums reduced as a tree: lanes l + l+8, then + 4, then (0+2) + (1+3);
 * - fp16 dot products in two orders. "gemm" (a token of a multi-token chunk of its sequence,
 *   llama.cpp's tinyBLAS path): 16 lanes, lane = index % 16, each a fused multiply-add chain,
 *   then the 16-lane tree. "gemv" (a sequence's single decode token, ggml_vec_dot_f16): four
 *   16-lane accumulators over 64-element steps, reduced (0+2)+(1+3), then the tree; elements
 *   past the last multiple of 64 are added one by one in double. */
float quant_vexpf(float x);
/* y[i] = vexpf(x[i] - max) for i < n; returns the sum over 16-element chunks (each reduced as
 * a tree in float, the chunks added in double); the row counts as padded with -inf to 16. */
double quant_softmax_exp_row(float *y, const float *x, float max, int n);
/* y[i] = gate[i] / (1 + vexpf(-gate[i])) * up[i]; n % 16 leftovers use libm expf, as llama.cpp. */
void quant_swiglu_row(float *y, const float *gate, const float *up, int n);
/* y[i] = expf(x[i]) for i < n, bit for bit what the C library's expf returns (in place is
 * fine): glibc's algorithm vectorised; on first use it is checked against expf over a spread of
 * arguments and, should this libm round differently, expf is called instead. For the sampler,
 * which must keep libm's numbers. */
void quant_expf_row(float *y, const float *x, int n);
void quant_expf_row_avx2(float *y, const float *x, int n);
/* Dot of two fp16 rows in the gemm (gemv = 0) or gemv order; gemm needs n % 16 == 0, else gemv. */
float quant_dot_f16_order(const uint16_t *x, const uint16_t *y, int n, int gemv);
/* out[d] = sum_p p16[p] * V[p][d] for d < hd over positions p < n, in the gemm or gemv order
 * over p. V rows come in blocks of 16 positions: row p is blk[p / 16] + (p % 16) * ld.
 * acc is scratch of 64 * hd floats. */
void quant_attn_pv(float *out, float *acc, const uint16_t *p16, const uint16_t *const *blk, size_t ld, int n, int hd,
                   int gemv);
/* Row p of such a block list. */
static inline const uint16_t *quant_kv_row(const uint16_t *const *blk, int p, size_t ld) {
    return blk[p / 16] + (size_t)(p % 16) * ld;
}

/* s[p] = quant_dot_f16_order(q, K row p, hd, gemv) * scale for p < n; K rows in blocks of 16
 * positions as for quant_attn_pv. */
void quant_attn_scores(float *s, const uint16_t *q, const uint16_t *const *blk, size_t ld, int n, int hd, int gemv,
                       float scale);
void quant_attn_scores_ref(float *s, const uint16_t *q, const uint16_t *const *blk, size_t ld, int n, int hd, int gemv,
                           float scale);
void quant_attn_scores_avx2(float *s, const uint16_t *q, const uint16_t *const *blk, size_t ld, int n, int hd, int gemv,
                            float scale);

float quant_vexpf_ref(float x);
double quant_softmax_exp_row_ref(float *y, const float *x, float max, int n);
void quant_swiglu_row_ref(float *y, const float *gate, const float *up, int n);
float quant_dot_f16_order_ref(const uint16_t *x, const uint16_t *y, int n, int gemv);
void quant_attn_pv_ref(float *out, float *acc, const uint16_t *p16, const uint16_t *const *blk, size_t ld, int n, int hd,
                       int gemv);
double quant_softmax_exp_row_avx2(float *y, const float *x, float max, int n);
void quant_swiglu_row_avx2(float *y, const float *gate, const float *up, int n);
float quant_dot_f16_order_avx2(const uint16_t *x, const uint16_t *y, int n, int gemv);
void quant_attn_pv_avx2(float *out, float *acc, const uint16_t *p16, const uint16_t *const *blk, size_t ld, int n, int hd,
                        int gemv);

/* out[t * ldo + r] = dot(W row r, act row t) for r in [r0, r1), t in [0, ntok).
 * W rows are quant_row_bytes(wtype, ncols) apart; act rows are act_stride bytes apart. */
void quant_matmul_rows(float *out, size_t ldo, const void *W, int wtype, int ncols, int r0, int r1,
                       const void *act, size_t act_stride, int ntok, QuantDotFn dot);

/* Multi-token matmul tiles: the same outputs as quant_matmul_rows with the weight type's dot,
 * bit for bit, computed one weight row against 16 tokens at once. The activation rows are first
 * rearranged once (quant_matmul_prep, into quant_matmul_tile_bytes(ncols, ntok) bytes), then any
 * number of row ranges run against it, from any threads. quant_matmul_fn gives NULL when the
 * type or CPU has no tile kernel (then use quant_matmul_rows). */
typedef void (*QuantMatmulFn)(float *out, size_t ldo, const void *W, size_t row_bytes, int ncols, int r0, int r1,
                              const void *tile, int ntok);
QuantMatmulFn quant_matmul_fn(int wtype, QuantIsa isa);
size_t quant_matmul_tile_bytes(int ncols, int ntok);
void quant_matmul_prep(int wtype, void *tile, const void *act, size_t act_stride, int ntok, int ncols);
/* Packed weights: the AVX-512 kernels read Q4_1 and Q8_0 matrices with each group of eight rows
 * interleaved per block (the rows' d, then m, then quants), in the same bytes as the eight rows
 * and one sequential stream. quant_pack_bytes gives the packed size, or 0 when the type keeps
 * GGUF's row order on this CPU; then quant_matvec_fn's and quant_matmul_fn's kernels for that
 * type take quant_pack_rows' output, never GGUF's rows (quant_dot_fn's always take those). */
size_t quant_pack_bytes(int wtype, int rows, int ncols);
void quant_pack_rows(int wtype, void *dst, const void *src, int rows, int ncols);
/* Single-token matvec: out[r] = quant_matmul_rows' value for one activation row, bit for bit,
 * eight weight rows at a time. The activation is prepared once (quant_matvec_prep, into
 * quant_matvec_bytes(ncols) bytes), then any number of row ranges run against it, from any
 * threads. quant_matvec_fn gives NULL when the type or CPU has no matvec kernel. */
typedef void (*QuantMatvecFn)(float *out, const void *W, size_t row_bytes, int ncols, int r0, int r1, const void *vec);
QuantMatvecFn quant_matvec_fn(int wtype, QuantIsa isa);
size_t quant_matvec_bytes(int ncols);
void quant_matvec_prep(int wtype, void *vec, const void *act, int ncols);
/* AVX-512 VNNI tiles and matvecs (kernels/cpu/quant_avx512.c). */
void quant_matvec_prep_vnni(int wtype, void *vec, const void *act, int ncols);
void quant_matvec_q4_1_vnni(float *out, const void *W, size_t rb, int ncols, int r0, int r1, const void *vec);
void quant_matvec_q8_0_vnni(float *out, const void *W, size_t rb, int ncols, int r0, int r1, const void *vec);
void quant_matmul_prep_vnni(int wtype, void *tile, const void *act, size_t act_stride, int ntok, int ncols);
void quant_matmul_q4_1_vnni(float *out, size_t ldo, const void *W, size_t rb, int ncols, int r0, int r1,
                            const void *tile, int ntok);
void quant_matmul_q8_0_vnni(float *out, size_t ldo, const void *W, size_t rb, int ncols, int r0, int r1,
                            const void *tile, int ntok);

#ifdef __cplusplus
}
#endif

#endif
