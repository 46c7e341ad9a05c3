"""Frames as a segment receives them: each verified once per object, not once per replica.

In one process the writer hands the same immutable frame bytes to all six
replicas of a PG (the direct transport); checking them again at each replica
would repeat a verification whose answer cannot change. This module keeps a
bounded memo (RECEIVED_CACHE_MAX frames, RECEIVED_CACHE_BYTES) of the frames
verified lately, by identity; a frame that fails is never remembered.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from ..format.frames import Frame, decode_frame

# Frames decode_received verified lately, by id: (the bytes object, page size,
# page range, frame). Holding the object keeps its id from being reused.
_received: OrderedDict[int, tuple[bytes, int, int, int, Frame]] = OrderedDict()
RECEIVED_CACHE_MAX = 64  # frames: more than one message to six replicas carries
RECEIVED_CACHE_BYTES = 16 * 1024 * 1024  # held at most, beyond the newest frame
_received_bytes = 0
_received_lock = threading.Lock()


def decode_received(data: bytes, page_size: int, page_lo: int, page_hi: int) -> Frame:
    """:func:`decode_frame` for a frame as a segment receives it.

    In one process the writer hands the same immutable ``bytes`` objects to all
    six replicas of a PG (the direct transport): verifying them again at each
    would repeat, byte for byte, a check whose answer cannot change, where six
    storage nodes would check their own copies in parallel. So the frames
    verified lately are remembered by identity and parameters, and each frame
    is checked once per object. A damaged copy is another object (the
    simulated network garbles copies), and a frame that fails is never
    remembered, so every replica still refuses it. Scrubs and restarts use
    decode_frame.
    """
    known = _received.get(id(data))
    if (
        known is not None
        and known[0] is data
        and known[1] == page_size
        and known[2] == page_lo
        and known[3] == page_hi
    ):
        return known[4]
    frame = decode_frame(data, page_size, page_lo, page_hi)
    if type(data) is bytes:
        global _received_bytes
        with _received_lock:  # volumes in other threads share the cache
            replaced = _received.pop(id(data), None)  # the same object, another PG's range
            if replaced is not None:
                _received_bytes -= len(replaced[0])
            _received[id(data)] = (data, page_size, page_lo, page_hi, frame)
            _received_bytes += len(data)
            while len(_received) > 1 and (
                len(_received) > RECEIVED_CACHE_MAX or _received_bytes > RECEIVED_CACHE_BYTES
            ):
                _received_bytes -= len(_received.popitem(last=False)[1][0])  # the oldest
    return frame
