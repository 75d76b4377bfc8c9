/* test_embed_native.c: the native CPU embedder as the engine sees it through EmbedderOps:
 * identity (model id, snapshot hash, dim, pooling, normalize, max length), WordPiece cases a
 * user would notice, token counting, truncation vs EMBED_ERR_TOO_LONG, and that results do not
 * depend on how texts are batched (order, token budget, window size). Skips without the model. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
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

static void batching_does_not_change_the_vectors(void **state)
{
    (void)state;
    if (!have_model()) fail_msg("models/all-MiniLM-L6-v2 is not installed: run ops/setup.sh");
    EmbedText texts[NT + 1];
    for (int i = 0; i < NT; i++) texts[i] = (EmbedText){texts_src[i], strlen(texts_src[i]), true};
    float ref[NT * 384], got[NT * 384];
    int ntok[NT];
    EmbedStatus st[NT];
    /* reference: one text per call */
    Embedder *e1 = open_native(256, 1);
    assert_non_null(e1);
    EmbedWorkspace *w1 = e1->ops->workspace_new(e1);
    for (int i = 0; i < NT; i++) assert_int_equal(e1->ops->embed(e1, w1, &texts[i], 1, ref + i * 384, &ntok[i], &st[i]), 0);
    /* all at once, small window, budget that forces several sub-batches, two encoder lanes */
    Embedder *e2 = open_native_threads(256, 3, 2);
    EmbedWorkspace *w2 = e2->ops->workspace_new(e2);
    assert_int_equal(e2->ops->embed(e2, w2, texts, NT, got, ntok, st), 0);
    for (int i = 0; i < NT; i++) {
        assert_int_equal(st[i], EMBED_OK);
        assert_int_equal(ntok[i], e2->ops->count_tokens(e2, w2, texts[i].text, texts[i].len));
        double dot = 0, na = 0, nb = 0;
        for (int d = 0; d < 384; d++) {
            dot += (double)ref[i * 384 + d] * got[i * 384 + d];
            na += (double)ref[i * 384 + d] * ref[i * 384 + d];
            nb += (double)got[i * 384 + d] * got[i * 384 + d];
        }
        assert_true(dot / sqrt(na * nb) > 0.999999);
        assert_true(fabs(sqrt(na) - sqrt(nb)) < 1e-3 * sqrt(na)); /* pooled, same scale */
    }
    assert_int_equal(ntok[1], 2); /* the empty text is [CLS] [SEP] */
    e1->ops->workspace_free(w1);
    e2->ops->workspace_free(w2);
    close_native(e1);
    close_native(e2);
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
