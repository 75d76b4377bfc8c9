/* fuzz_job.c: libFuzzer target for the job parser, which reads producer bytes straight from
 * Redis. Any input must parse or fail cleanly: no crash, no leak, no read past len.
 * Build: cmake -DWEAVER_FUZZ=ON -DCMAKE_C_COMPILER=clang; run: ./fuzz_job -max_total_time=60 NEW_DIR
 * tests/fuzz/corpus_job (seeds from make_seeds.py; ops/test.sh runs it 20 s per CI run). */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "queue/job.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const JobLimits lim = {.max_input_bytes = 1 << 16, .max_texts_per_job = 64, .max_tokens = 4096,
                                  .query_instruction = "Given a query, find passages"};
    /* A private copy without a terminator, so reading past size is caught by ASan. */
    char *copy = malloc(size ? size : 1);
    if (!copy)
        return 0;
    memcpy(copy, data, size);
    char err[256];
    for (int kind = 0; kind < 2; kind++) {
        Job job;
        job_parse((JobKind)kind, copy, size, &lim, &job, err, sizeof err);
        job_free(&job);
    }
    free(copy);
    return 0;
}
