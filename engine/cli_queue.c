/* cli_queue.c: producer and operator commands: enqueue (with --wait), status, dead list and
 * requeue. They talk to Redis only through queue/. */
#include <cjson/cJSON.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "engine/cli.h"
#include "queue/queue.h"

static Queue *connect_or_complain(const Config *cfg)
{
    Queue *q = queue_open(&cfg->redis, &cfg->queue, NULL);
    if (!queue_connected(q)) {
        fprintf(stderr, "weaver-engine: %s\n", queue_errstr(q));
        queue_free(q);
        return NULL;
    }
    return q;
}

static long long mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Parses one job line and stamps id (when missing) and reply_to (with --wait). */
static char *prepare_job(const char *line, size_t len, const char *reply_to, long n, const char *run_id,
                         char *err, size_t errlen)
{
    cJSON *doc = cJSON_ParseWithLength(line, len);
    if (!doc || !cJSON_IsObject(doc)) {
        snprintf(err, errlen, "not a JSON object");
        cJSON_Delete(doc);
        return NULL;
    }
    if (!cJSON_GetObjectItemCaseSensitive(doc, "id")) {
        char id[96];
        snprintf(id, sizeof id, "%s-%ld", run_id, n);
        cJSON_AddStringToObject(doc, "id", id);
    }
    if (reply_to) {
        cJSON_DeleteItemFromObjectCaseSensitive(doc, "reply_to");
        cJSON_AddStringToObject(doc, "reply_to", reply_to);
    }
    char *out = cJSON_PrintUnformatted(doc);
    cJSON_Delete(doc);
    return out;
}

static int flush_jobs(Queue *q, JobKind kind, char **jobs, size_t *lens, int n)
{
    int rc = queue_enqueue(q, kind, (const char *const *)jobs, lens, n);
    for (int i = 0; i < n; i++)
        free(jobs[i]);
    if (rc != QUEUE_OK)
        fprintf(stderr, "weaver-engine: enqueue failed: %s\n", queue_errstr(q));
    return rc;
}

int cli_enqueue(const Config *cfg, int argc, char **argv)
{
    static const struct option opts[] = {{"input", required_argument, NULL, 'i'},
                                         {"text", required_argument, NULL, 't'},
                                         {"wait", no_argument, NULL, 'w'},
                                         {"timeout", required_argument, NULL, 'T'},
                                         {NULL, 0, NULL, 0}};
    const char *input = NULL, *text = NULL;
    bool wait = false;
    int timeout_s = 60;
    optind = 1;
    for (int c; (c = getopt_long(argc, argv, "", opts, NULL)) != -1;) {
        if (c == 'i') input = optarg;
        else if (c == 't') text = optarg;
        else if (c == 'w') wait = true;
        else if (c == 'T') timeout_s = atoi(optarg);
        else return CLI_EX_USAGE;
    }
    if (optind >= argc || (strcmp(argv[optind], "embed") && strcmp(argv[optind], "generate")) ||
        (!input) == (!text)) {
        fprintf(stderr, "usage: weaver-engine enqueue embed|generate (--input jobs.jsonl | --text TEXT) "
                        "[--wait] [--timeout SECONDS]\n");
        return CLI_EX_USAGE;
    }
    JobKind kind = strcmp(argv[optind], "embed") == 0 ? JOB_EMBED : JOB_GENERATE;
    Queue *q = connect_or_complain(cfg);
    if (!q)
        return CLI_EX_UNAVAILABLE;
    char run_id[64], reply[QUEUE_KEY_MAX];
    _Static_assert(CFG_QUEUE_PREFIX_MAX + sizeof ":reply:" - 1 + sizeof run_id - 1 < sizeof reply,
                   "<prefix>:reply:<run id> must fit a key buffer");
    snprintf(run_id, sizeof run_id, "cli-%d-%lld", (int)getpid(), mono_ms());
    int reply_len = snprintf(reply, sizeof reply, "%s:reply:%s", cfg->queue.prefix, run_id);
    if (reply_len < 0 || (size_t)reply_len >= sizeof reply) { /* the config bounds the prefix: cannot happen */
        fprintf(stderr, "weaver-engine: queue.prefix is too long for the reply key\n");
        queue_free(q);
        return CLI_EX_USAGE;
    }

    enum { CHUNK = 1000 };
    char *jobs[CHUNK];
    size_t lens[CHUNK];
    int nchunk = 0, rc = 0;
    long total = 0, lineno = 0;
    char err[128];
    FILE *in = NULL;
    if (text) {
        cJSON *doc = cJSON_CreateObject();
        cJSON_AddStringToObject(doc, kind == JOB_EMBED ? "text" : "prompt", text);
        char *line = cJSON_PrintUnformatted(doc);
        cJSON_Delete(doc);
        jobs[0] = prepare_job(line, strlen(line), wait ? reply : NULL, 0, run_id, err, sizeof err);
        free(line);
        lens[0] = strlen(jobs[0]);
        nchunk = 1;
        total = 1;
    } else if (!(in = strcmp(input, "-") == 0 ? stdin : fopen(input, "r"))) {
        fprintf(stderr, "weaver-engine: cannot open %s\n", input);
        queue_free(q);
        return CLI_EX_USAGE;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    while (in && (len = getline(&line, &cap, in)) > 0) {
        lineno++;
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
            line[--len] = '\0';
        if (len == 0)
            continue;
        char *job = prepare_job(line, (size_t)len, wait ? reply : NULL, total, run_id, err, sizeof err);
        if (!job) {
            fprintf(stderr, "weaver-engine: %s:%ld: %s\n", input, lineno, err);
            rc = CLI_EX_USAGE;
            break;
        }
        jobs[nchunk] = job;
        lens[nchunk++] = strlen(job);
        total++;
        if (nchunk == CHUNK) {
            if (flush_jobs(q, kind, jobs, lens, nchunk)) {
                rc = CLI_EX_UNAVAILABLE;
                nchunk = 0;
                break;
            }
            nchunk = 0;
        }
    }
    free(line);
    if (in && in != stdin)
        fclose(in);
    if (rc == 0 && nchunk > 0 && flush_jobs(q, kind, jobs, lens, nchunk))
        rc = CLI_EX_UNAVAILABLE;
    if (rc) {
        for (int i = 0; rc == CLI_EX_USAGE && i < nchunk; i++)
            free(jobs[i]);
        fprintf(stderr, "weaver-engine: %ld jobs were enqueued before the error\n", total - nchunk);
        queue_free(q);
        return rc;
    }
    fprintf(stderr, "enqueued %ld %s jobs on %s\n", total, argv[optind], queue_stream_key(q, kind));
    if (wait) {
        long got = 0;
        long long deadline = mono_ms() + (long long)timeout_s * 1000;
        while (got < total) {
            long long left = deadline - mono_ms();
            char id[JOB_ID_MAX + 1];
            int r = left > 0 ? queue_wait_reply(q, reply, (int)(left < 1000 ? left : 1000), id, sizeof id) : -9;
            if (r == -9) {
                fprintf(stderr, "weaver-engine: timed out with %ld of %ld results\n", got, total);
                rc = CLI_EX_TEMPFAIL;
                break;
            }
            if (r < 0 && queue_reconnect(q) != QUEUE_OK)
                usleep(200 * 1000);
            if (r != 1)
                continue;
            char *json = queue_result_json(q, id);
            printf("%s\n", json ? json : "{\"error\":\"result expired\"}");
            free(json);
            got++;
        }
    }
    queue_free(q);
    return rc;
}

int cli_status(const Config *cfg, int argc, char **argv)
{
    bool json = argc > 1 && strcmp(argv[1], "--json") == 0;
    Queue *q = connect_or_complain(cfg);
    if (!q)
        return CLI_EX_UNAVAILABLE;
    cJSON *root = cJSON_CreateObject();
    for (int k = 0; k < 2; k++) {
        QueueStreamStatus st;
        if (queue_status(q, (JobKind)k, &st) != QUEUE_OK) {
            fprintf(stderr, "weaver-engine: status: %s\n", queue_errstr(q));
            cJSON_Delete(root);
            queue_free(q);
            return CLI_EX_UNAVAILABLE;
        }
        cJSON *s = cJSON_AddObjectToObject(root, job_kind_name((JobKind)k));
        cJSON_AddStringToObject(s, "stream", queue_stream_key(q, (JobKind)k));
        cJSON_AddNumberToObject(s, "length", (double)st.length);
        cJSON_AddNumberToObject(s, "pending", (double)st.pending);
        cJSON *cs = cJSON_AddArrayToObject(s, "consumers");
        for (int c = 0; c < st.n_consumers; c++) {
            cJSON *o = cJSON_CreateObject();
            cJSON_AddStringToObject(o, "name", st.consumers[c].name);
            cJSON_AddNumberToObject(o, "pending", (double)st.consumers[c].pending);
            cJSON_AddNumberToObject(o, "idle_ms", (double)st.consumers[c].idle_ms);
            cJSON_AddBoolToObject(o, "ready", st.consumers[c].ready);
            if (st.consumers[c].precision[0])
                cJSON_AddStringToObject(o, "precision", st.consumers[c].precision);
            cJSON_AddItemToArray(cs, o);
        }
        if (k == 0)
            cJSON_AddNumberToObject(root, "dead_letters", (double)st.dead);
        if (!json) {
            printf("%-9s %-28s length %-8lld pending %-8lld consumers %d\n", job_kind_name((JobKind)k),
                   queue_stream_key(q, (JobKind)k), st.length, st.pending, st.n_consumers);
            for (int c = 0; c < st.n_consumers; c++)
                printf("  %-40s pending %-6lld idle %lld ms%s%s%s\n", st.consumers[c].name, st.consumers[c].pending,
                       st.consumers[c].idle_ms, st.consumers[c].ready ? " ready" : "",
                       st.consumers[c].precision[0] ? ", precision " : "", st.consumers[c].precision);
            if (k == 1)
                printf("dead letters: %lld (%s)\n", st.dead, queue_dead_key(q));
        }
    }
    if (json) {
        char *s = cJSON_PrintUnformatted(root);
        printf("%s\n", s);
        free(s);
    }
    cJSON_Delete(root);
    queue_free(q);
    return 0;
}

int cli_dead(const Config *cfg, int argc, char **argv)
{
    if (argc < 2 || (strcmp(argv[1], "list") && strcmp(argv[1], "requeue"))) {
        fprintf(stderr, "usage: weaver-engine dead list [--count N] | dead requeue (--all | DEAD_ID...)\n");
        return CLI_EX_USAGE;
    }
    bool list = strcmp(argv[1], "list") == 0;
    if (!list && argc < 3) {
        fprintf(stderr, "weaver-engine: dead requeue needs --all or dead-letter ids\n");
        return CLI_EX_USAGE;
    }
    Queue *q = connect_or_complain(cfg);
    if (!q)
        return CLI_EX_UNAVAILABLE;
    int rc;
    if (list) {
        int count = argc > 3 && strcmp(argv[2], "--count") == 0 ? atoi(argv[3]) : 100;
        rc = queue_dead_list(q, count, stdout);
    } else {
        bool all = strcmp(argv[2], "--all") == 0;
        int requeued = 0;
        rc = queue_dead_requeue(q, (const char *const *)argv + 2, all ? 0 : argc - 2, &requeued);
        if (rc == QUEUE_OK)
            fprintf(stderr, "requeued %d jobs\n", requeued);
    }
    if (rc != QUEUE_OK)
        fprintf(stderr, "weaver-engine: dead %s: %s\n", argv[1], queue_errstr(q));
    queue_free(q);
    return rc == QUEUE_OK ? 0 : CLI_EX_UNAVAILABLE;
}
