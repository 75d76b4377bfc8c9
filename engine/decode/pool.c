/* pool.c: fork-join pool (see pool.h). A region is published by writing its function and
 * bumping `claim`, a 64-bit word holding (generation << 32 | next chunk); threads claim chunks
 * with a compare-and-swap that also checks the generation, so a thread waking late can never
 * take work from a later region. The caller waits for `done` to reach the chunk count.
 * Waiting is a short spin, then a futex sleep (Linux); elsewhere a yield loop. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "engine/decode/pool.h"

#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>

#if defined(__linux__)
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define CPU_RELAX() _mm_pause()
#else
#define CPU_RELAX() ((void)0)
#endif

/* ~50-200 us of spinning before sleeping: long enough to bridge the serial work between the
 * regions of one forward pass, short enough not to steal a loaded machine's CPU. */
enum { SPIN_ITERS = 2000 };

typedef struct Worker {
    struct Pool *pool;
    int ith;
    pthread_t th;
} Worker;

struct Pool {
    int n;
    Worker *workers;
    _Atomic(PoolFn) fn;
    _Atomic(void *) ctx;
    atomic_int nchunks;
    _Atomic uint64_t claim; /* generation << 32 | next chunk */
    atomic_uint gen;        /* futex word for sleeping workers: the current generation */
    atomic_uint done;       /* futex word for the caller: chunks finished */
    atomic_int sleepers, caller_sleeping, quit;
};

static void futex_wait(atomic_uint *addr, unsigned val) {
#if defined(__linux__)
    syscall(SYS_futex, (unsigned *)addr, FUTEX_WAIT_PRIVATE, val, NULL, NULL, 0);
#else
    (void)addr;
    (void)val;
    sched_yield();
#endif
}

static void futex_wake(atomic_uint *addr, int n) {
#if defined(__linux__)
    syscall(SYS_futex, (unsigned *)addr, FUTEX_WAKE_PRIVATE, n, NULL, NULL, 0);
#else
    (void)addr;
    (void)n;
#endif
}

/* Claims and runs chunks of generation g until none are left (or the region is over). The claim
 * word is read first and the region's fn/ctx/nchunks after it: pool_run closes the claim word
 * (next generation, no chunk left) before it writes a new region's fields, so a claim that
 * succeeds proves the fields read between that read and the claim are region g's. Reading them
 * first let a worker waking late take a chunk of the next region against the old counter, run it
 * twice (a residual added twice) and count it into the wrong region's done. */
static void run_chunks(Pool *p, unsigned g, int thread) {
    for (;;) {
        uint64_t w = atomic_load_explicit(&p->claim, memory_order_acquire);
        if ((unsigned)(w >> 32) != g) return;
        PoolFn fn = atomic_load_explicit(&p->fn, memory_order_acquire);
        void *ctx = atomic_load_explicit(&p->ctx, memory_order_acquire);
        int nchunks = atomic_load_explicit(&p->nchunks, memory_order_acquire);
        if ((uint32_t)w >= (uint32_t)nchunks) return;
        if (!atomic_compare_exchange_strong_explicit(&p->claim, &w, w + 1, memory_order_acq_rel, memory_order_acquire))
            continue;
        int chunk = (int)(uint32_t)w;
        fn(ctx, chunk, nchunks, thread);
        unsigned d = atomic_fetch_add(&p->done, 1) + 1; /* seq_cst: pairs with caller_sleeping */
        if ((int)d == nchunks && atomic_load(&p->caller_sleeping)) futex_wake(&p->done, 1);
    }
}

static void *worker_main(void *arg) {
    Worker *wk = arg;
    Pool *p = wk->pool;
    unsigned seen = 0;
    for (;;) {
        unsigned g;
        int spins = 0;
        while ((g = atomic_load_explicit(&p->gen, memory_order_acquire)) == seen && !atomic_load(&p->quit)) {
            if (++spins < SPIN_ITERS) {
                CPU_RELAX();
                continue;
            }
            atomic_fetch_add(&p->sleepers, 1);
            futex_wait(&p->gen, seen); /* returns at once if gen moved on meanwhile */
            atomic_fetch_sub(&p->sleepers, 1);
            spins = 0;
        }
        if (atomic_load(&p->quit)) return NULL;
        seen = g;
        run_chunks(p, g, wk->ith);
    }
}

Pool *pool_create(int nthreads) {
    if (nthreads < 1) nthreads = 1;
    Pool *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->n = nthreads;
    p->workers = calloc((size_t)nthreads, sizeof *p->workers);
    if (!p->workers) {
        free(p);
        return NULL;
    }
    for (int i = 1; i < nthreads; i++) {
        p->workers[i].pool = p;
        p->workers[i].ith = i;
        if (pthread_create(&p->workers[i].th, NULL, worker_main, &p->workers[i]) != 0) {
            p->n = i;
            pool_free(p);
            return NULL;
        }
    }
    return p;
}

void pool_free(Pool *p) {
    if (!p) return;
    atomic_store(&p->quit, 1);
    atomic_fetch_add(&p->gen, 1);
    futex_wake(&p->gen, INT_MAX);
    for (int i = 1; i < p->n; i++) pthread_join(p->workers[i].th, NULL);
    free(p->workers);
    free(p);
}

int pool_size(const Pool *p) { return p ? p->n : 1; }

void pool_run(Pool *p, PoolFn fn, void *ctx, int nchunks) {
    if (nchunks < 1) return;
    if (!p || p->n == 1 || nchunks == 1) {
        for (int c = 0; c < nchunks; c++) fn(ctx, c, nchunks, 0);
        return;
    }
    unsigned g = atomic_load_explicit(&p->gen, memory_order_relaxed) + 1;
    /* closed: the new generation with no chunk to claim, until the fields below are written */
    atomic_store(&p->claim, (uint64_t)g << 32 | UINT32_MAX);
    atomic_store_explicit(&p->fn, fn, memory_order_relaxed);
    atomic_store_explicit(&p->ctx, ctx, memory_order_relaxed);
    atomic_store_explicit(&p->nchunks, nchunks, memory_order_relaxed);
    atomic_store_explicit(&p->done, 0, memory_order_relaxed);
    atomic_store_explicit(&p->claim, (uint64_t)g << 32, memory_order_release);
    atomic_store(&p->gen, g); /* seq_cst: pairs with a sleeper's increment of `sleepers` */
    if (atomic_load(&p->sleepers) > 0) futex_wake(&p->gen, INT_MAX);
    run_chunks(p, g, 0);
    int spins = 0;
    unsigned d;
    while ((int)(d = atomic_load_explicit(&p->done, memory_order_acquire)) < nchunks) {
        if (++spins < SPIN_ITERS) {
            CPU_RELAX();
            continue;
        }
        atomic_store(&p->caller_sleeping, 1);
        d = atomic_load(&p->done);
        if ((int)d < nchunks) futex_wait(&p->done, d);
        atomic_store(&p->caller_sleeping, 0);
        spins = 0;
    }
}
