"""Segment repair: how fast a segment is rebuilt from a peer's pages (hydration).

Workloads (all of one protection group holding ``AURORA_STORAGE_BENCH_SCALE_MB``
of 16 KiB pages, default 1,024: 1 GiB, written in MTRs of 16 ``put_page``):

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
round, untimed. Run: ``.venv/bin/pytest benchmarks/bench_repair.py
--benchmark-only -q``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import TINY, Throughput, interleave, sized, timed

from aurora_storage import Volume
from aurora_storage.config import NODE_NAMES
from aurora_storage.protocol import messages as m
from aurora_storage.protocol.node import StorageNode
from aurora_storage.runtime.disk import RealDisk

PAGE = 16384
MTR_PAGES = 16
SCALE_MB = 4 if TINY else int(os.environ.get("AURORA_STORAGE_BENCH_SCALE_MB", "1024"))
PAGES = SCALE_MB * 1024 * 1024 // PAGE
ROUNDS = sized(5, 2)
PEER, FRESH = "az1-b", "az1-a"


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
