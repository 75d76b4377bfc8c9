/* sampler_probe.c: test-only window onto engine/decode/sampler.c for
 * tests/reference/test_decode_sampler.py, which compares it with a numpy reference.
 * Reads one JSON object on stdin:
 *   {"logits": [...], "hist": [...], "temperature": T, "top_k": K, "top_p": P, "min_p": M,
 *    "repeat_penalty": R, "repeat_last_n": N, "presence_penalty": A, "frequency_penalty": F,
 *    "seeds": [first, count], "stream": [seed, count]}      (every field but logits optional)
 * and prints {"logits": after the penalties, "ids": candidates, "weights": their weights,
 * "z": their sum, "seed_counts": per-token counts of the first draw of seeds first..first+count-1,
 * "stream_counts": per-token counts of count consecutive draws from one seeded stream}.
 * Draws go through sampler_sample, the generator's own entry. No sampling logic of its own. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/decode/sampler.h"

static double num(const cJSON *o, const char *k, double dflt) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsNumber(v) ? v->valuedouble : dflt;
}

/* A JSON array of numbers into a fresh float or int array; NULL (n = 0) when absent. */
static void *arr(const cJSON *o, const char *k, int as_int, int *n) {
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(o, k), *it;
    *n = cJSON_IsArray(a) ? cJSON_GetArraySize(a) : 0;
    if (*n == 0) return NULL;
    void *v = malloc((size_t)*n * 4);
    int i = 0;
    cJSON_ArrayForEach(it, a) {
        if (as_int) ((int *)v)[i++] = (int)it->valuedouble;
        else ((float *)v)[i++] = (float)it->valuedouble;
    }
    return v;
}

/* Exact numbers: cJSON's own printing may drop digits (it accepts a nearly equal read-back). */
static cJSON *exact(double v, int digits) {
    char b[40];
    snprintf(b, sizeof b, "%.*g", digits, v);
    return cJSON_CreateRaw(b);
}

static cJSON *counts_json(const long *c, int n) {
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; i < n; i++) cJSON_AddItemToArray(a, cJSON_CreateNumber((double)c[i]));
    return a;
}

/* Per-token counts of draws: one per seed (fresh stream each, as a job starts) or all from one stream. */
static void count_draws(const GenSampling *p, SamplerScratch *s, const float *logits, const int *hist, int n_hist,
                        uint64_t seed, long count, int one_stream, float *work, long *out) {
    SamplerRng rng;
    sampler_rng_seed(&rng, seed);
    for (long i = 0; i < count; i++) {
        if (!one_stream) sampler_rng_seed(&rng, seed + (uint64_t)i);
        memcpy(work, logits, (size_t)s->n_vocab * sizeof *work);
        out[sampler_sample(p, &rng, s, work, hist, n_hist)]++;
    }
}

int main(void) {
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    for (size_t r; (r = fread(buf + len, 1, cap - len - 1, stdin)) > 0;) {
        len += r;
        if (len + 1 == cap) buf = realloc(buf, cap *= 2);
    }
    buf[len] = '\0';
    cJSON *in = cJSON_Parse(buf);
    free(buf);
    int V = 0, n_hist = 0, ns = 0, nst = 0;
    float *logits = in ? arr(in, "logits", 0, &V) : NULL;
    if (!logits) {
        fprintf(stderr, "sampler_probe: stdin must be a JSON object with a non-empty \"logits\" array\n");
        return 2;
    }
    int *hist = arr(in, "hist", 1, &n_hist), *seeds = arr(in, "seeds", 1, &ns), *stream = arr(in, "stream", 1, &nst);
    GenSampling p = {.temperature = (float)num(in, "temperature", 1), .top_k = (int)num(in, "top_k", 0),
                     .top_p = (float)num(in, "top_p", 1), .min_p = (float)num(in, "min_p", 0),
                     .repeat_penalty = (float)num(in, "repeat_penalty", 1),
                     .repeat_last_n = (int)num(in, "repeat_last_n", 64),
                     .presence_penalty = (float)num(in, "presence_penalty", 0),
                     .frequency_penalty = (float)num(in, "frequency_penalty", 0)};
    SamplerScratch s;
    float *work = malloc((size_t)V * sizeof *work);
    long *cnt = calloc((size_t)V, sizeof *cnt);
    if (sampler_scratch_init(&s, V) || !work || !cnt) {
        fprintf(stderr, "sampler_probe: out of memory\n");
        return 1;
    }
    memcpy(work, logits, (size_t)V * sizeof *work);
    double z;
    int n = sampler_candidates(&p, &s, work, hist, n_hist, &z);
    cJSON *o = cJSON_CreateObject(), *lo = cJSON_AddArrayToObject(o, "logits");
    for (int i = 0; i < V; i++) cJSON_AddItemToArray(lo, exact(work[i], 9));
    cJSON *ids = cJSON_AddArrayToObject(o, "ids"), *w = cJSON_AddArrayToObject(o, "weights");
    for (int i = 0; i < n; i++) {
        cJSON_AddItemToArray(ids, cJSON_CreateNumber(s.idx[i]));
        cJSON_AddItemToArray(w, exact(s.prob[i], 9));
    }
    cJSON_AddItemToObject(o, "z", exact(z, 17));
    if (ns == 2) {
        count_draws(&p, &s, logits, hist, n_hist, (uint64_t)seeds[0], seeds[1], 0, work, cnt);
        cJSON_AddItemToObject(o, "seed_counts", counts_json(cnt, V));
        memset(cnt, 0, (size_t)V * sizeof *cnt);
    }
    if (nst == 2) {
        count_draws(&p, &s, logits, hist, n_hist, (uint64_t)stream[0], stream[1], 1, work, cnt);
        cJSON_AddItemToObject(o, "stream_counts", counts_json(cnt, V));
    }
    char *txt = cJSON_PrintUnformatted(o);
    puts(txt);
    free(txt);
    cJSON_Delete(o);
    cJSON_Delete(in);
    sampler_scratch_free(&s);
    free(logits);
    free(hist);
    free(seeds);
    free(stream);
    free(work);
    free(cnt);
    return 0;
}
