"""Benchmarks of the writer's commits and reads on a memory volume (direct transport).

Named workloads, one function each, every one checked for the right result
and, where it has a baseline, timed round by round against it in the same run
(``interleave`` in conftest.py). The volume is ``Volume.create()`` without a
path: durability ``"memory"``, six in-process nodes, so these figures are the
cost of the protocol and the C core, not of a disk. SQLite runs on a file in
the test's tmp_path, WAL mode, synchronous=OFF (no fsync either).

- ``commit_memory_100x100B``: MTRs of 100 rows of 100 bytes, one ``tx.write``
  a row. Baseline A: SQLite, 100 rows a transaction, one ``execute`` a row
  (the same one Python call a row); baseline B: the same with one
  ``executemany`` a transaction, SQLite's batch API, for context.
- ``commit_memory_1x100B``: one row per MTR; commits/s against SQLite
  committing one row per transaction.
- ``read_current_page``: ``read_page`` at VDL of 256 pages written whole
  (``put_page``), each read materialized from the C page log (a copy of the
  page record: nothing to apply on top), against SQLite reading a 16 KiB blob
  by key from its cache.
- ``read_page_pending_100``: one page with 100 unapplied 100-byte records,
  read again and again: reads/s and the median read.

Run: ``.venv/bin/pytest benchmarks/bench_volume.py --benchmark-only -q``.
"""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Iterator
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
    sample_rounds,
    sqlite_connect,
    sqlite_insert_many,
    sqlite_insert_rows,
)

from aurora_storage import Volume

SEED = 20170514

BATCH_MTRS_PER_ROUND = sized(10, 2)  # 1,000 rows a round
BATCH_ROWS_PER_MTR = 100
BATCH_ROUNDS = sized(60, 2)
SINGLE_MTRS_PER_ROUND = sized(200, 10)
SINGLE_ROUNDS = sized(30, 2)
WARMUP_ROUNDS = sized(2, 1)

READ_PAGES = sized(256, 16)  # 4 MiB of pages, read once each a round
READ_PAGES_PER_MTR = 16
READ_ROUNDS = sized(40, 2)
READ_FIRST_PAGE = 1_000_000  # far from any other workload's pages (each test has its volume anyway)

PENDING_PAGE_NO = 4242
PENDING_RECORDS = 100

GOALS_COMMIT = {"baseline-A": 1.0}
GOALS_READ = {"baseline-A": 1.0}


@pytest.fixture
def volume() -> Iterator[Volume]:
    volume = Volume.create()  # no path: durability "memory"
    assert volume.options.durability == "memory"
    yield volume
    volume.close()


def sqlite_memoryless(path: Path) -> sqlite3.Connection:
    return sqlite_connect(path, "OFF")


def plan_for(mtrs_per_round: int, rows_per_mtr: int, rounds: int) -> RowPlan:
    # One spare round: --benchmark-cprofile runs the setup once more.
    return row_plan(rounds + WARMUP_ROUNDS + 1, mtrs_per_round, rows_per_mtr, SEED)


# --- commits ------------------------------------------------------------------------


def test_commit_memory_100x100B(
    benchmark: Any, throughput: Throughput, volume: Volume, tmp_path: Path
) -> None:
    plan = plan_for(BATCH_MTRS_PER_ROUND, BATCH_ROWS_PER_MTR, BATCH_ROUNDS)
    per_row = sqlite_memoryless(tmp_path / "per_row.db")
    many = sqlite_memoryless(tmp_path / "many.db")
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
    payload = rows * ROW_BYTES
    workload = "commit_memory_100x100B"
    throughput.report(
        workload,
        "subject",
        label="Volume, 100 tx.write per MTR (memory)",
        records=rows,
        payload_bytes=payload,
        unit="rows",
        ratio_goals=GOALS_COMMIT,
    )
    throughput.record(
        workload,
        "baseline-A",
        seconds=durations["baseline-A"],
        label="sqlite3 WAL sync=OFF, 100 execute/txn",
        records=rows,
        payload_bytes=payload,
        unit="rows",
    )
    throughput.record(
        workload,
        "baseline-B",
        seconds=durations["baseline-B"],
        label="sqlite3 WAL sync=OFF, executemany(100)/txn",
        records=rows,
        payload_bytes=payload,
        unit="rows",
    )


def test_commit_memory_1x100B(
    benchmark: Any, throughput: Throughput, volume: Volume, tmp_path: Path
) -> None:
    plan = plan_for(SINGLE_MTRS_PER_ROUND, 1, SINGLE_ROUNDS)
    connection = sqlite_memoryless(tmp_path / "single.db")
    subject = CountingRounds(lambda number: commit_mtrs(volume, plan.rounds[number]))
    baselines = {
        "baseline-A": lambda number: timed(sqlite_insert_rows, connection, plan.rounds[number]),
    }
    durations = interleave(
        benchmark, subject, baselines, rounds=SINGLE_ROUNDS, warmup_rounds=WARMUP_ROUNDS
    )

    check_volume(volume, plan, sample_rounds(subject.done))
    check_sqlite(connection, plan, subject.done)
    commits = plan.mtrs_per_round
    workload = "commit_memory_1x100B"
    throughput.report(
        workload,
        "subject",
        label="Volume, 1 tx.write per MTR (memory)",
        records=commits,
        payload_bytes=commits * ROW_BYTES,
        unit="commits",
    )
    throughput.record(
        workload,
        "baseline-A",
        seconds=durations["baseline-A"],
        label="sqlite3 WAL sync=OFF, 1 row/txn",
        records=commits,
        payload_bytes=commits * ROW_BYTES,
        unit="commits",
    )


# --- reads --------------------------------------------------------------------------


def test_read_current_page(
    benchmark: Any, throughput: Throughput, volume: Volume, tmp_path: Path
) -> None:
    rng = random.Random(SEED + 1)
    page_nos = [READ_FIRST_PAGE + i for i in range(READ_PAGES)]
    images = {page_no: rng.randbytes(PAGE_SIZE) for page_no in page_nos}
    for start in range(0, READ_PAGES, READ_PAGES_PER_MTR):
        with volume.transaction() as tx:
            for page_no in page_nos[start : start + READ_PAGES_PER_MTR]:
                tx.put_page(page_no, images[page_no])
    connection = sqlite_memoryless(tmp_path / "pages.db")
    connection.execute("CREATE TABLE pages (page INTEGER PRIMARY KEY, image BLOB)")
    connection.execute("BEGIN")
    connection.executemany("INSERT INTO pages VALUES (?, ?)", images.items())
    connection.execute("COMMIT")
    order = page_nos[:]
    rng.shuffle(order)
    read_page = volume.read_page
    select = "SELECT image FROM pages WHERE page = ?"

    def subject(number: int) -> None:
        for page_no in order:
            read_page(page_no)

    def sqlite_reads() -> None:
        execute = connection.execute
        for page_no in order:
            execute(select, (page_no,)).fetchone()

    durations = interleave(
        benchmark,
        subject,
        {"baseline-A": lambda number: timed(sqlite_reads)},
        rounds=READ_ROUNDS,
        warmup_rounds=WARMUP_ROUNDS,
    )

    for page_no, image in images.items():
        assert volume.read_page(page_no) == image, f"page {page_no} reads wrong bytes"
        assert connection.execute(select, (page_no,)).fetchone() == (image,)
    workload = "read_current_page"
    throughput.report(
        workload,
        "subject",
        label="Volume.read_page at VDL, 16 KiB",
        records=READ_PAGES,
        payload_bytes=READ_PAGES * PAGE_SIZE,
        unit="reads",
        ratio_goals=GOALS_READ,
    )
    throughput.record(
        workload,
        "baseline-A",
        seconds=durations["baseline-A"],
        label="sqlite3 SELECT 16 KiB blob by key",
        records=READ_PAGES,
        payload_bytes=READ_PAGES * PAGE_SIZE,
        unit="reads",
    )


def test_read_page_pending_100(benchmark: Any, throughput: Throughput, volume: Volume) -> None:
    rng = random.Random(SEED + 2)
    expected = bytearray(PAGE_SIZE)
    for _ in range(PENDING_RECORDS):
        offset = rng.randrange(PAGE_SIZE - ROW_BYTES + 1)
        data = rng.randbytes(ROW_BYTES)
        with volume.transaction() as tx:  # one MTR a record: 100 LSNs, 100 frames
            tx.write(PENDING_PAGE_NO, offset, data)
        expected[offset : offset + ROW_BYTES] = data
    # Far below the coalescing threshold: every read applies the 100 records again.
    image = benchmark(volume.read_page, PENDING_PAGE_NO)

    assert image == expected, "the page reads wrong bytes"
    throughput.report(
        "read_page_pending_100",
        "subject",
        label="Volume.read_page, 100 pending records",
        records=1,
        payload_bytes=PAGE_SIZE,
        unit="reads",
    )
