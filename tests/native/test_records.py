"""Packing and reading valid records: log.pack_record, log.BatchBuilder, validate and index.

Covers each record kind, payload padding, the CPL flag and time, the batch
summary of ``validate`` and the per-record columns of ``index``, on both
backends and through the module-level wrappers.
"""

from __future__ import annotations

import struct

import pytest
from sample_records import PAGE_SIZE, page_image, pattern, raw_record, write, zero

from aurora_storage import native
from aurora_storage.format import frames as log
from aurora_storage.native import NO_BACKLINK, BatchSummary

# The worked example of docs/format.md ("Redo records"), byte for byte.
FORMAT_DOC_EXAMPLE = bytes.fromhex(
    "0100000000000000"
    "0000000000000000"
    "0500000000000000"
    "0000000000000000"
    "0a00000005000000"
    "0100000000000000"
    "68656c6c6f000000"
    "0200000000000000"
    "0100000000000000"
    "0600000000000000"
    "000000000000f83f"
    "0000000000000000"
    "0301000000000000"
)


def test_pack_record_matches_the_worked_example_of_the_format_doc() -> None:
    packed = log.pack_record(1, 0, 5, log.KIND_WRITE, b"hello", offset=10) + log.pack_record(
        2, 1, 6, log.KIND_ZERO, flags=log.FLAG_CPL, time=1.5
    )
    assert len(packed) == 104
    assert packed == FORMAT_DOC_EXAMPLE


@pytest.mark.parametrize(
    ("length", "size"), [(0, 48), (1, 56), (7, 56), (8, 56), (9, 64), (16, 64), (4096, 4144)]
)
def test_record_size_rounds_the_payload_up_to_eight_bytes(length: int, size: int) -> None:
    assert log.record_size(length) == size
    assert len(log.pack_record(1, 0, 0, log.KIND_WRITE, bytes(length))) == size


def test_pack_record_header_fields_read_back() -> None:
    packed = log.pack_record(
        lsn=0x0102030405060708,
        backlink=0x1112131415161718,
        page_no=2**40 + 3,
        kind=log.KIND_WRITE,
        payload=b"abc",
        offset=4000,
        flags=log.FLAG_CPL,
        time=1234567.25,
    )
    fields = log.RECORD_HEADER.unpack_from(packed)
    assert fields == (0x0102030405060708, 0x1112131415161718, 2**40 + 3, 1234567.25, 4000, 3, 1, 1)
    assert packed[42:48] == bytes(6)
    assert packed[48:51] == b"abc"


def test_the_raw_record_builder_of_these_tests_packs_like_pack_record() -> None:
    fields = {"lsn": 9, "backlink": 4, "page_no": 77, "time": 3.5, "offset": 12}
    assert raw_record(**fields, length=3, flags=1, body=b"abc" + bytes(5)) == log.pack_record(
        9, 4, 77, log.KIND_WRITE, b"abc", offset=12, flags=1, time=3.5
    )


@pytest.mark.parametrize("length", range(1, 17))
def test_padding_after_the_payload_is_zero(length: int) -> None:
    payload = b"\xff" * length
    packed = write(1, 0, 0, payload)
    assert len(packed) % native.RECORD_ALIGN == 0
    assert packed[48 : 48 + length] == payload
    assert packed[48 + length :] == bytes(len(packed) - 48 - length)


def test_batch_builder_packs_the_same_bytes_as_pack_record() -> None:
    image = pattern(1, PAGE_SIZE)
    builder = log.BatchBuilder()
    builder.add(3, 0, 7, log.KIND_WRITE, b"hello", offset=10)
    builder.add(5, 3, 8, log.KIND_PAGE, image)
    builder.add(9, 5, 7, log.KIND_ZERO, flags=log.FLAG_CPL, time=2.5)
    expected = (
        write(3, 7, 10, b"hello")
        + page_image(5, 8, image, backlink=3)
        + zero(9, 7, backlink=5, flags=log.FLAG_CPL, time=2.5)
    )
    assert bytes(builder.buffer) == expected
    assert (builder.count, builder.first_lsn, builder.last_lsn) == (3, 3, 9)


def test_batch_builder_starts_empty() -> None:
    builder = log.BatchBuilder()
    assert (bytes(builder.buffer), builder.count, builder.first_lsn, builder.last_lsn) == (
        b"",
        0,
        0,
        0,
    )


@pytest.mark.parametrize("lsn", [4, 5])
def test_batch_builder_refuses_an_lsn_not_above_the_last(lsn: int) -> None:
    builder = log.BatchBuilder()
    builder.add(5, 0, 0, log.KIND_ZERO)
    with pytest.raises(AssertionError):
        builder.add(lsn, 0, 0, log.KIND_ZERO)


@pytest.mark.parametrize(
    "record",
    [
        write(1, 0, 0, b"x"),
        write(1, 0, PAGE_SIZE - 1, b"x"),
        write(1, 0, 0, bytes(PAGE_SIZE)),
        page_image(1, 0, pattern(2, PAGE_SIZE)),
        zero(1, 0),
    ],
    ids=["write-one-byte", "write-last-byte", "write-whole-page", "page", "zero"],
)
def test_validate_accepts_each_kind(backend: native.Backend, record: bytes) -> None:
    summary = backend.validate(record, PAGE_SIZE, 0, 1, NO_BACKLINK)
    length = struct.unpack_from("<I", record, 36)[0]
    assert summary == BatchSummary(1, 1, 1, 0, 0, length)


@pytest.mark.parametrize("page_size", [4096, 8192, 16384, 32768, 65536])
def test_validate_accepts_every_page_size(backend: native.Backend, page_size: int) -> None:
    batch = page_image(1, 0, pattern(page_size, page_size)) + write(2, 0, page_size - 3, b"end")
    summary = backend.validate(batch, page_size, 0, 1, NO_BACKLINK)
    assert summary == BatchSummary(2, 1, 2, 0, 0, page_size + 3)


def test_validate_summarizes_records_cpls_and_payload(backend: native.Backend) -> None:
    batch = (
        write(10, 1, 100, b"hello")
        + page_image(11, 2, pattern(3, PAGE_SIZE), flags=log.FLAG_CPL, time=7.0)
        + zero(15, 1)
        + write(20, 3, 0, b"abcdefghij", flags=log.FLAG_CPL, time=8.0)
        + write(21, 3, 50, b"tail")
    )
    summary = backend.validate(batch, PAGE_SIZE, 0, 4, NO_BACKLINK)
    assert summary == BatchSummary(
        count=5,
        first_lsn=10,
        last_lsn=21,
        cpl_count=2,
        last_cpl_lsn=20,
        payload_bytes=5 + PAGE_SIZE + 0 + 10 + 4,
        last_cpl_time=8.0,
    )


def test_validate_summary_without_any_cpl(backend: native.Backend) -> None:
    batch = write(1, 0, 0, b"a") + write(2, 0, 1, b"b")
    assert backend.validate(batch, PAGE_SIZE, 0, 1, NO_BACKLINK) == BatchSummary(2, 1, 2, 0, 0, 2)


def test_validate_accepts_the_largest_lsn(backend: native.Backend) -> None:
    batch = zero(native.LSN_MAX - 1, 0) + zero(native.LSN_MAX, 0, flags=log.FLAG_CPL)
    summary = backend.validate(batch, PAGE_SIZE, 0, 1, NO_BACKLINK)
    assert summary == BatchSummary(2, native.LSN_MAX - 1, native.LSN_MAX, 1, native.LSN_MAX, 0)


def test_validate_page_range_includes_lo_and_excludes_hi(backend: native.Backend) -> None:
    batch = zero(1, 100) + zero(2, 199)
    assert backend.validate(batch, PAGE_SIZE, 100, 200, NO_BACKLINK).count == 2


def test_validate_accepts_a_continuous_backlink_chain(backend: native.Backend) -> None:
    batch = zero(10, 0, backlink=7) + zero(12, 0, backlink=10) + zero(13, 0, backlink=12)
    assert backend.validate(batch, PAGE_SIZE, 0, 1, 7).count == 3


def test_validate_without_backlink_ignores_backlinks(backend: native.Backend) -> None:
    batch = zero(10, 0, backlink=99) + zero(12, 0, backlink=3)
    assert backend.validate(batch, PAGE_SIZE, 0, 1, NO_BACKLINK).count == 2


def test_validate_accepts_bytes_bytearray_and_memoryview(backend: native.Backend) -> None:
    batch = write(1, 0, 0, b"hello") + zero(2, 0, flags=log.FLAG_CPL, time=1.0)
    expected = backend.validate(batch, PAGE_SIZE, 0, 1, NO_BACKLINK)
    embedded = memoryview(b"\xee" * 24 + batch + b"\xee" * 8)[24 : 24 + len(batch)]
    for buffer in (bytearray(batch), memoryview(batch), embedded):
        assert backend.validate(buffer, PAGE_SIZE, 0, 1, NO_BACKLINK) == expected


def test_index_lists_the_columns_of_every_record(backend: native.Backend) -> None:
    batch = (
        write(10, 5, 10, b"hello")
        + page_image(11, 2**40, pattern(4, PAGE_SIZE), flags=log.FLAG_CPL, time=1700000000.125)
        + zero(30, 5, flags=log.FLAG_CPL, time=-0.5)
    )
    index = backend.index(batch, PAGE_SIZE)
    assert len(index) == 3
    assert list(index.page_nos) == [5, 2**40, 5]
    assert list(index.lsns) == [10, 11, 30]
    assert index.flags == bytes([0, log.FLAG_CPL, log.FLAG_CPL])
    assert list(index.times) == [0.0, 1700000000.125, -0.5]
    assert list(index.positions) == [0, 56, 56 + 48 + PAGE_SIZE]


def test_index_of_one_record(backend: native.Backend) -> None:
    index = backend.index(zero(1, 0), PAGE_SIZE)
    assert (list(index.page_nos), list(index.lsns), index.flags, list(index.positions)) == (
        [0],
        [1],
        b"\x00",
        [0],
    )


def test_index_checks_neither_page_range_nor_backlinks(backend: native.Backend) -> None:
    batch = zero(5, native.LSN_MAX, backlink=123) + zero(6, 0, backlink=77)
    assert list(backend.index(batch, PAGE_SIZE).page_nos) == [native.LSN_MAX, 0]


def test_cpl_time_reads_back_exactly(backend: native.Backend) -> None:
    times = [0.0, 1.5, 1e-300, 1700000000.123456, 2.0**62, -3.25, float("inf")]
    batch = b"".join(
        zero(lsn, 0, flags=log.FLAG_CPL, time=time) for lsn, time in enumerate(times, 1)
    )
    assert list(backend.index(batch, PAGE_SIZE).times) == times


def test_module_wrappers_validate_and_index_use_the_selected_backend(
    backend: native.Backend,
) -> None:
    batch = zero(4, 9, backlink=2) + write(6, 9, 0, b"x", backlink=4, flags=log.FLAG_CPL)
    assert native.backend is backend
    assert native.validate(batch, PAGE_SIZE) == BatchSummary(2, 4, 6, 1, 6, 1)
    assert native.validate(batch, PAGE_SIZE, page_lo=9, page_hi=10, backlink=2).count == 2
    assert list(native.index(batch, PAGE_SIZE).lsns) == [4, 6]
