"""Applying valid batches to page images: native.Backend.apply and native.apply.

Covers each kind, one page and many pages (dense and sparse page numbers),
records of unlisted pages, the LSN bound, annulled ranges (lo, hi], and
page_lsns (skipping and updating), on both backends.
"""

from __future__ import annotations

from array import array

import pytest
from sample_records import PAGE_SIZE, page_image, page_numbers, pages_of, pattern, write, zero

from aurora_storage import native
from aurora_storage.native import LSN_MAX

NO_ANNULLED = array("Q")


def page_at(pages: bytearray, slot: int, page_size: int = PAGE_SIZE) -> bytes:
    return bytes(pages[slot * page_size : (slot + 1) * page_size])


def test_write_copies_the_payload_at_its_offset(backend: native.Backend) -> None:
    pages = pages_of(1)
    expected = bytearray(pages)
    expected[100:105] = b"hello"
    applied = backend.apply(
        write(1, 7, 100, b"hello"), PAGE_SIZE, page_numbers(7), pages, None, LSN_MAX, NO_ANNULLED
    )
    assert applied == 1
    assert pages == expected


def test_write_reaches_the_last_byte_of_the_page(backend: native.Backend) -> None:
    pages = bytearray(PAGE_SIZE)
    backend.apply(
        write(1, 0, PAGE_SIZE - 2, b"yz"), PAGE_SIZE, page_numbers(0), pages, None, 9, NO_ANNULLED
    )
    assert pages[-3:] == b"\x00yz"


def test_page_image_replaces_the_whole_page(backend: native.Backend) -> None:
    image = pattern(5, PAGE_SIZE)
    pages = pages_of(1)
    applied = backend.apply(
        page_image(1, 0, image), PAGE_SIZE, page_numbers(0), pages, None, LSN_MAX, NO_ANNULLED
    )
    assert applied == 1
    assert bytes(pages) == image


def test_zero_clears_the_whole_page(backend: native.Backend) -> None:
    pages = pages_of(1)
    applied = backend.apply(
        zero(1, 0), PAGE_SIZE, page_numbers(0), pages, None, LSN_MAX, NO_ANNULLED
    )
    assert applied == 1
    assert pages == bytes(PAGE_SIZE)


def test_records_apply_in_lsn_order(backend: native.Backend) -> None:
    image = pattern(6, PAGE_SIZE)
    batch = (
        write(1, 0, 0, b"first")
        + write(2, 0, 2, b"SECOND")
        + zero(3, 0)
        + write(4, 0, 10, b"after zero")
        + page_image(5, 0, image)
        + write(6, 0, PAGE_SIZE - 4, b"last")
    )
    pages = pages_of(1)
    applied = backend.apply(batch, PAGE_SIZE, page_numbers(0), pages, None, LSN_MAX, NO_ANNULLED)
    assert applied == 6
    assert bytes(pages) == image[:-4] + b"last"


@pytest.mark.parametrize("page_size", [8192, 65536])
def test_apply_with_larger_pages(backend: native.Backend, page_size: int) -> None:
    image = pattern(7, page_size)
    batch = page_image(1, 1, image) + write(2, 0, page_size - 1, b"!") + zero(3, 2)
    pages = pages_of(3, page_size)
    expected = bytearray(pages)
    expected[page_size - 1 : page_size] = b"!"
    expected[page_size : 2 * page_size] = image
    expected[2 * page_size :] = bytes(page_size)
    applied = backend.apply(
        batch, page_size, page_numbers(0, 1, 2), pages, None, LSN_MAX, NO_ANNULLED
    )
    assert applied == 3
    assert pages == expected


def test_dense_page_numbers_map_to_consecutive_slots(backend: native.Backend) -> None:
    page_nos = page_numbers(10, 11, 12, 13, 14)
    batch = b"".join(
        write(lsn, page_no, page_no, bytes([page_no]) * 3)
        for lsn, page_no in enumerate([14, 10, 12, 11, 13], 1)
    )
    pages = bytearray(5 * PAGE_SIZE)
    assert backend.apply(batch, PAGE_SIZE, page_nos, pages, None, LSN_MAX, NO_ANNULLED) == 5
    for slot, page_no in enumerate(page_nos):
        expected = bytearray(PAGE_SIZE)
        expected[page_no : page_no + 3] = bytes([page_no]) * 3
        assert page_at(pages, slot) == expected


def test_sparse_page_numbers_map_to_their_slots(backend: native.Backend) -> None:
    page_nos = page_numbers(3, 17, 1000, 2**40, LSN_MAX)
    batch = b"".join(
        write(lsn, page_no, 8 * slot, b"slot%d" % slot)
        for lsn, (slot, page_no) in enumerate(reversed(list(enumerate(page_nos))), 1)
    )
    pages = pages_of(5)
    expected = bytearray(pages)
    for slot in range(5):
        start = slot * PAGE_SIZE + 8 * slot
        expected[start : start + 5] = b"slot%d" % slot
    assert backend.apply(batch, PAGE_SIZE, page_nos, pages, None, LSN_MAX, NO_ANNULLED) == 5
    assert pages == expected


@pytest.mark.parametrize(
    "page_nos",
    [page_numbers(10, 11, 12), page_numbers(10, 12, 14)],
    ids=["dense", "sparse"],
)
def test_records_of_unlisted_pages_are_skipped(
    backend: native.Backend, page_nos: array[int]
) -> None:
    unlisted = [0, 9, 13, 15, 2**63, LSN_MAX]
    batch = b"".join(
        write(lsn, page_no, 0, b"unlisted") for lsn, page_no in enumerate(unlisted, 1)
    ) + write(100, 12, 0, b"listed")
    pages = pages_of(3)
    expected = bytearray(pages)
    slot = list(page_nos).index(12)
    expected[slot * PAGE_SIZE : slot * PAGE_SIZE + 6] = b"listed"
    assert backend.apply(batch, PAGE_SIZE, page_nos, pages, None, LSN_MAX, NO_ANNULLED) == 1
    assert pages == expected


def test_apply_to_no_page_applies_nothing(backend: native.Backend) -> None:
    pages = bytearray()
    batch = write(1, 0, 0, b"x") + zero(2, 1)
    assert backend.apply(batch, PAGE_SIZE, page_numbers(), pages, None, LSN_MAX, NO_ANNULLED) == 0
    assert pages == b""


def test_apply_leaves_bytes_past_the_listed_pages_alone(backend: native.Backend) -> None:
    pages = pages_of(2)
    expected = bytearray(bytes(PAGE_SIZE)) + pages[PAGE_SIZE:]
    assert (
        backend.apply(zero(1, 4), PAGE_SIZE, page_numbers(4), pages, None, LSN_MAX, NO_ANNULLED)
        == 1
    )
    assert pages == expected


def lsn_marks(lsns: list[int], page_no: int = 0) -> bytes:
    """One WRITE per LSN, each marking its own byte (offset = LSN) with 0xff."""
    return b"".join(write(lsn, page_no, lsn, b"\xff") for lsn in lsns)


def marked_lsns(page: bytes | bytearray) -> list[int]:
    return [offset for offset, value in enumerate(page) if value == 0xFF]


@pytest.mark.parametrize(
    ("lsn_bound", "expected"),
    [
        (0, []),
        (1, [1]),
        (4, [1, 2, 3, 4]),
        (5, [1, 2, 3, 4]),
        (6, [1, 2, 3, 4, 6]),
        (LSN_MAX, [1, 2, 3, 4, 6, 9]),
    ],
)
def test_lsn_bound_applies_records_at_or_below_it(
    backend: native.Backend, lsn_bound: int, expected: list[int]
) -> None:
    pages = bytearray(PAGE_SIZE)
    batch = lsn_marks([1, 2, 3, 4, 6, 9])
    applied = backend.apply(batch, PAGE_SIZE, page_numbers(0), pages, None, lsn_bound, NO_ANNULLED)
    assert applied == len(expected)
    assert marked_lsns(pages) == expected


@pytest.mark.parametrize(
    ("annulled", "expected"),
    [
        ([(2, 4)], [1, 2, 5, 6, 7, 8]),
        ([(0, 1)], [2, 3, 4, 5, 6, 7, 8]),
        ([(7, LSN_MAX)], [1, 2, 3, 4, 5, 6, 7]),
        ([(0, LSN_MAX)], []),
        ([(1, 2), (2, 3), (5, 7)], [1, 4, 5, 8]),
        ([(0, 2), (4, 5), (6, 100)], [3, 4, 6]),
        ([(8, 20)], [1, 2, 3, 4, 5, 6, 7, 8]),
        ([(20, 30)], [1, 2, 3, 4, 5, 6, 7, 8]),
    ],
)
def test_annulled_ranges_exclude_lo_and_include_hi(
    backend: native.Backend, annulled: list[tuple[int, int]], expected: list[int]
) -> None:
    pages = bytearray(PAGE_SIZE)
    flat = array("Q", [bound for pair in annulled for bound in pair])
    batch = lsn_marks(list(range(1, 9)))
    applied = backend.apply(batch, PAGE_SIZE, page_numbers(0), pages, None, LSN_MAX, flat)
    assert applied == len(expected)
    assert marked_lsns(pages) == expected


def test_annulled_ranges_and_lsn_bound_combine(backend: native.Backend) -> None:
    pages = bytearray(PAGE_SIZE)
    batch = lsn_marks(list(range(1, 11)))
    applied = backend.apply(batch, PAGE_SIZE, page_numbers(0), pages, None, 7, array("Q", [2, 5]))
    assert applied == 4
    assert marked_lsns(pages) == [1, 2, 6, 7]


def test_page_lsns_skip_records_at_or_below_and_record_the_last_applied(
    backend: native.Backend,
) -> None:
    batch = (
        write(2, 0, 2, b"\xff")
        + write(3, 1, 3, b"\xff")
        + write(4, 0, 4, b"\xff")
        + write(5, 1, 5, b"\xff")
        + write(6, 0, 6, b"\xff")
    )
    pages = bytearray(3 * PAGE_SIZE)
    page_lsns = array("Q", [4, 0, 50])
    applied = backend.apply(
        batch, PAGE_SIZE, page_numbers(0, 1, 2), pages, page_lsns, LSN_MAX, NO_ANNULLED
    )
    assert applied == 3
    assert marked_lsns(page_at(pages, 0)) == [6]
    assert marked_lsns(page_at(pages, 1)) == [3, 5]
    assert page_at(pages, 2) == bytes(PAGE_SIZE)
    assert list(page_lsns) == [6, 5, 50]


def test_page_lsns_do_not_move_for_skipped_records(backend: native.Backend) -> None:
    batch = lsn_marks([1, 2, 3, 4, 5])
    pages = bytearray(PAGE_SIZE)
    page_lsns = array("Q", [0])
    applied = backend.apply(
        batch, PAGE_SIZE, page_numbers(0), pages, page_lsns, 4, array("Q", [2, 4])
    )
    assert applied == 2
    assert marked_lsns(pages) == [1, 2]
    assert list(page_lsns) == [2]


def test_applying_twice_with_page_lsns_changes_nothing_the_second_time(
    backend: native.Backend,
) -> None:
    batch = write(1, 0, 0, b"one") + zero(2, 1) + write(3, 0, 1, b"TWO") + write(4, 1, 9, b"x")
    pages = pages_of(2)
    page_lsns = array("Q", [0, 0])
    page_nos = page_numbers(0, 1)
    assert backend.apply(batch, PAGE_SIZE, page_nos, pages, page_lsns, LSN_MAX, NO_ANNULLED) == 4
    after_first = bytes(pages)
    assert backend.apply(batch, PAGE_SIZE, page_nos, pages, page_lsns, LSN_MAX, NO_ANNULLED) == 0
    assert pages == after_first
    assert list(page_lsns) == [3, 4]


def test_without_page_lsns_records_apply_again(backend: native.Backend) -> None:
    batch = write(1, 0, 0, b"one") + write(3, 0, 1, b"TWO")
    pages = bytearray(PAGE_SIZE)
    assert backend.apply(batch, PAGE_SIZE, page_numbers(0), pages, None, LSN_MAX, NO_ANNULLED) == 2
    pages[0:4] = b"...."
    assert backend.apply(batch, PAGE_SIZE, page_numbers(0), pages, None, LSN_MAX, NO_ANNULLED) == 2
    assert pages[0:5] == b"oTWO\x00"


def test_module_apply_defaults_to_every_record_and_flattens_pairs(
    backend: native.Backend,
) -> None:
    batch = lsn_marks([1, 2, 3, 4, 5, 6], page_no=8)
    pages = bytearray(PAGE_SIZE)
    assert native.apply(batch, PAGE_SIZE, page_numbers(8), pages) == 6
    pages = bytearray(PAGE_SIZE)
    page_lsns = array("Q", [0])
    applied = native.apply(
        batch,
        PAGE_SIZE,
        page_numbers(8),
        pages,
        page_lsns=page_lsns,
        lsn_bound=5,
        annulled=[(1, 2), (3, 4)],
    )
    assert applied == 3
    assert marked_lsns(pages) == [1, 3, 5]
    assert list(page_lsns) == [5]
    pages_with_flat = bytearray(PAGE_SIZE)
    native.apply(
        batch,
        PAGE_SIZE,
        page_numbers(8),
        pages_with_flat,
        lsn_bound=5,
        annulled=array("Q", [1, 2, 3, 4]),
    )
    assert pages_with_flat == pages


def test_module_apply_accepts_a_batch_inside_a_larger_buffer(backend: native.Backend) -> None:
    batch = write(1, 0, 0, b"abc") + write(2, 0, 3, b"def")
    embedded = memoryview(b"\x01" * 16 + batch + b"\x02" * 16)[16 : 16 + len(batch)]
    pages = bytearray(PAGE_SIZE)
    assert native.apply(embedded, PAGE_SIZE, page_numbers(0), pages) == 2
    assert pages[:7] == b"abcdef\x00"


def test_baseline_writes_match_applying_write_records() -> None:
    """The benchmark baseline of the C core writes what the same WRITE records would."""
    core = native.get_backend("native")
    writes = [(2, 0, b"hello"), (0, 4090, b"edge!!"), (1, 7, b"x"), (2, 3, b"LLO")]
    baseline_pages = bytearray(3 * PAGE_SIZE)
    ffi = core.ffi  # type: ignore[attr-defined]
    core.lib.aus_baseline_writes(  # type: ignore[attr-defined]
        ffi.from_buffer("uint8_t[]", baseline_pages),
        PAGE_SIZE,
        ffi.new("uint32_t[]", [slot for slot, _, _ in writes]),
        ffi.new("uint32_t[]", [offset for _, offset, _ in writes]),
        ffi.new("uint32_t[]", [len(data) for _, _, data in writes]),
        ffi.from_buffer("uint8_t[]", b"".join(data for _, _, data in writes)),
        len(writes),
    )
    batch = b"".join(
        write(lsn, slot, offset, data) for lsn, (slot, offset, data) in enumerate(writes, 1)
    )
    applied_pages = bytearray(3 * PAGE_SIZE)
    core.apply(batch, PAGE_SIZE, page_numbers(0, 1, 2), applied_pages, None, LSN_MAX, NO_ANNULLED)
    assert baseline_pages == applied_pages
    assert applied_pages[2 * PAGE_SIZE : 2 * PAGE_SIZE + 8] == b"helLLO\x00\x00"
