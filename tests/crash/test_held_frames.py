"""Frames held back while a flush runs, and sent together before the next one.

With one flush shared by the six nodes, a commit that arrives while a flush is
in flight cannot be made durable by it: the writer holds its frames, and the
thread that leads the next flush first sends every held frame, one message per
PG to each segment, and each segment appends them in one write. These tests
hold a flush open (its wait waits for a gate; the flush itself is real), commit
from other threads meanwhile, and check the batching, the outcome and what a
reopened volume reads.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from aurora_storage import Volume
from aurora_storage.errors import WriteQuorumError
from aurora_storage.format import frames as log
from aurora_storage.protocol import messages as m
from aurora_storage.protocol.node import StorageNode

PAGE = 4096
SEGMENT = PAGE * 16


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.001)


def test_commits_during_a_flush_reach_each_segment_in_one_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    messages: list[tuple[str, int]] = []
    real_handle = StorageNode.handle

    def recording_handle(node: StorageNode, message: m.Message, sender: str) -> Any:
        if isinstance(message, m.WriteFrames):
            messages.append((node.name, len(message.frames)))
        return real_handle(node, message, sender)

    monkeypatch.setattr(StorageNode, "handle", recording_handle)  # before nodes register
    volume = Volume.create(tmp_path / "v", page_size=PAGE, segment_size=SEGMENT)
    flusher = volume._flusher
    assert flusher is not None, "the embedded default shares one flush"
    gate = threading.Event()
    real_wait = flusher.wait

    def gated_wait() -> list[int]:
        gate.wait(30)
        return real_wait()

    flusher.wait = gated_wait  # type: ignore[method-assign]
    errors: list[BaseException] = []

    def commit(page_no: int, text: bytes) -> None:
        try:
            with volume.transaction() as tx:
                tx.write(page_no, 0, text)
        except BaseException as error:
            errors.append(error)

    try:
        first = threading.Thread(target=commit, args=(1, b"first"))
        first.start()
        wait_for(volume.transport.flush_in_flight, "the first flush")
        later = [
            threading.Thread(target=commit, args=(page_no, b"later %d" % page_no))
            for page_no in (2, 3, 20)  # PG 0 twice, PG 1 once
        ]
        for thread in later:
            thread.start()
        wait_for(lambda: len(volume._held_frames) == 3, "three held frames")
        assert len(messages) == 6, "held frames are not sent while the flush runs"
        gate.set()
        for thread in [first, *later]:
            thread.join(30)
    finally:
        gate.set()
        flusher.wait = real_wait  # type: ignore[method-assign]
    assert not errors, errors
    assert not volume._held_frames
    # Each segment got the first commit alone, then PG 0's two frames in one message.
    per_node: dict[str, list[int]] = {}
    for name, count in messages:
        per_node.setdefault(name, []).append(count)
    assert all(sorted(counts) == [1, 1, 2] for counts in per_node.values()), per_node
    assert len(per_node) == 6
    expected = {1: b"first", 2: b"later 2", 3: b"later 3", 20: b"later 20"}
    for page_no, text in expected.items():
        assert volume.read_page(page_no)[: len(text)] == text
    volume.close()
    again = Volume.open(tmp_path / "v")
    for page_no, text in expected.items():
        assert again.read_page(page_no)[: len(text)] == text
    again.close()


def test_frames_held_by_a_commit_that_timed_out_are_still_sent_and_flushed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A commit whose wait times out while its frames are held raises
    WriteQuorumError; the frames are never dropped, nor overtaken: the next
    commit sends them ahead of its own, in LSN order, so no segment sees a hole
    (which would cost a gossip round), and close flushes them too."""
    received: list[tuple[str, int]] = []
    real_handle = StorageNode.handle

    def recording_handle(node: StorageNode, message: m.Message, sender: str) -> Any:
        if isinstance(message, m.WriteFrames):
            received.extend(
                (node.name, log.decode_frame(frame, PAGE, 0, 16).first_lsn)
                for frame in message.frames
            )
        return real_handle(node, message, sender)

    monkeypatch.setattr(StorageNode, "handle", recording_handle)  # before nodes register
    volume = Volume.create(tmp_path / "v", page_size=PAGE, segment_size=SEGMENT, commit_timeout=0.2)
    flusher = volume._flusher
    assert flusher is not None
    gate = threading.Event()
    real_wait = flusher.wait

    def gated_wait() -> list[int]:
        gate.wait(30)
        return real_wait()

    outcomes: dict[int, BaseException | None] = {}

    def commit(page_no: int) -> None:
        try:
            with volume.transaction() as tx:
                tx.write(page_no, 0, b"row %d" % page_no)
            outcomes[page_no] = None
        except BaseException as error:
            outcomes[page_no] = error

    flusher.wait = gated_wait  # type: ignore[method-assign]
    try:
        leader = threading.Thread(target=commit, args=(1,))
        leader.start()
        wait_for(volume.transport.flush_in_flight, "the first flush")
        late = threading.Thread(target=commit, args=(2,))
        late.start()
        late.join(30)
        assert isinstance(outcomes[2], WriteQuorumError)
        assert len(volume._held_frames) == 1
        gate.set()
        leader.join(30)
    finally:
        gate.set()
        flusher.wait = real_wait  # type: ignore[method-assign]
    assert outcomes[1] is None
    assert len(volume._held_frames) == 1, "nothing led a flush since"
    commit(3)
    assert outcomes[3] is None
    assert not volume._held_frames
    for name in {name for name, _ in received}:
        lsns = [lsn for node, lsn in received if node == name]
        assert lsns == sorted(lsns) == [1, 2, 3], (name, lsns)
    with volume.transaction() as tx:
        tx.write(4, 0, b"row 4")
    volume.close()
    again = Volume.open(tmp_path / "v")
    for page_no in (1, 2, 3, 4):
        assert again.read_page(page_no)[:5] == b"row %d" % page_no
    again.close()
