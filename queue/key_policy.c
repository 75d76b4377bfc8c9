/* key_policy.c: which Redis keys a producer may name in a job (`reply_to`, `target`). The engine
 * owns every key under "<prefix>:" except the reply lists under "<prefix>:reply:"; a producer
 * never gets to write those, whatever the configured patterns say. Pure string rules: nothing
 * here talks to Redis. */
#include <fnmatch.h>
#include <stdio.h>
#include <string.h>

#include "queue/queue.h"

/* Whether key matches one of the space-separated glob patterns. */
static bool matches_any(const char *patterns, const char *key)
{
    char pat[257];
    for (const char *p = patterns ? patterns : ""; *p;) {
        while (*p == ' ')
            p++;
        size_t n = strcspn(p, " ");
        if (n > 0 && n < sizeof pat) {
            memcpy(pat, p, n);
            pat[n] = '\0';
            if (fnmatch(pat, key, 0) == 0)
                return true;
        }
        p += n;
    }
    return false;
}

static bool has_prefix(const char *s, const char *prefix, const char *sub)
{
    size_t n = strlen(prefix), m = strlen(sub);
    return strncmp(s, prefix, n) == 0 && s[n] == ':' && strncmp(s + n + 1, sub, m) == 0;
}

const char *queue_key_refusal(const QueueConfig *qc, QueueKeyUse use, const char *key, size_t len, char *buf,
                              size_t buflen)
{
    if (len == 0 || memchr(key, '\0', len))
        return "a key must be non-empty and must not contain NUL";
    bool reply_ns = has_prefix(key, qc->prefix, "reply:") && len > strlen(qc->prefix) + 7;
    if (has_prefix(key, qc->prefix, "") && !(use == QUEUE_KEY_REPLY && reply_ns)) {
        snprintf(buf, buflen, "keys under \"%s:\" belong to the engine%s", qc->prefix,
                 use == QUEUE_KEY_REPLY ? " (reply lists go under \"<prefix>:reply:\")" : "");
        return buf;
    }
    if (use == QUEUE_KEY_REPLY) {
        if (reply_ns || matches_any(qc->reply_patterns, key))
            return NULL;
        snprintf(buf, buflen, "reply lists must be under \"%s:reply:\" or match queue.reply_patterns", qc->prefix);
        return buf;
    }
    if (!qc->target_patterns || !qc->target_patterns[0])
        return "target hashes are disabled: the engine's queue.target_patterns names none";
    if (matches_any(qc->target_patterns, key))
        return NULL;
    return "the key matches none of queue.target_patterns";
}
