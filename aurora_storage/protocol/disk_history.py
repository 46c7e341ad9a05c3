"""History on disk: the versions a backtrack window needs, kept in a segment's files.

A node with a disk folds records into page images as far as its readers
allow (the writer's fold point: VDL, read views, backup staging), not only as
far as the backtrack window allows (the retain point): memory then holds the
records since the last checkpoint, whatever the window. The versions between
the window's start and the checkpoint stay readable from disk:

- the **history files** ``pg-<id>.<cut>.hist``: a checkpoint at ``cut`` that
  folds ahead of the window keeps the log it replaces under that name, so the
  files hold every frame above the **base** LSN (each file the frames of one
  checkpoint interval, and the tail it carried);
- the **base store** ``pg-<id>.base.img``/``.idx`` (a :class:`PageStore`):
  the version at the base LSN of each page that existed there and changed
  since. A page it does not name was either unchanged since the base (its
  checkpointed image is its version there) or did not exist yet.

A page's version at an LSN between the base and the checkpoint is its base
version with the history files' records applied (:meth:`HistoryFiles.read`):
a pread of the base, one read of each history file in between, one C call per
frame that keeps only that page's records. As the window moves on, the base
follows it (:meth:`HistoryFiles.rebuild`, then the history files below the
new base go); once nothing older than the checkpoint is needed, both go.

A backtrack or a truncation that reaches below the checkpoint changes which
records count: the checkpointed images of the pages touched since are
rebuilt from the base under the new annulled ranges (refolding), and the
checkpoint records which ranges its images reflect (``folded``).

Crash safety: history files and base store writes land before the checkpoint
file naming them is replaced (atomically); a crash leaves the previous
checkpoint whole, and files it does not name are ignored (and removed at load).
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ..errors import CorruptionError, VersionGoneError
from ..format import frames as log
from ..native.pagelog import PageLog, new_page_log
from .page_store import PageStore, StoreMap
from .ports import Disk
from .segment import Segment

BASE_KIND = ".base"
REBUILD_PAGES = 1024  # pages a rebuild holds in memory at once (their images)
REPLAY_RECORD_BYTES = 4 * 1024 * 1024  # records a rebuild holds before it folds them


def history_name(pg_id: int, cut: int) -> str:
    return f"pg-{pg_id:08d}.{cut:020d}.hist"


def clip(annulled: tuple[int, ...], lsn: int) -> tuple[int, ...]:
    """The flat (lo, hi] ranges of ``annulled`` as far as they reach at or below ``lsn``:
    what images folded at ``lsn`` depend on."""
    clipped: list[int] = []
    for index in range(0, len(annulled), 2):
        lo, hi = annulled[index], annulled[index + 1]
        if lo < lsn:
            clipped += (lo, min(hi, lsn))
    return tuple(clipped)


def first_difference(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    """The lowest LSN where two sets of flat annulled ranges may disagree."""
    pairs_a = {(a[i], a[i + 1]) for i in range(0, len(a), 2)}
    pairs_b = {(b[i], b[i + 1]) for i in range(0, len(b), 2)}
    return min(lo for lo, _hi in pairs_a ^ pairs_b)


@dataclass(slots=True)
class DiskHistory:
    """What a checkpoint file says of a segment's history on disk."""

    base_lsn: int  # versions at or above it are readable
    base_map: StoreMap  # the base store's pages at base_lsn, and their slots
    cuts: list[int] = field(default_factory=list)  # its history files, ascending
    sizes: list[int] = field(default_factory=list)  # their sizes in bytes
    folded: tuple[int, ...] = ()  # annulled ranges (clipped) the checkpointed images reflect
    base_cpl: int = 0  # the last commit at or below the base, and its time
    base_time: float = 0.0
    commits: int = 0  # entries of its time index (the base's commit, those above it)
    damaged: str = ""  # why a file of it cannot be read (older versions are unavailable)

    def encode(self) -> dict[str, object]:
        return {
            "lsn": self.base_lsn,
            **self.base_map.encode(),
            "cuts": list(self.cuts),
            "sizes": list(self.sizes),
            "folded": list(self.folded),
            "cpl": self.base_cpl,
            "cpl_time": self.base_time,
            "commits": self.commits,
        }

    @classmethod
    def decode(cls, page_lo: int, meta: dict[str, Any]) -> DiskHistory:
        """ValueError (or KeyError, TypeError) for fields that do not read."""
        cuts = [int(cut) for cut in meta["cuts"]]
        sizes = [int(size) for size in meta["sizes"]]
        folded = tuple(int(lsn) for lsn in meta["folded"])
        if cuts != sorted(set(cuts)) or len(sizes) != len(cuts) or len(folded) % 2:
            raise ValueError("history cuts out of order, or a torn range")
        return cls(
            int(meta["lsn"]),
            StoreMap.decode(page_lo, meta),
            cuts,
            sizes,
            folded,
            int(meta["cpl"]),
            float(meta["cpl_time"]),
            int(meta["commits"]),
        )


class HistoryFiles:
    """Reads a segment's history on disk (module docstring)."""

    def __init__(self, disk: Disk, segment: Segment, history: DiskHistory) -> None:
        self.disk = disk
        self.segment = segment
        self.history = history
        self.page_size = segment.geometry.page_size

    def base_store(self) -> PageStore:
        segment = self.segment
        return PageStore(
            self.disk, segment.pg_id, segment.page_lo, segment.page_hi, self.page_size, BASE_KIND
        )

    def commits(self) -> list[tuple[int, float]]:
        """(CPL, time) of every commit the history files hold above the base, ascending:
        the time index of the window below the checkpoint, rebuilt at load."""
        found = [(self.history.base_cpl, self.history.base_time)] if self.history.base_cpl else []
        for frame, _body in self._frames(self.history.base_lsn, self.segment.checkpoint_lsn):
            summary = frame.summary
            if summary.last_cpl_lsn == frame.last_lsn and (
                not found or found[-1][0] < frame.last_lsn
            ):
                found.append((frame.last_lsn, summary.last_cpl_time))
        return found

    def _bodies(self, after: int, upto: int, every: bool = False) -> Iterator[memoryview]:
        for _frame, body in self._frames(after, upto, every):
            yield body

    def _frames(
        self, after: int, upto: int, every: bool = False
    ) -> Iterator[tuple[log.Frame, memoryview]]:
        """The frames holding LSNs in (``after``, ``upto``] and their record batches, in
        LSN order, file by file; frames a truncation annulled (or a fenced writer sent)
        are left out unless ``every``. CorruptionError for a file gone or damaged."""
        segment, history = self.segment, self.history
        if history.damaged:
            raise CorruptionError(f"PG {segment.pg_id}: its history is damaged: {history.damaged}")
        previous = history.base_lsn
        for cut in history.cuts:
            if cut <= after:
                previous = cut
                continue
            name = history_name(segment.pg_id, cut)
            try:
                data = self.disk.read(name)
            except OSError as error:
                raise CorruptionError(f"{name}: {error}") from None
            frames = []
            position = 0
            while position < len(data):
                try:
                    frame = log.decode_frame(
                        data, self.page_size, segment.page_lo, segment.page_hi, position
                    )
                except CorruptionError:
                    if data.count(0, position) == len(data) - position:
                        break  # zeros the log had preallocated (docs/format.md)
                    raise
                if frame.pg_id != segment.pg_id:
                    raise CorruptionError(f"{name}: a frame of PG {frame.pg_id}")
                if (
                    frame.last_lsn > max(after, previous)
                    and frame.first_lsn <= min(upto, cut)
                    and (every or not segment.annulled_frame(*_span(frame)))
                ):
                    frames.append((frame.first_lsn, position, frame))
                position += frame.size
            view = memoryview(data)
            for _first, start, frame in sorted(frames, key=lambda item: item[0]):
                yield frame, view[start + log.FRAME_HEADER_SIZE : start + frame.size]
            if cut >= upto:
                return
            previous = cut

    def scrub(self) -> tuple[str, list[str]]:
        """(why the history cannot serve every version it names, "" if it can; damage
        that costs no version): each base version verified, the base store's other
        bytes, each history file read through."""
        history = self.history
        if history.damaged:
            return history.damaged, []
        harmless: list[str] = []
        if history.base_map.count():
            store = self.base_store()
            if not store.exists():
                return f"{store.index_file}: missing", []
            found = store.scrub(history.base_lsn, history.base_map)
            if found.lost or found.misplaced:
                return found.lost or found.misplaced, found.harmless
            harmless = found.harmless
        try:  # every frame decodes (each one's checksum and records)
            sum(1 for _ in self._frames(history.base_lsn, self.segment.checkpoint_lsn, every=True))
        except CorruptionError as error:
            return str(error), harmless
        return "", harmless

    def _replay(
        self,
        into: PageLog,
        after: int,
        upto: int,
        pages: tuple[int, int],
        annulled: tuple[int, ...],
    ) -> None:
        """Appends the records of ``pages`` in (after, upto] to ``into``, folding them as
        it goes: it holds the pages' images and a few MiB of records, not the history."""
        ranges = list(zip(annulled[::2], annulled[1::2], strict=True))
        for frame, body in self._frames(after, upto):
            into.append(body, pages)
            if into.stats().record_bytes > REPLAY_RECORD_BYTES:
                into.coalesce(min(frame.last_lsn, upto), ranges)

    def touched(self, after: int, upto: int) -> list[int]:
        """The pages with records in the frames holding LSNs in (after, upto], ascending:
        a superset of the pages whose versions there depend on which ranges count."""
        pages: set[int] = set()
        scratch = new_page_log(self.page_size, self.segment.backend)
        try:
            for body in self._bodies(after, upto, every=True):
                scratch.append(body)
                if scratch.stats().record_bytes > REBUILD_PAGES * self.page_size:
                    pages.update(scratch.page_nos())
                    scratch.close()
                    scratch = new_page_log(self.page_size, self.segment.backend)
            pages.update(scratch.page_nos())
        finally:
            scratch.close()
        return sorted(pages)

    def head_version(self, page_no: int) -> tuple[int, bytes | None]:
        """(page LSN, image) of the page at the segment's checkpoint, (0, None) if absent:
        from its page store, or from memory where no store is in force (a load that
        changes nothing holds every page)."""
        segment = self.segment
        if segment.store is None:
            image, page_lsn = segment.page_log.materialize(page_no, segment.checkpoint_lsn)
            return page_lsn, image if page_lsn else None
        slot = segment.store_map.slot(page_no)
        if slot is None:
            return 0, None
        return segment.store.read(page_no, segment.checkpoint_lsn, slot)

    def base_version(self, page_no: int) -> tuple[int, bytes | None]:
        """(page LSN, image) of a page that changed since the base, at the base: (0, None)
        if it did not exist there."""
        slot = self.history.base_map.slot(page_no)
        if slot is None:
            return 0, None
        return self.base_store().read(page_no, self.history.base_lsn, slot)

    def read(self, page_no: int, read_point: int, annulled: tuple[int, ...]) -> bytes:
        """The page as of ``read_point`` (at or above the base, below the checkpoint)."""
        history = self.history
        if read_point < history.base_lsn:
            raise VersionGoneError(page_no, read_point)
        checkpoint = self.segment.checkpoint_lsn
        head_lsn, head = self.head_version(page_no)
        if head_lsn <= read_point and clip(annulled, checkpoint) == history.folded:
            return head if head is not None else bytes(self.page_size)  # unchanged since
        for _pages, _lsns, images in self.rebuild([page_no], read_point, annulled):
            return bytes(images)
        raise AssertionError("rebuild yields every page it is given")

    def rebuild(
        self, page_nos: list[int], upto: int, annulled: tuple[int, ...]
    ) -> Iterator[tuple[list[int], list[int], bytes | bytearray]]:
        """(pages, page LSNs, images end to end) of the ascending ``page_nos`` as of
        ``upto`` under ``annulled``, from their base versions and the history files,
        REBUILD_PAGES pages at a time (a page LSN of 0: the page does not exist)."""
        for start in range(0, len(page_nos), REBUILD_PAGES):
            chunk = page_nos[start : start + REBUILD_PAGES]
            scratch = new_page_log(self.page_size, self.segment.backend)
            try:
                for page_no in chunk:  # before the records: those below it are skipped
                    base_lsn, image = self.base_version(page_no)
                    if image is not None:
                        scratch.set_image(page_no, image, base_lsn)
                pages = (chunk[0], chunk[-1] + 1)
                self._replay(scratch, self.history.base_lsn, upto, pages, annulled)
                images, lsns = scratch.materialize_many(chunk, upto, array("Q", annulled))
            finally:
                scratch.close()
            assert isinstance(images, bytearray)
            yield chunk, lsns.tolist(), images


def _span(frame: log.Frame) -> tuple[int, int, int]:
    return frame.epoch, frame.first_lsn, frame.last_lsn


__all__ = [
    "BASE_KIND",
    "DiskHistory",
    "HistoryFiles",
    "clip",
    "first_difference",
    "history_name",
]
