/* test_decode_cli.c: the generate-local debug CLI. Run with "generate-local ..." as its
 * arguments it *is* that CLI (so Python reference tests can drive the decoder before
 * engine/main.c dispatches to it); run plainly it checks the CLI's argument handling. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

int cli_generate_main(int argc, char **argv);

static void unknown_option_is_usage_error(void **state) {
    (void)state;
    char *argv[] = {"generate-local", "--bogus", NULL};
    assert_int_equal(cli_generate_main(2, argv), 2);
}

static void missing_model_is_usage_error(void **state) {
    (void)state;
    char *argv[] = {"generate-local", "--prompt", "hi", NULL};
    assert_int_equal(cli_generate_main(3, argv), 2);
}

static void missing_file_is_an_error_not_a_crash(void **state) {
    (void)state;
    char *argv[] = {"generate-local", "--model", "/nonexistent.gguf", "--prompt", "hi", "--tokenize-only", NULL};
    assert_int_equal(cli_generate_main(6, argv), 1);
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "generate-local") == 0) return cli_generate_main(argc - 1, argv + 1);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(unknown_option_is_usage_error),
        cmocka_unit_test(missing_model_is_usage_error),
        cmocka_unit_test(missing_file_is_an_error_not_a_crash),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
