/* chat.c: recognition and rendering of common chat templates (see chat.h). Recognition looks
 * for each family's marker tokens in the Jinja source, as llama.cpp does; rendering follows
 * the family's published format. Must not evaluate Jinja. */
#include "engine/decode/chat.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *find_n(const char *h, size_t n, const char *needle) {
    size_t k = strlen(needle);
    if (k == 0 || k > n) return NULL;
    for (size_t i = 0; i + k <= n; i++)
        if (h[i] == needle[0] && memcmp(h + i, needle, k) == 0) return h + i;
    return NULL;
}

void chat_detect(const char *tmpl, size_t len, ChatTemplate *out) {
    memset(out, 0, sizeof *out);
    if (!tmpl || len == 0) return;
    if (find_n(tmpl, len, "<|im_start|>")) {
        out->kind = CHAT_CHATML;
        /* A default system turn written as a literal, emitted when the first message is not
         * a system message (SmolLM2, Qwen2.5): '<|im_start|>system\n...<|im_end|>\n'. */
        const char *cond = find_n(tmpl, len, "!= 'system'");
        if (!cond) cond = find_n(tmpl, len, "!= \"system\"");
        if (cond) {
            size_t rest = len - (size_t)(cond - tmpl);
            const char *lit = find_n(cond, rest, "<|im_start|>system\n");
            const char *lit_esc = find_n(cond, rest, "<|im_start|>system\\n");
            const char *start = NULL;
            if (lit && (!lit_esc || lit < lit_esc)) start = lit + strlen("<|im_start|>system\n");
            else if (lit_esc) start = lit_esc + strlen("<|im_start|>system\\n");
            if (start) {
                const char *end = find_n(start, len - (size_t)(start - tmpl), "<|im_end|>");
                /* Only a plain literal: no Jinja inside it. */
                if (end && (size_t)(end - start) < sizeof out->default_system &&
                    !find_n(start, (size_t)(end - start), "{") && !find_n(start, (size_t)(end - start), "'")) {
                    memcpy(out->default_system, start, (size_t)(end - start));
                    out->default_system[end - start] = 0;
                }
            }
        }
        return;
    }
    if (find_n(tmpl, len, "<|start_header_id|>") && find_n(tmpl, len, "<|end_header_id|>")) {
        out->kind = CHAT_LLAMA3;
        return;
    }
}

const char *chat_kind_name(ChatKind k) {
    switch (k) {
    case CHAT_CHATML: return "chatml";
    case CHAT_LLAMA3: return "llama3";
    default: return "none";
    }
}

typedef struct Buf {
    char *p;
    size_t n, cap;
    int oom;
} Buf;

static void put(Buf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->n + n + 1 > b->cap) {
        size_t nc = b->cap ? b->cap : 256;
        while (nc < b->n + n + 1) nc *= 2;
        char *np = realloc(b->p, nc);
        if (!np) {
            b->oom = 1;
            return;
        }
        b->p = np;
        b->cap = nc;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}
static void puts_(Buf *b, const char *s) { put(b, s, strlen(s)); }

/* Llama 3's template strips surrounding whitespace from message content. */
static void put_trimmed(Buf *b, const char *s) {
    size_t n = strlen(s);
    while (n && (*s == ' ' || *s == '\n' || *s == '\t' || *s == '\r')) { s++; n--; }
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\n' || s[n - 1] == '\t' || s[n - 1] == '\r')) n--;
    put(b, s, n);
}

char *chat_render(const ChatTemplate *ct, const GenMessage *msgs, int n, char *err, size_t errlen) {
    if (ct->kind == CHAT_NONE) {
        snprintf(err, errlen, "the model's chat template is not one this engine recognises (chatml, llama3); send a raw prompt instead");
        return NULL;
    }
    if (n < 1) {
        snprintf(err, errlen, "messages is empty");
        return NULL;
    }
    for (int i = 0; i < n; i++)
        if (!msgs[i].role || !msgs[i].content ||
            (strcmp(msgs[i].role, "system") && strcmp(msgs[i].role, "user") && strcmp(msgs[i].role, "assistant"))) {
            snprintf(err, errlen, "message %d: role must be system, user or assistant, with content", i);
            return NULL;
        }
    Buf b = {0};
    if (ct->kind == CHAT_CHATML) {
        if (ct->default_system[0] && strcmp(msgs[0].role, "system") != 0) {
            puts_(&b, "<|im_start|>system\n");
            puts_(&b, ct->default_system);
            puts_(&b, "<|im_end|>\n");
        }
        for (int i = 0; i < n; i++) {
            puts_(&b, "<|im_start|>");
            puts_(&b, msgs[i].role);
            puts_(&b, "\n");
            puts_(&b, msgs[i].content);
            puts_(&b, "<|im_end|>\n");
        }
        puts_(&b, "<|im_start|>assistant\n");
    } else {
        for (int i = 0; i < n; i++) {
            puts_(&b, "<|start_header_id|>");
            puts_(&b, msgs[i].role);
            puts_(&b, "<|end_header_id|>\n\n");
            put_trimmed(&b, msgs[i].content);
            puts_(&b, "<|eot_id|>");
        }
        puts_(&b, "<|start_header_id|>assistant<|end_header_id|>\n\n");
    }
    if (b.oom || !b.p) {
        free(b.p);
        snprintf(err, errlen, "out of memory rendering the chat template");
        return NULL;
    }
    return b.p;
}
