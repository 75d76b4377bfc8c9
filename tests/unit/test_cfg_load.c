/* test_cfg_load.c: what an operator sees when the engine reads a config file: defaults, every
 * value of a full file, and the exact "file:line: key: reason" text of syntax, type, range,
 * allowed-value and unknown-key errors, all reported at once. Cross-field and file-system rules
 * live in test_cfg_rules.c; this file must not depend on model files or the build's features. */
#include "tests/unit/test_cfg_util.h"

#include "queue/job.h"   /* JOB_ID_MAX, QUEUE_KEY_MAX, QUEUE_CONSUMER_MAX: macros only, */
#include "queue/queue.h" /* for the key bounds test; nothing of queue/ is linked */

/* ---- defaults and values ---- */

static void test_keys_left_out_get_their_documented_defaults(void **state)
{
    (void)state;
    Config c;
    cfg_test_load_ok(CFG_TEST_BASE, &c);
    assert_string_equal(c.redis.host, "127.0.0.1");
    assert_int_equal(c.redis.port, 6379);
    assert_int_equal(c.redis.db, 0);
    assert_string_equal(c.redis.username, "");
    assert_string_equal(c.redis.password_file, "");
    assert_int_equal(c.redis.connect_timeout_ms, 2000);
    assert_int_equal(c.redis.startup_deadline_ms, 30000);
    assert_int_equal(c.redis.reconnect_max_backoff_ms, 2000);
    assert_string_equal(c.queue.prefix, "weaver");
    assert_string_equal(c.queue.group, "weaver");
    assert_string_equal(c.queue.consumer, "");
    assert_int_equal(c.queue.read_count, 256);
    assert_int_equal(c.queue.block_ms, 50);
    assert_int_equal(c.queue.visibility_timeout_ms, 30000);
    assert_int_equal(c.queue.max_attempts, 3);
    assert_int_equal(c.queue.result_ttl_s, 86400);
    assert_int_equal(c.queue.shutdown_grace_ms, 10000);
    assert_int_equal(c.queue.max_input_bytes, 1048576);
    assert_int_equal(c.queue.max_texts_per_job, 1024);
    assert_int_equal(c.queue.max_tokens, 4096);
    assert_int_equal(c.queue.dead_letter_maxlen, 100000);
    assert_int_equal(c.queue.prune_idle_ms, 600000);
    assert_int_equal(c.batch.token_budget, 0); /* automatic: the device's, or 16384 */
    assert_int_equal(c.batch.token_budget_max, 65536);
    assert_int_equal(c.batch.max_texts, 256);
    assert_int_equal(c.batch.lookahead, 1024);
    assert_int_equal(c.batch.max_wait_ms, 5);
    assert_string_equal(c.embedder.backend, "remote"); /* set by CFG_TEST_BASE */
    assert_string_equal(c.embedder.snapshot, "models/all-MiniLM-L6-v2");
    assert_string_equal(c.embedder.device, "cpu");
    assert_string_equal(c.embedder.model_id, "");
    assert_int_equal(c.embedder.threads, 0);
    assert_string_equal(c.embedder.api, "tei");
    assert_string_equal(c.embedder.token_file, "");
    assert_int_equal(c.embedder.timeout_ms, 30000);
    assert_int_equal(c.embedder.dim, 384);
    assert_false(c.decoder.enabled); /* set by CFG_TEST_BASE */
    assert_string_equal(c.decoder.backend, "native");
    assert_string_equal(c.decoder.model, "models/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert_string_equal(c.decoder.device, "cpu");
    assert_int_equal(c.decoder.threads, 0);
    assert_int_equal(c.decoder.ctx_len, 0);
    assert_int_equal(c.decoder.max_slots, 16);
    assert_int_equal(c.decoder.kv_budget_tokens, 16384);
    assert_string_equal(c.pin.cohort, "default");
    assert_string_equal(c.log.level, "info");
    assert_string_equal(c.path, "t.conf");
    cfg_free(&c);
}

static void test_decoder_is_enabled_unless_the_file_says_otherwise(void **state)
{
    (void)state;
    Config c;
    cfg_test_load_ok("embedder = { backend = \"remote\"; url = \"http://e\"; };\n"
                     "decoder = { backend = \"native\"; model = \"tests/fixtures/config/header-only.gguf\"; };\n",
                     &c);
    assert_true(c.decoder.enabled);
    cfg_free(&c);
}

static void test_a_full_file_sets_every_key(void **state)
{
    (void)state;
    Config c;
    CfgErrors errs;
    int rc = cfg_load("tests/fixtures/config/full.conf", &c, &errs);
    cfg_test_print_errors(&errs);
    assert_int_equal(rc, 0);
    assert_int_equal(errs.count, 0);
    assert_string_equal(c.path, "tests/fixtures/config/full.conf");
    assert_string_equal(c.redis.host, "redis.internal");
    assert_int_equal(c.redis.port, 6380);
    assert_int_equal(c.redis.db, 2);
    assert_string_equal(c.redis.username, "weaver");
    assert_string_equal(c.redis.password_file, "tests/fixtures/config/secret.txt");
    assert_int_equal(c.redis.connect_timeout_ms, 1500);
    assert_int_equal(c.redis.startup_deadline_ms, 60000);
    assert_int_equal(c.redis.reconnect_max_backoff_ms, 5000);
    assert_string_equal(c.queue.prefix, "wv");
    assert_string_equal(c.queue.group, "workers");
    assert_string_equal(c.queue.consumer, "node-1");
    assert_int_equal(c.queue.read_count, 64);
    assert_int_equal(c.queue.block_ms, 100);
    assert_int_equal(c.queue.visibility_timeout_ms, 60000);
    assert_int_equal(c.queue.max_attempts, 5);
    assert_int_equal(c.queue.result_ttl_s, 3600);
    assert_int_equal(c.queue.shutdown_grace_ms, 20000);
    assert_int_equal(c.queue.max_input_bytes, 2097152);
    assert_int_equal(c.queue.max_texts_per_job, 512);
    assert_int_equal(c.queue.max_tokens, 2048);
    assert_int_equal(c.queue.dead_letter_maxlen, 5000);
    assert_int_equal(c.queue.prune_idle_ms, 120000);
    assert_int_equal(c.batch.token_budget, 8192);
    assert_int_equal(c.batch.max_texts, 128);
    assert_int_equal(c.batch.lookahead, 512);
    assert_int_equal(c.batch.max_wait_ms, 10);
    assert_string_equal(c.embedder.backend, "remote");
    assert_string_equal(c.embedder.snapshot, "models/not-used-by-remote");
    assert_string_equal(c.embedder.device, "cpu");
    assert_string_equal(c.embedder.model_id, "minilm");
    assert_int_equal(c.embedder.threads, 4);
    assert_string_equal(c.embedder.url, "https://embed.internal:8443");
    assert_string_equal(c.embedder.api, "openai");
    assert_string_equal(c.embedder.token_file, "tests/fixtures/config/secret.txt");
    assert_int_equal(c.embedder.timeout_ms, 10000);
    assert_int_equal(c.embedder.dim, 768);
    assert_false(c.decoder.enabled);
    assert_string_equal(c.decoder.backend, "native");
    assert_string_equal(c.decoder.model, "models/not-used-when-disabled.gguf");
    assert_string_equal(c.decoder.device, "cpu");
    assert_int_equal(c.decoder.threads, 2);
    assert_int_equal(c.decoder.ctx_len, 2048);
    assert_int_equal(c.decoder.max_slots, 8);
    assert_int_equal(c.decoder.kv_budget_tokens, 32768);
    assert_string_equal(c.pin.cohort, "prod-a");
    assert_string_equal(c.log.level, "debug");
    assert_string_equal(c.log.format, "json");
    assert_string_equal(c.metrics.listen, "[::1]:9465");
    assert_int_equal(c.metrics.sample_interval_ms, 500);
    cfg_test_done(&c, &errs);
}

static void test_hex_and_leading_zero_integers_read_as_libconfig_writes_them(void **state)
{
    (void)state;
    Config c;
    cfg_test_load_ok(CFG_TEST_BASE "redis = { db = 0xA; port = 010; };\n", &c);
    assert_int_equal(c.redis.db, 10);
    assert_int_equal(c.redis.port, 10);
    cfg_free(&c);
}

static void test_without_a_path_the_engine_reads_weaver_conf_in_the_current_directory(void **state)
{
    (void)state;
    char cwd[PATH_MAX], path[PATH_MAX];
    assert_non_null(getcwd(cwd, sizeof cwd));
    CfgScratch s;
    cfg_scratch_make(&s);
    cfg_scratch_file(&s, "weaver.conf", CFG_TEST_BASE "redis = { port = 7000; };\n", path,
                     sizeof path);
    assert_int_equal(chdir(s.dir), 0);
    Config c;
    CfgErrors errs;
    assert_int_equal(cfg_load(NULL, &c, &errs), 0);
    assert_int_equal(c.redis.port, 7000);
    assert_string_equal(c.path, "./weaver.conf");
    cfg_test_done(&c, &errs);
    assert_int_equal(unlink("weaver.conf"), 0);
    assert_int_equal(cfg_load(NULL, &c, &errs), -1);
    assert_int_equal(errs.count, 1);
    assert_string_equal(errs.msgs[0],
                        "./weaver.conf:0: cannot read the config file: No such file or directory");
    cfg_test_done(&c, &errs);
    assert_int_equal(chdir(cwd), 0);
    cfg_scratch_remove(&s);
}

static void test_a_directory_given_as_the_config_file_is_reported(void **state)
{
    (void)state;
    Config c;
    CfgErrors errs;
    assert_int_equal(cfg_load("/tmp", &c, &errs), -1);
    assert_int_equal(errs.count, 1);
    assert_string_equal(errs.msgs[0], "/tmp:0: cannot read the config file: Is a directory");
    cfg_test_done(&c, &errs);
}

/* ---- syntax ---- */

static void test_syntax_error_names_file_and_line_and_stops_there(void **state)
{
    (void)state;
    assert_cfg_errors("redis = {\n  host = \"x\";\n  port 6379;\n  bogus = 1;\n};\n",
                      "t.conf:3: syntax error");
}

static void test_syntax_error_in_a_file_names_that_file(void **state)
{
    (void)state;
    Config c;
    CfgErrors errs;
    assert_int_equal(cfg_load("tests/fixtures/config/syntax-error.conf", &c, &errs), -1);
    assert_int_equal(errs.count, 1);
    assert_string_equal(errs.msgs[0], "tests/fixtures/config/syntax-error.conf:4: syntax error");
    cfg_test_done(&c, &errs);
}

static void test_a_key_given_twice_is_reported_by_line(void **state)
{
    (void)state;
    assert_cfg_errors("redis = {\n  port = 1;\n  port = 2;\n};\n",
                      "t.conf:3: duplicate setting name");
}

/* ---- one key at a time ---- */

static void test_wrong_type_says_what_was_expected_and_what_was_given(void **state)
{
    (void)state;
    assert_cfg_errors("embedder = { backend = \"remote\"; url = \"http://e\"; };\n"
                      "redis = {\n"
                      "  port = \"6379\";\n"
                      "  host = 5;\n"
                      "  db = 1.5;\n"
                      "  username = [\"a\"];\n"
                      "};\n"
                      "queue = { block_ms = { x = 1; }; read_count = (1, 2); };\n"
                      "decoder = { enabled = 1; threads = true; };\n",
                      "t.conf:3: redis.port: expected an integer, got a string",
                      "t.conf:4: redis.host: expected a string, got an integer",
                      "t.conf:5: redis.db: expected an integer, got a float",
                      "t.conf:6: redis.username: expected a string, got an array",
                      "t.conf:8: queue.block_ms: expected an integer, got a group",
                      "t.conf:8: queue.read_count: expected an integer, got a list",
                      "t.conf:9: decoder.enabled: expected a boolean (true or false), got an integer",
                      "t.conf:9: decoder.threads: expected an integer, got a boolean");
}

static void test_int_out_of_range_names_the_allowed_range(void **state)
{
    (void)state;
    assert_cfg_errors(CFG_TEST_BASE
                      "redis = {\n"
                      "  port = 0;\n"
                      "  db = 16;\n"
                      "};\n"
                      "queue = {\n"
                      "  visibility_timeout_ms = 99;\n"
                      "  max_attempts = -1;\n"
                      "};\n",
                      "t.conf:4: redis.port: 0 is out of range (allowed 1..65535)",
                      "t.conf:5: redis.db: 16 is out of range (allowed 0..15)",
                      "t.conf:8: queue.visibility_timeout_ms: 99 is out of range (allowed >= 100)",
                      "t.conf:9: queue.max_attempts: -1 is out of range (allowed 1..100)");
}

static void test_port_above_65535_is_out_of_range(void **state)
{
    (void)state;
    assert_cfg_errors(CFG_TEST_BASE "redis = { port = 70000; };\n",
                      "t.conf:3: redis.port: 70000 is out of range (allowed 1..65535)");
}

/* libconfig 1.5 would hand 4294967396 over as 100; the user must hear about it instead. */
static void test_integers_too_big_for_int_are_out_of_range_not_wrapped(void **state)
{
    (void)state;
    assert_cfg_errors(CFG_TEST_BASE
                      "queue = {\n"
                      "  result_ttl_s = 4294967396;\n"
                      "  max_tokens = 99999999999L;\n"
                      "  read_count = 0x100000064;\n"
                      "  block_ms = 999999999999999999999999;\n"
                      "};\n",
                      "t.conf:4: queue.result_ttl_s: 4294967396 is out of range (allowed >= 1)",
                      "t.conf:5: queue.max_tokens: 99999999999 is out of range (allowed >= 1)",
                      "t.conf:6: queue.read_count: 0x100000064 is out of range (allowed 1..10000)",
                      "t.conf:7: queue.block_ms: 999999999999999999999999 is out of range "
                      "(allowed 1..60000)");
}

static void test_string_outside_the_allowed_values_lists_them(void **state)
{
    (void)state;
    assert_cfg_errors(CFG_TEST_BASE "log = { level = \"verbose\"; };\n",
                      "t.conf:3: log.level: \"verbose\" is not one of \"debug\", \"info\", "
                      "\"warn\", \"error\"");
}

static void test_enumerated_strings_are_checked_case_sensitively(void **state)
{
    (void)state;
    assert_cfg_errors("embedder = { backend = \"Remote\"; api = \"grpc\"; };\n"
                      "decoder = { enabled = false; backend = \"gguf\"; };\n"
                      "log = { level = \"INFO\"; };\n",
                      "t.conf:1: embedder.backend: \"Remote\" is not one of \"native\", "
                      "\"remote\", \"test-hash\"",
                      "t.conf:1: embedder.api: \"grpc\" is not one of \"tei\", \"openai\"",
                      "t.conf:2: decoder.backend: \"gguf\" is not one of \"native\", \"test-echo\"",
                      "t.conf:3: log.level: \"INFO\" is not one of \"debug\", \"info\", \"warn\", "
                      "\"error\"");
}

static void test_names_used_in_redis_keys_must_be_nonempty_without_whitespace(void **state)
{
    (void)state;
    assert_cfg_errors(CFG_TEST_BASE
                      "queue = {\n"
                      "  prefix = \"\";\n"
                      "  group = \"my group\";\n"
                      "};\n"
                      "pin = { cohort = \"a\\tb\"; };\n",
                      "t.conf:4: queue.prefix: must not be empty",
                      "t.conf:5: queue.group: \"my group\" must not contain whitespace",
                      "t.conf:7: pin.cohort: \"a\tb\" must not contain whitespace");
}

/* A name of `n` copies of `c`, in a static buffer (one at a time). */
static const char *repeat(char c, size_t n)
{
    static char buf[512];
    assert_true(n < sizeof buf);
    memset(buf, c, n);
    buf[n] = '\0';
    return buf;
}

static void test_names_used_in_redis_keys_are_bounded_so_no_key_is_cut_short(void **state)
{
    (void)state;
    char text[2048];
    snprintf(text, sizeof text, CFG_TEST_BASE "queue = { prefix = \"%s\"; ", repeat('p', CFG_QUEUE_PREFIX_MAX));
    snprintf(text + strlen(text), sizeof text - strlen(text), "consumer = \"%s\"; };\n",
             repeat('c', CFG_QUEUE_CONSUMER_MAX));
    snprintf(text + strlen(text), sizeof text - strlen(text), "pin = { cohort = \"%s\"; };\n",
             repeat('k', CFG_PIN_COHORT_MAX));
    Config c;
    cfg_test_load_ok(text, &c);
    assert_int_equal(strlen(c.queue.prefix), CFG_QUEUE_PREFIX_MAX);
    assert_int_equal(strlen(c.queue.consumer), CFG_QUEUE_CONSUMER_MAX);
    assert_int_equal(strlen(c.pin.cohort), CFG_PIN_COHORT_MAX);
    cfg_free(&c);

    snprintf(text, sizeof text, CFG_TEST_BASE "queue = {\n  prefix = \"%s\";\n",
             repeat('p', CFG_QUEUE_PREFIX_MAX + 1));
    snprintf(text + strlen(text), sizeof text - strlen(text), "  consumer = \"%s\";\n};\n",
             repeat('c', CFG_QUEUE_CONSUMER_MAX + 1));
    snprintf(text + strlen(text), sizeof text - strlen(text), "pin = { cohort = \"%s\"; };\n",
             repeat('k', CFG_PIN_COHORT_MAX + 1));
    assert_cfg_errors(text,
                      "t.conf:4: queue.prefix: is 119 bytes long; at most 118 fit in the Redis keys "
                      "the engine builds",
                      "t.conf:5: queue.consumer: is 124 bytes long; at most 123 fit in the Redis "
                      "keys the engine builds",
                      "t.conf:7: pin.cohort: is 133 bytes long; at most 132 fit in the Redis keys "
                      "the engine builds");
}

/* config.h derives the bounds from the queue's key buffers and the longest job id; they must
 * be the longest that fit (queue.c and pin.c check at compile time that they fit at all). */
static void test_key_name_bounds_are_the_longest_that_fit_the_key_buffers(void **state)
{
    (void)state;
    size_t nul = 1;
    /* <prefix>:result:<job id>: fits */
    assert_true(CFG_QUEUE_PREFIX_MAX + strlen(":result:") + JOB_ID_MAX + nul <= QUEUE_KEY_MAX);
    /* <prefix>:consumer:<consumer name>: fits exactly, so the prefix cannot be longer */
    assert_int_equal(CFG_QUEUE_PREFIX_MAX + strlen(":consumer:") + (QUEUE_CONSUMER_MAX - nul) + nul,
                     QUEUE_KEY_MAX);
    /* <prefix>:pin:<cohort>: fits exactly */
    assert_int_equal(CFG_QUEUE_PREFIX_MAX + strlen(":pin:") + CFG_PIN_COHORT_MAX + nul, QUEUE_KEY_MAX);
    /* <consumer>-<worker index below 256>: fills a consumer name exactly */
    assert_int_equal(CFG_QUEUE_CONSUMER_MAX + strlen("-255") + nul, QUEUE_CONSUMER_MAX);
}

/* ---- unknown names ---- */

static void test_misspelt_key_is_an_error_with_a_did_you_mean_hint(void **state)
{
    (void)state;
    assert_cfg_errors(CFG_TEST_BASE "queue = {\n  blok_ms = 50;\n};\n",
                      "t.conf:4: queue.blok_ms: unknown key; did you mean 'queue.block_ms'?");
}

static void test_unknown_key_far_from_every_key_gets_no_hint(void **state)
{
    (void)state;
    assert_cfg_errors(CFG_TEST_BASE "queue = { colour = \"blue\"; };\n",
                      "t.conf:3: queue.colour: unknown key");
}

static void test_key_in_the_wrong_group_points_to_the_right_one(void **state)
{
    (void)state;
    assert_cfg_errors(CFG_TEST_BASE "redis = { block_ms = 50; };\n",
                      "t.conf:3: redis.block_ms: unknown key; did you mean 'queue.block_ms'?");
}

static void test_key_outside_any_group_points_to_its_group(void **state)
{
    (void)state;
    assert_cfg_errors(CFG_TEST_BASE "port = 6379;\n",
                      "t.conf:3: port: unknown key; did you mean 'redis.port'?");
}

static void test_misspelt_group_is_an_error_with_a_hint(void **state)
{
    (void)state;
    assert_cfg_errors(CFG_TEST_BASE "reddis = { port = 6379; };\ntracing = { port = 9100; };\n",
                      "t.conf:3: reddis: unknown group; did you mean 'redis'?",
                      "t.conf:4: tracing: unknown group");
}

static void test_known_group_name_given_a_value_is_an_error(void **state)
{
    (void)state;
    assert_cfg_errors(CFG_TEST_BASE "redis = \"localhost\";\n",
                      "t.conf:3: redis: expected a group (redis = { ... };), got a string");
}

/* ---- all at once ---- */

static void test_every_problem_in_a_file_is_reported_at_once_in_line_order(void **state)
{
    (void)state;
    Config c;
    CfgErrors errs;
    assert_int_equal(cfg_load("tests/fixtures/config/many-errors.conf", &c, &errs), -1);
    const char *want[] = {
        "tests/fixtures/config/many-errors.conf:3: redis.port: 70000 is out of range "
        "(allowed 1..65535)",
        "tests/fixtures/config/many-errors.conf:4: redis.host: expected a string, got an integer",
        "tests/fixtures/config/many-errors.conf:7: queue.blok_ms: unknown key; did you mean "
        "'queue.block_ms'?",
        "tests/fixtures/config/many-errors.conf:8: queue.prefix: \"has space\" must not contain "
        "whitespace",
        "tests/fixtures/config/many-errors.conf:10: reddis: unknown group; did you mean 'redis'?",
        "tests/fixtures/config/many-errors.conf:13: embedder.url: embedder.url is required when "
        "embedder.backend = \"remote\"",
        "tests/fixtures/config/many-errors.conf:15: embedder.api: \"grpc\" is not one of \"tei\", "
        "\"openai\"",
        "tests/fixtures/config/many-errors.conf:22: batch.lookahead: 256 must be at least "
        "batch.max_texts (512)",
    };
    int n = (int)(sizeof want / sizeof want[0]);
    if (errs.count != n)
        cfg_test_print_errors(&errs);
    assert_int_equal(errs.count, n);
    for (int i = 0; i < n; i++)
        assert_string_equal(errs.msgs[i], want[i]);
    cfg_test_done(&c, &errs);
}

/* ---- API contract ---- */

static void test_failed_load_leaves_a_zeroed_config_and_success_clears_errors(void **state)
{
    (void)state;
    Config c;
    CfgErrors errs;
    assert_int_equal(cfg_test_load("redis = { port = 0; };\n", &c, &errs), -1);
    assert_null(c.redis.host);
    assert_null(c.path);
    assert_int_equal(c.redis.port, 0);
    cfg_free(&c); /* harmless */
    cfg_errors_free(&errs);
    memset(&errs, 0x5a, sizeof errs); /* an uninitialised struct: reset, not appended to */
    assert_int_equal(cfg_test_load(CFG_TEST_BASE, &c, &errs), 0);
    assert_int_equal(errs.count, 0);
    assert_null(errs.msgs);
    cfg_test_done(&c, &errs);
    cfg_free(NULL);
    cfg_errors_free(NULL);
}

static void test_string_values_are_owned_by_the_config(void **state)
{
    (void)state;
    char text[] = CFG_TEST_BASE "redis = { host = \"cache-1\"; };\n";
    Config c;
    cfg_test_load_ok(text, &c);
    memset(text, 'x', sizeof text - 1);
    assert_string_equal(c.redis.host, "cache-1");
    cfg_free(&c);
    assert_null(c.redis.host);
}

static void test_errors_print_one_line_each(void **state)
{
    (void)state;
    Config c;
    CfgErrors errs;
    assert_int_equal(cfg_test_load(CFG_TEST_BASE "redis = { port = 0; db = 99; };\n", &c, &errs), -1);
    char *buf = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&buf, &len);
    assert_non_null(out);
    cfg_errors_print(&errs, out);
    assert_int_equal(fclose(out), 0);
    assert_string_equal(buf, "t.conf:3: redis.port: 0 is out of range (allowed 1..65535)\n"
                             "t.conf:3: redis.db: 99 is out of range (allowed 0..15)\n");
    free(buf);
    cfg_test_done(&c, &errs);
}

static void test_schema_lists_every_key_once_as_group_dot_key(void **state)
{
    (void)state;
    int n = 0;
    while (cfg_schema_key(n))
        n++;
    assert_true(n > 40);
    assert_string_equal(cfg_schema_key(0), "redis.host");
    assert_null(cfg_schema_key(-1));
    assert_null(cfg_schema_key(n));
    for (int i = 0; i < n; i++) {
        const char *k = cfg_schema_key(i);
        const char *dot = strchr(k, '.');
        assert_non_null(dot);
        assert_true(dot > k && dot[1] != '\0' && strchr(dot + 1, '.') == NULL);
        for (int j = 0; j < i; j++)
            assert_string_not_equal(k, cfg_schema_key(j));
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_keys_left_out_get_their_documented_defaults),
        cmocka_unit_test(test_decoder_is_enabled_unless_the_file_says_otherwise),
        cmocka_unit_test(test_a_full_file_sets_every_key),
        cmocka_unit_test(test_hex_and_leading_zero_integers_read_as_libconfig_writes_them),
        cmocka_unit_test(test_without_a_path_the_engine_reads_weaver_conf_in_the_current_directory),
        cmocka_unit_test(test_a_directory_given_as_the_config_file_is_reported),
        cmocka_unit_test(test_syntax_error_names_file_and_line_and_stops_there),
        cmocka_unit_test(test_syntax_error_in_a_file_names_that_file),
        cmocka_unit_test(test_a_key_given_twice_is_reported_by_line),
        cmocka_unit_test(test_wrong_type_says_what_was_expected_and_what_was_given),
        cmocka_unit_test(test_int_out_of_range_names_the_allowed_range),
        cmocka_unit_test(test_port_above_65535_is_out_of_range),
        cmocka_unit_test(test_integers_too_big_for_int_are_out_of_range_not_wrapped),
        cmocka_unit_test(test_string_outside_the_allowed_values_lists_them),
        cmocka_unit_test(test_enumerated_strings_are_checked_case_sensitively),
        cmocka_unit_test(test_names_used_in_redis_keys_must_be_nonempty_without_whitespace),
        cmocka_unit_test(test_names_used_in_redis_keys_are_bounded_so_no_key_is_cut_short),
        cmocka_unit_test(test_key_name_bounds_are_the_longest_that_fit_the_key_buffers),
        cmocka_unit_test(test_misspelt_key_is_an_error_with_a_did_you_mean_hint),
        cmocka_unit_test(test_unknown_key_far_from_every_key_gets_no_hint),
        cmocka_unit_test(test_key_in_the_wrong_group_points_to_the_right_one),
        cmocka_unit_test(test_key_outside_any_group_points_to_its_group),
        cmocka_unit_test(test_misspelt_group_is_an_error_with_a_hint),
        cmocka_unit_test(test_known_group_name_given_a_value_is_an_error),
        cmocka_unit_test(test_every_problem_in_a_file_is_reported_at_once_in_line_order),
        cmocka_unit_test(test_failed_load_leaves_a_zeroed_config_and_success_clears_errors),
        cmocka_unit_test(test_string_values_are_owned_by_the_config),
        cmocka_unit_test(test_errors_print_one_line_each),
        cmocka_unit_test(test_schema_lists_every_key_once_as_group_dot_key),
    };
    if (cfg_test_enter_source_dir() != 0)
        return 1;
    return cmocka_run_group_tests(tests, NULL, NULL);
}
