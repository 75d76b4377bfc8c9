/* test_decode_tokenizer_growth.c: a prompt that is one long word (no spaces) tokenises in
 * near-linear time, and the fast merge order gives exactly the ids of the plain rescan
 * (repeatedly merge the lowest-rank adjacent pair, leftmost on ties). Both merge kinds: byte-level
 * BPE by merge rank on the real SmolLM2 file (failing loudly when models/ is not set up), and
 * SentencePiece by score on a vocabulary built here in memory, with tied scores and byte fallback.
 * The timing check measures CPU time, so a busy machine slows both sizes alike. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "engine/decode/gguf.h"
#include "engine/decode/tokenizer.h"

/* 8x the input may take at most this many times as long: the heap measures ~10x (under ASan
 * too), the old rescan per merge 78x (BPE) and 103x (SentencePiece). */
#define GROWTH_SMALL 20000
#define GROWTH_FACTOR 8
#define GROWTH_MAX_RATIO 20.0
#define NAIVE_LETTERS 3000

static uint64_t rng_state;

static uint32_t rng_next(void) {
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(rng_state >> 33);
}

static double cpu_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static char *random_letters(size_t n, uint64_t seed) {
    char *s = malloc(n);
    assert_non_null(s);
    rng_state = seed;
    for (size_t i = 0; i < n; i++) s[i] = (char)('a' + rng_next() % 26);
    return s;
}

static TokVec encode(const Tokenizer *t, const char *s, size_t n) {
    TokVec tv = {0};
    char err[256];
    if (tok_encode(t, s, n, false, false, &tv, err, sizeof err)) fail_msg("tok_encode: %s", err);
    return tv;
}

/* Fastest of three runs, so a stray interruption does not count. */
static double encode_seconds(const Tokenizer *t, const char *s, size_t n) {
    double best = 1e30;
    for (int rep = 0; rep < 3; rep++) {
        double t0 = cpu_seconds();
        TokVec tv = encode(t, s, n);
        double dt = cpu_seconds() - t0;
        assert_true(tv.n > 0);
        tokvec_free(&tv);
        if (dt < best) best = dt;
    }
    return best;
}

static void assert_near_linear(const Tokenizer *t, const char *what) {
    size_t small = GROWTH_SMALL, large = (size_t)GROWTH_SMALL * GROWTH_FACTOR;
    char *s = random_letters(large, 42);
    double ts = encode_seconds(t, s, small);
    double tl = encode_seconds(t, s, large);
    free(s);
    double ratio = tl / (ts > 1e-6 ? ts : 1e-6);
    print_message("%s: %zu letters %.4f s, %zu letters %.4f s, ratio %.1f (limit %.0f)\n", what, small, ts, large,
                  tl, ratio, GROWTH_MAX_RATIO);
    if (ratio >= GROWTH_MAX_RATIO)
        fail_msg("%s: %dx the letters took %.1fx the time (limit %.0fx; quadratic would be %dx)", what, GROWTH_FACTOR,
                 ratio, GROWTH_MAX_RATIO, GROWTH_FACTOR * GROWTH_FACTOR);
}

/* ---- the plain rescan, as the reference ---- */

typedef struct Piece {
    int start, len;
} Piece;

/* Rank of joining text[a] and the next piece; 1 and *rank, or 0 when they do not merge. */
typedef int (*RankFn)(void *ctx, const char *text, Piece a, Piece b, double *rank);

static size_t utf8_seq_len(unsigned char c) { return c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4; }

/* Splits text into code points and merges until no pair ranks; returns the piece count. */
static int naive_merge(const char *text, size_t n, RankFn rank_fn, void *ctx, Piece *p) {
    int np = 0;
    for (size_t i = 0; i < n; i += utf8_seq_len((unsigned char)text[i])) p[np++] = (Piece){(int)i, (int)utf8_seq_len((unsigned char)text[i])};
    for (;;) {
        int best = -1;
        double best_rank = 0;
        for (int i = 0; i + 1 < np; i++) {
            double r;
            if (rank_fn(ctx, text, p[i], p[i + 1], &r) && (best < 0 || r < best_rank)) {
                best = i;
                best_rank = r;
            }
        }
        if (best < 0) return np;
        p[best].len += p[best + 1].len;
        memmove(&p[best + 1], &p[best + 2], (size_t)(np - best - 2) * sizeof *p);
        np--;
    }
}

/* ---- byte-level BPE on SmolLM2 ---- */

typedef struct Bpe {
    const GgufStr *merges; /* in rank order, as in the file */
    int *rank;             /* ranks sorted by their merge text, for binary search */
    int n;
} Bpe;

static int cmp_str(const char *a, size_t la, const char *b, size_t lb) {
    int c = memcmp(a, b, la < lb ? la : lb);
    return c ? c : (la > lb) - (la < lb);
}

static const GgufStr *sort_base;

static int cmp_merge_idx(const void *x, const void *y) {
    int i = *(const int *)x, j = *(const int *)y;
    int c = cmp_str(sort_base[i].ptr, sort_base[i].len, sort_base[j].ptr, sort_base[j].len);
    return c ? c : (i > j) - (i < j); /* equal texts: lowest rank first, as the tokenizer keeps */
}

static int bpe_rank(void *ctx, const char *text, Piece a, Piece b, double *rank) {
    const Bpe *bpe = ctx;
    char key[512];
    if ((size_t)(a.len + b.len + 1) > sizeof key) return 0;
    memcpy(key, text + a.start, (size_t)a.len);
    key[a.len] = ' ';
    memcpy(key + a.len + 1, text + b.start, (size_t)b.len);
    size_t kl = (size_t)(a.len + b.len + 1);
    int lo = 0, hi = bpe->n - 1; /* the first entry with this text, so the lowest rank */
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        const GgufStr *m = &bpe->merges[bpe->rank[mid]];
        int c = cmp_str(m->ptr, m->len, key, kl);
        if (c < 0) lo = mid + 1;
        else hi = mid - 1;
    }
    if (lo >= bpe->n) return 0;
    const GgufStr *m = &bpe->merges[bpe->rank[lo]];
    if (cmp_str(m->ptr, m->len, key, kl) != 0) return 0;
    *rank = bpe->rank[lo];
    return 1;
}

/* GPT-2's byte -> code point map, UTF-8 encoded: printable Latin-1 stays, the rest move to 256+. */
static size_t byte_char(unsigned b, char *o) {
    unsigned cp = b, extra = 0;
    if (!((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255))) {
        for (unsigned k = 0; k < b; k++)
            if (!((k >= 33 && k <= 126) || (k >= 161 && k <= 172) || (k >= 174 && k <= 255))) extra++;
        cp = 256 + extra;
    }
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    o[0] = (char)(0xC0 | (cp >> 6));
    o[1] = (char)(0x80 | (cp & 0x3F));
    return 2;
}

static char model_path[1024];

static int setup(void **state) {
    (void)state;
    const char *src = getenv("WEAVER_SOURCE_DIR");
    snprintf(model_path, sizeof model_path, "%s/models/SmolLM2-135M-Instruct.Q4_1.gguf", src ? src : ".");
    return 0;
}

static Tokenizer *open_smollm(GgufFile **f) {
    if (access(model_path, R_OK) != 0) fail_msg("%s is not installed: run ops/setup.sh", model_path);
    char err[256];
    *f = gguf_open(model_path, err, sizeof err);
    if (!*f) fail_msg("%s", err);
    Tokenizer *t = tok_load(*f, err, sizeof err);
    if (!t) fail_msg("%s", err);
    return t;
}

static void bpe_one_long_word_tokenises_in_near_linear_time(void **state) {
    (void)state;
    GgufFile *f;
    Tokenizer *t = open_smollm(&f);
    assert_near_linear(t, "byte-level BPE (SmolLM2)");
    tok_free(t);
    gguf_close(f);
}

/* Compares tok_encode on one pre-token word (letters only) with the rescan over its mapped bytes. */
static void check_bpe_word(const Tokenizer *t, Bpe *bpe, const char *word, size_t n) {
    char *mapped = malloc(n * 2 + 1);
    Piece *p = malloc(n * sizeof *p);
    assert_non_null(mapped);
    assert_non_null(p);
    size_t m = 0;
    for (size_t i = 0; i < n; i++) m += byte_char((unsigned char)word[i], mapped + m);
    int np = naive_merge(mapped, m, bpe_rank, bpe, p);
    TokVec got = encode(t, word, n);
    assert_int_equal(got.n, np);
    for (int i = 0; i < np; i++) {
        int id = tok_find(t, mapped + p[i].start, (size_t)p[i].len);
        assert_true(id >= 0);
        if (got.v[i] != id) fail_msg("token %d of %d: got %d, the rescan gives %d", i, np, got.v[i], id);
    }
    tokvec_free(&got);
    free(p);
    free(mapped);
}

static void bpe_merges_match_the_plain_rescan(void **state) {
    (void)state;
    GgufFile *f;
    Tokenizer *t = open_smollm(&f);
    const GgufKV *mg = gguf_find(f, "tokenizer.ggml.merges");
    assert_non_null(mg);
    Bpe bpe = {mg->arr_strs, malloc(mg->arr_n * sizeof(int)), (int)mg->arr_n};
    assert_non_null(bpe.rank);
    for (int i = 0; i < bpe.n; i++) bpe.rank[i] = i;
    sort_base = bpe.merges;
    qsort(bpe.rank, (size_t)bpe.n, sizeof(int), cmp_merge_idx);

    /* Mixed case and two-byte letters (their bytes map outside ASCII), all one \p{L}+ word. */
    static const char *alphabet[] = {"a", "b", "c", "d", "e", "f", "g", "h", "i", "k", "l", "m", "n", "o", "p",
                                     "r", "s", "t", "u", "w", "y", "T", "H", "Q", "\xC3\xA9", "\xC3\x9F",
                                     "\xC3\xB1", "\xC3\xBC", "\xC3\xB8"};
    char *word = malloc(NAIVE_LETTERS * 2);
    assert_non_null(word);
    rng_state = 7;
    size_t n = 0;
    for (int i = 0; i < NAIVE_LETTERS; i++) {
        const char *l = alphabet[rng_next() % (sizeof alphabet / sizeof alphabet[0])];
        memcpy(word + n, l, strlen(l));
        n += strlen(l);
    }
    check_bpe_word(t, &bpe, word, n);
    memset(word, 'a', 1001); /* every pair ties: order decided by position alone */
    check_bpe_word(t, &bpe, word, 1001);
    free(word);
    free(bpe.rank);
    tok_free(t);
    gguf_close(f);
}

/* ---- SentencePiece on a vocabulary built here ---- */

typedef struct Buf {
    uint8_t *p;
    size_t n, cap;
} Buf;

static void put(Buf *b, const void *data, size_t n) {
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2;
        b->p = realloc(b->p, b->cap);
        assert_non_null(b->p);
    }
    memcpy(b->p + b->n, data, n);
    b->n += n;
}
static void put_u32(Buf *b, uint32_t v) { put(b, &v, 4); }
static void put_u64(Buf *b, uint64_t v) { put(b, &v, 8); }
static void put_str(Buf *b, const char *s) {
    put_u64(b, strlen(s));
    put(b, s, strlen(s));
}

#define SPM_MAX_TOKENS 8192
#define WB "\xE2\x96\x81" /* U+2581, SentencePiece's space */

/* One of 41 score levels, so most merges tie; the top level is -0 or +0, which must tie too. */
static float tied_score(void) {
    uint32_t r = rng_next() % 41;
    return r == 40 ? 0.0f : -(float)r;
}

/* <unk> <s> </s>, <0xXX> bytes, "▁" and a..z (no capitals: they fall back to bytes), every
 * pair of letters, a quarter of the triples and a few runs of 'a'. */
static Buf spm_vocab_gguf(void) {
    static char texts[SPM_MAX_TOKENS][16];
    static int32_t types[SPM_MAX_TOKENS];
    static float scores[SPM_MAX_TOKENS];
    int n = 0;
#define ADD(ty, sc, ...)                                                                                   \
    do {                                                                                                  \
        snprintf(texts[n], sizeof texts[n], __VA_ARGS__);                                                 \
        types[n] = (ty);                                                                                  \
        scores[n] = (sc);                                                                                 \
        n++;                                                                                              \
    } while (0)
    ADD(TOK_UNKNOWN, 0.0f, "<unk>");
    ADD(TOK_CONTROL, 0.0f, "<s>");
    ADD(TOK_CONTROL, 0.0f, "</s>");
    for (int b = 0; b < 256; b++) ADD(TOK_BYTE, 0.0f, "<0x%02X>", b);
    ADD(TOK_NORMAL, -1000.0f, WB);
    for (int c = 0; c < 26; c++) ADD(TOK_NORMAL, -1000.0f, "%c", 'a' + c);
    rng_state = 99;
    for (int c = 0; c < 26; c++) ADD(TOK_NORMAL, 0.0f, WB "%c", 'a' + c);
    for (int x = 0; x < 26; x++)
        for (int y = 0; y < 26; y++) ADD(TOK_NORMAL, tied_score(), "%c%c", 'a' + x, 'a' + y);
    for (int x = 0; x < 26; x++)
        for (int y = 0; y < 26; y++)
            for (int z = 0; z < 26; z++)
                if (rng_next() % 4 == 0 && !(x == 0 && y == 0 && z == 0))
                    ADD(TOK_NORMAL, tied_score(), "%c%c%c", 'a' + x, 'a' + y, 'a' + z);
    ADD(TOK_NORMAL, -3.0f, "aaa");
    ADD(TOK_NORMAL, -3.0f, "aaaa");
    ADD(TOK_NORMAL, -5.0f, "aaaaaaaa");
#undef ADD
    assert_true(n <= SPM_MAX_TOKENS);
    Buf b = {0};
    put(&b, "GGUF", 4);
    put_u32(&b, 3);
    put_u64(&b, 0); /* tensors */
    put_u64(&b, 6); /* metadata */
    put_str(&b, "tokenizer.ggml.model");
    put_u32(&b, GGUF_STRING);
    put_str(&b, "llama");
    put_str(&b, "tokenizer.ggml.tokens");
    put_u32(&b, GGUF_ARRAY);
    put_u32(&b, GGUF_STRING);
    put_u64(&b, (uint64_t)n);
    for (int i = 0; i < n; i++) put_str(&b, texts[i]);
    put_str(&b, "tokenizer.ggml.token_type");
    put_u32(&b, GGUF_ARRAY);
    put_u32(&b, GGUF_I32);
    put_u64(&b, (uint64_t)n);
    put(&b, types, (size_t)n * sizeof types[0]);
    put_str(&b, "tokenizer.ggml.scores");
    put_u32(&b, GGUF_ARRAY);
    put_u32(&b, GGUF_F32);
    put_u64(&b, (uint64_t)n);
    put(&b, scores, (size_t)n * sizeof scores[0]);
    put_str(&b, "tokenizer.ggml.unknown_token_id");
    put_u32(&b, GGUF_U32);
    put_u32(&b, 0);
    put_str(&b, "tokenizer.ggml.bos_token_id");
    put_u32(&b, GGUF_U32);
    put_u32(&b, 1);
    return b;
}

typedef struct Spm {
    const Tokenizer *t;
    const GgufKV *scores;
} Spm;

static int spm_rank(void *ctx, const char *text, Piece a, Piece b, double *rank) {
    const Spm *spm = ctx;
    int id = tok_find(spm->t, text + a.start, (size_t)(a.len + b.len));
    if (id < 0) return 0;
    *rank = -gguf_arr_float(spm->scores, (uint64_t)id);
    return 1;
}

static Tokenizer *open_spm(Buf *b, GgufFile **f) {
    *b = spm_vocab_gguf();
    char err[256];
    *f = gguf_open_memory(b->p, b->n, err, sizeof err);
    if (!*f) fail_msg("%s", err);
    Tokenizer *t = tok_load(*f, err, sizeof err);
    if (!t) fail_msg("%s", err);
    return t;
}

static void spm_one_long_word_tokenises_in_near_linear_time(void **state) {
    (void)state;
    Buf b;
    GgufFile *f;
    Tokenizer *t = open_spm(&b, &f);
    assert_near_linear(t, "SentencePiece");
    tok_free(t);
    gguf_close(f);
    free(b.p);
}

/* tok_encode puts "▁" before the text (add_space_prefix); the rescan gets the same text. */
static void check_spm_word(const Tokenizer *t, Spm *spm, const char *word, size_t n) {
    char *text = malloc(n + 3);
    Piece *p = malloc((n + 1) * sizeof *p);
    assert_non_null(text);
    assert_non_null(p);
    memcpy(text, WB, 3);
    memcpy(text + 3, word, n);
    int np = naive_merge(text, n + 3, spm_rank, spm, p);
    TokVec want = {0};
    for (int i = 0; i < np; i++) {
        int id = tok_find(t, text + p[i].start, (size_t)p[i].len);
        for (int j = 0; id < 0 && j < p[i].len; j++) { /* not in the vocabulary: byte tokens */
            char hex[8];
            snprintf(hex, sizeof hex, "<0x%02X>", (unsigned char)text[p[i].start + j]);
            assert_int_equal(tokvec_push(&want, tok_find(t, hex, 6)), 0);
        }
        if (id >= 0) assert_int_equal(tokvec_push(&want, id), 0);
    }
    TokVec got = encode(t, word, n);
    assert_int_equal(got.n, want.n);
    for (int i = 0; i < want.n; i++)
        if (got.v[i] != want.v[i]) fail_msg("token %d of %d: got %d, the rescan gives %d", i, want.n, got.v[i], want.v[i]);
    tokvec_free(&got);
    tokvec_free(&want);
    free(p);
    free(text);
}

static void spm_merges_match_the_plain_rescan(void **state) {
    (void)state;
    Buf b;
    GgufFile *f;
    Tokenizer *t = open_spm(&b, &f);
    Spm spm = {t, gguf_find(f, "tokenizer.ggml.scores")};
    assert_non_null(spm.scores);
    char *word = malloc(NAIVE_LETTERS);
    assert_non_null(word);
    rng_state = 11;
    for (int i = 0; i < NAIVE_LETTERS; i++) /* some capitals, which only bytes can spell */
        word[i] = (char)(rng_next() % 16 == 0 ? 'A' + rng_next() % 26 : 'a' + rng_next() % 26);
    check_spm_word(t, &spm, word, NAIVE_LETTERS);
    memset(word, 'a', 1001);
    check_spm_word(t, &spm, word, 1001);
    free(word);
    tok_free(t);
    gguf_close(f);
    free(b.p);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(bpe_merges_match_the_plain_rescan),
        cmocka_unit_test(spm_merges_match_the_plain_rescan),
        cmocka_unit_test(bpe_one_long_word_tokenises_in_near_linear_time),
        cmocka_unit_test(spm_one_long_word_tokenises_in_near_linear_time),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
