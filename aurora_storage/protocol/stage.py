"""Step 6 on a node: building a PG's backup objects from a segment.

For each staging round the writer names one healthy segment per PG; its node
builds the PG's chain frames of the round into a LOG object, or every page of
the PG at a staged LSN into a PAGES object, and holds it (an :class:`Upload`)
for the runtime, which encodes and uploads it outside any lock (backup/staging.py).
Pure: reads segment state, does no I/O.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Any

from ..errors import CorruptionError
from ..format import frames as log
from ..format.objects import KIND_LOG, KIND_PAGES, encode_object, log_name, pages_name
from .segment import Segment


@dataclass
class Upload:
    """An object a node built for the backup store, not yet encoded nor uploaded.

    The node builds it while it holds the transport's lock (it reads segment
    state); the runtime encodes it (one lz4 call, one xxh3 pass) and puts it
    outside any lock (staging.py), so a slow store never holds up commits.
    """

    name: str
    kind: int
    parts: list[bytes | bytearray]  # the payload, concatenated
    meta: dict[str, Any]

    @property
    def size(self) -> int:
        """Bytes of the payload before compression."""
        return sum(len(part) for part in self.parts)

    def encode(self) -> bytes:
        payload = self.parts[0] if len(self.parts) == 1 else b"".join(self.parts)
        return encode_object(self.kind, payload, self.meta)


def build_log_object(segment: Segment, from_lsn: int, upto_lsn: int) -> Upload | None:
    """The LOG object of a segment's chain frames in (from_lsn, upto_lsn], or None if empty.

    Raises CorruptionError if the chain no longer holds the start of the range.
    """
    start = bisect.bisect_right(segment.chain_last_lsns, from_lsn)
    end = bisect.bisect_right(segment.chain_last_lsns, upto_lsn)
    if start == end:
        return None
    if segment.chain_first_lsns[start] <= from_lsn:
        raise CorruptionError(f"PG {segment.pg_id}: a frame straddles staged LSN {from_lsn}")
    first_frame = log.decode_frame(
        segment.chain_frames[start], segment.geometry.page_size, segment.page_lo, segment.page_hi
    )
    if first_frame.backlink > from_lsn:
        raise CorruptionError(f"PG {segment.pg_id}: frames after LSN {from_lsn} were collected")
    cpl_start = bisect.bisect_right(segment.cpl_lsns, from_lsn)
    cpl_end = bisect.bisect_right(segment.cpl_lsns, upto_lsn)
    first_lsn = segment.chain_first_lsns[start]
    last_lsn = segment.chain_last_lsns[end - 1]
    meta = {
        "pg_id": segment.pg_id,
        "first_lsn": first_lsn,
        "last_lsn": last_lsn,
        "backlink": first_frame.backlink,
        "cpls": segment.cpl_lsns[cpl_start:cpl_end],
        "times": segment.cpl_times[cpl_start:cpl_end],
    }
    # Chain frames are immutable bytes: the list keeps them, whatever the chain does next.
    frames: list[bytes | bytearray] = list(segment.chain_frames[start:end])
    return Upload(log_name(segment.pg_id, first_lsn, last_lsn), KIND_LOG, frames, meta)


def build_pages_object(segment: Segment, lsn: int, annulled: tuple[int, ...]) -> Upload:
    """The PAGES object of every page the segment changed at or below ``lsn``."""
    page_nos, _, images = segment.images_at(lsn, annulled)
    meta = {"pg_id": segment.pg_id, "lsn": lsn, "page_nos": page_nos}
    return Upload(pages_name(segment.pg_id, lsn), KIND_PAGES, [images], meta)
