/* test_embed_native.c: the native CPU embedder as the engine sees it through EmbedderOps:
 * identity (model id, snapshot hash, dim, pooling, normalize, max length), WordPiece cases a
 * user would notice, token counting, truncation vs EMBED_ERR_TOO_LONG, and that results do not
 * depend on how texts are batched (order, token budget, window size, lanes): the same bytes.
 * Skips without the model. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/embed/safetensors.h"
#include "engine/embed/snapshot.h"
#include "engine/embed/snapshot_hash.h"
#include "engine/embed/wordpiece.h"
#include "engine/embedder_impl.h"

#define SNAP "models/all-MiniLM-L6-v2"

static int have_model(void) { return access(SNAP "/model.safetensors", R_OK) == 0; }

static Embedder *open_native_threads(int token_budget, int max_texts, int threads);
static Embedder *open_native(int token_budget, int max_texts) { return open_native_threads(token_budget, max_texts, 1); }

static Embedder *open_native_threads(int token_budget, int max_texts, int threads)
{
    Embedder *e = calloc(1, sizeof *e);
    e->ops = &embedder_native_ops;
    EmbedderConfig ec = {.backend = "native", .snapshot = SNAP, .device = "cpu", .model_id = "", .threads = threads};
    BatchConfig bc = {.token_budget = token_budget, .max_texts = max_texts};
    if (e->ops->open(e, &ec, &bc) != 0) {
        fprintf(stderr, "open: %s\n", e->errstr);
        free(e);
        return NULL;
    }
    return e;
}

static void close_native(Embedder *e)
{
    e->ops->close(e);
    free(e);
}

static void tokens_of(const WpTokenizer *tk, const char *text, const char *const *want)
{
    int32_t ids[64];
    int n = wp_encode(tk, text, strlen(text), ids, 64, NULL);
    int k = 0;
    for (; want[k]; k++) {
        assert_true(k < n);
        int32_t id = wp_token_id(tk, want[k]);
        if (id != ids[k]) fprintf(stderr, "'%s': token %d: want %s (%d) got %d\n", text, k, want[k], id, ids[k]);
        assert_int_equal(id, ids[k]);
    }
    assert_int_equal(n, k);
}

static void wordpiece_matches_bert_uncased_behaviour(void **state)
{
    (void)state;
    if (!have_model()) fail_msg("models/all-MiniLM-L6-v2 is not installed: run ops/setup.sh");
    char err[256];
    WpTokenizer *tk = wp_open(SNAP, false, err, sizeof err);
    assert_non_null(tk);
    tokens_of(tk, "unaffable", (const char *const[]){"[CLS]", "una", "##ffa", "##ble", "[SEP]", NULL});
    tokens_of(tk, "Héllo, WORLD!", (const char *const[]){"[CLS]", "hello", ",", "world", "!", "[SEP]", NULL});
    tokens_of(tk, "hi [MASK] x[SEP]", (const char *const[]){"[CLS]", "hi", "[MASK]", "x", "[SEP]", "[SEP]", NULL});
    tokens_of(tk, "a\xe4\xb8\xad\xe6\x96\x87" "b", /* a中文b: CJK split into characters */
              (const char *const[]){"[CLS]", "a", "\xe4\xb8\xad", "\xe6\x96\x87", "b", "[SEP]", NULL});
    tokens_of(tk, "zero\xe2\x80\x8bwidth", (const char *const[]){"[CLS]", "zero", "##wi", "##dt", "##h", "[SEP]", NULL});
    tokens_of(tk, "\xf0\x9f\x98\x80", (const char *const[]){"[CLS]", "[UNK]", "[SEP]", NULL}); /* emoji */
    tokens_of(tk, "bad \xff utf8", (const char *const[]){"[CLS]", "bad", "ut", "##f", "##8", "[SEP]", NULL});
    tokens_of(tk, "", (const char *const[]){"[CLS]", "[SEP]", NULL});
    char longword[202];
    memset(longword, 'a', 101);
    longword[101] = '\0';
    tokens_of(tk, longword, (const char *const[]){"[CLS]", "[UNK]", "[SEP]", NULL}); /* > 100 chars */
    /* truncation keeps the first max_len - 1 tokens and ends with [SEP]; total counts all */
    int32_t ids[5];
    int total = 0;
    assert_int_equal(wp_encode(tk, "one two three four five six", 27, ids, 5, &total), 5);
    assert_int_equal(total, 8);
    assert_int_equal(ids[4], wp_token_id(tk, "[SEP]"));
    assert_int_equal(ids[3], wp_token_id(tk, "three"));
    wp_close(tk);
}

static void snapshot_identity_is_read_from_the_files(void **state)
{
    (void)state;
    if (!have_model()) fail_msg("models/all-MiniLM-L6-v2 is not installed: run ops/setup.sh");
    Embedder *e = open_native(512, 16);
    assert_non_null(e);
    const EmbedderInfo *in = &e->info;
    assert_string_equal(in->model_id, "all-MiniLM-L6-v2");
    assert_int_equal(in->dim, 384);
    assert_int_equal(in->pooling, EMBED_POOL_MEAN);
    assert_true(in->normalize);
    assert_int_equal(in->max_seq_len, 256);
    assert_int_equal(strlen(in->snapshot_hash), 64);
    char h[65], err[256];
    assert_int_equal(snapshot_hash_cached(SNAP, h, err, sizeof err), 0);
    assert_string_equal(h, in->snapshot_hash); /* stable */
    close_native(e);
}

static void a_missing_or_inconsistent_snapshot_is_an_error_naming_the_file(void **state)
{
    (void)state;
    char dir[] = "/tmp/weaver-snap-XXXXXX";
    assert_non_null(mkdtemp(dir));
    Embedder e = {.ops = &embedder_native_ops};
    EmbedderConfig ec = {.backend = "native", .snapshot = dir, .device = "cpu", .model_id = ""};
    assert_int_not_equal(e.ops->open(&e, &ec, NULL), 0);
    assert_non_null(strstr(e.errstr, "config.json"));
    char path[256];
    snprintf(path, sizeof path, "%s/config.json", dir);
    FILE *f = fopen(path, "w");
    fputs("{\"model_type\": \"bert\", \"vocab_size\": 10, \"hidden_size\": 10, \"num_hidden_layers\": 1,"
          " \"num_attention_heads\": 3, \"intermediate_size\": 8}", f);
    fclose(f);
    assert_int_not_equal(e.ops->open(&e, &ec, NULL), 0);
    assert_non_null(strstr(e.errstr, "not a multiple"));
    f = fopen(path, "w");
    fputs("{\"model_type\": \"bert\", \"vocab_size\": 10, \"hidden_size\": 12, \"num_hidden_layers\": 1,"
          " \"num_attention_heads\": 3, \"intermediate_size\": 8, \"hidden_act\": \"relu\"}", f);
    fclose(f);
    assert_int_not_equal(e.ops->open(&e, &ec, NULL), 0);
    assert_non_null(strstr(e.errstr, "hidden_act"));
    unlink(path);
    rmdir(dir);
    EmbedderConfig cuda = {.backend = "native", .snapshot = SNAP, .device = "cuda:0", .model_id = ""};
    assert_int_not_equal(e.ops->open(&e, &cuda, NULL), 0);
    assert_non_null(strstr(e.errstr, "cuda:0"));
}

static const char *texts_src[] = {
    "A man is eating food.", "", "The quick brown fox jumps over the lazy dog again and again.",
    "short", "Ångström naïve café", "\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e", "x y z", "one more sentence here",
};
#define NT (int)(sizeof texts_src / sizeof texts_src[0])

/* One composition: `order` (a permutation of the texts) in one embed call on a fresh embedder
 * with the given token budget, window and lanes; vectors land in input order in out. */
static void embed_composition(int token_budget, int max_texts, int threads, const int *order, float *out, int *ntok)
{
    EmbedText texts[NT];
    float got[NT * 384];
    int nt[NT];
    EmbedStatus st[NT];
    for (int i = 0; i < NT; i++) texts[i] = (EmbedText){texts_src[order[i]], strlen(texts_src[order[i]]), true};
    Embedder *e = open_native_threads(token_budget, max_texts, threads);
    assert_non_null(e);
    EmbedWorkspace *w = e->ops->workspace_new(e);
    assert_int_equal(e->ops->embed(e, w, texts, NT, got, nt, st), 0);
    for (int i = 0; i < NT; i++) {
        assert_int_equal(st[i], EMBED_OK);
        assert_int_equal(nt[i], e->ops->count_tokens(e, w, texts[i].text, texts[i].len));
        memcpy(out + order[i] * 384, got + i * 384, sizeof(float) * 384);
        ntok[order[i]] = nt[i];
    }
    e->ops->workspace_free(w);
    close_native(e);
}

static void batching_does_not_change_the_vectors(void **state)
{
    (void)state;
    if (!have_model()) fail_msg("models/all-MiniLM-L6-v2 is not installed: run ops/setup.sh");
    /* docs/embedding.md: vectors do not depend on batching or on the lane count, bit for bit.
     * Reference: one text per call, one lane. Every other composition must give the same bytes. */
    float ref[NT * 384], got[NT * 384];
    int ntok[NT], ntok2[NT];
    Embedder *e1 = open_native(256, 1);
    assert_non_null(e1);
    EmbedWorkspace *w1 = e1->ops->workspace_new(e1);
    for (int i = 0; i < NT; i++) {
        EmbedText t = {texts_src[i], strlen(texts_src[i]), true};
        EmbedStatus st;
        assert_int_equal(e1->ops->embed(e1, w1, &t, 1, ref + i * 384, &ntok[i], &st), 0);
        assert_int_equal(st, EMBED_OK);
    }
    e1->ops->workspace_free(w1);
    close_native(e1);
    assert_int_equal(ntok[1], 2); /* the empty text is [CLS] [SEP] */
    static const int fwd[NT] = {0, 1, 2, 3, 4, 5, 6, 7}, rev[NT] = {7, 6, 5, 4, 3, 2, 1, 0},
                     mix[NT] = {2, 5, 0, 7, 3, 6, 1, 4};
    const struct {
        int token_budget, max_texts, threads;
        const int *order;
    } comp[] = {
        {256, 3, 2, fwd},  /* small window, budget forcing several packs, two lanes */
        {256, NT, 1, fwd}, /* one window, one lane */
        {4096, NT, 2, rev},
        {4096, NT, 3, mix}, /* three lanes, more lanes than packs in some windows */
        {64, 2, 2, mix},    /* tiny packs */
        {512, 5, 4, rev},
    };
    for (size_t c = 0; c < sizeof comp / sizeof comp[0]; c++) {
        memset(got, 0xff, sizeof got);
        embed_composition(comp[c].token_budget, comp[c].max_texts, comp[c].threads, comp[c].order, got, ntok2);
        for (int i = 0; i < NT; i++) {
            assert_int_equal(ntok2[i], ntok[i]);
            if (memcmp(ref + i * 384, got + i * 384, sizeof(float) * 384) != 0) {
                int d = 0;
                while (ref[i * 384 + d] == got[i * 384 + d]) d++;
                fail_msg("composition %zu (budget %d, window %d, lanes %d): text %d differs from one-at-a-time at "
                         "dimension %d: %.9g vs %.9g",
                         c, comp[c].token_budget, comp[c].max_texts, comp[c].threads, i, d, got[i * 384 + d],
                         ref[i * 384 + d]);
            }
        }
    }
}

static void too_long_texts_error_or_truncate_as_asked(void **state)
{
    (void)state;
    if (!have_model()) fail_msg("models/all-MiniLM-L6-v2 is not installed: run ops/setup.sh");
    Embedder *e = open_native(1024, 8);
    EmbedWorkspace *ws = e->ops->workspace_new(e);
    size_t n = 3000;
    char *big = malloc(n + 1);
    for (size_t i = 0; i < n; i += 2) { big[i] = 'a'; big[i + 1] = ' '; }
    big[n] = '\0';
    assert_int_equal(e->ops->count_tokens(e, ws, big, n), 1502);
    EmbedText t[3] = {{big, n, false}, {"ok", 2, false}, {big, n, true}};
    float out[3 * 384];
    int ntok[3];
    EmbedStatus st[3];
    assert_int_equal(e->ops->embed(e, ws, t, 3, out, ntok, st), 0);
    assert_int_equal(st[0], EMBED_ERR_TOO_LONG);
    assert_int_equal(ntok[0], 1502);
    assert_int_equal(st[1], EMBED_OK);
    assert_int_equal(st[2], EMBED_OK);
    assert_int_equal(ntok[2], 256);
    free(big);
    e->ops->workspace_free(ws);
    close_native(e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(wordpiece_matches_bert_uncased_behaviour),
        cmocka_unit_test(snapshot_identity_is_read_from_the_files),
        cmocka_unit_test(a_missing_or_inconsistent_snapshot_is_an_error_naming_the_file),
        cmocka_unit_test(batching_does_not_change_the_vectors),
        cmocka_unit_test(too_long_texts_error_or_truncate_as_asked),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
