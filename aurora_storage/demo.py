"""``aurora-storage demo``: the whole volume in under a minute, each step checked.

The tour runs the embedded default (six in-process storage nodes with fsync
durability, in a temporary folder) on a simulated clock, so hours of history
pass in moments: a write workload; a lost AZ; a lost AZ plus a node; nodes
coming back; a writer crash and recovery; a backtrack and a move forward
again; a point-in-time restore into a new volume. Every step prints the
figures that prove it, and the exit status is non-zero if any check fails.
"""

from __future__ import annotations

import argparse
import random
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from .clock import SimulatedClock
from .errors import InvalidArgumentError, WriteQuorumError
from .volume import Volume

PAGE = 16 * 1024
PAGES = 512
PAGES_PER_PG = 64
REPAIR_AFTER = 600.0  # seconds the tour lets a node be unreachable before repairing it


class Tour:
    def __init__(self) -> None:
        self.failures: list[str] = []
        self.checks = 0
        self.started = time.perf_counter()

    def check(self, condition: bool, what: str) -> bool:
        self.checks += 1
        if not condition:
            self.failures.append(what)
            print(f"   FAILED: {what}")
        return condition

    def step(self, title: str, detail: str) -> None:
        print(f"{title:<26} {detail}")


def _matches(volume: Volume, model: dict[int, bytes]) -> bool:
    return all(volume.read_page(p) == model.get(p, bytes(PAGE)) for p in range(PAGES))


def run(arguments: argparse.Namespace) -> int:
    if arguments.path:
        _check_new_folder(Path(arguments.path))
    folder = (
        Path(arguments.path) if arguments.path else Path(tempfile.mkdtemp(prefix="aurora-demo-"))
    )
    try:
        return _tour(folder)
    finally:
        if not arguments.keep and not arguments.path:
            shutil.rmtree(folder, ignore_errors=True)


def _check_new_folder(folder: Path) -> None:
    """The demo writes a volume, a backup and a restored volume into ``folder``: it
    takes only a new or empty folder, never one holding a volume or other files."""
    if not folder.exists():
        return
    if not folder.is_dir():
        raise InvalidArgumentError(
            f"demo --path {folder}: it is a file; give a new or empty folder"
        )
    if (folder / "volume.meta").exists():
        raise InvalidArgumentError(
            f"demo --path {folder}: it is an aurora-storage volume; the demo leaves it alone "
            "(give a new or empty folder)"
        )
    if any(folder.iterdir()):
        raise InvalidArgumentError(
            f"demo --path {folder}: the folder is not empty; give a new or empty folder"
        )


def _tour(folder: Path) -> int:
    """Runs the seven steps on a new volume in ``folder``; returns the exit status."""
    run = _Run.create(folder)
    run.write_workload()
    run.lose_an_az()
    in_doubt = run.lose_an_az_and_a_node()
    run.restore_the_nodes(in_doubt)
    run.repair_a_lost_node()
    run.crash_the_writer()
    run.backtrack()
    run.restore_to_a_point_in_time()
    return run.summary()


@dataclass
class _Run:
    """One tour's state: its checks, seeded draws, simulated clock, volume and pages' model.

    The steps run in order on the same ``rng`` and ``clock``, so the draws and the
    clock's advances, and with them every printed figure, are the same each run.
    """

    tour: Tour
    rng: random.Random
    clock: SimulatedClock
    folder: Path
    path: Path
    volume: Volume
    model: dict[int, bytes] = field(default_factory=dict)

    @classmethod
    def create(cls, folder: Path) -> _Run:
        """The volume the tour runs on, with its backup in ``folder``, and the header naming it."""
        tour = Tour()
        rng = random.Random(2017)
        clock = SimulatedClock(start=1_767_225_600.0)  # 2026-01-01T00:00:00Z
        path = folder / "volume"
        volume = Volume.create(
            path,
            page_size=PAGE,
            segment_size=PAGE * PAGES_PER_PG,
            clock=clock,
            backtrack_window=72 * 3600,
            backup=str(folder / "backup"),
            backup_retention_days=7,
            backup_staging_interval=300,
            # Steps 2 to 4 show the quorums with nodes down for minutes; step 5 a node
            # down for good, repaired once it has been unreachable this long.
            repair_after=REPAIR_AFTER,
        )
        print(
            f"volume at {path}: 128 TiB addressable, pages of 16 KiB, PGs of {PAGES_PER_PG} pages,"
        )
        print("six nodes az1-a .. az3-b, fsync durability, 72 h backtrack window, 7-day backup\n")
        return cls(tour, rng, clock, folder, path, volume)

    def commit(self, commits: int) -> int:
        """Commits MTRs of four records on random pages; returns the last LSN."""
        lsn = 0
        for _ in range(commits):
            changes = []
            for _ in range(4):
                page_no = self.rng.randrange(PAGES)
                data = self.rng.randbytes(self.rng.randint(16, 200))
                changes.append((page_no, self.rng.randrange(PAGE - len(data)), data))
            with self.volume.transaction() as tx:
                for page_no, offset, data in changes:
                    tx.write(page_no, offset, data)
            lsn = tx.lsn
            for page_no, offset, data in changes:
                image = bytearray(self.model.get(page_no, bytes(PAGE)))
                image[offset : offset + len(data)] = data
                self.model[page_no] = bytes(image)
        return lsn

    def write_workload(self) -> None:
        """Step 1: an hour of commits with fsync, and the pages they leave on disk."""
        started = time.perf_counter()
        for _ in range(6):
            self.clock.advance(600)
            self.commit(50)
        elapsed = time.perf_counter() - started
        status = self.volume.status()
        self.tour.check(
            _matches(self.volume, self.model), "pages equal the model after the workload"
        )
        self.tour.step(
            "1. write workload",
            f"300 MTRs, 1200 records in {elapsed:.2f} s ({300 / elapsed:,.0f} commits/s with "
            f"fsync); VDL {self.volume.vdl}, {status['pg_count']} PGs, "
            f"{status['bytes_used']:,} bytes on disk",
        )

    def lose_an_az(self) -> None:
        """Step 2: a whole AZ down, and commits still acknowledged by the four live segments."""
        volume, clock = self.volume, self.clock
        volume.cluster.fail_az("az1")
        clock.advance(300)
        before = volume.vdl
        last = self.commit(20)
        holders = min(
            sum(1 for scl in pg.scls.values() if scl >= pg.tail_lsn) for pg in volume.pgs.values()
        )
        self.tour.check(volume.vdl == last > before, "writes continue with a whole AZ down")
        self.tour.check(holders == 4, "every PG's last frame is on exactly the four live segments")
        self.tour.step(
            "2. AZ az1 down",
            f"20 commits acknowledged by {holders} of 6 segments, VDL {before} -> {volume.vdl}",
        )

    def lose_an_az_and_a_node(self) -> int:
        """Step 3: an AZ plus a node down: a commit refused, reads served; returns its LSN."""
        volume = self.volume
        volume.cluster.fail_node("az2-a")
        self.clock.advance(60)
        vdl = volume.vdl
        in_doubt = 0
        try:
            with volume.transaction() as tx:
                tx.write(7, 0, b"written during AZ+1")
        except WriteQuorumError as error:
            in_doubt = error.lsn
        self.tour.check(in_doubt > vdl and volume.vdl == vdl, "no commit without a write quorum")
        readable = _matches(volume, self.model)
        self.tour.check(readable, "reads served by the three live segments")
        self.tour.step(
            "3. AZ az1 + node az2-a",
            f"commit at LSN {in_doubt} refused (3 of 6), VDL stays {vdl}; "
            f"{PAGES} pages read back intact from az2-b, az3-a, az3-b",
        )
        return in_doubt

    def restore_the_nodes(self, in_doubt: int) -> None:
        """Step 4: the lost nodes back, caught up by gossip, and the in-doubt commit durable."""
        volume, model = self.volume, self.model
        for name in ("az1-a", "az1-b", "az2-a"):
            volume.cluster.restore_node(name)
        image = bytearray(model.get(7, bytes(PAGE)))
        image[: len(b"written during AZ+1")] = b"written during AZ+1"
        model[7] = bytes(image)  # the in-doubt commit reached its quorum by gossip
        self.clock.advance(60)
        self.commit(10)
        caught_up = all(
            node.segments[pg_id].scl == pg.tail_lsn
            for pg_id, pg in volume.pgs.items()
            for node in volume.nodes.values()
        )
        self.tour.check(caught_up, "restored nodes caught up by gossip")
        self.tour.check(volume.vdl >= in_doubt, "the in-doubt commit became durable")
        self.tour.check(_matches(volume, model), "pages equal the model after the restore")
        self.tour.step(
            "4. nodes restored",
            f"gossip filled their holes: all {len(volume.pgs) * 6} segments at their PG's last "
            f"LSN; the in-doubt commit is durable, VDL {volume.vdl}",
        )

    def repair_a_lost_node(self) -> None:
        """Step 5: a node down for good; after ``repair_after`` its segments are repaired on
        a new node of its AZ (hydrated from a peer's pages), and the PGs keep six."""
        volume, clock = self.volume, self.clock
        volume.cluster.fail_node("az3-b")
        clock.advance(REPAIR_AFTER + 1)
        started = time.perf_counter()
        self.commit(5)  # the policy runs as the volume is used
        elapsed = time.perf_counter() - started
        placed = {node["name"]: node["placed"] for node in volume.status()["nodes"]}
        new = [name for name in volume.placement.added if placed.get(name)]
        self.tour.check(
            placed.get("az3-b") == 0 and len(new) == 1,
            "the lost node's segments are on a new node of its AZ",
        )
        complete = all(
            volume.nodes[name].segments[pg_id].scl == pg.tail_lsn
            for pg_id, pg in volume.pgs.items()
            for name in volume.placement.members(pg_id)
        )
        self.tour.check(complete, "every PG has six complete segments again")
        self.tour.check(_matches(volume, self.model), "pages equal the model after the repair")
        self.tour.step(
            "5. node lost, repaired",
            f"az3-b unreachable {REPAIR_AFTER / 60:.0f} min: its {len(volume.pgs)} segments "
            f"copied from peers onto new node {new[0] if new else '?'} in {elapsed:.2f} s",
        )

    def crash_the_writer(self) -> None:
        """Step 5: a writer crash and the recovery that reopens the volume into ``volume``."""
        acknowledged_vdl = self.volume.vdl
        self.volume.simulate_crash()
        self.clock.advance(30)
        started = time.perf_counter()
        self.volume = Volume.open(self.path, clock=self.clock)
        elapsed = time.perf_counter() - started
        plan = self.volume.recovery
        assert plan is not None
        self.tour.check(plan.vdl == acknowledged_vdl, "recovery finds every acknowledged commit")
        self.tour.check(_matches(self.volume, self.model), "pages equal the model after recovery")
        self.tour.step(
            "6. writer crash, reopen",
            f"recovered in {elapsed * 1000:.0f} ms: epoch {plan.epoch}, VDL {plan.vdl}, "
            f"truncation ({plan.truncation[0]}, {plan.truncation[1]}] annulled, no redo replayed",
        )

    def backtrack(self) -> None:
        """Step 6: a mistake undone by backtrack, redone, undone again; ``model`` ends undone."""
        volume, clock, check = self.volume, self.clock, self.tour.check
        clock.advance(3600)
        good_time = clock.now()
        good = dict(self.model)
        clock.advance(1800)
        with volume.transaction() as tx:
            for page_no in range(0, PAGES, 4):
                tx.zero_page(page_no)  # the mistake: a quarter of the volume wiped
        mistake = dict(self.model)
        for page_no in range(0, PAGES, 4):
            mistake.pop(page_no, None)
        clock.advance(600)
        mistake_time = clock.now()
        clock.advance(600)
        result = volume.backtrack(good_time)
        check(_matches(volume, good), "backtrack undoes the mistake")
        clock.advance(60)
        volume.backtrack(mistake_time)
        check(_matches(volume, mistake), "backtrack moves forward again")
        clock.advance(60)
        volume.backtrack(good_time)
        check(_matches(volume, good), "and back once more")
        earliest, latest = volume.backtrack_window
        self.tour.step(
            "7. backtrack",
            f"a wipe of {PAGES // 4} pages undone (back to LSN {result.lsn}), redone, undone "
            f"again; window {(latest - earliest) / 3600:.1f} h reachable",
        )
        self.model = good

    def restore_to_a_point_in_time(self) -> None:
        """Step 7: the backup restored to a point in time into a new volume; closes ``volume``."""
        self.clock.advance(600)
        self.commit(20)
        # A staging round ran within these commits at this clock time: commits after it
        # are stamped just after it. The restore point is a second later.
        self.clock.advance(1)
        restore_time = self.clock.now()
        restore_model = dict(self.model)
        self.clock.advance(900)
        self.commit(20)
        earliest, latest = self.volume.restorable_window
        self.volume.close()
        started = time.perf_counter()
        restored = Volume.restore(
            str(self.folder / "backup"), to=restore_time, path=self.folder / "restored"
        )
        elapsed = time.perf_counter() - started
        self.tour.check(
            _matches(restored, restore_model),
            "the restored volume holds exactly the commits up to T",
        )
        restored_status = restored.status()
        restored.close()
        self.tour.step(
            "8. point-in-time restore",
            f"to {restore_time - earliest:,.0f} s after the earliest restorable time into a new "
            f"volume in {elapsed:.2f} s: {restored_status['pg_count']} PGs, pages verified "
            f"(restorable window {(latest - earliest) / 3600:.1f} h)",
        )

    def summary(self) -> int:
        """The closing line: how many checks passed or failed; returns the exit status."""
        tour = self.tour
        total = time.perf_counter() - tour.started
        if tour.failures:
            print(f"\n{len(tour.failures)} of {tour.checks} checks FAILED in {total:.1f} s")
            return 1
        print(f"\nall {tour.checks} checks passed in {total:.1f} s")
        return 0
