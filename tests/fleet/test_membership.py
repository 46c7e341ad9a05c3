"""Membership changes (protocol/membership.py): moves, repairs, AZ+1, undo, crashes.

A move or a repair must leave every page as it was, put the PG's segment on
the new node and take it off the old one (memory and files), survive a
reopen and a writer crash at each step, and refuse bad moves changing
nothing. The repair policy must replace an unreachable node after
``repair_after`` seconds of the volume's clock and not before, bring write
quorum back after AZ+1 (completing the commit in doubt), and undo a repair
whose node answers again before its replacement is ready.
"""

from __future__ import annotations

import contextlib
import random
import shutil
from pathlib import Path

import pytest

from aurora_storage import SimulatedClock, Volume
from aurora_storage.cli import main as cli_main
from aurora_storage.config import az_of, node_names
from aurora_storage.errors import (
    InvalidArgumentError,
    MembershipChangeError,
    PlacementError,
    QuorumError,
    UnknownNodeError,
    WriteQuorumError,
)
from aurora_storage.runtime.disk import CrashPlan, SimulatedCrash, SimulatedDisk
from aurora_storage.runtime.transport import DirectTransport

PAGE = 4096
PAGES_PER_PG = 4
PGS = 6
START = 1_700_000_000.0


def make(path: Path | None = None, **options: object) -> Volume:
    return Volume.create(
        path,
        page_size=PAGE,
        segment_size=PAGE * PAGES_PER_PG,
        capacity=PAGE * PAGES_PER_PG * PGS,
        **options,  # type: ignore[arg-type]
    )


def write(volume: Volume, expected: dict[int, bytes], commits: int, seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(commits):
        page_no = rng.randrange(PAGES_PER_PG * PGS)
        data = rng.randbytes(rng.randint(1, 200))
        offset = rng.randrange(PAGE - len(data))
        with volume.transaction() as tx:
            tx.write(page_no, offset, data)
        image = bytearray(expected.get(page_no, bytes(PAGE)))
        image[offset : offset + len(data)] = data
        expected[page_no] = bytes(image)


def check(volume: Volume, expected: dict[int, bytes]) -> None:
    for page_no in range(PAGES_PER_PG * PGS):
        assert volume.read_page(page_no) == expected.get(page_no, bytes(PAGE)), page_no


def spare_in_az(volume: Volume, pg_id: int, az: str) -> str:
    members = volume.placement.members(pg_id)
    return next(n for n in volume.placement.nodes_in(az) if n not in members)


def files_of(root: Path, node: str, pg_id: int) -> list[str]:
    return sorted(p.name for p in (root / "nodes" / node).glob(f"pg-{pg_id:08d}.*"))


def test_a_move_puts_the_segment_on_the_new_node_and_takes_it_off_the_old(
    tmp_path: Path,
) -> None:
    root = tmp_path / "v"
    volume = make(root, nodes=9, durability="os")
    expected: dict[int, bytes] = {}
    write(volume, expected, 60, seed=1)
    pg_id = 2
    source = volume.placement.members(pg_id)[0]
    destination = spare_in_az(volume, pg_id, az_of(source))
    before = volume.placement.membership(pg_id).epoch
    assert files_of(root, source, pg_id) and not files_of(root, destination, pg_id)
    volume.cluster.move_segment(pg_id, source, destination)
    members = volume.placement.members(pg_id)
    assert destination in members and source not in members
    assert volume.placement.membership(pg_id).epoch > before
    assert pg_id not in volume.nodes[source].segment_ids()
    assert not files_of(root, source, pg_id)
    assert files_of(root, destination, pg_id)
    status = volume.status()
    pg_status = next(pg for pg in status["pgs"] if pg["pg"] == pg_id)
    assert pg_status["members"] == [list(members)]
    # The new member counts: two other members down, writes go on.
    others = [n for n in members if n != destination][:2]
    for name in others:
        volume.cluster.fail_node(name)
    write(volume, expected, 20, seed=2)
    check(volume, expected)
    for name in others:
        volume.cluster.restore_node(name)
    volume.close()
    reopened = Volume.open(root)
    assert reopened.placement.members(pg_id) == members
    check(reopened, expected)
    write(reopened, expected, 10, seed=3)
    reopened.close()
    assert cli_main(["verify", str(root)]) == 0


@pytest.mark.parametrize(
    ("pg_id", "source", "destination", "error"),
    [
        (0, "az1-a", "az2-c", PlacementError),  # another AZ
        (0, "az1-a", "az1-b", PlacementError),  # already a member
        (0, "az1-c", "az1-c", PlacementError),  # the source is no member
        (0, "az1-a", "az1-z", UnknownNodeError),
        (0, "nobody", "az1-c", UnknownNodeError),
        (PGS, "az1-a", "az1-c", PlacementError),  # no such PG
        (-1, "az1-a", "az1-c", PlacementError),
        ("0", "az1-a", "az1-c", PlacementError),
    ],
)
def test_a_bad_move_is_refused_and_changes_nothing(
    pg_id: object, source: str, destination: str, error: type[Exception]
) -> None:
    volume = make(nodes=9)
    expected: dict[int, bytes] = {}
    write(volume, expected, 20, seed=4)
    assert volume.placement.members(0) == ("az1-a", "az1-b", "az2-b", "az2-c", "az3-a", "az3-c")
    placement = volume.placement.encode()
    held = {name: node.segment_ids() for name, node in volume.nodes.items()}
    with pytest.raises(error):
        volume.cluster.move_segment(pg_id, source, destination)  # type: ignore[arg-type]
    assert volume.placement.encode() == placement
    assert {name: node.segment_ids() for name, node in volume.nodes.items()} == held
    check(volume, expected)


def cut_off(volume: Volume, name: str) -> None:
    """``name`` keeps its link to the writer and loses those to every other node: it
    takes memberships and frames, and a repair from peers cannot reach it."""
    volume.cluster.partition([name], [n for n in volume.nodes if n != name])


def test_a_second_change_of_a_pg_waits_for_the_first() -> None:
    volume = make(nodes=9, commit_timeout=0.05)
    expected: dict[int, bytes] = {}
    write(volume, expected, 20, seed=5)
    pg_id = 1
    source = volume.placement.members(pg_id)[0]
    destination = spare_in_az(volume, pg_id, az_of(source))
    cut_off(volume, destination)
    with pytest.raises(MembershipChangeError, match="not ready"):
        volume.cluster.move_segment(pg_id, source, destination)
    assert volume.placement.membership(pg_id).changing
    other = next(n for n in volume.placement.members(pg_id) if az_of(n) != az_of(source))
    placement = volume.placement.encode()
    with pytest.raises(MembershipChangeError, match="another membership change"):
        volume.cluster.move_segment(pg_id, other, spare_in_az(volume, pg_id, az_of(other)))
    assert volume.placement.encode() == placement
    write(volume, expected, 5, seed=21)  # writes need four of each set meanwhile
    volume.cluster.heal()
    write(volume, expected, 1, seed=22)  # the move finishes as the volume is used
    assert not volume.placement.membership(pg_id).changing
    assert destination in volume.placement.members(pg_id)
    assert source not in volume.placement.members(pg_id)
    check(volume, expected)


def test_the_policy_repairs_an_unreachable_node_after_repair_after_not_before() -> None:
    clock = SimulatedClock(START)
    volume = make(clock=clock, repair_after=10.0)
    expected: dict[int, bytes] = {}
    write(volume, expected, 40, seed=6)
    volume.cluster.fail_node("az2-b")
    clock.advance(9.0)
    write(volume, expected, 5, seed=7)
    assert volume.placement.fleet == ("az1-a", "az1-b", "az2-a", "az2-b", "az3-a", "az3-b")
    clock.advance(1.5)
    write(volume, expected, 5, seed=8)
    assert volume.placement.added == ["az2-c"]
    for pg_id in volume.pgs:
        members = volume.placement.members(pg_id)
        assert "az2-c" in members and "az2-b" not in members, pg_id
    status = {node["name"]: node for node in volume.status()["nodes"]}
    assert status["az2-c"]["placed"] == len(volume.pgs) and status["az2-b"]["placed"] == 0
    # Six complete segments again: two more nodes may fail.
    volume.cluster.fail_node("az1-a")
    volume.cluster.fail_node("az3-b")
    write(volume, expected, 10, seed=9)
    check(volume, expected)
    # The old node coming back holds nothing any more and serves nothing.
    volume.cluster.restore_node("az2-b")
    assert volume.nodes["az2-b"].segment_ids() == []


def test_az_plus_one_is_repaired_and_the_commit_in_doubt_completes() -> None:
    clock = SimulatedClock(START)
    volume = make(clock=clock, repair_after=1.0, commit_timeout=0.05)
    expected: dict[int, bytes] = {}
    write(volume, expected, 40, seed=10)
    volume.cluster.fail_az("az1")
    volume.cluster.fail_node("az2-a")
    tx = volume.transaction()
    tx.write(3, 0, b"in doubt")
    with pytest.raises(WriteQuorumError):
        tx.commit()
    expected[3] = b"in doubt" + expected.get(3, bytes(PAGE))[8:]
    waited = 0.0
    while True:
        clock.advance(0.25)
        waited += 0.25
        try:
            write(volume, expected, 1, seed=11)
            break
        except QuorumError:
            assert waited < 5.0, "write quorum never came back"
    assert 1.0 <= waited <= 1.5
    assert sorted(volume.placement.added) == ["az1-c", "az1-d", "az2-c"]
    check(volume, expected)


def test_a_repair_is_undone_when_the_node_answers_before_its_replacement_is_ready() -> None:
    clock = SimulatedClock(START)
    volume = make(nodes=9, clock=clock, repair_after=1.0)
    expected: dict[int, bytes] = {}
    write(volume, expected, 30, seed=12)
    lost = "az1-a"
    # The PGs whose repair can only go to az1-c (the third node of az1).
    held = [
        pg
        for pg in sorted(volume.pgs)
        if lost in volume.placement.members(pg) and "az1-c" not in volume.placement.members(pg)
    ]
    assert held
    volume.cluster.fail_node(lost)
    cut_off(volume, "az1-c")  # where the repairs go: its copies never arrive
    clock.advance(2.0)
    write(volume, expected, 3, seed=13)
    before = {pg: volume.placement.membership(pg) for pg in held}
    for pg in held:
        assert before[pg].changing and lost in before[pg].member_sets[0], pg
        assert "az1-c" in before[pg].member_sets[1]
    volume.cluster.restore_node(lost)
    for pg in held:
        after = volume.placement.membership(pg)
        assert not after.changing and after.epoch > before[pg].epoch
        assert after.member_sets[0] == before[pg].member_sets[0]
    volume.cluster.heal()
    assert not set(held) & set(volume.nodes["az1-c"].segment_ids())
    write(volume, expected, 3, seed=14)
    check(volume, expected)


def test_a_writer_crash_during_a_change_recovers_one_membership(tmp_path: Path) -> None:
    root = tmp_path / "v"
    volume = make(root, nodes=9, durability="os")
    expected: dict[int, bytes] = {}
    write(volume, expected, 40, seed=15)
    pg_id = 3
    source = volume.placement.members(pg_id)[1]
    destination = spare_in_az(volume, pg_id, az_of(source))
    meta_before = (root / "volume.meta").read_bytes()
    volume.cluster.fail_node(destination)  # step 1 needs it: the move is refused
    with pytest.raises(MembershipChangeError):
        volume.cluster.move_segment(pg_id, source, destination)
    volume.cluster.restore_node(destination)
    volume.cluster.move_segment(pg_id, source, destination)
    members = volume.placement.members(pg_id)
    epoch = volume.placement.membership(pg_id).epoch
    volume.simulate_crash()
    # volume.meta as it was before the moves: the nodes' memberships decide.
    (root / "volume.meta").write_bytes(meta_before)
    reopened = Volume.open(root)
    assert reopened.placement.members(pg_id) == members
    assert reopened.placement.membership(pg_id).epoch == epoch
    check(reopened, expected)
    write(reopened, expected, 10, seed=16)
    check(reopened, expected)
    reopened.close()


def test_a_volume_on_given_disks_repairs_onto_a_spare_disk() -> None:
    clock = SimulatedClock(START)
    disks = {
        name: SimulatedDisk(i)
        for i, name in enumerate(("az1-a", "az1-b", "az2-a", "az2-b", "az3-a", "az3-b"))
    }
    volume = make(disks=disks, clock=clock, repair_after=1.0, durability="os")
    expected: dict[int, bytes] = {}
    write(volume, expected, 20, seed=17)
    volume.cluster.fail_node("az3-a")
    clock.advance(2.0)
    write(volume, expected, 2, seed=18)  # no spare disk: nothing moves, writes go on
    assert not volume.placement.added
    assert any("spare_disks" in line for line in volume.repair_problems)
    volume._spare_disks["az3-c"] = SimulatedDisk(99)
    write(volume, expected, 2, seed=19)
    assert volume.placement.added == ["az3-c"]
    check(volume, expected)


def test_a_moved_segment_survives_losing_its_old_node_folder(tmp_path: Path) -> None:
    root = tmp_path / "v"
    volume = make(root, nodes=9, durability="os")
    expected: dict[int, bytes] = {}
    write(volume, expected, 40, seed=20)
    moves = [
        (
            pg,
            volume.placement.members(pg)[0],
            spare_in_az(volume, pg, az_of(volume.placement.members(pg)[0])),
        )
        for pg in sorted(volume.pgs)
    ]
    for pg, source, destination in moves:
        volume.cluster.move_segment(pg, source, destination)
    volume.close()
    shutil.rmtree(root / "nodes" / moves[0][1])
    reopened = Volume.open(root, rebuild_missing=True)
    check(reopened, expected)
    reopened.close()


def test_the_gossip_floor_stops_waiting_for_a_replaced_node() -> None:
    clock = SimulatedClock(START)
    volume = make(clock=clock, repair_after=5.0)
    expected: dict[int, bytes] = {}
    write(volume, expected, 20, seed=23)
    volume.cluster.fail_node("az1-a")
    stuck = {pg_id: pg.floor() for pg_id, pg in volume.pgs.items()}
    write(volume, expected, 200, seed=24)
    # While az1-a is only down, every peer keeps the frames it lacks.
    assert all(volume.pgs[pg_id].floor() == floor for pg_id, floor in stuck.items())
    held = sum(len(n.segments[0].chain_frames) for n in volume.nodes.values() if 0 in n.segments)
    clock.advance(6.0)
    write(volume, expected, 1, seed=25)
    assert "az1-a" not in volume.placement.members(0)
    for pg_id, pg in volume.pgs.items():
        assert pg.floor() >= pg.tail_lsn - 1, pg_id
    volume.send_maintenance()
    volume._settle()  # the direct transport delivers when run
    after = sum(
        len(volume.nodes[name].segments[0].chain_frames) for name in volume.placement.members(0)
    )
    assert after < held
    status = volume.status()
    assert status["fleet"]["added"] == ["az1-c"]
    assert status["fleet"]["unreachable_since"] == {"az1-a": START}
    check(volume, expected)


def test_rebalance_moves_segments_off_the_busiest_node_of_each_az() -> None:
    volume = make(nodes=9)
    expected: dict[int, bytes] = {}
    write(volume, expected, 60, seed=26)
    # Pile az2's segments onto az2-a.
    for pg_id in sorted(volume.pgs):
        members = volume.placement.members(pg_id)
        if "az2-a" not in members:
            source = next(n for n in members if az_of(n) == "az2")
            volume.cluster.move_segment(pg_id, source, "az2-a")
    load = volume.placement.load(volume.pgs)
    assert load["az2-a"] == len(volume.pgs) and max(load.values()) - min(load.values()) > 1
    moves = volume.cluster.rebalance()
    assert moves and all(az_of(src) == az_of(dst) for _, src, dst in moves)
    load = volume.placement.load(volume.pgs)
    for az in ("az1", "az2", "az3"):
        counts = [load[name] for name in volume.placement.nodes_in(az)]
        assert max(counts) - min(counts) <= 1, (az, counts)
    assert volume.cluster.rebalance() == []  # balanced: nothing more to move
    with pytest.raises(InvalidArgumentError, match="limit"):
        volume.cluster.rebalance(-1)
    check(volume, expected)


@pytest.mark.parametrize("crash_at", range(1, 160, 6))
def test_a_crash_at_any_disk_operation_of_a_move(crash_at: int) -> None:
    """Step 1's node.meta writes, the new member's repair, step 2, the old member's
    file removal: after a machine crash anywhere, a recovery finds every commit and
    one membership of the PG, and the move can run again."""
    plan = CrashPlan()
    disks = {name: SimulatedDisk(i, plan) for i, name in enumerate(node_names(9))}
    volume = make(
        disks=disks, nodes=9, durability="fsync", transport=DirectTransport(sync_threads=0)
    )
    expected: dict[int, bytes] = {}
    write(volume, expected, 60, seed=27)
    pg_id = 2
    source = volume.placement.members(pg_id)[0]
    destination = spare_in_az(volume, pg_id, az_of(source))
    plan.crash_at = plan.operations + crash_at
    with contextlib.suppress(SimulatedCrash):
        volume.cluster.move_segment(pg_id, source, destination)
    crashed = plan.crash_at is None
    for disk in disks.values():
        disk.crash("random")
    plan.crash_at = None
    options = volume.options  # the placement volume.meta would hold after the crash
    reopened = Volume.open(
        disks=disks,  # type: ignore[arg-type]
        options=options,
        volume_id=volume.volume_id,
        transport=DirectTransport(sync_threads=0),
    )
    check(reopened, expected)
    membership = reopened.placement.membership(pg_id)
    for node in reopened.nodes.values():
        held = node.placement.membership(pg_id)
        if held.epoch == membership.epoch:
            assert held.member_sets == membership.member_sets
        assert held.epoch <= membership.epoch
    if reopened.placement.membership(pg_id).changing:
        write(reopened, expected, 1, seed=28)  # the volume in use finishes the change
    assert not reopened.placement.membership(pg_id).changing or not crashed
    members = reopened.placement.members(pg_id)
    if source in members:
        reopened.cluster.move_segment(pg_id, source, destination)
    assert destination in reopened.placement.members(pg_id)
    write(reopened, expected, 5, seed=29)
    check(reopened, expected)
    reopened.close()


def test_moves_one_after_another_leave_every_segment_trusted() -> None:
    """Each member of each PG moved in turn, commits between: every repaired or newly
    filled segment is vouched for by its peers, so it can serve the next move."""
    volume = make(nodes=9)
    expected: dict[int, bytes] = {}
    write(volume, expected, 40, seed=30)
    rng = random.Random(31)
    for k in range(90):
        az = ("az1", "az2", "az3")[k % 3]
        pg_id = sorted(volume.pgs)[k % len(volume.pgs)]
        members = volume.placement.members(pg_id)
        source = rng.choice([name for name in members if az_of(name) == az])
        volume.cluster.move_segment(pg_id, source, spare_in_az(volume, pg_id, az))
        write(volume, expected, 1, seed=100 + k)
    suspect = [
        (name, pg_id)
        for name, node in volume.nodes.items()
        for pg_id, segment in node.segments.items()
        if segment.suspect
    ]
    assert suspect == []
    check(volume, expected)


def test_two_threads_commit_while_a_third_moves_segments() -> None:
    import threading

    volume = make(nodes=9)
    expected: dict[int, bytes] = {}
    write(volume, expected, 30, seed=32)
    errors: list[BaseException] = []
    rows: dict[int, list[tuple[int, bytes]]] = {0: [], 1: []}

    def committer(k: int) -> None:
        try:
            for i in range(150):
                page_no = k * (PAGES_PER_PG * PGS // 2) + i % (PAGES_PER_PG * PGS // 2)
                data = f"{k}:{i:04d}".encode()
                with volume.transaction() as tx:
                    tx.write(page_no, 1000 + 8 * (i // 12), data)
                rows[k].append((page_no, data))
        except BaseException as error:
            errors.append(error)

    def mover() -> None:
        try:
            for k in range(30):
                az = ("az1", "az2", "az3")[k % 3]
                pg_id = k % PGS
                with volume.transport.lock:
                    members = volume.placement.members(pg_id)
                    source = sorted(n for n in members if az_of(n) == az)[(k // 3) % 2]
                    destination = spare_in_az(volume, pg_id, az)
                volume.cluster.move_segment(pg_id, source, destination)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=committer, args=(k,)) for k in (0, 1)]
    threads.append(threading.Thread(target=mover))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    for k in (0, 1):
        for i, (page_no, data) in enumerate(rows[k]):
            offset = 1000 + 8 * (i // 12)
            assert volume.read_page(page_no)[offset : offset + len(data)] == data
    for page_no, image in expected.items():
        assert volume.read_page(page_no)[:1000] == image[:1000]
    assert not any(volume.placement.membership(pg).changing for pg in volume.pgs)
