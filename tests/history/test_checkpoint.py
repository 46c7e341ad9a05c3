"""Node checkpoints: once the window has passed, old frames leave the disk.

A segment whose records are coalesced below what every reader, the backtrack
window, the backup and every peer need writes its pages to pg-<id>.pages and
rewrites its log without the older frames: disk use falls, and a reopened
volume reads the same bytes and still backtracks inside its window.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from aurora_storage import SimulatedClock, Volume
from aurora_storage.protocol import node, node_storage, segment

PAGE = 4096
START = 1_700_000_000.0


def disk_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in (path / "nodes").rglob("*") if f.is_file())


def test_disk_use_falls_once_the_window_passes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(segment, "COALESCE_RECORD_BYTES", 64 * 1024)
    monkeypatch.setattr(node, "CHECKPOINT_EVERY_FRAMES", 16)
    monkeypatch.setattr(node, "META_EVERY_FRAMES", 16)
    clock = SimulatedClock(START)
    path = tmp_path / "v"
    volume = Volume.create(
        path,
        page_size=PAGE,
        segment_size=PAGE * 64,
        capacity=PAGE * 64,
        clock=clock,
        backtrack_window=3600,
        durability="os",
    )
    image = bytes(range(256)) * (PAGE // 256)
    for i in range(200):
        clock.advance(10)
        with volume.transaction() as tx:
            tx.put_page(i % 8, image[i:] + image[:i])
    before = disk_bytes(path)
    assert not (path / "nodes" / "az1-a" / node_storage.checkpoint_name(0)).exists()
    clock.advance(7200)  # the window passes
    for i in range(200, 240):
        clock.advance(1)
        with volume.transaction() as tx:
            tx.put_page(i % 8, image[i % 256 :] + image[: i % 256])
    after = disk_bytes(path)
    assert (path / "nodes" / "az1-a" / node_storage.checkpoint_name(0)).exists()
    assert after < before, f"disk use went from {before} to {after} bytes"
    expected = [volume.read_page(p) for p in range(8)]
    earliest, latest = volume.backtrack_window
    target = (earliest + latest) / 2
    volume.close()
    clock.advance(5)
    reopened = Volume.open(path, clock=clock)
    assert [reopened.read_page(p) for p in range(8)] == expected
    reopened.backtrack(target)  # inside the window: its frames were kept
    assert [reopened.read_page(p) for p in range(8)] != expected
    reopened.backtrack(latest)  # forward again, to before the first backtrack ran
    assert [reopened.read_page(p) for p in range(8)] == expected
    with reopened.transaction() as tx:
        tx.write(3, 0, b"after the checkpoint")
    assert reopened.read_page(3)[:20] == b"after the checkpoint"
    reopened.close()
