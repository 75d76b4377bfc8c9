/* bert.c: BERT weights and forward pass. Q, K and V weights are packed into one [3H, H] matrix
 * at load so the projection is a single GEMM; biases are pre-filled into the GEMM output (beta =
 * 1) and residuals are folded into the same pre-fill, so no extra pass is needed for them.
 * Must not allocate in bert_forward. */
#include "engine/embed/bert.h"

#include <cblas.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/embed/safetensors.h"
#include "kernels/cpu_ops.h"

typedef struct BertLayer {
    float *wqkv, *bqkv, *wo, *bo, *ln1_w, *ln1_b, *wi, *bi, *wo2, *bo2, *ln2_w, *ln2_b;
} BertLayer;

struct BertModel {
    BertConfig c;
    float *word, *pos, *type, *eln_w, *eln_b;
    BertLayer *layers;
    float *blob;
};

const BertConfig *bert_config(const BertModel *m) { return &m->c; }

static int rd(const SafeTensors *st, const char *prefix, const char *name, int64_t d0, int64_t d1, float *out,
              char *err, size_t errlen)
{
    char full[256];
    snprintf(full, sizeof full, "%s%s", prefix, name);
    return st_read_f32(st, full, d0, d1, out, err, errlen);
}

BertModel *bert_load(const char *path, const BertConfig *cfg, char *err, size_t errlen)
{
    SafeTensors *st = st_open(path, err, errlen);
    if (!st) return NULL;
    BertModel *m = calloc(1, sizeof *m);
    if (!m) goto out_close;
    m->c = *cfg;
    const char *pfx = st_find(st, "embeddings.word_embeddings.weight") ? "" : "bert.";
    int64_t H = cfg->hidden, FF = cfg->intermediate, V = cfg->vocab_size, P = cfg->max_positions, TV = cfg->type_vocab;
    size_t per_layer = (size_t)(3 * H * H + 3 * H + H * H + H + 2 * H + FF * H + FF + H * FF + H + 2 * H);
    size_t total = (size_t)(V * H + P * H + TV * H + 2 * H) + per_layer * (size_t)cfg->layers;
    m->blob = malloc(total * sizeof(float));
    m->layers = calloc((size_t)cfg->layers, sizeof *m->layers);
    if (!m->blob || !m->layers) {
        snprintf(err, errlen, "%s: out of memory for %zu weights", path, total);
        goto out_free;
    }
    float *p = m->blob;
#define TAKE(ptr, n) do { (ptr) = p; p += (n); } while (0)
    TAKE(m->word, V * H);
    TAKE(m->pos, P * H);
    TAKE(m->type, TV * H);
    TAKE(m->eln_w, H);
    TAKE(m->eln_b, H);
    if (rd(st, pfx, "embeddings.word_embeddings.weight", V, H, m->word, err, errlen) ||
        rd(st, pfx, "embeddings.position_embeddings.weight", P, H, m->pos, err, errlen) ||
        rd(st, pfx, "embeddings.token_type_embeddings.weight", TV, H, m->type, err, errlen) ||
        rd(st, pfx, "embeddings.LayerNorm.weight", H, -1, m->eln_w, err, errlen) ||
        rd(st, pfx, "embeddings.LayerNorm.bias", H, -1, m->eln_b, err, errlen))
        goto out_free;
    for (int l = 0; l < cfg->layers; l++) {
        BertLayer *L = &m->layers[l];
        TAKE(L->wqkv, 3 * H * H);
        TAKE(L->bqkv, 3 * H);
        TAKE(L->wo, H * H);
        TAKE(L->bo, H);
        TAKE(L->ln1_w, H);
        TAKE(L->ln1_b, H);
        TAKE(L->wi, FF * H);
        TAKE(L->bi, FF);
        TAKE(L->wo2, H * FF);
        TAKE(L->bo2, H);
        TAKE(L->ln2_w, H);
        TAKE(L->ln2_b, H);
        char b[128];
#define R(name, d0, d1, dst) (snprintf(b, sizeof b, "encoder.layer.%d.%s", l, name), rd(st, pfx, b, d0, d1, dst, err, errlen))
        if (R("attention.self.query.weight", H, H, L->wqkv) || R("attention.self.key.weight", H, H, L->wqkv + H * H) ||
            R("attention.self.value.weight", H, H, L->wqkv + 2 * H * H) || R("attention.self.query.bias", H, -1, L->bqkv) ||
            R("attention.self.key.bias", H, -1, L->bqkv + H) || R("attention.self.value.bias", H, -1, L->bqkv + 2 * H) ||
            R("attention.output.dense.weight", H, H, L->wo) || R("attention.output.dense.bias", H, -1, L->bo) ||
            R("attention.output.LayerNorm.weight", H, -1, L->ln1_w) || R("attention.output.LayerNorm.bias", H, -1, L->ln1_b) ||
            R("intermediate.dense.weight", FF, H, L->wi) || R("intermediate.dense.bias", FF, -1, L->bi) ||
            R("output.dense.weight", H, FF, L->wo2) || R("output.dense.bias", H, -1, L->bo2) ||
            R("output.LayerNorm.weight", H, -1, L->ln2_w) || R("output.LayerNorm.bias", H, -1, L->ln2_b))
            goto out_free;
#undef R
    }
#undef TAKE
    st_close(st); /* weights are copied; the mapping's pages go back */
    return m;
out_free:
    bert_free(m);
out_close:
    st_close(st);
    return NULL;
}

void bert_free(BertModel *m)
{
    if (!m) return;
    free(m->blob);
    free(m->layers);
    free(m);
}

int bert_scratch_init(BertScratch *s, const BertConfig *c, int max_tokens, int max_seq)
{
    memset(s, 0, sizeof *s);
    size_t T = (size_t)max_tokens, H = (size_t)c->hidden, FF = (size_t)c->intermediate;
    size_t sizes[6] = {T * H, T * 3 * H, T * H, T * H, T * FF, (size_t)max_seq * (size_t)max_seq};
    size_t total = 0;
    for (int i = 0; i < 6; i++) total += (sizes[i] + 15) & ~(size_t)15; /* 64-byte aligned slices */
    float *p = aligned_alloc(64, total * sizeof(float));
    if (!p) return -1;
    s->block = p;
    s->max_tokens = max_tokens;
    s->max_seq = max_seq;
    float **dst[6] = {&s->x, &s->qkv, &s->ctx, &s->tmp, &s->ffn, &s->scores};
    for (int i = 0; i < 6; i++) {
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

/* out[T][n] = bias broadcast (+ res[T][n]); the GEMM then accumulates into it. */
static void prefill(const CpuOps *ops, float *out, const float *bias, const float *res, int T, int n)
{
    if (res) {
        ops->add_bias(out, res, bias, NULL, T, n);
    } else {
        for (int t = 0; t < T; t++) memcpy(out + (size_t)t * n, bias, (size_t)n * sizeof(float));
    }
}

void bert_forward(const BertModel *m, BertScratch *s, const int32_t *ids, const int *lens, int nseq,
                  EmbedPooling pooling, float *out)
{
    const CpuOps *ops = cpu_ops();
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
        prefill(ops, s->qkv, L->bqkv, NULL, T, 3 * H);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, 3 * H, H, 1.0f, s->x, H, L->wqkv, H, 1.0f, s->qkv, 3 * H);
        /* attention, one sequence and head at a time, over that sequence's tokens only */
        for (int i = 0, t0 = 0; i < nseq; t0 += lens[i], i++) {
            int n = lens[i];
            const float *q = s->qkv + (size_t)t0 * 3 * H;
            for (int h = 0; h < NH; h++) {
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, D, scale, q + h * D, 3 * H,
                            q + H + h * D, 3 * H, 0.0f, s->scores, n);
                ops->softmax(s->scores, n, n, n);
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, D, n, 1.0f, s->scores, n,
                            q + 2 * H + h * D, 3 * H, 0.0f, s->ctx + (size_t)t0 * H + h * D, H);
            }
        }
        /* x = LN(x + ctx Wo^T + bo) */
        prefill(ops, s->tmp, L->bo, s->x, T, H);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, H, H, 1.0f, s->ctx, H, L->wo, H, 1.0f, s->tmp, H);
        ops->layernorm(s->x, s->tmp, L->ln1_w, L->ln1_b, T, H, c->ln_eps);
        /* x = LN(x + gelu(x Wi^T + bi) Wo2^T + bo2) */
        prefill(ops, s->ffn, L->bi, NULL, T, FF);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, FF, H, 1.0f, s->x, H, L->wi, H, 1.0f, s->ffn, FF);
        ops->gelu(s->ffn, (size_t)T * FF);
        prefill(ops, s->tmp, L->bo2, s->x, T, H);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, H, FF, 1.0f, s->ffn, FF, L->wo2, FF, 1.0f, s->tmp, H);
        ops->layernorm(s->x, s->tmp, L->ln2_w, L->ln2_b, T, H, c->ln_eps);
    }

    for (int i = 0, t0 = 0; i < nseq; t0 += lens[i], i++) {
        float *o = out + (size_t)i * H;
        const float *x = s->x + (size_t)t0 * H;
        int n = lens[i];
        if (pooling == EMBED_POOL_CLS) {
            memcpy(o, x, (size_t)H * sizeof(float));
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
