"""Property tests: the C core and the Python reference agree, with each other and with a model.

(a) Random valid batches (every kind, pages from a small set, random LSN
bound, annulled ranges and page LSNs) give both backends the same pages,
applied counts and page LSNs as a small model written here, record by record.
(b) Random bytes, mutated valid batches and records with hostile header
fields make both backends succeed identically or raise the same exception
at the same position, never crash, and never touch the pages on error.

Hypothesis prints the falsifying example and a reproduction blob on failure
(print_blob) and keeps failures in its default database, so they replay.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sample_records import PAGE_SIZE, RAW_HEADER, pattern

from aurora_storage import native
from aurora_storage.errors import AuroraStorageError, InvalidRecordError
from aurora_storage.format import frames as log
from aurora_storage.native import LSN_MAX, NO_BACKLINK

NATIVE = native.get_backend("native")
PYTHON = native.get_backend("python")
PAGE_POOL = range(6)  # pages records are written to
LISTABLE_PAGES = range(8)  # pages apply may be given; 6 and 7 receive no record
PROPERTY_SETTINGS = settings(
    max_examples=300,
    deadline=None,  # no timing assertions
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@dataclass(frozen=True)
class Record:
    lsn: int
    page_no: int
    kind: int
    offset: int
    payload: bytes
    flags: int
    time: float


@dataclass(frozen=True)
class ApplyCase:
    records: list[Record]
    page_nos: list[int]
    pages: bytes
    page_lsns: list[int] | None
    lsn_bound: int
    annulled: list[tuple[int, int]]


def pack(records: list[Record]) -> bytes:
    builder = log.BatchBuilder()
    for record in records:
        builder.add(
            record.lsn,
            0,
            record.page_no,
            record.kind,
            record.payload,
            offset=record.offset,
            flags=record.flags,
            time=record.time,
        )
    return bytes(builder.buffer)


@st.composite
def records_strategy(draw: st.DrawFn, max_count: int = 12) -> list[Record]:
    records = []
    lsn = 0
    for _ in range(draw(st.integers(1, max_count))):
        lsn += draw(st.integers(1, 3))
        kind = draw(st.sampled_from([log.KIND_WRITE] * 4 + [log.KIND_PAGE, log.KIND_ZERO]))
        offset = 0
        payload = b""
        if kind == log.KIND_WRITE:
            length = draw(st.integers(1, 40))
            offset = draw(
                st.one_of(
                    st.just(0), st.just(PAGE_SIZE - length), st.integers(0, PAGE_SIZE - length)
                )
            )
            payload = draw(st.binary(min_size=length, max_size=length))
        elif kind == log.KIND_PAGE:
            payload = pattern(draw(st.integers(0, 2**32)), PAGE_SIZE)
        cpl = draw(st.booleans())
        time = draw(st.floats(0, 2e9)) if cpl else 0.0
        records.append(
            Record(lsn, draw(st.sampled_from(PAGE_POOL)), kind, offset, payload, int(cpl), time)
        )
    return records


@st.composite
def annulled_strategy(draw: st.DrawFn, lsn_max: int) -> list[tuple[int, int]]:
    """Sorted, disjoint ranges (lo, hi]; a range may start where the previous one ends."""
    ranges = []
    lo = draw(st.integers(0, 4))
    for _ in range(draw(st.integers(0, 3))):
        hi = lo + draw(st.integers(1, max(1, lsn_max // 3)))
        ranges.append((lo, hi))
        lo = hi + draw(st.integers(0, 4))
    return ranges


@st.composite
def apply_cases(draw: st.DrawFn) -> ApplyCase:
    records = draw(records_strategy())
    last_lsn = records[-1].lsn
    page_nos = sorted(draw(st.sets(st.sampled_from(LISTABLE_PAGES))))
    page_lsns = draw(
        st.one_of(
            st.none(),
            st.lists(st.integers(0, last_lsn), min_size=len(page_nos), max_size=len(page_nos)),
        )
    )
    return ApplyCase(
        records=records,
        page_nos=page_nos,
        pages=pattern(draw(st.integers(0, 2**32)), len(page_nos) * PAGE_SIZE),
        page_lsns=page_lsns,
        lsn_bound=draw(st.one_of(st.integers(0, last_lsn + 1), st.just(LSN_MAX))),
        annulled=draw(annulled_strategy(last_lsn)),
    )


def model_apply(case: ApplyCase) -> tuple[bytes, int, list[int] | None]:
    """What applying ``case`` must give: a dict of page -> bytearray, one record at a time."""
    images = {
        page_no: bytearray(case.pages[slot * PAGE_SIZE : (slot + 1) * PAGE_SIZE])
        for slot, page_no in enumerate(case.page_nos)
    }
    page_lsns = (
        None if case.page_lsns is None else dict(zip(case.page_nos, case.page_lsns, strict=True))
    )
    applied = 0
    for record in case.records:
        if record.lsn > case.lsn_bound:
            continue
        if any(lo < record.lsn <= hi for lo, hi in case.annulled):
            continue
        if record.page_no not in images:
            continue
        if page_lsns is not None:
            if record.lsn <= page_lsns[record.page_no]:
                continue
            page_lsns[record.page_no] = record.lsn
        image = images[record.page_no]
        if record.kind == log.KIND_WRITE:
            image[record.offset : record.offset + len(record.payload)] = record.payload
        elif record.kind == log.KIND_PAGE:
            image[:] = record.payload
        else:
            image[:] = bytes(PAGE_SIZE)
        applied += 1
    pages = b"".join(bytes(images[page_no]) for page_no in case.page_nos)
    lsns = None if page_lsns is None else [page_lsns[page_no] for page_no in case.page_nos]
    return pages, applied, lsns


def run_apply(backend: native.Backend, case: ApplyCase) -> tuple[bytes, int, list[int] | None]:
    pages = bytearray(case.pages)
    page_lsns = None if case.page_lsns is None else array("Q", case.page_lsns)
    annulled = array("Q", [bound for pair in case.annulled for bound in pair])
    applied = backend.apply(
        pack(case.records),
        PAGE_SIZE,
        array("Q", case.page_nos),
        pages,
        page_lsns,
        case.lsn_bound,
        annulled,
    )
    return bytes(pages), applied, None if page_lsns is None else list(page_lsns)


@PROPERTY_SETTINGS
@given(apply_cases())
def test_both_backends_apply_valid_batches_like_the_model(case: ApplyCase) -> None:
    expected = model_apply(case)
    assert run_apply(NATIVE, case) == expected
    assert run_apply(PYTHON, case) == expected


@PROPERTY_SETTINGS
@given(records_strategy())
def test_both_backends_summarize_and_index_valid_batches_like_the_records(
    records: list[Record],
) -> None:
    batch = pack(records)
    cpl_records = [record for record in records if record.flags & log.FLAG_CPL]
    expected_summary = native.BatchSummary(
        count=len(records),
        first_lsn=records[0].lsn,
        last_lsn=records[-1].lsn,
        cpl_count=len(cpl_records),
        last_cpl_lsn=cpl_records[-1].lsn if cpl_records else 0,
        payload_bytes=sum(len(record.payload) for record in records),
        last_cpl_time=cpl_records[-1].time if cpl_records else 0.0,
    )
    positions = [0]
    for record in records[:-1]:
        positions.append(positions[-1] + log.record_size(len(record.payload)))
    for backend in (NATIVE, PYTHON):
        assert backend.validate(batch, PAGE_SIZE, 0, len(PAGE_POOL), NO_BACKLINK) == (
            expected_summary
        )
        index = backend.index(batch, PAGE_SIZE)
        assert list(index.page_nos) == [record.page_no for record in records]
        assert list(index.lsns) == [record.lsn for record in records]
        assert index.flags == bytes(record.flags for record in records)
        assert list(index.times) == [record.time for record in records]
        assert list(index.positions) == positions


# --- (b) hostile input ---------------------------------------------------------------


@st.composite
def mutated_batches(draw: st.DrawFn) -> bytes:
    """A valid batch with bytes overwritten, then perhaps cut or extended."""
    batch = bytearray(pack(draw(records_strategy(max_count=4))))
    for _ in range(draw(st.integers(1, 4))):
        position = draw(st.integers(0, len(batch) - 1))
        batch[position] = draw(st.integers(0, 255))
    cut = draw(st.one_of(st.none(), st.integers(0, len(batch))))
    if cut is not None:
        del batch[cut:]
    batch += draw(st.binary(max_size=draw(st.sampled_from([0, 8, 60]))))
    return bytes(batch)


@st.composite
def hostile_records(draw: st.DrawFn) -> bytes:
    """Records whose header fields sit on and around every validity boundary."""
    parts = []
    for _ in range(draw(st.integers(1, 4))):
        length = draw(st.sampled_from([0, 1, 5, 8, 13, 4095, 4096, 4104, 0xFFFF_FFFF]))
        header = RAW_HEADER.pack(
            draw(st.sampled_from([0, 1, 2, 3, 5, LSN_MAX])),
            draw(st.sampled_from([0, 1, 2, NO_BACKLINK])),
            draw(st.sampled_from([0, 1, 5, 6, LSN_MAX])),
            draw(st.sampled_from([0.0, 1.5, float("nan")])),
            draw(st.sampled_from([0, 1, 8, 4088, 4095, 4096, 0xFFFF_FFFF])),
            length,
            draw(st.integers(0, 4)),
            draw(st.sampled_from([0, 1, 2, 3, 0x80])),
            draw(st.sampled_from([bytes(6), bytes(6), b"\x00\x00\x00\x00\x00\x01"])),
        )
        if length <= PAGE_SIZE + 8 and draw(st.booleans()):
            body_size = log.record_size(length) - native.RECORD_HEADER_SIZE
            padding = body_size - length
            body = pattern(draw(st.integers(0, 1000)), length) + draw(
                st.sampled_from([bytes(padding), b"\x01" * padding])
            )
        else:
            body = draw(st.binary(max_size=24))
        parts.append(header + body)
    return b"".join(parts)


hostile_batches = st.one_of(st.binary(max_size=300), mutated_batches(), hostile_records())


def outcome(call: Callable[..., Any], *arguments: Any) -> tuple[str, Any]:
    """What ``call`` returned, or the exception it raised reduced to what must be identical."""
    try:
        result: tuple[str, Any] = ("returned", call(*arguments))
    except InvalidRecordError as error:
        result = ("raised", (type(error), error.position, error.field, error.reason))
    except AuroraStorageError as error:
        result = ("raised", (type(error), str(error)))
    # Shown by --hypothesis-show-statistics: how deep the generated inputs got.
    if result[0] == "returned":
        event("returned")
    elif result[1][0] is InvalidRecordError:
        event(f"raised InvalidRecordError: {result[1][3]}")
    else:
        event(f"raised {result[1][0].__name__}")
    return result


def index_columns(backend: native.Backend, batch: bytes, page_size: int) -> tuple[bytes, ...]:
    """Index columns as bytes, so NaN times compare by their bits."""
    index = backend.index(batch, page_size)
    return (
        index.page_nos.tobytes(),
        index.lsns.tobytes(),
        index.flags,
        index.times.tobytes(),
        index.positions.tobytes(),
    )


@PROPERTY_SETTINGS
@given(
    batch=hostile_batches,
    page_size=st.sampled_from([4096, 8192]),
    page_lo=st.integers(0, 3),
    page_span=st.integers(0, 8),
    backlink=st.sampled_from([NO_BACKLINK, 0, 1, 2]),
)
def test_backends_agree_on_validate_of_hostile_bytes(
    batch: bytes, page_size: int, page_lo: int, page_span: int, backlink: int
) -> None:
    results = [
        outcome(backend.validate, batch, page_size, page_lo, page_lo + page_span, backlink)
        for backend in (NATIVE, PYTHON)
    ]
    assert results[0] == results[1]


@PROPERTY_SETTINGS
@given(batch=hostile_batches, page_size=st.sampled_from([4096, 8192]))
def test_backends_agree_on_index_of_hostile_bytes(batch: bytes, page_size: int) -> None:
    results = [outcome(index_columns, backend, batch, page_size) for backend in (NATIVE, PYTHON)]
    assert results[0] == results[1]


@PROPERTY_SETTINGS
@given(
    batch=hostile_batches,
    page_nos=st.sets(st.sampled_from([0, 1, 2, 5, 6, LSN_MAX])).map(sorted),
    with_page_lsns=st.booleans(),
    lsn_bound=st.sampled_from([0, 1, 3, LSN_MAX]),
    annulled=st.one_of(
        st.just([]),
        st.just([0, 1]),
        st.just([1, 2, 2, 4]),
        st.lists(st.integers(0, 6), max_size=5),  # often invalid: both must refuse it alike
    ),
    seed=st.integers(0, 1000),
)
def test_backends_agree_on_apply_of_hostile_bytes_and_leave_pages_on_error(
    batch: bytes,
    page_nos: list[int],
    with_page_lsns: bool,
    lsn_bound: int,
    annulled: list[int],
    seed: int,
) -> None:
    pages_before = pattern(seed, len(page_nos) * PAGE_SIZE)
    page_lsns_before = [seed % 4] * len(page_nos)
    results = []
    for backend in (NATIVE, PYTHON):
        pages = bytearray(pages_before)
        page_lsns = array("Q", page_lsns_before) if with_page_lsns else None
        result = outcome(
            backend.apply,
            batch,
            PAGE_SIZE,
            array("Q", page_nos),
            pages,
            page_lsns,
            lsn_bound,
            array("Q", annulled),
        )
        if result[0] == "raised":
            assert pages == pages_before
            assert page_lsns is None or list(page_lsns) == page_lsns_before
        results.append((result, bytes(pages), None if page_lsns is None else list(page_lsns)))
    assert results[0] == results[1]


def decoded_body(frame: bytes | bytearray) -> bytes:
    return bytes(log.decode_frame(frame, PAGE_SIZE).body)


@PROPERTY_SETTINGS
@given(st.data())
def test_a_mutated_frame_never_decodes_to_other_records(data: st.DataObject) -> None:
    """Random byte changes to a frame are caught on both backends, never silently accepted."""
    records = data.draw(records_strategy(max_count=3))
    body = pack(records)
    frame = log.encode_frame(0, 1, 0, records[0].lsn, records[-1].lsn, len(records), body)
    mutated = bytearray(frame)
    for _ in range(data.draw(st.integers(1, 3))):
        position = data.draw(st.integers(0, len(frame) - 1))
        mutated[position] ^= data.draw(st.integers(1, 255))
    results = []
    for backend in (NATIVE, PYTHON):
        original = native.backend
        native.backend = backend
        try:
            result = outcome(decoded_body, mutated)
        finally:
            native.backend = original
        results.append(result)
        assert result[0] == "raised" or result[1] == body
    assert results[0] == results[1]


# --- page sets: apply_to and apply_verified ----------------------------------------------


def run_on_page_set(
    entry: Callable[[native.PageSet, bytes, int, array[int]], int], case: ApplyCase
) -> tuple[bytes, int, list[int] | None]:
    pages = bytearray(case.pages)
    page_lsns = None if case.page_lsns is None else array("Q", case.page_lsns)
    annulled = array("Q", [bound for pair in case.annulled for bound in pair])
    with native.PageSet(PAGE_SIZE, case.page_nos, pages, page_lsns) as page_set:
        applied = entry(page_set, pack(case.records), case.lsn_bound, annulled)
    return bytes(pages), applied, None if page_lsns is None else list(page_lsns)


@PROPERTY_SETTINGS
@given(apply_cases())
def test_both_entry_points_of_both_backends_apply_page_sets_like_the_model(
    case: ApplyCase,
) -> None:
    expected = model_apply(case)
    for backend in (NATIVE, PYTHON):
        assert run_on_page_set(backend.apply_to, case) == expected
        assert run_on_page_set(backend.apply_verified, case) == expected


GUARD = b"\x5a" * 64


@PROPERTY_SETTINGS
@given(
    batch=hostile_batches,
    page_nos=st.sets(st.sampled_from([0, 1, 2, 5, 6, LSN_MAX])).map(sorted),
    with_page_lsns=st.booleans(),
    lsn_bound=st.sampled_from([0, 1, 3, LSN_MAX]),
    annulled=st.sampled_from([[], [0, 1], [1, 2, 2, 4]]),
    seed=st.integers(0, 1000),
)
def test_apply_verified_of_hostile_bytes_stays_inside_its_pages(
    batch: bytes,
    page_nos: list[int],
    with_page_lsns: bool,
    lsn_bound: int,
    annulled: list[int],
    seed: int,
) -> None:
    """apply_verified trusts its batch for the format's rules, never for memory safety.

    On random bytes it may apply anything to the page set, or stop with an
    InvalidRecordError inside the batch; it never writes past the pages (the
    guard bytes around them; run_asan.sh checks every read). On a batch that
    is valid after all, it gives what the validating apply_to gives.
    """
    pages_before = pattern(seed, len(page_nos) * PAGE_SIZE)
    arena = bytearray(GUARD + pages_before + GUARD)
    page_lsns = array("Q", [seed % 4] * len(page_nos) + [0x5A5A]) if with_page_lsns else None
    view = memoryview(arena)[len(GUARD) : len(GUARD) + len(pages_before)]
    with native.PageSet(PAGE_SIZE, page_nos, view, page_lsns) as page_set:
        result = outcome(NATIVE.apply_verified, page_set, batch, lsn_bound, array("Q", annulled))
    view.release()
    assert arena[: len(GUARD)] == GUARD
    assert arena[len(GUARD) + len(pages_before) :] == GUARD
    assert page_lsns is None or page_lsns[-1] == 0x5A5A
    if result[0] == "raised":
        error_type, position, *_ = result[1]
        assert error_type is InvalidRecordError
        assert 0 <= position < max(1, len(batch))
    reference = outcome(PYTHON.validate, batch, PAGE_SIZE, 0, LSN_MAX, NO_BACKLINK)
    if reference[0] == "returned":
        case_pages = bytearray(pages_before)
        case_lsns = array("Q", [seed % 4] * len(page_nos)) if with_page_lsns else None
        with native.PageSet(PAGE_SIZE, page_nos, case_pages, case_lsns) as page_set:
            expected = PYTHON.apply_to(page_set, batch, lsn_bound, array("Q", annulled))
        assert result == ("returned", expected)
        assert arena[len(GUARD) : len(GUARD) + len(pages_before)] == case_pages
        assert page_lsns is None or list(page_lsns[:-1]) == list(case_lsns or [])
