"""The one status table: every status of csrc/status.h has its row in native.STATUS_TABLE,
with the same value, and becomes the exception its row says."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from aurora_storage import native
from aurora_storage.errors import (
    InvalidArgumentError,
    InvalidRecordError,
    NativeCoreError,
    VersionGoneError,
)
from aurora_storage.native.pagelog import NativePageLog

LIB: Any = native.get_backend("native").lib  # type: ignore[attr-defined]


def c_statuses(lib: Any) -> dict[str, int]:
    return {name: getattr(lib, name) for name in dir(lib) if name.startswith("AUS_E_")}


def test_every_c_status_has_its_row_with_the_same_value() -> None:
    rows = {row.c_name: status for status, row in native.STATUS_TABLE.items()}
    assert c_statuses(LIB) == rows
    assert LIB.AUS_OK == native.STATUS_OK
    assert native.core_mismatches(LIB) == []


def test_the_statuses_are_distinct_and_named_by_their_c_name() -> None:
    for status, row in native.STATUS_TABLE.items():
        assert getattr(native, "STATUS_" + row.c_name.removeprefix("AUS_E_")) == status
    assert len({row.c_name for row in native.STATUS_TABLE.values()}) == len(native.STATUS_TABLE)


def test_a_core_with_an_unmapped_or_renumbered_status_is_refused() -> None:
    """The load-time check sees a C status Python does not know, and a changed value."""
    known = {**c_statuses(LIB), "AUS_OK": 0}
    constants = {name: getattr(LIB, name) for name in dir(LIB) if name.startswith("AUS_")}
    extra = SimpleNamespace(**constants, AUS_E_SOMETHING_NEW=99)
    assert native.core_mismatches(extra) == ["AUS_E_SOMETHING_NEW has no row in STATUS_TABLE"]
    renumbered = SimpleNamespace(**{**constants, "AUS_E_GONE": known["AUS_E_GONE"] + 1})
    assert native.core_mismatches(renumbered) == [
        f"AUS_E_GONE is {known['AUS_E_GONE'] + 1} in C, {native.STATUS_GONE} here"
    ]


@pytest.mark.parametrize(
    "status", [status for status, row in native.STATUS_TABLE.items() if row.field is not None]
)
def test_a_record_status_is_an_invalid_record_error_at_its_position(status: int) -> None:
    with pytest.raises(InvalidRecordError) as raised:
        native.raise_for_status(status, 96)
    assert raised.value.position == 96
    assert raised.value.field == native.STATUS_TABLE[status].field


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (native.STATUS_ARGUMENT, InvalidArgumentError),
        (native.STATUS_CAPACITY, NativeCoreError),
        (native.STATUS_NOMEM, MemoryError),
        (native.STATUS_GONE, VersionGoneError),
    ],
)
def test_the_other_statuses_raise_their_own_exception(
    status: int, error: type[BaseException]
) -> None:
    with pytest.raises(error):
        native.raise_for_status(status, 0, page_no=5, lsn=9)


def test_gone_names_the_page_and_version_asked_for() -> None:
    with pytest.raises(VersionGoneError) as raised:
        native.raise_for_status(native.STATUS_GONE, 0, page_no=5, lsn=9)
    assert (raised.value.page_no, raised.value.lsn) == (5, 9)


def test_the_page_log_reports_a_coalesced_version_through_the_table() -> None:
    log = NativePageLog(4096)
    log.set_image(3, b"\x01" * 4096, 40)
    with pytest.raises(VersionGoneError) as raised:
        log.materialize(3, 39)
    assert (raised.value.page_no, raised.value.lsn) == (3, 39)
    log.close()
