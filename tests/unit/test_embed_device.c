/* test_embed_device.c: the BERT encoder through the device layer (engine/embed/bert_dev.c) on the
 * fake device (test builds), against the CPU encoder (bert.c) on a small random model written as
 * safetensors here: the same vectors in fp32 (and close ones in tf32/fp16/bf16) for every
 * pooling; out of memory at the Nth allocation splits the pack and changes no vector; a sticky
 * error is reported and nothing runs after it; batches reuse one stream and arena; the token
 * budget comes from the device's free memory. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/embed/bert.h"
#include "engine/embed/bert_dev.h"
#include "engine/embed/safetensors.h"
#include "kernels/device_fake.h"

#ifdef WEAVER_TEST_BACKENDS

static const BertConfig CFG = {.vocab_size = 40, .hidden = 64, .layers = 2, .heads = 2, .intermediate = 128,
                               .max_positions = 48, .type_vocab = 2, .ln_eps = 1e-12f};
static char model_path[256];

static float frand(unsigned *s)
{
    *s = *s * 1664525u + 1013904223u;
    return (float)((*s >> 8) & 0xffff) / 32768.0f - 1.0f;
}

/* Writes a random BERT with CFG's shapes as a safetensors file. */
static int write_model(void **state)
{
    (void)state;
    snprintf(model_path, sizeof model_path, "/tmp/weaver-test-bert-dev-%d.safetensors", (int)getpid());
    struct { char name[96]; int64_t d0, d1; float base, spread; } t[64];
    int n = 0;
    int64_t H = CFG.hidden, FF = CFG.intermediate;
#define T(nm, a, b, base_, spr) (snprintf(t[n].name, sizeof t[n].name, "%s", nm), t[n].d0 = a, t[n].d1 = b, \
                                 t[n].base = base_, t[n].spread = spr, n++)
    T("embeddings.word_embeddings.weight", CFG.vocab_size, H, 0, 1);
    T("embeddings.position_embeddings.weight", CFG.max_positions, H, 0, 0.3f);
    T("embeddings.token_type_embeddings.weight", CFG.type_vocab, H, 0, 0.3f);
    T("embeddings.LayerNorm.weight", H, 0, 1, 0.1f);
    T("embeddings.LayerNorm.bias", H, 0, 0, 0.1f);
    for (int l = 0; l < CFG.layers; l++) {
        char b[96];
#define L(nm, a, c, base_, spr) (snprintf(b, sizeof b, "encoder.layer.%d.%s", l, nm), T(b, a, c, base_, spr))
        L("attention.self.query.weight", H, H, 0, 0.2f);
        L("attention.self.query.bias", H, 0, 0, 0.1f);
        L("attention.self.key.weight", H, H, 0, 0.2f);
        L("attention.self.key.bias", H, 0, 0, 0.1f);
        L("attention.self.value.weight", H, H, 0, 0.2f);
        L("attention.self.value.bias", H, 0, 0, 0.1f);
        L("attention.output.dense.weight", H, H, 0, 0.2f);
        L("attention.output.dense.bias", H, 0, 0, 0.1f);
        L("attention.output.LayerNorm.weight", H, 0, 1, 0.1f);
        L("attention.output.LayerNorm.bias", H, 0, 0, 0.1f);
        L("intermediate.dense.weight", FF, H, 0, 0.2f);
        L("intermediate.dense.bias", FF, 0, 0, 0.1f);
        L("output.dense.weight", H, FF, 0, 0.15f);
        L("output.dense.bias", H, 0, 0, 0.1f);
        L("output.LayerNorm.weight", H, 0, 1, 0.1f);
        L("output.LayerNorm.bias", H, 0, 0, 0.1f);
#undef L
    }
#undef T
    char *hdr = malloc(65536);
    size_t hl = 0, off = 0;
    hl += (size_t)sprintf(hdr + hl, "{");
    for (int i = 0; i < n; i++) {
        size_t cnt = (size_t)t[i].d0 * (size_t)(t[i].d1 ? t[i].d1 : 1);
        if (t[i].d1)
            hl += (size_t)sprintf(hdr + hl, "%s\"%s\":{\"dtype\":\"F32\",\"shape\":[%lld,%lld],\"data_offsets\":[%zu,%zu]}",
                                  i ? "," : "", t[i].name, (long long)t[i].d0, (long long)t[i].d1, off, off + cnt * 4);
        else
            hl += (size_t)sprintf(hdr + hl, "%s\"%s\":{\"dtype\":\"F32\",\"shape\":[%lld],\"data_offsets\":[%zu,%zu]}",
                                  i ? "," : "", t[i].name, (long long)t[i].d0, off, off + cnt * 4);
        off += cnt * 4;
    }
    hl += (size_t)sprintf(hdr + hl, "}");
    while (hl % 8) hdr[hl++] = ' ';
    FILE *f = fopen(model_path, "wb");
    uint64_t len = hl;
    fwrite(&len, 8, 1, f);
    fwrite(hdr, 1, hl, f);
    unsigned seed = 42;
    for (int i = 0; i < n; i++) {
        size_t cnt = (size_t)t[i].d0 * (size_t)(t[i].d1 ? t[i].d1 : 1);
        for (size_t k = 0; k < cnt; k++) {
            float v = t[i].base + frand(&seed) * t[i].spread;
            fwrite(&v, 4, 1, f);
        }
    }
    fclose(f);
    free(hdr);
    return 0;
}

static int remove_model(void **state)
{
    (void)state;
    unlink(model_path);
    return 0;
}

/* A batch: nseq sequences of lengths 1..max_positions, ids < vocab. */
#define NSEQ 9
static const int LENS[NSEQ] = {1, 5, 17, 48, 2, 33, 8, 31, 12};
static int32_t IDS[256];
static int total_tokens(void)
{
    int t = 0;
    for (int i = 0; i < NSEQ; i++) t += LENS[i];
    return t;
}

static void fill_ids(void)
{
    unsigned seed = 9;
    for (int i = 0; i < total_tokens(); i++) {
        seed = seed * 1664525u + 1013904223u;
        IDS[i] = (int32_t)((seed >> 8) % (unsigned)CFG.vocab_size);
    }
}

static void cpu_vectors(EmbedPooling pool, float *out)
{
    char err[256];
    BertModel *m = bert_load(model_path, &CFG, err, sizeof err);
    if (!m) fail_msg("%s", err);
    BertScratch s;
    assert_int_equal(bert_scratch_init(&s, &CFG, total_tokens(), CFG.max_positions), 0);
    bert_forward(m, &s, IDS, LENS, NSEQ, pool, out);
    bert_scratch_free(&s);
    bert_free(m);
}

typedef struct Rig {
    Device *d;
    BertDev *m;
    BertDevRun *r;
    SafeTensors *st;
} Rig;

static void rig_open(Rig *g, const FakeDeviceConfig *fc, DevPrecision prec, int max_tokens)
{
    char err[512];
    device_fake_configure(fc);
    g->d = device_open(device_fake_ops(), 0, NULL, err, sizeof err);
    assert_non_null(g->d);
    g->st = st_open(model_path, err, sizeof err);
    if (!g->st) fail_msg("%s", err);
    g->m = bert_dev_open(g->d, g->st, &CFG, prec, err, sizeof err);
    if (!g->m) fail_msg("%s", err);
    g->r = bert_dev_run_new(g->m, max_tokens, NSEQ, 0, err, sizeof err);
    if (!g->r) fail_msg("%s", err);
}

static void rig_close(Rig *g)
{
    bert_dev_run_free(g->r);
    bert_dev_free(g->m);
    st_close(g->st);
    device_close(g->d);
}

static double min_cosine(const float *a, const float *b, int n, int dim)
{
    double worst = 1.0;
    for (int i = 0; i < n; i++) {
        double ab = 0, aa = 0, bb = 0;
        for (int h = 0; h < dim; h++) {
            ab += (double)a[i * dim + h] * b[i * dim + h];
            aa += (double)a[i * dim + h] * a[i * dim + h];
            bb += (double)b[i * dim + h] * b[i * dim + h];
        }
        double c = ab / sqrt(aa * bb);
        if (c < worst) worst = c;
    }
    return worst;
}

static void device_encoder_matches_the_cpu_encoder_in_fp32(void **state)
{
    (void)state;
    fill_ids();
    const int H = CFG.hidden;
    for (int pool = 0; pool < 3; pool++) {
        float cpu[NSEQ * 64], dev[NSEQ * 64];
        cpu_vectors((EmbedPooling)pool, cpu);
        Rig g;
        rig_open(&g, NULL, DEV_FP32, total_tokens());
        memset(dev, 0xff, sizeof dev); /* poisoned: every value must be written */
        assert_int_equal(bert_dev_forward(g.r, IDS, LENS, NSEQ, (DevPool)pool, dev), DEV_OK);
        for (int i = 0; i < NSEQ * H; i++)
            if (!(fabsf(dev[i] - cpu[i]) <= 1e-4f + 1e-4f * fabsf(cpu[i])))
                fail_msg("pooling %d: seq %d dim %d: device %.9g, cpu %.9g", pool, i / H, i % H, dev[i], cpu[i]);
        rig_close(&g);
    }
}

static void reduced_precisions_stay_close_to_fp32(void **state)
{
    (void)state;
    fill_ids();
    float cpu[NSEQ * 64], dev[NSEQ * 64];
    cpu_vectors(EMBED_POOL_MEAN, cpu);
    static const DevPrecision ps[] = {DEV_TF32, DEV_FP16, DEV_BF16};
    static const double floor_[] = {0.9999, 0.9999, 0.999};
    for (int i = 0; i < 3; i++) {
        Rig g;
        rig_open(&g, NULL, ps[i], total_tokens());
        assert_int_equal(bert_dev_forward(g.r, IDS, LENS, NSEQ, DEV_POOL_MEAN, dev), DEV_OK);
        double c = min_cosine(cpu, dev, NSEQ, CFG.hidden);
        fprintf(stderr, "%s: min cosine vs the cpu %.7f\n", dev_precision_name(ps[i]), c);
        assert_true(c >= floor_[i]);
        assert_true(c < 1.0 - 1e-9); /* the precision really was reduced */
        rig_close(&g);
    }
}

static void out_of_memory_splits_the_pack_and_changes_no_vector(void **state)
{
    (void)state;
    fill_ids();
    float want[NSEQ * 64], got[NSEQ * 64];
    Rig g;
    rig_open(&g, NULL, DEV_FP32, total_tokens());
    assert_int_equal(bert_dev_forward(g.r, IDS, LENS, NSEQ, DEV_POOL_MEAN, want), DEV_OK);
    rig_close(&g);
    /* the whole pack's 3rd arena allocation fails; then its 8th (the last) and the first half's
     * first, so the half splits again */
    for (int at = 3, count = 1; count <= 2; at = 8, count++) {
        rig_open(&g, &(FakeDeviceConfig){.oom_at_alloc = at, .oom_count = count}, DEV_FP32, total_tokens());
        memset(got, 0xff, sizeof got);
        assert_int_equal(bert_dev_forward(g.r, IDS, LENS, NSEQ, DEV_POOL_MEAN, got), DEV_OK);
        assert_memory_equal(got, want, sizeof want);
        FakeDeviceStats st;
        device_fake_stats(g.d, &st);
        assert_int_equal(st.ooms_injected, count);
        assert_int_equal(bert_dev_run_stats(g.r)->splits, count);
        assert_false(device_lost(g.d));
        rig_close(&g);
    }
    /* memory that never comes back: a single sequence that does not fit is the caller's error */
    rig_open(&g, &(FakeDeviceConfig){.oom_at_alloc = 1, .oom_count = 1000}, DEV_FP32, total_tokens());
    assert_int_equal(bert_dev_forward(g.r, IDS, LENS, NSEQ, DEV_POOL_MEAN, got), DEV_ENOMEM);
    assert_int_equal(bert_dev_run_stats(g.r)->packs, 0);
    rig_close(&g);
}

static void a_sticky_error_is_reported_and_nothing_runs_after_it(void **state)
{
    (void)state;
    fill_ids();
    float got[NSEQ * 64];
    Rig g;
    rig_open(&g, &(FakeDeviceConfig){.sticky_at_op = 10}, DEV_FP32, total_tokens());
    assert_int_equal(bert_dev_forward(g.r, IDS, LENS, NSEQ, DEV_POOL_MEAN, got), DEV_ESTICKY);
    assert_true(device_lost(g.d));
    assert_int_equal(bert_dev_run_stats(g.r)->splits, 0); /* never retried as if it were memory */
    FakeDeviceStats st;
    device_fake_stats(g.d, &st);
    assert_int_equal(st.ops, 10);
    assert_int_equal(bert_dev_forward(g.r, IDS, LENS, 1, DEV_POOL_MEAN, got), DEV_ESTICKY);
    device_fake_stats(g.d, &st);
    assert_int_equal(st.ops, 10);
    assert_non_null(strstr(device_errstr(g.d), "illegal memory access"));
    rig_close(&g);
}

static void batches_reuse_one_stream_and_arena(void **state)
{
    (void)state;
    fill_ids();
    float got[NSEQ * 64];
    Rig g;
    rig_open(&g, NULL, DEV_FP16, total_tokens());
    FakeDeviceStats before, after;
    device_fake_stats(g.d, &before);
    assert_int_equal(before.device_mallocs, 2); /* the weights and the run's arena */
    size_t first = 0;
    for (int b = 0; b < 4; b++) {
        assert_int_equal(bert_dev_forward(g.r, IDS + b, LENS + b, NSEQ - b, DEV_POOL_CLS, got), DEV_OK);
        size_t used = dev_arena_used(bert_dev_run_stream(g.r));
        if (b == 0) first = used;
        assert_true(used <= first); /* each batch starts from the arena's beginning (fewer texts each time) */
    }
    device_fake_stats(g.d, &after);
    assert_int_equal(after.device_mallocs, before.device_mallocs);
    assert_int_equal(after.streams_created, 1);
    assert_int_equal(after.syncs, 4); /* one wait per batch */
    assert_int_equal(bert_dev_run_stats(g.r)->packs, 4);
    rig_close(&g);
}

static void token_budget_comes_from_free_device_memory(void **state)
{
    (void)state;
    char err[512] = "";
    Rig g;
    size_t free_b = (size_t)2 << 30;
    rig_open(&g, &(FakeDeviceConfig){.free_bytes = free_b}, DEV_FP32, 64);
    FakeDeviceStats st;
    device_fake_stats(g.d, &st);
    size_t per = bert_dev_bytes_per_token(&CFG, DEV_FP32), fixed = bert_dev_fixed_bytes(&CFG);
    size_t now = free_b - st.bytes_live; /* weights and the run's arena are gone */
    int want = (int)(((double)now - 2.0 * fixed) * DEV_BUDGET_FRACTION / 2 / per);
    assert_int_equal(bert_dev_token_budget(g.m, 2, 0, 48, err, sizeof err), want);
    assert_int_equal(bert_dev_token_budget(g.m, 2, 4096, 48, err, sizeof err), 4096);
    /* too many workers for this device: 0 and the figures */
    assert_int_equal(bert_dev_token_budget(g.m, 200, 0, 48, err, sizeof err), 0);
    assert_non_null(strstr(err, "200 workers"));
    rig_close(&g);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(device_encoder_matches_the_cpu_encoder_in_fp32),
        cmocka_unit_test(reduced_precisions_stay_close_to_fp32),
        cmocka_unit_test(out_of_memory_splits_the_pack_and_changes_no_vector),
        cmocka_unit_test(a_sticky_error_is_reported_and_nothing_runs_after_it),
        cmocka_unit_test(batches_reuse_one_stream_and_arena),
        cmocka_unit_test(token_budget_comes_from_free_device_memory),
    };
    return cmocka_run_group_tests(tests, write_model, remove_model);
}
#else
int main(void)
{
    puts("skipped: the fake device is in test builds only (-DWEAVER_TEST_BACKENDS=ON)");
    return 77;
}
#endif
