/* bert.h: BERT encoder weights and forward pass on the CPU (kernels/gemm.h for the linear layers,
 * cpu_ops kernels for attention and the rest). Sequences are packed without padding: each sequence attends
 * only to its own tokens, which is what the padding mask means. No allocation in bert_forward,
 * no logging. */
#ifndef WEAVER_BERT_H
#define WEAVER_BERT_H

#include <stddef.h>
#include <stdint.h>

#include "engine/embed/snapshot.h"
#include "kernels/gemm.h"

typedef struct BertModel BertModel;

typedef struct BertScratch {
    int max_tokens;  /* packed tokens per forward */
    int max_seq;     /* longest sequence */
    float *x, *qkv, *ctx, *tmp, *ffn;
    float *scores;   /* attention scratch: CPU_ATTN_SCRATCH(max_seq, head size) */
    float *work;     /* GEMM packing buffer: gemm_work_floats() */
    void *block;     /* one allocation behind all of the above */
} BertScratch;

/* Loads weights from a .safetensors file, checking every tensor's shape against cfg.
 * Tensor names may carry a "bert." prefix. NULL with "<file>: <problem>" in err. */
BertModel *bert_load(const char *path, const BertConfig *cfg, char *err, size_t errlen);
/* The same with the linear layers in precision prec (weights packed to it at load). Where this
 * CPU (or $WEAVER_CPU_ISA) has no kernel for prec, the model runs fp32: bert_precision says. */
BertModel *bert_load_precision(const char *path, const BertConfig *cfg, GemmPrecision prec, char *err, size_t errlen);
GemmPrecision bert_precision(const BertModel *m);
/* Reads tensor `name` (Hugging Face's name, e.g. "encoder.layer.0.output.dense.weight") of
 * shape [d0][d1] (d1 = -1: a vector of d0) as F32 into out. 0, or -1 with err set. */
typedef int (*BertTensorRead)(void *src, const char *name, int64_t d0, int64_t d1, float *out, char *err,
                              size_t errlen);
/* The same from any tensor source (a GGUF file: gguf_embed.c); `what` names it in errors. */
BertModel *bert_load_with(BertTensorRead read, void *src, const char *what, const BertConfig *cfg,
                          GemmPrecision prec, char *err, size_t errlen);
void bert_free(BertModel *m); /* NULL-safe */
const BertConfig *bert_config(const BertModel *m);

int bert_scratch_init(BertScratch *s, const BertConfig *cfg, int max_tokens, int max_seq);
void bert_scratch_free(BertScratch *s);

/* Encodes nseq sequences packed in ids (lens[i] tokens each, sum <= max_tokens, each <=
 * max_seq, every id < vocab_size) and pools each into out[i * hidden]. */
void bert_forward(const BertModel *m, BertScratch *s, const int32_t *ids, const int *lens, int nseq,
                  EmbedPooling pooling, float *out);

#endif
