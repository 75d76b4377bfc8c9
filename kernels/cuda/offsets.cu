/* offsets.cu: Thrust on the worker's stream: sequence offsets (cu_seqlens) by a scan over the
 * pack's lengths (offsets_thrust.h). Thrust's temporary storage comes from the stream's arena
 * (released with it), never from cudaMalloc; par_nosync leaves the stream asynchronous. Thrust
 * throws: every exception is caught here and becomes a DevStatus. */
#include <new>
#include <stdio.h>
#include <thrust/execution_policy.h>
#include <thrust/system/cuda/execution_policy.h>
#include <thrust/system_error.h>

#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/offsets_thrust.h"

/* Thrust's allocator over the arena: allocate bumps, deallocate is a no-op (the arena is reset
 * before the next batch). An arena too small for Thrust's scratch throws std::bad_alloc. */
struct ArenaAllocator {
    typedef char value_type;
    DevStream *s;
    explicit ArenaAllocator(DevStream *st) : s(st) {}
    char *allocate(std::ptrdiff_t n)
    {
        void *p;
        if (dev_arena_alloc(s, (size_t)n, &p) != DEV_OK) throw std::bad_alloc();
        return (char *)p;
    }
    void deallocate(char *, size_t) {}
};

int cuda_seq_offsets(DevStream *s, int32_t *cu, const int32_t *lens, int nseq)
{
    ArenaAllocator alloc(s);
    try {
        weaver_seq_offsets(thrust::cuda::par_nosync(alloc).on(cuda_stream(s)->st), cu, lens, nseq);
    } catch (const thrust::system_error &e) {
        return cuda_fail(s->d, (cudaError_t)e.code().value(), "thrust::inclusive_scan", e.what());
    } catch (const std::bad_alloc &) {
        return dev_fail(s->d, DEV_ENOMEM, "thrust::inclusive_scan", "nseq=%d: the arena has no room for its scratch",
                        nseq);
    } catch (...) {
        return dev_fail(s->d, DEV_EFAIL, "thrust::inclusive_scan", "nseq=%d: an unknown exception", nseq);
    }
    CU_TRY(s->d, cudaGetLastError(), "after thrust::inclusive_scan, nseq=%d", nseq);
    return DEV_OK;
}
