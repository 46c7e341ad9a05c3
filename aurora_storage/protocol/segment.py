"""One segment: a protection group's replica on one storage node.

A segment owns its chain of frames, its SCL and its page log. It follows the
storage node write path of the SIGMOD 2017 paper, each step a method:

1. :meth:`receive` - verify and queue incoming frames;
2. :meth:`persist` - make queued frames durable (memory here) and ack;
3. :meth:`sort_and_find_holes` - extend the chain from the SCL by backlinks;
4. :meth:`gossip_pull` / :meth:`gossip_push` - fill holes from peers;
5. :meth:`coalesce` - fold records into page images;
6. backup staging - protocol/stage.py builds the objects, backup/staging.py uploads them;
7. :meth:`collect_garbage` - drop frames every peer holds and no reader needs;
8. :meth:`scrub` - re-verify every retained frame's checksum and records.

Invariants: ``scl`` is the last LSN of an unbroken backlink chain from the
PG's first record, and the page log holds exactly the records of that chain
above the coalesced images. Frames beyond a hole wait in ``pending`` and are
bounded by ``PENDING_FRAMES_MAX``. A segment set aside (``failed``) keeps its
chain as it was and takes no frame.
"""

from __future__ import annotations

import bisect
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..config import Geometry
from ..errors import CorruptionError, InvalidArgumentError
from ..format import frames as log
from ..native.pagelog import PageLog, new_page_log
from .page_store import PageStore, StoreMap
from .receive import decode_received

if TYPE_CHECKING:
    from .disk_history import DiskHistory

PENDING_FRAMES_MAX = 4096  # frames held beyond a hole before new ones are refused
COALESCE_RECORD_BYTES = 8 * 1024 * 1024  # hot log size that triggers coalescing
GOSSIP_FRAMES_MAX = 1024  # frames sent in one gossip push


def _range_start(lsn: int, annulled: tuple[int, ...]) -> int | None:
    """The lo of the annulled (lo, hi] range holding ``lsn``, or None."""
    for i in range(0, len(annulled), 2):
        if annulled[i] < lsn <= annulled[i + 1]:
            return annulled[i]
    return None


@dataclass(frozen=True)
class SharedImages:
    """Page images laid end to end in one read-only block that page logs share.

    ``page_nos`` ascend strictly; image ``i`` is ``block[i * page_size:][:page_size]``.
    The block must never change: segments point into it (copy-on-write,
    pagelog.py) for as long as any of them has not rewritten the page.
    """

    page_nos: array[int]
    block: memoryview


@dataclass(slots=True)
class SegmentCounters:
    frames_received: int = 0
    frames_duplicate: int = 0
    frames_corrupt: int = 0
    frames_refused: int = 0
    frames_annulled: int = 0
    gossip_frames_in: int = 0
    gossip_frames_out: int = 0
    records_coalesced: int = 0


@dataclass(slots=True)
class Segment:
    pg_id: int
    geometry: Geometry
    backend: str | None = None
    scl: int = 0
    coalesced_lsn: int = 0
    counters: SegmentCounters = field(default_factory=SegmentCounters)
    # Set in __post_init__ (slots: a node of a sparse volume holds thousands).
    page_lo: int = field(init=False, repr=False, compare=False)
    page_hi: int = field(init=False, repr=False, compare=False)
    _page_log: PageLog = field(init=False, repr=False, compare=False)
    defer_indexing: bool = field(init=False, repr=False, compare=False)
    unindexed: list[memoryview] = field(init=False, repr=False, compare=False)
    chain_frames: list[bytes] = field(init=False, repr=False, compare=False)
    chain_first_lsns: list[int] = field(init=False, repr=False, compare=False)
    chain_last_lsns: list[int] = field(init=False, repr=False, compare=False)
    chain_base_lsn: int = field(init=False, repr=False, compare=False)
    cpl_lsns: list[int] = field(init=False, repr=False, compare=False)
    cpl_times: list[float] = field(init=False, repr=False, compare=False)
    time_floor: float = field(init=False, repr=False, compare=False)
    on_damage: Callable[[str, str], None] | None = field(init=False, repr=False, compare=False)
    on_chain: Callable[[int, list[bytes]], None] | None = field(
        init=False, repr=False, compare=False
    )
    truncations: list[tuple[int, int, int]] = field(init=False, repr=False, compare=False)
    suspect: bool = field(init=False, repr=False, compare=False)
    vouchers: set[str] = field(init=False, repr=False, compare=False)
    suspect_reason: str = field(init=False, repr=False, compare=False)
    needs_repair: str = field(init=False, repr=False, compare=False)
    failed: str = field(init=False, repr=False, compare=False)
    pending: dict[int, tuple[int, int, float | None, bytes]] = field(
        init=False, repr=False, compare=False
    )
    queued: list[tuple[log.Frame, bytes]] = field(init=False, repr=False, compare=False)
    hot_bytes: int = field(init=False, repr=False, compare=False)
    retain_lsn: int = field(init=False, repr=False, compare=False)
    fold_lsn: int = field(init=False, repr=False, compare=False)
    used_at: int = field(init=False, repr=False, compare=False)
    checkpoint_lsn: int = field(init=False, repr=False, compare=False)
    checkpoint_chain_lsn: int = field(init=False, repr=False, compare=False)
    frames_logged: int = field(init=False, repr=False, compare=False)
    changed_pages: set[int] | None = field(init=False, repr=False, compare=False)
    store: PageStore | None = field(init=False, repr=False, compare=False)
    store_map: StoreMap = field(init=False, repr=False, compare=False)
    images_grew: bool = field(init=False, repr=False, compare=False)
    log_lasts: array[int] = field(init=False, repr=False, compare=False)
    log_ends: array[int] = field(init=False, repr=False, compare=False)
    log_bytes: int = field(init=False, repr=False, compare=False)
    log_ordered: bool = field(init=False, repr=False, compare=False)
    disk_history: DiskHistory | None = field(init=False, repr=False, compare=False)
    repaired_lsn: int = field(init=False, repr=False, compare=False)
    repaired_folded: tuple[int, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.page_lo, self.page_hi = self.geometry.page_range(self.pg_id)
        self._page_log = new_page_log(self.geometry.page_size, self.backend)
        # With defer_indexing, the bodies of chained frames wait here until the page
        # log is next used or index_frames runs: a node indexes them while its
        # flush runs (node.py, SyncJob.index). Reading page_log catches up first.
        self.defer_indexing = False
        self.unindexed = []
        # The chain above the gossip floor: frames and their LSN ranges (whether one
        # ends an MTR is in the time index below). chain_base_lsn: the last LSN of
        # the newest frame dropped by garbage collection.
        self.chain_frames = []
        self.chain_first_lsns = []
        self.chain_last_lsns = []
        self.chain_base_lsn = 0
        # The time index of this PG: LSN and writer time of every CPL in the chain,
        # both ascending (the writer's commit clock never goes back).
        self.cpl_lsns = []
        self.cpl_times = []
        # Moments before this may have had commits the index no longer holds: it
        # answers for none of them (-inf while nothing was dropped).
        self.time_floor = float("-inf")
        # Called with (file, problem) when the page store fails a read (the node
        # reports it).
        self.on_damage = None
        # Called with the frames that joined the chain in one step, in order (the
        # node appends them to disk in one write).
        self.on_chain = None
        # Truncations (epoch, lo, hi) in force on this node: (lo, hi] is annulled.
        self.truncations = []
        # True while the segment may have lost acknowledged frames (damage found at
        # restart): it counts toward no quorum until it has caught up with peers.
        self.suspect = False
        self.vouchers = set()
        self.suspect_reason = ""
        # Set while a peer said it collected frames this segment lacks: gossip cannot
        # mend it, so it stops asking (a push that makes progress clears it).
        self.needs_repair = ""
        # Why the segment was set aside for good (set_aside), empty while usable: a
        # file of another PG or volume, a truncation below its chain base.
        self.failed = ""
        # Frames beyond a hole, by backlink: backlink -> (first, last, CPL time if the
        # frame ends an MTR else None, frame).
        self.pending = {}
        self.queued = []
        self.hot_bytes = 0  # record bytes appended since the last coalescing (an upper bound)
        self.retain_lsn = 0  # the writer's last word: records at or below may be folded
        # The writer's fold point: records at or below may be folded by a node that
        # keeps the backtrack window's versions on disk (disk_history.py).
        self.fold_lsn = 0
        self.used_at = 0  # when its node last used it (node.py: the least used sleep first)
        # The point a segment repair rebuilt it from (hydration.py; 0: never): it holds
        # no version, and its time index no commit, from before.
        self.repaired_lsn = 0
        self.repaired_folded: tuple[int, ...] = ()  # the annulled ranges its pages reflect
        self._init_checkpoint_state()

    def _init_checkpoint_state(self) -> None:
        """No checkpoint yet, and no page store: every page lives in the page log."""
        # Disk checkpoint (node_storage.py): frames at or below checkpoint_lsn live as
        # page images in the page store; checkpoint_chain_lsn is the chain's LSN there.
        self.checkpoint_lsn = 0
        self.checkpoint_chain_lsn = 0
        self.frames_logged = 0
        # Pages coalescing changed since the last checkpoint (a superset: pages with
        # records then), or None where nothing checkpoints (a node without a disk).
        self.changed_pages = None
        # The page store holding every page at checkpoint_lsn, once one is in force
        # (node_storage.py): the page log then keeps only some pages (a cache), and
        # reads the others back from it before it uses them (_fault_in).
        self.store = None
        # Which pages the store holds at checkpoint_lsn, and in which slot (StoreMap), from
        # the checkpoint file: a page it holds but cannot find is lost, not absent.
        self.store_map = StoreMap(self.page_lo)
        # Set when images may have grown (a page read back, a coalescing pass): the
        # node then charges the segment's images to its cache (node.py _keep_cache).
        self.images_grew = False
        # The versions between the backtrack window's start and the checkpoint, on
        # disk, while the checkpoint is ahead of the window (disk_history.py).
        self.disk_history = None
        self._init_log_marks()

    def _init_log_marks(self, ordered: bool = True) -> None:
        """Where each frame of the log file ends and its last LSN, in file order, while
        those LSNs ascend (``log_ordered``): a checkpoint then copies the log's tail
        above its cutoff and reads nothing below it (node_storage.py)."""
        self.log_lasts = array("Q")
        self.log_ends = array("Q")
        self.log_bytes = 0  # the log file's size
        self.log_ordered = ordered

    def note_logged(self, last_lsn: int, size: int) -> None:
        """A frame ending at ``last_lsn`` of ``size`` bytes follows in the log file."""
        self.log_bytes += size
        if not self.log_ordered:
            return
        if self.log_lasts and last_lsn <= self.log_lasts[-1]:
            self._init_log_marks(ordered=False)  # a checkpoint reads this log whole
            return
        self.log_lasts.append(last_lsn)
        self.log_ends.append(self.log_bytes)

    def log_tail(self, cutoff: int) -> tuple[int, int]:
        """(offset of the first frame ending above ``cutoff``, the last LSN of the frame
        before it or 0) in an ordered log."""
        index = bisect.bisect_right(self.log_lasts, cutoff)
        if not index:
            return 0, 0
        return self.log_ends[index - 1], self.log_lasts[index - 1]

    def drop_log_head(self, offset: int) -> None:
        """The log file now starts at its byte ``offset`` (a checkpoint cut what was before)."""
        index = bisect.bisect_right(self.log_ends, offset)
        self.log_lasts = self.log_lasts[index:]
        self.log_ends = array("Q", (end - offset for end in self.log_ends[index:]))
        self.log_bytes -= offset

    @property
    def history_floor(self) -> int:
        """The oldest LSN whose versions the segment can still give: its coalesced point,
        or the base of its history on disk."""
        history = self.disk_history
        return self.coalesced_lsn if history is None else min(history.base_lsn, self.coalesced_lsn)

    @property
    def page_log(self) -> PageLog:
        """The PG's page log, every chained frame indexed in it."""
        if self.unindexed:
            self.index_frames()
        return self._page_log

    def index_frames(self) -> None:
        """Appends the chained frames that wait for indexing to the page log, in order."""
        done = 0
        try:
            for body in self.unindexed:
                self._page_log.append(body)
                done += 1
        finally:
            del self.unindexed[:done]

    # restore ----------------------------------------------------------------------------

    def start_at(self, lsn: int, time: float, layers: list[SharedImages]) -> None:
        """Starts this empty segment at ``lsn`` from page images (a restore).

        Afterwards the segment is what loading a checkpoint at ``lsn`` gives:
        every page reads as its image up to ``lsn``, the chain is empty and
        begins there (SCL ``lsn``: the next frame's backlink), nothing older is
        left to coalesce, and the time index holds one commit, ``lsn`` at
        ``time``. The images are shared, not copied; where two layers hold a
        page the earlier one wins.
        """
        if self.scl or self.chain_frames or self.pending or self.queued or self.cpl_lsns:
            raise InvalidArgumentError(
                f"PG {self.pg_id}: only an empty segment can start at LSN {lsn}"
            )
        for layer in layers:
            if layer.page_nos and not (
                self.page_lo <= layer.page_nos[0] and layer.page_nos[-1] < self.page_hi
            ):
                raise InvalidArgumentError(
                    f"PG {self.pg_id}: pages {layer.page_nos[0]}..{layer.page_nos[-1]} "
                    f"are outside its range {self.page_lo}..{self.page_hi - 1}"
                )
            self.page_log.share_images(layer.page_nos, layer.block, lsn, fill=True)
        self.scl = self.chain_base_lsn = self.coalesced_lsn = lsn
        self.checkpoint_lsn = self.checkpoint_chain_lsn = lsn
        self.images_grew = True
        self.cpl_lsns.append(lsn)
        self.cpl_times.append(time)

    # 1. receive and queue ----------------------------------------------------------

    def receive(self, frames: tuple[bytes, ...] | list[bytes]) -> None:
        """Verifies each frame (checksum, then records) and queues the good ones."""
        for data in frames:
            self.counters.frames_received += 1
            try:
                frame = decode_received(data, self.geometry.page_size, self.page_lo, self.page_hi)
            except CorruptionError:
                # A damaged frame is never stored; a peer or the writer resends it.
                self.counters.frames_corrupt += 1
                continue
            if frame.pg_id != self.pg_id:
                self.counters.frames_corrupt += 1
                continue
            if self.truncations and self.annulled_frame(
                frame.epoch, frame.first_lsn, frame.last_lsn
            ):
                self.counters.frames_annulled += 1
                continue
            self.queued.append((frame, data))

    def annulled_frame(self, epoch: int, first_lsn: int, last_lsn: int) -> bool:
        """True for a frame a truncation annulled, or one a fenced writer sent after it."""
        for truncation_epoch, lo, hi in self.truncations:
            if first_lsn <= hi and last_lsn > lo:
                return True
            if epoch < truncation_epoch and last_lsn > lo:
                return True
        return False

    # 2. persist and ack ------------------------------------------------------------

    def persist(self, bounded: bool = True) -> int:
        """Makes queued frames durable and chains them; returns the SCL to ack.

        Frames beyond a hole wait in ``pending``, at most PENDING_FRAMES_MAX of
        them from the network. A node loading its own log passes ``bounded=False``:
        every frame it queued is already in memory (the file was read whole), and
        all of them chain at once below (a log holds them in chain order), so
        none may be refused for want of room (they were acknowledged).
        """
        for frame, data in self.queued:
            if frame.last_lsn <= self.scl or frame.backlink in self.pending:
                self.counters.frames_duplicate += 1
            elif bounded and len(self.pending) >= PENDING_FRAMES_MAX and frame.backlink != self.scl:
                self.counters.frames_refused += 1
            else:
                ends_mtr = frame.summary.last_cpl_lsn == frame.last_lsn
                self.pending[frame.backlink] = (
                    frame.first_lsn,
                    frame.last_lsn,
                    frame.summary.last_cpl_time if ends_mtr else None,
                    data,
                )
        self.queued.clear()
        self.sort_and_find_holes()
        return self.scl

    # 3. sort and find holes --------------------------------------------------------

    def sort_and_find_holes(self) -> bool:
        """Extends the chain from the SCL; True if frames still wait beyond a hole."""
        chained: list[bytes] = []
        while self.scl in self.pending:
            first_lsn, last_lsn, cpl_time, data = self.pending.pop(self.scl)
            if cpl_time is not None:
                self.cpl_lsns.append(last_lsn)
                self.cpl_times.append(cpl_time)
            chained.append(data)
            body = memoryview(data)[log.FRAME_HEADER_SIZE :]
            if self.defer_indexing:
                self.unindexed.append(body)
            else:
                self._page_log.append(body)
            self.hot_bytes += len(body)
            self.chain_frames.append(data)
            self.chain_first_lsns.append(first_lsn)
            self.chain_last_lsns.append(last_lsn)
            self.scl = last_lsn
        if chained and self.on_chain is not None:
            self.on_chain(self.pg_id, chained)  # one disk append for all of them
        if not self.pending:
            return False
        # Frames the chain overtook (possible only after a duplicate) are stale.
        for backlink in [b for b in self.pending if b < self.scl]:
            del self.pending[backlink]
            self.counters.frames_duplicate += 1
        return bool(self.pending)

    # 4. gossip -----------------------------------------------------------------------

    def gossip_pull(self, peer_scl: int) -> tuple[bytes, ...]:
        """Frames a peer at ``peer_scl`` lacks, oldest first, at most GOSSIP_FRAMES_MAX."""
        if peer_scl >= self.scl:
            return ()
        start = bisect.bisect_right(self.chain_last_lsns, peer_scl)
        frames = tuple(self.chain_frames[start : start + GOSSIP_FRAMES_MAX])
        self.counters.gossip_frames_out += len(frames)
        return frames

    def gossip_push(self, frames: tuple[bytes, ...]) -> int:
        """Takes frames from a peer; returns the new SCL."""
        self.counters.gossip_frames_in += len(frames)
        self.receive(frames)
        return self.persist()

    # 5. coalesce ---------------------------------------------------------------------

    def coalesce(self, upto_lsn: int, annulled: tuple[int, ...] = ()) -> int:
        """Folds records <= upto_lsn into page images; the caller vouches no reader needs older."""
        upto_lsn = min(upto_lsn, self.scl)
        if upto_lsn <= self.coalesced_lsn:
            return 0
        with_records = self.page_log.page_nos(with_records=True)
        if not self._fault_in(with_records):
            return 0  # set aside: its store lost a page, nothing more is folded
        if self.changed_pages is not None:
            self.changed_pages.update(with_records)
        self.images_grew = True
        folded = self.page_log.coalesce(
            upto_lsn, list(zip(annulled[::2], annulled[1::2], strict=True))
        )
        self.coalesced_lsn = upto_lsn
        self.counters.records_coalesced += folded
        self.hot_bytes = self.page_log.stats().record_bytes
        return folded

    def maintain(
        self, retain_lsn: int, floor_lsn: int, annulled: tuple[int, ...] = (), fold_lsn: int = -1
    ) -> None:
        """Steps 5 and 7 when due: coalesce a large hot log, drop frames every peer holds."""
        self.retain_lsn = retain_lsn
        self.fold_lsn = max(fold_lsn, retain_lsn)
        if self.hot_bytes > COALESCE_RECORD_BYTES:
            self.coalesce(retain_lsn, annulled)
        # The time index goes with the frames: the backup stages both.
        forget = min(self.history_floor, floor_lsn)
        if len(self.cpl_lsns) > 1 and self.cpl_lsns[1] <= forget:  # else nothing to trim
            self.forget_commits_before(forget)
        if self.chain_last_lsns and self.chain_last_lsns[0] <= floor_lsn:
            self.collect_garbage(floor_lsn)

    # 7. garbage collection ---------------------------------------------------------

    def collect_garbage(self, floor_lsn: int) -> int:
        """Drops chain frames ending at or below ``floor_lsn`` (every peer holds them)."""
        cut = bisect.bisect_right(self.chain_last_lsns, floor_lsn)
        if cut:
            self.chain_base_lsn = self.chain_last_lsns[cut - 1]
            for column in self._chain_columns():
                del column[:cut]
        return cut

    def _chain_columns(self) -> tuple[list[Any], ...]:
        return (self.chain_frames, self.chain_first_lsns, self.chain_last_lsns)

    # truncation (crash recovery, backtrack) --------------------------------------------

    def truncate(self, epoch: int, lo: int, hi: int) -> None:
        """Annuls (lo, hi]: the chain rewinds to its last frame at or below ``lo``.

        The annulled frames stay on disk (a node skips them when it reloads) and
        in the page log (reads skip them through the annulled ranges). Frames of
        the chain above ``hi`` were written after the truncation (no writer
        allocates into a range it annulled) and stay: only a node that loaded
        them before it knew the truncation (a node.meta older than its logs) has
        them. A chain base inside (lo, hi] means the segment collected or
        checkpointed frames the truncation annuls, which a node that took the
        truncation in time never does: the segment is set aside
        (:meth:`set_aside`), its chain untouched.
        """
        if (epoch, lo, hi) not in self.truncations:
            self.truncations.append((epoch, lo, hi))
        keep = bisect.bisect_right(self.chain_last_lsns, lo)
        if not keep and lo < self.chain_base_lsn <= hi:
            self.set_aside(
                f"truncation ({lo}, {hi}] reaches below its chain base {self.chain_base_lsn}: "
                "its node.meta is older than its files"
            )
            return
        if keep < len(self.chain_last_lsns) and self.chain_first_lsns[keep] <= hi:
            for column in self._chain_columns():
                del column[keep:]
        start = bisect.bisect_right(self.cpl_lsns, lo)
        end = bisect.bisect_right(self.cpl_lsns, hi)
        del self.cpl_lsns[start:end]
        del self.cpl_times[start:end]
        self.scl = self.chain_last_lsns[-1] if self.chain_last_lsns else self.chain_base_lsn
        for backlink in [b for b, entry in self.pending.items() if entry[1] <= hi]:
            del self.pending[backlink]
        self.sort_and_find_holes()

    def set_aside(self, reason: str) -> None:
        """The segment cannot vouch for its data and gossip cannot mend it: it takes no
        more frames, serves nothing and counts toward no quorum until repaired."""
        if not self.failed:
            self.failed = reason
        self.suspect = True
        self.suspect_reason = self.suspect_reason or reason
        self.pending.clear()
        self.queued.clear()

    def last_commit_at(self, moment: float, annulled: tuple[int, ...]) -> tuple[int, float]:
        """(CPL, time) of this PG's last commit at or before ``moment`` outside ``annulled``.

        Bisection on the time index, then one jump per annulled range in the way.
        (0, 0.0) if there is none.
        """
        index = bisect.bisect_right(self.cpl_times, moment)
        while index > 0:
            lsn = self.cpl_lsns[index - 1]
            lo = _range_start(lsn, annulled)
            if lo is None:
                return lsn, self.cpl_times[index - 1]
            index = bisect.bisect_right(self.cpl_lsns, lo, 0, index - 1)
        return 0, 0.0

    def forget_commits_before(self, lsn: int) -> None:
        """Trims the time index below ``lsn``, keeping the last entry at or below it."""
        cut = bisect.bisect_right(self.cpl_lsns, lsn) - 1
        if cut > 0:
            del self.cpl_lsns[:cut]
            del self.cpl_times[:cut]
            self.time_floor = self.cpl_times[0]

    def intervals_above(self, lsn: int) -> tuple[int, ...]:
        """Flat (first, last, last CPL) triples: runs of chain frames ending above ``lsn``.

        A run is a maximal sequence of frames with consecutive LSNs (other PGs'
        LSNs make the gaps); its last CPL is the highest MTR end in it, 0 if none.
        A segment whose PG takes every LSN reports one run, however long its log.
        """
        start = bisect.bisect_right(self.chain_last_lsns, lsn)
        lasts = self.chain_last_lsns
        runs: list[int] = []
        run_first = run_last = -1
        for first, last in zip(self.chain_first_lsns[start:], lasts[start:], strict=True):
            if first != run_last + 1:
                if run_last >= 0:
                    runs += (run_first, run_last)
                run_first = first
            run_last = last
        if run_last >= 0:
            runs += (run_first, run_last)
        cpls = self.cpl_lsns
        flat: list[int] = []
        for i in range(0, len(runs), 2):
            first, last = runs[i], runs[i + 1]
            index = bisect.bisect_right(cpls, last) - 1
            flat += (first, last, cpls[index] if index >= 0 and cpls[index] >= first else 0)
        return tuple(flat)

    # 8. scrub ----------------------------------------------------------------------------

    def scrub(self) -> list[str]:
        """Re-verifies every retained frame; returns a line per problem."""
        problems = []
        for data in self.chain_frames:
            try:
                log.decode_frame(data, self.geometry.page_size, self.page_lo, self.page_hi)
            except CorruptionError as error:
                problems.append(f"pg {self.pg_id}: {error}")
        return problems

    # reads -----------------------------------------------------------------------------

    def read(self, page_no: int, read_point: int, annulled: tuple[int, ...]) -> bytes:
        """The page as of ``read_point``; the caller checked ``read_point <= scl``."""
        if not self._fault_in((page_no,)):
            raise CorruptionError(f"PG {self.pg_id} set aside: {self.failed}")
        flat = array("Q", annulled) if annulled else ()
        image, _page_lsn = self.page_log.materialize(page_no, read_point, flat)
        return image

    def _fault_in(self, page_nos: Sequence[int]) -> bool:
        """Reads back from the page store, into the page log, each page of ``page_nos``
        it holds no image of: one pread of its entries and one of its image. False
        (the segment set aside) if a page fails its checksum: never a wrong image."""
        store = self.store
        if store is None:
            return True
        try:
            for page_no in self.page_log.missing(page_nos):
                slot = self.store_map.slot(page_no)
                if slot is None:
                    continue  # never written by a checkpoint: no I/O
                page_lsn, image = store.read(page_no, self.checkpoint_lsn, slot)
                self.page_log.set_image(page_no, image, page_lsn)
                self.images_grew = True
        except (CorruptionError, OSError) as error:  # a store file gone or unreadable
            self.set_aside(f"its page store lost a page: {error}")
            if self.on_damage is not None:
                self.on_damage(store.image_file, str(error))
            return False
        return True

    def page_nos(self) -> list[int]:
        """Every page the segment holds, in memory or in its page store, ascending."""
        in_memory = self.page_log.page_nos()
        if self.store is None:
            return in_memory
        return sorted({*in_memory, *self.store_map.page_nos()})

    def images_at(
        self, lsn: int, annulled: tuple[int, ...]
    ) -> tuple[list[int], list[int], bytes | bytearray]:
        """(page numbers, LSN of each image's last change, the images end to end) of
        every page that changed at or below ``lsn``, outside ``annulled``:
        checkpoints and backups. One C call materializes every page."""
        return self.images_of(self.page_nos(), lsn, annulled)

    def images_of(
        self, page_nos: list[int], lsn: int, annulled: tuple[int, ...]
    ) -> tuple[list[int], list[int], bytes | bytearray]:
        """:meth:`images_at` for the ascending ``page_nos`` only (a checkpoint's changed
        pages): those without a version at or below ``lsn`` are left out."""
        size = self.geometry.page_size
        if not self._fault_in(page_nos):
            raise CorruptionError(f"PG {self.pg_id} set aside: {self.failed}")
        images, image_lsns = self.page_log.materialize_many(page_nos, lsn, array("Q", annulled))
        assert isinstance(images, bytearray)
        if all(image_lsns):
            return page_nos, image_lsns.tolist(), images
        # Pages whose every record is newer than lsn or annulled did not change.
        kept = [slot for slot, page_lsn in enumerate(image_lsns) if page_lsn]
        view = memoryview(images)
        return (
            [page_nos[slot] for slot in kept],
            [image_lsns[slot] for slot in kept],
            b"".join(view[slot * size : (slot + 1) * size] for slot in kept),
        )

    def bytes_used(self) -> int:
        """Memory this replica alone holds: records and private page images."""
        return self.page_log.stats().owned_bytes

    def shared_bytes(self) -> int:
        """Bytes of the page images this replica borrows from shared blocks."""
        return self.page_log.stats().shared_image_bytes
