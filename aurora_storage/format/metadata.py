"""Small metadata records: volume, node and segment metadata files.

Layout (docs/format.md, "Metadata records")::

    0 magic u32 "AUMT" | 4 version u16 | 6 kind u16 | 8 body_length u32
    12 reserved u32 (0) | 16 checksum u64: xxh3-64 of bytes 0..15 and the body
    24 body: a msgpack map

A record is written whole with an atomic replace, so a reader sees the old
record or the new one; a checksum failure means corruption, not a torn write.
"""

from __future__ import annotations

import struct
from typing import Any

import msgpack
import xxhash

from ..errors import CorruptionError, FormatVersionError

HEADER = struct.Struct("<IHHIIQ")
MAGIC = 0x544D5541  # b"AUMT" read as a little-endian u32
VERSION = 1
KIND_VOLUME = 1
KIND_NODE = 2
KIND_SEGMENT = 3
KIND_NAMES = {KIND_VOLUME: "volume", KIND_NODE: "node", KIND_SEGMENT: "segment"}
BODY_MAX = 16 * 1024 * 1024

assert HEADER.size == 24
assert struct.pack("<I", MAGIC) == b"AUMT"


def encode(kind: int, body: dict[str, Any]) -> bytes:
    payload = bytes(msgpack.packb(body, use_bin_type=True))
    header = bytearray(HEADER.pack(MAGIC, VERSION, kind, len(payload), 0, 0))
    checksum = xxhash.xxh3_64(bytes(header[:16]) + payload).intdigest()
    struct.pack_into("<Q", header, 16, checksum)
    return bytes(header) + payload


def decode(data: bytes, kind: int, where: str) -> dict[str, Any]:
    """The body of a metadata record of ``kind``; ``where`` names the file in errors."""
    if len(data) < HEADER.size:
        raise CorruptionError(f"{where}: {len(data)} bytes, shorter than a metadata header")
    magic, version, found_kind, length, reserved, checksum = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise CorruptionError(f"{where}: not an aurora-storage metadata file (magic 0x{magic:08x})")
    if version != VERSION:
        raise FormatVersionError(where, version, VERSION)
    if found_kind != kind or reserved != 0:
        raise CorruptionError(f"{where}: holds a {KIND_NAMES.get(found_kind, found_kind)} record")
    if length > BODY_MAX or len(data) != HEADER.size + length:
        raise CorruptionError(f"{where}: body length {length} does not match the file")
    body = data[HEADER.size :]
    if xxhash.xxh3_64(data[:16] + body).intdigest() != checksum:
        raise CorruptionError(f"{where}: checksum mismatch")
    try:
        decoded = msgpack.unpackb(body, raw=False)
    except (ValueError, msgpack.UnpackException) as error:
        raise CorruptionError(f"{where}: undecodable body ({error})") from None
    if not isinstance(decoded, dict):
        raise CorruptionError(f"{where}: body is not a map")
    return decoded
