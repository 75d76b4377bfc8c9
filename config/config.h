/* config.h: the engine's whole configuration as one validated struct.
 * Loading, defaults, bounds, allowed values, cross-field rules and docs/config.md all come
 * from the schema table in config.c. This is the only module that includes libconfig.h. */
#ifndef WEAVER_CONFIG_H
#define WEAVER_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#define CFG_EX_CONFIG 78 /* sysexits EX_CONFIG: what check-config and the daemon exit with */

/* Longest value, in bytes, of the configured names that become part of Redis keys. Every key
 * the engine builds must fit its QUEUE_KEY_MAX (256) byte buffer, NUL included, so:
 *   queue.prefix   118 = 255 - strlen(":consumer:") (10) - a consumer name of up to 127 bytes
 *                        (QUEUE_CONSUMER_MAX - 1); the other long key, ":result:" (8) + a job
 *                        id of JOB_ID_MAX (128) bytes, would allow 119;
 *   queue.consumer 123 = 127 - strlen("-255"): a worker's consumer name is "<consumer>-<index>";
 *   pin.cohort     132 = 255 - 118 - strlen(":pin:") (5).
 * queue/queue.c and engine/worker.c check these sums at compile time. Literal numbers, so the
 * key docs in config.c can quote them. */
#define CFG_QUEUE_PREFIX_MAX 118
#define CFG_QUEUE_CONSUMER_MAX 123
#define CFG_PIN_COHORT_MAX 132

typedef struct RedisConfig {
    char *host;             /* redis.host */
    int port;               /* redis.port */
    int db;                 /* redis.db */
    char *username;         /* redis.username (ACL user), "" = default user */
    char *password_file;    /* redis.password_file, "" = use $WEAVER_REDIS_PASSWORD if set */
    int connect_timeout_ms; /* redis.connect_timeout_ms */
    int startup_deadline_ms;/* redis.startup_deadline_ms: give up connecting at boot after this */
    int reconnect_max_backoff_ms; /* redis.reconnect_max_backoff_ms */
} RedisConfig;

typedef struct QueueConfig {
    char *prefix;               /* queue.prefix: every key lives under "<prefix>:" */
    char *group;                /* queue.group: consumer group name */
    char *consumer;             /* queue.consumer: "" = "<hostname>-<pid>" */
    int read_count;             /* queue.read_count: XREADGROUP COUNT */
    int block_ms;               /* queue.block_ms: XREADGROUP BLOCK */
    int visibility_timeout_ms;  /* queue.visibility_timeout_ms: XAUTOCLAIM min-idle */
    int max_attempts;           /* queue.max_attempts: deliveries before dead-lettering */
    int result_ttl_s;           /* queue.result_ttl_s */
    int shutdown_grace_ms;      /* queue.shutdown_grace_ms */
    int max_input_bytes;        /* queue.max_input_bytes: a job's payload bound */
    int max_texts_per_job;      /* queue.max_texts_per_job */
    int max_tokens;             /* queue.max_tokens: bound on a generate job's max_tokens */
    int dead_letter_maxlen;     /* queue.dead_letter_maxlen: approximate MAXLEN of the dead stream */
    int prune_idle_ms;          /* queue.prune_idle_ms: forget consumers idle this long, none pending */
    char *reply_patterns;       /* queue.reply_patterns: extra globs a reply_to may match */
    char *target_patterns;      /* queue.target_patterns: globs a target hash must match; "" = none */
} QueueConfig;

typedef struct BatchConfig {
    int token_budget;   /* batch.token_budget: tokens (padded) per forward batch */
    int max_texts;      /* batch.max_texts: texts per forward batch */
    int lookahead;      /* batch.lookahead: texts gathered and length-sorted before cutting */
    int max_wait_ms;    /* batch.max_wait_ms: flush a partial batch after this */
    int token_budget_max; /* batch.token_budget_max: cap of a budget sized from the device */
    int workers;        /* not a config key: the worker count sharing the device, set by the daemon
                         * (--workers) before the embedder opens; 0 = 1 */
} BatchConfig;

typedef struct EmbedderConfig {
    char *backend;      /* embedder.backend: "native" | "remote" | "test-hash" (test builds) */
    char *snapshot;     /* embedder.snapshot: sentence-transformers directory (native) */
    char *device;       /* embedder.device: "cpu" | "cuda:N" */
    char *model_id;     /* embedder.model_id: "" = derived from the snapshot directory name */
    int threads;        /* embedder.threads: 0 = all cores */
    char *url;          /* embedder.url (remote) */
    char *api;          /* embedder.api: "tei" | "openai" (remote) */
    char *token_file;   /* embedder.token_file (remote bearer token) */
    int timeout_ms;     /* embedder.timeout_ms (remote) */
    int dim;            /* embedder.dim: vector size of the test-hash backend */
    char *precision;    /* embedder.precision: "auto" | "fp32" | "tf32" | "fp16" | "bf16" | "int8" */
    /* GGUF embedders (embedder.snapshot names a .gguf): */
    char *pooling;      /* embedder.pooling: "" = the file's pooling_type, "mean" | "cls" | "last" */
    char *query_instruction; /* embedder.query_instruction: what a job's `"instruction": true` means */
    char *query_format; /* embedder.query_format: how a query is rendered, {instruction} and {text} */
    int max_seq_len;    /* embedder.max_seq_len: 0 = min(the file's context_length, 512) */
} EmbedderConfig;

typedef struct DecoderConfig {
    bool enabled;       /* decoder.enabled */
    char *backend;      /* decoder.backend: "native" | "test-echo" (test builds) */
    char *model;        /* decoder.model: GGUF file */
    char *device;       /* decoder.device: "cpu" | "cuda:N" */
    int threads;        /* decoder.threads: 0 = all cores */
    int ctx_len;        /* decoder.ctx_len: per-sequence context, 0 = model's */
    int max_slots;      /* decoder.max_slots: concurrent sequences */
    int kv_budget_tokens; /* decoder.kv_budget_tokens: shared KV cache size in tokens */
} DecoderConfig;

typedef struct PinConfig {
    char *cohort;       /* pin.cohort */
} PinConfig;

typedef struct LogConfig {
    char *level;        /* log.level: "debug" | "info" | "warn" | "error" */
    char *format;       /* log.format: "text" | "json" */
} LogConfig;

typedef struct MetricsConfig {
    char *listen;           /* metrics.listen: "host:port" of the HTTP endpoints, "" = off */
    int sample_interval_ms; /* metrics.sample_interval_ms: stream gauges sampled this often */
} MetricsConfig;

typedef struct Config {
    RedisConfig redis;
    QueueConfig queue;
    BatchConfig batch;
    EmbedderConfig embedder;
    DecoderConfig decoder;
    PinConfig pin;
    LogConfig log;
    MetricsConfig metrics;
    char *path;         /* the file it was loaded from */
} Config;

/* Every problem found, each already formatted as "file:line: key: reason" (or "file:line: reason"
 * for a problem with the file itself: unreadable, syntax error). Line 0 = no line to point at.
 * Warnings ("file:line: key: warning: reason") are worth telling the operator but do not fail
 * the load (a secret file that others may read); they are kept on success and on failure. */
typedef struct CfgErrors {
    int count;
    char **msgs;
    int n_warnings;
    char **warnings;
} CfgErrors;

/* Loads and validates `path` (NULL = "./weaver.conf"). Returns 0 and fills *out with every key
 * (defaults applied), or -1 with every problem in *errs. *out is usable only on success; after a
 * failure it is zeroed, so cfg_free(out) is harmless either way. *errs is always (re)initialised
 * and must be released with cfg_errors_free; count is 0 on success (and after a failure only
 * when memory ran out while recording the errors); n_warnings may be non-zero either way. */
int cfg_load(const char *path, Config *out, CfgErrors *errs);
/* Whether embedder.snapshot names a GGUF embedder: a regular file whose name ends in ".gguf", or a
 * directory without model.safetensors holding exactly one "*.gguf" file. 1 with its path in out,
 * 0 when it is not one (a snapshot directory, or nothing there), -1 with the reason in out (a
 * directory holding several). */
int cfg_snapshot_gguf(const char *snapshot, char *out, size_t outlen);
/* Same, from a string (tests; `name` is used as the file name in messages, NULL = "<string>"). */
int cfg_load_string(const char *text, const char *name, Config *out, CfgErrors *errs);
void cfg_free(Config *cfg);          /* NULL-safe; leaves *cfg zeroed */
void cfg_errors_free(CfgErrors *errs); /* NULL-safe; leaves *errs empty */
/* Writes every warning, then every error of errs to `out`, one per line, each list in line
 * order (what check-config and the daemon print to stderr). */
void cfg_errors_print(const CfgErrors *errs, FILE *out);

/* Parses a device name as validation accepts it: "cpu" (*cuda_index = -1) or "cuda:N"
 * (*cuda_index = N). Returns false for anything else. Does not look at the build's features. */
bool cfg_parse_device(const char *device, int *cuda_index);

/* Writes the Markdown reference of every key, generated from the schema table (docs/config.md
 * is exactly this output). Returns 0, or -1 if writing failed. */
int cfg_write_docs(FILE *out);
/* Iterates over schema key names ("group.key"); returns NULL past the end (tests, docs check). */
const char *cfg_schema_key(int i);

/* Parses a listen address as validation accepts it: "IPv4:port" or "[IPv6]:port", a literal
 * address (no host names: nothing is resolved) and a port in [1, 65535]. Writes the address
 * without brackets into host (at least 64 bytes), *port and *ipv6. Returns false otherwise. */
bool cfg_parse_listen(const char *listen, char *host, size_t hostlen, int *port, bool *ipv6);

/* Build features, reported by the build so validation can name the missing build option.
 * cfg_build_has_cuda: the CUDA kernels are compiled in (WEAVER_HAVE_CUDA). The backend queries
 * say whether the native embedder / decoder can run on such a device; both are false until a
 * CUDA implementation of that backend exists (its change flips the answer here). */
bool cfg_build_has_cuda(void);
bool cfg_build_has_cuda_embedder(void);
bool cfg_build_has_cuda_decoder(void);
bool cfg_build_has_test_backends(void);

#endif
