/* snapshot_hash.c: sha256 over a snapshot's canonical file manifest (format in
 * snapshot_hash.h), with per-file hashes cached in a sidecar keyed by size, mtime and inode.
 * Only reads the snapshot (the sidecar is the one file it may write there); never logs. */
#include "engine/embed/snapshot_hash.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MANIFEST_MAX_FILES 64
#define CACHE_FORMAT "weaver-manifest/1"
#define RACY_NS 2000000000LL /* files modified this recently are not cached */

static const char *const fixed_files[] = {
    "model.safetensors", "pytorch_model.bin", "config.json", "tokenizer.json", "vocab.txt",
    "tokenizer_config.json", "special_tokens_map.json", "modules.json", "sentence_bert_config.json",
    "1_Pooling/config.json",
};
static const char *const module_files[] = {"config.json", "model.safetensors", "pytorch_model.bin"};

typedef struct ManifestFile {
    char rel[512];
    long long size, mtime_ns;
    unsigned long long ino;
    char sha[65];
    bool cacheable;
} ManifestFile;

typedef struct Manifest {
    ManifestFile f[MANIFEST_MAX_FILES];
    int n;
} Manifest;

static int fail(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(char *err, size_t errlen, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return -1;
}

static void hex(const unsigned char *md, int n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (int i = 0; i < n; i++) {
        out[2 * i] = digits[md[i] >> 4];
        out[2 * i + 1] = digits[md[i] & 15];
    }
    out[2 * n] = '\0';
}

static int sha256_hex_of(const void *data, size_t len, char out[65])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    if (EVP_Digest(data, len, md, &mdlen, EVP_sha256(), NULL) != 1 || mdlen != 32)
        return -1;
    hex(md, 32, out);
    return 0;
}

static int sha256_file(const char *path, char out[65], long long *size)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    unsigned char *buf = malloc(1 << 20);
    int rc = -1;
    if (!ctx || !buf || EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1)
        goto out;
    *size = 0;
    for (;;) {
        ssize_t n = read(fd, buf, 1 << 20);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            goto out;
        if (n == 0)
            break;
        EVP_DigestUpdate(ctx, buf, (size_t)n);
        *size += n;
    }
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    if (EVP_DigestFinal_ex(ctx, md, &mdlen) == 1 && mdlen == 32) {
        hex(md, 32, out);
        rc = 0;
    }
out:
    free(buf);
    EVP_MD_CTX_free(ctx);
    int saved = errno;
    close(fd);
    errno = saved;
    return rc;
}

static void add_name(char names[][512], int *n, const char *rel)
{
    for (int i = 0; i < *n; i++)
        if (strcmp(names[i], rel) == 0)
            return;
    if (*n < MANIFEST_MAX_FILES)
        snprintf(names[(*n)++], 512, "%s", rel);
}

/* A module path from modules.json is used only when it stays inside the snapshot. */
static bool safe_rel(const char *p)
{
    if (!p[0] || p[0] == '/' || strlen(p) > 256)
        return false;
    for (const char *s = p; *s; s++)
        if (s[0] == '.' && s[1] == '.')
            return false;
    return true;
}

static char *read_small(const char *path, size_t max, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    char *buf = malloc(max + 1);
    size_t n = buf ? fread(buf, 1, max, f) : 0;
    bool more = buf && fgetc(f) != EOF;
    fclose(f);
    if (!buf || more) {
        free(buf);
        return NULL;
    }
    buf[n] = '\0';
    if (len)
        *len = n;
    return buf;
}

static int cmp_names(const void *a, const void *b) { return strcmp((const char *)a, (const char *)b); }

static int collect(const char *dir, Manifest *m, char *err, size_t errlen)
{
    char(*list)[512] = calloc(MANIFEST_MAX_FILES, 512);
    if (!list)
        return fail(err, errlen, "out of memory");
    int n = 0;
    for (size_t i = 0; i < sizeof fixed_files / sizeof fixed_files[0]; i++)
        add_name(list, &n, fixed_files[i]);
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/modules.json", dir);
    char *text = read_small(path, 1 << 20, NULL);
    cJSON *mods = text ? cJSON_Parse(text) : NULL;
    free(text);
    const cJSON *mod;
    cJSON_ArrayForEach(mod, mods)
    {
        const cJSON *p = cJSON_GetObjectItemCaseSensitive(mod, "path");
        if (!cJSON_IsString(p) || !safe_rel(p->valuestring))
            continue;
        for (size_t k = 0; k < sizeof module_files / sizeof module_files[0]; k++) {
            char rel[512];
            snprintf(rel, sizeof rel, "%s/%s", p->valuestring, module_files[k]);
            add_name(list, &n, rel);
        }
    }
    cJSON_Delete(mods);
    qsort(list, (size_t)n, 512, cmp_names);

    m->n = 0;
    bool weights = false;
    for (int i = 0; i < n; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, list[i]);
        struct stat sb;
        if (stat(path, &sb) != 0) {
            if (errno == ENOENT || errno == ENOTDIR)
                continue;
            free(list);
            return fail(err, errlen, "%s: %s", path, strerror(errno));
        }
        if (!S_ISREG(sb.st_mode))
            continue;
        ManifestFile *f = &m->f[m->n++];
        memset(f, 0, sizeof *f);
        snprintf(f->rel, sizeof f->rel, "%s", list[i]);
        f->size = (long long)sb.st_size;
        f->mtime_ns = (long long)sb.st_mtim.tv_sec * 1000000000LL + sb.st_mtim.tv_nsec;
        f->ino = (unsigned long long)sb.st_ino;
        if (!strcmp(list[i], "model.safetensors") || !strcmp(list[i], "pytorch_model.bin"))
            weights = true;
    }
    free(list);
    if (!weights)
        return fail(err, errlen, "%s: no model.safetensors or pytorch_model.bin to hash", dir);
    return 0;
}

/* --- the cache ------------------------------------------------------------------------------ */

static int xdg_cache_path(const char *dir, char *out, size_t len, bool create_dirs)
{
    char real[PATH_MAX], base[PATH_MAX], h[65];
    if (!realpath(dir, real) || sha256_hex_of(real, strlen(real), h) != 0)
        return -1;
    const char *xdg = getenv("XDG_CACHE_HOME");
    const char *home = getenv("HOME");
    if (xdg && xdg[0] == '/')
        snprintf(base, sizeof base, "%s/weaver-engine", xdg);
    else if (home && home[0] == '/')
        snprintf(base, sizeof base, "%s/.cache/weaver-engine", home);
    else
        return -1;
    if (create_dirs) {
        char parent[PATH_MAX];
        snprintf(parent, sizeof parent, "%s", base);
        char *slash = strrchr(parent, '/');
        if (slash && slash != parent) {
            *slash = '\0';
            mkdir(parent, 0755);
        }
        if (mkdir(base, 0755) != 0 && errno != EEXIST)
            return -1;
    }
    if ((size_t)snprintf(out, len, "%s/manifest-%s.json", base, h) >= len)
        return -1;
    return 0;
}

static cJSON *load_cache(const char *path)
{
    char *text = read_small(path, 1 << 20, NULL);
    cJSON *doc = text ? cJSON_Parse(text) : NULL;
    free(text);
    const cJSON *fmt = cJSON_GetObjectItemCaseSensitive(doc, "format");
    if (!cJSON_IsString(fmt) || strcmp(fmt->valuestring, CACHE_FORMAT) != 0) {
        cJSON_Delete(doc);
        return NULL;
    }
    return doc;
}

static bool str_is(const cJSON *o, const char *key, const char *want)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) && strcmp(v->valuestring, want) == 0;
}

static bool lookup(const cJSON *cache, ManifestFile *f)
{
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(cache, "files"), f->rel);
    char size[32], mtime[32], ino[32];
    snprintf(size, sizeof size, "%lld", f->size);
    snprintf(mtime, sizeof mtime, "%lld", f->mtime_ns);
    snprintf(ino, sizeof ino, "%llu", f->ino);
    if (!e || !str_is(e, "size", size) || !str_is(e, "mtime_ns", mtime) || !str_is(e, "ino", ino))
        return false;
    const cJSON *sha = cJSON_GetObjectItemCaseSensitive(e, "sha256");
    if (!cJSON_IsString(sha) || strlen(sha->valuestring) != 64 ||
        strspn(sha->valuestring, "0123456789abcdef") != 64)
        return false;
    memcpy(f->sha, sha->valuestring, 65);
    return true;
}

static int write_cache(const char *path, const Manifest *m, const char *manifest_hex)
{
    cJSON *doc = cJSON_CreateObject();
    cJSON_AddStringToObject(doc, "format", CACHE_FORMAT);
    cJSON_AddStringToObject(doc, "manifest_sha256", manifest_hex);
    cJSON *files = cJSON_AddObjectToObject(doc, "files");
    for (int i = 0; i < m->n; i++) {
        if (!m->f[i].cacheable)
            continue;
        char size[32], mtime[32], ino[32];
        snprintf(size, sizeof size, "%lld", m->f[i].size);
        snprintf(mtime, sizeof mtime, "%lld", m->f[i].mtime_ns);
        snprintf(ino, sizeof ino, "%llu", m->f[i].ino);
        cJSON *e = cJSON_AddObjectToObject(files, m->f[i].rel);
        cJSON_AddStringToObject(e, "size", size);
        cJSON_AddStringToObject(e, "mtime_ns", mtime);
        cJSON_AddStringToObject(e, "ino", ino);
        cJSON_AddStringToObject(e, "sha256", m->f[i].sha);
    }
    char *text = cJSON_Print(doc);
    cJSON_Delete(doc);
    if (!text)
        return -1;
    char tmp[PATH_MAX + 32];
    snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid());
    FILE *f = fopen(tmp, "wb");
    int rc = -1;
    if (f) {
        bool ok = fputs(text, f) >= 0 && fputc('\n', f) != EOF;
        ok = (fclose(f) == 0) && ok;
        if (ok && rename(tmp, path) == 0)
            rc = 0;
        else
            unlink(tmp);
    }
    free(text);
    return rc;
}

/* --- the hash ------------------------------------------------------------------------------- */

int snapshot_hash_cached_ex(const char *dir, char out_hex[65], SnapshotHashStats *stats, char *err, size_t errlen)
{
    SnapshotHashStats local;
    if (!stats)
        stats = &local;
    memset(stats, 0, sizeof *stats);
    struct stat db;
    if (!dir || !dir[0])
        return fail(err, errlen, "snapshot directory is empty");
    if (stat(dir, &db) != 0 || !S_ISDIR(db.st_mode))
        return fail(err, errlen, "%s: not a directory", dir);
    Manifest *m = calloc(1, sizeof *m);
    if (!m)
        return fail(err, errlen, "out of memory");
    int rc = -1;
    cJSON *cache = NULL;
    char side[PATH_MAX], xdg[PATH_MAX] = "";
    snprintf(side, sizeof side, "%s/%s", dir, SNAPSHOT_SIDECAR);
    if (collect(dir, m, err, errlen) != 0)
        goto out;

    const char *cache_from = side;
    cache = load_cache(side);
    if (!cache && xdg_cache_path(dir, xdg, sizeof xdg, false) == 0 && (cache = load_cache(xdg)) != NULL)
        cache_from = xdg;
    if (cache)
        snprintf(stats->cache_path, sizeof stats->cache_path, "%s", cache_from);

    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    long long now_ns = (long long)now.tv_sec * 1000000000LL + now.tv_nsec;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (!ctx || EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1) {
        EVP_MD_CTX_free(ctx);
        fail(err, errlen, "sha256 is unavailable (OpenSSL)");
        goto out;
    }
    int changed = 0;
    for (int i = 0; i < m->n; i++) {
        ManifestFile *f = &m->f[i];
        char path[PATH_MAX];
        snprintf(path, sizeof path, "%s/%s", dir, f->rel);
        if (lookup(cache, f)) {
            stats->from_cache++;
            f->cacheable = true;
        } else {
            long long size = 0;
            if (sha256_file(path, f->sha, &size) != 0) {
                fail(err, errlen, "%s: cannot read for the snapshot hash: %s", path, strerror(errno));
                EVP_MD_CTX_free(ctx);
                goto out;
            }
            struct stat sb;
            bool stable = stat(path, &sb) == 0 && (long long)sb.st_size == f->size && size == f->size &&
                          (long long)sb.st_mtim.tv_sec * 1000000000LL + sb.st_mtim.tv_nsec == f->mtime_ns;
            if (!stable) {
                fail(err, errlen, "%s changed while it was being hashed", path);
                EVP_MD_CTX_free(ctx);
                goto out;
            }
            f->cacheable = f->mtime_ns < now_ns - RACY_NS;
            stats->hashed++;
            changed++;
        }
        char line[700];
        int n = snprintf(line, sizeof line, "%s\t%lld\t%s\n", f->rel, f->size, f->sha);
        EVP_DigestUpdate(ctx, line, (size_t)n);
    }
    stats->files = m->n;
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    int ok = EVP_DigestFinal_ex(ctx, md, &mdlen);
    EVP_MD_CTX_free(ctx);
    if (ok != 1 || mdlen != 32) {
        fail(err, errlen, "sha256 failed (OpenSSL)");
        goto out;
    }
    hex(md, 32, out_hex);
    rc = 0;

    /* Refresh the cache when something was hashed or a cached file disappeared. */
    int cached_entries = cache ? cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(cache, "files")) : 0;
    if (changed || cached_entries != stats->from_cache) {
        if (access(dir, W_OK) == 0 && write_cache(side, m, out_hex) == 0) {
            snprintf(stats->cache_path, sizeof stats->cache_path, "%s", side);
            stats->cache_written = true;
        } else if (xdg_cache_path(dir, xdg, sizeof xdg, true) == 0 && write_cache(xdg, m, out_hex) == 0) {
            snprintf(stats->cache_path, sizeof stats->cache_path, "%s", xdg);
            stats->cache_written = true;
        }
    }
out:
    cJSON_Delete(cache);
    free(m);
    return rc;
}

int snapshot_hash_cached(const char *snapshot_dir, char out_hex[65], char *err, size_t errlen)
{
    return snapshot_hash_cached_ex(snapshot_dir, out_hex, NULL, err, errlen);
}

int snapshot_hash_file(const char *path, char out_hex[65], char *err, size_t errlen)
{
    char sha[65], line[700];
    long long size = 0;
    if (sha256_file(path, sha, &size) != 0)
        return fail(err, errlen, "%s: cannot read for the snapshot hash: %s", path, strerror(errno));
    const char *base = strrchr(path, '/');
    int n = snprintf(line, sizeof line, "%s\t%lld\t%s\n", base ? base + 1 : path, size, sha);
    if (n < 0 || (size_t)n >= sizeof line || sha256_hex_of(line, (size_t)n, out_hex) != 0)
        return fail(err, errlen, "%s: cannot hash its manifest line", path);
    return 0;
}
