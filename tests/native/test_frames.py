"""Frames: log.encode_frame, log.decode_frame and log.frame_length, good and corrupt.

Covers the round trip, frames at a nonzero position, walking back-to-back
frames, and one test per corruption shape: every cut point and every flipped
bit of a small frame, wrong magic, version and header size, a body length past
the end or over the limit, a wrong checksum, an empty body, records breaking a
rule under a matching checksum, and a header that disagrees with its body.
Frame bodies are validated by ``native.validate``, so these run on both backends.
"""

from __future__ import annotations

import struct

import pytest
from sample_records import PAGE_SIZE, assert_invalid_record, raw_record, write, zero

from aurora_storage import native
from aurora_storage.errors import CorruptFrameError, FormatVersionError, InvalidRecordError
from aurora_storage.format import frames as log

PG_ID = 3
EPOCH = 42
# A frame of PG 3 (pages 300..399): two records chained from backlink 17, 168 bytes in all.
BODY = write(20, 305, 10, b"hello", backlink=17) + zero(21, 399, backlink=20, flags=log.FLAG_CPL)
FRAME = log.encode_frame(PG_ID, EPOCH, 17, 20, 21, 2, BODY)
PAGE_LO, PAGE_HI = 300, 400


def decode(buf: bytes | bytearray | memoryview, position: int = 0) -> log.Frame:
    return log.decode_frame(buf, PAGE_SIZE, PAGE_LO, PAGE_HI, position=position)


def with_header_field(frame: bytes, offset: int, fmt: str, value: int) -> bytes:
    """``frame`` with one header field replaced and the checksum left as it was."""
    changed = bytearray(frame)
    struct.pack_into(fmt, changed, offset, value)
    return bytes(changed)


def resealed(frame: bytes) -> bytes:
    """``frame`` with its checksum recomputed, so only the other rules can reject it."""
    header = bytearray(frame[: log.FRAME_HEADER_SIZE])
    body = frame[log.FRAME_HEADER_SIZE :]
    struct.pack_into("<Q", header, log.FRAME_CHECKED_PREFIX, log.frame_checksum(header, body))
    return bytes(header) + body


def test_encoded_frame_header_fields(backend: native.Backend) -> None:
    assert len(FRAME) == 64 + len(BODY) == 168
    assert FRAME[:4] == b"AUFR"
    assert log.FRAME_HEADER.unpack_from(FRAME)[:10] == (
        log.FRAME_MAGIC,
        log.FRAME_VERSION,
        64,
        PG_ID,
        EPOCH,
        17,
        20,
        21,
        2,
        len(BODY),
    )
    assert FRAME[64:] == BODY


def test_frame_round_trip(backend: native.Backend) -> None:
    frame = decode(FRAME)
    assert (frame.pg_id, frame.epoch, frame.backlink) == (PG_ID, EPOCH, 17)
    assert (frame.first_lsn, frame.last_lsn, frame.record_count) == (20, 21, 2)
    assert bytes(frame.body) == BODY
    assert frame.size == len(FRAME)
    assert frame.summary == native.BatchSummary(2, 20, 21, 1, 21, 5)


def test_frame_checksum_covers_the_header_prefix_and_the_body() -> None:
    (checksum,) = struct.unpack_from("<Q", FRAME, 56)
    assert checksum == log.frame_checksum(FRAME[:56], BODY)
    assert checksum == log.frame_checksum(FRAME[:56] + b"\xff" * 8, BODY)


@pytest.mark.parametrize("container", [bytes, bytearray, memoryview])
def test_decode_frame_at_a_nonzero_position(backend: native.Backend, container: type) -> None:
    buffer = container(b"\x99" * 13 + FRAME + b"\x77" * 5)
    frame = decode(buffer, position=13)
    assert bytes(frame.body) == BODY
    assert frame.record_count == 2


def test_frame_length_walks_back_to_back_frames(backend: native.Backend) -> None:
    second_body = page_body = write(22, 300, 0, b"x" * 100, backlink=21)
    second = log.encode_frame(PG_ID, EPOCH, 21, 22, 22, 1, page_body)
    log_bytes = FRAME + second
    position, decoded = 0, []
    while position < len(log_bytes):
        length = log.frame_length(log_bytes, position)
        decoded.append(decode(log_bytes, position))
        position += length
    assert position == len(log_bytes)
    assert [bytes(frame.body) for frame in decoded] == [BODY, second_body]
    assert log.frame_length(FRAME) == len(FRAME)


def test_frame_cut_at_every_byte(backend: native.Backend) -> None:
    """Any strict prefix of a frame is CorruptFrameError at the frame's position."""
    for position in (0, 9):
        buffer = b"\x00" * position + FRAME
        for cut in range(position, len(buffer)):
            with pytest.raises(CorruptFrameError) as raised:
                decode(buffer[:cut], position)
            assert raised.value.position == position, f"cut at {cut}"
        assert bytes(decode(buffer, position).body) == BODY


def test_frame_length_of_a_cut_header(backend: native.Backend) -> None:
    for cut in range(64):
        with pytest.raises(CorruptFrameError) as raised:
            log.frame_length(FRAME[:cut])
        assert raised.value.position == 0
    assert log.frame_length(FRAME[:64]) == len(FRAME)


def test_every_flipped_bit_of_a_frame_is_caught(backend: native.Backend) -> None:
    """A flipped version bit is FormatVersionError; any other flip is CorruptFrameError."""
    for bit in range(8 * len(FRAME)):
        flipped = bytearray(FRAME)
        flipped[bit // 8] ^= 1 << (bit % 8)
        expected = FormatVersionError if bit // 8 in (4, 5) else CorruptFrameError
        with pytest.raises((CorruptFrameError, FormatVersionError, InvalidRecordError)) as raised:
            decode(flipped)
        assert type(raised.value) is expected, f"bit {bit}: {raised.value!r}"


def test_wrong_magic(backend: native.Backend) -> None:
    frame = b"AUFX" + FRAME[4:]
    with pytest.raises(CorruptFrameError, match="bad magic") as raised:
        decode(b"\x00" * 8 + frame, position=8)
    assert raised.value.position == 8
    with pytest.raises(CorruptFrameError, match="bad magic"):
        log.frame_length(frame)


@pytest.mark.parametrize("version", [0, 2, 0xFFFF])
def test_wrong_version(backend: native.Backend, version: int) -> None:
    frame = with_header_field(FRAME, 4, "<H", version)
    for call in (lambda: decode(resealed(frame)), lambda: log.frame_length(frame)):
        with pytest.raises(FormatVersionError) as raised:
            call()
        assert (raised.value.found, raised.value.expected) == (version, log.FRAME_VERSION)


@pytest.mark.parametrize("header_size", [0, 56, 63, 65, 128])
def test_wrong_header_size(backend: native.Backend, header_size: int) -> None:
    frame = resealed(with_header_field(FRAME, 6, "<H", header_size))
    with pytest.raises(CorruptFrameError, match="header size"):
        decode(frame)


@pytest.mark.parametrize("extra", [1, 8, 1000])
def test_body_length_past_the_end(backend: native.Backend, extra: int) -> None:
    frame = resealed(with_header_field(FRAME, 52, "<I", len(BODY) + extra))
    with pytest.raises(CorruptFrameError, match="truncated") as raised:
        decode(b"\x00" * 3 + frame, position=3)
    assert raised.value.position == 3


@pytest.mark.parametrize("body_length", [log.FRAME_BODY_MAX + 1, 0xFFFF_FFFF])
def test_body_length_over_the_limit(backend: native.Backend, body_length: int) -> None:
    frame = resealed(with_header_field(FRAME, 52, "<I", body_length))
    for call in (lambda: decode(frame), lambda: log.frame_length(frame)):
        with pytest.raises(CorruptFrameError, match="over"):
            call()


def test_body_length_shorter_than_the_body_breaks_the_checksum(backend: native.Backend) -> None:
    frame = with_header_field(FRAME, 52, "<I", 56)
    with pytest.raises(CorruptFrameError, match="checksum"):
        decode(frame)


def test_wrong_checksum(backend: native.Backend) -> None:
    (checksum,) = struct.unpack_from("<Q", FRAME, 56)
    frame = with_header_field(FRAME, 56, "<Q", checksum ^ 1)
    with pytest.raises(CorruptFrameError, match="checksum mismatch") as raised:
        decode(b"\x00" * 64 + frame, position=64)
    assert raised.value.position == 64


def test_encode_frame_refuses_a_body_over_the_limit() -> None:
    with pytest.raises(InvalidRecordError):
        log.encode_frame(PG_ID, EPOCH, 0, 1, 1, 1, bytes(log.FRAME_BODY_MAX + 1))


def test_empty_frame(backend: native.Backend) -> None:
    """An empty body passes the checksum and fails as an empty batch, right after the header."""
    frame = log.encode_frame(PG_ID, EPOCH, 0, 0, 0, 0, b"")
    assert len(frame) == log.frame_length(frame) == 64
    with pytest.raises(InvalidRecordError) as raised:
        decode(b"\x00" * 8 + frame, position=8)
    assert_invalid_record(raised.value, native.STATUS_EMPTY, 8 + 64)


@pytest.mark.parametrize(
    ("body", "status", "record_position"),
    [
        (BODY[:56] + raw_record(lsn=20, page_no=305, backlink=20), native.STATUS_LSN_ORDER, 56),
        (BODY[:56] + raw_record(lsn=21, page_no=305, kind=7), native.STATUS_KIND, 56),
        (BODY + b"\x00" * 8, native.STATUS_TRUNCATED, 104),
        (BODY[:56] + zero(21, 400, backlink=20), native.STATUS_PAGE, 56),
        (zero(20, 299, backlink=17), native.STATUS_PAGE, 0),
        (zero(20, 300, backlink=16), native.STATUS_BACKLINK, 0),
        (BODY[:56] + zero(21, 300, backlink=19), native.STATUS_BACKLINK, 56),
    ],
    ids=["lsn-order", "kind", "truncated", "page-hi", "page-lo", "first-backlink", "chain"],
)
def test_bad_record_under_a_matching_checksum(
    backend: native.Backend, body: bytes, status: int, record_position: int
) -> None:
    """Positions are within the whole buffer: frame position + header + record position."""
    frame = log.encode_frame(PG_ID, EPOCH, 17, 20, 21, 2, body)
    with pytest.raises(InvalidRecordError) as raised:
        decode(b"\x00" * 24 + frame, position=24)
    assert_invalid_record(raised.value, status, 24 + 64 + record_position)


@pytest.mark.parametrize(
    ("first_lsn", "last_lsn", "record_count"),
    [(19, 21, 2), (20, 22, 2), (20, 21, 1), (20, 21, 3), (0, 0, 0)],
)
def test_header_summary_that_disagrees_with_the_body(
    backend: native.Backend, first_lsn: int, last_lsn: int, record_count: int
) -> None:
    frame = log.encode_frame(PG_ID, EPOCH, 17, first_lsn, last_lsn, record_count, BODY)
    with pytest.raises(CorruptFrameError, match="header says") as raised:
        decode(b"\x00" * 5 + frame, position=5)
    assert raised.value.position == 5
