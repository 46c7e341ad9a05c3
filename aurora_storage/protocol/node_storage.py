"""A storage node's disk: its log files, checkpoints, node.meta, loading and fsyncs.

On disk (docs/format.md, "Node folder"): ``node.meta`` (name, volume, epoch,
truncations, a VDL hint) replaced atomically; per segment ``pg-<id>.log``, an
append-only sequence of frames in the order they joined the chain, and
``pg-<id>.pages``, the segment's pages at its last checkpoint (a backup
object, format/objects.py) below which the log was trimmed. With
``durability="fsync"`` a node acknowledges only what is synced: acks wait in
``held`` until the transport's sync job for them returns (:meth:`begin_sync`).

:class:`NodeStorage` is the half of :class:`protocol.node.StorageNode` that
touches its :class:`Disk` port; the node's messages live in node.py. Loading
(:meth:`NodeStorage.load`) reads what the disk holds, checks every frame,
cuts a torn tail, sets aside a misplaced file and marks a segment that lost
data suspect until its peers vouch for it; what it found is a
:class:`LoadReport`, per file.

Invariants: nothing is acknowledged before the frames it covers are durable
(fsync durability); a checkpoint replaces ``pg-<id>.pages`` before the log
is trimmed, so a crash between the two leaves frames a load skips, never a
gap; a disk write that fails stops the node (:attr:`failed` says why) and
never raises out of a public method.
"""

from __future__ import annotations

import bisect
import contextlib
import dataclasses
import functools
import re
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from .. import native
from ..config import Geometry
from ..errors import CorruptionError, VersionGoneError, WrongNodeError
from ..format import frames as log
from ..format import metadata as metafile
from ..format.objects import KIND_PAGES, decode_object, encode_object
from . import messages as m
from .disk_history import (
    DiskHistory,
    HistoryFiles,
    clip,
    first_difference,
    history_name,
)
from .history import History
from .page_store import PageStore, StoreMap
from .placement import Membership, Placement
from .ports import Disk
from .segment import Segment

NODE_META = "node.meta"
FINDINGS_PER_STORE = 16  # harmless page store problems reported per segment
FINDINGS_MAX = 10_000  # problems a load report keeps (each names a file and a byte range)
_LOG_NAME = re.compile(r"^pg-(\d+)\.log$")
_PG_FILE = re.compile(r"^pg-(\d+)\.(?:log|pages|img|idx)$")
_HISTORY_FILE = re.compile(r"^pg-(\d+)\.(\d+)\.hist$")

Outgoing = list[tuple[str, m.Message]]


@functools.lru_cache(maxsize=4096)  # once per frame written: formatting shows
def log_name(pg_id: int) -> str:
    return f"pg-{pg_id:08d}.log"


def checkpoint_name(pg_id: int) -> str:
    return f"pg-{pg_id:08d}.pages"


def checkpoint_object(
    segment: Segment,
    cutoff: int,
    chain_lsn: int,
    store_map: StoreMap,
    volume_id: str = "",
    history: DiskHistory | None = None,
) -> bytes:
    """The ``pg-<id>.pages`` file of a checkpoint at ``cutoff`` (docs/format.md, "Node
    folder"): its chain position there and its last commit at or below it. The pages
    themselves are in the segment's page store (page_store.py); ``store_map`` says
    which pages it holds, in which slot: a page the store lacks is then told from
    one it lost, and the version read is the one named here."""
    index = bisect.bisect_right(segment.cpl_lsns, cutoff)
    meta: dict[str, object] = {
        "pg_id": segment.pg_id,
        "cutoff": cutoff,
        "chain_lsn": chain_lsn,
        "store": 1,
        **store_map.encode(),
        "page_nos": [],
        "image_lsns": [],
        "cpl": segment.cpl_lsns[index - 1] if index else 0,
        "cpl_time": segment.cpl_times[index - 1] if index else 0.0,
    }
    if volume_id:
        meta["volume_id"] = volume_id  # a file put in another volume's folder is told apart
    if history is not None:
        meta["history"] = history.encode()  # the versions below the cutoff still kept
    if segment.repaired_lsn:
        meta["repaired"] = segment.repaired_lsn  # a segment repair started it there
        meta["repaired_folded"] = list(segment.repaired_folded)
    return encode_object(KIND_PAGES, b"", meta)


def _write_existing(
    store: PageStore,
    page_nos: list[int],
    page_lsns: list[int],
    images: bytes | bytearray,
    lsn: int,
    durable: StoreMap,
) -> StoreMap:
    """Writes the pages that exist (a page LSN above 0) of a rebuild into ``store``."""
    if all(page_lsns):
        return store.write(page_nos, page_lsns, images, lsn, durable)
    size = len(images) // max(1, len(page_nos))
    kept = [index for index, page_lsn in enumerate(page_lsns) if page_lsn]
    if not kept:
        return durable
    view = memoryview(images)
    return store.write(
        [page_nos[index] for index in kept],
        [page_lsns[index] for index in kept],
        b"".join(view[index * size : (index + 1) * size] for index in kept),
        lsn,
        durable,
    )


@dataclass(frozen=True)
class StartPages:
    """A PG's pages where a restore starts (the same for every node), and its checkpoint
    file there (:meth:`NodeStorage.persist_start`)."""

    page_nos: list[int]
    page_lsns: list[int]
    images: bytes | bytearray
    checkpoint: bytes


@dataclass(frozen=True)
class SyncRequest:
    """A node's fsync work due now: its dirty files, the acks to release once they are
    durable, the segments whose frames wait to be indexed meanwhile."""

    names: list[str]
    acks: Outgoing
    segments: list[Segment]


class _DiskFailed(Exception):
    """A node's disk write failed and stopped the node: unwinds to the public method
    that was running (handle, load, persist_start, write_meta, close), which returns."""


@dataclass(frozen=True)
class LoadFinding:
    """One thing wrong with a node's file, found at load or while the node mended it.

    ``kind`` is one of the ``FINDING_*`` names below; ``offset`` a byte position in
    ``file`` (-1 when none applies); ``size`` bytes concerned (frames for
    ``FINDING_REPAIRED``).
    """

    file: str
    kind: str
    detail: str
    offset: int = -1
    size: int = 0

    def __str__(self) -> str:
        where = f" at byte {self.offset}" if self.offset >= 0 else ""
        return f"{self.file}: {self.kind}{where}: {self.detail}"


FINDING_EMPTY = "started empty"  # no file at all: it knows nothing it acknowledged
FINDING_TORN_TAIL = "torn tail"  # bytes after the last good frame, cut (or to be cut)
FINDING_DAMAGED_RANGE = "damaged range"  # bad bytes with good frames after them
FINDING_DUPLICATE = "duplicate frame"  # a frame the log holds twice
FINDING_MISPLACED = "misplaced file"  # frames or pages of another PG or volume
FINDING_LOST_CHECKPOINT = "lost checkpoint"  # pg-<id>.pages unreadable or missing
FINDING_MISSING_FRAMES = "missing frames"  # the log does not continue its checkpoint
FINDING_STALE_META = "stale node.meta"  # node.meta older than the files it describes
FINDING_NEEDS_REPAIR = "needs segment repair"  # it lacks frames no peer holds any more
FINDING_DAMAGED_STORE = "damaged page store"  # bytes no version depends on (reported only)
FINDING_REPAIRED = "repaired from peers"  # frames a damaged segment fetched by gossip


@dataclass
class LoadReport:
    """What a node found on its disk at restart, and what it mended since.

    ``findings`` lists each problem per file; the counters summarize them.
    A load with ``leave_logs`` (verify) reports the tails it would cut.
    """

    frames: int = 0
    bytes: int = 0
    torn_tails_cut: int = 0
    damaged_ranges: int = 0
    started_empty: bool = False
    findings: list[LoadFinding] = field(default_factory=list)
    # Frames fetched from peers, per log file, at or below the VDL found at load:
    # committed data its disk lacked (damage, or a replica left behind).
    repaired_frames: dict[str, int] = field(default_factory=dict)

    def add(self, finding: LoadFinding) -> None:
        if len(self.findings) < FINDINGS_MAX:
            self.findings.append(finding)

    def problems(self) -> list[str]:
        """One line per finding, then one per log file repaired from peers."""
        lines = [str(finding) for finding in self.findings]
        lines += [
            f"{name}: {FINDING_REPAIRED}: {count} frames"
            for name, count in sorted(self.repaired_frames.items())
        ]
        return lines

    @property
    def damaged(self) -> bool:
        """True if anything on the node's disk was wrong (a clean load finds nothing)."""
        return bool(self.findings or self.repaired_frames)


class NodeStorage:
    """The disk side of a storage node (module docstring), mixed into StorageNode."""

    name: str
    az: str
    geometry: Geometry
    backend: str | None
    disk: Disk | None
    volume_id: str
    durability: str
    epoch: int
    truncations: list[tuple[int, int, int]]
    history: History | None
    vdl_hint: int
    segments: dict[int, Segment]
    dormant: dict[int, tuple[int, int, int, float]]
    suspect: bool
    suspect_reason: str
    failed: str
    dirty: set[str]
    unindexed: set[int]
    on_stop: Callable[[], None] | None
    held: Outgoing
    load_report: LoadReport
    _writes_logs: bool
    _repair_mark: int
    _logged_pending: dict[int, set[int]]
    _frames_since_meta: int
    _meta_hint: int  # the VDL hint node.meta holds (-1: unknown)
    _hot_order: OrderedDict[int, None]
    _hot_estimate: int
    placement: Placement  # which PGs the node holds (placement.py)
    peers: list[str]

    def _know_peers(self, membership: Membership) -> None:
        """Adds the members of ``membership`` to the node's peers (node.py)."""
        raise NotImplementedError

    def segment(self, pg_id: int) -> Segment:
        """The PG's segment, made on first use (node.py)."""
        raise NotImplementedError

    def annulled(self) -> tuple[int, ...]:
        """LSN ranges every read skips (node.py)."""
        raise NotImplementedError

    def _sleep_quiet(self) -> None:
        """Puts quiet segments to sleep once too many are awake (node.py)."""
        raise NotImplementedError

    def awake(self, pg_id: int) -> Segment | None:
        """The PG's segment, woken if asleep (node.py)."""
        raise NotImplementedError

    def segment_ids(self) -> list[int]:
        """Every PG the node holds a segment of, awake or asleep (node.py)."""
        raise NotImplementedError

    # --- the log ----------------------------------------------------------------------

    def _append_to_disk(self, pg_id: int, frames: list[bytes]) -> None:
        assert self.disk is not None
        if self._logged_pending or not self._writes_logs:
            frames = self._frames_to_log(pg_id, frames)
            if not frames:
                return
        name = log_name(pg_id)
        try:
            self.disk.append(name, frames[0] if len(frames) == 1 else b"".join(frames))
        except OSError as error:
            # What the write left behind is never acknowledged: a restart cuts a torn
            # tail and re-verifies the rest. Nothing more is done in memory either.
            self.stop_on_disk_error("write", error)
            raise _DiskFailed from error
        self.dirty.add(name)
        if self.durability == "fsync":  # only a sync job indexes (begin_sync takes them)
            self.unindexed.add(pg_id)
        self._frames_since_meta += len(frames)
        segment = self.segments[pg_id]
        segment.frames_logged += len(frames)
        for frame in frames:
            segment.note_logged(log.frame_last_lsn(frame), len(frame))
        self._hot_estimate += sum(map(len, frames))  # their records are unfolded
        order = self._hot_order
        if pg_id in order:
            order.move_to_end(pg_id)
        else:
            order[pg_id] = None

    def _frames_to_log(self, pg_id: int, frames: list[bytes]) -> list[bytes]:
        """The chained frames a log still lacks (none when the node writes no logs)."""
        if not self._writes_logs:
            return []
        logged = self._logged_pending.get(pg_id)
        if not logged:
            return frames
        kept = []
        for frame in frames:
            first_lsn = log.FRAME_HEADER.unpack_from(frame)[6]
            if first_lsn in logged:
                logged.discard(first_lsn)
            else:
                kept.append(frame)
        if not logged:
            del self._logged_pending[pg_id]
        return kept

    # --- checkpoints: trimming a segment's log ----------------------------------------

    def checkpoint(self, segment: Segment) -> bool:
        """Writes the segment's pages at a cutoff to ``pg-<id>.pages`` and drops older frames.

        The cutoff is the coalesced point (no reader, backtrack or backup needs
        an older version), provided every peer holds the frames below it
        (gossip needs none of them) and it is at or below the node's durable
        VDL hint (recovery asks for none of them). The page file is replaced first and the log second, each
        atomically, so a crash between them leaves a log with extra frames,
        which loading skips. Returns True if the log was rewritten.
        """
        disk = self.disk
        assert disk is not None
        segment.frames_logged = 0
        cutoff = segment.coalesced_lsn  # the images are exactly at the coalesced point
        if cutoff <= segment.checkpoint_lsn or cutoff > min(segment.chain_base_lsn, self.vdl_hint):
            return False
        if segment.failed or segment.suspect or not self._writes_logs:
            return False  # a damaged log is rewritten only once the segment is whole again
        # The images in force first reflect the annulled ranges in force.
        if segment.disk_history is not None and not self.refold(segment):
            return False
        if self._meta_hint != self.vdl_hint:
            self._write_meta()  # recovery must never ask this node for frames below its hint
        name = log_name(segment.pg_id)
        # Versions below the cutoff that the backtrack window still needs stay on disk
        # (disk_history.py); a segment whose pages at its last checkpoint are not all
        # known (no store in force) cannot start a history.
        keeps = cutoff > segment.retain_lsn and (
            segment.disk_history is not None
            or segment.checkpoint_lsn == 0
            or (segment.store is not None and segment.changed_pages is not None)
        )
        with self._stopping_on_disk_error("checkpoint"):
            if segment.log_ordered:
                offset, below = segment.log_tail(cutoff)
                chain_lsn = max(segment.checkpoint_chain_lsn, below)
                size = segment.log_bytes - offset
                kept = [disk.read_at(name, offset, size)] if size else []
            else:
                chain_lsn, kept = self._frames_above(segment, cutoff)
            logged = keeps and disk.exists(name) and disk.size(name) > 0
        history = None
        with self._stopping_on_disk_error("checkpoint"):
            if keeps:
                history = self._keep_history(segment, cutoff, logged)
            store_map = self._store_pages(segment, cutoff)
            pages = checkpoint_object(
                segment, cutoff, chain_lsn, store_map, self.volume_id, history
            )
            disk.replace(checkpoint_name(segment.pg_id), pages)
            # The store now holds every page at the cutoff: the cache may forget them.
            segment.store = segment.store or self.page_store(segment)
            segment.store_map = store_map
            self._history_in_force(segment, history)
            if kept or history is not None or not disk.exists(name):
                # (A log a history file links to is replaced, never cut in place.)
                disk.replace(name, b"".join(kept))
            else:  # nothing above the cutoff: emptied in place, no new file
                disk.truncate(name, 0)
        if segment.log_ordered:
            segment.drop_log_head(offset)
        else:
            segment._init_log_marks()
            for frame in kept:  # the frames above the cutoff, in the order rewritten
                segment.note_logged(log.frame_last_lsn(frame), len(frame))
        if segment.changed_pages is not None:
            segment.changed_pages.clear()
        self.dirty.discard(name)
        segment.checkpoint_lsn = cutoff
        segment.checkpoint_chain_lsn = chain_lsn
        segment.images_grew = True  # its changed pages are clean now: the cache may trim
        return True

    # --- history on disk (disk_history.py) -------------------------------------------------

    def _keep_history(self, segment: Segment, cutoff: int, logged: bool) -> DiskHistory:
        """Before a checkpoint at ``cutoff`` ahead of the window: moves the base up to the
        window (as far as whole history files allow), stores the versions at the base
        of the pages first changed since, and keeps the log (if ``logged``: it holds
        frames) as the history file of this interval, a link to it that the log's
        replacement leaves behind. Returns the history the checkpoint file will name
        (nothing of it is in force before then)."""
        assert self.disk is not None
        annulled = self.annulled()
        history = segment.disk_history
        if history is None:
            history = DiskHistory(segment.checkpoint_lsn, StoreMap(segment.page_lo))
        files = HistoryFiles(self.disk, segment, history)
        store = files.base_store()
        base_map = history.base_map
        base_lsn = max((cut for cut in history.cuts if cut <= segment.retain_lsn), default=0)
        if base_lsn > history.base_lsn:  # the window moved on: so does the base
            for pages, lsns, images in files.rebuild(
                files.touched(history.base_lsn, base_lsn), base_lsn, annulled
            ):
                base_map = _write_existing(store, pages, lsns, images, base_lsn, base_map)
        else:
            base_lsn = history.base_lsn
        fresh: list[int] = []
        fresh_lsns: list[int] = []
        fresh_images: list[bytes] = []
        # At a base of LSN 0 no page existed: none has a version there to keep.
        for page_no in sorted(segment.changed_pages or ()) if base_lsn else ():
            if base_map.slot(page_no) is not None:
                continue
            page_lsn, image = files.head_version(page_no)
            # Unchanged from the base to here, and there then (a refold leaves a page
            # that lost its every record as zeros at page LSN 0: absent).
            if image is not None and 0 < page_lsn <= base_lsn:
                fresh.append(page_no)
                fresh_lsns.append(page_lsn)
                fresh_images.append(image)
        if fresh:
            base_map = store.write(fresh, fresh_lsns, b"".join(fresh_images), base_lsn, base_map)
        cuts = [cut for cut in history.cuts if cut > base_lsn]
        sizes = history.sizes[len(history.cuts) - len(cuts) :]
        if logged:
            name = log_name(segment.pg_id)
            if self.durability == "fsync":
                self.disk.sync(name)  # the history's frames as durable as its name
            self.disk.link(name, history_name(segment.pg_id, cutoff))
            cuts.append(cutoff)
            sizes.append(self.disk.size(name))
        index = bisect.bisect_right(segment.cpl_lsns, base_lsn)
        base_cpl, base_time = history.base_cpl, history.base_time
        if index:
            base_cpl, base_time = segment.cpl_lsns[index - 1], segment.cpl_times[index - 1]
        folded = clip(annulled, cutoff)
        commits = bool(base_cpl) + (
            bisect.bisect_right(segment.cpl_lsns, cutoff) - index  # those above the base
        )
        return DiskHistory(base_lsn, base_map, cuts, sizes, folded, base_cpl, base_time, commits)

    def _history_in_force(self, segment: Segment, history: DiskHistory | None) -> None:
        """The checkpoint file now names ``history``: the files of the one before that it
        does not name go."""
        assert self.disk is not None
        old, segment.disk_history = segment.disk_history, history
        if old is None:
            return
        for cut in old.cuts:
            if history is None or cut not in history.cuts:
                name = history_name(segment.pg_id, cut)
                if self.disk.exists(name):
                    self.disk.remove(name)
        if history is None:
            HistoryFiles(self.disk, segment, old).base_store().remove()

    def drop_history(self, segment: Segment) -> None:
        """Forgets the segment's history on disk once the window no longer reaches
        below its checkpoint (a quiet PG takes no checkpoint that would)."""
        history = segment.disk_history
        if (
            history is None
            or segment.retain_lsn < segment.checkpoint_lsn
            or self.disk is None
            or not self._writes_logs
            or segment.failed
        ):
            return
        with contextlib.suppress(_DiskFailed), self._stopping_on_disk_error("checkpoint"):
            pages = checkpoint_object(
                segment,
                segment.checkpoint_lsn,
                segment.checkpoint_chain_lsn,
                segment.store_map,
                self.volume_id,
            )
            self.disk.replace(checkpoint_name(segment.pg_id), pages)
            self._history_in_force(segment, None)

    def read_history(
        self, segment: Segment, page_no: int, read_point: int, annulled: tuple[int, ...]
    ) -> bytes:
        """The page as of ``read_point``, below the segment's checkpoint, from its history
        on disk; VersionGoneError below its base, CorruptionError if a file is damaged."""
        history = segment.disk_history
        if history is None or self.disk is None:
            raise VersionGoneError(page_no, read_point)
        return HistoryFiles(self.disk, segment, history).read(page_no, read_point, annulled)

    def refold(self, segment: Segment) -> bool:
        """Rebuilds the checkpointed images of the pages a change of the annulled ranges
        reaches (a backtrack below the checkpoint, back or forth) from the history on
        disk, then the checkpoint file naming them and the pages in memory. A load
        that changes nothing (a read-only open, a verify) holds every page in memory:
        it rebuilds them there only. A segment whose history cannot give them is set
        aside: it must not serve the old images. False if the segment is set aside."""
        history, disk = segment.disk_history, self.disk
        if history is None or disk is None or segment.failed:
            return not segment.failed
        cutoff, annulled = segment.checkpoint_lsn, self.annulled()
        wanted = clip(annulled, cutoff)
        if wanted == history.folded:
            return True
        lo = first_difference(wanted, history.folded)
        writes = self._writes_logs
        if lo < history.base_lsn or (writes and segment.store is None):
            segment.set_aside(
                f"the annulled ranges change at LSN {lo}, below what its history on disk "
                f"can rebuild (from LSN {history.base_lsn})"
            )
            return False
        files = HistoryFiles(disk, segment, history)
        size = self.geometry.page_size
        store_map = segment.store_map
        page_log = segment.page_log  # indexes frames that wait first
        rebuilt: dict[int, bytes] = {}
        with self._stopping_on_disk_error("checkpoint"):
            try:
                pages = files.touched(lo, cutoff)
                # Without a store in force every page stays in memory, else only those
                # with records above the cutoff: the others are read back when used.
                kept = set(page_log.page_nos(with_records=writes)).intersection(pages)
                for chunk, lsns, images in files.rebuild(pages, cutoff, annulled):
                    if writes:
                        assert segment.store is not None
                        store_map = segment.store.write(chunk, lsns, images, cutoff, store_map)
                    for index, page_no in enumerate(chunk):
                        if page_no in kept:
                            rebuilt[page_no] = bytes(images[index * size : (index + 1) * size])
            except CorruptionError as error:
                segment.set_aside(f"its history on disk cannot be read: {error}")
                return False
            if writes:
                history = dataclasses.replace(history, folded=wanted)
                disk.replace(
                    checkpoint_name(segment.pg_id),
                    checkpoint_object(
                        segment,
                        cutoff,
                        segment.checkpoint_chain_lsn,
                        store_map,
                        self.volume_id,
                        history,
                    ),
                )
                segment.store_map, segment.disk_history = store_map, history
            else:  # in memory only: what the segment holds (every page) reflects them
                segment.disk_history = dataclasses.replace(history, folded=wanted)
            # The pages in memory take their new image (a page no record left reads
            # as zeros), then their records above the cutoff again, from the log.
            page_log.forget(pages)
            for page_no, image in rebuilt.items():
                page_log.set_image(page_no, image, cutoff)
            for body in self._log_bodies_above(segment, cutoff):
                page_log.append(body)
            page_log.forget([page_no for page_no in pages if page_no not in kept])
            segment.images_grew = True
        return True

    def _log_bodies_above(self, segment: Segment, cutoff: int) -> list[memoryview]:
        """The record batches of the log's frames above ``cutoff`` that count, in LSN order."""
        assert self.disk is not None
        name = log_name(segment.pg_id)
        data = self.disk.read(name) if self.disk.exists(name) else b""
        found = [
            (frame.first_lsn, position, frame.size)
            for position, frame in self._valid_frames(segment, data)
            if frame.last_lsn > cutoff
            and not segment.annulled_frame(frame.epoch, frame.first_lsn, frame.last_lsn)
        ]
        view = memoryview(data)
        return [
            view[start + log.FRAME_HEADER_SIZE : start + size]
            for _first, start, size in sorted(found)
        ]

    def _frames_above(self, segment: Segment, cutoff: int) -> tuple[int, list[bytes]]:
        """(the chain's LSN at ``cutoff``, the frames ending above it) of a log read whole:
        one whose frames are not in LSN order (a damaged range that gossip refilled,
        a duplicate), where the offsets of :meth:`Segment.log_tail` do not apply."""
        assert self.disk is not None
        data = self.disk.read(log_name(segment.pg_id))
        kept: list[bytes] = []
        chain_lsn = segment.checkpoint_chain_lsn
        for position, frame in self._valid_frames(segment, data):
            if frame.last_lsn <= cutoff:
                chain_lsn = max(chain_lsn, frame.last_lsn)
            else:
                kept.append(data[position : position + frame.size])
        return chain_lsn, kept

    def _valid_frames(self, segment: Segment, data: bytes) -> Iterator[tuple[int, log.Frame]]:
        """(position, frame) of each frame of a log read whole that verifies: past a
        range damaged before a restart, whose frames gossip appended since (or the
        zeros of a preallocated tail), reading goes on at the next valid frame."""
        position = 0
        while position < len(data):
            try:
                frame = log.decode_frame(
                    data, self.geometry.page_size, segment.page_lo, segment.page_hi, position
                )
            except CorruptionError:
                following = _next_valid_frame(data, position + 1, self.geometry, segment)
                if following is None:
                    return
                position = following
                continue
            yield position, frame
            position += frame.size

    def page_store(self, segment: Segment) -> PageStore:
        assert self.disk is not None
        return PageStore(
            self.disk, segment.pg_id, segment.page_lo, segment.page_hi, self.geometry.page_size
        )

    def _store_pages(self, segment: Segment, cutoff: int) -> StoreMap:
        """Writes the pages that changed since the last checkpoint into the page store,
        at ``cutoff``, durably. Without a checkpoint in force (a first one, a store
        that failed its checks at load) or over a checkpoint file of the earlier
        whole-image format, the store is written whole, from nothing."""
        store = segment.store
        if store is not None and segment.changed_pages is not None:
            changed = sorted(segment.changed_pages)
            page_nos, page_lsns, images = segment.images_of(changed, cutoff, self.annulled())
            return store.write(page_nos, page_lsns, images, cutoff, segment.store_map)
        store = self.page_store(segment)
        store.remove()  # no entry of an untrusted store may name a version
        page_nos, page_lsns, images = segment.images_at(cutoff, self.annulled())
        return store.write(page_nos, page_lsns, images, cutoff, StoreMap(segment.page_lo))

    def persist_start(self, lsn: int, checkpoints: dict[int, StartPages]) -> None:
        """Makes a restore's starting point durable: the node keeps its own copy.

        With a disk, each PG's pages go to its page store in one sequential pass,
        then its ``pg-<id>.pages`` file and an empty log (``checkpoints``: the
        same for every node), as if the segment had checkpointed at ``lsn``;
        then node.meta records ``lsn`` as the VDL hint, so recovery starts
        there. A failed write stops the node (:attr:`failed` says why) rather
        than raising.
        """
        with contextlib.suppress(_DiskFailed):
            if self.disk is not None:
                with self._stopping_on_disk_error("restore write"):
                    for pg_id, start in sorted(checkpoints.items()):
                        segment = self.segment(pg_id)
                        store = self.page_store(segment)
                        fresh = StoreMap(segment.page_lo)
                        store_map = store.write(
                            start.page_nos, start.page_lsns, start.images, lsn, fresh
                        )
                        self.disk.replace(checkpoint_name(pg_id), start.checkpoint)
                        self.disk.replace(log_name(pg_id), b"")
                        segment.store, segment.store_map = store, store_map
            self.vdl_hint = max(self.vdl_hint, lsn)
            self._write_meta()

    # --- persistence ----------------------------------------------------------------

    def _meta_body(self) -> dict[str, object]:
        return {
            "name": self.name,
            "az": self.az,
            "volume_id": self.volume_id,
            "epoch": self.epoch,
            "truncations": [list(t) for t in self.truncations],
            "vdl_hint": self.vdl_hint,
            "history": self.history.encode_state() if self.history is not None else [],
            # Why the node may not vote yet (it started empty, its node.meta was stale):
            # a restart before it caught up must not make it trusted.
            "suspect": self.suspect_reason if self.suspect else "",
            # The memberships changes set (placement.py): a reopen knows its PGs.
            "placement": self.placement.encode() if self.placement.changes else {},
        }

    def write_meta(self) -> None:
        """Replaces node.meta atomically and durably (temporary file, fsync, rename, fsync).

        A failed write stops the node (:attr:`failed` says why) rather than raising.
        """
        with contextlib.suppress(_DiskFailed):
            self._write_meta()

    def _write_meta(self) -> None:
        """:meth:`write_meta` for a message's handler: a failed write stops the node
        and raises _DiskFailed, so the handler goes no further (handle returns)."""
        if self.disk is not None:
            data = metafile.encode(metafile.KIND_NODE, self._meta_body())
            with self._stopping_on_disk_error("metadata write"):
                self.disk.replace(NODE_META, data)
            self._frames_since_meta = 0
            self._meta_hint = self.vdl_hint

    @contextlib.contextmanager
    def _stopping_on_disk_error(self, what: str) -> Iterator[None]:
        """A disk's OSError in the block stops the node and unwinds as _DiskFailed."""
        try:
            yield
        except OSError as error:
            self.stop_on_disk_error(what, error)
            raise _DiskFailed from error

    def _remove_segment_files(self, pg_id: int) -> None:
        if self.disk is None:
            return
        prefix = f"pg-{pg_id:08d}."
        with self._stopping_on_disk_error("segment removal"):
            for name in self.disk.list(prefix):
                self.disk.remove(name)
                self.dirty.discard(name)

    def load(self, leave_logs: bool = False, sync_logs: bool = True) -> LoadReport:
        """Rebuilds the node from its disk: metadata, then each segment's checkpoint and log.

        First every log is made durable as it is (:meth:`Disk.sync_files`): after
        an unclean stop a log may end in frames the page cache holds and the
        device does not, and recovery must not count frames an OS crash could
        still take away (PostgreSQL's crash recovery syncs its data folder so).

        Damage with nothing valid after it is the tail a crash tore or garbled
        before its fsync returned: it was never acknowledged, and is cut off.
        Damage with valid frames after it is corruption of acknowledged data:
        it is never truncated away; the segment becomes suspect (it votes in no
        recovery quorum) and refetches what it lacks from peers by gossip.
        (A bit flip in the very last frame after its fsync looks like a torn
        write; the five other replicas still hold that frame.) So does a lost
        or unreadable checkpoint, a log that does not continue its checkpoint,
        and a checkpoint whose log is gone. A file holding another PG's data
        (or a checkpoint of another volume) is never cut nor appended to: its
        segment is set aside (:meth:`Segment.set_aside`); a file of a PG past
        the volume's end is reported and not loaded. (Frames carry no volume
        id: a log of another volume under the same PG number is not told
        apart here.) A node.meta older than the files
        (a checkpoint above its VDL hint, a frame of a newer epoch) makes the
        node suspect. Every problem is a finding of :attr:`load_report`.

        With ``leave_logs`` (verify, a read-only open) the logs are left as they
        are: tails that would be cut are only reported, a node that starts empty
        writes no node.meta, and frames fetched from peers are not written.
        Without ``sync_logs`` (a read-only open) nothing is synced either.
        Raises :class:`WrongNodeError` for another node's or volume's folder.
        """
        disk = self.disk
        assert disk is not None
        report = self.load_report = LoadReport()
        self._writes_logs = not leave_logs
        names = disk.list("pg-")
        if not disk.exists(NODE_META):
            if names:
                raise CorruptionError(f"node {self.name}: logs present but node.meta is missing")
            self._start_empty(report)
            return report
        self._read_meta(disk)
        if sync_logs:
            disk.sync_files([name for name in names if _LOG_NAME.match(name)])
        pg_ids = sorted({int(match.group(1)) for name in names if (match := _PG_FILE.match(name))})
        pg_count = -(-self.geometry.page_count // self.geometry.pages_per_pg)
        for pg_id in [pg_id for pg_id in pg_ids if pg_id >= pg_count]:
            # No PG of this volume has that number: the file is another volume's.
            detail = f"PG {pg_id} is past the end of the volume ({pg_count} PGs)"
            report.add(LoadFinding(log_name(pg_id), FINDING_MISPLACED, detail))
        stale: list[str] = []
        loaded = [pg_id for pg_id in pg_ids if pg_id < pg_count]
        for pg_id in [pg_id for pg_id in loaded if not self.placement.holds(self.name, pg_id)]:
            # A membership change moved the PG away and the files outlived it.
            loaded.remove(pg_id)
            if self._writes_logs:
                self._remove_segment_files(pg_id)
        asleep = self._writes_logs and not self.suspect and len(loaded) > self._awake_max()
        present = set(names) if asleep else set()
        for pg_id in loaded:
            if asleep and self._load_asleep(pg_id, present):
                continue
            segment = self.segment(pg_id)
            self._load_checkpoint(segment, report, stale)
            self._load_segment(segment, report, stale)
            self.refold(segment)  # a backtrack the node took after its checkpoint
        self._remove_stray_history(names)
        if stale:
            self.suspect = True
            self.suspect_reason = f"{NODE_META} is older than {stale[0]}"
            report.add(LoadFinding(NODE_META, FINDING_STALE_META, f"older than {stale[0]}"))
        for pg_id, segment in self.segments.items():  # the logs' records, unfolded
            if segment.hot_bytes:
                self._hot_order[pg_id] = None
                self._hot_estimate += segment.hot_bytes
        self._sleep_quiet()  # an open of a scattered volume keeps few segments awake
        return report

    def _remove_stray_history(self, names: list[str]) -> None:
        """Removes history files no checkpoint names (a crash came before the checkpoint
        file that would have, or after the one that dropped them)."""
        if not self._writes_logs:
            return
        assert self.disk is not None
        for name in names:
            match = _HISTORY_FILE.match(name)
            if match is None:
                continue
            pg_id, cut = int(match.group(1)), int(match.group(2))
            segment = self.segments.get(pg_id)
            history = segment.disk_history if segment is not None else None
            if pg_id in self.dormant or (history is not None and cut in history.cuts):
                continue
            if segment is not None and segment.failed:
                continue  # a segment set aside keeps its files as they are
            self.disk.remove(name)

    def _load_asleep(self, pg_id: int, present: set[str]) -> bool:
        """Loads a segment asleep, from its checkpoint file alone, if that is all it
        holds (an empty log, a checkpoint in the page store format, nothing a
        truncation reaches): an open of a volume of thousands of PGs reads one small
        file of each. ``present``: the names the node's folder holds. False where the full load must look (it reports what it finds);
        its page store is checked when the segment wakes."""
        disk = self.disk
        assert disk is not None
        name, log_file = checkpoint_name(pg_id), log_name(pg_id)
        if name not in present or log_file not in present or disk.size(log_file):
            return False
        try:
            meta, images = decode_object(disk.read(name), name, KIND_PAGES)
            fields = (int(meta["pg_id"]), str(meta.get("volume_id") or self.volume_id))
            cutoff, chain_lsn = int(meta["cutoff"]), int(meta["chain_lsn"])
            cpl, cpl_time = int(meta["cpl"]), float(meta["cpl_time"])
            in_store = bool(meta.get("store"))
            floor = cutoff
            if meta.get("history"):
                history = DiskHistory.decode(0, meta["history"])
                if history.commits > 1 or history.folded != clip(self.annulled(), cutoff):
                    return False  # a time index of its own, or images to refold
                floor = history.base_lsn
        except (CorruptionError, KeyError, TypeError, ValueError):
            return False
        if (
            fields != (pg_id, self.volume_id)
            or not in_store
            or images
            or not 0 < cutoff <= self.vdl_hint
            or any(lo < chain_lsn <= hi for _, lo, hi in self.truncations)
        ):
            return False
        self.dormant[pg_id] = (chain_lsn, floor, cpl, cpl_time)
        return True

    def _awake_max(self) -> int:
        """Segments a node keeps awake (node.py)."""
        raise NotImplementedError

    def _start_empty(self, report: LoadReport) -> None:
        """A node that lost its disk knows nothing, including what it acknowledged: it
        is suspect until it has caught up with its peers."""
        report.started_empty = True
        self.suspect = True
        self.suspect_reason = "its folder was empty: it knows nothing it acknowledged"
        report.add(LoadFinding(NODE_META, FINDING_EMPTY, self.suspect_reason))
        if self._writes_logs:
            self.write_meta()

    def _read_meta(self, disk: Disk) -> None:
        """Takes epoch, truncations, VDL hint, suspicion and history from node.meta.
        Raises WrongNodeError for another node's or volume's, CorruptionError for a
        field that does not read."""
        meta = metafile.decode(disk.read(NODE_META), metafile.KIND_NODE, f"{self.name}/node.meta")
        if meta.get("name") != self.name or meta.get("volume_id") != self.volume_id:
            raise WrongNodeError(self.name, str(meta.get("name")), str(meta.get("volume_id")))
        try:
            self.epoch = int(meta["epoch"])
            self.truncations = [(int(e), int(lo), int(hi)) for e, lo, hi in meta["truncations"]]
            self.vdl_hint = int(meta["vdl_hint"])
        except (KeyError, TypeError, ValueError) as error:
            raise CorruptionError(
                f"{self.name}/node.meta: missing or bad field ({error})"
            ) from None
        self._repair_mark = self.vdl_hint
        if meta.get("suspect"):
            self.suspect = True
            self.suspect_reason = str(meta["suspect"])
        encoded_history = meta.get("history") or []
        self.history = History.decode_state(encoded_history) if encoded_history else None
        recorded = meta.get("placement") or {}
        if recorded:
            placement = Placement.decode(recorded)
            for name in placement.added:
                if name not in self.placement.fleet:
                    self.placement.added.append(name)
            for pg_id, membership in placement.changes.items():
                self.placement.set_membership(pg_id, membership)
                self._know_peers(membership)

    def _doubt(self, segment: Segment, report: LoadReport, finding: LoadFinding) -> None:
        """The segment may lack acknowledged frames: it votes in no quorum until it has
        caught up with peers (gossip)."""
        report.add(finding)
        segment.suspect = True
        segment.suspect_reason = segment.suspect_reason or str(finding)

    def _set_aside(self, segment: Segment, report: LoadReport, finding: LoadFinding) -> None:
        report.add(finding)
        segment.set_aside(str(finding))

    def _load_checkpoint(self, segment: Segment, report: LoadReport, stale: list[str]) -> None:
        """Installs ``pg-<id>.pages``, if there is one; a damaged one makes the segment
        suspect (the frames under it are gone from this disk), a misplaced one sets it
        aside."""
        assert self.disk is not None
        name = checkpoint_name(segment.pg_id)
        if not self.disk.exists(name):
            return  # if a checkpoint was lost, the log does not start the chain (_load_segment)
        try:
            meta, images = decode_object(self.disk.read(name), name, KIND_PAGES)
            pg_id = int(meta["pg_id"])
            volume_id = str(meta.get("volume_id") or self.volume_id)
            page_nos = [int(page_no) for page_no in meta["page_nos"]]
            image_lsns = [int(lsn) for lsn in meta["image_lsns"]]
            cutoff, chain_lsn = int(meta["cutoff"]), int(meta["chain_lsn"])
            cpl, cpl_time = int(meta["cpl"]), float(meta["cpl_time"])
            in_store = bool(meta.get("store"))
            store_map = StoreMap.decode(segment.page_lo, meta)
            encoded = meta.get("history")
            history = DiskHistory.decode(segment.page_lo, encoded) if encoded else None
            repaired = int(meta.get("repaired", 0))
            repaired_folded = tuple(int(lsn) for lsn in meta.get("repaired_folded", ()))
        except (CorruptionError, KeyError, TypeError, ValueError) as error:
            detail = f"unreadable ({error}): the frames under it are gone from this disk"
            self._doubt(segment, report, LoadFinding(name, FINDING_LOST_CHECKPOINT, detail))
            return
        if pg_id != segment.pg_id or volume_id != self.volume_id:
            owner = f"PG {pg_id}" if volume_id == self.volume_id else f"volume {volume_id!r}"
            detail = f"holds the pages of {owner}"
            self._set_aside(segment, report, LoadFinding(name, FINDING_MISPLACED, detail))
            return
        page_size = self.geometry.page_size
        if (
            len(images) != len(page_nos) * page_size
            or len(image_lsns) != len(page_nos)
            or any(not segment.page_lo <= p < segment.page_hi for p in page_nos)
            or len(set(page_nos)) != len(page_nos)
        ):
            detail = "its images do not match its page list: the frames under it are gone"
            self._doubt(segment, report, LoadFinding(name, FINDING_LOST_CHECKPOINT, detail))
            return
        for index, (page_no, image_lsn) in enumerate(zip(page_nos, image_lsns, strict=True)):
            segment.page_log.set_image(
                page_no, images[index * page_size : (index + 1) * page_size], image_lsn
            )
        if in_store and not self._load_store(segment, report, cutoff, store_map):
            return
        segment.checkpoint_lsn = segment.coalesced_lsn = cutoff
        segment.checkpoint_chain_lsn = segment.chain_base_lsn = segment.scl = chain_lsn
        segment.repaired_lsn, segment.repaired_folded = repaired, repaired_folded
        if repaired and clip(self.annulled(), repaired) != repaired_folded:
            # A backtrack below the point a repair built its pages at came after it.
            segment.needs_repair = (
                f"its pages, repaired at LSN {repaired}, predate a change of the "
                "annulled ranges: it is repaired again"
            )
            segment.suspect = True
            segment.suspect_reason = segment.needs_repair
        if history is not None:
            self._load_history(segment, report, history)
        if history is not None and not history.damaged:
            # The window's commits, from the history files: the index names every
            # commit since the last one at or below the base (none: since the start).
            if history.base_cpl:
                segment.time_floor = history.base_time
        elif cpl:
            segment.cpl_lsns.append(cpl)
            segment.cpl_times.append(cpl_time)
            # Commits before it are folded into the images: the index cannot name them.
            segment.time_floor = cpl_time
        if cutoff > self.vdl_hint:
            # A checkpoint is taken at or below a VDL hint node.meta already holds.
            stale.append(f"{name} (its cutoff {cutoff} is above the VDL hint {self.vdl_hint})")

    def _load_store(
        self, segment: Segment, report: LoadReport, cutoff: int, store_map: StoreMap
    ) -> bool:
        """Puts the page store in force for the checkpoint at ``cutoff``: its pages are
        read back when used, not now, so an open reads two headers whatever the
        data. A load that changes nothing (verify, a read-only volume) checks the
        whole store and takes every page now instead: a writer still running
        reuses the store's slots with its next checkpoints, and what was durable at
        the open must stay readable. False if the versions cannot be trusted (the
        segment is doubted: the frames under the checkpoint are gone from this
        disk) or the store is another PG's (set aside). Damage that costs no
        version is reported only."""
        store = self.page_store(segment)
        if not store.exists():
            lost, misplaced = f"{store.index_file}: missing", ""
        elif self._writes_logs:
            lost, misplaced = store.check(cutoff)
        else:
            found = store.scrub(cutoff, store_map)
            for problem in found.harmless[:FINDINGS_PER_STORE]:
                report.add(LoadFinding(store.image_file, FINDING_DAMAGED_STORE, problem))
            lost, misplaced = found.lost, found.misplaced
        if misplaced:
            self._set_aside(
                segment, report, LoadFinding(store.index_file, FINDING_MISPLACED, misplaced)
            )
            return False
        if lost:
            detail = f"{lost}: the frames under the checkpoint are gone from this disk"
            self._doubt(
                segment, report, LoadFinding(store.image_file, FINDING_LOST_CHECKPOINT, detail)
            )
            return False
        if not self._writes_logs:
            return self._take_store_pages(segment, report, store, cutoff, store_map)
        segment.store, segment.store_map = store, store_map
        return True

    def _load_history(self, segment: Segment, report: LoadReport, history: DiskHistory) -> None:
        """Puts the history a checkpoint names in force. A file of it gone or damaged costs
        the versions older than the checkpoint only: reads of them go to other
        replicas (``damaged`` says why), the pages at the checkpoint serve on."""
        assert self.disk is not None
        segment.disk_history = history
        files = HistoryFiles(self.disk, segment, history)
        store = files.base_store()
        problem = ""
        if history.base_map.count():
            problem = (
                f"{store.index_file}: missing"
                if not store.exists()
                else store.check(history.base_lsn)[0]
            )
        for cut in history.cuts:
            name = history_name(segment.pg_id, cut)
            if not problem and not self.disk.exists(name):
                problem = f"{name}: missing"
        if not problem and not self._writes_logs:  # a verify reads it all through
            problem, harmless = files.scrub()
            for line in harmless[:FINDINGS_PER_STORE]:
                report.add(LoadFinding(store.image_file, FINDING_DAMAGED_STORE, line))
        if not problem:
            try:
                commits = files.commits()
            except CorruptionError as error:
                problem = str(error)
            else:
                segment.cpl_lsns[:] = [lsn for lsn, _time in commits]
                segment.cpl_times[:] = [time for _lsn, time in commits]
        if problem:
            history.damaged = problem
            report.add(LoadFinding(store.image_file, FINDING_DAMAGED_STORE, problem))

    def _take_store_pages(
        self,
        segment: Segment,
        report: LoadReport,
        store: PageStore,
        cutoff: int,
        store_map: StoreMap,
    ) -> bool:
        """Installs every page the map names (a load that changes nothing); False (the
        segment doubted) if one cannot be read: a writer took its slot meanwhile."""
        pages = []
        try:
            for page_no in store_map.page_nos():
                slot = store_map.slot(page_no)
                assert slot is not None
                pages.append((page_no, *store.read(page_no, cutoff, slot)))
        except (CorruptionError, OSError) as error:
            detail = f"{error}: the frames under the checkpoint are gone from this disk"
            self._doubt(
                segment, report, LoadFinding(store.image_file, FINDING_LOST_CHECKPOINT, detail)
            )
            return False
        for page_no, page_lsn, image in pages:  # all or none: a doubted segment holds none
            segment.page_log.set_image(page_no, image, page_lsn)
        return True

    def scrub_stores(self) -> list[str]:
        """Checks every page store in force whole, as a verify does: damage no version
        depends on is reported; a store whose versions fail sets its segment aside
        (it serves nothing and votes nowhere until repaired). Returns the problems."""
        problems: list[str] = []
        for pg_id in self.segment_ids():
            try:
                segment = self.awake(pg_id)  # one at a time: sleeping ones go back to sleep
            except _DiskFailed:
                return [*problems, self.failed]
            store = segment.store if segment is not None else None
            if segment is None or store is None or segment.failed:
                continue
            history = segment.disk_history
            if history is not None and not history.damaged and self.disk is not None:
                damage, harmless = HistoryFiles(self.disk, segment, history).scrub()
                problems += harmless
                if damage:  # costs the versions below the checkpoint only
                    history.damaged = damage
                    self.load_report.add(
                        LoadFinding(store.image_file, FINDING_DAMAGED_STORE, damage)
                    )
                    problems.append(damage)
            found = store.scrub(segment.checkpoint_lsn, segment.store_map)
            for problem in found.harmless[:FINDINGS_PER_STORE]:
                self.load_report.add(LoadFinding(store.image_file, FINDING_DAMAGED_STORE, problem))
            problems += found.harmless
            if found.lost or found.misplaced:
                problem = found.lost or found.misplaced
                self.load_report.add(
                    LoadFinding(store.image_file, FINDING_LOST_CHECKPOINT, problem)
                )
                segment.set_aside(f"its page store failed a scrub: {problem}")
                problems.append(problem)
        return problems

    def _store_damaged(self, file: str, problem: str) -> None:
        """A page store failed a read after load (Segment.on_damage): reported."""
        self.load_report.add(LoadFinding(file, FINDING_LOST_CHECKPOINT, problem))

    def _load_segment(self, segment: Segment, report: LoadReport, stale: list[str]) -> None:
        """Reads ``pg-<id>.log`` into the segment: each frame that verifies joins it
        (:meth:`_take_frame`); bad bytes are cut, doubted or set the segment aside
        (:meth:`_past_damage`); then the frames are indexed (:meth:`_index_loaded`)."""
        disk = self.disk
        assert disk is not None
        name = log_name(segment.pg_id)
        if segment.failed:
            return  # never read further, cut, nor appended to
        if not disk.exists(name):
            detail = "missing: the frames after its checkpoint are gone from this disk"
            self._doubt(segment, report, LoadFinding(name, FINDING_MISSING_FRAMES, detail))
            return
        data = disk.read(name)
        segment.on_chain = None  # these frames are on disk already
        page_size = self.geometry.page_size
        seen: set[int] = set()  # first LSNs of the frames read
        position: int | None = 0
        while position is not None and position < len(data):
            try:
                frame = log.decode_frame(
                    data, page_size, segment.page_lo, segment.page_hi, position
                )
                if frame.pg_id != segment.pg_id:
                    raise CorruptionError(f"a frame of PG {frame.pg_id}")
            except CorruptionError:
                stopped = position
                position = self._past_damage(segment, report, name, data, position)
                if position is None:  # the rest was cut (or is left, and read whole)
                    segment.log_bytes = stopped if self._writes_logs else len(data)
                else:
                    segment._init_log_marks(ordered=False)  # a damaged range stays
                continue
            self._take_frame(segment, report, name, data, position, frame, seen, stale)
            position += frame.size
            segment.note_logged(frame.last_lsn, frame.size)
        if not segment.failed:  # a segment set aside keeps nothing it read
            self._index_loaded(segment, report, name)
        segment.on_chain = self._append_to_disk

    def _past_damage(
        self, segment: Segment, report: LoadReport, name: str, data: bytes, position: int
    ) -> int | None:
        """Where reading goes on after bad bytes at ``position``, or None to stop.

        Zeros to the end are preallocated space (cut); a frame of another PG makes
        the file misplaced (set aside); nothing valid after it is a torn tail (cut:
        never acknowledged); valid frames after it make a damaged range (the
        segment is doubted and refetches it from peers)."""
        disk = self.disk
        assert disk is not None
        if data.count(0, position) == len(data) - position:
            # Zeros to the end: space the disk preallocated (disk.py), left
            # behind by a crash. Cut it so appends resume after the frames.
            if self._writes_logs:
                disk.truncate(name, position)
            return None
        owner = _foreign_frame(data, position, self.geometry.page_size)
        if owner is not None and owner != segment.pg_id:
            finding = LoadFinding(name, FINDING_MISPLACED, f"holds frames of PG {owner}", position)
            self._set_aside(segment, report, finding)
            return None
        following = _next_valid_frame(data, position + 1, self.geometry, segment)
        if following is None:
            # Nothing valid follows: the last write was torn or garbled by the
            # crash before its fsync returned, so it was never acknowledged.
            report.torn_tails_cut += 1
            verb = "cut" if self._writes_logs else "would be cut"
            size = len(data) - position
            detail = f"{size} bytes after the last good frame {verb}"
            report.add(LoadFinding(name, FINDING_TORN_TAIL, detail, position, size))
            if self._writes_logs:
                disk.truncate(name, position)
            return None
        report.damaged_ranges += 1
        detail = f"{following - position} bytes; the frames in them are fetched from peers"
        finding = LoadFinding(name, FINDING_DAMAGED_RANGE, detail, position, following - position)
        self._doubt(segment, report, finding)
        return following

    def _take_frame(
        self,
        segment: Segment,
        report: LoadReport,
        name: str,
        data: bytes,
        position: int,
        frame: log.Frame,
        seen: set[int],
        stale: list[str],
    ) -> None:
        """Queues a verified frame of the log for the segment, unless it is a duplicate,
        inside the checkpoint already, or annulled; a frame of a newer epoch than
        node.meta's makes the meta stale."""
        size = frame.size
        report.frames += 1
        report.bytes += size
        if frame.epoch > self.epoch and not stale:
            stale.append(f"{name} (a frame of epoch {frame.epoch} at byte {position})")
        if frame.first_lsn in seen:
            lsns = f"LSNs {frame.first_lsn}..{frame.last_lsn}"
            report.add(LoadFinding(name, FINDING_DUPLICATE, lsns, position, size))
        elif frame.last_lsn <= segment.checkpoint_lsn:
            pass  # in the checkpoint already (a crash came between its two replaces)
        elif not segment.annulled_frame(frame.epoch, frame.first_lsn, frame.last_lsn):
            segment.queued.append((frame, bytes(data[position : position + size])))
        seen.add(frame.first_lsn)

    def _index_loaded(self, segment: Segment, report: LoadReport, name: str) -> None:
        """Chains and indexes the frames the log gave; frames past a hole wait, known to
        be on disk, and the segment is doubted until gossip fills the hole."""
        segment.persist(bounded=False)  # the log's own frames: none refused
        segment.index_frames()
        if segment.pending:
            # Frames that do not continue the chain: what lies between is gone from
            # this disk (a lost checkpoint, a damaged range). They are on disk already,
            # so the gossip that fills the hole must not append them again.
            self._logged_pending[segment.pg_id] = {entry[0] for entry in segment.pending.values()}
            if not segment.suspect:  # else the finding that made it suspect says why
                waiting = len(segment.pending)
                detail = f"the chain stops at LSN {segment.scl}; {waiting} frames wait beyond"
                self._doubt(segment, report, LoadFinding(name, FINDING_MISSING_FRAMES, detail))

    # --- syncing ---------------------------------------------------------------------

    def begin_sync(self) -> SyncRequest | None:
        """The fsync work due now (group commit): every dirty file, every held ack; the
        runtime performs it (runtime/sync.py)."""
        if self.durability != "fsync":
            self.dirty.clear()
            return None
        if not self.dirty and not self.held:
            return None
        segments = [self.segments[pg_id] for pg_id in sorted(self.unindexed)]
        request = SyncRequest(sorted(self.dirty), self.held, segments)
        self.dirty = set()
        self.held = []
        self.unindexed = set()
        return request

    def sync_failed(self, error: OSError) -> None:
        """An fsync failed: nothing it covered is acknowledged, and the node stops.

        It does not retry and trust the page cache (fsyncgate): a restart
        reloads and re-verifies everything from disk.
        """
        self.stop_on_disk_error("fsync", error)

    def stop_on_disk_error(self, what: str, error: OSError) -> None:
        """The node stops: no held ack goes out, and it answers nothing until reloaded.

        Every disk write of a node ends here on an OSError (a full or failing disk):
        :attr:`failed` names the operation and the OS error, and the first reason stays.
        """
        self.failed = self.failed or f"{what} failed: {error}"
        self.held.clear()
        self.dirty.clear()
        if self.on_stop is not None:
            self.on_stop()


def _next_valid_frame(data: bytes, start: int, geometry: Geometry, segment: Segment) -> int | None:
    """Position of the first frame at or after ``start`` that verifies, or None."""
    magic = b"AUFR"
    position = data.find(magic, start)
    while position != -1:
        try:
            log.decode_frame(data, geometry.page_size, segment.page_lo, segment.page_hi, position)
        except CorruptionError:
            position = data.find(magic, position + 1)
            continue
        return position
    return None


def _foreign_frame(data: bytes, position: int, page_size: int) -> int | None:
    """The PG of a frame at ``position`` that verifies for some PG, or None: a log
    whose first bad frame is another PG's is a misplaced file, not a torn tail."""
    try:
        return log.decode_frame(data, page_size, 0, native.LSN_MAX, position).pg_id
    except CorruptionError:
        return None
