"""Nodes whose disks cannot write (full: ENOSPC, failing: EIO).

A disk write that fails stops the node that owns it, at whatever wrote:
node.meta at create, at open (the recovery's epoch and truncation) or for a
backtrack, a log append or a checkpoint at commit, a restore's pages. The node
is then down, ``failed`` names the operation and the OS error, and so does
every quorum error raised while it is down. No raw OSError leaves the
library. The volume creates, opens, commits and backtracks whenever enough
nodes can write (4 of 6; 3 to answer a recovery), and nothing acknowledged is
lost: once space is back, a restored node reloads and catches up, and a
reopened volume holds every acknowledged commit.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from aurora_storage import SimulatedClock, Volume
from aurora_storage.config import NODE_NAMES
from aurora_storage.errors import (
    BacktrackQuorumError,
    DegradedVolumeError,
    InDoubtError,
    StorageWriteError,
    WriteQuorumError,
)
from aurora_storage.protocol import node, segment
from aurora_storage.runtime.disk import CrashPlan, RealDisk, SimulatedDisk
from aurora_storage.runtime.transport import DirectTransport

PAGE = 4096
PAGES = 32
ENOSPC = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
EIO = OSError(errno.EIO, os.strerror(errno.EIO))


def refusing(base: Any) -> Any:
    """A disk class that refuses writes while ``error`` is set: a full or failing device.

    ``refuses(operation, name)`` picks the writes that fail (by default all:
    append, write_at, sync, replace, truncate); everything else is the base
    disk's own code.
    """

    class Refusing(base):  # type: ignore[misc, valid-type]
        error: OSError | None = None
        refuses: Callable[[str, str], bool] = staticmethod(lambda operation, name: True)
        refused = 0

        def _check(self, operation: str, name: str) -> None:
            if self.error is not None and self.refuses(operation, name):
                self.refused += 1
                raise OSError(self.error.errno, self.error.strerror)

        def append(self, name: str, data: Any) -> int:
            self._check("append", name)
            return int(super().append(name, data))

        def write_at(self, name: str, offset: int, data: Any) -> None:
            self._check("write_at", name)
            super().write_at(name, offset, data)

        def sync(self, name: str) -> None:
            self._check("sync", name)
            super().sync(name)

        def replace(self, name: str, data: bytes) -> None:
            self._check("replace", name)
            super().replace(name, data)

        def truncate(self, name: str, size: int) -> None:
            self._check("truncate", name)
            super().truncate(name, size)

        def link(self, name: str, new_name: str) -> None:
            self._check("link", new_name)
            super().link(name, new_name)

    return Refusing


FullSimulatedDisk = refusing(SimulatedDisk)
FullRealDisk = refusing(RealDisk)


def reason(error: OSError) -> str:
    return f"[Errno {error.errno}] {error.strerror}"


def simulated_disks(plan: CrashPlan | None = None) -> dict[str, Any]:
    return {name: FullSimulatedDisk(i, plan) for i, name in enumerate(NODE_NAMES)}


def create_on(disks: dict[str, Any], **options: Any) -> Volume:
    return Volume.create(
        disks=disks,
        page_size=PAGE,
        segment_size=PAGE * 8,
        capacity=PAGE * PAGES,
        transport=DirectTransport(sync_threads=0),
        **options,
    )


def reopen_on(volume: Volume, disks: dict[str, Any]) -> Volume:
    return Volume.open(
        disks=disks,
        options=volume.options,
        volume_id=volume.volume_id,
        transport=DirectTransport(sync_threads=0),
        clock=volume.clock,
    )


def commit(volume: Volume, page_no: int, data: bytes, expected: dict[int, bytes]) -> None:
    with volume.transaction() as tx:
        tx.write(page_no, 0, data)
    expected[page_no] = data  # acknowledged


def fill(volume: Volume, commits: int, expected: dict[int, bytes], tag: str = "c") -> None:
    for i in range(commits):
        commit(volume, (i * 7) % PAGES, f"{tag}{i:04d}".encode(), expected)


def assert_holds(volume: Volume, expected: dict[int, bytes]) -> None:
    for page_no, data in expected.items():
        assert volume.read_page(page_no)[: len(data)] == data, f"page {page_no}"


def assert_failed_and_named(volume: Volume, names: list[str], what: str, error: OSError) -> None:
    status = {entry["name"]: entry for entry in volume.status()["nodes"]}
    for name in NODE_NAMES:
        if name in names:
            assert volume.nodes[name].failed == f"{what} failed: {reason(error)}", name
            assert status[name]["failed"] == volume.nodes[name].failed
            assert not status[name]["up"]
        else:
            assert not volume.nodes[name].failed and status[name]["up"], name


def assert_names(message: str, names: list[str], what: str, error: OSError) -> None:
    for name in names:
        assert f"{name} ({what} failed: {reason(error)})" in message, (name, message)


@pytest.mark.parametrize("durability", ["os", "fsync"])
@pytest.mark.parametrize("full", [1, 2, 3])
def test_open_with_full_disks(tmp_path: Path, durability: str, full: int) -> None:
    """The recovery writes each node's new epoch and truncation to node.meta: a full
    disk stops that node. With four nodes left the volume opens; with three the
    truncation lacks a write quorum: the volume opens degraded (reads, no writes) and
    names them; once space is back, the next commit puts the truncation on six nodes."""
    path = tmp_path / "v"
    expected: dict[int, bytes] = {}
    volume = Volume.create(
        path, page_size=PAGE, segment_size=PAGE * 8, capacity=PAGE * PAGES, durability=durability
    )
    fill(volume, 12, expected)
    volume.close()
    mode = "fsync" if durability == "fsync" else "os"
    disks = {name: FullRealDisk(path / "nodes" / name, mode) for name in NODE_NAMES}
    victims = list(NODE_NAMES[:full])
    for name in victims:
        disks[name].error = ENOSPC
    if full <= 2:
        opened = Volume.open(path, disks=disks)
        assert_failed_and_named(opened, victims, "metadata write", ENOSPC)
        assert_holds(opened, expected)
        commit(opened, 1, b"after the open", expected)
        opened.close()
    else:
        opened = Volume.open(path, disks=disks)
        assert_holds(opened, expected)
        with pytest.raises(DegradedVolumeError) as caught:
            commit(opened, 1, b"refused", expected)
        assert "the truncation reached 3 nodes; 4 needed" in str(caught.value)
        assert_names(str(caught.value), victims, "metadata write", ENOSPC)
        for name in victims:
            disks[name].error = None
        # The stopped nodes come back only when reloaded: still degraded.
        with pytest.raises(DegradedVolumeError):
            commit(opened, 1, b"refused", expected)
        opened.close()
    reopened = Volume.open(path)  # space is back
    assert not any(node.failed for node in reopened.nodes.values())
    assert_holds(reopened, expected)
    reopened.close()


@pytest.mark.parametrize("error", [ENOSPC, EIO], ids=["ENOSPC", "EIO"])
@pytest.mark.parametrize("full", [1, 2, 3])
def test_commit_with_full_disks(error: OSError, full: int) -> None:
    """A log append that fails stops its node at once; the commit goes on with the
    others. Three such nodes leave no write quorum: WriteQuorumError names them
    with the OS error, and the commit becomes durable once they are back."""
    disks = simulated_disks()
    volume = create_on(disks)
    expected: dict[int, bytes] = {}
    fill(volume, 8, expected)
    victims = list(NODE_NAMES[-full:])
    for name in victims:
        disks[name].error = error
    if full <= 2:
        commit(volume, 3, b"four of six wrote", expected)
    else:
        with pytest.raises(WriteQuorumError) as caught, volume.transaction() as tx:
            tx.write(3, 0, b"three of six wrote")
        assert_names(str(caught.value), victims, "write", error)
    assert_failed_and_named(volume, victims, "write", error)
    for name in victims:
        disks[name].error = None
        volume.cluster.restore_node(name)  # reload, re-verify, catch up from peers
    assert not any(node.failed for node in volume.nodes.values())
    if full > 2:
        expected[3] = b"three of six wrote"  # in doubt, then durable: its frames returned
    fill(volume, 4, expected, "after")
    assert_holds(volume, expected)
    for disk in disks.values():
        disk.crash()
    reopened = reopen_on(volume, disks)
    assert_holds(reopened, expected)


@pytest.mark.parametrize("durability", ["os", "fsync"])
def test_commit_on_three_full_real_disks(tmp_path: Path, durability: str) -> None:
    path = tmp_path / "v"
    mode = "fsync" if durability == "fsync" else "os"
    volume = Volume.create(
        path,
        page_size=PAGE,
        segment_size=PAGE * 8,
        capacity=PAGE * PAGES,
        durability=durability,
        disks={name: FullRealDisk(path / "nodes" / name, mode) for name in NODE_NAMES},
    )
    expected: dict[int, bytes] = {}
    fill(volume, 5, expected)
    victims = list(NODE_NAMES[:3])
    for name in victims:
        volume.nodes[name].disk.error = ENOSPC  # type: ignore[union-attr]
    with pytest.raises(WriteQuorumError) as caught, volume.transaction() as tx:
        tx.write(2, 0, b"in doubt")
    assert_names(str(caught.value), victims, "write", ENOSPC)
    assert volume.vdl < volume.allocated_lsn, "the commit stays invisible"
    volume.close()  # the failed nodes write nothing more; close does not raise
    reopened = Volume.open(path)
    assert_holds(reopened, expected)
    reopened.close()


@pytest.mark.parametrize("full", [1, 3])
def test_create_on_full_disks(full: int) -> None:
    disks = simulated_disks()
    victims = list(NODE_NAMES[:full])
    for name in victims:
        disks[name].error = ENOSPC
    if full == 3:
        with pytest.raises(StorageWriteError) as caught:
            create_on(disks)
        assert "node.meta of the new volume reached 3 of 6 nodes, 4 needed" in str(caught.value)
        assert_names(str(caught.value), victims, "metadata write", ENOSPC)
        return
    volume = create_on(disks)
    assert_failed_and_named(volume, victims, "metadata write", ENOSPC)
    expected: dict[int, bytes] = {}
    fill(volume, 4, expected)
    volume.cluster.restore_node(victims[0])  # still full: it cannot record its empty start
    assert_failed_and_named(volume, victims, "metadata write", ENOSPC)
    disks[victims[0]].error = None
    volume.cluster.restore_node(victims[0])  # starts empty and catches up
    assert not volume.nodes[victims[0]].failed
    assert_holds(volume, expected)


def test_a_checkpoint_on_a_full_disk_stops_only_its_node(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(segment, "COALESCE_RECORD_BYTES", 256)
    monkeypatch.setattr(node, "CHECKPOINT_EVERY_FRAMES", 2)
    monkeypatch.setattr(node, "META_EVERY_FRAMES", 2)
    disks = simulated_disks()
    victim = NODE_NAMES[4]
    disks[victim].error = ENOSPC
    disks[victim].refuses = lambda operation, name: name.endswith(".pages")
    volume = create_on(disks)
    expected: dict[int, bytes] = {}
    fill(volume, 40, expected)
    assert disks[victim].refused, "the node tried to checkpoint"
    assert_failed_and_named(volume, [victim], "checkpoint", ENOSPC)
    assert any(name.endswith(".pages") for name in disks[NODE_NAMES[0]].list())
    assert_holds(volume, expected)


@pytest.mark.parametrize("suffix", [".img", ".idx"])
def test_a_full_disk_during_a_page_store_write_keeps_the_last_checkpoint(
    suffix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The node's store writes fail after its first checkpoints: it stops, named with its
    OS error; once it has room again it reopens from its last checkpoint, whole."""
    monkeypatch.setattr(segment, "COALESCE_RECORD_BYTES", 256)
    monkeypatch.setattr(node, "CHECKPOINT_EVERY_FRAMES", 2)
    monkeypatch.setattr(node, "META_EVERY_FRAMES", 2)
    disks = simulated_disks()
    victim = NODE_NAMES[2]
    volume = create_on(disks)
    expected: dict[int, bytes] = {}
    fill(volume, 30, expected)
    assert any(name.endswith(".img") for name in disks[victim].list()), "a checkpoint was taken"
    disks[victim].error = ENOSPC
    disks[victim].refuses = lambda operation, name: name.endswith(suffix)
    fill(volume, 30, expected, "later")
    assert disks[victim].refused, "the node tried to write its page store"
    assert_failed_and_named(volume, [victim], "checkpoint", ENOSPC)
    assert_holds(volume, expected)
    volume.close()
    disks[victim].error = None
    again = reopen_on(volume, disks)
    report = again.nodes[victim].load_report
    assert not report.findings, report.problems()  # its checkpoint and store load whole
    assert_holds(again, expected)
    again.close()


@pytest.mark.parametrize("suffix", [".hist", ".base.img", ".base.idx"])
def test_a_full_disk_while_history_goes_to_disk_keeps_the_last_checkpoint(
    suffix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A node whose disk refuses a history file or its base store, as a checkpoint folds
    ahead of the backtrack window: it stops, named with its OS error; with room again
    it reopens from its last checkpoint, and a backtrack reaches back as before."""
    monkeypatch.setattr(node, "HOT_BYTES_MAX", 512)
    clock = SimulatedClock(1_000_000.0)
    disks = simulated_disks()
    victim = NODE_NAMES[3]
    volume = create_on(disks, clock=clock, backtrack_window=600)
    expected: dict[int, bytes] = {}
    early: dict[int, bytes] = {}
    for round_ in range(40):  # past the window: the base moves on and is written
        clock.advance(30)
        fill(volume, 3, expected, f"r{round_:02d}")
        if round_ == 30:
            early, early_time = dict(expected), clock.now()
    assert any(name.endswith(suffix) for name in disks[victim].list()), suffix
    disks[victim].error = ENOSPC
    disks[victim].refuses = lambda operation, name: name.endswith(suffix)
    for round_ in range(40, 60):
        clock.advance(10)
        fill(volume, 3, expected, f"r{round_:02d}")
    assert disks[victim].refused, "the node tried to keep its history"
    assert_failed_and_named(volume, [victim], "checkpoint", ENOSPC)
    assert_holds(volume, expected)
    volume.close()
    disks[victim].error = None
    again = reopen_on(volume, disks)
    assert not again.nodes[victim].failed
    assert_holds(again, expected)
    clock.advance(5)
    again.backtrack(early_time)
    assert_holds(again, early)
    again.close()


def test_a_backtrack_that_three_full_disks_refuse_names_them() -> None:
    clock = SimulatedClock(1_000_000.0)
    disks = simulated_disks()
    volume = create_on(disks, clock=clock, backtrack_window=3600)
    expected: dict[int, bytes] = {}
    fill(volume, 3, expected)
    middle = clock.now()
    clock.advance(10)
    fill(volume, 3, expected, "later")
    victims = list(NODE_NAMES[1:4])
    for name in victims:
        disks[name].error = ENOSPC
    with pytest.raises(BacktrackQuorumError) as caught:
        volume.backtrack(middle)
    assert "reached 3 nodes, 4 needed" in str(caught.value)
    assert caught.value.in_doubt, "three full disks cannot take the old history back either"
    assert_names(str(caught.value), victims, "metadata write", ENOSPC)
    assert_holds(volume, expected)  # the history did not change


@pytest.mark.parametrize("full", [1, 3])
def test_restore_onto_full_disks(tmp_path: Path, full: int) -> None:
    clock = SimulatedClock(1_000_000.0)
    source = Volume.create(
        tmp_path / "source",
        page_size=PAGE,
        segment_size=PAGE * 8,
        capacity=PAGE * PAGES,
        clock=clock,
        backup=str(tmp_path / "backup"),
    )
    expected: dict[int, bytes] = {}
    fill(source, 6, expected)
    clock.advance(10)
    assert source.stage_backup()
    _, latest = source.restorable_window
    source.close()
    disks = simulated_disks()
    victims = list(NODE_NAMES[-full:])
    for name in victims:
        disks[name].error = ENOSPC
        disks[name].refuses = lambda operation, name: name.startswith("pg-")
    if full == 3:
        with pytest.raises(StorageWriteError) as caught:
            Volume.restore(str(tmp_path / "backup"), to=latest, disks=disks)
        assert "the restored pages reached 3 of 6 nodes, 4 needed" in str(caught.value)
        assert_names(str(caught.value), victims, "restore write", ENOSPC)
        return
    restored = Volume.restore(str(tmp_path / "backup"), to=latest, disks=disks)
    assert_failed_and_named(restored, victims, "restore write", ENOSPC)
    assert_holds(restored, expected)
    commit(restored, 2, b"after the restore", expected)
    assert_holds(restored, expected)


def test_close_with_a_full_disk_stops_that_node_and_releases_the_folder(tmp_path: Path) -> None:
    path = tmp_path / "v"
    disks = {name: FullRealDisk(path / "nodes" / name, "os") for name in NODE_NAMES}
    volume = Volume.create(
        path,
        page_size=PAGE,
        segment_size=PAGE * 8,
        capacity=PAGE * PAGES,
        durability="os",
        disks=disks,
    )
    expected: dict[int, bytes] = {}
    fill(volume, 5, expected)
    disks[NODE_NAMES[0]].error = ENOSPC
    disks[NODE_NAMES[0]].refuses = lambda operation, name: operation != "sync"  # "os": no syncs
    volume.close()
    assert volume.nodes[NODE_NAMES[0]].failed == f"metadata write failed: {reason(ENOSPC)}"
    reopened = Volume.open(path)
    assert_holds(reopened, expected)
    reopened.close()


@pytest.mark.parametrize("full_at", range(1, 60, 4))
def test_disks_that_fill_up_at_any_operation_lose_nothing_acknowledged(full_at: int) -> None:
    """Three nodes' disks (one per AZ) fill up at the chosen disk operation of a run of
    commits (appends, syncs, node.meta writes): each commit returns or raises
    WriteQuorumError naming the stopped nodes, and once space is back a reopened
    volume holds every acknowledged commit (an in-doubt one may or may not show)."""
    plan = CrashPlan()
    disks = simulated_disks(plan)
    volume = create_on(disks)
    victims = list(NODE_NAMES[::2])
    expected: dict[int, bytes] = {}
    fill(volume, 3, expected)  # pages 0, 7, 14
    in_doubt: dict[int, bytes] = {}
    refused: list[int] = []
    start = plan.operations
    for i in range(12):
        if plan.operations - start >= full_at:
            for name in victims:
                disks[name].error = ENOSPC
        page_no, data = 16 + i, f"run {i:02d}".encode()
        try:
            commit(volume, page_no, data, expected)
        except InDoubtError:
            assert in_doubt, "refused only after a commit went in doubt"
            refused.append(page_no)
        except WriteQuorumError as error:
            in_doubt[page_no] = data
            stopped = [name for name in victims if volume.nodes[name].failed]
            assert len(stopped) >= 3 - 1, "a quorum is lost only to stopped nodes"
            for name in stopped:
                assert f"{name} ({volume.nodes[name].failed})" in str(error)
                assert volume.nodes[name].failed.endswith(f"failed: {reason(ENOSPC)}")
    assert in_doubt or full_at > 40, "the disks filled up during the run"
    for disk in disks.values():
        disk.error = None
        disk.crash()
    reopened = reopen_on(volume, disks)
    assert not any(n.failed for n in reopened.nodes.values())
    assert_holds(reopened, expected)
    for page_no, data in in_doubt.items():
        assert reopened.read_page(page_no)[: len(data)] in (data, bytes(len(data)))
    for page_no in refused:
        assert reopened.read_page(page_no) == bytes(PAGE), "a refused commit wrote nothing"


def test_a_volume_meta_that_cannot_be_written_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """volume.meta (rewritten when a backup is attached at open) is the volume's own
    file: a disk that refuses it raises StorageWriteError naming it, and the folder
    is released."""
    from aurora_storage.runtime import folder

    path = tmp_path / "v"
    expected: dict[int, bytes] = {}
    volume = Volume.create(path, page_size=PAGE, segment_size=PAGE * 8, capacity=PAGE * PAGES)
    fill(volume, 3, expected)
    volume.close()
    refusing_meta = refusing(RealDisk)
    refusing_meta.error = ENOSPC
    refusing_meta.refuses = staticmethod(lambda operation, name: name == "volume.meta")
    monkeypatch.setattr(folder, "RealDisk", refusing_meta)
    with pytest.raises(StorageWriteError) as caught:
        Volume.open(path, backup=str(tmp_path / "backup"))
    assert str(caught.value) == f"{path / 'volume.meta'}: write failed: {reason(ENOSPC)}"
    monkeypatch.undo()
    reopened = Volume.open(path)
    assert_holds(reopened, expected)
    reopened.close()


def test_a_close_that_cannot_trim_a_log_still_closes_the_volume(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Close trims each log's preallocated zeros; a failing trim stops that node,
    closes every file all the same and releases the folder."""
    from aurora_storage.runtime import disk as disk_module

    path = tmp_path / "v"
    volume = Volume.create(path, page_size=PAGE, segment_size=PAGE * 8, capacity=PAGE * PAGES)
    expected: dict[int, bytes] = {}
    fill(volume, 12, expected)  # PGs 0 to 3
    victim = volume.nodes[NODE_NAMES[1]].disk
    assert isinstance(victim, RealDisk) and len(victim._handles) > 1
    handles = list(victim._handles.values())
    real = os.ftruncate

    def failing(descriptor: int, size: int) -> None:
        if descriptor in handles:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        real(descriptor, size)

    monkeypatch.setattr(disk_module.os, "ftruncate", failing)
    volume.close()
    monkeypatch.undo()
    assert volume.nodes[NODE_NAMES[1]].failed == f"close failed: {reason(EIO)}"
    for handle in handles:
        with pytest.raises(OSError):
            os.fstat(handle)  # closed
    reopened = Volume.open(path)
    assert not any(node.failed for node in reopened.nodes.values())
    assert_holds(reopened, expected)
    reopened.close()
