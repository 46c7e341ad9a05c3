"""The failure scenarios of the quorum design, one test each, in simulation.

Every test drives a seeded :class:`Simulation`, whose checker compares each
read with the reference model and each step with the bookkeeping invariants,
and ends with :meth:`Simulation.converge`: healed replicas must be identical.
"""

from __future__ import annotations

import pytest

from aurora_storage.errors import WriteQuorumError
from aurora_storage.protocol import messages as m
from aurora_storage.runtime.transport import NetworkFaults
from aurora_storage.sim import PAGE_COUNT, PAGES_PER_PG, Simulation


def commits(simulation: Simulation, count: int) -> list[bool]:
    outcomes = []
    for _ in range(count):
        outcomes.append(simulation.commit())
        simulation.check()
    return outcomes


def read_all(simulation: Simulation) -> int:
    served = sum(simulation.read(page_no, simulation.volume.vdl) for page_no in range(PAGE_COUNT))
    simulation.check()
    return served


@pytest.mark.parametrize("seed", range(10))
def test_two_nodes_in_different_azs_fail_mid_write(seed: int) -> None:
    simulation = Simulation(seed, fault_rate=0.0)
    commits(simulation, 5)
    deliveries = 0

    def fail_after_first_delivery() -> None:
        nonlocal deliveries
        deliveries += 1
        if deliveries == 2:
            simulation.volume.cluster.fail_node("az1-a")
            simulation.volume.cluster.fail_node("az2-b")

    simulation.transport.observers.append(fail_after_first_delivery)
    assert all(commits(simulation, 10)), "4 of 6 remain: every commit is acknowledged"
    assert read_all(simulation) == PAGE_COUNT
    simulation.converge()


@pytest.mark.parametrize("seed", range(5))
def test_whole_az_down_writes_continue_on_four(seed: int) -> None:
    simulation = Simulation(seed, fault_rate=0.0)
    commits(simulation, 5)
    simulation.volume.cluster.fail_az("az2")
    before = simulation.volume.vdl
    assert all(commits(simulation, 10))
    assert simulation.volume.vdl > before
    assert read_all(simulation) == PAGE_COUNT
    simulation.converge()


@pytest.mark.parametrize("seed", range(5))
def test_az_plus_one_stops_commits_keeps_reads(seed: int) -> None:
    simulation = Simulation(seed, fault_rate=0.0)
    commits(simulation, 8)
    cluster = simulation.volume.cluster
    cluster.fail_az("az3")
    cluster.fail_node("az1-b")
    vdl = simulation.volume.vdl
    with pytest.raises(WriteQuorumError) as caught:
        tx = simulation.volume.transaction()
        tx.write(0, 0, b"blocked")
        tx.commit()
    assert caught.value.vdl == vdl
    simulation.model.apply(caught.value.lsn, [(0, 0, b"blocked")])
    simulation.committed.append(caught.value.lsn)
    assert simulation.volume.vdl == vdl, "an in-doubt commit stays invisible"
    # Three segments remain: reads at the last VDL are still served, from the model's bytes.
    assert read_all(simulation) == PAGE_COUNT
    cluster.restore_az("az3")
    cluster.restore_node("az1-b")
    simulation.transport.settle(1.0)
    assert simulation.volume.vdl >= caught.value.lsn, "the in-doubt commit became durable"
    assert all(commits(simulation, 5)), "writes resume after the restore"
    simulation.converge()


@pytest.mark.parametrize("seed", range(5))
def test_writer_partitioned_with_three_nodes_acknowledges_nothing(seed: int) -> None:
    simulation = Simulation(seed, fault_rate=0.0)
    commits(simulation, 5)
    vdl = simulation.volume.vdl
    simulation.volume.cluster.partition(
        ["writer", "az1-a", "az2-a", "az3-a"], ["az1-b", "az2-b", "az3-b"]
    )
    assert commits(simulation, 4) == [False] * 4
    assert simulation.volume.vdl == vdl
    simulation.converge()
    assert simulation.volume.vdl > vdl


@pytest.mark.parametrize("seed", range(5))
def test_mtr_short_of_quorum_in_one_pg_is_never_partly_visible(seed: int) -> None:
    simulation = Simulation(seed, fault_rate=0.0)
    commits(simulation, 3)
    volume = simulation.volume
    target_pg = 1
    # Frames of PG 1 reach only three segments; PG 0's frames reach all six.
    for name in ("az1-b", "az2-b", "az3-b"):
        node = volume.nodes[name]

        def dropping(message: m.Message, sender: str, node=node) -> list[tuple[str, m.Message]]:
            if isinstance(message, m.WriteFrames | m.GossipPush) and message.pg_id == target_pg:
                return []
            return node.handle(message, sender)

        simulation.transport.register(name, dropping)
    changes = [(0, 0, b"first half"), (PAGES_PER_PG, 0, b"second half")]
    assert simulation.commit(changes) is False
    cpl = simulation.committed[-1]
    assert volume.vdl < cpl
    # The PG 0 half has a write quorum, yet reads at VDL must not show it.
    assert simulation.read(0, volume.vdl)
    assert simulation.read(PAGES_PER_PG, volume.vdl)
    for name in ("az1-b", "az2-b", "az3-b"):
        simulation.transport.register(name, volume.nodes[name].handle)
    simulation.converge()
    assert volume.vdl >= cpl
    assert volume.read_page(0)[:10] == b"first half"


def test_loss_duplication_reordering_then_heal() -> None:
    simulation = Simulation(5, fault_rate=0.0)
    simulation.transport.set_faults(
        NetworkFaults(latency_min=0.0001, latency_max=0.02, loss=0.3, duplication=0.5)
    )
    commits(simulation, 40)
    assert simulation.transport.lost and simulation.transport.duplicated
    simulation.converge()


@pytest.mark.parametrize("seed", range(5))
def test_pg_reads_served_while_its_next_commit_is_in_doubt(seed: int) -> None:
    """VDL rests on PG 1's record; PG 0's next commit is lost: PG 0 stays readable."""
    simulation = Simulation(seed, fault_rate=0.0)
    assert simulation.commit([(0, 0, b"pg 0")])
    assert simulation.commit([(PAGES_PER_PG, 0, b"pg 1")])
    assert simulation.commit([(PAGES_PER_PG, 8, b"pg 1 again")])
    simulation.transport.set_faults(NetworkFaults(loss=1.0))
    assert simulation.commit([(0, 0, b"lost")]) is False
    simulation.transport.set_faults(NetworkFaults())
    for page_no in range(2 * PAGES_PER_PG):
        assert simulation.read(page_no, simulation.volume.vdl), f"page {page_no}"
    simulation.converge()
