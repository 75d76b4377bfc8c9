/* embed_native.c: the `native` embedder backend (embedder_native_ops), on the CPU or, with
 * device = "cuda:N", through the device layer (bert_dev.c: one weight upload, one stream and
 * arena per workspace, packs of up to the token budget, split-and-retry on out-of-memory; a lost
 * device returns EMBEDDER_EDEVICE). On the CPU: opens a
 * sentence-transformers snapshot (snapshot.c, wordpiece.c, bert.c), and embeds texts in
 * packs: tokenize a window of texts, sort it by length, cut it into packs of consecutive
 * sequences (no padding, at most pack_tokens tokens each), run the encoder on every pack,
 * scatter pooled vectors back to input order. Each workspace owns `threads` encoder lanes (one
 * scratch each, helper threads parked on a condition variable): the lanes take packs from a
 * shared atomic counter and run the whole encoder on each with single-threaded kernels, so there
 * is no synchronisation inside a forward pass and a descheduled lane holds nobody up. Workspaces are sized once from the batch config; embed allocates nothing.
 * Must not normalise (embed_postprocess does that), log or exit. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/embed/bert.h"
#include "engine/embed/bert_dev.h"
#include "engine/embed/gguf_embed.h"
#include "engine/embed/snapshot.h"
#include "engine/embed/snapshot_hash.h"
#include "engine/embed/wordpiece.h"
#include "engine/embedder_impl.h"
#include "kernels/device.h"
#include "kernels/gemm.h"

#define NATIVE_DEFAULT_TOKEN_BUDGET EMBEDDER_DEFAULT_TOKEN_BUDGET
#define NATIVE_DEFAULT_MAX_TEXTS 256
#define NATIVE_MAX_THREADS 64
/* Tokens per pack, the unit of work a lane takes (a text longer than this is a pack of its own):
 * small enough that a pack's activations stay in L2 between the encoder's steps (measured: 256
 * runs 3-4% faster than 512 on every corpus length) and that lanes balance, big enough that each
 * weight panel is reused over many rows. */
#define NATIVE_PACK_TOKENS 256

typedef struct Native {
    Snapshot snap;
    WpTokenizer *tk;
    BertModel *model; /* the cpu's weights; NULL on a device */
    Device *dev;      /* cuda:N (or the test-only fake device); NULL on the cpu */
    BertDev *dm;      /* the weights on dev */
    int token_budget; /* packed tokens per forward (>= max_seq_len) */
    int max_texts;    /* texts tokenized per window */
    int threads;      /* encoder lanes per workspace */
} Native;

typedef struct Lane {
    struct EmbedWorkspace *ws;
    BertScratch s;
    int32_t *packed;  /* this lane's packed ids (pack_tokens) */
    pthread_t th;
    int started;
} Lane;

struct EmbedWorkspace {
    Embedder *e;
    int nlanes, pack_tokens;
    Lane lanes[NATIVE_MAX_THREADS];
    pthread_mutex_t mu;
    pthread_cond_t go, done;
    unsigned gen;     /* bumped to start a round */
    int pending;      /* helper lanes still running this round */
    int quit;
    int32_t *ids;     /* max_texts x max_seq_len */
    int *lens, *order, *batch_lens;
    int *pack_start;  /* this round's packs: sorted positions pack_start[p] .. pack_start[p + 1] */
    int npacks;
    atomic_int next_pack; /* packs taken so far this round */
    int32_t *packed;  /* nlanes x pack_tokens; on a device, one pack of token_budget */
    float *pooled;    /* max_texts x hidden, in sorted order */
    BertDevRun *run;  /* on a device: this workspace's stream, arena and pinned buffer */
};

const struct DeviceOps *embed_native_device_ops(void) { return device_cuda_or_test_ops(); }

/* Opens the device path: device, weights, token budget. 0, or -1 with err set. */
static int native_open_device(Native *n, Embedder *e, int index, const EmbedderConfig *cfg, const BatchConfig *batch,
                              const char *weights, char *err, size_t errlen)
{
    const DeviceOps *ops = embed_native_device_ops();
    DevPrecision prec;
    const char *want = cfg->precision && cfg->precision[0] && strcmp(cfg->precision, "auto") != 0 ? cfg->precision : "fp16";
    if (!dev_precision_parse(want, &prec)) {
        snprintf(err, errlen, "embedder.precision \"%s\": a cuda device runs fp32, tf32, fp16 or bf16", want);
        return -1;
    }
    snprintf(e->info.precision, sizeof e->info.precision, "%s", dev_precision_name(prec));
    n->dev = device_open(ops, index, NULL, err, errlen);
    if (!n->dev) return -1;
    SafeTensors *st = st_open(weights, err, errlen);
    if (!st) return -1;
    n->dm = bert_dev_open(n->dev, st, &n->snap.bert, prec, err, errlen);
    st_close(st);
    if (!n->dm) return -1;
    int budget = batch ? batch->token_budget : 0;
    if (budget <= 0) {
        int workers = batch && batch->workers > 0 ? batch->workers : 1;
        int cap = batch && batch->token_budget_max > 0 ? batch->token_budget_max : 0;
        budget = bert_dev_token_budget(n->dm, workers, cap, n->snap.max_seq_len, err, errlen);
        if (budget <= 0) return -1;
    }
    n->token_budget = budget < n->snap.max_seq_len ? n->snap.max_seq_len : budget;
    e->token_budget = n->token_budget;
    n->threads = 1;
    return 0;
}

/* The configured cpu precision ("auto" = fp32). 0, or -1 with err set. */
int embed_cpu_precision(const EmbedderConfig *cfg, GemmPrecision *prec, char *err, size_t errlen)
{
    const char *want = cfg->precision && cfg->precision[0] ? cfg->precision : "auto";
    if (!strcmp(want, "auto") || !strcmp(want, "fp32")) *prec = GEMM_FP32;
    else if (!strcmp(want, "bf16")) *prec = GEMM_BF16;
    else if (!strcmp(want, "int8")) *prec = GEMM_INT8;
    else {
        snprintf(err, errlen, "embedder.precision \"%s\": the cpu runs fp32, bf16 or int8", want);
        return -1;
    }
    return 0;
}

/* Names the precision the loaded model runs in; on a cpu without the instructions bf16 or int8
 * need (the model fell back to fp32), a note saying so. */
static void note_cpu_precision(const Native *n, Embedder *e, GemmPrecision prec)
{
    GemmPrecision got = bert_precision(n->model);
    snprintf(e->info.precision, sizeof e->info.precision, "%s", gemm_precision_name(got));
    if (got != prec) {
        const char *isa = getenv("WEAVER_CPU_ISA");
        snprintf(e->info.precision_note, sizeof e->info.precision_note,
                 "embedder.precision %s: %s; running fp32", gemm_precision_name(prec),
                 isa && strcmp(isa, "avx512") != 0 ? "WEAVER_CPU_ISA caps the kernels below avx512"
                 : prec == GEMM_BF16 ? "this cpu has no AVX-512 BF16" : "this cpu has no AVX-512 VNNI");
    }
}

/* Opens the cpu path's weights in the configured precision. 0, or -1 with err set. */
static int native_open_cpu(Native *n, Embedder *e, const EmbedderConfig *cfg, const char *weights, char *err,
                           size_t errlen)
{
    GemmPrecision prec;
    if (embed_cpu_precision(cfg, &prec, err, errlen) != 0) return -1;
    n->model = bert_load_precision(weights, &n->snap.bert, prec, err, errlen);
    if (!n->model) return -1;
    note_cpu_precision(n, e, prec);
    return 0;
}

/* Takes packs from the shared counter until none is left, biggest (last) first, and encodes each:
 * a lane that is descheduled simply takes fewer packs, nobody waits for its share. */
static void lane_run(Lane *l)
{
    EmbedWorkspace *ws = l->ws;
    Native *n = ws->e->impl;
    const int L = n->snap.max_seq_len, H = n->snap.dim;
    for (;;) {
        int p = atomic_fetch_add_explicit(&ws->next_pack, 1, memory_order_relaxed);
        if (p >= ws->npacks || embedder_cancelled(ws->e)) return;
        p = ws->npacks - 1 - p;
        int j0 = ws->pack_start[p], j1 = ws->pack_start[p + 1], used = 0;
        for (int j = j0; j < j1; j++) {
            int k = ws->order[j];
            memcpy(l->packed + used, ws->ids + (size_t)k * L, (size_t)ws->lens[k] * sizeof(int32_t));
            used += ws->lens[k];
        }
        bert_forward(n->model, &l->s, l->packed, ws->batch_lens + j0, j1 - j0, n->snap.pooling,
                     ws->pooled + (size_t)j0 * H);
    }
}

static void *lane_main(void *arg)
{
    Lane *l = arg;
    EmbedWorkspace *ws = l->ws;
    unsigned seen = 0;
    for (;;) {
        pthread_mutex_lock(&ws->mu);
        while (ws->gen == seen && !ws->quit) pthread_cond_wait(&ws->go, &ws->mu);
        if (ws->quit) {
            pthread_mutex_unlock(&ws->mu);
            return NULL;
        }
        seen = ws->gen;
        pthread_mutex_unlock(&ws->mu);
        lane_run(l);
        pthread_mutex_lock(&ws->mu);
        if (--ws->pending == 0) pthread_cond_signal(&ws->done);
        pthread_mutex_unlock(&ws->mu);
    }
}

/* Runs this round's packs on every lane: lane 0 on the calling thread, the others on their helpers. */
static void lanes_run(EmbedWorkspace *ws)
{
    atomic_store(&ws->next_pack, 0);
    if (ws->nlanes == 1 || ws->npacks == 1) {
        lane_run(&ws->lanes[0]);
        return;
    }
    pthread_mutex_lock(&ws->mu);
    ws->pending = ws->nlanes - 1;
    ws->gen++;
    pthread_cond_broadcast(&ws->go);
    pthread_mutex_unlock(&ws->mu);
    lane_run(&ws->lanes[0]);
    pthread_mutex_lock(&ws->mu);
    while (ws->pending > 0) pthread_cond_wait(&ws->done, &ws->mu);
    pthread_mutex_unlock(&ws->mu);
}

static int native_open(Embedder *e, const EmbedderConfig *cfg, const BatchConfig *batch)
{
    char err[sizeof e->errstr];
    err[0] = '\0';
    if (!cfg->snapshot || !cfg->snapshot[0]) {
        snprintf(e->errstr, sizeof e->errstr, "embedder.snapshot is empty: the native backend needs a snapshot directory");
        return -1;
    }
    char gguf[4096 + 128];
    int is_gguf = cfg_snapshot_gguf(cfg->snapshot, gguf, sizeof gguf);
    if (is_gguf < 0) {
        snprintf(e->errstr, sizeof e->errstr, "%.250s", gguf);
        return -1;
    }
    if (!is_gguf && cfg->pooling && cfg->pooling[0]) {
        snprintf(e->errstr, sizeof e->errstr, "embedder.pooling \"%s\" is for GGUF embedders; a snapshot's pooling "
                 "comes from its 1_Pooling/config.json", cfg->pooling);
        return -1;
    }
    int index = -1;
    if (cfg->device && cfg->device[0] && !cfg_parse_device(cfg->device, &index)) {
        snprintf(e->errstr, sizeof e->errstr, "embedder.device '%s': expected \"cpu\" or \"cuda:N\"", cfg->device);
        return -1;
    }
    Native *n = calloc(1, sizeof *n);
    if (!n) {
        snprintf(e->errstr, sizeof e->errstr, "out of memory");
        return -1;
    }
    if (is_gguf) { /* bert: this encoder, from the file; a decoder: gguf_embed.c serves it from here on */
        int r = gguf_bert_open(gguf, cfg, &n->snap, &n->tk, &n->model, err, sizeof err);
        if (r == 1) {
            free(n);
            e->ops = &embedder_gguf_ops;
            return gguf_embed_open_file(e, gguf, cfg, batch);
        }
        if (r != 0) goto fail;
        if (index >= 0) {
            snprintf(err, sizeof err, "embedder.device \"%s\": a bert GGUF runs on the cpu only", cfg->device);
            goto fail;
        }
        GemmPrecision prec = GEMM_FP32;
        embed_cpu_precision(cfg, &prec, err, sizeof err); /* checked by gguf_bert_open */
        note_cpu_precision(n, e, prec);
        if (cfg->model_id && cfg->model_id[0])
            snprintf(e->info.model_id, sizeof e->info.model_id, "%s", cfg->model_id);
        else
            gguf_embed_model_id(gguf, e->info.model_id, sizeof e->info.model_id);
        if (snapshot_hash_file(gguf, e->info.snapshot_hash, err, sizeof err) != 0) goto fail;
        goto identity;
    }
    if (snapshot_load(cfg->snapshot, &n->snap, err, sizeof err) != 0) goto fail;
    n->tk = wp_open(cfg->snapshot, n->snap.do_lower_case, err, sizeof err);
    if (!n->tk) goto fail;
    if (wp_settings(n->tk)->vocab_size > n->snap.bert.vocab_size) {
        snprintf(err, sizeof err, "%s: the tokenizer has ids up to %d but config.json vocab_size is %d", cfg->snapshot,
                 wp_settings(n->tk)->vocab_size - 1, n->snap.bert.vocab_size);
        goto fail;
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/model.safetensors", cfg->snapshot);
    if (index >= 0) {
        if (native_open_device(n, e, index, cfg, batch, path, err, sizeof err) != 0) goto fail;
    } else {
        if (native_open_cpu(n, e, cfg, path, err, sizeof err) != 0) goto fail;
    }

    if (cfg->model_id && cfg->model_id[0])
        snprintf(e->info.model_id, sizeof e->info.model_id, "%s", cfg->model_id);
    else
        snapshot_basename(cfg->snapshot, e->info.model_id, sizeof e->info.model_id);
    if (snapshot_hash_cached(cfg->snapshot, e->info.snapshot_hash, err, sizeof err) != 0) goto fail;
identity:;
    EmbedderInfo *info = &e->info;
    info->dim = n->snap.dim;
    info->pooling = n->snap.pooling;
    info->normalize = n->snap.normalize;
    info->max_seq_len = n->snap.max_seq_len;

    n->max_texts = batch && batch->max_texts > 0 ? batch->max_texts : NATIVE_DEFAULT_MAX_TEXTS;
    if (n->dev) {
        e->impl = n;
        return 0;
    }
    n->token_budget = batch && batch->token_budget > 0 ? batch->token_budget : NATIVE_DEFAULT_TOKEN_BUDGET;
    if (n->token_budget < info->max_seq_len) n->token_budget = info->max_seq_len;

    int threads = cfg->threads > 0 ? cfg->threads : (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (threads < 1) threads = 1;
    if (threads > NATIVE_MAX_THREADS) threads = NATIVE_MAX_THREADS;
    n->threads = threads; /* parallelism comes from the lanes; the kernels inside a lane are single-threaded */
    e->impl = n;
    return 0;
fail:
    snprintf(e->errstr, sizeof e->errstr, "%s", err[0] ? err : "native embedder: open failed");
    wp_close(n->tk);
    bert_free(n->model);
    bert_dev_free(n->dm);
    device_close(n->dev);
    free(n);
    return -1;
}

const WpTokenizer *embed_native_wordpiece(const Embedder *e)
{
    const Native *n = e->impl;
    return n ? n->tk : NULL;
}

static void native_close(Embedder *e)
{
    Native *n = e->impl;
    if (!n) return;
    wp_close(n->tk);
    bert_free(n->model);
    bert_dev_free(n->dm);
    device_close(n->dev);
    free(n);
    e->impl = NULL;
}

static void native_workspace_free(EmbedWorkspace *ws)
{
    if (!ws) return;
    pthread_mutex_lock(&ws->mu);
    ws->quit = 1;
    pthread_cond_broadcast(&ws->go);
    pthread_mutex_unlock(&ws->mu);
    for (int i = 0; i < ws->nlanes; i++) {
        if (ws->lanes[i].started) pthread_join(ws->lanes[i].th, NULL);
        bert_scratch_free(&ws->lanes[i].s);
    }
    pthread_mutex_destroy(&ws->mu);
    pthread_cond_destroy(&ws->go);
    pthread_cond_destroy(&ws->done);
    free(ws->ids);
    free(ws->lens);
    free(ws->order);
    free(ws->batch_lens);
    free(ws->pack_start);
    free(ws->packed);
    free(ws->pooled);
    bert_dev_run_free(ws->run);
    free(ws);
}

static EmbedWorkspace *native_workspace_new(Embedder *e)
{
    Native *n = e->impl;
    EmbedWorkspace *ws = calloc(1, sizeof *ws);
    if (!ws) return NULL;
    ws->e = e;
    pthread_mutex_init(&ws->mu, NULL);
    pthread_cond_init(&ws->go, NULL);
    pthread_cond_init(&ws->done, NULL);
    size_t W = (size_t)n->max_texts, L = (size_t)n->snap.max_seq_len;
    /* the token budget is shared between lanes, and cut into packs of at most NATIVE_PACK_TOKENS;
     * each lane must still hold one longest text */
    int lanes = n->threads;
    int per = (n->token_budget + lanes - 1) / lanes;
    if (per > NATIVE_PACK_TOKENS) per = NATIVE_PACK_TOKENS;
    if (per < n->snap.max_seq_len) per = n->snap.max_seq_len;
    if (n->dev) { /* one pack of the whole budget, on the device; no lanes */
        char err[sizeof e->errstr];
        per = n->token_budget;
        lanes = 1;
        ws->run = bert_dev_run_new(n->dm, per, n->max_texts, 0, err, sizeof err);
        if (!ws->run) {
            snprintf(e->errstr, sizeof e->errstr, "%s", err);
            native_workspace_free(ws);
            return NULL;
        }
    }
    ws->nlanes = n->dev ? 0 : lanes;
    ws->pack_tokens = per;
    ws->ids = malloc(W * L * sizeof *ws->ids);
    ws->lens = malloc(W * sizeof *ws->lens);
    ws->order = malloc(W * sizeof *ws->order);
    ws->batch_lens = malloc(W * sizeof *ws->batch_lens);
    ws->pack_start = malloc((W + 1) * sizeof *ws->pack_start);
    ws->packed = malloc((size_t)per * lanes * sizeof *ws->packed);
    ws->pooled = malloc(W * (size_t)n->snap.dim * sizeof *ws->pooled);
    int ok = ws->ids && ws->lens && ws->order && ws->batch_lens && ws->pack_start && ws->packed && ws->pooled;
    for (int i = 0; ok && i < ws->nlanes; i++) {
        Lane *l = &ws->lanes[i];
        l->ws = ws;
        l->packed = ws->packed + (size_t)i * per;
        if (bert_scratch_init(&l->s, &n->snap.bert, per, n->snap.max_seq_len) != 0) ok = 0;
        if (ok && i > 0) {
            if (pthread_create(&l->th, NULL, lane_main, l) != 0) ok = 0;
            else l->started = 1;
        }
    }
    if (!ok) {
        snprintf(e->errstr, sizeof e->errstr, "cannot set up a workspace of %d tokens x %d threads", per, lanes);
        native_workspace_free(ws);
        return NULL;
    }
    return ws;
}

static int native_count_tokens(Embedder *e, EmbedWorkspace *ws, const char *text, size_t len)
{
    (void)ws;
    Native *n = e->impl;
    int32_t ids[2];
    int total = 0;
    if (wp_encode(n->tk, text, len, ids, 2, &total) < 0) return -1;
    return total;
}

void embed_sort_by_len(int *order, const int *lens, int n)
{
    for (int i = 1; i < n; i++) {
        int v = order[i], j = i;
        while (j > 0 && lens[order[j - 1]] > lens[v]) {
            order[j] = order[j - 1];
            j--;
        }
        order[j] = v;
    }
}

/* On the device: the sorted window in packs of consecutive sequences of up to token_budget
 * tokens, each encoded by bert_dev_forward (which splits a pack that runs out of memory). */
static int device_window(Embedder *e, EmbedWorkspace *ws, int ready)
{
    Native *nat = e->impl;
    const int L = nat->snap.max_seq_len, H = nat->snap.dim;
    for (int j0 = 0; j0 < ready;) {
        if (embedder_cancelled(e)) return EMBEDDER_ECANCELED;
        int j1 = j0, used = 0;
        while (j1 < ready && (j1 == j0 || used + ws->lens[ws->order[j1]] <= nat->token_budget)) {
            int k = ws->order[j1];
            memcpy(ws->packed + used, ws->ids + (size_t)k * L, (size_t)ws->lens[k] * sizeof(int32_t));
            ws->batch_lens[j1] = ws->lens[k];
            used += ws->lens[k];
            j1++;
        }
        int rc = bert_dev_forward(ws->run, ws->packed, ws->batch_lens + j0, j1 - j0, (DevPool)nat->snap.pooling,
                                  ws->pooled + (size_t)j0 * H);
        if (rc != DEV_OK) {
            char why[sizeof e->errstr];
            device_errstr_copy(nat->dev, why, sizeof why);
            snprintf(e->errstr, sizeof e->errstr, "%.220s%s", why, rc == DEV_ESTICKY ? " (the device is lost)" : "");
            return rc == DEV_ESTICKY ? EMBEDDER_EDEVICE : -1;
        }
        j0 = j1;
    }
    return 0;
}

static int native_embed(Embedder *e, EmbedWorkspace *ws, const EmbedText *texts, int n,
                        float *out, int *ntokens, EmbedStatus *status)
{
    Native *nat = e->impl;
    const int L = nat->snap.max_seq_len, H = nat->snap.dim;
    if (!ws || ws->e != e) {
        snprintf(e->errstr, sizeof e->errstr, "workspace does not belong to this embedder");
        return -1;
    }
    for (int w0 = 0; w0 < n; w0 += nat->max_texts) {
        int wn = n - w0 < nat->max_texts ? n - w0 : nat->max_texts;
        int ready = 0;
        for (int k = 0; k < wn; k++) {
            const EmbedText *t = &texts[w0 + k];
            int total = 0;
            ws->lens[k] = wp_encode(nat->tk, t->text ? t->text : "", t->text ? t->len : 0, ws->ids + (size_t)k * L, L, &total);
            if (!t->truncate && total > L) {
                status[w0 + k] = EMBED_ERR_TOO_LONG;
                if (ntokens) ntokens[w0 + k] = total;
                memset(out + (size_t)(w0 + k) * H, 0, (size_t)H * sizeof(float));
                continue;
            }
            status[w0 + k] = EMBED_OK;
            if (ntokens) ntokens[w0 + k] = ws->lens[k];
            ws->order[ready++] = k;
        }
        embed_sort_by_len(ws->order, ws->lens, ready);
        if (nat->dev) {
            int rc = device_window(e, ws, ready);
            if (rc != 0) return rc;
            for (int j = 0; j < ready; j++)
                memcpy(out + (size_t)(w0 + ws->order[j]) * H, ws->pooled + (size_t)j * H, (size_t)H * sizeof(float));
            continue;
        }
        /* cut the sorted window into packs of consecutive sequences; the lanes take them in turn.
         * The cap evens the packs out so each lane gets the same number: a 320-token window on two
         * lanes is two packs of 160, not 256 + 64 with one lane idle for most of the call. */
        int total = 0;
        for (int j = 0; j < ready; j++) total += ws->lens[ws->order[j]];
        int rounds = (total + ws->nlanes * ws->pack_tokens - 1) / (ws->nlanes * ws->pack_tokens);
        int cap = rounds > 0 ? (total + ws->nlanes * rounds - 1) / (ws->nlanes * rounds) : ws->pack_tokens;
        ws->npacks = 0;
        for (int j = 0, used = 0; j < ready; j++) {
            int len = ws->lens[ws->order[j]];
            if (j == 0 || used + len > cap) {
                ws->pack_start[ws->npacks++] = j;
                used = 0;
            }
            used += len;
            ws->batch_lens[j] = len;
        }
        ws->pack_start[ws->npacks] = ready;
        if (ready > 0) lanes_run(ws);
        if (embedder_cancelled(e))
            return EMBEDDER_ECANCELED;
        for (int j = 0; j < ready; j++)
            memcpy(out + (size_t)(w0 + ws->order[j]) * H, ws->pooled + (size_t)j * H, (size_t)H * sizeof(float));
    }
    return 0;
}

const EmbedderOps embedder_native_ops = {
    .name = "native",
    .open = native_open,
    .close = native_close,
    .workspace_new = native_workspace_new,
    .workspace_free = native_workspace_free,
    .count_tokens = native_count_tokens,
    .embed = native_embed,
};
