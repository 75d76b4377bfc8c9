/* test_decode_gguf.c: the GGUF reader. A well-formed file reads back every metadata type and
 * tensor; every truncation and thousands of random corruptions of it are refused (or read)
 * without a crash; specific lies get an error that names the problem. The fuzz seeds in
 * tests/fuzz/corpus_gguf/ are replayed through the reader and the tokenizer and model loaders,
 * and the tiny models among them must load (else the fuzzer would never reach the loaders). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "engine/decode/gguf.h"
#include "engine/decode/model.h"
#include "engine/decode/tokenizer.h"

typedef struct W {
    uint8_t buf[8192];
    size_t n;
} W;

static void put(W *w, const void *p, size_t n) {
    memcpy(w->buf + w->n, p, n);
    w->n += n;
}
static void u32(W *w, uint32_t v) { put(w, &v, 4); }
static void u64(W *w, uint64_t v) { put(w, &v, 8); }
static void str(W *w, const char *s) {
    u64(w, strlen(s));
    put(w, s, strlen(s));
}

/* Offsets of some fields, for targeted corruption. */
static size_t off_arr_count, off_tensor_offset, off_ndims;

static void build(W *w, uint32_t version) {
    memset(w, 0, sizeof *w);
    put(w, "GGUF", 4);
    u32(w, version);
    u64(w, 2);  /* tensors */
    u64(w, 15); /* kv */
    str(w, "a.u8"); u32(w, GGUF_U8); uint8_t b = 200; put(w, &b, 1);
    str(w, "a.i8"); u32(w, GGUF_I8); int8_t c = -5; put(w, &c, 1);
    str(w, "a.u16"); u32(w, GGUF_U16); uint16_t d = 60000; put(w, &d, 2);
    str(w, "a.i16"); u32(w, GGUF_I16); int16_t e = -300; put(w, &e, 2);
    str(w, "a.u32"); u32(w, GGUF_U32); u32(w, 4000000000u);
    str(w, "a.i32"); u32(w, GGUF_I32); int32_t f = -7; put(w, &f, 4);
    str(w, "a.f32"); u32(w, GGUF_F32); float g = 1.5f; put(w, &g, 4);
    str(w, "a.bool"); u32(w, GGUF_BOOL); b = 1; put(w, &b, 1);
    str(w, "a.str"); u32(w, GGUF_STRING); str(w, "hello");
    str(w, "a.u64"); u32(w, GGUF_U64); u64(w, 1ull << 40);
    str(w, "a.i64"); u32(w, GGUF_I64); int64_t h = -(1ll << 40); put(w, &h, 8);
    str(w, "a.f64"); u32(w, GGUF_F64); double k = 2.25; put(w, &k, 8);
    str(w, "a.arr_i32"); u32(w, GGUF_ARRAY); u32(w, GGUF_I32);
    off_arr_count = w->n;
    u64(w, 3); int32_t arr[3] = {1, -2, 3}; put(w, arr, sizeof arr);
    str(w, "a.arr_str"); u32(w, GGUF_ARRAY); u32(w, GGUF_STRING); u64(w, 2); str(w, "x"); str(w, "yz");
    str(w, "general.alignment"); u32(w, GGUF_U32); u32(w, 64);
    str(w, "t.f32");
    off_ndims = w->n;
    u32(w, 2); u64(w, 4); u64(w, 2); u32(w, 0);
    off_tensor_offset = w->n;
    u64(w, 0);
    str(w, "t.q8"); u32(w, 1); u64(w, 32); u32(w, 8); u64(w, 64);
    while (w->n % 64) w->buf[w->n++] = 0;
    float vals[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    put(w, vals, sizeof vals);
    while (w->n % 64) w->buf[w->n++] = 0;
    for (int i = 0; i < 34; i++) w->buf[w->n++] = (uint8_t)i;
}

static void reads_every_metadata_type_and_tensor(void **state) {
    (void)state;
    for (uint32_t v = 2; v <= 3; v++) {
        W w;
        build(&w, v);
        char err[256];
        GgufFile *f = gguf_open_memory(w.buf, w.n, err, sizeof err);
        assert_non_null(f);
        uint32_t u;
        int64_t i;
        float fl;
        bool bo;
        GgufStr s;
        assert_int_equal(gguf_get_u32(f, "a.u8", &u), 0); assert_int_equal(u, 200);
        assert_int_equal(gguf_get_i64(f, "a.i8", &i), 0); assert_int_equal(i, -5);
        assert_int_equal(gguf_get_u32(f, "a.u16", &u), 0); assert_int_equal(u, 60000);
        assert_int_equal(gguf_get_i64(f, "a.i16", &i), 0); assert_int_equal(i, -300);
        assert_int_equal(gguf_get_u32(f, "a.u32", &u), 0); assert_int_equal(u, 4000000000u);
        assert_int_equal(gguf_get_i64(f, "a.i32", &i), 0); assert_int_equal(i, -7);
        assert_int_equal(gguf_get_u32(f, "a.i32", &u), -1); /* negative does not fit */
        assert_int_equal(gguf_get_f32(f, "a.f32", &fl), 0); assert_true(fl == 1.5f);
        assert_int_equal(gguf_get_bool(f, "a.bool", &bo), 0); assert_true(bo);
        assert_int_equal(gguf_get_str(f, "a.str", &s), 0); assert_int_equal(s.len, 5); assert_memory_equal(s.ptr, "hello", 5);
        assert_int_equal(gguf_get_i64(f, "a.u64", &i), 0); assert_int_equal(i, 1ll << 40);
        assert_int_equal(gguf_get_i64(f, "a.i64", &i), 0); assert_int_equal(i, -(1ll << 40));
        assert_int_equal(gguf_get_f32(f, "a.f64", &fl), 0); assert_true(fl == 2.25f);
        const GgufKV *a = gguf_find(f, "a.arr_i32");
        assert_non_null(a); assert_int_equal(a->arr_n, 3); assert_int_equal(gguf_arr_int(a, 1), -2);
        a = gguf_find(f, "a.arr_str");
        assert_non_null(a); assert_int_equal(a->arr_n, 2); assert_int_equal(a->arr_strs[1].len, 2);
        assert_int_equal(f->alignment, 64);
        const GgufTensor *t = gguf_find_tensor(f, "t.f32");
        assert_non_null(t); assert_int_equal(t->ne[0], 4); assert_int_equal(t->ne[1], 2); assert_int_equal(t->size, 32);
        assert_true(((const float *)t->data)[7] == 8.0f);
        t = gguf_find_tensor(f, "t.q8");
        assert_non_null(t); assert_int_equal(t->size, 34); assert_ptr_equal(t->data, w.buf + f->data_offset + 64);
        gguf_close(f);
    }
}

static void every_truncation_is_a_clear_error(void **state) {
    (void)state;
    W w;
    build(&w, 3);
    for (size_t n = 0; n < w.n; n++) {
        char err[256] = "";
        uint8_t *copy = malloc(n ? n : 1); /* exact-size buffer so ASan sees any over-read */
        memcpy(copy, w.buf, n);
        GgufFile *f = gguf_open_memory(copy, n, err, sizeof err);
        assert_null(f);
        assert_true(strstr(err, "gguf:") != NULL);
        free(copy);
    }
}

static void random_corruption_never_crashes(void **state) {
    (void)state;
    W w;
    build(&w, 3);
    uint64_t r = 12345;
    int opened = 0;
    for (int trial = 0; trial < 20000; trial++) {
        uint8_t *copy = malloc(w.n);
        memcpy(copy, w.buf, w.n);
        int flips = 1 + (int)(r % 4);
        for (int k = 0; k < flips; k++) {
            r = r * 6364136223846793005ull + 1442695040888963407ull;
            copy[(r >> 33) % w.n] ^= (uint8_t)(1u << ((r >> 20) % 8));
        }
        char err[256];
        GgufFile *f = gguf_open_memory(copy, w.n, err, sizeof err);
        if (f) {
            opened++;
            for (uint64_t i = 0; i < f->n_tensors; i++) {
                const GgufTensor *t = &f->tensors[i];
                assert_true((const uint8_t *)t->data + t->size <= copy + w.n);
            }
            gguf_close(f);
        }
        free(copy);
    }
    assert_true(opened > 0);
}

static void expect_error(W *w, const char *needle) {
    char err[256] = "";
    GgufFile *f = gguf_open_memory(w->buf, w->n, err, sizeof err);
    if (f) gguf_close(f);
    assert_null(f);
    if (!strstr(err, needle)) fail_msg("error '%s' does not mention '%s'", err, needle);
}

static void lies_are_named(void **state) {
    (void)state;
    W w;
    build(&w, 1);
    expect_error(&w, "version 1");
    build(&w, 3);
    uint64_t huge = 1ull << 60;
    memcpy(w.buf + off_arr_count, &huge, 8);
    expect_error(&w, "a.arr_i32");
    build(&w, 3);
    uint64_t off = 1ull << 40;
    memcpy(w.buf + off_tensor_offset, &off, 8);
    expect_error(&w, "t.f32");
    build(&w, 3);
    off = 8; /* not a multiple of the 64-byte alignment */
    memcpy(w.buf + off_tensor_offset, &off, 8);
    expect_error(&w, "alignment");
    build(&w, 3);
    uint32_t nd = 9;
    memcpy(w.buf + off_ndims, &nd, 4);
    expect_error(&w, "dimensions");
    build(&w, 3);
    memcpy(w.buf, "GGUX", 4);
    expect_error(&w, "magic");
}

static void missing_file_is_an_error(void **state) {
    (void)state;
    char err[256];
    assert_null(gguf_open("/nonexistent/model.gguf", err, sizeof err));
    assert_non_null(strstr(err, "cannot open"));
}

/* Seeds named after an architecture and tokenizer (llama_spm_q8_0, qwen2_bpe_q4_1, ...) are
 * complete models; the others are lies that must be refused with a message. */
static void fuzz_seed_models_load_and_lying_seeds_are_refused(void **state) {
    (void)state;
    static const char *const models[] = {"llama_spm_q8_0", "llama_linear_rope", "qwen2_bpe_q4_1", "qwen3_bpe_f16"};
    static const char *const lies[] = {"header_only", "kv_count_lies", "layers_missing", "tensor_count_lies",
                                       "tensor_offset_past_end", "truncated", "version_1"};
    const char *src = getenv("WEAVER_SOURCE_DIR");
    char path[1024], err[256];
    for (size_t i = 0; i < sizeof models / sizeof models[0]; i++) {
        snprintf(path, sizeof path, "%s/tests/fuzz/corpus_gguf/%s", src ? src : ".", models[i]);
        GgufFile *f = gguf_open(path, err, sizeof err);
        if (!f) fail_msg("%s: %s", models[i], err);
        Tokenizer *t = tok_load(f, err, sizeof err);
        if (!t) fail_msg("%s: %s", models[i], err);
        tok_free(t);
        Model *m = model_load(f, err, sizeof err);
        if (!m) fail_msg("%s: %s", models[i], err);
        assert_int_equal(m->hp.n_layer, 1);
        model_free(m);
    }
    for (size_t i = 0; i < sizeof lies / sizeof lies[0]; i++) {
        snprintf(path, sizeof path, "%s/tests/fuzz/corpus_gguf/%s", src ? src : ".", lies[i]);
        err[0] = '\0';
        GgufFile *f = gguf_open(path, err, sizeof err);
        Model *m = NULL;
        if (f) {
            err[0] = '\0';
            m = model_load(f, err, sizeof err);
        }
        if (m) fail_msg("%s: accepted", lies[i]);
        if (!err[0]) fail_msg("%s: refused without a message", lies[i]);
    }
    /* 12 KiB claiming 8 million layers: refused from the tensor count, before any table is sized
     * from block_count (found by fuzz_gguf as a multi-GB allocation). */
    snprintf(path, sizeof path, "%s/tests/fuzz/corpus_gguf/oom_block_count", src ? src : ".");
    GgufFile *f = gguf_open(path, err, sizeof err);
    if (!f) fail_msg("oom_block_count: %s", err);
    assert_null(model_load(f, err, sizeof err));
    if (!strstr(err, "block_count")) fail_msg("oom_block_count: %s", err);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(reads_every_metadata_type_and_tensor),
        cmocka_unit_test(every_truncation_is_a_clear_error),
        cmocka_unit_test(random_corruption_never_crashes),
        cmocka_unit_test(lies_are_named),
        cmocka_unit_test(missing_file_is_an_error),
        cmocka_unit_test(fuzz_seed_models_load_and_lying_seeds_are_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
