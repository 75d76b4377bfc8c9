/* embedder.c: picks the embedder backend named in the config and forwards to its vtable.
 * A backend that is not compiled into this build is an error naming the build option, never
 * a silent fallback. Also the shared post-processing (Matryoshka truncation, L2 norm). */
#include "engine/embedder_impl.h"
#include "kernels/device.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern const EmbedderOps embedder_remote_ops; /* engine/embedder_remote.c */

static const EmbedderOps *find_backend(const char *name)
{
    if (strcmp(name, "native") == 0)
        return &embedder_native_ops;
    if (strcmp(name, "remote") == 0) return &embedder_remote_ops;
#ifdef WEAVER_TEST_BACKENDS
    if (strcmp(name, "test-hash") == 0)
        return &embedder_test_hash_ops;
#endif
    return NULL;
}

Embedder *embedder_open(const EmbedderConfig *cfg, const BatchConfig *batch, char *err, size_t errlen)
{
    const EmbedderOps *ops = find_backend(cfg->backend);
    if (!ops) {
        if (strcmp(cfg->backend, "test-hash") == 0)
            snprintf(err, errlen, "embedder backend \"test-hash\" is not in this build (-DWEAVER_TEST_BACKENDS=ON)");
        else
            snprintf(err, errlen, "embedder backend \"%s\" is not available in this build", cfg->backend);
        return NULL;
    }
    Embedder *e = calloc(1, sizeof *e);
    if (!e) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    e->ops = ops;
    if (ops->open(e, cfg, batch) != 0) {
        snprintf(err, errlen, "embedder %s: %s", ops->name, e->errstr[0] ? e->errstr : "open failed");
        free(e);
        return NULL;
    }
    if (e->token_budget <= 0)
        e->token_budget = batch && batch->token_budget > 0 ? batch->token_budget : EMBEDDER_DEFAULT_TOKEN_BUDGET;
    return e;
}

int embedder_token_budget(const Embedder *e) { return e->token_budget; }

int embedder_check_device(const EmbedderConfig *cfg, char *err, size_t errlen)
{
    int index = -1;
    if (strcmp(cfg->backend, "native") != 0 || !cfg->device || !cfg_parse_device(cfg->device, &index) || index < 0)
        return 0;
    const DeviceOps *ops = embed_native_device_ops();
    if (!ops) {
        snprintf(err, errlen, "embedder.device \"%s\": this build has no CUDA device layer", cfg->device);
        return -1;
    }
    if (ops != device_cuda_ops())
        return 0; /* the test-only fake device: always there */
    char why[512];
    int n = device_cuda_count(why, sizeof why);
    if (n < 0) {
        snprintf(err, errlen, "embedder.device \"%s\": no usable CUDA device: %s", cfg->device, why);
        return -1;
    }
    if (index >= n) {
        snprintf(err, errlen, "embedder.device \"%s\": the CUDA runtime sees %d device%s%s", cfg->device, n,
                 n == 1 ? "" : "s", n ? " (numbered from 0)" : "");
        return -1;
    }
    return 0;
}

void embedder_close(Embedder *e)
{
    if (!e)
        return;
    e->ops->close(e);
    free(e);
}

const EmbedderInfo *embedder_info(const Embedder *e) { return &e->info; }
void embedder_set_cancel(Embedder *e, const atomic_bool *flag) { e->cancel = flag; }
const char *embedder_errstr(const Embedder *e) { return e->errstr; }
EmbedWorkspace *embedder_workspace_new(Embedder *e) { return e->ops->workspace_new(e); }

void embedder_workspace_free(Embedder *e, EmbedWorkspace *ws)
{
    if (e && ws)
        e->ops->workspace_free(ws);
}

int embedder_count_tokens(Embedder *e, EmbedWorkspace *ws, const char *text, size_t len)
{
    return e->ops->count_tokens(e, ws, text, len);
}

int embedder_embed(Embedder *e, EmbedWorkspace *ws, const EmbedText *texts, int n, float *out, int *ntokens,
                   EmbedStatus *status)
{
    return e->ops->embed(e, ws, texts, n, out, ntokens, status);
}

int embed_postprocess(float *vec, int dim, int out_dim, bool normalize)
{
    int d = (out_dim > 0 && out_dim < dim) ? out_dim : dim;
    if (normalize) {
        double ss = 0.0;
        for (int i = 0; i < d; i++)
            ss += (double)vec[i] * vec[i];
        if (ss > 0.0) {
            float inv = (float)(1.0 / sqrt(ss));
            for (int i = 0; i < d; i++)
                vec[i] *= inv;
        }
    }
    return d;
}

static const char HOLE_INSTRUCTION[] = "{instruction}", HOLE_TEXT[] = "{text}";

size_t embed_render_query(char *dst, size_t cap, const char *format, const char *instruction, size_t instruction_len,
                          const char *text, size_t text_len)
{
    const char *f = format && format[0] ? format : EMBED_QUERY_FORMAT;
    size_t at = 0;
    while (*f) {
        const char *p = f;
        size_t n;
        if (!strncmp(f, HOLE_INSTRUCTION, sizeof HOLE_INSTRUCTION - 1)) {
            p = instruction, n = instruction_len;
            f += sizeof HOLE_INSTRUCTION - 1;
        } else if (!strncmp(f, HOLE_TEXT, sizeof HOLE_TEXT - 1)) {
            p = text, n = text_len;
            f += sizeof HOLE_TEXT - 1;
        } else { /* a literal run up to the next brace (or one brace that opens no hole) */
            n = 1 + strcspn(f + 1, "{");
            f += n;
        }
        size_t c = at < cap ? (cap - at < n ? cap - at : n) : 0;
        if (c) memcpy(dst + at, p, c);
        at += n;
    }
    return at;
}

size_t embed_query_len(const char *format, size_t instruction_len, size_t text_len)
{
    return embed_render_query(NULL, 0, format, "", instruction_len, "", text_len);
}
