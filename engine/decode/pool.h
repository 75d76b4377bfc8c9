/* pool.h: a small fork-join thread pool for the decoder's forward pass. Workers spin briefly
 * between regions (a forward pass runs a few hundred short regions) and then sleep. */
#ifndef WEAVER_DECODE_POOL_H
#define WEAVER_DECODE_POOL_H

typedef void (*PoolFn)(void *ctx, int ith, int nth);
typedef struct Pool Pool;

/* nthreads counts the caller; 1 = no worker threads. NULL on failure. */
Pool *pool_create(int nthreads);
void pool_free(Pool *p); /* NULL-safe */
int pool_size(const Pool *p);
/* Runs fn(ctx, i, n) on every thread (the caller is thread 0) and returns when all are done. */
void pool_run(Pool *p, PoolFn fn, void *ctx);

#endif
