/* cuda_common.cuh: what the CUDA device backend's files share: the per-stream state, and the
 * checks that turn every CUDA, cuBLASLt and launch failure into a DevStatus with a message
 * naming the call, the device and the shapes. Included by the .cu files of kernels/cuda only. */
#ifndef WEAVER_CUDA_COMMON_CUH
#define WEAVER_CUDA_COMMON_CUH

#include <cublasLt.h>
#include <cuda_runtime.h>

#include "kernels/device_impl.h"

#define CUDA_LT_WORKSPACE ((size_t)32 << 20) /* cuBLASLt workspace per stream */
#define CUDA_GEMM_CACHE 96                    /* GEMM shapes whose plan a stream keeps */

struct GemmPlan {
    int m, n, k, prec, has_res;
    cublasLtMatmulDesc_t op;
    cublasLtMatrixLayout_t la, lb, lc;
    cublasLtMatmulAlgo_t algo;
};

struct CudaStream {
    cudaStream_t st;
    cublasLtHandle_t lt;
    void *lt_ws;          /* CUDA_LT_WORKSPACE bytes, the head of the stream's one device block */
    void *block;          /* workspace + arena, one cudaMalloc */
    GemmPlan plans[CUDA_GEMM_CACHE];
    int nplans;
};

static inline CudaStream *cuda_stream(DevStream *s) { return (CudaStream *)s->impl; }

/* Records a failed CUDA call: its status, name and text, plus the caller's detail. */
int cuda_fail(Device *d, cudaError_t e, const char *call, const char *detail);
int cublas_fail(Device *d, cublasStatus_t st, const char *call, const char *detail);

#define CU_TRY(d, call, ...)                                                      \
    do {                                                                          \
        cudaError_t e_ = (call);                                                  \
        if (e_ != cudaSuccess) {                                                  \
            char det_[256];                                                       \
            snprintf(det_, sizeof det_, __VA_ARGS__);                             \
            return cuda_fail((d), e_, #call, det_);                               \
        }                                                                         \
    } while (0)

#define LT_TRY(d, call, ...)                                                      \
    do {                                                                          \
        cublasStatus_t st_ = (call);                                              \
        if (st_ != CUBLAS_STATUS_SUCCESS) {                                       \
            char det_[256];                                                       \
            snprintf(det_, sizeof det_, __VA_ARGS__);                             \
            return cublas_fail((d), st_, #call, det_);                            \
        }                                                                         \
    } while (0)

/* After a launch: the launch's own error (bad configuration) or an earlier sticky one. */
#define LAUNCH_CHECK(d, kernel, ...) CU_TRY(d, cudaGetLastError(), "launch of " kernel ": " __VA_ARGS__)

/* Butterfly reductions over a warp (every lane gets the result) and over a block (blockDim.x a
 * multiple of 32, at most 1024; every thread gets it). The same tree for every type, so the
 * decoder's double sums and the encoder's float sums share one order. */
template <typename T> __device__ __forceinline__ T warp_sum(T v)
{
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v)
{
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

template <typename T> __device__ T block_sum(T v, T *shared32)
{
    int lane = threadIdx.x % 32, w = threadIdx.x / 32, nw = blockDim.x / 32;
    v = warp_sum(v);
    __syncthreads(); /* shared32 may still be read from the previous call */
    if (lane == 0) shared32[w] = v;
    __syncthreads();
    v = lane < nw ? shared32[lane] : T(0);
    return warp_sum(v);
}

#endif
