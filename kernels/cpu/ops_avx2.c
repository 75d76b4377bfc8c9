/* ops_avx2.c: AVX2+FMA variants of the cpu_ops kernels (compiled with -mavx2 -mfma by CMake;
 * only reached after cpu_ops() checked the CPU). Must agree with ops_ref.c within the tolerance
 * the kernel tests pin down; tails are done in scalar code with the same formulas. */
#include "kernels/cpu_ops.h"

#include <immintrin.h>
#include <math.h>

static inline float hsum8(__m256 v)
{
    __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
    lo = _mm_add_ps(lo, hi);
    lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
    lo = _mm_add_ss(lo, _mm_shuffle_ps(lo, lo, 1));
    return _mm_cvtss_f32(lo);
}

static inline float hmax8(__m256 v)
{
    __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
    lo = _mm_max_ps(lo, hi);
    lo = _mm_max_ps(lo, _mm_movehl_ps(lo, lo));
    lo = _mm_max_ss(lo, _mm_shuffle_ps(lo, lo, 1));
    return _mm_cvtss_f32(lo);
}

/* exp(x): x = n ln2 + r, |r| <= ln2/2, exp(r) by its degree-7 Taylor polynomial, times 2^n. */
static inline __m256 exp8(__m256 x)
{
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.0f)), _mm256_set1_ps(88.0f));
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.0f / 5040.0f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 720.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

/* erf(x) = sign(x) (1 - poly(t) exp(-x^2)), t = 1 / (1 + p|x|): the Abramowitz-Stegun 7.1.26
 * rational form, absolute error below 1.5e-7. */
static inline __m256 erf8(__m256 x)
{
    const __m256 signmask = _mm256_set1_ps(-0.0f);
    __m256 sign = _mm256_and_ps(x, signmask);
    __m256 ax = _mm256_andnot_ps(signmask, x);
    __m256 t = _mm256_div_ps(_mm256_set1_ps(1.0f),
                             _mm256_fmadd_ps(_mm256_set1_ps(0.3275911f), ax, _mm256_set1_ps(1.0f)));
    __m256 p = _mm256_set1_ps(1.061405429f);
    p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(-1.453152027f));
    p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(1.421413741f));
    p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(-0.284496736f));
    p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(0.254829592f));
    p = _mm256_mul_ps(p, t);
    __m256 e = exp8(_mm256_sub_ps(_mm256_setzero_ps(), _mm256_mul_ps(ax, ax)));
    __m256 y = _mm256_fnmadd_ps(p, e, _mm256_set1_ps(1.0f));
    return _mm256_or_ps(y, sign);
}

static void layernorm_avx2(float *out, const float *x, const float *w, const float *b,
                           int rows, int cols, float eps)
{
    for (int r = 0; r < rows; r++) {
        const float *xr = x + (size_t)r * cols;
        float *o = out + (size_t)r * cols;
        __m256 acc = _mm256_setzero_ps();
        int c = 0;
        for (; c + 8 <= cols; c += 8) acc = _mm256_add_ps(acc, _mm256_loadu_ps(xr + c));
        float sum = hsum8(acc);
        for (; c < cols; c++) sum += xr[c];
        float mean = sum / cols;
        __m256 vm = _mm256_set1_ps(mean);
        acc = _mm256_setzero_ps();
        for (c = 0; c + 8 <= cols; c += 8) {
            __m256 d = _mm256_sub_ps(_mm256_loadu_ps(xr + c), vm);
            acc = _mm256_fmadd_ps(d, d, acc);
        }
        float var = hsum8(acc);
        for (; c < cols; c++) var += (xr[c] - mean) * (xr[c] - mean);
        var /= cols;
        float rstd = 1.0f / sqrtf(var + eps);
        __m256 vr = _mm256_set1_ps(rstd);
        for (c = 0; c + 8 <= cols; c += 8) {
            __m256 d = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(xr + c), vm), vr);
            _mm256_storeu_ps(o + c, _mm256_fmadd_ps(d, _mm256_loadu_ps(w + c), _mm256_loadu_ps(b + c)));
        }
        for (; c < cols; c++) o[c] = (xr[c] - mean) * rstd * w[c] + b[c];
    }
}

static void gelu_avx2(float *x, size_t n)
{
    size_t i = 0;
    const __m256 half = _mm256_set1_ps(0.5f), one = _mm256_set1_ps(1.0f),
                 isq2 = _mm256_set1_ps(0.70710678118654752f);
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_loadu_ps(x + i);
        __m256 e = erf8(_mm256_mul_ps(v, isq2));
        _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_mul_ps(half, v), _mm256_add_ps(one, e)));
    }
    for (; i < n; i++) x[i] = 0.5f * x[i] * (1.0f + erff(x[i] * 0.70710678118654752f));
}

static void softmax_avx2(float *x, int rows, int cols, int ld)
{
    for (int r = 0; r < rows; r++) {
        float *xr = x + (size_t)r * ld;
        __m256 vmx = _mm256_set1_ps(-INFINITY);
        int c = 0;
        for (; c + 8 <= cols; c += 8) vmx = _mm256_max_ps(vmx, _mm256_loadu_ps(xr + c));
        float mx = hmax8(vmx);
        for (; c < cols; c++) mx = xr[c] > mx ? xr[c] : mx;
        __m256 vm = _mm256_set1_ps(mx), acc = _mm256_setzero_ps();
        for (c = 0; c + 8 <= cols; c += 8) {
            __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(xr + c), vm));
            _mm256_storeu_ps(xr + c, e);
            acc = _mm256_add_ps(acc, e);
        }
        float sum = hsum8(acc);
        for (; c < cols; c++) {
            xr[c] = expf(xr[c] - mx);
            sum += xr[c];
        }
        __m256 vi = _mm256_set1_ps(1.0f / sum);
        for (c = 0; c + 8 <= cols; c += 8) _mm256_storeu_ps(xr + c, _mm256_mul_ps(_mm256_loadu_ps(xr + c), vi));
        for (; c < cols; c++) xr[c] *= 1.0f / sum;
    }
}

static void add_bias_avx2(float *out, const float *a, const float *bias, const float *res,
                          int rows, int cols)
{
    for (int r = 0; r < rows; r++) {
        size_t o = (size_t)r * cols;
        int c = 0;
        for (; c + 8 <= cols; c += 8) {
            __m256 v = _mm256_add_ps(_mm256_loadu_ps(a + o + c), _mm256_loadu_ps(bias + c));
            if (res) v = _mm256_add_ps(v, _mm256_loadu_ps(res + o + c));
            _mm256_storeu_ps(out + o + c, v);
        }
        for (; c < cols; c++) out[o + c] = a[o + c] + bias[c] + (res ? res[o + c] : 0.0f);
    }
}

void cpu_attention_ref(float *ctx, int ldc, const float *q, const float *k, const float *v, int ld, int n, int d,
                       float scale, float *scratch);

/* qt[e][c*8 + t] = scale * q[i0 + c*8 + t][e] for W/8 chunks of 8 queries: 8x8 transposes in
 * registers. Rows past n read row n - 1 (their results are never stored). */
static inline __attribute__((always_inline)) void attn_load_qt(const int W, float *qt, const float *q, int ld,
                                                               int n, int d, int i0, __m256 vscale)
{
#pragma GCC unroll 2
    for (int c = 0; c < W / 8; c++) {
        for (int e0 = 0; e0 < d; e0 += 8) {
            __m256 a[8], b[8];
#pragma GCC unroll 8
            for (int t = 0; t < 8; t++) {
                int i = i0 + c * 8 + t;
                a[t] = _mm256_loadu_ps(q + (size_t)(i < n ? i : n - 1) * ld + e0);
            }
#pragma GCC unroll 4
            for (int t = 0; t < 8; t += 2) {
                b[t] = _mm256_unpacklo_ps(a[t], a[t + 1]);
                b[t + 1] = _mm256_unpackhi_ps(a[t], a[t + 1]);
            }
            /* a[4i + k], 128-bit lane l: column 4l + k of rows 4i .. 4i + 3 */
#pragma GCC unroll 2
            for (int t = 0; t < 8; t += 4) {
                a[t] = _mm256_shuffle_ps(b[t], b[t + 2], 0x44);
                a[t + 1] = _mm256_shuffle_ps(b[t], b[t + 2], 0xee);
                a[t + 2] = _mm256_shuffle_ps(b[t + 1], b[t + 3], 0x44);
                a[t + 3] = _mm256_shuffle_ps(b[t + 1], b[t + 3], 0xee);
            }
#pragma GCC unroll 4
            for (int k = 0; k < 4; k++) {
                b[k] = _mm256_permute2f128_ps(a[k], a[4 + k], 0x20);
                b[4 + k] = _mm256_permute2f128_ps(a[k], a[4 + k], 0x31);
            }
#pragma GCC unroll 8
            for (int t = 0; t < 8; t++) _mm256_store_ps(qt + (size_t)(e0 + t) * W + c * 8, _mm256_mul_ps(b[t], vscale));
        }
    }
}

/* pt[j0 + r][:W] = scores of keys j0 + r against the W = 8*CW queries of qt, for R keys; mx keeps
 * the running max per query. Keys past n read key n - 1 (a real score, so the max is unchanged) and
 * are not stored. */
static inline __attribute__((always_inline)) void attn_scores_tile(const int R, const int CW, float *pt,
                                                                   const float *qt, const float *k, int ld, int n,
                                                                   int d, int j0, __m256 mx[2])
{
    __m256 acc[8][2];
    const float *kr[8];
#pragma GCC unroll 8
    for (int r = 0; r < R; r++) {
        acc[r][0] = acc[r][1] = _mm256_setzero_ps();
        kr[r] = k + (size_t)(j0 + r < n ? j0 + r : n - 1) * ld;
    }
    for (int e = 0; e < d; e++) {
        __m256 qe[2];
#pragma GCC unroll 2
        for (int c = 0; c < CW; c++) qe[c] = _mm256_load_ps(qt + (size_t)e * 8 * CW + c * 8);
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) {
            __m256 kb = _mm256_broadcast_ss(kr[r] + e);
#pragma GCC unroll 2
            for (int c = 0; c < CW; c++) acc[r][c] = _mm256_fmadd_ps(kb, qe[c], acc[r][c]);
        }
    }
#pragma GCC unroll 8
    for (int r = 0; r < R; r++) {
#pragma GCC unroll 2
        for (int c = 0; c < CW; c++) mx[c] = _mm256_max_ps(mx[c], acc[r][c]);
    }
#pragma GCC unroll 8
    for (int r = 0; r < R; r++) {
        if (j0 + r >= n) break;
#pragma GCC unroll 2
        for (int c = 0; c < CW; c++) _mm256_store_ps(pt + (size_t)(j0 + r) * 8 * CW + c * 8, acc[r][c]);
    }
}

/* ctx[i0 + r][e0 .. e0 + 16] = inv[r] * sum_j pt[j][r] v[j][e0 ..] for 4 queries; pt rows have W
 * floats. */
static inline __attribute__((always_inline)) void attn_context_tile(const int W, float *ctx, int ldc,
                                                                    const float *pt, const float *inv,
                                                                    const float *v, int ld, int n, int i0, int e0)
{
    __m256 acc[4][2];
#pragma GCC unroll 4
    for (int r = 0; r < 4; r++) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
    for (int j = 0; j < n; j++) {
        __m256 v0 = _mm256_loadu_ps(v + (size_t)j * ld + e0), v1 = _mm256_loadu_ps(v + (size_t)j * ld + e0 + 8);
#pragma GCC unroll 4
        for (int r = 0; r < 4; r++) {
            __m256 pb = _mm256_broadcast_ss(pt + (size_t)j * W + r);
            acc[r][0] = _mm256_fmadd_ps(pb, v0, acc[r][0]);
            acc[r][1] = _mm256_fmadd_ps(pb, v1, acc[r][1]);
        }
    }
#pragma GCC unroll 4
    for (int r = 0; r < 4; r++) {
        if (i0 + r >= n) break;
        __m256 vi = _mm256_broadcast_ss(inv + r);
        _mm256_storeu_ps(ctx + (size_t)(i0 + r) * ldc + e0, _mm256_mul_ps(acc[r][0], vi));
        _mm256_storeu_ps(ctx + (size_t)(i0 + r) * ldc + e0 + 8, _mm256_mul_ps(acc[r][1], vi));
    }
}

/* A block of 8*CW queries from i0: scores to scratch with the max per query kept in registers, exp
 * and sum in one pass, P V with 1 / sum applied as the context is stored. */
static inline __attribute__((always_inline)) void attn_block(const int CW, float *ctx, int ldc, const float *q,
                                                             const float *k, const float *v, int ld, int n, int d,
                                                             int i0, __m256 vscale, float *scratch)
{
    const int W = 8 * CW, R = 8 / CW; /* R x CW accumulators: 8, enough to cover the FMA latency */
    float *pt = scratch, *qt = scratch + (size_t)n * W;
    float inv[16] __attribute__((aligned(32)));
    attn_load_qt(W, qt, q, ld, n, d, i0, vscale);
    __m256 mx[2] = {_mm256_set1_ps(-INFINITY), _mm256_set1_ps(-INFINITY)};
    for (int j0 = 0; j0 < n; j0 += R) attn_scores_tile(R, CW, pt, qt, k, ld, n, d, j0, mx);
    __m256 sum[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
    for (int j = 0; j < n; j++) {
#pragma GCC unroll 2
        for (int c = 0; c < CW; c++) {
            float *pj = pt + (size_t)j * W + c * 8;
            __m256 p = exp8(_mm256_sub_ps(_mm256_load_ps(pj), mx[c]));
            _mm256_store_ps(pj, p);
            sum[c] = _mm256_add_ps(sum[c], p);
        }
    }
#pragma GCC unroll 2
    for (int c = 0; c < CW; c++) _mm256_store_ps(inv + c * 8, _mm256_div_ps(_mm256_set1_ps(1.0f), sum[c]));
    for (int r = 0; r < W && i0 + r < n; r += 4) {
        for (int e0 = 0; e0 < d; e0 += 16) attn_context_tile(W, ctx, ldc, pt + r, inv + r, v, ld, n, i0 + r, e0);
    }
}

/* Queries are the vector lanes, so the softmax needs no horizontal reductions: per block of 16
 * queries (8 for the last one when that is enough), Q^T times scale into scratch, then scores,
 * softmax and P V by register tiles. Head sizes that are not a multiple of 32 go to the reference. */
static void attention_avx2(float *ctx, int ldc, const float *q, const float *k, const float *v, int ld, int n, int d,
                           float scale, float *scratch)
{
    if (d % 32 != 0) {
        cpu_attention_ref(ctx, ldc, q, k, v, ld, n, d, scale, scratch);
        return;
    }
    const __m256 vscale = _mm256_set1_ps(scale);
    /* scratch holds (n + d) * 16 floats */
    for (int i0 = 0; i0 < n; i0 += 16) {
        if (n - i0 > 8)
            attn_block(2, ctx, ldc, q, k, v, ld, n, d, i0, vscale, scratch);
        else
            attn_block(1, ctx, ldc, q, k, v, ld, n, d, i0, vscale, scratch);
    }
}

static const CpuOps ops_avx2 = {
    .isa = "avx2",
    .layernorm = layernorm_avx2,
    .gelu = gelu_avx2,
    .softmax = softmax_avx2,
    .add_bias = add_bias_avx2,
    .attention = attention_avx2,
};

const CpuOps *cpu_ops_avx2_table(void) { return &ops_avx2; }
