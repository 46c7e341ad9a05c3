/*
 * What the C files share and cffi never reads: assertions, and loads and
 * stores of record fields by their names in record.h.
 *
 * AUS_ASSERT(condition) states an invariant the code relies on (a buffer
 * bound, LSNs ascending in a validated batch, which memory a page log owns).
 * It is compiled in when AUS_DEBUG is defined (the sanitizer run builds with
 * AURORA_STORAGE_CFLAGS=-DAUS_DEBUG, tests/native/run_asan.sh), where a broken
 * one prints the condition and aborts; otherwise it costs nothing and its
 * condition is not evaluated. It is for bugs of the C core or of the Python
 * layer that calls it, never for bad input: a bad record or argument is an
 * AUS_E_* status (status.h), whatever the build.
 *
 * Fields are read and written with memcpy, so records need no alignment; the
 * in-place layout needs a little-endian host.
 */
#ifndef AURORA_INTERNAL_H
#define AURORA_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "record.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "aurora-storage reads records in place and needs a little-endian host"
#endif

#if defined(AUS_DEBUG)
#include <stdio.h>
#include <stdlib.h>
#define AUS_ASSERTIONS 1
static inline void aus_assert_failed(const char *condition, const char *file, int line) {
    fprintf(stderr, "%s:%d: AUS_ASSERT(%s) failed\n", file, line, condition);
    abort();
}
#define AUS_ASSERT(condition) \
    ((condition) ? (void)0 : aus_assert_failed(#condition, __FILE__, __LINE__))
#else
#define AUS_ASSERTIONS 0
/* Not evaluated, but still compiled: a stale name in an assertion breaks every build. */
#define AUS_ASSERT(condition) ((void)sizeof(!(condition)))
#endif

static inline uint64_t aus_load_u64(const uint8_t *p) {
    uint64_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline uint32_t aus_load_u32(const uint8_t *p) {
    uint32_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline void aus_store_u64(uint8_t *p, uint64_t v) { memcpy(p, &v, sizeof v); }

static inline void aus_store_u32(uint8_t *p, uint32_t v) { memcpy(p, &v, sizeof v); }

/* Header fields of the record at p, which the caller knows to hold a whole header. */
static inline uint64_t aus_record_lsn(const uint8_t *p) {
    return aus_load_u64(p + AUS_RECORD_LSN_AT);
}
static inline uint64_t aus_record_backlink(const uint8_t *p) {
    return aus_load_u64(p + AUS_RECORD_BACKLINK_AT);
}
static inline uint64_t aus_record_page_no(const uint8_t *p) {
    return aus_load_u64(p + AUS_RECORD_PAGE_NO_AT);
}
static inline double aus_record_time(const uint8_t *p) {
    double v;
    memcpy(&v, p + AUS_RECORD_TIME_AT, sizeof v);
    return v;
}
static inline uint32_t aus_record_offset(const uint8_t *p) {
    return aus_load_u32(p + AUS_RECORD_OFFSET_AT);
}
static inline uint32_t aus_record_length(const uint8_t *p) {
    return aus_load_u32(p + AUS_RECORD_LENGTH_AT);
}
static inline uint8_t aus_record_kind(const uint8_t *p) { return p[AUS_RECORD_KIND_AT]; }
static inline uint8_t aus_record_flags(const uint8_t *p) { return p[AUS_RECORD_FLAGS_AT]; }

/*
 * The header's last word: kind in its low byte, flags in the next, then the
 * reserved bytes (record.h asserts they fill it), for one-load checks.
 */
static inline uint64_t aus_record_tail(const uint8_t *p) {
    return aus_load_u64(p + AUS_RECORD_KIND_AT);
}
#define AUS_TAIL_FLAGS_SHIFT (8 * (AUS_RECORD_FLAGS_AT - AUS_RECORD_KIND_AT))

/* Payload bytes rounded up to AUS_RECORD_ALIGN: the record's body. */
static inline size_t aus_padded(size_t length) {
    return (length + (AUS_RECORD_ALIGN - 1)) & ~(size_t)(AUS_RECORD_ALIGN - 1);
}

/* Bytes the record at p takes, header and padded payload, as its length says. */
static inline size_t aus_record_size(const uint8_t *p) {
    return AUS_RECORD_HEADER_SIZE + aus_padded(aus_record_length(p));
}

#endif
