"""format/records.py mirrors csrc/record.h: the same values under the same names, and
the C core reads and writes each field where the Python table says it lies."""

from __future__ import annotations

import struct
from array import array
from types import SimpleNamespace
from typing import Any

import pytest

from aurora_storage import native
from aurora_storage.errors import InvalidRecordError
from aurora_storage.format import records

NATIVE: Any = native.get_backend("native")
LIB: Any = NATIVE.lib
PAGE_SIZE = 4096
LAYOUT_PREFIXES = (
    "AUS_FORMAT_",
    "AUS_RECORD_",
    "AUS_KIND_",
    "AUS_FLAG_",
    "AUS_FLAGS_",
    "AUS_SHAPE_",
)


def test_every_value_of_record_h_has_its_python_mirror_and_no_other() -> None:
    compiled = {name: getattr(LIB, name) for name in dir(LIB) if name.startswith(LAYOUT_PREFIXES)}
    assert compiled == records.C_MIRROR
    # The fields, kinds, flags and shape bits are all there.
    assert len(compiled) == 3 + 2 * 9 + 3 + 2 + 5


def test_the_field_table_matches_the_named_offsets() -> None:
    for name, at, size, code in records.FIELDS:
        assert getattr(records, f"RECORD_{name.upper()}_AT") == at
        assert getattr(records, f"RECORD_{name.upper()}_SIZE") == size == struct.calcsize(code)


def test_a_core_with_another_field_offset_is_refused() -> None:
    constants = {name: getattr(LIB, name) for name in dir(LIB) if name.startswith("AUS_")}
    moved = SimpleNamespace(**{**constants, "AUS_RECORD_LENGTH_AT": 37})
    assert native.core_mismatches(moved) == ["AUS_RECORD_LENGTH_AT is 37 in C, 36 here"]


def record_with_every_field_set() -> bytearray:
    """A valid WRITE record built field by field from the Python table's offsets."""
    payload = b"\x11\x22\x33"
    record = bytearray(records.record_size(len(payload)))
    struct.pack_into("<Q", record, records.RECORD_LSN_AT, 0x0102_0304_0506_0708)
    struct.pack_into("<Q", record, records.RECORD_BACKLINK_AT, 0x0102_0304_0506_0707)
    struct.pack_into("<Q", record, records.RECORD_PAGE_NO_AT, 0x0A0B_0C0D)
    struct.pack_into("<d", record, records.RECORD_TIME_AT, 1234.5)
    struct.pack_into("<I", record, records.RECORD_OFFSET_AT, 4000)
    struct.pack_into("<I", record, records.RECORD_LENGTH_AT, len(payload))
    record[records.RECORD_KIND_AT] = records.KIND_WRITE
    record[records.RECORD_FLAGS_AT] = records.FLAG_CPL
    record[records.RECORD_HEADER_SIZE : records.RECORD_HEADER_SIZE + len(payload)] = payload
    return record


def test_the_c_core_reads_each_field_where_the_python_table_puts_it() -> None:
    record = record_with_every_field_set()
    assert records.RECORD_HEADER.unpack_from(record) == (
        0x0102_0304_0506_0708,
        0x0102_0304_0506_0707,
        0x0A0B_0C0D,
        1234.5,
        4000,
        3,
        records.KIND_WRITE,
        records.FLAG_CPL,
    )
    index = NATIVE.index(record, PAGE_SIZE)
    assert list(index.page_nos) == [0x0A0B_0C0D]
    assert list(index.lsns) == [0x0102_0304_0506_0708]
    assert index.flags == bytes([records.FLAG_CPL])
    assert list(index.times) == [1234.5]
    summary = NATIVE.validate(record, PAGE_SIZE, 0, native.LSN_MAX, 0x0102_0304_0506_0707)
    assert (summary.count, summary.payload_bytes, summary.last_cpl_time) == (1, 3, 1234.5)
    page = bytearray(PAGE_SIZE)
    NATIVE.apply(
        record, PAGE_SIZE, array("Q", [0x0A0B_0C0D]), page, None, native.LSN_MAX, array("Q")
    )
    assert page[4000:4003] == b"\x11\x22\x33"


@pytest.mark.parametrize(
    "offset",
    [records.RECORD_RESERVED_AT + i for i in range(records.RECORD_RESERVED_SIZE)]
    + [records.RECORD_FLAGS_AT],
)
def test_the_c_core_checks_the_reserved_bytes_and_flags_where_the_table_puts_them(
    offset: int,
) -> None:
    record = record_with_every_field_set()
    record[offset] |= 0x80
    with pytest.raises(InvalidRecordError) as raised:
        NATIVE.validate(record, PAGE_SIZE, 0, native.LSN_MAX, native.NO_BACKLINK)
    assert raised.value.field == "flags"


@pytest.mark.parametrize("backend_name", native.BACKEND_NAMES)
def test_pack_and_stamp_write_the_fields_the_table_names(
    backend_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(native, "backend", native.get_backend(backend_name))
    payload = b"\x11\x22\x33"
    meta = array("Q", [0x0A0B_0C0D, records.shape(records.KIND_WRITE, 4000, len(payload))])
    meta += array("Q", [7, records.shape(records.KIND_ZERO, 0, 0)])
    size = records.record_size(len(payload)) + records.record_size(0)
    packed = native.pack(meta, payload, size)
    assert records.RECORD_HEADER.unpack_from(packed) == (0, 0, 0x0A0B_0C0D, 0.0, 4000, 3, 1, 0)
    second = records.record_size(len(payload))
    assert records.RECORD_HEADER.unpack_from(packed, second) == (0, 0, 7, 0.0, 0, 0, 3, 0)
    last = native.stamp(
        packed, PAGE_SIZE, 0x0102_0304_0506_0708, 0x0102_0304_0506_0707, True, 1234.5
    )
    assert last == 0x0102_0304_0506_0709
    assert records.RECORD_HEADER.unpack_from(packed) == (
        0x0102_0304_0506_0708,
        0x0102_0304_0506_0707,
        0x0A0B_0C0D,
        0.0,  # time and the CPL flag go to the last record only
        4000,
        3,
        records.KIND_WRITE,
        0,
    )
    assert packed[records.RECORD_HEADER_SIZE : second] == payload + bytes(5)
    assert records.RECORD_HEADER.unpack_from(packed, second) == (
        0x0102_0304_0506_0709,
        0x0102_0304_0506_0708,
        7,
        1234.5,
        0,
        0,
        records.KIND_ZERO,
        records.FLAG_CPL,
    )
