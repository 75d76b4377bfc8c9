/* generator_impl.h: what a generation backend implements. Only backends and generator.c
 * include this. */
#ifndef WEAVER_GENERATOR_IMPL_H
#define WEAVER_GENERATOR_IMPL_H

#include "engine/generator.h"

typedef struct GeneratorOps {
    const char *name;
    /* Fills g->info and g->impl; returns 0, or < 0 with g->errstr set. */
    int (*open)(Generator *g, const DecoderConfig *cfg);
    void (*close)(Generator *g);
    int (*submit)(Generator *g, const GenRequest *req, char *err, size_t errlen);
    int (*step)(Generator *g, GenDone *done, int max_done);
    int (*pending)(const Generator *g);
    void (*stats)(const Generator *g, GenStats *out); /* optional: NULL reports pending as running */
} GeneratorOps;

struct Generator {
    const GeneratorOps *ops;
    GeneratorInfo info;
    void *impl;
    char errstr[256];
};

extern const GeneratorOps generator_native_ops;    /* engine/decode/ */
extern const GeneratorOps generator_test_echo_ops; /* engine/generator_test_echo.c, test builds */

#endif
