"""The page store (protocol/page_store.py): versions survive a crash at every step, damage
is found and never served, and a checkpoint costs the pages that changed.

The crash model is the simulated disk's: a crash at any disk operation, then
every unsynced write is written, dropped, torn or garbled. The model of the
store is the version of each page at the last checkpoint a caller named
(which it does only after :meth:`PageStore.write` returned).
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aurora_storage import Volume
from aurora_storage.config import NODE_NAMES
from aurora_storage.errors import CorruptionError
from aurora_storage.protocol import node, segment
from aurora_storage.protocol.page_store import PageStore, StoreMap, image_name, index_name
from aurora_storage.runtime.disk import CrashPlan, RealDisk, SimulatedCrash, SimulatedDisk
from aurora_storage.runtime.transport import DirectTransport

PAGE = 512
VOLUME_PAGE = 4096  # the smallest page a volume takes
SETTLE_COMMITS = 6
PAGES = 12


def store_on(disk: SimulatedDisk | RealDisk) -> PageStore:
    return PageStore(disk, 3, 3 * PAGES, 4 * PAGES, PAGE)


def image(page_no: int, version: int) -> bytes:
    return random.Random(page_no * 7919 + version).randbytes(PAGE)


def read_back(store: PageStore, lsn: int, named: StoreMap) -> dict[int, tuple[int, bytes]]:
    """Every page the map names, read as a reader would, once a scrub found it whole."""
    found = store.scrub(lsn, named)
    assert not found.lost and not found.misplaced, (found.lost, found.misplaced)
    pages = {}
    for page_no in named.page_nos():
        slot = named.slot(page_no)
        assert slot is not None
        pages[page_no] = store.read(page_no, lsn, slot)
    return pages


checkpoints = st.lists(
    st.lists(st.integers(0, PAGES - 1), min_size=1, max_size=PAGES, unique=True),
    min_size=1,
    max_size=5,
)


@settings(max_examples=150, deadline=None)
@given(
    plan=checkpoints,
    crash_at=st.integers(1, 120),
    seed=st.integers(0, 2**16),
    mode=st.sampled_from(["random", "write", "drop", "tear", "garble"]),
)
def test_a_crash_anywhere_leaves_the_named_checkpoint_readable(
    plan: list[list[int]], crash_at: int, seed: int, mode: str
) -> None:
    disk = SimulatedDisk(seed, CrashPlan(crash_at))
    store = store_on(disk)
    model: dict[int, tuple[int, bytes]] = {}
    durable, named = 0, StoreMap(store.page_lo)
    try:
        for round_no, pages in enumerate(plan, start=1):
            lsn = round_no * 100
            page_nos = sorted(store.page_lo + page for page in pages)
            page_lsns = [lsn - page % 50 for page in page_nos]
            images = [image(page, round_no) for page in page_nos]
            written = store.write(page_nos, page_lsns, b"".join(images), lsn, named)
            durable, named = lsn, written  # the caller names it once the write returned
            model.update(zip(page_nos, zip(page_lsns, images, strict=True), strict=True))
    except SimulatedCrash:
        disk.crash(mode)
    disk.plan.crash_at = None  # the machine is back: no crash pending
    if not durable:
        return  # nothing was ever named: the store is not read
    assert read_back(store_on(disk), durable, named) == model
    # A store crashed mid-write takes the next checkpoint (possibly at a lower LSN
    # than the write no checkpoint named) and reads it back.
    page_nos = [store.page_lo, store.page_hi - 1]
    images = [image(page, 99) for page in page_nos]
    named = store_on(disk).write(page_nos, [durable + 1] * 2, b"".join(images), durable + 50, named)
    model.update({page: (durable + 1, data) for page, data in zip(page_nos, images, strict=True)})
    assert read_back(store_on(disk), durable + 50, named) == model


def written_store() -> tuple[SimulatedDisk, dict[int, tuple[int, bytes]], dict[int, StoreMap]]:
    """A store after checkpoints at 10, 20 and 30, and the map each named."""
    disk = SimulatedDisk(1)
    store = store_on(disk)
    model: dict[int, tuple[int, bytes]] = {}
    maps = {0: StoreMap(store.page_lo)}
    for round_no, pages in enumerate([[0, 1, 2, 3], [1, 2], [2, 5]], start=1):
        page_nos = [store.page_lo + page for page in pages]
        images = [image(page, round_no) for page in page_nos]
        lsn = round_no * 10
        maps[lsn] = store.write(page_nos, [lsn] * len(pages), b"".join(images), lsn, maps[lsn - 10])
        model.update({page: (lsn, data) for page, data in zip(page_nos, images, strict=True)})
    return disk, model, maps


def test_versions_of_older_checkpoints_stay_readable() -> None:
    disk, model, maps = written_store()
    store = store_on(disk)
    assert read_back(store, 30, maps[30]) == model
    at_20 = read_back(store, 20, maps[20])
    assert at_20[store.page_lo + 2] == (20, image(store.page_lo + 2, 2))
    assert store.page_lo + 5 not in at_20


@pytest.mark.parametrize("target", ["version", "entry", "zeroed entry", "header", "cut"])
def test_damage_is_found_and_never_served(target: str) -> None:
    disk, _, maps = written_store()
    store = store_on(disk)
    page_no = store.page_lo + 2  # its version at 30 is in one slot, at 20 in the other
    slot = maps[30].slot(page_no)
    assert slot is not None
    index = bytearray(disk.read(index_name(3)))
    images = bytearray(disk.read(image_name(3)))
    entry = 128 + (page_no - store.page_lo) * 64 + slot * 32
    if target == "version":
        images[((page_no - store.page_lo) * 2 + slot) * PAGE + 5] ^= 1
    elif target == "entry":
        index[entry + 8] ^= 1  # the page LSN
    elif target == "zeroed entry":
        index[entry : entry + 32] = bytes(32)  # the older slot still verifies
    elif target == "header":
        index[0:128] = bytes(128)
    else:
        del index[entry:]  # the index cut short
    disk.replace(index_name(3), bytes(index))
    disk.replace(image_name(3), bytes(images))
    found = store.scrub(30, maps[30])
    assert found.lost
    if target != "header":  # headers are checked when the store is opened (check)
        with pytest.raises(CorruptionError):
            store.read(page_no, 30, slot)


def test_an_index_older_than_its_checkpoint_is_not_trusted() -> None:
    disk = SimulatedDisk(2)
    store = store_on(disk)
    first = store.write([store.page_lo], [10], image(0, 1), 10, StoreMap(store.page_lo))
    older = disk.read(index_name(3))
    second = store.write([store.page_lo], [20], image(0, 2), 20, first)
    disk.replace(index_name(3), older)
    assert "older than the checkpoint" in store.scrub(20, second).lost


def test_another_pgs_store_is_misplaced() -> None:
    disk = SimulatedDisk(3)
    named = store_on(disk).write([3 * PAGES], [10], image(0, 1), 10, StoreMap(3 * PAGES))
    other = PageStore(disk, 4, 4 * PAGES, 5 * PAGES, PAGE)
    disk.replace(index_name(4), disk.read(index_name(3)))
    disk.replace(image_name(4), disk.read(image_name(3)))
    assert "PG 3" in other.scrub(10, named).misplaced


def test_damage_to_unused_bytes_is_reported_and_costs_nothing() -> None:
    disk, model, maps = written_store()
    store = store_on(disk)
    images = bytearray(disk.read(image_name(3)))
    images[(4 * 2 + 1) * PAGE + 7] = 0x55  # a hole: page 4 was never written, page 5 was
    disk.replace(image_name(3), bytes(images))
    found = store.scrub(30, maps[30])
    assert not found.lost and found.harmless
    assert read_back(store, 30, maps[30]) == model


def test_the_map_holds_two_bits_a_page() -> None:
    named = StoreMap(100).with_slots([100, 103, 115], [0, 1, 1])
    assert [named.slot(page) for page in (100, 101, 103, 115, 116)] == [0, None, 1, 1, None]
    assert named.page_nos() == [100, 103, 115] and named.count() == 3
    again = StoreMap.decode(100, named.encode()).with_slots([103], [0])
    assert again.slot(103) == 0 and named.slot(103) == 1  # a copy: the named map stays


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.lists(st.tuples(st.integers(0, 5000), st.integers(0, 1)), max_size=12), max_size=8),
    st.integers(1, 6),
)
def test_the_map_answers_as_a_dict_in_both_shapes(
    writes: list[list[tuple[int, int]]], sparse_max: int
) -> None:
    """A map grown by checkpoints names the last slot of every page ever written,
    sparse or dense, through its checkpoint file's encoding too."""
    before = StoreMap.SPARSE_MAX
    StoreMap.SPARSE_MAX = sparse_max  # small, so that maps change shape here
    try:
        named, model = StoreMap(7_000), {}
        for batch in writes:
            changes = dict(batch)  # a checkpoint writes a page once
            named = named.with_slots([7_000 + page for page in changes], list(changes.values()))
            model.update(changes)
            named = StoreMap.decode(7_000, named.encode())
            assert named.count() == len(model)
            assert named.page_nos() == [7_000 + page for page in sorted(model)]
            for page in {*model, 0, 5000, 2500}:
                assert named.slot(7_000 + page) == model.get(page)
            fields = set(named.encode())
            assert fields == (
                {"held", "held_slots"} if len(model) <= sparse_max else {"present", "slots"}
            )
    finally:
        StoreMap.SPARSE_MAX = before


def test_a_sparse_map_costs_bytes_per_page_held_wherever_they_are() -> None:
    pages = 655_360  # a 10 GiB PG of 16 KiB pages
    named = StoreMap(0).with_slots([3, pages // 2, pages - 1], [1, 0, 1])
    assert sum(len(value) for value in named.encode().values()) == 3 * 5
    with pytest.raises(ValueError, match="torn"):
        StoreMap.decode(0, {"held": b"\0" * 5, "held_slots": b"\0"})
    with pytest.raises(ValueError, match="order"):
        StoreMap.decode(0, {"held": bytes(8), "held_slots": bytes(2)})


def test_pages_never_written_cost_no_disk(tmp_path: Path) -> None:
    disk = RealDisk(tmp_path, "os")
    store = PageStore(disk, 0, 0, 655_360, 16384)  # a whole 10 GiB PG of 16 KiB pages
    store.write([655_359], [5], bytes(range(256)) * 64, 5, StoreMap(0))
    disk.close()
    used = sum(path.stat().st_blocks * 512 for path in tmp_path.iterdir())
    apparent = sum(path.stat().st_size for path in tmp_path.iterdir())
    assert apparent > 20 * 1024 * 1024 * 1024  # the last page's slot is 20 GiB in
    assert used < 1024 * 1024, "holes, not zeros, below the page"


class CountingDisk(SimulatedDisk):
    """Counts bytes written at offsets (page stores) and replaced whole."""

    def __init__(self, seed: int) -> None:
        super().__init__(seed)
        self.store_bytes = 0

    def write_at(self, name: str, offset: int, data: bytes | bytearray | memoryview) -> None:
        self.store_bytes += len(data)
        super().write_at(name, offset, data)


@pytest.mark.parametrize("pages", [64, 512])
def test_a_checkpoint_writes_what_changed_not_the_pg(
    pages: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same 8 changed pages cost the same store bytes in a PG of 64 or of 512 pages."""
    monkeypatch.setattr(segment, "COALESCE_RECORD_BYTES", 256)
    monkeypatch.setattr(node, "CHECKPOINT_EVERY_FRAMES", 2)
    disks = {name: CountingDisk(i) for i, name in enumerate(NODE_NAMES)}
    volume = Volume.create(
        disks=disks,  # type: ignore[arg-type]
        page_size=VOLUME_PAGE,
        segment_size=VOLUME_PAGE * 512,
        capacity=VOLUME_PAGE * 512,
        transport=DirectTransport(sync_threads=0),
    )

    def settle() -> None:
        """Commits to page 0 until every earlier change is under a checkpoint (the GC
        floor and the VDL hint a checkpoint waits for come with later writes)."""
        for _ in range(SETTLE_COMMITS):
            with volume.transaction() as tx:
                tx.write(0, 0, b"settle")

    for first in range(0, pages, 16):
        with volume.transaction() as tx:
            for page_no in range(first, first + 16):
                tx.write(page_no, 0, b"everything once")
    settle()
    before = {name: disk.store_bytes for name, disk in disks.items()}
    with volume.transaction() as tx:
        for page_no in range(8):
            tx.write(1 + page_no * 7 % (pages - 1), 100, b"a few pages changed")
    settle()
    spent = {name: disk.store_bytes - before[name] for name, disk in disks.items()}
    volume.close()
    for name, count in spent.items():
        # The 8 pages once, page 0 once per checkpoint, each an image and an entry, and a
        # header per checkpoint: never the PG's other pages.
        checkpoints = SETTLE_COMMITS + 1
        assert count >= 8 * VOLUME_PAGE, (name, count)
        assert count <= (8 + checkpoints) * (VOLUME_PAGE + 24) + checkpoints * 64, (name, count)


def test_a_scrub_reads_what_a_sparse_store_holds_not_its_size(tmp_path: Path) -> None:
    class Counting(RealDisk):
        read_bytes = 0

        def read_at(self, name: str, offset: int, size: int) -> bytes:
            data = super().read_at(name, offset, size)
            self.read_bytes += len(data)
            return data

    disk = Counting(tmp_path, "os")
    store = PageStore(disk, 0, 0, 655_360, 16384)  # a whole 10 GiB PG of 16 KiB pages
    image = bytes(range(256)) * 64
    named = store.write([3, 655_359], [5, 5], image + image, 5, StoreMap(0))
    found = store.scrub(5, named)
    assert not found.lost and not found.harmless
    assert disk.read_bytes < 4 * 1024 * 1024, "the holes (20 GiB) were not read"
    # Damage inside what the store holds is still found.
    disk.write_at(image_name(0), (3 * 2 + 1) * 16384 + 9, b"\x01")  # page 3's unused slot
    assert store.scrub(5, named).harmless
    disk.close()
