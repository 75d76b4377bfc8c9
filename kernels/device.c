/* device.c: the device layer's plain-C half: the handles, the wrappers that check a call may
 * run (a lost device runs nothing more) and record sticky errors, the workspace arena's bump
 * allocator, and token-budget sizing. Backend-neutral: must not include a CUDA header, log or
 * exit. */
#include "kernels/device_impl.h"
#include "kernels/device_fake.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *dev_status_name(int status)
{
    switch (status) {
    case DEV_OK: return "DEV_OK";
    case DEV_ENODEV: return "DEV_ENODEV";
    case DEV_ENOMEM: return "DEV_ENOMEM";
    case DEV_ESTICKY: return "DEV_ESTICKY";
    case DEV_EINVAL: return "DEV_EINVAL";
    case DEV_EFAIL: return "DEV_EFAIL";
    case DEV_ENOTSUP: return "DEV_ENOTSUP";
    default: return "DEV_E?";
    }
}

int dev_status_from_cuda(int e)
{
    switch (e) {
    case 0: return DEV_OK;
    case 2: return DEV_ENOMEM;                       /* cudaErrorMemoryAllocation */
    case 35:                                         /* cudaErrorInsufficientDriver */
    case 46:                                         /* cudaErrorDevicesUnavailable */
    case 100:                                        /* cudaErrorNoDevice */
    case 101:                                        /* cudaErrorInvalidDevice */
    case 209:                                        /* cudaErrorNoKernelImageForDevice */
    case 803:                                        /* cudaErrorSystemDriverMismatch */
    case 804:                                        /* cudaErrorCompatNotSupportedOnDevice */
        return DEV_ENODEV;
    case 214:                                        /* cudaErrorECCUncorrectable */
    case 700:                                        /* cudaErrorIllegalAddress */
    case 702:                                        /* cudaErrorLaunchTimeout */
    case 709:                                        /* cudaErrorContextIsDestroyed */
    case 710:                                        /* cudaErrorAssert */
    case 714:                                        /* cudaErrorHardwareStackError */
    case 715:                                        /* cudaErrorIllegalInstruction */
    case 716:                                        /* cudaErrorMisalignedAddress */
    case 717:                                        /* cudaErrorInvalidAddressSpace */
    case 718:                                        /* cudaErrorInvalidPc */
    case 719:                                        /* cudaErrorLaunchFailure */
        return DEV_ESTICKY;
    default: return DEV_EFAIL;
    }
}

static const char *const precision_names[] = {"fp32", "tf32", "fp16", "bf16"};

const char *dev_precision_name(DevPrecision p)
{
    return (unsigned)p < 4 ? precision_names[p] : "?";
}

bool dev_precision_parse(const char *s, DevPrecision *out)
{
    for (int i = 0; s && i < 4; i++)
        if (strcmp(s, precision_names[i]) == 0) {
            *out = (DevPrecision)i;
            return true;
        }
    return false;
}

size_t dev_precision_weight_bytes(DevPrecision p)
{
    return p == DEV_FP16 || p == DEV_BF16 ? 2 : 4;
}

int dev_fail(Device *d, int status, const char *call, const char *fmt, ...)
{
    char detail[DEV_ERRSTR];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    pthread_mutex_lock(&d->mu);
    snprintf(d->errstr, sizeof d->errstr, "%.100s (%s:%d): %.60s: %.300s", d->info.name[0] ? d->info.name : d->ops->name,
             d->ops->name, d->info.index, call, detail);
    pthread_mutex_unlock(&d->mu);
    if (status == DEV_ESTICKY) __atomic_store_n(&d->lost, true, __ATOMIC_RELEASE);
    return status;
}

/* Every wrapper: a lost device refuses; a sticky status marks it lost (backends should already
 * have said why through dev_fail). */
static int guard(Device *d, const char *call)
{
    if (!__atomic_load_n(&d->lost, __ATOMIC_ACQUIRE)) return DEV_OK;
    /* keep the first cause visible: it is what an operator needs */
    pthread_mutex_lock(&d->mu);
    if (!strstr(d->errstr, "refused: the device context is lost")) {
        char prev[DEV_ERRSTR];
        snprintf(prev, sizeof prev, "%s", d->errstr);
        snprintf(d->errstr, sizeof d->errstr, "%s refused: the device context is lost (%.400s)", call, prev);
    }
    pthread_mutex_unlock(&d->mu);
    return DEV_ESTICKY;
}

static int track(Device *d, int rc)
{
    if (rc == DEV_ESTICKY) __atomic_store_n(&d->lost, true, __ATOMIC_RELEASE);
    return rc;
}

Device *device_open(const DeviceOps *ops, int index, int *status, char *err, size_t errlen)
{
    int rc = DEV_ENODEV;
    if (!ops) {
        snprintf(err, errlen, "cuda:%d: this build has no CUDA device layer (built without nvcc)", index);
        goto out;
    }
    Device *d = calloc(1, sizeof *d);
    if (!d) {
        rc = DEV_ENOMEM;
        snprintf(err, errlen, "out of host memory opening a %s device", ops->name);
        goto out;
    }
    d->ops = ops;
    d->info.index = index;
    pthread_mutex_init(&d->mu, NULL);
    rc = ops->open(d, index);
    if (rc != DEV_OK) {
        snprintf(err, errlen, "%s", d->errstr);
        pthread_mutex_destroy(&d->mu);
        free(d);
        goto out;
    }
    if (status) *status = DEV_OK;
    return d;
out:
    if (status) *status = rc;
    return NULL;
}

void device_close(Device *d)
{
    if (!d) return;
    d->ops->close(d);
    pthread_mutex_destroy(&d->mu);
    free(d);
}

const DeviceInfo *device_info(const Device *d) { return &d->info; }
const char *device_errstr(const Device *d) { return d->errstr; }
bool device_lost(const Device *d) { return __atomic_load_n(&d->lost, __ATOMIC_ACQUIRE); }

void device_errstr_copy(Device *d, char *buf, size_t len)
{
    pthread_mutex_lock(&d->mu);
    snprintf(buf, len, "%s", d->errstr);
    pthread_mutex_unlock(&d->mu);
}

int device_mem_info(Device *d, size_t *free_bytes, size_t *total_bytes)
{
    int rc = guard(d, "mem_info");
    return rc ? rc : track(d, d->ops->mem_info(d, free_bytes, total_bytes));
}

int device_weights_alloc(Device *d, size_t bytes)
{
    int rc = guard(d, "weights_alloc");
    if (rc) return rc;
    if (d->weights) return dev_fail(d, DEV_EINVAL, "weights_alloc", "the weights are allocated already (%zu bytes)",
                                    d->weights_bytes);
    return track(d, d->ops->weights_alloc(d, bytes));
}

void *device_weights(const Device *d) { return d->weights; }

int device_upload(Device *d, void *dst, const void *src, size_t bytes)
{
    int rc = guard(d, "upload");
    return rc ? rc : track(d, d->ops->upload(d, dst, src, bytes));
}

DevStream *dev_stream_new(Device *d, size_t arena_bytes, size_t pinned_bytes, char *err, size_t errlen)
{
    DevStream *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(err, errlen, "out of host memory for a device stream");
        return NULL;
    }
    s->d = d;
    int rc = guard(d, "stream_new");
    if (!rc) rc = track(d, d->ops->stream_new(s, arena_bytes, pinned_bytes));
    if (rc) {
        snprintf(err, errlen, "%s", d->errstr);
        free(s);
        return NULL;
    }
    return s;
}

void dev_stream_free(DevStream *s)
{
    if (!s) return;
    s->d->ops->stream_free(s);
    free(s);
}

Device *dev_stream_device(const DevStream *s) { return s->d; }
void *dev_stream_pinned(const DevStream *s) { return s->pinned; }
size_t dev_stream_pinned_bytes(const DevStream *s) { return s->pinned_bytes; }
size_t dev_arena_used(const DevStream *s) { return s->arena_used; }
size_t dev_arena_size(const DevStream *s) { return s->arena_size; }
void dev_arena_reset(DevStream *s) { s->arena_used = 0; }

int dev_arena_alloc(DevStream *s, size_t bytes, void **out)
{
    *out = NULL;
    int rc = guard(s->d, "arena_alloc");
    if (rc) return rc;
    if (s->d->ops->arena_alloc_check && (rc = track(s->d, s->d->ops->arena_alloc_check(s, bytes))) != DEV_OK)
        return rc;
    size_t need = (bytes + DEV_ALIGN - 1) & ~(size_t)(DEV_ALIGN - 1);
    if (need > s->arena_size - s->arena_used)
        return dev_fail(s->d, DEV_ENOMEM, "arena_alloc", "%zu bytes asked, %zu of the %zu-byte workspace arena left",
                        bytes, s->arena_size - s->arena_used, s->arena_size);
    *out = s->arena + s->arena_used;
    s->arena_used += need;
    return DEV_OK;
}

#define WRAP(name, ...)                                                    \
    do {                                                                   \
        int rc_ = guard(s->d, #name);                                      \
        if (rc_) return rc_;                                               \
        if (!s->d->ops->name)                                              \
            return dev_fail(s->d, DEV_ENOTSUP, #name, "not implemented by this device"); \
        return track(s->d, s->d->ops->name(s, __VA_ARGS__));               \
    } while (0)

int dev_copy_h2d(DevStream *s, void *dst, const void *src, size_t bytes) { WRAP(copy_h2d, dst, src, bytes); }
int dev_copy_d2h(DevStream *s, void *dst, const void *src, size_t bytes) { WRAP(copy_d2h, dst, src, bytes); }

int dev_copy_d2d(DevStream *s, void *dst, const void *src, size_t bytes) { WRAP(copy_d2d, dst, src, bytes); }

int dev_sync(DevStream *s)
{
    int rc = guard(s->d, "sync");
    return rc ? rc : track(s->d, s->d->ops->sync(s));
}

int dev_seq_offsets(DevStream *s, int32_t *cu_seqlens, const int32_t *lens, int nseq)
{
    WRAP(seq_offsets, cu_seqlens, lens, nseq);
}

int dev_embed_tokens(DevStream *s, float *x, const int32_t *ids, const int32_t *cu_seqlens, int nseq, int T,
                     const float *word, const float *pos, const float *type0, int H)
{
    WRAP(embed_tokens, x, ids, cu_seqlens, nseq, T, word, pos, type0, H);
}

int dev_gemm(DevStream *s, float *out, const float *a, const void *w, const float *bias, const float *res,
             int m, int n, int k, DevPrecision prec)
{
    WRAP(gemm, out, a, w, bias, res, m, n, k, prec);
}

int dev_gelu(DevStream *s, float *x, size_t n) { WRAP(gelu, x, n); }

int dev_layernorm(DevStream *s, float *out, const float *x, const float *res, const float *w, const float *b,
                  int rows, int cols, float eps)
{
    WRAP(layernorm, out, x, res, w, b, rows, cols, eps);
}

int dev_attention(DevStream *s, float *ctx, const float *qkv, const int32_t *cu_seqlens, int nseq, int T,
                  int heads, int d, float scale)
{
    WRAP(attention, ctx, qkv, cu_seqlens, nseq, T, heads, d, scale);
}

int dev_pool(DevStream *s, float *out, const float *x, const int32_t *cu_seqlens, int nseq, int H, DevPool mode)
{
    WRAP(pool, out, x, cu_seqlens, nseq, H, mode);
}

int dev_l2_normalize(DevStream *s, float *x, int rows, int cols) { WRAP(l2_normalize, x, rows, cols); }

int dev_budget_tokens(size_t free_bytes, size_t fixed_per_worker, size_t bytes_per_token, int workers,
                      double fraction, int cap, int min_tokens)
{
    if (workers < 1) workers = 1;
    if (bytes_per_token == 0) return 0;
    double usable = ((double)free_bytes - (double)fixed_per_worker * workers) * fraction / workers;
    if (usable <= 0) return 0;
    double tokens = usable / (double)bytes_per_token;
    if (cap > 0 && tokens > cap) tokens = cap;
    if (tokens > 1 << 30) tokens = 1 << 30;
    int t = (int)tokens;
    return t >= min_tokens ? t : 0;
}

const DeviceOps *device_cuda_or_test_ops(void)
{
#ifdef WEAVER_TEST_BACKENDS
    const char *f = getenv("WEAVER_TEST_FAKE_DEVICE");
    if (f && f[0]) {
        device_fake_configure_spec(f);
        return device_fake_ops();
    }
#endif
    return device_cuda_ops();
}

#ifndef WEAVER_HAVE_CUDA
const DeviceOps *device_cuda_ops(void) { return NULL; }

int device_cuda_count(char *err, size_t errlen)
{
    snprintf(err, errlen, "this build has no CUDA (configured with -DWEAVER_CUDA=OFF or without nvcc)");
    return DEV_ENODEV;
}
#endif
