/* device.h: the accelerator device layer as C code sees it. A Device (one per engine) holds the
 * weights in one allocation; a DevStream (one per worker) holds one stream, one workspace arena
 * sized once, and one pinned host buffer, reused batch after batch. Both are driven through a
 * table of operations (device_impl.h) that the CUDA backend (kernels/cuda/) and the test-only
 * fake device (kernels/device_fake.c) fill, so C code never includes a CUDA, cuBLAS or Thrust
 * header. Every call returns a DevStatus; the handle's errstr names the call, the device and the
 * shapes. Nothing here logs, exits or allocates device memory on the hot path. */
#ifndef WEAVER_DEVICE_H
#define WEAVER_DEVICE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum DevStatus {
    DEV_OK = 0,
    DEV_ENODEV = -1,      /* no usable device: no driver, too old a driver, no GPU, index out of range */
    DEV_ENOMEM = -2,      /* out of memory; the context is intact: split the work or shrink, and retry */
    DEV_ESTICKY = -3,     /* the context is lost (illegal address, launch failure, ...): nothing more
                           * can run on this device; the engine stops and leaves its jobs pending */
    DEV_EINVAL = -4,      /* a bad argument: shape, alignment, precision this device lacks */
    DEV_EFAIL = -5,       /* any other failure of a call (a library status, a Thrust exception) */
    DEV_ENOTSUP = -6,     /* this device does not implement the operation */
} DevStatus;

#define DEV_ALIGN 256 /* every arena buffer and weight tensor starts at such an offset */

const char *dev_status_name(int status); /* "DEV_ENOMEM", ... */

/* The DevStatus a CUDA runtime error code means (cudaError_t by number, so C code and tests
 * need no CUDA header): 2 (memory allocation) is DEV_ENOMEM; the errors that leave the context
 * unusable (illegal address 700, launch failure 719, misaligned address 716, illegal instruction
 * 715, ECC 214, assert 710, ...) are DEV_ESTICKY; no driver, too old a driver, no device, an
 * invalid device or no kernel image for it are DEV_ENODEV; the rest DEV_EFAIL. */
int dev_status_from_cuda(int cuda_error);

/* How the encoder's GEMMs compute: inputs and weights in F32 (fp32: full precision, tf32: tensor
 * cores with 10-bit mantissas) or in F16 / BF16 (accumulated in F32). Everything else is F32. */
typedef enum DevPrecision { DEV_FP32 = 0, DEV_TF32, DEV_FP16, DEV_BF16 } DevPrecision;
const char *dev_precision_name(DevPrecision p);
bool dev_precision_parse(const char *s, DevPrecision *out);
size_t dev_precision_weight_bytes(DevPrecision p); /* bytes of one GEMM weight: 4 or 2 */

/* Pooling of dev_pool (the same numbers as EmbedPooling). */
typedef enum DevPool { DEV_POOL_MEAN = 0, DEV_POOL_CLS = 1, DEV_POOL_MAX = 2 } DevPool;

typedef struct DeviceInfo {
    char name[128];       /* "NVIDIA H200", "fake" */
    int index;            /* N of cuda:N */
    int cc_major, cc_minor;
    int sm_count;
    size_t total_bytes;
    size_t free_bytes;    /* at open, before the weights */
} DeviceInfo;

typedef struct Device Device;
typedef struct DevStream DevStream;
typedef struct DeviceOps DeviceOps;

/* The CUDA device table, or NULL in a build without CUDA. */
const DeviceOps *device_cuda_ops(void);
/* What cuda:N opens: the CUDA table, or in test builds the fake device when
 * $WEAVER_TEST_FAKE_DEVICE is set (device_fake_configure_spec), so the engine's handling of
 * device failures is testable without a GPU. */
const DeviceOps *device_cuda_or_test_ops(void);

/* How many devices the CUDA runtime sees: >= 0, or DEV_ENODEV with why in err (no driver, too
 * old a driver: the runtime's own words and code). A build without CUDA says so. */
int device_cuda_count(char *err, size_t errlen);

/* Opens device `index` through ops. NULL with the reason in err (DEV_* in *status if given). */
Device *device_open(const DeviceOps *ops, int index, int *status, char *err, size_t errlen);
void device_close(Device *d);                  /* NULL-safe; frees the weights */
const DeviceInfo *device_info(const Device *d);
const char *device_errstr(const Device *d);    /* the last failed call, with shapes (one thread) */
/* The same, copied under the device's lock: for workers sharing the device. */
void device_errstr_copy(Device *d, char *buf, size_t len);
/* True once a sticky error was seen: every later call returns DEV_ESTICKY without running. */
bool device_lost(const Device *d);
/* Records a failure on d: errstr becomes "<device name> (<kind>:N): <call>: <detail>"; a
 * DEV_ESTICKY marks the device lost. Returns status. For backends and the code above them. */
int dev_fail(Device *d, int status, const char *call, const char *fmt, ...)
#ifdef __GNUC__
    __attribute__((format(printf, 4, 5)))
#endif
    ;

int device_mem_info(Device *d, size_t *free_bytes, size_t *total_bytes);

/* The one weight allocation: reserved once, filled by uploads at open, freed by device_close. */
int device_weights_alloc(Device *d, size_t bytes);
void *device_weights(const Device *d);         /* device address, 256-byte aligned */
int device_upload(Device *d, void *dst, const void *src, size_t bytes); /* synchronous, open only */

/* One worker's stream: an arena of arena_bytes device memory and pinned_bytes of pinned host
 * memory, both allocated here once. NULL with the reason in err. */
DevStream *dev_stream_new(Device *d, size_t arena_bytes, size_t pinned_bytes, char *err, size_t errlen);
void dev_stream_free(DevStream *s);            /* NULL-safe */
Device *dev_stream_device(const DevStream *s);
void *dev_stream_pinned(const DevStream *s);   /* the pinned host buffer */
size_t dev_stream_pinned_bytes(const DevStream *s);
/* Arena: bump allocation (256-byte aligned), released all at once by dev_arena_reset before each
 * batch. DEV_ENOMEM when the batch does not fit: the caller splits it. */
int dev_arena_alloc(DevStream *s, size_t bytes, void **out);
void dev_arena_reset(DevStream *s);
size_t dev_arena_used(const DevStream *s);
size_t dev_arena_size(const DevStream *s);

/* Asynchronous copies on the stream (host side must be the pinned buffer for overlap), and the
 * wait for everything queued on it. */
int dev_copy_h2d(DevStream *s, void *dst, const void *src, size_t bytes);
int dev_copy_d2h(DevStream *s, void *dst, const void *src, size_t bytes);
int dev_sync(DevStream *s);
/* Device-to-device copy on the stream (the GPU check's bandwidth ceiling). */
int dev_copy_d2d(DevStream *s, void *dst, const void *src, size_t bytes);

/* The encoder's operations, queued on the stream. Pointers are device addresses; activations are
 * F32 row-major; weights are [n][k] row-major in dev_precision_weight_bytes(prec) each. */
/* cu_seqlens[0] = 0, cu_seqlens[i + 1] = cu_seqlens[i] + lens[i] for i < nseq (device arrays). */
int dev_seq_offsets(DevStream *s, int32_t *cu_seqlens, const int32_t *lens, int nseq);
/* x[t] = word[ids[t]] + pos[t - cu_seqlens[seq(t)]] + type0, for the total tokens T. */
int dev_embed_tokens(DevStream *s, float *x, const int32_t *ids, const int32_t *cu_seqlens, int nseq, int T,
                     const float *word, const float *pos, const float *type0, int H);
/* out[m][n] = a[m][k] w[n][k]^T + bias[n] (+ res[m][n] when res != NULL; res may be out). */
int dev_gemm(DevStream *s, float *out, const float *a, const void *w, const float *bias, const float *res,
             int m, int n, int k, DevPrecision prec);
/* x = 0.5 x (1 + erf(x / sqrt 2)), in place over n values. */
int dev_gelu(DevStream *s, float *x, size_t n);
/* out[r] = LayerNorm(x[r] (+ res[r] when res != NULL)) * w + b; out may be x or res. */
int dev_layernorm(DevStream *s, float *out, const float *x, const float *res, const float *w, const float *b,
                  int rows, int cols, float eps);
/* Padding-free attention: qkv rows are [q | k | v] (3 * heads * d floats); sequence i owns rows
 * cu_seqlens[i] .. cu_seqlens[i + 1] and attends to those only; T = cu_seqlens[nseq]. ctx rows
 * are heads * d; d is 32 or 64 on CUDA. */
int dev_attention(DevStream *s, float *ctx, const float *qkv, const int32_t *cu_seqlens, int nseq, int T,
                  int heads, int d, float scale);
/* out[i] = pooling of x's rows of sequence i (H each). */
int dev_pool(DevStream *s, float *out, const float *x, const int32_t *cu_seqlens, int nseq, int H, DevPool mode);
/* Each of rows rows of cols becomes x / max(||x||, 1e-12), in place. */
int dev_l2_normalize(DevStream *s, float *x, int rows, int cols);

/* Token budget from the device (batch.token_budget = 0): free_bytes (measured after the weights
 * are uploaded) less every worker's fixed workspace, times `fraction`, shared by `workers`,
 * divided by the bytes one token of a batch needs, then capped by `cap` (0 = no cap). Returns
 * the tokens, or 0 when not even `min_tokens` fit (the caller reports it). */
#define DEV_BUDGET_FRACTION 0.90
/* Device memory a stream takes besides its arena (the cuBLASLt workspace, 32 MiB, plus room for
 * the context's own per-stream needs). */
#define DEV_STREAM_FIXED_BYTES ((size_t)40 << 20)
int dev_budget_tokens(size_t free_bytes, size_t fixed_per_worker, size_t bytes_per_token, int workers,
                      double fraction, int cap, int min_tokens);

#ifdef __cplusplus
}
#endif

#endif
