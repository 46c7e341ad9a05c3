"""Segment repair: how fast a segment is rebuilt from a peer's pages (hydration),
what it costs the commits meanwhile, and how soon a volume writes again after AZ+1.

Two workloads of one protection group holding ``AURORA_STORAGE_BENCH_SCALE_MB``
of 16 KiB pages (default 1,024: 1 GiB, written in MTRs of 16 ``put_page``):

- ``hydrate_segment[memory]``: a memory volume; the segment of a fresh,
  empty node (az1-a) is repaired from az1-b's, the two nodes' messages
  delivered to each other in turn (HydratePull, HydratePush of 1,024 pages,
  then the frames above the repair point), as a transport would. Timed: from
  the first pull to the installed segment. Baseline A: copying the same page
  images in memory (one ``bytes`` of the peer's images, materialized untimed).
  Goal: >= 1 GiB/s of page bytes (Aurora repairs a 10 GiB segment in about
  10 s); the ratio to the copy is reported.
- ``hydrate_segment[disk]``: the same on a volume with a path, durability
  "os": the fresh node writes the pages to its page store (a new folder each
  round). Baseline A: ``shutil.copyfile`` of a file holding the same page
  bytes end to end, to a new file in the same folder. Both read through a
  warm OS page cache. Goal: >= 0.5x the copy.

Each repaired segment is checked (its pages equal the peer's) after the
round, untimed.

Two workloads of repairs the volume runs itself (sizes of their own):

- ``repair_under_load``: a memory volume of nine nodes whose
  ``LOAD_PGS`` PGs are full of 16 KiB pages (``LOAD_PG_PAGES`` a PG). Eight
  threads commit ``8 x LOAD_COMMITS`` one-row commits (one ``tx.write`` of
  100 bytes each, the rows spread over every PG) while a mover thread calls
  ``cluster.move_segment`` for one PG after another, over and over: one
  member of the PG goes to the node of the same AZ that holds none of it,
  which hydrates from a peer, so a segment is always being moved while the
  threads commit. The mover starts (and finishes a first move) before a
  round and stops after it, both untimed; one member of each PG in each AZ
  never moves (``Mover``). Baseline A, one round before each of the
  subject's: the same threads and commits with no move running. Goal:
  >= 0.7x the baseline's commits/s. Moves made while the threads committed:
  ``extra_info["moves_per_round"]``. Every row and page is checked after.
- ``az_plus_one_to_writable``: a memory volume of the default six nodes
  on a SimulatedClock, ``repair_after=1.0``, its ``AZ_PGS`` PGs full of
  4 KiB pages; az1 and az2-a fail (AZ+1: three of six segments a PG), a
  commit raises WriteQuorumError (it stays in doubt). Timed: the loop that
  advances the clock 0.25 s and tries a commit until one succeeds; the
  repair policy, run by the commits, replaces the three lost segments of
  every PG on new nodes, which hydrate from the three left. Two figures: the
  loop's wall time (the timing) and the simulated seconds from the failure
  to the commit (``extra_info["simulated_s"]``); no baseline and no goal.
  Checked untimed: the commit's row, the in-doubt row if it became durable
  (else the bytes it would have covered are unchanged), every page's stamp.

Run: ``.venv/bin/pytest benchmarks/bench_repair.py --benchmark-only -q``.
"""

from __future__ import annotations

import itertools
import os
import random
import shutil
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import TINY, Throughput, interleave, sized, timed
from workloads import ROW_BYTES, Mtr, commit_mtrs, run_threads, share

from aurora_storage import SimulatedClock, Volume
from aurora_storage.config import AZS, NODE_NAMES, az_of
from aurora_storage.errors import QuorumError, WriteQuorumError
from aurora_storage.protocol import messages as m
from aurora_storage.protocol.node import StorageNode
from aurora_storage.runtime.disk import RealDisk

PAGE = 16384
MTR_PAGES = 16
SCALE_MB = 4 if TINY else int(os.environ.get("AURORA_STORAGE_BENCH_SCALE_MB", "1024"))
PAGES = SCALE_MB * 1024 * 1024 // PAGE
ROUNDS = sized(5, 2)
PEER, FRESH = "az1-b", "az1-a"

# repair_under_load
LOAD_NODES = 9  # three an AZ: each PG has a node of every AZ free to move to
LOAD_PGS = sized(8, 2)
LOAD_PG_PAGES = sized(256, 8)  # 4 MiB of 16 KiB pages a PG
LOAD_THREADS = 8
LOAD_COMMITS = sized(250, 2)  # one-row commits a thread a round
LOAD_ROUNDS = sized(10, 2)
LOAD_WARMUP_ROUNDS = 1
LOAD_ROW_OFFSET = 64  # rows go above the page's stamp (its first 8 bytes)
GOALS_UNDER_LOAD = {"baseline-A": 0.7}
SEED = 20180610

# az_plus_one_to_writable
AZ_PAGE = 4096
AZ_PGS = sized(8, 2)
AZ_PG_PAGES = sized(1024, 64)  # 4 MiB of 4 KiB pages a PG (tiny: still several MTRs a PG)
AZ_ROUNDS = sized(5, 1)
AZ_WARMUP_ROUNDS = 1
AZ_REPAIR_AFTER = 1.0  # seconds on the volume's clock
AZ_STEP = 0.25  # seconds the clock advances before each commit tried
AZ_STEPS_MAX = 400  # 100 s simulated: a bound on a repair that never comes, not a timing
AZ_FAILED = ("az1-a", "az1-b", "az2-a")  # az1 and one node of az2


def build(path: Path | None) -> Volume:
    """A volume whose PG 0 holds PAGES pages, each starting with its number."""
    volume = Volume.create(path, page_size=PAGE, durability="os" if path else None)
    pattern = os.urandom(PAGE)
    for first in range(0, PAGES, MTR_PAGES):
        with volume.transaction() as tx:
            for page_no in range(first, min(first + MTR_PAGES, PAGES)):
                tx.put_page(page_no, page_no.to_bytes(8, "little") + pattern[8:])
    return volume


def repair(fresh: StorageNode, peer: StorageNode) -> None:
    """Delivers the two nodes' messages to each other until the repair is installed."""
    outbox: list[tuple[str, m.Message]] = fresh._start_repair(0, peer.name)
    while outbox:
        _to, message = outbox.pop(0)
        if isinstance(message, m.HydratePull):
            outbox += peer.handle(message, fresh.name)
        elif isinstance(message, m.HydratePush):
            outbox += fresh.handle(message, peer.name)
        # (Its state for the writer and its pulls from peers after: not part of it.)


def check(fresh: StorageNode, peer: StorageNode) -> None:
    repaired = fresh.segments[0]
    assert repaired.repaired_lsn and not repaired.needs_repair
    assert repaired.scl == peer.segments[0].scl
    for page_no in (0, PAGES // 2, PAGES - 1):
        image, problem, _ = fresh.serve_read(0, page_no, repaired.scl, 0, ())
        assert not problem and image[:8] == page_no.to_bytes(8, "little"), page_no


@pytest.fixture(scope="module")
def memory_volume() -> Iterator[Volume]:
    volume = build(None)
    yield volume
    volume.close()


@pytest.fixture(scope="module")
def disk_volume(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Volume]:
    volume = build(tmp_path_factory.mktemp("repair") / "volume")
    yield volume
    volume.close()


def report(
    throughput: Throughput,
    where: str,
    goals: dict[str, Any],
    baseline: str,
    durations: dict[str, list[float]],
) -> None:
    """The repair's rate, and its baseline's, as one workload's rows."""
    workload = f"hydrate_segment[{where}]"
    sizes: dict[str, Any] = {"records": PAGES, "payload_bytes": PAGES * PAGE, "unit": "pages"}
    label = f"segment repair, {SCALE_MB} MiB, {where}"
    throughput.report(workload, "subject", label=label, **sizes, **goals)
    throughput.record(
        workload, "baseline-A", seconds=durations["baseline-A"], label=baseline, **sizes
    )


def test_hydrate_segment_memory(
    benchmark: Any, throughput: Throughput, memory_volume: Volume
) -> None:
    volume = memory_volume
    peer = volume.nodes[PEER]
    geometry = volume.geometry
    images = bytes(peer.segments[0].images_of(list(range(PAGES)), volume.vdl, ())[2])
    fresh: list[StorageNode] = []

    def prepare(number: int) -> None:
        fresh.append(StorageNode(FRESH, "az1", geometry, list(NODE_NAMES)))

    def subject(number: int) -> None:
        repair(fresh[-1], peer)

    def teardown(number: int) -> None:
        check(fresh[-1], peer)
        fresh.pop().segments[0].page_log.close()

    durations = interleave(
        benchmark,
        subject,
        {"baseline-A": lambda number: timed(bytearray, images)},
        rounds=ROUNDS,
        prepare=prepare,
        teardown=teardown,
    )
    goals = {"bytes_per_s_min": float(1 << 30)}
    report(throughput, "memory", goals, "copy of the page bytes in memory", durations)


def test_hydrate_segment_disk(
    benchmark: Any, throughput: Throughput, disk_volume: Volume, tmp_path: Path
) -> None:
    volume = disk_volume
    peer = volume.nodes[PEER]
    geometry = volume.geometry
    source = tmp_path / "pages"
    with open(source, "wb") as writer:
        for first in range(0, PAGES, 1024):
            chunk = list(range(first, min(first + 1024, PAGES)))
            writer.write(peer.segments[0].images_of(chunk, volume.vdl, ())[2])
    fresh: list[StorageNode] = []

    def copy(number: int) -> float:
        target = tmp_path / f"copy-{number}"
        seconds = timed(shutil.copyfile, source, target)
        target.unlink()
        return seconds

    def prepare(number: int) -> None:
        disk = RealDisk(tmp_path / f"node-{number}", "os")
        node = StorageNode(
            FRESH,
            "az1",
            geometry,
            list(NODE_NAMES),
            disk=disk,
            volume_id=volume.volume_id,
            durability="os",
            cache_bytes=volume.options.cache_bytes // len(NODE_NAMES),
        )
        node.load()  # an empty folder: it starts empty, as a replaced drive does
        fresh.append(node)

    def subject(number: int) -> None:
        repair(fresh[-1], peer)

    def teardown(number: int) -> None:
        node = fresh.pop()
        check(node, peer)
        node.close()
        shutil.rmtree(tmp_path / f"node-{number}")

    durations = interleave(
        benchmark,
        subject,
        {"baseline-A": copy},
        rounds=ROUNDS,
        prepare=prepare,
        teardown=teardown,
    )
    goals = {"ratio_goals": {"baseline-A": 0.5}}
    report(throughput, "disk", goals, "shutil.copyfile of the page bytes", durations)


# --- repair_under_load ----------------------------------------------------------------


def stamp(page_no: int, pattern: bytes) -> bytes:
    """A page's image before the workload: its number, then ``pattern``."""
    return page_no.to_bytes(8, "little") + pattern[8:]


def fill(volume: Volume, pages: int, pattern: bytes) -> None:
    """Writes pages ``0 .. pages - 1`` (``stamp``), MTR_PAGES a commit."""
    for first in range(0, pages, MTR_PAGES):
        with volume.transaction() as tx:
            for page_no in range(first, min(first + MTR_PAGES, pages)):
                tx.put_page(page_no, stamp(page_no, pattern))
    assert len(volume.pgs) == pages // volume.geometry.pages_per_pg, sorted(volume.pgs)


def check_stamps(volume: Volume, pages: int, pattern: bytes) -> None:
    for page_no in range(pages):
        image = volume.read_page(page_no)
        if image[:8] != page_no.to_bytes(8, "little") or image[-8:] != pattern[-8:]:
            raise AssertionError(f"page {page_no} lost its stamp")


def load_rows(rounds: int, commits: int, seed: int) -> list[list[Mtr]]:
    """``rounds`` rounds of ``commits`` one-row commits; row ``k`` of the run goes to
    PG ``k % LOAD_PGS``, so consecutive commits (and every thread's share) touch
    every PG, and no two rows of the run share a (page, offset)."""
    rng = random.Random(seed)
    slots = (PAGE - LOAD_ROW_OFFSET) // ROW_BYTES
    assert rounds * commits <= LOAD_PGS * LOAD_PG_PAGES * slots, "more rows than cells"
    plan = []
    for round_number in range(rounds):
        payload = rng.randbytes(commits * ROW_BYTES)
        mtrs = []
        for i in range(commits):
            k = round_number * commits + i
            pg, index = k % LOAD_PGS, k // LOAD_PGS
            page_no = pg * LOAD_PG_PAGES + index % LOAD_PG_PAGES
            offset = LOAD_ROW_OFFSET + (index // LOAD_PG_PAGES) * ROW_BYTES
            mtrs.append([(page_no, offset, payload[i * ROW_BYTES : (i + 1) * ROW_BYTES])])
        plan.append(mtrs)
    return plan


def check_rows(volume: Volume, mtrs: list[Mtr]) -> None:
    for mtr in mtrs:
        for page_no, offset, data in mtr:
            if volume.read_page(page_no)[offset : offset + len(data)] != data:
                raise AssertionError(f"row ({page_no}, {offset}) reads wrong bytes")


class Mover:
    """Moves one segment of each PG in turn, over and over, on a thread of its own:
    pass ``n`` moves each PG's segment in AZ ``n % 3`` to the AZ's third node, which
    holds none of the PG.

    The PG's two members in the AZ take turns moving (pass by pass), so every
    member is in turn a new one that later serves the next move.
    """

    def __init__(self, volume: Volume) -> None:
        self.volume = volume
        self.moves = 0  # moves finished, all runs together
        self.passes = 0  # passes begun, all runs together: the next run goes on from there
        self._stop = threading.Event()
        self._moved = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def start(self) -> None:
        """Starts the thread; returns once it finished a move (a next one is under way)."""
        assert self._thread is None
        self._stop.clear()
        self._moved.clear()
        self._thread = threading.Thread(target=self._run, name="mover")
        self._thread.start()
        while not self._moved.wait(0.1):
            if not self._thread.is_alive():
                break
        if self._error is not None or not self._thread.is_alive():
            self.stop()  # raises the thread's error
            raise AssertionError("the mover stopped before its first move")

    def stop(self) -> None:
        """Stops the thread after its move under way; re-raises its error."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        error, self._error = self._error, None
        if error is not None:
            raise error

    def _run(self) -> None:
        try:
            volume = self.volume
            for number in itertools.count(self.passes):
                self.passes = number + 1
                az = AZS[number % len(AZS)]
                for pg in sorted(volume.pgs):
                    if self._stop.is_set():
                        return
                    members = volume.placement.members(pg)
                    here = sorted(n for n in members if az_of(n) == az)
                    source = here[(number // len(AZS)) % 2]
                    (target,) = (
                        name
                        for name in volume.placement.fleet
                        if az_of(name) == az and name not in members
                    )
                    volume.cluster.move_segment(pg, source, target)
                    self.moves += 1
                    self._moved.set()
        except BaseException as error:
            self._error = error
            self._moved.set()


@pytest.fixture
def loaded_volume() -> Iterator[Volume]:
    volume = Volume.create(
        nodes=LOAD_NODES,
        page_size=PAGE,
        segment_size=PAGE * LOAD_PG_PAGES,
        capacity=PAGE * LOAD_PG_PAGES * LOAD_PGS,
    )
    yield volume
    volume.close()


def test_repair_under_load(benchmark: Any, throughput: Throughput, loaded_volume: Volume) -> None:
    volume = loaded_volume
    pages = LOAD_PGS * LOAD_PG_PAGES
    pattern = random.Random(SEED).randbytes(PAGE)
    fill(volume, pages, pattern)
    commits = LOAD_THREADS * LOAD_COMMITS
    rounds = LOAD_WARMUP_ROUNDS + LOAD_ROUNDS
    # The subject's rounds first, then the baseline's: no row is written twice.
    plan = load_rows(2 * rounds, commits, SEED + 1)
    subject_rows, baseline_rows = plan[:rounds], plan[rounds:]
    mover = Mover(volume)
    moves_per_round: list[int] = []
    done: list[int] = []

    def commit_round(rows: list[Mtr]) -> None:
        run_threads(LOAD_THREADS, lambda t: commit_mtrs(volume, share(rows, LOAD_THREADS, t)))

    def subject(number: int) -> None:
        before = mover.moves
        commit_round(subject_rows[number])
        if number >= LOAD_WARMUP_ROUNDS:
            moves_per_round.append(mover.moves - before)
        done.append(number)

    def baseline(number: int) -> float:
        seconds = timed(commit_round, baseline_rows[number])
        done.append(rounds + number)
        return seconds

    try:
        durations = interleave(
            benchmark,
            subject,
            {"baseline-A": baseline},
            rounds=LOAD_ROUNDS,
            warmup_rounds=LOAD_WARMUP_ROUNDS,
            prepare=lambda number: mover.start(),
            teardown=lambda number: mover.stop(),
        )
    finally:
        mover.stop()  # --benchmark-disable runs no teardown
    assert mover.moves > 0, "no segment moved"
    for number in sorted(done):
        check_rows(volume, plan[number])
    check_stamps(volume, pages, pattern)

    benchmark.extra_info["moves_per_round"] = moves_per_round
    benchmark.extra_info["moves"] = mover.moves
    workload = "repair_under_load"
    sizes: dict[str, Any] = {
        "records": commits,
        "payload_bytes": commits * ROW_BYTES,
        "unit": "commits",
    }
    segment_mb = LOAD_PG_PAGES * PAGE / (1 << 20)
    throughput.report(
        workload,
        "subject",
        label=f"Volume, {LOAD_THREADS} threads, 1 row per commit, while segments "
        f"of {segment_mb:g} MiB move (memory, {LOAD_NODES} nodes)",
        ratio_goals=GOALS_UNDER_LOAD,
        **sizes,
    )
    throughput.record(
        workload,
        "baseline-A",
        seconds=durations["baseline-A"],
        label=f"the same {LOAD_THREADS} threads and commits, no move running",
        **sizes,
    )


# --- az_plus_one_to_writable -------------------------------------------------------------


class AzPlusOne:
    """One round's volume: full of pages, AZ+1 failed, a commit in doubt."""

    DOUBT = (0, 100, b"in doubt " * 8)  # (page, offset, data) of the commit that failed
    AFTER = (AZ_PG_PAGES + 1, 200, b"writable " * 8)  # the commit that succeeds

    def __init__(self, pattern: bytes) -> None:
        self.pattern = pattern
        self.clock = SimulatedClock(1_700_000_000.0)
        self.volume = Volume.create(
            page_size=AZ_PAGE,
            segment_size=AZ_PAGE * AZ_PG_PAGES,
            capacity=AZ_PAGE * AZ_PG_PAGES * AZ_PGS,
            clock=self.clock,
            repair_after=AZ_REPAIR_AFTER,
            commit_timeout=0.05,
        )
        fill(self.volume, AZ_PGS * AZ_PG_PAGES, pattern)
        self.volume.cluster.fail_az("az1")
        self.volume.cluster.fail_node("az2-a")
        self.failed_at = self.clock.now()
        with pytest.raises(WriteQuorumError):
            self.commit(self.DOUBT)
        self.simulated_s: float | None = None

    def commit(self, row: tuple[int, int, bytes]) -> None:
        with self.volume.transaction() as tx:
            tx.write(*row)

    def until_writable(self) -> None:
        """Advances the clock a step and tries a commit, until one succeeds."""
        for _ in range(AZ_STEPS_MAX):
            self.clock.advance(AZ_STEP)
            try:
                self.commit(self.AFTER)
            except QuorumError:  # InDoubtError too: the failed commit is still in doubt
                continue
            self.simulated_s = self.clock.now() - self.failed_at
            return
        raise AssertionError(f"no commit succeeded within {AZ_STEPS_MAX * AZ_STEP} s simulated")

    def check(self) -> bool:
        """Checks the pages; True if the in-doubt commit became durable."""
        volume = self.volume
        assert self.simulated_s is not None, "the volume never took a commit"
        for pg in volume.pgs:
            assert not set(AZ_FAILED) & set(volume.placement.members(pg)), pg
        page_no, offset, data = self.AFTER
        assert volume.read_page(page_no)[offset : offset + len(data)] == data
        page_no, offset, data = self.DOUBT
        found = volume.read_page(page_no)[offset : offset + len(data)]
        before = stamp(page_no, self.pattern)[offset : offset + len(data)]
        assert found in (data, before), "the in-doubt commit's bytes are neither"
        check_stamps(volume, AZ_PGS * AZ_PG_PAGES, self.pattern)
        return found == data


def test_az_plus_one_to_writable(benchmark: Any, throughput: Throughput) -> None:
    pattern = random.Random(SEED + 2).randbytes(AZ_PAGE)
    current: list[AzPlusOne] = []
    simulated: list[float] = []
    wall: list[float] = []
    doubt_durable: list[bool] = []

    def prepare(number: int) -> None:
        current.append(AzPlusOne(pattern))

    def subject(number: int) -> None:
        started = time.perf_counter()
        current[-1].until_writable()
        wall.append(time.perf_counter() - started)

    def teardown(number: int) -> None:
        run = current.pop()
        try:
            doubt_durable.append(run.check())
            assert run.simulated_s is not None
            simulated.append(run.simulated_s)
        finally:
            run.volume.close()

    try:
        interleave(
            benchmark,
            subject,
            {},
            rounds=AZ_ROUNDS,
            warmup_rounds=AZ_WARMUP_ROUNDS,
            prepare=prepare,
            teardown=teardown,
        )
    finally:
        while current:  # --benchmark-disable runs no teardown
            current.pop().volume.close()
    assert simulated or getattr(benchmark, "disabled", False), "no round ran"
    pg_bytes = AZ_PG_PAGES * AZ_PAGE
    hydrated = len(AZ_FAILED) * AZ_PGS * pg_bytes  # three new segments a PG
    measured = simulated[AZ_WARMUP_ROUNDS:] or simulated
    benchmark.extra_info["simulated_s"] = statistics.median(measured) if measured else None
    benchmark.extra_info["simulated_s_rounds"] = simulated  # the warmup round's first
    benchmark.extra_info["wall_s_rounds"] = wall
    benchmark.extra_info["in_doubt_commit_durable"] = doubt_durable
    benchmark.extra_info["hydrated_bytes"] = hydrated
    throughput.report(
        "az_plus_one_to_writable",
        "subject",
        label=f"AZ+1 failure to a commit, repair_after {AZ_REPAIR_AFTER:g} s, "
        f"{AZ_PGS} PGs of {pg_bytes / (1 << 20):g} MiB (memory, simulated clock)",
        records=1,
        payload_bytes=hydrated,
        unit="recoveries",
    )
