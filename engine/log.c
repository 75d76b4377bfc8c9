/* log.c: leveled log lines to stderr, one write per line so threads do not interleave.
 * Text lines: time, level, message. Control characters in a message are escaped (\n, \xNN):
 * text a producer controls (field names, keys, ids from error messages) can never forge or split
 * a log line. JSON lines (log.format = "json"): one object per line with ts, level, msg and the
 * fields the caller knows (worker, job_id, kind); every string is valid JSON and valid UTF-8
 * (control characters as \u00XX, invalid bytes as U+FFFD), so the same text cannot split or
 * forge a JSON line either. Must not: log payloads, allocate, or take locks. */
#include "engine/log.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static _Atomic int g_level = LOG_INFO;
static _Atomic int g_format = LOG_FORMAT_TEXT;
static _Thread_local int t_worker = -1;
static const char *const level_names[] = {"debug", "info", "warn", "error"};
static const char *const format_names[] = {"text", "json"};

void log_set_level(LogLevel level) { atomic_store(&g_level, (int)level); }
void log_set_format(LogFormat format) { atomic_store(&g_format, (int)format); }
void log_set_worker(int index) { t_worker = index; }

int log_level_parse(const char *name, LogLevel *out)
{
    for (int i = 0; i < 4; i++) {
        if (strcmp(name, level_names[i]) == 0) {
            *out = (LogLevel)i;
            return 0;
        }
    }
    return -1;
}

int log_format_parse(const char *name, LogFormat *out)
{
    for (int i = 0; i < 2; i++) {
        if (strcmp(name, format_names[i]) == 0) {
            *out = (LogFormat)i;
            return 0;
        }
    }
    return -1;
}

/* A bounded line under construction: appends stop (whole pieces only) when it is full. */
typedef struct Line {
    char buf[12288];
    size_t len;
} Line;

static void put(Line *l, const char *s, size_t n)
{
    if (n > sizeof l->buf - 4 - l->len) /* room for a closing brace and the newline */
        return;
    memcpy(l->buf + l->len, s, n);
    l->len += n;
}

static void puts_(Line *l, const char *s) { put(l, s, strlen(s)); }

/* Length of the valid UTF-8 sequence at p (at most n bytes), 0 when it is not one. */
static size_t utf8_len(const unsigned char *p, size_t n)
{
    unsigned c = p[0];
    size_t len;
    unsigned min;
    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf)
        len = 2, min = 0x80;
    else if (c >= 0xe0 && c <= 0xef)
        len = 3, min = 0x800;
    else if (c >= 0xf0 && c <= 0xf4)
        len = 4, min = 0x10000;
    else
        return 0;
    if (n < len)
        return 0;
    unsigned cp = c & (0x3f >> (len - 1));
    for (size_t i = 1; i < len; i++) {
        if ((p[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (p[i] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return len;
}

/* Appends s as a JSON string (quotes included). */
static void put_json_string(Line *l, const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t n = strlen(s);
    put(l, "\"", 1);
    for (size_t i = 0; i < n;) {
        unsigned c = p[i];
        char esc[8];
        if (c == '"' || c == '\\') {
            esc[0] = '\\', esc[1] = (char)c;
            put(l, esc, 2);
            i++;
        } else if (c == '\n') {
            put(l, "\\n", 2), i++;
        } else if (c == '\t') {
            put(l, "\\t", 2), i++;
        } else if (c < 0x20 || c == 0x7f) {
            snprintf(esc, sizeof esc, "\\u%04x", c);
            put(l, esc, 6);
            i++;
        } else {
            size_t k = utf8_len(p + i, n - i);
            if (k == 0) {
                put(l, "\\ufffd", 6);
                i++;
            } else {
                put(l, s + i, k);
                i += k;
            }
        }
    }
    put(l, "\"", 1);
}

static void put_time(Line *l)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char t[40];
    int n = snprintf(t, sizeof t, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900, tm.tm_mon + 1,
                     tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000);
    put(l, t, n > 0 ? (size_t)n : 0);
}

static void write_line(Line *l)
{
    l->buf[l->len++] = '\n';
    ssize_t w = write(STDERR_FILENO, l->buf, l->len);
    (void)w;
}

/* The text line: exactly as the engine has always written it. */
static void emit_text(LogLevel level, const char *msg)
{
    Line l = {.len = 0};
    put_time(&l);
    char lv[8];
    snprintf(lv, sizeof lv, " %-5s ", level_names[level]);
    puts_(&l, lv);
    size_t len = l.len;
    char *line = l.buf;
    const size_t cap = 1024; /* the historic line bound */
    for (const unsigned char *p = (const unsigned char *)msg; *p && len < cap - 6; p++) {
        if (*p >= 0x20 && *p != 0x7f && *p != '\\')
            line[len++] = (char)*p;
        else if (*p == '\n' || *p == '\\')
            len += (size_t)snprintf(line + len, 3, "\\%c", *p == '\n' ? 'n' : '\\');
        else
            len += (size_t)snprintf(line + len, 5, "\\x%02x", *p);
    }
    l.len = len;
    write_line(&l);
}

static void emit_json(LogLevel level, const char *msg, const char *job_id, const char *kind)
{
    Line l = {.len = 0};
    puts_(&l, "{\"ts\":\"");
    put_time(&l);
    puts_(&l, "\",\"level\":\"");
    puts_(&l, level_names[level]);
    puts_(&l, "\",\"msg\":");
    put_json_string(&l, msg);
    if (t_worker >= 0) {
        char w[32];
        snprintf(w, sizeof w, ",\"worker\":%d", t_worker);
        puts_(&l, w);
    }
    if (job_id) {
        puts_(&l, ",\"job_id\":");
        put_json_string(&l, job_id);
    }
    if (kind) {
        puts_(&l, ",\"kind\":");
        put_json_string(&l, kind);
    }
    l.buf[l.len++] = '}'; /* put() keeps room for this and the newline */
    write_line(&l);
}

static void vlog(LogLevel level, const char *job_id, const char *kind, const char *fmt, va_list ap)
{
    if ((int)level < atomic_load(&g_level))
        return;
    char msg[1024];
    vsnprintf(msg, sizeof msg, fmt, ap);
    if (atomic_load(&g_format) == LOG_FORMAT_JSON)
        emit_json(level, msg, job_id, kind);
    else
        emit_text(level, msg);
}

void log_msg(LogLevel level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vlog(level, NULL, NULL, fmt, ap);
    va_end(ap);
}

void log_job(LogLevel level, const char *job_id, const char *kind, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vlog(level, job_id, kind, fmt, ap);
    va_end(ap);
}
