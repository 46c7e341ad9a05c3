"""A segment's page store: its pages at its checkpoints, on disk, rewritten where they changed.

Two files per segment, through the node's :class:`Disk` port (docs/format.md,
"Page store")::

    pg-<id>.img   two slots per page: slot s of page p at ((p - page_lo) * 2 + s) * page_size
    pg-<id>.idx   two 64-byte headers, then 64 bytes per page at 128 + (p - page_lo) * 64:
                  per slot, the checkpoint LSN it was written for, the page's own LSN,
                  an xxh3-64 of the image seeded by both and the page, and a checksum
                  of the entry itself

A page never written is a hole in both files: it costs no disk. A store write
for a checkpoint at C (:meth:`PageStore.write`) puts each page that changed
into the slot the last durable checkpoint's map (:class:`StoreMap`) does not
name for it, the slot's entry first, then its image; syncs both files; then
writes the header not naming the newest completed write, and syncs again. It
returns C's map, which the caller names in its checkpoint file
(node_storage.py) only then. A page's version at C is in the slot C's map
names, provided its entry and image verify.

Invariants: the slot a durable map names is never written, nor is the header
naming the newest completed write, so a crash at any point (a torn, garbled or
dropped image, entry or header write) leaves every page's version readable;
an entry of a write no checkpoint named is never read. Damage is found, never
served: a version whose entry or image fails its checksum (a zeroed or cut
entry included: the map says the page is there), an index older than the
checkpoint naming it, a header of another PG. A scrub (:meth:`PageStore.scrub`)
also reports bytes nothing accounts for (a damaged unused slot, bytes in a
hole, bytes past the end), a stretch of pages at a time.
"""

from __future__ import annotations

import bisect
import itertools
import struct
import sys
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field

import xxhash

from ..errors import CorruptionError
from .ports import Disk

MAGIC = b"AUPS"
VERSION = 1
HEADER = struct.Struct("<4sHHIQQQQQ")  # magic, version, 0, PG, LSN, pages, page size, write, xxh3
HEADER_BYTES = 64
HEADERS = 2
ENTRY = struct.Struct("<QQQQ")  # checkpoint LSN, page LSN, checksum of the slot, of the entry
ENTRY_BYTES = 64  # two entries per page
SLOTS = 2
ENTRIES_AT = HEADER_BYTES * HEADERS
SCRUB_PAGES = 256  # pages a scrub reads at once (their entries and both slots)
SCRUB_TAIL_BYTES = 1024 * 1024  # bytes past the last page a scrub looks at

assert HEADER.size <= HEADER_BYTES and ENTRY.size * SLOTS <= ENTRY_BYTES


class StoreMap:
    """Which pages a store holds at a checkpoint, and in which slot. The checkpoint
    file carries it (checksummed with the file), so a page the store holds but
    whose entries were zeroed or cut away is found, and the slot read is the one
    the checkpoint named, never an older one.

    Two shapes, by how many pages the store holds: up to ``SPARSE_MAX`` pages, a
    sorted array of their offsets from the PG's first page and a byte per page
    for its slot (a segment of a sparse volume holding a few pages costs a few
    bytes, wherever in its 10 GiB they are); beyond, two bitmaps of two bits a
    page (bit i of byte i // 8, least significant first: present, then slot),
    as long as the last page held."""

    __slots__ = ("_offsets", "_page_slots", "page_lo", "present", "slots")
    SPARSE_MAX = 2048

    def __init__(
        self, page_lo: int, present: bytes | bytearray = b"", slots: bytes | bytearray = b""
    ) -> None:
        self.page_lo = page_lo
        self.present = bytearray(present)
        self.slots = bytearray(slots)
        # Sparse shape (None once dense): ascending offsets, and each one's slot.
        self._offsets: array[int] | None = None if present else array("I")
        self._page_slots = bytearray()

    @classmethod
    def _sparse(cls, page_lo: int, held: dict[int, int]) -> StoreMap:
        """A map of ``held`` (offset -> slot): sparse while small enough, else dense."""
        grown = cls(page_lo)
        if len(held) <= cls.SPARSE_MAX:
            offsets = sorted(held)
            grown._offsets = array("I", offsets)
            grown._page_slots = bytearray(held[offset] for offset in offsets)
            return grown
        grown._offsets = None
        return grown._with(held)

    def slot(self, page_no: int) -> int | None:
        """The slot holding the page's version, or None if the store has none."""
        bit = page_no - self.page_lo
        offsets = self._offsets
        if offsets is not None:
            index = bisect.bisect_left(offsets, bit)
            if index < len(offsets) and offsets[index] == bit:
                return self._page_slots[index]
            return None
        byte, mask = bit // 8, 1 << (bit % 8)
        if byte >= len(self.present) or not self.present[byte] & mask:
            return None
        return int(byte < len(self.slots) and bool(self.slots[byte] & mask))

    def with_slots(self, page_nos: Sequence[int], slots: Sequence[int]) -> StoreMap:
        """A copy in which ``page_nos`` are held in ``slots``."""
        changes = {
            page_no - self.page_lo: slot for page_no, slot in zip(page_nos, slots, strict=True)
        }
        if self._offsets is not None:
            held = dict(zip(self._offsets, self._page_slots, strict=True))
            held.update(changes)
            return StoreMap._sparse(self.page_lo, held)
        return StoreMap(self.page_lo, self.present, self.slots)._with(changes)

    def _with(self, changes: dict[int, int]) -> StoreMap:
        """Sets ``changes`` (offset -> slot) in this dense map's bitmaps; returns it."""
        for bit, slot in changes.items():
            byte, mask = bit // 8, 1 << (bit % 8)
            for bits in (self.present, self.slots):
                if byte >= len(bits):
                    bits += bytes(byte + 1 - len(bits))
            self.present[byte] |= mask
            if slot:
                self.slots[byte] |= mask
            else:
                self.slots[byte] &= ~mask & 0xFF
        return self

    def count(self) -> int:
        if self._offsets is not None:
            return len(self._offsets)
        return sum(bin(byte).count("1") for byte in self.present)

    def page_nos(self) -> list[int]:
        if self._offsets is not None:
            return [self.page_lo + offset for offset in self._offsets]
        return [
            self.page_lo + byte * 8 + bit
            for byte, bits in enumerate(self.present)
            if bits
            for bit in range(8)
            if bits & (1 << bit)
        ]

    def encode(self) -> dict[str, bytes]:
        """The map's fields of a checkpoint file (docs/format.md, "Node folder")."""
        if self._offsets is not None:
            offsets = array("I", self._offsets)
            if sys.byteorder != "little":
                offsets.byteswap()
            return {"held": offsets.tobytes(), "held_slots": bytes(self._page_slots)}
        return {"present": bytes(self.present), "slots": bytes(self.slots)}

    @classmethod
    def decode(cls, page_lo: int, meta: dict[str, object]) -> StoreMap:
        """The map a checkpoint file names; ValueError for fields that do not read."""
        held, held_slots = meta.get("held"), meta.get("held_slots")
        if held is None:
            present, slots = meta.get("present", b""), meta.get("slots", b"")
            if not isinstance(present, bytes) or not isinstance(slots, bytes):
                raise ValueError("the page bitmaps are not bytes")
            return cls(page_lo, present, slots)
        if not isinstance(held, bytes) or not isinstance(held_slots, bytes):
            raise ValueError("the map of held pages is not bytes")
        offsets = array("I")
        if len(held) % offsets.itemsize or len(held) // offsets.itemsize != len(held_slots):
            raise ValueError("the map of held pages has a torn length")
        offsets.frombytes(held)
        if sys.byteorder != "little":
            offsets.byteswap()
        if any(a >= b for a, b in itertools.pairwise(offsets)) or any(s > 1 for s in held_slots):
            raise ValueError("the map of held pages is out of order")
        return cls._sparse(page_lo, dict(zip(offsets, held_slots, strict=True)))


def image_name(pg_id: int, kind: str = "") -> str:
    return f"pg-{pg_id:08d}{kind}.img"


def index_name(pg_id: int, kind: str = "") -> str:
    return f"pg-{pg_id:08d}{kind}.idx"


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
    write: int  # counts the store's completed writes: the highest is the newest

    def encode(self) -> bytes:
        body = HEADER.pack(
            MAGIC,
            VERSION,
            0,
            self.pg_id,
            self.store_lsn,
            self.pages,
            self.page_size,
            self.write,
            0,
        )
        checksum = xxhash.xxh3_64_intdigest(body[: HEADER.size - 8])
        return (body[: HEADER.size - 8] + struct.pack("<Q", checksum)).ljust(HEADER_BYTES, b"\0")

    @staticmethod
    def decode(data: bytes) -> Header | None:
        """The header in ``data``, or None if it is not one (torn, garbled, a hole)."""
        if len(data) < HEADER.size:
            return None
        magic, version, _, pg_id, store_lsn, pages, page_size, write, checksum = HEADER.unpack_from(
            data
        )
        if magic != MAGIC or version != VERSION or any(data[HEADER.size : HEADER_BYTES]):
            return None
        if xxhash.xxh3_64_intdigest(data[: HEADER.size - 8]) != checksum:
            return None
        return Header(pg_id, store_lsn, pages, page_size, write)


@dataclass
class StoreContents:
    """What a scrub of a store found (:meth:`PageStore.scrub`)."""

    # Why the versions cannot be trusted (the segment lost what is under its
    # checkpoint); empty when every page's version verified.
    lost: str = ""
    misplaced: str = ""  # the store belongs to another PG (or volume geometry)
    # Damage that costs no version: unused slots, stray bytes (reported only).
    harmless: list[str] = field(default_factory=list)


class PageStore:
    """The page store of one segment (module docstring)."""

    def __init__(
        self, disk: Disk, pg_id: int, page_lo: int, page_hi: int, page_size: int, kind: str = ""
    ) -> None:
        """``kind`` tells a segment's stores apart in their names: "" for the pages at its
        checkpoint, ".base" for the versions its history starts from (disk_history.py)."""
        self.disk = disk
        self.pg_id = pg_id
        self.page_lo = page_lo
        self.page_hi = page_hi
        self.page_size = page_size
        self.image_file = image_name(pg_id, kind)
        self.index_file = index_name(pg_id, kind)

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
        return _unpack_entries(data, 0, page_no)

    def headers(self) -> list[tuple[int, Header]]:
        """The valid headers, as (position, header), newest store write first."""
        data = self.disk.read_at(self.index_file, 0, ENTRIES_AT)
        found = []
        for position in range(HEADERS):
            header = Header.decode(data[position * HEADER_BYTES : (position + 1) * HEADER_BYTES])
            if header is not None:
                found.append((position, header))
        # By write, not LSN: a checkpoint after a crash may be below one never named.
        return sorted(found, key=lambda item: item[1].write, reverse=True)

    def write(
        self,
        page_nos: Sequence[int],
        page_lsns: Sequence[int],
        images: bytes | bytearray | memoryview,
        checkpoint_lsn: int,
        durable: StoreMap,
    ) -> StoreMap:
        """Writes each page's image (``images`` holds them in order) for a checkpoint at
        ``checkpoint_lsn``, never into the slot ``durable`` (the last durable
        checkpoint's map; empty for a new store) names, syncs, then completes the
        write with a header. Returns the map of the new checkpoint, which the
        caller names (in its checkpoint file) only after this returns."""
        view = memoryview(images).cast("B")
        size = self.page_size
        headers = self.headers() if self.exists() else []
        slots = []
        for index, (page_no, page_lsn) in enumerate(zip(page_nos, page_lsns, strict=True)):
            assert self.page_lo <= page_no < self.page_hi, (page_no, self.pg_id)
            assert page_lsn <= checkpoint_lsn, (page_no, page_lsn, checkpoint_lsn)
            image = bytes(view[index * size : (index + 1) * size])
            current = durable.slot(page_no)
            slot = 0 if current is None else 1 - current
            slots.append(slot)
            # The entry first: a write cut short leaves an entry above every named
            # checkpoint (ignored), never image bytes that no entry accounts for.
            checksum = slot_checksum(page_no, checkpoint_lsn, page_lsn, image)
            entry = ENTRY.pack(
                checkpoint_lsn,
                page_lsn,
                checksum,
                entry_checksum(page_no, checkpoint_lsn, page_lsn, checksum),
            )
            self.disk.write_at(
                self.index_file, self._entry_offset(page_no) + slot * ENTRY.size, entry
            )
            self.disk.write_at(self.image_file, self._slot_offset(page_no, slot), image)
        written = durable.with_slots(page_nos, slots)
        self.disk.sync(self.image_file)
        self.disk.sync(self.index_file)
        # The header not naming the newest completed write takes this one.
        newest = headers[0][0] if headers else 1
        write = headers[0][1].write + 1 if headers else 1
        header = Header(self.pg_id, checkpoint_lsn, written.count(), size, write).encode()
        self.disk.write_at(self.index_file, (1 - newest) * HEADER_BYTES, header)
        self.disk.sync(self.index_file)
        return written

    def check(self, checkpoint_lsn: int) -> tuple[str, str]:
        """(lost, misplaced) from the headers alone, as :meth:`scrub` finds them: what
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

    def read(self, page_no: int, checkpoint_lsn: int, slot: int) -> tuple[int, bytes]:
        """(page LSN, image) of the page's version at ``checkpoint_lsn``, in ``slot`` (the
        checkpoint's map names it): two preads, the entry and the image. Raises
        CorruptionError if either fails its checksum (never a wrong image)."""
        data = self.disk.read_at(self.index_file, self._entry_offset(page_no), ENTRY.size * SLOTS)
        written, page_lsn, checksum = _unpack_entries(data, 0, page_no)[slot]
        if not 0 < written <= checkpoint_lsn:
            raise CorruptionError(
                f"{self.index_file}: page {page_no}: slot {slot} names no version at or "
                f"below LSN {checkpoint_lsn}"
            )
        image = self.disk.read_at(self.image_file, self._slot_offset(page_no, slot), self.page_size)
        image = image.ljust(self.page_size, b"\0")
        if slot_checksum(page_no, written, page_lsn, image) != checksum:
            raise CorruptionError(
                f"{self.image_file}: page {page_no}: its version at LSN {checkpoint_lsn} "
                "fails its checksum"
            )
        return page_lsn, image

    def scrub(self, checkpoint_lsn: int, named: StoreMap) -> StoreContents:
        """Checks the whole store against its checkpoint at ``checkpoint_lsn`` and the
        map ``named``: every named version (a failure loses them all: the segment
        must not vouch for its pages), then every other byte (reported only). Reads
        the files a stretch at a time: memory does not grow with the store."""
        found = StoreContents()
        found.lost, found.misplaced = self.check(checkpoint_lsn)
        if found.lost or found.misplaced:
            return found
        for page_no in named.page_nos():
            slot = named.slot(page_no)
            assert slot is not None
            try:
                self.read(page_no, checkpoint_lsn, slot)
            except CorruptionError as error:
                found.lost = found.lost or str(error)
        found.harmless += self._unaccounted(named)
        return found

    def _unaccounted(self, named: StoreMap) -> list[str]:
        """Damage no named version depends on: an entry that fails its check, bytes
        in a hole, a slot whose image fails its entry's checksum, bytes past the end;
        SCRUB_PAGES pages at a time, and only where the files hold data (a sparse
        store is read for what it holds, not for its size)."""
        size, problems = self.page_size, []
        index_size = self.disk.size(self.index_file)
        pages = max(0, (index_size - ENTRIES_AT + ENTRY_BYTES - 1) // ENTRY_BYTES)
        has_images = self.disk.exists(self.image_file)
        stretches = [
            ((start - ENTRIES_AT) // ENTRY_BYTES, -(-(end - ENTRIES_AT) // ENTRY_BYTES))
            for start, end in self.disk.data_ranges(self.index_file)
            if end > ENTRIES_AT
        ]
        if has_images:
            stretches += [
                (start // (SLOTS * size), -(-end // (SLOTS * size)))
                for start, end in self.disk.data_ranges(self.image_file)
            ]
        for first, last in _merged(stretches, pages):
            for chunk in range(first, last, SCRUB_PAGES):
                count = min(SCRUB_PAGES, last - chunk)
                index = self.disk.read_at(
                    self.index_file, ENTRIES_AT + chunk * ENTRY_BYTES, count * ENTRY_BYTES
                )
                images = b""
                if has_images:
                    images = self.disk.read_at(
                        self.image_file, chunk * SLOTS * size, count * SLOTS * size
                    )
                for number in range(count):
                    page_no = self.page_lo + chunk + number
                    problems += self._unaccounted_page(page_no, named, index, images, number)
        if has_images and self.disk.size(self.image_file) > pages * SLOTS * size:
            tail = self.disk.read_at(self.image_file, pages * SLOTS * size, SCRUB_TAIL_BYTES)
            if any(tail):
                problems.append(f"{self.image_file}: bytes past the last page")
        return problems

    def _unaccounted_page(
        self, page_no: int, named: StoreMap, index: bytes, images: bytes, number: int
    ) -> list[str]:
        """:meth:`_unaccounted` for one page, its entries and slots in the stretch read."""
        size, problems = self.page_size, []
        offset = number * ENTRY_BYTES
        for slot, (written, page_lsn, checksum) in enumerate(
            _unpack_entries(index, offset, page_no)
        ):
            if named.slot(page_no) == slot:
                continue  # a version: scrub read it
            start = (number * SLOTS + slot) * size
            image = images[start : start + size].ljust(size, b"\0")
            raw = index[offset + slot * ENTRY.size : offset + (slot + 1) * ENTRY.size]
            if written and slot_checksum(page_no, written, page_lsn, image) != checksum:
                problems.append(f"{self.image_file}: page {page_no}: slot {slot} damaged")
            elif not written and any(raw):
                problems.append(f"{self.index_file}: page {page_no}: slot {slot}")
            elif not written and any(image):
                problems.append(f"{self.image_file}: page {page_no}: bytes in a hole")
        return problems


def entry_checksum(page_no: int, checkpoint_lsn: int, page_lsn: int, checksum: int) -> int:
    """xxh3-64 of an entry's fields and its page: a torn or garbled entry fails it."""
    return xxhash.xxh3_64_intdigest(
        struct.pack("<QQQQ", page_no, checkpoint_lsn, page_lsn, checksum)
    )


def _unpack_entries(data: bytes, offset: int, page_no: int) -> list[tuple[int, int, int]]:
    """Both slots' (checkpoint LSN, page LSN, checksum) of ``page_no`` at ``offset``;
    an entry that fails its own checksum (a write torn or garbled, a flipped bit)
    reads as empty: it names no version."""
    chunk = data[offset : offset + ENTRY.size * SLOTS].ljust(ENTRY.size * SLOTS, b"\0")
    entries = []
    for slot in range(SLOTS):
        written, page_lsn, checksum, check = ENTRY.unpack_from(chunk, slot * ENTRY.size)
        valid = written and check == entry_checksum(page_no, written, page_lsn, checksum)
        entries.append((written, page_lsn, checksum) if valid else (0, 0, 0))
    return entries


def _merged(stretches: list[tuple[int, int]], pages: int) -> list[tuple[int, int]]:
    """The page ranges [first, last) of ``stretches``, within ``pages``, merged."""
    merged: list[tuple[int, int]] = []
    for first, last in sorted(stretches):
        first, last = max(first, 0), min(last, pages)
        if first >= last:
            continue
        if merged and first <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], last))
        else:
            merged.append((first, last))
    return merged
