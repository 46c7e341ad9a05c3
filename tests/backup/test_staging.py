"""Staging rounds off the commit path: store calls, slow stores, backpressure, close.

The writer keeps a catalog of its backup in memory: ``status()`` and the
restorable window cost no store call however many rounds the store holds, and
opening a volume reads the catalog with a fixed number of calls. A round
uploads outside the transport's lock, so a store whose uploads hang holds up
no other thread's commits; round requests never pile up behind it (a
committer that finds the queue full waits, at most its commit timeout); a
failing store never fails a commit; close runs the rounds asked for first.
Stores here are real memory stores under wrappers that count calls, block
uploads on an event, or refuse them.
"""

from __future__ import annotations

import collections
import gc
import threading
import weakref
from pathlib import Path
from typing import Any

import pytest

from aurora_storage import SimulatedClock, Volume
from aurora_storage.backup import staging
from aurora_storage.backup.store import MemoryStore
from aurora_storage.errors import ConfigurationError, WriteQuorumError

PAGE = 4096
START = 1_700_000_000.0
JOIN_SECONDS = 30.0  # a bound on a thread that should end; never reached when all is well
GATE_SECONDS = 4 * JOIN_SECONDS  # a gated upload gives up waiting after this


class CountingStore(MemoryStore):
    """A memory store that counts every call by method."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: collections.Counter[str] = collections.Counter()

    def put(self, name: str, data: bytes) -> None:
        self.calls["put"] += 1
        super().put(name, data)

    def get(self, name: str) -> bytes:
        self.calls["get"] += 1
        return super().get(name)

    def delete(self, name: str) -> None:
        self.calls["delete"] += 1
        super().delete(name)

    def exists(self, name: str) -> bool:
        self.calls["exists"] += 1
        return super().exists(name)

    def list(self, prefix: str = "") -> list[str]:
        self.calls["list"] += 1
        return super().list(prefix)


class GatedStore(MemoryStore):
    """Uploads of LOG objects wait until ``gate`` is set; ``entered`` says one is waiting."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.entered = threading.Event()

    def put(self, name: str, data: bytes) -> None:
        if name.startswith("log/"):
            self.entered.set()
            self.gate.wait(GATE_SECONDS)
        super().put(name, data)


def write(volume: Volume, page_no: int, data: bytes) -> int:
    with volume.transaction() as tx:
        tx.write(page_no, 0, data)
    assert tx.lsn is not None
    return tx.lsn


def status_calls(volume: Volume, store: CountingStore) -> int:
    before = sum(store.calls.values())
    status = volume.status()
    volume.restorable_window  # noqa: B018 (the property under test)
    assert status["backup"]["last_error"] == ""
    return sum(store.calls.values()) - before


@pytest.mark.parametrize("mode", ["inline", "background"])
def test_status_makes_no_store_call_however_many_rounds(mode: str, tmp_path: Path) -> None:
    clock = SimulatedClock(START)
    store = CountingStore()
    path = tmp_path / "v"
    volume = Volume.create(
        path,
        durability="os",
        page_size=PAGE,
        segment_size=PAGE * 4,
        clock=clock,
        backup=store,
        backup_staging_interval=10,
        backup_staging=mode,
    )
    counts = {}
    opened = {}
    for rounds in (5, 120):
        while len(store.list("rounds/")) < rounds:
            clock.advance(11)
            write(volume, len(store.list("rounds/")) % 16, b"row")
            assert volume.stage_backup()
        counts[rounds] = status_calls(volume, store)
        volume.close()
        before = sum(store.calls.values())
        volume = Volume.open(path, clock=clock, backup=store, backup_staging=mode)
        opened[rounds] = sum(store.calls.values()) - before
        assert status_calls(volume, store) == 0
    volume.close()
    assert counts == {5: 0, 120: 0}, "status() and the window come from the catalog in memory"
    assert opened[5] == opened[120] <= 6, "opening reads the catalog in a few calls"


def test_a_hung_upload_holds_up_no_other_commit() -> None:
    """A round waits on the store; other threads go on committing meanwhile."""
    store = GatedStore()
    volume = Volume.create(page_size=PAGE, segment_size=PAGE * 4, backup=store)
    assert volume.status()["backup"]["staging"] == "background"
    first = threading.Thread(target=write, args=(volume, 0, b"first"))
    first.start()  # the first commit asks for a round, whose upload hangs
    assert store.entered.wait(JOIN_SECONDS), "the round began its upload"
    done: list[int] = []

    def commit_many(page_no: int) -> None:
        for i in range(50):
            done.append(write(volume, page_no, f"row {i}".encode()))

    others = [threading.Thread(target=commit_many, args=(page_no,)) for page_no in (1, 5)]
    for thread in others:
        thread.start()
    for thread in others:
        thread.join(JOIN_SECONDS)
    committed = len(done)
    blocked = not store.list("rounds/")
    store.gate.set()
    first.join(JOIN_SECONDS)
    assert committed == 100, "100 commits of other threads went through meanwhile"
    assert blocked, "the upload was still waiting"
    assert not first.is_alive()
    assert volume.stage_backup()
    _, latest = volume.restorable_window
    volume.close()
    restored = Volume.restore(store, to=latest)
    assert restored.read_page(1)[:6] == b"row 49"
    assert restored.read_page(5)[:6] == b"row 49"
    assert restored.read_page(0)[:5] == b"first"
    restored.close()


def test_round_requests_never_pile_up_behind_a_hung_store() -> None:
    """While a round hangs, one request waits; committers that ask for more wait at
    most their commit timeout, then go on, and their commits are staged later."""
    clock = SimulatedClock(START)
    store = GatedStore()
    volume = Volume.create(
        page_size=PAGE,
        segment_size=PAGE * 4,
        clock=clock,
        commit_timeout=0.05,
        backup=store,
        backup_staging_interval=60,
        backup_staging="background",
    )
    stager = volume._stager
    assert stager is not None
    first = threading.Thread(target=write, args=(volume, 0, b"first"))
    first.start()
    assert store.entered.wait(JOIN_SECONDS)
    first.join(JOIN_SECONDS)
    assert not first.is_alive(), "asking for a round does not wait for it"
    most = 0
    for i in range(6):
        clock.advance(61)  # every commit asks for a round
        write(volume, 1 + i % 4, f"later {i}".encode())
        most = max(most, stager.pending_rounds)
    assert most == staging.STAGING_QUEUE_ROUNDS_MAX
    store.gate.set()
    assert volume.stage_backup()
    assert stager.pending_rounds == 0
    _, latest = volume.restorable_window
    assert latest == clock.now()
    restored = Volume.restore(store, to=latest)
    assert restored.read_page(2)[:7] == b"later 5"
    restored.close()
    volume.close()


class RefusingStore(MemoryStore):
    """Refuses every upload while ``refuse`` is set."""

    refuse = True

    def put(self, name: str, data: bytes) -> None:
        if self.refuse:
            raise OSError(f"the store refused {name}")
        super().put(name, data)


@pytest.mark.parametrize("mode", ["inline", "background"])
def test_a_failing_store_never_fails_a_commit(mode: str) -> None:
    clock = SimulatedClock(START)
    store = RefusingStore()
    volume = Volume.create(
        page_size=PAGE,
        segment_size=PAGE * 4,
        clock=clock,
        backup=store,
        backup_staging_interval=10,
        backup_staging=mode,
    )
    for i in range(10):
        clock.advance(11)
        write(volume, i, b"kept")
    assert not volume.stage_backup()
    status: dict[str, Any] = volume.status()
    assert "refused" in status["backup"]["last_error"]
    assert status["backup"]["earliest_restorable"] is None, "nothing is restorable yet"
    store.refuse = False
    assert volume.stage_backup()
    assert volume.status()["backup"]["last_error"] == ""
    restored = Volume.restore(store, to=clock.now())
    assert all(restored.read_page(i)[:4] == b"kept" for i in range(10))
    restored.close()
    volume.close()


def test_close_runs_the_rounds_asked_for() -> None:
    clock = SimulatedClock(START)
    store = GatedStore()
    volume = Volume.create(
        page_size=PAGE,
        segment_size=PAGE * 4,
        clock=clock,
        backup=store,
        backup_staging_interval=60,
        backup_staging="background",
    )
    first = threading.Thread(target=write, args=(volume, 0, b"first"))
    first.start()
    assert store.entered.wait(JOIN_SECONDS)
    clock.advance(61)
    last = write(volume, 1, b"last")  # asks for a round, queued behind the hung one
    store.gate.set()
    volume.close()
    first.join(JOIN_SECONDS)
    vdls = [int(name.split("/")[1].split("-")[0]) for name in store.list("rounds/")]
    assert max(vdls) >= last, "the round asked for before close was recorded"
    restored = Volume.restore(store, to=clock.now())
    assert restored.read_page(1)[:4] == b"last"
    restored.close()


def test_an_idle_volume_keeps_its_latest_restorable_time_up() -> None:
    """On a wall clock the worker runs a round each staging interval with no commit."""
    store = MemoryStore()
    volume = Volume.create(
        page_size=PAGE, segment_size=PAGE * 4, backup=store, backup_staging_interval=0.05
    )
    write(volume, 0, b"once")
    assert volume.stage_backup()
    _, latest = volume.restorable_window
    advanced = threading.Event()

    def watch() -> None:
        while not advanced.is_set() and volume.restorable_window[1] <= latest:
            advanced.wait(0.01)
        advanced.set()

    watcher = threading.Thread(target=watch)
    watcher.start()
    watcher.join(JOIN_SECONDS)
    moved = volume.restorable_window[1] > latest
    advanced.set()
    volume.close()
    assert moved, "an idle round recorded a later latest restorable time"


def test_staging_modes_are_checked() -> None:
    with pytest.raises(ConfigurationError):
        Volume.create(backup=MemoryStore(), backup_staging="sometimes")


def test_a_volume_dropped_without_close_takes_its_worker_with_it() -> None:
    volume = Volume.create(page_size=PAGE, segment_size=PAGE * 4, backup=MemoryStore())
    write(volume, 0, b"once")
    assert volume._stager is not None and volume._stager._thread is not None
    worker = volume._stager._thread
    dropped = weakref.ref(volume)
    del volume
    gc.collect()
    worker.join(JOIN_SECONDS)
    assert dropped() is None and not worker.is_alive()


def test_a_round_during_the_first_commit_after_a_reopen_stages_the_pg(tmp_path: Path) -> None:
    """After a reopen a PG's first commit in flight (here in doubt) once made a round
    mark the PG staged without staging it: the commits before the reopen never
    reached the backup, and a restore inside the window failed."""
    clock = SimulatedClock(1_700_000_000.0)
    store = MemoryStore()
    path = tmp_path / "v"
    volume = Volume.create(
        path, durability="os", clock=clock, backup=store, backup_staging_interval=3600
    )
    with volume.transaction() as tx:
        tx.write(0, 0, b"AAAA")
    clock.advance(1)
    assert volume.stage_backup()
    clock.advance(1)
    with volume.transaction() as tx:
        tx.write(0, 0, b"BBBB")  # not staged before the close
    moment = clock.now()
    clock.advance(1)
    volume.close()
    volume = Volume.open(path, clock=clock, backup=store)
    for name in ("az2-a", "az2-b", "az3-a"):
        volume.cluster.fail_node(name)
    with pytest.raises(WriteQuorumError), volume.transaction() as tx:
        tx.write(1, 0, b"DDDD")  # PG 0 again
    clock.advance(1)
    assert volume.stage_backup()
    volume.close()
    restored = Volume.restore(store, to=moment, durability="memory")
    assert restored.read_page(0)[:4] == b"BBBB"
    restored.close()


def test_a_commit_at_the_time_of_the_last_round_is_after_it() -> None:
    """A clock that did not tick: a commit stamped after a round recorded at its time
    gets a later time, so a restore to the window's latest second shows exactly
    what the volume showed then (and the commit once the window reaches it)."""
    clock = SimulatedClock(1000.0)
    store = MemoryStore()
    volume = Volume.create(clock=clock, backup=store, backup_staging_interval=60)
    with volume.transaction() as tx:
        tx.write(0, 0, b"AAAA")
    clock.advance(61)
    with volume.transaction() as tx:
        tx.write(0, 0, b"BBBB")  # crosses the interval: a round at 1061
    with volume.transaction() as tx:
        tx.write(0, 0, b"CCCC")  # the clock still says 1061
    _, latest = volume.restorable_window
    assert volume._last_commit_time > latest
    restored = Volume.restore(store, to=latest)
    assert restored.read_page(0)[:4] == b"BBBB"
    restored.close()
    clock.advance(61)
    assert volume.stage_backup()
    _, latest = volume.restorable_window
    restored = Volume.restore(store, to=latest)
    assert restored.read_page(0)[:4] == b"CCCC"
    restored.close()
    volume.close()


@pytest.mark.parametrize("mode", ["inline", "background"])
def test_close_stages_what_is_not_yet_in_the_backup(mode: str) -> None:
    from aurora_storage.backup import BackupCatalog

    clock = SimulatedClock(1_700_000_000.0)
    store = MemoryStore()
    volume = Volume.create(
        clock=clock, backup=store, backup_staging_interval=3600, backup_staging=mode
    )
    for number in range(5):
        clock.advance(1)
        with volume.transaction() as tx:
            tx.write(number, 0, b"row %d" % number)
    last = volume._last_commit_time
    volume.close()
    _, latest = BackupCatalog(store).window()
    assert latest >= last
    restored = Volume.restore(store, to="latest")
    assert restored.read_page(4)[:5] == b"row 4"
    restored.close()
