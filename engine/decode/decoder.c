/* decoder.c: loads model + tokenizer + chat template from one GGUF file; prompt building. */
#include "engine/decode/decoder.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

Decoder *decoder_load(const char *path, char *err, size_t errlen) {
    GgufFile *f = gguf_open(path, err, errlen);
    if (!f) return NULL;
    Decoder *d = calloc(1, sizeof *d);
    if (!d) {
        gguf_close(f);
        snprintf(err, errlen, "decoder: out of memory");
        return NULL;
    }
    d->tok = tok_load(f, err, errlen);
    if (!d->tok) {
        gguf_close(f);
        free(d);
        return NULL;
    }
    GgufStr tmpl = {NULL, 0};
    gguf_get_str(f, "tokenizer.chat_template", &tmpl);
    chat_detect(tmpl.ptr, (size_t)tmpl.len, &d->chat);
    d->model = model_load(f, err, errlen); /* owns f from here */
    if (!d->model) {
        tok_free(d->tok);
        free(d);
        return NULL;
    }
    if (tok_n_vocab(d->tok) != d->model->hp.n_vocab) {
        snprintf(err, errlen, "decoder: tokenizer has %d tokens but the embedding has %d rows", tok_n_vocab(d->tok),
                 d->model->hp.n_vocab);
        decoder_free(d);
        return NULL;
    }
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    snprintf(d->model_id, sizeof d->model_id, "%s", base);
    size_t n = strlen(d->model_id);
    if (n > 5 && strcmp(d->model_id + n - 5, ".gguf") == 0) d->model_id[n - 5] = 0;
    return d;
}

void decoder_free(Decoder *d) {
    if (!d) return;
    tok_free(d->tok); /* the tokenizer points into the file: free it before the model closes it */
    model_free(d->model);
    free(d);
}

int decoder_prompt_tokens(const Decoder *d, const GenRequest *req, TokVec *out, char *err, size_t errlen) {
    if (req->messages && req->n_messages > 0) {
        ChatSpan *content = calloc((size_t)req->n_messages, sizeof *content);
        TokSpan *plain = calloc((size_t)req->n_messages, sizeof *plain);
        size_t len = 0;
        char *text = content && plain ? chat_render(&d->chat, req->messages, req->n_messages, content, &len, err, errlen)
                                      : NULL;
        int rc = -1;
        if (text) {
            for (int i = 0; i < req->n_messages; i++) plain[i] = (TokSpan){content[i].off, content[i].len};
            rc = tok_encode_spans(d->tok, text, len, plain, req->parse_special ? 0 : req->n_messages, true, out,
                                  err, errlen);
        } else if (!content || !plain) {
            snprintf(err, errlen, "out of memory");
        }
        free(text);
        free(plain);
        free(content);
        return rc;
    }
    if (!req->prompt) {
        snprintf(err, errlen, "request has neither prompt nor messages");
        return -1;
    }
    return tok_encode(d->tok, req->prompt, gen_prompt_len(req), req->parse_special, true, out, err, errlen);
}

static size_t u8len(const unsigned char *s, size_t n, int *incomplete) {
    *incomplete = 0;
    unsigned c = s[0];
    size_t len;
    unsigned v, min;
    if (c < 0x80) return 1;
    if ((c & 0xE0) == 0xC0) { len = 2; v = c & 0x1F; min = 0x80; }
    else if ((c & 0xF0) == 0xE0) { len = 3; v = c & 0x0F; min = 0x800; }
    else if ((c & 0xF8) == 0xF0) { len = 4; v = c & 0x07; min = 0x10000; }
    else return 0;
    for (size_t i = 1; i < len; i++) {
        if (i >= n) {
            *incomplete = 1;
            return 0;
        }
        if ((s[i] & 0xC0) != 0x80) return 0;
        v = (v << 6) | (s[i] & 0x3F);
    }
    if (v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF)) return 0;
    return len;
}

size_t decoder_utf8_fix(char *s, size_t n, size_t cap) {
    /* Scan; copy through a temporary only when something must change. */
    size_t i = 0;
    int bad = 0;
    while (i < n) {
        int inc;
        size_t l = u8len((const unsigned char *)s + i, n - i, &inc);
        if (l == 0) {
            if (inc) return i; /* incomplete tail: drop it */
            bad = 1;
            break;
        }
        i += l;
    }
    if (!bad) return n;
    char *tmp = malloc(n * 3 + 1);
    if (!tmp) return i;
    size_t o = 0;
    for (i = 0; i < n;) {
        int inc;
        size_t l = u8len((const unsigned char *)s + i, n - i, &inc);
        if (l == 0 && inc) break;
        if (l == 0) {
            memcpy(tmp + o, "\xEF\xBF\xBD", 3);
            o += 3;
            i++;
            continue;
        }
        memcpy(tmp + o, s + i, l);
        o += l;
        i += l;
    }
    if (o > cap) o = cap;
    memcpy(s, tmp, o);
    free(tmp);
    return o;
}
