/* queue_internal.h: the Queue object and shared helpers, for the queue module's own files only. */
#ifndef WEAVER_QUEUE_INTERNAL_H
#define WEAVER_QUEUE_INTERNAL_H

#include <hiredis/hiredis.h>

#include "queue/queue.h"

struct Queue {
    redisContext *ctx;
    RedisConfig rc;
    QueueConfig qc;
    char consumer[128];
    char stream[2][192];
    char dead[192];
    char finish_sha[41];
    char reclaim_cursor[2][QUEUE_ENTRY_ID_MAX];
    char password[256];
    char errstr[256];
};

/* Sets errstr and returns code. */
int queue_set_err(Queue *q, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* NULL reply: connection lost (ctx dropped, QUEUE_ECONN); error reply: QUEUE_EREPLY. */
int queue_check_reply(Queue *q, redisReply *r, const char *what);
/* QUEUE_ECONN with a message when there is no live connection. */
int queue_ensure_ctx(Queue *q);

#endif
