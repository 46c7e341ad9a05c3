/*
 * Page log: one segment's records indexed by page, and its coalesced page
 * images. The per-record work of a storage node (indexing what arrives,
 * materializing a page at a read point, coalescing records into images) is
 * done here, one call per batch or per page.
 *
 * An aus_pagelog is opaque and owned by C: aus_pagelog_new allocates it,
 * aus_pagelog_free releases it (Python ties that to the object's lifetime
 * with ffi.gc). It keeps copies of the records it is given, so no pointer
 * into Python memory outlives a call. Allocation failure returns AUS_E_NOMEM
 * and leaves the log as it was before the call.
 *
 * Read by the cffi build script as cdef: declarations only.
 */
#ifndef AURORA_PAGELOG_H
#define AURORA_PAGELOG_H

#include <stddef.h>
#include <stdint.h>

#define AUS_E_NOMEM 13  /* an allocation failed; nothing changed */
#define AUS_E_GONE 14   /* the version asked for was coalesced away */
#define AUS_PAGELOG_STATS 6

typedef struct aus_pagelog aus_pagelog;

aus_pagelog *aus_pagelog_new(uint32_t page_size);
void aus_pagelog_free(aus_pagelog *log);

/*
 * Validates a batch (rules 1-6 of docs/format.md) and indexes a copy of each
 * record by page. A record whose LSN the page already holds, or that is not
 * above the page's coalesced image, is skipped as a duplicate. *added counts
 * the records kept. On any error nothing is added.
 */
int aus_pagelog_append(aus_pagelog *log, const uint8_t *buf, size_t len,
                       uint64_t *added, size_t *error_pos);

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
 * Folds every record <= lsn into its page's image, skipping annulled records,
 * and drops those records. The caller guarantees no reader, backtrack or
 * backup needs a version older than lsn. *folded counts records dropped.
 */
int aus_pagelog_coalesce(aus_pagelog *log, uint64_t lsn,
                         const uint64_t *annulled, size_t n_annulled,
                         uint64_t *folded);

/*
 * Installs a coalesced image for a page that holds no record yet (a node
 * loading its checkpoint): the page reads as image up to image_lsn, and
 * records at or below image_lsn are duplicates from then on. AUS_E_ARGUMENT
 * if the page already holds records or an image; nothing changes on error.
 */
int aus_pagelog_set_image(aus_pagelog *log, uint64_t page_no,
                          const uint8_t *image, uint64_t image_lsn);

/*
 * stats receives {pages, records, record bytes, images, image bytes, bytes
 * allocated}.
 */
void aus_pagelog_stats(const aus_pagelog *log, uint64_t *stats);

/* Writes up to capacity page numbers (unordered) and their count. */
int aus_pagelog_pages(const aus_pagelog *log, uint64_t *page_nos,
                      size_t capacity, size_t *count);

#endif
