/* gemm_lt.cu: the encoder's linear layers on cuBLASLt: out[m][n] = a[m][k] w[n][k]^T + bias
 * (the BIAS epilogue) + res (through C = res, beta = 1). Row-major [m][n] is column-major
 * [n][m], so cuBLASLt computes D(n x m) = op_T(W: k x n) * A(k x m). Precision: fp32 and tf32
 * take F32 inputs (tf32 through CUBLAS_COMPUTE_32F_FAST_TF32); fp16 and bf16 take the weights as
 * stored and the activations converted into arena scratch that is released when the GEMM is
 * queued (stream order keeps it alive long enough); C, D and the bias stay F32. One plan
 * (descriptors, layouts, the heuristic's algorithm) per shape is kept per stream. Nothing here
 * allocates device memory outside the arena, logs or exits. */
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdio.h>

#include "kernels/cuda/cuda_common.cuh"

__global__ void k_to_f16(__half *out, const float *in, size_t n)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        out[i] = __float2half_rn(in[i]);
}

__global__ void k_to_bf16(__nv_bfloat16 *out, const float *in, size_t n)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        out[i] = __float2bfloat16_rn(in[i]);
}

static const char *const prec_names[] = {"fp32", "tf32", "fp16", "bf16"};

/* Finds or builds the plan of this shape. */
static int plan_for(DevStream *s, GemmPlan **out, int m, int n, int k, DevPrecision prec, bool has_res)
{
    CudaStream *cs = cuda_stream(s);
    Device *d = s->d;
    for (int i = 0; i < cs->nplans; i++) {
        GemmPlan *p = &cs->plans[i];
        if (p->m == m && p->n == n && p->k == k && p->prec == (int)prec && p->has_res == (int)has_res) {
            *out = p;
            return DEV_OK;
        }
    }
    GemmPlan *p;
    if (cs->nplans < CUDA_GEMM_CACHE) {
        p = &cs->plans[cs->nplans++];
    } else { /* full (a long run of new batch sizes): reuse the oldest slot */
        p = &cs->plans[m % CUDA_GEMM_CACHE];
        cublasLtMatrixLayoutDestroy(p->la);
        cublasLtMatrixLayoutDestroy(p->lb);
        cublasLtMatrixLayoutDestroy(p->lc);
        cublasLtMatmulDescDestroy(p->op);
    }
    memset(p, 0, sizeof *p);
    p->m = -1; /* invalid until complete */
    cudaDataType_t in_t = prec == DEV_FP16 ? CUDA_R_16F : prec == DEV_BF16 ? CUDA_R_16BF : CUDA_R_32F;
    cublasComputeType_t ct = prec == DEV_TF32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
    cublasOperation_t tA = CUBLAS_OP_T, tB = CUBLAS_OP_N;
    cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_BIAS;
#define SHAPE "m=%d n=%d k=%d %s%s", m, n, k, prec_names[prec], has_res ? " +residual" : ""
    LT_TRY(d, cublasLtMatmulDescCreate(&p->op, ct, CUDA_R_32F), SHAPE);
    LT_TRY(d, cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSA, &tA, sizeof tA), SHAPE);
    LT_TRY(d, cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSB, &tB, sizeof tB), SHAPE);
    LT_TRY(d, cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi), SHAPE);
    /* A = W stored k x n (ld k), used transposed; B = activations k x m (ld k); C, D n x m (ld n) */
    LT_TRY(d, cublasLtMatrixLayoutCreate(&p->la, in_t, (uint64_t)k, (uint64_t)n, (int64_t)k), SHAPE);
    LT_TRY(d, cublasLtMatrixLayoutCreate(&p->lb, in_t, (uint64_t)k, (uint64_t)m, (int64_t)k), SHAPE);
    LT_TRY(d, cublasLtMatrixLayoutCreate(&p->lc, CUDA_R_32F, (uint64_t)n, (uint64_t)m, (int64_t)n), SHAPE);
    cublasLtMatmulPreference_t pref;
    LT_TRY(d, cublasLtMatmulPreferenceCreate(&pref), SHAPE);
    size_t ws = CUDA_LT_WORKSPACE;
    cublasStatus_t st =
        cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws);
    cublasLtMatmulHeuristicResult_t heur;
    int found = 0;
    if (st == CUBLAS_STATUS_SUCCESS)
        st = cublasLtMatmulAlgoGetHeuristic(cs->lt, p->op, p->la, p->lb, p->lc, p->lc, pref, 1, &heur, &found);
    cublasLtMatmulPreferenceDestroy(pref);
    LT_TRY(d, st, SHAPE);
    if (found < 1) return dev_fail(d, DEV_EINVAL, "cublasLtMatmulAlgoGetHeuristic", "no algorithm for " SHAPE);
    p->algo = heur.algo;
    p->m = m;
    p->n = n;
    p->k = k;
    p->prec = (int)prec;
    p->has_res = (int)has_res;
    *out = p;
    return DEV_OK;
#undef SHAPE
}

int cuda_gemm(DevStream *s, float *out, const float *a, const void *w, const float *bias, const float *res, int m,
              int n, int k, DevPrecision prec)
{
    Device *d = s->d;
    CudaStream *cs = cuda_stream(s);
    if (m <= 0) return DEV_OK;
    if ((unsigned)prec > DEV_BF16 || !bias)
        return dev_fail(d, DEV_EINVAL, "gemm", "m=%d n=%d k=%d: precision %d, bias %p (required)", m, n, k, (int)prec,
                        (const void *)bias);
    if (((uintptr_t)out | (uintptr_t)a | (uintptr_t)w | (uintptr_t)bias | (uintptr_t)res) & 15)
        return dev_fail(d, DEV_EINVAL, "gemm", "m=%d n=%d k=%d: pointers must be 16-byte aligned", m, n, k);
    const void *b = a;
    size_t mark = s->arena_used;
    if (prec == DEV_FP16 || prec == DEV_BF16) {
        void *conv;
        size_t cnt = (size_t)m * k;
        int rc = dev_arena_alloc(s, cnt * 2, &conv);
        if (rc) return rc;
        unsigned blocks = (unsigned)((cnt + 255) / 256 < 65535 ? (cnt + 255) / 256 : 65535);
        if (prec == DEV_FP16) k_to_f16<<<blocks, 256, 0, cs->st>>>((__half *)conv, a, cnt);
        else k_to_bf16<<<blocks, 256, 0, cs->st>>>((__nv_bfloat16 *)conv, a, cnt);
        s->arena_used = mark; /* the next user of this scratch is queued after this GEMM */
        LAUNCH_CHECK(d, "k_to_f16/bf16", "m=%d k=%d", m, k);
        b = conv;
    }
    GemmPlan *p = NULL;
    int rc = plan_for(s, &p, m, n, k, prec, res != NULL);
    if (rc) return rc;
    LT_TRY(d, cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias),
           "m=%d n=%d k=%d", m, n, k);
    float alpha = 1.0f, beta = res ? 1.0f : 0.0f;
    const void *c = res ? (const void *)res : (const void *)out;
    LT_TRY(d, cublasLtMatmul(cs->lt, p->op, &alpha, w, p->la, b, p->lb, &beta, c, p->lc, out, p->lc, &p->algo,
                             cs->lt_ws, CUDA_LT_WORKSPACE, cs->st),
           "m=%d n=%d k=%d %s%s", m, n, k, prec_names[prec], res ? " +residual" : "");
    return DEV_OK;
}
