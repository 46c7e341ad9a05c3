/*
 * Writer-side batch work: a mini-transaction's records are packed as they are
 * written, with LSN and backlink left zero, and stamped in one call at commit,
 * once the writer has allocated the MTR's LSN range.
 *
 * Read by the cffi build script as cdef: declarations only.
 */
#ifndef AURORA_WRITER_H
#define AURORA_WRITER_H

#include <stddef.h>
#include <stdint.h>

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
