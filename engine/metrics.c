/* metrics.c: the metric registry behind metrics.h and its Prometheus text exposition (format
 * 0.0.4). Every family has a fixed, bounded label set (kind, status, worker index): never a job
 * id, a key or a text. Histograms have fixed buckets chosen here; values are kept in integer
 * fixed-point units (microseconds, parts per million) so a worker's observation is a bucket
 * search and two relaxed stores. Rendering runs on the HTTP thread and only reads atomics (plus
 * the build-info strings under a mutex that workers never take). Must not: log, exit, or make a
 * worker wait. */
#include "engine/metrics.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/engine.h"

/* --- histogram definitions ------------------------------------------------------------------- */

typedef struct HistDef {
    const char *name;
    const char *help;
    double unit;                            /* fixed-point value * unit = the base unit */
    int nb;
    uint64_t le[METRICS_MAX_BUCKETS];       /* upper bounds, fixed point */
} HistDef;

#define LATENCY_BUCKETS_US                                                                          \
    18, { 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 500000, 1000000, 2500000, 5000000, \
          10000000, 30000000, 60000000, 120000000, 300000000 }

static const HistDef latency_defs[METRICS_NLATENCY] = {
    {"weaver_job_queue_wait_seconds",
     "Time from a job's XADD (its stream entry id) to the start of its processing, per delivery.", 1e-6,
     LATENCY_BUCKETS_US},
    {"weaver_job_compute_seconds",
     "Model time of a job: its embed chunk's forward batches, or a generation from submit to its last token.",
     1e-6, LATENCY_BUCKETS_US},
    {"weaver_job_end_to_end_seconds", "Time from a job's XADD to its result being written.", 1e-6,
     LATENCY_BUCKETS_US},
};

static const HistDef batch_defs[METRICS_NBATCH] = {
    {"weaver_embed_batch_texts", "Texts per embedder forward batch.", 1,
     13, {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096}},
    {"weaver_embed_batch_padded_tokens",
     "Padded tokens per embedder forward batch (texts times the longest, as batch.token_budget counts).", 1,
     13, {16, 64, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536, 131072, 262144}},
    {"weaver_embed_batch_fill_ratio", "Real tokens over padded tokens per embedder forward batch.", 1e-6,
     12, {100000, 200000, 300000, 400000, 500000, 600000, 700000, 800000, 900000, 950000, 990000, 1000000}},
};

static const char *const kind_names[METRICS_KINDS] = {"embed", "generate"};
static const char *const status_names[METRICS_NSTATUS] = {"ok", "error", "dead_letter"};

/* --- the registry ---------------------------------------------------------------------------- */

struct Metrics {
    int nworkers;
    MetricsWorker *workers;     /* nworkers, cache-line aligned */
    double start_time;
    pthread_mutex_t info_lock;
    char *info[5];              /* embedder model, decoder model, cohort, embedder backend, decoder backend */
    atomic_bool pin_passed, stopping, sampled, redis_up;
    atomic_int workers_ready;
    _Atomic long long depth_length[METRICS_KINDS], depth_pending[METRICS_KINDS], depth_dead;
    _Atomic long long sampled_at_ms;
};

static _Atomic uint64_t g_reconnects, g_remote_retries, g_remote_failures;

void metrics_count_reconnect(void) { atomic_fetch_add_explicit(&g_reconnects, 1, memory_order_relaxed); }
void metrics_count_remote_retry(void) { atomic_fetch_add_explicit(&g_remote_retries, 1, memory_order_relaxed); }
void metrics_count_remote_failure(void) { atomic_fetch_add_explicit(&g_remote_failures, 1, memory_order_relaxed); }

static double wall_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

Metrics *metrics_create(int nworkers)
{
    Metrics *m = calloc(1, sizeof *m);
    if (!m)
        return NULL;
    m->nworkers = nworkers;
    m->workers = aligned_alloc(64, ((size_t)nworkers * sizeof *m->workers + 63) / 64 * 64);
    if (!m->workers) {
        free(m);
        return NULL;
    }
    memset(m->workers, 0, (size_t)nworkers * sizeof *m->workers);
    for (int i = 0; i < nworkers; i++)
        atomic_store(&m->workers[i].connected, true);
    m->start_time = wall_s();
    pthread_mutex_init(&m->info_lock, NULL);
    return m;
}

void metrics_free(Metrics *m)
{
    if (!m)
        return;
    for (int i = 0; i < 5; i++)
        free(m->info[i]);
    pthread_mutex_destroy(&m->info_lock);
    free(m->workers);
    free(m);
}

MetricsWorker *metrics_worker(Metrics *m, int index)
{
    return m && index >= 0 && index < m->nworkers ? &m->workers[index] : NULL;
}

static void observe(MetricsHist *h, const HistDef *d, int64_t v)
{
    uint64_t u = v < 0 ? 0 : (uint64_t)v;
    int b = 0;
    while (b < d->nb && u > d->le[b])
        b++;
    metrics_add(&h->bucket[b], 1);
    metrics_add(&h->sum, u);
}

void metrics_latency(MetricsWorker *w, int kind, MetricsLatency which, int64_t microseconds)
{
    if (w)
        observe(&w->latency[kind][which], &latency_defs[which], microseconds);
}

void metrics_batch(MetricsWorker *w, int texts, int real_tokens, int padded_tokens)
{
    if (!w || texts <= 0)
        return;
    observe(&w->batch[METRICS_BATCH_TEXTS], &batch_defs[METRICS_BATCH_TEXTS], texts);
    observe(&w->batch[METRICS_BATCH_PADDED], &batch_defs[METRICS_BATCH_PADDED], padded_tokens);
    int64_t fill = padded_tokens > 0 ? (int64_t)real_tokens * 1000000 / padded_tokens : 1000000;
    observe(&w->batch[METRICS_BATCH_FILL], &batch_defs[METRICS_BATCH_FILL], fill);
}

void metrics_decoder(MetricsWorker *w, int running, int waiting, int kv_used, int kv_total)
{
    if (!w)
        return;
    atomic_store_explicit(&w->dec_running, running, memory_order_relaxed);
    atomic_store_explicit(&w->dec_waiting, waiting, memory_order_relaxed);
    atomic_store_explicit(&w->kv_pages_used, kv_used, memory_order_relaxed);
    atomic_store_explicit(&w->kv_pages_total, kv_total, memory_order_relaxed);
}

void metrics_set_connected(MetricsWorker *w, bool connected)
{
    if (w && atomic_load_explicit(&w->connected, memory_order_relaxed) != connected)
        atomic_store(&w->connected, connected);
}

void metrics_set_info(Metrics *m, const char *embedder_model, const char *decoder_model, const char *cohort,
                      const char *embedder_backend, const char *decoder_backend)
{
    if (!m)
        return;
    const char *v[5] = {embedder_model, decoder_model, cohort, embedder_backend, decoder_backend};
    pthread_mutex_lock(&m->info_lock);
    for (int i = 0; i < 5; i++) {
        if (!v[i])
            continue;
        free(m->info[i]);
        m->info[i] = strdup(v[i]);
    }
    pthread_mutex_unlock(&m->info_lock);
}

void metrics_set_pin_passed(Metrics *m)
{
    if (m)
        atomic_store(&m->pin_passed, true);
}

void metrics_set_workers_ready(Metrics *m, int n)
{
    if (m)
        atomic_store(&m->workers_ready, n);
}

void metrics_set_stopping(Metrics *m)
{
    if (m)
        atomic_store(&m->stopping, true);
}

void metrics_set_depths(Metrics *m, const MetricsDepths *d, bool ok)
{
    if (!m)
        return;
    if (ok) {
        for (int k = 0; k < METRICS_KINDS; k++) {
            atomic_store(&m->depth_length[k], d->length[k]);
            atomic_store(&m->depth_pending[k], d->pending[k]);
        }
        atomic_store(&m->depth_dead, d->dead);
        atomic_store(&m->sampled_at_ms, (long long)(wall_s() * 1000));
        atomic_store(&m->sampled, true);
    }
    atomic_store(&m->redis_up, ok);
}

static int workers_disconnected(Metrics *m)
{
    int n = 0;
    for (int i = 0; i < m->nworkers; i++)
        n += !atomic_load(&m->workers[i].connected);
    return n;
}

bool metrics_ready(Metrics *m, char *why, size_t len)
{
    int off;
    if (atomic_load(&m->stopping))
        snprintf(why, len, "stopping");
    else if (!atomic_load(&m->pin_passed))
        snprintf(why, len, "starting: the cohort pin has not been verified yet");
    else if (atomic_load(&m->workers_ready) < m->nworkers)
        snprintf(why, len, "starting: %d of %d workers ready", atomic_load(&m->workers_ready), m->nworkers);
    else if (!atomic_load(&m->redis_up))
        snprintf(why, len, "Redis is unreachable");
    else if ((off = workers_disconnected(m)) > 0)
        snprintf(why, len, "%d worker%s reconnecting to Redis", off, off == 1 ? "" : "s");
    else
        return true;
    return false;
}

/* --- rendering ------------------------------------------------------------------------------- */

typedef struct Out {
    char *p;
    size_t len, cap;
    bool oom;
} Out;

__attribute__((format(printf, 2, 3))) static void outf(Out *o, const char *fmt, ...)
{
    for (;;) {
        if (o->oom)
            return;
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(o->p + o->len, o->cap - o->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            o->oom = true;
            return;
        }
        if ((size_t)n < o->cap - o->len) {
            o->len += (size_t)n;
            return;
        }
        size_t cap = (o->cap + (size_t)n + 1) * 2;
        char *p = realloc(o->p, cap);
        if (!p) {
            o->oom = true;
            return;
        }
        o->p = p;
        o->cap = cap;
    }
}

/* A label value with \, " and newline escaped, as the exposition format requires. */
static void out_label(Out *o, const char *v)
{
    for (const char *s = v ? v : ""; *s; s++) {
        if (*s == '\\')
            outf(o, "\\\\");
        else if (*s == '"')
            outf(o, "\\\"");
        else if (*s == '\n')
            outf(o, "\\n");
        else
            outf(o, "%c", *s);
    }
}

static void family(Out *o, const char *name, const char *type, const char *help)
{
    outf(o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static uint64_t ld(const _Atomic uint64_t *v) { return atomic_load_explicit(v, memory_order_relaxed); }

/* Sum over every worker of the counter at byte `offset` in MetricsWorker. */
static uint64_t sum_at(const Metrics *m, size_t offset)
{
    uint64_t s = 0;
    for (int i = 0; i < m->nworkers; i++)
        s += ld((const _Atomic uint64_t *)((const char *)&m->workers[i] + offset));
    return s;
}

#define SUM(m, field) sum_at((m), offsetof(MetricsWorker, field))

static void counter_by_kind(Out *o, Metrics *m, const char *name, const char *help, size_t offset)
{
    family(o, name, "counter", help);
    for (int k = 0; k < METRICS_KINDS; k++) {
        uint64_t s = sum_at(m, offset + (size_t)k * sizeof(uint64_t));
        outf(o, "%s{kind=\"%s\"} %llu\n", name, kind_names[k], (unsigned long long)s);
    }
}

static void counter(Out *o, const char *name, const char *help, uint64_t v)
{
    family(o, name, "counter", help);
    outf(o, "%s %llu\n", name, (unsigned long long)v);
}

static void gauge(Out *o, const char *name, const char *help, double v)
{
    family(o, name, "gauge", help);
    outf(o, "%s %.17g\n", name, v);
}

/* One histogram series: the workers' buckets summed, cumulative, with _sum and _count. */
static void hist_series(Out *o, Metrics *m, const HistDef *d, const char *label, size_t offset)
{
    uint64_t cum = 0, sum = 0;
    for (int b = 0; b <= d->nb; b++) {
        uint64_t c = 0;
        for (int i = 0; i < m->nworkers; i++) {
            const MetricsHist *h = (const MetricsHist *)((const char *)&m->workers[i] + offset);
            c += ld(&h->bucket[b]);
            if (b == 0)
                sum += ld(&h->sum);
        }
        cum += c;
        if (b < d->nb)
            outf(o, "%s_bucket{%s%sle=\"%.6g\"} %llu\n", d->name, label, label[0] ? "," : "", (double)d->le[b] * d->unit,
                 (unsigned long long)cum);
        else
            outf(o, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", d->name, label, label[0] ? "," : "", (unsigned long long)cum);
    }
    const char *open = label[0] ? "{" : "", *close = label[0] ? "}" : "";
    outf(o, "%s_sum%s%s%s %.9g\n", d->name, open, label, close, (double)sum * d->unit);
    outf(o, "%s_count%s%s%s %llu\n", d->name, open, label, close, (unsigned long long)cum);
}

static const char *backends_compiled(void)
{
#ifdef WEAVER_TEST_BACKENDS
    return "embedder:native,remote,test-hash;decoder:native,test-echo";
#else
    return "embedder:native,remote;decoder:native";
#endif
}

static const char *devices_compiled(void)
{
#ifdef WEAVER_HAVE_CUDA
    return "cpu,cuda";
#else
    return "cpu";
#endif
}

static void render_info(Out *o, Metrics *m)
{
    family(o, "weaver_build_info", "gauge",
           "Always 1; the labels say what runs: version, backends and devices compiled in, models, cohort.");
    outf(o, "weaver_build_info{version=\"%s\",backends=\"%s\",devices=\"%s\",embedder_backend=\"", WEAVER_VERSION,
         backends_compiled(), devices_compiled());
    pthread_mutex_lock(&m->info_lock);
    out_label(o, m->info[3]);
    outf(o, "\",embedder_model=\"");
    out_label(o, m->info[0]);
    outf(o, "\",decoder_backend=\"");
    out_label(o, m->info[4]);
    outf(o, "\",decoder_model=\"");
    out_label(o, m->info[1]);
    outf(o, "\",cohort=\"");
    out_label(o, m->info[2]);
    pthread_mutex_unlock(&m->info_lock);
    outf(o, "\"} 1\n");
    gauge(o, "weaver_start_time_seconds", "Start time of the engine process, in seconds since the epoch.",
          m->start_time);
    char why[160];
    gauge(o, "weaver_ready", "1 while /readyz answers 200 (pin verified, workers ready, Redis reachable).",
          metrics_ready(m, why, sizeof why) ? 1 : 0);
    gauge(o, "weaver_workers", "Worker threads configured (--workers).", m->nworkers);
}

static void render_jobs(Out *o, Metrics *m)
{
    family(o, "weaver_jobs_finished_total", "counter",
           "Jobs finished by this engine, by kind and status (ok, error: error result and dead letter, "
           "dead_letter: a dead letter only).");
    for (int k = 0; k < METRICS_KINDS; k++)
        for (int s = 0; s < METRICS_NSTATUS; s++)
            outf(o, "weaver_jobs_finished_total{kind=\"%s\",status=\"%s\"} %llu\n", kind_names[k], status_names[s],
                 (unsigned long long)sum_at(m, offsetof(MetricsWorker, finished) +
                                                       sizeof(uint64_t) * (size_t)(k * METRICS_NSTATUS + s)));
    counter_by_kind(o, m, "weaver_dead_letters_total", "Dead-letter entries written by this engine.",
                    offsetof(MetricsWorker, dead_letters));
    counter_by_kind(o, m, "weaver_duplicates_acknowledged_total",
                    "Deliveries of jobs that already had a result: acknowledged without running again.",
                    offsetof(MetricsWorker, duplicates));
    counter_by_kind(o, m, "weaver_reclaimed_total",
                    "Stream entries reclaimed (XAUTOCLAIM) from consumers idle past the visibility timeout.",
                    offsetof(MetricsWorker, reclaimed));
    counter_by_kind(o, m, "weaver_redeliveries_total", "Stream entries processed on their second or later delivery.",
                    offsetof(MetricsWorker, redelivered));
    counter_by_kind(o, m, "weaver_entries_trimmed_total",
                    "Pending stream entries found deleted (trimmed) from their stream: the job was lost.",
                    offsetof(MetricsWorker, trimmed));
    counter(o, "weaver_embedded_texts_total", "Texts embedded (ok results).", SUM(m, texts_embedded));
    counter(o, "weaver_embedded_tokens_total", "Tokens embedded (ok results, after truncation).",
            SUM(m, tokens_embedded));
    counter(o, "weaver_prompt_tokens_total", "Prompt tokens of finished generations.", SUM(m, prompt_tokens));
    counter(o, "weaver_generated_tokens_total", "Tokens generated by finished generations.",
            SUM(m, generated_tokens));
    family(o, "weaver_worker_busy_seconds_total", "counter",
           "Time each worker spent processing (not waiting for jobs), by worker index.");
    for (int i = 0; i < m->nworkers; i++)
        outf(o, "weaver_worker_busy_seconds_total{worker=\"%d\"} %.9g\n", i, ld(&m->workers[i].busy_ns) / 1e9);
}

static void render_histograms(Out *o, Metrics *m)
{
    for (int h = 0; h < METRICS_NLATENCY; h++) {
        family(o, latency_defs[h].name, "histogram", latency_defs[h].help);
        for (int k = 0; k < METRICS_KINDS; k++) {
            char label[32];
            snprintf(label, sizeof label, "kind=\"%s\"", kind_names[k]);
            hist_series(o, m, &latency_defs[h], label, offsetof(MetricsWorker, latency) + sizeof(MetricsHist) *
                                                          ((size_t)k * METRICS_NLATENCY + (size_t)h));
        }
    }
    for (int b = 0; b < METRICS_NBATCH; b++) {
        family(o, batch_defs[b].name, "histogram", batch_defs[b].help);
        hist_series(o, m, &batch_defs[b], "", offsetof(MetricsWorker, batch) + sizeof(MetricsHist) * (size_t)b);
    }
}

static void render_gauges(Out *o, Metrics *m)
{
    long long run = 0, wait = 0, used = 0, total = 0;
    for (int i = 0; i < m->nworkers; i++) {
        const MetricsWorker *w = &m->workers[i];
        run += atomic_load_explicit(&w->dec_running, memory_order_relaxed);
        wait += atomic_load_explicit(&w->dec_waiting, memory_order_relaxed);
        used += atomic_load_explicit(&w->kv_pages_used, memory_order_relaxed);
        total += atomic_load_explicit(&w->kv_pages_total, memory_order_relaxed);
    }
    gauge(o, "weaver_decoder_running_sequences", "Sequences in the decoders' running batches.", (double)run);
    gauge(o, "weaver_decoder_waiting_sequences", "Sequences submitted, waiting for a slot or KV pages.", (double)wait);
    gauge(o, "weaver_decoder_kv_pages_used", "KV cache pages held by running sequences (16 tokens each).",
          (double)used);
    gauge(o, "weaver_decoder_kv_pages", "KV cache pages in all (decoder.kv_budget_tokens / 16 per worker).",
          (double)total);
    gauge(o, "weaver_redis_up", "1 when the last sample of the streams reached Redis.",
          atomic_load(&m->redis_up) ? 1 : 0);
    if (atomic_load(&m->sampled)) {
        family(o, "weaver_queue_length", "gauge", "Entries in each job stream (XLEN), sampled.");
        for (int k = 0; k < METRICS_KINDS; k++)
            outf(o, "weaver_queue_length{kind=\"%s\"} %lld\n", kind_names[k], atomic_load(&m->depth_length[k]));
        family(o, "weaver_queue_pending", "gauge",
               "Entries delivered to a consumer of the group and not yet acknowledged (XPENDING), sampled.");
        for (int k = 0; k < METRICS_KINDS; k++)
            outf(o, "weaver_queue_pending{kind=\"%s\"} %lld\n", kind_names[k], atomic_load(&m->depth_pending[k]));
        gauge(o, "weaver_queue_dead_letters", "Entries in the dead-letter stream (shared by both kinds), sampled.",
              (double)atomic_load(&m->depth_dead));
        gauge(o, "weaver_queue_sampled_timestamp_seconds", "When the stream gauges were last sampled.",
              atomic_load(&m->sampled_at_ms) / 1000.0);
    }
    counter(o, "weaver_redis_reconnects_total", "Reconnections to Redis after a lost connection (all threads).",
            atomic_load(&g_reconnects));
    counter(o, "weaver_remote_embedder_retries_total", "Requests to the remote embedder retried (408, 429, 5xx, "
            "connection errors).", atomic_load(&g_remote_retries));
    counter(o, "weaver_remote_embedder_failures_total", "Requests to the remote embedder that exhausted their retries.",
            atomic_load(&g_remote_failures));
}

char *metrics_render(Metrics *m, size_t *len)
{
    Out o = {.cap = 32768};
    o.p = malloc(o.cap);
    if (!o.p)
        return NULL;
    render_info(&o, m);
    render_jobs(&o, m);
    render_histograms(&o, m);
    render_gauges(&o, m);
    if (o.oom) {
        free(o.p);
        return NULL;
    }
    *len = o.len;
    return o.p;
}
