/*
 * Page log: one segment's records indexed by page, and its coalesced page
 * images. The per-record work of a storage node (indexing what arrives,
 * materializing a page at a read point, coalescing records into images) is
 * done here, one call per batch or per page.
 *
 * An aus_pagelog is opaque and owned by C: aus_pagelog_new allocates it,
 * aus_pagelog_free releases it (Python ties that to the object's lifetime
 * with ffi.gc). It keeps copies of the records and images it is given, so no
 * pointer into Python memory outlives a call, with one exception: images
 * installed with aus_pagelog_share borrow a block of the caller's memory
 * (shared images, below). Allocation failure returns AUS_E_NOMEM and leaves
 * the log reading as it did before the call.
 *
 * Shared images: several logs (the six replicas of a restored protection
 * group) can point their pages into one immutable block instead of each
 * holding a copy, as fast clones share pages until written. A log never
 * writes or frees a block: before it changes a shared image in place (only
 * coalescing does) it gives the page a private copy, and the block loses a
 * borrower. The caller keeps each block alive and unchanged while
 * aus_pagelog_borrowers reports borrowers, or until the log is freed
 * (aus_pagelog_free reads no image).
 *
 * Read by the cffi build script as cdef: declarations only.
 */
#ifndef AURORA_PAGELOG_H
#define AURORA_PAGELOG_H

#include <stddef.h>
#include <stdint.h>

#include "status.h"

#define AUS_PAGELOG_STATS 8
#define AUS_PAGES_ALL 0          /* aus_pagelog_pages: every page the log knows */
#define AUS_PAGES_WITH_RECORDS 1 /* aus_pagelog_pages: pages holding records */

typedef struct aus_pagelog aus_pagelog;

aus_pagelog *aus_pagelog_new(uint32_t page_size);
void aus_pagelog_free(aus_pagelog *log);

/*
 * Validates a batch (rules 1-6 of docs/format.md) and indexes a copy of each
 * record by page. A record whose LSN the page already holds, or that is not
 * above the page's coalesced image, is skipped as a duplicate. *added counts
 * the records kept. Only records of pages in [page_lo, page_hi) are kept
 * (0, UINT64_MAX: every page): a history read indexes one page's records out
 * of a whole log. On any error nothing is added.
 */
int aus_pagelog_append(aus_pagelog *log, const uint8_t *buf, size_t len, uint64_t page_lo,
                       uint64_t page_hi, uint64_t *added, size_t *error_pos);

/*
 * Writes into out (page_size bytes) the page as of lsn_bound: its coalesced
 * image (or zeros) with every later record <= lsn_bound applied, skipping
 * records in the annulled ranges (lo, hi]. *page_lsn receives the LSN of the
 * last change the image reflects, *applied the records applied. AUS_E_GONE if
 * the page's coalesced image is newer than lsn_bound.
 */
int aus_pagelog_materialize(aus_pagelog *log, uint64_t page_no,
                            uint64_t lsn_bound, const uint64_t *annulled,
                            size_t n_annulled, uint8_t *out,
                            uint64_t *page_lsn, uint64_t *applied);

/*
 * aus_pagelog_materialize for count pages in one call: page page_nos[i] (in
 * any order) goes to out + i * page_size and its page LSN to page_lsns[i]; out
 * holds count pages. *applied counts the records applied to all of them.
 * AUS_E_ARGUMENT for invalid annulled ranges (nothing written); AUS_E_GONE if
 * a page's image is newer than lsn_bound: *error_index names it, and the
 * pages before it are written.
 */
int aus_pagelog_materialize_many(aus_pagelog *log, const uint64_t *page_nos,
                                 size_t count, uint64_t lsn_bound,
                                 const uint64_t *annulled, size_t n_annulled,
                                 uint8_t *out, uint64_t *page_lsns,
                                 uint64_t *applied, size_t *error_index);

/*
 * Folds every record <= lsn into its page's image, skipping annulled records,
 * and drops those records. The caller guarantees no reader, backtrack or
 * backup needs a version older than lsn. *folded counts records dropped. A
 * shared image records are folded onto is first copied (copy on write).
 */
int aus_pagelog_coalesce(aus_pagelog *log, uint64_t lsn,
                         const uint64_t *annulled, size_t n_annulled,
                         uint64_t *folded);

/*
 * Installs a coalesced image for a page that holds no image (a node loading
 * its checkpoint, or reading a page back from its page store): the page
 * reads as image up to image_lsn, then its records, and records at or below
 * image_lsn are duplicates from then on. AUS_E_ARGUMENT if the page already
 * holds an image, or a record at or below image_lsn; nothing changes on error.
 */
int aus_pagelog_set_image(aus_pagelog *log, uint64_t page_no,
                          const uint8_t *image, uint64_t image_lsn);

/*
 * Installs count images at once without copying them, for pages that hold
 * no record yet: page page_nos[i] (strictly ascending) reads as the page_size
 * bytes at block + i * page_size up to image_lsn, as after
 * aus_pagelog_set_image. block_length must cover count pages. A page that
 * already holds records or an image is an AUS_E_ARGUMENT error, or, with fill
 * set, is left as it is (a later call fills only the gaps of earlier ones).
 * Nothing changes on error. The log borrows the block (shared images, above):
 * *block_id names it for aus_pagelog_borrowers (ids start at 1), *installed
 * counts the pages that borrow it.
 */
int aus_pagelog_share(aus_pagelog *log, const uint8_t *block, size_t block_length,
                      const uint64_t *page_nos, size_t count, uint64_t image_lsn,
                      int fill, uint32_t *block_id, uint64_t *installed);

/*
 * *borrowers receives how many of the log's images still point into block
 * block_id; at 0 the caller may release it. AUS_E_ARGUMENT for an id the log
 * never gave.
 */
int aus_pagelog_borrowers(const aus_pagelog *log, uint32_t block_id,
                          uint64_t *borrowers);

/*
 * stats receives {pages, records, record bytes, images, image bytes, bytes
 * allocated, shared images, shared image bytes}. Images and image bytes count
 * every image, shared ones included; shared images are those that borrow a
 * block, and bytes allocated counts only memory the log owns (never blocks).
 */
void aus_pagelog_stats(const aus_pagelog *log, uint64_t *stats);

/*
 * Forgets clean pages to free memory: a page whose image is at or below
 * clean_lsn (its page store holds it) and that holds no record. A CLOCK
 * sweep picks them: a page read or installed since the hand last passed is
 * spared once. Stops once want_bytes of images are gone, or after two turns.
 * A forgotten page's entry goes whole: the log knows nothing of it, and a
 * reader installs its image again (aus_pagelog_set_image) before reading it.
 * *dropped receives the image bytes forgotten (page_size each).
 */
int aus_pagelog_evict(aus_pagelog *log, uint64_t clean_lsn, uint64_t want_bytes,
                      uint64_t *dropped);

/*
 * Forgets the named pages whole, image and records (pages it does not hold
 * are skipped); *forgotten receives how many it held. A page whose image a
 * rewrite of history replaced is forgotten, then read back from its store.
 */
int aus_pagelog_forget(aus_pagelog *log, const uint64_t *page_nos, size_t count,
                       uint64_t *forgotten);

/*
 * Writes to out (room for count) the pages of page_nos that hold no image,
 * in order, and their number to *found: what a reader must install first.
 */
int aus_pagelog_missing(const aus_pagelog *log, const uint64_t *page_nos, size_t count,
                        uint64_t *out, size_t *found);

/*
 * Writes the page numbers of the pages `which` selects (AUS_PAGES_ALL or
 * AUS_PAGES_WITH_RECORDS), unordered, and their count; AUS_E_CAPACITY with
 * nothing written if more than capacity.
 */
int aus_pagelog_pages(const aus_pagelog *log, int which, uint64_t *page_nos,
                      size_t capacity, size_t *count);

#endif
