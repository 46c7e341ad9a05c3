"""Writer crash recovery, driven over the transport (protocol/recovery.py decides).

A new epoch, made durable on the nodes, fences any older writer; each node
answers with its SCLs and runs of LSNs above the VDL it knew; recovery.plan
computes VCL, VDL and the truncation range; the truncation and the history
(the newest a read quorum holds) go to a write quorum under the new epoch.
With fewer than four nodes taking them the volume opens degraded: reads
served, nothing allocated, until four do. A read-only open runs the same
plan from the nodes' loaded state, telling them nothing.
"""

from __future__ import annotations

import bisect

from ..errors import (
    AuroraStorageError,
    CorruptionError,
    DegradedVolumeError,
    InvalidArgumentError,
    RecoveryError,
    StorageWriteError,
)
from . import messages as m
from . import recovery
from .backtrack import Backtracking
from .history import NO_KEY, History, decode_history, merge_ranges, newest, truncation_ranges
from .membership import Change
from .node import StorageNode, failed_nodes
from .node_storage import StartPages, checkpoint_object
from .page_store import StoreMap
from .placement import Membership
from .protection_group import READ_QUORUM, WRITE_QUORUM, ProtectionGroup
from .recovery import RecoveryPlan
from .segment import SharedImages


class Recovering(Backtracking):
    """Crash recovery of the writer, the read-only view of a volume, and a restored
    volume's start from page images."""

    _changes: dict[int, Change]  # membership changes in progress (membership.py)

    def _recover(self) -> RecoveryPlan:
        """Crash recovery of the writer (recovery.py): fence, learn SCLs, truncate, resume."""
        with self.transport.lock:
            live = [name for name, node in self.nodes.items() if not node.failed]
            self.epoch = max(node.epoch for node in self.nodes.values()) + 1
            states, unavailable = self._ask_recovery_states(live)
            self._learn_memberships(states)
            histories = self._histories_of(states)
            # A writer opens once its history is on a write quorum (_choose_history):
            # the highest key's epoch is the last writer known to have opened.
            keyed = [history.key[0] for history in histories if history.key != NO_KEY]
            plan = recovery.plan(
                self.epoch,
                states,
                self.options.lal,
                unavailable=unavailable,
                opened_epoch=max(keyed) if keyed else None,  # nodes of 0.1.0 keyed nothing
                placement=self.placement,
            )
            self.pgs = {
                pg_id: ProtectionGroup(pg_id, self.placement.quorum(pg_id)) for pg_id in plan.pg_ids
            }
            for pg_id, change in self._changes.items():
                if pg_id in self.pgs:
                    self.pgs[pg_id].floor_skip = frozenset((*change.replaced, *change.added))
            for name in live:
                self.send_memberships(name)  # changes a node missed while it was out
            truncated = self._send_truncation(live, plan)
            self.truncations = list(plan.truncations)
            self._keep_decision(truncated, self._choose_history(histories))
            self._resume_after(plan)
            return plan

    def _learn_memberships(self, states: list[m.RecoveryState], record: bool = True) -> None:
        """Takes the highest membership of each PG any answering node holds: a change is
        written to a write quorum of the members (or, after AZ+1, to those that
        answered) before it is used, so a read quorum shows it even when volume.meta
        missed it (a writer that crashed in between). A PG left with two member sets
        resumes its change (membership.py)."""
        changed = False
        for state in states:
            for row in state.memberships:
                try:
                    membership = Membership.decode(list(row)[1:])
                    pg_id = int(row[0])
                except (CorruptionError, TypeError, ValueError, IndexError):
                    continue  # a node that cannot say votes for no membership
                changed |= self.placement.set_membership(pg_id, membership)
        if not record:
            return
        now = self.clock.now()
        for pg_id, membership in self.placement.changes.items():
            if membership.changing and pg_id not in self._changes:
                old, new = membership.member_sets[0], membership.member_sets[-1]
                self._changes[pg_id] = Change(pg_id, old, new, "repair", now)
        if changed:
            self._write_volume_meta()

    def _working(self, live: list[str]) -> int:
        """The nodes of ``live`` still running (one whose disk failed meanwhile stopped)."""
        return sum(not self.nodes[name].failed for name in live)

    def _ask_recovery_states(self, live: list[str]) -> tuple[list[m.RecoveryState], dict[str, str]]:
        """Sends the new epoch to every live node; (answers, why each other node is out).
        Raises RecoveryError below a read quorum of answers."""
        self._recovery_states.clear()
        for name in live:
            self.transport.send(self.writer_name, name, m.RecoveryQuery(self.epoch))
        self.transport.run_until(
            lambda: len(self._recovery_states) >= self._working(live), self.options.commit_timeout
        )
        self._raise_if_fenced()
        states = list(self._recovery_states.values())
        unavailable = {
            name: node.failed or "no answer to the recovery query"
            for name, node in self.nodes.items()
            if name not in self._recovery_states
        }
        answered = [state.node for state in states]
        if not self.placement.covers_read(answered):
            raise RecoveryError(
                f"{len(answered)} of {len(self.nodes)} nodes answered the recovery query; "
                f"{self.placement.shortfall(answered, READ_QUORUM)}; unusable: "
                + "; ".join(f"{name}: {why}" for name, why in sorted(unavailable.items()))
            )
        return states, unavailable

    def _send_truncation(self, live: list[str], plan: RecoveryPlan) -> set[str]:
        """Sends the truncation to every live node; those that made it durable."""
        self._truncated.clear()
        lo, hi = plan.truncation
        for name in live:
            self.transport.send(self.writer_name, name, m.Truncate(self.epoch, lo, hi))
        self.transport.run_until(
            lambda: len(self._truncated) >= self._working(live), self.options.commit_timeout
        )
        # Segments report their rewound SCLs once synced: each PG's tail is the
        # highest, since a responder holds the PG's whole chain up to VDL.
        self.transport.wait_for_syncs()
        return set(self._truncated)

    def _keep_decision(self, truncated: set[str], decided: History) -> None:
        """A write quorum must hold the truncation and the history before any LSN is
        allocated, so that every later read quorum (the next recovery's) sees them.
        With fewer, a read quorum still says what is durable: the volume opens
        degraded, serving reads and allocating nothing, until four nodes take them
        (_complete_recovery)."""
        covers = self.placement.covers_write
        if not covers(truncated):
            shortfall = self.placement.shortfall(truncated, WRITE_QUORUM)
            self._degraded = f"the truncation reached {len(truncated)} nodes; {shortfall}"
        else:
            acks = self._write_history(decided)
            if not covers(acks):
                shortfall = self.placement.shortfall(acks, WRITE_QUORUM)
                self._degraded = f"the recovered history reached {len(acks)} nodes; {shortfall}"
        self.history = decided
        if self._degraded:
            self._degraded += failed_nodes(self.nodes)
        self._refresh_annulled()

    def _resume_after(self, plan: RecoveryPlan) -> None:
        """The writer's bookkeeping once recovery decided: VDL and VCL at the truncation's
        start, LSNs allocated above its end, the backtrack window rebuilt."""
        lo, hi = plan.truncation
        self.allocated_lsn = hi
        self._vcl = self._vdl = lo
        for pg in self.pgs.values():
            pg.tail_lsn = max(pg.scls.values(), default=0)
            pg.durable_target = pg.tail_lsn
        self._unacked = dict(self.pgs)
        self.recovery = plan
        self._advance()
        self._window_floor_time = max(
            self.history.created_at, self.clock.now() - self.options.backtrack_window
        )
        if self.options.backtrack_window:
            self._window_floor_lsn, _ = self._last_commit_at(self._window_floor_time)
            self._rebuild_window(self._ask_window(self._window_floor_time))
        else:
            self._window_floor_lsn = self._vdl
        self._last_commit_time = max(self._last_commit_time, self.clock.now())

    @staticmethod
    def _histories_of(states: list[m.RecoveryState]) -> list[History]:
        histories = []
        for state in states:
            try:
                history = decode_history(state.history) if state.history else None
            except CorruptionError:
                history = None  # a node that cannot say votes for no history
            if history is not None:
                histories.append(history)
        return histories

    def _choose_history(self, histories: list[History]) -> History:
        """The newest history a read quorum holds, keyed under this epoch: recovery writes
        it back on a write quorum (history.py), so no later recovery decides otherwise.

        The backtrack window recorded in the nodes' history at creation outranks
        ``volume.meta``, a single file.
        """
        decided = newest(histories) or self.history
        if decided.backtrack_window is None:
            decided.backtrack_window = self.options.backtrack_window  # an older volume: record it
        elif decided.backtrack_window != self.options.backtrack_window:
            self.options.backtrack_window = decided.backtrack_window
        return decided.keyed((self.epoch, 1))

    def _complete_recovery(self) -> None:
        """A volume that opened degraded puts its truncation and history on a write quorum
        now, or raises DegradedVolumeError, changing nothing."""
        assert self.recovery is not None
        lo, hi = self.recovery.truncation
        self._truncated.clear()
        live = [name for name, node in self.nodes.items() if not node.failed]
        for name in live:
            self.transport.send(self.writer_name, name, m.Truncate(self.epoch, lo, hi))
        covers = self.placement.covers_write
        self.transport.run_until(lambda: covers(self._truncated), self.options.commit_timeout)
        if covers(self._truncated):
            history = self.history.keyed(self._next_history_key())
            if covers(self._write_history(history)):
                self.history = history
                self._degraded = ""
                return
        raise DegradedVolumeError(self._degraded)

    def _load_readonly(self, missing: list[str]) -> None:
        """Loads every node's files as they are and works out VDL as recovery would,
        from a read quorum, without telling the nodes anything."""
        with self.transport.lock:
            live = self._load_nodes_as_they_are(missing)
            states = [node.recovery_state() for node in live]
            self._learn_memberships(states, record=False)
            histories = self._histories_of(states)
            keyed = [history.key[0] for history in histories if history.key != NO_KEY]
            self.epoch = max(node.epoch for node in live)
            plan = recovery.plan(
                self.epoch + 1,
                states,
                self.options.lal,
                unavailable={node.name: node.failed for node in self.nodes.values() if node.failed},
                opened_epoch=max(keyed) if keyed else None,
                placement=self.placement,
            )
            self.recovery = plan
            # Kept in memory only: reads skip what a recovery would annul.
            self.truncations = list(plan.truncations)
            decided = newest(histories)
            if decided is not None:
                self.history = decided
                if decided.backtrack_window is not None:
                    self.options.backtrack_window = decided.backtrack_window
            self._refresh_annulled()
            self.allocated_lsn = self._vcl = self._vdl = plan.vdl
            for pg_id in plan.pg_ids:
                self.pgs[pg_id] = self._readonly_group(pg_id, live, plan.vdl)
            now = self.clock.now()
            self._window_floor_time = max(
                self.history.created_at, now - self.options.backtrack_window
            )
            self._window_floor_lsn = self._vdl
            if self.options.backtrack_window:
                self._window_floor_lsn = self._readonly_window_floor(live)
                self._rebuild_window(
                    [node.window_answer(0, self._window_floor_time) for node in live]
                )
            self._last_commit_time = max(self._last_commit_time, now)

    def _load_nodes_as_they_are(self, missing: list[str]) -> list[StorageNode]:
        """Loads every node that can be (its logs left as found); the live ones, at
        least a read quorum, else RecoveryError naming why each other one is unusable."""
        for name in missing:
            self.nodes[name].failed = "its folder is missing"
        for node in self.nodes.values():
            if node.failed:
                continue
            try:
                node.load(leave_logs=True, sync_logs=False)
            except (AuroraStorageError, OSError) as error:
                node.failed = f"cannot load: {error}"
        live = [node for node in self.nodes.values() if not node.failed]
        unavailable = {node.name: node.failed for node in self.nodes.values() if node.failed}
        for node in self.nodes.values():
            self.transport.set_down(node.name, bool(node.failed))
        if not self.placement.covers_read(node.name for node in live):
            shortfall = self.placement.shortfall([node.name for node in live], READ_QUORUM)
            raise RecoveryError(
                f"{len(live)} of {len(self.nodes)} nodes can be read; {shortfall}; unusable: "
                + "; ".join(f"{name}: {why}" for name, why in sorted(unavailable.items()))
            )
        return live

    def _readonly_group(self, pg_id: int, live: list[StorageNode], vdl: int) -> ProtectionGroup:
        """A protection group's view at ``vdl`` from the segments the live nodes hold."""
        pg = ProtectionGroup(pg_id, self.placement.quorum(pg_id))
        for node in live:
            if not self.placement.holds(node.name, pg_id):
                continue
            segment = node.segments.get(pg_id)
            if segment is None or segment.suspect:
                continue
            pg.scls[node.name] = segment.scl
            index = bisect.bisect_right(segment.chain_last_lsns, vdl)
            if index:
                tail = segment.chain_last_lsns[index - 1]
            else:
                tail = segment.chain_base_lsn if segment.chain_base_lsn <= vdl else 0
            pg.tail_lsn = max(pg.tail_lsn, tail)
        pg.pgcl = min(pg.tail_lsn, pg.quorum.write_point(pg.scls))
        return pg

    def _readonly_window_floor(self, live: list[StorageNode]) -> int:
        """The last commit before the window, as nodes index it (no message sent)."""
        best = 0
        version = self.history.at(self._window_floor_time)
        hidden = version.annulled if version is not None else ()
        annulled = merge_ranges(hidden, truncation_ranges(self.truncations))
        for node in live:
            for segment in node.segments.values():
                found, _ = segment.last_commit_at(self._window_floor_time, annulled)
                best = max(best, found)
        return best

    def _start_from_images(self, lsn: int, pages: dict[int, list[SharedImages]]) -> None:
        """Starts this new, empty volume at ``lsn`` holding ``pages`` (a restore).

        Instead of replaying the pages through the write path, every segment of
        each PG starts at ``lsn`` from the images, shared by the six replicas
        (Segment.start_at), and nodes with a disk each keep their own copy
        (StorageNode.persist_start). The writer resumes as if VDL had just
        reached ``lsn``, a commit at the volume's creation time: the next
        commit's LSNs follow it, reads at older LSNs find no version, and
        backtrack and continuous backup begin there.
        """
        with self.transport.lock:
            if self.allocated_lsn or self.pgs or lsn <= 0:
                raise InvalidArgumentError(
                    f"only a new, empty volume can start from page images, at an LSN > 0 ({lsn})"
                )
            time = self.history.created_at
            for node in self.nodes.values():
                for pg_id, layers in sorted(pages.items()):
                    if self.placement.holds(node.name, pg_id):
                        node.start_segment(pg_id, lsn, time, layers)
            checkpoints: dict[int, StartPages] = {}
            if any(node.disk is not None for node in self.nodes.values()):
                # Every node writes the same pages and file: materialize them once.
                for pg_id in pages:
                    segment = self.nodes[self.placement.members(pg_id)[0]].segments[pg_id]
                    page_nos, page_lsns, images = segment.images_at(lsn, ())
                    fresh = StoreMap(segment.page_lo).with_slots(page_nos, [0] * len(page_nos))
                    checkpoint = checkpoint_object(segment, lsn, lsn, fresh, self.volume_id)
                    checkpoints[pg_id] = StartPages(page_nos, page_lsns, images, checkpoint)
            for node in self.nodes.values():
                held = {p: c for p, c in checkpoints.items() if self.placement.holds(node.name, p)}
                node.persist_start(lsn, held)  # a node that cannot write stops
            written = [name for name, node in self.nodes.items() if not node.failed]
            if not self.placement.covers_write(written):
                raise StorageWriteError(
                    f"the restored pages reached {len(written)} of {len(self.nodes)} nodes, "
                    f"{self.placement.shortfall(written, WRITE_QUORUM)}{failed_nodes(self.nodes)}"
                )
            for pg_id in pages:
                quorum = self.placement.quorum(pg_id)
                pg = self.pgs[pg_id] = ProtectionGroup(pg_id, quorum, tail_lsn=lsn, pgcl=lsn)
                pg.scls = dict.fromkeys(quorum.members, lsn)
            self.allocated_lsn = self._vcl = self._vdl = lsn
            self._window_floor_lsn = lsn
            self._last_commit_time = max(self._last_commit_time, time)
            self.base_lsn, self.base_time = lsn, time
            self.staging.base = (lsn, time)  # a backup begins with these pages
            self._write_volume_meta()
