/* decoder_dev.c: the plain-C half of the decoder's device operations (kernels/decoder_dev.h):
 * choosing the table for a device, the wrappers that refuse work on a lost device and record a
 * sticky error, activation row sizes, graph buckets, and the empty CUDA table of a build without
 * CUDA. Must not include a CUDA header, log or exit. */
#include "kernels/decoder_dev.h"

#include <string.h>

#include "kernels/device_impl.h"
#include "kernels/quant.h"

#ifdef WEAVER_TEST_BACKENDS
const DecDevOps *dec_dev_fake_ops(void); /* kernels/decoder_fake.c */
#endif

size_t dec_act_row_bytes(int wtype, int ncols)
{
    QuantType at = quant_act_type(wtype);
    if (at == QT_F32) return (size_t)ncols * 4;
    if (at == QT_BF16) return (size_t)ncols * 2;
    return quant_row_bytes(at, ncols);
}

#ifndef WEAVER_HAVE_CUDA
const DecDevOps *dec_dev_cuda_ops(void) { return NULL; }
#endif

const DecDevOps *dec_dev_ops(const Device *d)
{
    if (!d || !d->ops) return NULL;
    if (strcmp(d->ops->name, "cuda") == 0) return dec_dev_cuda_ops();
#ifdef WEAVER_TEST_BACKENDS
    if (strcmp(d->ops->name, "fake") == 0) return dec_dev_fake_ops();
#endif
    return NULL;
}

int dec_graph_bucket(int n, int max)
{
    if (n > max) return n;
    int b = n <= 1 ? 1 : n <= 2 ? 2 : n <= 4 ? 4 : (n + 7) / 8 * 8;
    return b > max ? max : b;
}

#define DEC_WRAP(name, ...)                                                                 \
    do {                                                                                    \
        const DecDevOps *o_ = dec_dev_ops(s->d);                                            \
        if (device_lost(s->d))                                                              \
            return dev_fail(s->d, DEV_ESTICKY, #name, "refused: the device context is lost"); \
        if (!o_ || !o_->name) return dev_fail(s->d, DEV_ENOTSUP, #name, "not implemented by this device"); \
        return o_->name(s, __VA_ARGS__);                                                    \
    } while (0)

int dec_quantize(DevStream *s, void *act, size_t act_stride, const float *x, size_t ldx, int ntok, int ncols, int wtype)
{
    DEC_WRAP(quantize, act, act_stride, x, ldx, ntok, ncols, wtype);
}

int dec_matvec(DevStream *s, float *out, size_t ldo, const void *w, int wtype, int rows, int ncols, const void *act,
               size_t act_stride, int ntok)
{
    DEC_WRAP(matvec, out, ldo, w, wtype, rows, ncols, act, act_stride, ntok);
}

int dec_dequant_f16(DevStream *s, uint16_t *dst, const void *w, int wtype, int rows, int ncols)
{
    DEC_WRAP(dequant_f16, dst, w, wtype, rows, ncols);
}

int dec_embed(DevStream *s, float *x, const int32_t *ids, int ntok, const void *table, int type, int n_embd)
{
    DEC_WRAP(embed, x, ids, ntok, table, type, n_embd);
}

int dec_add_rmsnorm(DevStream *s, float *out, float *x, const float *add, const int32_t *idx, const float *w, int rows,
                    int cols, float eps)
{
    DEC_WRAP(add_rmsnorm, out, x, add, idx, w, rows, cols, eps);
}

int dec_qkv_post(DevStream *s, const DecQkvArgs *a) { DEC_WRAP(qkv_post, a); }
int dec_attention(DevStream *s, const DecAttnArgs *a) { DEC_WRAP(attention, a); }
int dec_swiglu(DevStream *s, float *gate, const float *up, int ntok, int n_ff) { DEC_WRAP(swiglu, gate, up, ntok, n_ff); }

int dec_argmax(DevStream *s, int32_t *out, const float *logits, int rows, int n_vocab)
{
    DEC_WRAP(argmax, out, logits, rows, n_vocab);
}

int dec_graph_begin(DevStream *s)
{
    const DecDevOps *o = dec_dev_ops(s->d);
    if (device_lost(s->d)) return dev_fail(s->d, DEV_ESTICKY, "graph_begin", "refused: the device context is lost");
    if (!o || !o->graph_begin) return DEV_ENOTSUP; /* no graphs: the caller runs eagerly */
    return o->graph_begin(s);
}

int dec_graph_end(DevStream *s, void **graph) { DEC_WRAP(graph_end, graph); }
int dec_graph_launch(DevStream *s, void *graph) { DEC_WRAP(graph_launch, graph); }

void dec_graph_free(const Device *d, void *graph)
{
    const DecDevOps *o = dec_dev_ops(d);
    if (graph && o && o->graph_free) o->graph_free(graph);
}
