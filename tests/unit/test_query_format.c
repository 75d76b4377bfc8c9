/* test_query_format.c: embedder.query_format renders a query exactly as the model cards
 * write it (Qwen3-Embedding: no space after "Query:"; gte-Qwen2 / e5-mistral: one space), and
 * embed_query_len always equals what embed_render_query writes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "engine/embedder.h"

static void render(const char *format, const char *instruction, const char *text, const char *want)
{
    char out[256];
    size_t il = strlen(instruction), tl = strlen(text);
    size_t n = embed_query_len(format, il, tl);
    assert_int_equal(n, strlen(want));
    assert_int_equal(embed_render_query(out, sizeof out, format, instruction, il, text, tl), n);
    assert_memory_equal(out, want, n);
}

static void the_default_and_the_model_cards_formats_render_exactly(void **state)
{
    (void)state;
    render(NULL, "Find passages", "where do cats sleep", "Instruct: Find passages\nQuery: where do cats sleep");
    render("", "t", "q", "Instruct: t\nQuery: q");
    /* Qwen3-Embedding's get_detailed_instruct: f'Instruct: {task_description}\nQuery:{query}' */
    render("Instruct: {instruction}\nQuery:{text}", "Find passages", "cats", "Instruct: Find passages\nQuery:cats");
    /* holes in either order, literal braces kept */
    render("{text} <- {instruction} {x} {", "task", "q", "q <- task {x} {");
    render("query: {text}{instruction}", "", "", "query: ");
}

static void a_short_buffer_gets_a_prefix_and_the_full_length(void **state)
{
    (void)state;
    char out[8];
    memset(out, '#', sizeof out);
    size_t n = embed_render_query(out, 5, NULL, "abc", 3, "xyz", 3);
    assert_int_equal(n, strlen("Instruct: abc\nQuery: xyz"));
    assert_memory_equal(out, "Instr###", 8);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(the_default_and_the_model_cards_formats_render_exactly),
        cmocka_unit_test(a_short_buffer_gets_a_prefix_and_the_full_length),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
