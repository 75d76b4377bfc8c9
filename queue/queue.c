/* queue.c: the Redis side of the engine, the only code that includes hiredis.h.
 * Every command is bounded (COUNT, BLOCK, timeouts); a lost connection comes back as
 * QUEUE_ECONN so the caller can reconnect and retry without losing anything: nothing is
 * acknowledged before its result is durable, and both happen in one Lua call. */
#include "queue/queue_internal.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>



/* The atomic finish of one job. Producer-named keys (reply list, target hashes) are type-checked
 * before anything is written: a script error midway would leave a partial write, so a key of
 * the wrong type refuses the whole finish with {which, why} and the caller rewrites it as an
 * error result. Duplicate results are recognised by job id and only
 * acknowledged, so retrying a whole pipelined batch after a lost connection is safe. A
 * duplicate that names a different reply list (a producer resubmitting a finished job) is
 * told about the existing result; the same list is never notified twice.
 * KEYS: stream, result, dead, [reply], targets...
 * ARGV: group, entry id, ttl, nfields, field/value..., has_reply, job id, ntargets,
 *       target field, target values..., dead flag, reason, payload, deliveries, maxlen, kind */
static const char FINISH_LUA[] =
    "local group, eid, ttl, nf = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])\n"
    "local i = 5 + 2 * nf\n"
    "local has_reply, job_id, nt, tfield = ARGV[i] == '1', ARGV[i+1], tonumber(ARGV[i+2]), ARGV[i+3]\n"
    "local v0 = i + 4\n"
    "local d = v0 + nt\n"
    "local function wrong(key, want)\n"
    "  local t = redis.call('TYPE', key).ok\n"
    "  if t ~= 'none' and t ~= want then return key .. ' holds a ' .. t .. ', not a ' .. want end\n"
    "end\n"
    "if has_reply then\n"
    "  local w = wrong(KEYS[4], 'list')\n"
    "  if w then return {'reply_to', w} end\n"
    "end\n"
    "for t = 0, nt - 1 do\n"
    "  local w = wrong(KEYS[(has_reply and 5 or 4) + t], 'hash')\n"
    "  if w then return {'target', w} end\n"
    "end\n"
    "if redis.call('EXISTS', KEYS[2]) == 1 then\n"
    "  if has_reply and redis.call('HGET', KEYS[2], 'reply_to') ~= KEYS[4] then\n"
    "    redis.call('RPUSH', KEYS[4], job_id)\n"
    "    redis.call('EXPIRE', KEYS[4], ttl)\n"
    "  end\n"
    "  redis.call('XACK', KEYS[1], group, eid)\n"
    "  redis.call('XDEL', KEYS[1], eid)\n"
    "  return 0\n"
    "end\n"
    "local fv = {}\n"
    "for k = 5, 4 + 2 * nf do fv[#fv + 1] = ARGV[k] end\n"
    "if has_reply then fv[#fv + 1] = 'reply_to'; fv[#fv + 1] = KEYS[4] end\n"
    "redis.call('HSET', KEYS[2], unpack(fv))\n"
    "redis.call('EXPIRE', KEYS[2], ttl)\n"
    "local k = 4\n"
    "if has_reply then\n"
    "  redis.call('RPUSH', KEYS[4], job_id)\n"
    "  redis.call('EXPIRE', KEYS[4], ttl)\n"
    "  k = 5\n"
    "end\n"
    "for t = 0, nt - 1 do redis.call('HSET', KEYS[k + t], tfield, ARGV[v0 + t]) end\n"
    "if ARGV[d] == '1' then\n"
    "  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[d + 4], '*', 'job_id', job_id, 'kind', ARGV[d + 5],\n"
    "             'reason', ARGV[d + 1], 'job', ARGV[d + 2], 'deliveries', ARGV[d + 3], 'entry', eid)\n"
    "end\n"
    "redis.call('XACK', KEYS[1], group, eid)\n"
    "redis.call('XDEL', KEYS[1], eid)\n"
    "return 1\n";

int queue_set_err(Queue *q, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(q->errstr, sizeof q->errstr, fmt, ap);
    va_end(ap);
    return code;
}

/* Turns a NULL reply (I/O failure) or an error reply into an error code; frees nothing. */
int queue_check_reply(Queue *q, redisReply *r, const char *what)
{
    if (!r) {
        int code = queue_set_err(q, QUEUE_ECONN, "%s: connection lost: %s", what,
                           q->ctx && q->ctx->errstr[0] ? q->ctx->errstr : "no reply");
        redisFree(q->ctx);
        q->ctx = NULL;
        return code;
    }
    if (r->type == REDIS_REPLY_ERROR)
        return queue_set_err(q, QUEUE_EREPLY, "%s: %s", what, r->str);
    return QUEUE_OK;
}

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int read_secret(const char *path, char *buf, size_t len)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, len - 1, f);
    fclose(f);
    buf[n] = '\0';
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' '))
        buf[--n] = '\0';
    return 0;
}

static int load_script(Queue *q)
{
    redisReply *r = redisCommand(q->ctx, "SCRIPT LOAD %s", FINISH_LUA);
    int rc = queue_check_reply(q, r, "SCRIPT LOAD");
    if (rc == QUEUE_OK && r->type == REDIS_REPLY_STRING)
        snprintf(q->finish_sha, sizeof q->finish_sha, "%s", r->str);
    freeReplyObject(r);
    return rc;
}

int queue_reconnect(Queue *q)
{
    if (q->ctx) {
        redisFree(q->ctx);
        q->ctx = NULL;
    }
    struct timeval tv = {q->rc.connect_timeout_ms / 1000, (q->rc.connect_timeout_ms % 1000) * 1000};
    redisContext *c = redisConnectWithTimeout(q->rc.host, q->rc.port, tv);
    if (!c)
        return queue_set_err(q, QUEUE_ENOMEM, "cannot allocate a Redis context");
    if (c->err) {
        queue_set_err(q, QUEUE_ECONN, "cannot connect to Redis at %s:%d: %s", q->rc.host, q->rc.port, c->errstr);
        redisFree(c);
        return QUEUE_ECONN;
    }
    /* Commands never block longer than BLOCK + this margin; a dead server is noticed. */
    struct timeval cmd_tv = {(q->qc.block_ms + 5000) / 1000, 0};
    redisSetTimeout(c, cmd_tv);
    redisEnableKeepAlive(c);
    q->ctx = c;
    redisReply *r;
    if (q->password[0]) {
        if (q->rc.username && q->rc.username[0])
            r = redisCommand(c, "AUTH %s %s", q->rc.username, q->password);
        else
            r = redisCommand(c, "AUTH %s", q->password);
        int rc = queue_check_reply(q, r, "AUTH");
        freeReplyObject(r);
        if (rc)
            return rc;
    }
    if (q->rc.db != 0) {
        r = redisCommand(c, "SELECT %d", q->rc.db);
        int rc = queue_check_reply(q, r, "SELECT");
        freeReplyObject(r);
        if (rc)
            return rc;
    }
    return load_script(q);
}

Queue *queue_open(const RedisConfig *rc, const QueueConfig *qc, const char *consumer)
{
    Queue *q = calloc(1, sizeof *q);
    if (!q)
        return NULL;
    q->rc = *rc;
    q->qc = *qc;
    snprintf(q->consumer, sizeof q->consumer, "%s", consumer ? consumer : "producer");
    snprintf(q->stream[JOB_EMBED], sizeof q->stream[0], "%s:jobs:embed", qc->prefix);
    snprintf(q->stream[JOB_GENERATE], sizeof q->stream[0], "%s:jobs:generate", qc->prefix);
    snprintf(q->dead, sizeof q->dead, "%s:dead", qc->prefix);
    strcpy(q->reclaim_cursor[0], "0-0");
    strcpy(q->reclaim_cursor[1], "0-0");
    /* Credentials come from a file or the environment, never from the config itself. */
    if (rc->password_file && rc->password_file[0]) {
        if (read_secret(rc->password_file, q->password, sizeof q->password) != 0) {
            queue_set_err(q, QUEUE_EARG, "cannot read redis.password_file %s: %s", rc->password_file, strerror(errno));
            return q;
        }
    } else if (getenv("WEAVER_REDIS_PASSWORD")) {
        snprintf(q->password, sizeof q->password, "%s", getenv("WEAVER_REDIS_PASSWORD"));
    }
    long long deadline = now_ms() + rc->startup_deadline_ms;
    int backoff = 50;
    while (queue_reconnect(q) == QUEUE_ECONN && now_ms() < deadline) {
        usleep((useconds_t)backoff * 1000);
        backoff = backoff * 2 > rc->reconnect_max_backoff_ms ? rc->reconnect_max_backoff_ms : backoff * 2;
    }
    return q;
}

bool queue_connected(const Queue *q) { return q && q->ctx && q->finish_sha[0]; }
const char *queue_errstr(const Queue *q) { return q ? q->errstr : "no queue"; }
const char *queue_consumer(const Queue *q) { return q->consumer; }
const char *queue_stream_key(const Queue *q, JobKind kind) { return q->stream[kind]; }
const char *queue_dead_key(const Queue *q) { return q->dead; }

void queue_result_key(const Queue *q, const char *job_id, char *buf, size_t len)
{
    snprintf(buf, len, "%s:result:%s", q->qc.prefix, job_id);
}

void queue_free(Queue *q)
{
    if (!q)
        return;
    if (q->ctx)
        redisFree(q->ctx);
    memset(q->password, 0, sizeof q->password);
    free(q);
}

int queue_ensure_ctx(Queue *q)
{
    if (q->ctx)
        return QUEUE_OK;
    return queue_set_err(q, QUEUE_ECONN, "not connected to Redis");
}

int queue_ensure_groups(Queue *q)
{
    if (queue_ensure_ctx(q))
        return QUEUE_ECONN;
    for (int k = 0; k < 2; k++) {
        redisReply *r = redisCommand(q->ctx, "XGROUP CREATE %s %s 0 MKSTREAM", q->stream[k], q->qc.group);
        int rc = queue_check_reply(q, r, "XGROUP CREATE");
        bool exists = rc == QUEUE_EREPLY && strncmp(r->str, "BUSYGROUP", 9) == 0;
        freeReplyObject(r);
        if (rc && !exists)
            return rc;
    }
    return QUEUE_OK;
}

void queue_entries_clear(QueueEntry *e, int n)
{
    for (int i = 0; i < n; i++) {
        free(e[i].payload);
        e[i].payload = NULL;
    }
}

/* Copies one [id, [field, value, ...]] stream entry. */
static void take_entry(const redisReply *ent, JobKind kind, QueueEntry *out)
{
    memset(out, 0, sizeof *out);
    out->kind = kind;
    out->deliveries = 1;
    if (ent->type != REDIS_REPLY_ARRAY || ent->elements < 2 || ent->element[0]->type != REDIS_REPLY_STRING)
        return;
    snprintf(out->entry_id, sizeof out->entry_id, "%s", ent->element[0]->str);
    const redisReply *fv = ent->element[1];
    if (fv->type != REDIS_REPLY_ARRAY)
        return; /* deleted while pending: no fields */
    for (size_t i = 0; i + 1 < fv->elements; i += 2) {
        const redisReply *f = fv->element[i], *v = fv->element[i + 1];
        if (f->type == REDIS_REPLY_STRING && v->type == REDIS_REPLY_STRING && strcmp(f->str, "job") == 0) {
            out->payload = malloc(v->len + 1);
            if (out->payload) {
                memcpy(out->payload, v->str, v->len);
                out->payload[v->len] = '\0';
                out->payload_len = v->len;
            }
            return;
        }
    }
}

static JobKind kind_of_stream(const Queue *q, const char *name)
{
    return strcmp(name, q->stream[JOB_GENERATE]) == 0 ? JOB_GENERATE : JOB_EMBED;
}

static int fill_deliveries(Queue *q, QueueEntry *e, int n);

int queue_read(Queue *q, bool embed, bool generate, int count, int block_ms, bool own_pending,
               QueueEntry *out, int max)
{
    if (queue_ensure_ctx(q))
        return QUEUE_ECONN;
    const char *argv[16];
    char count_s[16], block_s[16];
    int argc = 0;
    argv[argc++] = "XREADGROUP";
    argv[argc++] = "GROUP";
    argv[argc++] = q->qc.group;
    argv[argc++] = q->consumer;
    snprintf(count_s, sizeof count_s, "%d", count);
    argv[argc++] = "COUNT";
    argv[argc++] = count_s;
    if (block_ms > 0 && !own_pending) {
        snprintf(block_s, sizeof block_s, "%d", block_ms);
        argv[argc++] = "BLOCK";
        argv[argc++] = block_s;
    }
    argv[argc++] = "STREAMS";
    if (embed)
        argv[argc++] = q->stream[JOB_EMBED];
    if (generate)
        argv[argc++] = q->stream[JOB_GENERATE];
    const char *from = own_pending ? "0" : ">";
    if (embed)
        argv[argc++] = from;
    if (generate)
        argv[argc++] = from;
    if (!embed && !generate)
        return 0;
    redisReply *r = redisCommandArgv(q->ctx, argc, argv, NULL);
    int rc = queue_check_reply(q, r, "XREADGROUP");
    if (rc) {
        bool nogroup = rc == QUEUE_EREPLY && strstr(r->str, "NOGROUP");
        freeReplyObject(r);
        /* The group vanished (for example a Redis restarted without persistence): recreate it. */
        if (nogroup && queue_ensure_groups(q) == QUEUE_OK)
            return 0;
        return rc;
    }
    int n = 0;
    if (r->type == REDIS_REPLY_ARRAY) {
        for (size_t s = 0; s < r->elements; s++) {
            const redisReply *sr = r->element[s];
            if (sr->type != REDIS_REPLY_ARRAY || sr->elements < 2)
                continue;
            JobKind kind = kind_of_stream(q, sr->element[0]->str);
            const redisReply *ents = sr->element[1];
            for (size_t e = 0; e < ents->elements && n < max; e++)
                take_entry(ents->element[e], kind, &out[n++]);
        }
    }
    freeReplyObject(r);
    if (own_pending && n > 0) {
        int rc2 = fill_deliveries(q, out, n);
        if (rc2) {
            queue_entries_clear(out, n);
            return rc2;
        }
    }
    return n;
}

int queue_touch(Queue *q, JobKind kind, const char *const *entry_ids, int n)
{
    if (queue_ensure_ctx(q))
        return QUEUE_ECONN;
    if (n <= 0)
        return QUEUE_OK;
    const char **argv = malloc(((size_t)n + 7) * sizeof *argv);
    if (!argv)
        return queue_set_err(q, QUEUE_ENOMEM, "out of memory");
    int a = 0;
    argv[a++] = "XCLAIM";
    argv[a++] = q->stream[kind];
    argv[a++] = q->qc.group;
    argv[a++] = q->consumer;
    argv[a++] = "0";
    for (int i = 0; i < n; i++)
        argv[a++] = entry_ids[i];
    argv[a++] = "JUSTID";
    redisReply *r = redisCommandArgv(q->ctx, a, argv, NULL);
    free(argv);
    int rc = queue_check_reply(q, r, "XCLAIM");
    freeReplyObject(r);
    return rc;
}

/* Delivery counts of entries from the pending list, one pipelined XPENDING per entry. */
static int fill_deliveries(Queue *q, QueueEntry *e, int n)
{
    for (int i = 0; i < n; i++)
        redisAppendCommand(q->ctx, "XPENDING %s %s %s %s 1", q->stream[e[i].kind], q->qc.group, e[i].entry_id,
                           e[i].entry_id);
    for (int i = 0; i < n; i++) {
        redisReply *p = NULL;
        if (redisGetReply(q->ctx, (void **)&p) != REDIS_OK)
            return queue_check_reply(q, NULL, "XPENDING");
        if (p->type == REDIS_REPLY_ARRAY && p->elements == 1 && p->element[0]->elements == 4)
            e[i].deliveries = (int)p->element[0]->element[3]->integer;
        freeReplyObject(p);
    }
    return QUEUE_OK;
}

int queue_reclaim(Queue *q, JobKind kind, QueueEntry *out, int max)
{
    if (queue_ensure_ctx(q))
        return QUEUE_ECONN;
    redisReply *r = redisCommand(q->ctx, "XAUTOCLAIM %s %s %s %d %s COUNT %d", q->stream[kind], q->qc.group,
                                 q->consumer, q->qc.visibility_timeout_ms, q->reclaim_cursor[kind], max);
    int rc = queue_check_reply(q, r, "XAUTOCLAIM");
    if (rc) {
        freeReplyObject(r);
        return rc;
    }
    int n = 0;
    if (r->type == REDIS_REPLY_ARRAY && r->elements >= 2) {
        snprintf(q->reclaim_cursor[kind], sizeof q->reclaim_cursor[kind], "%s", r->element[0]->str);
        const redisReply *ents = r->element[1];
        for (size_t e = 0; e < ents->elements && n < max; e++) {
            take_entry(ents->element[e], kind, &out[n]);
            if (out[n].entry_id[0])
                n++;
        }
    }
    freeReplyObject(r);
    /* XAUTOCLAIM has already counted this delivery. */
    int rc2 = fill_deliveries(q, out, n);
    if (rc2) {
        queue_entries_clear(out, n);
        return rc2;
    }
    return n;
}

int queue_results_exist(Queue *q, const char *const *job_ids, int n, bool *exists)
{
    if (queue_ensure_ctx(q))
        return QUEUE_ECONN;
    char key[256];
    for (int i = 0; i < n; i++) {
        queue_result_key(q, job_ids[i], key, sizeof key);
        redisAppendCommand(q->ctx, "EXISTS %s", key);
    }
    int rc = QUEUE_OK;
    for (int i = 0; i < n; i++) {
        redisReply *r = NULL;
        if (redisGetReply(q->ctx, (void **)&r) != REDIS_OK)
            return queue_check_reply(q, NULL, "EXISTS");
        exists[i] = r->type == REDIS_REPLY_INTEGER && r->integer == 1;
        if (r->type == REDIS_REPLY_ERROR)
            rc = queue_set_err(q, QUEUE_EREPLY, "EXISTS: %s", r->str);
        freeReplyObject(r);
    }
    return rc;
}

/* Appends one EVALSHA of the finish script for r. */
static int append_finish(Queue *q, const QueueResult *r)
{
    int nkeys = 3 + (r->reply_to ? 1 : 0) + r->n_targets;
    int nargs = 2 + 1 + nkeys + 4 + 2 * r->n_fields + 4 + r->n_targets + 6;
    const char **argv = malloc((size_t)nargs * sizeof *argv);
    size_t *lens = malloc((size_t)nargs * sizeof *lens);
    if (!argv || !lens) {
        free(argv);
        free(lens);
        return queue_set_err(q, QUEUE_ENOMEM, "out of memory");
    }
    char nkeys_s[16], ttl_s[16], nf_s[16], nt_s[16], deliv_s[16], maxlen_s[16], result_key[256];
    snprintf(nkeys_s, sizeof nkeys_s, "%d", nkeys);
    snprintf(ttl_s, sizeof ttl_s, "%d", q->qc.result_ttl_s);
    snprintf(nf_s, sizeof nf_s, "%d", r->n_fields);
    snprintf(nt_s, sizeof nt_s, "%d", r->n_targets);
    snprintf(deliv_s, sizeof deliv_s, "%d", r->deliveries);
    snprintf(maxlen_s, sizeof maxlen_s, "%d", q->qc.dead_letter_maxlen);
    queue_result_key(q, r->job_id, result_key, sizeof result_key);
    int a = 0;
#define ARG(s) (argv[a] = (s), lens[a] = strlen(argv[a]), a++)
#define ARGN(s, n) (argv[a] = (s), lens[a] = (n), a++)
    ARG("EVALSHA");
    ARG(q->finish_sha);
    ARG(nkeys_s);
    ARG(q->stream[r->kind]);
    ARG(result_key);
    ARG(q->dead);
    if (r->reply_to)
        ARG(r->reply_to);
    for (int t = 0; t < r->n_targets; t++)
        ARG(r->target_keys[t]);
    ARG(q->qc.group);
    ARG(r->entry_id);
    ARG(ttl_s);
    ARG(nf_s);
    for (int f = 0; f < r->n_fields; f++) {
        ARG(r->fields[f].name);
        ARGN(r->fields[f].value, r->fields[f].len);
    }
    ARG(r->reply_to ? "1" : "0");
    ARG(r->job_id);
    ARG(nt_s);
    ARG(r->target_field ? r->target_field : "");
    for (int t = 0; t < r->n_targets; t++)
        ARGN(r->target_values[t], r->target_len);
    ARG(r->dead_reason ? "1" : "0");
    ARG(r->dead_reason ? r->dead_reason : "");
    ARGN(r->payload ? r->payload : "", r->payload ? r->payload_len : 0);
    ARG(deliv_s);
    ARG(maxlen_s);
    ARG(job_kind_name(r->kind));
#undef ARG
#undef ARGN
    int rc = redisAppendCommandArgv(q->ctx, a, argv, lens) == REDIS_OK ? QUEUE_OK : queue_check_reply(q, NULL, "EVALSHA");
    free(argv);
    free(lens);
    return rc;
}

int queue_finish(Queue *q, const QueueResult *r, int n, QueueRefusal *refused)
{
    if (queue_ensure_ctx(q))
        return QUEUE_ECONN;
    for (int i = 0; i < n; i++) {
        int rc = append_finish(q, &r[i]);
        if (rc)
            return rc;
    }
    int rc = QUEUE_OK;
    bool noscript = false;
    for (int i = 0; i < n; i++) {
        refused[i].what = QUEUE_REFUSED_NONE;
        redisReply *rep = NULL;
        if (redisGetReply(q->ctx, (void **)&rep) != REDIS_OK)
            return queue_check_reply(q, NULL, "EVALSHA finish");
        if (rep->type == REDIS_REPLY_ERROR) {
            if (strncmp(rep->str, "NOSCRIPT", 8) == 0)
                noscript = true;
            rc = queue_set_err(q, QUEUE_EREPLY, "finishing job %s: %s", r[i].job_id, rep->str);
        } else if (rep->type == REDIS_REPLY_ARRAY && rep->elements == 2) {
            refused[i].what = strcmp(rep->element[0]->str, "reply_to") == 0 ? QUEUE_REFUSED_REPLY
                                                                             : QUEUE_REFUSED_TARGET;
            snprintf(refused[i].why, sizeof refused[i].why, "%s", rep->element[1]->str);
        }
        freeReplyObject(rep);
    }
    /* A restarted Redis forgets scripts: load it again and redo the batch. */
    if (noscript && load_script(q) == QUEUE_OK)
        return queue_finish(q, r, n, refused);
    return rc;
}

int queue_heartbeat(Queue *q, int ttl_ms)
{
    if (queue_ensure_ctx(q))
        return QUEUE_ECONN;
    char key[256];
    snprintf(key, sizeof key, "%s:consumer:%s", q->qc.prefix, q->consumer);
    redisReply *r = redisCommand(q->ctx, "SET %s ready PX %d", key, ttl_ms);
    int rc = queue_check_reply(q, r, "SET heartbeat");
    freeReplyObject(r);
    return rc;
}

int queue_enqueue(Queue *q, JobKind kind, const char *const *payloads, const size_t *lens, int n)
{
    if (queue_ensure_ctx(q))
        return QUEUE_ECONN;
    for (int i = 0; i < n; i++) {
        const char *argv[] = {"XADD", q->stream[kind], "*", "job", payloads[i]};
        size_t alen[] = {4, strlen(q->stream[kind]), 1, 3, lens[i]};
        redisAppendCommandArgv(q->ctx, 5, argv, alen);
    }
    int rc = QUEUE_OK;
    for (int i = 0; i < n; i++) {
        redisReply *r = NULL;
        if (redisGetReply(q->ctx, (void **)&r) != REDIS_OK)
            return queue_check_reply(q, NULL, "XADD");
        if (r->type == REDIS_REPLY_ERROR)
            rc = queue_set_err(q, QUEUE_EREPLY, "XADD: %s", r->str);
        freeReplyObject(r);
    }
    return rc;
}

int queue_wait_reply(Queue *q, const char *list, int timeout_ms, char *job_id, size_t len)
{
    if (queue_ensure_ctx(q))
        return QUEUE_ECONN;
    struct timeval tv = {timeout_ms / 1000 + 5, 0};
    redisSetTimeout(q->ctx, tv);
    redisReply *r = redisCommand(q->ctx, "BLPOP %s %.3f", list, timeout_ms / 1000.0);
    int rc = queue_check_reply(q, r, "BLPOP");
    if (rc) {
        freeReplyObject(r);
        return rc;
    }
    int got = 0;
    if (r->type == REDIS_REPLY_ARRAY && r->elements == 2) {
        snprintf(job_id, len, "%s", r->element[1]->str);
        got = 1;
    }
    freeReplyObject(r);
    return got;
}
