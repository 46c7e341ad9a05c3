"""A segment's records indexed by page, and its coalesced page images.

:class:`PageLog` is where a storage node spends its per-record time: it takes
record batches (one call per frame), materializes one page at a read point
(one call per page), and folds old records into page images (one call per
coalescing pass). The native implementation is csrc/pagelog.c, an opaque C
object freed with ``ffi.gc``; :class:`PythonPageLog` is the reference with the
same behaviour, used when ``AURORA_STORAGE_BACKEND=python``.

Invariants: a page's records are kept in LSN order and each LSN once; a page
reads as its image (or zeros) plus its records up to the read point, minus
annulled ranges; a version older than the page's image is gone.
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Union

from . import native
from .errors import InvalidArgumentError, NativeCoreError, VersionGoneError
from .native import Buffer

STATUS_NOMEM = 13
STATUS_GONE = 14


@dataclass(frozen=True)
class PageLogStats:
    pages: int
    records: int
    record_bytes: int
    images: int
    image_bytes: int
    allocated_bytes: int


Annulled = Union[Sequence[tuple[int, int]], "array[int]"]


def _raise(status: int, position: int, page_no: int = 0, lsn: int = 0) -> None:
    if status == STATUS_NOMEM:
        raise MemoryError("the C page log could not allocate memory; nothing changed")
    if status == STATUS_GONE:
        raise VersionGoneError(page_no, lsn)
    native.raise_for_status(status, position)


class NativePageLog:
    """csrc/pagelog.c through cffi."""

    def __init__(self, page_size: int) -> None:
        backend = native.get_backend("native")
        assert isinstance(backend, native.NativeBackend)
        self._ffi: Any = backend.ffi
        self._lib: Any = backend.lib
        handle = self._lib.aus_pagelog_new(page_size)
        if handle == self._ffi.NULL:
            raise InvalidArgumentError(
                f"page size {page_size} is not a power of two in 4096..65536"
            )
        self._handle: Any = self._ffi.gc(handle, self._lib.aus_pagelog_free)
        self.page_size = page_size
        self._count = self._ffi.new("uint64_t[2]")
        self._position = self._ffi.new("size_t *")
        self._stats = self._ffi.new("uint64_t[6]")
        # Materialization writes here, then one copy becomes the caller's bytes.
        self._out = self._ffi.new("uint8_t[]", page_size)

    def _live(self) -> Any:
        if self._handle is None:
            raise NativeCoreError("the page log is closed")
        return self._handle

    def close(self) -> None:
        """Frees the C memory now rather than at garbage collection."""
        if self._handle is not None:
            self._ffi.release(self._handle)
            self._handle = None

    def append(self, batch: Buffer) -> int:
        # Released before raising: see NativeBackend.validate (CPython gh-77894).
        with self._ffi.from_buffer("uint8_t[]", batch) as source:
            status = self._lib.aus_pagelog_append(
                self._live(), source, len(source), self._count, self._position
            )
        _raise(status, self._position[0])
        return int(self._count[0])

    def materialize(
        self, page_no: int, lsn_bound: int = native.LSN_MAX, annulled: Annulled = ()
    ) -> tuple[bytes, int]:
        ffi = self._ffi
        flat = native._flatten_annulled(annulled) if annulled else None
        out = self._out
        count = self._count
        status = self._lib.aus_pagelog_materialize(
            self._live(),
            page_no,
            lsn_bound,
            ffi.NULL if flat is None else ffi.from_buffer("uint64_t[]", flat),
            0 if flat is None else len(flat) // 2,
            out,
            count,
            count + 1,
        )
        _raise(status, 0, page_no, lsn_bound)
        return ffi.buffer(out)[:], int(count[0])

    def coalesce(self, lsn: int, annulled: Annulled = ()) -> int:
        flat = native._flatten_annulled(annulled)
        status = self._lib.aus_pagelog_coalesce(
            self._live(),
            lsn,
            self._ffi.from_buffer("uint64_t[]", flat),
            len(flat) // 2,
            self._count,
        )
        _raise(status, 0)
        return int(self._count[0])

    def set_image(self, page_no: int, image: Buffer, image_lsn: int) -> None:
        """Installs a checkpointed image for a page that holds nothing yet."""
        if len(memoryview(image).cast("B")) != self.page_size:
            raise InvalidArgumentError(f"an image of page {page_no} must be {self.page_size} bytes")
        with self._ffi.from_buffer("uint8_t[]", image) as source:
            status = self._lib.aus_pagelog_set_image(self._live(), page_no, source, image_lsn)
        _raise(status, 0, page_no, image_lsn)

    def stats(self) -> PageLogStats:
        self._lib.aus_pagelog_stats(self._live(), self._stats)
        return PageLogStats(*(int(self._stats[i]) for i in range(6)))

    def page_nos(self) -> list[int]:
        capacity = self.stats().pages
        out = array("Q", bytes(8 * capacity))
        count = self._ffi.new("size_t *")
        status = self._lib.aus_pagelog_pages(
            self._live(), self._ffi.from_buffer("uint64_t[]", out), capacity, count
        )
        _raise(status, 0)
        return sorted(out)


class _PythonPage:
    __slots__ = ("image", "image_lsn", "last_lsn", "records")

    def __init__(self) -> None:
        self.last_lsn = 0
        self.image_lsn = 0
        self.image: bytearray | None = None
        self.records = bytearray()


class PythonPageLog:
    """The reference: the same behaviour as csrc/pagelog.c, in plain Python."""

    def __init__(self, page_size: int) -> None:
        if not native._check_page_size(page_size):
            raise InvalidArgumentError(
                f"page size {page_size} is not a power of two in 4096..65536"
            )
        self.page_size = page_size
        self._pages: dict[int, _PythonPage] = {}
        self._backend = native.get_backend("python")
        self._closed = False

    def close(self) -> None:
        self._pages.clear()
        self._closed = True

    def _live(self) -> dict[int, _PythonPage]:
        if self._closed:
            raise NativeCoreError("the page log is closed")
        return self._pages

    def append(self, batch: Buffer) -> int:
        pages = self._live()
        index = self._backend.index(batch, self.page_size)
        data = memoryview(batch).cast("B")
        ends = [*index.positions[1:], len(data)]
        added = 0
        for page_no, lsn, start, end in zip(
            index.page_nos, index.lsns, index.positions, ends, strict=True
        ):
            page = pages.setdefault(page_no, _PythonPage())
            if lsn <= page.last_lsn:
                continue
            page.records += data[start:end]
            page.last_lsn = lsn
            added += 1
        return added

    def materialize(
        self, page_no: int, lsn_bound: int = native.LSN_MAX, annulled: Annulled = ()
    ) -> tuple[bytes, int]:
        page = self._live().get(page_no)
        out = bytearray(self.page_size)
        if page is None:
            return bytes(out), 0
        if page.image_lsn > lsn_bound:
            raise VersionGoneError(page_no, lsn_bound)
        if page.image is not None:
            out[:] = page.image
        page_lsns = array("Q", [page.image_lsn])
        if page.records:
            self._backend.apply(
                page.records,
                self.page_size,
                array("Q", [page_no]),
                out,
                page_lsns,
                lsn_bound,
                native._flatten_annulled(annulled),
            )
        return bytes(out), page_lsns[0]

    def coalesce(self, lsn: int, annulled: Annulled = ()) -> int:
        flat = native._flatten_annulled(annulled)
        if not native._annulled_valid(flat):
            native.raise_for_status(native.STATUS_ARGUMENT, 0)
        folded = 0
        for page_no, page in self._live().items():
            if not page.records:
                continue
            index = self._backend.index(page.records, self.page_size)
            keep = [i for i, record_lsn in enumerate(index.lsns) if record_lsn > lsn]
            count = keep[0] if keep else len(index.lsns)
            if count == 0:
                continue
            prefix = index.positions[count] if keep else len(page.records)
            if page.image is None:
                page.image = bytearray(self.page_size)
            self._backend.apply(
                page.records[:prefix],
                self.page_size,
                array("Q", [page_no]),
                page.image,
                array("Q", [page.image_lsn]),
                lsn,
                flat,
            )
            page.image_lsn = index.lsns[count - 1]
            del page.records[:prefix]
            folded += count
        return folded

    def set_image(self, page_no: int, image: Buffer, image_lsn: int) -> None:
        data = bytes(memoryview(image).cast("B"))
        if len(data) != self.page_size:
            raise InvalidArgumentError(f"an image of page {page_no} must be {self.page_size} bytes")
        page = self._live().get(page_no)
        if page is not None and (page.records or page.image is not None):
            native.raise_for_status(native.STATUS_ARGUMENT, 0)
        page = self._live().setdefault(page_no, _PythonPage())
        page.image = bytearray(data)
        page.image_lsn = image_lsn
        page.last_lsn = max(page.last_lsn, image_lsn)

    def stats(self) -> PageLogStats:
        pages = self._live()
        records = sum(
            len(self._backend.index(p.records, self.page_size)) for p in pages.values() if p.records
        )
        record_bytes = sum(len(p.records) for p in pages.values())
        images = sum(1 for p in pages.values() if p.image is not None)
        image_bytes = images * self.page_size
        return PageLogStats(
            len(pages), records, record_bytes, images, image_bytes, record_bytes + image_bytes
        )

    def page_nos(self) -> list[int]:
        return sorted(self._live())


PageLog = NativePageLog | PythonPageLog


def new_page_log(page_size: int, backend: str | None = None) -> PageLog:
    """A page log on the selected backend (``AURORA_STORAGE_BACKEND`` by default)."""
    if (backend or native.backend.name) == "python":
        return PythonPageLog(page_size)
    return NativePageLog(page_size)
