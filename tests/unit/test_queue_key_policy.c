/* test_queue_key_policy.c: the keys a producer may name (queue/key_policy.c, docs/protocol.md):
 * never a key under "<prefix>:" except reply lists under "<prefix>:reply:"; reply lists there or
 * under queue.reply_patterns; target hashes only under queue.target_patterns. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "queue/queue.h"

static const char *refusal(const QueueConfig *qc, QueueKeyUse use, const char *key)
{
    static char buf[160];
    return queue_key_refusal(qc, use, key, strlen(key), buf, sizeof buf);
}

static void engine_keys_are_never_a_reply_list_or_a_target(void **state)
{
    (void)state;
    QueueConfig qc = {.prefix = "weaver", .reply_patterns = "*", .target_patterns = "*"};
    static const char *const owned[] = {"weaver:pin:default", "weaver:result:job-1", "weaver:dead",
                                        "weaver:jobs:embed", "weaver:consumer:x", "weaver:reply:",
                                        "weaver:", "weaver:replyx"};
    for (size_t i = 0; i < sizeof owned / sizeof owned[0]; i++) {
        const char *why = refusal(&qc, QUEUE_KEY_REPLY, owned[i]);
        if (!why || !strstr(why, "belong to the engine"))
            fail_msg("reply_to %s: %s", owned[i], why ? why : "accepted");
        why = refusal(&qc, QUEUE_KEY_TARGET, owned[i]);
        if (!why || !strstr(why, "belong to the engine"))
            fail_msg("target %s: %s", owned[i], why ? why : "accepted");
    }
    assert_non_null(refusal(&qc, QUEUE_KEY_TARGET, "weaver:reply:x"));
    /* Another prefix's keys and look-alikes are not ours: the patterns decide. */
    assert_null(refusal(&qc, QUEUE_KEY_REPLY, "weaverx:dead"));
    assert_null(refusal(&qc, QUEUE_KEY_REPLY, "weaver"));
}

static void reply_lists_default_to_the_reply_namespace_and_patterns_widen_it(void **state)
{
    (void)state;
    QueueConfig qc = {.prefix = "weaver", .reply_patterns = "", .target_patterns = ""};
    assert_null(refusal(&qc, QUEUE_KEY_REPLY, "weaver:reply:abc"));
    assert_non_null(strstr(refusal(&qc, QUEUE_KEY_REPLY, "app:replies:1"), "queue.reply_patterns"));
    qc.reply_patterns = "  app:replies:*   tenant-[ab]:? ";
    assert_null(refusal(&qc, QUEUE_KEY_REPLY, "app:replies:1"));
    assert_null(refusal(&qc, QUEUE_KEY_REPLY, "tenant-a:x"));
    assert_non_null(refusal(&qc, QUEUE_KEY_REPLY, "tenant-c:x"));
    assert_non_null(refusal(&qc, QUEUE_KEY_REPLY, "tenant-a:xy"));
    assert_non_null(refusal(&qc, QUEUE_KEY_REPLY, "app:other"));
}

static void targets_need_a_configured_pattern(void **state)
{
    (void)state;
    QueueConfig qc = {.prefix = "weaver", .reply_patterns = "", .target_patterns = ""};
    const char *why = refusal(&qc, QUEUE_KEY_TARGET, "doc:1");
    assert_non_null(why);
    assert_non_null(strstr(why, "queue.target_patterns"));
    qc.target_patterns = "doc:* vec:*";
    assert_null(refusal(&qc, QUEUE_KEY_TARGET, "doc:1"));
    assert_null(refusal(&qc, QUEUE_KEY_TARGET, "vec:9:x"));
    assert_non_null(refusal(&qc, QUEUE_KEY_TARGET, "docs:1"));
    /* reply patterns never open targets, nor the reverse */
    assert_non_null(refusal(&qc, QUEUE_KEY_REPLY, "doc:1"));
}

static void keys_with_nul_or_empty_are_refused(void **state)
{
    (void)state;
    QueueConfig qc = {.prefix = "weaver", .reply_patterns = "*", .target_patterns = "*"};
    char buf[160];
    assert_non_null(queue_key_refusal(&qc, QUEUE_KEY_REPLY, "ok\0weaver:dead", 14, buf, sizeof buf));
    assert_non_null(queue_key_refusal(&qc, QUEUE_KEY_REPLY, "", 0, buf, sizeof buf));
    assert_null(queue_key_refusal(&qc, QUEUE_KEY_REPLY, "ok", 2, buf, sizeof buf));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(engine_keys_are_never_a_reply_list_or_a_target),
        cmocka_unit_test(reply_lists_default_to_the_reply_namespace_and_patterns_widen_it),
        cmocka_unit_test(targets_need_a_configured_pattern),
        cmocka_unit_test(keys_with_nul_or_empty_are_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
