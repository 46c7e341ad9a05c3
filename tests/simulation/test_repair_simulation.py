"""Seeded simulations with segment repairs: nodes on simulated disks lose their
drives mid-run while the others trim their logs, under the usual faults (node
and AZ outages, writer partitions, loss, duplication, reordering).

Every invariant of aurora_storage/sim.py holds after every step, and after
healing every replica, repaired ones included, equals the model. CI runs a short
slice; AURORA_STORAGE_SLOW=1 runs many more seeds and steps. A failure names its
seed: ``Simulation(seed, repairs=True).run(steps)`` (with the same trimming)
replays it exactly.
"""

from __future__ import annotations

import os

import pytest

from aurora_storage.sim import Simulation

SLOW = os.environ.get("AURORA_STORAGE_SLOW") == "1"
SEEDS = range(2000) if SLOW else range(100)
STEPS = 150 if SLOW else 60
pytestmark = pytest.mark.usefixtures("trimming_often")  # tests/conftest.py


@pytest.mark.parametrize("seed", SEEDS)
def test_seed_with_lost_drives_keeps_every_invariant(seed: int) -> None:
    simulation = Simulation(seed, repairs=True, fault_rate=0.2)
    outcome = simulation.run(STEPS)
    assert outcome.commits_acknowledged + outcome.commits_in_doubt > 0


def test_drives_are_lost_and_nodes_repaired_across_the_slice() -> None:
    """The slice does what it says: drives are replaced, and repairs run."""
    replaced = repaired = 0
    for seed in SEEDS[:10]:
        simulation = Simulation(seed, repairs=True, fault_rate=0.2)
        simulation.run(STEPS)
        replaced += simulation.drives_replaced
        repaired += sum(
            1
            for storage in simulation.volume.nodes.values()
            for held in storage.segments.values()
            if held.repaired_lsn
        )
    assert replaced > 0 and repaired > 0, (replaced, repaired)


def test_same_seed_same_trace() -> None:
    first = Simulation(4321, repairs=True, fault_rate=0.2).run(60)
    second = Simulation(4321, repairs=True, fault_rate=0.2).run(60)
    assert first == second
