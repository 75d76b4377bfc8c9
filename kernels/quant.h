/* quant.h: GGUF/GGML tensor types on the CPU: block layouts, dequantisation, quantisation of
 * activations, and row dot products (plain-C reference + AVX2 variants chosen at run time).
 * Plain C only; no allocation; nothing here knows about models or files. */
#ifndef WEAVER_QUANT_H
#define WEAVER_QUANT_H

#include <stddef.h>
#include <stdint.h>

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

/* out[t * ldo + r] = dot(W row r, act row t) for r in [r0, r1), t in [0, ntok).
 * W rows are quant_row_bytes(wtype, ncols) apart; act rows are act_stride bytes apart. */
void quant_matmul_rows(float *out, size_t ldo, const void *W, int wtype, int ncols, int r0, int r1,
                       const void *act, size_t act_stride, int ntok, QuantDotFn dot);

#endif
