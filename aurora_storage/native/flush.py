"""One flush that makes many files of one file system durable, off the caller's thread.

The embedded default keeps all six nodes' logs on one file system, and a
commit is durable once every frame it wrote is on stable media. Six fsyncs
would flush the device six times; one flush serves them all. Methods
(csrc/flush.h gives the exact steps):

- ``"writeback"``: write back every log file and wait (``sync_file_range``),
  then ``fdatasync`` one of them; its device cache flush comes after all the
  others' writes completed, so it covers them. A file whose size or
  allocation changed since its last flush is ``fdatasync``-ed whole instead.
  Sound only where overwriting written blocks needs no metadata and
  ``fdatasync`` always flushes the device cache (write barriers on, as every
  fsync needs): ext4 and XFS, which :func:`choose_method` recognizes from
  ``/proc/self/mountinfo``. Not where data goes through ext4's journal: there
  ``sync_file_range`` writes nothing durable and one file's ``fdatasync``
  commits nothing of another's. That is the ``data=journal`` mount option, or
  the data-journal flag (``chattr +j``, ``FS_JOURNAL_DATA_FL``) on the folder,
  which the files made in it inherit (:func:`journals_data`); a log that has
  the flag itself is flushed whole every time (disk.py). Appends fill
  preallocated, zero-filled blocks (disk.py), so every flush but a file's
  first is of this cheap kind.
- ``"syncfs"``: ``syncfs(2)``, one flush of everything dirty on the file
  system, data and metadata, for other Linux file systems.
- ``"each"``: ``fdatasync`` of every file, where neither is available.

``AURORA_STORAGE_FLUSH`` forces a method. A :class:`Flusher` runs the flush
on a thread of the C core, so that the caller can do other work (a node's
indexing of the frames being flushed) while the device writes; with the
Python backend, or in a process forked from the one that started the
thread, the flush runs on the caller's thread when it waits. A file just
written can be handed over at once (:meth:`Flusher.kick`): its write-back
starts while the caller goes on, so the flush finds less to write. Between the
flushes of a stream of commits the thread polls for the next one (2 ms at
most, yielding the CPU), and a waiter polls for the end of its flush, since
waking a sleeping thread costs tens of microseconds on a virtual machine.
``AURORA_STORAGE_FLUSH_POLL_US`` sets that time; 0 turns polling off, for
hosts where an idle core matters more than commit latency.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import fcntl
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .. import native
from ..errors import InvalidArgumentError, NativeCoreError

METHODS = ("writeback", "syncfs", "each")
POLL_US_DEFAULT = 2000  # the flusher's thread polls this long before it sleeps
POLL_US_MAX = 1_000_000
# File systems where the "writeback" method is sound (see the module docstring).
_WRITEBACK_FILE_SYSTEMS = ("ext4", "xfs")
# A file's or folder's inode flags (linux/fs.h): FS_IOC_GETFLAGS is _IOR('f', 1, long);
# a folder's data-journal flag passes to the files made in it.
_FS_IOC_GETFLAGS = (2 << 30) | (ctypes.sizeof(ctypes.c_long) << 16) | (ord("f") << 8) | 1
FS_JOURNAL_DATA_FL = 0x00004000
_SYNC_FILE_RANGE_WRITE = 2
_SYNC_FILE_RANGE_WAIT_ALL = 1 | 2 | 4  # WAIT_BEFORE | WRITE | WAIT_AFTER
# fdatasync where there is one: data and what reading it back needs (the size), not mtimes.
datasync = getattr(os, "fdatasync", os.fsync)


def _libc_function(name: str) -> Callable[..., int] | None:
    """A function of libc (Linux), or None where it is missing."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        function: Callable[..., int] = getattr(libc, name)
    except (OSError, AttributeError):
        return None
    return function


_syncfs = _libc_function("syncfs") if sys.platform.startswith("linux") else None
_sync_file_range = _libc_function("sync_file_range") if _syncfs is not None else None
if _sync_file_range is not None:
    _sync_file_range.argtypes = [  # type: ignore[attr-defined]
        ctypes.c_int,
        ctypes.c_int64,
        ctypes.c_int64,
        ctypes.c_uint,
    ]


def sync_file_system(path: str | os.PathLike[str]) -> bool:
    """``syncfs`` of the file system holding ``path``: everything written there becomes
    durable, whoever wrote it. False where there is no syncfs (the caller then
    syncs file by file); raises the OSError syncfs reports."""
    if _syncfs is None:
        return False
    descriptor = os.open(path, os.O_RDONLY)
    try:
        if _syncfs(descriptor) != 0:
            number = ctypes.get_errno() or 5
            raise OSError(number, f"syncfs: {os.strerror(number)}")
    finally:
        os.close(descriptor)
    return True


def poll_time() -> int:
    """Microseconds the flusher's thread polls before sleeping: ``AURORA_STORAGE_FLUSH_POLL_US``
    or :data:`POLL_US_DEFAULT`; 0 never polls (no core spins, commits wait for wake-ups)."""
    text = os.environ.get("AURORA_STORAGE_FLUSH_POLL_US")
    if not text:
        return POLL_US_DEFAULT
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= POLL_US_MAX:
        raise InvalidArgumentError(
            f"AURORA_STORAGE_FLUSH_POLL_US={text!r}: expected microseconds in 0..{POLL_US_MAX}"
        )
    return value


def file_system_of(path: str | os.PathLike[str], mountinfo: str | None = None) -> tuple[str, str]:
    """(type, super options) of the file system holding ``path``, from mountinfo.

    ``("", "")`` when it cannot be told (no /proc, or no line for the device).
    """
    device = os.stat(path).st_dev
    wanted = f"{os.major(device)}:{os.minor(device)}"
    if mountinfo is None:
        try:
            mountinfo = Path("/proc/self/mountinfo").read_text()
        except OSError:
            return "", ""
    for line in mountinfo.splitlines():
        # id parent major:minor root mount-point options [optional...] - type source super
        left, separator, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if separator and len(fields) >= 3 and fields[2] == wanted and tail:
            return tail[0], tail[2] if len(tail) >= 3 else ""
    return "", ""


def inode_flags(target: int | str | os.PathLike[str]) -> int | None:
    """The inode flags (``FS_IOC_GETFLAGS``) of an open descriptor or a path, or
    None where the file system or the platform cannot tell."""
    if not sys.platform.startswith("linux"):
        return None
    descriptor = target if isinstance(target, int) else os.open(target, os.O_RDONLY)
    try:
        buffer = bytearray(8)  # the kernel writes an int at its start
        fcntl.ioctl(descriptor, _FS_IOC_GETFLAGS, buffer, True)
    except OSError:
        return None
    finally:
        if not isinstance(target, int):
            os.close(descriptor)
    return int.from_bytes(buffer[:4], sys.byteorder, signed=True)


def journals_data(options: str, flags: int | None) -> bool:
    """Whether data written under a folder goes through the file system's journal:
    the ``data=journal`` mount option (in ``options``, the super options), the
    data-journal flag in the folder's inode ``flags``, or flags that cannot be
    read (None), where that cannot be ruled out."""
    return "data=journal" in options.split(",") or flags is None or bool(flags & FS_JOURNAL_DATA_FL)


def choose_method(
    path: str | os.PathLike[str], mountinfo: str | None = None, flags: int | None = None
) -> str | None:
    """The flush method for files under ``path``, or None: each file syncs on its own.

    ``flags`` are the inode flags of ``path`` (:func:`inode_flags`), read when
    not given. ``AURORA_STORAGE_FLUSH`` (one of :data:`METHODS`) overrides the choice.
    """
    forced = os.environ.get("AURORA_STORAGE_FLUSH")
    if forced:
        if forced not in METHODS:
            raise InvalidArgumentError(
                f"AURORA_STORAGE_FLUSH={forced!r}: expected one of {', '.join(METHODS)}"
            )
        return forced
    if _syncfs is None:
        return None
    kind, options = file_system_of(path, mountinfo)
    if _sync_file_range is None or kind not in _WRITEBACK_FILE_SYSTEMS:
        return "syncfs"
    if journals_data(options, inode_flags(path) if flags is None else flags):
        return "syncfs"  # one journal commit covers every file's data
    return "writeback"


def _errno(result: int) -> int:
    return 0 if result == 0 else (ctypes.get_errno() or 5)  # EIO when unknown


def _datasync_errno(descriptor: int) -> int:
    try:
        datasync(descriptor)
    except OSError as error:
        return error.errno or 5
    return 0


def python_flush(fds: Sequence[int], whole: Sequence[bool], method: str) -> list[int]:
    """The flush of csrc/flush.c aus_flush, in Python: an errno per file (0: durable)."""
    if method not in METHODS or not fds or len(whole) != len(fds):
        raise InvalidArgumentError(f"flush of {len(fds)} files by {method!r}")
    if method == "syncfs" and _syncfs is not None:
        error = _errno(_syncfs(fds[0]))
        return [error] * len(fds)
    if method != "writeback" or _sync_file_range is None:
        return [_datasync_errno(fd) for fd in fds]
    sync_file_range = _sync_file_range
    errors = [0] * len(fds)
    data_only = [i for i in range(len(fds)) if not whole[i]]
    for i in data_only:
        errors[i] = _errno(sync_file_range(fds[i], 0, 0, _SYNC_FILE_RANGE_WRITE))
    for i in data_only[:-1]:
        if not errors[i]:
            errors[i] = _errno(sync_file_range(fds[i], 0, 0, _SYNC_FILE_RANGE_WAIT_ALL))
    for i in range(len(fds)):
        if whole[i]:
            errors[i] = _datasync_errno(fds[i])
    if data_only:
        last = data_only[-1]
        error = _datasync_errno(fds[last])
        if error:
            for i in data_only:
                errors[i] = errors[i] or error
    return errors


class Flusher:
    """Runs one flush at a time: :meth:`start` returns at once, :meth:`wait` finishes it."""

    def __init__(self, method: str, backend: str | None = None, poll_us: int | None = None) -> None:
        if method not in METHODS:
            raise InvalidArgumentError(f"flush method {method!r} is not one of {METHODS}")
        self.method = method
        self.poll_us = poll_time() if poll_us is None else poll_us
        if type(self.poll_us) is not int or not 0 <= self.poll_us <= POLL_US_MAX:
            raise InvalidArgumentError(f"poll time {self.poll_us!r} us is not in 0..{POLL_US_MAX}")
        self._pending: tuple[list[int], list[bool]] | None = None  # for the caller's thread
        self._count = 0
        self._in_flight = False
        self._native: Any = None
        if (backend or native.backend.name) != "python":
            core = native.get_backend("native")
            assert isinstance(core, native.NativeBackend)
            self._ffi, self._lib = core.ffi, core.lib
            made = self._lib.aus_flusher_new(self.poll_us * 1000)
            if made == self._ffi.NULL:
                raise MemoryError("aus_flusher_new")
            self._native = self._ffi.gc(made, self._lib.aus_flusher_free)

    def prime(self) -> None:
        """Says a flush will start soon: the flusher's thread wakes now and polls for it.

        Waking a sleeping thread costs tens of microseconds on a virtual
        machine; a caller that knows a flush is coming (a commit about to send
        its frames) hides that behind its own work. The thread polls for
        :attr:`poll_us` at most, then sleeps again; with 0 this does nothing. Nothing happens with a flush in flight.
        """
        if self._native is not None and not self._in_flight:
            status = self._lib.aus_flusher_prime(self._native)
            if status == native.STATUS_NOMEM:
                raise MemoryError("aus_flusher_prime")

    def kick(self, descriptor: int) -> None:
        """Says ``descriptor`` was just written: its write-back starts now, off this thread.

        A hint that shortens the coming flush; it changes nothing about what
        the flush makes durable or reports.
        """
        if self._native is not None:
            self._lib.aus_flusher_kick(self._native, descriptor)

    def start(self, fds: Sequence[int], whole: Sequence[bool]) -> None:
        """Begins flushing ``fds`` (``whole[i]``: fdatasync that file whole)."""
        if self._in_flight:
            raise InvalidArgumentError("a flush is already in flight")
        if not fds or len(whole) != len(fds):
            raise InvalidArgumentError(f"flush of {len(fds)} files with {len(whole)} marks")
        self._in_flight = True
        self._count = len(fds)
        if self._native is not None:
            status = self._lib.aus_flusher_start(
                self._native, list(fds), bytes(map(bool, whole)), len(fds), self._code
            )
            if status == native.STATUS_OK:
                return
            if status == native.STATUS_NOMEM:
                self._in_flight = False
                raise MemoryError("aus_flusher_start")
        # The Python backend, or a process forked after the thread started.
        self._pending = (list(fds), list(whole))

    @property
    def _code(self) -> int:
        """The method's AUS_FLUSH_* value, read from the compiled core (csrc/flush.h)."""
        return int(getattr(self._lib, f"AUS_FLUSH_{self.method.upper()}"))

    def wait(self) -> list[int]:
        """Blocks until the flush is done; an errno per file, 0 where it is durable."""
        if not self._in_flight:
            raise InvalidArgumentError("no flush in flight")
        self._in_flight = False
        pending, self._pending = self._pending, None
        if pending is not None:
            return python_flush(pending[0], pending[1], self.method)
        errors = self._ffi.new("int[]", self._count)
        status = self._lib.aus_flusher_wait(self._native, errors, self._count)
        if status != native.STATUS_OK:
            raise NativeCoreError(f"aus_flusher_wait failed with status {status}")
        return list(errors)

    def run(self, fds: Sequence[int], whole: Sequence[bool]) -> list[int]:
        self.start(fds, whole)
        return self.wait()

    def close(self) -> None:
        """Stops the thread now; a flush in flight finishes first (its outcome is dropped)."""
        if self._in_flight:
            self.wait()
        if self._native is not None:
            self._ffi.release(self._native)
            self._native = None
