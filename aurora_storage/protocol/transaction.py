"""One mini-transaction (MTR): redo records collected as written, packed and sent at commit.

A :class:`Transaction` notes each record (page, shape word, payload) in its
protection group's share; nothing is sent until commit, when each PG's
records are packed in one C call (native.pack) and handed to the writer,
which allocates their LSNs in one contiguous range: an MTR is atomic.
Limits: MTR_RECORDS_MAX records, MTR_BYTES_MAX packed bytes of one PG.
"""

from __future__ import annotations

from array import array
from types import TracebackType
from typing import Any, Protocol

from .. import native
from ..config import Geometry
from ..errors import (
    InvalidArgumentError,
    OffsetOutOfRangeError,
    PageOutOfRangeError,
    RecordTooLargeError,
)
from ..format import records

MTR_RECORDS_MAX = 100_000  # records in one mini-transaction
MTR_BYTES_MAX = 64 * 1024 * 1024  # bytes of records of one PG in one mini-transaction

_KIND_WRITE_SHAPE = records.KIND_WRITE << records.SHAPE_KIND_SHIFT
_KIND_PAGE_SHAPE = records.KIND_PAGE << records.SHAPE_KIND_SHIFT
_KIND_ZERO_SHAPE = records.KIND_ZERO << records.SHAPE_KIND_SHIFT
_OFFSET_SHIFT = records.SHAPE_OFFSET_SHIFT
_HEADER_BYTES = records.RECORD_HEADER_SIZE


class Committer(Protocol):
    """What a transaction needs of its writer."""

    geometry: Geometry

    def _commit(self, batches: dict[int, bytearray], record_count: int) -> int: ...


def _frozen(data: Any) -> bytes:
    """The bytes of a buffer (bytearray, memoryview, array...) as they are now."""
    try:
        return memoryview(data).tobytes()
    except TypeError:
        raise InvalidArgumentError(
            f"a record's data is a bytes-like object, not {type(data).__name__}"
        ) from None


class _PgRecords:
    """One PG's records of a transaction, as native.pack takes them at commit."""

    __slots__ = ("meta", "payloads", "size")

    def __init__(self) -> None:
        self.meta = array("Q")  # page number and shape (native.shape) of each record
        self.payloads: list[bytes] = []
        self.size = 0  # bytes the records take packed


class Transaction:
    """One mini-transaction: records collected as written, packed and sent at commit, atomic."""

    __slots__ = (
        "_done",
        "_page_count",
        "_page_size",
        "_pages_per_pg",
        "_pgs",
        "_records",
        "_volume",
        "lsn",
    )

    def __init__(self, volume: Committer) -> None:
        self._volume = volume
        geometry = volume.geometry
        self._page_count = geometry.page_count
        self._page_size = geometry.page_size
        self._pages_per_pg = geometry.pages_per_pg
        self._pgs: dict[int, _PgRecords] = {}
        self._records = 0
        self._done = False
        self.lsn = 0

    def _append(self, page_no: int, shape: int, payload: bytes, length: int) -> None:
        """Adds one record (its LSN and backlink come at commit, in C).

        The caller checked ``page_no``; ``payload`` is immutable, so the record
        holds the bytes as they were written; ``length`` is ``len(payload)``.
        This is the one place a record is added.
        """
        if self._done:
            raise InvalidArgumentError("the transaction has already committed or aborted")
        records = self._records
        if records >= MTR_RECORDS_MAX:
            raise RecordTooLargeError(page_no, records + 1, MTR_RECORDS_MAX)
        pg_id = page_no // self._pages_per_pg
        batch = self._pgs.get(pg_id)
        if batch is None:
            batch = self._pgs[pg_id] = _PgRecords()
        size = batch.size + _HEADER_BYTES + (length + 7 & ~7)  # packed, with this record
        if size > MTR_BYTES_MAX:  # (a frame's body: log.FRAME_BODY_MAX)
            raise RecordTooLargeError(page_no, size, MTR_BYTES_MAX)
        meta = batch.meta
        meta.append(page_no)
        meta.append(shape)
        batch.payloads.append(payload)
        batch.size = size
        self._records = records + 1

    def _check_page(self, page_no: int) -> None:
        if type(page_no) is not int or not 0 <= page_no < self._page_count:
            raise PageOutOfRangeError(page_no, self._page_count)

    def write(self, page_no: int, offset: int, data: bytes | bytearray | memoryview) -> None:
        """Redo record: ``data`` goes at ``offset`` in the page."""
        # The page check is _check_page's, written out: this runs once per row.
        if type(page_no) is not int or not 0 <= page_no < self._page_count:
            raise PageOutOfRangeError(page_no, self._page_count)
        if type(data) is not bytes:
            data = _frozen(data)  # a copy as of now: the caller may change the buffer
        length = len(data)
        if type(offset) is not int or offset < 0 or not 0 < length <= self._page_size - offset:
            raise OffsetOutOfRangeError(page_no, offset, length, self._page_size)
        self._append(page_no, _KIND_WRITE_SHAPE | offset << _OFFSET_SHIFT | length, data, length)

    def put_page(self, page_no: int, image: bytes | bytearray | memoryview) -> None:
        """Redo record: the whole page becomes ``image`` (exactly one page long)."""
        self._check_page(page_no)
        if type(image) is not bytes:
            image = _frozen(image)
        if len(image) != self._page_size:
            raise RecordTooLargeError(page_no, len(image), self._page_size)
        self._append(page_no, _KIND_PAGE_SHAPE | len(image), image, len(image))

    def zero_page(self, page_no: int) -> None:
        """Redo record: the page becomes zeros."""
        self._check_page(page_no)
        self._append(page_no, _KIND_ZERO_SHAPE, b"", 0)

    def commit(self) -> int:
        if self._done:
            raise InvalidArgumentError("the transaction has already committed or aborted")
        self._done = True
        if self._records:
            batches = {
                pg_id: native.pack(batch.meta, b"".join(batch.payloads), batch.size)
                for pg_id, batch in self._pgs.items()
            }
            self._pgs.clear()
            self.lsn = self._volume._commit(batches, self._records)
        return self.lsn

    def abort(self) -> None:
        self._done = True
        self._pgs.clear()

    def __enter__(self) -> Transaction:
        return self

    def __repr__(self) -> str:
        if not self._done:
            return f"<Transaction open: {self._records} records in {len(self._pgs)} PGs>"
        if self.lsn:
            return f"<Transaction committed at LSN {self.lsn}>"
        return "<Transaction ended: nothing committed>"

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if kind is None:
            self.commit()
        else:
            self.abort()
