"""A storage node: its name and AZ, one segment per protection group, its disk, its epoch.

A node is a state machine: :meth:`StorageNode.handle` takes one message and
returns the messages to send, as (destination, message) pairs. It never
sleeps, reads a clock or opens a socket; the transport delivers, and runs the
fsyncs the node asks for (:meth:`begin_sync`); the writer's staging uploads
the backup objects it builds (:meth:`take_upload`). Segments are created when
their PG's first frame arrives (or a peer's catalog names it), so an
unwritten PG costs nothing.

On disk (docs/format.md, "Node folder"): ``node.meta`` (name, volume, epoch,
truncations, a VDL hint) replaced atomically, and ``pg-<id>.log`` per
segment, an append-only sequence of frames in the order they joined the
chain. With ``durability="fsync"`` a node acknowledges only what is synced:
acks wait in ``held`` until the transport's sync job for them returns.

Invariants: a request with an epoch older than the node's is rejected and
changes nothing; the epoch is durable before the node answers a recovery
query; a segment is never read above its SCL; a suspect segment (damage
found at restart) or a node that started empty votes in no recovery quorum
until it has caught up with three peers; a segment set aside (a misplaced
file) takes, serves and offers nothing; every gossip exchange stops unless
its last push advanced the puller's SCL, and a segment whose peers collected
what it lacks asks no more (it needs repair). What loading found is in
``load_report``, per file.
"""

from __future__ import annotations

import bisect
import contextlib
import functools
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import msgpack

from .. import native
from ..config import Geometry
from ..errors import AuroraStorageError, CorruptionError, VersionGoneError, WrongNodeError
from ..format import frames as log
from ..format import metadata as metafile
from ..format.objects import KIND_PAGES, decode_object, encode_object
from . import messages as m
from .history import (
    History,
    flatten_truncations,
    merge_ranges,
    truncation_ranges,
    truncation_triples,
)
from .ports import Disk
from .segment import Segment, SharedImages
from .stage import Upload, build_log_object, build_pages_object

WRITER = "writer"
GONE = "version gone"  # PageImage.problem when the read point was coalesced away
NODE_META = "node.meta"
META_EVERY_FRAMES = 512  # the VDL hint is persisted at least this often (bounds recovery's work)
CHECKPOINT_EVERY_FRAMES = 4096  # frames logged between attempts to trim a segment's log
VOUCHERS_NEEDED = 3  # peers a suspect segment must catch up with (a read quorum's worth)
UPLOADS_HELD_MAX = 64  # built backup objects a node holds for the runtime to take
RECOVERY_PROBLEMS_MAX = 64  # reasons a recovery answer carries (why segments cannot vote)
FINDINGS_MAX = 10_000  # problems a load report keeps (each names a file and a byte range)
_LOG_NAME = re.compile(r"^pg-(\d+)\.log$")
_PG_FILE = re.compile(r"^pg-(\d+)\.(?:log|pages)$")

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
    annulled: tuple[int, ...],
    volume_id: str = "",
) -> bytes:
    """The ``pg-<id>.pages`` file of the segment's pages at ``cutoff`` (docs/format.md,
    "Volume folder"), with its chain position there and its last commit at or below it."""
    page_nos, image_lsns, images = segment.images_at(cutoff, annulled)
    index = bisect.bisect_right(segment.cpl_lsns, cutoff)
    meta: dict[str, object] = {
        "pg_id": segment.pg_id,
        "cutoff": cutoff,
        "chain_lsn": chain_lsn,
        "page_nos": page_nos,
        "image_lsns": image_lsns,
        "cpl": segment.cpl_lsns[index - 1] if index else 0,
        "cpl_time": segment.cpl_times[index - 1] if index else 0.0,
    }
    if volume_id:
        meta["volume_id"] = volume_id  # a file put in another volume's folder is told apart
    return encode_object(KIND_PAGES, images, meta)


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


class StorageNode:
    def __init__(
        self,
        name: str,
        az: str,
        geometry: Geometry,
        peers: list[str],
        backend: str | None = None,
        disk: Disk | None = None,
        volume_id: str = "",
        durability: str = "memory",
    ) -> None:
        self.name = name
        self.az = az
        self.geometry = geometry
        self.peers = [peer for peer in peers if peer != name]
        self.backend = backend
        self.disk = disk
        self.volume_id = volume_id
        self.durability = durability
        self.epoch = 1
        self.truncations: list[tuple[int, int, int]] = []
        self.history: History | None = None  # versions of the visible history, once known
        # Backup objects built for Stage requests, by request id, until the runtime
        # takes them (take_upload): the node itself never touches the store.
        self.uploads: dict[int, Upload] = {}
        self.vdl_hint = 0
        self.writer = WRITER
        self.segments: dict[int, Segment] = {}
        self.rejected_requests = 0
        self.suspect = False
        self.suspect_reason = ""  # why the node may not vote (started empty, stale node.meta)
        self.vouched_by: set[str] = set()
        self.failed = ""  # why the node stopped (an fsync error); empty while healthy
        self.dirty: set[str] = set()
        self.unindexed: set[int] = set()  # PGs whose segment has frames to index
        # Called when the node stops on a disk error (the volume marks it down).
        self.on_stop: Callable[[], None] | None = None
        self.held: Outgoing = []
        self.load_report = LoadReport()
        self._writes_logs = True  # False after a load that must change nothing (verify)
        # Frames at or below this LSN that gossip brings were durable before the node
        # loaded (its VDL hint then, or the VDL the recovery after it found): its
        # disk should have held them (LoadReport.repaired_frames).
        self._repair_mark = 0
        # Per PG: first LSNs of frames the log holds beyond a hole (load): chained once
        # gossip fills the hole, they are not appended again.
        self._logged_pending: dict[int, set[int]] = {}
        self._ticks = 0
        self._frames_since_meta = 0
        self._annulled: tuple[int, ...] = ()
        self._annulled_key: tuple[tuple[int, int], int, int] = ((-1, 0), -2, 0)
        self._history_pulled: tuple[int, int] = (0, -1)  # the writer history key last asked for

    def problems(self) -> list[str]:
        """Why this node, or a segment of it, cannot vouch for its data now (status)."""
        lines = [self.failed] if self.failed else []
        if self.suspect:
            lines.append(self.suspect_reason or "not caught up with its peers")
        for pg_id, segment in sorted(self.segments.items()):
            if segment.failed:
                lines.append(f"PG {pg_id} set aside: {segment.failed}")
            elif segment.needs_repair:
                lines.append(f"PG {pg_id} needs repair: {segment.needs_repair}")
            elif segment.suspect:
                lines.append(f"PG {pg_id} catching up: {segment.suspect_reason or 'damaged'}")
        return lines

    # --- segments ---------------------------------------------------------------------

    def segment(self, pg_id: int) -> Segment:
        segment = self.segments.get(pg_id)
        if segment is None:
            segment = Segment(pg_id, self.geometry, self.backend)
            segment.truncations = list(self.truncations)
            segment.suspect = self.suspect
            if self.disk is not None:
                segment.on_chain = self._append_to_disk
                # Frames are indexed while the flush that makes them durable runs.
                segment.defer_indexing = self.durability == "fsync"
            self.segments[pg_id] = segment
        return segment

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
        self.unindexed.add(pg_id)
        self._frames_since_meta += len(frames)
        self.segments[pg_id].frames_logged += len(frames)

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
        self._write_meta()  # recovery must never ask this node for frames below its hint
        name = log_name(segment.pg_id)
        with self._stopping_on_disk_error("checkpoint"):
            data = disk.read(name)
        kept: list[bytes] = []
        chain_lsn = segment.checkpoint_chain_lsn
        position = 0
        while position < len(data):
            try:
                frame = log.decode_frame(
                    data, self.geometry.page_size, segment.page_lo, segment.page_hi, position
                )
            except CorruptionError:
                # A range damaged before a restart, whose frames gossip appended since:
                # the rewritten log leaves it out (or the zeros of a preallocated tail).
                following = _next_valid_frame(data, position + 1, self.geometry, segment)
                if following is None:
                    break
                position = following
                continue
            if frame.last_lsn <= cutoff:
                chain_lsn = max(chain_lsn, frame.last_lsn)
            else:
                kept.append(data[position : position + frame.size])
            position += frame.size
        pages = checkpoint_object(segment, cutoff, chain_lsn, self.annulled(), self.volume_id)
        with self._stopping_on_disk_error("checkpoint"):
            disk.replace(checkpoint_name(segment.pg_id), pages)
            disk.replace(name, b"".join(kept))
        self.dirty.discard(name)
        segment.checkpoint_lsn = cutoff
        segment.checkpoint_chain_lsn = chain_lsn
        return True

    def start_segment(
        self, pg_id: int, lsn: int, time: float, layers: list[SharedImages]
    ) -> Segment:
        """A restore: the PG's segment starts at ``lsn`` from shared page images, in memory
        (Segment.start_at); :meth:`persist_start` then makes that durable."""
        segment = self.segment(pg_id)
        segment.start_at(lsn, time, layers)
        return segment

    def persist_start(self, lsn: int, checkpoints: dict[int, bytes]) -> None:
        """Makes a restore's starting point durable: the node keeps its own copy.

        With a disk, each PG gets its ``pg-<id>.pages`` file (``checkpoints``,
        the same bytes on every node) and an empty log, as if the segment had
        checkpointed at ``lsn``; then node.meta records ``lsn`` as the VDL hint,
        so recovery starts there. A failed write stops the node (:attr:`failed`
        says why) rather than raising.
        """
        with contextlib.suppress(_DiskFailed):
            if self.disk is not None:
                with self._stopping_on_disk_error("restore write"):
                    for pg_id, data in sorted(checkpoints.items()):
                        self.disk.replace(checkpoint_name(pg_id), data)
                        self.disk.replace(log_name(pg_id), b"")
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

    @contextlib.contextmanager
    def _stopping_on_disk_error(self, what: str) -> Iterator[None]:
        """A disk's OSError in the block stops the node and unwinds as _DiskFailed."""
        try:
            yield
        except OSError as error:
            self.stop_on_disk_error(what, error)
            raise _DiskFailed from error

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
            # A node that lost its disk knows nothing, including what it acknowledged.
            report.started_empty = True
            self.suspect = True
            self.suspect_reason = "its folder was empty: it knows nothing it acknowledged"
            report.add(LoadFinding(NODE_META, FINDING_EMPTY, self.suspect_reason))
            if not leave_logs:
                self.write_meta()
            return report
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
        if sync_logs:
            disk.sync_files([name for name in names if _LOG_NAME.match(name)])
        pg_ids = sorted({int(match.group(1)) for name in names if (match := _PG_FILE.match(name))})
        pg_count = -(-self.geometry.page_count // self.geometry.pages_per_pg)
        for pg_id in [pg_id for pg_id in pg_ids if pg_id >= pg_count]:
            # No PG of this volume has that number: the file is another volume's.
            detail = f"PG {pg_id} is past the end of the volume ({pg_count} PGs)"
            report.add(LoadFinding(log_name(pg_id), FINDING_MISPLACED, detail))
        stale: list[str] = []
        for pg_id in [pg_id for pg_id in pg_ids if pg_id < pg_count]:
            segment = self.segment(pg_id)
            self._load_checkpoint(segment, report, stale)
            self._load_segment(segment, report, stale)
        if stale:
            self.suspect = True
            self.suspect_reason = f"{NODE_META} is older than {stale[0]}"
            report.add(LoadFinding(NODE_META, FINDING_STALE_META, f"older than {stale[0]}"))
        return report

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
        segment.checkpoint_lsn = segment.coalesced_lsn = cutoff
        segment.checkpoint_chain_lsn = segment.chain_base_lsn = segment.scl = chain_lsn
        if cpl:
            segment.cpl_lsns.append(cpl)
            segment.cpl_times.append(cpl_time)
            # Commits before it are folded into the images: the index cannot name them.
            segment.time_floor = cpl_time
        if cutoff > self.vdl_hint:
            # A checkpoint is taken at or below a VDL hint node.meta already holds.
            stale.append(f"{name} (its cutoff {cutoff} is above the VDL hint {self.vdl_hint})")

    def _load_segment(self, segment: Segment, report: LoadReport, stale: list[str]) -> None:
        disk = self.disk
        assert disk is not None
        pg_id = segment.pg_id
        name = log_name(pg_id)
        if segment.failed:
            return  # never read further, cut, nor appended to
        if not disk.exists(name):
            detail = "missing: the frames after its checkpoint are gone from this disk"
            self._doubt(segment, report, LoadFinding(name, FINDING_MISSING_FRAMES, detail))
            return
        data = disk.read(name)
        segment.on_chain = None  # these frames are on disk already
        page_size = self.geometry.page_size
        seen: set[int] = set()
        position = 0
        while position < len(data):
            try:
                frame = log.decode_frame(
                    data, page_size, segment.page_lo, segment.page_hi, position
                )
                if frame.pg_id != pg_id:
                    raise CorruptionError(f"a frame of PG {frame.pg_id}")
            except CorruptionError:
                if data.count(0, position) == len(data) - position:
                    # Zeros to the end: space the disk preallocated (disk.py), left
                    # behind by a crash. Cut it so appends resume after the frames.
                    if self._writes_logs:
                        disk.truncate(name, position)
                    break
                owner = _foreign_frame(data, position, page_size)
                if owner is not None and owner != pg_id:
                    detail = f"holds frames of PG {owner}"
                    finding = LoadFinding(name, FINDING_MISPLACED, detail, position)
                    self._set_aside(segment, report, finding)
                    segment.on_chain = self._append_to_disk
                    return
                following = _next_valid_frame(data, position + 1, self.geometry, segment)
                if following is None:
                    # Nothing valid follows: the last write was torn or garbled by the
                    # crash before its fsync returned, so it was never acknowledged.
                    report.torn_tails_cut += 1
                    verb = "cut" if self._writes_logs else "would be cut"
                    detail = f"{len(data) - position} bytes after the last good frame {verb}"
                    report.add(
                        LoadFinding(name, FINDING_TORN_TAIL, detail, position, len(data) - position)
                    )
                    if self._writes_logs:
                        disk.truncate(name, position)
                    break
                report.damaged_ranges += 1
                detail = f"{following - position} bytes; the frames in them are fetched from peers"
                finding = LoadFinding(
                    name, FINDING_DAMAGED_RANGE, detail, position, following - position
                )
                self._doubt(segment, report, finding)
                position = following
                continue
            size = frame.size
            report.frames += 1
            report.bytes += size
            if frame.epoch > self.epoch and not stale:
                stale.append(f"{name} (a frame of epoch {frame.epoch} at byte {position})")
            if frame.first_lsn in seen:
                report.add(
                    LoadFinding(
                        name,
                        FINDING_DUPLICATE,
                        f"LSNs {frame.first_lsn}..{frame.last_lsn}",
                        position,
                        size,
                    )
                )
            elif frame.last_lsn <= segment.checkpoint_lsn:
                pass  # in the checkpoint already (a crash came between its two replaces)
            elif not segment.annulled_frame(frame.epoch, frame.first_lsn, frame.last_lsn):
                segment.queued.append((frame, bytes(data[position : position + size])))
            seen.add(frame.first_lsn)
            position += size
        segment.persist(bounded=False)  # the log's own frames: none refused
        segment.index_frames()
        if segment.pending:
            # Frames that do not continue the chain: what lies between is gone from
            # this disk (a lost checkpoint, a damaged range). They are on disk already,
            # so the gossip that fills the hole must not append them again.
            self._logged_pending[pg_id] = {entry[0] for entry in segment.pending.values()}
            if not segment.suspect:  # else the finding that made it suspect says why
                waiting = len(segment.pending)
                detail = f"the chain stops at LSN {segment.scl}; {waiting} frames wait beyond"
                self._doubt(segment, report, LoadFinding(name, FINDING_MISSING_FRAMES, detail))
        segment.on_chain = self._append_to_disk

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

    # --- messages ---------------------------------------------------------------------

    def handle(self, message: m.Message, sender: str) -> Outgoing:
        if self.failed:
            return []
        try:
            out = self._dispatch(message, sender)
        except _DiskFailed:
            return []  # the node stopped mid-message: it says nothing more
        if self.durability == "fsync" and self.disk is not None:
            # An SCL may be reported only once the frames under it are synced.
            ready: Outgoing = []
            for destination, reply in out:
                if isinstance(reply, m.SegmentState):
                    self.held.append((destination, reply))
                else:
                    ready.append((destination, reply))
            return ready
        return out

    def _dispatch(self, message: m.Message, sender: str) -> Outgoing:
        if isinstance(message, m.WriteFrames):
            return self._on_write(message, sender)
        if isinstance(message, m.ReadPage):
            return self._on_read(message, sender)
        if isinstance(message, m.GossipPull):
            return self._on_gossip_pull(message)
        if isinstance(message, m.GossipPush):
            return self._on_gossip_push(message)
        if isinstance(message, m.CatalogPull):
            catalog = m.Catalog(
                self.name, self._catalog(), self.epoch, flatten_truncations(self.truncations)
            )
            return [(message.sender, catalog)]
        if isinstance(message, m.Catalog):
            return self._on_catalog(message)
        if isinstance(message, m.RecoveryQuery):
            return self._on_recovery_query(message, sender)
        if isinstance(message, m.Truncate):
            return self._on_truncate(message, sender)
        if isinstance(message, m.SetHistory):
            return self._on_set_history(message, sender)
        if isinstance(message, m.TimeQuery):
            return self._on_time_query(message, sender)
        if isinstance(message, m.WindowQuery):
            return [(sender, self.window_answer(message.request_id, message.since))]
        if isinstance(message, m.Stage):
            return self._on_stage(message, sender)
        if isinstance(message, m.Tick):
            return self.background()
        return []

    def annulled(self) -> tuple[int, ...]:
        """Every LSN range this node's coalescing must skip (cached per history and truncations)."""
        history = self.history
        key = (
            history.key if history is not None else (-1, 0),
            history.current.version if history is not None else -1,
            len(self.truncations),
        )
        if key != self._annulled_key:
            hidden = self.history.current.annulled if self.history is not None else ()
            self._annulled = merge_ranges(hidden, truncation_ranges(self.truncations))
            self._annulled_key = key
        return self._annulled

    def _on_set_history(self, message: m.SetHistory, sender: str) -> Outgoing:
        """Keeps the history with the higher key (history.py): the writer's, unless
        this node already holds a later write."""
        stale = self._stale(message.epoch, sender)
        if stale is not None:
            return stale
        incoming = decode_history(message.history)
        if incoming is None:
            return []
        if self.history is None or incoming.key > self.history.key:
            self.history = incoming
            self._write_meta()
        history = self.history
        reply = m.HistorySet(
            self.name, self.epoch, history.current.version, history.key[0], history.key[1]
        )
        return [(sender, reply)]

    def _on_stage(self, message: m.Stage, sender: str) -> Outgoing:
        """Step 6: build this PG's frames (or pages) into a backup object, once per PG.

        The node does no store I/O: it holds the object (:meth:`take_upload`)
        for the runtime, which uploads it outside any lock, and says what it
        built. At most UPLOADS_HELD_MAX objects wait; an older one nobody took
        (its request was answered by another node, or its reply was lost) goes.
        """
        segment = self.segments.get(message.pg_id)
        name, size, cpls, times, problem = "", 0, (), (), ""
        try:
            if (
                segment is None
                or segment.scl < message.required_scl
                or segment.suspect
                or segment.failed
            ):
                raise CorruptionError(f"segment cannot vouch for LSN {message.required_scl}")
            if message.snapshot:
                built: Upload | None = build_pages_object(
                    segment, message.upto_lsn, message.annulled
                )
            else:
                built = build_log_object(segment, message.from_lsn, message.upto_lsn)
            if built is not None:
                name, size = built.name, built.size
                if not message.snapshot:
                    cpls, times = tuple(built.meta["cpls"]), tuple(built.meta["times"])
                self.uploads[message.request_id] = built
                while len(self.uploads) > UPLOADS_HELD_MAX:
                    del self.uploads[next(iter(self.uploads))]
        except (AuroraStorageError, OSError) as error:
            problem = str(error) or type(error).__name__
        reply = m.Staged(
            message.request_id,
            self.name,
            message.pg_id,
            message.upto_lsn,
            name,
            size,
            cpls,
            times,
            problem,
        )
        return [(sender, reply)]

    def take_upload(self, request_id: int) -> Upload | None:
        """The object built for Stage request ``request_id``, handed to the runtime once."""
        return self.uploads.pop(request_id, None)

    def window_answer(self, request_id: int, since: float) -> m.WindowAnswer:
        """The commits this node's segments index at or after ``since``, and the record
        bytes each PG's page log holds (above its coalesced point), changing nothing."""
        cpls: list[int] = []
        times: list[float] = []
        record_bytes: list[int] = []
        for pg_id, segment in sorted(self.segments.items()):
            start = bisect.bisect_left(segment.cpl_times, since)
            cpls += segment.cpl_lsns[start:]
            times += segment.cpl_times[start:]
            record_bytes += (pg_id, segment.page_log.stats().record_bytes)
        trusted = not self.suspect and not any(s.suspect for s in self.segments.values())
        return m.WindowAnswer(
            request_id, self.name, tuple(cpls), tuple(times), tuple(record_bytes), int(trusted)
        )

    def _on_time_query(self, message: m.TimeQuery, sender: str) -> Outgoing:
        cpl, moment = 0, 0.0
        floor_time, folded_lsn = float("-inf"), 0
        for segment in self.segments.values():
            found, found_time = segment.last_commit_at(message.moment, message.annulled)
            if found > cpl:
                cpl, moment = found, found_time
            floor_time = max(floor_time, segment.time_floor)
            folded_lsn = max(folded_lsn, segment.coalesced_lsn)
        trusted = not self.suspect and not any(s.suspect for s in self.segments.values())
        answer = m.TimeAnswer(
            message.request_id, self.name, cpl, moment, int(trusted), floor_time, folded_lsn
        )
        return [(sender, answer)]

    def _stale(self, epoch: int, sender: str) -> Outgoing | None:
        if epoch < self.epoch:
            self.rejected_requests += 1
            reason = f"epoch {epoch} is older than node {self.name}'s epoch {self.epoch}"
            return [(sender, m.Rejected(self.name, self.epoch, reason))]
        return None

    def _adopt(self, epoch: int, truncations: tuple[int, ...], writer: str | None) -> None:
        """Takes a newer epoch and the truncations decided with it; durable before use."""
        changed = False
        for truncation in truncation_triples(truncations):
            if truncation not in self.truncations:
                self.truncations.append(truncation)
                for segment in self.segments.values():
                    segment.truncate(*truncation)
                changed = True
        if epoch > self.epoch:
            self.epoch = epoch
            changed = True
        if writer is not None:
            self.writer = writer
        if changed:
            self._write_meta()

    def _on_write(self, message: m.WriteFrames, sender: str) -> Outgoing:
        stale = self._stale(message.epoch, sender)
        if stale is not None:
            return stale
        if message.epoch > self.epoch or len(message.truncations) != 3 * len(self.truncations):
            self._adopt(message.epoch, message.truncations, sender)
        self.writer = sender
        segment = self.segment(message.pg_id)
        if segment.failed:
            return []  # set aside: it takes nothing and acknowledges nothing
        segment.receive(message.frames)
        scl = segment.persist()
        out: Outgoing = []
        if message.history_sequence < 0 or (
            self.history is not None
            and self.history.key == (message.epoch, message.history_sequence)
        ):
            segment.maintain(message.retain_lsn, message.floor_lsn, self.annulled())
        elif self._history_pulled != (message.epoch, message.history_sequence):
            # Another history than the writer's: coalescing with it could fold away
            # records the writer's shows. Wait for the writer's (asked once per key).
            self._history_pulled = (message.epoch, message.history_sequence)
            out.append((sender, m.HistoryPull(self.name)))
        if self.disk is not None and segment.frames_logged >= CHECKPOINT_EVERY_FRAMES:
            self.checkpoint(segment)
        if message.retain_lsn > self.vdl_hint:
            self.vdl_hint = message.retain_lsn
            if self._frames_since_meta >= META_EVERY_FRAMES:
                self._write_meta()
        out.append((sender, m.SegmentState(self.name, message.pg_id, self.epoch, scl)))
        if segment.pending:
            out += self._pull_from_peers(segment)
        return out

    def serve_read(
        self,
        pg_id: int,
        page_no: int,
        read_point: int,
        required_scl: int,
        annulled: tuple[int, ...],
    ) -> tuple[bytes, str, int]:
        """(image, problem, SCL) for a read: the image if this segment can serve it."""
        segment = self.segments.get(pg_id)
        if segment is not None and segment.failed:
            return b"", f"segment set aside: {segment.failed}", 0
        if segment is None or segment.scl < required_scl:
            scl = segment.scl if segment else 0
            return b"", f"SCL {scl} is below {required_scl}, needed at read point {read_point}", scl
        try:
            return segment.read(page_no, read_point, annulled), "", segment.scl
        except VersionGoneError:
            return b"", GONE, segment.scl
        except AuroraStorageError as error:
            return b"", str(error), segment.scl

    def _on_read(self, message: m.ReadPage, sender: str) -> Outgoing:
        image, problem, scl = self.serve_read(
            message.pg_id,
            message.page_no,
            message.read_point,
            message.required_scl,
            message.annulled,
        )
        reply = m.PageImage(message.request_id, self.name, message.page_no, scl, image, problem)
        return [(sender, reply)]

    def _pull_from_peers(self, segment: Segment) -> Outgoing:
        if segment.failed or segment.needs_repair:
            return []  # its peers said they no longer hold what it lacks
        pull = m.GossipPull(self.name, segment.pg_id, segment.scl)
        return [(peer, pull) for peer in self.peers]

    def _on_gossip_pull(self, message: m.GossipPull) -> Outgoing:
        segment = self.segments.get(message.pg_id)
        if segment is None or segment.failed:
            return []
        if message.scl < segment.chain_base_lsn:
            # The puller lacks frames this segment has collected (every segment held
            # them then): it gets none, only the news, so that it stops asking.
            push = m.GossipPush(self.name, message.pg_id, segment.scl, (), segment.chain_base_lsn)
            return [(message.sender, push)]
        frames = segment.gossip_pull(message.scl)
        if not frames:
            return []
        push = m.GossipPush(self.name, message.pg_id, segment.scl, frames, segment.chain_base_lsn)
        return [(message.sender, push)]

    def _on_gossip_push(self, message: m.GossipPush) -> Outgoing:
        """Takes a peer's frames. An exchange goes on only while it makes progress: the
        next pull follows a push that advanced the SCL (so at most one pull per frame
        chained), and a peer that collected what the segment lacks is not asked again."""
        segment = self.segment(message.pg_id)
        if segment.failed:
            return []
        before = segment.scl
        chained = len(segment.chain_frames)
        logged = set(self._logged_pending.get(message.pg_id, ()))
        scl = segment.gossip_push(message.frames) if message.frames else before
        out: Outgoing = []
        if scl > before:
            segment.needs_repair = ""  # a peer still held what it lacked
            self._note_repair(segment, chained, logged)
            out.append((self.writer, m.SegmentState(self.name, message.pg_id, self.epoch, scl)))
        if scl < message.base_lsn:
            self._needs_repair(segment, message.sender, message.base_lsn)
        elif scl < message.scl:
            if scl > before:  # the peer holds more than one push carries: keep pulling
                out.append((message.sender, m.GossipPull(self.name, message.pg_id, scl)))
        else:
            self._vouch(segment, message.sender, message.scl)
        return out

    def _needs_repair(self, segment: Segment, peer: str, base_lsn: int) -> None:
        """A peer collected frames the segment lacks: gossip cannot mend it (the frames
        are below every peer's checkpoint, as a rule), only a segment repair can."""
        if segment.needs_repair:
            return
        segment.needs_repair = (
            f"it lacks the frames after LSN {segment.scl}, and {peer} no longer holds "
            f"those up to LSN {base_lsn} (collected): it needs a segment repair"
        )
        segment.suspect = True
        segment.suspect_reason = segment.suspect_reason or segment.needs_repair
        name = log_name(segment.pg_id)
        self.load_report.add(LoadFinding(name, FINDING_NEEDS_REPAIR, segment.needs_repair))

    def _note_repair(self, segment: Segment, chained: int, logged: set[int]) -> None:
        """Counts the frames gossip just chained (from index ``chained`` on) at or below the
        repair mark, but for those its log held beyond a hole (``logged``): committed
        data its disk should have held."""
        hint = self._repair_mark
        firsts, lasts = segment.chain_first_lsns, segment.chain_last_lsns
        count = sum(
            1
            for first, last in zip(firsts[chained:], lasts[chained:], strict=True)
            if last <= hint and first not in logged
        )
        if count:
            name = log_name(segment.pg_id)
            repaired = self.load_report.repaired_frames
            repaired[name] = repaired.get(name, 0) + count

    def _catalog(self) -> tuple[int, ...]:
        flat: list[int] = []
        for pg_id, segment in sorted(self.segments.items()):
            if not segment.failed:  # a segment set aside offers nothing
                flat += (pg_id, segment.scl)
        return tuple(flat)

    def _on_catalog(self, message: m.Catalog) -> Outgoing:
        if message.epoch > self.epoch or len(message.truncations) > 3 * len(self.truncations):
            self._adopt(message.epoch, message.truncations, None)
        out: Outgoing = []
        for pg_id, peer_scl in zip(message.segments[::2], message.segments[1::2], strict=True):
            segment = self.segment(pg_id)
            if segment.failed:
                continue
            if peer_scl > segment.scl:
                # Once per catalog, even for a segment that needs repair: a peer may
                # have come back holding what the others collected.
                out.append((message.sender, m.GossipPull(self.name, pg_id, segment.scl)))
            else:
                self._vouch(segment, message.sender, peer_scl)
        if self.suspect:
            self.vouched_by.add(message.sender)
            self._clear_node_suspicion()
        return out

    def _clear_node_suspicion(self) -> None:
        """A node that started empty (or loaded a stale node.meta) votes again once three
        peers' catalogs are caught up."""
        if (
            self.suspect
            and len(self.vouched_by) >= VOUCHERS_NEEDED
            and not any(segment.suspect for segment in self.segments.values())
        ):
            self.suspect = False
            self.suspect_reason = ""
            if self.disk is not None:
                # What it caught up with is durable before node.meta says it may vote.
                for name in sorted(self.dirty):
                    self.disk.sync(name)
                self.write_meta()

    def _vouch(self, segment: Segment, peer: str, peer_scl: int) -> None:
        """A suspect segment that caught up with enough peers holds all that was acknowledged.

        An acknowledged frame is on at least four of six segments, so at least
        three of any five: catching up with three peers recovers it.
        """
        if segment.suspect and not segment.failed and segment.scl >= peer_scl:
            segment.vouchers.add(peer)
            if len(segment.vouchers) >= VOUCHERS_NEEDED:
                segment.suspect = False
                segment.suspect_reason = ""
                segment.needs_repair = ""
                self._clear_node_suspicion()

    def _on_recovery_query(self, message: m.RecoveryQuery, sender: str) -> Outgoing:
        stale = self._stale(message.epoch, sender)
        if stale is not None:
            return stale
        self.writer = sender
        if message.epoch > self.epoch:
            self.epoch = message.epoch
            self._write_meta()  # fencing is durable before anyone relies on it
        return [(sender, self.recovery_state())]

    def recovery_state(self) -> m.RecoveryState:
        """What this node tells a recovering writer (or a read-only open), changing nothing."""
        segments: list[int] = []
        intervals: list[int] = []
        problems: list[str] = [self.suspect_reason] if self.suspect else []
        for pg_id, segment in sorted(self.segments.items()):
            segments += (pg_id, segment.scl, int(segment.suspect or self.suspect))
            if segment.suspect:
                reason = segment.failed or segment.suspect_reason or "damaged at load"
                problems.append(f"PG {pg_id}: {reason}")
            found = segment.intervals_above(self.vdl_hint)
            for i in range(0, len(found), 3):
                intervals += (pg_id, *found[i : i + 3])
        return m.RecoveryState(
            self.name,
            self.epoch,
            self.vdl_hint,
            int(self.suspect),
            flatten_truncations(self.truncations),
            tuple(segments),
            tuple(intervals),
            encode_history(self.history),
            tuple(problems[:RECOVERY_PROBLEMS_MAX]),
        )

    def _on_truncate(self, message: m.Truncate, sender: str) -> Outgoing:
        stale = self._stale(message.epoch, sender)
        if stale is not None:
            return stale
        # The recovered VDL is a VDL some writer reached: the new hint goes to disk
        # in the same metadata write as the truncation.
        self.vdl_hint = max(self.vdl_hint, message.lo)
        if self.disk is not None:
            self._repair_mark = max(self._repair_mark, message.lo)
        self._adopt(message.epoch, (message.epoch, message.lo, message.hi), sender)
        out: Outgoing = [(sender, m.Truncated(self.name, message.epoch))]
        for pg_id, segment in self.segments.items():
            out.append((sender, m.SegmentState(self.name, pg_id, self.epoch, segment.scl)))
        out += self.restart()
        return out

    def restart(self) -> Outgoing:
        """After a restart or a partition heals: learn what peers hold and catch up."""
        pull = m.CatalogPull(self.name)
        return [(peer, pull) for peer in self.peers]

    def background(self) -> Outgoing:
        """Periodic work: pull across holes; compare catalogs with one peer, in turn."""
        out: Outgoing = []
        for segment in self.segments.values():
            if segment.pending:
                out += self._pull_from_peers(segment)
        self._ticks += 1
        if self.peers:
            peer = self.peers[self._ticks % len(self.peers)]
            out.append((peer, m.CatalogPull(self.name)))
        return out

    def close(self) -> None:
        """Syncs what is dirty and records node.meta; a disk error stops the node instead."""
        if self.disk is not None and not self.failed:
            with contextlib.suppress(_DiskFailed):
                with self._stopping_on_disk_error("fsync"):
                    for name in sorted(self.dirty):
                        self.disk.sync(name)
                self.dirty.clear()
                self._write_meta()


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


def encode_history(history: History | None) -> bytes:
    encoded = history.encode_state() if history is not None else []
    return bytes(msgpack.packb(encoded, use_bin_type=True))


def decode_history(data: bytes) -> History | None:
    """The history a message carries, or None when the sender knows none yet."""
    try:
        encoded = msgpack.unpackb(data, raw=False)
    except (ValueError, msgpack.UnpackException) as error:
        raise CorruptionError(f"undecodable history: {error}") from None
    return History.decode_state(encoded) if encoded else None


def failed_nodes(nodes: dict[str, StorageNode]) -> str:
    """The stopped nodes with their reasons (a disk's OS error), for an error's message."""
    failed = [f"{name} ({node.failed})" for name, node in nodes.items() if node.failed]
    return f"; failed nodes: {', '.join(failed)}" if failed else ""
