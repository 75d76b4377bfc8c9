/* log.c: leveled log lines to stderr, one write per line so threads do not interleave. Control
 * characters in a message are escaped (\n, \xNN): text a producer controls (field names, keys,
 * ids from error messages) can never forge or split a log line. */
#include "engine/log.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static _Atomic int g_level = LOG_INFO;
static const char *const level_names[] = {"debug", "info", "warn", "error"};

void log_set_level(LogLevel level) { atomic_store(&g_level, (int)level); }

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

void log_msg(LogLevel level, const char *fmt, ...)
{
    if ((int)level < atomic_load(&g_level))
        return;
    char line[1024];
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    int n = snprintf(line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %-5s ", tm.tm_year + 1900,
                     tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000,
                     level_names[level]);
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    size_t len = (size_t)(n < 0 ? 0 : n);
    for (const unsigned char *p = (const unsigned char *)msg; *p && len < sizeof line - 6; p++) {
        if (*p >= 0x20 && *p != 0x7f && *p != '\\')
            line[len++] = (char)*p;
        else if (*p == '\n' || *p == '\\')
            len += (size_t)snprintf(line + len, 3, "\\%c", *p == '\n' ? 'n' : '\\');
        else
            len += (size_t)snprintf(line + len, 5, "\\x%02x", *p);
    }
    line[len++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, len);
    (void)w;
}
