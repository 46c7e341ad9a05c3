"""Times and durations as users give them (clock.py), through the public API.

One parser reads times for the library and the command line: ISO-8601 by
python-dateutil (``Z`` included, which ``datetime.fromisoformat`` reads only
from Python 3.11), ``now``, relative forms, Unix seconds; naive times are
local time, as the standard library reads them; ``earliest`` and ``latest``
name the ends of a backtrack or restore window. Durations are seconds or a
``timedelta``. Errors print times as ISO-8601 UTC and how far outside the
window they are.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import pytest

from aurora_storage import SimulatedClock, Volume
from aurora_storage.backup.store import MemoryStore
from aurora_storage.clock import format_duration, format_time, to_seconds
from aurora_storage.errors import InDoubtError, InvalidArgumentError, TimeOutsideWindowError

START = 1_796_178_220.0  # 2026-12-02T02:23:40Z
ISO_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{3})?Z")


@pytest.fixture
def zone(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Local time is UTC+05:30 for the test (a zone with no daylight saving)."""
    monkeypatch.setenv("TZ", "Asia/Kolkata")
    time.tzset()
    yield "+05:30"
    monkeypatch.undo()
    time.tzset()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-12-02T02:23:40Z", START),  # Z: Python 3.10's fromisoformat rejects it
        ("2026-12-02T02:23:40z", START),
        ("2026-12-02 02:23:40Z", START),
        ("2026-12-02T03:23:40+01:00", START),
        ("2026-12-02T02:23:40.250Z", START + 0.25),
        ("20261202T022340Z", START),
        ("2026-12-01T24:00:00Z", START - (2 * 3600 + 23 * 60 + 40)),  # ISO-8601's end of day
        (" 2026-12-02T02:23:40Z ", START),
        ("1796178220", START),
        ("1796178220.5", START + 0.5),
    ],
)
def test_iso_8601_and_unix_seconds(text: str, expected: float) -> None:
    assert to_seconds(text) == expected
    assert SimulatedClock(text).now() == expected


def test_relative_times_and_now() -> None:
    assert to_seconds("-2h", START) == START - 7200
    assert to_seconds("+30m", START) == START + 1800
    assert to_seconds("-1.5d", START) == START - 1.5 * 86400
    assert to_seconds("-45s", START) == START - 45
    assert to_seconds("now", START) == START
    clock = SimulatedClock(START)
    assert clock.set("+1h") == START + 3600, "relative to the clock's own now"


def test_naive_times_are_local_time_as_in_the_standard_library(zone: str) -> None:
    naive = datetime(2026, 12, 2, 8, 0)
    assert to_seconds(naive) == naive.timestamp()
    assert to_seconds(naive) == START - 23 * 60 - 40 + 3600 * 8 - 5.5 * 3600 - 2 * 3600
    assert to_seconds("2026-12-02T08:00:00") == naive.timestamp()
    assert to_seconds("2026-12-02T08:00:00" + zone) == naive.timestamp()
    assert SimulatedClock(naive).now() == naive.timestamp()
    aware = datetime(2026, 12, 2, 2, 23, 40, tzinfo=timezone.utc)
    assert to_seconds(aware) == START


@pytest.mark.parametrize(
    "bad", ["yesterday-ish", "2026-13-01", "-2x", "", "earliest", True, None, float("nan"), [1]]
)
def test_unreadable_times_raise_and_name_the_value(bad: object) -> None:
    with pytest.raises(InvalidArgumentError) as raised:
        to_seconds(bad)  # type: ignore[arg-type]
    assert repr(bad) in str(raised.value) or str(bad) in str(raised.value)


def test_durations_take_timedelta_everywhere() -> None:
    clock = SimulatedClock(START)
    assert clock.advance(timedelta(minutes=5)) == START + 300
    volume = Volume.create(
        clock=clock,
        backtrack_window=timedelta(hours=2),
        commit_timeout=timedelta(seconds=7),
        backup=MemoryStore(),
        backup_retention_days=timedelta(days=3),
        backup_staging_interval=timedelta(minutes=10),
    )
    with volume.transaction() as tx:
        tx.write(0, 0, b"x")
    status = volume.status()
    assert status["backtrack"]["window_target_seconds"] == 7200
    assert volume.options.commit_timeout == 7
    assert status["backup"]["retention_days"] == 3
    assert status["backup"]["staging_interval_seconds"] == 600
    assert volume.wait_durable(tx.lsn, timedelta(seconds=1))
    assert volume.stage_backup(timedelta(seconds=5))
    with pytest.raises(InvalidArgumentError, match="duration"):
        volume.wait_durable(tx.lsn, "1s")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="backtrack_window"):
        Volume.create(backtrack_window="2h")  # type: ignore[arg-type]


def make_history() -> tuple[Volume, SimulatedClock, MemoryStore, list[float]]:
    """A memory volume with a commit a minute for ten minutes, backed up."""
    clock = SimulatedClock(START)
    store = MemoryStore()
    volume = Volume.create(
        clock=clock, backtrack_window=timedelta(hours=1), backup=store, backup_staging="inline"
    )
    moments = []
    for i in range(10):
        clock.advance(60)
        with volume.transaction() as tx:
            tx.write(0, 0, f"{i:04d}".encode())
        moments.append(clock.now())
    assert volume.stage_backup()
    return volume, clock, store, moments


def test_backtrack_and_restore_take_iso_strings_and_window_ends() -> None:
    volume, clock, store, moments = make_history()
    clock.advance(60)  # backtracks run a minute after the last commit
    third = format_time(moments[3])
    assert volume.backtrack(to=third).target == moments[3]
    assert volume.read_page(0)[:4] == b"0003"
    latest = volume.backtrack(to="latest")  # the history in effect now: the state it is in
    assert latest.target == clock.now() and volume.read_page(0)[:4] == b"0003"
    volume.backtrack(to=datetime.fromtimestamp(moments[9], tz=timezone.utc))  # forward again
    assert volume.read_page(0)[:4] == b"0009"
    earliest = volume.backtrack(to="earliest")
    assert earliest.target == volume.backtrack_window[0] and earliest.lsn == 0
    assert volume.backtrack(to="-9m").target == clock.now() - 540
    assert volume.read_page(0)[:4] == b"0001"

    restored = Volume.restore(store, to=format_time(moments[5]))
    assert restored.read_page(0)[:4] == b"0005"
    newest = Volume.restore(store, to="latest")
    assert newest.read_page(0)[:4] == b"0009"
    first = Volume.restore(store, to="earliest")
    assert first.read_page(0) == bytes(first.geometry.page_size)
    assert first.restored_from is not None and first.restored_from[0] == START


def test_window_errors_print_iso_utc_and_how_far_outside() -> None:
    volume, clock, store, _ = make_history()
    with pytest.raises(TimeOutsideWindowError) as after:
        volume.backtrack(to=clock.now() + 7200)
    message = str(after.value)
    assert len(ISO_UTC.findall(message)) == 3, message
    assert "2 h after it closes" in message
    assert after.value.target == clock.now() + 7200, "the attribute keeps the seconds"
    with pytest.raises(TimeOutsideWindowError) as before:
        Volume.restore(store, to=START - 90)
    assert "1 min 30 s before it opens" in str(before.value)
    assert format_time(START) in str(before.value)
    assert not re.search(r"\d{10}\.\d", str(before.value)), "no Unix floats"
    in_doubt = InDoubtError((), START)
    assert format_time(START) in str(in_doubt)


def test_formats() -> None:
    assert format_time(START) == "2026-12-02T02:23:40Z"
    assert format_time(START + 0.5) == "2026-12-02T02:23:40.500Z"
    assert format_duration(42) == "42 s"
    assert format_duration(200) == "3 min 20 s"
    assert format_duration(7500) == "2 h 5 min"
    assert format_duration(3 * 86400 + 4 * 3600 + 5) == "3 d 4 h"
