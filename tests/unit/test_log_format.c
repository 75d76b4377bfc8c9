/* test_log_format.c: the two log formats as an operator's tools read them. Text lines keep their
 * historic shape (time, level padded to 5, message with control characters and backslashes
 * escaped); JSON lines are one valid object each, with the worker, job id and kind when known,
 * and text a producer controls (control characters, quotes, invalid UTF-8) cannot break them. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <cmocka.h>

#include "engine/log.h"

/* Runs fn with stderr sent to a temporary file; returns what was written (caller frees). */
static char *capture(void (*fn)(void))
{
    FILE *tmp = tmpfile();
    assert_non_null(tmp);
    int saved = dup(STDERR_FILENO);
    dup2(fileno(tmp), STDERR_FILENO);
    fn();
    dup2(saved, STDERR_FILENO);
    close(saved);
    long n = ftell(tmp);
    fseek(tmp, 0, SEEK_END);
    n = ftell(tmp);
    rewind(tmp);
    char *out = calloc(1, (size_t)n + 1);
    assert_int_equal(fread(out, 1, (size_t)n, tmp), (size_t)n);
    fclose(tmp);
    return out;
}

static void write_text_lines(void)
{
    log_set_format(LOG_FORMAT_TEXT);
    log_set_level(LOG_INFO);
    log_msg(LOG_INFO, "ready: %d workers", 2);
    log_msg(LOG_DEBUG, "not shown");
    log_job(LOG_WARN, "j1", "embed", "job %s: bad \"field\" a\nb\x01 c\\d", "j1");
}

static void text_lines_keep_their_shape_and_escape_control_characters(void **state)
{
    (void)state;
    char *out = capture(write_text_lines);
    char *second = strchr(out, '\n');
    assert_non_null(second);
    *second++ = '\0';
    /* 2025-01-01T00:00:00.000Z info  ready: 2 workers */
    assert_int_equal(strlen(out), 24 + 1 + 6 + strlen("ready: 2 workers"));
    assert_true(out[4] == '-' && out[10] == 'T' && out[23] == 'Z' && out[24] == ' ');
    assert_string_equal(out + 25, "info  ready: 2 workers");
    assert_string_equal(second + 25, "warn  job j1: bad \"field\" a\\nb\\x01 c\\\\d\n");
    free(out);
}

static void write_json_lines(void)
{
    log_set_format(LOG_FORMAT_JSON);
    log_set_level(LOG_DEBUG);
    log_msg(LOG_INFO, "plain");
    log_set_worker(3);
    log_job(LOG_ERROR, "j\"2", "generate", "bad \"q\" \\ tab\there\x01 nl\nend \xff\xfe ok \xc3\xa9 cut \xe2\x82");
    log_set_worker(-1);
    log_set_format(LOG_FORMAT_TEXT);
    log_set_level(LOG_INFO);
}

static void json_lines_are_valid_objects_with_their_fields(void **state)
{
    (void)state;
    char *out = capture(write_json_lines);
    char *line2 = strchr(out, '\n');
    assert_non_null(line2);
    *line2++ = '\0';
    assert_non_null(strchr(line2, '\n'));
    *strchr(line2, '\n') = '\0';

    cJSON *a = cJSON_Parse(out);
    assert_non_null(a);
    assert_string_equal(cJSON_GetObjectItem(a, "level")->valuestring, "info");
    assert_string_equal(cJSON_GetObjectItem(a, "msg")->valuestring, "plain");
    assert_int_equal(strlen(cJSON_GetObjectItem(a, "ts")->valuestring), 24);
    assert_null(cJSON_GetObjectItem(a, "worker"));
    assert_null(cJSON_GetObjectItem(a, "job_id"));
    cJSON_Delete(a);

    assert_null(strchr(line2, '\x01'));
    assert_null(strstr(line2, "\xff"));
    cJSON *b = cJSON_Parse(line2);
    assert_non_null(b);
    assert_string_equal(cJSON_GetObjectItem(b, "level")->valuestring, "error");
    assert_int_equal(cJSON_GetObjectItem(b, "worker")->valueint, 3);
    assert_string_equal(cJSON_GetObjectItem(b, "job_id")->valuestring, "j\"2");
    assert_string_equal(cJSON_GetObjectItem(b, "kind")->valuestring, "generate");
    /* Invalid bytes become U+FFFD (EF BF BD); valid UTF-8 stays as it is. */
    assert_string_equal(cJSON_GetObjectItem(b, "msg")->valuestring,
                        "bad \"q\" \\ tab\there\x01 nl\nend \xef\xbf\xbd\xef\xbf\xbd ok \xc3\xa9 cut "
                        "\xef\xbf\xbd\xef\xbf\xbd");
    cJSON_Delete(b);
    free(out);
}

static void format_names_parse(void **state)
{
    (void)state;
    LogFormat f = LOG_FORMAT_TEXT;
    assert_int_equal(log_format_parse("json", &f), 0);
    assert_int_equal(f, LOG_FORMAT_JSON);
    assert_int_equal(log_format_parse("text", &f), 0);
    assert_int_equal(f, LOG_FORMAT_TEXT);
    assert_int_equal(log_format_parse("logfmt", &f), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(text_lines_keep_their_shape_and_escape_control_characters),
        cmocka_unit_test(json_lines_are_valid_objects_with_their_fields),
        cmocka_unit_test(format_names_parse),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
