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

Shared images (:meth:`NativePageLog.share_images`): a restore installs the
same page images into the six replicas of a protection group without copying
them. Each log then points into one read-only block, copy-on-write: before a
log changes a shared image (coalescing records onto it) it takes a private
copy, so what one replica does is never seen by another or by the block. The
block's memory is Python's: a log keeps a read-only view of every block its
images still borrow (the view also keeps the memory from moving), and drops
it once C reports that no image borrows it any more. C never frees a block
and reads none when the log is freed, so the order in which the garbage
collector releases a log and its views does not matter.
"""

from __future__ import annotations

import threading
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Union

from .. import native
from ..errors import InvalidArgumentError, NativeCoreError, VersionGoneError
from . import Buffer

PAGES_ALL = 0
PAGES_WITH_RECORDS = 1
STATS_SIZE = 8
_scratch = threading.local()  # per thread: page size -> the buffer C materializes into


def _page_buffer(ffi: Any, page_size: int) -> Any:
    """This thread's buffer of ``page_size`` bytes for one materialized page: shared by
    every page log, so a segment costs no page of memory before it holds one."""
    buffers: dict[int, Any] | None = getattr(_scratch, "buffers", None)
    if buffers is None:
        buffers = _scratch.buffers = {}
    out = buffers.get(page_size)
    if out is None:
        out = buffers[page_size] = ffi.new("uint8_t[]", page_size)
    return out


@dataclass(frozen=True)
class PageLogStats:
    """Counts of a page log. ``images``/``image_bytes`` count every image, shared
    ones included; ``shared_images``/``shared_image_bytes`` those that borrow a
    shared block; ``allocated_bytes`` only memory the log owns, never a block."""

    pages: int
    records: int
    record_bytes: int
    images: int
    image_bytes: int
    allocated_bytes: int
    shared_images: int = 0
    shared_image_bytes: int = 0

    @property
    def owned_bytes(self) -> int:
        """Record and private image bytes: what this log alone keeps in memory."""
        return self.record_bytes + self.image_bytes - self.shared_image_bytes


Annulled = Union[Sequence[tuple[int, int]], "array[int]"]


def _read_only_block(block: Buffer, page_count: int, page_size: int) -> memoryview:
    """A read-only byte view of ``block``, checked to hold ``page_count`` pages."""
    view = memoryview(block).cast("B")
    if not view.readonly:
        view.release()
        raise InvalidArgumentError(
            "a shared block must be read-only (bytes, or memoryview.toreadonly())"
        )
    if len(view) < page_count * page_size:
        length = len(view)
        view.release()
        raise InvalidArgumentError(
            f"a block of {length} bytes cannot hold {page_count} pages of {page_size}"
        )
    return view


def _page_numbers(page_nos: Sequence[int] | array[int]) -> array[int]:
    if isinstance(page_nos, array) and page_nos.typecode == "Q":
        return page_nos
    try:
        return array("Q", page_nos)
    except (OverflowError, TypeError) as error:
        raise InvalidArgumentError(f"page numbers must be integers >= 0: {error}") from None


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
        self._stats = self._ffi.new(f"uint64_t[{STATS_SIZE}]")
        # Blocks lent to C by share_images, by block id, kept while images borrow them.
        self._blocks: dict[int, memoryview] = {}

    def _live(self) -> Any:
        if self._handle is None:
            raise NativeCoreError("the page log is closed")
        return self._handle

    def close(self) -> None:
        """Frees the C memory now rather than at garbage collection."""
        if self._handle is not None:
            self._ffi.release(self._handle)
            self._handle = None
        self._blocks.clear()  # after the C log: nothing points into them any more

    def append(self, batch: Buffer, pages: tuple[int, int] | None = None) -> int:
        """Indexes the batch's records (of pages in [lo, hi) only, with ``pages``);
        returns how many it kept."""
        lo, hi = pages if pages is not None else (0, native.LSN_MAX)
        # Released before raising: see NativeBackend.validate (CPython gh-77894).
        with self._ffi.from_buffer("uint8_t[]", batch) as source:
            status = self._lib.aus_pagelog_append(
                self._live(), source, len(source), lo, hi, self._count, self._position
            )
        native.raise_for_status(status, self._position[0])
        return int(self._count[0])

    def materialize(
        self, page_no: int, lsn_bound: int = native.LSN_MAX, annulled: Annulled = ()
    ) -> tuple[bytes, int]:
        ffi = self._ffi
        flat = native._flatten_annulled(annulled) if annulled else None
        # Materialization writes to this thread's buffer, then one copy becomes the
        # caller's bytes.
        out = _page_buffer(ffi, self.page_size)
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
        native.raise_for_status(status, 0, page_no, lsn_bound)
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
        folded = int(self._count[0])
        if self._blocks:
            self._release_blocks()  # coalescing copies the shared images it writes to
        native.raise_for_status(status, 0)
        return folded

    def materialize_many(
        self,
        page_nos: Sequence[int] | array[int],
        lsn_bound: int = native.LSN_MAX,
        annulled: Annulled = (),
        out: Buffer | None = None,
    ) -> tuple[Buffer, array[int]]:
        """(images, page LSNs) of many pages in one call: page ``page_nos[i]`` at
        ``out[i * page_size:]`` (a new bytearray unless ``out`` is given)."""
        ffi = self._ffi
        numbers = _page_numbers(page_nos)
        count = len(numbers)
        if out is None:
            out = bytearray(count * self.page_size)
        with memoryview(out) as view:
            size, writable = view.nbytes, not view.readonly and view.c_contiguous
        if not writable or size < count * self.page_size:
            raise InvalidArgumentError(
                f"out must be writable, contiguous and hold {count} pages of "
                f"{self.page_size} bytes ({size} bytes given)"
            )
        page_lsns = array("Q", bytes(8 * count))
        flat = native._flatten_annulled(annulled)
        index = ffi.new("size_t *")
        with ffi.from_buffer("uint8_t[]", out, require_writable=True) as target:
            status = self._lib.aus_pagelog_materialize_many(
                self._live(),
                ffi.from_buffer("uint64_t[]", numbers),
                count,
                lsn_bound,
                ffi.from_buffer("uint64_t[]", flat),
                len(flat) // 2,
                target,
                ffi.from_buffer("uint64_t[]", page_lsns),
                self._count,
                index,
            )
        if status:
            native.raise_for_status(status, 0, numbers[index[0]] if count else 0, lsn_bound)
        return out, page_lsns

    def share_images(
        self,
        page_nos: Sequence[int] | array[int],
        block: Buffer,
        image_lsn: int,
        *,
        fill: bool = False,
    ) -> int:
        """Installs images that borrow ``block`` instead of copying it; returns how many.

        ``block`` holds the images of the strictly ascending ``page_nos`` end to
        end and must be read-only; it must not change while shared (the log
        keeps a read-only view of it, which also keeps it from moving). Each
        page reads as its image up to ``image_lsn``, as after :meth:`set_image`.
        A page that already holds records or an image raises
        :class:`InvalidArgumentError`, or with ``fill`` is left as it is. Nothing
        changes on error.
        """
        numbers = _page_numbers(page_nos)
        view = _read_only_block(block, len(numbers), self.page_size)
        ffi = self._ffi
        block_id = ffi.new("uint32_t *")
        with ffi.from_buffer("uint8_t[]", view) as source:
            status = self._lib.aus_pagelog_share(
                self._live(),
                source,
                len(view),
                ffi.from_buffer("uint64_t[]", numbers),
                len(numbers),
                image_lsn,
                int(fill),
                block_id,
                self._count,
            )
        if status:
            view.release()
            if status == native.STATUS_ARGUMENT:
                raise InvalidArgumentError(
                    "shared page numbers must ascend strictly and name pages holding "
                    "nothing yet (unless fill is set)"
                )
            native.raise_for_status(status, 0)
        installed = int(self._count[0])
        if installed:
            self._blocks[int(block_id[0])] = view
        else:
            view.release()
        return installed

    def shared_blocks(self) -> list[memoryview]:
        """Views of the blocks this log's images still borrow."""
        return list(self._blocks.values())

    def _release_blocks(self) -> None:
        borrowers = self._count
        for block_id in list(self._blocks):
            self._lib.aus_pagelog_borrowers(self._live(), block_id, borrowers)
            if borrowers[0] == 0:
                del self._blocks[block_id]

    def set_image(self, page_no: int, image: Buffer, image_lsn: int) -> None:
        """Installs a checkpointed image for a page that holds no image, and no record
        at or below ``image_lsn``."""
        if len(memoryview(image).cast("B")) != self.page_size:
            raise InvalidArgumentError(f"an image of page {page_no} must be {self.page_size} bytes")
        with self._ffi.from_buffer("uint8_t[]", image) as source:
            status = self._lib.aus_pagelog_set_image(self._live(), page_no, source, image_lsn)
        native.raise_for_status(status, 0, page_no, image_lsn)

    def evict(self, clean_lsn: int, want_bytes: int) -> int:
        """Forgets clean pages (an image at or below ``clean_lsn``, no record), chosen by
        a CLOCK sweep, until ``want_bytes`` of images are gone; returns the bytes."""
        dropped = self._count
        self._lib.aus_pagelog_evict(self._live(), clean_lsn, want_bytes, dropped)
        if self._blocks:
            self._release_blocks()
        return int(dropped[0])

    def forget(self, page_nos: Sequence[int] | array[int]) -> int:
        """Forgets these pages whole, image and records; returns how many it held."""
        numbers = _page_numbers(page_nos)
        self._lib.aus_pagelog_forget(
            self._live(), self._ffi.from_buffer("uint64_t[]", numbers), len(numbers), self._count
        )
        if self._blocks:
            self._release_blocks()
        return int(self._count[0])

    def missing(self, page_nos: Sequence[int] | array[int]) -> list[int]:
        """The pages of ``page_nos`` that hold no image, in order."""
        numbers = _page_numbers(page_nos)
        out = array("Q", bytes(8 * len(numbers)))
        found = self._position
        self._lib.aus_pagelog_missing(
            self._live(),
            self._ffi.from_buffer("uint64_t[]", numbers),
            len(numbers),
            self._ffi.from_buffer("uint64_t[]", out),
            found,
        )
        return out[: found[0]].tolist()

    def stats(self) -> PageLogStats:
        self._lib.aus_pagelog_stats(self._live(), self._stats)
        return PageLogStats(*(int(self._stats[i]) for i in range(STATS_SIZE)))

    def image_bytes(self) -> int:
        """``stats().image_bytes`` alone: what a page cache charges, read after each use."""
        self._lib.aus_pagelog_stats(self._live(), self._stats)
        return int(self._stats[4])

    def page_nos(self, with_records: bool = False) -> list[int]:
        """Every page the log knows, ascending; only those holding records with ``with_records``."""
        capacity = self.stats().pages
        out = array("Q", bytes(8 * capacity))
        count = self._ffi.new("size_t *")
        which = PAGES_WITH_RECORDS if with_records else PAGES_ALL
        status = self._lib.aus_pagelog_pages(
            self._live(), which, self._ffi.from_buffer("uint64_t[]", out), capacity, count
        )
        native.raise_for_status(status, 0)
        del out[count[0] :]
        return sorted(out)


class _PythonPage:
    __slots__ = ("block", "image", "image_lsn", "last_lsn", "records", "referenced")

    def __init__(self) -> None:
        self.last_lsn = 0
        self.image_lsn = 0
        # A bytearray of its own, or a read-only slice of a shared block (block > 0).
        self.image: bytearray | memoryview | None = None
        self.block = 0
        self.records = bytearray()
        self.referenced = False


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
        # Shared blocks by id: [view, borrowers], as C counts them.
        self._blocks: dict[int, list[Any]] = {}
        self._block_ids = 0
        # The pages in C's entry order (a forgotten page's place goes to the last),
        # and the eviction hand's position in it: evict picks as C does.
        self._order: list[int] = []
        self._hand = 0

    def _entry(self, page_no: int) -> _PythonPage:
        pages = self._live()
        page = pages.get(page_no)
        if page is None:
            page = pages[page_no] = _PythonPage()
            self._order.append(page_no)
        return page

    def close(self) -> None:
        self._pages.clear()
        self._blocks.clear()
        self._order.clear()
        self._closed = True

    def _live(self) -> dict[int, _PythonPage]:
        if self._closed:
            raise NativeCoreError("the page log is closed")
        return self._pages

    def append(self, batch: Buffer, pages: tuple[int, int] | None = None) -> int:
        self._live()  # a closed log refuses the batch
        index = self._backend.index(batch, self.page_size)
        data = memoryview(batch).cast("B")
        ends = [*index.positions[1:], len(data)]
        lo, hi = pages if pages is not None else (0, native.LSN_MAX)
        added = 0
        for page_no, lsn, start, end in zip(
            index.page_nos, index.lsns, index.positions, ends, strict=True
        ):
            if not lo <= page_no < hi:
                continue
            page = self._entry(page_no)
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
        page.referenced = True
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
            elif page.block:  # copy on write: the block never changes
                page.image = bytearray(page.image)
                self._unshare(page)
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

    def _unshare(self, page: _PythonPage) -> None:
        entry = self._blocks[page.block]
        entry[1] -= 1
        if not entry[1]:
            del self._blocks[page.block]
        page.block = 0

    def materialize_many(
        self,
        page_nos: Sequence[int] | array[int],
        lsn_bound: int = native.LSN_MAX,
        annulled: Annulled = (),
        out: Buffer | None = None,
    ) -> tuple[Buffer, array[int]]:
        numbers = _page_numbers(page_nos)
        size = self.page_size
        if out is None:
            out = bytearray(len(numbers) * size)
        target = memoryview(out).cast("B")
        if target.readonly or len(target) < len(numbers) * size:
            raise InvalidArgumentError(
                f"out must be writable and hold {len(numbers)} pages of {size} bytes"
            )
        flat = native._flatten_annulled(annulled)
        if not native._annulled_valid(flat):
            native.raise_for_status(native.STATUS_ARGUMENT, 0)
        page_lsns = array("Q", bytes(8 * len(numbers)))
        for slot, page_no in enumerate(numbers):
            image, page_lsns[slot] = self.materialize(page_no, lsn_bound, flat)
            target[slot * size : (slot + 1) * size] = image
        return out, page_lsns

    def share_images(
        self,
        page_nos: Sequence[int] | array[int],
        block: Buffer,
        image_lsn: int,
        *,
        fill: bool = False,
    ) -> int:
        numbers = _page_numbers(page_nos)
        view = _read_only_block(block, len(numbers), self.page_size)
        pages = self._live()
        if not native._ascending(numbers) or (
            not fill
            and any(
                (page := pages.get(page_no)) is not None
                and (page.records or page.image is not None)
                for page_no in numbers
            )
        ):
            view.release()
            raise InvalidArgumentError(
                "shared page numbers must ascend strictly and name pages holding "
                "nothing yet (unless fill is set)"
            )
        self._block_ids += 1
        block_id = self._block_ids
        size = self.page_size
        installed = 0
        for slot, page_no in enumerate(numbers):
            page = self._entry(page_no)
            if page.records or page.image is not None:
                continue
            page.image = view[slot * size : (slot + 1) * size]
            page.block = block_id
            page.image_lsn = image_lsn
            page.last_lsn = max(page.last_lsn, image_lsn)
            page.referenced = True
            installed += 1
        if installed:
            self._blocks[block_id] = [view, installed]
        return installed

    def shared_blocks(self) -> list[memoryview]:
        return [entry[0] for entry in self._blocks.values()]

    def set_image(self, page_no: int, image: Buffer, image_lsn: int) -> None:
        data = bytes(memoryview(image).cast("B"))
        if len(data) != self.page_size:
            raise InvalidArgumentError(f"an image of page {page_no} must be {self.page_size} bytes")
        page = self._live().get(page_no)
        if page is not None and (
            page.image is not None
            or (
                page.records
                and self._backend.index(page.records, self.page_size).lsns[0] <= image_lsn
            )
        ):
            native.raise_for_status(native.STATUS_ARGUMENT, 0)
        page = self._entry(page_no)
        page.image = bytearray(data)
        page.image_lsn = image_lsn
        page.last_lsn = max(page.last_lsn, image_lsn)
        page.referenced = True

    def evict(self, clean_lsn: int, want_bytes: int) -> int:
        pages, order = self._live(), self._order
        dropped, steps = 0, 2 * len(order)
        while dropped < want_bytes and steps > 0 and order:
            steps -= 1
            if self._hand >= len(order):
                self._hand = 0
            page = pages[order[self._hand]]
            if page.image is None or page.records or page.image_lsn > clean_lsn:
                self._hand += 1
                continue
            if page.referenced:
                page.referenced = False
                self._hand += 1
                continue
            if page.block:
                self._unshare(page)
            del pages[order[self._hand]]
            last = order.pop()
            if self._hand < len(order):
                order[self._hand] = last  # the last entry takes the forgotten one's place
            dropped += self.page_size
        return dropped

    def forget(self, page_nos: Sequence[int] | array[int]) -> int:
        pages, order, forgotten = self._live(), self._order, 0
        for page_no in _page_numbers(page_nos):
            page = pages.pop(page_no, None)
            if page is None:
                continue
            if page.block:
                self._unshare(page)
            place = order.index(page_no)
            last = order.pop()
            if place < len(order):
                order[place] = last  # as C: the last entry takes the forgotten one's place
            forgotten += 1
        if self._hand >= len(order):
            self._hand = 0
        return forgotten

    def missing(self, page_nos: Sequence[int] | array[int]) -> list[int]:
        pages = self._live()
        return [
            page_no
            for page_no in _page_numbers(page_nos)
            if (page := pages.get(page_no)) is None or page.image is None
        ]

    def image_bytes(self) -> int:
        return self.stats().image_bytes

    def stats(self) -> PageLogStats:
        pages = self._live()
        records = sum(
            len(self._backend.index(p.records, self.page_size)) for p in pages.values() if p.records
        )
        record_bytes = sum(len(p.records) for p in pages.values())
        images = sum(1 for p in pages.values() if p.image is not None)
        shared = sum(1 for p in pages.values() if p.block)
        image_bytes = images * self.page_size
        owned = record_bytes + image_bytes - shared * self.page_size
        return PageLogStats(
            len(pages),
            records,
            record_bytes,
            images,
            image_bytes,
            owned,
            shared,
            shared * self.page_size,
        )

    def page_nos(self, with_records: bool = False) -> list[int]:
        pages = self._live()
        if with_records:
            return sorted(page_no for page_no, page in pages.items() if page.records)
        return sorted(pages)


PageLog = NativePageLog | PythonPageLog


def new_page_log(page_size: int, backend: str | None = None) -> PageLog:
    """A page log on the selected backend (``AURORA_STORAGE_BACKEND`` by default)."""
    if (backend or native.backend.name) == "python":
        return PythonPageLog(page_size)
    return NativePageLog(page_size)
