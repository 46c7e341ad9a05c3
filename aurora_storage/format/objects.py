"""Backup objects: their byte layout, their codec and their names.

A backup object is one whole byte string in a backup store (backup/store.py)
or a node's checkpoint (protocol/node.py). Layout (docs/format.md, "Backup
objects")::

    0 magic u32 "AUBK" | 4 version u16 | 6 kind u16 | 8 meta_length u32
    12 compressed_length u32 | 16 raw_length u32 | 20 reserved u32 (0)
    24 checksum u64: xxh3-64 of bytes 0..23, then the meta and compressed bytes
    32 meta: a msgpack map | 32 + meta_length: the payload as one LZ4 block

Names in a store (all numbers zero-padded so names sort by LSN)::

    log/pg-<pg>/<first_lsn>-<last_lsn>   frames of one PG, chained
    pages/pg-<pg>/<lsn>                  page images of one PG at lsn
    rounds/<vdl>-<milliseconds>          one staging round
    volume/history                       geometry, versions, truncations

Invariant: a decoded object passed every check of the validity rule, and any
failure names the object in a :class:`BackupCorruptError`. Pure: no I/O.
"""

from __future__ import annotations

import struct
from typing import Any, NamedTuple

import lz4.block
import msgpack
import xxhash

from ..errors import BackupCorruptError, FormatVersionError, InvalidArgumentError

HISTORY_NAME = "volume/history"


def log_name(pg_id: int, first_lsn: int, last_lsn: int) -> str:
    return f"log/pg-{pg_id:08d}/{first_lsn:020d}-{last_lsn:020d}"


def pages_name(pg_id: int, lsn: int) -> str:
    return f"pages/pg-{pg_id:08d}/{lsn:020d}"


def round_name(vdl: int, time: float) -> str:
    return f"rounds/{vdl:020d}-{max(0, round(time * 1000)):015d}"


def parse_log_name(name: str) -> tuple[int, int, int]:
    """(PG, first LSN, last LSN) of a LOG object's name."""
    pg_part, range_part = name.split("/")[1:]
    first, last = range_part.split("-")
    return int(pg_part[3:]), int(first), int(last)


def parse_pages_name(name: str) -> tuple[int, int]:
    """(PG, LSN) of a PAGES object's name."""
    pg_part, lsn_part = name.split("/")[1:]
    return int(pg_part[3:]), int(lsn_part)


def parse_round_name(name: str) -> tuple[int, float]:
    """(VDL, time rounded to the millisecond) of a round's name."""
    vdl, milliseconds = name.split("/")[1].split("-")
    return int(vdl), int(milliseconds) / 1000


HEADER = struct.Struct("<IHHIIIIQ")
MAGIC = 0x4B425541  # b"AUBK" read as a little-endian u32
VERSION = 1
CHECKED_PREFIX = 24  # header bytes covered by the checksum (all but itself)

KIND_LOG = 1  # frames of one PG, concatenated as in node logs
KIND_PAGES = 2  # page images of one PG
KIND_MANIFEST = 3  # meta only; the payload is empty
KIND_HISTORY = 4  # the volume's time index and truncation history
KIND_NAMES = {
    KIND_LOG: "LOG",
    KIND_PAGES: "PAGES",
    KIND_MANIFEST: "MANIFEST",
    KIND_HISTORY: "HISTORY",
}

META_MAX_BYTES = 16 * 1024 * 1024
PAYLOAD_MAX_BYTES = 1024 * 1024 * 1024  # half of what one LZ4 block may hold
LZ4_RATIO_MAX = 255  # an LZ4 block never expands more than this: a longer raw_length is a lie

assert HEADER.size == 32
assert struct.pack("<I", MAGIC) == b"AUBK"


def lz4_bound(raw_length: int) -> int:
    """Largest LZ4 block for ``raw_length`` input bytes (LZ4_COMPRESSBOUND)."""
    return raw_length + raw_length // 255 + 16


def _unpack_meta(meta_bytes: bytes | memoryview) -> dict[str, Any]:
    """The meta map; ValueError when the bytes are not one msgpack map with str keys."""
    try:
        meta = msgpack.unpackb(meta_bytes, raw=False, strict_map_key=False)
    except (ValueError, TypeError, msgpack.UnpackException) as error:
        raise ValueError(f"meta is not msgpack ({error})") from None
    if not isinstance(meta, dict):
        raise ValueError(f"meta is a msgpack {type(meta).__name__}, not a map")
    if not all(isinstance(key, str) for key in meta):
        raise ValueError("meta has a key that is not a str")
    return meta


def encode_object(
    kind: int, payload: bytes | bytearray | memoryview, meta: dict[str, Any]
) -> bytes:
    """A backup object of ``kind`` holding ``payload`` (LZ4-compressed) and ``meta`` (msgpack).

    ``meta`` is a map with str keys whose values msgpack packs (None, bool,
    int, float, str, bytes, lists and maps of these); tuples come back as lists.
    Raises InvalidArgumentError for an unknown kind, a payload on a MANIFEST,
    or a payload or meta over its limit or not packable.
    """
    if kind not in KIND_NAMES:
        raise InvalidArgumentError(
            f"backup object kind {kind!r} is not one of {sorted(KIND_NAMES)}"
        )
    view = memoryview(payload).cast("B")
    raw_length = view.nbytes
    if raw_length > PAYLOAD_MAX_BYTES:
        raise InvalidArgumentError(
            f"backup payload of {raw_length} bytes is over the limit of {PAYLOAD_MAX_BYTES}"
        )
    if kind == KIND_MANIFEST and raw_length:
        raise InvalidArgumentError("a MANIFEST backup object holds meta only: its payload is empty")
    if not isinstance(meta, dict) or not all(isinstance(key, str) for key in meta):
        raise InvalidArgumentError("backup object meta must be a dict with str keys")
    try:
        meta_bytes = bytes(msgpack.packb(meta, use_bin_type=True))
    except (TypeError, ValueError, OverflowError) as error:
        raise InvalidArgumentError(f"backup object meta cannot be packed: {error}") from None
    if len(meta_bytes) > META_MAX_BYTES:
        raise InvalidArgumentError(
            f"backup object meta of {len(meta_bytes)} bytes is over the limit of {META_MAX_BYTES}"
        )
    try:  # check before writing: what encode makes, decode must take
        _unpack_meta(meta_bytes)
    except ValueError as error:
        raise InvalidArgumentError(f"backup object meta does not read back: {error}") from None
    compressed = lz4.block.compress(view, store_size=False) if raw_length else b""
    header = bytearray(
        HEADER.pack(MAGIC, VERSION, kind, len(meta_bytes), len(compressed), raw_length, 0, 0)
    )
    hasher = xxhash.xxh3_64(bytes(header[:CHECKED_PREFIX]))
    hasher.update(meta_bytes)
    hasher.update(compressed)
    struct.pack_into("<Q", header, CHECKED_PREFIX, hasher.intdigest())
    return b"".join((header, meta_bytes, compressed))


def decode_object(
    data: bytes | bytearray | memoryview, name: str, expected_kind: int | None = None
) -> tuple[dict[str, Any], bytes]:
    """(meta, payload) of the backup object ``data`` read from object ``name``.

    Checks run in the order of docs/format.md ("Validity rule of a backup
    object"); the first failure raises BackupCorruptError naming ``name``, or
    FormatVersionError for an intact object of a newer format version.
    """
    if expected_kind is not None and expected_kind not in KIND_NAMES:
        raise InvalidArgumentError(f"backup object kind {expected_kind!r} is not known")
    view = memoryview(data).cast("B")
    header = _intact_header(view, name)
    _check_version_and_kind(header, name, expected_kind)
    _check_lengths(header, name)
    meta_end = HEADER.size + header.meta_length
    meta = _decode_meta(view[HEADER.size : meta_end], name)
    if not header.raw_length:
        return meta, b""
    return meta, _decompress_payload(view[meta_end:], name, header.raw_length)


class _Header(NamedTuple):
    """The fields of a backup object's header, in their order (HEADER)."""

    magic: int
    version: int
    kind: int
    meta_length: int
    compressed_length: int
    raw_length: int
    reserved: int
    checksum: int


def _intact_header(view: memoryview, name: str) -> _Header:
    """The header of ``view``, once the object is long enough, has the magic, is as
    long as its header says and matches its checksum; BackupCorruptError if not."""
    size = view.nbytes
    if size < HEADER.size:
        raise BackupCorruptError(name, f"{size} bytes, shorter than the {HEADER.size}-byte header")
    header = _Header._make(HEADER.unpack_from(view))
    if header.magic != MAGIC:
        raise BackupCorruptError(name, f"bad magic 0x{header.magic:08x}: not a backup object")
    if HEADER.size + header.meta_length + header.compressed_length != size:
        raise BackupCorruptError(
            name,
            f"header says {HEADER.size} + {header.meta_length} + {header.compressed_length} "
            f"bytes, the object has {size}",
        )
    hasher = xxhash.xxh3_64(view[:CHECKED_PREFIX])
    hasher.update(view[HEADER.size :])
    if hasher.intdigest() != header.checksum:
        raise BackupCorruptError(name, "checksum mismatch")
    return header


def _check_version_and_kind(header: _Header, name: str, expected_kind: int | None) -> None:
    """Raise FormatVersionError for a newer version, BackupCorruptError for a version
    never written, a reserved field not zero, or a kind unknown or not ``expected_kind``."""
    if header.version > VERSION:
        raise FormatVersionError(f"backup object {name!r}", header.version, VERSION)
    if header.version != VERSION:
        raise BackupCorruptError(name, f"format version {header.version} was never written")
    if header.reserved != 0:
        raise BackupCorruptError(name, f"reserved field is 0x{header.reserved:08x}, not zero")
    if header.kind not in KIND_NAMES:
        raise BackupCorruptError(name, f"unknown kind {header.kind}")
    if expected_kind is not None and header.kind != expected_kind:
        raise BackupCorruptError(
            name,
            f"holds a {KIND_NAMES[header.kind]} object, expected {KIND_NAMES[expected_kind]}",
        )


def _check_lengths(header: _Header, name: str) -> None:
    """Raise BackupCorruptError for a meta or payload over its limit, a compressed
    length that cannot hold the raw length, or a MANIFEST with a payload."""
    meta_length, compressed_length, raw_length = (
        header.meta_length,
        header.compressed_length,
        header.raw_length,
    )
    if meta_length > META_MAX_BYTES:
        raise BackupCorruptError(name, f"meta length {meta_length} over {META_MAX_BYTES}")
    if raw_length > PAYLOAD_MAX_BYTES:
        raise BackupCorruptError(name, f"raw length {raw_length} over {PAYLOAD_MAX_BYTES}")
    if (raw_length == 0) != (compressed_length == 0):
        raise BackupCorruptError(
            name, f"raw length {raw_length} with compressed length {compressed_length}"
        )
    if compressed_length > lz4_bound(raw_length) or raw_length > LZ4_RATIO_MAX * compressed_length:
        raise BackupCorruptError(
            name, f"compressed length {compressed_length} cannot hold raw length {raw_length}"
        )
    if header.kind == KIND_MANIFEST and raw_length:
        raise BackupCorruptError(name, f"a MANIFEST with a payload of {raw_length} bytes")


def _decode_meta(meta_bytes: memoryview, name: str) -> dict[str, Any]:
    """The object's meta map; BackupCorruptError when it is not one (:func:`_unpack_meta`)."""
    try:
        return _unpack_meta(meta_bytes)
    except ValueError as error:
        raise BackupCorruptError(name, str(error)) from None


def _decompress_payload(compressed: memoryview, name: str, raw_length: int) -> bytes:
    """The payload, decompressed from its LZ4 block; BackupCorruptError unless it
    decompresses to exactly ``raw_length`` bytes."""
    try:
        payload = lz4.block.decompress(compressed, uncompressed_size=raw_length)
    except lz4.block.LZ4BlockError as error:
        raise BackupCorruptError(name, f"payload does not decompress ({error})") from None
    if len(payload) != raw_length:
        raise BackupCorruptError(
            name, f"payload decompresses to {len(payload)} bytes, header says {raw_length}"
        )
    return bytes(payload)
