/* snapshot_hash.h: the snapshot identity recorded in the cohort pin: sha256 over a canonical
 * manifest of a sentence-transformers snapshot's files, with a sidecar cache so a large
 * snapshot is not re-hashed on every boot. No logging; errors come back in err.
 *
 * Manifest: the files below that exist, sorted by relative path (strcmp), one line each
 *   "<relative path>\t<size in bytes>\t<hex sha256 of the content>\n"
 * and the snapshot hash is the hex sha256 of those lines concatenated. Files: model.safetensors,
 * pytorch_model.bin, config.json, tokenizer.json, vocab.txt, tokenizer_config.json,
 * special_tokens_map.json, modules.json, sentence_bert_config.json, 1_Pooling/config.json, and
 * for every module path P listed in modules.json (2_Normalize, 2_Dense, ...): P/config.json,
 * P/model.safetensors, P/pytorch_model.bin. Symbolic links are followed (a Hugging Face cache
 * snapshot is links into blobs/). A snapshot without a weights file is an error.
 *
 * Cache: <snapshot>/.weaver-manifest.json, or, when the snapshot directory is not writable,
 * $XDG_CACHE_HOME/weaver-engine/manifest-<sha256 of the real path>.json ($HOME/.cache when
 * XDG_CACHE_HOME is unset). A file's cached sha256 is reused only while its size, mtime (ns)
 * and inode are unchanged; files modified less than 2 s before they were hashed are not cached
 * (their mtime could still change within the same tick). An unusable cache is ignored, never
 * an error. */
#ifndef WEAVER_SNAPSHOT_HASH_H
#define WEAVER_SNAPSHOT_HASH_H

#include <stdbool.h>
#include <stddef.h>

#define SNAPSHOT_SIDECAR ".weaver-manifest.json"

typedef struct SnapshotHashStats {
    int files;            /* files in the manifest */
    int hashed;           /* files whose content was read this time */
    int from_cache;       /* files whose sha256 came from the cache */
    bool cache_written;   /* the cache file was (re)written */
    char cache_path[4096];/* where the cache was read from or written to, "" if nowhere */
} SnapshotHashStats;

/* Hex sha256 of the manifest into out_hex. Returns 0, or -1 with err set. */
int snapshot_hash_cached(const char *snapshot_dir, char out_hex[65], char *err, size_t errlen);
/* The same with statistics (tests, `--verbose` tools); stats may be NULL. */
int snapshot_hash_cached_ex(const char *snapshot_dir, char out_hex[65], SnapshotHashStats *stats, char *err,
                            size_t errlen);

/* A GGUF embedder's hash: the same manifest rules over one file, the line named by the file's
 * base name ("<name>.gguf\t<size>\t<sha256>\n"). Not cached: reads the whole file (about
 * 1.5 s per GB). */
int snapshot_hash_file(const char *path, char out_hex[65], char *err, size_t errlen);

#endif
