/* chat.h: chat templates recognised from tokenizer.chat_template by marker text (ChatML, Llama 3,
 * Llama 2 and its variants, Mistral v1/v3/v3-tekken/v7) and rendered in C; an unrecognised
 * template is an error, never a guess. No Jinja engine. What each family's rendering matches
 * (docs/decoder.md, "Chat templates"):
 * - ChatML: the template's own Jinja rendering, as transformers' apply_chat_template and
 *   llama.cpp's Jinja path produce it, including a literal default system turn such as SmolLM2's
 *   (llama.cpp's C llm_chat_apply_template leaves that turn out);
 * - Llama 2, Mistral: llama.cpp's C llm_chat_apply_template, byte for byte (their Jinja
 *   renderings differ in spacing and <s>/</s> text);
 * - Llama 3: laid out as llm_chat_apply_template does, without BOS text (the tokenizer adds it). */
#ifndef WEAVER_DECODE_CHAT_H
#define WEAVER_DECODE_CHAT_H

#include <stddef.h>

#include "engine/generator.h"

typedef enum ChatKind {
    CHAT_NONE = 0,
    CHAT_CHATML,
    CHAT_LLAMA3,
    CHAT_LLAMA2,           /* [INST] ... [/INST], system text folded into the first turn */
    CHAT_LLAMA2_SYS,       /* + <<SYS>> block */
    CHAT_LLAMA2_SYS_BOS,   /* + <s> before every later [INST] */
    CHAT_LLAMA2_SYS_STRIP, /* + message text stripped of surrounding whitespace */
    CHAT_MISTRAL_V1,
    CHAT_MISTRAL_V3,
    CHAT_MISTRAL_V3_TEKKEN,
    CHAT_MISTRAL_V7,
} ChatKind;

typedef struct ChatTemplate {
    ChatKind kind;
    char default_system[512]; /* ChatML templates that insert a system turn when none is given */
} ChatTemplate;

/* Recognises a template (tmpl may be NULL: no template). Always succeeds; kind says what. */
void chat_detect(const char *tmpl, size_t len, ChatTemplate *out);
const char *chat_kind_name(ChatKind k);
/* Where message i's text lies in the rendered string: [off, off + len). */
typedef struct ChatSpan {
    size_t off, len;
} ChatSpan;

/* Renders messages plus the assistant generation prompt into a malloc'd string (special
 * tokens as text). content: NULL, or n spans, filled with where each message's text landed (so
 * the tokenizer can tell the template's markers from marker text a message contains). NULL with
 * err set on an unknown template or bad message. */
char *chat_render(const ChatTemplate *ct, const GenMessage *msgs, int n, ChatSpan *content, size_t *len, char *err,
                  size_t errlen);

#endif
