"""Quiet PGs whose floors were held back when their acks came (protocol/writer.py).

A Maintain carries a quiet PG's retain point and gossip floor once its acks
raised them. Where something else held them back then (a read view pinning an
older read point, a backup not yet staged that far), the PG's segments must
still fold and checkpoint once that hold goes, though nothing writes to the
PG again: else a scattered workload's records stay in memory and in the logs.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from aurora_storage import Volume
from aurora_storage.protocol import messages as m
from aurora_storage.protocol import node
from aurora_storage.protocol.node_storage import log_name
from aurora_storage.runtime.transport import DirectTransport

PAGE = 4096
PG_PAGES = 16
PGS = 400
HOT = 64 * 1024  # unfolded record bytes a node keeps: 16 pages' worth


@pytest.fixture(autouse=True)
def small_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(node, "HOT_BYTES_MAX", HOT)


def create(path: Path) -> Volume:
    return Volume.create(
        path,
        page_size=PAGE,
        segment_size=PAGE * PG_PAGES,
        capacity=PAGE * PG_PAGES * PGS,
        durability="os",
        transport=DirectTransport(sync_threads=0),
    )


def scatter(volume: Volume, rng: random.Random, pgs: list[int]) -> dict[int, bytes]:
    """One full page in each PG of ``pgs``, one MTR each, at a random page of the PG."""
    written = {}
    for pg_id in pgs:
        page_no = pg_id * PG_PAGES + rng.randrange(PG_PAGES)
        written[page_no] = rng.randbytes(PAGE)
        with volume.transaction() as tx:
            tx.put_page(page_no, written[page_no])
    return written


def test_pgs_written_under_a_read_view_fold_once_it_closes(tmp_path: Path) -> None:
    rng = random.Random(17)
    volume = create(tmp_path / "volume")
    order = rng.sample(range(PGS), PGS)
    pinned, later = order[: PGS // 2], order[PGS // 2 :]
    written = {}
    with volume.read_view():  # versions at its read point stay: nothing folds past it
        written.update(scatter(volume, rng, pinned))
    written.update(scatter(volume, rng, later))  # more than the budget, long after
    for name, storage in volume.cluster.nodes.items():
        hot = sum(segment.hot_bytes for segment in storage.segments.values())
        assert hot <= HOT + HOT // 2, (name, hot)
        segments = storage.segments
        unfolded = [pg for pg in pinned if pg in segments and segments[pg].hot_bytes]
        assert not unfolded, (name, len(unfolded))
        assert all(storage.disk.size(log_name(pg)) == 0 for pg in pinned), name
    for page_no, image in written.items():
        assert volume.read_page(page_no) == image
    volume.close()  # sends the floors still due: quiet PGs close folded
    for name in volume.cluster.nodes:
        folder = tmp_path / "volume" / "nodes" / name
        logged = [pg for pg in pinned if (folder / log_name(pg)).stat().st_size]
        assert not logged, (name, len(logged))


def test_pgs_written_before_a_staging_round_fold_once_it_staged_them(tmp_path: Path) -> None:
    rng = random.Random(19)
    volume = Volume.create(
        tmp_path / "volume",
        page_size=PAGE,
        segment_size=PAGE * PG_PAGES,
        capacity=PAGE * PG_PAGES * PGS,
        durability="os",
        transport=DirectTransport(sync_threads=0),
        backup=tmp_path / "backup",
        backup_staging="inline",
        backup_staging_interval=3600.0,  # rounds only when asked
    )
    order = rng.sample(range(PGS), PGS)
    staged, later = order[: PGS // 2], order[PGS // 2 :]
    written = scatter(volume, rng, staged)  # their frames wait for the backup
    assert volume.stage_backup()  # now the backup holds them: they may fold
    written.update(scatter(volume, rng, later))
    assert volume.stage_backup()
    written.update(scatter(volume, rng, later[:8]))  # more writes, after the round
    for name, storage in volume.cluster.nodes.items():
        segments = storage.segments
        unfolded = [pg for pg in staged if pg in segments and segments[pg].hot_bytes]
        assert not unfolded, (name, len(unfolded))
        assert all(storage.disk.size(log_name(pg)) == 0 for pg in staged), name
    for page_no, image in written.items():
        assert volume.read_page(page_no) == image
    volume.close()


def test_a_node_that_missed_a_maintain_still_folds_its_quiet_pgs(tmp_path: Path) -> None:
    """A Maintain lost on the way (a lossy link, a node briefly cut off) is sent again:
    else the PGs it named keep their records unfolded on that node for good."""
    rng = random.Random(29)
    volume = create(tmp_path / "volume")
    deliver = volume.transport.send
    lost: list[m.Maintain] = []

    def lossy(source: str, destination: str, message: m.Message) -> None:
        if isinstance(message, m.Maintain) and destination == "az1-a" and not lost:
            lost.append(message)  # the first Maintain to az1-a never arrives
            return
        deliver(source, destination, message)

    volume.transport.send = lossy
    order = rng.sample(range(PGS), PGS)
    written = scatter(volume, rng, order)
    assert lost
    named = set(lost[0].floors[::3])
    storage = volume.cluster.nodes["az1-a"]
    segments = storage.segments
    unfolded = [pg for pg in named if pg in segments and segments[pg].hot_bytes]
    assert not unfolded, len(unfolded)
    for page_no, image in written.items():
        assert volume.read_page(page_no) == image
    volume.close()
