/* gguf.h: read-only GGUF (v2, v3) reader. Every length, count, offset and size is checked
 * against the file before use; a truncated or lying file is an error naming the problem.
 * Tensor data stays in the mmap'd file (never copied). Knows nothing about architectures. */
#ifndef WEAVER_GGUF_H
#define WEAVER_GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum GgufType {
    GGUF_U8 = 0, GGUF_I8 = 1, GGUF_U16 = 2, GGUF_I16 = 3, GGUF_U32 = 4, GGUF_I32 = 5,
    GGUF_F32 = 6, GGUF_BOOL = 7, GGUF_STRING = 8, GGUF_ARRAY = 9, GGUF_U64 = 10,
    GGUF_I64 = 11, GGUF_F64 = 12,
} GgufType;

typedef struct GgufStr {
    const char *ptr; /* not NUL-terminated: points into the file */
    uint64_t len;
} GgufStr;

typedef struct GgufKV {
    char *key;          /* NUL-terminated copy */
    GgufType type;
    union {
        uint64_t u;     /* unsigned integers and bool */
        int64_t i;      /* signed integers */
        double f;       /* F32, F64 */
        GgufStr str;
    } v;
    /* ARRAY: element type, count, elements (fixed-size types: raw little-endian data in the
     * file; strings: strs[]). Nested arrays are rejected. */
    GgufType arr_type;
    uint64_t arr_n;
    const uint8_t *arr_data;
    GgufStr *arr_strs;
} GgufKV;

#define GGUF_MAX_DIMS 4

typedef struct GgufTensor {
    char *name;
    int n_dims;
    int64_t ne[GGUF_MAX_DIMS]; /* ne[0] = elements per row (fastest), unused dims = 1 */
    int type;                  /* GGML type id (kernels/quant.h) */
    uint64_t offset;           /* from the start of the data section */
    uint64_t size;             /* bytes */
    const void *data;          /* in the mapping */
} GgufTensor;

typedef struct GgufFile {
    uint32_t version;
    uint64_t n_kv, n_tensors;
    GgufKV *kv;
    GgufTensor *tensors;
    uint64_t alignment;
    uint64_t data_offset;   /* file offset of the data section */
    const uint8_t *base;    /* whole file */
    size_t size;
    bool mapped;            /* base is an mmap we own */
} GgufFile;

/* Opens and validates a file; NULL with err set on any problem. */
GgufFile *gguf_open(const char *path, char *err, size_t errlen);
/* Drops the mapped pages wholly inside [ptr, ptr + len) from this process (they come back from
 * the file on the next read): for data a caller has copied and will rarely read again. Nothing
 * for a memory buffer. */
void gguf_release(const GgufFile *f, const void *ptr, size_t len);
/* Same over a caller-owned buffer that must outlive the GgufFile (tests, fuzzing). */
GgufFile *gguf_open_memory(const void *data, size_t size, char *err, size_t errlen);
void gguf_close(GgufFile *f); /* NULL-safe */

const GgufKV *gguf_find(const GgufFile *f, const char *key);
const GgufTensor *gguf_find_tensor(const GgufFile *f, const char *name);
const char *gguf_type_name(GgufType t);

/* Typed getters: return 0 and set *out, or -1 when the key is absent or of another kind.
 * Integer getters accept any integer type whose value fits; float getters accept F32/F64. */
int gguf_get_u32(const GgufFile *f, const char *key, uint32_t *out);
int gguf_get_i64(const GgufFile *f, const char *key, int64_t *out);
int gguf_get_f32(const GgufFile *f, const char *key, float *out);
int gguf_get_bool(const GgufFile *f, const char *key, bool *out);
/* String value: *out points into the file (not NUL-terminated). */
int gguf_get_str(const GgufFile *f, const char *key, GgufStr *out);
/* Element i of an integer/float array as int64/double (bounds-checked by the caller). */
int64_t gguf_arr_int(const GgufKV *kv, uint64_t i);
double gguf_arr_float(const GgufKV *kv, uint64_t i);

#endif
