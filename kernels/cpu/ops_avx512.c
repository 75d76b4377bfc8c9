/* ops_avx512.c: AVX-512F variants of the cpu_ops kernels (compiled with -mavx512f etc. by
 * CMake; only reached after cpu_ops() checked the CPU). Same formulas as ops_avx2.c, 16 lanes,
 * masked loads for tails. Must agree with ops_ref.c within the kernel tests' tolerance. */
#include "kernels/cpu_ops.h"

#include <immintrin.h>
#include <math.h>

#include "kernels/cpu/ops_avx512_math.h"

static inline __mmask16 tail_mask(int left) { return left >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1); }

static void layernorm_avx512(float *out, const float *x, const float *w, const float *b,
                             int rows, int cols, float eps)
{
    for (int r = 0; r < rows; r++) {
        const float *xr = x + (size_t)r * cols;
        float *o = out + (size_t)r * cols;
        __m512 acc = _mm512_setzero_ps();
        for (int c = 0; c < cols; c += 16)
            acc = _mm512_add_ps(acc, _mm512_maskz_loadu_ps(tail_mask(cols - c), xr + c));
        float mean = _mm512_reduce_add_ps(acc) / cols;
        __m512 vm = _mm512_set1_ps(mean);
        acc = _mm512_setzero_ps();
        for (int c = 0; c < cols; c += 16) {
            __mmask16 m = tail_mask(cols - c);
            __m512 d = _mm512_maskz_sub_ps(m, _mm512_maskz_loadu_ps(m, xr + c), vm);
            acc = _mm512_fmadd_ps(d, d, acc);
        }
        float var = _mm512_reduce_add_ps(acc) / cols;
        __m512 vr = _mm512_set1_ps(1.0f / sqrtf(var + eps));
        for (int c = 0; c < cols; c += 16) {
            __mmask16 m = tail_mask(cols - c);
            __m512 d = _mm512_mul_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, xr + c), vm), vr);
            d = _mm512_fmadd_ps(d, _mm512_maskz_loadu_ps(m, w + c), _mm512_maskz_loadu_ps(m, b + c));
            _mm512_mask_storeu_ps(o + c, m, d);
        }
    }
}

static void gelu_avx512(float *x, size_t n)
{
    for (size_t i = 0; i < n; i += 16) {
        __mmask16 m = tail_mask((int)(n - i < 16 ? n - i : 16));
        _mm512_mask_storeu_ps(x + i, m, gelu16(_mm512_maskz_loadu_ps(m, x + i)));
    }
}

static void softmax_avx512(float *x, int rows, int cols, int ld)
{
    for (int r = 0; r < rows; r++) {
        float *xr = x + (size_t)r * ld;
        __m512 vmx = _mm512_set1_ps(-INFINITY);
        for (int c = 0; c < cols; c += 16) {
            __mmask16 m = tail_mask(cols - c);
            vmx = _mm512_mask_max_ps(vmx, m, vmx, _mm512_maskz_loadu_ps(m, xr + c));
        }
        __m512 vm = _mm512_set1_ps(_mm512_reduce_max_ps(vmx)), acc = _mm512_setzero_ps();
        for (int c = 0; c < cols; c += 16) {
            __mmask16 m = tail_mask(cols - c);
            __m512 e = exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, xr + c), vm));
            _mm512_mask_storeu_ps(xr + c, m, e);
            acc = _mm512_mask_add_ps(acc, m, acc, e);
        }
        __m512 vi = _mm512_set1_ps(1.0f / _mm512_reduce_add_ps(acc));
        for (int c = 0; c < cols; c += 16) {
            __mmask16 m = tail_mask(cols - c);
            _mm512_mask_storeu_ps(xr + c, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, xr + c), vi));
        }
    }
}

static void add_bias_avx512(float *out, const float *a, const float *bias, const float *res,
                            int rows, int cols)
{
    for (int r = 0; r < rows; r++) {
        size_t o = (size_t)r * cols;
        for (int c = 0; c < cols; c += 16) {
            __mmask16 m = tail_mask(cols - c);
            __m512 v = _mm512_add_ps(_mm512_maskz_loadu_ps(m, a + o + c), _mm512_maskz_loadu_ps(m, bias + c));
            if (res) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, res + o + c));
            _mm512_mask_storeu_ps(out + o + c, m, v);
        }
    }
}

void cpu_attention_ref(float *ctx, int ldc, const float *q, const float *k, const float *v, int ld, int n, int d,
                       float scale, float *scratch);

/* qt[e][c*16 + t] = scale * q[i0 + c*16 + t][e] for W/16 chunks of 16 queries: 16x16 transposes in
 * registers. Rows past n read row n - 1 (their results are never stored). */
static inline __attribute__((always_inline)) void attn_load_qt(const int W, float *qt, const float *q, int ld,
                                                               int n, int d, int i0, __m512 vscale)
{
#pragma GCC unroll 2
    for (int c = 0; c < W / 16; c++) {
        for (int e0 = 0; e0 < d; e0 += 16) {
            __m512 a[16], b[16];
#pragma GCC unroll 16
            for (int t = 0; t < 16; t++) {
                int i = i0 + c * 16 + t;
                a[t] = _mm512_loadu_ps(q + (size_t)(i < n ? i : n - 1) * ld + e0);
            }
#pragma GCC unroll 8
            for (int t = 0; t < 16; t += 2) {
                b[t] = _mm512_unpacklo_ps(a[t], a[t + 1]);
                b[t + 1] = _mm512_unpackhi_ps(a[t], a[t + 1]);
            }
            /* a[4i + k], 128-bit lane l: column 4l + k of rows 4i .. 4i + 3 */
#pragma GCC unroll 4
            for (int t = 0; t < 16; t += 4) {
                a[t] = _mm512_shuffle_ps(b[t], b[t + 2], 0x44);
                a[t + 1] = _mm512_shuffle_ps(b[t], b[t + 2], 0xee);
                a[t + 2] = _mm512_shuffle_ps(b[t + 1], b[t + 3], 0x44);
                a[t + 3] = _mm512_shuffle_ps(b[t + 1], b[t + 3], 0xee);
            }
#pragma GCC unroll 4
            for (int k = 0; k < 4; k++) {
                __m512 c0 = _mm512_shuffle_f32x4(a[k], a[4 + k], 0x88);
                __m512 c1 = _mm512_shuffle_f32x4(a[k], a[4 + k], 0xdd);
                __m512 c2 = _mm512_shuffle_f32x4(a[8 + k], a[12 + k], 0x88);
                __m512 c3 = _mm512_shuffle_f32x4(a[8 + k], a[12 + k], 0xdd);
                b[k] = _mm512_shuffle_f32x4(c0, c2, 0x88);
                b[4 + k] = _mm512_shuffle_f32x4(c1, c3, 0x88);
                b[8 + k] = _mm512_shuffle_f32x4(c0, c2, 0xdd);
                b[12 + k] = _mm512_shuffle_f32x4(c1, c3, 0xdd);
            }
#pragma GCC unroll 16
            for (int t = 0; t < 16; t++)
                _mm512_store_ps(qt + (size_t)(e0 + t) * W + c * 16, _mm512_mul_ps(b[t], vscale));
        }
    }
}

/* pt[j0 + r][:W] = scores of keys j0 + r against the W = 16*CW queries of qt, for R keys; mx keeps
 * the running max per query. Keys past n read key n - 1 (a real score, so the max is unchanged) and
 * are not stored. */
static inline __attribute__((always_inline)) void attn_scores_tile(const int R, const int CW, float *pt,
                                                                   const float *qt, const float *k, int ld, int n,
                                                                   int d, int j0, __m512 mx[2])
{
    __m512 acc[8][2];
    const float *kr[8];
#pragma GCC unroll 8
    for (int r = 0; r < R; r++) {
        acc[r][0] = acc[r][1] = _mm512_setzero_ps();
        kr[r] = k + (size_t)(j0 + r < n ? j0 + r : n - 1) * ld;
    }
    for (int e = 0; e < d; e++) {
        __m512 qe[2];
#pragma GCC unroll 2
        for (int c = 0; c < CW; c++) qe[c] = _mm512_load_ps(qt + (size_t)e * 16 * CW + c * 16);
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) {
            __m512 kb = _mm512_set1_ps(kr[r][e]);
#pragma GCC unroll 2
            for (int c = 0; c < CW; c++) acc[r][c] = _mm512_fmadd_ps(kb, qe[c], acc[r][c]);
        }
    }
#pragma GCC unroll 8
    for (int r = 0; r < R; r++) {
#pragma GCC unroll 2
        for (int c = 0; c < CW; c++) mx[c] = _mm512_max_ps(mx[c], acc[r][c]);
    }
#pragma GCC unroll 8
    for (int r = 0; r < R; r++) {
        if (j0 + r >= n) break;
#pragma GCC unroll 2
        for (int c = 0; c < CW; c++) _mm512_store_ps(pt + (size_t)(j0 + r) * 16 * CW + c * 16, acc[r][c]);
    }
}

/* ctx[i0 + r][:DV*16] = inv[r] * sum_j pt[j][r] v[j] for R queries; pt rows have W floats. */
static inline __attribute__((always_inline)) void attn_context_tile(const int R, const int DV, const int W,
                                                                    float *ctx, int ldc, const float *pt,
                                                                    const float *inv, const float *v, int ld,
                                                                    int n, int i0)
{
    __m512 acc[8][4];
#pragma GCC unroll 8
    for (int r = 0; r < R; r++) {
#pragma GCC unroll 4
        for (int c = 0; c < DV; c++) acc[r][c] = _mm512_setzero_ps();
    }
    for (int j = 0; j < n; j++) {
        __m512 vv[4];
#pragma GCC unroll 4
        for (int c = 0; c < DV; c++) vv[c] = _mm512_loadu_ps(v + (size_t)j * ld + c * 16);
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) {
            __m512 pb = _mm512_set1_ps(pt[(size_t)j * W + r]);
#pragma GCC unroll 4
            for (int c = 0; c < DV; c++) acc[r][c] = _mm512_fmadd_ps(pb, vv[c], acc[r][c]);
        }
    }
#pragma GCC unroll 8
    for (int r = 0; r < R; r++) {
        if (i0 + r >= n) break;
        __m512 vi = _mm512_set1_ps(inv[r]);
#pragma GCC unroll 4
        for (int c = 0; c < DV; c++)
            _mm512_storeu_ps(ctx + (size_t)(i0 + r) * ldc + c * 16, _mm512_mul_ps(acc[r][c], vi));
    }
}

/* The context of the W queries from i0, whose probabilities are in pt (transposed). */
static inline __attribute__((always_inline)) void attn_context(const int W, float *ctx, int ldc, const float *pt,
                                                               const float *inv, const float *v, int ld, int n,
                                                               int d, int i0)
{
    for (int r = 0; r < W && i0 + r < n; r += 8) {
        if (d == 32) {
            attn_context_tile(8, 2, W, ctx, ldc, pt + r, inv + r, v, ld, n, i0 + r);
        } else {
            attn_context_tile(4, 4, W, ctx, ldc, pt + r, inv + r, v, ld, n, i0 + r);
            if (i0 + r + 4 < n)
                attn_context_tile(4, 4, W, ctx, ldc, pt + r + 4, inv + r + 4, v, ld, n, i0 + r + 4);
        }
    }
}

/* n <= 16: one block of 16 queries whose 16 key scores stay in registers through the softmax. */
static void attention_small(float *ctx, int ldc, const float *q, const float *k, const float *v, int ld, int n,
                            int d, __m512 vscale, float *scratch)
{
    float *pt = scratch, *qt = scratch + (size_t)n * 16;
    attn_load_qt(16, qt, q, ld, n, d, 0, vscale);
    __m512 acc[16];
    /* two halves of 8 keys: 16 key pointers would not fit in the general registers */
#pragma GCC unroll 2
    for (int h = 0; h < 16; h += 8) {
        const float *kr[8];
#pragma GCC unroll 8
        for (int r = 0; r < 8; r++) {
            acc[h + r] = _mm512_setzero_ps();
            kr[r] = k + (size_t)(h + r < n ? h + r : n - 1) * ld;
        }
        for (int e = 0; e < d; e++) {
            __m512 qe = _mm512_load_ps(qt + (size_t)e * 16);
#pragma GCC unroll 8
            for (int r = 0; r < 8; r++) acc[h + r] = _mm512_fmadd_ps(_mm512_set1_ps(kr[r][e]), qe, acc[h + r]);
        }
    }
    /* keys past n repeat real keys: harmless in the max */
    __m512 mx[8];
#pragma GCC unroll 8
    for (int r = 0; r < 8; r++) mx[r] = _mm512_max_ps(acc[r], acc[r + 8]);
#pragma GCC unroll 3
    for (int w = 4; w > 0; w /= 2) {
#pragma GCC unroll 4
        for (int r = 0; r < w; r++) mx[r] = _mm512_max_ps(mx[r], mx[r + w]);
    }
    __m512 sum = _mm512_setzero_ps();
#pragma GCC unroll 16
    for (int r = 0; r < 16; r++) {
        if (r >= n) break;
        __m512 p = exp16_unclamped(_mm512_sub_ps(acc[r], mx[0]));
        _mm512_store_ps(pt + (size_t)r * 16, p);
        sum = _mm512_add_ps(sum, p);
    }
    float inv[16] __attribute__((aligned(64)));
    _mm512_store_ps(inv, _mm512_div_ps(_mm512_set1_ps(1.0f), sum));
    attn_context(16, ctx, ldc, pt, inv, v, ld, n, d, 0);
}

/* A block of 16*CW queries from i0 when n > 16: scores to scratch with the max per query kept in
 * registers, exp and sum in one pass, P V with 1 / sum applied as the context is stored. */
static inline __attribute__((always_inline)) void attn_block(const int CW, float *ctx, int ldc, const float *q,
                                                             const float *k, const float *v, int ld, int n, int d,
                                                             int i0, __m512 vscale, float *scratch)
{
    const int W = 16 * CW;
    float *pt = scratch, *qt = scratch + (size_t)n * W;
    float inv[32] __attribute__((aligned(64)));
    attn_load_qt(W, qt, q, ld, n, d, i0, vscale);
    __m512 mx[2] = {_mm512_set1_ps(-INFINITY), _mm512_set1_ps(-INFINITY)};
    int j0 = 0;
    for (; j0 + 4 < n; j0 += 8) attn_scores_tile(8, CW, pt, qt, k, ld, n, d, j0, mx);
    if (j0 < n) attn_scores_tile(4, CW, pt, qt, k, ld, n, d, j0, mx);
    __m512 sum[2] = {_mm512_setzero_ps(), _mm512_setzero_ps()};
    for (int j = 0; j < n; j++) {
#pragma GCC unroll 2
        for (int c = 0; c < CW; c++) {
            float *pj = pt + (size_t)j * W + c * 16;
            __m512 p = exp16_unclamped(_mm512_sub_ps(_mm512_load_ps(pj), mx[c]));
            _mm512_store_ps(pj, p);
            sum[c] = _mm512_add_ps(sum[c], p);
        }
    }
#pragma GCC unroll 2
    for (int c = 0; c < CW; c++) _mm512_store_ps(inv + c * 16, _mm512_div_ps(_mm512_set1_ps(1.0f), sum[c]));
    attn_context(W, ctx, ldc, pt, inv, v, ld, n, d, i0);
}

/* Queries are the vector lanes, so the softmax needs no horizontal reductions: per block of 32
 * queries (16 for the last one when that is enough), Q^T times scale into scratch, then scores,
 * softmax and P V by register tiles. Head sizes other than 32 and 64 go to the reference. */
static void attention_avx512(float *ctx, int ldc, const float *q, const float *k, const float *v, int ld, int n,
                             int d, float scale, float *scratch)
{
    if (d != 32 && d != 64) {
        cpu_attention_ref(ctx, ldc, q, k, v, ld, n, d, scale, scratch);
        return;
    }
    const __m512 vscale = _mm512_set1_ps(scale);
    if (n <= 16) {
        if (n > 0) attention_small(ctx, ldc, q, k, v, ld, n, d, vscale, scratch);
        return;
    }
    /* scratch holds (n + d) * 32 floats once n > 16 */
    for (int i0 = 0; i0 < n; i0 += 32) {
        if (n - i0 > 16)
            attn_block(2, ctx, ldc, q, k, v, ld, n, d, i0, vscale, scratch);
        else
            attn_block(1, ctx, ldc, q, k, v, ld, n, d, i0, vscale, scratch);
    }
}

static const CpuOps ops_avx512 = {
    .isa = "avx512",
    .layernorm = layernorm_avx512,
    .gelu = gelu_avx512,
    .softmax = softmax_avx512,
    .add_bias = add_bias_avx512,
    .attention = attention_avx512,
};

const CpuOps *cpu_ops_avx512_table(void) { return &ops_avx512; }
