"""Benchmarks of a volume larger than its page cache (durability "os", pages on disk).

The scale is ``AURORA_STORAGE_BENCH_SCALE_MB`` MiB of 16 KiB pages (default
256; tiny runs use 4). The first three workloads share a volume of that size,
written whole, page images in MTRs of 16, with a page cache of 64 MiB for the
six nodes: most pages are not in memory. The others are about what must not
grow with the amount of data: a checkpoint's time, a writer's memory, the
bytes written per byte committed.

- ``read_uncached``: random ``read_page`` over the whole volume, each page
  read back from a node's page store unless cached. Baseline A: LMDB (py-lmdb)
  random gets of the same pages, 16 KiB values keyed by page number, in one
  read transaction: the page store a user would pick instead. Both read
  through a warm OS page cache. Goals: >= 0.5x LMDB, median read under 100 us.
- ``bulk_load_full_pages``: the volume written whole, physical MB/s (six
  copies). Baseline A: the machine itself, ``os.pwrite`` of the same pages to
  six files (goal >= 0.5x); baseline B: LMDB putting the same pages in one
  write transaction, ``sync`` off as the volume's durability "os" (goal >= 1.0x
  of LMDB's physical MB/s: one copy).
- ``reopen``: ``Volume.open`` of the volume (its nodes read each store's
  headers and the log since the last checkpoint, never a page image), timed
  against opening a volume of 1/16 of the size in the same run: the ratio
  says how flat an open is in the amount of data (goal: the large one within
  1.2x of the small one's time, so ratio >= 0.83).
- ``checkpoint_flat``: the six nodes' checkpoints of the segments that
  changed, after 1,000 random pages of the volume were changed (``put_page``,
  MTRs of 16), against the same in a volume of 1/16 of the size (baseline A),
  round by round. Both volumes are opened with a cache of 512 MiB, so that no
  checkpoint the cache forces comes in between (a node checkpoints a segment
  once a quarter of its share, 21 MiB, changed): the one timed covers the
  round's pages (but for those of its last commit, above the nodes' VDL hint
  until the next commit: the next round's takes them). Six warmup rounds fill
  the cache, and the volumes' build is synced (``os.sync``) before the first.
  Untimed, before each checkpoint: the commits, then each segment folds its
  records up to what its node knows is durable (``coalesce`` to the lesser of
  the volume's VDL and the node's VDL hint) and drops the frames below
  (``collect_garbage``), as the writer's floor lets it. Timed:
  ``node.checkpoint(segment)`` for every node and every segment with changed
  pages; each must return True and leave no changed page. Goal: flat, the
  large volume's checkpoints within 1.2x of the small one's (ratio >= 0.83).
- ``rss_flat``: the peak RSS (``VmHWM`` of /proc/self/status, read in a fresh
  process: getrusage's maxrss would carry the parent's peak across exec) of a
  process that writes a volume whole (16 KiB pages in MTRs of 16, the default
  cache of 256 MiB), at 1/16, 1/4 and all of the scale (4096: 256 MiB, 1 GiB,
  4 GiB). Timed: the three processes, one after the other. Goal: every peak
  under ``cache_bytes`` + 256 MiB. The peaks are figures, not rates: they go
  into ``extra_info["figures"]`` and a table of their own at the end of the
  session, with the goal met or MISSED (conftest.py's goals are ratios,
  medians and rates).
- ``write_amplification[rows_100B]``, ``write_amplification[full_pages]``:
  bytes written per byte committed, over a run long enough for several
  checkpoints (each node's page store must have completed at least three
  writes: one per checkpoint), in a fresh volume a round (default cache).
  Rows: 100-byte ``tx.write`` at random offsets of random pages of a 64 MiB
  range, 100 rows a commit, 1/8 of the scale of row bytes a round. Pages:
  full 16 KiB ``put_page`` images of random pages of the same range, 16 a
  commit, the scale of page bytes a round. Bytes written: the process's
  ``wchar`` (/proc/self/io: bytes handed to write(2) and pwrite(2) by every
  thread) from ``Volume.create`` to the last commit, all six nodes'; with
  durability "os" every write happens on the committing thread. Figures:
  that over the bytes committed (and ``rchar`` likewise: a checkpoint reads
  its log back). Goal for full pages: under 20x (six copies of the log and
  six of the page store make 12x). Timed: creating the volume and the commits.
- ``scatter_128tib``: a fresh process writes 1/4 of the scale of 16 KiB pages
  scattered at random over a volume of capacity 128 TiB (so over some 13,000
  protection groups of 10 GiB), MTRs of 16, the default cache. Figures: the
  folder's disk use (the sum of ``st_blocks * 512``), goal under six copies
  plus 1 MiB a node; the process's peak RSS, goal under ``cache_bytes`` +
  256 MiB. Timed: the process.

Run: ``.venv/bin/pytest benchmarks/bench_scale.py --benchmark-only -q``;
``AURORA_STORAGE_BENCH_SCALE_MB=4096`` for the 4 GiB figures (some 50 GiB of
disk at once: the shared volume and checkpoint_flat's two; every other
workload deletes its volumes after each round).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import textwrap
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lmdb
import pytest
from conftest import TINY, Throughput, interleave, sized, timed

from aurora_storage import Volume
from aurora_storage.config import CACHE_BYTES_DEFAULT, CAPACITY_MAX
from aurora_storage.protocol import node as node_module
from aurora_storage.protocol import segment as segment_module
from aurora_storage.protocol.node import StorageNode
from aurora_storage.protocol.segment import Segment

MIB = 1024 * 1024
PAGE = 16384
MTR_PAGES = 16
SCALE_MB = 4 if TINY else int(os.environ.get("AURORA_STORAGE_BENCH_SCALE_MB", "256"))
CACHE_BYTES = 64 * 1024 * 1024
READS_PER_ROUND = sized(256, 16)
ROUNDS = sized(20, 2)
WARMUP_ROUNDS = sized(1, 1)
SEED = 20180610

# checkpoint_flat
CHECKPOINT_PAGES = sized(1000, 32)  # pages a round changes
CHECKPOINT_CACHE_BYTES = 512 * MIB  # a quarter of a node's share holds 1,000 changed pages
CHECKPOINT_ROUNDS = sized(12, 2)
# A round brings 16 MB of images a node into memory: after six, a node's share of the
# cache (85 MiB) is full, and each round evicts as much as it brings (the steady state).
CHECKPOINT_WARMUP_ROUNDS = sized(6, 1)

# rss_flat, scatter_128tib: a writer in a process of its own
RSS_MEGABYTES = sorted({max(1, SCALE_MB // 16), max(1, SCALE_MB // 4), SCALE_MB})
RSS_GOAL_BYTES = CACHE_BYTES_DEFAULT + 256 * MIB  # peak RSS of a writer with the default cache
SCATTER_MEGABYTES = max(1, SCALE_MB // 4)
SCATTER_COPIES_MAX = 6  # disk bytes per byte of pages written
SCATTER_FIXED_BYTES = 6 * MIB  # beside the copies: 1 MiB a node (node.meta, folders)
CHILD_TIMEOUT_S = 4 * 3600  # a bound on a hung writer, not a timing

# write_amplification
AMP_RANGE_PAGES = 64 * MIB // PAGE  # the pages the writes fall on
AMP_ROW_BYTES = 100
AMP_ROWS_PER_MTR = 100
AMP_ROWS = sized(SCALE_MB // 8, 10) * MIB // AMP_ROW_BYTES  # rows a round
AMP_PAGES = sized(SCALE_MB, 24) * MIB // PAGE  # page images a round
AMP_ROUNDS = sized(3, 1)
AMP_CHECKPOINTS_MIN = sized(3, 1)  # store writes each node completed in a round
AMP_POOL_BYTES = 1 * MIB  # random bytes the payloads are cut from
AMP_FACTOR_MAX = {"full_pages": 20.0}  # goal on bytes written per byte committed


# --- figures that are not rates ---------------------------------------------------------


@dataclass(frozen=True)
class Figure:
    """One measured figure of a workload (a peak RSS, bytes per byte) and its upper bound."""

    workload: str
    what: str
    value: float
    unit: str  # "B" (shown in MiB) or "x" (a factor)
    goal_max: float | None = None

    @property
    def met(self) -> bool | None:
        return None if self.goal_max is None else self.value < self.goal_max

    def show(self, value: float) -> str:
        return f"{value / MIB:.1f} MiB" if self.unit == "B" else f"{value:.2f}x"


class Figures:
    """The figures of this file's workloads, printed at the end of the session in a
    table of their own, beside conftest.py's table of rates (whose goals are ratios,
    medians and rates only). A pytest plugin, registered by the ``figures`` fixture.
    As there, a missed goal is reported, never failed."""

    def __init__(self) -> None:
        self.figures: list[Figure] = []

    def add(self, benchmark: Any, figure: Figure) -> None:
        """Keeps ``figure`` for the summary and puts it in ``extra_info["figures"]``."""
        self.figures.append(figure)
        benchmark.extra_info.setdefault("figures", {})[figure.what] = {
            "value": figure.value,
            "unit": figure.unit,
            "goal_max": figure.goal_max,
            "met": figure.met,
        }

    def lines(self) -> list[str]:
        cells = [("workload", "figure", "value", "goal", "result")]
        for figure in self.figures:
            goal = "-" if figure.goal_max is None else f"< {figure.show(figure.goal_max)}"
            result = {None: "", True: "met", False: "MISSED"}[figure.met]
            cells.append((figure.workload, figure.what, figure.show(figure.value), goal, result))
        widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
        lines = [
            "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in cells
        ]
        lines.insert(1, "  ".join("-" * width for width in widths))
        return [line.rstrip() for line in lines]

    @pytest.hookimpl(trylast=True)  # at the end, after conftest.py's table
    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not self.figures:
            return
        title = "figures beside the rates: peak memory, bytes written (same run)"
        terminalreporter.write_sep("=", title + (", tiny: they measure nothing" if TINY else ""))
        for line in self.lines():
            terminalreporter.write_line(line)


FIGURES_PLUGIN = "aurora-storage-bench-scale-figures"


@pytest.fixture(scope="session")
def figures(pytestconfig: pytest.Config) -> Figures:
    plugin = pytestconfig.pluginmanager.get_plugin(FIGURES_PLUGIN)
    if plugin is None:
        plugin = Figures()
        pytestconfig.pluginmanager.register(plugin, FIGURES_PLUGIN)
    assert isinstance(plugin, Figures)
    return plugin


def write_volume(path: Path, megabytes: int) -> tuple[int, bytes]:
    """A volume on disk of ``megabytes`` of pages; every page holds the page number in
    its first 8 bytes over a shared pattern. Returns (pages, the pattern)."""
    pages = megabytes * 1024 * 1024 // PAGE
    pattern = random.Random(SEED).randbytes(PAGE)
    volume = Volume.create(path, page_size=PAGE, durability="os", cache_bytes=CACHE_BYTES)
    for first in range(0, pages, MTR_PAGES):
        with volume.transaction() as tx:
            for page_no in range(first, min(first + MTR_PAGES, pages)):
                tx.put_page(page_no, page_no.to_bytes(8, "little") + pattern[8:])
    volume.close()
    return pages, pattern


@pytest.fixture(scope="module")
def large(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, int, bytes]]:
    path = tmp_path_factory.mktemp("scale") / "volume"
    pages, pattern = write_volume(path, SCALE_MB)
    yield path, pages, pattern


def warm_files(folder: Path) -> None:
    """Reads every file under ``folder`` once, so that the OS page cache holds it."""
    for file in sorted(folder.rglob("*")):
        if file.is_file():
            with open(file, "rb") as reader:
                while reader.read(1 << 20):
                    pass


def lmdb_pages(path: Path, pages: int, pattern: bytes) -> Any:
    env = lmdb.open(str(path), map_size=pages * PAGE * 2 + (64 << 20), sync=False)
    with env.begin(write=True) as txn:
        for page_no in range(pages):
            txn.put(page_no.to_bytes(8, "big"), page_no.to_bytes(8, "little") + pattern[8:])
    return env


def test_read_uncached(
    benchmark: Any, throughput: Throughput, large: tuple[Path, int, bytes], tmp_path: Path
) -> None:
    path, pages, pattern = large
    volume = Volume.open(path, cache_bytes=CACHE_BYTES)
    env = lmdb_pages(tmp_path / "lmdb", pages, pattern)
    # Both sides warm in the OS page cache: the replica that serves the reads (a direct
    # transport asks the first member first) and LMDB's file, each read through once.
    # Building the volume wrote six copies: the first one's pages may have left the
    # cache since, while LMDB's were just written.
    warm_files(path / "nodes" / next(iter(volume.cluster.nodes)))
    warm_files(tmp_path / "lmdb")
    rng = random.Random(SEED + 1)
    orders = [
        [rng.randrange(pages) for _ in range(READS_PER_ROUND)]
        for _ in range(ROUNDS + WARMUP_ROUNDS)
    ]
    read_page = volume.read_page

    def subject(number: int) -> None:
        for page_no in orders[number]:
            read_page(page_no)

    def lmdb_reads(number: int) -> None:
        with env.begin(buffers=True) as txn:
            get = txn.get
            for page_no in orders[number]:
                bytes(get(page_no.to_bytes(8, "big")))

    durations = interleave(
        benchmark,
        subject,
        {"baseline-A": lambda number: timed(lmdb_reads, number)},
        rounds=ROUNDS,
        warmup_rounds=WARMUP_ROUNDS,
    )
    for page_no in orders[0][:32]:
        assert volume.read_page(page_no) == page_no.to_bytes(8, "little") + pattern[8:]
    volume.close()
    env.close()
    workload = "read_uncached"
    throughput.report(
        workload,
        "subject",
        label=f"Volume.read_page, {SCALE_MB} MiB volume, 64 MiB cache",
        records=READS_PER_ROUND,
        payload_bytes=READS_PER_ROUND * PAGE,
        unit="reads",
        ratio_goals={"baseline-A": 0.5},
        median_us_max=100.0 * READS_PER_ROUND,
    )
    throughput.record(
        workload,
        "baseline-A",
        seconds=durations["baseline-A"],
        label="LMDB random get, 16 KiB values",
        records=READS_PER_ROUND,
        payload_bytes=READS_PER_ROUND * PAGE,
        unit="reads",
    )


def test_reopen(
    benchmark: Any, throughput: Throughput, large: tuple[Path, int, bytes], tmp_path: Path
) -> None:
    path, pages, _ = large
    small = tmp_path / "small"
    write_volume(small, max(1, SCALE_MB // 16))

    def open_close(folder: Path) -> None:
        Volume.open(folder, cache_bytes=CACHE_BYTES).close()

    durations = interleave(
        benchmark,
        lambda number: open_close(path),
        {"baseline-A": lambda number: timed(open_close, small)},
        rounds=sized(8, 2),
        warmup_rounds=1,
    )
    workload = "reopen"
    throughput.report(
        workload,
        "subject",
        label=f"Volume.open, {SCALE_MB} MiB",
        records=1,
        payload_bytes=pages * PAGE,
        unit="opens",
        ratio_goals={"baseline-A": 1 / 1.2},
        median_us_max=1_000_000.0,
    )
    throughput.record(
        workload,
        "baseline-A",
        seconds=durations["baseline-A"],
        label=f"Volume.open, {max(1, SCALE_MB // 16)} MiB",
        records=1,
        payload_bytes=pages * PAGE // 16,
        unit="opens",
    )


def test_bulk_load_full_pages(benchmark: Any, throughput: Throughput, tmp_path: Path) -> None:
    megabytes = SCALE_MB
    pages = megabytes * 1024 * 1024 // PAGE
    pattern = random.Random(SEED).randbytes(PAGE)
    images = [page_no.to_bytes(8, "little") + pattern[8:] for page_no in range(MTR_PAGES)]

    def subject(number: int) -> None:
        write_volume(tmp_path / f"volume-{number}", megabytes)

    def six_files(number: int) -> float:
        folder = tmp_path / f"files-{number}"
        folder.mkdir()
        handles = [os.open(folder / f"copy-{i}", os.O_WRONLY | os.O_CREAT) for i in range(6)]

        def write() -> None:
            for page_no in range(pages):
                image = images[page_no % MTR_PAGES]
                for handle in handles:
                    os.pwrite(handle, image, page_no * PAGE)

        seconds = timed(write)
        for handle in handles:
            os.close(handle)
        shutil.rmtree(folder)
        return seconds

    def lmdb_load(number: int) -> float:
        folder = tmp_path / f"lmdb-{number}"
        env = lmdb.open(str(folder), map_size=pages * PAGE * 2 + (64 << 20), sync=False)

        def write() -> None:
            with env.begin(write=True) as txn:
                for page_no in range(pages):
                    txn.put(page_no.to_bytes(8, "big"), images[page_no % MTR_PAGES])

        seconds = timed(write)
        env.close()
        shutil.rmtree(folder)
        return seconds

    def cleanup(number: int) -> None:
        shutil.rmtree(tmp_path / f"volume-{number}", ignore_errors=True)

    durations = interleave(
        benchmark,
        subject,
        {"baseline-A": six_files, "baseline-B": lmdb_load},
        rounds=sized(3, 1),
        warmup_rounds=0,
        teardown=cleanup,
    )
    physical = pages * PAGE * 6
    workload = "bulk_load_full_pages"
    throughput.report(
        workload,
        "subject",
        label=f"Volume, {megabytes} MiB of 16 KiB pages, durability os (six copies)",
        records=pages,
        payload_bytes=physical,
        unit="pages",
        # Per page written: LMDB writes one copy, the volume six, so 1/6 of LMDB's
        # pages/s is 1.0x of its physical MB/s.
        ratio_goals={"baseline-A": 0.5, "baseline-B": 1 / 6},
    )
    throughput.record(
        workload,
        "baseline-A",
        seconds=durations["baseline-A"],
        label="machine: os.pwrite to six files",
        records=pages,
        payload_bytes=physical,
        unit="pages",
    )
    throughput.record(
        workload,
        "baseline-B",
        seconds=durations["baseline-B"],
        label="LMDB put, sync off (one copy)",
        records=pages,
        payload_bytes=pages * PAGE,
        unit="pages",
    )


# --- checkpoint_flat ---------------------------------------------------------------------


def changed_image(page_no: int, number: int, pattern: bytes) -> bytes:
    """Page ``page_no`` as round ``number`` of checkpoint_flat writes it."""
    return page_no.to_bytes(8, "little") + number.to_bytes(8, "little") + pattern[16:]


class CheckpointRounds:
    """A volume on disk whose rounds change CHECKPOINT_PAGES random pages, then
    checkpoint every segment that changed, on every node."""

    def __init__(self, path: Path, megabytes: int, seed: int) -> None:
        self.path = path
        self.pages, self.pattern = write_volume(path, megabytes)
        self.volume = Volume.open(path, cache_bytes=CHECKPOINT_CACHE_BYTES)
        self.rng = random.Random(seed)
        self.chosen: dict[int, list[int]] = {}  # round -> the pages it changed
        self.due: list[tuple[StorageNode, Segment, int]] = []  # with the cutoff expected
        self.results: list[bool] = []
        self.checkpointed = 0  # checkpoints taken and checked

    def change(self, number: int) -> None:
        """Untimed: the round's commits, then every segment folds its records up to
        what its node knows is durable and drops the frames below (the writer's floor)."""
        chosen = self.chosen[number] = self.rng.sample(range(self.pages), CHECKPOINT_PAGES)
        for first in range(0, len(chosen), MTR_PAGES):
            with self.volume.transaction() as tx:
                for page_no in chosen[first : first + MTR_PAGES]:
                    tx.put_page(page_no, changed_image(page_no, number, self.pattern))
        volume = self.volume
        with volume.transport.lock:
            for node in volume.cluster.nodes.values():
                upto = min(volume.vdl, node.vdl_hint)
                for segment in node.segments.values():
                    segment.coalesce(upto, node.annulled())
                    segment.collect_garbage(upto)
                    if segment.changed_pages:
                        self.due.append((node, segment, segment.coalesced_lsn))
        # Every page of the round but those of its last commit (above the VDL hint).
        changed = sum(len(segment.changed_pages or ()) for _, segment, _ in self.due)
        assert changed >= 6 * (CHECKPOINT_PAGES - MTR_PAGES), f"{changed} changed pages"

    def checkpoint(self, number: int = 0) -> None:
        """Timed: the checkpoint of every segment that changed, on every node."""
        with self.volume.transport.lock:
            self.results += [node.checkpoint(segment) for node, segment, _ in self.due]

    def check(self, number: int = 0) -> None:
        """Every checkpoint of the round was taken, at the point its segment folded to."""
        assert self.due and self.results == [True] * len(self.due), self.results
        for node, segment, cutoff in self.due:
            assert segment.checkpoint_lsn == cutoff, (node.name, segment.checkpoint_lsn, cutoff)
            assert not segment.changed_pages, (node.name, len(segment.changed_pages or ()))
        self.checkpointed += len(self.due)
        self.due.clear()
        self.results.clear()

    def baseline_round(self, number: int) -> float:
        self.change(number)
        seconds = timed(self.checkpoint)
        self.check()
        return seconds

    def close_and_check(self) -> None:
        """Reopened, the volume reads the last round's pages as it wrote them."""
        self.volume.close()
        volume = Volume.open(self.path, cache_bytes=CACHE_BYTES)
        try:
            number = max(self.chosen)
            for page_no in self.chosen[number][:64]:
                assert volume.read_page(page_no) == changed_image(page_no, number, self.pattern)
        finally:
            volume.close()
        shutil.rmtree(self.path)


def test_checkpoint_flat(
    benchmark: Any, throughput: Throughput, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The round's 1,000 pages (16 MiB) must wait for the timed checkpoint: no node
    # folds or checkpoints on its own meanwhile (its hot-record budget, the segment's
    # coalescing threshold and the frame count are raised past one round).
    monkeypatch.setattr(node_module, "HOT_BYTES_MAX", 256 << 20)
    monkeypatch.setattr(segment_module, "COALESCE_RECORD_BYTES", 256 << 20)
    monkeypatch.setattr(node_module, "CHECKPOINT_EVERY_FRAMES", 1 << 30)
    small_megabytes = max(1, SCALE_MB // 16)
    large = CheckpointRounds(tmp_path / "large", SCALE_MB, SEED + 2)
    small = CheckpointRounds(tmp_path / "small", small_megabytes, SEED + 3)
    os.sync()  # the write-back of building them must not fall on the first rounds
    durations = interleave(
        benchmark,
        large.checkpoint,
        {"baseline-A": small.baseline_round},
        rounds=CHECKPOINT_ROUNDS,
        warmup_rounds=CHECKPOINT_WARMUP_ROUNDS,
        prepare=large.change,
        teardown=large.check,
    )
    if large.due:  # --benchmark-disable runs no teardown
        large.check()
    assert large.checkpointed and small.checkpointed
    large.close_and_check()
    small.close_and_check()
    benchmark.extra_info["checkpoints"] = {"large": large.checkpointed, "small": small.checkpointed}
    workload = "checkpoint_flat"
    throughput.report(
        workload,
        "subject",
        label=f"checkpoints of 6 nodes, {CHECKPOINT_PAGES} pages changed in {SCALE_MB} MiB",
        records=CHECKPOINT_PAGES,
        payload_bytes=CHECKPOINT_PAGES * PAGE,
        unit="pages",
        ratio_goals={"baseline-A": 1 / 1.2},
    )
    throughput.record(
        workload,
        "baseline-A",
        seconds=durations["baseline-A"],
        label=f"the same in {small_megabytes} MiB",
        records=CHECKPOINT_PAGES,
        payload_bytes=CHECKPOINT_PAGES * PAGE,
        unit="pages",
    )


# --- rss_flat, scatter_128tib: a writer in a process of its own ---------------------------

WRITER = textwrap.dedent(
    """
    import json, random, sys
    from aurora_storage import Volume

    def status(field):  # VmHWM, not getrusage: Linux carries the parent's peak across exec
        with open("/proc/self/status") as lines:
            return next(int(line.split()[1]) * 1024 for line in lines if line.startswith(field))

    path, pages, capacity, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    page = 16384
    start = status("VmHWM")
    pattern = random.Random(seed).randbytes(page)
    if seed:  # scattered at random over the capacity, else pages 0 .. pages-1
        numbers = random.Random(seed).sample(range(capacity // page), pages)
    else:
        numbers = range(pages)
    volume = Volume.create(path, page_size=page, durability="os", capacity=capacity)
    for first in range(0, pages, 16):
        with volume.transaction() as tx:
            for page_no in numbers[first : first + 16]:
                tx.put_page(page_no, page_no.to_bytes(8, "little") + pattern[8:])
    for page_no in numbers[:: max(1, pages // 64)]:
        assert volume.read_page(page_no) == page_no.to_bytes(8, "little") + pattern[8:], page_no
    segments = len(next(iter(volume.cluster.nodes.values())).segments)
    volume.close()
    print(json.dumps({"start": start, "peak": status("VmHWM"), "segments": segments}))
    """
)


def write_in_child(
    folder: Path, volume: Path, megabytes: int, capacity: int, seed: int
) -> dict[str, int]:
    """A fresh process writes ``megabytes`` of 16 KiB pages to a new volume at ``volume``
    (default cache, durability "os"), checks some, closes it; returns its VmHWM at
    start and at the end (``peak``) and its segments a node. It runs in ``folder``,
    so it imports the installed package, not a checkout's."""
    script = folder / "writer.py"
    if not script.exists():
        script.write_text(WRITER)
    command = [sys.executable, str(script), str(volume), str(megabytes * MIB // PAGE)]
    done = subprocess.run(
        [*command, str(capacity), str(seed)],
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT_S,
        check=False,
        cwd=folder,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    found: dict[str, int] = json.loads(done.stdout.strip().splitlines()[-1])
    return found


def disk_bytes(folder: Path) -> tuple[int, int]:
    """(bytes the files under ``folder`` take on disk, files): holes take none."""
    used = files = 0
    for parent, _, names in os.walk(folder):
        for name in names:
            used += os.lstat(os.path.join(parent, name)).st_blocks * 512
            files += 1
    return used, files


def test_rss_flat(benchmark: Any, throughput: Throughput, figures: Figures, tmp_path: Path) -> None:
    peaks: dict[int, list[int]] = {megabytes: [] for megabytes in RSS_MEGABYTES}
    starts: list[int] = []

    def subject(number: int) -> None:
        for megabytes in RSS_MEGABYTES:
            volume = tmp_path / f"volume-{number}-{megabytes}"
            found = write_in_child(tmp_path, volume, megabytes, CAPACITY_MAX, 0)
            peaks[megabytes].append(found["peak"])
            starts.append(found["start"])

    def cleanup(number: int) -> None:
        for megabytes in RSS_MEGABYTES:
            shutil.rmtree(tmp_path / f"volume-{number}-{megabytes}", ignore_errors=True)

    interleave(benchmark, subject, {}, rounds=1, warmup_rounds=0, teardown=cleanup)
    cleanup(0)  # --benchmark-disable runs no teardown
    benchmark.extra_info["peak_rss_bytes"] = {f"{mb} MiB": max(peaks[mb]) for mb in peaks}
    benchmark.extra_info["start_rss_bytes"] = max(starts)  # the interpreter and the package
    for megabytes, peak in peaks.items():
        figures.add(
            benchmark,
            Figure(
                "rss_flat", f"peak RSS, {megabytes} MiB written", max(peak), "B", RSS_GOAL_BYTES
            ),
        )
    pages = sum(RSS_MEGABYTES) * MIB // PAGE
    throughput.report(
        "rss_flat",
        "subject",
        label=f"fresh processes writing {' + '.join(map(str, RSS_MEGABYTES))} MiB, default cache",
        records=pages,
        payload_bytes=pages * PAGE,
        unit="pages",
    )


def test_scatter_128tib(
    benchmark: Any, throughput: Throughput, figures: Figures, tmp_path: Path
) -> None:
    found: list[dict[str, int]] = []
    used: list[tuple[int, int]] = []

    def subject(number: int) -> None:
        volume = tmp_path / f"volume-{number}"
        found.append(write_in_child(tmp_path, volume, SCATTER_MEGABYTES, CAPACITY_MAX, SEED + 4))

    def cleanup(number: int) -> None:
        volume = tmp_path / f"volume-{number}"
        if volume.exists():
            used.append(disk_bytes(volume))
            shutil.rmtree(volume)

    interleave(benchmark, subject, {}, rounds=1, warmup_rounds=0, teardown=cleanup)
    cleanup(0)  # --benchmark-disable runs no teardown
    (child,), ((on_disk, files),) = found, used
    logical = SCATTER_MEGABYTES * MIB
    benchmark.extra_info["scatter"] = {
        "pages": logical // PAGE,
        "segments_per_node": child["segments"],
        "files": files,
        "disk_bytes": on_disk,
        "disk_bytes_per_byte": on_disk / logical,
        "peak_rss_bytes": child["peak"],
    }
    workload = "scatter_128tib"
    disk_goal = SCATTER_COPIES_MAX * logical + SCATTER_FIXED_BYTES
    what = f"disk use, {SCATTER_MEGABYTES} MiB scattered ({on_disk / logical:.1f}x)"
    figures.add(benchmark, Figure(workload, what, on_disk, "B", disk_goal))
    what = f"peak RSS, {SCATTER_MEGABYTES} MiB scattered"
    figures.add(benchmark, Figure(workload, what, child["peak"], "B", RSS_GOAL_BYTES))
    throughput.report(
        workload,
        "subject",
        label=f"a fresh process writing {SCATTER_MEGABYTES} MiB of pages scattered over 128 TiB",
        records=logical // PAGE,
        payload_bytes=logical,
        unit="pages",
    )


# --- write_amplification ----------------------------------------------------------------


def io_counters() -> dict[str, int]:
    """This process's I/O counters (/proc/self/io): every thread's, the dead ones' too."""
    with open("/proc/self/io") as lines:
        return {key: int(value) for key, value in (line.split(":") for line in lines)}


@dataclass
class AmplificationPlan:
    """One round's writes: page ``page_nos[i]`` gets ``payload(i)`` at ``offsets[i]``
    (rows), or as its whole image (pages)."""

    kind: str
    page_nos: array[int]
    offsets: array[int]
    pool: bytes

    @classmethod
    def make(cls, kind: str, seed: int) -> AmplificationPlan:
        rng = random.Random(seed)
        count = AMP_ROWS if kind == "rows_100B" else AMP_PAGES
        page_nos = array("I", (rng.randrange(AMP_RANGE_PAGES) for _ in range(count)))
        offsets = array("H")
        if kind == "rows_100B":
            offsets.extend(rng.randrange(PAGE - AMP_ROW_BYTES) for _ in range(count))
        return cls(kind, page_nos, offsets, rng.randbytes(AMP_POOL_BYTES))

    @property
    def records(self) -> int:
        return len(self.page_nos)

    @property
    def logical_bytes(self) -> int:
        return self.records * (AMP_ROW_BYTES if self.offsets else PAGE)

    def payload(self, index: int) -> bytes:
        size = AMP_ROW_BYTES if self.offsets else PAGE
        start = index * 8 % (AMP_POOL_BYTES - size)
        return self.pool[start : start + size]

    def commit(self, volume: Volume) -> None:
        """One transaction per AMP_ROWS_PER_MTR rows (or MTR_PAGES pages)."""
        page_nos, offsets, payload = self.page_nos, self.offsets, self.payload
        if offsets:
            for first in range(0, self.records, AMP_ROWS_PER_MTR):
                with volume.transaction() as tx:
                    for i in range(first, min(first + AMP_ROWS_PER_MTR, self.records)):
                        tx.write(page_nos[i], offsets[i], payload(i))
        else:
            for first in range(0, self.records, MTR_PAGES):
                with volume.transaction() as tx:
                    for i in range(first, min(first + MTR_PAGES, self.records)):
                        tx.put_page(page_nos[i], payload(i))

    def expected(self, pages: set[int]) -> dict[int, bytes]:
        """The images of ``pages`` after the round, replayed from the plan."""
        images = {page_no: bytearray(PAGE) for page_no in pages}
        for i, page_no in enumerate(self.page_nos):
            if page_no in images:
                data = self.payload(i)
                offset = self.offsets[i] if self.offsets else 0
                images[page_no][offset : offset + len(data)] = data
        return {page_no: bytes(image) for page_no, image in images.items()}


def store_writes(volume: Volume) -> list[int]:
    """Per node, the fewest completed writes of a page store of a segment written to:
    one per checkpoint (page_store.py, the header's write count)."""
    counts = []
    for node in volume.cluster.nodes.values():
        writes = [
            segment.store.headers()[0][1].write if segment.store is not None else 0
            for segment in node.segments.values()
        ]
        counts.append(min(writes))
    return counts


@pytest.mark.parametrize("kind", ["rows_100B", "full_pages"])
def test_write_amplification(
    benchmark: Any, throughput: Throughput, figures: Figures, tmp_path: Path, kind: str
) -> None:
    plans: dict[int, AmplificationPlan] = {}
    volumes: list[Volume] = []
    written: list[float] = []  # per round: wchar over the bytes committed
    read: list[float] = []
    checkpoints: list[int] = []

    def prepare(number: int) -> None:
        plans[number] = AmplificationPlan.make(kind, SEED + 10 + number)

    def subject(number: int) -> None:
        before = io_counters()
        volume = Volume.create(tmp_path / f"volume-{number}", page_size=PAGE, durability="os")
        volumes.append(volume)
        plans[number].commit(volume)
        after = io_counters()
        written.append((after["wchar"] - before["wchar"]) / plans[number].logical_bytes)
        read.append((after["rchar"] - before["rchar"]) / plans[number].logical_bytes)

    def check_and_delete(number: int) -> None:
        plan = plans.pop(number)
        volume = volumes.pop()
        try:
            sample = {plan.page_nos[0], plan.page_nos[plan.records // 2], plan.page_nos[-1]}
            for page_no, image in plan.expected(sample).items():
                assert volume.read_page(page_no) == image, f"page {page_no} of round {number}"
            checkpoints.append(min(store_writes(volume)))
        finally:
            volume.close()
            shutil.rmtree(tmp_path / f"volume-{number}")

    interleave(
        benchmark,
        subject,
        {},
        rounds=AMP_ROUNDS,
        warmup_rounds=0,
        prepare=prepare,
        teardown=check_and_delete,
    )
    if volumes:  # --benchmark-disable runs no teardown
        check_and_delete(max(plans))
    assert min(checkpoints) >= AMP_CHECKPOINTS_MIN, f"{checkpoints} checkpoints a node"
    logical = AMP_ROWS * AMP_ROW_BYTES if kind == "rows_100B" else AMP_PAGES * PAGE
    workload = f"write_amplification[{kind}]"
    benchmark.extra_info["amplification"] = {
        "logical_bytes": logical,
        "wchar_per_byte": written,
        "rchar_per_byte": read,
        "checkpoints_per_node": checkpoints,
    }
    what = f"bytes written per byte committed, {logical / MIB:.0f} MiB"
    figures.add(
        benchmark,
        Figure(workload, what, statistics.median(written), "x", AMP_FACTOR_MAX.get(kind)),
    )
    what = f"bytes read per byte committed, {logical / MIB:.0f} MiB"
    figures.add(benchmark, Figure(workload, what, statistics.median(read), "x"))
    unit = "rows" if kind == "rows_100B" else "pages"
    throughput.report(
        workload,
        "subject",
        label=f"Volume, {kind.replace('_', ' ')} on 64 MiB of pages, durability os",
        records=logical // (AMP_ROW_BYTES if kind == "rows_100B" else PAGE),
        payload_bytes=logical,
        unit=unit,
    )
