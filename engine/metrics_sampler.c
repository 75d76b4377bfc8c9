/* metrics_sampler.c: the thread that samples the queue gauges (stream length, pending entries,
 * dead letters) every metrics.sample_interval_ms over a Redis connection of its own, so a
 * scrape never touches Redis and a worker never waits for a sample. Each sample also tells
 * /readyz whether Redis is reachable; a lost connection is retried once per interval.
 * Must not: write any key, or share its connection with another thread. */
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "engine/metrics.h"
#include "queue/queue.h"

struct MetricsSampler {
    Metrics *m;
    Queue *q;
    int interval_ms;
    bool done;              /* under lock; the thread sleeps on wake between samples */
    pthread_mutex_t lock;
    pthread_cond_t wake;
    pthread_t thread;
};

static void sample(MetricsSampler *s)
{
    if (!queue_connected(s->q)) {
        if (queue_reconnect(s->q) != QUEUE_OK) {
            metrics_set_depths(s->m, NULL, false);
            return;
        }
        metrics_count_reconnect();
    }
    QueueDepths d;
    int rc = queue_depths(s->q, &d);
    MetricsDepths md = {.dead = d.dead};
    for (int k = 0; k < METRICS_KINDS; k++) {
        md.length[k] = d.length[k];
        md.pending[k] = d.pending[k];
    }
    /* A Redis error reply (e.g. a loading dataset) counts as unreachable too. */
    metrics_set_depths(s->m, &md, rc == QUEUE_OK);
}

/* Samples, then sleeps until the next interval or until stopped: no wake-ups in between. */
static void *sampler_main(void *arg)
{
    MetricsSampler *s = arg;
    pthread_mutex_lock(&s->lock);
    while (!s->done) {
        pthread_mutex_unlock(&s->lock);
        struct timespec next;
        clock_gettime(CLOCK_MONOTONIC, &next);
        sample(s);
        next.tv_sec += s->interval_ms / 1000;
        next.tv_nsec += (long)(s->interval_ms % 1000) * 1000000;
        if (next.tv_nsec >= 1000000000) {
            next.tv_sec++;
            next.tv_nsec -= 1000000000;
        }
        pthread_mutex_lock(&s->lock);
        while (!s->done && pthread_cond_timedwait(&s->wake, &s->lock, &next) == 0)
            ;
    }
    pthread_mutex_unlock(&s->lock);
    return NULL;
}

MetricsSampler *metrics_sampler_start(Metrics *m, const Config *cfg, const char *consumer, char *err, size_t errlen)
{
    MetricsSampler *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    s->m = m;
    s->interval_ms = cfg->metrics.sample_interval_ms;
    pthread_mutex_init(&s->lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&s->wake, &ca);
    pthread_condattr_destroy(&ca);
    s->q = queue_open(&cfg->redis, &cfg->queue, consumer);
    if (!s->q || pthread_create(&s->thread, NULL, sampler_main, s) != 0) {
        snprintf(err, errlen, s->q ? "cannot start the metrics sampler thread" : "out of memory");
        queue_free(s->q);
        pthread_cond_destroy(&s->wake);
        pthread_mutex_destroy(&s->lock);
        free(s);
        return NULL;
    }
    return s;
}

void metrics_sampler_stop(MetricsSampler *s)
{
    if (!s)
        return;
    pthread_mutex_lock(&s->lock);
    s->done = true;
    pthread_cond_signal(&s->wake);
    pthread_mutex_unlock(&s->lock);
    pthread_join(s->thread, NULL);
    queue_free(s->q);
    pthread_cond_destroy(&s->wake);
    pthread_mutex_destroy(&s->lock);
    free(s);
}
