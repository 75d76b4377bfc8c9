/* tokenizer.c: byte-level BPE (GPT-2 style) and SentencePiece-style BPE from GGUF metadata.
 * The vocabulary strings stay in the mapped GGUF file; lookups go through open-addressing
 * hash tables built at load. Must not touch model weights. */
#include "engine/decode/tokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
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

struct Tokenizer {
    TokKind kind;
    int n_vocab;
    GgufStr *text;
    int *type;
    float *score;
    StrMap vocab;
    StrMap merges;       /* "left right" -> rank (BPE) */
    pcre2_code *re[3];
    int n_re;
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

/* ---- pre-tokenizer regexes (by tokenizer.ggml.pre) ---- */

#define RE_GPT2 "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)"
#define RE_LLAMA3                                                                                     \
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| " \
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
#define RE_QWEN2                                                                                      \
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| "    \
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"

static int pre_regexes(const char *pre, size_t n, const char **out) {
#define IS(s) (n == strlen(s) && memcmp(pre, s, n) == 0)
    if (n == 0 || IS("default") || IS("gpt2") || IS("gpt-2") || IS("olmo") || IS("jais")) {
        out[0] = RE_GPT2;
        return 1;
    }
    if (IS("smollm") || IS("starcoder") || IS("refact") || IS("command-r") || IS("codeshell") || IS("exaone") ||
        IS("minerva")) {
        out[0] = "\\p{N}";
        out[1] = RE_GPT2;
        return 2;
    }
    if (IS("llama3") || IS("llama-v3") || IS("llama-bpe") || IS("falcon3") || IS("pixtral")) {
        out[0] = RE_LLAMA3;
        return 1;
    }
    if (IS("qwen2") || IS("deepseek-r1-qwen")) {
        out[0] = RE_QWEN2;
        return 1;
    }
    return 0;
#undef IS
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
    if (model.len == 4 && memcmp(model.ptr, "gpt2", 4) == 0)
        t->kind = TOK_BPE;
    else if (model.len == 5 && memcmp(model.ptr, "llama", 5) == 0)
        t->kind = TOK_SPM;
    else {
        errf(err, errlen, "tokenizer: model '%.*s' is not supported (gpt2, llama are)", (int)(model.len > 64 ? 64 : model.len),
             model.ptr);
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
    t->bos = get_id(f, "tokenizer.ggml.bos_token_id", t->n_vocab, -1);
    t->eos = get_id(f, "tokenizer.ggml.eos_token_id", t->n_vocab, -1);
    t->eot = get_id(f, "tokenizer.ggml.eot_token_id", t->n_vocab, -1);
    t->unk = get_id(f, "tokenizer.ggml.unknown_token_id", t->n_vocab, -1);
    t->add_bos = t->kind == TOK_SPM;
    t->add_space_prefix = t->kind == TOK_SPM;
    gguf_get_bool(f, "tokenizer.ggml.add_bos_token", &t->add_bos);
    gguf_get_bool(f, "tokenizer.ggml.add_space_prefix", &t->add_space_prefix);
    if (t->eos >= 0) t->eog[t->eos] = true;
    if (t->eot >= 0) t->eog[t->eot] = true;
    static const char *eog_names[] = {"<|im_end|>", "<|eot_id|>", "<|end_of_text|>", "<|endoftext|>", "<|eom_id|>",
                                      "<end_of_turn>", "<|end|>", "</s>"};
    for (size_t i = 0; i < sizeof eog_names / sizeof eog_names[0]; i++) {
        int id = map_get(&t->vocab, eog_names[i], strlen(eog_names[i]));
        if (id >= 0 && t->type[id] == TOK_CONTROL) t->eog[id] = true;
    }
    for (int i = 0; i < t->n_vocab; i++)
        /* As llama.cpp: control, user-defined and unknown tokens are matched in prompt text. */
        if ((t->type[i] == TOK_CONTROL || t->type[i] == TOK_USER_DEFINED || t->type[i] == TOK_UNKNOWN) && t->text[i].len > 0)
            t->special[t->n_special++] = i;
    qsort_r(t->special, (size_t)t->n_special, sizeof *t->special, cmp_len_desc, t);
    for (int b = 0; b < 256; b++) t->byte_tok[b] = -1;

    if (t->kind == TOK_BPE) {
        init_byte_map(t);
        for (int b = 0; b < 256; b++) {
            char buf[4];
            size_t n = utf8_put(buf, t->byte_cp[b]);
            t->byte_tok[b] = map_get(&t->vocab, buf, n);
        }
        const GgufKV *mg = gguf_find(f, "tokenizer.ggml.merges");
        if (!mg || mg->type != GGUF_ARRAY || mg->arr_type != GGUF_STRING) {
            errf(err, errlen, "tokenizer: byte-level BPE needs tokenizer.ggml.merges");
            goto fail;
        }
        if (map_init(&t->merges, (uint32_t)mg->arr_n)) {
            errf(err, errlen, "tokenizer: out of memory");
            goto fail;
        }
        for (uint64_t i = 0; i < mg->arr_n; i++) map_put(&t->merges, mg->arr_strs[i].ptr, mg->arr_strs[i].len, (int)i);
        GgufStr pre = {"", 0};
        gguf_get_str(f, "tokenizer.ggml.pre", &pre);
        const char *res[3];
        t->n_re = pre_regexes(pre.ptr, pre.len, res);
        t->ignore_merges = t->n_re == 1 && strcmp(res[0], RE_LLAMA3) == 0;
        if (t->n_re == 0) {
            errf(err, errlen, "tokenizer: pre-tokenizer '%.*s' is not supported", (int)(pre.len > 64 ? 64 : pre.len), pre.ptr);
            goto fail;
        }
        for (int i = 0; i < t->n_re; i++) {
            int ec;
            PCRE2_SIZE eo;
            t->re[i] = pcre2_compile((PCRE2_SPTR)res[i], PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP, &ec, &eo, NULL);
            if (!t->re[i]) {
                t->n_re = i;
                errf(err, errlen, "tokenizer: cannot compile pre-tokenizer regex %d", i);
                goto fail;
            }
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
        /* Not in the vocabulary: fall back to byte tokens. */
        for (int j = 0; j < s->len;) {
            int b;
            if (t->kind == TOK_BPE) {
                uint32_t cp;
                size_t l = utf8_len((const unsigned char *)w->buf + s->start + j, (size_t)(s->len - j), &cp);
                if (l == 0) { l = 1; cp = 0xFFFD; }
                b = cp < 512 && t->cp_byte[cp] >= 0 ? t->cp_byte[cp] : -1;
                j += (int)l;
            } else {
                b = (unsigned char)w->buf[s->start + j];
                j++;
            }
            int id2 = b >= 0 ? t->byte_tok[b] : -1;
            if (id2 < 0) id2 = t->unk;
            if (id2 >= 0 && tokvec_push(out, id2)) return -1;
        }
    }
    return 0;
}

/* Byte-level: map the raw bytes of a pre-tokenized word to code points, then BPE. */
static int bpe_bytes(const Tokenizer *t, Work *w, const char *s, size_t n, TokVec *out) {
    if (grow((void **)&w->buf, &w->cap, n * 2 + 1, 1)) return -1;
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

/* The special token whose text starts at s[i] (longest first), or -1. A control or unknown token
 * counts only when special parsing is on for all of its bytes (plain: a flag per byte, 1 = off,
 * or NULL; all_plain: off throughout); user-defined tokens always count. */
static int match_special(const Tokenizer *t, const char *s, size_t n, size_t i, const unsigned char *plain,
                         bool all_plain) {
    for (int k = 0; k < t->n_special; k++) {
        int id = t->special[k];
        const GgufStr *st = &t->text[id];
        if (st->len > n - i || st->ptr[0] != s[i] || memcmp(st->ptr, s + i, st->len) != 0) continue;
        if (t->type[id] != TOK_USER_DEFINED && (all_plain || (plain && memchr(plain + i, 1, st->len)))) continue;
        return id;
    }
    return -1;
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
    int rc = 0;
    if (!s || (t->n_re && !md)) {
        rc = errf(err, errlen, "tokenizer: out of memory");
        goto done;
    }
    if (add_bos && t->add_bos && t->bos >= 0 && tokvec_push(out, t->bos)) {
        rc = errf(err, errlen, "tokenizer: out of memory");
        goto done;
    }
    size_t seg = 0;
    bool prev_special = true; /* SPM: a space prefix at the start and after special tokens */
    for (size_t i = 0; i <= n;) {
        int sp = i < n ? match_special(t, s, n, i, plain, all_plain) : -1;
        if (sp < 0 && i < n) {
            i++;
            continue;
        }
        if (i > seg) {
            int r = t->kind == TOK_BPE ? pretokenize(t, &w, 0, s + seg, i - seg, md, out)
                                       : spm_text(t, &w, s + seg, i - seg, prev_special && t->add_space_prefix, out);
            if (r) {
                rc = errf(err, errlen, "tokenizer: out of memory");
                goto done;
            }
            prev_special = false;
        }
        if (sp < 0) break;
        if (tokvec_push(out, sp)) {
            rc = errf(err, errlen, "tokenizer: out of memory");
            goto done;
        }
        i += t->text[sp].len;
        seg = i;
        prev_special = true;
    }
done:
    free(s);
    free(plain);
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
    if (t->kind == TOK_SPM) {
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
