/*
 * Writer-side batch packing and stamping (writer.h).
 *
 * Memory: nothing here allocates or keeps a pointer past a call. aus_pack
 * reads the caller's meta words and payload and fills the caller's out
 * buffer (a bytearray Python sized to the packed length, through
 * ffi.from_buffer); aus_stamp rewrites a packed batch in place. Both walk
 * their input once to check every size before they write a byte.
 */
#include "writer.h"

#include <string.h>

#include "aurora.h"
#include "internal.h"

/* Offsets and lengths within a page fit the shape word's fields. */
_Static_assert(AUS_PAGE_SIZE_MAX <= AUS_SHAPE_FIELD_MASK, "page offsets fit a shape field");

static inline uint32_t shape_length(uint64_t shape) {
    return (uint32_t)((shape >> AUS_SHAPE_LENGTH_SHIFT) & AUS_SHAPE_FIELD_MASK);
}
static inline uint32_t shape_offset(uint64_t shape) {
    return (uint32_t)((shape >> AUS_SHAPE_OFFSET_SHIFT) & AUS_SHAPE_FIELD_MASK);
}
static inline uint8_t shape_kind(uint64_t shape) {
    return (uint8_t)(shape >> AUS_SHAPE_KIND_SHIFT);
}

int aus_pack(const uint64_t *meta, size_t count, const uint8_t *payload,
             size_t payload_len, uint8_t *out, size_t out_len) {
    /* First walk: the sizes add up, so the second cannot overrun either buffer. */
    size_t needed = 0, taken = 0;
    for (size_t i = 0; i < count; i++) {
        size_t length = shape_length(meta[2 * i + 1]);
        taken += length;
        needed += AUS_RECORD_HEADER_SIZE + aus_padded(length);
    }
    if (needed != out_len || taken != payload_len) return AUS_E_ARGUMENT;
    uint8_t *p = out;
    const uint8_t *source = payload;
    for (size_t i = 0; i < count; i++) {
        const uint64_t page_no = meta[2 * i], shape = meta[2 * i + 1];
        const uint32_t length = shape_length(shape);
        const size_t body = aus_padded(length);
        AUS_ASSERT((size_t)(p - out) + AUS_RECORD_HEADER_SIZE + body <= out_len);
        AUS_ASSERT((size_t)(source - payload) + length <= payload_len);
        memset(p, 0, AUS_RECORD_HEADER_SIZE);
        aus_store_u64(p + AUS_RECORD_PAGE_NO_AT, page_no);
        aus_store_u32(p + AUS_RECORD_OFFSET_AT, shape_offset(shape));
        aus_store_u32(p + AUS_RECORD_LENGTH_AT, length);
        p[AUS_RECORD_KIND_AT] = shape_kind(shape);
        p += AUS_RECORD_HEADER_SIZE;
        if (length) memcpy(p, source, length);
        memset(p + length, 0, body - length);
        p += body;
        source += length;
    }
    AUS_ASSERT(p == out + out_len && source == payload + payload_len);
    return AUS_OK;
}

int aus_stamp(uint8_t *buf, size_t len, uint32_t page_size, uint64_t first_lsn,
              uint64_t backlink, int cpl, double time, uint64_t *last_lsn,
              size_t *error_pos) {
    *last_lsn = 0;
    *error_pos = 0;
    /* First walk: every record fits, so the second walk cannot stop halfway. */
    size_t pos = 0, count = 0, last = 0;
    while (pos < len) {
        if (len - pos < AUS_RECORD_HEADER_SIZE || len - pos < aus_record_size(buf + pos)) {
            *error_pos = pos;
            return AUS_E_TRUNCATED;
        }
        last = pos;
        pos += aus_record_size(buf + pos);
        count++;
    }
    if (count == 0) return AUS_E_EMPTY;
    if (first_lsn == 0 || first_lsn <= backlink || first_lsn > UINT64_MAX - count)
        return AUS_E_ARGUMENT;
    uint64_t lsn = first_lsn, previous = backlink;
    const double no_time = 0.0;
    for (pos = 0; pos < len; pos += aus_record_size(buf + pos), lsn++) {
        uint8_t *p = buf + pos;
        const int is_cpl = cpl && pos == last;
        AUS_ASSERT(len - pos >= aus_record_size(p)); /* as the first walk found */
        AUS_ASSERT(lsn > previous);                  /* LSNs ascend from first_lsn */
        aus_store_u64(p + AUS_RECORD_LSN_AT, lsn);
        aus_store_u64(p + AUS_RECORD_BACKLINK_AT, previous);
        memcpy(p + AUS_RECORD_TIME_AT, is_cpl ? &time : &no_time, sizeof time);
        p[AUS_RECORD_FLAGS_AT] = is_cpl ? (uint8_t)AUS_FLAG_CPL : (uint8_t)0;
        previous = lsn;
    }
    AUS_ASSERT(previous == first_lsn + count - 1);
    *last_lsn = previous;
    /* The writer packed these records itself: a failure here is a bug there. */
    uint64_t summary[AUS_SUMMARY_SIZE];
    return aus_validate(buf, len, page_size, 0, UINT64_MAX, backlink, summary, error_pos);
}
