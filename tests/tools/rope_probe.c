/* rope_probe.c: test-only window onto the decoder's RoPE table (model_rope_row) for
 * tests/reference/test_decode_llamacpp.py, which compares its bits with ggml's rope op.
 * usage: rope_probe MODEL.gguf N_CTX POS...
 * Loads the model, sets the context as the generator does (model_set_ctx), and prints one line per
 * position: the rope_dim floats cos0 sin0 cos1 sin1 ... as unsigned 32-bit patterns. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/decode/model.h"

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: rope_probe MODEL.gguf N_CTX POS...\n");
        return 2;
    }
    char err[512];
    GgufFile *g = gguf_open(argv[1], err, sizeof err);
    Model *m = g ? model_load(g, err, sizeof err) : NULL;
    if (!m) {
        fprintf(stderr, "rope_probe: %s\n", err);
        return 1;
    }
    model_set_ctx(m, atoi(argv[2]));
    float *cs = malloc((size_t)m->hp.rope_dim * sizeof *cs);
    if (!cs) return 1;
    for (int a = 3; a < argc; a++) {
        model_rope_row(m, atoi(argv[a]), cs);
        for (int i = 0; i < m->hp.rope_dim; i++) {
            unsigned u;
            memcpy(&u, &cs[i], 4);
            printf("%s%u", i ? " " : "", u);
        }
        printf("\n");
    }
    free(cs);
    model_free(m);
    return 0;
}
