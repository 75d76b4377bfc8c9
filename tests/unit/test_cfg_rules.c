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

/* Fills `dir` with the files the native embedder loads (their content does not matter to the
 * config check): config.json, model.safetensors and `tokenizer` (tokenizer.json or vocab.txt). */
static void make_snapshot_files(const char *dir, const char *tokenizer)
{
    const char *names[] = { "config.json", "model.safetensors", tokenizer };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        char path[PATH_MAX];
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        FILE *f = fopen(path, "w");
        assert_non_null(f);
        fputs("{}", f);
        assert_int_equal(fclose(f), 0);
    }
}

/* A GGUF file header: the magic, then `version` as a little-endian uint32. */
static void make_gguf(const CfgScratch *s, const char *name, unsigned version, char *out, size_t len)
{
    unsigned char head[8] = { 'G', 'G', 'U', 'F', (unsigned char)version,
                              (unsigned char)(version >> 8), 0, 0 };
    cfg_scratch_bytes(s, name, head, sizeof head, 0600, out, len);
}

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
    make_snapshot_files(dir, "tokenizer.json");
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

static void test_native_embedder_snapshot_that_is_an_empty_directory_names_every_missing_file(
    void **state)
{
    CfgScratch *s = *state;
    char msg[PATH_MAX + 256];
    snprintf(msg, sizeof msg, "t.conf:3: embedder.snapshot: \"%s\" is not a snapshot the native "
             "embedder can load: missing config.json, model.safetensors, tokenizer.json (or "
             "vocab.txt)", s->dir);
    assert_path_errors(DECODER_OFF "embedder = {\n  snapshot = \"%s\";\n};\n", s->dir, msg);
}

static void test_native_embedder_snapshot_without_weights_names_model_safetensors(void **state)
{
    CfgScratch *s = *state;
    char path[PATH_MAX], msg[PATH_MAX + 256];
    make_snapshot_files(s->dir, "vocab.txt");
    snprintf(path, sizeof path, "%s/model.safetensors", s->dir);
    assert_int_equal(remove(path), 0);
    snprintf(msg, sizeof msg, "t.conf:2: embedder.snapshot: \"%s/\" is not a snapshot the native "
             "embedder can load: missing model.safetensors", s->dir);
    /* A trailing slash is fine and not doubled in the message's paths. */
    assert_path_errors(DECODER_OFF "embedder = { snapshot = \"%s/\"; };\n", s->dir, msg);
}

static void test_native_embedder_snapshot_file_that_is_not_a_regular_file_is_named(void **state)
{
    CfgScratch *s = *state;
    char dir[PATH_MAX], msg[PATH_MAX + 256];
    make_snapshot_files(s->dir, "tokenizer.json");
    char weights[PATH_MAX];
    snprintf(weights, sizeof weights, "%s/model.safetensors", s->dir);
    assert_int_equal(remove(weights), 0);
    cfg_scratch_subdir(s, "model.safetensors", dir, sizeof dir);
    snprintf(msg, sizeof msg, "t.conf:2: embedder.snapshot: \"%s\" is not a regular file", weights);
    assert_path_errors(DECODER_OFF "embedder = { snapshot = \"%s\"; };\n", s->dir, msg);
}

static void test_native_embedder_snapshot_with_vocab_txt_instead_of_tokenizer_json_loads(void **state)
{
    CfgScratch *s = *state;
    make_snapshot_files(s->dir, "vocab.txt");
    Config c;
    CfgErrors errs;
    assert_int_equal(load_with_path(DECODER_OFF "embedder = { snapshot = \"%s\"; };\n", s->dir,
                                    &c, &errs), 0);
    cfg_test_done(&c, &errs);
}

static void test_native_embedder_with_an_existing_snapshot_directory_loads(void **state)
{
    CfgScratch *s = *state;
    make_snapshot_files(s->dir, "tokenizer.json");
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

/* embedder.precision is one key for both devices; a mode the device does not run is refused at
 * its line, a mode it runs (and auto, the default) loads. */
static void test_precision_must_be_one_the_device_runs(void **state)
{
    CfgScratch *s = *state;
    char text[TEXT_MAX];
    make_snapshot_files(s->dir, "tokenizer.json");
    Config c;
    const char *ok[] = { "auto", "fp32", "bf16", "int8" };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        snprintf(text, sizeof text, DECODER_OFF "embedder = {\n  snapshot = \"%s\";\n  precision = \"%s\";\n};\n",
                 s->dir, ok[i]);
        cfg_test_load_ok(text, &c);
        assert_string_equal(c.embedder.precision, ok[i]);
        cfg_free(&c);
    }
    snprintf(text, sizeof text, DECODER_OFF "embedder = {\n  snapshot = \"%s\";\n  precision = \"fp16\";\n};\n", s->dir);
    assert_cfg_errors(text, "t.conf:4: embedder.precision: \"fp16\" does not run on embedder.device \"cpu\"; "
                      "the cpu runs fp32, bf16 or int8");
    snprintf(text, sizeof text, DECODER_OFF "embedder = {\n  snapshot = \"%s\";\n  precision = \"int4\";\n};\n", s->dir);
    assert_cfg_errors(text, "t.conf:4: embedder.precision: \"int4\" is not one of \"auto\", \"fp32\", \"tf32\", "
                      "\"fp16\", \"bf16\", \"int8\"");
    cfg_test_load_ok(DECODER_OFF "embedder = {\n  backend = \"remote\";\n  url = \"http://e\";\n  precision = \"fp16\";\n};\n", &c);
    cfg_free(&c); /* only the native backend has a precision */
    if (cfg_build_has_cuda_embedder()) {
        snprintf(text, sizeof text, DECODER_OFF "embedder = {\n  snapshot = \"%s\";\n  device = \"cuda:0\";\n"
                 "  precision = \"int8\";\n};\n", s->dir);
        assert_cfg_errors(text, "t.conf:5: embedder.precision: \"int8\" does not run on embedder.device \"cuda:0\"; "
                          "a cuda device runs fp32, tf32, fp16 or bf16");
    }
}

/* embedder.query_format: each hole exactly once, or the instruction or the text would be
 * embedded literally (or twice). */
static void test_query_format_needs_each_hole_once(void **state)
{
    (void)state;
    Config c;
    cfg_test_load_ok(DECODER_OFF "embedder = {\n  backend = \"remote\";\n  url = \"http://e\";\n"
                     "  query_format = \"Instruct: {instruction}\\nQuery:{text}\";\n};\n", &c);
    assert_string_equal(c.embedder.query_format, "Instruct: {instruction}\nQuery:{text}");
    cfg_free(&c);
    cfg_test_load_ok(DECODER_OFF "embedder = {\n  backend = \"remote\";\n  url = \"http://e\";\n};\n", &c);
    assert_string_equal(c.embedder.query_format, "Instruct: {instruction}\nQuery: {text}");
    cfg_free(&c);
    assert_cfg_errors(DECODER_OFF "embedder = {\n  backend = \"remote\";\n  url = \"http://e\";\n"
                      "  query_format = \"Instruct: {instruction}\\nQuery: {txt}\";\n};\n",
                      "t.conf:5: embedder.query_format: must hold {instruction} and {text} once each; it holds "
                      "{instruction} 1 and {text} 0 times");
    assert_cfg_errors(DECODER_OFF "embedder = {\n  backend = \"remote\";\n  url = \"http://e\";\n"
                      "  query_format = \"{instruction} {instruction} {text}\";\n};\n",
                      "t.conf:5: embedder.query_format: must hold {instruction} and {text} once each; it holds "
                      "{instruction} 2 and {text} 1 times");
}

/* cuda:N for a native backend: accepted when the build has that backend's CUDA code, refused up
 * front otherwise (instead of after connecting to Redis or writing the cohort pin). Without CUDA
 * the device itself is refused, as above. */
static void test_cuda_device_for_a_native_backend_without_cuda_code_is_an_error(void **state)
{
    CfgScratch *s = *state;
    char model[PATH_MAX], embed[TEXT_MAX], decode[TEXT_MAX];
    make_snapshot_files(s->dir, "tokenizer.json");
    make_gguf(s, "m.gguf", 3, model, sizeof model);
    snprintf(embed, sizeof embed, DECODER_OFF "embedder = {\n  snapshot = \"%s\";\n"
             "  device = \"cuda:0\";\n};\n", s->dir);
    snprintf(decode, sizeof decode, EMBEDDER_REMOTE "decoder = {\n  model = \"%s\";\n"
             "  device = \"cuda:1\";\n};\n", model);
    if (!cfg_build_has_cuda()) {
        assert_cfg_errors(embed, "t.conf:4: embedder.device: \"cuda:0\": this build has no CUDA "
                          "support; rebuild with -DWEAVER_CUDA=ON");
        assert_cfg_errors(decode, "t.conf:4: decoder.device: \"cuda:1\": this build has no CUDA "
                          "support; rebuild with -DWEAVER_CUDA=ON");
        return;
    }
    Config c;
    if (cfg_build_has_cuda_embedder()) {
        cfg_test_load_ok(embed, &c);
        cfg_free(&c);
    } else {
        assert_cfg_errors(embed, "t.conf:4: embedder.device: \"cuda:0\": the native embedder has "
                          "no CUDA backend yet in this build; use \"cpu\"");
    }
    if (cfg_build_has_cuda_decoder()) {
        cfg_test_load_ok(decode, &c);
        cfg_free(&c);
    } else {
        assert_cfg_errors(decode, "t.conf:4: decoder.device: \"cuda:1\": the native decoder has no "
                          "CUDA backend yet in this build; use \"cpu\"");
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
    /* The native embedder and decoder run on CUDA exactly when the CUDA device layer is built. */
#ifdef WEAVER_HAVE_CUDA
    assert_true(cfg_build_has_cuda_embedder());
    assert_true(cfg_build_has_cuda_decoder());
#else
    assert_false(cfg_build_has_cuda_embedder());
    assert_false(cfg_build_has_cuda_decoder());
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

static void test_native_decoder_reads_gguf_versions_2_and_3(void **state)
{
    CfgScratch *s = *state;
    for (unsigned version = 2; version <= 3; version++) {
        char path[PATH_MAX];
        make_gguf(s, version == 2 ? "v2.gguf" : "v3.gguf", version, path, sizeof path);
        Config c;
        CfgErrors errs;
        assert_int_equal(load_with_path(EMBEDDER_REMOTE "decoder = { model = \"%s\"; };\n", path,
                                        &c, &errs), 0);
        assert_true(c.decoder.enabled);
        assert_string_equal(c.decoder.model, path);
        cfg_test_done(&c, &errs);
    }
}

static void test_native_decoder_model_that_is_not_gguf_is_refused(void **state)
{
    CfgScratch *s = *state;
    const char *contents[] = { "{\"model_type\": \"bert\"}", "" }; /* another format; empty */
    for (size_t i = 0; i < sizeof contents / sizeof contents[0]; i++) {
        char path[PATH_MAX], msg[PATH_MAX + 128];
        cfg_scratch_file(s, "model.bin", contents[i], path, sizeof path);
        snprintf(msg, sizeof msg, "t.conf:3: decoder.model: \"%s\" is not a GGUF file (it does not "
                 "start with \"GGUF\")", path);
        assert_path_errors(EMBEDDER_REMOTE "decoder = {\n  model = \"%s\";\n};\n", path, msg);
    }
}

static void test_native_decoder_model_cut_inside_its_header_is_refused(void **state)
{
    CfgScratch *s = *state;
    char path[PATH_MAX], msg[PATH_MAX + 128];
    cfg_scratch_bytes(s, "cut.gguf", "GGUF\3", 5, 0600, path, sizeof path);
    snprintf(msg, sizeof msg, "t.conf:2: decoder.model: \"%s\" ends inside its GGUF header", path);
    assert_path_errors(EMBEDDER_REMOTE "decoder = { model = \"%s\"; };\n", path, msg);
}

static void test_native_decoder_model_of_another_gguf_version_is_refused(void **state)
{
    CfgScratch *s = *state;
    const unsigned versions[] = { 1, 4, 0x300 };
    for (size_t i = 0; i < sizeof versions / sizeof versions[0]; i++) {
        char path[PATH_MAX], msg[PATH_MAX + 128];
        make_gguf(s, "old.gguf", versions[i], path, sizeof path);
        snprintf(msg, sizeof msg, "t.conf:2: decoder.model: \"%s\" is GGUF version %u; the native "
                 "decoder reads versions 2 and 3", path, versions[i]);
        assert_path_errors(EMBEDDER_REMOTE "decoder = { model = \"%s\"; };\n", path, msg);
    }
}

static void test_only_the_native_decoder_needs_a_gguf_model(void **state)
{
    CfgScratch *s = *state;
    char path[PATH_MAX];
    cfg_scratch_file(s, "model.bin", "not gguf", path, sizeof path);
    Config c;
    CfgErrors errs;
    assert_int_equal(load_with_path(EMBEDDER_REMOTE "decoder = { enabled = false; model = \"%s\"; };\n",
                                    path, &c, &errs), 0);
    cfg_test_done(&c, &errs);
    if (!cfg_build_has_test_backends())
        return;
    assert_int_equal(load_with_path(EMBEDDER_REMOTE "decoder = { backend = \"test-echo\"; "
                                    "model = \"%s\"; };\n", path, &c, &errs), 0);
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

/* Sets `path` to `mode`, loads a config whose token and password files are `path`, and checks
 * that it loads with one warning per key naming `who` may read it (NULL = no warning). */
static void assert_secret_warnings(const char *path, mode_t mode, const char *who)
{
    assert_int_equal(chmod(path, mode), 0);
    Config c;
    CfgErrors errs;
    assert_int_equal(load_with_path(DECODER_OFF "embedder = { backend = \"remote\"; url = "
                                    "\"http://e\"; token_file = \"%1$s\"; };\n"
                                    "redis = { password_file = \"%1$s\"; };\n",
                                    path, &c, &errs), 0);
    assert_int_equal(errs.count, 0);
    if (!who) {
        assert_int_equal(errs.n_warnings, 0);
        cfg_test_done(&c, &errs);
        return;
    }
    char w1[PATH_MAX + 160], w2[PATH_MAX + 160];
    snprintf(w1, sizeof w1, "t.conf:2: embedder.token_file: warning: \"%s\" is readable by %s "
             "(mode %04o); chmod 600 it", path, who, (unsigned)mode);
    snprintf(w2, sizeof w2, "t.conf:3: redis.password_file: warning: \"%s\" is readable by %s "
             "(mode %04o); chmod 600 it", path, who, (unsigned)mode);
    assert_int_equal(errs.n_warnings, 2);
    assert_string_equal(errs.warnings[0], w1);
    assert_string_equal(errs.warnings[1], w2);
    cfg_test_done(&c, &errs);
}

static void test_secret_files_others_can_read_are_a_warning_not_an_error(void **state)
{
    CfgScratch *s = *state;
    char path[PATH_MAX];
    cfg_scratch_bytes(s, "secret", "hunter2\n", 8, 0600, path, sizeof path);
    assert_secret_warnings(path, 0644, "group and others");
    assert_secret_warnings(path, 0640, "group");
    assert_secret_warnings(path, 0604, "others");
    assert_secret_warnings(path, 0400, NULL);
    assert_secret_warnings(path, 0600, NULL);
}

static void test_warnings_survive_a_failed_load_and_print_before_the_errors(void **state)
{
    CfgScratch *s = *state;
    char path[PATH_MAX], text[TEXT_MAX], want[PATH_MAX + 256];
    cfg_scratch_bytes(s, "secret", "hunter2\n", 8, 0644, path, sizeof path);
    snprintf(text, sizeof text, CFG_TEST_BASE "redis = {\n  port = 0;\n  password_file = \"%s\";\n};\n",
             path);
    Config c;
    CfgErrors errs;
    assert_int_equal(cfg_test_load(text, &c, &errs), -1);
    assert_int_equal(errs.count, 1);
    assert_int_equal(errs.n_warnings, 1);
    char *buf = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&buf, &len);
    assert_non_null(out);
    cfg_errors_print(&errs, out);
    assert_int_equal(fclose(out), 0);
    snprintf(want, sizeof want,
             "t.conf:5: redis.password_file: warning: \"%s\" is readable by group and others "
             "(mode 0644); chmod 600 it\n"
             "t.conf:4: redis.port: 0 is out of range (allowed 1..65535)\n", path);
    assert_string_equal(buf, want);
    free(buf);
    cfg_test_done(&c, &errs);
    assert_int_equal(errs.n_warnings, 0);
    assert_null(errs.warnings);
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
        T(test_native_embedder_snapshot_that_is_an_empty_directory_names_every_missing_file),
        T(test_native_embedder_snapshot_without_weights_names_model_safetensors),
        T(test_native_embedder_snapshot_file_that_is_not_a_regular_file_is_named),
        T(test_native_embedder_snapshot_with_vocab_txt_instead_of_tokenizer_json_loads),
        T(test_native_embedder_with_an_existing_snapshot_directory_loads),
        T(test_remote_embedder_ignores_the_snapshot),
        T(test_remote_embedder_without_url_points_at_the_embedder_group),
        T(test_embedder_url_must_be_http_or_https),
        T(test_device_must_be_cpu_or_cuda_n),
        T(test_cuda_device_needs_a_cuda_build),
        T(test_cuda_device_for_a_native_backend_without_cuda_code_is_an_error),
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
        T(test_native_decoder_reads_gguf_versions_2_and_3),
        T(test_native_decoder_model_that_is_not_gguf_is_refused),
        T(test_native_decoder_model_cut_inside_its_header_is_refused),
        T(test_native_decoder_model_of_another_gguf_version_is_refused),
        T(test_only_the_native_decoder_needs_a_gguf_model),
        T(test_token_and_password_files_must_exist_when_set),
        T(test_token_and_password_files_must_be_regular_files),
        T(test_unreadable_token_file_is_reported),
        T(test_readable_token_and_password_files_load),
        T(test_secret_files_others_can_read_are_a_warning_not_an_error),
        T(test_warnings_survive_a_failed_load_and_print_before_the_errors),
        T(test_lookahead_smaller_than_max_texts_is_an_error),
        T(test_visibility_timeout_must_exceed_block_ms),
        T(test_rules_skip_keys_that_are_already_invalid),
        T(test_every_broken_rule_is_reported_together),
        T(test_precision_must_be_one_the_device_runs),
        T(test_query_format_needs_each_hole_once),
    };
#undef T
    if (cfg_test_enter_source_dir() != 0)
        return 1;
    return cmocka_run_group_tests(tests, NULL, NULL);
}
