"""Volumes on real disk: reopen, bad folders, sparse 128 TiB, damage, fencing, fsync errors."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from aurora_storage import SimulatedClock, Volume, native
from aurora_storage.config import CAPACITY_MAX, NODE_NAMES
from aurora_storage.errors import (
    CorruptionError,
    FormatVersionError,
    MissingNodeError,
    StaleEpochError,
    VolumeExistsError,
    VolumeInUseError,
    VolumeNotFoundError,
    WriteQuorumError,
)
from aurora_storage.format import frames as log
from aurora_storage.format import metadata as metafile
from aurora_storage.native.flush import Flusher
from aurora_storage.protocol import messages as m
from aurora_storage.protocol.node_storage import log_name
from aurora_storage.runtime import disk as disk_module
from aurora_storage.runtime.disk import RealDisk, SimulatedDisk
from aurora_storage.runtime.folder import VOLUME_META
from aurora_storage.runtime.transport import DirectTransport

PAGE = 4096


def small(path: Path, **options: object) -> Volume:
    return Volume.create(
        path, page_size=PAGE, segment_size=PAGE * 8, capacity=PAGE * 256, **options
    )  # type: ignore[arg-type]


def fill(volume: Volume, commits: int, start: int = 0) -> dict[int, bytes]:
    expected = {}
    for i in range(start, start + commits):
        page_no = (i * 7) % 64
        data = f"commit {i:05d}".encode()
        with volume.transaction() as tx:
            tx.write(page_no, 0, data)
        expected[page_no] = data
    return expected


def on_simulated_disks() -> tuple[Volume, dict[str, SimulatedDisk]]:
    """A small volume on six simulated disks whose syncs run inline."""
    disks = {name: SimulatedDisk(i) for i, name in enumerate(NODE_NAMES)}
    volume = Volume.create(
        disks=disks,
        page_size=PAGE,
        segment_size=PAGE * 8,
        capacity=PAGE * 64,  # type: ignore[arg-type]
        transport=DirectTransport(sync_threads=0),
    )
    return volume, disks


def test_close_and_open_keep_every_commit(tmp_path: Path) -> None:
    volume = small(tmp_path / "v")
    expected = fill(volume, 120)
    vdl = volume.vdl
    volume.close()
    reopened = Volume.open(tmp_path / "v")
    assert reopened.recovery is not None and reopened.recovery.vdl == vdl
    for page_no, data in expected.items():
        assert reopened.read_page(page_no)[: len(data)] == data
    expected.update(fill(reopened, 10, start=500))
    reopened.close()
    again = Volume.open(tmp_path / "v")
    for page_no, data in expected.items():
        assert again.read_page(page_no)[: len(data)] == data
    again.close()


@pytest.mark.parametrize("durability", ["os", "fsync"])
def test_durability_modes_reopen(tmp_path: Path, durability: str) -> None:
    volume = small(tmp_path / "v", durability=durability)
    expected = fill(volume, 20)
    volume.close()
    reopened = Volume.open(tmp_path / "v")
    assert reopened.options.durability == durability
    for page_no, data in expected.items():
        assert reopened.read_page(page_no)[: len(data)] == data
    reopened.close()


def test_bad_folders(tmp_path: Path) -> None:
    with pytest.raises(VolumeNotFoundError):
        Volume.open(tmp_path / "nothing-here")
    (tmp_path / "not-a-volume").mkdir()
    (tmp_path / "not-a-volume" / VOLUME_META).write_bytes(b"hello")
    with pytest.raises(CorruptionError) as caught:
        Volume.open(tmp_path / "not-a-volume")
    assert "metadata" in str(caught.value)
    with pytest.raises(VolumeExistsError):
        Volume.create(tmp_path / "not-a-volume")


def test_newer_format_is_refused(tmp_path: Path) -> None:
    volume = small(tmp_path / "v")
    volume.close()
    meta = tmp_path / "v" / VOLUME_META
    data = bytearray(meta.read_bytes())
    data[4] = metafile.VERSION + 1
    meta.write_bytes(bytes(data))
    with pytest.raises(FormatVersionError):
        Volume.open(tmp_path / "v")


def test_missing_node_folders(tmp_path: Path) -> None:
    volume = small(tmp_path / "v")
    expected = fill(volume, 30)
    volume.close()
    shutil.rmtree(tmp_path / "v" / "nodes" / "az2-b")
    with pytest.raises(MissingNodeError) as caught:
        Volume.open(tmp_path / "v")
    assert caught.value.nodes == ["az2-b"]
    rebuilt = Volume.open(tmp_path / "v", rebuild_missing=True)
    node = rebuilt.nodes["az2-b"]
    assert node.load_report.started_empty
    assert not node.suspect, "the empty node caught up with three peers"
    for page_no, data in expected.items():
        assert rebuilt.read_page(page_no)[: len(data)] == data
    assert all(
        segment.scl == rebuilt.pgs[pg_id].tail_lsn for pg_id, segment in node.segments.items()
    )
    rebuilt.close()


@pytest.fixture
def folder_syncs(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Path, set[str]]]:
    """Each folder fsync as (folder, the names it held then), the real fsync done too:
    a new name is durable once its folder was synced holding it."""
    synced: list[tuple[Path, set[str]]] = []
    real = disk_module.sync_folder

    def recording(folder: Path) -> None:
        synced.append((Path(folder), set(os.listdir(folder))))
        real(folder)

    monkeypatch.setattr(disk_module, "sync_folder", recording)
    return synced


def assert_durable_below(synced: list[tuple[Path, set[str]]], folder: Path, top: Path) -> None:
    """Each folder from ``folder`` up to (not including) ``top`` was synced into its parent."""
    while folder != top:
        assert any(parent == folder.parent and folder.name in names for parent, names in synced), (
            f"{folder} was never made durable in its parent"
        )
        folder = folder.parent


def test_a_new_volume_makes_every_new_folder_durable(
    tmp_path: Path, folder_syncs: list[tuple[Path, set[str]]]
) -> None:
    root = tmp_path / "a" / "b" / "v"
    volume = small(root)
    for name in NODE_NAMES:
        assert_durable_below(folder_syncs, root / "nodes" / name, tmp_path)
    volume.close()


def test_a_restored_volume_makes_every_new_folder_durable(
    tmp_path: Path, folder_syncs: list[tuple[Path, set[str]]]
) -> None:
    clock = SimulatedClock(1_000_000.0)
    source = small(tmp_path / "source", clock=clock, backup=str(tmp_path / "backup"))
    expected = fill(source, 5)
    clock.advance(10)
    assert source.stage_backup()
    _, latest = source.restorable_window
    source.close()
    folder_syncs.clear()
    root = tmp_path / "r" / "restored"
    restored = Volume.restore(str(tmp_path / "backup"), to=latest, path=root)
    for name in NODE_NAMES:
        assert_durable_below(folder_syncs, root / "nodes" / name, tmp_path)
    for page_no, data in expected.items():
        assert restored.read_page(page_no)[: len(data)] == data
    restored.close()


def test_a_rebuilt_node_folder_is_durable(
    tmp_path: Path, folder_syncs: list[tuple[Path, set[str]]]
) -> None:
    volume = small(tmp_path / "v")
    fill(volume, 5)
    volume.close()
    shutil.rmtree(tmp_path / "v" / "nodes" / "az2-b")
    folder_syncs.clear()
    Volume.open(tmp_path / "v", rebuild_missing=True).close()
    nodes = tmp_path / "v" / "nodes"
    assert_durable_below(folder_syncs, nodes / "az2-b", nodes)


def test_one_writer_at_a_time(tmp_path: Path) -> None:
    volume = small(tmp_path / "v")
    with pytest.raises(VolumeInUseError):
        Volume.open(tmp_path / "v")
    volume.close()
    Volume.open(tmp_path / "v").close()


def test_max_capacity_on_disk_is_small_and_opens_fast(tmp_path: Path) -> None:
    volume = Volume.create(tmp_path / "big", capacity=CAPACITY_MAX)
    last = volume.geometry.page_count - 1
    with volume.transaction() as tx:
        tx.write(last, 16 * 1024 - 3, b"end")
    volume.close()
    used = sum(f.stat().st_size for f in (tmp_path / "big").rglob("*") if f.is_file())
    assert used < 1024 * 1024, f"{used} bytes on disk for one page of a 128 TiB volume"
    started = time.perf_counter()
    reopened = Volume.open(tmp_path / "big")
    elapsed = time.perf_counter() - started
    assert reopened.read_page(last)[-3:] == b"end"
    assert elapsed < 30, "opening must not scale with capacity"  # generous: no timing claim
    reopened.close()


def flip_middle_bit(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10
    path.write_bytes(bytes(data))


def test_bit_flip_in_the_middle_is_repaired_not_truncated(tmp_path: Path) -> None:
    volume = small(tmp_path / "v")
    expected = fill(volume, 60)
    volume.close()
    log_file = tmp_path / "v" / "nodes" / "az1-a" / log_name(0)
    size = log_file.stat().st_size
    flip_middle_bit(log_file)
    reopened = Volume.open(tmp_path / "v")
    node = reopened.nodes["az1-a"]
    assert node.load_report.damaged_ranges == 1
    assert log_file.stat().st_size >= size, "acknowledged data is never truncated away"
    segment = node.segments[0]
    assert not segment.suspect, "the segment caught up with its peers"
    assert segment.scl == reopened.pgs[0].tail_lsn
    for page_no, data in expected.items():
        assert reopened.read_page(page_no)[: len(data)] == data
    # Its own copy, read directly, matches too (no corrupt bytes served).
    for page_no in range(8):
        own = segment.read(page_no, reopened.vdl, reopened.annulled)
        assert own == reopened.read_page(page_no)
    reopened.close()


def test_damaged_segments_do_not_vote(tmp_path: Path) -> None:
    volume = small(tmp_path / "v")
    fill(volume, 40)
    volume.close()
    for name in NODE_NAMES[:4]:
        flip_middle_bit(tmp_path / "v" / "nodes" / name / log_name(0))
    from aurora_storage.errors import RecoveryError

    with pytest.raises(RecoveryError) as caught:
        Volume.open(tmp_path / "v")
    assert "PG 0" in str(caught.value)


def test_a_truncation_on_three_nodes_opens_the_volume_degraded(tmp_path: Path) -> None:
    """Three nodes answer the recovery (a read quorum: they say what is durable) but a
    truncation held by three nodes only could be missed by the next recovery's read
    quorum: the volume opens to serve reads and allocates nothing (DegradedVolumeError,
    naming the nodes it lacked) until four nodes take the truncation."""
    from aurora_storage.errors import DegradedVolumeError

    volume = small(tmp_path / "v")
    expected = fill(volume, 10)
    volume.close()
    damaged = {name: (tmp_path / "v" / "nodes" / name / "node.meta") for name in NODE_NAMES[3:]}
    saved = {name: meta.read_bytes() for name, meta in damaged.items()}
    for meta in damaged.values():
        meta.write_bytes(b"not node metadata")
    reopened = Volume.open(tmp_path / "v")
    for page_no, data in expected.items():
        assert reopened.read_page(page_no)[: len(data)] == data
    assert "the truncation reached 3 nodes; 4 needed" in reopened.status()["degraded"]
    allocated = reopened.allocated_lsn
    with pytest.raises(DegradedVolumeError) as caught, reopened.transaction() as tx:
        tx.write(1, 0, b"refused")
    for name in NODE_NAMES[3:]:
        assert f"{name} (cannot load: " in str(caught.value)
    assert reopened.allocated_lsn == allocated, "a degraded volume allocates nothing"
    reopened.close()
    for name, meta in damaged.items():  # the nodes are mended
        meta.write_bytes(saved[name])
    again = Volume.open(tmp_path / "v")
    assert again.status()["degraded"] == ""
    with again.transaction() as tx:
        tx.write(1, 0, b"taken")
    assert again.read_page(1)[:5] == b"taken"
    again.close()


def test_node_folder_swapped_with_another_node(tmp_path: Path) -> None:
    volume = small(tmp_path / "v")
    expected = fill(volume, 30)
    volume.close()
    nodes = tmp_path / "v" / "nodes"
    os.rename(nodes / "az1-a", nodes / "tmp")
    os.rename(nodes / "az2-a", nodes / "az1-a")
    os.rename(nodes / "tmp", nodes / "az2-a")
    reopened = Volume.open(tmp_path / "v")
    for name in ("az1-a", "az2-a"):
        assert "belongs to node" in reopened.nodes[name].failed
        assert not reopened.cluster.is_up(name)
    for page_no, data in expected.items():
        assert reopened.read_page(page_no)[: len(data)] == data
    reopened.close()


def test_stale_writer_is_fenced() -> None:
    disks = {name: SimulatedDisk(i) for i, name in enumerate(NODE_NAMES)}
    transport = DirectTransport(sync_threads=0)
    old = Volume.create(
        disks=disks,
        page_size=PAGE,
        segment_size=PAGE * 8,
        capacity=PAGE * 64,
        transport=transport,  # type: ignore[arg-type]
    )
    fill(old, 10)
    # A new writer takes over the same nodes (the old one is presumed dead).
    new = Volume(
        old.options,
        nodes=old.nodes,
        transport=transport,
        volume_id=old.volume_id,
        writer_name="writer-2",
    )
    new._recover()
    assert new.epoch > old.epoch
    with pytest.raises((StaleEpochError, WriteQuorumError)), old.transaction() as tx:
        tx.write(1, 0, b"stale")
    assert sum(node.rejected_requests for node in old.nodes.values()) >= 4
    with new.transaction() as tx:
        tx.write(1, 0, b"fresh")
    assert new.read_page(1)[:5] == b"fresh"
    # A frame the fenced writer built (old epoch, LSN above the truncation) that
    # reaches a node by gossip is refused, not chained.
    pg = old.pgs[0]
    stale_lsn = old.allocated_lsn + 1
    body = bytearray(log.pack_record(0, 0, 1, log.KIND_WRITE, b"stale", 0))
    native.stamp(body, PAGE, stale_lsn, pg.tail_lsn, True, 0.0)
    frame = log.encode_frame(0, old.epoch, pg.tail_lsn, stale_lsn, stale_lsn, 1, body)
    node = new.nodes["az3-b"]
    before = node.segments[0].counters.frames_annulled
    node.handle(m.GossipPush("az3-a", 0, stale_lsn, (frame,)), "az3-a")
    assert node.segments[0].counters.frames_annulled == before + 1
    assert new.read_page(1)[:5] == b"fresh"


def test_fsync_error_gives_no_ack_and_the_node_reloads() -> None:
    volume, disks = on_simulated_disks()
    fill(volume, 5)
    for name in NODE_NAMES[:3]:
        disks[name].sync_error = OSError(5, "Input/output error")
    with pytest.raises(WriteQuorumError), volume.transaction() as tx:
        tx.write(2, 0, b"only three synced")
    for name in NODE_NAMES[:3]:
        assert volume.nodes[name].failed.startswith("fsync failed")
        assert not volume.cluster.is_up(name)
    for name in NODE_NAMES[:3]:
        volume.cluster.restore_node(name)
    assert volume.read_page(2)[:17] == b"only three synced"
    for name in NODE_NAMES[:3]:
        node = volume.nodes[name]
        assert not node.failed
        assert node.segments[0].scl == volume.pgs[0].tail_lsn


def test_a_write_error_stops_the_node_and_it_reloads() -> None:
    """A log append that fails (a full or failing disk) stops that node at once: it acks
    nothing more, the commit goes on with the others, and a restart reloads it."""
    volume, disks = on_simulated_disks()
    fill(volume, 5)
    for name in NODE_NAMES[:2]:
        disks[name].append_error = OSError(28, "No space left on device")
    with volume.transaction() as tx:
        tx.write(2, 0, b"four of six wrote")
    for name in NODE_NAMES[:2]:
        assert volume.nodes[name].failed.startswith("write failed")
        assert not volume.cluster.is_up(name)
        assert volume.pgs[0].scls[name] < volume.pgs[0].tail_lsn, "no ack from a stopped node"
    with volume.transaction() as tx:
        tx.write(3, 0, b"and again")
    for name in NODE_NAMES[:2]:
        volume.cluster.restore_node(name)
        node = volume.nodes[name]
        assert not node.failed
        assert node.segments[0].scl == volume.pgs[0].tail_lsn
    assert volume.read_page(2)[:17] == b"four of six wrote"
    assert volume.read_page(3)[:9] == b"and again"


def test_nodes_on_one_file_system_share_one_flush(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    flushes: list[tuple[list[int], list[bool]]] = []
    original = Flusher.start

    def recording(self: Flusher, fds: list[int], whole: list[bool]) -> None:
        flushes.append((list(fds), list(whole)))
        original(self, fds, whole)

    monkeypatch.setattr(Flusher, "start", recording)
    volume = small(tmp_path / "v")
    assert volume._group_sync, "six node folders on one file system"
    fill(volume, 20)
    assert 1 <= len(flushes) <= 20, f"{len(flushes)} flushes for 20 commits on six nodes"
    for fds, _ in flushes:
        assert len(fds) % 6 == 0 and len(set(fds)) == len(fds), "each PG's log on six nodes"
    volume.close()
    assert not small(tmp_path / "w", durability="os")._group_sync


def test_each_append_kicks_the_shared_flusher(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kicked: list[int] = []
    monkeypatch.setattr(Flusher, "kick", lambda self, descriptor: kicked.append(descriptor))
    volume = small(tmp_path / "v")
    with volume.transaction() as tx:
        tx.write(1, 0, b"kick")
    logs = []
    for node in volume.nodes.values():
        assert isinstance(node.disk, RealDisk)
        logs.append(node.disk._handles[log_name(0)])
    assert sorted(kicked) == sorted(logs), "each node's log, once, after its frame"
    volume.close()


def test_a_log_is_flushed_whole_until_its_size_is_durable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new or grown file needs its metadata flushed; later appends fill
    preallocated blocks, and only they may be flushed as data alone."""
    marks: list[list[bool]] = []
    original = Flusher.start

    def recording(self: Flusher, fds: list[int], whole: list[bool]) -> None:
        marks.append(list(whole))
        original(self, fds, whole)

    monkeypatch.setattr(Flusher, "start", recording)
    volume = small(tmp_path / "v")
    for i in range(3):
        with volume.transaction() as tx:
            tx.write(1, 0, f"page one, commit {i}".encode())  # PG 0 every time
    assert marks[0] == [True] * 6, "the first flush of six new logs carries their sizes"
    assert marks[1:] == [[False] * 6] * 2, "appends into preallocated blocks: data only"
    volume.close()


def test_a_flush_settles_only_the_marks_of_the_file_it_flushed(tmp_path: Path) -> None:
    """A checkpoint may replace a log while a flush of the old file runs unlocked,
    and the new file may grow before that flush settles. The old flush made the
    old file's size durable, not the new one's: the new file stays marked whole."""
    disk = RealDisk(tmp_path, "fsync")
    disk.append("pg.log", b"old frames")  # a new file: its size needs a whole flush
    [(name, _, generation, growths, whole)] = disk.flush_targets(["pg.log"])
    assert growths == 1 and whole
    disk.replace("pg.log", disk.read("pg.log"))  # the checkpoint's new log
    disk.append("pg.log", b"a frame that grows the new file")
    assert disk.flush_targets(["pg.log"])[0][3] == 1
    disk.flushed(name, generation, growths)  # the old flush succeeded
    [(_, _, _, growths_now, whole_now)] = disk.flush_targets(["pg.log"])
    assert growths_now == 1 and whole_now, "the new file's growth is not durable yet"
    disk.close()


def test_a_log_replaced_during_its_flush_is_still_flushed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The flush runs unlocked: another thread's checkpoint may close a log's
    descriptor meanwhile, and a new file may take its number. The flush works on
    descriptors of its own, so it neither fails nor syncs the wrong file."""
    volume = small(tmp_path / "v")
    fill(volume, 3)
    disk = volume.nodes[NODE_NAMES[0]].disk
    assert isinstance(disk, RealDisk)
    original = Flusher.start

    def replace_then_start(self: Flusher, fds: list[int], whole: list[bool]) -> None:
        # As if the checkpoint ran just before the flusher's thread got to the files.
        disk.replace(log_name(0), disk.read(log_name(0)))  # closes the disk's descriptor
        original(self, fds, whole)

    monkeypatch.setattr(Flusher, "start", replace_then_start)
    with volume.transaction() as tx:
        tx.write(1, 0, b"flushed while replaced")
    monkeypatch.setattr(Flusher, "start", original)
    assert not any(node.failed for node in volume.nodes.values())
    assert volume.read_page(1)[:22] == b"flushed while replaced"
    volume.close()


def test_nodes_syncing_alone_use_their_own_descriptors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a shared flush (AURORA_STORAGE_FLUSH=each) each node's job fdatasyncs
    descriptors it took under the lock; an error stops that node alone."""
    from aurora_storage.runtime import sync as node_module

    monkeypatch.setenv("AURORA_STORAGE_FLUSH", "each")
    volume = small(tmp_path / "v")
    assert not volume._group_sync
    expected = fill(volume, 4)
    synced: list[int] = []
    real = node_module.datasync

    def failing_once(descriptor: int) -> None:
        synced.append(descriptor)
        if len(synced) == 1:
            raise OSError(5, "Input/output error")
        real(descriptor)

    monkeypatch.setattr(node_module, "datasync", failing_once)
    with volume.transaction() as tx:
        tx.write(5, 0, b"five of six")
    expected[5] = b"five of six"
    volume.transport.wait_for_syncs()
    failed = [name for name, node in volume.nodes.items() if node.failed]
    assert len(failed) == 1 and volume.nodes[failed[0]].failed.startswith("fsync failed")
    handles = {h for n in volume.nodes.values() for h in n.disk._handles.values()}  # type: ignore[union-attr]
    assert not handles & set(synced), "each job synced descriptors of its own"
    monkeypatch.setattr(node_module, "datasync", real)
    volume.cluster.restore_node(failed[0])
    for page_no, data in expected.items():
        assert volume.read_page(page_no)[: len(data)] == data
    volume.close()


def test_a_grown_log_stays_marked_until_a_flush_succeeds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new log's size must reach the disk with a whole flush. If that flush fails
    for one node and the node is restored (its disk and descriptors kept), the log
    is flushed whole again, not as data only."""
    monkeypatch.setenv("AURORA_STORAGE_FLUSH", "writeback")
    volume = small(tmp_path / "v")
    victim = NODE_NAMES[2]
    disk = volume.nodes[victim].disk
    assert isinstance(disk, RealDisk)
    original_start, original_wait = Flusher.start, Flusher.wait
    flushes: list[list[tuple[int, bool]]] = []  # (inode, whole) per file
    fail_victim = [True]

    def start(self: Flusher, fds: list[int], whole: list[bool]) -> None:
        flushes.append([(os.fstat(fd).st_ino, w) for fd, w in zip(fds, whole, strict=True)])
        original_start(self, fds, whole)

    def wait(self: Flusher) -> list[int]:
        errors = original_wait(self)
        if not fail_victim:
            return errors
        fail_victim.clear()
        victim_file = os.fstat(disk._handles[log_name(0)]).st_ino
        return [5 if f == victim_file else e for (f, _), e in zip(flushes[-1], errors, strict=True)]

    monkeypatch.setattr(Flusher, "start", start)
    monkeypatch.setattr(Flusher, "wait", wait)
    with volume.transaction() as tx:
        tx.write(1, 0, b"first")  # five of six made it
    assert volume.nodes[victim].failed.startswith("fsync failed")
    victim_file = os.fstat(disk._handles[log_name(0)]).st_ino
    volume.cluster.restore_node(victim)
    with volume.transaction() as tx:
        tx.write(1, 0, b"second")
    marks = [w for flush in flushes[1:] for f, w in flush if f == victim_file]
    assert marks and marks[0], "the victim's growth was never made durable: flush it whole"
    others = [w for flush in flushes[1:] for f, w in flush if f != victim_file]
    assert others and not any(others), "the others' growth was: data only"
    volume.close()


def test_a_flush_that_cannot_start_stops_the_nodes_and_keeps_the_marks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AURORA_STORAGE_FLUSH", "writeback")
    volume = small(tmp_path / "v")
    original = Flusher.start
    marks: list[list[bool]] = []
    refuse = [True]

    def start(self: Flusher, fds: list[int], whole: list[bool]) -> None:
        marks.append(list(whole))
        if refuse:
            refuse.clear()
            raise MemoryError("aus_flusher_start")
        original(self, fds, whole)

    monkeypatch.setattr(Flusher, "start", start)
    with pytest.raises(WriteQuorumError), volume.transaction() as tx:
        tx.write(1, 0, b"never acknowledged")
    assert all(node.failed for node in volume.nodes.values()), "nothing was flushed"
    for name in NODE_NAMES:
        volume.cluster.restore_node(name)
    with volume.transaction() as tx:
        tx.write(1, 0, b"after the restore")
    assert marks[0] == [True] * 6 and marks[-1] == [True] * 6, "the new logs' sizes still go whole"
    assert volume.read_page(1)[:17] == b"after the restore"
    volume.close()


def test_an_error_while_indexing_still_settles_the_flush(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The flush's outcome is settled even when indexing during it raises: an EIO
    it met stops the nodes (a later flush must not be trusted instead)."""
    from aurora_storage.runtime.sync import SyncJob

    volume = small(tmp_path / "v")
    fill(volume, 3)
    original_wait = Flusher.wait
    monkeypatch.setattr(Flusher, "wait", lambda self: [5] * len(original_wait(self)))

    def failing_index(self: SyncJob) -> None:
        raise MemoryError("page log append")

    monkeypatch.setattr(SyncJob, "index", failing_index)
    with pytest.raises(MemoryError), volume.transaction() as tx:
        tx.write(2, 0, b"x")
    monkeypatch.undo()
    volume.transport.run_until(lambda: False, 0.0)  # settles what is pending
    assert all(node.failed.startswith("fsync failed") for node in volume.nodes.values())
    volume.close()


def test_a_failed_shared_flush_acknowledges_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    volume = small(tmp_path / "v")
    fill(volume, 5)
    original = Flusher.wait
    failures = [5]  # EIO, once, for every file of the flush

    def failing(self: Flusher) -> list[int]:
        errors = original(self)
        return [failures.pop()] * len(errors) if failures else errors

    monkeypatch.setattr(Flusher, "wait", failing)
    vdl = volume.vdl
    with pytest.raises(WriteQuorumError), volume.transaction() as tx:
        tx.write(2, 0, b"not acknowledged")
    assert volume.vdl == vdl
    assert all(node.failed.startswith("fsync failed") for node in volume.nodes.values())
    for name in NODE_NAMES:
        volume.cluster.restore_node(name)  # reload and re-verify from disk
    assert all(not node.failed for node in volume.nodes.values())
    with volume.transaction() as tx:
        tx.write(3, 0, b"after the failure")
    assert volume.read_page(3)[:17] == b"after the failure"
    volume.close()


def test_a_file_the_shared_flush_failed_stops_only_its_node(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    volume = small(tmp_path / "v")
    expected = fill(volume, 5)
    victim = NODE_NAMES[2]
    disk = volume.nodes[victim].disk
    assert isinstance(disk, RealDisk)
    victim_files = {os.fstat(handle).st_ino for handle in disk._handles.values()}
    original_start, original_wait = Flusher.start, Flusher.wait
    flushed: list[int] = []

    def start(self: Flusher, fds: list[int], whole: list[bool]) -> None:
        flushed[:] = [os.fstat(fd).st_ino for fd in fds]  # the flush's own descriptors
        original_start(self, fds, whole)

    def wait(self: Flusher) -> list[int]:
        errors = original_wait(self)
        return [
            5 if file in victim_files else error
            for file, error in zip(flushed, errors, strict=True)
        ]

    monkeypatch.setattr(Flusher, "start", start)
    monkeypatch.setattr(Flusher, "wait", wait)
    with volume.transaction() as tx:
        tx.write(4, 0, b"five of six made it durable")
    expected[4] = b"five of six made it durable"
    assert volume.nodes[victim].failed.startswith("fsync failed")
    assert [n for n, node in volume.nodes.items() if node.failed] == [victim]
    monkeypatch.setattr(Flusher, "wait", original_wait)
    volume.cluster.restore_node(victim)
    assert not volume.nodes[victim].failed
    for page_no, data in expected.items():
        assert volume.read_page(page_no)[: len(data)] == data
    volume.close()


def test_open_makes_every_log_durable_before_recovery(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One syncfs per node's file system, or an fdatasync per log where there is none,
    before recovery counts a single frame."""
    from aurora_storage.runtime import disk as disk_module

    volume = small(tmp_path / "v")
    expected = fill(volume, 12)
    volume.close()
    synced: list[str] = []
    recover = Volume._recover

    def recording(self: Volume) -> object:
        assert sorted(synced) == sorted(NODE_NAMES), "every node synced before recovery"
        return recover(self)

    monkeypatch.setattr(Volume, "_recover", recording)
    monkeypatch.setattr(
        disk_module, "sync_file_system", lambda path: synced.append(Path(path).name) or True
    )
    Volume.open(tmp_path / "v").close()
    synced.clear()
    descriptors: list[int] = []
    monkeypatch.setattr(disk_module, "sync_file_system", lambda path: False)
    monkeypatch.setattr(disk_module, "datasync", descriptors.append)
    monkeypatch.setattr(Volume, "_recover", recover)
    reopened = Volume.open(tmp_path / "v")
    logs = sum(1 for _ in (tmp_path / "v" / "nodes").rglob("pg-*.log"))
    assert len(descriptors) == logs, "an fdatasync per log"
    for page_no, data in expected.items():
        assert reopened.read_page(page_no)[: len(data)] == data
    reopened.close()


def test_a_log_longer_than_the_pending_limit_reloads_whole(tmp_path: Path) -> None:
    """A PG whose log holds more frames than a segment keeps waiting beyond a hole
    (segment.PENDING_FRAMES_MAX) reloads every one of them: they were acknowledged."""
    from aurora_storage.protocol import segment

    frames = segment.PENDING_FRAMES_MAX + 100
    volume = Volume.create(
        tmp_path / "v", page_size=4096, segment_size=4096 * 8, capacity=4096 * 64, durability="os"
    )
    for number in range(1, frames + 1):
        with volume.transaction() as tx:
            tx.write(0, 0, number.to_bytes(4, "little"))
    volume.close()
    reopened = Volume.open(tmp_path / "v")
    assert reopened.vdl == frames
    assert reopened.read_page(0)[:4] == frames.to_bytes(4, "little")
    assert all(node.segments[0].scl == frames for node in reopened.nodes.values())
    reopened.close()
