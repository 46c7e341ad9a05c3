/*
 * aurora-storage C core: validation, indexing and application of packed redo
 * record batches. See aurora.h for the contract and docs/format.md for the
 * record layout:
 *
 *   offset size field
 *        0    8 lsn        u64, > 0, strictly increasing within a batch
 *        8    8 backlink   u64, LSN of the previous record of the same PG
 *       16    8 page_no    u64
 *       24    8 time       f64, writer clock seconds (CPL records), else 0
 *       32    4 offset     u32, byte offset in the page
 *       36    4 length     u32, payload bytes
 *       40    1 kind       u8, AUS_KIND_*
 *       41    1 flags      u8, AUS_FLAG_*
 *       42    6 reserved   zero
 *       48    - payload, zero-padded to a multiple of 8 bytes
 *
 * Every read of the input is bounds-checked before it happens, whatever the
 * bytes are; pages are written only after the whole batch passed validation.
 */
#include "aurora.h"

#include <string.h>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "aurora-storage reads records in place and needs a little-endian host"
#endif

#define KNOWN_FLAGS ((uint8_t)AUS_FLAG_CPL)

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

static inline uint64_t load_u64(const uint8_t *p) {
    uint64_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline uint32_t load_u32(const uint8_t *p) {
    uint32_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline void read_header(const uint8_t *p, record_header *h) {
    h->lsn = load_u64(p);
    h->backlink = load_u64(p + 8);
    h->page_no = load_u64(p + 16);
    memcpy(&h->time, p + 24, sizeof h->time);
    h->offset = load_u32(p + 32);
    h->length = load_u32(p + 36);
    h->kind = p[40];
    h->flags = p[41];
}

static inline size_t padded(uint32_t length) {
    return ((size_t)length + (AUS_RECORD_ALIGN - 1)) & ~(size_t)(AUS_RECORD_ALIGN - 1);
}

static int page_size_valid(uint32_t page_size) {
    return page_size >= AUS_PAGE_SIZE_MIN && page_size <= AUS_PAGE_SIZE_MAX &&
           (page_size & (page_size - 1)) == 0;
}

/*
 * Checks the record at buf[pos] against every rule that needs no context
 * beyond the previous LSN, and returns its total size through *size.
 */
static int check_record(const uint8_t *buf, size_t len, size_t pos,
                        uint32_t page_size, uint64_t previous_lsn,
                        record_header *h, size_t *size) {
    if (len - pos < AUS_RECORD_HEADER_SIZE) return AUS_E_TRUNCATED;
    const uint8_t *p = buf + pos;
    read_header(p, h);
    if (p[42] | p[43] | p[44] | p[45] | p[46] | p[47]) return AUS_E_RESERVED;
    if (h->flags & (uint8_t)~KNOWN_FLAGS) return AUS_E_RESERVED;
    if (h->lsn == 0 || h->lsn <= previous_lsn) return AUS_E_LSN_ORDER;
    switch (h->kind) {
    case AUS_KIND_WRITE:
        if (h->length == 0) return AUS_E_LENGTH;
        if ((uint64_t)h->offset + h->length > page_size) return AUS_E_RANGE;
        break;
    case AUS_KIND_PAGE:
        if (h->offset != 0 || h->length != page_size) return AUS_E_LENGTH;
        break;
    case AUS_KIND_ZERO:
        if (h->offset != 0 || h->length != 0) return AUS_E_LENGTH;
        break;
    default:
        return AUS_E_KIND;
    }
    size_t body = padded(h->length);
    if (len - pos - AUS_RECORD_HEADER_SIZE < body) return AUS_E_TRUNCATED;
    const uint8_t *pad = p + AUS_RECORD_HEADER_SIZE + h->length;
    for (size_t i = 0; i < body - h->length; i++) {
        if (pad[i]) return AUS_E_PADDING;
    }
    *size = AUS_RECORD_HEADER_SIZE + body;
    return AUS_OK;
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
        int status = check_record(buf, len, pos, page_size, previous, &h, &size);
        if (status != AUS_OK) {
            *error_pos = pos;
            return status;
        }
        previous = h.lsn;
        pos += size;
    }
    return AUS_OK;
}

uint32_t aus_format_version(void) { return AUS_FORMAT_VERSION; }

int aus_validate(const uint8_t *buf, size_t len, uint32_t page_size,
                 uint64_t page_lo, uint64_t page_hi, uint64_t backlink,
                 uint64_t *summary, size_t *error_pos) {
    record_header h;
    size_t pos = 0, size = 0;
    uint64_t previous = 0, count = 0, first = 0, cpl_count = 0, last_cpl = 0;
    uint64_t payload = 0;
    *error_pos = 0;
    if (!page_size_valid(page_size) || page_lo > page_hi) return AUS_E_ARGUMENT;
    if (len == 0) return AUS_E_EMPTY;
    while (pos < len) {
        int status = check_record(buf, len, pos, page_size, previous, &h, &size);
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
        if (count == 0) first = h.lsn;
        if (h.flags & AUS_FLAG_CPL) {
            cpl_count++;
            last_cpl = h.lsn;
        }
        payload += h.length;
        count++;
        previous = h.lsn;
        pos += size;
    }
    summary[0] = count;
    summary[1] = first;
    summary[2] = previous;
    summary[3] = cpl_count;
    summary[4] = last_cpl;
    summary[5] = payload;
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
        int status = check_record(buf, len, pos, page_size, previous, &h, &size);
        if (status == AUS_OK && n == capacity) status = AUS_E_CAPACITY;
        if (status != AUS_OK) {
            *error_pos = pos;
            return status;
        }
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

/* Finds the slot of page_no among page_count ascending page numbers, or -1. */
static inline ptrdiff_t find_page(const uint64_t *page_nos, size_t page_count,
                                  int dense, uint64_t page_no) {
    if (dense) {
        uint64_t slot = page_no - page_nos[0];
        return page_no >= page_nos[0] && slot < page_count ? (ptrdiff_t)slot : -1;
    }
    size_t lo = 0, hi = page_count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (page_nos[mid] < page_no)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < page_count && page_nos[lo] == page_no ? (ptrdiff_t)lo : -1;
}

int aus_annulled_valid(const uint64_t *annulled, size_t n_annulled) {
    for (size_t i = 0; i < n_annulled; i++) {
        if (annulled[2 * i] >= annulled[2 * i + 1]) return 0;
        if (i > 0 && annulled[2 * i] < annulled[2 * i - 1]) return 0;
    }
    return 1;
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
    for (size_t i = 1; i < page_count; i++) {
        if (page_nos[i] <= page_nos[i - 1]) return AUS_E_ARGUMENT;
    }
    int status = check_batch(buf, len, page_size, error_pos);
    if (status != AUS_OK) return status;
    if (page_count == 0) return AUS_OK;

    const int dense = page_nos[page_count - 1] - page_nos[0] == page_count - 1;
    size_t range = 0; /* annulled ranges are sorted and LSNs ascend: one pass */
    uint64_t count = 0;
    size_t pos = 0;
    while (pos < len) {
        const uint8_t *p = buf + pos;
        const uint64_t lsn = load_u64(p);
        const uint32_t length = load_u32(p + 36);
        pos += AUS_RECORD_HEADER_SIZE + padded(length);
        if (lsn > lsn_bound) break;
        while (range < n_annulled && annulled[2 * range + 1] < lsn) range++;
        if (range < n_annulled && annulled[2 * range] < lsn) continue;
        ptrdiff_t slot = find_page(page_nos, page_count, dense, load_u64(p + 16));
        if (slot < 0) continue;
        if (page_lsns) {
            if (lsn <= page_lsns[slot]) continue;
            page_lsns[slot] = lsn;
        }
        uint8_t *page = pages + (size_t)slot * page_size;
        switch (p[40]) {
        case AUS_KIND_WRITE:
            memcpy(page + load_u32(p + 32), p + AUS_RECORD_HEADER_SIZE, length);
            break;
        case AUS_KIND_PAGE:
            memcpy(page, p + AUS_RECORD_HEADER_SIZE, page_size);
            break;
        default: /* AUS_KIND_ZERO: check_batch admits no other kind */
            memset(page, 0, page_size);
            break;
        }
        count++;
    }
    *applied = count;
    return AUS_OK;
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
