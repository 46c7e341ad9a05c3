"""Deterministic simulation: a seeded workload and seeded faults against a model.

A :class:`Simulation` drives a volume over the simulated transport in virtual
time. Each step commits a random mini-transaction, reads a random page at the
current or an older read point, or injects or heals a fault (node, AZ,
writer partition, message loss, duplication and reordering). After every step
:meth:`Simulation.check` compares the volume with a reference model, a plain
dict of page images per LSN, and raises :class:`SimulationFailure` naming the
seed and step. The same seed replays the same trace (``trace_hash``).

Invariants checked:

- every acknowledged commit has CPL <= VDL; VCL and VDL never decrease, and
  VDL <= VCL <= allocated LSN;
- while a commit is in doubt (it raised WriteQuorumError and VDL is below
  it), every later commit is refused with InDoubtError and allocates nothing;
- every read equals the model at its read point (never an older version,
  never different bytes), so no mini-transaction is ever partly visible;
- no read fails while the network loses nothing and some reachable segment
  that the writer knows holds the PG up to the read point could serve it;
- no segment's SCL exceeds the allocated LSN;
- after faults stop (:meth:`Simulation.converge`): every segment of every PG
  reaches the PG's last LSN and all six replicas hold byte-identical pages,
  equal to the model.
"""

from __future__ import annotations

import bisect
import dataclasses
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from .clock import SimulatedClock
from .config import AZS, NODE_NAMES, az_of, node_names
from .errors import (
    AuroraStorageError,
    BacktrackQuorumError,
    DegradedVolumeError,
    InDoubtError,
    MembershipChangeError,
    PlacementError,
    QuorumError,
    ReadUnavailableError,
    VersionGoneError,
    WriteQuorumError,
)
from .protocol.node import WRITER, StorageNode
from .protocol.placement import placement_of
from .protocol.ports import Disk
from .runtime.disk import SimulatedDisk
from .runtime.transport import NetworkFaults, SimulatedTransport
from .volume import Volume

PAGE_SIZE = 4096
PAGES_PER_PG = 4
PAGE_COUNT = 64
HISTORY_WINDOW = 3600.0  # seconds of backtrack window in HistorySimulation
CHECK_ROUNDS_MAX = 5  # rounds of reads HistorySimulation.check tries for one stable VDL


def simulated_volume(
    clock: SimulatedClock, transport: SimulatedTransport, **options: Any
) -> Volume:
    """The simulations' small volume: PAGE_COUNT pages in PGs of PAGES_PER_PG."""
    return Volume.create(
        page_size=PAGE_SIZE,
        segment_size=PAGE_SIZE * PAGES_PER_PG,
        capacity=PAGE_SIZE * PAGE_COUNT,
        clock=clock,
        transport=transport,
        commit_timeout=1.0,
        **options,
    )


def random_changes(rng: random.Random) -> list[tuple[int, int, bytes]]:
    """One to five writes of 1 to 64 random bytes at random places."""
    changes = []
    for _ in range(rng.randint(1, 5)):
        page_no = rng.randrange(PAGE_COUNT)
        length = rng.randint(1, 64)
        offset = rng.randrange(PAGE_SIZE - length)
        changes.append((page_no, offset, rng.randbytes(length)))
    return changes


def inject_fault(
    rng: random.Random,
    volume: Volume,
    transport: SimulatedTransport,
    loss_max: float,
    duplication_max: float,
) -> None:
    """One random fault or repair: a node or AZ down, a node back, a writer
    partition, healing, or new loss and duplication rates."""
    cluster = volume.cluster
    names = list(volume.nodes)  # the fleet, with the nodes repairs added
    choice = rng.randrange(7)
    if choice == 0:
        cluster.fail_node(rng.choice(names))
    elif choice == 1:
        cluster.fail_az(rng.choice(AZS))
    elif choice in (2, 3):
        for name in names:
            if not cluster.is_up(name):
                cluster.restore_node(name)
                break
    elif choice == 4:
        isolated = rng.sample(names, rng.randint(1, 3))
        cluster.partition([WRITER], isolated)
    elif choice == 5:
        cluster.heal()
    else:
        transport.set_faults(
            NetworkFaults(
                loss=rng.uniform(0, loss_max),
                duplication=rng.uniform(0, duplication_max),
            )
        )


def lose_disk(rng: random.Random, volume: Volume, disks: dict[str, SimulatedDisk]) -> None:
    """A node's drive is replaced: it stops, comes back empty and must be repaired."""
    cluster = volume.cluster
    name = rng.choice(NODE_NAMES)
    cluster.fail_node(name)
    disks[name].files.clear()
    volume.nodes[name].failed = "its drive was replaced"  # restore_node reloads it
    cluster.restore_node(name)


def reopen_with_every_node(
    transport: SimulatedTransport, names: Iterable[str], reopen: Callable[[], Volume]
) -> Volume:
    """A recovering writer's open; when too few nodes answer, every node is brought back
    (no loss, no partition, none down) and the open tried again."""
    try:
        return reopen()
    except AuroraStorageError:
        transport.set_faults(NetworkFaults())
        transport.heal()
        for name in names:
            transport.set_down(name, False)
        return reopen()


class SimulationFailure(AssertionError):
    def __init__(self, seed: int, step: int, detail: str, kind: str = "Simulation") -> None:
        self.seed = seed
        self.step = step
        super().__init__(f"seed {seed}, step {step}: {detail} (replay: {kind}({seed}))")


@dataclass
class Model:
    """Page images after every commit: page -> ascending LSNs and images."""

    page_size: int
    lsns: dict[int, list[int]] = field(default_factory=dict)
    images: dict[int, list[bytes]] = field(default_factory=dict)

    def apply(self, lsn: int, changes: list[tuple[int, int, bytes]]) -> None:
        current: dict[int, bytearray] = {}
        for page_no, offset, data in changes:
            if page_no not in current:
                current[page_no] = bytearray(self.at(page_no, lsn))
            current[page_no][offset : offset + len(data)] = data
        for page_no, image in current.items():
            self.lsns.setdefault(page_no, []).append(lsn)
            self.images.setdefault(page_no, []).append(bytes(image))

    def annul(self, lo: int, hi: int) -> None:
        """Forgets the images of commits in (lo, hi], as a truncation does."""
        for page_no, lsns in self.lsns.items():
            keep = [i for i, lsn in enumerate(lsns) if not lo < lsn <= hi]
            self.lsns[page_no] = [lsns[i] for i in keep]
            self.images[page_no] = [self.images[page_no][i] for i in keep]

    def at(self, page_no: int, lsn: int) -> bytes:
        lsns = self.lsns.get(page_no, [])
        index = bisect.bisect_right(lsns, lsn)
        return self.images[page_no][index - 1] if index else bytes(self.page_size)


class TimelineModel:
    """What a volume shows at each moment: (time, pages) after every commit or backtrack.

    The reference for backtrack and point-in-time restore: the state at time T
    is the last entry at or before T, whatever LSNs produced it.
    """

    def __init__(self, start: float, page_size: int) -> None:
        self.page_size = page_size
        self.events: list[tuple[float, dict[int, bytes]]] = [(start, {})]

    def at(self, moment: float) -> dict[int, bytes]:
        times = [time for time, _ in self.events]
        index = bisect.bisect_right(times, moment)
        return self.events[index - 1][1] if index else {}

    def commit(self, time: float, changes: list[tuple[int, int, bytes]]) -> None:
        pages = dict(self.events[-1][1])
        for page_no, offset, data in changes:
            image = bytearray(pages.get(page_no, bytes(self.page_size)))
            image[offset : offset + len(data)] = data
            pages[page_no] = bytes(image)
        self.events.append((time, pages))

    def backtrack(self, now: float, target: float) -> None:
        self.events.append((now, dict(self.at(target))))


@dataclass
class Outcome:
    seed: int
    steps: int
    commits_acknowledged: int
    commits_in_doubt: int
    commits_refused: int
    reads_served: int
    reads_unavailable: int
    vdl: int
    trace_hash: str


class Simulation:
    def __init__(
        self,
        seed: int,
        *,
        loss_max: float = 0.3,
        duplication_max: float = 0.5,
        fault_rate: float = 0.15,
        repairs: bool = False,
    ) -> None:
        self.seed = seed
        self.random = random.Random(seed)
        self.clock = SimulatedClock(1_700_000_000.0)
        self.transport = SimulatedTransport(seed, self.clock, NetworkFaults(), tick_interval=0.05)
        # With repairs, nodes keep simulated disks, and a fault may replace one's drive.
        self.disks: dict[str, SimulatedDisk] | None = (
            {name: SimulatedDisk(seed * len(NODE_NAMES) + i) for i, name in enumerate(NODE_NAMES)}
            if repairs
            else None
        )
        self.volume = simulated_volume(self.clock, self.transport, disks=self.disks)
        self.drives_replaced = 0
        self.model = Model(PAGE_SIZE)
        self.loss_max = loss_max
        self.duplication_max = duplication_max
        self.fault_rate = fault_rate
        self.step_number = 0
        self.acknowledged: list[int] = []
        self.in_doubt: list[int] = []
        self.refused = 0  # commits refused while an earlier one was in doubt
        self.committed: list[int] = []  # every CPL handed out, acknowledged or in doubt
        self.reads_served = 0
        self.reads_unavailable = 0
        self.last_vdl = 0
        self.last_vcl = 0

    def fail(self, detail: str) -> None:
        raise SimulationFailure(self.seed, self.step_number, detail)

    # --- actions --------------------------------------------------------------------------

    def random_changes(self) -> list[tuple[int, int, bytes]]:
        return random_changes(self.random)

    def commit(self, changes: list[tuple[int, int, bytes]] | None = None) -> bool:
        """Commits one MTR (random unless given); True if acknowledged, False if in doubt."""
        if changes is None:
            changes = self.random_changes()
        tx = self.volume.transaction()
        for page_no, offset, data in changes:
            tx.write(page_no, offset, data)
        allocated = self.volume.allocated_lsn
        cpl = allocated + len(changes)
        doubted = [lsn for lsn in self.in_doubt if lsn > self.volume.vdl]
        try:
            lsn = tx.commit()
        except InDoubtError:
            if self.volume.allocated_lsn != allocated:
                self.fail(f"a refused commit allocated LSNs {allocated + 1}..")
            self.refused += 1
            return False
        except WriteQuorumError as error:
            if error.lsn != cpl:
                self.fail(f"in-doubt commit reports LSN {error.lsn}, allocated {cpl}")
            # The model learns the MTR at the LSN it got: it may still become durable.
            self.model.apply(cpl, changes)
            self.committed.append(cpl)
            self.in_doubt.append(cpl)
            return False
        if lsn != cpl:
            self.fail(f"commit returned LSN {lsn}, expected {cpl}")
        unresolved = [doubt for doubt in doubted if doubt > self.volume.vdl]
        if unresolved:
            self.fail(f"commit {lsn} accepted while {unresolved} were in doubt")
        self.model.apply(cpl, changes)
        self.committed.append(cpl)
        self.acknowledged.append(lsn)
        return True

    def read(self, page_no: int | None = None, read_point: int | None = None) -> bool:
        """Reads a page (random unless given) and checks it; False if no segment could serve."""
        rng = self.random
        if page_no is None:
            page_no = rng.randrange(PAGE_COUNT)
        vdl = self.volume.vdl
        if read_point is None:
            # Read points are consistent points: VDL or an earlier commit's CPL.
            earlier = [cpl for cpl in self.committed if cpl <= vdl]
            read_point = vdl if rng.random() < 0.7 or not earlier else rng.choice(earlier)
        try:
            image = self.volume.read_page(page_no, lsn=read_point)
        except VersionGoneError:
            # Segments that fold and trim often (a repair simulation) keep no version
            # below VDL that no read view pins: an older read point may be gone.
            if self.disks is None or read_point >= vdl:
                raise
            self.reads_unavailable += 1
            return False
        except ReadUnavailableError as error:
            server = self.able_to_serve(page_no // PAGES_PER_PG, read_point)
            if server is not None:
                self.fail(
                    f"read of page {page_no} at LSN {read_point} failed ({error}) "
                    f"though {server} holds its PG up to it"
                )
            self.reads_unavailable += 1
            return False
        self.reads_served += 1
        expected = self.model.at(page_no, read_point)
        if image != expected:
            self.fail(f"page {page_no} at LSN {read_point} differs from the model")
        return True

    def able_to_serve(self, pg_id: int, read_point: int) -> str | None:
        """A node the writer can reach without loss whose acknowledged SCL covers every
        record of the PG at or below ``read_point``, or None.

        The PG's records come from the segments' own chains, not from the
        writer's bookkeeping that the read path uses.
        """
        volume = self.volume
        pg = volume.pgs.get(pg_id)
        if pg is None or self.transport.faults.loss:
            return None
        needed = 0
        for node in volume.nodes.values():
            segment = node.segments.get(pg_id)
            if segment is None:
                continue
            index = bisect.bisect_right(segment.chain_last_lsns, read_point)
            if index:
                needed = max(needed, segment.chain_last_lsns[index - 1])
            elif segment.chain_base_lsn <= read_point:
                needed = max(needed, segment.chain_base_lsn)
            if (
                index < len(segment.chain_first_lsns)
                and segment.chain_first_lsns[index] <= read_point
            ):
                # A frame that holds records at or below the read point and ends above it.
                needed = max(needed, segment.chain_last_lsns[index])
        for name in pg.quorum.members:
            storage = volume.nodes[name]
            held = storage.segments.get(pg_id)
            scl = held.scl if held is not None else storage.dormant.get(pg_id, (0,))[0]
            if (
                # A segment the writer heard acknowledge this far (it reads no other).
                pg.scls.get(name, 0) >= max(needed, 1)
                # A node that lost its drive since it acknowledged holds none of it
                # (the writer learns that only when it hears from the node again).
                and scl >= needed
                and not (held is not None and held.needs_repair)
                and self.transport.link_open(WRITER, name)
                and self.transport.link_open(name, WRITER)
            ):
                return name
        return None

    def inject_fault(self) -> None:
        if self.disks is not None and self.random.random() < 0.25:
            # One lost drive at a time: a second before the first is repaired, and a
            # third, can lose acknowledged frames outright (six copies, not more).
            if self._all_whole():
                lose_disk(self.random, self.volume, self.disks)
                self.drives_replaced += 1
            return
        inject_fault(self.random, self.volume, self.transport, self.loss_max, self.duplication_max)

    def _all_whole(self) -> bool:
        """True if no node lost its drive and is still short of repaired and caught up."""
        return not any(
            storage.suspect or any(held.suspect for held in storage.segments.values())
            for storage in self.volume.nodes.values()
        )

    def step(self) -> None:
        self.step_number += 1
        roll = self.random.random()
        if roll < self.fault_rate:
            self.inject_fault()
        elif roll < 0.6:
            self.commit()
        else:
            self.read()
        self.check()

    # --- invariants ---------------------------------------------------------------------

    def check(self) -> None:
        volume = self.volume
        vdl, vcl = volume.vdl, volume.vcl
        if vdl < self.last_vdl or vcl < self.last_vcl:
            self.fail(f"VDL/VCL went back: {self.last_vdl}/{self.last_vcl} -> {vdl}/{vcl}")
        if not vdl <= vcl <= volume.allocated_lsn:
            self.fail(f"VDL {vdl} <= VCL {vcl} <= allocated {volume.allocated_lsn} broken")
        self.last_vdl, self.last_vcl = vdl, vcl
        if self.acknowledged and self.acknowledged[-1] > vdl:
            self.fail(f"acknowledged commit {self.acknowledged[-1]} above VDL {vdl}")
        for node in volume.nodes.values():
            for segment in node.segments.values():
                if segment.scl > volume.allocated_lsn:
                    self.fail(f"{node.name} PG {segment.pg_id} SCL {segment.scl} above allocated")

    def converge(self, seconds: float = 30.0) -> None:
        """Stops faults, heals, waits, and demands identical replicas equal to the model."""
        cluster = self.volume.cluster
        self.transport.set_faults(NetworkFaults())
        for name in list(self.volume.nodes):
            if not cluster.is_up(name):
                cluster.restore_node(name)
        cluster.heal()
        volume = self.volume

        def members(pg_id: int) -> list[StorageNode]:
            return [volume.nodes[name] for name in volume.placement.members(pg_id)]

        def converged() -> bool:
            return not volume._changes and all(
                node.segments.get(pg.pg_id) is not None
                and node.segments[pg.pg_id].scl == pg.tail_lsn
                for pg in volume.pgs.values()
                for node in members(pg.pg_id)
            )

        if not self.transport.run_until(converged, seconds):
            lagging = [
                f"{node.name}/PG{pg.pg_id}"
                for pg in volume.pgs.values()
                for node in members(pg.pg_id)
                if node.segments.get(pg.pg_id) is None or node.segments[pg.pg_id].scl != pg.tail_lsn
            ] + [f"PG{pg_id} changing membership" for pg_id in volume._changes]
            self.fail(f"replicas did not converge in {seconds} s: {lagging[:6]}")
        self.transport.run_until(lambda: volume.vcl == volume.allocated_lsn, seconds)
        if volume.vcl != volume.allocated_lsn:
            self.fail(f"VCL {volume.vcl} short of {volume.allocated_lsn} after convergence")
        self.check()
        vdl = volume.vdl
        for page_no in range(PAGE_COUNT):
            pg_id = page_no // PAGES_PER_PG
            expected = self.model.at(page_no, vdl)
            if pg_id not in volume.pgs:
                continue
            for node in members(pg_id):
                image = node.segments[pg_id].read(page_no, vdl, volume.annulled)
                if image != expected:
                    self.fail(f"{node.name} page {page_no} differs from the model at VDL {vdl}")

    def run(self, steps: int) -> Outcome:
        try:
            for _ in range(steps):
                self.step()
            self.converge()
        except SimulationFailure:
            raise
        except AuroraStorageError as error:
            self.fail(f"unexpected {type(error).__name__}: {error}")
        return Outcome(
            self.seed,
            self.step_number,
            len(self.acknowledged),
            len(self.in_doubt),
            self.refused,
            self.reads_served,
            self.reads_unavailable,
            self.volume.vdl,
            self.transport.trace_hash,
        )


class HistorySimulation:
    """Commits and backtracks under faults and writer crashes, against a timeline model.

    The nodes keep their files on simulated disks, so the writer can crash
    (:meth:`crash`) and a new one recover the volume from them. The model
    (:class:`TimelineModel`) learns every change the volume accepted; a
    commit or backtrack that raised is *in doubt* until the volume settles it:
    a commit once VDL covers it (it took effect) or recovery annulled it; a
    backtrack once its history is rewritten (abandoned) or a recovery adopted
    it. After every step every page at VDL must equal the model, nothing may
    be accepted while something is in doubt, and a recovery may adopt a failed
    backtrack only while nothing was accepted after it.
    """

    def __init__(self, seed: int, *, fault_rate: float = 0.2, crash_rate: float = 0.05) -> None:
        self.seed = seed
        self.random = random.Random(seed)
        self.clock = SimulatedClock(1_700_000_000.0)
        self.transport = SimulatedTransport(seed, self.clock, NetworkFaults(), tick_interval=0.05)
        self.disks: dict[str, Disk] = {
            name: SimulatedDisk(seed * len(NODE_NAMES) + i) for i, name in enumerate(NODE_NAMES)
        }
        self.volume = simulated_volume(
            self.clock,
            self.transport,
            disks=self.disks,
            durability="fsync",
            backtrack_window=HISTORY_WINDOW,
        )
        self.model = TimelineModel(self.clock.now(), PAGE_SIZE)
        self.fault_rate = fault_rate
        self.crash_rate = crash_rate
        self.step_number = 0
        # In doubt: (CPL, commit time, changes) of commits that raised, oldest first,
        # and (history version time, target) of a backtrack that raised in doubt.
        self.pending_commits: list[tuple[int, float, list[tuple[int, int, bytes]]]] = []
        self.pending_backtrack: tuple[float, float] | None = None
        self.counts = dict.fromkeys(
            (
                "commits",
                "commits_in_doubt",
                "backtracks",
                "backtracks_failed",
                "backtracks_in_doubt",
                "refused",
                "crashes",
                "adopted",
            ),
            0,
        )

    def fail(self, detail: str) -> None:
        raise SimulationFailure(self.seed, self.step_number, detail, "HistorySimulation")

    def _in_doubt(self) -> bool:
        return bool(self.pending_commits) or self.pending_backtrack is not None

    def commit(self) -> None:
        volume = self.volume
        changes = random_changes(self.random)
        tx = volume.transaction()
        for page_no, offset, data in changes:
            tx.write(page_no, offset, data)
        doubted = self._in_doubt()
        allocated = volume.allocated_lsn
        try:
            tx.commit()
        except (InDoubtError, DegradedVolumeError):
            if volume.allocated_lsn != allocated:
                self.fail("a refused commit allocated LSNs")
            self.counts["refused"] += 1
            return
        except WriteQuorumError as error:
            self.pending_commits.append((error.lsn, volume._last_commit_time, changes))
            self.counts["commits_in_doubt"] += 1
            return
        self.settle()
        if doubted and self._in_doubt():
            self.fail("a commit was accepted while an earlier change was in doubt")
        self.model.commit(volume._last_commit_time, changes)
        self.counts["commits"] += 1

    def backtrack(self) -> None:
        volume = self.volume
        earliest, latest = volume.backtrack_window
        target = self.random.uniform(earliest, latest)
        doubted = self._in_doubt()
        versions = volume.history.current.version
        try:
            volume.backtrack(to=target)
        except (InDoubtError, DegradedVolumeError):
            self.counts["refused"] += 1
            return
        except BacktrackQuorumError as error:
            self.counts["backtracks_failed"] += 1
            if error.in_doubt:
                self.counts["backtracks_in_doubt"] += 1
                self.pending_backtrack = (max(self.clock.now(), volume._last_commit_time), target)
            if volume.history.current.version != versions:
                self.fail("a failed backtrack changed the history the writer keeps")
            return
        except (ReadUnavailableError, WriteQuorumError):
            return  # too few nodes answered the time index, or commits still in flight
        self.settle()
        if doubted and self._in_doubt():
            self.fail("a backtrack was accepted while an earlier change was in doubt")
        self.model.backtrack(volume.history.current.created_at, target)
        self.counts["backtracks"] += 1

    def settle(self) -> None:
        """Learns what the volume resolved: durable commits, abandoned backtracks."""
        volume = self.volume
        while self.pending_commits and self.pending_commits[0][0] <= volume.vdl:
            _, time, changes = self.pending_commits.pop(0)
            self.model.commit(time, changes)
        if self.pending_backtrack is not None and volume.backtrack_in_doubt is None:
            self.pending_backtrack = None  # abandoned: the history went back on a quorum

    def crash(self) -> None:
        """The writer crashes; a new one recovers the volume from the nodes' disks."""
        volume = self.volume
        before = volume.history.current
        options, volume_id = volume.options, volume.volume_id
        volume.simulate_crash()
        self.counts["crashes"] += 1

        def reopen() -> Volume:
            return Volume.open(
                options=options,
                disks=self.disks,
                volume_id=volume_id,
                transport=self.transport,
                clock=self.clock,
            )

        volume = reopen_with_every_node(self.transport, NODE_NAMES, reopen)
        self.volume = volume
        # Recovery decided every doubt: commits are durable or annulled.
        for cpl, time, changes in self.pending_commits:
            annulled = any(lo < cpl <= hi for _, lo, hi in volume.truncations)
            if not annulled:
                if cpl > volume.vdl:
                    self.fail(f"in-doubt commit {cpl} neither durable nor annulled")
                self.model.commit(time, changes)
        self.pending_commits.clear()
        after = volume.history.current
        if (after.version, after.created_at) != (before.version, before.created_at):
            pending = self.pending_backtrack
            if pending is None or (after.version, after.created_at) != (
                before.version + 1,
                pending[0],
            ):
                self.fail(f"recovery adopted a history the session never had: {after}")
                return
            self.model.backtrack(after.created_at, pending[1])
            self.counts["adopted"] += 1
        self.pending_backtrack = None

    def inject_fault(self) -> None:
        inject_fault(self.random, self.volume, self.transport, 0.3, 0.5)

    def check(self) -> None:
        """Every page at VDL equals the model, once the model knows what VDL settled."""
        volume = self.volume
        for _ in range(CHECK_ROUNDS_MAX):
            # A read lets virtual time pass, and an in-doubt commit may become durable
            # meanwhile: compare only a round of reads that saw one VDL.
            vdl = volume.vdl
            images: dict[int, bytes] = {}
            for page_no in range(PAGE_COUNT):
                try:
                    images[page_no] = volume.read_page(page_no, lsn=vdl)
                except ReadUnavailableError:
                    continue
            if volume.vdl == vdl:
                break
        self.settle()
        expected = self.model.events[-1][1]
        for page_no, image in images.items():
            if image != expected.get(page_no, bytes(PAGE_SIZE)):
                self.fail(f"page {page_no} at VDL {vdl} differs from the model")

    def step(self) -> None:
        self.step_number += 1
        roll = self.random.random()
        if roll < self.crash_rate:
            self.crash()
        elif roll < self.crash_rate + self.fault_rate:
            self.inject_fault()
        elif roll < 0.55:
            self.commit()
        elif roll < 0.7:
            self.backtrack()
        else:
            self.clock.advance(self.random.uniform(1, HISTORY_WINDOW / 8))
        self.check()

    def run(self, steps: int) -> dict[str, int]:
        try:
            for _ in range(steps):
                self.step()
            self.transport.set_faults(NetworkFaults())
            self.transport.heal()
            for name in NODE_NAMES:
                if not self.volume.cluster.is_up(name):
                    self.volume.cluster.restore_node(name)
            self.crash()  # a last recovery settles every doubt
            self.check()
        except SimulationFailure:
            raise
        except AuroraStorageError as error:
            self.fail(f"unexpected {type(error).__name__}: {error}")
        return dict(self.counts)


FLEET_NODES = 9
FLEET_REPAIR_AFTER = 2.0  # seconds a node may be unreachable before its segments move


class FleetSimulation:
    """Commits, reads, segment moves and repairs on a fleet of nine nodes on simulated
    disks, under node, AZ and partition faults, message loss and writer crashes.

    A node unreachable for FLEET_REPAIR_AFTER seconds has its segments repaired on
    another node of its AZ (a new one from the spare disks when none is free);
    moves start at random, also while other changes run; faults hit during them
    (the replaced node returning mid-hydration, a second failure, a partition
    cutting a node off from the others) and the writer crashes, sometimes
    reopened from the placement it recorded steps before (a volume.meta that
    missed the latest changes). Invariants, after every step: every page read
    at VDL equals the model; no membership epoch of a PG holds two different
    member sets anywhere; each node's membership epochs never go back. At the
    end, with faults gone: every change finished or undone, every member of
    every PG complete at its last LSN and equal to the model.
    """

    def __init__(
        self,
        seed: int,
        *,
        fault_rate: float = 0.15,
        crash_rate: float = 0.04,
        move_rate: float = 0.1,
    ) -> None:
        self.seed = seed
        self.random = random.Random(seed)
        self.clock = SimulatedClock(1_700_000_000.0)
        self.transport = SimulatedTransport(seed, self.clock, NetworkFaults(), tick_interval=0.05)
        fleet = node_names(FLEET_NODES)
        spares = [f"{az}-{letter}" for az in AZS for letter in "defg"]
        self.all_disks: dict[str, Disk] = {
            name: SimulatedDisk(seed * 64 + i) for i, name in enumerate([*fleet, *spares])
        }
        self.volume = simulated_volume(
            self.clock,
            self.transport,
            disks={name: self.all_disks[name] for name in fleet},
            spare_disks={name: self.all_disks[name] for name in spares},
            nodes=FLEET_NODES,
            durability="os",
            repair_after=FLEET_REPAIR_AFTER,
        )
        self.model = Model(PAGE_SIZE)
        self.fault_rate = fault_rate
        self.crash_rate = crash_rate
        self.move_rate = move_rate
        self.step_number = 0
        self.acknowledged: list[int] = []
        self.in_doubt: list[tuple[int, list[tuple[int, int, bytes]]]] = []
        self.options_seen: list[Any] = [dataclasses.replace(self.volume.options)]
        # (PG, membership epoch) -> member sets, and (node, PG) -> last epoch, as seen.
        self.memberships: dict[tuple[int, tuple[int, int]], tuple[tuple[str, ...], ...]] = {}
        self.last_epochs: dict[tuple[str, int], tuple[int, int]] = {}
        self.counts = dict.fromkeys(
            ("commits", "in_doubt", "refused", "moves", "moves_refused", "crashes", "reads"), 0
        )

    def fail(self, detail: str) -> None:
        raise SimulationFailure(self.seed, self.step_number, detail, "FleetSimulation")

    # --- actions --------------------------------------------------------------------------

    def commit(self) -> None:
        volume = self.volume
        changes = random_changes(self.random)
        tx = volume.transaction()
        for page_no, offset, data in changes:
            tx.write(page_no, offset, data)
        try:
            lsn = tx.commit()
        except (InDoubtError, DegradedVolumeError):
            self.counts["refused"] += 1
            return
        except WriteQuorumError as error:
            self.in_doubt.append((error.lsn, changes))
            self.model.apply(error.lsn, changes)
            self.counts["in_doubt"] += 1
            return
        self.model.apply(lsn, changes)
        self.acknowledged.append(lsn)
        self.counts["commits"] += 1

    def read(self) -> None:
        volume = self.volume
        page_no = self.random.randrange(PAGE_COUNT)
        vdl = volume.vdl
        try:
            image = volume.read_page(page_no, lsn=vdl)
        except (ReadUnavailableError, VersionGoneError):
            return
        self.counts["reads"] += 1
        if image != self.model.at(page_no, vdl):
            self.fail(f"page {page_no} at VDL {vdl} differs from the model")

    def move(self) -> None:
        volume = self.volume
        if not volume.pgs:
            return
        pg_id = self.random.choice(sorted(volume.pgs))
        members = volume.placement.membership(pg_id).member_sets[-1]
        source = self.random.choice(members)
        choices = [
            name
            for name in volume.placement.nodes_in(az_of(source))
            if name not in members and volume.cluster.is_up(name)
        ]
        if not choices:
            return
        try:
            volume.cluster.move_segment(pg_id, source, self.random.choice(choices))
        except (MembershipChangeError, PlacementError, QuorumError):
            self.counts["moves_refused"] += 1
            return
        self.counts["moves"] += 1

    def crash(self) -> None:
        """The writer crashes; a new one recovers from the nodes' disks, now and then with
        the placement volume.meta held some steps ago."""
        volume = self.volume
        current = dataclasses.replace(volume.options)
        options = current
        if self.random.random() < 0.3:
            options = dataclasses.replace(self.random.choice(self.options_seen))
        volume.simulate_crash()
        self.counts["crashes"] += 1
        fleet = placement_of(current).fleet  # every node made so far has a folder

        def reopen() -> Volume:
            return Volume.open(
                options=dataclasses.replace(options, placement=_with_fleet(options, fleet)),
                disks={name: self.all_disks[name] for name in fleet},
                spare_disks={n: d for n, d in self.all_disks.items() if n not in fleet},
                volume_id=volume.volume_id,
                transport=self.transport,
                clock=self.clock,
                repair_after=FLEET_REPAIR_AFTER,
            )

        reopened = reopen_with_every_node(self.transport, fleet, reopen)
        self.volume = reopened
        for cpl, _ in self.in_doubt:
            annulled = any(lo < cpl <= hi for _, lo, hi in reopened.truncations)
            if annulled:
                self.model.annul(cpl - 1, cpl)
            elif cpl > reopened.vdl:
                self.fail(f"in-doubt commit {cpl} neither durable nor annulled")
        self.in_doubt.clear()
        if self.acknowledged and self.acknowledged[-1] > reopened.vdl:
            self.fail(f"acknowledged commit {self.acknowledged[-1]} lost: VDL {reopened.vdl}")

    def step(self) -> None:
        self.step_number += 1
        roll = self.random.random()
        if roll < self.crash_rate:
            self.crash()
        elif roll < self.crash_rate + self.fault_rate:
            inject_fault(self.random, self.volume, self.transport, 0.2, 0.3)
        elif roll < self.crash_rate + self.fault_rate + self.move_rate:
            self.move()
        elif roll < 0.75:
            self.commit()
        elif roll < 0.9:
            self.read()
        else:
            self.clock.advance(self.random.uniform(0.5, 3 * FLEET_REPAIR_AFTER))
        if self.random.random() < 0.1:
            self.options_seen.append(dataclasses.replace(self.volume.options))
        self.check()

    # --- invariants -------------------------------------------------------------------------

    def check(self) -> None:
        volume = self.volume
        holders = [("writer", volume.placement)] + [
            (name, node.placement) for name, node in volume.nodes.items()
        ]
        for holder, placement in holders:
            for pg_id, membership in placement.changes.items():
                key = (pg_id, membership.epoch)
                seen = self.memberships.setdefault(key, membership.member_sets)
                if seen != membership.member_sets:
                    self.fail(
                        f"PG {pg_id} epoch {membership.epoch}: {holder} holds "
                        f"{membership.member_sets}, another {seen}"
                    )
                if holder == "writer":
                    continue
                last = self.last_epochs.get((holder, pg_id), (0, 0))
                if membership.epoch < last:
                    self.fail(f"{holder}: PG {pg_id}'s membership epoch went back to {key[1]}")
                self.last_epochs[(holder, pg_id)] = membership.epoch

    def converge(self, seconds: float = 60.0) -> None:
        """Faults gone: every change finishes, every member of every PG completes."""
        volume = self.volume
        self.transport.set_faults(NetworkFaults())
        volume.cluster.heal()
        for name in list(volume.nodes):
            if not volume.cluster.is_up(name):
                volume.cluster.restore_node(name)

        def complete() -> bool:
            return not volume._changes and all(
                pg_id in volume.nodes[name].segments
                and volume.nodes[name].segments[pg_id].scl == pg.tail_lsn
                and not volume.nodes[name].segments[pg_id].suspect
                for pg_id, pg in volume.pgs.items()
                for name in volume.placement.members(pg_id)
            )

        deadline = self.clock.now() + seconds
        while not complete() and self.clock.now() < deadline:
            self.transport.run_until(complete, 1.0)
            volume.cluster.check_repairs()
        if not complete():
            lagging = [f"PG{pg_id} changing" for pg_id in volume._changes] + [
                f"{name}/PG{pg_id}"
                for pg_id in volume.pgs
                for name in volume.placement.members(pg_id)
                if pg_id not in volume.nodes[name].segments
                or volume.nodes[name].segments[pg_id].scl != volume.pgs[pg_id].tail_lsn
            ]
            self.fail(f"the fleet did not converge in {seconds} s: {lagging[:6]}")
        vdl = volume.vdl
        for page_no in range(PAGE_COUNT):
            pg_id = page_no // PAGES_PER_PG
            if pg_id not in volume.pgs:
                continue
            expected = self.model.at(page_no, vdl)
            for name in volume.placement.members(pg_id):
                image = volume.nodes[name].segments[pg_id].read(page_no, vdl, volume.annulled)
                if image != expected:
                    self.fail(f"{name} page {page_no} differs from the model at VDL {vdl}")

    def run(self, steps: int) -> dict[str, int]:
        try:
            for _ in range(steps):
                self.step()
            self.converge()
            self.check()
        except SimulationFailure:
            raise
        except AuroraStorageError as error:
            self.fail(f"unexpected {type(error).__name__}: {error}")
        return dict(self.counts)


def _with_fleet(options: Any, fleet: tuple[str, ...]) -> dict[str, Any]:
    """The placement record of ``options`` naming every node of ``fleet`` (an older
    record may predate a node a repair added: its folder is there all the same)."""
    placement = placement_of(options)
    for name in fleet:
        if name not in placement.fleet:
            placement.added.append(name)
    return placement.encode()
