"""Bad arguments to validate, index and apply: InvalidArgumentError, and nothing written.

Covers page sizes that are not a power of two in 4096..65536, page_lo above
page_hi, page numbers not strictly ascending, annulled ranges not sorted,
empty or overlapping, and page or page-LSN arrays shorter than the page list.
Argument errors are reported before any record error.
"""

from __future__ import annotations

from array import array

import pytest
from sample_records import PAGE_SIZE, page_numbers, pages_of, write, zero

from aurora_storage import native
from aurora_storage.errors import InvalidArgumentError, NativeCoreError
from aurora_storage.native import LSN_MAX, NO_BACKLINK

BATCH = write(1, 0, 0, b"hello") + zero(2, 1)
BAD_PAGE_SIZES = [0, 1, 2048, 4095, 4097, 6144, 65535, 65537, 131072, -4096, 2**32, 2**32 + 4096]


@pytest.mark.parametrize("page_size", BAD_PAGE_SIZES)
def test_validate_rejects_a_bad_page_size(backend: native.Backend, page_size: int) -> None:
    with pytest.raises(InvalidArgumentError):
        backend.validate(BATCH, page_size, 0, LSN_MAX, NO_BACKLINK)


@pytest.mark.parametrize("page_size", BAD_PAGE_SIZES)
def test_index_rejects_a_bad_page_size(backend: native.Backend, page_size: int) -> None:
    with pytest.raises(InvalidArgumentError):
        backend.index(BATCH, page_size)


@pytest.mark.parametrize("page_size", BAD_PAGE_SIZES)
def test_apply_rejects_a_bad_page_size(backend: native.Backend, page_size: int) -> None:
    pages = pages_of(2)
    pages_before = bytes(pages)
    with pytest.raises(InvalidArgumentError):
        backend.apply(BATCH, page_size, page_numbers(0, 1), pages, None, LSN_MAX, array("Q"))
    assert pages == pages_before


def test_bad_arguments_are_value_errors() -> None:
    assert issubclass(InvalidArgumentError, ValueError)


def test_a_bad_page_size_is_reported_before_a_bad_batch(backend: native.Backend) -> None:
    with pytest.raises(InvalidArgumentError):
        backend.validate(b"", 1000, 0, LSN_MAX, NO_BACKLINK)
    with pytest.raises(InvalidArgumentError):
        backend.index(b"\x01", 1000)
    with pytest.raises(InvalidArgumentError):
        backend.apply(b"", 1000, page_numbers(), bytearray(), None, LSN_MAX, array("Q"))


def test_validate_rejects_page_lo_above_page_hi(backend: native.Backend) -> None:
    with pytest.raises(InvalidArgumentError):
        backend.validate(BATCH, PAGE_SIZE, 6, 5, NO_BACKLINK)
    with pytest.raises(InvalidArgumentError):
        native.validate(BATCH, PAGE_SIZE, page_lo=6, page_hi=5)


@pytest.mark.parametrize(
    "page_nos",
    [[1, 0], [0, 0], [0, 5, 3], [0, 1, 2, 2], [LSN_MAX, 0]],
    ids=["descending", "duplicate", "out-of-order", "duplicate-at-end", "wrapped"],
)
def test_apply_rejects_page_numbers_not_strictly_ascending(
    backend: native.Backend, page_nos: list[int]
) -> None:
    pages = pages_of(len(page_nos))
    pages_before = bytes(pages)
    page_lsns = array("Q", [0] * len(page_nos))
    with pytest.raises(InvalidArgumentError):
        backend.apply(BATCH, PAGE_SIZE, array("Q", page_nos), pages, page_lsns, LSN_MAX, array("Q"))
    assert pages == pages_before
    assert list(page_lsns) == [0] * len(page_nos)


@pytest.mark.parametrize(
    "annulled",
    [
        [10, 20, 1, 5],
        [1, 10, 5, 20],
        [1, 10, 2, 3],
        [5, 5],
        [6, 5],
        [0, 0],
        [1, 2, 3],
        [1],
    ],
    ids=[
        "unsorted",
        "overlapping",
        "nested",
        "empty-range",
        "inverted-range",
        "empty-range-at-zero",
        "odd-count",
        "lone-bound",
    ],
)
def test_apply_rejects_bad_annulled_ranges(backend: native.Backend, annulled: list[int]) -> None:
    pages = pages_of(2)
    pages_before = bytes(pages)
    page_lsns = array("Q", [0, 0])
    with pytest.raises(InvalidArgumentError):
        backend.apply(
            BATCH, PAGE_SIZE, page_numbers(0, 1), pages, page_lsns, LSN_MAX, array("Q", annulled)
        )
    assert pages == pages_before
    assert list(page_lsns) == [0, 0]


def test_module_apply_rejects_bad_annulled_pairs(backend: native.Backend) -> None:
    pages = pages_of(2)
    pages_before = bytes(pages)
    with pytest.raises(InvalidArgumentError):
        native.apply(BATCH, PAGE_SIZE, page_numbers(0, 1), pages, annulled=[(4, 9), (3, 12)])
    assert pages == pages_before


def test_a_bad_argument_is_reported_before_a_bad_batch(backend: native.Backend) -> None:
    pages = pages_of(2)
    with pytest.raises(InvalidArgumentError):
        backend.apply(b"", PAGE_SIZE, page_numbers(1, 0), pages, None, LSN_MAX, array("Q"))
    with pytest.raises(InvalidArgumentError):
        backend.apply(b"", PAGE_SIZE, page_numbers(0, 1), pages, None, LSN_MAX, array("Q", [2, 1]))


@pytest.mark.parametrize("pages_bytes", [0, 100, 2 * PAGE_SIZE - 1])
def test_apply_rejects_pages_shorter_than_the_page_list(
    backend: native.Backend, pages_bytes: int
) -> None:
    batch = write(1, 1, PAGE_SIZE - 8, b"overflow")
    pages = bytearray(b"\x5a" * pages_bytes)
    for call in (
        lambda: backend.apply(
            batch, PAGE_SIZE, page_numbers(0, 1), pages, None, LSN_MAX, array("Q")
        ),
        lambda: native.apply(batch, PAGE_SIZE, page_numbers(0, 1), pages),
    ):
        with pytest.raises(InvalidArgumentError):
            call()
        assert pages == b"\x5a" * pages_bytes


def test_apply_rejects_page_lsns_shorter_than_the_page_list(backend: native.Backend) -> None:
    batch = write(1, 1, 0, b"x") + write(2, 2, 0, b"y")
    pages = pages_of(3)
    pages_before = bytes(pages)
    page_lsns = array("Q", [0, 0])
    for call in (
        lambda: backend.apply(
            batch, PAGE_SIZE, page_numbers(0, 1, 2), pages, page_lsns, LSN_MAX, array("Q")
        ),
        lambda: native.apply(batch, PAGE_SIZE, page_numbers(0, 1, 2), pages, page_lsns=page_lsns),
    ):
        with pytest.raises(InvalidArgumentError):
            call()
        assert pages == pages_before
        assert list(page_lsns) == [0, 0]


@pytest.mark.parametrize("status", [native.STATUS_CAPACITY, 99, -1])
def test_capacity_and_unknown_statuses_raise_native_core_error(status: int) -> None:
    with pytest.raises(NativeCoreError):
        native.raise_for_status(status, 0)


def test_argument_status_raises_invalid_argument_error() -> None:
    with pytest.raises(InvalidArgumentError):
        native.raise_for_status(native.STATUS_ARGUMENT, 0)
