/* embedder_test_hash.c: a test-only embedder backend (built with -DWEAVER_TEST_BACKENDS=ON).
 * It does no model work: each text maps to a deterministic vector derived from a hash of its
 * bytes, so queue tests and bench/queue measure the queue alone and can check every vector.
 * Tokens are counted as ceil(bytes / 4) + 2 so batching still has something to sort by.
 * The product's configs never name it. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/embedder_impl.h"

struct EmbedWorkspace {
    int unused;
};

/* WEAVER_TEST_HASH_DELAY_MS makes every embed call take that long, so tests can kill an engine
 * in the middle of a batch. */
static int delay_ms(void)
{
    const char *v = getenv("WEAVER_TEST_HASH_DELAY_MS");
    return v ? atoi(v) : 0;
}

static int hash_open(Embedder *e, const EmbedderConfig *cfg, const BatchConfig *batch)
{
    (void)batch;
    snprintf(e->info.model_id, sizeof e->info.model_id, "test-hash");
    e->info.dim = cfg->dim;
    e->info.pooling = EMBED_POOL_MEAN;
    e->info.normalize = true;
    e->info.max_seq_len = 512;
    snprintf(e->info.snapshot_hash, sizeof e->info.snapshot_hash, "%064d", 0);
    e->impl = (void *)(intptr_t)delay_ms();
    return 0;
}

static void hash_close(Embedder *e) { (void)e; }
static EmbedWorkspace *hash_ws_new(Embedder *e) { (void)e; return calloc(1, sizeof(EmbedWorkspace)); }
static void hash_ws_free(EmbedWorkspace *ws) { free(ws); }

static int hash_count(Embedder *e, EmbedWorkspace *ws, const char *text, size_t len)
{
    (void)e, (void)ws, (void)text;
    return (int)((len + 3) / 4) + 2;
}

/* splitmix64: the same generator the tests re-implement to check vectors. */
static uint64_t splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static int hash_embed(Embedder *e, EmbedWorkspace *ws, const EmbedText *texts, int n, float *out, int *ntokens,
                      EmbedStatus *status)
{
    /* The delay passes in 10 ms slices so a cancel ends it, like a native pack boundary. */
    for (int waited = 0; waited < (int)(intptr_t)e->impl; waited += 10) {
        if (embedder_cancelled(e))
            return EMBEDDER_ECANCELED;
        usleep(10 * 1000);
    }
    for (int i = 0; i < n; i++) {
        int tokens = hash_count(e, ws, texts[i].text, texts[i].len);
        if (tokens > e->info.max_seq_len && !texts[i].truncate) {
            status[i] = EMBED_ERR_TOO_LONG;
            ntokens[i] = tokens;
            continue;
        }
        uint64_t h = 1469598103934665603ULL; /* FNV-1a over the text seeds the stream */
        for (size_t k = 0; k < texts[i].len; k++)
            h = (h ^ (unsigned char)texts[i].text[k]) * 1099511628211ULL;
        float *v = out + (size_t)i * (size_t)e->info.dim;
        for (int d = 0; d < e->info.dim; d++)
            v[d] = (float)((double)(splitmix(&h) >> 11) / 9007199254740992.0 * 2.0 - 1.0);
        ntokens[i] = tokens < e->info.max_seq_len ? tokens : e->info.max_seq_len;
        status[i] = EMBED_OK;
    }
    return 0;
}

const EmbedderOps embedder_test_hash_ops = {
    .name = "test-hash",
    .open = hash_open,
    .close = hash_close,
    .workspace_new = hash_ws_new,
    .workspace_free = hash_ws_free,
    .count_tokens = hash_count,
    .embed = hash_embed,
};
