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

/* scores[i0 + r][c0*16 ..] for R rows x CC chunks of 16 keys: kt is K^T ([d][np]). Rows past n
 * read row n - 1 and are not stored. */
static inline __attribute__((always_inline)) void attn_scores_tile(const int R, const int CC, float *s, int np,
                                                                   const float *q, int ld, const float *kt, int n,
                                                                   int d, int i0, int c0, __m512 vscale)
{
    __m512 acc[8][2];
    const float *qr[8];
#pragma GCC unroll 8
    for (int r = 0; r < R; r++) {
        acc[r][0] = acc[r][1] = _mm512_setzero_ps();
        qr[r] = q + (size_t)(i0 + r < n ? i0 + r : n - 1) * ld;
    }
    for (int e = 0; e < d; e++) {
        __m512 kv[2];
#pragma GCC unroll 2
        for (int c = 0; c < CC; c++) kv[c] = _mm512_load_ps(kt + (size_t)e * np + (size_t)(c0 + c) * 16);
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) {
            __m512 qb = _mm512_set1_ps(qr[r][e]);
#pragma GCC unroll 2
            for (int c = 0; c < CC; c++) acc[r][c] = _mm512_fmadd_ps(qb, kv[c], acc[r][c]);
        }
    }
#pragma GCC unroll 8
    for (int r = 0; r < R; r++) {
        if (i0 + r >= n) break;
#pragma GCC unroll 2
        for (int c = 0; c < CC; c++)
            _mm512_store_ps(s + (size_t)(i0 + r) * np + (size_t)(c0 + c) * 16, _mm512_mul_ps(acc[r][c], vscale));
    }
}

/* ctx[i0 + r][:DV*16] = sum_j p[i0 + r][j] v[j] for R rows. */
static inline __attribute__((always_inline)) void attn_context_tile(const int R, const int DV, float *ctx, int ldc,
                                                                    const float *p, int np, const float *v, int ld,
                                                                    int n, int i0)
{
    __m512 acc[8][4];
    const float *pr[8];
#pragma GCC unroll 8
    for (int r = 0; r < R; r++) {
#pragma GCC unroll 4
        for (int c = 0; c < DV; c++) acc[r][c] = _mm512_setzero_ps();
        pr[r] = p + (size_t)(i0 + r < n ? i0 + r : n - 1) * np;
    }
    for (int j = 0; j < n; j++) {
        __m512 vv[4];
#pragma GCC unroll 4
        for (int c = 0; c < DV; c++) vv[c] = _mm512_loadu_ps(v + (size_t)j * ld + c * 16);
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) {
            __m512 pb = _mm512_set1_ps(pr[r][j]);
#pragma GCC unroll 4
            for (int c = 0; c < DV; c++) acc[r][c] = _mm512_fmadd_ps(pb, vv[c], acc[r][c]);
        }
    }
#pragma GCC unroll 8
    for (int r = 0; r < R; r++) {
        if (i0 + r >= n) break;
#pragma GCC unroll 4
        for (int c = 0; c < DV; c++) _mm512_storeu_ps(ctx + (size_t)(i0 + r) * ldc + c * 16, acc[r][c]);
    }
}

/* K^T into scratch (zero past n); then per block of 8 queries: scores by register tiles, softmax,
 * P V by register tiles.
 * Head sizes other than 32 and 64 go to the reference. */
static void attention_avx512(float *ctx, int ldc, const float *q, const float *k, const float *v, int ld, int n,
                             int d, float scale, float *scratch)
{
    if (d != 32 && d != 64) {
        cpu_attention_ref(ctx, ldc, q, k, v, ld, n, d, scale, scratch);
        return;
    }
    const int np = (n + 15) & ~15, nch = np / 16;
    float *s = scratch, *kt = scratch + (size_t)n * np;
    for (int e = 0; e < d; e++) {
        float *row = kt + (size_t)e * np;
        for (int j = 0; j < n; j++) row[j] = k[(size_t)j * ld + e];
        for (int j = n; j < np; j++) row[j] = 0.0f;
    }
    const __m512 vscale = _mm512_set1_ps(scale);
    /* 8 query rows at a time: their scores, softmax and context while the 8 score rows are in L1 */
    for (int i0 = 0; i0 < n; i0 += 8) {
        int c0 = 0;
        for (; c0 + 2 <= nch; c0 += 2) attn_scores_tile(8, 2, s, np, q, ld, kt, n, d, i0, c0, vscale);
        if (c0 < nch) attn_scores_tile(8, 1, s, np, q, ld, kt, n, d, i0, c0, vscale);
        softmax_avx512(s + (size_t)i0 * np, n - i0 < 8 ? n - i0 : 8, n, np);
        if (d == 32) {
            attn_context_tile(8, 2, ctx, ldc, s, np, v, ld, n, i0);
        } else {
            attn_context_tile(4, 4, ctx, ldc, s, np, v, ld, n, i0);
            if (i0 + 4 < n) attn_context_tile(4, 4, ctx, ldc, s, np, v, ld, n, i0 + 4);
        }
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
