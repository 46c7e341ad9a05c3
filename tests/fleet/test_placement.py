"""Placement over a fleet of N nodes (protocol/placement.py): each PG's six segments on
two nodes of each AZ, balanced, recorded, and every quorum counted per member set.

A volume of nine or twelve nodes must keep each PG on its own six members only
(no segment anywhere else), serve every page after an AZ is lost and after a
reopen, refuse a bad fleet size before making anything, and lose write quorum
after AZ+1 only in the PGs that actually lost three members.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aurora_storage import Volume
from aurora_storage.backup.store import MemoryStore
from aurora_storage.cli import main as cli_main
from aurora_storage.config import AZS, az_of, node_names
from aurora_storage.errors import ConfigurationError, WriteQuorumError
from aurora_storage.protocol.placement import Membership, Placement

PAGE = 4096
PAGES_PER_PG = 4


@given(
    nodes=st.sampled_from([6, 9, 12, 15, 18, 30, 78]),
    pg_id=st.integers(0, 13_107),
)
def test_every_pg_has_six_members_two_in_each_az(nodes: int, pg_id: int) -> None:
    placement = Placement.of_count(nodes)
    members = placement.default_members(pg_id)
    assert len(set(members)) == 6
    assert Counter(az_of(name) for name in members) == dict.fromkeys(AZS, 2)
    assert set(members) <= set(placement.fleet)
    # The rule depends on the PG number and the fleet only.
    assert Placement.of_count(nodes).default_members(pg_id) == members


@given(nodes=st.sampled_from([6, 9, 12, 15, 21]), start=st.integers(0, 10_000))
def test_any_k_consecutive_pgs_load_every_node_of_an_az_equally(nodes: int, start: int) -> None:
    placement = Placement.of_count(nodes)
    per_az = nodes // 3
    load = placement.load(range(start, start + per_az))
    assert len(set(load.values())) == 1, load
    assert sum(load.values()) == 6 * per_az


def test_the_placement_record_round_trips() -> None:
    placement = Placement.of_count(9)
    added = placement.add_node("az2")
    assert added == "az2-d"
    sets = (("az1-a", "az1-b", "az2-b", "az2-c", "az3-a", "az3-c"),)
    assert placement.set_membership(4, Membership((2, 1), sets))
    assert not placement.set_membership(4, Membership((2, 1), sets))  # not above its epoch
    decoded = Placement.decode(json.loads(json.dumps(placement.encode())))
    assert decoded.fleet == placement.fleet
    assert decoded.membership(4) == placement.membership(4)
    assert decoded.members(5) == placement.members(5)


@settings(max_examples=30)
@given(down=st.sets(st.sampled_from(node_names(9)), max_size=5))
def test_covers_asks_a_quorum_of_every_member_set(down: set[str]) -> None:
    placement = Placement.of_count(9)
    live = [name for name in placement.fleet if name not in down]
    for quorum in (3, 4):
        expected = all(
            sum(name in live for name in placement.default_members(pg)) >= quorum for pg in range(3)
        )
        assert placement.covers(live, quorum) == expected


@pytest.mark.parametrize("nodes", [0, 3, 5, 7, 8, 81, True, "9", 9.0])
def test_a_bad_fleet_size_is_refused_before_anything_is_made(tmp_path: Path, nodes: object) -> None:
    with pytest.raises(ConfigurationError, match="nodes"):
        Volume.create(tmp_path / "v", nodes=nodes)  # type: ignore[arg-type]
    assert not (tmp_path / "v").exists()


def write_pages(volume: Volume, pages: int, seed: int) -> dict[int, bytes]:
    rng = random.Random(seed)
    expected = {}
    for _ in range(3):
        with volume.transaction() as tx:
            for page_no in rng.sample(range(pages), pages // 2):
                data = rng.randbytes(64)
                tx.write(page_no, 128, data)
                expected[page_no] = bytes(128) + data + bytes(PAGE - 192)
    return expected


def check_pages(volume: Volume, expected: dict[int, bytes]) -> None:
    for page_no, image in expected.items():
        assert volume.read_page(page_no) == image, page_no


@pytest.mark.parametrize("nodes", [9, 12])
def test_each_node_holds_exactly_the_segments_the_placement_gives_it(
    tmp_path: Path, nodes: int
) -> None:
    pages = PAGES_PER_PG * 24
    volume = Volume.create(
        tmp_path / "v",
        nodes=nodes,
        page_size=PAGE,
        segment_size=PAGE * PAGES_PER_PG,
        capacity=PAGE * pages,
        durability="os",
    )
    expected = write_pages(volume, pages, seed=nodes)
    placement = volume.placement
    assert sorted(p.name for p in (tmp_path / "v" / "nodes").iterdir()) == sorted(placement.fleet)
    status = volume.status()
    assert len(status["nodes"]) == nodes
    for node in status["nodes"]:
        held = volume.nodes[node["name"]].segment_ids()
        assert held == [pg for pg in sorted(volume.pgs) if node["name"] in placement.members(pg)]
        assert node["segments"] == node["placed"] == len(held)
    for pg in status["pgs"]:
        assert pg["members"] == [list(placement.default_members(pg["pg"]))]
        assert set(pg["scls"]) == set(placement.default_members(pg["pg"]))
    # An AZ down: every PG keeps four members, writes go on.
    volume.cluster.fail_az("az2")
    expected.update(write_pages(volume, pages, seed=nodes + 1))
    check_pages(volume, expected)
    volume.cluster.restore_az("az2")
    volume.close()
    reopened = Volume.open(tmp_path / "v")
    assert reopened.placement.fleet == placement.fleet
    check_pages(reopened, expected)
    reopened.close()
    assert cli_main(["verify", str(tmp_path / "v")]) == 0
    readonly = Volume.open(tmp_path / "v", readonly=True)
    check_pages(readonly, expected)
    readonly.close()


def test_after_az_plus_one_only_the_pgs_that_lost_three_members_refuse_writes() -> None:
    volume = Volume.create(
        nodes=9,
        page_size=PAGE,
        segment_size=PAGE * PAGES_PER_PG,
        capacity=PAGE * PAGES_PER_PG * 6,
        commit_timeout=0.05,
    )
    expected = write_pages(volume, PAGES_PER_PG * 6, seed=3)
    volume.cluster.fail_az("az1")
    volume.cluster.fail_node("az2-a")

    def live(pg_id: int) -> int:
        return sum(volume.cluster.is_up(name) for name in volume.placement.members(pg_id))

    # The PGs that kept four members first: a refused commit leaves a doubt that
    # holds up later commits until the nodes return.
    order = sorted(range(6), key=live, reverse=True)
    assert live(order[0]) == 4 and live(order[-1]) == 3
    committed = []
    for pg_id in order:
        page_no = pg_id * PAGES_PER_PG
        tx = volume.transaction()
        tx.write(page_no, 0, b"after")
        if live(pg_id) == 4:
            tx.commit()
            committed.append(pg_id)
            expected[page_no] = b"after" + expected.get(page_no, bytes(PAGE))[5:]
        else:
            with pytest.raises(WriteQuorumError):
                tx.commit()
            break
    assert committed == [pg for pg in order if live(pg) == 4]
    volume.cluster.restore_node("az2-a")
    volume.cluster.restore_az("az1")
    for page_no, image in expected.items():
        if page_no // PAGES_PER_PG != pg_id:
            assert volume.read_page(page_no) == image
    volume.close()


def test_a_restore_goes_onto_a_fleet_of_its_own_size(tmp_path: Path) -> None:
    store = MemoryStore()
    source = Volume.create(
        page_size=PAGE,
        segment_size=PAGE * PAGES_PER_PG,
        capacity=PAGE * PAGES_PER_PG * 8,
        backup=store,
    )
    expected = write_pages(source, PAGES_PER_PG * 8, seed=5)
    assert source.stage_backup()
    restored = Volume.restore(store, "latest", tmp_path / "r", nodes=12, durability="os")
    assert len(restored.nodes) == 12
    for name, node in restored.nodes.items():
        assert node.segment_ids() == [
            pg for pg in sorted(restored.pgs) if restored.placement.holds(name, pg)
        ]
    check_pages(restored, expected)
    restored.close()
    reopened = Volume.open(tmp_path / "r")
    check_pages(reopened, expected)
    reopened.close()
    source.close()
