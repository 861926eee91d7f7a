/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A bump allocator freed all at once: one batch's decoded request and its
 * bookkeeping live in a few chunks instead of hundreds of malloc'd pieces,
 * and go with one call when the batch is answered. Not thread-safe: one
 * owner allocates. Also a ProtobufCAllocator so protobuf-c unpacks into it.
 */
#ifndef EM_ARENA_H
#define EM_ARENA_H

#include <protobuf-c/protobuf-c.h>
#include <stddef.h>

typedef struct em_arena em_arena_t;

/* first_chunk: the first chunk's size (later ones double). NULL when out of memory. */
em_arena_t *em_arena_new(size_t first_chunk);
void em_arena_destroy(em_arena_t *a);

/* n bytes, 16-byte aligned, zeroed when zero is set; NULL when out of memory. */
void *em_arena_alloc(em_arena_t *a, size_t n, int zero);

/* protobuf-c allocates from the arena; its frees do nothing. */
ProtobufCAllocator em_arena_pb_allocator(em_arena_t *a);

#endif
