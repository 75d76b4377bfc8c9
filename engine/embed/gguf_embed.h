/* gguf_embed.h: the native embedder on a GGUF embedding model (decoders: qwen3, qwen2, llama),
 * next to the sentence-transformers snapshot embedder (embed_native.c), behind embedder.h. */
#ifndef WEAVER_GGUF_EMBED_H
#define WEAVER_GGUF_EMBED_H

#include <stdbool.h>
#include <stdint.h>

#include "engine/embed/bert.h"
#include "engine/embed/snapshot.h"
#include "engine/embed/wordpiece.h"
#include "engine/embedder_impl.h"

extern const EmbedderOps embedder_gguf_ops;

/* The WordPiece tokenizer of an open snapshot (or bert GGUF) native embedder (embed_native.c). */
const WpTokenizer *embed_native_wordpiece(const Embedder *e);

/* The default model_id of a GGUF embedder: the file's name without ".gguf". */
void gguf_embed_model_id(const char *path, char *out, size_t outlen);

/* Sorts window positions order[0, n) by lens[order[i]], stably (insertion sort: windows are
 * small and often nearly sorted). Shared by both native embedders (embed_native.c). */
void embed_sort_by_len(int *order, const int *lens, int n);

/* The cpu precision embedder.precision asks for ("auto" = fp32; embed_native.c). 0, or -1 with
 * err set. */
int embed_cpu_precision(const EmbedderConfig *cfg, GemmPrecision *prec, char *err, size_t errlen);

/* A `bert` GGUF (llama.cpp's layout, tests/reference/bert_to_gguf.py) for the snapshot embedder:
 * fills snap (sizes, pooling, max_seq_len, normalise), the WordPiece tokenizer from the file's
 * vocabulary and the encoder's weights (dequantised, then packed in embedder.precision). 0; 1 when the file is not a bert
 * GGUF (nothing opened); -1 with err set. */
int gguf_bert_open(const char *path, const EmbedderConfig *cfg, Snapshot *snap, WpTokenizer **tk, BertModel **model,
                   char *err, size_t errlen);

/* Opens the GGUF file `path` (what cfg_snapshot_gguf found) into e: fills e->info and e->impl.
 * 0, or -1 with e->errstr set. */
int gguf_embed_open_file(Embedder *e, const char *path, const EmbedderConfig *cfg, const BatchConfig *batch);

/* A text's token ids as the embedder runs them (BOS/EOS as the file says): with truncate, a text
 * over max_seq_len keeps its first max_seq_len - 1 tokens and the EOS; at most cap ids are
 * written. *total = the untruncated count. Returns the ids written, or -1 with embedder_errstr
 * set. ws from embedder_workspace_new. */
int gguf_embed_tokens(Embedder *e, EmbedWorkspace *ws, const char *text, size_t len, bool truncate, int32_t *ids,
                      int cap, int *total);

#endif
