"""Several threads committing at once through the public API.

Every acknowledged commit must be visible and read back, LSNs must be
unique. (The fsyncs they share, group commit, are measured by
benchmarks/bench_durability.py.)
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from aurora_storage import Volume

THREADS = 8
COMMITS_PER_THREAD = 40
PAGE = 4096


@pytest.mark.parametrize("durability", ["memory", "fsync"])
def test_eight_committers(tmp_path: Path, durability: str) -> None:
    path = None if durability == "memory" else tmp_path / "v"
    volume = Volume.create(
        path, page_size=PAGE, segment_size=PAGE * 16, capacity=PAGE * 1024, durability=durability
    )
    lsns: list[int] = []
    errors: list[BaseException] = []

    def committer(number: int) -> None:
        try:
            for i in range(COMMITS_PER_THREAD):
                page_no = number * COMMITS_PER_THREAD + i
                with volume.transaction() as tx:
                    tx.write(page_no, 0, f"thread {number} commit {i}".encode())
                    tx.write(page_no, 100, b"second record")
                lsns.append(tx.lsn)
        except BaseException as error:  # reported below, with the thread's number
            errors.append(error)

    threads = [threading.Thread(target=committer, args=(n,)) for n in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    total = THREADS * COMMITS_PER_THREAD
    assert len(set(lsns)) == total, "every commit got its own LSNs"
    assert volume.vdl == 2 * total
    for number in range(THREADS):
        for i in range(COMMITS_PER_THREAD):
            image = volume.read_page(number * COMMITS_PER_THREAD + i)
            text = f"thread {number} commit {i}".encode()
            assert image[: len(text)] == text
            assert image[100:113] == b"second record"
    volume.close()


def test_two_volumes_committing_from_their_own_threads(tmp_path: Path) -> None:
    """Volumes share process-wide state (the verified-frame cache, the chunk
    pool): two of them, each with its own lock, committing at once stay apart."""
    volumes = [
        Volume.create(tmp_path / name, page_size=PAGE, segment_size=PAGE * 16, capacity=PAGE * 1024)
        for name in ("one", "two")
    ]
    errors: list[BaseException] = []

    def committer(number: int) -> None:
        try:
            for i in range(COMMITS_PER_THREAD * 2):
                with volumes[number].transaction() as tx:
                    tx.write(i, 0, f"volume {number} commit {i}".encode())
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=committer, args=(n,)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    for number, volume in enumerate(volumes):
        for i in range(COMMITS_PER_THREAD * 2):
            text = f"volume {number} commit {i}".encode()
            assert volume.read_page(i)[: len(text)] == text
        volume.close()
