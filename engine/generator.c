/* generator.c: picks the generation backend named in the config and forwards to its vtable.
 * A backend not compiled into this build is an error naming the build option. */
#include "engine/generator_impl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const GeneratorOps *find_backend(const char *name)
{
    if (strcmp(name, "native") == 0)
        return &generator_native_ops;
#ifdef WEAVER_TEST_BACKENDS
    if (strcmp(name, "test-echo") == 0)
        return &generator_test_echo_ops;
#endif
    return NULL;
}

Generator *generator_open(const DecoderConfig *cfg, char *err, size_t errlen)
{
    const GeneratorOps *ops = find_backend(cfg->backend);
    if (!ops) {
        if (strcmp(cfg->backend, "test-echo") == 0)
            snprintf(err, errlen, "decoder backend \"test-echo\" is not in this build (-DWEAVER_TEST_BACKENDS=ON)");
        else
            snprintf(err, errlen, "decoder backend \"%s\" is not available in this build", cfg->backend);
        return NULL;
    }
    Generator *g = calloc(1, sizeof *g);
    if (!g) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    g->ops = ops;
    if (ops->open(g, cfg) != 0) {
        snprintf(err, errlen, "decoder %s: %s", ops->name, g->errstr[0] ? g->errstr : "open failed");
        free(g);
        return NULL;
    }
    return g;
}

void generator_close(Generator *g)
{
    if (!g)
        return;
    g->ops->close(g);
    free(g);
}

const GeneratorInfo *generator_info(const Generator *g) { return &g->info; }

int generator_submit(Generator *g, const GenRequest *req, char *err, size_t errlen)
{
    return g->ops->submit(g, req, err, errlen);
}

int generator_step(Generator *g, GenDone *done, int max_done) { return g->ops->step(g, done, max_done); }
int generator_pending(const Generator *g) { return g->ops->pending(g); }
const char *generator_errstr(const Generator *g) { return g->errstr; }

void generator_stats(const Generator *g, GenStats *out)
{
    *out = (GenStats){0};
    if (g->ops->stats)
        g->ops->stats(g, out);
    else
        out->running = g->ops->pending(g);
}

const char *gen_finish_name(GenFinish f)
{
    switch (f) {
    case GEN_FINISH_STOP: return "stop";
    case GEN_FINISH_LENGTH: return "length";
    case GEN_FINISH_EOS: return "eos";
    default: return "error";
    }
}
