/* decoder_dev.h: the GGUF decoder's operations on a device, as C code sees them: quantised
 * matrix-vector products for 1..8 tokens per weight read, activation quantisation, the rest of a
 * llama/qwen2/qwen3 layer (RMSNorm with the residual folded in, QKV bias, QK-norm, RoPE, paged-KV
 * attention, SwiGLU), token embedding, dequantisation for the prefill GEMM, and greedy argmax.
 * The CUDA backend is kernels/cuda/decoder_*.cu; C code never includes a CUDA header. Every call
 * queues work on the stream and returns a DevStatus (errors named in device_errstr, a sticky one
 * marks the device lost); nothing here allocates, logs or exits.
 *
 * Layouts are the CPU model's (engine/decode/model.h): weights as stored in the GGUF (rows of
 * quant_row_bytes), activations F32 row-major, the KV cache fp16 [page][KV_PAGE][kv_dim] per
 * layer, a sequence's pages listed in a page table. All pointers are device addresses. */
#ifndef WEAVER_DECODER_DEV_H
#define WEAVER_DECODER_DEV_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/device.h"

#ifdef __cplusplus
extern "C" {
#endif

#define DEC_MAX_MV_TOKENS 8 /* tokens one matrix-vector launch reads each weight for */
#define DEC_KV_PAGE 16      /* positions per KV page (KV_PAGE in engine/decode/model.h) */

/* Bytes of one activation row of ncols quantised for weight type wtype (quant_act_type). */
size_t dec_act_row_bytes(int wtype, int ncols);

/* The arguments of the per-token step between the Q/K/V matmuls and attention. */
typedef struct DecQkvArgs {
    float *q, *k, *v;               /* [ntok][n_head * hd], [ntok][n_head_kv * hd] x2; changed in place */
    uint16_t *q16;                  /* out: [ntok][n_head * hd] fp16 queries */
    uint16_t *kcache, *vcache;      /* this layer's K and V pages */
    const int32_t *tok_seq;         /* [ntok] the token's sequence (row of pages) */
    const int32_t *pos;             /* [ntok] its position */
    const int32_t *pages;           /* [nseq][page_stride] page numbers */
    int page_stride;
    const float *bq, *bk, *bv;      /* qwen2 biases, or NULL */
    const float *q_norm, *k_norm;   /* qwen3 per-head RMSNorm weights, or NULL */
    const float *rope_cs;           /* [max_ctx][rope_dim]: cos, sin of each pair (the CPU's table) */
    int ntok, n_head, n_head_kv, head_dim, rope_dim, rope_neox;
    float eps;
} DecQkvArgs;

/* The arguments of paged attention: each token attends to positions 0..pos[t] of its sequence
 * (decode tokens and prompt chunks alike: a chunk's K/V rows are written first), in the CPU
 * model's order of operations: gemv[t] = 1 for a sequence's lone token in the batch (llama.cpp's
 * gemv order), 0 for a token of a multi-token chunk (its gemm order), so the result depends only
 * on the token's own sequence and is the CPU path's bit for bit. */
typedef struct DecAttnArgs {
    float *out;                     /* [ntok][n_head * hd] */
    const uint16_t *q16;            /* [ntok][n_head * hd] */
    const uint16_t *kcache, *vcache;
    const int32_t *tok_seq, *pos, *pages, *gemv;
    int page_stride;
    int ntok, n_head, n_head_kv, head_dim;
    int max_ctx;                    /* the largest pos + 1 of this launch may reach */
    float scale;
} DecAttnArgs;

/* The operations table; optional entries may be NULL (the wrapper returns DEV_ENOTSUP). */
typedef struct DecDevOps {
    /* act rows (act_stride bytes apart) = x rows (ldx floats apart) quantised for wtype. */
    int (*quantize)(DevStream *s, void *act, size_t act_stride, const float *x, size_t ldx, int ntok, int ncols,
                    int wtype);
    /* out[t * ldo + r] = dot(W row r, act row t), r < rows, 1 <= ntok <= DEC_MAX_MV_TOKENS. */
    int (*matvec)(DevStream *s, float *out, size_t ldo, const void *w, int wtype, int rows, int ncols,
                  const void *act, size_t act_stride, int ntok);
    /* dst (fp16, [rows][ncols]) = W dequantised: the prefill path's GEMM operand. */
    int (*dequant_f16)(DevStream *s, uint16_t *dst, const void *w, int wtype, int rows, int ncols);
    /* x[t] = row ids[t] of the embedding table, dequantised. */
    int (*embed)(DevStream *s, float *x, const int32_t *ids, int ntok, const void *table, int type, int n_embd);
    /* For each of rows rows: x += add (when add), then out = RMSNorm(x) * w (when w). With idx,
     * out row i is the norm of x row idx[i] (x unchanged; add must be NULL). */
    int (*add_rmsnorm)(DevStream *s, float *out, float *x, const float *add, const int32_t *idx, const float *w,
                       int rows, int cols, float eps);
    int (*qkv_post)(DevStream *s, const DecQkvArgs *a);
    int (*attention)(DevStream *s, const DecAttnArgs *a);
    /* gate = SwiGLU(gate, up), ntok rows of n_ff. */
    int (*swiglu)(DevStream *s, float *gate, const float *up, int ntok, int n_ff);
    /* out[r] = the lowest index of the largest of logits row r (the CPU sampler's greedy pick). */
    int (*argmax)(DevStream *s, int32_t *out, const float *logits, int rows, int n_vocab);
    /* Optional: CUDA graphs. Between graph_begin and graph_end the stream's operations are
     * recorded, not run; graph_end instantiates them (*graph), graph_launch runs them again. */
    int (*graph_begin)(DevStream *s);
    int (*graph_end)(DevStream *s, void **graph);
    int (*graph_launch)(DevStream *s, void *graph);
    void (*graph_free)(void *graph);
} DecDevOps;

/* The CUDA table (NULL in a build without CUDA). */
const DecDevOps *dec_dev_cuda_ops(void);
/* The table for the device d was opened on: CUDA's, the fake device's (test builds), or NULL. */
const DecDevOps *dec_dev_ops(const Device *d);

/* The operations through the table of s's device, refused once the device is lost (as the
 * device layer's wrappers are); DEV_ENOTSUP for a missing optional one. */
int dec_quantize(DevStream *s, void *act, size_t act_stride, const float *x, size_t ldx, int ntok, int ncols, int wtype);
int dec_matvec(DevStream *s, float *out, size_t ldo, const void *w, int wtype, int rows, int ncols, const void *act,
               size_t act_stride, int ntok);
int dec_dequant_f16(DevStream *s, uint16_t *dst, const void *w, int wtype, int rows, int ncols);
int dec_embed(DevStream *s, float *x, const int32_t *ids, int ntok, const void *table, int type, int n_embd);
int dec_add_rmsnorm(DevStream *s, float *out, float *x, const float *add, const int32_t *idx, const float *w, int rows,
                    int cols, float eps);
int dec_qkv_post(DevStream *s, const DecQkvArgs *a);
int dec_attention(DevStream *s, const DecAttnArgs *a);
int dec_swiglu(DevStream *s, float *gate, const float *up, int ntok, int n_ff);
int dec_argmax(DevStream *s, int32_t *out, const float *logits, int rows, int n_vocab);
int dec_graph_begin(DevStream *s);
int dec_graph_end(DevStream *s, void **graph);
int dec_graph_launch(DevStream *s, void *graph);
void dec_graph_free(const Device *d, void *graph); /* NULL-safe */

/* CUDA graphs per padded batch size (GPU.md): 1, 2, 4, then multiples of 8. The bucket a batch
 * of n tokens runs in (n itself when n > max, then it runs without a graph). */
int dec_graph_bucket(int n, int max);

#ifdef __cplusplus
}
#endif

#endif
