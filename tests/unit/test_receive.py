"""Segments verifying what they receive: one check per frame object, never a skipped one.

The writer hands the same immutable frame object to all six replicas of a PG
(receive.decode_received verifies it once); a damaged copy, another PG's
segment, a mutable buffer or a frame that failed must each be checked again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from aurora_storage.config import Geometry
from aurora_storage.errors import CorruptFrameError
from aurora_storage.format import frames as log
from aurora_storage.protocol import receive
from aurora_storage.protocol.segment import Segment

PAGE = 4096
GEOMETRY = Geometry(page_size=PAGE, pages_per_pg=8, page_count=64)


def frame_for(pg_id: int, page_no: int, lsn: int = 1) -> bytes:
    body = log.pack_record(lsn, 0, page_no, log.KIND_WRITE, b"hello", 0)
    return log.encode_frame(pg_id, 1, 0, lsn, lsn, 1, body)


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """The objects log.decode_frame really verified (the real function, counted)."""
    seen: list[object] = []
    real: Callable[..., Any] = log.decode_frame

    def counted(data: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append(data)
        return real(data, *args, **kwargs)

    monkeypatch.setattr(receive, "decode_frame", counted)
    return seen


def replicas(pg_id: int = 0) -> list[Segment]:
    return [Segment(pg_id, GEOMETRY) for _ in range(6)]


def test_six_replicas_verify_one_frame_object_once(decodes: list[object]) -> None:
    frame = frame_for(0, 3)
    segments = replicas()
    for segment in segments:
        segment.receive((frame,))
        assert segment.persist() == 1
    assert decodes == [frame]
    assert all(segment.counters.frames_corrupt == 0 for segment in segments)


def test_a_damaged_copy_is_checked_and_refused_by_every_replica(decodes: list[object]) -> None:
    good = frame_for(0, 3)
    damaged = bytearray(good)
    damaged[-3] ^= 0x01
    garbled = bytes(damaged)
    segments = replicas()
    for segment in segments:
        segment.receive((good,))
        segment.receive((garbled,))
    assert decodes.count(garbled) == 6, "a frame that failed is never remembered"
    assert all(segment.counters.frames_corrupt == 1 for segment in segments)
    assert all(segment.persist() == 1 for segment in segments)


def test_another_pg_checks_the_same_object_again(decodes: list[object]) -> None:
    frame = frame_for(0, 3)
    own, other = Segment(0, GEOMETRY), Segment(1, GEOMETRY)
    own.receive((frame,))
    other.receive((frame,))  # pages 8..15: page 3 is out of its range
    assert decodes == [frame, frame]
    assert own.counters.frames_corrupt == 0 and other.counters.frames_corrupt == 1


def test_mutable_buffers_are_checked_every_time(decodes: list[object]) -> None:
    buffer = bytearray(frame_for(0, 3))
    first = receive.decode_received(buffer, PAGE, 0, 8)  # type: ignore[arg-type]
    buffer[-3] ^= 0x01  # changed in place after its first check
    with pytest.raises(CorruptFrameError):
        receive.decode_received(buffer, PAGE, 0, 8)  # type: ignore[arg-type]
    assert first.last_lsn == 1 and len(decodes) == 2


def test_six_replicas_verify_each_frame_of_a_batched_message_once(
    decodes: list[object],
) -> None:
    """A message carrying several frames (commits held back while a flush ran)
    still costs one check per frame object, not one per frame and replica."""
    frames = tuple(
        log.encode_frame(
            0, 1, lsn - 1, lsn, lsn, 1, log.pack_record(lsn, lsn - 1, 3, log.KIND_WRITE, b"x", 0)
        )
        for lsn in range(1, 9)
    )
    segments = replicas()
    for segment in segments:
        segment.receive(frames)
        assert segment.persist() == 8
    assert decodes == list(frames)


def test_the_cache_forgets_the_oldest_frames_and_checks_them_again(
    decodes: list[object],
) -> None:
    frames = [frame_for(0, 3, lsn) for lsn in range(1, receive.RECEIVED_CACHE_MAX + 2)]
    for frame in frames:
        receive.decode_received(frame, PAGE, 0, 8)
    receive.decode_received(frames[-1], PAGE, 0, 8)  # still remembered
    receive.decode_received(frames[0], PAGE, 0, 8)  # pushed out: checked again
    assert decodes == [*frames, frames[0]]


def test_the_cache_holds_a_bounded_number_of_bytes(
    decodes: list[object], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Large frames are pushed out by size, not only by count (the newest stays)."""
    monkeypatch.setattr(receive, "RECEIVED_CACHE_BYTES", 3 * len(frame_for(0, 3)))
    frames = [frame_for(0, 3, lsn) for lsn in range(1, 6)]
    for frame in frames:
        receive.decode_received(frame, PAGE, 0, 8)
    assert (
        sum(len(entry[0]) for entry in receive._received.values()) <= receive.RECEIVED_CACHE_BYTES
    )
    receive.decode_received(frames[-1], PAGE, 0, 8)  # the newest: remembered
    receive.decode_received(frames[0], PAGE, 0, 8)  # pushed out by size: checked again
    assert decodes == [*frames, frames[0]]
