/* test_kernels_quant.c: GGUF tensor-type kernels. Dequantisation agrees with the `gguf`
 * Python package (fixture), reference dots agree with dot(dequant(w), dequant(act)), and every
 * SIMD kernel (dots, activation quantiser, multi-token tiles, the llama.cpp-order attention and
 * SwiGLU kernels) gives the same bits as its plain-C reference on random data: the decoder's
 * agreement with llama.cpp is bit-for-bit, so "close" would not be enough. */
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

/* Exit status when no SIMD kernel was compared with its reference (no AVX2 and no AVX-512 tile
 * kernel on this CPU, or WEAVER_QUANT_ISA=ref): ctest reports the test as skipped
 * (SKIP_RETURN_CODE in tests/CMakeLists.txt), although the reference-only cases ran and passed. */
#define EXIT_NOTHING_COMPARED 77

static const int TYPES[] = {QT_F32, QT_F16, QT_BF16, QT_Q4_0, QT_Q4_1, QT_Q8_0, QT_Q4_K, QT_Q5_K, QT_Q6_K};
#define NTYPES ((int)(sizeof TYPES / sizeof TYPES[0]))

static uint64_t rng = 88172645463325252ull;
static uint32_t rnd(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng >> 16);
}
static float rndf(void) { return (float)(rnd() % 2000001) / 1000000.0f - 1.0f; }

/* Random but valid weight row of type t: random bits, small finite scales. */
static void random_row(int t, void *dst, int n) {
    size_t nb = quant_row_bytes(t, n);
    uint8_t *p = dst;
    for (size_t i = 0; i < nb; i++) p[i] = (uint8_t)rnd();
    int be = quant_block_elems(t);
    size_t bb = quant_block_bytes(t);
    for (int b = 0; b < n / be; b++) {
        uint8_t *blk = p + (size_t)b * bb;
        uint16_t h1 = quant_f32_to_fp16(rndf() * 0.05f), h2 = quant_f32_to_fp16(fabsf(rndf()) * 0.05f);
        switch (t) {
        case QT_F32: { float v = rndf(); memcpy(blk, &v, 4); break; }
        case QT_F16: memcpy(blk, &h1, 2); break;
        case QT_BF16: { float v = rndf(); uint32_t u; memcpy(&u, &v, 4); uint16_t h = (uint16_t)(u >> 16); memcpy(blk, &h, 2); break; }
        case QT_Q4_0: case QT_Q8_0: memcpy(blk, &h1, 2); break;
        case QT_Q4_1: case QT_Q4_K: case QT_Q5_K: memcpy(blk, &h1, 2); memcpy(blk + 2, &h2, 2); break;
        case QT_Q6_K: memcpy(blk + 208, &h1, 2); break;
        }
    }
}

static void fp16_conversion_rounds_to_nearest_even(void **state) {
    (void)state;
    assert_int_equal(quant_f32_to_fp16(1.0f), 0x3C00);
    assert_int_equal(quant_f32_to_fp16(-2.0f), 0xC000);
    assert_int_equal(quant_f32_to_fp16(65504.0f), 0x7BFF);
    assert_int_equal(quant_f32_to_fp16(65520.0f), 0x7C00);
    assert_int_equal(quant_f32_to_fp16(1.0f + 1.0f / 2048), 0x3C00);          /* tie -> even */
    assert_int_equal(quant_f32_to_fp16(1.0f + 3.0f / 2048), 0x3C02);          /* tie -> even (up) */
    assert_int_equal(quant_f32_to_fp16(5.9604645e-08f), 0x0001);              /* smallest subnormal */
    for (uint32_t h = 0; h < 0x7C00; h++) assert_int_equal(quant_f32_to_fp16(quant_fp16_to_f32((uint16_t)h)), h);
}

static void dequantisation_matches_gguf_python(void **state) {
    (void)state;
    const char *src = getenv("WEAVER_SOURCE_DIR");
    char path[1024];
    snprintf(path, sizeof path, "%s/tests/fixtures/decode/quant_dequant.bin", src ? src : ".");
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    int seen = 0;
    for (;;) {
        uint32_t hdr[3];
        assert_int_equal(fread(hdr, 4, 1, f), 1);
        if (hdr[0] == 0xFFFFFFFFu) break;
        assert_int_equal(fread(hdr + 1, 4, 2, f), 2);
        uint8_t *raw = malloc(hdr[2]);
        float *want = malloc(hdr[1] * sizeof(float)), *got = malloc(hdr[1] * sizeof(float));
        assert_int_equal(fread(raw, 1, hdr[2], f), hdr[2]);
        assert_int_equal(fread(want, 4, hdr[1], f), hdr[1]);
        assert_int_equal(quant_row_bytes((int)hdr[0], hdr[1]), hdr[2]);
        quant_dequant_row((int)hdr[0], raw, got, hdr[1]);
        for (uint32_t i = 0; i < hdr[1]; i++)
            if (fabsf(got[i] - want[i]) > 1e-6f + 1e-6f * fabsf(want[i])) {
                fail_msg("%s element %u: got %g want %g", quant_type_name((int)hdr[0]), i, got[i], want[i]);
            }
        free(raw); free(want); free(got);
        seen++;
    }
    fclose(f);
    assert_int_equal(seen, 8);
}

/* The dot of the quantised pair equals dot(dequant(w), dequant(act)) up to float rounding. */
static void reference_dot_is_dot_of_dequantised_values(void **state) {
    (void)state;
    const int n = 1024;
    float *x = malloc(n * sizeof *x), *wf = malloc(n * sizeof *wf), *af = malloc(n * sizeof *af);
    uint8_t *w = malloc(quant_row_bytes(QT_F32, n)), *act = malloc(quant_row_bytes(QT_F32, n) + 64);
    for (int ti = 0; ti < NTYPES; ti++) {
        int t = TYPES[ti];
        for (int rep = 0; rep < 20; rep++) {
            random_row(t, w, n);
            for (int i = 0; i < n; i++) x[i] = rndf() * 3.0f;
            QuantType at = quant_act_type(t);
            quant_quantize_act(at, x, act, n);
            quant_dequant_row(t, w, wf, n);
            double want = 0, mag = 0;
            if (at == QT_BF16) {
                const uint16_t *b = (const uint16_t *)act;
                for (int i = 0; i < n; i++) { double a = quant_bf16_to_f32(b[i]); want += wf[i] * a; mag += fabs(wf[i] * a); }
            } else if (at == QT_F32) {
                for (int i = 0; i < n; i++) { want += (double)wf[i] * x[i]; mag += fabs((double)wf[i] * x[i]); }
            } else if (at == QT_Q8_K) {
                const BlockQ8_K *b = (const BlockQ8_K *)act;
                for (int i = 0; i < n; i++) { double a = b[i / 256].d * b[i / 256].qs[i % 256]; want += wf[i] * a; mag += fabs(wf[i] * a); }
            } else {
                for (int i = 0; i < n; i++) {
                    double a;
                    if (at == QT_Q8_0) { const BlockQ8_0 *b = (const BlockQ8_0 *)act; a = quant_fp16_to_f32(b[i / 32].d) * b[i / 32].qs[i % 32]; }
                    else { const BlockQ8_1 *b = (const BlockQ8_1 *)act; a = quant_fp16_to_f32(b[i / 32].d) * b[i / 32].qs[i % 32]; }
                    want += wf[i] * a;
                    mag += fabs(wf[i] * a);
                }
            }
            float got = quant_dot_fn(t, QUANT_ISA_REF)(w, act, n);
            /* Q4_1's min term uses s = fp16(d * sum(q)), rounded once more: allow 1e-3 relative. */
            double tol = (t == QT_Q4_1 ? 1e-3 : 1e-5) * mag + 1e-6;
            if (fabs(got - want) > tol) fail_msg("%s: ref dot %g, dequantised dot %g", quant_type_name(t), got, want);
        }
    }
    free(x); free(wf); free(af); free(w); free(act);
}

static void simd_dots_match_reference(void **state) {
    (void)state;
    if (quant_best_isa() != QUANT_ISA_AVX2) skip();
    const int n = 2048;
    float *x = malloc(n * sizeof *x);
    uint8_t *w = malloc(quant_row_bytes(QT_F32, n)), *act = malloc(quant_row_bytes(QT_F32, n) + 64);
    for (int ti = 0; ti < NTYPES; ti++) {
        int t = TYPES[ti];
        for (int rep = 0; rep < 50; rep++) {
            random_row(t, w, n);
            for (int i = 0; i < n; i++) x[i] = rndf() * 3.0f;
            quant_quantize_act(quant_act_type(t), x, act, n);
            float r = quant_dot_fn(t, QUANT_ISA_REF)(w, act, n);
            float s = quant_dot_fn(t, QUANT_ISA_AVX2)(w, act, n);
            if (memcmp(&r, &s, sizeof r) != 0) fail_msg("%s: ref %.9g avx2 %.9g (not bit-identical)", quant_type_name(t), r, s);
        }
    }
    uint16_t a16[300], b16[300];
    float y1[300], y2[300];
    for (int i = 0; i < 300; i++) {
        a16[i] = quant_f32_to_fp16(rndf());
        b16[i] = quant_f32_to_fp16(rndf());
        y1[i] = y2[i] = rndf();
    }
    float ref = 0;
    for (int i = 0; i < 300; i++) ref += quant_fp16_to_f32(a16[i]) * quant_fp16_to_f32(b16[i]);
    assert_true(fabsf(ref - quant_dot_f16f16_avx2(a16, b16, 300)) < 1e-4f);
    quant_axpy_f16_avx2(y1, 0.5f, a16, 300);
    for (int i = 0; i < 300; i++) y2[i] += 0.5f * quant_fp16_to_f32(a16[i]);
    for (int i = 0; i < 300; i++) assert_true(fabsf(y1[i] - y2[i]) < 1e-6f);
    uint16_t c1[300], c2[300];
    float src[300];
    for (int i = 0; i < 300; i++) src[i] = rndf() * 1000.0f;
    quant_f32_to_fp16_row_avx2(c1, src, 300);
    for (int i = 0; i < 300; i++) c2[i] = quant_f32_to_fp16(src[i]);
    assert_memory_equal(c1, c2, sizeof c1);
    free(x); free(w); free(act);
}

static void same_bits(const float *a, const float *b, int n, const char *what) {
    for (int i = 0; i < n; i++)
        if (memcmp(&a[i], &b[i], sizeof *a) != 0) fail_msg("%s[%d]: ref %.9g simd %.9g", what, i, a[i], b[i]);
}

static void activation_quantiser_simd_matches_reference_bitwise(void **state) {
    (void)state;
    if (quant_best_isa() != QUANT_ISA_AVX2) skip();
    const int n = 1536;
    float *x = malloc(n * sizeof *x);
    uint8_t *a = malloc(quant_row_bytes(QT_Q8_1, n)), *b = malloc(quant_row_bytes(QT_Q8_1, n));
    for (int rep = 0; rep < 200; rep++) {
        float sc = rep % 3 == 0 ? 1e-3f : rep % 3 == 1 ? 1.0f : 300.0f;
        for (int i = 0; i < n; i++) x[i] = rndf() * sc;
        if (rep % 7 == 0) memset(x, 0, 32 * sizeof *x); /* an all-zero block */
        for (int k = 0; k < 2; k++) {
            QuantType at = k ? QT_Q8_1 : QT_Q8_0;
            quant_quantize_act_ref(at, x, a, n);
            quant_quantize_act_avx2(at, x, b, n);
            assert_memory_equal(a, b, quant_row_bytes(at, n));
        }
    }
    free(x); free(a); free(b);
}

/* The llama.cpp-order kernels: exp, softmax row, SwiGLU, fp16 dots (both orders), attention
 * scores and P.V, all bit-identical between reference and AVX2. */
static void llama_order_kernels_simd_match_reference_bitwise(void **state) {
    (void)state;
    if (quant_best_isa() != QUANT_ISA_AVX2) skip();
    enum { N = 300, HD = 64 };
    float x[N], y1[N], y2[N], g[N], u[N];
    for (int rep = 0; rep < 50; rep++) {
        for (int i = 0; i < N; i++) {
            x[i] = rndf() * (rep % 2 ? 30.0f : 200.0f); /* includes exp underflow (n < -126) */
            g[i] = rndf() * (rep % 2 ? 8.0f : 120.0f);
            u[i] = rndf();
        }
        float mx = -INFINITY;
        for (int i = 0; i < N; i++) mx = x[i] > mx ? x[i] : mx;
        for (int n = 1; n <= N; n += 37) {
            double s1 = quant_softmax_exp_row_ref(y1, x, mx, n), s2 = quant_softmax_exp_row_avx2(y2, x, mx, n);
            same_bits(y1, y2, n, "softmax exp");
            assert_memory_equal(&s1, &s2, sizeof s1);
            quant_swiglu_row_ref(y1, g, u, n);
            quant_swiglu_row_avx2(y2, g, u, n);
            same_bits(y1, y2, n, "swiglu");
        }
    }
    uint16_t q[128], kv[16 * 20 * HD], p16[320];
    for (int i = 0; i < 128; i++) q[i] = quant_f32_to_fp16(rndf() * 4.0f);
    for (int i = 0; i < 16 * 20 * HD; i++) kv[i] = quant_f32_to_fp16(rndf() * 4.0f);
    for (int i = 0; i < 320; i++) p16[i] = quant_f32_to_fp16(fabsf(rndf()) / 40.0f);
    for (int gemv = 0; gemv < 2; gemv++) {
        for (int hd = 16; hd <= 128; hd += 16) {
            float a = quant_dot_f16_order_ref(q, kv, hd, gemv), b = quant_dot_f16_order_avx2(q, kv, hd, gemv);
            same_bits(&a, &b, 1, "dot_f16_order");
        }
        const uint16_t *blk[20];
        for (int b = 0; b < 20; b++) blk[b] = kv + (size_t)(19 - b) * 16 * HD; /* pages out of order */
        float acc[64 * HD], o1[HD], o2[HD], sc1[320], sc2[320];
        for (int n = 1; n <= 320; n += 29) {
            quant_attn_pv_ref(o1, acc, p16, blk, HD, n, HD, gemv);
            quant_attn_pv_avx2(o2, acc, p16, blk, HD, n, HD, gemv);
            same_bits(o1, o2, HD, "attn_pv");
            quant_attn_scores_ref(sc1, q, blk, HD, n, HD, gemv, 0.125f);
            quant_attn_scores_avx2(sc2, q, blk, HD, n, HD, gemv, 0.125f);
            same_bits(sc1, sc2, n, "attn_scores");
        }
        /* head sizes other models use (the kernel takes 64 outputs at a time, then 32): rows of
         * 128 values, each head a slice of them */
        static float acc2[64 * 128];
        float w1[128], w2[128];
        for (int hd = 32; hd <= 128; hd += 32)
            for (int n = 1; n <= 320; n += 53) {
                const uint16_t *blk2[10];
                for (int b = 0; b < 10; b++) blk2[b] = kv + (size_t)(9 - b) * 16 * 128 + (128 - hd);
                quant_attn_pv_ref(w1, acc2, p16, blk2, 128, n < 160 ? n : 160, hd, gemv);
                quant_attn_pv_avx2(w2, acc2, p16, blk2, 128, n < 160 ? n : 160, hd, gemv);
                same_bits(w1, w2, hd, "attn_pv (head size)");
            }
    }
}

/* The vector exp is an approximation of exp with llama.cpp's error (< 2 ulp), and the 16-lane
 * orders are the sums they claim to be. */
static void llama_order_kernels_compute_what_they_claim(void **state) {
    (void)state;
    for (float v = -87.0f; v <= 88.0f; v += 0.0137f) {
        double e = exp((double)v), got = quant_vexpf_ref(v);
        if (fabs(got - e) > 2.5e-7 * e) fail_msg("vexpf(%g) = %.9g, exp = %.9g", v, got, e);
    }
    assert_true(quant_vexpf_ref(-INFINITY) == 0.0f && quant_vexpf_ref(-200.0f) == 0.0f);
    assert_true(isinf(quant_vexpf_ref(200.0f)));
    uint16_t a[192], b[192];
    double want = 0;
    for (int i = 0; i < 192; i++) {
        a[i] = quant_f32_to_fp16(rndf());
        b[i] = quant_f32_to_fp16(rndf());
        want += (double)quant_fp16_to_f32(a[i]) * quant_fp16_to_f32(b[i]);
    }
    for (int gemv = 0; gemv < 2; gemv++) assert_true(fabs(quant_dot_f16_order_ref(a, b, 192, gemv) - want) < 1e-4);
}

/* The weights as the AVX-512 kernels read them: packed when the type is packed on this CPU. */
static void *kernel_rows(int t, const uint8_t *W, int rows, int cols) {
    size_t pb = quant_pack_bytes(t, rows, cols);
    if (!pb) return NULL;
    void *p = malloc(pb);
    quant_pack_rows(t, p, W, rows, cols);
    return p;
}

/* The multi-token tiles give exactly the per-(row, token) dots, for any token count. */
static void matmul_tiles_equal_per_row_dots_bitwise(void **state) {
    (void)state;
    const int types[2] = {QT_Q4_1, QT_Q8_0};
    for (int k = 0; k < 2; k++) {
        int t = types[k];
        QuantMatmulFn mm = quant_matmul_fn(t, QUANT_ISA_BEST);
        if (!mm) skip();
        const int rows = 45, cols = 576;
        size_t rb = quant_row_bytes(t, cols), ab = quant_row_bytes(quant_act_type(t), cols);
        uint8_t *W = malloc(rb * rows), *A = malloc(ab * 40);
        void *tile = malloc(quant_matmul_tile_bytes(cols, 40));
        float *x = malloc(cols * sizeof *x), *out = malloc((size_t)rows * 40 * sizeof *out);
        for (int r = 0; r < rows; r++) random_row(t, W + r * rb, cols);
        void *P = kernel_rows(t, W, rows, cols);
        for (int i = 0; i < 40; i++) {
            for (int c = 0; c < cols; c++) x[c] = rndf() * (i % 3 ? 1.0f : 50.0f);
            quant_quantize_act(quant_act_type(t), x, A + i * ab, cols);
        }
        QuantDotFn ref = quant_dot_fn(t, QUANT_ISA_REF);
        const int ntoks[] = {2, 5, 16, 17, 40};
        for (int j = 0; j < 5; j++) {
            int nt = ntoks[j];
            quant_matmul_prep(t, tile, A, ab, nt, cols);
            mm(out, rows, P ? P : W, rb, cols, 3, rows, tile, nt);
            for (int i = 0; i < nt; i++)
                for (int r = 3; r < rows; r++) {
                    float want = ref(W + r * rb, A + i * ab, cols);
                    if (memcmp(&want, &out[i * rows + r], sizeof want) != 0)
                        fail_msg("%s tile, %d tokens: row %d token %d: %.9g vs dot %.9g", quant_type_name(t), nt, r, i,
                                 out[i * rows + r], want);
                }
        }
        free(W); free(A); free(tile); free(x); free(out); free(P);
    }
}

/* The single-token matvec gives exactly the reference dot of every row, for row ranges that
 * start anywhere and end in a partial group of eight, and for activations with large spikes. */
static void matvec_equals_per_row_dots_bitwise(void **state) {
    (void)state;
    const int types[2] = {QT_Q4_1, QT_Q8_0};
    const int colss[3] = {576, 1536, 64};
    for (int k = 0; k < 2; k++) {
        int t = types[k];
        QuantMatvecFn mv = quant_matvec_fn(t, QUANT_ISA_BEST);
        if (!mv) skip();
        for (int c = 0; c < 3; c++) {
            const int rows = 61, cols = colss[c];
            size_t rb = quant_row_bytes(t, cols), ab = quant_row_bytes(quant_act_type(t), cols);
            uint8_t *W = malloc(rb * rows), *A = malloc(ab);
            void *vec = malloc(quant_matvec_bytes(cols));
            float *x = malloc(cols * sizeof *x), *out = malloc(rows * sizeof *out);
            for (int r = 0; r < rows; r++) random_row(t, W + r * rb, cols);
            void *P = kernel_rows(t, W, rows, cols);
            for (int i = 0; i < cols; i++) x[i] = rndf() * (i % 37 ? 1.0f : 80.0f);
            quant_quantize_act(quant_act_type(t), x, A, cols);
            quant_matvec_prep(t, vec, A, cols);
            QuantDotFn ref = quant_dot_fn(t, QUANT_ISA_REF);
            const int ranges[4][2] = {{0, rows}, {3, rows}, {5, 6}, {8, 24}};
            for (int j = 0; j < 4; j++) {
                for (int r = 0; r < rows; r++) out[r] = -1.0f;
                mv(out, P ? P : W, rb, cols, ranges[j][0], ranges[j][1], vec);
                for (int r = 0; r < rows; r++) {
                    int in = r >= ranges[j][0] && r < ranges[j][1];
                    float want = in ? ref(W + r * rb, A, cols) : -1.0f;
                    if (memcmp(&want, &out[r], sizeof want) != 0)
                        fail_msg("%s matvec, %d cols, rows [%d, %d): row %d: %.9g vs dot %.9g", quant_type_name(t), cols,
                                 ranges[j][0], ranges[j][1], r, out[r], want);
                }
            }
            free(W); free(A); free(vec); free(x); free(out); free(P);
        }
    }
}

static void matmul_rows_equals_per_row_dots(void **state) {
    (void)state;
    const int rows = 37, cols = 512, ntok = 40;
    size_t rb = quant_row_bytes(QT_Q4_1, cols), ab = quant_row_bytes(QT_Q8_1, cols);
    uint8_t *W = malloc(rb * rows), *A = malloc(ab * ntok);
    float *x = malloc(cols * sizeof *x), *out = malloc((size_t)rows * ntok * sizeof *out);
    for (int r = 0; r < rows; r++) random_row(QT_Q4_1, W + r * rb, cols);
    for (int t = 0; t < ntok; t++) {
        for (int i = 0; i < cols; i++) x[i] = rndf();
        quant_quantize_act(QT_Q8_1, x, A + t * ab, cols);
    }
    QuantDotFn dot = quant_dot_fn(QT_Q4_1, QUANT_ISA_BEST);
    quant_matmul_rows(out, rows, W, QT_Q4_1, cols, 3, rows, A, ab, ntok, dot);
    for (int t = 0; t < ntok; t++)
        for (int r = 3; r < rows; r++) assert_true(out[t * rows + r] == dot(W + r * rb, A + t * ab, cols));
    free(W); free(A); free(x); free(out);
}

/* The sampler's exp must be libm's expf bit for bit (a job's draw must not depend on the CPU
 * path): every 61st float bit pattern of [-104, 104] plus the edges, through the dispatcher
 * and, where the CPU has AVX2, the vector kernel itself over the range it claims (|x| < 88). */
static void expf_row_is_libm_expf_bitwise(void **state) {
    (void)state;
    enum { B = 4096 };
    static float x[B], y[B], yv[B];
    const uint32_t big = 0x42d00000u; /* 104.0f */
    long bad = 0, n_checked = 0;
    int n = 0, avx2 = quant_best_isa() == QUANT_ISA_AVX2;
    for (uint32_t sgn = 0; sgn < 2; sgn++)
        for (uint32_t u = 0; u <= big + 61; u += 61) {
            uint32_t v = (u > big ? big : u) | (sgn << 31);
            memcpy(&x[n++], &v, 4);
            if (n == B || u + 61 > big + 61) {
                quant_expf_row(y, x, n);
                if (avx2) quant_expf_row_avx2(yv, x, n);
                for (int i = 0; i < n; i++) {
                    float e = expf(x[i]);
                    if (memcmp(&e, &y[i], 4) || (avx2 && fabsf(x[i]) < 88.0f && memcmp(&e, &yv[i], 4))) {
                        if (bad++ < 5) print_message("expf(%a): libm %a, row %a, avx2 %a\n", x[i], e, y[i], yv[i]);
                    }
                }
                n_checked += n;
                n = 0;
            }
        }
    float edge[7] = {-INFINITY, INFINITY, NAN, -0.0f, 0.0f, 88.72283f, -103.97208f}, ey[7];
    quant_expf_row(ey, edge, 7);
    for (int i = 0; i < 7; i++) {
        float e = expf(edge[i]);
        if (isnan(e) ? !isnan(ey[i]) : memcmp(&e, &ey[i], 4) != 0) bad++;
    }
    assert_true(n_checked > 1000000);
    assert_int_equal(bad, 0);
}

static void type_facts_reject_unknown_types(void **state) {
    (void)state;
    assert_int_equal(quant_row_bytes(QT_Q4_K, 255), 0);
    assert_int_equal(quant_row_bytes(QT_Q4_K, 512), 288);
    assert_int_equal(quant_row_bytes(99, 32), 0);
    assert_false(quant_type_supported(6));
    assert_null(quant_dot_fn(6, QUANT_ISA_BEST));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(fp16_conversion_rounds_to_nearest_even),
        cmocka_unit_test(dequantisation_matches_gguf_python),
        cmocka_unit_test(reference_dot_is_dot_of_dequantised_values),
        cmocka_unit_test(simd_dots_match_reference),
        cmocka_unit_test(matmul_rows_equals_per_row_dots),
        cmocka_unit_test(activation_quantiser_simd_matches_reference_bitwise),
        cmocka_unit_test(llama_order_kernels_simd_match_reference_bitwise),
        cmocka_unit_test(llama_order_kernels_compute_what_they_claim),
        cmocka_unit_test(matmul_tiles_equal_per_row_dots_bitwise),
        cmocka_unit_test(matvec_equals_per_row_dots_bitwise),
        cmocka_unit_test(expf_row_is_libm_expf_bitwise),
        cmocka_unit_test(type_facts_reject_unknown_types),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    int any_simd = quant_best_isa() != QUANT_ISA_REF || quant_matmul_fn(QT_Q8_0, QUANT_ISA_BEST) != NULL ||
                   quant_matmul_fn(QT_Q4_1, QUANT_ISA_BEST) != NULL;
    if (failed == 0 && !any_simd) {
        fprintf(stderr, "skipped: no SIMD kernel to compare with the reference (the reference-only cases passed)\n");
        return EXIT_NOTHING_COMPARED;
    }
    return failed;
}
