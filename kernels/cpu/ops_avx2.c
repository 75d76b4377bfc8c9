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

/* K^T into scratch (zero past n), scores 4 rows x 16 keys at a time, softmax, then P V with
 * four ymm accumulators per row. Head sizes that are not a multiple of 32 go to the reference. */
static void attention_avx2(float *ctx, int ldc, const float *q, const float *k, const float *v, int ld, int n, int d,
                           float scale, float *scratch)
{
    if (d % 32 != 0) {
        cpu_attention_ref(ctx, ldc, q, k, v, ld, n, d, scale, scratch);
        return;
    }
    const int np = (n + 15) & ~15;
    float *s = scratch, *kt = scratch + (size_t)n * np;
    for (int e = 0; e < d; e++) {
        float *row = kt + (size_t)e * np;
        for (int j = 0; j < n; j++) row[j] = k[(size_t)j * ld + e];
        for (int j = n; j < np; j++) row[j] = 0.0f;
    }
    const __m256 vscale = _mm256_set1_ps(scale);
    for (int i0 = 0; i0 < n; i0 += 4) {
        const float *qr[4];
        for (int r = 0; r < 4; r++) qr[r] = q + (size_t)(i0 + r < n ? i0 + r : n - 1) * ld;
        for (int c0 = 0; c0 < np; c0 += 16) {
            __m256 acc[4][2];
            for (int r = 0; r < 4; r++) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
            for (int e = 0; e < d; e++) {
                __m256 k0 = _mm256_loadu_ps(kt + (size_t)e * np + c0), k1 = _mm256_loadu_ps(kt + (size_t)e * np + c0 + 8);
                for (int r = 0; r < 4; r++) {
                    __m256 qb = _mm256_broadcast_ss(qr[r] + e);
                    acc[r][0] = _mm256_fmadd_ps(qb, k0, acc[r][0]);
                    acc[r][1] = _mm256_fmadd_ps(qb, k1, acc[r][1]);
                }
            }
            for (int r = 0; r < 4 && i0 + r < n; r++) {
                _mm256_storeu_ps(s + (size_t)(i0 + r) * np + c0, _mm256_mul_ps(acc[r][0], vscale));
                _mm256_storeu_ps(s + (size_t)(i0 + r) * np + c0 + 8, _mm256_mul_ps(acc[r][1], vscale));
            }
        }
    }
    softmax_avx2(s, n, n, np);
    for (int i = 0; i < n; i++) {
        const float *p = s + (size_t)i * np;
        for (int e0 = 0; e0 < d; e0 += 32) {
            __m256 acc[4];
            for (int c = 0; c < 4; c++) acc[c] = _mm256_setzero_ps();
            for (int j = 0; j < n; j++) {
                __m256 pb = _mm256_broadcast_ss(p + j);
                const float *vr = v + (size_t)j * ld + e0;
                for (int c = 0; c < 4; c++) acc[c] = _mm256_fmadd_ps(pb, _mm256_loadu_ps(vr + c * 8), acc[c]);
            }
            for (int c = 0; c < 4; c++) _mm256_storeu_ps(ctx + (size_t)i * ldc + e0 + c * 8, acc[c]);
        }
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
