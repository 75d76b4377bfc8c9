/* decoder_layer.cu: the decoder layer's CUDA kernels besides the matmuls (decoder_matvec.cu):
 * RMSNorm with the residual folded in (and over gathered rows for the logits), the per-token
 * Q/K/V step (QKV bias, QK-norm, RoPE from the CPU's cos/sin table, fp16 queries, K/V rows into
 * their KV pages), attention over the paged fp16 KV cache for any mix of decode tokens and
 * prompt chunks, SwiGLU, and greedy argmax; plus the decoder's operations table. Scalar math is
 * kernels/decoder_math.h's, shared with the CPU tests; built with --fmad=false so RoPE's and
 * SwiGLU's roundings are the CPU model's. Nothing here allocates, logs or exits. */
#include <stdio.h>

#include "kernels/cuda/cuda_common.cuh"
#include "kernels/decoder_dev.h"
#include "kernels/decoder_math.h"

#define WARP 32
#define ATT_MAX_HD 256

__device__ float dl_block_max(float v, float *shared32)
{
    int lane = threadIdx.x % WARP, w = threadIdx.x / WARP, nw = blockDim.x / WARP;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) shared32[w] = v;
    __syncthreads();
    v = lane < nw ? shared32[lane] : -INFINITY;
    return warp_max(v);
}

/* ---- RMSNorm: one block per row; squares in float, summed in double (the CPU's order up to the
 * association of the sum) ---- */
__global__ void k_add_rmsnorm(float *out, float *x, const float *__restrict__ add, const int32_t *__restrict__ idx,
                              const float *__restrict__ w, int cols, float eps)
{
    __shared__ double red[32];
    size_t r = blockIdx.x;
    float *xr = x + (size_t)(idx ? idx[r] : (int32_t)r) * cols;
    double s = 0.0;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) {
        float v = xr[c];
        if (add) xr[c] = v = v + add[r * cols + c];
        float sq = v * v;
        s += sq;
    }
    if (!w) return;
    float scale = qm_rms_scale(block_sum(s, red), cols, eps);
    float *o = out + r * cols;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) o[c] = (xr[c] * scale) * w[c];
}

static int cuda_dec_add_rmsnorm(DevStream *s, float *out, float *x, const float *add, const int32_t *idx,
                                const float *w, int rows, int cols, float eps)
{
    Device *d = s->d;
    if (rows < 1 || cols < 1 || (idx && add) || (!w && !add))
        return dev_fail(d, DEV_EINVAL, "dec_add_rmsnorm", "rows=%d cols=%d add=%p idx=%p w=%p", rows, cols,
                        (const void *)add, (const void *)idx, (const void *)w);
    k_add_rmsnorm<<<rows, 256, 0, cuda_stream(s)->st>>>(out, x, add, idx, w, cols, eps);
    LAUNCH_CHECK(d, "k_add_rmsnorm", "rows=%d cols=%d", rows, cols);
    return DEV_OK;
}

/* ---- the per-token Q/K/V step: one warp per (token, head vector); blockIdx.y walks the query
 * heads, then the K heads, then the V heads ---- */
__global__ void k_qkv_post(DecQkvArgs a)
{
    __shared__ float buf[ATT_MAX_HD];
    int t = blockIdx.x, hv = blockIdx.y, lane = threadIdx.x, hd = a.head_dim;
    int qd = a.n_head * hd, kvd = a.n_head_kv * hd;
    int kind = hv < a.n_head ? 0 : hv < a.n_head + a.n_head_kv ? 1 : 2; /* q, k, v */
    int h = kind == 0 ? hv : kind == 1 ? hv - a.n_head : hv - a.n_head - a.n_head_kv;
    float *vec = kind == 0 ? a.q + (size_t)t * qd : kind == 1 ? a.k + (size_t)t * kvd : a.v + (size_t)t * kvd;
    vec += h * hd;
    const float *bias = kind == 0 ? a.bq : kind == 1 ? a.bk : a.bv;
    const float *nw = kind == 0 ? a.q_norm : kind == 1 ? a.k_norm : NULL;
    double ss = 0.0;
    for (int i = lane; i < hd; i += WARP) {
        float v = vec[i];
        if (bias) v += bias[h * hd + i];
        buf[i] = v;
        float sq = v * v;
        ss += sq;
    }
    if (nw) {
        float scale = qm_rms_scale(warp_sum(ss), hd, a.eps);
        for (int i = lane; i < hd; i += WARP) buf[i] = (buf[i] * scale) * nw[i];
    }
    __syncwarp();
    int pos = a.pos[t];
    if (kind < 2) {
        const float *cs = a.rope_cs + (size_t)pos * a.rope_dim;
        int half = a.rope_dim / 2;
        for (int i = lane; i < half; i += WARP) {
            int x0 = a.rope_neox ? i : 2 * i, x1 = a.rope_neox ? i + half : 2 * i + 1;
            qm_rope_pair(&buf[x0], &buf[x1], cs[2 * i], cs[2 * i + 1]);
        }
    }
    __syncwarp();
    uint16_t *dst;
    if (kind == 0) {
        dst = a.q16 + (size_t)t * qd + h * hd;
    } else {
        int page = a.pages[(size_t)a.tok_seq[t] * a.page_stride + pos / DEC_KV_PAGE];
        size_t row = ((size_t)page * DEC_KV_PAGE + pos % DEC_KV_PAGE) * kvd + (size_t)h * hd;
        dst = (kind == 1 ? a.kcache : a.vcache) + row;
    }
    for (int i = lane; i < hd; i += WARP) {
        vec[i] = buf[i];
        dst[i] = qm_f2h(buf[i]);
    }
}

static int cuda_dec_qkv_post(DevStream *s, const DecQkvArgs *a)
{
    Device *d = s->d;
    if (a->ntok < 1 || a->n_head < 1 || a->n_head_kv < 1 || a->head_dim < 2 || a->head_dim > ATT_MAX_HD ||
        a->rope_dim > a->head_dim || a->rope_dim % 2)
        return dev_fail(d, DEV_EINVAL, "dec_qkv_post", "tokens=%d heads=%d/%d head_dim=%d rope_dim=%d", a->ntok,
                        a->n_head, a->n_head_kv, a->head_dim, a->rope_dim);
    dim3 grid(a->ntok, a->n_head + 2 * a->n_head_kv);
    k_qkv_post<<<grid, WARP, 0, cuda_stream(s)->st>>>(*a);
    LAUNCH_CHECK(d, "k_qkv_post", "tokens=%d heads=%d/%d head_dim=%d", a->ntok, a->n_head, a->n_head_kv, a->head_dim);
    return DEV_OK;
}

/* ---- paged attention, one block per (token, head), in the CPU model's order (decoder_math.h):
 * a thread per key row computes its score (qm_dot_f16_order), a thread per 16-position chunk
 * its exps and tree sum, one thread adds the chunk sums in double in order (the reference's
 * sequence), probabilities are rounded to fp16, and a thread per (output dim, lane of 16) runs
 * the reference's fused chain over positions before the 16-lane tree. Shared memory: scores
 * [max_ctx], chunk sums [max_ctx / 16 + 1], lanes [16 * head_dim]. ---- */
#define ATT_THREADS 256

__global__ void __launch_bounds__(ATT_THREADS, 1) k_attention_paged(DecAttnArgs a)
{
    extern __shared__ float sm[];
    __shared__ uint16_t qs[ATT_MAX_HD];
    __shared__ float redf[32];
    __shared__ float inv_s;
    int t = blockIdx.x, h = blockIdx.y, hd = a.head_dim, tid = threadIdx.x;
    int nchunk = (a.max_ctx + 15) / 16;
    float *sc = sm, *csum = sm + a.max_ctx, *lanes = csum + nchunk + 1;
    int g = h / (a.n_head / a.n_head_kv), kvd = a.n_head_kv * hd, n = a.pos[t] + 1, gemv = a.gemv[t];
    const int32_t *pt = a.pages + (size_t)a.tok_seq[t] * a.page_stride;
    const uint16_t *q = a.q16 + (size_t)t * a.n_head * hd + (size_t)h * hd;
    const uint16_t *kb = a.kcache + (size_t)g * hd, *vb = a.vcache + (size_t)g * hd;
#define KV_ROW(base, p) ((base) + ((size_t)pt[(p) / DEC_KV_PAGE] * DEC_KV_PAGE + (p) % DEC_KV_PAGE) * kvd)
    for (int i = tid; i < hd; i += ATT_THREADS) qs[i] = q[i];
    __syncthreads();
    float mx = -INFINITY;
    for (int p = tid; p < n; p += ATT_THREADS) {
        sc[p] = qm_dot_f16_order(qs, KV_ROW(kb, p), hd, gemv) * a.scale;
        mx = fmaxf(mx, sc[p]);
    }
    mx = dl_block_max(mx, redf);
    for (int c = tid; 16 * c < n; c += ATT_THREADS) csum[c] = qm_softmax_chunk(sc, sc, mx, 16 * c, n);
    __syncthreads();
    if (tid == 0) {
        double sum = 0.0;
        for (int c = 0; 16 * c < n; c++) sum += (double)csum[c];
        inv_s = (float)(1.0 / sum);
    }
    __syncthreads();
    float inv = inv_s;
    for (int p = tid; p < n; p += ATT_THREADS) sc[p] = qm_h2f(qm_f2h(sc[p] * inv));
    __syncthreads();
    int pv_gemv = gemv || hd % 4; /* llama.cpp's gemm path needs the head dim in fours */
#define PROB(p) sc[p]
#define VROW(p) KV_ROW(vb, p)
    for (int idx = tid; idx < 16 * hd; idx += ATT_THREADS) {
        int l = idx % 16, d = idx / 16;
        QM_PV_LANE(lanes[idx], l, d, n, pv_gemv, PROB, VROW);
    }
#undef PROB
#undef VROW
#undef KV_ROW
    __syncthreads();
    for (int d = tid; d < hd; d += ATT_THREADS) a.out[(size_t)t * a.n_head * hd + (size_t)h * hd + d] = qm_reduce16(lanes + 16 * d);
}

static int cuda_dec_attention(DevStream *s, const DecAttnArgs *a)
{
    Device *d = s->d;
    size_t smem = ((size_t)a->max_ctx + (a->max_ctx + 15) / 16 + 1 + 16 * (size_t)a->head_dim) * sizeof(float);
    if (a->ntok < 1 || a->n_head < 1 || a->n_head_kv < 1 || a->n_head % a->n_head_kv || a->head_dim < 2 ||
        a->head_dim > ATT_MAX_HD || a->max_ctx < 1)
        return dev_fail(d, DEV_EINVAL, "dec_attention", "tokens=%d heads=%d/%d head_dim=%d max_ctx=%d", a->ntok,
                        a->n_head, a->n_head_kv, a->head_dim, a->max_ctx);
    /* scores beyond the default 48 KiB of shared memory: ask for it (once per size) */
    static size_t granted = 48 << 10;
    if (smem > granted) {
        CU_TRY(d, cudaFuncSetAttribute(k_attention_paged, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem),
               "attention over max_ctx=%d needs %zu bytes of shared memory", a->max_ctx, smem);
        granted = smem;
    }
    dim3 grid(a->ntok, a->n_head);
    k_attention_paged<<<grid, ATT_THREADS, smem, cuda_stream(s)->st>>>(*a);
    LAUNCH_CHECK(d, "k_attention_paged", "tokens=%d heads=%d/%d head_dim=%d max_ctx=%d", a->ntok, a->n_head,
                 a->n_head_kv, a->head_dim, a->max_ctx);
    return DEV_OK;
}

/* ---- SwiGLU: the vector part of each row with llama.cpp's exp, a tail (n_ff % 16) with expf, as
 * quant_swiglu_row ---- */
__global__ void k_swiglu(float *gate, const float *__restrict__ up, int n_ff, size_t total)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        int c = (int)(i % (size_t)n_ff);
        float g = gate[i];
        gate[i] = c < (n_ff & ~15) ? qm_swiglu(g, up[i]) : g / (1.0f + expf(-g)) * up[i];
    }
}

static int cuda_dec_swiglu(DevStream *s, float *gate, const float *up, int ntok, int n_ff)
{
    Device *d = s->d;
    if (ntok < 1 || n_ff < 1) return dev_fail(d, DEV_EINVAL, "dec_swiglu", "tokens=%d n_ff=%d", ntok, n_ff);
    size_t total = (size_t)ntok * n_ff;
    int blocks = (int)((total + 255) / 256 < 4096 ? (total + 255) / 256 : 4096);
    k_swiglu<<<blocks, 256, 0, cuda_stream(s)->st>>>(gate, up, n_ff, total);
    LAUNCH_CHECK(d, "k_swiglu", "tokens=%d n_ff=%d", ntok, n_ff);
    return DEV_OK;
}

/* ---- greedy: the first index of the maximum (the CPU sampler keeps the first of equal logits) ---- */
__device__ __forceinline__ void dl_better(float &v, int &i, float v2, int i2)
{
    if (v2 > v || (v2 == v && i2 < i)) v = v2, i = i2;
}

__global__ void k_argmax(int32_t *out, const float *__restrict__ logits, int n_vocab)
{
    __shared__ float sv[32];
    __shared__ int si[32];
    const float *l = logits + (size_t)blockIdx.x * n_vocab;
    float v = -INFINITY;
    int idx = n_vocab;
    for (int i = threadIdx.x; i < n_vocab; i += blockDim.x) dl_better(v, idx, l[i], i);
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) dl_better(v, idx, __shfl_xor_sync(0xffffffffu, v, o), __shfl_xor_sync(0xffffffffu, idx, o));
    int lane = threadIdx.x % WARP, w = threadIdx.x / WARP;
    if (lane == 0) sv[w] = v, si[w] = idx;
    __syncthreads();
    if (w == 0) {
        v = lane < (int)(blockDim.x / WARP) ? sv[lane] : -INFINITY;
        idx = lane < (int)(blockDim.x / WARP) ? si[lane] : n_vocab;
#pragma unroll
        for (int o = 16; o > 0; o >>= 1)
            dl_better(v, idx, __shfl_xor_sync(0xffffffffu, v, o), __shfl_xor_sync(0xffffffffu, idx, o));
        if (lane == 0) out[blockIdx.x] = idx < n_vocab ? idx : 0; /* all NaN / -inf: token 0, as the CPU */
    }
}

static int cuda_dec_argmax(DevStream *s, int32_t *out, const float *logits, int rows, int n_vocab)
{
    Device *d = s->d;
    if (rows < 1 || n_vocab < 1) return dev_fail(d, DEV_EINVAL, "dec_argmax", "rows=%d n_vocab=%d", rows, n_vocab);
    k_argmax<<<rows, 1024, 0, cuda_stream(s)->st>>>(out, logits, n_vocab);
    LAUNCH_CHECK(d, "k_argmax", "rows=%d n_vocab=%d", rows, n_vocab);
    return DEV_OK;
}

/* ---- CUDA graphs: a decode step's launches captured once per padded batch size ---- */
static int cuda_dec_graph_begin(DevStream *s)
{
    CU_TRY(s->d, cudaStreamBeginCapture(cuda_stream(s)->st, cudaStreamCaptureModeThreadLocal), "capturing a decode step");
    return DEV_OK;
}

static int cuda_dec_graph_end(DevStream *s, void **graph)
{
    cudaGraph_t g = NULL;
    cudaGraphExec_t ex = NULL;
    *graph = NULL;
    CU_TRY(s->d, cudaStreamEndCapture(cuda_stream(s)->st, &g), "ending the capture of a decode step");
    cudaError_t e = cudaGraphInstantiate(&ex, g, 0);
    cudaGraphDestroy(g);
    if (e != cudaSuccess) return cuda_fail(s->d, e, "cudaGraphInstantiate", "a decode step");
    *graph = ex;
    return DEV_OK;
}

static int cuda_dec_graph_launch(DevStream *s, void *graph)
{
    CU_TRY(s->d, cudaGraphLaunch((cudaGraphExec_t)graph, cuda_stream(s)->st), "a decode step's graph");
    return DEV_OK;
}

static void cuda_dec_graph_free(void *graph)
{
    if (graph) cudaGraphExecDestroy((cudaGraphExec_t)graph);
}

/* decoder_matvec.cu */
extern "C" int cuda_dec_quantize(DevStream *s, void *act, size_t act_stride, const float *x, size_t ldx, int ntok,
                                 int ncols, int wtype);
extern "C" int cuda_dec_matvec(DevStream *s, float *out, size_t ldo, const void *w, int wtype, int rows, int ncols,
                               const void *act, size_t act_stride, int ntok);
extern "C" int cuda_dec_dequant_f16(DevStream *s, uint16_t *dst, const void *w, int wtype, int rows, int ncols);
extern "C" int cuda_dec_embed(DevStream *s, float *x, const int32_t *ids, int ntok, const void *table, int type,
                              int n_embd);

static const DecDevOps cuda_dec_ops = {
    cuda_dec_quantize,
    cuda_dec_matvec,
    cuda_dec_dequant_f16,
    cuda_dec_embed,
    cuda_dec_add_rmsnorm,
    cuda_dec_qkv_post,
    cuda_dec_attention,
    cuda_dec_swiglu,
    cuda_dec_argmax,
    cuda_dec_graph_begin,
    cuda_dec_graph_end,
    cuda_dec_graph_launch,
    cuda_dec_graph_free,
};

extern "C" const DecDevOps *dec_dev_cuda_ops(void) { return &cuda_dec_ops; }
