"""A restored volume: its pages installed at the restore point, then a volume like any other.

``Volume.restore`` materializes each PG's pages once and installs them into
all six segments at the restore point (shared in memory, copy-on-write, and
written once per node with a disk). These tests check what it builds against
a timeline model on both backends, and that the volume then behaves like
any other: commits, reads at older LSNs, backtrack, coalescing and garbage
collection, close and reopen, writer crash recovery, and a continuous backup
of its own that restores again. Replicas never see each other's writes
through the shared images, and the shared memory is counted once and let go
of once no replica borrows it.
"""

from __future__ import annotations

import random
from array import array
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aurora_storage import SimulatedClock, Volume, backup
from aurora_storage.backup.store import MemoryStore
from aurora_storage.config import NODE_NAMES
from aurora_storage.errors import (
    BackupCorruptError,
    InvalidArgumentError,
    TimeOutsideWindowError,
    VersionGoneError,
)
from aurora_storage.format.objects import KIND_PAGES, decode_object, encode_object, pages_name
from aurora_storage.protocol import node_storage, segment
from aurora_storage.sim import TimelineModel

PAGE = 4096
PAGES = 24
PAGES_PER_PG = 4
START = 1_700_000_000.0
BACKENDS = ["native", "python"]


def make(clock: SimulatedClock, store: object, **options: object) -> Volume:
    return Volume.create(
        page_size=PAGE,
        segment_size=PAGE * PAGES_PER_PG,
        capacity=PAGE * PAGES,
        clock=clock,
        backup=store,
        backup_staging_interval=30,
        **options,  # type: ignore[arg-type]
    )


def commit_random(volume: Volume, model: TimelineModel, rng: random.Random) -> None:
    """One commit of 1 to 4 changes: small writes, now and then a whole page."""
    changes = []
    for _ in range(rng.randint(1, 4)):
        page_no = rng.randrange(PAGES)
        if rng.random() < 0.2:
            changes.append((page_no, 0, rng.randbytes(PAGE)))
        else:
            data = rng.randbytes(rng.randint(1, 32))
            changes.append((page_no, rng.randrange(PAGE - len(data)), data))
    with volume.transaction() as tx:
        for page_no, offset, data in changes:
            if len(data) == PAGE:
                tx.put_page(page_no, data)
            else:
                tx.write(page_no, offset, data)
    model.commit(volume.clock.now(), changes)


def assert_pages(volume: Volume, expected: dict[int, bytes], lsn: int | None = None) -> None:
    for page_no in range(PAGES):
        assert volume.read_page(page_no, lsn) == expected.get(page_no, bytes(PAGE)), page_no


def source_history(
    seed: int, commits: int = 60, **options: object
) -> tuple[MemoryStore, TimelineModel, SimulatedClock]:
    """A backed-up volume's history: ``commits`` commits 10 s apart, staged to a store."""
    clock = SimulatedClock(START)
    store = MemoryStore()
    volume = make(clock, store, **options)
    model = TimelineModel(START, PAGE)
    rng = random.Random(seed)
    for _ in range(commits):
        clock.advance(10)
        commit_random(volume, model, rng)
    assert volume.stage_backup()  # the last round
    volume.close()
    return store, model, clock


def continued(model: TimelineModel, moment: float, now: float) -> TimelineModel:
    """A model of a volume restored at ``now`` to the state ``model`` shows at ``moment``."""
    after = TimelineModel(now, PAGE)
    after.events = [(now, dict(model.at(moment)))]
    return after


@pytest.mark.parametrize("backend", BACKENDS)
def test_restored_pages_then_new_commits(backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backup, "SNAPSHOT_EVERY_BYTES", 2048)  # snapshots and logs both
    store, model, source_clock = source_history(1, backend=backend)
    assert store.list("pages/") and store.list("log/")
    rng = random.Random(2)
    for moment in (START + 95, START + 333, source_clock.now()):
        clock = SimulatedClock(source_clock.now() + 1000)
        restored = Volume.restore(store, to=moment, clock=clock, backend=backend)
        expected = model.at(moment)
        assert_pages(restored, expected)
        assert restored.restored_from is not None
        point = restored.restored_from[1]
        assert restored.vdl == restored.allocated_lsn == restored.base_lsn == point
        for pg in restored.pgs.values():
            assert pg.tail_lsn == point and set(pg.scls.values()) == {point}
        for name in NODE_NAMES:
            for seg in restored.nodes[name].segments.values():
                assert (seg.scl, seg.chain_frames, seg.cpl_lsns) == (point, [], [point])
        # The restore point reads as the restored pages; nothing older exists.
        assert_pages(restored, expected, lsn=point)
        assert restored.read_page(0, lsn=0) == bytes(PAGE)
        written = [page_no for page_no in range(PAGES) if page_no in expected]
        with pytest.raises(VersionGoneError):
            restored.read_page(written[0], lsn=point - 1)
        after = continued(model, moment, clock.now())
        for _ in range(15):
            clock.advance(10)
            commit_random(restored, after, rng)
        assert restored.vdl > point
        assert_pages(restored, after.at(clock.now()))
        assert_pages(restored, expected, lsn=point)  # older read points still read
        restored.close()


def test_a_restore_before_the_first_commit_is_an_empty_volume() -> None:
    clock = SimulatedClock(START)
    store = MemoryStore()
    volume = make(clock, store)
    clock.advance(50)
    with volume.transaction() as tx:
        tx.write(3, 0, b"later")
    assert volume.stage_backup()  # the last round
    restored = Volume.restore(store, to=START + 10)
    assert restored.restored_from == (START + 10, 0)
    assert (restored.vdl, restored.base_lsn, restored.pgs) == (0, 0, {})
    assert restored.read_page(3) == bytes(PAGE)
    with restored.transaction() as tx:
        tx.write(3, 0, b"new")
    assert restored.read_page(3)[:3] == b"new"


@pytest.mark.parametrize("backend", BACKENDS)
def test_replicas_share_images_copy_on_write(backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    store, model, source_clock = source_history(3, backend=backend)
    moment = source_clock.now()
    expected = model.at(moment)
    restored = Volume.restore(store, to=moment, backend=backend)
    point = restored.vdl
    status = restored.status()
    # Every replica borrows every page; the memory is counted once, not six times.
    assert status["shared_bytes"] >= len(expected) * PAGE
    assert status["bytes_used"] == status["shared_bytes"]
    for entry in status["nodes"]:
        assert entry["memory_bytes"] == 0
        assert entry["shared_bytes"] == len(expected) * PAGE
    blocks = [
        bytes(block)
        for seg in restored.nodes["az1-a"].segments.values()
        for block in seg.page_log.shared_blocks()
    ]
    # Two replicas are away while the others write and coalesce every page.
    monkeypatch.setattr(segment, "COALESCE_RECORD_BYTES", 1)
    restored.cluster.fail_az("az3")
    rewritten = {page_no: bytes([page_no + 1]) * PAGE for page_no in range(PAGES)}
    for page_no, image in rewritten.items():
        with restored.transaction() as tx:
            tx.put_page(page_no, image)
    with restored.transaction() as tx:  # one more in every PG folds its last rewrite too
        for page_no in range(0, PAGES, PAGES_PER_PG):
            tx.write(page_no, 0, b"last")
            rewritten[page_no] = b"last" + rewritten[page_no][4:]
    writer = restored.nodes["az1-a"]
    assert all(seg.page_log.stats().shared_images == 0 for seg in writer.segments.values())
    assert all(seg.coalesced_lsn > point for seg in writer.segments.values())
    # The absent replicas and the blocks still hold the restored images.
    for name in ("az3-a", "az3-b"):
        away = restored.nodes[name]
        for page_no in range(PAGES):
            pg_id = page_no // PAGES_PER_PG
            image, problem, _ = away.serve_read(pg_id, page_no, point, point, ())
            assert (image, problem) == (expected.get(page_no, bytes(PAGE)), ""), page_no
    assert [
        bytes(block)
        for seg in restored.nodes["az3-a"].segments.values()
        for block in seg.page_log.shared_blocks()
    ] == blocks
    assert_pages(restored, rewritten)
    # Back, they catch up by gossip; once they coalesced too, no block is borrowed.
    restored.cluster.restore_az("az3")
    for page_no in range(PAGES):
        with restored.transaction() as tx:
            tx.write(page_no, 8, b"again")
        rewritten[page_no] = rewritten[page_no][:8] + b"again" + rewritten[page_no][13:]
    for name in ("az3-a", "az3-b"):
        for page_no in range(PAGES):
            pg_id = page_no // PAGES_PER_PG
            tail = restored.pgs[pg_id].tail_lsn  # the PG's last record: all it needs
            image, problem, _ = restored.nodes[name].serve_read(
                pg_id, page_no, restored.vdl, tail, ()
            )
            assert (image, problem) == (rewritten[page_no], ""), (name, page_no)
    status = restored.status()
    assert status["shared_bytes"] == 0
    assert all(entry["shared_bytes"] == 0 for entry in status["nodes"])
    assert_pages(restored, rewritten)
    restored.close()


@pytest.mark.parametrize("durability", ["os", "fsync"])
def test_a_restore_into_a_folder_survives_reopen_and_crash(tmp_path: Path, durability: str) -> None:
    store, model, source_clock = source_history(4)
    moment = START + 412
    expected = model.at(moment)
    clock = SimulatedClock(source_clock.now() + 100)
    path = tmp_path / "restored"
    restored = Volume.restore(store, to=moment, path=path, clock=clock, durability=durability)
    point = restored.vdl
    # Each node keeps its own copy: a checkpoint at the restore point and an empty log.
    for name in NODE_NAMES:
        folder = path / "nodes" / name
        for pg_id in restored.pgs:
            assert (folder / node_storage.log_name(pg_id)).stat().st_size == 0
            meta, images = decode_object(
                (folder / node_storage.checkpoint_name(pg_id)).read_bytes(), name, KIND_PAGES
            )
            assert (meta["cutoff"], meta["chain_lsn"], meta["cpl"]) == (point, point, point)
            for index, page_no in enumerate(meta["page_nos"]):
                image = images[index * PAGE : (index + 1) * PAGE]
                assert image == expected.get(page_no, bytes(PAGE)), (name, page_no)
    restored.close()
    reopened = Volume.open(path, clock=clock)
    assert reopened.vdl == point and reopened.base_lsn == point
    assert_pages(reopened, expected)
    after = continued(model, moment, clock.now())
    rng = random.Random(5)
    for _ in range(10):
        clock.advance(5)
        commit_random(reopened, after, rng)
    acknowledged = reopened.vdl
    reopened.simulate_crash()
    recovered = Volume.open(path, clock=clock)
    assert recovered.recovery is not None and recovered.recovery.vdl == acknowledged
    assert all(not entry.load_report.damaged_ranges for entry in recovered.nodes.values())
    assert_pages(recovered, after.at(clock.now()))
    clock.advance(5)
    commit_random(recovered, after, rng)
    assert_pages(recovered, after.at(clock.now()))
    recovered.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_backup_of_a_restored_volume_restores(backend: str) -> None:
    store, model, source_clock = source_history(6, backend=backend)
    moment = START + 301
    clock = SimulatedClock(source_clock.now() + 500)
    second = MemoryStore()
    restored = Volume.restore(
        store,
        to=moment,
        clock=clock,
        backend=backend,
        backup_to=second,
        backup_staging_interval=30,
        backtrack_window=3600,
    )
    point, created = restored.vdl, clock.now()
    after = continued(model, moment, created)
    rng = random.Random(7)
    for step in range(30):
        clock.advance(10)
        commit_random(restored, after, rng)
        if step == 20:
            target = created + 95
            restored.backtrack(target)
            after.backtrack(clock.now(), target)
    assert restored.stage_backup()
    earliest, latest = restored.restorable_window
    assert (earliest, latest) == (created, clock.now())
    # Its backup begins with every PG's pages at the restore point.
    for pg_id in restored.pgs:
        assert pages_name(pg_id, point) in second.list("pages/")
    for moment_2 in (created, created + 1, created + 150, created + 240, latest):
        again = Volume.restore(second, to=moment_2, backend=backend)
        assert_pages(again, after.at(moment_2))
        again.close()
    restored.close()


class FlakyStore(MemoryStore):
    """A store whose next round manifest fails to upload."""

    def __init__(self) -> None:
        super().__init__()
        self.fail_rounds = 1

    def put(self, name: str, data: bytes) -> None:
        if name.startswith("rounds/") and self.fail_rounds:
            self.fail_rounds -= 1
            raise OSError("the store is unreachable")
        super().put(name, data)


def test_the_base_commit_survives_a_failed_first_round() -> None:
    store, model, source_clock = source_history(14)
    moment = START + 180
    clock = SimulatedClock(source_clock.now() + 100)
    second = FlakyStore()
    restored = Volume.restore(store, to=moment, clock=clock, backup_to=second)
    created = clock.now()
    assert not restored.stage_backup()  # the base pages went up, the round did not
    assert "unreachable" in restored.status()["backup"]["last_error"]
    assert second.list("pages/") and not second.list("rounds/")
    clock.advance(10)
    with restored.transaction() as tx:
        tx.write(0, 0, b"after")
    assert restored.stage_backup()
    assert restored.restorable_window[0] == created
    again = Volume.restore(second, to=created)
    assert_pages(again, model.at(moment))


def test_a_backup_added_when_a_restored_volume_reopens(tmp_path: Path) -> None:
    store, model, source_clock = source_history(8)
    moment = START + 222
    clock = SimulatedClock(source_clock.now() + 100)
    path = tmp_path / "restored"
    restored = Volume.restore(store, to=moment, path=path, clock=clock, durability="os")
    created = clock.now()
    after = continued(model, moment, created)
    rng = random.Random(9)
    for _ in range(5):
        clock.advance(10)
        commit_random(restored, after, rng)
    restored.close()
    clock.advance(10)
    attached = clock.now()
    reopened = Volume.open(path, clock=clock, backup=str(tmp_path / "second"))
    for _ in range(5):
        clock.advance(10)
        commit_random(reopened, after, rng)
    assert reopened.stage_backup()
    earliest, latest = reopened.restorable_window
    reopened.close()
    # A backup given to a volume with history begins when it was given, with the
    # pages at the VDL the volume opened with.
    assert earliest == attached
    for moment_2 in (attached, attached + 25, latest):
        again = Volume.restore(str(tmp_path / "second"), to=moment_2)
        assert_pages(again, after.at(moment_2))
        again.close()


def test_backtrack_on_a_restored_volume() -> None:
    store, model, source_clock = source_history(10)
    moment = START + 250
    clock = SimulatedClock(source_clock.now() + 100)
    restored = Volume.restore(store, to=moment, clock=clock, backtrack_window=3600)
    created = clock.now()
    after = continued(model, moment, created)
    rng = random.Random(11)
    for _ in range(20):
        clock.advance(10)
        commit_random(restored, after, rng)
    assert restored.backtrack_window[0] == created
    end = clock.now()
    for target in (created + 55, created, end, created + 120):
        clock.advance(1)
        result = restored.backtrack(target)
        after.backtrack(clock.now(), target)
        assert_pages(restored, after.at(clock.now()))
        if target == created:
            assert (result.lsn, result.commit_time) == (restored.base_lsn, created)
    with pytest.raises(TimeOutsideWindowError):
        restored.backtrack(created - 1)
    clock.advance(10)
    commit_random(restored, after, rng)
    assert_pages(restored, after.at(clock.now()))


def test_progress_counts_every_object_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backup, "SNAPSHOT_EVERY_BYTES", 2048)
    store, model, source_clock = source_history(12)
    calls: list[tuple[int, int]] = []
    restored = Volume.restore(
        store, to=source_clock.now(), progress=lambda done, total: calls.append((done, total))
    )
    assert_pages(restored, model.at(source_clock.now()))
    total = calls[0][1]
    assert calls == [(done, total) for done in range(1, total + 1)]
    point = restored.vdl
    catalog = backup.BackupCatalog(store)
    snapshots = sum(
        any(lsn <= point for lsn, _ in catalog.snapshots.get(pg_id, []))
        for pg_id in set(catalog.logs) | set(catalog.snapshots)
    )
    assert snapshots and total > snapshots


@pytest.mark.parametrize(
    "damage", ["page list too long", "pages descend", "page of another PG", "no page list"]
)
def test_a_damaged_snapshot_is_named(damage: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Well-formed objects (checksums match) whose page list is wrong: no volume comes back."""
    monkeypatch.setattr(backup, "SNAPSHOT_EVERY_BYTES", 2048)
    store, _, source_clock = source_history(13)
    name = store.list("pages/pg-00000001/")[-1]
    meta, images = decode_object(store.get(name), name, KIND_PAGES)
    pages = list(meta["page_nos"])
    assert len(pages) >= 2
    if damage == "page list too long":
        meta["page_nos"] = [*pages, pages[-1] + 1]
    elif damage == "pages descend":
        meta["page_nos"] = pages[::-1]
    elif damage == "page of another PG":
        meta["page_nos"] = [0, *pages[1:]]
    else:
        del meta["page_nos"]
    store.objects[name] = encode_object(KIND_PAGES, images, meta)
    with pytest.raises(BackupCorruptError) as caught:
        Volume.restore(store, to=source_clock.now())
    assert caught.value.name == name


def test_only_an_empty_segment_or_volume_starts_from_images() -> None:
    volume = Volume.create(page_size=PAGE, segment_size=PAGE * PAGES_PER_PG, capacity=PAGE * PAGES)
    with volume.transaction() as tx:
        tx.write(1, 0, b"x")
    with pytest.raises(InvalidArgumentError):
        volume._start_from_images(5, {})
    used = volume.nodes["az1-a"].segments[0]
    with pytest.raises(InvalidArgumentError):
        used.start_at(5, START, [])
    fresh = volume.nodes["az1-a"].segment(2)
    layer = segment.SharedImages(array("Q", [1]), memoryview(bytes(PAGE)))
    with pytest.raises(InvalidArgumentError):
        fresh.start_at(5, START, [layer])  # page 1 is in PG 0, not PG 2


write_strategy = st.tuples(
    st.integers(0, PAGES - 1),  # page
    st.sampled_from(["write", "write", "page", "zero"]),
    st.integers(0, PAGE - 1),  # offset
    st.binary(min_size=1, max_size=24),
)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    before=st.lists(st.lists(write_strategy, min_size=1, max_size=4), min_size=1, max_size=14),
    after=st.lists(st.lists(write_strategy, min_size=1, max_size=4), max_size=8),
    fraction=st.floats(0, 1),
    snapshot_bytes=st.sampled_from([1, 4096, 1 << 30]),
    backend=st.sampled_from(BACKENDS),
)
def test_restore_then_restore_again_matches_a_model(
    before: list[list[tuple[int, str, int, bytes]]],
    after: list[list[tuple[int, str, int, bytes]]],
    fraction: float,
    snapshot_bytes: int,
    backend: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Any history, any restore point; then commits, a backup of the restored volume,
    and a restore from that backup to any time: each equals the model."""
    monkeypatch.setattr(backup, "SNAPSHOT_EVERY_BYTES", snapshot_bytes)

    def commit(
        volume: Volume, model: TimelineModel, writes: list[tuple[int, str, int, bytes]]
    ) -> None:
        changes = []
        with volume.transaction() as tx:
            for page_no, kind, offset, data in writes:
                if kind == "page":
                    image = (data * (PAGE // len(data) + 1))[:PAGE]
                    tx.put_page(page_no, image)
                    changes.append((page_no, 0, image))
                elif kind == "zero":
                    tx.zero_page(page_no)
                    changes.append((page_no, 0, bytes(PAGE)))
                else:
                    offset = min(offset, PAGE - len(data))
                    tx.write(page_no, offset, data)
                    changes.append((page_no, offset, data))
        model.commit(volume.clock.now(), changes)

    clock = SimulatedClock(START)
    store = MemoryStore()
    source = make(clock, store, backend=backend)
    model = TimelineModel(START, PAGE)
    for writes in before:
        clock.advance(20)
        commit(source, model, writes)
    assert source.stage_backup()  # the last round
    source.close()
    moment = START + (clock.now() - START) * fraction
    clock.advance(100)
    second = MemoryStore()
    restored = Volume.restore(
        store, to=moment, clock=clock, backend=backend, backup_to=second, backup_staging_interval=30
    )
    assert_pages(restored, model.at(moment))
    created = clock.now()
    model_2 = continued(model, moment, created)
    for writes in after:
        clock.advance(20)
        commit(restored, model_2, writes)
    assert_pages(restored, model_2.at(clock.now()))
    assert restored.stage_backup()
    latest = restored.restorable_window[1]
    restored.close()
    for moment_2 in (created, created + (latest - created) * fraction, latest):
        again = Volume.restore(second, to=moment_2, backend=backend)
        assert_pages(again, model_2.at(moment_2))
        again.close()
