/* cli_generate.c: `weaver-engine generate-local`, a debug and benchmark entry to the native
 * decoder without Redis: tokenise, dump logits, greedy ids, or run N concurrent requests
 * through the generator backend (continuous batching) and print JSON on stdout.
 * Returns an exit code; never calls exit(). */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/decode/decoder.h"
#include "engine/decode/sampler.h"
#include "engine/generator_impl.h"

int cli_generate_main(int argc, char **argv);

static const char *usage =
    "usage: generate-local --model FILE (--prompt TEXT | --chat TEXT [--system TEXT] | --messages JSON)\n"
    "       [--max-tokens N] [--temperature T] [--top-k K] [--top-p P] [--min-p P] [--repeat-penalty R]\n"
    "       [--repeat-last-n N] [--presence-penalty P] [--frequency-penalty P] [--seed S] [--stop TEXT]...\n"
    "       [--threads N] [--ctx N] [--slots N] [--kv-budget N] [--jobs N] [--warmup] [--truncate] [--no-parse-special]\n"
    "       [--tokenize-only] [--dump-logits K [--logits-out FILE] [--ubatch N | --prefill N]] [--greedy-ids]\n"
    "       [--ids 1,2,3 (token ids instead of a prompt, for --dump-logits / --greedy-ids)]\n";

static const char *finish_name(GenFinish f) {
    switch (f) {
    case GEN_FINISH_STOP: return "stop";
    case GEN_FINISH_LENGTH: return "length";
    case GEN_FINISH_EOS: return "eos";
    default: return "error";
    }
}

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static cJSON *ids_json(const int *v, int n) {
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; i < n; i++) cJSON_AddItemToArray(a, cJSON_CreateNumber(v[i]));
    return a;
}

static void print_json(cJSON *o) {
    char *s = cJSON_PrintUnformatted(o);
    if (s) {
        fputs(s, stdout);
        fputc('\n', stdout);
        free(s);
    }
    cJSON_Delete(o);
}

/* "1,2,3" as token ids, each checked against the vocabulary. */
static int parse_ids(const char *s, TokVec *tv, int n_vocab, char *err, size_t errlen) {
    while (*s) {
        char *end;
        long v = strtol(s, &end, 10);
        if (end == s || v < 0 || v >= n_vocab || (*end && *end != ',')) {
            snprintf(err, errlen, "--ids: bad token id list at '%s'", s);
            return -1;
        }
        if (tokvec_push(tv, (int)v)) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        s = *end ? end + 1 : end;
    }
    return 0;
}

/* Logits of every prompt position (top-k per position, optionally all as raw f32). */
static int dump_logits(Decoder *d, const TokVec *toks, int topk, const char *out_path, int threads, int ubatch,
                       int prefill, char *err, size_t errlen) {
    const Model *m = d->model;
    int n = toks->n, V = m->hp.n_vocab;
    KvCache kv;
    if (kv_init(&kv, m, n, err, errlen)) return -1;
    Forward *fw = forward_create(m, n, n, threads, err, errlen);
    float *lg = malloc((size_t)n * V * sizeof *lg);
    BatchTok *bt = calloc((size_t)n, sizeof *bt);
    int *pages = malloc((size_t)kv.n_pages * sizeof *pages);
    int rc = -1;
    if (!fw || !lg || !bt || !pages) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    for (int i = 0; i < kv.n_pages; i++) pages[i] = kv_alloc_page(&kv);
    for (int i = 0; i < n; i++) bt[i] = (BatchTok){.token = toks->v[i], .pos = i, .pages = pages, .logits_row = 0};
    /* ubatch tokens per forward pass (all at once by default), like llama.cpp's n_ubatch;
     * with prefill P, the first P tokens go as one pass and the rest one by one (decode steps) */
    if (ubatch < 1 || ubatch > n) ubatch = n;
    for (int i0 = 0; i0 < n;) {
        int k = prefill > 0 ? (i0 == 0 ? (prefill < n ? prefill : n) : 1) : (n - i0 < ubatch ? n - i0 : ubatch);
        for (int i = 0; i < k; i++) bt[i0 + i].logits_row = i;
        if (forward_run(fw, &kv, bt + i0, k, lg + (size_t)i0 * V)) {
            snprintf(err, errlen, "forward pass failed");
            goto out;
        }
        i0 += k;
    }
    cJSON *o = cJSON_CreateObject();
    cJSON_AddItemToObject(o, "tokens", ids_json(toks->v, n));
    cJSON *rows = cJSON_AddArrayToObject(o, "logits_top");
    int *idx = malloc((size_t)topk * sizeof *idx);
    for (int p = 0; p < n && idx; p++) {
        const float *l = lg + (size_t)p * V;
        int k = 0;
        for (int i = 0; i < V; i++) { /* insertion into a small sorted list */
            if (k == topk && l[i] <= l[idx[k - 1]]) continue;
            int j = k < topk ? k++ : k - 1;
            while (j > 0 && l[idx[j - 1]] < l[i]) {
                idx[j] = idx[j - 1];
                j--;
            }
            idx[j] = i;
        }
        cJSON *row = cJSON_CreateArray();
        for (int i = 0; i < k; i++) {
            cJSON *pair = cJSON_CreateArray();
            cJSON_AddItemToArray(pair, cJSON_CreateNumber(idx[i]));
            cJSON_AddItemToArray(pair, cJSON_CreateNumber(l[idx[i]]));
            cJSON_AddItemToArray(row, pair);
        }
        cJSON_AddItemToArray(rows, row);
    }
    free(idx);
    if (out_path) {
        FILE *fo = fopen(out_path, "wb");
        if (!fo || fwrite(lg, sizeof *lg, (size_t)n * V, fo) != (size_t)n * V) {
            snprintf(err, errlen, "cannot write %s", out_path);
            if (fo) fclose(fo);
            cJSON_Delete(o);
            goto out;
        }
        fclose(fo);
    }
    print_json(o);
    rc = 0;
out:
    free(pages);
    free(bt);
    free(lg);
    forward_free(fw);
    kv_free(&kv);
    return rc;
}

/* Greedy continuation straight on the model: prefill, then one token per forward. */
static int greedy_ids(Decoder *d, const TokVec *prompt, int max_tokens, int threads, char *err, size_t errlen) {
    const Model *m = d->model;
    int total = prompt->n + max_tokens, V = m->hp.n_vocab;
    KvCache kv;
    if (kv_init(&kv, m, total, err, errlen)) return -1;
    Forward *fw = forward_create(m, prompt->n, total, threads, err, errlen);
    float *lg = malloc((size_t)V * sizeof *lg);
    BatchTok *bt = calloc((size_t)prompt->n, sizeof *bt);
    int *pages = malloc((size_t)kv.n_pages * sizeof *pages);
    int *out = malloc((size_t)max_tokens * sizeof *out);
    int rc = -1, n_out = 0;
    if (!fw || !lg || !bt || !pages || !out) {
        snprintf(err, errlen, "out of memory");
        goto done;
    }
    for (int i = 0; i < kv.n_pages; i++) pages[i] = kv_alloc_page(&kv);
    for (int i = 0; i < prompt->n; i++)
        bt[i] = (BatchTok){.token = prompt->v[i], .pos = i, .pages = pages, .logits_row = i == prompt->n - 1 ? 0 : -1};
    if (forward_run(fw, &kv, bt, prompt->n, lg)) goto fwfail;
    for (int step = 0; step < max_tokens; step++) {
        int best = 0;
        for (int i = 1; i < V; i++)
            if (lg[i] > lg[best]) best = i;
        out[n_out++] = best;
        if (tok_is_eog(d->tok, best) || step + 1 == max_tokens) break;
        BatchTok one = {.token = best, .pos = prompt->n + step, .pages = pages, .logits_row = 0};
        if (forward_run(fw, &kv, &one, 1, lg)) goto fwfail;
    }
    cJSON *o = cJSON_CreateObject();
    cJSON_AddItemToObject(o, "tokens", ids_json(prompt->v, prompt->n));
    cJSON_AddItemToObject(o, "completion_ids", ids_json(out, n_out));
    print_json(o);
    rc = 0;
    goto done;
fwfail:
    snprintf(err, errlen, "forward pass failed");
done:
    free(out);
    free(pages);
    free(bt);
    free(lg);
    forward_free(fw);
    kv_free(&kv);
    return rc;
}

int cli_generate_main(int argc, char **argv) {
    const char *model = NULL, *prompt = NULL, *chat = NULL, *system = NULL, *messages_json = NULL, *logits_out = NULL;
    int max_tokens = 32, threads = 0, ctx = 0, slots = 0, kv_budget = 0, jobs = 1, tokenize_only = 0, dump = 0,
        greedy = 0, truncate = 0, ubatch = 0, prefill = 0, parse_special = 1, warmup = 0;
    const char *ids = NULL;
    GenSampling samp = {.temperature = 0, .top_k = 0, .top_p = 1, .min_p = 0, .repeat_penalty = 1,
                        .repeat_last_n = 64, .presence_penalty = 0, .frequency_penalty = 0, .seed = 0};
    const char *stops[GEN_MAX_STOP];
    int n_stop = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define OPT(name) (strcmp(a, name) == 0 && v && (++i, 1))
        if (OPT("--model")) model = v;
        else if (OPT("--prompt")) prompt = v;
        else if (OPT("--chat")) chat = v;
        else if (OPT("--system")) system = v;
        else if (OPT("--messages")) messages_json = v;
        else if (OPT("--max-tokens")) max_tokens = atoi(v);
        else if (OPT("--temperature")) samp.temperature = strtof(v, NULL);
        else if (OPT("--top-k")) samp.top_k = atoi(v);
        else if (OPT("--top-p")) samp.top_p = strtof(v, NULL);
        else if (OPT("--min-p")) samp.min_p = strtof(v, NULL);
        else if (OPT("--repeat-penalty")) samp.repeat_penalty = strtof(v, NULL);
        else if (OPT("--repeat-last-n")) samp.repeat_last_n = atoi(v);
        else if (OPT("--presence-penalty")) samp.presence_penalty = strtof(v, NULL);
        else if (OPT("--frequency-penalty")) samp.frequency_penalty = strtof(v, NULL);
        else if (OPT("--seed")) samp.seed = strtoull(v, NULL, 10);
        else if (OPT("--threads")) threads = atoi(v);
        else if (OPT("--ctx")) ctx = atoi(v);
        else if (OPT("--slots")) slots = atoi(v);
        else if (OPT("--kv-budget")) kv_budget = atoi(v);
        else if (OPT("--jobs")) jobs = atoi(v);
        else if (OPT("--dump-logits")) dump = atoi(v);
        else if (OPT("--logits-out")) logits_out = v;
        else if (OPT("--ubatch")) ubatch = atoi(v);
        else if (OPT("--prefill")) prefill = atoi(v);
        else if (OPT("--ids")) ids = v;
        else if (OPT("--stop")) {
            if (n_stop == GEN_MAX_STOP) {
                fprintf(stderr, "generate-local: at most %d --stop\n", GEN_MAX_STOP);
                return 2;
            }
            stops[n_stop++] = v;
        } else if (strcmp(a, "--tokenize-only") == 0) tokenize_only = 1;
        else if (strcmp(a, "--greedy-ids") == 0) greedy = 1;
        else if (strcmp(a, "--truncate") == 0) truncate = 1;
        else if (strcmp(a, "--warmup") == 0) warmup = 1; /* one untimed job first (benchmarks) */
        else if (strcmp(a, "--no-parse-special") == 0) parse_special = 0; /* the job's parse_special: false */
        else if (strcmp(a, "--help") == 0) {
            fputs(usage, stdout);
            return 0;
        } else {
            fprintf(stderr, "generate-local: unknown or incomplete option '%s'\n%s", a, usage);
            return 2;
        }
#undef OPT
    }
    if (!model || (!prompt && !chat && !messages_json && !ids) || max_tokens < 1 || jobs < 1 || dump < 0) {
        fprintf(stderr, "%s", usage);
        return 2;
    }
    GenMessage msgs[64];
    int n_msgs = 0;
    cJSON *mj = NULL;
    if (messages_json) {
        mj = cJSON_Parse(messages_json);
        if (!cJSON_IsArray(mj) || cJSON_GetArraySize(mj) > 64) {
            fprintf(stderr, "generate-local: --messages must be a JSON array of {role, content} (at most 64)\n");
            cJSON_Delete(mj);
            return 2;
        }
        cJSON *it;
        cJSON_ArrayForEach(it, mj) {
            msgs[n_msgs].role = cJSON_GetStringValue(cJSON_GetObjectItem(it, "role"));
            msgs[n_msgs].content = cJSON_GetStringValue(cJSON_GetObjectItem(it, "content"));
            n_msgs++;
        }
    } else if (chat) {
        if (system) msgs[n_msgs++] = (GenMessage){"system", system, 0};
        msgs[n_msgs++] = (GenMessage){"user", chat, 0};
    }
    char err[512] = "";
    int rc = 1;
    GenRequest req = {.prompt = prompt, .messages = n_msgs ? msgs : NULL, .n_messages = n_msgs, .sampling = samp,
                      .max_tokens = max_tokens, .n_stop = n_stop, .truncate_prompt = truncate,
                      .parse_special = parse_special};
    for (int i = 0; i < n_stop; i++) req.stop[i] = stops[i];
    int ctx_len = ctx > 0 ? ctx : 2048; /* one sequence's context, as the generator's ctx_len */

    if (tokenize_only || dump || greedy) {
        Decoder *d = decoder_load(model, err, sizeof err);
        if (!d) goto fail;
        /* what depends on the context (Phi-3 LongRoPE's factors) as the generator would choose it,
         * not from the few positions these paths allocate */
        model_set_ctx(d->model, ctx_len);
        TokVec tv = {0};
        int got = ids ? parse_ids(ids, &tv, d->model->hp.n_vocab, err, sizeof err)
                      : decoder_prompt_tokens(d, &req, &tv, err, sizeof err);
        if (got == 0) {
            if (tokenize_only) {
                cJSON *o = cJSON_CreateObject();
                cJSON_AddItemToObject(o, "tokens", ids_json(tv.v, tv.n));
                cJSON_AddStringToObject(o, "chat_template", chat_kind_name(d->chat.kind));
                if (req.messages) { /* the rendered conversation, to compare with llama.cpp's */
                    char *txt = chat_render(&d->chat, req.messages, req.n_messages, NULL, NULL, err, sizeof err);
                    if (txt) cJSON_AddStringToObject(o, "prompt_text", txt);
                    free(txt);
                }
                print_json(o);
                rc = 0;
            } else if (tv.n == 0) {
                snprintf(err, sizeof err, "the prompt is empty");
            } else if (dump) {
                rc = dump_logits(d, &tv, dump, logits_out, threads, ubatch, prefill, err, sizeof err) ? 1 : 0;
            } else {
                rc = greedy_ids(d, &tv, max_tokens, threads, err, sizeof err) ? 1 : 0;
            }
        }
        tokvec_free(&tv);
        decoder_free(d);
        if (rc) goto fail;
        cJSON_Delete(mj);
        return 0;
    }

    DecoderConfig cfg = {.enabled = true, .backend = "native", .model = (char *)model, .device = "cpu",
                         .threads = threads, .ctx_len = ctx_len, .max_slots = slots > 0 ? slots : jobs,
                         .kv_budget_tokens = kv_budget};
    if (cfg.kv_budget_tokens <= 0) cfg.kv_budget_tokens = cfg.ctx_len * cfg.max_slots;
    Generator g = {.ops = &generator_native_ops};
    if (generator_native_ops.open(&g, &cfg)) {
        snprintf(err, sizeof err, "%s", g.errstr);
        generator_native_ops.close(&g);
        goto fail;
    }
    GenDone dn[64];
    /* --warmup: one untimed run of the request before the clock starts, so the timed jobs find
     * the weights paged in and the buffers touched (llama-bench and llama-batched-bench warm up too). */
    for (int w = 0; w < warmup; w++) {
        req.sampling.seed = samp.seed;
        if (generator_native_ops.submit(&g, &req, err, sizeof err)) {
            generator_native_ops.close(&g);
            goto fail;
        }
        while (generator_native_ops.pending(&g) > 0) {
            int k = generator_native_ops.step(&g, dn, 64);
            for (int i = 0; i < k; i++) free(dn[i].text);
            if (k < 0) {
                snprintf(err, sizeof err, "generator step failed");
                generator_native_ops.close(&g);
                goto fail;
            }
        }
    }
    double t0 = now_ms();
    for (int j = 0; j < jobs; j++) {
        req.sampling.seed = samp.seed + (uint64_t)j;
        req.tag = (void *)(intptr_t)j;
        if (generator_native_ops.submit(&g, &req, err, sizeof err)) {
            generator_native_ops.close(&g);
            goto fail;
        }
    }
    cJSON *o = cJSON_CreateObject();
    cJSON *res = cJSON_AddArrayToObject(o, "results");
    long total_completion = 0;
    double sum_prefill = 0;
    long total_prompt = 0;
    while (generator_native_ops.pending(&g) > 0) {
        int k = generator_native_ops.step(&g, dn, 64);
        if (k < 0) {
            snprintf(err, sizeof err, "generator step failed");
            cJSON_Delete(o);
            generator_native_ops.close(&g);
            goto fail;
        }
        for (int i = 0; i < k; i++) {
            cJSON *r = cJSON_CreateObject();
            cJSON_AddNumberToObject(r, "job", (double)(intptr_t)dn[i].tag);
            cJSON_AddStringToObject(r, "text", dn[i].text ? dn[i].text : "");
            cJSON_AddStringToObject(r, "finish", finish_name(dn[i].finish));
            cJSON_AddNumberToObject(r, "prompt_tokens", dn[i].prompt_tokens);
            cJSON_AddNumberToObject(r, "completion_tokens", dn[i].completion_tokens);
            cJSON_AddNumberToObject(r, "prefill_ms", dn[i].prefill_ms);
            cJSON_AddNumberToObject(r, "decode_ms", dn[i].decode_ms);
            if (dn[i].finish == GEN_FINISH_ERROR) cJSON_AddStringToObject(r, "error", dn[i].error);
            cJSON_AddItemToArray(res, r);
            total_completion += dn[i].completion_tokens;
            total_prompt += dn[i].prompt_tokens;
            sum_prefill += dn[i].prefill_ms;
            free(dn[i].text);
        }
    }
    double wall = now_ms() - t0;
    cJSON_AddNumberToObject(o, "wall_ms", wall);
    cJSON_AddNumberToObject(o, "completion_tokens", (double)total_completion);
    cJSON_AddNumberToObject(o, "prompt_tokens", (double)total_prompt);
    cJSON_AddNumberToObject(o, "sum_prefill_ms", sum_prefill);
    cJSON_AddNumberToObject(o, "aggregate_tok_s", wall > 0 ? total_completion * 1000.0 / wall : 0);
    cJSON_AddStringToObject(o, "isa", quant_isa_name(quant_best_isa()));
    /* the matmul kernels the model's weight types get beyond the per-row dot (kernels/quant.h) */
    cJSON_AddStringToObject(o, "matmul_isa", quant_matvec_fn(QT_Q4_1, QUANT_ISA_BEST) ? "avx512-vnni" : quant_isa_name(quant_best_isa()));
    print_json(o);
    generator_native_ops.close(&g);
    cJSON_Delete(mj);
    return 0;
fail:
    fprintf(stderr, "generate-local: %s\n", err);
    cJSON_Delete(mj);
    return 1;
}
