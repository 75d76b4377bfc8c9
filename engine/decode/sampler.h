/* sampler.h: picks the next token from logits: repeat/presence/frequency penalties over a
 * window, then top_k, top_p, min_p (on temperature-1 probabilities), temperature, and a draw
 * from the sequence's own PRNG (so batch composition never changes a job's result), or greedy.
 * Penalties follow llama.cpp: each distinct token of the window once has a positive logit
 * divided by repeat_penalty (a negative one multiplied), then loses presence_penalty once and
 * frequency_penalty times its count. repeat_last_n < 0: the whole history; 0: no penalties.
 * top_k 0 and top_p 1 are off; top_p 0 keeps the most probable token; min_p keeps tokens whose
 * probability is at least min_p times the most probable one's (0 is off).
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

/* The chain without the draw (sampler_sample is this, then one uniform draw when temperature > 0):
 * applies the penalties to logits in place and leaves the candidates in s->idx[0..n), in the
 * order the draw walks them, with weights s->prob[0..n) = exp((l - max) / temperature), not
 * normalised; *z gets their sum (in double). Greedy (temperature <= 0): the one argmax, weight 1.
 * Returns n >= 1. */
int sampler_candidates(const GenSampling *p, SamplerScratch *s, float *logits, const int *hist, int n_hist,
                       double *z);

#endif
