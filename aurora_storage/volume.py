"""The volume users import: create, open, restore, status, close, as one object.

:class:`Volume` composes the layers (docs/architecture.md): the writer's
protocol (protocol/writer.py: commits and acks; reads.py; backtrack.py;
writer_recovery.py), its continuous backup (backup/attached.py), and the
runtime that hosts the nodes and the process side of a volume
(runtime/cluster.py, lifecycle.py, folder.py). This module builds a volume
from options, a folder or a backup and hands each job to the part that owns
it; the invariants live with those parts.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from . import backup as backup_module
from . import checks
from .backup.attached import Backed
from .clock import (
    Clock,
    Duration,
    Moment,
    WallClock,
    to_duration,
)
from .config import (
    CACHE_BYTES_DEFAULT,
    CAPACITY_MAX,
    COMMIT_TIMEOUT,
    LAL_DEFAULT,
    NODES_DEFAULT,
    PAGE_SIZE_DEFAULT,
    REPAIR_AFTER_DEFAULT,
    SEGMENT_SIZE_DEFAULT,
    VolumeOptions,
    check_node_count,
    clock_kind,
    node_names,
)
from .errors import (
    AuroraStorageError,
    ConfigurationError,
    InvalidArgumentError,
    MissingNodeError,
    VolumeIncompleteError,
)
from .protocol.history import (
    History,
)
from .protocol.membership import Memberships
from .protocol.node import (
    WRITER,
    StorageNode,
)
from .protocol.placement import Placement, placement_of
from .protocol.ports import Disk
from .protocol.reads import Reading
from .protocol.writer_recovery import Recovering
from .runtime.cluster import check_collaborators, make_nodes, new_nodes
from .runtime.folder import (
    UNFINISHED_MARKER,
    RecordedObject,
    claim_new_folder,
    clear_new_folder,
    folders_made_by,
    lock_folder,
    missing_node_folders,
    read_volume_meta,
    recorded_options,
    remove_made,
    replace_volume_meta,
    volume_body,
    write_volume_meta,
)
from .runtime.lifecycle import Lifecycle
from .runtime.transport import DirectTransport, Transport
from .status import VolumeStatus, volume_status


class Volume(Recovering, Memberships, Reading, Backed, Lifecycle):
    """A quorum-replicated, log-structured volume seen from its single writer.

    Build one with :meth:`create` or :meth:`open`. Every public method takes
    the transport's lock, so several threads may commit at once (their frames
    share fsyncs: group commit).
    """

    def __init__(
        self,
        options: VolumeOptions,
        path: str | os.PathLike[str] | None = None,
        clock: Clock | None = None,
        transport: Transport | None = None,
        *,
        nodes: dict[str, StorageNode] | None = None,
        volume_id: str = "",
        writer_name: str = WRITER,
        placement: Placement | None = None,
    ) -> None:
        options.check()
        self.clock = clock or getattr(transport, "clock", None) or WallClock()
        self._owns_transport = transport is None
        self.transport = transport or DirectTransport()
        self._direct = isinstance(self.transport, DirectTransport)
        self._init_writer(
            options, None if path is None else os.fspath(path), volume_id, self.clock, writer_name
        )
        self._init_backup()
        self._init_lifecycle()
        self._init_memberships(options.repair_after)
        self._host_nodes(nodes, placement or placement_of(options))

    # --- creation and opening -------------------------------------------------------

    @classmethod
    def create(
        cls,
        path: str | os.PathLike[str] | None = None,
        *,
        page_size: int = PAGE_SIZE_DEFAULT,
        segment_size: int = SEGMENT_SIZE_DEFAULT,
        capacity: int = CAPACITY_MAX,
        durability: str | None = None,
        clock: Clock | None = None,
        lal: int = LAL_DEFAULT,
        transport: Transport | None = None,
        backend: str | None = None,
        commit_timeout: Duration = COMMIT_TIMEOUT,
        disks: dict[str, Disk] | None = None,
        backtrack_window: Duration = 0.0,
        backtrack_budget: int = 0,
        backup: Any = None,
        backup_retention_days: float | timedelta = 1.0,
        backup_staging_interval: Duration = backup_module.STAGING_INTERVAL_DEFAULT,
        backup_staging: str | None = None,
        cache_bytes: int = CACHE_BYTES_DEFAULT,
        nodes: int = NODES_DEFAULT,
        repair_after: Duration | None = REPAIR_AFTER_DEFAULT,
        spare_disks: dict[str, Disk] | None = None,
        _finished: bool = True,
    ) -> Volume:
        """A new empty volume of ``nodes`` storage nodes (a multiple of 3, at least 6),
        a third in each of three AZs; each PG's six segments sit on two nodes of each
        AZ (``status().placement`` says which).

        With a ``path``, nodes keep their segments in ``path/nodes/<name>`` and ``durability``
        defaults to ``"fsync"``; without one, to ``"memory"``. ``disks`` replaces the node
        folders by given disks (crash tests). ``backup`` (a folder, a URL, or a BackupStore)
        turns on continuous backup, kept ``backup_retention_days`` (1 to 35), staged every
        ``backup_staging_interval`` seconds, by a worker thread (``backup_staging=
        "background"``, the default on a wall clock) or by the committing thread
        (``"inline"``, the default on a simulated clock). A node whose disk cannot write
        (full or failing) is stopped and named in ``status()``; with fewer than four nodes
        left, :class:`StorageWriteError` names them with their OS errors. Durations
        (``commit_timeout``, ``backtrack_window``, ``backup_staging_interval``) are seconds
        or a ``timedelta``; ``backup_retention_days`` is days or a ``timedelta``.
        ``cache_bytes`` bounds the page images the nodes keep in memory once their pages
        are in page stores (``open`` and ``restore`` take it too). A node unreachable for
        ``repair_after`` seconds on the volume's clock (None: never) has its segments
        repaired on another node of its AZ, a new one if none is free
        (``cluster.check_repairs``); ``spare_disks`` are the disks such new nodes take
        on a volume made on given ``disks``. ``open`` and ``restore`` take both too.
        """
        root = None if path is None else checks.path(path)
        fleet = node_names(check_node_count(nodes))
        check_collaborators(clock, transport, disks, fleet)
        attach = backup_module.BackupOptions.of(
            backup, backup_retention_days, backup_staging_interval, backup_staging
        )
        clock = clock or getattr(transport, "clock", None) or WallClock()
        options = VolumeOptions.for_create(
            durability,
            clock_kind(clock),
            path is not None or disks is not None,
            page_size=page_size,
            segment_size=segment_size,
            capacity=capacity,
            lal=lal,
            backend=backend,
            commit_timeout=to_duration(commit_timeout, "commit_timeout"),
            backtrack_window=to_duration(backtrack_window, "backtrack_window"),
            backtrack_budget=backtrack_budget,
            cache_bytes=cache_bytes,
            nodes=nodes,
            repair_after=repair_after,
        )
        volume = cls._build(root, options, clock, transport, disks, attach, _finished)
        volume._spare_disks = dict(spare_disks or {})
        return volume

    @classmethod
    def _build(
        cls,
        root: Path | None,
        options: VolumeOptions,
        clock: Clock,
        transport: Transport | None,
        disks: dict[str, Disk] | None,
        backup: backup_module.BackupOptions | None,
        finished: bool,
    ) -> Volume:
        """A new volume in ``root`` (claimed first, cleared again if anything fails)."""
        volume_id = uuid.uuid4().hex
        lock, made = None, False
        if root is not None:
            # The folder is new (made durable in its parent) or empty, or holds an
            # unfinished volume, cleared; its marker stays until the volume is whole.
            lock, made = claim_new_folder(root, options.durability == "fsync")
        volume: Volume | None = None
        try:
            # The first history write: epoch 1, sequence 1, on every node.
            history = History.new(clock.now(), options.backtrack_window).keyed((1, 1))
            placement = Placement.of_count(options.nodes)
            nodes = new_nodes(options, root, volume_id, disks, history, placement)
            if root is not None:
                replace_volume_meta(root, options.durability, volume_body(options, volume_id))
            volume = cls(
                options,
                root,
                clock,
                transport,
                nodes=nodes,
                volume_id=volume_id,
                placement=placement,
            )
            volume._lock_handle, lock = lock, None
            volume._unfinished_folder = made if root is not None else None
            volume.history = history
            volume._history_write_key = history.key
            if backup is not None and backup.target is not None:
                volume._attach_backup(backup, volume._staging_mode(backup))
            if finished:
                volume._finish_creation()
        except BaseException:
            if volume is not None:
                volume._discard_unfinished()
            elif root is not None:
                clear_new_folder(root, made)
            if lock is not None:
                lock.close()
            raise
        return volume

    def _write_volume_meta(self) -> None:
        placement = self.placement
        self.options.placement = (
            placement.encode() if placement.added or placement.changes else None
        )
        if self.path is not None:
            base = (self.base_lsn, self.base_time)
            write_volume_meta(
                Path(self.path), self.options, self.volume_id, self.backup_options, base
            )

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str] | None = None,
        *,
        clock: Clock | None = None,
        transport: Transport | None = None,
        backend: str | None = None,
        rebuild_missing: bool = False,
        disks: dict[str, Disk] | None = None,
        options: VolumeOptions | None = None,
        volume_id: str = "",
        backup: Any = None,
        backup_staging: str | None = None,
        readonly: bool = False,
        cache_bytes: int = CACHE_BYTES_DEFAULT,
        progress: Callable[[int], None] | None = None,
        repair_after: Duration | None = REPAIR_AFTER_DEFAULT,
        spare_disks: dict[str, Disk] | None = None,
    ) -> Volume:
        """Opens a volume and recovers it: everything committed is there, nothing else.

        With ``rebuild_missing``, a missing node folder is rebuilt from its peers:
        by gossip, and by a segment repair (a copy of a peer's pages) where they
        collected what it lacks; ``progress`` is then called with the number of
        pages each repair step installed.

        A node whose files are damaged is set aside, whole (an unreadable
        node.meta) or per segment (StorageNode.load); the volume opens while a
        read quorum of every PG can vouch for its data.

        Raises :class:`VolumeNotFoundError` for a folder that is not a volume,
        :class:`FormatVersionError` for a newer format, :class:`MissingNodeError`
        when node folders are gone (unless ``rebuild_missing``),
        :class:`SegmentRepairNeededError` when a missing node cannot be rebuilt
        (neither gossip nor a segment repair from a peer's pages could), and
        :class:`RecoveryError`, naming each node it could not use and why (a
        disk error that stopped it, with the OS error), when too few nodes can
        vouch for their data or take the truncation. A node that cannot load or
        write is stopped, and the volume opens without it when a quorum can.

        With ``readonly`` (for tools that look: status, verify, dump) the volume
        is read as it is on disk, from a read quorum of the nodes' files: no
        lock (a writer may have it open), no new epoch, no truncation, no
        staging, no file written or synced. It shows what was durable when it
        was opened (:meth:`refresh` reads again); commits, backtracks, staging
        and node controls raise :class:`VolumeReadOnlyError`.
        """
        root = None if path is None else checks.path(path)
        check_collaborators(clock, transport, disks)
        if progress is not None and not callable(progress):
            raise InvalidArgumentError(f"progress is a function of (pages), not {progress!r}")
        if readonly:
            if root is None or disks is not None or transport is not None:
                raise ConfigurationError("a read-only open takes a volume's path (no disks)")
            return cls._open_readonly(root, clock, backend, backup)
        options, volume_id, base, backup_options = recorded_options(
            root, options, volume_id, backup, backup_staging
        )
        if backend is not None:
            options.backend = backend
        options.cache_bytes = cache_bytes
        options.repair_after = repair_after  # type: ignore[assignment]
        options.check()
        placement = placement_of(options)
        check_collaborators(clock, transport, disks, placement.fleet)
        missing = (
            missing_node_folders(root, placement.fleet)
            if root is not None and disks is None
            else []
        )
        if missing and not rebuild_missing:
            raise MissingNodeError(str(root), missing)
        volume = cls._locked(root, options, volume_id, clock, transport, disks, placement)
        volume._spare_disks = dict(spare_disks or {})
        volume.base_lsn, volume.base_time = base
        if progress is not None:
            for name in missing:
                volume.nodes[name].on_repair_pages = progress
        volume._reopen(missing, backup_options)
        return volume

    @classmethod
    def _locked(
        cls,
        root: Path | None,
        options: VolumeOptions,
        volume_id: str,
        clock: Clock | None,
        transport: Transport | None,
        disks: dict[str, Disk] | None,
        placement: Placement,
    ) -> Volume:
        """The volume over its nodes, not loaded; the lock first: no thread starts here."""
        lock = lock_folder(root) if root is not None else None
        try:
            nodes = make_nodes(options, root, volume_id, disks, placement)
            volume = cls(
                options,
                root,
                clock,
                transport,
                nodes=nodes,
                volume_id=volume_id,
                placement=placement,
            )
        except BaseException:
            if lock is not None:
                lock.close()
            raise
        volume._lock_handle = lock
        return volume

    def _reopen(self, missing: list[str], backup: backup_module.BackupOptions) -> None:
        """Loads every node, recovers, rebuilds missing node folders, attaches the backup;
        on any error stops what the open started and lets the folder go."""
        try:
            for node in self.nodes.values():
                try:
                    node.load()
                except (AuroraStorageError, OSError) as error:
                    # A node that cannot load is down; the others may still form quorums.
                    node.failed = f"cannot load: {error}"
                    self.transport.set_down(node.name, True)
            self._recover()
            self._check_rebuilt(missing)
            if backup.target is not None:
                self._attach_backup(backup, self._staging_mode(backup))
        except BaseException:
            self._discard()  # its threads and descriptors go too
            self._release_lock()
            raise

    @classmethod
    def _open_readonly(
        cls, root: Path, clock: Clock | None, backend: str | None, backup: Any
    ) -> Volume:
        if (root / UNFINISHED_MARKER).exists():
            raise VolumeIncompleteError(str(root))
        options, volume_id, stored_backup, base = read_volume_meta(root)
        if options.durability == "memory":
            raise ConfigurationError(f"{root} keeps no node files (durability 'memory')")
        if backend is not None:
            options.backend = backend
        placement = placement_of(options)
        missing = [name for name in placement.fleet if not (root / "nodes" / name).is_dir()]
        volume = cls(
            options,
            root,
            clock,
            nodes=make_nodes(options, root, volume_id, None, placement),
            volume_id=volume_id,
            placement=placement,
        )
        volume.readonly = True
        volume.base_lsn, volume.base_time = base
        if backup is not None:
            volume._readonly_backup = backup
        elif stored_backup is not None:
            volume._readonly_backup = stored_backup.target
            volume.backup_options = stored_backup
            if isinstance(stored_backup.target, RecordedObject):
                volume._readonly_backup = None  # it lived in the writer's process
        try:
            volume._load_readonly(missing)
        except BaseException:
            volume._discard()
            raise
        return volume

    # --- recovery -----------------------------------------------------------------------

    # --- bookkeeping ----------------------------------------------------------------

    # --- writes -----------------------------------------------------------------------

    # --- continuous backup (backup/) -------------------------------------------------

    @classmethod
    def restore(
        cls,
        backup: Any,
        to: Moment,
        path: str | os.PathLike[str] | None = None,
        *,
        progress: backup_module.Progress | None = None,
        backup_to: Any = None,
        durability: str | None = None,
        clock: Clock | None = None,
        lal: int = LAL_DEFAULT,
        transport: Transport | None = None,
        backend: str | None = None,
        commit_timeout: Duration = COMMIT_TIMEOUT,
        disks: dict[str, Disk] | None = None,
        backtrack_window: Duration = 0.0,
        backtrack_budget: int = 0,
        backup_retention_days: float | timedelta = 1.0,
        backup_staging_interval: Duration = backup_module.STAGING_INTERVAL_DEFAULT,
        backup_staging: str | None = None,
        cache_bytes: int = CACHE_BYTES_DEFAULT,
        nodes: int = NODES_DEFAULT,
        repair_after: Duration | None = REPAIR_AFTER_DEFAULT,
        spare_disks: dict[str, Disk] | None = None,
    ) -> Volume:
        """Point-in-time restore: a new volume with exactly the commits at or before ``to``.

        Reads only the backup store (a folder, a URL, or a store object); the source volume
        may be gone. ``to`` is a time (clock.py), or ``"earliest"`` or ``"latest"`` of the
        restorable window. The keywords are :meth:`create`'s (the geometry comes from the
        backup); ``backup_to`` is the new volume's own continuous backup (``create``'s
        ``backup``), which begins with its pages at the restore point. Raises
        TimeOutsideWindowError outside the restorable window, BackupCorruptError or
        BackupObjectMissingError naming a damaged or missing object, RestoreError for a
        gap; a failed restore removes what it made under ``path``.
        """
        if progress is not None and not callable(progress):
            raise InvalidArgumentError(f"progress is a function of (done, total), not {progress!r}")
        if path is not None:
            checks.path(path)
        source = backup_module.read_restore_point(
            backup, to, None if clock is None else clock.now()
        )
        return cls._restore_from(
            source,
            path,
            progress,
            backup=backup_to,
            durability=durability,
            clock=clock,
            lal=lal,
            transport=transport,
            backend=backend,
            commit_timeout=commit_timeout,
            disks=disks,
            backtrack_window=backtrack_window,
            backtrack_budget=backtrack_budget,
            backup_retention_days=backup_retention_days,
            backup_staging_interval=backup_staging_interval,
            backup_staging=backup_staging,
            cache_bytes=cache_bytes,
            nodes=nodes,
            repair_after=repair_after,
            spare_disks=spare_disks,
        )

    @classmethod
    def _restore_from(
        cls,
        source: backup_module.RestoreSource,
        path: str | os.PathLike[str] | None,
        progress: backup_module.Progress | None,
        **create_options: Any,
    ) -> Volume:
        """A new volume holding the pages of ``source`` at its restore point: each PG's
        pages materialized once (backup.restore_pages), installed into the six
        segments and their page stores at that LSN, not replayed
        (``_start_from_images``). The folder keeps its unfinished marker until
        every page is in: killed before, it never opens, and a new restore into it
        clears it; failed in this process, it goes, with the folders made for it.
        """
        made = folders_made_by(path)
        meta = source.meta
        try:
            volume = cls.create(
                path,
                page_size=int(meta["page_size"]),
                segment_size=int(meta["segment_size"]),
                capacity=int(meta["capacity"]),
                _finished=False,
                **create_options,
            )
        except BaseException:
            remove_made(made)
            raise
        try:
            pages = backup_module.restore_pages(
                source, volume.geometry, volume.options.backend, progress
            )
            if pages:
                volume._start_from_images(source.point, pages)
            volume._finish_creation()
        except BaseException:
            volume._discard_unfinished()
            remove_made(made)
            raise
        volume.restored_from = (source.moment, source.point)
        return volume

    # --- backtrack ------------------------------------------------------------------

    # --- reads ------------------------------------------------------------------------

    # --- status and lifecycle -------------------------------------------------------

    def status(self) -> VolumeStatus:
        """Nodes, AZs, health, SCLs, PG count, bytes, and the history windows, as plain
        data (typed and built in status.py)."""
        with self.transport.lock:
            self._check_open()
            if not self.readonly:
                self._membership_work()  # the repair policy runs as the volume is used
            return volume_status(self)

    def __repr__(self) -> str:
        where = repr(self.path) if self.path is not None else "in memory"
        state = "closed" if self._closed else "open"
        return (
            f"<Volume {where} {state}: epoch {self.epoch}, VDL {self._vdl}, "
            f"{len(self.pgs)} PGs, durability {self.options.durability}>"
        )
