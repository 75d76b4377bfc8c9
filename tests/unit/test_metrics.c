/* test_metrics.c: what a scrape shows for what workers counted: histograms land in the right
 * bucket and render cumulative with _sum and _count, counters sum over workers, label values
 * are escaped, readiness names its reason, and with metrics off every hook is a no-op. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "engine/metrics.h"

static char *render(Metrics *m)
{
    size_t len = 0;
    char *text = metrics_render(m, &len);
    assert_non_null(text);
    assert_int_equal(strlen(text), len);
    return text;
}

#define assert_has_line(text, line)                                                                 \
    do {                                                                                            \
        if (!strstr((text), "\n" line "\n"))                                                        \
            fail_msg("missing line: %s", line);                                                     \
    } while (0)

static void histogram_observations_land_in_their_bucket_and_render_cumulative(void **state)
{
    (void)state;
    Metrics *m = metrics_create(2);
    metrics_latency(metrics_worker(m, 0), 0, METRICS_QUEUE_WAIT, 700);     /* 0.7 ms */
    metrics_latency(metrics_worker(m, 0), 0, METRICS_QUEUE_WAIT, 1000);    /* exactly le=0.001 */
    metrics_latency(metrics_worker(m, 0), 0, METRICS_QUEUE_WAIT, 2000000); /* 2 s */
    metrics_latency(metrics_worker(m, 1), 0, METRICS_QUEUE_WAIT, 400);     /* another worker */
    metrics_latency(metrics_worker(m, 1), 0, METRICS_QUEUE_WAIT, -5);      /* clock skew: 0 */
    metrics_latency(metrics_worker(m, 1), 1, METRICS_QUEUE_WAIT, 999999999); /* over the last */
    char *t = render(m);
    assert_has_line(t, "weaver_job_queue_wait_seconds_bucket{kind=\"embed\",le=\"0.0005\"} 2");
    assert_has_line(t, "weaver_job_queue_wait_seconds_bucket{kind=\"embed\",le=\"0.001\"} 4");
    assert_has_line(t, "weaver_job_queue_wait_seconds_bucket{kind=\"embed\",le=\"1\"} 4");
    assert_has_line(t, "weaver_job_queue_wait_seconds_bucket{kind=\"embed\",le=\"2.5\"} 5");
    assert_has_line(t, "weaver_job_queue_wait_seconds_bucket{kind=\"embed\",le=\"+Inf\"} 5");
    assert_has_line(t, "weaver_job_queue_wait_seconds_count{kind=\"embed\"} 5");
    assert_has_line(t, "weaver_job_queue_wait_seconds_sum{kind=\"embed\"} 2.0021");
    assert_has_line(t, "weaver_job_queue_wait_seconds_bucket{kind=\"generate\",le=\"300\"} 0");
    assert_has_line(t, "weaver_job_queue_wait_seconds_bucket{kind=\"generate\",le=\"+Inf\"} 1");
    free(t);
    metrics_free(m);
}

static void batch_histograms_record_texts_padded_tokens_and_fill(void **state)
{
    (void)state;
    Metrics *m = metrics_create(1);
    metrics_batch(metrics_worker(m, 0), 4, 30, 40); /* fill 0.75 */
    metrics_batch(metrics_worker(m, 0), 1, 10, 10); /* fill 1 */
    char *t = render(m);
    assert_has_line(t, "weaver_embed_batch_texts_bucket{le=\"1\"} 1");
    assert_has_line(t, "weaver_embed_batch_texts_bucket{le=\"4\"} 2");
    assert_has_line(t, "weaver_embed_batch_texts_sum 5");
    assert_has_line(t, "weaver_embed_batch_padded_tokens_bucket{le=\"16\"} 1");
    assert_has_line(t, "weaver_embed_batch_padded_tokens_bucket{le=\"64\"} 2");
    assert_has_line(t, "weaver_embed_batch_fill_ratio_bucket{le=\"0.7\"} 0");
    assert_has_line(t, "weaver_embed_batch_fill_ratio_bucket{le=\"0.8\"} 1");
    assert_has_line(t, "weaver_embed_batch_fill_ratio_bucket{le=\"1\"} 2");
    assert_has_line(t, "weaver_embed_batch_fill_ratio_sum 1.75");
    free(t);
    metrics_free(m);
}

static void counters_sum_over_workers_and_every_label_combination_is_exported(void **state)
{
    (void)state;
    Metrics *m = metrics_create(3);
    metrics_finished(metrics_worker(m, 0), 0, METRICS_OK);
    metrics_finished(metrics_worker(m, 2), 0, METRICS_OK);
    metrics_finished(metrics_worker(m, 2), 1, METRICS_ERROR);
    metrics_add(&metrics_worker(m, 1)->tokens_embedded, 40);
    metrics_add(&metrics_worker(m, 2)->tokens_embedded, 2);
    metrics_add(&metrics_worker(m, 1)->busy_ns, 1500000000);
    metrics_decoder(metrics_worker(m, 0), 3, 1, 10, 100);
    metrics_decoder(metrics_worker(m, 1), 2, 0, 5, 100);
    char *t = render(m);
    assert_has_line(t, "weaver_jobs_finished_total{kind=\"embed\",status=\"ok\"} 2");
    assert_has_line(t, "weaver_jobs_finished_total{kind=\"generate\",status=\"error\"} 1");
    assert_has_line(t, "weaver_jobs_finished_total{kind=\"generate\",status=\"dead_letter\"} 0");
    assert_has_line(t, "weaver_embedded_tokens_total 42");
    assert_has_line(t, "weaver_worker_busy_seconds_total{worker=\"1\"} 1.5");
    assert_has_line(t, "weaver_worker_busy_seconds_total{worker=\"2\"} 0");
    assert_has_line(t, "weaver_decoder_running_sequences 5");
    assert_has_line(t, "weaver_decoder_kv_pages_used 15");
    assert_has_line(t, "weaver_decoder_kv_pages 200");
    assert_has_line(t, "weaver_workers 3");
    assert_null(strstr(t, "weaver_queue_length")); /* not before the first sample */
    free(t);
    MetricsDepths d = {.length = {7, 0}, .pending = {2, 1}, .dead = 4};
    metrics_set_depths(m, &d, true);
    t = render(m);
    assert_has_line(t, "weaver_queue_length{kind=\"embed\"} 7");
    assert_has_line(t, "weaver_queue_pending{kind=\"generate\"} 1");
    assert_has_line(t, "weaver_queue_dead_letters 4");
    assert_has_line(t, "weaver_redis_up 1");
    free(t);
    metrics_free(m);
}

static void build_info_label_values_are_escaped(void **state)
{
    (void)state;
    Metrics *m = metrics_create(1);
    metrics_set_info(m, "my\"model\\v2\nx", NULL, "prod", "native", "none");
    char *t = render(m);
    assert_non_null(strstr(t, "embedder_model=\"my\\\"model\\\\v2\\nx\""));
    assert_non_null(strstr(t, "cohort=\"prod\""));
    assert_non_null(strstr(t, "decoder_model=\"\""));
    for (const char *p = t; (p = strchr(p, '\n')) != NULL; p++) /* no raw newline inside a line */
        assert_true(p[1] == '\0' || p[1] == '#' || strncmp(p + 1, "weaver_", 7) == 0);
    free(t);
    metrics_free(m);
}

static void readiness_names_what_is_missing(void **state)
{
    (void)state;
    Metrics *m = metrics_create(2);
    char why[200];
    assert_false(metrics_ready(m, why, sizeof why));
    assert_non_null(strstr(why, "cohort pin"));
    metrics_set_pin_passed(m);
    assert_false(metrics_ready(m, why, sizeof why));
    assert_string_equal(why, "starting: 0 of 2 workers ready");
    metrics_set_workers_ready(m, 2);
    assert_false(metrics_ready(m, why, sizeof why)); /* Redis not sampled yet */
    assert_string_equal(why, "Redis is unreachable");
    MetricsDepths d = {{0, 0}, {0, 0}, 0};
    metrics_set_depths(m, &d, true);
    assert_true(metrics_ready(m, why, sizeof why));
    metrics_set_connected(metrics_worker(m, 1), false);
    assert_false(metrics_ready(m, why, sizeof why));
    assert_string_equal(why, "1 worker reconnecting to Redis");
    metrics_set_connected(metrics_worker(m, 1), true);
    metrics_set_depths(m, NULL, false);
    assert_false(metrics_ready(m, why, sizeof why));
    metrics_set_depths(m, &d, true);
    assert_true(metrics_ready(m, why, sizeof why));
    metrics_set_stopping(m);
    assert_false(metrics_ready(m, why, sizeof why));
    assert_string_equal(why, "stopping");
    metrics_free(m);
}

static void with_metrics_off_every_hook_is_a_no_op(void **state)
{
    (void)state;
    MetricsWorker *w = metrics_worker(NULL, 0);
    assert_null(w);
    metrics_latency(w, 0, METRICS_COMPUTE, 5);
    metrics_batch(w, 3, 3, 3);
    metrics_finished(w, 1, METRICS_OK);
    metrics_decoder(w, 1, 1, 1, 1);
    metrics_set_connected(w, false);
    metrics_set_info(NULL, "a", "b", "c", "d", "e");
    metrics_set_pin_passed(NULL);
    metrics_set_workers_ready(NULL, 1);
    metrics_set_stopping(NULL);
    metrics_set_depths(NULL, NULL, false);
    metrics_free(NULL);
    metrics_server_stop(NULL);
    metrics_sampler_stop(NULL);
    Metrics *m = metrics_create(1);
    assert_null(metrics_worker(m, 1)); /* out of range */
    metrics_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(histogram_observations_land_in_their_bucket_and_render_cumulative),
        cmocka_unit_test(batch_histograms_record_texts_padded_tokens_and_fill),
        cmocka_unit_test(counters_sum_over_workers_and_every_label_combination_is_exported),
        cmocka_unit_test(build_info_label_values_are_escaped),
        cmocka_unit_test(readiness_names_what_is_missing),
        cmocka_unit_test(with_metrics_off_every_hook_is_a_no_op),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
