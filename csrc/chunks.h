/*
 * Memory for page logs, touched before it is needed.
 *
 * A page log keeps a copy of every record it indexes, so a stream of commits
 * keeps asking for memory the process never used. The first write to each
 * such page faults, and on a virtual machine a fault on fresh memory costs
 * about half a microsecond per kilobyte: some 60 us for the 116 KiB that six
 * replicas index per commit of 100 rows, on the commit's path.
 *
 * So page logs take their memory in chunks of AUS_CHUNK_BYTES from a small
 * process-wide pool, and a thread with time on its hands (the flusher, while
 * it polls for the next flush, flush.c) touches fresh chunks for the pool
 * ahead of need, one step of AUS_CHUNK_STEP_BYTES at a time so that it stays
 * quick to answer. The pool holds at most AUS_CHUNKS_READY_MAX chunks; a
 * chunk given back (a page log freed) refills it too. When the pool is empty a
 * chunk is taken straight from malloc, and the page log pays the faults as
 * before. Contents are never zeroed: a chunk holds whatever it held.
 *
 * Thread-safe; safe across fork (the pool's lock is held over fork and
 * released in both processes).
 *
 * Read by the cffi build script as cdef: declarations only.
 */
#ifndef AURORA_CHUNKS_H
#define AURORA_CHUNKS_H

#include <stddef.h>

#define AUS_CHUNK_BYTES 262144
#define AUS_CHUNK_STEP_BYTES 16384
#define AUS_CHUNKS_READY_MAX 8

/* A chunk of AUS_CHUNK_BYTES (touched if the pool had one), or NULL with no
 * memory. Release it with aus_chunk_give. */
void *aus_chunk_take(void);
/* Gives a chunk from aus_chunk_take back: to the pool, or to free() when full. */
void aus_chunk_give(void *chunk);
/* Touches the next AUS_CHUNK_STEP_BYTES of a chunk on its way into the pool.
 * Returns 1 if it did some work, 0 if the pool is full (or another thread is
 * filling it, or no memory). */
int aus_chunks_fill_step(void);
/* Chunks in the pool, ready to take. */
size_t aus_chunks_ready(void);

#endif
