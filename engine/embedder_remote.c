/* embedder_remote.c: the `remote` embedder backend (embedder_remote_ops): an embedding service
 * over HTTP with libcurl, either TEI-compatible (GET /info, POST /embed) or OpenAI-compatible
 * (GET /v1/models, POST /v1/embeddings), chosen by embedder.api.
 *
 * - Vectors: the engine wants pooled vectors NOT normalised. TEI is asked for
 *   "normalize": false. The OpenAI API has no such switch and always returns unit vectors;
 *   that is harmless (jobs that ask for normalisation get the same vector, the pin compares by
 *   cosine) but a job with "normalize": false gets unit vectors from an OpenAI service.
 * - Identity (EmbedderInfo): model_id = embedder.model_id if set, else the service's
 *   (TEI /info model_id; OpenAI: the only model /v1/models lists); dim from a probe request;
 *   max_seq_len from TEI max_input_length (OpenAI: an entry's max_model_len, as vLLM reports
 *   it, else 512); pooling from TEI model_type.embedding.pooling (OpenAI: "mean"); normalize
 *   = true (what both services do by default); snapshot_hash = "" (a service cannot tell us
 *   its files), so the pin does not compare it and relies on the probe vector.
 * - Batching: each request holds at most the service's max_client_batch_size texts (TEI; 2048
 *   for OpenAI) and about max_batch_tokens tokens (TEI), counted with the approximation below.
 * - count_tokens is an APPROXIMATION, bytes / 4 + 2 (rounded up): the tokenizer is behind the
 *   service. It only sizes batches; it is never reported as exact.
 * - Failures: 408, 429, 5xx and connection errors are retried with capped exponential backoff
 *   (at most REMOTE_MAX_ATTEMPTS tries within REMOTE_RETRY_WINDOW_MS, waits 100 ms doubling to
 *   2 s, Retry-After honoured up to 2 s; a hung service costs embedder.timeout_ms per try).
 *   Other 4xx split the request in halves down to single texts, so one bad text fails alone
 *   (a text the service rejects with truncate = false is EMBED_ERR_TOO_LONG). What still fails
 *   becomes a per-text EMBED_ERR_BACKEND with the reason in errstr: a job error result, never
 *   a crash. Once a request has exhausted its retries the rest of the call fails fast.
 * - Untrusted answers: a 2xx answer is checked before any vector is used, and an answer that
 *   breaks these rules is never retried (a service that sent it once will send it again) nor
 *   split; its texts get EMBED_ERR_BACKEND with the rule and the offending index in errstr.
 *   Whole request fails (no text can be trusted to own its vector):
 *     - the body is not JSON (this includes NaN and Infinity, which cJSON does not read);
 *     - TEI: not a list of exactly n items; OpenAI: no "data" list of exactly n items;
 *     - OpenAI: an item's "index" is missing or not an integer, is outside [0, n), or repeats
 *       an earlier item's (then some text has no vector). Vectors go by "index", never by
 *       position;
 *     - the body is longer than REMOTE_RESPONSE_SLACK + n * (REMOTE_RESPONSE_PER_TEXT + dim *
 *       REMOTE_RESPONSE_PER_NUMBER) bytes (GET /info, /v1/models: REMOTE_MAX_INFO_RESPONSE; the
 *       probe: REMOTE_MAX_PROBE_RESPONSE), by Content-Length or as read: reading stops there,
 *       so a broken service cannot make the engine hold gigabytes. This applies to error
 *       answers too.
 *   Only that text fails (its vector is identified; the others of the answer are used):
 *     - its vector is not an array of exactly dim numbers, dim being what the probe at open
 *       found;
 *     - an element is not a number, or not finite once a float (cJSON reads 1e999 as inf,
 *       and 1e39 overflows a float), so no NaN or inf reaches a result.
 *   The probe itself follows the same rules; any fault there stops the start-up.
 * Must not log or exit. The bearer token (embedder.token_file) is never put in a message. */
#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "engine/embedder_impl.h"
#include "engine/metrics.h" /* two counters: retries, requests that gave up */

#define REMOTE_MAX_ATTEMPTS 8
#define REMOTE_RETRY_WINDOW_MS 10000 /* no new attempt starts later than this after the first */
#define REMOTE_BACKOFF_FIRST_MS 100
#define REMOTE_BACKOFF_MAX_MS 2000
#define REMOTE_OPENAI_MAX_BATCH 2048
#define REMOTE_DEFAULT_MAX_SEQ 512
/* What a response may hold before the engine stops reading it (see "Untrusted answers"). */
#define REMOTE_MAX_INFO_RESPONSE ((size_t)4 << 20)   /* GET /info, GET /v1/models */
#define REMOTE_MAX_PROBE_RESPONSE ((size_t)16 << 20) /* the probe: the dimension is not known yet */
#define REMOTE_RESPONSE_PER_NUMBER 32                /* a double in full precision, indented */
#define REMOTE_RESPONSE_PER_TEXT 512                 /* OpenAI's {"object", "index", ...} */
#define REMOTE_RESPONSE_SLACK ((size_t)64 << 10)     /* usage, model, headers of the list */
#define REMOTE_DIM_PROBE "weaver-engine remote backend: dimension probe"

typedef struct Buf {
    char *p;
    size_t len, cap;
} Buf;

typedef struct Remote {
    char url[1024];         /* base URL without a trailing slash */
    bool openai;
    char model[EMBEDDER_ID_MAX]; /* the OpenAI request's "model" */
    char auth[1100];        /* "Authorization: Bearer ..." or "" */
    int timeout_ms;
    int max_batch;          /* texts per request */
    int max_batch_tokens;   /* approximate tokens per request, 0 = no limit */
    pthread_mutex_t err_lock;
} Remote;

struct EmbedWorkspace {
    Embedder *e;
    CURL *curl;
    struct curl_slist *headers;
    Buf req, resp;
    size_t resp_limit;      /* the current request's response cap */
    bool resp_over;         /* the response passed resp_limit and was cut off */
    char curl_err[CURL_ERROR_SIZE];
    int *order;             /* scratch: text indices in request order */
    int *where;             /* scratch: where[s] = the OpenAI item that holds text s's vector */
    int order_cap;
    unsigned seed;          /* backoff jitter */
};

/* --- small helpers -------------------------------------------------------------------------- */

static void set_err(Embedder *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_err(Embedder *e, const char *fmt, ...)
{
    Remote *r = e->impl;
    char buf[sizeof e->errstr];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (r)
        pthread_mutex_lock(&r->err_lock);
    memcpy(e->errstr, buf, sizeof buf);
    if (r)
        pthread_mutex_unlock(&r->err_lock);
}

static int buf_reserve(Buf *b, size_t extra)
{
    if (b->len + extra + 1 <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + extra + 1)
        cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p)
        return -1;
    b->p = p;
    b->cap = cap;
    return 0;
}

static int buf_add(Buf *b, const char *s, size_t n)
{
    if (buf_reserve(b, n) != 0)
        return -1;
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
    return 0;
}

static int buf_str(Buf *b, const char *s) { return buf_add(b, s, strlen(s)); }

/* A JSON string literal of (s, n): escapes quotes, backslashes and control bytes; other bytes
 * pass through (the job parser already checked UTF-8). */
static int buf_json_string(Buf *b, const char *s, size_t n)
{
    if (buf_reserve(b, n * 6 + 2) != 0)
        return -1;
    char *o = b->p + b->len;
    *o++ = '"';
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            *o++ = '\\';
            *o++ = (char)c;
        } else if (c < 0x20) {
            o += sprintf(o, "\\u%04x", c);
        } else {
            *o++ = (char)c;
        }
    }
    *o++ = '"';
    b->len = (size_t)(o - b->p);
    b->p[b->len] = '\0';
    return 0;
}

static size_t on_body(char *data, size_t size, size_t nmemb, void *ud)
{
    EmbedWorkspace *ws = ud;
    size_t n = size * nmemb;
    if (ws->resp.len + n > ws->resp_limit) {
        ws->resp_over = true;
        return 0; /* CURLE_WRITE_ERROR */
    }
    if (buf_add(&ws->resp, data, n) != 0)
        return 0;
    return n;
}

/* The cap on the answer to an embed request of n texts of dimension dim. */
static size_t embed_response_limit(int n, int dim)
{
    return REMOTE_RESPONSE_SLACK + (size_t)n * (REMOTE_RESPONSE_PER_TEXT + (size_t)dim * REMOTE_RESPONSE_PER_NUMBER);
}

static int approx_tokens(size_t len) { return (int)((len + 3) / 4) + 2; }

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* The service's error message from a JSON error body (TEI {"error": "..."}, OpenAI
 * {"error": {"message": "..."}}), else the start of the body. */
static void error_text(const Buf *body, char *out, size_t len)
{
    out[0] = '\0';
    if (!body->p || !body->len)
        return;
    cJSON *doc = cJSON_ParseWithLength(body->p, body->len);
    const cJSON *err = cJSON_GetObjectItemCaseSensitive(doc, "error");
    if (cJSON_IsObject(err))
        err = cJSON_GetObjectItemCaseSensitive(err, "message");
    if (cJSON_IsString(err))
        snprintf(out, len, "%s", err->valuestring);
    else
        snprintf(out, len, "%.*s", (int)(body->len < 160 ? body->len : 160), body->p);
    cJSON_Delete(doc);
    for (char *p = out; *p; p++)
        if (*p == '\n' || *p == '\r')
            *p = ' ';
}

/* --- HTTP ----------------------------------------------------------------------------------- */

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc = CURLE_FAILED_INIT;
static void curl_init(void) { curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT); }

static int ws_init_handle(Remote *r, EmbedWorkspace *ws)
{
    ws->curl = curl_easy_init();
    if (!ws->curl)
        return -1;
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
    if (h)
        h = curl_slist_append(h, "Accept: application/json");
    if (h)
        h = curl_slist_append(h, "Expect:");
    if (h && r->auth[0])
        h = curl_slist_append(h, r->auth);
    if (!h)
        return -1;
    ws->headers = h;
    ws->seed = (unsigned)time(NULL) ^ (unsigned)(uintptr_t)ws;
    return 0;
}

static void ws_free_all(EmbedWorkspace *ws)
{
    if (!ws)
        return;
    if (ws->curl)
        curl_easy_cleanup(ws->curl);
    curl_slist_free_all(ws->headers);
    free(ws->req.p);
    free(ws->resp.p);
    free(ws->order);
    free(ws->where);
    free(ws);
}

typedef enum HttpOutcome {
    HTTP_OK = 0,        /* 2xx; body in ws->resp */
    HTTP_REJECTED = 1,  /* a non-retryable HTTP status; *status and body set */
    HTTP_FAILED = 2,    /* retries exhausted (transport error or retryable status); why set */
    HTTP_TOO_BIG = 3,   /* the answer passed max_body: not retried; why set */
} HttpOutcome;

/* libcurl's progress callback: a set cancel flag (a stop past its grace) aborts the transfer. */
static int on_progress(void *clientp, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal, curl_off_t ulnow)
{
    (void)dltotal, (void)dlnow, (void)ultotal, (void)ulnow;
    return embedder_cancelled(clientp) ? 1 : 0;
}

static bool retryable(long status) { return status == 408 || status == 429 || (status >= 500 && status <= 599); }

/* One request with retries. body == NULL means GET. The answer is read up to max_body bytes;
 * a longer one is HTTP_TOO_BIG at once, whatever its status. */
static HttpOutcome http_call(Remote *r, EmbedWorkspace *ws, const char *path, const char *body, size_t body_len,
                             size_t max_body, long *status, char *why, size_t whylen)
{
    char url[1200];
    snprintf(url, sizeof url, "%s%s", r->url, path);
    CURL *c = ws->curl;
    long backoff = REMOTE_BACKOFF_FIRST_MS;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int attempt = 1;; attempt++) {
        curl_easy_reset(c);
        ws->resp.len = 0;
        if (ws->resp.p)
            ws->resp.p[0] = '\0';
        ws->resp_limit = max_body;
        ws->resp_over = false;
        ws->curl_err[0] = '\0';
        curl_easy_setopt(c, CURLOPT_URL, url);
        curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
        curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)r->timeout_ms);
        curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, (long)(r->timeout_ms < 10000 ? r->timeout_ms : 10000));
        curl_easy_setopt(c, CURLOPT_HTTPHEADER, ws->headers);
        curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
        curl_easy_setopt(c, CURLOPT_WRITEDATA, ws);
        curl_easy_setopt(c, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)max_body); /* by Content-Length */
        curl_easy_setopt(c, CURLOPT_ERRORBUFFER, ws->curl_err);
        curl_easy_setopt(c, CURLOPT_TCP_KEEPALIVE, 1L);
        curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_progress);
        curl_easy_setopt(c, CURLOPT_XFERINFODATA, ws->e);
        curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
        if (body) {
            curl_easy_setopt(c, CURLOPT_POST, 1L);
            curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
            curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
        } else {
            curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
        }
        CURLcode cc = curl_easy_perform(c);
        long code = 0;
        curl_off_t retry_after = 0;
        if (ws->resp_over || cc == CURLE_FILESIZE_EXCEEDED) {
            *status = 0;
            curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, status);
            snprintf(why, whylen, "%s %.100s: the answer (HTTP %ld) is larger than %zu bytes", body ? "POST" : "GET",
                     url, *status, max_body);
            return HTTP_TOO_BIG;
        }
        if (cc == CURLE_OK) {
            curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
            curl_easy_getinfo(c, CURLINFO_RETRY_AFTER, &retry_after);
            *status = code;
            if (code >= 200 && code < 300)
                return HTTP_OK;
            if (!retryable(code)) {
                char msg[200];
                error_text(&ws->resp, msg, sizeof msg);
                snprintf(why, whylen, "%s %.100s: HTTP %ld%s%.120s", body ? "POST" : "GET", url, code, msg[0] ? ": " : "",
                         msg);
                return HTTP_REJECTED;
            }
            char msg[200];
            error_text(&ws->resp, msg, sizeof msg);
            snprintf(why, whylen, "%s %.100s: HTTP %ld%s%.120s", body ? "POST" : "GET", url, code, msg[0] ? ": " : "", msg);
        } else {
            *status = 0;
            snprintf(why, whylen, "%s %.100s: %.140s", body ? "POST" : "GET", url,
                     ws->curl_err[0] ? ws->curl_err : curl_easy_strerror(cc));
        }
        long wait = backoff + (long)(rand_r(&ws->seed) % (unsigned)(backoff / 4 + 1));
        if (retry_after > 0)
            wait = retry_after * 1000 > REMOTE_BACKOFF_MAX_MS ? REMOTE_BACKOFF_MAX_MS : (long)retry_after * 1000;
        clock_gettime(CLOCK_MONOTONIC, &t1);
        long elapsed = (long)(t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
        if (attempt >= REMOTE_MAX_ATTEMPTS || elapsed + wait > REMOTE_RETRY_WINDOW_MS || embedder_cancelled(ws->e)) {
            size_t n = strlen(why);
            snprintf(why + n, whylen - n, " (gave up after %d attempts in %.1f s)", attempt, elapsed / 1000.0);
            metrics_count_remote_failure();
            return HTTP_FAILED;
        }
        metrics_count_remote_retry();
        for (long slept = 0; slept < wait && !embedder_cancelled(ws->e); slept += 20)
            sleep_ms(wait - slept < 20 ? wait - slept : 20);
        backoff = backoff * 2 > REMOTE_BACKOFF_MAX_MS ? REMOTE_BACKOFF_MAX_MS : backoff * 2;
    }
}

/* --- requests ------------------------------------------------------------------------------- */

static int build_body(Remote *r, EmbedWorkspace *ws, const EmbedText *texts, const int *idx, int n, bool truncate)
{
    Buf *b = &ws->req;
    b->len = 0;
    int bad = 0;
    if (r->openai) {
        bad |= buf_str(b, "{\"model\":");
        bad |= buf_json_string(b, r->model, strlen(r->model));
        bad |= buf_str(b, ",\"encoding_format\":\"float\",\"input\":[");
    } else {
        bad |= buf_str(b, truncate ? "{\"truncate\":true,\"normalize\":false,\"inputs\":["
                                   : "{\"truncate\":false,\"normalize\":false,\"inputs\":[");
    }
    for (int i = 0; i < n && !bad; i++) {
        if (i)
            bad |= buf_str(b, ",");
        bad |= buf_json_string(b, texts[idx[i]].text, texts[idx[i]].len);
    }
    bad |= buf_str(b, "]}");
    return bad ? -1 : 0;
}

static const char *json_type(const cJSON *v)
{
    if (cJSON_IsString(v))
        return "a string";
    if (cJSON_IsArray(v))
        return "an array";
    if (cJSON_IsObject(v))
        return "an object";
    if (cJSON_IsBool(v))
        return "a boolean";
    if (cJSON_IsNull(v))
        return "null";
    return cJSON_IsNumber(v) ? "a number" : "not JSON";
}

/* Checks that vec is an array of exactly dim finite numbers that are finite as floats too, and
 * copies it into out (when out is not NULL). On failure says why, naming element and value. */
static int take_vector(const cJSON *vec, float *out, int dim, char *why, size_t whylen)
{
    if (!cJSON_IsArray(vec)) {
        snprintf(why, whylen, "%s, not an array of numbers", json_type(vec));
        return -1;
    }
    int n = cJSON_GetArraySize(vec);
    if (n != dim) {
        snprintf(why, whylen, "%d numbers, not the %d of the model's dimension", n, dim);
        return -1;
    }
    int i = 0;
    const cJSON *v;
    cJSON_ArrayForEach(v, vec)
    {
        if (!cJSON_IsNumber(v)) {
            snprintf(why, whylen, "element %d is %s, not a number", i, json_type(v));
            return -1;
        }
        /* cJSON reads 1e999 as inf; 1e39 is a finite double but an infinite float. */
        float f = (float)v->valuedouble;
        if (!isfinite(f)) {
            snprintf(why, whylen, "element %d is %g, not a finite float", i, v->valuedouble);
            return -1;
        }
        if (out)
            out[i] = f;
        i++;
    }
    return 0;
}

/* Up to 24 bytes at p as printable ASCII, for an error message. */
static void snippet(char *dst, size_t len, const char *p, const char *end)
{
    size_t k = 0;
    for (; k + 1 < len && k < 24 && p + k < end; k++) {
        unsigned char c = (unsigned char)p[k];
        dst[k] = c >= 0x20 && c < 0x7f && c != '"' ? (char)c : '?';
    }
    dst[k] = '\0';
}

/* Parses the answer to an embed request for texts idx[0..n) and puts text s's vector at
 * out[idx[s] * dim] (out may be NULL). *dim_io: the dimension, 0 = learn it from the first vector
 * (the probe). where: n ints of scratch (OpenAI).
 * Returns -1 when the answer as a whole is unusable (why says why; no status is touched), else
 * the number of texts whose vector was bad: status[idx[s]] is EMBED_OK or EMBED_ERR_BACKEND
 * for every s, and why describes the last bad vector. */
static int parse_vectors(Remote *r, const Buf *resp, const int *idx, int n, int *where, float *out, int *dim_io,
                         EmbedStatus *status, char *why, size_t whylen)
{
    const char *text = resp->p ? resp->p : "";
    const char *stop = NULL;
    cJSON *doc = cJSON_ParseWithLengthOpts(text, resp->len, &stop, false);
    int rc = -1;
    if (!doc) {
        char near[32];
        size_t at = stop && stop >= text && stop <= text + resp->len ? (size_t)(stop - text) : 0;
        snippet(near, sizeof near, text + at, text + resp->len);
        snprintf(why, whylen, "the service's answer is not JSON (at byte %zu of %zu: \"%s\")", at, resp->len, near);
        goto out;
    }
    const cJSON *list = r->openai ? cJSON_GetObjectItemCaseSensitive(doc, "data") : doc;
    if (!cJSON_IsArray(list)) {
        snprintf(why, whylen, "the service's answer %s", r->openai ? "has no \"data\" list" : "is not a list");
        goto out;
    }
    if (cJSON_GetArraySize(list) != n) {
        snprintf(why, whylen, "the service returned %d vectors for %d texts", cJSON_GetArraySize(list), n);
        goto out;
    }
    /* OpenAI: which item belongs to which text is "index" alone. Any doubt about it fails the
     * whole answer: a vector put at the wrong text is worse than no vector. */
    if (r->openai) {
        for (int s = 0; s < n; s++)
            where[s] = -1;
        int k = 0;
        const cJSON *item;
        cJSON_ArrayForEach(item, list)
        {
            const cJSON *ix = cJSON_GetObjectItemCaseSensitive(item, "index");
            if (!cJSON_IsNumber(ix) || ix->valuedouble != floor(ix->valuedouble)) {
                snprintf(why, whylen, "data[%d] has no integer \"index\" (it is %s)", k,
                         !ix ? "missing" : cJSON_IsNumber(ix) ? "a fraction" : json_type(ix));
                goto out;
            }
            if (ix->valuedouble < 0 || ix->valuedouble >= n) {
                snprintf(why, whylen, "data[%d] has index %g, outside [0, %d)", k, ix->valuedouble, n);
                goto out;
            }
            int s = (int)ix->valuedouble;
            if (where[s] >= 0) {
                snprintf(why, whylen, "index %d appears twice (data[%d] and data[%d])", s, where[s], k);
                goto out;
            }
            where[s] = k;
            k++;
        }
    }
    int bad = 0, k = 0;
    const cJSON *item;
    cJSON_ArrayForEach(item, list)
    {
        int s = r->openai ? (int)cJSON_GetObjectItemCaseSensitive(item, "index")->valuedouble : k;
        const cJSON *vec = r->openai ? cJSON_GetObjectItemCaseSensitive(item, "embedding") : item;
        if (*dim_io == 0)
            *dim_io = cJSON_IsArray(vec) && cJSON_GetArraySize(vec) > 0 ? cJSON_GetArraySize(vec) : -1;
        char what[160];
        if (*dim_io < 1) {
            snprintf(why, whylen, "the service's vector %d %s", s,
                     cJSON_IsArray(vec) ? "is empty" : "is not an array of numbers");
            goto out;
        }
        float *dst = out ? out + (size_t)idx[s] * (size_t)*dim_io : NULL;
        if (take_vector(vec, dst, *dim_io, what, sizeof what) == 0) {
            status[idx[s]] = EMBED_OK;
        } else {
            status[idx[s]] = EMBED_ERR_BACKEND;
            snprintf(why, whylen, "the service's vector %d (of %d in the request): %s", s, n, what);
            bad++;
        }
        k++;
    }
    rc = bad;
out:
    cJSON_Delete(doc);
    return rc;
}

typedef struct EmbedCall {
    Embedder *e;
    EmbedWorkspace *ws;
    const EmbedText *texts;
    float *out;
    int *ntokens;
    EmbedStatus *status;
    bool unreachable;       /* a request exhausted its retries: fail the rest fast */
    char unreachable_why[200];
} EmbedCall;

static void fail_texts(EmbedCall *c, const int *idx, int n, EmbedStatus st)
{
    for (int i = 0; i < n; i++)
        c->status[idx[i]] = st;
}

/* Embeds texts idx[0..n) (all with the same truncate flag) in one request, splitting on
 * client errors. */
static void embed_request(EmbedCall *c, const int *idx, int n, bool truncate)
{
    Remote *r = c->e->impl;
    char why[sizeof c->e->errstr];
    if (c->unreachable) {
        fail_texts(c, idx, n, EMBED_ERR_BACKEND);
        return;
    }
    if (build_body(r, c->ws, c->texts, idx, n, truncate) != 0) {
        set_err(c->e, "remote embedder: out of memory building a request");
        fail_texts(c, idx, n, EMBED_ERR_BACKEND);
        return;
    }
    long status = 0;
    int dim = c->e->info.dim;
    HttpOutcome o = http_call(r, c->ws, r->openai ? "/v1/embeddings" : "/embed", c->ws->req.p, c->ws->req.len,
                              embed_response_limit(n, dim), &status, why, sizeof why);
    if (o == HTTP_OK) {
        /* A bad answer is not retried: a service that sent it once will most likely send it
         * again. Vectors that can be told apart fail alone; the rest of the answer still counts. */
        int bad = parse_vectors(r, &c->ws->resp, idx, n, c->ws->where, c->out, &dim, c->status, why, sizeof why);
        if (bad != 0)
            set_err(c->e, "remote embedder %.160s: %.200s", r->url, why);
        if (bad < 0)
            fail_texts(c, idx, n, EMBED_ERR_BACKEND);
        return;
    }
    if (o == HTTP_TOO_BIG) {
        set_err(c->e, "remote embedder: %s (the limit for %d vectors of %d numbers); not retried", why, n, dim);
        fail_texts(c, idx, n, EMBED_ERR_BACKEND);
        return;
    }
    if (o == HTTP_FAILED) {
        c->unreachable = true;
        set_err(c->e, "remote embedder: %s", why);
        fail_texts(c, idx, n, EMBED_ERR_BACKEND);
        return;
    }
    /* Rejected: authentication problems concern every text; anything else is narrowed down. */
    if (n > 1 && status != 401 && status != 403 && status != 404) {
        int half = n / 2;
        embed_request(c, idx, half, truncate);
        embed_request(c, idx + half, n - half, truncate);
        return;
    }
    set_err(c->e, "remote embedder: %s", why);
    bool too_long = n == 1 && !truncate && (status == 400 || status == 413 || status == 422);
    fail_texts(c, idx, n, too_long ? EMBED_ERR_TOO_LONG : EMBED_ERR_BACKEND);
}

static int remote_embed(Embedder *e, EmbedWorkspace *ws, const EmbedText *texts, int n, float *out, int *ntokens,
                        EmbedStatus *status)
{
    Remote *r = e->impl;
    if (n <= 0)
        return 0;
    if (ws->order_cap < n) {
        int *o = realloc(ws->order, (size_t)n * sizeof *o);
        if (o)
            ws->order = o;
        int *w = o ? realloc(ws->where, (size_t)n * sizeof *w) : NULL;
        if (!w) {
            set_err(e, "remote embedder: out of memory");
            return -1;
        }
        ws->where = w;
        ws->order_cap = n;
    }
    /* Texts that may be truncated first, then those that may not: TEI's flag is per request. */
    int k = 0;
    for (int pass = 0; pass < 2; pass++)
        for (int i = 0; i < n; i++)
            if (texts[i].truncate == (pass == 0))
                ws->order[k++] = i;
    for (int i = 0; i < n; i++) {
        int t = approx_tokens(texts[i].len);
        ntokens[i] = t < e->info.max_seq_len ? t : e->info.max_seq_len;
        status[i] = EMBED_ERR_BACKEND;
    }
    EmbedCall c = {.e = e, .ws = ws, .texts = texts, .out = out, .ntokens = ntokens, .status = status};
    for (int start = 0; start < n;) {
        bool trunc = texts[ws->order[start]].truncate;
        int count = 0, tokens = 0;
        while (start + count < n && count < r->max_batch) {
            const EmbedText *t = &texts[ws->order[start + count]];
            int tk = approx_tokens(t->len);
            if (t->truncate != trunc)
                break;
            if (trunc && tk > e->info.max_seq_len)
                tk = e->info.max_seq_len;
            if (count > 0 && r->max_batch_tokens > 0 && tokens + tk > r->max_batch_tokens)
                break;
            tokens += tk;
            count++;
        }
        if (embedder_cancelled(e))
            return EMBEDDER_ECANCELED;
        embed_request(&c, ws->order + start, count, trunc);
        start += count;
    }
    return embedder_cancelled(e) ? EMBEDDER_ECANCELED : 0;
}

/* --- open ----------------------------------------------------------------------------------- */

static int read_token(const char *path, char *out, size_t len, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "cannot read embedder.token_file %s: %s", path, strerror(errno));
        return -1;
    }
    size_t n = fread(out, 1, len - 1, f);
    bool more = fgetc(f) != EOF;
    fclose(f);
    out[n] = '\0';
    while (n > 0 && (out[n - 1] == '\n' || out[n - 1] == '\r' || out[n - 1] == ' ' || out[n - 1] == '\t'))
        out[--n] = '\0';
    if (more) {
        snprintf(err, errlen, "embedder.token_file %s: the token is longer than %zu bytes", path, len - 1);
        return -1;
    }
    if (n == 0) {
        snprintf(err, errlen, "embedder.token_file %s is empty", path);
        return -1;
    }
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)out[i] < 0x21 || out[i] == 0x7f) {
            snprintf(err, errlen, "embedder.token_file %s: the token has whitespace or control characters", path);
            return -1;
        }
    return 0;
}

static int json_int(const cJSON *o, const char *key, int def)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsNumber(v) && v->valuedouble >= 1 && v->valuedouble <= 1e9 ? (int)v->valuedouble : def;
}

static int open_tei(Embedder *e, Remote *r, EmbedWorkspace *ws, const EmbedderConfig *cfg, char *err, size_t errlen)
{
    long status = 0;
    if (http_call(r, ws, "/info", NULL, 0, REMOTE_MAX_INFO_RESPONSE, &status, err, errlen) != HTTP_OK)
        return -1;
    cJSON *info = cJSON_ParseWithLength(ws->resp.p ? ws->resp.p : "", ws->resp.len);
    if (!cJSON_IsObject(info)) {
        snprintf(err, errlen, "GET %.160s/info: the answer is not a JSON object", r->url);
        cJSON_Delete(info);
        return -1;
    }
    int rc = -1;
    const cJSON *mid = cJSON_GetObjectItemCaseSensitive(info, "model_id");
    if (cfg->model_id && cfg->model_id[0])
        snprintf(e->info.model_id, sizeof e->info.model_id, "%s", cfg->model_id);
    else if (cJSON_IsString(mid) && mid->valuestring[0])
        snprintf(e->info.model_id, sizeof e->info.model_id, "%s", mid->valuestring);
    else {
        snprintf(err, errlen, "GET %.160s/info has no model_id; set embedder.model_id", r->url);
        goto out;
    }
    e->info.max_seq_len = json_int(info, "max_input_length", REMOTE_DEFAULT_MAX_SEQ);
    int mcb = json_int(info, "max_client_batch_size", REMOTE_OPENAI_MAX_BATCH);
    if (mcb < r->max_batch)
        r->max_batch = mcb;
    r->max_batch_tokens = json_int(info, "max_batch_tokens", 0);
    e->info.pooling = EMBED_POOL_MEAN;
    const cJSON *mt = cJSON_GetObjectItemCaseSensitive(info, "model_type");
    if (cJSON_IsObject(mt)) {
        const cJSON *emb = cJSON_GetObjectItemCaseSensitive(mt, "embedding");
        if (!emb) {
            snprintf(err, errlen, "GET %.160s/info: the service does not serve an embedding model (model_type %s)",
                     r->url, mt->child && mt->child->string ? mt->child->string : "?");
            goto out;
        }
        const cJSON *pool = cJSON_GetObjectItemCaseSensitive(emb, "pooling");
        if (cJSON_IsString(pool)) {
            if (strcmp(pool->valuestring, "mean") == 0)
                e->info.pooling = EMBED_POOL_MEAN;
            else if (strcmp(pool->valuestring, "cls") == 0)
                e->info.pooling = EMBED_POOL_CLS;
            else if (strcmp(pool->valuestring, "max") == 0)
                e->info.pooling = EMBED_POOL_MAX;
            else if (strcmp(pool->valuestring, "last_token") == 0)
                e->info.pooling = EMBED_POOL_LAST;
            else {
                snprintf(err, errlen, "GET %.160s/info: pooling \"%s\" is not one the engine supports (mean, cls, max, last_token)",
                         r->url, pool->valuestring);
                goto out;
            }
        }
    }
    rc = 0;
out:
    cJSON_Delete(info);
    return rc;
}

static int open_openai(Embedder *e, Remote *r, EmbedWorkspace *ws, const EmbedderConfig *cfg, char *err,
                       size_t errlen)
{
    long status = 0;
    if (http_call(r, ws, "/v1/models", NULL, 0, REMOTE_MAX_INFO_RESPONSE, &status, err, errlen) != HTTP_OK)
        return -1;
    cJSON *doc = cJSON_ParseWithLength(ws->resp.p ? ws->resp.p : "", ws->resp.len);
    const cJSON *data = cJSON_GetObjectItemCaseSensitive(doc, "data");
    int rc = -1;
    if (!cJSON_IsArray(data)) {
        snprintf(err, errlen, "GET %.160s/v1/models: the answer has no \"data\" list", r->url);
        goto out;
    }
    const char *want = cfg->model_id && cfg->model_id[0] ? cfg->model_id : NULL;
    const cJSON *found = NULL, *m;
    char names[256] = "";
    int count = 0;
    cJSON_ArrayForEach(m, data)
    {
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(m, "id");
        if (!cJSON_IsString(id))
            continue;
        size_t nl = strlen(names);
        snprintf(names + nl, sizeof names - nl, "%s%s", count ? ", " : "", id->valuestring);
        count++;
        if (want ? strcmp(id->valuestring, want) == 0 : count == 1)
            found = m;
    }
    if (want && !found) {
        snprintf(err, errlen, "GET %.160s/v1/models does not list embedder.model_id \"%s\" (it lists: %s)", r->url, want,
                 count ? names : "nothing");
        goto out;
    }
    if (!want && count != 1) {
        snprintf(err, errlen, "GET %.160s/v1/models lists %d models (%s); set embedder.model_id to the one to use",
                 r->url, count, names);
        goto out;
    }
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(found, "id");
    snprintf(r->model, sizeof r->model, "%s", id->valuestring);
    snprintf(e->info.model_id, sizeof e->info.model_id, "%s", id->valuestring);
    e->info.max_seq_len = json_int(found, "max_model_len", REMOTE_DEFAULT_MAX_SEQ);
    e->info.pooling = EMBED_POOL_MEAN;
    rc = 0;
out:
    cJSON_Delete(doc);
    return rc;
}

static int remote_open(Embedder *e, const EmbedderConfig *cfg, const BatchConfig *batch)
{
    char err[sizeof e->errstr] = "";
    if (!cfg->url || !cfg->url[0]) {
        snprintf(e->errstr, sizeof e->errstr, "embedder.url is empty: the remote backend needs the service's URL");
        return -1;
    }
    pthread_once(&curl_once, curl_init);
    if (curl_init_rc != CURLE_OK) {
        snprintf(e->errstr, sizeof e->errstr, "libcurl initialisation failed: %s", curl_easy_strerror(curl_init_rc));
        return -1;
    }
    Remote *r = calloc(1, sizeof *r);
    if (!r) {
        snprintf(e->errstr, sizeof e->errstr, "out of memory");
        return -1;
    }
    pthread_mutex_init(&r->err_lock, NULL);
    size_t ul = strlen(cfg->url);
    while (ul > 0 && cfg->url[ul - 1] == '/')
        ul--;
    if (ul >= sizeof r->url) {
        snprintf(e->errstr, sizeof e->errstr, "embedder.url is too long");
        goto fail_free;
    }
    memcpy(r->url, cfg->url, ul);
    r->url[ul] = '\0';
    r->openai = cfg->api && strcmp(cfg->api, "openai") == 0;
    r->timeout_ms = cfg->timeout_ms > 0 ? cfg->timeout_ms : 30000;
    r->max_batch = REMOTE_OPENAI_MAX_BATCH;
    (void)batch;
    if (cfg->token_file && cfg->token_file[0]) {
        char token[1024];
        if (read_token(cfg->token_file, token, sizeof token, err, sizeof err) != 0)
            goto fail_err;
        snprintf(r->auth, sizeof r->auth, "Authorization: Bearer %s", token);
        memset(token, 0, sizeof token);
    }
    EmbedWorkspace *ws = calloc(1, sizeof *ws);
    if (!ws || ws_init_handle(r, ws) != 0) {
        ws_free_all(ws);
        snprintf(err, sizeof err, "cannot create an HTTP handle");
        goto fail_err;
    }
    ws->e = e;
    int rc = r->openai ? open_openai(e, r, ws, cfg, err, sizeof err) : open_tei(e, r, ws, cfg, err, sizeof err);
    if (rc == 0) {
        /* The dimension comes from a real request, the same path every job takes. */
        EmbedText t = {REMOTE_DIM_PROBE, strlen(REMOTE_DIM_PROBE), true};
        int idx = 0, where = 0, dim = 0;
        EmbedStatus st = EMBED_ERR_BACKEND;
        char why[200];
        long status = 0;
        if (build_body(r, ws, &t, &idx, 1, true) != 0) {
            snprintf(err, sizeof err, "out of memory");
            rc = -1;
        } else if (http_call(r, ws, r->openai ? "/v1/embeddings" : "/embed", ws->req.p, ws->req.len,
                             REMOTE_MAX_PROBE_RESPONSE, &status, why, sizeof why) != HTTP_OK) {
            snprintf(err, sizeof err, "probe request: %.200s", why);
            rc = -1;
        } else if (parse_vectors(r, &ws->resp, &idx, 1, &where, NULL, &dim, &st, why, sizeof why) != 0) {
            snprintf(err, sizeof err, "probe request: %.200s", why);
            rc = -1;
        }
        e->info.dim = dim;
    }
    ws_free_all(ws);
    if (rc != 0)
        goto fail_err;
    e->info.snapshot_hash[0] = '\0';
    e->info.normalize = true;
    if (e->info.max_seq_len < 1)
        e->info.max_seq_len = REMOTE_DEFAULT_MAX_SEQ;
    e->impl = r;
    return 0;
fail_err:
    snprintf(e->errstr, sizeof e->errstr, "%s", err);
fail_free:
    memset(r->auth, 0, sizeof r->auth);
    pthread_mutex_destroy(&r->err_lock);
    free(r);
    return -1;
}

static void remote_close(Embedder *e)
{
    Remote *r = e->impl;
    if (!r)
        return;
    memset(r->auth, 0, sizeof r->auth);
    pthread_mutex_destroy(&r->err_lock);
    free(r);
    e->impl = NULL;
}

static EmbedWorkspace *remote_ws_new(Embedder *e)
{
    EmbedWorkspace *ws = calloc(1, sizeof *ws);
    if (!ws)
        return NULL;
    ws->e = e;
    if (ws_init_handle(e->impl, ws) != 0 || buf_reserve(&ws->req, 1 << 16) != 0 ||
        buf_reserve(&ws->resp, 1 << 16) != 0) {
        ws_free_all(ws);
        return NULL;
    }
    return ws;
}

static void remote_ws_free(EmbedWorkspace *ws) { ws_free_all(ws); }

static int remote_count(Embedder *e, EmbedWorkspace *ws, const char *text, size_t len)
{
    (void)e, (void)ws, (void)text;
    return approx_tokens(len);
}

const EmbedderOps embedder_remote_ops = {
    .name = "remote",
    .open = remote_open,
    .close = remote_close,
    .workspace_new = remote_ws_new,
    .workspace_free = remote_ws_free,
    .count_tokens = remote_count,
    .embed = remote_embed,
};
