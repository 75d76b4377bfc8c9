/* test_kernels_gemm.c: every SIMD variant of the packed-weight SGEMM agrees with the plain-C
 * reference (atol + |ref| * rtol), over shapes that exercise row tails (m not a multiple of the
 * register tile), column tails (n not a multiple of the 32-column panel), K split into several
 * cache blocks, and every epilogue (bias, residual, GELU). */
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

static uint32_t rng = 777;
static float frand(float scale)
{
    rng = rng * 1664525u + 1013904223u;
    return ((float)(rng >> 8) / (float)(1u << 24) * 2.0f - 1.0f) * scale;
}

static void fill(float *x, size_t n, float scale)
{
    for (size_t i = 0; i < n; i++) x[i] = frand(scale);
}

static float *falloc(size_t n)
{
    float *p = aligned_alloc(64, ((n * sizeof(float)) + 63) & ~(size_t)63);
    assert_non_null(p);
    return p;
}

static int close_enough(const char *what, const char *isa, const float *ref, const float *got, int m, int n,
                        int ld, float atol, float rtol)
{
    int bad = 0;
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            float r = ref[(size_t)i * ld + j], g = got[(size_t)i * ld + j];
            if (!(fabsf(r - g) <= atol + fabsf(r) * rtol)) {
                if (bad < 5) fprintf(stderr, "%s/%s: [%d][%d] ref %.9g got %.9g\n", what, isa, i, j, r, g);
                bad++;
            }
        }
    return bad == 0;
}

/* Exit status when no SIMD variant was compared with the reference: ctest reports the test as
 * skipped (SKIP_RETURN_CODE in tests/CMakeLists.txt) instead of passing with nothing checked. */
#define EXIT_NOTHING_COMPARED 77

static const GemmOps *variants[3];
static int nvariants;

static int setup(void **state)
{
    (void)state;
    /* WEAVER_CPU_ISA caps the variants as it caps gemm_ops(): avx512 (or unset) = all the CPU
     * runs, avx2 = AVX2 only, anything else = none (so the skip path can be forced). */
    const char *force = getenv("WEAVER_CPU_ISA");
    int cap = !force || strcmp(force, "avx512") == 0 ? 2 : strcmp(force, "avx2") == 0 ? 1 : 0;
    nvariants = 0;
    if (cap >= 1 && gemm_ops_avx2()) variants[nvariants++] = gemm_ops_avx2();
    if (cap >= 2 && gemm_ops_avx512()) variants[nvariants++] = gemm_ops_avx512();
    if (nvariants == 0)
        fprintf(stderr, "note: no SIMD variant to compare (this CPU has none, or WEAVER_CPU_ISA=%s)\n", force ? force : "unset");
    return 0;
}

/* One shape, every epilogue, every variant; c has a wider stride than n and a guard column. */
static void check_shape(int m, int n, int k)
{
    int lda = k + 3, ldc = n + 5, ldw = k + 1;
    float *a = falloc((size_t)m * lda), *w = falloc((size_t)n * ldw), *bias = falloc((size_t)n);
    float *res = falloc((size_t)m * ldc), *ref = falloc((size_t)m * ldc), *got = falloc((size_t)m * ldc);
    float *wp = falloc(gemm_packed_floats(n, k)), *work = falloc(gemm_work_floats());
    fill(a, (size_t)m * lda, 1.0f);
    fill(w, (size_t)n * ldw, 0.1f);
    fill(bias, (size_t)n, 0.5f);
    fill(res, (size_t)m * ldc, 2.0f);
    gemm_pack(wp, w, ldw, n, k);
    for (int e = 0; e < 4; e++) {
        GemmEpilogue ep = {.bias = e >= 1 ? bias : NULL, .res = e == 2 ? res : NULL, .ldres = ldc, .gelu = e == 3};
        for (size_t i = 0; i < (size_t)m * ldc; i++) ref[i] = got[i] = 1234.5f; /* guard values */
        gemm_ops_ref()->sgemm(ref, ldc, a, lda, wp, m, n, k, e ? &ep : NULL, work);
        for (int v = 0; v < nvariants; v++) {
            for (size_t i = 0; i < (size_t)m * ldc; i++) got[i] = 1234.5f;
            variants[v]->sgemm(got, ldc, a, lda, wp, m, n, k, e ? &ep : NULL, work);
            char what[96];
            snprintf(what, sizeof what, "sgemm m=%d n=%d k=%d epilogue=%d", m, n, k, e);
            /* the whole stride, so a write past n shows up as a changed guard */
            assert_true(close_enough(what, variants[v]->isa, ref, got, m, ldc, ldc, 1e-5f, 1e-4f));
        }
    }
    free(a); free(w); free(bias); free(res); free(ref); free(got); free(wp); free(work);
}

static void sgemm_variants_match_reference_on_model_shapes(void **state)
{
    (void)state;
    if (nvariants == 0) skip();
    check_shape(16, 1152, 384);   /* QKV of one short text */
    check_shape(37, 384, 1536);   /* FFN down: K in four cache blocks */
    check_shape(200, 96, 384);    /* more rows than one row block */
}

static void sgemm_variants_match_reference_on_odd_shapes(void **state)
{
    (void)state;
    if (nvariants == 0) skip();
    static const int ms[] = {1, 3, 5, 8, 9, 12, 13, 25};
    static const int ns[] = {1, 7, 16, 17, 31, 33, 70};
    static const int ks[] = {1, 5, 64, 385, 800};
    for (size_t i = 0; i < sizeof ms / sizeof ms[0]; i++)
        for (size_t j = 0; j < sizeof ns / sizeof ns[0]; j++)
            check_shape(ms[i], ns[j], ks[(i + j) % (sizeof ks / sizeof ks[0])]);
}

static void packing_pads_the_last_panel_with_zeros(void **state)
{
    (void)state;
    int n = 33, k = 3;
    float w[33 * 3];
    for (int i = 0; i < n * k; i++) w[i] = (float)(i + 1);
    size_t sz = gemm_packed_floats(n, k);
    assert_int_equal(sz, 2 * GEMM_NR * 3);
    float *wp = falloc(sz);
    gemm_pack(wp, w, k, n, k);
    assert_true(wp[0] == w[0] && wp[1] == w[k] && wp[GEMM_NR] == w[1]); /* [kk][j] = w[j][kk] */
    float *p1 = wp + (size_t)k * GEMM_NR;
    assert_true(p1[0] == w[32 * k] && p1[1] == 0.0f && p1[GEMM_NR + 31] == 0.0f);
    free(wp);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(sgemm_variants_match_reference_on_model_shapes),
        cmocka_unit_test(sgemm_variants_match_reference_on_odd_shapes),
        cmocka_unit_test(packing_pads_the_last_panel_with_zeros),
    };
    int failed = cmocka_run_group_tests(tests, setup, NULL);
    if (failed == 0 && nvariants == 0) {
        fprintf(stderr, "skipped: no SIMD variant to compare with the reference\n");
        return EXIT_NOTHING_COMPARED;
    }
    return failed;
}
