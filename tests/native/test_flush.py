"""The shared flush (csrc/flush.c, flush.py): per-file outcomes, misuse, both backends.

Durability itself cannot be observed without pulling the power; what can be
is that every file is tried, that each error lands on the file it belongs to
(and the shared device flush's error on every file it covered), and that
the C flusher and the Python flush agree on every combination.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aurora_storage import native
from aurora_storage.errors import InvalidArgumentError
from aurora_storage.native.flush import METHODS, Flusher, python_flush

BAD = 1_000_000  # far above any descriptor this process has open


@pytest.fixture
def files(tmp_path: Path) -> Iterator[list[int]]:
    handles = []
    for i in range(4):
        handle = os.open(tmp_path / f"f{i}", os.O_RDWR | os.O_CREAT, 0o644)
        os.write(handle, bytes([i]) * 10_000)
        handles.append(handle)
    yield handles
    for handle in handles:
        os.close(handle)


@pytest.fixture(params=native.BACKEND_NAMES)
def flusher(request: pytest.FixtureRequest) -> Iterator[Flusher]:
    made = Flusher("writeback", request.param)
    yield made
    made.close()


@pytest.mark.parametrize("method", METHODS)
def test_every_file_flushed_without_error_keeps_its_data(
    flusher: Flusher, files: list[int], method: str, tmp_path: Path
) -> None:
    flusher.method = method
    assert flusher.run(files, [False, True, False, False]) == [0, 0, 0, 0]
    for _ in range(3):  # the thread is reused
        assert flusher.run(files[:2], [False, False]) == [0, 0]
    for i in range(4):
        assert (tmp_path / f"f{i}").read_bytes() == bytes([i]) * 10_000


def test_each_file_gets_its_own_error(flusher: Flusher, files: list[int]) -> None:
    flusher.method = "each"
    assert flusher.run([files[0], BAD, files[1]], [False, False, True]) == [0, errno.EBADF, 0]


def test_syncfs_flushes_the_first_files_file_system_for_all(
    flusher: Flusher, files: list[int]
) -> None:
    flusher.method = "syncfs"
    assert flusher.run([BAD, files[0]], [False, False]) == [errno.EBADF] * 2
    assert flusher.run([files[0], files[1]], [False, True]) == [0, 0]


def test_writeback_blames_the_file_or_the_shared_flush(flusher: Flusher, files: list[int]) -> None:
    a, b, c, _ = files
    # A whole file, or a data-only one whose write-back failed: that file alone.
    assert flusher.run([a, BAD, b], [False, True, False]) == [0, errno.EBADF, 0]
    assert flusher.run([BAD, a, b], [False, False, False]) == [errno.EBADF, 0, 0]
    # The last data-only file's fdatasync is the device flush every data-only file
    # relied on: its failure is theirs, not the whole files' (fdatasynced alone).
    assert flusher.run([a, c, b, BAD], [False, True, False, False]) == [
        errno.EBADF,
        0,
        errno.EBADF,
        errno.EBADF,
    ]


@settings(max_examples=60, deadline=None)
@given(
    method=st.sampled_from(METHODS),
    plan=st.lists(st.tuples(st.booleans(), st.booleans()), min_size=1, max_size=9),
)
def test_c_flusher_and_python_flush_agree(
    method: str, plan: list[tuple[bool, bool]], tmp_path_factory: pytest.TempPathFactory
) -> None:
    folder = tmp_path_factory.mktemp("agree")
    handles = [os.open(folder / f"f{i}", os.O_RDWR | os.O_CREAT, 0o644) for i in range(len(plan))]
    try:
        for handle in handles:
            os.write(handle, b"data")
        fds = [
            handle if good else BAD + i
            for i, (handle, (good, _)) in enumerate(zip(handles, plan, strict=True))
        ]
        whole = [mark for _, mark in plan]
        flusher = Flusher(method, "native")
        try:
            assert flusher.run(fds, whole) == python_flush(fds, whole, method)
        finally:
            flusher.close()
    finally:
        for handle in handles:
            os.close(handle)


def test_a_primed_flusher_flushes_as_an_unprimed_one(flusher: Flusher, files: list[int]) -> None:
    for _ in range(3):
        flusher.prime()  # the thread wakes and polls for the flush
        assert flusher.run(files, [False, True, False, False]) == [0] * 4
    flusher.start(files, [False] * 4)
    flusher.prime()  # a flush in flight: nothing to prime
    assert flusher.wait() == [0] * 4
    assert flusher.run([files[0], BAD], [False, False]) == [errno.EBADF] * 2


def test_kicked_files_flush_as_others(flusher: Flusher, files: list[int]) -> None:
    """A kick starts a file's write-back early; the flush's outcome is unchanged."""
    for _ in range(3):
        for handle in files:
            os.pwrite(handle, b"more", 10_000)
            flusher.kick(handle)
        flusher.kick(BAD)  # a hint about a closed file is harmless
        assert flusher.run(files, [False, False, True, False]) == [0] * 4
    flusher.start(files[:2], [False, False])
    flusher.kick(files[2])  # during a flush: taken up after it
    assert flusher.wait() == [0, 0]
    assert flusher.run(files[2:], [False, False]) == [0, 0]


def test_kicks_while_the_thread_writes_back(tmp_path: Path) -> None:
    """Many distinct files kicked at once: the callers' array grows while the thread
    reads the other one (run_asan.sh catches a use after free here)."""
    handles = [os.open(tmp_path / f"k{i}", os.O_RDWR | os.O_CREAT, 0o644) for i in range(64)]
    try:
        for round_number in range(150):
            flusher = Flusher("writeback", "native")
            for handle in handles:
                os.pwrite(handle, b"k" * 512, round_number * 512)
                flusher.kick(handle)
            assert flusher.run(handles[:2], [False, False]) == [0, 0]
            flusher.close()
    finally:
        for handle in handles:
            os.close(handle)


@pytest.mark.parametrize("backend", native.BACKEND_NAMES)
def test_without_polling_the_thread_sleeps_between_flushes(files: list[int], backend: str) -> None:
    flusher = Flusher("writeback", backend, poll_us=0)
    for _ in range(3):
        flusher.prime()  # nothing to do: it would not poll
        flusher.kick(files[0])
        assert flusher.run(files, [False, True, False, False]) == [0] * 4
    flusher.close()
    with pytest.raises(InvalidArgumentError, match="poll time"):
        Flusher("writeback", backend, poll_us=-1)


def test_misuse_is_refused(flusher: Flusher, files: list[int]) -> None:
    with pytest.raises(InvalidArgumentError, match="no flush in flight"):
        flusher.wait()
    with pytest.raises(InvalidArgumentError):
        flusher.start([], [])
    with pytest.raises(InvalidArgumentError):
        flusher.start(files, [False])
    flusher.start(files, [False] * 4)
    with pytest.raises(InvalidArgumentError, match="already in flight"):
        flusher.start(files, [False] * 4)
    assert flusher.wait() == [0] * 4
    with pytest.raises(InvalidArgumentError):
        Flusher("fsync-please")
    with pytest.raises(InvalidArgumentError):
        python_flush(files, [False] * 4, "fsync-please")


def test_closing_waits_for_a_flush_in_flight(files: list[int]) -> None:
    flusher = Flusher("writeback", "native")
    flusher.start(files, [False] * 4)
    flusher.close()  # joins the thread once the flush is done; ASan checks the memory
    assert flusher.run(files, [True] * 4) == [0] * 4  # then the Python flush serves


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_flushes_on_its_own_thread(files: list[int]) -> None:
    """Threads do not survive fork: the child's start falls back to the Python flush."""
    flusher = Flusher("writeback", "native")
    assert flusher.run(files, [False] * 4) == [0] * 4  # the parent's thread exists now
    child = os.fork()
    if child == 0:  # pragma: no cover - the child reports through its exit status
        try:
            flusher.prime()  # no thread here: nothing to wake
            flusher.kick(files[0])
            ok = flusher.run(files, [False, True, False, False]) == [0] * 4
            ok = ok and flusher.run([BAD], [True]) == [errno.EBADF]
        except BaseException:
            ok = False
        os._exit(0 if ok else 1)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert flusher.run(files, [False] * 4) == [0] * 4
    flusher.close()
