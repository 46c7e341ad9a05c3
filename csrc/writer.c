/* Writer-side batch stamping (writer.h). */
#include "writer.h"

#include <string.h>

#include "aurora.h"

static inline size_t record_size_at(const uint8_t *record) {
    uint32_t length;
    memcpy(&length, record + 36, sizeof length);
    return AUS_RECORD_HEADER_SIZE +
           (((size_t)length + AUS_RECORD_ALIGN - 1) & ~(size_t)(AUS_RECORD_ALIGN - 1));
}

#define SHAPE_FIELD_MASK ((1u << 20) - 1)

static inline size_t padded(size_t length) {
    return (length + AUS_RECORD_ALIGN - 1) & ~(size_t)(AUS_RECORD_ALIGN - 1);
}

int aus_pack(const uint64_t *meta, size_t count, const uint8_t *payload,
             size_t payload_len, uint8_t *out, size_t out_len) {
    /* First walk: the sizes add up, so the second cannot overrun either buffer. */
    size_t needed = 0, taken = 0;
    for (size_t i = 0; i < count; i++) {
        size_t length = (size_t)(meta[2 * i + 1] & SHAPE_FIELD_MASK);
        taken += length;
        needed += AUS_RECORD_HEADER_SIZE + padded(length);
    }
    if (needed != out_len || taken != payload_len) return AUS_E_ARGUMENT;
    uint8_t *p = out;
    const uint8_t *source = payload;
    for (size_t i = 0; i < count; i++) {
        uint64_t page_no = meta[2 * i], shape = meta[2 * i + 1];
        uint32_t length = (uint32_t)(shape & SHAPE_FIELD_MASK);
        uint32_t offset = (uint32_t)((shape >> 20) & SHAPE_FIELD_MASK);
        uint8_t kind = (uint8_t)(shape >> 40);
        memset(p, 0, AUS_RECORD_HEADER_SIZE);
        memcpy(p + 16, &page_no, sizeof page_no);
        memcpy(p + 32, &offset, sizeof offset);
        memcpy(p + 36, &length, sizeof length);
        p[40] = kind;
        p += AUS_RECORD_HEADER_SIZE;
        if (length) memcpy(p, source, length);
        memset(p + length, 0, padded(length) - length);
        p += padded(length);
        source += length;
    }
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
        if (len - pos < AUS_RECORD_HEADER_SIZE || len - pos < record_size_at(buf + pos)) {
            *error_pos = pos;
            return AUS_E_TRUNCATED;
        }
        last = pos;
        pos += record_size_at(buf + pos);
        count++;
    }
    if (count == 0) return AUS_E_EMPTY;
    if (first_lsn == 0 || first_lsn <= backlink || first_lsn > UINT64_MAX - count)
        return AUS_E_ARGUMENT;
    uint64_t lsn = first_lsn, previous = backlink;
    const double no_time = 0.0;
    for (pos = 0; pos < len; pos += record_size_at(buf + pos), lsn++) {
        uint8_t *p = buf + pos;
        int is_cpl = cpl && pos == last;
        memcpy(p, &lsn, sizeof lsn);
        memcpy(p + 8, &previous, sizeof previous);
        memcpy(p + 24, is_cpl ? &time : &no_time, sizeof time);
        p[41] = is_cpl ? (uint8_t)AUS_FLAG_CPL : (uint8_t)0;
        previous = lsn;
    }
    *last_lsn = previous;
    /* The writer packed these records itself: a failure here is a bug there. */
    uint64_t summary[AUS_SUMMARY_SIZE];
    return aus_validate(buf, len, page_size, 0, UINT64_MAX, backlink, summary, error_pos);
}
