/*
 * One flush for many files, on the caller's thread or a thread of its own (flush.h).
 *
 * Memory: aus_flush allocates nothing; fds, whole and errors are the
 * caller's for the call. A flusher is calloc'd by aus_flusher_new and freed,
 * with everything it holds, by aus_flusher_free (Python ties that to the
 * Flusher object with ffi.gc, native/flush.py). It owns copies of the
 * arguments of the flush in flight (fds, whole, errors: grown by start, read
 * by the thread only while the flush is QUEUED or RUNNING) and two arrays of
 * kicked descriptors: the callers append to `kicks` under the mutex, the
 * thread reads `kicks_taken` without it, and they swap under the mutex. No
 * pointer into Python memory is kept past a call.
 */
#if defined(__linux__)
#define _GNU_SOURCE /* syncfs, sync_file_range */
#else
#define _POSIX_C_SOURCE 200809L
#endif
#include "flush.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "chunks.h"
#include "internal.h"
#include "status.h"

static int errno_of(int result) { return result == 0 ? 0 : (errno ? errno : EIO); }

static void flush_each(const int *fds, size_t count, int *errors) {
    for (size_t i = 0; i < count; i++) errors[i] = errno_of(fdatasync(fds[i]));
}

#if defined(__linux__)
static void flush_syncfs(const int *fds, size_t count, int *errors) {
    int error = errno_of(syncfs(fds[0]));
    for (size_t i = 0; i < count; i++) errors[i] = error;
}

static void flush_writeback(const int *fds, const uint8_t *whole, size_t count,
                            int *errors) {
    const unsigned int wait_all = SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE |
                                  SYNC_FILE_RANGE_WAIT_AFTER;
    size_t last = count; /* the data-only file whose fdatasync flushes the device */
    AUS_ASSERT(count > 0);
    for (size_t i = 0; i < count; i++) {
        errors[i] = 0;
        if (whole[i]) continue;
        last = i;
        /* Start every writeback first, so the device sees them together. */
        errors[i] = errno_of(sync_file_range(fds[i], 0, 0, SYNC_FILE_RANGE_WRITE));
    }
    for (size_t i = 0; i < count; i++)
        if (!whole[i] && i != last && !errors[i])
            errors[i] = errno_of(sync_file_range(fds[i], 0, 0, wait_all));
    for (size_t i = 0; i < count; i++)
        if (whole[i]) errors[i] = errno_of(fdatasync(fds[i]));
    if (last == count) return;
    int error = errno_of(fdatasync(fds[last]));
    if (!error) return;
    /* The device flush failed: no data-only file is known durable. */
    for (size_t i = 0; i < count; i++)
        if (!whole[i] && !errors[i]) errors[i] = error;
}
#endif

static int method_known(int method) {
    return method == AUS_FLUSH_SYNCFS || method == AUS_FLUSH_WRITEBACK ||
           method == AUS_FLUSH_EACH;
}

int aus_flush(const int *fds, const uint8_t *whole, size_t count, int method,
              int *errors) {
    if (!method_known(method) || count == 0 || count > AUS_FLUSH_FILES_MAX)
        return AUS_E_ARGUMENT;
#if defined(__linux__)
    if (method == AUS_FLUSH_SYNCFS) {
        flush_syncfs(fds, count, errors);
        return AUS_OK;
    }
    if (method == AUS_FLUSH_WRITEBACK) {
        flush_writeback(fds, whole, count, errors);
        return AUS_OK;
    }
#else
    (void)whole;
#endif
    flush_each(fds, count, errors);
    return AUS_OK;
}

/* --- the flusher thread --------------------------------------------------------- */

enum { IDLE, QUEUED, RUNNING, DONE, STOPPING };


struct aus_flusher {
    pthread_mutex_t mutex;
    pthread_cond_t changed;
    pthread_t thread;
    int started;
    pid_t owner;          /* the process that started the thread */
    long long poll_ns;    /* how long to poll before sleeping; 0: never poll */
    _Atomic int state;    /* written under the mutex; read without it while polling */
    int primed;           /* a flush is coming: poll instead of sleeping */
    int method;
    size_t count, capacity;
    int *fds;
    uint8_t *whole;
    int *errors;
    /* Files written since the last look (aus_flusher_kick), and the thread's copy. */
    _Atomic int kicked;
    int *kicks; /* the callers' array, grown by them under the mutex */
    size_t kick_count, kick_capacity;
    int *kicks_taken; /* the thread's, read by it without the mutex: never grown */
    size_t kicks_taken_capacity;
};

/* One step of a polling loop: a short pause, and from the hundredth on a yield,
 * so that threads with work to do (committers queueing the next group) run. */
static void relax(unsigned int spins) {
    if (spins > 100) {
        sched_yield();
        return;
    }
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

static long long monotonic_nanoseconds(void) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (long long)now.tv_sec * 1000000000LL + now.tv_nsec;
}

/* The thread has something to do: a flush queued, a file kicked, or stop. */
static int work_arrived(aus_flusher *flusher) {
    int state = atomic_load_explicit(&flusher->state, memory_order_acquire);
    return state == QUEUED || state == STOPPING ||
           atomic_load_explicit(&flusher->kicked, memory_order_relaxed);
}

/* The flush a caller waits for is no longer queued or running. */
static int flush_ended(aus_flusher *flusher) {
    int state = atomic_load_explicit(&flusher->state, memory_order_acquire);
    return state != QUEUED && state != RUNNING;
}

/* Polls until ready(flusher), for poll_ns at most; the caller then checks under
 * the mutex, and sleeps if it must. With fill set, each step that has nothing
 * to do touches memory for page logs instead of pausing (chunks.h). */
static void poll_until(aus_flusher *flusher, int (*ready)(aus_flusher *), int fill) {
    if (flusher->poll_ns == 0) return;
    long long deadline = monotonic_nanoseconds() + flusher->poll_ns;
    for (unsigned int spins = 1;; spins++) {
        if (ready(flusher)) return;
        if (fill) (void)aus_chunks_fill_step();
        relax(spins); /* yields too, after a while: other threads may need the CPU */
        if (spins % 64 == 0 && monotonic_nanoseconds() > deadline) return;
    }
}

/* The flusher's thread, between flushes: its idle time fills the chunk pool. */
static void poll_for_work(aus_flusher *flusher) { poll_until(flusher, work_arrived, 1); }

/* Starts the write-back of the kicked files; called with the mutex held, returns
 * with it held. Errors are left to the flush, which meets them again. */
static void write_back_kicked(aus_flusher *flusher) {
    AUS_ASSERT(flusher->kick_count <= flusher->kick_capacity);
    int *taken = flusher->kicks;
    size_t count = flusher->kick_count, capacity = flusher->kick_capacity;
    flusher->kicks = flusher->kicks_taken; /* the callers append to the other array */
    flusher->kick_capacity = flusher->kicks_taken_capacity;
    flusher->kicks_taken = taken;
    flusher->kicks_taken_capacity = capacity;
    flusher->kick_count = 0;
    atomic_store_explicit(&flusher->kicked, 0, memory_order_relaxed);
    pthread_mutex_unlock(&flusher->mutex);
#if defined(__linux__)
    for (size_t i = 0; i < count; i++)
        (void)sync_file_range(taken[i], 0, 0, SYNC_FILE_RANGE_WRITE);
#else
    (void)taken;
    (void)count;
#endif
    pthread_mutex_lock(&flusher->mutex);
}

static void *flusher_main(void *argument) {
    aus_flusher *flusher = argument;
    pthread_mutex_lock(&flusher->mutex);
    for (;;) {
        while (flusher->state != QUEUED && flusher->state != STOPPING && !flusher->primed &&
               !flusher->kick_count)
            pthread_cond_wait(&flusher->changed, &flusher->mutex);
        if (flusher->state == STOPPING) break;
        if (flusher->kick_count && flusher->state != QUEUED) {
            /* Written files start on their way to the device while the caller
             * works on; the flush then finds less to write. */
            write_back_kicked(flusher);
            pthread_mutex_unlock(&flusher->mutex);
            poll_for_work(flusher);
            pthread_mutex_lock(&flusher->mutex);
            continue;
        }
        if (flusher->state != QUEUED) {
            /* Primed: a caller is about to start a flush. Polling saves the
             * latency of waking a sleeping thread (large on virtual machines). */
            flusher->primed = 0;
            pthread_mutex_unlock(&flusher->mutex);
            poll_for_work(flusher);
            pthread_mutex_lock(&flusher->mutex);
            continue;
        }
        AUS_ASSERT(flusher->count > 0 && flusher->count <= flusher->capacity);
        flusher->state = RUNNING;
        pthread_mutex_unlock(&flusher->mutex);
        /* The arguments were checked by start; only this thread touches them now. */
        (void)aus_flush(flusher->fds, flusher->whole, flusher->count, flusher->method,
                        flusher->errors);
        pthread_mutex_lock(&flusher->mutex);
        atomic_store_explicit(&flusher->state, DONE, memory_order_release);
        pthread_cond_broadcast(&flusher->changed);
        /* Commits come in streams: poll for the next flush a while before sleeping. */
        pthread_mutex_unlock(&flusher->mutex);
        poll_for_work(flusher);
        pthread_mutex_lock(&flusher->mutex);
    }
    pthread_mutex_unlock(&flusher->mutex);
    return NULL;
}

/* Starts the thread if this process has none yet; AUS_E_ARGUMENT after a fork. */
static int ensure_thread(aus_flusher *flusher) {
    if (flusher->started) return flusher->owner == getpid() ? AUS_OK : AUS_E_ARGUMENT;
    if (pthread_create(&flusher->thread, NULL, flusher_main, flusher) != 0)
        return AUS_E_NOMEM;
    flusher->started = 1;
    flusher->owner = getpid();
    return AUS_OK;
}

aus_flusher *aus_flusher_new(long long poll_ns) {
    if (poll_ns < 0) return NULL;
    aus_flusher *flusher = calloc(1, sizeof *flusher);
    if (!flusher) return NULL;
    flusher->poll_ns = poll_ns;
    if (pthread_mutex_init(&flusher->mutex, NULL) != 0) {
        free(flusher);
        return NULL;
    }
    if (pthread_cond_init(&flusher->changed, NULL) != 0) {
        pthread_mutex_destroy(&flusher->mutex);
        free(flusher);
        return NULL;
    }
    flusher->state = IDLE;
    return flusher;
}

void aus_flusher_free(aus_flusher *flusher) {
    if (!flusher) return;
    if (flusher->started && flusher->owner == getpid()) {
        pthread_mutex_lock(&flusher->mutex);
        while (flusher->state == QUEUED || flusher->state == RUNNING)
            pthread_cond_wait(&flusher->changed, &flusher->mutex);
        flusher->state = STOPPING;
        pthread_cond_broadcast(&flusher->changed);
        pthread_mutex_unlock(&flusher->mutex);
        pthread_join(flusher->thread, NULL);
    }
    /* In a forked child the thread does not exist: nothing to stop or destroy. */
    if (!flusher->started || flusher->owner == getpid()) {
        pthread_cond_destroy(&flusher->changed);
        pthread_mutex_destroy(&flusher->mutex);
    }
    free(flusher->fds);
    free(flusher->whole);
    free(flusher->errors);
    free(flusher->kicks);
    free(flusher->kicks_taken);
    free(flusher);
}

/* Room for count files; called with the flusher idle (only the caller touches it). */
static int reserve(aus_flusher *flusher, size_t count) {
    if (count <= flusher->capacity) return AUS_OK;
    size_t capacity = flusher->capacity ? flusher->capacity : 16;
    while (capacity < count) capacity *= 2;
    int *fds = malloc(capacity * sizeof *fds);
    uint8_t *whole = malloc(capacity);
    int *errors = malloc(capacity * sizeof *errors);
    if (!fds || !whole || !errors) {
        free(fds);
        free(whole);
        free(errors);
        return AUS_E_NOMEM;
    }
    free(flusher->fds);
    free(flusher->whole);
    free(flusher->errors);
    flusher->fds = fds;
    flusher->whole = whole;
    flusher->errors = errors;
    flusher->capacity = capacity;
    return AUS_OK;
}

int aus_flusher_start(aus_flusher *flusher, const int *fds, const uint8_t *whole,
                      size_t count, int method) {
    if (!method_known(method) || count == 0 || count > AUS_FLUSH_FILES_MAX)
        return AUS_E_ARGUMENT;
    if (flusher->started && flusher->owner != getpid()) return AUS_E_ARGUMENT;
    pthread_mutex_lock(&flusher->mutex);
    int state = flusher->state;
    pthread_mutex_unlock(&flusher->mutex);
    if (state != IDLE) return AUS_E_ARGUMENT;
    /* Idle: the thread reads nothing but the state until it sees QUEUED. */
    if (reserve(flusher, count) != AUS_OK) return AUS_E_NOMEM;
    AUS_ASSERT(count <= flusher->capacity);
    memcpy(flusher->fds, fds, count * sizeof *fds);
    memcpy(flusher->whole, whole, count);
    flusher->count = count;
    flusher->method = method;
    int status = ensure_thread(flusher);
    if (status != AUS_OK) return status;
    pthread_mutex_lock(&flusher->mutex);
    atomic_store_explicit(&flusher->state, QUEUED, memory_order_release);
    flusher->primed = 0; /* the flush it announced is here */
    pthread_cond_broadcast(&flusher->changed); /* no system call unless it sleeps */
    pthread_mutex_unlock(&flusher->mutex);
    return AUS_OK;
}

int aus_flusher_kick(aus_flusher *flusher, int fd) {
    if (ensure_thread(flusher) != AUS_OK) return AUS_E_ARGUMENT;
    pthread_mutex_lock(&flusher->mutex);
    if (flusher->kick_count == flusher->kick_capacity) {
        /* Only the callers' array grows: the thread may be reading the other one. */
        size_t capacity = flusher->kick_capacity ? flusher->kick_capacity * 2 : 16;
        int *kicks = realloc(flusher->kicks, capacity * sizeof *kicks);
        if (!kicks) {
            pthread_mutex_unlock(&flusher->mutex);
            return AUS_E_NOMEM; /* a hint lost: the flush still writes the file */
        }
        flusher->kicks = kicks;
        flusher->kick_capacity = capacity;
    }
    for (size_t i = 0; i < flusher->kick_count; i++)
        if (flusher->kicks[i] == fd) {
            pthread_mutex_unlock(&flusher->mutex);
            return AUS_OK;
        }
    AUS_ASSERT(flusher->kick_count < flusher->kick_capacity);
    flusher->kicks[flusher->kick_count++] = fd;
    atomic_store_explicit(&flusher->kicked, 1, memory_order_relaxed);
    pthread_cond_broadcast(&flusher->changed); /* no system call unless it sleeps */
    pthread_mutex_unlock(&flusher->mutex);
    return AUS_OK;
}

int aus_flusher_prime(aus_flusher *flusher) {
    if (flusher->poll_ns == 0) return AUS_OK; /* it would not poll: nothing to gain */
    if (ensure_thread(flusher) != AUS_OK) return AUS_E_ARGUMENT;
    pthread_mutex_lock(&flusher->mutex);
    if (flusher->state == IDLE && !flusher->primed) {
        flusher->primed = 1;
        pthread_cond_broadcast(&flusher->changed);
    }
    pthread_mutex_unlock(&flusher->mutex);
    return AUS_OK;
}

int aus_flusher_wait(aus_flusher *flusher, int *errors, size_t count) {
    if (flusher->started && flusher->owner == getpid()) poll_until(flusher, flush_ended, 0);
    pthread_mutex_lock(&flusher->mutex);
    int pending = flusher->state == QUEUED || flusher->state == RUNNING ||
                  flusher->state == DONE;
    if (!pending || count != flusher->count || flusher->owner != getpid()) {
        pthread_mutex_unlock(&flusher->mutex);
        return AUS_E_ARGUMENT;
    }
    while (flusher->state != DONE) pthread_cond_wait(&flusher->changed, &flusher->mutex);
    AUS_ASSERT(count == flusher->count && count <= flusher->capacity);
    memcpy(errors, flusher->errors, count * sizeof *errors);
    flusher->state = IDLE;
    pthread_mutex_unlock(&flusher->mutex);
    return AUS_OK;
}
