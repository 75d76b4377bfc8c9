/* queue_internal.h: the Queue object and shared helpers, for the queue module's own files only. */
#ifndef WEAVER_QUEUE_INTERNAL_H
#define WEAVER_QUEUE_INTERNAL_H

#include <hiredis/hiredis.h>

#include "queue/queue.h"

struct Queue {
    redisContext *ctx;
    RedisConfig rc;
    QueueConfig qc;
    char consumer[QUEUE_CONSUMER_MAX];
    char stream[2][QUEUE_KEY_MAX];
    char dead[QUEUE_KEY_MAX];
    char finish_sha[41];
    char reclaim_cursor[2][QUEUE_ENTRY_ID_MAX];
    char password[256];
    char errstr[256];
    /* Replies to commands sent ahead (queue_read_send, queue_finish_send), oldest first: `owed`
     * are still to be taken, and the first `stashed` of those are already off the socket (read
     * so that a command sent meanwhile gets its own reply; NULL = lost with the connection). */
    redisReply **ahead;
    int ahead_cap, owed, stashed;
};

/* Sets errstr and returns code. */
int queue_set_err(Queue *q, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* NULL reply: connection lost (ctx dropped, QUEUE_ECONN); error reply: QUEUE_EREPLY. */
int queue_check_reply(Queue *q, redisReply *r, const char *what);
/* QUEUE_ECONN with a message when there is no live connection. */
int queue_ensure_ctx(Queue *q);
/* snprintf into a key buffer of len bytes: QUEUE_OK, or QUEUE_EARG with errstr naming the key
 * when it would not fit (buf is then ""): keys are never cut short. */
int queue_format_key(Queue *q, char *buf, size_t len, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
/* The same without a Queue to report on: true when the whole key fit. */
bool queue_key_fits(char *buf, size_t len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#endif
