/*
 * Writer-side batch work: a mini-transaction's records are collected as they
 * are written (page, shape, payload), packed in one call at commit with LSN
 * and backlink left zero, and stamped in one more, once the writer has
 * allocated the MTR's LSN range.
 *
 * Read by the cffi build script as cdef: declarations only.
 */
#ifndef AURORA_WRITER_H
#define AURORA_WRITER_H

#include <stddef.h>
#include <stdint.h>

#include "status.h" /* the AUS_E_* these functions return */

/*
 * Packs count records into out. meta holds two words per record: the page
 * number, then the shape word of record.h (kind << AUS_SHAPE_KIND_SHIFT |
 * offset << AUS_SHAPE_OFFSET_SHIFT | length). Record i's payload is the next
 * length bytes of payload, zero-padded to AUS_RECORD_ALIGN; LSN, backlink,
 * time and flags are zero.
 * out_len must be exactly the packed size and payload_len the sum of the
 * lengths, else AUS_E_ARGUMENT and nothing is written. Records are not
 * validated here: aus_stamp validates the batch it stamps.
 */
int aus_pack(const uint64_t *meta, size_t count, const uint8_t *payload,
             size_t payload_len, uint8_t *out, size_t out_len);

/*
 * Gives the records of buf the LSNs first_lsn, first_lsn + 1, ... in order,
 * chains their backlinks starting at backlink, and, when cpl is nonzero,
 * marks the last record as the mini-transaction's CPL carrying time. Other
 * records get time 0 and no CPL flag. *last_lsn receives the last LSN given.
 * A batch whose records do not fit its length is rejected before anything is
 * written; the stamped batch is then validated with the given backlink.
 */
int aus_stamp(uint8_t *buf, size_t len, uint32_t page_size, uint64_t first_lsn,
              uint64_t backlink, int cpl, double time, uint64_t *last_lsn,
              size_t *error_pos);

#endif
