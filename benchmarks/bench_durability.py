"""Benchmarks of durable commits, node restart and writer recovery (durability "fsync").

Volumes live in the test's tmp_path, on the same disk as SQLite's files and
the fsync loop's file. Baselines run round by round between the subject's
rounds (``interleave`` in conftest.py): fsync latency on this shared machine
drifts several times over within a minute, and interleaved rounds see the
same drift.

- ``durable_commit_1x1``: one committer, one 100-byte row per commit, each
  commit acknowledged once four of six nodes have fsynced it. Baseline A:
  SQLite WAL synchronous=FULL, one row per transaction; baseline B: the
  machine's fsync rate, a loop of a 100-byte append and an fsync on a small
  file (for context: a commit cannot beat one fsync).
- ``durable_commit_8_threads``: eight threads, each committing a fixed number
  of one-row commits; group commit lets one fsync per node cover every frame
  that arrived meanwhile. Baselines: eight threads on eight SQLite connections
  (WAL, synchronous=FULL). A, the strongest set-up: a plain rowid table, and
  the threads take turns on a lock of their own; B, the weaker one beside it:
  the (page, offset) key and SQLite's busy_timeout, whose handler sleeps on
  every conflict (a tenth of A's rate on some machines). Concurrent commits
  through the public API are tested for correctness in
  tests/crash/test_concurrency.py.
- ``durable_batch_100``: 100 rows of 100 bytes per commit against SQLite
  inserting 100 rows per transaction at synchronous=FULL (baseline A one
  ``execute`` a row, baseline B ``executemany``). 60 rounds of 5 commits:
  SQLite's first pass through its WAL (about 150 transactions here) appends
  and is slower than its later passes, which overwrite the checkpointed WAL;
  20 rounds measured mostly the first pass and flattered the ratio by about
  a quarter.
- ``node_restart_replay``: one node of a volume whose log holds 256 MiB of
  16 KiB page images is rebuilt from disk as ``Volume.open`` does it
  (``runtime.cluster.make_nodes``, ``StorageNode.load``): MB/s replayed. Baseline: reading the
  same log file whole (``Path.read_bytes``, as the node's disk does), the
  machine's sequential read rate. Both read through a warm page cache.
- ``writer_recovery``: ``Volume.open`` after the writer crashed (the builder
  process exits without closing) with a 10 MB and a 100 MB log; nothing of
  the log is coalesced on disk (coalescing happens in memory only), so all of
  it lies above the last coalesced pages. Three rows: the writer's recovery
  protocol (``Volume._recover``: fence, SCLs, truncation; the goal: under a
  second and flat, the large log's time at most 1.2x the small one's), the
  node reload (the rest of ``Volume.open``: six nodes replaying their logs)
  and the whole ``Volume.open``. ``AURORA_STORAGE_BENCH_LARGE=1`` uses a
  1 GB log instead of 100 MB: it takes minutes and, as a reloaded node keeps
  its log two to three times over in memory, some 15 GB of RAM (six nodes).

Volumes for the last two are built by this file run as a script in a child
process (``python bench_durability.py build ...``), so that a crash is a
real process exit and the builder's memory goes back to the system.

Run: ``.venv/bin/pytest benchmarks/bench_durability.py --benchmark-only -q``.
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
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
    RowPlan,
    check_sqlite,
    check_volume,
    commit_mtrs,
    row_plan,
    run_threads,
    sample_rounds,
    share,
    sqlite_connect,
    sqlite_insert_many,
    sqlite_insert_rows,
)

from aurora_storage import Volume
from aurora_storage.config import NODE_NAMES
from aurora_storage.protocol.node import StorageNode
from aurora_storage.protocol.node_storage import log_name
from aurora_storage.protocol.recovery import RecoveryPlan
from aurora_storage.runtime.cluster import make_nodes
from aurora_storage.runtime.folder import read_volume_meta

SEED = 20180610
WARMUP_ROUNDS = 1

SINGLE_COMMITS_PER_ROUND = sized(25, 3)
SINGLE_ROUNDS = sized(20, 2)
THREADS = 8
THREAD_COMMITS = sized(10, 1)  # commits per thread per round
THREAD_ROUNDS = sized(24, 2)  # past SQLite's first WAL pass, as BATCH_ROUNDS
BATCH_COMMITS_PER_ROUND = sized(5, 2)
BATCH_ROWS_PER_COMMIT = 100
BATCH_ROUNDS = sized(60, 2)  # past SQLite's first WAL pass (see the module docstring)
FSYNC_APPEND_BYTES = 100

MIB = 1024 * 1024
REPLAY_LOG_BYTES = sized(256, 2) * MIB
REPLAY_NODE = "az1-a"
REPLAY_ROUNDS = sized(5, 2)
PAGE_RECORDS_PER_MTR = 64  # 1 MiB frames
PAGE_SPAN = 256  # pages the replay log writes over and over

LARGE = os.environ.get("AURORA_STORAGE_BENCH_LARGE") == "1"
RECOVERY_SMALL_BYTES = sized(10 * 1000 * 1000, 200 * 1000)
RECOVERY_LARGE_BYTES = sized((1000 if LARGE else 100) * 1000 * 1000, 400 * 1000)
RECOVERY_ROUNDS = sized(2 if LARGE else 8, 2)  # the protocol is ~36 serial fsyncs: noisy
RECOVERY_WARMUP_ROUNDS = 0 if LARGE else 1
WRITE_RECORD_BYTES = 1000
WRITE_RECORDS_PER_MTR = 100  # ~100 KiB frames
WRITE_PAGE_SPAN = 1024  # 16 slots of 1 KiB on each of 1,024 pages
WRITE_SLOTS = 16
RECOVERY_CHECK_PAGES = 64

GOALS_SINGLE = {"baseline-A": 0.3}
GOALS_THREADS = {"baseline-A": 2.0}
GOALS_BATCH = {"baseline-A": 1.0}
GOAL_REPLAY_BYTES_PER_S = 250e6
GOAL_RECOVERY_US = 1e6
GOALS_RECOVERY_FLAT = {"baseline-A": 1 / 1.2}


@pytest.fixture
def volume(tmp_path: Path) -> Iterator[Volume]:
    volume = Volume.create(tmp_path / "volume")  # a path: durability "fsync"
    assert volume.options.durability == "fsync"
    yield volume
    volume.close()


def sqlite_durable(path: Path, any_thread: bool = False, rowid: bool = False) -> sqlite3.Connection:
    return sqlite_connect(path, "FULL", any_thread, rowid)


def plan_for(mtrs_per_round: int, rows_per_mtr: int, rounds: int) -> RowPlan:
    # One spare round: --benchmark-cprofile runs the setup once more.
    return row_plan(rounds + WARMUP_ROUNDS + 1, mtrs_per_round, rows_per_mtr, SEED)


# --- durable commits ------------------------------------------------------------------


def test_durable_commit_1x1(
    benchmark: Any, throughput: Throughput, volume: Volume, tmp_path: Path
) -> None:
    plan = plan_for(SINGLE_COMMITS_PER_ROUND, 1, SINGLE_ROUNDS)
    connection = sqlite_durable(tmp_path / "single.db")
    descriptor = os.open(tmp_path / "fsync-loop", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    chunk = bytes(FSYNC_APPEND_BYTES)

    def fsync_loop() -> None:
        for _ in range(SINGLE_COMMITS_PER_ROUND):
            os.write(descriptor, chunk)
            os.fsync(descriptor)

    subject = CountingRounds(lambda number: commit_mtrs(volume, plan.rounds[number]))
    baselines = {
        "baseline-A": lambda number: timed(sqlite_insert_rows, connection, plan.rounds[number]),
        "baseline-B": lambda number: timed(fsync_loop),
    }
    try:
        durations = interleave(
            benchmark, subject, baselines, rounds=SINGLE_ROUNDS, warmup_rounds=WARMUP_ROUNDS
        )
    finally:
        os.close(descriptor)

    check_volume(volume, plan, sample_rounds(subject.done))
    check_sqlite(connection, plan, subject.done)
    commits = SINGLE_COMMITS_PER_ROUND
    workload = "durable_commit_1x1"
    throughput.report(
        workload,
        "subject",
        label="Volume, 1 row per commit (fsync)",
        records=commits,
        payload_bytes=commits * ROW_BYTES,
        unit="commits",
        ratio_goals=GOALS_SINGLE,
    )
    throughput.record(
        workload,
        "baseline-A",
        seconds=durations["baseline-A"],
        label="sqlite3 WAL sync=FULL, 1 row/txn",
        records=commits,
        payload_bytes=commits * ROW_BYTES,
        unit="commits",
    )
    throughput.record(
        workload,
        "baseline-B",
        seconds=durations["baseline-B"],
        label="machine: append 100 B + fsync loop",
        records=commits,
        payload_bytes=commits * FSYNC_APPEND_BYTES,
        unit="fsyncs",
    )


def test_durable_commit_8_threads(
    benchmark: Any, throughput: Throughput, volume: Volume, tmp_path: Path
) -> None:
    plan = plan_for(THREADS * THREAD_COMMITS, 1, THREAD_ROUNDS)
    strongest = [
        sqlite_durable(tmp_path / "threads-rowid.db", any_thread=True, rowid=True)
        for _ in range(THREADS)
    ]
    keyed = [sqlite_durable(tmp_path / "threads.db", any_thread=True) for _ in range(THREADS)]
    turns = threading.Lock()

    def volume_round(number: int) -> None:
        mtrs = plan.rounds[number]
        run_threads(THREADS, lambda t: commit_mtrs(volume, share(mtrs, THREADS, t)))

    def sqlite_round(
        connections: list[sqlite3.Connection], lock: threading.Lock | None, number: int
    ) -> None:
        mtrs = plan.rounds[number]
        run_threads(
            THREADS, lambda t: sqlite_insert_rows(connections[t], share(mtrs, THREADS, t), lock)
        )

    subject = CountingRounds(volume_round)
    durations = interleave(
        benchmark,
        subject,
        {
            "baseline-A": lambda number: timed(sqlite_round, strongest, turns, number),
            "baseline-B": lambda number: timed(sqlite_round, keyed, None, number),
        },
        rounds=THREAD_ROUNDS,
        warmup_rounds=WARMUP_ROUNDS,
    )

    check_volume(volume, plan, range(subject.done))
    check_sqlite(strongest[0], plan, subject.done)
    check_sqlite(keyed[0], plan, subject.done)
    commits = THREADS * THREAD_COMMITS
    workload = "durable_commit_8_threads"
    throughput.report(
        workload,
        "subject",
        label="Volume, 8 threads, 1 row per commit (fsync)",
        records=commits,
        payload_bytes=commits * ROW_BYTES,
        unit="commits",
        ratio_goals=GOALS_THREADS,
    )
    for role, label in (
        ("baseline-A", "sqlite3 WAL sync=FULL, 8 threads taking turns, rowid table, 1 row/txn"),
        ("baseline-B", "sqlite3 WAL sync=FULL, 8 threads, busy_timeout, keyed table, 1 row/txn"),
    ):
        throughput.record(
            workload,
            role,
            seconds=durations[role],
            label=label,
            records=commits,
            payload_bytes=commits * ROW_BYTES,
            unit="commits",
        )


def test_durable_batch_100(
    benchmark: Any, throughput: Throughput, volume: Volume, tmp_path: Path
) -> None:
    plan = plan_for(BATCH_COMMITS_PER_ROUND, BATCH_ROWS_PER_COMMIT, BATCH_ROUNDS)
    per_row = sqlite_durable(tmp_path / "per_row.db")
    many = sqlite_durable(tmp_path / "many.db")
    subject = CountingRounds(lambda number: commit_mtrs(volume, plan.rounds[number]))
    baselines = {
        "baseline-A": lambda number: timed(sqlite_insert_rows, per_row, plan.rounds[number]),
        "baseline-B": lambda number: timed(sqlite_insert_many, many, plan.rounds[number]),
    }
    durations = interleave(
        benchmark, subject, baselines, rounds=BATCH_ROUNDS, warmup_rounds=WARMUP_ROUNDS
    )

    check_volume(volume, plan, sample_rounds(subject.done))
    check_sqlite(per_row, plan, subject.done)
    check_sqlite(many, plan, subject.done)
    rows = plan.rows_per_round
    workload = "durable_batch_100"
    throughput.report(
        workload,
        "subject",
        label="Volume, 100 tx.write per commit (fsync)",
        records=rows,
        payload_bytes=rows * ROW_BYTES,
        unit="rows",
        ratio_goals=GOALS_BATCH,
    )
    throughput.record(
        workload,
        "baseline-A",
        seconds=durations["baseline-A"],
        label="sqlite3 WAL sync=FULL, 100 execute/txn",
        records=rows,
        payload_bytes=rows * ROW_BYTES,
        unit="rows",
    )
    throughput.record(
        workload,
        "baseline-B",
        seconds=durations["baseline-B"],
        label="sqlite3 WAL sync=FULL, executemany(100)/txn",
        records=rows,
        payload_bytes=rows * ROW_BYTES,
        unit="rows",
    )


# --- volumes built by a child process ---------------------------------------------------


@dataclass(frozen=True)
class BuiltLog:
    """A volume's log as the builder writes it: ``records`` records of one kind, in MTRs."""

    kind: str  # "page": put_page of 16 KiB images; "write": 1,000-byte writes
    records: int

    @classmethod
    def of_size(cls, kind: str, log_bytes: int) -> BuiltLog:
        per_mtr = PAGE_RECORDS_PER_MTR if kind == "page" else WRITE_RECORDS_PER_MTR
        payload = PAGE_SIZE if kind == "page" else WRITE_RECORD_BYTES
        record_bytes = 48 + payload  # log.RECORD_HEADER and a payload padded to 8 bytes
        mtrs = -(-log_bytes // (record_bytes * per_mtr))
        return cls(kind, mtrs * per_mtr)

    @property
    def per_mtr(self) -> int:
        return PAGE_RECORDS_PER_MTR if self.kind == "page" else WRITE_RECORDS_PER_MTR

    def write(self, volume: Volume) -> None:
        for start in range(0, self.records, self.per_mtr):
            with volume.transaction() as tx:
                for index in range(start, start + self.per_mtr):
                    if self.kind == "page":
                        tx.put_page(index % PAGE_SPAN, _stamp(index, PAGE_SIZE))
                    else:
                        slot = index // WRITE_PAGE_SPAN % WRITE_SLOTS
                        data = _stamp(index, WRITE_RECORD_BYTES)
                        tx.write(index % WRITE_PAGE_SPAN, slot * 1024, data)

    def expected_page(self, page_no: int) -> bytes:
        """The page once every record is applied: the last record to touch each byte wins."""
        if self.kind == "page":
            last = _last_index(self.records, page_no, PAGE_SPAN)
            return bytes(PAGE_SIZE) if last is None else _stamp(last, PAGE_SIZE)
        image = bytearray(PAGE_SIZE)
        for slot in range(WRITE_SLOTS):
            last = _last_index(
                self.records, page_no + WRITE_PAGE_SPAN * slot, WRITE_PAGE_SPAN * WRITE_SLOTS
            )
            if last is not None:
                image[slot * 1024 : slot * 1024 + WRITE_RECORD_BYTES] = _stamp(
                    last, WRITE_RECORD_BYTES
                )
        return bytes(image)

    def pages(self) -> int:
        return PAGE_SPAN if self.kind == "page" else WRITE_PAGE_SPAN


def _stamp(index: int, size: int) -> bytes:
    """``size`` bytes that name record ``index`` (a multiple of 8 bytes)."""
    return index.to_bytes(8, "little") * (size // 8)


def _last_index(count: int, residue: int, modulus: int) -> int | None:
    """The last of ``range(count)`` congruent to ``residue`` modulo ``modulus``."""
    if residue >= count:
        return None
    return residue + (count - 1 - residue) // modulus * modulus


def build_volume(path: Path, built: BuiltLog, crash: bool) -> None:
    """Runs in the builder process: a durable volume with ``built``'s log, then exit or close."""
    volume = Volume.create(path)
    built.write(volume)
    if crash:
        # Every commit above returned, so it is on four nodes' disks; dying here
        # leaves what a writer crash leaves: no close, no final node metadata.
        sys.stdout.flush()
        os._exit(0)
    volume.close()


def build_in_child(path: Path, built: BuiltLog, crash: bool) -> None:
    command = [sys.executable, __file__, "build", str(path), built.kind, str(built.records)]
    if crash:
        command.append("--crash")
    subprocess.run(command, check=True, timeout=3600)


def log_bytes_on(root: Path, node: str) -> int:
    return sum(path.stat().st_size for path in (root / "nodes" / node).glob("pg-*.log"))


def load_node(root: Path, name: str) -> StorageNode:
    """One node rebuilt from its folder exactly as ``Volume.open`` builds and loads it."""
    # The first two fields: options and volume id (later fields vary as the format grows).
    meta = read_volume_meta(root)
    options, volume_id = meta[0], meta[1]
    node = make_nodes(options, root, volume_id, None)[name]
    node.load()
    return node


# --- node restart -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def replay_volume(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, BuiltLog]]:
    path = tmp_path_factory.mktemp("replay") / "volume"
    built = BuiltLog.of_size("page", REPLAY_LOG_BYTES)
    build_in_child(path, built, crash=False)
    yield path, built
    shutil.rmtree(path.parent, ignore_errors=True)  # 1.6 GB: pytest keeps its last three tmp dirs


def test_node_restart_replay(
    benchmark: Any, throughput: Throughput, replay_volume: tuple[Path, BuiltLog]
) -> None:
    root, built = replay_volume
    log_file = root / "nodes" / REPLAY_NODE / log_name(0)
    file_bytes = log_file.stat().st_size
    assert file_bytes >= REPLAY_LOG_BYTES, f"the node log holds {file_bytes} bytes"
    loaded: list[StorageNode] = []

    def subject(number: int) -> None:
        loaded.append(load_node(root, REPLAY_NODE))

    def release(number: int) -> None:
        # Check every round's node, then free it: nodes and segments form reference cycles.
        node = loaded.pop()
        check_replayed(node, built, file_bytes)
        del node
        gc.collect()

    durations = interleave(
        benchmark,
        subject,
        {"baseline-A": lambda number: timed(log_file.read_bytes)},
        rounds=REPLAY_ROUNDS,
        warmup_rounds=WARMUP_ROUNDS,
        teardown=release,
    )

    frames = built.records // built.per_mtr
    workload = "node_restart_replay"
    throughput.report(
        workload,
        "subject",
        label=f"StorageNode.load, {file_bytes / MIB:.0f} MiB log",
        records=frames,
        payload_bytes=file_bytes,
        unit="frames",
        bytes_per_s_min=GOAL_REPLAY_BYTES_PER_S,
    )
    throughput.record(
        workload,
        "baseline-A",
        seconds=durations["baseline-A"],
        label="machine: read the log file whole (warm cache)",
        records=frames,
        payload_bytes=file_bytes,
        unit="frames",
    )


def check_replayed(node: StorageNode, built: BuiltLog, file_bytes: int) -> None:
    report = node.load_report
    assert report.bytes == file_bytes, f"replayed {report.bytes} of {file_bytes} bytes"
    assert report.frames == built.records // built.per_mtr
    assert not (report.torn_tails_cut or report.damaged_ranges or report.started_empty)
    segment = node.segments[0]
    assert segment.scl == built.records, f"SCL {segment.scl} after replay"
    for page_no in range(0, built.pages(), built.pages() // 16):
        image = segment.read(page_no, segment.scl, ())
        assert image == built.expected_page(page_no), f"page {page_no} reads wrong bytes"


# --- writer recovery ----------------------------------------------------------------------


class TimedRecoveryVolume(Volume):
    """``Volume`` unchanged, but its writer recovery (``_recover``) is timed on its own."""

    recover_s = 0.0

    def _recover(self) -> RecoveryPlan:
        started = time.perf_counter()
        try:
            return super()._recover()
        finally:
            self.recover_s = time.perf_counter() - started


@dataclass
class CrashedVolume:
    """A pristine crashed volume, copied afresh for every open (recovery changes it)."""

    pristine: Path
    built: BuiltLog
    label: str
    opens: list[float]
    protocols: list[float]

    def fresh_copy(self, number: int) -> Path:
        target = self.pristine.parent / f"open-{number}"
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(self.pristine, target)
        # Flushed before timing: writeback of the copy would slow the recovery's own fsyncs,
        # more for the large log than for the small one.
        for path in target.rglob("*"):
            if path.is_file():
                descriptor = os.open(path, os.O_RDONLY)
                try:
                    os.fsync(descriptor)
                finally:
                    os.close(descriptor)
        return target

    def open(self, path: Path, number: int, warmup_rounds: int) -> TimedRecoveryVolume:
        started = time.perf_counter()
        volume = TimedRecoveryVolume.open(path)
        seconds = time.perf_counter() - started
        assert isinstance(volume, TimedRecoveryVolume)
        if number >= warmup_rounds:
            self.opens.append(seconds)
            self.protocols.append(volume.recover_s)
        return volume

    def check_and_close(self, volume: Volume, path: Path) -> None:
        try:
            check_recovered(volume, self.built)
        finally:
            volume.close()
            shutil.rmtree(path, ignore_errors=True)

    def replayed_bytes(self) -> int:
        return sum(log_bytes_on(self.pristine, node) for node in NODE_NAMES)


def check_recovered(volume: Volume, built: BuiltLog) -> None:
    """Every commit returned before the crash, so every one must be visible, and nothing else."""
    plan = volume.recovery
    assert plan is not None
    assert plan.vdl == built.records == volume.vdl, f"VDL {plan.vdl} for {built.records} records"
    step = max(1, built.pages() // RECOVERY_CHECK_PAGES)
    for page_no in range(0, built.pages(), step):
        assert volume.read_page(page_no) == built.expected_page(page_no), f"page {page_no}"


@pytest.fixture(scope="module")
def crashed_volumes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, CrashedVolume]]:
    volumes = {}
    for role, log_bytes in (
        ("baseline-A", RECOVERY_SMALL_BYTES),
        ("subject", RECOVERY_LARGE_BYTES),
    ):
        built = BuiltLog.of_size("write", log_bytes)
        pristine = tmp_path_factory.mktemp(f"crashed-{role}") / "volume"
        build_in_child(pristine, built, crash=True)
        label = f"{log_bytes / 1e6:.0f} MB log"
        volumes[role] = CrashedVolume(pristine, built, label, [], [])
    yield volumes
    for crashed in volumes.values():
        shutil.rmtree(crashed.pristine.parent, ignore_errors=True)


def test_writer_recovery(
    benchmark: Any, throughput: Throughput, crashed_volumes: dict[str, CrashedVolume]
) -> None:
    small, large = crashed_volumes["baseline-A"], crashed_volumes["subject"]
    warmup = RECOVERY_WARMUP_ROUNDS
    opened: list[tuple[Volume, Path]] = []
    large_paths: list[Path] = []

    def small_round(number: int) -> float:
        path = small.fresh_copy(number)
        volume = small.open(path, number, warmup)
        small.check_and_close(volume, path)
        return small.opens[-1] if number >= warmup else 0.0

    def prepare(number: int) -> None:
        large_paths.append(large.fresh_copy(number))

    def subject(number: int) -> None:
        path = large_paths.pop()
        opened.append((large.open(path, number, warmup), path))

    def close(number: int) -> None:
        volume, path = opened.pop()
        large.check_and_close(volume, path)
        gc.collect()

    interleave(
        benchmark,
        subject,
        {"baseline-A": small_round},
        rounds=RECOVERY_ROUNDS,
        warmup_rounds=warmup,
        prepare=prepare,
        teardown=close,
    )

    benchmark.extra_info["recovery_log_bytes"] = {
        "small": RECOVERY_SMALL_BYTES,
        "large": RECOVERY_LARGE_BYTES,
        "large_opt_in": LARGE,
    }
    for workload, pick, goals in (
        ("writer_recovery", "protocol", True),
        ("writer_recovery_node_reload", "reload", False),
    ):
        for role, crashed in (("subject", large), ("baseline-A", small)):
            seconds = crashed.protocols
            if pick == "reload":
                seconds = [o - p for o, p in zip(crashed.opens, crashed.protocols, strict=True)]
            what = "Volume._recover" if pick == "protocol" else "Volume.open minus _recover"
            throughput.record(
                workload,
                role,
                seconds=seconds,
                label=f"{what}, {crashed.label}",
                records=1,
                # Bytes per second of the reload; the protocol reads no log, only SCLs.
                payload_bytes=crashed.replayed_bytes() if pick == "reload" else 0,
                unit="recoveries" if pick == "protocol" else "reloads",
                ratio_goals=GOALS_RECOVERY_FLAT if goals and role == "subject" else None,
                median_us_max=GOAL_RECOVERY_US if goals and role == "subject" else None,
            )
    throughput.report(
        "writer_recovery_open",
        "subject",
        label=f"Volume.open, {large.label}",
        records=1,
        payload_bytes=large.replayed_bytes(),
        unit="opens",
    )
    throughput.record(
        "writer_recovery_open",
        "baseline-A",
        seconds=small.opens,
        label=f"Volume.open, {small.label}",
        records=1,
        payload_bytes=small.replayed_bytes(),
        unit="opens",
    )


# --- the builder ----------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description="Builds a durable volume for the benchmarks.")
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("build")
    build.add_argument("path", type=Path)
    build.add_argument("kind", choices=("page", "write"))
    build.add_argument("records", type=int)
    build.add_argument("--crash", action="store_true", help="exit without closing the volume")
    arguments = parser.parse_args()
    build_volume(arguments.path, BuiltLog(arguments.kind, arguments.records), arguments.crash)


if __name__ == "__main__":
    main()
