/* test_decode_pool.c: the decoder's thread pool runs every chunk of a region exactly once, on
 * any thread count, region after region, including regions with fewer chunks than threads and
 * regions started after the workers have gone to sleep. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "engine/decode/pool.h"

typedef struct {
    atomic_int hits[512];
    atomic_int bad_thread;
    int nthreads;
} Ctx;

static void count(void *ctx, int chunk, int nchunks, int thread) {
    Ctx *c = ctx;
    (void)nchunks;
    if (thread < 0 || thread >= c->nthreads) atomic_store(&c->bad_thread, 1);
    atomic_fetch_add(&c->hits[chunk], 1);
}

static void every_chunk_runs_exactly_once(void **state) {
    (void)state;
    for (int nth = 1; nth <= 4; nth++) {
        Pool *p = pool_create(nth);
        assert_non_null(p);
        assert_int_equal(pool_size(p), nth);
        Ctx *c = calloc(1, sizeof *c);
        c->nthreads = nth;
        for (int rep = 0; rep < 2000; rep++) {
            int n = rep % 2 ? 1 + rep % 7 : 1 + (rep * 37) % 512;
            for (int i = 0; i < n; i++) atomic_store(&c->hits[i], 0);
            pool_run(p, count, c, n);
            for (int i = 0; i < n; i++) assert_int_equal(atomic_load(&c->hits[i]), 1);
            if (rep % 500 == 0) { /* let the workers fall asleep, then wake them */
                struct timespec ts = {0, 5 * 1000 * 1000};
                nanosleep(&ts, NULL);
            }
        }
        pool_run(p, count, c, 0); /* nothing to do */
        assert_int_equal(atomic_load(&c->bad_thread), 0);
        free(c);
        pool_free(p);
    }
    pool_free(NULL);
}

/* More threads than cores, so workers are preempted mid-claim, and regions alternating between
 * one chunk and many, each with its own counters: a worker waking late must never run a chunk of
 * the next region against the last one's claim (it would run twice: a residual added twice), and
 * no chunk may still be running, or run again, once pool_run has returned. */
static void late_workers_never_run_a_chunk_twice(void **state) {
    (void)state;
    enum { REGIONS = 20000, NTH = 8 };
    Pool *p = pool_create(NTH);
    assert_non_null(p);
    Ctx *c = calloc(2, sizeof *c);
    c[0].nthreads = c[1].nthreads = NTH;
    for (int rep = 0; rep < REGIONS; rep++) {
        Ctx *cur = &c[rep % 2], *prev = &c[(rep + 1) % 2];
        int n = rep % 2 ? 1 : 64, np = rep % 2 ? 64 : 1;
        for (int i = 0; i < n; i++) atomic_store(&cur->hits[i], 0);
        pool_run(p, count, cur, n);
        for (int i = 0; i < n; i++) assert_int_equal(atomic_load(&cur->hits[i]), 1);
        if (rep > 0)
            for (int i = 0; i < np; i++) assert_int_equal(atomic_load(&prev->hits[i]), 1);
    }
    assert_int_equal(atomic_load(&c[0].bad_thread) | atomic_load(&c[1].bad_thread), 0);
    free(c);
    pool_free(p);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(every_chunk_runs_exactly_once),
        cmocka_unit_test(late_workers_never_run_a_chunk_twice),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
