/* test_kernels_gemm_lowp.c: the reduced-precision GEMMs (bf16, int8). The plain-C references
 * compute A W^T within their format's rounding of the F32 reference SGEMM, and pack exactly the
 * documented layout; the AVX-512 variants agree with the references (atol + |ref| * rtol) over
 * model shapes, row/column tails, k not a multiple of the group and K split into cache blocks,
 * with every epilogue; $WEAVER_CPU_ISA below avx512 makes gemm_lowp_ops() refuse (the embedder
 * then falls back to fp32). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/gemm.h"

static uint32_t rng = 4242;
static float frand(float scale)
{
    rng = rng * 1664525u + 1013904223u;
    return ((float)(rng >> 8) / (float)(1u << 24) * 2.0f - 1.0f) * scale;
}

static void *balloc(size_t bytes)
{
    void *p = aligned_alloc(64, (bytes + 63) & ~(size_t)63);
    assert_non_null(p);
    return p;
}

static float *falloc(size_t n) { return balloc(n * sizeof(float)); }

static void fill(float *x, size_t n, float scale)
{
    for (size_t i = 0; i < n; i++) x[i] = frand(scale);
}

/* Largest |got - ref| / (atol + |ref| * rtol) over the m x n block; > 1 fails. Prints the first few. */
static int close_enough(const char *what, const float *ref, const float *got, int m, int n, int ld, float atol,
                        float rtol)
{
    int bad = 0;
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            float r = ref[(size_t)i * ld + j], g = got[(size_t)i * ld + j];
            if (!(fabsf(r - g) <= atol + fabsf(r) * rtol)) {
                if (bad < 5) fprintf(stderr, "%s: [%d][%d] ref %.9g got %.9g\n", what, i, j, r, g);
                bad++;
            }
        }
    return bad == 0;
}

#define EXIT_NOTHING_COMPARED 77
static int compared;

/* One shape, one precision: the reference against F32 (loosely: its format's error), and the
 * SIMD variant (if any) against the reference (tightly), every epilogue, guard columns. */
static void check_shape(GemmPrecision p, int m, int n, int k)
{
    int lda = k + 3, ldc = n + 5, ldw = k + 1;
    float *a = falloc((size_t)m * lda), *w = falloc((size_t)n * ldw), *bias = falloc((size_t)n);
    float *res = falloc((size_t)m * ldc), *f32 = falloc((size_t)m * ldc), *ref = falloc((size_t)m * ldc),
          *got = falloc((size_t)m * ldc), *work = falloc(gemm_work_floats());
    float *wp32 = falloc(gemm_packed_floats(n, k));
    void *wp = balloc(gemm_lowp_packed_bytes(p, n, k));
    fill(a, (size_t)m * lda, 1.0f);
    for (int i = 0; i < m; i += 3) /* post-GELU-like rows: nearly one-sided */
        for (int kk = 0; kk < k; kk++) a[(size_t)i * lda + kk] = fabsf(a[(size_t)i * lda + kk]) - 0.1f;
    fill(w, (size_t)n * ldw, 0.1f);
    fill(bias, (size_t)n, 0.5f);
    fill(res, (size_t)m * ldc, 2.0f);
    gemm_pack(wp32, w, ldw, n, k);
    gemm_lowp_pack(p, wp, w, ldw, n, k);
    const GemmLowpOps *simd = gemm_lowp_ops(p);
    for (int e = 0; e < 4; e++) {
        GemmEpilogue ep = {.bias = e >= 1 ? bias : NULL, .res = e == 2 ? res : NULL, .ldres = ldc, .gelu = e == 3};
        char what[96];
        snprintf(what, sizeof what, "%s m=%d n=%d k=%d epilogue=%d", gemm_precision_name(p), m, n, k, e);
        for (size_t i = 0; i < (size_t)m * ldc; i++) f32[i] = ref[i] = got[i] = 1234.5f; /* guard values */
        gemm_ops_ref()->sgemm(f32, ldc, a, lda, wp32, m, n, k, e ? &ep : NULL, work);
        gemm_lowp_ref(p)->gemm(ref, ldc, a, lda, wp, m, n, k, e ? &ep : NULL, work);
        /* |A W^T| per output is about 0.1 sqrt(k / 3); bf16 keeps 8 bits, int8 about 7 */
        float scale = 0.1f * sqrtf((float)k / 3.0f), tol = p == GEMM_BF16 ? 0.02f : 0.05f;
        assert_true(close_enough(what, f32, ref, m, ldc, ldc, tol * scale, 0.0f));
        if (!simd) continue;
        gemm_lowp_ref(p)->gemm(ref, ldc, a, lda, wp, m, n, k, e ? &ep : NULL, work);
        simd->gemm(got, ldc, a, lda, wp, m, n, k, e ? &ep : NULL, work);
        assert_true(close_enough(what, ref, got, m, ldc, ldc, 1e-5f, 1e-4f));
        compared++;
    }
    free(a); free(w); free(bias); free(res); free(f32); free(ref); free(got); free(work); free(wp32); free(wp);
}

static void shapes(GemmPrecision p)
{
    check_shape(p, 16, 1152, 384); /* QKV of one short text */
    check_shape(p, 37, 384, 1536); /* FFN down: K in four cache blocks */
    check_shape(p, 270, 64, 384);  /* more rows than one row block */
    static const int ms[] = {1, 3, 5, 8, 9, 12, 13, 25};
    static const int ns[] = {1, 7, 16, 17, 31, 33, 70};
    static const int ks[] = {1, 2, 3, 5, 6, 7, 64, 385, 801};
    for (size_t i = 0; i < sizeof ms / sizeof ms[0]; i++)
        for (size_t j = 0; j < sizeof ns / sizeof ns[0]; j++)
            check_shape(p, ms[i], ns[j], ks[(i * 3 + j) % (sizeof ks / sizeof ks[0])]);
}

static void bf16_gemm_matches_reference_and_f32(void **state)
{
    (void)state;
    shapes(GEMM_BF16);
}

static void int8_gemm_matches_reference_and_f32(void **state)
{
    (void)state;
    shapes(GEMM_INT8);
}

static void packed_layouts_are_the_documented_ones(void **state)
{
    (void)state;
    int n = 33, k = 5;
    float w[33 * 5];
    for (int i = 0; i < n * k; i++) w[i] = (float)(i % 7) - 3.0f; /* exact in bf16 */
    w[2 * k + 1] = 1.01171875f; /* 0x3f818000: halfway between 0x3f81 and 0x3f82, rounds to even */
    uint16_t *b = balloc(gemm_lowp_packed_bytes(GEMM_BF16, n, k));
    assert_int_equal(gemm_lowp_packed_bytes(GEMM_BF16, n, k), 2 * 3 * GEMM_NR * 2 * 2);
    gemm_lowp_pack(GEMM_BF16, b, w, k, n, k);
    /* pair q of row j at [(q * NR + j) * 2 + e] */
    assert_int_equal(b[(0 * GEMM_NR + 0) * 2 + 0], 0xc040); /* w[0][0] = -3 */
    assert_int_equal(b[(1 * GEMM_NR + 1) * 2 + 1], 0xc000); /* w[1][3] = -2 */
    assert_int_equal(b[(0 * GEMM_NR + 2) * 2 + 1], 0x3f82); /* w[2][1], not truncated to 0x3f81 */
    assert_int_equal(b[(2 * GEMM_NR + 4) * 2 + 1], 0);      /* k padded */
    assert_int_equal(b[3 * GEMM_NR * 2 + (0 * GEMM_NR + 1) * 2], 0); /* panel 1, row 33: n padded */
    int8_t *q = balloc(gemm_lowp_packed_bytes(GEMM_INT8, n, k));
    gemm_lowp_pack(GEMM_INT8, q, w, k, n, k);
    /* quad q of row j at [(q * NR + j) * 4 + e]; then scales, then sums, n_pad each */
    const float *scale = (const float *)(q + 2 * 2 * GEMM_NR * 4);
    const int32_t *sum = (const int32_t *)(scale + 2 * GEMM_NR);
    /* row 0 is -3 -2 -1 0 1: scale 3/127, codes -127 -85 -42 0 42 */
    assert_int_equal(q[(0 * GEMM_NR + 0) * 4 + 0], -127);
    assert_int_equal(q[(0 * GEMM_NR + 0) * 4 + 1], -85);
    assert_int_equal(q[(1 * GEMM_NR + 0) * 4 + 0], 42);
    assert_true(fabsf(scale[0] - 3.0f / 127.0f) < 1e-9f);
    assert_int_equal(sum[0], -127 - 85 - 42 + 0 + 42);
    assert_int_equal(q[(1 * GEMM_NR + 0) * 4 + 1], 0);      /* k padded */
    assert_true(scale[40] == 1.0f && sum[40] == 0);          /* n padded */
    free(b);
    free(q);
}

static void isa_cap_below_avx512_refuses_the_simd_variants(void **state)
{
    (void)state;
    const char *old = getenv("WEAVER_CPU_ISA");
    char *keep = old ? strdup(old) : NULL;
    setenv("WEAVER_CPU_ISA", "avx2", 1);
    assert_null(gemm_lowp_ops(GEMM_BF16));
    assert_null(gemm_lowp_ops(GEMM_INT8));
    assert_null(gemm_lowp_ops(GEMM_FP32));
    assert_non_null(gemm_lowp_ref(GEMM_BF16));
    if (keep) setenv("WEAVER_CPU_ISA", keep, 1);
    else unsetenv("WEAVER_CPU_ISA");
    free(keep);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(packed_layouts_are_the_documented_ones),
        cmocka_unit_test(isa_cap_below_avx512_refuses_the_simd_variants),
        cmocka_unit_test(bf16_gemm_matches_reference_and_f32),
        cmocka_unit_test(int8_gemm_matches_reference_and_f32),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    if (failed == 0 && compared == 0) {
        fprintf(stderr, "skipped: no SIMD variant to compare with the reference (the references were checked)\n");
        return EXIT_NOTHING_COMPARED;
    }
    return failed;
}
