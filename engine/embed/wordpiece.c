/* wordpiece.c: the WordPiece tokenizer. Pipeline per input code point, as HF BertNormalizer
 * does it: clean (drop NUL, U+FFFD and controls, map white space to ' '), pad CJK ideographs
 * with spaces, NFD + drop Mn when stripping accents, lower-case (per code point, no final-sigma
 * rule, like HF); then the pre-tokenizer splits on white space and isolates punctuation, and
 * each word goes through greedy longest-match-first WordPiece. Special (added) tokens are
 * matched on the raw text first. Must not allocate in wp_encode. */
#include "engine/embed/wordpiece.h"

#include <cjson/cJSON.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#define WP_MAX_ADDED 64
#define WP_WORD_CAP 256 /* code points kept per word; longer words become [UNK] anyway */

typedef struct WpEntry { uint32_t off, len; int32_t id; } WpEntry;

typedef struct WpAdded { char *text; size_t len; int32_t id; } WpAdded;

struct WpTokenizer {
    WpSettings s;
    char *pool;           /* all token strings, NUL-separated */
    size_t pool_len, pool_cap;
    WpEntry *table;       /* open addressing, power-of-two size */
    uint32_t mask;
    size_t max_tok_bytes;
    char prefix[16];      /* continuing_subword_prefix, usually "##" */
    size_t prefix_len;
    WpAdded added[WP_MAX_ADDED];
    int nadded;
};

static void seterr(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || !errlen) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static uint32_t hash_bytes(const char *s, size_t n)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) h = (h ^ (uint8_t)s[i]) * 16777619u;
    return h;
}

static int32_t lookup(const WpTokenizer *tk, const char *s, size_t n)
{
    for (uint32_t i = hash_bytes(s, n) & tk->mask;; i = (i + 1) & tk->mask) {
        const WpEntry *e = &tk->table[i];
        if (e->id < 0) return -1;
        if (e->len == n && memcmp(tk->pool + e->off, s, n) == 0) return e->id;
    }
}

int32_t wp_token_id(const WpTokenizer *tk, const char *tok) { return lookup(tk, tok, strlen(tok)); }

/* Vocabulary building: tokens are added with their ids, then the table is built once. */
typedef struct VocabBuild { WpEntry *items; int n, cap; } VocabBuild;

static int vocab_add(WpTokenizer *tk, VocabBuild *vb, const char *s, size_t n, int32_t id)
{
    if (tk->pool_len + n + 1 > tk->pool_cap) {
        size_t cap = tk->pool_cap ? tk->pool_cap * 2 : 1 << 16;
        while (cap < tk->pool_len + n + 1) cap *= 2;
        char *p = realloc(tk->pool, cap);
        if (!p) return -1;
        tk->pool = p;
        tk->pool_cap = cap;
    }
    if (vb->n == vb->cap) {
        int cap = vb->cap ? vb->cap * 2 : 1024;
        WpEntry *p = realloc(vb->items, (size_t)cap * sizeof *p);
        if (!p) return -1;
        vb->items = p;
        vb->cap = cap;
    }
    memcpy(tk->pool + tk->pool_len, s, n);
    tk->pool[tk->pool_len + n] = '\0';
    vb->items[vb->n++] = (WpEntry){(uint32_t)tk->pool_len, (uint32_t)n, id};
    tk->pool_len += n + 1;
    if (n > tk->max_tok_bytes) tk->max_tok_bytes = n;
    return 0;
}

static int vocab_finish(WpTokenizer *tk, VocabBuild *vb, const char *file, char *err, size_t errlen)
{
    uint32_t size = 1024;
    while (size < (uint32_t)vb->n * 2u) size *= 2;
    tk->table = malloc(size * sizeof *tk->table);
    if (!tk->table) {
        seterr(err, errlen, "%s: out of memory", file);
        return -1;
    }
    for (uint32_t i = 0; i < size; i++) tk->table[i].id = -1;
    tk->mask = size - 1;
    int32_t max_id = -1;
    for (int k = 0; k < vb->n; k++) {
        WpEntry e = vb->items[k];
        const char *s = tk->pool + e.off;
        uint32_t i = hash_bytes(s, e.len) & tk->mask;
        while (tk->table[i].id >= 0) {
            if (tk->table[i].len == e.len && memcmp(tk->pool + tk->table[i].off, s, e.len) == 0) {
                seterr(err, errlen, "%s: token '%.64s' appears twice in the vocabulary", file, s);
                return -1;
            }
            i = (i + 1) & tk->mask;
        }
        tk->table[i] = e;
        if (e.id > max_id) max_id = e.id;
    }
    tk->s.vocab_size = max_id + 1;
    return 0;
}

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap + 1);
    while (buf) {
        size_t r = fread(buf + n, 1, cap - n, f);
        n += r;
        if (n < cap) break;
        cap *= 2;
        char *p = realloc(buf, cap + 1);
        if (!p) {
            free(buf);
            buf = NULL;
        } else {
            buf = p;
        }
    }
    fclose(f);
    if (buf) buf[n] = '\0';
    if (len) *len = n;
    return buf;
}

static bool json_bool(const cJSON *obj, const char *key, bool dflt)
{
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (cJSON_IsBool(j)) return cJSON_IsTrue(j);
    return dflt;
}

static int add_special(WpTokenizer *tk, const char *text, int32_t id)
{
    if (tk->nadded >= WP_MAX_ADDED) return 0;
    for (int i = 0; i < tk->nadded; i++)
        if (strcmp(tk->added[i].text, text) == 0) return 0;
    char *t = strdup(text);
    if (!t) return -1;
    tk->added[tk->nadded++] = (WpAdded){t, strlen(t), id};
    return 0;
}

static int load_tokenizer_json(WpTokenizer *tk, const char *path, const char *text, char *err, size_t errlen)
{
    int rc = -1;
    VocabBuild vb = {0};
    cJSON *root = cJSON_Parse(text);
    if (!root) {
        seterr(err, errlen, "%s: not valid JSON", path);
        return -1;
    }
    const cJSON *norm = cJSON_GetObjectItemCaseSensitive(root, "normalizer");
    if (cJSON_IsObject(norm)) {
        const cJSON *type = cJSON_GetObjectItemCaseSensitive(norm, "type");
        if (!cJSON_IsString(type) || strcmp(type->valuestring, "BertNormalizer") != 0) {
            seterr(err, errlen, "%s: normalizer type '%s' is not supported (only BertNormalizer)", path,
                   cJSON_IsString(type) ? type->valuestring : "?");
            goto out;
        }
        tk->s.clean_text = json_bool(norm, "clean_text", true);
        tk->s.handle_chinese_chars = json_bool(norm, "handle_chinese_chars", true);
        tk->s.lowercase = json_bool(norm, "lowercase", true);
        const cJSON *sa = cJSON_GetObjectItemCaseSensitive(norm, "strip_accents");
        tk->s.strip_accents = cJSON_IsBool(sa) ? cJSON_IsTrue(sa) : tk->s.lowercase; /* null follows lowercase */
    } else if (norm && !cJSON_IsNull(norm)) {
        seterr(err, errlen, "%s: normalizer is not an object", path);
        goto out;
    }
    const cJSON *pre = cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer");
    const cJSON *pt = cJSON_GetObjectItemCaseSensitive(pre, "type");
    if (!cJSON_IsString(pt) || strcmp(pt->valuestring, "BertPreTokenizer") != 0) {
        seterr(err, errlen, "%s: pre_tokenizer '%s' is not supported (only BertPreTokenizer)", path,
               cJSON_IsString(pt) ? pt->valuestring : "none");
        goto out;
    }
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    const cJSON *mt = cJSON_GetObjectItemCaseSensitive(model, "type");
    if (!cJSON_IsString(mt) || strcmp(mt->valuestring, "WordPiece") != 0) {
        seterr(err, errlen, "%s: model type '%s' is not supported (only WordPiece)", path,
               cJSON_IsString(mt) ? mt->valuestring : "none");
        goto out;
    }
    const cJSON *mc = cJSON_GetObjectItemCaseSensitive(model, "max_input_chars_per_word");
    if (cJSON_IsNumber(mc)) {
        if (!(mc->valuedouble >= 1 && mc->valuedouble <= WP_WORD_CAP - 1)) {
            seterr(err, errlen, "%s: max_input_chars_per_word must be 1..%d", path, WP_WORD_CAP - 1);
            goto out;
        }
        tk->s.max_input_chars_per_word = (int)mc->valuedouble;
    }
    const cJSON *pfx = cJSON_GetObjectItemCaseSensitive(model, "continuing_subword_prefix");
    if (cJSON_IsString(pfx)) {
        if (strlen(pfx->valuestring) >= sizeof tk->prefix) {
            seterr(err, errlen, "%s: continuing_subword_prefix is too long", path);
            goto out;
        }
        strcpy(tk->prefix, pfx->valuestring);
    }
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
    if (!cJSON_IsObject(vocab) || !vocab->child) {
        seterr(err, errlen, "%s: model.vocab is missing or empty", path);
        goto out;
    }
    for (const cJSON *v = vocab->child; v; v = v->next) {
        if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble > 1e8) {
            seterr(err, errlen, "%s: vocab entry '%.64s' has no valid id", path, v->string);
            goto out;
        }
        if (vocab_add(tk, &vb, v->string, strlen(v->string), (int32_t)v->valuedouble) != 0) {
            seterr(err, errlen, "%s: out of memory", path);
            goto out;
        }
    }
    const cJSON *added = cJSON_GetObjectItemCaseSensitive(root, "added_tokens");
    for (const cJSON *a = added ? added->child : NULL; a; a = a->next) {
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(a, "content");
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(a, "id");
        if (!cJSON_IsString(c) || !cJSON_IsNumber(id) || c->valuestring[0] == '\0') continue;
        if (add_special(tk, c->valuestring, (int32_t)id->valuedouble) != 0) goto out;
    }
    if (vocab_finish(tk, &vb, path, err, errlen) != 0) goto out;
    const cJSON *unk = cJSON_GetObjectItemCaseSensitive(model, "unk_token");
    tk->s.unk_id = lookup(tk, cJSON_IsString(unk) ? unk->valuestring : "[UNK]",
                          strlen(cJSON_IsString(unk) ? unk->valuestring : "[UNK]"));
    /* [CLS]/[SEP] from the post-processor when it names them, else by name. */
    const char *cls = "[CLS]", *sep = "[SEP]";
    const cJSON *post = cJSON_GetObjectItemCaseSensitive(root, "post_processor");
    const cJSON *ptype = cJSON_GetObjectItemCaseSensitive(post, "type");
    if (cJSON_IsString(ptype) && strcmp(ptype->valuestring, "BertProcessing") == 0) {
        const cJSON *jc = cJSON_GetObjectItemCaseSensitive(post, "cls"), *js = cJSON_GetObjectItemCaseSensitive(post, "sep");
        if (cJSON_IsArray(jc) && cJSON_IsString(jc->child)) cls = jc->child->valuestring;
        if (cJSON_IsArray(js) && cJSON_IsString(js->child)) sep = js->child->valuestring;
    } else if (cJSON_IsString(ptype) && strcmp(ptype->valuestring, "TemplateProcessing") == 0) {
        const cJSON *single = cJSON_GetObjectItemCaseSensitive(post, "single");
        int n = cJSON_GetArraySize(single);
        const cJSON *first = cJSON_GetArrayItem(single, 0), *last = cJSON_GetArrayItem(single, n - 1);
        const cJSON *fs = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(first, "SpecialToken"), "id");
        const cJSON *ls = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(last, "SpecialToken"), "id");
        if (n != 3 || !cJSON_IsString(fs) || !cJSON_IsString(ls)) {
            seterr(err, errlen, "%s: post_processor template is not [CLS] $A [SEP]", path);
            goto out;
        }
        cls = fs->valuestring;
        sep = ls->valuestring;
    } else if (post && !cJSON_IsNull(post)) {
        seterr(err, errlen, "%s: post_processor '%s' is not supported", path, cJSON_IsString(ptype) ? ptype->valuestring : "?");
        goto out;
    }
    tk->s.cls_id = lookup(tk, cls, strlen(cls));
    tk->s.sep_id = lookup(tk, sep, strlen(sep));
    tk->s.pad_id = lookup(tk, "[PAD]", 5);
    if (tk->s.pad_id < 0) tk->s.pad_id = 0;
    if (tk->s.unk_id < 0 || tk->s.cls_id < 0 || tk->s.sep_id < 0) {
        seterr(err, errlen, "%s: vocabulary lacks the unknown, [CLS] or [SEP] token", path);
        goto out;
    }
    rc = 0;
out:
    free(vb.items);
    cJSON_Delete(root);
    return rc;
}

static int vocab_settings(WpTokenizer *tk, const char *dir, const char *path, char *err, size_t errlen);

static int load_vocab_txt(WpTokenizer *tk, const char *dir, char *text, const char *path, char *err, size_t errlen)
{
    VocabBuild vb = {0};
    int32_t id = 0;
    for (char *line = text; line && *line;) {
        char *nl = strchr(line, '\n');
        size_t n = nl ? (size_t)(nl - line) : strlen(line);
        if (n && line[n - 1] == '\r') n--;
        if (vocab_add(tk, &vb, line, n, id++) != 0) {
            seterr(err, errlen, "%s: out of memory", path);
            free(vb.items);
            return -1;
        }
        line = nl ? nl + 1 : NULL;
    }
    if (vb.n == 0) {
        seterr(err, errlen, "%s: empty vocabulary", path);
        free(vb.items);
        return -1;
    }
    int rc = vocab_finish(tk, &vb, path, err, errlen);
    free(vb.items);
    if (rc != 0) return -1;
    /* tokenizer_config.json, when present, says how BertTokenizer was configured */
    return vocab_settings(tk, dir, path, err, errlen);
}

/* BertTokenizer's settings (dir/tokenizer_config.json when there is one, else the defaults)
 * and its special tokens, for a vocabulary without tokenizer.json. */
static int vocab_settings(WpTokenizer *tk, const char *dir, const char *path, char *err, size_t errlen)
{
    char cpath[4096];
    snprintf(cpath, sizeof cpath, "%s/tokenizer_config.json", dir);
    char *ctext = dir ? read_file(cpath, NULL) : NULL;
    cJSON *cfg = ctext ? cJSON_Parse(ctext) : NULL;
    free(ctext);
    tk->s.lowercase = json_bool(cfg, "do_lower_case", true);
    tk->s.handle_chinese_chars = json_bool(cfg, "tokenize_chinese_chars", true);
    const cJSON *sa = cJSON_GetObjectItemCaseSensitive(cfg, "strip_accents");
    tk->s.strip_accents = cJSON_IsBool(sa) ? cJSON_IsTrue(sa) : tk->s.lowercase;
    cJSON_Delete(cfg);
    static const char *specials[] = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"};
    for (size_t i = 0; i < sizeof specials / sizeof specials[0]; i++) {
        int32_t sid = lookup(tk, specials[i], strlen(specials[i]));
        if (sid >= 0 && add_special(tk, specials[i], sid) != 0) return -1;
    }
    tk->s.unk_id = lookup(tk, "[UNK]", 5);
    tk->s.cls_id = lookup(tk, "[CLS]", 5);
    tk->s.sep_id = lookup(tk, "[SEP]", 5);
    tk->s.pad_id = lookup(tk, "[PAD]", 5);
    if (tk->s.pad_id < 0) tk->s.pad_id = 0;
    if (tk->s.unk_id < 0 || tk->s.cls_id < 0 || tk->s.sep_id < 0) {
        seterr(err, errlen, "%s: vocabulary lacks [UNK], [CLS] or [SEP]", path);
        return -1;
    }
    return 0;
}

WpTokenizer *wp_open(const char *dir, bool force_lowercase, char *err, size_t errlen)
{
    WpTokenizer *tk = calloc(1, sizeof *tk);
    if (!tk) {
        seterr(err, errlen, "%s: out of memory", dir);
        return NULL;
    }
    tk->s = (WpSettings){.clean_text = true, .handle_chinese_chars = true, .strip_accents = true,
                         .lowercase = true, .max_input_chars_per_word = 100};
    strcpy(tk->prefix, "##");
    char path[4096];
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    char *text = read_file(path, NULL);
    int rc;
    if (text) {
        rc = load_tokenizer_json(tk, path, text, err, errlen);
    } else {
        snprintf(path, sizeof path, "%s/vocab.txt", dir);
        text = read_file(path, NULL);
        if (!text) {
            seterr(err, errlen, "%s: neither tokenizer.json nor vocab.txt can be read", dir);
            rc = -1;
        } else {
            rc = load_vocab_txt(tk, dir, text, path, err, errlen);
        }
    }
    free(text);
    if (rc != 0) {
        wp_close(tk);
        return NULL;
    }
    if (force_lowercase) tk->s.lowercase = true;
    tk->prefix_len = strlen(tk->prefix);
    return tk;
}

WpTokenizer *wp_open_phantom(const char *const *toks, const size_t *lens, int n, const char *what, char *err,
                             size_t errlen)
{
    WpTokenizer *tk = calloc(1, sizeof *tk);
    char buf[512];
    VocabBuild vb = {0};
    if (!tk) {
        seterr(err, errlen, "%s: out of memory", what);
        return NULL;
    }
    tk->s = (WpSettings){.clean_text = true, .handle_chinese_chars = true, .strip_accents = true,
                         .lowercase = true, .max_input_chars_per_word = 100};
    strcpy(tk->prefix, "##");
    tk->prefix_len = 2;
    static const char mark[] = "\xe2\x96\x81"; /* U+2581: a word-initial piece */
    for (int i = 0; i < n; i++) {
        const char *t = toks[i];
        size_t len = lens[i], m = 0;
        if (len + 2 > sizeof buf) {
            seterr(err, errlen, "%s: token %d is %zu bytes long", what, i, len);
            goto fail;
        }
        if (len >= 3 && memcmp(t, mark, 3) == 0) {
            memcpy(buf, t + 3, len - 3);
            m = len - 3;
        } else if (len >= 2 && t[0] == '[' && t[len - 1] == ']') {
            memcpy(buf, t, len);
            m = len;
        } else {
            memcpy(buf, "##", 2);
            memcpy(buf + 2, t, len);
            m = len + 2;
        }
        if (vocab_add(tk, &vb, buf, m, i) != 0) {
            seterr(err, errlen, "%s: out of memory", what);
            goto fail;
        }
    }
    if (vb.n == 0) {
        seterr(err, errlen, "%s: empty vocabulary", what);
        goto fail;
    }
    if (vocab_finish(tk, &vb, what, err, errlen) != 0 || vocab_settings(tk, NULL, what, err, errlen) != 0)
        goto fail;
    free(vb.items);
    return tk;
fail:
    free(vb.items);
    wp_close(tk);
    return NULL;
}

void wp_close(WpTokenizer *tk)
{
    if (!tk) return;
    for (int i = 0; i < tk->nadded; i++) free(tk->added[i].text);
    free(tk->pool);
    free(tk->table);
    free(tk);
}

const WpSettings *wp_settings(const WpTokenizer *tk) { return &tk->s; }

/* ---- Unicode classes, as HF tokenizers defines them ---- */

static bool is_white_space(int32_t c) /* Unicode White_Space (Rust char::is_whitespace) */
{
    if (c == ' ' || (c >= 0x9 && c <= 0xd)) return true;
    if (c < 0x85) return false;
    return c == 0x85 || c == 0xa0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200a) || c == 0x2028 ||
           c == 0x2029 || c == 0x202f || c == 0x205f || c == 0x3000;
}

static bool is_control(int32_t c) /* Cc, Cf, Co except \t \n \r */
{
    if (c == '\t' || c == '\n' || c == '\r') return false;
    if (c >= 0x20 && c < 0x7f) return false;
    utf8proc_category_t cat = utf8proc_category(c);
    return cat == UTF8PROC_CATEGORY_CC || cat == UTF8PROC_CATEGORY_CF || cat == UTF8PROC_CATEGORY_CO;
}

static bool is_punct(int32_t c)
{
    if ((c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) || (c >= 123 && c <= 126)) return true;
    if (c < 128) return false;
    switch (utf8proc_category(c)) {
    case UTF8PROC_CATEGORY_PC: case UTF8PROC_CATEGORY_PD: case UTF8PROC_CATEGORY_PS:
    case UTF8PROC_CATEGORY_PE: case UTF8PROC_CATEGORY_PI: case UTF8PROC_CATEGORY_PF:
    case UTF8PROC_CATEGORY_PO:
        return true;
    default:
        return false;
    }
}

static bool is_cjk(int32_t c)
{
    return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) || (c >= 0x20000 && c <= 0x2A6DF) ||
           (c >= 0x2A700 && c <= 0x2B73F) || (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B920 && c <= 0x2CEAF) ||
           (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
}

/* ---- encoding state ---- */

typedef struct Enc {
    const WpTokenizer *tk;
    int32_t *ids;
    int cap;      /* word pieces that fit (max_len - 2) */
    int count;    /* word pieces produced (may exceed cap) */
    int nchars;   /* chars of the current word (may exceed WP_WORD_CAP) */
    char bytes[WP_WORD_CAP * 4 + 16];
    uint16_t off[WP_WORD_CAP + 1]; /* byte offset of each char; off[n] = end */
} Enc;

static void emit(Enc *e, int32_t id)
{
    if (e->count < e->cap) e->ids[1 + e->count] = id;
    e->count++;
}

static void flush_word(Enc *e)
{
    int n = e->nchars;
    if (n == 0) return;
    e->nchars = 0;
    const WpTokenizer *tk = e->tk;
    if (n > tk->s.max_input_chars_per_word) {
        emit(e, tk->s.unk_id);
        return;
    }
    int first = e->count;
    char key[WP_WORD_CAP * 4 + 32];
    for (int start = 0; start < n;) {
        int32_t found = -1;
        int end = n;
        for (; end > start; end--) {
            size_t blen = e->off[end] - e->off[start];
            size_t klen = 0;
            if (start > 0) {
                memcpy(key, tk->prefix, tk->prefix_len);
                klen = tk->prefix_len;
            }
            if (klen + blen > tk->max_tok_bytes) continue;
            memcpy(key + klen, e->bytes + e->off[start], blen);
            found = lookup(tk, key, klen + blen);
            if (found >= 0) break;
        }
        if (found < 0) { /* no piece matches: the whole word is unknown */
            e->count = first;
            emit(e, tk->s.unk_id);
            return;
        }
        emit(e, found);
        start = end;
    }
}

static void push_char(Enc *e, int32_t c)
{
    if (e->nchars < WP_WORD_CAP) {
        int at = e->off[e->nchars];
        utf8proc_ssize_t w = utf8proc_encode_char(c, (utf8proc_uint8_t *)e->bytes + at);
        e->off[e->nchars + 1] = (uint16_t)(at + (w > 0 ? w : 0));
    }
    e->nchars++;
}

/* Pre-tokenizer: one normalized code point in. */
static void pretok(Enc *e, int32_t c)
{
    if (is_white_space(c)) {
        flush_word(e);
    } else if (is_punct(c)) {
        flush_word(e);
        push_char(e, c);
        flush_word(e);
    } else {
        push_char(e, c);
    }
}

/* Accent stripping and lower-casing of one code point. */
static void norm2(Enc *e, int32_t c)
{
    const WpSettings *s = &e->tk->s;
    utf8proc_int32_t dec[32];
    int n = 1;
    dec[0] = c;
    if (s->strip_accents && c >= 0x80) {
        int bound = 0;
        utf8proc_ssize_t r = utf8proc_decompose_char(c, dec, 32, UTF8PROC_DECOMPOSE, &bound);
        n = r > 0 && r <= 32 ? (int)r : 1;
        if (r <= 0 || r > 32) dec[0] = c;
    }
    for (int i = 0; i < n; i++) {
        int32_t d = dec[i];
        if (s->strip_accents && d >= 0x80 && utf8proc_category(d) == UTF8PROC_CATEGORY_MN) continue;
        if (s->lowercase) {
            if (d == 0x130) { /* full lower-case mapping: i + combining dot above */
                pretok(e, 'i');
                pretok(e, 0x307);
                continue;
            }
            if (d < 0x80) {
                if (d >= 'A' && d <= 'Z') d += 32;
            } else {
                d = utf8proc_tolower(d);
            }
        }
        pretok(e, d);
    }
}

static void norm1(Enc *e, int32_t c)
{
    const WpSettings *s = &e->tk->s;
    if (s->clean_text) {
        if (c == 0 || c == 0xFFFD || is_control(c)) return;
        if (is_white_space(c)) c = ' ';
    }
    if (s->handle_chinese_chars && is_cjk(c)) {
        pretok(e, ' ');
        norm2(e, c);
        pretok(e, ' ');
        return;
    }
    norm2(e, c);
}

static const WpAdded *match_added(const WpTokenizer *tk, const char *p, size_t left)
{
    const WpAdded *best = NULL;
    for (int i = 0; i < tk->nadded; i++) {
        const WpAdded *a = &tk->added[i];
        if (a->len <= left && a->text[0] == p[0] && memcmp(a->text, p, a->len) == 0 && (!best || a->len > best->len))
            best = a;
    }
    return best;
}

int wp_encode(const WpTokenizer *tk, const char *text, size_t len, int32_t *ids, int max_len, int *total)
{
    if (max_len < 2) return -1;
    Enc e;
    e.tk = tk;
    e.ids = ids;
    e.cap = max_len - 2;
    e.count = 0;
    e.nchars = 0;
    e.off[0] = 0;
    bool first_is_special[256] = {false};
    for (int i = 0; i < tk->nadded; i++) first_is_special[(uint8_t)tk->added[i].text[0]] = true;
    const uint8_t *p = (const uint8_t *)text;
    size_t i = 0;
    while (i < len) {
        if (first_is_special[p[i]]) {
            const WpAdded *a = match_added(tk, text + i, len - i);
            if (a) {
                flush_word(&e);
                emit(&e, a->id);
                i += a->len;
                continue;
            }
        }
        int32_t c;
        if (p[i] < 0x80) {
            c = p[i];
            i++;
        } else {
            utf8proc_int32_t cp;
            utf8proc_ssize_t r = utf8proc_iterate(p + i, (utf8proc_ssize_t)(len - i < 4 ? len - i : 4), &cp);
            if (r <= 0) {
                c = 0xFFFD;
                i++;
            } else {
                c = cp;
                i += (size_t)r;
            }
        }
        norm1(&e, c);
    }
    flush_word(&e);
    int pieces = e.count < e.cap ? e.count : e.cap;
    ids[0] = tk->s.cls_id;
    ids[1 + pieces] = tk->s.sep_id;
    if (total) *total = e.count + 2;
    return pieces + 2;
}
