/* test_cfg_rules.c: the rules that look past one value: required-when keys, model and secret
 * paths on disk, devices and backends this build may lack, and the checks between two keys.
 * Each test asserts the exact message an operator sees. Paths live in a scratch directory that
 * each test removes; this file must not depend on the real model files (test_cfg_ops.c does). */
#include <sys/wait.h>

#include "tests/unit/test_cfg_util.h"

#define DECODER_OFF "decoder = { enabled = false; };\n"
#define EMBEDDER_REMOTE "embedder = { backend = \"remote\"; url = \"http://127.0.0.1:8080\"; };\n"

static int scratch_setup(void **state)
{
    CfgScratch *s = calloc(1, sizeof *s);
    if (!s)
        return -1;
    cfg_scratch_make(s);
    *state = s;
    return 0;
}

static int scratch_teardown(void **state)
{
    cfg_scratch_remove(*state);
    free(*state);
    return 0;
}

#define TEXT_MAX (4 * PATH_MAX)

/* Loads `fmt` with its %s (or every %1$s) replaced by `path`. */
static int load_with_path(const char *fmt, const char *path, Config *c, CfgErrors *errs)
{
    char text[TEXT_MAX];
    snprintf(text, sizeof text, fmt, path);
    return cfg_test_load(text, c, errs);
}

#define assert_path_errors(fmt, path, ...)                                                     \
    do {                                                                                       \
        char text_[TEXT_MAX];                                                                  \
        snprintf(text_, sizeof text_, (fmt), (path));                                          \
        assert_cfg_errors(text_, __VA_ARGS__);                                                 \
    } while (0)

/* ---- embedder.snapshot (native) ---- */

static void test_native_embedder_with_empty_snapshot_says_snapshot_is_required(void **state)
{
    (void)state;
    assert_cfg_errors(DECODER_OFF
                      "embedder = {\n"
                      "  backend = \"native\";\n"
                      "  snapshot = \"\";\n"
                      "};\n",
                      "t.conf:4: embedder.snapshot: embedder.snapshot is required when "
                      "embedder.backend = \"native\"");
}

static void test_native_embedder_snapshot_that_does_not_exist_is_named(void **state)
{
    CfgScratch *s = *state;
    char path[PATH_MAX], msg[PATH_MAX + 128];
    snprintf(path, sizeof path, "%s/no-such-model", s->dir);
    snprintf(msg, sizeof msg, "t.conf:3: embedder.snapshot: \"%s\" does not exist", path);
    assert_path_errors(DECODER_OFF "embedder = {\n  snapshot = \"%s\";\n};\n", path, msg);
}

static void test_relative_snapshot_is_resolved_from_the_current_directory(void **state)
{
    CfgScratch *s = *state;
    char cwd[PATH_MAX], msg[2 * PATH_MAX];
    assert_non_null(getcwd(cwd, sizeof cwd));
    assert_int_equal(chdir(s->dir), 0);
    snprintf(msg, sizeof msg, "t.conf:2: embedder.snapshot: \"models/all-MiniLM-L6-v2\" does not "
             "exist (relative paths are resolved from the current directory, %s)", s->dir);
    /* Not set in the file: the default is checked and the message points at the group. */
    assert_cfg_errors(DECODER_OFF "embedder = {\n  device = \"cpu\";\n};\n", msg);

    char dir[PATH_MAX];
    cfg_scratch_subdir(s, "models", dir, sizeof dir);
    cfg_scratch_subdir(s, "models/all-MiniLM-L6-v2", dir, sizeof dir);
    Config c;
    cfg_test_load_ok(DECODER_OFF "embedder = {\n  device = \"cpu\";\n};\n", &c);
    assert_string_equal(c.embedder.snapshot, "models/all-MiniLM-L6-v2");
    cfg_free(&c);
    assert_int_equal(chdir(cwd), 0);
}

static void test_native_embedder_snapshot_that_is_a_file_is_not_a_directory(void **state)
{
    CfgScratch *s = *state;
    char path[PATH_MAX], msg[PATH_MAX + 128];
    cfg_scratch_file(s, "model.safetensors", "x", path, sizeof path);
    snprintf(msg, sizeof msg, "t.conf:3: embedder.snapshot: \"%s\" is not a directory", path);
    assert_path_errors(DECODER_OFF "embedder = {\n  snapshot = \"%s\";\n};\n", path, msg);
}

static void test_native_embedder_with_an_existing_snapshot_directory_loads(void **state)
{
    CfgScratch *s = *state;
    Config c;
    CfgErrors errs;
    assert_int_equal(load_with_path(DECODER_OFF "embedder = { snapshot = \"%s\"; };\n", s->dir,
                                    &c, &errs), 0);
    assert_string_equal(c.embedder.backend, "native");
    assert_string_equal(c.embedder.snapshot, s->dir);
    cfg_test_done(&c, &errs);
}

static void test_remote_embedder_ignores_the_snapshot(void **state)
{
    (void)state;
    Config c;
    cfg_test_load_ok(DECODER_OFF "embedder = { backend = \"remote\"; url = \"https://e\"; "
                     "snapshot = \"/no/such/dir\"; };\n", &c);
    cfg_free(&c);
}

/* ---- embedder.url (remote) ---- */

static void test_remote_embedder_without_url_points_at_the_embedder_group(void **state)
{
    (void)state;
    assert_cfg_errors(DECODER_OFF
                      "embedder = {\n"
                      "  backend = \"remote\";\n"
                      "};\n",
                      "t.conf:2: embedder.url: embedder.url is required when "
                      "embedder.backend = \"remote\"");
}

static void test_embedder_url_must_be_http_or_https(void **state)
{
    (void)state;
    assert_cfg_errors(DECODER_OFF "embedder = {\n  backend = \"remote\";\n"
                      "  url = \"ftp://embed:21\";\n};\n",
                      "t.conf:4: embedder.url: \"ftp://embed:21\" is not a URL starting with "
                      "http:// or https://");
    assert_cfg_errors(DECODER_OFF "embedder = { backend = \"remote\"; url = \"http://\"; };\n",
                      "t.conf:2: embedder.url: \"http://\" is not a URL starting with http:// "
                      "or https://");
    Config c;
    cfg_test_load_ok(DECODER_OFF "embedder = { backend = \"remote\"; url = \"https://e:8443/v1\"; };\n",
                     &c);
    assert_string_equal(c.embedder.url, "https://e:8443/v1");
    cfg_free(&c);
}

/* ---- devices ---- */

static void test_device_must_be_cpu_or_cuda_n(void **state)
{
    (void)state;
    assert_cfg_errors(EMBEDDER_REMOTE
                      "decoder = {\n"
                      "  enabled = false;\n"
                      "  device = \"gpu\";\n"
                      "};\n",
                      "t.conf:4: decoder.device: \"gpu\" is not a device; expected \"cpu\" or "
                      "\"cuda:N\" (N a non-negative integer)");
    const char *bad[] = { "cuda", "cuda:", "cuda:-1", "cuda:1x", "cuda: 1", "CPU", "" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char text[256], msg[256];
        snprintf(text, sizeof text, DECODER_OFF "embedder = { backend = \"remote\"; "
                 "url = \"http://e\"; device = \"%s\"; };\n", bad[i]);
        snprintf(msg, sizeof msg, "t.conf:2: embedder.device: \"%s\" is not a device; expected "
                 "\"cpu\" or \"cuda:N\" (N a non-negative integer)", bad[i]);
        assert_cfg_errors(text, msg);
    }
}

static void test_cuda_device_needs_a_cuda_build(void **state)
{
    (void)state;
    const char *embed = DECODER_OFF
                        "embedder = {\n  backend = \"remote\";\n  url = \"http://e\";\n"
                        "  device = \"cuda:0\";\n};\n";
    const char *decode = EMBEDDER_REMOTE "decoder = {\n  enabled = false;\n  device = \"cuda:1\";\n};\n";
    if (cfg_build_has_cuda()) {
        Config c;
        cfg_test_load_ok(embed, &c);
        assert_string_equal(c.embedder.device, "cuda:0");
        cfg_free(&c);
        cfg_test_load_ok(decode, &c);
        assert_string_equal(c.decoder.device, "cuda:1");
        cfg_free(&c);
    } else {
        assert_cfg_errors(embed, "t.conf:5: embedder.device: \"cuda:0\": this build has no CUDA "
                          "support; rebuild with -DWEAVER_CUDA=ON");
        assert_cfg_errors(decode, "t.conf:4: decoder.device: \"cuda:1\": this build has no CUDA "
                          "support; rebuild with -DWEAVER_CUDA=ON");
    }
}

static void test_parse_device_reads_cpu_and_cuda_index(void **state)
{
    (void)state;
    int idx = 99;
    assert_true(cfg_parse_device("cpu", &idx));
    assert_int_equal(idx, -1);
    assert_true(cfg_parse_device("cuda:0", &idx));
    assert_int_equal(idx, 0);
    assert_true(cfg_parse_device("cuda:12", &idx));
    assert_int_equal(idx, 12);
    assert_false(cfg_parse_device("cuda:99999999999", &idx));
    assert_false(cfg_parse_device("cuda:+1", &idx));
    assert_false(cfg_parse_device("cuda", &idx));
}

/* ---- metrics.listen ---- */

static void test_metrics_listen_takes_a_literal_address_and_port(void **state)
{
    (void)state;
    Config c;
    cfg_test_load_ok(CFG_TEST_BASE "metrics = { listen = \"127.0.0.1:9464\"; };\n", &c);
    assert_string_equal(c.metrics.listen, "127.0.0.1:9464");
    assert_int_equal(c.metrics.sample_interval_ms, 1000);
    cfg_free(&c);
    cfg_test_load_ok(CFG_TEST_BASE "metrics = { listen = \"[::1]:1\"; };\n", &c);
    cfg_free(&c);
    cfg_test_load_ok(CFG_TEST_BASE, &c); /* off by default */
    assert_string_equal(c.metrics.listen, "");
    cfg_free(&c);
}

static void test_metrics_listen_that_is_not_an_address_is_an_error(void **state)
{
    (void)state;
    const char *bad[] = { "9464", ":9464", "localhost:9464", "127.0.0.1", "127.0.0.1:", "127.0.0.1:0",
                          "127.0.0.1:65536", "127.0.0.1:94x4", "::1:9464", "[::1]", "[127.0.0.1]:9464",
                          "256.0.0.1:80", " 127.0.0.1:80" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char text[256], msg[320];
        snprintf(text, sizeof text, CFG_TEST_BASE "metrics = { listen = \"%s\"; };\n", bad[i]);
        snprintf(msg, sizeof msg, "t.conf:3: metrics.listen: \"%s\" is not a listen address; expected "
                 "\"IPv4:port\" or \"[IPv6]:port\" with a literal address and a port in [1, 65535], "
                 "e.g. \"127.0.0.1:9464\"", bad[i]);
        assert_cfg_errors(text, msg);
    }
}

static void test_parse_listen_splits_address_and_port(void **state)
{
    (void)state;
    char host[64];
    int port = 0;
    bool v6 = true;
    assert_true(cfg_parse_listen("0.0.0.0:9464", host, sizeof host, &port, &v6));
    assert_string_equal(host, "0.0.0.0");
    assert_int_equal(port, 9464);
    assert_false(v6);
    assert_true(cfg_parse_listen("[::]:65535", host, sizeof host, &port, &v6));
    assert_string_equal(host, "::");
    assert_int_equal(port, 65535);
    assert_true(v6);
    assert_false(cfg_parse_listen("example.com:80", host, sizeof host, &port, &v6));
}

static void test_log_format_is_text_or_json(void **state)
{
    (void)state;
    Config c;
    cfg_test_load_ok(CFG_TEST_BASE "log = { format = \"json\"; };\n", &c);
    assert_string_equal(c.log.format, "json");
    cfg_free(&c);
    cfg_test_load_ok(CFG_TEST_BASE, &c);
    assert_string_equal(c.log.format, "text");
    cfg_free(&c);
    Config bad;
    CfgErrors errs;
    assert_int_equal(cfg_test_load(CFG_TEST_BASE "log = { format = \"logfmt\"; };\n", &bad, &errs), -1);
    assert_int_equal(errs.count, 1);
    assert_non_null(strstr(errs.msgs[0], "log.format"));
    cfg_test_done(&bad, &errs);
}

/* ---- build features ---- */

static void test_build_features_match_the_compile_definitions(void **state)
{
    (void)state;
#ifdef WEAVER_HAVE_CUDA
    assert_true(cfg_build_has_cuda());
#else
    assert_false(cfg_build_has_cuda());
#endif
#ifdef WEAVER_TEST_BACKENDS
    assert_true(cfg_build_has_test_backends());
#else
    assert_false(cfg_build_has_test_backends());
#endif
}

static void test_test_backends_need_a_test_backends_build(void **state)
{
    (void)state;
    const char *text = "embedder = {\n  backend = \"test-hash\";\n  dim = 8;\n};\n"
                       "decoder = {\n  backend = \"test-echo\";\n};\n";
    if (cfg_build_has_test_backends()) {
        Config c;
        cfg_test_load_ok(text, &c);
        assert_string_equal(c.embedder.backend, "test-hash");
        assert_int_equal(c.embedder.dim, 8);
        assert_string_equal(c.decoder.backend, "test-echo");
        assert_true(c.decoder.enabled);
        cfg_free(&c);
    } else {
        assert_cfg_errors(text,
                          "t.conf:2: embedder.backend: \"test-hash\" is a test-only backend and "
                          "this build has none; rebuild with -DWEAVER_TEST_BACKENDS=ON",
                          "t.conf:6: decoder.backend: \"test-echo\" is a test-only backend and "
                          "this build has none; rebuild with -DWEAVER_TEST_BACKENDS=ON");
    }
}

/* ---- decoder.model ---- */

static void test_native_decoder_model_that_does_not_exist_is_named(void **state)
{
    CfgScratch *s = *state;
    char path[PATH_MAX], msg[PATH_MAX + 128];
    snprintf(path, sizeof path, "%s/SmolLM2.gguf", s->dir);
    snprintf(msg, sizeof msg, "t.conf:3: decoder.model: \"%s\" does not exist", path);
    assert_path_errors(EMBEDDER_REMOTE "decoder = {\n  model = \"%s\";\n};\n", path, msg);
}

static void test_native_decoder_model_must_be_a_regular_file(void **state)
{
    CfgScratch *s = *state;
    char msg[PATH_MAX + 128];
    snprintf(msg, sizeof msg, "t.conf:3: decoder.model: \"%s\" is not a regular file", s->dir);
    assert_path_errors(EMBEDDER_REMOTE "decoder = {\n  model = \"%s\";\n};\n", s->dir, msg);
}

static void test_native_decoder_with_empty_model_says_model_is_required(void **state)
{
    (void)state;
    assert_cfg_errors(EMBEDDER_REMOTE "decoder = {\n  enabled = true;\n  model = \"\";\n};\n",
                      "t.conf:4: decoder.model: decoder.model is required when "
                      "decoder.enabled = true and decoder.backend = \"native\"");
}

static void test_disabled_decoder_does_not_need_a_model(void **state)
{
    (void)state;
    Config c;
    cfg_test_load_ok(EMBEDDER_REMOTE "decoder = { enabled = false; model = \"/no/such.gguf\"; };\n",
                     &c);
    assert_false(c.decoder.enabled);
    cfg_free(&c);
}

static void test_native_decoder_with_an_existing_model_file_loads(void **state)
{
    CfgScratch *s = *state;
    char path[PATH_MAX];
    cfg_scratch_file(s, "m.gguf", "GGUF", path, sizeof path);
    Config c;
    CfgErrors errs;
    assert_int_equal(load_with_path(EMBEDDER_REMOTE "decoder = { model = \"%s\"; };\n", path, &c,
                                    &errs), 0);
    assert_true(c.decoder.enabled);
    assert_string_equal(c.decoder.model, path);
    cfg_test_done(&c, &errs);
}

/* ---- secret files ---- */

static void test_token_and_password_files_must_exist_when_set(void **state)
{
    CfgScratch *s = *state;
    char path[PATH_MAX], m1[PATH_MAX + 128], m2[PATH_MAX + 128];
    snprintf(path, sizeof path, "%s/token", s->dir);
    snprintf(m1, sizeof m1, "t.conf:2: embedder.token_file: \"%s\" does not exist", path);
    snprintf(m2, sizeof m2, "t.conf:3: redis.password_file: \"%s\" does not exist", path);
    assert_path_errors(DECODER_OFF
                       "embedder = { backend = \"remote\"; url = \"http://e\"; token_file = \"%1$s\"; };\n"
                       "redis = { password_file = \"%1$s\"; };\n",
                       path, m1, m2);
}

static void test_token_and_password_files_must_be_regular_files(void **state)
{
    CfgScratch *s = *state;
    char m1[PATH_MAX + 128], m2[PATH_MAX + 128];
    snprintf(m1, sizeof m1, "t.conf:2: embedder.token_file: \"%s\" is not a regular file", s->dir);
    snprintf(m2, sizeof m2, "t.conf:3: redis.password_file: \"%s\" is not a regular file", s->dir);
    assert_path_errors(DECODER_OFF
                       "embedder = { backend = \"remote\"; url = \"http://e\"; token_file = \"%1$s\"; };\n"
                       "redis = { password_file = \"%1$s\"; };\n",
                       s->dir, m1, m2);
}

static void test_unreadable_token_file_is_reported(void **state)
{
    CfgScratch *s = *state;
    char path[PATH_MAX], msg[PATH_MAX + 128];
    cfg_scratch_file(s, "token", "secret", path, sizeof path);
    assert_int_equal(chmod(path, 0), 0);
    snprintf(msg, sizeof msg, "t.conf:2: embedder.token_file: \"%s\" is not readable: "
             "Permission denied", path);
    if (geteuid() != 0) {
        assert_path_errors(DECODER_OFF "embedder = { backend = \"remote\"; url = \"http://e\"; "
                           "token_file = \"%s\"; };\n", path, msg);
        return;
    }
    /* Root reads any file, so check as an unprivileged user in a child process. */
    assert_int_equal(chmod(s->dir, 0755), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        if (setgid(65534) != 0 || setuid(65534) != 0)
            _exit(2);
        Config c;
        CfgErrors errs;
        int rc = load_with_path(DECODER_OFF "embedder = { backend = \"remote\"; url = \"http://e\"; "
                                "token_file = \"%s\"; };\n", path, &c, &errs);
        bool ok = rc == -1 && errs.count == 1 && strcmp(errs.msgs[0], msg) == 0;
        if (!ok)
            fprintf(stderr, "got %d errors, first: %s\n", errs.count, errs.count ? errs.msgs[0] : "-");
        _exit(ok ? 0 : 1);
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
}

static void test_readable_token_and_password_files_load(void **state)
{
    CfgScratch *s = *state;
    char path[PATH_MAX];
    cfg_scratch_file(s, "token", "secret\n", path, sizeof path);
    Config c;
    CfgErrors errs;
    assert_int_equal(load_with_path(DECODER_OFF "embedder = { backend = \"remote\"; url = "
                                    "\"http://e\"; token_file = \"%1$s\"; };\n"
                                    "redis = { password_file = \"%1$s\"; };\n",
                                    path, &c, &errs), 0);
    assert_string_equal(c.embedder.token_file, path);
    assert_string_equal(c.redis.password_file, path);
    cfg_test_done(&c, &errs);
}

/* ---- two keys compared ---- */

static void test_lookahead_smaller_than_max_texts_is_an_error(void **state)
{
    (void)state;
    assert_cfg_errors(CFG_TEST_BASE "batch = {\n  max_texts = 64;\n  lookahead = 32;\n};\n",
                      "t.conf:5: batch.lookahead: 32 must be at least batch.max_texts (64)");
    /* lookahead left at its default: blame the line that made it too small */
    assert_cfg_errors(CFG_TEST_BASE "batch = {\n  max_texts = 2000;\n};\n",
                      "t.conf:4: batch.lookahead: 1024 must be at least batch.max_texts (2000)");
    Config c;
    cfg_test_load_ok(CFG_TEST_BASE "batch = { max_texts = 64; lookahead = 64; };\n", &c);
    assert_int_equal(c.batch.lookahead, 64);
    cfg_free(&c);
}

static void test_visibility_timeout_must_exceed_block_ms(void **state)
{
    (void)state;
    assert_cfg_errors(CFG_TEST_BASE "queue = {\n  block_ms = 5000;\n  visibility_timeout_ms = 5000;\n};\n",
                      "t.conf:5: queue.visibility_timeout_ms: 5000 must be greater than "
                      "queue.block_ms (5000)");
    Config c;
    cfg_test_load_ok(CFG_TEST_BASE "queue = { block_ms = 5000; visibility_timeout_ms = 5001; };\n",
                     &c);
    cfg_free(&c);
}

static void test_rules_skip_keys_that_are_already_invalid(void **state)
{
    (void)state;
    /* One mistake, one message: no snapshot, lookahead or visibility complaints on top. */
    assert_cfg_errors(DECODER_OFF
                      "embedder = { backend = \"onnx\"; snapshot = \"\"; };\n"
                      "batch = { max_texts = 0; lookahead = 1; };\n"
                      "queue = { block_ms = 0; visibility_timeout_ms = 100; };\n",
                      "t.conf:2: embedder.backend: \"onnx\" is not one of \"native\", \"remote\", "
                      "\"test-hash\"",
                      "t.conf:3: batch.max_texts: 0 is out of range (allowed >= 1)",
                      "t.conf:4: queue.block_ms: 0 is out of range (allowed 1..60000)");
}

static void test_every_broken_rule_is_reported_together(void **state)
{
    CfgScratch *s = *state;
    char text[TEXT_MAX], m1[PATH_MAX + 128];
    snprintf(text, sizeof text,
             "embedder = {\n  snapshot = \"%s/none\";\n};\n"
             "decoder = {\n  model = \"\";\n};\n"
             "batch = {\n  lookahead = 1;\n};\n"
             "queue = {\n  visibility_timeout_ms = 100;\n  block_ms = 200;\n};\n", s->dir);
    snprintf(m1, sizeof m1, "t.conf:2: embedder.snapshot: \"%s/none\" does not exist", s->dir);
    assert_cfg_errors(text, m1,
                      "t.conf:5: decoder.model: decoder.model is required when decoder.enabled = "
                      "true and decoder.backend = \"native\"",
                      "t.conf:8: batch.lookahead: 1 must be at least batch.max_texts (256)",
                      "t.conf:11: queue.visibility_timeout_ms: 100 must be greater than "
                      "queue.block_ms (200)");
}

int main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, scratch_setup, scratch_teardown)
    const struct CMUnitTest tests[] = {
        T(test_native_embedder_with_empty_snapshot_says_snapshot_is_required),
        T(test_native_embedder_snapshot_that_does_not_exist_is_named),
        T(test_relative_snapshot_is_resolved_from_the_current_directory),
        T(test_native_embedder_snapshot_that_is_a_file_is_not_a_directory),
        T(test_native_embedder_with_an_existing_snapshot_directory_loads),
        T(test_remote_embedder_ignores_the_snapshot),
        T(test_remote_embedder_without_url_points_at_the_embedder_group),
        T(test_embedder_url_must_be_http_or_https),
        T(test_device_must_be_cpu_or_cuda_n),
        T(test_cuda_device_needs_a_cuda_build),
        T(test_parse_device_reads_cpu_and_cuda_index),
        T(test_metrics_listen_takes_a_literal_address_and_port),
        T(test_metrics_listen_that_is_not_an_address_is_an_error),
        T(test_parse_listen_splits_address_and_port),
        T(test_log_format_is_text_or_json),
        T(test_build_features_match_the_compile_definitions),
        T(test_test_backends_need_a_test_backends_build),
        T(test_native_decoder_model_that_does_not_exist_is_named),
        T(test_native_decoder_model_must_be_a_regular_file),
        T(test_native_decoder_with_empty_model_says_model_is_required),
        T(test_disabled_decoder_does_not_need_a_model),
        T(test_native_decoder_with_an_existing_model_file_loads),
        T(test_token_and_password_files_must_exist_when_set),
        T(test_token_and_password_files_must_be_regular_files),
        T(test_unreadable_token_file_is_reported),
        T(test_readable_token_and_password_files_load),
        T(test_lookahead_smaller_than_max_texts_is_an_error),
        T(test_visibility_timeout_must_exceed_block_ms),
        T(test_rules_skip_keys_that_are_already_invalid),
        T(test_every_broken_rule_is_reported_together),
    };
#undef T
    if (cfg_test_enter_source_dir() != 0)
        return 1;
    return cmocka_run_group_tests(tests, NULL, NULL);
}
