/* read_bandwidth.c: how fast this machine reads memory, and how fast the decoder's single-token
 * matvec kernels stream weights, measured the same way so the two figures compare. For
 * bench_generate.py, which turns them into a decode limit (tokens/s = bandwidth / bytes per
 * token) and prints the decoder's share of it. Not a test.
 *
 *   weaver-read-bandwidth read   [--threads N] [--mib M] [--passes P] [--repeat R]
 *   weaver-read-bandwidth matvec [--threads N] [--mib M] [--passes P] [--repeat R] [--type q4_1|q8_0] [--cols C]
 *
 * read: N threads each sum their share of an M MiB buffer (default 1024: far past any cache)
 * with 512-bit loads (256-bit without AVX-512), P passes after one untimed; prints the median
 * pass as GB/s (10^9 bytes). matvec: the same buffer filled with random weight rows of the type,
 * one pass = every row once through quant_matvec_fn's kernel against one prepared activation,
 * each thread its share of the rows in the decoder's 256-row chunks. --repeat R runs the
 * buffer R times per pass (for a buffer that fits a cache).
 * Output: one JSON line. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "kernels/quant.h"

#include <immintrin.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { CHUNK_ROWS = 256, MAX_THREADS = 64, MAX_PASSES = 101 };

typedef struct Job {
    const uint8_t *buf;
    size_t bytes;
    int matvec;
    QuantMatvecFn mv;
    size_t rb;
    int cols, rows;
    const void *vec;
    float *out;
    pthread_barrier_t start, stop;
    int nthreads, passes, repeat;
    volatile uint64_t sink;
} Job;

typedef struct Arg {
    Job *job;
    int ith;
} Arg;

__attribute__((target("avx512f"))) static uint64_t sum_bytes_avx512(const uint8_t *p, size_t n) {
    __m512i a = _mm512_setzero_si512(), b = _mm512_setzero_si512();
    for (size_t i = 0; i + 128 <= n; i += 128) {
        a = _mm512_add_epi64(a, _mm512_load_si512(p + i));
        b = _mm512_add_epi64(b, _mm512_load_si512(p + i + 64));
    }
    return (uint64_t)_mm512_reduce_add_epi64(_mm512_add_epi64(a, b));
}

__attribute__((target("avx2"))) static uint64_t sum_bytes_avx2(const uint8_t *p, size_t n) {
    __m256i a = _mm256_setzero_si256(), b = _mm256_setzero_si256();
    for (size_t i = 0; i + 64 <= n; i += 64) {
        a = _mm256_add_epi64(a, _mm256_load_si256((const __m256i *)(p + i)));
        b = _mm256_add_epi64(b, _mm256_load_si256((const __m256i *)(p + i + 32)));
    }
    uint64_t t[4];
    _mm256_storeu_si256((__m256i *)t, _mm256_add_epi64(a, b));
    return t[0] + t[1] + t[2] + t[3];
}

static uint64_t sum_bytes(const uint8_t *p, size_t n) {
    return __builtin_cpu_supports("avx512f") ? sum_bytes_avx512(p, n) : sum_bytes_avx2(p, n);
}

static void *worker(void *p) {
    Arg *arg = p;
    Job *j = arg->job;
    for (int pass = 0; pass < j->passes; pass++) {
        pthread_barrier_wait(&j->start);
        for (int rep = 0; rep < j->repeat; rep++) {
            if (j->matvec) { /* each thread its share of the rows, in the decoder's chunk size */
                int r0 = (int)((long)j->rows * arg->ith / j->nthreads), r1 = (int)((long)j->rows * (arg->ith + 1) / j->nthreads);
                for (int r = r0; r < r1; r += CHUNK_ROWS)
                    j->mv(j->out, j->buf, j->rb, j->cols, r, r + CHUNK_ROWS < r1 ? r + CHUNK_ROWS : r1, j->vec);
            } else {
                size_t share = (j->bytes / (size_t)j->nthreads) & ~(size_t)127;
                j->sink += sum_bytes(j->buf + share * (size_t)arg->ith, share);
            }
        }
        pthread_barrier_wait(&j->stop);
    }
    return NULL;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static int usage(void) {
    fprintf(stderr, "usage: weaver-read-bandwidth read|matvec [--threads N] [--mib M] [--passes P] "
                    "[--repeat R] [--type q4_1|q8_0] [--cols C]\n");
    return 2;
}

int main(int argc, char **argv) {
    if (argc < 2 || (strcmp(argv[1], "read") != 0 && strcmp(argv[1], "matvec") != 0)) return usage();
    int threads = 2, mib = 1024, passes = 9, cols = 576, type = QT_Q4_1, repeat = 1;
    for (int i = 2; i < argc; i++) {
        if (i + 1 >= argc) return usage();
        const char *k = argv[i], *v = argv[++i];
        if (!strcmp(k, "--threads")) threads = atoi(v);
        else if (!strcmp(k, "--mib")) mib = atoi(v);
        else if (!strcmp(k, "--passes")) passes = atoi(v);
        else if (!strcmp(k, "--cols")) cols = atoi(v);
        else if (!strcmp(k, "--repeat")) repeat = atoi(v);
        else if (!strcmp(k, "--type") && !strcmp(v, "q4_1")) type = QT_Q4_1;
        else if (!strcmp(k, "--type") && !strcmp(v, "q8_0")) type = QT_Q8_0;
        else return usage();
    }
    if (threads < 1 || threads > MAX_THREADS || mib < 1 || passes < 1 || passes > MAX_PASSES || repeat < 1 || cols < 32 || cols % 32)
        return usage();
    Job j = {.matvec = !strcmp(argv[1], "matvec"), .nthreads = threads, .passes = passes + 1, .cols = cols, .repeat = repeat};
    j.bytes = (size_t)mib << 20;
    uint8_t *buf = aligned_alloc(4096, j.bytes);
    if (!buf) {
        fprintf(stderr, "weaver-read-bandwidth: cannot allocate %d MiB\n", mib);
        return 1;
    }
    /* Random bytes, so every page is backed and no weight block is special; fp16 scales are kept
     * small and finite by clearing their top bits. */
    uint64_t s = 88172645463325252ull;
    for (size_t i = 0; i < j.bytes; i += 8) {
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        memcpy(buf + i, &s, 8);
    }
    void *vec = NULL;
    if (j.matvec) {
        j.mv = quant_matvec_fn(type, QUANT_ISA_BEST);
        if (!j.mv) {
            fprintf(stderr, "weaver-read-bandwidth: no matvec kernel for %s on this CPU\n", quant_type_name(type));
            return 1;
        }
        j.rb = quant_row_bytes(type, cols);
        j.rows = (int)(j.bytes / j.rb);
        size_t blk = quant_block_bytes(type);
        for (size_t r = 0; r < (size_t)j.rows; r++)
            for (size_t b = 0; b < (size_t)cols / 32; b++) {
                uint8_t *h = buf + r * j.rb + b * blk;
                h[1] &= 0x3b; /* the d (and Q4_1's m) exponent below 2^-1: finite products */
                if (type == QT_Q4_1) h[3] &= 0x3b;
            }
        size_t pb = quant_pack_bytes(type, j.rows, cols); /* the layout the kernel reads */
        if (pb) {
            uint8_t *packed = aligned_alloc(4096, (pb + 4095) & ~(size_t)4095);
            if (!packed) return 1;
            quant_pack_rows(type, packed, buf, j.rows, cols);
            free(buf);
            buf = packed;
        }
        float *x = malloc((size_t)cols * sizeof *x);
        void *act = malloc(quant_row_bytes(quant_act_type(type), cols));
        vec = malloc(quant_matvec_bytes(cols));
        j.out = malloc((size_t)j.rows * sizeof *j.out);
        if (!x || !act || !vec || !j.out) return 1;
        for (int i = 0; i < cols; i++) x[i] = (float)((i * 7919) % 200 - 100) / 50.0f;
        quant_quantize_act(quant_act_type(type), x, act, cols);
        quant_matvec_prep(type, vec, act, cols);
        j.vec = vec;
        free(x);
        free(act);
    }
    j.buf = buf;
    pthread_barrier_init(&j.start, NULL, (unsigned)threads + 1);
    pthread_barrier_init(&j.stop, NULL, (unsigned)threads + 1);
    pthread_t th[MAX_THREADS];
    Arg args[MAX_THREADS];
    for (int i = 0; i < threads; i++) {
        args[i] = (Arg){&j, i};
        pthread_create(&th[i], NULL, worker, &args[i]);
    }
    double t[MAX_PASSES + 1];
    for (int p = 0; p < j.passes; p++) {
        double t0 = now_s(); /* before the start: the workers may finish before this thread wakes */
        pthread_barrier_wait(&j.start);
        pthread_barrier_wait(&j.stop);
        t[p] = now_s() - t0;
    }
    for (int i = 0; i < threads; i++) pthread_join(th[i], NULL);
    qsort(t + 1, (size_t)passes, sizeof *t, cmp_d); /* pass 0 is the untimed warm-up */
    size_t moved = (j.matvec ? (size_t)j.rows * j.rb : (j.bytes / (size_t)threads & ~(size_t)127) * (size_t)threads) * (size_t)repeat;
    double med = t[1 + passes / 2], best = t[1];
    printf("{\"mode\": \"%s\", \"threads\": %d, \"bytes\": %zu, \"passes\": %d, \"gbps_median\": %.3f, "
           "\"gbps_best\": %.3f%s%s%s}\n",
           argv[1], threads, moved, passes, moved / med / 1e9, moved / best / 1e9, j.matvec ? ", \"type\": \"" : "",
           j.matvec ? quant_type_name(type) : "", j.matvec ? "\"" : "");
    free(buf);
    free(vec);
    free(j.out);
    return 0;
}
