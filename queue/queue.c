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
 * What is the same for many results goes once per call: the streams, group, TTL and dead-letter
 * bound, and the field-name lists (the results of a call use a few); per result, one head
 * string "<kind e|g><mode o|d|x><reply 0|1><name list, 0 = none>:<targets>" says the rest.
 * KEYS: embed stream, generate stream, dead stream, then per result: result, [reply], targets...
 * ARGV: group, ttl, dead maxlen, n, number of name lists, then per list: count, names...; then
 *       per result: head, entry id, job id, one value per name, [target field, target values...
 *       when targets > 0], [reason, payload, deliveries unless mode is ok] */
static const char FINISH_LUA[] =
    "local group, ttl, maxlen, n = ARGV[1], tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])\n"
    "local lists, counts, a = {}, {}, 6\n"
    "for l = 1, tonumber(ARGV[5]) do\n"
    "  local c, kv = tonumber(ARGV[a]), {}\n"
    "  for f = 1, c do kv[2 * f - 1] = ARGV[a + f] end\n"
    "  lists[l], counts[l] = kv, c\n"
    "  a = a + 1 + c\n"
    "end\n"
    "local k, out, acks = 4, {}, {{}, {}}\n"
    "local function wrong(key, want)\n"
    "  local t = redis.call('TYPE', key).ok\n"
    "  if t ~= 'none' and t ~= want then return 'a key of the wrong type (' .. t .. ', not ' .. want .. ')', t end\n"
    "  return nil, t\n"
    "end\n"
    "local function push_reply(reply, job_id, fresh)\n"
    "  redis.call('RPUSH', reply, job_id)\n"
    "  if fresh then redis.call('EXPIRE', reply, ttl) end\n"
    "end\n"
    "local function dead_letter(kname, job_id, reason, payload, deliveries, eid)\n"
    "  redis.call('XADD', KEYS[3], 'MAXLEN', '~', maxlen, '*', 'job_id', job_id, 'kind', kname,\n"
    "             'reason', reason, 'job', payload, 'deliveries', deliveries, 'entry', eid)\n"
    "end\n"
    "for s = 1, 3 do\n"
    "  local w = wrong(KEYS[s], 'stream')\n"
    "  if w then return redis.error_reply('WEAVER engine key ' .. KEYS[s] .. ' holds ' .. w) end\n"
    "end\n"
    "for r = 1, n do\n"
    "  local kc, mode, hr, list, nt = string.match(ARGV[a], '^(%a)(%a)(%d)(%d+):(%d+)$')\n"
    "  list = tonumber(list)\n"
    "  local kv, nf, eid, job_id = lists[list], counts[list] or 0, ARGV[a + 1], ARGV[a + 2]\n"
    "  local stream, kname = 1, 'embed'\n"
    "  if kc == 'g' then stream, kname = 2, 'generate' end\n"
    "  local f0 = a + 3\n"
    "  a = f0 + nf\n"
    "  nt = tonumber(nt)\n"
    "  local tfield, v0 = nil, a + 1\n"
    "  if nt > 0 then tfield = ARGV[a]; a = v0 + nt end\n"
    "  local reason, payload, deliveries\n"
    "  if mode ~= 'o' then reason, payload, deliveries = ARGV[a], ARGV[a + 1], ARGV[a + 2]; a = a + 3 end\n"
    "  local rkey = KEYS[k]\n"
    "  local reply = hr == '1' and KEYS[k + 1] or nil\n"
    "  local t0 = k + (reply and 2 or 1)\n"
    "  k = t0 + nt\n"
    "  local refused, exists, fresh_reply = nil, false, false\n"
    "  if mode ~= 'x' then\n"
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
    "  if refused then\n"
    "    out[r] = refused\n"
    "  elseif mode == 'x' then\n"
    "    dead_letter(kname, job_id, reason, payload, deliveries, eid)\n"
    "    table.insert(acks[stream], eid)\n"
    "    out[r] = 1\n"
    "  elseif exists or nf == 0 then\n"
    "    if exists and reply and redis.call('HGET', rkey, 'reply_to') ~= reply then\n"
    "      push_reply(reply, job_id, fresh_reply)\n"
    "    end\n"
    "    table.insert(acks[stream], eid)\n"
    "    out[r] = 0\n"
    "  else\n"
    "    for f = 1, nf do kv[2 * f] = ARGV[f0 + f - 1] end\n"
    "    if reply then\n"
    "      redis.call('HSET', rkey, 'reply_to', reply, unpack(kv))\n"
    "    else\n"
    "      redis.call('HSET', rkey, unpack(kv))\n"
    "    end\n"
    "    redis.call('EXPIRE', rkey, ttl)\n"
    "    if reply then push_reply(reply, job_id, fresh_reply) end\n"
    "    for t = 0, nt - 1 do redis.call('HSET', KEYS[t0 + t], tfield, ARGV[v0 + t]) end\n"
    "    if mode == 'd' then dead_letter(kname, job_id, reason, payload, deliveries, eid) end\n"
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

/* The connection is gone: replies still owed for commands sent ahead are lost with it (their
 * callers get QUEUE_ECONN and retry; a new connection must not hand them another's reply). */
static void drop_ctx(Queue *q)
{
    redisFree(q->ctx);
    q->ctx = NULL;
    while (q->stashed < q->owed)
        q->ahead[q->stashed++] = NULL;
}

/* Turns a NULL reply (I/O failure) or an error reply into an error code; frees nothing. */
int queue_check_reply(Queue *q, redisReply *r, const char *what)
{
    if (!r) {
        int code = queue_set_err(q, QUEUE_ECONN, "%s: connection lost: %s", what,
                           q->ctx && q->ctx->errstr[0] ? q->ctx->errstr : "no reply");
        drop_ctx(q);
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
    if (queue_ensure_ctx(q))
        return QUEUE_ECONN;
    redisReply *r = redisCommand(q->ctx, "SCRIPT LOAD %s", FINISH_LUA);
    int rc = queue_check_reply(q, r, "SCRIPT LOAD");
    if (rc == QUEUE_OK && r->type == REDIS_REPLY_STRING)
        snprintf(q->finish_sha, sizeof q->finish_sha, "%s", r->str);
    freeReplyObject(r);
    return rc;
}

int queue_reconnect(Queue *q)
{
    if (q->ctx)
        drop_ctx(q);
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
    for (int i = 0; i < q->stashed; i++)
        freeReplyObject(q->ahead[i]);
    free(q->ahead);
    memset(q->password, 0, sizeof q->password);
    free(q);
}

/* Reads every reply still owed for commands sent ahead into the stash, so that the command
 * about to be sent gets its own reply. */
static void drain_ahead(Queue *q)
{
    while (q->ctx && q->stashed < q->owed) {
        redisReply *r = NULL;
        if (redisGetReply(q->ctx, (void **)&r) != REDIS_OK) {
            queue_check_reply(q, NULL, "reading replies to commands sent ahead");
            return;
        }
        q->ahead[q->stashed++] = r;
    }
}

int queue_ensure_ctx(Queue *q)
{
    drain_ahead(q);
    if (q->ctx)
        return QUEUE_OK;
    return queue_set_err(q, QUEUE_ECONN, "not connected to Redis");
}

/* Room for k more owed replies; called before their commands are appended. */
static int owe(Queue *q, int k)
{
    if (q->owed + k > q->ahead_cap) {
        int cap = q->owed + k > 2 * q->ahead_cap ? q->owed + k : 2 * q->ahead_cap;
        redisReply **a = realloc(q->ahead, (size_t)cap * sizeof *a);
        if (!a)
            return queue_set_err(q, QUEUE_ENOMEM, "out of memory");
        q->ahead = a;
        q->ahead_cap = cap;
    }
    return QUEUE_OK;
}

/* Writes what hiredis holds in its output buffer: an appended command only goes out when a reply
 * is read, and one sent ahead must reach Redis now, to be worked on while the caller computes. */
static int flush_out(Queue *q, const char *what)
{
    int done = 0;
    while (!done)
        if (redisBufferWrite(q->ctx, &done) != REDIS_OK)
            return queue_check_reply(q, NULL, what);
    return QUEUE_OK;
}

/* Takes the oldest owed reply: from the stash, else off the socket. NULL = lost with the
 * connection (errstr says so). */
static redisReply *take_ahead(Queue *q, const char *what)
{
    redisReply *r = NULL;
    if (q->stashed > 0) {
        r = q->ahead[0];
        memmove(q->ahead, q->ahead + 1, (size_t)(q->stashed - 1) * sizeof *q->ahead);
        q->stashed--;
        q->owed--;
        if (!r)
            queue_set_err(q, QUEUE_ECONN, "%s: connection lost with the command in flight", what);
        return r;
    }
    q->owed--;
    if (q->ctx && redisGetReply(q->ctx, (void **)&r) != REDIS_OK) {
        q->owed++; /* counted as lost by drop_ctx, then taken */
        queue_check_reply(q, NULL, what);
        return take_ahead(q, what);
    }
    if (!r)
        queue_set_err(q, QUEUE_ECONN, "%s: connection lost with the command in flight", what);
    return r;
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

/* The XREADGROUP argument vector; `bufs` holds its rendered numbers. Returns argc (0: no stream). */
static int read_argv(Queue *q, bool embed, bool generate, int count, int block_ms, const char *from,
                     const char **argv, char (*bufs)[16])
{
    if (!embed && !generate)
        return 0;
    int argc = 0;
    argv[argc++] = "XREADGROUP";
    argv[argc++] = "GROUP";
    argv[argc++] = q->qc.group;
    argv[argc++] = q->consumer;
    snprintf(bufs[0], sizeof bufs[0], "%d", count);
    argv[argc++] = "COUNT";
    argv[argc++] = bufs[0];
    if (block_ms > 0) {
        snprintf(bufs[1], sizeof bufs[1], "%d", block_ms);
        argv[argc++] = "BLOCK";
        argv[argc++] = bufs[1];
    }
    argv[argc++] = "STREAMS";
    if (embed)
        argv[argc++] = q->stream[JOB_EMBED];
    if (generate)
        argv[argc++] = q->stream[JOB_GENERATE];
    if (embed)
        argv[argc++] = from;
    if (generate)
        argv[argc++] = from;
    return argc;
}

/* Takes the entries out of an XREADGROUP reply r (freed here). */
static int read_reply(Queue *q, redisReply *r, bool own_pending, QueueEntry *out, int max)
{
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

int queue_read(Queue *q, bool embed, bool generate, int count, int block_ms, const char *own_after,
               QueueEntry *out, int max)
{
    if (queue_ensure_ctx(q))
        return QUEUE_ECONN;
    const char *argv[16];
    char bufs[2][16];
    bool own_pending = own_after != NULL;
    int argc = read_argv(q, embed, generate, count, own_pending ? 0 : block_ms, own_pending ? own_after : ">",
                         argv, bufs);
    if (argc == 0)
        return 0;
    return read_reply(q, redisCommandArgv(q->ctx, argc, argv, NULL), own_pending, out, max);
}

/* Like queue_ensure_ctx, without reading the replies owed: a command sent ahead queues behind
 * the others. */
static int ensure_ctx_ahead(Queue *q)
{
    return q->ctx ? QUEUE_OK : queue_set_err(q, QUEUE_ECONN, "not connected to Redis");
}

int queue_read_send(Queue *q, bool embed, bool generate, int count)
{
    if (ensure_ctx_ahead(q))
        return QUEUE_ECONN;
    const char *argv[16];
    char bufs[2][16];
    int argc = read_argv(q, embed, generate, count, 0, ">", argv, bufs);
    if (argc == 0)
        return QUEUE_EARG;
    if (owe(q, 1))
        return QUEUE_ENOMEM;
    if (redisAppendCommandArgv(q->ctx, argc, argv, NULL) != REDIS_OK)
        return queue_check_reply(q, NULL, "XREADGROUP");
    q->owed++;
    return flush_out(q, "XREADGROUP");
}

int queue_read_recv(Queue *q, QueueEntry *out, int max)
{
    redisReply *r = take_ahead(q, "XREADGROUP sent ahead");
    return r ? read_reply(q, r, false, out, max) : QUEUE_ECONN;
}

/* Sets the idle time of each entry still pending for `consumer` (XCLAIM IDLE JUSTID, which does
 * not count a delivery): 0 extends its lease, the visibility timeout releases it to the next
 * XAUTOCLAIM. An entry another consumer has reclaimed meanwhile is left to it: claiming it back
 * would run the job twice at once.
 * KEYS: stream. ARGV: group, consumer, idle ms, entry ids... Returns how many were set. */
static const char LEASE_LUA[] =
    "local kept = 0\n"
    "for i = 4, #ARGV do\n"
    "  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)\n"
    "  if p[1] and p[1][2] == ARGV[2] then\n"
    "    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'IDLE', ARGV[3], 'JUSTID')\n"
    "    kept = kept + 1\n"
    "  end\n"
    "end\n"
    "return kept\n";

/* Entry ids per lease call: bounds how long Redis is busy at once. */
#define LEASE_CHUNK 512

static int set_idle(Queue *q, const char *consumer, JobKind kind, const char *const *entry_ids, int n, int idle_ms)
{
    if (queue_ensure_ctx(q))
        return QUEUE_ECONN;
    const char *argv[LEASE_CHUNK + 7];
    char idle[16];
    snprintf(idle, sizeof idle, "%d", idle_ms);
    int kept = 0;
    for (int i = 0; i < n; i += LEASE_CHUNK) {
        int c = n - i < LEASE_CHUNK ? n - i : LEASE_CHUNK, a = 0;
        argv[a++] = "EVAL";
        argv[a++] = LEASE_LUA;
        argv[a++] = "1";
        argv[a++] = q->stream[kind];
        argv[a++] = q->qc.group;
        argv[a++] = consumer;
        argv[a++] = idle;
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

int queue_extend_leases(Queue *q, const char *consumer, JobKind kind, const char *const *entry_ids, int n)
{
    return set_idle(q, consumer, kind, entry_ids, n, 0);
}

int queue_release(Queue *q, JobKind kind, const char *const *entry_ids, int n)
{
    return set_idle(q, q->consumer, kind, entry_ids, n, q->qc.visibility_timeout_ms);
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

/* The head string of a result (see FINISH_LUA): kind, mode, reply, name list, targets. */
static void finish_head(const QueueResult *r, int list, char *buf, size_t len)
{
    snprintf(buf, len, "%c%c%c%d:%d", r->kind == JOB_EMBED ? 'e' : 'g', r->dead_only ? 'x' : r->dead_reason ? 'd' : 'o',
             r->reply_to ? '1' : '0', list, r->n_targets);
}

/* Whether a result carries a dead letter's reason, payload and deliveries (mode is not ok). */
static bool sends_dead(const QueueResult *r) { return r->dead_only || r->dead_reason; }

/* Whether results a and b name the same fields in the same order (names are mostly literals). */
static bool same_names(const QueueResult *a, const QueueResult *b)
{
    if (a->n_fields != b->n_fields)
        return false;
    for (int f = 0; f < a->n_fields; f++)
        if (a->fields[f].name != b->fields[f].name && strcmp(a->fields[f].name, b->fields[f].name) != 0)
            return false;
    return true;
}

/* Appends one EVALSHA of the finish script for results r[0, n). */
static int append_finish(Queue *q, const QueueResult *r, int n)
{
    /* Each result's name list: the first result of the call with the same names, 0 for none. */
    int *list = malloc((size_t)n * sizeof *list), *first = malloc((size_t)n * sizeof *first);
    int nlists = 0, nkeys = 3, nargs = 3 + 5;
    if (list && first) {
        for (int i = 0; i < n; i++) {
            list[i] = 0;
            for (int l = 0; r[i].n_fields > 0 && l < nlists && !list[i]; l++)
                if (same_names(&r[first[l]], &r[i]))
                    list[i] = l + 1;
            if (r[i].n_fields > 0 && !list[i]) {
                first[nlists++] = i;
                list[i] = nlists;
                nargs += 1 + r[i].n_fields;
            }
            nkeys += 1 + (r[i].reply_to ? 1 : 0) + r[i].n_targets;
            nargs += 3 + r[i].n_fields + (r[i].n_targets ? 1 + r[i].n_targets : 0) + (sends_dead(&r[i]) ? 3 : 0);
        }
    }
    nargs += nkeys;
    const char **argv = malloc((size_t)nargs * sizeof *argv);
    size_t *lens = malloc((size_t)nargs * sizeof *lens);
    /* Numbers, heads and result keys rendered for this call. */
    char (*num)[24] = malloc(((size_t)n * 2 + 5 + (size_t)nlists) * sizeof *num);
    char (*rkey)[QUEUE_KEY_MAX] = malloc((size_t)n * sizeof *rkey);
    int rc = QUEUE_OK;
    if (!list || !first || !argv || !lens || !num || !rkey) {
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
    NUM(nlists);
    for (int l = 0; l < nlists; l++) {
        const QueueResult *x = &r[first[l]];
        NUM(x->n_fields);
        for (int f = 0; f < x->n_fields; f++)
            ARG(x->fields[f].name);
    }
    for (int i = 0; i < n; i++) {
        finish_head(&r[i], list[i], num[m], sizeof num[m]);
        ARG(num[m++]);
        ARG(r[i].entry_id);
        ARG(r[i].job_id);
        for (int f = 0; f < r[i].n_fields; f++)
            ARGN(r[i].fields[f].value, r[i].fields[f].len);
        if (r[i].n_targets) {
            ARG(r[i].target_field ? r[i].target_field : "");
            for (int t = 0; t < r[i].n_targets; t++)
                ARGN(r[i].target_values[t], r[i].target_len);
        }
        if (sends_dead(&r[i])) {
            ARG(r[i].dead_reason ? r[i].dead_reason : "");
            ARGN(sends_payload(&r[i]) ? r[i].payload : "", sends_payload(&r[i]) ? r[i].payload_len : 0);
            NUM(r[i].deliveries);
        }
    }
#undef ARG
#undef ARGN
#undef NUM
    if (redisAppendCommandArgv(q->ctx, a, argv, lens) != REDIS_OK)
        rc = queue_check_reply(q, NULL, "EVALSHA");
out:
    free(list);
    free(first);
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

/* Appends the script calls for r[0, n): returns how many, or < 0. */
static int send_finish(Queue *q, const QueueResult *r, int n)
{
    char key[QUEUE_KEY_MAX];
    for (int i = 0; i < n; i++) /* every key first: a pipeline is never left half-sent */
        if (result_key(q, r[i].job_id, key))
            return QUEUE_EARG;
    int calls = 0;
    for (int i = 0; i < n; calls++) {
        int c = finish_chunk(r + i, n - i);
        int rc = append_finish(q, r + i, c);
        if (rc) {
            if (calls > 0) /* never leave replies behind that no one will read */
                drop_ctx(q);
            return rc;
        }
        i += c;
    }
    return calls;
}

/* Reads the replies to the script calls send_finish made for r[0, n), from the socket or, for
 * calls sent ahead, through the stash (every owed reply is taken, whatever happens). */
static int read_finish(Queue *q, const QueueResult *r, int n, bool ahead, QueueRefusal *refused)
{
    int rc = QUEUE_OK;
    bool noscript = false;
    for (int i = 0; i < n;) {
        int c = finish_chunk(r + i, n - i);
        redisReply *rep = NULL;
        if (ahead) {
            rep = take_ahead(q, "EVALSHA finish sent ahead");
        } else if (q->ctx && redisGetReply(q->ctx, (void **)&rep) != REDIS_OK) {
            queue_check_reply(q, NULL, "EVALSHA finish");
            rep = NULL;
        }
        if (!rep) {
            if (!ahead)
                return QUEUE_ECONN;
            rc = QUEUE_ECONN;
        } else if (rep->type == REDIS_REPLY_ERROR) {
            if (strncmp(rep->str, "NOSCRIPT", 8) == 0)
                noscript = true;
            if (rc != QUEUE_ECONN)
                rc = queue_set_err(q, QUEUE_EREPLY, "finishing jobs: %s", rep->str);
        } else if (rep->type == REDIS_REPLY_ARRAY) {
            for (size_t j = 0; j < rep->elements && (int)j < c; j++) {
                QueueRefusal *out = &refused[i + (int)j];
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
        i += c;
    }
    /* A restarted Redis forgets scripts: load it again and redo the batch. */
    if (noscript && rc != QUEUE_ECONN && load_script(q) == QUEUE_OK)
        return queue_finish(q, r, n, refused);
    return rc;
}

int queue_finish(Queue *q, const QueueResult *r, int n, QueueRefusal *refused)
{
    if (queue_ensure_ctx(q))
        return QUEUE_ECONN;
    /* Pipelined: every call is sent before the first reply is read. */
    int calls = send_finish(q, r, n);
    return calls < 0 ? calls : read_finish(q, r, n, false, refused);
}

int queue_finish_send(Queue *q, const QueueResult *r, int n)
{
    if (ensure_ctx_ahead(q))
        return QUEUE_ECONN;
    if (owe(q, n)) /* a call finishes at least one result */
        return QUEUE_ENOMEM;
    int calls = send_finish(q, r, n);
    if (calls < 0)
        return calls;
    q->owed += calls;
    return flush_out(q, "EVALSHA finish");
}

int queue_finish_recv(Queue *q, const QueueResult *r, int n, QueueRefusal *refused)
{
    return read_finish(q, r, n, true, refused);
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
