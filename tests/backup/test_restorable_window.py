"""The restorable window is honest: every time inside it restores exactly, none outside does.

A seeded workload runs on a simulated clock for longer than the retention
period plus the backtrack window, at varied rates (bursts, quiet hours), with
backtracks, while retention expires old objects. At checkpoints and at the end
restores go to many times, always including the first and the last restorable
second, and each restored volume is compared with a timeline model (the pages
the volume showed at that moment). Times just outside the window raise
TimeOutsideWindowError. A restore whose objects are gone raises an error naming
what is missing, never a volume of zeros. The 35-day, 72-hour run of the
issue that found this is opt-in (AURORA_STORAGE_SLOW=1).
"""

from __future__ import annotations

import os
import random

import pytest

from aurora_storage import SimulatedClock, Volume, backup
from aurora_storage.backup.store import MemoryStore
from aurora_storage.errors import BackupObjectMissingError, TimeOutsideWindowError
from aurora_storage.sim import TimelineModel

SLOW = os.environ.get("AURORA_STORAGE_SLOW") == "1"
PAGE = 4096
PAGES = 24
START = 1_700_000_000.0
HOUR = 3600.0
DAY = 24 * HOUR


class CountingStore(MemoryStore):
    """A memory store that counts the objects deleted from it."""

    def __init__(self) -> None:
        super().__init__()
        self.deleted: list[str] = []

    def delete(self, name: str) -> None:
        if name in self.objects:
            self.deleted.append(name)
        super().delete(name)


def make(clock: SimulatedClock, store: MemoryStore, **options: object) -> Volume:
    return Volume.create(
        page_size=PAGE,
        segment_size=PAGE * 4,
        capacity=PAGE * PAGES,
        clock=clock,
        backup=store,
        **options,  # type: ignore[arg-type]
    )


def commit_random(volume: Volume, model: TimelineModel, rng: random.Random) -> None:
    changes = []
    for _ in range(rng.randint(1, 3)):
        data = rng.randbytes(rng.randint(1, 24))
        changes.append((rng.randrange(PAGES), rng.randrange(PAGE - len(data)), data))
    with volume.transaction() as tx:
        for page_no, offset, data in changes:
            tx.write(page_no, offset, data)
    model.commit(volume.clock.now(), changes)


def assert_restores(store: MemoryStore, model: TimelineModel, moment: float) -> None:
    restored = Volume.restore(store, to=moment)
    try:
        expected = model.at(moment)
        for page_no in range(PAGES):
            assert restored.read_page(page_no) == expected.get(page_no, bytes(PAGE)), (
                f"page {page_no} restored to {moment - START:.3f} s"
            )
    finally:
        restored.close()


def check_window(
    volume: Volume,
    store: MemoryStore,
    model: TimelineModel,
    rng: random.Random,
    samples: int,
    horizon_seconds: float,
) -> tuple[float, float]:
    """Restores at the window's ends, at random times inside it and at commit and
    backtrack times near its start; times just outside it raise."""
    assert volume.stage_backup(), volume.status()["backup"]["last_error"]
    earliest, latest = volume.restorable_window
    assert backup.BackupCatalog(store).window() == (earliest, latest), "writer and store agree"
    assert latest == volume.clock.now(), "nothing in flight: the latest restorable time is now"
    # The window is never shorter than retention asks for.
    assert earliest <= max(START, latest - horizon_seconds)
    for moment in (earliest - 0.001, latest + 0.001):
        with pytest.raises(TimeOutsideWindowError):
            Volume.restore(store, to=moment)
    near_start = [time for time, _ in model.events if earliest <= time <= earliest + 2 * HOUR]
    moments = {earliest, latest, *near_start[:6]}
    moments |= {rng.uniform(earliest, latest) for _ in range(samples)}
    for moment in sorted(moments):
        assert_restores(store, model, moment)
    return earliest, latest


def run_history(
    seed: int,
    *,
    retention_days: float,
    backtrack_window: float,
    hours: float,
    staging_interval: float,
    checkpoint_hours: float,
    samples: int,
) -> tuple[Volume, CountingStore, TimelineModel]:
    rng = random.Random(seed)
    clock = SimulatedClock(START)
    store = CountingStore()
    volume = make(
        clock,
        store,
        backtrack_window=backtrack_window,
        backup_retention_days=retention_days,
        backup_staging_interval=staging_interval,
    )
    model = TimelineModel(START, PAGE)
    horizon_seconds = max(retention_days * DAY, backtrack_window)
    next_checkpoint = START + checkpoint_hours * HOUR
    while clock.now() < START + hours * HOUR:
        roll = rng.random()
        if roll < 0.05:
            clock.advance(rng.uniform(1, 6) * HOUR)  # a quiet spell
        elif roll < 0.35:
            clock.advance(rng.uniform(0.5, 5))  # a burst
        else:
            clock.advance(rng.uniform(60, 1800))
        if rng.random() < 0.06:
            earliest, latest = volume.backtrack_window
            target = rng.uniform(earliest, latest)
            volume.backtrack(target)
            model.backtrack(clock.now(), target)
        else:
            commit_random(volume, model, rng)
        if clock.now() >= next_checkpoint:
            check_window(volume, store, model, rng, samples, horizon_seconds)
            next_checkpoint += checkpoint_hours * HOUR
    return volume, store, model


@pytest.mark.parametrize("seed", range(3))
def test_every_time_in_the_window_restores_and_none_outside(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two days at one day's retention and a four-hour backtrack window."""
    monkeypatch.setattr(backup, "SNAPSHOT_EVERY_BYTES", 2048)
    volume, store, model = run_history(
        seed,
        retention_days=1,
        backtrack_window=4 * HOUR,
        hours=56,
        staging_interval=600,
        checkpoint_hours=14,
        samples=6,
    )
    earliest, _ = check_window(volume, store, model, random.Random(seed), 16, DAY)
    assert earliest > START + DAY, "retention gave up the oldest restores"
    assert len(volume.history.versions) > 3, "backtracks happened"
    assert any(name.startswith("log/") for name in store.deleted), "LOG objects expired"
    assert any(name.startswith("pages/") for name in store.deleted), "PAGES objects expired"
    volume.close()


@pytest.mark.parametrize("seed", [12, 13])
def test_a_backtrack_window_longer_than_retention(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Backtracks may land before the retention horizon: retention keeps what restores
    in the versions they make need (the seeds are ones where objects expire and
    backtracks come after)."""
    monkeypatch.setattr(backup, "SNAPSHOT_EVERY_BYTES", 2048)
    volume, store, model = run_history(
        seed,
        retention_days=1,
        backtrack_window=30 * HOUR,
        hours=80,
        staging_interval=900,
        checkpoint_hours=20,
        samples=6,
    )
    check_window(volume, store, model, random.Random(seed), 12, 30 * HOUR)
    assert any(name.startswith("log/") for name in store.deleted), "LOG objects expired"
    late = [v for v in volume.history.versions if v.created_at > START + 50 * HOUR]
    assert late, "backtracks after objects expired"
    volume.close()


def issue_history(
    clock: SimulatedClock, store: MemoryStore, days: int
) -> tuple[Volume, TimelineModel]:
    """The issue's history: an 8-byte counter every 30 min for 80 h (page n % 20),
    then 6 commits a day for ``days`` days."""
    volume = Volume.create(
        clock=clock,
        page_size=PAGE,
        segment_size=PAGE * 32,
        backtrack_window=72 * HOUR,
        backup=store,
        backup_retention_days=35,
    )
    model = TimelineModel(clock.now(), PAGE)
    counter = 0

    def bump() -> None:
        nonlocal counter
        counter += 1
        data = counter.to_bytes(8, "little")
        with volume.transaction() as tx:
            tx.write(counter % 20, 0, data)
        model.commit(clock.now(), [(counter % 20, 0, data)])

    for _ in range(160):
        clock.advance(1800)
        bump()
    for _ in range(days * 6):
        clock.advance(DAY / 6)
        bump()
    return volume, model


def test_the_issue_history_restores_inside_its_window_and_raises_before_it() -> None:
    """After 40 days at 35-day retention the window starts about 5 days in; a restore to
    33 h raises TimeOutsideWindowError instead of giving a volume of zeros."""
    clock = SimulatedClock(START)
    store = MemoryStore()
    volume, model = issue_history(clock, store, 37)
    assert volume.stage_backup()
    earliest, latest = volume.restorable_window
    assert earliest <= latest - 35 * DAY
    assert earliest > START + 3 * DAY
    with pytest.raises(TimeOutsideWindowError):
        Volume.restore(store, to=START + 33 * HOUR)
    for moment in (earliest, earliest + 1, earliest + 7 * HOUR, latest - 3 * DAY, latest):
        assert_restores_pages(store, model, moment, 20)
    volume.close()


def assert_restores_pages(
    store: MemoryStore, model: TimelineModel, moment: float, pages: int
) -> None:
    restored = Volume.restore(store, to=moment)
    expected = model.at(moment)
    for page_no in range(pages):
        assert restored.read_page(page_no) == expected.get(page_no, bytes(PAGE)), page_no
    restored.close()


def test_a_restore_missing_its_base_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """With a PG's PAGES base gone (and the LOG objects before it expired), the restore
    names the object instead of building the PG's pages from the LOG objects after it."""
    monkeypatch.setattr(backup, "SNAPSHOT_EVERY_BYTES", 2048)
    volume, store, _ = run_history(
        3,
        retention_days=1,
        backtrack_window=HOUR,
        hours=40,
        staging_interval=600,
        checkpoint_hours=100,
        samples=0,
    )
    assert volume.stage_backup()
    earliest, _ = volume.restorable_window
    catalog = backup.BackupCatalog(store)
    point, annulled = catalog.restore_point(earliest)
    plan = next(plan for plan in catalog.plan(point, annulled) if plan.base_name is not None)
    del store.objects[plan.base_name]
    with pytest.raises(BackupObjectMissingError) as missing:
        Volume.restore(store, to=earliest)
    assert missing.value.name == plan.base_name
    volume.close()


def test_a_missing_base_with_its_older_objects_kept_restores_from_an_older_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Nothing expired: with the newest PAGES object gone, an older one and the LOG
    objects after it still give every page exactly."""
    monkeypatch.setattr(backup, "SNAPSHOT_EVERY_BYTES", 1)
    clock = SimulatedClock(START)
    store = MemoryStore()
    volume = make(clock, store, backup_staging_interval=30)
    model = TimelineModel(START, PAGE)
    rng = random.Random(6)
    for _ in range(15):
        clock.advance(40)
        commit_random(volume, model, rng)
    assert volume.stage_backup()
    volume.close()
    catalog = backup.BackupCatalog(store)
    plan = next(p for p in catalog.plan(*catalog.restore_point(clock.now())) if p.base_name)
    assert plan.base_name is not None
    del store.objects[plan.base_name]
    assert_restores(store, model, clock.now())


def test_a_restore_missing_its_last_log_object_names_it() -> None:
    """The newest LOG object of a PG is gone: no later object links to it, yet the
    restore names it rather than restoring that PG as of an older commit."""
    clock = SimulatedClock(START)
    store = MemoryStore()
    volume = make(clock, store, backup_staging_interval=30)
    model = TimelineModel(START, PAGE)
    rng = random.Random(2)
    for _ in range(20):
        clock.advance(40)
        commit_random(volume, model, rng)
    assert volume.stage_backup()
    newest = max(store.list("log/"), key=lambda name: name.rsplit("-", 1)[1])
    del store.objects[newest]
    with pytest.raises(BackupObjectMissingError) as missing:
        Volume.restore(store, to=clock.now())
    assert missing.value.name == newest
    volume.close()


@pytest.mark.slow
@pytest.mark.skipif(not SLOW, reason="a 40-day history: AURORA_STORAGE_SLOW=1")
@pytest.mark.parametrize("seed", range(2))
def test_the_full_retention_and_backtrack_window(seed: int) -> None:
    """40 days at 35-day retention and a 72-hour backtrack window."""
    volume, store, model = run_history(
        seed,
        retention_days=35,
        backtrack_window=72 * HOUR,
        hours=40 * 24,
        staging_interval=3600,
        checkpoint_hours=24 * 9,
        samples=8,
    )
    earliest, _ = check_window(volume, store, model, random.Random(seed), 24, 35 * DAY)
    assert earliest > START + 3 * DAY
    volume.close()


def test_a_missing_round_moves_the_earliest_time_past_it() -> None:
    """Rounds name the round before them: with one gone from the middle the time
    index before the next is incomplete, so restores there raise rather than land on
    an older commit; from the next round on they are exact."""
    clock = SimulatedClock(START)
    store = MemoryStore()
    volume = make(clock, store, backup_staging_interval=30)
    model = TimelineModel(START, PAGE)
    rng = random.Random(4)
    for _ in range(12):
        clock.advance(40)
        commit_random(volume, model, rng)
    assert volume.stage_backup()
    volume.close()
    names = store.list("rounds/")
    gone, after = names[5], names[6]
    del store.objects[gone]
    after_time = int(after.rsplit("-", 1)[1]) / 1000
    earliest, _ = backup.BackupCatalog(store).window()
    assert after_time - 0.001 <= earliest <= after_time + 0.001
    with pytest.raises(TimeOutsideWindowError):
        Volume.restore(store, to=int(gone.rsplit("-", 1)[1]) / 1000)
    for moment in (earliest, earliest + 50, clock.now()):
        assert_restores(store, model, moment)
