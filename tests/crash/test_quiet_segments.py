"""PGs written once and never again: a scattered workload (protocol/node.py, writer.py).

A write carries its PG's floors (retain point, gossip floor) to the PG's
segments; the acks of that write raise them again, and with no later write
only a Maintain brings them. A node on disk keeps at most HOT_BYTES_MAX of
unfolded records: past it, the least recently written segments fold theirs
and checkpoint, so their frames leave memory and their log, and their pages
are in the page store. Where their floors were held back when sent (a read
view, a backup not yet staged) or a Maintain was lost, the node asks for them
(FloorPull). Past SEGMENTS_AWAKE_MAX, quiet segments sleep and wake when used.
Pages written so must read back exactly, before and after a reopen, from
several threads at once, and a Maintain of another epoch or history changes
nothing.
"""

from __future__ import annotations

import random
import threading
from pathlib import Path

import pytest

from aurora_storage import Volume
from aurora_storage.protocol import messages as m
from aurora_storage.protocol import node, writer
from aurora_storage.protocol.node_storage import checkpoint_name, log_name
from aurora_storage.protocol.page_store import image_name
from aurora_storage.runtime.transport import DirectTransport

PAGE = 4096
PG_PAGES = 16
PGS = 400
HOT = 64 * 1024  # unfolded record bytes a node keeps: 16 pages' worth


@pytest.fixture(autouse=True)
def small_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(node, "HOT_BYTES_MAX", HOT)


def create(path: Path, **options: object) -> Volume:
    return Volume.create(
        path,
        page_size=PAGE,
        segment_size=PAGE * PG_PAGES,
        capacity=PAGE * PG_PAGES * PGS,
        durability="os",
        transport=DirectTransport(sync_threads=0),
        **options,  # type: ignore[arg-type]
    )


def sent_of(volume: Volume, kind: type[m.Message]) -> list[m.Message]:
    """Every message of ``kind`` the volume's transport sends from now on."""
    sent: list[m.Message] = []
    deliver = volume.transport.send

    def spy(source: str, destination: str, message: m.Message) -> None:
        if isinstance(message, kind):
            sent.append(message)
        deliver(source, destination, message)

    volume.transport.send = spy  # type: ignore[method-assign]
    return sent


def unfolded(storage: node.StorageNode, pgs: list[int]) -> list[int]:
    """The PGs of ``pgs`` whose segment on ``storage`` holds unfolded records (one
    asleep holds none)."""
    return [pg for pg in pgs if pg in storage.segments and storage.segments[pg].hot_bytes]


def assert_reads(volume: Volume, written: dict[int, bytes]) -> None:
    for page_no, image in written.items():
        assert volume.read_page(page_no) == image


def scatter(volume: Volume, rng: random.Random, pgs: list[int]) -> dict[int, bytes]:
    """One full page in each PG of ``pgs``, one MTR each, at a random page of the PG."""
    written = {}
    for pg_id in pgs:
        page_no = pg_id * PG_PAGES + rng.randrange(PG_PAGES)
        written[page_no] = rng.randbytes(PAGE)
        with volume.transaction() as tx:
            tx.put_page(page_no, written[page_no])
    return written


def test_quiet_segments_fold_checkpoint_and_leave_memory(tmp_path: Path) -> None:
    rng = random.Random(7)
    volume = create(tmp_path / "volume")
    order = rng.sample(range(PGS), PGS)
    written = scatter(volume, rng, order)
    for name, storage in volume.cluster.nodes.items():
        segments = storage.segments  # the awake ones: all 400 at the default bound
        assert storage.segment_ids() == sorted(order)
        hot = sum(segment.hot_bytes for segment in segments.values())
        # The budget, and the last pass's slack: a pass runs once half a budget more
        # was appended (the frames' headers count there, not here).
        assert hot <= HOT + HOT // 2, (name, hot)
        holding_frames = [s for s in segments.values() if s.chain_frames]
        # Only the PGs whose floors are not sent yet keep frames for gossip.
        assert len(holding_frames) <= writer.MAINTAIN_DUE + HOT // PAGE + 2, name
        quiet = [segments[pg_id] for pg_id in order[: PGS // 2] if pg_id in segments]
        assert all(s.checkpoint_lsn and not s.hot_bytes and s.store for s in quiet), name
        # Awake or asleep, their logs are empty: their records are in the page store.
        assert all(storage.disk.size(log_name(pg)) == 0 for pg in order[: PGS // 2]), name
    for page_no, image in written.items():
        assert volume.read_page(page_no) == image
    volume.close()

    again = Volume.open(tmp_path / "volume", transport=DirectTransport(sync_threads=0))
    for page_no, image in written.items():
        assert again.read_page(page_no) == image
    written.update(scatter(again, rng, order[:50]))  # a second version of some pages
    for page_no, image in written.items():
        assert again.read_page(page_no) == image
    again.close()


def test_the_writer_sends_floors_in_batches_of_pgs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(node, "HOT_BYTES_MAX", 64 * 1024 * 1024)  # no node asks (FloorPull)
    volume = create(tmp_path / "volume")
    sent = sent_of(volume, m.Maintain)
    scatter(volume, random.Random(3), list(range(writer.MAINTAIN_DUE + 1)))
    # The acks of the first 64 commits made 64 PGs due; the 65th commit sent them,
    # one Maintain per node, each naming every PG once.
    assert len(sent) == 6
    for maintain in sent:
        assert isinstance(maintain, m.Maintain)
        pg_ids = maintain.floors[::3]
        assert sorted(pg_ids) == list(range(writer.MAINTAIN_DUE))
        assert all(floor > 0 for floor in maintain.floors[2::3])
    volume.close()


def test_a_maintain_of_another_epoch_or_history_changes_nothing(tmp_path: Path) -> None:
    volume = create(tmp_path / "volume")
    scatter(volume, random.Random(5), [1, 2])
    storage = volume.cluster.nodes["az1-a"]
    segment = storage.segments[1]
    state = (segment.chain_base_lsn, segment.coalesced_lsn, segment.retain_lsn)
    far = volume.vdl + 1000
    stale = storage.handle(m.Maintain(storage.epoch - 1, (1, far, far)), "old-writer")
    assert [type(reply) for _, reply in stale] == [m.Rejected]
    newer = storage.handle(m.Maintain(storage.epoch + 1, (1, far, far)), "writer")
    assert newer == []
    other = storage.handle(m.Maintain(storage.epoch, (1, far, far), 12345), "writer")
    assert [type(reply) for _, reply in other] == [m.HistoryPull]
    assert (segment.chain_base_lsn, segment.coalesced_lsn, segment.retain_lsn) == state
    volume.close()


def test_quiet_segments_sleep_and_wake_as_they_are_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past SEGMENTS_AWAKE_MAX awake segments, a node keeps a few numbers of each quiet
    one (asleep) and loads it back when used: reads, writes, catalogs, a crash and
    recovery all see every PG as if it had stayed in memory."""
    monkeypatch.setattr(node, "SEGMENTS_AWAKE_MAX", 16)
    rng = random.Random(11)
    volume = create(tmp_path / "volume")
    order = rng.sample(range(PGS), PGS)
    written = scatter(volume, rng, order)
    for name, storage in volume.cluster.nodes.items():
        assert len(storage.segments) <= 16 + 16 // 4, name
        assert len(storage.dormant) >= PGS - writer.MAINTAIN_DUE - HOT // PAGE - 20, name
        assert storage.segment_ids() == sorted(order)
        catalog = storage._catalog()
        assert catalog[::2] == tuple(sorted(order)) and all(catalog[1::2]), name
    for page_no, image in written.items():  # every read wakes its PG on some node
        assert volume.read_page(page_no) == image
    written.update(scatter(volume, rng, order[:40]))  # writes to sleeping PGs
    for page_no, image in written.items():
        assert volume.read_page(page_no) == image
    volume.simulate_crash()

    again = Volume.open(tmp_path / "volume", transport=DirectTransport(sync_threads=0))
    for storage in again.cluster.nodes.values():
        # An open leaves them asleep too, but for those whose log holds frames (the
        # crash came before their floors or their fold).
        assert len(storage.dormant) >= PGS - writer.MAINTAIN_DUE - HOT // PAGE - 20
        assert all(segment.log_bytes for segment in storage.segments.values())
    # A page store damaged while its segment sleeps is found when it wakes: the
    # segment is set aside and serves nothing; the volume reads from the others.
    storage = again.cluster.nodes["az1-a"]
    page_no = next(p for p in sorted(written) if p // PG_PAGES in storage.dormant)
    pg_id = page_no // PG_PAGES
    store = tmp_path / "volume" / "nodes" / "az1-a" / image_name(pg_id)
    store.write_bytes(bytes(byte ^ 0x5A for byte in store.read_bytes()))
    image, problem, _ = storage.serve_read(pg_id, page_no, again.vdl, 0, ())
    assert image == b"" and problem, problem
    assert storage.segments[pg_id].failed
    assert any(image_name(pg_id) in line for line in storage.load_report.problems())
    for page_no, image in written.items():
        assert again.read_page(page_no) == image
    again.close()


def test_a_node_over_its_budget_asks_the_floors_it_lacks(tmp_path: Path) -> None:
    """A node whose unfolded records pass the budget while its quiet segments' floors
    are too old to fold them asks the writer (FloorPull), which answers with a
    Maintain of their floors as they are now; then they fold."""
    volume = create(tmp_path / "volume")
    pulls = sent_of(volume, m.FloorPull)
    with volume.read_view():  # holds every floor back while these PGs are written
        written = scatter(volume, random.Random(13), list(range(40)))
    assert all(isinstance(p, m.FloorPull) and len(p.pg_ids) <= writer.FLOOR_PULL_MAX for p in pulls)
    written.update(scatter(volume, random.Random(14), list(range(100, 140))))
    assert pulls  # over the budget, with the view's PGs unfoldable until it closed
    for storage in volume.cluster.nodes.values():
        assert not unfolded(storage, list(range(40)))
    for page_no, image in written.items():
        assert volume.read_page(page_no) == image
    volume.close()


def test_a_sleeping_segment_its_disk_cannot_read_stops_its_node(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Waking reads the segment's files: a disk that cannot read them (here the
    checkpoint file became a folder) stops that node, as a failed write does; the
    volume reads on from the other replicas."""
    monkeypatch.setattr(node, "SEGMENTS_AWAKE_MAX", 16)
    rng = random.Random(37)
    volume = create(tmp_path / "volume")
    written = scatter(volume, rng, rng.sample(range(PGS), PGS))
    storage = volume.cluster.nodes["az1-a"]
    page_no = next(p for p in sorted(written) if p // PG_PAGES in storage.dormant)
    checkpoint = tmp_path / "volume" / "nodes" / "az1-a" / checkpoint_name(page_no // PG_PAGES)
    checkpoint.unlink()
    checkpoint.mkdir()  # reading it raises IsADirectoryError, an OSError
    image, problem, _ = storage.serve_read(page_no // PG_PAGES, page_no, volume.vdl, 0, ())
    assert image == b"" and "stopped" in problem
    assert "segment load" in storage.failed
    for page_no, image in written.items():
        assert volume.read_page(page_no) == image
    volume.close()


def test_pgs_written_under_a_read_view_fold_once_it_closes(tmp_path: Path) -> None:
    rng = random.Random(17)
    volume = create(tmp_path / "volume")
    order = rng.sample(range(PGS), PGS)
    pinned, later = order[: PGS // 2], order[PGS // 2 :]
    written = {}
    with volume.read_view():  # versions at its read point stay: nothing folds past it
        written.update(scatter(volume, rng, pinned))
    written.update(scatter(volume, rng, later))  # more than the budget, long after
    for name, storage in volume.cluster.nodes.items():
        hot = sum(segment.hot_bytes for segment in storage.segments.values())
        assert hot <= HOT + HOT // 2, (name, hot)
        assert not unfolded(storage, pinned), name
        assert all(storage.disk.size(log_name(pg)) == 0 for pg in pinned), name
    assert_reads(volume, written)
    volume.close()  # sends the floors still due: quiet PGs close folded
    for name in volume.cluster.nodes:
        folder = tmp_path / "volume" / "nodes" / name
        logged = [pg for pg in pinned if (folder / log_name(pg)).stat().st_size]
        assert not logged, (name, len(logged))


def test_pgs_written_before_a_staging_round_fold_once_it_staged_them(tmp_path: Path) -> None:
    rng = random.Random(19)
    volume = create(
        tmp_path / "volume",
        backup=tmp_path / "backup",
        backup_staging="inline",
        backup_staging_interval=3600.0,  # rounds only when asked
    )
    order = rng.sample(range(PGS), PGS)
    staged, later = order[: PGS // 2], order[PGS // 2 :]
    written = scatter(volume, rng, staged)  # their frames wait for the backup
    assert volume.stage_backup()  # now the backup holds them: they may fold
    written.update(scatter(volume, rng, later))
    assert volume.stage_backup()
    written.update(scatter(volume, rng, later[:8]))  # more writes, after the round
    for name, storage in volume.cluster.nodes.items():
        assert not unfolded(storage, staged), name
        assert all(storage.disk.size(log_name(pg)) == 0 for pg in staged), name
    assert_reads(volume, written)
    volume.close()


def test_a_node_that_missed_a_maintain_still_folds_its_quiet_pgs(tmp_path: Path) -> None:
    """A Maintain lost on the way (a lossy link, a node briefly cut off): the node asks
    again, else the PGs it named keep their records unfolded on that node for good."""
    rng = random.Random(29)
    volume = create(tmp_path / "volume")
    deliver = volume.transport.send
    lost: list[m.Maintain] = []

    def lossy(source: str, destination: str, message: m.Message) -> None:
        if isinstance(message, m.Maintain) and destination == "az1-a" and not lost:
            lost.append(message)  # the first Maintain to az1-a never arrives
            return
        deliver(source, destination, message)

    volume.transport.send = lossy  # type: ignore[method-assign]
    written = scatter(volume, rng, rng.sample(range(PGS), PGS))
    assert lost
    assert not unfolded(volume.cluster.nodes["az1-a"], list(lost[0].floors[::3]))
    assert_reads(volume, written)
    volume.close()


def test_a_scan_after_a_reopen_keeps_few_segments_awake(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A direct transport's reads call a node's serve_read, which wakes the PG's
    segment: a volume that only reads must not end with every segment it read awake."""
    monkeypatch.setattr(node, "SEGMENTS_AWAKE_MAX", 16)
    rng = random.Random(23)
    volume = create(tmp_path / "volume")
    written = scatter(volume, rng, rng.sample(range(PGS), PGS))
    volume.close()

    again = Volume.open(tmp_path / "volume", transport=DirectTransport(sync_threads=0))
    # Awake after the open: the segments whose logs hold frames (they cannot sleep).
    before = {name: len(storage.segments) for name, storage in again.cluster.nodes.items()}
    assert all(len(storage.dormant) > PGS // 2 for storage in again.cluster.nodes.values())
    assert_reads(again, dict(sorted(written.items())))  # reads only: no message to a node
    awake = {name: len(storage.segments) for name, storage in again.cluster.nodes.items()}
    assert all(awake[name] <= max(before[name], 16 + 16 // 4) for name in awake), (before, awake)
    again.close()


def test_status_counts_sleeping_segments(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """status() names every segment a node holds, asleep or awake."""
    monkeypatch.setattr(node, "SEGMENTS_AWAKE_MAX", 16)
    rng = random.Random(31)
    volume = create(tmp_path / "volume")
    scatter(volume, rng, rng.sample(range(PGS), PGS))
    assert all(storage.dormant for storage in volume.cluster.nodes.values())
    counts = {row["name"]: row["segments"] for row in volume.status()["nodes"]}
    assert counts == {name: PGS for name in volume.cluster.nodes}, counts
    volume.close()


def test_threads_writing_and_reading_scattered_pgs_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Four threads each write their own scattered PGs and read back what they wrote,
    while segments fold, checkpoint, sleep and wake under them: every read sees the
    thread's last write, and so does a reopen."""
    monkeypatch.setattr(node, "SEGMENTS_AWAKE_MAX", 16)
    volume = create(tmp_path / "volume")
    order = random.Random(41).sample(range(PGS), PGS)
    written: dict[int, bytes] = {}
    errors: list[BaseException] = []

    def worker(number: int) -> None:
        rng = random.Random(number)
        mine = order[number::4]
        try:
            for round_ in range(2):  # a second version of each page, after the first slept
                for pg_id in mine:
                    page_no = pg_id * PG_PAGES + number
                    image = rng.randbytes(PAGE)
                    with volume.transaction() as tx:
                        tx.put_page(page_no, image)
                    written[page_no] = image
                    previous = mine[max(0, mine.index(pg_id) - 7)] * PG_PAGES + number
                    if round_ or previous != page_no:
                        assert volume.read_page(previous) == written[previous]
        except BaseException as error:  # the main thread raises it
            errors.append(error)

    threads = [threading.Thread(target=worker, args=(number,)) for number in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors[0]
    assert len(written) == PGS
    assert any(storage.dormant for storage in volume.cluster.nodes.values())
    assert_reads(volume, written)
    volume.close()
    again = Volume.open(tmp_path / "volume", transport=DirectTransport(sync_threads=0))
    assert_reads(again, written)
    again.close()


def test_segments_that_cannot_sleep_are_not_looked_at_for_every_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past the bound, a node whose awake segments all hold unfolded records (nothing
    folds: the budget is large) looks at them for sleep a few times per segment in
    all, not once per message: a sleep pass that frees nothing backs off."""
    monkeypatch.setattr(node, "SEGMENTS_AWAKE_MAX", 16)
    monkeypatch.setattr(node, "HOT_BYTES_MAX", 1 << 30)
    looked = {"count": 0}
    may_sleep = node.StorageNode._may_sleep

    def counted(self: node.StorageNode, segment: object) -> bool:
        looked["count"] += 1
        return may_sleep(self, segment)  # type: ignore[arg-type]

    monkeypatch.setattr(node.StorageNode, "_may_sleep", counted)
    volume = create(tmp_path / "volume")
    written = scatter(volume, random.Random(43), list(range(PGS)))
    assert all(len(storage.segments) == PGS for storage in volume.cluster.nodes.values())
    assert looked["count"] <= 6 * 8 * PGS, looked  # a scan per message: about 6 * 80,000
    assert_reads(volume, written)
    volume.close()
