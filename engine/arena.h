/* arena.h: a per-worker bump allocator for result text, reset after every batch. Blocks are
 * kept across resets, so a steady workload stops allocating once it reaches its high-water
 * mark. Pointers stay valid until the next reset. */
#ifndef WEAVER_ARENA_H
#define WEAVER_ARENA_H

#include <stdarg.h>
#include <stddef.h>

typedef struct ArenaBlock ArenaBlock;

typedef struct Arena {
    ArenaBlock *head;     /* blocks in use order */
    ArenaBlock *current;
} Arena;

void *arena_alloc(Arena *a, size_t n);            /* NULL when out of memory */
char *arena_strdup(Arena *a, const char *s);
char *arena_vprintf(Arena *a, const char *fmt, va_list ap);
void arena_reset(Arena *a);
/* Rewinds like arena_reset and releases the blocks beyond the first `keep` bytes, so one huge
 * batch does not pin its high-water mark for the life of the worker. */
void arena_trim(Arena *a, size_t keep);
void arena_free(Arena *a);

#endif
