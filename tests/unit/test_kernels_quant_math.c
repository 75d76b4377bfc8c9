/* test_kernels_quant_math.c: the GGUF block arithmetic the CUDA decoder kernels share with the
 * host (kernels/quant_math.h, __host__ __device__) against the plain-C reference kernels
 * (kernels/cpu/quant_ref.c), bit for bit, for every tensor type: fp16/bf16 conversions over all
 * halves and awkward floats, block dequantisation, activation quantisation (Q8_0, Q8_1, Q8_K), and
 * row dots rebuilt from the per-lane integer sums (the dp4a units the GPU threads compute) and
 * per-block scales. Random blocks include edge scales: zero, subnormal, the largest half,
 * negative, and all-zero / tied-maximum activation blocks. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "kernels/quant.h"
#include "kernels/decoder_math.h"
#include "kernels/quant_math.h"

static const int TYPES[] = {QT_F32, QT_F16, QT_BF16, QT_Q4_0, QT_Q4_1, QT_Q8_0, QT_Q4_K, QT_Q5_K, QT_Q6_K};
#define NTYPES ((int)(sizeof TYPES / sizeof TYPES[0]))

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static uint32_t rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng >> 16);
}
static float rndf(void) { return (float)(rnd() % 2000001) / 1000000.0f - 1.0f; }

/* A block scale: mostly ordinary, sometimes an edge (0, smallest subnormal, a subnormal, the
 * largest finite half, negative). */
static uint16_t edge_half(void)
{
    static const uint16_t edges[] = {0x0000, 0x0001, 0x03ff, 0x7bff, 0xfbff, 0x8001, 0x0400, 0x3c00};
    uint32_t r = rnd() % 16;
    if (r < 8) return edges[r];
    return quant_f32_to_fp16(rndf() * 0.05f);
}

static void random_row(int t, void *dst, int n)
{
    size_t nb = quant_row_bytes(t, n), bb = quant_block_bytes(t);
    uint8_t *p = dst;
    for (size_t i = 0; i < nb; i++) p[i] = (uint8_t)rnd();
    int be = quant_block_elems(t);
    for (int b = 0; b < n / be; b++) {
        uint8_t *blk = p + (size_t)b * bb;
        uint16_t h1 = edge_half(), h2 = edge_half();
        switch (t) {
        case QT_F32: { float v = rndf() * 4.0f; memcpy(blk, &v, 4); break; }
        case QT_F16: memcpy(blk, &h1, 2); break;
        case QT_BF16: { uint16_t h = quant_f32_to_bf16(rndf()); memcpy(blk, &h, 2); break; }
        case QT_Q4_0: case QT_Q8_0: memcpy(blk, &h1, 2); break;
        case QT_Q4_1: case QT_Q4_K: case QT_Q5_K: memcpy(blk, &h1, 2); memcpy(blk + 2, &h2, 2); break;
        case QT_Q6_K: memcpy(blk + 208, &h1, 2); break;
        }
    }
}

/* Activations with the cases that trip quantisers: a zero block, a tied maximum (+a and -a), a
 * single huge value, tiny (subnormal) values, and values on rounding ties. */
static void random_act(float *x, int n)
{
    for (int i = 0; i < n; i++) x[i] = rndf() * 3.0f;
    int kind = (int)(rnd() % 6);
    int b0 = (int)(rnd() % (uint32_t)(n / 32)) * 32;
    if (kind == 0) memset(x + b0, 0, 32 * sizeof *x);
    if (kind == 1) { x[b0 + 3] = 5.0f; x[b0 + 9] = -5.0f; }
    if (kind == 2) x[b0 + 7] = 3.0e4f;
    if (kind == 3) for (int j = 0; j < 32; j++) x[b0 + j] = rndf() * 1e-39f;
    if (kind == 4) for (int j = 0; j < 32; j++) x[b0 + j] = (float)((int)(rnd() % 255) - 127) / 2.0f;
}

static void fp16_and_bf16_conversions_are_the_references_bit_for_bit(void **state)
{
    (void)state;
    for (uint32_t h = 0; h < 0x10000; h++) {
        float a = qm_h2f((uint16_t)h), b = quant_fp16_to_f32((uint16_t)h);
        if (memcmp(&a, &b, 4)) fail_msg("h2f(0x%04x): %a vs reference %a", h, a, b);
        a = qm_bf2f((uint16_t)h), b = quant_bf16_to_f32((uint16_t)h);
        if (memcmp(&a, &b, 4)) fail_msg("bf2f(0x%04x): %a vs reference %a", h, a, b);
    }
    /* Every float exponent with random mantissas, plus the rounding boundaries. */
    for (int i = 0; i < 400000; i++) {
        uint32_t u = (rnd() << 16) ^ rnd();
        if (i % 4 == 0) u = (u & 0xffffe000u) | 0x1000u; /* exact ties in the fp16 rounding */
        float f;
        memcpy(&f, &u, 4);
        if (qm_f2h(f) != quant_f32_to_fp16(f)) fail_msg("f2h(%a = 0x%08x): 0x%04x vs 0x%04x", f, u, qm_f2h(f), quant_f32_to_fp16(f));
        if (qm_f2bf(f) != quant_f32_to_bf16(f)) fail_msg("f2bf(0x%08x): 0x%04x vs 0x%04x", u, qm_f2bf(f), quant_f32_to_bf16(f));
    }
    assert_int_equal(qm_f2h(65520.0f), 0x7C00);
    assert_int_equal(qm_f2h(5.9604645e-08f), 0x0001);
    assert_int_equal(qm_f2h(1.0f + 1.0f / 2048), 0x3C00);
}

static void dp4a_is_four_signed_byte_products(void **state)
{
    (void)state;
    assert_int_equal(qm_dp4a((int32_t)0x80ff7f01, (int32_t)0x80ff7f01, 0), 128 * 128 + 1 + 127 * 127 + 1);
    assert_int_equal(qm_dp4a(0x01010101, (int32_t)0xfffefdfc, 10), 10 - 1 - 2 - 3 - 4);
}

static void block_dequantisation_is_the_references_bit_for_bit(void **state)
{
    (void)state;
    enum { N = 1024 };
    static uint8_t w[N * 4];
    static float ref[N], got[N];
    for (int ti = 0; ti < NTYPES; ti++) {
        int t = TYPES[ti];
        for (int trial = 0; trial < 200; trial++) {
            random_row(t, w, N);
            quant_dequant_row(t, w, ref, N);
            for (int i = 0; i < N; i++) got[i] = -12345.0f;
            qm_dequant_row(t, w, got, N);
            for (int i = 0; i < N; i++)
                if (memcmp(&got[i], &ref[i], 4))
                    fail_msg("%s trial %d element %d: %a vs reference %a", quant_type_name(t), trial, i, got[i], ref[i]);
        }
    }
}

static void activation_quantisation_is_the_references_bit_for_bit(void **state)
{
    (void)state;
    enum { N = 1024 };
    static const QuantType ACTS[] = {QT_Q8_0, QT_Q8_1, QT_Q8_K, QT_BF16, QT_F32};
    static float x[N];
    static uint8_t ref[N * 4], got[N * 4];
    for (int ai = 0; ai < 5; ai++) {
        QuantType a = ACTS[ai];
        size_t bytes = a == QT_F32 ? N * 4 : quant_row_bytes(a, N);
        assert_true(bytes > 0);
        for (int trial = 0; trial < 500; trial++) {
            random_act(x, N);
            memset(ref, 0xA5, sizeof ref);
            memset(got, 0x5A, sizeof got);
            quant_quantize_act_ref(a, x, ref, N);
            qm_quantize_row(a, x, got, N);
            for (size_t i = 0; i < bytes; i++)
                if (ref[i] != got[i])
                    fail_msg("%s trial %d byte %zu (block %zu): 0x%02x vs reference 0x%02x", quant_type_name(a), trial, i,
                             i / quant_block_bytes(a), got[i], ref[i]);
        }
    }
}

static QuantDotFn ref_dot(int t)
{
    switch (t) {
    case QT_F32: return quant_dot_f32_ref;
    case QT_F16: return quant_dot_f16_ref;
    case QT_BF16: return quant_dot_bf16_ref;
    case QT_Q4_0: return quant_dot_q4_0_ref;
    case QT_Q4_1: return quant_dot_q4_1_ref;
    case QT_Q8_0: return quant_dot_q8_0_ref;
    case QT_Q4_K: return quant_dot_q4_k_ref;
    case QT_Q5_K: return quant_dot_q5_k_ref;
    case QT_Q6_K: return quant_dot_q6_k_ref;
    default: return NULL;
    }
}

/* The row dot rebuilt from qm_lane_* (the device's dp4a units) and the per-block scales in the
 * reference's order gives the reference's bits: the integer part and every float factor the
 * kernels use are the reference's. Sizes include F32/F16's 8- and 1-element tails. */
static void row_dots_from_lanes_are_the_references_bit_for_bit(void **state)
{
    (void)state;
    static const int SIZES[] = {256, 512, 1536, 2816};
    static uint8_t w[2816 * 4], act[2816 * 4];
    static float x[2816];
    for (int ti = 0; ti < NTYPES; ti++) {
        int t = TYPES[ti];
        QuantType at = quant_act_type(t);
        for (int si = 0; si < 4; si++) {
            int n = SIZES[si];
            for (int trial = 0; trial < 100; trial++) {
                random_row(t, w, n);
                random_act(x, n);
                quant_quantize_act_ref(at, x, act, n);
                float ref = ref_dot(t)(w, act, n), got = qm_dot_row(t, w, act, n);
                if (memcmp(&ref, &got, 4) && !(isnan(ref) && isnan(got)))
                    fail_msg("%s n=%d trial %d: %a vs reference %a", quant_type_name(t), n, trial, got, ref);
            }
        }
    }
    /* The F32/F16 tails (n not a multiple of 16). */
    static const int ODD[] = {8, 24, 37, 61};
    for (int k = 0; k < 4; k++)
        for (int trial = 0; trial < 300; trial++) {
            int t = TYPES[trial % 3], n = ODD[k];
            random_row(t, w, n);
            random_act(x, 64);
            quant_quantize_act_ref(quant_act_type(t), x, act, n);
            float ref = ref_dot(t)(w, act, n), got = qm_dot_row(t, w, act, n);
            if (memcmp(&ref, &got, 4)) fail_msg("%s n=%d trial %d: %a vs reference %a", quant_type_name(t), n, trial, got, ref);
        }
}

/* The decoder layer's shared scalars: llama.cpp's exp and the SwiGLU element against the
 * references, over the range softmax and SiLU see (and past the overflow/underflow cut-offs). */
static void vexp_and_swiglu_are_the_references_bit_for_bit(void **state)
{
    (void)state;
    for (int i = 0; i < 300000; i++) {
        float x = rndf() * (i % 3 == 0 ? 200.0f : 30.0f);
        float a = qm_vexpf(x), b = quant_vexpf_ref(x);
        if (memcmp(&a, &b, 4)) fail_msg("vexpf(%a): %a vs reference %a", x, a, b);
    }
    float g[64], u[64], ref[64];
    for (int trial = 0; trial < 2000; trial++) {
        for (int i = 0; i < 64; i++) g[i] = rndf() * 12.0f, u[i] = rndf() * 3.0f;
        quant_swiglu_row_ref(ref, g, u, 64);
        for (int i = 0; i < 64; i++) {
            float got = qm_swiglu(g[i], u[i]);
            if (memcmp(&got, &ref[i], 4)) fail_msg("swiglu(%a, %a): %a vs reference %a", g[i], u[i], got, ref[i]);
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(fp16_and_bf16_conversions_are_the_references_bit_for_bit),
        cmocka_unit_test(dp4a_is_four_signed_byte_products),
        cmocka_unit_test(block_dequantisation_is_the_references_bit_for_bit),
        cmocka_unit_test(activation_quantisation_is_the_references_bit_for_bit),
        cmocka_unit_test(row_dots_from_lanes_are_the_references_bit_for_bit),
        cmocka_unit_test(vexp_and_swiglu_are_the_references_bit_for_bit),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
