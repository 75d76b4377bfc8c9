/* bert_dev.h: the BERT encoder on an accelerator, through the device layer (kernels/device.h):
 * weights uploaded once into one allocation, one run (stream + arena + pinned buffer) per worker
 * sized once, padding-free packs as on the CPU (bert.h). A pack that runs out of device memory
 * is split in halves and retried; a lost device (sticky error) is reported, never retried.
 * Nothing here logs, exits or allocates after bert_dev_run_new. */
#ifndef WEAVER_BERT_DEV_H
#define WEAVER_BERT_DEV_H

#include <stddef.h>
#include <stdint.h>

#include "engine/embed/safetensors.h"
#include "engine/embed/snapshot.h"
#include "kernels/device.h"

typedef struct BertDev BertDev;
typedef struct BertDevRun BertDevRun;

/* Device bytes one token of a pack needs (activations, GEMM input scratch, ids, its share of
 * offsets and pooled rows), and the fixed bytes each run needs besides (library workspace,
 * Thrust's scratch, alignment). */
size_t bert_dev_bytes_per_token(const BertConfig *c, DevPrecision prec);
size_t bert_dev_fixed_bytes(const BertConfig *c);

/* Reads every weight of st (names with or without "bert."), converts the GEMM weights to prec,
 * and uploads them into d's one weight allocation. d stays the caller's. NULL with err set. */
BertDev *bert_dev_open(Device *d, const SafeTensors *st, const BertConfig *c, DevPrecision prec, char *err,
                       size_t errlen);
void bert_dev_free(BertDev *m); /* NULL-safe; does not close the device */
size_t bert_dev_weight_bytes(const BertDev *m);

/* batch.token_budget = 0: tokens per pack from the device's free memory now (after the weights)
 * for `workers` runs (dev_budget_tokens with DEV_BUDGET_FRACTION), capped by cap (0 = none).
 * 0 when not even min_tokens fit, with the figures in err. */
int bert_dev_token_budget(BertDev *m, int workers, int cap, int min_tokens, char *err, size_t errlen);

/* One worker's run: packs of up to max_tokens tokens and max_seqs sequences, with an arena for
 * arena_tokens tokens (0 = max_tokens; fewer makes bigger packs run out of memory and split: the
 * GPU check's forced small budget). */
BertDevRun *bert_dev_run_new(BertDev *m, int max_tokens, int max_seqs, int arena_tokens, char *err, size_t errlen);
void bert_dev_run_free(BertDevRun *r); /* NULL-safe */
DevStream *bert_dev_run_stream(BertDevRun *r);

typedef struct BertDevStats {
    long packs;    /* packs that ran to the end */
    long splits;   /* packs split in two after an out-of-memory */
} BertDevStats;
const BertDevStats *bert_dev_run_stats(const BertDevRun *r);

/* Encodes nseq sequences packed in ids (lens[i] tokens each, sum <= max_tokens, nseq <=
 * max_seqs) and pools each into out[i * hidden] (host memory). Returns DEV_OK; DEV_ESTICKY when
 * the device is lost (nothing more will run on it); DEV_ENOMEM when a single sequence still does
 * not fit; another DevStatus on other failures. device_errstr says why. */
int bert_dev_forward(BertDevRun *r, const int32_t *ids, const int *lens, int nseq, DevPool pool, float *out);

#endif
