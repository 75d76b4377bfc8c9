/* engine.h: the running daemon: shared state (config, embedder weights, stop flag) and the
 * worker threads that turn stream entries into results. Nothing here exits the process;
 * daemon_run returns an exit code for main.c. */
#ifndef WEAVER_ENGINE_H
#define WEAVER_ENGINE_H

#include <stdatomic.h>
#include <stdbool.h>

#include "config/config.h"
#include "engine/embedder.h"
#include "queue/queue.h"
#include "engine/metrics.h"

#define WEAVER_VERSION "0.1.0"

/* Exit codes of the daemon (documented in docs/operations.md). */
#define ENGINE_EXIT_OK 0
#define ENGINE_EXIT_SOFTWARE 70  /* EX_SOFTWARE: an internal failure */
#define ENGINE_EXIT_UNAVAILABLE 69 /* EX_UNAVAILABLE: Redis unreachable by the start-up deadline */
#define ENGINE_EXIT_MODEL 66     /* EX_NOINPUT: a model could not be opened, or the device named by
                                  * embedder.device is not there (no GPU, driver, N out of range) */
#define ENGINE_EXIT_OSERR 71     /* EX_OSERR: cannot listen on metrics.listen (address in use, ...) */
#define ENGINE_EXIT_DEVICE 75    /* EX_TEMPFAIL: the GPU context was lost while running (a sticky CUDA
                                  * error); the jobs in flight were left pending, none acknowledged:
                                  * restart (here or elsewhere) and they are picked up again */

/* Most worker threads of one engine (--workers): worker N's consumer name is "<base>-<N>", so
 * this bounds the suffix that queue.consumer leaves room for (CFG_QUEUE_CONSUMER_MAX). */
#define ENGINE_WORKERS_MAX 256

typedef struct Engine {
    const Config *cfg;
    Embedder *embedder;        /* shared weights; each worker has its own workspace */
    Metrics *metrics;          /* NULL when metrics.listen is empty */
    char consumer_base[QUEUE_CONSUMER_MAX]; /* queue.consumer, or "<hostname>-<pid>" */
    atomic_bool stop;          /* set on SIGTERM/SIGINT: stop reading, finish in-flight work */
    atomic_bool abandon;       /* set when the grace period ran out: leave in-flight work pending */
    atomic_bool device_lost;   /* a worker's device failed for good: stop now, exit ENGINE_EXIT_DEVICE */
    atomic_long jobs_done;
    atomic_long entries_trimmed; /* pending entries found deleted from their stream */
    atomic_int workers_ready;
    atomic_int workers_exited;
} Engine;

typedef struct Worker Worker;

/* Creates worker `index` (its own Redis connection, workspace, generator, buffers). NULL with
 * err set on failure. */
Worker *worker_create(Engine *eng, int index, char *err, size_t errlen);
void worker_free(Worker *w);   /* NULL-safe */
/* The thread body: runs until eng->stop and its in-flight work is done (or abandoned). */
void *worker_main(void *w);
/* The model id of worker w's decoder, or NULL when it has none (build info). */
const char *worker_decoder_model(const Worker *w);
/* Keeps the leases of every entry worker w holds (its batch and generations in flight), through
 * lq, the lease thread's own connection. Safe to call while the worker runs. 0 or < 0. */
struct Queue;
int worker_extend_leases(Worker *w, struct Queue *lq);

/* The daemon: start-up gate, workers, signal handling, graceful stop. Returns an exit code. */
int daemon_run(const Config *cfg, int workers);

#endif
