/* test_cfg_ops.c: the shipped ops/weaver.conf loads as-is against the real model files, and
 * mentions every key so operators can find them. Missing model files are a FAILURE with the
 * command that fetches them, never a skip: a product default that cannot start is a bug. */
#include "tests/unit/test_cfg_util.h"

#define OPS_CONF "ops/weaver.conf"
#define EMBEDDER_DIR "models/all-MiniLM-L6-v2"
#define DECODER_GGUF "models/SmolLM2-135M-Instruct.Q4_1.gguf"

static void require_model_files(void)
{
    struct stat st;
    if (stat(EMBEDDER_DIR "/model.safetensors", &st) != 0 || stat(DECODER_GGUF, &st) != 0)
        fail_msg("model files missing (" EMBEDDER_DIR "/model.safetensors, " DECODER_GGUF ") "
                 "under %s: run ops/setup.sh to fetch them", getenv("WEAVER_SOURCE_DIR")
                 ? getenv("WEAVER_SOURCE_DIR") : ".");
}

static void test_shipped_config_loads_with_the_real_models(void **state)
{
    (void)state;
    require_model_files();
    Config c;
    CfgErrors errs;
    int rc = cfg_load(OPS_CONF, &c, &errs);
    cfg_test_print_errors(&errs);
    assert_int_equal(rc, 0);
    assert_string_equal(c.embedder.backend, "native");
    assert_string_equal(c.embedder.snapshot, EMBEDDER_DIR);
    assert_string_equal(c.embedder.device, "cpu");
    assert_true(c.decoder.enabled);
    assert_string_equal(c.decoder.backend, "native");
    assert_string_equal(c.decoder.model, DECODER_GGUF);
    assert_string_equal(c.decoder.device, "cpu");
    assert_string_equal(c.redis.host, "127.0.0.1");
    assert_int_equal(c.redis.port, 6379);
    cfg_test_done(&c, &errs);
}

static void test_shipped_config_mentions_every_key(void **state)
{
    (void)state;
    FILE *f = fopen(OPS_CONF, "r");
    assert_non_null(f);
    char text[16384];
    size_t n = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    assert_true(n < sizeof text - 1);
    text[n] = '\0';
    for (int i = 0; cfg_schema_key(i); i++) {
        const char *key = cfg_schema_key(i);
        char group[64], leaf[64];
        snprintf(group, sizeof group, "\n%.*s = {", (int)strcspn(key, "."), key);
        snprintf(leaf, sizeof leaf, " %s = ", strchr(key, '.') + 1);
        const char *g = strstr(text, group);
        const char *end = g ? strstr(g, "\n};") : NULL;
        const char *l = g ? strstr(g, leaf) : NULL;
        if (!g || !l || l > end)
            fail_msg(OPS_CONF " does not mention %s (set or as a commented default)", key);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shipped_config_loads_with_the_real_models),
        cmocka_unit_test(test_shipped_config_mentions_every_key),
    };
    if (cfg_test_enter_source_dir() != 0)
        return 1;
    return cmocka_run_group_tests(tests, NULL, NULL);
}
