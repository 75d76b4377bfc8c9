/* sampler.h: picks the next token from logits: repeat/presence/frequency penalties over a
 * window, then top_k, top_p, min_p (on temperature-1 probabilities), temperature, and a draw
 * from the sequence's own PRNG (so batch composition never changes a job's result), or greedy.
 * No allocation per call: scratch comes from SamplerScratch, sized once. */
#ifndef WEAVER_DECODE_SAMPLER_H
#define WEAVER_DECODE_SAMPLER_H

#include <stdint.h>

#include "engine/generator.h"

typedef struct SamplerRng {
    uint64_t s[4];
} SamplerRng;

typedef struct SamplerScratch {
    int n_vocab;
    float *prob;
    int *idx;
    int *count;   /* per-token occurrence counts, all zero between calls */
} SamplerScratch;

void sampler_rng_seed(SamplerRng *r, uint64_t seed);
double sampler_rng_uniform(SamplerRng *r); /* [0, 1) */

int sampler_scratch_init(SamplerScratch *s, int n_vocab);
void sampler_scratch_free(SamplerScratch *s);

/* Samples from logits[n_vocab] (modified in place). hist holds the previous tokens of the
 * sequence (prompt included), oldest first; the penalty window is its last repeat_last_n. */
int sampler_sample(const GenSampling *p, SamplerRng *rng, SamplerScratch *s, float *logits, const int *hist,
                   int n_hist);

#endif
