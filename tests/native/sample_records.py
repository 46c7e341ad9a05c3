"""Builders of records, batches and pages shared by the native tests.

``raw_record`` packs any header, including invalid ones, so the bad-input
tests can build every corruption shape; the other builders go through
``log.pack_record`` and so produce valid records.
"""

from __future__ import annotations

import random
import struct
from array import array
from collections.abc import Sequence

import pytest

from aurora_storage import native
from aurora_storage.errors import InvalidRecordError
from aurora_storage.format import frames as log

PAGE_SIZE = 4096
RAW_HEADER = struct.Struct("<QQQdIIBB6s")


def pattern(seed: int, size: int) -> bytes:
    """Deterministic pseudo-random bytes, different for each seed."""
    return random.Random(seed).randbytes(size)


def write(
    lsn: int,
    page_no: int,
    offset: int,
    payload: bytes,
    *,
    backlink: int = 0,
    flags: int = 0,
    time: float = 0.0,
) -> bytes:
    return log.pack_record(
        lsn, backlink, page_no, log.KIND_WRITE, payload, offset=offset, flags=flags, time=time
    )


def page_image(
    lsn: int,
    page_no: int,
    image: bytes,
    *,
    backlink: int = 0,
    flags: int = 0,
    time: float = 0.0,
) -> bytes:
    return log.pack_record(lsn, backlink, page_no, log.KIND_PAGE, image, flags=flags, time=time)


def zero(lsn: int, page_no: int, *, backlink: int = 0, flags: int = 0, time: float = 0.0) -> bytes:
    return log.pack_record(lsn, backlink, page_no, log.KIND_ZERO, flags=flags, time=time)


def raw_record(
    *,
    lsn: int = 1,
    backlink: int = 0,
    page_no: int = 0,
    time: float = 0.0,
    offset: int = 0,
    length: int = 8,
    kind: int = log.KIND_WRITE,
    flags: int = 0,
    reserved: bytes = bytes(6),
    body: bytes | None = None,
) -> bytes:
    """A record with any header; ``body`` defaults to ``length`` zero bytes padded to 8."""
    header = RAW_HEADER.pack(lsn, backlink, page_no, time, offset, length, kind, flags, reserved)
    if body is None:
        body = bytes(log.record_size(length) - native.RECORD_HEADER_SIZE)
    return header + body


def pages_of(count: int, page_size: int = PAGE_SIZE, seed: int = 0) -> bytearray:
    """``count`` page images of recognizable, non-zero content."""
    return bytearray(pattern(seed, count * page_size))


def page_numbers(*numbers: int) -> array[int]:
    return array("Q", numbers)


def assert_invalid_record(error: BaseException, status: int, position: int) -> None:
    """``error`` is the InvalidRecordError the status table gives ``status`` at ``position``."""
    with pytest.raises(InvalidRecordError) as expected:
        native.raise_for_status(status, position)
    assert type(error) is InvalidRecordError
    assert (error.reason, error.field, error.position) == (
        expected.value.reason,
        expected.value.field,
        position,
    )


Record = tuple[int, int, int, int, bytes]  # LSN, page, kind, offset, payload


def batch_of(records: Sequence[Record]) -> bytes:
    """One packed batch of the records, in order."""
    builder = log.BatchBuilder()
    for lsn, page_no, kind, offset, payload in records:
        builder.add(lsn, 0, page_no, kind, payload, offset)
    return bytes(builder.buffer)


def replay(
    records: Sequence[Record],
    page_no: int,
    bound: int,
    annulled: Sequence[tuple[int, int]] = (),
    start: bytes | None = None,
) -> bytes:
    """The model of a page log: the page as of ``bound``, from ``start`` (zeros when
    None), records applied one by one, the ones inside an annulled range skipped."""
    image = bytearray(start if start is not None else bytes(PAGE_SIZE))
    for record_lsn, record_page, kind, offset, payload in records:
        if record_page != page_no or record_lsn > bound:
            continue
        if any(lo < record_lsn <= hi for lo, hi in annulled):
            continue
        if kind == log.KIND_ZERO:
            image[:] = bytes(PAGE_SIZE)
        else:
            image[offset : offset + len(payload)] = payload
    return bytes(image)


def record_of(lsn: int, page_no: int, kind: int, offset: int, length: int) -> Record:
    """A record of ``kind`` for the property tests: a write of ``length`` bytes at
    ``offset`` (moved back to fit), a whole page, or a zeroed page; payloads follow
    from the LSN."""
    if kind == log.KIND_WRITE:
        return lsn, page_no, kind, min(offset, PAGE_SIZE - length), bytes([lsn % 251]) * length
    if kind == log.KIND_PAGE:
        return lsn, page_no, kind, 0, bytes([lsn % 13]) * PAGE_SIZE
    return lsn, page_no, kind, 0, b""


def disjoint_ranges(annul: Sequence[tuple[int, int]], base: int = 0) -> list[tuple[int, int]]:
    """Sorted, disjoint annulled ranges (lo, hi] from (start, width) pairs above ``base``."""
    ranges: list[tuple[int, int]] = []
    for start, width in sorted(annul):
        lo = max(base + start, ranges[-1][1] if ranges else 0)
        ranges.append((lo, lo + width))
    return ranges
