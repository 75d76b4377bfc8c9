/* generator_native.c: the native GGUF generation backend (generator_native_ops) and its
 * continuous-batching scheduler. A fixed pool of sequence slots shares one paged KV cache of
 * decoder.kv_budget_tokens; every step, waiting requests join when a slot and their KV pages
 * are free, all running sequences advance in one batched forward pass (prefill chunks and
 * decode tokens together), and finished ones leave. Buffers are sized at open; a step does
 * not allocate except to grow a sequence's output text. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/decode/decoder.h"
#include "engine/decode/forward_dev.h"
#include "engine/decode/sampler.h"
#include "engine/generator_impl.h"
#include "kernels/decoder_dev.h"
#include "kernels/device.h"

enum { NATIVE_MAX_BATCH = 256 }; /* tokens per forward pass (prefill chunking) */

typedef struct Req {
    struct Req *next;
    TokVec prompt;
    GenSampling samp;
    int max_tokens;
    char *stop[GEN_MAX_STOP];
    int n_stop;
    void *tag;
    double t_submit;
} Req;

typedef struct Seq {
    Req *req;             /* owned while running */
    TokVec toks;          /* prompt + generated */
    int n_prompt, n_past, n_gen, max_gen;
    int *pages;
    int n_pages;
    SamplerRng rng;
    char *out;
    size_t out_len, out_cap;
    double t_start, t_first;
    int logits_row;
    int in_decode;        /* this step feeds the last sampled token */
    int prefill_take;     /* prompt tokens this step feeds (undone when the step cannot run) */
} Seq;

typedef struct Native {
    Decoder *dec;
    KvCache kv;              /* on a device: page bookkeeping only */
    Forward *fwd;            /* cpu */
    Device *dev;             /* cuda:N: the device, its forward pass, the greedy picks */
    DevForward *dfwd;
    int32_t *greedy;
    int step_tokens;         /* tokens a step may take: max_batch, halved after out-of-memory */
    int lost;                /* the device is lost: every step reports it */
    SamplerScratch *scratch; /* one per pool thread: sequences are sampled in parallel */
    int n_scratch;
    int *sampled;            /* [max_slots] this step's token of each sampling slot */
    int ctx_len, max_slots, max_batch;
    int pages_per_seq;
    Seq *slots;
    int n_running;
    Req *wait_head, *wait_tail;
    int n_waiting;
    GenDone *done_q;      /* finished, not yet handed out (at most max_slots + failures) */
    int n_done, done_cap;
    BatchTok *batch;
    float *logits;        /* [max_slots][n_vocab] */
} Native;

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void req_free(Req *r) {
    if (!r) return;
    tokvec_free(&r->prompt);
    for (int i = 0; i < r->n_stop; i++) free(r->stop[i]);
    free(r);
}

/* cuda:N: opens the device and its forward pass (weights up, KV pool sized). 0, or -1 with errstr. */
static int open_device(Generator *g, Native *n, int index, const DecoderConfig *cfg) {
    const DeviceOps *ops = device_cuda_or_test_ops();
    if (!ops) {
        snprintf(g->errstr, sizeof g->errstr, "decoder.device = \"%s\": this build has no CUDA support", cfg->device);
        return -1;
    }
    char err[400];
    n->dev = device_open(ops, index, NULL, err, sizeof err);
    if (!n->dev) {
        snprintf(g->errstr, sizeof g->errstr, "decoder.device \"%.16s\": %.200s", cfg->device, err);
        return -1;
    }
    /* decode steps of up to max_slots sequences replay CUDA graphs, padded to 1, 2, 4, 8k */
    DevForwardOpts o = {.max_tokens = n->max_batch, .max_ctx = n->ctx_len, .max_seqs = n->max_slots,
                        .max_logits = n->max_slots, .kv_tokens = cfg->kv_budget_tokens,
                        .graph_max = n->max_slots < 256 ? n->max_slots : 256};
    n->dfwd = dev_forward_create(n->dev, n->dec->model, &o, NULL, err, sizeof err);
    if (!n->dfwd) {
        snprintf(g->errstr, sizeof g->errstr, "decoder.device \"%.16s\": %.200s", cfg->device, err);
        return -1;
    }
    n->greedy = calloc((size_t)n->max_slots, sizeof *n->greedy);
    if (!n->greedy || kv_init_pages(&n->kv, dev_forward_kv_tokens(n->dfwd))) {
        snprintf(g->errstr, sizeof g->errstr, "out of memory allocating decoder buffers");
        return -1;
    }
    return 0;
}

static int native_open(Generator *g, const DecoderConfig *cfg) {
    int dev_index = -1;
    if (cfg->device && strcmp(cfg->device, "cpu") != 0 &&
        (strncmp(cfg->device, "cuda:", 5) != 0 || sscanf(cfg->device + 5, "%d", &dev_index) != 1 || dev_index < 0)) {
        snprintf(g->errstr, sizeof g->errstr, "decoder.device = \"%s\": expected \"cpu\" or \"cuda:N\"", cfg->device);
        return -1;
    }
    if (!cfg->model || !cfg->model[0]) {
        snprintf(g->errstr, sizeof g->errstr, "decoder.model is not set");
        return -1;
    }
    Native *n = calloc(1, sizeof *n);
    if (!n) {
        snprintf(g->errstr, sizeof g->errstr, "out of memory");
        return -1;
    }
    g->impl = n;
    n->dec = decoder_load(cfg->model, g->errstr, sizeof g->errstr);
    if (!n->dec) return -1;
    const ModelHparams *hp = &n->dec->model->hp;
    n->ctx_len = cfg->ctx_len > 0 ? cfg->ctx_len : hp->n_ctx_train;
    n->max_slots = cfg->max_slots > 0 ? cfg->max_slots : 1;
    /* kv_budget_tokens = 0: on a device, as much as free memory allows; on the cpu, every slot's
     * whole context */
    int budget = cfg->kv_budget_tokens > 0 ? cfg->kv_budget_tokens : n->ctx_len * n->max_slots;
    if (n->ctx_len > budget) n->ctx_len = budget - budget % KV_PAGE;
    if (n->ctx_len < KV_PAGE) {
        snprintf(g->errstr, sizeof g->errstr, "decoder.kv_budget_tokens = %d is too small (at least %d)", budget, KV_PAGE);
        return -1;
    }
    n->pages_per_seq = (n->ctx_len + KV_PAGE - 1) / KV_PAGE;
    model_set_ctx(n->dec->model, n->ctx_len); /* a sequence's context picks Phi-3 LongRoPE's factors */
    n->max_batch = NATIVE_MAX_BATCH > n->max_slots ? NATIVE_MAX_BATCH : n->max_slots;
    n->step_tokens = n->max_batch;
    if (dev_index >= 0) {
        if (open_device(g, n, dev_index, cfg)) return -1;
    } else {
        if (kv_init(&n->kv, n->dec->model, budget, g->errstr, sizeof g->errstr)) return -1;
        n->fwd = forward_create(n->dec->model, n->max_batch, n->ctx_len, cfg->threads, g->errstr, sizeof g->errstr);
        if (!n->fwd) return -1;
    }
    n->slots = calloc((size_t)n->max_slots, sizeof *n->slots);
    n->batch = calloc((size_t)n->max_batch, sizeof *n->batch);
    n->logits = malloc((size_t)n->max_slots * hp->n_vocab * sizeof *n->logits);
    n->done_cap = n->max_slots * 2 + 16;
    n->done_q = calloc((size_t)n->done_cap, sizeof *n->done_q);
    n->n_scratch = n->fwd ? pool_size(forward_pool(n->fwd)) : 1;
    n->scratch = calloc((size_t)n->n_scratch, sizeof *n->scratch);
    n->sampled = calloc((size_t)n->max_slots, sizeof *n->sampled);
    if (!n->slots || !n->batch || !n->logits || !n->done_q || !n->scratch || !n->sampled) {
        snprintf(g->errstr, sizeof g->errstr, "out of memory allocating decoder buffers");
        return -1;
    }
    for (int i = 0; i < n->n_scratch; i++)
        if (sampler_scratch_init(&n->scratch[i], hp->n_vocab)) {
            snprintf(g->errstr, sizeof g->errstr, "out of memory allocating decoder buffers");
            return -1;
        }
    for (int i = 0; i < n->max_slots; i++) {
        n->slots[i].pages = malloc((size_t)n->pages_per_seq * sizeof(int));
        if (!n->slots[i].pages) {
            snprintf(g->errstr, sizeof g->errstr, "out of memory");
            return -1;
        }
    }
    snprintf(g->info.model_id, sizeof g->info.model_id, "%s", n->dec->model_id);
    g->info.ctx_len = n->ctx_len;
    g->info.max_slots = n->max_slots;
    return 0;
}

static void native_close(Generator *g) {
    Native *n = g->impl;
    if (!n) return;
    if (n->slots)
        for (int i = 0; i < n->max_slots; i++) {
            req_free(n->slots[i].req);
            tokvec_free(&n->slots[i].toks);
            free(n->slots[i].out);
            free(n->slots[i].pages);
        }
    for (Req *r = n->wait_head; r;) {
        Req *nx = r->next;
        req_free(r);
        r = nx;
    }
    for (int i = 0; i < n->n_done; i++) free(n->done_q[i].text);
    free(n->done_q);
    free(n->slots);
    free(n->batch);
    free(n->logits);
    for (int i = 0; n->scratch && i < n->n_scratch; i++) sampler_scratch_free(&n->scratch[i]);
    free(n->scratch);
    free(n->sampled);
    forward_free(n->fwd);
    dev_forward_free(n->dfwd);
    device_close(n->dev);
    free(n->greedy);
    kv_free(&n->kv);
    decoder_free(n->dec);
    free(n);
    g->impl = NULL;
}

static int pages_for(const Native *n, int tokens) {
    if (tokens > n->ctx_len) tokens = n->ctx_len;
    return (tokens + KV_PAGE - 1) / KV_PAGE;
}

static int native_submit(Generator *g, const GenRequest *req, char *err, size_t errlen) {
    Native *n = g->impl;
    if (req->max_tokens < 1) {
        snprintf(err, errlen, "max_tokens must be at least 1");
        return -1;
    }
    if (req->n_stop < 0 || req->n_stop > GEN_MAX_STOP) {
        snprintf(err, errlen, "at most %d stop strings", GEN_MAX_STOP);
        return -1;
    }
    Req *r = calloc(1, sizeof *r);
    if (!r) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    if (decoder_prompt_tokens(n->dec, req, &r->prompt, err, errlen)) {
        req_free(r);
        return -1;
    }
    if (r->prompt.n == 0) {
        snprintf(err, errlen, "the prompt is empty");
        req_free(r);
        return -1;
    }
    if (r->prompt.n >= n->ctx_len) {
        if (!req->truncate_prompt) {
            snprintf(err, errlen, "the prompt is %d tokens; the context holds %d (prompt + at least 1 generated)",
                     r->prompt.n, n->ctx_len);
            req_free(r);
            return -1;
        }
        /* Keep the end of the prompt (and a leading BOS), leaving room to generate. */
        int room = req->max_tokens < n->ctx_len / 4 ? req->max_tokens : n->ctx_len / 4;
        if (room < 1) room = 1;
        int keep = n->ctx_len - room;
        int bos = tok_bos(n->dec->tok);
        int lead = (bos >= 0 && r->prompt.v[0] == bos) ? 1 : 0;
        memmove(r->prompt.v + lead, r->prompt.v + r->prompt.n - (keep - lead), (size_t)(keep - lead) * sizeof(int));
        r->prompt.n = keep;
    }
    r->samp = req->sampling;
    r->max_tokens = req->max_tokens;
    for (int i = 0; i < req->n_stop; i++) {
        if (!req->stop[i] || !req->stop[i][0]) continue;
        r->stop[r->n_stop] = strdup(req->stop[i]);
        if (!r->stop[r->n_stop]) {
            snprintf(err, errlen, "out of memory");
            req_free(r);
            return -1;
        }
        r->n_stop++;
    }
    r->tag = req->tag;
    r->t_submit = now_ms();
    if (n->wait_tail)
        n->wait_tail->next = r;
    else
        n->wait_head = r;
    n->wait_tail = r;
    n->n_waiting++;
    return 0;
}

static void native_stats(const Generator *g, GenStats *out) {
    const Native *n = g->impl;
    *out = (GenStats){.running = n->n_running, .waiting = n->n_waiting,
                      .kv_pages_used = n->kv.n_pages - n->kv.n_free, .kv_pages_total = n->kv.n_pages};
}

static int native_pending(const Generator *g) {
    const Native *n = g->impl;
    return n->n_waiting + n->n_running + n->n_done;
}

static GenDone *done_slot(Native *n) {
    if (n->n_done == n->done_cap) {
        int nc = n->done_cap * 2;
        GenDone *nq = realloc(n->done_q, (size_t)nc * sizeof *nq);
        if (!nq) return NULL;
        n->done_q = nq;
        n->done_cap = nc;
    }
    GenDone *d = &n->done_q[n->n_done++];
    memset(d, 0, sizeof *d);
    return d;
}

static void seq_finish(Native *n, Seq *s, GenFinish why, const char *error) {
    GenDone *d = done_slot(n);
    if (d) {
        d->tag = s->req->tag;
        d->finish = why;
        d->prompt_tokens = s->n_prompt;
        d->completion_tokens = s->n_gen;
        double end = now_ms();
        double first = s->t_first > 0 ? s->t_first : end;
        d->prefill_ms = first - s->t_start;
        d->decode_ms = end - first;
        if (error) snprintf(d->error, sizeof d->error, "%s", error);
        size_t cap = s->out_len * 3 + 1;
        d->text = malloc(cap);
        if (d->text) {
            memcpy(d->text, s->out ? s->out : "", s->out_len);
            size_t len = decoder_utf8_fix(d->text, s->out_len, cap - 1);
            d->text[len] = 0;
        }
    }
    for (int i = 0; i < s->n_pages; i++) kv_release_page(&n->kv, s->pages[i]);
    s->n_pages = 0;
    req_free(s->req);
    s->req = NULL;
    s->toks.n = 0;
    s->out_len = 0;
    n->n_running--;
}

static void admit(Native *n) {
    while (n->wait_head) {
        Req *r = n->wait_head;
        int max_gen = r->max_tokens;
        if (r->prompt.n + max_gen > n->ctx_len) max_gen = n->ctx_len - r->prompt.n;
        int need = pages_for(n, r->prompt.n + max_gen);
        if (need > n->kv.n_free) return; /* FIFO: wait for pages */
        Seq *s = NULL;
        for (int i = 0; i < n->max_slots; i++)
            if (!n->slots[i].req) {
                s = &n->slots[i];
                break;
            }
        if (!s) return;
        n->wait_head = r->next;
        if (!n->wait_head) n->wait_tail = NULL;
        n->n_waiting--;
        r->next = NULL;
        s->req = r;
        s->toks.n = 0;
        for (int i = 0; i < r->prompt.n; i++) tokvec_push(&s->toks, r->prompt.v[i]);
        s->n_prompt = r->prompt.n;
        s->n_past = 0;
        s->n_gen = 0;
        s->max_gen = max_gen;
        s->n_pages = 0;
        for (int i = 0; i < need; i++) s->pages[s->n_pages++] = kv_alloc_page(&n->kv);
        sampler_rng_seed(&s->rng, r->samp.seed);
        s->out_len = 0;
        s->t_start = r->t_submit;
        s->t_first = 0;
        n->n_running++;
    }
}

static int append_text(Seq *s, const char *p, size_t len) {
    if (s->out_len + len + 1 > s->out_cap) {
        size_t nc = s->out_cap ? s->out_cap * 2 : 256;
        while (nc < s->out_len + len + 1) nc *= 2;
        char *no = realloc(s->out, nc);
        if (!no) return -1;
        s->out = no;
        s->out_cap = nc;
    }
    memcpy(s->out + s->out_len, p, len);
    s->out_len += len;
    return 0;
}

/* After appending a token's bytes: a stop string anywhere in the new tail ends the text there. */
static int check_stop(Seq *s, size_t old_len) {
    for (int i = 0; i < s->req->n_stop; i++) {
        size_t sl = strlen(s->req->stop[i]);
        if (sl > s->out_len) continue;
        size_t from = old_len >= sl - 1 ? old_len - (sl - 1) : 0;
        for (size_t p = from; p + sl <= s->out_len; p++)
            if (memcmp(s->out + p, s->req->stop[i], sl) == 0) {
                s->out_len = p;
                return 1;
            }
    }
    return 0;
}

/* True when the CPU sampler would pick the argmax of the raw logits: the device's greedy pick is
 * then the same token, and the logits need not come back. */
static int greedy_on_device(const GenSampling *p) {
    return !(p->temperature > 0.0f) && p->repeat_penalty == 1.0f && p->presence_penalty == 0.0f &&
           p->frequency_penalty == 0.0f;
}

/* Samples the sequences with logits this step, one chunk per sequence on the forward pass's
 * pool. A sequence's draw uses only its own logits, history and RNG, so the result does not
 * depend on which thread ran it. */
static void sample_region(void *ctx, int chunk, int nchunks, int thread) {
    (void)nchunks;
    Native *n = ctx;
    int seen = -1;
    for (int i = 0; i < n->max_slots; i++) {
        Seq *s = &n->slots[i];
        if (!s->req || s->logits_row < 0 || ++seen != chunk) continue;
        if (n->dfwd && greedy_on_device(&s->req->samp)) { /* the device's argmax: the sampler's greedy pick */
            n->sampled[i] = n->greedy[s->logits_row];
            return;
        }
        float *lg = n->logits + (size_t)s->logits_row * n->dec->model->hp.n_vocab;
        n->sampled[i] = sampler_sample(&s->req->samp, &s->rng, &n->scratch[thread], lg, s->toks.v, s->toks.n);
        return;
    }
}

/* The step on the device: greedy picks always come back, the logits only for sequences that
 * sample on the host. Returns a DevStatus. */
static int device_forward(Native *n, int nb) {
    int need_logits = 0;
    for (int i = 0; i < n->max_slots; i++)
        if (n->slots[i].req && n->slots[i].logits_row >= 0 && !greedy_on_device(&n->slots[i].req->samp)) need_logits = 1;
    return dev_forward_run(n->dfwd, n->batch, nb, need_logits ? n->logits : NULL, n->greedy);
}

/* Out of device memory in a step (the context is intact): the next steps take half the tokens;
 * at one page of tokens, the newest sequence gives its pages back and waits at the head of the queue to
 * start over. A restart gives the same text (a sequence's numbers never depend on the rest of
 * the batch, and its sampler is seeded afresh), so no job fails and none changes. */
static void out_of_memory(Native *n, int nb) {
    /* not below one page of tokens: prompt chunks are never cut to a lone token, so a smaller
     * step could stall every prefill */
    if (nb > KV_PAGE) {
        n->step_tokens = nb / 2 > KV_PAGE ? nb / 2 : KV_PAGE;
        return;
    }
    Seq *newest = NULL;
    for (int i = 0; i < n->max_slots; i++)
        if (n->slots[i].req && (!newest || n->slots[i].t_start >= newest->t_start)) newest = &n->slots[i];
    if (!newest || n->n_running < 2) return; /* alone: try again next step */
    for (int i = 0; i < newest->n_pages; i++) kv_release_page(&n->kv, newest->pages[i]);
    newest->n_pages = 0;
    Req *r = newest->req;
    newest->req = NULL;
    newest->toks.n = 0;
    newest->out_len = 0;
    n->n_running--;
    r->next = n->wait_head;
    n->wait_head = r;
    if (!n->wait_tail) n->wait_tail = r;
    n->n_waiting++;
}

static int native_step(Generator *g, GenDone *done, int max_done) {
    Native *n = g->impl;
    admit(n);
    int nb = 0, nl = 0;
    /* Decode tokens first: every running sequence past its prompt advances by one. */
    for (int i = 0; i < n->max_slots; i++) n->slots[i].logits_row = -1;
    for (int i = 0; i < n->max_slots && nb < n->step_tokens; i++) {
        Seq *s = &n->slots[i];
        s->prefill_take = 0;
        s->in_decode = 0;
        if (!s->req || s->n_past < s->n_prompt) continue;
        s->in_decode = 1;
        n->batch[nb++] = (BatchTok){.token = s->toks.v[s->n_past], .pos = s->n_past, .pages = s->pages, .logits_row = nl};
        s->logits_row = nl++;
    }
    /* Then prefill chunks with the room left. */
    for (int i = 0; i < n->max_slots && nb < n->step_tokens; i++) {
        Seq *s = &n->slots[i];
        if (!s->req || s->n_past >= s->n_prompt || s->logits_row >= 0) continue;
        int rem = s->n_prompt - s->n_past, take = rem;
        if (take > n->step_tokens - nb) take = n->step_tokens - nb;
        /* A chunk of one token would run attention in the decode (gemv) order: the numbers would
         * then depend on how the batch was shared. Never cut a prompt into a lone token. */
        if (take < rem) {
            if (rem - take == 1) take--;
            if (take == 1) take = 0;
        }
        if (take == 0) continue;
        for (int k = 0; k < take; k++) {
            int pos = s->n_past + k;
            int last = pos == s->n_prompt - 1;
            n->batch[nb++] = (BatchTok){.token = s->toks.v[pos], .pos = pos, .pages = s->pages, .logits_row = last ? nl : -1};
            if (last) s->logits_row = nl++;
        }
        s->n_past += take;
        s->prefill_take = take;
        if (s->logits_row < 0) s->logits_row = -2; /* prefilled part of the prompt this step */
    }
    if (n->lost) return GENERATOR_EDEVICE;
    if (nb > 0) {
        /* The batch lists decode tokens before prefill tokens, so logits rows are increasing. */
        int rc = n->dfwd ? device_forward(n, nb) : forward_run(n->fwd, &n->kv, n->batch, nb, n->logits);
        if (rc == DEV_ENOMEM || rc == DEV_ESTICKY) {
            /* nothing of this step counts: its prompt chunks run again */
            for (int i = 0; i < n->max_slots; i++) n->slots[i].n_past -= n->slots[i].prefill_take;
            if (rc == DEV_ESTICKY) {
                n->lost = 1;
                snprintf(g->errstr, sizeof g->errstr, "%s", device_errstr(n->dev));
                return GENERATOR_EDEVICE;
            }
            out_of_memory(n, nb);
        } else if (rc != 0) {
            for (int i = 0; i < n->max_slots; i++)
                if (n->slots[i].req) seq_finish(n, &n->slots[i], GEN_FINISH_ERROR, "forward pass failed");
        } else {
            if (n->step_tokens < n->max_batch) n->step_tokens *= 2; /* grow back after a shrink */
            if (n->step_tokens > n->max_batch) n->step_tokens = n->max_batch;
            if (n->fwd) pool_run(forward_pool(n->fwd), sample_region, n, nl);
            else
                for (int c = 0; c < nl; c++) sample_region(n, c, nl, 0);
            double t = now_ms();
            for (int i = 0; i < n->max_slots; i++) {
                Seq *s = &n->slots[i];
                if (!s->req || s->logits_row < 0) continue;
                if (s->in_decode) s->n_past++; /* the fed token is now cached */
                int tok = n->sampled[i];
                if (s->t_first == 0) s->t_first = t;
                if (tok_is_eog(n->dec->tok, tok)) {
                    seq_finish(n, s, GEN_FINISH_EOS, NULL);
                    continue;
                }
                s->n_gen++;
                tokvec_push(&s->toks, tok);
                char piece[256];
                size_t pl = tok_piece(n->dec->tok, tok, piece, sizeof piece);
                size_t old = s->out_len;
                if (pl > sizeof piece || append_text(s, piece, pl)) {
                    seq_finish(n, s, GEN_FINISH_ERROR, "token text too long or out of memory");
                    continue;
                }
                if (check_stop(s, old)) {
                    seq_finish(n, s, GEN_FINISH_STOP, NULL);
                    continue;
                }
                if (s->n_gen >= s->max_gen) seq_finish(n, s, GEN_FINISH_LENGTH, NULL);
            }
        }
    }
    int k = n->n_done < max_done ? n->n_done : max_done;
    if (k > 0) {
        memcpy(done, n->done_q, (size_t)k * sizeof *done);
        memmove(n->done_q, n->done_q + k, (size_t)(n->n_done - k) * sizeof *done);
        n->n_done -= k;
    }
    return k;
}

const GeneratorOps generator_native_ops = {
    .name = "native",
    .open = native_open,
    .close = native_close,
    .submit = native_submit,
    .step = native_step,
    .pending = native_pending,
    .stats = native_stats,
};
