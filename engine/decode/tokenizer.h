/* tokenizer.h: tokenizers built from GGUF metadata, giving llama.cpp's ids: byte-level BPE
 * (tokenizer.ggml.model "gpt2", pre-tokenizer regexes by tokenizer.ggml.pre, run with PCRE2 in
 * UTF/UCP mode), gemma4's BPE over raw UTF-8, and SentencePiece-style BPE over scores ("llama").
 * Any other model or pre-tokenizer is refused by tok_load. Special tokens, end-of-generation
 * set, detokenisation to bytes. Knows nothing about models or sampling. */
#ifndef WEAVER_DECODE_TOKENIZER_H
#define WEAVER_DECODE_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>

#include "engine/decode/gguf.h"

typedef struct Tokenizer Tokenizer;

typedef struct TokVec {
    int *v;
    int n, cap;
} TokVec;

int tokvec_push(TokVec *tv, int id); /* 0, or -1 out of memory */
void tokvec_free(TokVec *tv);

/* GGUF token types. */
enum { TOK_NORMAL = 1, TOK_UNKNOWN = 2, TOK_CONTROL = 3, TOK_USER_DEFINED = 4, TOK_UNUSED = 5, TOK_BYTE = 6 };

/* Needs only the tokenizer.* metadata (a vocabulary-only GGUF will do); the strings stay in f,
 * which must outlive the tokenizer. NULL with err set when the file's tokenizer model or
 * pre-tokenizer is not one we reproduce. */
Tokenizer *tok_load(const GgufFile *f, char *err, size_t errlen);
void tok_free(Tokenizer *t); /* NULL-safe */

/* Appends the tokens of text[0..len) to out. parse_special: text matching a control or
 * unknown token (<unk>) becomes that token; without it that text is plain text. Text matching a
 * user-defined token becomes that token either way, as in llama.cpp and Hugging Face tokenizers.
 * add_bos: prepend BOS when the model asks for it (tokenizer.ggml.add_bos_token; when absent,
 * llama.cpp's default: SentencePiece and the llama3 family yes, other BPE no). Invalid UTF-8
 * bytes are treated as U+FFFD. Returns 0, or -1 with err set. */
int tok_encode(const Tokenizer *t, const char *text, size_t len, bool parse_special, bool add_bos, TokVec *out,
               char *err, size_t errlen);

/* A byte range text[off, off + len). */
typedef struct TokSpan {
    size_t off, len;
} TokSpan;

/* As tok_encode with parse_special, except that bytes inside the spans `plain` (ranges of text,
 * in any order, may be empty) are tokenised as without it: a control or unknown token is
 * recognised only when none of its bytes lie in a span. The text is still split and merged as
 * one piece, so with no special-token text inside the spans the tokens equal tok_encode's with
 * parse_special. For a chat: the template's markers stay special, the messages' text does not. */
int tok_encode_spans(const Tokenizer *t, const char *text, size_t len, const TokSpan *plain, int n_plain, bool add_bos,
                     TokVec *out, char *err, size_t errlen);

/* The bytes a token stands for in generated text (control tokens: nothing). Writes at most
 * cap bytes and returns the full length. */
size_t tok_piece(const Tokenizer *t, int id, char *buf, size_t cap);
/* The token's stored text (NUL-free view into the file) and type. */
const char *tok_text(const Tokenizer *t, int id, size_t *len);
int tok_type(const Tokenizer *t, int id);

int tok_n_vocab(const Tokenizer *t);
int tok_bos(const Tokenizer *t);          /* -1 when none */
bool tok_is_eog(const Tokenizer *t, int id); /* EOS, EOT and end-of-turn control tokens */
/* Looks up a token by its exact stored text; -1 when absent. */
int tok_find(const Tokenizer *t, const char *text, size_t len);

#endif
