/* test_queue_key_lengths.c: the Redis key names the queue builds. With the longest prefix, job id and
 * cohort the config and the job format allow, every key is whole; a key that would not fit its
 * buffer is refused, never cut short (two long ids must never share a result key). Needs no
 * Redis: the queue is opened against a port nothing listens on and only names keys. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "queue/job.h"
#include "queue/queue.h"

static char prefix[CFG_QUEUE_PREFIX_MAX + 1];

static int open_unconnected(void **state)
{
    memset(prefix, 'p', CFG_QUEUE_PREFIX_MAX);
    prefix[CFG_QUEUE_PREFIX_MAX] = '\0';
    RedisConfig rc = {.host = "127.0.0.1", .port = 1, .connect_timeout_ms = 100,
                      .startup_deadline_ms = 1, .reconnect_max_backoff_ms = 1, .password_file = ""};
    QueueConfig qc = {.prefix = prefix, .group = "g", .block_ms = 50};
    Queue *q = queue_open(&rc, &qc, "worker-0");
    if (!q)
        return -1;
    *state = q;
    return 0;
}

static int close_queue(void **state)
{
    queue_free(*state);
    return 0;
}

static void test_longest_prefix_and_job_id_give_a_whole_result_key(void **state)
{
    Queue *q = *state;
    char id[JOB_ID_MAX + 1], key[QUEUE_KEY_MAX], want[2 * QUEUE_KEY_MAX];
    memset(id, 'j', JOB_ID_MAX);
    id[JOB_ID_MAX] = '\0';
    assert_int_equal(queue_result_key(q, id, key, sizeof key), QUEUE_OK);
    snprintf(want, sizeof want, "%s:result:%s", prefix, id);
    assert_string_equal(key, want);
    /* Two ids that differ only in their last byte get two keys. */
    char other[QUEUE_KEY_MAX];
    id[JOB_ID_MAX - 1] = 'k';
    assert_int_equal(queue_result_key(q, id, other, sizeof other), QUEUE_OK);
    assert_string_not_equal(key, other);
}

static void test_result_key_that_would_not_fit_is_refused_not_cut(void **state)
{
    Queue *q = *state;
    char id[QUEUE_KEY_MAX], key[QUEUE_KEY_MAX];
    size_t n = QUEUE_KEY_MAX - CFG_QUEUE_PREFIX_MAX - strlen(":result:"); /* one byte too many */
    memset(id, 'j', n);
    id[n] = '\0';
    assert_int_equal(queue_result_key(q, id, key, sizeof key), QUEUE_EARG);
    assert_string_equal(key, "");
    id[n - 1] = '\0'; /* exactly fills the buffer */
    assert_int_equal(queue_result_key(q, id, key, sizeof key), QUEUE_OK);
    assert_int_equal(strlen(key), QUEUE_KEY_MAX - 1);
}

static void test_longest_cohort_gives_a_whole_pin_key_and_a_longer_one_is_refused(void **state)
{
    Queue *q = *state;
    char cohort[CFG_PIN_COHORT_MAX + 2], key[QUEUE_KEY_MAX], want[2 * QUEUE_KEY_MAX];
    memset(cohort, 'c', CFG_PIN_COHORT_MAX);
    cohort[CFG_PIN_COHORT_MAX] = '\0';
    assert_int_equal(queue_pin_key(q, cohort, key, sizeof key), QUEUE_OK);
    snprintf(want, sizeof want, "%s:pin:%s", prefix, cohort);
    assert_string_equal(key, want);
    strcat(cohort, "c");
    assert_int_equal(queue_pin_key(q, cohort, key, sizeof key), QUEUE_EARG);
    assert_string_equal(key, "");
}

static void test_stream_keys_hold_the_whole_longest_prefix(void **state)
{
    Queue *q = *state;
    char want[2 * QUEUE_KEY_MAX];
    snprintf(want, sizeof want, "%s:jobs:generate", prefix);
    assert_string_equal(queue_stream_key(q, JOB_GENERATE), want);
    snprintf(want, sizeof want, "%s:dead", prefix);
    assert_string_equal(queue_dead_key(q), want);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_longest_prefix_and_job_id_give_a_whole_result_key),
        cmocka_unit_test(test_result_key_that_would_not_fit_is_refused_not_cut),
        cmocka_unit_test(test_longest_cohort_gives_a_whole_pin_key_and_a_longer_one_is_refused),
        cmocka_unit_test(test_stream_keys_hold_the_whole_longest_prefix),
    };
    return cmocka_run_group_tests(tests, open_unconnected, close_queue);
}
