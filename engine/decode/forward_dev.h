/* forward_dev.h: the decoder's forward pass on a device (decoder.device = "cuda:N"): the model's
 * weights uploaded once, still quantised as stored; the paged KV cache in device memory, sized
 * from free memory when asked; a batch of any mix of decode tokens and prompt chunks run with
 * the same BatchTok contract as forward_run (engine/decode/model.h); decode-only steps replayed
 * as CUDA graphs per padded batch size. Knows nothing about sampling or scheduling; nothing here
 * logs or exits, and a step allocates nothing. */
#ifndef WEAVER_DECODE_FORWARD_DEV_H
#define WEAVER_DECODE_FORWARD_DEV_H

#include <stdint.h>

#include "engine/decode/model.h"
#include "kernels/device.h"

typedef struct DevForwardOpts {
    int max_tokens;   /* tokens per step */
    int max_ctx;      /* positions per sequence */
    int max_seqs;     /* sequences per step */
    int max_logits;   /* logit rows per step */
    int kv_tokens;    /* tokens of the KV pool; 0 = as many as free device memory allows */
    int graph_max;    /* the largest padded decode batch replayed as a graph; 0 = no graphs */
    double fraction;  /* share of free memory the KV pool may take (0 = DEV_BUDGET_FRACTION) */
    int gemm_min_tokens; /* matmuls of at least this many tokens run as dequantise-to-fp16 + GEMM
                          * (faster prefill, logits no longer the CPU path's bits); 0 = never:
                          * matrix-vector products, 8 tokens per weight read, the CPU's bits */
} DevForwardOpts;

typedef struct DevForwardStats {
    int steps, eager_steps, graph_launches, graphs_captured;
    size_t weights_bytes, arena_bytes, kv_bytes;
} DevForwardStats;

typedef struct DevForward DevForward;

/* Uploads the model to d (opened by the caller, which keeps it) and sizes the KV pool and the
 * step's buffers. NULL with the reason in err; *status gets the DevStatus (DEV_ENOMEM: the
 * model or the smallest pool does not fit). */
DevForward *dev_forward_create(Device *d, const Model *m, const DevForwardOpts *o, int *status, char *err,
                               size_t errlen);
void dev_forward_free(DevForward *f); /* NULL-safe */
/* The KV pool's size in tokens (a multiple of KV_PAGE): its pages are 0 .. tokens / KV_PAGE - 1. */
int dev_forward_kv_tokens(const DevForward *f);
void dev_forward_stats(const DevForward *f, DevForwardStats *out);

/* Runs a batch (toks as for forward_run; pages index the device KV pool). For tokens with a
 * logits row: logits (host, [rows][n_vocab]) and/or greedy (host, [rows], the first index of
 * each row's maximum) when not NULL. Returns DEV_OK or a DevStatus: DEV_ENOMEM leaves the device
 * usable (run a smaller batch), DEV_ESTICKY means the device is lost; device_errstr says why. */
int dev_forward_run(DevForward *f, const BatchTok *toks, int n, float *logits, int32_t *greedy);

#endif
