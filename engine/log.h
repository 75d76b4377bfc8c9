/* log.h: leveled, timestamped log lines to stderr, as text or as one JSON object per line.
 * Logs name job ids, never job payloads. */
#ifndef WEAVER_LOG_H
#define WEAVER_LOG_H

typedef enum LogLevel { LOG_DEBUG = 0, LOG_INFO, LOG_WARN, LOG_ERROR } LogLevel;
typedef enum LogFormat { LOG_FORMAT_TEXT = 0, LOG_FORMAT_JSON } LogFormat;

void log_set_level(LogLevel level);
int log_level_parse(const char *name, LogLevel *out); /* 0, or -1 for an unknown name */
void log_set_format(LogFormat format);
int log_format_parse(const char *name, LogFormat *out); /* 0, or -1 for an unknown name */
/* The calling thread's worker index: its JSON lines carry "worker": index (< 0 = none). */
void log_set_worker(int index);

void log_msg(LogLevel level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* A line about one job: JSON lines also carry "job_id" and "kind" (either may be NULL). The text
 * line is the message alone, as log_msg writes it. */
void log_job(LogLevel level, const char *job_id, const char *kind, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#define LOG_D(...) log_msg(LOG_DEBUG, __VA_ARGS__)
#define LOG_I(...) log_msg(LOG_INFO, __VA_ARGS__)
#define LOG_W(...) log_msg(LOG_WARN, __VA_ARGS__)
#define LOG_E(...) log_msg(LOG_ERROR, __VA_ARGS__)

#endif
