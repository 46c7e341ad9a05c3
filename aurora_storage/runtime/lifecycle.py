"""A volume's life in the process: finishing a create, closing, crashing, discarding.

``close`` stages what is not yet in the backup, resolves a backtrack in
doubt if it can, waits for the flushes in flight, syncs and records each
node's metadata, releases threads, descriptors and C memory, and the folder
lock. ``simulate_crash`` and a failed create, restore or open release the
same things and write nothing (``_discard``); a failed create or restore also
removes what it wrote (runtime/folder.py).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, TypeVar

from ..errors import AuroraStorageError, InvalidArgumentError, StorageWriteError
from .cluster import Cluster, Embedded
from .disk import RealDisk, sync_folder
from .folder import UNFINISHED_MARKER, clear_new_folder

_Opened = TypeVar("_Opened", bound="Lifecycle")


class Lifecycle(Embedded):
    """Closing and discarding a volume (mixed into Volume)."""

    _lock_handle: Any  # the folder's flock, held while open (runtime/folder.py)
    _unfinished_folder: bool | None  # being created or restored: made its folder?
    _shut_down: bool  # threads, descriptors and memory released
    _owns_transport: bool
    _readonly_backup: Any  # a read-only volume's recorded store target, or None

    def _init_lifecycle(self) -> None:
        """Open, holding no lock yet, and whole (create and restore say otherwise)."""
        self._lock_handle = None
        # A volume being created or restored: whether its folder was made for it
        # (removed if the create fails); None once whole.
        self._unfinished_folder = None
        self._shut_down = False

    @classmethod
    def _open_readonly(cls, root: Path, clock: Any, backend: str | None, backup: Any) -> Lifecycle:
        """A read-only volume of the folder ``root`` (volume.py)."""
        raise NotImplementedError

    def _finish_creation(self) -> None:
        """The volume is whole: its folder's marker goes, durably (it opens from now on)."""
        if self._unfinished_folder is None or self.path is None:
            return
        root = Path(self.path)
        try:
            (root / UNFINISHED_MARKER).unlink(missing_ok=True)
            if self.options.durability == "fsync":
                sync_folder(root)
        except OSError as error:
            raise StorageWriteError(f"{root}: cannot finish the volume: {error}") from None
        self._unfinished_folder = None

    def _discard_unfinished(self) -> None:
        """A create or restore failed: stops everything it started and removes what it
        wrote, so nothing opens and a retry is not blocked."""
        self._discard()
        if self._unfinished_folder is not None and self.path is not None:
            clear_new_folder(Path(self.path), self._unfinished_folder)
        self._release_lock()

    def _discard(self) -> None:
        """Stops threads and releases descriptors and memory without writing anything
        (a crash, or a create, restore or open that failed); keeps the folder lock."""
        if self._shut_down:
            return
        self._shut_down = True
        if self._stager is not None:
            self._stager.close(finish=False)  # a crashed writer stages nothing more
        with self.transport.lock:
            self._closed = True
            if self._flusher is not None:
                self._flusher.close()
            for node in self.nodes.values():
                if isinstance(node.disk, RealDisk):
                    with contextlib.suppress(OSError):
                        node.disk.close(trim=False)  # a crash leaves preallocated zeros
                for segment in node.segments.values():
                    segment.page_log.close()
            if self._owns_transport:
                self.transport.close()

    def _release_lock(self) -> None:
        if self._lock_handle is not None:
            self._lock_handle.close()
            self._lock_handle = None

    def simulate_crash(self) -> None:
        """Stops the writer as a crash would, for demos and tests.

        Nothing more is sent or flushed and node metadata is not rewritten; the
        folder lock is released so the volume can be opened again (recovery).
        Storage keeps exactly what it had made durable.
        """
        self._discard()
        self._release_lock()

    def close(self) -> None:
        """Waits for fsyncs in flight, syncs and records node metadata, releases the folder."""
        if self._closed:
            return
        if self.readonly:  # nothing of it is written: it only lets go
            self._discard()
            return
        if self._stager is not None:
            if self._vdl > self.staging.last_round_vdl and not self._degraded:
                # What is durable but not yet in the backup goes there now: a closed
                # volume stages nothing more (at most a commit timeout's wait).
                with contextlib.suppress(AuroraStorageError, OSError):
                    self._stager.stage_now(self.options.commit_timeout)
            self._stager.close()  # the rounds asked for run first: they need the lock
        with self.transport.lock:
            if self._history_in_doubt is not None:
                # One more try, so the next open cannot adopt the failed backtrack;
                # if this fails too, recovery decides (it may find it).
                self._abandon_history()
            if not self._degraded:
                self.send_maintenance()  # quiet PGs fold and checkpoint before nodes close
            self._closed = True
            self.transport.wait_for_syncs()
            if self._flusher is not None:
                self._flusher.close()  # its thread goes now (no flush is in flight)
            for node in self.nodes.values():
                if self.transport.link_open(node.name, node.name):
                    node.close()
                if isinstance(node.disk, RealDisk):
                    try:
                        node.disk.close()  # trims the logs' preallocated zeros
                    except OSError as error:  # zeros left behind reload as free space
                        node.stop_on_disk_error("close", error)
                for segment in node.segments.values():
                    segment.page_log.close()  # C memory goes now, not at garbage collection
            if self._owns_transport:
                self.transport.close()
            self._shut_down = True
        self._release_lock()

    def __enter__(self: _Opened) -> _Opened:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        """True once :meth:`close` (or :meth:`simulate_crash`) ran."""
        return self._closed

    def refresh(self) -> None:
        """A read-only volume reads the nodes' files again: it then shows what is durable
        now (a writer may have committed meanwhile)."""
        self._check_open()
        if not self.readonly:
            raise InvalidArgumentError("refresh is for a read-only volume; a writer is current")
        assert self.path is not None
        again = type(self)._open_readonly(
            Path(self.path), self.clock, self.options.backend, self._readonly_backup
        )
        old = self.__dict__.copy()
        self.__dict__.update(again.__dict__)
        self.cluster = Cluster(self)
        stale = object.__new__(type(self))
        stale.__dict__.update(old)
        stale._discard()
