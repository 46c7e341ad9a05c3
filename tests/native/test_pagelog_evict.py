"""Forgetting clean pages and taking them back (csrc/pagelog.c and its Python reference).

A node whose pages live in a page store keeps only some in memory: the page
log forgets clean pages (an image at or below the store's checkpoint, no
record) chosen by a CLOCK sweep (``evict``), says which pages of a list hold
no image (``missing``), and takes an image back under records newer than it
(``set_image``). The tests check both implementations, and, as a property,
that they make the same choices and that a page read back after being
forgotten reads as before.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sample_records import PAGE_SIZE, batch_of

from aurora_storage.errors import InvalidArgumentError, VersionGoneError
from aurora_storage.format import frames as log
from aurora_storage.native.pagelog import NativePageLog, PageLog, PythonPageLog

IMPLEMENTATIONS = [NativePageLog, PythonPageLog]


@pytest.fixture(params=IMPLEMENTATIONS, ids=["native", "python"])
def implementation(request: pytest.FixtureRequest) -> type[NativePageLog | PythonPageLog]:
    return request.param  # type: ignore[no-any-return]


def image(page_no: int) -> bytes:
    return random.Random(page_no).randbytes(PAGE_SIZE)


def write(lsn: int, page_no: int, data: bytes = b"record") -> bytes:
    return batch_of([(lsn, page_no, log.KIND_WRITE, 8, data)])


def test_clean_pages_are_forgotten_and_dirty_ones_kept(implementation: type[PageLog]) -> None:
    page_log = implementation(PAGE_SIZE)
    for page_no in range(6):
        page_log.set_image(page_no, image(page_no), 10)
    page_log.append(write(20, 4))  # a page with a record stays
    page_log.coalesce(20)  # page 4's image is now at 20: above the store's 10, dirty
    page_log.append(write(30, 5))  # a record: stays
    for page_no in range(6):
        page_log.materialize(page_no)  # every page referenced once
    dropped = page_log.evict(10, 1 << 30)
    assert dropped == 4 * PAGE_SIZE
    assert page_log.page_nos() == [4, 5]
    assert page_log.missing(range(6)) == [0, 1, 2, 3]
    stats = page_log.stats()
    assert (stats.pages, stats.images, stats.records) == (2, 2, 1)


def test_a_page_read_since_the_hand_passed_is_spared_once(implementation: type[PageLog]) -> None:
    page_log = implementation(PAGE_SIZE)
    for page_no in range(4):
        page_log.set_image(page_no, image(page_no), 10)
    assert page_log.evict(10, PAGE_SIZE) == PAGE_SIZE  # a full turn clears every bit first
    kept = page_log.page_nos()
    page_log.materialize(kept[0])  # referenced again
    assert page_log.evict(10, PAGE_SIZE) == PAGE_SIZE
    assert kept[0] in page_log.page_nos()


def test_a_forgotten_page_reads_as_before_once_taken_back(implementation: type[PageLog]) -> None:
    page_log = implementation(PAGE_SIZE)
    page_log.set_image(7, image(7), 10)
    before = page_log.materialize(7)
    assert page_log.evict(10, PAGE_SIZE) == PAGE_SIZE
    assert page_log.missing([7]) == [7]
    page_log.set_image(7, image(7), 10)
    assert page_log.materialize(7) == before


def test_an_image_goes_under_newer_records(implementation: type[PageLog]) -> None:
    page_log = implementation(PAGE_SIZE)
    page_log.append(write(20, 3, b"newer"))
    assert page_log.missing([3]) == [3]
    page_log.set_image(3, image(3), 10)
    expected = bytearray(image(3))
    expected[8:13] = b"newer"
    assert page_log.materialize(3) == (bytes(expected), 20)
    assert page_log.materialize(3, 10) == (image(3), 10)
    with pytest.raises(VersionGoneError):
        page_log.materialize(3, 9)


def test_an_image_never_goes_over_a_record_it_would_hide(implementation: type[PageLog]) -> None:
    page_log = implementation(PAGE_SIZE)
    page_log.append(write(10, 3))
    with pytest.raises(InvalidArgumentError):
        page_log.set_image(3, image(3), 10)
    assert page_log.materialize(3)[1] == 10  # unchanged: zeros and the record


def test_shared_images_are_given_back(implementation: type[PageLog]) -> None:
    page_log = implementation(PAGE_SIZE)
    block = b"".join(image(page_no) for page_no in range(3))
    page_log.share_images([0, 1, 2], block, 10)
    assert page_log.shared_blocks()
    page_log.evict(10, 1 << 30)
    page_log.evict(10, 1 << 30)
    assert page_log.page_nos() == []
    assert page_log.shared_blocks() == []
    assert page_log.stats().shared_images == 0


operations = st.lists(
    st.one_of(
        st.tuples(st.just("read"), st.integers(0, 15)),
        st.tuples(st.just("write"), st.integers(0, 15)),
        st.tuples(st.just("evict"), st.integers(0, 6)),
        st.tuples(st.just("coalesce"), st.integers(0, 0)),
    ),
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(operations=operations)
def test_both_implementations_forget_the_same_pages(operations: list[tuple[str, int]]) -> None:
    """A store holds every page at LSN 10; the logs read, write, coalesce and evict."""
    logs = [implementation(PAGE_SIZE) for implementation in IMPLEMENTATIONS]
    clean = 10
    lsn = 10
    for page_log in logs:
        for page_no in range(16):
            page_log.set_image(page_no, image(page_no), clean)
    for operation, argument in operations:
        if operation == "write":
            lsn += 1
        for page_log in logs:
            if operation == "read":
                for page_no in page_log.missing([argument]):
                    page_log.set_image(page_no, image(page_no), clean)
                page_log.materialize(argument)
            elif operation == "write":
                page_log.append(write(lsn, argument, lsn.to_bytes(4, "little")))
            elif operation == "evict":
                page_log.evict(clean, argument * PAGE_SIZE)
            else:
                for page_no in page_log.missing(page_log.page_nos(with_records=True)):
                    page_log.set_image(page_no, image(page_no), clean)
                page_log.coalesce(lsn)
        assert logs[0].page_nos() == logs[1].page_nos()
    native, python = logs
    for page_no in range(16):
        for page_log in logs:
            for missing in page_log.missing([page_no]):
                page_log.set_image(missing, image(missing), clean)
        assert native.materialize(page_no) == python.materialize(page_no), page_no
