/* device_cuda.cu: the CUDA device backend's runtime half: device selection, the one weight
 * allocation, one stream + one device block (cuBLASLt workspace and arena) + pinned host buffer
 * per worker, asynchronous copies, and the table (device_cuda_ops) that joins it to the kernels
 * (encoder.cu, gemm_lt.cu, offsets.cu). Every call is checked; nothing here allocates after
 * dev_stream_new, logs or exits. */
#include <new>
#include <stdio.h>
#include <string.h>

#include "kernels/cuda/cuda_common.cuh"

/* The numbers dev_status_from_cuda (device.c) classifies, checked against this toolkit. */
static_assert(cudaErrorMemoryAllocation == 2 && cudaErrorInsufficientDriver == 35 && cudaErrorNoDevice == 100 &&
                  cudaErrorInvalidDevice == 101 && cudaErrorNoKernelImageForDevice == 209 &&
                  cudaErrorIllegalAddress == 700 && cudaErrorLaunchFailure == 719 &&
                  cudaErrorMisalignedAddress == 716 && cudaErrorIllegalInstruction == 715 &&
                  cudaErrorECCUncorrectable == 214 && cudaErrorAssert == 710 && cudaErrorLaunchTimeout == 702 &&
                  cudaErrorDevicesUnavailable == 46 && cudaErrorSystemDriverMismatch == 803,
              "cudaError_t numbers moved: update dev_status_from_cuda");

int cuda_fail(Device *d, cudaError_t e, const char *call, const char *detail)
{
    int status = dev_status_from_cuda((int)e);
    cudaGetLastError(); /* clear a non-sticky error so the next call starts clean */
    return dev_fail(d, status, call, "%s (%d: %s)%s%s", cudaGetErrorName(e), (int)e, cudaGetErrorString(e),
                    detail && detail[0] ? "; " : "", detail ? detail : "");
}

int cublas_fail(Device *d, cublasStatus_t st, const char *call, const char *detail)
{
    int status = st == CUBLAS_STATUS_ALLOC_FAILED                                   ? DEV_ENOMEM
                 : st == CUBLAS_STATUS_INVALID_VALUE || st == CUBLAS_STATUS_NOT_SUPPORTED ? DEV_EINVAL
                                                                                     : DEV_EFAIL;
    /* an execution failure may be the symptom of a lost context: the runtime knows */
    cudaError_t e = cudaPeekAtLastError();
    if (dev_status_from_cuda((int)e) == DEV_ESTICKY) status = DEV_ESTICKY;
    return dev_fail(d, status, call, "%s (%d)%s%s", cublasLtGetStatusName(st), (int)st,
                    detail && detail[0] ? "; " : "", detail ? detail : "");
}

extern "C" int device_cuda_count(char *err, size_t errlen)
{
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        int drv = 0, rt = 0;
        cudaDriverGetVersion(&drv);
        cudaRuntimeGetVersion(&rt);
        snprintf(err, errlen, "cudaGetDeviceCount: %s (%d: %s); driver API version %d, runtime %d", cudaGetErrorName(e),
                 (int)e, cudaGetErrorString(e), drv, rt);
        cudaGetLastError();
        return DEV_ENODEV;
    }
    if (n == 0) snprintf(err, errlen, "cudaGetDeviceCount: no CUDA device found");
    return n;
}

static int cuda_open(Device *d, int index)
{
    char err[DEV_ERRSTR];
    int n = device_cuda_count(err, sizeof err);
    if (n < 0) return dev_fail(d, DEV_ENODEV, "open", "%s", err);
    if (index >= n)
        return dev_fail(d, DEV_ENODEV, "open", "cuda:%d asked for, but %d CUDA device%s found%s", index, n,
                        n == 1 ? "" : "s", n ? "" : " (the driver sees no GPU)");
    CU_TRY(d, cudaSetDevice(index), "cuda:%d", index);
    cudaDeviceProp p;
    CU_TRY(d, cudaGetDeviceProperties(&p, index), "cuda:%d", index);
    snprintf(d->info.name, sizeof d->info.name, "%.127s", p.name);
    d->info.cc_major = p.major;
    d->info.cc_minor = p.minor;
    d->info.sm_count = p.multiProcessorCount;
    if (p.major < 8)
        return dev_fail(d, DEV_ENODEV, "open", "compute capability %d.%d; this build has kernels for sm_80 and sm_90 "
                        "(and PTX for newer) only", p.major, p.minor);
    CU_TRY(d, cudaMemGetInfo(&d->info.free_bytes, &d->info.total_bytes), "cuda:%d", index);
    return DEV_OK;
}

static void cuda_close(Device *d)
{
    if (d->weights) {
        cudaSetDevice(d->info.index);
        cudaFree(d->weights); /* nothing to do about a failure here: the process is going */
    }
    d->weights = NULL;
}

static int cuda_mem_info(Device *d, size_t *free_bytes, size_t *total_bytes)
{
    CU_TRY(d, cudaSetDevice(d->info.index), "cuda:%d", d->info.index);
    CU_TRY(d, cudaMemGetInfo(free_bytes, total_bytes), "cuda:%d", d->info.index);
    return DEV_OK;
}

static int cuda_weights_alloc(Device *d, size_t bytes)
{
    CU_TRY(d, cudaSetDevice(d->info.index), "cuda:%d", d->info.index);
    CU_TRY(d, cudaMalloc(&d->weights, bytes), "the one weight allocation of %zu bytes", bytes);
    d->weights_bytes = bytes;
    return DEV_OK;
}

static int cuda_upload(Device *d, void *dst, const void *src, size_t bytes)
{
    char *w = (char *)d->weights;
    if ((char *)dst < w || (char *)dst + bytes > w + d->weights_bytes)
        return dev_fail(d, DEV_EINVAL, "upload", "%zu bytes at offset %td fall outside the %zu-byte weights", bytes,
                        (char *)dst - w, d->weights_bytes);
    CU_TRY(d, cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice), "%zu bytes of weights", bytes);
    return DEV_OK;
}

static void cuda_stream_free(DevStream *s)
{
    CudaStream *cs = cuda_stream(s);
    if (!cs) return;
    cudaSetDevice(s->d->info.index);
    if (cs->st) cudaStreamSynchronize(cs->st);
    for (int i = 0; i < cs->nplans; i++) {
        cublasLtMatrixLayoutDestroy(cs->plans[i].la);
        cublasLtMatrixLayoutDestroy(cs->plans[i].lb);
        cublasLtMatrixLayoutDestroy(cs->plans[i].lc);
        cublasLtMatmulDescDestroy(cs->plans[i].op);
    }
    if (cs->lt) cublasLtDestroy(cs->lt);
    if (cs->st) cudaStreamDestroy(cs->st);
    cudaFree(cs->block);
    cudaFreeHost(s->pinned);
    delete cs;
    s->impl = NULL;
}

static int cuda_stream_new(DevStream *s, size_t arena_bytes, size_t pinned_bytes)
{
    Device *d = s->d;
    CudaStream *cs = new (std::nothrow) CudaStream();
    if (!cs) return dev_fail(d, DEV_ENOMEM, "stream_new", "no host memory for the stream's state");
    s->impl = cs;
    int rc = DEV_OK;
    do {
        cudaError_t e;
        if ((e = cudaSetDevice(d->info.index)) != cudaSuccess) { rc = cuda_fail(d, e, "cudaSetDevice", ""); break; }
        if ((e = cudaStreamCreateWithFlags(&cs->st, cudaStreamNonBlocking)) != cudaSuccess) {
            rc = cuda_fail(d, e, "cudaStreamCreateWithFlags", "");
            break;
        }
        char det[128];
        snprintf(det, sizeof det, "a %zu-byte arena + %zu-byte cuBLASLt workspace", arena_bytes, CUDA_LT_WORKSPACE);
        if ((e = cudaMalloc(&cs->block, CUDA_LT_WORKSPACE + arena_bytes)) != cudaSuccess) {
            cs->block = NULL;
            rc = cuda_fail(d, e, "cudaMalloc", det);
            break;
        }
        snprintf(det, sizeof det, "%zu bytes of pinned host memory", pinned_bytes);
        if ((e = cudaMallocHost(&s->pinned, pinned_bytes ? pinned_bytes : 1)) != cudaSuccess) {
            s->pinned = NULL;
            rc = cuda_fail(d, e, "cudaMallocHost", det);
            break;
        }
        cublasStatus_t st = cublasLtCreate(&cs->lt);
        if (st != CUBLAS_STATUS_SUCCESS) {
            cs->lt = NULL;
            rc = cublas_fail(d, st, "cublasLtCreate", "");
            break;
        }
    } while (0);
    if (rc != DEV_OK) {
        cuda_stream_free(s);
        return rc;
    }
    cs->lt_ws = cs->block;
    s->arena = (char *)cs->block + CUDA_LT_WORKSPACE;
    s->arena_size = arena_bytes;
    s->pinned_bytes = pinned_bytes;
    return DEV_OK;
}

static int cuda_copy_h2d(DevStream *s, void *dst, const void *src, size_t bytes)
{
    CU_TRY(s->d, cudaSetDevice(s->d->info.index), "cuda:%d", s->d->info.index);
    CU_TRY(s->d, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, cuda_stream(s)->st), "%zu bytes", bytes);
    return DEV_OK;
}

static int cuda_copy_d2h(DevStream *s, void *dst, const void *src, size_t bytes)
{
    CU_TRY(s->d, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, cuda_stream(s)->st), "%zu bytes", bytes);
    return DEV_OK;
}

static int cuda_copy_d2d(DevStream *s, void *dst, const void *src, size_t bytes)
{
    CU_TRY(s->d, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, cuda_stream(s)->st), "%zu bytes", bytes);
    return DEV_OK;
}

static int cuda_sync(DevStream *s)
{
    /* an asynchronous failure of anything queued surfaces here */
    CU_TRY(s->d, cudaStreamSynchronize(cuda_stream(s)->st), "waiting for the stream's batch");
    return DEV_OK;
}

/* kernels (encoder.cu, gemm_lt.cu, offsets.cu) */
int cuda_seq_offsets(DevStream *s, int32_t *cu, const int32_t *lens, int nseq);
int cuda_embed_tokens(DevStream *s, float *x, const int32_t *ids, const int32_t *cu, int nseq, int T,
                      const float *word, const float *pos, const float *type0, int H);
int cuda_gemm(DevStream *s, float *out, const float *a, const void *w, const float *bias, const float *res, int m,
              int n, int k, DevPrecision prec);
int cuda_gelu(DevStream *s, float *x, size_t n);
int cuda_layernorm(DevStream *s, float *out, const float *x, const float *res, const float *w, const float *b,
                   int rows, int cols, float eps);
int cuda_attention(DevStream *s, float *ctx, const float *qkv, const int32_t *cu, int nseq, int T, int heads,
                   int d, float scale);
int cuda_pool(DevStream *s, float *out, const float *x, const int32_t *cu, int nseq, int H, DevPool mode);
int cuda_l2_normalize(DevStream *s, float *x, int rows, int cols);

static const DeviceOps cuda_ops = {
    "cuda",
    cuda_open,
    cuda_close,
    cuda_mem_info,
    cuda_weights_alloc,
    cuda_upload,
    cuda_stream_new,
    cuda_stream_free,
    NULL, /* arena_alloc_check */
    cuda_copy_h2d,
    cuda_copy_d2h,
    cuda_sync,
    cuda_copy_d2d,
    cuda_seq_offsets,
    cuda_embed_tokens,
    cuda_gemm,
    cuda_gelu,
    cuda_layernorm,
    cuda_attention,
    cuda_pool,
    cuda_l2_normalize,
};

extern "C" const DeviceOps *device_cuda_ops(void) { return &cuda_ops; }
