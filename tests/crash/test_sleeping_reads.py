"""Sleeping segments woken by reads alone (protocol/node.py serve_read, reads.py).

A node keeps at most SEGMENTS_AWAKE_MAX segments awake, give or take a quarter:
quiet ones sleep and wake when used. A direct transport's reads call a node's
serve_read, which wakes the PG's segment; a volume that only reads (a scan
after a reopen) must not end with every segment it read awake.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from aurora_storage import Volume
from aurora_storage.protocol import node
from aurora_storage.runtime.transport import DirectTransport

PAGE = 4096
PG_PAGES = 16
PGS = 300
AWAKE = 16


@pytest.fixture(autouse=True)
def few_awake(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(node, "SEGMENTS_AWAKE_MAX", AWAKE)
    monkeypatch.setattr(node, "HOT_BYTES_MAX", 64 * 1024)  # quiet PGs fold and checkpoint


def test_a_scan_after_a_reopen_keeps_few_segments_awake(tmp_path: Path) -> None:
    rng = random.Random(23)
    volume = Volume.create(
        tmp_path / "volume",
        page_size=PAGE,
        segment_size=PAGE * PG_PAGES,
        capacity=PAGE * PG_PAGES * PGS,
        durability="os",
        transport=DirectTransport(sync_threads=0),
    )
    written = {}
    for pg_id in rng.sample(range(PGS), PGS):
        page_no = pg_id * PG_PAGES + rng.randrange(PG_PAGES)
        written[page_no] = rng.randbytes(PAGE)
        with volume.transaction() as tx:
            tx.put_page(page_no, written[page_no])
    volume.close()

    again = Volume.open(tmp_path / "volume", transport=DirectTransport(sync_threads=0))
    # Awake after the open: the segments whose logs hold frames (they cannot sleep).
    before = {name: len(storage.segments) for name, storage in again.cluster.nodes.items()}
    for storage in again.cluster.nodes.values():
        assert len(storage.dormant) > PGS // 2
    for page_no, image in sorted(written.items()):  # reads only: no message to a node
        assert again.read_page(page_no) == image
    awake = {name: len(storage.segments) for name, storage in again.cluster.nodes.items()}
    assert all(awake[name] <= max(before[name], AWAKE + AWAKE // 4) for name in awake), (
        before,
        awake,
    )
    again.close()


def test_status_counts_sleeping_segments(tmp_path: Path) -> None:
    """status() names every segment a node holds, asleep or awake."""
    rng = random.Random(31)
    volume = Volume.create(
        tmp_path / "volume",
        page_size=PAGE,
        segment_size=PAGE * PG_PAGES,
        capacity=PAGE * PG_PAGES * PGS,
        durability="os",
        transport=DirectTransport(sync_threads=0),
    )
    for pg_id in rng.sample(range(PGS), PGS):
        with volume.transaction() as tx:
            tx.put_page(pg_id * PG_PAGES, rng.randbytes(PAGE))
    assert any(storage.dormant for storage in volume.cluster.nodes.values())
    counts = {row["name"]: row["segments"] for row in volume.status()["nodes"]}
    assert counts == {name: PGS for name in volume.cluster.nodes}, counts
    volume.close()
