"""The writer's public API on the direct transport: commits, reads, limits, errors.

Bad input raises a specific exception and changes nothing (VDL, allocated
LSN and page bytes are compared before and after).
"""

from __future__ import annotations

import tracemalloc

import pytest

from aurora_storage import SimulatedClock, Volume
from aurora_storage.config import CAPACITY_MAX, NODE_NAMES
from aurora_storage.errors import (
    AuroraStorageError,
    ConfigurationError,
    InDoubtError,
    LsnLimitError,
    LsnOutOfRangeError,
    OffsetOutOfRangeError,
    PageOutOfRangeError,
    ReadUnavailableError,
    RecordTooLargeError,
    UnknownNodeError,
    VersionGoneError,
    VolumeClosedError,
    WriteQuorumError,
)
from aurora_storage.protocol import segment

PAGE = 4096


@pytest.fixture
def volume() -> Volume:
    return Volume.create(page_size=PAGE, segment_size=PAGE * 8, capacity=PAGE * 1024)


def snapshot(volume: Volume) -> tuple[int, int, bytes]:
    return volume.vdl, volume.allocated_lsn, volume.read_page(3)


def test_commit_then_read(volume: Volume) -> None:
    with volume.transaction() as tx:
        tx.write(3, 100, b"hello")
        tx.write(20, 0, b"other pg")
    assert tx.lsn == 2 == volume.vdl == volume.vcl
    assert volume.read_page(3)[100:105] == b"hello"
    assert volume.read_page(20)[:8] == b"other pg"
    assert volume.read_page(4) == bytes(PAGE), "unwritten pages read as zeros"
    assert volume.status()["pg_count"] == 2


def test_older_read_points_and_page_kinds(volume: Volume) -> None:
    with volume.transaction() as tx:
        tx.put_page(3, b"\x01" * PAGE)
    first = tx.lsn
    with volume.transaction() as tx:
        tx.write(3, 0, b"\x02\x02")
    second = tx.lsn
    with volume.transaction() as tx:
        tx.zero_page(3)
    assert volume.read_page(3) == bytes(PAGE)
    assert volume.read_page(3, lsn=second)[:3] == b"\x02\x02\x01"
    assert volume.read_page(3, lsn=first) == b"\x01" * PAGE
    assert volume.read_page(3, lsn=0) == bytes(PAGE)


def test_mtr_records_get_consecutive_lsns_across_pgs(volume: Volume) -> None:
    with volume.transaction() as tx:
        for page_no in (0, 9, 17, 1):
            tx.write(page_no, 0, b"x")
    assert tx.lsn == 4
    assert {pg.pg_id: pg.tail_lsn for pg in volume.pgs.values()} == {0: 2, 1: 3, 2: 4}


def test_abort_sends_nothing(volume: Volume) -> None:
    with pytest.raises(RuntimeError), volume.transaction() as tx:
        tx.write(3, 0, b"never")
        raise RuntimeError("the caller changed its mind")
    assert volume.allocated_lsn == 0
    assert volume.read_page(3) == bytes(PAGE)


@pytest.mark.parametrize(
    ("action", "error"),
    [
        (lambda tx: tx.write(1024, 0, b"x"), PageOutOfRangeError),
        (lambda tx: tx.write(-1, 0, b"x"), PageOutOfRangeError),
        (lambda tx: tx.write(3, PAGE - 2, b"abc"), OffsetOutOfRangeError),
        (lambda tx: tx.write(3, -1, b"abc"), OffsetOutOfRangeError),
        (lambda tx: tx.write(3, 0, b""), OffsetOutOfRangeError),
        (lambda tx: tx.put_page(3, b"short"), RecordTooLargeError),
        (lambda tx: tx.zero_page(5000), PageOutOfRangeError),
    ],
)
def test_bad_writes_change_nothing(volume: Volume, action, error) -> None:  # type: ignore[no-untyped-def]
    with volume.transaction() as tx:
        tx.write(3, 0, b"kept")
    before = snapshot(volume)
    with pytest.raises(error) as caught, volume.transaction() as tx:
        tx.write(3, 0, b"lost")
        action(tx)
    assert isinstance(caught.value, AuroraStorageError)
    assert snapshot(volume) == before


def test_bad_reads(volume: Volume) -> None:
    with pytest.raises(PageOutOfRangeError) as caught:
        volume.read_page(1024)
    assert caught.value.page_no == 1024
    with pytest.raises(LsnOutOfRangeError):
        volume.read_page(0, lsn=1)
    with pytest.raises(LsnOutOfRangeError):
        volume.read_page(0, lsn=-1)


@pytest.mark.parametrize(
    "options",
    [
        {"page_size": 3000},
        {"page_size": 128 * 1024},
        {"segment_size": 5000},
        {"capacity": CAPACITY_MAX * 2},
        {"durability": "paper"},
        {"lal": 0},
    ],
)
def test_bad_options(options: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError):
        Volume.create(**options)  # type: ignore[arg-type]


def test_az_down_then_az_plus_one(volume: Volume) -> None:
    volume.cluster.fail_az("az1")
    with volume.transaction() as tx:
        tx.write(3, 0, b"on four")
    volume.cluster.fail_node("az2-b")
    before = snapshot(volume)
    with pytest.raises(WriteQuorumError) as caught, volume.transaction() as tx:
        tx.write(3, 0, b"in doubt")
    assert caught.value.lsn == before[1] + 1
    assert volume.vdl == before[0]
    assert volume.read_page(3)[:7] == b"on four", "three segments still serve reads"
    volume.cluster.restore_node("az1-a")
    assert volume.vdl == caught.value.lsn, "the in-doubt commit reached a quorum"
    assert volume.read_page(3)[:8] == b"in doubt"


def test_restored_node_catches_up_before_serving(volume: Volume) -> None:
    volume.cluster.fail_node("az3-b")
    for i in range(5):
        with volume.transaction() as tx:
            tx.write(3, i, b"z")
    pg = volume.pgs[0]
    assert "az3-b" not in pg.readable_nodes(volume.vdl)
    volume.cluster.restore_node("az3-b")
    assert volume.nodes["az3-b"].segments[0].scl == volume.vdl
    assert "az3-b" in pg.readable_nodes(volume.vdl)


def test_reads_fail_over_and_fail_clearly(volume: Volume) -> None:
    with volume.transaction() as tx:
        tx.write(3, 0, b"data")
    for name in NODE_NAMES[:5]:
        volume.cluster.fail_node(name)
    assert volume.read_page(3)[:4] == b"data", "the last live segment answers"
    volume.cluster.fail_node(NODE_NAMES[5])
    with pytest.raises(ReadUnavailableError) as caught:
        volume.read_page(3)
    assert "no answer" in str(caught.value)


def test_unknown_names(volume: Volume) -> None:
    with pytest.raises(UnknownNodeError):
        volume.cluster.fail_node("az9-z")
    with pytest.raises(UnknownNodeError):
        volume.cluster.fail_az("az1-a")
    with pytest.raises(UnknownNodeError):
        volume.cluster.partition(["writer"], ["nobody"])


def test_lsn_allocation_limit() -> None:
    volume = Volume.create(page_size=PAGE, segment_size=PAGE * 8, capacity=PAGE * 64, lal=10)
    with pytest.raises(LsnLimitError) as caught, volume.transaction() as tx:
        for i in range(11):  # one MTR past VDL + LAL
            tx.write(1, i, b"y")
    assert caught.value.limit == 10
    assert volume.allocated_lsn == 0, "nothing allocated past the limit"
    with volume.transaction() as tx:
        for i in range(10):
            tx.write(1, i, b"x")
    assert volume.vdl == 10


def test_commits_after_an_in_doubt_commit_are_refused_until_it_resolves() -> None:
    volume = Volume.create(page_size=PAGE, segment_size=PAGE * 8, capacity=PAGE * 64)
    volume.cluster.partition(["writer", "az1-a", "az2-a"], ["az1-b", "az2-b", "az3-a", "az3-b"])
    with pytest.raises(WriteQuorumError) as caught, volume.transaction() as tx:
        tx.write(1, 0, b"first")
    assert volume.in_doubt == (caught.value.lsn,)
    with pytest.raises(InDoubtError) as refused, volume.transaction() as tx:
        tx.write(1, 0, b"second")
    assert refused.value.lsns == (caught.value.lsn,)
    assert volume.allocated_lsn == caught.value.lsn, "a refused commit allocates nothing"
    assert volume.wait_durable(caught.value.lsn, timeout=0.1) is False
    volume.cluster.heal()
    assert volume.wait_durable(caught.value.lsn, timeout=0.1) is True
    assert volume.in_doubt == ()
    with volume.transaction() as tx:
        tx.write(1, 0, b"third")
    assert volume.read_page(1)[:5] == b"third"


def test_closed_volume(volume: Volume) -> None:
    volume.close()
    with pytest.raises(VolumeClosedError):
        volume.read_page(0)
    with pytest.raises(VolumeClosedError):
        volume.transaction()


def test_max_capacity_is_sparse() -> None:
    tracemalloc.start()
    try:
        volume = Volume.create(capacity=CAPACITY_MAX)
        last = volume.geometry.page_count - 1
        with volume.transaction() as tx:
            tx.write(last, 16 * 1024 - 4, b"end!")
        assert volume.read_page(last)[-4:] == b"end!"
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert volume.geometry.page_count * volume.geometry.page_size == 128 * 1024**4
    assert peak < 4 * 1024 * 1024, f"a 128 TiB volume with one page used {peak} bytes"
    with pytest.raises(PageOutOfRangeError):
        volume.read_page(last + 1)


def test_coalesced_versions_are_gone_unless_pinned(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(segment, "COALESCE_RECORD_BYTES", 1)
    volume = Volume.create(page_size=PAGE, segment_size=PAGE * 8, capacity=PAGE * 64)
    with volume.transaction() as tx:
        tx.write(2, 0, b"v1")
    first = tx.lsn
    with volume.read_view() as pinned:
        for value in (b"v2", b"v3"):
            with volume.transaction() as tx:
                tx.write(2, 0, value)
        assert volume.read_page(2, lsn=pinned)[:2] == b"v1"
    for value in (b"v4", b"v5"):
        with volume.transaction() as tx:
            tx.write(2, 0, value)
    assert volume.read_page(2)[:2] == b"v5"
    with pytest.raises(VersionGoneError) as caught:
        volume.read_page(2, lsn=first)
    assert caught.value.lsn == first
    assert volume.nodes["az1-a"].segments[0].counters.records_coalesced >= 3


def test_clock_time_reaches_cpl_records() -> None:
    clock = SimulatedClock(start=1000.0)
    volume = Volume.create(page_size=PAGE, segment_size=PAGE * 8, capacity=PAGE * 64, clock=clock)
    clock.advance(5)
    with volume.transaction() as tx:
        tx.write(0, 0, b"a")
        tx.write(1, 0, b"b")
    frames = volume.nodes["az1-a"].segments[0].chain_frames
    from aurora_storage import native
    from aurora_storage.format import frames as log

    body = log.decode_frame(frames[-1], PAGE).body
    index = native.index(body, PAGE)
    assert list(index.times) == [0.0, 1005.0]
    assert index.flags == bytes([0, log.FLAG_CPL])
