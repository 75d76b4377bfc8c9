/* offsets_thrust.h: the Thrust algorithms of the device layer, written once over an execution
 * policy so the same code runs on the GPU (offsets.cu: the worker's stream and arena allocator)
 * and on the CPU in tests (THRUST_DEVICE_SYSTEM_CPP, tests/unit/test_kernels_thrust_cpu.cpp).
 * Header-only; must not include a CUDA runtime header itself. */
#ifndef WEAVER_OFFSETS_THRUST_H
#define WEAVER_OFFSETS_THRUST_H

#include <stdint.h>
#include <thrust/fill.h>
#include <thrust/scan.h>

/* cu_seqlens[0] = 0 and cu_seqlens[i + 1] = lens[0] + ... + lens[i]: nseq + 1 values, built as
 * an exclusive scan over the lengths followed by the total. */
template <class Policy>
void weaver_seq_offsets(Policy &&policy, int32_t *cu_seqlens, const int32_t *lens, int nseq)
{
    if (nseq <= 0) {
        thrust::fill_n(policy, cu_seqlens, 1, 0);
        return;
    }
    thrust::fill_n(policy, cu_seqlens, 1, 0);
    thrust::inclusive_scan(policy, lens, lens + nseq, cu_seqlens + 1);
}

#endif
