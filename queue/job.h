/* job.h: the job wire format (docs/protocol.md) parsed into structs. A job is one JSON
 * document in the stream field "job". Parsing validates everything a producer controls
 * (UTF-8, types, unknown fields, sizes, ranges) and says exactly what was wrong; it never
 * trusts the bytes. It does not talk to Redis. */
#ifndef WEAVER_JOB_H
#define WEAVER_JOB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define JOB_ID_MAX 128
#define JOB_MAX_STOP 8

typedef enum JobKind { JOB_EMBED = 0, JOB_GENERATE = 1 } JobKind;
typedef enum JobEncoding { JOB_ENC_JSON = 0, JOB_ENC_F32 = 1 } JobEncoding;

typedef struct JobLimits {
    int max_input_bytes;    /* whole payload */
    int max_texts_per_job;
    int max_tokens;         /* generate: max_tokens bound */
    const char *query_instruction; /* embed: what "instruction": true means (embedder.query_instruction);
                                    * NULL or "" = none, and such a job is refused */
} JobLimits;

typedef struct EmbedJob {
    const char **texts;     /* point into the parsed document */
    size_t *lens;           /* bytes; a text may hold NUL characters (\u0000) */
    int n_texts;
    int normalize;          /* -1 = model default, 0, 1 */
    int dimensions;         /* 0 = model's */
    bool truncate;          /* false: a text over the model's max length is an error */
    const char *instruction;/* a query's task ("Instruct: ...\nQuery: text"); NULL = a document */
    size_t instruction_len;
    JobEncoding encoding;
    const char *target_field;   /* NULL = no target hash */
    const char **target_keys;   /* one per text */
} EmbedJob;

typedef struct GenJobMessage {
    const char *role;
    const char *content;
    size_t content_len;     /* bytes; the content may hold NUL characters */
} GenJobMessage;

typedef struct GenJob {
    const char *prompt;           /* or NULL when messages are given */
    size_t prompt_len;            /* bytes; the prompt may hold NUL characters */
    GenJobMessage *messages;
    int n_messages;
    int max_tokens;
    double temperature, top_p, min_p, repeat_penalty, presence_penalty, frequency_penalty;
    int top_k, repeat_last_n;
    uint64_t seed;
    bool seed_set;
    const char *stop[JOB_MAX_STOP];
    int n_stop;
    bool truncate;
    bool parse_special;           /* default true: special-token text in prompt/messages is parsed */
} GenJob;

typedef struct Job {
    JobKind kind;
    char id[JOB_ID_MAX + 1];
    const char *reply_to;   /* NULL = none */
    EmbedJob embed;
    GenJob gen;
    void *doc;              /* the parsed cJSON tree everything points into */
} Job;

/* Parses payload into *job. On failure returns -1, writes the reason into err, and still fills
 * job->id (from the payload if it could be read, else empty) and job->reply_to when known, so
 * the error result can be addressed. job_free must be called either way. */
int job_parse(JobKind kind, const char *payload, size_t len, const JobLimits *lim, Job *job,
              char *err, size_t errlen);
void job_free(Job *job);

const char *job_kind_name(JobKind kind);
/* Strict UTF-8 check (no overlongs, no surrogates, nothing above U+10FFFF). */
bool job_utf8_valid(const char *s, size_t len);
/* A job id is 1..128 chars of [A-Za-z0-9._:-]. */
bool job_id_valid(const char *id);

#endif
