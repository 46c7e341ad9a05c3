"""Crashes at every disk operation, on a crash-simulating disk (like SQLite's test6.c).

Six SimulatedDisks share one CrashPlan that stops the machine at a chosen
operation (a log append, an fsync, a metadata replacement, a truncation);
then every unsynced write is written, dropped, torn or garbled at random.
The reopened volume must hold every acknowledged commit, show whole
mini-transactions only (VDL is a commit boundary and pages equal the model
there), and take new commits. Seeds are in the test ids: rerun one to replay.
"""

from __future__ import annotations

import contextlib
import copy
import random
from typing import Any

import pytest

from aurora_storage import Volume
from aurora_storage.config import NODE_NAMES
from aurora_storage.runtime.disk import CrashPlan, SimulatedCrash, SimulatedDisk
from aurora_storage.runtime.transport import DirectTransport
from aurora_storage.sim import Model

PAGE = 4096
PAGES = 32


def fresh(seed: int, **options: Any) -> tuple[Volume, dict[str, SimulatedDisk], CrashPlan]:
    plan = CrashPlan()
    disks = {name: SimulatedDisk(seed * 10 + i, plan) for i, name in enumerate(NODE_NAMES)}
    volume = Volume.create(
        disks=disks,  # type: ignore[arg-type]
        page_size=PAGE,
        segment_size=PAGE * 4,
        capacity=PAGE * PAGES,
        transport=DirectTransport(sync_threads=0),
        **options,
    )
    return volume, disks, plan


def reopen(volume: Volume, disks: dict[str, SimulatedDisk], **options: Any) -> Volume:
    return Volume.open(
        disks=disks,  # type: ignore[arg-type]
        options=volume.options,
        volume_id=volume.volume_id,
        transport=DirectTransport(sync_threads=0),
        **options,
    )


class Workload:
    def __init__(self, seed: int) -> None:
        self.random = random.Random(seed)
        self.model = Model(PAGE)
        self.cpls = [0]
        self.acknowledged = [0]

    def run(self, volume: Volume, commits: int) -> None:
        for _ in range(commits):
            changes = []
            for _ in range(self.random.randint(1, 4)):
                page_no = self.random.randrange(PAGES)
                data = self.random.randbytes(self.random.randint(1, 40))
                changes.append((page_no, self.random.randrange(PAGE - len(data)), data))
            cpl = volume.allocated_lsn + len(changes)
            self.model.apply(cpl, changes)
            self.cpls.append(cpl)
            with volume.transaction() as tx:
                for page_no, offset, data in changes:
                    tx.write(page_no, offset, data)
            self.acknowledged.append(tx.lsn)

    def recovered(self, volume: Volume) -> None:
        """Checks the recovered VDL, then forgets the commits recovery annulled."""
        assert volume.recovery is not None
        vdl = volume.recovery.vdl
        assert vdl >= self.acknowledged[-1], "an acknowledged commit was lost"
        assert vdl in self.cpls, f"VDL {vdl} is inside a mini-transaction: {self.cpls}"
        lo, hi = volume.recovery.truncation
        self.model.annul(lo, hi)
        self.cpls = [cpl for cpl in self.cpls if not lo < cpl <= hi]

    def check(self, volume: Volume) -> None:
        vdl = volume.vdl
        assert vdl >= self.acknowledged[-1], "an acknowledged commit was lost"
        assert vdl in self.cpls, f"VDL {vdl} is not a commit boundary"
        for page_no in range(PAGES):
            assert volume.read_page(page_no) == self.model.at(page_no, vdl), page_no


def crash_and_check(seed: int, crash_at: int, mode: str = "random") -> None:
    volume, disks, plan = fresh(seed)
    workload = Workload(seed)
    workload.run(volume, 3)
    plan.crash_at = plan.operations + crash_at
    with pytest.raises(SimulatedCrash):
        workload.run(volume, 100)
    for disk in disks.values():
        disk.crash(mode)
    reopened = reopen(volume, disks)
    workload.recovered(reopened)
    workload.check(reopened)
    workload.run(reopened, 3)
    workload.check(reopened)


@pytest.mark.parametrize("crash_at", range(1, 61))
def test_crash_at_every_operation_of_a_commit_sequence(crash_at: int) -> None:
    crash_and_check(seed=1, crash_at=crash_at)


@pytest.mark.parametrize("mode", ["write", "drop", "tear", "garble"])
@pytest.mark.parametrize("crash_at", [1, 5, 12, 13, 26, 40])
def test_every_crash_outcome(mode: str, crash_at: int) -> None:
    crash_and_check(seed=2, crash_at=crash_at, mode=mode)


@pytest.mark.parametrize("seed", range(3, 23))
def test_random_crash_points(seed: int) -> None:
    crash_and_check(seed=seed, crash_at=random.Random(seed).randint(1, 300))


@pytest.mark.parametrize("seed", range(4))
def test_crash_during_recovery_repeatedly_gives_the_same_answer(seed: int) -> None:
    volume, disks, plan = fresh(seed)
    workload = Workload(seed)
    workload.run(volume, 4)
    plan.crash_at = plan.operations + 7
    with pytest.raises(SimulatedCrash):
        workload.run(volume, 50)
    for disk in disks.values():
        disk.crash()
    expected = reopen(volume, copy.deepcopy(disks)).recovery
    assert expected is not None
    crashes = 0
    for attempt in range(1, 100):
        plan.crash_at = plan.operations + attempt
        try:
            recovered = reopen(volume, disks)
        except SimulatedCrash:
            crashes += 1
            for disk in disks.values():
                disk.crash()
            continue
        assert crashes >= 5, "recovery should have been interrupted several times"
        assert recovered.recovery is not None
        assert recovered.recovery.vdl == expected.vdl
        # The same range is annulled from the same VDL. Its end may lie further out: a
        # recovery cut short after its history reached some nodes looks like a writer
        # that opened and may have allocated LSNs (recovery.py, step 5), so the next
        # one annuls those too rather than ever handing them out again.
        lo, hi = recovered.recovery.truncation
        assert lo == expected.truncation[0]
        assert hi >= expected.truncation[1]
        assert (hi - expected.truncation[1]) % volume.options.lal == 0
        workload.recovered(recovered)
        workload.check(recovered)
        return
    pytest.fail("recovery never completed")


@pytest.mark.parametrize("crash_at", range(1, 120, 3))
def test_crash_points_with_checkpoints(crash_at: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same, with segments coalescing and rewriting their logs all the time."""
    from aurora_storage.protocol import node, segment

    monkeypatch.setattr(segment, "COALESCE_RECORD_BYTES", 256)
    monkeypatch.setattr(node, "CHECKPOINT_EVERY_FRAMES", 2)
    monkeypatch.setattr(node, "META_EVERY_FRAMES", 2)
    crash_and_check(seed=crash_at, crash_at=crash_at)


def test_reopen_makes_the_logs_durable_before_recovery_counts_their_frames() -> None:
    """The writer's process dies after its frames reached every log but before any
    fsync: the logs end exactly at those frames, never flushed, never acknowledged.
    The reopen's recovery counts them (VDL covers them and readers see them), so it
    must first make them durable: an OS crash after the reopen may take nothing
    that recovery made visible, nor break the chain under later commits."""
    volume, disks, plan = fresh(seed=5)
    with volume.transaction() as tx:
        tx.write(1, 0, b"flushed and acknowledged")
    plan.crash_at = plan.operations + len(NODE_NAMES) + 1  # six appends, then the first sync
    with pytest.raises(SimulatedCrash), volume.transaction() as tx:
        tx.write(1, 0, b"in the page cache only")
    assert all(disk.files["pg-00000000.log"].unsynced for disk in disks.values())
    reopened = reopen(volume, disks)  # the OS kept the unflushed appends: no disk.crash()
    visible = reopened.read_page(1)
    assert visible[:22] == b"in the page cache only", "recovery counted the frames"
    with reopened.transaction() as tx:
        tx.write(PAGE_IN_ANOTHER_PG, 0, b"after the reopen")  # syncs PG 1's logs only
    vdl = reopened.vdl
    for disk in disks.values():
        disk.crash("drop")  # now the machine goes down: whatever was never synced is lost
    again = reopen(reopened, disks)
    assert again.vdl >= vdl
    assert again.read_page(1) == visible
    assert again.read_page(PAGE_IN_ANOTHER_PG)[:16] == b"after the reopen"


PAGE_IN_ANOTHER_PG = 5  # PGs hold segment_size // PAGE = 4 pages


@pytest.mark.parametrize("mode", ["random", "write", "drop", "tear", "garble"])
@pytest.mark.parametrize("crash_at", range(1, 200, 5))
def test_crash_points_with_history_on_disk(
    crash_at: int, mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Crashes while checkpoints fold ahead of a backtrack window (history files, the
    base store and refolded images written at every few commits), after a backtrack:
    the reopened volume holds every acknowledged commit, and a backtrack to an earlier
    commit still shows the model there."""
    from aurora_storage import SimulatedClock
    from aurora_storage.protocol import node

    monkeypatch.setattr(node, "HOT_BYTES_MAX", 512)
    monkeypatch.setattr(node, "CHECKPOINT_EVERY_FRAMES", 2)
    monkeypatch.setattr(node, "META_EVERY_FRAMES", 2)
    clock = SimulatedClock(1_700_000_000.0)
    volume, disks, plan = fresh(crash_at, clock=clock, backtrack_window=3600)
    workload = Workload(crash_at)
    times: dict[int, float] = {}

    def commit(count: int) -> None:
        for _ in range(count):
            clock.advance(10)
            workload.run(volume, 1)
            times[workload.acknowledged[-1]] = clock.now()

    commit(30)
    assert any(name.endswith(".hist") for name in disks["az1-a"].list("pg-")), "folded ahead"
    clock.advance(5)
    landed = volume.backtrack(times[workload.acknowledged[15]])
    assert landed.lsn == workload.acknowledged[15]
    workload.model.annul(landed.lsn, volume.allocated_lsn)
    # The end of the hidden range shows what the landing commit shows: a VDL there is
    # a commit boundary too.
    workload.cpls = [cpl for cpl in workload.cpls if cpl <= landed.lsn] + [volume.allocated_lsn]
    workload.acknowledged = workload.acknowledged[:16]
    plan.crash_at = plan.operations + crash_at
    with pytest.raises(SimulatedCrash):
        commit(200)
    for disk in disks.values():
        disk.crash(mode)
    volume = reopen(volume, disks, clock=clock)
    workload.recovered(volume)
    workload.check(volume)
    target = workload.acknowledged[10]
    clock.advance(5)
    assert volume.backtrack(times[target]).lsn == target
    for page_no in range(PAGES):
        assert volume.read_page(page_no) == workload.model.at(page_no, target), page_no


@pytest.mark.parametrize("crash_at", range(1, 500, 7))  # a backtrack here takes ~490
def test_crash_during_a_backtrack_that_refolds_history(
    crash_at: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A crash at every disk operation of a backtrack whose nodes rebuild their
    checkpointed images from history files: the reopened volume shows the state
    before it or the one it lands on, never a mix, and backtracks on from there."""
    from aurora_storage import SimulatedClock
    from aurora_storage.protocol import node

    monkeypatch.setattr(node, "HOT_BYTES_MAX", 512)
    clock = SimulatedClock(1_700_000_000.0)
    volume, disks, plan = fresh(crash_at, clock=clock, backtrack_window=3600)
    workload = Workload(crash_at)
    times = []
    for _ in range(40):
        clock.advance(10)
        workload.run(volume, 1)
        times.append((workload.acknowledged[-1], clock.now()))
    before = [volume.read_page(page_no) for page_no in range(PAGES)]
    landing, landing_time = times[20]
    landed = [workload.model.at(page_no, landing) for page_no in range(PAGES)]
    clock.advance(5)
    plan.crash_at = plan.operations + crash_at
    with contextlib.suppress(SimulatedCrash):  # unless it finished first
        volume.backtrack(landing_time)
    for disk in disks.values():
        disk.crash("random")
    volume = reopen(volume, disks, clock=clock)
    shown = [volume.read_page(page_no) for page_no in range(PAGES)]
    assert shown in (before, landed)
    target, target_time = times[10]
    clock.advance(5)
    assert volume.backtrack(target_time).lsn == target
    for page_no in range(PAGES):
        assert volume.read_page(page_no) == workload.model.at(page_no, target), page_no
