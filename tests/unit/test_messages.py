"""Wire encoding of protocol messages (docs/format.md, "Messages")."""

from __future__ import annotations

import pytest

from aurora_storage.errors import CorruptionError
from aurora_storage.protocol import messages as m

EXAMPLES: list[m.Message] = [
    m.WriteFrames(3, 7, (b"frame-a", b"frame-b"), 10, 9),
    m.SegmentState("az1-a", 7, 3, 42),
    m.ReadPage(1, 7, 700, 40, 38, (10, 12, 20, 30)),
    m.PageImage(1, "az2-b", 700, 42, b"\x00" * 16, ""),
    m.GossipPull("az3-a", 7, 12),
    m.GossipPush("az3-b", 7, 42, (b"frame",)),
    m.GossipPush("az3-b", 7, 42, (), 40),  # "collected up to 40": no frames
    m.CatalogPull("az1-b"),
    m.Catalog("az1-b", (0, 5, 7, 42)),
    m.Rejected("az1-a", 4, "stale"),
    m.Tick(),
    m.Maintain(4, (7, 40, 38, 9, 40, 12), 2),
    m.FloorPull("az2-a", (7, 9)),
    m.RecoveryState(
        "az2-a", 5, 30, 1, (2, 0, 40), (7, 42, 1), (7, 31, 42, 40), b"\x90", ("PG 7: why",)
    ),
]


@pytest.mark.parametrize("message", EXAMPLES, ids=lambda message: type(message).__name__)
def test_round_trip(message: m.Message) -> None:
    assert m.decode(m.encode(message)) == message


@pytest.mark.parametrize("data", [b"", b"\xc1", m.encode(m.Tick())[:-1] + b"\x63", b"\x92\x63\x00"])
def test_garbage_is_a_corruption_error(data: bytes) -> None:
    with pytest.raises(CorruptionError):
        m.decode(data)
