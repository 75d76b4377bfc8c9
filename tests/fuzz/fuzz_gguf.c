/* fuzz_gguf.c: libFuzzer target for the GGUF reader (built only with -DWEAVER_FUZZ=ON and
 * clang). Any input must be refused with a message or parsed into tensors that lie inside the
 * buffer; then the model and tokenizer loaders run on whatever parsed. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "engine/decode/gguf.h"
#include "engine/decode/tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char err[256];
    uint8_t *copy = malloc(size ? size : 1);
    if (!copy) return 0;
    memcpy(copy, data, size);
    GgufFile *f = gguf_open_memory(copy, size, err, sizeof err);
    if (f) {
        for (uint64_t i = 0; i < f->n_tensors; i++) {
            const GgufTensor *t = &f->tensors[i];
            if ((const uint8_t *)t->data < copy || (const uint8_t *)t->data + t->size > copy + size) abort();
        }
        Tokenizer *tk = tok_load(f, err, sizeof err);
        if (tk) {
            TokVec tv = {0};
            tok_encode(tk, "hello world 123", 15, true, true, &tv, err, sizeof err);
            tokvec_free(&tv);
            tok_free(tk);
        }
        gguf_close(f);
    }
    free(copy);
    return 0;
}
