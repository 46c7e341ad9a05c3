"""A backtrack or commit that raised is in doubt; no later change builds on a state
that excludes it, and a recovery never adopts a backtrack the session went on without.

A failed backtrack may have left its history on some nodes. The writer then
rewrites the history it keeps under a higher key on a write quorum (the
history register of history.py) before anything else changes; until that
succeeds, commits and backtracks raise InDoubtError. The backtrack window a
volume was created with lives in the nodes' history, not only volume.meta.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from aurora_storage import SimulatedClock, Volume
from aurora_storage.config import NODE_NAMES
from aurora_storage.errors import (
    BacktrackDisabledError,
    BacktrackQuorumError,
    InDoubtError,
    TimeOutsideWindowError,
    WriteQuorumError,
)
from aurora_storage.format import metadata as metafile
from aurora_storage.protocol import node, segment

PAGE = 4096
START = 1_700_000_000.0
DOWN = ("az1-a", "az2-a", "az3-a")


def put(volume: Volume, page_no: int, value: int) -> int:
    with volume.transaction() as tx:
        tx.put_page(page_no, bytes([value]) * PAGE)
    return tx.lsn


def firsts(volume: Volume) -> tuple[int, int]:
    return volume.read_page(0)[0], volume.read_page(1)[0]


def two_generations(path: Path, clock: SimulatedClock, **options: object) -> tuple[Volume, float]:
    """Pages 0 and 1 at 1, then at 2, a second apart; returns a time between them."""
    volume = Volume.create(
        path,
        page_size=PAGE,
        segment_size=PAGE * 16,
        capacity=PAGE * 64,
        clock=clock,
        backtrack_window=3600,
        **options,  # type: ignore[arg-type]
    )
    for page_no in (0, 1):
        clock.advance(1)
        put(volume, page_no, 1)
    clock.advance(1)
    between = clock.now()
    for page_no in (0, 1):
        clock.advance(1)
        put(volume, page_no, 2)
    return volume, between


def test_failed_backtrack_never_comes_back_at_open(tmp_path: Path) -> None:
    clock = SimulatedClock(START)
    volume, between = two_generations(tmp_path / "v", clock)
    for name in DOWN:
        volume.cluster.fail_node(name)
    with pytest.raises(BacktrackQuorumError) as caught:
        volume.backtrack(to=between)
    assert caught.value.in_doubt, "three nodes cannot take the history back either"
    assert volume.backtrack_in_doubt == between
    assert firsts(volume) == (2, 2), "the session still shows what it showed"
    with pytest.raises(InDoubtError) as refused, volume.transaction() as tx:
        tx.put_page(1, bytes([9]) * PAGE)
    assert refused.value.backtrack == between
    for name in DOWN:
        volume.cluster.restore_node(name)
    clock.advance(1)
    put(volume, 1, 3)  # resolves the doubt first: the history goes back on six nodes
    assert volume.backtrack_in_doubt is None
    assert firsts(volume) == (2, 3)
    volume.close()
    volume = Volume.open(tmp_path / "v", clock=clock)
    assert firsts(volume) == (2, 3), "recovery adopted the failed backtrack"
    volume.close()


def test_failed_backtrack_with_a_write_quorum_back_is_resolved_at_once(tmp_path: Path) -> None:
    clock = SimulatedClock(START)
    volume, between = two_generations(tmp_path / "v", clock)
    # Three nodes lose the new history, but four can take the old one back: the
    # partition heals between the two writes.
    real = volume._write_history
    calls = 0

    def partitioned_first(history):  # type: ignore[no-untyped-def]
        nonlocal calls
        calls += 1
        if calls == 1:
            volume.cluster.partition(["writer", *DOWN], [n for n in NODE_NAMES if n not in DOWN])
        else:
            volume.cluster.heal()
        return real(history)

    volume._write_history = partitioned_first  # type: ignore[method-assign]
    with pytest.raises(BacktrackQuorumError) as caught:
        volume.backtrack(to=between)
    volume._write_history = real  # type: ignore[method-assign]
    assert not caught.value.in_doubt
    assert volume.backtrack_in_doubt is None
    clock.advance(1)
    put(volume, 1, 3)
    volume.close()
    volume = Volume.open(tmp_path / "v", clock=clock)
    assert firsts(volume) == (2, 3)
    volume.close()


def test_older_node_meta_holding_the_failed_backtrack_is_not_adopted(tmp_path: Path) -> None:
    """Three nodes' node.meta as they were while they held the failed backtrack's
    history (before the writer took it back) put back after the session went on:
    the history the session kept, rewritten on six nodes since, outranks them."""
    clock = SimulatedClock(START)
    volume, between = two_generations(tmp_path / "v", clock)
    for name in DOWN:
        volume.cluster.fail_node(name)
    saved: dict[str, bytes] = {}
    real = volume._abandon_history

    def snapshot_then_abandon() -> bool:
        if not saved:  # the candidate is on the three nodes up now
            for name in NODE_NAMES:
                if name not in DOWN:
                    saved[name] = (tmp_path / "v" / "nodes" / name / "node.meta").read_bytes()
        return real()

    volume._abandon_history = snapshot_then_abandon  # type: ignore[method-assign]
    with pytest.raises(BacktrackQuorumError):
        volume.backtrack(to=between)
    for name, data in saved.items():
        history = metafile.decode(data, metafile.KIND_NODE, name)["history"]
        assert len(history["versions"]) == 2, "the saved copy holds the failed backtrack"
    for name in DOWN:
        volume.cluster.restore_node(name)
    clock.advance(1)
    put(volume, 1, 3)
    volume.close()
    for name, data in saved.items():
        (tmp_path / "v" / "nodes" / name / "node.meta").write_bytes(data)
    volume = Volume.open(tmp_path / "v", clock=clock)
    assert firsts(volume) == (2, 3)
    volume.close()


def test_a_failed_backtrack_nobody_took_back_is_decided_by_recovery(tmp_path: Path) -> None:
    """The writer crashes while a backtrack is in doubt and no node took the history
    back: the session never went on without it, so recovery may adopt it (as it may
    an in-doubt commit), and then the volume shows it, consistently, from then on."""
    clock = SimulatedClock(START)
    volume, between = two_generations(tmp_path / "v", clock)
    for name in DOWN:
        volume.cluster.fail_node(name)
    real = volume._write_history
    calls = 0

    def lost_after_the_first(history):  # type: ignore[no-untyped-def]
        nonlocal calls
        calls += 1
        if calls > 1:  # the take-back reaches nobody
            volume.cluster.partition(["writer"], [n for n in NODE_NAMES if n not in DOWN])
        return real(history)

    volume._write_history = lost_after_the_first  # type: ignore[method-assign]
    with pytest.raises(BacktrackQuorumError) as caught:
        volume.backtrack(to=between)
    assert caught.value.in_doubt
    volume.simulate_crash()
    adopted = Volume.open(tmp_path / "v", clock=clock)
    assert adopted.history.current.reason == "backtrack"
    assert firsts(adopted) == (1, 1)
    clock.advance(1)
    put(adopted, 1, 3)
    adopted.close()
    again = Volume.open(tmp_path / "v", clock=clock)
    assert firsts(again) == (1, 3)
    again.close()


def test_a_successful_backtrack_survives_reopen_and_moves_forward(tmp_path: Path) -> None:
    clock = SimulatedClock(START)
    volume, between = two_generations(tmp_path / "v", clock)
    after = clock.now()
    clock.advance(1)
    volume.backtrack(to=between)
    assert firsts(volume) == (1, 1)
    volume.close()
    volume = Volume.open(tmp_path / "v", clock=clock)
    assert firsts(volume) == (1, 1)
    clock.advance(1)
    volume.backtrack(to=after)
    assert firsts(volume) == (2, 2)
    volume.close()


def test_commits_in_doubt_give_no_lost_update() -> None:
    """A counter read, incremented and committed four times while AZ 1 and az2-a are down."""
    volume = Volume.create(page_size=PAGE, segment_size=PAGE * 16, capacity=PAGE * 64)

    def increment() -> bool:
        value = int.from_bytes(volume.read_page(0)[:8], "little")
        try:
            with volume.transaction() as tx:
                tx.write(0, 0, (value + 1).to_bytes(8, "little"))
        except (WriteQuorumError, InDoubtError):
            return False
        return True

    assert increment()
    volume.cluster.fail_az("az1")
    volume.cluster.fail_node("az2-a")
    outcomes = [increment() for _ in range(4)]
    assert outcomes == [False] * 4
    assert len(volume.in_doubt) == 1, "only the first one went out; the rest were refused"
    volume.cluster.restore_az("az1")
    volume.cluster.restore_node("az2-a")
    assert volume.in_doubt == ()
    assert increment()
    # 1 + the in-doubt one that became durable + 1: never two updates from one read.
    assert int.from_bytes(volume.read_page(0)[:8], "little") == 3


def _rewrite_meta(path: Path, kind: int, change: dict[str, object]) -> None:
    body = metafile.decode(path.read_bytes(), kind, str(path))
    body.update(change)
    path.write_bytes(metafile.encode(kind, body))


def _off_volume(path: Path, clock: SimulatedClock) -> None:
    volume = Volume.create(
        path, page_size=PAGE, segment_size=PAGE * 16, capacity=PAGE * 64, clock=clock
    )
    for number in range(1, 60):
        clock.advance(10)
        with volume.transaction() as tx:
            for page_no in range(64):
                tx.write(page_no, 0, number.to_bytes(4, "little"))
    volume.close()


def test_off_for_good_is_kept_by_the_nodes_not_volume_meta(tmp_path: Path) -> None:
    clock = SimulatedClock(START)
    _off_volume(tmp_path / "v", clock)
    _rewrite_meta(tmp_path / "v" / "volume.meta", metafile.KIND_VOLUME, {"backtrack_window": 3600})
    volume = Volume.open(tmp_path / "v", clock=clock)
    with pytest.raises(BacktrackDisabledError):
        volume.backtrack(to=clock.now() - 300)
    assert volume.read_page(5)[:4] == (59).to_bytes(4, "little")
    volume.close()


def test_backtrack_refuses_what_storage_no_longer_holds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nodes of an older version recorded no window: their segments still refuse
    a time whose commits they dropped or folded into pages."""
    monkeypatch.setattr(segment, "COALESCE_RECORD_BYTES", 256)
    monkeypatch.setattr(node, "CHECKPOINT_EVERY_FRAMES", 8)
    clock = SimulatedClock(START)
    _off_volume(tmp_path / "v", clock)
    _rewrite_meta(tmp_path / "v" / "volume.meta", metafile.KIND_VOLUME, {"backtrack_window": 3600})
    for name in NODE_NAMES:
        node_meta = tmp_path / "v" / "nodes" / name / "node.meta"
        body = metafile.decode(node_meta.read_bytes(), metafile.KIND_NODE, str(node_meta))
        _rewrite_meta(node_meta, metafile.KIND_NODE, {"history": body["history"]["versions"]})
    volume = Volume.open(tmp_path / "v", clock=clock)
    before = [volume.read_page(page_no) for page_no in range(64)]
    with pytest.raises(TimeOutsideWindowError):
        volume.backtrack(to=clock.now() - 300)
    assert [volume.read_page(page_no) for page_no in range(64)] == before
    volume.close()


def test_history_encoding_of_older_nodes_still_reads(tmp_path: Path) -> None:
    clock = SimulatedClock(START)
    volume, between = two_generations(tmp_path / "v", clock)
    volume.backtrack(to=between)
    volume.close()
    for name in NODE_NAMES:
        node_meta = tmp_path / "v" / "nodes" / name / "node.meta"
        body = metafile.decode(node_meta.read_bytes(), metafile.KIND_NODE, str(node_meta))
        assert isinstance(body["history"], dict) and body["history"]["backtrack_window"] == 3600
        _rewrite_meta(node_meta, metafile.KIND_NODE, {"history": body["history"]["versions"]})
    copy = tmp_path / "copy"
    shutil.copytree(tmp_path / "v", copy)
    volume = Volume.open(copy, clock=clock)
    assert firsts(volume) == (1, 1)
    volume.close()
    body = metafile.decode(
        (copy / "nodes" / "az1-a" / "node.meta").read_bytes(), metafile.KIND_NODE, "node.meta"
    )
    assert body["history"]["key"][0] > 1, "recovery rewrote the history under its epoch"
