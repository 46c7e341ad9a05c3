"""The page log's arena (csrc/pagelog.c) and the pool of touched chunks it draws
on (csrc/chunks.c).

A page log takes its record batches from malloc until it holds one chunk's
worth, then from an arena of chunks cut into size classes, and back from
malloc for a page whose batch outgrows the largest class. The model test of
large logs, through all three, is in tests/unit/test_pagelog.py. The pool
tests check what the flusher's idle time is for: chunks touched ahead of
need, taken by page logs, given back when a log is freed.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from aurora_storage.format import frames as log
from aurora_storage.native import get_backend
from aurora_storage.native.flush import Flusher
from aurora_storage.native.pagelog import NativePageLog

PAGE_SIZE = 4096
core = get_backend("native")
ffi, lib = core.ffi, core.lib  # type: ignore[attr-defined]
CHUNK = lib.AUS_CHUNK_BYTES
READY_MAX = lib.AUS_CHUNKS_READY_MAX
LARGEST_BLOCK = 64 * 1024  # ARENA_CLASSES in pagelog.c: 256 B << 8


def batch_of(records: list[tuple[int, int, int, int, bytes]]) -> bytes:
    builder = log.BatchBuilder()
    for lsn, page_no, kind, offset, payload in records:
        builder.add(lsn, 0, page_no, kind, payload, offset)
    return bytes(builder.buffer)


def test_a_page_outgrowing_the_largest_block_keeps_its_records() -> None:
    """One page's batch grows through every class and past the largest into malloc."""
    page_log = NativePageLog(PAGE_SIZE)
    lsn = 0
    filler = [(lsn := lsn + 1, 1000 + i, log.KIND_WRITE, 0, bytes(1000)) for i in range(300)]
    page_log.append(batch_of(filler))  # the log holds over a chunk: the arena is on
    expected = bytearray(PAGE_SIZE)
    rounds = 2 * LARGEST_BLOCK // 400  # 448 bytes a record: past the largest block
    for round_number in range(rounds):
        offset = (round_number * 100) % (PAGE_SIZE - 400)
        payload = bytes([round_number % 251]) * 400
        page_log.append(batch_of([(lsn := lsn + 1, 7, log.KIND_WRITE, offset, payload)]))
        expected[offset : offset + 400] = payload
        if round_number % 97 == 0:
            assert bytes(page_log.materialize(7)[0]) == bytes(expected)
    assert bytes(page_log.materialize(7)[0]) == bytes(expected)
    assert page_log.stats().records == 300 + rounds
    page_log.close()


@pytest.fixture
def empty_pool() -> Iterator[list[object]]:
    """Takes every ready chunk out of the pool for the test, and gives them back."""
    held = []
    while lib.aus_chunks_ready():
        held.append(lib.aus_chunk_take())
    yield held
    for chunk in held:
        lib.aus_chunk_give(chunk)


def test_fill_steps_fill_the_pool_and_logs_take_from_it(empty_pool: list[object]) -> None:
    steps = 0
    while lib.aus_chunks_fill_step():
        steps += 1
        assert steps <= READY_MAX * CHUNK // lib.AUS_CHUNK_STEP_BYTES, "filling never ends"
    assert lib.aus_chunks_ready() == READY_MAX
    assert steps > 0  # (a chunk left partly touched earlier may need fewer steps)

    page_log = NativePageLog(PAGE_SIZE)
    records = [(i + 1, i, log.KIND_WRITE, 0, bytes(200)) for i in range(4 * CHUNK // 256)]
    page_log.append(batch_of(records))
    taken = READY_MAX - lib.aus_chunks_ready()
    assert taken >= 2, "the arena's chunks came from the pool"
    page_log.close()
    assert lib.aus_chunks_ready() == READY_MAX, "a freed log gives its chunks back"


def test_the_flusher_fills_the_pool_while_it_polls(empty_pool: list[object]) -> None:
    assert lib.aus_chunks_ready() == 0
    flusher = Flusher("each", poll_us=500_000)
    try:
        flusher.prime()  # the thread wakes and polls, filling the pool meanwhile
        deadline = time.monotonic() + 30
        while lib.aus_chunks_ready() < READY_MAX and time.monotonic() < deadline:
            flusher.prime()
            time.sleep(0.01)
        assert lib.aus_chunks_ready() == READY_MAX
    finally:
        flusher.close()


def test_a_flusher_that_never_polls_never_fills(empty_pool: list[object]) -> None:
    flusher = Flusher("each", poll_us=0)
    try:
        flusher.prime()
        time.sleep(0.05)
        assert lib.aus_chunks_ready() == 0
    finally:
        flusher.close()
