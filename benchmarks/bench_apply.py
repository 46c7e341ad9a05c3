"""Benchmarks of native.apply: redo record batches applied to page images.

Named workloads, one function each, every one timed against its baselines in
the same run (README.md, "Benchmarks") and checked for the right result:

- ``apply_batch_10k_pages``: 100-byte WRITE records at pseudo-random pages and
  offsets of 10,000 dense 16 KiB pages, applied batch by batch with
  ``apply_to``, which validates each batch before it writes any page.
- ``apply_verified_batch_10k_pages``: the same batches through
  ``apply_verified``, for batches validated earlier (as a frame body is when
  it arrives): one pass that checks only what memory safety needs. The batches
  are validated before timing starts, so its rate leaves that cost out; the
  rate of ``apply_batch_10k_pages`` is what validating and applying cost
  together.
- ``apply_large_working_set`` and ``apply_verified_large_working_set``: the
  same two over 131,072 pages (2 GiB), so that nearly every write misses the
  caches and the TLB.
- ``materialize_page_100_records``: one page, 100 pending records of mixed
  kinds, an LSN bound that leaves out the last 20, through the one-shot
  ``apply`` (no page set: a materialization builds none).

Roles: ``subject`` is the C core through ``get_backend("native")``, on a
``native.PageSet`` built once before timing (as a caller holding a page cache
would); ``baseline-A`` is ``aus_baseline_writes``, a plain C memcpy loop over
the same writes with their slots, offsets, lengths and payloads laid out
beforehand (no format, no lookup, no checks); ``baseline-B`` is the
pure-Python backend on a page set too, run on fewer records where it is slow
(rates are per record, so ratios stay fair). The apply workloads interleave:
one round of each baseline runs just before each round of the subject
(``conftest.interleave``), so that both see the same load on this shared
machine.

Run: ``.venv/bin/pytest benchmarks/bench_apply.py --benchmark-only -q``.
"""

from __future__ import annotations

import ctypes
import mmap
import random
import struct
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass
from itertools import accumulate
from typing import Any

import pytest
from conftest import interleave, sized

from aurora_storage import native
from aurora_storage.format import frames as log

PAGE_SIZE = 16 * 1024
WRITE_BYTES = 100
SEED = 20170514  # fixed: every run applies the same records
BATCH_SIZES = (256, 4096)
NO_ANNULLED = array("Q")

SMALL_PAGE_COUNT = sized(10_000, 64)
SMALL_RECORDS = sized(65_536, 8_192)  # 256 batches of 256, 16 of 4096
SMALL_RECORDS_PYTHON = sized(8_192, 256)  # the Python backend gets a prefix of the same records
SMALL_ROUNDS = sized(21, 2)

LARGE_PAGE_COUNT = sized(131_072, 128)  # 2 GiB of 16 KiB pages
LARGE_RECORDS = sized(1_048_576, 8_192)  # 8 writes a page on average, 128 MiB of lines written
LARGE_ROUNDS = sized(7, 2)

MATERIALIZE_PAGE_NO = 4242
MATERIALIZE_RECORDS = 100
MATERIALIZE_EXCLUDED = 20  # the last records lie above the LSN bound
MATERIALIZE_ZERO_AT = 10
MATERIALIZE_PAGE_AT = 30

GOALS_BATCHED = {"baseline-A": 0.80, "baseline-B": 25.0}
GOALS_LARGE = {"baseline-A": 0.60}
GOAL_MATERIALIZE_US = 20.0


def native_core() -> native.NativeBackend:
    backend = native.get_backend("native")
    assert isinstance(backend, native.NativeBackend), "benchmarks need the compiled C core"
    return backend


NATIVE = native_core()
PYTHON = native.get_backend("python")

# implementation -> (role in the ratio table, label)
IMPLEMENTATIONS: dict[str, tuple[str, str]] = {
    "native": ("subject", "native apply_to (C core, validates)"),
    "native-verified": ("subject", "native apply_verified (C core)"),
    "memcpy": ("baseline-A", "memcpy loop (aus_baseline_writes)"),
    "python": ("baseline-B", "python backend"),
}
SUBJECTS = ("native", "native-verified")


def workload_name(family: str, subject: str, batch_size: int) -> str:
    entry = "apply_verified" if subject == "native-verified" else "apply"
    return f"{entry}_{family}[batch={batch_size}]"


# --- workloads ----------------------------------------------------------------------


@dataclass(frozen=True)
class Writes:
    """Records as the C core reads them (``records``) and as baseline A reads them (columns).

    Record ``i`` has LSN ``i + 1`` and writes ``lengths[i]`` bytes of ``payload``
    (payloads end to end) at ``offsets[i]`` of slot ``slots[i]``; the page set
    is dense from page 0, so a slot is also the page number.
    """

    page_count: int
    slots: array[int]
    offsets: array[int]
    lengths: array[int]
    payload: bytes
    records: bytes | bytearray
    record_ends: array[int]  # byte position in records after record i

    @property
    def count(self) -> int:
        return len(self.slots)

    def batches(self, batch_size: int, count: int) -> list[memoryview]:
        """The first ``count`` records cut into batches, as views of ``records`` (no copies)."""
        view = memoryview(self.records)
        batches = []
        for start in range(0, count, batch_size):
            end = min(start + batch_size, count)
            begin = self.record_ends[start - 1] if start else 0
            batches.append(view[begin : self.record_ends[end - 1]])
        return batches

    def expected_pages(self, count: int) -> mmap.mmap:
        """The arena after the first ``count`` writes on zero pages, by plain slicing."""
        expected = zero_map(self.page_count * PAGE_SIZE)
        payload = self.payload
        source = 0
        for slot, offset, length in zip(
            self.slots[:count], self.offsets[:count], self.lengths[:count], strict=True
        ):
            target = slot * PAGE_SIZE + offset
            expected[target : target + length] = payload[source : source + length]
            source += length
        return expected


def zero_map(size: int) -> mmap.mmap:
    """Anonymous zero memory for expected arenas, faulted in only where written.

    Asks for huge pages, which the kernel may or may not grant; either way the
    subject's arena stays a plain bytearray.
    """
    memory = mmap.mmap(-1, size)
    if hasattr(mmap, "MADV_HUGEPAGE"):
        memory.madvise(mmap.MADV_HUGEPAGE)
    return memory


def assert_same_pages(actual: bytearray, expected: mmap.mmap) -> None:
    # bytearray compares with any buffer by one memcmp (typeshed only knows bytes-like types).
    if bytearray.__eq__(actual, expected):
        return
    for start in range(0, len(actual), PAGE_SIZE):
        if actual[start : start + PAGE_SIZE] != expected[start : start + PAGE_SIZE]:
            raise AssertionError(f"page {start // PAGE_SIZE} differs from the expected bytes")
    raise AssertionError(f"arena of {len(actual)} bytes, expected {len(expected)}")


def random_writes(page_count: int, count: int, seed: int) -> Writes:
    """``count`` 100-byte WRITE records at pseudo-random pages and offsets."""
    rng = random.Random(seed)
    slots = array("I", (rng.randrange(page_count) for _ in range(count)))
    offsets = array("I", (rng.randrange(PAGE_SIZE - WRITE_BYTES + 1) for _ in range(count)))
    lengths = array("I", [WRITE_BYTES]) * count
    payload = rng.randbytes(count * WRITE_BYTES)
    record_size = log.record_size(WRITE_BYTES)
    padding = record_size - native.RECORD_HEADER_SIZE - WRITE_BYTES
    # log.RECORD_HEADER, payload and padding in one struct: packing 2M records stays quick.
    record = struct.Struct(f"{log.RECORD_HEADER.format}{WRITE_BYTES}s{padding}x")
    assert record.size == record_size
    records = bytearray(count * record_size)
    for i in range(count):
        record.pack_into(
            records,
            i * record_size,
            i + 1,
            i,
            slots[i],
            0.0,
            offsets[i],
            WRITE_BYTES,
            log.KIND_WRITE,
            0,
            payload[i * WRITE_BYTES : (i + 1) * WRITE_BYTES],
        )
    first = log.pack_record(1, 0, slots[0], log.KIND_WRITE, payload[:WRITE_BYTES], offsets[0])
    assert records[:record_size] == first, "fast packing must match log.pack_record"
    record_ends = array("Q", range(record_size, record_size * (count + 1), record_size))
    return Writes(page_count, slots, offsets, lengths, payload, records, record_ends)


@dataclass(frozen=True)
class Materialization:
    """One page's pending records, the bound that cuts the last ones, and the page it yields."""

    records: bytes
    lsn_bound: int
    base_image: bytes
    expected: bytes
    applied: int
    applied_payload_bytes: int
    writes: Writes  # the applied records as baseline A columns (one slot)


def materialization() -> Materialization:
    rng = random.Random(SEED + 1)
    builder = log.BatchBuilder()
    page = bytearray(rng.randbytes(PAGE_SIZE))
    base_image = bytes(page)
    applied = MATERIALIZE_RECORDS - MATERIALIZE_EXCLUDED
    offsets, lengths, payloads = array("I"), array("I"), []
    lsn = previous = 1_000
    lsn_bound = applied_payload_bytes = 0
    for i in range(MATERIALIZE_RECORDS):
        lsn += rng.randrange(1, 4)
        if i == MATERIALIZE_ZERO_AT:
            kind, offset, payload = log.KIND_ZERO, 0, b""
        elif i == MATERIALIZE_PAGE_AT:
            kind, offset, payload = log.KIND_PAGE, 0, rng.randbytes(PAGE_SIZE)
        else:
            length = rng.choice((8, 16, 40, 100, 200, 512, 1000, 2048, 4096))
            kind, offset = log.KIND_WRITE, rng.randrange(PAGE_SIZE - length + 1)
            payload = rng.randbytes(length)
        flags = log.FLAG_CPL if i % 4 == 3 else 0
        builder.add(lsn, previous, MATERIALIZE_PAGE_NO, kind, payload, offset, flags)
        previous = lsn
        if i < applied:
            lsn_bound = lsn
            applied_payload_bytes += len(payload)
            # Baseline A has no ZERO: it copies a page of zeros instead.
            written = bytes(PAGE_SIZE) if kind == log.KIND_ZERO else payload
            page[offset : offset + len(written)] = written
            offsets.append(offset)
            lengths.append(len(written))
            payloads.append(written)
    writes = Writes(
        page_count=1,
        slots=array("I", [0]) * applied,
        offsets=offsets,
        lengths=lengths,
        payload=b"".join(payloads),
        records=b"",
        record_ends=array("Q"),
    )
    return Materialization(
        records=bytes(builder.buffer),
        lsn_bound=lsn_bound,
        base_image=base_image,
        expected=bytes(page),
        applied=applied,
        applied_payload_bytes=applied_payload_bytes,
        writes=writes,
    )


# --- runners ------------------------------------------------------------------------


def apply_batches(
    apply: Callable[[native.PageSet, memoryview, int, array[int]], int],
    batches: list[memoryview],
    page_set: native.PageSet,
) -> int:
    """One round: every batch through ``apply`` (a backend's apply_to or apply_verified)."""
    applied = 0
    lsn_max = native.LSN_MAX
    for batch in batches:
        applied += apply(page_set, batch, lsn_max, NO_ANNULLED)
    return applied


class MemcpyBaseline:
    """Baseline A: aus_baseline_writes over prepared columns, one call per batch."""

    def __init__(self, writes: Writes, pages: bytearray, batch_size: int, count: int) -> None:
        ffi, lib = NATIVE.ffi, NATIVE.lib
        self.function = lib.aus_baseline_writes
        # The cdata owners keep the buffers exported while the pointers below live.
        self.owners = (
            ffi.from_buffer("uint8_t[]", pages, require_writable=True),
            ffi.from_buffer("uint32_t[]", writes.slots),
            ffi.from_buffer("uint32_t[]", writes.offsets),
            ffi.from_buffer("uint32_t[]", writes.lengths),
            ffi.from_buffer("uint8_t[]", writes.payload),
        )
        target, slots, offsets, lengths, payload = self.owners
        payload_starts = [0, *accumulate(writes.lengths[:count])]
        self.calls = [
            (
                target,
                PAGE_SIZE,
                slots + start,
                offsets + start,
                lengths + start,
                payload + payload_starts[start],
                min(batch_size, count - start),
            )
            for start in range(0, count, batch_size)
        ]
        self.count = count

    def __call__(self) -> int:
        function = self.function
        for arguments in self.calls:
            function(*arguments)
        return self.count


def zero(pages: bytearray) -> None:
    """Zeroes the arena in place (and faults its memory in before any timing)."""
    window = (ctypes.c_char * len(pages)).from_buffer(pages)
    ctypes.memset(window, 0, len(pages))
    del window


def counted_round(function: Callable[..., int], arguments: tuple[Any, ...], count: int) -> float:
    """Seconds one call takes, after checking it applied ``count`` records."""
    started = time.perf_counter()
    applied = function(*arguments)
    seconds = time.perf_counter() - started
    assert applied == count, f"applied {applied} records, expected {count}"
    return seconds


def run_interleaved(
    benchmark: Any,
    throughput: Any,
    workload: str,
    subject: str,
    writes: Writes,
    pages: bytearray,
    batch_size: int,
    rounds: int,
    ratio_goals: dict[str, float],
    python_count: int | None = None,
) -> None:
    """Times ``subject`` on every write, with one round of each baseline before each of its rounds.

    Baselines run in the same conditions as the round they precede (the
    machine is shared: rounds seconds apart see different loads). The lines a
    round writes fit the L3 cache, so a round runs faster after one that
    wrote the same lines and read the same input: every timed round of the
    subject and of baseline A follows an untimed round of its own, as it
    would if it ran alone. Baseline B, the Python backend, runs the first
    ``python_count`` writes when given (too slow for caches to matter).
    """
    count = writes.count
    zero(pages)
    batches = writes.batches(batch_size, count)
    memcpy = MemcpyBaseline(writes, pages, batch_size, count)
    with native.PageSet(PAGE_SIZE, range(writes.page_count), pages) as page_set:
        if subject == "native-verified":
            # apply_verified takes batches that passed validation: validate them first,
            # untimed, as a node validates a frame body when it arrives.
            for batch in batches:
                native.validate(batch, PAGE_SIZE)
            apply = NATIVE.apply_verified
        else:
            apply = NATIVE.apply_to

        def memcpy_round(_: int) -> float:
            memcpy()  # untimed: the cache state of a round after its own kind
            return counted_round(memcpy, (), count)

        baselines: dict[str, Callable[[int], float]] = {"baseline-A": memcpy_round}
        if python_count is not None:
            python_batches = writes.batches(batch_size, python_count)
            baselines["baseline-B"] = lambda _: counted_round(
                apply_batches, (PYTHON.apply_to, python_batches, page_set), python_count
            )

        def subject_round(_: int) -> None:
            applied = apply_batches(apply, batches, page_set)
            assert applied == count, f"applied {applied} records, expected {count}"

        durations = interleave(
            benchmark,
            subject_round,
            baselines,
            rounds=rounds,
            prepare=lambda _: apply_batches(apply, batches, page_set),  # untimed, as above
        )
    _, label = IMPLEMENTATIONS[subject]
    throughput.report(
        workload,
        "subject",
        label=label,
        records=count,
        payload_bytes=count * WRITE_BYTES,
        ratio_goals=ratio_goals,
    )
    for role, seconds in durations.items():
        baseline_count = count if role == "baseline-A" else python_count or count
        throughput.record(
            workload,
            role,
            seconds=seconds,
            label=IMPLEMENTATIONS["memcpy" if role == "baseline-A" else "python"][1],
            records=baseline_count,
            payload_bytes=baseline_count * WRITE_BYTES,
        )


# --- fixtures -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_writes() -> Writes:
    return random_writes(SMALL_PAGE_COUNT, SMALL_RECORDS, SEED)


@pytest.fixture(scope="module")
def small_arena() -> bytearray:
    return bytearray(SMALL_PAGE_COUNT * PAGE_SIZE)


@pytest.fixture(scope="module")
def small_expected(small_writes: Writes) -> mmap.mmap:
    return small_writes.expected_pages(small_writes.count)


@pytest.fixture(scope="module")
def large_writes() -> Writes:
    return random_writes(LARGE_PAGE_COUNT, LARGE_RECORDS, SEED)


@pytest.fixture(scope="module")
def large_arena() -> bytearray:
    """One 2 GiB arena shared by subject and baseline, so both see the same memory layout."""
    return bytearray(LARGE_PAGE_COUNT * PAGE_SIZE)


@pytest.fixture(scope="module")
def large_expected(large_writes: Writes) -> mmap.mmap:
    return large_writes.expected_pages(large_writes.count)


# --- workloads ----------------------------------------------------------------------


@pytest.mark.parametrize("subject", SUBJECTS)
@pytest.mark.parametrize("batch_size", BATCH_SIZES, ids=lambda size: f"batch{size}")
def test_apply_batch_10k_pages(
    benchmark: Any,
    throughput: Any,
    small_writes: Writes,
    small_arena: bytearray,
    small_expected: mmap.mmap,
    batch_size: int,
    subject: str,
) -> None:
    run_interleaved(
        benchmark,
        throughput,
        workload_name("batch_10k_pages", subject, batch_size),
        subject,
        small_writes,
        small_arena,
        batch_size,
        SMALL_ROUNDS,
        GOALS_BATCHED,
        python_count=SMALL_RECORDS_PYTHON,
    )
    assert_same_pages(small_arena, small_expected)


@pytest.mark.parametrize("subject", SUBJECTS)
@pytest.mark.parametrize("batch_size", BATCH_SIZES, ids=lambda size: f"batch{size}")
def test_apply_large_working_set(
    benchmark: Any,
    throughput: Any,
    large_writes: Writes,
    large_arena: bytearray,
    large_expected: mmap.mmap,
    batch_size: int,
    subject: str,
) -> None:
    run_interleaved(
        benchmark,
        throughput,
        workload_name("large_working_set", subject, batch_size),
        subject,
        large_writes,
        large_arena,
        batch_size,
        LARGE_ROUNDS,
        GOALS_LARGE,
    )
    assert_same_pages(large_arena, large_expected)


@pytest.mark.parametrize("implementation", ["native", "memcpy", "python"])
def test_materialize_page_100_records(benchmark: Any, throughput: Any, implementation: str) -> None:
    work = materialization()
    page = bytearray(work.base_image)
    page_nos = array("Q", [MATERIALIZE_PAGE_NO])
    if implementation == "memcpy":
        target = MemcpyBaseline(work.writes, page, work.applied, work.applied)
        applied = benchmark(target)
    else:
        backend = NATIVE if implementation == "native" else PYTHON
        applied = benchmark(
            backend.apply,
            work.records,
            PAGE_SIZE,
            page_nos,
            page,
            None,
            work.lsn_bound,
            NO_ANNULLED,
        )
    assert applied == work.applied
    assert page == work.expected, "page differs from the expected bytes"
    role, label = IMPLEMENTATIONS[implementation]
    if implementation == "native":
        label = "native apply (C core, one-shot)"
    # A round is one materialization; records counts the page's pending records.
    throughput.report(
        "materialize_page_100_records",
        role,
        label=label,
        records=MATERIALIZE_RECORDS,
        payload_bytes=work.applied_payload_bytes,
        median_us_max=GOAL_MATERIALIZE_US if role == "subject" else None,
    )
