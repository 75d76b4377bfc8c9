/* sampler.c: token sampling (see sampler.h). Order as llama.cpp's default chain: penalties,
 * top_k, top_p, min_p, temperature, draw. Greedy when temperature <= 0 (after penalties).
 * sampler_candidates is the whole chain but the draw; sampler_sample draws from what it leaves.
 * exp is libm's expf, evaluated 4 at a time by quant_expf_row with identical results. */
#include "engine/decode/sampler.h"

#include "kernels/quant.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

void sampler_rng_seed(SamplerRng *r, uint64_t seed) {
    for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&seed);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

double sampler_rng_uniform(SamplerRng *r) {
    uint64_t *s = r->s;
    uint64_t res = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0]; s[3] ^= s[1]; s[1] ^= s[2]; s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return (double)(res >> 11) * (1.0 / 9007199254740992.0);
}

int sampler_scratch_init(SamplerScratch *s, int n_vocab) {
    s->n_vocab = n_vocab;
    s->prob = malloc((size_t)n_vocab * sizeof *s->prob);
    s->idx = malloc((size_t)n_vocab * sizeof *s->idx);
    s->count = calloc((size_t)n_vocab, sizeof *s->count);
    return s->prob && s->idx && s->count ? 0 : -1;
}

void sampler_scratch_free(SamplerScratch *s) {
    free(s->prob);
    free(s->idx);
    free(s->count);
    memset(s, 0, sizeof *s);
}

static int cmp_desc(const void *a, const void *b, void *ctx) {
    const float *l = ctx;
    float x = l[*(const int *)a], y = l[*(const int *)b];
    if (x != y) return x < y ? 1 : -1;
    return *(const int *)a - *(const int *)b;
}

/* Keeps the k largest of idx[0..n) in idx[0..k), sorted descending (partial selection). */
static void top_k_sorted(const float *l, int *idx, int n, int k) {
    /* Simple min-heap of size k over indices. */
    for (int i = 0; i < n; i++) {
        int v = idx[i];
        if (i < k) {
            int c = i;
            idx[c] = v;
            while (c > 0) {
                int p = (c - 1) / 2;
                if (l[idx[p]] < l[idx[c]] || (l[idx[p]] == l[idx[c]] && idx[p] > idx[c])) break;
                int tmp = idx[p]; idx[p] = idx[c]; idx[c] = tmp;
                c = p;
            }
        } else if (l[v] > l[idx[0]] || (l[v] == l[idx[0]] && v < idx[0])) {
            idx[0] = v;
            int c = 0;
            for (;;) {
                int a = 2 * c + 1, b = a + 1, m = c;
                if (a < k && (l[idx[a]] < l[idx[m]] || (l[idx[a]] == l[idx[m]] && idx[a] > idx[m]))) m = a;
                if (b < k && (l[idx[b]] < l[idx[m]] || (l[idx[b]] == l[idx[m]] && idx[b] > idx[m]))) m = b;
                if (m == c) break;
                int tmp = idx[m]; idx[m] = idx[c]; idx[c] = tmp;
                c = m;
            }
        }
    }
    qsort_r(idx, (size_t)k, sizeof *idx, cmp_desc, (void *)l);
}

int sampler_candidates(const GenSampling *p, SamplerScratch *s, float *logits, const int *hist, int n_hist,
                       double *z_out) {
    int V = s->n_vocab;
    int win = p->repeat_last_n < 0 ? n_hist : (p->repeat_last_n < n_hist ? p->repeat_last_n : n_hist);
    if (win > 0 && (p->repeat_penalty != 1.0f || p->presence_penalty != 0.0f || p->frequency_penalty != 0.0f)) {
        const int *h = hist + (n_hist - win);
        for (int i = 0; i < win; i++)
            if (h[i] >= 0 && h[i] < V) s->count[h[i]]++;
        for (int i = 0; i < win; i++) {
            int t = h[i];
            if (t < 0 || t >= V || s->count[t] == 0) continue;
            int c = s->count[t];
            s->count[t] = 0; /* apply once per distinct token, and leave the table zeroed */
            float *l = &logits[t];
            if (p->repeat_penalty != 1.0f && p->repeat_penalty > 0.0f) *l = *l > 0 ? *l / p->repeat_penalty : *l * p->repeat_penalty;
            *l -= (float)c * p->frequency_penalty + (c > 0 ? p->presence_penalty : 0.0f);
        }
    }
    if (!(p->temperature > 0.0f)) {
        int best = 0;
        float bv = logits[0]; /* in a register (4x faster than reloading logits[best], microbenchmark) */
        for (int i = 1; i < V; i++)
            if (logits[i] > bv) {
                bv = logits[i];
                best = i;
            }
        s->idx[0] = best;
        s->prob[0] = 1.0f;
        *z_out = 1.0;
        return 1;
    }
    int n = V;
    for (int i = 0; i < V; i++) s->idx[i] = i;
    int k = p->top_k > 0 && p->top_k < V ? p->top_k : V;
    /* top_p below 1 is on; 0 keeps the single most probable token (the smallest set reaching 0). */
    int use_top_p = p->top_p < 1.0f, use_min_p = p->min_p > 0.0f && p->min_p <= 1.0f;
    if (k < V || use_top_p) {
        if (k < V) {
            top_k_sorted(logits, s->idx, V, k);
        } else {
            qsort_r(s->idx, (size_t)V, sizeof *s->idx, cmp_desc, logits);
        }
        n = k;
    }
    float mx = -INFINITY;
    double z = 0.0;
    /* Temperature-1 probabilities, only when top_p or min_p will look at them. */
    int filter = use_top_p || use_min_p;
    for (int i = 0; i < n && filter; i++) mx = fmaxf(mx, logits[s->idx[i]]);
    if (filter) {
        for (int i = 0; i < n; i++) s->prob[i] = logits[s->idx[i]] - mx;
        quant_expf_row(s->prob, s->prob, n); /* libm's expf, bit for bit, 4 at a time */
        for (int i = 0; i < n; i++) z += s->prob[i];
    }
    if (use_top_p) {
        double cum = 0.0;
        int keep = n;
        for (int i = 0; i < n; i++) {
            cum += s->prob[i] / z;
            if (cum >= p->top_p) {
                keep = i + 1;
                break;
            }
        }
        n = keep;
    }
    if (use_min_p) {
        /* Relative to the most probable token: p_i >= min_p * p_max, i.e. exp(l_i - max) >= min_p. */
        int o = 0;
        for (int i = 0; i < n; i++)
            if (s->prob[i] >= p->min_p) {
                s->idx[o] = s->idx[i];
                s->prob[o] = s->prob[i];
                o++;
            }
        n = o > 0 ? o : 1;
    }
    /* Temperature on the surviving candidates. */
    mx = -INFINITY;
    for (int i = 0; i < n; i++)
        if (logits[s->idx[i]] > mx) mx = logits[s->idx[i]];
    z = 0.0;
    for (int i = 0; i < n; i++) s->prob[i] = (logits[s->idx[i]] - mx) / p->temperature;
    quant_expf_row(s->prob, s->prob, n);
    for (int i = 0; i < n; i++) z += s->prob[i];
    *z_out = z;
    return n;
}

int sampler_sample(const GenSampling *p, SamplerRng *rng, SamplerScratch *s, float *logits, const int *hist,
                   int n_hist) {
    double z;
    int n = sampler_candidates(p, s, logits, hist, n_hist, &z);
    if (!(p->temperature > 0.0f)) return s->idx[0]; /* greedy: no draw, the stream is left as it is */
    double u = sampler_rng_uniform(rng) * z, cum = 0.0;
    for (int i = 0; i < n; i++) {
        cum += s->prob[i];
        if (u < cum) return s->idx[i];
    }
    return s->idx[n - 1];
}
