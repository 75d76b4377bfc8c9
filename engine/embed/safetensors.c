/* safetensors.c: the safetensors reader. Layout: u64 little-endian header length N, N bytes of
 * JSON {"name": {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}, then
 * the data. Validation is done once in st_open; readers afterwards trust the table.
 * Must not trust any number from the file before checking it. */
#include "engine/embed/safetensors.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kernels/cpu_ops.h"

static const struct { const char *name; size_t size; } dtypes[ST_DTYPE_COUNT] = {
    [ST_F32] = {"F32", 4}, [ST_F16] = {"F16", 2}, [ST_BF16] = {"BF16", 2}, [ST_F64] = {"F64", 8},
    [ST_I64] = {"I64", 8}, [ST_I32] = {"I32", 4}, [ST_I16] = {"I16", 2}, [ST_I8] = {"I8", 1},
    [ST_U8] = {"U8", 1}, [ST_BOOL] = {"BOOL", 1}, [ST_U16] = {"U16", 2}, [ST_U32] = {"U32", 4},
    [ST_U64] = {"U64", 8}, [ST_F8_E4M3] = {"F8_E4M3", 1}, [ST_F8_E5M2] = {"F8_E5M2", 1},
};

const char *st_dtype_name(StDtype dt) { return (unsigned)dt < ST_DTYPE_COUNT ? dtypes[dt].name : "?"; }
size_t st_dtype_size(StDtype dt) { return (unsigned)dt < ST_DTYPE_COUNT ? dtypes[dt].size : 0; }

static void seterr(char *err, size_t errlen, const char *path, const char *fmt, ...)
{
    if (!err || !errlen) return;
    int n = snprintf(err, errlen, "%s: ", path);
    if (n < 0 || (size_t)n >= errlen) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err + n, errlen - (size_t)n, fmt, ap);
    va_end(ap);
}

/* A JSON number that is an exact non-negative integer <= 2^53. */
static int json_uint(const cJSON *j, uint64_t *out)
{
    if (!cJSON_IsNumber(j)) return -1;
    double d = j->valuedouble;
    if (!(d >= 0.0) || d > 9007199254740992.0 || floor(d) != d) return -1;
    *out = (uint64_t)d;
    return 0;
}

typedef struct Range { uint64_t begin, end; int idx; } Range;

static int range_cmp(const void *a, const void *b)
{
    const Range *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    return x->end < y->end ? -1 : (x->end > y->end);
}

static void free_table(SafeTensors *st)
{
    for (int i = 0; i < st->ntensors; i++) free(st->tensors[i].name);
    free(st->tensors);
    st->tensors = NULL;
    st->ntensors = 0;
}

static int parse(SafeTensors *st, char *err, size_t errlen)
{
    const char *p = st->path;
    if (st->size < 8) {
        seterr(err, errlen, p, "file is %zu bytes, too short for a safetensors header", st->size);
        return -1;
    }
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | st->map[i];
    if (hlen > st->size - 8) {
        seterr(err, errlen, p, "header length %llu runs past the end of the file (%zu bytes): truncated?",
               (unsigned long long)hlen, st->size);
        return -1;
    }
    if (hlen > ST_MAX_HEADER) {
        seterr(err, errlen, p, "header length %llu is over the %u-byte limit", (unsigned long long)hlen, ST_MAX_HEADER);
        return -1;
    }
    const uint8_t *data = st->map + 8 + hlen;
    uint64_t data_size = st->size - 8 - hlen;
    cJSON *root = cJSON_ParseWithLength((const char *)st->map + 8, (size_t)hlen);
    if (!root || !cJSON_IsObject(root)) {
        seterr(err, errlen, p, "header is not a JSON object");
        cJSON_Delete(root);
        return -1;
    }
    int n = 0;
    for (cJSON *it = root->child; it; it = it->next) n++;
    st->tensors = calloc(n ? (size_t)n : 1, sizeof *st->tensors);
    Range *ranges = calloc(n ? (size_t)n : 1, sizeof *ranges);
    if (!st->tensors || !ranges) {
        seterr(err, errlen, p, "out of memory for %d tensor entries", n);
        goto fail;
    }
    for (cJSON *it = root->child; it; it = it->next) {
        const char *name = it->string ? it->string : "";
        if (strcmp(name, "__metadata__") == 0) {
            if (!cJSON_IsObject(it)) {
                seterr(err, errlen, p, "__metadata__ is not an object");
                goto fail;
            }
            continue;
        }
        if (!cJSON_IsObject(it)) {
            seterr(err, errlen, p, "tensor '%s': entry is not an object", name);
            goto fail;
        }
        StTensor *t = &st->tensors[st->ntensors];
        const cJSON *jd = cJSON_GetObjectItemCaseSensitive(it, "dtype");
        const cJSON *js = cJSON_GetObjectItemCaseSensitive(it, "shape");
        const cJSON *jo = cJSON_GetObjectItemCaseSensitive(it, "data_offsets");
        if (!cJSON_IsString(jd)) {
            seterr(err, errlen, p, "tensor '%s': missing or non-string dtype", name);
            goto fail;
        }
        int dt = -1;
        for (int d = 0; d < ST_DTYPE_COUNT; d++)
            if (strcmp(jd->valuestring, dtypes[d].name) == 0) dt = d;
        if (dt < 0) {
            seterr(err, errlen, p, "tensor '%s': unknown dtype '%.32s'", name, jd->valuestring);
            goto fail;
        }
        t->dtype = (StDtype)dt;
        if (!cJSON_IsArray(js)) {
            seterr(err, errlen, p, "tensor '%s': missing or non-array shape", name);
            goto fail;
        }
        int nd = cJSON_GetArraySize(js);
        if (nd > ST_MAX_DIMS) {
            seterr(err, errlen, p, "tensor '%s': %d dimensions, at most %d supported", name, nd, ST_MAX_DIMS);
            goto fail;
        }
        t->ndim = nd;
        uint64_t numel = 1;
        int k = 0;
        for (const cJSON *d = js->child; d; d = d->next, k++) {
            uint64_t v;
            if (json_uint(d, &v) != 0 || v > INT64_MAX) {
                seterr(err, errlen, p, "tensor '%s': shape[%d] is not a non-negative integer", name, k);
                goto fail;
            }
            t->shape[k] = (int64_t)v;
            if (v != 0 && numel > UINT64_MAX / v) {
                seterr(err, errlen, p, "tensor '%s': shape overflows", name);
                goto fail;
            }
            numel *= v;
        }
        t->numel = numel;
        uint64_t es = dtypes[dt].size;
        if (numel > UINT64_MAX / es) {
            seterr(err, errlen, p, "tensor '%s': byte size overflows", name);
            goto fail;
        }
        uint64_t begin, end;
        if (!cJSON_IsArray(jo) || cJSON_GetArraySize(jo) != 2 || json_uint(jo->child, &begin) != 0 ||
            json_uint(jo->child->next, &end) != 0) {
            seterr(err, errlen, p, "tensor '%s': data_offsets is not [begin, end] of integers", name);
            goto fail;
        }
        if (begin > end || end > data_size) {
            seterr(err, errlen, p, "tensor '%s': data_offsets [%llu, %llu] outside the %llu data bytes: truncated or corrupt",
                   name, (unsigned long long)begin, (unsigned long long)end, (unsigned long long)data_size);
            goto fail;
        }
        if (end - begin != numel * es) {
            seterr(err, errlen, p, "tensor '%s': %llu bytes in data_offsets but shape x %s needs %llu",
                   name, (unsigned long long)(end - begin), dtypes[dt].name, (unsigned long long)(numel * es));
            goto fail;
        }
        t->data = data + begin;
        t->nbytes = end - begin;
        t->name = strdup(name);
        if (!t->name) {
            seterr(err, errlen, p, "out of memory");
            goto fail;
        }
        for (int j = 0; j < st->ntensors; j++) {
            if (strcmp(st->tensors[j].name, name) == 0) {
                free(t->name);
                t->name = NULL;
                seterr(err, errlen, p, "tensor '%s' appears twice in the header", name);
                goto fail;
            }
        }
        ranges[st->ntensors] = (Range){begin, end, st->ntensors};
        st->ntensors++;
    }
    qsort(ranges, (size_t)st->ntensors, sizeof *ranges, range_cmp);
    for (int i = 1; i < st->ntensors; i++) {
        if (ranges[i].begin < ranges[i - 1].end) {
            seterr(err, errlen, p, "tensors '%s' and '%s' overlap in the data section",
                   st->tensors[ranges[i - 1].idx].name, st->tensors[ranges[i].idx].name);
            goto fail;
        }
    }
    free(ranges);
    cJSON_Delete(root);
    return 0;
fail:
    free(ranges);
    cJSON_Delete(root);
    free_table(st);
    return -1;
}

SafeTensors *st_open(const char *path, char *err, size_t errlen)
{
    SafeTensors *st = calloc(1, sizeof *st);
    if (!st) {
        seterr(err, errlen, path, "out of memory");
        return NULL;
    }
    snprintf(st->path, sizeof st->path, "%s", path);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        seterr(err, errlen, path, "cannot open: %s", strerror(errno));
        goto out_free;
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        seterr(err, errlen, path, "not a regular file");
        goto out_close;
    }
    st->size = (size_t)sb.st_size;
    if (st->size == 0) {
        seterr(err, errlen, path, "file is empty");
        goto out_close;
    }
    void *m = mmap(NULL, st->size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (m == MAP_FAILED) {
        seterr(err, errlen, path, "mmap failed: %s", strerror(errno));
        goto out_close;
    }
    close(fd);
    st->map = m;
    st->mapped = 1;
    if (parse(st, err, errlen) != 0) {
        st_close(st);
        return NULL;
    }
    return st;
out_close:
    close(fd);
out_free:
    free(st);
    return NULL;
}

SafeTensors *st_open_memory(const void *buf, size_t len, const char *name, char *err, size_t errlen)
{
    SafeTensors *st = calloc(1, sizeof *st);
    if (!st) return NULL;
    snprintf(st->path, sizeof st->path, "%s", name ? name : "<memory>");
    st->map = malloc(len ? len : 1);
    if (!st->map) {
        seterr(err, errlen, st->path, "out of memory");
        free(st);
        return NULL;
    }
    if (len) memcpy(st->map, buf, len);
    st->size = len;
    if (parse(st, err, errlen) != 0) {
        st_close(st);
        return NULL;
    }
    return st;
}

void st_close(SafeTensors *st)
{
    if (!st) return;
    free_table(st);
    if (st->mapped)
        munmap(st->map, st->size);
    else
        free(st->map);
    free(st);
}

const StTensor *st_find(const SafeTensors *st, const char *name)
{
    for (int i = 0; i < st->ntensors; i++)
        if (strcmp(st->tensors[i].name, name) == 0) return &st->tensors[i];
    return NULL;
}

int st_read_f32(const SafeTensors *st, const char *name, int64_t d0, int64_t d1, float *out,
                char *err, size_t errlen)
{
    const StTensor *t = st_find(st, name);
    if (!t) {
        seterr(err, errlen, st->path, "tensor '%s' is missing", name);
        return -1;
    }
    int want_nd = d1 < 0 ? 1 : 2;
    if (t->ndim != want_nd || t->shape[0] != d0 || (want_nd == 2 && t->shape[1] != d1)) {
        char got[128] = "[";
        for (int i = 0; i < t->ndim; i++) {
            size_t l = strlen(got);
            snprintf(got + l, sizeof got - l, "%s%lld", i ? ", " : "", (long long)t->shape[i]);
        }
        strncat(got, "]", sizeof got - strlen(got) - 1);
        if (want_nd == 1)
            seterr(err, errlen, st->path, "tensor '%s' has shape %s, config.json implies [%lld]", name, got, (long long)d0);
        else
            seterr(err, errlen, st->path, "tensor '%s' has shape %s, config.json implies [%lld, %lld]", name, got,
                   (long long)d0, (long long)d1);
        return -1;
    }
    const uint8_t *src = t->data;
    switch (t->dtype) {
    case ST_F32:
        memcpy(out, src, t->numel * 4);
        return 0;
    case ST_F16:
    case ST_BF16:
        for (uint64_t i = 0; i < t->numel; i++) {
            unsigned short h = (unsigned short)(src[2 * i] | (src[2 * i + 1] << 8));
            out[i] = t->dtype == ST_F16 ? cpu_f16_to_f32(h) : cpu_bf16_to_f32(h);
        }
        return 0;
    default:
        seterr(err, errlen, st->path, "tensor '%s' has dtype %s; only F32, F16 and BF16 weights are supported",
               name, st_dtype_name(t->dtype));
        return -1;
    }
}
