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
            int be = qm_block_elems(t), bb = qm_block_bytes(t);
            assert_int_equal(be, quant_block_elems(t));
            assert_int_equal(bb, (int)quant_block_bytes(t));
            for (int i = 0; i < N; i++) {
                float e = qm_dequant_elem(t, w + (size_t)(i / be) * bb, i % be);
                if (memcmp(&e, &ref[i], 4))
                    fail_msg("%s trial %d element %d alone: %a vs reference %a", quant_type_name(t), trial, i, e, ref[i]);
            }
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

/* The attention pieces the device runs per key row / per output lane, composed as the kernel
 * composes them, against the CPU model's reference kernels: scores, softmax exp sums, P.V. */
static const uint16_t *vrow_blk[64];
static size_t vrow_ld;
#define VROW_OF(p) (vrow_blk[(p) / 16] + (size_t)((p) % 16) * vrow_ld)
static uint16_t p16[300];
#define PROB_OF(p) qm_h2f(p16[p])

static void attention_pieces_are_the_references_bit_for_bit(void **state)
{
    (void)state;
    enum { HD = 64, MAXN = 300 };
    static uint16_t q[HD], kv[MAXN * HD * 2];
    static float s[MAXN], y[MAXN], yref[MAXN], acc[64 * HD];
    for (int trial = 0; trial < 60; trial++) {
        int n = 1 + (int)(rnd() % MAXN), gemv = trial % 2, hd = trial % 3 == 2 ? 40 : HD;
        vrow_ld = (size_t)hd * 2; /* K and V rows interleaved like a kv_dim of 2 heads */
        for (int i = 0; i < hd; i++) q[i] = quant_f32_to_fp16(rndf());
        for (int i = 0; i < n * hd * 2; i++) kv[i] = quant_f32_to_fp16(rndf() * 2.0f);
        const uint16_t *kblk[64];
        for (int b = 0; b * 16 < n; b++) kblk[b] = kv + (size_t)b * 16 * vrow_ld, vrow_blk[b] = kblk[b] + hd;
        float sref[MAXN];
        quant_attn_scores_ref(sref, q, kblk, vrow_ld, n, hd, gemv, 0.125f);
        float mx = -INFINITY;
        for (int p = 0; p < n; p++) {
            s[p] = qm_dot_f16_order(q, kblk[p / 16] + (size_t)(p % 16) * vrow_ld, hd, gemv) * 0.125f;
            if (memcmp(&s[p], &sref[p], 4)) fail_msg("score %d (n=%d gemv=%d hd=%d): %a vs %a", p, n, gemv, hd, s[p], sref[p]);
            mx = fmaxf(mx, s[p]);
        }
        double sum = 0.0, ref = quant_softmax_exp_row_ref(yref, s, mx, n);
        for (int i0 = 0; i0 < n; i0 += 16) sum += (double)qm_softmax_chunk(y, s, mx, i0, n);
        if (sum != ref) fail_msg("softmax sum (n=%d): %a vs %a", n, sum, ref);
        if (memcmp(y, yref, (size_t)n * 4)) fail_msg("softmax exps differ (n=%d)", n);
        for (int p = 0; p < n; p++) p16[p] = quant_f32_to_fp16(y[p] * (float)(1.0 / sum));
        float out[HD], outref[HD];
        quant_attn_pv_ref(outref, acc, p16, vrow_blk, vrow_ld, n, hd, gemv);
        for (int d = 0; d < hd; d++) {
            float lanes[16];
            for (int l = 0; l < 16; l++) QM_PV_LANE(lanes[l], l, d, n, gemv, PROB_OF, VROW_OF);
            out[d] = qm_reduce16(lanes);
            if (memcmp(&out[d], &outref[d], 4)) fail_msg("P.V dim %d (n=%d gemv=%d): %a vs %a", d, n, gemv, out[d], outref[d]);
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
        cmocka_unit_test(attention_pieces_are_the_references_bit_for_bit),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
