/* test_kernels_device_math.c: the scalar math the CUDA kernels share with the host
 * (kernels/device_math.h, __host__ __device__) against the plain-C references: GELU is bit for
 * bit the reference's, LayerNorm rows (with the residual folded in) and attention rows walked in
 * 32-key blocks with the online softmax agree with them, F32 -> BF16 rounds to nearest even. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cpu_ops.h"
#include "kernels/device_math.h"

static float frand(unsigned *s)
{
    *s = *s * 1664525u + 1013904223u;
    return (float)((*s >> 8) & 0xffff) / 32768.0f - 1.0f;
}

static void gelu_is_the_references_bit_for_bit(void **state)
{
    (void)state;
    unsigned seed = 1;
    for (int i = 0; i < 20000; i++) {
        float x = frand(&seed) * 8.0f, ref = x;
        cpu_ops_ref()->gelu(&ref, 1);
        float got = devm_gelu(x);
        if (memcmp(&got, &ref, 4) != 0) fail_msg("gelu(%.9g): %.9g, reference %.9g", x, got, ref);
    }
}

static void layernorm_row_with_residual_matches_the_reference(void **state)
{
    (void)state;
    unsigned seed = 7;
    const int cols = 384;
    float x[384], res[384], sum[384], w[384], b[384], got[384], ref[384];
    for (int trial = 0; trial < 50; trial++) {
        for (int c = 0; c < cols; c++) {
            x[c] = frand(&seed) * 4.0f + 0.5f;
            res[c] = frand(&seed) * 2.0f;
            sum[c] = x[c] + res[c];
            w[c] = 1.0f + frand(&seed) * 0.1f;
            b[c] = frand(&seed) * 0.1f;
        }
        cpu_ops_ref()->layernorm(ref, sum, w, b, 1, cols, 1e-12f);
        devm_layernorm_row(got, x, res, w, b, cols, 1e-12f);
        for (int c = 0; c < cols; c++)
            if (fabsf(got[c] - ref[c]) > 2e-5f + 1e-5f * fabsf(ref[c]))
                fail_msg("trial %d col %d: %.9g vs reference %.9g", trial, c, got[c], ref[c]);
    }
}

static void attention_rows_in_blocks_match_the_reference(void **state)
{
    (void)state;
    unsigned seed = 3;
    static const int ds[] = {32, 64};
    static const int ns[] = {1, 2, 31, 32, 33, 100, 256};
    for (int di = 0; di < 2; di++)
        for (int ni = 0; ni < 7; ni++) {
            int d = ds[di], n = ns[ni], ld = 3 * d;
            float *qkv = malloc(sizeof(float) * (size_t)n * ld), *ref = malloc(sizeof(float) * (size_t)n * d);
            float *scratch = aligned_alloc(64, ((CPU_ATTN_SCRATCH(n, d) * 4 + 63) / 64) * 64);
            for (int i = 0; i < n * ld; i++) qkv[i] = frand(&seed) * 3.0f;
            float scale = 1.0f / sqrtf((float)d);
            cpu_ops_ref()->attention(ref, d, qkv, qkv + d, qkv + 2 * d, ld, n, d, scale, scratch);
            for (int t = 0; t < n; t++) {
                float got[64];
                devm_attention_row(got, qkv + (size_t)t * ld, qkv + d, qkv + 2 * d, ld, n, d, scale, 32);
                for (int e = 0; e < d; e++)
                    if (fabsf(got[e] - ref[(size_t)t * d + e]) > 1e-5f + 1e-4f * fabsf(ref[(size_t)t * d + e]))
                        fail_msg("d=%d n=%d row %d dim %d: %.9g vs reference %.9g", d, n, t, e, got[e],
                                 ref[(size_t)t * d + e]);
            }
            free(qkv);
            free(ref);
            free(scratch);
        }
}

static void softmax_merge_of_two_blocks_is_one_softmax(void **state)
{
    (void)state;
    /* scores {1, 2} then {5}: sum of exp(s - 5) */
    float m = 2.0f, l = expf(1.0f - 2.0f) + 1.0f;
    float keep = devm_softmax_merge(&m, &l, 5.0f, 1.0f);
    assert_float_equal(m, 5.0f, 0.0f);
    assert_float_equal(keep, expf(-3.0f), 1e-7f);
    assert_float_equal(l, expf(-4.0f) + expf(-3.0f) + 1.0f, 1e-6f);
    /* merging into the empty state (m = -inf) takes the block as it is */
    m = -INFINITY;
    l = 0.0f;
    devm_softmax_merge(&m, &l, 3.0f, 2.5f);
    assert_float_equal(m, 3.0f, 0.0f);
    assert_float_equal(l, 2.5f, 0.0f);
}

static void bf16_rounds_to_nearest_even(void **state)
{
    (void)state;
    assert_int_equal(devm_f32_to_bf16(1.0f), 0x3f80);
    /* 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties to even (1) */
    assert_int_equal(devm_f32_to_bf16(1.0f + 1.0f / 256), 0x3f80);
    /* 1 + 3 * 2^-8 is halfway between 1 + 2^-7 and 1 + 2^-6: ties to even (1 + 2^-6) */
    assert_int_equal(devm_f32_to_bf16(1.0f + 3.0f / 256), 0x3f82);
    assert_int_equal(devm_f32_to_bf16(-2.0f), 0xc000);
    unsigned seed = 11;
    for (int i = 0; i < 10000; i++) {
        float x = frand(&seed) * 1000.0f;
        float back = cpu_bf16_to_f32(devm_f32_to_bf16(x));
        if (fabsf(back - x) > fabsf(x) / 256.0f) fail_msg("%.9g -> %.9g", x, back);
    }
    assert_true(isnan(cpu_bf16_to_f32(devm_f32_to_bf16(NAN))));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(gelu_is_the_references_bit_for_bit),
        cmocka_unit_test(layernorm_row_with_residual_matches_the_reference),
        cmocka_unit_test(attention_rows_in_blocks_match_the_reference),
        cmocka_unit_test(softmax_merge_of_two_blocks_is_one_softmax),
        cmocka_unit_test(bf16_rounds_to_nearest_even),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
