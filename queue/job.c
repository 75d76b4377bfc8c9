/* job.c: strict parsing of embed and generate jobs (schema in docs/protocol.md).
 * Every field a producer sends is checked for type and range; unknown fields are errors so a
 * typo never silently changes behaviour. Nothing here talks to Redis or logs payloads. */
#include "queue/job.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *job_kind_name(JobKind kind) { return kind == JOB_EMBED ? "embed" : "generate"; }

bool job_utf8_valid(const char *str, size_t len)
{
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0;
    while (i < len) {
        unsigned c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        int n;
        unsigned cp, min;
        if ((c & 0xE0) == 0xC0) { n = 1; cp = c & 0x1F; min = 0x80; }
        else if ((c & 0xF0) == 0xE0) { n = 2; cp = c & 0x0F; min = 0x800; }
        else if ((c & 0xF8) == 0xF0) { n = 3; cp = c & 0x07; min = 0x10000; }
        else return false;
        if (i + (size_t)n >= len)
            return false;
        for (int k = 1; k <= n; k++) {
            if ((s[i + k] & 0xC0) != 0x80)
                return false;
            cp = (cp << 6) | (s[i + k] & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return false;
        i += (size_t)n + 1;
    }
    return true;
}

bool job_id_valid(const char *id)
{
    size_t n = strlen(id);
    if (n == 0 || n > JOB_ID_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = id[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
              c == '_' || c == ':' || c == '-'))
            return false;
    }
    return true;
}

/* cJSON ends its strings at NUL, so a "\u0000" escape would silently cut a text short. The
 * decoded length of every string (member names included) is therefore recomputed from the raw
 * JSON, in document order, and kept in the item's valueint, which cJSON leaves unused for
 * strings. The document has already been parsed, so it is well-formed. */
typedef struct StrLens {
    int *v;
    size_t n, next;
    bool nul_name;  /* a member name holds NUL: "id\u0000x" would read as "id" */
} StrLens;

static int scan_string_lengths(const char *s, size_t len, StrLens *out)
{
    size_t cap = 16, n = 0;
    int *v = malloc(cap * sizeof *v);
    if (!v)
        return -1;
    for (size_t i = 0; i < len; i++) {
        if (s[i] != '"')
            continue;
        size_t dec = 0;
        for (i++; i < len && s[i] != '"'; i++, dec++) {
            if (s[i] != '\\')
                continue;
            i++;
            if (i < len && s[i] == 'u' && i + 4 < len) {
                unsigned cp = (unsigned)strtoul((char[5]){s[i + 1], s[i + 2], s[i + 3], s[i + 4], 0}, NULL, 16);
                i += 4;
                if (cp >= 0xD800 && cp <= 0xDBFF && i + 6 < len && s[i + 1] == '\\' && s[i + 2] == 'u') {
                    i += 6; /* a surrogate pair: one 4-byte character */
                    dec += 3;
                } else {
                    dec += cp < 0x80 ? 0 : cp < 0x800 ? 1 : 2;
                }
            }
        }
        if (n == cap) {
            int *nv = realloc(v, (cap *= 2) * sizeof *v);
            if (!nv) {
                free(v);
                return -1;
            }
            v = nv;
        }
        v[n++] = (int)dec;
    }
    *out = (StrLens){v, n, 0, false};
    return 0;
}

/* Stores the scanned lengths into the tree, walking it in document order. */
static void assign_string_lengths(cJSON *item, StrLens *sl)
{
    for (; item; item = item->next) {
        if (item->string && sl->next < sl->n)
            sl->nul_name |= strlen(item->string) != (size_t)sl->v[sl->next++];
        if (cJSON_IsString(item) && sl->next < sl->n)
            item->valueint = sl->v[sl->next++];
        else if (cJSON_IsObject(item) || cJSON_IsArray(item))
            assign_string_lengths(item->child, sl);
    }
}

/* The decoded length of a string item, NULs included. */
static size_t str_len(const cJSON *v) { return (size_t)v->valueint; }
static bool has_nul(const cJSON *v) { return strlen(v->valuestring) != str_len(v); }

static int fail(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return -1;
}

/* Prepends "where: " to the message already in err. */
static int prefix_error(char *err, size_t errlen, const char *where)
{
    char inner[256];
    snprintf(inner, sizeof inner, "%s", err);
    snprintf(err, errlen, "%s: %s", where, inner);
    return -1;
}

/* Reads an optional number field into *out; checks it is finite and within [lo, hi]. */
static int opt_number(const cJSON *doc, const char *name, double lo, double hi, double *out, char *err,
                      size_t errlen)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(doc, name);
    if (!v)
        return 0;
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble))
        return fail(err, errlen, "field '%s' must be a number", name);
    if (v->valuedouble < lo || v->valuedouble > hi)
        return fail(err, errlen, "field '%s' = %g is out of range [%g, %g]", name, v->valuedouble, lo, hi);
    *out = v->valuedouble;
    return 0;
}

static int opt_int(const cJSON *doc, const char *name, long long lo, long long hi, long long *out, char *err,
                   size_t errlen)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(doc, name);
    if (!v)
        return 0;
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble) || v->valuedouble != floor(v->valuedouble))
        return fail(err, errlen, "field '%s' must be an integer", name);
    if (v->valuedouble < (double)lo || v->valuedouble > (double)hi)
        return fail(err, errlen, "field '%s' = %.15g is out of range [%lld, %lld]", name, v->valuedouble, lo,
                    hi);
    *out = (long long)v->valuedouble;
    return 0;
}

static int opt_bool(const cJSON *doc, const char *name, int *out, char *err, size_t errlen)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(doc, name);
    if (!v)
        return 0;
    if (!cJSON_IsBool(v))
        return fail(err, errlen, "field '%s' must be true or false", name);
    *out = cJSON_IsTrue(v) ? 1 : 0;
    return 0;
}

/* A non-empty key name for Redis: any bytes but bounded. */
static int key_string(const cJSON *v, const char *name, const char **out, char *err, size_t errlen)
{
    if (!cJSON_IsString(v))
        return fail(err, errlen, "field '%s' must be a string", name);
    size_t n = str_len(v);
    if (n == 0 || n > 512)
        return fail(err, errlen, "field '%s' must be 1..512 bytes", name);
    if (has_nul(v))
        return fail(err, errlen, "field '%s' must not contain NUL", name);
    *out = v->valuestring;
    return 0;
}

static int check_fields(const cJSON *doc, const char *const *allowed, char *err, size_t errlen)
{
    for (const cJSON *it = doc->child; it; it = it->next) {
        bool ok = false;
        for (int i = 0; allowed[i]; i++)
            if (strcmp(it->string, allowed[i]) == 0)
                ok = true;
        if (!ok)
            return fail(err, errlen, "unknown field '%.64s'", it->string);
        for (const cJSON *dup = it->next; dup; dup = dup->next)
            if (strcmp(dup->string, it->string) == 0)
                return fail(err, errlen, "field '%.64s' appears twice", it->string);
    }
    return 0;
}

static int parse_embed(const cJSON *doc, const JobLimits *lim, EmbedJob *ej, char *err, size_t errlen)
{
    static const char *const allowed[] = {"id", "text", "texts", "normalize", "dimensions", "truncate",
                                          "instruction", "encoding", "reply_to", "target", NULL};
    if (check_fields(doc, allowed, err, errlen))
        return -1;
    const cJSON *text = cJSON_GetObjectItemCaseSensitive(doc, "text");
    const cJSON *texts = cJSON_GetObjectItemCaseSensitive(doc, "texts");
    if (text && texts)
        return fail(err, errlen, "give either 'text' or 'texts', not both");
    if (!text && !texts)
        return fail(err, errlen, "missing field 'texts' (or 'text')");
    int n = text ? 1 : cJSON_GetArraySize(texts);
    if (texts && !cJSON_IsArray(texts))
        return fail(err, errlen, "field 'texts' must be an array of strings");
    if (n == 0)
        return fail(err, errlen, "field 'texts' is empty");
    if (n > lim->max_texts_per_job)
        return fail(err, errlen, "%d texts exceed the limit of %d per job", n, lim->max_texts_per_job);
    ej->texts = calloc((size_t)n, sizeof *ej->texts);
    ej->lens = calloc((size_t)n, sizeof *ej->lens);
    if (!ej->texts || !ej->lens)
        return fail(err, errlen, "out of memory");
    int i = 0;
    for (const cJSON *t = text ? text : texts->child; t && i < n; t = text ? NULL : t->next, i++) {
        if (!cJSON_IsString(t))
            return text ? fail(err, errlen, "field 'text' must be a string")
                        : fail(err, errlen, "texts[%d] must be a string", i);
        ej->texts[i] = t->valuestring;
        ej->lens[i] = str_len(t);
    }
    ej->n_texts = n;

    ej->normalize = -1;
    if (opt_bool(doc, "normalize", &ej->normalize, err, errlen))
        return -1;
    long long dims = 0;
    if (opt_int(doc, "dimensions", 1, 65536, &dims, err, errlen))
        return -1;
    ej->dimensions = (int)dims;
    int trunc = 1;
    if (opt_bool(doc, "truncate", &trunc, err, errlen))
        return -1;
    ej->truncate = trunc;
    const cJSON *ins = cJSON_GetObjectItemCaseSensitive(doc, "instruction");
    if (cJSON_IsString(ins)) {
        ej->instruction = ins->valuestring;
        ej->instruction_len = str_len(ins);
        if (ej->instruction_len == 0)
            return fail(err, errlen, "field 'instruction' is empty: give the task, true for the engine's "
                                     "embedder.query_instruction, or leave it out for documents");
    } else if (cJSON_IsTrue(ins)) {
        if (!lim->query_instruction || !lim->query_instruction[0])
            return fail(err, errlen, "field 'instruction' is true but the engine has no embedder.query_instruction "
                                     "configured: send the instruction text");
        ej->instruction = lim->query_instruction;
        ej->instruction_len = strlen(lim->query_instruction);
    } else if (ins && !cJSON_IsFalse(ins)) {
        return fail(err, errlen, "field 'instruction' must be a string, true (the configured default) or false");
    }
    const cJSON *enc = cJSON_GetObjectItemCaseSensitive(doc, "encoding");
    ej->encoding = JOB_ENC_JSON;
    if (enc) {
        if (cJSON_IsString(enc) && strcmp(enc->valuestring, "json") == 0)
            ej->encoding = JOB_ENC_JSON;
        else if (cJSON_IsString(enc) && strcmp(enc->valuestring, "f32") == 0)
            ej->encoding = JOB_ENC_F32;
        else
            return fail(err, errlen, "field 'encoding' must be \"json\" or \"f32\"");
    }
    const cJSON *target = cJSON_GetObjectItemCaseSensitive(doc, "target");
    if (target) {
        static const char *const tallowed[] = {"key", "keys", "field", NULL};
        if (!cJSON_IsObject(target))
            return fail(err, errlen, "field 'target' must be an object with 'key' (or 'keys') and 'field'");
        if (check_fields(target, tallowed, err, errlen))
            return prefix_error(err, errlen, "target");
        const cJSON *field = cJSON_GetObjectItemCaseSensitive(target, "field");
        if (!field)
            return fail(err, errlen, "target: missing field 'field'");
        if (key_string(field, "target.field", &ej->target_field, err, errlen))
            return -1;
        const cJSON *key = cJSON_GetObjectItemCaseSensitive(target, "key");
        const cJSON *keys = cJSON_GetObjectItemCaseSensitive(target, "keys");
        if ((key != NULL) == (keys != NULL))
            return fail(err, errlen, "target: give exactly one of 'key' or 'keys'");
        ej->target_keys = calloc((size_t)n, sizeof *ej->target_keys);
        if (!ej->target_keys)
            return fail(err, errlen, "out of memory");
        if (key) {
            if (n != 1)
                return fail(err, errlen, "target.key names one hash but the job has %d texts; use target.keys", n);
            if (key_string(key, "target.key", &ej->target_keys[0], err, errlen))
                return -1;
        } else {
            if (!cJSON_IsArray(keys) || cJSON_GetArraySize(keys) != n)
                return fail(err, errlen, "target.keys must be an array with one key per text (%d)", n);
            int k = 0;
            for (const cJSON *it = keys->child; it; it = it->next, k++)
                if (key_string(it, "target.keys[]", &ej->target_keys[k], err, errlen))
                    return -1;
        }
    }
    return 0;
}

static int parse_generate(const cJSON *doc, const JobLimits *lim, GenJob *gj, char *err, size_t errlen)
{
    static const char *const allowed[] = {"id", "prompt", "messages", "max_tokens", "temperature", "top_k",
                                          "top_p", "min_p", "repeat_penalty", "repeat_last_n",
                                          "presence_penalty", "frequency_penalty", "seed", "stop",
                                          "truncate", "parse_special", "reply_to", NULL};
    if (check_fields(doc, allowed, err, errlen))
        return -1;
    const cJSON *prompt = cJSON_GetObjectItemCaseSensitive(doc, "prompt");
    const cJSON *msgs = cJSON_GetObjectItemCaseSensitive(doc, "messages");
    if (prompt && msgs)
        return fail(err, errlen, "give either 'prompt' or 'messages', not both");
    if (!prompt && !msgs)
        return fail(err, errlen, "missing field 'prompt' (or 'messages')");
    if (prompt) {
        if (!cJSON_IsString(prompt))
            return fail(err, errlen, "field 'prompt' must be a string");
        gj->prompt = prompt->valuestring;
        gj->prompt_len = str_len(prompt);
    } else {
        int n = cJSON_GetArraySize(msgs);
        if (!cJSON_IsArray(msgs) || n == 0)
            return fail(err, errlen, "field 'messages' must be a non-empty array of {role, content}");
        if (n > 1024)
            return fail(err, errlen, "%d messages exceed the limit of 1024", n);
        gj->messages = calloc((size_t)n, sizeof *gj->messages);
        if (!gj->messages)
            return fail(err, errlen, "out of memory");
        int i = 0;
        for (const cJSON *m = msgs->child; m; m = m->next, i++) {
            static const char *const mallowed[] = {"role", "content", NULL};
            if (!cJSON_IsObject(m))
                return fail(err, errlen, "messages[%d] must be an object", i);
            if (check_fields(m, mallowed, err, errlen)) {
                char where[32];
                snprintf(where, sizeof where, "messages[%d]", i);
                return prefix_error(err, errlen, where);
            }
            const cJSON *role = cJSON_GetObjectItemCaseSensitive(m, "role");
            const cJSON *content = cJSON_GetObjectItemCaseSensitive(m, "content");
            if (!cJSON_IsString(role) || has_nul(role) ||
                (strcmp(role->valuestring, "system") && strcmp(role->valuestring, "user") &&
                 strcmp(role->valuestring, "assistant")))
                return fail(err, errlen, "messages[%d].role must be \"system\", \"user\" or \"assistant\"", i);
            if (!cJSON_IsString(content))
                return fail(err, errlen, "messages[%d].content must be a string", i);
            gj->messages[i].role = role->valuestring;
            gj->messages[i].content = content->valuestring;
            gj->messages[i].content_len = str_len(content);
        }
        gj->n_messages = n;
    }
    long long v = lim->max_tokens < 128 ? lim->max_tokens : 128; /* the default never exceeds the limit */
    if (opt_int(doc, "max_tokens", 1, lim->max_tokens, &v, err, errlen))
        return -1;
    gj->max_tokens = (int)v;
    gj->temperature = 0.0;
    gj->top_p = 1.0;
    gj->min_p = 0.0;
    gj->repeat_penalty = 1.0;
    gj->presence_penalty = 0.0;
    gj->frequency_penalty = 0.0;
    if (opt_number(doc, "temperature", 0, 10, &gj->temperature, err, errlen) ||
        opt_number(doc, "top_p", 0, 1, &gj->top_p, err, errlen) ||
        opt_number(doc, "min_p", 0, 1, &gj->min_p, err, errlen) ||
        opt_number(doc, "repeat_penalty", 0.01, 10, &gj->repeat_penalty, err, errlen) ||
        opt_number(doc, "presence_penalty", -2, 2, &gj->presence_penalty, err, errlen) ||
        opt_number(doc, "frequency_penalty", -2, 2, &gj->frequency_penalty, err, errlen))
        return -1;
    v = 0;
    if (opt_int(doc, "top_k", 0, 100000, &v, err, errlen))
        return -1;
    gj->top_k = (int)v;
    v = 64;
    if (opt_int(doc, "repeat_last_n", 0, 1 << 20, &v, err, errlen))
        return -1;
    gj->repeat_last_n = (int)v;
    const cJSON *seed = cJSON_GetObjectItemCaseSensitive(doc, "seed");
    if (seed) {
        /* JSON numbers are doubles: seeds beyond 2^53 would silently change, so refuse them. */
        v = 0;
        if (opt_int(doc, "seed", 0, 9007199254740991LL, &v, err, errlen))
            return -1;
        gj->seed = (uint64_t)v;
        gj->seed_set = true;
    }
    const cJSON *stop = cJSON_GetObjectItemCaseSensitive(doc, "stop");
    if (stop) {
        if (cJSON_IsString(stop)) {
            if (has_nul(stop))
                return fail(err, errlen, "stop strings must not contain NUL");
            gj->stop[gj->n_stop++] = stop->valuestring;
        } else if (cJSON_IsArray(stop)) {
            if (cJSON_GetArraySize(stop) > JOB_MAX_STOP)
                return fail(err, errlen, "field 'stop' has more than %d strings", JOB_MAX_STOP);
            for (const cJSON *s = stop->child; s; s = s->next) {
                if (!cJSON_IsString(s) || s->valuestring[0] == '\0')
                    return fail(err, errlen, "field 'stop' must hold non-empty strings");
                if (has_nul(s))
                    return fail(err, errlen, "stop strings must not contain NUL");
                gj->stop[gj->n_stop++] = s->valuestring;
            }
        } else {
            return fail(err, errlen, "field 'stop' must be a string or an array of strings");
        }
        for (int i = 0; i < gj->n_stop; i++)
            if (gj->stop[i][0] == '\0' || strlen(gj->stop[i]) > 256)
                return fail(err, errlen, "stop strings must be 1..256 bytes");
    }
    int trunc = 0;
    if (opt_bool(doc, "truncate", &trunc, err, errlen))
        return -1;
    gj->truncate = trunc;
    int special = 1;
    if (opt_bool(doc, "parse_special", &special, err, errlen))
        return -1;
    gj->parse_special = special;
    return 0;
}

int job_parse(JobKind kind, const char *payload, size_t len, const JobLimits *lim, Job *job, char *err,
              size_t errlen)
{
    memset(job, 0, sizeof *job);
    job->kind = kind;
    if (!payload)
        return fail(err, errlen, "stream entry has no 'job' field");
    if (len > (size_t)lim->max_input_bytes)
        return fail(err, errlen, "job is %zu bytes, over the limit of %d", len, lim->max_input_bytes);
    if (!job_utf8_valid(payload, len))
        return fail(err, errlen, "job is not valid UTF-8");
    const char *end = NULL;
    cJSON *doc = cJSON_ParseWithLengthOpts(payload, len, &end, 0);
    if (!doc) {
        size_t at = end ? (size_t)(end - payload) : 0;
        return fail(err, errlen, "job is not valid JSON (error near byte %zu)", at);
    }
    job->doc = doc;
    StrLens sl;
    if (scan_string_lengths(payload, len, &sl) != 0)
        return fail(err, errlen, "out of memory");
    assign_string_lengths(doc, &sl);
    bool lens_agree = sl.next == sl.n;
    free(sl.v);
    if (sl.nul_name)
        return fail(err, errlen, "field names must not contain NUL");
    if (!lens_agree) /* cannot happen for a document cJSON accepted; refuse rather than guess */
        return fail(err, errlen, "job has strings the parser could not account for");
    /* Trailing garbage after the document is malformed too. */
    while (end && (size_t)(end - payload) < len && (*end == ' ' || *end == '\n' || *end == '\r' || *end == '\t'))
        end++;
    if (end && (size_t)(end - payload) < len)
        return fail(err, errlen, "job has trailing bytes after the JSON document");
    if (!cJSON_IsObject(doc))
        return fail(err, errlen, "job must be a JSON object");

    const cJSON *id = cJSON_GetObjectItemCaseSensitive(doc, "id");
    if (id) {
        if (!cJSON_IsString(id) || has_nul(id) || !job_id_valid(id->valuestring))
            return fail(err, errlen, "field 'id' must be 1..%d characters of [A-Za-z0-9._:-]", JOB_ID_MAX);
        snprintf(job->id, sizeof job->id, "%s", id->valuestring);
    }
    const cJSON *reply = cJSON_GetObjectItemCaseSensitive(doc, "reply_to");
    if (reply && key_string(reply, "reply_to", &job->reply_to, err, errlen))
        return -1;
    return kind == JOB_EMBED ? parse_embed(doc, lim, &job->embed, err, errlen)
                             : parse_generate(doc, lim, &job->gen, err, errlen);
}

void job_free(Job *job)
{
    if (!job)
        return;
    free(job->embed.texts);
    free(job->embed.lens);
    free(job->embed.target_keys);
    free(job->gen.messages);
    cJSON_Delete(job->doc);
    memset(job, 0, sizeof *job);
}
