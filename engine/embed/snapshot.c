/* snapshot.c: reads a sentence-transformers snapshot's JSON files and hashes its manifest.
 * Only reads small JSON files (and, for the hash, streams every listed file once).
 * Must not load weights (bert.c) or the vocabulary (wordpiece.c). */
#include "engine/embed/snapshot.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static void seterr(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || !errlen) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* Parses dir/rel; NULL with err set when the file is missing (and required) or not JSON. */
static cJSON *load_json(const char *dir, const char *rel, bool required, char *err, size_t errlen)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, rel);
    FILE *f = fopen(path, "rb");
    if (!f) {
        if (required) seterr(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    if (n < 0 || n > (64 << 20)) {
        fclose(f);
        seterr(err, errlen, "%s: unreadable or too large", path);
        return NULL;
    }
    char *buf = malloc((size_t)n + 1);
    size_t got = buf ? fread(buf, 1, (size_t)n, f) : 0;
    fclose(f);
    if (!buf) return NULL;
    buf[got] = '\0';
    cJSON *j = cJSON_Parse(buf);
    free(buf);
    if (!j) seterr(err, errlen, "%s: not valid JSON", path);
    return j;
}

#define SNAP_REQUIRED (-2147483647 - 1)

static bool json_true(const cJSON *o, const char *key)
{
    return cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, key));
}

static int get_int(const cJSON *o, const char *key, int dflt, int lo, int hi, const char *file, int *out,
                   char *err, size_t errlen)
{
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!j) {
        if (dflt == SNAP_REQUIRED) {
            seterr(err, errlen, "%s: '%s' is missing", file, key);
            return -1;
        }
        *out = dflt;
        return 0;
    }
    if (!cJSON_IsNumber(j) || j->valuedouble < lo || j->valuedouble > hi || (double)(int)j->valuedouble != j->valuedouble) {
        seterr(err, errlen, "%s: '%s' must be an integer in %d..%d", file, key, lo, hi);
        return -1;
    }
    *out = (int)j->valuedouble;
    return 0;
}

int snapshot_load(const char *dir, Snapshot *s, char *err, size_t errlen)
{
    memset(s, 0, sizeof *s);
    if (err && errlen) err[0] = '\0'; /* optional files signal "absent" by leaving it empty */
    snprintf(s->dir, sizeof s->dir, "%s", dir);
    struct stat sb;
    if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
        seterr(err, errlen, "%s: snapshot is not a directory", dir);
        return -1;
    }
    int rc = -1;
    char file[4096];
    cJSON *cfg = NULL, *mods = NULL, *pool = NULL, *sbert = NULL;

    snprintf(file, sizeof file, "%s/config.json", dir);
    if (!(cfg = load_json(dir, "config.json", true, err, errlen))) goto out;
    const cJSON *mt = cJSON_GetObjectItemCaseSensitive(cfg, "model_type");
    if (cJSON_IsString(mt) && strcmp(mt->valuestring, "bert") != 0) {
        seterr(err, errlen, "%s: model_type '%s' is not supported (only bert)", file, mt->valuestring);
        goto out;
    }
    BertConfig *b = &s->bert;
    if (get_int(cfg, "vocab_size", SNAP_REQUIRED, 1, 10000000, file, &b->vocab_size, err, errlen) ||
        get_int(cfg, "hidden_size", SNAP_REQUIRED, 1, 65536, file, &b->hidden, err, errlen) ||
        get_int(cfg, "num_hidden_layers", SNAP_REQUIRED, 1, 1024, file, &b->layers, err, errlen) ||
        get_int(cfg, "num_attention_heads", SNAP_REQUIRED, 1, 1024, file, &b->heads, err, errlen) ||
        get_int(cfg, "intermediate_size", SNAP_REQUIRED, 1, 1 << 20, file, &b->intermediate, err, errlen) ||
        get_int(cfg, "max_position_embeddings", 512, 2, 1 << 20, file, &b->max_positions, err, errlen) ||
        get_int(cfg, "type_vocab_size", 2, 1, 1024, file, &b->type_vocab, err, errlen))
        goto out;
    if (b->hidden % b->heads != 0) {
        seterr(err, errlen, "%s: hidden_size %d is not a multiple of num_attention_heads %d", file, b->hidden, b->heads);
        goto out;
    }
    const cJSON *eps = cJSON_GetObjectItemCaseSensitive(cfg, "layer_norm_eps");
    b->ln_eps = cJSON_IsNumber(eps) ? (float)eps->valuedouble : 1e-12f;
    const cJSON *act = cJSON_GetObjectItemCaseSensitive(cfg, "hidden_act");
    if (act && (!cJSON_IsString(act) || strcmp(act->valuestring, "gelu") != 0)) {
        seterr(err, errlen, "%s: hidden_act '%s' is not supported (only gelu, the erf form)", file,
               cJSON_IsString(act) ? act->valuestring : "?");
        goto out;
    }
    const cJSON *pe = cJSON_GetObjectItemCaseSensitive(cfg, "position_embedding_type");
    if (pe && (!cJSON_IsString(pe) || strcmp(pe->valuestring, "absolute") != 0)) {
        seterr(err, errlen, "%s: position_embedding_type '%s' is not supported (only absolute)", file,
               cJSON_IsString(pe) ? pe->valuestring : "?");
        goto out;
    }

    /* modules.json: Transformer, then Pooling, then optional Normalize */
    snprintf(file, sizeof file, "%s/modules.json", dir);
    char pool_dir[1024] = "1_Pooling";
    bool have_pool = false;
    mods = load_json(dir, "modules.json", false, err, errlen);
    if (mods) {
        if (!cJSON_IsArray(mods)) {
            seterr(err, errlen, "%s: not a JSON array", file);
            goto out;
        }
        for (const cJSON *m = mods->child; m; m = m->next) {
            const cJSON *type = cJSON_GetObjectItemCaseSensitive(m, "type");
            const cJSON *path = cJSON_GetObjectItemCaseSensitive(m, "path");
            if (!cJSON_IsString(type)) {
                seterr(err, errlen, "%s: a module has no type", file);
                goto out;
            }
            const char *t = type->valuestring;
            if (strcmp(t, "sentence_transformers.models.Transformer") == 0) continue;
            if (strcmp(t, "sentence_transformers.models.Pooling") == 0) {
                have_pool = true;
                if (cJSON_IsString(path)) snprintf(pool_dir, sizeof pool_dir, "%s", path->valuestring);
            } else if (strcmp(t, "sentence_transformers.models.Normalize") == 0) {
                s->normalize = true;
            } else {
                seterr(err, errlen, "%s: module '%s' is not supported (Transformer, Pooling, Normalize only)", file, t);
                goto out;
            }
        }
    } else if (err && err[0]) {
        goto out; /* present but not JSON */
    }
    s->pooling = EMBED_POOL_MEAN;
    s->dim = b->hidden;
    char rel[1100];
    snprintf(rel, sizeof rel, "%s/config.json", pool_dir);
    snprintf(file, sizeof file, "%s/%s", dir, rel);
    if (err) err[0] = '\0';
    pool = load_json(dir, rel, have_pool, err, errlen);
    if (!pool && err && err[0]) goto out;
    if (pool) {
        int modes = 0;
        if (json_true(pool, "pooling_mode_mean_tokens")) { s->pooling = EMBED_POOL_MEAN; modes++; }
        if (json_true(pool, "pooling_mode_cls_token")) { s->pooling = EMBED_POOL_CLS; modes++; }
        if (json_true(pool, "pooling_mode_max_tokens")) { s->pooling = EMBED_POOL_MAX; modes++; }
        if (json_true(pool, "pooling_mode_mean_sqrt_len_tokens") || json_true(pool, "pooling_mode_weightedmean_tokens") ||
            json_true(pool, "pooling_mode_lasttoken")) {
            seterr(err, errlen, "%s: only mean, cls or max pooling is supported", file);
            goto out;
        }
        if (modes != 1) {
            seterr(err, errlen, "%s: exactly one pooling mode must be true (found %d)", file, modes);
            goto out;
        }
        const cJSON *wd = cJSON_GetObjectItemCaseSensitive(pool, "word_embedding_dimension");
        if (cJSON_IsNumber(wd) && (int)wd->valuedouble != b->hidden) {
            seterr(err, errlen, "%s: word_embedding_dimension %d differs from config.json hidden_size %d", file,
                   (int)wd->valuedouble, b->hidden);
            goto out;
        }
    }

    s->max_seq_len = b->max_positions;
    snprintf(file, sizeof file, "%s/sentence_bert_config.json", dir);
    sbert = load_json(dir, "sentence_bert_config.json", false, err, errlen);
    if (!sbert && err && err[0]) goto out;
    if (sbert) {
        int msl;
        if (get_int(sbert, "max_seq_length", b->max_positions, 2, 1 << 20, file, &msl, err, errlen)) goto out;
        if (msl > b->max_positions) {
            seterr(err, errlen, "%s: max_seq_length %d exceeds config.json max_position_embeddings %d", file, msl,
                   b->max_positions);
            goto out;
        }
        s->max_seq_len = msl;
        s->do_lower_case = json_true(sbert, "do_lower_case");
    }
    rc = 0;
out:
    cJSON_Delete(cfg);
    cJSON_Delete(mods);
    cJSON_Delete(pool);
    cJSON_Delete(sbert);
    return rc;
}

void snapshot_basename(const char *dir, char *out, size_t outlen)
{
    size_t n = strlen(dir);
    while (n > 1 && dir[n - 1] == '/') n--;
    size_t start = n;
    while (start > 0 && dir[start - 1] != '/') start--;
    size_t len = n - start;
    if (len >= outlen) len = outlen - 1;
    memcpy(out, dir + start, len);
    out[len] = '\0';
}
