/* forward_dev.c: the decoder's forward pass on a device (see forward_dev.h). The layer sequence
 * is model.c's forward_run, step for step, on the device operations of kernels/decoder_dev.h,
 * each in the CPU model's order of operations, so the logits are the CPU path's bits: matmuls as
 * quantised matrix-vector products, 8 tokens per weight read (activations quantised once per
 * group of matmuls sharing an input); optionally (gemm_min_tokens) large prompt chunks as
 * dequantise-to-fp16 plus the device layer's GEMM, which gives up the bit-identity.
 *
 * Device memory: the weights (plus norm vectors, the RoPE table, a zero bias) in the device's
 * one weight allocation; one stream whose arena holds the KV pool first, then every buffer of a
 * step, all carved once at create, so a step allocates nothing and a captured graph's pointers
 * stay valid. A decode-only step of n tokens runs in the bucket dec_graph_bucket(n): padded
 * tokens write their K/V into one spare page past the pool and their logits are ignored; the
 * first step of a bucket runs eagerly (a warm-up), the second is captured, later ones replay. */
#include "engine/decode/forward_dev.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/decoder_dev.h"
#include "kernels/quant.h"

#define GRAPH_SLOTS 64 /* buckets up to 8 * 61: more than any graph_max in use */

typedef struct DMat {
    const void *w; /* device address */
    int type, rows, cols;
} DMat;

typedef struct DLayer {
    const float *attn_norm, *ffn_norm, *bq, *bk, *bv, *q_norm, *k_norm;
    DMat wq, wk, wv, wo, wgate, wup, wdown;
} DLayer;

struct DevForward {
    Device *d;
    DevStream *s;
    const Model *m;
    DevForwardOpts o;
    int kv_tokens, page_stride, spare_page;
    int gemm_min;           /* matmuls of this many tokens or more: dequantise + GEMM */
    DLayer *L;
    DMat tok_embd, output;
    const float *out_norm, *rope_cs, *zero_bias;
    uint16_t *kc, *vc;      /* [layer][pages + 1][KV_PAGE][kv_dim] */
    size_t kv_layer;        /* elements per layer */
    /* step buffers (device) */
    float *x, *xn, *q, *k, *v, *att, *gate, *up, *gather, *logits;
    uint16_t *q16, *wdeq;
    uint8_t *act;
    size_t act_stride;
    int32_t *in, *ids, *pos, *tok_seq, *idx, *gemv, *pages, *greedy;
    size_t in_bytes;
    int act_type;           /* the activation type act holds for the current group, or -1 */
    const float *act_src;
    /* graphs by bucket: NULL = none; warm[b] = ran once eagerly */
    void *graph[GRAPH_SLOTS];
    uint8_t warm[GRAPH_SLOTS];
    DevForwardStats st;
};

static int graph_slot(int bucket) { return bucket <= 4 ? bucket : 4 + bucket / 8; }

static size_t al(size_t x) { return (x + DEV_ALIGN - 1) & ~(size_t)(DEV_ALIGN - 1); }

static void dmat_of(DMat *dm, const WMat *w) { *dm = (DMat){.w = w->data, .type = w->type, .rows = w->rows, .cols = w->cols}; }

/* Walks every tensor the device needs, in a fixed order: with base NULL it only counts bytes;
 * with base it uploads each and points the DevForward at it. */
typedef struct Up {
    DevForward *f;
    char *base;
    size_t off;
    int rc;
} Up;

static const void *put(Up *u, const void *host, size_t bytes)
{
    if (!host || u->rc) return NULL;
    size_t at = u->off;
    u->off += al(bytes);
    if (!u->base) return NULL;
    u->rc = device_upload(u->f->d, u->base + at, host, bytes);
    return u->base + at;
}

static void put_mat(Up *u, DMat *dm, const WMat *w)
{
    dmat_of(dm, w);
    dm->w = put(u, w->data, w->row_bytes * (size_t)w->rows);
}

static int walk_weights(Up *u, const float *rope, size_t rope_bytes, const float *zeros, size_t zero_bytes)
{
    DevForward *f = u->f;
    const Model *m = f->m;
    const ModelHparams *hp = &m->hp;
    int qd = hp->n_head * hp->head_dim, kvd = hp->n_head_kv * hp->head_dim;
    put_mat(u, &f->tok_embd, &m->tok_embd);
    if (m->output.data == m->tok_embd.data) {
        dmat_of(&f->output, &m->output);
        f->output.w = f->tok_embd.w; /* tied: one copy */
    } else {
        put_mat(u, &f->output, &m->output);
    }
    f->out_norm = put(u, m->out_norm, (size_t)hp->n_embd * 4);
    f->rope_cs = put(u, rope, rope_bytes);
    f->zero_bias = put(u, zeros, zero_bytes);
    for (int l = 0; l < hp->n_layer; l++) {
        const ModelLayer *ML = &m->layers[l];
        DLayer *L = &f->L[l];
        L->attn_norm = put(u, ML->attn_norm, (size_t)hp->n_embd * 4);
        L->ffn_norm = put(u, ML->ffn_norm, (size_t)hp->n_embd * 4);
        L->bq = put(u, ML->bq, (size_t)qd * 4);
        L->bk = put(u, ML->bk, (size_t)kvd * 4);
        L->bv = put(u, ML->bv, (size_t)kvd * 4);
        L->q_norm = put(u, ML->q_norm, (size_t)hp->head_dim * 4);
        L->k_norm = put(u, ML->k_norm, (size_t)hp->head_dim * 4);
        put_mat(u, &L->wq, &ML->wq);
        put_mat(u, &L->wk, &ML->wk);
        put_mat(u, &L->wv, &ML->wv);
        put_mat(u, &L->wo, &ML->wo);
        put_mat(u, &L->wgate, &ML->wgate);
        put_mat(u, &L->wup, &ML->wup);
        put_mat(u, &L->wdown, &ML->wdown);
    }
    return u->rc;
}

/* The step's buffers, in arena order; with base NULL only their total. */
static size_t carve(DevForward *f, char *base)
{
    const ModelHparams *hp = &f->m->hp;
    size_t T = (size_t)f->o.max_tokens, Lg = (size_t)f->o.max_logits, d = (size_t)hp->n_embd;
    size_t qd = (size_t)hp->n_head * hp->head_dim, kvd = (size_t)hp->n_head_kv * hp->head_dim, nff = (size_t)hp->n_ff;
    size_t act_stride = 0, deq = 0, maxcols = nff > d ? nff : d;
    maxcols = qd > maxcols ? qd : maxcols;
    for (int l = 0; l < hp->n_layer; l++) {
        const DMat *ms[7] = {&f->L[l].wq, &f->L[l].wk, &f->L[l].wv, &f->L[l].wo, &f->L[l].wgate, &f->L[l].wup, &f->L[l].wdown};
        for (int i = 0; i < 7; i++) {
            size_t ab = dec_act_row_bytes(ms[i]->type, ms[i]->cols), el = (size_t)ms[i]->rows * ms[i]->cols;
            if (ab > act_stride) act_stride = ab;
            if (el > deq) deq = el;
        }
    }
    size_t ab = dec_act_row_bytes(f->output.type, f->output.cols);
    if (ab > act_stride) act_stride = ab;
    f->act_stride = (act_stride + 15) & ~(size_t)15;
    size_t Ta = T > Lg ? T : Lg;
    f->page_stride = (f->o.max_ctx + KV_PAGE - 1) / KV_PAGE;
    f->in_bytes = (5 * T + (size_t)(f->o.max_seqs + 1) * f->page_stride) * 4;
    size_t off = 0;
#define CARVE(ptr, bytes) (ptr = base ? (void *)(base + off) : NULL, off += al(bytes))
    CARVE(f->x, T * d * 4);
    CARVE(f->xn, T * d * 4);
    CARVE(f->q, T * qd * 4);
    CARVE(f->k, T * kvd * 4);
    CARVE(f->v, T * kvd * 4);
    CARVE(f->att, T * qd * 4);
    CARVE(f->gate, T * nff * 4);
    CARVE(f->up, T * nff * 4);
    CARVE(f->gather, Lg * d * 4);
    CARVE(f->logits, Lg * (size_t)hp->n_vocab * 4);
    CARVE(f->q16, T * qd * 2);
    CARVE(f->wdeq, T >= (size_t)f->gemm_min ? deq * 2 : 0);
    CARVE(f->act, Ta * f->act_stride);
    CARVE(f->in, f->in_bytes);
    CARVE(f->greedy, Lg * 4);
#undef CARVE
    /* the prefill GEMM converts its activations to fp16 in arena space above the buffers */
    if (T >= (size_t)f->gemm_min) off += al(T * maxcols * 2);
    if (base) {
        f->ids = f->in;
        f->pos = f->in + T;
        f->tok_seq = f->in + 2 * T;
        f->idx = f->in + 3 * T;
        f->gemv = f->in + 4 * T;
        f->pages = f->in + 5 * T;
    }
    return off;
}

DevForward *dev_forward_create(Device *d, const Model *m, const DevForwardOpts *o, int *status, char *err,
                               size_t errlen)
{
    const ModelHparams *hp = &m->hp;
    int rc = DEV_EINVAL;
    DevForward *f = calloc(1, sizeof *f);
    float *rope = NULL, *zeros = NULL;
    if (!f || !(f->L = calloc((size_t)hp->n_layer, sizeof *f->L))) {
        snprintf(err, errlen, "decoder on %s: out of host memory", device_info(d)->name);
        rc = DEV_ENOMEM;
        goto fail;
    }
    f->d = d;
    f->m = m;
    f->o = *o;
    f->gemm_min = o->gemm_min_tokens > 0 ? o->gemm_min_tokens : INT_MAX;
    if (o->max_tokens < 1 || o->max_ctx < 1 || o->max_seqs < 1 || o->max_logits < 1 || o->graph_max < 0 ||
        o->graph_max > 8 * (GRAPH_SLOTS - 5)) {
        snprintf(err, errlen, "decoder on %s: bad step limits (tokens %d, ctx %d, seqs %d, logits %d, graphs to %d)",
                 device_info(d)->name, o->max_tokens, o->max_ctx, o->max_seqs, o->max_logits, o->graph_max);
        goto fail;
    }
    /* The device kernels do llama/qwen2/qwen3's layer; the phi3 and gemma additions (fused
     * slices, soft-capping, sliding windows, GeGLU, post-norms) run on the CPU only so far. */
    if (m->arch != ARCH_LLAMA && m->arch != ARCH_QWEN2 && m->arch != ARCH_QWEN3) {
        snprintf(err, errlen, "decoder on %s: architecture %s runs on the cpu only (the device runs llama, "
                 "qwen2 and qwen3); set decoder.device = \"cpu\"", device_info(d)->name, m->arch_name);
        rc = DEV_ENOTSUP;
        goto fail;
    }
    if (!dec_dev_ops(d)) {
        snprintf(err, errlen, "decoder on %s: this device has no decoder kernels", device_info(d)->name);
        rc = DEV_ENOTSUP;
        goto fail;
    }
    /* host copies of what is uploaded besides the GGUF tensors */
    size_t rope_bytes = (size_t)o->max_ctx * hp->rope_dim * 4, zero_rows = (size_t)hp->n_vocab;
    rope = malloc(rope_bytes);
    zeros = calloc(zero_rows, 4);
    if (!rope || !zeros) {
        snprintf(err, errlen, "decoder on %s: out of host memory", device_info(d)->name);
        rc = DEV_ENOMEM;
        goto fail;
    }
    for (int p = 0; p < o->max_ctx; p++) model_rope_row(m, p, rope + (size_t)p * hp->rope_dim);
    Up u = {.f = f};
    walk_weights(&u, rope, rope_bytes, zeros, zero_rows * 4);
    size_t wbytes = u.off;
    if ((rc = device_weights_alloc(d, wbytes)) != DEV_OK) {
        snprintf(err, errlen, "decoder: the model's %zu bytes do not fit: %s", wbytes, device_errstr(d));
        goto fail;
    }
    u = (Up){.f = f, .base = device_weights(d)};
    if ((rc = walk_weights(&u, rope, rope_bytes, zeros, zero_rows * 4)) != DEV_OK) {
        snprintf(err, errlen, "decoder: uploading the weights: %s", device_errstr(d));
        goto fail;
    }
    /* the KV pool: given, or from what is free now that the weights are in */
    size_t scratch = carve(f, NULL);
    size_t kv_tok_bytes = 2 * (size_t)hp->n_layer * hp->n_head_kv * hp->head_dim * 2;
    int kv = o->kv_tokens;
    if (kv <= 0) {
        size_t free_b = 0, total_b = 0;
        if ((rc = device_mem_info(d, &free_b, &total_b)) != DEV_OK) {
            snprintf(err, errlen, "decoder: free memory: %s", device_errstr(d));
            goto fail;
        }
        /* the pool's own spare page and the step buffers are fixed costs of the one stream */
        kv = dev_budget_tokens(free_b, DEV_STREAM_FIXED_BYTES + scratch + KV_PAGE * kv_tok_bytes, kv_tok_bytes, 1,
                               o->fraction > 0 ? o->fraction : DEV_BUDGET_FRACTION, 0, o->max_ctx);
        if (kv == 0) {
            snprintf(err, errlen,
                     "decoder: %zu bytes free on %s after the %zu-byte model hold no KV pool of one context (%d tokens, "
                     "%zu bytes each) beside the %zu-byte step buffers",
                     free_b, device_info(d)->name, wbytes, o->max_ctx, kv_tok_bytes, scratch);
            rc = DEV_ENOMEM;
            goto fail;
        }
    }
    f->kv_tokens = kv - kv % KV_PAGE;
    if (f->kv_tokens < KV_PAGE) {
        snprintf(err, errlen, "decoder: a KV pool of %d tokens is smaller than one page (%d)", kv, KV_PAGE);
        goto fail;
    }
    f->spare_page = f->kv_tokens / KV_PAGE;
    f->kv_layer = (size_t)(f->spare_page + 1) * KV_PAGE * hp->n_head_kv * hp->head_dim;
    size_t kv_bytes = al(f->kv_layer * hp->n_layer * 2) * 2;
    size_t arena = kv_bytes + scratch;
    size_t pinned = f->in_bytes + (size_t)o->max_logits * hp->n_vocab * 4 + (size_t)o->max_logits * 4;
    f->s = dev_stream_new(d, arena, pinned, err, errlen);
    if (!f->s) {
        rc = device_lost(d) ? DEV_ESTICKY : DEV_ENOMEM;
        goto fail;
    }
    void *p;
    if ((rc = dev_arena_alloc(f->s, kv_bytes / 2, &p)) != DEV_OK) goto fail_arena;
    f->kc = p;
    if ((rc = dev_arena_alloc(f->s, kv_bytes / 2, &p)) != DEV_OK) goto fail_arena;
    f->vc = p;
    if ((rc = dev_arena_alloc(f->s, scratch, &p)) != DEV_OK) goto fail_arena;
    carve(f, p);
    f->st.weights_bytes = wbytes;
    f->st.arena_bytes = arena;
    f->st.kv_bytes = kv_bytes;
    free(rope);
    free(zeros);
    if (status) *status = DEV_OK;
    return f;
fail_arena:
    snprintf(err, errlen, "decoder: carving the arena: %s", device_errstr(d));
fail:
    free(rope);
    free(zeros);
    dev_forward_free(f);
    if (status) *status = rc;
    return NULL;
}

void dev_forward_free(DevForward *f)
{
    if (!f) return;
    for (int i = 0; i < GRAPH_SLOTS; i++) dec_graph_free(f->d, f->graph[i]);
    dev_stream_free(f->s);
    free(f->L);
    free(f);
}

int dev_forward_kv_tokens(const DevForward *f) { return f->kv_tokens; }
void dev_forward_stats(const DevForward *f, DevForwardStats *out) { *out = f->st; }

/* out[t] = W in[t] for ntok tokens; in's rows are ld floats apart, out's rows W->rows. Inputs of
 * a group of matmuls are quantised once (act_src / act_type remember the last). */
static int matmul(DevForward *f, float *out, const DMat *w, const float *in, int ld, int ntok)
{
    int rc;
    if (ntok >= f->gemm_min && w != &f->output) {
        if ((rc = dec_dequant_f16(f->s, f->wdeq, w->w, w->type, w->rows, w->cols))) return rc;
        return dev_gemm(f->s, out, in, f->wdeq, f->zero_bias, NULL, ntok, w->rows, w->cols, DEV_FP16);
    }
    int at = quant_act_type(w->type);
    if (f->act_src != in || f->act_type != at) {
        if ((rc = dec_quantize(f->s, f->act, f->act_stride, in, (size_t)ld, ntok, w->cols, w->type))) return rc;
        f->act_src = in;
        f->act_type = at;
    }
    for (int t0 = 0; t0 < ntok; t0 += DEC_MAX_MV_TOKENS) {
        int nt = ntok - t0 < DEC_MAX_MV_TOKENS ? ntok - t0 : DEC_MAX_MV_TOKENS;
        rc = dec_matvec(f->s, out + (size_t)t0 * w->rows, (size_t)w->rows, w->w, w->type, w->rows, w->cols,
                        f->act + (size_t)t0 * f->act_stride, f->act_stride, nt);
        if (rc) return rc;
    }
    return DEV_OK;
}

/* Queues the whole pass for n tokens (inputs already on the device) and nl logit rows. */
static int record_step(DevForward *f, int n, int nl)
{
    const ModelHparams *hp = &f->m->hp;
    int d = hp->n_embd, qd = hp->n_head * hp->head_dim, rc;
    f->act_src = NULL;
    if ((rc = dec_embed(f->s, f->x, f->ids, n, f->tok_embd.w, f->tok_embd.type, d))) return rc;
    for (int l = 0; l < hp->n_layer; l++) {
        const DLayer *L = &f->L[l];
        /* the previous layer's FFN residual, then this layer's norm */
        if ((rc = dec_add_rmsnorm(f->s, f->xn, f->x, l > 0 ? f->xn : NULL, NULL, L->attn_norm, n, d, hp->eps))) return rc;
        f->act_src = NULL;
        if ((rc = matmul(f, f->q, &L->wq, f->xn, d, n)) || (rc = matmul(f, f->k, &L->wk, f->xn, d, n)) ||
            (rc = matmul(f, f->v, &L->wv, f->xn, d, n)))
            return rc;
        DecQkvArgs qa = {.q = f->q, .k = f->k, .v = f->v, .q16 = f->q16,
                         .kcache = f->kc + (size_t)l * f->kv_layer, .vcache = f->vc + (size_t)l * f->kv_layer,
                         .tok_seq = f->tok_seq, .pos = f->pos, .pages = f->pages, .page_stride = f->page_stride,
                         .bq = L->bq, .bk = L->bk, .bv = L->bv, .q_norm = L->q_norm, .k_norm = L->k_norm,
                         .rope_cs = f->rope_cs, .ntok = n, .n_head = hp->n_head, .n_head_kv = hp->n_head_kv,
                         .head_dim = hp->head_dim, .rope_dim = hp->rope_dim, .rope_neox = hp->rope_neox, .eps = hp->eps};
        if ((rc = dec_qkv_post(f->s, &qa))) return rc;
        DecAttnArgs aa = {.out = f->att, .q16 = f->q16, .kcache = qa.kcache, .vcache = qa.vcache, .tok_seq = f->tok_seq,
                          .pos = f->pos, .pages = f->pages, .gemv = f->gemv, .page_stride = f->page_stride, .ntok = n,
                          .n_head = hp->n_head, .n_head_kv = hp->n_head_kv, .head_dim = hp->head_dim,
                          .max_ctx = f->o.max_ctx, .scale = 1.0f / sqrtf((float)hp->head_dim)};
        if ((rc = dec_attention(f->s, &aa))) return rc;
        f->act_src = NULL;
        if ((rc = matmul(f, f->xn, &L->wo, f->att, qd, n))) return rc;
        if ((rc = dec_add_rmsnorm(f->s, f->xn, f->x, f->xn, NULL, L->ffn_norm, n, d, hp->eps))) return rc;
        f->act_src = NULL;
        if ((rc = matmul(f, f->gate, &L->wgate, f->xn, d, n)) || (rc = matmul(f, f->up, &L->wup, f->xn, d, n))) return rc;
        if ((rc = dec_swiglu(f->s, f->gate, f->up, n, hp->n_ff))) return rc;
        f->act_src = NULL;
        if ((rc = matmul(f, f->xn, &L->wdown, f->gate, hp->n_ff, n))) return rc;
    }
    /* the last FFN residual, then the output norm over the rows that want logits */
    if ((rc = dec_add_rmsnorm(f->s, NULL, f->x, f->xn, NULL, NULL, n, d, hp->eps))) return rc;
    if (nl == 0) return DEV_OK;
    if ((rc = dec_add_rmsnorm(f->s, f->gather, f->x, NULL, f->idx, f->out_norm, nl, d, hp->eps))) return rc;
    f->act_src = NULL;
    if ((rc = matmul(f, f->logits, &f->output, f->gather, d, nl))) return rc;
    return dec_argmax(f->s, f->greedy, f->logits, nl, hp->n_vocab);
}

/* Fills the pinned input block for n real tokens padded to `padded`; returns the logit rows
 * (padded rows included) or -1 for a batch the step's limits cannot take. */
static int stage_inputs(DevForward *f, const BatchTok *toks, int n, int padded, int *nl_real, int *nseq_out)
{
    int32_t *h = dev_stream_pinned(f->s);
    size_t T = (size_t)f->o.max_tokens;
    int32_t *ids = h, *pos = h + T, *seq = h + 2 * T, *idx = h + 3 * T, *gemv = h + 4 * T, *pg = h + 5 * T;
    const int *seen[512];
    int nseq = 0, nl = 0;
    for (int t = 0; t < n; t++) {
        const BatchTok *b = &toks[t];
        if (b->token < 0 || b->token >= f->m->hp.n_vocab || b->pos < 0 || b->pos >= f->o.max_ctx) return -1;
        int s = 0;
        while (s < nseq && seen[s] != b->pages) s++;
        if (s == nseq) {
            if (nseq == f->o.max_seqs || nseq == (int)(sizeof seen / sizeof *seen)) return -1;
            seen[nseq++] = b->pages;
        }
        ids[t] = b->token;
        pos[t] = b->pos;
        seq[t] = s;
        for (int p = 0; p <= b->pos / KV_PAGE; p++) {
            if (b->pages[p] < 0 || b->pages[p] >= f->spare_page) return -1;
            pg[(size_t)s * f->page_stride + p] = b->pages[p];
        }
        if (b->logits_row >= 0) {
            if (b->logits_row != nl || nl == f->o.max_logits) return -1;
            idx[nl++] = t;
        }
    }
    *nl_real = nl;
    /* attention's order: a sequence's lone token in the batch takes the gemv order (model.c) */
    int count[512] = {0};
    for (int t = 0; t < n; t++) count[seq[t]]++;
    for (int t = 0; t < n; t++) gemv[t] = count[seq[t]] == 1;
    for (int t = n; t < padded; t++) { /* padding: position 0 of a sequence on the spare page */
        ids[t] = 0;
        pos[t] = 0;
        seq[t] = nseq;
        gemv[t] = 1;
        idx[nl++] = t;
    }
    pg[(size_t)nseq * f->page_stride] = f->spare_page;
    *nseq_out = nseq + 1;
    return nl;
}

int dev_forward_run(DevForward *f, const BatchTok *toks, int n, float *logits, int32_t *greedy)
{
    const ModelHparams *hp = &f->m->hp;
    if (n < 1 || n > f->o.max_tokens)
        return dev_fail(f->d, DEV_EINVAL, "dev_forward_run", "%d tokens (at most %d)", n, f->o.max_tokens);
    /* decode-only: every token is its sequence's one token and wants logits */
    int decode_only = 1;
    for (int t = 0; t < n && decode_only; t++) decode_only = toks[t].logits_row == t;
    for (int t = 0; t < n && decode_only; t++)
        for (int u = t + 1; u < n && decode_only; u++) decode_only = toks[u].pages != toks[t].pages;
    int use_graph = decode_only && n <= f->o.graph_max;
    int bucket = use_graph ? dec_graph_bucket(n, f->o.graph_max) : n;
    if (bucket > f->o.max_seqs || bucket > f->o.max_tokens || bucket > f->o.max_logits) use_graph = 0, bucket = n;
    int nl_real = 0, nseq = 0, nl = stage_inputs(f, toks, n, bucket, &nl_real, &nseq);
    if (nl < 0)
        return dev_fail(f->d, DEV_EINVAL, "dev_forward_run",
                        "a batch of %d tokens outside the step's limits (vocabulary, positions, pages, sequences, logit rows)", n);
    /* the token arrays, then the page-table rows in use */
    size_t T = (size_t)f->o.max_tokens;
    int32_t *h = dev_stream_pinned(f->s);
    int rc = dev_copy_h2d(f->s, f->in, h, 5 * T * 4);
    if (!rc) rc = dev_copy_h2d(f->s, f->pages, h + 5 * T, (size_t)nseq * f->page_stride * 4);
    if (rc) return rc;
    int slot = graph_slot(bucket);
    f->st.steps++;
    if (use_graph && f->graph[slot]) {
        rc = dec_graph_launch(f->s, f->graph[slot]);
        f->st.graph_launches += rc == DEV_OK;
    } else if (use_graph && f->warm[slot] && dec_graph_begin(f->s) == DEV_OK) {
        void *g = NULL;
        rc = record_step(f, bucket, nl);
        int rc2 = dec_graph_end(f->s, &g); /* always end the capture, even after a failed launch */
        if (rc == DEV_OK) rc = rc2;
        if (rc == DEV_OK) {
            f->graph[slot] = g;
            f->st.graphs_captured++;
            rc = dec_graph_launch(f->s, g);
            f->st.graph_launches += rc == DEV_OK;
        } else {
            dec_graph_free(f->d, g);
        }
    } else {
        rc = record_step(f, bucket, nl);
        if (use_graph) f->warm[slot] = rc == DEV_OK; /* the first run of a bucket is its warm-up */
        f->st.eager_steps++;
    }
    if (rc) return rc;
    char *pin = (char *)dev_stream_pinned(f->s) + f->in_bytes;
    if (nl_real > 0 && greedy && (rc = dev_copy_d2h(f->s, pin, f->greedy, (size_t)nl_real * 4))) return rc;
    size_t lbytes = (size_t)nl_real * hp->n_vocab * 4;
    if (nl_real > 0 && logits && (rc = dev_copy_d2h(f->s, pin + (size_t)f->o.max_logits * 4, f->logits, lbytes))) return rc;
    if ((rc = dev_sync(f->s))) return rc;
    if (greedy) memcpy(greedy, pin, (size_t)nl_real * 4);
    if (logits) memcpy(logits, pin + (size_t)f->o.max_logits * 4, lbytes);
    return DEV_OK;
}
