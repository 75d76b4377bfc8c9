/* bert_dev.c: the BERT encoder through the device layer (see bert_dev.h). The layer sequence is
 * bert.c's: embeddings + LayerNorm; per layer a fused QKV GEMM with bias, varlen attention, the
 * output GEMM with bias and the residual (beta = 1, in place), LayerNorm, the FFN GEMM with bias,
 * GELU, the second FFN GEMM with bias and residual, LayerNorm; then pooling. Must not allocate
 * after bert_dev_run_new, log or exit. */
#include "engine/embed/bert_dev.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cpu_ops.h"
#include "kernels/device_math.h"

typedef struct DevLayer {
    const void *wqkv, *wo, *wi, *wo2;   /* [n][k] in the precision's type */
    const float *bqkv, *bo, *ln1_w, *ln1_b, *bi, *bo2, *ln2_w, *ln2_b;
} DevLayer;

struct BertDev {
    Device *d;
    BertConfig c;
    DevPrecision prec;
    const float *word, *pos, *type0, *eln_w, *eln_b;
    DevLayer *layers;
    size_t weight_bytes;
};

struct BertDevRun {
    BertDev *m;
    DevStream *s;
    int max_tokens, max_seqs;
    BertDevStats stats;
};

#define ALIGN_UP(x) (((x) + DEV_ALIGN - 1) & ~(size_t)(DEV_ALIGN - 1))

size_t bert_dev_bytes_per_token(const BertConfig *c, DevPrecision prec)
{
    size_t H = (size_t)c->hidden, FF = (size_t)c->intermediate;
    size_t act = 4 * (H + 3 * H + H + FF);                    /* x, qkv, ctx, ffn */
    size_t conv = prec == DEV_FP16 || prec == DEV_BF16 ? 2 * (FF > H ? FF : H) : 0; /* GEMM input */
    size_t per_seq = 4 * H + 4 + 4;                            /* pooled row, length, offset: a
                                                                * pack has at most a sequence a token */
    return act + conv + 4 /* id */ + per_seq;
}

size_t bert_dev_fixed_bytes(const BertConfig *c)
{
    (void)c;
    return DEV_STREAM_FIXED_BYTES + 16 * DEV_ALIGN + ((size_t)1 << 20); /* + alignment, Thrust's scratch */
}

size_t bert_dev_weight_bytes(const BertDev *m) { return m->weight_bytes; }

void bert_dev_free(BertDev *m)
{
    if (!m) return;
    free(m->layers);
    free(m);
}

/* The weight layout: every tensor at a 256-byte aligned offset of the one allocation. */
typedef struct Slot {
    const char *name; /* without the "bert." prefix; NULL ends the list */
    int64_t d0, d1;   /* shape (d1 = -1: a vector) */
    int gemm;         /* stored in the precision's type */
    size_t off;
} Slot;

static int put(const SafeTensors *st, const char *pfx, Slot *sl, char *host, DevPrecision prec, float *tmp,
               char *err, size_t errlen)
{
    char full[256];
    snprintf(full, sizeof full, "%s%s", pfx, sl->name);
    size_t n = (size_t)sl->d0 * (size_t)(sl->d1 > 0 ? sl->d1 : 1);
    float *dst = sl->gemm && dev_precision_weight_bytes(prec) == 2 ? tmp : (float *)(host + sl->off);
    if (st_read_f32(st, full, sl->d0, sl->d1, dst, err, errlen)) return -1;
    if (dst == tmp) {
        uint16_t *h = (uint16_t *)(host + sl->off);
        for (size_t i = 0; i < n; i++) h[i] = prec == DEV_FP16 ? cpu_f32_to_f16(tmp[i]) : devm_f32_to_bf16(tmp[i]);
    }
    return 0;
}

BertDev *bert_dev_open(Device *d, const SafeTensors *st, const BertConfig *c, DevPrecision prec, char *err,
                       size_t errlen)
{
    const int L = c->layers;
    const int64_t H = c->hidden, FF = c->intermediate;
    if (c->hidden % c->heads || (c->hidden / c->heads) % 4 || c->hidden % 4 || c->intermediate % 4) {
        snprintf(err, errlen, "hidden %d, heads %d, intermediate %d: the device encoder needs sizes in multiples of 4",
                 c->hidden, c->heads, c->intermediate);
        return NULL;
    }
    BertDev *m = calloc(1, sizeof *m);
    size_t nslots = 5 + (size_t)L * 16 + 1;
    Slot *slots = calloc(nslots, sizeof *slots);
    char (*names)[96] = calloc(nslots, sizeof *names);
    char *host = NULL;
    float *tmp = NULL;
    if (!m || !slots || !names) {
        snprintf(err, errlen, "out of host memory");
        goto fail;
    }
    m->d = d;
    m->c = *c;
    m->prec = prec;
    m->layers = calloc((size_t)L, sizeof *m->layers);
    if (!m->layers) {
        snprintf(err, errlen, "out of host memory");
        goto fail;
    }
    const char *pfx = st_find(st, "embeddings.word_embeddings.weight") ? "" : "bert.";
    int ns = 0;
#define SLOT(nm, a, b, g) (slots[ns] = (Slot){.name = (nm), .d0 = (a), .d1 = (b), .gemm = (g)}, ns++)
    SLOT("embeddings.word_embeddings.weight", c->vocab_size, H, 0);
    SLOT("embeddings.position_embeddings.weight", c->max_positions, H, 0);
    SLOT("embeddings.token_type_embeddings.weight", c->type_vocab, H, 0);
    SLOT("embeddings.LayerNorm.weight", H, -1, 0);
    SLOT("embeddings.LayerNorm.bias", H, -1, 0);
    static const struct { const char *n; int rows, cols, gemm; } per[] = {
        /* rows/cols: 0 = H, 1 = FF; the three projections are consecutive so Q|K|V is one GEMM */
        {"attention.self.query.weight", 0, 0, 1}, {"attention.self.key.weight", 0, 0, 1},
        {"attention.self.value.weight", 0, 0, 1}, {"attention.self.query.bias", 0, -1, 0},
        {"attention.self.key.bias", 0, -1, 0},    {"attention.self.value.bias", 0, -1, 0},
        {"attention.output.dense.weight", 0, 0, 1}, {"attention.output.dense.bias", 0, -1, 0},
        {"attention.output.LayerNorm.weight", 0, -1, 0}, {"attention.output.LayerNorm.bias", 0, -1, 0},
        {"intermediate.dense.weight", 1, 0, 1},   {"intermediate.dense.bias", 1, -1, 0},
        {"output.dense.weight", 0, 1, 1},          {"output.dense.bias", 0, -1, 0},
        {"output.LayerNorm.weight", 0, -1, 0},     {"output.LayerNorm.bias", 0, -1, 0},
    };
    for (int l = 0; l < L; l++)
        for (int i = 0; i < 16; i++) {
            snprintf(names[ns], sizeof names[ns], "encoder.layer.%d.%s", l, per[i].n);
            SLOT(names[ns], per[i].rows ? FF : H, per[i].cols < 0 ? -1 : per[i].cols ? FF : H, per[i].gemm);
        }
#undef SLOT
    /* offsets: Q, K, V weights (and biases) back to back so they form one [3H][H] matrix */
    size_t off = 0, wb = dev_precision_weight_bytes(prec);
    for (int i = 0; i < ns; i++) {
        Slot *sl = &slots[i];
        size_t n = (size_t)sl->d0 * (size_t)(sl->d1 > 0 ? sl->d1 : 1), bytes = n * (sl->gemm ? wb : 4);
        int in_qkv = i >= 5 && ((i - 5) % 16 == 1 || (i - 5) % 16 == 2 || (i - 5) % 16 == 4 || (i - 5) % 16 == 5);
        sl->off = in_qkv ? off : ALIGN_UP(off);
        off = sl->off + bytes;
    }
    m->weight_bytes = ALIGN_UP(off);
    host = malloc(m->weight_bytes);
    tmp = malloc((size_t)(FF * H) * sizeof(float));
    if (!host || !tmp) {
        snprintf(err, errlen, "out of host memory staging %zu bytes of weights", m->weight_bytes);
        goto fail;
    }
    memset(host, 0, m->weight_bytes);
    for (int i = 0; i < ns; i++)
        if (put(st, pfx, &slots[i], host, prec, tmp, err, errlen)) goto fail;
    int rc = device_weights_alloc(d, m->weight_bytes);
    if (!rc) rc = device_upload(d, device_weights(d), host, m->weight_bytes);
    if (rc) {
        snprintf(err, errlen, "%s", device_errstr(d));
        goto fail;
    }
    char *base = device_weights(d);
#define AT(i) ((const void *)(base + slots[i].off))
    m->word = AT(0);
    m->pos = AT(1);
    m->type0 = AT(2); /* row 0 */
    m->eln_w = AT(3);
    m->eln_b = AT(4);
    for (int l = 0; l < L; l++) {
        int b = 5 + l * 16;
        DevLayer *ly = &m->layers[l];
        ly->wqkv = AT(b + 0);
        ly->bqkv = AT(b + 3);
        ly->wo = AT(b + 6);
        ly->bo = AT(b + 7);
        ly->ln1_w = AT(b + 8);
        ly->ln1_b = AT(b + 9);
        ly->wi = AT(b + 10);
        ly->bi = AT(b + 11);
        ly->wo2 = AT(b + 12);
        ly->bo2 = AT(b + 13);
        ly->ln2_w = AT(b + 14);
        ly->ln2_b = AT(b + 15);
    }
#undef AT
    free(host);
    free(tmp);
    free(slots);
    free(names);
    return m;
fail:
    free(host);
    free(tmp);
    free(slots);
    free(names);
    bert_dev_free(m);
    return NULL;
}

int bert_dev_token_budget(BertDev *m, int workers, int cap, int min_tokens, char *err, size_t errlen)
{
    size_t free_b = 0, total = 0;
    if (device_mem_info(m->d, &free_b, &total) != DEV_OK) {
        snprintf(err, errlen, "%s", device_errstr(m->d));
        return 0;
    }
    size_t per = bert_dev_bytes_per_token(&m->c, m->prec), fixed = bert_dev_fixed_bytes(&m->c);
    int t = dev_budget_tokens(free_b, fixed, per, workers, DEV_BUDGET_FRACTION, cap, min_tokens);
    if (t == 0)
        snprintf(err, errlen, "%s: %zu MiB free of %zu MiB after %zu MiB of weights; %d worker%s need %zu MiB each "
                 "besides %zu bytes a token, so not even %d tokens fit", device_info(m->d)->name, free_b >> 20,
                 total >> 20, m->weight_bytes >> 20, workers, workers == 1 ? "" : "s", fixed >> 20, per, min_tokens);
    return t;
}

BertDevRun *bert_dev_run_new(BertDev *m, int max_tokens, int max_seqs, int arena_tokens, char *err, size_t errlen)
{
    BertDevRun *r = calloc(1, sizeof *r);
    if (!r) {
        snprintf(err, errlen, "out of host memory");
        return NULL;
    }
    r->m = m;
    r->max_tokens = max_tokens;
    r->max_seqs = max_seqs;
    if (arena_tokens <= 0 || arena_tokens > max_tokens) arena_tokens = max_tokens;
    size_t arena = (size_t)arena_tokens * bert_dev_bytes_per_token(&m->c, m->prec) + 16 * DEV_ALIGN +
                   ((size_t)1 << 20); /* Thrust's scratch */
    size_t pinned = (size_t)max_tokens * 4 + (size_t)max_seqs * (4 + 4 * (size_t)m->c.hidden) + 2 * DEV_ALIGN;
    r->s = dev_stream_new(m->d, arena, pinned, err, errlen);
    if (!r->s) {
        free(r);
        return NULL;
    }
    return r;
}

void bert_dev_run_free(BertDevRun *r)
{
    if (!r) return;
    dev_stream_free(r->s);
    free(r);
}

DevStream *bert_dev_run_stream(BertDevRun *r) { return r->s; }
const BertDevStats *bert_dev_run_stats(const BertDevRun *r) { return &r->stats; }

/* One pack, start to end; the arena is reset first, so each pack reuses the same memory. */
static int forward_pack(BertDevRun *r, const int32_t *ids, const int *lens, int nseq, DevPool pool, float *out)
{
    const BertDev *m = r->m;
    const BertConfig *c = &m->c;
    DevStream *s = r->s;
    const int H = c->hidden, FF = c->intermediate, NH = c->heads, D = H / NH;
    const float scale = 1.0f / sqrtf((float)D);
    int T = 0;
    for (int i = 0; i < nseq; i++) T += lens[i];
    if (T > r->max_tokens || nseq > r->max_seqs)
        return dev_fail(dev_stream_device(s), DEV_EINVAL, "bert_dev_forward", "%d tokens in %d sequences; the run "
                        "holds %d and %d", T, nseq, r->max_tokens, r->max_seqs);
    dev_arena_reset(s);
    /* pinned staging: ids, lengths, then the pooled rows coming back */
    char *pin = dev_stream_pinned(s);
    int32_t *h_ids = (int32_t *)pin, *h_lens = (int32_t *)(pin + ALIGN_UP((size_t)r->max_tokens * 4));
    float *h_out = (float *)((char *)h_lens + ALIGN_UP((size_t)r->max_seqs * 4));
    memcpy(h_ids, ids, (size_t)T * 4);
    for (int i = 0; i < nseq; i++) h_lens[i] = lens[i];
    int32_t *d_ids, *d_lens, *d_cu;
    float *x, *qkv, *ctx, *ffn, *pooled;
    int rc;
#define TRY(call) do { if ((rc = (call)) != DEV_OK) return rc; } while (0)
    TRY(dev_arena_alloc(s, (size_t)T * 4, (void **)&d_ids));
    TRY(dev_arena_alloc(s, (size_t)nseq * 4, (void **)&d_lens));
    TRY(dev_arena_alloc(s, (size_t)(nseq + 1) * 4, (void **)&d_cu));
    TRY(dev_arena_alloc(s, (size_t)T * H * 4, (void **)&x));
    TRY(dev_arena_alloc(s, (size_t)T * 3 * H * 4, (void **)&qkv));
    TRY(dev_arena_alloc(s, (size_t)T * H * 4, (void **)&ctx));
    TRY(dev_arena_alloc(s, (size_t)T * FF * 4, (void **)&ffn));
    TRY(dev_arena_alloc(s, (size_t)nseq * H * 4, (void **)&pooled));
    TRY(dev_copy_h2d(s, d_ids, h_ids, (size_t)T * 4));
    TRY(dev_copy_h2d(s, d_lens, h_lens, (size_t)nseq * 4));
    TRY(dev_seq_offsets(s, d_cu, d_lens, nseq));
    TRY(dev_embed_tokens(s, x, d_ids, d_cu, nseq, T, m->word, m->pos, m->type0, H));
    TRY(dev_layernorm(s, x, x, NULL, m->eln_w, m->eln_b, T, H, c->ln_eps));
    for (int l = 0; l < c->layers; l++) {
        const DevLayer *ly = &m->layers[l];
        TRY(dev_gemm(s, qkv, x, ly->wqkv, ly->bqkv, NULL, T, 3 * H, H, m->prec));
        TRY(dev_attention(s, ctx, qkv, d_cu, nseq, T, NH, D, scale));
        TRY(dev_gemm(s, x, ctx, ly->wo, ly->bo, x, T, H, H, m->prec));   /* x += ctx Wo^T + bo */
        TRY(dev_layernorm(s, x, x, NULL, ly->ln1_w, ly->ln1_b, T, H, c->ln_eps));
        TRY(dev_gemm(s, ffn, x, ly->wi, ly->bi, NULL, T, FF, H, m->prec));
        TRY(dev_gelu(s, ffn, (size_t)T * FF));
        TRY(dev_gemm(s, x, ffn, ly->wo2, ly->bo2, x, T, H, FF, m->prec)); /* x += gelu(..) Wo2^T + bo2 */
        TRY(dev_layernorm(s, x, x, NULL, ly->ln2_w, ly->ln2_b, T, H, c->ln_eps));
    }
    TRY(dev_pool(s, pooled, x, d_cu, nseq, H, pool));
    TRY(dev_copy_d2h(s, h_out, pooled, (size_t)nseq * H * 4));
    TRY(dev_sync(s));
#undef TRY
    memcpy(out, h_out, (size_t)nseq * H * sizeof(float));
    r->stats.packs++;
    return DEV_OK;
}

int bert_dev_forward(BertDevRun *r, const int32_t *ids, const int *lens, int nseq, DevPool pool, float *out)
{
    if (nseq <= 0) return DEV_OK;
    int rc = forward_pack(r, ids, lens, nseq, pool, out);
    if (rc != DEV_ENOMEM || nseq == 1) return rc;
    /* Out of memory: the context is intact. Drain what was queued, then run each half on its own
     * (recursively: a half that still does not fit splits again). */
    if ((rc = dev_sync(r->s)) != DEV_OK) return rc;
    r->stats.splits++;
    int h = nseq / 2, t = 0;
    for (int i = 0; i < h; i++) t += lens[i];
    rc = bert_dev_forward(r, ids, lens, h, pool, out);
    if (rc != DEV_OK) return rc;
    return bert_dev_forward(r, ids + t, lens + h, nseq - h, pool, out + (size_t)h * r->m->c.hidden);
}
