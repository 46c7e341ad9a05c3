/*
 * aurora-storage C core: everything done once per record or once per byte.
 * This header declares the batch functions of aurora.c: validate, index and
 * apply packed record batches.
 *
 * The record format is specified in docs/format.md ("Redo records"); its one
 * C table is record.h, mirrored in Python by aurora_storage/format/records.py
 * (checked against the compiled core when it is loaded). Statuses are in
 * status.h; aurora_storage/native/__init__.py maps them to exceptions in one
 * place.
 *
 * Memory: the functions of this header allocate nothing and keep nothing.
 * Every buffer (a batch, page images, page numbers, page LSNs, annulled
 * ranges, output cells) is the caller's: Python passes it with
 * ffi.from_buffer or ffi.new, and C reads or writes it only for the duration
 * of the call, within the sizes given. They never print or exit either,
 * except AUS_ASSERT in a debug build (internal.h), which aborts on a broken
 * invariant; problems with the input are an AUS_E_* status plus the byte
 * position of the first bad record. Other parts of the core do allocate, and
 * say so in their headers: page logs (pagelog.h), the chunk pool (chunks.h)
 * and the flusher (flush.h).
 *
 * This header is also read by the cffi build script (cdef), so it holds only
 * declarations cffi understands: no preprocessor conditionals, no macros with
 * expressions.
 */
#ifndef AURORA_STORAGE_H
#define AURORA_STORAGE_H

#include <stddef.h>
#include <stdint.h>

#include "record.h" /* the record layout: offsets, kinds, flags */
#include "status.h"

#define AUS_PAGE_SIZE_MIN 4096
#define AUS_PAGE_SIZE_MAX 65536
#define AUS_SUMMARY_SIZE 7 /* entries aus_validate writes to summary */

/* Sentinel for "do not check the backlink chain". */
#define AUS_NO_BACKLINK 0xFFFFFFFFFFFFFFFF

uint32_t aus_format_version(void);

/* 1 if this build checks its AUS_ASSERTs (built with -DAUS_DEBUG), else 0. */
int aus_assertions_enabled(void);

/*
 * Check every rule of a packed record batch (docs/format.md, validity rule).
 * Pages must lie in [page_lo, page_hi). If backlink != AUS_NO_BACKLINK the
 * first record's backlink must equal it and each later record's backlink must
 * be the LSN of the record before it. On AUS_OK, summary receives
 * {record count, first LSN, last LSN, CPL count, last CPL LSN, payload bytes,
 * the last CPL's time as the bits of an f64} (7 entries).
 * On error, *error_pos is the byte position of the first bad record.
 */
int aus_validate(const uint8_t *buf, size_t len, uint32_t page_size,
                 uint64_t page_lo, uint64_t page_hi, uint64_t backlink,
                 uint64_t *summary, size_t *error_pos);

/*
 * Validate (without the backlink or page range checks) and write one entry
 * per record: its page number, LSN, flags, CPL time and byte position in buf.
 * Any output pointer may be NULL. capacity is the length of each array.
 */
int aus_index(const uint8_t *buf, size_t len, uint32_t page_size,
              size_t capacity, uint64_t *page_nos, uint64_t *lsns,
              uint8_t *flags, double *times, uint64_t *positions,
              size_t *count, size_t *error_pos);

/*
 * Apply the records of buf to page images, in LSN order. The pages are
 * page_count images of page_size bytes laid end to end in pages, holding the
 * page numbers page_nos, which must be strictly ascending: a precondition the
 * caller checks once per page set (aus_page_nos_ascending), not re-checked per
 * call. Unsorted page numbers make lookups wrong, never an access outside
 * pages or page_lsns (which C takes to hold page_count pages and LSNs: it
 * cannot check their sizes). Records of other pages are skipped. A record is applied
 * only if lsn <= lsn_bound, its LSN lies in no annulled range (lo, hi]
 * (annulled holds n_annulled pairs lo, hi, sorted by lo and disjoint), and
 * lsn > page_lsns[i] when page_lsns is not NULL; then page_lsns[i] becomes its
 * LSN. The whole buffer is validated before any page is touched (every rule
 * of aus_index): on error nothing is written.
 */
int aus_apply(const uint8_t *buf, size_t len, uint32_t page_size,
              const uint64_t *page_nos, size_t page_count, uint8_t *pages,
              uint64_t *page_lsns, uint64_t lsn_bound,
              const uint64_t *annulled, size_t n_annulled,
              uint64_t *applied, size_t *error_pos);

/*
 * aus_apply for a batch that already passed aus_validate or aus_index (a
 * frame body verified on receipt, a page's own log): one pass, no validation
 * first. It trusts the caller for the validity rules and checks only what
 * memory safety needs, record by record as it applies: each header and
 * payload lies inside buf (else AUS_E_TRUNCATED), the kind is known
 * (AUS_E_KIND), a WRITE stays inside its page (AUS_E_RANGE) and a PAGE carries
 * page_size bytes (AUS_E_LENGTH); records above lsn_bound, annulled or of
 * unlisted pages are skipped unchecked. On such an error the records before
 * the one at *error_pos are applied (*applied counts them). A batch breaking
 * another rule is applied as its bytes say: LSN order, flags, reserved bytes
 * and padding are not looked at, and a WRITE of length 0 copies nothing.
 * Arguments are checked as by aus_apply; an empty batch is AUS_E_EMPTY.
 */
int aus_apply_verified(const uint8_t *buf, size_t len, uint32_t page_size,
                       const uint64_t *page_nos, size_t page_count, uint8_t *pages,
                       uint64_t *page_lsns, uint64_t lsn_bound,
                       const uint64_t *annulled, size_t n_annulled,
                       uint64_t *applied, size_t *error_pos);

/* 1 if page_nos holds page_count strictly ascending page numbers. */
int aus_page_nos_ascending(const uint64_t *page_nos, size_t page_count);

/* 1 if annulled holds n_annulled ranges (lo, hi] with lo < hi, sorted, disjoint. */
int aus_annulled_valid(const uint64_t *annulled, size_t n_annulled);

/*
 * Benchmark baseline: the same writes as a batch of WRITE records, with no
 * format, lookup or checks; slots index pages directly.
 */
void aus_baseline_writes(uint8_t *pages, uint32_t page_size,
                         const uint32_t *slots, const uint32_t *offsets,
                         const uint32_t *lengths, const uint8_t *payload,
                         size_t count);

#endif
