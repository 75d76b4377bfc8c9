/* fuzz_safetensors.c: libFuzzer target for the safetensors reader. Any input must be either
 * rejected with a message or accepted with every tensor inside the buffer; never a crash.
 * Build: cmake -DWEAVER_FUZZ=ON -DCMAKE_C_COMPILER=clang; run: ./fuzz_safetensors corpus_safetensors/ */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "engine/embed/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[256];
    SafeTensors *st = st_open_memory(data, size, "fuzz", err, sizeof err);
    if (!st) {
        if (err[0] == '\0') abort();
        return 0;
    }
    for (int i = 0; i < st->ntensors; i++) {
        const StTensor *t = &st->tensors[i];
        if (t->data < st->map || t->data + t->nbytes > st->map + st->size) abort();
        if (t->ndim == 1 && t->shape[0] <= 256) {
            float tmp[256];
            (void)st_read_f32(st, t->name, t->shape[0], -1, tmp, err, sizeof err);
        }
    }
    st_close(st);
    return 0;
}
