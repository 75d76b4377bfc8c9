/* snapshot.h: a sentence-transformers snapshot directory: the BERT sizes from config.json, the
 * pipeline from modules.json (pooling, Normalize), 1_Pooling/config.json,
 * sentence_bert_config.json, and the snapshot hash over a canonical file manifest.
 * A missing or inconsistent file is an error naming the file and the problem. No logging. */
#ifndef WEAVER_SNAPSHOT_H
#define WEAVER_SNAPSHOT_H

#include <stdbool.h>
#include <stddef.h>

#include "engine/embedder.h"

typedef struct BertConfig {
    int vocab_size, hidden, layers, heads, intermediate, max_positions, type_vocab;
    float ln_eps;
} BertConfig;

typedef struct Snapshot {
    char dir[2048];
    BertConfig bert;
    EmbedPooling pooling;
    bool normalize;        /* a sentence_transformers.models.Normalize module is listed */
    int max_seq_len;       /* sentence_bert_config max_seq_length, capped by max_positions */
    bool do_lower_case;    /* sentence_bert_config do_lower_case */
    int dim;               /* pooled output size */
} Snapshot;

int snapshot_load(const char *dir, Snapshot *s, char *err, size_t errlen);


/* Snapshot directory's basename (without trailing slashes) into out. */
void snapshot_basename(const char *dir, char *out, size_t outlen);

#endif
