/*
 * Making several files of one file system durable with one flush, and doing
 * it on a thread of its own so the caller can work while the device writes.
 *
 * A flush covers a list of open files, each marked "whole" when its size or
 * allocation changed since it was last flushed (its metadata must be made
 * durable too) or "data only" when only bytes inside already written blocks
 * changed (overwrites of a preallocated, zero-filled log). Methods:
 *
 * AUS_FLUSH_SYNCFS     syncfs(2) of the first file's file system: everything
 *                      dirty on it, data and metadata, with one device flush.
 * AUS_FLUSH_WRITEBACK  starts writeback of every data-only file, waits for it
 *                      (sync_file_range), fdatasyncs every whole file, then
 *                      fdatasyncs the last data-only file: that call's device
 *                      cache flush comes after every other file's writeback
 *                      completed, so it covers them all. Sound only where an
 *                      overwrite of written blocks needs no metadata and
 *                      fdatasync always flushes the device cache (ext4 without
 *                      data=journal or the data-journal flag, XFS); the caller
 *                      chooses and marks a data-journaled file whole (flush.py).
 * AUS_FLUSH_EACH       fdatasync of every file (portable).
 *
 * Where syncfs or sync_file_range is missing (not Linux), the methods that
 * use them fall back to AUS_FLUSH_EACH. errors[i] receives 0 or the errno
 * that the flush of fds[i] met; an error of the final, shared device flush
 * is given to every data-only file it covered.
 *
 * Read by the cffi build script as cdef: declarations only.
 */
#ifndef AURORA_FLUSH_H
#define AURORA_FLUSH_H

#include <stddef.h>
#include <stdint.h>

#include "status.h" /* the AUS_E_* these functions return */

#define AUS_FLUSH_SYNCFS 1
#define AUS_FLUSH_WRITEBACK 2
#define AUS_FLUSH_EACH 3
#define AUS_FLUSH_FILES_MAX 1048576

/*
 * Flushes fds[0..count) on the calling thread, as the method says; whole[i]
 * nonzero marks a whole file. Returns AUS_OK once every file was tried (the
 * outcome per file is in errors), AUS_E_ARGUMENT for an unknown method or a
 * count of 0 or above AUS_FLUSH_FILES_MAX, with errors untouched.
 */
int aus_flush(const int *fds, const uint8_t *whole, size_t count, int method,
              int *errors);

/*
 * A flusher runs one flush at a time on a thread it starts on first use.
 * aus_flusher_start copies the arguments and returns at once; while the flush
 * runs the caller may do anything but start another; aus_flusher_wait blocks
 * until it is done and copies out errors (count must match). start returns
 * AUS_E_ARGUMENT for bad arguments (as aus_flush), a flush already in flight,
 * or a flusher used by a process other than the one that first started it
 * (threads do not survive fork): the caller then flushes with aus_flush.
 * AUS_E_NOMEM if the copy or the thread cannot be made. wait returns
 * AUS_E_ARGUMENT with no flush in flight or a count that differs.
 *
 * Waking a sleeping thread costs tens of microseconds on a virtual machine,
 * twice per flush. So the thread, after a flush (commits come in streams) or
 * when primed, polls for the next one for up to poll_ns before it sleeps, and
 * wait polls for the end of the flush as long before it sleeps. Polling
 * pauses, then yields the CPU at every step, so runnable threads (committers
 * forming the next group) are not held up. The thread's polling also fills
 * the pool of touched memory for page logs, a step at a time (chunks.h). One caller at a time: start,
 * prime and free must not race each other; wait may run beside prime.
 */
typedef struct aus_flusher aus_flusher;

/* poll_ns: how long the thread polls for work, and wait for the flush's end,
 * before sleeping (0: never poll; priming then does nothing). NULL for a
 * negative poll_ns or no memory. */
aus_flusher *aus_flusher_new(long long poll_ns);
/* Waits for a flush in flight, stops the thread; NULL is ignored. */
void aus_flusher_free(aus_flusher *flusher);
int aus_flusher_start(aus_flusher *flusher, const int *fds, const uint8_t *whole,
                      size_t count, int method);
int aus_flusher_wait(aus_flusher *flusher, int *errors, size_t count);

/*
 * Says a flush will start soon: the thread wakes now and polls for it (up to
 * poll_ns, then sleeps again), so aus_flusher_start neither pays for waking it
 * nor waits for it to be scheduled. Returns AUS_E_ARGUMENT after a fork, as
 * start does (nothing to prime), AUS_E_NOMEM if the thread cannot be made.
 */
int aus_flusher_prime(aus_flusher *flusher);

/*
 * Says fd was just written and will be in a coming flush: the thread starts
 * its write-back now (sync_file_range, Linux), while the caller goes on, so
 * the flush finds less to write. A hint only: errors are met and reported by
 * the flush, a lost hint (AUS_E_NOMEM) costs nothing but time, and a file
 * closed meanwhile is harmless. AUS_E_ARGUMENT after a fork, as start.
 */
int aus_flusher_kick(aus_flusher *flusher, int fd);

#endif
