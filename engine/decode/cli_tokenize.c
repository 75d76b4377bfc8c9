/* cli_tokenize.c: `weaver-engine tokenize --model FILE.gguf`, the GGUF tokenizer on its own:
 * token ids of a text (or of each line of a JSON-lines file) with llama.cpp's switches
 * (add_special, parse_special). Reads only the tokenizer metadata, so a vocabulary-only GGUF
 * works; a tokenizer we do not support is refused with the loader's reason. Returns an exit
 * code; never calls exit(). */
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/decode/gguf.h"
#include "engine/decode/tokenizer.h"

int cli_tokenize_gguf_main(int argc, char **argv);

enum { EX_OK_ = 0, EX_USAGE_ = 64, EX_DATAERR_ = 65, EX_NOINPUT_ = 66, EX_SOFTWARE_ = 70, EX_IOERR_ = 74 };

static const char *usage =
    "usage: weaver-engine tokenize --model FILE.gguf [--input FILE] [--jsonl] [--add-special] [--parse-special]\n"
    "                              [--ids-only]\n"
    "Tokenises the whole input (a file, or standard input) as one text; with --jsonl, each line is a\n"
    "JSON string (or an object with a \"text\" field) and gets its own output line. Output per text:\n"
    "{\"tokens\": [...]}, or with --ids-only the ids separated by spaces. --add-special adds BOS where the\n"
    "model asks for it (off by default, as llama.cpp's tokenizer tests run); --parse-special turns\n"
    "control-token text into those tokens (off by default).\n";

static char *read_all(FILE *in, size_t *len) {
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        n += fread(buf + n, 1, cap - n, in);
        if (n < cap) break;
        char *nb = realloc(buf, cap * 2);
        if (!nb) {
            free(buf);
            return NULL;
        }
        buf = nb;
        cap *= 2;
    }
    if (buf && ferror(in)) {
        free(buf);
        return NULL;
    }
    *len = n;
    return buf;
}

static void print_ids(const TokVec *tv, int ids_only) {
    if (ids_only) {
        for (int i = 0; i < tv->n; i++) printf(i ? " %d" : "%d", tv->v[i]);
        putchar('\n');
        return;
    }
    fputs("{\"tokens\": [", stdout);
    for (int i = 0; i < tv->n; i++) printf(i ? ", %d" : "%d", tv->v[i]);
    fputs("]}\n", stdout);
}

/* The text of one JSON-lines record: a JSON string, or an object's "text" string. */
static int jsonl_text(const char *line, char **text, size_t *len, char *err, size_t errlen) {
    if (strstr(line, "\\u0000")) { /* cJSON's strings end at NUL: refuse rather than cut the text */
        snprintf(err, errlen, "\\u0000 in a text is not supported");
        return -1;
    }
    cJSON *j = cJSON_Parse(line);
    cJSON *s = cJSON_IsString(j) ? j : cJSON_GetObjectItemCaseSensitive(j, "text");
    if (!cJSON_IsString(s)) {
        snprintf(err, errlen, "not a JSON string or an object with a \"text\" string");
        cJSON_Delete(j);
        return -1;
    }
    *len = strlen(s->valuestring);
    *text = malloc(*len + 1);
    if (*text) memcpy(*text, s->valuestring, *len + 1);
    cJSON_Delete(j);
    if (!*text) snprintf(err, errlen, "out of memory");
    return *text ? 0 : -1;
}

int cli_tokenize_gguf_main(int argc, char **argv) {
    const char *model = NULL, *input = NULL;
    int jsonl = 0, add_special = 0, parse_special = 0, ids_only = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--model") == 0 && i + 1 < argc) model = argv[++i];
        else if (strcmp(a, "--input") == 0 && i + 1 < argc) input = argv[++i];
        else if (strcmp(a, "--jsonl") == 0) jsonl = 1;
        else if (strcmp(a, "--add-special") == 0) add_special = 1;
        else if (strcmp(a, "--parse-special") == 0) parse_special = 1;
        else if (strcmp(a, "--ids-only") == 0) ids_only = 1;
        else if (strcmp(a, "--help") == 0) {
            fputs(usage, stdout);
            return EX_OK_;
        } else {
            fprintf(stderr, "tokenize: unknown or incomplete option '%s'\n%s", a, usage);
            return EX_USAGE_;
        }
    }
    if (!model) {
        fprintf(stderr, "%s", usage);
        return EX_USAGE_;
    }
    char err[512] = "";
    GgufFile *f = gguf_open(model, err, sizeof err);
    Tokenizer *t = f ? tok_load(f, err, sizeof err) : NULL;
    if (!t) {
        fprintf(stderr, "tokenize: %s: %s\n", model, err);
        gguf_close(f);
        return EX_NOINPUT_;
    }
    FILE *in = input && strcmp(input, "-") != 0 ? fopen(input, "rb") : stdin;
    int rc = EX_OK_;
    if (!in) {
        fprintf(stderr, "tokenize: %s: cannot open: %s\n", input, strerror(errno));
        rc = EX_NOINPUT_;
        goto out;
    }
    if (!jsonl) {
        size_t len = 0;
        char *text = read_all(in, &len);
        TokVec tv = {0};
        if (!text) {
            fprintf(stderr, "tokenize: cannot read the input\n");
            rc = EX_IOERR_;
        } else if (tok_encode(t, text, len, parse_special, add_special, &tv, err, sizeof err)) {
            fprintf(stderr, "tokenize: %s\n", err);
            rc = EX_SOFTWARE_;
        } else {
            print_ids(&tv, ids_only);
        }
        tokvec_free(&tv);
        free(text);
    } else {
        char *line = NULL;
        size_t cap = 0;
        long lineno = 0;
        ssize_t got;
        while (rc == EX_OK_ && (got = getline(&line, &cap, in)) >= 0) {
            lineno++;
            char *text = NULL;
            size_t len = 0;
            TokVec tv = {0};
            if (jsonl_text(line, &text, &len, err, sizeof err)) {
                fprintf(stderr, "tokenize: line %ld: %s\n", lineno, err);
                rc = EX_DATAERR_;
            } else if (tok_encode(t, text, len, parse_special, add_special, &tv, err, sizeof err)) {
                fprintf(stderr, "tokenize: line %ld: %s\n", lineno, err);
                rc = EX_SOFTWARE_;
            } else {
                print_ids(&tv, ids_only);
            }
            tokvec_free(&tv);
            free(text);
        }
        free(line);
        if (ferror(in)) rc = EX_IOERR_;
    }
    if (fflush(stdout) != 0) rc = EX_IOERR_;
out:
    if (in && in != stdin) fclose(in);
    tok_free(t);
    gguf_close(f);
    return rc;
}
