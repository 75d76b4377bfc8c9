/* test_pin_snapshot_hash.c: the snapshot identity of the cohort pin: sha256 over the documented
 * manifest (path, size, content sha256 of the files that define the model, nothing else),
 * cached in a sidecar so a second boot reads no weights, re-hashing exactly the files whose
 * size, mtime or inode changed. */
#include <fcntl.h>
#include <openssl/evp.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "engine/embed/snapshot_hash.h"

static char dir[256];

static void hexs(const unsigned char *md, char *out)
{
    for (int i = 0; i < 32; i++)
        sprintf(out + 2 * i, "%02x", md[i]);
}

static void sha_hex(const void *p, size_t n, char out[65])
{
    unsigned char md[32];
    unsigned int len = 0;
    EVP_Digest(p, n, md, &len, EVP_sha256(), NULL);
    hexs(md, out);
}

/* Writes rel with content and sets its mtime `age_s` seconds in the past (0 = now). */
static void put(const char *rel, const char *content, int age_s)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, rel);
    char *slash = strrchr(path, '/');
    *slash = '\0';
    mkdir(path, 0755);
    *slash = '/';
    FILE *f = fopen(path, "r+b");
    if (!f)
        f = fopen(path, "wb");
    assert_non_null(f);
    fwrite(content, 1, strlen(content), f);
    fclose(f);
    assert_int_equal(truncate(path, (off_t)strlen(content)), 0);
    if (age_s) {
        struct timespec ts[2];
        clock_gettime(CLOCK_REALTIME, &ts[0]);
        ts[0].tv_sec -= age_s;
        ts[1] = ts[0];
        assert_int_equal(utimensat(AT_FDCWD, path, ts, 0), 0);
    }
}

/* The expected hash, computed here from the documented manifest format. */
static void expect_hash(const char *const *rels, int n, char out[65])
{
    char manifest[8192] = "";
    for (int i = 0; i < n; i++) {
        char path[512], h[65];
        snprintf(path, sizeof path, "%s/%s", dir, rels[i]);
        FILE *f = fopen(path, "rb");
        assert_non_null(f);
        char buf[4096];
        size_t len = fread(buf, 1, sizeof buf, f);
        fclose(f);
        sha_hex(buf, len, h);
        size_t m = strlen(manifest);
        snprintf(manifest + m, sizeof manifest - m, "%s\t%zu\t%s\n", rels[i], len, h);
    }
    sha_hex(manifest, strlen(manifest), out);
}

static int setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof dir, "/tmp/weaver-snaphash-XXXXXX");
    assert_non_null(mkdtemp(dir));
    put("model.safetensors", "WEIGHTS-0123456789", 100);
    put("config.json", "{\"hidden_size\": 8}", 100);
    put("tokenizer.json", "{\"model\": {}}", 100);
    put("vocab.txt", "[PAD]\n[UNK]\n", 100);
    put("modules.json", "[{\"idx\":0,\"path\":\"\"},{\"idx\":1,\"path\":\"1_Pooling\"},"
                        "{\"idx\":2,\"path\":\"2_Dense\"},{\"idx\":3,\"path\":\"../etc\"}]", 100);
    put("1_Pooling/config.json", "{\"pooling_mode_mean_tokens\": true}", 100);
    put("2_Dense/model.safetensors", "DENSE", 100);
    put("README.md", "not part of the model", 100);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd);
}

static const char *const FILES[] = {"1_Pooling/config.json", "2_Dense/model.safetensors", "config.json",
                                    "model.safetensors", "modules.json", "tokenizer.json", "vocab.txt"};
#define NFILES ((int)(sizeof FILES / sizeof FILES[0]))

static void hash_is_sha256_of_the_sorted_manifest_of_model_files_only(void **state)
{
    (void)state;
    char got[65], want[65], err[256] = "";
    SnapshotHashStats st;
    assert_int_equal(snapshot_hash_cached_ex(dir, got, &st, err, sizeof err), 0);
    expect_hash(FILES, NFILES, want);
    assert_string_equal(got, want);
    assert_int_equal(st.files, NFILES);
    assert_int_equal(st.hashed, NFILES);
    assert_true(st.cache_written);
    /* README.md is not part of the model: changing it changes nothing. */
    put("README.md", "edited", 100);
    assert_int_equal(snapshot_hash_cached(dir, got, err, sizeof err), 0);
    assert_string_equal(got, want);
}

static void second_call_reads_every_hash_from_the_sidecar(void **state)
{
    (void)state;
    char a[65], b[65], err[256];
    SnapshotHashStats st;
    assert_int_equal(snapshot_hash_cached_ex(dir, a, &st, err, sizeof err), 0);
    assert_int_equal(snapshot_hash_cached_ex(dir, b, &st, err, sizeof err), 0);
    assert_string_equal(a, b);
    assert_int_equal(st.hashed, 0);
    assert_int_equal(st.from_cache, NFILES);
    assert_false(st.cache_written);
    char side[512];
    snprintf(side, sizeof side, "%s/%s", dir, SNAPSHOT_SIDECAR);
    assert_string_equal(st.cache_path, side);
}

static void a_changed_tensor_file_is_rehashed_alone_and_changes_the_hash(void **state)
{
    (void)state;
    char a[65], b[65], want[65], err[256];
    SnapshotHashStats st;
    assert_int_equal(snapshot_hash_cached_ex(dir, a, &st, err, sizeof err), 0);
    put("model.safetensors", "WEIGHTS-0123456780", 50); /* same size, other bytes, other mtime */
    assert_int_equal(snapshot_hash_cached_ex(dir, b, &st, err, sizeof err), 0);
    assert_int_equal(st.hashed, 1);
    assert_int_equal(st.from_cache, NFILES - 1);
    assert_string_not_equal(a, b);
    expect_hash(FILES, NFILES, want);
    assert_string_equal(b, want);
}

static void a_file_rewritten_in_place_keeping_size_and_mtime_is_trusted_from_the_cache(void **state)
{
    (void)state;
    /* The documented cache key is (size, mtime, inode): this is the case it cannot see. */
    char a[65], b[65], err[256];
    assert_int_equal(snapshot_hash_cached(dir, a, err, sizeof err), 0);
    char path[512];
    snprintf(path, sizeof path, "%s/config.json", dir);
    struct stat sb;
    assert_int_equal(stat(path, &sb), 0);
    put("config.json", "{\"hidden_size\": 9}", 0);
    struct timespec ts[2] = {sb.st_mtim, sb.st_mtim};
    assert_int_equal(utimensat(AT_FDCWD, path, ts, 0), 0);
    SnapshotHashStats st;
    assert_int_equal(snapshot_hash_cached_ex(dir, b, &st, err, sizeof err), 0);
    assert_int_equal(st.hashed, 0);
    assert_string_equal(a, b);
}

static void files_modified_just_now_are_not_cached(void **state)
{
    (void)state;
    char a[65], err[256];
    put("tokenizer.json", "{\"model\": {\"x\": 1}}", 0);
    SnapshotHashStats st;
    assert_int_equal(snapshot_hash_cached_ex(dir, a, &st, err, sizeof err), 0);
    assert_int_equal(snapshot_hash_cached_ex(dir, a, &st, err, sizeof err), 0);
    assert_int_equal(st.hashed, 1); /* tokenizer.json: its mtime could still move within the tick */
    assert_int_equal(st.from_cache, NFILES - 1);
}

static void an_unwritable_sidecar_falls_back_to_the_xdg_cache(void **state)
{
    (void)state;
    char side[512], xdg[300], a[65], b[65], err[256];
    snprintf(side, sizeof side, "%s/%s", dir, SNAPSHOT_SIDECAR);
    assert_int_equal(mkdir(side, 0755), 0); /* rename onto a directory fails, even for root */
    snprintf(xdg, sizeof xdg, "%s/xdg", dir);
    mkdir(xdg, 0755);
    char *old = getenv("XDG_CACHE_HOME") ? strdup(getenv("XDG_CACHE_HOME")) : NULL;
    setenv("XDG_CACHE_HOME", xdg, 1);
    SnapshotHashStats st;
    assert_int_equal(snapshot_hash_cached_ex(dir, a, &st, err, sizeof err), 0);
    assert_true(st.cache_written);
    assert_non_null(strstr(st.cache_path, "/xdg/weaver-engine/manifest-"));
    assert_int_equal(snapshot_hash_cached_ex(dir, b, &st, err, sizeof err), 0);
    assert_int_equal(st.hashed, 0);
    assert_string_equal(a, b);
    if (old)
        setenv("XDG_CACHE_HOME", old, 1);
    else
        unsetenv("XDG_CACHE_HOME");
    free(old);
}

static void a_corrupt_sidecar_is_ignored_not_an_error(void **state)
{
    (void)state;
    char a[65], b[65], err[256];
    assert_int_equal(snapshot_hash_cached(dir, a, err, sizeof err), 0);
    char side[512];
    snprintf(side, sizeof side, "%s/%s", dir, SNAPSHOT_SIDECAR);
    FILE *f = fopen(side, "wb");
    fputs("{\"format\": \"weaver-manifest/1\", \"files\": {\"config.json\": {\"sha256\": 7}}", f);
    fclose(f);
    SnapshotHashStats st;
    assert_int_equal(snapshot_hash_cached_ex(dir, b, &st, err, sizeof err), 0);
    assert_string_equal(a, b);
    assert_int_equal(st.hashed, NFILES);
}

static void a_snapshot_without_weights_is_an_error_naming_the_directory(void **state)
{
    (void)state;
    char path[512], a[65], err[256] = "";
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    unlink(path);
    snprintf(path, sizeof path, "%s/2_Dense/model.safetensors", dir);
    unlink(path);
    assert_int_equal(snapshot_hash_cached(dir, a, err, sizeof err), -1);
    assert_non_null(strstr(err, "no model.safetensors"));
    assert_non_null(strstr(err, dir));
    assert_int_equal(snapshot_hash_cached("/nonexistent/weaver", a, err, sizeof err), -1);
    assert_non_null(strstr(err, "not a directory"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(hash_is_sha256_of_the_sorted_manifest_of_model_files_only, setup, teardown),
        cmocka_unit_test_setup_teardown(second_call_reads_every_hash_from_the_sidecar, setup, teardown),
        cmocka_unit_test_setup_teardown(a_changed_tensor_file_is_rehashed_alone_and_changes_the_hash, setup, teardown),
        cmocka_unit_test_setup_teardown(a_file_rewritten_in_place_keeping_size_and_mtime_is_trusted_from_the_cache,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(files_modified_just_now_are_not_cached, setup, teardown),
        cmocka_unit_test_setup_teardown(an_unwritable_sidecar_falls_back_to_the_xdg_cache, setup, teardown),
        cmocka_unit_test_setup_teardown(a_corrupt_sidecar_is_ignored_not_an_error, setup, teardown),
        cmocka_unit_test_setup_teardown(a_snapshot_without_weights_is_an_error_naming_the_directory, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
