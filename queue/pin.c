/* pin.c: the Redis side of the cohort pin: one hash per cohort, "<prefix>:pin:<cohort>".
 * Creation is create-if-absent in one Lua call that returns whatever pin Redis then holds, so
 * engines booting at once all compare against the same pin. This file only stores and reads;
 * it never decides whether two identities match (engine/pin.c does), logs or exits. */
#include "queue/queue_internal.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* KEYS[1] = pin key; ARGV = field, value, ... Returns {created (0|1), HGETALL of the key}. */
static const char PIN_CREATE_LUA[] =
    "local created = 0\n"
    "if redis.call('EXISTS', KEYS[1]) == 0 then\n"
    "  redis.call('HSET', KEYS[1], unpack(ARGV))\n"
    "  created = 1\n"
    "end\n"
    "return {created, redis.call('HGETALL', KEYS[1])}\n";

_Static_assert(CFG_QUEUE_PREFIX_MAX + sizeof ":pin:" - 1 + CFG_PIN_COHORT_MAX < QUEUE_KEY_MAX,
               "<prefix>:pin:<cohort> must fit QUEUE_KEY_MAX: lower CFG_PIN_COHORT_MAX");

int queue_pin_key(const Queue *q, const char *cohort, char *buf, size_t len)
{
    return queue_key_fits(buf, len, "%s:pin:%s", q->qc.prefix, cohort) ? QUEUE_OK : QUEUE_EARG;
}

/* queue_pin_key into a QUEUE_KEY_MAX buffer, with errstr set when the cohort is too long. */
static int pin_key(Queue *q, const char *cohort, char *buf)
{
    if (queue_pin_key(q, cohort, buf, QUEUE_KEY_MAX) == QUEUE_OK)
        return QUEUE_OK;
    return queue_set_err(q, QUEUE_EARG, "cohort \"%.40s...\" (%zu bytes) makes a pin key longer "
                         "than %d bytes", cohort, strlen(cohort), QUEUE_KEY_MAX - 1);
}

void queue_pin_clear(QueuePin *p)
{
    if (!p)
        return;
    free(p->probe);
    p->probe = NULL;
    p->probe_dim = 0;
}

/* f32 little-endian on the wire whatever the host order, the layout Redis vector search uses. */
static void f32_to_le(const float *v, int n, unsigned char *out)
{
    for (int i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &v[i], 4);
        out[4 * i] = (unsigned char)u;
        out[4 * i + 1] = (unsigned char)(u >> 8);
        out[4 * i + 2] = (unsigned char)(u >> 16);
        out[4 * i + 3] = (unsigned char)(u >> 24);
    }
}

static void f32_from_le(const unsigned char *in, int n, float *v)
{
    for (int i = 0; i < n; i++) {
        uint32_t u = (uint32_t)in[4 * i] | (uint32_t)in[4 * i + 1] << 8 | (uint32_t)in[4 * i + 2] << 16 |
                     (uint32_t)in[4 * i + 3] << 24;
        memcpy(&v[i], &u, 4);
    }
}

static int parse_int(const char *s, size_t len, long long *out)
{
    char buf[32];
    if (len == 0 || len >= sizeof buf)
        return -1;
    memcpy(buf, s, len);
    buf[len] = '\0';
    char *end;
    errno = 0;
    long long v = strtoll(buf, &end, 10);
    if (errno || *end)
        return -1;
    *out = v;
    return 0;
}

static void copy_field(char *dst, size_t cap, const redisReply *v)
{
    size_t n = v->len < cap - 1 ? v->len : cap - 1;
    memcpy(dst, v->str, n);
    dst[n] = '\0';
}

/* Fills *out from an HGETALL array. A hash without the fields a pin must have is an error:
 * something else lives under the pin key. */
static int pin_from_reply(Queue *q, const char *key, const redisReply *arr, QueuePin *out)
{
    memset(out, 0, sizeof *out);
    bool have_model = false, have_dim = false, have_probe = false;
    for (size_t i = 0; i + 1 < arr->elements; i += 2) {
        const redisReply *k = arr->element[i], *v = arr->element[i + 1];
        if (k->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING)
            continue;
        long long n;
        if (strcmp(k->str, "model_id") == 0) {
            copy_field(out->model_id, sizeof out->model_id, v);
            have_model = true;
        } else if (strcmp(k->str, "snapshot_hash") == 0) {
            copy_field(out->snapshot_hash, sizeof out->snapshot_hash, v);
        } else if (strcmp(k->str, "dim") == 0) {
            if (parse_int(v->str, v->len, &n) != 0 || n < 1 || n > 1 << 20)
                goto bad_field;
            out->dim = (int)n;
            have_dim = true;
        } else if (strcmp(k->str, "pooling") == 0) {
            copy_field(out->pooling, sizeof out->pooling, v);
        } else if (strcmp(k->str, "normalize") == 0) {
            out->normalize = v->len == 4 && memcmp(v->str, "true", 4) == 0;
        } else if (strcmp(k->str, "max_seq_len") == 0) {
            if (parse_int(v->str, v->len, &n) != 0 || n < 0 || n > 1 << 24)
                goto bad_field;
            out->max_seq_len = (int)n;
        } else if (strcmp(k->str, "probe_text") == 0) {
            copy_field(out->probe_text, sizeof out->probe_text, v);
        } else if (strcmp(k->str, "probe") == 0) {
            if (v->len == 0 || v->len % 4 != 0)
                goto bad_field;
            free(out->probe);
            out->probe_dim = (int)(v->len / 4);
            out->probe = malloc(v->len);
            if (!out->probe) {
                out->probe_dim = 0;
                return queue_set_err(q, QUEUE_ENOMEM, "out of memory reading %s", key);
            }
            f32_from_le((const unsigned char *)v->str, out->probe_dim, out->probe);
            have_probe = true;
        } else if (strcmp(k->str, "created_at") == 0) {
            if (parse_int(v->str, v->len, &n) == 0)
                out->created_at = n;
        } else if (strcmp(k->str, "created_by") == 0) {
            copy_field(out->created_by, sizeof out->created_by, v);
        }
        continue;
    bad_field:
        queue_pin_clear(out);
        return queue_set_err(q, QUEUE_EREPLY, "%s is not a valid pin: field '%s' is malformed", key, k->str);
    }
    const char *missing = !have_model ? "model_id" : !have_dim ? "dim" : !have_probe ? "probe" : NULL;
    if (missing) {
        queue_pin_clear(out);
        return queue_set_err(q, QUEUE_EREPLY, "%s is not a valid pin: field '%s' is missing", key, missing);
    }
    return QUEUE_OK;
}

int queue_pin_create(Queue *q, const char *cohort, const QueuePin *mine, QueuePin *stored, bool *created)
{
    if (!mine->probe || mine->probe_dim < 1)
        return queue_set_err(q, QUEUE_EARG, "a pin needs a probe vector");
    if (queue_ensure_ctx(q))
        return QUEUE_ECONN;
    char key[QUEUE_KEY_MAX], dim[16], msl[16], at[24];
    if (pin_key(q, cohort, key))
        return QUEUE_EARG;
    snprintf(dim, sizeof dim, "%d", mine->dim);
    snprintf(msl, sizeof msl, "%d", mine->max_seq_len);
    snprintf(at, sizeof at, "%lld", mine->created_at);
    size_t probe_len = (size_t)mine->probe_dim * 4;
    unsigned char *probe = malloc(probe_len);
    if (!probe)
        return queue_set_err(q, QUEUE_ENOMEM, "out of memory");
    f32_to_le(mine->probe, mine->probe_dim, probe);
    const char *argv[] = {
        "EVAL", PIN_CREATE_LUA, "1", key,
        "model_id", mine->model_id, "snapshot_hash", mine->snapshot_hash, "dim", dim,
        "pooling", mine->pooling, "normalize", mine->normalize ? "true" : "false",
        "max_seq_len", msl, "probe_text", mine->probe_text, "probe", (const char *)probe,
        "created_at", at, "created_by", mine->created_by,
    };
    enum { NARGS = sizeof argv / sizeof argv[0], PROBE_ARG = NARGS - 5 };
    size_t alen[NARGS];
    for (int i = 0; i < NARGS; i++)
        alen[i] = i == PROBE_ARG ? probe_len : strlen(argv[i]); /* the probe is binary */
    redisReply *r = redisCommandArgv(q->ctx, NARGS, argv, alen);
    free(probe);
    int rc = queue_check_reply(q, r, "EVAL pin create");
    if (rc == QUEUE_OK) {
        if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 || r->element[0]->type != REDIS_REPLY_INTEGER ||
            r->element[1]->type != REDIS_REPLY_ARRAY)
            rc = queue_set_err(q, QUEUE_EREPLY, "pin create: unexpected reply from Redis");
        else if ((rc = pin_from_reply(q, key, r->element[1], stored)) == QUEUE_OK)
            *created = r->element[0]->integer == 1;
    }
    freeReplyObject(r);
    return rc;
}

int queue_pin_get(Queue *q, const char *cohort, QueuePin *out)
{
    if (queue_ensure_ctx(q))
        return QUEUE_ECONN;
    char key[QUEUE_KEY_MAX];
    if (pin_key(q, cohort, key))
        return QUEUE_EARG;
    redisReply *r = redisCommand(q->ctx, "HGETALL %s", key);
    int rc = queue_check_reply(q, r, "HGETALL pin");
    if (rc == QUEUE_OK) {
        if (r->type != REDIS_REPLY_ARRAY)
            rc = queue_set_err(q, QUEUE_EREPLY, "HGETALL %s: unexpected reply", key);
        else if (r->elements == 0)
            rc = 0;
        else if ((rc = pin_from_reply(q, key, r, out)) == QUEUE_OK)
            rc = 1;
    }
    freeReplyObject(r);
    return rc;
}

int queue_pin_delete(Queue *q, const char *cohort)
{
    if (queue_ensure_ctx(q))
        return QUEUE_ECONN;
    char key[QUEUE_KEY_MAX];
    if (pin_key(q, cohort, key))
        return QUEUE_EARG;
    redisReply *r = redisCommand(q->ctx, "DEL %s", key);
    int rc = queue_check_reply(q, r, "DEL pin");
    if (rc == QUEUE_OK)
        rc = r->type == REDIS_REPLY_INTEGER && r->integer > 0 ? 1 : 0;
    freeReplyObject(r);
    return rc;
}
