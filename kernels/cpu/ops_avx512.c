/* ops_avx512.c: AVX-512F variants of the cpu_ops kernels (compiled with -mavx512f etc. by
 * CMake; only reached after cpu_ops() checked the CPU). Same formulas as ops_avx2.c, 16 lanes,
 * masked loads for tails. Must agree with ops_ref.c within the kernel tests' tolerance. */
#include "kernels/cpu_ops.h"

#include <immintrin.h>
#include <math.h>

static inline __mmask16 tail_mask(int left) { return left >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1); }

static inline __m512 exp16(__m512 x)
{
    x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-87.0f)), _mm512_set1_ps(88.0f));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.0f / 5040.0f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 720.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);
}

static inline __m512 erf16(__m512 x)
{
    __m512 ax = _mm512_abs_ps(x);
    __m512 t = _mm512_div_ps(_mm512_set1_ps(1.0f),
                             _mm512_fmadd_ps(_mm512_set1_ps(0.3275911f), ax, _mm512_set1_ps(1.0f)));
    __m512 p = _mm512_set1_ps(1.061405429f);
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(-1.453152027f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(1.421413741f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(-0.284496736f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(0.254829592f));
    p = _mm512_mul_ps(p, t);
    __m512 e = exp16(_mm512_sub_ps(_mm512_setzero_ps(), _mm512_mul_ps(ax, ax)));
    __m512 y = _mm512_fnmadd_ps(p, e, _mm512_set1_ps(1.0f));
    /* copy x's sign onto y */
    __m512i sign = _mm512_and_si512(_mm512_castps_si512(x), _mm512_set1_epi32((int)0x80000000u));
    return _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(y), sign));
}

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
    const __m512 half = _mm512_set1_ps(0.5f), one = _mm512_set1_ps(1.0f),
                 isq2 = _mm512_set1_ps(0.70710678118654752f);
    for (size_t i = 0; i < n; i += 16) {
        __mmask16 m = tail_mask((int)(n - i < 16 ? n - i : 16));
        __m512 v = _mm512_maskz_loadu_ps(m, x + i);
        __m512 e = erf16(_mm512_mul_ps(v, isq2));
        _mm512_mask_storeu_ps(x + i, m, _mm512_mul_ps(_mm512_mul_ps(half, v), _mm512_add_ps(one, e)));
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

static const CpuOps ops_avx512 = {
    .isa = "avx512",
    .layernorm = layernorm_avx512,
    .gelu = gelu_avx512,
    .softmax = softmax_avx512,
    .add_bias = add_bias_avx512,
};

const CpuOps *cpu_ops_avx512_table(void) { return &ops_avx512; }
