"""Point-in-time restore from continuous backup, on a simulated clock.

A timeline model records what the volume showed at every moment; restores to
random times inside the restorable window must equal it, after backtracks
too, and after the source volume's folder is gone. Damaged or missing backup
objects raise errors naming them and never yield a volume with wrong bytes.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pytest

from aurora_storage import SimulatedClock, Volume, backup
from aurora_storage.backup.store import MemoryStore
from aurora_storage.errors import (
    BackupCorruptError,
    BackupObjectMissingError,
    ConfigurationError,
    TimeOutsideWindowError,
)
from aurora_storage.format.objects import (
    HISTORY_NAME,
    KIND_MANIFEST,
    decode_object,
    encode_object,
    parse_log_name,
)
from aurora_storage.protocol import node, segment
from aurora_storage.sim import TimelineModel

PAGE = 4096
PAGES = 24
START = 1_700_000_000.0


def make(
    clock: SimulatedClock, store: object, path: Path | None = None, **options: object
) -> Volume:
    return Volume.create(
        path,
        page_size=PAGE,
        segment_size=PAGE * 4,
        capacity=PAGE * PAGES,
        clock=clock,
        backup=store,
        **{"backup_staging_interval": 30, **options},  # type: ignore[arg-type]
    )


def commit_random(volume: Volume, model: TimelineModel, rng: random.Random) -> None:
    changes = []
    for _ in range(rng.randint(1, 4)):
        data = rng.randbytes(rng.randint(1, 32))
        changes.append((rng.randrange(PAGES), rng.randrange(PAGE - len(data)), data))
    with volume.transaction() as tx:
        for page_no, offset, data in changes:
            tx.write(page_no, offset, data)
    model.commit(volume.clock.now(), changes)


def random_history(
    volume: Volume, model: TimelineModel, rng: random.Random, steps: int, gap_s: float = 40
) -> None:
    """``steps`` steps of the volume's simulated clock, up to ``gap_s`` apart: mostly a
    random commit, sometimes a backtrack to a random time of the window."""
    clock = volume.clock
    assert isinstance(clock, SimulatedClock)
    for _ in range(steps):
        roll = rng.random()
        clock.advance(rng.uniform(1, gap_s))
        if roll < 0.85:
            commit_random(volume, model, rng)
        else:
            earliest, latest = volume.backtrack_window
            target = rng.uniform(earliest, latest)
            volume.backtrack(target)
            model.backtrack(clock.now(), target)


def commit_every(
    volume: Volume, model: TimelineModel, rng: random.Random, count: int, seconds: float = 10
) -> list[float]:
    """``count`` random commits, ``seconds`` of the volume's simulated clock apart; their times."""
    clock = volume.clock
    assert isinstance(clock, SimulatedClock)
    moments = []
    for _ in range(count):
        clock.advance(seconds)
        commit_random(volume, model, rng)
        moments.append(clock.now())
    return moments


def assert_pages(volume: Volume, expected: dict[int, bytes]) -> None:
    for page_no in range(PAGES):
        assert volume.read_page(page_no) == expected.get(page_no, bytes(PAGE)), page_no


@pytest.mark.parametrize("seed", range(8))
def test_restores_match_the_timeline(seed: int) -> None:
    rng = random.Random(seed)
    clock = SimulatedClock(START)
    store = MemoryStore()
    volume = make(clock, store, backtrack_window=3600)
    model = TimelineModel(START, PAGE)
    random_history(volume, model, rng, 80)
    assert volume.stage_backup()
    earliest, latest = volume.restorable_window
    assert latest == clock.now(), "nothing in flight: the latest restorable time is now"
    for _ in range(4):
        moment = rng.uniform(earliest, latest)
        restored = Volume.restore(store, to=moment)
        assert_pages(restored, model.at(moment))


def test_restore_after_the_source_is_deleted(tmp_path: Path) -> None:
    clock = SimulatedClock(START)
    volume = make(clock, str(tmp_path / "backup"), tmp_path / "source")
    model = TimelineModel(START, PAGE)
    rng = random.Random(7)
    for _ in range(30):
        clock.advance(20)
        commit_random(volume, model, rng)
    earliest, latest = volume.restorable_window
    volume.close()
    shutil.rmtree(tmp_path / "source")
    moment = START + 20 * 17 + 5
    assert earliest <= moment <= latest
    restored = Volume.restore(str(tmp_path / "backup"), to=moment, path=tmp_path / "restored")
    assert_pages(restored, model.at(moment))
    restored.close()
    reopened = Volume.open(tmp_path / "restored")
    assert_pages(reopened, model.at(moment))
    reopened.close()


def test_times_outside_the_window() -> None:
    clock = SimulatedClock(START)
    store = MemoryStore()
    volume = make(clock, store)
    for _ in range(5):
        clock.advance(10)
        with volume.transaction() as tx:
            tx.write(0, 0, b"x")
    earliest, latest = volume.restorable_window
    for moment in (earliest - 1, latest + 1):
        with pytest.raises(TimeOutsideWindowError):
            Volume.restore(store, to=moment)


def test_retention_days_are_checked() -> None:
    for days in (0, 36):
        with pytest.raises(ConfigurationError):
            make(SimulatedClock(START), MemoryStore(), backup_retention_days=days)


def filled_store(clock: SimulatedClock) -> tuple[MemoryStore, TimelineModel]:
    store = MemoryStore()
    volume = make(clock, store)
    model = TimelineModel(START, PAGE)
    rng = random.Random(3)
    for _ in range(20):
        clock.advance(20)
        commit_random(volume, model, rng)
    assert volume.stage_backup()  # the last round
    return store, model


def test_a_corrupt_object_is_named_and_yields_no_volume() -> None:
    clock = SimulatedClock(START)
    store, _ = filled_store(clock)
    name = store.list("log/")[0]
    data = bytearray(store.objects[name])
    data[len(data) // 2] ^= 0x01
    store.objects[name] = bytes(data)
    with pytest.raises(BackupCorruptError) as caught:
        Volume.restore(store, to=clock.now())
    assert caught.value.name == name


def test_a_missing_object_is_named() -> None:
    clock = SimulatedClock(START)
    store, _ = filled_store(clock)
    names = store.list("log/pg-00000000/")
    assert len(names) >= 3
    del store.objects[names[1]]
    with pytest.raises(BackupObjectMissingError) as caught:
        Volume.restore(store, to=clock.now())
    assert caught.value.name == names[1], "a round names it: the restore knows it is gone"
    del store.objects[HISTORY_NAME]
    with pytest.raises(BackupObjectMissingError) as missing:
        Volume.restore(store, to=clock.now())
    assert missing.value.name == HISTORY_NAME


def test_a_gap_no_round_names_is_found_by_the_backlinks() -> None:
    """Rounds written before they named their objects: a missing LOG object in the
    middle of a PG's chain is still found (the next one's backlink points past the
    chain) and named by its LSN range."""
    clock = SimulatedClock(START)
    store, _ = filled_store(clock)
    for name in store.list("rounds/"):
        meta, _ = decode_object(store.objects[name], name, KIND_MANIFEST)
        for key in ("logs", "pages", "previous"):
            del meta[key]
        store.objects[name] = encode_object(KIND_MANIFEST, b"", meta)
    names = store.list("log/pg-00000000/")
    del store.objects[names[1]]
    with pytest.raises(backup.RestoreError) as caught:
        Volume.restore(store, to=clock.now())
    assert f"LSNs {parse_log_name(names[0])[2] + 1} to " in str(caught.value)
    assert "missing" in str(caught.value)


def test_retention_keeps_what_restores_need(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backup, "SNAPSHOT_EVERY_BYTES", 1)
    clock = SimulatedClock(START)
    store = MemoryStore()
    volume = make(clock, store, backup_retention_days=1)
    model = TimelineModel(START, PAGE)
    rng = random.Random(11)
    for _ in range(40):
        clock.advance(3600)  # 40 hours of history, one commit an hour
        commit_random(volume, model, rng)
    earliest, latest = volume.restorable_window
    assert latest == clock.now()
    assert earliest >= clock.now() - 24 * 3600 - 1, "restores older than a day were given up"
    with pytest.raises(TimeOutsideWindowError):
        Volume.restore(store, to=START + 3600)
    assert store.list("pages/"), "page snapshots were staged"
    logs_before = len(store.list("log/"))
    clock.advance(3600)
    commit_random(volume, model, rng)
    assert volume.stage_backup()  # the last round
    assert len(store.list("log/")) <= logs_before + 6, "old LOG objects were deleted"
    for moment in (clock.now() - 20 * 3600, clock.now() - 3600, clock.now()):
        restored = Volume.restore(store, to=moment)
        assert_pages(restored, model.at(moment))


def test_coalescing_waits_for_staging(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(segment, "COALESCE_RECORD_BYTES", 1)
    clock = SimulatedClock(START)
    store = MemoryStore()
    volume = Volume.create(
        page_size=PAGE,
        segment_size=PAGE * 4,
        capacity=PAGE * PAGES,
        clock=clock,
        backup=store,
        backup_staging_interval=10_000,
    )
    model = TimelineModel(START, PAGE)
    rng = random.Random(5)
    for _ in range(30):
        clock.advance(5)
        commit_random(volume, model, rng)
    assert volume.stage_backup()
    for moment in (START + 7, START + 50, clock.now()):
        assert_pages(Volume.restore(store, to=moment), model.at(moment))


class FailingStore(MemoryStore):
    """Refuses the next ``failures`` uploads whose names start with ``prefix``."""

    def __init__(self, prefix: str, failures: int) -> None:
        super().__init__()
        self.prefix = prefix
        self.failures = failures

    def put(self, name: str, data: bytes) -> None:
        if name.startswith(self.prefix) and self.failures:
            self.failures -= 1
            raise OSError(f"the store refused {name}")
        super().put(name, data)


@pytest.mark.parametrize(
    ("prefix", "failures"),
    [
        ("rounds/", 1),  # the round's manifest: every PG was staged, the round not recorded
        ("log/pg-00000001/", 1),  # one PG's frames: the other PGs were staged
    ],
)
def test_a_failed_round_leaves_its_commits_to_the_next(prefix: str, failures: int) -> None:
    """Commits go on through a failed staging round (each one durable, none raising),
    and a restore to any moment, those inside the failed round too, is exact."""
    clock = SimulatedClock(START)
    store = FailingStore(prefix, failures=0)
    volume = make(clock, store)
    model = TimelineModel(START, PAGE)
    rng = random.Random(11)
    moments = []
    failed_rounds = 0
    for step in range(40):
        if step == 12:
            store.failures = failures  # the next round that uploads such objects fails
        clock.advance(7)
        before = store.failures
        commit_random(volume, model, rng)
        moments.append(clock.now())
        if before and not store.failures:
            failed_rounds += 1
            assert "refused" in volume.staging.last_error
    assert failed_rounds == 1
    assert volume.stage_backup()
    assert volume.status()["backup"]["last_error"] == ""
    earliest, latest = volume.restorable_window
    assert earliest <= moments[0] and latest >= moments[-1]
    for moment in moments:
        restored = Volume.restore(store, to=moment)
        assert_pages(restored, model.at(moment))
        restored.close()


@pytest.mark.parametrize("seed", range(4))
def test_snapshots_a_backtrack_hid_are_not_restored(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PAGES snapshots taken before a backtrack hold what it hid: no restore uses them.

    Snapshots are taken every round here, so some lie inside the hidden range;
    restores to every commit time, before and after the backtrack, are exact.
    """
    monkeypatch.setattr(backup, "SNAPSHOT_EVERY_BYTES", 1)
    rng = random.Random(seed)
    clock = SimulatedClock(START)
    store = MemoryStore()
    volume = make(clock, store, backtrack_window=3600)
    model = TimelineModel(START, PAGE)
    moments = []
    for step in range(24):
        clock.advance(rng.uniform(25, 45))  # a staging round, with snapshots, most commits
        commit_random(volume, model, rng)
        moments.append(clock.now())
        if step in (9, 17):
            clock.advance(5)
            target = moments[rng.randrange(2, step - 4)]
            volume.backtrack(target)
            model.backtrack(clock.now(), target)
            moments.append(clock.now())
    assert volume.stage_backup()  # the last round
    assert len(store.list("pages/")) > 4
    for moment in moments:
        restored = Volume.restore(store, to=moment)
        assert_pages(restored, model.at(moment))
        restored.close()


def test_retention_keeps_a_base_no_backtrack_hid(monkeypatch: pytest.MonkeyPatch) -> None:
    """Snapshots every hour, a backtrack that hides some of them, then retention moving
    its horizon into the hidden hours: every restore inside the window stays exact (a
    hidden snapshot is no base, so the one before it and the LOG objects after stay)."""
    monkeypatch.setattr(backup, "SNAPSHOT_EVERY_BYTES", 1)
    clock = SimulatedClock(START)
    store = MemoryStore()
    window = 4 * 3600
    volume = make(clock, store, backup_retention_days=1, backtrack_window=window)
    model = TimelineModel(START, PAGE)
    rng = random.Random(5)
    moments = []
    for hour in range(43):  # the horizon ends near hour 43 - 24 = 19: hidden hours
        clock.advance(3600)
        commit_random(volume, model, rng)
        moments.append(clock.now())
        if hour == 20:  # hides hours 19..21, whose snapshots were staged already
            clock.advance(60)
            volume.backtrack(moments[17])
            model.backtrack(clock.now(), moments[17])
            moments.append(clock.now())
    earliest, _ = volume.restorable_window
    kept = [moment for moment in moments if moment >= earliest]
    assert moments[17] < earliest < moments[21], "the horizon lies in the hidden hours"
    for moment in kept:
        restored = Volume.restore(store, to=moment)
        assert_pages(restored, model.at(moment))
        restored.close()


@pytest.fixture
def trimming_often(monkeypatch: pytest.MonkeyPatch) -> None:
    """Segments coalesce and nodes checkpoint (trim their logs) after a few frames."""
    monkeypatch.setattr(segment, "COALESCE_RECORD_BYTES", 256)
    monkeypatch.setattr(node, "CHECKPOINT_EVERY_FRAMES", 4)


@pytest.mark.usefixtures("trimming_often")
def test_a_backup_attached_to_a_volume_with_history(tmp_path: Path) -> None:
    """Opening a volume with a backup it never had: its segments coalesced and trimmed
    their logs long ago, so the backup begins with page images at the VDL it opened
    with, and restores reach from then on, exactly."""
    clock = SimulatedClock(START)
    path = tmp_path / "v"
    volume = Volume.create(
        path, page_size=PAGE, segment_size=PAGE * 4, capacity=PAGE * PAGES, clock=clock
    )
    model = TimelineModel(START, PAGE)
    rng = random.Random(8)
    commit_every(volume, model, rng, 40)
    volume.close()
    clock.advance(10)
    attached = clock.now()
    volume = Volume.open(path, clock=clock, backup=tmp_path / "backup")
    moments = [attached, *commit_every(volume, model, rng, 30)]
    assert volume.stage_backup()
    assert volume.status()["backup"]["last_error"] == ""
    earliest, latest = volume.restorable_window
    assert earliest == attached and latest == moments[-1]
    with pytest.raises(TimeOutsideWindowError):
        Volume.restore(tmp_path / "backup", to=attached - 1)
    volume.close()
    for moment in moments:
        restored = Volume.restore(tmp_path / "backup", to=moment)
        assert_pages(restored, model.at(moment))
        restored.close()


@pytest.mark.usefixtures("trimming_often")
def test_a_backup_attached_to_a_restored_volume_after_it_coalesced(tmp_path: Path) -> None:
    """A restored volume that coalesced past its base and is reopened with a new backup:
    that backup begins at the VDL it opened with, not at the restore's base."""
    clock = SimulatedClock(START)
    store, model = filled_store(clock)
    moment = clock.now()
    path = tmp_path / "restored"
    restored = Volume.restore(store, to=moment, path=path, clock=clock, durability="os")
    after = TimelineModel(clock.now(), PAGE)
    after.events = [(clock.now(), dict(model.at(moment)))]
    rng = random.Random(4)
    commit_every(restored, after, rng, 30)
    restored.close()
    clock.advance(10)
    attached = clock.now()
    reopened = Volume.open(path, clock=clock, backup=tmp_path / "second")
    commit_every(reopened, after, rng, 10)
    assert reopened.stage_backup(), reopened.status()["backup"]["last_error"]
    assert reopened.restorable_window[0] == attached
    reopened.close()
    for when in (attached, attached + 45, clock.now()):
        again = Volume.restore(tmp_path / "second", to=when)
        assert_pages(again, after.at(when))
        again.close()
