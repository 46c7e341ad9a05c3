"""The boundary with the C core, and the pure-Python reference behind it.

This module is the only importer of the compiled ``aurora_storage.native._core``.
It offers batch-shaped functions, each one call per batch of records:

- :func:`validate` checks every rule of a packed record batch;
- :func:`index` lists, per record, its page, LSN, flags, CPL time and position;
- :func:`apply` applies a batch to many page images at once, below an LSN
  bound and outside annulled LSN ranges;
- :func:`apply_to` does the same to a :class:`PageSet`, page images whose
  page numbers, order and buffer sizes were checked once when the set was
  built, so that a call costs only what its batch costs;
- :func:`apply_verified` applies a batch that already passed :func:`validate`
  (a frame body verified on receipt) in one pass, trusting it for every rule
  memory safety does not need (docs/format.md, "Applying records").

Two backends implement them with identical results: ``native`` (the C core,
the default) and ``python`` (a readable reference, selected with
``AURORA_STORAGE_BACKEND=python``). C statuses become exceptions in one place,
:func:`raise_for_status`, from one table, :data:`STATUS_TABLE` (csrc/status.h).
Record layout: docs/format.md, mirrored by ``format/records.py`` (csrc/record.h);
loading the compiled core checks both tables against it (:func:`core_mismatches`).
"""

from __future__ import annotations

import mmap
import operator
import os
import struct
import threading
from array import array
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from types import TracebackType
from typing import Any, NamedTuple, Protocol, Union

from ..errors import (
    FormatVersionError,
    InvalidArgumentError,
    InvalidRecordError,
    NativeCoreError,
    VersionGoneError,
)
from ..format import records
from ..format.records import (
    FLAG_CPL,
    FLAGS_KNOWN,
    FORMAT_VERSION,
    KIND_PAGE,
    KIND_WRITE,
    KIND_ZERO,
    RECORD_HEADER,
    RECORD_HEADER_RESERVED,
    RECORD_HEADER_SIZE,
    RESERVED_ZERO,
)

# Record layout names this module has always offered; their home is format/records.py.
RECORD_ALIGN = records.RECORD_ALIGN
shape = records.shape

PAGE_SIZE_MIN = 4096
PAGE_SIZE_MAX = 65536
NO_BACKLINK = 0xFFFF_FFFF_FFFF_FFFF
LSN_MAX = 0xFFFF_FFFF_FFFF_FFFF

# Statuses of the C core: csrc/status.h, each value under its C name without "AUS_".
STATUS_OK = 0
STATUS_TRUNCATED = 1
STATUS_KIND = 2
STATUS_RANGE = 3
STATUS_LSN_ORDER = 4
STATUS_RESERVED = 5
STATUS_LENGTH = 6
STATUS_PAGE = 7
STATUS_BACKLINK = 8
STATUS_EMPTY = 9
STATUS_PADDING = 10
STATUS_CAPACITY = 11
STATUS_ARGUMENT = 12
STATUS_NOMEM = 13
STATUS_GONE = 14


class StatusRow(NamedTuple):
    """One status of csrc/status.h and how :func:`raise_for_status` reports it."""

    c_name: str
    meaning: str
    field: str | None  # the record field at fault: InvalidRecordError; None: see below


# The one table of C statuses. A row with a field is a bad record and becomes an
# InvalidRecordError at the record's position; the others become, in
# raise_for_status: ARGUMENT InvalidArgumentError, NOMEM MemoryError, GONE
# VersionGoneError, CAPACITY (a bug of this module) NativeCoreError.
STATUS_TABLE: dict[int, StatusRow] = {
    STATUS_TRUNCATED: StatusRow(
        "AUS_E_TRUNCATED", "header or payload runs past the end of the batch", "length"
    ),
    STATUS_KIND: StatusRow("AUS_E_KIND", "unknown record kind", "kind"),
    STATUS_RANGE: StatusRow(
        "AUS_E_RANGE", "offset plus length runs past the end of the page", "offset"
    ),
    STATUS_LSN_ORDER: StatusRow(
        "AUS_E_LSN_ORDER", "LSN is zero or not above the previous record's", "lsn"
    ),
    STATUS_RESERVED: StatusRow(
        "AUS_E_RESERVED", "unknown flag bits or nonzero reserved bytes", "flags"
    ),
    STATUS_LENGTH: StatusRow("AUS_E_LENGTH", "length does not fit the record kind", "length"),
    STATUS_PAGE: StatusRow("AUS_E_PAGE", "page number outside the protection group", "page_no"),
    STATUS_BACKLINK: StatusRow(
        "AUS_E_BACKLINK", "backlink does not continue the chain", "backlink"
    ),
    STATUS_EMPTY: StatusRow("AUS_E_EMPTY", "a batch with no record", "length"),
    STATUS_PADDING: StatusRow("AUS_E_PADDING", "nonzero padding after the payload", "payload"),
    STATUS_CAPACITY: StatusRow(
        "AUS_E_CAPACITY", "an output array given to the C core is too small", None
    ),
    STATUS_ARGUMENT: StatusRow(
        "AUS_E_ARGUMENT",
        "invalid argument to the C core: page size not a power of two in 4 KiB..64 KiB, "
        "page numbers not strictly ascending, or annulled ranges not sorted and disjoint",
        None,
    ),
    STATUS_NOMEM: StatusRow(
        "AUS_E_NOMEM", "the C core could not allocate memory; nothing changed", None
    ),
    STATUS_GONE: StatusRow("AUS_E_GONE", "the page version asked for was coalesced away", None),
}

# Anything that exposes the buffer protocol as bytes (collections.abc.Buffer from 3.12).
Buffer = Union[bytes, bytearray, memoryview, "array[int]", mmap.mmap]

SUMMARY_SIZE = 7
_U64 = struct.Struct("<Q")
_F64 = struct.Struct("<d")


def raise_for_status(status: int, position: int, page_no: int = 0, lsn: int = 0) -> None:
    """Turns a C core status into the library's exception; the one mapping.

    ``position`` locates a bad record; ``page_no`` and ``lsn`` name the version
    asked for, for :data:`STATUS_GONE`.
    """
    if status == STATUS_OK:
        return
    row = STATUS_TABLE.get(status)
    if row is None:
        raise NativeCoreError(f"unknown status {status} from the C core")
    if row.field is not None:
        raise InvalidRecordError(row.meaning, position, row.field)
    if status == STATUS_ARGUMENT:
        raise InvalidArgumentError(row.meaning)
    if status == STATUS_NOMEM:
        raise MemoryError(row.meaning)
    if status == STATUS_GONE:
        raise VersionGoneError(page_no, lsn)
    raise NativeCoreError(row.meaning)


class BatchSummary(NamedTuple):
    """What :func:`validate` learned about a valid batch (a tuple: built once per frame)."""

    count: int  # type: ignore[assignment]  # the field shadows tuple.count on purpose
    first_lsn: int
    last_lsn: int
    cpl_count: int
    last_cpl_lsn: int
    payload_bytes: int
    last_cpl_time: float = 0.0  # writer clock time carried by the last CPL record


@dataclass(frozen=True)
class RecordIndex:
    """Per-record columns of a batch, as :func:`index` returns them."""

    page_nos: array[int]
    lsns: array[int]
    flags: bytes
    times: array[float]
    positions: array[int]

    def __len__(self) -> int:
        return len(self.lsns)


class Backend(Protocol):
    name: str

    def validate(
        self, buf: Buffer, page_size: int, page_lo: int, page_hi: int, backlink: int
    ) -> BatchSummary: ...

    def index(self, buf: Buffer, page_size: int) -> RecordIndex: ...

    def apply(
        self,
        buf: Buffer,
        page_size: int,
        page_nos: array[int],
        pages: Buffer,
        page_lsns: array[int] | None,
        lsn_bound: int,
        annulled: array[int],
    ) -> int: ...

    def apply_to(
        self, page_set: PageSet, buf: Buffer, lsn_bound: int, annulled: array[int]
    ) -> int: ...

    def apply_verified(
        self, page_set: PageSet, buf: Buffer, lsn_bound: int, annulled: array[int]
    ) -> int: ...


def _flatten_annulled(annulled: Sequence[tuple[int, int]] | array[int]) -> array[int]:
    """Annulled (lo, hi] ranges as the flat uint64 pairs C reads, whatever array came in."""
    if isinstance(annulled, array):
        if len(annulled) % 2:
            raise InvalidArgumentError(f"annulled ranges are pairs: {len(annulled)} values")
        # C reads 8 bytes a value: another item size would be read out of bounds.
        if annulled.typecode == "Q":
            return annulled
        try:
            return array("Q", annulled)
        except OverflowError:
            raise InvalidArgumentError("annulled LSNs must be >= 0") from None
    flat = array("Q")
    for lo, hi in annulled:
        flat.append(lo)
        flat.append(hi)
    return flat


def _check_apply_buffers(
    page_size: int, page_nos: array[int], pages: Buffer, page_lsns: array[int] | None
) -> None:
    """Both backends write into ``pages`` and ``page_lsns``: refuse ones too short for page_nos."""
    if len(memoryview(pages).cast("B")) < len(page_nos) * page_size:
        raise InvalidArgumentError(
            f"pages holds {len(memoryview(pages).cast('B'))} bytes, "
            f"fewer than {len(page_nos)} pages of {page_size}"
        )
    if page_lsns is not None and len(page_lsns) < len(page_nos):
        raise InvalidArgumentError("page_lsns is shorter than page_nos")


def _ascending(page_nos: array[int]) -> bool:
    return all(map(operator.lt, page_nos, islice(page_nos, 1, None)))


class PageSet:
    """Page images of a fixed list of page numbers, checked once for many apply calls.

    ``pages`` holds ``len(page_nos)`` images of ``page_size`` bytes end to end,
    for strictly ascending ``page_nos``; ``page_lsns``, when given, holds one
    LSN per page (an ``array("Q")``). The constructor checks the page size,
    the order of the page numbers and the sizes of both buffers, once:
    :func:`apply_to` and :func:`apply_verified` then convert only the batch,
    and the C core takes the order of the page numbers on trust.

    The page numbers are copied. ``pages`` and ``page_lsns`` are the caller's
    buffers, written in place; the set keeps a view of each, so they cannot be
    resized (``BufferError``) and C can keep their addresses, until
    :meth:`close` or the end of a ``with`` block. Applying to a closed set
    raises :class:`InvalidArgumentError`. The set holds no buffer exported to
    cffi between calls: its views export nothing, so the garbage collector may
    clear them in any order (gh-77894).
    """

    __slots__ = ("_native", "_slots", "_views", "page_lsns", "page_nos", "page_size", "pages")

    def __init__(
        self,
        page_size: int,
        page_nos: Iterable[int],
        pages: Buffer,
        page_lsns: array[int] | None = None,
    ) -> None:
        if not _check_page_size(page_size):
            raise_for_status(STATUS_ARGUMENT, 0)
        try:
            numbers = array("Q", page_nos)
        except (OverflowError, TypeError) as error:
            raise InvalidArgumentError(
                f"page numbers must be integers from 0 to {LSN_MAX}: {error}"
            ) from None
        if not _ascending(numbers):
            raise InvalidArgumentError("page numbers are not strictly ascending")
        if page_lsns is not None and (
            not isinstance(page_lsns, array) or page_lsns.typecode != "Q"
        ):
            raise InvalidArgumentError("page_lsns must be an array('Q')")
        # The pins, taken before the sizes are checked so that the checks stay true:
        # each view holds its object's buffer in place (no resize) and exports nothing.
        views = [memoryview(numbers), memoryview(pages).cast("B")]
        if page_lsns is not None:
            views.append(memoryview(page_lsns))
        try:
            if views[1].readonly:
                raise InvalidArgumentError("pages is read-only")
            if len(views[1]) < len(numbers) * page_size:
                raise InvalidArgumentError(
                    f"pages holds {len(views[1])} bytes, "
                    f"fewer than {len(numbers)} pages of {page_size}"
                )
            if page_lsns is not None and len(page_lsns) < len(numbers):
                raise InvalidArgumentError("page_lsns is shorter than page_nos")
        except InvalidArgumentError:
            for view in views:
                view.release()
            raise
        self.page_size = page_size
        self.page_nos = numbers
        self.pages = pages
        self.page_lsns = page_lsns
        self._views: tuple[memoryview, ...] = tuple(views)
        self._native: tuple[Any, ...] | None = None  # pointers and out cells, by NativeBackend
        self._slots: dict[int, int] | None = None  # page number -> slot, by PythonBackend

    def __len__(self) -> int:
        return len(self.page_nos)

    @property
    def closed(self) -> bool:
        return not self._views

    def close(self) -> None:
        """Releases the buffers; the set can no longer be applied to. Idempotent."""
        self._native = None
        views, self._views = self._views, ()
        for view in views:
            view.release()

    def __enter__(self) -> PageSet:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _open_views(self) -> tuple[memoryview, ...]:
        if not self._views:
            raise InvalidArgumentError("the page set is closed")
        return self._views


# --- the pure-Python reference ----------------------------------------------------


def _check_page_size(page_size: int) -> bool:
    return PAGE_SIZE_MIN <= page_size <= PAGE_SIZE_MAX and page_size & (page_size - 1) == 0


_padded = records.padded


class PythonBackend:
    """Readable reference implementation; same results as the C core, slower."""

    name = "python"

    @staticmethod
    def _records(
        data: memoryview, page_size: int
    ) -> Iterator[tuple[int, tuple[int, int, int, float, int, int, int, int]]]:
        """Yields (position, fields) of each record after checking it, like check_record in C."""
        length = len(data)
        if length == 0:
            raise_for_status(STATUS_EMPTY, 0)
        position = 0
        previous = 0
        while position < length:
            if length - position < RECORD_HEADER_SIZE:
                raise_for_status(STATUS_TRUNCATED, position)
            lsn, backlink, page_no, time, offset, size, kind, flags, reserved = (
                RECORD_HEADER_RESERVED.unpack_from(data, position)
            )
            status = STATUS_OK
            if reserved != RESERVED_ZERO or flags & ~FLAGS_KNOWN:
                status = STATUS_RESERVED
            elif lsn == 0 or lsn <= previous:
                status = STATUS_LSN_ORDER
            elif kind == KIND_WRITE:
                if size == 0:
                    status = STATUS_LENGTH
                elif offset + size > page_size:
                    status = STATUS_RANGE
            elif kind == KIND_PAGE:
                if offset != 0 or size != page_size:
                    status = STATUS_LENGTH
            elif kind == KIND_ZERO:
                if offset != 0 or size != 0:
                    status = STATUS_LENGTH
            else:
                status = STATUS_KIND
            body = _padded(size)
            if status == STATUS_OK and length - position - RECORD_HEADER_SIZE < body:
                status = STATUS_TRUNCATED
            if status == STATUS_OK:
                start = position + RECORD_HEADER_SIZE + size
                if any(data[start : position + RECORD_HEADER_SIZE + body]):
                    status = STATUS_PADDING
            raise_for_status(status, position)
            yield position, (lsn, backlink, page_no, time, offset, size, kind, flags)
            previous = lsn
            position += RECORD_HEADER_SIZE + body

    def validate(
        self, buf: Buffer, page_size: int, page_lo: int, page_hi: int, backlink: int
    ) -> BatchSummary:
        if not _check_page_size(page_size) or page_lo > page_hi:
            raise_for_status(STATUS_ARGUMENT, 0)
        count = cpl_count = last_cpl = payload = first = previous = 0
        last_cpl_time = 0.0
        for position, fields in self._records(memoryview(buf).cast("B"), page_size):
            lsn, record_backlink, page_no, time, _offset, size, _kind, flags = fields
            if not page_lo <= page_no < page_hi:
                raise_for_status(STATUS_PAGE, position)
            if backlink != NO_BACKLINK:
                expected = backlink if count == 0 else previous
                if record_backlink != expected:
                    raise_for_status(STATUS_BACKLINK, position)
            if count == 0:
                first = lsn
            if flags & FLAG_CPL:
                cpl_count += 1
                last_cpl = lsn
                last_cpl_time = time
            payload += size
            count += 1
            previous = lsn
        return BatchSummary(count, first, previous, cpl_count, last_cpl, payload, last_cpl_time)

    def index(self, buf: Buffer, page_size: int) -> RecordIndex:
        if not _check_page_size(page_size):
            raise_for_status(STATUS_ARGUMENT, 0)
        records = list(self._records(memoryview(buf).cast("B"), page_size))
        return RecordIndex(
            page_nos=array("Q", (fields[2] for _, fields in records)),
            lsns=array("Q", (fields[0] for _, fields in records)),
            flags=bytes(fields[7] for _, fields in records),
            times=array("d", (fields[3] for _, fields in records)),
            positions=array("Q", (position for position, _ in records)),
        )

    def apply(
        self,
        buf: Buffer,
        page_size: int,
        page_nos: array[int],
        pages: Buffer,
        page_lsns: array[int] | None,
        lsn_bound: int,
        annulled: array[int],
    ) -> int:
        if not _check_page_size(page_size) or not _annulled_valid(annulled):
            raise_for_status(STATUS_ARGUMENT, 0)
        if not _ascending(page_nos):
            raise_for_status(STATUS_ARGUMENT, 0)
        _check_apply_buffers(page_size, page_nos, pages, page_lsns)
        slots = {page_no: slot for slot, page_no in enumerate(page_nos)}
        return self._apply_records(
            buf, page_size, slots, memoryview(pages).cast("B"), page_lsns, lsn_bound, annulled
        )

    def apply_to(self, page_set: PageSet, buf: Buffer, lsn_bound: int, annulled: array[int]) -> int:
        target = page_set._open_views()[1]
        if not _annulled_valid(annulled):
            raise_for_status(STATUS_ARGUMENT, 0)
        slots = page_set._slots
        if slots is None:
            slots = page_set._slots = {no: slot for slot, no in enumerate(page_set.page_nos)}
        return self._apply_records(
            buf, page_set.page_size, slots, target, page_set.page_lsns, lsn_bound, annulled
        )

    def apply_verified(
        self, page_set: PageSet, buf: Buffer, lsn_bound: int, annulled: array[int]
    ) -> int:
        """The reference validates anyway: on a valid batch the result is the same."""
        return self.apply_to(page_set, buf, lsn_bound, annulled)

    def _apply_records(
        self,
        buf: Buffer,
        page_size: int,
        slots: dict[int, int],
        target: memoryview,
        page_lsns: array[int] | None,
        lsn_bound: int,
        annulled: array[int],
    ) -> int:
        data = memoryview(buf).cast("B")
        records = list(self._records(data, page_size))
        ranges = [(annulled[i], annulled[i + 1]) for i in range(0, len(annulled), 2)]
        applied = 0
        for position, (lsn, _backlink, page_no, _time, offset, size, kind, _flags) in records:
            if lsn > lsn_bound:
                break
            if any(lo < lsn <= hi for lo, hi in ranges):
                continue
            slot = slots.get(page_no)
            if slot is None:
                continue
            if page_lsns is not None:
                if lsn <= page_lsns[slot]:
                    continue
                page_lsns[slot] = lsn
            base = slot * page_size
            payload = position + RECORD_HEADER_SIZE
            if kind == KIND_WRITE:
                target[base + offset : base + offset + size] = data[payload : payload + size]
            elif kind == KIND_PAGE:
                target[base : base + page_size] = data[payload : payload + page_size]
            else:
                target[base : base + page_size] = bytes(page_size)
            applied += 1
        return applied


def _annulled_valid(annulled: array[int]) -> bool:
    if len(annulled) % 2:
        return False
    for i in range(0, len(annulled), 2):
        if annulled[i] >= annulled[i + 1]:
            return False
        if i and annulled[i] < annulled[i - 1]:
            return False
    return True


# --- the C core ---------------------------------------------------------------------


class _Cells(threading.local):
    """The output cells of the backend's C calls, one set per thread.

    C runs with the GIL released, so cells shared by every thread would be
    overwritten by a call on another thread (two volumes, or a restore beside
    commits) between a call and the reading of its results.
    """

    def __init__(self, ffi: Any) -> None:
        self.summary = ffi.new("uint64_t[]", SUMMARY_SIZE)
        self.position = ffi.new("size_t *")
        self.count = ffi.new("size_t *")
        self.applied = ffi.new("uint64_t *")


def core_mismatches(lib: Any) -> list[str]:
    """How the compiled core's constants differ from this module's tables (empty: none).

    Compared: every status of :data:`STATUS_TABLE`, both ways (a C status with
    no row would reach Python unmapped), the record layout of
    ``format/records.py`` (csrc/record.h) and the batch constants below.
    """
    expected = {row.c_name: status for status, row in STATUS_TABLE.items()}
    expected.update(
        {
            "AUS_OK": STATUS_OK,
            "AUS_SUMMARY_SIZE": SUMMARY_SIZE,
            "AUS_PAGE_SIZE_MIN": PAGE_SIZE_MIN,
            "AUS_PAGE_SIZE_MAX": PAGE_SIZE_MAX,
            "AUS_NO_BACKLINK": NO_BACKLINK,
            **records.C_MIRROR,
        }
    )
    mismatches = [
        f"{name} is {getattr(lib, name, 'missing')} in C, {value} here"
        for name, value in expected.items()
        if getattr(lib, name, None) != value
    ]
    mismatches += [
        f"{name} has no row in STATUS_TABLE"
        for name in dir(lib)
        if name.startswith("AUS_E_") and name not in expected
    ]
    return mismatches


class NativeBackend:
    """The compiled C core (csrc/aurora.c) through cffi, no copies of inputs."""

    name = "native"

    def __init__(self, module: Any) -> None:
        self.ffi = module.ffi
        self.lib = module.lib
        found = int(self.lib.aus_format_version())
        if found != FORMAT_VERSION:
            raise FormatVersionError("the compiled C core", found, FORMAT_VERSION)
        mismatches = core_mismatches(self.lib)
        if mismatches:
            # A stale or foreign build, not a bug of this process: an exception, not an assert.
            raise NativeCoreError(
                "the compiled C core disagrees with the Python tables: " + "; ".join(mismatches)
            )
        self._cells = _Cells(self.ffi)
        # Bound once for apply_to / apply_verified, which run once per batch.
        self._from_buffer = self.ffi.from_buffer
        self._null = self.ffi.NULL
        self._aus_apply = self.lib.aus_apply
        self._aus_apply_verified = self.lib.aus_apply_verified

    def validate(
        self, buf: Buffer, page_size: int, page_lo: int, page_hi: int, backlink: int
    ) -> BatchSummary:
        # Checked here too: cffi raises OverflowError for a size that is no uint32_t.
        if not _check_page_size(page_size):
            raise_for_status(STATUS_ARGUMENT, 0)
        ffi = self.ffi
        cells = self._cells
        summary = cells.summary
        # Each input is released before raising: a traceback keeping a memoryview exported
        # to cffi crashes the garbage collector of CPython before 3.12.7 (gh-77894).
        with ffi.from_buffer("uint8_t[]", buf) as source:
            status = self.lib.aus_validate(
                source, len(source), page_size, page_lo, page_hi, backlink, summary, cells.position
            )
        raise_for_status(status, cells.position[0])
        values = ffi.unpack(summary, SUMMARY_SIZE)
        (time,) = _F64.unpack(_U64.pack(values[6]))
        count, first, last, cpl_count, last_cpl, payload = values[:6]
        return BatchSummary(count, first, last, cpl_count, last_cpl, payload, time)

    def index(self, buf: Buffer, page_size: int) -> RecordIndex:
        if not _check_page_size(page_size):
            raise_for_status(STATUS_ARGUMENT, 0)
        ffi, cells = self.ffi, self._cells
        with ffi.from_buffer("uint8_t[]", buf) as source:
            capacity = len(source) // RECORD_HEADER_SIZE
            page_nos = array("Q", bytes(8 * capacity))
            lsns = array("Q", bytes(8 * capacity))
            flags = bytearray(capacity)
            times = array("d", bytes(8 * capacity))
            positions = array("Q", bytes(8 * capacity))
            status = self.lib.aus_index(
                source,
                len(source),
                page_size,
                capacity,
                ffi.from_buffer("uint64_t[]", page_nos),
                ffi.from_buffer("uint64_t[]", lsns),
                ffi.from_buffer("uint8_t[]", flags),
                ffi.from_buffer("double[]", times),
                ffi.from_buffer("uint64_t[]", positions),
                cells.count,
                cells.position,
            )
        raise_for_status(status, cells.position[0])
        count = int(cells.count[0])
        for column in (page_nos, lsns, times, positions):
            del column[count:]
        return RecordIndex(page_nos, lsns, bytes(flags[:count]), times, positions)

    def apply(
        self,
        buf: Buffer,
        page_size: int,
        page_nos: array[int],
        pages: Buffer,
        page_lsns: array[int] | None,
        lsn_bound: int,
        annulled: array[int],
    ) -> int:
        if not _check_page_size(page_size) or len(annulled) % 2:
            raise_for_status(STATUS_ARGUMENT, 0)
        ffi, lib, cells = self.ffi, self.lib, self._cells
        # The C core takes ascending page numbers on trust: checked here, O(pages) on
        # every call (a PageSet checks once), in the order of the Python reference.
        # Nothing to check for one page and no range (a materialization).
        if len(annulled) or len(page_nos) > 1:
            with (
                ffi.from_buffer("uint64_t[]", page_nos) as numbers,
                ffi.from_buffer("uint64_t[]", annulled) as ranges,
            ):
                arguments_valid = lib.aus_annulled_valid(ranges, len(annulled) // 2) and (
                    lib.aus_page_nos_ascending(numbers, len(page_nos))
                )
            if not arguments_valid:
                raise_for_status(STATUS_ARGUMENT, 0)
        # C writes page_count pages and page LSNs: short buffers would be overrun.
        _check_apply_buffers(page_size, page_nos, pages, page_lsns)
        with (
            ffi.from_buffer("uint8_t[]", buf) as source,
            ffi.from_buffer("uint8_t[]", pages, require_writable=True) as target,
            ffi.from_buffer("uint64_t[]", page_nos) as numbers,
            ffi.from_buffer("uint64_t[]", annulled) as ranges,
        ):
            status = lib.aus_apply(
                source,
                len(source),
                page_size,
                numbers,
                len(page_nos),
                target,
                ffi.NULL if page_lsns is None else ffi.from_buffer("uint64_t[]", page_lsns),
                lsn_bound,
                ranges,
                len(annulled) // 2,
                cells.applied,
                cells.position,
            )
        raise_for_status(status, cells.position[0])
        return int(cells.applied[0])

    # apply_to and apply_verified run once per batch and convert only the batch (the
    # page set was bound once, by _bind).

    def apply_to(self, page_set: PageSet, buf: Buffer, lsn_bound: int, annulled: array[int]) -> int:
        return self._apply(self._aus_apply, page_set, buf, lsn_bound, annulled)

    def apply_verified(
        self, page_set: PageSet, buf: Buffer, lsn_bound: int, annulled: array[int]
    ) -> int:
        return self._apply(self._aus_apply_verified, page_set, buf, lsn_bound, annulled)

    def _apply(
        self,
        function: Any,
        page_set: PageSet,
        buf: Buffer,
        lsn_bound: int,
        annulled: array[int],
    ) -> int:
        """One call of ``aus_apply`` or ``aus_apply_verified`` (same arguments) on a batch."""
        page_size, page_nos, page_count, pages, page_lsns, applied, position = (
            page_set._native or self._bind(page_set)
        )
        if annulled:
            if len(annulled) % 2:
                raise_for_status(STATUS_ARGUMENT, 0)
            ranges, range_count = self._from_buffer("uint64_t[]", annulled), len(annulled) // 2
        else:
            ranges, range_count = self._null, 0
        source = self._from_buffer(buf)
        try:
            status = function(
                source,
                len(source),
                page_size,
                page_nos,
                page_count,
                pages,
                page_lsns,
                lsn_bound,
                ranges,
                range_count,
                applied,
                position,
            )
        except BaseException:
            # cffi refused an argument: release the inputs before a traceback can keep
            # this frame, and with it a memoryview exported to cffi (gh-77894).
            del source, ranges
            raise
        if status:
            del source, ranges
            raise_for_status(status, position[0])
        return applied[0]  # type: ignore[no-any-return]

    def _bind(self, page_set: PageSet) -> tuple[Any, ...]:
        """The C arguments of a page set: addresses of its pinned buffers, and out cells.

        Each address comes from a temporary ffi.from_buffer, released at once: the
        set's views keep the memory in place, and nothing stays exported to cffi.
        """
        ffi = self.ffi
        views = page_set._open_views()
        page_nos = ffi.cast("uint64_t *", ffi.from_buffer(views[0]))
        pages = ffi.cast("uint8_t *", ffi.from_buffer(views[1], require_writable=True))
        page_lsns = (
            ffi.cast("uint64_t *", ffi.from_buffer(views[2], require_writable=True))
            if len(views) > 2
            else ffi.NULL
        )
        bound = (
            page_set.page_size,
            page_nos,
            len(page_set.page_nos),
            pages,
            page_lsns,
            # Out cells of the set's own: C runs without the GIL, so cells shared by
            # every call of this backend could be overwritten by another thread's call.
            ffi.new("uint64_t *"),
            ffi.new("size_t *"),
        )
        page_set._native = bound
        return bound


def _load_backend(name: str) -> Backend:
    if name == "python":
        return PythonBackend()
    if name == "native":
        try:
            from . import _core  # type: ignore[attr-defined]
        except ImportError as error:
            raise NativeCoreError(
                "the compiled C core aurora_storage.native._core is missing: install the package "
                "with pip (it compiles csrc/), or set AURORA_STORAGE_BACKEND=python"
            ) from error
        return NativeBackend(_core)
    raise NativeCoreError(f"AURORA_STORAGE_BACKEND={name!r}: expected 'native' or 'python'")


BACKEND_NAMES = ("native", "python")
backend: Backend = _load_backend(os.environ.get("AURORA_STORAGE_BACKEND", "native"))


def get_backend(name: str) -> Backend:
    """A backend by name, for tests and benchmarks that compare the two."""
    if name == backend.name:
        return backend
    return _load_backend(name)


def validate(
    buf: Buffer,
    page_size: int,
    page_lo: int = 0,
    page_hi: int = LSN_MAX,
    backlink: int | None = None,
) -> BatchSummary:
    """Checks a packed record batch; raises :class:`InvalidRecordError` on the first bad record.

    Pages must lie in ``[page_lo, page_hi)``. With ``backlink`` the records must
    form a chain: the first record's backlink is ``backlink``, each later one's
    the LSN before it.
    """
    return backend.validate(
        buf, page_size, page_lo, page_hi, NO_BACKLINK if backlink is None else backlink
    )


def index(buf: Buffer, page_size: int) -> RecordIndex:
    """Validates a batch and returns its per-record columns."""
    return backend.index(buf, page_size)


def apply(
    buf: Buffer,
    page_size: int,
    page_nos: array[int],
    pages: Buffer,
    *,
    page_lsns: array[int] | None = None,
    lsn_bound: int = LSN_MAX,
    annulled: Sequence[tuple[int, int]] | array[int] = (),
) -> int:
    """Applies a batch to page images; returns how many records were applied.

    ``pages`` holds ``len(page_nos)`` images of ``page_size`` bytes end to end,
    for the strictly ascending ``page_nos``. Records above ``lsn_bound``, in an
    annulled range ``(lo, hi]``, or not above ``page_lsns[slot]`` are skipped;
    ``page_lsns`` is updated to the last LSN applied to each page. The batch is
    validated first: on error no page is touched.
    """
    return backend.apply(
        buf, page_size, page_nos, pages, page_lsns, lsn_bound, _flatten_annulled(annulled)
    )


def apply_to(
    page_set: PageSet,
    buf: Buffer,
    *,
    lsn_bound: int = LSN_MAX,
    annulled: Sequence[tuple[int, int]] | array[int] = (),
) -> int:
    """:func:`apply` to the pages of ``page_set``; returns how many records were applied.

    The batch is validated first: on error no page is touched.
    """
    return backend.apply_to(page_set, buf, lsn_bound, _flatten_annulled(annulled))


def apply_verified(
    page_set: PageSet,
    buf: Buffer,
    *,
    lsn_bound: int = LSN_MAX,
    annulled: Sequence[tuple[int, int]] | array[int] = (),
) -> int:
    """:func:`apply_to` for a batch that already passed :func:`validate`, in one pass.

    For a valid batch the pages, page LSNs and count are those of
    :func:`apply_to`. The C core trusts the batch for every rule but those
    memory safety needs (docs/format.md, "Applying records"): a record that
    breaks one of those raises :class:`InvalidRecordError` *after* the
    records before it were applied; one that breaks another rule is applied
    as its bytes say. Never pass bytes that were not validated.
    """
    return backend.apply_verified(page_set, buf, lsn_bound, _flatten_annulled(annulled))


# --- writer-side stamping ----------------------------------------------------------


SHAPE_BITS = records.SHAPE_FIELD_BITS  # the shape word of pack: format/records.py


def _python_pack(meta: array[int], payload: bytes, size: int) -> bytearray:
    """Reference for csrc/writer.c aus_pack."""
    mask = records.SHAPE_FIELD_MASK
    pairs = [(meta[i], meta[i + 1]) for i in range(0, len(meta), 2)]
    lengths = [word >> records.SHAPE_LENGTH_SHIFT & mask for _, word in pairs]
    if sum(lengths) != len(payload) or size != sum(map(records.record_size, lengths)):
        raise_for_status(STATUS_ARGUMENT, 0)
    out = bytearray()
    position = 0
    for (page_no, word), length in zip(pairs, lengths, strict=True):
        offset = word >> records.SHAPE_OFFSET_SHIFT & mask
        kind = word >> records.SHAPE_KIND_SHIFT
        out += RECORD_HEADER.pack(0, 0, page_no, 0.0, offset, length, kind, 0)
        out += payload[position : position + length]
        out += bytes(_padded(length) - length)
        position += length
    return out


def pack(meta: array[int], payload: bytes, size: int) -> bytearray:
    """A batch of records from page numbers and shapes (``meta``, two words a
    record, see :func:`shape`) and their payloads laid end to end; ``size`` is
    the packed size. LSNs and backlinks are zero until :func:`stamp`."""
    if not isinstance(backend, NativeBackend):
        return _python_pack(meta, payload, size)
    ffi, lib = backend.ffi, backend.lib
    out = bytearray(size)
    status = lib.aus_pack(
        ffi.from_buffer("uint64_t[]", meta),
        len(meta) // 2,
        ffi.from_buffer(payload),
        len(payload),
        ffi.from_buffer("uint8_t[]", out, require_writable=True),
        size,
    )
    raise_for_status(status, 0)
    return out


def _python_stamp(
    buf: bytearray, page_size: int, first_lsn: int, backlink: int, cpl: bool, time: float
) -> int:
    """Reference for csrc/writer.c aus_stamp."""
    positions = []
    position = 0
    while position < len(buf):
        if len(buf) - position < RECORD_HEADER_SIZE:
            raise_for_status(STATUS_TRUNCATED, position)
        size = records.record_size(records.length_at(buf, position))
        if len(buf) - position < size:
            raise_for_status(STATUS_TRUNCATED, position)
        positions.append(position)
        position += size
    if not positions:
        raise_for_status(STATUS_EMPTY, 0)
    if first_lsn == 0 or first_lsn <= backlink or first_lsn + len(positions) > LSN_MAX:
        raise_for_status(STATUS_ARGUMENT, 0)
    previous = backlink
    for lsn, position in enumerate(positions, start=first_lsn):
        is_cpl = cpl and position == positions[-1]
        _U64.pack_into(buf, position + records.RECORD_LSN_AT, lsn)
        _U64.pack_into(buf, position + records.RECORD_BACKLINK_AT, previous)
        _F64.pack_into(buf, position + records.RECORD_TIME_AT, time if is_cpl else 0.0)
        buf[position + records.RECORD_FLAGS_AT] = FLAG_CPL if is_cpl else 0
        previous = lsn
    PythonBackend().validate(buf, page_size, 0, LSN_MAX, backlink)
    return previous


def stamp(
    buf: bytearray, page_size: int, first_lsn: int, backlink: int, cpl: bool, time: float
) -> int:
    """Gives a packed batch its LSNs from ``first_lsn``, chains backlinks, marks the CPL.

    At commit a mini-transaction's records are packed with zero LSNs
    (:func:`pack`) and each PG's batch is stamped once. Returns the last LSN.
    """
    if not isinstance(backend, NativeBackend):
        return _python_stamp(buf, page_size, first_lsn, backlink, cpl, time)
    ffi, lib = backend.ffi, backend.lib
    last = ffi.new("uint64_t *")
    position = ffi.new("size_t *")
    with ffi.from_buffer("uint8_t[]", buf, require_writable=True) as target:
        status = lib.aus_stamp(
            target, len(buf), page_size, first_lsn, backlink, 1 if cpl else 0, time, last, position
        )
    raise_for_status(status, position[0])
    return int(last[0])
