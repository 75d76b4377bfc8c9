/* gguf_embed.c: the `native` embedder on a GGUF file (embedder_gguf_ops; embed_native.c hands
 * over to it when embedder.snapshot names a .gguf). Decoder architectures (llama, qwen2, qwen3:
 * causal attention) run on the decoder's model and quantised kernels (engine/decode/model.c,
 * forward_hidden), weights used as stored; the final-norm hidden states are pooled (mean, last,
 * cls) as llama.cpp's embedding mode does. Texts are tokenised with the file's vocabulary (BOS
 * and EOS as the file says), sorted by length and laid back to back in packs: one forward pass
 * per pack, each sequence at positions from 0 with pages of its own in a scratch K/V buffer that
 * is reset for every pack (nothing is kept between packs, so a sequence attends only to itself:
 * the causal mask per sequence). Workspaces are sized once; embed allocates only when a text
 * has more tokens than any before it (the token vector grows).
 * Must not normalise (embed_postprocess does that), log or exit. */
#include "engine/embed/gguf_embed.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/decode/gguf.h"
#include "engine/decode/model.h"
#include "engine/decode/tokenizer.h"
#include "engine/embed/bert.h"
#include "engine/embed/wordpiece.h"
#include "engine/embed/snapshot_hash.h"
#include "engine/embedder_impl.h"

#define GE_DEFAULT_MAX_SEQ 512  /* llama.cpp's and llama-cpp-python's default n_ctx */
#define GE_DEFAULT_MAX_TEXTS 256
#define GE_PACK_TOKENS 512      /* tokens per forward pass when the budget allows */

/* llama.cpp's LLAMA_POOLING_TYPE_* numbering of <arch>.pooling_type. */
enum { GGUF_POOL_NONE = 0, GGUF_POOL_MEAN = 1, GGUF_POOL_CLS = 2, GGUF_POOL_LAST = 3, GGUF_POOL_RANK = 4 };

typedef struct GEmbed {
    Model *model;
    Tokenizer *tok;
    int eos;          /* appended to every text when >= 0 (tokenizer.ggml.add_eos_token) */
    int max_seq_len;  /* tokens per text, BOS/EOS included */
    int pack_tokens;  /* tokens per forward pass (>= max_seq_len) */
    int kv_pages;     /* scratch K/V pages per pack */
    int max_texts;
    int threads;
} GEmbed;

struct EmbedWorkspace {
    Embedder *e;
    Forward *fw;
    KvCache kv;
    int *page_ids;    /* 0..kv_pages-1: a sequence's page table is a slice of it */
    BatchTok *toks;   /* pack_tokens */
    float *hidden;    /* pack_tokens x n_embd */
    TokVec tv;        /* one text's tokens (grows to the longest seen) */
    int32_t *ids;     /* max_texts x max_seq_len */
    int *lens, *order;
};

static int is_decoder_arch(const char *a)
{
    return !strcmp(a, "llama") || !strcmp(a, "qwen2") || !strcmp(a, "qwen3");
}

/* The pooling from embedder.pooling, else the file's pooling_type; refuses what a causal decoder
 * cannot give one vector per text with. 0, or -1 with err set. */
static int pick_pooling(const GgufFile *f, const char *arch, const char *override, EmbedPooling *out, char *err,
                        size_t errlen)
{
    if (override && override[0]) {
        if (!strcmp(override, "mean")) *out = EMBED_POOL_MEAN;
        else if (!strcmp(override, "last")) *out = EMBED_POOL_LAST;
        else if (!strcmp(override, "cls")) *out = EMBED_POOL_CLS;
        else {
            snprintf(err, errlen, "embedder.pooling \"%s\": a GGUF embedder pools by mean, last or cls", override);
            return -1;
        }
    } else {
        char key[96];
        uint32_t v = GGUF_POOL_NONE;
        snprintf(key, sizeof key, "%s.pooling_type", arch);
        int have = gguf_get_u32(f, key, &v) == 0;
        switch (v) {
        case GGUF_POOL_MEAN: *out = EMBED_POOL_MEAN; break;
        case GGUF_POOL_CLS: *out = EMBED_POOL_CLS; break;
        case GGUF_POOL_LAST: *out = EMBED_POOL_LAST; break;
        default:
            snprintf(err, errlen,
                     "%s %s (%s): one vector per text needs mean, last or cls pooling; set embedder.pooling",
                     key, have ? "is" : "is absent", v == GGUF_POOL_RANK ? "rank: a reranker, not an embedder"
                                                     : have ? "none: per-token output" : "llama.cpp reads none");
            return -1;
        }
    }
    if (*out == EMBED_POOL_CLS && strcmp(arch, "bert") != 0) {
        snprintf(err, errlen, "pooling cls on a %s model: with causal attention the first token sees only itself, "
                 "so every text would get the same vector; use last or mean", arch);
        return -1;
    }
    return 0;
}

void gguf_embed_model_id(const char *path, char *out, size_t outlen)
{
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    size_t n = strlen(base);
    if (n > 5 && !strcmp(base + n - 5, ".gguf")) n -= 5;
    snprintf(out, outlen, "%.*s", (int)(n < outlen ? n : outlen - 1), base);
}

/* ---- bert: the snapshot embedder's encoder and WordPiece, weights and vocabulary from the GGUF ---- */

/* Hugging Face's BERT tensor names (what bert_load_with asks for) to llama.cpp's. */
static int bert_gguf_name(const char *hf, char *out, size_t outlen)
{
    static const char *const fixed[][2] = {
        {"embeddings.word_embeddings.weight", "token_embd.weight"},
        {"embeddings.position_embeddings.weight", "position_embd.weight"},
        {"embeddings.token_type_embeddings.weight", "token_types.weight"},
        {"embeddings.LayerNorm.weight", "token_embd_norm.weight"},
        {"embeddings.LayerNorm.bias", "token_embd_norm.bias"},
    };
    static const char *const layer[][2] = {
        {"attention.self.query.", "attn_q."}, {"attention.self.key.", "attn_k."},
        {"attention.self.value.", "attn_v."}, {"attention.output.dense.", "attn_output."},
        {"attention.output.LayerNorm.", "attn_output_norm."}, {"intermediate.dense.", "ffn_up."},
        {"output.dense.", "ffn_down."}, {"output.LayerNorm.", "layer_output_norm."},
    };
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++)
        if (!strcmp(hf, fixed[i][0])) return snprintf(out, outlen, "%s", fixed[i][1]) < 0 ? -1 : 0;
    int l, at = 0;
    if (sscanf(hf, "encoder.layer.%d.%n", &l, &at) != 1 || at == 0) return -1;
    for (size_t i = 0; i < sizeof layer / sizeof layer[0]; i++) {
        size_t n = strlen(layer[i][0]);
        if (!strncmp(hf + at, layer[i][0], n)) return snprintf(out, outlen, "blk.%d.%s%s", l, layer[i][1], hf + at + n) < 0;
    }
    return -1;
}

/* BertTensorRead over a GGUF file: shape checked, rows dequantised to F32 (F32, F16, Q8_0, ...). */
static int bert_gguf_read(void *src, const char *name, int64_t d0, int64_t d1, float *out, char *err, size_t errlen)
{
    const GgufFile *f = src;
    char gname[128];
    if (bert_gguf_name(name, gname, sizeof gname) != 0) {
        snprintf(err, errlen, "bert GGUF: no tensor name for %s", name);
        return -1;
    }
    const GgufTensor *t = gguf_find_tensor(f, gname);
    int64_t cols = d1 < 0 ? d0 : d1, rows = d1 < 0 ? 1 : d0;
    if (!t) {
        snprintf(err, errlen, "bert GGUF: tensor %s is missing", gname);
        return -1;
    }
    if (t->ne[0] != cols || t->ne[1] != rows || t->ne[2] != 1 || t->ne[3] != 1) {
        snprintf(err, errlen, "bert GGUF: tensor %s has shape [%lld, %lld], expected [%lld, %lld]", gname,
                 (long long)t->ne[0], (long long)t->ne[1], (long long)cols, (long long)rows);
        return -1;
    }
    size_t rb = quant_row_bytes(t->type, cols);
    if (!quant_type_supported(t->type) || rb == 0 || rb * (size_t)rows > t->size) {
        snprintf(err, errlen, "bert GGUF: tensor %s has type %s, which this build cannot read", gname,
                 quant_type_name(t->type));
        return -1;
    }
    for (int64_t r = 0; r < rows; r++) quant_dequant_row(t->type, (const uint8_t *)t->data + (size_t)r * rb, out + r * cols, cols);
    return 0;
}

static int bert_u32(const GgufFile *f, const char *key, int *out, char *err, size_t errlen)
{
    uint32_t v;
    if (gguf_get_u32(f, key, &v) != 0 || v < 1 || v > (1u << 24)) {
        snprintf(err, errlen, "bert GGUF: %s is missing or out of range", key);
        return -1;
    }
    *out = (int)v;
    return 0;
}

int gguf_bert_open(const char *path, const EmbedderConfig *cfg, Snapshot *snap, WpTokenizer **tk, BertModel **model,
                   char *err, size_t errlen)
{
    GgufFile *f = gguf_open(path, err, errlen);
    if (!f) return -1;
    int rc = -1;
    char arch[64] = "";
    GgufStr as;
    const char **toks = NULL;
    size_t *lens = NULL;
    if (gguf_get_str(f, "general.architecture", &as) == 0 && as.len < sizeof arch) memcpy(arch, as.ptr, as.len);
    if (strcmp(arch, "bert") != 0) {
        rc = 1;
        goto out;
    }
    memset(snap, 0, sizeof *snap);
    BertConfig *c = &snap->bert;
    const GgufTensor *we = gguf_find_tensor(f, "token_embd.weight"), *pe = gguf_find_tensor(f, "position_embd.weight"),
                     *te = gguf_find_tensor(f, "token_types.weight");
    if (!we || !pe || !te) {
        snprintf(err, errlen, "%s: a bert GGUF needs token_embd, position_embd and token_types tensors", path);
        goto out;
    }
    c->vocab_size = (int)we->ne[1];
    c->max_positions = (int)pe->ne[1];
    c->type_vocab = (int)te->ne[1];
    if (bert_u32(f, "bert.embedding_length", &c->hidden, err, errlen) ||
        bert_u32(f, "bert.block_count", &c->layers, err, errlen) ||
        bert_u32(f, "bert.attention.head_count", &c->heads, err, errlen) ||
        bert_u32(f, "bert.feed_forward_length", &c->intermediate, err, errlen))
        goto out;
    if (c->hidden % c->heads || (uint64_t)c->layers > f->n_tensors) {
        snprintf(err, errlen, "%s: inconsistent bert sizes (hidden %d, heads %d, layers %d)", path, c->hidden, c->heads,
                 c->layers);
        goto out;
    }
    c->ln_eps = 1e-12f;
    gguf_get_f32(f, "bert.attention.layer_norm_epsilon", &c->ln_eps);
    GgufStr tm;
    const GgufKV *tv = gguf_find(f, "tokenizer.ggml.tokens");
    if (gguf_get_str(f, "tokenizer.ggml.model", &tm) != 0 || tm.len != 4 || memcmp(tm.ptr, "bert", 4) != 0 || !tv ||
        tv->type != GGUF_ARRAY || tv->arr_type != GGUF_STRING || tv->arr_n == 0 || tv->arr_n > (1u << 24)) {
        snprintf(err, errlen, "%s: a bert GGUF needs a WordPiece vocabulary (tokenizer.ggml.model \"bert\" and "
                 "tokenizer.ggml.tokens)", path);
        goto out;
    }
    toks = malloc(tv->arr_n * sizeof *toks);
    lens = malloc(tv->arr_n * sizeof *lens);
    if (!toks || !lens) {
        snprintf(err, errlen, "%s: out of memory", path);
        goto out;
    }
    for (uint64_t i = 0; i < tv->arr_n; i++) {
        toks[i] = tv->arr_strs[i].ptr;
        lens[i] = tv->arr_strs[i].len;
    }
    *tk = wp_open_phantom(toks, lens, (int)tv->arr_n, path, err, errlen);
    if (!*tk) goto out;
    if (wp_settings(*tk)->vocab_size > c->vocab_size) {
        snprintf(err, errlen, "%s: the vocabulary has %d tokens but token_embd.weight has %d rows", path,
                 wp_settings(*tk)->vocab_size, c->vocab_size);
        goto out;
    }
    if (pick_pooling(f, arch, cfg->pooling, &snap->pooling, err, errlen) != 0) goto out;
    int L = cfg->max_seq_len > 0 ? cfg->max_seq_len : GE_DEFAULT_MAX_SEQ;
    if (L > c->max_positions) {
        if (cfg->max_seq_len > 0) {
            snprintf(err, errlen, "embedder.max_seq_len %d is over the model's %d positions", L, c->max_positions);
            goto out;
        }
        L = c->max_positions;
    }
    snap->max_seq_len = L;
    snap->dim = c->hidden;
    snap->normalize = true;
    snap->do_lower_case = true;
    snprintf(snap->dir, sizeof snap->dir, "%s", path);
    GemmPrecision prec;
    if (embed_cpu_precision(cfg, &prec, err, errlen) != 0) goto out;
    *model = bert_load_with(bert_gguf_read, f, path, c, prec, err, errlen);
    if (*model) rc = 0;
out:
    if (rc < 0) {
        wp_close(*tk);
        *tk = NULL;
    }
    free(toks);
    free(lens);
    gguf_close(f); /* the weights were copied out */
    return rc;
}

int gguf_embed_open_file(Embedder *e, const char *path, const EmbedderConfig *cfg, const BatchConfig *batch)
{
    char err[sizeof e->errstr] = "";
    GEmbed *g = calloc(1, sizeof *g);
    GgufFile *f = NULL;
    if (!g) {
        snprintf(e->errstr, sizeof e->errstr, "out of memory");
        return -1;
    }
    if (cfg->device && cfg->device[0] && strcmp(cfg->device, "cpu") != 0) {
        snprintf(err, sizeof err, "embedder.device \"%s\": GGUF embedders run on the cpu only", cfg->device);
        goto fail;
    }
    /* The decoder's kernels run the weights as stored (activations quantised as llama.cpp does
     * for quantised types): there is no bf16/int8 repacking to choose. */
    if (cfg->precision && cfg->precision[0] && strcmp(cfg->precision, "auto") != 0) {
        snprintf(err, sizeof err, "embedder.precision \"%s\": a decoder GGUF embedder runs its weights as stored; "
                 "leave embedder.precision at \"auto\"", cfg->precision);
        goto fail;
    }
    snprintf(e->info.precision, sizeof e->info.precision, "stored");
    f = gguf_open(path, err, sizeof err);
    if (!f) goto fail;
    GgufStr as;
    char arch[64] = "";
    if (gguf_get_str(f, "general.architecture", &as) == 0 && as.len < sizeof arch) memcpy(arch, as.ptr, as.len);
    if (!is_decoder_arch(arch)) {
        snprintf(err, sizeof err, "%s: general.architecture is \"%s\"; GGUF embedders support qwen3, qwen2, llama "
                 "and bert", path, arch);
        goto fail;
    }
    char key[96];
    bool causal = true;
    snprintf(key, sizeof key, "%s.attention.causal", arch);
    if (gguf_get_bool(f, key, &causal) == 0 && !causal) {
        snprintf(err, sizeof err, "%s: %s is false: bidirectional attention in a %s model is not supported", path, key,
                 arch);
        goto fail;
    }
    EmbedPooling pooling;
    if (pick_pooling(f, arch, cfg->pooling, &pooling, err, sizeof err) != 0) goto fail;
    g->tok = tok_load(f, err, sizeof err);
    if (!g->tok) goto fail;
    bool add_eos = false;
    uint32_t eos;
    g->eos = -1;
    if (gguf_get_bool(f, "tokenizer.ggml.add_eos_token", &add_eos) == 0 && add_eos) {
        if (gguf_get_u32(f, "tokenizer.ggml.eos_token_id", &eos) != 0 || (int)eos >= tok_n_vocab(g->tok)) {
            snprintf(err, sizeof err, "%s: add_eos_token is true but tokenizer.ggml.eos_token_id is missing or out of "
                     "range", path);
            goto fail;
        }
        g->eos = (int)eos;
    }
    g->model = model_load(f, err, sizeof err); /* owns f from here, also on failure */
    f = NULL;
    if (!g->model) goto fail;
    const ModelHparams *hp = &g->model->hp;
    if (tok_n_vocab(g->tok) > hp->n_vocab) {
        snprintf(err, sizeof err, "%s: the vocabulary has %d tokens but token_embd.weight has %d rows", path,
                 tok_n_vocab(g->tok), hp->n_vocab);
        goto fail;
    }
    int L = cfg->max_seq_len > 0 ? cfg->max_seq_len : GE_DEFAULT_MAX_SEQ;
    if (L > hp->n_ctx_train) {
        if (cfg->max_seq_len > 0) {
            snprintf(err, sizeof err, "embedder.max_seq_len %d is over the model's context_length %d", L,
                     hp->n_ctx_train);
            goto fail;
        }
        L = hp->n_ctx_train;
    }
    if (L < 2) {
        snprintf(err, sizeof err, "%s: a context of %d tokens is too short to embed", path, L);
        goto fail;
    }
    g->max_seq_len = L;
    int budget = batch && batch->token_budget > 0 ? batch->token_budget : EMBEDDER_DEFAULT_TOKEN_BUDGET;
    g->pack_tokens = budget < GE_PACK_TOKENS ? budget : GE_PACK_TOKENS;
    if (g->pack_tokens < L) g->pack_tokens = L;
    /* A sequence takes whole pages: room for the tokens plus one partly filled page for every
     * 8 tokens, so packs of short texts are cut by pages before they run out of tokens only
     * below 8 tokens a text. */
    g->kv_pages = g->pack_tokens / KV_PAGE + g->pack_tokens / 8 + 1;
    g->max_texts = batch && batch->max_texts > 0 ? batch->max_texts : GE_DEFAULT_MAX_TEXTS;
    g->threads = cfg->threads; /* 0: every online CPU (forward_create) */

    EmbedderInfo *info = &e->info;
    if (cfg->model_id && cfg->model_id[0])
        snprintf(info->model_id, sizeof info->model_id, "%s", cfg->model_id);
    else
        gguf_embed_model_id(path, info->model_id, sizeof info->model_id);
    if (snapshot_hash_file(path, info->snapshot_hash, err, sizeof err) != 0) goto fail;
    info->dim = hp->n_embd;
    info->pooling = pooling;
    info->normalize = true; /* what llama.cpp's embedding tools and TEI return by default */
    info->max_seq_len = L;
    e->token_budget = budget < L ? L : budget;
    e->impl = g;
    return 0;
fail:
    snprintf(e->errstr, sizeof e->errstr, "%s", err[0] ? err : "GGUF embedder: open failed");
    gguf_close(f);
    model_free(g->model);
    tok_free(g->tok);
    free(g);
    return -1;
}

static int ge_open(Embedder *e, const EmbedderConfig *cfg, const BatchConfig *batch)
{
    char path[4096 + 128];
    int r = cfg_snapshot_gguf(cfg->snapshot, path, sizeof path);
    if (r <= 0) {
        snprintf(e->errstr, sizeof e->errstr, "%.250s", r < 0 ? path : "embedder.snapshot does not name a GGUF file");
        return -1;
    }
    return gguf_embed_open_file(e, path, cfg, batch);
}

static void ge_close(Embedder *e)
{
    GEmbed *g = e->impl;
    if (!g) return;
    model_free(g->model);
    tok_free(g->tok);
    free(g);
    e->impl = NULL;
}

static void ge_workspace_free(EmbedWorkspace *ws)
{
    if (!ws) return;
    forward_free(ws->fw);
    kv_free(&ws->kv);
    free(ws->page_ids);
    free(ws->toks);
    free(ws->hidden);
    tokvec_free(&ws->tv);
    free(ws->ids);
    free(ws->lens);
    free(ws->order);
    free(ws);
}

static EmbedWorkspace *ge_workspace_new(Embedder *e)
{
    GEmbed *g = e->impl;
    EmbedWorkspace *ws = calloc(1, sizeof *ws);
    if (!ws) return NULL;
    ws->e = e;
    char err[sizeof e->errstr] = "";
    size_t P = (size_t)g->pack_tokens, W = (size_t)g->max_texts, L = (size_t)g->max_seq_len;
    ws->fw = forward_create(g->model, g->pack_tokens, g->max_seq_len, g->threads, err, sizeof err);
    if (!ws->fw || kv_init(&ws->kv, g->model, g->kv_pages * KV_PAGE, err, sizeof err) != 0) goto fail;
    ws->page_ids = malloc((size_t)g->kv_pages * sizeof *ws->page_ids);
    ws->toks = malloc(P * sizeof *ws->toks);
    ws->hidden = malloc(P * (size_t)g->model->hp.n_embd * sizeof *ws->hidden);
    ws->ids = malloc(W * L * sizeof *ws->ids);
    ws->lens = malloc(W * sizeof *ws->lens);
    ws->order = malloc(W * sizeof *ws->order);
    if (!ws->page_ids || !ws->toks || !ws->hidden || !ws->ids || !ws->lens || !ws->order) {
        snprintf(err, sizeof err, "cannot set up a workspace of %d tokens", g->pack_tokens);
        goto fail;
    }
    for (int i = 0; i < g->kv_pages; i++) ws->page_ids[i] = i;
    return ws;
fail:
    snprintf(e->errstr, sizeof e->errstr, "%s", err[0] ? err : "out of memory");
    ge_workspace_free(ws);
    return NULL;
}

/* A text's tokens, BOS and EOS as the file says, into ws->tv. 0, or -1 with e->errstr set. */
static int ge_tokenize(Embedder *e, EmbedWorkspace *ws, const char *text, size_t len)
{
    GEmbed *g = e->impl;
    char err[200];
    ws->tv.n = 0;
    if (tok_encode(g->tok, text ? text : "", text ? len : 0, true, true, &ws->tv, err, sizeof err) != 0) {
        snprintf(e->errstr, sizeof e->errstr, "tokenizer: %s", err);
        return -1;
    }
    if (g->eos >= 0 && tokvec_push(&ws->tv, g->eos) != 0) {
        snprintf(e->errstr, sizeof e->errstr, "tokenizer: out of memory");
        return -1;
    }
    return 0;
}

int gguf_embed_tokens(Embedder *e, EmbedWorkspace *ws, const char *text, size_t len, bool truncate, int32_t *ids,
                      int cap, int *total)
{
    GEmbed *g = e->impl;
    if (ge_tokenize(e, ws, text, len) != 0) return -1;
    int n = ws->tv.n, L = g->max_seq_len;
    *total = n;
    int k = n > L && truncate ? L : n; /* truncated: the head, and the EOS stays last, where last pooling reads it */
    if (k > cap) k = cap;
    for (int i = 0; i < k; i++) ids[i] = ws->tv.v[i];
    if (k == L && n > L && truncate && g->eos >= 0) ids[L - 1] = g->eos;
    return k;
}

static int ge_count_tokens(Embedder *e, EmbedWorkspace *ws, const char *text, size_t len)
{
    EmbedWorkspace local = {.e = e};
    int rc = ge_tokenize(e, ws ? ws : &local, text, len);
    int n = ws ? ws->tv.n : local.tv.n;
    tokvec_free(&local.tv);
    return rc != 0 ? -1 : n;
}

static int pages_for(int len) { return (len + KV_PAGE - 1) / KV_PAGE; }

/* One forward pass over sorted window positions [j0, j1): every sequence from position 0 on
 * pages of its own; pooled vectors to out (input order, w0 = the window's first text). */
static int run_pack(Embedder *e, EmbedWorkspace *ws, int j0, int j1, int w0, float *out)
{
    GEmbed *g = e->impl;
    EmbedPooling pool = e->info.pooling;
    const int L = g->max_seq_len, D = g->model->hp.n_embd;
    int nt = 0, page = 0;
    for (int j = j0; j < j1; j++) {
        int k = ws->order[j], len = ws->lens[k];
        const int *pages = ws->page_ids + page;
        for (int p = 0; p < len; p++) {
            int row = pool == EMBED_POOL_MEAN ? nt : (pool == EMBED_POOL_LAST && p == len - 1) ||
                                                             (pool == EMBED_POOL_CLS && p == 0) ? j - j0 : -1;
            ws->toks[nt++] = (BatchTok){.token = ws->ids[(size_t)k * L + p], .pos = p, .pages = pages, .logits_row = row};
        }
        page += pages_for(len);
    }
    if (forward_hidden(ws->fw, &ws->kv, ws->toks, nt, ws->hidden) != 0) {
        snprintf(e->errstr, sizeof e->errstr, "forward pass of %d tokens failed (a token id outside the model?)", nt);
        return -1;
    }
    for (int j = j0, t = 0; j < j1; j++) {
        int k = ws->order[j], len = ws->lens[k];
        float *v = out + (size_t)(w0 + k) * D;
        if (pool != EMBED_POOL_MEAN) {
            memcpy(v, ws->hidden + (size_t)(j - j0) * D, (size_t)D * sizeof *v);
        } else {
            for (int d = 0; d < D; d++) {
                double s = 0.0;
                for (int p = 0; p < len; p++) s += ws->hidden[(size_t)(t + p) * D + d];
                v[d] = (float)(s / len);
            }
        }
        t += len;
    }
    return 0;
}

static int ge_embed(Embedder *e, EmbedWorkspace *ws, const EmbedText *texts, int n, float *out, int *ntokens,
                    EmbedStatus *status)
{
    GEmbed *g = e->impl;
    const int L = g->max_seq_len, D = g->model->hp.n_embd;
    if (!ws || ws->e != e) {
        snprintf(e->errstr, sizeof e->errstr, "workspace does not belong to this embedder");
        return -1;
    }
    for (int w0 = 0; w0 < n; w0 += g->max_texts) {
        int wn = n - w0 < g->max_texts ? n - w0 : g->max_texts, ready = 0;
        for (int k = 0; k < wn; k++) {
            const EmbedText *t = &texts[w0 + k];
            int total = 0;
            ws->lens[k] = gguf_embed_tokens(e, ws, t->text, t->len, t->truncate, ws->ids + (size_t)k * L, L, &total);
            if (ws->lens[k] < 0) return -1;
            if (ntokens) ntokens[w0 + k] = total > L && !t->truncate ? total : ws->lens[k];
            if ((total > L && !t->truncate) || total == 0) {
                /* no tokens: an empty text and a model that adds neither BOS nor EOS (llama.cpp fails it too) */
                if (total == 0)
                    snprintf(e->errstr, sizeof e->errstr, "the text has no tokens (it is empty and the model adds "
                             "no BOS or EOS): nothing to embed");
                status[w0 + k] = total ? EMBED_ERR_TOO_LONG : EMBED_ERR_BACKEND;
                memset(out + (size_t)(w0 + k) * D, 0, (size_t)D * sizeof(float));
                continue;
            }
            status[w0 + k] = EMBED_OK;
            ws->order[ready++] = k;
        }
        embed_sort_by_len(ws->order, ws->lens, ready);
        for (int j0 = 0; j0 < ready;) {
            if (embedder_cancelled(e)) return EMBEDDER_ECANCELED;
            int j1 = j0, used = 0, pages = 0;
            while (j1 < ready) {
                int len = ws->lens[ws->order[j1]];
                if (j1 > j0 && (used + len > g->pack_tokens || pages + pages_for(len) > g->kv_pages)) break;
                used += len;
                pages += pages_for(len);
                j1++;
            }
            if (run_pack(e, ws, j0, j1, w0, out) != 0) return -1;
            j0 = j1;
        }
    }
    return 0;
}

const EmbedderOps embedder_gguf_ops = {
    .name = "native",
    .open = ge_open,
    .close = ge_close,
    .workspace_new = ge_workspace_new,
    .workspace_free = ge_workspace_free,
    .count_tokens = ge_count_tokens,
    .embed = ge_embed,
};
