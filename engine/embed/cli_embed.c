/* cli_embed.c: the offline commands behind `weaver-engine embed` (a corpus file to a .npy of
 * vectors plus an ids file, streaming, resumable) and `weaver-engine tokenize` (token ids as
 * JSON lines, for reference checks). Uses the native backend directly (embedder_native_ops),
 * with the same token-budget batching as the daemon. Returns exit codes; never calls exit().
 *
 * Files written next to --output OUT.npy:
 *   OUT.npy             float32 or float16 rows; row i = input line i; the 128-byte header is
 *                       written first with 0 rows and patched at the end
 *   OUT.ids.txt         one id per row (JSONL id field, or the 1-based line number for .txt);
 *                       an empty line for a skipped row
 *   OUT.errors.jsonl    --skip-bad: {"line": N, "error": "..."} per skipped line; its row is zeros
 *   OUT.npy.ckpt        progress checkpoint while running; removed on success
 * Exit codes: 0 ok, 64 usage, 65 bad input line, 66 model/snapshot, 70 I/O, 75 stopped early
 * (test hook WEAVER_EMBED_STOP_AFTER_ROWS). */
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <utf8proc.h>

#include "config/config.h"
#include "engine/embed/gguf_embed.h"
#include "engine/embed/snapshot.h"
#include "engine/embed/wordpiece.h"
#include "engine/embedder_impl.h"
#include "kernels/cpu_ops.h"

#define EX_OK 0
#define EX_USAGE_ 64
#define EX_DATAERR_ 65
#define EX_NOINPUT_ 66
#define EX_SOFTWARE_ 70
#define EX_IOERR_ 74
#define EX_TEMPFAIL_ 75
#define NPY_HEADER 128

int cli_embed_main(int argc, char **argv);
int cli_tokenize_main(int argc, char **argv);

typedef struct Opts {
    const char *snapshot, *config, *input, *output;
    const char *id_field, *text_field;
    const char *device, *precision; /* --device cpu|cuda:N, --precision: override the config */
    const char *instruction;        /* --instruction TEXT: every text is a query with this task */
    char query_format[512];         /* the config's embedder.query_format ("" = the default) */
    int f16;
    int resume, skip_bad;
    int batch_tokens, max_texts, threads;
    int normalize; /* -1 = the model's default */
    int progress;  /* -1 = auto (TTY) */
    int no_truncate;
} Opts;

static void usage_embed(FILE *f)
{
    fprintf(f,
            "usage: weaver-engine embed (--snapshot DIR | --config FILE) --input corpus.jsonl|corpus.txt\n"
            "                           --output vectors.npy [--dtype f32|f16] [--id-field id] [--text-field text]\n"
            "                           [--resume] [--skip-bad] [--batch-tokens N] [--max-texts N] [--threads N]\n"
            "                           [--normalize | --no-normalize] [--progress | --no-progress]\n"
            "                           [--device cpu|cuda:N] [--precision auto|fp32|bf16|int8 (cpu)|tf32|fp16 (cuda)]\n"
            "                           [--instruction TEXT]\n"
            "Writes vectors.npy (row i = input line i), vectors.ids.txt, and with --skip-bad vectors.errors.jsonl.\n"
            "Input is JSONL unless the file name ends in .txt (one text per line, id = line number).\n");
}

static int ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

static int parse_int(const char *s, int lo, int hi, int *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || end == s || v < lo || v > hi) return -1;
    *out = (int)v;
    return 0;
}

static int parse_opts(int argc, char **argv, Opts *o, int tokenize)
{
    memset(o, 0, sizeof *o);
    o->id_field = "id";
    o->text_field = "text";
    o->normalize = -1;
    o->progress = -1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define NEEDV() do { if (!v) { fprintf(stderr, "%s: %s needs a value\n", argv[0], a); return -1; } i++; } while (0)
        if (strcmp(a, "--snapshot") == 0) { NEEDV(); o->snapshot = v; }
        else if (strcmp(a, "--config") == 0) { NEEDV(); o->config = v; }
        else if (strcmp(a, "--input") == 0) { NEEDV(); o->input = v; }
        else if (!tokenize && strcmp(a, "--device") == 0) { NEEDV(); o->device = v; }
        else if (!tokenize && strcmp(a, "--precision") == 0) { NEEDV(); o->precision = v; }
        else if (!tokenize && strcmp(a, "--output") == 0) { NEEDV(); o->output = v; }
        else if (strcmp(a, "--id-field") == 0) { NEEDV(); o->id_field = v; }
        else if (strcmp(a, "--instruction") == 0) { NEEDV(); o->instruction = v; }
        else if (strcmp(a, "--text-field") == 0) { NEEDV(); o->text_field = v; }
        else if (!tokenize && strcmp(a, "--dtype") == 0) {
            NEEDV();
            if (strcmp(v, "f32") == 0) o->f16 = 0;
            else if (strcmp(v, "f16") == 0) o->f16 = 1;
            else { fprintf(stderr, "%s: --dtype must be f32 or f16\n", argv[0]); return -1; }
        }
        else if (!tokenize && strcmp(a, "--resume") == 0) o->resume = 1;
        else if (strcmp(a, "--skip-bad") == 0) o->skip_bad = 1;
        else if (!tokenize && strcmp(a, "--normalize") == 0) o->normalize = 1;
        else if (!tokenize && strcmp(a, "--no-normalize") == 0) o->normalize = 0;
        else if (!tokenize && strcmp(a, "--progress") == 0) o->progress = 1;
        else if (!tokenize && strcmp(a, "--no-progress") == 0) o->progress = 0;
        else if (tokenize && strcmp(a, "--no-truncate") == 0) o->no_truncate = 1;
        else if (!tokenize && (strcmp(a, "--batch-tokens") == 0 || strcmp(a, "--max-texts") == 0 || strcmp(a, "--threads") == 0)) {
            NEEDV();
            int *dst = a[2] == 'b' ? &o->batch_tokens : a[2] == 'm' ? &o->max_texts : &o->threads;
            if (parse_int(v, a[2] == 't' ? 0 : 1, 1 << 24, dst) != 0) {
                fprintf(stderr, "%s: %s must be a positive integer\n", argv[0], a);
                return -1;
            }
        }
        else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) return 1;
        else { fprintf(stderr, "%s: unknown option '%s'\n", argv[0], a); return -1; }
#undef NEEDV
    }
    if (!o->snapshot == !o->config) {
        fprintf(stderr, "%s: give exactly one of --snapshot DIR or --config FILE\n", argv[0]);
        return -1;
    }
    if (!o->input || (!tokenize && !o->output)) {
        fprintf(stderr, "%s: --input%s is required\n", argv[0], tokenize ? "" : " and --output are");
        return -1;
    }
    return 0;
}

/* Opens the native embedder from --snapshot or from the config file's embedder/batch sections. */
static int open_embedder(Opts *o, Embedder *e)
{
    memset(e, 0, sizeof *e);
    e->ops = &embedder_native_ops;
    EmbedderConfig ec = {0};
    BatchConfig bc = {0};
    Config cfg;
    int have_cfg = 0;
    if (o->config) {
        CfgErrors errs = {0};
        if (cfg_load(o->config, &cfg, &errs) != 0) {
            for (int i = 0; i < errs.count; i++) fprintf(stderr, "%s\n", errs.msgs[i]);
            cfg_errors_free(&errs);
            return CFG_EX_CONFIG;
        }
        have_cfg = 1;
        if (strcmp(cfg.embedder.backend, "native") != 0) {
            fprintf(stderr, "embed: %s: embedder.backend is '%s'; offline runs use the native backend only\n",
                    o->config, cfg.embedder.backend);
            cfg_free(&cfg);
            return CFG_EX_CONFIG;
        }
        ec = cfg.embedder;
        bc = cfg.batch;
        snprintf(o->query_format, sizeof o->query_format, "%s", cfg.embedder.query_format);
    } else {
        ec.backend = "native";
        ec.snapshot = (char *)o->snapshot;
        ec.device = "cpu";
        ec.model_id = "";
    }
    if (o->threads) ec.threads = o->threads;
    if (o->device) ec.device = (char *)o->device;
    if (o->precision) ec.precision = (char *)o->precision;
    int index;
    if (ec.device && !cfg_parse_device(ec.device, &index)) {
        fprintf(stderr, "embed: --device '%s': expected cpu or cuda:N\n", ec.device);
        if (have_cfg) cfg_free(&cfg);
        return EX_USAGE_;
    }
    if (o->batch_tokens) bc.token_budget = o->batch_tokens;
    if (o->max_texts) bc.max_texts = o->max_texts;
    int rc = e->ops->open(e, &ec, &bc);
    if (rc != 0) {
        fprintf(stderr, "embed: %s\n", e->errstr);
    } else {
        if (e->info.precision_note[0]) fprintf(stderr, "embed: %s\n", e->info.precision_note);
        fprintf(stderr, "embed: native embedder on %s, precision %s\n", ec.device && ec.device[0] ? ec.device : "cpu",
                e->info.precision);
    }
    if (have_cfg) cfg_free(&cfg); /* ec's strings point into it */
    return rc != 0 ? EX_NOINPUT_ : 0;
}

/* ---- input: one line at a time, JSONL or plain text ---- */

typedef struct Input {
    FILE *f;
    int txt;
    const char *id_field, *text_field;
    char *line;
    size_t cap;
    long long lineno;  /* of the line last read, 1-based */
    long long offset;  /* bytes consumed */
} Input;

typedef struct Rec {
    char *text;  /* owned */
    size_t len;
    char *id;    /* owned */
    char err[160];
    long long line; /* input line number (set by the embed loop) */
} Rec;

static int utf8_valid(const char *s, size_t n)
{
    const uint8_t *p = (const uint8_t *)s;
    size_t i = 0;
    while (i < n) {
        if (p[i] < 0x80) { i++; continue; }
        utf8proc_int32_t c;
        utf8proc_ssize_t r = utf8proc_iterate(p + i, (utf8proc_ssize_t)(n - i), &c);
        if (r <= 0) return 0;
        i += (size_t)r;
    }
    return 1;
}

/* Reads the next line into r: 1 = a line (r->err set when it is bad), 0 = end, -1 = I/O error. */
static int input_next(Input *in, Rec *r)
{
    memset(r, 0, sizeof *r);
    ssize_t n = getline(&in->line, &in->cap, in->f);
    if (n < 0) return ferror(in->f) ? -1 : 0;
    in->lineno++;
    in->offset += n;
    size_t len = (size_t)n;
    if (len && in->line[len - 1] == '\n') len--;
    if (len && in->line[len - 1] == '\r') len--;
    if (!utf8_valid(in->line, len)) {
        snprintf(r->err, sizeof r->err, "invalid UTF-8");
        return 1;
    }
    if (in->txt) {
        r->text = malloc(len + 1);
        r->id = malloc(24);
        if (!r->text || !r->id) return -1;
        memcpy(r->text, in->line, len);
        r->text[len] = '\0';
        r->len = len;
        snprintf(r->id, 24, "%lld", in->lineno);
        return 1;
    }
    /* cJSON strings end at NUL, so a \u0000 escape would cut the text short: drop it here (the
     * tokenizer's clean_text drops NUL characters anyway). */
    size_t w = 0;
    for (size_t i = 0; i < len;) {
        if (in->line[i] == '\\' && i + 1 < len) {
            if (i + 5 < len && memcmp(in->line + i + 1, "u0000", 5) == 0) {
                i += 6;
                continue;
            }
            in->line[w++] = in->line[i++];
        }
        in->line[w++] = in->line[i++];
    }
    len = w;
    cJSON *j = cJSON_ParseWithLength(in->line, len);
    if (!j || !cJSON_IsObject(j)) {
        snprintf(r->err, sizeof r->err, "not a JSON object");
        cJSON_Delete(j);
        return 1;
    }
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(j, in->text_field);
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(j, in->id_field);
    if (!cJSON_IsString(t)) {
        snprintf(r->err, sizeof r->err, "field '%.64s' is missing or not a string", in->text_field);
    } else if (!cJSON_IsString(id) && !cJSON_IsNumber(id)) {
        snprintf(r->err, sizeof r->err, "field '%.64s' is missing or not a string or number", in->id_field);
    } else if (!utf8_valid(t->valuestring, strlen(t->valuestring))) {
        snprintf(r->err, sizeof r->err, "field '%.64s' decodes to invalid UTF-8", in->text_field);
    } else {
        r->text = strdup(t->valuestring);
        r->len = strlen(t->valuestring);
        if (cJSON_IsString(id)) {
            r->id = strdup(id->valuestring);
        } else {
            r->id = malloc(32);
            if (r->id) {
                double d = id->valuedouble;
                if (d == floor(d) && fabs(d) < 9e15) snprintf(r->id, 32, "%.0f", d);
                else snprintf(r->id, 32, "%.17g", d);
            }
        }
        if (!r->text || !r->id) {
            cJSON_Delete(j);
            return -1;
        }
    }
    cJSON_Delete(j);
    return 1;
}

static void rec_free(Rec *r)
{
    free(r->text);
    free(r->id);
    r->text = r->id = NULL;
}

/* --instruction: the record's text becomes the query the model reads. 0, or -1 out of memory. */
static int rec_render_query(Rec *r, const char *format, const char *instruction)
{
    size_t il = strlen(instruction), n = embed_query_len(format, il, r->len);
    char *q = malloc(n + 1);
    if (!q) return -1;
    embed_render_query(q, n, format, instruction, il, r->text, r->len);
    q[n] = '\0';
    free(r->text);
    r->text = q;
    r->len = n;
    return 0;
}

/* ids file: one per line; backslash, newline, CR and tab escaped so each row is one line. */
static void write_id(FILE *f, const char *id)
{
    for (const char *p = id; p && *p; p++) {
        switch (*p) {
        case '\\': fputs("\\\\", f); break;
        case '\n': fputs("\\n", f); break;
        case '\r': fputs("\\r", f); break;
        case '\t': fputs("\\t", f); break;
        default: fputc(*p, f);
        }
    }
    fputc('\n', f);
}

/* ---- .npy ---- */

static int npy_write_header(FILE *f, int f16, long long rows, int dim)
{
    char h[NPY_HEADER];
    memset(h, ' ', sizeof h);
    memcpy(h, "\x93NUMPY\x01\x00", 8);
    h[8] = (char)((NPY_HEADER - 10) & 0xff);
    h[9] = (char)((NPY_HEADER - 10) >> 8);
    char dict[NPY_HEADER];
    int n = snprintf(dict, sizeof dict, "{'descr': '<%s', 'fortran_order': False, 'shape': (%lld, %d), }",
                     f16 ? "f2" : "f4", rows, dim);
    if (n < 0 || n > NPY_HEADER - 11) return -1;
    memcpy(h + 10, dict, (size_t)n);
    h[NPY_HEADER - 1] = '\n';
    if (fseek(f, 0, SEEK_SET) != 0 || fwrite(h, 1, sizeof h, f) != sizeof h) return -1;
    return 0;
}

/* ---- checkpoint ---- */

typedef struct Ckpt {
    long long rows, offset, lineno, ids_size, err_size, bad, tokens;
    char fingerprint[512];
} Ckpt;

static int ckpt_write(const char *path, const Ckpt *c)
{
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f) return -1;
    fprintf(f, "{\"rows\": %lld, \"offset\": %lld, \"lineno\": %lld, \"ids_size\": %lld, \"err_size\": %lld, "
               "\"bad\": %lld, \"tokens\": %lld, \"fingerprint\": ",
            c->rows, c->offset, c->lineno, c->ids_size, c->err_size, c->bad, c->tokens);
    cJSON *s = cJSON_CreateString(c->fingerprint);
    char *q = cJSON_PrintUnformatted(s);
    fprintf(f, "%s}\n", q ? q : "\"\"");
    free(q);
    cJSON_Delete(s);
    int bad = fflush(f) != 0 || fsync(fileno(f)) != 0;
    bad |= fclose(f) != 0;
    if (bad || rename(tmp, path) != 0) return -1;
    return 0;
}

static int ckpt_read(const char *path, Ckpt *c)
{
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    char buf[4096];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    cJSON *j = cJSON_Parse(buf);
    if (!j) return -1;
    memset(c, 0, sizeof *c);
    long long *dst[] = {&c->rows, &c->offset, &c->lineno, &c->ids_size, &c->err_size, &c->bad, &c->tokens};
    const char *keys[] = {"rows", "offset", "lineno", "ids_size", "err_size", "bad", "tokens"};
    int ok = 1;
    for (int i = 0; i < 7; i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, keys[i]);
        if (!cJSON_IsNumber(v) || v->valuedouble < 0) ok = 0;
        else *dst[i] = (long long)v->valuedouble;
    }
    const cJSON *fp = cJSON_GetObjectItemCaseSensitive(j, "fingerprint");
    if (cJSON_IsString(fp)) snprintf(c->fingerprint, sizeof c->fingerprint, "%s", fp->valuestring);
    else ok = 0;
    cJSON_Delete(j);
    return ok ? 0 : -1;
}

/* ---- progress ---- */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void progress(int tty, int final, double t0, long long rows, long long rows0, long long tokens,
                     long long tokens0, long long offset, long long total_bytes)
{
    double dt = now_s() - t0;
    if (dt <= 0) dt = 1e-9;
    double rps = (double)(rows - rows0) / dt, tps = (double)(tokens - tokens0) / dt;
    double frac = total_bytes > 0 ? (double)offset / (double)total_bytes : 0.0;
    double eta = frac > 0 && frac < 1 ? dt * (1.0 - frac) / frac : 0.0;
    if (tty) {
        char bar[31];
        int fill = (int)(frac * 30);
        for (int i = 0; i < 30; i++) bar[i] = i < fill ? '#' : '.';
        bar[30] = '\0';
        fprintf(stderr, "\r[%s] %5.1f%% %lld rows  %.0f rows/s  %.0f tok/s  ETA %.0fs   %s", bar, frac * 100, rows, rps,
                tps, eta, final ? "\n" : "");
    } else {
        fprintf(stderr, "embed: %lld rows (%.1f%%), %.0f rows/s, %.0f tokens/s, ETA %.0fs%s\n", rows, frac * 100, rps, tps,
                eta, final ? " (done)" : "");
    }
    fflush(stderr);
}

static long long file_size(FILE *f)
{
    fflush(f);
    struct stat sb;
    return fstat(fileno(f), &sb) == 0 ? (long long)sb.st_size : -1;
}

static void l2_normalize(float *v, int d)
{
    double ss = 0.0;
    for (int i = 0; i < d; i++) ss += (double)v[i] * v[i];
    if (ss > 0.0) {
        float inv = (float)(1.0 / sqrt(ss));
        for (int i = 0; i < d; i++) v[i] *= inv;
    }
}

int cli_embed_main(int argc, char **argv)
{
    Opts o;
    int pr = parse_opts(argc, argv, &o, 0);
    if (pr != 0) {
        usage_embed(pr > 0 ? stdout : stderr);
        return pr > 0 ? EX_OK : EX_USAGE_;
    }
    int rc = EX_SOFTWARE_;
    Embedder e;
    int orc = open_embedder(&o, &e);
    if (orc != 0) return orc;
    const EmbedderInfo *info = &e.info;
    const int dim = info->dim;
    const int normalize = o.normalize >= 0 ? o.normalize : info->normalize;

    Input in = {.txt = ends_with(o.input, ".txt"), .id_field = o.id_field, .text_field = o.text_field};
    FILE *npy = NULL, *ids = NULL, *errs = NULL;
    EmbedWorkspace *ws = NULL;
    Rec *recs = NULL;
    EmbedText *texts = NULL;
    float *vecs = NULL;
    int *ntok = NULL, *slot = NULL;
    EmbedStatus *st = NULL;
    unsigned short *half = NULL;
    char ids_path[4096], err_path[4096], ckpt_path[4096];
    char base[4096];
    snprintf(base, sizeof base, "%s", o.output);
    if (ends_with(base, ".npy")) base[strlen(base) - 4] = '\0';
    snprintf(ids_path, sizeof ids_path, "%s.ids.txt", base);
    snprintf(err_path, sizeof err_path, "%s.errors.jsonl", base);
    snprintf(ckpt_path, sizeof ckpt_path, "%s.ckpt", o.output);

    in.f = fopen(o.input, "rb");
    if (!in.f) {
        fprintf(stderr, "embed: %s: cannot open: %s\n", o.input, strerror(errno));
        rc = EX_NOINPUT_;
        goto out;
    }
    struct stat isb;
    fstat(fileno(in.f), &isb);
    long long total_bytes = (long long)isb.st_size;

    Ckpt ck = {0};
    /* everything that changes the bytes written, batching included (chunk, budget, lanes) */
    snprintf(ck.fingerprint, sizeof ck.fingerprint, "%s|%s|%d|%s|%d|%.64s|%.64s|%s|%lld|%d|%d|%d|%d|%.64s", info->model_id,
             info->snapshot_hash, dim, o.f16 ? "f16" : "f32", normalize, o.id_field, o.text_field,
             in.txt ? "txt" : "jsonl", total_bytes, o.skip_bad, o.max_texts, o.batch_tokens, o.threads,
             o.instruction ? o.instruction : "");
    if (strcmp(info->precision, "fp32") != 0) /* appended, so an fp32 checkpoint reads as before */
        snprintf(ck.fingerprint + strlen(ck.fingerprint), sizeof ck.fingerprint - strlen(ck.fingerprint), "|%s",
                 info->precision);
    int resuming = 0;
    if (o.resume) {
        Ckpt old;
        if (ckpt_read(ckpt_path, &old) == 0) {
            if (strcmp(old.fingerprint, ck.fingerprint) != 0) {
                fprintf(stderr, "embed: %s: the checkpoint was made with other settings, model or input; "
                                "rerun without --resume to start over\n", ckpt_path);
                rc = EX_USAGE_;
                goto out;
            }
            ck = old;
            resuming = 1;
        } else {
            fprintf(stderr, "embed: no checkpoint at %s; starting from the beginning\n", ckpt_path);
        }
    }
    npy = fopen(o.output, resuming ? "r+b" : "w+b");
    ids = fopen(ids_path, resuming ? "r+" : "w+");
    if (!npy || !ids) {
        fprintf(stderr, "embed: cannot open %s or %s for writing: %s\n", o.output, ids_path, strerror(errno));
        rc = EX_IOERR_;
        goto out;
    }
    if (o.skip_bad) {
        errs = fopen(err_path, resuming ? "r+" : "w+");
        if (!errs) {
            fprintf(stderr, "embed: cannot open %s: %s\n", err_path, strerror(errno));
            rc = EX_IOERR_;
            goto out;
        }
    } else if (!resuming) {
        unlink(err_path);
    }
    size_t elt = o.f16 ? 2 : 4;
    if (resuming) {
        /* drop whatever was written after the checkpoint, then continue from its input offset */
        if (ftruncate(fileno(npy), NPY_HEADER + (off_t)ck.rows * dim * (off_t)elt) != 0 ||
            ftruncate(fileno(ids), (off_t)ck.ids_size) != 0 || (errs && ftruncate(fileno(errs), (off_t)ck.err_size) != 0) ||
            fseeko(in.f, (off_t)ck.offset, SEEK_SET) != 0) {
            fprintf(stderr, "embed: cannot rewind to the checkpoint: %s\n", strerror(errno));
            rc = EX_IOERR_;
            goto out;
        }
        in.offset = ck.offset;
        in.lineno = ck.lineno;
        fseeko(npy, 0, SEEK_END);
        fseeko(ids, 0, SEEK_END);
        if (errs) fseeko(errs, 0, SEEK_END);
        fprintf(stderr, "embed: resuming after %lld rows (line %lld)\n", ck.rows, ck.lineno);
    } else {
        if (npy_write_header(npy, o.f16, 0, dim) != 0) {
            fprintf(stderr, "embed: %s: cannot write the header\n", o.output);
            rc = EX_IOERR_;
            goto out;
        }
    }

    int chunk = o.max_texts > 0 ? o.max_texts : 256; /* lines per chunk: the unit of batching and checkpoints */
    ws = e.ops->workspace_new(&e);
    recs = calloc((size_t)chunk, sizeof *recs);
    texts = calloc((size_t)chunk, sizeof *texts);
    vecs = malloc((size_t)chunk * dim * sizeof *vecs);
    ntok = calloc((size_t)chunk, sizeof *ntok);
    slot = calloc((size_t)chunk, sizeof *slot);
    st = calloc((size_t)chunk, sizeof *st);
    half = malloc((size_t)dim * sizeof *half);
    if (!ws || !recs || !texts || !vecs || !ntok || !slot || !st || !half) {
        fprintf(stderr, "embed: out of memory for batch buffers\n");
        goto out;
    }
    float *zero = calloc((size_t)dim, sizeof(float));
    if (!zero) goto out;

    const char *stop_env = getenv("WEAVER_EMBED_STOP_AFTER_ROWS");
    long long stop_after = stop_env ? atoll(stop_env) : -1;
    int tty = o.progress >= 0 ? o.progress : isatty(fileno(stderr));
    double t0 = now_s(), last = t0;
    long long rows0 = ck.rows, tokens0 = ck.tokens;
    int done = 0;
    while (!done) {
        int n = 0, ntexts = 0;
        for (; n < chunk; n++) {
            int r = input_next(&in, &recs[n]);
            recs[n].line = in.lineno;
            if (r < 0) {
                fprintf(stderr, "embed: %s: read error: %s\n", o.input, strerror(errno));
                rc = EX_IOERR_;
                free(zero);
                goto out;
            }
            if (r == 0) {
                done = 1;
                break;
            }
            if (recs[n].err[0]) {
                if (!o.skip_bad) {
                    fprintf(stderr, "embed: %s:%lld: %s (use --skip-bad to record bad lines and go on)\n", o.input,
                            in.lineno, recs[n].err);
                    rc = EX_DATAERR_;
                    for (int k = 0; k <= n; k++) rec_free(&recs[k]);
                    free(zero);
                    goto out;
                }
                fprintf(errs, "{\"line\": %lld, \"error\": \"%s\"}\n", in.lineno, recs[n].err);
                slot[n] = -1;
                continue;
            }
            if (o.instruction && rec_render_query(&recs[n], o.query_format, o.instruction) != 0) {
                fprintf(stderr, "embed: out of memory\n");
                rc = EX_SOFTWARE_;
                for (int k = 0; k <= n; k++) rec_free(&recs[k]);
                free(zero);
                goto out;
            }
            texts[ntexts] = (EmbedText){.text = recs[n].text, .len = recs[n].len, .truncate = true};
            slot[n] = ntexts++;
        }
        if (ntexts > 0 && e.ops->embed(&e, ws, texts, ntexts, vecs, ntok, st) != 0) {
            fprintf(stderr, "embed: %s\n", e.errstr);
            for (int k = 0; k < n; k++) rec_free(&recs[k]);
            free(zero);
            goto out;
        }
        for (int k = 0; k < n; k++) {
            const float *v = zero;
            if (slot[k] >= 0 && st[slot[k]] != EMBED_OK) { /* a text the model cannot embed (no tokens) */
                if (!o.skip_bad) {
                    fprintf(stderr, "embed: %s:%lld: %s (use --skip-bad to record bad lines and go on)\n", o.input,
                            recs[k].line, e.errstr);
                    rc = EX_DATAERR_;
                    for (int j = k; j < n; j++) rec_free(&recs[j]);
                    free(zero);
                    goto out;
                }
                fprintf(errs, "{\"line\": %lld, \"error\": \"%s\"}\n", recs[k].line, e.errstr);
                slot[k] = -1;
            }
            if (slot[k] >= 0) {
                float *vv = vecs + (size_t)slot[k] * dim;
                if (normalize) l2_normalize(vv, dim);
                v = vv;
                ck.tokens += ntok[slot[k]];
            } else {
                ck.bad++;
            }
            size_t wrote;
            if (o.f16) {
                for (int d = 0; d < dim; d++) half[d] = cpu_f32_to_f16(v[d]);
                wrote = fwrite(half, 2, (size_t)dim, npy);
            } else {
                wrote = fwrite(v, 4, (size_t)dim, npy);
            }
            write_id(ids, slot[k] >= 0 ? recs[k].id : "");
            rec_free(&recs[k]);
            if (wrote != (size_t)dim) {
                fprintf(stderr, "embed: %s: write failed: %s\n", o.output, strerror(errno));
                rc = EX_IOERR_;
                for (int j = k + 1; j < n; j++) rec_free(&recs[j]);
                free(zero);
                goto out;
            }
            ck.rows++;
        }
        /* checkpoint at the chunk boundary: data first, then the checkpoint that points at it */
        if (fflush(npy) || fflush(ids) || (errs && fflush(errs))) {
            fprintf(stderr, "embed: write failed: %s\n", strerror(errno));
            rc = EX_IOERR_;
            free(zero);
            goto out;
        }
        ck.offset = in.offset;
        ck.lineno = in.lineno;
        ck.ids_size = file_size(ids);
        ck.err_size = errs ? file_size(errs) : 0;
        if (!done) {
            fdatasync(fileno(npy));
            fdatasync(fileno(ids));
            if (ckpt_write(ckpt_path, &ck) != 0) {
                fprintf(stderr, "embed: %s: cannot write the checkpoint: %s\n", ckpt_path, strerror(errno));
                rc = EX_IOERR_;
                free(zero);
                goto out;
            }
            if (stop_after >= 0 && ck.rows >= stop_after) {
                fprintf(stderr, "embed: stopping after %lld rows (WEAVER_EMBED_STOP_AFTER_ROWS)\n", ck.rows);
                rc = EX_TEMPFAIL_;
                free(zero);
                goto out;
            }
        }
        double t = now_s();
        if (t - last >= (tty ? 0.2 : 10.0)) {
            progress(tty, 0, t0, ck.rows, rows0, ck.tokens, tokens0, in.offset, total_bytes);
            last = t;
        }
    }
    free(zero);
    if (npy_write_header(npy, o.f16, ck.rows, dim) != 0 || fflush(npy) != 0 || fsync(fileno(npy)) != 0) {
        fprintf(stderr, "embed: %s: cannot finish the file: %s\n", o.output, strerror(errno));
        rc = EX_IOERR_;
        goto out;
    }
    progress(tty, 1, t0, ck.rows, rows0, ck.tokens, tokens0, in.offset, total_bytes);
    unlink(ckpt_path);
    if (ck.bad) fprintf(stderr, "embed: %lld bad line%s skipped (zero rows); see %s\n", ck.bad, ck.bad == 1 ? "" : "s", err_path);
    fprintf(stderr, "embed: wrote %lld rows x %d (%s%s) to %s, ids to %s\n", ck.rows, dim, o.f16 ? "f16" : "f32",
            normalize ? ", normalised" : "", o.output, ids_path);
    rc = EX_OK;
out:
    if (npy && fclose(npy) != 0 && rc == EX_OK) rc = EX_IOERR_;
    if (ids && fclose(ids) != 0 && rc == EX_OK) rc = EX_IOERR_;
    if (errs && fclose(errs) != 0 && rc == EX_OK) rc = EX_IOERR_;
    if (in.f) fclose(in.f);
    free(in.line);
    free(recs);
    free(texts);
    free(vecs);
    free(ntok);
    free(slot);
    free(st);
    free(half);
    if (ws) e.ops->workspace_free(ws);
    e.ops->close(&e);
    return rc;
}

/* ---- tokenize: token ids per input line, as JSON arrays (reference checks, debugging) ---- */

int cli_tokenize_main(int argc, char **argv)
{
    Opts o;
    int pr = parse_opts(argc, argv, &o, 1);
    if (pr != 0) {
        fprintf(pr > 0 ? stdout : stderr,
                "usage: weaver-engine tokenize (--snapshot DIR | --config FILE) --input texts.jsonl|texts.txt\n"
                "                              [--text-field text] [--id-field id] [--no-truncate] [--skip-bad]\n"
                "                              [--instruction TEXT]\n"
                "Prints one JSON array of token ids per input line ([CLS] ... [SEP], or a GGUF model's BOS/EOS,\n"
                "truncated to the model's max_seq_length unless --no-truncate; null for a bad line with --skip-bad).\n");
        return pr > 0 ? EX_OK : EX_USAGE_;
    }
    char err[512] = "";
    const char *dir = o.snapshot;
    Config cfg;
    int have_cfg = 0;
    if (o.config) {
        CfgErrors errs = {0};
        if (cfg_load(o.config, &cfg, &errs) != 0) {
            for (int i = 0; i < errs.count; i++) fprintf(stderr, "%s\n", errs.msgs[i]);
            cfg_errors_free(&errs);
            return CFG_EX_CONFIG;
        }
        have_cfg = 1;
        dir = cfg.embedder.snapshot;
    }
    int rc = EX_OK;
    Snapshot snap;
    WpTokenizer *tk = NULL;
    int32_t *ids = NULL;
    Input in = {.txt = ends_with(o.input, ".txt"), .id_field = o.id_field, .text_field = o.text_field};
    char gguf[4096 + 128];
    Embedder ge = {0}; /* a GGUF embedder's own tokenisation (BOS/EOS as it runs them) */
    EmbedWorkspace *gws = NULL;
    const WpTokenizer *wp = NULL; /* tk, or a bert GGUF's, owned by ge */
    if (cfg_snapshot_gguf(dir, gguf, sizeof gguf) == 1) {
        int orc = open_embedder(&o, &ge);
        if (orc != 0) {
            rc = orc;
            goto out;
        }
        snap.max_seq_len = ge.info.max_seq_len;
        if (ge.ops != &embedder_gguf_ops) {
            wp = embed_native_wordpiece(&ge);
        } else if (!(gws = ge.ops->workspace_new(&ge))) {
            fprintf(stderr, "tokenize: %s\n", ge.errstr);
            rc = EX_SOFTWARE_;
            goto out;
        }
    } else if (snapshot_load(dir, &snap, err, sizeof err) != 0 ||
               !(tk = wp_open(dir, snap.do_lower_case, err, sizeof err))) {
        fprintf(stderr, "tokenize: %s\n", err);
        rc = EX_NOINPUT_;
        goto out;
    }
    if (tk) wp = tk;
    in.f = fopen(o.input, "rb");
    if (!in.f) {
        fprintf(stderr, "tokenize: %s: cannot open: %s\n", o.input, strerror(errno));
        rc = EX_NOINPUT_;
        goto out;
    }
    int cap = snap.max_seq_len;
    Rec r;
    for (;;) {
        int g = input_next(&in, &r);
        if (g <= 0) {
            if (g < 0) rc = EX_IOERR_;
            break;
        }
        if (r.err[0]) {
            rec_free(&r);
            if (!o.skip_bad) {
                fprintf(stderr, "tokenize: %s:%lld: %s\n", o.input, in.lineno, r.err);
                rc = EX_DATAERR_;
                break;
            }
            fputs("null\n", stdout);
            continue;
        }
        if (o.instruction && rec_render_query(&r, o.query_format, o.instruction) != 0) {
            rec_free(&r);
            rc = EX_SOFTWARE_;
            break;
        }
        int want = cap;
        int32_t two[2];
        if (o.no_truncate && gws) {
            if (gguf_embed_tokens(&ge, gws, r.text, r.len, false, two, 2, &want) < 0) want = -1;
        } else if (o.no_truncate) {
            wp_encode(wp, r.text, r.len, two, 2, &want); /* count only */
        }
        if (want < 0) {
            fprintf(stderr, "tokenize: %s\n", ge.errstr);
            rec_free(&r);
            rc = EX_SOFTWARE_;
            break;
        }
        int32_t *p = realloc(ids, (size_t)(want > 2 ? want : 2) * sizeof *ids);
        if (!p) {
            rec_free(&r);
            rc = EX_SOFTWARE_;
            break;
        }
        ids = p;
        int total;
        int n = gws ? gguf_embed_tokens(&ge, gws, r.text, r.len, !o.no_truncate, ids, want, &total)
                    : wp_encode(wp, r.text, r.len, ids, want, NULL);
        fputc('[', stdout);
        for (int i = 0; i < n; i++) fprintf(stdout, i ? ", %d" : "%d", ids[i]);
        fputs("]\n", stdout);
        rec_free(&r);
    }
    if (fflush(stdout) != 0) rc = EX_IOERR_;
out:
    if (in.f) fclose(in.f);
    free(in.line);
    free(ids);
    wp_close(tk);
    if (gws) ge.ops->workspace_free(gws);
    if (ge.ops) ge.ops->close(&ge);
    if (have_cfg) cfg_free(&cfg);
    return rc;
}
