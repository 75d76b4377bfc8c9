/* worker.c: one consumer: read stream entries, validate jobs, batch embed texts by token
 * budget, run generation with continuous batching, and finish every job with one atomic
 * result write + XACK. A worker owns its Redis connection and scratch buffers; it shares only
 * the embedder weights. Bad input becomes an error result and a dead letter, never a crash;
 * a lost connection is retried with backoff and nothing finished is dropped. */
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "engine/arena.h"
#include "engine/batcher.h"
#include "engine/engine.h"
#include "engine/generator.h"
#include "engine/log.h"
#include "engine/metrics.h"
#include "queue/queue.h"

#define WORKER_STR_(x) #x
#define WORKER_STR(x) WORKER_STR_(x)
/* "<queue.consumer>-<index>" fits a consumer name for every index below ENGINE_WORKERS_MAX. */
_Static_assert(CFG_QUEUE_CONSUMER_MAX + sizeof "-" WORKER_STR(ENGINE_WORKERS_MAX) - 1 <
               QUEUE_CONSUMER_MAX, "queue.consumer must leave room for \"-<worker index>\"");

/* A generate job between submit and finish: what is needed to write its result. */
typedef struct GenFlight {
    JobKind kind;
    char entry_id[QUEUE_ENTRY_ID_MAX];
    char job_id[JOB_ID_MAX + 1];
    char *reply_to;
    char *payload;          /* the original job, for a dead letter if its result is refused */
    size_t payload_len;
    int deliveries;
    long long started_ms;
    long long started_us;   /* monotonic, for the compute-time histogram */
    struct GenFlight *next;
} GenFlight;

static void flight_free(GenFlight *fl)
{
    free(fl->reply_to);
    free(fl->payload);
    free(fl);
}

/* The buffers of one read that live until its results are written: its entries and jobs, and the
 * results, with their text in the arena. A worker that reads ahead has a spare set, so it runs
 * one read while Redis writes the results of the one before and reads the next. */
typedef struct Slot {
    QueueEntry *entries;
    Job *jobs;
    bool *jobs_ok;
    char (*errors)[256];
    QueueResult *results;
    QueueRefusal *refused;
    QueueField *fields;
    const char **target_ptrs;
    Arena arena;
    int n_held;
} Slot;

struct Worker {
    Engine *eng;
    const Config *cfg;
    MetricsWorker *m;       /* NULL when metrics are off */
    int index;
    char consumer[QUEUE_CONSUMER_MAX];
    Queue *q;
    EmbedWorkspace *ws;
    Generator *gen;
    GenFlight *flights;     /* changed only under lease_lock: the lease thread reads it */
    int n_flights;
    pthread_mutex_t lease_lock;
    int n_held;             /* w->entries[0, n_held) are being processed: their leases are kept */
    JobLimits limits;

    /* Buffers sized once at start-up. */
    int max_entries;
    QueueEntry *entries;
    Job *jobs;
    bool *jobs_ok;          /* parsed and not a duplicate */
    char (*errors)[256];
    int max_texts;          /* texts per embed chunk */
    EmbedText *texts;
    int *text_job;          /* which job each text belongs to */
    int *text_tokens;
    int *order;
    int *batch_ends;        /* from batch_plan */
    float *vecs;
    int *ntokens;
    EmbedStatus *status;
    EmbedText *sub_texts;   /* one forward batch (batch.max_texts) */
    int *sub_tokens;
    EmbedStatus *sub_status;
    float *stage;           /* its outputs before they scatter back to input order */
    QueueResult *results;
    QueueRefusal *refused;  /* per result, from queue_finish */
    QueueField *fields;     /* results * FIELDS_PER_RESULT */
    const char **target_ptrs;
    GenDone *done;
    Arena arena;            /* result text, reset per batch */

    Slot spare;             /* the other read's buffers (read-ahead only; swap_slots) */
    bool read_ahead;        /* this worker may read ahead: it has a spare slot */

    long long next_reclaim_ms, next_heartbeat_ms;
};

#define FIELDS_PER_RESULT 12
/* Result text an idle worker keeps allocated between batches (its arena's blocks). */
#define ARENA_KEEP_BYTES ((size_t)16 << 20)

/* Microseconds on clock c: CLOCK_REALTIME for wall time (entry ids carry it), CLOCK_MONOTONIC for
 * durations. */
static long long clock_us(clockid_t c)
{
    struct timespec ts;
    clock_gettime(c, &ts);
    return (long long)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static long long now_ms(void) { return clock_us(CLOCK_REALTIME) / 1000; }
static long long mono_ms(void) { return clock_us(CLOCK_MONOTONIC) / 1000; }
static long long mono_us(void) { return clock_us(CLOCK_MONOTONIC); }
static long long now_us(void) { return clock_us(CLOCK_REALTIME); }

/* Stream entry ids start with the enqueue time in ms: the job's queueing delay for free. Read
 * with a plain digit loop: metrics read it twice per job, and strtoll costs ten times more. */
static long long entry_time_ms(const char *entry_id)
{
    long long ms = 0;
    for (const char *p = entry_id; *p >= '0' && *p <= '9' && ms < 100000000000000LL; p++)
        ms = ms * 10 + (*p - '0');
    return ms;
}

/* Adds the time since t0_us (mono_us) to this worker's busy time. */
static void count_busy(Worker *w, long long t0_us)
{
    if (w->m)
        metrics_add(&w->m->busy_ns, (uint64_t)(mono_us() - t0_us) * 1000);
}

static bool slot_alloc(Slot *s, int entries, int results, int texts)
{
    s->entries = calloc((size_t)entries, sizeof *s->entries);
    s->jobs = calloc((size_t)entries, sizeof *s->jobs);
    s->jobs_ok = calloc((size_t)entries, sizeof *s->jobs_ok);
    s->errors = calloc((size_t)entries, sizeof *s->errors);
    s->results = calloc((size_t)results, sizeof *s->results);
    s->refused = calloc((size_t)results, sizeof *s->refused);
    s->fields = calloc((size_t)results * FIELDS_PER_RESULT, sizeof *s->fields);
    s->target_ptrs = calloc((size_t)texts, sizeof *s->target_ptrs);
    return s->entries && s->jobs && s->jobs_ok && s->errors && s->results && s->refused && s->fields &&
           s->target_ptrs;
}

static void slot_free(Slot *s)
{
    free(s->entries);
    free(s->jobs);
    free(s->jobs_ok);
    free(s->errors);
    free(s->results);
    free(s->refused);
    free(s->fields);
    free(s->target_ptrs);
    arena_free(&s->arena);
}

static void swap_bytes(void *a, void *b, size_t n)
{
    unsigned char t[sizeof(Arena) > sizeof(void *) ? sizeof(Arena) : sizeof(void *)];
    memcpy(t, a, n);
    memcpy(a, b, n);
    memcpy(b, t, n);
}

/* Makes the spare slot the current one (the worker's own fields) and the current one the spare.
 * Under lease_lock: the lease thread reads both. */
static void swap_slots(Worker *w, Slot *s)
{
#define SWAP(f) do { _Static_assert(sizeof w->f == sizeof s->f, #f); swap_bytes(&w->f, &s->f, sizeof w->f); } while (0)
    pthread_mutex_lock(&w->lease_lock);
    SWAP(entries);
    SWAP(jobs);
    SWAP(jobs_ok);
    SWAP(errors);
    SWAP(results);
    SWAP(refused);
    SWAP(fields);
    SWAP(target_ptrs);
    SWAP(arena);
    SWAP(n_held);
    pthread_mutex_unlock(&w->lease_lock);
#undef SWAP
}

Worker *worker_create(Engine *eng, int index, char *err, size_t errlen)
{
    const Config *cfg = eng->cfg;
    Worker *w = calloc(1, sizeof *w);
    if (!w) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    w->eng = eng;
    w->cfg = cfg;
    w->index = index;
    w->m = metrics_worker(eng->metrics, index);
    pthread_mutex_init(&w->lease_lock, NULL);
    int len = snprintf(w->consumer, sizeof w->consumer, "%s-%d", eng->consumer_base, index);
    if (len < 0 || (size_t)len >= sizeof w->consumer) { /* never cut: two workers would share it */
        snprintf(err, errlen, "worker %d: consumer name \"%s-%d\" is longer than %zu bytes", index,
                 eng->consumer_base, index, sizeof w->consumer - 1);
        worker_free(w);
        return NULL;
    }
    w->limits = (JobLimits){cfg->queue.max_input_bytes, cfg->queue.max_texts_per_job, cfg->queue.max_tokens,
                            cfg->embedder.query_instruction};
    w->q = queue_open(&cfg->redis, &cfg->queue, w->consumer);
    if (!w->q || !queue_connected(w->q)) {
        snprintf(err, errlen, "worker %d: %s", index, queue_errstr(w->q));
        worker_free(w);
        return NULL;
    }
    if (eng->embedder) {
        w->ws = embedder_workspace_new(eng->embedder);
        if (!w->ws) {
            snprintf(err, errlen, "worker %d: cannot allocate the embedder workspace", index);
            worker_free(w);
            return NULL;
        }
    }
    if (cfg->decoder.enabled) {
        w->gen = generator_open(&cfg->decoder, err, errlen);
        if (!w->gen) {
            worker_free(w);
            return NULL;
        }
    }
    w->max_entries = cfg->queue.read_count;
    w->max_texts = cfg->batch.lookahead > cfg->queue.max_texts_per_job ? cfg->batch.lookahead
                                                                         : cfg->queue.max_texts_per_job;
    int dim = eng->embedder ? embedder_info(eng->embedder)->dim : 1;
    int max_done = cfg->decoder.max_slots > 0 ? cfg->decoder.max_slots * 4 : 16;
    int max_results = w->max_entries > max_done ? w->max_entries : max_done;
    Slot first = {0};
    bool slots_ok = slot_alloc(&first, w->max_entries, max_results, w->max_texts);
    swap_slots(w, &first); /* the first set becomes the worker's own; `first` now holds NULLs */
    /* Reading ahead overlaps a deep queue's reads and writes with the work; generation runs its
     * own continuous batch between reads, so an engine with a decoder reads as it always did. */
    w->read_ahead = !cfg->decoder.enabled;
    if (w->read_ahead)
        slots_ok = slot_alloc(&w->spare, w->max_entries, max_results, w->max_texts) && slots_ok;
    w->texts = calloc((size_t)w->max_texts, sizeof *w->texts);
    w->text_job = calloc((size_t)w->max_texts, sizeof *w->text_job);
    w->text_tokens = calloc((size_t)w->max_texts, sizeof *w->text_tokens);
    w->order = calloc((size_t)w->max_texts, sizeof *w->order);
    w->batch_ends = calloc((size_t)w->max_texts, sizeof *w->batch_ends);
    w->vecs = calloc((size_t)w->max_texts * (size_t)dim, sizeof *w->vecs);
    w->ntokens = calloc((size_t)w->max_texts, sizeof *w->ntokens);
    w->status = calloc((size_t)w->max_texts, sizeof *w->status);
    size_t bt = (size_t)cfg->batch.max_texts;
    w->sub_texts = calloc(bt, sizeof *w->sub_texts);
    w->sub_tokens = calloc(bt, sizeof *w->sub_tokens);
    w->sub_status = calloc(bt, sizeof *w->sub_status);
    w->stage = calloc(bt * (size_t)dim, sizeof *w->stage);
    w->done = calloc((size_t)max_done, sizeof *w->done);
    if (!slots_ok || !w->texts || !w->text_job || !w->text_tokens || !w->order || !w->vecs || !w->ntokens ||
        !w->status || !w->done || !w->sub_texts || !w->sub_tokens || !w->sub_status || !w->stage || !w->batch_ends) {
        snprintf(err, errlen, "worker %d: cannot allocate batch buffers", index);
        worker_free(w);
        return NULL;
    }
    return w;
}

const char *worker_decoder_model(const Worker *w) { return w && w->gen ? generator_info(w->gen)->model_id : NULL; }

void worker_free(Worker *w)
{
    if (!w)
        return;
    while (w->flights) {
        GenFlight *f = w->flights;
        w->flights = f->next;
        flight_free(f);
    }
    generator_close(w->gen);
    if (w->eng->embedder)
        embedder_workspace_free(w->eng->embedder, w->ws);
    queue_free(w->q);
    slot_free(&w->spare);
    swap_slots(w, &w->spare);
    slot_free(&w->spare);
    free(w->texts);
    free(w->text_job);
    free(w->text_tokens);
    free(w->order);
    free(w->batch_ends);
    free(w->vecs);
    free(w->ntokens);
    free(w->status);
    free(w->sub_texts);
    free(w->sub_tokens);
    free(w->sub_status);
    free(w->stage);
    free(w->done);
    pthread_mutex_destroy(&w->lease_lock);
    free(w);
}

/* Reconnects with capped exponential backoff until it works or the engine is abandoning. */
static bool ensure_connected(Worker *w)
{
    if (queue_connected(w->q))
        return true;
    int backoff = 50;
    metrics_set_connected(w->m, false);
    while (!atomic_load(&w->eng->abandon)) {
        if (queue_reconnect(w->q) == QUEUE_OK) {
            LOG_I("worker %d: reconnected to Redis", w->index);
            metrics_count_reconnect();
            metrics_set_connected(w->m, true);
            return true;
        }
        LOG_W("worker %d: %s; retrying in %d ms", w->index, queue_errstr(w->q), backoff);
        usleep((useconds_t)backoff * 1000);
        backoff = backoff * 2 > w->cfg->redis.reconnect_max_backoff_ms ? w->cfg->redis.reconnect_max_backoff_ms
                                                                       : backoff * 2;
    }
    return false;
}

static void error_result_for(Worker *w, int r, QueueResult *failed, const char *reason);

static long long entry_time_ms(const char *entry_id);

/* Counts a result Redis accepted: its status, and its end-to-end time from the XADD. */
static void observe_finished(Worker *w, const QueueResult *res, bool acked_only, long long done_us)
{
    if (!w->m)
        return;
    MetricsStatus st = res->dead_only ? METRICS_DEAD_ONLY : res->dead_reason ? METRICS_ERROR : METRICS_OK;
    if (acked_only) { /* a duplicate (also two entries of one id in one read): only acknowledged */
        metrics_add(&w->m->duplicates[res->kind], 1);
        return;
    }
    metrics_finished(w->m, res->kind, st);
    if (st != METRICS_OK)
        metrics_add(&w->m->dead_letters[res->kind], 1);
    metrics_latency(w->m, res->kind, METRICS_END_TO_END, done_us - entry_time_ms(res->entry_id) * 1000);
}

/* Attempts at one result the script keeps rejecting (a Redis error that is not a connection
 * fault, e.g. out of memory or an ACL denial) before it is left pending. */
#define FINISH_MAX_FAULTS 3

/* Rewrites refused result i of results [off, off + n) into slot `slot`: an error result without
 * the refused reply list or targets, or, when its result key is not ours to write, a dead
 * letter only (and no reply: the list would lead its producer to someone else's result). */
static void rewrite_refused(Worker *w, int i, int slot)
{
    QueueResult failed = w->results[i];
    const QueueRefusal *why = &w->refused[i];
    char reason[256];
    snprintf(reason, sizeof reason, "cannot write the result: %s", why->why);
    if (why->what == QUEUE_REFUSED_REPLY || why->what == QUEUE_REFUSED_RESULT)
        failed.reply_to = NULL;
    error_result_for(w, slot, &failed, reason);
    if (why->what == QUEUE_REFUSED_RESULT) {
        w->results[slot].dead_only = true;
        w->results[slot].n_fields = 0;
    }
}

/* Counts the results of [off, off + n) Redis accepted (queue_finish filled w->refused) and
 * rewrites the refused ones into [off, off + again); returns again. */
static int settle(Worker *w, int off, int n)
{
    int again = 0;
    long long done_us = w->m ? now_us() : 0;
    for (int i = off; i < off + n; i++) {
        if (w->refused[i].what == QUEUE_REFUSED_NONE) {
            atomic_fetch_add(&w->eng->jobs_done, 1);
            observe_finished(w, &w->results[i], w->refused[i].acked_only, done_us);
        } else {
            rewrite_refused(w, i, off + again++);
        }
    }
    return again;
}

/* Writes results [off, off + n), bounded whatever Redis answers: connection faults are retried
 * (ensure_connected backs off) until the engine abandons; a call Redis rejects is split in
 * halves until the result at fault is alone, which gets FINISH_MAX_FAULTS attempts, then as many
 * as an error result without its reply list and targets, and is then left pending (a later
 * delivery, bounded by queue.max_attempts, tries again); refused results
 * are rewritten and written again. After abandon nothing more is written: those jobs stay
 * pending for another consumer, as the stop log says. */
static void finish_range(Worker *w, int off, int n)
{
    bool fallen_back = false;
    for (int faults = 0; n > 0;) {
        if (atomic_load(&w->eng->abandon) || !ensure_connected(w)) {
            LOG_W("worker %d: leaving %d jobs pending (stopping)", w->index, n);
            return;
        }
        int rc = queue_finish(w->q, w->results + off, n, w->refused + off);
        if (rc == QUEUE_ECONN)
            continue;
        if (rc != QUEUE_OK) {
            if (n > 1) {
                finish_range(w, off, n / 2);
                finish_range(w, off + n / 2, n - n / 2);
                return;
            }
            if (++faults >= FINISH_MAX_FAULTS && !fallen_back) {
                /* Last resort: an error result and dead letter under the engine's own keys,
                 * without the reply list and targets the producer named. */
                QueueResult failed = w->results[off];
                failed.reply_to = NULL;
                char why[256];
                snprintf(why, sizeof why, "cannot write the result: %s", queue_errstr(w->q));
                error_result_for(w, off, &failed, why);
                fallen_back = true;
                faults = 0;
                continue;
            }
            if (faults >= FINISH_MAX_FAULTS) {
                log_job(LOG_ERROR, w->results[off].job_id, job_kind_name(w->results[off].kind),
                        "job %s: cannot write even its error result: %s; leaving it pending",
                        w->results[off].job_id, queue_errstr(w->q));
                return;
            }
            log_job(LOG_WARN, w->results[off].job_id, job_kind_name(w->results[off].kind),
                    "worker %d: writing the result of job %s failed: %s; retrying", w->index,
                    w->results[off].job_id, queue_errstr(w->q));
            usleep((useconds_t)faults * 100 * 1000);
            continue;
        }
        n = settle(w, off, n);
    }
}

static void finish_results(Worker *w, int n) { finish_range(w, 0, n); }

/* Takes the replies to results [0, n) sent ahead with queue_finish_send (sent: whether that
 * worked) and writes what is left as finish_results does: refused results rewritten, and the
 * whole range again when the replies were lost or a call was rejected (a result already written
 * is recognised and only acknowledged). */
static void finish_sent(Worker *w, int n, bool sent)
{
    if (sent && queue_finish_recv(w->q, w->results, n, w->refused) == QUEUE_OK)
        n = settle(w, 0, n);
    finish_results(w, n);
}

/* --- result records ---------------------------------------------------------------------- */

static QueueField *result_fields(Worker *w, int r) { return &w->fields[r * FIELDS_PER_RESULT]; }

static void add_field(QueueResult *res, QueueField *f, const char *name, const char *value, size_t len)
{
    f[res->n_fields++] = (QueueField){name, value, len};
}

static void add_str(QueueResult *res, QueueField *f, const char *name, const char *value)
{
    add_field(res, f, name, value, strlen(value));
}

static const char *fmt(Worker *w, const char *format, ...) __attribute__((format(printf, 2, 3)));
static const char *fmt(Worker *w, const char *format, ...)
{
    va_list ap;
    va_start(ap, format);
    const char *s = arena_vprintf(&w->arena, format, ap);
    va_end(ap);
    return s;
}

/* Writes error result slot r: status, reason, and a dead-letter entry holding the original job.
 * `like` gives the addressing (kind, entry, job id, reply list, payload, deliveries). */
static void error_result_for(Worker *w, int r, QueueResult *like, const char *reason)
{
    QueueResult base = *like;
    QueueResult *res = &w->results[r];
    QueueField *f = result_fields(w, r);
    *res = (QueueResult){.kind = base.kind, .entry_id = base.entry_id, .job_id = base.job_id, .fields = f,
                         .reply_to = base.reply_to, .dead_reason = arena_strdup(&w->arena, reason),
                         .payload = base.payload, .payload_len = base.payload_len, .deliveries = base.deliveries};
    add_str(res, f, "status", "error");
    add_str(res, f, "id", res->job_id);
    add_str(res, f, "kind", job_kind_name(res->kind));
    add_str(res, f, "error", res->dead_reason);
    add_str(res, f, "finished_at", fmt(w, "%lld", now_ms()));
    log_job(LOG_WARN, res->job_id, job_kind_name(res->kind), "job %s (%s): error: %s", res->job_id,
            job_kind_name(res->kind), reason);
}

/* The error result of entry e (job may be partly parsed or NULL). */
static void error_result(Worker *w, int r, const QueueEntry *e, const Job *job, const char *reason)
{
    QueueResult like = {.kind = e->kind, .entry_id = e->entry_id,
                        .job_id = job && job->id[0] ? job->id
                                                    : fmt(w, "%s:%s", job_kind_name(e->kind), e->entry_id),
                        .reply_to = job ? job->reply_to : NULL, .payload = e->payload,
                        .payload_len = e->payload_len, .deliveries = e->deliveries};
    error_result_for(w, r, &like, reason);
}

/* An entry deleted from the stream while it was pending (a producer's XTRIM or MAXLEN): its job
 * is gone, so it is counted, logged and recorded as a dead letter naming the entry. */
static void deleted_entry_result(Worker *w, int r, const QueueEntry *e)
{
    atomic_fetch_add(&w->eng->entries_trimmed, 1);
    if (w->m)
        metrics_add(&w->m->trimmed[e->kind], 1);
    w->results[r] = (QueueResult){.kind = e->kind, .entry_id = e->entry_id,
                                  .job_id = fmt(w, "%s:%s", job_kind_name(e->kind), e->entry_id),
                                  .fields = result_fields(w, r), .dead_only = true,
                                  .dead_reason = "the stream entry was deleted (trimmed) while its job was pending; "
                                                 "the job is lost",
                                  .deliveries = e->deliveries};
    LOG_W("%s entry %s was deleted from the stream while pending: recorded as a dead letter",
          job_kind_name(e->kind), e->entry_id);
}

/* A job whose result already exists: the finish script sees that and only acknowledges it. */
static void duplicate_result(Worker *w, int r, const QueueEntry *e, const Job *job)
{
    w->results[r] = (QueueResult){.kind = e->kind, .entry_id = e->entry_id, .job_id = job->id,
                                  .fields = result_fields(w, r), .reply_to = job->reply_to,
                                  .payload = e->payload, .payload_len = e->payload_len,
                                  .deliveries = e->deliveries};
    log_job(LOG_DEBUG, job->id, job_kind_name(e->kind), "job %s: already finished, acknowledging the duplicate delivery",
            job->id);
}

/* --- embed jobs ---------------------------------------------------------------------------- */

/* Embeds texts [0, n) into w->vecs in input order, in the batches batch_plan cuts.
 * Returns 0, EMBED_ABANDONED when the engine abandoned between two forward batches (a stop
 * past its grace), or another < 0 if the backend failed as a whole. */
#define EMBED_ABANDONED (-2)
static int embed_texts(Worker *w, int n)
{
    Embedder *e = w->eng->embedder;
    const EmbedderInfo *info = embedder_info(e);
    size_t dim = (size_t)info->dim;
    for (int i = 0; i < n; i++) {
        int t = embedder_count_tokens(e, w->ws, w->texts[i].text, w->texts[i].len);
        w->text_tokens[i] = t < 1 ? 1 : (t > info->max_seq_len ? info->max_seq_len : t);
    }
    int nbatches = batch_plan(w->text_tokens, n, embedder_token_budget(e), w->cfg->batch.max_texts, w->order,
                              w->batch_ends);
    for (int b = 0, start = 0; b < nbatches; start = w->batch_ends[b++]) {
        int count = w->batch_ends[b] - start;
        if (atomic_load(&w->eng->abandon))
            return EMBED_ABANDONED;
        int real = 0, longest = 0;
        for (int k = 0; k < count; k++) {
            w->sub_texts[k] = w->texts[w->order[start + k]];
            int t = w->text_tokens[w->order[start + k]];
            real += t;
            longest = t > longest ? t : longest;
        }
        metrics_batch(w->m, count, real, longest * count);
        int rc = embedder_embed(e, w->ws, w->sub_texts, count, w->stage, w->sub_tokens, w->sub_status);
        if (rc == EMBEDDER_ECANCELED)
            return EMBED_ABANDONED;
        if (rc == EMBEDDER_EDEVICE) { /* the device is gone: the engine stops, these jobs stay pending */
            LOG_E("worker %d: %s; stopping the engine", w->index, embedder_errstr(e));
            atomic_store(&w->eng->device_lost, true);
            atomic_store(&w->eng->stop, true);
            atomic_store(&w->eng->abandon, true);
            return EMBED_ABANDONED;
        }
        if (rc != 0)
            return -1;
        for (int k = 0; k < count; k++) { /* back to input order */
            int i = w->order[start + k];
            memcpy(w->vecs + (size_t)i * dim, w->stage + (size_t)k * dim, dim * sizeof(float));
            w->ntokens[i] = w->sub_tokens[k];
            w->status[i] = w->sub_status[k];
        }
    }
    return 0;
}

/* Writes one vector as JSON numbers; %.9g round-trips every float exactly. */
static void append_vector_json(char **p, const float *v, int dim)
{
    *(*p)++ = '[';
    for (int d = 0; d < dim; d++) {
        if (d)
            *(*p)++ = ',';
        *p += sprintf(*p, "%.9g", (double)v[d]);
    }
    *(*p)++ = ']';
}

/* The ok result of embed job `j` whose texts are [first, first + n) of w->vecs. */
static void embed_result(Worker *w, int r, int j, int first, int n, long long compute_ms)
{
    const QueueEntry *e = &w->entries[j];
    const Job *job = &w->jobs[j];
    const EmbedJob *ej = &job->embed;
    const EmbedderInfo *info = embedder_info(w->eng->embedder);
    bool normalize = ej->normalize < 0 ? info->normalize : ej->normalize == 1;
    int out_dim = info->dim, tokens = 0;
    for (int t = 0; t < n; t++) {
        float *v = w->vecs + (size_t)(first + t) * (size_t)info->dim;
        out_dim = embed_postprocess(v, info->dim, ej->dimensions, normalize);
        tokens += w->ntokens[first + t];
    }
    QueueResult *res = &w->results[r];
    QueueField *f = result_fields(w, r);
    *res = (QueueResult){.kind = JOB_EMBED, .entry_id = e->entry_id, .job_id = job->id, .fields = f,
                         .reply_to = job->reply_to, .payload = e->payload, .payload_len = e->payload_len,
                         .deliveries = e->deliveries};
    /* Vectors are packed tightly at out_dim: the f32 layout Redis vector search indexes. */
    float *packed = arena_alloc(&w->arena, (size_t)n * (size_t)out_dim * sizeof(float));
    for (int t = 0; t < n; t++)
        memcpy(packed + (size_t)t * (size_t)out_dim, w->vecs + (size_t)(first + t) * (size_t)info->dim,
               (size_t)out_dim * sizeof(float));
    add_str(res, f, "status", "ok");
    add_str(res, f, "id", job->id);
    add_str(res, f, "kind", "embed");
    add_str(res, f, "model", info->model_id);
    add_str(res, f, "dim", fmt(w, "%d", out_dim));
    add_str(res, f, "count", fmt(w, "%d", n));
    if (ej->encoding == JOB_ENC_F32) {
        add_str(res, f, "encoding", "f32");
        add_field(res, f, "embeddings", (const char *)packed, (size_t)n * (size_t)out_dim * sizeof(float));
    } else {
        char *json = arena_alloc(&w->arena, (size_t)n * ((size_t)out_dim * 17 + 3) + 2);
        char *p = json;
        *p++ = '[';
        for (int t = 0; t < n; t++) {
            if (t)
                *p++ = ',';
            append_vector_json(&p, packed + (size_t)t * (size_t)out_dim, out_dim);
        }
        *p++ = ']';
        *p = '\0';
        add_str(res, f, "encoding", "json");
        add_field(res, f, "embeddings", json, (size_t)(p - json));
    }
    add_str(res, f, "usage", fmt(w, "{\"tokens\":%d}", tokens));
    if (w->m) {
        metrics_add(&w->m->texts_embedded, (uint64_t)n);
        metrics_add(&w->m->tokens_embedded, (uint64_t)tokens);
    }
    long long queued = now_ms() - compute_ms - entry_time_ms(e->entry_id);
    add_str(res, f, "timings", fmt(w, "{\"queued_ms\":%lld,\"compute_ms\":%lld}", queued < 0 ? 0 : queued, compute_ms));
    add_str(res, f, "finished_at", fmt(w, "%lld", now_ms()));
    if (ej->target_field) {
        for (int t = 0; t < n; t++)
            w->target_ptrs[first + t] = (const char *)(packed + (size_t)t * (size_t)out_dim);
        res->target_field = ej->target_field;
        res->target_keys = ej->target_keys;
        res->target_values = &w->target_ptrs[first];
        res->target_len = (size_t)out_dim * sizeof(float);
        res->n_targets = n;
    }
}

/* Runs embed jobs [from, to) (all valid, texts fit the buffers) and fills their results
 * starting at result slot r. Returns the next free result slot. */
static int run_embed_chunk(Worker *w, const int *jobs, int njobs, int r)
{
    int n = 0;
    for (int k = 0; k < njobs; k++) {
        const EmbedJob *ej = &w->jobs[jobs[k]].embed;
        for (int t = 0; t < ej->n_texts; t++) {
            w->texts[n] = (EmbedText){ej->texts[t], ej->lens[t], ej->truncate};
            if (ej->instruction) { /* a query: the text the model reads is the rendered one */
                const char *fmt = w->cfg->embedder.query_format;
                size_t len = embed_query_len(fmt, ej->instruction_len, ej->lens[t]);
                char *q = arena_alloc(&w->arena, len ? len : 1);
                if (!q) { /* out of memory: no results, the jobs stay pending for a later try */
                    LOG_W("worker %d: out of memory rendering instructions; leaving %d jobs pending", w->index, njobs);
                    return r;
                }
                embed_render_query(q, len, fmt, ej->instruction, ej->instruction_len, ej->texts[t], ej->lens[t]);
                w->texts[n] = (EmbedText){q, len, ej->truncate};
            }
            w->text_job[n++] = jobs[k];
        }
    }
    long long t0 = mono_ms(), t0_us = mono_us();
    int rc = embed_texts(w, n);
    long long compute_ms = mono_ms() - t0, compute_us = mono_us() - t0_us;
    if (rc == EMBED_ABANDONED) { /* no results: these jobs stay pending for another consumer */
        LOG_W("worker %d: leaving %d jobs pending (stopping)", w->index, njobs);
        return r;
    }
    int first = 0;
    for (int k = 0; k < njobs; k++) {
        int j = jobs[k];
        const EmbedJob *ej = &w->jobs[j].embed;
        const char *why = NULL;
        if (rc != 0)
            why = fmt(w, "embedder failed: %s", embedder_errstr(w->eng->embedder));
        for (int t = 0; !why && t < ej->n_texts; t++) {
            if (w->status[first + t] == EMBED_ERR_TOO_LONG)
                why = fmt(w, "texts[%d] has %d tokens, over the model's maximum of %d, and truncate is false", t,
                          w->ntokens[first + t], embedder_info(w->eng->embedder)->max_seq_len);
            else if (w->status[first + t] != EMBED_OK)
                why = fmt(w, "texts[%d]: %s", t, embedder_errstr(w->eng->embedder));
        }
        if (why)
            error_result(w, r++, &w->entries[j], &w->jobs[j], why);
        else
            embed_result(w, r++, j, first, ej->n_texts, compute_ms);
        metrics_latency(w->m, JOB_EMBED, METRICS_COMPUTE, compute_us);
        first += ej->n_texts;
    }
    return r;
}

/* --- generate jobs ------------------------------------------------------------------------- */

/* A job without a seed gets one derived from its whole entry id and its job id (FNV-1a, 64 bit):
 * jobs added in the same millisecond differ, and a redelivery of the same entry reproduces. */
static uint64_t default_seed(const char *entry_id, const char *job_id)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (const char *parts[] = {entry_id, "\n", job_id}, **p = parts; p < parts + 3; p++)
        for (const unsigned char *c = (const unsigned char *)*p; *c; c++)
            h = (h ^ *c) * 0x100000001b3ull;
    return h & ((1ull << 53) - 1); /* within the range a job's own seed may take */
}

static int submit_generate(Worker *w, int j)
{
    const QueueEntry *e = &w->entries[j];
    const Job *job = &w->jobs[j];
    const GenJob *gj = &job->gen;
    GenFlight *fl = calloc(1, sizeof *fl);
    GenMessage *msgs = gj->n_messages > 0 ? calloc((size_t)gj->n_messages, sizeof *msgs) : NULL;
    if (!fl || (gj->n_messages > 0 && !msgs)) {
        free(fl);
        free(msgs);
        return -1;
    }
    fl->kind = e->kind;
    snprintf(fl->entry_id, sizeof fl->entry_id, "%s", e->entry_id);
    snprintf(fl->job_id, sizeof fl->job_id, "%s", job->id);
    fl->reply_to = job->reply_to ? strdup(job->reply_to) : NULL;
    fl->payload = malloc(e->payload_len + 1);
    if (!fl->payload || (job->reply_to && !fl->reply_to)) {
        flight_free(fl);
        free(msgs);
        return -1;
    }
    memcpy(fl->payload, e->payload, e->payload_len);
    fl->payload[e->payload_len] = '\0';
    fl->payload_len = e->payload_len;
    fl->deliveries = e->deliveries;
    fl->started_ms = now_ms();
    fl->started_us = mono_us();
    GenRequest req = {.prompt = gj->prompt, .prompt_len = gj->prompt_len, .max_tokens = gj->max_tokens, .truncate_prompt = gj->truncate,
                      .parse_special = gj->parse_special, .tag = fl};
    for (int m = 0; m < gj->n_messages; m++)
        msgs[m] = (GenMessage){gj->messages[m].role, gj->messages[m].content, gj->messages[m].content_len};
    req.messages = msgs;
    req.n_messages = gj->n_messages;
    req.sampling = (GenSampling){(float)gj->temperature, gj->top_k, (float)gj->top_p, (float)gj->min_p,
                                 (float)gj->repeat_penalty, gj->repeat_last_n, (float)gj->presence_penalty,
                                 (float)gj->frequency_penalty,
                                 gj->seed_set ? gj->seed : default_seed(e->entry_id, job->id)};
    for (int s = 0; s < gj->n_stop; s++)
        req.stop[req.n_stop++] = gj->stop[s];
    char err[256] = "";
    int rc = generator_submit(w->gen, &req, err, sizeof err);
    free(msgs); /* the generator copied what it needs */
    if (rc != 0) {
        snprintf(w->errors[j], sizeof w->errors[j], "%s", err);
        flight_free(fl);
        return 1;
    }
    pthread_mutex_lock(&w->lease_lock);
    fl->next = w->flights;
    w->flights = fl;
    w->n_flights++;
    pthread_mutex_unlock(&w->lease_lock);
    return 0;
}

static void unlink_flight(Worker *w, GenFlight *fl)
{
    pthread_mutex_lock(&w->lease_lock);
    for (GenFlight **pp = &w->flights; *pp; pp = &(*pp)->next) {
        if (*pp == fl) {
            *pp = fl->next;
            w->n_flights--;
            break;
        }
    }
    pthread_mutex_unlock(&w->lease_lock);
}

/* One generation step; writes the results of the sequences that finished. */
/* The decoder's running and waiting sequences and KV pages, for the metrics gauges. */
static void publish_decoder(Worker *w)
{
    if (!w->m || !w->gen)
        return;
    GenStats st;
    generator_stats(w->gen, &st);
    metrics_decoder(w->m, st.running, st.waiting, st.kv_pages_used, st.kv_pages_total);
}

static void step_generate(Worker *w, int max_done)
{
    int nd = generator_step(w->gen, w->done, max_done);
    publish_decoder(w);
    if (nd == GENERATOR_EDEVICE) { /* the device is gone: the engine stops, the jobs stay pending */
        LOG_E("worker %d: the decoder's device is lost: %s; stopping the engine", w->index, generator_errstr(w->gen));
        atomic_store(&w->eng->device_lost, true);
        atomic_store(&w->eng->stop, true);
        atomic_store(&w->eng->abandon, true);
        return;
    }
    if (nd <= 0)
        return;
    arena_reset(&w->arena);
    for (int i = 0; i < nd; i++) {
        GenDone *d = &w->done[i];
        GenFlight *fl = d->tag;
        QueueResult *res = &w->results[i];
        QueueField *f = result_fields(w, i);
        *res = (QueueResult){.kind = JOB_GENERATE, .entry_id = fl->entry_id, .job_id = fl->job_id, .fields = f,
                             .reply_to = fl->reply_to, .payload = fl->payload, .payload_len = fl->payload_len,
                             .deliveries = fl->deliveries};
        if (d->finish == GEN_FINISH_ERROR) {
            add_str(res, f, "status", "error");
            add_str(res, f, "error", arena_strdup(&w->arena, d->error));
            res->dead_reason = f[res->n_fields - 1].value;
        } else {
            add_str(res, f, "status", "ok");
            add_str(res, f, "text", d->text ? d->text : "");
            add_str(res, f, "finish_reason", gen_finish_name(d->finish));
            add_str(res, f, "usage", fmt(w, "{\"prompt_tokens\":%d,\"completion_tokens\":%d}", d->prompt_tokens,
                                         d->completion_tokens));
            long long queued = fl->started_ms - entry_time_ms(fl->entry_id);
            add_str(res, f, "timings", fmt(w, "{\"queued_ms\":%lld,\"prefill_ms\":%.1f,\"decode_ms\":%.1f}",
                                           queued < 0 ? 0 : queued, d->prefill_ms, d->decode_ms));
        }
        if (w->m) {
            metrics_add(&w->m->prompt_tokens, (uint64_t)(d->prompt_tokens > 0 ? d->prompt_tokens : 0));
            metrics_add(&w->m->generated_tokens, (uint64_t)(d->completion_tokens > 0 ? d->completion_tokens : 0));
            metrics_latency(w->m, JOB_GENERATE, METRICS_COMPUTE, mono_us() - fl->started_us);
        }
        add_str(res, f, "id", fl->job_id);
        add_str(res, f, "kind", "generate");
        add_str(res, f, "model", generator_info(w->gen)->model_id);
        add_str(res, f, "finished_at", fmt(w, "%lld", now_ms()));
    }
    finish_results(w, nd);
    for (int i = 0; i < nd; i++) {
        GenFlight *fl = w->done[i].tag;
        free(w->done[i].text);
        unlink_flight(w, fl);
        flight_free(fl);
    }
}

/* Keeps the lease of every entry this worker holds: the batch being processed and every
 * generation in flight. Called by the engine's lease thread over its own connection `lq`, so
 * leases are kept while the worker is busy inside a long embed batch or generation step. */
int worker_extend_leases(Worker *w, Queue *lq)
{
    const char **ids[2] = {NULL, NULL};
    int n[2] = {0, 0}, rc = 0;
    pthread_mutex_lock(&w->lease_lock);
    int cap = w->n_held + w->spare.n_held + w->n_flights;
    for (int k = 0; k < 2 && cap > 0; k++)
        ids[k] = malloc((size_t)cap * sizeof *ids[k]);
    /* Entry ids are copied: the worker may finish and free them while the calls run. */
    char (*copy)[QUEUE_ENTRY_ID_MAX] = cap > 0 ? malloc((size_t)cap * sizeof *copy) : NULL;
    if (cap > 0 && (!ids[0] || !ids[1] || !copy)) {
        rc = -1;
        cap = 0;
    }
    int c = 0;
    for (int s = 0; s < 2; s++) { /* the read being run, and the one before or after it */
        const QueueEntry *e = s == 0 ? w->entries : w->spare.entries;
        int held = s == 0 ? w->n_held : w->spare.n_held;
        for (int i = 0; i < held && c < cap; i++, c++) {
            memcpy(copy[c], e[i].entry_id, QUEUE_ENTRY_ID_MAX);
            ids[e[i].kind][n[e[i].kind]++] = copy[c];
        }
    }
    for (GenFlight *fl = w->flights; fl && c < cap; fl = fl->next, c++) {
        memcpy(copy[c], fl->entry_id, QUEUE_ENTRY_ID_MAX);
        ids[fl->kind][n[fl->kind]++] = copy[c];
    }
    pthread_mutex_unlock(&w->lease_lock);
    for (int k = 0; k < 2 && rc == 0; k++) {
        if (n[k] > 0 && queue_extend_leases(lq, w->consumer, (JobKind)k, ids[k], n[k]) < 0)
            rc = -1;
    }
    free(ids[0]);
    free(ids[1]);
    free(copy);
    return rc;
}

static void hold_entries(Worker *w, int n)
{
    pthread_mutex_lock(&w->lease_lock);
    w->n_held = n;
    pthread_mutex_unlock(&w->lease_lock);
}

/* --- one batch of entries ------------------------------------------------------------------ */

/* Checks the keys a producer named against queue/key_policy.c's rules. A refused reply_to is
 * dropped from the job (its error result notifies no one); returns 1 with the reason in err. */
static int refuse_keys(Worker *w, Job *job, char *err, size_t errlen)
{
    char buf[160];
    const QueueConfig *qc = &w->cfg->queue;
    const char *why;
    if (job->reply_to &&
        (why = queue_key_refusal(qc, QUEUE_KEY_REPLY, job->reply_to, strlen(job->reply_to), buf, sizeof buf))) {
        job->reply_to = NULL;
        snprintf(err, errlen, "reply_to refused: %s", why);
        return 1;
    }
    const EmbedJob *ej = &job->embed;
    for (int t = 0; job->kind == JOB_EMBED && ej->target_field && t < ej->n_texts; t++) {
        why = queue_key_refusal(qc, QUEUE_KEY_TARGET, ej->target_keys[t], strlen(ej->target_keys[t]), buf,
                                sizeof buf);
        if (why) {
            snprintf(err, errlen, "target key %d refused: %s", t + 1, why);
            return 1;
        }
    }
    return 0;
}

/* Results written so far in this batch go out now and the arena that holds their text is
 * reset, so a batch holds the text of one embed chunk at a time, not of the whole read. */
static int flush_results(Worker *w, int r)
{
    finish_results(w, r);
    arena_reset(&w->arena);
    arena_trim(&w->arena, ARENA_KEEP_BYTES);
    return 0;
}

/* Validates and deduplicates n entries already in w->entries: the results of duplicates and bad
 * jobs go in the first slots; returns how many. */
static int prepare_entries(Worker *w, int n)
{
    hold_entries(w, n);
    arena_reset(&w->arena);
    if (w->m) {
        long long start_us = now_us();
        for (int j = 0; j < n; j++) {
            const QueueEntry *e = &w->entries[j];
            if (e->deliveries > 1)
                metrics_add(&w->m->redelivered[e->kind], 1);
            if (!e->deleted)
                metrics_latency(w->m, e->kind, METRICS_QUEUE_WAIT, start_us - entry_time_ms(e->entry_id) * 1000);
        }
    }
    int r = 0;
    const char *ids[n > 0 ? n : 1];
    int idx[n > 0 ? n : 1], nids = 0;
    for (int j = 0; j < n; j++) {
        QueueEntry *e = &w->entries[j];
        Job *job = &w->jobs[j];
        w->jobs_ok[j] = false;
        w->errors[j][0] = '\0';
        if (e->deleted) {
            deleted_entry_result(w, r++, e);
            continue;
        }
        if (job_parse(e->kind, e->payload, e->payload_len, &w->limits, job, w->errors[j], sizeof w->errors[j]) != 0)
            continue;
        if (!job->id[0]) /* entry ids are per stream: the kind keeps the two apart */
            snprintf(job->id, sizeof job->id, "%s:%s", job_kind_name(e->kind), e->entry_id);
        if (e->deliveries > w->cfg->queue.max_attempts) {
            snprintf(w->errors[j], sizeof w->errors[j], "gave up after %d deliveries (queue.max_attempts = %d)",
                     e->deliveries, w->cfg->queue.max_attempts);
            continue;
        }
        if (refuse_keys(w, job, w->errors[j], sizeof w->errors[j]))
            continue;
        w->jobs_ok[j] = true;
        ids[nids] = job->id;
        idx[nids++] = j;
    }
    bool exists[n > 0 ? n : 1];
    memset(exists, 0, sizeof exists);
    while (nids > 0 && ensure_connected(w) && queue_results_exist(w->q, ids, nids, exists) == QUEUE_ECONN)
        ;
    for (int k = 0; k < nids; k++)
        if (exists[k]) {
            w->jobs_ok[idx[k]] = false;
            duplicate_result(w, r++, &w->entries[idx[k]], &w->jobs[idx[k]]);
        }
    for (int j = 0; j < n; j++)
        if (!w->jobs_ok[j] && w->errors[j][0])
            error_result(w, r++, &w->entries[j], &w->jobs[j], w->errors[j]);
    return r;
}

/* Runs the valid jobs of the n entries prepare_entries left results [0, r) for: embed jobs in
 * chunks, each chunk's results but the last written as they come; generate jobs join the
 * running batch. Returns how many results are left to write. */
static int run_entries(Worker *w, int n, int r)
{
    /* Embed jobs in chunks that fit the text buffers (a read is the look-ahead window). */
    int chunk[n > 0 ? n : 1], nchunk = 0, chunk_texts = 0;
    for (int j = 0; j <= n; j++) {
        bool flush = j == n;
        if (!flush && (!w->jobs_ok[j] || w->entries[j].kind != JOB_EMBED))
            continue;
        if (!flush && !w->eng->embedder) {
            snprintf(w->errors[j], sizeof w->errors[j], "this engine has no embedder");
            error_result(w, r++, &w->entries[j], &w->jobs[j], w->errors[j]);
            continue;
        }
        int texts = flush ? 0 : w->jobs[j].embed.n_texts;
        if (nchunk > 0 && (flush || chunk_texts + texts > w->max_texts)) {
            if (atomic_load(&w->eng->abandon)) { /* stopping: the rest stays pending */
                int left = 0;
                for (int k = chunk[0]; k < n; k++)
                    left += w->jobs_ok[k] && w->entries[k].kind == JOB_EMBED;
                LOG_W("worker %d: leaving %d jobs pending (stopping)", w->index, left);
                break;
            }
            r = run_embed_chunk(w, chunk, nchunk, r);
            if (!flush) /* the last chunk's results are written with the rest, by the caller */
                r = flush_results(w, r);
            nchunk = chunk_texts = 0;
        }
        if (!flush) {
            chunk[nchunk++] = j;
            chunk_texts += texts;
        }
    }
    /* Generate jobs join the running batch; they finish in step_generate. */
    for (int j = 0; j < n; j++) {
        if (!w->jobs_ok[j] || w->entries[j].kind != JOB_GENERATE)
            continue;
        int rc = w->gen ? submit_generate(w, j) : 1;
        if (!w->gen)
            snprintf(w->errors[j], sizeof w->errors[j], "this engine has no decoder (decoder.enabled = false)");
        if (rc != 0)
            error_result(w, r++, &w->entries[j], &w->jobs[j], w->errors[j][0] ? w->errors[j] : "out of memory");
    }
    return r;
}

/* The n entries are done with (their results written, or left pending). */
static void release_entries(Worker *w, int n)
{
    hold_entries(w, 0);
    for (int j = 0; j < n; j++)
        job_free(&w->jobs[j]);
    queue_entries_clear(w->entries, n);
}

/* Validates, deduplicates and runs n entries already in w->entries, then finishes them. */
static void process_entries(Worker *w, int n)
{
    flush_results(w, run_entries(w, n, prepare_entries(w, n)));
    publish_decoder(w);
    release_entries(w, n);
}

/* --- the loop ------------------------------------------------------------------------------ */

static bool gen_has_room(const Worker *w)
{
    return w->gen && w->n_flights < 2 * w->cfg->decoder.max_slots;
}

/* Tops a short read of n entries up for batch.max_wait_ms, so a shallow queue still forms
 * batches without adding latency to a deep one. */
static int gather(Worker *w, int n)
{
    if (n >= w->max_entries || w->cfg->batch.max_wait_ms <= 0)
        return n;
    /* Poll without BLOCK: Redis times out blocked reads only on its cron tick (100 ms at the
     * default hz), far coarser than a few milliseconds of max_wait. */
    long long deadline = mono_ms() + w->cfg->batch.max_wait_ms;
    while (n < w->max_entries && !atomic_load(&w->eng->stop) && mono_ms() < deadline) {
        int m = queue_read(w->q, w->eng->embedder != NULL, gen_has_room(w), w->max_entries - n, 0, NULL,
                           w->entries + n, w->max_entries - n);
        if (m < 0)
            break;
        n += m;
        if (m == 0)
            usleep(500);
    }
    return n;
}

/* Reads a batch: blocking when idle, gathering more when the first read came back short. */
static int read_batch(Worker *w)
{
    bool gen_busy = w->n_flights > 0;
    int block = gen_busy ? 0 : w->cfg->queue.block_ms;
    int n = queue_read(w->q, w->eng->embedder != NULL, gen_has_room(w), w->max_entries, block, NULL,
                       w->entries, w->max_entries);
    if (n <= 0 || gen_busy)
        return n;
    return gather(w, n);
}

/* Entries read ahead that will not run (the engine is stopping): handed back to the group at
 * once, so another engine's next reclaim takes them, or this consumer's restart reads them
 * first. Left as they are (pending, reclaimed after the visibility timeout) if that fails. */
static void release_unrun(Worker *w, int n)
{
    const char *ids[2][n > 0 ? n : 1];
    int c[2] = {0, 0};
    for (int j = 0; j < n; j++)
        ids[w->entries[j].kind][c[w->entries[j].kind]++] = w->entries[j].entry_id;
    hold_entries(w, 0);
    int released = 0;
    for (int k = 0; k < 2; k++) {
        int rc = c[k] > 0 ? queue_release(w->q, (JobKind)k, ids[k], c[k]) : 0;
        released += rc > 0 ? rc : 0;
    }
    LOG_I("worker %d: stopping: %d jobs read ahead are not run; %d released to the group, the rest "
          "stay pending for this consumer", w->index, n, released);
    release_entries(w, n);
}

/* A deep queue: the last read was full, so the next one is read ahead. Runs the n entries read
 * into w->entries and, as long as reads come back full, the ones after, each while Redis writes
 * the results of the one before and reads the one after (one round trip carries both):
 *
 *   read A | run A, send read B | send finish A, read C | run B | take finish A, read C | ...
 *
 * Delivery is unchanged: a result is written with its XACK as before, only later; a read-ahead
 * whose reply is lost with the connection leaves its entries pending for this consumer
 * (reclaimed after the visibility timeout); at a stop, entries read ahead are not run but
 * released (release_unrun). Returns to the caller's loop when a read comes back short, at a
 * stop, and when a heartbeat or reclaim is due. */
static void process_read_ahead(Worker *w, int n)
{
    int owed = 0, owed_entries = 0; /* the spare slot's results, built but not yet taken */
    for (;;) {
        int r = prepare_entries(w, n);
        bool sent = false;
        if (owed > 0) {
            swap_slots(w, &w->spare);
            sent = queue_finish_send(w->q, w->results, owed) == QUEUE_OK;
            swap_slots(w, &w->spare);
        }
        long long now = mono_ms();
        bool ahead = !atomic_load(&w->eng->stop) && now < w->next_heartbeat_ms && now < w->next_reclaim_ms &&
                     queue_read_send(w->q, true, false, w->max_entries) == QUEUE_OK;
        r = run_entries(w, n, r);
        swap_slots(w, &w->spare); /* the read before this one: take its replies */
        if (owed > 0) {
            finish_sent(w, owed, sent);
            arena_reset(&w->arena);
            arena_trim(&w->arena, ARENA_KEEP_BYTES);
            release_entries(w, owed_entries);
        }
        int m = ahead ? queue_read_recv(w->q, w->entries, w->max_entries) : 0;
        if (m > 0)
            hold_entries(w, m);
        bool go_on = m >= w->max_entries && !atomic_load(&w->eng->stop);
        if (!go_on) { /* write this read's results now and leave the loop */
            swap_slots(w, &w->spare);
            flush_results(w, r);
            release_entries(w, n);
            swap_slots(w, &w->spare);
            if (m < 0)
                LOG_W("worker %d: reading jobs ahead failed: %s", w->index, queue_errstr(w->q));
            if (m > 0 && atomic_load(&w->eng->stop))
                release_unrun(w, m);
            else if (m > 0)
                process_entries(w, gather(w, m));
            return;
        }
        owed = r; /* the read just taken is the current one, this one's results wait in the spare */
        owed_entries = n;
        n = m;
    }
}

static void reclaim(Worker *w)
{
    for (int k = 0; k < 2; k++) {
        JobKind kind = (JobKind)k;
        if ((kind == JOB_EMBED && !w->eng->embedder) || (kind == JOB_GENERATE && !gen_has_room(w)))
            continue;
        int n = queue_reclaim(w->q, kind, w->entries, w->max_entries);
        if (n > 0) {
            if (w->m)
                metrics_add(&w->m->reclaimed[kind], (uint64_t)n);
            LOG_I("worker %d: reclaimed %d %s jobs from stalled consumers", w->index, n, job_kind_name(kind));
            process_entries(w, n);
        }
        /* Worker 0 also forgets consumers of engines long gone, so status stays readable. */
        int pruned = 0;
        if (w->index == 0 && queue_prune_consumers(w->q, kind, w->cfg->queue.prune_idle_ms, &pruned) == QUEUE_OK &&
            pruned > 0)
            LOG_I("removed %d idle %s consumers without pending jobs", pruned, job_kind_name(kind));
    }
}

void *worker_main(void *arg)
{
    Worker *w = arg;
    Engine *eng = w->eng;
    int vis = w->cfg->queue.visibility_timeout_ms;
    log_set_worker(w->index);
    /* This consumer's own pending entries first (a restart under the same consumer name), each
     * taken once: pages follow the last id read, so a generation still in flight is not read
     * (and counted as a delivery) again. */
    for (int k = 0; k < 2; k++) {
        bool embed = k == JOB_EMBED && eng->embedder, gen = k == JOB_GENERATE && w->gen;
        char after[QUEUE_ENTRY_ID_MAX] = "0";
        while ((embed || gen) && !atomic_load(&eng->stop) && ensure_connected(w)) {
            int n = queue_read(w->q, embed, gen, w->max_entries, 0, after, w->entries, w->max_entries);
            if (n <= 0)
                break;
            snprintf(after, sizeof after, "%s", w->entries[n - 1].entry_id);
            long long t0 = mono_us();
            process_entries(w, n);
            count_busy(w, t0);
        }
    }
    atomic_fetch_add(&eng->workers_ready, 1);
    while (!atomic_load(&eng->abandon)) {
        bool stopping = atomic_load(&eng->stop);
        if (stopping && w->n_flights == 0)
            break;
        if (!ensure_connected(w))
            break;
        long long now = mono_ms();
        if (now >= w->next_heartbeat_ms) {
            queue_heartbeat(w->q, vis, eng->embedder ? embedder_info(eng->embedder)->precision : NULL);
            w->next_heartbeat_ms = now + vis / 3;
        }
        if (!stopping && now >= w->next_reclaim_ms) {
            long long t0 = mono_us();
            reclaim(w);
            count_busy(w, t0);
            w->next_reclaim_ms = now + vis / 2;
        }
        if (!stopping) {
            int n = read_batch(w);
            if (n < 0) {
                LOG_W("worker %d: reading jobs failed: %s", w->index, queue_errstr(w->q));
                if (n != QUEUE_ECONN)
                    usleep(100 * 1000);
                continue;
            }
            if (n > 0) {
                long long t0 = mono_us();
                if (w->read_ahead && n >= w->max_entries)
                    process_read_ahead(w, n);
                else
                    process_entries(w, n);
                count_busy(w, t0);
            }
        }
        if (w->gen && generator_pending(w->gen) > 0) {
            long long t0 = mono_us();
            step_generate(w, w->cfg->decoder.max_slots * 4);
            count_busy(w, t0);
        }
    }
    atomic_fetch_add(&eng->workers_exited, 1);
    return NULL;
}
