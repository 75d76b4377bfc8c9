/* pin.h: the cohort pin, backend-agnostic. An engine's identity is its EmbedderInfo plus the
 * vector its embedder gives a fixed probe text; the first engine of a cohort stores it in
 * Redis (queue_pin_*), every later one must match it: identity fields exactly, the probe
 * vector within cosine PIN_MIN_COSINE. So the same snapshot served by native cpu, native cuda
 * or a remote service passes, and any other model is refused before it writes a vector.
 * Nothing here exits; only pin_gate logs (it is a daemon start-up step). */
#ifndef WEAVER_PIN_H
#define WEAVER_PIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "engine/embedder.h"
#include "queue/queue.h"

/* Exit code of a daemon refused by the pin, and of `pin verify` on a mismatch. */
#define PIN_EXIT_MISMATCH 65 /* EX_DATAERR */

/* The fixed probe text. Never change it: every stored pin holds the vector of this text (and
 * the text itself, so a change would show up as a differing field, not as a wrong model). */
#define PIN_PROBE_TEXT "weaver-engine cohort probe: the quick brown fox jumps over the lazy dog 0123456789"
/* Minimum cosine between the pinned and the found probe vector. The same weights on another
 * device or behind a service agree to about 1e-6; another model, or one changed tensor, does
 * not. */
#define PIN_MIN_COSINE 0.9999

#define PIN_MAX_DIFFS 12

typedef struct PinDiff {
    char field[24];     /* "model_id", "snapshot_hash", "dim", "pooling", "normalize", "max_seq_len",
                           "probe_text", "probe" */
    char pinned[272];
    char found[272];
} PinDiff;

typedef struct PinReport {
    char key[QUEUE_KEY_MAX]; /* the Redis key of the pin ("" when the cohort is too long for one) */
    bool created;           /* this call wrote the pin (first boot of the cohort) */
    bool match;             /* created, or every compared field matched */
    double cosine;          /* probe cosine; -2 when the probes could not be compared */
    int n_diffs;
    PinDiff diffs[PIN_MAX_DIFFS];
    /* Fields not compared because one side does not know them (a remote service cannot hash
     * the snapshot's files: its snapshot_hash is ""). Comma-separated, "" when none. */
    char not_compared[96];
    long long created_at;   /* of the stored pin */
    char created_by[192];
} PinReport;

const char *pin_pooling_name(EmbedPooling p);

/* Builds an identity from an embedder's info and its probe vector (info->dim floats, copied).
 * Returns 0, or -1 when out of memory. Release with queue_pin_clear. */
int pin_identity(const EmbedderInfo *info, const float *probe, const char *created_by, QueuePin *out);

/* Compares a found identity with the pinned one (pure: no Redis, no I/O). Fills out->match,
 * diffs, cosine and not_compared; leaves key/created/created_* alone. Returns n_diffs. */
int pin_compare(const QueuePin *pinned, const QueuePin *found, PinReport *out);

/* Cosine similarity of two vectors; 0 when either is all zeros. */
double pin_cosine(const float *a, const float *b, int n);

/* Embeds PIN_PROBE_TEXT with e into out (info->dim floats; the pooled vector as the backend
 * returns it, not normalised). Returns 0, or -1 with err set. */
int pin_probe(Embedder *e, float *out, char *err, size_t errlen);

/* First boot writes the pin, later boots compare (report in *out). Returns 0 when the pin was
 * created or matches, PIN_EXIT_MISMATCH when it does not, < 0 (a QUEUE_E* code; detail in
 * queue_errstr(q)) when Redis failed. */
int pin_verify_or_create(Queue *q, const char *cohort, const EmbedderInfo *info, const float *probe,
                         const char *created_by, PinReport *out);
/* The same comparison without writing anything: 0 match, PIN_EXIT_MISMATCH, 1 when the cohort
 * has no pin, < 0 on a Redis error. */
int pin_verify(Queue *q, const char *cohort, const EmbedderInfo *info, const float *probe, PinReport *out);

/* Writes the report as lines for people ("  dim: pinned 384, found 8"), one per differing field. */
void pin_report_print(const PinReport *r, FILE *out);

/* The daemon's start-up step between embedder open and worker creation: probe, then verify or
 * create the pin of `cohort`. Logs what it did (each differing field on a mismatch). Returns
 * 0 (go on) or the daemon's exit code: PIN_EXIT_MISMATCH (65) for another embedder or a key
 * that is not a valid pin, ENGINE_EXIT_MODEL (66) when the probe failed, ENGINE_EXIT_UNAVAILABLE
 * (69) when the Redis connection failed, ENGINE_EXIT_SOFTWARE (70) out of memory. msg gets a
 * one-line reason for the caller to log (empty on success). */
int pin_gate(Queue *admin, Embedder *e, const char *cohort, char *msg, size_t len);

#endif
