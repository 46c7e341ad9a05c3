"""The redo record layout in Python: the mirror of csrc/record.h.

docs/format.md ("Redo records") is the specification; csrc/record.h is the
same table for the C core. Every value here carries its C name without
``AUS_`` (``RECORD_LENGTH_AT`` is ``AUS_RECORD_LENGTH_AT``), and
:data:`C_MIRROR` lists them by C name: the native layer compares each with the
compiled core when it loads it and refuses a core that disagrees
(``native.core_mismatches``). Python code that reads or writes a record field,
a kind, a flag or a shape word takes it from here.

Invariants, asserted at import: the fields follow each other with no gap and
fill the 48-byte header; the structs below read them at those offsets; the
shape word's fields do not overlap.

Record::

    0 lsn u64 | 8 backlink u64 | 16 page_no u64 | 24 time f64
    32 offset u32 | 36 length u32 | 40 kind u8 | 41 flags u8 | 42 reserved 6
    48 payload, zero-padded to a multiple of 8 bytes
"""

from __future__ import annotations

import struct

FORMAT_VERSION = 1
RECORD_HEADER_SIZE = 48
RECORD_ALIGN = 8  # payloads are zero-padded to a multiple of this

# Header fields: byte offset (_AT) and size in bytes (_SIZE).
RECORD_LSN_AT = 0
RECORD_LSN_SIZE = 8
RECORD_BACKLINK_AT = 8
RECORD_BACKLINK_SIZE = 8
RECORD_PAGE_NO_AT = 16
RECORD_PAGE_NO_SIZE = 8
RECORD_TIME_AT = 24
RECORD_TIME_SIZE = 8
RECORD_OFFSET_AT = 32
RECORD_OFFSET_SIZE = 4
RECORD_LENGTH_AT = 36
RECORD_LENGTH_SIZE = 4
RECORD_KIND_AT = 40
RECORD_KIND_SIZE = 1
RECORD_FLAGS_AT = 41
RECORD_FLAGS_SIZE = 1
RECORD_RESERVED_AT = 42
RECORD_RESERVED_SIZE = 6

# Record kinds; values are on disk, never reuse one.
KIND_WRITE = 1  # length bytes at offset within the page
KIND_PAGE = 2  # a full page image: offset 0, length page_size
KIND_ZERO = 3  # the page becomes zeros: offset 0, length 0

# Record flags; a bit outside FLAGS_KNOWN makes a record invalid.
FLAG_CPL = 1  # last record of a mini-transaction
FLAGS_KNOWN = 1

# The shape word of native.pack, one per record beside its page number:
# kind << SHAPE_KIND_SHIFT | offset << SHAPE_OFFSET_SHIFT | length.
SHAPE_FIELD_BITS = 20
SHAPE_FIELD_MASK = (1 << SHAPE_FIELD_BITS) - 1
SHAPE_LENGTH_SHIFT = 0
SHAPE_OFFSET_SHIFT = SHAPE_FIELD_BITS
SHAPE_KIND_SHIFT = 2 * SHAPE_FIELD_BITS

# (name, offset, size, struct code) of each header field, in order.
FIELDS = (
    ("lsn", RECORD_LSN_AT, RECORD_LSN_SIZE, "Q"),
    ("backlink", RECORD_BACKLINK_AT, RECORD_BACKLINK_SIZE, "Q"),
    ("page_no", RECORD_PAGE_NO_AT, RECORD_PAGE_NO_SIZE, "Q"),
    ("time", RECORD_TIME_AT, RECORD_TIME_SIZE, "d"),
    ("offset", RECORD_OFFSET_AT, RECORD_OFFSET_SIZE, "I"),
    ("length", RECORD_LENGTH_AT, RECORD_LENGTH_SIZE, "I"),
    ("kind", RECORD_KIND_AT, RECORD_KIND_SIZE, "B"),
    ("flags", RECORD_FLAGS_AT, RECORD_FLAGS_SIZE, "B"),
)
_CODES = "".join(code for _, _, _, code in FIELDS)

# The header without its reserved bytes (skipped when read, zeros when packed):
# lsn, backlink, page_no, time, offset, length, kind, flags.
RECORD_HEADER = struct.Struct(f"<{_CODES}{RECORD_RESERVED_SIZE}x")
# The same with the reserved bytes as a ninth value, for checking them.
RECORD_HEADER_RESERVED = struct.Struct(f"<{_CODES}{RECORD_RESERVED_SIZE}s")
RESERVED_ZERO = bytes(RECORD_RESERVED_SIZE)

_LENGTH = struct.Struct("<I")  # the length field alone


def padded(length: int) -> int:
    """``length`` payload bytes rounded up to :data:`RECORD_ALIGN`: the record's body."""
    return (length + RECORD_ALIGN - 1) & ~(RECORD_ALIGN - 1)


def record_size(length: int) -> int:
    """Bytes a record with ``length`` payload bytes takes in a batch."""
    return RECORD_HEADER_SIZE + padded(length)


def length_at(buf: bytes | bytearray | memoryview, position: int) -> int:
    """The length field of the record whose header starts at ``position``."""
    (length,) = _LENGTH.unpack_from(buf, position + RECORD_LENGTH_AT)
    return int(length)


def shape(kind: int, offset: int, length: int) -> int:
    """The shape word of one record for native.pack (offset and length below 2**20)."""
    assert 0 <= offset <= SHAPE_FIELD_MASK and 0 <= length <= SHAPE_FIELD_MASK, (offset, length)
    return kind << SHAPE_KIND_SHIFT | offset << SHAPE_OFFSET_SHIFT | length << SHAPE_LENGTH_SHIFT


# Every value csrc/record.h defines, by its C name: what the native layer checks.
C_MIRROR: dict[str, int] = {
    "AUS_" + name: value
    for name, value in globals().items()
    if name.isupper()
    and isinstance(value, int)
    and name.startswith(("FORMAT_", "RECORD_", "KIND_", "FLAG_", "FLAGS_", "SHAPE_"))
}

_prefix = "<"
for _name, _at, _size, _code in FIELDS:
    assert _at == struct.calcsize(_prefix), f"{_name} follows the field before it, no gap"
    assert _size == struct.calcsize("<" + _code), f"{_name} is read as its size"
    _prefix += _code
assert struct.calcsize(_prefix) == RECORD_RESERVED_AT
assert RECORD_RESERVED_AT + RECORD_RESERVED_SIZE == RECORD_HEADER_SIZE
assert RECORD_HEADER.size == RECORD_HEADER_RESERVED.size == RECORD_HEADER_SIZE == 48
assert RECORD_HEADER_SIZE % RECORD_ALIGN == 0 and RECORD_ALIGN & (RECORD_ALIGN - 1) == 0
assert FLAGS_KNOWN & FLAG_CPL == FLAG_CPL
assert SHAPE_KIND_SHIFT + 8 * RECORD_KIND_SIZE <= 64
del _prefix, _name, _at, _size, _code
