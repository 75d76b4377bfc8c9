/* test_cfg_docs.c: docs/config.md is exactly what cfg_write_docs() generates from the schema,
 * so the reference can never drift from the code. Run with WEAVER_REGEN_DOCS=1 to rewrite the
 * file after changing the schema (then review and commit the diff). Must not hand-check wording:
 * the generator owns the text; this test owns the sync and the table's shape. */
#include "tests/unit/test_cfg_util.h"

#define DOCS_PATH "docs/config.md"

static char *generated_docs(void)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&buf, &len);
    assert_non_null(out);
    assert_int_equal(cfg_write_docs(out), 0);
    assert_int_equal(fclose(out), 0);
    return buf;
}

/* The committed file, or NULL if it cannot be read. */
static char *committed_docs(void)
{
    FILE *f = fopen(DOCS_PATH, "rb");
    if (!f)
        return NULL;
    char *buf = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&buf, &len);
    assert_non_null(out);
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
        fwrite(chunk, 1, n, out);
    fclose(f);
    assert_int_equal(fclose(out), 0);
    return buf;
}

static void print_first_difference(const char *want, const char *got)
{
    int line = 1;
    size_t i = 0, line_start = 0;
    for (; want[i] && want[i] == got[i]; i++)
        if (want[i] == '\n') {
            line++;
            line_start = i + 1;
        }
    const char *w = want + line_start, *g = got + line_start;
    print_message(DOCS_PATH " differs from cfg_write_docs() at line %d:\n"
                  "  generated: %.*s\n  in file:   %.*s\n"
                  "Regenerate it: WEAVER_REGEN_DOCS=1 ctest -R test_cfg_docs\n",
                  line, (int)strcspn(w, "\n"), w, (int)strcspn(g, "\n"), g);
}

static void test_docs_config_md_is_exactly_the_generated_reference(void **state)
{
    (void)state;
    char *want = generated_docs();
    const char *regen = getenv("WEAVER_REGEN_DOCS");
    if (regen && strcmp(regen, "1") == 0) {
        FILE *f = fopen(DOCS_PATH, "w");
        assert_non_null(f);
        fputs(want, f);
        assert_int_equal(fclose(f), 0);
        print_message("rewrote " DOCS_PATH "\n");
    }
    char *got = committed_docs();
    if (!got)
        fail_msg("cannot read %s (from $WEAVER_SOURCE_DIR or the current directory); generate it "
                 "with WEAVER_REGEN_DOCS=1 ctest -R test_cfg_docs", DOCS_PATH);
    if (strcmp(want, got) != 0)
        print_first_difference(want, got);
    assert_string_equal(want, got);
    free(want);
    free(got);
}

static void test_docs_config_md_documents_every_schema_key(void **state)
{
    (void)state;
    char *got = committed_docs();
    assert_non_null(got);
    for (int i = 0; cfg_schema_key(i); i++) {
        char row[128];
        snprintf(row, sizeof row, "\n| `%s` |", cfg_schema_key(i));
        if (!strstr(got, row))
            fail_msg("%s has no table row for %s", DOCS_PATH, cfg_schema_key(i));
    }
    free(got);
}

static void test_every_table_row_has_six_cells(void **state)
{
    (void)state;
    char *docs = generated_docs();
    int rows = 0;
    for (char *line = strtok(docs, "\n"); line; line = strtok(NULL, "\n")) {
        if (line[0] != '|')
            continue;
        int bars = 0;
        for (char *p = line; *p; p++)
            bars += *p == '|';
        if (bars != 7)
            fail_msg("table row with %d cells: %s", bars - 1, line);
        rows++;
    }
    int keys = 0;
    while (cfg_schema_key(keys))
        keys++;
    assert_true(rows > keys); /* one row per key plus a header and a rule line per group */
    free(docs);
}

static void test_docs_explain_groups_rules_paths_and_environment(void **state)
{
    (void)state;
    char *docs = generated_docs();
    const char *must[] = {
        "# Configuration reference\n",
        "## `redis`\n", "## `queue`\n", "## `batch`\n", "## `embedder`\n", "## `decoder`\n",
        "## `pin`\n", "## `log`\n",
        "## Cross-field rules\n",
        "- When `embedder.backend = \"native\"`, `embedder.snapshot` must be non-empty and name a "
        "directory holding, as readable regular files, what the native embedder loads: "
        "`config.json`, `model.safetensors` and `tokenizer.json` (or `vocab.txt`).\n",
        "`decoder.model` must be non-empty and name a readable regular file that starts with the "
        "GGUF magic",
        "`redis.password_file`, when non-empty, must name an existing, readable regular file; a "
        "warning (not an error) when group or others may read it",
        "`embedder.device = \"cuda:N\"` needs a native embedder with a CUDA backend",
        "`decoder.device = \"cuda:N\"` needs a native decoder with a CUDA backend",
        "| `queue.prefix` | string | `\"weaver\"` | non-empty, no whitespace, at most 118 bytes | no |",
        "- When `embedder.backend = \"remote\"`, `embedder.url` must be non-empty.\n",
        "`batch.lookahead` must be at least `batch.max_texts`",
        "`queue.visibility_timeout_ms` must be greater than `queue.block_ms`",
        "-DWEAVER_CUDA=ON", "-DWEAVER_TEST_BACKENDS=ON",
        "resolved from the engine's current working directory",
        "## Environment variables\n", "`WEAVER_REDIS_PASSWORD`",
        "| `redis.port` | int | `6379` | 1..65535 | no |",
        "| `embedder.backend` | string | `\"native\"` | `\"native\"`, `\"remote\"`, `\"test-hash\"` | no |",
    };
    for (size_t i = 0; i < sizeof must / sizeof must[0]; i++)
        if (!strstr(docs, must[i]))
            fail_msg("generated docs lack: %s", must[i]);
    free(docs);
}

static void test_writing_docs_to_a_full_disk_reports_failure(void **state)
{
    (void)state;
    FILE *full = fopen("/dev/full", "w");
    assert_non_null(full);
    assert_int_equal(cfg_write_docs(full), -1);
    fclose(full);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_docs_config_md_is_exactly_the_generated_reference),
        cmocka_unit_test(test_docs_config_md_documents_every_schema_key),
        cmocka_unit_test(test_every_table_row_has_six_cells),
        cmocka_unit_test(test_docs_explain_groups_rules_paths_and_environment),
        cmocka_unit_test(test_writing_docs_to_a_full_disk_reports_failure),
    };
    if (cfg_test_enter_source_dir() != 0)
        return 1;
    return cmocka_run_group_tests(tests, NULL, NULL);
}
