/*
 * The pool of touched memory chunks for page logs (chunks.h).
 *
 * Memory: every chunk is a malloc block of AUS_CHUNK_BYTES. The pool (the
 * static `ready` array and the one `partial` chunk being touched) owns the
 * chunks in it; aus_chunk_take hands one to the caller (a page log's arena,
 * pagelog.c), which owns it until aus_chunk_give returns it to the pool, or
 * to free() when the pool is full. Chunks in the pool live until the process
 * ends: the pool is process-wide and never torn down. Python never sees a
 * chunk.
 */
#define _POSIX_C_SOURCE 200809L
#include "chunks.h"

#include <pthread.h>
#include <stdlib.h>

#include "internal.h"

#define TOUCH_STRIDE 4096 /* one write per page (or more, with larger pages) */

/* A fill step touches whole strides and a chunk whole steps, so `done` lands
 * on AUS_CHUNK_BYTES exactly. */
_Static_assert(AUS_CHUNK_STEP_BYTES % TOUCH_STRIDE == 0, "a step is whole strides");
_Static_assert(AUS_CHUNK_BYTES % AUS_CHUNK_STEP_BYTES == 0, "a chunk is whole steps");

static pthread_mutex_t pool_mutex = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t pool_once = PTHREAD_ONCE_INIT;
static void *ready[AUS_CHUNKS_READY_MAX];
static size_t ready_count;
/* The chunk being touched and how much of it is done; a filler takes it out
 * (filling set) and puts it back after one step, so two never share it. */
static unsigned char *partial;
static size_t partial_done;
static int filling;

static void lock_pool(void) { pthread_mutex_lock(&pool_mutex); }
static void unlock_pool(void) { pthread_mutex_unlock(&pool_mutex); }

/* A fork while another thread holds the lock would leave it held forever in
 * the child: hold it across fork and release it on both sides. A filler
 * touching a chunk outside the lock does not exist in the child: its chunk is
 * lost there, and filling may start again. */
static void after_fork_in_child(void) {
    filling = 0;
    unlock_pool();
}

static void register_fork_handlers(void) {
    (void)pthread_atfork(lock_pool, unlock_pool, after_fork_in_child);
}

void *aus_chunk_take(void) {
    pthread_once(&pool_once, register_fork_handlers);
    void *chunk = NULL;
    lock_pool();
    AUS_ASSERT(ready_count <= AUS_CHUNKS_READY_MAX);
    if (ready_count) chunk = ready[--ready_count];
    unlock_pool();
    return chunk ? chunk : malloc(AUS_CHUNK_BYTES);
}

void aus_chunk_give(void *chunk) {
    if (!chunk) return;
    lock_pool();
    AUS_ASSERT(ready_count <= AUS_CHUNKS_READY_MAX);
    if (ready_count < AUS_CHUNKS_READY_MAX) {
        ready[ready_count++] = chunk;
        chunk = NULL;
    }
    unlock_pool();
    free(chunk);
}

int aus_chunks_fill_step(void) {
    pthread_once(&pool_once, register_fork_handlers);
    lock_pool();
    if (filling || ready_count >= AUS_CHUNKS_READY_MAX) {
        unlock_pool();
        return 0;
    }
    filling = 1;
    unsigned char *chunk = partial;
    size_t done = partial_done;
    partial = NULL;
    unlock_pool();

    if (!chunk) {
        chunk = malloc(AUS_CHUNK_BYTES);
        done = 0;
    }
    int worked = chunk != NULL;
    if (chunk) {
        size_t end = done + AUS_CHUNK_STEP_BYTES;
        AUS_ASSERT(end <= AUS_CHUNK_BYTES); /* a partial chunk has a step left */
        for (; done < end; done += TOUCH_STRIDE) ((volatile unsigned char *)chunk)[done] = 0;
    }

    lock_pool();
    AUS_ASSERT(filling && partial == NULL); /* this filler alone had the partial chunk */
    filling = 0;
    if (chunk && done < AUS_CHUNK_BYTES) {
        partial = chunk;
        partial_done = done;
        chunk = NULL;
    } else if (chunk && ready_count < AUS_CHUNKS_READY_MAX) {
        ready[ready_count++] = chunk;
        chunk = NULL;
    }
    unlock_pool();
    free(chunk); /* the pool filled meanwhile (chunks given back): not needed */
    return worked;
}

size_t aus_chunks_ready(void) {
    lock_pool();
    size_t count = ready_count;
    unlock_pool();
    return count;
}
