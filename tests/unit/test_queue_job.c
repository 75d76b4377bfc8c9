/* test_queue_job.c: the job parser accepts what docs/protocol.md promises, rejects what it
 * forbids with the documented reason, and never trusts lengths or encodings. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "queue/job.h"

static const JobLimits LIM = {.max_input_bytes = 1024, .max_texts_per_job = 3, .max_tokens = 100};

static int parse(JobKind kind, const char *s, Job *job, char *err)
{
    return job_parse(kind, s, strlen(s), &LIM, job, err, 256);
}

static void embed_job_with_all_options_parses(void **state)
{
    (void)state;
    Job job;
    char err[256] = "";
    const char *s = "{\"id\":\"a-1\",\"texts\":[\"x\",\"yz\"],\"normalize\":false,\"dimensions\":64,"
                    "\"truncate\":false,\"encoding\":\"f32\",\"reply_to\":\"r\","
                    "\"target\":{\"keys\":[\"h1\",\"h2\"],\"field\":\"v\"}}";
    assert_int_equal(parse(JOB_EMBED, s, &job, err), 0);
    assert_string_equal(job.id, "a-1");
    assert_int_equal(job.embed.n_texts, 2);
    assert_string_equal(job.embed.texts[1], "yz");
    assert_int_equal(job.embed.lens[1], 2);
    assert_int_equal(job.embed.normalize, 0);
    assert_int_equal(job.embed.dimensions, 64);
    assert_false(job.embed.truncate);
    assert_int_equal(job.embed.encoding, JOB_ENC_F32);
    assert_string_equal(job.reply_to, "r");
    assert_string_equal(job.embed.target_keys[1], "h2");
    assert_string_equal(job.embed.target_field, "v");
    job_free(&job);
}

static void embed_defaults_are_model_normalisation_truncation_and_json(void **state)
{
    (void)state;
    Job job;
    char err[256];
    assert_int_equal(parse(JOB_EMBED, "{\"text\":\"hi\"}", &job, err), 0);
    assert_int_equal(job.embed.normalize, -1);
    assert_true(job.embed.truncate);
    assert_int_equal(job.embed.encoding, JOB_ENC_JSON);
    assert_string_equal(job.id, "");
    job_free(&job);
}

static void an_instruction_makes_a_query_and_true_means_the_configured_default(void **state)
{
    (void)state;
    Job job;
    char err[256] = "";
    assert_int_equal(parse(JOB_EMBED, "{\"text\":\"hi\",\"instruction\":\"find\\u0000it\"}", &job, err), 0);
    assert_int_equal(job.embed.instruction_len, 7); /* NUL kept, by length */
    assert_memory_equal(job.embed.instruction, "find\0it", 7);
    job_free(&job);
    assert_int_equal(parse(JOB_EMBED, "{\"text\":\"hi\"}", &job, err), 0);
    assert_null(job.embed.instruction); /* a document */
    job_free(&job);
    assert_int_equal(parse(JOB_EMBED, "{\"text\":\"hi\",\"instruction\":false}", &job, err), 0);
    assert_null(job.embed.instruction);
    job_free(&job);
    assert_int_equal(parse(JOB_EMBED, "{\"text\":\"hi\",\"instruction\":true}", &job, err), -1);
    assert_non_null(strstr(err, "embedder.query_instruction"));
    job_free(&job);
    JobLimits lim = LIM;
    lim.query_instruction = "Given a query, find passages";
    const char *s = "{\"text\":\"hi\",\"instruction\":true}";
    assert_int_equal(job_parse(JOB_EMBED, s, strlen(s), &lim, &job, err, 256), 0);
    assert_string_equal(job.embed.instruction, "Given a query, find passages");
    assert_int_equal(job.embed.instruction_len, strlen(lim.query_instruction));
    job_free(&job);
    assert_int_equal(parse(JOB_EMBED, "{\"text\":\"hi\",\"instruction\":\"\"}", &job, err), -1);
    assert_non_null(strstr(err, "'instruction' is empty"));
    job_free(&job);
    assert_int_equal(parse(JOB_EMBED, "{\"text\":\"hi\",\"instruction\":3}", &job, err), -1);
    assert_non_null(strstr(err, "'instruction' must be a string, true"));
    job_free(&job);
}

static void generate_defaults_are_greedy_with_128_tokens_capped_by_the_limit(void **state)
{
    (void)state;
    Job job;
    char err[256];
    assert_int_equal(parse(JOB_GENERATE, "{\"prompt\":\"hi\",\"stop\":\"\\n\"}", &job, err), 0);
    assert_int_equal(job.gen.max_tokens, 100); /* LIM.max_tokens */
    assert_true(job.gen.temperature == 0.0);
    assert_true(job.gen.top_p == 1.0);
    assert_int_equal(job.gen.n_stop, 1);
    assert_string_equal(job.gen.stop[0], "\n");
    assert_false(job.gen.seed_set);
    assert_true(job.gen.parse_special);
    job_free(&job);
}

static void error_still_reports_the_id_and_reply_list(void **state)
{
    (void)state;
    Job job;
    char err[256];
    assert_int_equal(parse(JOB_EMBED, "{\"id\":\"x\",\"reply_to\":\"r\",\"texts\":[1]}", &job, err), -1);
    assert_string_equal(err, "texts[0] must be a string");
    assert_string_equal(job.id, "x");
    assert_string_equal(job.reply_to, "r");
    job_free(&job);
}

static void expect_error(JobKind kind, const char *s, const char *fragment)
{
    Job job;
    char err[256] = "";
    assert_int_equal(parse(kind, s, &job, err), -1);
    if (!strstr(err, fragment))
        fail_msg("for %s: expected \"%s\" in \"%s\"", s, fragment, err);
    job_free(&job);
}

static void bad_jobs_are_rejected_with_their_reason(void **state)
{
    (void)state;
    expect_error(JOB_EMBED, "{\"texts\":[\"a\",\"b\",\"c\",\"d\"]}", "4 texts exceed the limit of 3");
    expect_error(JOB_EMBED, "{\"text\":\"a\",\"dimensions\":-1}", "out of range");
    expect_error(JOB_EMBED, "{\"text\":\"a\",\"dimensions\":1e300}", "out of range");
    expect_error(JOB_EMBED, "{\"text\":\"a\",\"target\":[]}", "must be an object");
    expect_error(JOB_EMBED, "{\"text\":\"a\",\"target\":{\"key\":\"k\",\"field\":\"f\",\"x\":1}}",
                 "target: unknown field 'x'");
    expect_error(JOB_EMBED, "{\"text\":\"a\",\"reply_to\":\"\"}", "'reply_to' must be 1..512 bytes");
    expect_error(JOB_EMBED, "{\"text\":\"a\"}{}", "trailing bytes");
    expect_error(JOB_EMBED, "", "not valid JSON");
    expect_error(JOB_GENERATE, "{\"prompt\":\"a\",\"messages\":[]}", "not both");
    expect_error(JOB_GENERATE, "{\"prompt\":\"a\",\"stop\":[\"1\",\"2\",\"3\",\"4\",\"5\",\"6\",\"7\",\"8\",\"9\"]}",
                 "more than 8");
    expect_error(JOB_GENERATE, "{\"prompt\":\"a\",\"seed\":9007199254740993}", "out of range");
    expect_error(JOB_GENERATE, "{\"prompt\":\"a\",\"messages\":null}", "not both");
    expect_error(JOB_GENERATE, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\",\"name\":\"n\"}]}",
                 "messages[0]: unknown field 'name'");
}

static void parse_special_must_be_true_or_false(void **state)
{
    (void)state;
    Job job;
    char err[256];
    assert_int_equal(parse(JOB_GENERATE, "{\"prompt\":\"hi\",\"parse_special\":false}", &job, err), 0);
    assert_false(job.gen.parse_special);
    job_free(&job);
    assert_int_equal(parse(JOB_GENERATE, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
                                         "\"parse_special\":true}", &job, err), 0);
    assert_true(job.gen.parse_special);
    job_free(&job);
    const char *bad[] = {"\"false\"", "0", "1", "null", "[]", "{}"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char s[128];
        snprintf(s, sizeof s, "{\"prompt\":\"hi\",\"parse_special\":%s}", bad[i]);
        expect_error(JOB_GENERATE, s, "field 'parse_special' must be true or false");
    }
    expect_error(JOB_EMBED, "{\"text\":\"a\",\"parse_special\":false}", "unknown field 'parse_special'");
}

static void payload_over_the_byte_limit_is_rejected_before_parsing(void **state)
{
    (void)state;
    char big[2048];
    memset(big, 'a', sizeof big);
    Job job;
    char err[256];
    assert_int_equal(job_parse(JOB_EMBED, big, sizeof big, &LIM, &job, err, sizeof err), -1);
    assert_non_null(strstr(err, "2048 bytes, over the limit of 1024"));
    job_free(&job);
}

static void payload_is_bounded_by_its_length_not_a_terminator(void **state)
{
    (void)state;
    /* The stream value is not NUL-terminated in general: only len bytes may be read. */
    const char buf[] = "{\"text\":\"a\"}XXXX";
    Job job;
    char err[256];
    assert_int_equal(job_parse(JOB_EMBED, buf, 12, &LIM, &job, err, sizeof err), 0);
    job_free(&job);
}

static void utf8_validator_matches_the_standard(void **state)
{
    (void)state;
    assert_true(job_utf8_valid("plain", 5));
    assert_true(job_utf8_valid("\xc3\xa9\xe4\xb8\xad\xf0\x9f\x98\x80", 9)); /* é 中 😀 */
    assert_false(job_utf8_valid("\xc3", 1));                             /* truncated */
    assert_false(job_utf8_valid("\xc0\xaf", 2));                         /* overlong '/' */
    assert_false(job_utf8_valid("\xe0\x80\xaf", 3));                     /* overlong */
    assert_false(job_utf8_valid("\xed\xa0\x80", 3));                     /* surrogate */
    assert_false(job_utf8_valid("\xf4\x90\x80\x80", 4));                 /* > U+10FFFF */
    assert_false(job_utf8_valid("\xff", 1));
    assert_false(job_utf8_valid("a\x80", 2));                            /* stray continuation */
}

static void job_ids_allow_only_safe_characters(void **state)
{
    (void)state;
    assert_true(job_id_valid("abc-DEF_0.9:x"));
    assert_false(job_id_valid(""));
    assert_false(job_id_valid("a b"));
    assert_false(job_id_valid("a*"));
    char longid[JOB_ID_MAX + 2];
    memset(longid, 'a', sizeof longid - 1);
    longid[sizeof longid - 1] = '\0';
    assert_false(job_id_valid(longid));
}

/* cJSON ends strings at NUL: the parser recomputes every string's length from the raw JSON, so a
 * \u0000 stays inside texts and prompts (with the right length, whatever precedes it: escapes,
 * multi-byte characters, surrogate pairs) and is refused where it would cut a key or an id. */
static void nul_characters_keep_their_length_or_are_refused(void **state)
{
    (void)state;
    Job job;
    char err[256] = "";
    const char *s = "{\"texts\":[\"\\\"q\\\"\\u00e9\\ud83d\\ude80\\u0000tail\",\"a\\u0000\"]}";
    assert_int_equal(parse(JOB_EMBED, s, &job, err), 0);
    /* "q" in quotes (3) + é (2) + U+1F680 (4) + NUL (1) + tail (4) */
    assert_int_equal(job.embed.lens[0], 14);
    assert_memory_equal(job.embed.texts[0], "\"q\"\xc3\xa9\xf0\x9f\x9a\x80\0tail", 14);
    assert_int_equal(job.embed.lens[1], 2);
    job_free(&job);

    assert_int_equal(parse(JOB_GENERATE, "{\"messages\":[{\"role\":\"user\",\"content\":\"a\\u0000b\"}]}", &job, err), 0);
    assert_int_equal(job.gen.messages[0].content_len, 3);
    job_free(&job);
    assert_int_equal(parse(JOB_GENERATE, "{\"prompt\":\"\\u0000\\u0000\"}", &job, err), 0);
    assert_int_equal(job.gen.prompt_len, 2);
    job_free(&job);

    static const struct { JobKind kind; const char *json, *why; } bad[] = {
        {JOB_EMBED, "{\"text\":\"x\",\"reply_to\":\"list\\u0000other\"}", "must not contain NUL"},
        {JOB_EMBED, "{\"id\":\"abc\\u0000def\",\"text\":\"x\"}", "field 'id' must be"},
        {JOB_EMBED, "{\"text\":\"x\",\"target\":{\"key\":\"k\\u0000\",\"field\":\"v\"}}", "must not contain NUL"},
        {JOB_EMBED, "{\"text\":\"x\",\"id\\u0000x\":\"y\"}", "field names must not contain NUL"},
        {JOB_GENERATE, "{\"prompt\":\"x\",\"stop\":\"a\\u0000b\"}", "stop strings must not contain NUL"},
        {JOB_GENERATE, "{\"messages\":[{\"role\":\"user\\u0000x\",\"content\":\"c\"}]}", "role must be"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(parse(bad[i].kind, bad[i].json, &job, err), -1);
        if (!strstr(err, bad[i].why))
            fail_msg("case %zu: \"%s\" does not say \"%s\"", i, err, bad[i].why);
        job_free(&job);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(embed_job_with_all_options_parses),
        cmocka_unit_test(embed_defaults_are_model_normalisation_truncation_and_json),
        cmocka_unit_test(generate_defaults_are_greedy_with_128_tokens_capped_by_the_limit),
        cmocka_unit_test(error_still_reports_the_id_and_reply_list),
        cmocka_unit_test(bad_jobs_are_rejected_with_their_reason),
        cmocka_unit_test(parse_special_must_be_true_or_false),
        cmocka_unit_test(payload_over_the_byte_limit_is_rejected_before_parsing),
        cmocka_unit_test(payload_is_bounded_by_its_length_not_a_terminator),
        cmocka_unit_test(utf8_validator_matches_the_standard),
        cmocka_unit_test(job_ids_allow_only_safe_characters),
        cmocka_unit_test(nul_characters_keep_their_length_or_are_refused),
        cmocka_unit_test(an_instruction_makes_a_query_and_true_means_the_configured_default),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
