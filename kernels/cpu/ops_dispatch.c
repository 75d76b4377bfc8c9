/* ops_dispatch.c: picks the cpu_ops variant at run time (__builtin_cpu_supports), once.
 * Compiled without ISA flags: it must not execute any SIMD variant code itself. */
#include "kernels/cpu_ops.h"

#include <stdlib.h>
#include <string.h>

const CpuOps *cpu_ops_avx2_table(void);
const CpuOps *cpu_ops_avx512_table(void);

const CpuOps *cpu_ops_avx2(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return cpu_ops_avx2_table();
#endif
    return NULL;
}

const CpuOps *cpu_ops_avx512(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
        __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        return cpu_ops_avx512_table();
#endif
    return NULL;
}

const CpuOps *cpu_ops(void)
{
    static const CpuOps *chosen; /* benign race: every thread computes the same answer */
    if (chosen) return chosen;
    const char *force = getenv("WEAVER_CPU_ISA");
    const CpuOps *pick = NULL;
    if (!force || strcmp(force, "avx512") == 0) pick = cpu_ops_avx512();
    if (!pick && (!force || strcmp(force, "avx512") == 0 || strcmp(force, "avx2") == 0)) pick = cpu_ops_avx2();
    if (!pick) pick = cpu_ops_ref();
    chosen = pick;
    return chosen;
}
