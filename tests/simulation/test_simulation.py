"""Seeded simulations of the quorum volume against a reference model.

Each seed runs a random workload with random faults (node and AZ outages,
writer partitions, message loss up to 30 %, duplication up to 50 %,
reordering) and checks the invariants of aurora_storage/sim.py after every
step, then heals and demands byte-identical replicas. CI runs a short slice;
AURORA_STORAGE_SLOW=1 runs many more seeds and steps. A failure names its
seed: ``Simulation(seed).run(steps)`` replays it exactly.
"""

from __future__ import annotations

import os

import pytest

from aurora_storage.sim import Simulation

SLOW = os.environ.get("AURORA_STORAGE_SLOW") == "1"
SEEDS = range(1000) if SLOW else range(200)
STEPS = 200 if SLOW else 40


@pytest.mark.parametrize("seed", SEEDS)
def test_seed_keeps_every_invariant(seed: int) -> None:
    outcome = Simulation(seed).run(STEPS)
    assert outcome.vdl >= 0
    assert outcome.commits_acknowledged + outcome.commits_in_doubt > 0 or STEPS < 10


def test_same_seed_same_trace() -> None:
    first = Simulation(1234).run(60)
    second = Simulation(1234).run(60)
    assert first == second
    assert first.trace_hash == second.trace_hash


def test_different_seeds_differ() -> None:
    assert Simulation(1).run(40).trace_hash != Simulation(2).run(40).trace_hash


def test_heavy_loss_and_duplication_converge() -> None:
    """No fault injection but 30 % loss and 50 % duplication the whole run."""
    simulation = Simulation(77, fault_rate=0.0)
    from aurora_storage.runtime.transport import NetworkFaults

    simulation.transport.set_faults(NetworkFaults(loss=0.3, duplication=0.5))
    outcome = simulation.run(80)
    assert simulation.transport.lost > 0
    assert simulation.transport.duplicated > 0
    assert outcome.commits_acknowledged + outcome.commits_in_doubt > 10
