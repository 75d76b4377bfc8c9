/* model.c: loads llama/qwen2/qwen3/phi3/gemma2/gemma3 weights from GGUF (shapes and types checked, weights left
 * in the mapping) and runs the batched forward pass over a paged fp16 KV cache.
 * Numerics follow llama.cpp's CPU path where it is cheap to (activations quantised to the
 * weight's dot format, fp16 KV, fp16-rounded attention probabilities) so logits agree closely.
 * Must not allocate inside forward_run. */
#include "engine/decode/model.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int errf(char *err, size_t errlen, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return -1;
}

static int hp_u32(const Model *m, const char *suffix, int *out, int required, int def, char *err, size_t errlen) {
    char key[128];
    uint32_t v;
    snprintf(key, sizeof key, "%s.%s", m->arch_name, suffix);
    if (gguf_get_u32(m->gguf, key, &v) == 0) {
        if (v > (1u << 30)) return errf(err, errlen, "model: %s = %u is out of range", key, v);
        *out = (int)v;
        return 0;
    }
    if (required) return errf(err, errlen, "model: metadata key %s is missing or not an integer", key);
    *out = def;
    return 0;
}

static float hp_f32(const Model *m, const char *suffix, float def) {
    char key[128];
    float v;
    snprintf(key, sizeof key, "%s.%s", m->arch_name, suffix);
    return gguf_get_f32(m->gguf, key, &v) == 0 ? v : def;
}

static int get_mat(Model *m, const char *name, int rows, int cols, WMat *w, int optional, char *err, size_t errlen) {
    const GgufTensor *t = gguf_find_tensor(m->gguf, name);
    memset(w, 0, sizeof *w);
    if (!t) return optional ? 1 : errf(err, errlen, "model: tensor %s is missing", name);
    if (!quant_type_supported(t->type))
        return errf(err, errlen, "model: tensor %s has type %s (id %d), which this build cannot run", name,
                    quant_type_name(t->type), t->type);
    if (t->n_dims > 2 || t->ne[0] != cols || t->ne[1] != rows)
        return errf(err, errlen, "model: tensor %s has shape [%lld, %lld], expected [%d, %d]", name,
                    (long long)t->ne[0], (long long)t->ne[1], cols, rows);
    w->data = w->cpu = t->data;
    w->type = t->type;
    w->rows = rows;
    w->cols = cols;
    w->row_bytes = quant_row_bytes(t->type, cols);
    if (w->row_bytes == 0)
        return errf(err, errlen, "model: tensor %s: %d columns do not fit %s blocks", name, cols, quant_type_name(t->type));
    w->dot = quant_dot_fn(t->type, QUANT_ISA_BEST);
    w->mm = quant_matmul_fn(t->type, QUANT_ISA_BEST);
    w->mv = quant_matvec_fn(t->type, QUANT_ISA_BEST);
    w->act = quant_act_type(t->type);
    return 0;
}

/* Hands p (malloc'd, or NULL) to the model, which frees it; NULL when p is NULL or out of memory. */
static void *own(Model *m, void *p) {
    void **list = p ? realloc(m->owned, (size_t)(m->n_owned + 1) * sizeof *list) : NULL;
    if (!list) {
        free(p);
        return NULL;
    }
    m->owned = list;
    m->owned[m->n_owned++] = p;
    return p;
}

/* The CPU kernels' copy of a matrix where they read a packed layout (quant_pack_bytes > 0): one
 * weight stream per step instead of eight rows'. The file's rows stay for the device and dot. */
static int pack_for_cpu(Model *m, WMat *w, char *err, size_t errlen) {
    size_t bytes = quant_pack_bytes(w->type, w->rows, w->cols);
    if (!bytes) return 0;
    void *p = own(m, aligned_alloc(64, (bytes + 63) & ~(size_t)63));
    if (!p) return errf(err, errlen, "model: out of memory packing a %d x %d matrix", w->rows, w->cols);
    quant_pack_rows(w->type, p, w->data, w->rows, w->cols);
    w->cpu = p;
    gguf_release(m->gguf, w->data, (size_t)w->rows * w->row_bytes); /* the copy is what runs: don't hold both */
    return 0;
}

/* A vector tensor (norm weight, bias) as f32: pointed at when already F32, else dequantised. */
static int get_vec(Model *m, const char *name, int n, const float **out, int optional, char *err, size_t errlen) {
    const GgufTensor *t = gguf_find_tensor(m->gguf, name);
    *out = NULL;
    if (!t) return optional ? 1 : errf(err, errlen, "model: tensor %s is missing", name);
    if (t->ne[0] != n || t->ne[1] != 1 || t->ne[2] != 1 || t->ne[3] != 1)
        return errf(err, errlen, "model: tensor %s has %lld elements, expected %d", name, (long long)t->ne[0], n);
    if (t->type == QT_F32 && ((uintptr_t)t->data % 4) == 0) {
        *out = t->data;
        return 0;
    }
    if (!quant_type_supported(t->type) || quant_row_bytes(t->type, n) == 0)
        return errf(err, errlen, "model: tensor %s has unusable type %s", name, quant_type_name(t->type));
    float *buf = own(m, malloc((size_t)n * sizeof *buf));
    if (!buf) return errf(err, errlen, "model: out of memory");
    quant_dequant_row(t->type, t->data, buf, n);
    *out = buf;
    return 0;
}

/* Consecutive row ranges of one tensor as separate matrices (phi3's fused QKV and gate-up):
 * rows are independent dot products, so a slice computes exactly what the fused matmul does. */
static int get_mat_split(Model *m, const char *name, int cols, WMat **parts, const int *rows, int n, char *err,
                         size_t errlen) {
    int total = 0;
    for (int i = 0; i < n; i++) total += rows[i];
    WMat whole;
    if (get_mat(m, name, total, cols, &whole, 0, err, errlen)) return -1;
    for (int i = 0, r0 = 0; i < n; r0 += rows[i++]) {
        *parts[i] = whole;
        parts[i]->data = parts[i]->cpu = (const uint8_t *)whole.data + (size_t)r0 * whole.row_bytes;
        parts[i]->rows = rows[i];
    }
    return 0;
}

/* phi3: fused attn_qkv (or separate Q/K/V), ffn_up = [gate; up] (SwiGLU gates with the first half). */
static int phi3_layer(Model *m, int il, ModelLayer *L, char *err, size_t errlen) {
    const ModelHparams *hp = &m->hp;
    int qd = hp->n_head * hp->head_dim, kvd = hp->n_head_kv * hp->head_dim;
    char n[96];
    snprintf(n, sizeof n, "blk.%d.attn_qkv.weight", il);
    if (gguf_find_tensor(m->gguf, n)) {
        WMat *qkv[3] = {&L->wq, &L->wk, &L->wv};
        if (get_mat_split(m, n, hp->n_embd, qkv, (const int[]){qd, kvd, kvd}, 3, err, errlen)) return -1;
    } else {
        const char *nm[3] = {"attn_q", "attn_k", "attn_v"};
        WMat *w[3] = {&L->wq, &L->wk, &L->wv};
        for (int j = 0; j < 3; j++) {
            snprintf(n, sizeof n, "blk.%d.%s.weight", il, nm[j]);
            if (get_mat(m, n, j ? kvd : qd, hp->n_embd, w[j], 0, err, errlen)) return -1;
        }
    }
    snprintf(n, sizeof n, "blk.%d.ffn_up.weight", il);
    WMat *gu[2] = {&L->wgate, &L->wup};
    return get_mat_split(m, n, hp->n_embd, gu, (const int[]){hp->n_ff, hp->n_ff}, 2, err, errlen);
}

static void gelu_table(uint16_t *t);

/* Per-architecture hyperparameters beyond the llama set, with llama.cpp's defaults. */
static int arch_hparams(Model *m, char *err, size_t errlen) {
    ModelHparams *hp = &m->hp;
    if (m->arch == ARCH_PHI3) {
        /* LongRoPE (Phi-3 128k, 3.5, 4-mini): long or short factors by the context
         * (model_set_ctx); rope.scaling.attn_factor is in rope_mscale. A rope_freqs tensor (not
         * in any phi3 file llama.cpp loads) would take precedence, as in its other models. */
        if (!m->rope_freqs &&
            (get_vec(m, "rope_factors_long.weight", hp->rope_dim / 2, &m->rope_long, 1, err, errlen) < 0 ||
             get_vec(m, "rope_factors_short.weight", hp->rope_dim / 2, &m->rope_short, 1, err, errlen) < 0))
            return -1;
        model_set_ctx(m, hp->n_ctx_train); /* llama.cpp's n_ctx = 0; the caller sets the real one */
        hp->q_scale = 1.0f / sqrtf((float)hp->head_dim);
    }
    if (m->arch == ARCH_GEMMA2 || m->arch == ARCH_GEMMA3) {
        int g3 = m->arch == ARCH_GEMMA3;
        /* llama.cpp's type by depth: the 27B (gemma2 46 layers, gemma3 62) scales by n_embd / n_head */
        int big = hp->n_layer == (g3 ? 62 : 46);
        hp->q_scale = 1.0f / sqrtf((float)(big ? hp->n_embd / hp->n_head : hp->head_dim));
        hp->embd_scale = sqrtf((float)hp->n_embd);
        hp->attn_softcap = g3 ? 0.0f : hp_f32(m, "attn_logit_softcapping", 50.0f);
        hp->final_softcap = hp_f32(m, "final_logit_softcapping", g3 ? 0.0f : 30.0f);
        /* gemma2: a window always (4096 by default); gemma3: only when the file gives one */
        if (hp_u32(m, "attention.sliding_window", &hp->n_swa, 0, g3 ? 0 : 4096, err, errlen) ||
            hp_u32(m, "attention.sliding_window_pattern", &hp->swa_pattern, 0, g3 ? 6 : 2, err, errlen))
            return -1;
        if ((!g3 && hp->n_swa < 1) || hp->swa_pattern < 1 || hp->attn_softcap < 0 || hp->final_softcap < 0 ||
            (!g3 && hp->attn_softcap == 0))
            return errf(err, errlen, "model: %s sliding window %d / pattern %d / soft caps %g, %g are unusable",
                        m->arch_name, hp->n_swa, hp->swa_pattern, hp->attn_softcap, hp->final_softcap);
        /* sliding-window layers: gemma3 rotates them with base 10000, unscaled, unless told;
         * gemma2 as the global layers unless told */
        hp->rope_base_swa = hp_f32(m, "rope.freq_base_swa", g3 ? 10000.0f : hp->rope_base);
        hp->rope_freq_scale_swa = g3 ? 1.0f : hp->rope_freq_scale;
        hp->rope_swa = hp->n_swa > 0 && (hp->rope_base_swa != hp->rope_base || hp->rope_freq_scale_swa != hp->rope_freq_scale);
        hp->ffn_gelu = 1;
        m->gelu16 = malloc(65536 * sizeof *m->gelu16);
        if (!m->gelu16) return errf(err, errlen, "model: out of memory");
        gelu_table(m->gelu16);
    }
    return 0;
}

/* YaRN's correction dimension for a wavelength of n_rot turns over the original context
 * (ggml_rope_yarn_corr_dim, evaluated in the same float operations). */
static float yarn_corr_dim(int n_dims, int n_ctx_orig, float n_rot, float base) {
    const float pi = 3.14159265358979323846f;
    return (float)n_dims * logf((float)n_ctx_orig / (n_rot * 2.0f * pi)) / (2.0f * logf(base));
}

/* <arch>.rope.scaling.*: the scale, YaRN's ramp and the cos/sin multiplier, computed in
 * llama.cpp 0.3.36's float operations (llama_context's yarn_attn_factor, then ggml's rope). Types:
 * none, linear, longrope (as linear: the factors are tensors), yarn (llama, qwen2, qwen3).
 * As llama.cpp does for these architectures, the yarn_ext/attn/beta keys are not read: ext 1,
 * beta_fast 32, beta_slow 1. */
static int rope_scaling(Model *m, char *err, size_t errlen) {
    ModelHparams *hp = &m->hp;
    char key[128];
    GgufStr st = {"linear", 6};
    snprintf(key, sizeof key, "%s.rope.scaling.type", m->arch_name);
    gguf_get_str(m->gguf, key, &st);
#define ST_IS(s) (st.len == strlen(s) && memcmp(st.ptr, s, st.len) == 0)
    int yarn = ST_IS("yarn");
    if (!ST_IS("none") && !ST_IS("linear") && !ST_IS("longrope") && !yarn)
        return errf(err, errlen, "model: rope scaling '%.*s' is not supported (none, linear, longrope, yarn are)",
                    (int)st.len, st.ptr);
    if (yarn && m->arch != ARCH_LLAMA && m->arch != ARCH_QWEN2 && m->arch != ARCH_QWEN3)
        return errf(err, errlen, "model: rope scaling 'yarn' is not supported for %s (llama, qwen2, qwen3 only)",
                    m->arch_name);
    float factor = hp_f32(m, "rope.scaling.factor", 0.0f);
    hp->rope_freq_scale = ST_IS("none") || factor == 0.0f ? 1.0f : 1.0f / factor;
#undef ST_IS
    float attn = hp_f32(m, "rope.scaling.attn_factor", 1.0f);
    if (!(factor >= 0 && factor < 1e6f) || !(attn > 0 && attn < 1e6f))
        return errf(err, errlen, "model: rope.scaling factor %g / attn_factor %g are unusable", factor, attn);
    if (hp_u32(m, "rope.scaling.original_context_length", &hp->n_ctx_orig, 0, 0, err, errlen)) return -1;
    if (hp->n_ctx_orig == 0) hp->n_ctx_orig = hp->n_ctx_train;
    hp->rope_mscale = attn;
    if (yarn) {
        if (hp->n_ctx_orig < 1) return errf(err, errlen, "model: yarn needs rope.scaling.original_context_length");
        hp->rope_ext_factor = 1.0f;
        float fac = 1.0f / hp->rope_freq_scale;
        /* llama_context: its mscale, then the cancelling of the one ggml's rope applies (their
         * product rounds to 1 for every common factor; kept for the others) */
        float ms = fac <= 1.0f ? 1.0f : logf(fac) * 0.1f + 1.0f;
        ms *= 1.0f / (1.0f + 0.1f * logf(fac));
        /* ggml's rope: the magnitude correction, which its build fuses into one fma */
        hp->rope_mscale = ms * attn * fmaf(0.1f, logf(1.0f / hp->rope_freq_scale), 1.0f);
        float lo = floorf(yarn_corr_dim(hp->rope_dim, hp->n_ctx_orig, 32.0f, hp->rope_base));
        float hi = ceilf(yarn_corr_dim(hp->rope_dim, hp->n_ctx_orig, 1.0f, hp->rope_base));
        hp->rope_corr[0] = lo > 0 ? lo : 0;
        hp->rope_corr[1] = hi < (float)(hp->rope_dim - 1) ? hi : (float)(hp->rope_dim - 1);
    }
    return 0;
}

void model_set_ctx(Model *m, int n_ctx) {
    if (!m->rope_long && !m->rope_short) return;
    long padded = ((long)n_ctx + 255) / 256 * 256; /* llama.cpp's n_ctx_seq with one sequence */
    m->rope_freqs = padded > m->hp.n_ctx_orig ? m->rope_long : m->rope_short;
}

Model *model_load(GgufFile *f, char *err, size_t errlen) {
    Model *m = calloc(1, sizeof *m);
    if (!m) {
        gguf_close(f);
        errf(err, errlen, "model: out of memory");
        return NULL;
    }
    m->gguf = f;
    GgufStr arch;
    if (gguf_get_str(f, "general.architecture", &arch) || arch.len == 0 || arch.len >= sizeof m->arch_name) {
        errf(err, errlen, "model: general.architecture is missing");
        goto fail;
    }
    memcpy(m->arch_name, arch.ptr, arch.len);
    if (strcmp(m->arch_name, "llama") == 0)
        m->arch = ARCH_LLAMA;
    else if (strcmp(m->arch_name, "qwen2") == 0)
        m->arch = ARCH_QWEN2;
    else if (strcmp(m->arch_name, "qwen3") == 0)
        m->arch = ARCH_QWEN3;
    else if (strcmp(m->arch_name, "phi3") == 0)
        m->arch = ARCH_PHI3;
    else if (strcmp(m->arch_name, "gemma2") == 0)
        m->arch = ARCH_GEMMA2;
    else if (strcmp(m->arch_name, "gemma3") == 0)
        m->arch = ARCH_GEMMA3;
    else {
        errf(err, errlen, "model: architecture '%s' is not supported (llama, qwen2, qwen3, phi3, gemma2, gemma3 are)",
             m->arch_name);
        goto fail;
    }
    ModelHparams *hp = &m->hp;
    if (hp_u32(m, "block_count", &hp->n_layer, 1, 0, err, errlen) ||
        hp_u32(m, "embedding_length", &hp->n_embd, 1, 0, err, errlen) ||
        hp_u32(m, "feed_forward_length", &hp->n_ff, 1, 0, err, errlen) ||
        hp_u32(m, "attention.head_count", &hp->n_head, 1, 0, err, errlen) ||
        hp_u32(m, "attention.head_count_kv", &hp->n_head_kv, 0, hp->n_head, err, errlen) ||
        hp_u32(m, "context_length", &hp->n_ctx_train, 0, 2048, err, errlen))
        goto fail;
    if (hp->n_layer < 1 || hp->n_embd < 1 || hp->n_head < 1 || hp->n_head_kv < 1 || hp->n_ff < 1 ||
        hp->n_head % hp->n_head_kv) {
        errf(err, errlen, "model: inconsistent hyperparameters (layers %d, embd %d, heads %d/%d, ff %d)", hp->n_layer,
             hp->n_embd, hp->n_head, hp->n_head_kv, hp->n_ff);
        goto fail;
    }
    /* Every layer has several tensors of its own: a block_count beyond the tensor count is a lie,
     * refused before the layer table is sized from it (a 12 KiB file could ask for gigabytes). */
    if ((uint64_t)hp->n_layer > f->n_tensors) {
        errf(err, errlen, "model: block_count %d is more than the file's %llu tensors", hp->n_layer,
             (unsigned long long)f->n_tensors);
        goto fail;
    }
    if (hp_u32(m, "attention.key_length", &hp->head_dim, 0, hp->n_embd / hp->n_head, err, errlen) ||
        hp_u32(m, "rope.dimension_count", &hp->rope_dim, 0, hp->head_dim, err, errlen))
        goto fail;
    if (hp->head_dim < 2 || hp->head_dim % 2 || hp->rope_dim > hp->head_dim || hp->rope_dim % 2) {
        errf(err, errlen, "model: head_dim %d / rope dims %d are unusable", hp->head_dim, hp->rope_dim);
        goto fail;
    }
    hp->rope_neox = m->arch != ARCH_LLAMA;
    hp->rope_base = hp_f32(m, "rope.freq_base", 10000.0f);
    hp->eps = hp_f32(m, "attention.layer_norm_rms_epsilon", 1e-5f);
    if (rope_scaling(m, err, errlen)) goto fail;
    const GgufTensor *te = gguf_find_tensor(f, "token_embd.weight");
    if (!te) {
        errf(err, errlen, "model: tensor token_embd.weight is missing");
        goto fail;
    }
    hp->n_vocab = (int)te->ne[1];
    if (te->ne[1] > (1 << 24)) {
        errf(err, errlen, "model: vocabulary of %lld is too large", (long long)te->ne[1]);
        goto fail;
    }
    if (get_mat(m, "token_embd.weight", hp->n_vocab, hp->n_embd, &m->tok_embd, 0, err, errlen)) goto fail;
    /* gemma2's head is always the embedding matrix (llama.cpp ignores an output.weight there) */
    int r = m->arch == ARCH_GEMMA2 ? 1 : get_mat(m, "output.weight", hp->n_vocab, hp->n_embd, &m->output, 1, err, errlen);
    if (r < 0) goto fail;
    if (r == 1) m->output = m->tok_embd;
    if (get_vec(m, "output_norm.weight", hp->n_embd, &m->out_norm, 0, err, errlen) < 0) goto fail;
    if (get_vec(m, "rope_freqs.weight", hp->rope_dim / 2, &m->rope_freqs, 1, err, errlen) < 0) goto fail;
    if (arch_hparams(m, err, errlen)) goto fail;
    m->layers = calloc((size_t)hp->n_layer, sizeof *m->layers);
    if (!m->layers) {
        errf(err, errlen, "model: out of memory");
        goto fail;
    }
    int qd = hp->n_head * hp->head_dim, kvd = hp->n_head_kv * hp->head_dim;
    for (int i = 0; i < hp->n_layer; i++) {
        ModelLayer *L = &m->layers[i];
        char n[96];
#define NM(s) (snprintf(n, sizeof n, "blk.%d." s, i), n)
        if (get_vec(m, NM("attn_norm.weight"), hp->n_embd, &L->attn_norm, 0, err, errlen) < 0 ||
            get_vec(m, NM("ffn_norm.weight"), hp->n_embd, &L->ffn_norm, 0, err, errlen) < 0 ||
            get_mat(m, NM("attn_output.weight"), hp->n_embd, qd, &L->wo, 0, err, errlen) ||
            get_mat(m, NM("ffn_down.weight"), hp->n_embd, hp->n_ff, &L->wdown, 0, err, errlen))
            goto fail;
        if (m->arch == ARCH_PHI3) {
            if (phi3_layer(m, i, L, err, errlen)) goto fail;
        } else if (get_mat(m, NM("attn_q.weight"), qd, hp->n_embd, &L->wq, 0, err, errlen) ||
                   get_mat(m, NM("attn_k.weight"), kvd, hp->n_embd, &L->wk, 0, err, errlen) ||
                   get_mat(m, NM("attn_v.weight"), kvd, hp->n_embd, &L->wv, 0, err, errlen) ||
                   get_mat(m, NM("ffn_gate.weight"), hp->n_ff, hp->n_embd, &L->wgate, 0, err, errlen) ||
                   get_mat(m, NM("ffn_up.weight"), hp->n_ff, hp->n_embd, &L->wup, 0, err, errlen))
            goto fail;
        if (m->arch == ARCH_GEMMA2 || m->arch == ARCH_GEMMA3) {
            if (get_vec(m, NM("post_attention_norm.weight"), hp->n_embd, &L->post_attn_norm, 0, err, errlen) < 0 ||
                get_vec(m, NM("post_ffw_norm.weight"), hp->n_embd, &L->post_ffn_norm, 0, err, errlen) < 0)
                goto fail;
            L->swa = hp->n_swa > 0 && i % hp->swa_pattern < hp->swa_pattern - 1;
        }
        int opt = m->arch != ARCH_QWEN2;
        if (get_vec(m, NM("attn_q.bias"), qd, &L->bq, opt, err, errlen) < 0 ||
            get_vec(m, NM("attn_k.bias"), kvd, &L->bk, opt, err, errlen) < 0 ||
            get_vec(m, NM("attn_v.bias"), kvd, &L->bv, opt, err, errlen) < 0)
            goto fail;
        opt = m->arch != ARCH_QWEN3 && m->arch != ARCH_GEMMA3;
        if (get_vec(m, NM("attn_q_norm.weight"), hp->head_dim, &L->q_norm, opt, err, errlen) < 0 ||
            get_vec(m, NM("attn_k_norm.weight"), hp->head_dim, &L->k_norm, opt, err, errlen) < 0)
            goto fail;
#undef NM
    }
    for (int i = 0; i < hp->n_layer; i++) {
        ModelLayer *L = &m->layers[i];
        WMat *ws[7] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->wgate, &L->wup, &L->wdown};
        for (int j = 0; j < 7; j++)
            if (pack_for_cpu(m, ws[j], err, errlen)) goto fail;
    }
    if (pack_for_cpu(m, &m->output, err, errlen)) goto fail;
    return m;
fail:
    model_free(m);
    return NULL;
}

void model_free(Model *m) {
    if (!m) return;
    free(m->gelu16);
    for (int i = 0; i < m->n_owned; i++) free(m->owned[i]);
    free(m->owned);
    free(m->layers);
    gguf_close(m->gguf);
    free(m);
}

/* ---- KV cache ---- */

int kv_init(KvCache *kv, const Model *m, int n_tokens, char *err, size_t errlen) {
    int pages_ok = kv_init_pages(kv, n_tokens) == 0;
    kv->kv_dim = m->hp.n_head_kv * m->hp.head_dim;
    kv->layer_stride = (size_t)kv->n_pages * KV_PAGE * (size_t)kv->kv_dim;
    size_t total = kv->layer_stride * (size_t)m->hp.n_layer;
    kv->k = calloc(total, sizeof *kv->k);
    kv->v = calloc(total, sizeof *kv->v);
    if (!pages_ok || !kv->k || !kv->v) {
        kv_free(kv);
        return errf(err, errlen, "decoder: cannot allocate a KV cache of %d tokens (%.1f MiB)", n_tokens,
                    2.0 * (double)total * 2 / 1048576.0);
    }
    return 0;
}

int kv_init_pages(KvCache *kv, int n_tokens) {
    memset(kv, 0, sizeof *kv);
    kv->n_pages = (n_tokens + KV_PAGE - 1) / KV_PAGE;
    kv->free_list = malloc((size_t)(kv->n_pages ? kv->n_pages : 1) * sizeof *kv->free_list);
    if (!kv->free_list) return -1;
    for (int i = 0; i < kv->n_pages; i++) kv->free_list[i] = kv->n_pages - 1 - i;
    kv->n_free = kv->n_pages;
    return 0;
}

void kv_free(KvCache *kv) {
    free(kv->k);
    free(kv->v);
    free(kv->free_list);
    memset(kv, 0, sizeof *kv);
}

int kv_alloc_page(KvCache *kv) { return kv->n_free > 0 ? kv->free_list[--kv->n_free] : -1; }
void kv_release_page(KvCache *kv, int page) { kv->free_list[kv->n_free++] = page; }

/* ---- forward pass ---- */

enum { MM_MAX = 3 };

typedef struct MMPart {
    const WMat *w;
    float *out;
    const void *act;
    size_t act_stride;
    const void *tile; /* prepared activation for w->mm, or NULL */
    const void *vec;  /* prepared activation for w->mv (one token), or NULL */
} MMPart;

/* Rows [r0, r1) of part `part`. */
typedef struct MMChunk {
    int part, r0, r1;
} MMChunk;
enum { MM_PLAN_MAX = 1024 }; /* grows as threads x log(rows): 656 for 64 threads on a 152k vocabulary */

struct Forward {
    const Model *m;
    Pool *pool;
    int max_tokens, max_ctx;
    float *x, *xn, *q, *k, *v, *att, *gate, *up, *scores, *rope_cs, *pv_acc;
    uint16_t *q16, *p16;
    const uint16_t **blk;
    int blk_stride;
    uint8_t *gemv;        /* per token: its sequence has only this token in the batch */
    uint8_t *tile[MM_MAX]; /* activations prepared for the tile kernels, per slot */
    uint8_t *act[MM_MAX];
    size_t act_stride_max;
    float *gather;
    /* current region */
    MMPart mm[MM_MAX];
    int n_mm, ntok;
    MMChunk plan[MM_PLAN_MAX]; /* a single-token region's chunks (mm_plan) */
    int n_plan;
    const BatchTok *toks;
    const KvCache *kv;
    int layer;
    /* token-parallel regions: the quantiser's input and its per-slot jobs */
    const float *qsrc;
    int n_qjobs, qjob[MM_MAX];
    KvCache *kv_w;
    int rn_add;          /* resid_norm_region: x += xn first */
    const float *rn_w;   /* then xn = rmsnorm(x) with these weights (NULL: no norm) */
    const float *rn_post; /* before the add: xn = rmsnorm(xn) with these (gemma2/3), or NULL */
};

/* Tokens [t0, t1) of chunk `chunk` of `nchunks` over f->ntok. */
static void tok_range(const Forward *f, int chunk, int nchunks, int *t0, int *t1) {
    *t0 = (int)((long)f->ntok * chunk / nchunks);
    *t1 = (int)((long)f->ntok * (chunk + 1) / nchunks);
}

/* Chunks for a per-token region: each token's work is independent and identical whichever
 * thread runs it, so splitting never changes a number. */
static int tok_chunks(const Forward *f) { return f->ntok < 8 ? f->ntok : 8; }

Pool *forward_pool(Forward *f) { return f->pool; }

Forward *forward_create(const Model *m, int max_tokens, int max_ctx, int n_threads, char *err, size_t errlen) {
    Forward *f = calloc(1, sizeof *f);
    if (!f) {
        errf(err, errlen, "decoder: out of memory");
        return NULL;
    }
    const ModelHparams *hp = &m->hp;
    f->m = m;
    f->max_tokens = max_tokens;
    f->max_ctx = max_ctx;
    if (n_threads < 1) n_threads = (int)sysconf(_SC_NPROCESSORS_ONLN);
    f->pool = pool_create(n_threads); /* pool_create takes a failed sysconf (-1) as 1 */
    size_t B = (size_t)max_tokens;
    int qd = hp->n_head * hp->head_dim, kvd = hp->n_head_kv * hp->head_dim;
    int widest = hp->n_embd > qd ? hp->n_embd : qd;
    if (hp->n_ff > widest) widest = hp->n_ff;
    /* Widest quantised activation row: Q8_1/Q8_0 36/32 bytes per element, Q8_K 292/256, f32 4. */
    f->act_stride_max = ((size_t)widest * 4 + 63) & ~(size_t)63;
    f->x = malloc(B * hp->n_embd * sizeof(float));
    f->xn = malloc(B * hp->n_embd * sizeof(float));
    f->gather = malloc(B * hp->n_embd * sizeof(float));
    f->q = malloc(B * qd * sizeof(float));
    f->k = malloc(B * kvd * sizeof(float));
    f->v = malloc(B * kvd * sizeof(float));
    f->att = malloc(B * qd * sizeof(float));
    f->gate = malloc(B * hp->n_ff * sizeof(float));
    f->up = malloc(B * hp->n_ff * sizeof(float));
    f->q16 = malloc(B * qd * sizeof(uint16_t));
    f->rope_cs = malloc(2 * B * hp->rope_dim * sizeof(float)); /* global, then sliding-window layers */
    size_t nth = (size_t)pool_size(f->pool);
    f->scores = malloc(nth * (size_t)max_ctx * sizeof(float));
    f->p16 = malloc(nth * (size_t)max_ctx * sizeof(uint16_t));
    f->blk_stride = 2 * (max_ctx / KV_PAGE + 1); /* V blocks, then K blocks */
    f->blk = malloc(nth * (size_t)f->blk_stride * sizeof *f->blk);
    f->pv_acc = malloc(nth * 64 * (size_t)hp->head_dim * sizeof(float));
    f->gemv = malloc(B);

    int ok = f->pool && f->x && f->xn && f->gather && f->q && f->k && f->v && f->att && f->gate && f->up && f->q16 &&
             f->rope_cs && f->scores && f->p16 && f->blk && f->pv_acc && f->gemv;
    for (int i = 0; i < MM_MAX; i++) {
        f->act[i] = aligned_alloc(64, B * f->act_stride_max);
        size_t tb = quant_matmul_tile_bytes(widest, max_tokens), vb = quant_matvec_bytes(widest);
        f->tile[i] = malloc(tb > vb ? tb : vb);
        ok = ok && f->act[i] && f->tile[i];
    }
    if (!ok) {
        forward_free(f);
        errf(err, errlen, "decoder: cannot allocate forward buffers for %d tokens", max_tokens);
        return NULL;
    }
    return f;
}

void forward_free(Forward *f) {
    if (!f) return;
    pool_free(f->pool);
    free(f->x); free(f->xn); free(f->gather); free(f->q); free(f->k); free(f->v); free(f->att);
    free(f->gate); free(f->up); free(f->q16); free(f->rope_cs); free(f->scores);
    free(f->p16); free(f->blk); free(f->pv_acc); free(f->gemv);
    for (int i = 0; i < MM_MAX; i++) {
        free(f->act[i]);
        free(f->tile[i]);
    }
    free(f);
}

static void rmsnorm(float *y, const float *x, const float *w, int n, float eps) {
    double s = 0.0;
    for (int i = 0; i < n; i++) {
        float sq = x[i] * x[i]; /* squared in float, summed in double: llama.cpp's order */
        s += sq;
    }
    float scale = 1.0f / sqrtf((float)(s / n) + eps);
    for (int i = 0; i < n; i++) y[i] = (x[i] * scale) * w[i];
}

/* Rows per chunk of a multi-token matmul region: small enough for two threads to balance on a
 * loaded machine, large enough that claiming a chunk costs nothing next to it. */
enum { MM_CHUNK_ROWS = 32 };
static int mm_chunks(const MMPart *p) { return (p->w->rows + MM_CHUNK_ROWS - 1) / MM_CHUNK_ROWS; }

/* A single-token step (one activation row) does 1/16 of a tile's work per row, and claiming a
 * chunk costs two contended atomics (32-row chunks made two threads slower than one), so its
 * chunks shrink as the region runs out (guided scheduling): each takes 1 / (2 x threads) of
 * what is left (a quarter for two), in whole groups of eight rows (the matvec's), never under
 * MM_MIN_ROWS.
 * Few claims, and the threads end a region at most one small chunk apart (even chunks of an
 * eighth of the LM head left one thread waiting for up to 3 MB of another's weights). */
enum { MM_MIN_ROWS = 16 };
static void mm_plan(Forward *f) {
    int left = 0, nt = pool_size(f->pool);
    for (int i = 0; i < f->n_mm; i++) left += f->mm[i].w->rows;
    f->n_plan = 0;
    for (int i = 0; i < f->n_mm; i++)
        for (int r0 = 0, rows = f->mm[i].w->rows; r0 < rows;) {
            int take = (left / (2 * nt) + 7) & ~7;
            if (take < MM_MIN_ROWS) take = MM_MIN_ROWS;
            /* the plan's last slots take whatever is left of the region */
            if (f->n_plan == MM_PLAN_MAX - (f->n_mm - i)) take = rows - r0;
            if (take > rows - r0) take = rows - r0;
            f->plan[f->n_plan++] = (MMChunk){.part = i, .r0 = r0, .r1 = r0 + take};
            r0 += take;
            left -= take;
        }
}

static void mm_region(void *ctx, int chunk, int nchunks, int thread) {
    Forward *f = ctx;
    (void)nchunks;
    (void)thread;
    const MMPart *p;
    int r0, r1;
    if (f->ntok == 1) {
        const MMChunk *c = &f->plan[chunk];
        p = &f->mm[c->part];
        r0 = c->r0;
        r1 = c->r1;
    } else {
        int i = 0;
        while (chunk >= mm_chunks(&f->mm[i])) chunk -= mm_chunks(&f->mm[i++]);
        p = &f->mm[i];
        r0 = chunk * MM_CHUNK_ROWS;
        r1 = r0 + MM_CHUNK_ROWS < p->w->rows ? r0 + MM_CHUNK_ROWS : p->w->rows;
    }
    int rows = p->w->rows;
    if (p->vec)
        p->w->mv(p->out, p->w->cpu, p->w->row_bytes, p->w->cols, r0, r1, p->vec);
    else if (p->tile)
        p->w->mm(p->out, (size_t)rows, p->w->cpu, p->w->row_bytes, p->w->cols, r0, r1, p->tile, f->ntok);
    else
        quant_matmul_rows(p->out, (size_t)rows, p->w->data, p->w->type, p->w->cols, r0, r1, p->act, p->act_stride,
                          f->ntok, p->w->dot);
}

/* Multiplies the activation rows src[ntok][cols] by up to three matrices sharing the input. */
static void quant_region(void *ctx, int chunk, int nchunks, int thread) {
    Forward *f = ctx;
    (void)thread;
    int t0, t1;
    tok_range(f, chunk, nchunks, &t0, &t1);
    for (int j = 0; j < f->n_qjobs; j++) {
        const WMat *w = f->mm[f->qjob[j]].w;
        size_t stride = quant_row_bytes(w->act, w->cols);
        for (int t = t0; t < t1; t++)
            quant_quantize_act(w->act, f->qsrc + (size_t)t * w->cols, f->act[f->qjob[j]] + (size_t)t * stride, w->cols);
    }
}

static void matmul_group(Forward *f, const float *src, int ntok, const WMat **ws, float **outs, int n) {
    int slot_of[MM_MAX];
    f->n_qjobs = 0;
    for (int i = 0; i < n; i++) {
        int shared = 0;
        for (int j = 0; j < i && !shared; j++) shared = ws[j]->act == ws[i]->act && ws[j]->cols == ws[i]->cols;
        if (!shared) {
            f->mm[i].w = ws[i];
            f->qjob[f->n_qjobs++] = i;
        }
    }
    f->qsrc = src;
    f->ntok = ntok;
    pool_run(f->pool, quant_region, f, tok_chunks(f));
    for (int i = 0; i < n; i++) {
        const WMat *w = ws[i];
        size_t stride = quant_row_bytes(w->act, w->cols);
        int slot = i;
        for (int j = 0; j < i; j++)
            if (ws[j]->act == w->act && ws[j]->cols == w->cols) {
                slot = slot_of[j];
                break;
            }
        slot_of[i] = slot; /* slot == i: quantised above (quant_region) */
        const void *tile = NULL, *vec = NULL;
        /* one prepared tile or vector per slot and weight type (Q4_1 and Q8_0 never share a slot) */
        if (w->mv && ntok == 1) {
            if (slot == i || !f->mm[slot].vec) quant_matvec_prep(w->type, f->tile[i], f->act[slot], w->cols);
            vec = slot == i || !f->mm[slot].vec ? f->tile[i] : f->mm[slot].vec;
        } else if (w->mm && ntok > 1) {
            if (slot == i || !f->mm[slot].tile)
                quant_matmul_prep(w->type, f->tile[i], f->act[slot], stride, ntok, w->cols);
            tile = slot == i || !f->mm[slot].tile ? f->tile[i] : f->mm[slot].tile;
        }
        f->mm[i] = (MMPart){.w = w, .out = outs[i], .act = f->act[slot], .act_stride = stride, .tile = tile, .vec = vec};
    }
    f->n_mm = n;
    f->ntok = ntok;
    int chunks = 0;
    if (ntok == 1) {
        mm_plan(f);
        chunks = f->n_plan;
    } else
        for (int i = 0; i < n; i++) chunks += mm_chunks(&f->mm[i]);
    pool_run(f->pool, mm_region, f, chunks);
}

static void rope_row(const Model *m, int pos, float base, float freq_scale, float *cs) {
    const ModelHparams *hp = &m->hp;
    float theta_scale = powf(base, -2.0f / (float)hp->rope_dim);
    float theta = (float)pos;
    for (int i = 0; i < hp->rope_dim / 2; i++) {
        float ff = m->rope_freqs ? m->rope_freqs[i] : 1.0f;
        float ext = theta / ff, th = freq_scale * ext;
        if (hp->rope_ext_factor != 0.0f) { /* YaRN: extrapolated below corr[0], interpolated above corr[1] */
            float y = ((float)i - hp->rope_corr[0]) / fmaxf(0.001f, hp->rope_corr[1] - hp->rope_corr[0]);
            float mix = (1.0f - fminf(1.0f, fmaxf(0.0f, y))) * hp->rope_ext_factor;
            th = fmaf(th, 1.0f - mix, ext * mix); /* fused as llama.cpp's build does */
        }
        cs[2 * i] = cosf(th) * hp->rope_mscale;
        cs[2 * i + 1] = sinf(th) * hp->rope_mscale;
        theta *= theta_scale;
    }
}

/* The global layers' rotation (the device forward caches it per position). */
void model_rope_row(const Model *m, int pos, float *cs) {
    rope_row(m, pos, m->hp.rope_base, m->hp.rope_freq_scale, cs);
}

static void rope_cache(const Forward *f, const BatchTok *toks, int n, float base, float freq_scale, float *out) {
    for (int t = 0; t < n; t++) rope_row(f->m, toks[t].pos, base, freq_scale, out + (size_t)t * f->m->hp.rope_dim);
}

/* fmaf is a library call where the build's baseline lacks FMA (12 heads x 64 of them a layer):
 * a clone for FMA CPUs inlines it. Fused either way, so the same bits. */
__attribute__((target_clones("fma", "default"))) static void rope_apply(const ModelHparams *hp, float *x,
                                                                          const float *cs) {
    int half = hp->rope_dim / 2;
    for (int i = 0; i < half; i++) {
        float c = cs[2 * i], s = cs[2 * i + 1];
        int a = hp->rope_neox ? i : 2 * i, b = hp->rope_neox ? i + half : 2 * i + 1;
        float x0 = x[a], x1 = x[b];
        /* Fused as llama.cpp's build contracts them: one rounding for x0*c, one for x1*s. */
        x[a] = fmaf(x0, c, -(x1 * s));
        x[b] = fmaf(s, x0, x1 * c);
    }
}

/* Attention for (token, head) tasks: scores against the fp16 K cache, softmax, probabilities
 * rounded to fp16, weighted sum of fp16 V, all in llama.cpp's order (kernels/quant.h): the gemm
 * order for tokens of a multi-token chunk of their sequence, the gemv order for a lone decode
 * token. Which one depends only on the token's own sequence, never on the rest of the batch. */
static void attn_region(void *ctx, int chunk, int nchunks, int ith) {
    Forward *f = ctx;
    const ModelHparams *hp = &f->m->hp;
    const KvCache *kv = f->kv;
    int nh = hp->n_head, hd = hp->head_dim, group = hp->n_head / hp->n_head_kv;
    int total = f->ntok * nh;
    int a0 = (int)((long)total * chunk / nchunks), a1 = (int)((long)total * (chunk + 1) / nchunks);
    float *s = f->scores + (size_t)ith * f->max_ctx;
    uint16_t *p16 = f->p16 + (size_t)ith * f->max_ctx;
    const uint16_t **blk = f->blk + (size_t)ith * f->blk_stride;
    float *acc = f->pv_acc + (size_t)ith * 64 * hd;
    float scale = hp->q_scale ? 1.0f : 1.0f / sqrtf((float)hd);
    const float cap = hp->attn_softcap, inv_cap = cap ? 1.0f / cap : 0.0f;
    const int swa = f->m->layers[f->layer].swa ? hp->n_swa : 0;
    const uint16_t *K = kv->k + (size_t)f->layer * kv->layer_stride;
    const uint16_t *V = kv->v + (size_t)f->layer * kv->layer_stride;
    for (int task = a0; task < a1; task++) {
        int t = task / nh, h = task % nh, g = h / group;
        const BatchTok *bt = &f->toks[t];
        const uint16_t *q = f->q16 + (size_t)task * hd;
        int n = bt->pos + 1, gemv = f->gemv[t];
        const uint16_t **kblk = blk + f->blk_stride / 2;
        for (int b = 0; b * KV_PAGE < n; b++) {
            size_t off = (size_t)bt->pages[b] * KV_PAGE * kv->kv_dim + (size_t)g * hd;
            kblk[b] = K + off;
            blk[b] = V + off;
        }
        quant_attn_scores(s, q, kblk, (size_t)kv->kv_dim, n, hd, gemv, scale);
        if (cap) /* gemma2's soft-capping, as llama.cpp's scale, tanh, scale ops */
            for (int p = 0; p < n; p++) s[p] = tanhf(s[p] * inv_cap) * cap;
        /* llama.cpp masks positions a window or more behind; exp(-inf) adds exact zeros */
        for (int p = 0; swa && p <= bt->pos - swa; p++) s[p] = -INFINITY;
        float mx = -INFINITY;
        for (int p = 0; p < n; p++)
            if (s[p] > mx) mx = s[p];
        float inv = (float)(1.0 / quant_softmax_exp_row(s, s, mx, n));
        for (int p = 0; p < n; p++) s[p] *= inv;
        quant_f32_to_fp16_row(p16, s, n);
        /* llama.cpp's gemm path needs the output rows (head_dim) in fours */
        quant_attn_pv(f->att + (size_t)task * hd, acc, p16, blk, (size_t)kv->kv_dim, n, hd, gemv || hd % 4);
    }
}

/* Per token after the Q/K/V matmuls: biases, Q/K norms, RoPE, fp16 Q (part q), K and V into
 * the cache (part kv). */
static void qkv_token(Forward *f, int t, int part_q, int part_kv) {
    const ModelHparams *hp = &f->m->hp;
    const ModelLayer *L = &f->m->layers[f->layer];
    KvCache *kv = f->kv_w;
    int l = f->layer, hd = hp->head_dim, qd = hp->n_head * hd, kvd = hp->n_head_kv * hd;
    float *q = f->q + (size_t)t * qd, *k = f->k + (size_t)t * kvd, *v = f->v + (size_t)t * kvd;
    const float *cs = f->rope_cs + (size_t)t * hp->rope_dim;
    if (L->swa && hp->rope_swa) cs += (size_t)f->max_tokens * hp->rope_dim;
    if (part_q) {
        if (L->bq)
            for (int i = 0; i < qd; i++) q[i] += L->bq[i];
        for (int h = 0; h < hp->n_head; h++) {
            if (L->q_norm) rmsnorm(q + h * hd, q + h * hd, L->q_norm, hd, hp->eps);
            rope_apply(hp, q + h * hd, cs);
        }
        if (hp->q_scale)
            for (int i = 0; i < qd; i++) q[i] *= hp->q_scale;
        quant_f32_to_fp16_row(f->q16 + (size_t)t * qd, q, qd);
    }
    if (part_kv) {
        if (L->bk) /* each bias is optional on its own (outside qwen2) */
            for (int i = 0; i < kvd; i++) k[i] += L->bk[i];
        if (L->bv)
            for (int i = 0; i < kvd; i++) v[i] += L->bv[i];
        for (int h = 0; h < hp->n_head_kv; h++) {
            if (L->k_norm) rmsnorm(k + h * hd, k + h * hd, L->k_norm, hd, hp->eps);
            rope_apply(hp, k + h * hd, cs);
        }
        int pos = f->toks[t].pos;
        size_t row = ((size_t)f->toks[t].pages[pos / KV_PAGE] * KV_PAGE + (size_t)(pos % KV_PAGE)) * kvd;
        quant_f32_to_fp16_row(kv->k + (size_t)l * kv->layer_stride + row, k, kvd);
        quant_f32_to_fp16_row(kv->v + (size_t)l * kv->layer_stride + row, v, kvd);
    }
}

/* Token chunks; a lone token (a decode step) is two chunks, its Q and its K/V, so the second
 * thread is not idle through it. */
static int qkv_chunks(const Forward *f) { return f->ntok == 1 && pool_size(f->pool) > 1 ? 2 : tok_chunks(f); }

static void qkv_region(void *ctx, int chunk, int nchunks, int thread) {
    Forward *f = ctx;
    (void)thread;
    if (f->ntok == 1 && nchunks == 2) {
        qkv_token(f, 0, chunk == 0, chunk == 1);
        return;
    }
    int t0, t1;
    tok_range(f, chunk, nchunks, &t0, &t1);
    for (int t = t0; t < t1; t++) qkv_token(f, t, 1, 1);
}

/* Per token: the residual add (x += xn) and/or the next RMSNorm (xn = norm(x)). */
static void resid_norm_region(void *ctx, int chunk, int nchunks, int thread) {
    Forward *f = ctx;
    (void)thread;
    int t0, t1, d = f->m->hp.n_embd;
    tok_range(f, chunk, nchunks, &t0, &t1);
    for (int t = t0; t < t1; t++) {
        float *x = f->x + (size_t)t * d, *xn = f->xn + (size_t)t * d;
        if (f->rn_post) rmsnorm(xn, xn, f->rn_post, d, f->m->hp.eps); /* gemma2/3 post-block norm */
        if (f->rn_add)
            for (int i = 0; i < d; i++) x[i] += xn[i];
        if (f->rn_w) rmsnorm(xn, x, f->rn_w, d, f->m->hp.eps);
    }
}

static void resid_norm(Forward *f, int add, const float *post, const float *w) {
    f->rn_add = add;
    f->rn_post = add ? post : NULL;
    f->rn_w = w;
    pool_run(f->pool, resid_norm_region, f, tok_chunks(f));
}

/* llama.cpp's gelu-tanh table over fp16 inputs, computed from the formula (inner product fused
 * as its build contracts it). */
static void gelu_table(uint16_t *t) {
    for (int i = 0; i < 65536; i++) {
        float x = quant_fp16_to_f32((uint16_t)i);
        float inner = 0.79788456080286535587989211986876f * x * fmaf(0.044715f * x, x, 1.0f);
        t[i] = quant_f32_to_fp16(0.5f * x * (1.0f + tanhf(inner)));
    }
}

/* y = gelu(gate) * up with gelu read from the fp16 table, saturated beyond +-10, as ggml's GeGLU. */
static void geglu_row(const uint16_t *tab, float *y, const float *gate, const float *up, int n) {
    for (int i = 0; i < n; i++) {
        float g = gate[i];
        if (g <= -10.0f)
            y[i] = 0.0f;
        else if (g >= 10.0f)
            y[i] = g * up[i];
        else
            y[i] = quant_fp16_to_f32(tab[quant_f32_to_fp16(g)]) * up[i];
    }
}

static void swiglu_region(void *ctx, int chunk, int nchunks, int thread) {
    Forward *f = ctx;
    (void)thread;
    int t0, t1, nff = f->m->hp.n_ff;
    tok_range(f, chunk, nchunks, &t0, &t1);
    for (int t = t0; t < t1; t++) {
        size_t o = (size_t)t * nff;
        if (f->m->hp.ffn_gelu)
            geglu_row(f->m->gelu16, f->gate + o, f->gate + o, f->up + o, nff);
        else
            quant_swiglu_row(f->gate + o, f->gate + o, f->up + o, nff);
    }
}

/* Every layer of the batch, ending with the last FFN residual added into f->x. */
static int forward_layers(Forward *f, KvCache *kv, const BatchTok *toks, int n) {
    const Model *m = f->m;
    const ModelHparams *hp = &m->hp;
    if (n < 1 || n > f->max_tokens) return -1;
    int d = hp->n_embd;
    for (int t = 0; t < n; t++) {
        if (toks[t].token < 0 || toks[t].token >= hp->n_vocab || toks[t].pos < 0 || toks[t].pos >= f->max_ctx) return -1;
        quant_dequant_row(m->tok_embd.type, (const uint8_t *)m->tok_embd.data + (size_t)toks[t].token * m->tok_embd.row_bytes,
                          f->x + (size_t)t * d, d);
        if (hp->embd_scale)
            for (int i = 0; i < d; i++) f->x[(size_t)t * d + i] *= hp->embd_scale;
    }
    rope_cache(f, toks, n, hp->rope_base, hp->rope_freq_scale, f->rope_cs);
    if (hp->rope_swa)
        rope_cache(f, toks, n, hp->rope_base_swa, hp->rope_freq_scale_swa, f->rope_cs + (size_t)f->max_tokens * hp->rope_dim);
    for (int t = 0; t < n; t++) { /* a sequence's tokens share its page table */
        int same = 0;
        for (int u = 0; u < n && same < 2; u++) same += toks[u].pages == toks[t].pages;
        f->gemv[t] = same == 1;
    }
    f->toks = toks;
    f->kv = kv;
    f->ntok = n;
    for (int l = 0; l < hp->n_layer; l++) {
        const ModelLayer *L = &m->layers[l];
        f->ntok = n;
        /* the previous layer's FFN residual, then this norm */
        resid_norm(f, l > 0, l > 0 ? m->layers[l - 1].post_ffn_norm : NULL, L->attn_norm);
        const WMat *w3[3] = {&L->wq, &L->wk, &L->wv};
        float *o3[3] = {f->q, f->k, f->v};
        matmul_group(f, f->xn, n, w3, o3, 3);
        f->layer = l;
        f->kv_w = kv;
        pool_run(f->pool, qkv_region, f, qkv_chunks(f));
        pool_run(f->pool, attn_region, f, n * hp->n_head < 64 ? n * hp->n_head : 64);
        const WMat *wo[1] = {&L->wo};
        float *oo[1] = {f->xn};
        matmul_group(f, f->att, n, wo, oo, 1);
        resid_norm(f, 1, L->post_attn_norm, L->ffn_norm);
        const WMat *wgu[2] = {&L->wgate, &L->wup};
        float *ogu[2] = {f->gate, f->up};
        matmul_group(f, f->xn, n, wgu, ogu, 2);
        pool_run(f->pool, swiglu_region, f, tok_chunks(f));
        const WMat *wd[1] = {&L->wdown};
        matmul_group(f, f->gate, n, wd, oo, 1);
    }
    f->ntok = n;
    resid_norm(f, 1, m->layers[hp->n_layer - 1].post_ffn_norm, NULL); /* the last layer's FFN residual */
    return 0;
}

int forward_run(Forward *f, KvCache *kv, const BatchTok *toks, int n, float *logits) {
    const Model *m = f->m;
    const ModelHparams *hp = &m->hp;
    int d = hp->n_embd;
    if (forward_layers(f, kv, toks, n) != 0) return -1;
    int nl = 0;
    for (int t = 0; t < n; t++) {
        if (toks[t].logits_row < 0) continue;
        if (toks[t].logits_row != nl) return -1;
        rmsnorm(f->gather + (size_t)nl * d, f->x + (size_t)t * d, m->out_norm, d, hp->eps);
        nl++;
    }
    if (nl > 0) {
        const WMat *wo[1] = {&m->output};
        float *oo[1] = {logits};
        matmul_group(f, f->gather, nl, wo, oo, 1);
        if (hp->final_softcap) { /* gemma2 (gemma3 if given): scale, tanh, scale as llama.cpp's graph */
            float cap = hp->final_softcap, inv = 1.0f / cap;
            for (size_t i = 0; i < (size_t)nl * hp->n_vocab; i++) logits[i] = tanhf(logits[i] * inv) * cap;
        }
    }
    return 0;
}

/* For embedders: the output-normed hidden state (llama.cpp's result_norm, what its embedding
 * mode pools) instead of logits. */
int forward_hidden(Forward *f, KvCache *kv, const BatchTok *toks, int n, float *hidden) {
    const Model *m = f->m;
    int d = m->hp.n_embd;
    if (forward_layers(f, kv, toks, n) != 0) return -1;
    for (int t = 0; t < n; t++)
        if (toks[t].logits_row >= 0)
            rmsnorm(hidden + (size_t)toks[t].logits_row * d, f->x + (size_t)t * d, m->out_norm, d, m->hp.eps);
    return 0;
}
