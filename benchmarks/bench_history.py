"""Benchmarks of history: backtrack, point-in-time restore and the cost of continuous backup.

Volumes are in memory (durability "memory", six in-process nodes) and run on
a ``SimulatedClock``, so hours of history are written in seconds. Baselines
run round by round between the subject's rounds (``interleave`` in
conftest.py): the machine is shared and noisy, and interleaved rounds see the
same noise.

- ``backtrack_flat``: ``Volume.backtrack`` on a volume whose 72-hour window
  holds 200 MB of history (16 KiB ``put_page`` images, four a commit, the
  clock spreading the commits over 48 hours), against the same on a volume
  holding 10 MB (baseline A). Each round backtracks to a third or to two
  thirds of the history, alternately, so every round moves the volume back
  or forward; after each one the result's CPL and commit time and a few
  pages are checked against what was committed at the target time. Goals:
  a median under one second, and flat: the large history's backtrack takes
  at most 1.2x the small one's (a ratio >= 0.83x).
  ``AURORA_STORAGE_BENCH_LARGE=1`` writes 1 GB of history (the issue's
  figure) instead of 200 MB: the six in-memory nodes keep every record of
  the window, so the process then needs some 6 GB of RAM (1.4 GB by default).
- ``restore_throughput``: ``Volume.restore(store, to=t)`` into a memory
  volume, from a backup holding 256 MiB of page images (16,384 pages written
  once each, half random bytes and half a repeated stamp, so lz4 halves
  them), to a time 90% into the history: 230 MiB of pages from, as the
  library stages today, one PAGES snapshot and the LOG objects after it
  (counts in ``extra_info["restore"]``). Timed: reading and checking every
  object, materializing the pages at the restore point and installing them
  into the six segments (the restore's bulk load: the replicas share the
  images, copy-on-write). Rate: MB/s of page data restored. Baseline A:
  ``decode_object`` (one lz4 decompression and one xxh3 each) over every
  object the restore reads, the same objects in the same run (three passes
  a round, their median: a pass is short and noisy). Goal: >= 0.30x. The
  backup is built by this file run as a script in a child process (``python
  bench_history.py build-backup ...``) into a folder, so the builder's memory
  goes back to the system, then loaded into a ``MemoryStore``: restore and
  baseline both read objects from memory. Each restored volume is freed
  before the next round; one holds some 250 MB of RAM (the shared images),
  the builder peaks at some 5 GB.
- ``restore_to_disk``: the same restore into a folder with durability
  ``"os"``, so each of the six nodes also writes its own copy of the pages
  (its page store and checkpoint file) to the page cache; baseline A as
  above, in the same run. Goal: >= 0.30x, as into memory. Each restored
  volume is checked, the first one after a close and reopen too, then deleted.
- ``backup_overhead``: commits of one 100-byte row each with continuous
  backup on (a ``MemoryStore``, the default staging interval of 60 s, the
  clock advancing 0.2 s a commit: a staging round every 300 commits) against
  the same commits on a volume without backup (baseline A). Goal: >= 0.90x.
  Checked: both volumes hold the rows, the backup staged its rounds, and a
  restore from it to its latest restorable time holds them too. The backup
  is young (some 60 staging rounds by the end); each staging round is timed
  on its own too (``extra_info["staging_round_ms"]``, early and late rounds),
  since its cost grows with the rounds the store holds.

Run: ``.venv/bin/pytest benchmarks/bench_history.py --benchmark-only -q``.
"""

from __future__ import annotations

import argparse
import bisect
import functools
import gc
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import Throughput, interleave, sized, timed
from workloads import (
    PAGE_SIZE,
    ROW_BYTES,
    CountingRounds,
    Mtr,
    RowPlan,
    check_volume,
    row_plan,
    sample_rounds,
)

from aurora_storage import SimulatedClock, Volume
from aurora_storage.backup import BackupCatalog
from aurora_storage.backup.store import BackupStore, LocalFolderStore, MemoryStore
from aurora_storage.format.objects import HISTORY_NAME, decode_object
from aurora_storage.protocol.backtrack import BacktrackResult

SEED = 20180612
START = 1_700_000_000.0  # the simulated clocks' start (a Unix time)
HOUR = 3600.0
MIB = 1024 * 1024
LARGE = os.environ.get("AURORA_STORAGE_BENCH_LARGE") == "1"

# backtrack_flat
BACKTRACK_WINDOW = 72 * HOUR
HISTORY_SPAN = 48 * HOUR  # the commits are spread over this much clock time
HISTORY_SMALL_BYTES = sized(10 * 1000 * 1000, 500 * 1000)
HISTORY_LARGE_BYTES = sized((1000 if LARGE else 200) * 1000 * 1000, 1000 * 1000)
HISTORY_PAGES_PER_MTR = 4  # 64 KiB commits: 3,052 of them for 200 MB
HISTORY_PAGE_SPAN = 256  # pages the history writes over and over
BACKTRACK_TARGETS = (1 / 3, 2 / 3)  # fractions of the span, alternately
BACKTRACK_ROUNDS = sized(40, 2)
BACKTRACK_WARMUP_ROUNDS = sized(2, 1)
BACKTRACK_CHECK_PAGES = (0, 1, 17, 100, 128, 200, 254, 255)
GOAL_BACKTRACK_US = 1e6
GOALS_BACKTRACK_FLAT = {"baseline-A": 1 / 1.2}

# restore_throughput
RESTORE_PAGES = sized(16_384, 256)  # 256 MiB of 16 KiB pages, each written once
RESTORE_PAGES_PER_MTR = 16
RESTORE_COMMIT_SECONDS = 5.0  # clock time between the builder's commits
RESTORE_STAGING_INTERVAL = 60.0  # a staging round every 12 commits: LOG objects of 3 MiB
RESTORE_TARGET = 0.9  # restore to this fraction of the history's span
RESTORE_ROUNDS = sized(5, 2)
RESTORE_BASELINE_PASSES = (
    3  # decompression passes a round (each a few % of a restore): their median
)
RESTORE_WARMUP_ROUNDS = 1
RESTORE_DISK_ROUNDS = sized(
    3, 1
)  # each writes six copies of the pages: some 750 MB to the page cache
RESTORE_CHECK_STRIDE = 61  # pages checked in each restored volume: one in this many
IMAGE_POOL_BYTES = sized(16, 1) * MIB  # random bytes the page images take their random half from
IMAGE_RANDOM_BYTES = PAGE_SIZE // 2
GOALS_RESTORE = {"baseline-A": 0.30}

# backup_overhead
OVERHEAD_COMMITS_PER_ROUND = sized(600, 20)  # two staging rounds in each round
OVERHEAD_ROUNDS = sized(30, 2)
OVERHEAD_WARMUP_ROUNDS = 1
OVERHEAD_COMMIT_SECONDS = 0.2  # clock time between commits
OVERHEAD_STAGING_INTERVAL = 60.0  # the library's default: every 300 commits here
GOALS_OVERHEAD = {"baseline-A": 0.90}


def _stamp(index: int, size: int) -> bytes:
    """``size`` bytes that name record ``index`` (a multiple of 8 bytes)."""
    return index.to_bytes(8, "little") * (size // 8)


def release(volumes: list[Volume]) -> None:
    """Closes ``volumes``, drops them from the list and frees their memory now.

    The list must hold the only references. Nodes and segments form reference
    cycles, and ``close`` leaves a memory volume's page logs allocated, so
    only the cycle collector frees them: without this, a round's restored
    volume lives on into the next round and the peak memory doubles.
    """
    try:
        while volumes:
            volumes.pop().close()  # no name may keep a volume alive through the collection
    finally:
        volumes.clear()
        gc.collect()


# --- backtrack_flat -------------------------------------------------------------------


@dataclass
class WrittenHistory:
    """A memory volume with ``records`` page images committed over HISTORY_SPAN of clock time."""

    volume: Volume
    records: int
    commit_times: list[float]  # clock time of commit k (records k*per .. k*per + per - 1)
    label: str
    results: list[tuple[int, BacktrackResult]]  # (round, result) of backtracks not yet checked
    checked: int = 0  # backtracks checked

    @classmethod
    def write(cls, history_bytes: int, label: str) -> WrittenHistory:
        per = HISTORY_PAGES_PER_MTR
        commits = -(-history_bytes // (PAGE_SIZE * per))
        step = HISTORY_SPAN / commits
        clock = SimulatedClock(START)
        volume = Volume.create(clock=clock, backtrack_window=BACKTRACK_WINDOW)
        assert volume.options.durability == "memory"
        times = []
        for commit in range(commits):
            clock.set(START + commit * step)
            times.append(clock.now())
            with volume.transaction() as tx:
                for index in range(commit * per, (commit + 1) * per):
                    tx.put_page(index % HISTORY_PAGE_SPAN, _stamp(index, PAGE_SIZE))
        clock.set(START + HISTORY_SPAN)
        return cls(volume, commits * per, times, label, [])

    @staticmethod
    def target(number: int) -> float:
        return START + HISTORY_SPAN * BACKTRACK_TARGETS[number % 2]

    def backtrack(self, number: int) -> None:
        self.results.append((number, self.volume.backtrack(to=self.target(number))))

    def checked_round(self, number: int) -> float:
        """A baseline round: seconds of one backtrack (timed alone), then its check."""
        seconds = timed(self.backtrack, number)
        self.check_pending()
        return seconds

    def check_pending(self, _number: int = 0) -> None:
        """Checks the backtracks not yet checked (one, unless pytest-benchmark skipped teardown)."""
        for number, result in self.results:
            self.check(number, result)
        self.results.clear()

    def check(self, number: int, result: BacktrackResult) -> None:
        """Backtrack ``number`` landed on the last commit at or before its target, pages too."""
        self.checked += 1
        commit = bisect.bisect_right(self.commit_times, self.target(number)) - 1
        visible = (commit + 1) * HISTORY_PAGES_PER_MTR  # records; LSNs count them from 1
        assert result.lsn == visible, f"{self.label}: backtrack to LSN {result.lsn}, not {visible}"
        assert result.commit_time == self.commit_times[commit], f"{self.label}: commit time"
        assert self.volume.backtrack_window[0] <= START < self.target(number)
        for page_no in BACKTRACK_CHECK_PAGES:
            expected = bytes(PAGE_SIZE)  # not written by the target time
            if page_no < visible:
                last = page_no + (visible - 1 - page_no) // HISTORY_PAGE_SPAN * HISTORY_PAGE_SPAN
                expected = _stamp(last, PAGE_SIZE)
            if self.volume.read_page(page_no) != expected:
                raise AssertionError(f"{self.label}: page {page_no} after backtrack {number}")


def test_backtrack_flat(benchmark: Any, throughput: Throughput) -> None:
    small = WrittenHistory.write(HISTORY_SMALL_BYTES, f"{HISTORY_SMALL_BYTES / 1e6:.0f} MB")
    large = WrittenHistory.write(HISTORY_LARGE_BYTES, f"{HISTORY_LARGE_BYTES / 1e6:.0f} MB")
    try:
        durations = interleave(
            benchmark,
            large.backtrack,
            {"baseline-A": small.checked_round},
            rounds=BACKTRACK_ROUNDS,
            warmup_rounds=BACKTRACK_WARMUP_ROUNDS,
            teardown=large.check_pending,
        )
        large.check_pending()  # --benchmark-disable runs no teardown
        for history in (small, large):  # each backtrack added one version, and no other did
            assert history.volume.history.current.version == history.checked, history.label
    finally:
        small.volume.close()
        large.volume.close()
    benchmark.extra_info["history_bytes"] = {
        "small": small.records * PAGE_SIZE,
        "large": large.records * PAGE_SIZE,
        "large_opt_in": LARGE,
    }
    benchmark.extra_info["history_commits"] = {
        "small": len(small.commit_times),
        "large": len(large.commit_times),
    }
    small_label, large_label = small.label, large.label
    del small, large  # the only references to the volumes: free them before the next test
    gc.collect()
    workload = "backtrack_flat"
    throughput.report(
        workload,
        "subject",
        label=f"Volume.backtrack, {large_label} of history in the window",
        records=1,
        payload_bytes=0,
        unit="backtracks",
        ratio_goals=GOALS_BACKTRACK_FLAT,
        median_us_max=GOAL_BACKTRACK_US,
    )
    throughput.record(
        workload,
        "baseline-A",
        seconds=durations["baseline-A"],
        label=f"Volume.backtrack, {small_label} of history in the window",
        records=1,
        payload_bytes=0,
        unit="backtracks",
    )


# --- restore_throughput ------------------------------------------------------------------


@functools.cache
def _image_pool() -> bytes:
    return random.Random(SEED).randbytes(IMAGE_POOL_BYTES)


def page_image(page_no: int) -> bytes:
    """Page ``page_no`` of the backup: 8 KiB of random bytes, then its number repeated.

    Neighbouring pages take different stretches of the pool, so lz4 finds no
    match across pages within its 64 KiB window: the images compress about 2:1.
    """
    pool = _image_pool()
    offset = page_no * (IMAGE_RANDOM_BYTES + 8) % (len(pool) - IMAGE_RANDOM_BYTES)
    tail = _stamp(page_no, PAGE_SIZE - IMAGE_RANDOM_BYTES)
    return pool[offset : offset + IMAGE_RANDOM_BYTES] + tail


def build_backup(folder: Path, pages: int) -> None:
    """Runs in the builder process: pages 0 .. pages-1 written once each, continuously backed up.

    Commit ``k`` writes pages ``16k .. 16k+15`` at clock time START + 5k.
    """
    store = LocalFolderStore(folder, durability="os")
    clock = SimulatedClock(START)
    volume = Volume.create(
        clock=clock, backup=store, backup_staging_interval=RESTORE_STAGING_INTERVAL
    )
    for commit, first in enumerate(range(0, pages, RESTORE_PAGES_PER_MTR)):
        clock.set(START + commit * RESTORE_COMMIT_SECONDS)
        with volume.transaction() as tx:
            for page_no in range(first, min(first + RESTORE_PAGES_PER_MTR, pages)):
                tx.put_page(page_no, page_image(page_no))
    assert volume.stage_backup(), "the last staging round failed"
    volume.close()


def build_backup_in_child(folder: Path, pages: int) -> None:
    command = [sys.executable, __file__, "build-backup", str(folder), str(pages)]
    subprocess.run(command, check=True, timeout=3600)


@dataclass(frozen=True)
class RestoreBackup:
    """The built backup, in memory, and what a restore to ``target`` must give."""

    store: MemoryStore
    target: float
    pages: int  # pages committed at or before the target: 0 .. pages-1
    reads: list[str]  # the objects the restore reads

    @property
    def page_bytes(self) -> int:
        return self.pages * PAGE_SIZE


def objects_restore_reads(store: BackupStore, moment: float) -> list[str]:
    """Every object ``Volume.restore(store, to=moment)`` reads, as aurora_storage.backup plans it.

    The catalog (the history object and every round manifest), then for each
    PG its newest PAGES object at or below the restore point and the LOG
    objects after that, up to the point.
    """
    catalog = BackupCatalog(store)
    names = [HISTORY_NAME, *store.list("rounds/")]
    for plan in catalog.plan(*catalog.restore_point(moment)):
        names += plan.names
    return names


@pytest.fixture(scope="module")
def restore_backup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RestoreBackup]:
    folder = tmp_path_factory.mktemp("backup") / "store"
    build_backup_in_child(folder, RESTORE_PAGES)
    on_disk = LocalFolderStore(folder, durability="os")
    store = MemoryStore()
    for name in on_disk.list():
        store.put(name, on_disk.get(name))
    shutil.rmtree(folder.parent, ignore_errors=True)
    commits = -(-RESTORE_PAGES // RESTORE_PAGES_PER_MTR)
    span = (commits - 1) * RESTORE_COMMIT_SECONDS
    target = START + span * RESTORE_TARGET
    last_commit = int((target - START) // RESTORE_COMMIT_SECONDS)
    pages = min(RESTORE_PAGES, (last_commit + 1) * RESTORE_PAGES_PER_MTR)
    yield RestoreBackup(store, target, pages, objects_restore_reads(store, target))


def check_restored(volume: Volume, backup: RestoreBackup, reopened: bool = False) -> None:
    if not reopened:  # a reopened volume no longer knows where it was restored from
        assert volume.restored_from == (backup.target, backup.pages), volume.restored_from
    for page_no in [*range(0, backup.pages, RESTORE_CHECK_STRIDE), backup.pages - 1]:
        if volume.read_page(page_no) != page_image(page_no):
            raise AssertionError(f"restored page {page_no} reads wrong bytes")
    if backup.pages < RESTORE_PAGES:  # written after the target: not restored
        assert volume.read_page(backup.pages) == bytes(PAGE_SIZE)


def decode_reads(backup: RestoreBackup, raw_bytes: list[int]) -> float:
    """Baseline A of the restores: seconds to decode every object they read (the
    median of RESTORE_BASELINE_PASSES passes); each pass's decoded bytes go to ``raw_bytes``."""
    passes = []
    for _ in range(RESTORE_BASELINE_PASSES):
        started = time.perf_counter()
        raw = sum(len(decode_object(backup.store.get(name), name)[1]) for name in backup.reads)
        passes.append(time.perf_counter() - started)
        raw_bytes.append(raw)
    return statistics.median(passes)


def test_restore_throughput(
    benchmark: Any, throughput: Throughput, restore_backup: RestoreBackup
) -> None:
    backup = restore_backup
    kinds = [name.split("/")[0] for name in backup.reads]
    assert kinds.count("log"), "the restore reads LOG objects"
    raw_bytes: list[int] = []

    def decompress(number: int) -> float:
        return decode_reads(backup, raw_bytes)

    restored: list[Volume] = []

    def subject(number: int) -> None:
        restored.append(Volume.restore(backup.store, to=backup.target))

    def check_and_release(number: int) -> None:
        try:
            check_restored(restored[-1], backup)
        finally:
            release(restored)

    durations = interleave(
        benchmark,
        subject,
        {"baseline-A": decompress},
        rounds=RESTORE_ROUNDS,
        warmup_rounds=RESTORE_WARMUP_ROUNDS,
        teardown=check_and_release,
    )
    if restored:  # --benchmark-disable runs no teardown
        check_and_release(0)

    assert len(set(raw_bytes)) == 1 and raw_bytes[0] >= backup.page_bytes, raw_bytes
    compressed = sum(len(backup.store.get(name)) for name in backup.reads)
    benchmark.extra_info["restore"] = {
        "pages": backup.pages,
        "page_bytes": backup.page_bytes,
        "objects_read": len(backup.reads),
        "pages_objects_read": kinds.count("pages"),
        "log_objects_read": kinds.count("log"),
        "compressed_bytes_read": compressed,
        "raw_bytes_read": raw_bytes[0],
        "store_bytes": sum(len(data) for data in backup.store.objects.values()),
    }
    workload = "restore_throughput"
    throughput.report(
        workload,
        "subject",
        label=f"Volume.restore, {backup.page_bytes / MIB:.0f} MiB of pages into memory",
        records=backup.pages,
        payload_bytes=backup.page_bytes,
        unit="pages",
        ratio_goals=GOALS_RESTORE,
    )
    throughput.record(
        workload,
        "baseline-A",
        seconds=durations["baseline-A"],
        label=f"decode_object over the {len(backup.reads)} objects it reads",
        records=backup.pages,
        payload_bytes=raw_bytes[0],
        unit="pages",
    )


def test_restore_to_disk_throughput(
    benchmark: Any,
    throughput: Throughput,
    restore_backup: RestoreBackup,
    tmp_path: Path,
) -> None:
    backup = restore_backup
    raw_bytes: list[int] = []

    def decompress(number: int) -> float:
        return decode_reads(backup, raw_bytes)

    restored: list[Volume] = []
    folders: list[Path] = []

    def subject(number: int) -> None:
        folders.append(tmp_path / f"restored-{number}")
        restored.append(
            Volume.restore(backup.store, to=backup.target, path=folders[-1], durability="os")
        )

    def check_and_delete(number: int) -> None:
        try:
            check_restored(restored[-1], backup)
            if len(folders) == 1:  # every node kept its own copy: it reads back after a reopen
                release(restored)
                reopened = [Volume.open(folders[-1])]
                try:
                    check_restored(reopened[0], backup, reopened=True)
                finally:
                    release(reopened)
        finally:
            release(restored)
            shutil.rmtree(folders[-1], ignore_errors=True)

    durations = interleave(
        benchmark,
        subject,
        {"baseline-A": decompress},
        rounds=RESTORE_DISK_ROUNDS,
        warmup_rounds=RESTORE_WARMUP_ROUNDS,
        teardown=check_and_delete,
    )
    if restored:  # --benchmark-disable runs no teardown
        check_and_delete(0)
    assert len(set(raw_bytes)) == 1 and raw_bytes[0] >= backup.page_bytes, raw_bytes
    workload = "restore_to_disk"
    throughput.report(
        workload,
        "subject",
        label=f"Volume.restore, {backup.page_bytes / MIB:.0f} MiB of pages, six nodes on disk (os)",
        records=backup.pages,
        payload_bytes=backup.page_bytes,
        unit="pages",
        ratio_goals=GOALS_RESTORE,
    )
    throughput.record(
        workload,
        "baseline-A",
        seconds=durations["baseline-A"],
        label=f"decode_object over the {len(backup.reads)} objects it reads",
        records=backup.pages,
        payload_bytes=raw_bytes[0],
        unit="pages",
    )


# --- backup_overhead -------------------------------------------------------------------------


class TimedStagingVolume(Volume):
    """``Volume`` unchanged, but each staging round (``stage_backup``) is timed on its own."""

    def __init__(self, *arguments: Any, **options: Any) -> None:
        super().__init__(*arguments, **options)
        self.staging_seconds: list[float] = []

    def stage_backup(self) -> bool:
        started = time.perf_counter()
        try:
            return super().stage_backup()
        finally:
            self.staging_seconds.append(time.perf_counter() - started)


@dataclass
class TickingVolume:
    """A memory volume whose clock advances OVERHEAD_COMMIT_SECONDS after every commit."""

    volume: Volume
    clock: SimulatedClock

    @classmethod
    def create(cls, backup: BackupStore | None) -> TickingVolume:
        clock = SimulatedClock(START)
        if backup is None:
            volume = Volume.create(clock=clock)
        else:
            volume = TimedStagingVolume.create(
                clock=clock, backup=backup, backup_staging_interval=OVERHEAD_STAGING_INTERVAL
            )
        assert volume.options.durability == "memory"
        return cls(volume, clock)

    def commit(self, mtrs: list[Mtr]) -> None:
        """One transaction per MTR, one ``tx.write`` per row, then the clock moves on."""
        volume, advance = self.volume, self.clock.advance
        for mtr in mtrs:
            with volume.transaction() as tx:
                for page_no, offset, data in mtr:
                    tx.write(page_no, offset, data)
            advance(OVERHEAD_COMMIT_SECONDS)


def check_backup(source: Volume, store: MemoryStore, plan: RowPlan, rounds_done: int) -> None:
    """The backup staged a round every staging interval, and restores every committed row."""
    commits = rounds_done * plan.mtrs_per_round
    staged_rounds = len(store.list("rounds/"))
    expected = int(commits * OVERHEAD_COMMIT_SECONDS // OVERHEAD_STAGING_INTERVAL)
    assert staged_rounds >= expected, f"{staged_rounds} staging rounds, {expected} expected"
    assert source.stage_backup(), "the last staging round failed"
    latest = source.restorable_window[1]
    assert latest >= source.clock.now() - OVERHEAD_COMMIT_SECONDS
    restored = [Volume.restore(store, to=latest)]
    try:
        check_volume(restored[0], plan, sample_rounds(rounds_done))
    finally:
        release(restored)


def test_backup_overhead(benchmark: Any, throughput: Throughput) -> None:
    plan = row_plan(
        OVERHEAD_ROUNDS + OVERHEAD_WARMUP_ROUNDS + 1, OVERHEAD_COMMITS_PER_ROUND, 1, SEED
    )
    store = MemoryStore()
    backed_up = TickingVolume.create(store)
    plain = TickingVolume.create(None)
    subject = CountingRounds(lambda number: backed_up.commit(plan.rounds[number]))
    try:
        durations = interleave(
            benchmark,
            subject,
            {"baseline-A": lambda number: timed(plain.commit, plan.rounds[number])},
            rounds=OVERHEAD_ROUNDS,
            warmup_rounds=OVERHEAD_WARMUP_ROUNDS,
        )
        assert isinstance(backed_up.volume, TimedStagingVolume)
        staging = list(backed_up.volume.staging_seconds)
        check_volume(backed_up.volume, plan, sample_rounds(subject.done))
        check_volume(plain.volume, plan, sample_rounds(subject.done))
        check_backup(backed_up.volume, store, plan, subject.done)
    finally:
        backed_up.volume.close()
        plain.volume.close()

    benchmark.extra_info["backup_staging_rounds"] = len(store.list("rounds/"))
    if staging:
        benchmark.extra_info["staging_round_ms"] = {
            "rounds_timed": len(staging),
            "first_10_median": statistics.median(staging[:10]) * 1e3,
            "last_10_median": statistics.median(staging[-10:]) * 1e3,
        }
    benchmark.extra_info["backup_store_bytes"] = sum(len(data) for data in store.objects.values())
    commits = OVERHEAD_COMMITS_PER_ROUND
    workload = "backup_overhead"
    throughput.report(
        workload,
        "subject",
        label="Volume, 1 row per commit, continuous backup (MemoryStore)",
        records=commits,
        payload_bytes=commits * ROW_BYTES,
        unit="commits",
        ratio_goals=GOALS_OVERHEAD,
    )
    throughput.record(
        workload,
        "baseline-A",
        seconds=durations["baseline-A"],
        label="Volume, 1 row per commit, no backup",
        records=commits,
        payload_bytes=commits * ROW_BYTES,
        unit="commits",
    )


# --- the builder --------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description="Builds a continuously backed-up volume.")
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("build-backup")
    build.add_argument("folder", type=Path)
    build.add_argument("pages", type=int)
    arguments = parser.parse_args()
    build_backup(arguments.folder, arguments.pages)


if __name__ == "__main__":
    main()
