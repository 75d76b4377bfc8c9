/* cli_pin.c: `weaver-engine pin show|verify|reset [--cohort NAME] [--yes]`, the operator's view
 * of the cohort pin. show prints the stored pin as JSON; verify opens the configured embedder,
 * embeds the probe and compares without writing anything; reset deletes the pin and refuses
 * without --yes. Talks to Redis only through queue/, to the embedder only through embedder.h. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/cli.h"
#include "engine/embedder.h"
#include "engine/engine.h"
#include "engine/pin.h"
#include "queue/queue.h"

static int usage(void)
{
    fprintf(stderr, "usage: weaver-engine pin show|verify|reset [--cohort NAME] [--yes]\n"
                    "  show    print the cohort's pin as JSON (exit 1 when there is none)\n"
                    "  verify  compare the configured embedder with the pin, writing nothing\n"
                    "          (exit 0 match, %d mismatch, 1 no pin, 66 embedder failed)\n"
                    "  reset   delete the pin (needs --yes); the next engine to start pins its embedder\n"
                    "--cohort defaults to pin.cohort from the config.\n",
            PIN_EXIT_MISMATCH);
    return CLI_EX_USAGE;
}

static bool valid_cohort(const char *s)
{
    if (!s || !s[0] || strlen(s) > CFG_PIN_COHORT_MAX)
        return false;
    for (; *s; s++)
        if ((unsigned char)*s <= ' ' || *s == 0x7f)
            return false;
    return true;
}

static void add_pin_fields(cJSON *o, const QueuePin *p)
{
    cJSON_AddStringToObject(o, "model_id", p->model_id);
    cJSON_AddStringToObject(o, "snapshot_hash", p->snapshot_hash);
    cJSON_AddNumberToObject(o, "dim", p->dim);
    cJSON_AddStringToObject(o, "pooling", p->pooling);
    cJSON_AddBoolToObject(o, "normalize", p->normalize);
    cJSON_AddNumberToObject(o, "max_seq_len", p->max_seq_len);
    cJSON_AddStringToObject(o, "probe_text", p->probe_text);
    cJSON *probe = cJSON_AddArrayToObject(o, "probe");
    for (int i = 0; i < p->probe_dim; i++)
        cJSON_AddItemToArray(probe, cJSON_CreateNumber((double)p->probe[i]));
    cJSON_AddNumberToObject(o, "created_at", (double)p->created_at);
    cJSON_AddStringToObject(o, "created_by", p->created_by);
}

static void print_json(cJSON *o)
{
    char *s = cJSON_PrintUnformatted(o);
    if (s)
        printf("%s\n", s);
    free(s);
}

static int pin_show(Queue *q, const char *cohort)
{
    QueuePin p = {0};
    char key[QUEUE_KEY_MAX];
    int rc = queue_pin_key(q, cohort, key, sizeof key);
    if (rc == QUEUE_OK)
        rc = queue_pin_get(q, cohort, &p);
    if (rc < 0) {
        fprintf(stderr, "weaver-engine: pin show: %s\n", queue_errstr(q));
        return CLI_EX_UNAVAILABLE;
    }
    if (rc == 0) {
        fprintf(stderr, "weaver-engine: cohort \"%s\" has no pin (%s); the first engine to start pins it\n", cohort,
                key);
        return 1;
    }
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "cohort", cohort);
    cJSON_AddStringToObject(o, "key", key);
    add_pin_fields(o, &p);
    print_json(o);
    cJSON_Delete(o);
    queue_pin_clear(&p);
    return 0;
}

static int pin_reset(Queue *q, const char *cohort, bool yes)
{
    char key[QUEUE_KEY_MAX];
    if (queue_pin_key(q, cohort, key, sizeof key) != QUEUE_OK) {
        fprintf(stderr, "weaver-engine: pin reset: cohort \"%s\" is too long for a pin key\n", cohort);
        return CLI_EX_USAGE;
    }
    if (!yes) {
        fprintf(stderr,
                "weaver-engine: pin reset deletes the pin of cohort \"%s\" (%s): the next engine to start pins\n"
                "whatever model it runs, and vectors already written for this cohort may then mix with\n"
                "vectors of another model. Stop every engine of the cohort first. Re-run with --yes.\n",
                cohort, key);
        return CLI_EX_USAGE;
    }
    int rc = queue_pin_delete(q, cohort);
    if (rc < 0) {
        fprintf(stderr, "weaver-engine: pin reset: %s\n", queue_errstr(q));
        return CLI_EX_UNAVAILABLE;
    }
    fprintf(stderr, rc == 1 ? "deleted the pin of cohort \"%s\" (%s)\n"
                            : "cohort \"%s\" had no pin (%s); nothing deleted\n",
            cohort, key);
    return 0;
}

static int pin_verify_cli(const Config *cfg, Queue *q, const char *cohort)
{
    char err[512] = "";
    Embedder *e = embedder_open(&cfg->embedder, &cfg->batch, err, sizeof err);
    if (!e) {
        fprintf(stderr, "weaver-engine: pin verify: %s\n", err);
        return ENGINE_EXIT_MODEL;
    }
    const EmbedderInfo *info = embedder_info(e);
    float *probe = malloc((size_t)info->dim * sizeof(float));
    int rc;
    if (!probe || pin_probe(e, probe, err, sizeof err) != 0) {
        fprintf(stderr, "weaver-engine: pin verify: %s\n", probe ? err : "out of memory");
        free(probe);
        embedder_close(e);
        return ENGINE_EXIT_MODEL;
    }
    PinReport rep;
    rc = pin_verify(q, cohort, info, probe, &rep);
    free(probe);
    if (rc < 0) {
        fprintf(stderr, "weaver-engine: pin verify: %s\n", queue_errstr(q));
        embedder_close(e);
        return CLI_EX_UNAVAILABLE;
    }
    if (rc == 1) {
        fprintf(stderr, "weaver-engine: cohort \"%s\" has no pin (%s); the first engine to start pins it\n", cohort,
                rep.key);
        embedder_close(e);
        return 1;
    }
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "cohort", cohort);
    cJSON_AddStringToObject(o, "key", rep.key);
    cJSON_AddBoolToObject(o, "match", rep.match);
    if (rep.cosine >= -1.0)
        cJSON_AddNumberToObject(o, "probe_cosine", rep.cosine);
    cJSON *diffs = cJSON_AddArrayToObject(o, "differences");
    for (int i = 0; i < rep.n_diffs; i++) {
        cJSON *d = cJSON_CreateObject();
        cJSON_AddStringToObject(d, "field", rep.diffs[i].field);
        cJSON_AddStringToObject(d, "pinned", rep.diffs[i].pinned);
        cJSON_AddStringToObject(d, "found", rep.diffs[i].found);
        cJSON_AddItemToArray(diffs, d);
    }
    cJSON *nc = cJSON_AddArrayToObject(o, "not_compared");
    char fields[sizeof rep.not_compared];
    snprintf(fields, sizeof fields, "%s", rep.not_compared);
    for (char *save = NULL, *f = strtok_r(fields, ",", &save); f; f = strtok_r(NULL, ",", &save))
        cJSON_AddItemToArray(nc, cJSON_CreateString(f));
    cJSON *found = cJSON_AddObjectToObject(o, "embedder");
    cJSON_AddStringToObject(found, "backend", cfg->embedder.backend);
    cJSON_AddStringToObject(found, "model_id", info->model_id);
    cJSON_AddStringToObject(found, "snapshot_hash", info->snapshot_hash);
    cJSON_AddNumberToObject(found, "dim", info->dim);
    print_json(o);
    cJSON_Delete(o);
    if (rep.match) {
        fprintf(stderr, "cohort \"%s\": the configured embedder matches the pin (probe cosine %.7f)\n", cohort,
                rep.cosine);
    } else {
        fprintf(stderr, "cohort \"%s\": the configured embedder does NOT match the pin %s:\n", cohort, rep.key);
        pin_report_print(&rep, stderr);
    }
    embedder_close(e);
    return rep.match ? 0 : PIN_EXIT_MISMATCH;
}

int cli_pin(const Config *cfg, int argc, char **argv)
{
    const char *verb = NULL, *cohort = cfg->pin.cohort;
    bool yes = false;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--cohort") == 0 && i + 1 < argc)
            cohort = argv[++i];
        else if (strncmp(argv[i], "--cohort=", 9) == 0)
            cohort = argv[i] + 9;
        else if (strcmp(argv[i], "--yes") == 0)
            yes = true;
        else if (!verb && argv[i][0] != '-')
            verb = argv[i];
        else {
            fprintf(stderr, "weaver-engine: pin: unexpected argument '%s'\n", argv[i]);
            return usage();
        }
    }
    if (!verb || (strcmp(verb, "show") && strcmp(verb, "verify") && strcmp(verb, "reset")))
        return usage();
    if (!valid_cohort(cohort)) {
        fprintf(stderr, "weaver-engine: pin: --cohort must be a non-empty name without whitespace, at most %d "
                        "bytes\n", CFG_PIN_COHORT_MAX);
        return CLI_EX_USAGE;
    }
    Queue *q = queue_open(&cfg->redis, &cfg->queue, "pin-cli");
    if (!queue_connected(q)) {
        fprintf(stderr, "weaver-engine: %s\n", queue_errstr(q));
        queue_free(q);
        return CLI_EX_UNAVAILABLE;
    }
    int rc;
    if (strcmp(verb, "show") == 0)
        rc = pin_show(q, cohort);
    else if (strcmp(verb, "reset") == 0)
        rc = pin_reset(q, cohort, yes);
    else
        rc = pin_verify_cli(cfg, q, cohort);
    queue_free(q);
    return rc;
}
