/* test_cfg_util.h: small helpers shared by the config tests (test_cfg_*.c): load a string,
 * assert on the exact error list, make and remove scratch files. Header-only so each test
 * program stays one file that links weaver_config alone; must not hold test logic itself. */
#ifndef WEAVER_TEST_CFG_UTIL_H
#define WEAVER_TEST_CFG_UTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config/config.h"

/* The smallest config that loads anywhere (no model files, no test backends): tests add the
 * keys they are about after it. */
#define CFG_TEST_BASE                                                                          \
    "embedder = { backend = \"remote\"; url = \"http://127.0.0.1:8080\"; };\n"                 \
    "decoder = { enabled = false; };\n"

/* Loads text as "t.conf"; the caller frees with cfg_test_done. */
static inline int cfg_test_load(const char *text, Config *cfg, CfgErrors *errs)
{
    return cfg_load_string(text, "t.conf", cfg, errs);
}

static inline void cfg_test_done(Config *cfg, CfgErrors *errs)
{
    cfg_free(cfg);
    cfg_errors_free(errs);
}

static inline void cfg_test_print_errors(const CfgErrors *errs)
{
    for (int i = 0; i < errs->count; i++)
        print_message("  error[%d]: %s\n", i, errs->msgs[i]);
}

/* Asserts that loading `text` fails with exactly the given messages, in order. */
#define assert_cfg_errors(text, ...)                                                           \
    do {                                                                                       \
        const char *want_[] = { __VA_ARGS__ };                                                 \
        Config cfg_;                                                                           \
        CfgErrors errs_;                                                                       \
        int rc_ = cfg_test_load((text), &cfg_, &errs_);                                        \
        int n_ = (int)(sizeof want_ / sizeof want_[0]);                                        \
        if (errs_.count != n_)                                                                 \
            cfg_test_print_errors(&errs_);                                                     \
        assert_int_equal(rc_, -1);                                                             \
        assert_int_equal(errs_.count, n_);                                                     \
        for (int i_ = 0; i_ < n_; i_++)                                                        \
            assert_string_equal(errs_.msgs[i_], want_[i_]);                                    \
        cfg_test_done(&cfg_, &errs_);                                                          \
    } while (0)

/* Asserts that loading `text` succeeds; leaves the result in *cfg (caller frees). */
static inline void cfg_test_load_ok(const char *text, Config *cfg)
{
    CfgErrors errs;
    int rc = cfg_test_load(text, cfg, &errs);
    if (rc != 0)
        cfg_test_print_errors(&errs);
    assert_int_equal(rc, 0);
    assert_int_equal(errs.count, 0);
    cfg_errors_free(&errs);
}

/* ---- scratch files ---- */

typedef struct CfgScratch {
    char dir[64];
} CfgScratch;

static inline void cfg_scratch_make(CfgScratch *s)
{
    strcpy(s->dir, "/tmp/weaver-cfg-test-XXXXXX");
    assert_non_null(mkdtemp(s->dir));
}

/* Writes <dir>/<name> with `content` and returns its path in a static-free buffer `out`. */
static inline void cfg_scratch_file(const CfgScratch *s, const char *name, const char *content,
                                    char *out, size_t len)
{
    snprintf(out, len, "%s/%s", s->dir, name);
    FILE *f = fopen(out, "w");
    assert_non_null(f);
    fputs(content, f);
    assert_int_equal(fclose(f), 0);
}

/* The same with `n` raw bytes (NULs included), and the file's mode set to `mode`. */
static inline void cfg_scratch_bytes(const CfgScratch *s, const char *name, const void *bytes,
                                     size_t n, mode_t mode, char *out, size_t len)
{
    snprintf(out, len, "%s/%s", s->dir, name);
    FILE *f = fopen(out, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(bytes, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
    assert_int_equal(chmod(out, mode), 0);
}

static inline void cfg_scratch_subdir(const CfgScratch *s, const char *name, char *out, size_t len)
{
    snprintf(out, len, "%s/%s", s->dir, name);
    assert_int_equal(mkdir(out, 0700), 0);
}

static inline int cfg_scratch_rm_one(const char *path, const struct stat *st, int flag,
                                     struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static inline void cfg_scratch_remove(CfgScratch *s)
{
    if (s->dir[0])
        assert_int_equal(nftw(s->dir, cfg_scratch_rm_one, 16, FTW_DEPTH | FTW_PHYS), 0);
    s->dir[0] = '\0';
}

/* Runs the tests from the source tree, where fixture and model paths are relative to (ctest
 * already starts there; a direct run from the build directory may not). Call from main(). */
static inline int cfg_test_enter_source_dir(void)
{
    const char *src = getenv("WEAVER_SOURCE_DIR");
    if (chdir(src && *src ? src : ".") != 0) {
        perror("chdir $WEAVER_SOURCE_DIR");
        return -1;
    }
    return 0;
}

#endif
