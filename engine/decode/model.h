/* model.h: llama-family decoder (llama, qwen2, qwen3, phi3, gemma2, gemma3) over GGUF weights, a paged fp16 KV cache
 * shared by all sequences, and a batched forward pass: any mix of prefill chunks and decode
 * tokens from different sequences runs as one batch, each weight matrix read once per batch.
 * Knows nothing about tokens as text, sampling or scheduling. */
#ifndef WEAVER_DECODE_MODEL_H
#define WEAVER_DECODE_MODEL_H

#include <stdint.h>

#include "engine/decode/gguf.h"
#include "engine/decode/pool.h"
#include "kernels/quant.h"

typedef enum ModelArch { ARCH_LLAMA = 0, ARCH_QWEN2, ARCH_QWEN3, ARCH_PHI3, ARCH_GEMMA2, ARCH_GEMMA3 } ModelArch;

typedef struct WMat {
    const void *data;     /* the rows as stored in the file (what dot, the device and lookups read) */
    const void *cpu;      /* the rows as mv and mm read them: data, or a packed copy (kernels/quant.h) */
    int type;
    int rows, cols;       /* rows = output features, cols = input features (ne[0]) */
    size_t row_bytes;
    QuantDotFn dot;
    QuantMatmulFn mm;     /* multi-token tile kernel (same bits as dot), or NULL */
    QuantMatvecFn mv;     /* single-token kernel (same bits as dot), or NULL */
    QuantType act;        /* activation format the dot wants */
} WMat;

typedef struct ModelLayer {
    const float *attn_norm, *ffn_norm;
    const float *bq, *bk, *bv;         /* qwen2 biases, else NULL */
    const float *q_norm, *k_norm;      /* qwen3 per-head RMSNorm, else NULL */
    WMat wq, wk, wv, wo, wgate, wup, wdown; /* phi3: wq/wk/wv and wgate/wup are row slices of
                                             * its fused attn_qkv and ffn_up tensors */
    const float *post_attn_norm, *post_ffn_norm; /* gemma2/3: RMSNorm of each block's output, else NULL */
    int swa;                           /* gemma2/3: sliding-window attention layer */
} ModelLayer;

typedef struct ModelHparams {
    int n_vocab, n_embd, n_layer, n_head, n_head_kv, head_dim, n_ff, n_ctx_train;
    int rope_dim;
    int rope_neox;          /* 1: rotate halves (qwen), 0: adjacent pairs (llama) */
    float rope_base, rope_freq_scale, eps;
    /* phi3, gemma2/3: Q is multiplied by q_scale after RoPE (in float32, before its fp16 rounding)
     * and the scores are not scaled; 0: scores scaled by 1/sqrt(head_dim) (llama, qwen). */
    float q_scale;
    float embd_scale;                  /* gemma2/3: embeddings times sqrt(n_embd); 0: none */
    float attn_softcap, final_softcap; /* gemma2/3: x -> cap * tanh(x / cap) on scores / logits; 0: none */
    int n_swa, swa_pattern;            /* gemma2/3: window of its sliding-window layers; every
                                        * swa_pattern-th layer (the last of each group) is global */
    int ffn_gelu;                      /* gemma2/3: GeGLU (gelu-tanh) instead of SwiGLU */
    int rope_swa;                      /* gemma3 (gemma2 with freq_base_swa): its sliding-window
                                        * layers rotate with their own base and scale */
    float rope_base_swa, rope_freq_scale_swa;
    /* cos and sin are multiplied by rope_mscale (1: not): `rope.scaling.attn_factor` (Phi-3
     * LongRoPE), times YaRN's magnitude correction, as llama.cpp computes them */
    float rope_mscale;
    /* YaRN (`rope.scaling.type` yarn): ext_factor 1 mixes interpolated and extrapolated angles over
     * the pairs between the correction dims (from original_context_length); 0: not YaRN */
    float rope_ext_factor, rope_corr[2];
    int n_ctx_orig;                    /* rope.scaling.original_context_length (default n_ctx_train) */
} ModelHparams;

typedef struct Model {
    GgufFile *gguf;
    ModelArch arch;
    char arch_name[32];
    ModelHparams hp;
    WMat tok_embd, output;          /* output == tok_embd when tied */
    const float *out_norm;
    const float *rope_freqs;        /* per-dimension frequency factors in use, or NULL */
    const float *rope_long, *rope_short; /* phi3 LongRoPE: rope_freqs is one of them (model_set_ctx) */
    ModelLayer *layers;
    uint16_t *gelu16;               /* gemma2/3: gelu of every fp16 value, as fp16 (llama.cpp's table) */
    void **owned;                   /* dequantised small tensors (norms, biases), packed matrices */
    int n_owned;
} Model;

/* Loads the model from an opened GGUF file (takes ownership of it). NULL with err set. */
Model *model_load(GgufFile *f, char *err, size_t errlen);
void model_free(Model *m); /* NULL-safe; closes the GGUF file */
/* What depends on the context a sequence gets (llama.cpp's n_ctx_seq): Phi-3 LongRoPE uses its
 * long factors when n_ctx, rounded up to 256 as llama.cpp pads it, exceeds
 * original_context_length, else the short ones. model_load assumes n_ctx_train. Call before any
 * forward pass (and before the device copies the rotation). */
void model_set_ctx(Model *m, int n_ctx);
/* RoPE's cos and sin for position pos: cs[2i], cs[2i + 1] for each of the rope_dim / 2 pairs. */
void model_rope_row(const Model *m, int pos, float *cs);

/* KV cache: pages of KV_PAGE tokens shared by all sequences. */
#define KV_PAGE 16
typedef struct KvCache {
    int n_pages, n_free;
    int *free_list;
    uint16_t *k, *v;     /* [layer][page][KV_PAGE][kv_dim] fp16 */
    size_t layer_stride; /* elements per layer */
    int kv_dim;
} KvCache;

int kv_init(KvCache *kv, const Model *m, int n_tokens, char *err, size_t errlen);
/* Page bookkeeping only (k and v stay NULL): for a KV cache that lives on a device. */
int kv_init_pages(KvCache *kv, int n_tokens);
void kv_free(KvCache *kv);
int kv_alloc_page(KvCache *kv);          /* -1 when none free */
void kv_release_page(KvCache *kv, int page);

/* One token of a batch. */
typedef struct BatchTok {
    int token;
    int pos;             /* position in its sequence */
    const int *pages;    /* its sequence's page table (covers pos) */
    int logits_row;      /* row in the logits output, or -1 */
} BatchTok;

/* Scratch for a forward pass of at most max_tokens tokens, max_logits logit rows and
 * attention spans up to max_ctx; allocated once. */
typedef struct Forward Forward;
/* n_threads < 1: every online CPU (decoder.threads = 0, generate-local --threads 0). */
Forward *forward_create(const Model *m, int max_tokens, int max_ctx, int n_threads, char *err, size_t errlen);
void forward_free(Forward *f);
/* The forward pass's thread pool, for other per-step work (sampling) between passes. */
Pool *forward_pool(Forward *f);
/* Runs the batch; writes logits[logits_row * n_vocab ...] for tokens that ask for them. */
int forward_run(Forward *f, KvCache *kv, const BatchTok *toks, int n, float *logits);
/* The same pass for an embedder: writes the final-norm hidden state (n_embd floats) of every
 * token with logits_row >= 0 to hidden[logits_row * n_embd ...] instead of logits. */
int forward_hidden(Forward *f, KvCache *kv, const BatchTok *toks, int n, float *hidden);

#endif
