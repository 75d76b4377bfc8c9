/* gguf.c: GGUF v2/v3 parser over an mmap'd file or a memory buffer. Validates every count,
 * length, offset and size against the bytes that exist (overflow-safe) before touching them,
 * so a truncated or hostile file yields an error message, never an out-of-bounds read.
 * Must not interpret architectures or dequantise anything. */
#include "engine/decode/gguf.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct Cur {
    const uint8_t *base;
    size_t size, pos;
    char *err;
    size_t errlen;
} Cur;

static int fail(Cur *c, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = snprintf(c->err, c->errlen, "gguf: at byte %zu: ", c->pos);
    if (n >= 0 && (size_t)n < c->errlen) vsnprintf(c->err + n, c->errlen - (size_t)n, fmt, ap);
    va_end(ap);
    return -1;
}

static size_t left(const Cur *c) { return c->size - c->pos; }

static int need(Cur *c, uint64_t n, const char *what) {
    if (n > left(c))
        return fail(c, "%s needs %llu bytes but only %zu remain (file size %zu): truncated or corrupt",
                    what, (unsigned long long)n, left(c), c->size);
    return 0;
}

static int rd(Cur *c, void *out, size_t n, const char *what) {
    if (need(c, n, what)) return -1;
    memcpy(out, c->base + c->pos, n);
    c->pos += n;
    return 0;
}

static int rd_str(Cur *c, GgufStr *s, const char *what) {
    uint64_t len;
    if (rd(c, &len, 8, what)) return -1;
    if (need(c, len, what)) return -1;
    s->ptr = (const char *)c->base + c->pos;
    s->len = len;
    c->pos += (size_t)len;
    return 0;
}

static size_t scalar_size(GgufType t) {
    switch (t) {
    case GGUF_U8: case GGUF_I8: case GGUF_BOOL: return 1;
    case GGUF_U16: case GGUF_I16: return 2;
    case GGUF_U32: case GGUF_I32: case GGUF_F32: return 4;
    case GGUF_U64: case GGUF_I64: case GGUF_F64: return 8;
    default: return 0;
    }
}

const char *gguf_type_name(GgufType t) {
    static const char *names[] = {"u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool",
                                  "string", "array", "u64", "i64", "f64"};
    return (unsigned)t < sizeof names / sizeof names[0] ? names[t] : "?";
}

static void load_scalar(GgufKV *kv, GgufType t, const uint8_t *p) {
    uint8_t u8; int8_t i8; uint16_t u16; int16_t i16; uint32_t u32; int32_t i32; float f32;
    switch (t) {
    case GGUF_U8: case GGUF_BOOL: memcpy(&u8, p, 1); kv->v.u = u8; break;
    case GGUF_I8: memcpy(&i8, p, 1); kv->v.i = i8; break;
    case GGUF_U16: memcpy(&u16, p, 2); kv->v.u = u16; break;
    case GGUF_I16: memcpy(&i16, p, 2); kv->v.i = i16; break;
    case GGUF_U32: memcpy(&u32, p, 4); kv->v.u = u32; break;
    case GGUF_I32: memcpy(&i32, p, 4); kv->v.i = i32; break;
    case GGUF_F32: memcpy(&f32, p, 4); kv->v.f = f32; break;
    case GGUF_U64: memcpy(&kv->v.u, p, 8); break;
    case GGUF_I64: memcpy(&kv->v.i, p, 8); break;
    case GGUF_F64: memcpy(&kv->v.f, p, 8); break;
    default: break;
    }
}

static int parse_kv(Cur *c, GgufKV *kv) {
    GgufStr key;
    uint32_t t;
    if (rd_str(c, &key, "metadata key")) return -1;
    if (key.len == 0 || key.len > 65535) return fail(c, "metadata key length %llu is invalid", (unsigned long long)key.len);
    kv->key = malloc(key.len + 1);
    if (!kv->key) return fail(c, "out of memory");
    memcpy(kv->key, key.ptr, key.len);
    kv->key[key.len] = 0;
    if (memchr(kv->key, 0, key.len)) return fail(c, "metadata key contains a NUL byte");
    if (rd(c, &t, 4, "metadata value type")) return -1;
    kv->type = (GgufType)t;
    if (t == GGUF_STRING) {
        if (rd_str(c, &kv->v.str, kv->key)) return -1;
        return 0;
    }
    if (t == GGUF_ARRAY) {
        uint32_t at;
        uint64_t n;
        if (rd(c, &at, 4, "array element type") || rd(c, &n, 8, "array length")) return -1;
        kv->arr_type = (GgufType)at;
        kv->arr_n = n;
        if (at == GGUF_STRING) {
            if (n > left(c) / 8) return fail(c, "key '%s': array of %llu strings cannot fit in the %zu bytes left",
                                             kv->key, (unsigned long long)n, left(c));
            kv->arr_strs = malloc((n ? n : 1) * sizeof *kv->arr_strs);
            if (!kv->arr_strs) return fail(c, "out of memory");
            for (uint64_t i = 0; i < n; i++)
                if (rd_str(c, &kv->arr_strs[i], kv->key)) return -1;
            return 0;
        }
        size_t es = scalar_size((GgufType)at);
        if (es == 0) return fail(c, "key '%s': array element type %u is not allowed", kv->key, at);
        if (n > left(c) / es)
            return fail(c, "key '%s': array of %llu x %zu-byte elements runs past the end of the file",
                        kv->key, (unsigned long long)n, es);
        kv->arr_data = c->base + c->pos;
        c->pos += (size_t)(n * es);
        return 0;
    }
    size_t es = scalar_size((GgufType)t);
    if (es == 0) return fail(c, "key '%s': unknown value type %u", kv->key, t);
    if (need(c, es, kv->key)) return -1;
    load_scalar(kv, (GgufType)t, c->base + c->pos);
    c->pos += es;
    return 0;
}

/* Block geometry of every GGML type a file may carry (so files are validated even when the
 * model loader later refuses the type). */
static int type_geometry(uint32_t type, uint64_t *elems, uint64_t *bytes) {
    static const struct { uint32_t id; uint32_t elems, bytes; } g[] = {
        {0, 1, 4}, {1, 1, 2}, {2, 32, 18}, {3, 32, 20}, {6, 32, 22}, {7, 32, 24}, {8, 32, 34},
        {9, 32, 36}, {10, 256, 84}, {11, 256, 110}, {12, 256, 144}, {13, 256, 176},
        {14, 256, 210}, {15, 256, 292}, {24, 1, 1}, {25, 1, 2}, {26, 1, 4}, {27, 1, 8},
        {28, 1, 8}, {30, 1, 2},
    };
    for (size_t i = 0; i < sizeof g / sizeof g[0]; i++)
        if (g[i].id == type) {
            *elems = g[i].elems;
            *bytes = g[i].bytes;
            return 0;
        }
    return -1;
}

static int parse_tensor(Cur *c, GgufTensor *t) {
    GgufStr name;
    uint32_t nd, type;
    if (rd_str(c, &name, "tensor name")) return -1;
    if (name.len == 0 || name.len > 4096) return fail(c, "tensor name length %llu is invalid", (unsigned long long)name.len);
    t->name = malloc(name.len + 1);
    if (!t->name) return fail(c, "out of memory");
    memcpy(t->name, name.ptr, name.len);
    t->name[name.len] = 0;
    if (rd(c, &nd, 4, "tensor dimension count")) return -1;
    if (nd < 1 || nd > GGUF_MAX_DIMS) return fail(c, "tensor '%s': %u dimensions (1..4 allowed)", t->name, nd);
    t->n_dims = (int)nd;
    uint64_t nel = 1;
    for (int i = 0; i < GGUF_MAX_DIMS; i++) t->ne[i] = 1;
    for (uint32_t i = 0; i < nd; i++) {
        uint64_t d;
        if (rd(c, &d, 8, "tensor dimension")) return -1;
        if (d == 0 || d > (uint64_t)INT64_MAX / nel)
            return fail(c, "tensor '%s': dimension %u = %llu is zero or overflows", t->name, i, (unsigned long long)d);
        t->ne[i] = (int64_t)d;
        nel *= d;
    }
    if (rd(c, &type, 4, "tensor type") || rd(c, &t->offset, 8, "tensor offset")) return -1;
    t->type = (int)type;
    uint64_t be, bb;
    if (type_geometry(type, &be, &bb)) return fail(c, "tensor '%s': unknown tensor type %u", t->name, type);
    if ((uint64_t)t->ne[0] % be)
        return fail(c, "tensor '%s': row length %lld is not a multiple of the type's block (%llu)", t->name,
                    (long long)t->ne[0], (unsigned long long)be);
    uint64_t blocks = nel / be;
    if (blocks > UINT64_MAX / bb) return fail(c, "tensor '%s': size overflows", t->name);
    t->size = blocks * bb;
    return 0;
}

static GgufFile *parse(GgufFile *f, char *err, size_t errlen) {
    Cur c = {.base = f->base, .size = f->size, .pos = 0, .err = err, .errlen = errlen};
    uint32_t magic;
    if (rd(&c, &magic, 4, "magic")) goto fail;
    if (memcmp(&magic, "GGUF", 4) != 0) {
        fail(&c, "not a GGUF file (bad magic)");
        goto fail;
    }
    if (rd(&c, &f->version, 4, "version")) goto fail;
    if (f->version != 2 && f->version != 3) {
        fail(&c, "GGUF version %u is not supported (2 and 3 are)", f->version);
        goto fail;
    }
    if (rd(&c, &f->n_tensors, 8, "tensor count") || rd(&c, &f->n_kv, 8, "metadata count")) goto fail;
    /* Every KV takes at least 12 bytes and every tensor info at least 32: bound the counts by
     * the file size before allocating anything. */
    if (f->n_kv > left(&c) / 12 || f->n_tensors > left(&c) / 32) {
        fail(&c, "counts (%llu metadata, %llu tensors) cannot fit in a %zu-byte file",
             (unsigned long long)f->n_kv, (unsigned long long)f->n_tensors, f->size);
        goto fail;
    }
    f->kv = calloc(f->n_kv ? f->n_kv : 1, sizeof *f->kv);
    f->tensors = calloc(f->n_tensors ? f->n_tensors : 1, sizeof *f->tensors);
    if (!f->kv || !f->tensors) {
        fail(&c, "out of memory");
        goto fail;
    }
    for (uint64_t i = 0; i < f->n_kv; i++)
        if (parse_kv(&c, &f->kv[i])) goto fail;
    f->alignment = 32;
    const GgufKV *al = gguf_find(f, "general.alignment");
    if (al) {
        if (al->type != GGUF_U32 || al->v.u == 0 || (al->v.u & (al->v.u - 1))) {
            fail(&c, "general.alignment must be a u32 power of two");
            goto fail;
        }
        f->alignment = al->v.u;
    }
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        if (parse_tensor(&c, &f->tensors[i])) goto fail;
        for (uint64_t j = 0; j < i; j++)
            if (strcmp(f->tensors[j].name, f->tensors[i].name) == 0) {
                fail(&c, "tensor '%s' appears twice", f->tensors[i].name);
                goto fail;
            }
    }
    uint64_t pos = c.pos;
    f->data_offset = (pos + f->alignment - 1) / f->alignment * f->alignment;
    if (f->n_tensors && f->data_offset > f->size) {
        fail(&c, "data section starts at %llu, past the end of the %zu-byte file", (unsigned long long)f->data_offset, f->size);
        goto fail;
    }
    uint64_t avail = f->data_offset <= f->size ? f->size - f->data_offset : 0;
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        GgufTensor *t = &f->tensors[i];
        if (t->offset % f->alignment) {
            fail(&c, "tensor '%s': offset %llu is not a multiple of the alignment %llu", t->name,
                 (unsigned long long)t->offset, (unsigned long long)f->alignment);
            goto fail;
        }
        if (t->offset > avail || t->size > avail - t->offset) {
            fail(&c, "tensor '%s': %llu bytes at data offset %llu run past the end of the file (%llu data bytes): truncated",
                 t->name, (unsigned long long)t->size, (unsigned long long)t->offset, (unsigned long long)avail);
            goto fail;
        }
        t->data = f->base + f->data_offset + t->offset;
    }
    return f;
fail:
    gguf_close(f);
    return NULL;
}

GgufFile *gguf_open_memory(const void *data, size_t size, char *err, size_t errlen) {
    GgufFile *f = calloc(1, sizeof *f);
    if (!f) {
        snprintf(err, errlen, "gguf: out of memory");
        return NULL;
    }
    f->base = data;
    f->size = size;
    return parse(f, err, errlen);
}

GgufFile *gguf_open(const char *path, char *err, size_t errlen) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(err, errlen, "gguf: cannot open %s: %s", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size < 16) {
        snprintf(err, errlen, "gguf: %s is not a regular file of at least 16 bytes", path);
        close(fd);
        return NULL;
    }
    void *m = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (m == MAP_FAILED) {
        snprintf(err, errlen, "gguf: cannot map %s: %s", path, strerror(errno));
        return NULL;
    }
    GgufFile *f = calloc(1, sizeof *f);
    if (!f) {
        munmap(m, (size_t)st.st_size);
        snprintf(err, errlen, "gguf: out of memory");
        return NULL;
    }
    f->base = m;
    f->size = (size_t)st.st_size;
    f->mapped = true;
    f = parse(f, err, errlen);
    if (!f) {
        size_t n = strlen(err);
        if (n + 8 < errlen) snprintf(err + n, errlen - n, " (%s)", path);
    }
    return f;
}

void gguf_release(const GgufFile *f, const void *ptr, size_t len) {
    if (!f || !f->mapped) return;
    long page = sysconf(_SC_PAGESIZE);
    uintptr_t a = ((uintptr_t)ptr + (uintptr_t)page - 1) & ~(uintptr_t)(page - 1);
    uintptr_t e = ((uintptr_t)ptr + len) & ~(uintptr_t)(page - 1);
    if (e > a) madvise((void *)a, e - a, MADV_DONTNEED); /* a private read-only file map: refaults from the file */
}

void gguf_close(GgufFile *f) {
    if (!f) return;
    if (f->kv)
        for (uint64_t i = 0; i < f->n_kv; i++) {
            free(f->kv[i].key);
            free(f->kv[i].arr_strs);
        }
    if (f->tensors)
        for (uint64_t i = 0; i < f->n_tensors; i++) free(f->tensors[i].name);
    free(f->kv);
    free(f->tensors);
    if (f->mapped) munmap((void *)f->base, f->size);
    free(f);
}

const GgufKV *gguf_find(const GgufFile *f, const char *key) {
    for (uint64_t i = 0; i < f->n_kv; i++)
        if (f->kv[i].key && strcmp(f->kv[i].key, key) == 0) return &f->kv[i];
    return NULL;
}

const GgufTensor *gguf_find_tensor(const GgufFile *f, const char *name) {
    for (uint64_t i = 0; i < f->n_tensors; i++)
        if (strcmp(f->tensors[i].name, name) == 0) return &f->tensors[i];
    return NULL;
}

static int is_signed(GgufType t) { return t == GGUF_I8 || t == GGUF_I16 || t == GGUF_I32 || t == GGUF_I64; }
static int is_unsigned(GgufType t) { return t == GGUF_U8 || t == GGUF_U16 || t == GGUF_U32 || t == GGUF_U64; }

int gguf_get_i64(const GgufFile *f, const char *key, int64_t *out) {
    const GgufKV *kv = gguf_find(f, key);
    if (!kv) return -1;
    if (is_signed(kv->type)) { *out = kv->v.i; return 0; }
    if (is_unsigned(kv->type) && kv->v.u <= (uint64_t)INT64_MAX) { *out = (int64_t)kv->v.u; return 0; }
    return -1;
}

int gguf_get_u32(const GgufFile *f, const char *key, uint32_t *out) {
    int64_t v;
    if (gguf_get_i64(f, key, &v) || v < 0 || v > (int64_t)UINT32_MAX) return -1;
    *out = (uint32_t)v;
    return 0;
}

int gguf_get_f32(const GgufFile *f, const char *key, float *out) {
    const GgufKV *kv = gguf_find(f, key);
    if (!kv || (kv->type != GGUF_F32 && kv->type != GGUF_F64)) return -1;
    *out = (float)kv->v.f;
    return 0;
}

int gguf_get_bool(const GgufFile *f, const char *key, bool *out) {
    const GgufKV *kv = gguf_find(f, key);
    if (!kv || kv->type != GGUF_BOOL) return -1;
    *out = kv->v.u != 0;
    return 0;
}

int gguf_get_str(const GgufFile *f, const char *key, GgufStr *out) {
    const GgufKV *kv = gguf_find(f, key);
    if (!kv || kv->type != GGUF_STRING) return -1;
    *out = kv->v.str;
    return 0;
}

int64_t gguf_arr_int(const GgufKV *kv, uint64_t i) {
    const uint8_t *p = kv->arr_data + i * scalar_size(kv->arr_type);
    GgufKV tmp = {0};
    load_scalar(&tmp, kv->arr_type, p);
    if (is_signed(kv->arr_type)) return tmp.v.i;
    if (kv->arr_type == GGUF_F32 || kv->arr_type == GGUF_F64) return (int64_t)tmp.v.f;
    return (int64_t)tmp.v.u;
}

double gguf_arr_float(const GgufKV *kv, uint64_t i) {
    const uint8_t *p = kv->arr_data + i * scalar_size(kv->arr_type);
    GgufKV tmp = {0};
    load_scalar(&tmp, kv->arr_type, p);
    if (kv->arr_type == GGUF_F32 || kv->arr_type == GGUF_F64) return tmp.v.f;
    if (is_signed(kv->arr_type)) return (double)tmp.v.i;
    return (double)tmp.v.u;
}
