/* test_kernels_thrust_cpu.cpp: the device layer's Thrust code (kernels/cuda/offsets_thrust.h)
 * run on the CPU: built by the host C++ compiler with THRUST_DEVICE_SYSTEM_CPP, so
 * thrust::device is the C++ backend and the very template the GPU runs is checked here:
 * cu_seqlens from pack lengths (empty, one, many, long packs), against a plain loop. */
#include <stdlib.h>
#include <thrust/execution_policy.h>
#include <vector>

#include "kernels/cuda/offsets_thrust.h"

/* cmocka after the C++ headers: its fail() macro would rewrite std::basic_ios::fail */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
extern "C" {
#include <cmocka.h>
}

static_assert(THRUST_DEVICE_SYSTEM == THRUST_DEVICE_SYSTEM_CPP, "this test runs Thrust's device system on the CPU");

static void offsets_are_the_running_sum_of_lengths(void **state)
{
    (void)state;
    static const int sizes[] = {0, 1, 2, 7, 256, 4096, 100000};
    unsigned seed = 5;
    for (int n : sizes) {
        std::vector<int32_t> lens((size_t)n), cu((size_t)n + 1, -7);
        for (int i = 0; i < n; i++) {
            seed = seed * 1664525u + 1013904223u;
            lens[(size_t)i] = 1 + (int32_t)((seed >> 8) % 256);
        }
        weaver_seq_offsets(thrust::device, cu.data(), lens.data(), n);
        int32_t want = 0;
        assert_int_equal(cu[0], 0);
        for (int i = 0; i < n; i++) {
            want += lens[(size_t)i];
            if (cu[(size_t)i + 1] != want) fail_msg("n=%d: cu[%d] = %d, want %d", n, i + 1, cu[(size_t)i + 1], want);
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(offsets_are_the_running_sum_of_lengths),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
