/* fma_peak.c: this machine's fp32 FMA peak with N threads (bench_embed.py's roofline), so the
 * benchmark can say what fraction of the hardware each engine uses. Twelve independent FMA
 * chains per thread hide the FMA latency; AVX-512 when the CPU has it, else AVX2.
 *     cc -O2 -pthread fma_peak.c -o fma_peak && ./fma_peak 2      -> GFLOP/s on stdout */
#include <immintrin.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define ITERS 50000000L

static volatile float sink;

__attribute__((target("avx512f"))) static void *run512(void *arg)
{
    (void)arg;
    __m512 acc[12], b = _mm512_set1_ps(0.999f), c = _mm512_set1_ps(1e-4f);
    for (int i = 0; i < 12; i++) acc[i] = _mm512_set1_ps((float)i);
    for (long it = 0; it < ITERS; it++)
#pragma GCC unroll 12
        for (int i = 0; i < 12; i++) acc[i] = _mm512_fmadd_ps(acc[i], b, c);
    float s = 0.0f;
    for (int i = 0; i < 12; i++) s += _mm512_reduce_add_ps(acc[i]);
    sink = s;
    return NULL;
}

__attribute__((target("avx2,fma"))) static void *run256(void *arg)
{
    (void)arg;
    __m256 acc[12], b = _mm256_set1_ps(0.999f), c = _mm256_set1_ps(1e-4f);
    for (int i = 0; i < 12; i++) acc[i] = _mm256_set1_ps((float)i);
    for (long it = 0; it < ITERS; it++)
#pragma GCC unroll 12
        for (int i = 0; i < 12; i++) acc[i] = _mm256_fmadd_ps(acc[i], b, c);
    float lanes[8], s = 0.0f;
    for (int i = 0; i < 12; i++) {
        _mm256_storeu_ps(lanes, acc[i]);
        for (int j = 0; j < 8; j++) s += lanes[j];
    }
    sink = s;
    return NULL;
}

int main(int argc, char **argv)
{
    int threads = argc > 1 ? atoi(argv[1]) : 1;
    if (threads < 1 || threads > 256) return 2;
    __builtin_cpu_init();
    int wide = __builtin_cpu_supports("avx512f");
    void *(*fn)(void *) = wide ? run512 : run256;
    double best = 0.0;
    for (int rep = 0; rep < 3; rep++) {
        pthread_t th[256];
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        for (int i = 0; i < threads; i++) pthread_create(&th[i], NULL, fn, NULL);
        for (int i = 0; i < threads; i++) pthread_join(th[i], NULL);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) * 1e-9;
        double gflops = (double)ITERS * 12 * (wide ? 16 : 8) * 2 * threads / secs / 1e9;
        if (gflops > best) best = gflops;
    }
    printf("%.1f %s\n", best, wide ? "avx512" : "avx2");
    return 0;
}
