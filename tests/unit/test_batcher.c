/* test_batcher.c: batches are length-sorted and cut by padded token budget and text cap. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "engine/batcher.h"

static void short_texts_are_not_padded_to_long_ones(void **state)
{
    (void)state;
    /* Two long texts among short ones: sorted, the short ones share a batch and the long ones
     * get their own, instead of 6 x 200 padded tokens. */
    int tokens[] = {200, 5, 6, 200, 5, 7};
    int order[6], ends[6];
    int nb = batch_plan(tokens, 6, 400, 64, order, ends);
    assert_int_equal(nb, 2);
    assert_int_equal(ends[0], 4);
    assert_int_equal(ends[1], 6);
    int expect[] = {1, 4, 2, 5, 0, 3}; /* 5, 5, 6, 7, 200, 200 (equal lengths keep input order) */
    assert_memory_equal(order, expect, sizeof expect);
}

static void padded_size_of_every_batch_fits_the_budget(void **state)
{
    (void)state;
    int tokens[100], order[100], ends[100];
    for (int i = 0; i < 100; i++)
        tokens[i] = 1 + (i * 37) % 97;
    int nb = batch_plan(tokens, 100, 512, 1000, order, ends);
    int start = 0, covered = 0;
    for (int b = 0; b < nb; b++) {
        int longest = 0;
        for (int k = start; k < ends[b]; k++)
            longest = tokens[order[k]] > longest ? tokens[order[k]] : longest;
        assert_true(longest * (ends[b] - start) <= 512);
        /* Greedy: the next text would not have fit. */
        if (ends[b] < 100)
            assert_true(tokens[order[ends[b]]] * (ends[b] - start + 1) > 512);
        covered += ends[b] - start;
        start = ends[b];
    }
    assert_int_equal(covered, 100);
}

static void text_cap_cuts_batches_too(void **state)
{
    (void)state;
    int tokens[10] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1}, order[10], ends[10];
    assert_int_equal(batch_plan(tokens, 10, 1000, 4, order, ends), 3);
    assert_int_equal(ends[0], 4);
    assert_int_equal(ends[2], 10);
}

static void a_text_over_the_budget_still_runs_alone(void **state)
{
    (void)state;
    int tokens[] = {600, 3}, order[2], ends[2];
    assert_int_equal(batch_plan(tokens, 2, 512, 8, order, ends), 2);
    assert_int_equal(ends[0], 1);
    assert_int_equal(order[1], 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(short_texts_are_not_padded_to_long_ones),
        cmocka_unit_test(padded_size_of_every_batch_fits_the_budget),
        cmocka_unit_test(text_cap_cuts_batches_too),
        cmocka_unit_test(a_text_over_the_budget_still_runs_alone),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
