"""A segment's page store: its pages at its checkpoints, on disk, rewritten where they changed.

Two files per segment, through the node's :class:`Disk` port (docs/format.md,
"Page store")::

    pg-<id>.img   two slots per page: slot s of page p at ((p - page_lo) * 2 + s) * page_size
    pg-<id>.idx   two 64-byte headers, then 64 bytes per page at 128 + (p - page_lo) * 64:
                  per slot, the checkpoint LSN it was written for, the page's own LSN
                  and an xxh3-64 checksum of the image seeded by all three and the page

A page never written is a hole in both files: it costs no disk. A store write
for a checkpoint at C (:meth:`PageStore.write`) puts each page that changed
into the slot that does not hold its version at the last durable checkpoint,
the slot's index entry first, then its image; syncs both files; then writes the older of
the two headers with C and the number of pages that have a version at C,
and syncs again. Only then does the caller name C in its checkpoint file
(node_storage.py). A page's version at C is the slot with the highest
checkpoint LSN at or below C whose image matches its checksum.

Invariants: the slot holding a page's version at the durable checkpoint is
never written, nor is the header naming the newest completed write, so a
crash at any point (a torn, garbled or dropped image, entry or header
write) leaves every page's version readable; a slot written for a
checkpoint that never became durable has a higher checkpoint LSN and is
ignored. Damage is found, never served: a version that fails its checksum,
a count of pages that does not match the header's (zeroed or cut entries),
an index older than the checkpoint naming it, a header of another PG. A
full read (:meth:`PageStore.read_all`) also reports bytes nothing accounts
for (a damaged unused slot, bytes in a hole, bytes past the end).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass, field

import xxhash

from ..errors import CorruptionError
from .ports import Disk

MAGIC = b"AUPS"
VERSION = 1
HEADER = struct.Struct("<4sHHIQQQQ")  # magic, version, 0, PG, store LSN, pages, page size, xxh3
HEADER_BYTES = 64
HEADERS = 2
ENTRY = struct.Struct("<QQQ")  # checkpoint LSN, page LSN, checksum of the slot
ENTRY_BYTES = 64  # two entries and 16 reserved bytes (zero) per page
SLOTS = 2
ENTRIES_AT = HEADER_BYTES * HEADERS

assert HEADER.size <= HEADER_BYTES and ENTRY.size * SLOTS <= ENTRY_BYTES


def with_pages(present: bytes | bytearray, page_lo: int, page_nos: Sequence[int]) -> bytearray:
    """The presence map ``present`` (bit i: page page_lo + i has a version in the store)
    with ``page_nos`` added."""
    grown = bytearray(present)
    for page_no in page_nos:
        bit = page_no - page_lo
        if bit // 8 >= len(grown):
            grown += bytes(bit // 8 + 1 - len(grown))
        grown[bit // 8] |= 1 << (bit % 8)
    return grown


def has_page(present: bytes | bytearray, page_lo: int, page_no: int) -> bool:
    bit = page_no - page_lo
    return bit // 8 < len(present) and bool(present[bit // 8] & (1 << (bit % 8)))


def image_name(pg_id: int) -> str:
    return f"pg-{pg_id:08d}.img"


def index_name(pg_id: int) -> str:
    return f"pg-{pg_id:08d}.idx"


def slot_checksum(page_no: int, checkpoint_lsn: int, page_lsn: int, image: bytes) -> int:
    """xxh3-64 of the image, seeded by where and what it is: an entry copied to another
    page, or naming another version, does not match."""
    seed = xxhash.xxh3_64_intdigest(struct.pack("<QQQ", page_no, checkpoint_lsn, page_lsn))
    return xxhash.xxh3_64_intdigest(image, seed=seed)


@dataclass(frozen=True)
class Header:
    pg_id: int
    store_lsn: int  # the checkpoint LSN of the newest completed store write
    pages: int  # pages with a version at store_lsn
    page_size: int

    def encode(self) -> bytes:
        body = HEADER.pack(
            MAGIC, VERSION, 0, self.pg_id, self.store_lsn, self.pages, self.page_size, 0
        )
        checksum = xxhash.xxh3_64_intdigest(body[: HEADER.size - 8])
        return (body[: HEADER.size - 8] + struct.pack("<Q", checksum)).ljust(HEADER_BYTES, b"\0")

    @staticmethod
    def decode(data: bytes) -> Header | None:
        """The header in ``data``, or None if it is not one (torn, garbled, a hole)."""
        if len(data) < HEADER.size:
            return None
        magic, version, _, pg_id, store_lsn, pages, page_size, checksum = HEADER.unpack_from(data)
        if magic != MAGIC or version != VERSION or any(data[HEADER.size : HEADER_BYTES]):
            return None
        if xxhash.xxh3_64_intdigest(data[: HEADER.size - 8]) != checksum:
            return None
        return Header(pg_id, store_lsn, pages, page_size)


@dataclass
class StoreContents:
    """What a full read of a store found (:meth:`PageStore.read_all`)."""

    page_nos: list[int] = field(default_factory=list)
    page_lsns: list[int] = field(default_factory=list)
    images: list[bytes] = field(default_factory=list)
    # Why the versions cannot be trusted (the segment lost what is under its
    # checkpoint); empty when every page's version verified.
    lost: str = ""
    misplaced: str = ""  # the store belongs to another PG (or volume geometry)
    # Damage that costs no version: unused slots, stray bytes (reported only).
    harmless: list[str] = field(default_factory=list)


class PageStore:
    """The page store of one segment (module docstring)."""

    def __init__(self, disk: Disk, pg_id: int, page_lo: int, page_hi: int, page_size: int) -> None:
        self.disk = disk
        self.pg_id = pg_id
        self.page_lo = page_lo
        self.page_hi = page_hi
        self.page_size = page_size
        self.image_file = image_name(pg_id)
        self.index_file = index_name(pg_id)
        self.bytes_written = 0  # image, entry and header bytes written: what checkpoints cost

    def remove(self) -> None:
        """Deletes both files (a store written anew)."""
        for name in (self.image_file, self.index_file):
            if self.disk.exists(name):
                self.disk.remove(name)

    def exists(self) -> bool:
        return self.disk.exists(self.index_file)

    def _slot_offset(self, page_no: int, slot: int) -> int:
        return ((page_no - self.page_lo) * SLOTS + slot) * self.page_size

    def _entry_offset(self, page_no: int) -> int:
        return ENTRIES_AT + (page_no - self.page_lo) * ENTRY_BYTES

    def _entries(self, page_no: int) -> list[tuple[int, int, int]]:
        """Both slots' (checkpoint LSN, page LSN, checksum); zeros for an empty slot."""
        data = self.disk.read_at(self.index_file, self._entry_offset(page_no), ENTRY.size * SLOTS)
        data = data.ljust(ENTRY.size * SLOTS, b"\0")
        return [ENTRY.unpack_from(data, slot * ENTRY.size) for slot in range(SLOTS)]

    def headers(self) -> list[tuple[int, Header]]:
        """The valid headers, as (position, header), newest store write first."""
        data = self.disk.read_at(self.index_file, 0, ENTRIES_AT)
        found = []
        for position in range(HEADERS):
            header = Header.decode(data[position * HEADER_BYTES : (position + 1) * HEADER_BYTES])
            if header is not None:
                found.append((position, header))
        return sorted(found, key=lambda item: item[1].store_lsn, reverse=True)

    def write(
        self,
        page_nos: Sequence[int],
        page_lsns: Sequence[int],
        images: bytes | bytearray | memoryview,
        checkpoint_lsn: int,
        durable_lsn: int,
    ) -> None:
        """Writes each page's image (``images`` holds them in order) for a checkpoint at
        ``checkpoint_lsn``, never over its version at ``durable_lsn`` (the last
        durable checkpoint; 0 for a new store), syncs, then completes the write
        with a header. The caller names ``checkpoint_lsn`` only after this returns."""
        assert checkpoint_lsn > durable_lsn, (checkpoint_lsn, durable_lsn)
        view = memoryview(images).cast("B")
        size = self.page_size
        headers = self.headers() if self.exists() else []
        # Pages with a version at the durable checkpoint: the newest header counts them,
        # unless it completed a write no checkpoint named (a crash): then count anew.
        if not headers:
            pages = 0
        elif headers[0][1].store_lsn == durable_lsn:
            pages = headers[0][1].pages
        else:
            pages = self._count_at(durable_lsn)
        for index, (page_no, page_lsn) in enumerate(zip(page_nos, page_lsns, strict=True)):
            assert self.page_lo <= page_no < self.page_hi, (page_no, self.pg_id)
            assert page_lsn <= checkpoint_lsn, (page_no, page_lsn, checkpoint_lsn)
            image = bytes(view[index * size : (index + 1) * size])
            entries = self._entries(page_no) if headers else [(0, 0, 0)] * SLOTS
            current = _version_slot(entries, durable_lsn)
            if current is None:
                pages += 1
            slot = 0 if current is None else 1 - current
            # The entry first: a write cut short leaves an entry above every named
            # checkpoint (ignored), never image bytes that no entry accounts for.
            checksum = slot_checksum(page_no, checkpoint_lsn, page_lsn, image)
            entry = ENTRY.pack(checkpoint_lsn, page_lsn, checksum)
            self.disk.write_at(
                self.index_file, self._entry_offset(page_no) + slot * ENTRY.size, entry
            )
            self.disk.write_at(self.image_file, self._slot_offset(page_no, slot), image)
            self.bytes_written += size + ENTRY.size
        self.disk.sync(self.image_file)
        self.disk.sync(self.index_file)
        # The header not naming the newest completed write takes this one.
        newest = headers[0][0] if headers else 1
        header = Header(self.pg_id, checkpoint_lsn, pages, size).encode()
        self.disk.write_at(self.index_file, (1 - newest) * HEADER_BYTES, header)
        self.bytes_written += len(header)
        self.disk.sync(self.index_file)

    def _count_at(self, lsn: int) -> int:
        """Pages with a slot written at or below ``lsn`` (reads the index whole)."""
        data = self.disk.read(self.index_file)
        count = 0
        for offset in range(ENTRIES_AT, len(data), ENTRY_BYTES):
            entries = _unpack_entries(data, offset)
            if any(0 < written <= lsn for written, _, _ in entries):
                count += 1
        return count

    def check(self, checkpoint_lsn: int) -> tuple[str, str]:
        """(lost, misplaced) from the headers alone, as :meth:`read_all` finds them: what
        opening a store costs (two headers), whatever the number of pages."""
        headers = self.headers()
        if not headers:
            return f"{self.index_file}: no valid header", ""
        header = headers[0][1]
        if header.pg_id != self.pg_id or header.page_size != self.page_size:
            return "", (
                f"{self.index_file}: a store of PG {header.pg_id} with {header.page_size}-byte "
                f"pages, not of PG {self.pg_id} with {self.page_size}-byte pages"
            )
        if header.store_lsn < checkpoint_lsn:
            return (
                f"{self.index_file}: its last write is at LSN {header.store_lsn}, older than "
                f"the checkpoint at LSN {checkpoint_lsn} naming it"
            ), ""
        if header.pages and not self.disk.exists(self.image_file):
            return f"{self.image_file}: missing, and {header.pages} pages are in the index", ""
        return "", ""

    def read(self, page_no: int, checkpoint_lsn: int) -> tuple[int, bytes] | None:
        """(page LSN, image) of the page's version at ``checkpoint_lsn``, or None if the
        store holds none: two preads, its entries and its slot. Raises
        CorruptionError if the version fails its checksum (never a wrong image)."""
        entries = self._entries(page_no)
        slot = _version_slot(entries, checkpoint_lsn)
        if slot is None:
            return None
        written, page_lsn, checksum = entries[slot]
        image = self.disk.read_at(self.image_file, self._slot_offset(page_no, slot), self.page_size)
        image = image.ljust(self.page_size, b"\0")
        if slot_checksum(page_no, written, page_lsn, image) != checksum:
            raise CorruptionError(
                f"{self.image_file}: page {page_no}: its version at LSN {checkpoint_lsn} "
                "fails its checksum"
            )
        return page_lsn, image

    def page_nos(self) -> list[int]:
        """Every page some slot of the index names, ascending (reads the index whole)."""
        data = self.disk.read(self.index_file)
        return [
            self.page_lo + (offset - ENTRIES_AT) // ENTRY_BYTES
            for offset in range(ENTRIES_AT, len(data), ENTRY_BYTES)
            if any(written for written, _, _ in _unpack_entries(data, offset))
        ]

    def read_all(self, checkpoint_lsn: int) -> StoreContents:
        """Every page's version at ``checkpoint_lsn``, checking the whole store: the
        versions (a failure loses them all: the segment must not vouch for its
        pages), the count of pages, and every other byte (reported only)."""
        found = StoreContents()
        found.lost, found.misplaced = self.check(checkpoint_lsn)
        if found.lost or found.misplaced:
            return found
        header = self.headers()[0][1]
        index = self.disk.read(self.index_file)
        images = self.disk.read(self.image_file) if self.disk.exists(self.image_file) else b""
        counted = self._read_pages(index, images, header.store_lsn, checkpoint_lsn, found)
        if counted != header.pages and not found.lost:
            found.lost = (
                f"{self.index_file}: {counted} pages have a version at LSN {header.store_lsn}, "
                f"its header says {header.pages}"
            )
        slots_end = (len(index) - ENTRIES_AT + ENTRY_BYTES - 1) // ENTRY_BYTES * SLOTS
        if any(images[slots_end * self.page_size :]):
            found.harmless.append(f"{self.image_file}: bytes past the last page")
        return found

    def _read_pages(
        self, index: bytes, images: bytes, store_lsn: int, checkpoint_lsn: int, found: StoreContents
    ) -> int:
        """Fills ``found`` with each page's version at ``checkpoint_lsn``; returns the
        pages with a slot written at or below ``store_lsn`` (the header's count)."""
        size = self.page_size
        counted = 0
        for offset in range(ENTRIES_AT, len(index), ENTRY_BYTES):
            page_no = self.page_lo + (offset - ENTRIES_AT) // ENTRY_BYTES
            entries = _unpack_entries(index, offset)
            if any(index[offset + ENTRY.size * SLOTS : offset + ENTRY_BYTES]):
                found.harmless.append(f"{self.index_file}: page {page_no}: reserved bytes set")
            if any(0 < written <= store_lsn for written, _, _ in entries):
                counted += 1
            version, verified = None, []
            for slot, (written, page_lsn, checksum) in enumerate(entries):
                start = ((page_no - self.page_lo) * SLOTS + slot) * size
                image = images[start : start + size].ljust(size, b"\0")
                if written == 0:
                    if any(image) or page_lsn or checksum:
                        found.harmless.append(f"{self.image_file}: page {page_no}: bytes in a hole")
                    continue
                if slot_checksum(page_no, written, page_lsn, image) == checksum:
                    verified.append((written, page_lsn, image))
                elif written <= store_lsn:  # above: a write no checkpoint completed
                    found.harmless.append(f"{self.image_file}: page {page_no}: slot {slot} damaged")
            candidates = [entry for entry in entries if 0 < entry[0] <= checkpoint_lsn]
            if not candidates:
                continue
            newest = max(written for written, _, _ in candidates)
            version = next((v for v in verified if v[0] == newest), None)
            if version is None or not self.page_lo <= page_no < self.page_hi:
                found.lost = found.lost or (
                    f"{self.image_file}: page {page_no}: its version at LSN {checkpoint_lsn} "
                    "fails its checksum"
                )
                continue
            found.page_nos.append(page_no)
            found.page_lsns.append(version[1])
            found.images.append(version[2])
        return counted


def _unpack_entries(data: bytes, offset: int) -> list[tuple[int, int, int]]:
    chunk = data[offset : offset + ENTRY.size * SLOTS].ljust(ENTRY.size * SLOTS, b"\0")
    return [ENTRY.unpack_from(chunk, slot * ENTRY.size) for slot in range(SLOTS)]


def _version_slot(entries: list[tuple[int, int, int]], lsn: int) -> int | None:
    """The slot holding the version at ``lsn``: the highest checkpoint LSN at or below it."""
    best = max(
        ((written, slot) for slot, (written, _, _) in enumerate(entries) if 0 < written <= lsn),
        default=None,
    )
    return None if best is None else best[1]
