"""Backtrack: in place, back and forth inside the window, on a simulated clock.

A model keeps the page images visible at every moment: each commit and each
backtrack appends (time, pages). After random commits, clock jumps and
backtracks, every page must equal the model at the current moment, and a
backtrack to time T must show the model at T.
"""

from __future__ import annotations

import random

import pytest

from aurora_storage import SimulatedClock, Volume, sim
from aurora_storage.config import NODE_NAMES
from aurora_storage.errors import BacktrackDisabledError, TimeOutsideWindowError
from aurora_storage.protocol import segment
from aurora_storage.runtime.disk import SimulatedDisk
from aurora_storage.runtime.transport import DirectTransport

PAGE = 4096
PAGES = 24
WINDOW = 3600.0
START = 1_700_000_000.0


class TimelineModel(sim.TimelineModel):
    def __init__(self) -> None:
        super().__init__(START, PAGE)


def volume_with(clock: SimulatedClock, **options: object) -> Volume:
    return Volume.create(
        page_size=PAGE,
        segment_size=PAGE * 4,
        capacity=PAGE * PAGES,
        clock=clock,
        backtrack_window=WINDOW,
        **options,  # type: ignore[arg-type]
    )


def check(volume: Volume, expected: dict[int, bytes]) -> None:
    for page_no in range(PAGES):
        assert volume.read_page(page_no) == expected.get(page_no, bytes(PAGE)), page_no


def random_changes(rng: random.Random) -> list[tuple[int, int, bytes]]:
    changes = []
    for _ in range(rng.randint(1, 4)):
        data = rng.randbytes(rng.randint(1, 32))
        changes.append((rng.randrange(PAGES), rng.randrange(PAGE - len(data)), data))
    return changes


def commit(volume: Volume, model: TimelineModel, changes: list[tuple[int, int, bytes]]) -> None:
    with volume.transaction() as tx:
        for page_no, offset, data in changes:
            tx.write(page_no, offset, data)
    model.commit(volume.clock.now(), changes)


@pytest.mark.parametrize("seed", range(25))
def test_random_commits_and_backtracks_match_the_model(seed: int) -> None:
    rng = random.Random(seed)
    clock = SimulatedClock(START)
    volume = volume_with(clock)
    model = TimelineModel()
    for _ in range(60):
        roll = rng.random()
        if roll < 0.55:
            clock.advance(rng.uniform(1, 120))
            commit(volume, model, random_changes(rng))
        elif roll < 0.8:
            clock.advance(rng.uniform(0, 5))
            earliest, latest = volume.backtrack_window
            target = rng.uniform(earliest, latest)
            volume.backtrack(target)
            model.backtrack(clock.now(), target)
            check(volume, model.at(target))
        else:
            clock.advance(rng.uniform(0, 900))
        check(volume, model.at(clock.now()))


def test_back_three_hours_then_forward_one() -> None:
    clock = SimulatedClock(START)
    volume = Volume.create(
        page_size=PAGE,
        segment_size=PAGE * 4,
        capacity=PAGE * PAGES,
        clock=clock,
        backtrack_window=72 * 3600,
    )
    for hour in range(6):
        clock.advance(3600)
        with volume.transaction() as tx:
            tx.write(0, 0, f"hour {hour}".encode())
    assert volume.read_page(0)[:6] == b"hour 5"
    clock.advance(60)
    now = clock.now()
    volume.backtrack(now - 3 * 3600)
    assert volume.read_page(0)[:6] == b"hour 2"
    clock.advance(60)
    volume.backtrack(now - 2 * 3600)  # a time before the first backtrack ran
    assert volume.read_page(0)[:6] == b"hour 3"
    with volume.transaction() as tx:
        tx.write(0, 0, b"hour X")
    assert tx.lsn > 6, "new writes get LSNs above everything ever allocated"
    assert volume.read_page(0)[:6] == b"hour X"


def test_target_inside_a_transaction_lands_before_it() -> None:
    clock = SimulatedClock(START)
    volume = volume_with(clock)
    clock.advance(10)
    with volume.transaction() as tx:
        tx.write(0, 0, b"first")
    clock.advance(10)
    with volume.transaction() as tx:
        tx.write(0, 0, b"SECOND")
        clock.advance(5)  # the MTR spans time; it commits at its end
        tx.write(1, 0, b"SECOND")
    clock.advance(10)
    volume.backtrack(START + 22)
    assert volume.read_page(0)[:6] == b"first\x00"
    assert volume.read_page(1)[:6] == bytes(6)


def test_bad_targets_change_nothing() -> None:
    clock = SimulatedClock(START)
    volume = volume_with(clock)
    for _ in range(3):
        clock.advance(600)
        with volume.transaction() as tx:
            tx.write(0, 0, b"x" * 8)
    clock.advance(WINDOW)
    before = (volume.read_page(0), volume.history.current.version, volume.annulled)
    earliest, latest = volume.backtrack_window
    for target in (earliest - 1, latest + 1, START - 10_000):
        with pytest.raises(TimeOutsideWindowError) as caught:
            volume.backtrack(target)
        assert caught.value.target == target
    assert (volume.read_page(0), volume.history.current.version, volume.annulled) == before


def test_window_zero_is_off_for_good() -> None:
    clock = SimulatedClock(START)
    volume = Volume.create(
        page_size=PAGE, segment_size=PAGE * 4, capacity=PAGE * PAGES, clock=clock
    )
    with pytest.raises(BacktrackDisabledError):
        volume.backtrack(START)
    with pytest.raises(BacktrackDisabledError):
        _ = volume.backtrack_window


def test_window_above_72_hours_is_refused() -> None:
    from aurora_storage.errors import ConfigurationError

    with pytest.raises(ConfigurationError):
        Volume.create(backtrack_window=72 * 3600 + 1)


def test_backtrack_survives_a_writer_crash() -> None:
    clock = SimulatedClock(START)
    disks = {name: SimulatedDisk(i) for i, name in enumerate(NODE_NAMES)}
    volume = Volume.create(
        disks=disks,
        page_size=PAGE,
        segment_size=PAGE * 4,
        capacity=PAGE * PAGES,  # type: ignore[arg-type]
        clock=clock,
        backtrack_window=WINDOW,
        transport=DirectTransport(sync_threads=0),
    )
    for value in (b"one", b"two", b"three"):
        clock.advance(100)
        with volume.transaction() as tx:
            tx.write(5, 0, value)
    clock.advance(10)
    volume.backtrack(START + 150)
    assert volume.read_page(5)[:5] == b"one\x00\x00"
    for disk in disks.values():
        disk.crash()
    clock.advance(10)
    reopened = Volume.open(
        disks=disks,
        options=volume.options,
        volume_id=volume.volume_id,  # type: ignore[arg-type]
        clock=clock,
        transport=DirectTransport(sync_threads=0),
    )
    assert reopened.read_page(5)[:5] == b"one\x00\x00", "the backtrack holds"
    reopened.backtrack(START + 305)  # the time index was rebuilt from the logs
    assert reopened.read_page(5)[:5] == b"three"


def test_undone_records_go_once_the_window_passes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(segment, "COALESCE_RECORD_BYTES", 1)
    clock = SimulatedClock(START)
    volume = volume_with(clock)
    for i in range(20):
        clock.advance(60)
        with volume.transaction() as tx:
            tx.write(0, 0, f"value {i:02d}".encode())
    clock.advance(1)
    volume.backtrack(START + 60 * 5 + 30)
    assert volume.read_page(0)[:8] == b"value 04"
    held = volume.nodes["az1-a"].segments[0].page_log.stats().records
    assert held >= 15, "the window keeps the undone records"
    clock.advance(WINDOW + 60)
    for i in range(3):
        clock.advance(1)
        with volume.transaction() as tx:
            tx.write(0, 0, f"later {i:02d}".encode())
    after = volume.nodes["az1-a"].segments[0].page_log.stats().records
    assert after < held, f"records held went from {held} to {after}"
    assert volume.read_page(0)[:8] == b"later 02"


@pytest.mark.parametrize("readonly", [False, True])
def test_the_window_bookkeeping_survives_a_reopen(tmp_path: object, readonly: bool) -> None:
    """change_records_stored and the budget after a reopen come from storage: every
    commit the nodes index in the window, and the record bytes their page logs hold."""
    from pathlib import Path

    path = Path(str(tmp_path)) / "v"
    clock = SimulatedClock(START)
    volume = Volume.create(
        path,
        page_size=PAGE,
        segment_size=PAGE * 4,
        capacity=PAGE * PAGES,
        clock=clock,
        backtrack_window=WINDOW,
        durability="os",
    )
    for number in range(40):
        clock.advance(60)
        with volume.transaction() as tx:
            tx.write(number % PAGES, 0, bytes(200))
    before = volume.status()["backtrack"]
    volume.close()
    reopened = Volume.open(path, clock=clock, readonly=readonly)
    after = reopened.status()["backtrack"]
    assert after["change_records_stored"] == before["change_records_stored"] > 0
    assert 0.5 * before["change_bytes_stored"] <= after["change_bytes_stored"]
    assert after["change_bytes_stored"] <= 2 * before["change_bytes_stored"]
    assert after["earliest"] == before["earliest"]
    reopened.close()
    if readonly:
        return
    # A budget set now (volume.meta) is enforced on the rebuilt window at once.
    budgeted = Volume.open(path, clock=clock)
    budgeted.options.backtrack_budget = before["change_bytes_stored"] // 4
    status = budgeted.status()["backtrack"]
    assert status["change_bytes_stored"] <= before["change_bytes_stored"] // 4
    assert status["earliest"] > before["earliest"]
    budgeted.close()
