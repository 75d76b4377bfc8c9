/* metrics_sampler.c: the thread that samples the queue gauges (stream length, pending entries,
 * dead letters) every metrics.sample_interval_ms over a Redis connection of its own, so a
 * scrape never touches Redis and a worker never waits for a sample. Each sample also tells
 * /readyz whether Redis is reachable; a lost connection is retried once per interval.
 * Must not: write any key, or share its connection with another thread. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "engine/metrics.h"
#include "queue/queue.h"

struct MetricsSampler {
    Metrics *m;
    Queue *q;
    int interval_ms;
    atomic_bool done;
    pthread_t thread;
};

static long long mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

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

static void *sampler_main(void *arg)
{
    MetricsSampler *s = arg;
    while (!atomic_load(&s->done)) {
        long long next = mono_ms() + s->interval_ms;
        sample(s);
        while (!atomic_load(&s->done) && mono_ms() < next)
            usleep(20 * 1000);
    }
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
    s->q = queue_open(&cfg->redis, &cfg->queue, consumer);
    if (!s->q) {
        snprintf(err, errlen, "out of memory");
        free(s);
        return NULL;
    }
    if (pthread_create(&s->thread, NULL, sampler_main, s) != 0) {
        snprintf(err, errlen, "cannot start the metrics sampler thread");
        queue_free(s->q);
        free(s);
        return NULL;
    }
    return s;
}

void metrics_sampler_stop(MetricsSampler *s)
{
    if (!s)
        return;
    atomic_store(&s->done, true);
    pthread_join(s->thread, NULL);
    queue_free(s->q);
    free(s);
}
