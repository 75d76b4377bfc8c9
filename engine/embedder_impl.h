/* embedder_impl.h: what a backend implements. Only backends and embedder.c include this. */
#ifndef WEAVER_EMBEDDER_IMPL_H
#define WEAVER_EMBEDDER_IMPL_H

#include <stdatomic.h>

#include "engine/embedder.h"

typedef struct EmbedderOps {
    const char *name;
    /* Fills e->info and e->impl; returns 0, or < 0 with e->errstr set. */
    int (*open)(Embedder *e, const EmbedderConfig *cfg, const BatchConfig *batch);
    void (*close)(Embedder *e);
    EmbedWorkspace *(*workspace_new)(Embedder *e);
    void (*workspace_free)(EmbedWorkspace *ws);
    int (*count_tokens)(Embedder *e, EmbedWorkspace *ws, const char *text, size_t len);
    int (*embed)(Embedder *e, EmbedWorkspace *ws, const EmbedText *texts, int n,
                 float *out, int *ntokens, EmbedStatus *status);
} EmbedderOps;

struct Embedder {
    const EmbedderOps *ops;
    EmbedderInfo info;
    void *impl;          /* backend state: weights, tokenizer, HTTP handles */
    char errstr[256];
    const atomic_bool *cancel; /* embedder_set_cancel; NULL = never */
    int token_budget;    /* set by open when it sizes batches itself; else embedder_open fills it */
};

/* For backends: true once the cancel flag is set; checked between units of work (a pack, a
 * request, a slice of a delay), after which embed returns EMBEDDER_ECANCELED. */
static inline bool embedder_cancelled(const Embedder *e) { return e->cancel && atomic_load(e->cancel); }

/* The device layer's table for a native cuda:N embedder: the CUDA backend, or in test builds the
 * fake device when $WEAVER_TEST_FAKE_DEVICE is set (embed_native.c). NULL in a build without CUDA. */
struct DeviceOps;
const struct DeviceOps *embed_native_device_ops(void);

/* Registered backends; a backend not compiled into this build is NULL-absent from the table. */
extern const EmbedderOps embedder_native_ops;    /* engine/embed/ */
extern const EmbedderOps embedder_test_hash_ops; /* engine/embedder_test_hash.c, test builds */

#endif
