/* test_embed_safetensors.c: the safetensors reader accepts good files (F32, F16, BF16), and
 * turns every truncated or lying file into an error naming the file and the problem, never a
 * crash. Replays a generated corpus (every truncation, every single-byte header mutation) plus
 * any files in tests/fuzz/corpus_safetensors/ (seeds and fuzzer findings). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/embed/safetensors.h"

static size_t build(uint8_t *out, size_t cap, const char *header, const void *data, size_t dlen)
{
    size_t hlen = strlen(header);
    assert_true(8 + hlen + dlen <= cap);
    for (int i = 0; i < 8; i++) out[i] = (uint8_t)((uint64_t)hlen >> (8 * i));
    memcpy(out + 8, header, hlen);
    memcpy(out + 8 + hlen, data, dlen);
    return 8 + hlen + dlen;
}

static const char *good_header =
    "{\"__metadata__\":{\"format\":\"pt\"},"
    "\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]},"
    "\"h\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[24,28]},"
    "\"b\":{\"dtype\":\"BF16\",\"shape\":[2],\"data_offsets\":[28,32]},"
    "\"i\":{\"dtype\":\"I64\",\"shape\":[1],\"data_offsets\":[32,40]}}";

static size_t good_file(uint8_t *buf, size_t cap)
{
    uint8_t data[40];
    float a[6] = {1, 2, 3, 4, 5, 6};
    memcpy(data, a, 24);
    uint8_t h[4] = {0x00, 0x3c, 0x00, 0xc0}; /* 1.0, -2.0 in f16 */
    uint8_t b[4] = {0x80, 0x3f, 0x40, 0x40}; /* 1.0, 3.0 in bf16 */
    memcpy(data + 24, h, 4);
    memcpy(data + 28, b, 4);
    memset(data + 32, 0, 8);
    return build(buf, cap, good_header, data, sizeof data);
}

static void a_good_file_reads_every_float_dtype_as_f32(void **state)
{
    (void)state;
    uint8_t buf[1024];
    size_t n = good_file(buf, sizeof buf);
    char err[256] = "";
    SafeTensors *st = st_open_memory(buf, n, "good.safetensors", err, sizeof err);
    assert_non_null(st);
    assert_int_equal(st->ntensors, 4);
    float out[6];
    assert_int_equal(st_read_f32(st, "a", 2, 3, out, err, sizeof err), 0);
    assert_float_equal(out[5], 6.0f, 0.0f);
    assert_int_equal(st_read_f32(st, "h", 2, -1, out, err, sizeof err), 0);
    assert_float_equal(out[0], 1.0f, 0.0f);
    assert_float_equal(out[1], -2.0f, 0.0f);
    assert_int_equal(st_read_f32(st, "b", 2, -1, out, err, sizeof err), 0);
    assert_float_equal(out[1], 3.0f, 0.0f);
    /* wrong shape, integer dtype and missing names are errors that say so */
    assert_int_not_equal(st_read_f32(st, "a", 3, 2, out, err, sizeof err), 0);
    assert_non_null(strstr(err, "shape [2, 3]"));
    assert_int_not_equal(st_read_f32(st, "i", 1, -1, out, err, sizeof err), 0);
    assert_non_null(strstr(err, "I64"));
    assert_int_not_equal(st_read_f32(st, "zz", 1, -1, out, err, sizeof err), 0);
    assert_non_null(strstr(err, "good.safetensors"));
    assert_non_null(strstr(err, "missing"));
    st_close(st);
}

static void expect_error(const char *header, size_t dlen, const char *needle)
{
    uint8_t buf[2048], data[256] = {0};
    size_t n = build(buf, sizeof buf, header, data, dlen);
    char err[256] = "";
    SafeTensors *st = st_open_memory(buf, n, "bad.safetensors", err, sizeof err);
    if (st) fprintf(stderr, "accepted: %s\n", header);
    assert_null(st);
    if (!strstr(err, needle)) fprintf(stderr, "error '%s' lacks '%s'\n", err, needle);
    assert_non_null(strstr(err, needle));
    assert_non_null(strstr(err, "bad.safetensors"));
}

static void lying_headers_are_errors_that_name_the_problem(void **state)
{
    (void)state;
    expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,16]}}", 8, "outside");
    expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8, "needs 12");
    expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,0]}}", 8, "outside");
    expect_error("{\"a\":{\"dtype\":\"X9\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "unknown dtype");
    expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", 8, "shape[0]");
    expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,8]}}", 8, "shape[0]");
    expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,4294967296],\"data_offsets\":[0,8]}}", 8, "overflows");
    expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0]}}", 8, "data_offsets");
    expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,1e300]}}", 8, "data_offsets");
    expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":2,\"data_offsets\":[0,8]}}", 8, "shape");
    expect_error("{\"a\":{\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "dtype");
    expect_error("{\"a\":[1,2]}", 8, "not an object");
    expect_error("[1,2]", 0, "not a JSON object");
    expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                 "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}", 16, "twice");
    expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                 "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 16, "overlap");
    expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}", 8, "dimensions");
    expect_error("{\"__metadata__\":3}", 0, "__metadata__");
    expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}", 8, "not a JSON object");
}

static void header_length_past_the_end_is_reported_as_truncation(void **state)
{
    (void)state;
    uint8_t buf[16] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, '{', '}'};
    char err[256];
    assert_null(st_open_memory(buf, 10, "t.safetensors", err, sizeof err));
    assert_non_null(strstr(err, "truncated"));
    assert_null(st_open_memory(buf, 5, "t.safetensors", err, sizeof err));
    assert_non_null(strstr(err, "too short"));
    assert_null(st_open("/nonexistent/x.safetensors", err, sizeof err));
    assert_non_null(strstr(err, "/nonexistent/x.safetensors"));
}

/* Replay: every prefix of a good file, and every single-byte mutation of its header, must be
 * either rejected with a message or accepted with every tensor inside the buffer. */
static void check_one(const uint8_t *buf, size_t n)
{
    char err[256] = "";
    SafeTensors *st = st_open_memory(buf, n, "replay.safetensors", err, sizeof err);
    if (!st) {
        assert_true(strlen(err) > 0);
        return;
    }
    for (int i = 0; i < st->ntensors; i++) {
        const StTensor *t = &st->tensors[i];
        assert_true(t->data >= st->map && t->data + t->nbytes <= st->map + st->size);
        float tmp[64];
        if (t->ndim == 1 && t->shape[0] <= 64) (void)st_read_f32(st, t->name, t->shape[0], -1, tmp, err, sizeof err);
    }
    st_close(st);
}

static void truncated_and_mutated_files_never_crash_the_reader(void **state)
{
    (void)state;
    uint8_t good[1024], buf[1024];
    size_t n = good_file(good, sizeof good);
    for (size_t cut = 0; cut < n; cut++) {
        char err[256] = "";
        SafeTensors *st = st_open_memory(good, cut, "cut.safetensors", err, sizeof err);
        assert_null(st); /* any truncation of this file loses data the header promises */
        assert_non_null(strstr(err, "cut.safetensors"));
    }
    static const uint8_t subst[] = {'0', '9', '-', '"', ',', '[', ']', '{', '}', 0, 0xff, 'e', '.'};
    size_t hend = 8 + strlen(good_header);
    for (size_t pos = 0; pos < hend; pos++) {
        for (size_t s = 0; s < sizeof subst; s++) {
            memcpy(buf, good, n);
            buf[pos] = subst[s];
            check_one(buf, n);
        }
    }
}

static void corpus_files_in_the_tree_never_crash_the_reader(void **state)
{
    (void)state;
    const char *src = getenv("WEAVER_SOURCE_DIR");
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/tests/fuzz/corpus_safetensors", src ? src : ".");
    DIR *d = opendir(dir);
    if (!d) {
        fprintf(stderr, "note: %s not found; replaying only the generated corpus\n", dir);
        return;
    }
    int count = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.') continue;
        char path[2048];
        snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
        FILE *f = fopen(path, "rb");
        if (!f) continue;
        static uint8_t buf[1 << 20];
        size_t n = fread(buf, 1, sizeof buf, f);
        fclose(f);
        check_one(buf, n);
        char err[256];
        SafeTensors *st = st_open(path, err, sizeof err); /* the mmap path too */
        st_close(st);
        count++;
    }
    closedir(d);
    fprintf(stderr, "replayed %d corpus files\n", count);
}

static void the_real_model_file_opens(void **state)
{
    (void)state;
    const char *path = "models/all-MiniLM-L6-v2/model.safetensors";
    FILE *f = fopen(path, "rb");
    if (!f)
        fail_msg("%s is not installed: run ops/setup.sh", path);
    fclose(f);
    char err[256] = "";
    SafeTensors *st = st_open(path, err, sizeof err);
    assert_non_null(st);
    const StTensor *t = st_find(st, "embeddings.word_embeddings.weight");
    assert_non_null(t);
    assert_int_equal(t->shape[1], 384);
    st_close(st);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_good_file_reads_every_float_dtype_as_f32),
        cmocka_unit_test(lying_headers_are_errors_that_name_the_problem),
        cmocka_unit_test(header_length_past_the_end_is_reported_as_truncation),
        cmocka_unit_test(truncated_and_mutated_files_never_crash_the_reader),
        cmocka_unit_test(corpus_files_in_the_tree_never_crash_the_reader),
        cmocka_unit_test(the_real_model_file_opens),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
