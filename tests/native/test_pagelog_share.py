"""Shared page images in the page log (csrc/pagelog.c and its Python reference).

A restore installs the same images into six page logs without copying them
(``share_images``); each log reads them in place and copies an image before
it changes one (coalescing). The tests check, on both implementations: the
installed pages read as the block's images; a change in one log is seen by
neither the block nor another log sharing it; the block is held exactly while
an image borrows it; bad arguments change nothing; batch materialization
equals page-by-page materialization; and, as a property, random layers,
records, coalescing and read points agree with a model and between the two
implementations. The tests run under AddressSanitizer too (run_asan.sh):
blocks are Python memory, so a read after Python freed one would be caught.
"""

from __future__ import annotations

import gc
import mmap
import weakref
from array import array

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sample_records import PAGE_SIZE, batch_of, disjoint_ranges, record_of, replay

from aurora_storage.errors import InvalidArgumentError, VersionGoneError
from aurora_storage.format import frames as log
from aurora_storage.native.pagelog import NativePageLog, PageLog, PythonPageLog

IMPLEMENTATIONS = [NativePageLog, PythonPageLog]


@pytest.fixture(params=IMPLEMENTATIONS, ids=["native", "python"])
def implementation(request: pytest.FixtureRequest) -> type[NativePageLog | PythonPageLog]:
    return request.param  # type: ignore[no-any-return]


def image(fill: int) -> bytes:
    return bytes([fill]) * PAGE_SIZE


def block_of(data: bytes) -> array[int]:
    """A buffer a weak reference can follow (bytes cannot), to see when it is freed."""
    return array("B", data)


def test_shared_pages_read_as_the_block(implementation: type[PageLog]) -> None:
    block = image(1) + image(2) + image(3)
    page_log = implementation(PAGE_SIZE)
    assert page_log.share_images([4, 7, 9], block, 10) == 3
    assert page_log.materialize(7) == (image(2), 10)
    assert page_log.materialize(5) == (bytes(PAGE_SIZE), 0)
    with pytest.raises(VersionGoneError):
        page_log.materialize(9, 9)
    stats = page_log.stats()
    assert (stats.pages, stats.images, stats.shared_images) == (3, 3, 3)
    assert stats.shared_image_bytes == stats.image_bytes == 3 * PAGE_SIZE
    assert stats.owned_bytes == 0
    # Records at or below the image are duplicates, later ones apply on top.
    batch = batch_of([(10, 7, log.KIND_WRITE, 0, b"old"), (11, 7, log.KIND_WRITE, 0, b"new")])
    assert page_log.append(batch) == 1
    assert page_log.materialize(7)[0][:4] == b"new\x02"
    assert page_log.materialize(7, 10)[0] == image(2)


def test_coalescing_copies_and_leaves_block_and_peers_alone(
    implementation: type[PageLog],
) -> None:
    block = bytearray(image(1) + image(2))
    view = memoryview(block).toreadonly()
    writer, peer = implementation(PAGE_SIZE), implementation(PAGE_SIZE)
    for page_log in (writer, peer):
        page_log.share_images([0, 1], view, 5)
    writer.append(batch_of([(6, 1, log.KIND_WRITE, 100, b"changed")]))
    assert writer.coalesce(6) == 1
    assert writer.materialize(1)[0][100:107] == b"changed"
    assert peer.materialize(1) == (image(2), 5), "another replica sees its own image"
    assert bytes(block) == image(1) + image(2), "the shared block never changes"
    stats = writer.stats()
    assert (stats.images, stats.shared_images, stats.owned_bytes) == (2, 1, PAGE_SIZE)
    assert len(writer.shared_blocks()) == 1, "page 0 still borrows the block"
    # Once no image borrows it, the log lets go of the block.
    writer.append(batch_of([(7, 0, log.KIND_ZERO, 0, b"")]))
    writer.coalesce(7)
    assert writer.shared_blocks() == []
    assert writer.stats().shared_images == 0
    assert writer.materialize(0) == (bytes(PAGE_SIZE), 7)
    assert peer.materialize(0) == (image(1), 5)


def test_block_lives_while_borrowed(implementation: type[PageLog]) -> None:
    block = block_of(image(7) * 2)
    gone = weakref.ref(block)
    page_log = implementation(PAGE_SIZE)
    page_log.share_images([3, 4], memoryview(block).toreadonly(), 2)
    del block
    gc.collect()
    assert gone() is not None, "a log whose images borrow a block keeps it"
    assert page_log.materialize(4) == (image(7), 2)
    page_log.append(batch_of([(3, 3, log.KIND_ZERO, 0, b""), (4, 4, log.KIND_ZERO, 0, b"")]))
    page_log.coalesce(4)
    gc.collect()
    assert gone() is None, "no image borrows the block any more"
    assert page_log.materialize(3) == (bytes(PAGE_SIZE), 3)


def test_freeing_the_log_releases_the_block(implementation: type[PageLog]) -> None:
    block = block_of(image(9))
    gone = weakref.ref(block)
    page_log = implementation(PAGE_SIZE)
    page_log.share_images([0], memoryview(block).toreadonly(), 1)
    del block, page_log
    gc.collect()
    assert gone() is None
    closed = implementation(PAGE_SIZE)
    block = block_of(image(9))
    gone = weakref.ref(block)
    closed.share_images([0], memoryview(block).toreadonly(), 1)
    del block
    closed.close()
    gc.collect()
    assert gone() is None


def test_fill_takes_only_pages_holding_nothing(implementation: type[PageLog]) -> None:
    page_log = implementation(PAGE_SIZE)
    page_log.append(batch_of([(1, 2, log.KIND_WRITE, 0, b"record")]))
    assert page_log.share_images([5], image(5), 3) == 1
    assert page_log.share_images([1, 2, 5, 6], image(1) * 4, 3, fill=True) == 2
    assert page_log.materialize(1)[0] == image(1)
    assert page_log.materialize(2)[0][:7] == b"record\x00"
    assert page_log.materialize(5)[0] == image(5), "the earlier image wins"
    assert page_log.materialize(6)[0] == image(1)
    # A call that installs nothing keeps no block.
    assert page_log.share_images([1, 2], image(3) * 2, 3, fill=True) == 0
    assert len(page_log.shared_blocks()) == 2


@pytest.mark.parametrize(
    ("page_nos", "block", "why"),
    [
        ([3, 2], image(0) * 2, "descending"),
        ([2, 2], image(0) * 2, "repeated"),
        ([1, 2], image(0), "block too short"),
        ([4], image(0), "page holds an image"),
        ([6], image(0), "page holds records"),
        ([-1], image(0), "negative page"),
        ([1], bytearray(image(0)), "writable block"),
    ],
)
def test_bad_shares_change_nothing(
    implementation: type[PageLog], page_nos: list[int], block: bytes, why: str
) -> None:
    page_log = implementation(PAGE_SIZE)
    page_log.share_images([4], image(4), 1)
    page_log.append(batch_of([(2, 6, log.KIND_WRITE, 0, b"r")]))
    before = page_log.stats()
    with pytest.raises(InvalidArgumentError):
        page_log.share_images(page_nos, block, 3)
    assert page_log.stats() == before, why
    assert page_log.page_nos() == [4, 6]
    assert len(page_log.shared_blocks()) == 1


def test_materialize_many_equals_one_by_one(implementation: type[PageLog]) -> None:
    page_log = implementation(PAGE_SIZE)
    page_log.share_images([1, 3], image(1) + image(3), 4)
    page_log.append(
        batch_of(
            [
                (5, 3, log.KIND_WRITE, 8, b"abc"),
                (6, 2, log.KIND_PAGE, 0, image(6)),
                (7, 2, log.KIND_WRITE, 0, b"over"),
                (8, 3, log.KIND_PAGE, 0, image(8)),
                (9, 3, log.KIND_WRITE, 1, b"z"),
            ]
        )
    )
    page_nos = [3, 0, 2, 1, 3]
    for bound in (4, 5, 6, 7, 8, 9):
        for annulled in ([], [(7, 8)], [(4, 6)], [(5, 6), (8, 9)]):
            images, page_lsns = page_log.materialize_many(page_nos, bound, annulled)
            expected = [page_log.materialize(page_no, bound, annulled) for page_no in page_nos]
            assert bytes(images) == b"".join(one for one, _ in expected)
            assert list(page_lsns) == [page_lsn for _, page_lsn in expected]
    out = mmap.mmap(-1, len(page_nos) * PAGE_SIZE)
    images, _ = page_log.materialize_many(page_nos, out=out)
    assert images is out
    assert page_log.page_nos(with_records=True) == [2, 3]
    with pytest.raises(VersionGoneError) as gone:
        page_log.materialize_many([0, 1], 3)
    assert gone.value.page_no == 1
    with pytest.raises(InvalidArgumentError):
        page_log.materialize_many([1], 9, [(5, 4)])
    with pytest.raises(InvalidArgumentError):
        page_log.materialize_many([1, 2], out=bytearray(PAGE_SIZE))


layer_strategy = st.lists(st.tuples(st.integers(0, 7), st.integers(1, 250)), max_size=6)
record_strategy = st.tuples(
    st.integers(0, 7),  # page
    st.sampled_from([log.KIND_WRITE, log.KIND_WRITE, log.KIND_PAGE, log.KIND_ZERO]),
    st.integers(0, PAGE_SIZE - 1),  # offset
    st.integers(1, 48),  # length
)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    layers=st.lists(layer_strategy, min_size=1, max_size=3),
    batches=st.lists(st.lists(record_strategy, min_size=1, max_size=6), max_size=4),
    coalesce_fraction=st.floats(0, 1),
    read_fraction=st.floats(0, 1),
    annul=st.lists(st.tuples(st.integers(0, 30), st.integers(1, 6)), max_size=2),
)
def test_shared_logs_agree_with_model(
    layers: list[list[tuple[int, int]]],
    batches: list[list[tuple[int, int, int, int]]],
    coalesce_fraction: float,
    read_fraction: float,
    annul: list[tuple[int, int]],
) -> None:
    base = 10
    # Layers share read-only views of writable buffers, so a write into one would
    # show; the earlier layer wins a page (fill).
    blocks: list[tuple[list[int], bytearray]] = []
    model: dict[int, bytes] = {}
    for layer in layers:
        pages = dict(layer)
        page_nos = sorted(pages)
        blocks.append((page_nos, bytearray(b"".join(image(pages[n]) for n in page_nos))))
        for page_no in page_nos:
            model.setdefault(page_no, image(pages[page_no]))
    originals = [bytes(block) for _, block in blocks]
    lsn = base
    packed, records = [], []
    for batch in batches:
        built = []
        for page_no, kind, offset, length in batch:
            lsn += 1
            built.append(record_of(lsn, page_no, kind, offset, length))
        records += built
        packed.append(batch_of(built))
    annulled = disjoint_ranges(annul, base)
    coalesce_at = base + int((lsn - base) * coalesce_fraction)
    read_at = coalesce_at + int((lsn - coalesce_at) * read_fraction)

    def expected(page_no: int, bound: int) -> bytes:
        return replay(records, page_no, bound, annulled, model.get(page_no))

    results = []
    for implementation in IMPLEMENTATIONS:
        page_log, peer = implementation(PAGE_SIZE), implementation(PAGE_SIZE)
        for shared in (page_log, peer):
            for page_nos, block in blocks:
                shared.share_images(page_nos, memoryview(block).toreadonly(), base, fill=True)
        for batch in packed:
            page_log.append(batch)
        page_log.coalesce(coalesce_at, annulled)
        images, page_lsns = page_log.materialize_many(range(8), read_at, annulled)
        peer_images, _ = peer.materialize_many(range(8), base)
        stats = page_log.stats()
        counts = (stats.pages, stats.records, stats.images, stats.shared_images)
        results.append((bytes(images), list(page_lsns), counts, page_log.page_nos()))
        for page_no in range(8):
            page = bytes(images[page_no * PAGE_SIZE : (page_no + 1) * PAGE_SIZE])
            assert page == expected(page_no, read_at), page_no
            peer_page = bytes(peer_images[page_no * PAGE_SIZE : (page_no + 1) * PAGE_SIZE])
            assert peer_page == model.get(page_no, bytes(PAGE_SIZE)), "the peer is untouched"
        private = stats.images - stats.shared_images
        assert stats.owned_bytes == stats.record_bytes + private * PAGE_SIZE
        assert len(page_log.shared_blocks()) <= len(blocks)
        page_log.close()
        peer.close()
    assert results[0] == results[1]
    assert [bytes(block) for _, block in blocks] == originals, "blocks never change"


def test_shared_page_numbers_are_checked_as_integers(implementation: type[PageLog]) -> None:
    page_log = implementation(PAGE_SIZE)
    with pytest.raises(InvalidArgumentError):
        page_log.share_images(["x"], image(0), 1)  # type: ignore[list-item]
    assert page_log.share_images(array("Q", [2**64 - 1]), image(3), 1) == 1
