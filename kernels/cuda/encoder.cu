/* encoder.cu: the BERT encoder's own CUDA kernels (the GEMMs are cuBLASLt, gemm_lt.cu): token
 * embedding over padding-free packs, LayerNorm with the residual folded in, GELU (erf form),
 * varlen attention for head sizes 32 and 64, pooling (mean, cls, max), L2 normalisation. The
 * scalar math is device_math.h's, shared with the CPU tests. Each launcher checks its shapes and
 * its launch and returns a DevStatus; nothing here allocates, logs or exits. Hot kernels are
 * built with ptxas' spill warnings as errors (CMakeLists.txt). */
#include <stdio.h>

#include "kernels/cuda/cuda_common.cuh"
#include "kernels/device_math.h"

#define WARP 32

/* Sequence of token t: the i with cu[i] <= t < cu[i + 1]. */
__device__ __forceinline__ int seq_of(const int32_t *cu, int nseq, int t)
{
    int lo = 0, hi = nseq;
    while (hi - lo > 1) {
        int mid = (lo + hi) >> 1;
        if (cu[mid] <= t) lo = mid;
        else hi = mid;
    }
    return lo;
}

__global__ void k_embed_tokens(float *__restrict__ x, const int32_t *__restrict__ ids, const int32_t *__restrict__ cu,
                               int nseq, const float *__restrict__ word, const float *__restrict__ pos,
                               const float *__restrict__ type0, int H)
{
    int t = blockIdx.x;
    int p = t - cu[seq_of(cu, nseq, t)];
    const float *w = word + (size_t)ids[t] * H, *pe = pos + (size_t)p * H;
    for (int h = threadIdx.x; h < H; h += blockDim.x) x[(size_t)t * H + h] = w[h] + pe[h] + type0[h];
}

/* One block per row: mean, then variance around it (two passes, as devm_layernorm_row), then
 * the output. Every read of the row happens before the first write, so out may be x or res. */
__global__ void k_layernorm(float *out, const float *x, const float *res, const float *__restrict__ w,
                            const float *__restrict__ b, int cols, float eps)
{
    __shared__ float red[32];
    size_t r = blockIdx.x;
    const float *xr = x + r * cols, *rr = res ? res + r * cols : NULL;
    float s = 0.0f;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) s += xr[c] + (rr ? rr[c] : 0.0f);
    float mean = block_sum(s, red) / (float)cols;
    float v = 0.0f;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) {
        float dlt = xr[c] + (rr ? rr[c] : 0.0f) - mean;
        v += dlt * dlt;
    }
    float rstd = devm_rstd(block_sum(v, red) / (float)cols, eps);
    __syncthreads();
    float *o = out + r * cols;
    for (int c = threadIdx.x; c < cols; c += blockDim.x)
        o[c] = devm_layernorm_apply(xr[c] + (rr ? rr[c] : 0.0f), mean, rstd, w[c], b[c]);
}

__global__ void k_gelu(float *x, size_t n)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        x[i] = devm_gelu(x[i]);
}

/* Varlen attention: one warp per (query token, head). Keys are taken 32 at a time, one per lane:
 * the lane computes its key's score against the whole query (held in registers), the warp takes
 * the block's maximum and sum, merges them into the running softmax (devm_softmax_merge), then
 * every lane accumulates its D / 32 output dimensions over the block's values. No scratch, no
 * padding: a sequence's queries see only its own keys. */
template <int D>
__global__ void __launch_bounds__(128) k_attention(float *__restrict__ ctx, const float *__restrict__ qkv,
                                                   const int32_t *__restrict__ cu, int nseq, int T, int heads,
                                                   float scale)
{
    const int lane = threadIdx.x % WARP;
    const int t = blockIdx.x * (blockDim.x / WARP) + threadIdx.x / WARP;
    const int h = blockIdx.y;
    if (t >= T) return; /* whole warps leave together */
    const int H = heads * D, ld = 3 * H;
    const int i = seq_of(cu, nseq, t), j0s = cu[i], j1s = cu[i + 1];
    float q[D];
    const float4 *q4 = (const float4 *)(qkv + (size_t)t * ld + h * D);
#pragma unroll
    for (int e = 0; e < D / 4; e++) {
        float4 v = q4[e];
        q[4 * e] = v.x;
        q[4 * e + 1] = v.y;
        q[4 * e + 2] = v.z;
        q[4 * e + 3] = v.w;
    }
    const float *kbase = qkv + H + h * D, *vbase = qkv + 2 * H + h * D;
    float m = -INFINITY, l = 0.0f, acc[D / WARP];
#pragma unroll
    for (int r = 0; r < D / WARP; r++) acc[r] = 0.0f;
    for (int j0 = j0s; j0 < j1s; j0 += WARP) {
        int j = j0 + lane;
        float sc = -INFINITY;
        if (j < j1s) {
            const float4 *k4 = (const float4 *)(kbase + (size_t)j * ld);
            float dot = 0.0f;
#pragma unroll
            for (int e = 0; e < D / 4; e++) {
                float4 kv = k4[e];
                dot += q[4 * e] * kv.x + q[4 * e + 1] * kv.y + q[4 * e + 2] * kv.z + q[4 * e + 3] * kv.w;
            }
            sc = dot * scale;
        }
        float m2 = warp_max(sc);
        float p = j < j1s ? expf(sc - m2) : 0.0f;
        float l2 = warp_sum(p);
        float keep = devm_softmax_merge(&m, &l, m2, l2), c = expf(m2 - m);
        int nk = min(WARP, j1s - j0);
        float add[D / WARP];
#pragma unroll
        for (int r = 0; r < D / WARP; r++) add[r] = 0.0f;
        for (int jj = 0; jj < nk; jj++) {
            float pj = __shfl_sync(0xffffffffu, p, jj);
            const float *vr = vbase + (size_t)(j0 + jj) * ld;
#pragma unroll
            for (int r = 0; r < D / WARP; r++) add[r] += pj * vr[lane + WARP * r];
        }
#pragma unroll
        for (int r = 0; r < D / WARP; r++) acc[r] = acc[r] * keep + add[r] * c;
    }
    float inv = 1.0f / l;
    float *o = ctx + (size_t)t * H + h * D;
#pragma unroll
    for (int r = 0; r < D / WARP; r++) o[lane + WARP * r] = acc[r] * inv;
}

__global__ void k_pool(float *__restrict__ out, const float *__restrict__ x, const int32_t *__restrict__ cu, int H,
                       int mode)
{
    int i = blockIdx.x, t0 = cu[i], t1 = cu[i + 1];
    for (int h = threadIdx.x; h < H; h += blockDim.x) {
        float acc = x[(size_t)t0 * H + h];
        if (mode == DEV_POOL_MEAN) {
            for (int t = t0 + 1; t < t1; t++) acc += x[(size_t)t * H + h];
            acc /= (float)(t1 - t0);
        } else if (mode == DEV_POOL_MAX) {
            for (int t = t0 + 1; t < t1; t++) acc = fmaxf(acc, x[(size_t)t * H + h]);
        }
        out[(size_t)i * H + h] = acc;
    }
}

__global__ void k_l2_normalize(float *x, int cols)
{
    __shared__ float red[32];
    float *v = x + (size_t)blockIdx.x * cols, ss = 0.0f;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) ss += v[c] * v[c];
    float inv = 1.0f / fmaxf(sqrtf(block_sum(ss, red)), 1e-12f);
    for (int c = threadIdx.x; c < cols; c += blockDim.x) v[c] *= inv;
}

static cudaStream_t st(DevStream *s) { return cuda_stream(s)->st; }

int cuda_embed_tokens(DevStream *s, float *x, const int32_t *ids, const int32_t *cu, int nseq, int T,
                      const float *word, const float *pos, const float *type0, int H)
{
    if (T <= 0 || nseq <= 0) return DEV_OK;
    k_embed_tokens<<<T, 128, 0, st(s)>>>(x, ids, cu, nseq, word, pos, type0, H);
    LAUNCH_CHECK(s->d, "k_embed_tokens", "T=%d nseq=%d H=%d", T, nseq, H);
    return DEV_OK;
}

int cuda_layernorm(DevStream *s, float *out, const float *x, const float *res, const float *w, const float *b,
                   int rows, int cols, float eps)
{
    if (rows <= 0) return DEV_OK;
    k_layernorm<<<rows, 128, 0, st(s)>>>(out, x, res, w, b, cols, eps);
    LAUNCH_CHECK(s->d, "k_layernorm", "rows=%d cols=%d residual=%s", rows, cols, res ? "yes" : "no");
    return DEV_OK;
}

int cuda_gelu(DevStream *s, float *x, size_t n)
{
    if (!n) return DEV_OK;
    size_t blocks = (n + 255) / 256;
    k_gelu<<<(unsigned)(blocks < 65535 ? blocks : 65535), 256, 0, st(s)>>>(x, n);
    LAUNCH_CHECK(s->d, "k_gelu", "n=%zu", n);
    return DEV_OK;
}

int cuda_attention(DevStream *s, float *ctx, const float *qkv, const int32_t *cu, int nseq, int T, int heads, int d,
                     float scale)
{
    if (nseq <= 0 || T <= 0) return DEV_OK;
    dim3 grid((unsigned)((T + 3) / 4), (unsigned)heads);
    if (d == 32) k_attention<32><<<grid, 128, 0, st(s)>>>(ctx, qkv, cu, nseq, T, heads, scale);
    else if (d == 64) k_attention<64><<<grid, 128, 0, st(s)>>>(ctx, qkv, cu, nseq, T, heads, scale);
    else return dev_fail(s->d, DEV_EINVAL, "attention", "head size %d (this build has 32 and 64)", d);
    LAUNCH_CHECK(s->d, "k_attention", "T=%d nseq=%d heads=%d d=%d", T, nseq, heads, d);
    return DEV_OK;
}

int cuda_pool(DevStream *s, float *out, const float *x, const int32_t *cu, int nseq, int H, DevPool mode)
{
    if (nseq <= 0) return DEV_OK;
    k_pool<<<nseq, 128, 0, st(s)>>>(out, x, cu, H, (int)mode);
    LAUNCH_CHECK(s->d, "k_pool", "nseq=%d H=%d mode=%d", nseq, H, (int)mode);
    return DEV_OK;
}

int cuda_l2_normalize(DevStream *s, float *x, int rows, int cols)
{
    if (rows <= 0) return DEV_OK;
    k_l2_normalize<<<rows, 128, 0, st(s)>>>(x, cols);
    LAUNCH_CHECK(s->d, "k_l2_normalize", "rows=%d cols=%d", rows, cols);
    return DEV_OK;
}
