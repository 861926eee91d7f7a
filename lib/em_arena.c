/* SPDX-License-Identifier: Apache-2.0 */
/* Chunked bump allocation. */
#include "em_arena.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct em_chunk {
    struct em_chunk *next;
    size_t size, used;
    _Alignas(16) unsigned char data[];
} em_chunk_t;

struct em_arena {
    em_chunk_t *head;
    size_t next_size;
};

static em_chunk_t *chunk_new(size_t size) {
    em_chunk_t *c = malloc(sizeof(*c) + size);
    if (c) {
        c->next = NULL;
        c->size = size;
        c->used = 0;
    }
    return c;
}

em_arena_t *em_arena_new(size_t first_chunk) {
    em_arena_t *a = malloc(sizeof(*a));
    if (!a)
        return NULL;
    if (first_chunk < 256)
        first_chunk = 256;
    a->head = chunk_new(first_chunk);
    if (!a->head) {
        free(a);
        return NULL;
    }
    a->next_size = first_chunk * 2;
    return a;
}

void em_arena_destroy(em_arena_t *a) {
    if (!a)
        return;
    for (em_chunk_t *c = a->head, *next; c; c = next) {
        next = c->next;
        free(c);
    }
    free(a);
}

void *em_arena_alloc(em_arena_t *a, size_t n, int zero) {
    size_t need = (n + 15) & ~(size_t)15;
    em_chunk_t *c = a->head;
    if (c->size - c->used < need) {
        size_t size = a->next_size > need ? a->next_size : need;
        em_chunk_t *nc = chunk_new(size);
        if (!nc)
            return NULL;
        nc->next = c;
        a->head = nc;
        a->next_size = size * 2;
        c = nc;
    }
    void *p = c->data + c->used;
    c->used += need;
    if (zero)
        memset(p, 0, n);
    return p;
}

static void *pb_alloc(void *data, size_t n) { return em_arena_alloc(data, n ? n : 1, 0); }
static void pb_free(void *data, void *p) {}

ProtobufCAllocator em_arena_pb_allocator(em_arena_t *a) {
    ProtobufCAllocator al = {.alloc = pb_alloc, .free = pb_free, .allocator_data = a};
    return al;
}
