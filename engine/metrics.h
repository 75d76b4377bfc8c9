/* metrics.h: the engine's Prometheus metrics: counters, gauges and fixed-bucket histograms kept
 * in atomics, and their text exposition (format 0.0.4). Workers only add to their own
 * MetricsWorker (one writer each, relaxed atomics: no lock, no allocation, no system call); the
 * HTTP thread (metrics_http.c) renders; the sampler thread (metrics_sampler.c) stores the stream
 * gauges it reads from Redis. With metrics.listen empty the engine has no Metrics at all and
 * every hook below is a NULL check. Nothing here logs, blocks or exits. */
#ifndef WEAVER_METRICS_H
#define WEAVER_METRICS_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config/config.h"

typedef struct Metrics Metrics;
typedef struct MetricsWorker MetricsWorker;

#define METRICS_KINDS 2 /* JobKind: 0 embed, 1 generate */

/* How a job left the engine (the `status` label of weaver_jobs_finished_total). */
typedef enum MetricsStatus {
    METRICS_OK = 0,        /* an ok result was written */
    METRICS_ERROR,         /* an error result (and a dead letter) was written */
    METRICS_DEAD_ONLY,     /* only a dead letter: the entry was trimmed, or its result key is not ours */
    METRICS_NSTATUS
} MetricsStatus;

/* Histograms per job kind, in seconds. */
typedef enum MetricsLatency { METRICS_QUEUE_WAIT = 0, METRICS_COMPUTE, METRICS_END_TO_END, METRICS_NLATENCY } MetricsLatency;

/* Histograms per embed forward batch. */
typedef enum MetricsBatch { METRICS_BATCH_TEXTS = 0, METRICS_BATCH_PADDED, METRICS_BATCH_FILL, METRICS_NBATCH } MetricsBatch;

#define METRICS_MAX_BUCKETS 24

typedef struct MetricsHist {
    _Atomic uint64_t bucket[METRICS_MAX_BUCKETS + 1]; /* non-cumulative; the last is +Inf */
    _Atomic uint64_t sum;                             /* in the histogram's fixed-point unit */
} MetricsHist;

/* One worker's counters. Written only by that worker's thread. */
struct MetricsWorker {
    _Atomic uint64_t finished[METRICS_KINDS][METRICS_NSTATUS];
    _Atomic uint64_t dead_letters[METRICS_KINDS];
    _Atomic uint64_t duplicates[METRICS_KINDS];
    _Atomic uint64_t reclaimed[METRICS_KINDS];
    _Atomic uint64_t redelivered[METRICS_KINDS];
    _Atomic uint64_t trimmed[METRICS_KINDS];
    _Atomic uint64_t texts_embedded, tokens_embedded, prompt_tokens, generated_tokens;
    _Atomic uint64_t busy_ns;
    _Atomic int dec_running, dec_waiting, kv_pages_used, kv_pages_total;
    atomic_bool connected;
    MetricsHist latency[METRICS_KINDS][METRICS_NLATENCY];
    MetricsHist batch[METRICS_NBATCH];
} __attribute__((aligned(64)));

/* What the sampler read from Redis. */
typedef struct MetricsDepths {
    long long length[METRICS_KINDS], pending[METRICS_KINDS], dead;
} MetricsDepths;

Metrics *metrics_create(int nworkers);
void metrics_free(Metrics *m); /* NULL-safe */
MetricsWorker *metrics_worker(Metrics *m, int index); /* NULL when m is NULL */

/* --- worker hooks (w may be NULL: metrics off) ---------------------------------------------- */

/* Single-writer add: a relaxed load and store, no locked instruction. */
static inline void metrics_add(_Atomic uint64_t *c, uint64_t n)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n, memory_order_relaxed);
}

void metrics_latency(MetricsWorker *w, int kind, MetricsLatency which, int64_t microseconds);
void metrics_batch(MetricsWorker *w, int texts, int real_tokens, int padded_tokens);
static inline void metrics_finished(MetricsWorker *w, int kind, MetricsStatus st)
{
    if (w)
        metrics_add(&w->finished[kind][st], 1);
}
void metrics_decoder(MetricsWorker *w, int running, int waiting, int kv_used, int kv_total);
void metrics_set_connected(MetricsWorker *w, bool connected);

/* --- other threads ---------------------------------------------------------------------------- */

/* Process-wide counters any thread may bump (atomic add); they work with m == NULL too, so
 * backends can call them without knowing whether metrics are on. */
void metrics_count_reconnect(void);
void metrics_count_remote_retry(void);
void metrics_count_remote_failure(void);

/* Build information (the labels of weaver_build_info); set once at start-up, safe to call while
 * the HTTP thread renders. */
void metrics_set_info(Metrics *m, const char *embedder_model, const char *decoder_model, const char *cohort,
                      const char *embedder_backend, const char *decoder_backend);

/* Readiness: the pin passed, every worker ran its first read, the engine is stopping. */
void metrics_set_pin_passed(Metrics *m);
void metrics_set_workers_ready(Metrics *m, int n);
void metrics_set_stopping(Metrics *m);
/* The sampler's latest reading; ok = false when Redis did not answer. */
void metrics_set_depths(Metrics *m, const MetricsDepths *d, bool ok);

/* Whether /readyz answers 200; when not, why in buf. */
bool metrics_ready(Metrics *m, char *why, size_t len);

/* The text exposition of everything, malloc'd (caller frees); NULL when out of memory. */
char *metrics_render(Metrics *m, size_t *len);

/* --- the threads ------------------------------------------------------------------------------ */

/* The HTTP server (metrics_http.c) on `listen` (as cfg_parse_listen reads it). NULL with err set
 * when it cannot listen. */
typedef struct MetricsServer MetricsServer;
MetricsServer *metrics_server_start(Metrics *m, const char *listen, char *err, size_t errlen);
void metrics_server_stop(MetricsServer *s); /* NULL-safe; waits for the thread */

/* The sampler (metrics_sampler.c): every metrics.sample_interval_ms, over a Redis connection of
 * its own, reads the stream depths into m and says whether Redis answered. */
typedef struct MetricsSampler MetricsSampler;
MetricsSampler *metrics_sampler_start(Metrics *m, const Config *cfg, const char *consumer, char *err,
                                      size_t errlen);
void metrics_sampler_stop(MetricsSampler *s); /* NULL-safe; waits for the thread */

#endif
