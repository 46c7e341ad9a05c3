"""The fleet simulation (sim.FleetSimulation): moves and repairs under faults and crashes.

Nine nodes on simulated disks, repairs after two seconds of the simulated
clock onto spare disks, random segment moves, node, AZ and partition faults,
message loss and writer crashes (some reopened from an older volume.meta).
Every page read must equal the model, no PG may hold two memberships under
one epoch, no node's membership epochs may go back, and at the end every
change must be finished or undone with every member complete.
``FleetSimulation(seed).run(steps)`` replays a failure exactly.
AURORA_STORAGE_SLOW=1 runs the soak: 10,000 seeds.
"""

from __future__ import annotations

import os

import pytest

from aurora_storage.sim import FleetSimulation

SLOW = bool(os.environ.get("AURORA_STORAGE_SLOW"))
SEEDS = range(10_000) if SLOW else range(40)
STEPS = 150 if SLOW else 60


@pytest.mark.parametrize("seed", SEEDS)
def test_seed_keeps_every_invariant(seed: int) -> None:
    counts = FleetSimulation(seed).run(STEPS)
    assert counts["commits"] + counts["in_doubt"] + counts["refused"] > 0


def test_the_slice_moves_repairs_and_crashes() -> None:
    """The CI slice exercises what it is for: moves, crashes and repairs happen."""
    totals: dict[str, int] = {}
    added = 0
    for seed in range(12):
        simulation = FleetSimulation(seed)
        for key, value in simulation.run(STEPS).items():
            totals[key] = totals.get(key, 0) + value
        added += len(simulation.volume.placement.added)
    assert totals["moves"] > 0 and totals["crashes"] > 0 and totals["commits"] > 0
    assert added > 0, "no repair placed a segment on a new node"


def test_same_seed_same_run() -> None:
    first = FleetSimulation(77)
    second = FleetSimulation(77)
    assert first.run(50) == second.run(50)
    assert first.volume.placement.encode() == second.volume.placement.encode()
    assert first.transport.trace_hash == second.transport.trace_hash
