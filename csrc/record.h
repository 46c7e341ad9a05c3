/*
 * The one table of the redo record layout in C: where each header field lies,
 * the record kinds and flags, and the shape word the writer packs records
 * from. docs/format.md ("Redo records") is the specification; its Python
 * mirror is aurora_storage/format/records.py, which names each value as here
 * without "AUS_" and is checked against the compiled core when it is loaded
 * (tests/native/test_record_layout.py). C code reads and writes a field only
 * through these names (internal.h), never through a literal offset.
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
 *       48    - payload, zero-padded to a multiple of AUS_RECORD_ALIGN bytes
 *
 * Values are on disk and on the wire: never change or reuse one.
 *
 * Read by the cffi build script as cdef, which keeps the integer #defines and
 * drops the _Static_asserts (they are for the compiler alone).
 */
#ifndef AURORA_RECORD_H
#define AURORA_RECORD_H

#include <stdint.h>

#define AUS_FORMAT_VERSION 1
#define AUS_RECORD_HEADER_SIZE 48
#define AUS_RECORD_ALIGN 8 /* payloads are zero-padded to a multiple of this */

/* Header fields: byte offset (_AT) and size in bytes (_SIZE). */
#define AUS_RECORD_LSN_AT 0
#define AUS_RECORD_LSN_SIZE 8
#define AUS_RECORD_BACKLINK_AT 8
#define AUS_RECORD_BACKLINK_SIZE 8
#define AUS_RECORD_PAGE_NO_AT 16
#define AUS_RECORD_PAGE_NO_SIZE 8
#define AUS_RECORD_TIME_AT 24
#define AUS_RECORD_TIME_SIZE 8
#define AUS_RECORD_OFFSET_AT 32
#define AUS_RECORD_OFFSET_SIZE 4
#define AUS_RECORD_LENGTH_AT 36
#define AUS_RECORD_LENGTH_SIZE 4
#define AUS_RECORD_KIND_AT 40
#define AUS_RECORD_KIND_SIZE 1
#define AUS_RECORD_FLAGS_AT 41
#define AUS_RECORD_FLAGS_SIZE 1
#define AUS_RECORD_RESERVED_AT 42
#define AUS_RECORD_RESERVED_SIZE 6

/* Record kinds (docs/format.md). */
#define AUS_KIND_WRITE 1 /* length bytes at offset within the page */
#define AUS_KIND_PAGE 2  /* a full page image: offset 0, length page_size */
#define AUS_KIND_ZERO 3  /* the page becomes zeros: offset 0, length 0 */

/* Record flags; a flag bit outside AUS_FLAGS_KNOWN makes a record invalid. */
#define AUS_FLAG_CPL 1 /* last record of a mini-transaction */
#define AUS_FLAGS_KNOWN 1

/*
 * The shape word of aus_pack (writer.h), one per record, with the page
 * number beside it: kind << AUS_SHAPE_KIND_SHIFT | offset <<
 * AUS_SHAPE_OFFSET_SHIFT | length. Offset and length each take
 * AUS_SHAPE_FIELD_BITS bits, enough for any offset or length within a page.
 */
#define AUS_SHAPE_FIELD_BITS 20
#define AUS_SHAPE_FIELD_MASK 0xFFFFF
#define AUS_SHAPE_LENGTH_SHIFT 0
#define AUS_SHAPE_OFFSET_SHIFT 20
#define AUS_SHAPE_KIND_SHIFT 40

/* The fields follow each other with no gap and fill the header exactly. */
_Static_assert(AUS_RECORD_LSN_AT == 0, "lsn opens the header");
_Static_assert(AUS_RECORD_BACKLINK_AT == AUS_RECORD_LSN_AT + AUS_RECORD_LSN_SIZE, "backlink");
_Static_assert(AUS_RECORD_PAGE_NO_AT == AUS_RECORD_BACKLINK_AT + AUS_RECORD_BACKLINK_SIZE, "page_no");
_Static_assert(AUS_RECORD_TIME_AT == AUS_RECORD_PAGE_NO_AT + AUS_RECORD_PAGE_NO_SIZE, "time");
_Static_assert(AUS_RECORD_OFFSET_AT == AUS_RECORD_TIME_AT + AUS_RECORD_TIME_SIZE, "offset");
_Static_assert(AUS_RECORD_LENGTH_AT == AUS_RECORD_OFFSET_AT + AUS_RECORD_OFFSET_SIZE, "length");
_Static_assert(AUS_RECORD_KIND_AT == AUS_RECORD_LENGTH_AT + AUS_RECORD_LENGTH_SIZE, "kind");
_Static_assert(AUS_RECORD_FLAGS_AT == AUS_RECORD_KIND_AT + AUS_RECORD_KIND_SIZE, "flags");
_Static_assert(AUS_RECORD_RESERVED_AT == AUS_RECORD_FLAGS_AT + AUS_RECORD_FLAGS_SIZE, "reserved");
_Static_assert(AUS_RECORD_RESERVED_AT + AUS_RECORD_RESERVED_SIZE == AUS_RECORD_HEADER_SIZE,
               "the fields fill the header");
/* Each field's size is that of the C type it is read as. */
_Static_assert(AUS_RECORD_LSN_SIZE == sizeof(uint64_t), "lsn is a u64");
_Static_assert(AUS_RECORD_BACKLINK_SIZE == sizeof(uint64_t), "backlink is a u64");
_Static_assert(AUS_RECORD_PAGE_NO_SIZE == sizeof(uint64_t), "page_no is a u64");
_Static_assert(AUS_RECORD_TIME_SIZE == sizeof(double), "time is an f64");
_Static_assert(AUS_RECORD_OFFSET_SIZE == sizeof(uint32_t), "offset is a u32");
_Static_assert(AUS_RECORD_LENGTH_SIZE == sizeof(uint32_t), "length is a u32");
_Static_assert(AUS_RECORD_KIND_SIZE == sizeof(uint8_t), "kind is a u8");
_Static_assert(AUS_RECORD_FLAGS_SIZE == sizeof(uint8_t), "flags is a u8");
/* Kind, flags and reserved bytes are one aligned 8-byte word (one load checks them),
 * and every header stays 8-byte aligned in a batch. */
_Static_assert(AUS_RECORD_KIND_AT % 8 == 0 && AUS_RECORD_HEADER_SIZE - AUS_RECORD_KIND_AT == 8,
               "kind, flags and reserved fill the header's last word");
_Static_assert((AUS_RECORD_ALIGN & (AUS_RECORD_ALIGN - 1)) == 0 && AUS_RECORD_ALIGN == 8,
               "payloads pad to 8 bytes: padding checks read the body's last u64");
_Static_assert(AUS_RECORD_HEADER_SIZE % AUS_RECORD_ALIGN == 0, "headers stay aligned");
_Static_assert((AUS_FLAGS_KNOWN & AUS_FLAG_CPL) == AUS_FLAG_CPL, "CPL is a known flag");
/* The shape word's fields do not overlap and fit in 64 bits. */
_Static_assert(AUS_SHAPE_FIELD_MASK == (1u << AUS_SHAPE_FIELD_BITS) - 1, "field mask");
_Static_assert(AUS_SHAPE_LENGTH_SHIFT == 0 && AUS_SHAPE_OFFSET_SHIFT == AUS_SHAPE_FIELD_BITS &&
                   AUS_SHAPE_KIND_SHIFT == 2 * AUS_SHAPE_FIELD_BITS,
               "length, offset, kind side by side");
_Static_assert(AUS_SHAPE_KIND_SHIFT + 8 * AUS_RECORD_KIND_SIZE <= 64, "the kind fits the word");

#endif
