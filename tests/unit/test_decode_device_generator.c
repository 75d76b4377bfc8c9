/* test_decode_device_generator.c: the native generator on decoder.device = "cuda:0" run on the
 * test-only fake device ($WEAVER_TEST_FAKE_DEVICE), on the real SmolLM2 file, against the same
 * generator on the cpu: the same texts and finish reasons for greedy jobs (picked on the device)
 * and a seeded sampled job (logits back to the host sampler); out of memory injected during
 * steps shrinks the step and restarts the newest sequence, and still no job fails or changes; a
 * sticky device error makes every step report GENERATOR_EDEVICE with all jobs still pending. */
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

static int setup(void **state)
{
    (void)state;
    const char *src = getenv("WEAVER_SOURCE_DIR");
    snprintf(model_path, sizeof model_path, "%s/models/SmolLM2-135M-Instruct.Q4_1.gguf", src ? src : ".");
    return 0;
}

static Generator *open_gen(const char *device, const char *fake_spec)
{
    if (access(model_path, R_OK) != 0) fail_msg("%s is not installed: run ops/setup.sh", model_path);
    if (fake_spec) setenv("WEAVER_TEST_FAKE_DEVICE", fake_spec, 1);
    else unsetenv("WEAVER_TEST_FAKE_DEVICE");
    DecoderConfig cfg = {.enabled = true, .backend = "native", .model = model_path, .device = (char *)device,
                         .threads = 2, .ctx_len = 256, .max_slots = 4, .kv_budget_tokens = 0};
    Generator *g = calloc(1, sizeof *g);
    g->ops = &generator_native_ops;
    if (g->ops->open(g, &cfg) != 0) fail_msg("open %s: %s", device, g->errstr);
    unsetenv("WEAVER_TEST_FAKE_DEVICE");
    return g;
}

static void close_gen(Generator *g)
{
    g->ops->close(g);
    free(g);
}

enum { NJOBS = 3 };

static void submit_jobs(Generator *g)
{
    static GenMessage m[1] = {{"user", "List three primary colors.", 0}};
    GenRequest r[NJOBS] = {
        {.messages = m, .n_messages = 1, .max_tokens = 12, .sampling = {.top_p = 1, .repeat_penalty = 1}},
        {.prompt = "Once upon a time, in a small village,", .max_tokens = 10,
         .sampling = {.temperature = 0.9f, .top_k = 40, .top_p = 0.95f, .min_p = 0.02f, .repeat_penalty = 1.1f,
                      .repeat_last_n = 64, .seed = 42}},
        {.prompt = "1, 2, 3, 4,", .max_tokens = 8, .sampling = {.top_p = 1, .repeat_penalty = 1}},
    };
    char err[256];
    for (intptr_t i = 0; i < NJOBS; i++) {
        r[i].tag = (void *)i;
        assert_int_equal(g->ops->submit(g, &r[i], err, sizeof err), 0);
    }
}

/* Runs to idle; a device loss fails the test. */
static void drain(Generator *g, GenDone *out)
{
    GenDone d[8];
    while (g->ops->pending(g) > 0) {
        int k = g->ops->step(g, d, 8);
        if (k < 0) fail_msg("step: %d (%s)", k, g->errstr);
        for (int i = 0; i < k; i++) out[(intptr_t)d[i].tag] = d[i];
    }
}

static GenDone cpu_ref[NJOBS];

static void cpu_reference(void)
{
    if (cpu_ref[0].text) return;
    Generator *g = open_gen("cpu", NULL);
    submit_jobs(g);
    drain(g, cpu_ref);
    close_gen(g);
}

static void same_as_cpu(const GenDone *got)
{
    for (int i = 0; i < NJOBS; i++) {
        if (got[i].finish == GEN_FINISH_ERROR) fail_msg("job %d failed: %s", i, got[i].error);
        assert_int_equal(got[i].finish, cpu_ref[i].finish);
        assert_int_equal(got[i].completion_tokens, cpu_ref[i].completion_tokens);
        if (strcmp(got[i].text, cpu_ref[i].text))
            fail_msg("job %d: device \"%s\", cpu \"%s\"", i, got[i].text, cpu_ref[i].text);
    }
}

/* Submits the jobs to g, runs them to the end and checks them against the CPU's; closes g. */
static void runs_as_on_the_cpu(Generator *g)
{
    GenDone got[NJOBS];
    submit_jobs(g);
    drain(g, got);
    same_as_cpu(got);
    for (int i = 0; i < NJOBS; i++) free(got[i].text);
    close_gen(g);
}

static void device_jobs_give_the_cpu_texts(void **state)
{
    (void)state;
    cpu_reference();
    Generator *g = open_gen("cuda:0", "free_mib=1024");
    GenStats st;
    g->ops->stats(g, &st);
    /* kv_budget_tokens = 0: the pool comes from the fake's free memory, far past 4 x 256 */
    printf("KV pool from free device memory: %d pages\n", st.kv_pages_total);
    assert_true(st.kv_pages_total > 4 * 256 / 16);
    runs_as_on_the_cpu(g);
}

static void out_of_memory_in_steps_fails_and_changes_no_job(void **state)
{
    (void)state;
    cpu_reference();
    /* five steps in a row fail at their first operation: the step shrinks from the whole prompt
     * batch to 16 tokens, then the newest sequences give their pages back and start over */
    Generator *g = open_gen("cuda:0", "free_mib=1024,oom_op=1,oom_op_count=5");
    runs_as_on_the_cpu(g);
}

static void a_lost_device_reports_every_step_and_keeps_the_jobs(void **state)
{
    (void)state;
    Generator *g = open_gen("cuda:0", "free_mib=1024,sticky_at=500");
    submit_jobs(g);
    GenDone d[8];
    int k = 0, steps = 0;
    while ((k = g->ops->step(g, d, 8)) >= 0 && steps < 200) {
        assert_int_equal(k, 0); /* nothing finishes before the loss: the jobs are short of it */
        steps++;
    }
    assert_int_equal(k, GENERATOR_EDEVICE);
    assert_non_null(strstr(g->errstr, "illegal memory access"));
    assert_int_equal(g->ops->pending(g), NJOBS); /* none failed, none handed out */
    assert_int_equal(g->ops->step(g, d, 8), GENERATOR_EDEVICE);
    close_gen(g);
}

static int teardown(void **state)
{
    (void)state;
    for (int i = 0; i < NJOBS; i++) free(cpu_ref[i].text);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(device_jobs_give_the_cpu_texts),
        cmocka_unit_test(out_of_memory_in_steps_fails_and_changes_no_job),
        cmocka_unit_test(a_lost_device_reports_every_step_and_keeps_the_jobs),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
