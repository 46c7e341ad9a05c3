"""Packing a transaction's records at commit (csrc/writer.c aus_pack, native.pack).

A transaction collects page numbers, shapes and payloads as rows are written
and packs each PG's records in one call at commit. Both backends must give
the very bytes the record format specifies (log.BatchBuilder, with LSN,
backlink and time left zero), refuse sizes that do not add up without
writing anything, and a transaction must keep each row as it was written.
"""

from __future__ import annotations

from array import array

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aurora_storage import Volume, native
from aurora_storage.errors import InvalidArgumentError, RecordTooLargeError
from aurora_storage.format import frames as log
from aurora_storage.protocol.transaction import MTR_BYTES_MAX

PAGE_SIZE = 4096

record = st.one_of(
    st.tuples(
        st.integers(0, 2**40),
        st.just(log.KIND_WRITE),
        st.integers(0, PAGE_SIZE - 1),
        st.binary(min_size=1, max_size=64),
    ),
    st.tuples(st.integers(0, 2**40), st.just(log.KIND_ZERO), st.just(0), st.just(b"")),
    st.tuples(
        st.integers(0, 2**40),
        st.just(log.KIND_PAGE),
        st.just(0),
        st.binary(min_size=PAGE_SIZE, max_size=PAGE_SIZE),
    ),
)


def packed_inputs(records: list[tuple[int, int, int, bytes]]) -> tuple[array[int], bytes, int]:
    meta = array("Q")
    for page_no, kind, offset, payload in records:
        meta += array("Q", [page_no, native.shape(kind, offset, len(payload))])
    size = sum(log.record_size(len(payload)) for *_, payload in records)
    return meta, b"".join(payload for *_, payload in records), size


def use_backend(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    monkeypatch.setattr(native, "backend", native.get_backend(name))


@settings(max_examples=200, deadline=None)
@given(records=st.lists(record, min_size=1, max_size=20))
def test_both_backends_pack_the_format_s_bytes(records: list[tuple[int, int, int, bytes]]) -> None:
    expected = log.BatchBuilder()
    for lsn, (page_no, kind, offset, payload) in enumerate(records, start=1):
        expected.add(lsn, 0, page_no, kind, payload, offset)
    meta, payload, size = packed_inputs(records)
    results = []
    for name in ("native", "python"):
        with pytest.MonkeyPatch.context() as patch:
            use_backend(patch, name)
            results.append(native.pack(meta, payload, size))
    # A packed batch has zero LSNs where the builder wrote 1, 2, ...: zero those too.
    zeroed = bytearray(expected.buffer)
    position = 0
    while position < len(zeroed):
        length = int.from_bytes(zeroed[position + 36 : position + 40], "little")
        zeroed[position : position + 8] = bytes(8)
        position += log.record_size(length)
    assert results[0] == results[1] == zeroed


@pytest.mark.parametrize("name", ["native", "python"])
@pytest.mark.parametrize("change", ["size", "payload"])
def test_sizes_that_do_not_add_up_are_refused(
    monkeypatch: pytest.MonkeyPatch, name: str, change: str
) -> None:
    use_backend(monkeypatch, name)
    meta, payload, size = packed_inputs(
        [(3, log.KIND_WRITE, 0, b"abc"), (4, log.KIND_ZERO, 0, b"")]
    )
    if change == "size":
        size += 8
    else:
        payload += b"!"
    with pytest.raises(InvalidArgumentError):
        native.pack(meta, payload, size)


def test_a_row_keeps_the_bytes_it_was_written_with() -> None:
    """The buffer a row was written from may change before commit: the row does not."""
    volume = Volume.create(None, page_size=PAGE_SIZE, segment_size=PAGE_SIZE * 16)
    buffer = bytearray(b"first")
    view = memoryview(bytearray(b"viewed"))
    with volume.transaction() as tx:
        tx.write(1, 0, buffer)
        tx.write(2, 8, view)
        buffer[:] = b"later"
        view[:] = b"VIEWED"
    assert volume.read_page(1)[:5] == b"first"
    assert volume.read_page(2)[8:14] == b"viewed"
    volume.close()


def test_a_multi_byte_memoryview_writes_all_its_bytes() -> None:
    """A row's length is its byte count, not its item count."""
    volume = Volume.create(None, page_size=PAGE_SIZE, segment_size=PAGE_SIZE * 16)
    words = array("Q", [1, 2, 3])
    with volume.transaction() as tx:
        tx.write(5, 0, memoryview(words))
    assert volume.read_page(5)[:24] == words.tobytes()
    volume.close()


@pytest.mark.parametrize("data", [5, 4096, [65, 66], "text"], ids=["int", "page", "list", "str"])
def test_data_that_is_not_bytes_like_is_refused(data: object) -> None:
    """bytes(5) would be five zero bytes: an int, a list or a str is refused instead."""
    volume = Volume.create(None, page_size=PAGE_SIZE, segment_size=PAGE_SIZE * 16)
    with volume.transaction() as tx:
        tx.write(1, 0, b"kept")
        with pytest.raises(InvalidArgumentError):
            tx.write(2, 0, data)  # type: ignore[arg-type]
        with pytest.raises(InvalidArgumentError):
            tx.put_page(3, data)  # type: ignore[arg-type]
    assert volume.read_page(1)[:4] == b"kept"
    assert volume.read_page(2) == volume.read_page(3) == bytes(PAGE_SIZE)
    volume.close()


def test_a_pg_s_records_never_outgrow_a_frame() -> None:
    """The limit counts each record packed, header and padding included, so a
    transaction that passes it always fits a frame at commit (the check used to
    count payload bytes only, and a batch just under it failed at commit)."""
    page = 65536
    volume = Volume.create(None, page_size=page, segment_size=page * 2048, capacity=page * 8192)
    image = bytes(page)
    tx = volume.transaction()
    tx.write(0, 0, b"pg 0")
    for page_no in range(2048, 2048 + 1023):
        tx.put_page(page_no, image)  # PG 1: 1023 records of 48 + 65536 bytes
    rest = MTR_BYTES_MAX - 1023 * (48 + page)
    with pytest.raises(RecordTooLargeError):
        tx.write(2048 + 1023, 0, b"x" * (rest - 32))  # 48 + rest - 32 bytes packed: too many
    tx.abort()
    with volume.transaction() as tx:
        tx.write(0, 0, b"next")
    assert volume.read_page(0)[:4] == b"next"
    volume.close()
