/* decoder_matvec.cu: the decoder's quantised matrix-vector products ("MMVQ"): each weight row is
 * read once for 1..8 tokens, against activations quantised once per matmul (Q8_0 / Q8_1 / Q8_K
 * blocks, or BF16 / F32 for the float types) with int8 dp4a dot products. The block arithmetic
 * is kernels/quant_math.h's, shared with (and tested against) the CPU reference; built with
 * --fmad=false so its float steps round as the reference's do. Also the activation quantiser,
 * dequantisation to fp16 for the prefill GEMM, and the token embedding. Each launcher checks its
 * shapes and its launch and returns a DevStatus; nothing here allocates, logs or exits. */
#include <stdio.h>

#include <cuda_fp16.h>

#include "kernels/cuda/cuda_common.cuh"
#include "kernels/decoder_dev.h"
#include "kernels/quant_math.h"


/* ---- activation quantisation: one thread per block, through the shared block functions, so
 * the device's activation blocks are the CPU's bits ---- */
template <int ACT>
__global__ void k_quantize(uint8_t *__restrict__ act, size_t act_stride, const float *__restrict__ x, size_t ldx,
                           int nblocks)
{
    int t = blockIdx.y, b = blockIdx.x * blockDim.x + threadIdx.x;
    if (b >= nblocks) return;
    const float *xr = x + (size_t)t * ldx;
    uint8_t *ar = act + (size_t)t * act_stride;
    if (ACT == QT_Q8_0) qm_quantize_q8_0(xr + 32 * b, (BlockQ8_0 *)ar + b);
    else if (ACT == QT_Q8_1) qm_quantize_q8_1(xr + 32 * b, (BlockQ8_1 *)ar + b);
    else if (ACT == QT_Q8_K) qm_quantize_q8_k(xr + 256 * b, (BlockQ8_K *)ar + b);
    else if (ACT == QT_BF16) ((uint16_t *)ar)[b] = qm_f2bf(xr[b]);
    else ((float *)ar)[b] = xr[b];
}

/* ---- matrix-vector in the CPU reference's order, so the device's logits are the CPU path's bit
 * for bit: for the quantised types, 8 threads per weight row, thread l owning the reference's
 * lane l: it walks the row's blocks in order, adding each block's exact integer lane (dp4a) with
 * one fused multiply-add by the block's scale, as quant_dot_*_ref does; the 8 lanes then meet in
 * hsum8's tree through shuffles. Every weight is read once for all NT tokens. The float types
 * (F32/F16/BF16) take one thread per row through qm_dot_row. ---- */
#define MV_THREADS 128
#define MV_ROWS (MV_THREADS / 8)

/* hsum8 over the 8 lanes of a row's group (lanes 8r..8r+7 of the warp); lane 0 of it gets it */
__device__ __forceinline__ float mv_hsum8(float v)
{
    v += __shfl_down_sync(0xffffffffu, v, 4, 8); /* c[l] = a[l] + a[l + 4] */
    v += __shfl_down_sync(0xffffffffu, v, 2, 8); /* c[0] + c[2], c[1] + c[3] */
    v += __shfl_down_sync(0xffffffffu, v, 1, 8); /* (c0 + c2) + (c1 + c3) */
    return v;
}

/* NT = DEC_MAX_MV_TOKENS accumulators, nt of them live: one instance per type keeps the binary
 * small (an instance per token count was 5 MiB of the engine, too much for the GPU bundle). */
#define NT DEC_MAX_MV_TOKENS
template <int WT>
__global__ void __launch_bounds__(MV_THREADS) k_matvec(float *__restrict__ out, size_t ldo,
                                                       const uint8_t *__restrict__ w, size_t rb, int rows, int nblk,
                                                       const uint8_t *__restrict__ act, size_t as, int nt)
{
    int r = blockIdx.x * MV_ROWS + threadIdx.x / 8, l = threadIdx.x % 8;
    bool live = r < rows; /* dead rows still take part in the shuffles */
    const uint8_t *wrow = w + (size_t)(live ? r : 0) * rb;
    float acc[NT], extra[NT];
#pragma unroll
    for (int t = 0; t < NT; t++) acc[t] = extra[t] = 0.0f;
    for (int i = 0; i < nblk; i++) {
#pragma unroll
        for (int t = 0; t < NT; t++) {
            if (t >= nt) break;
            const uint8_t *ar = act + (size_t)t * as;
            if (WT == QT_Q4_0) {
                const BlockQ4_0 *x = (const BlockQ4_0 *)wrow + i;
                const BlockQ8_0 *y = (const BlockQ8_0 *)ar + i;
                acc[t] = fmaf(qm_scale_q4_0(x, y), (float)qm_lane_q4_0(x, y, l), acc[t]);
            } else if (WT == QT_Q4_1) {
                const BlockQ4_1 *x = (const BlockQ4_1 *)wrow + i;
                const BlockQ8_1 *y = (const BlockQ8_1 *)ar + i;
                extra[t] += qm_min_q4_1(x, y);
                acc[t] = fmaf(qm_scale_q4_1(x, y), (float)qm_lane_q4_1(x, y, l), acc[t]);
            } else if (WT == QT_Q8_0) {
                const BlockQ8_0 *x = (const BlockQ8_0 *)wrow + i;
                const BlockQ8_0 *y = (const BlockQ8_0 *)ar + i;
                acc[t] = fmaf(qm_scale_q8_0(x, y), (float)qm_lane_q8_0(x, y, l), acc[t]);
            } else if (WT == QT_Q4_K) {
                const BlockQ4_K *x = (const BlockQ4_K *)wrow + i;
                const BlockQ8_K *y = (const BlockQ8_K *)ar + i;
                acc[t] = fmaf(qm_scale_q4_k(x, y), (float)qm_lane_q4_k(x, y, l), acc[t]);
                extra[t] += qm_dmin_q4_k(x, y) * (float)qm_mins_k45(x->scales, y);
            } else if (WT == QT_Q5_K) {
                const BlockQ5_K *x = (const BlockQ5_K *)wrow + i;
                const BlockQ8_K *y = (const BlockQ8_K *)ar + i;
                acc[t] = fmaf(qm_scale_q5_k(x, y), (float)qm_lane_q5_k(x, y, l), acc[t]);
                extra[t] += qm_dmin_q5_k(x, y) * (float)qm_mins_k45(x->scales, y);
            } else {
                const BlockQ6_K *x = (const BlockQ6_K *)wrow + i;
                const BlockQ8_K *y = (const BlockQ8_K *)ar + i;
                int lane = qm_lane_q6_k(x, y, l) + (l == 0 ? qm_off_q6_k(x, y) : 0);
                acc[t] = fmaf(qm_scale_q6_k(x, y), (float)lane, acc[t]);
            }
        }
    }
#pragma unroll
    for (int t = 0; t < NT; t++) {
        if (t >= nt) break;
        float v = mv_hsum8(acc[t]);
        /* Q4_1 adds its min term after the tree, the K-quants subtract theirs (every lane kept
         * the same running sum of it; lane 0's is used) */
        if (WT == QT_Q4_1) v = v + extra[t];
        if (WT == QT_Q4_K || WT == QT_Q5_K) v = v - extra[t];
        if (live && l == 0) out[(size_t)t * ldo + r] = v;
    }
}

/* The float types: a thread per row, the reference's 16 (F32/F16) or 8 (BF16) fused lanes. */
__global__ void __launch_bounds__(MV_THREADS) k_matvec_float(float *__restrict__ out, size_t ldo,
                                                             const uint8_t *__restrict__ w, int wtype, size_t rb,
                                                             int rows, int ncols, const uint8_t *__restrict__ act,
                                                             size_t as, int nt)
{
    int r = blockIdx.x * MV_THREADS + threadIdx.x;
    if (r >= rows) return;
    for (int t = 0; t < nt; t++) out[(size_t)t * ldo + r] = qm_dot_row(wtype, w + (size_t)r * rb, act + (size_t)t * as, ncols);
}
#undef NT

template <int WT>
static void launch_mv(cudaStream_t st, int ntok, float *out, size_t ldo, const uint8_t *w, size_t rb, int rows,
                      int ncols, const uint8_t *act, size_t as)
{
    const bool fl = WT == QT_F32 || WT == QT_F16 || WT == QT_BF16;
    const int QWT = fl ? QT_Q8_0 : WT; /* a quantised instance the float types never run */
    int nblk = ncols / qm_block_elems(WT);
    dim3 grid(fl ? (rows + MV_THREADS - 1) / MV_THREADS : (rows + MV_ROWS - 1) / MV_ROWS), block(MV_THREADS);
    if (fl) k_matvec_float<<<grid, block, 0, st>>>(out, ldo, w, WT, rb, rows, ncols, act, as, ntok);
    else k_matvec<QWT><<<grid, block, 0, st>>>(out, ldo, w, rb, rows, nblk, act, as, ntok);
}

extern "C" int cuda_dec_matvec(DevStream *s, float *out, size_t ldo, const void *w, int wtype, int rows, int ncols,
                               const void *act, size_t act_stride, int ntok)
{
    Device *d = s->d;
    if (!quant_type_supported(wtype) || quant_row_bytes(wtype, ncols) == 0 || rows < 1 || ntok < 1 ||
        ntok > DEC_MAX_MV_TOKENS || ldo < (size_t)rows || (((uintptr_t)w | (uintptr_t)act | act_stride) & 3))
        return dev_fail(d, DEV_EINVAL, "dec_matvec", "%s rows=%d cols=%d tokens=%d ldo=%zu act_stride=%zu",
                        quant_type_name(wtype), rows, ncols, ntok, ldo, act_stride);
    cudaStream_t st = cuda_stream(s)->st;
    size_t rb = quant_row_bytes(wtype, ncols);
    const uint8_t *W = (const uint8_t *)w, *A = (const uint8_t *)act;
    switch (wtype) {
    case QT_Q4_0: launch_mv<QT_Q4_0>(st, ntok, out, ldo, W, rb, rows, ncols, A, act_stride); break;
    case QT_Q4_1: launch_mv<QT_Q4_1>(st, ntok, out, ldo, W, rb, rows, ncols, A, act_stride); break;
    case QT_Q8_0: launch_mv<QT_Q8_0>(st, ntok, out, ldo, W, rb, rows, ncols, A, act_stride); break;
    case QT_Q4_K: launch_mv<QT_Q4_K>(st, ntok, out, ldo, W, rb, rows, ncols, A, act_stride); break;
    case QT_Q5_K: launch_mv<QT_Q5_K>(st, ntok, out, ldo, W, rb, rows, ncols, A, act_stride); break;
    case QT_Q6_K: launch_mv<QT_Q6_K>(st, ntok, out, ldo, W, rb, rows, ncols, A, act_stride); break;
    case QT_F16: launch_mv<QT_F16>(st, ntok, out, ldo, W, rb, rows, ncols, A, act_stride); break;
    case QT_BF16: launch_mv<QT_BF16>(st, ntok, out, ldo, W, rb, rows, ncols, A, act_stride); break;
    default: launch_mv<QT_F32>(st, ntok, out, ldo, W, rb, rows, ncols, A, act_stride); break;
    }
    LAUNCH_CHECK(d, "k_matvec", "%s rows=%d cols=%d tokens=%d", quant_type_name(wtype), rows, ncols, ntok);
    return DEV_OK;
}

extern "C" int cuda_dec_quantize(DevStream *s, void *act, size_t act_stride, const float *x, size_t ldx, int ntok,
                                 int ncols, int wtype)
{
    Device *d = s->d;
    int at = quant_act_type(wtype), be = quant_block_elems(at);
    if (at == QT_F32 || at == QT_BF16) be = 1;
    if (ntok < 1 || ncols < 1 || be < 1 || ncols % be || act_stride < dec_act_row_bytes(wtype, ncols) || ldx < (size_t)ncols)
        return dev_fail(d, DEV_EINVAL, "dec_quantize", "%s activations: tokens=%d cols=%d act_stride=%zu ldx=%zu",
                        quant_type_name(at), ntok, ncols, act_stride, ldx);
    int nb = ncols / be;
    dim3 grid((nb + 127) / 128, ntok);
    cudaStream_t st = cuda_stream(s)->st;
    uint8_t *A = (uint8_t *)act;
    switch (at) {
    case QT_Q8_0: k_quantize<QT_Q8_0><<<grid, 128, 0, st>>>(A, act_stride, x, ldx, nb); break;
    case QT_Q8_1: k_quantize<QT_Q8_1><<<grid, 128, 0, st>>>(A, act_stride, x, ldx, nb); break;
    case QT_Q8_K: k_quantize<QT_Q8_K><<<grid, 128, 0, st>>>(A, act_stride, x, ldx, nb); break;
    case QT_BF16: k_quantize<QT_BF16><<<grid, 128, 0, st>>>(A, act_stride, x, ldx, nb); break;
    default: k_quantize<QT_F32><<<grid, 128, 0, st>>>(A, act_stride, x, ldx, nb); break;
    }
    LAUNCH_CHECK(d, "k_quantize", "%s tokens=%d cols=%d", quant_type_name(at), ntok, ncols);
    return DEV_OK;
}

/* ---- dequantisation (prefill GEMM operand, embedding rows) ---- */

/* Row r of dst (fp16 or f32 per F16OUT) = dequantised row src_rows[r] (or r) of W: one thread per
 * element (qm_dequant_elem), consecutive threads on consecutive outputs. */
template <bool F16OUT>
__global__ void k_dequant_rows(void *__restrict__ dst, const uint8_t *__restrict__ w, size_t rb, int wtype, int ncols,
                               const int32_t *__restrict__ src_rows)
{
    int r = blockIdx.y, i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= ncols) return;
    int be = qm_block_elems(wtype);
    const uint8_t *blk = w + (size_t)(src_rows ? src_rows[r] : r) * rb + (size_t)(i / be) * qm_block_bytes(wtype);
    float y = qm_dequant_elem(wtype, blk, i % be);
    size_t o = (size_t)r * ncols + i;
    if (F16OUT) ((__half *)dst)[o] = __float2half_rn(y);
    else ((float *)dst)[o] = y;
}

extern "C" int cuda_dec_dequant_f16(DevStream *s, uint16_t *dst, const void *w, int wtype, int rows, int ncols)
{
    Device *d = s->d;
    if (!quant_type_supported(wtype) || rows < 1 || quant_row_bytes(wtype, ncols) == 0)
        return dev_fail(d, DEV_EINVAL, "dec_dequant_f16", "%s rows=%d cols=%d", quant_type_name(wtype), rows, ncols);
    dim3 grid((ncols + 255) / 256, rows);
    k_dequant_rows<true><<<grid, 256, 0, cuda_stream(s)->st>>>(dst, (const uint8_t *)w, quant_row_bytes(wtype, ncols),
                                                               wtype, ncols, NULL);
    LAUNCH_CHECK(d, "k_dequant_rows", "%s rows=%d cols=%d", quant_type_name(wtype), rows, ncols);
    return DEV_OK;
}

extern "C" int cuda_dec_embed(DevStream *s, float *x, const int32_t *ids, int ntok, const void *table, int type,
                              int n_embd)
{
    Device *d = s->d;
    if (!quant_type_supported(type) || ntok < 1 || quant_row_bytes(type, n_embd) == 0)
        return dev_fail(d, DEV_EINVAL, "dec_embed", "%s tokens=%d n_embd=%d", quant_type_name(type), ntok, n_embd);
    dim3 grid((n_embd + 255) / 256, ntok);
    k_dequant_rows<false><<<grid, 256, 0, cuda_stream(s)->st>>>(x, (const uint8_t *)table,
                                                                quant_row_bytes(type, n_embd), type, n_embd, ids);
    LAUNCH_CHECK(d, "k_dequant_rows", "embedding %s tokens=%d n_embd=%d", quant_type_name(type), ntok, n_embd);
    return DEV_OK;
}
