"""Writer recovery's plan against a brute-force model of what the nodes hold.

Segments report their chain above the VDL hint as runs of frames with
consecutive LSNs (Segment.intervals_above); recovery.plan merges the runs of
every node into VCL and VDL. The model counts LSNs one by one: VCL is the end
of the unbroken run of LSNs some node holds, VDL the last MTR end at or below
it.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from aurora_storage.config import Geometry
from aurora_storage.protocol import messages as m
from aurora_storage.protocol import recovery
from aurora_storage.protocol.segment import Segment

NODES = 6
GEOMETRY = Geometry(page_size=4096, pages_per_pg=8, page_count=64)


History = tuple[int, list[list[tuple[int, int, int]]], list[list[int]], list[int]]


@st.composite
def histories(draw: st.DrawFn) -> History:
    """PG count, each PG's frames (first, last, ends MTR) in LSN order, per node how
    many frames of each PG's chain it holds (a chain is always a prefix), and per
    node its VDL hint (0, or a VDL every PG's chain reached on a write quorum)."""
    pg_count = draw(st.integers(1, 3))
    frames: list[list[tuple[int, int, int]]] = [[] for _ in range(pg_count)]
    lsn = 0
    for _ in range(draw(st.integers(0, 25))):  # MTRs: contiguous LSNs split over PGs
        parts = draw(st.lists(st.integers(0, pg_count - 1), min_size=1, max_size=3))
        for index, pg_id in enumerate(parts):
            size = draw(st.integers(1, 4))
            frames[pg_id].append((lsn + 1, lsn + size, int(index == len(parts) - 1)))
            lsn += size
    held = [
        [draw(st.integers(0, len(frames[pg_id]))) for pg_id in range(pg_count)]
        for _ in range(NODES)
    ]

    # A hint is a VDL once reached: an MTR end below which four nodes held everything.
    def reached(end: int) -> bool:
        holders = 0
        for node in range(NODES):
            held_lsns = {
                lsn
                for pg_id in range(pg_count)
                for first, last, _ in frames[pg_id][: held[node][pg_id]]
                for lsn in range(first, last + 1)
            }
            owned = {
                lsn
                for pg_id in range(pg_count)
                for first, last, _ in frames[pg_id]
                for lsn in range(first, last + 1)
                if lsn <= end
            }
            holders += owned <= held_lsns
        return holders >= 4

    ends = [0] + [last for chain in frames for _, last, e in chain if e and reached(last)]
    hints = [draw(st.sampled_from(ends)) for _ in range(NODES)]
    return pg_count, frames, held, hints


def segment_holding(pg_id: int, frames: list[tuple[int, int, int]]) -> Segment:
    segment = Segment(pg_id, GEOMETRY)
    segment.chain_first_lsns = [first for first, _, _ in frames]
    segment.chain_last_lsns = [last for _, last, _ in frames]
    segment.cpl_lsns = [last for _, last, ends in frames if ends]
    segment.cpl_times = [0.0] * len(segment.cpl_lsns)
    segment.scl = frames[-1][1] if frames else 0
    return segment


@settings(max_examples=300, deadline=None)
@given(histories())
def test_plan_matches_lsn_by_lsn_model(history: History) -> None:
    pg_count, frames, held, hints = history
    start = max(hints)
    states = []
    present: set[int] = set()
    mtr_ends: set[int] = set()
    for node in range(NODES):
        segments: list[int] = []
        intervals: list[int] = []
        for pg_id in range(pg_count):
            chain = frames[pg_id][: held[node][pg_id]]
            for first, last, ends in chain:
                present.update(range(first, last + 1))
                if ends:
                    mtr_ends.add(last)
            segment = segment_holding(pg_id, chain)
            segments += (pg_id, segment.scl, 0)
            found = segment.intervals_above(hints[node])
            for i in range(0, len(found), 3):
                intervals += (pg_id, *found[i : i + 3])
        states.append(
            m.RecoveryState(f"n{node}", 1, hints[node], 0, (), tuple(segments), tuple(intervals))
        )
    vcl = start
    while vcl + 1 in present:
        vcl += 1
    vdl = max((end for end in mtr_ends if end <= vcl), default=0)
    assert vdl >= start
    plan = recovery.plan(2, states, lal=100)
    assert (plan.vcl, plan.vdl) == (vcl, vdl)
    assert plan.truncation[0] == vdl and plan.truncation[1] >= max(present, default=0)


def test_one_pg_reports_one_run_however_long_its_chain() -> None:
    frames = [(lsn, lsn, int(lsn % 3 == 0)) for lsn in range(1, 2001)]
    segment = segment_holding(0, frames)
    assert segment.intervals_above(0) == (1, 2000, 1998)
    assert segment.intervals_above(1500) == (1501, 2000, 1998)
    assert segment.intervals_above(2000) == ()


def test_truncation_covers_what_a_recovered_writer_may_have_allocated() -> None:
    """A writer that recovered with truncation (100, 1100] and opened counts its LSNs in
    flight from 1100: it may have allocated up to 1100 + LAL. The next recovery, finding
    none of them (they reached no node that answers), must still annul them all, or the
    next writer would hand out those LSNs again."""
    states = [
        m.RecoveryState(f"n{node}", 2, 100, 0, (2, 100, 1100), (0, 100, 0), ())
        for node in range(NODES)
    ]
    plan = recovery.plan(3, states, lal=1000, opened_epoch=2)
    assert plan.vdl == 100
    assert plan.truncation == (100, 2100)
    # The writer of epoch 2 never opened (its recovery was cut short): it allocated
    # nothing, and the range stays what it was, however often recovery is cut short.
    again = recovery.plan(3, states, lal=1000, opened_epoch=1)
    assert again.truncation == (100, 1100)
    assert recovery.plan(3, states, lal=1000).truncation == (100, 2100), "unknown: all count"
