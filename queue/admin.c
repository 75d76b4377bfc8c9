/* admin.c: operator and producer views of the queue: a result as JSON, stream status, and
 * the dead-letter stream (list, requeue). Read-mostly; requeue is the only writer and it moves
 * a job back atomically so nothing is duplicated or lost. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "queue/queue_internal.h"

static cJSON *vectors_from_f32(const char *bytes, size_t len, int dim)
{
    cJSON *arr = cJSON_CreateArray();
    if (dim <= 0 || len % ((size_t)dim * 4) != 0)
        return arr;
    size_t rows = len / ((size_t)dim * 4);
    for (size_t r = 0; r < rows; r++) {
        cJSON *row = cJSON_CreateArray();
        for (int d = 0; d < dim; d++) {
            float f;
            memcpy(&f, bytes + (r * (size_t)dim + (size_t)d) * 4, 4); /* little-endian hosts only */
            cJSON_AddItemToArray(row, cJSON_CreateNumber(f));
        }
        cJSON_AddItemToArray(arr, row);
    }
    return arr;
}

char *queue_result_json(Queue *q, const char *job_id)
{
    if (queue_ensure_ctx(q))
        return NULL;
    char key[QUEUE_KEY_MAX];
    if (queue_result_key(q, job_id, key, sizeof key) != QUEUE_OK) {
        queue_set_err(q, QUEUE_EARG, "job id \"%.40s...\" is too long for a result key", job_id);
        return NULL;
    }
    redisReply *r = redisCommand(q->ctx, "HGETALL %s", key);
    if (queue_check_reply(q, r, "HGETALL") || r->elements == 0) {
        freeReplyObject(r);
        return NULL;
    }
    cJSON *obj = cJSON_CreateObject();
    int dim = 0;
    bool f32 = false;
    for (size_t i = 0; i + 1 < r->elements; i += 2) {
        const char *f = r->element[i]->str;
        if (strcmp(f, "dim") == 0)
            dim = atoi(r->element[i + 1]->str);
        if (strcmp(f, "encoding") == 0 && strcmp(r->element[i + 1]->str, "f32") == 0)
            f32 = true;
    }
    for (size_t i = 0; i + 1 < r->elements; i += 2) {
        const char *f = r->element[i]->str;
        const redisReply *v = r->element[i + 1];
        cJSON *item = NULL;
        if (strcmp(f, "embeddings") == 0 && f32)
            item = vectors_from_f32(v->str, v->len, dim);
        else if (strcmp(f, "embeddings") == 0 || strcmp(f, "usage") == 0 || strcmp(f, "timings") == 0)
            item = cJSON_ParseWithLength(v->str, v->len);
        else if (strcmp(f, "dim") == 0 || strcmp(f, "count") == 0 || strcmp(f, "finished_at") == 0)
            item = cJSON_CreateNumber(atof(v->str));
        if (!item)
            item = cJSON_CreateString(v->str);
        cJSON_AddItemToObject(obj, f, item);
    }
    freeReplyObject(r);
    char *out = cJSON_PrintUnformatted(obj);
    cJSON_Delete(obj);
    return out;
}

static long long int_reply(Queue *q, const char *fmt, const char *a, const char *b)
{
    redisReply *r = redisCommand(q->ctx, fmt, a, b);
    long long v = -1;
    if (queue_check_reply(q, r, "status") == QUEUE_OK && r->type == REDIS_REPLY_INTEGER)
        v = r->integer;
    freeReplyObject(r);
    return v;
}

int queue_status(Queue *q, JobKind kind, QueueStreamStatus *st)
{
    memset(st, 0, sizeof *st);
    if (queue_ensure_ctx(q))
        return QUEUE_ECONN;
    st->length = int_reply(q, "XLEN %s", q->stream[kind], NULL);
    st->dead = int_reply(q, "XLEN %s", q->dead, NULL);
    if (!q->ctx)
        return QUEUE_ECONN;
    redisReply *r = redisCommand(q->ctx, "XINFO CONSUMERS %s %s", q->stream[kind], q->qc.group);
    int rc = queue_check_reply(q, r, "XINFO CONSUMERS");
    if (rc) {
        bool nogroup = rc == QUEUE_EREPLY && (strstr(r->str, "NOGROUP") || strstr(r->str, "no such key"));
        freeReplyObject(r);
        return nogroup ? QUEUE_OK : rc;
    }
    for (size_t c = 0; c < r->elements && st->n_consumers < 64; c++) {
        const redisReply *cr = r->element[c];
        QueueConsumerStatus *out = &st->consumers[st->n_consumers++];
        for (size_t i = 0; i + 1 < cr->elements; i += 2) {
            const char *f = cr->element[i]->str;
            const redisReply *v = cr->element[i + 1];
            if (strcmp(f, "name") == 0)
                snprintf(out->name, sizeof out->name, "%s", v->str);
            else if (strcmp(f, "pending") == 0)
                out->pending = v->integer;
            else if (strcmp(f, "idle") == 0)
                out->idle_ms = v->integer;
        }
        st->pending += out->pending;
    }
    freeReplyObject(r);
    for (int c = 0; c < st->n_consumers; c++) {
        char key[QUEUE_KEY_MAX];
        if (queue_format_key(q, key, sizeof key, "%s:consumer:%s", q->qc.prefix, st->consumers[c].name))
            return QUEUE_EARG;
        redisReply *r = redisCommand(q->ctx, "GET %s", key);
        QueueConsumerStatus *cs = &st->consumers[c];
        if (queue_check_reply(q, r, "status") == QUEUE_OK && r->type == REDIS_REPLY_STRING) {
            cs->ready = true;
            if (strncmp(r->str, "precision=", 10) == 0)
                snprintf(cs->precision, sizeof cs->precision, "%s", r->str + 10);
        }
        freeReplyObject(r);
    }
    return q->ctx ? QUEUE_OK : QUEUE_ECONN;
}

/* Five pipelined commands: XLEN and the XPENDING summary of each stream, XLEN of the dead
 * letters. A stream or group that does not exist yet counts as empty. */
int queue_depths(Queue *q, QueueDepths *d)
{
    memset(d, 0, sizeof *d);
    if (queue_ensure_ctx(q))
        return QUEUE_ECONN;
    for (int k = 0; k < 2; k++) {
        redisAppendCommand(q->ctx, "XLEN %s", q->stream[k]);
        redisAppendCommand(q->ctx, "XPENDING %s %s", q->stream[k], q->qc.group);
    }
    redisAppendCommand(q->ctx, "XLEN %s", q->dead);
    int rc = QUEUE_OK;
    for (int i = 0; i < 5; i++) {
        redisReply *r = NULL;
        if (redisGetReply(q->ctx, (void **)&r) != REDIS_OK)
            return queue_check_reply(q, NULL, "sampling stream depths");
        long long v = 0;
        if (r->type == REDIS_REPLY_INTEGER)
            v = r->integer;
        else if (r->type == REDIS_REPLY_ARRAY && r->elements >= 1 && r->element[0]->type == REDIS_REPLY_INTEGER)
            v = r->element[0]->integer;
        else if (r->type == REDIS_REPLY_ERROR && !strstr(r->str, "NOGROUP") && !strstr(r->str, "no such key"))
            rc = queue_set_err(q, QUEUE_EREPLY, "sampling stream depths: %s", r->str);
        freeReplyObject(r);
        if (i == 4)
            d->dead = v;
        else if (i % 2 == 0)
            d->length[i / 2] = v;
        else
            d->pending[i / 2] = v;
    }
    return rc;
}

/* Renders one dead-letter entry [id, [f, v, ...]] as a JSON object. */
static cJSON *dead_entry_json(const redisReply *ent)
{
    cJSON *obj = cJSON_CreateObject();
    cJSON_AddStringToObject(obj, "dead_id", ent->element[0]->str);
    const redisReply *fv = ent->element[1];
    for (size_t i = 0; fv->type == REDIS_REPLY_ARRAY && i + 1 < fv->elements; i += 2)
        cJSON_AddStringToObject(obj, fv->element[i]->str, fv->element[i + 1]->str);
    return obj;
}

int queue_dead_list(Queue *q, int count, FILE *out)
{
    if (queue_ensure_ctx(q))
        return QUEUE_ECONN;
    redisReply *r = redisCommand(q->ctx, "XRANGE %s - + COUNT %d", q->dead, count);
    int rc = queue_check_reply(q, r, "XRANGE");
    if (rc == QUEUE_OK) {
        for (size_t e = 0; e < r->elements; e++) {
            cJSON *obj = dead_entry_json(r->element[e]);
            char *s = cJSON_PrintUnformatted(obj);
            fprintf(out, "%s\n", s);
            free(s);
            cJSON_Delete(obj);
        }
    }
    freeReplyObject(r);
    return rc;
}

/* Moves one dead entry back: XADD the original job, drop its error result, XDEL the dead one,
 * all in one Lua call so a crash cannot leave it in both places or in neither. */
static const char REQUEUE_LUA[] =
    "local e = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])\n"
    "if #e == 0 then return 0 end\n"
    "local f = e[1][2]\n"
    "local m = {}\n"
    "for i = 1, #f, 2 do m[f[i]] = f[i + 1] end\n"
    "local stream = m['kind'] == 'generate' and KEYS[3] or KEYS[2]\n"
    "redis.call('XADD', stream, '*', 'job', m['job'])\n"
    "redis.call('DEL', ARGV[2] .. m['job_id'])\n"
    "redis.call('XDEL', KEYS[1], ARGV[1])\n"
    "return 1\n";

int queue_dead_requeue(Queue *q, const char *const *dead_ids, int n, int *requeued)
{
    *requeued = 0;
    if (queue_ensure_ctx(q))
        return QUEUE_ECONN;
    char result_prefix[QUEUE_KEY_MAX];
    if (queue_format_key(q, result_prefix, sizeof result_prefix, "%s:result:", q->qc.prefix))
        return QUEUE_EARG;
    redisReply *all = NULL;
    if (n == 0) {
        all = redisCommand(q->ctx, "XRANGE %s - +", q->dead);
        int rc = queue_check_reply(q, all, "XRANGE");
        if (rc) {
            freeReplyObject(all);
            return rc;
        }
        n = (int)all->elements;
    }
    int rc = QUEUE_OK;
    for (int i = 0; i < n && rc == QUEUE_OK; i++) {
        const char *id = all ? all->element[i]->element[0]->str : dead_ids[i];
        redisReply *r = redisCommand(q->ctx, "EVAL %s 3 %s %s %s %s %s", REQUEUE_LUA, q->dead,
                                     q->stream[JOB_EMBED], q->stream[JOB_GENERATE], id, result_prefix);
        rc = queue_check_reply(q, r, "requeue");
        if (rc == QUEUE_OK && r->type == REDIS_REPLY_INTEGER)
            *requeued += (int)r->integer;
        freeReplyObject(r);
    }
    freeReplyObject(all);
    return rc;
}

int queue_prune_consumers(Queue *q, JobKind kind, long long min_idle_ms, int *pruned)
{
    *pruned = 0;
    if (queue_ensure_ctx(q))
        return QUEUE_ECONN;
    redisReply *r = redisCommand(q->ctx, "XINFO CONSUMERS %s %s", q->stream[kind], q->qc.group);
    int rc = queue_check_reply(q, r, "XINFO CONSUMERS");
    if (rc) {
        freeReplyObject(r);
        return rc;
    }
    for (size_t c = 0; c < r->elements; c++) {
        const redisReply *cr = r->element[c];
        const char *name = NULL;
        long long pending = -1, idle = 0;
        for (size_t i = 0; i + 1 < cr->elements; i += 2) {
            const char *f = cr->element[i]->str;
            if (strcmp(f, "name") == 0)
                name = cr->element[i + 1]->str;
            else if (strcmp(f, "pending") == 0)
                pending = cr->element[i + 1]->integer;
            else if (strcmp(f, "idle") == 0)
                idle = cr->element[i + 1]->integer;
        }
        if (!name || pending != 0 || idle < min_idle_ms || strcmp(name, q->consumer) == 0)
            continue;
        redisReply *d = redisCommand(q->ctx, "XGROUP DELCONSUMER %s %s %s", q->stream[kind], q->qc.group, name);
        rc = queue_check_reply(q, d, "XGROUP DELCONSUMER");
        if (rc == QUEUE_OK && d->type == REDIS_REPLY_INTEGER && d->integer == 0)
            (*pruned)++;
        freeReplyObject(d);
        if (rc)
            break;
    }
    freeReplyObject(r);
    return rc;
}
