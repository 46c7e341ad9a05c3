"""The page log (csrc/pagelog.c and its Python reference): append, materialize, coalesce.

A hypothesis model drives both implementations with the same batches, read
points and coalescing points, and demands identical bytes and page LSNs, equal
to a plain model that replays records one by one.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sample_records import PAGE_SIZE, Record, batch_of, disjoint_ranges, record_of, replay

from aurora_storage.errors import InvalidArgumentError, InvalidRecordError
from aurora_storage.format import frames as log
from aurora_storage.native.pagelog import NativePageLog, PythonPageLog, VersionGoneError

IMPLEMENTATIONS = [NativePageLog, PythonPageLog]


@pytest.fixture(params=IMPLEMENTATIONS, ids=["native", "python"])
def page_log(request: pytest.FixtureRequest) -> NativePageLog | PythonPageLog:
    return request.param(PAGE_SIZE)


def test_unwritten_page_reads_as_zeros(page_log: NativePageLog | PythonPageLog) -> None:
    image, page_lsn = page_log.materialize(42)
    assert image == bytes(PAGE_SIZE)
    assert page_lsn == 0


def test_read_points_select_versions(page_log: NativePageLog | PythonPageLog) -> None:
    page_log.append(batch_of([(1, 7, log.KIND_WRITE, 0, b"one"), (2, 8, log.KIND_WRITE, 0, b"x")]))
    page_log.append(batch_of([(3, 7, log.KIND_WRITE, 0, b"two"), (4, 7, log.KIND_WRITE, 4, b"!")]))
    assert page_log.materialize(7, 1)[0][:5] == b"one\x00\x00"
    assert page_log.materialize(7, 3)[0][:5] == b"two\x00\x00"
    image, page_lsn = page_log.materialize(7)
    assert image[:5] == b"two\x00!"
    assert page_lsn == 4
    assert page_log.materialize(7, annulled=[(2, 4)])[0][:5] == b"one\x00\x00"


def test_duplicates_are_skipped(page_log: NativePageLog | PythonPageLog) -> None:
    batch = batch_of([(5, 1, log.KIND_WRITE, 0, b"a"), (6, 1, log.KIND_WRITE, 1, b"b")])
    assert page_log.append(batch) == 2
    assert page_log.append(batch) == 0
    assert page_log.stats().records == 2


def test_coalesce_folds_and_forgets_old_versions(page_log: NativePageLog | PythonPageLog) -> None:
    page_log.append(
        batch_of([(1, 3, log.KIND_WRITE, 0, b"old"), (2, 3, log.KIND_WRITE, 0, b"new")])
    )
    page_log.append(batch_of([(3, 3, log.KIND_WRITE, 3, b"er")]))
    assert page_log.coalesce(2) == 2
    stats = page_log.stats()
    assert (stats.records, stats.images) == (1, 1)
    assert page_log.materialize(3)[0][:5] == b"newer"
    assert page_log.materialize(3, 2)[0][:5] == b"new\x00\x00"
    with pytest.raises(VersionGoneError):
        page_log.materialize(3, 1)
    # A record at or below the image is a duplicate now.
    assert page_log.append(batch_of([(2, 3, log.KIND_WRITE, 0, b"zzz")])) == 0


def test_bad_batch_changes_nothing(page_log: NativePageLog | PythonPageLog) -> None:
    page_log.append(batch_of([(1, 3, log.KIND_WRITE, 0, b"keep")]))
    bad = bytearray(batch_of([(2, 3, log.KIND_WRITE, 0, b"lost"), (3, 4, log.KIND_WRITE, 0, b"x")]))
    bad[56 + 40] = 9  # the second record's kind
    with pytest.raises(InvalidRecordError) as caught:
        page_log.append(bad)
    assert caught.value.position == 56
    assert page_log.materialize(3)[0][:4] == b"keep"
    assert page_log.stats().records == 1


def test_bad_arguments(page_log: NativePageLog | PythonPageLog) -> None:
    with pytest.raises(InvalidArgumentError):
        page_log.coalesce(5, annulled=[(4, 2)])
    with pytest.raises(InvalidArgumentError):
        type(page_log)(5000)


record_strategy = st.tuples(
    st.integers(0, 3),  # page
    st.sampled_from([log.KIND_WRITE, log.KIND_WRITE, log.KIND_WRITE, log.KIND_PAGE, log.KIND_ZERO]),
    st.integers(0, PAGE_SIZE - 1),  # offset
    st.integers(1, 64),  # length
    st.integers(1, 3),  # LSN gap
)


def packed_batches(
    batches: list[list[tuple[int, int, int, int, int]]],
) -> tuple[int, list[bytes], list[Record]]:
    """(last LSN, the packed batches, their records in order) of drawn batches."""
    lsn, packed, model_records = 0, [], []
    for batch in batches:
        records = []
        for page_no, kind, offset, length, gap in batch:
            lsn += gap
            records.append(record_of(lsn, page_no, kind, offset, length))
        model_records += records
        packed.append(batch_of(records))
    return lsn, packed, model_records


@settings(max_examples=150, deadline=None)
@given(
    batches=st.lists(st.lists(record_strategy, min_size=1, max_size=8), min_size=1, max_size=6),
    coalesce_fraction=st.floats(0, 1),
    read_fraction=st.floats(0, 1),
    annul=st.lists(st.tuples(st.integers(0, 60), st.integers(1, 10)), max_size=3),
)
def test_implementations_agree_with_model(
    batches: list[list[tuple[int, int, int, int, int]]],
    coalesce_fraction: float,
    read_fraction: float,
    annul: list[tuple[int, int]],
) -> None:
    lsn, packed, model_records = packed_batches(batches)
    annulled = disjoint_ranges(annul)
    coalesce_at = int(lsn * coalesce_fraction)
    read_at = coalesce_at + int((lsn - coalesce_at) * read_fraction)

    results = []
    for implementation in IMPLEMENTATIONS:
        page_log = implementation(PAGE_SIZE)
        for batch in packed:
            page_log.append(batch)
        page_log.coalesce(coalesce_at, annulled)
        pages = [page_log.materialize(page_no, read_at, annulled) for page_no in range(4)]
        results.append((pages, page_log.stats().records, page_log.page_nos()))
    assert results[0] == results[1]
    for page_no, (image, _page_lsn) in enumerate(results[0][0]):
        assert bytes(image) == replay(model_records, page_no, read_at, annulled), page_no


@settings(max_examples=100, deadline=None)
@given(
    batches=st.lists(st.lists(record_strategy, min_size=1, max_size=8), min_size=1, max_size=6),
    lo=st.integers(0, 4),
    width=st.integers(0, 4),
    forgotten=st.lists(st.integers(0, 5), max_size=4),
)
def test_a_page_range_keeps_only_its_pages_and_forget_drops_pages_whole(
    batches: list[list[tuple[int, int, int, int, int]]],
    lo: int,
    width: int,
    forgotten: list[int],
) -> None:
    """append(pages=(lo, hi)) indexes exactly the records of those pages, as if the
    others were never in the batch; forget drops named pages so they read as zeros,
    and a page appended again after it reads from its new records alone."""
    lsn, packed, model_records = packed_batches(batches)
    hi = lo + width
    kept = [record for record in model_records if lo <= record[1] < hi]
    for implementation in IMPLEMENTATIONS:
        page_log = implementation(PAGE_SIZE)
        added = sum(page_log.append(batch, pages=(lo, hi)) for batch in packed)
        assert added == len(kept)
        assert page_log.page_nos() == sorted({record[1] for record in kept})
        for page_no in range(6):
            assert bytes(page_log.materialize(page_no)[0]) == replay(kept, page_no, lsn)
        held = set(page_log.page_nos())
        assert page_log.forget(forgotten) == len(held & set(forgotten))
        assert set(page_log.page_nos()) == held - set(forgotten)
        for page_no in range(6):
            expected = bytes(PAGE_SIZE) if page_no in forgotten else replay(kept, page_no, lsn)
            assert bytes(page_log.materialize(page_no)[0]) == expected
        for batch in packed:  # the forgotten pages take their records again
            page_log.append(batch, pages=(lo, hi))
        for page_no in range(6):
            assert bytes(page_log.materialize(page_no)[0]) == replay(kept, page_no, lsn)


@pytest.mark.parametrize("typecode", ["Q", "I", "L", "q"])
def test_annulled_arrays_of_any_item_size_read_the_same(
    page_log: NativePageLog | PythonPageLog, typecode: str
) -> None:
    """C reads annulled ranges as uint64 pairs: an array of smaller items is converted,
    never read past its end (AddressSanitizer caught that for "I")."""
    from array import array

    page_log.append(
        batch_of([(1, 7, log.KIND_WRITE, 0, b"one"), (3, 7, log.KIND_WRITE, 0, b"two")])
    )
    annulled = array(typecode, [2, 3])
    assert page_log.materialize(7, annulled=annulled)[0][:3] == b"one"
    images, page_lsns = page_log.materialize_many([7], annulled=annulled)
    assert bytes(images)[:3] == b"one" and list(page_lsns) == [1]
    with pytest.raises(InvalidArgumentError):
        page_log.materialize(7, annulled=array(typecode, [2, 3, 4]))
    with pytest.raises(InvalidArgumentError):
        page_log.materialize(7, annulled=array("q", [-1, 3]))


def test_materialize_many_refuses_an_output_it_cannot_write(
    page_log: NativePageLog | PythonPageLog,
) -> None:
    page_log.append(batch_of([(1, 7, log.KIND_WRITE, 0, b"one")]))
    for out in (bytes(PAGE_SIZE), bytearray(PAGE_SIZE - 1)):
        with pytest.raises(InvalidArgumentError):
            page_log.materialize_many([7], out=out)
    out = bytearray(PAGE_SIZE)
    page_log.materialize_many([7], out=out)
    assert out[:3] == b"one"


# Large logs: record batches in the C page log's arena (csrc/pagelog.c) ----------------

ARENA_AFTER = 256 * 1024  # a log holding this much takes batches from its arena


def workload(seed: int, pages: int, batches: int) -> list[list[Record]]:
    """Batches of writes over ``pages`` pages, a few pages taking most of them so
    their batches outgrow the arena's largest block, with some PAGE and ZERO records."""
    rng = random.Random(seed)
    hot = rng.sample(range(pages), k=min(2, pages))
    lsn = 0
    out = []
    for _ in range(batches):
        records = []
        for _ in range(rng.randint(20, 120)):
            lsn += rng.randint(1, 3)
            page_no = rng.choice(hot) if rng.random() < 0.3 else rng.randrange(pages)
            kind = rng.choices([log.KIND_WRITE, log.KIND_PAGE, log.KIND_ZERO], [40, 1, 1])[0]
            if kind == log.KIND_WRITE:
                length = rng.randint(1, 600)
                offset = rng.randrange(PAGE_SIZE - length + 1)
                payload = rng.randbytes(length)
            elif kind == log.KIND_PAGE:
                offset, payload = 0, rng.randbytes(PAGE_SIZE)
            else:
                offset, payload = 0, b""
            records.append((lsn, page_no, kind, offset, payload))
        out.append(records)
    return out


@settings(max_examples=12, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    pages=st.integers(1, 300),
    batches=st.integers(20, 90),
    coalesce_points=st.lists(st.floats(0, 1), max_size=3),
)
def test_large_logs_read_like_the_reference_and_the_records(
    seed: int, pages: int, batches: int, coalesce_points: list[float]
) -> None:
    plan = workload(seed, pages, batches)
    last_lsn = plan[-1][-1][0]
    coalesce_at = sorted({int(point * len(plan)) for point in coalesce_points})
    logs = [NativePageLog(PAGE_SIZE), PythonPageLog(PAGE_SIZE)]
    coalesced = 0
    peak = 0  # the most record bytes the log held: coalescing may fold most of them
    for index, records in enumerate(plan):
        for page_log in logs:
            page_log.append(batch_of(records))
        peak = max(peak, logs[0].stats().record_bytes)
        while coalesce_at and coalesce_at[0] == index:
            coalesce_at.pop(0)
            coalesced = max(coalesced, records[-1][0] // 2)
            for page_log in logs:
                page_log.coalesce(coalesced)
    native, python = logs
    flat = [record for records in plan for record in records]
    stats = native.stats()
    assert peak > ARENA_AFTER, "the workload reaches the arena"
    assert stats.allocated_bytes >= stats.record_bytes + stats.image_bytes
    assert stats.records == python.stats().records
    assert native.page_nos() == python.page_nos()
    bounds = sorted({last_lsn, coalesced, (coalesced + last_lsn) // 2})
    for page_no in native.page_nos():
        for bound in bounds:
            image, page_lsn = native.materialize(page_no, bound)
            reference, reference_lsn = python.materialize(page_no, bound)
            assert (bytes(image), page_lsn) == (bytes(reference), reference_lsn), (page_no, bound)
            assert bytes(image) == replay(flat, page_no, bound), (page_no, bound)
    native.close()
