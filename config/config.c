/* config.c: loads, validates and documents the engine's configuration from ONE schema table.
 * Loading, defaults, type/range/allowed-value checks, cross-field rules and docs/config.md all
 * come from cfg_schema[] and cfg_rules[] below: a new key is one table line.
 * Must not: exit or print, keep mutable global state, or include anything but libconfig for
 * parsing; it only checks what a value means for start-up (files exist, devices are built in,
 * a model file starts with the right magic), it never loads a model, opens a device or a
 * connection. */
#include "config/config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <libconfig.h>

#define CFG_DEFAULT_PATH "./weaver.conf"

/* ------------------------------------------------------------------------------------------ */
/* Schema types                                                                               */

typedef enum CfgType { CFG_INT, CFG_BOOL, CFG_STRING } CfgType;

typedef enum CfgPathKind {
    CFG_PATH_NONE,
    CFG_PATH_DIR,      /* an existing directory */
    CFG_PATH_FILE,     /* an existing, readable regular file */
    CFG_PATH_SECRET,   /* a FILE holding a secret: a warning when group or others may read it */
    CFG_PATH_SNAPSHOT, /* a DIR holding every file the native embedder loads (snapshot_files) */
    CFG_PATH_GGUF,     /* a FILE starting with the GGUF magic and a version the decoder reads */
} CfgPathKind;

typedef struct CfgLoad CfgLoad;

/* A rule about one string value on its own. Returns NULL when fine, else the reason (static text
 * or written into buf). */
typedef struct CfgCheck {
    const char *(*fn)(const char *value, char *buf, size_t len);
    const char *doc; /* the "Allowed" column, NULL = say nothing */
} CfgCheck;

/* A condition on other keys' values; false when one of them is itself invalid. */
typedef struct CfgWhen {
    bool (*holds)(const CfgLoad *ld);
    const char *doc; /* completes "<key> is required when ..." */
} CfgWhen;

typedef struct CfgKey {
    const char *name;              /* "group.key" */
    CfgType type;
    size_t offset;                 /* of the int / bool / char * field in Config */
    int int_default;               /* CFG_INT and CFG_BOOL */
    const char *str_default;       /* CFG_STRING */
    int min, max;                  /* CFG_INT, inclusive; max = INT_MAX means unbounded */
    const char *const *allowed;    /* CFG_STRING: NULL-terminated list; NULL = any string */
    const CfgCheck *check;         /* CFG_STRING: extra rule on the value; NULL = none */
    const CfgWhen *required_when;  /* CFG_STRING: must be non-empty when this holds, and its path
                                    * is checked only then; NULL = optional, path checked if set */
    CfgPathKind path;              /* CFG_STRING: the value names a file or directory */
    size_t max_len;                /* CFG_STRING: longest value in bytes; 0 = unbounded */
    const char *doc;               /* one line for docs/config.md */
} CfgKey;

#define CFG_STR_(x) #x
#define CFG_STR(x) CFG_STR_(x)

/* ------------------------------------------------------------------------------------------ */
/* Value rules used by the table                                                              */

static const char *check_name_token(const char *v, char *buf, size_t len)
{
    if (!*v)
        return "must not be empty";
    for (const char *p = v; *p; p++) {
        if (isspace((unsigned char)*p)) {
            snprintf(buf, len, "\"%s\" must not contain whitespace", v);
            return buf;
        }
    }
    return NULL;
}

static const char *check_url(const char *v, char *buf, size_t len)
{
    if (!*v)
        return NULL; /* emptiness is the business of required_when */
    size_t scheme = strncmp(v, "http://", 7) == 0 ? 7 : strncmp(v, "https://", 8) == 0 ? 8 : 0;
    if (scheme && v[scheme])
        return NULL;
    snprintf(buf, len, "\"%s\" is not a URL starting with http:// or https://", v);
    return buf;
}

static const char *check_device(const char *v, char *buf, size_t len)
{
    int index;
    if (!cfg_parse_device(v, &index)) {
        snprintf(buf, len, "\"%s\" is not a device; expected \"cpu\" or \"cuda:N\" "
                 "(N a non-negative integer)", v);
        return buf;
    }
    if (index >= 0 && !cfg_build_has_cuda()) {
        snprintf(buf, len, "\"%s\": this build has no CUDA support; "
                 "rebuild with -DWEAVER_CUDA=ON", v);
        return buf;
    }
    return NULL;
}

static const char *check_backend_built(const char *v, char *buf, size_t len)
{
    if (strncmp(v, "test-", 5) != 0 || cfg_build_has_test_backends())
        return NULL;
    snprintf(buf, len, "\"%s\" is a test-only backend and this build has none; "
             "rebuild with -DWEAVER_TEST_BACKENDS=ON", v);
    return buf;
}

/* Space-separated glob patterns for producer-named keys: each at most 256 bytes. */
static const char *check_key_patterns(const char *v, char *buf, size_t len)
{
    for (const char *p = v; *p;) {
        while (*p == ' ')
            p++;
        size_t n = strcspn(p, " ");
        if (n > 256) {
            snprintf(buf, len, "pattern \"%.40s...\" is longer than 256 bytes", p);
            return buf;
        }
        for (size_t i = 0; i < n; i++) {
            if ((unsigned char)p[i] < 0x20 || p[i] == 0x7f) {
                snprintf(buf, len, "patterns must not contain control characters or tabs");
                return buf;
            }
        }
        p += n;
    }
    return NULL;
}

static int count_of(const char *v, const char *needle)
{
    int n = 0;
    for (const char *p = v; (p = strstr(p, needle)); p += strlen(needle))
        n++;
    return n;
}

/* embedder.query_format: a query's template; a typo in a hole would embed the instruction or the
 * text literally, so each hole must be there exactly once. */
static const char *check_query_format(const char *v, char *buf, size_t len)
{
    int ni = count_of(v, "{instruction}"), nt = count_of(v, "{text}");
    if (ni == 1 && nt == 1 && strlen(v) < 480)
        return NULL;
    if (strlen(v) >= 480)
        snprintf(buf, len, "is longer than 479 bytes");
    else
        snprintf(buf, len, "must hold {instruction} and {text} once each; it holds {instruction} %d and {text} %d "
                 "times", ni, nt);
    return buf;
}

static const char *check_listen(const char *v, char *buf, size_t len)
{
    char host[64];
    int port;
    bool ipv6;
    if (!*v || cfg_parse_listen(v, host, sizeof host, &port, &ipv6))
        return NULL;
    snprintf(buf, len, "\"%s\" is not a listen address; expected \"IPv4:port\" or \"[IPv6]:port\" "
             "with a literal address and a port in [1, 65535], e.g. \"127.0.0.1:9464\"", v);
    return buf;
}

static const CfgCheck name_token = { check_name_token, "non-empty, no whitespace" };
static const CfgCheck http_url = { check_url, "empty, or `http://...` or `https://...`" };
static const CfgCheck device_name = { check_device, "`\"cpu\"` or `\"cuda:N\"`" };
static const CfgCheck backend_built = { check_backend_built, NULL };
static const CfgCheck key_patterns = { check_key_patterns, "glob patterns separated by spaces" };
static const CfgCheck query_format = { check_query_format, "`{instruction}` and `{text}` once each" };
static const CfgCheck listen_address = { check_listen, "empty, or `\"IPv4:port\"` or `\"[IPv6]:port\"`" };

static bool embedder_is_native(const CfgLoad *ld);
static bool embedder_is_remote(const CfgLoad *ld);
static bool decoder_is_native(const CfgLoad *ld);

static const CfgWhen when_embedder_native = { embedder_is_native, "embedder.backend = \"native\"" };
static const CfgWhen when_embedder_remote = { embedder_is_remote, "embedder.backend = \"remote\"" };
static const CfgWhen when_decoder_native = {
    decoder_is_native, "decoder.enabled = true and decoder.backend = \"native\"" };

static const char *const embedder_backends[] = { "native", "remote", "test-hash", NULL };
static const char *const embedder_apis[] = { "tei", "openai", NULL };
static const char *const embedder_precisions[] = { "auto", "fp32", "tf32", "fp16", "bf16", "int8", NULL };
static const char *const embedder_poolings[] = { "", "mean", "cls", "last", NULL };
static const char *const decoder_backends[] = { "native", "test-echo", NULL };
static const char *const log_levels[] = { "debug", "info", "warn", "error", NULL };
static const char *const log_formats[] = { "text", "json", NULL };

/* ------------------------------------------------------------------------------------------ */
/* The schema: every key the engine reads. Keys of one group stay together, groups in the     */
/* order of cfg_groups[].                                                                     */

#define CFG_INT_KEY(n, field, def, lo, hi, ...)                                                \
    { .name = (n), .type = CFG_INT, .offset = offsetof(Config, field), .int_default = (def),   \
      .min = (lo), .max = (hi), __VA_ARGS__ }
#define CFG_BOOL_KEY(n, field, def, ...)                                                       \
    { .name = (n), .type = CFG_BOOL, .offset = offsetof(Config, field), .int_default = (def),  \
      __VA_ARGS__ }
#define CFG_STR_KEY(n, field, def, ...)                                                        \
    { .name = (n), .type = CFG_STRING, .offset = offsetof(Config, field), .str_default = (def), \
      __VA_ARGS__ }

static const CfgKey cfg_schema[] = {
    CFG_STR_KEY("redis.host", redis.host, "127.0.0.1",
        .doc = "Host name or IP address of the Redis server."),
    CFG_INT_KEY("redis.port", redis.port, 6379, 1, 65535,
        .doc = "TCP port of the Redis server."),
    CFG_INT_KEY("redis.db", redis.db, 0, 0, 15,
        .doc = "Logical database number (`SELECT`)."),
    CFG_STR_KEY("redis.username", redis.username, "",
        .doc = "ACL user name; empty = the default user."),
    CFG_STR_KEY("redis.password_file", redis.password_file, "", .path = CFG_PATH_SECRET,
        .doc = "File holding the Redis password; empty = use `$WEAVER_REDIS_PASSWORD` if set, "
               "else no password."),
    CFG_INT_KEY("redis.connect_timeout_ms", redis.connect_timeout_ms, 2000, 1, INT_MAX,
        .doc = "Timeout of one connection attempt, in milliseconds."),
    CFG_INT_KEY("redis.startup_deadline_ms", redis.startup_deadline_ms, 30000, 1, INT_MAX,
        .doc = "At start-up, keep retrying the connection with backoff for this long, then fail "
               "(milliseconds)."),
    CFG_INT_KEY("redis.reconnect_max_backoff_ms", redis.reconnect_max_backoff_ms, 2000, 1, INT_MAX,
        .doc = "Longest wait between reconnection attempts after the connection is lost, in "
               "milliseconds."),

    CFG_STR_KEY("queue.prefix", queue.prefix, "weaver", .check = &name_token,
        .max_len = CFG_QUEUE_PREFIX_MAX,
        .doc = "Every Redis key the engine uses lives under `<prefix>:`. At most "
               CFG_STR(CFG_QUEUE_PREFIX_MAX) " bytes, so that the longest keys, "
               "`<prefix>:consumer:<consumer name>` (a name of up to 127 bytes) and "
               "`<prefix>:result:<job id>` (an id of up to 128 bytes), fit the engine's 256-byte "
               "key buffers: " CFG_STR(CFG_QUEUE_PREFIX_MAX) " + 10 + 127 + 1 = 256."),
    CFG_STR_KEY("queue.group", queue.group, "weaver", .check = &name_token,
        .doc = "Consumer group name; engines in one group share the work."),
    CFG_STR_KEY("queue.consumer", queue.consumer, "", .max_len = CFG_QUEUE_CONSUMER_MAX,
        .doc = "Consumer name within the group; empty = `<hostname>-<pid>`. Worker N reads as "
               "`<consumer>-N`, so at most " CFG_STR(CFG_QUEUE_CONSUMER_MAX) " bytes: with `-255` "
               "that fills a 127-byte consumer name."),
    CFG_INT_KEY("queue.read_count", queue.read_count, 256, 1, 10000,
        .doc = "Entries fetched per `XREADGROUP` call (`COUNT`). On a deep queue a worker of an engine "
               "without a decoder reads ahead and holds up to twice this many."),
    CFG_INT_KEY("queue.block_ms", queue.block_ms, 50, 1, 60000,
        .doc = "How long one `XREADGROUP` call waits for new jobs (`BLOCK`), in milliseconds."),
    CFG_INT_KEY("queue.visibility_timeout_ms", queue.visibility_timeout_ms, 30000, 100, INT_MAX,
        .doc = "A job delivered but not acknowledged for this long is reclaimed by another "
               "worker (`XAUTOCLAIM` min-idle), in milliseconds."),
    CFG_INT_KEY("queue.max_attempts", queue.max_attempts, 3, 1, 100,
        .doc = "Deliveries of one job before it goes to the dead-letter stream."),
    CFG_INT_KEY("queue.result_ttl_s", queue.result_ttl_s, 86400, 1, INT_MAX,
        .doc = "Results expire this many seconds after they are written."),
    CFG_INT_KEY("queue.shutdown_grace_ms", queue.shutdown_grace_ms, 10000, 0, INT_MAX,
        .doc = "On SIGTERM or SIGINT, time allowed to finish in-flight batches, in milliseconds."),
    CFG_INT_KEY("queue.max_input_bytes", queue.max_input_bytes, 1048576, 1, 536870912,
        .doc = "Largest accepted job payload in bytes; a larger job gets an error result."),
    CFG_INT_KEY("queue.max_texts_per_job", queue.max_texts_per_job, 1024, 1, INT_MAX,
        .doc = "Most texts one embedding job may carry."),
    CFG_INT_KEY("queue.max_tokens", queue.max_tokens, 4096, 1, INT_MAX,
        .doc = "Largest `max_tokens` a generation job may ask for."),
    CFG_INT_KEY("queue.prune_idle_ms", queue.prune_idle_ms, 600000, 1000, INT_MAX,
        .doc = "Consumers idle this long with no pending jobs (engines that are gone) are removed "
               "from the group, in milliseconds."),
    CFG_INT_KEY("queue.dead_letter_maxlen", queue.dead_letter_maxlen, 100000, 1, INT_MAX,
        .doc = "Approximate maximum length (`MAXLEN ~`) of the dead-letter stream."),
    CFG_STR_KEY("queue.reply_patterns", queue.reply_patterns, "", .check = &key_patterns,
        .doc = "Glob patterns (Redis `MATCH` syntax, separated by spaces) naming the lists a job's "
               "`reply_to` may name, besides `<prefix>:reply:*`, which is always allowed; no other "
               "key under `<prefix>:` is ever accepted."),
    CFG_STR_KEY("queue.target_patterns", queue.target_patterns, "", .check = &key_patterns,
        .doc = "Glob patterns (separated by spaces) naming the hashes a job's `target` may write "
               "vectors into; empty = jobs with `target` are refused. No key under `<prefix>:` is "
               "ever accepted."),

    CFG_INT_KEY("batch.token_budget", batch.token_budget, 0, 0, INT_MAX,
        .doc = "Tokens (after padding) per forward batch. 0 = automatic: with the `native` embedder "
               "on `\"cuda:N\"`, sized at start-up from the device's free memory after the weights, "
               "less each worker's fixed workspace (40 MiB), times 0.9, shared by the workers, capped "
               "by `batch.token_budget_max` (the `ready:` log line shows it); on the cpu and the other "
               "backends 16384."),
    CFG_INT_KEY("batch.token_budget_max", batch.token_budget_max, 65536, 1, INT_MAX,
        .doc = "Upper bound of a token budget sized from the device (`batch.token_budget = 0`)."),
    CFG_INT_KEY("batch.max_texts", batch.max_texts, 256, 1, INT_MAX,
        .doc = "Texts per forward batch."),
    CFG_INT_KEY("batch.lookahead", batch.lookahead, 1024, 1, INT_MAX,
        .doc = "Texts gathered and sorted by length before batches are cut."),
    CFG_INT_KEY("batch.max_wait_ms", batch.max_wait_ms, 5, 0, 60000,
        .doc = "A partial batch runs after waiting this long for more texts, in milliseconds."),

    CFG_STR_KEY("embedder.backend", embedder.backend, "native",
        .allowed = embedder_backends, .check = &backend_built,
        .doc = "`native` runs the model in-process, `remote` calls an embedding service over "
               "HTTP, `test-hash` (test builds only) returns deterministic fake vectors."),
    CFG_STR_KEY("embedder.snapshot", embedder.snapshot, "models/all-MiniLM-L6-v2",
        .required_when = &when_embedder_native, .path = CFG_PATH_SNAPSHOT,
        .doc = "sentence-transformers model directory of the `native` backend, or a GGUF "
               "embedding model: a `.gguf` file, or a directory holding exactly one "
               "(docs/embedding.md, \"GGUF embedders\")."),
    CFG_STR_KEY("embedder.device", embedder.device, "cpu", .check = &device_name,
        .doc = "Where the `native` backend runs."),
    CFG_STR_KEY("embedder.model_id", embedder.model_id, "",
        .doc = "Model identity recorded in the cohort pin; empty = the snapshot directory's name."),
    CFG_INT_KEY("embedder.threads", embedder.threads, 0, 0, 1024,
        .doc = "CPU threads of the `native` backend; 0 = all cores."),
    CFG_STR_KEY("embedder.url", embedder.url, "", .check = &http_url,
        .required_when = &when_embedder_remote,
        .doc = "Base URL of the embedding service of the `remote` backend."),
    CFG_STR_KEY("embedder.api", embedder.api, "tei", .allowed = embedder_apis,
        .doc = "Protocol of the remote service: `tei` (text-embeddings-inference `/embed`) or "
               "`openai` (`/v1/embeddings`)."),
    CFG_STR_KEY("embedder.token_file", embedder.token_file, "", .path = CFG_PATH_SECRET,
        .doc = "File holding a bearer token for the remote service; empty = no token."),
    CFG_INT_KEY("embedder.timeout_ms", embedder.timeout_ms, 30000, 1, INT_MAX,
        .doc = "Timeout of one request to the remote service, in milliseconds."),
    CFG_INT_KEY("embedder.dim", embedder.dim, 384, 1, 65536,
        .doc = "Vector size of the `test-hash` backend."),
    CFG_STR_KEY("embedder.precision", embedder.precision, "auto", .allowed = embedder_precisions,
        .doc = "How the `native` backend's linear layers compute. `auto` = `fp32` on the cpu, `fp16` "
               "on `\"cuda:N\"`. Both: `fp32`; `bf16` (weights and GEMM inputs rounded to bf16, F32 "
               "accumulation; everything else F32). cpu only: `int8` (weights per row, activations "
               "per token, F32 elsewhere). `\"cuda:N\"` only: `tf32` (tensor cores, F32 in and out), "
               "`fp16`. On a cpu without AVX-512 BF16 / VNNI, `bf16` / `int8` run `fp32` (logged). "
               "Not part of the model's identity: the pin's probe check still applies."),
    CFG_STR_KEY("embedder.pooling", embedder.pooling, "", .allowed = embedder_poolings,
        .doc = "GGUF embedders: how token states become one vector; empty = the file's "
               "`<arch>.pooling_type`. `last` = the final token (after the EOS the file appends)."),
    CFG_STR_KEY("embedder.query_instruction", embedder.query_instruction, "",
        .doc = "The instruction a job's `\"instruction\": true` stands for (instruction-style "
               "models: the text becomes `embedder.query_format`); empty = such a job is an error."),
    CFG_STR_KEY("embedder.query_format", embedder.query_format, "Instruct: {instruction}\nQuery: {text}",
        .check = &query_format,
        .doc = "How a query (a job with `instruction`) is rendered for the model: the model's "
               "documented format. The default is gte-Qwen2's and e5-mistral's; Qwen3-Embedding's "
               "card has no space after `Query:` (`\"Instruct: {instruction}\\nQuery:{text}\"`)."),
    CFG_INT_KEY("embedder.max_seq_len", embedder.max_seq_len, 0, 0, 1 << 20,
        .doc = "GGUF embedders: tokens per text, special tokens included; 0 = the file's "
               "`context_length`, at most 512."),

    CFG_BOOL_KEY("decoder.enabled", decoder.enabled, true,
        .doc = "Serve generation jobs; `false` = embeddings only."),
    CFG_STR_KEY("decoder.backend", decoder.backend, "native",
        .allowed = decoder_backends, .check = &backend_built,
        .doc = "`native` runs the GGUF model in-process, `test-echo` (test builds only) echoes "
               "the prompt."),
    CFG_STR_KEY("decoder.model", decoder.model, "models/SmolLM2-135M-Instruct.Q4_1.gguf",
        .required_when = &when_decoder_native, .path = CFG_PATH_GGUF,
        .doc = "GGUF model file of the `native` decoder."),
    CFG_STR_KEY("decoder.device", decoder.device, "cpu", .check = &device_name,
        .doc = "Where the `native` decoder runs."),
    CFG_INT_KEY("decoder.threads", decoder.threads, 0, 0, 1024,
        .doc = "CPU threads of the `native` decoder; 0 = all cores."),
    CFG_INT_KEY("decoder.ctx_len", decoder.ctx_len, 0, 0, 1048576,
        .doc = "Context length of one sequence in tokens; 0 = the model's own."),
    CFG_INT_KEY("decoder.max_slots", decoder.max_slots, 16, 1, 4096,
        .doc = "Sequences generated concurrently (continuous batching)."),
    CFG_INT_KEY("decoder.kv_budget_tokens", decoder.kv_budget_tokens, 16384, 0, INT_MAX,
        .doc = "Size of the KV cache shared by all running sequences, in tokens; 0 = on `cuda:N`, "
               "as much as the device's free memory holds after the model, on the cpu "
               "`ctx_len` x `max_slots`."),

    CFG_STR_KEY("pin.cohort", pin.cohort, "default", .check = &name_token,
        .max_len = CFG_PIN_COHORT_MAX,
        .doc = "Cohort name: every engine of one cohort must embed with the identical model. At "
               "most " CFG_STR(CFG_PIN_COHORT_MAX) " bytes, so that `<prefix>:pin:<cohort>` fits "
               "a 256-byte key: " CFG_STR(CFG_QUEUE_PREFIX_MAX) " + 5 + " CFG_STR(CFG_PIN_COHORT_MAX)
               " + 1 = 256."),

    CFG_STR_KEY("log.level", log.level, "info", .allowed = log_levels,
        .doc = "Least severe message level written to stderr."),
    CFG_STR_KEY("log.format", log.format, "text", .allowed = log_formats,
        .doc = "`text`: one line per event (time, level, message); `json`: one JSON object per "
               "line (`ts`, `level`, `msg`, and `worker`, `job_id`, `kind` where they apply)."),

    CFG_STR_KEY("metrics.listen", metrics.listen, "", .check = &listen_address,
        .doc = "Address of the HTTP endpoints `/metrics` (Prometheus), `/healthz` and `/readyz`, "
               "e.g. `\"127.0.0.1:9464\"`; empty = off (no server, nothing counted)."),
    CFG_INT_KEY("metrics.sample_interval_ms", metrics.sample_interval_ms, 1000, 100, 3600000,
        .doc = "Stream length, pending entries and dead letters are sampled from Redis this often "
               "(over a connection of their own), and so is Redis' reachability for `/readyz`, in "
               "milliseconds."),
};

#define CFG_NKEYS ((int)(sizeof cfg_schema / sizeof cfg_schema[0]))

typedef struct CfgGroup {
    const char *name;
    const char *doc;
} CfgGroup;

static const CfgGroup cfg_groups[] = {
    { "redis", "How the engine reaches the Redis server that holds the job streams." },
    { "queue", "Streams, consumer group, redelivery, and bounds on incoming jobs." },
    { "batch", "How embedding jobs are grouped into forward batches." },
    { "embedder", "The embedding backend: in-process (`native`) or an HTTP service (`remote`)." },
    { "decoder", "The text-generation runtime." },
    { "pin", "The cohort pin that keeps vectors of different models apart." },
    { "log", "Logging." },
    { "metrics", "Prometheus metrics and the health and readiness endpoints." },
};

#define CFG_NGROUPS ((int)(sizeof cfg_groups / sizeof cfg_groups[0]))

/* ------------------------------------------------------------------------------------------ */
/* Cross-field rules that compare two keys (each reports its own message).                   */

static void rule_lookahead_holds_a_batch(CfgLoad *ld);
static void rule_visibility_exceeds_block(CfgLoad *ld);
static void rule_embedder_device_has_a_backend(CfgLoad *ld);
static void rule_decoder_device_has_a_backend(CfgLoad *ld);
static void rule_embedder_precision_fits_device(CfgLoad *ld);

typedef struct CfgRule {
    void (*check)(CfgLoad *ld);
    const char *doc;
} CfgRule;

static const CfgRule cfg_rules[] = {
    { rule_lookahead_holds_a_batch,
      "`batch.lookahead` must be at least `batch.max_texts`: the look-ahead window has to hold "
      "a full batch." },
    { rule_visibility_exceeds_block,
      "`queue.visibility_timeout_ms` must be greater than `queue.block_ms`: a job must stay "
      "with its worker for longer than one blocking read can last." },
    { rule_embedder_device_has_a_backend,
      "When `embedder.backend = \"native\"`, `embedder.device = \"cuda:N\"` needs a native "
      "embedder with a CUDA backend: a build with CUDA (`-DWEAVER_CUDA=ON`)." },
    { rule_decoder_device_has_a_backend,
      "When `decoder.enabled = true and decoder.backend = \"native\"`, `decoder.device = "
      "\"cuda:N\"` needs a native decoder with a CUDA backend: a build with CUDA "
      "(`-DWEAVER_CUDA=ON`)." },
    { rule_embedder_precision_fits_device,
      "When `embedder.backend = \"native\"`, `embedder.precision` must be one the device runs: "
      "`int8` is cpu only, `tf32` and `fp16` are `\"cuda:N\"` only." },
};

/* ------------------------------------------------------------------------------------------ */
/* One load in progress                                                                       */

struct CfgLoad {
    const char *name;                            /* file name in messages */
    const char *text;                            /* the source text (int re-scan) */
    Config *cfg;
    CfgErrors *errs;
    int *err_lines;                              /* line of each message in errs, for sorting */
    int *warn_lines;                             /* line of each warning in errs */
    bool oom;
    const config_setting_t *key_set[CFG_NKEYS];  /* where the file sets each key, or NULL */
    bool key_bad[CFG_NKEYS];                     /* set, but to an invalid value */
    const config_setting_t *group_set[CFG_NGROUPS];
};

static int key_index(const char *name)
{
    for (int i = 0; i < CFG_NKEYS; i++)
        if (strcmp(cfg_schema[i].name, name) == 0)
            return i;
    return -1;
}

static int group_index(const char *name, size_t len)
{
    for (int g = 0; g < CFG_NGROUPS; g++)
        if (strlen(cfg_groups[g].name) == len && strncmp(cfg_groups[g].name, name, len) == 0)
            return g;
    return -1;
}

static int key_group(int i)
{
    const char *name = cfg_schema[i].name;
    return group_index(name, strcspn(name, "."));
}

static int *int_field(Config *cfg, const CfgKey *k) { return (int *)((char *)cfg + k->offset); }
static bool *bool_field(Config *cfg, const CfgKey *k) { return (bool *)((char *)cfg + k->offset); }
static char **str_field(Config *cfg, const CfgKey *k) { return (char **)((char *)cfg + k->offset); }

/* Usable in a rule: known and not set to an invalid value. */
static bool key_ok(const CfgLoad *ld, const char *name)
{
    int i = key_index(name);
    return i >= 0 && !ld->key_bad[i];
}

/* The setting to blame for key i: the key's own line, else its group's, else none (line 0). */
static const config_setting_t *key_where(const CfgLoad *ld, int i)
{
    if (ld->key_set[i])
        return ld->key_set[i];
    int g = key_group(i);
    return g >= 0 ? ld->group_set[g] : NULL;
}

/* For a rule between two keys: blame `key`'s line if the file sets it, else `other`'s. */
static const config_setting_t *rule_where(const CfgLoad *ld, const char *key, const char *other)
{
    int i = key_index(key), j = key_index(other);
    if (i >= 0 && ld->key_set[i])
        return ld->key_set[i];
    if (j >= 0 && ld->key_set[j])
        return ld->key_set[j];
    return i >= 0 ? key_where(ld, i) : NULL;
}

/* One list of messages with their lines: the errors or the warnings of ld->errs. */
typedef struct CfgMsgList {
    char ***msgs;
    int *count;
    int **lines;
} CfgMsgList;

static CfgMsgList errors_of(CfgLoad *ld)
{
    return (CfgMsgList){ &ld->errs->msgs, &ld->errs->count, &ld->err_lines };
}

static CfgMsgList warnings_of(CfgLoad *ld)
{
    return (CfgMsgList){ &ld->errs->warnings, &ld->errs->n_warnings, &ld->warn_lines };
}

/* Appends a formatted message; on allocation failure remembers it and drops the message. */
static void list_push(CfgLoad *ld, CfgMsgList l, int line, char *msg)
{
    size_t n = (size_t)*l.count + 1;
    char **msgs = msg ? realloc(*l.msgs, n * sizeof *msgs) : NULL;
    if (msgs)
        *l.msgs = msgs;
    int *lines = msgs ? realloc(*l.lines, n * sizeof *lines) : NULL;
    if (!lines) {
        free(msg);
        ld->oom = true;
        return;
    }
    *l.lines = lines;
    msgs[*l.count] = msg;
    lines[(*l.count)++] = line;
}

static void errs_push(CfgLoad *ld, int line, char *msg)
{
    list_push(ld, errors_of(ld), line, msg);
}

static int line_order(int line)
{
    return line > 0 ? line : INT_MAX; /* no line (0): after the others */
}

/* Orders the messages by line (stable insertion sort), so a file reads top to bottom whichever
 * check found each problem. Then forgets the lines. */
static void list_sort_and_finish(CfgMsgList l)
{
    char **msgs = *l.msgs;
    int *lines = *l.lines;
    for (int i = 1; i < *l.count; i++) {
        char *msg = msgs[i];
        int line = lines[i], j = i;
        for (; j > 0 && line_order(lines[j - 1]) > line_order(line); j--) {
            msgs[j] = msgs[j - 1];
            lines[j] = lines[j - 1];
        }
        msgs[j] = msg;
        lines[j] = line;
    }
    free(lines);
    *l.lines = NULL;
}

static void errs_sort_and_finish(CfgLoad *ld)
{
    list_sort_and_finish(errors_of(ld));
    list_sort_and_finish(warnings_of(ld));
}

static char *vformat(const char *fmt, va_list ap)
{
    va_list again;
    va_copy(again, ap);
    int n = vsnprintf(NULL, 0, fmt, ap);
    char *s = n >= 0 ? malloc((size_t)n + 1) : NULL;
    if (s)
        vsnprintf(s, (size_t)n + 1, fmt, again);
    va_end(again);
    return s;
}

static char *format(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *s = vformat(fmt, ap);
    va_end(ap);
    return s;
}

/* "file:line: key: [warning: ]reason", the file and line taken from `where` (NULL = this file,
 * line 0), appended to the errors or to the warnings. */
static void key_message(CfgLoad *ld, bool warning, const config_setting_t *where, const char *key,
                        const char *fmt, va_list ap)
{
    char *reason = vformat(fmt, ap);
    const char *file = where && config_setting_source_file(where)
                           ? config_setting_source_file(where) : ld->name;
    int line = where ? (int)config_setting_source_line(where) : 0;
    char *msg = reason ? format("%s:%d: %s: %s%s", file, line, key, warning ? "warning: " : "",
                                reason) : NULL;
    list_push(ld, warning ? warnings_of(ld) : errors_of(ld), line, msg);
    free(reason);
}

__attribute__((format(printf, 4, 5)))
static void key_error(CfgLoad *ld, const config_setting_t *where, const char *key,
                      const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    key_message(ld, false, where, key, fmt, ap);
    va_end(ap);
}

/* A problem that does not stop the engine: reported, but the load still succeeds. */
__attribute__((format(printf, 4, 5)))
static void key_warning(CfgLoad *ld, const config_setting_t *where, const char *key,
                        const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    key_message(ld, true, where, key, fmt, ap);
    va_end(ap);
}

/* ------------------------------------------------------------------------------------------ */
/* Defaults                                                                                   */

static int apply_defaults(Config *cfg)
{
    for (int i = 0; i < CFG_NKEYS; i++) {
        const CfgKey *k = &cfg_schema[i];
        switch (k->type) {
        case CFG_INT:
            *int_field(cfg, k) = k->int_default;
            break;
        case CFG_BOOL:
            *bool_field(cfg, k) = k->int_default != 0;
            break;
        case CFG_STRING:
            if (!(*str_field(cfg, k) = strdup(k->str_default)))
                return -1;
            break;
        }
    }
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Did-you-mean hints                                                                         */

static int edit_distance(const char *a, const char *b)
{
    enum { MAX = 96 };
    size_t la = strlen(a), lb = strlen(b);
    if (la >= MAX || lb >= MAX)
        return INT_MAX;
    int prev[MAX], cur[MAX];
    for (size_t j = 0; j <= lb; j++)
        prev[j] = (int)j;
    for (size_t i = 1; i <= la; i++) {
        cur[0] = (int)i;
        for (size_t j = 1; j <= lb; j++) {
            int sub = prev[j - 1] + (a[i - 1] != b[j - 1]);
            int del = prev[j] + 1, ins = cur[j - 1] + 1;
            cur[j] = sub < del ? (sub < ins ? sub : ins) : (del < ins ? del : ins);
        }
        memcpy(prev, cur, (lb + 1) * sizeof *prev);
    }
    return prev[lb];
}

/* Close enough to be a typo: up to 1 edit per 5 characters, at least 1, at most 3. */
static bool is_close(int distance, const char *candidate)
{
    int allowed = 1 + (int)strlen(candidate) / 5;
    return distance <= (allowed < 3 ? allowed : 3);
}

/* The schema key a mistyped "group.key" (or a bare "key") most likely meant, or NULL. A key
 * put in the wrong group is recognised by its exact leaf name. */
static const char *suggest_key(const char *full)
{
    const char *leaf = strrchr(full, '.') ? strrchr(full, '.') + 1 : full;
    for (int i = 0; i < CFG_NKEYS; i++)
        if (strcmp(strchr(cfg_schema[i].name, '.') + 1, leaf) == 0)
            return cfg_schema[i].name;
    const char *best = NULL;
    int best_d = INT_MAX;
    for (int i = 0; i < CFG_NKEYS; i++) {
        int d = edit_distance(full, cfg_schema[i].name);
        if (d < best_d && is_close(d, cfg_schema[i].name)) {
            best = cfg_schema[i].name;
            best_d = d;
        }
    }
    return best;
}

static const char *suggest_group(const char *name)
{
    const char *best = NULL;
    int best_d = INT_MAX;
    for (int g = 0; g < CFG_NGROUPS; g++) {
        int d = edit_distance(name, cfg_groups[g].name);
        if (d < best_d && is_close(d, cfg_groups[g].name)) {
            best = cfg_groups[g].name;
            best_d = d;
        }
    }
    return best;
}

static void unknown_error(CfgLoad *ld, const config_setting_t *s, const char *full,
                          const char *what, const char *hint)
{
    if (hint)
        key_error(ld, s, full, "unknown %s; did you mean '%s'?", what, hint);
    else
        key_error(ld, s, full, "unknown %s", what);
}

/* ------------------------------------------------------------------------------------------ */
/* Reading one setting                                                                        */

static const char *type_phrase(int libconfig_type)
{
    switch (libconfig_type) {
    case CONFIG_TYPE_INT:
    case CONFIG_TYPE_INT64: return "an integer";
    case CONFIG_TYPE_FLOAT: return "a float";
    case CONFIG_TYPE_STRING: return "a string";
    case CONFIG_TYPE_BOOL: return "a boolean";
    case CONFIG_TYPE_GROUP: return "a group";
    case CONFIG_TYPE_ARRAY: return "an array";
    case CONFIG_TYPE_LIST: return "a list";
    default: return "an unknown type";
    }
}

static const char *expected_phrase(CfgType t)
{
    switch (t) {
    case CFG_INT: return "an integer";
    case CFG_BOOL: return "a boolean (true or false)";
    case CFG_STRING: return "a string";
    }
    return "?";
}

static bool is_name_char(char c)
{
    return isalnum((unsigned char)c) || c == '_' || c == '-' || c == '*';
}

/* libconfig 1.5 converts an integer literal without the L suffix through 32 bits, so
 * 99999999999 silently arrives as 1215752191. This re-reads "name = <literal>" from the
 * setting's source line so such a value is reported instead of accepted. Returns false when
 * the literal cannot be found on that line (then libconfig's value stands). */
static bool raw_int_literal(const CfgLoad *ld, const config_setting_t *s, long long *value,
                            char *text, size_t text_len)
{
    if (config_setting_source_file(s) || !ld->text)
        return false; /* from an @include: we do not have its text */
    const char *line = ld->text;
    for (unsigned n = config_setting_source_line(s); n > 1 && line; n--)
        line = (line = strchr(line, '\n')) ? line + 1 : NULL;
    if (!line)
        return false;
    const char *name = config_setting_name(s), *end = strchr(line, '\n');
    size_t nlen = strlen(name);
    for (const char *p = line; (p = strstr(p, name)) && (!end || p < end); p++) {
        if (p > line && is_name_char(p[-1]))
            continue;
        const char *q = p + nlen;
        q += strspn(q, " \t");
        if (*q != '=' && *q != ':')
            continue;
        q += 1 + strspn(q + 1, " \t");
        const char *digits = q + (*q == '-' || *q == '+');
        bool hex = digits[0] == '0' && (digits[1] == 'x' || digits[1] == 'X');
        char *stop;
        errno = 0;
        long long v = strtoll(q, &stop, hex ? 16 : 10);
        if (stop == q)
            return false;
        *value = errno == ERANGE ? (v < 0 ? LLONG_MIN : LLONG_MAX) : v;
        snprintf(text, text_len, "%.*s", (int)(stop - q), q);
        return true;
    }
    return false;
}

static void format_range(char *buf, size_t len, const CfgKey *k)
{
    if (k->max == INT_MAX)
        snprintf(buf, len, ">= %d", k->min);
    else
        snprintf(buf, len, "%d..%d", k->min, k->max);
}

static bool read_int(CfgLoad *ld, int i, const config_setting_t *s)
{
    const CfgKey *k = &cfg_schema[i];
    long long v = config_setting_get_int64(s);
    char text[64];
    snprintf(text, sizeof text, "%lld", v);
    long long raw;
    char raw_text[64];
    if (config_setting_type(s) == CONFIG_TYPE_INT &&
        raw_int_literal(ld, s, &raw, raw_text, sizeof raw_text) && raw != v) {
        v = raw;
        snprintf(text, sizeof text, "%s", raw_text);
    }
    if (v < k->min || v > k->max) {
        char range[48];
        format_range(range, sizeof range, k);
        key_error(ld, s, k->name, "%s is out of range (allowed %s)", text, range);
        return false;
    }
    *int_field(ld->cfg, k) = (int)v;
    return true;
}

static bool is_allowed(const CfgKey *k, const char *v)
{
    for (const char *const *a = k->allowed; *a; a++)
        if (strcmp(*a, v) == 0)
            return true;
    return false;
}

static void allowed_list(char *buf, size_t len, const CfgKey *k)
{
    size_t used = 0;
    buf[0] = '\0';
    for (const char *const *a = k->allowed; *a && used < len; a++)
        used += (size_t)snprintf(buf + used, len - used, "%s\"%s\"",
                                 a == k->allowed ? "" : ", ", *a);
}

static bool read_string(CfgLoad *ld, int i, const config_setting_t *s)
{
    const CfgKey *k = &cfg_schema[i];
    const char *v = config_setting_get_string(s);
    if (k->allowed && !is_allowed(k, v)) {
        char list[256];
        allowed_list(list, sizeof list, k);
        key_error(ld, s, k->name, "\"%s\" is not one of %s", v, list);
        return false;
    }
    char buf[512];
    const char *why = k->check ? k->check->fn(v, buf, sizeof buf) : NULL;
    if (why) {
        key_error(ld, s, k->name, "%s", why);
        return false;
    }
    if (k->max_len && strlen(v) > k->max_len) {
        key_error(ld, s, k->name, "is %zu bytes long; at most %zu fit in the Redis keys the "
                  "engine builds", strlen(v), k->max_len);
        return false;
    }
    char *copy = strdup(v);
    if (!copy) {
        ld->oom = true;
        return false;
    }
    char **field = str_field(ld->cfg, k);
    free(*field);
    *field = copy;
    return true;
}

static bool type_matches(CfgType want, int got)
{
    switch (want) {
    case CFG_INT: return got == CONFIG_TYPE_INT || got == CONFIG_TYPE_INT64;
    case CFG_BOOL: return got == CONFIG_TYPE_BOOL;
    case CFG_STRING: return got == CONFIG_TYPE_STRING;
    }
    return false;
}

/* Checks the setting for key i and stores it into the Config; marks the key bad if invalid. */
static void read_setting(CfgLoad *ld, int i, const config_setting_t *s)
{
    const CfgKey *k = &cfg_schema[i];
    bool ok;
    ld->key_set[i] = s;
    if (!type_matches(k->type, config_setting_type(s))) {
        key_error(ld, s, k->name, "expected %s, got %s", expected_phrase(k->type),
                  type_phrase(config_setting_type(s)));
        ok = false;
    } else if (k->type == CFG_INT) {
        ok = read_int(ld, i, s);
    } else if (k->type == CFG_BOOL) {
        *bool_field(ld->cfg, k) = config_setting_get_bool(s) != 0;
        ok = true;
    } else {
        ok = read_string(ld, i, s);
    }
    ld->key_bad[i] = !ok;
}

static void read_group(CfgLoad *ld, int g, const config_setting_t *group)
{
    ld->group_set[g] = group;
    for (int j = 0; j < config_setting_length(group); j++) {
        const config_setting_t *s = config_setting_get_elem(group, (unsigned)j);
        char full[256];
        snprintf(full, sizeof full, "%s.%s", cfg_groups[g].name, config_setting_name(s));
        int i = key_index(full);
        if (i >= 0)
            read_setting(ld, i, s);
        else
            unknown_error(ld, s, full, "key", suggest_key(full));
    }
}

static void read_file_settings(CfgLoad *ld, const config_setting_t *root)
{
    for (int j = 0; j < config_setting_length(root); j++) {
        const config_setting_t *s = config_setting_get_elem(root, (unsigned)j);
        const char *name = config_setting_name(s);
        int g = group_index(name, strlen(name));
        bool is_group = config_setting_type(s) == CONFIG_TYPE_GROUP;
        if (g >= 0 && is_group)
            read_group(ld, g, s);
        else if (g >= 0)
            key_error(ld, s, name, "expected a group (%s = { ... };), got %s", name,
                      type_phrase(config_setting_type(s)));
        else if (is_group)
            unknown_error(ld, s, name, "group", suggest_group(name));
        else
            unknown_error(ld, s, name, "key", suggest_key(name));
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Rules that look at more than one key, or at the file system                                */

static bool str_key_is(const CfgLoad *ld, const char *name, const char *value)
{
    int i = key_index(name);
    return i >= 0 && !ld->key_bad[i] && strcmp(*str_field(ld->cfg, &cfg_schema[i]), value) == 0;
}

static bool embedder_is_native(const CfgLoad *ld)
{
    return str_key_is(ld, "embedder.backend", "native");
}

static bool embedder_is_remote(const CfgLoad *ld)
{
    return str_key_is(ld, "embedder.backend", "remote");
}

static bool decoder_is_native(const CfgLoad *ld)
{
    return key_ok(ld, "decoder.enabled") && ld->cfg->decoder.enabled &&
           str_key_is(ld, "decoder.backend", "native");
}

static bool path_is_dir(CfgPathKind kind)
{
    return kind == CFG_PATH_DIR || kind == CFG_PATH_SNAPSHOT;
}

/* What the native embedder opens in a snapshot directory (engine/embed/snapshot.c reads
 * config.json, embed_native.c model.safetensors, wordpiece.c tokenizer.json or else vocab.txt).
 * One entry per file it needs; "a|b" = either will do. Optional files (modules.json, the
 * pooling config) are not listed: the loader checks what they say. */
static const char *const snapshot_files[] = {
    "config.json", "model.safetensors", "tokenizer.json|vocab.txt",
};
#define CFG_NSNAPSHOT_FILES (sizeof snapshot_files / sizeof snapshot_files[0])

/* Appends entry e of snapshot_files to buf as "a (or b)", each name between `quote`s. */
static void snapshot_entry_phrase(char *buf, size_t len, size_t e, const char *quote)
{
    const char *name = snapshot_files[e];
    size_t used = strlen(buf), n = strcspn(name, "|");
    snprintf(buf + used, len - used, "%s%.*s%s", quote, (int)n, name, quote);
    for (name += n; *name == '|'; name += n) {
        n = strcspn(++name, "|");
        used = strlen(buf);
        snprintf(buf + used, len - used, " (or %s%.*s%s)", quote, (int)n, name, quote);
    }
}

/* "path/name" without a doubled slash; NULL when out of memory. */
static char *join_path(const char *dir, const char *name, size_t name_len)
{
    size_t n = strlen(dir);
    return format("%s%s%.*s", dir, n && dir[n - 1] == '/' ? "" : "/", (int)name_len, name);
}

/* Why `path` is not a readable regular file (written into buf), or NULL when it is one;
 * *missing = it does not exist at all. */
static const char *file_problem(const char *path, bool *missing, char *buf, size_t len)
{
    struct stat st;
    *missing = false;
    if (stat(path, &st) != 0) {
        *missing = errno == ENOENT || errno == ENOTDIR;
        snprintf(buf, len, "cannot access \"%s\": %s", path, strerror(errno));
    } else if (!S_ISREG(st.st_mode)) {
        snprintf(buf, len, "\"%s\" is not a regular file", path);
    } else if (access(path, R_OK) != 0) {
        snprintf(buf, len, "\"%s\" is not readable: %s", path, strerror(errno));
    } else {
        return NULL;
    }
    return buf;
}

/* Every file of snapshot_files must be a readable regular file: the missing ones are named in
 * one message, a file that is there but unusable gets its own. */
static void check_snapshot(CfgLoad *ld, int i, const char *dir)
{
    const CfgKey *k = &cfg_schema[i];
    char missing[256] = "", why[PATH_MAX + 128], bad[PATH_MAX + 128];
    for (size_t e = 0; e < CFG_NSNAPSHOT_FILES; e++) {
        bool found = false, all_absent = true;
        for (const char *name = snapshot_files[e]; *name && !found;) {
            size_t n = strcspn(name, "|");
            char *path = join_path(dir, name, n);
            if (!path) {
                ld->oom = true;
                return;
            }
            bool absent;
            const char *problem = file_problem(path, &absent, why, sizeof why);
            free(path);
            found = !problem;
            if (problem && !absent && all_absent) {
                snprintf(bad, sizeof bad, "%s", problem); /* there but unusable: say why, */
                all_absent = false;                       /* unless an alternative is fine */
            }
            name += n + (name[n] == '|');
        }
        if (found)
            continue;
        if (!all_absent) {
            key_error(ld, key_where(ld, i), k->name, "%s", bad);
        } else {
            if (missing[0])
                strcat(missing, ", ");
            snapshot_entry_phrase(missing, sizeof missing, e, "");
        }
    }
    if (missing[0])
        key_error(ld, key_where(ld, i), k->name, "\"%s\" is not a snapshot the native embedder "
                  "can load: missing %s", dir, missing);
}

/* The first 8 bytes of a GGUF file: the magic "GGUF", then the version as a little-endian
 * uint32. engine/decode/gguf.c reads versions 2 and 3. */
static void check_gguf(CfgLoad *ld, int i, const char *path)
{
    const CfgKey *k = &cfg_schema[i];
    const config_setting_t *where = key_where(ld, i);
    unsigned char head[8];
    FILE *f = fopen(path, "rb");
    if (!f) {
        key_error(ld, where, k->name, "cannot open \"%s\": %s", path, strerror(errno));
        return;
    }
    size_t n = fread(head, 1, sizeof head, f);
    int read_errno = ferror(f) ? (errno ? errno : EIO) : 0;
    fclose(f);
    if (read_errno) {
        key_error(ld, where, k->name, "cannot read \"%s\": %s", path, strerror(read_errno));
        return;
    }
    if (n < 4 || memcmp(head, "GGUF", 4) != 0) {
        key_error(ld, where, k->name, "\"%s\" is not a GGUF file (it does not start with "
                  "\"GGUF\")", path);
        return;
    }
    if (n < 8) {
        key_error(ld, where, k->name, "\"%s\" ends inside its GGUF header", path);
        return;
    }
    uint32_t version = (uint32_t)head[4] | (uint32_t)head[5] << 8 | (uint32_t)head[6] << 16 |
                       (uint32_t)head[7] << 24;
    if (version != 2 && version != 3)
        key_error(ld, where, k->name, "\"%s\" is GGUF version %" PRIu32 "; the native decoder "
                  "reads versions 2 and 3", path, version);
}

static void warn_if_others_read(CfgLoad *ld, int i, const char *path, mode_t mode)
{
    if (!(mode & (S_IRGRP | S_IROTH)))
        return;
    const char *who = (mode & S_IRGRP) && (mode & S_IROTH) ? "group and others"
                    : (mode & S_IRGRP) ? "group" : "others";
    key_warning(ld, key_where(ld, i), cfg_schema[i].name, "\"%s\" is readable by %s "
                "(mode %04o); chmod 600 it", path, who, (unsigned)(mode & 07777));
}

static void check_path(CfgLoad *ld, int i, const char *path)
{
    const CfgKey *k = &cfg_schema[i];
    const config_setting_t *where = key_where(ld, i);
    struct stat st;
    char gguf[PATH_MAX + 128] = "";
    if (stat(path, &st) != 0) {
        if (errno != ENOENT) {
            key_error(ld, where, k->name, "cannot access \"%s\": %s", path, strerror(errno));
            return;
        }
        char cwd[PATH_MAX];
        if (path[0] != '/' && getcwd(cwd, sizeof cwd))
            key_error(ld, where, k->name, "\"%s\" does not exist (relative paths are resolved "
                      "from the current directory, %s)", path, cwd);
        else
            key_error(ld, where, k->name, "\"%s\" does not exist", path);
    } else if (k->path == CFG_PATH_SNAPSHOT && cfg_snapshot_gguf(path, gguf, sizeof gguf) != 0) {
        if (gguf[0] && access(gguf, F_OK) != 0) /* several: gguf holds the reason */
            key_error(ld, where, k->name, "%s", gguf);
        else
            check_gguf(ld, i, gguf); /* a GGUF embedder (engine/embed/gguf_embed.c) */
    } else if (path_is_dir(k->path) && !S_ISDIR(st.st_mode)) {
        key_error(ld, where, k->name, "\"%s\" is not a directory", path);
    } else if (!path_is_dir(k->path) && !S_ISREG(st.st_mode)) {
        key_error(ld, where, k->name, "\"%s\" is not a regular file", path);
    } else if (!path_is_dir(k->path) && access(path, R_OK) != 0) {
        key_error(ld, where, k->name, "\"%s\" is not readable: %s", path, strerror(errno));
    } else if (k->path == CFG_PATH_SNAPSHOT) {
        check_snapshot(ld, i, path);
    } else if (k->path == CFG_PATH_GGUF) {
        check_gguf(ld, i, path);
    } else if (k->path == CFG_PATH_SECRET) {
        warn_if_others_read(ld, i, path, st.st_mode);
    }
}

/* required_when and path rules of every string key. */
static void check_needs(CfgLoad *ld)
{
    for (int i = 0; i < CFG_NKEYS; i++) {
        const CfgKey *k = &cfg_schema[i];
        if (k->type != CFG_STRING || ld->key_bad[i])
            continue;
        const char *v = *str_field(ld->cfg, k);
        bool needed = k->required_when && k->required_when->holds(ld);
        if (needed && !*v)
            key_error(ld, key_where(ld, i), k->name, "%s is required when %s", k->name,
                      k->required_when->doc);
        else if (k->path != CFG_PATH_NONE && *v && (!k->required_when || needed))
            check_path(ld, i, v);
    }
}

static void rule_lookahead_holds_a_batch(CfgLoad *ld)
{
    const BatchConfig *b = &ld->cfg->batch;
    if (!key_ok(ld, "batch.lookahead") || !key_ok(ld, "batch.max_texts") ||
        b->lookahead >= b->max_texts)
        return;
    key_error(ld, rule_where(ld, "batch.lookahead", "batch.max_texts"), "batch.lookahead",
              "%d must be at least batch.max_texts (%d)", b->lookahead, b->max_texts);
}

/* A cuda:N device that this build knows (else check_device already refused it) for a native
 * backend that has no CUDA implementation. */
static void device_needs_cuda_backend(CfgLoad *ld, const char *key, bool native, bool built,
                                      const char *what)
{
    int i = key_index(key), index;
    if (!native || built || i < 0 || ld->key_bad[i])
        return;
    const char *device = *str_field(ld->cfg, &cfg_schema[i]);
    if (!cfg_parse_device(device, &index) || index < 0)
        return;
    key_error(ld, key_where(ld, i), key, "\"%s\": the native %s has no CUDA backend yet in this "
              "build; use \"cpu\"", device, what);
}

static void rule_embedder_device_has_a_backend(CfgLoad *ld)
{
    device_needs_cuda_backend(ld, "embedder.device", embedder_is_native(ld),
                              cfg_build_has_cuda_embedder(), "embedder");
}

static void rule_decoder_device_has_a_backend(CfgLoad *ld)
{
    device_needs_cuda_backend(ld, "decoder.device", decoder_is_native(ld),
                              cfg_build_has_cuda_decoder(), "decoder");
}

static void rule_embedder_precision_fits_device(CfgLoad *ld)
{
    int i = key_index("embedder.precision"), index;
    if (!embedder_is_native(ld) || i < 0 || ld->key_bad[i] || !key_ok(ld, "embedder.device"))
        return;
    const char *prec = ld->cfg->embedder.precision, *device = ld->cfg->embedder.device;
    if (!cfg_parse_device(device, &index))
        return;
    bool cpu = index < 0;
    if (cpu ? strcmp(prec, "tf32") != 0 && strcmp(prec, "fp16") != 0 : strcmp(prec, "int8") != 0)
        return;
    key_error(ld, rule_where(ld, "embedder.precision", "embedder.device"), "embedder.precision",
              "\"%s\" does not run on embedder.device \"%s\"; %s", prec, device,
              cpu ? "the cpu runs fp32, bf16 or int8" : "a cuda device runs fp32, tf32, fp16 or bf16");
}

static void rule_visibility_exceeds_block(CfgLoad *ld)
{
    const QueueConfig *q = &ld->cfg->queue;
    if (!key_ok(ld, "queue.visibility_timeout_ms") || !key_ok(ld, "queue.block_ms") ||
        q->visibility_timeout_ms > q->block_ms)
        return;
    key_error(ld, rule_where(ld, "queue.visibility_timeout_ms", "queue.block_ms"),
              "queue.visibility_timeout_ms",
              "%d must be greater than queue.block_ms (%d)", q->visibility_timeout_ms,
              q->block_ms);
}

/* ------------------------------------------------------------------------------------------ */
/* Public API                                                                                 */

static void file_error(CfgLoad *ld, const char *file, int line, const char *reason)
{
    errs_push(ld, line, format("%s:%d: %s", file, line, reason));
}

static int load_text(const char *text, const char *name, Config *out, CfgErrors *errs)
{
    CfgLoad ld = { .name = name, .text = text, .cfg = out, .errs = errs };
    config_t lc;
    config_init(&lc);
    bool parsed = config_read_string(&lc, text) == CONFIG_TRUE;
    if (!parsed) { /* nothing else can be read: this is the only message */
        const char *file = config_error_file(&lc) ? config_error_file(&lc) : name;
        file_error(&ld, file, config_error_line(&lc), config_error_text(&lc));
    } else if (apply_defaults(out) != 0 || !(out->path = strdup(name))) {
        ld.oom = true;
    } else {
        read_file_settings(&ld, config_root_setting(&lc));
        check_needs(&ld);
        for (size_t r = 0; r < sizeof cfg_rules / sizeof cfg_rules[0]; r++)
            cfg_rules[r].check(&ld);
    }
    config_destroy(&lc);
    errs_sort_and_finish(&ld);
    if (!parsed || ld.oom || errs->count > 0) {
        cfg_free(out);
        return -1;
    }
    return 0;
}

static void load_begin(Config *out, CfgErrors *errs)
{
    memset(out, 0, sizeof *out);
    memset(errs, 0, sizeof *errs);
}

int cfg_load_string(const char *text, const char *name, Config *out, CfgErrors *errs)
{
    load_begin(out, errs);
    return load_text(text ? text : "", name ? name : "<string>", out, errs);
}

/* Reads the whole file into a NUL-terminated buffer; NULL with errno set on failure. */
static char *read_whole_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t len = 0, cap = 4096;
    char *buf = malloc(cap);
    while (buf) {
        len += fread(buf + len, 1, cap - 1 - len, f);
        if (ferror(f) || feof(f))
            break;
        char *grown = realloc(buf, cap * 2);
        if (!grown) {
            free(buf);
            buf = NULL;
            break;
        }
        buf = grown;
        cap *= 2;
    }
    int saved = ferror(f) ? (errno ? errno : EIO) : buf ? 0 : ENOMEM;
    fclose(f);
    if (saved) {
        free(buf);
        errno = saved;
        return NULL;
    }
    buf[len] = '\0';
    return buf;
}

int cfg_load(const char *path, Config *out, CfgErrors *errs)
{
    const char *name = path ? path : CFG_DEFAULT_PATH;
    load_begin(out, errs);
    errno = 0;
    char *text = read_whole_file(name);
    if (!text) {
        CfgLoad ld = { .name = name, .errs = errs };
        char *reason = format("cannot read the config file: %s", strerror(errno));
        if (reason)
            file_error(&ld, name, 0, reason);
        free(reason);
        errs_sort_and_finish(&ld);
        return -1;
    }
    int rc = load_text(text, name, out, errs);
    free(text);
    return rc;
}

void cfg_free(Config *cfg)
{
    if (!cfg)
        return;
    for (int i = 0; i < CFG_NKEYS; i++)
        if (cfg_schema[i].type == CFG_STRING)
            free(*str_field(cfg, &cfg_schema[i]));
    free(cfg->path);
    memset(cfg, 0, sizeof *cfg);
}

void cfg_errors_free(CfgErrors *errs)
{
    if (!errs)
        return;
    for (int i = 0; i < errs->count; i++)
        free(errs->msgs[i]);
    free(errs->msgs);
    for (int i = 0; i < errs->n_warnings; i++)
        free(errs->warnings[i]);
    free(errs->warnings);
    memset(errs, 0, sizeof *errs);
}

void cfg_errors_print(const CfgErrors *errs, FILE *out)
{
    for (int i = 0; errs && i < errs->n_warnings; i++)
        fprintf(out, "%s\n", errs->warnings[i]);
    for (int i = 0; errs && i < errs->count; i++)
        fprintf(out, "%s\n", errs->msgs[i]);
}

static bool ends_with_gguf(const char *name)
{
    size_t n = strlen(name);
    return n > 5 && strcmp(name + n - 5, ".gguf") == 0;
}

int cfg_snapshot_gguf(const char *snapshot, char *out, size_t outlen)
{
    struct stat st;
    if (!snapshot || stat(snapshot, &st) != 0)
        return 0;
    if (S_ISREG(st.st_mode)) {
        if (!ends_with_gguf(snapshot))
            return 0;
        snprintf(out, outlen, "%s", snapshot);
        return 1;
    }
    if (!S_ISDIR(st.st_mode))
        return 0;
    char probe[PATH_MAX];
    snprintf(probe, sizeof probe, "%s/model.safetensors", snapshot);
    if (access(probe, F_OK) == 0) /* a sentence-transformers snapshot, whatever else it holds */
        return 0;
    DIR *d = opendir(snapshot);
    if (!d)
        return 0;
    int found = 0;
    char first[256] = "";
    for (struct dirent *de; (de = readdir(d)) != NULL;) {
        if (de->d_name[0] == '.' || !ends_with_gguf(de->d_name))
            continue;
        if (found++ == 0)
            snprintf(first, sizeof first, "%s", de->d_name);
        else if (found == 2)
            snprintf(out, outlen, "\"%s\" holds several .gguf files (%s, %s, ...): name one of them", snapshot,
                     first, de->d_name);
    }
    closedir(d);
    if (found > 1)
        return -1;
    if (found == 1)
        snprintf(out, outlen, "%s%s%s", snapshot, snapshot[strlen(snapshot) - 1] == '/' ? "" : "/", first);
    return found;
}

bool cfg_parse_device(const char *device, int *cuda_index)
{
    if (strcmp(device, "cpu") == 0) {
        *cuda_index = -1;
        return true;
    }
    if (strncmp(device, "cuda:", 5) != 0 || !isdigit((unsigned char)device[5]))
        return false;
    long n = 0;
    for (const char *p = device + 5; *p; p++) {
        if (!isdigit((unsigned char)*p) || n > (INT_MAX - 9) / 10)
            return false;
        n = n * 10 + (*p - '0');
    }
    *cuda_index = (int)n;
    return true;
}

bool cfg_parse_listen(const char *listen, char *host, size_t hostlen, int *port, bool *ipv6)
{
    const char *colon = strrchr(listen, ':');
    if (!colon || colon == listen || hostlen < 2)
        return false;
    size_t n = (size_t)(colon - listen);
    const char *h = listen;
    *ipv6 = listen[0] == '[';
    if (*ipv6) {
        if (n < 3 || listen[n - 1] != ']')
            return false;
        h++;
        n -= 2;
    }
    if (n >= hostlen)
        return false;
    memcpy(host, h, n);
    host[n] = '\0';
    unsigned char addr[16];
    if (inet_pton(*ipv6 ? AF_INET6 : AF_INET, host, addr) != 1)
        return false;
    const char *p = colon + 1;
    long v = 0;
    if (!*p)
        return false;
    for (; *p; p++) {
        if (!isdigit((unsigned char)*p) || (v = v * 10 + (*p - '0')) > 65535)
            return false;
    }
    if (v < 1)
        return false;
    *port = (int)v;
    return true;
}

const char *cfg_schema_key(int i)
{
    return i >= 0 && i < CFG_NKEYS ? cfg_schema[i].name : NULL;
}

bool cfg_build_has_cuda(void)
{
#ifdef WEAVER_HAVE_CUDA
    return true;
#else
    return false;
#endif
}

/* The native embedder runs on CUDA whenever the CUDA device layer is built (kernels/cuda/,
 * engine/embed/bert_dev.c). The native decoder has no CUDA implementation yet: the change that
 * adds one makes its query follow the build too. */
bool cfg_build_has_cuda_embedder(void)
{
    return cfg_build_has_cuda();
}

bool cfg_build_has_cuda_decoder(void)
{
    return cfg_build_has_cuda();
}

bool cfg_build_has_test_backends(void)
{
#ifdef WEAVER_TEST_BACKENDS
    return true;
#else
    return false;
#endif
}

/* ------------------------------------------------------------------------------------------ */
/* docs/config.md                                                                             */

static void doc_default(FILE *out, const CfgKey *k)
{
    switch (k->type) {
    case CFG_INT: fprintf(out, "`%d`", k->int_default); break;
    case CFG_BOOL: fprintf(out, "`%s`", k->int_default ? "true" : "false"); break;
    case CFG_STRING: /* as written in a config file: a newline as \n, so the table row stays one line */
        fputs("`\"", out);
        for (const char *c = k->str_default; *c; c++)
            *c == '\n' ? fputs("\\n", out) : fputc(*c, out);
        fputs("\"`", out);
        break;
    }
}

/* How docs/config.md names what a path must be: the short form for the "Allowed" column, the
 * long one for the rules. Empty for CFG_PATH_NONE. */
static void doc_path(char *buf, size_t len, CfgPathKind kind, bool rule)
{
    buf[0] = '\0';
    switch (kind) {
    case CFG_PATH_NONE: break;
    case CFG_PATH_DIR:
        snprintf(buf, len, "%s", rule ? "an existing directory" : "a directory");
        break;
    case CFG_PATH_FILE:
        snprintf(buf, len, "%s", rule ? "an existing, readable regular file" : "a readable file");
        break;
    case CFG_PATH_SECRET:
        snprintf(buf, len, "%s", rule ? "an existing, readable regular file; a warning (not an "
                 "error) when group or others may read it: `chmod 600` it" : "a readable file");
        break;
    case CFG_PATH_SNAPSHOT:
        if (!rule) {
            snprintf(buf, len, "a snapshot directory");
            break;
        }
        snprintf(buf, len, "a directory holding, as readable regular files, what the native "
                 "embedder loads: ");
        for (size_t e = 0; e < CFG_NSNAPSHOT_FILES; e++) {
            if (e > 0)
                strncat(buf, e + 1 < CFG_NSNAPSHOT_FILES ? ", " : " and ", len - strlen(buf) - 1);
            snapshot_entry_phrase(buf, len, e, "`");
        }
        break;
    case CFG_PATH_GGUF:
        snprintf(buf, len, "%s", rule ? "a readable regular file that starts with the GGUF magic "
                 "(`GGUF`) and version 2 or 3" : "a GGUF file");
        break;
    }
}

static void doc_allowed(FILE *out, const CfgKey *k)
{
    char buf[256];
    if (k->type == CFG_INT) {
        format_range(buf, sizeof buf, k);
        fprintf(out, "%s", buf);
    } else if (k->type == CFG_BOOL) {
        fprintf(out, "`true`, `false`");
    } else if (k->allowed) {
        for (const char *const *a = k->allowed; *a; a++)
            fprintf(out, "%s`\"%s\"`", a == k->allowed ? "" : ", ", *a);
    } else if (k->check && k->check->doc) {
        fprintf(out, "%s", k->check->doc);
    } else if (k->path != CFG_PATH_NONE) {
        doc_path(buf, sizeof buf, k->path, false);
        fprintf(out, "%spath of %s", k->required_when ? "" : "empty, or ", buf);
    } else {
        fprintf(out, "any string");
    }
    if (k->type == CFG_STRING && k->max_len)
        fprintf(out, ", at most %zu bytes", k->max_len);
}

static void doc_group(FILE *out, int g)
{
    fprintf(out, "## `%s`\n\n%s\n\n", cfg_groups[g].name, cfg_groups[g].doc);
    fprintf(out, "| Key | Type | Default | Allowed | Required | Description |\n");
    fprintf(out, "|---|---|---|---|---|---|\n");
    for (int i = 0; i < CFG_NKEYS; i++) {
        const CfgKey *k = &cfg_schema[i];
        if (key_group(i) != g)
            continue;
        static const char *const type_names[] = { "int", "bool", "string" };
        fprintf(out, "| `%s` | %s | ", k->name, type_names[k->type]);
        doc_default(out, k);
        fprintf(out, " | ");
        doc_allowed(out, k);
        if (k->required_when)
            fprintf(out, " | when `%s` | %s |\n", k->required_when->doc, k->doc);
        else
            fprintf(out, " | no | %s |\n", k->doc);
    }
    fprintf(out, "\n");
}

static void doc_rules(FILE *out)
{
    fprintf(out, "## Cross-field rules\n\n"
                 "Checked after every key has been read; each broken rule is its own error.\n\n");
    for (int i = 0; i < CFG_NKEYS; i++) {
        const CfgKey *k = &cfg_schema[i];
        char buf[512];
        doc_path(buf, sizeof buf, k->path, true);
        const char *what = buf[0] ? buf : NULL;
        if (k->required_when && what)
            fprintf(out, "- When `%s`, `%s` must be non-empty and name %s.\n",
                    k->required_when->doc, k->name, what);
        else if (k->required_when)
            fprintf(out, "- When `%s`, `%s` must be non-empty.\n", k->required_when->doc, k->name);
        else if (what)
            fprintf(out, "- `%s`, when non-empty, must name %s.\n", k->name, what);
    }
    for (size_t r = 0; r < sizeof cfg_rules / sizeof cfg_rules[0]; r++)
        fprintf(out, "- %s\n", cfg_rules[r].doc);
    fprintf(out,
        "- A device or backend that this build does not contain is an error, never a silent "
        "fallback: `\"cuda:N\"` needs a build with CUDA (`-DWEAVER_CUDA=ON`, or `AUTO` with "
        "`nvcc` found), and `test-hash` / `test-echo` need `-DWEAVER_TEST_BACKENDS=ON`.\n\n");
}

int cfg_write_docs(FILE *out)
{
    fprintf(out,
        "# Configuration reference\n\n"
        "<!-- Generated by cfg_write_docs() from the schema table in config/config.c; do not "
        "edit by hand.\n     Regenerate: WEAVER_REGEN_DOCS=1 ctest -R test_cfg_docs -->\n\n"
        "weaver-engine reads one [libconfig](https://hyperrealm.github.io/libconfig/) file: "
        "`./weaver.conf` unless `--config PATH` names another. Keys sit in groups, e.g.\n\n"
        "```\nredis = {\n  host = \"127.0.0.1\";\n  port = 6379;\n};\n```\n\n"
        "Every key is optional and has the default listed below; a key marked *when ...* must "
        "be set (non-empty) when that condition holds. Unknown groups and keys are errors "
        "(with a *did you mean* hint), so a typo never falls back to a default silently. The "
        "whole file is validated before anything starts, and every problem is reported at once, "
        "in line order, as `file:line: key: reason` (line 0 when the key is not in the file and "
        "neither is its group); `weaver-engine check-config` does only this and exits with "
        "status 78 (`EX_CONFIG`) on a bad file. A few things are worth a warning but not a "
        "refusal (a secret file that others may read): they are printed first, as "
        "`file:line: key: warning: reason`, by `check-config` and at every start.\n\n"
        "Relative paths (`embedder.snapshot`, `decoder.model`, `embedder.token_file`, "
        "`redis.password_file`) are resolved from the engine's current working directory, not "
        "from the directory of the config file; under systemd set `WorkingDirectory=` or use "
        "absolute paths. `ops/weaver.conf` is a complete, commented example.\n\n");
    for (int g = 0; g < CFG_NGROUPS; g++)
        doc_group(out, g);
    doc_rules(out);
    fprintf(out,
        "## Environment variables\n\n"
        "- `WEAVER_REDIS_PASSWORD`: the Redis password, used when `redis.password_file` is empty "
        "(a password file, when set, wins). Keeps the secret out of the config file and out of "
        "the process arguments.\n");
    return fflush(out) != 0 || ferror(out) ? -1 : 0;
}
