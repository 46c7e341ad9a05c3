"""Fixtures shared by the test folders."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from aurora_storage.protocol import node, segment


@pytest.fixture(scope="module")
def trimming_often() -> Iterator[None]:
    """Segments coalesce and nodes checkpoint (trim their logs) after a few frames: a
    segment that falls behind finds the frames it lacks collected by its peers."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(segment, "COALESCE_RECORD_BYTES", 256)
        patch.setattr(node, "CHECKPOINT_EVERY_FRAMES", 4)
        patch.setattr(node, "META_EVERY_FRAMES", 4)
        yield
