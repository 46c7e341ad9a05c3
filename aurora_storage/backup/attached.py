"""A volume's continuous backup, seen from the writer: attaching a store, staging now,
the restorable window and the backup part of status().

Staging runs in backup/staging.py (a worker, or the committing thread). The
writer keeps the store's catalog in memory (backup.StagingState), read once
here when the store is attached, so the window and status() make no store
call. A read-only volume reads the store's catalog instead, writing nothing.
"""

from __future__ import annotations

from typing import Any

from .. import backup as backup_module
from ..clock import Duration, SimulatedClock, to_duration
from ..errors import (
    AuroraStorageError,
    BackupObjectMissingError,
    ConfigurationError,
    InvalidArgumentError,
)
from ..format.objects import HISTORY_NAME, KIND_HISTORY, decode_object
from ..protocol.writer import Writer
from ..runtime.transport import SimulatedTransport
from ..status import BackupStatus
from .staging import Stager
from .store import open_store


class Backed(Writer):
    """The writer's side of continuous backup (mixed into Volume)."""

    _readonly_backup: Any  # a read-only volume's recorded store target, or None
    backup_options: backup_module.BackupOptions

    def _init_backup(self) -> None:
        """No backup attached yet (:meth:`_attach_backup`)."""
        self.backup_options = backup_module.BackupOptions()
        self.backup_store = None  # a BackupStore once attached
        self.staging = backup_module.StagingState()
        self._stager = None  # a Stager: runs staging rounds once a backup is attached
        self._staged = {}  # staging rounds' replies by request
        self._readonly_backup = None

    def _write_volume_meta(self) -> None:
        """Records where the backup goes, for the next open (volume.py)."""
        raise NotImplementedError

    def _attach_backup(self, options: backup_module.BackupOptions, mode: str) -> None:
        """Turns continuous backup on, its rounds run ``mode`` (staging.MODES): the
        store's catalog is read once, here (a few store calls: its names and newest
        round), then kept in memory."""
        store = open_store(options.target)
        try:
            data: bytes | None = store.get(HISTORY_NAME)
        except BackupObjectMissingError:
            data = None
        if data is None and self._vdl:
            # A new backup of a volume with history: its segments may have folded and
            # trimmed old frames, so it begins with page images at today's VDL.
            now = self.clock.now()
            self.staging.base = (self._vdl, now)
            self.staging.earliest = max(self.staging.earliest, now)
        if data is not None:
            meta, _ = decode_object(data, HISTORY_NAME, KIND_HISTORY)
            if meta.get("volume_id") not in (None, self.volume_id):
                raise ConfigurationError(
                    f"the backup store holds volume {meta.get('volume_id')}, not {self.volume_id}"
                )
            self.staging.load(store, meta)
            # After a reopen every PG continues from the last recorded round.
            for pg_id in self.pgs:
                self.staging.staged_lsn[pg_id] = self.staging.last_round_vdl
        self.backup_options = options
        self.backup_store = store
        self._stager = Stager(self, store, mode, options)
        self._write_volume_meta()  # where the backup goes, for the next open

    def _staging_mode(self, backup: backup_module.BackupOptions) -> str:
        """The mode asked for, else inline on a simulated clock or transport (runs that
        must replay exactly), else background (a worker thread)."""
        if backup.staging is not None:
            return backup.staging
        simulated = isinstance(self.clock, SimulatedClock) or isinstance(
            self.transport, SimulatedTransport
        )
        return "inline" if simulated else "background"

    def stage_backup(self, timeout: Duration | None = None) -> bool:
        """Runs a staging round now and waits for it: every PG's frames up to VDL go to
        the backup store. True when the round was recorded (or nothing was new);
        False when it failed (``status()["backup"]["last_error"]`` says why: a PG
        no healthy segment can stage, a store error; the next round retries) or
        did not end within ``timeout`` seconds."""
        self._check_open()
        self._refuse_if_readonly("a staging round")
        seconds = None if timeout is None else to_duration(timeout, "timeout")
        if seconds is not None and seconds < 0:
            raise InvalidArgumentError(f"timeout is a duration >= 0, not {timeout!r}")
        if self._stager is None:
            return False
        return bool(self._stager.stage_now(seconds))

    @property
    def restorable_window(self) -> tuple[float, float]:
        """(earliest, latest) times a point-in-time restore from this volume's backup
        reaches, as the store holds them (from the writer's catalog: no store call).
        Raises RestoreError before the first round is recorded."""
        self._check_open()
        if self.readonly:
            return self._readonly_catalog().window()
        if self._stager is None:
            raise ConfigurationError("the volume has no backup store (create it with backup=...)")
        window: tuple[float, float] = self.staging.window(self.history.created_at)
        return window

    def _readonly_catalog(self) -> backup_module.BackupCatalog:
        """The backup store's catalog, read (never written) for a read-only volume."""
        target = self._readonly_backup
        if target is None:
            raise ConfigurationError("the volume has no backup store (create it with backup=...)")
        return backup_module.BackupCatalog(open_store(target, create=False))

    def _backup_status(self) -> BackupStatus | None:
        """The backup part of status(): the writer's staging, or the store's catalog
        read by a read-only volume; None without a backup."""
        if self.readonly:
            return None if self._readonly_backup is None else self._readonly_backup_status()
        if self.backup_store is None:
            return None
        window: tuple[float | None, float | None] = (None, None)  # no round yet
        if self.staging.last_round_name:
            window = self.restorable_window
        return {
            "store": repr(self.backup_store),
            "retention_days": self.backup_options.retention_days,
            "staging_interval_seconds": self.backup_options.staging_interval,
            "earliest_restorable": window[0],
            "latest_restorable": window[1],
            "staged_vdl": self.staging.last_round_vdl,
            "staging": self._stager.mode if self._stager else "",
            "pending_rounds": self._stager.pending_rounds if self._stager else 0,
            "last_error": self.staging.last_error,
        }

    def _readonly_backup_status(self) -> BackupStatus:
        window: tuple[float | None, float | None] = (None, None)
        problem = ""
        try:
            window = self._readonly_catalog().window()
        except (AuroraStorageError, OSError) as error:
            problem = f"{type(error).__name__}: {error}"
        return {
            "store": repr(self._readonly_backup),
            "retention_days": self.backup_options.retention_days,
            "staging_interval_seconds": self.backup_options.staging_interval,
            "earliest_restorable": window[0],
            "latest_restorable": window[1],
            "last_error": problem,
        }
