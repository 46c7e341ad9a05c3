"""Segment repair (protocol/hydration.py): a node whose disk was lost while its peers
trimmed their logs is rebuilt from a peer's pages, then catches up by gossip.

The node's disk is wiped while the volume runs (a SimulatedDisk emptied); when
the node comes back, gossip finds that its peers collected what it lacks, and a
repair copies one peer's pages and frames. The repaired node must then serve
every page as it is, count toward quorums (two other nodes can fail), survive a
reopen, and a crash at any disk operation of the repair must leave the volume
whole, the node repairing again. Repairs of PGs larger than one push, a peer
that goes quiet mid-repair, and pushes that do not add up are covered too.
"""

from __future__ import annotations

import contextlib
import random

import pytest

from aurora_storage import SimulatedClock, Volume
from aurora_storage.config import NODE_NAMES, Geometry
from aurora_storage.protocol import hydration, node
from aurora_storage.protocol import messages as m
from aurora_storage.runtime.disk import CrashPlan, SimulatedCrash, SimulatedDisk
from aurora_storage.runtime.transport import DirectTransport

PAGE = 4096
PAGES_PER_PG = 8
PAGES = 48
VICTIM = "az1-a"
pytestmark = pytest.mark.usefixtures("trimming_often")  # tests/conftest.py


def create(
    plan: CrashPlan | None = None, **options: object
) -> tuple[Volume, dict[str, SimulatedDisk]]:
    disks = {name: SimulatedDisk(i, plan) for i, name in enumerate(NODE_NAMES)}
    volume = Volume.create(
        disks=disks,  # type: ignore[arg-type]
        page_size=PAGE,
        segment_size=PAGE * PAGES_PER_PG,
        capacity=PAGE * PAGES,
        transport=DirectTransport(sync_threads=0),
        **options,  # type: ignore[arg-type]
    )
    return volume, disks


def reopen(volume: Volume, disks: dict[str, SimulatedDisk], **options: object) -> Volume:
    return Volume.open(
        disks=disks,  # type: ignore[arg-type]
        options=volume.options,
        volume_id=volume.volume_id,
        transport=DirectTransport(sync_threads=0),
        **options,  # type: ignore[arg-type]
    )


def write(volume: Volume, expected: dict[int, bytes], commits: int, seed: int = 1) -> None:
    rng = random.Random(seed)
    for number in range(commits):
        if isinstance(volume.clock, SimulatedClock):
            volume.clock.advance(5)
        page_no = rng.randrange(PAGES)
        data = f"{seed}:{number:04d}".encode() * rng.randint(1, 40)
        with volume.transaction() as tx:
            tx.write(page_no, 0, data)
        expected[page_no] = data


def lose_disk(volume: Volume, disks: dict[str, SimulatedDisk], name: str = VICTIM) -> None:
    """The node stops, its disk comes back empty, and it restarts (a replaced drive)."""
    volume.cluster.fail_node(name)
    disks[name].files.clear()
    volume.nodes[name].failed = "its disk was replaced"  # restore_node reloads it
    volume.cluster.restore_node(name)


def assert_serves(volume: Volume, name: str, expected: dict[int, bytes]) -> None:
    """Every segment of the node is whole (caught up with its peers, not needing repair)
    and serves each page as the volume shows it."""
    repaired = volume.nodes[name]
    assert repaired.segments, f"{name} holds no segment"
    for pg_id, held in repaired.segments.items():
        assert not held.needs_repair and not held.failed, repaired.problems()
        peers = [volume.nodes[n].segments[pg_id].scl for n in NODE_NAMES if n != name]
        assert held.scl >= min(peers), (pg_id, held.scl, peers)
    for page_no, data in expected.items():
        image, problem, _ = repaired.serve_read(
            page_no // PAGES_PER_PG, page_no, volume.vdl, 0, volume.annulled
        )
        assert not problem and image[: len(data)] == data, (page_no, problem)


def test_a_node_whose_disk_was_lost_is_repaired_and_votes_again() -> None:
    volume, disks = create()
    expected: dict[int, bytes] = {}
    write(volume, expected, 120)
    lose_disk(volume, disks)
    assert_serves(volume, VICTIM, expected)
    write(volume, expected, 20, seed=2)  # it takes new writes too
    assert_serves(volume, VICTIM, expected)
    for other in ("az2-a", "az3-a"):  # four left, the repaired node among them
        volume.cluster.fail_node(other)
    write(volume, expected, 10, seed=3)
    for page_no, data in expected.items():
        assert volume.read_page(page_no)[: len(data)] == data
    volume.close()
    reopened = reopen(volume, disks)
    assert not reopened.nodes[VICTIM].load_report.findings, reopened.nodes[VICTIM].problems()
    assert_serves(reopened, VICTIM, expected)
    reopened.close()


def test_a_pg_larger_than_one_push_comes_in_many(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hydration, "HYDRATE_PAGES", 3)
    volume, disks = create()
    expected: dict[int, bytes] = {}
    write(volume, expected, 150)
    pushes: list[m.HydratePush] = []
    original = node.StorageNode._on_hydrate_push

    def counting(self: node.StorageNode, message: m.HydratePush) -> list[tuple[str, m.Message]]:
        pushes.append(message)
        return original(self, message)

    monkeypatch.setattr(node.StorageNode, "_on_hydrate_push", counting)
    lose_disk(volume, disks)
    assert_serves(volume, VICTIM, expected)
    assert max(len(push.page_nos) for push in pushes) == 3
    assert len(pushes) >= len({page_no // PAGES_PER_PG for page_no in expected}) * 2
    volume.close()


@pytest.mark.parametrize("crash_at", range(1, 120, 4))
def test_a_crash_at_any_disk_operation_of_a_repair(crash_at: int) -> None:
    """The repair's store writes, its checkpoint file, its log, its peers' own: after a
    crash anywhere, the volume holds every commit and the node repairs again."""
    plan = CrashPlan()
    volume, disks = create(plan)
    expected: dict[int, bytes] = {}
    write(volume, expected, 100)
    plan.crash_at = plan.operations + crash_at
    with contextlib.suppress(SimulatedCrash):
        lose_disk(volume, disks)
    for disk in disks.values():
        disk.crash("random")
    plan.crash_at = None
    reopened = reopen(volume, disks)
    for page_no, data in expected.items():
        assert reopened.read_page(page_no)[: len(data)] == data
    assert_serves(reopened, VICTIM, expected)
    reopened.close()


def repairing_node(volume: Volume) -> tuple[node.StorageNode, list[tuple[str, m.Message]]]:
    """A node that lost everything, told by az1-b that PG 0's early frames are gone:
    the repair it starts (its first pull)."""
    peer = volume.nodes["az1-b"]
    news = peer.handle(m.GossipPull(VICTIM, 0, 0), VICTIM)
    empty = node.StorageNode(VICTIM, "az1", volume.geometry, list(NODE_NAMES))
    empty.segment(0)
    return empty, empty.handle(news[0][1], "az1-b")


def test_a_peer_that_goes_quiet_mid_repair_is_replaced(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hydration, "HYDRATE_PAGES", 2)
    volume, _disks = create()
    write(volume, {}, 120)
    empty, first = repairing_node(volume)
    assert first == [("az1-b", m.HydratePull(VICTIM, 0, 0, 0))]
    pushed = volume.nodes["az1-b"].handle(first[0][1], VICTIM)
    after = empty.handle(pushed[0][1], "az1-b")
    assert isinstance(after[0][1], m.HydratePull) and after[0][1].start == 2
    # az1-b answers no more: after HYDRATE_PATIENCE ticks another peer is asked.
    asked: list[tuple[str, m.Message]] = []
    for _ in range(hydration.HYDRATE_PATIENCE):
        asked += [(to, msg) for to, msg in empty.background() if isinstance(msg, m.HydratePull)]
    assert asked and all(to != "az1-b" for to, _ in asked), asked
    volume.close()


def test_pushes_that_do_not_add_up_change_nothing() -> None:
    """A push whose images do not match its pages, or that names another PG's pages,
    ends the repair and installs nothing; a push from a peer not asked is ignored."""
    volume, _disks = create()
    write(volume, {}, 120)
    geometry: Geometry = volume.geometry
    for bad in (
        m.HydratePush("az1-b", 0, 50, 40, 0, 0.0, (1,), (3,), b"short", -1),
        m.HydratePush("az1-b", 0, 50, 40, 0, 0.0, (99,), (3,), bytes(PAGE), -1),
        m.HydratePush("az1-b", 0, 50, 40, 0, 0.0, (1,), (60,), bytes(PAGE), -1),  # LSN > 50
        m.HydratePush("az1-b", 0, 50, 40, 0, 0.0, (2, 2), (3, 4), bytes(2 * PAGE), -1),
    ):
        empty, _ = repairing_node(volume)
        before = empty.segments[0]
        assert empty.handle(bad, "az1-b") == []
        assert empty.segments[0] is before and before.needs_repair and before.scl == 0
        assert 0 not in empty._repairs, "the repair ended"
    empty, _ = repairing_node(volume)
    stranger = m.HydratePush("az2-a", 0, 50, 40, 0, 0.0, (), (), b"", -1)
    assert empty.handle(stranger, "az2-a") == []
    assert empty.segments[0].scl == 0 and 0 in empty._repairs
    assert geometry.page_size == PAGE
    volume.close()


def repaired_inside_a_window() -> tuple[
    Volume, dict[str, SimulatedDisk], SimulatedClock, dict[int, bytes], dict[int, bytes], float
]:
    """A volume with a backtrack window: 60 commits (the pages then, and the time),
    60 more, then VICTIM's drive lost and repaired from its peers."""
    clock = SimulatedClock(1_000_000.0)
    volume, disks = create(clock=clock, backtrack_window=3600)
    expected: dict[int, bytes] = {}
    write(volume, expected, 60)
    early, early_time = dict(expected), clock.now()
    clock.advance(5)
    write(volume, expected, 60, seed=2)
    lose_disk(volume, disks)
    return volume, disks, clock, expected, early, early_time


def test_a_repaired_node_does_not_narrow_the_backtrack_window() -> None:
    """Its time index starts at the repair point: it answers time queries as untrusted
    while the window reaches below that point, and a backtrack lands from the others."""
    volume, _disks, clock, expected, early, early_time = repaired_inside_a_window()
    assert_serves(volume, VICTIM, expected)
    clock.advance(5)
    volume.backtrack(early_time)
    for page_no in range(PAGES):
        data = early.get(page_no)
        got = volume.read_page(page_no)
        assert got[: len(data)] == data if data else got == bytes(PAGE), page_no
    # Its pages were built past the point the backtrack lands on: it is repaired again.
    assert_serves(volume, VICTIM, early)
    volume.close()


def test_a_repaired_node_that_missed_a_backtrack_is_repaired_again() -> None:
    """Down while a backtrack landed below its repair point, it learns the new history
    when it returns, and never serves the pages the backtrack undid."""
    volume, disks, clock, _expected, early, early_time = repaired_inside_a_window()
    volume.cluster.fail_node(VICTIM)
    clock.advance(5)
    volume.backtrack(early_time)
    volume.cluster.restore_node(VICTIM)
    victim = volume.nodes[VICTIM]
    for page_no, data in early.items():  # before it knows: the right page or none
        image, problem, _ = victim.serve_read(
            page_no // PAGES_PER_PG, page_no, volume.vdl, 0, volume.annulled
        )
        assert problem or image[: len(data)] == data, page_no
    write(volume, early, 6, seed=3)  # a write brings the history: it is repaired again
    assert_serves(volume, VICTIM, early)
    volume.close()
    reopened = reopen(volume, disks, clock=clock)
    assert_serves(reopened, VICTIM, early)
    reopened.close()


def test_a_peer_at_its_checkpoint_serves_a_repair_from_its_page_store() -> None:
    """Reopened, a peer's segments are at their checkpoints with nothing folded since:
    it reads the pages it sends from its page store and leaves its cache alone."""
    volume, disks = create()
    expected: dict[int, bytes] = {}
    write(volume, expected, 120)
    volume.close()
    reopened = reopen(volume, disks)
    served: list[int] = []
    for name, storage in reopened.nodes.items():
        if name != VICTIM:
            stored = [held for held in storage.segments.values() if held.store is not None]
            assert stored and not any(held.changed_pages for held in stored)
            served.append(sum(s.page_log.stats().images for s in storage.segments.values()))
    lose_disk(reopened, disks)
    assert_serves(reopened, VICTIM, expected)
    after = [
        sum(s.page_log.stats().images for s in storage.segments.values())
        for name, storage in reopened.nodes.items()
        if name != VICTIM
    ]
    assert after == served, (served, after)
    reopened.close()


@pytest.mark.parametrize("on_disk", [False, True])
def test_every_push_delivered_twice_repairs_once(
    on_disk: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A network that duplicates: each pull and push arrives twice, in memory and on
    disk; the repair ends with the same segment, and late copies change nothing."""
    from aurora_storage.runtime.disk import SimulatedDisk as Disk

    monkeypatch.setattr(hydration, "HYDRATE_PAGES", 2)  # several pushes, each seen twice

    volume = Volume.create(page_size=PAGE, segment_size=PAGE * PAGES_PER_PG, capacity=PAGE * PAGES)
    expected: dict[int, bytes] = {}
    write(volume, expected, 80)
    peer = volume.nodes["az1-b"]
    fresh = node.StorageNode(
        VICTIM, "az1", volume.geometry, list(NODE_NAMES), disk=Disk(99) if on_disk else None
    )
    if on_disk:
        fresh.load()
    outbox = fresh._start_repair(0, peer.name) * 2
    pushes = 0
    while outbox:
        _to, message = outbox.pop(0)
        if isinstance(message, m.HydratePull):
            outbox += peer.handle(message, VICTIM) * 2
        elif isinstance(message, m.HydratePush):
            pushes += 1
            outbox += fresh.handle(message, peer.name)
    assert pushes >= 4
    repaired = fresh.segments[0]
    assert repaired.repaired_lsn and repaired.scl == peer.segments[0].scl
    for page_no, data in expected.items():
        if page_no < PAGES_PER_PG:
            image, problem, _ = fresh.serve_read(0, page_no, volume.vdl, 0, ())
            assert not problem and image[: len(data)] == data, page_no
    volume.close()
