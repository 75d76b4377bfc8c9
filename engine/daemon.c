/* daemon.c: the start-up gate and the life of the engine process.
 * Order: (config already validated by main) -> Redis -> embedder -> cohort pin -> decoders and buffers
 * (per worker) -> consumer groups -> workers -> ready. SIGTERM/SIGINT stop reading; in-flight
 * batches get queue.shutdown_grace_ms to finish; whatever is still running then stays pending
 * in Redis for another consumer to reclaim, so a stop never loses a job. A lease thread keeps the
 * leases of every entry a worker holds, however long its batch runs. SIGPIPE is ignored (a
 * dropped connection is a write error and a reconnect); SIGHUP is logged and ignored (logs go to
 * stderr: there is nothing to reopen). With metrics.listen set, the HTTP endpoints start first
 * (so /healthz answers and /readyz says 503 through the whole start-up) and stop last, and a
 * sampler thread reads the stream gauges once Redis is reached. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "engine/engine.h"
#include "engine/log.h"
#include "engine/pin.h"
#include "queue/queue.h"

static long long mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The lease thread: every third of the visibility timeout, extends the lease of every entry each
 * worker holds, over a connection of its own, so a worker busy in one long batch or generation
 * step is never taken for dead. */
typedef struct LeaseKeeper {
    Engine *eng;
    Worker **workers;
    int n;
    Queue *q;
    atomic_bool done;
} LeaseKeeper;

static void *lease_main(void *arg)
{
    LeaseKeeper *lk = arg;
    int period = lk->eng->cfg->queue.visibility_timeout_ms / 3;
    long long next = 0;
    while (!atomic_load(&lk->done)) {
        if (mono_ms() >= next) {
            next = mono_ms() + period;
            if (!queue_connected(lk->q)) {
                if (queue_reconnect(lk->q) != QUEUE_OK)
                    continue;
                metrics_count_reconnect();
            }
            for (int i = 0; i < lk->n; i++)
                if (worker_extend_leases(lk->workers[i], lk->q) != 0)
                    LOG_W("extending the leases of worker %d failed: %s", i, queue_errstr(lk->q));
        }
        usleep(20 * 1000);
    }
    return NULL;
}

/* queue.consumer (bounded by the config to fit), else "<hostname>-<pid>" (at most 63 + 1 + 10
 * bytes, well within QUEUE_CONSUMER_MAX). */
static void consumer_base(const Config *cfg, char *buf, size_t len)
{
    if (cfg->queue.consumer && cfg->queue.consumer[0]) {
        snprintf(buf, len, "%s", cfg->queue.consumer);
        return;
    }
    char host[64] = "host";
    gethostname(host, sizeof host - 1);
    snprintf(buf, len, "%s-%d", host, (int)getpid());
}
_Static_assert(CFG_QUEUE_CONSUMER_MAX < QUEUE_CONSUMER_MAX && 63 + 1 + 10 < QUEUE_CONSUMER_MAX,
               "the consumer base must fit its buffer");

int daemon_run(const Config *cfg, int nworkers)
{
    LogLevel level = LOG_INFO;
    log_level_parse(cfg->log.level, &level);
    log_set_level(level);
    LogFormat format = LOG_FORMAT_TEXT;
    log_format_parse(cfg->log.format, &format);
    log_set_format(format);

    /* Signals are taken by this thread alone (sigtimedwait); workers never see them. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    Engine eng = {.cfg = cfg};
    consumer_base(cfg, eng.consumer_base, sizeof eng.consumer_base);
    int rc = ENGINE_EXIT_OK;
    Worker **workers = calloc((size_t)nworkers, sizeof *workers);
    pthread_t *threads = calloc((size_t)nworkers, sizeof *threads);
    if (!workers || !threads) {
        free(workers);
        free(threads);
        LOG_E("out of memory");
        return ENGINE_EXIT_SOFTWARE;
    }
    char err[512] = "";
    MetricsServer *server = NULL;
    MetricsSampler *sampler = NULL;
    Queue *admin = NULL;
    /* The device first: cuda:N on a machine without that GPU stops here, before Redis. */
    if (embedder_check_device(&cfg->embedder, err, sizeof err) != 0) {
        LOG_E("%s", err);
        rc = ENGINE_EXIT_MODEL;
        goto out_free_admin;
    }
    if (cfg->metrics.listen[0]) {
        eng.metrics = metrics_create(nworkers);
        if (!eng.metrics) {
            LOG_E("out of memory");
            rc = ENGINE_EXIT_SOFTWARE;
            goto out_free_admin;
        }
        metrics_set_info(eng.metrics, NULL, NULL, cfg->pin.cohort, cfg->embedder.backend,
                         cfg->decoder.enabled ? cfg->decoder.backend : "none");
        server = metrics_server_start(eng.metrics, cfg->metrics.listen, err, sizeof err);
        if (!server) {
            LOG_E("%s", err);
            rc = ENGINE_EXIT_OSERR;
            goto out_free_admin;
        }
        LOG_I("metrics: http://%s/metrics, /healthz, /readyz", cfg->metrics.listen);
    }

    LOG_I("connecting to Redis at %s:%d (deadline %d ms)", cfg->redis.host, cfg->redis.port,
          cfg->redis.startup_deadline_ms);
    admin = queue_open(&cfg->redis, &cfg->queue, eng.consumer_base);
    if (!queue_connected(admin)) {
        LOG_E("Redis is unreachable: %s", queue_errstr(admin));
        rc = ENGINE_EXIT_UNAVAILABLE;
        goto out_free_admin;
    }
    if (eng.metrics) {
        char name[160];
        snprintf(name, sizeof name, "%s-metrics", eng.consumer_base);
        sampler = metrics_sampler_start(eng.metrics, cfg, name, err, sizeof err);
        if (!sampler) {
            LOG_E("%s", err);
            rc = ENGINE_EXIT_SOFTWARE;
            goto out_free_admin;
        }
    }
    LOG_I("opening embedder backend \"%s\"", cfg->embedder.backend);
    BatchConfig batch = cfg->batch;
    batch.workers = nworkers; /* a budget sized from the device is shared by the workers */
    eng.embedder = embedder_open(&cfg->embedder, &batch, err, sizeof err);
    if (!eng.embedder) {
        LOG_E("%s", err);
        rc = ENGINE_EXIT_MODEL;
        goto out_free_admin;
    }
    embedder_set_cancel(eng.embedder, &eng.abandon); /* a stop past its grace ends a batch early */
    const EmbedderInfo *info = embedder_info(eng.embedder);
    if (info->precision_note[0]) LOG_W("%s", info->precision_note);
    LOG_I("embedder opened: model %s, dim %d, max %d tokens, device %s%s%s, token budget %d%s", info->model_id, info->dim,
          info->max_seq_len, cfg->embedder.device, info->precision[0] ? ", precision " : "", info->precision,
          embedder_token_budget(eng.embedder), cfg->batch.token_budget == 0 ? " (automatic)" : "");
    metrics_set_info(eng.metrics, info->model_id, NULL, NULL, NULL, NULL);

    /* The cohort pin: probe the embedder and compare with (or write) the cohort's pin before
     * any decoder is loaded or buffer allocated. A mismatch exits PIN_EXIT_MISMATCH (65). */
    rc = pin_gate(admin, eng.embedder, cfg->pin.cohort, err, sizeof err);
    if (rc != 0) {
        LOG_E("%s", err);
        goto out_free_workers;
    }
    metrics_set_pin_passed(eng.metrics);

    int created = 0;
    for (; created < nworkers; created++) {
        workers[created] = worker_create(&eng, created, err, sizeof err);
        if (!workers[created]) {
            LOG_E("%s", err);
            rc = ENGINE_EXIT_MODEL;
            goto out_free_workers;
        }
    }
    if (nworkers > 0 && worker_decoder_model(workers[0]))
        metrics_set_info(eng.metrics, NULL, worker_decoder_model(workers[0]), NULL, NULL, NULL);
    if (queue_ensure_groups(admin) != QUEUE_OK) {
        LOG_E("creating consumer groups: %s", queue_errstr(admin));
        rc = ENGINE_EXIT_UNAVAILABLE;
        goto out_free_workers;
    }
    LeaseKeeper lk = {.eng = &eng, .workers = workers, .n = nworkers,
                      .q = queue_open(&cfg->redis, &cfg->queue, eng.consumer_base)};
    pthread_t lease_thread;
    bool lease_started = lk.q && pthread_create(&lease_thread, NULL, lease_main, &lk) == 0;
    if (!lease_started) {
        LOG_E("cannot start the lease thread");
        queue_free(lk.q);
        rc = ENGINE_EXIT_SOFTWARE;
        goto out_free_workers;
    }
    int started = 0;
    for (; started < nworkers; started++) {
        int e = pthread_create(&threads[started], NULL, worker_main, workers[started]);
        if (e != 0) {
            LOG_E("starting worker %d: %s", started, strerror(e));
            atomic_store(&eng.stop, true);
            rc = ENGINE_EXIT_SOFTWARE;
            break;
        }
    }
    while (rc == ENGINE_EXIT_OK && atomic_load(&eng.workers_ready) < started &&
           atomic_load(&eng.workers_exited) == 0)
        usleep(10 * 1000);
    if (rc == ENGINE_EXIT_OK) {
        metrics_set_workers_ready(eng.metrics, atomic_load(&eng.workers_ready));
        LOG_I("ready: %d workers on %s and %s, consumer %s-*, token budget %d, embedder precision %s", started,
              queue_stream_key(admin, JOB_EMBED), queue_stream_key(admin, JOB_GENERATE), eng.consumer_base,
              embedder_token_budget(eng.embedder), info->precision[0] ? info->precision : "n/a");
    }

    /* Wait for a stop signal, logging progress now and then. */
    long last_done = 0;
    long long next_report = mono_ms() + 10000;
    while (rc == ENGINE_EXIT_OK && atomic_load(&eng.workers_exited) < started) {
        struct timespec tick = {0, 200 * 1000 * 1000};
        int sig = sigtimedwait(&sigs, NULL, &tick);
        if (sig == SIGHUP) {
            LOG_I("SIGHUP: ignored (logs go to stderr, the config is read only at start-up)");
            continue;
        }
        if (sig == SIGTERM || sig == SIGINT) {
            LOG_I("%s: stopping; finishing in-flight work (grace %d ms)", sig == SIGTERM ? "SIGTERM" : "SIGINT",
                  cfg->queue.shutdown_grace_ms);
            break;
        }
        if (mono_ms() >= next_report) {
            long done = atomic_load(&eng.jobs_done);
            if (done != last_done)
                LOG_I("%ld jobs finished (%ld in the last 10 s)", done, done - last_done);
            last_done = done;
            next_report = mono_ms() + 10000;
        }
    }
    metrics_set_stopping(eng.metrics);
    atomic_store(&eng.stop, true);
    long long deadline = mono_ms() + cfg->queue.shutdown_grace_ms;
    while (atomic_load(&eng.workers_exited) < started && mono_ms() < deadline)
        usleep(10 * 1000);
    if (atomic_load(&eng.workers_exited) < started) {
        /* Workers stop at their next check (between forward batches and generation steps) and
         * write no result after it; each logs how many jobs it leaves pending. */
        LOG_W("grace period over: leaving unfinished jobs pending for another consumer");
        atomic_store(&eng.abandon, true);
    }
    for (int i = 0; i < started; i++)
        pthread_join(threads[i], NULL);
    atomic_store(&lk.done, true);
    pthread_join(lease_thread, NULL);
    queue_free(lk.q);
    LOG_I("stopped after %ld jobs (%ld stream entries found trimmed while pending)",
          (long)atomic_load(&eng.jobs_done), (long)atomic_load(&eng.entries_trimmed));
    if (atomic_load(&eng.device_lost)) {
        LOG_E("the embedder's device was lost; its jobs in flight stay pending for other consumers (exit %d)",
              ENGINE_EXIT_DEVICE);
        rc = ENGINE_EXIT_DEVICE;
    }

out_free_workers:
    for (int i = 0; i < nworkers; i++)
        worker_free(workers[i]);
    embedder_close(eng.embedder);
out_free_admin:
    metrics_sampler_stop(sampler);
    queue_free(admin);
    metrics_server_stop(server);
    metrics_free(eng.metrics);
    free(workers);
    free(threads);
    return rc;
}
