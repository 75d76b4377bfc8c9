/* pool.h: a small fork-join thread pool for the decoder's forward pass. A region is split into
 * chunks that threads claim one at a time, so a thread the OS has descheduled (a loaded
 * machine) only delays the chunk it holds, never a fixed share. Idle threads spin briefly
 * (a forward pass runs a few hundred short regions back to back) and then sleep on a futex:
 * nothing burns CPU between steps. */
#ifndef WEAVER_DECODE_POOL_H
#define WEAVER_DECODE_POOL_H

/* Runs chunk `chunk` of `nchunks`; `thread` (0 = the caller) indexes per-thread scratch. */
typedef void (*PoolFn)(void *ctx, int chunk, int nchunks, int thread);
typedef struct Pool Pool;

/* nthreads counts the caller; 1 = no worker threads. NULL on failure. */
Pool *pool_create(int nthreads);
void pool_free(Pool *p); /* NULL-safe */
int pool_size(const Pool *p);
/* Runs fn on every chunk in [0, nchunks) across the threads (the caller takes part) and
 * returns when all chunks are done. nchunks < 1 does nothing. */
void pool_run(Pool *p, PoolFn fn, void *ctx, int nchunks);

#endif
