/*
 * The one table of statuses the C core returns, each with its meaning.
 *
 * Every C function that can fail returns one of these (an int); the position
 * or index of what failed, where there is one, comes back through an output
 * argument. Values cross into Python: aurora_storage/native/__init__.py maps
 * each to its exception in one table (STATUS_TABLE), and checks when the
 * compiled core is loaded that every AUS_E_* here has its row there. Never
 * reuse a value.
 *
 * Read by the cffi build script as cdef: integer #defines only.
 */
#ifndef AURORA_STATUS_H
#define AURORA_STATUS_H

#define AUS_OK 0

/* A bad record: the batch breaks a rule of docs/format.md ("Redo records"),
 * at the record whose byte position the call reports. */
#define AUS_E_TRUNCATED 1   /* header or payload runs past the buffer end */
#define AUS_E_KIND 2        /* unknown record kind */
#define AUS_E_RANGE 3       /* offset + length past the page end */
#define AUS_E_LSN_ORDER 4   /* LSN zero or not strictly increasing */
#define AUS_E_RESERVED 5    /* unknown flag bits or nonzero reserved field */
#define AUS_E_LENGTH 6      /* length does not fit the kind */
#define AUS_E_PAGE 7        /* page number outside the allowed range */
#define AUS_E_BACKLINK 8    /* backlink does not continue the chain */
#define AUS_E_EMPTY 9       /* a batch with no record */
#define AUS_E_PADDING 10    /* nonzero padding after a payload */

/* A call that could not be done (see each function for what it left). */
#define AUS_E_CAPACITY 11   /* an output array is too small */
#define AUS_E_ARGUMENT 12   /* a bad argument (page size, annulled ranges, state) */
#define AUS_E_NOMEM 13      /* an allocation failed */
#define AUS_E_GONE 14       /* the page version asked for was coalesced away */

#endif
