/* bert.c: BERT weights and forward pass. The linear layers' weights are packed once at load into
 * the microkernels' panel layout (kernels/gemm.h) in the model's precision (F32, or bf16 / int8 for
 * the gemm_lowp kernels; everything else stays F32), Q, K and V side by side so the projection
 * is a single GEMM; bias, residual and GELU are applied by the GEMM as it stores each tile, so no
 * extra pass over the activations is needed for them. Must not allocate in bert_forward. */
#include "engine/embed/bert.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/embed/safetensors.h"
#include "kernels/cpu_ops.h"
#include "kernels/gemm.h"

typedef struct BertLayer {
    void *wqkv, *wo, *wi, *wo2; /* packed in the model's precision (gemm_pack, gemm_lowp_pack) */
    float *bqkv, *bo, *ln1_w, *ln1_b, *bi, *bo2, *ln2_w, *ln2_b;
} BertLayer;

struct BertModel {
    BertConfig c;
    float *word, *pos, *type, *eln_w, *eln_b;
    BertLayer *layers;
    float *blob;   /* embeddings, biases, LayerNorms */
    char *packed;  /* the linear layers' weights, 64-byte aligned */
    GemmPrecision prec;      /* what the linear layers run in (fp32 after a fallback) */
    const GemmLowpOps *lowp; /* their kernel when prec is not fp32 */
};

const BertConfig *bert_config(const BertModel *m) { return &m->c; }
GemmPrecision bert_precision(const BertModel *m) { return m->prec; }

typedef struct StSource {
    const SafeTensors *st;
    const char *prefix; /* "" or "bert." */
} StSource;

static int st_source_read(void *src, const char *name, int64_t d0, int64_t d1, float *out, char *err, size_t errlen)
{
    const StSource *s = src;
    char full[256];
    snprintf(full, sizeof full, "%s%s", s->prefix, name);
    return st_read_f32(s->st, full, d0, d1, out, err, errlen);
}

BertModel *bert_load(const char *path, const BertConfig *cfg, char *err, size_t errlen)
{
    return bert_load_precision(path, cfg, GEMM_FP32, err, errlen);
}

BertModel *bert_load_precision(const char *path, const BertConfig *cfg, GemmPrecision prec, char *err, size_t errlen)
{
    SafeTensors *st = st_open(path, err, errlen);
    if (!st) return NULL;
    StSource src = {st, st_find(st, "embeddings.word_embeddings.weight") ? "" : "bert."};
    BertModel *m = bert_load_with(st_source_read, &src, path, cfg, prec, err, errlen);
    st_close(st); /* weights are copied; the mapping's pages go back */
    return m;
}

BertModel *bert_load_with(BertTensorRead read, void *src, const char *what, const BertConfig *cfg,
                          GemmPrecision prec, char *err, size_t errlen)
{
    float *tmp = NULL;
    BertModel *m = calloc(1, sizeof *m);
    if (!m) {
        snprintf(err, errlen, "%s: out of memory", what);
        return NULL;
    }
    m->c = *cfg;
    m->lowp = gemm_lowp_ops(prec); /* NULL (so fp32) where this CPU lacks the instructions */
    m->prec = m->lowp ? prec : GEMM_FP32;
    int64_t H = cfg->hidden, FF = cfg->intermediate, V = cfg->vocab_size, P = cfg->max_positions, TV = cfg->type_vocab;
    size_t per_layer = (size_t)(3 * H + H + 2 * H + FF + H + 2 * H);
    size_t total = (size_t)(V * H + P * H + TV * H + 2 * H) + per_layer * (size_t)cfg->layers;
    /* Q, K and V are read into tmp one after the other and packed as one [3H][H] matrix */
    GemmPrecision pr = m->prec;
    size_t pk_qkv = gemm_lowp_packed_bytes(pr, (int)(3 * H), (int)H), pk_o = gemm_lowp_packed_bytes(pr, (int)H, (int)H);
    size_t pk_i = gemm_lowp_packed_bytes(pr, (int)FF, (int)H), pk_o2 = gemm_lowp_packed_bytes(pr, (int)H, (int)FF);
    size_t per_layer_packed = pk_qkv + pk_o + pk_i + pk_o2; /* bytes, each a multiple of 64 */
    size_t packed_bytes = (per_layer_packed * (size_t)cfg->layers + 63) & ~(size_t)63;
    m->blob = malloc(total * sizeof(float));
    m->packed = aligned_alloc(64, packed_bytes ? packed_bytes : 64);
    m->layers = calloc((size_t)cfg->layers, sizeof *m->layers);
    tmp = malloc((size_t)(3 * H * H > FF * H ? 3 * H * H : FF * H) * sizeof(float));
    if (!m->blob || !m->packed || !m->layers || !tmp) {
        snprintf(err, errlen, "%s: out of memory for %zu bytes of weights", what,
                 total * sizeof(float) + per_layer_packed * (size_t)cfg->layers);
        goto out_free;
    }
    float *p = m->blob;
    char *q = m->packed;
#define TAKE(ptr, n) do { (ptr) = p; p += (n); } while (0)
#define TAKE_PACKED(ptr, n) do { (ptr) = q; q += (n); } while (0)
    TAKE(m->word, V * H);
    TAKE(m->pos, P * H);
    TAKE(m->type, TV * H);
    TAKE(m->eln_w, H);
    TAKE(m->eln_b, H);
    if (read(src, "embeddings.word_embeddings.weight", V, H, m->word, err, errlen) ||
        read(src, "embeddings.position_embeddings.weight", P, H, m->pos, err, errlen) ||
        read(src, "embeddings.token_type_embeddings.weight", TV, H, m->type, err, errlen) ||
        read(src, "embeddings.LayerNorm.weight", H, -1, m->eln_w, err, errlen) ||
        read(src, "embeddings.LayerNorm.bias", H, -1, m->eln_b, err, errlen))
        goto out_free;
    for (int l = 0; l < cfg->layers; l++) {
        BertLayer *L = &m->layers[l];
        TAKE_PACKED(L->wqkv, pk_qkv);
        TAKE_PACKED(L->wo, pk_o);
        TAKE_PACKED(L->wi, pk_i);
        TAKE_PACKED(L->wo2, pk_o2);
        TAKE(L->bqkv, 3 * H);
        TAKE(L->bo, H);
        TAKE(L->ln1_w, H);
        TAKE(L->ln1_b, H);
        TAKE(L->bi, FF);
        TAKE(L->bo2, H);
        TAKE(L->ln2_w, H);
        TAKE(L->ln2_b, H);
        char b[128];
#define NAME(name) (snprintf(b, sizeof b, "encoder.layer.%d.%s", l, name), b)
#define R(name, d0, d1, dst) read(src, NAME(name), d0, d1, dst, err, errlen)
/* an [n][k] weight read through tmp and packed into dst in the model's precision */
#define RP(name, d0, d1, dst) (R(name, d0, d1, tmp) || (gemm_lowp_pack(pr, dst, tmp, (int)(d1), (int)(d0), (int)(d1)), 0))
        if (R("attention.self.query.weight", H, H, tmp) || R("attention.self.key.weight", H, H, tmp + H * H) ||
            R("attention.self.value.weight", H, H, tmp + 2 * H * H))
            goto out_free;
        gemm_lowp_pack(pr, L->wqkv, tmp, (int)H, (int)(3 * H), (int)H);
        if (R("attention.self.query.bias", H, -1, L->bqkv) ||
            R("attention.self.key.bias", H, -1, L->bqkv + H) || R("attention.self.value.bias", H, -1, L->bqkv + 2 * H) ||
            RP("attention.output.dense.weight", H, H, L->wo) || R("attention.output.dense.bias", H, -1, L->bo) ||
            R("attention.output.LayerNorm.weight", H, -1, L->ln1_w) || R("attention.output.LayerNorm.bias", H, -1, L->ln1_b) ||
            RP("intermediate.dense.weight", FF, H, L->wi) || R("intermediate.dense.bias", FF, -1, L->bi) ||
            RP("output.dense.weight", H, FF, L->wo2) || R("output.dense.bias", H, -1, L->bo2) ||
            R("output.LayerNorm.weight", H, -1, L->ln2_w) || R("output.LayerNorm.bias", H, -1, L->ln2_b))
            goto out_free;
#undef RP
#undef R
#undef NAME
    }
#undef TAKE_PACKED
#undef TAKE
    free(tmp);
    return m;
out_free:
    free(tmp);
    bert_free(m);
    return NULL;
}

void bert_free(BertModel *m)
{
    if (!m) return;
    free(m->blob);
    free(m->packed);
    free(m->layers);
    free(m);
}

int bert_scratch_init(BertScratch *s, const BertConfig *c, int max_tokens, int max_seq)
{
    memset(s, 0, sizeof *s);
    size_t T = (size_t)max_tokens, H = (size_t)c->hidden, FF = (size_t)c->intermediate;
    size_t sizes[7] = {T * H, T * 3 * H, T * H, T * H, T * FF, CPU_ATTN_SCRATCH(max_seq, c->hidden / c->heads),
                         gemm_work_floats()};
    size_t total = 0;
    for (int i = 0; i < 7; i++) total += (sizes[i] + 15) & ~(size_t)15; /* 64-byte aligned slices */
    float *p = aligned_alloc(64, total * sizeof(float));
    if (!p) return -1;
    memset(p, 0, total * sizeof(float)); /* fault the pages in now, not during the first batch */
    s->block = p;
    s->max_tokens = max_tokens;
    s->max_seq = max_seq;
    float **dst[7] = {&s->x, &s->qkv, &s->ctx, &s->tmp, &s->ffn, &s->scores, &s->work};
    for (int i = 0; i < 7; i++) {
        *dst[i] = p;
        p += (sizes[i] + 15) & ~(size_t)15;
    }
    return 0;
}

void bert_scratch_free(BertScratch *s)
{
    free(s->block);
    memset(s, 0, sizeof *s);
}

/* One linear layer in the model's precision. */
static void linear(const BertModel *m, const GemmOps *gemm, float *c, int ldc, const float *a, int lda,
                   const void *w, int T, int n, int k, const GemmEpilogue *ep, float *work)
{
    if (m->lowp)
        m->lowp->gemm(c, ldc, a, lda, w, T, n, k, ep, work);
    else
        gemm->sgemm(c, ldc, a, lda, w, T, n, k, ep, work);
}

void bert_forward(const BertModel *m, BertScratch *s, const int32_t *ids, const int *lens, int nseq,
                  EmbedPooling pooling, float *out)
{
    const CpuOps *ops = cpu_ops();
    const GemmOps *gemm = gemm_ops();
    const BertConfig *c = &m->c;
    const int H = c->hidden, FF = c->intermediate, NH = c->heads, D = H / NH;
    const float scale = 1.0f / sqrtf((float)D);
    int T = 0;
    for (int i = 0; i < nseq; i++) T += lens[i];

    /* embeddings: word + position + token type 0, then LayerNorm */
    for (int i = 0, t = 0; i < nseq; i++) {
        for (int p = 0; p < lens[i]; p++, t++) {
            float *x = s->x + (size_t)t * H;
            const float *w = m->word + (size_t)ids[t] * H, *pe = m->pos + (size_t)p * H;
            for (int h = 0; h < H; h++) x[h] = w[h] + pe[h] + m->type[h];
        }
    }
    ops->layernorm(s->x, s->x, m->eln_w, m->eln_b, T, H, c->ln_eps);

    for (int l = 0; l < c->layers; l++) {
        const BertLayer *L = &m->layers[l];
        /* qkv = x Wqkv^T + b */
        GemmEpilogue ep_qkv = {.bias = L->bqkv};
        linear(m, gemm, s->qkv, 3 * H, s->x, H, L->wqkv, T, 3 * H, H, &ep_qkv, s->work);
        /* attention, one sequence and head at a time, over that sequence's tokens only */
        for (int i = 0, t0 = 0; i < nseq; t0 += lens[i], i++) {
            const float *q = s->qkv + (size_t)t0 * 3 * H;
            for (int h = 0; h < NH; h++)
                ops->attention(s->ctx + (size_t)t0 * H + h * D, H, q + h * D, q + H + h * D, q + 2 * H + h * D, 3 * H,
                               lens[i], D, scale, s->scores);
        }
        /* x = LN(x + ctx Wo^T + bo) */
        GemmEpilogue ep_o = {.bias = L->bo, .res = s->x, .ldres = H};
        linear(m, gemm, s->tmp, H, s->ctx, H, L->wo, T, H, H, &ep_o, s->work);
        ops->layernorm(s->x, s->tmp, L->ln1_w, L->ln1_b, T, H, c->ln_eps);
        /* x = LN(x + gelu(x Wi^T + bi) Wo2^T + bo2) */
        GemmEpilogue ep_i = {.bias = L->bi, .gelu = 1};
        linear(m, gemm, s->ffn, FF, s->x, H, L->wi, T, FF, H, &ep_i, s->work);
        GemmEpilogue ep_o2 = {.bias = L->bo2, .res = s->x, .ldres = H};
        linear(m, gemm, s->tmp, H, s->ffn, FF, L->wo2, T, H, FF, &ep_o2, s->work);
        ops->layernorm(s->x, s->tmp, L->ln2_w, L->ln2_b, T, H, c->ln_eps);
    }

    for (int i = 0, t0 = 0; i < nseq; t0 += lens[i], i++) {
        float *o = out + (size_t)i * H;
        const float *x = s->x + (size_t)t0 * H;
        int n = lens[i];
        if (pooling == EMBED_POOL_CLS || pooling == EMBED_POOL_LAST) { /* LAST: the [SEP] (GGUF files) */
            memcpy(o, x + (pooling == EMBED_POOL_LAST ? (size_t)(n - 1) * H : 0), (size_t)H * sizeof(float));
        } else if (pooling == EMBED_POOL_MAX) {
            memcpy(o, x, (size_t)H * sizeof(float));
            for (int t = 1; t < n; t++)
                for (int h = 0; h < H; h++) o[h] = fmaxf(o[h], x[(size_t)t * H + h]);
        } else {
            for (int h = 0; h < H; h++) o[h] = 0.0f;
            for (int t = 0; t < n; t++)
                for (int h = 0; h < H; h++) o[h] += x[(size_t)t * H + h];
            for (int h = 0; h < H; h++) o[h] /= (float)n;
        }
    }
}
