/* queue.h: everything that talks to Redis. Streams with a consumer group (one stream per job
 * kind), reclaiming with XAUTOCLAIM, atomic result + reply + target + dead-letter + XACK in
 * one Lua call, producer commands (enqueue, status, dead letters). One Queue is one
 * connection; it is not thread-safe, so every worker owns its own. Errors come back as
 * negative codes with the detail in queue_errstr(); nothing here logs or exits. */
#ifndef WEAVER_QUEUE_H
#define WEAVER_QUEUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "config/config.h"
#include "queue/job.h"

typedef struct Queue Queue;

enum {
    QUEUE_OK = 0,
    QUEUE_ECONN = -1,   /* connection lost or refused: reconnect and retry */
    QUEUE_EREPLY = -2,  /* Redis answered with an error */
    QUEUE_ENOMEM = -3,
    QUEUE_EARG = -4,    /* the caller passed something invalid */
};

#define QUEUE_ENTRY_ID_MAX 48
/* Bytes of every Redis key buffer, NUL included. The config bounds the names that go into keys
 * (CFG_QUEUE_PREFIX_MAX, CFG_PIN_COHORT_MAX in config/config.h) so that the longest key the
 * engine builds fits; queue.c and pin.c check the sums at compile time, and every key builder
 * refuses (QUEUE_EARG) rather than cut a key short. */
#define QUEUE_KEY_MAX 256
/* Bytes of a consumer name buffer, NUL included (a worker's is "<queue.consumer>-<index>"). */
#define QUEUE_CONSUMER_MAX 128

/* One stream entry handed to a worker. */
typedef struct QueueEntry {
    JobKind kind;
    char entry_id[QUEUE_ENTRY_ID_MAX];
    char *payload;      /* the "job" field, NULL when the entry has none */
    size_t payload_len;
    int deliveries;     /* 1 for a first read, more when reclaimed */
    bool deleted;       /* deleted from the stream while pending (trimmed): no job to run */
} QueueEntry;

typedef struct QueueField {
    const char *name;
    const char *value;
    size_t len;
} QueueField;

/* Everything written when a job finishes, applied atomically with its XACK. */
typedef struct QueueResult {
    JobKind kind;
    const char *entry_id;
    const char *job_id;
    const QueueField *fields;   /* the result hash */
    int n_fields;
    const char *reply_to;       /* list that gets the job id, NULL = none */
    const char *target_field;   /* producer's hashes that get the raw vector, NULL = none */
    const char *const *target_keys;
    const char *const *target_values;
    size_t target_len;          /* bytes per target value */
    int n_targets;
    const char *dead_reason;    /* non-NULL: also add a dead-letter entry */
    bool dead_only;             /* write only the dead letter (the result key is not ours) */
    const char *payload;        /* original job: sent only with a dead letter */
    size_t payload_len;
    int deliveries;
} QueueResult;

typedef struct QueueConsumerStatus {
    char name[QUEUE_CONSUMER_MAX];
    long long pending, idle_ms;
    bool ready;     /* its heartbeat key is live */
    char precision[8]; /* the embedder precision its heartbeat reports, "" if none */
} QueueConsumerStatus;

typedef struct QueueStreamStatus {
    long long length, pending, dead;
    int n_consumers;
    QueueConsumerStatus consumers[64];
} QueueStreamStatus;

/* Connects (retrying with backoff until redis.startup_deadline_ms) and authenticates. Returns
 * NULL only on allocation failure; check queue_connected(). A prefix or consumer name too long
 * for its keys leaves it unconnected with the reason in queue_errstr(). */
Queue *queue_open(const RedisConfig *rc, const QueueConfig *qc, const char *consumer);
bool queue_connected(const Queue *q);
/* One reconnect attempt (AUTH, SELECT, script load). */
int queue_reconnect(Queue *q);
void queue_free(Queue *q);                  /* NULL-safe */
const char *queue_errstr(const Queue *q);
const char *queue_consumer(const Queue *q);

/* Key names: "<prefix>:jobs:embed", "<prefix>:result:<id>", ... queue_result_key writes into
 * buf and returns QUEUE_OK, or QUEUE_EARG (buf then "") when the key would not fit in len
 * bytes: a key is never cut short, so two long ids can never share one. */
const char *queue_stream_key(const Queue *q, JobKind kind);
int queue_result_key(const Queue *q, const char *job_id, char *buf, size_t len);
const char *queue_dead_key(const Queue *q);

/* Producer-named keys (queue/key_policy.c). The engine owns every key under "<prefix>:" but the
 * reply lists under "<prefix>:reply:"; those are never a valid reply_to or target. Reply lists:
 * "<prefix>:reply:*" or queue.reply_patterns; target hashes: queue.target_patterns only (none
 * configured = target refused). Returns NULL when `key` (len bytes) is allowed for `use`, else
 * the reason (static text or written into buf). The reason never repeats the key. */
typedef enum QueueKeyUse { QUEUE_KEY_REPLY, QUEUE_KEY_TARGET } QueueKeyUse;
const char *queue_key_refusal(const QueueConfig *qc, QueueKeyUse use, const char *key, size_t len, char *buf,
                              size_t buflen);

/* Creates the consumer group on both streams (MKSTREAM); an existing group is fine. */
int queue_ensure_groups(Queue *q);

/* XREADGROUP over the requested streams. `own_after` non-NULL reads this consumer's own pending
 * entries with ids after it ("0" = from the start) instead of new ones; page through them by
 * passing the last id read, so each is taken once. Fills up to `max` entries; returns the count
 * or < 0. Entries must be released with queue_entries_clear. */
int queue_read(Queue *q, bool embed, bool generate, int count, int block_ms, const char *own_after,
               QueueEntry *out, int max);
/* Sending ahead: the command goes out now and its reply is taken later, so the caller computes
 * while Redis works. Replies are taken in the order the commands were sent; any other call on
 * this Queue meanwhile first reads the owed replies off the socket and keeps them for their
 * takers. A reply lost with the connection is taken as QUEUE_ECONN: an XREADGROUP whose reply
 * was lost leaves its entries pending for this consumer (reclaimed after the visibility
 * timeout, or read first by a restart under the same name); a finish is retried with
 * queue_finish. queue_read_send reads new entries without BLOCK; queue_read_recv takes them like
 * queue_read. */
int queue_read_send(Queue *q, bool embed, bool generate, int count);
int queue_read_recv(Queue *q, QueueEntry *out, int max);
/* XAUTOCLAIM entries idle longer than the visibility timeout from dead consumers, with their
 * delivery counts. Entries deleted from the stream while pending (which XAUTOCLAIM drops from
 * the group) come back too, flagged `deleted`, so they can be recorded. Returns the count or < 0. */
int queue_reclaim(Queue *q, JobKind kind, QueueEntry *out, int max);
void queue_entries_clear(QueueEntry *e, int n);
/* Keeps the leases of entries `consumer` is still working on (XCLAIM JUSTID of those still
 * pending for it, so a long job is not reclaimed from a live worker; not a delivery). Any
 * number of ids, in bounded calls; usable from another connection than the worker's. Returns
 * how many were extended, or < 0. */
int queue_extend_leases(Queue *q, const char *consumer, JobKind kind, const char *const *entry_ids, int n);

/* Hands entries this consumer read but will not run back to the group: still pending for it,
 * but idle as long as the visibility timeout, so the next XAUTOCLAIM of any consumer takes
 * them (that counts a delivery). Returns how many were released, or < 0. */
int queue_release(Queue *q, JobKind kind, const char *const *entry_ids, int n);

/* For each job id, whether a result already exists (a duplicate delivery of a finished job). */
int queue_results_exist(Queue *q, const char *const *job_ids, int n, bool *exists);

typedef enum QueueRefusalKind {
    QUEUE_REFUSED_NONE = 0,
    QUEUE_REFUSED_REPLY,   /* the reply_to key holds another type */
    QUEUE_REFUSED_TARGET,  /* a target key holds another type */
    QUEUE_REFUSED_RESULT,  /* the result key is not a hash, or holds the other kind's result */
} QueueRefusalKind;

typedef struct QueueRefusal {
    QueueRefusalKind what;
    bool acked_only;    /* not refused, but only acknowledged: its result already existed */
    char why[192];
} QueueRefusal;

/* Writes n results atomically each (result hash with TTL, reply, targets, dead letter, XACK +
 * XDEL), pipelined in calls of bounded size. refused[i] says when result i was refused because a
 * key it touches has the wrong type, or its result key holds the other job kind's result;
 * nothing of it was written then. Returns 0 when every call ran (refusals included), < 0
 * otherwise (then retry: a result already written is recognised and only acknowledged). */
int queue_finish(Queue *q, const QueueResult *r, int n, QueueRefusal *refused);
/* The same, sent ahead (see queue_read_send): r[0, n) must stay unchanged until
 * queue_finish_recv takes the replies with the same r and n. */
int queue_finish_send(Queue *q, const QueueResult *r, int n);
int queue_finish_recv(Queue *q, const QueueResult *r, int n, QueueRefusal *refused);

/* Consumer heartbeat: a key with TTL saying this consumer is alive and ready; its value is
 * "precision=<p>" (the embedder precision that runs, for `status`) or "ready" when precision is
 * NULL or "". */
int queue_heartbeat(Queue *q, int ttl_ms, const char *precision);

/* Producer side: pipelined XADD of n job payloads. ids_out (optional) gets each entry id. */
int queue_enqueue(Queue *q, JobKind kind, const char *const *payloads, const size_t *lens, int n);
/* Blocks on a reply list for one job id; returns 1 when one arrived, 0 on timeout. */
int queue_wait_reply(Queue *q, const char *list, int timeout_ms, char *job_id, size_t len);
/* Reads a result hash as a JSON object string (caller frees); NULL when absent. f32 data is
 * rendered as a JSON array of arrays. */
char *queue_result_json(Queue *q, const char *job_id);

int queue_status(Queue *q, JobKind kind, QueueStreamStatus *st);
/* Cheap gauges for metrics (queue/admin.c): each stream's length and pending count, and the
 * dead-letter stream's length, in one pipelined round trip. */
typedef struct QueueDepths {
    long long length[2], pending[2], dead;
} QueueDepths;
int queue_depths(Queue *q, QueueDepths *d);
/* Removes consumers of dead engines: no pending entries and idle longer than min_idle_ms (a
 * live worker reads every queue.block_ms). Never removes a consumer with pending entries. */
int queue_prune_consumers(Queue *q, JobKind kind, long long min_idle_ms, int *pruned);
/* Dead letters: list as JSON lines to `out`; requeue (all when n == 0) puts the original job
 * back on its stream, deletes its error result and removes the dead entry. */
int queue_dead_list(Queue *q, int count, FILE *out);
int queue_dead_requeue(Queue *q, const char *const *dead_ids, int n, int *requeued);

/* ---- Cohort pin (queue/pin.c) -------------------------------------------------------------
 * The embedder identity a cohort was first served with, stored as the hash
 * "<prefix>:pin:<cohort>" with fields model_id, snapshot_hash, dim, pooling, normalize
 * ("true"/"false"), max_seq_len, probe_text, probe (dim floats, f32 little-endian bytes),
 * created_at (unix ms), created_by. The comparison itself lives in engine/pin.c. */
#define QUEUE_PIN_TEXT_MAX 256

typedef struct QueuePin {
    char model_id[256];
    char snapshot_hash[65];   /* "" = unknown to the backend that wrote it */
    int dim;
    char pooling[16];         /* "mean" | "cls" | "max" */
    bool normalize;
    int max_seq_len;
    char probe_text[QUEUE_PIN_TEXT_MAX];
    float *probe;             /* probe_dim floats, owned: release with queue_pin_clear */
    int probe_dim;
    long long created_at;     /* unix milliseconds */
    char created_by[192];
} QueuePin;

/* "<prefix>:pin:<cohort>" into buf: QUEUE_OK, or QUEUE_EARG (buf then "") when it would not fit. */
int queue_pin_key(const Queue *q, const char *cohort, char *buf, size_t len);
/* Writes `mine` as the cohort's pin if there is none, atomically (one Lua call: two engines
 * booting at once agree on one pin). *stored gets the pin Redis holds afterwards (ours or the
 * one that was there) and *created says which. Returns QUEUE_OK or < 0. */
int queue_pin_create(Queue *q, const char *cohort, const QueuePin *mine, QueuePin *stored, bool *created);
/* Reads the pin: 1 found (*out filled), 0 none, < 0 error (also a key that is not a pin). */
int queue_pin_get(Queue *q, const char *cohort, QueuePin *out);
/* Deletes the pin: 1 deleted, 0 there was none, < 0 error. */
int queue_pin_delete(Queue *q, const char *cohort);
void queue_pin_clear(QueuePin *p); /* frees probe; NULL-safe */

#endif
