"""Preallocated log files on a real disk: zeros ahead of the data, trimmed at close.

In "fsync" mode a RealDisk grows appended files in zero-filled chunks (disk.py)
so that the flush after an append writes data only. What must hold: reads
return exactly the appended bytes, the zeros never end up between frames,
close leaves files holding their data alone, and a node reloading a log that
a crash left with a zero tail treats the tail as free space: no torn tail
reported, no damage, every frame kept, and appends resuming right after them.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aurora_storage import Volume
from aurora_storage.protocol.node_storage import log_name
from aurora_storage.runtime import disk
from aurora_storage.runtime.disk import PREALLOCATE_BYTES_MIN, RealDisk

PAGE = 4096


def small(path: Path) -> Volume:
    return Volume.create(path, page_size=PAGE, segment_size=PAGE * 8, capacity=PAGE * 256)


def fill(volume: Volume, commits: int, start: int = 0) -> dict[int, bytes]:
    expected = {}
    for i in range(start, start + commits):
        page_no = (i * 5) % 16  # PGs 0 and 1
        data = f"commit {i:05d} ".encode() * 40
        with volume.transaction() as tx:
            tx.write(page_no, 0, data)
        expected[page_no] = data
    return expected


def test_appends_read_back_exactly_and_close_trims(tmp_path: Path) -> None:
    store = RealDisk(tmp_path, "fsync")
    rng = random.Random(7)
    chunks = [rng.randbytes(rng.randrange(1, 20_000)) for _ in range(200)]
    for chunk in chunks:
        assert store.append("log", chunk) == len(chunk)
    data = b"".join(chunks)
    assert store.read("log") == data
    assert store.size("log") == len(data)
    assert (tmp_path / "log").stat().st_size > len(data), "zeros are preallocated ahead"
    store.close()
    assert (tmp_path / "log").read_bytes() == data, "close trims the zeros"


def test_close_trims_zeros_a_growth_left_behind_unrecorded(tmp_path: Path) -> None:
    """Zeros past the data that the disk never recorded (a background growth that
    wrote some, then failed) are cut at close all the same: a reopened file must
    append right after its data, never after a stretch of zeros. (In "os" mode
    nothing is preallocated, so only the file's own size can tell.)"""
    store = RealDisk(tmp_path, "os")
    store.append("log", b"x" * 1000)
    end = (tmp_path / "log").stat().st_size
    descriptor = os.open(tmp_path / "log", os.O_WRONLY)
    try:
        os.pwrite(descriptor, bytes(8192), end)  # as a growth that died half way would
    finally:
        os.close(descriptor)
    store.close()
    assert (tmp_path / "log").read_bytes() == b"x" * 1000


def test_reopened_file_appends_after_its_data(tmp_path: Path) -> None:
    store = RealDisk(tmp_path, "fsync")
    store.append("log", b"a" * 1000)
    store.close()
    again = RealDisk(tmp_path, "fsync")
    again.append("log", b"b" * 70_000)
    assert again.read("log") == b"a" * 1000 + b"b" * 70_000
    again.close()
    assert (tmp_path / "log").read_bytes() == b"a" * 1000 + b"b" * 70_000


def test_os_mode_never_preallocates(tmp_path: Path) -> None:
    store = RealDisk(tmp_path, "os")
    store.append("log", b"x" * 100)
    assert (tmp_path / "log").stat().st_size == 100
    store.close()


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    sizes=st.lists(st.integers(1, 3 * PREALLOCATE_BYTES_MIN), min_size=1, max_size=30),
    operations=st.lists(st.sampled_from(["none", "truncate", "replace", "reopen"]), max_size=30),
)
def test_any_sequence_of_appends_and_rewrites_reads_back(
    tmp_path_factory: pytest.TempPathFactory, sizes: list[int], operations: list[str]
) -> None:
    """Appends interleaved with truncation, atomic replacement and reopening, against a model."""
    root = tmp_path_factory.mktemp("d")
    store = RealDisk(root, "fsync")
    model = b""
    for index, size in enumerate(sizes):
        chunk = bytes([index % 251 + 1]) * size
        store.append("log", chunk)
        model += chunk
        operation = operations[index] if index < len(operations) else "none"
        if operation == "truncate":
            model = model[: len(model) // 2]
            store.truncate("log", len(model))
        elif operation == "replace":
            model = model[-100:]
            store.replace("log", model)
        elif operation == "reopen":
            store.close()
            store = RealDisk(root, "fsync")
        assert store.read("log") == model
    store.close()
    assert (root / "log").read_bytes() == model


def test_growth_runs_in_the_background(tmp_path: Path) -> None:
    """Once half of a chunk is used, the next one is written before appends need it."""
    store = RealDisk(tmp_path, "fsync")
    store.append("log", b"x" * (PREALLOCATE_BYTES_MIN // 2 + 1))
    pending = store._extending.get("log")
    assert pending is not None, "a growth is under way"
    assert pending.result() == 2 * PREALLOCATE_BYTES_MIN
    assert (tmp_path / "log").stat().st_size == 2 * PREALLOCATE_BYTES_MIN
    store.append("log", b"y" * 100)
    assert store.read("log") == b"x" * (PREALLOCATE_BYTES_MIN // 2 + 1) + b"y" * 100
    store.close()


def test_a_failed_background_growth_fails_the_append(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = RealDisk(tmp_path, "fsync")

    def no_space(handle: int, start: int, target: int, sync: bool) -> int:
        raise OSError(28, "No space left on device")

    store.append("log", b"x" * 10)
    monkeypatch.setattr(disk, "_write_zeros", no_space)
    try:
        store.append("log", b"y" * (PREALLOCATE_BYTES_MIN - 10))  # fills the chunk: grows
        with pytest.raises(OSError) as caught:
            store.append("log", b"z" * 10)  # needs the failed growth
        assert caught.value.errno == 28
    finally:
        monkeypatch.undo()
    store.close()


def test_crash_leaves_zero_tails_that_reload_cleanly(tmp_path: Path) -> None:
    volume = small(tmp_path / "v")
    expected = fill(volume, 80)
    log_file = tmp_path / "v" / "nodes" / "az1-a" / log_name(0)
    volume.simulate_crash()
    data = log_file.read_bytes()
    assert data.endswith(bytes(1024)), "the crash left preallocated zeros"
    reopened = Volume.open(tmp_path / "v")
    for name, node in reopened.nodes.items():
        report = node.load_report
        assert report.torn_tails_cut == 0 and report.damaged_ranges == 0, name
        assert not any(segment.suspect for segment in node.segments.values()), name
    for page_no, value in expected.items():
        assert reopened.read_page(page_no)[: len(value)] == value
    expected.update(fill(reopened, 30, start=1000))  # appends land right after the frames
    reopened.close()
    again = Volume.open(tmp_path / "v")
    for name, node in again.nodes.items():
        assert node.load_report.torn_tails_cut == 0, name
        assert node.load_report.damaged_ranges == 0, name
    for page_no, value in expected.items():
        assert again.read_page(page_no)[: len(value)] == value
    again.close()
    assert not log_file.read_bytes().endswith(bytes(64)), "close trimmed the zeros"


def test_torn_frame_before_the_zeros_is_cut(tmp_path: Path) -> None:
    volume = small(tmp_path / "v")
    expected = fill(volume, 40)
    log_file = tmp_path / "v" / "nodes" / "az2-b" / log_name(0)
    volume.simulate_crash()
    data = bytearray(log_file.read_bytes())
    end = len(data.rstrip(b"\0"))
    torn = bytearray(b"AUFR") + bytearray(os.urandom(300))  # a frame's first bytes
    data[end : end + len(torn)] = torn
    log_file.write_bytes(bytes(data))
    reopened = Volume.open(tmp_path / "v")
    report = reopened.nodes["az2-b"].load_report
    assert report.torn_tails_cut == 1 and report.damaged_ranges == 0
    assert log_file.stat().st_size == end, "cut at the end of the last whole frame"
    for page_no, value in expected.items():
        assert reopened.read_page(page_no)[: len(value)] == value
    reopened.close()


def test_short_writes_are_completed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """write(2) may write less than asked (a signal, a nearly full disk): every writer
    of the disk layer finishes the job, appends, preallocation and atomic replaces."""
    real_write, real_pwrite = os.write, os.pwrite

    def short_write(descriptor: int, data: Any) -> int:
        return real_write(descriptor, memoryview(data)[:1000])

    def short_pwrite(descriptor: int, data: Any, offset: int) -> int:
        return real_pwrite(descriptor, memoryview(data)[:1000], offset)

    monkeypatch.setattr(os, "write", short_write)
    monkeypatch.setattr(os, "pwrite", short_pwrite)
    store = RealDisk(tmp_path, "fsync")
    chunks = [bytes([n]) * 7000 for n in range(1, 30)]
    for chunk in chunks:
        store.append("log", chunk)
    store.replace("meta", b"m" * 5000)
    monkeypatch.undo()
    assert store.read("log") == b"".join(chunks)
    assert store.read("meta") == b"m" * 5000
    store.close()
    assert (tmp_path / "log").read_bytes() == b"".join(chunks)


@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    data_bytes=st.integers(0, 3 * disk.ZERO_WRITE_BYTES),
    grow_bytes=st.integers(1, 5 * disk.ZERO_WRITE_BYTES),
)
def test_zeros_go_out_in_small_writes_and_leave_the_data(
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
    data_bytes: int,
    grow_bytes: int,
) -> None:
    """A growth fills exactly its range with zeros, never in a write larger than
    ZERO_WRITE_BYTES: each write holds the file's inode lock, which an append to
    the same file waits for (one 4 MiB write stalled commits for ~14 ms)."""
    path = tmp_path_factory.mktemp("z") / "log"
    data = bytes(range(1, 256)) * (data_bytes // 255 + 1)
    path.write_bytes(data[:data_bytes])
    writes: list[int] = []
    real_pwrite = os.pwrite

    def spying_pwrite(descriptor: int, buffer: Any, offset: int) -> int:
        writes.append(len(buffer))
        return real_pwrite(descriptor, buffer, offset)

    monkeypatch.setattr(disk.os, "pwrite", spying_pwrite)
    descriptor = os.open(path, os.O_WRONLY)
    try:
        end = disk._write_zeros(descriptor, data_bytes, data_bytes + grow_bytes, True)
    finally:
        os.close(descriptor)
        monkeypatch.undo()
    assert end == data_bytes + grow_bytes
    assert sum(writes) == grow_bytes
    assert max(writes) <= disk.ZERO_WRITE_BYTES
    assert path.read_bytes() == data[:data_bytes] + bytes(grow_bytes)
