/* wordpiece.h: BERT WordPiece tokenizer, equal to Hugging Face `tokenizers` (BertNormalizer +
 * BertPreTokenizer + WordPiece + [CLS]/[SEP] template) for the settings it reads from
 * tokenizer.json (or vocab.txt + tokenizer_config.json). Encoding streams over the text with
 * fixed-size scratch on the stack: no allocation, no logging, thread-safe on a shared tokenizer. */
#ifndef WEAVER_WORDPIECE_H
#define WEAVER_WORDPIECE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct WpTokenizer WpTokenizer;

typedef struct WpSettings {
    bool clean_text;
    bool handle_chinese_chars;
    bool strip_accents;
    bool lowercase;
    int max_input_chars_per_word;
    int32_t cls_id, sep_id, unk_id, pad_id;
    int vocab_size;
} WpSettings;

/* Loads dir/tokenizer.json, or dir/vocab.txt (+ dir/tokenizer_config.json) when the former is
 * absent. force_lowercase (sentence_bert_config do_lower_case) lower-cases on top.
 * NULL on failure with "<file>: <problem>" in err. */
WpTokenizer *wp_open(const char *dir, bool force_lowercase, char *err, size_t errlen);
/* From a GGUF `bert` vocabulary in llama.cpp's "phantom space" form (a word-initial piece starts
 * with U+2581, a continuation has no "##", [SPECIAL] tokens as they are), id = position; the
 * BertTokenizer defaults (lower-case, strip accents, CJK padding) since GGUF records none.
 * `what` names the source in errors. */
WpTokenizer *wp_open_phantom(const char *const *toks, const size_t *lens, int n, const char *what, char *err,
                             size_t errlen);
void wp_close(WpTokenizer *tk); /* NULL-safe */
const WpSettings *wp_settings(const WpTokenizer *tk);

/* Tokenizes text (UTF-8; invalid bytes count as U+FFFD) into [CLS] ... [SEP], writing at most
 * max_len ids (the sequence is truncated to max_len - 2 word pieces, then [SEP], like HF
 * truncation). Returns the number of ids written (>= 2), or -1 if max_len < 2. *total, when not
 * NULL, gets the untruncated count (special tokens included). */
int wp_encode(const WpTokenizer *tk, const char *text, size_t len, int32_t *ids, int max_len, int *total);

/* Looks a token string up; -1 when absent (tests). */
int32_t wp_token_id(const WpTokenizer *tk, const char *tok);

#endif
