"""Page sets and the per-batch entry points: native.PageSet, apply_to, apply_verified.

A PageSet checks its page size, page order and buffer sizes once and pins its
buffers until closed; apply_to validates each batch like apply, and
apply_verified applies an already validated batch in one pass, checking only
what memory safety needs. Each test runs on both backends unless it is about
the C core alone (the Python reference validates in apply_verified too).
"""

from __future__ import annotations

import mmap
from array import array

import pytest
from sample_records import (
    PAGE_SIZE,
    page_image,
    pages_of,
    pattern,
    raw_record,
    write,
    zero,
)

from aurora_storage import native
from aurora_storage.errors import InvalidArgumentError, InvalidRecordError
from aurora_storage.format import frames as log
from aurora_storage.native import LSN_MAX

NO_ANNULLED = array("Q")
NATIVE = native.get_backend("native")


def page_at(pages: bytearray, slot: int) -> bytes:
    return bytes(pages[slot * PAGE_SIZE : (slot + 1) * PAGE_SIZE])


def mixed_batch() -> bytes:
    return (
        write(1, 10, 0, b"first")
        + page_image(2, 12, pattern(3, PAGE_SIZE))
        + write(3, 12, 7, b"over the image")
        + zero(4, 11)
        + write(6, 99, 0, b"unlisted page")
        + write(7, 10, PAGE_SIZE - 4, b"tail")
    )


# --- building a page set ------------------------------------------------------------


@pytest.mark.parametrize("page_size", [0, 4095, 6144, 131072])
def test_a_page_set_refuses_a_bad_page_size(page_size: int) -> None:
    with pytest.raises(InvalidArgumentError):
        native.PageSet(page_size, [0], bytearray(PAGE_SIZE))


@pytest.mark.parametrize(
    "page_nos",
    [[1, 0], [0, 0], [0, 5, 3], [0, 1, 2, 2], [LSN_MAX, 0]],
    ids=["descending", "duplicate", "out-of-order", "duplicate-at-end", "wrapped"],
)
def test_a_page_set_refuses_page_numbers_not_strictly_ascending(page_nos: list[int]) -> None:
    pages = pages_of(len(page_nos))
    with pytest.raises(InvalidArgumentError, match="ascending"):
        native.PageSet(PAGE_SIZE, page_nos, pages)
    pages.append(0)  # nothing stayed pinned


@pytest.mark.parametrize("page_nos", [[-1], [2**64], ["7"]], ids=["negative", "too-big", "text"])
def test_a_page_set_refuses_page_numbers_that_are_no_u64(page_nos: list[object]) -> None:
    with pytest.raises(InvalidArgumentError, match="page numbers"):
        native.PageSet(PAGE_SIZE, page_nos, pages_of(1))  # type: ignore[arg-type]


def test_a_page_set_refuses_pages_shorter_than_its_page_list() -> None:
    pages = bytearray(2 * PAGE_SIZE - 1)
    with pytest.raises(InvalidArgumentError, match="fewer than 2 pages"):
        native.PageSet(PAGE_SIZE, [0, 1], pages)
    pages.append(0)


def test_a_page_set_refuses_read_only_pages() -> None:
    with pytest.raises(InvalidArgumentError, match="read-only"):
        native.PageSet(PAGE_SIZE, [0], bytes(PAGE_SIZE))


def test_a_page_set_refuses_short_or_mistyped_page_lsns() -> None:
    pages = pages_of(2)
    with pytest.raises(InvalidArgumentError, match="shorter"):
        native.PageSet(PAGE_SIZE, [0, 1], pages, array("Q", [0]))
    with pytest.raises(InvalidArgumentError, match="array"):
        native.PageSet(PAGE_SIZE, [0, 1], pages, array("L", [0, 0]))
    with pytest.raises(InvalidArgumentError, match="array"):
        native.PageSet(PAGE_SIZE, [0, 1], pages, [0, 0])  # type: ignore[arg-type]
    pages.append(0)


def test_a_page_set_copies_its_page_numbers() -> None:
    page_nos = array("Q", [3, 4])
    page_set = native.PageSet(PAGE_SIZE, page_nos, pages_of(2))
    page_nos[0] = 9  # the set checked the order of its own copy, which does not change
    assert list(page_set.page_nos) == [3, 4]
    assert len(page_set) == 2


def test_a_page_set_pins_its_buffers_until_closed() -> None:
    pages = pages_of(1)
    page_lsns = array("Q", [0])
    page_set = native.PageSet(PAGE_SIZE, [0], pages, page_lsns)
    with pytest.raises(BufferError):
        pages.extend(b"x")
    with pytest.raises(BufferError):
        page_lsns.append(1)
    page_set.close()
    page_set.close()  # idempotent
    assert page_set.closed
    pages.extend(b"x")
    page_lsns.append(1)


def test_a_page_set_closes_at_the_end_of_a_with_block() -> None:
    pages = pages_of(1)
    page_set = native.PageSet(PAGE_SIZE, [0], pages)
    with page_set:
        open_inside = not page_set.closed
    assert open_inside
    assert page_set.closed
    pages.extend(b"x")


def test_a_page_set_over_an_mmap_and_a_memoryview_slice(backend: native.Backend) -> None:
    memory = mmap.mmap(-1, 3 * PAGE_SIZE)
    with native.PageSet(PAGE_SIZE, [5], memory) as page_set:
        assert backend.apply_to(page_set, write(1, 5, 2, b"mapped"), LSN_MAX, NO_ANNULLED) == 1
    assert memory[:8] == b"\x00\x00mapped"
    memory.close()
    arena = bytearray(3 * PAGE_SIZE)
    with native.PageSet(PAGE_SIZE, [5], memoryview(arena)[PAGE_SIZE:]) as page_set:
        backend.apply_to(page_set, write(1, 5, 0, b"second page"), LSN_MAX, NO_ANNULLED)
    assert arena[PAGE_SIZE : PAGE_SIZE + 11] == b"second page"
    assert arena[:PAGE_SIZE] == bytes(PAGE_SIZE)


@pytest.mark.parametrize("entry", ["apply_to", "apply_verified"])
def test_applying_to_a_closed_page_set_raises(backend: native.Backend, entry: str) -> None:
    pages = pages_of(1)
    page_set = native.PageSet(PAGE_SIZE, [0], pages)
    getattr(backend, entry)(page_set, write(1, 0, 0, b"open"), LSN_MAX, NO_ANNULLED)
    page_set.close()
    with pytest.raises(InvalidArgumentError, match="closed"):
        getattr(backend, entry)(page_set, write(2, 0, 0, b"shut"), LSN_MAX, NO_ANNULLED)
    assert pages[:4] == b"open"


# --- apply_to: validated, like apply ---------------------------------------------------


@pytest.mark.parametrize("with_page_lsns", [False, True])
@pytest.mark.parametrize(
    "page_nos", [[10, 11, 12], [10, 12, 14], [12]], ids=["dense", "sparse", "one"]
)
def test_apply_to_writes_what_apply_writes(
    backend: native.Backend, page_nos: list[int], with_page_lsns: bool
) -> None:
    batch = mixed_batch()
    annulled = array("Q", [2, 3])
    expected_pages = pages_of(len(page_nos))
    expected_lsns = array("Q", [1] * len(page_nos)) if with_page_lsns else None
    expected = backend.apply(
        batch, PAGE_SIZE, array("Q", page_nos), expected_pages, expected_lsns, 6, annulled
    )
    pages = pages_of(len(page_nos))
    page_lsns = array("Q", [1] * len(page_nos)) if with_page_lsns else None
    with native.PageSet(PAGE_SIZE, page_nos, pages, page_lsns) as page_set:
        assert backend.apply_to(page_set, batch, 6, annulled) == expected
    assert pages == expected_pages
    assert page_lsns == expected_lsns


def test_apply_to_applies_batch_after_batch(backend: native.Backend) -> None:
    pages = bytearray(2 * PAGE_SIZE)
    page_lsns = array("Q", [0, 0])
    with native.PageSet(PAGE_SIZE, [0, 1], pages, page_lsns) as page_set:
        assert backend.apply_to(page_set, write(1, 0, 0, b"one"), LSN_MAX, NO_ANNULLED) == 1
        assert backend.apply_to(page_set, write(2, 1, 0, b"two"), LSN_MAX, NO_ANNULLED) == 1
        # An old record again: below the page's LSN, skipped.
        assert backend.apply_to(page_set, write(1, 0, 0, b"ONE"), LSN_MAX, NO_ANNULLED) == 0
    assert page_at(pages, 0)[:3] == b"one"
    assert page_at(pages, 1)[:3] == b"two"
    assert list(page_lsns) == [1, 2]


def test_apply_to_a_bad_batch_writes_nothing(backend: native.Backend) -> None:
    pages = pages_of(2)
    page_lsns = array("Q", [0, 0])
    batch = write(1, 0, 0, b"fine") + raw_record(lsn=2, page_no=1, kind=9)
    with native.PageSet(PAGE_SIZE, [0, 1], pages, page_lsns) as page_set:
        before = bytes(pages)
        with pytest.raises(InvalidRecordError) as raised:
            backend.apply_to(page_set, batch, LSN_MAX, NO_ANNULLED)
        assert (raised.value.position, raised.value.field) == (len(write(1, 0, 0, b"fine")), "kind")
        assert pages == before
        assert list(page_lsns) == [0, 0]


@pytest.mark.parametrize("entry", ["apply_to", "apply_verified"])
@pytest.mark.parametrize("annulled", [[1], [5, 5], [4, 9, 3, 12]], ids=["odd", "empty", "unsorted"])
def test_the_entry_points_refuse_bad_annulled_ranges(
    backend: native.Backend, entry: str, annulled: list[int]
) -> None:
    pages = pages_of(1)
    with native.PageSet(PAGE_SIZE, [0], pages) as page_set:
        before = bytes(pages)
        with pytest.raises(InvalidArgumentError):
            getattr(backend, entry)(page_set, write(1, 0, 0, b"x"), LSN_MAX, array("Q", annulled))
        assert pages == before


@pytest.mark.parametrize("entry", ["apply_to", "apply_verified"])
def test_the_entry_points_refuse_an_empty_batch(backend: native.Backend, entry: str) -> None:
    with (
        native.PageSet(PAGE_SIZE, [0], pages_of(1)) as page_set,
        pytest.raises(InvalidRecordError, match="no record"),
    ):
        getattr(backend, entry)(page_set, b"", LSN_MAX, NO_ANNULLED)


def test_apply_to_an_empty_page_set_still_validates(backend: native.Backend) -> None:
    with native.PageSet(PAGE_SIZE, [], bytearray()) as page_set:
        assert backend.apply_to(page_set, write(1, 0, 0, b"x"), LSN_MAX, NO_ANNULLED) == 0
        with pytest.raises(InvalidRecordError):
            backend.apply_to(page_set, raw_record(lsn=0), LSN_MAX, NO_ANNULLED)
        assert backend.apply_verified(page_set, write(1, 0, 0, b"x"), LSN_MAX, NO_ANNULLED) == 0


def test_module_entry_points_default_to_every_record_and_flatten_pairs(
    backend: native.Backend,
) -> None:
    batch = b"".join(write(lsn, 8, lsn, b"\xff") for lsn in range(1, 7))
    for entry in (native.apply_to, native.apply_verified):
        pages = bytearray(PAGE_SIZE)
        with native.PageSet(PAGE_SIZE, [8], pages) as page_set:
            assert entry(page_set, batch) == 6
        pages = bytearray(PAGE_SIZE)
        page_lsns = array("Q", [0])
        with native.PageSet(PAGE_SIZE, [8], pages, page_lsns) as page_set:
            assert entry(page_set, batch, lsn_bound=5, annulled=[(1, 2), (3, 4)]) == 3
        assert [i for i, value in enumerate(pages) if value == 0xFF] == [1, 3, 5]
        assert list(page_lsns) == [5]


# --- apply_verified: one pass over a validated batch ------------------------------------


@pytest.mark.parametrize("with_page_lsns", [False, True])
@pytest.mark.parametrize("page_nos", [[10, 11, 12], [10, 12, 14]], ids=["dense", "sparse"])
def test_apply_verified_writes_what_apply_to_writes_on_a_valid_batch(
    backend: native.Backend, page_nos: list[int], with_page_lsns: bool
) -> None:
    batch = mixed_batch()
    native.validate(batch, PAGE_SIZE)
    results = []
    for entry in (backend.apply_to, backend.apply_verified):
        pages = pages_of(len(page_nos))
        page_lsns = array("Q", [1] * len(page_nos)) if with_page_lsns else None
        with native.PageSet(PAGE_SIZE, page_nos, pages, page_lsns) as page_set:
            applied = entry(page_set, batch, 6, array("Q", [2, 3]))
        results.append((applied, bytes(pages), page_lsns))
    assert results[0] == results[1]


def native_verified(batch: bytes, page_count: int = 2) -> tuple[bytearray, InvalidRecordError]:
    """Runs apply_verified of the C core on ``batch``, which must fail; returns pages and error."""
    pages = bytearray(page_count * PAGE_SIZE)
    with (
        native.PageSet(PAGE_SIZE, range(page_count), pages) as page_set,
        pytest.raises(InvalidRecordError) as raised,
    ):
        NATIVE.apply_verified(page_set, batch, LSN_MAX, NO_ANNULLED)
    return pages, raised.value


FIRST = write(1, 0, 0, b"applied")


@pytest.mark.parametrize(
    ("second", "field"),
    [
        (raw_record(lsn=2, page_no=1)[:47], "length"),
        (raw_record(lsn=2, page_no=1, length=64, body=bytes(56)), "length"),
        (raw_record(lsn=2, page_no=1, length=0xFFFF_FFFF, body=b""), "length"),
        (raw_record(lsn=2, page_no=1, kind=0), "kind"),
        (raw_record(lsn=2, page_no=1, kind=4), "kind"),
        (raw_record(lsn=2, page_no=1, offset=PAGE_SIZE - 7, length=8), "offset"),
        (raw_record(lsn=2, page_no=1, offset=0xFFFF_FFFF, length=8), "offset"),
        (raw_record(lsn=2, page_no=1, kind=log.KIND_PAGE, length=8), "length"),
    ],
    ids=[
        "header-cut",
        "payload-cut",
        "length-past-the-batch",
        "kind-0",
        "kind-4",
        "write-past-the-page",
        "offset-wraps",
        "page-image-too-short",
    ],
)
def test_apply_verified_stops_at_a_record_memory_safety_rejects(second: bytes, field: str) -> None:
    pages, error = native_verified(FIRST + second)
    assert (error.position, error.field) == (len(FIRST), field)
    assert page_at(pages, 0)[:7] == b"applied"  # the record before it was applied
    assert page_at(pages, 1) == bytes(PAGE_SIZE)


def test_apply_verified_on_the_python_backend_validates_and_writes_nothing() -> None:
    python = native.get_backend("python")
    pages = bytearray(2 * PAGE_SIZE)
    batch = FIRST + raw_record(lsn=2, page_no=1, kind=4)
    with (
        native.PageSet(PAGE_SIZE, [0, 1], pages) as page_set,
        pytest.raises(InvalidRecordError) as raised,
    ):
        python.apply_verified(page_set, batch, LSN_MAX, NO_ANNULLED)
    assert (raised.value.position, raised.value.field) == (len(FIRST), "kind")
    assert pages == bytes(2 * PAGE_SIZE)


def test_apply_verified_applies_what_it_does_not_check_as_the_bytes_say() -> None:
    """LSN order, flags, reserved bytes and padding are the validator's job, not this pass's."""
    batch = (
        raw_record(lsn=5, page_no=0, offset=0, length=3, body=b"abc\xff\xff\xff\xff\xff")
        + raw_record(lsn=5, page_no=0, offset=3, length=3, flags=0x80, reserved=b"\x01" * 6)
        + raw_record(lsn=0, page_no=1, kind=log.KIND_ZERO, offset=9, length=0, body=b"")
    )
    pages = pages_of(2)
    with native.PageSet(PAGE_SIZE, [0, 1], pages) as page_set:
        assert NATIVE.apply_verified(page_set, batch, LSN_MAX, NO_ANNULLED) == 3
    assert page_at(pages, 0)[:6] == b"abc\x00\x00\x00"
    assert page_at(pages, 1) == bytes(PAGE_SIZE)


def test_apply_verified_skips_records_it_does_not_apply_unchecked() -> None:
    """Records above the bound, annulled, or of unlisted pages are never looked into."""
    batch = (
        write(1, 0, 0, b"kept")
        + raw_record(lsn=2, page_no=7, kind=9)  # unlisted page
        + raw_record(lsn=3, page_no=0, kind=9)  # annulled
        + raw_record(lsn=9, page_no=0, kind=9)  # above the bound: the pass stops
    )
    pages = bytearray(PAGE_SIZE)
    with native.PageSet(PAGE_SIZE, [0], pages) as page_set:
        assert NATIVE.apply_verified(page_set, batch, 8, array("Q", [2, 3])) == 1
    assert pages[:4] == b"kept"


# --- the C core with page numbers that break the precondition ------------------------


GUARD_BYTES = 4096


@pytest.mark.parametrize("entry", ["aus_apply", "aus_apply_verified"])
@pytest.mark.parametrize(
    "page_nos",
    [[0, 7, 2], [5, 3, 1], [2, 2, 2], [LSN_MAX, 0, 1], [1, 0, 3, 2]],
    ids=["judged-dense", "descending", "repeated", "wrapping", "shuffled"],
)
def test_the_c_core_stays_inside_its_pages_with_unsorted_page_numbers(
    entry: str, page_nos: list[int]
) -> None:
    """Ascending page numbers are a precondition C takes on trust: breaking it may misplace
    records among the pages given, never write outside them (run_asan.sh checks reads)."""
    ffi, lib = NATIVE.ffi, NATIVE.lib  # type: ignore[attr-defined]
    count = len(page_nos)
    arena = bytearray(b"\xa5" * (GUARD_BYTES + count * PAGE_SIZE + GUARD_BYTES))
    page_lsns = array("Q", [0] * count + [0xA5A5_A5A5_A5A5_A5A5])
    targets = [0, 1, 2, 3, 5, 7, LSN_MAX]
    batch = (
        b"".join(write(lsn, no, PAGE_SIZE - 5, b"edge!") for lsn, no in enumerate(targets, 1))
        + b"".join(
            page_image(lsn, no, pattern(lsn, PAGE_SIZE)) for lsn, no in enumerate(targets, 100)
        )
        + b"".join(zero(lsn, no) for lsn, no in enumerate(targets, 200))
    )
    applied = ffi.new("uint64_t *")
    position = ffi.new("size_t *")
    with ffi.from_buffer("uint8_t[]", arena, require_writable=True) as memory:
        status = getattr(lib, entry)(
            ffi.from_buffer("uint8_t[]", batch),
            len(batch),
            PAGE_SIZE,
            ffi.new("uint64_t[]", page_nos),
            count,
            memory + GUARD_BYTES,
            ffi.from_buffer("uint64_t[]", page_lsns),
            LSN_MAX,
            ffi.NULL,
            0,
            applied,
            position,
        )
    assert status == native.STATUS_OK
    assert arena[:GUARD_BYTES] == b"\xa5" * GUARD_BYTES
    assert arena[GUARD_BYTES + count * PAGE_SIZE :] == b"\xa5" * GUARD_BYTES
    assert page_lsns[count] == 0xA5A5_A5A5_A5A5_A5A5
