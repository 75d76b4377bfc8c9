/* safetensors.h: read-only view of a .safetensors file (mmap'd, header parsed with cJSON).
 * Every offset, shape and dtype is checked against the file size before anything is read, so
 * a truncated or lying file is an error with the file name and the problem, never a crash.
 * Must not allocate per tensor read, log or exit. */
#ifndef WEAVER_SAFETENSORS_H
#define WEAVER_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#define ST_MAX_DIMS 8
#define ST_MAX_HEADER (100u << 20) /* the format's own limit on the JSON header */

typedef enum StDtype {
    ST_F32 = 0, ST_F16, ST_BF16, ST_F64, ST_I64, ST_I32, ST_I16, ST_I8, ST_U8, ST_BOOL,
    ST_U16, ST_U32, ST_U64, ST_F8_E4M3, ST_F8_E5M2, ST_DTYPE_COUNT
} StDtype;

typedef struct StTensor {
    char *name;
    StDtype dtype;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    uint64_t numel;
    const uint8_t *data; /* inside the mapping; may be unaligned */
    uint64_t nbytes;
} StTensor;

typedef struct SafeTensors {
    char path[512];
    uint8_t *map;     /* whole file (mmap, or a copy for st_open_memory) */
    size_t size;
    int mapped;       /* 1 = munmap on close, 0 = free */
    int ntensors;
    StTensor *tensors;
} SafeTensors;

/* Opens and validates a file. NULL on failure with the reason in err ("<path>: <problem>"). */
SafeTensors *st_open(const char *path, char *err, size_t errlen);
/* Same over a copy of an in-memory buffer (fuzzing, tests); `name` is used in messages. */
SafeTensors *st_open_memory(const void *buf, size_t len, const char *name, char *err, size_t errlen);
void st_close(SafeTensors *st); /* NULL-safe */

const StTensor *st_find(const SafeTensors *st, const char *name);
const char *st_dtype_name(StDtype dt);
size_t st_dtype_size(StDtype dt);

/* Copies tensor `name` into out as f32 (converting F16/BF16), checking that it exists, that
 * its dtype is floating and that its shape is exactly {d0[, d1]} (d1 < 0 = 1-D). */
int st_read_f32(const SafeTensors *st, const char *name, int64_t d0, int64_t d1, float *out,
                char *err, size_t errlen);

#endif
