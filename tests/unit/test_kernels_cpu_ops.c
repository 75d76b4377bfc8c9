/* test_kernels_cpu_ops.c: every SIMD variant of the encoder's CPU kernels agrees with the
 * plain-C reference (atol + |ref| * rtol), on odd sizes that exercise the vector tails. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cpu_ops.h"

static uint32_t rng = 12345;
static float frand(float scale)
{
    rng = rng * 1664525u + 1013904223u;
    return ((float)(rng >> 8) / (float)(1u << 24) * 2.0f - 1.0f) * scale;
}

static void fill(float *x, size_t n, float scale)
{
    for (size_t i = 0; i < n; i++) x[i] = frand(scale);
}

static int close_enough(const char *what, const char *isa, const float *ref, const float *got,
                        size_t n, float atol, float rtol)
{
    int bad = 0;
    for (size_t i = 0; i < n; i++) {
        if (!(fabsf(ref[i] - got[i]) <= atol + fabsf(ref[i]) * rtol)) {
            if (bad < 5) fprintf(stderr, "%s/%s: [%zu] ref %.9g got %.9g\n", what, isa, i, ref[i], got[i]);
            bad++;
        }
    }
    return bad == 0;
}

/* Exit status when no SIMD variant was compared with the reference: ctest reports the test as
 * skipped (SKIP_RETURN_CODE in tests/CMakeLists.txt) instead of passing with nothing checked. */
#define EXIT_NOTHING_COMPARED 77

static const CpuOps *variants[3];
static int nvariants;

static int setup(void **state)
{
    (void)state;
    /* WEAVER_CPU_ISA caps the variants as it caps cpu_ops(): avx512 (or unset) = all the CPU
     * runs, avx2 = AVX2 only, anything else = none (so the skip path can be forced). */
    const char *force = getenv("WEAVER_CPU_ISA");
    int cap = !force || strcmp(force, "avx512") == 0 ? 2 : strcmp(force, "avx2") == 0 ? 1 : 0;
    nvariants = 0;
    if (cap >= 1 && cpu_ops_avx2()) variants[nvariants++] = cpu_ops_avx2();
    if (cap >= 2 && cpu_ops_avx512()) variants[nvariants++] = cpu_ops_avx512();
    if (nvariants == 0)
        fprintf(stderr, "note: no SIMD variant to compare (this CPU has none, or WEAVER_CPU_ISA=%s)\n", force ? force : "unset");
    return 0;
}

static const int sizes[] = {1, 7, 8, 15, 16, 17, 33, 384, 385, 1536};

static void layernorm_variants_match_reference(void **state)
{
    (void)state;
    if (nvariants == 0) skip();
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        int rows = 3, cols = sizes[s];
        size_t n = (size_t)rows * cols;
        float *x = malloc(n * 4), *w = malloc(cols * 4), *b = malloc(cols * 4), *ref = malloc(n * 4), *got = malloc(n * 4);
        fill(x, n, 4.0f);
        for (size_t i = 0; i < n; i++) x[i] += 3.0f; /* a large mean tests the two-pass variance */
        fill(w, cols, 1.0f);
        fill(b, cols, 0.5f);
        cpu_ops_ref()->layernorm(ref, x, w, b, rows, cols, 1e-12f);
        for (int v = 0; v < nvariants; v++) {
            variants[v]->layernorm(got, x, w, b, rows, cols, 1e-12f);
            assert_true(close_enough("layernorm", variants[v]->isa, ref, got, n, 2e-5f, 2e-5f));
            memcpy(got, x, n * 4); /* in place works too */
            variants[v]->layernorm(got, got, w, b, rows, cols, 1e-12f);
            assert_true(close_enough("layernorm-inplace", variants[v]->isa, ref, got, n, 2e-5f, 2e-5f));
        }
        free(x); free(w); free(b); free(ref); free(got);
    }
}

static void gelu_variants_match_reference_over_the_whole_range(void **state)
{
    (void)state;
    if (nvariants == 0) skip();
    size_t n = 20001;
    float *ref = malloc(n * 4), *got = malloc(n * 4);
    for (size_t i = 0; i < n; i++) ref[i] = -10.0f + 20.0f * (float)i / (float)(n - 1);
    ref[0] = -100.0f; ref[1] = 100.0f; ref[2] = 0.0f; ref[3] = -0.0f; ref[4] = 1e-30f;
    float *x = malloc(n * 4);
    memcpy(x, ref, n * 4);
    cpu_ops_ref()->gelu(ref, n);
    for (int v = 0; v < nvariants; v++) {
        for (size_t len = 1; len <= 40; len += 13) { /* tails */
            memcpy(got, x, n * 4);
            variants[v]->gelu(got, len);
            assert_true(close_enough("gelu-tail", variants[v]->isa, ref, got, len, 1e-6f, 1e-6f));
        }
        memcpy(got, x, n * 4);
        variants[v]->gelu(got, n);
        assert_true(close_enough("gelu", variants[v]->isa, ref, got, n, 1e-6f, 1e-6f));
    }
    free(ref); free(got); free(x);
}

static void softmax_variants_match_reference_and_sum_to_one(void **state)
{
    (void)state;
    if (nvariants == 0) skip();
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        int rows = 4, cols = sizes[s], ld = cols + 3;
        size_t n = (size_t)rows * ld;
        float *x = malloc(n * 4), *ref = malloc(n * 4), *got = malloc(n * 4);
        fill(x, n, 30.0f);
        memcpy(ref, x, n * 4);
        cpu_ops_ref()->softmax(ref, rows, cols, ld);
        for (int r = 0; r < rows; r++) {
            double sum = 0;
            for (int c = 0; c < cols; c++) sum += ref[(size_t)r * ld + c];
            assert_true(fabs(sum - 1.0) < 1e-5);
        }
        for (int v = 0; v < nvariants; v++) {
            memcpy(got, x, n * 4);
            variants[v]->softmax(got, rows, cols, ld);
            assert_true(close_enough("softmax", variants[v]->isa, ref, got, n, 1e-7f, 1e-5f));
        }
        free(x); free(ref); free(got);
    }
}

static void add_bias_variants_match_reference(void **state)
{
    (void)state;
    if (nvariants == 0) skip();
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        int rows = 3, cols = sizes[s];
        size_t n = (size_t)rows * cols;
        float *a = malloc(n * 4), *res = malloc(n * 4), *b = malloc(cols * 4), *ref = malloc(n * 4), *got = malloc(n * 4);
        fill(a, n, 2.0f); fill(res, n, 2.0f); fill(b, cols, 2.0f);
        for (int withres = 0; withres < 2; withres++) {
            cpu_ops_ref()->add_bias(ref, a, b, withres ? res : NULL, rows, cols);
            for (int v = 0; v < nvariants; v++) {
                variants[v]->add_bias(got, a, b, withres ? res : NULL, rows, cols);
                assert_true(close_enough("add_bias", variants[v]->isa, ref, got, n, 0.0f, 0.0f));
            }
        }
        free(a); free(res); free(b); free(ref); free(got);
    }
}

/* One head of a packed qkv buffer: rows of 3 * d * heads floats, the head at column offsets. */
static void attention_variants_match_reference_for_every_length(void **state)
{
    (void)state;
    if (nvariants == 0) skip();
    static const int lens[] = {1, 2, 7, 8, 9, 15, 16, 17, 20, 31, 33, 40, 64, 100, 255, 256};
    static const int dims[] = {32, 64, 24};
    for (size_t di = 0; di < sizeof dims / sizeof dims[0]; di++) {
        int d = dims[di], heads = 3, ld = 3 * d * heads, ldc = d * heads + 1;
        for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++) {
            int n = lens[li];
            float *qkv = malloc((size_t)n * ld * 4), *ref = malloc((size_t)n * ldc * 4), *got = malloc((size_t)n * ldc * 4);
            float *scratch = aligned_alloc(64, (CPU_ATTN_SCRATCH(n, d) * 4 + 63) & ~(size_t)63);
            fill(qkv, (size_t)n * ld, 2.0f);
            int h = 1; /* a head in the middle: q at h*d, k at heads*d + h*d, v at 2*heads*d + h*d */
            const float *q = qkv + h * d, *k = qkv + heads * d + h * d, *v = qkv + 2 * heads * d + h * d;
            float scale = 1.0f / sqrtf((float)d);
            for (size_t i = 0; i < (size_t)n * ldc; i++) ref[i] = got[i] = 99.0f; /* guards */
            cpu_ops_ref()->attention(ref, ldc, q, k, v, ld, n, d, scale, scratch);
            for (int r = 0; r < n; r++) assert_true(ref[(size_t)r * ldc + d] == 99.0f);
            for (int var = 0; var < nvariants; var++) {
                for (size_t i = 0; i < (size_t)n * ldc; i++) got[i] = 99.0f;
                variants[var]->attention(got, ldc, q, k, v, ld, n, d, scale, scratch);
                char what[64];
                snprintf(what, sizeof what, "attention n=%d d=%d", n, d);
                assert_true(close_enough(what, variants[var]->isa, ref, got, (size_t)n * ldc, 1e-5f, 1e-4f));
            }
            free(qkv); free(ref); free(got); free(scratch);
        }
    }
}

/* Integer q and k with a power-of-two scale make every score exact, so the variants see the same
 * scores as the reference even hundreds apart: most probabilities underflow (exp below -87), and a
 * negative scale makes the largest dot product the smallest score. */
static void attention_variants_match_reference_when_the_softmax_is_peaked(void **state)
{
    (void)state;
    if (nvariants == 0) skip();
    static const int lens[] = {1, 15, 16, 17, 100, 256};
    static const int dims[] = {32, 64};
    static const float scales[] = {0.5f, -0.5f};
    for (size_t di = 0; di < sizeof dims / sizeof dims[0]; di++) {
        int d = dims[di], heads = 3, ld = 3 * d * heads, ldc = d * heads + 1;
        for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++) {
            int n = lens[li];
            float *qkv = malloc((size_t)n * ld * 4), *ref = malloc((size_t)n * ldc * 4), *got = malloc((size_t)n * ldc * 4);
            float *scratch = aligned_alloc(64, (CPU_ATTN_SCRATCH(n, d) * 4 + 63) & ~(size_t)63);
            fill(qkv, (size_t)n * ld, 4.0f);
            for (size_t i = 0; i < (size_t)n * ld; i++) qkv[i] = rintf(qkv[i]);
            const float *q = qkv + d, *k = qkv + heads * d + d, *v = qkv + 2 * heads * d + d;
            for (size_t si = 0; si < sizeof scales / sizeof scales[0]; si++) {
                cpu_ops_ref()->attention(ref, ldc, q, k, v, ld, n, d, scales[si], scratch);
                for (int var = 0; var < nvariants; var++) {
                    variants[var]->attention(got, ldc, q, k, v, ld, n, d, scales[si], scratch);
                    char what[64];
                    snprintf(what, sizeof what, "peaked attention n=%d d=%d scale=%g", n, d, scales[si]);
                    for (int r = 0; r < n; r++)
                        assert_true(close_enough(what, variants[var]->isa, ref + (size_t)r * ldc, got + (size_t)r * ldc,
                                                 (size_t)d, 1e-5f, 1e-4f));
                }
            }
            free(qkv); free(ref); free(got); free(scratch);
        }
    }
}

static void half_conversions_round_trip_and_round_to_nearest_even(void **state)
{
    (void)state;
    for (uint32_t h = 0; h < 0x10000u; h++) {
        if ((h & 0x7c00u) == 0x7c00u && (h & 0x3ffu)) continue; /* NaNs keep NaN-ness only */
        float f = cpu_f16_to_f32((unsigned short)h);
        assert_int_equal(cpu_f32_to_f16(f), h);
    }
    assert_float_equal(cpu_f16_to_f32(0x3c00), 1.0f, 0.0f);
    assert_int_equal(cpu_f32_to_f16(1.0f + 1.0f / 2048.0f), 0x3c00);  /* tie -> even */
    assert_int_equal(cpu_f32_to_f16(1.0f + 3.0f / 2048.0f), 0x3c02);  /* tie -> even (up) */
    assert_int_equal(cpu_f32_to_f16(1e6f), 0x7c00);                    /* overflow -> inf */
    assert_float_equal(cpu_bf16_to_f32(0x3f80), 1.0f, 0.0f);
}

static void dispatcher_picks_a_variant_this_cpu_runs(void **state)
{
    (void)state;
    const CpuOps *ops = cpu_ops();
    assert_non_null(ops);
    float x[3] = {1, 2, 3};
    ops->softmax(x, 1, 3, 3);
    assert_true(x[2] > x[1] && x[1] > x[0]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(layernorm_variants_match_reference),
        cmocka_unit_test(gelu_variants_match_reference_over_the_whole_range),
        cmocka_unit_test(softmax_variants_match_reference_and_sum_to_one),
        cmocka_unit_test(add_bias_variants_match_reference),
        cmocka_unit_test(attention_variants_match_reference_for_every_length),
        cmocka_unit_test(attention_variants_match_reference_when_the_softmax_is_peaked),
        cmocka_unit_test(half_conversions_round_trip_and_round_to_nearest_even),
        cmocka_unit_test(dispatcher_picks_a_variant_this_cpu_runs),
    };
    int failed = cmocka_run_group_tests(tests, setup, NULL);
    if (failed == 0 && nvariants == 0) {
        fprintf(stderr, "skipped: no SIMD variant to compare with the reference\n");
        return EXIT_NOTHING_COMPARED;
    }
    return failed;
}
