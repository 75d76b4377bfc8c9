/* device_fake.c: the test-only fake device (see device_fake.h). Compiled into test builds only;
 * its kernels are the host forms of the CUDA kernels' math (device_math.h) and the plain-C
 * references, so a result through it can be compared with the CPU encoder. Must not be
 * selectable from a config file. */
#ifdef WEAVER_TEST_BACKENDS
#include "kernels/device_fake.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cpu_ops.h"
#include "kernels/device_impl.h"
#include "kernels/device_math.h"

static FakeDeviceConfig next_cfg;

typedef struct Fake {
    FakeDeviceConfig cfg;
    FakeDeviceStats st;
} Fake;

void device_fake_configure(const FakeDeviceConfig *c)
{
    memset(&next_cfg, 0, sizeof next_cfg);
    if (c) next_cfg = *c;
}

void device_fake_configure_spec(const char *spec)
{
    FakeDeviceConfig c = {0};
    long v;
    char key[32];
    for (const char *p = spec; p && *p;) {
        int used = 0;
        if (sscanf(p, "%31[a-z_]=%ld%n", key, &v, &used) != 2) break;
        if (!strcmp(key, "free_mib")) c.free_bytes = (size_t)v << 20;
        else if (!strcmp(key, "oom_at")) c.oom_at_alloc = (int)v;
        else if (!strcmp(key, "oom_count")) c.oom_count = (int)v;
        else if (!strcmp(key, "sticky_at")) c.sticky_at_op = (int)v;
        else if (!strcmp(key, "oom_op")) c.oom_at_op = (int)v;
        else if (!strcmp(key, "oom_op_count")) c.oom_op_count = (int)v;
        p += used;
        if (*p == ',') p++;
    }
    device_fake_configure(&c);
}

void device_fake_stats(const Device *d, FakeDeviceStats *out)
{
    *out = ((const Fake *)d->impl)->st;
}

static Fake *fk(Device *d) { return d->impl; }

static void *fake_malloc(Device *d, size_t bytes)
{
    Fake *f = fk(d);
    size_t free_now = f->cfg.free_bytes - f->st.bytes_live;
    if (bytes > free_now) return NULL;
    void *p = aligned_alloc(DEV_ALIGN, (bytes + DEV_ALIGN - 1) & ~(size_t)(DEV_ALIGN - 1));
    if (!p) return NULL;
    f->st.device_mallocs++;
    f->st.bytes_live += bytes;
    return p;
}

static void fake_free(Device *d, void *p, size_t bytes)
{
    if (!p) return;
    free(p);
    fk(d)->st.device_frees++;
    fk(d)->st.bytes_live -= bytes;
}

static int fake_open(Device *d, int index)
{
    Fake *f = calloc(1, sizeof *f);
    if (!f) return dev_fail(d, DEV_ENOMEM, "open", "no host memory for the fake device");
    f->cfg = next_cfg;
    if (!f->cfg.total_bytes) f->cfg.total_bytes = (size_t)16 << 30;
    if (!f->cfg.free_bytes || f->cfg.free_bytes > f->cfg.total_bytes) f->cfg.free_bytes = f->cfg.total_bytes;
    d->impl = f;
    snprintf(d->info.name, sizeof d->info.name, "fake");
    d->info.index = index;
    d->info.cc_major = 9;
    d->info.sm_count = 1;
    d->info.total_bytes = f->cfg.total_bytes;
    d->info.free_bytes = f->cfg.free_bytes;
    return DEV_OK;
}

static void fake_close(Device *d)
{
    fake_free(d, d->weights, d->weights_bytes);
    free(d->impl);
}

static int fake_mem_info(Device *d, size_t *free_bytes, size_t *total_bytes)
{
    *free_bytes = fk(d)->cfg.free_bytes - fk(d)->st.bytes_live;
    *total_bytes = fk(d)->cfg.total_bytes;
    return DEV_OK;
}

static int fake_weights_alloc(Device *d, size_t bytes)
{
    d->weights = fake_malloc(d, bytes);
    if (!d->weights)
        return dev_fail(d, DEV_ENOMEM, "weights_alloc", "%zu bytes, %zu free", bytes,
                        fk(d)->cfg.free_bytes - fk(d)->st.bytes_live);
    d->weights_bytes = bytes;
    return DEV_OK;
}

static int fake_upload(Device *d, void *dst, const void *src, size_t bytes)
{
    char *w = d->weights;
    if ((char *)dst < w || (char *)dst + bytes > w + d->weights_bytes)
        return dev_fail(d, DEV_EINVAL, "upload", "%zu bytes at offset %td fall outside the %zu-byte weights", bytes,
                        (char *)dst - w, d->weights_bytes);
    memcpy(dst, src, bytes);
    return DEV_OK;
}

static int fake_stream_new(DevStream *s, size_t arena_bytes, size_t pinned_bytes)
{
    Device *d = s->d;
    s->arena = fake_malloc(d, arena_bytes);
    if (!s->arena)
        return dev_fail(d, DEV_ENOMEM, "stream_new", "a %zu-byte workspace arena, %zu free", arena_bytes,
                        fk(d)->cfg.free_bytes - fk(d)->st.bytes_live);
    s->pinned = malloc(pinned_bytes ? pinned_bytes : 1);
    if (!s->pinned) {
        fake_free(d, s->arena, arena_bytes);
        return dev_fail(d, DEV_ENOMEM, "stream_new", "%zu bytes of pinned host memory", pinned_bytes);
    }
    s->arena_size = arena_bytes;
    s->pinned_bytes = pinned_bytes;
    fk(d)->st.streams_created++;
    return DEV_OK;
}

static void fake_stream_free(DevStream *s)
{
    fake_free(s->d, s->arena, s->arena_size);
    free(s->pinned);
}

static int fake_arena_alloc_check(DevStream *s, size_t bytes)
{
    Fake *f = fk(s->d);
    int n = ++f->st.arena_allocs, count = f->cfg.oom_count > 0 ? f->cfg.oom_count : 1;
    if (f->cfg.oom_at_alloc > 0 && n >= f->cfg.oom_at_alloc && n < f->cfg.oom_at_alloc + count) {
        f->st.ooms_injected++;
        return dev_fail(s->d, DEV_ENOMEM, "arena_alloc", "%zu bytes: out of memory injected at allocation %d",
                        bytes, n);
    }
    return DEV_OK;
}

/* Every queued operation passes here: counts it and injects the sticky error. */
static int op(DevStream *s, const char *name);
int device_fake_op(DevStream *s, const char *name) { return op(s, name); }

static int op(DevStream *s, const char *name)
{
    Fake *f = fk(s->d);
    int n = ++f->st.ops, oc = f->cfg.oom_op_count > 0 ? f->cfg.oom_op_count : 1;
    if (f->cfg.oom_at_op > 0 && n >= f->cfg.oom_at_op && n < f->cfg.oom_at_op + oc) {
        f->st.ooms_injected++;
        return dev_fail(s->d, DEV_ENOMEM, name, "out of memory injected at operation %d", n);
    }
    if (f->cfg.sticky_at_op > 0 && n == f->cfg.sticky_at_op)
        return dev_fail(s->d, DEV_ESTICKY, name, "an illegal memory access was encountered (injected at operation %d)",
                        n);
    return DEV_OK;
}

static int fake_copy(DevStream *s, void *dst, const void *src, size_t bytes)
{
    int rc = op(s, "copy");
    if (rc) return rc;
    memcpy(dst, src, bytes);
    return DEV_OK;
}

static int fake_sync(DevStream *s)
{
    fk(s->d)->st.syncs++;
    return DEV_OK;
}

static int fake_seq_offsets(DevStream *s, int32_t *cu, const int32_t *lens, int nseq)
{
    int rc = op(s, "seq_offsets");
    if (rc) return rc;
    cu[0] = 0;
    for (int i = 0; i < nseq; i++) cu[i + 1] = cu[i] + lens[i];
    return DEV_OK;
}

static int fake_embed_tokens(DevStream *s, float *x, const int32_t *ids, const int32_t *cu, int nseq, int T,
                             const float *word, const float *pos, const float *type0, int H)
{
    int rc = op(s, "embed_tokens");
    if (rc) return rc;
    if (cu[nseq] != T) return dev_fail(s->d, DEV_EINVAL, "embed_tokens", "cu_seqlens ends at %d, T = %d", cu[nseq], T);
    for (int i = 0; i < nseq; i++)
        for (int t = cu[i]; t < cu[i + 1]; t++)
            for (int h = 0; h < H; h++)
                x[(size_t)t * H + h] = word[(size_t)ids[t] * H + h] + pos[(size_t)(t - cu[i]) * H + h] + type0[h];
    return DEV_OK;
}

static float weight_at(const void *w, size_t i, DevPrecision prec)
{
    if (prec == DEV_FP16) return cpu_f16_to_f32(((const uint16_t *)w)[i]);
    if (prec == DEV_BF16) return cpu_bf16_to_f32(((const uint16_t *)w)[i]);
    return ((const float *)w)[i];
}

/* What the GEMM's inputs become in each precision (TF32 keeps 10 mantissa bits, rounded). */
static float input_as(float a, DevPrecision prec)
{
    if (prec == DEV_FP16) return cpu_f16_to_f32(cpu_f32_to_f16(a));
    if (prec == DEV_BF16) return cpu_bf16_to_f32(devm_f32_to_bf16(a));
    if (prec == DEV_TF32) {
        uint32_t x;
        memcpy(&x, &a, 4);
        x = (x + 0x1000u) & ~0x1fffu;
        memcpy(&a, &x, 4);
    }
    return a;
}

static int fake_gemm(DevStream *s, float *out, const float *a, const void *w, const float *bias, const float *res,
                     int m, int n, int k, DevPrecision prec)
{
    int rc = op(s, "gemm");
    if (rc) return rc;
    /* the inputs as the precision sees them, converted once (test-only code: it may allocate) */
    float *wf = malloc((size_t)n * k * sizeof *wf), *af = malloc((size_t)k * sizeof *af);
    if (!wf || !af) {
        free(wf);
        free(af);
        return dev_fail(s->d, DEV_ENOMEM, "gemm", "no host memory for the fake GEMM's inputs");
    }
    for (size_t i = 0; i < (size_t)n * k; i++) wf[i] = input_as(weight_at(w, i, prec), prec);
    for (int i = 0; i < m; i++) {
        for (int kk = 0; kk < k; kk++) af[kk] = input_as(a[(size_t)i * k + kk], prec);
        for (int j = 0; j < n; j++) {
            const float *wr = wf + (size_t)j * k;
            double acc = 0.0;
            for (int kk = 0; kk < k; kk++) acc += (double)af[kk] * wr[kk];
            float v = (float)acc + (bias ? bias[j] : 0.0f);
            if (res) v += res[(size_t)i * n + j];
            out[(size_t)i * n + j] = v;
        }
    }
    free(wf);
    free(af);
    return DEV_OK;
}

static int fake_gelu(DevStream *s, float *x, size_t n)
{
    int rc = op(s, "gelu");
    if (rc) return rc;
    for (size_t i = 0; i < n; i++) x[i] = devm_gelu(x[i]);
    return DEV_OK;
}

static int fake_layernorm(DevStream *s, float *out, const float *x, const float *res, const float *w, const float *b,
                          int rows, int cols, float eps)
{
    int rc = op(s, "layernorm");
    if (rc) return rc;
    for (int r = 0; r < rows; r++)
        devm_layernorm_row(out + (size_t)r * cols, x + (size_t)r * cols, res ? res + (size_t)r * cols : NULL, w, b,
                           cols, eps);
    return DEV_OK;
}

static int fake_attention(DevStream *s, float *ctx, const float *qkv, const int32_t *cu, int nseq, int T,
                          int heads, int d, float scale)
{
    int rc = op(s, "attention");
    if (rc) return rc;
    (void)T;
    int H = heads * d, ld = 3 * H;
    if (d > 128) return dev_fail(s->d, DEV_EINVAL, "attention", "head size %d (at most 128)", d);
    for (int i = 0; i < nseq; i++) {
        int n = cu[i + 1] - cu[i];
        const float *base = qkv + (size_t)cu[i] * ld;
        for (int t = 0; t < n; t++)
            for (int h = 0; h < heads; h++)
                devm_attention_row(ctx + (size_t)(cu[i] + t) * H + h * d, base + (size_t)t * ld + h * d,
                                   base + H + h * d, base + 2 * H + h * d, ld, n, d, scale, 32);
    }
    return DEV_OK;
}

static int fake_pool(DevStream *s, float *out, const float *x, const int32_t *cu, int nseq, int H, DevPool mode)
{
    int rc = op(s, "pool");
    if (rc) return rc;
    for (int i = 0; i < nseq; i++) {
        float *o = out + (size_t)i * H;
        int n = cu[i + 1] - cu[i];
        const float *xs = x + (size_t)cu[i] * H;
        for (int h = 0; h < H; h++) {
            float acc = mode == DEV_POOL_MEAN ? 0.0f : xs[h];
            for (int t = mode == DEV_POOL_MEAN ? 0 : 1; mode != DEV_POOL_CLS && t < n; t++)
                acc = mode == DEV_POOL_MAX ? fmaxf(acc, xs[(size_t)t * H + h]) : acc + xs[(size_t)t * H + h];
            o[h] = mode == DEV_POOL_MEAN ? acc / (float)n : acc;
        }
    }
    return DEV_OK;
}

static int fake_l2_normalize(DevStream *s, float *x, int rows, int cols)
{
    int rc = op(s, "l2_normalize");
    if (rc) return rc;
    for (int r = 0; r < rows; r++) {
        float *v = x + (size_t)r * cols, ss = 0.0f;
        for (int c = 0; c < cols; c++) ss += v[c] * v[c];
        float inv = 1.0f / fmaxf(sqrtf(ss), 1e-12f);
        for (int c = 0; c < cols; c++) v[c] *= inv;
    }
    return DEV_OK;
}

static const DeviceOps fake_ops = {
    .name = "fake",
    .open = fake_open,
    .close = fake_close,
    .mem_info = fake_mem_info,
    .weights_alloc = fake_weights_alloc,
    .upload = fake_upload,
    .stream_new = fake_stream_new,
    .stream_free = fake_stream_free,
    .arena_alloc_check = fake_arena_alloc_check,
    .copy_h2d = fake_copy,
    .copy_d2h = fake_copy,
    .sync = fake_sync,
    .copy_d2d = fake_copy,
    .seq_offsets = fake_seq_offsets,
    .embed_tokens = fake_embed_tokens,
    .gemm = fake_gemm,
    .gelu = fake_gelu,
    .layernorm = fake_layernorm,
    .attention = fake_attention,
    .pool = fake_pool,
    .l2_normalize = fake_l2_normalize,
};

const DeviceOps *device_fake_ops(void) { return &fake_ops; }
#else
typedef int device_fake_not_built; /* an empty translation unit is not ISO C */
#endif
