/*
 * aurora-storage C core: validation, indexing and application of packed redo
 * record batches. See aurora.h for the contract, record.h for the record
 * layout (docs/format.md, "Redo records") and internal.h for the field
 * accessors.
 *
 * Memory: nothing here allocates or keeps a pointer past a call. The batch,
 * the pages, page numbers, page LSNs, annulled ranges and output cells are
 * the caller's (Python's, through ffi.from_buffer or ffi.new); C reads and
 * writes them only during the call.
 *
 * Every read of the input is bounds-checked before it happens, whatever the
 * bytes are. aus_apply writes pages only after the whole batch passed
 * validation; aus_apply_verified, for batches validated earlier, checks each
 * record only as far as memory safety needs, as it applies it. Page numbers
 * are trusted to ascend (the caller checks them once per page set); if they
 * do not, lookups go wrong but stay inside the pages given.
 */
#include "aurora.h"

#include <string.h>

#include "internal.h"

typedef struct {
    uint64_t lsn;
    uint64_t backlink;
    uint64_t page_no;
    double time;
    uint32_t offset;
    uint32_t length;
    uint8_t kind;
    uint8_t flags;
} record_header;

static int page_size_valid(uint32_t page_size) {
    return page_size >= AUS_PAGE_SIZE_MIN && page_size <= AUS_PAGE_SIZE_MAX &&
           (page_size & (page_size - 1)) == 0;
}

/*
 * Bits of the header's last word (kind, flags, reserved: aus_record_tail)
 * that must be zero: every flag but the known ones, and the reserved bytes.
 * One load checks rule 3.
 */
#define TAIL_KIND_MASK ((uint64_t)0xFF)
#define TAIL_KNOWN_FLAGS ((uint64_t)AUS_FLAGS_KNOWN << AUS_TAIL_FLAGS_SHIFT)
#define TAIL_MUST_BE_ZERO (~TAIL_KIND_MASK & ~TAIL_KNOWN_FLAGS)

static inline void read_header(const uint8_t *p, record_header *h) {
    const uint64_t tail = aus_record_tail(p);
    h->lsn = aus_record_lsn(p);
    h->backlink = aus_record_backlink(p);
    h->page_no = aus_record_page_no(p);
    h->time = aus_record_time(p);
    h->offset = aus_record_offset(p);
    h->length = aus_record_length(p);
    h->kind = (uint8_t)(tail & TAIL_KIND_MASK);
    h->flags = (uint8_t)(tail >> AUS_TAIL_FLAGS_SHIFT);
}

/*
 * The rules of docs/format.md that need no context beyond the previous LSN
 * (rules 3 to 6, in that order) for a record whose header is in the batch,
 * with remaining >= 48 bytes from p. Returns the first rule broken, so that
 * both backends report the same status; sets *size on AUS_OK.
 */
static int check_record_in_order(const uint8_t *p, size_t remaining, uint32_t page_size,
                                 uint64_t previous_lsn, size_t *size) {
    record_header h;
    read_header(p, &h);
    if (aus_record_tail(p) & TAIL_MUST_BE_ZERO) return AUS_E_RESERVED;
    if (h.lsn == 0 || h.lsn <= previous_lsn) return AUS_E_LSN_ORDER;
    switch (h.kind) {
    case AUS_KIND_WRITE:
        if (h.length == 0) return AUS_E_LENGTH;
        if ((uint64_t)h.offset + h.length > page_size) return AUS_E_RANGE;
        break;
    case AUS_KIND_PAGE:
        if (h.offset != 0 || h.length != page_size) return AUS_E_LENGTH;
        break;
    case AUS_KIND_ZERO:
        if (h.offset != 0 || h.length != 0) return AUS_E_LENGTH;
        break;
    default:
        return AUS_E_KIND;
    }
    const size_t body = aus_padded(h.length);
    if (remaining - AUS_RECORD_HEADER_SIZE < body) return AUS_E_TRUNCATED;
    const size_t padding = body - h.length;
    if (padding) {
        /* length >= 1 here, so body >= 8: the padding is the top bytes of the
         * body's last 8-byte word, which lies inside the batch. */
        const uint64_t last = aus_load_u64(p + AUS_RECORD_HEADER_SIZE + body - 8);
        if (last >> (64 - 8 * padding)) return AUS_E_PADDING;
    }
    *size = AUS_RECORD_HEADER_SIZE + body;
    AUS_ASSERT(*size <= remaining);
    return AUS_OK;
}

/*
 * Checks the record at p, with remaining bytes left in the batch, against
 * rules 2 to 6 of docs/format.md, fills *h and returns the record's total
 * size through *size. Inlined into each caller, so fields a caller does not
 * use are never loaded.
 *
 * A valid WRITE, by far the most common record, passes with one test of all
 * its rules combined; any other record is checked again rule by rule
 * (check_record_in_order), which decides the status, so the fast path never
 * changes which error is reported.
 */
static inline __attribute__((always_inline)) int
check_record(const uint8_t *p, size_t remaining, uint32_t page_size,
             uint64_t previous_lsn, record_header *h, size_t *size) {
    if (remaining < AUS_RECORD_HEADER_SIZE) return AUS_E_TRUNCATED;
    read_header(p, h);
    const size_t body = aus_padded(h->length);
    if (__builtin_expect(remaining - AUS_RECORD_HEADER_SIZE >= body, 1)) {
        /* The body's last word holds the padding in its top bytes. With
         * length 0 it is the header's last word and there is no padding. */
        const uint64_t last = aus_load_u64(p + AUS_RECORD_HEADER_SIZE + body - 8);
        const unsigned padding_bits = 8 * (unsigned)(body - h->length); /* 0..56 */
        const uint64_t tail = aus_record_tail(p);
        /* kind WRITE, no flag but the known ones, reserved zero */
        const int write_ok = (tail & ~TAIL_KNOWN_FLAGS) == AUS_KIND_WRITE;
        const int valid = write_ok & (h->lsn > previous_lsn) & (h->length != 0) &
                          ((uint64_t)h->offset + h->length <= page_size) &
                          (((last >> 1) >> (63 - padding_bits)) == 0);
        if (__builtin_expect(valid, 1)) {
            *size = AUS_RECORD_HEADER_SIZE + body;
            AUS_ASSERT(*size <= remaining);
            return AUS_OK;
        }
    }
    return check_record_in_order(p, remaining, page_size, previous_lsn, size);
}

/* Validates a batch with no context beyond the page size. */
static int check_batch(const uint8_t *buf, size_t len, uint32_t page_size,
                       size_t *error_pos) {
    record_header h;
    size_t pos = 0, size = 0;
    uint64_t previous = 0;
    if (len == 0) {
        *error_pos = 0;
        return AUS_E_EMPTY;
    }
    while (pos < len) {
        int status = check_record(buf + pos, len - pos, page_size, previous, &h, &size);
        if (status != AUS_OK) {
            *error_pos = pos;
            return status;
        }
        AUS_ASSERT(h.lsn > previous && size <= len - pos); /* what check_record checked */
        previous = h.lsn;
        pos += size;
    }
    AUS_ASSERT(pos == len);
    return AUS_OK;
}

uint32_t aus_format_version(void) { return AUS_FORMAT_VERSION; }

int aus_assertions_enabled(void) { return AUS_ASSERTIONS; }

int aus_validate(const uint8_t *buf, size_t len, uint32_t page_size,
                 uint64_t page_lo, uint64_t page_hi, uint64_t backlink,
                 uint64_t *summary, size_t *error_pos) {
    record_header h;
    size_t pos = 0, size = 0;
    uint64_t previous = 0, count = 0, first = 0, cpl_count = 0, last_cpl = 0;
    uint64_t payload = 0;
    double last_cpl_time = 0.0;
    *error_pos = 0;
    if (!page_size_valid(page_size) || page_lo > page_hi) return AUS_E_ARGUMENT;
    if (len == 0) return AUS_E_EMPTY;
    while (pos < len) {
        int status = check_record(buf + pos, len - pos, page_size, previous, &h, &size);
        if (status == AUS_OK && (h.page_no < page_lo || h.page_no >= page_hi))
            status = AUS_E_PAGE;
        if (status == AUS_OK && backlink != AUS_NO_BACKLINK) {
            uint64_t expected = count == 0 ? backlink : previous;
            if (h.backlink != expected) status = AUS_E_BACKLINK;
        }
        if (status != AUS_OK) {
            *error_pos = pos;
            return status;
        }
        AUS_ASSERT(h.lsn > previous && size <= len - pos);
        if (count == 0) first = h.lsn;
        if (h.flags & AUS_FLAG_CPL) {
            cpl_count++;
            last_cpl = h.lsn;
            last_cpl_time = h.time;
        }
        payload += h.length;
        count++;
        previous = h.lsn;
        pos += size;
    }
    AUS_ASSERT(pos == len && cpl_count <= count);
    summary[0] = count;
    summary[1] = first;
    summary[2] = previous;
    summary[3] = cpl_count;
    summary[4] = last_cpl;
    summary[5] = payload;
    memcpy(&summary[6], &last_cpl_time, sizeof last_cpl_time); /* f64 bits */
    return AUS_OK;
}

int aus_index(const uint8_t *buf, size_t len, uint32_t page_size,
              size_t capacity, uint64_t *page_nos, uint64_t *lsns,
              uint8_t *flags, double *times, uint64_t *positions,
              size_t *count, size_t *error_pos) {
    record_header h;
    size_t pos = 0, size = 0, n = 0;
    uint64_t previous = 0;
    *count = 0;
    *error_pos = 0;
    if (!page_size_valid(page_size)) return AUS_E_ARGUMENT;
    if (len == 0) return AUS_E_EMPTY;
    while (pos < len) {
        int status = check_record(buf + pos, len - pos, page_size, previous, &h, &size);
        if (status == AUS_OK && n == capacity) status = AUS_E_CAPACITY;
        if (status != AUS_OK) {
            *error_pos = pos;
            return status;
        }
        AUS_ASSERT(n < capacity && h.lsn > previous && size <= len - pos);
        if (page_nos) page_nos[n] = h.page_no;
        if (lsns) lsns[n] = h.lsn;
        if (flags) flags[n] = h.flags;
        if (times) times[n] = h.time;
        if (positions) positions[n] = pos;
        n++;
        previous = h.lsn;
        pos += size;
    }
    *count = n;
    return AUS_OK;
}

int aus_page_nos_ascending(const uint64_t *page_nos, size_t page_count) {
    for (size_t i = 1; i < page_count; i++) {
        if (page_nos[i] <= page_nos[i - 1]) return 0;
    }
    return 1;
}

int aus_annulled_valid(const uint64_t *annulled, size_t n_annulled) {
    for (size_t i = 0; i < n_annulled; i++) {
        if (annulled[2 * i] >= annulled[2 * i + 1]) return 0;
        if (i > 0 && annulled[2 * i] < annulled[2 * i - 1]) return 0;
    }
    return 1;
}

/*
 * The page images a batch is applied to. The page numbers are meant to ascend
 * (a precondition, not checked per call: that was O(pages) for every batch).
 * Whatever they hold, dense_slot and find_slot return -1 or a slot below
 * page_count, so unsorted page numbers give wrong lookups but never an access
 * outside pages or page_lsns.
 */
typedef struct {
    const uint64_t *page_nos;
    size_t page_count; /* > 0 */
    uint64_t first;    /* page_nos[0] */
    int dense;         /* page_nos[i] == first + i, judged from the ends */
} page_set;

static inline page_set make_page_set(const uint64_t *page_nos, size_t page_count) {
    AUS_ASSERT(page_count > 0);
    page_set set = {page_nos, page_count, page_nos[0], 0};
    set.dense = page_nos[page_count - 1] - page_nos[0] == page_count - 1;
    return set;
}

static inline ptrdiff_t dense_slot(const page_set *set, uint64_t page_no) {
    const uint64_t slot = page_no - set->first; /* wraps to huge below first */
    return slot < set->page_count ? (ptrdiff_t)slot : -1;
}

static inline ptrdiff_t find_slot(const page_set *set, uint64_t page_no) {
    size_t lo = 0, hi = set->page_count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (set->page_nos[mid] < page_no)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < set->page_count && set->page_nos[lo] == page_no ? (ptrdiff_t)lo : -1;
}

/*
 * Applies the records of buf (see aus_apply for which ones), one by one in
 * LSN order. The loop stays lean on purpose: applying is bound by cache and
 * TLB misses on the pages, and fewer instructions per record let the CPU keep
 * more records' misses in flight. So the flags below are compile-time
 * constants at each call (apply_specialized inlines this into one loop per
 * combination):
 *
 * - checked 0: the batch passed check_batch, nothing is checked here.
 *   checked 1: the batch is trusted for every rule except those memory safety
 *   needs: each header and payload lies inside buf, the kind is known, a WRITE
 *   stays inside its page, a PAGE carries page_size bytes. The first record
 *   failing one stops the loop with its status at *error_pos, after the
 *   records before it were applied.
 * - dense 1: slot = page_no - first, no search.
 * - general 0: no annulled ranges and no page LSNs to consult.
 */
static inline __attribute__((always_inline)) int
apply_records(const uint8_t *buf, size_t len, uint32_t page_size,
              const page_set *pages_set, uint8_t *pages, uint64_t *page_lsns,
              uint64_t lsn_bound, const uint64_t *annulled, size_t n_annulled,
              uint64_t *applied, size_t *error_pos, const int checked,
              const int dense, const int general) {
    const page_set set = *pages_set;
    const uint8_t *p = buf;
    const uint8_t *const end = buf + len;
    size_t range = 0; /* annulled ranges are sorted and LSNs ascend: one pass */
    uint64_t count = 0;
    uint64_t previous_lsn = 0; /* read by assertions only */
    int status = AUS_OK;
    while (p != end) {
        const size_t remaining = (size_t)(end - p);
        if (checked && remaining < AUS_RECORD_HEADER_SIZE) {
            status = AUS_E_TRUNCATED;
            break;
        }
        /* Checked above, or by check_batch before the first record was applied. */
        AUS_ASSERT(remaining >= AUS_RECORD_HEADER_SIZE);
        const uint64_t lsn = aus_record_lsn(p);
        const uint32_t length = aus_record_length(p);
        const size_t body = aus_padded(length);
        if (checked && remaining - AUS_RECORD_HEADER_SIZE < body) {
            status = AUS_E_TRUNCATED;
            break;
        }
        AUS_ASSERT(remaining - AUS_RECORD_HEADER_SIZE >= body);
        /* A validated batch ascends; a verified one is applied as its bytes say. */
        AUS_ASSERT(checked || lsn > previous_lsn);
        previous_lsn = lsn;
        const uint8_t *const next = p + AUS_RECORD_HEADER_SIZE + body;
        if (lsn > lsn_bound) break;
        if (general) {
            while (range < n_annulled && annulled[2 * range + 1] < lsn) range++;
            if (range < n_annulled && annulled[2 * range] < lsn) {
                p = next;
                continue;
            }
        }
        const ptrdiff_t slot = dense ? dense_slot(&set, aus_record_page_no(p))
                                     : find_slot(&set, aus_record_page_no(p));
        if (slot < 0 || (general && page_lsns && lsn <= page_lsns[slot])) {
            p = next;
            continue;
        }
        AUS_ASSERT((size_t)slot < set.page_count); /* whatever the page numbers hold */
        uint8_t *const page = pages + (size_t)slot * page_size;
        const uint8_t kind = aus_record_kind(p);
        if (__builtin_expect(kind == AUS_KIND_WRITE, 1)) {
            const uint32_t offset = aus_record_offset(p);
            if (checked && (uint64_t)offset + length > page_size) {
                status = AUS_E_RANGE;
                break;
            }
            AUS_ASSERT((uint64_t)offset + length <= page_size);
            memcpy(page + offset, p + AUS_RECORD_HEADER_SIZE, length);
        } else if (kind == AUS_KIND_PAGE) {
            if (checked && length != page_size) {
                status = AUS_E_LENGTH;
                break;
            }
            AUS_ASSERT(length == page_size);
            memcpy(page, p + AUS_RECORD_HEADER_SIZE, page_size);
        } else if (!checked || kind == AUS_KIND_ZERO) {
            AUS_ASSERT(kind == AUS_KIND_ZERO);
            memset(page, 0, page_size);
        } else {
            status = AUS_E_KIND;
            break;
        }
        if (general && page_lsns) page_lsns[slot] = lsn;
        count++;
        p = next;
    }
    *applied = count;
    if (status != AUS_OK) *error_pos = (size_t)(p - buf);
    return status;
}

/* apply_records with its flags turned into constants, one loop each. */
static inline __attribute__((always_inline)) int
apply_specialized(const uint8_t *buf, size_t len, uint32_t page_size,
                  const uint64_t *page_nos, size_t page_count, uint8_t *pages,
                  uint64_t *page_lsns, uint64_t lsn_bound,
                  const uint64_t *annulled, size_t n_annulled,
                  uint64_t *applied, size_t *error_pos, const int checked) {
    const page_set set = make_page_set(page_nos, page_count);
    const int general = page_lsns != NULL || n_annulled != 0;
#define APPLY_WITH(dense, general)                                                  \
    apply_records(buf, len, page_size, &set, pages, page_lsns, lsn_bound, annulled, \
                  n_annulled, applied, error_pos, checked, dense, general)
    if (set.dense) return general ? APPLY_WITH(1, 1) : APPLY_WITH(1, 0);
    return general ? APPLY_WITH(0, 1) : APPLY_WITH(0, 0);
#undef APPLY_WITH
}

int aus_apply(const uint8_t *buf, size_t len, uint32_t page_size,
              const uint64_t *page_nos, size_t page_count, uint8_t *pages,
              uint64_t *page_lsns, uint64_t lsn_bound,
              const uint64_t *annulled, size_t n_annulled,
              uint64_t *applied, size_t *error_pos) {
    *applied = 0;
    *error_pos = 0;
    if (!page_size_valid(page_size) || !aus_annulled_valid(annulled, n_annulled))
        return AUS_E_ARGUMENT;
    int status = check_batch(buf, len, page_size, error_pos);
    if (status != AUS_OK || page_count == 0) return status;
    return apply_specialized(buf, len, page_size, page_nos, page_count, pages, page_lsns,
                             lsn_bound, annulled, n_annulled, applied, error_pos, 0);
}

int aus_apply_verified(const uint8_t *buf, size_t len, uint32_t page_size,
                       const uint64_t *page_nos, size_t page_count, uint8_t *pages,
                       uint64_t *page_lsns, uint64_t lsn_bound,
                       const uint64_t *annulled, size_t n_annulled,
                       uint64_t *applied, size_t *error_pos) {
    *applied = 0;
    *error_pos = 0;
    if (!page_size_valid(page_size) || !aus_annulled_valid(annulled, n_annulled))
        return AUS_E_ARGUMENT;
    if (len == 0) return AUS_E_EMPTY;
    if (page_count == 0) return AUS_OK;
    return apply_specialized(buf, len, page_size, page_nos, page_count, pages, page_lsns,
                             lsn_bound, annulled, n_annulled, applied, error_pos, 1);
}

void aus_baseline_writes(uint8_t *pages, uint32_t page_size,
                         const uint32_t *slots, const uint32_t *offsets,
                         const uint32_t *lengths, const uint8_t *payload,
                         size_t count) {
    size_t source = 0;
    for (size_t i = 0; i < count; i++) {
        memcpy(pages + (size_t)slots[i] * page_size + offsets[i], payload + source,
               lengths[i]);
        source += lengths[i];
    }
}
