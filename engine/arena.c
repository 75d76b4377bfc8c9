/* arena.c: bump allocation over a list of blocks; reset rewinds, free releases. */
#include "engine/arena.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ARENA_BLOCK_MIN (64 * 1024)

struct ArenaBlock {
    ArenaBlock *next;
    size_t cap, used;
    _Alignas(16) unsigned char data[];
};

void *arena_alloc(Arena *a, size_t n)
{
    n = (n + 15) & ~(size_t)15;
    /* Walk forward through kept blocks before growing the list. */
    while (a->current && a->current->used + n > a->current->cap && a->current->next) {
        a->current = a->current->next;
        a->current->used = 0;
    }
    if (!a->current || a->current->used + n > a->current->cap) {
        size_t cap = n > ARENA_BLOCK_MIN ? n : ARENA_BLOCK_MIN;
        ArenaBlock *b = malloc(sizeof *b + cap);
        if (!b)
            return NULL;
        b->next = NULL;
        b->cap = cap;
        b->used = 0;
        if (a->current) {
            b->next = a->current->next;
            a->current->next = b;
        } else {
            a->head = b;
        }
        a->current = b;
    }
    void *p = a->current->data + a->current->used;
    a->current->used += n;
    return p;
}

char *arena_strdup(Arena *a, const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = arena_alloc(a, n);
    if (p)
        memcpy(p, s, n);
    return p;
}

char *arena_vprintf(Arena *a, const char *fmt, va_list ap)
{
    va_list copy;
    va_copy(copy, ap);
    int n = vsnprintf(NULL, 0, fmt, copy);
    va_end(copy);
    if (n < 0)
        return NULL;
    char *p = arena_alloc(a, (size_t)n + 1);
    if (p)
        vsnprintf(p, (size_t)n + 1, fmt, ap);
    return p;
}

void arena_reset(Arena *a)
{
    a->current = a->head;
    if (a->current)
        a->current->used = 0;
}

void arena_trim(Arena *a, size_t keep)
{
    size_t kept = 0;
    ArenaBlock **pp = &a->head;
    while (*pp && kept + (*pp)->cap <= keep) {
        kept += (*pp)->cap;
        pp = &(*pp)->next;
    }
    for (ArenaBlock *b = *pp; b;) {
        ArenaBlock *next = b->next;
        free(b);
        b = next;
    }
    *pp = NULL;
    a->current = a->head;
    if (a->current)
        a->current->used = 0;
}

void arena_free(Arena *a)
{
    for (ArenaBlock *b = a->head; b;) {
        ArenaBlock *next = b->next;
        free(b);
        b = next;
    }
    a->head = a->current = NULL;
}
