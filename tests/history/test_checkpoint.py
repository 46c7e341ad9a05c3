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


def test_a_checkpoint_reads_only_the_log_above_its_cutoff(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The log since the last checkpoint is never read whole: its frames are in LSN
    order, so the checkpoint copies the tail above its cutoff (one read of that
    tail). Every version reads back the same, before and after a reopen."""
    monkeypatch.setattr(segment, "COALESCE_RECORD_BYTES", 16 * 1024)
    monkeypatch.setattr(node, "CHECKPOINT_EVERY_FRAMES", 8)
    clock = SimulatedClock(START)
    path = tmp_path / "v"
    volume = Volume.create(
        path, page_size=PAGE, segment_size=PAGE * 64, capacity=PAGE * 64, clock=clock
    )
    storage = volume.cluster.nodes["az2-b"]
    whole_reads: list[str] = []
    tail_reads: list[int] = []
    read, read_at = storage.disk.read, storage.disk.read_at

    def read_spy(name: str) -> bytes:
        if name.endswith(".log"):
            whole_reads.append(name)
        return read(name)

    def read_at_spy(name: str, offset: int, size: int) -> bytes:
        if name.endswith(".log"):
            tail_reads.append(size)
        return read_at(name, offset, size)

    monkeypatch.setattr(storage.disk, "read", read_spy)
    monkeypatch.setattr(storage.disk, "read_at", read_at_spy)
    expected: dict[int, bytes] = {}
    for i in range(300):
        clock.advance(1)
        page_no, data = i % 13, bytes([i % 251]) * (100 + i % 50)
        with volume.transaction() as tx:
            tx.write(page_no, i % 7, data)
        image = bytearray(expected.get(page_no, bytes(PAGE)))
        image[i % 7 : i % 7 + len(data)] = data
        expected[page_no] = bytes(image)
    segment_0 = storage.segments[0]
    assert segment_0.checkpoint_lsn and segment_0.log_ordered
    assert tail_reads and not whole_reads
    # What the log file holds is exactly the frames above the checkpoint, in order.
    assert storage.disk.size(node_storage.log_name(0)) == segment_0.log_bytes
    for page_no, image in expected.items():
        assert volume.read_page(page_no) == image
    volume.close()
    again = Volume.open(path, clock=clock)
    for page_no, image in expected.items():
        assert again.read_page(page_no) == image
    again.close()
