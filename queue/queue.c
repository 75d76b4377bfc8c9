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

/* The longest keys fit their buffers with the longest names the config and the job format
 * allow (config/config.h derives the bounds; queue/pin.c checks the pin key). */
_Static_assert(CFG_QUEUE_PREFIX_MAX + sizeof ":result:" - 1 + JOB_ID_MAX < QUEUE_KEY_MAX,
               "<prefix>:result:<job id> must fit QUEUE_KEY_MAX: lower CFG_QUEUE_PREFIX_MAX");
_Static_assert(CFG_QUEUE_PREFIX_MAX + sizeof ":consumer:" - 1 + (QUEUE_CONSUMER_MAX - 1) <
               QUEUE_KEY_MAX,
               "<prefix>:consumer:<consumer> must fit QUEUE_KEY_MAX: lower CFG_QUEUE_PREFIX_MAX");
_Static_assert(CFG_QUEUE_PREFIX_MAX + sizeof ":jobs:generate" - 1 < QUEUE_KEY_MAX,
               "<prefix>:jobs:generate must fit QUEUE_KEY_MAX");

/* The atomic finish of a batch of jobs, one script call for many results. Per result:
 * - every key it touches is type-checked before anything of that result is written (a script
 *   error midway would leave a partial write): a producer-named key (reply list, target hash)
 *   of the wrong type refuses the result with {which, why}, and so does a result key that is
 *   not a hash or that holds a result of the other job kind (ids are shared by both streams);
 *   the caller rewrites a refused result as an error result or a dead letter;
 * - a result that already exists (duplicate delivery) is only acknowledged, and a duplicate
 *   naming a different reply list is told about the existing result (never the same list twice);
 * - otherwise: result hash + TTL, reply push, target hashes, dead letter for errors;
 * - mode 'deadonly' writes only the dead letter (a job whose result key is not ours to write);
 * - a TTL is set only on keys this call created: a producer's existing list keeps its own;
 * then every acknowledged entry is XACKed and XDELed. Retrying a whole batch is safe.
 * KEYS: embed stream, generate stream, dead stream, then per result: result, [reply], targets...
 * ARGV: group, ttl, dead maxlen, n, then per result: stream (1|2), entry id, job id, nfields,
 *       field/value..., has_reply, ntargets, target field, target values..., mode
 *       ('ok'|'dead'|'deadonly'), reason, payload, deliveries, kind name */
static const char FINISH_LUA[] =
    "local group, ttl, maxlen, n = ARGV[1], tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])\n"
    "local a, k, out, acks = 5, 4, {}, {{}, {}}\n"
    "local function wrong(key, want)\n"
    "  local t = redis.call('TYPE', key).ok\n"
    "  if t ~= 'none' and t ~= want then return 'a key of the wrong type (' .. t .. ', not ' .. want .. ')', t end\n"
    "  return nil, t\n"
    "end\n"
    "for s = 1, 3 do\n"
    "  local w = wrong(KEYS[s], 'stream')\n"
    "  if w then return redis.error_reply('WEAVER engine key ' .. KEYS[s] .. ' holds ' .. w) end\n"
    "end\n"
    "for r = 1, n do\n"
    "  local stream, eid, job_id, nf = tonumber(ARGV[a]), ARGV[a + 1], ARGV[a + 2], tonumber(ARGV[a + 3])\n"
    "  local f0 = a + 4\n"
    "  a = f0 + 2 * nf\n"
    "  local has_reply, nt, tfield = ARGV[a] == '1', tonumber(ARGV[a + 1]), ARGV[a + 2]\n"
    "  local v0 = a + 3\n"
    "  a = v0 + nt\n"
    "  local mode, reason, payload, deliveries, kname = ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4]\n"
    "  a = a + 5\n"
    "  local rkey = KEYS[k]\n"
    "  local reply = has_reply and KEYS[k + 1] or nil\n"
    "  local t0 = k + (has_reply and 2 or 1)\n"
    "  k = t0 + nt\n"
    "  local refused, exists, fresh_reply = nil, false, false\n"
    "  if mode ~= 'deadonly' then\n"
    "    local w, t = wrong(rkey, 'hash')\n"
    "    exists = t ~= 'none'\n"
    "    if w then\n"
    "      refused = {'result', 'its result key holds ' .. w}\n"
    "    elseif exists then\n"
    "      local other = redis.call('HGET', rkey, 'kind')\n"
    "      if other ~= kname then\n"
    "        refused = {'result', 'job id ' .. job_id .. ' already names the result of a ' .. tostring(other) .. ' job'}\n"
    "      end\n"
    "    end\n"
    "    if not refused and reply then\n"
    "      local w, t = wrong(reply, 'list')\n"
    "      if w then refused = {'reply_to', 'reply_to names ' .. w} end\n"
    "      fresh_reply = t == 'none'\n"
    "    end\n"
    "    for t = 0, nt - 1 do\n"
    "      if refused then break end\n"
    "      local w = wrong(KEYS[t0 + t], 'hash')\n"
    "      if w then refused = {'target', 'target key ' .. (t + 1) .. ' names ' .. w} end\n"
    "    end\n"
    "  end\n"
    "  local function push_reply()\n"
    "    redis.call('RPUSH', reply, job_id)\n"
    "    if fresh_reply then redis.call('EXPIRE', reply, ttl) end\n"
    "  end\n"
    "  if refused then\n"
    "    out[r] = refused\n"
    "  elseif mode == 'deadonly' then\n"
    "    redis.call('XADD', KEYS[3], 'MAXLEN', '~', maxlen, '*', 'job_id', job_id, 'kind', kname,\n"
    "               'reason', reason, 'job', payload, 'deliveries', deliveries, 'entry', eid)\n"
    "    table.insert(acks[stream], eid)\n"
    "    out[r] = 1\n"
    "  elseif exists or nf == 0 then\n"
    "    if exists and reply and redis.call('HGET', rkey, 'reply_to') ~= reply then push_reply() end\n"
    "    table.insert(acks[stream], eid)\n"
    "    out[r] = 0\n"
    "  else\n"
    "    if reply then\n"
    "      redis.call('HSET', rkey, 'reply_to', reply, unpack(ARGV, f0, f0 + 2 * nf - 1))\n"
    "    else\n"
    "      redis.call('HSET', rkey, unpack(ARGV, f0, f0 + 2 * nf - 1))\n"
    "    end\n"
    "    redis.call('EXPIRE', rkey, ttl)\n"
    "    if reply then push_reply() end\n"
    "    for t = 0, nt - 1 do redis.call('HSET', KEYS[t0 + t], tfield, ARGV[v0 + t]) end\n"
    "    if mode == 'dead' then\n"
    "      redis.call('XADD', KEYS[3], 'MAXLEN', '~', maxlen, '*', 'job_id', job_id, 'kind', kname,\n"
    "                 'reason', reason, 'job', payload, 'deliveries', deliveries, 'entry', eid)\n"
    "    end\n"
    "    table.insert(acks[stream], eid)\n"
    "    out[r] = 1\n"
    "  end\n"
    "end\n"
    "for s = 1, 2 do\n"
    "  if #acks[s] > 0 then\n"
    "    redis.call('XACK', KEYS[s], group, unpack(acks[s]))\n"
    "    redis.call('XDEL', KEYS[s], unpack(acks[s]))\n"
    "  end\n"
    "end\n"
    "return out\n";

int queue_set_err(Queue *q, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(q->errstr, sizeof q->errstr, fmt, ap);
    va_end(ap);
    return code;
}

static bool vformat_key(char *buf, size_t len, const char *fmt, va_list ap)
{
    int n = vsnprintf(buf, len, fmt, ap);
    if (n >= 0 && (size_t)n < len)
        return true;
    if (len)
        buf[0] = '\0';
    return false;
}

bool queue_key_fits(char *buf, size_t len, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    bool ok = vformat_key(buf, len, fmt, ap);
    va_end(ap);
    return ok;
}

int queue_format_key(Queue *q, char *buf, size_t len, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    bool ok = vformat_key(buf, len, fmt, ap);
    va_end(ap);
    if (ok)
        return QUEUE_OK;
    return queue_set_err(q, QUEUE_EARG, "a Redis key under prefix \"%.40s%s\" would be longer "
                         "than %zu bytes; refusing to cut it short", q->qc.prefix,
                         strlen(q->qc.prefix) > 40 ? "..." : "", len - 1);
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
    if (!queue_key_fits(q->consumer, sizeof q->consumer, "%s", consumer ? consumer : "producer")) {
        queue_set_err(q, QUEUE_EARG, "consumer name \"%.40s...\" is longer than %zu bytes",
                      consumer, sizeof q->consumer - 1);
        return q;
    }
    if (queue_format_key(q, q->stream[JOB_EMBED], sizeof q->stream[0], "%s:jobs:embed", qc->prefix) ||
        queue_format_key(q, q->stream[JOB_GENERATE], sizeof q->stream[0], "%s:jobs:generate", qc->prefix) ||
        queue_format_key(q, q->dead, sizeof q->dead, "%s:dead", qc->prefix))
        return q;
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

int queue_result_key(const Queue *q, const char *job_id, char *buf, size_t len)
{
    return queue_key_fits(buf, len, "%s:result:%s", q->qc.prefix, job_id) ? QUEUE_OK : QUEUE_EARG;
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
    if (fv->type != REDIS_REPLY_ARRAY) {
        out->deleted = true; /* deleted while pending: no fields */
        return;
    }
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

int queue_read(Queue *q, bool embed, bool generate, int count, int block_ms, const char *own_after,
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
    bool own_pending = own_after != NULL;
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
    const char *from = own_pending ? own_after : ">";
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

/* Extends leases: resets the idle time of each entry still pending for `consumer` (XCLAIM
 * JUSTID, which does not count a delivery). An entry another consumer has reclaimed meanwhile is
 * left to it: claiming it back would run the job twice at once.
 * KEYS: stream. ARGV: group, consumer, entry ids... Returns how many were extended. */
static const char LEASE_LUA[] =
    "local kept = 0\n"
    "for i = 3, #ARGV do\n"
    "  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)\n"
    "  if p[1] and p[1][2] == ARGV[2] then\n"
    "    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')\n"
    "    kept = kept + 1\n"
    "  end\n"
    "end\n"
    "return kept\n";

/* Entry ids per lease call: bounds how long Redis is busy at once. */
#define LEASE_CHUNK 512

int queue_extend_leases(Queue *q, const char *consumer, JobKind kind, const char *const *entry_ids, int n)
{
    if (queue_ensure_ctx(q))
        return QUEUE_ECONN;
    const char *argv[LEASE_CHUNK + 6];
    int kept = 0;
    for (int i = 0; i < n; i += LEASE_CHUNK) {
        int c = n - i < LEASE_CHUNK ? n - i : LEASE_CHUNK, a = 0;
        argv[a++] = "EVAL";
        argv[a++] = LEASE_LUA;
        argv[a++] = "1";
        argv[a++] = q->stream[kind];
        argv[a++] = q->qc.group;
        argv[a++] = consumer;
        for (int k = 0; k < c; k++)
            argv[a++] = entry_ids[i + k];
        redisReply *r = redisCommandArgv(q->ctx, a, argv, NULL);
        int rc = queue_check_reply(q, r, "extending leases");
        if (rc == QUEUE_OK && r->type == REDIS_REPLY_INTEGER)
            kept += (int)r->integer;
        freeReplyObject(r);
        if (rc)
            return rc;
    }
    return kept;
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
    int claimed = n;
    /* Redis 7: the third element lists pending entries that no longer exist in the stream. */
    if (r->type == REDIS_REPLY_ARRAY && r->elements >= 3 && r->element[2]->type == REDIS_REPLY_ARRAY) {
        const redisReply *gone = r->element[2];
        for (size_t e = 0; e < gone->elements && n < max; e++) {
            if (gone->element[e]->type != REDIS_REPLY_STRING)
                continue;
            out[n] = (QueueEntry){.kind = kind, .deliveries = 1, .deleted = true};
            snprintf(out[n].entry_id, sizeof out[n].entry_id, "%s", gone->element[e]->str);
            n++;
        }
    }
    freeReplyObject(r);
    /* XAUTOCLAIM has already counted this delivery. */
    int rc2 = fill_deliveries(q, out, claimed);
    if (rc2) {
        queue_entries_clear(out, n);
        return rc2;
    }
    return n;
}

/* queue_result_key into a QUEUE_KEY_MAX buffer, with errstr set when the id is too long. */
static int result_key(Queue *q, const char *job_id, char *buf)
{
    if (queue_result_key(q, job_id, buf, QUEUE_KEY_MAX) == QUEUE_OK)
        return QUEUE_OK;
    return queue_set_err(q, QUEUE_EARG, "job id \"%.40s...\" (%zu bytes) makes a result key longer "
                         "than %d bytes", job_id, strlen(job_id), QUEUE_KEY_MAX - 1);
}

/* Pipelined EXISTS per key: which of the results exist. */
static int exists_each(Queue *q, const char *const *job_ids, int n, bool *exists)
{
    char key[QUEUE_KEY_MAX];
    for (int i = 0; i < n; i++) /* every key first: a pipeline is never left half-sent */
        if (result_key(q, job_ids[i], key))
            return QUEUE_EARG;
    for (int i = 0; i < n; i++) {
        result_key(q, job_ids[i], key);
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

int queue_results_exist(Queue *q, const char *const *job_ids, int n, bool *exists)
{
    if (queue_ensure_ctx(q))
        return QUEUE_ECONN;
    if (n <= 1)
        return exists_each(q, job_ids, n, exists);
    /* Duplicates are rare: one multi-key EXISTS counts them, and only a non-zero count asks
     * key by key. */
    const char **argv = malloc(((size_t)n + 1) * sizeof *argv);
    size_t *lens = malloc(((size_t)n + 1) * sizeof *lens);
    char (*keys)[QUEUE_KEY_MAX] = malloc((size_t)n * sizeof *keys);
    int rc = QUEUE_OK;
    if (!argv || !lens || !keys) {
        rc = queue_set_err(q, QUEUE_ENOMEM, "out of memory");
        goto out;
    }
    argv[0] = "EXISTS";
    lens[0] = 6;
    for (int i = 0; i < n; i++) {
        if ((rc = result_key(q, job_ids[i], keys[i])))
            goto out;
        argv[i + 1] = keys[i];
        lens[i + 1] = strlen(keys[i]);
    }
    redisReply *r = redisCommandArgv(q->ctx, n + 1, argv, lens);
    rc = queue_check_reply(q, r, "EXISTS");
    long long count = rc == QUEUE_OK && r->type == REDIS_REPLY_INTEGER ? r->integer : 0;
    freeReplyObject(r);
    if (rc == QUEUE_OK) {
        memset(exists, 0, (size_t)n * sizeof *exists);
        if (count > 0)
            rc = exists_each(q, job_ids, n, exists);
    }
out:
    free(argv);
    free(lens);
    free(keys);
    return rc;
}

/* Results and argument bytes per script call: bound the argument vector, the memory Redis holds
 * for one call and how long it is busy at once. A single larger result goes in a call of its own. */
#define FINISH_CHUNK 128
#define FINISH_CHUNK_BYTES (8u << 20)

static const char *finish_mode(const QueueResult *r)
{
    return r->dead_only ? "deadonly" : r->dead_reason ? "dead" : "ok";
}

/* The original job travels only with a dead letter. */
static bool sends_payload(const QueueResult *r) { return r->dead_reason && r->payload; }

static size_t result_bytes(const QueueResult *r)
{
    size_t b = 256 + (sends_payload(r) ? r->payload_len : 0) + (size_t)r->n_targets * r->target_len;
    for (int f = 0; f < r->n_fields; f++)
        b += r->fields[f].len;
    return b;
}

/* How many results from r[0, n) go into the next script call. */
static int finish_chunk(const QueueResult *r, int n)
{
    size_t bytes = 0;
    int c = 0;
    while (c < n && c < FINISH_CHUNK) {
        bytes += result_bytes(&r[c]);
        if (c > 0 && bytes > FINISH_CHUNK_BYTES)
            break;
        c++;
    }
    return c;
}

/* Appends one EVALSHA of the finish script for results r[0, n). */
static int append_finish(Queue *q, const QueueResult *r, int n)
{
    int nkeys = 3, nargs = 3 + 4;
    for (int i = 0; i < n; i++) {
        nkeys += 1 + (r[i].reply_to ? 1 : 0) + r[i].n_targets;
        nargs += 4 + 2 * r[i].n_fields + 3 + r[i].n_targets + 5;
    }
    nargs += nkeys;
    const char **argv = malloc((size_t)nargs * sizeof *argv);
    size_t *lens = malloc((size_t)nargs * sizeof *lens);
    /* Numbers and result keys rendered for this call: 5 numbers and one key per result. */
    char (*num)[24] = malloc(((size_t)n * 4 + 5) * sizeof *num);
    char (*rkey)[QUEUE_KEY_MAX] = malloc((size_t)n * sizeof *rkey);
    int rc = QUEUE_OK;
    if (!argv || !lens || !num || !rkey) {
        rc = queue_set_err(q, QUEUE_ENOMEM, "out of memory");
        goto out;
    }
    int a = 0, m = 0;
#define ARG(s) (argv[a] = (s), lens[a] = strlen(argv[a]), a++)
#define ARGN(s, len) (argv[a] = (s), lens[a] = (len), a++)
#define NUM(v) (snprintf(num[m], sizeof num[m], "%d", (int)(v)), ARG(num[m++]))
    ARG("EVALSHA");
    ARG(q->finish_sha);
    NUM(nkeys);
    ARG(q->stream[JOB_EMBED]);
    ARG(q->stream[JOB_GENERATE]);
    ARG(q->dead);
    for (int i = 0; i < n; i++) {
        if ((rc = result_key(q, r[i].job_id, rkey[i])))
            goto out;
        ARG(rkey[i]);
        if (r[i].reply_to)
            ARG(r[i].reply_to);
        for (int t = 0; t < r[i].n_targets; t++)
            ARG(r[i].target_keys[t]);
    }
    ARG(q->qc.group);
    NUM(q->qc.result_ttl_s);
    NUM(q->qc.dead_letter_maxlen);
    NUM(n);
    for (int i = 0; i < n; i++) {
        ARG(r[i].kind == JOB_EMBED ? "1" : "2");
        ARG(r[i].entry_id);
        ARG(r[i].job_id);
        NUM(r[i].n_fields);
        for (int f = 0; f < r[i].n_fields; f++) {
            ARG(r[i].fields[f].name);
            ARGN(r[i].fields[f].value, r[i].fields[f].len);
        }
        ARG(r[i].reply_to ? "1" : "0");
        NUM(r[i].n_targets);
        ARG(r[i].target_field ? r[i].target_field : "");
        for (int t = 0; t < r[i].n_targets; t++)
            ARGN(r[i].target_values[t], r[i].target_len);
        ARG(finish_mode(&r[i]));
        ARG(r[i].dead_reason ? r[i].dead_reason : "");
        ARGN(sends_payload(&r[i]) ? r[i].payload : "", sends_payload(&r[i]) ? r[i].payload_len : 0);
        NUM(r[i].deliveries);
        ARG(job_kind_name(r[i].kind));
    }
#undef ARG
#undef ARGN
#undef NUM
    if (redisAppendCommandArgv(q->ctx, a, argv, lens) != REDIS_OK)
        rc = queue_check_reply(q, NULL, "EVALSHA");
out:
    free(argv);
    free(lens);
    free(num);
    free(rkey);
    return rc;
}

static QueueRefusalKind refusal_kind(const char *which)
{
    return strcmp(which, "reply_to") == 0 ? QUEUE_REFUSED_REPLY
           : strcmp(which, "target") == 0 ? QUEUE_REFUSED_TARGET
                                          : QUEUE_REFUSED_RESULT;
}

int queue_finish(Queue *q, const QueueResult *r, int n, QueueRefusal *refused)
{
    if (queue_ensure_ctx(q))
        return QUEUE_ECONN;
    char key[QUEUE_KEY_MAX];
    for (int i = 0; i < n; i++) /* every key first: a pipeline is never left half-sent */
        if (result_key(q, r[i].job_id, key))
            return QUEUE_EARG;
    /* Pipelined: every call is sent before the first reply is read. */
    int calls = 0, starts[n > 0 ? n : 1];
    for (int i = 0; i < n; calls++) {
        int c = finish_chunk(r + i, n - i);
        int rc = append_finish(q, r + i, c);
        if (rc)
            return rc;
        starts[calls] = i;
        i += c;
    }
    int rc = QUEUE_OK;
    bool noscript = false;
    for (int c = 0; c < calls; c++) {
        redisReply *rep = NULL;
        if (redisGetReply(q->ctx, (void **)&rep) != REDIS_OK)
            return queue_check_reply(q, NULL, "EVALSHA finish");
        if (rep->type == REDIS_REPLY_ERROR) {
            if (strncmp(rep->str, "NOSCRIPT", 8) == 0)
                noscript = true;
            rc = queue_set_err(q, QUEUE_EREPLY, "finishing jobs: %s", rep->str);
        } else if (rep->type == REDIS_REPLY_ARRAY) {
            for (size_t j = 0; j < rep->elements; j++) {
                QueueRefusal *out = &refused[starts[c] + (int)j];
                const redisReply *e = rep->element[j];
                out->what = QUEUE_REFUSED_NONE;
                out->acked_only = e->type == REDIS_REPLY_INTEGER && e->integer == 0;
                if (e->type == REDIS_REPLY_ARRAY && e->elements == 2) {
                    out->what = refusal_kind(e->element[0]->str);
                    snprintf(out->why, sizeof out->why, "%s", e->element[1]->str);
                }
            }
        }
        freeReplyObject(rep);
    }
    /* A restarted Redis forgets scripts: load it again and redo the batch. */
    if (noscript && load_script(q) == QUEUE_OK)
        return queue_finish(q, r, n, refused);
    return rc;
}

int queue_heartbeat(Queue *q, int ttl_ms, const char *precision)
{
    if (queue_ensure_ctx(q))
        return QUEUE_ECONN;
    char key[QUEUE_KEY_MAX];
    if (queue_format_key(q, key, sizeof key, "%s:consumer:%s", q->qc.prefix, q->consumer))
        return QUEUE_EARG;
    char value[32];
    snprintf(value, sizeof value, precision && precision[0] ? "precision=%.8s" : "ready", precision);
    redisReply *r = redisCommand(q->ctx, "SET %s %s PX %d", key, value, ttl_ms);
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
