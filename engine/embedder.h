/* embedder.h: one interface for every embedder backend (native cpu/cuda, remote, test-hash).
 * The rest of the engine only sees this header; it cannot tell backends apart. Backends fill
 * an EmbedderOps vtable (embedder_impl.h). Nothing here logs or exits: errors come back in
 * the handle's errstr or in per-text statuses. */
#ifndef WEAVER_EMBEDDER_H
#define WEAVER_EMBEDDER_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config/config.h"

typedef struct Embedder Embedder;
typedef struct EmbedWorkspace EmbedWorkspace;

#define EMBEDDER_ID_MAX 256

/* LAST (GGUF decoder embedders): the final token's state, after the EOS the model appends. */
typedef enum EmbedPooling { EMBED_POOL_MEAN = 0, EMBED_POOL_CLS, EMBED_POOL_MAX, EMBED_POOL_LAST } EmbedPooling;

/* Backend-agnostic identity (the cohort pin compares these). */
typedef struct EmbedderInfo {
    char model_id[EMBEDDER_ID_MAX];
    char snapshot_hash[65]; /* hex sha256 over the snapshot's canonical manifest, "" if unknown */
    int dim;
    EmbedPooling pooling;
    bool normalize;         /* the model's default (a Normalize module is present) */
    int max_seq_len;        /* in tokens, including special tokens */
    /* Not identity (the pin ignores them): the precision the linear layers run in ("fp32",
     * "bf16", "int8", "tf32", "fp16"; "" for a backend without one), and why it is not the
     * configured one ("" when it is), for the start-up log. */
    char precision[8];
    char precision_note[160];
} EmbedderInfo;

/* One text to embed. `truncate` = false asks for an error instead of truncation. */
typedef struct EmbedText {
    const char *text;
    size_t len;
    bool truncate;
} EmbedText;

/* Per-text outcome. */
typedef enum EmbedStatus {
    EMBED_OK = 0,
    EMBED_ERR_TOO_LONG = 1,  /* more tokens than max_seq_len and truncate == false */
    EMBED_ERR_BACKEND = 2,   /* the backend failed for this text; errstr says why */
} EmbedStatus;

/* Opens the backend named by cfg->backend. On failure returns NULL and writes why into err. */
Embedder *embedder_open(const EmbedderConfig *cfg, const BatchConfig *batch, char *err, size_t errlen);
void embedder_close(Embedder *e);               /* NULL-safe */
const EmbedderInfo *embedder_info(const Embedder *e);
const char *embedder_errstr(const Embedder *e); /* last whole-call error */

/* Per-worker scratch (activations, token buffers), sized once from the batch config. */
EmbedWorkspace *embedder_workspace_new(Embedder *e);
void embedder_workspace_free(Embedder *e, EmbedWorkspace *ws); /* NULL-safe */

/* Number of tokens `t` becomes (special tokens included, before truncation). Used by the
 * batcher to size batches. Returns < 0 on error. */
int embedder_count_tokens(Embedder *e, EmbedWorkspace *ws, const char *text, size_t len);

/* embedder_embed's return when the cancel flag was set: outputs and statuses are undefined. */
#define EMBEDDER_ECANCELED (-2)
/* embedder_embed's return when the device is lost (a sticky CUDA error: illegal address, launch
 * failure, ...): nothing more can run on it; the caller stops the engine and leaves the batch's
 * jobs pending for other consumers. embedder_errstr names the failed call. */
#define EMBEDDER_EDEVICE (-3)

/* Tokens per forward batch when batch.token_budget = 0 and nothing sizes it from a device. */
#define EMBEDDER_DEFAULT_TOKEN_BUDGET 16384

/* Tokens per forward batch of this embedder: batch.token_budget, or, when that is 0, the budget
 * sized from the device's free memory (native on cuda:N), else EMBEDDER_DEFAULT_TOKEN_BUDGET. */
int embedder_token_budget(const Embedder *e);

/* The first start-up check, before Redis: the device cfg names exists in this build and on this
 * machine (native on cuda:N: the CUDA runtime answers and sees more than N devices). Opens
 * nothing. 0, or < 0 with what was found in err. */
int embedder_check_device(const EmbedderConfig *cfg, char *err, size_t errlen);

/* A flag that, once set, makes every embed call in progress stop at its next unit of work and
 * return EMBEDDER_ECANCELED (the daemon's abandon flag: a stop past its grace). NULL = none. */
void embedder_set_cancel(Embedder *e, const atomic_bool *flag);

/* Embeds n texts. out is n * info.dim floats: the pooled vector, NOT normalised (the caller
 * applies per-job dimensions and normalisation with embed_postprocess). ntokens[i] gets the
 * tokens used (after truncation). status[i] is set for every text. Returns 0 when the call
 * itself worked (individual texts may still have failed), < 0 when nothing could be done
 * (then embedder_errstr says why). Thread-safe across workspaces. */
int embedder_embed(Embedder *e, EmbedWorkspace *ws, const EmbedText *texts, int n,
                   float *out, int *ntokens, EmbedStatus *status);

/* An instruction-style query as the model reads it: format (embedder.query_format; NULL or "" =
 * EMBED_QUERY_FORMAT) with its one {instruction} and one {text} replaced. Models document their
 * own: Qwen3-Embedding's card has no space after "Query:", gte-Qwen2's and e5-mistral's have one.
 * Writes at most cap bytes to dst and returns the full length (embed_query_len), so a caller can
 * size dst first. */
#define EMBED_QUERY_FORMAT "Instruct: {instruction}\nQuery: {text}"
size_t embed_query_len(const char *format, size_t instruction_len, size_t text_len);
size_t embed_render_query(char *dst, size_t cap, const char *format, const char *instruction, size_t instruction_len,
                          const char *text, size_t text_len);

/* Matryoshka truncation to out_dim (<= dim; 0 = keep) then optional L2 normalisation, in place.
 * Returns the resulting dimension. */
int embed_postprocess(float *vec, int dim, int out_dim, bool normalize);

#endif
