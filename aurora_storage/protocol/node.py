"""A storage node: its name and AZ, one segment per protection group, its disk, its epoch.

A node is a state machine: :meth:`StorageNode.handle` takes one message and
returns the messages to send, as (destination, message) pairs. It never
sleeps, reads a clock or opens a socket; the transport delivers, and runs the
fsyncs the node asks for (:meth:`begin_sync`); the writer's staging uploads
the backup objects it builds (:meth:`take_upload`). Segments are created when
their PG's first frame arrives (or a peer's catalog names it), so an
unwritten PG costs nothing.

Its disk (log files, checkpoints, node.meta, loading, fsyncs) is the
:class:`NodeStorage` half, in node_storage.py.

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
import itertools
from collections import OrderedDict
from collections.abc import Callable

from ..config import Geometry
from ..errors import AuroraStorageError, CorruptionError, VersionGoneError
from . import messages as m
from .disk_history import clip, first_difference
from .history import (
    History,
    decode_history,
    encode_history,
    flatten_truncations,
    inside,
    merge_ranges,
    truncation_ranges,
    truncation_triples,
)
from .hydration import Hydration, Repair
from .node_storage import (
    FINDING_NEEDS_REPAIR,
    LoadFinding,
    LoadReport,
    Outgoing,
    _DiskFailed,
    log_name,
)
from .placement import Membership, Placement
from .ports import Disk
from .segment import COALESCE_RECORD_BYTES, Segment, SharedImages
from .stage import Upload, build_log_object, build_pages_object

WRITER = "writer"
DIRTY_BYTES_MIN = 1024 * 1024  # a checkpoint never waits for less changed than this
HOT_BYTES_MAX = COALESCE_RECORD_BYTES  # unfolded record bytes a node on disk keeps
FLOOR_PULL_MAX = 64  # PGs a node asks the floors of at once (as the writer answers)
SEGMENTS_AWAKE_MAX = 1024  # segments a node on disk keeps in memory: quiet clean ones sleep
CHECKPOINTS_PER_TRIM = 2  # checkpoints a node takes for its cache while handling one message
TRIM_LOOKS = 256  # least recently used segments a trim looks at for a checkpoint to take
META_EVERY_FRAMES = 512  # the VDL hint is persisted at least this often (bounds recovery's work)
CHECKPOINT_EVERY_FRAMES = 4096  # frames logged between attempts to trim a segment's log
GONE = "version gone"  # PageImage.problem when the read point was coalesced away
VOUCHERS_NEEDED = 3  # peers a suspect segment must catch up with (a read quorum's worth)
UPLOADS_HELD_MAX = 64  # built backup objects a node holds for the runtime to take
RECOVERY_PROBLEMS_MAX = 64  # reasons a recovery answer carries (why segments cannot vote)


class StorageNode(Hydration):
    """A storage node (module docstring): its messages here, its disk in node_storage.py."""

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
        cache_bytes: int = 0,
        placement: Placement | None = None,
    ) -> None:
        self.name = name
        # Which PGs this node holds a segment of, and each one's peers: the fleet
        # ``peers`` names with the default placement, unless one is given.
        self.placement = placement if placement is not None else Placement(peers)
        # Bytes of page images this node keeps in memory once its pages are in page
        # stores (0: no bound): its share of the volume's cache (_keep_cache).
        self.cache_bytes = cache_bytes
        self._resident: OrderedDict[int, int] = OrderedDict()  # PG -> image bytes, LRU first
        self._resident_total = 0
        # Segments that may hold unfolded records, least recently written first, and
        # the bytes appended since the last count (_fold_quiet).
        self._hot_order: OrderedDict[int, None] = OrderedDict()
        # Segments asleep (_sleep): everything they hold is on disk, memory keeps
        # (SCL, history floor, last commit, its time) until one is used (_awake): the
        # floor is its checkpoint LSN, or its history's base when it keeps one on disk.
        self.dormant: dict[int, tuple[int, int, int, float]] = {}
        self._uses = 0  # segment uses so far: each awake segment's used_at is one
        self._awake_after_sleep = 0  # segments still awake after the last sleep pass
        self._hot_estimate = 0
        self._hot_check_at = HOT_BYTES_MAX
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
        # Segment repairs (hydration.py): in progress here, peers asked in vain, and
        # the page lists this node serves to repairing peers.
        self._repairs: dict[int, Repair] = {}
        self.on_repair_pages: Callable[[int], None] | None = None
        self._tried: dict[int, set[str]] = {}
        self._sources: dict[tuple[int, int], list[int]] = {}
        self._frames_since_meta = 0
        self._meta_hint = -1
        self._annulled: tuple[int, ...] = ()
        self._annulled_key: tuple[tuple[int, int], int, int] = ((-1, 0), -2, 0)
        self._history_pulled: tuple[int, int] = (0, -1)  # the writer history key last asked for
        self._vouch_asked: dict[int, int] = {}  # PG -> SCL at which peers' catalogs were asked

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
        """The PG's segment, woken if asleep, made on first use."""
        segment = self.segments.get(pg_id)
        if segment is None and pg_id in self.dormant:
            segment = self._wake(pg_id)
        if segment is None:
            segment = Segment(pg_id, self.geometry, self.backend)
            segment.truncations = list(self.truncations)
            segment.suspect = self.suspect
            if self.disk is not None:
                segment.on_chain = self._append_to_disk
                # Frames are indexed while the flush that makes them durable runs.
                segment.defer_indexing = self.durability == "fsync"
                segment.changed_pages = set()  # what the next checkpoint writes
                segment.on_damage = self._store_damaged
            self.segments[pg_id] = segment
        self._uses += 1
        segment.used_at = self._uses
        return segment

    def awake(self, pg_id: int) -> Segment | None:
        """The PG's segment if this node has one, woken if asleep; None if it has none."""
        if pg_id in self.segments or pg_id in self.dormant:
            return self.segment(pg_id)
        return None

    def segment_ids(self) -> list[int]:
        """Every PG this node holds a segment of, awake or asleep, ascending."""
        return sorted({*self.segments, *self.dormant})

    # --- sleeping segments -------------------------------------------------------------

    def _may_sleep(self, segment: Segment) -> bool:
        """True if everything the segment holds is on disk, as loading finds it: its
        pages in its page store at its checkpoint, its log empty, nothing unfolded,
        pending, changed, suspect or waiting for a sync."""
        pg_id = segment.pg_id
        return bool(
            segment.store is not None
            and segment.checkpoint_lsn
            and segment.coalesced_lsn == segment.checkpoint_lsn
            and segment.scl == segment.checkpoint_chain_lsn
            and segment.log_ordered
            and not segment.log_bytes
            and not segment.hot_bytes
            and not segment.changed_pages
            and not segment.chain_frames
            and not segment.pending
            and not segment.queued
            and not segment.unindexed
            and len(segment.cpl_lsns) <= 1
            and not (segment.failed or segment.suspect or segment.needs_repair)
            and pg_id not in self._logged_pending
            and log_name(pg_id) not in self.dirty
            and not segment.page_log.stats().records
        )

    def _awake_max(self) -> int:
        return SEGMENTS_AWAKE_MAX

    def _sleep_quiet(self) -> None:
        """Puts the least recently used quiet segments to sleep once more than
        SEGMENTS_AWAKE_MAX are awake, down to three quarters of it: a volume that
        touched thousands of PGs keeps a few numbers for each, not its segment.
        Runs between messages and after reads, when no handler holds a segment. A
        pass that leaves too many awake (they hold unfolded records) is not repeated
        before a quarter more are awake: the passes cost a constant per segment."""
        awake = len(self.segments)
        bound = max(SEGMENTS_AWAKE_MAX, self._awake_after_sleep)
        if (
            awake <= bound + bound // 4
            or self.disk is None
            or self.failed
            or self.suspect
            or not self._writes_logs
        ):
            return
        quiet = sorted(
            (segment for segment in self.segments.values() if self._may_sleep(segment)),
            key=lambda segment: segment.used_at,
        )
        for segment in quiet[: awake - SEGMENTS_AWAKE_MAX * 3 // 4]:
            self._sleep(segment)
        self._awake_after_sleep = len(self.segments)

    def _sleep(self, segment: Segment) -> None:
        """Drops the segment from memory, keeping what catalogs, recovery and time
        queries ask of it; its clean page images go (its page store holds them)."""
        pg_id = segment.pg_id
        cpl = segment.cpl_lsns[0] if segment.cpl_lsns else 0
        cpl_time = segment.cpl_times[0] if segment.cpl_times else 0.0
        self.dormant[pg_id] = (segment.scl, segment.history_floor, cpl, cpl_time)
        del self.segments[pg_id]
        self._resident_total -= self._resident.pop(pg_id, 0)
        self._hot_order.pop(pg_id, None)
        segment.page_log.close()

    def _wake(self, pg_id: int) -> Segment:
        """Loads a sleeping segment back from its checkpoint (and empty log), as an open
        does: damage found now is reported and handled as at load."""
        del self.dormant[pg_id]
        segment = self.segment(pg_id)  # a new one: no longer asleep
        stale: list[str] = []
        # A disk that cannot read its own files stops the node, as a failed write
        # does: _DiskFailed unwinds to the public method (handle, serve_read).
        with self._stopping_on_disk_error("segment load"):
            self._load_checkpoint(segment, self.load_report, stale)
            self._load_segment(segment, self.load_report, stale)
        self.refold(segment)
        return segment

    def _dormant_time_answer(
        self, moment: float, annulled: tuple[int, ...]
    ) -> tuple[int, float, float, int]:
        """(last commit at or before ``moment``, its time, the latest time floor, the
        highest folded LSN) over the sleeping segments, as Segment answers them."""
        cpl, cpl_time, floor_time, folded = 0, 0.0, float("-inf"), 0
        for _scl, floor_lsn, last, last_time in self.dormant.values():
            if last and last_time <= moment and last > cpl and not inside(last, annulled):
                cpl, cpl_time = last, last_time
            if last and last <= floor_lsn:  # folded: loading makes its time the floor
                floor_time = max(floor_time, last_time)
            folded = max(folded, floor_lsn)
        return cpl, cpl_time, floor_time, folded

    def start_segment(
        self, pg_id: int, lsn: int, time: float, layers: list[SharedImages]
    ) -> Segment:
        """A restore: the PG's segment starts at ``lsn`` from shared page images, in memory
        (Segment.start_at); :meth:`persist_start` then makes that durable."""
        segment = self.segment(pg_id)
        segment.start_at(lsn, time, layers)
        return segment

    # --- messages ---------------------------------------------------------------------

    def handle(self, message: m.Message, sender: str) -> Outgoing:
        if self.failed:
            return []
        try:
            out = self._dispatch(message, sender)
            self._sleep_quiet()
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
        if isinstance(message, m.HydratePull):
            return self._on_hydrate_pull(message)
        if isinstance(message, m.HydratePush):
            return self._on_hydrate_push(message)
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
        if isinstance(message, m.Maintain):
            return self._on_maintain(message, sender)
        if isinstance(message, m.SetMembers):
            return self._on_set_members(message, sender)
        if isinstance(message, m.Tick):
            return self.background()
        return []

    # --- membership changes (placement.py) ------------------------------------------------

    def _on_set_members(self, message: m.SetMembers, sender: str) -> Outgoing:
        """Keeps the PG's membership if its epoch is above the one held, durably before
        the ack. A node the change adds starts the PG's segment by a repair from
        ``source`` (hydration.py); a node it drops lets its segment go."""
        stale = self._stale(message.epoch, sender)
        if stale is not None:
            return stale
        pg_id = message.pg_id
        try:
            incoming = Membership(
                (int(message.member_epoch[0]), int(message.member_epoch[1])),
                tuple(tuple(str(name) for name in members) for members in message.member_sets),
            )
        except (IndexError, TypeError, ValueError):
            return []
        out: Outgoing = []
        held_before = self.holds(pg_id)
        if self.placement.set_membership(pg_id, incoming):
            self._know_peers(incoming)
            self._write_meta()  # durable before the ack
            if self.holds(pg_id) and not held_before:
                out += self._join(pg_id, message.source)
            elif held_before and not self.holds(pg_id):
                self.drop_segment(pg_id)
        epoch = self.placement.membership(pg_id).epoch
        out.append((sender, m.MembersSet(self.name, self.epoch, pg_id, epoch)))
        segment = self.segments.get(pg_id)
        if segment is not None and not (segment.needs_repair or segment.failed):
            # What the writer's readiness check of a change needs (an earlier report
            # may have been lost).
            out.append((sender, m.SegmentState(self.name, pg_id, self.epoch, segment.scl)))
        return out

    def drop_segment(self, pg_id: int) -> None:
        """Lets the PG's segment go (a membership change moved it to another node): out
        of memory, its repair stopped, its files removed. A disk error stops the node."""
        self.segments.pop(pg_id, None)
        self.dormant.pop(pg_id, None)
        self._repairs.pop(pg_id, None)
        self._tried.pop(pg_id, None)
        self._hot_order.pop(pg_id, None)
        self._resident_total -= self._resident.pop(pg_id, 0)
        self.unindexed.discard(pg_id)
        self._logged_pending.pop(pg_id, None)
        with contextlib.suppress(_DiskFailed):
            self._remove_segment_files(pg_id)

    def _know_peers(self, membership: Membership) -> None:
        """Nodes a repair added join the peers this node compares catalogs with."""
        for members in membership.member_sets:
            for name in members:
                if name != self.name and name not in self.peers:
                    self.peers.append(name)

    def _join(self, pg_id: int, source: str) -> Outgoing:
        """A new member of the PG: its segment starts empty and votes in nothing until it
        has caught up with three peers. It asks ``source`` for the PG's frames by
        gossip; a peer that collected some of them answers so, and a segment repair
        copies that peer's pages instead (hydration.py)."""
        if pg_id in self.segments or pg_id in self.dormant:
            self.drop_segment(pg_id)  # what an earlier membership left here is stale
        segment = self.segment(pg_id)
        segment.suspect = True
        segment.suspect_reason = f"a new member of PG {pg_id}: catching up with its peers"
        peers = self._peers_of(pg_id)
        if source in peers:
            return [(source, m.GossipPull(self.name, pg_id, 0))]
        return self._pull_from_peers(segment)

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
            previous = self.annulled()
            self.history = incoming
            self._write_meta()
            repairs = self._refold_all(previous)
        else:
            repairs = []
        history = self.history
        reply = m.HistorySet(
            self.name, self.epoch, history.current.version, history.key[0], history.key[1]
        )
        return [(sender, reply), *repairs]

    def _on_stage(self, message: m.Stage, sender: str) -> Outgoing:
        """Step 6: build this PG's frames (or pages) into a backup object, once per PG.

        The node does no store I/O: it holds the object (:meth:`take_upload`)
        for the runtime, which uploads it outside any lock, and says what it
        built. At most UPLOADS_HELD_MAX objects wait; an older one nobody took
        (its request was answered by another node, or its reply was lost) goes.
        """
        segment = self.awake(message.pg_id)
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
        for pg_id in self.segment_ids():
            asleep = self.dormant.get(pg_id)
            if asleep is not None:
                if asleep[2] and asleep[3] >= since:
                    cpls.append(asleep[2])
                    times.append(asleep[3])
                record_bytes += (pg_id, 0)
                continue
            segment = self.segments[pg_id]
            start = bisect.bisect_left(segment.cpl_times, since)
            cpls += segment.cpl_lsns[start:]
            times += segment.cpl_times[start:]
            history = segment.disk_history
            on_disk = sum(history.sizes) if history is not None else 0  # the window's, on disk
            record_bytes += (pg_id, segment.page_log.stats().record_bytes + on_disk)
        trusted = self._times_trusted()
        return m.WindowAnswer(
            request_id, self.name, tuple(cpls), tuple(times), tuple(record_bytes), int(trusted)
        )

    def _times_trusted(self) -> bool:
        """True if the node's time indexes name every commit it holds: none of its
        segments is suspect or lost the history files its index is rebuilt from."""
        return not self.suspect and not any(
            s.suspect
            or (s.disk_history is not None and s.disk_history.damaged)
            or s.repaired_lsn > s.retain_lsn  # repaired inside the backtrack window
            for s in self.segments.values()
        )

    def _on_time_query(self, message: m.TimeQuery, sender: str) -> Outgoing:
        cpl, moment, floor_time, folded_lsn = self._dormant_time_answer(
            message.moment, message.annulled
        )
        for segment in self.segments.values():
            found, found_time = segment.last_commit_at(message.moment, message.annulled)
            if found > cpl:
                cpl, moment = found, found_time
            floor_time = max(floor_time, segment.time_floor)
            folded_lsn = max(folded_lsn, segment.history_floor)
        trusted = self._times_trusted()
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
        changed, previous = False, self.annulled()
        for truncation in truncation_triples(truncations):
            if truncation not in self.truncations:
                self.truncations.append(truncation)
                for pg_id in [p for p, asleep in self.dormant.items() if asleep[0] > truncation[1]]:
                    self._wake(pg_id)  # it holds frames the truncation reaches
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
            # A truncation (crash recovery) starts at VDL, above every repair point: no
            # segment a repair built needs one again.
            self._refold_all(previous)

    def _refold_all(self, previous: tuple[int, ...]) -> Outgoing:
        """The annulled ranges changed from ``previous`` (and node.meta says so):
        segments whose checkpointed images are ahead of the change rebuild those
        images (refold); sleeping ones whose chain reaches past it wake to. A
        segment a repair built from images past the change has no history to
        rebuild them from: it is repaired again (the pulls that start it)."""
        now = self.annulled()
        if now == previous:
            return []
        lo = first_difference(now, previous)
        for pg_id in [p for p, asleep in self.dormant.items() if asleep[0] > lo]:
            self._wake(pg_id)  # refolds as it loads
        out: Outgoing = []
        for segment in list(self.segments.values()):
            if segment.disk_history is not None:
                self.refold(segment)
            elif segment.repaired_lsn > lo and not segment.failed and self._peers_of(segment.pg_id):
                segment.needs_repair = (
                    f"its pages, repaired at LSN {segment.repaired_lsn}, predate a change "
                    f"of the annulled ranges at LSN {lo}: it is repaired again"
                )
                segment.suspect = True
                segment.suspect_reason = segment.needs_repair
                segment.vouchers.clear()
                out += self._start_repair(segment.pg_id, self._peers_of(segment.pg_id)[0])
        return out

    def _on_write(self, message: m.WriteFrames, sender: str) -> Outgoing:
        stale = self._stale(message.epoch, sender)
        if stale is not None:
            return stale
        if message.epoch > self.epoch or len(message.truncations) != 3 * len(self.truncations):
            self._adopt(message.epoch, message.truncations, sender)
        self.writer = sender
        if not self.holds(message.pg_id):
            # A writer that missed a membership change: frames of a PG this node is no
            # member of are refused, never acknowledged (placement.py).
            self.rejected_requests += 1
            return []
        segment = self.segment(message.pg_id)
        if segment.failed:
            return []  # set aside: it takes nothing and acknowledges nothing
        segment.receive(message.frames)
        scl = segment.persist()
        out: Outgoing = []
        if self._history_agrees(message.epoch, message.history_sequence, sender, out):
            segment.maintain(
                message.retain_lsn, message.floor_lsn, self.annulled(), message.fold_lsn
            )
            if segment.disk_history is not None:
                self.drop_history(segment)
        if self.disk is not None and (
            segment.frames_logged >= CHECKPOINT_EVERY_FRAMES
            or self._dirty_bytes(segment) > self._dirty_bytes_max()
        ):
            self.checkpoint(segment)
        self._keep_cache(segment)
        self._raise_vdl_hint(max(message.retain_lsn, message.fold_lsn))
        if self._hot_estimate > self._hot_check_at:
            out += self._fold_quiet()
        out.append((sender, m.SegmentState(self.name, message.pg_id, self.epoch, scl)))
        if segment.pending:
            out += self._pull_from_peers(segment)
        return out

    def _history_agrees(self, epoch: int, sequence: int, sender: str, out: Outgoing) -> bool:
        """True if the writer's history is this node's (or the writer did not say): only
        then may its floors fold records. Else the node asks for the writer's history
        (once per key) in ``out``: coalescing with another history could fold away
        records the writer's shows."""
        if sequence < 0 or (self.history is not None and self.history.key == (epoch, sequence)):
            return True
        if self._history_pulled != (epoch, sequence):
            self._history_pulled = (epoch, sequence)
            out.append((sender, m.HistoryPull(self.name)))
        return False

    def _raise_vdl_hint(self, retain_lsn: int) -> None:
        """A retain point the writer sent is durable: recovery never starts below it."""
        if retain_lsn > self.vdl_hint:
            self.vdl_hint = retain_lsn
            if self._frames_since_meta >= META_EVERY_FRAMES:
                self._write_meta()

    def _on_maintain(self, message: m.Maintain, sender: str) -> Outgoing:
        """Floors of PGs that had no write since their acks (Maintain): each segment
        folds and collects as a write would have let it; then quiet segments fold and
        checkpoint if the node holds too many hot records (:meth:`_fold_quiet`)."""
        stale = self._stale(message.epoch, sender)
        if stale is not None:
            return stale
        out: Outgoing = []
        if message.epoch != self.epoch or not self._history_agrees(
            message.epoch, message.history_sequence, sender, out
        ):
            return out  # advice only: a write of this epoch brings the floors again
        annulled, flat, folds, retained = self.annulled(), message.floors, message.folds, 0
        for index in range(0, len(flat) - 2, 3):
            fold = folds[index // 3] if index // 3 < len(folds) else -1
            segment = self.segments.get(flat[index])
            if segment is not None and not segment.failed:
                segment.maintain(flat[index + 1], flat[index + 2], annulled, fold)
                retained = max(retained, flat[index + 1], fold)
                if segment.disk_history is not None:
                    self.drop_history(segment)
        self._raise_vdl_hint(retained)
        if self._hot_estimate > self._hot_check_at:
            out += self._fold_quiet()
        return out

    def _fold_quiet(self) -> Outgoing:
        """Keeps the records a node holds unfolded within HOT_BYTES_MAX: the least
        recently written segments fold theirs and checkpoint (their pages go to the
        page store, the cache may forget them), as far as their floors let them.

        Only a segment whose checkpoint can follow is folded (every peer holds its
        chain, and the writer's retain point covers it): folding a 100-byte record
        into a page that must stay in memory would cost more than the record.
        Called when the bytes appended since the last pass pass a threshold: a
        pass that can fold nothing (a node down holds every floor) is not repeated
        for every write. Returns a FloorPull to the writer for the segments whose floors were too
        old to fold them (a Maintain lost, or floors held back when it was sent)."""
        if self.disk is None or self.failed or not self._writes_logs:
            return []
        order, total = self._hot_order, 0
        stale: list[int] = []  # PGs whose floors are too old to fold them
        for pg_id in list(order):
            segment = self.segments.get(pg_id)
            if segment is None or not segment.hot_bytes:
                del order[pg_id]
            else:
                total += segment.hot_bytes
        excess = total - HOT_BYTES_MAX // 2
        annulled = self.annulled()
        for pg_id in list(order):
            if excess <= 0:
                break
            segment = self.segments[pg_id]
            upto = min(self._fold_point(segment), segment.scl)
            if segment.failed or segment.suspect:
                continue
            if upto <= segment.coalesced_lsn or upto > min(segment.chain_base_lsn, self.vdl_hint):
                if len(stale) < FLOOR_PULL_MAX:
                    stale.append(pg_id)
                continue
            before = segment.hot_bytes
            segment.coalesce(upto, annulled)
            self.checkpoint(segment)
            self._keep_cache(segment)
            excess -= before - segment.hot_bytes
            total -= before - segment.hot_bytes
            if not segment.hot_bytes:
                del order[pg_id]
        self._hot_estimate = total
        self._hot_check_at = max(HOT_BYTES_MAX, total + HOT_BYTES_MAX // 2)
        if not stale or excess <= 0:
            return []
        return [(self.writer, m.FloorPull(self.name, tuple(stale)))]

    @staticmethod
    def _folded_as(segment: Segment, annulled: tuple[int, ...]) -> bool:
        """True unless the segment's images were folded past the start of a range that
        ``annulled`` and the ranges they were folded with disagree on (images a repair
        or a fold ahead of the window built)."""
        if segment.repaired_lsn and clip(annulled, segment.repaired_lsn) != (
            segment.repaired_folded
        ):
            return False
        history = segment.disk_history
        return history is None or clip(annulled, segment.checkpoint_lsn) == history.folded

    @staticmethod
    def _fold_point(segment: Segment) -> int:
        """How far a quiet pass folds the segment: the writer's fold point when the
        versions below it can stay on disk (disk_history.py: its pages at its last
        checkpoint are all known), else its retain point."""
        if (
            segment.disk_history is not None
            or segment.checkpoint_lsn == 0
            or (segment.store is not None and segment.changed_pages is not None)
        ):
            return segment.fold_lsn
        return segment.retain_lsn

    def serve_read(
        self,
        pg_id: int,
        page_no: int,
        read_point: int,
        required_scl: int,
        annulled: tuple[int, ...],
    ) -> tuple[bytes, str, int]:
        """(image, problem, SCL) for a read: the image if this segment can serve it."""
        if self.failed:
            return b"", f"node stopped: {self.failed}", 0
        try:
            segment = self.awake(pg_id)
        except _DiskFailed:
            return b"", f"node stopped: {self.failed}", 0
        if segment is not None and segment.failed:
            return b"", f"segment set aside: {segment.failed}", 0
        if segment is not None and segment.needs_repair:
            return b"", f"segment needs repair: {segment.needs_repair}", 0
        if segment is not None and not self._folded_as(segment, annulled):
            # Its images hold records this read's history annuls (a backtrack the
            # node has not taken yet): another replica serves it.
            return b"", "its pages predate the history this read sees", segment.scl
        if segment is None or segment.scl < required_scl:
            scl = segment.scl if segment else 0
            return b"", f"SCL {scl} is below {required_scl}, needed at read point {read_point}", scl
        try:
            try:
                return segment.read(page_no, read_point, annulled), "", segment.scl
            except VersionGoneError:
                if segment.disk_history is None:
                    raise
            # Folded ahead of the backtrack window: the version is on disk.
            return self.read_history(segment, page_no, read_point, annulled), "", segment.scl
        except VersionGoneError:
            return b"", GONE, segment.scl
        except OSError as error:  # a history file the disk cannot read
            return b"", f"its history on disk cannot be read: {error}", segment.scl
        except AuroraStorageError as error:
            return b"", str(error), segment.scl
        finally:
            self._keep_cache(segment)
            self._sleep_quiet()  # reads wake segments too

    # --- the page cache ------------------------------------------------------------------

    def _dirty_bytes(self, segment: Segment) -> int:
        """Bytes of images coalescing changed since the segment's last checkpoint."""
        changed = segment.changed_pages
        return 0 if changed is None else len(changed) * self.geometry.page_size

    def _dirty_bytes_max(self) -> int:
        """A segment checkpoints once this much changed (a quarter of the node's cache):
        changed images cannot be forgotten until a checkpoint stores them."""
        return max(self.cache_bytes // 4, DIRTY_BYTES_MIN) if self.cache_bytes else 1 << 62

    def _keep_cache(self, segment: Segment) -> None:
        """Keeps the node's page images within ``cache_bytes`` after ``segment`` was used:
        the least recently used segments forget clean pages (their page store holds
        them); if that is not enough, the segments that changed most long ago take
        a checkpoint (a few per call), which makes their pages clean."""
        if not segment.images_grew or not self.cache_bytes or self.disk is None or self.failed:
            return  # nothing new in memory: no C call on the common path
        segment.images_grew = False
        self._account(segment)
        if self._forget_clean():
            return
        attempts = CHECKPOINTS_PER_TRIM
        for pg_id in list(itertools.islice(self._resident, TRIM_LOOKS)):
            victim = self.segments.get(pg_id)
            if victim is None or victim.failed:
                continue
            if victim.store is not None and not victim.changed_pages:
                continue  # nothing a checkpoint would make clean
            if self.checkpoint(victim) and self._forget_clean():
                return
            attempts -= 1
            if not attempts:
                return

    def _forget_clean(self) -> bool:
        """Evicts clean pages, least recently used segments first, until the node is
        within ``cache_bytes``; True once it is. A segment left without images leaves
        the order, so a pass never walks segments that hold none."""
        excess = self._resident_total - self.cache_bytes
        if excess <= 0:
            return True
        resident, emptied = self._resident, []
        for pg_id, held in resident.items():
            if excess <= 0:
                break
            victim = self.segments.get(pg_id)
            if victim is None or victim.store is None:
                continue
            victim.page_log.evict(victim.checkpoint_lsn, excess)
            images = victim.page_log.image_bytes()
            excess -= held - images
            self._resident_total += images - held
            if images:
                resident[pg_id] = images  # a new value, not a new key: the walk goes on
            else:
                emptied.append(pg_id)
        for pg_id in emptied:
            del resident[pg_id]
        return excess <= 0

    def _account(self, segment: Segment) -> None:
        """Updates the segment's image bytes in the node's total; the segment becomes the
        most recently used (last), or leaves the order if it holds no image."""
        images = segment.page_log.image_bytes()
        before = self._resident.pop(segment.pg_id, 0)
        if images:
            self._resident[segment.pg_id] = images
        self._resident_total += images - before

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

    def holds(self, pg_id: int) -> bool:
        """True if the placement puts a segment of the PG on this node."""
        return self.placement.holds(self.name, pg_id)

    def _peers_of(self, pg_id: int) -> list[str]:
        """The other members of the PG (of both sets during a membership change)."""
        return [peer for peer in self.placement.members(pg_id) if peer != self.name]

    def _pull_from_peers(self, segment: Segment) -> Outgoing:
        if segment.failed or segment.needs_repair:
            return []  # its peers said they no longer hold what it lacks
        pull = m.GossipPull(self.name, segment.pg_id, segment.scl)
        return [(peer, pull) for peer in self._peers_of(segment.pg_id)]

    def _on_gossip_pull(self, message: m.GossipPull) -> Outgoing:
        asleep = self.dormant.get(message.pg_id)
        if asleep is not None:  # its chain is all collected: at most the news of that
            if message.scl >= asleep[0]:
                return []
            push = m.GossipPush(self.name, message.pg_id, asleep[0], (), asleep[0])
            return [(message.sender, push)]
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
        if not self.holds(message.pg_id):
            return []
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
            if message.pg_id not in self._repairs:  # only a copy of a peer's pages mends it
                out += self._start_repair(message.pg_id, message.sender)
        elif scl < message.scl:
            if scl > before:  # the peer holds more than one push carries: keep pulling
                out.append((message.sender, m.GossipPull(self.name, message.pg_id, scl)))
        else:
            self._vouch(segment, message.sender, message.scl)
            out += self._ask_vouchers(segment)
        return out

    def _ask_vouchers(self, segment: Segment) -> Outgoing:
        """A suspect segment that caught up with one peer asks the PG's other members for
        their catalogs, once per SCL: each that it is caught up with vouches for it (a
        peer with no frame to send would otherwise never answer a pull)."""
        if not segment.suspect or len(segment.vouchers) >= VOUCHERS_NEEDED:
            return []
        if self._vouch_asked.get(segment.pg_id, -1) >= segment.scl:
            return []
        self._vouch_asked[segment.pg_id] = segment.scl
        pull = m.CatalogPull(self.name)
        return [
            (peer, pull) for peer in self._peers_of(segment.pg_id) if peer not in segment.vouchers
        ]

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
        for pg_id in self.segment_ids():
            if not self.holds(pg_id):
                continue  # a segment a membership change moved away offers nothing
            asleep = self.dormant.get(pg_id)
            if asleep is not None:
                flat += (pg_id, asleep[0])
            elif not self.segments[pg_id].failed:  # a segment set aside offers nothing
                flat += (pg_id, self.segments[pg_id].scl)
        return tuple(flat)

    def _on_catalog(self, message: m.Catalog) -> Outgoing:
        if message.epoch > self.epoch or len(message.truncations) > 3 * len(self.truncations):
            self._adopt(message.epoch, message.truncations, None)
        out: Outgoing = []
        for pg_id, peer_scl in zip(message.segments[::2], message.segments[1::2], strict=True):
            if not self.holds(pg_id):
                continue
            asleep = self.dormant.get(pg_id)
            if asleep is not None and peer_scl <= asleep[0]:
                continue  # caught up, and not suspect: nothing to pull or vouch
            segment = self.segment(pg_id)
            if segment.failed:
                continue
            if segment.needs_repair and pg_id not in self._repairs and peer_scl >= segment.scl:
                out += self._start_repair(pg_id, message.sender)  # gossip cannot mend it
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
        peers of every member set it is in have caught it up with their catalogs (a PG
        with acknowledged data is on four of its six members, so on one of any three
        others: their catalogs name it)."""
        if (
            self.suspect
            and self._vouched_in_every_set()
            and not any(segment.suspect for segment in self.segments.values())
        ):
            self.suspect = False
            self.suspect_reason = ""
            if self.disk is not None:
                # What it caught up with is durable before node.meta says it may vote.
                for name in sorted(self.dirty):
                    self.disk.sync(name)
                self.write_meta()

    def _vouched_in_every_set(self) -> bool:
        vouched = self.vouched_by
        for members in self.placement.member_sets():
            held = members.members
            if self.name in held and sum(peer in vouched for peer in held) < VOUCHERS_NEEDED:
                return False
        return True

    def _vouch(self, segment: Segment, peer: str, peer_scl: int) -> None:
        """A suspect segment that caught up with enough peers holds all that was acknowledged.

        An acknowledged frame is on at least four of six segments, so at least
        three of any five: catching up with three peers recovers it.
        """
        if segment.suspect and not segment.failed and segment.scl >= peer_scl:
            if peer not in self.placement.members(segment.pg_id):
                return
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
        for pg_id in self.segment_ids():
            asleep = self.dormant.get(pg_id)
            if asleep is not None:  # no frame above its checkpoint: no interval either
                segments += (pg_id, asleep[0], int(self.suspect))
                continue
            segment = self.segments[pg_id]
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
            tuple(self.placement.encode()["changes"]),
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
        for pg_id, asleep in self.dormant.items():
            out.append((sender, m.SegmentState(self.name, pg_id, self.epoch, asleep[0])))
        out += self.restart()
        return out

    def restart(self) -> Outgoing:
        """After a restart or a partition heals: learn what peers hold and catch up, and
        start again the repairs whose peer may have been out of reach."""
        pull = m.CatalogPull(self.name)
        out: Outgoing = [(peer, pull) for peer in self.peers]
        for pg_id, repair in list(self._repairs.items()):
            segment = self.segments.get(pg_id)
            if segment is not None and segment.needs_repair and not segment.failed:
                out += self._start_repair(pg_id, repair.peer)
        return out

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
        return out + self._retry_repairs()

    def close(self) -> None:
        """Syncs what is dirty and records node.meta; a disk error stops the node instead."""
        if self.disk is not None and not self.failed:
            with contextlib.suppress(_DiskFailed):
                with self._stopping_on_disk_error("fsync"):
                    for name in sorted(self.dirty):
                        self.disk.sync(name)
                self.dirty.clear()
                self._write_meta()


def failed_nodes(nodes: dict[str, StorageNode]) -> str:
    """The stopped nodes with their reasons (a disk's OS error), for an error's message."""
    failed = [f"{name} ({node.failed})" for name, node in nodes.items() if node.failed]
    return f"; failed nodes: {', '.join(failed)}" if failed else ""
