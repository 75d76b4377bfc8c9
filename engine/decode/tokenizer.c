/* tokenizer.c: byte-level BPE (GPT-2 style) and SentencePiece-style BPE from GGUF metadata.
 * The vocabulary strings stay in the mapped GGUF file; lookups go through open-addressing
 * hash tables built at load. Must not touch model weights. */
#include "engine/decode/tokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <ctype.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct StrMap {
    uint32_t cap;      /* power of two */
    int32_t *slots;    /* value index or -1 */
    const char **keys;
    uint32_t *klens;
    int32_t *vals;
    uint32_t n;
} StrMap;

static uint64_t hash_bytes(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ (uint8_t)s[i]) * 1099511628211ull;
    return h;
}

static int map_init(StrMap *m, uint32_t n) {
    m->cap = 16;
    while (m->cap < n * 2u + 2) m->cap <<= 1;
    m->slots = malloc(m->cap * sizeof *m->slots);
    m->keys = malloc((n ? n : 1) * sizeof *m->keys);
    m->klens = malloc((n ? n : 1) * sizeof *m->klens);
    m->vals = malloc((n ? n : 1) * sizeof *m->vals);
    m->n = 0;
    if (!m->slots || !m->keys || !m->klens || !m->vals) return -1;
    memset(m->slots, 0xff, m->cap * sizeof *m->slots);
    return 0;
}

static void map_free(StrMap *m) {
    free(m->slots);
    free(m->keys);
    free(m->klens);
    free(m->vals);
}

static int map_get(const StrMap *m, const char *k, size_t n) {
    if (!m->slots) return -1;
    uint32_t i = (uint32_t)hash_bytes(k, n) & (m->cap - 1);
    for (;;) {
        int32_t s = m->slots[i];
        if (s < 0) return -1;
        if (m->klens[s] == n && memcmp(m->keys[s], k, n) == 0) return m->vals[s];
        i = (i + 1) & (m->cap - 1);
    }
}

/* Adds key -> val unless the key exists (first wins). Key memory must outlive the map. */
static void map_put(StrMap *m, const char *k, size_t n, int val) {
    uint32_t i = (uint32_t)hash_bytes(k, n) & (m->cap - 1);
    for (;;) {
        int32_t s = m->slots[i];
        if (s < 0) break;
        if (m->klens[s] == n && memcmp(m->keys[s], k, n) == 0) return;
        i = (i + 1) & (m->cap - 1);
    }
    m->keys[m->n] = k;
    m->klens[m->n] = (uint32_t)n;
    m->vals[m->n] = val;
    m->slots[i] = (int32_t)m->n++;
}

typedef enum { TOK_BPE = 0, TOK_SPM = 1 } TokKind;

#define PRE_MAX_RE 6 /* most split expressions of one pre-tokenizer (deepseek-llm) */
enum { STRIP_LEFT = 1, STRIP_RIGHT = 2 }; /* spaces a special token swallows (llama.cpp's LSTRIP/RSTRIP) */

struct Tokenizer {
    TokKind kind;
    int n_vocab;
    GgufStr *text;
    int *type;
    float *score;
    StrMap vocab;
    StrMap merges;       /* "left right" -> rank (BPE) */
    pcre2_code *re[PRE_MAX_RE];
    int n_re;
    bool spm_bpe;        /* BPE over raw UTF-8 with spaces as U+2581 (gemma4), not byte-level */
    unsigned char *strip; /* STRIP_* per token, or NULL when no token has any */
    int *special;        /* ids of tokens matched in text when parse_special, longest first */
    int n_special;
    int bos, eos, eot, unk;
    bool add_bos, add_space_prefix;
    bool ignore_merges; /* llama3: a word that is a token is not merged */
    bool *eog;
    int byte_tok[256];   /* SPM: <0xXX> tokens; BPE: token of each single byte */
    uint16_t byte_cp[256];   /* byte-level BPE: byte -> code point */
    int16_t cp_byte[512];    /* code point (< 512) -> byte, -1 none */
};

static int errf(char *err, size_t errlen, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return -1;
}

int tokvec_push(TokVec *tv, int id) {
    if (tv->n == tv->cap) {
        int nc = tv->cap ? tv->cap * 2 : 64;
        int *nv = realloc(tv->v, (size_t)nc * sizeof *nv);
        if (!nv) return -1;
        tv->v = nv;
        tv->cap = nc;
    }
    tv->v[tv->n++] = id;
    return 0;
}

void tokvec_free(TokVec *tv) {
    free(tv->v);
    memset(tv, 0, sizeof *tv);
}

static size_t utf8_put(char *o, uint32_t cp) {
    if (cp < 0x80) { o[0] = (char)cp; return 1; }
    if (cp < 0x800) { o[0] = (char)(0xC0 | (cp >> 6)); o[1] = (char)(0x80 | (cp & 0x3F)); return 2; }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | (cp >> 12)); o[1] = (char)(0x80 | ((cp >> 6) & 0x3F)); o[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | (cp >> 18)); o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3F)); o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Length of the valid UTF-8 sequence at s (1..4), or 0 when invalid/incomplete. */
static size_t utf8_len(const unsigned char *s, size_t n, uint32_t *cp) {
    if (n == 0) return 0;
    unsigned c = s[0];
    if (c < 0x80) { *cp = c; return 1; }
    size_t len;
    uint32_t v, min;
    if ((c & 0xE0) == 0xC0) { len = 2; v = c & 0x1F; min = 0x80; }
    else if ((c & 0xF0) == 0xE0) { len = 3; v = c & 0x0F; min = 0x800; }
    else if ((c & 0xF8) == 0xF0) { len = 4; v = c & 0x07; min = 0x10000; }
    else return 0;
    if (n < len) return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
        v = (v << 6) | (s[i] & 0x3F);
    }
    if (v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF)) return 0;
    *cp = v;
    return len;
}

/* ---- pre-tokenizers (by tokenizer.ggml.pre) ----
 * The split expressions llama.cpp (llama-vocab.cpp, llm_tokenizer_bpe) uses for each name, in
 * its order: each expression splits every piece the previous ones left, keeping both the matches
 * and the text between them. Names llama.cpp groups together share an entry; a name that is not
 * here is refused at load, never tokenised some other way. */

#define RE_GPT2 "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)"
#define RE_LLAMA3                                                                                     \
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| " \
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
#define RE_QWEN2                                                                                      \
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| "    \
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
#define RE_QWEN35                                                                                     \
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?[\\p{L}\\p{M}]+|\\p{N}| " \
    "?[^\\s\\p{L}\\p{M}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
/* CJK ideographs and Hangul runs (the deepseek families) */
#define RE_CJK "[\xe4\xb8\x80-\xe9\xbe\xa5\xe0\xa0\x80-\xe4\xb8\x80\xea\xb0\x80-\xed\x9f\xbf]+"

enum {
    PRE_IGNORE_MERGES = 1, /* a word that is itself a token is not merged (llama3) */
    PRE_ADD_BOS = 2,       /* BOS by default when tokenizer.ggml.add_bos_token is absent */
    PRE_SPM_BPE = 4,       /* gemma4: spaces become U+2581, merges over raw UTF-8, <0xXX> fallback */
};

typedef struct PreTok {
    const char *names; /* '|'-separated tokenizer.ggml.pre values */
    unsigned flags;
    const char *re[PRE_MAX_RE];
} PreTok;

static const PreTok pre_toks[] = {
    /* no tokenizer.ggml.pre, or "default": llama.cpp's own default, not GPT-2's */
    {"default", 0, {"[\\p{P}\\$\\+<=>\\^~\\|]+", RE_GPT2, "\\p{N}+", "[0-9][0-9][0-9]"}},
    {"llama3|llama-v3|llama-bpe|falcon3|falcon-h1|pixtral|midm-2.0|lfm2|jina-v5-nano", PRE_IGNORE_MERGES | PRE_ADD_BOS,
     {RE_LLAMA3}},
    {"dbrx|smaug-bpe", 0, {RE_LLAMA3}},
    {"deepseek-llm", 0,
     {"[\r\n]",
      "\\s?[A-Za-z\xc2\xb5\xc3\x80-\xc3\x96\xc3\x98-\xc3\xb6\xc3\xb8-\xc6\xba\xc6\xbc-\xc6\xbf\xc7\x84-\xca\x93"
      "\xca\x95-\xca\xaf\xcd\xb0-\xcd\xb3\xcd\xb6\xcd\xb7\xcd\xbb-\xcd\xbd\xcd\xbf\xce\x86\xce\x88-\xce\x8a\xce\x8c"
      "\xce\x8e-\xce\xa1\xce\xa3-\xcf\xb5\xcf\xb7-\xd2\x81\xd2\x8a-\xd4\xaf\xd4\xb1-\xd5\x96\xe1\x82\xa0-\xe1\x83\x85"
      "\xe1\x8e\xa0-\xe1\x8f\xb5\xe1\x8f\xb8-\xe1\x8f\xbd\xe1\xb2\x90-\xe1\xb2\xba\xe1\xb2\xbd-\xe1\xb2\xbf"
      "\xe1\xb4\x80-\xe1\xb4\xab\xe1\xb5\xab-\xe1\xb5\xb7\xe1\xb5\xb9-\xe1\xb6\x9a\xe1\xb8\x80-\xe1\xbc\x95"
      "\xe1\xbc\x98-\xe1\xbc\x9d\xe1\xbc\xa0-\xe1\xbd\x85\xe1\xbd\x88-\xe1\xbd\x8d\xe1\xbd\x90-\xe1\xbd\x97"
      "\xe1\xbd\x99\xe1\xbd\x9b\xe1\xbd\x9d\xe1\xbd\x9f-\xe1\xbd\xbd\xe1\xbe\x80-\xe1\xbe\xb4\xe1\xbe\xb6-\xe1\xbe\xbc"
      "\xe1\xbe\xbe\xe1\xbf\x82-\xe1\xbf\x84\xe1\xbf\x86-\xe1\xbf\x8c\xe1\xbf\x90-\xe1\xbf\x93\xe1\xbf\x96-\xe1\xbf\x9b"
      "\xe1\xbf\xa0-\xe1\xbf\xac\xe1\xbf\xb2-\xe1\xbf\xb4\xe1\xbf\xb6-\xe1\xbf\xbc\xe2\x84\x82\xe2\x84\x87"
      "\xe2\x84\x8a-\xe2\x84\x93\xe2\x84\x95\xe2\x84\x99-\xe2\x84\x9d\xe2\x84\xa4\xe2\x84\xa6\xe2\x84\xa8"
      "\xe2\x84\xaa-\xe2\x84\xad\xe2\x84\xaf-\xe2\x84\xb4\xe2\x84\xb9\xe2\x84\xbc-\xe2\x84\xbf\xe2\x85\x85-\xe2\x85\x89"
      "\xe2\x85\x8e\xe2\x86\x83\xe2\x86\x84\xe2\xb0\x80-\xe2\xb1\xbb\xe2\xb1\xbe-\xe2\xb3\xa4\xe2\xb3\xab-\xe2\xb3\xae"
      "\xe2\xb3\xb2\xe2\xb3\xb3\xea\x99\x80-\xea\x99\xad\xea\x9a\x80-\xea\x9a\x9b\xea\x9c\xa2-\xea\x9d\xaf"
      "\xea\x9d\xb1-\xea\x9e\x87\xea\x9e\x8b-\xea\x9e\x8e\xea\xad\xb0-\xea\xae\xbf\xef\xac\x80-\xef\xac\x86"
      "\xef\xac\x93-\xef\xac\x97\xef\xbc\xa1-\xef\xbc\xba\xef\xbd\x81-\xef\xbd\x9a\xf0\x90\x90\x80-\xf0\x90\x91\x8f"
      "\xf0\x90\x92\xb0-\xf0\x90\x93\x93\xf0\x90\x93\x98-\xf0\x90\x93\xbb\xf0\x90\xb2\x80-\xf0\x90\xb2\xb2"
      "\xf0\x90\xb3\x80-\xf0\x90\xb3\xb2\xf0\x91\xa2\xa0-\xf0\x91\xa3\x9f\xf0\x9e\xa4\x80-\xf0\x9e\xa5\x83]+",
      "\\s?[!-/:-~\xef\xbc\x81-\xef\xbc\x8f\xef\xbc\x9a-\xef\xbd\x9e\xe2\x80\x98-\xe2\x80\x9f\xe3\x80\x80-\xe3\x80\x82]+",
      "\\s+$", RE_CJK, "\\p{N}+"}},
    {"deepseek-coder", 0, {"[\r\n]", "\\s?\\p{L}+", "\\s?\\p{P}+", RE_CJK, "\\p{N}"}},
    {"falcon", 0, {"[\\p{P}\\$\\+<=>\\^~\\|`]+", RE_GPT2, "[0-9][0-9][0-9]"}},
    {"starcoder|refact|command-r|smollm|codeshell|exaone|minerva-7b|mellum2", 0, {"\\p{N}", RE_GPT2}},
    {"gpt-2|phi-2|jina-es|jina-de|gigachat|jina-v2-es|jina-v2-de|a.x-4.0|mellum|modern-bert|exaone4|mpt|olmo|jais|"
     "trillion|granite-docling",
     0, {RE_GPT2}},
    {"qwen2|deepseek-r1-qwen|kormo|f2llmv2|megrez|stablelm2|hunyuan|solar-open", 0, {RE_QWEN2}},
    {"qwen35", 0, {RE_QWEN35}},
    {"gemma4|granite-embed-multi-311m", PRE_SPM_BPE, {"[^\\n]+|[\\n]+"}},
};

/* The entry for pre (n bytes; n == 0: the key is absent), or NULL. */
static const PreTok *pre_find(const char *pre, size_t n) {
    if (n == 0) return &pre_toks[0];
    for (size_t i = 0; i < sizeof pre_toks / sizeof pre_toks[0]; i++)
        for (const char *p = pre_toks[i].names; *p;) {
            size_t l = strcspn(p, "|");
            if (l == n && memcmp(p, pre, n) == 0) return &pre_toks[i];
            p += l + (p[l] == '|');
        }
    return NULL;
}

static void init_byte_map(Tokenizer *t) {
    int n = 0;
    for (int i = 0; i < 512; i++) t->cp_byte[i] = -1;
    for (int b = 0; b < 256; b++) {
        int keep = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
        t->byte_cp[b] = (uint16_t)(keep ? b : 256 + n++);
        t->cp_byte[t->byte_cp[b]] = (int16_t)b;
    }
}

void tok_free(Tokenizer *t) {
    if (!t) return;
    map_free(&t->vocab);
    map_free(&t->merges);
    for (int i = 0; i < t->n_re; i++) pcre2_code_free(t->re[i]);
    free(t->text);
    free(t->type);
    free(t->score);
    free(t->special);
    free(t->eog);
    free(t->strip);
    free(t);
}

static int cmp_len_desc(const void *a, const void *b, void *ctx) {
    const Tokenizer *t = ctx;
    uint64_t la = t->text[*(const int *)a].len, lb = t->text[*(const int *)b].len;
    return la < lb ? 1 : la > lb ? -1 : (*(const int *)a - *(const int *)b);
}

static int get_id(const GgufFile *f, const char *key, int n_vocab, int def) {
    uint32_t v;
    if (gguf_get_u32(f, key, &v) == 0 && v < (uint32_t)n_vocab) return (int)v;
    return def;
}

/* True when the GGUF string s equals the C string lit. */
static bool str_is(GgufStr s, const char *lit) { return s.len == strlen(lit) && memcmp(s.ptr, lit, s.len) == 0; }

/* Token types as llama.cpp's loader leaves them: it recognises end-of-generation and
 * fill-in-the-middle markers by their text and makes them control tokens (so that, like other
 * control tokens, they are plain text without special parsing), and marks per-family tokens
 * that swallow the spaces beside them. */
static int fix_token_types(Tokenizer *t, const GgufFile *f) {
    static const char *const eog_names[] = {
        "<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>", "<|calls|>",
        "<end_of_turn>", "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]", "[EOS]",
        "<|end_of_text|>", "<end_of_utterance>", "<eos>", "<turn|>", "<|tool_response>",
        "<｜end▁of▁sentence｜>", "[e~["};
    /* Fill-in-the-middle markers, one group per role, used when the file does not name them;
     * pad, repo and file-separator end generation. */
    static const struct {
        const char *key;
        bool eog;
        const char *names[9];
    } fim[] = {
        {"tokenizer.ggml.fim_pre_token_id", false,
         {"<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>", "<｜fim▁begin｜>",
          "<PRE>", "▁<PRE>", "<|code_prefix|>", "<|prefix|>"}},
        {"tokenizer.ggml.fim_suf_token_id", false,
         {"<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>", "<｜fim▁hole｜>", "<SUF>",
          "▁<SUF>", "<|code_suffix|>", "<|suffix|>"}},
        {"tokenizer.ggml.fim_mid_token_id", false,
         {"<|fim_middle|>", "<fim-middle>", "<fim_middle>", "<｜fim▁end｜>", "<MID>",
          "▁<MID>", "<|code_middle|>", "<|middle|>"}},
        {"tokenizer.ggml.fim_pad_token_id", true, {"<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"}},
        {"tokenizer.ggml.fim_rep_token_id", true, {"<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>"}},
        {"tokenizer.ggml.fim_sep_token_id", true, {"<|file_sep|>"}},
    };
    for (size_t g = 0; g < sizeof fim / sizeof fim[0]; g++) {
        int id = get_id(f, fim[g].key, t->n_vocab, -1);
        for (int k = 0; id < 0 && k < 9 && fim[g].names[k]; k++) {
            id = map_get(&t->vocab, fim[g].names[k], strlen(fim[g].names[k]));
            if (id >= 0 && t->type[id] != TOK_CONTROL) t->type[id] = TOK_CONTROL;
        }
        if (id >= 0 && fim[g].eog) t->eog[id] = true;
    }
    for (size_t i = 0; i < sizeof eog_names / sizeof eog_names[0]; i++) {
        int id = map_get(&t->vocab, eog_names[i], strlen(eog_names[i]));
        if (id < 0) continue;
        t->eog[id] = true;
        t->type[id] = TOK_CONTROL;
    }
    /* gpt-oss: these are always rendered */
    static const char *const shown[] = {"<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"};
    for (size_t i = 0; i < sizeof shown / sizeof shown[0]; i++) {
        int id = map_get(&t->vocab, shown[i], strlen(shown[i]));
        if (id >= 0) t->type[id] = TOK_USER_DEFINED;
    }
    int end = tok_find(t, "<|end|>", 7), ret = tok_find(t, "<|return|>", 10), call = tok_find(t, "<|call|>", 8),
        calls = tok_find(t, "<|calls|>", 9), flush = tok_find(t, "<|flush|>", 9);
    if (end >= 0 && ((ret >= 0 && call >= 0) || (calls >= 0 && flush >= 0))) { /* o200k_harmony, solar-open */
        t->eog[end] = false;
        t->type[end] = TOK_USER_DEFINED;
    }
    int s_end = tok_find(t, "</s>", 4);
    if (s_end >= 0 && (tok_find(t, "<|tool_response>", 16) >= 0 || tok_find(t, "<|plamo:eos|>", 13) >= 0)) {
        t->eog[s_end] = false; /* gemma4, plamo: an ordinary token */
        t->type[s_end] = TOK_NORMAL;
    }
    if (t->eos >= 0) t->eog[t->eos] = true;
    if (t->eot >= 0) t->eog[t->eot] = true;
    int eom = get_id(f, "tokenizer.ggml.eom_token_id", t->n_vocab, -1);
    if (eom >= 0) t->eog[eom] = true;

    /* Which tokens swallow spaces, by family (llama.cpp keys this on names, not on the file). */
    GgufStr name = {"", 0}, pre = {"", 0}, arch = {"", 0};
    gguf_get_str(f, "general.name", &name);
    gguf_get_str(f, "tokenizer.ggml.pre", &pre);
    gguf_get_str(f, "general.architecture", &arch);
    char lname[256];
    size_t nl = name.len < sizeof lname - 1 ? (size_t)name.len : sizeof lname - 1;
    for (size_t i = 0; i < nl; i++) lname[i] = (char)tolower((unsigned char)name.ptr[i]);
    lname[nl] = 0;
    char lpre[64], larch[64];
    snprintf(lpre, sizeof lpre, "%.*s", (int)(pre.len < 63 ? pre.len : 63), pre.ptr);
    snprintf(larch, sizeof larch, "%.*s", (int)(arch.len < 63 ? arch.len : 63), arch.ptr);
    int mask = -1;
    bool phi3 = false;
    if (strstr(lpre, "jina-v2-de") || strstr(lpre, "jina-v2-es") || strstr(lpre, "jina-v2-code") ||
        strstr(larch, "nomic-bert-moe") || strstr(larch, "jina-bert-v3"))
        mask = tok_find(t, "<mask>", 6);
    else if (strstr(lname, "phi-3") || strstr(lname, "phi3"))
        phi3 = true;
    else if (strstr(lname, "modern-bert"))
        mask = tok_find(t, "[MASK]", 6);
    if (mask >= 0 || phi3) {
        t->strip = calloc((size_t)t->n_vocab, 1);
        if (!t->strip) return -1;
        if (mask >= 0) t->strip[mask] = STRIP_LEFT;
        for (int i = 0; phi3 && i < t->n_vocab; i++)
            if (t->type[i] == TOK_CONTROL || t->type[i] == TOK_USER_DEFINED || t->type[i] == TOK_UNKNOWN)
                t->strip[i] = STRIP_RIGHT;
        static const char *const keep[] = {"<unk>", "<s>", "<|endoftext|>"};
        int id = tok_find(t, "</s>", 4);
        if (phi3 && id >= 0) t->strip[id] = STRIP_RIGHT;
        for (size_t i = 0; phi3 && i < sizeof keep / sizeof keep[0]; i++)
            if ((id = tok_find(t, keep[i], strlen(keep[i]))) >= 0) t->strip[id] = 0;
    }
    return 0;
}

Tokenizer *tok_load(const GgufFile *f, char *err, size_t errlen) {
    Tokenizer *t = calloc(1, sizeof *t);
    if (!t) {
        errf(err, errlen, "tokenizer: out of memory");
        return NULL;
    }
    GgufStr model;
    if (gguf_get_str(f, "tokenizer.ggml.model", &model)) {
        errf(err, errlen, "tokenizer: tokenizer.ggml.model is missing");
        goto fail;
    }
    const PreTok *pt = NULL;
    GgufStr pre = {"", 0};
    gguf_get_str(f, "tokenizer.ggml.pre", &pre);
    if (str_is(model, "gpt2") || str_is(model, "gemma4")) {
        t->kind = TOK_BPE;
        /* gemma4 names no pre-tokenizer of its own: llama.cpp gives it gemma4's */
        pt = str_is(model, "gemma4") ? pre_find("gemma4", 6) : pre_find(pre.ptr, (size_t)pre.len);
        if (!pt) {
            errf(err, errlen,
                 "tokenizer: pre-tokenizer '%.*s' (tokenizer.ggml.pre) is not supported; this vocabulary would be "
                 "split differently from llama.cpp",
                 (int)(pre.len > 64 ? 64 : pre.len), pre.ptr);
            goto fail;
        }
    } else if (str_is(model, "llama")) {
        t->kind = TOK_SPM;
    } else {
        errf(err, errlen, "tokenizer: tokenizer model '%.*s' (tokenizer.ggml.model) is not supported (gpt2, gemma4, llama are)",
             (int)(model.len > 64 ? 64 : model.len), model.ptr);
        goto fail;
    }
    const GgufKV *toks = gguf_find(f, "tokenizer.ggml.tokens");
    if (!toks || toks->type != GGUF_ARRAY || toks->arr_type != GGUF_STRING || toks->arr_n == 0 || toks->arr_n > (1u << 24)) {
        errf(err, errlen, "tokenizer: tokenizer.ggml.tokens is missing or not a string array");
        goto fail;
    }
    t->n_vocab = (int)toks->arr_n;
    t->text = malloc((size_t)t->n_vocab * sizeof *t->text);
    t->type = malloc((size_t)t->n_vocab * sizeof *t->type);
    t->score = calloc((size_t)t->n_vocab, sizeof *t->score);
    t->eog = calloc((size_t)t->n_vocab, sizeof *t->eog);
    t->special = malloc((size_t)t->n_vocab * sizeof *t->special);
    if (!t->text || !t->type || !t->score || !t->eog || !t->special || map_init(&t->vocab, (uint32_t)t->n_vocab)) {
        errf(err, errlen, "tokenizer: out of memory");
        goto fail;
    }
    memcpy(t->text, toks->arr_strs, (size_t)t->n_vocab * sizeof *t->text);
    const GgufKV *types = gguf_find(f, "tokenizer.ggml.token_type");
    const GgufKV *scores = gguf_find(f, "tokenizer.ggml.scores");
    int types_ok = types && types->type == GGUF_ARRAY && types->arr_n == toks->arr_n && types->arr_data;
    int scores_ok = scores && scores->type == GGUF_ARRAY && scores->arr_n == toks->arr_n && scores->arr_data;
    for (int i = 0; i < t->n_vocab; i++) {
        t->type[i] = types_ok ? (int)gguf_arr_int(types, (uint64_t)i) : TOK_NORMAL;
        t->score[i] = scores_ok ? (float)gguf_arr_float(scores, (uint64_t)i) : 0.0f;
        map_put(&t->vocab, t->text[i].ptr, t->text[i].len, i);
    }
    /* llama.cpp's defaults where the file names no special token */
    int def_bos = t->kind == TOK_SPM ? 1 : pt->flags & PRE_SPM_BPE ? -1 : 11;
    int def_eos = t->kind == TOK_SPM ? 2 : pt->flags & PRE_SPM_BPE ? -1 : 11;
    int def_unk = t->kind == TOK_SPM ? 0 : -1;
    t->bos = get_id(f, "tokenizer.ggml.bos_token_id", t->n_vocab, def_bos < t->n_vocab ? def_bos : -1);
    t->eos = get_id(f, "tokenizer.ggml.eos_token_id", t->n_vocab, def_eos < t->n_vocab ? def_eos : -1);
    t->eot = get_id(f, "tokenizer.ggml.eot_token_id", t->n_vocab, -1);
    t->unk = get_id(f, "tokenizer.ggml.unknown_token_id", t->n_vocab, def_unk < t->n_vocab ? def_unk : -1);
    /* BOS when the file does not say (tokenizer.ggml.add_bos_token absent): SentencePiece and
     * the llama3 family yes, other BPE no; gemma4 always, whatever the file says. */
    t->add_bos = t->kind == TOK_SPM || (pt->flags & PRE_ADD_BOS);
    t->add_space_prefix = t->kind == TOK_SPM;
    gguf_get_bool(f, "tokenizer.ggml.add_bos_token", &t->add_bos);
    if (pt && (pt->flags & PRE_SPM_BPE)) t->add_bos = true;
    gguf_get_bool(f, "tokenizer.ggml.add_space_prefix", &t->add_space_prefix);
    if (fix_token_types(t, f)) {
        errf(err, errlen, "tokenizer: out of memory");
        goto fail;
    }
    for (int i = 0; i < t->n_vocab; i++)
        /* As llama.cpp: control, user-defined and unknown tokens are matched in prompt text. */
        if ((t->type[i] == TOK_CONTROL || t->type[i] == TOK_USER_DEFINED || t->type[i] == TOK_UNKNOWN) && t->text[i].len > 0)
            t->special[t->n_special++] = i;
    qsort_r(t->special, (size_t)t->n_special, sizeof *t->special, cmp_len_desc, t);
    for (int b = 0; b < 256; b++) t->byte_tok[b] = -1;

    if (t->kind == TOK_BPE) {
        t->spm_bpe = (pt->flags & PRE_SPM_BPE) != 0;
        t->ignore_merges = (pt->flags & PRE_IGNORE_MERGES) != 0;
        init_byte_map(t);
        for (int b = 0; b < 256; b++) {
            char buf[8];
            size_t n = t->spm_bpe ? (size_t)snprintf(buf, sizeof buf, "<0x%02X>", b) : utf8_put(buf, t->byte_cp[b]);
            t->byte_tok[b] = map_get(&t->vocab, buf, n);
        }
        const GgufKV *mg = gguf_find(f, "tokenizer.ggml.merges");
        if (!mg || mg->type != GGUF_ARRAY || mg->arr_type != GGUF_STRING) {
            errf(err, errlen, "tokenizer: BPE needs tokenizer.ggml.merges");
            goto fail;
        }
        if (map_init(&t->merges, (uint32_t)mg->arr_n)) {
            errf(err, errlen, "tokenizer: out of memory");
            goto fail;
        }
        for (uint64_t i = 0; i < mg->arr_n; i++) map_put(&t->merges, mg->arr_strs[i].ptr, mg->arr_strs[i].len, (int)i);
        while (t->n_re < PRE_MAX_RE && pt->re[t->n_re]) {
            int ec;
            PCRE2_SIZE eo;
            /* DOLLAR_ENDONLY: '$' is the end of the piece only, as in std::regex (deepseek-llm) */
            pcre2_code *re = pcre2_compile((PCRE2_SPTR)pt->re[t->n_re], PCRE2_ZERO_TERMINATED,
                                           PCRE2_UTF | PCRE2_UCP | PCRE2_DOLLAR_ENDONLY, &ec, &eo, NULL);
            if (!re) {
                errf(err, errlen, "tokenizer: cannot compile pre-tokenizer regex %d", t->n_re);
                goto fail;
            }
            t->re[t->n_re++] = re;
        }
    } else {
        for (int b = 0; b < 256; b++) {
            char buf[8];
            snprintf(buf, sizeof buf, "<0x%02X>", b);
            t->byte_tok[b] = map_get(&t->vocab, buf, 6);
        }
    }
    return t;
fail:
    tok_free(t);
    return NULL;
}

int tok_n_vocab(const Tokenizer *t) { return t->n_vocab; }
int tok_bos(const Tokenizer *t) { return t->bos; }
bool tok_is_eog(const Tokenizer *t, int id) { return id >= 0 && id < t->n_vocab && t->eog[id]; }
int tok_find(const Tokenizer *t, const char *text, size_t len) { return map_get(&t->vocab, text, len); }
int tok_type(const Tokenizer *t, int id) { return id >= 0 && id < t->n_vocab ? t->type[id] : 0; }

const char *tok_text(const Tokenizer *t, int id, size_t *len) {
    if (id < 0 || id >= t->n_vocab) {
        *len = 0;
        return "";
    }
    *len = t->text[id].len;
    return t->text[id].ptr;
}

/* ---- BPE core shared by both kinds ----
 * Merging is a binary heap of candidate pairs over a doubly linked list of symbols, so a word
 * of n symbols costs O(n log n) rather than a rescan of the word per merge (a 40k-letter word
 * took seconds). Heap entries are not removed when a merge changes a neighbour: they are left
 * behind and skipped when popped (lazy invalidation). The heap orders by (rank, left symbol),
 * which picks exactly the pair a rescan would: the lowest rank, the leftmost on ties. */

typedef struct Sym {
    int start, len;  /* in the work buffer; len 0 once merged into the symbol before it */
    int prev, next;
} Sym;

/* A candidate merge of syms[left] and syms[right] as they were when pushed; len is their
 * joined length then, so a change to either side makes the entry stale. */
typedef struct Cand {
    uint32_t rank;   /* lower merges first */
    int left, right, len;
} Cand;

typedef struct Work {
    char *buf;        /* symbol text (mapped for byte-level) */
    size_t cap;
    Sym *syms;
    int nsym, symcap;
    Cand *heap;       /* merge candidates, a binary min-heap by cand_before */
    size_t heapcap;
    int nheap;
    char *key;
    size_t keycap;
} Work;

static int grow(void **p, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap) return 0;
    size_t nc = *cap ? *cap : 256;
    while (nc < need) nc *= 2;
    void *np = realloc(*p, nc * elem);
    if (!np) return -1;
    *p = np;
    *cap = nc;
    return 0;
}

/* Maps a float to a key with the same order (both zeros to one key, as == sees them), so SPM
 * scores and BPE merge ranks share one integer comparison. */
static uint32_t float_key(float f) {
    if (f == 0.0f) f = 0.0f;
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

/* Rank of merging a and b (lower first); BPE: merges table, SPM: -score of the joined token.
 * Returns 1 with *rank set, 0 when the pair does not merge, -1 out of memory. */
static int pair_rank(const Tokenizer *t, Work *w, const Sym *a, const Sym *b, uint32_t *rank) {
    size_t la = (size_t)a->len, lb = (size_t)b->len;
    if (t->kind == TOK_BPE) {
        if (grow((void **)&w->key, &w->keycap, la + lb + 1, 1)) return -1;
        memcpy(w->key, w->buf + a->start, la);
        w->key[la] = ' ';
        memcpy(w->key + la + 1, w->buf + b->start, lb);
        int r = map_get(&t->merges, w->key, la + lb + 1);
        if (r < 0) return 0;
        *rank = (uint32_t)r;
        return 1;
    }
    /* SPM: symbols are adjacent in the buffer, so the joined text is contiguous. */
    int id = map_get(&t->vocab, w->buf + a->start, la + lb);
    if (id < 0) return 0;
    *rank = float_key(-t->score[id]);
    return 1;
}

static bool cand_before(const Cand *x, const Cand *y) {
    return x->rank < y->rank || (x->rank == y->rank && x->left < y->left);
}

/* Pushes the pair starting at symbol left, if there is one and it merges. 0, or -1 out of memory. */
static int cand_push(const Tokenizer *t, Work *w, int left) {
    if (left < 0 || w->syms[left].next < 0) return 0;
    const Sym *a = &w->syms[left], *b = &w->syms[a->next];
    uint32_t rank;
    int ok = pair_rank(t, w, a, b, &rank);
    if (ok <= 0) return ok;
    Cand c = {rank, left, a->next, a->len + b->len};
    int i = w->nheap++;
    while (i > 0) {
        int parent = (i - 1) / 2;
        if (!cand_before(&c, &w->heap[parent])) break;
        w->heap[i] = w->heap[parent];
        i = parent;
    }
    w->heap[i] = c;
    return 0;
}

static Cand cand_pop(Work *w) {
    Cand top = w->heap[0];
    Cand last = w->heap[--w->nheap];
    int n = w->nheap, i = 0;
    if (n == 0) return top;
    for (;;) {
        int c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && cand_before(&w->heap[c + 1], &w->heap[c])) c++;
        if (!cand_before(&w->heap[c], &last)) break;
        w->heap[i] = w->heap[c];
        i = c;
    }
    w->heap[i] = last;
    return top;
}

/* Merges the symbols of w->buf[0..n) and appends their tokens. */
static int bpe_word(const Tokenizer *t, Work *w, size_t n, TokVec *out) {
    w->nsym = 0;
    size_t cap = (size_t)w->symcap;
    if (grow((void **)&w->syms, &cap, n + 1, sizeof(Sym))) return -1;
    w->symcap = (int)cap;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        size_t l = utf8_len((const unsigned char *)w->buf + i, n - i, &cp);
        if (l == 0) l = 1;
        w->syms[w->nsym] = (Sym){(int)i, (int)l, w->nsym - 1, w->nsym + 1};
        w->nsym++;
        i += l;
    }
    if (w->nsym == 0) return 0;
    w->syms[w->nsym - 1].next = -1;
    /* Whole word is a token: common fast path. */
    int whole = t->ignore_merges ? map_get(&t->vocab, w->buf, n) : -1;
    if (whole >= 0) return tokvec_push(out, whole);
    /* The heap never holds more than 2 * nsym entries: nsym - 1 to start with, and each of the
     * at most nsym - 1 merges pops one entry and pushes at most two. */
    if (grow((void **)&w->heap, &w->heapcap, 2 * (size_t)w->nsym, sizeof(Cand))) return -1;
    w->nheap = 0;
    for (int i = 0; i != -1; i = w->syms[i].next)
        if (cand_push(t, w, i)) return -1;
    while (w->nheap > 0) {
        Cand c = cand_pop(w);
        Sym *a = &w->syms[c.left];
        if (a->len == 0 || a->next != c.right || a->len + w->syms[c.right].len != c.len) continue; /* stale */
        Sym *b = &w->syms[c.right];
        a->len += b->len;
        b->len = 0;
        a->next = b->next;
        if (b->next != -1) w->syms[b->next].prev = c.left;
        if (cand_push(t, w, a->prev) || cand_push(t, w, c.left)) return -1;
    }
    for (int i = 0; i != -1; i = w->syms[i].next) {
        const Sym *s = &w->syms[i];
        int id = map_get(&t->vocab, w->buf + s->start, (size_t)s->len);
        if (id >= 0) {
            if (tokvec_push(out, id)) return -1;
            continue;
        }
        /* Not in the vocabulary: byte tokens, as llama.cpp falls back. Byte-level BPE looks up
         * each byte of the symbol's (mapped) text as a one-byte token and drops what is not one;
         * gemma4 and SentencePiece use <0xXX> tokens (SentencePiece: <unk> when absent). */
        for (int j = 0; j < s->len; j++) {
            unsigned char b = (unsigned char)w->buf[s->start + j];
            int id2 = t->kind == TOK_BPE && !t->spm_bpe ? map_get(&t->vocab, (const char *)&b, 1) : t->byte_tok[b];
            if (id2 < 0 && t->kind == TOK_SPM) id2 = t->unk;
            if (id2 >= 0 && tokvec_push(out, id2)) return -1;
        }
    }
    return 0;
}

/* One pre-tokenized word: byte-level BPE maps its raw bytes to code points first; gemma4 merges
 * the UTF-8 itself, and a run of newlines that is a token stays whole (as llama.cpp does). */
static int bpe_bytes(const Tokenizer *t, Work *w, const char *s, size_t n, TokVec *out) {
    if (grow((void **)&w->buf, &w->cap, n * 2 + 1, 1)) return -1;
    if (t->spm_bpe) {
        size_t nl = 0;
        while (nl < n && s[nl] == '\n') nl++;
        int id = nl == n ? map_get(&t->vocab, s, n) : -1;
        if (id >= 0) return tokvec_push(out, id);
        memcpy(w->buf, s, n);
        return bpe_word(t, w, n, out);
    }
    size_t o = 0;
    for (size_t i = 0; i < n; i++) o += utf8_put(w->buf + o, t->byte_cp[(unsigned char)s[i]]);
    return bpe_word(t, w, o, out);
}

/* Applies regex r (and the ones after it) to s[0..n), emitting matches and the gaps between. */
static int pretokenize(const Tokenizer *t, Work *w, int r, const char *s, size_t n, pcre2_match_data *md, TokVec *out) {
    if (n == 0) return 0;
    /* The array bound is repeated so the compiler can see r never indexes past re[]. */
    if (r >= t->n_re || r >= (int)(sizeof t->re / sizeof t->re[0])) return bpe_bytes(t, w, s, n, out);
    size_t pos = 0, gap = 0;
    while (pos < n) {
        int rc = pcre2_match(t->re[r], (PCRE2_SPTR)s, n, pos, PCRE2_NO_UTF_CHECK, md, NULL);
        if (rc < 0) break;
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        size_t ms = ov[0], me = ov[1];
        if (me == ms) { /* empty match: step one character */
            uint32_t cp;
            size_t l = utf8_len((const unsigned char *)s + pos, n - pos, &cp);
            pos += l ? l : 1;
            continue;
        }
        if (ms > gap && pretokenize(t, w, r + 1, s + gap, ms - gap, md, out)) return -1;
        if (pretokenize(t, w, r + 1, s + ms, me - ms, md, out)) return -1;
        pos = gap = me;
    }
    if (gap < n && pretokenize(t, w, r + 1, s + gap, n - gap, md, out)) return -1;
    return 0;
}

static int spm_text(const Tokenizer *t, Work *w, const char *s, size_t n, bool prefix, TokVec *out) {
    /* Spaces become U+2581; an optional leading one. */
    if (grow((void **)&w->buf, &w->cap, n * 3 + 4, 1)) return -1;
    size_t o = 0;
    if (prefix) o += utf8_put(w->buf + o, 0x2581);
    for (size_t i = 0; i < n; i++) {
        if (s[i] == ' ')
            o += utf8_put(w->buf + o, 0x2581);
        else
            w->buf[o++] = s[i];
    }
    return bpe_word(t, w, o, out);
}

/* Copies text replacing invalid UTF-8 with U+FFFD. With in_mask (a flag per input byte), also
 * writes *out_mask: for each output byte, the flag of the input byte it came from. */
static char *sanitize(const char *s, size_t n, const unsigned char *in_mask, unsigned char **out_mask, size_t *outn) {
    char *o = malloc(n * 3 + 1);
    unsigned char *m = in_mask ? malloc(n * 3 + 1) : NULL;
    if (!o || (in_mask && !m)) {
        free(o);
        free(m);
        return NULL;
    }
    size_t k = 0;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        size_t l = utf8_len((const unsigned char *)s + i, n - i, &cp);
        if (l == 0) {
            if (m) memset(m + k, in_mask[i], 3);
            k += utf8_put(o + k, 0xFFFD);
            i++;
            continue;
        }
        memcpy(o + k, s + i, l);
        if (m) memcpy(m + k, in_mask + i, l);
        k += l;
        i += l;
    }
    *outn = k;
    *out_mask = m;
    return o;
}

/* A piece of the text: raw text s[off, off + len) when tok < 0, else a special token. */
typedef struct Frag {
    size_t off, len;
    int tok;
} Frag;

typedef struct FragVec {
    Frag *v;
    size_t n, cap;
} FragVec;

static int frag_push(FragVec *fv, size_t off, size_t len, int tok) {
    if (fv->n == fv->cap && grow((void **)&fv->v, &fv->cap, fv->n + 1, sizeof(Frag))) return -1;
    fv->v[fv->n++] = (Frag){off, len, tok};
    return 0;
}

/* Splits s[0..n) at special-token text as llama.cpp does (tokenizer_st_partition): one special
 * token at a time, longest first, every occurrence in the raw pieces left so far, so an
 * overlap goes to the longer token rather than to the leftmost. A control or unknown token
 * counts only where special parsing is on for all of its bytes (plain: a flag per byte, 1 = off,
 * or NULL; all_plain: off throughout); user-defined tokens always count. The result is in *out
 * (its array reused); 0, or -1 out of memory. */
static int partition(const Tokenizer *t, const char *s, size_t n, const unsigned char *plain, bool all_plain,
                     FragVec *out) {
    FragVec cur = {0}, next = {0};
    int rc = -1;
    out->n = 0;
    if (n == 0) return 0;
    bool seen[256] = {false}; /* bytes in the text: a token whose first byte is absent cannot match */
    for (size_t i = 0; i < n; i++) seen[(unsigned char)s[i]] = true;
    if (frag_push(&cur, 0, n, -1)) goto done;
    for (int k = 0; k < t->n_special; k++) {
        int id = t->special[k];
        const GgufStr *st = &t->text[id];
        bool ctl = t->type[id] != TOK_USER_DEFINED;
        if (!seen[(unsigned char)st->ptr[0]] || (ctl && all_plain)) continue;
        unsigned strip = t->strip ? t->strip[id] : 0;
        next.n = 0;
        for (size_t f = 0; f < cur.n; f++) {
            Frag fr = cur.v[f];
            size_t base = fr.off, end = fr.off + fr.len, pos = base;
            while (fr.tok < 0 && end - pos >= st->len) {
                const char *m = memmem(s + pos, end - pos, st->ptr, st->len);
                if (!m) break;
                size_t mo = (size_t)(m - s);
                if (ctl && plain && memchr(plain + mo, 1, st->len)) { /* spelled inside plain text */
                    pos = mo + 1;
                    continue;
                }
                size_t left = mo;
                if (strip & STRIP_LEFT)
                    while (left > base && isspace((unsigned char)s[left - 1])) left--;
                if ((left > base && frag_push(&next, base, left - base, -1)) || frag_push(&next, 0, 0, id)) goto done;
                base = mo + st->len;
                if (strip & STRIP_RIGHT)
                    while (base < end && isspace((unsigned char)s[base])) base++;
                pos = base;
            }
            if (fr.tok >= 0 ? frag_push(&next, fr.off, fr.len, fr.tok) : end > base && frag_push(&next, base, end - base, -1))
                goto done;
        }
        FragVec tmp = cur;
        cur = next;
        next = tmp;
    }
    free(out->v);
    *out = cur;
    cur.v = NULL;
    rc = 0;
done:
    free(cur.v);
    free(next.v);
    return rc;
}

static int encode(const Tokenizer *t, const char *text, size_t len, const TokSpan *spans, int n_spans, bool all_plain,
                  bool add_bos, TokVec *out, char *err, size_t errlen) {
    unsigned char *in_mask = NULL, *plain = NULL;
    if (n_spans > 0 && !all_plain) {
        in_mask = calloc(len ? len : 1, 1);
        if (!in_mask) return errf(err, errlen, "tokenizer: out of memory");
        for (int k = 0; k < n_spans; k++)
            if (spans[k].off < len) {
                size_t l = spans[k].len < len - spans[k].off ? spans[k].len : len - spans[k].off;
                memset(in_mask + spans[k].off, 1, l);
            }
    }
    size_t n;
    char *s = sanitize(text, len, in_mask, &plain, &n);
    free(in_mask);
    pcre2_match_data *md = t->n_re ? pcre2_match_data_create(4, NULL) : NULL;
    Work w = {0};
    FragVec fv = {0};
    char *esc = NULL;
    size_t esccap = 0;
    int rc = 0;
    if (!s || (t->n_re && !md) || partition(t, s, n, plain, all_plain, &fv)) goto oom;
    if (add_bos && t->add_bos && t->bos >= 0 && tokvec_push(out, t->bos)) goto oom;
    bool prev_special = true; /* SPM: a space prefix at the start and after special tokens */
    for (size_t f = 0; f < fv.n; f++) {
        const Frag *fr = &fv.v[f];
        if (fr->tok >= 0) {
            if (tokvec_push(out, fr->tok)) goto oom;
            prev_special = true;
            continue;
        }
        const char *p = s + fr->off;
        size_t pn = fr->len;
        if (t->spm_bpe) { /* gemma4: spaces become U+2581 before splitting */
            if (grow((void **)&esc, &esccap, pn * 3 + 1, 1)) goto oom;
            size_t o = 0;
            for (size_t i = 0; i < pn; i++) {
                if (p[i] == ' ') o += utf8_put(esc + o, 0x2581);
                else esc[o++] = p[i];
            }
            p = esc;
            pn = o;
        }
        if (t->kind == TOK_BPE ? pretokenize(t, &w, 0, p, pn, md, out)
                               : spm_text(t, &w, p, pn, prev_special && t->add_space_prefix, out))
            goto oom;
        prev_special = false;
    }
    goto done;
oom:
    rc = errf(err, errlen, "tokenizer: out of memory");
done:
    free(s);
    free(plain);
    free(esc);
    free(fv.v);
    free(w.buf);
    free(w.syms);
    free(w.heap);
    free(w.key);
    if (md) pcre2_match_data_free(md);
    return rc;
}

int tok_encode(const Tokenizer *t, const char *text, size_t len, bool parse_special, bool add_bos, TokVec *out,
               char *err, size_t errlen) {
    return encode(t, text, len, NULL, 0, !parse_special, add_bos, out, err, errlen);
}

int tok_encode_spans(const Tokenizer *t, const char *text, size_t len, const TokSpan *plain, int n_plain, bool add_bos,
                     TokVec *out, char *err, size_t errlen) {
    return encode(t, text, len, plain, n_plain, false, add_bos, out, err, errlen);
}

size_t tok_piece(const Tokenizer *t, int id, char *buf, size_t cap) {
    if (id < 0 || id >= t->n_vocab) return 0;
    int ty = t->type[id];
    if (ty == TOK_CONTROL || ty == TOK_UNUSED || ty == TOK_UNKNOWN) return 0;
    const GgufStr *st = &t->text[id];
    size_t o = 0;
    if (ty == TOK_USER_DEFINED) {
        for (size_t i = 0; i < st->len; i++, o++)
            if (o < cap) buf[o] = st->ptr[i];
        return o;
    }
    if (t->kind == TOK_SPM || t->spm_bpe) {
        if (ty == TOK_BYTE && st->len == 6) {
            unsigned v;
            if (sscanf(st->ptr + 3, "%2X", &v) == 1) {
                if (cap) buf[0] = (char)v;
                return 1;
            }
        }
        for (size_t i = 0; i < st->len;) {
            if (i + 3 <= st->len && memcmp(st->ptr + i, "\xE2\x96\x81", 3) == 0) {
                if (o < cap) buf[o] = ' ';
                o++;
                i += 3;
            } else {
                if (o < cap) buf[o] = st->ptr[i];
                o++;
                i++;
            }
        }
        return o;
    }
    for (size_t i = 0; i < st->len;) {
        uint32_t cp;
        size_t l = utf8_len((const unsigned char *)st->ptr + i, st->len - i, &cp);
        if (l == 0) { l = 1; cp = 0xFFFD; }
        if (cp < 512 && t->cp_byte[cp] >= 0) {
            if (o < cap) buf[o] = (char)t->cp_byte[cp];
            o++;
        } else {
            for (size_t j = 0; j < l; j++, o++)
                if (o < cap) buf[o] = st->ptr[i + j];
        }
        i += l;
    }
    return o;
}
