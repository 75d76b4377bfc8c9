/* gpu_decode_check.c: weaver-gpu-decode, the device side of ops/gpu-check.sh's decoder phase.
 * Each sub-command prints one JSON object per line on stdout (progress on stderr):
 *   rebuild   --header H --size N --out F [--seed S]: F = the GGUF header H (SmolLM2's, from
 *             ops/make-gpu-bundle.sh) grown to N bytes, every tensor filled with valid random
 *             blocks (finite small scales) from the seed: the real model's shapes and types
 *   kernels   --device D [--seed S]: per tensor type, activations quantised on the device vs the
 *             host (bytes) and the matrix-vector product for 1..8 tokens vs qm_dot_row (the CPU
 *             reference's bits): max |diff| and whether bitwise
 *   forward   --device D --model F [--steps N]: a prompt, then N greedy steps on the CPU path and
 *             on the device: logits max |diff| per step and whether the tokens are identical
 *   bandwidth --device D [--rows R --cols C --type T]: device copy GB/s, then the matrix-vector
 *             product's weight GB/s for 1..8 tokens as a share of it
 *   throughput --device D --model F [--max N]: decode tokens/s at 1/16/64/256 concurrent
 *             sequences (graphs on) and prefill tokens/s
 * --device fake runs on the test-only fake device (tiny sizes: a check of the program). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "engine/decode/forward_dev.h"
#include "engine/decode/gguf.h"
#include "engine/decode/model.h"
#include "kernels/decoder_dev.h"
#include "kernels/device.h"
#include "kernels/device_fake.h"
#include "kernels/quant_math.h"

static uint64_t rng_s = 88172645463325252ull;
static uint32_t rnd(void)
{
    rng_s ^= rng_s << 13;
    rng_s ^= rng_s >> 7;
    rng_s ^= rng_s << 17;
    return (uint32_t)(rng_s >> 16);
}
static float rndf(void) { return (float)(rnd() % 2000001) / 1000000.0f - 1.0f; }

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static const char *arg(int argc, char **argv, const char *name, const char *def)
{
    for (int i = 2; i + 1 < argc; i++)
        if (!strcmp(argv[i], name)) return argv[i + 1];
    return def;
}

/* Valid random content for n elements of type t: random bits, then every block's scales set to
 * small finite halves; F32/F16/BF16 values small (norm vectors near 1). */
static void random_fill(int t, uint8_t *p, int64_t n, int norm)
{
    size_t bytes = quant_row_bytes(t, n), bb = quant_block_bytes(t);
    for (size_t i = 0; i < bytes; i++) p[i] = (uint8_t)rnd();
    for (int64_t b = 0; b < n / quant_block_elems(t); b++) {
        uint8_t *blk = p + (size_t)b * bb;
        uint16_t d = quant_f32_to_fp16(rndf() * 0.02f), m = quant_f32_to_fp16(fabsf(rndf()) * 0.01f);
        switch (t) {
        case QT_F32: { float v = norm ? 1.0f + 0.1f * rndf() : 0.05f * rndf(); memcpy(blk, &v, 4); break; }
        case QT_F16: { uint16_t h = quant_f32_to_fp16(0.05f * rndf()); memcpy(blk, &h, 2); break; }
        case QT_BF16: { uint16_t h = quant_f32_to_bf16(0.05f * rndf()); memcpy(blk, &h, 2); break; }
        case QT_Q4_0: case QT_Q8_0: memcpy(blk, &d, 2); break;
        case QT_Q4_1: case QT_Q4_K: case QT_Q5_K: memcpy(blk, &d, 2); memcpy(blk + 2, &m, 2); break;
        case QT_Q6_K: memcpy(blk + 208, &d, 2); break;
        }
    }
}

static Device *open_dev(const char *name, char *err, size_t errlen)
{
#ifdef WEAVER_TEST_BACKENDS
    if (!strcmp(name, "fake")) {
        device_fake_configure_spec("free_mib=4096");
        return device_open(device_fake_ops(), 0, NULL, err, errlen);
    }
#endif
    return device_open(device_cuda_ops(), strncmp(name, "cuda:", 5) ? 0 : atoi(name + 5), NULL, err, errlen);
}

static int cmd_rebuild(int argc, char **argv)
{
    const char *hdr = arg(argc, argv, "--header", NULL), *out = arg(argc, argv, "--out", NULL);
    long long size = atoll(arg(argc, argv, "--size", "0"));
    rng_s ^= (uint64_t)atoll(arg(argc, argv, "--seed", "1")) * 0x9E3779B97F4A7C15ull;
    FILE *in = hdr ? fopen(hdr, "rb") : NULL, *o = out ? fopen(out, "wb") : NULL;
    if (!in || !o || size <= 0) { fprintf(stderr, "rebuild: --header, --out and --size are needed\n"); return 64; }
    char buf[1 << 16];
    size_t k;
    while ((k = fread(buf, 1, sizeof buf, in)) > 0) fwrite(buf, 1, k, o);
    fclose(in);
    if (fflush(o) || ftruncate(fileno(o), size)) { perror("rebuild"); return 74; }
    fclose(o);
    char err[512];
    GgufFile *g = gguf_open(out, err, sizeof err);
    if (!g) { fprintf(stderr, "rebuild: %s\n", err); return 65; }
    FILE *w = fopen(out, "r+b");
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        const GgufTensor *t = &g->tensors[i];
        uint8_t *p = malloc(t->size);
        int64_t n = t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3];
        random_fill(t->type, p, n, strstr(t->name, "norm") != NULL);
        fseeko(w, (off_t)(g->data_offset + t->offset), SEEK_SET);
        fwrite(p, 1, t->size, w);
        free(p);
    }
    fclose(w);
    printf("{\"rebuilt\":\"%s\",\"tensors\":%llu,\"bytes\":%lld}\n", out, (unsigned long long)g->n_tensors, size);
    gguf_close(g);
    return 0;
}

static int cmd_kernels(int argc, char **argv)
{
    static const int TYPES[] = {QT_F32, QT_F16, QT_BF16, QT_Q4_0, QT_Q4_1, QT_Q8_0, QT_Q4_K, QT_Q5_K, QT_Q6_K};
    char err[512];
    rng_s ^= (uint64_t)atoll(arg(argc, argv, "--seed", "1")) * 0x9E3779B97F4A7C15ull;
    Device *d = open_dev(arg(argc, argv, "--device", "cuda:0"), err, sizeof err);
    if (!d) { fprintf(stderr, "kernels: %s\n", err); return 66; }
    const int rows = 96, cols = 1536;
    DevStream *s = dev_stream_new(d, (size_t)64 << 20, (size_t)16 << 20, err, sizeof err);
    if (!s) { fprintf(stderr, "kernels: %s\n", err); return 66; }
    int bad = 0;
    for (int ti = 0; ti < 9; ti++) {
        int t = TYPES[ti];
        size_t rb = quant_row_bytes(t, cols), ab = (dec_act_row_bytes(t, cols) + 15) & ~(size_t)15;
        uint8_t *w = malloc(rb * rows), *act = calloc(8, ab), *dact = malloc(8 * ab);
        float *x = malloc(8 * cols * sizeof *x), *ref = malloc(8 * rows * sizeof *ref), *got = malloc(8 * rows * sizeof *got);
        random_fill(t, w, (int64_t)rows * cols, 0);
        for (int i = 0; i < 8 * cols; i++) x[i] = rndf() * 2.0f;
        for (int tk = 0; tk < 8; tk++) qm_quantize_row(quant_act_type(t), x + (size_t)tk * cols, act + tk * ab, cols);
        void *dw, *dx, *da, *dout;
        dev_arena_reset(s);
        int rc = dev_arena_alloc(s, rb * rows, &dw) || dev_arena_alloc(s, 8 * cols * 4, &dx) ||
                 dev_arena_alloc(s, 8 * ab, &da) || dev_arena_alloc(s, 8 * rows * 4, &dout);
        rc = rc || dev_copy_h2d(s, dw, w, rb * rows) || dev_copy_h2d(s, dx, x, 8 * cols * 4);
        rc = rc || dec_quantize(s, da, ab, dx, cols, 8, cols, t) || dev_copy_d2h(s, dact, da, 8 * ab) || dev_sync(s);
        int q_same = !rc && !memcmp(dact, act, 8 * ab); /* (padding past the row: quantize leaves it) */
        if (!rc && !q_same) {
            q_same = 1;
            for (int tk = 0; tk < 8; tk++) q_same &= !memcmp(dact + tk * ab, act + tk * ab, dec_act_row_bytes(t, cols));
        }
        float worst = 0.0f;
        int bitwise = 1;
        for (int nt = 1; nt <= 8 && !rc; nt++) {
            for (int i = 0; i < 8 * rows; i++) got[i] = NAN; /* poisoned */
            rc = dev_copy_h2d(s, dout, got, 8 * rows * 4) || dec_matvec(s, dout, rows, dw, t, rows, cols, da, ab, nt) ||
                 dev_copy_d2h(s, got, dout, (size_t)nt * rows * 4) || dev_sync(s);
            for (int tk = 0; tk < nt && !rc; tk++)
                for (int r = 0; r < rows; r++) {
                    float e = qm_dot_row(t, w + (size_t)r * rb, act + tk * ab, cols);
                    float g = got[tk * rows + r];
                    if (memcmp(&e, &g, 4)) bitwise = 0;
                    if (!(fabsf(e - g) <= worst)) worst = isnan(g) ? INFINITY : fabsf(e - g);
                }
        }
        if (rc) fprintf(stderr, "kernels %s: %s\n", quant_type_name(t), device_errstr(d));
        bad |= rc || !q_same || !bitwise;
        printf("{\"check\":\"matvec\",\"type\":\"%s\",\"ok\":%s,\"quantize_bitwise\":%s,\"matvec_bitwise\":%s,"
               "\"max_abs_diff\":%g}\n", quant_type_name(t), rc ? "false" : "true", q_same ? "true" : "false",
               bitwise ? "true" : "false", worst);
        free(w); free(act); free(dact); free(x); free(ref); free(got);
    }
    dev_stream_free(s);
    device_close(d);
    return bad ? 1 : 0;
}

static Model *load_model(const char *path)
{
    char err[512];
    GgufFile *g = gguf_open(path, err, sizeof err);
    Model *m = g ? model_load(g, err, sizeof err) : NULL;
    if (!m) fprintf(stderr, "model %s: %s\n", path, err);
    return m;
}

static int argmax(const float *l, int n)
{
    int b = 0;
    for (int i = 1; i < n; i++)
        if (l[i] > l[b]) b = i;
    return b;
}

static int cmd_forward(int argc, char **argv)
{
    char err[512];
    Model *m = load_model(arg(argc, argv, "--model", ".gpu/smollm2-random.gguf"));
    Device *d = m ? open_dev(arg(argc, argv, "--device", "cuda:0"), err, sizeof err) : NULL;
    if (!d) { if (m) fprintf(stderr, "forward: %s\n", err); return 66; }
    int steps = atoi(arg(argc, argv, "--steps", "16")), V = m->hp.n_vocab, np = 24;
    DevForwardOpts o = {.max_tokens = 64, .max_ctx = 128, .max_seqs = 4, .max_logits = 4, .kv_tokens = 256, .graph_max = 4};
    DevForward *f = dev_forward_create(d, m, &o, NULL, err, sizeof err);
    KvCache kv;
    Forward *cf = forward_create(m, 64, 128, 0, err, sizeof err);
    if (!f || !cf || kv_init(&kv, m, 256, err, sizeof err)) { fprintf(stderr, "forward: %s\n", err); return 66; }
    int pages[8];
    for (int i = 0; i < 8; i++) pages[i] = i;
    BatchTok b[64];
    for (int t = 0; t < np; t++) b[t] = (BatchTok){.token = (int)((t * 7919u + 13) % (unsigned)V), .pos = t, .pages = pages, .logits_row = t == np - 1 ? 0 : -1};
    float *lc = malloc((size_t)V * 4), *ld = malloc((size_t)V * 4);
    int same = 1, rc = 0;
    double worst_all = 0;
    for (int s = 0; s <= steps && !rc; s++) {
        int n = s == 0 ? np : 1;
        int32_t g = -1;
        if (forward_run(cf, &kv, b, n, lc) || (rc = dev_forward_run(f, b, n, ld, &g))) break;
        double worst = 0;
        for (int i = 0; i < V; i++) worst = fmax(worst, fabs((double)lc[i] - ld[i]));
        worst_all = fmax(worst_all, worst);
        int tc = argmax(lc, V);
        same &= tc == g;
        printf("{\"check\":\"forward\",\"step\":%d,\"max_abs_diff\":%g,\"cpu_token\":%d,\"gpu_token\":%d}\n", s, worst, tc, g);
        b[0] = (BatchTok){.token = tc, .pos = np + s, .pages = pages, .logits_row = 0}; /* both follow the CPU's token */
    }
    if (rc) fprintf(stderr, "forward: %s\n", device_errstr(d));
    printf("{\"check\":\"forward_summary\",\"ok\":%s,\"steps\":%d,\"max_abs_diff\":%g,\"greedy_identical\":%s}\n",
           rc ? "false" : "true", steps, worst_all, same ? "true" : "false");
    dev_forward_free(f);
    device_close(d);
    forward_free(cf);
    kv_free(&kv);
    model_free(m);
    return rc || !same;
}

static int cmd_bandwidth(int argc, char **argv)
{
    char err[512];
    Device *d = open_dev(arg(argc, argv, "--device", "cuda:0"), err, sizeof err);
    if (!d) { fprintf(stderr, "bandwidth: %s\n", err); return 66; }
    int fake = !strcmp(arg(argc, argv, "--device", ""), "fake");
    int rows = atoi(arg(argc, argv, "--rows", fake ? "64" : "32768")), cols = atoi(arg(argc, argv, "--cols", fake ? "512" : "8192"));
    int t = QT_Q4_1;
    const char *tn = arg(argc, argv, "--type", "Q4_1");
    for (int k = 0; k < 40; k++)
        if (!strcmp(quant_type_name(k), tn)) t = k;
    size_t rb = quant_row_bytes(t, cols), wbytes = rb * rows, ab = (dec_act_row_bytes(t, cols) + 15) & ~(size_t)15;
    DevStream *s = dev_stream_new(d, 3 * wbytes + 8 * ab + 8 * (size_t)rows * 4 + ((size_t)4 << 20), 1 << 20, err, sizeof err);
    if (!s) { fprintf(stderr, "bandwidth: %s\n", err); return 66; }
    void *w, *w2, *a, *out;
    dev_arena_alloc(s, wbytes, &w);
    dev_arena_alloc(s, wbytes, &w2);
    dev_arena_alloc(s, 8 * ab, &a);
    dev_arena_alloc(s, 8 * (size_t)rows * 4, &out);
    uint8_t *hw = malloc(wbytes);
    random_fill(t, hw, (int64_t)rows * cols, 0);
    dev_copy_h2d(s, w, hw, wbytes);
    float *x = malloc(8 * (size_t)cols * 4);
    for (int i = 0; i < 8 * cols; i++) x[i] = rndf();
    uint8_t *ha = malloc(8 * ab);
    for (int tk = 0; tk < 8; tk++) qm_quantize_row(quant_act_type(t), x + (size_t)tk * cols, ha + tk * ab, cols);
    dev_copy_h2d(s, a, ha, 8 * ab);
    dev_sync(s);
    int reps = fake ? 1 : 20;
    double t0 = now_s();
    for (int r = 0; r < reps; r++) dev_copy_d2d(s, w2, w, wbytes);
    dev_sync(s);
    double copy_gbs = 2.0 * wbytes * reps / (now_s() - t0) / 1e9; /* read + write */
    printf("{\"check\":\"copy\",\"bytes\":%zu,\"gb_per_s\":%.1f}\n", wbytes, copy_gbs);
    for (int nt = 1; nt <= 8; nt++) {
        dec_matvec(s, out, rows, w, t, rows, cols, a, ab, nt);
        dev_sync(s);
        t0 = now_s();
        for (int r = 0; r < reps; r++) dec_matvec(s, out, rows, w, t, rows, cols, a, ab, nt);
        int rc = dev_sync(s);
        double dt = (now_s() - t0) / reps, gbs = wbytes / dt / 1e9;
        printf("{\"check\":\"matvec_bandwidth\",\"type\":\"%s\",\"tokens\":%d,\"weight_bytes\":%zu,\"us\":%.1f,"
               "\"gb_per_s\":%.1f,\"share_of_copy\":%.3f,\"ok\":%s}\n", quant_type_name(t), nt, wbytes, dt * 1e6, gbs,
               gbs / copy_gbs, rc ? "false" : "true");
    }
    free(hw); free(x); free(ha);
    dev_stream_free(s);
    device_close(d);
    return 0;
}

static int cmd_throughput(int argc, char **argv)
{
    char err[512];
    Model *m = load_model(arg(argc, argv, "--model", ".gpu/smollm2-random.gguf"));
    Device *d = m ? open_dev(arg(argc, argv, "--device", "cuda:0"), err, sizeof err) : NULL;
    if (!d) { if (m) fprintf(stderr, "throughput: %s\n", err); return 66; }
    int maxc = atoi(arg(argc, argv, "--max", "256")), steps = atoi(arg(argc, argv, "--steps", "64")), plen = 32;
    DevForwardOpts o = {.max_tokens = 256, .max_ctx = 256, .max_seqs = maxc, .max_logits = maxc,
                        .kv_tokens = maxc * 256, .graph_max = maxc};
    DevForward *f = dev_forward_create(d, m, &o, NULL, err, sizeof err);
    if (!f) { fprintf(stderr, "throughput: %s\n", err); return 66; }
    int V = m->hp.n_vocab, pps = 256 / KV_PAGE;
    int *pages = malloc((size_t)maxc * pps * sizeof *pages);
    for (int i = 0; i < maxc * pps; i++) pages[i] = i;
    BatchTok *b = calloc(256, sizeof *b);
    int32_t *g = calloc((size_t)maxc, sizeof *g);
    static const int CONC[] = {1, 16, 64, 256};
    int rc = 0;
    for (int ci = 0; ci < 4 && !rc; ci++) {
        int c = CONC[ci];
        if (c > maxc) break;
        /* prompts: 32 tokens each, 8 sequences per prefill step of 256 tokens */
        double t0 = now_s();
        int ptoks = 0;
        for (int s0 = 0; s0 < c && !rc; s0 += 8) {
            int n = 0;
            for (int s = s0; s < s0 + 8 && s < c; s++)
                for (int t = 0; t < plen; t++, n++)
                    b[n] = (BatchTok){.token = (int)((s * 131u + t * 7919u) % (unsigned)V), .pos = t,
                                      .pages = pages + (size_t)s * pps, .logits_row = -1};
            rc = dev_forward_run(f, b, n, NULL, NULL);
            ptoks += n;
        }
        double prefill = ptoks / (now_s() - t0);
        t0 = now_s();
        for (int st = 0; st < steps && !rc; st++) {
            for (int s = 0; s < c; s++)
                b[s] = (BatchTok){.token = st == 0 ? 1 : g[s], .pos = plen + st, .pages = pages + (size_t)s * pps, .logits_row = s};
            rc = dev_forward_run(f, b, c, NULL, g);
        }
        double dt = now_s() - t0;
        printf("{\"check\":\"throughput\",\"concurrent\":%d,\"decode_tokens_per_s\":%.0f,\"step_us\":%.1f,"
               "\"prefill_tokens_per_s\":%.0f,\"ok\":%s}\n", c, c * steps / dt, dt / steps * 1e6, prefill, rc ? "false" : "true");
    }
    if (rc) fprintf(stderr, "throughput: %s\n", device_errstr(d));
    DevForwardStats st;
    dev_forward_stats(f, &st);
    printf("{\"check\":\"graphs\",\"captured\":%d,\"launches\":%d,\"eager_steps\":%d}\n", st.graphs_captured,
           st.graph_launches, st.eager_steps);
    dev_forward_free(f);
    device_close(d);
    model_free(m);
    free(pages); free(b); free(g);
    return rc ? 1 : 0;
}

int main(int argc, char **argv)
{
    const char *c = argc > 1 ? argv[1] : "";
    if (!strcmp(c, "rebuild")) return cmd_rebuild(argc, argv);
    if (!strcmp(c, "kernels")) return cmd_kernels(argc, argv);
    if (!strcmp(c, "forward")) return cmd_forward(argc, argv);
    if (!strcmp(c, "bandwidth")) return cmd_bandwidth(argc, argv);
    if (!strcmp(c, "throughput")) return cmd_throughput(argc, argv);
    fprintf(stderr, "usage: weaver-gpu-decode rebuild|kernels|forward|bandwidth|throughput [options]\n");
    return 64;
}
