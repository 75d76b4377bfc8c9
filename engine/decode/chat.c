/* chat.c: recognition and rendering of common chat templates (see chat.h for which reference
 * each family matches). Recognition looks for each family's marker text in the Jinja source in
 * llama.cpp's order (llm_chat_detect_template). Llama 2 / Mistral rendering reproduces llama.cpp's
 * llm_chat_apply_template byte for byte (fixtures recorded by tests/reference/decode_make_fixtures.py);
 * ChatML reproduces the template's Jinja rendering, default system turn included (checked against
 * jinja2 on SmolLM2's template by tests/reference/test_decode_chat_jinja.py). Must not evaluate Jinja. */
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
#define HAS(m) (find_n(tmpl, len, (m)) != NULL)
    if (HAS("<|im_start|>")) {
        /* Phi-4 and SmolVLM use <|im_start|> but are not ChatML: not supported, so refused. */
        if (HAS("<|im_sep|>") || HAS("<end_of_utterance>")) return;
        out->kind = CHAT_CHATML;
        /* A default system turn written as a literal after a "!= 'system'" test, emitted when
         * the first message is not a system message (SmolLM2): '<|im_start|>system\n...<|im_end|>\n'.
         * A default written in an else branch (Qwen2.5's `== 'system'` ... else) is not found, and
         * then no default turn is rendered. */
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
    if ((len >= 7 && memcmp(tmpl, "mistral", 7) == 0) || HAS("[INST]")) {
        if (HAS("[SYSTEM_PROMPT]")) out->kind = CHAT_MISTRAL_V7;
        else if (HAS("' [INST] ' + system_message") || HAS("[AVAILABLE_TOOLS]"))
            out->kind = HAS(" [INST]") ? CHAT_MISTRAL_V1 : HAS("\"[INST]\"") ? CHAT_MISTRAL_V3_TEKKEN : CHAT_MISTRAL_V3;
        else if (HAS("content.strip()")) out->kind = CHAT_LLAMA2_SYS_STRIP;
        else if (HAS("bos_token + '[INST]")) out->kind = CHAT_LLAMA2_SYS_BOS;
        else if (HAS("<<SYS>>")) out->kind = CHAT_LLAMA2_SYS;
        else out->kind = CHAT_LLAMA2;
        return;
    }
    if (HAS("<|start_header_id|>") && HAS("<|end_header_id|>")) {
        out->kind = CHAT_LLAMA3;
        return;
    }
#undef HAS
}

const char *chat_kind_name(ChatKind k) {
    switch (k) {
    case CHAT_CHATML: return "chatml";
    case CHAT_LLAMA3: return "llama3";
    case CHAT_LLAMA2: return "llama2";
    case CHAT_LLAMA2_SYS: return "llama2-sys";
    case CHAT_LLAMA2_SYS_BOS: return "llama2-sys-bos";
    case CHAT_LLAMA2_SYS_STRIP: return "llama2-sys-strip";
    case CHAT_MISTRAL_V1: return "mistral-v1";
    case CHAT_MISTRAL_V3: return "mistral-v3";
    case CHAT_MISTRAL_V3_TEKKEN: return "mistral-v3-tekken";
    case CHAT_MISTRAL_V7: return "mistral-v7";
    default: return "none";
    }
}

typedef struct Buf {
    char *p;
    size_t n, cap;
    int oom;
    ChatSpan *spans; /* where each message's text landed, or NULL */
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

/* Message i's text, recorded as a span (trimmed: without surrounding isspace() bytes in the C
 * locale, as llama.cpp's trim()). Every message's text goes through here exactly once. */
static int is_space(char c) { return c == ' ' || c == '\n' || c == '\t' || c == '\r' || c == '\v' || c == '\f'; }
static void put_content(Buf *b, const GenMessage *msgs, int i, int trimmed) {
    const char *s = msgs[i].content;
    size_t n = gen_content_len(&msgs[i]);
    if (trimmed) {
        while (n && is_space(*s)) { s++; n--; }
        while (n && is_space(s[n - 1])) n--;
    }
    if (b->spans) b->spans[i] = (ChatSpan){b->n, n};
    put(b, s, n);
}

/* Llama 2 and variants (llama.cpp: LLM_CHAT_TEMPLATE_LLAMA_2*). Adds no generation prompt: the
 * text already ends in [/INST]. */
static void render_llama2(Buf *b, ChatKind k, const GenMessage *msgs, int n) {
    int inside = 1; /* the opening [INST] carries no <s>: the tokenizer adds BOS */
    puts_(b, "[INST] ");
    for (int i = 0; i < n; i++) {
        const char *role = msgs[i].role;
        if (!inside) {
            inside = 1;
            puts_(b, k == CHAT_LLAMA2_SYS_BOS ? "<s>[INST] " : "[INST] ");
        }
        int strip = k == CHAT_LLAMA2_SYS_STRIP;
        if (strcmp(role, "system") == 0) {
            if (k != CHAT_LLAMA2) {
                puts_(b, "<<SYS>>\n");
                put_content(b, msgs, i, strip);
                puts_(b, "\n<</SYS>>\n\n");
            } else { /* no <<SYS>> support: the text joins the first turn */
                put_content(b, msgs, i, strip);
                puts_(b, "\n");
            }
        } else if (strcmp(role, "user") == 0) {
            put_content(b, msgs, i, strip);
            puts_(b, " [/INST]");
        } else {
            put_content(b, msgs, i, strip);
            puts_(b, "</s>");
            inside = 0;
        }
    }
}

/* Mistral's official templates (llama.cpp: LLM_CHAT_TEMPLATE_MISTRAL_V1/V3/V3_TEKKEN/V7). */
static void render_mistral(Buf *b, ChatKind k, const GenMessage *msgs, int n) {
    if (k == CHAT_MISTRAL_V7) {
        for (int i = 0; i < n; i++) {
            const char *role = msgs[i].role;
            if (strcmp(role, "system") == 0) puts_(b, "[SYSTEM_PROMPT] ");
            else if (strcmp(role, "user") == 0) puts_(b, "[INST] ");
            else puts_(b, " ");
            put_content(b, msgs, i, 0);
            puts_(b, strcmp(role, "system") == 0 ? "[/SYSTEM_PROMPT]" : strcmp(role, "user") == 0 ? "[/INST]" : "</s>");
        }
        return;
    }
    const char *lead = k == CHAT_MISTRAL_V1 ? " " : "";
    const char *trail = k == CHAT_MISTRAL_V3_TEKKEN ? "" : " ";
    int inside = 0;
    for (int i = 0; i < n; i++) {
        const char *role = msgs[i].role;
        if (!inside) {
            puts_(b, lead);
            puts_(b, "[INST]");
            puts_(b, trail);
            inside = 1;
        }
        if (strcmp(role, "system") == 0) {
            put_content(b, msgs, i, 0);
            puts_(b, "\n\n");
        } else if (strcmp(role, "user") == 0) {
            put_content(b, msgs, i, 0);
            puts_(b, lead);
            puts_(b, "[/INST]");
        } else {
            puts_(b, trail);
            put_content(b, msgs, i, k == CHAT_MISTRAL_V3);
            puts_(b, "</s>");
            inside = 0;
        }
    }
}

char *chat_render(const ChatTemplate *ct, const GenMessage *msgs, int n, ChatSpan *content, size_t *len, char *err,
                  size_t errlen) {
    if (ct->kind == CHAT_NONE) {
        snprintf(err, errlen, "the model's chat template is not one this engine recognises (chatml, llama3, llama2, mistral); send a raw prompt instead");
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
    Buf b = {.spans = content};
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
            put_content(&b, msgs, i, 0);
            puts_(&b, "<|im_end|>\n");
        }
        puts_(&b, "<|im_start|>assistant\n");
    } else if (ct->kind >= CHAT_LLAMA2 && ct->kind <= CHAT_LLAMA2_SYS_STRIP) {
        render_llama2(&b, ct->kind, msgs, n);
    } else if (ct->kind >= CHAT_MISTRAL_V1 && ct->kind <= CHAT_MISTRAL_V7) {
        render_mistral(&b, ct->kind, msgs, n);
    } else {
        for (int i = 0; i < n; i++) {
            puts_(&b, "<|start_header_id|>");
            puts_(&b, msgs[i].role);
            puts_(&b, "<|end_header_id|>\n\n");
            put_content(&b, msgs, i, 1);
            puts_(&b, "<|eot_id|>");
        }
        puts_(&b, "<|start_header_id|>assistant<|end_header_id|>\n\n");
    }
    if (b.oom || !b.p) {
        free(b.p);
        snprintf(err, errlen, "out of memory rendering the chat template");
        return NULL;
    }
    if (len)
        *len = b.n;
    return b.p;
}
