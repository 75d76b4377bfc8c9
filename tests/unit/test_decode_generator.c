/* test_decode_generator.c: the native generator backend on the real SmolLM2 file (failing loudly
 * when models/ has not been set up): continuous batching does not change a job's result, finish
 * reasons and counts, stop strings, context limits, a KV budget smaller than all slots. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "engine/generator_impl.h"

static char model_path[1024];

static int setup(void **state) {
    (void)state;
    const char *src = getenv("WEAVER_SOURCE_DIR");
    snprintf(model_path, sizeof model_path, "%s/models/SmolLM2-135M-Instruct.Q4_1.gguf", src ? src : ".");
    return 0;
}

static Generator *open_gen(int slots, int ctx, int budget) {
    if (access(model_path, R_OK) != 0) fail_msg("%s is not installed: run ops/setup.sh", model_path);
    DecoderConfig cfg = {.enabled = true, .backend = "native", .model = model_path, .device = "cpu", .threads = 2,
                         .ctx_len = ctx, .max_slots = slots, .kv_budget_tokens = budget};
    Generator *g = calloc(1, sizeof *g);
    g->ops = &generator_native_ops;
    if (g->ops->open(g, &cfg) != 0) fail_msg("open: %s", g->errstr);
    return g;
}

static void close_gen(Generator *g) {
    g->ops->close(g);
    free(g);
}

/* Runs until idle; results land in out[tag]. */
static void drain(Generator *g, GenDone *out, int n) {
    GenDone d[16];
    while (g->ops->pending(g) > 0) {
        int k = g->ops->step(g, d, 16);
        assert_true(k >= 0);
        for (int i = 0; i < k; i++) {
            intptr_t tag = (intptr_t)d[i].tag;
            assert_true(tag >= 0 && tag < n);
            out[tag] = d[i];
        }
    }
}

static GenRequest sampled(const char *prompt, uint64_t seed, int max_tokens, intptr_t tag) {
    GenRequest r = {.prompt = prompt, .max_tokens = max_tokens, .tag = (void *)tag};
    r.sampling = (GenSampling){.temperature = 0.9f, .top_k = 40, .top_p = 0.95f, .min_p = 0.02f, .repeat_penalty = 1.1f,
                               .repeat_last_n = 64, .presence_penalty = 0.1f, .frequency_penalty = 0.1f, .seed = seed};
    return r;
}

static void same_seed_same_text_whatever_else_is_in_the_batch(void **state) {
    (void)state;
    Generator *g = open_gen(8, 512, 0);
    assert_non_null(g);
    char err[256];
    GenDone alone[1], mixed[6];
    GenRequest r = sampled("Once upon a time, in a small village,", 42, 24, 0);
    assert_int_equal(g->ops->submit(g, &r, err, sizeof err), 0);
    drain(g, alone, 1);
    const char *others[] = {"The weather today", "def add(a, b):", "Paris is", "List of fruits:", "Hello"};
    for (int i = 0; i < 5; i++) {
        GenRequest o = sampled(others[i], 7 + i, 10 + 3 * i, i + 1);
        assert_int_equal(g->ops->submit(g, &o, err, sizeof err), 0);
        if (i == 2) { /* join mid-flight: advance a couple of steps first */
            GenDone d[4];
            g->ops->step(g, d, 0);
            g->ops->step(g, d, 0);
        }
    }
    r.tag = (void *)0;
    assert_int_equal(g->ops->submit(g, &r, err, sizeof err), 0);
    drain(g, mixed, 6);
    assert_string_equal(alone[0].text, mixed[0].text);
    assert_int_equal(alone[0].completion_tokens, mixed[0].completion_tokens);
    for (int i = 0; i < 6; i++) free(mixed[i].text);
    free(alone[0].text);
    close_gen(g);
}

static void max_tokens_finishes_with_length(void **state) {
    (void)state;
    Generator *g = open_gen(2, 256, 0);
    assert_non_null(g);
    char err[256];
    GenDone d[1];
    GenRequest r = {.prompt = "1, 2, 3, 4,", .max_tokens = 5, .sampling = {.top_p = 1, .repeat_penalty = 1}};
    assert_int_equal(g->ops->submit(g, &r, err, sizeof err), 0);
    drain(g, d, 1);
    assert_int_equal(d[0].finish, GEN_FINISH_LENGTH);
    assert_int_equal(d[0].completion_tokens, 5);
    assert_int_equal(d[0].prompt_tokens, 11);
    assert_string_equal(d[0].text, " 5, 6");
    assert_true(d[0].prefill_ms >= 0 && d[0].decode_ms >= 0);
    free(d[0].text);
    close_gen(g);
}

static void stop_string_ends_the_text_before_it(void **state) {
    (void)state;
    Generator *g = open_gen(2, 256, 0);
    assert_non_null(g);
    char err[256];
    GenDone d[1];
    GenRequest r = {.prompt = "1, 2, 3, 4,", .max_tokens = 30, .sampling = {.top_p = 1, .repeat_penalty = 1}};
    r.stop[0] = "8,";
    r.n_stop = 1;
    assert_int_equal(g->ops->submit(g, &r, err, sizeof err), 0);
    drain(g, d, 1);
    assert_int_equal(d[0].finish, GEN_FINISH_STOP);
    assert_string_equal(d[0].text, " 5, 6, 7, ");
    free(d[0].text);
    close_gen(g);
}

static void chat_reply_ends_with_eos(void **state) {
    (void)state;
    Generator *g = open_gen(2, 512, 0);
    assert_non_null(g);
    char err[256];
    GenDone d[1];
    /* llama.cpp's greedy reply on this file (same bits as ours): "The primary colors are: ..." then
     * <|im_end|> after 27 tokens. */
    GenMessage m[1] = {{"user", "List three primary colors.", 0}};
    GenRequest r = {.messages = m, .n_messages = 1, .max_tokens = 64, .sampling = {.top_p = 1, .repeat_penalty = 1}};
    assert_int_equal(g->ops->submit(g, &r, err, sizeof err), 0);
    drain(g, d, 1);
    assert_int_equal(d[0].finish, GEN_FINISH_EOS);
    assert_non_null(strstr(d[0].text, "Yellow"));
    free(d[0].text);
    close_gen(g);
}

static void prompt_longer_than_context_is_an_error_or_truncated(void **state) {
    (void)state;
    Generator *g = open_gen(2, 64, 0);
    assert_non_null(g);
    char err[256] = "", longp[4000] = "";
    for (int i = 0; i < 100; i++) strcat(longp, "word ");
    GenRequest r = {.prompt = longp, .max_tokens = 8, .sampling = {.top_p = 1, .repeat_penalty = 1}};
    assert_int_not_equal(g->ops->submit(g, &r, err, sizeof err), 0);
    assert_non_null(strstr(err, "context"));
    assert_int_equal(g->ops->pending(g), 0);
    r.truncate_prompt = true;
    assert_int_equal(g->ops->submit(g, &r, err, sizeof err), 0);
    GenDone d[1];
    drain(g, d, 1);
    assert_int_not_equal(d[0].finish, GEN_FINISH_ERROR);
    assert_true(d[0].prompt_tokens + d[0].completion_tokens <= 64);
    free(d[0].text);
    close_gen(g);
}

static void small_kv_budget_queues_jobs_and_finishes_all(void **state) {
    (void)state;
    Generator *g = open_gen(8, 128, 160); /* room for about one sequence at a time */
    assert_non_null(g);
    char err[256];
    GenDone d[6];
    for (int i = 0; i < 6; i++) {
        GenRequest r = sampled("Tell me a story about a cat.", 100 + i, 12, i);
        assert_int_equal(g->ops->submit(g, &r, err, sizeof err), 0);
    }
    memset(d, 0, sizeof d);
    drain(g, d, 6);
    for (int i = 0; i < 6; i++) {
        assert_non_null(d[i].text);
        assert_int_not_equal(d[i].finish, GEN_FINISH_ERROR);
        free(d[i].text);
    }
    close_gen(g);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(same_seed_same_text_whatever_else_is_in_the_batch),
        cmocka_unit_test(max_tokens_finishes_with_length),
        cmocka_unit_test(stop_string_ends_the_text_before_it),
        cmocka_unit_test(chat_reply_ends_with_eos),
        cmocka_unit_test(prompt_longer_than_context_is_an_error_or_truncated),
        cmocka_unit_test(small_kv_budget_queues_jobs_and_finishes_all),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
