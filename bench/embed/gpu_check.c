/* gpu_check.c: weaver-gpu-check, the device-side phases of ops/gpu-check.sh (test builds: the
 * reference is the fake device, i.e. the host math of kernels/device_math.h and the C
 * references). Prints one JSON object per line on stdout; human-readable notes on stderr.
 *
 *   weaver-gpu-check ceilings [--device D]           device-to-device copy GB/s, GEMM TFLOP/s per precision
 *   weaver-gpu-check kernels  [--device D] [--seed N] every device operation vs the reference on fresh
 *                                                      random inputs, outputs poisoned first
 *   weaver-gpu-check oom --snapshot DIR [--device D]  a forced small arena splits packs and changes no
 *                                                      vector; an oversized allocation fails, then work runs
 * D is cuda:N, or "fake" to run the program itself on the CPU (its self-test in CI).
 * Exit: 0 all within bounds, 1 a check failed, 2 usage or set-up. Not part of the engine. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/embed/bert_dev.h"
#include "engine/embed/snapshot.h"
#include "kernels/cpu_ops.h"
#include "kernels/device.h"
#include "kernels/device_fake.h"
#include "kernels/device_math.h"

#ifndef WEAVER_TEST_BACKENDS
int main(void)
{
    fprintf(stderr, "weaver-gpu-check needs a test build (-DWEAVER_TEST_BACKENDS=ON): its reference is the fake device\n");
    return 2;
}
#else

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static unsigned long long rng = 1;
static float frand(void)
{
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((rng >> 40) & 0xffffff) / 8388608.0f - 1.0f;
}

static int is_fake(const char *dev) { return strcmp(dev, "fake") == 0; }

static Device *open_dev(const char *name, char *err, size_t errlen)
{
    if (is_fake(name)) {
        device_fake_configure(NULL);
        return device_open(device_fake_ops(), 0, NULL, err, errlen);
    }
    int index;
    if (sscanf(name, "cuda:%d", &index) != 1) {
        snprintf(err, errlen, "--device %s: expected cuda:N or fake", name);
        return NULL;
    }
    return device_open(device_cuda_ops(), index, NULL, err, errlen);
}

#define CHECK(call)                                                                              \
    do {                                                                                         \
        int rc_ = (call);                                                                        \
        if (rc_ != DEV_OK) {                                                                     \
            fprintf(stderr, "%s: %s\n", #call, device_errstr(dev_stream_device(s)));             \
            return rc_;                                                                          \
        }                                                                                        \
    } while (0)

static float *rnd(size_t n, float scale, float base)
{
    float *v = malloc(n * 4);
    for (size_t i = 0; i < n; i++) v[i] = base + frand() * scale;
    return v;
}

/* ---- ceilings -------------------------------------------------------------------------------- */

static int ceilings(const char *dev)
{
    char err[512];
    Device *d = open_dev(dev, err, sizeof err);
    if (!d) {
        fprintf(stderr, "%s\n", err);
        return 2;
    }
    int fake = is_fake(dev);
    size_t copy_bytes = fake ? (8u << 20) : ((size_t)2 << 30);
    int gm = fake ? 128 : 8192, iters = fake ? 2 : 20;
    size_t gemm_bytes = (size_t)gm * gm * 4 * 3 + (size_t)gm * 4;
    size_t arena = (2 * copy_bytes > gemm_bytes ? 2 * copy_bytes : gemm_bytes) + ((size_t)4 << 20);
    DevStream *s = dev_stream_new(d, arena, 4096, err, sizeof err);
    if (!s) {
        fprintf(stderr, "%s\n", err);
        device_close(d);
        return 2;
    }
    void *a, *b;
    CHECK(dev_arena_alloc(s, copy_bytes, &a));
    CHECK(dev_arena_alloc(s, copy_bytes, &b));
    CHECK(dev_copy_d2d(s, b, a, copy_bytes)); /* warm-up */
    CHECK(dev_sync(s));
    double t0 = now_s();
    for (int i = 0; i < iters; i++) CHECK(dev_copy_d2d(s, (i & 1) ? a : b, (i & 1) ? b : a, copy_bytes));
    CHECK(dev_sync(s));
    double gbs = 2.0 * copy_bytes * iters / (now_s() - t0) / 1e9;
    printf("{\"phase\":\"ceilings\",\"what\":\"d2d_copy\",\"bytes\":%zu,\"gb_per_s\":%.1f}\n", copy_bytes, gbs);
    fprintf(stderr, "device-to-device copy: %.1f GB/s (read + write)\n", gbs);
    for (int p = DEV_FP32; p <= DEV_BF16; p++) {
        dev_arena_reset(s);
        float *x, *out, *bias;
        void *w;
        size_t n = (size_t)gm * gm;
        CHECK(dev_arena_alloc(s, n * 4, (void **)&x));
        CHECK(dev_arena_alloc(s, n * 4, (void **)&out));
        CHECK(dev_arena_alloc(s, n * dev_precision_weight_bytes((DevPrecision)p), &w));
        CHECK(dev_arena_alloc(s, (size_t)gm * 4, (void **)&bias));
        /* random data: tensor cores run measurably faster on zeros */
        float *hx = rnd(n, 1, 0);
        uint16_t *h16 = malloc(n * 2);
        for (size_t i = 0; i < n; i++) h16[i] = p == DEV_FP16 ? cpu_f32_to_f16(hx[i]) : devm_f32_to_bf16(hx[i]);
        CHECK(dev_copy_h2d(s, x, hx, n * 4));
        CHECK(dev_copy_h2d(s, w, dev_precision_weight_bytes((DevPrecision)p) == 2 ? (void *)h16 : (void *)hx,
                           n * dev_precision_weight_bytes((DevPrecision)p)));
        CHECK(dev_copy_h2d(s, bias, hx, (size_t)gm * 4));
        CHECK(dev_sync(s));
        free(hx);
        free(h16);
        CHECK(dev_gemm(s, out, x, w, bias, NULL, gm, gm, gm, (DevPrecision)p));
        CHECK(dev_sync(s));
        t0 = now_s();
        for (int i = 0; i < iters; i++) CHECK(dev_gemm(s, out, x, w, bias, NULL, gm, gm, gm, (DevPrecision)p));
        CHECK(dev_sync(s));
        double tf = 2.0 * gm * gm * (double)gm * iters / (now_s() - t0) / 1e12;
        printf("{\"phase\":\"ceilings\",\"what\":\"gemm\",\"precision\":\"%s\",\"m\":%d,\"n\":%d,\"k\":%d,"
               "\"tflops\":%.2f}\n", dev_precision_name((DevPrecision)p), gm, gm, gm, tf);
        fprintf(stderr, "GEMM %d^3 %s: %.1f TFLOP/s (includes the F32->16-bit input conversion)\n", gm,
                dev_precision_name((DevPrecision)p), tf);
    }
    dev_stream_free(s);
    device_close(d);
    return 0;
}

/* ---- kernels vs the reference ---------------------------------------------------------------- */

typedef struct Pair {
    DevStream *ref, *tgt;
} Pair;

/* Copies host data to the same-shaped buffer on both devices. */
static int up(Pair *p, void **r, void **t, const void *host, size_t bytes)
{
    DevStream *s = p->ref;
    CHECK(dev_arena_alloc(p->ref, bytes, r));
    CHECK(dev_copy_h2d(p->ref, *r, host, bytes));
    s = p->tgt;
    CHECK(dev_arena_alloc(p->tgt, bytes, t));
    CHECK(dev_copy_h2d(p->tgt, *t, host, bytes));
    return DEV_OK;
}

/* An output buffer on both, the target's poisoned with NaN first. */
static int out_bufs(Pair *p, void **r, void **t, size_t bytes)
{
    float *poison = malloc(bytes);
    for (size_t i = 0; i < bytes / 4; i++) poison[i] = NAN;
    int rc = up(p, r, t, poison, bytes);
    free(poison);
    return rc;
}

static int fails_total;

/* Compares n floats; prints the kernel's line. */
static int compare(Pair *p, const char *kernel, const char *shape, const void *r, const void *t, size_t n, float atol,
                   float rtol)
{
    float *hr = malloc(n * 4), *ht = malloc(n * 4);
    DevStream *s = p->ref;
    CHECK(dev_copy_d2h(p->ref, hr, r, n * 4));
    CHECK(dev_sync(p->ref));
    s = p->tgt;
    CHECK(dev_copy_d2h(p->tgt, ht, t, n * 4));
    CHECK(dev_sync(p->tgt));
    size_t bad = 0, nan = 0;
    double max_abs = 0, max_rel = 0;
    for (size_t i = 0; i < n; i++) {
        if (isnan(ht[i]) && !isnan(hr[i])) {
            nan++;
            continue;
        }
        double e = fabs((double)ht[i] - hr[i]);
        if (e > max_abs) max_abs = e;
        if (fabs(hr[i]) > 1e-3 && e / fabs(hr[i]) > max_rel) max_rel = e / fabs(hr[i]);
        if (e > atol + rtol * fabs(hr[i])) {
            if (bad < 5) fprintf(stderr, "  %s %s [%zu]: got %.9g, reference %.9g\n", kernel, shape, i, ht[i], hr[i]);
            bad++;
        }
    }
    int ok = bad == 0 && nan == 0;
    fails_total += !ok;
    printf("{\"phase\":\"kernels\",\"kernel\":\"%s\",\"shape\":\"%s\",\"n\":%zu,\"max_abs\":%.3g,\"max_rel\":%.3g,"
           "\"atol\":%g,\"rtol\":%g,\"mismatches\":%zu,\"poison_left\":%zu,\"ok\":%s}\n",
           kernel, shape, n, max_abs, max_rel, atol, rtol, bad, nan, ok ? "true" : "false");
    fprintf(stderr, "%-10s %-36s max abs %.2e  %s\n", kernel, shape, max_abs, ok ? "ok" : "FAILED");
    free(hr);
    free(ht);
    return DEV_OK;
}


#define BOTH(call_r, call_t) do { DevStream *s = P->ref; CHECK(call_r); s = P->tgt; CHECK(call_t); } while (0)

static int check_kernels(Pair *P, int fake)
{
    const int H = 384, FF = 1536;
    char shape[96];
    /* a pack of sequences of awkward lengths */
    static const int lens_c[] = {1, 7, 31, 32, 33, 64, 128, 256, 100, 3};
    const int nseq = 10;
    int T = 0;
    int32_t lens[10];
    for (int i = 0; i < nseq; i++) T += (lens[i] = lens_c[i]);
    void *rl, *tl, *rcu, *tcu;
    if (up(P, &rl, &tl, lens, sizeof lens)) return 1;
    if (out_bufs(P, &rcu, &tcu, (size_t)(nseq + 1) * 4)) return 1;
    BOTH(dev_seq_offsets(P->ref, rcu, rl, nseq), dev_seq_offsets(P->tgt, tcu, tl, nseq));
    { /* offsets are ints: compare as exact floats of their values through the host */
        int32_t a[11], b[11];
        DevStream *s = P->ref;
        CHECK(dev_copy_d2h(P->ref, a, rcu, sizeof a));
        CHECK(dev_sync(P->ref));
        s = P->tgt;
        CHECK(dev_copy_d2h(P->tgt, b, tcu, sizeof b));
        CHECK(dev_sync(P->tgt));
        int ok = memcmp(a, b, sizeof a) == 0;
        fails_total += !ok;
        printf("{\"phase\":\"kernels\",\"kernel\":\"seq_offsets\",\"shape\":\"nseq=%d\",\"ok\":%s}\n", nseq,
               ok ? "true" : "false");
        fprintf(stderr, "%-10s %-36s %s\n", "seq_offsets", "nseq=10", ok ? "exact" : "FAILED");
    }
    /* embeddings */
    {
        int V = 1000, P_ = 512;
        float *word = rnd((size_t)V * H, 1, 0), *pos = rnd((size_t)P_ * H, 0.3f, 0), *type = rnd(H, 0.3f, 0);
        int32_t *ids = malloc((size_t)T * 4);
        for (int t = 0; t < T; t++) ids[t] = (int32_t)((frand() + 1) * 499);
        void *rw, *tw, *rp, *tp, *rt, *tt, *ri, *ti, *rx, *tx;
        if (up(P, &rw, &tw, word, (size_t)V * H * 4) || up(P, &rp, &tp, pos, (size_t)P_ * H * 4) ||
            up(P, &rt, &tt, type, (size_t)H * 4) || up(P, &ri, &ti, ids, (size_t)T * 4) ||
            out_bufs(P, &rx, &tx, (size_t)T * H * 4))
            return 1;
        BOTH(dev_embed_tokens(P->ref, rx, ri, rcu, nseq, T, rw, rp, rt, H),
             dev_embed_tokens(P->tgt, tx, ti, tcu, nseq, T, tw, tp, tt, H));
        snprintf(shape, sizeof shape, "T=%d nseq=%d H=%d", T, nseq, H);
        compare(P, "embed", shape, rx, tx, (size_t)T * H, 0, 0);
        free(word), free(pos), free(type), free(ids);
    }
    /* GELU, LayerNorm (with and without the residual), L2 normalisation */
    {
        size_t n = (size_t)T * FF;
        float *x = rnd(n, 6, 0);
        void *r, *t;
        if (up(P, &r, &t, x, n * 4)) return 1;
        BOTH(dev_gelu(P->ref, r, n), dev_gelu(P->tgt, t, n));
        snprintf(shape, sizeof shape, "n=%zu", n);
        compare(P, "gelu", shape, r, t, n, 1e-6f, 1e-5f);
        free(x);
        float *a = rnd((size_t)T * H, 3, 0.5f), *res = rnd((size_t)T * H, 2, 0), *w = rnd(H, 0.1f, 1),
              *b = rnd(H, 0.1f, 0);
        void *ra, *ta, *rr, *tr, *rw, *tw, *rb, *tb, *ro, *to;
        if (up(P, &ra, &ta, a, (size_t)T * H * 4) || up(P, &rr, &tr, res, (size_t)T * H * 4) ||
            up(P, &rw, &tw, w, H * 4) || up(P, &rb, &tb, b, H * 4) || out_bufs(P, &ro, &to, (size_t)T * H * 4))
            return 1;
        for (int with_res = 0; with_res < 2; with_res++) {
            BOTH(dev_layernorm(P->ref, ro, ra, with_res ? rr : NULL, rw, rb, T, H, 1e-12f),
                 dev_layernorm(P->tgt, to, ta, with_res ? tr : NULL, tw, tb, T, H, 1e-12f));
            snprintf(shape, sizeof shape, "rows=%d cols=%d residual=%s", T, H, with_res ? "yes" : "no");
            compare(P, "layernorm", shape, ro, to, (size_t)T * H, 1e-5f, 1e-5f);
        }
        BOTH(dev_l2_normalize(P->ref, ra, T, H), dev_l2_normalize(P->tgt, ta, T, H));
        snprintf(shape, sizeof shape, "rows=%d cols=%d", T, H);
        compare(P, "l2norm", shape, ra, ta, (size_t)T * H, 1e-6f, 1e-5f);
        free(a), free(res), free(w), free(b);
    }
    /* attention, head sizes 32 and 64; pooling */
    for (int d = 32; d <= 64; d *= 2) {
        int heads = H / d;
        size_t n = (size_t)T * 3 * H;
        float *qkv = rnd(n, 2, 0);
        void *rq, *tq, *rc, *tc;
        if (up(P, &rq, &tq, qkv, n * 4) || out_bufs(P, &rc, &tc, (size_t)T * H * 4)) return 1;
        BOTH(dev_attention(P->ref, rc, rq, rcu, nseq, T, heads, d, 1.0f / sqrtf((float)d)),
             dev_attention(P->tgt, tc, tq, tcu, nseq, T, heads, d, 1.0f / sqrtf((float)d)));
        snprintf(shape, sizeof shape, "T=%d nseq=%d heads=%d d=%d", T, nseq, heads, d);
        compare(P, "attention", shape, rc, tc, (size_t)T * H, 1e-5f, 1e-4f);
        free(qkv);
        if (d == 64) {
            for (int mode = 0; mode < 3; mode++) {
                void *rp, *tp;
                if (out_bufs(P, &rp, &tp, (size_t)nseq * H * 4)) return 1;
                BOTH(dev_pool(P->ref, rp, rc, rcu, nseq, H, (DevPool)mode),
                     dev_pool(P->tgt, tp, tc, tcu, nseq, H, (DevPool)mode));
                snprintf(shape, sizeof shape, "%s nseq=%d H=%d", mode == 0 ? "mean" : mode == 1 ? "cls" : "max", nseq, H);
                compare(P, "pool", shape, rp, tp, (size_t)nseq * H, 1e-5f, 1e-5f);
            }
        }
    }
    /* GEMMs: bias epilogue, with and without the residual, every precision */
    {
        int m = fake ? 64 : T, n = 3 * H, k = H;
        float *a = rnd((size_t)m * k, 1, 0), *w32 = rnd((size_t)n * k, 0.2f, 0), *bias = rnd((size_t)n, 0.1f, 0),
              *res = rnd((size_t)m * n, 1, 0);
        uint16_t *w16 = malloc((size_t)n * k * 2);
        void *ra, *ta, *rb, *tb, *rr, *tr;
        if (up(P, &ra, &ta, a, (size_t)m * k * 4) || up(P, &rb, &tb, bias, (size_t)n * 4) ||
            up(P, &rr, &tr, res, (size_t)m * n * 4))
            return 1;
        static const float atol[] = {1e-4f, 2e-3f, 1e-3f, 2e-3f};
        for (int p = DEV_FP32; p <= DEV_BF16; p++) {
            const void *wsrc = w32;
            size_t wb = dev_precision_weight_bytes((DevPrecision)p);
            if (wb == 2) {
                for (size_t i = 0; i < (size_t)n * k; i++)
                    w16[i] = p == DEV_FP16 ? cpu_f32_to_f16(w32[i]) : devm_f32_to_bf16(w32[i]);
                wsrc = w16;
            }
            void *rw, *tw, *ro, *to;
            if (up(P, &rw, &tw, wsrc, (size_t)n * k * wb) || out_bufs(P, &ro, &to, (size_t)m * n * 4)) return 1;
            for (int with_res = 0; with_res < 2; with_res++) {
                BOTH(dev_gemm(P->ref, ro, ra, rw, rb, with_res ? rr : NULL, m, n, k, (DevPrecision)p),
                     dev_gemm(P->tgt, to, ta, tw, tb, with_res ? tr : NULL, m, n, k, (DevPrecision)p));
                snprintf(shape, sizeof shape, "%s m=%d n=%d k=%d%s", dev_precision_name((DevPrecision)p), m, n, k,
                         with_res ? " +res" : "");
                compare(P, "gemm", shape, ro, to, (size_t)m * n, atol[p], atol[p]);
            }
        }
        free(a), free(w32), free(w16), free(bias), free(res);
    }
    return 0;
}

static int kernels(const char *dev, unsigned long long seed)
{
    char err[512];
    rng = seed;
    Device *rd = open_dev("fake", err, sizeof err), *td = open_dev(dev, err, sizeof err);
    if (!rd || !td) {
        fprintf(stderr, "%s\n", err);
        device_close(rd);
        return 2;
    }
    size_t arena = (size_t)96 << 20;
    Pair P = {dev_stream_new(rd, arena, 4096, err, sizeof err), NULL};
    if (P.ref) P.tgt = dev_stream_new(td, arena, 4096, err, sizeof err);
    int rc = 2;
    if (P.ref && P.tgt) {
        rc = check_kernels(&P, is_fake(dev)) ? 2 : fails_total ? 1 : 0;
    } else {
        fprintf(stderr, "%s\n", err);
    }
    if (rc == 2) fprintf(stderr, "%s\n", device_errstr(td));
    printf("{\"phase\":\"kernels\",\"summary\":true,\"failed\":%d,\"ok\":%s}\n", fails_total, rc == 0 ? "true" : "false");
    dev_stream_free(P.ref);
    dev_stream_free(P.tgt);
    device_close(rd);
    device_close(td);
    return rc;
}

/* ---- out of memory ---------------------------------------------------------------------------- */

static int oom(const char *dev, const char *snapdir)
{
    char err[1024], path[4096];
    Snapshot snap;
    if (snapshot_load(snapdir, &snap, err, sizeof err) != 0) {
        fprintf(stderr, "%s\n", err);
        return 2;
    }
    snprintf(path, sizeof path, "%s/model.safetensors", snapdir);
    Device *d = open_dev(dev, err, sizeof err);
    SafeTensors *st = d ? st_open(path, err, sizeof err) : NULL;
    BertDev *m = st ? bert_dev_open(d, st, &snap.bert, DEV_FP32, err, sizeof err) : NULL;
    st_close(st);
    if (!m) {
        fprintf(stderr, "%s\n", err);
        device_close(d);
        return 2;
    }
    /* 64 sequences of 5..131 tokens, random ids */
    enum { NMAX = 64 };
    const int N = is_fake(dev) ? 4 : NMAX; /* the fake device's double-precision GEMMs are slow */
    int lens[NMAX], T = 0;
    for (int i = 0; i < N; i++) T += (lens[i] = 5 + (i * 37) % 127);
    int32_t *ids = malloc((size_t)T * 4);
    for (int t = 0; t < T; t++) ids[t] = 1000 + (int32_t)((frand() + 1) * 10000);
    float *full = malloc((size_t)N * snap.dim * 4), *split = malloc((size_t)N * snap.dim * 4);
    BertDevRun *big = bert_dev_run_new(m, T, N, 0, err, sizeof err);
    const int arena_tokens = T / 2 < 300 ? T / 2 : 300; /* forces at least one split */
    BertDevRun *small = big ? bert_dev_run_new(m, T, N, arena_tokens, err, sizeof err) : NULL;
    int rc = 1;
    if (!small) {
        fprintf(stderr, "%s\n", err);
        rc = 2;
        goto out;
    }
    int r1 = bert_dev_forward(big, ids, lens, N, DEV_POOL_MEAN, full);
    int r2 = bert_dev_forward(small, ids, lens, N, DEV_POOL_MEAN, split);
    double worst = 1;
    for (int i = 0; i < N; i++) {
        double ab = 0, aa = 0, bb = 0;
        for (int h = 0; h < snap.dim; h++) {
            float a = full[(size_t)i * snap.dim + h], b = split[(size_t)i * snap.dim + h];
            ab += (double)a * b, aa += (double)a * a, bb += (double)b * b;
        }
        if (ab / sqrt(aa * bb) < worst) worst = ab / sqrt(aa * bb);
    }
    long splits = bert_dev_run_stats(small)->splits;
    /* an allocation far over the device's memory fails as out of memory, and work still runs */
    size_t free_b = 0, total = 0;
    device_mem_info(d, &free_b, &total);
    DevStream *huge = dev_stream_new(d, total * 2, 16, err, sizeof err);
    int huge_failed = huge == NULL && !device_lost(d);
    dev_stream_free(huge);
    int r3 = bert_dev_forward(big, ids, lens, N, DEV_POOL_MEAN, split);
    int ok = r1 == DEV_OK && r2 == DEV_OK && splits > 0 && worst >= 0.99999 && huge_failed && r3 == DEV_OK;
    printf("{\"phase\":\"oom\",\"tokens\":%d,\"arena_tokens\":%d,\"splits\":%ld,\"min_cosine_split_vs_whole\":%.8f,"
           "\"oversized_alloc_refused\":%s,\"work_after_it\":%s,\"ok\":%s}\n",
           T, arena_tokens, splits, worst, huge_failed ? "true" : "false", r3 == DEV_OK ? "true" : "false", ok ? "true" : "false");
    fprintf(stderr, "oom: %d tokens through a %d-token arena: %ld splits, min cosine %.8f; oversized allocation %s "
            "(%s); then a batch %s\n", T, arena_tokens, splits, worst, huge_failed ? "refused" : "NOT refused", err,
            r3 == DEV_OK ? "ran" : "FAILED");
    rc = ok ? 0 : 1;
out:
    bert_dev_run_free(big);
    bert_dev_run_free(small);
    free(ids), free(full), free(split);
    bert_dev_free(m);
    device_close(d);
    return rc;
}

int main(int argc, char **argv)
{
    const char *dev = "cuda:0", *snap = NULL;
    unsigned long long seed = (unsigned long long)time(NULL);
    if (argc < 2) goto usage;
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--device") && i + 1 < argc) dev = argv[++i];
        else if (!strcmp(argv[i], "--snapshot") && i + 1 < argc) snap = argv[++i];
        else if (!strcmp(argv[i], "--seed") && i + 1 < argc) seed = strtoull(argv[++i], NULL, 10);
        else goto usage;
    }
    if (!strcmp(argv[1], "ceilings")) return ceilings(dev);
    if (!strcmp(argv[1], "kernels")) {
        fprintf(stderr, "kernels: seed %llu\n", seed);
        return kernels(dev, seed);
    }
    if (!strcmp(argv[1], "oom") && snap) return oom(dev, snap);
usage:
    fprintf(stderr, "usage: weaver-gpu-check ceilings|kernels|oom [--device cuda:N|fake] [--seed N] [--snapshot DIR]\n");
    return 2;
}
#endif
