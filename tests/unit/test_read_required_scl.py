"""Reads ask a segment only for what the read point needs of its own PG.

A PG's SCL stops at its own last record. When VDL rests on another PG's
record, or a commit of the PG is in flight or in doubt above VDL, a read of
the PG at VDL must still be served by every segment that holds the PG's
records up to the read point (ProtectionGroup.required_scl).
"""

from __future__ import annotations

import threading
from pathlib import Path

from aurora_storage import SimulatedClock, Volume
from aurora_storage.config import NODE_NAMES
from aurora_storage.errors import ReadUnavailableError, WriteQuorumError
from aurora_storage.protocol.protection_group import ProtectionGroup, QuorumSet
from aurora_storage.runtime.transport import NetworkFaults, SimulatedTransport

PAGE = 4096
PAGES_PER_PG = 4


def test_read_after_an_in_doubt_commit_of_the_same_pg() -> None:
    clock = SimulatedClock(1_700_000_000.0)
    transport = SimulatedTransport(1, clock)
    volume = Volume.create(
        page_size=PAGE,
        segment_size=PAGE * PAGES_PER_PG,
        capacity=PAGE * 64,
        clock=clock,
        transport=transport,
        commit_timeout=1.0,
    )
    for page_no in (0, PAGES_PER_PG, PAGES_PER_PG):  # PG 0, then PG 1 twice
        with volume.transaction() as tx:
            tx.write(page_no, 0, bytes([page_no + 1]))
    transport.set_faults(NetworkFaults(loss=1.0))
    try:
        with volume.transaction() as tx:
            tx.write(0, 0, b"\xff")
    except WriteQuorumError:
        pass
    transport.set_faults(NetworkFaults())
    assert volume.vdl == 3
    # Every segment of PG 0 holds its one record (LSN 1): each can serve VDL 3.
    assert volume.read_page(0)[:1] == b"\x01"
    assert volume.read_page(PAGES_PER_PG)[:1] == bytes([PAGES_PER_PG + 1])
    assert volume.read_page(0, lsn=2)[:1] == b"\x01"


def test_reads_beside_a_committing_thread_never_fail(tmp_path: Path) -> None:
    # fsync durability: a commit releases the lock while its flush runs, so reads
    # come in while its frames are above VDL.
    volume = Volume.create(
        tmp_path / "volume",
        page_size=PAGE,
        segment_size=PAGE * PAGES_PER_PG,
        capacity=PAGE * 64,
        durability="fsync",
    )
    with volume.transaction() as tx:
        tx.write(0, 0, b"\x01")
    commits = 200
    failures: list[str] = []
    done = threading.Event()

    def commit() -> None:
        try:
            for number in range(commits):
                with volume.transaction() as tx:
                    # Alternately PG 1 and PG 0: VDL often rests on PG 1's record
                    # while PG 0's next commit is in flight.
                    tx.write(PAGES_PER_PG if number % 2 else 0, 8, number.to_bytes(4, "little"))
        finally:
            done.set()

    writer = threading.Thread(target=commit)
    writer.start()
    reads = 0
    while not done.is_set() or reads < 200:
        try:
            image = volume.read_page(0)
        except ReadUnavailableError as error:
            failures.append(str(error))
        else:
            assert image[:1] == b"\x01"
        reads += 1
    writer.join()
    assert failures == [], f"{len(failures)} of {reads} reads failed: {failures[:3]}"
    volume.close()


def test_required_scl_follows_the_pg_tail_at_vdl() -> None:
    pg = ProtectionGroup(0, QuorumSet((NODE_NAMES,)))
    assert pg.required_scl(0, 0) == 0
    pg.note_frame(5, vdl=0)
    assert pg.required_scl(3, 3) == 0, "the frame ending at 5 is above VDL 3"
    pg.note_frame(9, vdl=6)  # VDL 6 passed the first frame
    assert pg.required_scl(6, 6) == 5
    assert pg.required_scl(4, 6) == 4
    assert pg.required_scl(8, 8) == 5
    assert pg.required_scl(12, 12) == 9
    assert list(pg.frames_above_vdl) == []
    pg.note_frame(20, vdl=12)
    assert list(pg.frames_above_vdl) == [20], "frames at or below VDL are trimmed at commit"


def test_a_tail_set_by_recovery_or_restore_is_the_bar_for_the_next_frame() -> None:
    """Recovery and restore set a PG's tail without a frame: the first frame allocated
    after them must not drop the bar to 0 while it is above VDL."""
    pg = ProtectionGroup(0, QuorumSet((NODE_NAMES,)))
    pg.tail_lsn = 7  # what recovery found
    pg.note_frame(12, vdl=9)
    assert pg.required_scl(9, 9) == 7


def test_after_reopen_a_commit_in_doubt_keeps_reads_off_a_lagging_segment(
    tmp_path: Path,
) -> None:
    clock = SimulatedClock(1_700_000_000.0)
    path = tmp_path / "volume"
    volume = Volume.create(
        path,
        durability="os",
        commit_timeout=0.5,
        transport=SimulatedTransport(1, clock),
        page_size=PAGE,
        segment_size=PAGE * PAGES_PER_PG,
        capacity=PAGE * 64,
    )
    with volume.transaction() as tx:
        tx.write(0, 0, b"AAAA")
    volume.cluster.fail_node("az1-a")
    with volume.transaction() as tx:
        tx.write(0, 0, b"CCCC")  # five of six: az1-a misses it
    volume.close()
    transport = SimulatedTransport(2, clock)
    # az1-a cut off from its peers (not from the writer): it stays behind.
    transport.partition([["az1-a"], [name for name in NODE_NAMES if name != "az1-a"]])
    volume = Volume.open(path, transport=transport)
    for name in ("az2-a", "az2-b", "az3-a"):
        volume.cluster.fail_node(name)
    try:
        with volume.transaction() as tx:
            tx.write(1, 0, b"DDDD")  # PG 0 again, in doubt: three nodes up
    except WriteQuorumError:
        pass
    assert volume.nodes["az1-a"].segments[0].scl < volume.vdl
    assert volume.read_page(0)[:4] == b"CCCC"
    volume.simulate_crash()
