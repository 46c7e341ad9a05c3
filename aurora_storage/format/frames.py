"""Redo records, record batches and frames: the wire and log formats.

A *record* is one change to one page; a *batch* is records packed end to end
in LSN order; a *frame* is a batch for one protection group (PG) with a
checksummed header, as shipped to segments and stored in their logs. The
byte layouts are specified in docs/format.md; the structs below are asserted
against it at import.

Record (48-byte header, payload zero-padded to 8 bytes)::

    0 lsn u64 | 8 backlink u64 | 16 page_no u64 | 24 time f64
    32 offset u32 | 36 length u32 | 40 kind u8 | 41 flags u8 | 42 reserved 6

Frame (64-byte header, then the batch)::

    0 magic u32 "AUFR" | 4 version u16 | 6 header_size u16 | 8 pg_id u64
    16 epoch u64 | 24 backlink u64 | 32 first_lsn u64 | 40 last_lsn u64
    48 record_count u32 | 52 body_length u32 | 56 checksum u64

Invariants: a valid frame's records form one backlink chain starting at the
frame's backlink, lie in the PG's page range, and its checksum is xxh3-64 of
header bytes 0..55 followed by the body.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

import xxhash

from .. import native
from ..errors import CorruptFrameError, FormatVersionError, InvalidRecordError

# The record layout's home is format/records.py; these names stay here for their users.
from .records import FLAG_CPL as FLAG_CPL
from .records import KIND_PAGE as KIND_PAGE
from .records import KIND_WRITE as KIND_WRITE
from .records import KIND_ZERO as KIND_ZERO
from .records import RECORD_HEADER as RECORD_HEADER
from .records import RECORD_HEADER_SIZE
from .records import record_size as record_size

FRAME_HEADER = struct.Struct("<IHHQQQQQIIQ")
FRAME_MAGIC = 0x52465541  # b"AUFR" read as a little-endian u32
FRAME_VERSION = 1
FRAME_HEADER_SIZE = 64
FRAME_CHECKED_PREFIX = 56  # header bytes covered by the checksum (all but itself)
_LAST_LSN = struct.Struct("<Q")
_LAST_LSN_AT = struct.calcsize("<IHHQQQQ")  # the header fields before last_lsn
FRAME_BODY_MAX = 64 * 1024 * 1024  # a frame body never exceeds 64 MiB

assert FRAME_HEADER.size == FRAME_HEADER_SIZE == 64
assert struct.pack("<I", FRAME_MAGIC) == b"AUFR"


def pack_record(
    lsn: int,
    backlink: int,
    page_no: int,
    kind: int,
    payload: bytes | bytearray | memoryview = b"",
    offset: int = 0,
    flags: int = 0,
    time: float = 0.0,
) -> bytes:
    """One record, header and padded payload; the caller keeps LSN order."""
    length = len(payload)
    padding = bytes(record_size(length) - RECORD_HEADER_SIZE - length)
    header = RECORD_HEADER.pack(lsn, backlink, page_no, time, offset, length, kind, flags)
    return b"".join((header, payload, padding))


class BatchBuilder:
    """Packs records end to end into one growing buffer (no per-record objects kept)."""

    __slots__ = ("buffer", "count", "first_lsn", "last_lsn")

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.count = 0
        self.first_lsn = 0
        self.last_lsn = 0

    def add(
        self,
        lsn: int,
        backlink: int,
        page_no: int,
        kind: int,
        payload: bytes | bytearray | memoryview = b"",
        offset: int = 0,
        flags: int = 0,
        time: float = 0.0,
    ) -> None:
        assert lsn > self.last_lsn, "records of a batch are added in LSN order"
        buffer = self.buffer
        start = len(buffer)
        length = len(payload)
        buffer += bytes(record_size(length))
        RECORD_HEADER.pack_into(
            buffer, start, lsn, backlink, page_no, time, offset, length, kind, flags
        )
        body = start + RECORD_HEADER_SIZE
        buffer[body : body + length] = payload
        if self.count == 0:
            self.first_lsn = lsn
        self.count += 1
        self.last_lsn = lsn


class Frame(NamedTuple):
    """A decoded, verified frame; ``body`` is a view of the packed records (a tuple:
    built once per frame at every node)."""

    pg_id: int
    epoch: int
    backlink: int
    first_lsn: int
    last_lsn: int
    record_count: int
    body: memoryview
    summary: native.BatchSummary

    @property
    def size(self) -> int:
        return FRAME_HEADER_SIZE + len(self.body)


def frame_checksum(
    header: bytes | bytearray | memoryview, body: bytes | bytearray | memoryview
) -> int:
    hasher = xxhash.xxh3_64(memoryview(header)[:FRAME_CHECKED_PREFIX])
    hasher.update(body)
    return hasher.intdigest()


def encode_frame(
    pg_id: int,
    epoch: int,
    backlink: int,
    first_lsn: int,
    last_lsn: int,
    record_count: int,
    body: bytes | bytearray | memoryview,
) -> bytes:
    """A frame around an already packed batch. The writer knows the summary; readers check it."""
    if len(body) > FRAME_BODY_MAX:
        raise InvalidRecordError(
            f"frame body of {len(body)} bytes over {FRAME_BODY_MAX}", 0, "length"
        )
    header = bytearray(
        FRAME_HEADER.pack(
            FRAME_MAGIC,
            FRAME_VERSION,
            FRAME_HEADER_SIZE,
            pg_id,
            epoch,
            backlink,
            first_lsn,
            last_lsn,
            record_count,
            len(body),
            0,
        )
    )
    struct.pack_into("<Q", header, FRAME_CHECKED_PREFIX, frame_checksum(header, body))
    return b"".join((header, body))


def frame_last_lsn(frame: bytes | bytearray | memoryview) -> int:
    """The last LSN a frame's header names, read without decoding the rest (a frame
    already verified: the log appends what segments chained)."""
    return int(_LAST_LSN.unpack_from(frame, _LAST_LSN_AT)[0])


def frame_length(buf: bytes | bytearray | memoryview, position: int = 0) -> int:
    """Total length of the frame starting at ``position``, from its header; checks the header only.

    Raises :class:`CorruptFrameError` when fewer than a header's bytes remain or
    the header is not a frame header.
    """
    view = memoryview(buf)
    if len(view) - position < FRAME_HEADER_SIZE:
        raise CorruptFrameError("fewer bytes than a frame header", position)
    magic, version, header_size = struct.unpack_from("<IHH", view, position)
    if magic != FRAME_MAGIC:
        raise CorruptFrameError(f"bad magic 0x{magic:08x}", position)
    if version != FRAME_VERSION:
        raise FormatVersionError(f"frame at byte {position}", version, FRAME_VERSION)
    if header_size != FRAME_HEADER_SIZE:
        raise CorruptFrameError(
            f"header size {header_size}, expected {FRAME_HEADER_SIZE}", position
        )
    (body_length,) = struct.unpack_from("<I", view, position + 52)
    if body_length > FRAME_BODY_MAX:
        raise CorruptFrameError(f"body length {body_length} over {FRAME_BODY_MAX}", position)
    return FRAME_HEADER_SIZE + int(body_length)


def decode_frame(
    buf: bytes | bytearray | memoryview,
    page_size: int,
    page_lo: int = 0,
    page_hi: int = native.LSN_MAX,
    position: int = 0,
) -> Frame:
    """Verifies and decodes the frame at ``position``: header, checksum, then every record.

    Raises :class:`CorruptFrameError` (with the byte position) for a bad header,
    a truncated frame or a checksum mismatch, :class:`FormatVersionError` for a
    frame of another version, and :class:`InvalidRecordError` (position within
    ``buf``) for a record that breaks a rule although the checksum matched.
    """
    view = memoryview(buf).cast("B")
    total = frame_length(view, position)
    if len(view) - position < total:
        raise CorruptFrameError(
            f"truncated: {len(view) - position} of {total} bytes present", position
        )
    (
        _magic,
        _version,
        _header_size,
        pg_id,
        epoch,
        backlink,
        first_lsn,
        last_lsn,
        record_count,
        _body_length,
        checksum,
    ) = FRAME_HEADER.unpack_from(view, position)
    header = view[position : position + FRAME_HEADER_SIZE]
    body = view[position + FRAME_HEADER_SIZE : position + total]
    if frame_checksum(header, body) != checksum:
        raise CorruptFrameError("checksum mismatch", position)
    try:
        summary = native.validate(body, page_size, page_lo, page_hi, backlink)
    except InvalidRecordError as error:
        raise InvalidRecordError(
            error.reason, position + FRAME_HEADER_SIZE + error.position, error.field
        ) from None
    if (summary.count, summary.first_lsn, summary.last_lsn) != (record_count, first_lsn, last_lsn):
        raise CorruptFrameError(
            f"header says {record_count} records {first_lsn}..{last_lsn}, body holds "
            f"{summary.count} records {summary.first_lsn}..{summary.last_lsn}",
            position,
        )
    return Frame(pg_id, epoch, backlink, first_lsn, last_lsn, record_count, body, summary)
