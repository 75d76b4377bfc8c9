/* device_impl.h: what a device backend implements (kernels/cuda/device_cuda.cu, the test-only
 * kernels/device_fake.c). Only backends and kernels/device.c include this. Every operation
 * returns a DevStatus and, on failure, writes the reason (call, device, shapes) into the
 * handle's errstr; device.c turns a DEV_ESTICKY into the device's lost state. */
#ifndef WEAVER_DEVICE_IMPL_H
#define WEAVER_DEVICE_IMPL_H

#include <pthread.h>

#include "kernels/device.h"

#ifdef __cplusplus
extern "C" {
#endif

#define DEV_ERRSTR 512

struct Device {
    const DeviceOps *ops;
    DeviceInfo info;
    void *impl;             /* backend state */
    void *weights;          /* the one weight allocation */
    size_t weights_bytes;
    bool lost;              /* a sticky error was seen (__atomic loads and stores: workers share d) */
    pthread_mutex_t mu;     /* guards errstr: every worker's stream reports into it */
    char errstr[DEV_ERRSTR];
};

struct DevStream {
    Device *d;
    void *impl;             /* backend state: the stream, library handles */
    char *arena;            /* device memory, arena_size bytes */
    size_t arena_size, arena_used;
    void *pinned;           /* pinned host memory */
    size_t pinned_bytes;
};

/* The table. Optional operations may be NULL (then the wrapper returns DEV_ENOTSUP). */
struct DeviceOps {
    const char *name;                                           /* "cuda", "fake" */
    int (*open)(Device *d, int index);                          /* fills info and impl */
    void (*close)(Device *d);                                   /* frees weights and impl */
    int (*mem_info)(Device *d, size_t *free_bytes, size_t *total_bytes);
    int (*weights_alloc)(Device *d, size_t bytes);              /* sets d->weights */
    int (*upload)(Device *d, void *dst, const void *src, size_t bytes);
    int (*stream_new)(DevStream *s, size_t arena_bytes, size_t pinned_bytes); /* sets arena, pinned, impl */
    void (*stream_free)(DevStream *s);
    /* Optional: a check before each arena allocation (the fake device's fault injection). */
    int (*arena_alloc_check)(DevStream *s, size_t bytes);
    int (*copy_h2d)(DevStream *s, void *dst, const void *src, size_t bytes);
    int (*copy_d2h)(DevStream *s, void *dst, const void *src, size_t bytes);
    int (*sync)(DevStream *s);
    int (*copy_d2d)(DevStream *s, void *dst, const void *src, size_t bytes); /* optional */
    int (*seq_offsets)(DevStream *s, int32_t *cu_seqlens, const int32_t *lens, int nseq);
    int (*embed_tokens)(DevStream *s, float *x, const int32_t *ids, const int32_t *cu_seqlens, int nseq, int T,
                        const float *word, const float *pos, const float *type0, int H);
    int (*gemm)(DevStream *s, float *out, const float *a, const void *w, const float *bias, const float *res,
                int m, int n, int k, DevPrecision prec);
    int (*gelu)(DevStream *s, float *x, size_t n);
    int (*layernorm)(DevStream *s, float *out, const float *x, const float *res, const float *w, const float *b,
                     int rows, int cols, float eps);
    int (*attention)(DevStream *s, float *ctx, const float *qkv, const int32_t *cu_seqlens, int nseq, int T,
                     int heads, int d, float scale);
    int (*pool)(DevStream *s, float *out, const float *x, const int32_t *cu_seqlens, int nseq, int H, DevPool mode);
    int (*l2_normalize)(DevStream *s, float *x, int rows, int cols);
};


#ifdef __cplusplus
}
#endif

#endif
