"""History on disk: a volume with a path folds ahead of its backtrack window.

Nodes keep the window's versions in history files and a base store
(protocol/disk_history.py) instead of in memory. A model of every commit and
backtrack (by time, and by LSN for reads at old read points) must match what
the volume shows at every step, across reopens, with a node budget of hot
records small enough that every few commits fold ahead.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from aurora_storage import SimulatedClock, Volume, sim
from aurora_storage.protocol import node

PAGE = 4096
PAGES = 24
WINDOW = 3600.0
START = 1_700_000_000.0


@pytest.fixture(autouse=True)
def small_hot_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(node, "HOT_BYTES_MAX", 2 * PAGE)  # fold ahead every few commits


def create(
    path: Path, clock: SimulatedClock, window: float = WINDOW, durability: str = "os"
) -> Volume:
    return Volume.create(
        path,
        page_size=PAGE,
        segment_size=PAGE * 8,
        capacity=PAGE * PAGES,
        clock=clock,
        backtrack_window=window,
        durability=durability,
    )


def versions(volume: Volume, commits: int, pages: int = 1, repeat: int = 300) -> None:
    """Commit n (every 20 s) writes "v<n>" over the start of page n % ``pages``."""
    assert isinstance(volume.clock, SimulatedClock)
    for number in range(commits):
        volume.clock.advance(20)
        with volume.transaction() as tx:
            tx.write(number % pages, 0, f"v{number:03d}".encode() * repeat)


def history_files(path: Path) -> list[Path]:
    return sorted(path.rglob("*.hist"))


def records_in_memory(volume: Volume) -> int:
    return sum(
        segment.page_log.stats().record_bytes
        for storage in volume.nodes.values()
        for segment in storage.segments.values()
    )


class Model:
    """Pages by time (backtrack) and by LSN (read views) after every commit."""

    def __init__(self) -> None:
        self.timeline = sim.TimelineModel(START, PAGE)
        self.by_lsn: list[tuple[int, float, dict[int, bytes]]] = []

    def commit(self, volume: Volume, rng: random.Random) -> None:
        changes = []
        for _ in range(rng.randint(1, 4)):
            data = rng.randbytes(rng.randint(1, 300))
            changes.append((rng.randrange(PAGES), rng.randrange(PAGE - len(data)), data))
        with volume.transaction() as tx:
            for page_no, offset, data in changes:
                tx.write(page_no, offset, data)
        now = volume.clock.now()
        self.timeline.commit(now, changes)
        self.by_lsn.append((tx.lsn, now, self.timeline.at(now)))

    def backtrack(self, volume: Volume, target: float) -> None:
        result = volume.backtrack(target)
        self.timeline.backtrack(volume.clock.now(), target)
        # Commits after the one it landed on are annulled: no read point shows them.
        self.by_lsn = [entry for entry in self.by_lsn if entry[0] <= result.lsn]


def check_now(volume: Volume, model: Model) -> None:
    expected = model.timeline.at(volume.clock.now())
    for page_no in range(PAGES):
        assert volume.read_page(page_no) == expected.get(page_no, bytes(PAGE)), page_no


def check_old_reads(volume: Volume, model: Model, rng: random.Random) -> None:
    earliest, _latest = volume.backtrack_window
    inside = [entry for entry in model.by_lsn if entry[1] >= earliest]
    for lsn, _time, pages in rng.sample(inside, min(3, len(inside))):
        with volume.read_view(lsn) as read_point:
            for page_no in rng.sample(range(PAGES), 4):
                got = volume.read_page(page_no, read_point)
                assert got == pages.get(page_no, bytes(PAGE)), (lsn, page_no)


@pytest.mark.parametrize(
    ("seed", "durability"), [(seed, "os") for seed in range(6)] + [(6, "fsync")]
)
def test_commits_backtracks_old_reads_and_reopens_match_the_model(
    tmp_path: Path, seed: int, durability: str
) -> None:
    """With fsync durability the logs a checkpoint keeps end in preallocated zeros."""
    rng = random.Random(seed)
    clock = SimulatedClock(START)
    path = tmp_path / "v"
    volume = create(path, clock, durability=durability)
    model = Model()
    kept_history = False
    for _ in range(70):
        roll = rng.random()
        if roll < 0.6:
            clock.advance(rng.uniform(1, 120))
            model.commit(volume, rng)
        elif roll < 0.75:
            clock.advance(rng.uniform(0, 5))
            earliest, latest = volume.backtrack_window
            model.backtrack(volume, rng.uniform(earliest, latest))
        elif roll < 0.85:
            check_old_reads(volume, model, rng)
        elif roll < 0.92:
            volume.close()
            volume = Volume.open(path, clock=clock)
        else:
            clock.advance(rng.uniform(0, 900))
        kept_history = kept_history or bool(history_files(path))
        check_now(volume, model)
    assert kept_history, "the checkpoints folded ahead of the window"
    volume.close()


def test_memory_holds_no_history_and_the_window_still_reaches_back(tmp_path: Path) -> None:
    """With a 72 h window, 300 commits rewriting the same pages keep a few KiB of records
    in memory (the budget), not the window's; every version stays reachable."""
    clock = SimulatedClock(START)
    path = tmp_path / "v"
    volume = create(path, clock, window=72 * 3600)
    for number in range(300):
        clock.advance(60)
        with volume.transaction() as tx:
            for page_no in range(4):
                tx.write(page_no, 0, f"version {number:04d}".encode().ljust(1000, b"."))
    written = 300 * 4 * 1000
    held = records_in_memory(volume)
    assert held < written // 20, f"{held} bytes of records in memory for {written} written"
    assert history_files(path)
    clock.advance(60)
    volume.backtrack(START + 60 * 10 + 30)  # after commit 9
    for page_no in range(4):
        assert volume.read_page(page_no)[:12] == b"version 0009"
    volume.backtrack(START + 60 * 200 + 30)  # forward again: after commit 199
    assert volume.read_page(2)[:12] == b"version 0199"
    volume.close()
    reopened = Volume.open(path, clock=clock)
    assert reopened.read_page(3)[:12] == b"version 0199"
    reopened.backtrack(START + 60 * 300)  # forward to the last commit
    assert reopened.read_page(0)[:12] == b"version 0299"
    reopened.close()


def test_history_goes_once_the_window_passes(tmp_path: Path) -> None:
    clock = SimulatedClock(START)
    path = tmp_path / "v"
    volume = create(path, clock, window=600)
    for number in range(60):
        clock.advance(30)
        with volume.transaction() as tx:
            tx.write(number % 3, 0, bytes([number]) * 1500)
    assert history_files(path)
    clock.advance(3600)
    for number in range(40):  # quiet for longer than the window, then more commits
        clock.advance(30)
        with volume.transaction() as tx:
            tx.write(5, 0, bytes([number]) * 1500)
    earliest, _ = volume.backtrack_window
    assert earliest > START + 1800 + 3600
    files = history_files(path)
    assert len(files) <= 6 * 12, f"{len(files)} history files kept"
    volume.close()


def test_a_node_whose_history_files_are_gone_sets_its_segment_aside_on_backtrack(
    tmp_path: Path,
) -> None:
    """Damage to one node's history costs that node's old versions only: a backtrack
    still lands, read from the five others; that segment serves nothing wrong."""
    clock = SimulatedClock(START)
    path = tmp_path / "v"
    volume = create(path, clock)
    versions(volume, 80, repeat=200)
    volume.close()
    victim = next(p for p in history_files(path) if "az1-a" in str(p))
    for file in [p for p in history_files(path) if p.parent == victim.parent]:
        file.unlink()
    reopened = Volume.open(path, clock=clock)
    reopened.backtrack(START + 20 * 10 + 5)
    assert reopened.read_page(0)[:4] == b"v009"
    segment = reopened.nodes["az1-a"].segments[0]
    assert segment.failed or segment.disk_history is None or segment.disk_history.damaged
    for _ in range(6):  # every replica a read may pick
        assert reopened.read_page(0)[:4] == b"v009"
    reopened.close()


def test_the_window_counts_its_bytes_on_disk_across_a_reopen(tmp_path: Path) -> None:
    """change_bytes_stored counts the window's records wherever they are: folded ahead
    into history files, it stays what it was, and a reopen finds the same."""
    clock = SimulatedClock(START)
    path = tmp_path / "v"
    volume = create(path, clock)
    for number in range(60):
        clock.advance(30)
        with volume.transaction() as tx:
            tx.write(number % PAGES, 0, bytes([number]) * 1000)
    assert history_files(path)
    before = volume.status()["backtrack"]
    assert before["change_bytes_stored"] >= 60 * 1000
    volume.close()
    reopened = Volume.open(path, clock=clock)
    after = reopened.status()["backtrack"]
    assert after["change_records_stored"] == before["change_records_stored"]
    assert 0.5 * before["change_bytes_stored"] <= after["change_bytes_stored"]
    assert after["change_bytes_stored"] <= 2 * before["change_bytes_stored"]
    assert after["earliest"] == before["earliest"]
    reopened.close()


@pytest.mark.parametrize("kind", ["hist", "base.img", "base.idx"])
def test_damage_to_a_history_file_is_found_by_verify_and_costs_old_versions_only(
    tmp_path: Path, kind: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A garbled history file or base store on one node: verify names it; the volume
    still reads its pages at VDL, and a backtrack lands, from the other replicas."""
    from aurora_storage import cli

    clock = SimulatedClock(START)
    path = tmp_path / "v"
    volume = create(path, clock)
    versions(volume, 250, pages=3)  # longer than the window: its base moves on
    volume.close()
    assert cli.main(["verify", str(path)]) == 0, capsys.readouterr().out
    capsys.readouterr()
    victims = sorted((path / "nodes" / "az2-b").glob(f"*.{kind}"))
    assert victims, f"no {kind} file to damage"
    victim = victims[len(victims) // 2]
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0x5A
    victim.write_bytes(bytes(data))
    assert cli.main(["verify", str(path)]) == 1
    out = capsys.readouterr().out
    assert "az2-b" in out and victim.name.split(".")[0] in out, out
    reopened = Volume.open(path, clock=clock)
    assert reopened.read_page(0)[:4] == b"v249"
    clock.advance(5)
    reopened.backtrack(START + 20 * 201 + 5)  # after commit 200
    for page_no, number in ((0, 198), (1, 199), (2, 200)):
        for _ in range(6):  # whichever replica a read picks
            assert reopened.read_page(page_no)[:4] == f"v{number:03d}".encode()
    reopened.close()


def test_quiet_segments_with_history_sleep_and_backtracks_wake_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """120 PGs written once each inside the window: their segments fold ahead and
    sleep with their history on disk; a backtrack wakes those it reaches and hides
    their writes, a reopen loads them asleep, a backtrack forward shows them again."""
    monkeypatch.setattr(node, "SEGMENTS_AWAKE_MAX", 16)
    clock = SimulatedClock(START)
    path = tmp_path / "v"
    volume = Volume.create(
        path,
        page_size=PAGE,
        segment_size=PAGE * 4,
        capacity=PAGE * 4 * 120,
        clock=clock,
        backtrack_window=WINDOW,
        durability="os",
    )
    for pg_id in range(120):
        clock.advance(10)
        with volume.transaction() as tx:
            tx.write(pg_id * 4 + 1, 0, f"pg {pg_id:03d}".encode() * 100)
    volume.send_maintenance()
    storage = volume.nodes["az1-a"]
    assert len(storage.segments) <= 16 < len(storage.dormant)
    assert history_files(path)
    clock.advance(5)
    volume.backtrack(START + 10 * 60 + 5)  # after PG 59's write
    for pg_id in (0, 59, 60, 119):
        expected = f"pg {pg_id:03d}".encode() if pg_id < 60 else bytes(6)
        assert volume.read_page(pg_id * 4 + 1)[:6] == expected, pg_id
    volume.close()
    reopened = Volume.open(path, clock=clock)
    assert reopened.nodes["az1-a"].dormant, "loaded asleep"
    assert reopened.read_page(100 * 4 + 1)[:6] == bytes(6)
    clock.advance(5)
    reopened.backtrack(START + 10 * 120)  # forward: the last write
    for pg_id in (0, 60, 119):
        assert reopened.read_page(pg_id * 4 + 1)[:6] == f"pg {pg_id:03d}".encode(), pg_id
    reopened.close()


def test_images_a_backtrack_left_unrefolded_are_rebuilt_at_open_never_served(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nodes that took a backtrack (node.meta) but stopped before rebuilding their
    checkpointed images: a read-only open rebuilds them in memory, an open that writes
    on disk; both show the backtrack, never the undone writes."""
    from aurora_storage.protocol.node_storage import NodeStorage

    clock = SimulatedClock(START)
    path = tmp_path / "v"
    volume = create(path, clock)
    versions(volume, 60)
    clock.advance(5)
    with monkeypatch.context() as patch:
        patch.setattr(NodeStorage, "refold", lambda self, segment: True)
        volume.backtrack(START + 20 * 11 + 5)  # after commit 10
        volume.close()
    readonly = Volume.open(path, clock=clock, readonly=True)
    assert readonly.read_page(0)[:4] == b"v010"
    with readonly.read_view(6) as read_point:  # commit 5, below the checkpoint: from disk
        assert readonly.read_page(0, read_point)[:4] == b"v005"
    readonly.close()
    reopened = Volume.open(path, clock=clock)
    assert reopened.read_page(0)[:4] == b"v010"
    reopened.close()
    again = Volume.open(path, clock=clock, readonly=True)  # rebuilt and checkpointed
    assert again.read_page(0)[:4] == b"v010"
    again.close()


def test_reads_at_old_points_while_another_thread_folds_ahead(tmp_path: Path) -> None:
    """One thread commits (its checkpoints fold ahead and write history files), another
    reads at the read points the first recorded, current and below the checkpoints:
    every read shows exactly what that commit left."""
    import threading

    clock = SimulatedClock(START)
    volume = create(tmp_path / "v", clock, window=72 * 3600)
    points: list[tuple[int, int, bytes]] = []  # (LSN, page, its bytes then)
    lock = threading.Lock()
    failures: list[str] = []
    served: list[int] = []
    done = threading.Event()

    def commit() -> None:
        try:
            for number in range(300):
                data = f"{number:05d}".encode() * 100
                with volume.transaction() as tx:
                    tx.write(number % 6, 0, data)
                with lock:
                    points.append((tx.lsn, number % 6, data))
        except Exception as error:  # reported by the main thread
            failures.append(f"commit: {error!r}")
        finally:
            done.set()

    def read() -> None:
        rng = random.Random(7)
        after = 0  # reads once the commits are done: 30 more
        while after < 30:
            after += done.is_set()
            with lock:
                chosen = rng.choice(points) if points else None
            if chosen is None:
                continue
            lsn, page_no, data = chosen
            try:
                with volume.read_view(lsn) as read_point:
                    got = volume.read_page(page_no, read_point)[: len(data)]
            except Exception as error:
                failures.append(f"read at {lsn}: {error!r}")
                return
            if got != data:
                failures.append(f"page {page_no} at LSN {lsn}: {got[:10]!r}")
                return
            served.append(lsn)

    threads = [threading.Thread(target=commit), threading.Thread(target=read)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not failures, failures[:3]
    assert history_files(tmp_path / "v"), "the commits folded ahead meanwhile"
    checkpoints = [s.checkpoint_lsn for s in volume.nodes["az1-a"].segments.values()]
    assert len(served) >= 10 and min(served) < max(checkpoints), (len(served), checkpoints)
    volume.close()
