/* decoder.h: a loaded GGUF decoder: model weights, tokenizer and chat template together,
 * and turning a GenRequest into prompt tokens. Shared by the native generator backend and
 * the generate-local debug CLI. */
#ifndef WEAVER_DECODE_DECODER_H
#define WEAVER_DECODE_DECODER_H

#include "engine/decode/chat.h"
#include "engine/decode/model.h"
#include "engine/decode/tokenizer.h"
#include "engine/generator.h"

typedef struct Decoder {
    Model *model;
    Tokenizer *tok;
    ChatTemplate chat;
    char model_id[256];
} Decoder;

Decoder *decoder_load(const char *path, char *err, size_t errlen);
void decoder_free(Decoder *d); /* NULL-safe */
/* Prompt tokens of a request: messages rendered with the chat template, or the raw prompt; BOS
 * added when the model asks. Special-token text in the prompt or in a message's text becomes
 * special tokens only with req->parse_special; the template's own markers always do. */
int decoder_prompt_tokens(const Decoder *d, const GenRequest *req, TokVec *out, char *err, size_t errlen);
/* Makes s[0..*n) valid UTF-8 in place: invalid bytes become U+FFFD (needs 3x room: cap),
 * an incomplete sequence at the very end is dropped. */
size_t decoder_utf8_fix(char *s, size_t n, size_t cap);

#endif
