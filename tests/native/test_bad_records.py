"""Corrupt record batches: one test per corruption shape, on validate, index and apply.

Each shape must raise InvalidRecordError with the status table's reason and
field and the byte position of the first bad record, identically on both
backends, and apply must leave pages and page_lsns byte-identical.
"""

from __future__ import annotations

from array import array
from typing import Any

import pytest
from sample_records import (
    PAGE_SIZE,
    assert_invalid_record,
    page_image,
    page_numbers,
    pages_of,
    pattern,
    raw_record,
    write,
    zero,
)

from aurora_storage import native
from aurora_storage.errors import InvalidRecordError
from aurora_storage.format import frames as log
from aurora_storage.native import LSN_MAX, NO_BACKLINK

# A valid first record: the bad record follows it, so positions are not all 0.
FIRST = write(10, 1, 0, b"first")
SECOND = len(FIRST)


def after_first(**fields: Any) -> bytes:
    """FIRST followed by a raw record with LSN 11 of page 1 unless ``fields`` say otherwise."""
    return FIRST + raw_record(**{"lsn": 11, "backlink": 10, "page_no": 1, **fields})


# name -> (batch, status, position of the bad record)
CORRUPTION_SHAPES: dict[str, tuple[bytes, int, int]] = {
    "empty batch": (b"", native.STATUS_EMPTY, 0),
    "header cut short": (FIRST + raw_record(lsn=11)[:47], native.STATUS_TRUNCATED, SECOND),
    "one stray byte after the last record": (FIRST + b"\x00", native.STATUS_TRUNCATED, SECOND),
    "payload cut short": (
        after_first(length=16, body=bytes(8)),
        native.STATUS_TRUNCATED,
        SECOND,
    ),
    "padding cut off": (after_first(length=5, body=b"hello"), native.STATUS_TRUNCATED, SECOND),
    "body length past the end": (
        after_first(kind=log.KIND_PAGE, length=PAGE_SIZE, body=b""),
        native.STATUS_TRUNCATED,
        SECOND,
    ),
    "unknown kind 0": (after_first(kind=0), native.STATUS_KIND, SECOND),
    "unknown kind 4": (after_first(kind=4), native.STATUS_KIND, SECOND),
    "unknown kind 255": (after_first(kind=255), native.STATUS_KIND, SECOND),
    "zero lsn in the first record": (
        raw_record(lsn=0) + FIRST,
        native.STATUS_LSN_ORDER,
        0,
    ),
    "zero lsn after a record": (after_first(lsn=0), native.STATUS_LSN_ORDER, SECOND),
    "lsn equal to the previous": (after_first(lsn=10), native.STATUS_LSN_ORDER, SECOND),
    "lsn below the previous": (after_first(lsn=9), native.STATUS_LSN_ORDER, SECOND),
    **{
        f"nonzero reserved byte {index}": (
            after_first(reserved=bytes(index) + b"\x01" + bytes(5 - index)),
            native.STATUS_RESERVED,
            SECOND,
        )
        for index in range(6)
    },
    **{
        f"unknown flag bit {bit}": (after_first(flags=1 << bit), native.STATUS_RESERVED, SECOND)
        for bit in range(1, 8)
    },
    **{
        f"nonzero padding byte {index}": (
            after_first(length=5, body=b"hello" + bytes(index) + b"\x80" + bytes(2 - index)),
            native.STATUS_PADDING,
            SECOND,
        )
        for index in range(3)
    },
    "write of zero bytes": (after_first(length=0, body=b""), native.STATUS_LENGTH, SECOND),
    "write past the page end": (
        after_first(offset=PAGE_SIZE - 7, length=8),
        native.STATUS_RANGE,
        SECOND,
    ),
    "write starting at the page end": (
        after_first(offset=PAGE_SIZE, length=1),
        native.STATUS_RANGE,
        SECOND,
    ),
    "write whose offset plus length overflows 32 bits": (
        after_first(offset=0xFFFF_FFFF, length=1),
        native.STATUS_RANGE,
        SECOND,
    ),
    "write of 4 GiB with no body": (
        after_first(length=0xFFFF_FFFF, body=b""),
        native.STATUS_RANGE,
        SECOND,
    ),
    "page image one byte short": (
        after_first(kind=log.KIND_PAGE, length=PAGE_SIZE - 1),
        native.STATUS_LENGTH,
        SECOND,
    ),
    "page image eight bytes long": (
        after_first(kind=log.KIND_PAGE, length=PAGE_SIZE + 8),
        native.STATUS_LENGTH,
        SECOND,
    ),
    "page image at a nonzero offset": (
        after_first(kind=log.KIND_PAGE, offset=8, length=PAGE_SIZE),
        native.STATUS_LENGTH,
        SECOND,
    ),
    "zero record with a payload": (
        after_first(kind=log.KIND_ZERO, length=8),
        native.STATUS_LENGTH,
        SECOND,
    ),
    "zero record at a nonzero offset": (
        after_first(kind=log.KIND_ZERO, offset=8, length=0, body=b""),
        native.STATUS_LENGTH,
        SECOND,
    ),
    # The checks run in the documented order: the earliest rule broken is reported.
    "reserved byte before a zero lsn": (
        raw_record(lsn=0, reserved=b"\x00\x00\x00\x00\x00\x01"),
        native.STATUS_RESERVED,
        0,
    ),
    "lsn order before an unknown kind": (
        after_first(lsn=10, kind=9),
        native.STATUS_LSN_ORDER,
        SECOND,
    ),
    "kind before a truncated body": (
        after_first(kind=9, length=64, body=b""),
        native.STATUS_KIND,
        SECOND,
    ),
    "length rule before a truncated body": (
        after_first(kind=log.KIND_ZERO, length=64, body=b""),
        native.STATUS_LENGTH,
        SECOND,
    ),
    "truncation before nonzero padding": (
        after_first(length=5, body=b"hello\x01"),
        native.STATUS_TRUNCATED,
        SECOND,
    ),
    "first bad record wins over a later one": (
        after_first(lsn=10) + raw_record(lsn=12, kind=0),
        native.STATUS_LSN_ORDER,
        SECOND,
    ),
}
SHAPE_NAMES = sorted(CORRUPTION_SHAPES)


@pytest.mark.parametrize("shape", SHAPE_NAMES)
def test_validate_rejects(backend: native.Backend, shape: str) -> None:
    batch, status, position = CORRUPTION_SHAPES[shape]
    with pytest.raises(InvalidRecordError) as raised:
        backend.validate(batch, PAGE_SIZE, 0, LSN_MAX, NO_BACKLINK)
    assert_invalid_record(raised.value, status, position)


@pytest.mark.parametrize("shape", SHAPE_NAMES)
def test_index_rejects(backend: native.Backend, shape: str) -> None:
    batch, status, position = CORRUPTION_SHAPES[shape]
    with pytest.raises(InvalidRecordError) as raised:
        backend.index(batch, PAGE_SIZE)
    assert_invalid_record(raised.value, status, position)


@pytest.mark.parametrize("shape", SHAPE_NAMES)
def test_apply_rejects_and_leaves_pages_untouched(backend: native.Backend, shape: str) -> None:
    batch, status, position = CORRUPTION_SHAPES[shape]
    pages = pages_of(2)
    pages_before = bytes(pages)
    page_lsns = array("Q", [0, 0])
    with pytest.raises(InvalidRecordError) as raised:
        backend.apply(batch, PAGE_SIZE, page_numbers(0, 1), pages, page_lsns, LSN_MAX, array("Q"))
    assert_invalid_record(raised.value, status, position)
    assert pages == pages_before
    assert list(page_lsns) == [0, 0]


@pytest.mark.parametrize("shape", SHAPE_NAMES)
def test_module_wrappers_reject(backend: native.Backend, shape: str) -> None:
    batch, status, position = CORRUPTION_SHAPES[shape]
    pages = pages_of(2)
    pages_before = bytes(pages)
    for call in (
        lambda: native.validate(batch, PAGE_SIZE),
        lambda: native.index(batch, PAGE_SIZE),
        lambda: native.apply(batch, PAGE_SIZE, page_numbers(0, 1), pages),
    ):
        with pytest.raises(InvalidRecordError) as raised:
            call()
        assert_invalid_record(raised.value, status, position)
    assert pages == pages_before


# A batch of three records: WRITE (56 bytes), ZERO (48), WRITE (64).
CUT_BATCH = write(1, 0, 0, b"abcde") + zero(2, 0) + write(3, 0, 9, b"0123456789ab")
RECORD_STARTS = [0, 56, 104]


@pytest.mark.parametrize("operation", ["validate", "index", "apply"])
def test_batch_cut_at_every_byte(backend: native.Backend, operation: str) -> None:
    """A cut inside a record is reported at that record; a cut between records is a valid batch."""
    assert len(CUT_BATCH) == 168
    pages = pages_of(1)
    pages_before = bytes(pages)
    for cut in range(len(CUT_BATCH)):
        batch = CUT_BATCH[:cut]

        def run(batch: bytes = batch) -> object:
            if operation == "validate":
                return backend.validate(batch, PAGE_SIZE, 0, 1, NO_BACKLINK)
            if operation == "index":
                return backend.index(batch, PAGE_SIZE)
            return backend.apply(batch, PAGE_SIZE, page_numbers(0), pages, None, 0, array("Q"))

        if cut in RECORD_STARTS[1:]:
            run()
            continue
        with pytest.raises(InvalidRecordError) as raised:
            run()
        if cut == 0:
            assert_invalid_record(raised.value, native.STATUS_EMPTY, 0)
        else:
            record_start = max(start for start in RECORD_STARTS if start < cut)
            assert_invalid_record(raised.value, native.STATUS_TRUNCATED, record_start)
        assert pages == pages_before, f"cut at {cut}"


@pytest.mark.parametrize(
    ("page_no", "page_lo", "page_hi"),
    [(4, 5, 10), (10, 5, 10), (LSN_MAX, 0, LSN_MAX), (0, 1, LSN_MAX)],
)
def test_validate_rejects_a_page_outside_the_range(
    backend: native.Backend, page_no: int, page_lo: int, page_hi: int
) -> None:
    batch = zero(1, page_lo) + zero(2, page_hi - 1) + zero(3, page_no)
    with pytest.raises(InvalidRecordError) as raised:
        backend.validate(batch, PAGE_SIZE, page_lo, page_hi, NO_BACKLINK)
    assert_invalid_record(raised.value, native.STATUS_PAGE, 96)


def test_validate_with_an_empty_page_range_rejects_every_page(backend: native.Backend) -> None:
    with pytest.raises(InvalidRecordError) as raised:
        backend.validate(zero(1, 5), PAGE_SIZE, 5, 5, NO_BACKLINK)
    assert_invalid_record(raised.value, native.STATUS_PAGE, 0)


def test_validate_rejects_a_first_backlink_other_than_the_chain_start(
    backend: native.Backend,
) -> None:
    batch = zero(10, 0, backlink=8) + zero(11, 0, backlink=10)
    with pytest.raises(InvalidRecordError) as raised:
        backend.validate(batch, PAGE_SIZE, 0, 1, 7)
    assert_invalid_record(raised.value, native.STATUS_BACKLINK, 0)


@pytest.mark.parametrize("broken_backlink", [0, 9, 11, 12, NO_BACKLINK])
def test_validate_rejects_a_broken_backlink_chain(
    backend: native.Backend, broken_backlink: int
) -> None:
    batch = zero(10, 0, backlink=7) + zero(12, 0, backlink=broken_backlink) + zero(13, 0)
    with pytest.raises(InvalidRecordError) as raised:
        backend.validate(batch, PAGE_SIZE, 0, 1, 7)
    assert_invalid_record(raised.value, native.STATUS_BACKLINK, 48)


def test_validate_reports_the_page_range_before_the_backlink(backend: native.Backend) -> None:
    batch = zero(10, 0, backlink=7) + zero(12, 99, backlink=1)
    with pytest.raises(InvalidRecordError) as raised:
        backend.validate(batch, PAGE_SIZE, 0, 1, 7)
    assert_invalid_record(raised.value, native.STATUS_PAGE, 48)


def test_validate_reports_a_record_rule_before_the_page_range(backend: native.Backend) -> None:
    batch = zero(10, 0) + raw_record(lsn=10, page_no=99)
    with pytest.raises(InvalidRecordError) as raised:
        backend.validate(batch, PAGE_SIZE, 0, 1, NO_BACKLINK)
    assert_invalid_record(raised.value, native.STATUS_LSN_ORDER, 48)


def test_apply_ignores_page_range_and_backlinks(backend: native.Backend) -> None:
    batch = zero(10, 0, backlink=99) + write(11, 5, 0, b"x", backlink=1)
    pages = pages_of(1)
    assert backend.apply(batch, PAGE_SIZE, page_numbers(5), pages, None, LSN_MAX, array("Q")) == 1
    assert pages[0:1] == b"x"


def test_apply_to_no_page_still_validates(backend: native.Backend) -> None:
    with pytest.raises(InvalidRecordError) as raised:
        backend.apply(
            after_first(kind=0), PAGE_SIZE, page_numbers(), bytearray(), None, 0, array("Q")
        )
    assert_invalid_record(raised.value, native.STATUS_KIND, SECOND)


def test_apply_validates_records_above_the_lsn_bound(backend: native.Backend) -> None:
    """The bound stops application, not validation: a bad record past it still fails the batch."""
    batch = write(1, 0, 0, b"applied?") + page_image(5, 0, pattern(1, PAGE_SIZE))
    batch += raw_record(lsn=6, flags=0x80)
    pages = pages_of(1)
    pages_before = bytes(pages)
    with pytest.raises(InvalidRecordError) as raised:
        backend.apply(batch, PAGE_SIZE, page_numbers(0), pages, None, 1, array("Q"))
    assert_invalid_record(raised.value, native.STATUS_RESERVED, 56 + 48 + PAGE_SIZE)
    assert pages == pages_before


@pytest.mark.parametrize(
    ("status", "field"),
    [
        (native.STATUS_TRUNCATED, "length"),
        (native.STATUS_KIND, "kind"),
        (native.STATUS_RANGE, "offset"),
        (native.STATUS_LSN_ORDER, "lsn"),
        (native.STATUS_RESERVED, "flags"),
        (native.STATUS_LENGTH, "length"),
        (native.STATUS_PAGE, "page_no"),
        (native.STATUS_BACKLINK, "backlink"),
        (native.STATUS_EMPTY, "length"),
        (native.STATUS_PADDING, "payload"),
    ],
)
def test_each_record_status_names_its_field_and_position(status: int, field: str) -> None:
    with pytest.raises(InvalidRecordError) as raised:
        native.raise_for_status(status, 1234)
    assert (raised.value.field, raised.value.position) == (field, 1234)
    assert "1234" in str(raised.value)


def test_status_ok_raises_nothing() -> None:
    native.raise_for_status(native.STATUS_OK, 0)
