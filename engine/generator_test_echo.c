/* generator_test_echo.c: a test-only generation backend (-DWEAVER_TEST_BACKENDS=ON).
 * It echoes its prompt (or the last message's content) back, four bytes per step, so the
 * queue's generate path (submit, step, join and leave, finish reasons, stop strings) can be
 * tested and benchmarked without a model. The product's configs never name it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/generator_impl.h"

#define ECHO_BYTES_PER_STEP 4

typedef struct EchoSeq {
    char *source;
    size_t source_len, emitted;
    int max_tokens, tokens;
    char *stop[GEN_MAX_STOP];
    int n_stop;
    void *tag;
    struct EchoSeq *next;
} EchoSeq;

typedef struct Echo {
    EchoSeq *running;
    int n;
    int step_ms; /* WEAVER_TEST_ECHO_STEP_MS: makes steps slow enough to outlive leases */
} Echo;

static int echo_open(Generator *g, const DecoderConfig *cfg)
{
    snprintf(g->info.model_id, sizeof g->info.model_id, "test-echo");
    g->info.ctx_len = 4096;
    g->info.max_slots = cfg->max_slots;
    Echo *e = calloc(1, sizeof(Echo));
    if (!e)
        return -1;
    const char *ms = getenv("WEAVER_TEST_ECHO_STEP_MS");
    e->step_ms = ms ? atoi(ms) : 0;
    g->impl = e;
    return 0;
}

static void seq_free(EchoSeq *s)
{
    free(s->source);
    for (int i = 0; i < s->n_stop; i++)
        free(s->stop[i]);
    free(s);
}

static void echo_close(Generator *g)
{
    Echo *e = g->impl;
    while (e && e->running) {
        EchoSeq *s = e->running;
        e->running = s->next;
        seq_free(s);
    }
    free(e);
}

static int echo_submit(Generator *g, const GenRequest *req, char *err, size_t errlen)
{
    Echo *e = g->impl;
    const char *src = req->prompt ? req->prompt : req->messages[req->n_messages - 1].content;
    size_t src_len = req->prompt ? gen_prompt_len(req) : gen_content_len(&req->messages[req->n_messages - 1]);
    if (src_len > (size_t)g->info.ctx_len * ECHO_BYTES_PER_STEP && !req->truncate_prompt) {
        snprintf(err, errlen, "prompt is longer than the context of %d tokens", g->info.ctx_len);
        return -1;
    }
    EchoSeq *s = calloc(1, sizeof *s);
    if (!s || !(s->source = malloc(src_len + 1))) {
        free(s);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    memcpy(s->source, src, src_len);
    s->source[src_len] = '\0';
    s->source_len = src_len;
    s->max_tokens = req->max_tokens;
    s->tag = req->tag;
    for (int i = 0; i < req->n_stop; i++)
        s->stop[s->n_stop++] = strdup(req->stop[i]);
    s->next = e->running;
    e->running = s;
    e->n++;
    return 0;
}

static int echo_step(Generator *g, GenDone *done, int max_done)
{
    Echo *e = g->impl;
    int nd = 0;
    if (e->step_ms > 0)
        usleep((useconds_t)e->step_ms * 1000);
    for (EchoSeq **pp = &e->running; *pp && nd < max_done;) {
        EchoSeq *s = *pp;
        size_t take = s->source_len - s->emitted < ECHO_BYTES_PER_STEP ? s->source_len - s->emitted
                                                                        : ECHO_BYTES_PER_STEP;
        s->emitted += take;
        s->tokens++;
        GenFinish fin = GEN_FINISH_ERROR;
        size_t cut = s->emitted;
        for (int i = 0; i < s->n_stop; i++) {
            char saved = s->source[s->emitted];
            s->source[s->emitted] = '\0';
            char *hit = strstr(s->source, s->stop[i]);
            s->source[s->emitted] = saved;
            if (hit && (size_t)(hit - s->source) < cut) {
                cut = (size_t)(hit - s->source);
                fin = GEN_FINISH_STOP;
            }
        }
        if (fin != GEN_FINISH_STOP) {
            if (s->emitted == s->source_len)
                fin = GEN_FINISH_EOS;
            else if (s->tokens >= s->max_tokens)
                fin = GEN_FINISH_LENGTH;
        }
        if (fin == GEN_FINISH_ERROR) {
            pp = &s->next;
            continue;
        }
        GenDone *d = &done[nd++];
        memset(d, 0, sizeof *d);
        d->tag = s->tag;
        d->finish = fin;
        d->text = strndup(s->source, cut);
        d->prompt_tokens = (int)((s->source_len + ECHO_BYTES_PER_STEP - 1) / ECHO_BYTES_PER_STEP);
        d->completion_tokens = s->tokens;
        *pp = s->next;
        e->n--;
        seq_free(s);
    }
    return nd;
}

static int echo_pending(const Generator *g) { return ((const Echo *)g->impl)->n; }

const GeneratorOps generator_test_echo_ops = {
    .name = "test-echo",
    .open = echo_open,
    .close = echo_close,
    .submit = echo_submit,
    .step = echo_step,
    .pending = echo_pending,
};
