"""The writer's core: LSN allocation, VCL and VDL, commits, acks, and changes in doubt.

:class:`Writer` is the database instance's side of the storage layer, as a
state machine over a transport (runtime/transport.py): it never writes pages.
A commit (protocol/transaction.py packs its records) gets its MTR's LSNs in
one contiguous range, each PG's batch is stamped in one C call, framed and
sent to the PG's six segments (or held for the next flush while one runs);
the commit returns once VDL reaches the MTR's CPL. Acks (SegmentState) move
each PG's PGCL, then VCL and VDL.

Bookkeeping (names from the SIGMOD papers):

- PGCL of a PG: highest LSN held by a write quorum of its segments;
- VCL: highest LSN below which every record of the volume has a write quorum,
  i.e. one below the first unacknowledged record of any PG;
- VDL: highest CPL at or below VCL; reads default to it;
- LAL: no LSN is allocated above the LAL base (VDL, or the end of the last
  truncation above it) + LAL.

Invariants (asserted in :meth:`Writer._advance` and the commit path): VDL <=
VCL <= allocated LSN <= LAL base + LAL; VCL and VDL never decrease; an MTR's
records get consecutive LSNs, so an MTR is visible entirely (CPL <= VDL) or
not at all; a frame leaves a PG's outstanding list only once PGCL covers it;
a held frame is never dropped (it goes with the next flush's leader). While
a commit or backtrack is in doubt no later change is accepted.

Reads (protocol/reads.py), backtrack (protocol/backtrack.py) and recovery
(protocol/writer_recovery.py) are the other parts of the writer; volume.py
composes them with the runtime.
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from .. import native
from ..clock import Clock, Duration, to_duration
from ..config import READ_HEDGE_DELAY, Geometry, VolumeOptions
from ..errors import (
    CommitAnnulledError,
    InDoubtError,
    InvalidArgumentError,
    LsnLimitError,
    StaleEpochError,
    VolumeClosedError,
    VolumeReadOnlyError,
    WriteQuorumError,
)
from ..format import frames as log
from . import messages as m
from .hedging import ReadRanking
from .history import History, encode_history, flatten_truncations, merge_ranges, truncation_ranges
from .node import failed_nodes
from .placement import Placement
from .protection_group import Outstanding, ProtectionGroup
from .recovery import RecoveryPlan
from .transaction import Transaction

MAINTAIN_DUE = 64  # PGs waiting for their floors that make the writer send them
FLOOR_PULL_MAX = 64  # PGs a node may ask the floors of at once (FloorPull)


@dataclass
class PendingRead:
    page_no: int
    image: bytes | None = None
    problems: list[str] = field(default_factory=list)
    answered: dict[str, float] = field(default_factory=dict)  # node: transport time


class Writer:
    """The writer's state and its core protocol (the rest: reads, backtrack, recovery)."""

    # The runtime and backup parts the writer uses, set by volume.py.
    transport: Any  # runtime/transport.py: send, run_until, lock
    nodes: dict[str, Any]  # protocol/node.py StorageNode, by name
    placement: Placement  # each PG's members (placement.py)
    backup_store: Any  # backup/store.py BackupStore, or None
    staging: Any  # backup StagingState: what the backup has staged
    _stager: Any  # backup/staging.py Stager, or None
    _flusher: Any  # native/flush.py Flusher, or None
    _direct: bool  # the direct transport: reads are method calls
    _staged: dict[int, Any]  # staging rounds' replies by request (backup/staging.py)
    cluster: Any

    # Provided by the parts that build on the core (template methods):
    def _complete_recovery(self) -> None:
        """Puts a degraded recovery's decision on a write quorum (writer_recovery.py)."""
        raise NotImplementedError

    def _on_members_set(self, message: m.MembersSet) -> None:
        """Counts a node's ack of a membership (membership.py)."""
        raise NotImplementedError

    def _provision_node(self, az: str) -> str:
        """Adds a new, empty node in ``az`` to the fleet; its name (runtime/cluster.py)."""
        raise NotImplementedError

    def _write_volume_meta(self) -> None:
        """Records the options and the placement in volume.meta (volume.py)."""
        raise NotImplementedError

    _down_since: dict[str, float]  # unreachable nodes, since when (membership.py)

    def _membership_work(self) -> None:
        """Runs the repair policy and finishes ready changes (membership.py)."""
        raise NotImplementedError

    def send_memberships(self, name: str) -> None:
        """Tells a node every membership a change set (membership.py)."""
        raise NotImplementedError

    def note_reachability(self) -> None:
        """Notes since when each node has been unreachable (membership.py)."""
        raise NotImplementedError

    def _step_two(self) -> list[tuple[str, m.Message]]:
        """Step 2 of the membership changes that can finish (membership.py)."""
        raise NotImplementedError

    def _note_commit(self, time: float, cpl: int, size: int) -> None:
        """Counts a commit into the backtrack window (backtrack.py)."""
        raise NotImplementedError

    def _window_floor(self) -> int:
        """The LSN below which no backtrack can reach (backtrack.py)."""
        raise NotImplementedError

    def _init_writer(
        self,
        options: VolumeOptions,
        path: str | None,
        volume_id: str,
        clock: Clock,
        writer_name: str,
    ) -> None:
        self.options = options
        self.path = path
        self.volume_id = volume_id
        self.geometry: Geometry = options.geometry()
        self.clock: Clock = clock
        self.writer_name = writer_name
        self.epoch = 1
        self.allocated_lsn = 0
        self._vcl = 0
        self._vdl = 0
        self.pgs: dict[int, ProtectionGroup] = {}
        # The PGs with frames or a recovery target short of a write quorum: VCL is
        # computed from these only (a scattered workload leaves thousands of PGs).
        self._unacked: dict[int, ProtectionGroup] = {}
        self._cpls: deque[int] = deque()
        # Frames stamped while a flush ran, not yet sent (_commit_locked, _send_held_frames).
        self._held_frames: list[tuple[ProtectionGroup, bytes]] = []
        # PGs whose acks may have raised their gossip floor since it was last sent,
        # in the order they were acked (_maintenance).
        self._maintain_due: dict[int, None] = {}
        self._closed = False
        self._request_ids = itertools.count(1)
        self._reads: dict[int, PendingRead] = {}
        self._rejections: list[m.Rejected] = []
        self.truncations: list[tuple[int, int, int]] = []
        self.annulled: tuple[int, ...] = ()  # LSN ranges every read skips (history + truncations)
        self._last_commit_time = 0.0
        self._init_history_state()
        self._init_recovery_state()

    def _init_history_state(self) -> None:
        """The history, the backtrack window and the answers to time queries."""
        self.history = History.new(self.clock.now())
        # (time, CPL, record bytes) of commits inside the backtrack window, oldest first.
        self._window_commits: deque[tuple[float, int, int]] = deque()
        self._window_bytes = 0
        self._window_floor_lsn = 0  # versions below this may be coalesced
        self._window_floor_time = 0.0  # the earliest time backtrack can still reach
        self._time_answers: dict[int, dict[str, m.TimeAnswer]] = {}
        self._window_answers: dict[int, dict[str, m.WindowAnswer]] = {}
        # Nodes that acknowledged the history write with _history_write_key.
        self._history_acks: set[str] = set()
        self._history_write_key = self.history.key

    def _init_recovery_state(self) -> None:
        """What recovery, a restore and readonly opening set; nothing in doubt yet."""
        # In doubt (README.md, "When a commit or backtrack fails": no later change may
        # build on a state that excludes them):
        # CPLs of commits that raised WriteQuorumError and are not yet durable, and
        # the target time of a backtrack that raised and whose history may be on
        # some nodes until the one this session keeps is rewritten on a write quorum.
        self._in_doubt: list[int] = []
        self._history_in_doubt: float | None = None
        # Why recovery could not put its decision on a write quorum (the volume then
        # serves reads and allocates nothing); empty when it could.
        self._degraded = ""
        self.restored_from: tuple[float, int] | None = None
        # A restored volume begins at base_lsn (its first CPL, at base_time): nothing
        # below it exists in its segments (recorded in volume.meta; where a backup
        # begins is staging.base).
        self.base_lsn = 0
        self.base_time = 0.0
        self._pinned: list[int] = []
        self.read_ranking = ReadRanking(READ_HEDGE_DELAY)  # hedging.py
        self.recovery: RecoveryPlan | None = None
        self._recovery_states: dict[str, m.RecoveryState] = {}
        self._truncated: set[str] = set()
        # Opened with readonly=True: nothing is written (_open_readonly).
        self.readonly = False

    @property
    def vcl(self) -> int:
        return self._vcl

    @property
    def vdl(self) -> int:
        return self._vdl

    def _advance(self) -> None:
        """Recomputes VCL from the PGs and VDL from the CPLs in flight."""
        firsts = []
        unacked = self._unacked
        for pg in list(unacked.values()):
            first = pg.first_unacknowledged()
            if first is None:
                del unacked[pg.pg_id]  # only a new frame or a recovery brings it back
            else:
                firsts.append(first)
        vcl = min(firsts) - 1 if firsts else self.allocated_lsn
        if vcl > self._vcl:
            self._vcl = vcl
        cpls = self._cpls
        while cpls and cpls[0] <= self._vcl:
            self._vdl = cpls.popleft()
        # Both only rise (set above only when higher; recovery sets them, never lowers
        # them below what a quorum holds), and a CPL is visible only once complete.
        assert self._vdl <= self._vcl <= self.allocated_lsn, (
            self._vdl,
            self._vcl,
            self.allocated_lsn,
        )

    def _handle(self, message: m.Message, sender: str) -> list[tuple[str, m.Message]]:
        if isinstance(message, m.SegmentState):
            pg = self.pgs.get(message.pg_id)
            if pg is not None and message.epoch == self.epoch:
                if pg.record_scl(message.node, message.scl):
                    self._advance()
                if message.scl > pg.floor_sent:
                    self._maintain_due[pg.pg_id] = None  # its floor may have risen
        elif isinstance(message, m.PageImage):
            pending = self._reads.get(message.request_id)
            if pending is None:
                self.read_ranking.late_answer(
                    message.request_id, message.node, self.transport.now()
                )
            else:
                pending.answered[message.node] = self.transport.now()
                if message.problem:
                    pending.problems.append(f"{message.node}: {message.problem}")
                elif pending.image is None:
                    pending.image = message.image
        elif isinstance(message, m.Rejected):
            # A node at an epoch no higher than this writer's rejected a request of an
            # earlier writer (a reply still on its way): it says nothing of this one.
            if message.epoch > self.epoch:
                self._rejections.append(message)
        elif isinstance(message, m.RecoveryState):
            if message.epoch == self.epoch:
                self._recovery_states[message.node] = message
        elif isinstance(message, m.Truncated):
            if message.epoch == self.epoch:
                self._truncated.add(message.node)
        elif isinstance(message, m.TimeAnswer):
            answers = self._time_answers.get(message.request_id)
            if answers is not None:
                answers[message.node] = message
        elif isinstance(message, m.WindowAnswer):
            window_answers = self._window_answers.get(message.request_id)
            if window_answers is not None:
                window_answers[message.node] = message
        elif isinstance(message, m.Staged):
            if message.request_id in self._staged:
                self._staged[message.request_id] = message
        elif isinstance(message, m.HistorySet):
            if (
                message.epoch == self.epoch
                and (message.key_epoch, message.key_sequence) == self._history_write_key
            ):
                self._history_acks.add(message.node)
        elif isinstance(message, m.HistoryPull):
            return [(sender, m.SetHistory(self.epoch, encode_history(self.history)))]
        elif isinstance(message, m.FloorPull):
            return self._floors_for(message.node, message.pg_ids)
        elif isinstance(message, m.MembersSet):
            self._on_members_set(message)
        elif isinstance(message, m.Tick):
            return self._retransmissions() + self._maintenance() + self._step_two()
        return []

    def _check_open(self) -> None:
        if self._closed:
            raise VolumeClosedError("the volume is closed")

    def _raise_if_fenced(self) -> None:
        if self._rejections:
            rejected = self._rejections[-1]
            raise StaleEpochError(rejected.node, rejected.epoch, rejected.reason)

    def transaction(self) -> Transaction:
        self._check_open()
        self._refuse_if_readonly("a transaction")
        return Transaction(self)

    def _commit(self, batches: dict[int, bytearray], record_count: int) -> int:
        # The transport's lock serializes LSN allocation and every change of
        # protocol state; waiting for acks releases it, so other threads' frames
        # join the same fsyncs (group commit).
        with self.transport.lock:
            cpl = self._commit_locked(batches, record_count)
        if self._stager is not None:
            # Outside the lock: a staging round never holds up other commits.
            self._stager.after_commit(self._last_commit_time)
        return cpl

    def _commit_locked(self, batches: dict[int, bytearray], record_count: int) -> int:
        self._check_open()
        self._raise_if_fenced()
        self._membership_work()
        if self._degraded:
            self._complete_recovery()
        if self._in_doubt or self._history_in_doubt is not None:
            self._resolve_doubts()
        wanted = self.allocated_lsn + record_count
        limit = self.options.lal
        if wanted > self._lal_base() + limit and not self.transport.run_until(
            lambda: wanted <= self._lal_base() + limit, self.options.commit_timeout
        ):
            raise LsnLimitError(wanted, self._vdl, limit)
        if self._flusher is not None:
            self._flusher.prime()  # its thread wakes while the nodes take the frames
        time = max(self.clock.now(), self._last_commit_time)
        if time <= self.staging.commit_time_floor:  # a round was recorded at this time
            time = math.nextafter(self.staging.commit_time_floor, math.inf)
        built = self._build_frames(batches, time)
        sends = []
        vdl = self._vdl
        for pg_id, first, last, frame in built:
            pg = self.pgs.get(pg_id)
            if pg is None:
                pg = self.pgs[pg_id] = ProtectionGroup(pg_id, self.placement.quorum(pg_id))
            pg.note_frame(last, vdl, first)
            # Retransmission and PGCL trimming rely on a PG's frames in LSN order.
            assert not pg.outstanding or pg.outstanding[-1].last_lsn < first, pg.pg_id
            pg.outstanding.append(Outstanding(first, last, frame))
            self._unacked[pg_id] = pg
            sends.append((pg, frame))
        cpl = built[-1][2]
        assert cpl <= self._lal_base() + limit, (cpl, self._lal_base(), limit)
        self._last_commit_time = time
        self.allocated_lsn = cpl
        self._cpls.append(cpl)
        if self.options.backtrack_window:
            self._note_commit(time, cpl, sum(len(body) for body in batches.values()))
        # While a flush runs these frames would wait for the next one anyway: held
        # back, they reach each segment in one message with those of every commit
        # that arrives meanwhile, sent by the thread that leads that flush. Frames
        # still held otherwise (their commit timed out) go first, in LSN order.
        self._held_frames += sends
        if not self.transport.flush_in_flight() or not self._leads_send_held_frames():
            self._send_held_frames()
        if not self.transport.run_until(lambda: self._vdl >= cpl, self.options.commit_timeout):
            self._raise_if_fenced()
            self._in_doubt.append(cpl)
            raise WriteQuorumError(cpl, self._vdl, self._quorum_detail(sends))
        return cpl

    def _build_frames(
        self, batches: dict[int, bytearray], time: float
    ) -> list[tuple[int, int, int, bytes]]:
        """Stamps each PG's batch with the MTR's next LSNs (C) and frames it: (PG, first
        LSN, last LSN, frame) in PG order. Every frame is built before any state
        changes, so a failure leaves none."""
        page_size = self.geometry.page_size
        lsn = self.allocated_lsn + 1
        last_pg = max(batches)
        built = []
        for pg_id in sorted(batches):
            body = batches[pg_id]
            pg = self.pgs.get(pg_id)
            backlink = pg.tail_lsn if pg is not None else 0
            last = native.stamp(body, page_size, lsn, backlink, pg_id == last_pg, time)
            frame = log.encode_frame(pg_id, self.epoch, backlink, lsn, last, last - lsn + 1, body)
            built.append((pg_id, lsn, last, frame))
            lsn = last + 1
        return built

    def _send_frames(self, sends: list[tuple[ProtectionGroup, bytes]]) -> None:
        """Sends frames (in LSN order) to their PGs' segments, one message per PG; then,
        once MAINTAIN_DUE PGs wait for their floors, a Maintain per node."""
        retain, fold = self.min_read_point(), self.min_fold_point()
        truncations = flatten_truncations(self.truncations)
        history_sequence = self._history_sequence()
        by_pg: dict[int, tuple[ProtectionGroup, list[bytes]]] = {}
        for pg, frame in sends:
            by_pg.setdefault(pg.pg_id, (pg, []))[1].append(frame)
        due = self._maintain_due
        for pg, frames in by_pg.values():
            floor = self._gc_floor(pg)
            pg.floor_sent = max(pg.floor_sent, floor)
            due.pop(pg.pg_id, None)
            message = m.WriteFrames(
                self.epoch,
                pg.pg_id,
                tuple(frames),
                self._pg_retain(pg, retain),
                floor,
                truncations,
                history_sequence,
                self._pg_retain(pg, fold),
            )
            for node in pg.quorum.members:
                self.transport.send(self.writer_name, node, message)
        if len(due) >= MAINTAIN_DUE:
            self.send_maintenance()

    def _history_sequence(self) -> int:
        """The sequence of the history key a write or Maintain carries (-1: not said)."""
        key_epoch, history_sequence = self.history.key
        return int(history_sequence) if key_epoch == self.epoch else -1  # never after recovery

    def _pg_retain(self, pg: ProtectionGroup, retain: int) -> int:
        """Records of the PG at or below this may be folded: no reader needs older
        versions, and the backup's page images are taken at staged LSNs."""
        if self.backup_store is None:
            return retain
        return min(retain, int(self.staging.staged_lsn.get(pg.pg_id, 0)))

    def _maintenance(self) -> list[tuple[str, m.Message]]:
        """A Maintain per node for the PGs whose gossip floor rose since it was last
        sent, and nothing wrote to them since: their segments fold, collect and
        checkpoint though the PG stays quiet (a scattered workload touches
        thousands of PGs once each)."""
        due, self._maintain_due = self._maintain_due, {}
        retain, fold = self.min_read_point(), self.min_fold_point()
        floors: dict[str, list[int]] = {}
        folds: dict[str, list[int]] = {}
        for pg_id in due:
            pg = self.pgs.get(pg_id)
            if pg is None:
                continue
            floor = self._gc_floor(pg)
            if floor <= pg.floor_sent:
                continue
            pg.floor_sent = floor
            triple = (pg_id, self._pg_retain(pg, retain), floor)
            pg_fold = self._pg_retain(pg, fold)
            for node in pg.quorum.members:
                floors.setdefault(node, []).extend(triple)
                folds.setdefault(node, []).append(pg_fold)
        sequence = self._history_sequence()
        return [
            (node, m.Maintain(self.epoch, tuple(flat), sequence, tuple(folds[node])))
            for node, flat in floors.items()
        ]

    def _floors_for(self, node: str, pg_ids: tuple[int, ...]) -> list[tuple[str, m.Message]]:
        """A Maintain for ``node`` naming the floors of ``pg_ids`` as they are now (its
        FloorPull): whatever was sent before, lost or held back."""
        retain, fold = self.min_read_point(), self.min_fold_point()
        flat: list[int] = []
        folds: list[int] = []
        for pg_id in pg_ids[:FLOOR_PULL_MAX]:
            pg = self.pgs.get(pg_id)
            if pg is not None and node in pg.quorum.members:
                flat += (pg_id, self._pg_retain(pg, retain), self._gc_floor(pg))
                folds.append(self._pg_retain(pg, fold))
        if not flat or self._closed:
            return []
        sequence = self._history_sequence()
        return [(node, m.Maintain(self.epoch, tuple(flat), sequence, tuple(folds)))]

    def send_maintenance(self) -> None:
        """Sends the floors due now (:meth:`_maintenance`): a volume closing leaves its
        quiet PGs folded and checkpointed, and the next open replays little."""
        for destination, maintain in self._maintenance():
            self.transport.send(self.writer_name, destination, maintain)

    def _send_held_frames(self) -> None:
        """Sends the frames held back while a flush ran (the transport's before_lead)."""
        # Each held frame joined its PG's outstanding frames when stamped, and leaves
        # them only under PGCL: whatever becomes of a message, it is retransmitted.
        if self._held_frames:
            self._send_frames(self._held_frames)
            self._held_frames = []

    def _leads_send_held_frames(self) -> bool:
        """True if flush leaders send this volume's held frames (a transport shared
        with a later volume calls that volume's instead: hold nothing then)."""
        return bool(self.transport.before_lead == self._send_held_frames)

    def _gc_floor(self, pg: ProtectionGroup) -> int:
        """Frames at or below this may leave the PG's segments' gossip chains.

        Every segment holds them, they are at or below VDL (recovery may rewind
        chains to VDL), and the backup has staged them.
        """
        floor = min(pg.floor(), self._vdl)
        if self.backup_store is not None:
            floor = min(floor, self.staging.staged_lsn.get(pg.pg_id, 0))
        return floor

    def _lal_base(self) -> int:
        """LSNs in flight count from VDL, or from the end of the last truncation above it."""
        return max([self._vdl, *(hi for _, _, hi in self.truncations)])

    def min_read_point(self) -> int:
        """Oldest read point any reader or the backtrack window may still need.

        Versions below it may be coalesced away by segments.
        """
        return min([self._vdl, *self._pinned, self._window_floor()])

    def min_fold_point(self) -> int:
        """Oldest read point any reader needs, the backtrack window aside: a node that
        keeps the window's versions on disk may fold records up to here."""
        return min([self._vdl, *self._pinned])

    def _quorum_detail(self, sends: list[tuple[ProtectionGroup, bytes]]) -> str:
        parts = []
        for pg, _frame in sends:
            if pg.first_unacknowledged() is not None:
                acked = sorted(node for node, scl in pg.scls.items() if scl >= pg.tail_lsn)
                parts.append(
                    f"PG {pg.pg_id} acknowledged by {len(acked)} of 6 ({', '.join(acked)})"
                )
        blocked = [pg.pg_id for pg in self.pgs.values() if pg.first_unacknowledged() is not None]
        detail = "; ".join(parts) or f"an earlier commit in PG {blocked} still lacks a write quorum"
        return detail + failed_nodes(self.nodes)

    def _retransmissions(self) -> list[tuple[str, m.Message]]:
        """Frames without a write quorum, addressed to the segments that lack them."""
        out: list[tuple[str, m.Message]] = []
        # Held frames go out with the next flush's leader, in order (_send_held_frames).
        held = {id(frame) for _, frame in self._held_frames}
        for pg in list(self._unacked.values()):  # the only PGs with outstanding frames
            for outstanding in pg.outstanding:
                if held and id(outstanding.frame) in held:
                    continue
                message = m.WriteFrames(self.epoch, pg.pg_id, (outstanding.frame,))
                out += [(node, message) for node in pg.lagging(outstanding)]
        return out

    def _retransmit(self) -> None:
        for destination, message in self._retransmissions():
            self.transport.send(self.writer_name, destination, message)

    def _settle(self) -> None:
        self.transport.run_until(lambda: False, 0.0)

    def _refresh_annulled(self) -> None:
        self.annulled = merge_ranges(
            self.history.current.annulled, truncation_ranges(self.truncations)
        )

    def _resolve_doubts(self) -> None:
        """Raises InDoubtError, changing nothing, while an earlier commit or backtrack is
        in doubt; first tries to resolve them (retransmission, the history rewrite)."""
        if self._in_doubt:
            target = max(self._in_doubt)
            if self._vdl < target:
                self._retransmit()  # frames sent earlier (held ones are not among them)
                if self._held_frames and not self.transport.flush_in_flight():
                    self._send_held_frames()
                self.transport.run_until(lambda: self._vdl >= target, self.options.commit_timeout)
            self._in_doubt = [lsn for lsn in self._in_doubt if lsn > self._vdl]
        if self._history_in_doubt is not None:
            self._abandon_history()
        if self._in_doubt or self._history_in_doubt is not None:
            raise InDoubtError(tuple(self._in_doubt), self._history_in_doubt)

    @property
    def in_doubt(self) -> tuple[int, ...]:
        """CPLs of commits that raised WriteQuorumError and are not yet durable.

        While any is in doubt (or :attr:`backtrack_in_doubt` is set), commits and
        backtracks raise InDoubtError and change nothing.
        """
        with self.transport.lock:
            self._check_open()
            self._in_doubt = [lsn for lsn in self._in_doubt if lsn > self._vdl]
            return tuple(self._in_doubt)

    @property
    def backtrack_in_doubt(self) -> float | None:
        """The target time of a backtrack that raised and may still be found by a
        recovery (its history reached some nodes), or None."""
        self._check_open()
        return self._history_in_doubt

    def wait_durable(self, lsn: int, timeout: Duration | None = None) -> bool:
        """Waits until the commit ending at ``lsn`` is durable (VDL >= ``lsn``).

        Returns True once it is, False if ``timeout`` seconds (default: the
        commit timeout) pass first: it is still in doubt. Raises
        :class:`CommitAnnulledError` if crash recovery annulled it (it will never
        be durable).
        """
        if type(lsn) is not int or lsn < 0:
            raise InvalidArgumentError(f"an LSN is an int >= 0, not {lsn!r}")
        seconds = (
            self.options.commit_timeout if timeout is None else to_duration(timeout, "timeout")
        )
        if not seconds >= 0:
            raise InvalidArgumentError(f"timeout is a duration >= 0, not {timeout!r}")
        with self.transport.lock:
            self._check_open()
            if lsn > self.allocated_lsn:
                raise InvalidArgumentError(
                    f"LSN {lsn} was never allocated (the highest is {self.allocated_lsn})"
                )
            for _, lo, hi in self.truncations:
                if lo < lsn <= hi:
                    raise CommitAnnulledError(lsn, lo, hi)
            if self._vdl < lsn:
                self._retransmit()
                if self._held_frames and not self.transport.flush_in_flight():
                    self._send_held_frames()
                self.transport.run_until(lambda: self._vdl >= lsn, seconds)
            self._in_doubt = [cpl for cpl in self._in_doubt if cpl > self._vdl]
            return self._vdl >= lsn

    def _next_history_key(self) -> tuple[int, int]:
        """A key above every history this writer sent (history.py)."""
        epoch, sequence = max(self.history.key, self._history_write_key)
        return (self.epoch, sequence + 1) if epoch == self.epoch else (self.epoch, 1)

    def _write_history(self, history: History) -> set[str]:
        """Sends the whole history to every node; returns those that hold it durably
        (waiting until a write quorum of every member set does, or the commit
        timeout: Placement.covers)."""
        self._history_acks = set()
        self._history_write_key = history.key
        message = m.SetHistory(self.epoch, encode_history(history))
        for name in self.nodes:
            self.transport.send(self.writer_name, name, message)
        covers = self.placement.covers_write
        self.transport.run_until(lambda: covers(self._history_acks), self.options.commit_timeout)
        return set(self._history_acks)

    def _abandon_history(self) -> bool:
        """After a backtrack failed: writes the history this session keeps under a new
        key, so no recovery can adopt the failed one; True once a write quorum holds it."""
        history = self.history.keyed(self._next_history_key())
        if not self.placement.covers_write(self._write_history(history)):
            return False
        self.history = history
        self._history_in_doubt = None
        return True

    def _refuse_if_readonly(self, what: str) -> None:
        if self.readonly:
            raise VolumeReadOnlyError(what)
