"""A segment that defers indexing its chained frames reads exactly as one that does not.

Nodes with fsync durability index the frames of a flush while it runs
(segment.defer_indexing, SyncJob.index); every use of the page log in
between must see them. A model test runs the same operations on a deferring
and an eager segment, indexing at arbitrary moments, and compares reads.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from aurora_storage.config import Geometry
from aurora_storage.format import frames as log
from aurora_storage.protocol.segment import Segment

PAGE = 4096
GEOMETRY = Geometry(page_size=PAGE, pages_per_pg=8, page_count=64)


def frame(first_lsn: int, writes: list[tuple[int, int, bytes]]) -> bytes:
    body = b"".join(
        log.pack_record(lsn, lsn - 1, page_no, log.KIND_WRITE, data, offset)
        for lsn, (page_no, offset, data) in enumerate(writes, start=first_lsn)
    )
    last = first_lsn + len(writes) - 1
    return log.encode_frame(0, 1, first_lsn - 1, first_lsn, last, len(writes), body)


def test_reading_a_deferring_segment_indexes_first() -> None:
    segment = Segment(0, GEOMETRY)
    segment.defer_indexing = True
    segment.receive((frame(1, [(3, 0, b"first"), (5, 10, b"second")]),))
    assert segment.persist() == 2
    assert len(segment.unindexed) == 1, "chained, not yet indexed"
    assert segment.read(3, 2, ())[:5] == b"first"
    assert segment.unindexed == []
    assert segment.read(5, 2, ())[10:16] == b"second"


writes = st.lists(
    st.tuples(st.integers(0, 7), st.integers(0, PAGE - 16), st.binary(min_size=1, max_size=16)),
    min_size=1,
    max_size=4,
)
steps = st.lists(
    st.one_of(
        st.tuples(st.just("frame"), writes),
        st.tuples(st.just("index"), st.none()),
        st.tuples(st.just("coalesce"), st.integers(0, 40)),
        st.tuples(st.just("read"), st.tuples(st.integers(0, 7), st.integers(0, 40))),
    ),
    max_size=25,
)


@settings(max_examples=150, deadline=None)
@given(steps=steps)
def test_deferring_and_eager_segments_agree(steps: list[tuple[str, object]]) -> None:
    eager, deferring = Segment(0, GEOMETRY), Segment(0, GEOMETRY)
    deferring.defer_indexing = True
    lsn = 1
    for action, argument in steps:
        if action == "frame":
            assert isinstance(argument, list)
            data = frame(lsn, argument)
            lsn += len(argument)
            for segment in (eager, deferring):
                segment.receive((data,))
                segment.persist()
        elif action == "index":
            deferring.index_frames()
        elif action == "coalesce":
            assert isinstance(argument, int)
            assert eager.coalesce(argument) == deferring.coalesce(argument)
        else:
            assert isinstance(argument, tuple)
            page_no, read_point = argument
            if read_point >= max(eager.coalesced_lsn, 1):
                assert eager.read(page_no, read_point, ()) == deferring.read(
                    page_no, read_point, ()
                )
    assert eager.scl == deferring.scl
    assert eager.page_log.page_nos(with_records=True) == deferring.page_log.page_nos(
        with_records=True
    )
