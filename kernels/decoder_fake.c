/* decoder_fake.c: the fake device's decoder operations (test builds only, WEAVER_TEST_BACKENDS):
 * each one computes on the host what the CUDA kernel of kernels/cuda/decoder_*.cu computes, with
 * the same shared arithmetic (quant_math.h, decoder_math.h) and, for the matrix-vector product,
 * the kernel's own order of summation (32 lanes over units, then the warp's butterfly), so that
 * the host logic above the device layer (engine/decode/forward_dev.c) runs in CI and can be
 * compared with the CPU model. CUDA graphs are emulated: while capturing, operations are
 * recorded instead of run; a launch replays them. Every operation counts through
 * device_fake_op (sticky-error injection). Must never be reachable from a configuration. */
#ifdef WEAVER_TEST_BACKENDS
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/decoder_dev.h"
#include "kernels/decoder_math.h"
#include "kernels/device_fake.h"
#include "kernels/device_impl.h"
#include "kernels/quant_math.h"

/* ---- graph emulation: a recorded call is its operation and a copy of its arguments ---- */
typedef enum { R_QUANT, R_MV, R_EMBED, R_NORM, R_QKV, R_ATT, R_SWIGLU, R_ARGMAX, R_DEQ } RecKind;

typedef struct Rec {
    RecKind kind;
    void *p[6];
    size_t z[3];
    int i[6];
    float f;
    DecQkvArgs qkv;
    DecAttnArgs att;
} Rec;

typedef struct FakeGraph {
    Rec *recs;
    int n, cap;
} FakeGraph;

static FakeGraph *recording; /* the graph being captured (one stream at a time in tests) */
static DevStream *recording_s;

static int record(DevStream *s, const Rec *r)
{
    if (!recording || recording_s != s) return 0;
    if (recording->n == recording->cap) {
        int nc = recording->cap ? recording->cap * 2 : 64;
        Rec *nr = realloc(recording->recs, (size_t)nc * sizeof *nr);
        if (!nr) return -1;
        recording->recs = nr;
        recording->cap = nc;
    }
    recording->recs[recording->n++] = *r;
    return 1;
}

/* ---- the operations ---- */

static void quantize_rows(void *act, size_t as, const float *x, size_t ldx, int ntok, int ncols, int wtype)
{
    for (int t = 0; t < ntok; t++) qm_quantize_row(quant_act_type(wtype), x + (size_t)t * ldx, (char *)act + (size_t)t * as, ncols);
}

static int f_quantize(DevStream *s, void *act, size_t as, const float *x, size_t ldx, int ntok, int ncols, int wtype)
{
    Rec r = {.kind = R_QUANT, .p = {act, (void *)x}, .z = {as, ldx}, .i = {ntok, ncols, wtype}};
    int rc = record(s, &r);
    if (rc) return rc < 0 ? dev_fail(s->d, DEV_ENOMEM, "quantize", "recording") : DEV_OK;
    if ((rc = device_fake_op(s, "dec_quantize"))) return rc;
    if (as < dec_act_row_bytes(wtype, ncols))
        return dev_fail(s->d, DEV_EINVAL, "dec_quantize", "act_stride %zu too small", as);
    quantize_rows(act, as, x, ldx, ntok, ncols, wtype);
    return DEV_OK;
}

static int f_matvec(DevStream *s, float *out, size_t ldo, const void *w, int wtype, int rows, int ncols, const void *act,
                    size_t as, int ntok)
{
    Rec r = {.kind = R_MV, .p = {out, (void *)w, (void *)act}, .z = {ldo, as}, .i = {wtype, rows, ncols, ntok}};
    int rc = record(s, &r);
    if (rc) return rc < 0 ? dev_fail(s->d, DEV_ENOMEM, "matvec", "recording") : DEV_OK;
    if ((rc = device_fake_op(s, "dec_matvec"))) return rc;
    if (!quant_type_supported(wtype) || quant_row_bytes(wtype, ncols) == 0 || ntok < 1 || ntok > DEC_MAX_MV_TOKENS ||
        ldo < (size_t)rows)
        return dev_fail(s->d, DEV_EINVAL, "dec_matvec", "%s rows=%d cols=%d tokens=%d", quant_type_name(wtype), rows,
                        ncols, ntok);
    /* the kernel runs the reference's lanes in the reference's order: qm_dot_row's bits */
    size_t rb = quant_row_bytes(wtype, ncols);
    for (int row = 0; row < rows; row++)
        for (int t = 0; t < ntok; t++)
            out[(size_t)t * ldo + row] =
                qm_dot_row(wtype, (const uint8_t *)w + (size_t)row * rb, (const uint8_t *)act + (size_t)t * as, ncols);
    return DEV_OK;
}

static int f_dequant_f16(DevStream *s, uint16_t *dst, const void *w, int wtype, int rows, int ncols)
{
    Rec r = {.kind = R_DEQ, .p = {dst, (void *)w}, .i = {wtype, rows, ncols}};
    int rc = record(s, &r);
    if (rc) return rc < 0 ? dev_fail(s->d, DEV_ENOMEM, "dequant", "recording") : DEV_OK;
    if ((rc = device_fake_op(s, "dec_dequant_f16"))) return rc;
    size_t rb = quant_row_bytes(wtype, ncols);
    int be = qm_block_elems(wtype), bb = qm_block_bytes(wtype);
    for (int row = 0; row < rows; row++)
        for (int i = 0; i < ncols; i++)
            dst[(size_t)row * ncols + i] =
                qm_f2h(qm_dequant_elem(wtype, (const uint8_t *)w + (size_t)row * rb + (size_t)(i / be) * bb, i % be));
    return DEV_OK;
}

static int f_embed(DevStream *s, float *x, const int32_t *ids, int ntok, const void *table, int type, int n_embd)
{
    Rec r = {.kind = R_EMBED, .p = {x, (void *)ids, (void *)table}, .i = {ntok, type, n_embd}};
    int rc = record(s, &r);
    if (rc) return rc < 0 ? dev_fail(s->d, DEV_ENOMEM, "embed", "recording") : DEV_OK;
    if ((rc = device_fake_op(s, "dec_embed"))) return rc;
    size_t rb = quant_row_bytes(type, n_embd);
    for (int t = 0; t < ntok; t++) qm_dequant_row(type, (const uint8_t *)table + (size_t)ids[t] * rb, x + (size_t)t * n_embd, n_embd);
    return DEV_OK;
}

static int f_add_rmsnorm(DevStream *s, float *out, float *x, const float *add, const int32_t *idx, const float *w,
                         int rows, int cols, float eps)
{
    Rec r = {.kind = R_NORM, .p = {out, x, (void *)add, (void *)idx, (void *)w}, .i = {rows, cols}, .f = eps};
    int rc = record(s, &r);
    if (rc) return rc < 0 ? dev_fail(s->d, DEV_ENOMEM, "add_rmsnorm", "recording") : DEV_OK;
    if ((rc = device_fake_op(s, "dec_add_rmsnorm"))) return rc;
    for (int row = 0; row < rows; row++) {
        float *xr = x + (size_t)(idx ? idx[row] : row) * cols;
        double ss = 0.0;
        for (int c = 0; c < cols; c++) {
            if (add) xr[c] += add[(size_t)row * cols + c];
            float sq = xr[c] * xr[c];
            ss += sq;
        }
        if (!w) continue;
        float scale = qm_rms_scale(ss, cols, eps);
        for (int c = 0; c < cols; c++) out[(size_t)row * cols + c] = (xr[c] * scale) * w[c];
    }
    return DEV_OK;
}

static int f_qkv_post(DevStream *s, const DecQkvArgs *a)
{
    Rec r = {.kind = R_QKV, .qkv = *a};
    int rc = record(s, &r);
    if (rc) return rc < 0 ? dev_fail(s->d, DEV_ENOMEM, "qkv_post", "recording") : DEV_OK;
    if ((rc = device_fake_op(s, "dec_qkv_post"))) return rc;
    int hd = a->head_dim, qd = a->n_head * hd, kvd = a->n_head_kv * hd;
    float buf[512];
    if (hd > 512) return dev_fail(s->d, DEV_EINVAL, "dec_qkv_post", "head_dim %d", hd);
    for (int t = 0; t < a->ntok; t++)
        for (int hv = 0; hv < a->n_head + 2 * a->n_head_kv; hv++) {
            int kind = hv < a->n_head ? 0 : hv < a->n_head + a->n_head_kv ? 1 : 2;
            int h = kind == 0 ? hv : kind == 1 ? hv - a->n_head : hv - a->n_head - a->n_head_kv;
            float *vec = (kind == 0 ? a->q + (size_t)t * qd : kind == 1 ? a->k + (size_t)t * kvd : a->v + (size_t)t * kvd) + h * hd;
            const float *bias = kind == 0 ? a->bq : kind == 1 ? a->bk : a->bv;
            const float *nw = kind == 0 ? a->q_norm : kind == 1 ? a->k_norm : NULL;
            double ss = 0.0;
            for (int i = 0; i < hd; i++) {
                buf[i] = vec[i] + (bias ? bias[h * hd + i] : 0.0f);
                float sq = buf[i] * buf[i];
                ss += sq;
            }
            if (nw) {
                float scale = qm_rms_scale(ss, hd, a->eps);
                for (int i = 0; i < hd; i++) buf[i] = (buf[i] * scale) * nw[i];
            }
            int pos = a->pos[t];
            if (kind < 2) {
                const float *cs = a->rope_cs + (size_t)pos * a->rope_dim;
                int half = a->rope_dim / 2;
                for (int i = 0; i < half; i++)
                    qm_rope_pair(&buf[a->rope_neox ? i : 2 * i], &buf[a->rope_neox ? i + half : 2 * i + 1], cs[2 * i],
                                 cs[2 * i + 1]);
            }
            uint16_t *dst;
            if (kind == 0) {
                dst = a->q16 + (size_t)t * qd + h * hd;
            } else {
                int page = a->pages[(size_t)a->tok_seq[t] * a->page_stride + pos / DEC_KV_PAGE];
                dst = (kind == 1 ? a->kcache : a->vcache) + ((size_t)page * DEC_KV_PAGE + pos % DEC_KV_PAGE) * kvd + (size_t)h * hd;
            }
            for (int i = 0; i < hd; i++) {
                vec[i] = buf[i];
                dst[i] = qm_f2h(buf[i]);
            }
        }
    return DEV_OK;
}

static int f_attention(DevStream *s, const DecAttnArgs *a)
{
    Rec r = {.kind = R_ATT, .att = *a};
    int rc = record(s, &r);
    if (rc) return rc < 0 ? dev_fail(s->d, DEV_ENOMEM, "attention", "recording") : DEV_OK;
    if ((rc = device_fake_op(s, "dec_attention"))) return rc;
    int hd = a->head_dim, kvd = a->n_head_kv * hd, group = a->n_head / a->n_head_kv;
    float *sc = malloc((size_t)a->max_ctx * sizeof *sc); /* test-only code may allocate */
    if (!sc) return dev_fail(s->d, DEV_ENOMEM, "dec_attention", "host scratch");
    for (int t = 0; t < a->ntok; t++) {
        int n = a->pos[t] + 1, gemv = a->gemv[t];
        if (n > a->max_ctx) {
            free(sc);
            return dev_fail(s->d, DEV_EINVAL, "dec_attention", "position %d beyond max_ctx %d", n - 1, a->max_ctx);
        }
        const int32_t *pt = a->pages + (size_t)a->tok_seq[t] * a->page_stride;
        for (int h = 0; h < a->n_head; h++) {
            const uint16_t *q = a->q16 + ((size_t)t * a->n_head + h) * hd;
            const uint16_t *kb = a->kcache + (size_t)(h / group) * hd, *vb = a->vcache + (size_t)(h / group) * hd;
#define KV_ROW(base, p) ((base) + ((size_t)pt[(p) / DEC_KV_PAGE] * DEC_KV_PAGE + (p) % DEC_KV_PAGE) * kvd)
            float mx = -INFINITY;
            for (int p = 0; p < n; p++) {
                sc[p] = qm_dot_f16_order(q, KV_ROW(kb, p), hd, gemv) * a->scale;
                mx = fmaxf(mx, sc[p]);
            }
            double sum = 0.0;
            for (int i0 = 0; i0 < n; i0 += 16) sum += (double)qm_softmax_chunk(sc, sc, mx, i0, n);
            float inv = (float)(1.0 / sum);
            for (int p = 0; p < n; p++) sc[p] = qm_h2f(qm_f2h(sc[p] * inv));
            int pv_gemv = gemv || hd % 4;
            for (int d = 0; d < hd; d++) {
                float lanes[16];
#define PROB(p) sc[p]
#define VROW(p) KV_ROW(vb, p)
                for (int l = 0; l < 16; l++) QM_PV_LANE(lanes[l], l, d, n, pv_gemv, PROB, VROW);
#undef PROB
#undef VROW
                a->out[((size_t)t * a->n_head + h) * hd + d] = qm_reduce16(lanes);
            }
#undef KV_ROW
        }
    }
    free(sc);
    return DEV_OK;
}

static int f_swiglu(DevStream *s, float *gate, const float *up, int ntok, int n_ff)
{
    Rec r = {.kind = R_SWIGLU, .p = {gate, (void *)up}, .i = {ntok, n_ff}};
    int rc = record(s, &r);
    if (rc) return rc < 0 ? dev_fail(s->d, DEV_ENOMEM, "swiglu", "recording") : DEV_OK;
    if ((rc = device_fake_op(s, "dec_swiglu"))) return rc;
    for (int t = 0; t < ntok; t++)
        for (int c = 0; c < n_ff; c++) {
            size_t i = (size_t)t * n_ff + c;
            float g = gate[i];
            gate[i] = c < (n_ff & ~15) ? qm_swiglu(g, up[i]) : g / (1.0f + expf(-g)) * up[i];
        }
    return DEV_OK;
}

static int f_argmax(DevStream *s, int32_t *out, const float *logits, int rows, int n_vocab)
{
    Rec r = {.kind = R_ARGMAX, .p = {out, (void *)logits}, .i = {rows, n_vocab}};
    int rc = record(s, &r);
    if (rc) return rc < 0 ? dev_fail(s->d, DEV_ENOMEM, "argmax", "recording") : DEV_OK;
    if ((rc = device_fake_op(s, "dec_argmax"))) return rc;
    for (int row = 0; row < rows; row++) {
        const float *l = logits + (size_t)row * n_vocab;
        int best = 0;
        for (int i = 1; i < n_vocab; i++)
            if (l[i] > l[best]) best = i;
        out[row] = best;
    }
    return DEV_OK;
}

static int f_graph_begin(DevStream *s)
{
    if (recording) return dev_fail(s->d, DEV_EINVAL, "graph_begin", "already capturing");
    recording = calloc(1, sizeof *recording);
    if (!recording) return dev_fail(s->d, DEV_ENOMEM, "graph_begin", "host memory");
    recording_s = s;
    return DEV_OK;
}

static int f_graph_end(DevStream *s, void **graph)
{
    if (!recording || recording_s != s) return dev_fail(s->d, DEV_EINVAL, "graph_end", "not capturing");
    *graph = recording;
    recording = NULL;
    recording_s = NULL;
    return DEV_OK;
}

static int f_graph_launch(DevStream *s, void *graph)
{
    FakeGraph *g = graph;
    int rc = device_fake_op(s, "graph_launch");
    for (int i = 0; i < g->n && rc == DEV_OK; i++) {
        const Rec *r = &g->recs[i];
        switch (r->kind) {
        case R_QUANT: rc = f_quantize(s, r->p[0], r->z[0], r->p[1], r->z[1], r->i[0], r->i[1], r->i[2]); break;
        case R_MV: rc = f_matvec(s, r->p[0], r->z[0], r->p[1], r->i[0], r->i[1], r->i[2], r->p[2], r->z[1], r->i[3]); break;
        case R_DEQ: rc = f_dequant_f16(s, r->p[0], r->p[1], r->i[0], r->i[1], r->i[2]); break;
        case R_EMBED: rc = f_embed(s, r->p[0], r->p[1], r->i[0], r->p[2], r->i[1], r->i[2]); break;
        case R_NORM: rc = f_add_rmsnorm(s, r->p[0], r->p[1], r->p[2], r->p[3], r->p[4], r->i[0], r->i[1], r->f); break;
        case R_QKV: rc = f_qkv_post(s, &r->qkv); break;
        case R_ATT: rc = f_attention(s, &r->att); break;
        case R_SWIGLU: rc = f_swiglu(s, r->p[0], r->p[1], r->i[0], r->i[1]); break;
        case R_ARGMAX: rc = f_argmax(s, r->p[0], r->p[1], r->i[0], r->i[1]); break;
        }
    }
    return rc;
}

static void f_graph_free(void *graph)
{
    FakeGraph *g = graph;
    if (!g) return;
    free(g->recs);
    free(g);
}

static const DecDevOps fake_dec_ops = {
    .quantize = f_quantize,
    .matvec = f_matvec,
    .dequant_f16 = f_dequant_f16,
    .embed = f_embed,
    .add_rmsnorm = f_add_rmsnorm,
    .qkv_post = f_qkv_post,
    .attention = f_attention,
    .swiglu = f_swiglu,
    .argmax = f_argmax,
    .graph_begin = f_graph_begin,
    .graph_end = f_graph_end,
    .graph_launch = f_graph_launch,
    .graph_free = f_graph_free,
};

const DecDevOps *dec_dev_fake_ops(void) { return &fake_dec_ops; }
#endif
