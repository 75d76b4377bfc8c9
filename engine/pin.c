/* pin.c: the cohort pin's identity and comparison (backend-agnostic), and the daemon's pin
 * gate. Storage is queue/pin.c; this file decides what "the same embedder" means:
 * identity fields equal, probe vectors within cosine PIN_MIN_COSINE. A field one side cannot
 * know (snapshot_hash "" from a remote service) is listed as not compared, never guessed.
 * Must not exit; only pin_gate logs. */
#include "engine/pin.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/engine.h"
#include "engine/log.h"

const char *pin_pooling_name(EmbedPooling p)
{
    switch (p) {
    case EMBED_POOL_MEAN: return "mean";
    case EMBED_POOL_CLS: return "cls";
    case EMBED_POOL_MAX: return "max";
    case EMBED_POOL_LAST: return "last";
    }
    return "unknown";
}

static long long wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int pin_identity(const EmbedderInfo *info, const float *probe, const char *created_by, QueuePin *out)
{
    memset(out, 0, sizeof *out);
    snprintf(out->model_id, sizeof out->model_id, "%s", info->model_id);
    snprintf(out->snapshot_hash, sizeof out->snapshot_hash, "%s", info->snapshot_hash);
    out->dim = info->dim;
    snprintf(out->pooling, sizeof out->pooling, "%s", pin_pooling_name(info->pooling));
    out->normalize = info->normalize;
    out->max_seq_len = info->max_seq_len;
    snprintf(out->probe_text, sizeof out->probe_text, "%s", PIN_PROBE_TEXT);
    snprintf(out->created_by, sizeof out->created_by, "%s", created_by ? created_by : "");
    out->created_at = wall_ms();
    out->probe = malloc((size_t)info->dim * sizeof(float));
    if (!out->probe)
        return -1;
    memcpy(out->probe, probe, (size_t)info->dim * sizeof(float));
    out->probe_dim = info->dim;
    return 0;
}

double pin_cosine(const float *a, const float *b, int n)
{
    double ab = 0.0, aa = 0.0, bb = 0.0;
    for (int i = 0; i < n; i++) {
        ab += (double)a[i] * b[i];
        aa += (double)a[i] * a[i];
        bb += (double)b[i] * b[i];
    }
    if (aa <= 0.0 || bb <= 0.0)
        return 0.0;
    return ab / (sqrt(aa) * sqrt(bb));
}

static void add_diff(PinReport *r, const char *field, const char *pinned, const char *found)
{
    if (r->n_diffs >= PIN_MAX_DIFFS)
        return;
    PinDiff *d = &r->diffs[r->n_diffs++];
    snprintf(d->field, sizeof d->field, "%s", field);
    snprintf(d->pinned, sizeof d->pinned, "%s", pinned);
    snprintf(d->found, sizeof d->found, "%s", found);
}

static void add_int_diff(PinReport *r, const char *field, int pinned, int found)
{
    char a[24], b[24];
    snprintf(a, sizeof a, "%d", pinned);
    snprintf(b, sizeof b, "%d", found);
    add_diff(r, field, a, b);
}

static void add_not_compared(PinReport *r, const char *field)
{
    size_t n = strlen(r->not_compared);
    snprintf(r->not_compared + n, sizeof r->not_compared - n, "%s%s", n ? "," : "", field);
}

int pin_compare(const QueuePin *pinned, const QueuePin *found, PinReport *out)
{
    out->n_diffs = 0;
    out->not_compared[0] = '\0';
    out->cosine = -2.0;
    if (strcmp(pinned->model_id, found->model_id) != 0)
        add_diff(out, "model_id", pinned->model_id, found->model_id);
    if (!pinned->snapshot_hash[0] || !found->snapshot_hash[0])
        add_not_compared(out, "snapshot_hash");
    else if (strcmp(pinned->snapshot_hash, found->snapshot_hash) != 0)
        add_diff(out, "snapshot_hash", pinned->snapshot_hash, found->snapshot_hash);
    if (pinned->dim != found->dim)
        add_int_diff(out, "dim", pinned->dim, found->dim);
    if (strcmp(pinned->pooling, found->pooling) != 0)
        add_diff(out, "pooling", pinned->pooling, found->pooling);
    if (pinned->normalize != found->normalize)
        add_diff(out, "normalize", pinned->normalize ? "true" : "false", found->normalize ? "true" : "false");
    if (pinned->max_seq_len != found->max_seq_len)
        add_int_diff(out, "max_seq_len", pinned->max_seq_len, found->max_seq_len);
    if (pinned->probe_text[0] && strcmp(pinned->probe_text, found->probe_text) != 0)
        add_diff(out, "probe_text", pinned->probe_text, found->probe_text);
    if (!pinned->probe || !found->probe || pinned->probe_dim != found->probe_dim) {
        char a[48], b[48];
        snprintf(a, sizeof a, "%d floats", pinned->probe ? pinned->probe_dim : 0);
        snprintf(b, sizeof b, "%d floats", found->probe ? found->probe_dim : 0);
        add_diff(out, "probe", a, b);
    } else {
        out->cosine = pin_cosine(pinned->probe, found->probe, pinned->probe_dim);
        /* NaN in a probe never passes (the comparison below is false for NaN). */
        if (!(out->cosine >= PIN_MIN_COSINE)) {
            char b[64];
            snprintf(b, sizeof b, "cosine %.6f to it (needs >= %g)", out->cosine, PIN_MIN_COSINE);
            add_diff(out, "probe", "(stored vector)", b);
        }
    }
    out->match = out->n_diffs == 0;
    return out->n_diffs;
}

static void report_start(Queue *q, const char *cohort, PinReport *out)
{
    memset(out, 0, sizeof *out);
    out->cosine = -2.0;
    /* A cohort too long for a key leaves it ""; the pin call after this reports why. */
    (void)queue_pin_key(q, cohort, out->key, sizeof out->key);
}

static void report_stored(PinReport *out, const QueuePin *stored)
{
    out->created_at = stored->created_at;
    snprintf(out->created_by, sizeof out->created_by, "%s", stored->created_by);
}

int pin_verify_or_create(Queue *q, const char *cohort, const EmbedderInfo *info, const float *probe,
                         const char *created_by, PinReport *out)
{
    report_start(q, cohort, out);
    QueuePin mine, stored = {0};
    if (pin_identity(info, probe, created_by, &mine) != 0)
        return QUEUE_ENOMEM;
    bool created = false;
    int rc = queue_pin_create(q, cohort, &mine, &stored, &created);
    if (rc == QUEUE_OK) {
        report_stored(out, &stored);
        out->created = created;
        /* Compare even when created: what Redis holds must be what we wrote. */
        pin_compare(&stored, &mine, out);
        rc = out->match ? 0 : PIN_EXIT_MISMATCH;
    }
    queue_pin_clear(&mine);
    queue_pin_clear(&stored);
    return rc;
}

int pin_verify(Queue *q, const char *cohort, const EmbedderInfo *info, const float *probe, PinReport *out)
{
    report_start(q, cohort, out);
    QueuePin mine, stored = {0};
    if (pin_identity(info, probe, NULL, &mine) != 0)
        return QUEUE_ENOMEM;
    int rc = queue_pin_get(q, cohort, &stored);
    if (rc == 1) {
        report_stored(out, &stored);
        pin_compare(&stored, &mine, out);
        rc = out->match ? 0 : PIN_EXIT_MISMATCH;
    } else if (rc == 0) {
        rc = 1;
    }
    queue_pin_clear(&mine);
    queue_pin_clear(&stored);
    return rc;
}

void pin_report_print(const PinReport *r, FILE *out)
{
    for (int i = 0; i < r->n_diffs; i++)
        fprintf(out, "  %s: pinned %s, found %s\n", r->diffs[i].field, r->diffs[i].pinned, r->diffs[i].found);
}

int pin_probe(Embedder *e, float *out, char *err, size_t errlen)
{
    EmbedWorkspace *ws = embedder_workspace_new(e);
    if (!ws) {
        snprintf(err, errlen, "probe: cannot allocate an embedder workspace");
        return -1;
    }
    EmbedText t = {PIN_PROBE_TEXT, strlen(PIN_PROBE_TEXT), true};
    int ntokens = 0;
    EmbedStatus st = EMBED_ERR_BACKEND;
    int rc = embedder_embed(e, ws, &t, 1, out, &ntokens, &st);
    embedder_workspace_free(e, ws);
    if (rc != 0 || st != EMBED_OK) {
        snprintf(err, errlen, "probe: embedding the probe text failed: %s",
                 embedder_errstr(e)[0] ? embedder_errstr(e) : "no reason given");
        return -1;
    }
    int dim = embedder_info(e)->dim;
    for (int i = 0; i < dim; i++) {
        if (!isfinite(out[i])) {
            snprintf(err, errlen, "probe: the probe vector has a non-finite value at [%d]", i);
            return -1;
        }
    }
    return 0;
}

int pin_gate(Queue *admin, Embedder *e, const char *cohort, char *msg, size_t len)
{
    const EmbedderInfo *info = embedder_info(e);
    float *probe = malloc((size_t)info->dim * sizeof(float));
    if (!probe) {
        snprintf(msg, len, "out of memory");
        return ENGINE_EXIT_SOFTWARE;
    }
    char err[512];
    if (pin_probe(e, probe, err, sizeof err) != 0) {
        snprintf(msg, len, "%s", err);
        free(probe);
        return ENGINE_EXIT_MODEL;
    }
    PinReport rep;
    int rc = pin_verify_or_create(admin, cohort, info, probe, queue_consumer(admin), &rep);
    free(probe);
    if (rc == QUEUE_ECONN) {
        snprintf(msg, len, "cohort pin %s: %s", rep.key, queue_errstr(admin));
        return ENGINE_EXIT_UNAVAILABLE;
    }
    if (rc < 0) { /* Redis answered, but not with a pin (another key type, a malformed hash) */
        snprintf(msg, len, "cohort pin: %s; refusing to start", queue_errstr(admin));
        return rc == QUEUE_ENOMEM ? ENGINE_EXIT_SOFTWARE : PIN_EXIT_MISMATCH;
    }
    if (rc == 0) {
        if (rep.created)
            LOG_I("cohort \"%s\": first engine of the cohort, pinned %s (model %s, dim %d)", cohort, rep.key,
                  info->model_id, info->dim);
        else
            LOG_I("cohort \"%s\": embedder matches the pin %s (probe cosine %.7f%s%s)", cohort, rep.key, rep.cosine,
                  rep.not_compared[0] ? "; not compared: " : "", rep.not_compared);
        msg[0] = '\0';
        return 0;
    }
    LOG_E("cohort \"%s\": this embedder is not the one the cohort is pinned to (%s, created by %s):", cohort,
          rep.key, rep.created_by[0] ? rep.created_by : "?");
    for (int i = 0; i < rep.n_diffs; i++)
        LOG_E("  %s: pinned %s, found %s", rep.diffs[i].field, rep.diffs[i].pinned, rep.diffs[i].found);
    size_t n = (size_t)snprintf(msg, len, "cohort pin mismatch (");
    for (int i = 0; i < rep.n_diffs && n < len; i++)
        n += (size_t)snprintf(msg + n, len - n, "%s%s", i ? ", " : "", rep.diffs[i].field);
    if (n < len)
        snprintf(msg + n, len - n,
                 " differ%s); refusing to start. `weaver-engine pin show --cohort %s` prints the pin; use another "
                 "pin.cohort for another model, or `pin reset` (see docs/operations.md)",
                 rep.n_diffs == 1 ? "s" : "", cohort);
    return PIN_EXIT_MISMATCH;
}
