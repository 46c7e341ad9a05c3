"""Writer crash recovery: from a read quorum's SCLs to VDL and a truncation range.

The SIGMOD 2018 paper's recovery, as a pure function of what nodes answered
(:func:`plan`): no redo runs at the writer, and the work grows with the
number of PGs and the frames above the last known VDL, not with the log.

1. The recovering writer picks an epoch above every epoch it sees and sends
   it to every node; a node makes it durable before answering, which fences
   the old writer (it can no longer reach four nodes of its epoch).
2. Each node answers, per segment, its SCL and the runs of consecutive LSNs
   its chain holds above the node's VDL hint (a VDL an earlier writer
   reached), each with the last MTR end inside it.
3. For every PG at least three answers must come from its members' segments
   that can vouch for their data (of one member set, during a membership
   change: a write reached four of each); since any write quorum (4) and any
   read quorum (3) of six intersect, every acknowledged record is in some
   answer. So must three members of every member set in use (a PG no answer
   names may still sit on members that did not answer: placement.py).
4. LSNs are allocated densely (each MTR gets a contiguous range), so VCL is
   the end of the run of LSNs present in some answer, starting from the
   highest VDL hint and skipping ranges already annulled (a run inside one,
   which a node that missed the truncation may still hold, counts for
   nothing). VDL is the last CPL in that run outside them.
5. Everything above VDL is annulled: the truncation range is (VDL, base +
   LAL], widened to cover any LSN seen. A writer that recovered counts its
   LSNs in flight from the end of its truncation, so it may have allocated up
   to that end + LAL: base is the higher of VDL and the end of every
   truncation made by a writer that finished recovery (``opened_epoch``: a
   writer opens only once its history is on a write quorum, so a read quorum
   shows it; truncations of recoveries that were cut short do not move base,
   and repeated interrupted recoveries annul the same range). New LSNs start
   above it, so no LSN an earlier writer may have used is ever reused. The
   range is written with the new epoch to a write quorum before the volume
   opens.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..errors import RecoveryError
from . import messages as m
from .history import truncation_triples
from .placement import Placement
from .protection_group import READ_QUORUM


@dataclass(frozen=True)
class RecoveryPlan:
    epoch: int
    vdl: int
    vcl: int
    truncation: tuple[int, int]  # annul (lo, hi]
    truncations: tuple[tuple[int, int, int], ...]  # every truncation, the new one included
    pg_ids: tuple[int, ...]
    highest_lsn_seen: int


def _annulled(lo: int, hi: int, truncations: list[tuple[int, int, int]]) -> bool:
    """True if every LSN in (lo, hi] lies in one truncation range."""
    return any(t_lo <= lo and hi <= t_hi for _, t_lo, t_hi in truncations)


def _unusable(states: list[m.RecoveryState], unavailable: dict[str, str], pg_id: int | None) -> str:
    """Each node that cannot vote (for ``pg_id``, or at all) and why, for an error."""
    reasons = dict(unavailable)
    for state in states:
        flags = {state.segments[i]: state.segments[i + 2] for i in range(0, len(state.segments), 3)}
        if state.suspect or (pg_id is not None and flags.get(pg_id)):
            wanted = [p for p in state.problems if pg_id is None or p.startswith(f"PG {pg_id}:")]
            reasons[state.node] = "; ".join(wanted or state.problems or ("cannot vouch",))
    return "; ".join(f"{node}: {reason}" for node, reason in sorted(reasons.items()))


def plan(
    epoch: int,
    states: list[m.RecoveryState],
    lal: int,
    unavailable: dict[str, str] | None = None,
    opened_epoch: int | None = None,
    placement: Placement | None = None,
) -> RecoveryPlan:
    """What the recovering writer decides from the nodes' answers; raises RecoveryError
    naming every node it could not use and why (``unavailable``: nodes that did not
    answer, with the reason).

    ``opened_epoch`` is the highest epoch of a writer known to have finished its
    recovery (None: unknown, every truncation counts). ``placement`` says which
    nodes hold each PG (None: every answering node holds every PG).
    """
    trusted = [state for state in states if not state.suspect]
    truncations = _known_truncations(states)
    if placement is not None:
        # Segments a node keeps of a PG it is no member of (a change dropped it) count
        # for nothing: another member holds what they hold that was acknowledged.
        states = [_members_only(state, placement) for state in states]
        trusted = [_members_only(state, placement) for state in trusted]
    pg_ids = sorted({s.segments[i] for s in states for i in range(0, len(s.segments), 3)})
    suspect_segments = _suspect_segments(states)
    _check_read_quorums(states, trusted, pg_ids, suspect_segments, unavailable or {}, placement)
    start = max((state.vdl_hint for state in trusted), default=0)
    runs = _runs_above(trusted, suspect_segments, start)
    vcl, vdl = _chain_runs(start, runs, truncations)
    highest = _highest_lsn(start, runs, states, truncations)
    hi = max(_allocation_base(vdl, truncations, opened_epoch) + lal, highest)
    return RecoveryPlan(
        epoch=epoch,
        vdl=vdl,
        vcl=vcl,
        truncation=(vdl, hi),
        truncations=(*truncations, (epoch, vdl, hi)),
        pg_ids=tuple(pg_ids),
        highest_lsn_seen=highest,
    )


def _known_truncations(states: list[m.RecoveryState]) -> list[tuple[int, int, int]]:
    """Every (epoch, lo, hi) truncation some node reports, once each, by ascending lo."""
    truncations: list[tuple[int, int, int]] = []
    for state in states:
        for truncation in truncation_triples(state.truncations):
            if truncation not in truncations:
                truncations.append(truncation)
    truncations.sort(key=lambda t: t[1])
    return truncations


def _suspect_segments(states: list[m.RecoveryState]) -> set[tuple[str, int]]:
    """(node, PG) of every segment its node flags as unable to vouch for its data."""
    return {
        (state.node, state.segments[i])
        for state in states
        for i in range(0, len(state.segments), 3)
        if state.segments[i + 2]
    }


def _members_only(state: m.RecoveryState, placement: Placement) -> m.RecoveryState:
    """``state`` without the segments and runs of PGs its node is no member of."""
    node = state.node
    segments = state.segments
    kept = [i for i in range(0, len(segments), 3) if placement.holds(node, segments[i])]
    if len(kept) * 3 == len(segments):
        return state
    intervals = state.intervals
    return dataclasses.replace(
        state,
        segments=tuple(v for i in kept for v in segments[i : i + 3]),
        intervals=tuple(
            v
            for i in range(0, len(intervals), 4)
            if placement.holds(node, intervals[i])
            for v in intervals[i : i + 4]
        ),
    )


def _check_read_quorums(
    states: list[m.RecoveryState],
    trusted: list[m.RecoveryState],
    pg_ids: list[int],
    suspect_segments: set[tuple[str, int]],
    unavailable: dict[str, str],
    placement: Placement | None,
) -> None:
    """Raise RecoveryError unless every PG, and every member set in use, has a read
    quorum of answers that can vouch for their data (a trusted member holding no
    segment of a PG counts for it as "nothing here")."""
    for pg_id in pg_ids:
        voting = {s.node for s in trusted if (s.node, pg_id) not in suspect_segments}
        count = len(voting)
        if placement is not None:
            member_sets = placement.quorum(pg_id).member_sets
            count = max(sum(name in voting for name in members) for members in member_sets)
        if count < READ_QUORUM:
            raise RecoveryError(
                f"PG {pg_id}: {count} segments can vouch for their data, "
                f"{READ_QUORUM} are needed; unusable: {_unusable(states, unavailable, pg_id)}"
            )
    nodes = [state.node for state in trusted]
    if len(nodes) < READ_QUORUM or (placement is not None and not placement.covers_read(nodes)):
        shortfall = (
            placement.shortfall(nodes, READ_QUORUM)
            if placement is not None
            else f"{READ_QUORUM} needed"
        )
        raise RecoveryError(
            f"{len(nodes)} nodes can vouch for their data; {shortfall}; "
            f"unusable: {_unusable(states, unavailable, None)}"
        )


def _runs_above(
    trusted: list[m.RecoveryState], suspect_segments: set[tuple[str, int]], start: int
) -> list[tuple[int, int, int]]:
    """(first, last, last CPL) of every run the trusted segments hold that ends above
    ``start``, once each, in ascending order."""
    return sorted(
        {
            (state.intervals[i + 1], state.intervals[i + 2], state.intervals[i + 3])
            for state in trusted
            for i in range(0, len(state.intervals), 4)
            if (state.node, state.intervals[i]) not in suspect_segments
            and state.intervals[i + 2] > start
        }
    )


def _chain_runs(
    start: int, runs: list[tuple[int, int, int]], truncations: list[tuple[int, int, int]]
) -> tuple[int, int]:
    """(VCL, VDL): how far the runs cover LSNs from ``start`` without a gap that no
    truncation annuls, and the last MTR end inside that outside every truncation."""
    # Runs in order of their first LSN: each one starting inside what is covered
    # (or after an annulled gap) extends it; every MTR end inside counts for VDL.
    covered = start
    vdl = start
    for first, last, last_cpl in runs:
        if _annulled(first - 1, last, truncations):
            continue  # chained by a node that did not know the truncation (a stale node.meta)
        if first > covered + 1 and not _annulled(covered, first - 1, truncations):
            break
        covered = max(covered, last)
        if not _annulled(last_cpl - 1, last_cpl, truncations):
            vdl = max(vdl, last_cpl)
    return covered, vdl


def _highest_lsn(
    start: int,
    runs: list[tuple[int, int, int]],
    states: list[m.RecoveryState],
    truncations: list[tuple[int, int, int]],
) -> int:
    """The highest LSN any answer shows: a run's end, a segment's SCL or a truncation's end."""
    return max(
        [start]
        + [last for _, last, _ in runs]
        + [s.segments[i + 1] for s in states for i in range(0, len(s.segments), 3)]
        + [hi for _, _, hi in truncations]
    )


def _allocation_base(
    vdl: int, truncations: list[tuple[int, int, int]], opened_epoch: int | None
) -> int:
    """Where the truncation's allocation window starts (an earlier writer may have
    allocated up to LAL above it): the higher of VDL and the end of every truncation
    made by a writer that finished recovery (every one when ``opened_epoch`` is None)."""
    return max(
        [
            vdl,
            *(
                t_hi
                for t_epoch, _, t_hi in truncations
                if opened_epoch is None or t_epoch <= opened_epoch
            ),
        ]
    )
