/* batcher.c: length-sorted, token-budget batch planning (see batcher.h). */
#include "engine/batcher.h"

#include <stdlib.h>

static int by_tokens(const void *a, const void *b, void *ctx)
{
    const int *tok = ctx;
    int x = *(const int *)a, y = *(const int *)b;
    if (tok[x] != tok[y])
        return (tok[x] > tok[y]) - (tok[x] < tok[y]);
    return (x > y) - (x < y); /* stable: equal lengths keep input order */
}

int batch_plan(const int *tokens, int n, int token_budget, int max_texts, int *order, int *ends)
{
    for (int i = 0; i < n; i++)
        order[i] = i;
    qsort_r(order, (size_t)n, sizeof *order, by_tokens, (void *)tokens);
    int nb = 0;
    for (int start = 0; start < n;) {
        int count = 0, longest = 0;
        while (start + count < n && count < max_texts) {
            int t = tokens[order[start + count]];
            int widest = t > longest ? t : longest;
            if (count > 0 && (long long)widest * (count + 1) > token_budget)
                break;
            longest = widest;
            count++;
        }
        start += count;
        ends[nb++] = start;
    }
    return nb;
}
