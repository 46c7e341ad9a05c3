/* The pool of touched memory chunks for page logs (chunks.h). */
#define _POSIX_C_SOURCE 200809L
#include "chunks.h"

#include <pthread.h>
#include <stdlib.h>

#define TOUCH_STRIDE 4096 /* one write per page (or more, with larger pages) */

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
    if (ready_count) chunk = ready[--ready_count];
    unlock_pool();
    return chunk ? chunk : malloc(AUS_CHUNK_BYTES);
}

void aus_chunk_give(void *chunk) {
    if (!chunk) return;
    lock_pool();
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
        for (; done < end; done += TOUCH_STRIDE) ((volatile unsigned char *)chunk)[done] = 0;
    }

    lock_pool();
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
