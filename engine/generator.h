/* generator.h: one interface for text generation backends (native GGUF decoder, test-echo).
 * Continuous batching lives behind it: requests join with generator_submit, every
 * generator_step advances all running sequences by one token (prefilling new ones), and
 * finished sequences leave through the `done` array. The queue side never sees tokens. */
#ifndef WEAVER_GENERATOR_H
#define WEAVER_GENERATOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "config/config.h"

typedef struct Generator Generator;

#define GEN_MAX_STOP 8

typedef struct GenMessage {
    const char *role;    /* "system" | "user" | "assistant" */
    const char *content;
    size_t content_len;  /* bytes of content (it may hold NUL); 0 = up to its terminator */
} GenMessage;

typedef struct GenSampling {
    float temperature;   /* 0 = greedy */
    int top_k;           /* 0 = off */
    float top_p;         /* 1 = off */
    float min_p;         /* 0 = off */
    float repeat_penalty;/* 1 = off */
    int repeat_last_n;   /* window for repeat/presence/frequency penalties */
    float presence_penalty;
    float frequency_penalty;
    uint64_t seed;
} GenSampling;

typedef struct GenRequest {
    const char *prompt;          /* raw prompt, or NULL when messages are given */
    size_t prompt_len;           /* bytes of prompt (it may hold NUL); 0 = up to its terminator */
    const GenMessage *messages;  /* chat messages rendered with the model's template */
    int n_messages;
    GenSampling sampling;
    int max_tokens;
    const char *stop[GEN_MAX_STOP];
    int n_stop;
    bool truncate_prompt;        /* false: a prompt longer than the context is a job error */
    bool parse_special;          /* true: special-token text in the prompt or in a message (e.g.
                                  * "<|im_end|>") becomes that token, as llama.cpp and transformers
                                  * do; false: it stays text (the template's own markers are still
                                  * special). Zero-initialised requests get false: set it. */
    void *tag;                   /* caller's handle, given back in GenDone */
} GenRequest;

typedef enum GenFinish { GEN_FINISH_STOP = 0, GEN_FINISH_LENGTH, GEN_FINISH_EOS, GEN_FINISH_ERROR } GenFinish;

typedef struct GenDone {
    void *tag;
    GenFinish finish;
    char *text;              /* owned by the caller after step returns (free()) */
    int prompt_tokens;
    int completion_tokens;
    double prefill_ms, decode_ms;
    char error[256];         /* set when finish == GEN_FINISH_ERROR */
} GenDone;

typedef struct GeneratorInfo {
    char model_id[256];
    int ctx_len;
    int max_slots;
} GeneratorInfo;

Generator *generator_open(const DecoderConfig *cfg, char *err, size_t errlen);
void generator_close(Generator *g);                 /* NULL-safe */
const GeneratorInfo *generator_info(const Generator *g);

/* Queues a request; it joins the running batch at the next step. Copies what it needs from
 * req. Returns 0, or < 0 with err set (the request is rejected, nothing is queued). */
int generator_submit(Generator *g, const GenRequest *req, char *err, size_t errlen);
/* Advances every running sequence by one step. Writes up to max_done finished sequences
 * into done and returns how many; < 0 on a whole-batch failure; GENERATOR_EDEVICE when the device
 * is lost (a sticky CUDA error): nothing more can run, the engine stops and leaves every job
 * pending (none is failed). */
#define GENERATOR_EDEVICE (-75)
int generator_step(Generator *g, GenDone *done, int max_done);
/* Sequences running or waiting. */
int generator_pending(const Generator *g);
/* Why the last step failed as a whole (GENERATOR_EDEVICE: the device's own words). */
const char *generator_errstr(const Generator *g);

/* What the scheduler holds right now, for metrics. Same thread as step/submit. */
typedef struct GenStats {
    int running;          /* sequences in the running batch */
    int waiting;          /* submitted, waiting for a slot or KV pages */
    int kv_pages_used, kv_pages_total;
} GenStats;
void generator_stats(const Generator *g, GenStats *out);

const char *gen_finish_name(GenFinish f);

/* Lengths of a request's texts: the explicit length, or up to the terminator when it is 0. */
static inline size_t gen_prompt_len(const GenRequest *r) { return r->prompt_len ? r->prompt_len : strlen(r->prompt); }
static inline size_t gen_content_len(const GenMessage *m) { return m->content_len ? m->content_len : strlen(m->content); }

#endif
