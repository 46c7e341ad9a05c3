"""Pages kept in page stores and a bounded cache (protocol/node.py, segment.py).

Once a segment's pages are in its page store, its node keeps only some page
images in memory: at most its share of ``cache_bytes`` of clean images plus
what changed since the last checkpoint, read back from the store when used.
An open reads no page image. A page the store lost is never served: the
segment is set aside and the read goes to another replica.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from aurora_storage import Volume
from aurora_storage.config import NODE_NAMES
from aurora_storage.errors import ConfigurationError
from aurora_storage.protocol import node, segment
from aurora_storage.protocol.page_store import SLOTS, image_name
from aurora_storage.runtime import disk as disk_module
from aurora_storage.runtime.disk import SimulatedDisk
from aurora_storage.runtime.transport import DirectTransport

PAGE = 4096
PAGES = 512  # two PGs of 256 pages
CACHE = 1024 * 1024  # the six nodes together: 42 pages each


@pytest.fixture(autouse=True)
def checkpointing_often(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(segment, "COALESCE_RECORD_BYTES", 4096)
    monkeypatch.setattr(node, "CHECKPOINT_EVERY_FRAMES", 4)
    monkeypatch.setattr(node, "META_EVERY_FRAMES", 4)


def create(disks: dict[str, SimulatedDisk]) -> Volume:
    return Volume.create(
        disks=disks,  # type: ignore[arg-type]
        page_size=PAGE,
        segment_size=PAGE * 256,
        capacity=PAGE * PAGES,
        transport=DirectTransport(sync_threads=0),
        cache_bytes=CACHE,
    )


def reopen(volume: Volume, disks: dict[str, SimulatedDisk]) -> Volume:
    return Volume.open(
        disks=disks,  # type: ignore[arg-type]
        options=volume.options,
        volume_id=volume.volume_id,
        transport=DirectTransport(sync_threads=0),
        cache_bytes=CACHE,
    )


def write_all(volume: Volume, rng: random.Random) -> dict[int, bytes]:
    expected: dict[int, bytes] = {}
    for first in range(0, PAGES, 8):
        with volume.transaction() as tx:
            for page_no in range(first, first + 8):
                data = rng.randbytes(PAGE)
                tx.put_page(page_no, data)
                expected[page_no] = data
    for _ in range(12):  # the last pages' checkpoints wait for later writes
        with volume.transaction() as tx:
            tx.write(0, 0, expected[0][:8])
    return expected


def images_in_memory(volume: Volume, name: str) -> int:
    return sum(s.page_log.stats().image_bytes for s in volume.nodes[name].segments.values())


def test_memory_stays_within_the_cache_and_every_page_reads_back() -> None:
    disks = {name: SimulatedDisk(i) for i, name in enumerate(NODE_NAMES)}
    volume = create(disks)
    expected = write_all(volume, random.Random(1))
    share = CACHE // len(NODE_NAMES)
    for name in NODE_NAMES:
        assert images_in_memory(volume, name) <= share + 16 * PAGE, name
    for page_no in random.Random(2).sample(range(PAGES), PAGES):
        assert volume.read_page(page_no) == expected[page_no], page_no
    for name in NODE_NAMES:
        assert images_in_memory(volume, name) <= share + 16 * PAGE, name
    volume.close()


def test_an_open_reads_no_page_image_and_serves_every_page() -> None:
    disks = {name: SimulatedDisk(i) for i, name in enumerate(NODE_NAMES)}
    volume = create(disks)
    expected = write_all(volume, random.Random(3))
    volume.close()
    again = reopen(volume, disks)
    for name in NODE_NAMES:
        # Only pages of the log after the last checkpoint, folded: a few at most.
        assert images_in_memory(again, name) <= 16 * PAGE, name
    for page_no in range(PAGES):
        assert again.read_page(page_no) == expected[page_no], page_no
    again.close()


def test_a_page_the_store_lost_is_never_served() -> None:
    disks = {name: SimulatedDisk(i) for i, name in enumerate(NODE_NAMES)}
    volume = create(disks)
    expected = write_all(volume, random.Random(4))
    volume.close()
    victim, page_no = NODE_NAMES[0], 77
    data = bytearray(disks[victim].read(image_name(0)))
    for slot in range(SLOTS):  # both slots: whichever holds the version
        offset = (page_no * SLOTS + slot) * PAGE + 100
        if offset < len(data):
            data[offset] ^= 0xFF
    disks[victim].replace(image_name(0), bytes(data))
    again = reopen(volume, disks)
    image, problem, _ = again.nodes[victim].serve_read(0, page_no, again.vdl, 0, again.annulled)
    assert image == b"" and "checksum" in problem
    assert again.nodes[victim].segments[0].failed, "the segment is set aside"
    assert again.nodes[victim].load_report.damaged
    assert again.read_page(page_no) == expected[page_no]  # from another replica
    again.close()


def test_a_cache_too_small_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="cache_bytes"):
        Volume.create(cache_bytes=1000)


def test_a_disk_keeps_a_bounded_number_of_files_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sparse volume touches many protection groups, each with files on every node:
    a disk closes the file it opened longest ago (synced first) to open another."""
    monkeypatch.setattr(disk_module, "HANDLES_MAX", 4)
    volume = Volume.create(
        tmp_path / "volume", page_size=PAGE, segment_size=PAGE * 4, capacity=PAGE * 4 * 64
    )
    rng = random.Random(5)
    expected: dict[int, bytes] = {}
    for _ in range(120):
        with volume.transaction() as tx:
            for page_no in rng.sample(range(4 * 64), 3):  # pages of up to three PGs
                expected[page_no] = rng.randbytes(PAGE)
                tx.put_page(page_no, expected[page_no])
        for storage_node in volume.nodes.values():
            assert storage_node.disk is not None
            assert len(storage_node.disk._handles) <= 4  # type: ignore[attr-defined]
    for page_no, image in expected.items():
        assert volume.read_page(page_no) == image, page_no
    volume.close()
    again = Volume.open(tmp_path / "volume")
    for page_no, image in expected.items():
        assert again.read_page(page_no) == image, page_no
    again.close()


def test_a_read_only_volume_keeps_its_view_while_the_writer_checkpoints(tmp_path: Path) -> None:
    """A page store is rewritten in place by later checkpoints: a read-only volume
    (tools, while the writer runs) must go on reading what was durable when it
    opened, not the slots the writer reuses."""
    writer = Volume.create(
        tmp_path / "volume",
        page_size=PAGE,
        segment_size=PAGE * 256,
        capacity=PAGE * PAGES,
        durability="os",
        cache_bytes=CACHE,
    )
    expected = write_all(writer, random.Random(6))
    looker = Volume.open(tmp_path / "volume", readonly=True, cache_bytes=CACHE)
    rng = random.Random(7)
    for _ in range(3):  # every page rewritten, three times over: slots are reused
        for first in range(0, PAGES, 8):
            with writer.transaction() as tx:
                for page_no in range(first, first + 8):
                    tx.put_page(page_no, rng.randbytes(PAGE))
    for page_no in range(PAGES):
        assert looker.read_page(page_no) == expected[page_no], page_no
    looker.close()
    writer.close()
