"""Damaged node files: every kind of damage on every kind of file, on one to four nodes.

A small volume of two PGs on six simulated disks commits with checkpoints on
(logs trimmed below each segment's pages file), is reopened once (so node.meta
records a truncation and older copies of every file exist) and commits more.
Then one kind of damage hits one kind of file on 1, 2, 3 or 4 nodes. The
reopened volume must either read every page back exactly as written, keep
doing so after more commits and another reopen, and report the damage on each
node it hit; or raise RecoveryError naming the nodes it could not use. Never
AssertionError, never a message storm: each transport is bounded far below
its default, so a livelock fails fast. Up to three damaged nodes leave a read
quorum of every PG intact, so the volume must open.

The default run takes a deterministic slice (every damage and file kind on
one and on four nodes); AURORA_STORAGE_SLOW=1 runs the whole sweep.
"""

from __future__ import annotations

import copy
import os
import random
import shutil
from pathlib import Path

import pytest

from aurora_storage import Volume
from aurora_storage.config import NODE_NAMES, Geometry, VolumeOptions
from aurora_storage.errors import (
    DegradedVolumeError,
    InvalidArgumentError,
    MessageStormError,
    MissingNodeError,
    RecoveryError,
    WriteQuorumError,
)
from aurora_storage.format import frames as log
from aurora_storage.protocol import messages as m
from aurora_storage.protocol import node
from aurora_storage.protocol.node_storage import NODE_META, checkpoint_name, log_name
from aurora_storage.protocol.page_store import image_name, index_name
from aurora_storage.protocol.segment import Segment
from aurora_storage.runtime.disk import SimulatedDisk
from aurora_storage.runtime.transport import DirectTransport

PAGE = 4096
PAGES = 16  # two PGs of eight pages
DELIVERIES_MAX = 50_000  # far above what any case needs; a storm hits it at once
SLOW = os.environ.get("AURORA_STORAGE_SLOW") == "1"

DAMAGES = ("flip", "truncate", "zero", "delete", "older", "swap", "garbage", "duplicate")
FILES = (NODE_META, log_name(0), checkpoint_name(0), image_name(0), index_name(0))


def transport() -> DirectTransport:
    direct = DirectTransport(sync_threads=0)
    direct.deliveries_per_run_max = DELIVERIES_MAX
    return direct


def commit(volume: Volume, expected: dict[int, bytes], rng: random.Random, count: int) -> None:
    """Commits ``count`` writes, each applied to ``expected`` before it is sent: on
    WriteQuorumError the last one is in doubt (recovery may make it durable)."""
    for _ in range(count):
        page_no = rng.randrange(PAGES)
        data = rng.randbytes(rng.randint(1, 30))
        offset = rng.randrange(64)
        image = bytearray(expected.get(page_no, bytes(PAGE)))
        image[offset : offset + len(data)] = data
        expected[page_no] = bytes(image)
        with volume.transaction() as tx:
            tx.write(page_no, offset, data)


def reopen(options: VolumeOptions, volume_id: str, disks: dict[str, SimulatedDisk]) -> Volume:
    return Volume.open(
        disks=disks,  # type: ignore[arg-type]
        options=options,
        volume_id=volume_id,
        transport=transport(),
    )


def assert_pages(volume: Volume, expected: dict[int, bytes]) -> None:
    for page_no in range(PAGES):
        assert volume.read_page(page_no) == expected.get(page_no, bytes(PAGE)), page_no


class Built:
    """The volume's disks after two sessions, the files after the first, what was written."""

    def __init__(self) -> None:
        disks = {name: SimulatedDisk(i) for i, name in enumerate(NODE_NAMES)}
        volume = Volume.create(
            disks=disks,  # type: ignore[arg-type]
            page_size=PAGE,
            segment_size=PAGE * 8,
            capacity=PAGE * PAGES,
            transport=transport(),
        )
        rng = random.Random(1)
        self.expected: dict[int, bytes] = {}
        commit(volume, self.expected, rng, 40)
        volume.close()
        self.older = {
            name: {file: disk.read(file) for file in disk.files} for name, disk in disks.items()
        }
        second = reopen(volume.options, volume.volume_id, disks)
        commit(second, self.expected, rng, 40)
        second.close()
        self.options, self.volume_id, self.disks = volume.options, volume.volume_id, disks
        for disk in disks.values():  # every kind of file is there to damage
            assert {NODE_META, log_name(1), checkpoint_name(1), image_name(1)} <= set(disk.files)


@pytest.fixture(scope="module")
def built(trimming_often: None) -> Built:
    return Built()


def _put(disk: SimulatedDisk, name: str, data: bytes) -> None:
    disk.replace(name, data)  # the damaged bytes, as a crash would find them


def damage(
    disk: SimulatedDisk, older: dict[str, bytes], kind: str, name: str, foreign_meta: bytes
) -> None:
    """Applies one kind of damage to one file of one node.

    ``older`` holds the node's files after the first session; ``foreign_meta`` is
    another node's node.meta (what "swap" puts in place of this node's).
    """
    data = disk.read(name)
    if kind == "flip":
        flipped = bytearray(data)
        flipped[len(data) // 2] ^= 0x10
        _put(disk, name, bytes(flipped))
    elif kind == "truncate":
        _put(disk, name, data[: len(data) // 2])
    elif kind == "zero":
        quarter = len(data) // 4
        _put(disk, name, data[:quarter] + bytes(quarter) + data[2 * quarter :])
    elif kind == "delete":
        del disk.files[name]
    elif kind == "older":
        assert older[name] != data, f"{name} did not change since the first session"
        _put(disk, name, older[name])
    elif kind == "swap":
        if name == NODE_META:  # one per node: another node's takes its place
            _put(disk, name, foreign_meta)
        else:
            other_name = name.replace("pg-00000000", "pg-00000001")
            other = disk.read(other_name)
            _put(disk, other_name, data)
            _put(disk, name, other)
    elif kind == "garbage":
        _put(disk, name, data + bytes(range(1, 200)))
    elif kind == "duplicate":
        if name.endswith(".log"):
            position, size = _middle_frame(data)
            end = position + size
            _put(disk, name, data[:end] + data[position:end] + data[end:])
        else:
            _put(disk, name, data + data)
    else:
        raise AssertionError(kind)


def _middle_frame(data: bytes) -> tuple[int, int]:
    frames = []
    position = 0
    while position < len(data):
        frame = log.decode_frame(data, PAGE, 0, 8, position)
        frames.append((position, frame.size))
        position += frame.size
    assert frames, "the log holds frames"
    return frames[len(frames) // 2]


def run_case(built: Built, kind: str, name: str, count: int) -> None:
    disks = copy.deepcopy(built.disks)
    damaged = NODE_NAMES[:count]
    for index, node_name in enumerate(damaged):
        foreign_meta = built.disks[NODE_NAMES[(index + 1) % 6]].read(NODE_META)
        damage(disks[node_name], built.older[node_name], kind, name, foreign_meta)
    try:
        volume = reopen(built.options, built.volume_id, disks)
    except RecoveryError as error:  # anything else (MessageStormError...) fails the test
        assert count > 3, f"a read quorum is intact, yet: {error}"
        for node_name in damaged:
            assert node_name in str(error), "the error names every node it could not use"
        return
    assert_pages(volume, built.expected)
    for node_name in damaged:
        found = volume.nodes[node_name]
        if name in (image_name(0), index_name(0)):
            # Pages are read back from a store when used: a scrub finds the rest.
            found.scrub_stores()
        assert found.failed or found.load_report.damaged, f"{node_name}: damage not reported"
    expected = dict(built.expected)
    in_doubt = None
    try:
        commit(volume, expected, random.Random(count), 12)
    except DegradedVolumeError:
        # Three nodes could not take the recovery's truncation: the volume serves
        # reads and takes no commit (nothing was sent).
        assert count >= 3 and volume.status()["degraded"]
        expected = dict(built.expected)
    except WriteQuorumError:
        assert count >= 3, "writes go on while a write quorum is up"
        # Nothing was acknowledged; the one commit sent is in doubt: the next
        # recovery may find it on a read quorum and keep it.
        in_doubt, expected = expected, dict(built.expected)
    volume.close()
    again = reopen(built.options, built.volume_id, disks)
    pages = [again.read_page(page_no) for page_no in range(PAGES)]
    outcomes = [expected] if in_doubt is None else [expected, in_doubt]
    assert any(
        pages == [outcome.get(page_no, bytes(PAGE)) for page_no in range(PAGES)]
        for outcome in outcomes
    )
    again.close()


CASES = [(kind, name, count) for kind in DAMAGES for name in FILES for count in (1, 2, 3, 4)]
SLICE = [case for case in CASES if SLOW or case[2] in (1, 4)]


@pytest.mark.parametrize(("kind", "name", "count"), SLICE)
def test_damage_sweep(built: Built, kind: str, name: str, count: int) -> None:
    run_case(built, kind, name, count)


def assert_repaired(volume: Volume, name: str, expected: dict[int, bytes]) -> None:
    """The node's segments were rebuilt from a peer (a segment repair): none needs one
    any more, each reached its peers' SCL, and each serves the pages as they are."""
    repaired = volume.nodes[name]
    assert repaired.segments, f"{name} holds no segment"
    for pg_id, held in repaired.segments.items():
        assert not held.needs_repair and not held.failed, repaired.problems()
        peers = [volume.nodes[n].segments[pg_id].scl for n in NODE_NAMES if n != name]
        assert held.scl >= min(peers), (name, pg_id, held.scl, peers)
    for page_no, data in expected.items():
        image, problem, _ = repaired.serve_read(
            page_no // 8, page_no, volume.vdl, 0, volume.annulled
        )
        assert not problem and image[: len(data)] == data, (name, page_no, problem)


@pytest.mark.parametrize("count", [1, 3, 4])
def test_emptied_node_folders(built: Built, count: int) -> None:
    """A node folder emptied: the node knows nothing, and its peers trimmed their logs,
    so gossip cannot rebuild it; a segment repair copies each PG from a peer."""
    disks = copy.deepcopy(built.disks)
    for name in NODE_NAMES[:count]:
        disks[name].files.clear()
    try:
        volume = reopen(built.options, built.volume_id, disks)
    except RecoveryError as error:
        assert count == 4 and all(name in str(error) for name in NODE_NAMES[:count])
        return
    assert_pages(volume, built.expected)
    for name in NODE_NAMES[:count]:
        assert volume.nodes[name].load_report.started_empty
        assert_repaired(volume, name, built.expected)
    volume.close()


# --- the pieces, one at a time -----------------------------------------------------------


def test_a_pull_below_the_chain_base_gets_the_news_not_frames(built: Built) -> None:
    """A peer asked for frames it collected answers with its chain base and no frames;
    the asking segment marks itself as needing repair and asks nobody again."""
    volume = reopen(built.options, built.volume_id, copy.deepcopy(built.disks))
    peer = volume.nodes["az1-b"]
    base = peer.segments[0].chain_base_lsn
    assert base > 0, "the peer collected frames"
    answer = peer.handle(m.GossipPull("az1-a", 0, 0), "az1-a")
    assert answer == [("az1-a", m.GossipPush("az1-b", 0, peer.segments[0].scl, (), base))]
    empty = node.StorageNode("az1-a", "az1", volume.geometry, list(NODE_NAMES))
    lacking = empty.segment(0)
    repair = empty.handle(answer[0][1], "az1-b")
    assert repair == [("az1-b", m.HydratePull("az1-a", 0, 0, 0))], "a repair, not a pull"
    assert lacking.needs_repair and lacking.suspect
    ticked = empty.background()
    assert not any(isinstance(message, m.GossipPull) for _, message in ticked), "nor a tick"
    volume.close()


def test_a_push_without_progress_ends_the_exchange() -> None:
    """Frames that do not join the chain (a hole before them) bring no progress: the
    segment does not pull again from that peer (the next tick or catalog may)."""
    geometry = Geometry(PAGE, 8, PAGES)
    lagging = node.StorageNode("az1-a", "az1", geometry, list(NODE_NAMES))
    lagging.segment(0)
    body = bytearray(log.pack_record(0, 0, 1, log.KIND_WRITE, b"x", 0))
    from aurora_storage import native

    native.stamp(body, PAGE, 7, 5, True, 0.0)
    frame = log.encode_frame(0, 1, 5, 7, 7, 1, body)  # backlink 5: the segment is at 0
    out = lagging.handle(m.GossipPush("az1-b", 0, 9, (frame,), 0), "az1-b")
    assert not any(isinstance(message, m.GossipPull) for _, message in out)
    assert lagging.segments[0].scl == 0 and not lagging.segments[0].needs_repair


def test_a_truncation_below_a_chain_base_sets_the_segment_aside() -> None:
    """A stale node.meta lacks a truncation its checkpoint is already past: adopting it
    later must neither assert nor rewind frames written after it."""
    geometry = Geometry(PAGE, 8, PAGES)
    past = Segment(0, geometry)
    past.scl = past.chain_base_lsn = 500  # as loaded from a checkpoint at chain LSN 500
    past.truncate(2, 100, 300)  # wholly below the base: nothing of it is left to rewind
    assert not past.failed and past.scl == 500
    inside = Segment(0, geometry)
    inside.scl = inside.chain_base_lsn = 200
    inside.truncate(2, 100, 300)  # the base is inside the annulled range
    assert inside.failed and inside.suspect
    assert "node.meta is older" in inside.failed
    assert inside.scl == 200, "its chain is left as it was"


def test_the_direct_transport_bounds_a_livelock_with_a_named_error() -> None:
    direct = DirectTransport(sync_threads=0)
    direct.deliveries_per_run_max = 1_000
    direct.register("a", lambda message, sender: [("b", message)])
    direct.register("b", lambda message, sender: [("a", message)])
    direct.send("a", "b", m.Tick())
    with pytest.raises(MessageStormError):
        direct.run_until(lambda: False, 1.0)
    assert direct.run_until(lambda: True, 1.0), "the storm left nothing queued"


def small(path: Path) -> Volume:
    return Volume.create(path, page_size=PAGE, segment_size=PAGE * 8, capacity=PAGE * 64)


def fill(volume: Volume, commits: int) -> dict[int, bytes]:
    expected = {}
    for i in range(commits):
        page_no = (i * 7) % 64
        data = f"commit {i:05d}".encode()
        with volume.transaction() as tx:
            tx.write(page_no, 0, data)
        expected[page_no] = data
    return expected


@pytest.mark.usefixtures("trimming_often")
def test_one_lost_pages_file_on_disk(tmp_path: Path) -> None:
    """The reported case: pg-00000000.pages deleted on one node of six, on a real disk."""
    volume = small(tmp_path / "v")
    expected = fill(volume, 80)
    volume.close()
    (tmp_path / "v" / "nodes" / "az2-a" / checkpoint_name(0)).unlink()
    reopened = Volume.open(tmp_path / "v")
    for page_no, data in expected.items():
        assert reopened.read_page(page_no)[: len(data)] == data
    report = reopened.nodes["az2-a"].load_report
    assert any("segment repair" in line for line in report.problems()), report.problems()
    assert_repaired(reopened, "az2-a", expected)
    status = {entry["name"]: entry for entry in reopened.status()["nodes"]}
    assert not any("needs repair" in line for line in status["az2-a"]["problems"])
    reopened.close()


@pytest.mark.usefixtures("trimming_often")
def test_recovery_error_names_every_node_it_could_not_use(tmp_path: Path) -> None:
    volume = small(tmp_path / "v")
    fill(volume, 80)
    volume.close()
    nodes = tmp_path / "v" / "nodes"
    (nodes / "az1-a" / NODE_META).write_bytes(b"garbage")
    (nodes / "az1-b" / checkpoint_name(0)).unlink()
    (nodes / "az2-a" / log_name(0)).write_bytes(
        b"\xff" * 64 + (nodes / "az2-a" / log_name(0)).read_bytes()
    )
    flipped = bytearray((nodes / "az2-b" / checkpoint_name(0)).read_bytes())
    flipped[len(flipped) // 2] ^= 1
    (nodes / "az2-b" / checkpoint_name(0)).write_bytes(bytes(flipped))
    with pytest.raises(RecoveryError) as caught:
        Volume.open(tmp_path / "v")
    message = str(caught.value)
    assert "az1-a: cannot load" in message and "node.meta" in message
    assert "az1-b: PG 0:" in message and log_name(0) in message
    assert "az2-a: PG 0:" in message and "damaged range at byte 0" in message
    assert "az2-b: PG 0:" in message and "lost checkpoint" in message
    assert not any(f"{name}:" in message for name in ("az3-a", "az3-b"))


@pytest.mark.usefixtures("trimming_often")
def test_rebuild_missing_repairs_what_peers_no_longer_hold_as_frames(tmp_path: Path) -> None:
    """A node folder gone after its peers checkpointed: gossip cannot rebuild it, a
    segment repair does, and the rebuilt node keeps its pages across a reopen."""
    volume = small(tmp_path / "v")
    expected = fill(volume, 80)
    volume.close()
    shutil.rmtree(tmp_path / "v" / "nodes" / "az3-b")
    with pytest.raises(MissingNodeError):
        Volume.open(tmp_path / "v")
    with pytest.raises(InvalidArgumentError):
        Volume.open(tmp_path / "v", rebuild_missing=True, progress=3)  # type: ignore[arg-type]
    copied: list[int] = []
    rebuilt = Volume.open(tmp_path / "v", rebuild_missing=True, progress=copied.append)
    assert_repaired(rebuilt, "az3-b", expected)
    repaired = [s for s in rebuilt.nodes["az3-b"].segments.values() if s.repaired_lsn]
    assert repaired, "a segment repair rebuilt some of its PGs (gossip the others)"
    held = sum(len(s.store_map.page_nos()) for s in repaired)
    assert sum(copied) == held, (copied, held)  # every page a repair copied, once
    rebuilt.close()
    assert (tmp_path / "v" / "nodes" / "az3-b" / checkpoint_name(0)).exists()
    again = Volume.open(tmp_path / "v")
    assert not again.nodes["az3-b"].load_report.findings, again.nodes["az3-b"].problems()
    assert_repaired(again, "az3-b", expected)
    again.close()


def test_a_node_that_started_empty_stays_suspect_across_a_restart() -> None:
    """A node that lost its disk writes node.meta at once; restarted before it caught up
    with its peers, it must still not vote (it would count as holding nothing)."""
    geometry = Geometry(PAGE, 8, PAGES)
    disk = SimulatedDisk(0)
    first = node.StorageNode("az1-a", "az1", geometry, list(NODE_NAMES), disk=disk)
    assert first.load().started_empty and first.suspect
    second = node.StorageNode("az1-a", "az1", geometry, list(NODE_NAMES), disk=disk)
    assert not second.load().started_empty
    assert second.suspect and "empty" in second.suspect_reason
    state = second.handle(m.RecoveryQuery(5), "writer")[0][1]
    assert isinstance(state, m.RecoveryState) and state.suspect


def test_a_log_of_a_pg_past_the_end_is_reported_not_loaded(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A file from a larger volume, named for a PG this one does not have: the node
    reports it as misplaced and loads the rest; the volume opens."""
    from aurora_storage import cli

    path = tmp_path / "v"
    volume = Volume.create(
        path, durability="os", page_size=PAGE, segment_size=PAGE * 4, capacity=PAGE * 32
    )
    with volume.transaction() as tx:
        tx.write(1, 0, b"data")
    volume.close()
    node_folder = path / "nodes" / "az1-a"
    (node_folder / "pg-00000009.log").write_bytes((node_folder / "pg-00000000.log").read_bytes())
    reopened = Volume.open(path)
    assert reopened.read_page(1)[:4] == b"data"
    assert 9 not in reopened.nodes["az1-a"].segments
    reopened.close()
    assert cli.main(["verify", str(path)]) == 1
    assert "az1-a: pg-00000009.log: misplaced file" in capsys.readouterr().out
