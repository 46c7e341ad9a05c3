"""Where storage nodes keep their files: the real file system or a simulated one.

A :class:`Disk` is the only way nodes touch storage. It offers exactly what
the node's persistence needs: append to a file, fsync it, read it whole,
replace a small file atomically, list and remove. Paths are relative to the
disk's root and never leave it.

- :class:`RealDisk` uses the operating system. ``replace`` writes a temporary
  file, fsyncs it, renames it over the target and fsyncs the folder; a new
  file's folder is fsynced too, and so is each folder it creates in its
  parent, so a crash never loses a file that was synced.
  In ``fsync`` mode appended files grow in zero-filled, synced chunks ahead of
  the data (preallocation, as databases pre-create their log segments): an
  append then overwrites blocks the file already has, so the flush that makes
  it durable writes data alone, without a journal commit for a new file size.
  A background thread writes and syncs the next chunk while appends fill the
  current one, so commits do not wait for it. ``close`` trims each file back
  to its data; after a crash a file may end in zeros, which its reader treats
  as free space (node.py).
- :class:`SimulatedDisk` keeps files in memory and remembers which bytes were
  synced. ``crash()`` then decides, with a seeded random source, what each
  unsynced write became: written, dropped, torn (a prefix) or garbled (bits
  flipped), like SQLite's crash test layer (src/test6.c). Synced bytes always
  survive.
"""

from __future__ import annotations

import contextlib
import os
import random
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InvalidArgumentError
from ..native.flush import choose_method, datasync, inode_flags, journals_data, sync_file_system

SYNC_MODES = ("fsync", "os")
# Preallocation of appended files ("fsync" mode): each growth at least doubles
# the file, within these bounds, so a small log stays small. The next growth
# starts in the background once less than half of the last one is left.
PREALLOCATE_BYTES_MIN = 64 * 1024
PREALLOCATE_BYTES_MAX = 4 * 1024 * 1024
# Zeros go out in writes of this size: a write holds the file's inode lock while
# it fills the page cache, and an append to the same file waits for it. One
# 4 MiB write held it some 14 ms here, stalling commits; 64 KiB holds it ~0.2 ms.
ZERO_WRITE_BYTES = 64 * 1024

_ZEROS = bytes(ZERO_WRITE_BYTES)
# Files a disk keeps open at once: a sparse volume has thousands of protection
# groups, each with a log and a page store per node, and a process may hold
# 1,024 descriptors on common systems: six disks of 128 stay well below.
HANDLES_MAX = 128

_extender: ThreadPoolExecutor | None = None
_extender_lock = threading.Lock()


def _background() -> ThreadPoolExecutor:
    """The one thread that extends files ahead of their appends (started on first use)."""
    global _extender
    with _extender_lock:
        if _extender is None:
            _extender = ThreadPoolExecutor(1, "aurora-prealloc")
        return _extender


def _preallocation_step(allocated: int) -> int:
    return min(max(allocated, PREALLOCATE_BYTES_MIN), PREALLOCATE_BYTES_MAX)


def write_all(
    descriptor: int, data: bytes | bytearray | memoryview, offset: int | None = None
) -> int:
    """Writes all of ``data``, at ``offset`` or else at the file position, however
    short each write(2) comes back; returns the byte count."""
    view = memoryview(data).cast("B")
    total = len(view)
    while view:
        if offset is None:
            written = os.write(descriptor, view)
        else:
            written = os.pwrite(descriptor, view, offset)
            offset += written
        view = view[written:]
    return total


def write_file(path: Path, data: bytes, sync: bool, exclusive: bool = False) -> None:
    """Writes ``data`` as the whole of the file at ``path`` (made, or emptied first; with
    ``exclusive``, only made: FileExistsError if it is there), synced if ``sync``."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_EXCL if exclusive else os.O_TRUNC)
    descriptor = os.open(path, flags, 0o644)
    try:
        write_all(descriptor, data)
        if sync:
            os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _grow_file(path: Path, start: int, target: int) -> int:
    """A background growth: zeros in [start, target), then fdatasync; returns target.

    It opens the file on its own: a write-back error that its fdatasync reports
    (and consumes, for that open file) must still reach the flush that makes
    the appended data durable through the disk's descriptor.
    """
    descriptor = os.open(path, os.O_WRONLY)
    try:
        return _write_zeros(descriptor, start, target, True)
    finally:
        os.close(descriptor)


def _write_zeros(handle: int, start: int, target: int, sync: bool) -> int:
    """Fills [start, target) of a file with zeros (then fdatasync if ``sync``); returns target.

    It writes ``ZERO_WRITE_BYTES`` at a time, so appends to the file slip in between.
    """
    zeros = memoryview(_ZEROS)
    position = start
    while position < target:
        position += write_all(handle, zeros[: target - position], position)
    if sync:
        datasync(handle)
    return target


def sync_folder(folder: Path) -> None:
    """Makes the names in ``folder`` durable: a new or renamed file survives a crash."""
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def make_folders(folder: Path, sync: bool) -> None:
    """Creates ``folder`` and its missing parents; with ``sync`` each new folder is
    made durable in its parent, so that a crash keeps the path to what is synced
    inside it."""
    missing = []
    while not folder.is_dir():
        missing.append(folder)
        if folder.parent == folder:
            break
        folder = folder.parent
    for created in reversed(missing):
        try:
            created.mkdir()
        except FileExistsError:
            if not created.is_dir():  # a file; a folder made meanwhile by another writer is fine
                raise
        if sync:
            sync_folder(created.parent)


def _check_name(name: str) -> str:
    parts = name.split("/")
    if not name or name.startswith("/") or any(part in ("", ".", "..") for part in parts):
        raise InvalidArgumentError(f"bad file name {name!r}")
    return name


class RealDisk:
    """Files under a folder; ``fsync`` mode syncs data and folders, ``os`` mode never syncs."""

    def __init__(self, root: str | os.PathLike[str], mode: str = "fsync") -> None:
        if mode not in SYNC_MODES:
            raise InvalidArgumentError(f"sync mode {mode!r} is not one of {SYNC_MODES}")
        self.root = Path(root)
        self.mode = mode
        self.preallocate = mode == "fsync"
        self._handles: dict[str, int] = {}
        self._ends: dict[str, int] = {}  # bytes of data in each open file
        self._allocated: dict[str, int] = {}  # its size on disk, zero-filled past the end
        # Background growths in flight; only the thread appending reads their results.
        self._extending: dict[str, Future[int]] = {}
        # Files whose size or allocation changed since their last flush: their
        # metadata must be flushed too (flush_targets).
        self._grown: dict[str, int] = {}  # name -> growths not yet flushed whole
        # Each opening of a file gets a new generation: a flush settles the marks of
        # the open file it flushed, never those of a file that replaced it meanwhile.
        self._generations: dict[str, int] = {}
        self._opened = 0
        # Open files whose data goes through the journal (their own data-journal
        # flag): a "writeback" flush must fdatasync them whole every time (flush.py).
        self._journaled: set[str] = set()
        self._quiet: dict[str, int] = {}  # appends ending at or below need no _make_room
        self.flush_method: str | None = None  # set by device()
        # Called with a file's descriptor after each append (the shared flusher's kick).
        self.on_write: Callable[[int], None] | None = None

    def _path(self, name: str) -> Path:
        return self.root / _check_name(name)

    def _sync_folder(self, folder: Path) -> None:
        if self.mode == "fsync":
            sync_folder(folder)

    def _handle(self, name: str) -> int:
        handle = self._handles.get(name)
        if handle is None:
            if len(self._handles) >= HANDLES_MAX:
                self._close_oldest()
            path = self._path(name)
            created = False
            try:
                handle = os.open(path, os.O_RDWR)
            except FileNotFoundError:
                created = True
                make_folders(path.parent, self.mode == "fsync")
                handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            self._handles[name] = handle
            self._opened += 1
            self._generations[name] = self._opened
            if self.flush_method == "writeback" and journals_data("", inode_flags(handle)):
                self._journaled.add(name)
            self._ends[name] = self._allocated[name] = os.fstat(handle).st_size
            if created:
                self._sync_folder(path.parent)
        return handle

    def _existing(self, name: str) -> int:
        """The descriptor of a file that must exist (reads never create one)."""
        handle = self._handles.get(name)
        if handle is None:
            if not self._path(name).exists():
                raise FileNotFoundError(name)
            handle = self._handle(name)
        return handle

    def _close_oldest(self) -> None:
        """Closes the file opened longest ago, its data made durable first ("fsync" mode)
        and its preallocated zeros cut: a file without a descriptor needs no flush,
        and the next append reopens it where its data ends."""
        name = next(iter(self._handles))
        if self.mode == "fsync":
            datasync(self._handles[name])
        self._forget(name, trim=True)

    def _forget(self, name: str, trim: bool = False) -> None:
        """Closes a file's handle (after its growth in flight); ``trim`` cuts its zeros."""
        extension = self._extending.pop(name, None)
        if extension is not None:
            with contextlib.suppress(OSError):  # only zeros past the data were at stake
                extension.result()
        handle = self._handles.pop(name, None)
        end = self._ends.pop(name, 0)
        self._grown.pop(name, None)
        self._generations.pop(name, None)
        self._journaled.discard(name)
        self._quiet.pop(name, None)
        self._allocated.pop(name, None)
        if handle is not None:
            try:
                # Zeros past the data (preallocated, or left by a growth that failed
                # half way): only where there are any, which fstat tells.
                if trim and os.fstat(handle).st_size > end:
                    os.ftruncate(handle, end)
            finally:
                os.close(handle)

    def append(self, name: str, data: bytes | bytearray | memoryview) -> int:
        handle = self._handles.get(name)
        if handle is None:
            handle = self._handle(name)
        end = self._ends[name]
        size = len(data) if type(data) is bytes else memoryview(data).nbytes
        position = end + size
        if self.preallocate and position > self._quiet.get(name, -1):
            self._make_room(name, handle, position)
        written = os.pwrite(handle, data, end)  # one call, as a rule; write_all if short
        if written != size:
            write_all(handle, memoryview(data).cast("B")[written:], end + written)
        if self.on_write is not None:
            self.on_write(handle)
        self._ends[name] = position
        if position > self._allocated[name]:
            self._allocated[name] = position
        return size

    def write_at(self, name: str, offset: int, data: bytes | bytearray | memoryview) -> None:
        """A positional write (page stores): never preallocated; a hole stays a hole."""
        handle = self._handles.get(name)
        if handle is None:
            handle = self._handle(name)
        size = len(data) if type(data) is bytes else memoryview(data).nbytes
        written = os.pwrite(handle, data, offset)
        if written != size:
            write_all(handle, memoryview(data).cast("B")[written:], offset + written)
        end = offset + size
        if end > self._ends[name]:
            self._ends[name] = end
            self._grown[name] = self._grown.get(name, 0) + 1  # a new size: metadata to flush
        if end > self._allocated[name]:
            self._allocated[name] = end

    def read_at(self, name: str, offset: int, size: int) -> bytes:
        """A positional read; the file stays open for the next one (page stores are read
        page by page). FileNotFoundError for a file that is not there."""
        return os.pread(self._existing(name), size, offset)

    def data_ranges(self, name: str) -> list[tuple[int, int]]:
        """The file's data stretches by SEEK_DATA and SEEK_HOLE (the whole file where the
        file system cannot tell)."""
        handle = self._existing(name)
        size = os.fstat(handle).st_size
        if not hasattr(os, "SEEK_DATA"):
            return [(0, size)] if size else []
        ranges, position = [], 0
        while position < size:
            try:
                start = os.lseek(handle, position, os.SEEK_DATA)
            except OSError:  # ENXIO: no data after position
                break
            end = os.lseek(handle, start, os.SEEK_HOLE)
            ranges.append((start, end))
            position = end
        return ranges

    def _make_room(self, name: str, handle: int, needed: int) -> None:
        """Ensures zeros on disk up to ``needed``, and the next growth under way.

        Appends never write past the published size while a growth is in flight,
        so the background thread's zeros land only beyond the data.
        """
        extension = self._extending.get(name)
        if extension is not None and (extension.done() or needed > self._allocated[name]):
            del self._extending[name]
            self._allocated[name] = extension.result()  # raises the growth's OSError
            extension = None
        allocated = self._allocated[name]
        if needed > allocated:
            # Out of room (a new file, or a frame larger than what is left): grow now;
            # the flush that makes the append durable covers these zeros too.
            target = max(needed, allocated + _preallocation_step(allocated))
            allocated = self._allocated[name] = _write_zeros(handle, allocated, target, False)
            self._grown[name] = self._grown.get(name, 0) + 1
        step = _preallocation_step(allocated)
        if extension is None and allocated - needed < step // 2:
            extension = self._extending[name] = _background().submit(
                _grow_file, self._path(name), allocated, allocated + step
            )
        # Appends ending at or below this need nothing here: with a growth in
        # flight, until they pass its start; else until the next growth is due.
        self._quiet[name] = allocated if extension is not None else allocated - step // 2

    def sync(self, name: str) -> None:
        if self.mode == "fsync" and name in self._handles:
            # fdatasync: the data and what reading it back needs (the size), not mtimes.
            datasync(self._handles[name])

    def sync_files(self, names: list[str]) -> None:
        """Makes the named files durable as they are, whoever wrote them (a process
        that stopped before its fsyncs returned): one ``syncfs`` of the file system
        where there is one, else an fdatasync per file. Nothing in ``os`` mode."""
        if self.mode != "fsync" or not names:
            return
        if sync_file_system(self.root):
            return
        for name in names:
            descriptor = os.open(self._path(name), os.O_RDONLY)
            try:
                datasync(descriptor)
            finally:
                os.close(descriptor)

    def read(self, name: str) -> bytes:
        """The file's data: an open file without its preallocated zeros."""
        data = self._path(name).read_bytes()
        end = self._ends.get(name)
        return data if end is None or end >= len(data) else data[:end]

    def device(self) -> int | None:
        """The file system this disk lives on, if one flush of it can make it durable.

        Sets :attr:`flush_method` (flush.py) for it; None where no flush covers
        several files, or in ``os`` mode.
        """
        if self.mode != "fsync":
            return None
        folder = self.root
        while not folder.exists() and folder.parent != folder:
            folder = folder.parent  # a node folder made later lands on its parent's
        self.flush_method = choose_method(folder)
        if self.flush_method is None or self.flush_method == "each":
            return None
        return os.stat(folder).st_dev

    def flush_targets(self, names: list[str]) -> list[tuple[str, int, int, int, bool]]:
        """(name, descriptor, generation, growths, whole) of each open file among ``names``.

        ``growths`` counts the file's size or allocation changes not yet flushed
        whole: a flush must make its metadata durable too. ``generation`` names
        this opening of the file. ``whole``: the flush must fdatasync the file
        whole, for its growths or because its data goes through the journal.
        Once a flush has succeeded, :meth:`flushed` takes the mark; a failed
        flush leaves it.
        """
        targets = []
        for name in names:
            handle = self._handles.get(name)
            if handle is not None:
                growths = self._grown.get(name, 0)
                whole = growths > 0 or name in self._journaled
                targets.append((name, handle, self._generations[name], growths, whole))
        return targets

    def flushed(self, name: str, generation: int, growths: int) -> None:
        """A flush made ``name`` durable, its metadata with it if it had ``growths``.

        A growth since then keeps the file marked, and so does a file that
        replaced the flushed one (another ``generation``): its growths are its own.
        """
        if (
            growths
            and self._generations.get(name) == generation
            and self._grown.get(name) == growths
        ):
            del self._grown[name]

    def replace(self, name: str, data: bytes) -> None:
        path = self._path(name)
        make_folders(path.parent, self.mode == "fsync")
        self._forget(name)  # later appends go to the new file
        temporary = path.with_name(path.name + ".tmp")
        write_file(temporary, data, self.mode == "fsync")
        os.replace(temporary, path)
        self._sync_folder(path.parent)

    def exists(self, name: str) -> bool:
        return self._path(name).exists()

    def list(self, prefix: str = "") -> list[str]:
        if not self.root.exists():
            return []
        names = []
        root = str(self.root)
        # os.walk reads each folder's entries with their types (no stat per file): a
        # node folder of a scattered volume holds hundreds of thousands of files.
        for folder, _, files in os.walk(root):
            relative = os.path.relpath(folder, root)
            base = "" if relative == "." else relative.replace(os.sep, "/") + "/"
            for file in files:
                name = base + file
                if not file.endswith(".tmp") and name.startswith(prefix):
                    names.append(name)
        return sorted(names)

    def remove(self, name: str) -> None:
        self._forget(name)
        self._path(name).unlink(missing_ok=True)

    def link(self, name: str, new_name: str) -> None:
        self._forget(name, trim=True)  # its preallocated zeros are not its data
        self._forget(new_name)
        source, target = self._path(name), self._path(new_name)
        make_folders(target.parent, self.mode == "fsync")
        target.unlink(missing_ok=True)
        try:
            os.link(source, target)
        except OSError:  # a file system without hard links: a copy
            write_file(target, source.read_bytes(), self.mode == "fsync")
        self._sync_folder(target.parent)

    def truncate(self, name: str, size: int) -> None:
        self._forget(name)
        descriptor = os.open(self._path(name), os.O_WRONLY)
        try:
            os.ftruncate(descriptor, size)
            if self.mode == "fsync":
                os.fsync(descriptor)
        finally:
            os.close(descriptor)

    def size(self, name: str) -> int:
        end = self._ends.get(name)
        return self._path(name).stat().st_size if end is None else end

    def close(self, trim: bool = True) -> None:
        """Closes every file, trimming preallocated zeros unless ``trim`` is False (a crash).

        Every file is closed even if a trim fails; the first error is raised then.
        """
        first: OSError | None = None
        for name in list(self._handles):
            try:
                self._forget(name, trim)
            except OSError as error:
                first = first or error
        if first is not None:
            raise first


class SimulatedCrash(BaseException):
    """Raised by a simulated disk at the operation a CrashPlan chose: the machine stops.

    A BaseException, so no handler in the library mistakes it for an I/O error.
    """


@dataclass
class CrashPlan:
    """Counts disk operations across disks and stops the machine at operation ``crash_at``."""

    crash_at: int | None = None
    operations: int = 0

    def tick(self) -> None:
        self.operations += 1
        if self.crash_at is not None and self.operations >= self.crash_at:
            self.crash_at = None
            raise SimulatedCrash(f"crash at disk operation {self.operations}")


@dataclass
class _SimulatedFile:
    synced: bytearray = field(default_factory=bytearray)
    # Writes since the last sync, in order: (None, data) appends, (offset, data) writes at.
    unsynced: list[tuple[int | None, bytes]] = field(default_factory=list)
    exists_synced: bool = False  # the file's name survives a crash

    def apply(self, data: bytearray, offset: int | None, chunk: bytes) -> None:
        """One write onto ``data``: appended, or at ``offset`` (zeros fill a gap)."""
        if offset is None:
            data += chunk
            return
        if len(data) < offset:
            data += bytes(offset - len(data))
        data[offset : offset + len(chunk)] = chunk

    def contents(self) -> bytes:
        data = bytearray(self.synced)
        for offset, chunk in self.unsynced:
            self.apply(data, offset, chunk)
        return bytes(data)


class SimulatedDisk:
    """In-memory files that remember what was synced; ``crash`` mangles the rest."""

    def __init__(self, seed: int = 0, plan: CrashPlan | None = None) -> None:
        self.random = random.Random(seed)
        self.files: dict[str, _SimulatedFile] = {}
        self.sync_error: OSError | None = None  # raised by the next sync, then cleared
        # Raised by the next write (append or write_at), then cleared.
        self.append_error: OSError | None = None
        self.syncs = 0
        self.plan = plan or CrashPlan()

    def append(self, name: str, data: bytes | bytearray | memoryview) -> int:
        self._write(name, None, data)
        return len(data)

    def write_at(self, name: str, offset: int, data: bytes | bytearray | memoryview) -> None:
        self._write(name, offset, data)

    def _write(self, name: str, offset: int | None, data: bytes | bytearray | memoryview) -> None:
        """An unsynced write (an append with no offset); ``append_error`` fails the next."""
        self.plan.tick()
        if self.append_error is not None:
            error, self.append_error = self.append_error, None
            raise error
        entry = self.files.setdefault(_check_name(name), _SimulatedFile())
        entry.unsynced.append((offset, bytes(data)))

    def data_ranges(self, name: str) -> list[tuple[int, int]]:
        size = len(self.read(name))
        return [(0, size)] if size else []

    def read_at(self, name: str, offset: int, size: int) -> bytes:
        entry = self.files.get(_check_name(name))
        if entry is None:
            raise FileNotFoundError(name)
        if not entry.unsynced:  # no file to rebuild: a slice of what is synced
            return bytes(entry.synced[offset : offset + size])
        return entry.contents()[offset : offset + size]

    def sync(self, name: str) -> None:
        self.plan.tick()
        if self.sync_error is not None:
            error, self.sync_error = self.sync_error, None
            raise error
        entry = self.files.get(name)
        if entry is None:
            return
        self.syncs += 1
        entry.synced = bytearray(entry.contents())
        entry.unsynced.clear()
        entry.exists_synced = True

    def sync_files(self, names: list[str]) -> None:
        for name in names:
            self.sync(name)

    def read(self, name: str) -> bytes:
        entry = self.files.get(_check_name(name))
        if entry is None:
            raise FileNotFoundError(name)
        return entry.contents()

    def replace(self, name: str, data: bytes) -> None:
        # Write, sync, rename, sync the folder: atomic and durable on return.
        self.plan.tick()
        self.files[_check_name(name)] = _SimulatedFile(bytearray(data), [], True)
        self.syncs += 1

    def exists(self, name: str) -> bool:
        return name in self.files

    def list(self, prefix: str = "") -> list[str]:
        return sorted(name for name in self.files if name.startswith(prefix))

    def remove(self, name: str) -> None:
        self.files.pop(name, None)

    def link(self, name: str, new_name: str) -> None:
        # The new name is durable at once (link, then a sync of the folder); its bytes
        # are the file's, synced or not as they were.
        self.plan.tick()
        entry = self.files.get(_check_name(name))
        if entry is None:
            raise FileNotFoundError(name)
        self.files[_check_name(new_name)] = _SimulatedFile(
            bytearray(entry.synced), list(entry.unsynced), True
        )

    def truncate(self, name: str, size: int) -> None:
        self.plan.tick()
        data = self.read(name)[:size]
        self.files[name] = _SimulatedFile(bytearray(data), [], True)

    def size(self, name: str) -> int:
        return len(self.read(name))

    def crash(self, mode: str = "random") -> None:
        """Loses the machine: each unsynced write is written, dropped, torn or garbled.

        ``mode`` forces one outcome for every write ("write", "drop", "tear",
        "garble") or lets the seeded random source choose per write ("random").
        Once an append is dropped or torn, later appends to that file are lost
        too: files are appended in order. A write at an offset (a page store's)
        meets its own fate, whatever became of the others.
        """
        outcomes = ("write", "drop", "tear", "garble")
        for name in list(self.files):
            entry = self.files[name]
            never_synced = not entry.exists_synced and not entry.synced
            if never_synced and (
                mode == "drop" or (mode == "random" and self.random.random() < 0.5)
            ):
                del self.files[name]  # the file's name was never made durable
                continue
            data = bytearray(entry.synced)
            appends_lost = False
            for offset, chunk in entry.unsynced:
                if offset is None and appends_lost:
                    continue
                outcome = self.random.choice(outcomes) if mode == "random" else mode
                if outcome == "write":
                    entry.apply(data, offset, chunk)
                elif outcome == "garble":
                    garbled = bytearray(chunk)
                    if garbled:
                        position = self.random.randrange(len(garbled))
                        garbled[position] ^= 1 << self.random.randrange(8)
                    entry.apply(data, offset, bytes(garbled))
                elif outcome == "tear":
                    entry.apply(data, offset, chunk[: self.random.randrange(len(chunk) + 1)])
                    appends_lost = appends_lost or offset is None
                else:
                    appends_lost = appends_lost or offset is None
            self.files[name] = _SimulatedFile(data, [], True)
