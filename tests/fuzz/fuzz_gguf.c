/* fuzz_gguf.c: libFuzzer target for the GGUF reader and the loaders that read what it parsed
 * (built only with -DWEAVER_FUZZ=ON and clang). Any input must be refused with a message or
 * parsed into tensors that lie inside the buffer; on whatever parsed, the tokenizer loader runs
 * (and encodes a text), then the model loader; a model it accepts must point every weight
 * matrix inside the buffer. Seeds: corpus_gguf/ (tests/fuzz/make_seeds.py). */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/decode/gguf.h"
#include "engine/decode/model.h"
#include "engine/decode/tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A weight matrix the model accepted: rows * row_bytes from its data must be in the buffer. */
static void check_mat(const WMat *w, const uint8_t *buf, size_t size)
{
    if (!w->data) return;
    const uint8_t *p = w->data;
    if (p < buf || (size_t)w->rows * w->row_bytes > size || p + (size_t)w->rows * w->row_bytes > buf + size) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char err[256];
    /* A private copy of exactly size bytes, so a read past the end is caught by ASan. */
    uint8_t *copy = malloc(size ? size : 1);
    if (!copy) return 0;
    memcpy(copy, data, size);
    err[0] = '\0';
    GgufFile *f = gguf_open_memory(copy, size, err, sizeof err);
    if (!f) {
        if (!err[0]) abort(); /* refused without saying why */
        free(copy);
        return 0;
    }
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
    err[0] = '\0';
    Model *m = model_load(f, err, sizeof err); /* owns f from here, also when it fails */
    if (!m) {
        if (!err[0]) abort();
    } else {
        check_mat(&m->tok_embd, copy, size);
        check_mat(&m->output, copy, size);
        for (int l = 0; l < m->hp.n_layer; l++) {
            const ModelLayer *L = &m->layers[l];
            const WMat *ws[] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->wgate, &L->wup, &L->wdown};
            for (size_t k = 0; k < sizeof ws / sizeof ws[0]; k++) check_mat(ws[k], copy, size);
        }
        model_free(m);
    }
    free(copy);
    return 0;
}
